//! Activity results (reference §10): `POST /api/activity-results/tasks` for
//! platform users, its twin under `/api/integration/` for API keys, and
//! `GET /api/activities/{id}/results`.
//!
//! A result names its activity by `activity_id` (which wins) or by the
//! provider's id; one whose provider id matches nothing is stored
//! `STANDALONE` with its commerce. Its `task_result.result` must be a code
//! of the tenant's result types.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Caller, Tenant, perm};
use super::extract::{ApiPath, TypedBody, path_id};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::{ApiError, AppState};
use crate::domain::result::{ContactDirection, ResultSource, ResultStatus};
use crate::domain::validation::Errors;
use crate::domain::{ActivityId, ActivityStatus, TenantId, time};
use crate::store::results::{self as store, NewResult, ResultRow, Submitted};

/// The platform's result routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(submit)).routes(routes!(list))
}

/// `task_result`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskResultBody {
    /// A code of `GET /api/integration/task-result-type-configs`.
    #[schema(min_length = 1, max_length = 64, example = "SALE_COMPLETED")]
    pub result: String,
    #[schema(max_length = 2000)]
    pub comment: Option<String>,
    #[schema(value_type = Option<ContactDirection>)]
    pub contact_type: Option<String>,
    #[schema(max_length = 255)]
    pub operator_external_id: Option<String>,
    /// RFC 3339; required, and in the future, when the result type says so.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub future_scheduled_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
}

/// The body of a result (reference §10.1).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"activity_id": "ee0e8400-e29b-41d4-a716-446655440000", "commerce_external_id": "c-1",
    "occurred_at": "2025-01-16T15:30:00.000Z", "status": "COMPLETED",
    "task_result": {"result": "SALE_COMPLETED", "comment": "Ordered 12 boxes", "contact_type": "OUTBOUND"}}))]
pub struct SubmitResult {
    /// The activity; wins over `provider_activity_id`. One of the two.
    pub activity_id: Option<Uuid>,
    /// The provider's id for the activity (`providerActivityId`).
    #[schema(min_length = 1, max_length = 255)]
    pub provider_activity_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub commerce_external_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: String,
    /// `EFFECTIVE` and `NOT_EFFECTIVE` (the integration vocabulary) are taken
    /// as `COMPLETED` and `NOT_EXECUTED`.
    #[schema(value_type = ResultStatus)]
    pub status: String,
    #[schema(max_length = 255)]
    pub external_status: Option<String>,
    /// Replace a terminal result and move the activity again.
    pub hard_override: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub raw_payload: Option<Map<String, Value>>,
    pub task_result: TaskResultBody,
}

/// `taskResult` of a stored result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResultView {
    pub result: String,
    pub comment: Option<String>,
    #[schema(value_type = Option<ContactDirection>)]
    pub contact_type: Option<String>,
    pub operator_external_id: Option<String>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub future_scheduled_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
}

/// A stored result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultView {
    pub id: Uuid,
    pub activity_id: Option<ActivityId>,
    #[schema(value_type = ResultSource)]
    pub source: String,
    pub provider_activity_id: Option<String>,
    pub commerce_id: Option<Uuid>,
    pub commerce_external_id: String,
    #[serde(with = "crate::domain::time::millis")]
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = ResultStatus)]
    pub status: String,
    pub external_status: Option<String>,
    pub hard_override: bool,
    pub task_result: TaskResultView,
    #[schema(value_type = Option<Object>)]
    pub raw_payload: Option<Value>,
    /// The activity's status before and after this result.
    #[schema(value_type = Option<ActivityStatus>)]
    pub activity_status_before: Option<String>,
    #[schema(value_type = Option<ActivityStatus>)]
    pub activity_status_after: Option<String>,
    /// When a later result with `hard_override` replaced this one.
    #[serde(with = "crate::domain::time::millis_opt")]
    pub replaced_at: Option<DateTime<Utc>>,
    /// The caller's `sub`, or `api-key:<id>`.
    pub submitted_by: String,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
}

