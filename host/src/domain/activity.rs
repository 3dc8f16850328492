//! The create-activity request, parsed and validated at the edge.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::validation::{Errors, FieldError, ObjectReader, StringRule};
use super::{ActivityType, Channel, CommerceId};

/// At most this many `target_criteria` items.
pub const MAX_TARGET_CRITERIA: usize = 20;
/// At most this many `attribute_keys`, and at most this many `attributes`.
pub const MAX_ATTRIBUTES: usize = 50;
/// The longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1_000;
/// The longest `idempotency_key`, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// What a tenant's policies offer, as far as validation needs to know.
pub trait Vocabulary {
    /// Whether the tenant has a criterion of this type (`ROLE_MATCH`, …).
    fn has_criterion(&self, criterion_type: &str) -> bool;
    /// The criterion types the tenant has, for error messages.
    fn criterion_types(&self) -> Vec<String>;
    /// Whether the attribute key is in the tenant's catalogue.
    fn has_attribute_key(&self, key: &str) -> bool;
}

/// A validated `POST /api/activities` body.
#[derive(Clone, Debug, PartialEq)]
pub struct NewActivity {
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub reason: String,
    pub commerce_id: CommerceId,
    pub idempotency_key: String,
    pub scheduled_at: DateTime<Utc>,
    pub suggested_execution_time: Option<DateTime<Utc>>,
    pub user_status: Option<String>,
    pub score: Option<i32>,
    pub assignment_reason: Option<String>,
    /// The request's override of the configured criteria, if it sent one.
    pub target_criteria: Option<Vec<TargetCriterion>>,
    /// The keys to resolve through policies, in request order, unique.
    pub attribute_keys: Vec<String>,
    /// The caller's own attribute values and fallbacks.
    pub attributes: Vec<CallerAttribute>,
}

/// One target criterion: a type that names a policy, its config and its rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "ROLE_MATCH", "config": {"roles": ["OWNER"]}, "priority": 0}))]
pub struct TargetCriterion {
    /// The criterion type (`ROLE_MATCH`): a criterion policy of the tenant.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 100)]
    pub criterion_type: String,
    /// Given to the policy as `input.config`.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// Lower runs first; ties keep their order.
    #[serde(default)]
    pub priority: i32,
}

/// A caller-provided attribute: a value, a fallback, or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"key": "promotions", "value": [{"code": "2x1"}], "fallback": []}))]
pub struct CallerAttribute {
    /// An attribute key of the tenant's catalogue, at most once per request.
    #[schema(min_length = 1, max_length = 100)]
    pub key: String,
    /// The value to use; any JSON.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub value: Option<Value>,
    /// The value to use when the key cannot be resolved; any JSON.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub fallback: Option<Value>,
}

impl NewActivity {
    /// Validates a request body against the tenant's vocabulary, listing every
    /// bad field.
    pub fn parse(body: &Value, vocabulary: &dyn Vocabulary) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let Some(map) = body.as_object() else {
            errors.add("body", "must be a JSON object");
            return Err(errors.into_vec());
        };
        let mut r = ObjectReader::new(map, "");
        let activity_type = r.enumeration::<ActivityType>("type", true, &mut errors);
        let channel = r.enumeration::<Channel>("channel", true, &mut errors);
        let reason = r.string("reason", StringRule::required(MAX_REASON_CHARS), &mut errors);
        let commerce_id = r.uuid("commerce_id", true, &mut errors).map(CommerceId);
        let idempotency_key =
            r.string("idempotency_key", StringRule::required(MAX_IDEMPOTENCY_KEY_CHARS).no_control(), &mut errors);
        let scheduled_at = r.timestamp("scheduled_at", true, &mut errors);
        let suggested_execution_time = r.timestamp("suggested_execution_time", false, &mut errors);
        let user_status = r.string("user_status", StringRule::optional(255), &mut errors);
        let score = r.i32("score", &mut errors);
        let assignment_reason = r.string("assignment_reason", StringRule::optional(1_000), &mut errors);
        let target_criteria = r
            .array("target_criteria", MAX_TARGET_CRITERIA, &mut errors)
            .map(|items| parse_criteria(items, vocabulary, &mut errors));
        let attribute_keys = r
            .array("attribute_keys", MAX_ATTRIBUTES, &mut errors)
            .map(|items| parse_attribute_keys(items, vocabulary, &mut errors))
            .unwrap_or_default();
        let attributes = r
            .array("attributes", MAX_ATTRIBUTES, &mut errors)
            .map(|items| parse_caller_attributes(items, vocabulary, &mut errors))
            .unwrap_or_default();
        r.finish(&mut errors);

        match (activity_type, channel, reason, commerce_id, idempotency_key, scheduled_at) {
            (Some(activity_type), Some(channel), Some(reason), Some(commerce_id), Some(key), Some(at))
                if errors.is_empty() =>
            {
                Ok(NewActivity {
                    activity_type,
                    channel,
                    reason,
                    commerce_id,
                    idempotency_key: key,
                    scheduled_at: at,
                    suggested_execution_time,
                    user_status,
                    score,
                    assignment_reason,
                    target_criteria,
                    attribute_keys,
                    attributes,
                })
            }
            _ => Err(errors.into_vec()),
        }
    }

    /// Every attribute key the activity carries: `attribute_keys` first, then
    /// the caller's keys not already named, each once.
    pub fn all_attribute_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.attribute_keys.iter().map(String::as_str).collect();
        for attr in &self.attributes {
            if !keys.contains(&attr.key.as_str()) {
                keys.push(&attr.key);
            }
        }
        keys
    }

    /// The caller's entry for `key`, if it sent one.
    pub fn caller_attribute(&self, key: &str) -> Option<&CallerAttribute> {
        self.attributes.iter().find(|a| a.key == key)
    }
}

