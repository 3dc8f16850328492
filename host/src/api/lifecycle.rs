//! The activity lifecycle after creation: retry-resolution, manual
//! assignment of a target user, and cancel.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, TypedBody, path_id};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::views::{ActivityDetail, TargetUserView};
use super::{ApiError, AppState};
use crate::domain::{ActivityId, ActivityStatus, AttributeStatus, LockReason, TargetStatus, TenantId};
use crate::resolve::trace::{AttributeTrace, TargetTrace};
use crate::resolve::{self, AttributeDecision, Stage, TargetDecision};
use crate::store::activities::{self as store, ActivityRow};
use crate::store::transitions::{self, Assignment, RetryOutcome, TransitionError};

/// The lifecycle routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(retry)).routes(routes!(resolve_target_user)).routes(routes!(cancel))
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound => ApiError::NotFound("the activity was not found".into()),
            TransitionError::WrongStatus(s) => ApiError::BadRequest(format!("the activity is {s}")),
            TransitionError::Raced => ApiError::Conflict { detail: e.to_string(), activity_id: None },
            TransitionError::Db(db) => db.into(),
        }
    }
}

async fn load(state: &AppState, tenant: TenantId, raw: &str) -> Result<ActivityRow, ApiError> {
    let id = path_id("id", raw, ActivityId::parse)?;
    store::get(&state.pool, tenant, id).await?.ok_or_else(|| ApiError::not_found("activity", id))
}

async fn detail(state: &AppState, tenant: TenantId, id: ActivityId) -> Result<Json<ActivityDetail>, ApiError> {
    let row = store::get(&state.pool, tenant, id).await?.ok_or_else(|| ApiError::not_found("activity", id))?;
    let targets = store::target_users(&state.pool, tenant, id).await?;
    let attributes = store::attributes(&state.pool, tenant, id).await?;
    Ok(Json(ActivityDetail::new(row, targets, attributes)))
}

/// Retry the resolution of an UNRESOLVED activity.
///
/// `PATCH /api/activities/:id/retry-resolution` re-runs the FAILED target
/// users and attributes on the policies serving now, with the original
/// request's criteria override and caller attributes. The activity becomes
/// READY when nothing fails any more.
#[utoipa::path(
    patch,
    path = "/api/activities/{id}/retry-resolution",
    operation_id = "retryActivityResolution",
    tag = "lifecycle",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The activity after the retry.", body = ActivityDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn retry(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ActivityDetail>, ApiError> {
    let tenant = ctx.tenant_id;
    let row = load(&state, tenant, &raw).await?;
    if row.status != ActivityStatus::Unresolved {
        return Err(ApiError::BadRequest(format!(
            "only UNRESOLVED activities can be retried; this one is {}",
            row.status
        )));
    }
    let redecided = redecide_failed(&state, tenant, &row).await?;
    let still_failing = redecided.still_failing();
    let status = if still_failing.is_empty() { ActivityStatus::Ready } else { ActivityStatus::Unresolved };
    let trace = json!({
        "at": crate::domain::time::format(&chrono::Utc::now()),
        "generation": redecided.generation,
        "targets": redecided.target_traces,
        "attributes": redecided.attribute_traces,
        "outcome": status,
    });
    let outcome = RetryOutcome {
        version: row.version,
        status,
        targets: redecided.targets.iter().map(|(id, d)| (*id, d)).collect(),
        attributes: redecided.attributes.iter().map(|(id, d)| (*id, d)).collect(),
        trace,
        error: (!still_failing.is_empty()).then(|| still_failing.join("; ")),
        commerce_id: row.commerce_id,
        channel: row.channel.as_str(),
        decision_input: redecided.input,
    };
    transitions::apply_retry(&state.pool, tenant, row.id, &outcome).await?;
    tracing::info!(tenant_id = %tenant, activity_id = %row.id, status = %status, "resolution retried");
    detail(&state, tenant, row.id).await
}