impl From<ResultRow> for ResultView {
    fn from(r: ResultRow) -> Self {
        Self {
            id: r.id,
            activity_id: r.activity_id,
            source: r.source,
            provider_activity_id: r.provider_activity_id,
            commerce_id: r.commerce_id.map(|c| c.0),
            commerce_external_id: r.commerce_external_id,
            occurred_at: r.occurred_at,
            status: r.status,
            external_status: r.external_status,
            hard_override: r.hard_override,
            task_result: TaskResultView {
                result: r.result_code,
                comment: r.comment,
                contact_type: r.contact_type,
                operator_external_id: r.operator_external_id,
                future_scheduled_at: r.future_scheduled_at,
                payload: r.payload.map(|p| p.0),
            },
            raw_payload: r.raw_payload.map(|p| p.0),
            activity_status_before: r.activity_status_before,
            activity_status_after: r.activity_status_after,
            replaced_at: r.replaced_at,
            submitted_by: r.submitted_by,
            created_at: r.created_at,
        }
    }
}

/// A body's values, checked: every bad field listed.
struct Checked {
    occurred_at: DateTime<Utc>,
    status: ResultStatus,
    contact_type: Option<ContactDirection>,
    future_scheduled_at: Option<DateTime<Utc>>,
}

fn check(state: &AppState, tenant: TenantId, b: &SubmitResult) -> Result<Checked, ApiError> {
    let mut e = Errors::default();
    let sized = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max;
    if b.activity_id.is_none() && b.provider_activity_id.is_none() {
        e.add("activity_id", "one of activity_id or provider_activity_id is required");
    }
    if b.provider_activity_id.as_deref().is_some_and(|p| !sized(p, 255)) {
        e.add("provider_activity_id", "must be 1 to 255 characters");
    }
    if !sized(&b.commerce_external_id, 255) {
        e.add("commerce_external_id", "must be 1 to 255 characters");
    }
    for (field, value, max) in [
        ("external_status", b.external_status.as_deref(), 255),
        ("task_result.comment", b.task_result.comment.as_deref(), 2000),
        ("task_result.operator_external_id", b.task_result.operator_external_id.as_deref(), 255),
    ] {
        if value.is_some_and(|v| v.chars().count() > max) {
            e.add(field, format!("must be at most {max} characters"));
        }
    }
    let occurred_at = time::parse(&b.occurred_at).map_err(|m| e.add("occurred_at", m)).ok();
    let status = ResultStatus::parse_lenient(&b.status);
    if status.is_none() {
        e.add("status", format!("must be one of {} (or EFFECTIVE, NOT_EFFECTIVE)", ResultStatus::expected()));
    }
    let contact_type = b.task_result.contact_type.as_deref().and_then(|c| {
        let parsed = ContactDirection::parse(c);
        if parsed.is_none() {
            e.add("task_result.contact_type", format!("must be one of {}", ContactDirection::expected()));
        }
        parsed
    });
    let future = b
        .task_result
        .future_scheduled_at
        .as_deref()
        .and_then(|raw| time::parse(raw).map_err(|m| e.add("task_result.future_scheduled_at", m)).ok());
    check_result_type(state, tenant, &b.task_result.result, future, &mut e);
    e.finish(()).map_err(ApiError::Validation)?;
    Ok(Checked {
        occurred_at: occurred_at.expect("checked above"),
        status: status.expect("checked above"),
        contact_type,
        future_scheduled_at: future,
    })
}

/// `task_result.result` must be one of the tenant's codes, with a future
/// `future_scheduled_at` when its type requires one.
fn check_result_type(state: &AppState, tenant: TenantId, code: &str, future: Option<DateTime<Utc>>, e: &mut Errors) {
    let snapshot = state.registry.snapshot(tenant);
    match snapshot.task_result_types.get(code) {
        None => {
            let codes = snapshot.task_result_types.keys().map(String::as_str);
            e.add("task_result.result", format!("must be a result type code: {}", crate::domain::one_of(codes)));
        }
        Some(t) if t.requires_future_scheduled_at && future.is_none_or(|f| f <= Utc::now()) => {
            e.add("task_result.future_scheduled_at", format!("is required, in the future, by {code}"));
        }
        Some(_) => {}
    }
}

