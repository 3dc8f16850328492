//! `/api/activities`: create, list and read activities.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, JsonBody, ListResponse, PageQuery, QueryParams, path_id};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::views::{
    ActivityDetail, ActivitySummary, AttributeDecisionView, AttributeView, CreatedActivity, EventView,
    TargetDecisionView, TargetUserView,
};
use super::{ApiError, AppState};
use crate::domain::activity::{CallerAttribute, NewActivity, TargetCriterion};
use crate::domain::commerce::Commerce;
use crate::domain::{ActivityId, ActivityStatus, ActivityType, Channel, CommerceId, TenantId, time};
use crate::policy::PreparedInput;
use crate::resolve::{self, Resolution, Trace};
use crate::store::activities::{self as store, ActivityFilter, Inserted, NewRecord};

/// The activity routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create, list))
        .routes(routes!(preview))
        .routes(routes!(detail))
        .routes(routes!(target_users))
        .routes(routes!(attributes))
        .routes(routes!(status_events))
}

/// The body of `POST /api/activities` (and of its preview), `snake_case`.
///
/// Only a description: the body is read field by field by
/// [`NewActivity::parse`], which lists every bad field at once. `null` reads
/// as absent.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!(create_example()))]
pub struct CreateActivityRequest {
    #[serde(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    /// Why the activity exists.
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub reason: String,
    /// A commerce of the tenant.
    pub commerce_id: CommerceId,
    /// Unique per tenant: a second create with the same key answers 409
    /// naming the activity that holds it. No control characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*\S[^\x00-\x1f\x7f-\x9f]*$")]
    pub idempotency_key: String,
    /// RFC 3339 with an offset.
    pub scheduled_at: DateTime<Utc>,
    pub suggested_execution_time: Option<DateTime<Utc>>,
    #[schema(max_length = 255)]
    pub user_status: Option<String>,
    /// Priority score (32-bit).
    pub score: Option<i32>,
    #[schema(max_length = 1000)]
    pub assignment_reason: Option<String>,
    /// Replaces the configured criteria for this activity: each `type` must
    /// be a criterion the tenant has.
    #[schema(max_items = 20)]
    pub target_criteria: Option<Vec<TargetCriterion>>,
    /// Keys of the tenant's catalogue to resolve through policies, each once.
    #[schema(max_items = 50)]
    pub attribute_keys: Option<Vec<String>>,
    /// The caller's own values and fallbacks, each key once.
    #[schema(max_items = 50)]
    pub attributes: Option<Vec<CallerAttribute>>,
}

/// The documented example of a create body.
fn create_example() -> Value {
    serde_json::json!({
        "type": "MESSAGE",
        "reason": "Monthly promotion",
        "channel": "WHATSAPP",
        "commerce_id": "880e8400-e29b-41d4-a716-446655440000",
        "idempotency_key": "msg-2025-01-15-001",
        "scheduled_at": "2025-01-16T09:00:00.000Z",
        "attribute_keys": ["commerce_info"]
    })
}

/// The filters of `GET /api/activities`. Unknown parameters are a 400.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    pub status: Option<ActivityStatus>,
    #[param(rename = "type")]
    pub activity_type: Option<ActivityType>,
    pub channel: Option<Channel>,
    pub commerce_id: Option<CommerceId>,
    /// Activities scheduled at or after this instant (RFC 3339).
    pub scheduled_from: Option<DateTime<Utc>>,
    /// Activities scheduled at or before this instant (RFC 3339).
    pub scheduled_to: Option<DateTime<Utc>>,
    /// Text to look for in the reason or the idempotency key.
    pub search: Option<String>,
}

/// A request validated, its commerce loaded, and its resolution decided.
struct Decided {
    activity: NewActivity,
    commerce: Arc<Commerce>,
    /// The input the policies saw.
    input: Arc<PreparedInput>,
    resolution: Resolution,
}

