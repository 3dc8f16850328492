//! Manual dispatch and re-dispatch: `POST /api/activities/tasks/{id}/dispatch`
//! sends one READY task now, synchronously, through the same pipeline as
//! the dispatcher; `PATCH /api/activities/{id}/retry-dispatch` puts a FAILED
//! activity back to READY.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, path_id};
use super::openapi::{BadGateway, BadRequest, Conflict, NotFound, TenantHeader};
use super::views::ActivityDetail;
use super::{ApiError, AppState};
use crate::dispatch::pipeline::{self, Ctx, Outcome};
use crate::domain::{ActivityId, ActivityStatus, ActivityType};
use crate::store::activities;
use crate::store::dispatch::{self as store};
use crate::store::dispatch_configs;
use crate::store::dispatch_outcomes::{self, Trigger};
use crate::store::transitions::TransitionError;

/// The manual dispatch routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(dispatch_task)).routes(routes!(retry_dispatch))
}

/// Dispatch a READY task now.
///
/// Sends it to its channel's provider and answers when the provider has:
/// 204 on 2xx (the task is DISPATCHED), 502 with the provider's error
/// otherwise (the attempt counts towards `RETEN_DISPATCH_MAX_ATTEMPTS`).
/// ON_DISPATCH targets and attributes are resolved first.
#[utoipa::path(
    post,
    path = "/api/activities/tasks/{id}/dispatch",
    operation_id = "dispatchTask",
    tag = "dispatch",
    params(TenantHeader, ("id" = Uuid, Path, description = "The task's id.")),
    responses(
        (status = 204, description = "The provider accepted it: the task is DISPATCHED."),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 502, response = BadGateway),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn dispatch_task(
    ctx: Tenant<perm::DispatchActivity>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = ctx.tenant_id;
    let id = path_id("id", &raw, ActivityId::parse)?;
    let row = activities::get(&state.pool, tenant, id).await?.ok_or_else(|| ApiError::not_found("activity", id))?;
    if row.activity_type != ActivityType::Task {
        return Err(ApiError::BadRequest(format!(
            "only TASK activities are dispatched by hand; this one is a {}",
            row.activity_type
        )));
    }
    if row.status != ActivityStatus::Ready {
        return Err(ApiError::BadRequest(format!("only READY tasks can be dispatched; this one is {}", row.status)));
    }
    if dispatch_configs::active_for(&state.pool, tenant, row.channel.as_str()).await?.is_none() {
        return Err(ApiError::NotFound(format!("there is no active dispatch config for channel {}", row.channel)));
    }
    let owner = Uuid::new_v4();
    if !store::claim_one(&state.pool, tenant, id, owner, state.dispatch.settings.lease()).await? {
        return Err(ApiError::Conflict {
            detail: "the task is being dispatched right now, or changed meanwhile; read it again".into(),
            activity_id: None,
        });
    }
    let run = Ctx { pool: &state.pool, fast: &state.fast, registry: &state.registry, dispatch: &state.dispatch };
    let outcome = pipeline::run(&run, tenant, id, owner, Trigger::Manual).await;
    if outcome.is_err() {
        // Give the claim back so the dispatcher can take it; the error is answered below.
        let _ = store::release(&state.pool, tenant, id, owner).await;
    }
    match outcome? {
        Outcome::Dispatched { .. } => Ok(StatusCode::NO_CONTENT),
        Outcome::AttemptFailed { failure, status } => {
            let next = match status {
                Some(ActivityStatus::Failed) => "it is now FAILED",
                _ => "the dispatcher retries it after the backoff",
            };
            Err(ApiError::BadGateway(format!("{} ({}); {next}", failure.message, failure.code)))
        }
        Outcome::Unresolved(why) => Err(ApiError::Conflict {
            detail: format!("the task could not be resolved for dispatch and is now UNRESOLVED: {why}"),
            activity_id: None,
        }),
        Outcome::Held => Err(ApiError::Conflict {
            detail: "the task's target user waits for a manual assignment".into(),
            activity_id: None,
        }),
        Outcome::NoConfig => {
            Err(ApiError::NotFound(format!("there is no active dispatch config for channel {}", row.channel)))
        }
        Outcome::Lost => Err(ApiError::Conflict {
            detail: "the task changed while it was being dispatched; read it again".into(),
            activity_id: None,
        }),
    }
}

/// Put a FAILED activity back to READY.
///
/// Its attempts start again from zero (event `DISPATCH_RETRY`) and the
/// dispatcher takes it at once.
#[utoipa::path(
    patch,
    path = "/api/activities/{id}/retry-dispatch",
    operation_id = "retryActivityDispatch",
    tag = "dispatch",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The activity, READY again.", body = ActivityDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn retry_dispatch(
    ctx: Tenant<perm::DispatchActivity>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ActivityDetail>, ApiError> {
    let tenant = ctx.tenant_id;
    let id = path_id("id", &raw, ActivityId::parse)?;
    match dispatch_outcomes::retry_dispatch(&state.pool, tenant, id).await {
        Ok(()) => {}
        Err(TransitionError::NotFound) => return Err(ApiError::not_found("activity", id)),
        Err(TransitionError::WrongStatus(s)) => {
            return Err(ApiError::BadRequest(format!(
                "only FAILED activities can be dispatched again; this one is {s}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(tenant_id = %tenant, activity_id = %id, "dispatch retried");
    state.dispatch.wake();
    let row = activities::get(&state.pool, tenant, id).await?.ok_or_else(|| ApiError::not_found("activity", id))?;
    let targets = activities::target_users(&state.pool, tenant, id).await?;
    let attributes = activities::attributes(&state.pool, tenant, id).await?;
    Ok(Json(ActivityDetail::new(row, targets, attributes)))
}