/// Checks and stores a result for the caller's tenant.
pub(crate) async fn submit_result(
    state: &AppState,
    tenant: TenantId,
    caller: &Caller,
    b: SubmitResult,
) -> Result<(StatusCode, Json<ResultView>), ApiError> {
    let c = check(state, tenant, &b)?;
    let submitted_by = match caller.api_key {
        Some((_, key)) => format!("api-key:{key}"),
        None => caller.sub.clone(),
    };
    let new = NewResult {
        id: crate::domain::new_id(),
        provider_activity_id: b.provider_activity_id.as_deref(),
        commerce_external_id: &b.commerce_external_id,
        occurred_at: c.occurred_at,
        status: c.status,
        external_status: b.external_status.as_deref(),
        result_code: &b.task_result.result,
        comment: b.task_result.comment.as_deref(),
        contact_type: c.contact_type,
        operator_external_id: b.task_result.operator_external_id.as_deref(),
        future_scheduled_at: c.future_scheduled_at,
        payload: b.task_result.payload.as_ref(),
        raw_payload: b.raw_payload.as_ref(),
        hard_override: b.hard_override.unwrap_or(false),
        submitted_by: &submitted_by,
    };
    let activity = match (b.activity_id, b.provider_activity_id.as_deref()) {
        (Some(id), _) => Some(ActivityId(id)),
        (None, Some(provider_id)) => store::find_by_provider_id(&state.pool, tenant, provider_id).await?,
        (None, None) => None,
    };
    let row = match activity {
        Some(id) => match store::submit_for_activity(&state.pool, tenant, id, &new).await? {
            Submitted::Stored(row) => *row,
            Submitted::NotFound => return Err(ApiError::not_found("activity", id)),
            Submitted::OtherCommerce(actual) => {
                return Err(ApiError::field(
                    "commerce_external_id",
                    format!("does not match the activity's commerce ({actual})"),
                ));
            }
            Submitted::Conflict(status) => {
                return Err(ApiError::Conflict {
                    detail: format!(
                        "the activity is {status} and cannot take another terminal result; \
                         send hard_override: true to replace the previous one"
                    ),
                    activity_id: None,
                });
            }
        },
        None => store::submit_standalone(&state.pool, tenant, &new).await?.ok_or_else(|| {
            ApiError::NotFound(format!("no commerce has the external id '{}'", b.commerce_external_id))
        })?,
    };
    tracing::info!(tenant_id = %tenant, result_id = %row.id, source = %row.source, status = %row.status, "result stored");
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Submit a task result.
///
/// Moves the activity (from READY or DISPATCHED): COMPLETED and TRANSFERRED
/// → COMPLETED, NOT_EXECUTED → FAILED, CANCELED → CANCELED; PENDING leaves
/// it. A terminal result for an activity in a terminal status is a 409
/// unless `hard_override`.
#[utoipa::path(
    post,
    path = "/api/activity-results/tasks",
    operation_id = "submitTaskResult",
    tag = "results",
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
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn submit(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    TypedBody(body): TypedBody<SubmitResult>,
) -> Result<(StatusCode, Json<ResultView>), ApiError> {
    submit_result(&state, ctx.tenant_id, &ctx.caller, body).await
}

/// An activity's results, oldest first.
#[utoipa::path(
    get,
    path = "/api/activities/{id}/results",
    operation_id = "listActivityResults",
    tag = "results",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "Its results, replaced ones included.", body = Vec<ResultView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<ResultView>>, ApiError> {
    let id = path_id("id", &raw, ActivityId::parse)?;
    crate::store::activities::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("activity", id))?;
    let rows = store::list(&state.pool, ctx.tenant_id, id).await?;
    Ok(Json(rows.into_iter().map(ResultView::from).collect()))
}
