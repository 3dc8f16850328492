//! `/api/activities`: create, list and read activities.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{JsonBody, ListResponse, QueryParams, path_id};
use super::views::{
    ActivityDetail, ActivitySummary, AttributeDecisionView, AttributeView, CreatedActivity, EventView,
    TargetDecisionView, TargetUserView,
};
use super::{ApiError, AppState};
use crate::domain::activity::NewActivity;
use crate::domain::commerce::Commerce;
use crate::domain::{ActivityId, ActivityStatus, ActivityType, Channel, CommerceId, TenantId, time};
use crate::resolve::{self, Resolution, Trace};
use crate::store::activities::{self as store, ActivityFilter, Inserted, NewRecord};

/// The activity routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/activities", post(create).get(list))
        .route("/api/activities/preview", post(preview))
        .route("/api/activities/{id}", get(detail))
        .route("/api/activities/{id}/target-users", get(target_users))
        .route("/api/activities/{id}/attributes", get(attributes))
        .route("/api/activities/{id}/status-events", get(status_events))
}

/// A request validated, its commerce loaded, and its resolution decided.
struct Decided {
    activity: NewActivity,
    commerce: Arc<Commerce>,
    resolution: Resolution,
}

/// Validates a create body against the tenant's snapshot, loads the
/// commerce and resolves. With `fast_path`, a known idempotency key answers
/// 409 before any policy runs.
async fn decide(state: &AppState, tenant: TenantId, body: &Value, fast_path: bool) -> Result<Decided, ApiError> {
    // One snapshot from validation to the last policy call.
    let snapshot = state.registry.snapshot(tenant);
    let activity = NewActivity::parse(body, &*snapshot).map_err(ApiError::Validation)?;
    if fast_path
        && let Some(holder) = store::find_by_idempotency_key(&state.pool, tenant, &activity.idempotency_key).await?
    {
        return Err(ApiError::duplicate_key(&activity.idempotency_key, holder));
    }
    let (commerce, history) = crate::store::commerces::load_for_resolution(&state.pool, tenant, activity.commerce_id)
        .await?
        .ok_or_else(|| ApiError::not_found("commerce", activity.commerce_id))?;
    let commerce = Arc::new(commerce);
    let input = resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history);
    let resolution = resolve::resolve_activity(&snapshot, &input, &activity).await;
    Ok(Decided { activity, commerce, resolution })
}

/// `POST /api/activities`, following DESIGN.md's flow step by step.
async fn create(
    ctx: Tenant<perm::CreateActivity>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let tenant = ctx.tenant_id;
    let Decided { activity, commerce, resolution } = decide(&state, tenant, &body, true).await?;

    let id = ActivityId::new();
    let created_at = Utc::now().trunc_subsecs(6);
    let target_user_id = Uuid::new_v4();
    let attribute_ids: Vec<Uuid> = resolution.attributes.iter().map(|_| Uuid::new_v4()).collect();
    let record = NewRecord {
        tenant,
        id,
        activity: &activity,
        resolution: &resolution,
        created_by: &ctx.caller.sub,
        created_at,
        target_user_id,
        event_id: Uuid::new_v4(),
        attribute_ids: &attribute_ids,
    };
    if let Inserted::Duplicate(holder) = store::insert(&state.pool, &record).await? {
        return Err(ApiError::duplicate_key(&activity.idempotency_key, holder));
    }
    tracing::info!(tenant_id = %tenant, activity_id = %id, status = %resolution.status, "activity created");

    let body = CreatedActivity {
        id,
        activity_type: activity.activity_type.as_str(),
        channel: activity.channel.as_str(),
        status: resolution.status.as_str(),
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
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/activities/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// What a create would decide, without storing anything.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub status: ActivityStatus,
    pub target_users: Vec<TargetDecisionView>,
    pub attributes: Vec<AttributeDecisionView>,
    /// Every config, criterion, candidate, fallback and attribute considered,
    /// and each policy run with its version, duration and outcome.
    pub trace: Trace,
}

/// `POST /api/activities/preview`: the create body, validated and resolved
/// against the policies serving now; nothing is stored and the idempotency
/// key is not checked.
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

/// `GET /api/activities`.
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

/// `GET /api/activities/:id`.
async fn detail(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ActivityDetail>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let targets = store::target_users(&state.pool, ctx.tenant_id, row.id).await?;
    let attributes = store::attributes(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(ActivityDetail::new(row, targets, attributes)))
}

/// `GET /api/activities/:id/target-users`.
async fn target_users(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<TargetUserView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let targets = store::target_users(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(targets.into_iter().map(TargetUserView::from).collect()))
}

/// `GET /api/activities/:id/attributes`.
async fn attributes(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<AttributeView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let rows = store::attributes(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(rows.into_iter().map(AttributeView::from).collect()))
}

/// `GET /api/activities/:id/status-events`.
async fn status_events(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let row = load(&state, &ctx, &raw).await?;
    let events = store::status_events(&state.pool, ctx.tenant_id, row.id).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}
