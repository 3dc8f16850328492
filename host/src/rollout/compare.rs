//! Two decisions on one input, side by side: what a replay or a shadow run
//! compares — the status, the target user, the lock reason, the criterion
//! that chose, and each attribute's value — and the candidate's policy
//! failures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{ActivityId, ActivityStatus, CommerceUserId, LockReason};
use crate::resolve::Resolution;

/// What one set decided about one activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub status: ActivityStatus,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub target_commerce_user_id: Option<CommerceUserId>,
    pub lock_reason: Option<LockReason>,
    /// The criterion type that chose the user, when one did.
    pub criterion_type: Option<String>,
    /// Each attribute's value (`null`: none).
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, Value>,
}

impl DecisionView {
    /// The comparable part of a resolution.
    pub fn of(r: &Resolution) -> Self {
        Self {
            status: r.status,
            target_commerce_user_id: r.target.commerce_user_id,
            lock_reason: r.target.lock_reason,
            criterion_type: r.target.criterion_type.clone(),
            attributes: r.attributes.iter().map(|a| (a.key.clone(), a.value.clone().unwrap_or(Value::Null))).collect(),
        }
    }
}

/// What differs between two decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub status: bool,
    pub target: bool,
    pub lock_reason: bool,
    /// The keys whose value differs (a key only one side has counts).
    pub attributes: Vec<String>,
}

impl Diff {
    /// `before` against `after`.
    pub fn between(before: &DecisionView, after: &DecisionView) -> Self {
        let mut attributes: Vec<String> = before
            .attributes
            .iter()
            .filter(|(k, v)| after.attributes.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        attributes.extend(after.attributes.keys().filter(|k| !before.attributes.contains_key(*k)).cloned());
        Self {
            status: before.status != after.status,
            target: before.target_commerce_user_id != after.target_commerce_user_id,
            lock_reason: before.lock_reason != after.lock_reason,
            attributes,
        }
    }

    /// Whether anything differs.
    pub fn any(&self) -> bool {
        self.status || self.target || self.lock_reason || !self.attributes.is_empty()
    }
}

/// Every policy failure of a resolution, one line each: what a candidate
/// set's `errors` count.
pub fn policy_failures(r: &Resolution) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(target) = &r.trace.target {
        for c in &target.criteria {
            if let Some(e) = &c.error {
                out.push(format!("criterion {}: {}: {}", c.criterion_type, e.kind.as_str(), e.message));
            }
        }
    }
    for a in &r.trace.attributes {
        if let Some(e) = &a.error {
            out.push(format!("attribute {}: {}: {}", a.key, e.kind.as_str(), e.message));
        }
    }
    out
}

/// The counts of what changed, per part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub status: u64,
    pub target: u64,
    pub lock_reason: u64,
    /// By attribute key.
    pub attributes: BTreeMap<String, u64>,
}

impl Changes {
    /// Counts one diff.
    pub fn add(&mut self, d: &Diff) {
        self.status += u64::from(d.status);
        self.target += u64::from(d.target);
        self.lock_reason += u64::from(d.lock_reason);
        for k in &d.attributes {
            *self.attributes.entry(k.clone()).or_default() += 1;
        }
    }
}

/// One activity decided by both sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    #[schema(value_type = uuid::Uuid)]
    pub activity_id: ActivityId,
    /// The candidate's policy failures, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The live set's decision.
    pub before: DecisionView,
    /// The candidate set's decision.
    pub after: DecisionView,
}

/// How many samples a report keeps.
pub const SAMPLES: usize = 50;

/// Up to [`SAMPLES`] samples, changes and errors first, then unchanged ones.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    notable: Vec<Sample>,
    unchanged: Vec<Sample>,
}

impl Samples {
    /// Offers one; `notable` when it changed or failed.
    pub fn offer(&mut self, notable: bool, make: impl FnOnce() -> Sample) {
        if notable {
            if self.notable.len() < SAMPLES {
                self.notable.push(make());
            }
        } else if self.notable.len() + self.unchanged.len() < SAMPLES {
            self.unchanged.push(make());
        }
    }

    /// The samples to report.
    pub fn to_vec(&self) -> Vec<Sample> {
        self.notable.iter().chain(&self.unchanged).take(SAMPLES).cloned().collect()
    }
}