/// The FAILED items of an activity decided again, each with its trace.
struct Redecided {
    generation: u64,
    targets: Vec<(Uuid, TargetDecision)>,
    target_traces: Vec<TargetTrace>,
    attributes: Vec<(Uuid, AttributeDecision)>,
    attribute_traces: Vec<AttributeTrace>,
    /// The input the policies saw, in its stored form, when kept.
    input: Option<Vec<u8>>,
}

impl Redecided {
    /// What still fails, one line per item.
    fn still_failing(&self) -> Vec<String> {
        let targets = self
            .targets
            .iter()
            .filter(|(_, t)| t.is_failed())
            .map(|(_, t)| format!("target user: {}", t.error_message.as_deref().unwrap_or("no user found")));
        let attributes = self
            .attributes
            .iter()
            .filter(|(_, a)| a.status == AttributeStatus::Failed)
            .map(|(_, a)| format!("attribute {}: {}", a.key, a.error_message.as_deref().unwrap_or("failed")));
        targets.chain(attributes).collect()
    }
}

/// Decides the activity's FAILED target users and attributes again, on the
/// tenant's policies serving now, from the request it was created from.
async fn redecide_failed(state: &AppState, tenant: TenantId, row: &ActivityRow) -> Result<Redecided, ApiError> {
    let activity = row.replay();
    let targets = store::target_users(&state.pool, tenant, row.id).await?;
    let attributes = store::attributes(&state.pool, tenant, row.id).await?;
    let (commerce, history) = crate::store::commerces::load_for_resolution(&state.fast, tenant, row.commerce_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("activity {} lost its commerce", row.id)))?;
    let commerce = Arc::new(commerce);
    let snapshot = state.registry.snapshot(tenant);
    let input = resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history);
    let mut out = Redecided {
        generation: snapshot.generation,
        targets: Vec::new(),
        target_traces: Vec::new(),
        attributes: Vec::new(),
        attribute_traces: Vec::new(),
        input: state.rollout.keeps_decision_inputs().then(|| input.encode_stored()),
    };
    // A FAILED item is retried as the dispatcher would resolve it: an
    // ON_DISPATCH target or attribute that failed at dispatch resolves now,
    // not back to PENDING.
    for t in targets.iter().filter(|t| t.resolution_status == TargetStatus::Failed) {
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
        out.targets.push((t.id, decision));
        out.target_traces.push(trace);
    }
    for a in attributes.iter().filter(|a| a.resolution_status == AttributeStatus::Failed) {
        let caller = activity.caller_attribute(&a.key);
        let (decision, trace) =
            resolve::attributes::resolve_attribute_at(Stage::Dispatch, &snapshot, &input, &a.key, caller).await;
        out.attributes.push((a.id, decision));
        out.attribute_traces.push(trace);
    }
    Ok(out)
}

/// The body of the manual assignment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"commerce_user_id": "5f0c1c7e-3f4b-4a8e-9d55-1c2b3a4d5e6f"}))]
pub struct ResolveTargetUser {
    /// A user of the activity's commerce.
    pub commerce_user_id: Uuid,
}