/// Validates a create body against the tenant's snapshot, loads the
/// commerce and resolves. With `fast_path`, a known idempotency key answers
/// 409 before any policy runs.
async fn decide(state: &AppState, tenant: TenantId, body: &Value, fast_path: bool) -> Result<Decided, ApiError> {
    // One snapshot from validation to the last policy call.
    let snapshot = state.registry.snapshot(tenant);
    let activity = NewActivity::parse(body, &*snapshot).map_err(ApiError::Validation)?;
    // One round trip: a known key answers 409 before any policy runs, then
    // the commerce (404 when the tenant has none).
    let key = fast_path.then_some(activity.idempotency_key.as_str());
    let read = crate::store::commerces::load_for_create(&state.fast, tenant, activity.commerce_id, key).await?;
    if let Some(holder) = read.existing {
        return Err(ApiError::duplicate_key(&activity.idempotency_key, holder));
    }
    let (commerce, history) = read.commerce.ok_or_else(|| ApiError::not_found("commerce", activity.commerce_id))?;
    let commerce = Arc::new(commerce);
    let input = Arc::new(resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history));
    let resolution = resolve::resolve_activity(&snapshot, &input, &activity).await;
    Ok(Decided { activity, commerce, input, resolution })
}

/// Create an activity.
///
/// Validates the body against the tenant's policies (every bad field is
/// listed), answers 409 for a used idempotency key before any policy runs,
/// resolves the target user and the attributes with the tenant's policies,
/// and stores the activity whole.
#[utoipa::path(
    post,
    path = "/api/activities",
    operation_id = "createActivity",
    tag = "activities",
    params(TenantHeader),
    request_body(content = CreateActivityRequest, example = json!(create_example())),
    responses(
        (status = 201, description = "Created, with its target user and attributes resolved.",
            body = CreatedActivity,
            headers(("Location" = String, description = "`/api/activities/{id}`")),
            example = json!(super::views::examples::created_activity())),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
// Follows DESIGN.md's flow step by step.
async fn create(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let tenant = ctx.tenant_id;
    let Decided { activity, commerce, input, resolution } = decide(&state, tenant, &body, true).await?;

    let id = ActivityId::new();
    let created_at = Utc::now().trunc_subsecs(6);
    let target_user_id = crate::domain::new_id();
    let attribute_ids: Vec<Uuid> = resolution.attributes.iter().map(|_| crate::domain::new_id()).collect();
    let decision_input = state.rollout.keeps_decision_inputs().then(|| input.encode_stored());
    let record = NewRecord {
        tenant,
        id,
        activity: &activity,
        resolution: &resolution,
        created_by: &ctx.caller.sub,
        created_at,
        target_user_id,
        event_id: crate::domain::new_id(),
        attribute_ids: &attribute_ids,
        decision_input: decision_input.as_deref(),
    };
    if let Inserted::Duplicate(holder) = store::insert(&state.fast, &record).await? {
        return Err(ApiError::duplicate_key(&activity.idempotency_key, holder));
    }
    tracing::debug!(tenant_id = %tenant, activity_id = %id, status = %resolution.status, "activity created");
    state.metrics.activities_created.with_label_values(&[resolution.status.as_str()]).inc();

    let body = CreatedActivity {
        id,
        activity_type: activity.activity_type,
        channel: activity.channel,
        status: resolution.status,
        reason: activity.reason.clone(),
        idempotency_key: activity.idempotency_key.clone(),
        scheduled_at: activity.scheduled_at,
        commerce_assignment: super::views::CommerceAssignment { commerce_id: activity.commerce_id, commerce: None },
        target_users: vec![TargetUserView::from_decision(
            target_user_id,
            id,
            &resolution.target,
            &commerce,
            created_at,
        )],
        attributes: resolution
            .attributes
            .iter()
            .zip(&attribute_ids)
            .map(|(a, attr_id)| AttributeView::from_decision(*attr_id, id, a, created_at))
            .collect(),
        created_at,
    };
    // After everything the answer needs, and without waiting.
    state.rollout.shadows().offer(id, &input, &activity, &resolution);
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/activities/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// What a create would decide, without storing anything.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// `READY`, or `UNRESOLVED` when a target user or an attribute would fail.
    pub status: ActivityStatus,
    pub target_users: Vec<TargetDecisionView>,
    pub attributes: Vec<AttributeDecisionView>,
    /// Every config, criterion, candidate, fallback and attribute considered,
    /// and each policy run with its version, duration and outcome.
    pub trace: Trace,
}

/// Preview what a create would decide.
///
/// The create body, validated and resolved against the policies serving
/// now, with the full trace; nothing is stored and the idempotency key is
/// not checked.
#[utoipa::path(
    post,
    path = "/api/activities/preview",
    operation_id = "previewActivity",
    tag = "activities",
    params(TenantHeader),
    request_body(content = CreateActivityRequest, example = json!(create_example())),
    responses(
        (status = 200, description = "What a create would decide, and why.", body = Preview),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn preview(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Preview>, ApiError> {
    let Decided { commerce, resolution, .. } = decide(&state, ctx.tenant_id, &body, false).await?;
    Ok(Json(Preview {
        status: resolution.status,
        target_users: vec![TargetDecisionView::new(&resolution.target, &commerce, None)],
        attributes: resolution.attributes.iter().map(|a| AttributeDecisionView::new(a, None)).collect(),
        trace: resolution.trace,
    }))
}

/// List activities, newest first.
#[utoipa::path(
    get,
    path = "/api/activities",
    operation_id = "listActivities",
    tag = "activities",
    params(TenantHeader, ActivityQuery, PageQuery),
    responses(
        (status = 200, description = "One page of activities.", body = ListResponse<ActivitySummary>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ListResponse<ActivitySummary>>, ApiError> {
    let filter = ActivityFilter {
        status: q.parse("status", |s| s.parse::<ActivityStatus>()),
        activity_type: q.parse("type", |s| s.parse::<ActivityType>()),
        channel: q.parse("channel", |s| s.parse::<Channel>()),
        commerce_id: q.parse("commerce_id", |s| CommerceId::parse(s).map_err(|_| "must be a UUID".to_owned())),
        scheduled_from: q.parse("scheduled_from", time::parse),
        scheduled_to: q.parse("scheduled_to", time::parse),
        search: q.get("search").filter(|s| !s.trim().is_empty()),
    };
    let page = q.page();
    q.finish()?;
    let (rows, total) = store::list(&state.pool, ctx.tenant_id, &filter, page).await?;
    Ok(Json(ListResponse::new(rows.into_iter().map(ActivitySummary::from).collect(), page, total)))
}

async fn load(state: &AppState, ctx: &Tenant<perm::ViewActivities>, raw: &str) -> Result<store::ActivityRow, ApiError> {
    let id = path_id("id", raw, ActivityId::parse)?;
    store::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("activity", id))
}

/// Read an activity: everything stored about it.
#[utoipa::path(
    get,
    path = "/api/activities/{id}",
    operation_id = "getActivity",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The activity, with its target users, attributes and resolution trace.", body = ActivityDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn detail(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ActivityDetail>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let targets = store::target_users(&state.pool, ctx.tenant_id, row.id).await?;
    let attributes = store::attributes(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(ActivityDetail::new(row, targets, attributes)))
}

/// The activity's target users.
#[utoipa::path(
    get,
    path = "/api/activities/{id}/target-users",
    operation_id = "listActivityTargetUsers",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The target users.", body = Vec<TargetUserView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn target_users(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<TargetUserView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let targets = store::target_users(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(targets.into_iter().map(TargetUserView::from).collect()))
}

/// The activity's attributes.
#[utoipa::path(
    get,
    path = "/api/activities/{id}/attributes",
    operation_id = "listActivityAttributes",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The attributes, in request order.", body = Vec<AttributeView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn attributes(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<AttributeView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let rows = store::attributes(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(rows.into_iter().map(AttributeView::from).collect()))
}

/// The activity's status events, oldest first.
#[utoipa::path(
    get,
    path = "/api/activities/{id}/status-events",
    operation_id = "listActivityStatusEvents",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The status events.", body = Vec<EventView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn status_events(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let events = store::status_events(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}
