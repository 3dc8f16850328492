//! An activity's decision input, and its decision made again:
//! `GET /api/activities/{id}/decision-input` (`VIEW_ACTIVITIES`) and
//! `POST /api/activities/{id}/preview` (`MANAGE_ACTIVITY_CONFIG`), which
//! decides the stored input again with the live set or a candidate,
//! storing nothing.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::activities::Preview;
use super::auth::{Tenant, perm};
use super::extract::{ApiPath, path_id};
use super::openapi::{BadRequest, NotFound, TenantHeader, Unprocessable, UnsupportedMediaType};
use super::policy_changes::{FromJsonBody, PolicyJson};
use super::views::{AttributeDecisionView, TargetDecisionView};
use super::{ApiError, AppState};
use crate::domain::{ActivityId, TenantId};
use crate::policy::PreparedInput;
use crate::policy::loader::Scope;
use crate::rollout::RolloutError;
use crate::rollout::changeset::{Changeset, ChangesetInput, FileInput};
use crate::store::activities::{self as store, ActivityRow};
use crate::store::decision_inputs;

/// The decision routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(decision_input)).routes(routes!(redecide))
}

/// An optional candidate: the live set with these files written and deleted.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"files": [{"path": "criteria/pick_rep.rhai", "content": "fn resolve(input) { [] }"}]}))]
pub struct CandidateInput {
    /// Files the candidate adds or replaces.
    #[serde(default)]
    pub files: Vec<FileInput>,
    /// Paths the candidate does not have.
    #[serde(default)]
    pub delete: Vec<String>,
}

impl FromJsonBody for CandidateInput {
    fn empty() -> Option<Self> {
        None
    }
    fn parse(value: Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value)
    }
}

impl CandidateInput {
    /// The change, or `None` when it changes nothing (the live set).
    pub fn change(self, tenant: TenantId) -> Result<Option<Changeset>, ApiError> {
        if self.files.is_empty() && self.delete.is_empty() {
            return Ok(None);
        }
        let input = ChangesetInput { files: self.files, delete: self.delete, ..Default::default() };
        Ok(Some(Changeset::parse(Scope::Tenant(tenant), input).map_err(RolloutError::invalid)?))
    }
}

/// The activity and its latest kept input; 404 naming why when either is
/// missing.
async fn stored(state: &AppState, tenant: TenantId, raw: &str) -> Result<(ActivityRow, Vec<u8>), ApiError> {
    let id = path_id("id", raw, ActivityId::parse)?;
    let row = store::get(&state.pool, tenant, id).await?.ok_or_else(|| ApiError::not_found("activity", id))?;
    let settings = state.rollout.settings();
    let cutoff = settings.decision_input_cutoff(Utc::now());
    let bytes = decision_inputs::latest(&state.pool, tenant, row.id, cutoff).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "activity {} has no decision input kept: inputs are kept for {} days \\
             (RETEN_DECISION_INPUT_RETENTION_DAYS)",
            row.id, settings.decision_input_retention_days
        ))
    })?;
    Ok((row, bytes))
}

/// The input the activity's latest decision was made on.
///
/// Exactly what the policies saw (`{tenant_id, activity, commerce,
/// history}`; each call also got its own `config`): of the create, or of
/// the latest retry or resolution at dispatch. Inputs are kept for
/// `RETEN_DECISION_INPUT_RETENTION_DAYS`; past that this answers 404.
#[utoipa::path(
    get,
    path = "/api/activities/{id}/decision-input",
    operation_id = "getActivityDecisionInput",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    responses(
        (status = 200, description = "The policy input, as the policies saw it.", body = Object,
            example = json!({"tenant_id": "…", "activity": {"type": "TASK", "channel": "SALESMAN"},
                "commerce": {"id": "…", "users": []}, "history": []})),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn decision_input(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, bytes) = stored(&state, ctx.tenant_id, &raw).await?;
    let value = crate::policy::input::stored_json(&bytes).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    Ok(Json(value))
}

/// Decide an activity again.
///
/// Its stored decision input, decided by the policies serving now or, with
/// a body, by a candidate (the live set with those files written and
/// deleted, checked whole first: a problem is a 422). Answers what a
/// preview answers, with the full trace; nothing is stored.
#[utoipa::path(
    post,
    path = "/api/activities/{id}/preview",
    operation_id = "previewStoredActivity",
    tag = "activities",
    params(TenantHeader, ("id" = Uuid, Path, description = "The activity's id.")),
    request_body(content = Option<CandidateInput>, content_type = "application/json"),
    responses(
        (status = 200, description = "What the set decides on the stored input, and why.", body = Preview),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn redecide(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    PolicyJson(candidate): PolicyJson<Option<CandidateInput>>,
) -> Result<Json<Preview>, ApiError> {
    let tenant = ctx.tenant_id;
    let (row, bytes) = stored(&state, tenant, &raw).await?;
    let change = candidate.map(|c| c.change(tenant)).transpose()?.flatten();
    let snapshot = state.rollout.snapshot_with(tenant, change.as_ref()).await?;
    let base = crate::policy::input::decode_stored(&bytes).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let input = PreparedInput::new(base);
    let commerce = std::sync::Arc::clone(&input.base.commerce);
    let resolution = crate::resolve::resolve_activity(&snapshot, &input, &row.replay()).await;
    Ok(Json(Preview {
        status: resolution.status,
        target_users: vec![TargetDecisionView::new(&resolution.target, &commerce, None)],
        attributes: resolution.attributes.iter().map(|a| AttributeDecisionView::new(a, None)).collect(),
        trace: resolution.trace,
    }))
}
