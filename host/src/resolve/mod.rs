//! Target and attribute resolution over one policy snapshot.
//!
//! Pure: no HTTP, no database. Given a snapshot, a validated request and the
//! commerce, it decides the target user and the attributes, and says why in a
//! [`Trace`]. The only side effects are the policy calls, which are pure too.

pub mod attributes;
pub mod target;
pub mod trace;

use std::sync::Arc;

use crate::domain::activity::NewActivity;
use crate::domain::commerce::{Commerce, HistoryEntry};
use crate::domain::{ActivityStatus, AttributeStatus, TenantId};
use crate::policy::input::{ActivityInput, BaseInput};
use crate::policy::{PreparedInput, TenantSnapshot};

pub use attributes::AttributeDecision;
pub use target::TargetDecision;
pub use trace::Trace;

/// When resolution runs. A create resolves what its strategies say to
/// resolve on creation; the dispatcher (and a retry, which runs after the
/// fact) also resolves what `ON_DISPATCH` strategies deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Creation,
    Dispatch,
}

/// Everything resolution decided for one activity.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// `READY`, or `UNRESOLVED` when the target or an attribute failed.
    pub status: ActivityStatus,
    pub target: TargetDecision,
    pub attributes: Vec<AttributeDecision>,
    pub trace: Trace,
}

/// The policy input of a request.
pub fn prepare_input(
    tenant_id: TenantId,
    activity: &NewActivity,
    commerce: Arc<Commerce>,
    history: Vec<HistoryEntry>,
) -> PreparedInput {
    PreparedInput::new(BaseInput { tenant_id, activity: ActivityInput::from_new(activity), commerce, history })
}

/// Resolves the target user, then every attribute key, of a new activity.
pub async fn resolve_activity(snapshot: &TenantSnapshot, input: &PreparedInput, activity: &NewActivity) -> Resolution {
    let commerce = Arc::clone(&input.base.commerce);
    let (target, target_trace) =
        target::resolve_target(snapshot, input, &commerce, activity.channel, activity.target_criteria.as_deref()).await;
    let mut trace = Trace { generation: snapshot.generation, target: Some(target_trace), attributes: Vec::new() };
    let mut decisions = Vec::new();
    for key in activity.all_attribute_keys() {
        let (decision, step) =
            attributes::resolve_attribute(snapshot, input, key, activity.caller_attribute(key)).await;
        decisions.push(decision);
        trace.attributes.push(step);
    }
    let status = status_of(&target, &decisions);
    Resolution { status, target, attributes: decisions, trace }
}

/// `UNRESOLVED` when the target or any attribute failed, else `READY`.
pub fn status_of(target: &TargetDecision, attributes: &[AttributeDecision]) -> ActivityStatus {
    if target.is_failed() || attributes.iter().any(|a| a.status == AttributeStatus::Failed) {
        ActivityStatus::Unresolved
    } else {
        ActivityStatus::Ready
    }
}

#[cfg(test)]
mod tests;
