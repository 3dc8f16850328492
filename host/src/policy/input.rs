//! The one input every policy gets, prepared once per request and converted
//! to each engine's form at most once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::commerce::{Commerce, HistoryEntry};
use crate::domain::{ActivityType, Channel, TenantId, time};

/// The activity as policies see it (`snake_case`, like the request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityInput {
    #[serde(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub reason: String,
    pub score: Option<i32>,
    pub user_status: Option<String>,
    pub assignment_reason: Option<String>,
    /// UTC with milliseconds.
    pub scheduled_at: String,
    pub suggested_execution_time: Option<String>,
}

impl ActivityInput {
    /// The policy view of a validated request.
    pub fn from_new(a: &crate::domain::activity::NewActivity) -> Self {
        Self {
            activity_type: a.activity_type,
            channel: a.channel,
            reason: a.reason.clone(),
            score: a.score,
            user_status: a.user_status.clone(),
            assignment_reason: a.assignment_reason.clone(),
            scheduled_at: time::format(&a.scheduled_at),
            suggested_execution_time: a.suggested_execution_time.as_ref().map(time::format),
        }
    }
}

/// Everything of the input except `config`, which changes per call.
#[derive(Debug, Serialize)]
pub struct BaseInput {
    pub tenant_id: TenantId,
    pub activity: ActivityInput,
    pub commerce: Arc<Commerce>,
    pub history: Vec<HistoryEntry>,
}

/// [`BaseInput`] as it is read back from storage.
#[derive(Deserialize)]
struct StoredInput {
    tenant_id: TenantId,
    activity: ActivityInput,
    commerce: Commerce,
    history: Vec<HistoryEntry>,
}

/// The codec of a stored decision input (its `codec` column): an LZ4 block
/// with its size prepended, over the input's JSON.
pub const STORED_CODEC: i16 = 1;

/// The stored form of a decision input: the JSON the policies saw (without
/// `config`), LZ4-compressed.
pub fn encode_stored(base: &BaseInput) -> Vec<u8> {
    // Serialising owned, checked data cannot fail.
    let json = serde_json::to_vec(base).unwrap_or_default();
    lz4_flex::block::compress_prepend_size(&json)
}

/// A decision input as `GET /api/activities/{id}/decision-input` answers it
/// (the policy input without `config`), read back.
pub fn from_json(value: Value) -> Result<BaseInput, String> {
    let s: StoredInput = serde_json::from_value(value).map_err(|e| format!("not a decision input: {e}"))?;
    Ok(BaseInput { tenant_id: s.tenant_id, activity: s.activity, commerce: Arc::new(s.commerce), history: s.history })
}