fn parse_criteria(items: &[Value], vocabulary: &dyn Vocabulary, errors: &mut Errors) -> Vec<TargetCriterion> {
    let mut criteria = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("target_criteria[{i}]");
        let Some(map) = item.as_object() else {
            errors.add(prefix, "must be an object with type, config and priority");
            continue;
        };
        let mut r = ObjectReader::new(map, prefix);
        let criterion_type = r.string("type", StringRule::required(100), errors);
        if let Some(t) = &criterion_type
            && !vocabulary.has_criterion(t)
        {
            let known = vocabulary.criterion_types();
            errors.add(
                r.path("type"),
                format!(
                    "names no criterion this tenant has; expected {}",
                    super::one_of(known.iter().map(String::as_str))
                ),
            );
        }
        let config = r.object("config", errors).cloned().unwrap_or_default();
        let priority = r.i32("priority", errors).unwrap_or(0);
        r.finish(errors);
        if let Some(criterion_type) = criterion_type {
            criteria.push(TargetCriterion { criterion_type, config, priority });
        }
    }
    criteria
}

fn parse_attribute_keys(items: &[Value], vocabulary: &dyn Vocabulary, errors: &mut Errors) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut keys = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("attribute_keys[{i}]");
        match item.as_str() {
            None => errors.add(path, "must be a string"),
            Some(key) if !vocabulary.has_attribute_key(key) => {
                errors.add(path, format!("'{key}' is not an attribute key of the catalogue"))
            }
            Some(key) if !seen.insert(key) => errors.add(path, format!("'{key}' is listed twice")),
            Some(key) => keys.push(key.to_owned()),
        }
    }
    keys
}

fn parse_caller_attributes(items: &[Value], vocabulary: &dyn Vocabulary, errors: &mut Errors) -> Vec<CallerAttribute> {
    let mut seen = BTreeSet::new();
    let mut attributes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("attributes[{i}]");
        let Some(map) = item.as_object() else {
            errors.add(prefix, "must be an object with key, value and fallback");
            continue;
        };
        let mut r = ObjectReader::new(map, prefix);
        let key = r.string("key", StringRule::required(100), errors);
        let value = r.raw("value").cloned();
        let fallback = r.raw("fallback").cloned();
        if let Some(k) = &key {
            if !vocabulary.has_attribute_key(k) {
                errors.add(r.path("key"), format!("'{k}' is not an attribute key of the catalogue"));
            } else if !seen.insert(k.clone()) {
                errors.add(r.path("key"), format!("'{k}' is listed twice"));
            }
        }
        r.finish(errors);
        if let Some(key) = key {
            attributes.push(CallerAttribute { key, value, fallback });
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;
    impl Vocabulary for Fixed {
        fn has_criterion(&self, t: &str) -> bool {
            t == "ROLE_MATCH"
        }
        fn criterion_types(&self) -> Vec<String> {
            vec!["ROLE_MATCH".into()]
        }
        fn has_attribute_key(&self, key: &str) -> bool {
            key == "commerce_info" || key == "promotions"
        }
    }

    fn seed_body() -> Value {
        json!({
            "type": "MESSAGE",
            "reason": "Monthly promotion",
            "channel": "WHATSAPP",
            "commerce_id": "880e8400-e29b-41d4-a716-446655440000",
            "idempotency_key": "msg-2025-01-15-001",
            "scheduled_at": "2025-01-16T09:00:00.000Z",
            "attribute_keys": ["commerce_info"]
        })
    }

    fn fields(body: Value) -> Vec<String> {
        NewActivity::parse(&body, &Fixed).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_seed_example_parses() {
        let a = NewActivity::parse(&seed_body(), &Fixed).unwrap();
        assert_eq!(a.channel, Channel::Whatsapp);
        assert_eq!(a.attribute_keys, ["commerce_info"]);
        assert_eq!(a.target_criteria, None);
    }

    #[test]
    fn several_bad_fields_are_all_listed() {
        let mut body = seed_body();
        body["type"] = json!("LETTER");
        body["reason"] = json!("");
        body["score"] = json!(1.5);
        body["colour"] = json!("red");
        assert_eq!(fields(body), ["type", "reason", "score", "colour"]);
    }

    #[test]
    fn criteria_and_attributes_are_checked_against_the_vocabulary() {
        let mut body = seed_body();
        body["target_criteria"] = json!([{"type": "ROLE_MATCH"}, {"type": "NOPE", "config": 3}]);
        body["attribute_keys"] = json!(["commerce_info", "commerce_info", "weather"]);
        body["attributes"] = json!([{"key": "promotions", "value": 1, "extra": 0}]);
        assert_eq!(
            fields(body),
            [
                "target_criteria[1].type",
                "target_criteria[1].config",
                "attribute_keys[1]",
                "attribute_keys[2]",
                "attributes[0].extra"
            ]
        );
    }

    #[test]
    fn caller_keys_follow_attribute_keys_without_repeats() {
        let mut body = seed_body();
        body["attributes"] = json!([{"key": "commerce_info", "value": 1}, {"key": "promotions"}]);
        let a = NewActivity::parse(&body, &Fixed).unwrap();
        assert_eq!(a.all_attribute_keys(), ["commerce_info", "promotions"]);
    }

    #[test]
    fn an_idempotency_key_with_a_control_character_is_refused() {
        let mut body = seed_body();
        body["idempotency_key"] = json!("a\u{0007}b");
        assert_eq!(fields(body), ["idempotency_key"]);
    }
}
