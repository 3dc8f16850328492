//! ON_DISPATCH resolution: target users and attributes that a create left
//! `PENDING` are resolved right before the send, with the tenant's policies
//! serving at that moment and the same rules as at creation. Policy, engine
//! and version are recorded on each item, and the trace under the activity's
//! `resolutionTrace.dispatch`.

use std::sync::Arc;

use serde_json::json;

use crate::domain::activity::NewActivity;
use crate::domain::commerce::{Commerce, HistoryEntry};
use crate::domain::{AttributeStatus, ResolutionStrategy, TargetStatus, TenantId};
use crate::resolve::{self, AttributeDecision, Stage, TargetDecision};
use crate::store::dispatch::{AttributeForSend, ForSend, TargetForSend};
use crate::store::dispatch_outcomes::{self, DispatchResolution};
use crate::store::transitions::TransitionError;

use super::pipeline::Ctx;

/// What resolution at dispatch found.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Nothing was pending.
    Nothing,
    /// Everything pending resolved and was written: reload and send.
    Written,
    /// Something failed: the activity is now UNRESOLVED and is not sent.
    Failed(String),
    /// A target waits for a manual assignment: not sent until it gets one.
    Held,
    /// Another dispatcher took the activity meanwhile.
    Lost,
}

/// Resolves what is pending on a claimed activity and writes it.
pub async fn resolve_pending(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    f: &ForSend,
    owner: uuid::Uuid,
) -> Result<Resolved, sqlx::Error> {
    let pending = TargetStatus::Pending.as_str();
    let targets: Vec<_> = f.targets.0.iter().filter(|t| t.resolution_status == pending).collect();
    if targets.iter().any(|t| t.resolution_strategy == ResolutionStrategy::Manual.as_str()) {
        return Ok(Resolved::Held);
    }
    let attributes: Vec<_> =
        f.attributes.0.iter().filter(|a| a.resolution_status == AttributeStatus::Pending.as_str()).collect();
    if targets.is_empty() && attributes.is_empty() {
        return Ok(Resolved::Nothing);
    }
    let row = &f.activity;
    let activity = row.replay();
    let Some((commerce, history)) =
        crate::store::commerces::load_for_resolution(ctx.fast, tenant, row.commerce_id).await?
    else {
        let why = format!("the commerce {} no longer exists", row.commerce_id);
        return failed(ctx, tenant, f, owner, why).await;
    };
    let Some(decided) = decide(ctx, tenant, &activity, (commerce, history), &targets, &attributes).await else {
        // The config that applies now is MANUAL.
        return Ok(Resolved::Held);
    };
    let failure = failure_of(&decided.targets, &decided.attributes);
    let mut trace = decided.trace;
    trace["outcome"] = json!(if failure.is_some() { "UNRESOLVED" } else { "READY" });
    let resolution = DispatchResolution {
        owner,
        targets: decided.targets.iter().map(|(id, d)| (*id, d)).collect(),
        attributes: decided.attributes.iter().map(|(id, d)| (*id, d)).collect(),
        trace,
        failure: failure.clone(),
        commerce_id: row.commerce_id,
        channel: row.channel.as_str(),
        decision_input: decided.input,
    };
    if !write(ctx, tenant, f, &resolution).await? {
        return Ok(Resolved::Lost);
    }
    Ok(match failure {
        Some(why) => Resolved::Failed(why),
        None => Resolved::Written,
    })
}

/// The decisions about the pending items, and their trace.
struct Decided {
    targets: Vec<(uuid::Uuid, TargetDecision)>,
    attributes: Vec<(uuid::Uuid, AttributeDecision)>,
    trace: serde_json::Value,
    /// The input the policies saw, in its stored form, when kept.
    input: Option<Vec<u8>>,
}

/// Runs the tenant's policies serving now on the pending items; `None` when
/// a target's config is now MANUAL (it waits for an assignment).
async fn decide(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    activity: &NewActivity,
    (commerce, history): (Commerce, Vec<HistoryEntry>),
    targets: &[&TargetForSend],
    attributes: &[&AttributeForSend],
) -> Option<Decided> {
    let commerce = Arc::new(commerce);
    let snapshot = ctx.registry.snapshot(tenant);
    let input = resolve::prepare_input(tenant, activity, Arc::clone(&commerce), history);
    let kept = ctx.dispatch.settings.keep_decision_inputs.then(|| input.encode_stored());
    let mut decided = Decided { targets: Vec::new(), attributes: Vec::new(), trace: json!({}), input: kept };
    let (mut target_traces, mut attribute_traces) = (Vec::new(), Vec::new());
    for t in targets {
        let criteria = activity.target_criteria.as_deref();
        let (decision, trace) = resolve::target::resolve_target_at(
            Stage::Dispatch,
            &snapshot,
            &input,
            &commerce,
            activity.channel,
            criteria,
        )
        .await;
        if decision.status == TargetStatus::Pending {
            return None;
        }
        decided.targets.push((t.id, decision));
        target_traces.push(trace);
    }
    for a in attributes {
        let caller = activity.caller_attribute(&a.key);
        let (decision, trace) =
            resolve::attributes::resolve_attribute_at(Stage::Dispatch, &snapshot, &input, &a.key, caller).await;
        decided.attributes.push((a.id, decision));
        attribute_traces.push(trace);
    }
    decided.trace = json!({
        "at": crate::domain::time::format(&chrono::Utc::now()),
        "generation": snapshot.generation,
        "targets": target_traces,
        "attributes": attribute_traces,
    });
    Some(decided)
}

/// Why the activity cannot be sent, if a target or an attribute failed.
fn failure_of(
    targets: &[(uuid::Uuid, TargetDecision)],
    attributes: &[(uuid::Uuid, AttributeDecision)],
) -> Option<String> {
    let mut why = Vec::new();
    for (_, t) in targets.iter().filter(|(_, t)| t.is_failed()) {
        why.push(format!("target user: {}", t.error_message.as_deref().unwrap_or("no user found")));
    }
    for (_, a) in attributes.iter().filter(|(_, a)| a.status == AttributeStatus::Failed) {
        why.push(format!("attribute {}: {}", a.key, a.error_message.as_deref().unwrap_or("failed")));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Marks the activity UNRESOLVED for a reason found before any policy ran.
async fn failed(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    f: &ForSend,
    owner: uuid::Uuid,
    why: String,
) -> Result<Resolved, sqlx::Error> {
    let resolution = DispatchResolution {
        owner,
        targets: Vec::new(),
        attributes: Vec::new(),
        trace: json!({"at": crate::domain::time::format(&chrono::Utc::now()), "error": why, "outcome": "UNRESOLVED"}),
        failure: Some(why.clone()),
        commerce_id: f.activity.commerce_id,
        channel: f.activity.channel.as_str(),
        decision_input: None,
    };
    if !write(ctx, tenant, f, &resolution).await? {
        return Ok(Resolved::Lost);
    }
    Ok(Resolved::Failed(why))
}

/// Writes the resolution; `false` when the claim was lost meanwhile.
async fn write(ctx: &Ctx<'_>, tenant: TenantId, f: &ForSend, r: &DispatchResolution<'_>) -> Result<bool, sqlx::Error> {
    match dispatch_outcomes::apply_resolution(ctx.pool, tenant, f.activity.id, r).await {
        Ok(()) => Ok(true),
        Err(TransitionError::Db(e)) => Err(e),
        Err(_) => Ok(false),
    }
}