/// The JSON of a stored decision input.
pub fn stored_json(bytes: &[u8]) -> Result<Value, String> {
    let json = lz4_flex::block::decompress_size_prepended(bytes).map_err(|e| format!("corrupt decision input: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("corrupt decision input: {e}"))
}

/// A stored decision input, ready for the policies again.
pub fn decode_stored(bytes: &[u8]) -> Result<BaseInput, String> {
    let json = lz4_flex::block::decompress_size_prepended(bytes).map_err(|e| format!("corrupt decision input: {e}"))?;
    let s: StoredInput = serde_json::from_slice(&json).map_err(|e| format!("unreadable decision input: {e}"))?;
    Ok(BaseInput { tenant_id: s.tenant_id, activity: s.activity, commerce: Arc::new(s.commerce), history: s.history })
}

/// A JSON value as Rhai sees it: what `rhai::serde::to_dynamic` makes of
/// it, without going through serde (a call converts its `config` this way).
/// Integers that fit an `i64` are integers, the rest floats; `null` is `()`.
pub fn rhai_value(value: &Value) -> rhai::Dynamic {
    match value {
        Value::Null => rhai::Dynamic::UNIT,
        Value::Bool(b) => rhai::Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => rhai::Dynamic::from_int(i),
            // A u64 beyond i64, or a float (as `to_dynamic` converts both).
            None => rhai::Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => rhai::Dynamic::from(rhai::ImmutableString::from(s.as_str())),
        Value::Array(items) => rhai::Dynamic::from_array(items.iter().map(rhai_value).collect()),
        Value::Object(map) => rhai::Dynamic::from_map(rhai_map(map)),
    }
}

fn rhai_map(map: &Map<String, Value>) -> rhai::Map {
    map.iter().map(|(k, v)| (k.as_str().into(), rhai_value(v))).collect()
}

/// A request's policy input, with the engine conversions cached.
#[derive(Debug)]
pub struct PreparedInput {
    pub base: BaseInput,
    rhai: OnceLock<Result<rhai::Map, String>>,
    wasm: OnceLock<super::wasm_engine::bindings::types::PolicyInput>,
    memo: Option<Box<Memo>>,
}

/// The calls made on one input, by policy version, config and limits.
///
/// Policies are pure — no clock, no I/O, no randomness reach them — so the
/// same call on the same input answers the same. A replay decides one input
/// with two sets that mostly share their policies (a candidate that only
/// reorders criteria shares all of them): with a memo, what the live set
/// ran is not run again for the candidate.
#[derive(Debug, Default)]
pub struct Memo {
    criteria: Mutex<HashMap<String, super::Call<Vec<super::Candidate>>>>,
    attributes: Mutex<HashMap<String, super::Call<Option<Value>>>>,
}

impl Memo {
    pub(super) fn criterion(&self, key: &str) -> Option<super::Call<Vec<super::Candidate>>> {
        self.criteria.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub(super) fn keep_criterion(&self, key: String, call: &super::Call<Vec<super::Candidate>>) {
        self.criteria.lock().unwrap_or_else(|e| e.into_inner()).insert(key, call.clone());
    }

    pub(super) fn attribute(&self, key: &str) -> Option<super::Call<Option<Value>>> {
        self.attributes.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub(super) fn keep_attribute(&self, key: String, call: &super::Call<Option<Value>>) {
        self.attributes.lock().unwrap_or_else(|e| e.into_inner()).insert(key, call.clone());
    }
}

impl PreparedInput {
    /// Prepares the input of one request.
    pub fn new(base: BaseInput) -> Self {
        Self { base, rhai: OnceLock::new(), wasm: OnceLock::new(), memo: None }
    }

    /// An input whose policy calls are memoized ([`Memo`]): for deciding it
    /// more than once (a replay's live and candidate sets).
    pub fn memoized(base: BaseInput) -> Self {
        Self { memo: Some(Box::default()), ..Self::new(base) }
    }

    /// The memo, when the input keeps one.
    pub(super) fn memo(&self) -> Option<&Memo> {
        self.memo.as_deref()
    }

    /// The input in its stored form ([`encode_stored`]).
    pub fn encode_stored(&self) -> Vec<u8> {
        encode_stored(&self.base)
    }

    /// The whole input with `config`, as JSON: what a policy author sees.
    pub fn to_json(&self, config: &Map<String, Value>) -> Value {
        let mut value = serde_json::to_value(&self.base).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("config".into(), Value::Object(config.clone()));
        }
        value
    }

    /// The input as a Rhai object map with only what a script can reach
    /// ([`super::rhai_reach`]; `Reach::All` for the whole input), and
    /// `config` for this call when it reaches it.
    pub fn rhai(&self, reach: &super::rhai_reach::Reach, config: &Map<String, Value>) -> Result<rhai::Dynamic, String> {
        let base = self
            .rhai
            .get_or_init(|| {
                rhai::serde::to_dynamic(&self.base)
                    .map_err(|e| e.to_string())
                    .and_then(|d| d.try_cast::<rhai::Map>().ok_or_else(|| "input is not a map".to_owned()))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let mut map = reach.copy(base);
        if reach.reaches("config") {
            map.insert("config".into(), rhai::Dynamic::from_map(rhai_map(config)));
        }
        Ok(rhai::Dynamic::from_map(map))
    }

    /// The input as the WIT record, its `config` empty: each call lowers it
    /// with its own `config` into the guest.
    pub fn wasm_base(&self) -> &super::wasm_engine::bindings::types::PolicyInput {
        self.wasm.get_or_init(|| super::wasm_convert::base(&self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_converts_to_rhai_as_serde_would() {
        let value = serde_json::json!({
            "role": "COMMERCE_REP", "n": 3, "neg": -7, "big": u64::MAX, "f": 1.5, "t": true, "none": null,
            "list": [1, "two", [3.25], {"k": false}], "nested": {"a": {"b": "c"}}, "empty": {}, "": ""
        });
        let ours = rhai_value(&value);
        let serde = rhai::serde::to_dynamic(&value).unwrap();
        // Same types and values, compared through their debug forms (which
        // carry the type: `3` vs `3.0`, `()` vs `""`).
        assert_eq!(format!("{ours:?}"), format!("{serde:?}"));
        let back: Value = rhai::serde::from_dynamic(&ours).unwrap();
        let mut expected = value.clone();
        expected["big"] = serde_json::json!(u64::MAX as f64);
        assert_eq!(back, expected);
    }
}