/// Assign a target user by hand.
///
/// `PATCH /api/activities/:id/target-users/:targetUserId/resolve` assigns an
/// active user of the activity's commerce to a PENDING or FAILED, unlocked
/// target user of a READY or UNRESOLVED activity, and locks it.
#[utoipa::path(
    patch,
    path = "/api/activities/{id}/target-users/{targetUserId}/resolve",
    operation_id = "resolveActivityTargetUser",
    tag = "lifecycle",
    params(
        TenantHeader,
        ("id" = Uuid, Path, description = "The activity's id."),
        ("targetUserId" = Uuid, Path, description = "The target user's id.")
    ),
    request_body = ResolveTargetUser,
    responses(
        (status = 200, description = "The target user, locked to the chosen commerce user.", body = TargetUserView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn resolve_target_user(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    ApiPath((raw, raw_target)): ApiPath<(String, String)>,
    TypedBody(body): TypedBody<ResolveTargetUser>,
) -> Result<Json<TargetUserView>, ApiError> {
    let tenant = ctx.tenant_id;
    let row = load(&state, tenant, &raw).await?;
    let target_id = path_id("targetUserId", &raw_target, Uuid::parse_str)?;
    let from = row.status;
    if !matches!(from, ActivityStatus::Ready | ActivityStatus::Unresolved) {
        return Err(ApiError::BadRequest(format!(
            "target users can be resolved only on READY or UNRESOLVED activities; this one is {}",
            row.status
        )));
    }
    let targets = store::target_users(&state.pool, tenant, row.id).await?;
    let target = targets
        .iter()
        .find(|t| t.id == target_id)
        .ok_or_else(|| ApiError::NotFound(format!("target user {target_id} of activity {} was not found", row.id)))?;
    let open = [TargetStatus::Pending, TargetStatus::Failed];
    if !open.contains(&target.resolution_status) || target.locked_at.is_some() {
        return Err(ApiError::BadRequest(format!(
            "only PENDING or FAILED target users that are not locked can be resolved; this one is {}",
            target.resolution_status
        )));
    }
    match transitions::commerce_user_state(&state.pool, tenant, row.commerce_id, body.commerce_user_id).await? {
        None => return Err(ApiError::field("commerce_user_id", "is not a user of this activity's commerce")),
        Some(false) => return Err(ApiError::field("commerce_user_id", "is an inactive user")),
        Some(true) => {}
    }
    let attributes = store::attributes(&state.pool, tenant, row.id).await?;
    let other_failures = targets.iter().any(|t| t.id != target_id && t.resolution_status == TargetStatus::Failed)
        || attributes.iter().any(|a| a.resolution_status == AttributeStatus::Failed);
    let to = if from == ActivityStatus::Unresolved && !other_failures { ActivityStatus::Ready } else { from };
    let decision = TargetDecision {
        commerce_user_id: Some(crate::domain::CommerceUserId(body.commerce_user_id)),
        status: TargetStatus::Locked,
        strategy: target.resolution_strategy,
        lock_reason: Some(LockReason::ManualAssignment),
        criterion_type: None,
        policy: None,
        error_message: None,
    };
    let assignment = Assignment {
        version: row.version,
        target_id,
        decision: &decision,
        from,
        to,
        commerce_id: row.commerce_id,
        channel: row.channel.as_str(),
    };
    transitions::apply_assignment(&state.pool, tenant, row.id, &assignment).await?;
    tracing::info!(tenant_id = %tenant, activity_id = %row.id, %target_id, "target user assigned by hand");
    let target = store::target_users(&state.pool, tenant, row.id)
        .await?
        .into_iter()
        .find(|t| t.id == target_id)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("target user {target_id} vanished")))?;
    Ok(Json(target.into()))
}

/// Cancel an activity: READY or UNRESOLVED → CANCELED.
#[utoipa::path(
    patch,
    path = "/api/activities/{id}/cancel",
    operation_id = "cancelActivity",
    tag = "lifecycle",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The canceled activity.", body = ActivityDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn cancel(
    ctx: Tenant<perm::CancelActivity>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ActivityDetail>, ApiError> {
    let tenant = ctx.tenant_id;
    let id = path_id("id", &raw, ActivityId::parse)?;
    match transitions::cancel(&state.pool, tenant, id).await {
        Ok(_) => {}
        Err(TransitionError::NotFound) => return Err(ApiError::not_found("activity", id)),
        Err(TransitionError::WrongStatus(s)) => {
            return Err(ApiError::BadRequest(format!(
                "only READY or UNRESOLVED activities can be canceled; this one is {s}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(tenant_id = %tenant, activity_id = %id, "activity canceled");
    detail(&state, tenant, id).await
}
