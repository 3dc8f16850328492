//! The Task Integration API (reference §11): `/api/integration/*`, for a
//! tenant's own systems, with an API key only (`x-api-key`).
//!
//! Pull mode lists the tenant's READY and DISPATCHED tasks in the shape the
//! webhook sends; results come back through
//! `POST /api/integration/activity-results/tasks`, checked against the codes
//! of `GET /api/integration/task-result-type-configs`.

use std::marker::PhantomData;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{RequiredPermission, Tenant, TenantContext, perm};
use super::extract::{ListResponse, PageQuery, QueryParams, TypedBody};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::results::{ResultView, SubmitResult, submit_result};
use super::{ApiError, AppState};
use crate::dispatch::payload::{self, Payload};
use crate::domain::{ActivityStatus, Channel};

/// The integration routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(tasks)).routes(routes!(result_types)).routes(routes!(submit))
}

/// A [`Tenant`] whose caller is an API key: the integration API takes no
/// bearer token (a valid one is refused with 403, after the tenant checks).
#[derive(Debug)]
pub struct IntegrationTenant<P>(pub TenantContext, PhantomData<P>);

impl<P: RequiredPermission + Send + Sync> FromRequestParts<AppState> for IntegrationTenant<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = Tenant::<P>::from_request_parts(parts, state).await?.0;
        if !ctx.caller.is_api_key() {
            return Err(ApiError::Forbidden(
                "the integration API takes an API key (x-api-key); bearer tokens are not accepted here".into(),
            ));
        }
        Ok(IntegrationTenant(ctx, PhantomData))
    }
}

/// The filters of the pull list. Unknown parameters are a 400.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// `READY` or `DISPATCHED`; both when absent.
    pub status: Option<ActivityStatus>,
    pub channel: Option<Channel>,
}

/// A task as pulled: the webhook's body, with its status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PulledTask {
    pub status: ActivityStatus,
    /// The provider's id, once a provider accepted it.
    pub provider_activity_id: Option<String>,
    #[serde(flatten)]
    pub payload: Payload,
}

/// The tenant's READY and DISPATCHED tasks, for integrators that poll.
///
/// Oldest scheduled first; each in the shape the webhook sends (targets
/// and attributes left to ON_DISPATCH are not resolved here).
#[utoipa::path(
    get,
    path = "/api/integration/activities/tasks",
    operation_id = "pullTasks",
    tag = "integration",
    params(TenantHeader, TaskQuery, PageQuery),
    responses(
        (status = 200, description = "One page of tasks.", body = ListResponse<PulledTask>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("apiKey" = []))
)]
async fn tasks(
    ctx: IntegrationTenant<perm::ViewActivities>,
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ListResponse<PulledTask>>, ApiError> {
    let status = q.parse("status", |s| match s.parse::<ActivityStatus>()? {
        s @ (ActivityStatus::Ready | ActivityStatus::Dispatched) => Ok(s),
        _ => Err("must be READY or DISPATCHED".to_owned()),
    });
    let channel = q.parse("channel", |s| s.parse::<Channel>());
    let page = q.page();
    q.finish()?;
    let statuses: Vec<&str> = match status {
        Some(s) => vec![s.as_str()],
        None => vec![ActivityStatus::Ready.as_str(), ActivityStatus::Dispatched.as_str()],
    };
    let tenant = ctx.0.tenant_id;
    let (rows, total) =
        crate::store::dispatch::list_tasks(&state.pool, tenant, &statuses, channel.map(|c| c.as_str()), page).await?;
    let data = rows
        .iter()
        .map(|f| PulledTask {
            status: f.activity.status,
            provider_activity_id: f.activity.provider_activity_id.clone(),
            payload: payload::build(tenant, f),
        })
        .collect();
    Ok(Json(ListResponse::new(data, page, total)))
}

/// A result type: a code `task_result.result` may hold.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"code": "RESCHEDULE", "label": "Reprogramar visita", "requiresFutureScheduledAt": true}))]
pub struct ResultTypeView {
    pub code: String,
    pub label: String,
    /// Whether a result of this type needs a future `future_scheduled_at`.
    pub requires_future_scheduled_at: bool,
}

/// The tenant's result types.
///
/// The documented ones (`SALE_COMPLETED`, `NOT_INTERESTED`, `RESCHEDULE`,
/// `NO_CONTACT`), plus those the tenant adds in `tenant.toml`
/// (`[task_result_types.<CODE>]`).
#[utoipa::path(
    get,
    path = "/api/integration/task-result-type-configs",
    operation_id = "listTaskResultTypes",
    tag = "integration",
    params(TenantHeader),
    responses(
        (status = 200, description = "Every result type, by code.", body = Vec<ResultTypeView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("apiKey" = []))
)]
async fn result_types(
    ctx: IntegrationTenant<perm::ViewActivities>,
    State(state): State<AppState>,
) -> Json<Vec<ResultTypeView>> {
    let snapshot = state.registry.snapshot(ctx.0.tenant_id);
    Json(
        snapshot
            .task_result_types
            .iter()
            .map(|(code, t)| ResultTypeView {
                code: code.clone(),
                label: t.label.clone(),
                requires_future_scheduled_at: t.requires_future_scheduled_at,
            })
            .collect(),
    )
}

/// Submit a task result with an API key.
///
/// The same body and rules as `POST /api/activity-results/tasks`.
#[utoipa::path(
    post,
    path = "/api/integration/activity-results/tasks",
    operation_id = "submitIntegrationTaskResult",
    tag = "integration",
    params(TenantHeader),
    request_body = SubmitResult,
    responses(
        (status = 201, description = "Stored (and the activity moved).", body = ResultView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("apiKey" = []))
)]
async fn submit(
    ctx: IntegrationTenant<perm::SubmitActivityResult>,
    State(state): State<AppState>,
    TypedBody(body): TypedBody<SubmitResult>,
) -> Result<(StatusCode, Json<ResultView>), ApiError> {
    submit_result(&state, ctx.0.tenant_id, &ctx.0.caller, body).await
}
