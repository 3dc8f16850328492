//! The tenant's shadow set: `PUT/GET/DELETE /api/policies/shadow` and
//! `POST /api/policies/shadow/promote` (`MANAGE_ACTIVITY_CONFIG`). The set
//! is evaluated on every live create after its answer is sent, in
//! [`crate::rollout::shadow`].

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::{Tenant, perm};
use super::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, Unprocessable, UnsupportedMediaType,
};
use super::policy_changes::{ChangeView, FileChangeView, FromJsonBody, MAX_CHANGESET_BYTES, PolicyJson, author};
use super::{ApiError, AppState};
use crate::policy::loader::Scope;
use crate::rollout::RolloutError;
use crate::rollout::changeset::{Changeset, ChangesetInput, FileInput};
use crate::rollout::compare::Sample;
use crate::rollout::shadow::Summary;

/// The shadow routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(install, summary, end).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
        .routes(routes!(promote))
}

/// The body of `PUT /api/policies/shadow`: a candidate change to the live set.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "files": [{"path": "criteria/pick_rep.rhai", "content": "fn resolve(input) { [] }"}],
    "message": "try the new rep picker on live traffic"
}))]
pub struct ShadowInput {
    /// Files the shadow set adds or replaces.
    #[serde(default)]
    pub files: Vec<FileInput>,
    /// Paths the shadow set does not have.
    #[serde(default)]
    pub delete: Vec<String>,
    /// What it is, for the summary (and the revision, once promoted).
    #[serde(default)]
    pub message: Option<String>,
}

impl FromJsonBody for ShadowInput {
    fn empty() -> Option<Self> {
        None
    }
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value)
    }
}

/// The body of a promote, optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteInput {
    /// The revision's message (default: the shadow's, else `promote the shadow set`).
    #[serde(default)]
    pub message: Option<String>,
}

/// A shadow set and how it compares with the live one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowView {
    #[serde(with = "crate::domain::time::millis")]
    pub started_at: DateTime<Utc>,
    pub author: String,
    pub message: Option<String>,
    /// What the shadow set changes against the live set.
    pub files: Vec<FileChangeView>,
    /// Live creates the shadow set decided too, over every replica.
    pub evaluated: i64,
    pub agreed: i64,
    pub disagreed: i64,
    /// Evaluations on which a shadow policy failed.
    pub errors: i64,
    /// Live creates not evaluated because the shadow queue was full.
    pub dropped: i64,
    /// The latest disagreements (up to 50): `before` is the live decision,
    /// `after` the shadow set's.
    pub samples: Vec<Sample>,
}

impl From<Summary> for ShadowView {
    fn from(s: Summary) -> Self {
        Self {
            started_at: s.started_at,
            author: s.author,
            message: s.message,
            files: s
                .files
                .into_iter()
                .map(|f| FileChangeView { path: f.path, sha256: f.sha256, change: f.change })
                .collect(),
            evaluated: s.counts.evaluated,
            agreed: s.counts.agreed,
            disagreed: s.counts.disagreed,
            errors: s.counts.errors,
            dropped: s.counts.dropped,
            samples: s.samples,
        }
    }
}

/// Install a shadow set.
///
/// The live set with this change, checked whole (a problem is a 422 and
/// nothing is written), is written to the tenant's `shadow/` folder and
/// decides on every live create from now on, after the create's answer is
/// sent, without serving. A second PUT replaces it and resets the counts.
#[utoipa::path(
    put,
    path = "/api/policies/shadow",
    operation_id = "installPolicyShadow",
    tag = "policies",
    params(TenantHeader),
    request_body(content = ShadowInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Installed; live creates are evaluated by it from now on.", body = ShadowView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn install(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<ShadowInput>,
) -> Result<Json<ShadowView>, ApiError> {
    let change_input =
        ChangesetInput { files: input.files, delete: input.delete, message: input.message, ..Default::default() };
    let change = Changeset::parse(Scope::Tenant(ctx.tenant_id), change_input).map_err(RolloutError::invalid)?;
    let summary = state.rollout.install_shadow(ctx.tenant_id, &change, &author(&ctx.caller)).await?;
    Ok(Json(summary.into()))
}

/// The shadow set's summary.
///
/// Counts are summed over every replica (each adds its own every 200 ms);
/// 404 when the tenant has no shadow set.
#[utoipa::path(
    get,
    path = "/api/policies/shadow",
    operation_id = "getPolicyShadow",
    tag = "policies",
    params(TenantHeader),
    responses(
        (status = 200, description = "The shadow set and its counts.", body = ShadowView),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn summary(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
) -> Result<Json<ShadowView>, ApiError> {
    let summary = state.rollout.shadow_summary(ctx.tenant_id).await?.ok_or_else(no_shadow)?;
    Ok(Json(summary.into()))
}

/// End the shadow set: its folder and its counts are removed.
#[utoipa::path(
    delete,
    path = "/api/policies/shadow",
    operation_id = "endPolicyShadow",
    tag = "policies",
    params(TenantHeader),
    responses(
        (status = 204, description = "Ended."),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn end(ctx: Tenant<perm::ManageActivityConfig>, State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    if state.rollout.end_shadow(ctx.tenant_id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(no_shadow()) }
}

/// Promote the shadow set: it serves.
///
/// Applies the shadow folder's set as a changeset (a new revision,
/// `source: PROMOTE`, author the caller), through the same checks, then
/// ends the shadow. Answers like a changeset.
#[utoipa::path(
    post,
    path = "/api/policies/shadow/promote",
    operation_id = "promotePolicyShadow",
    tag = "policies",
    params(TenantHeader),
    request_body(content = Option<PromoteInput>, content_type = "application/json"),
    responses(
        (status = 200, description = "Promoted; the set serves.", body = ChangeView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn promote(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<Option<PromoteInput>>,
) -> Result<Json<ChangeView>, ApiError> {
    let message = match input.and_then(|i| i.message) {
        Some(m) => Some(m),
        None => state.rollout.shadow_summary(ctx.tenant_id).await?.and_then(|s| s.message),
    };
    let applied = state.rollout.promote_shadow(ctx.tenant_id, &author(&ctx.caller), message).await?;
    Ok(Json(applied.into()))
}

fn no_shadow() -> ApiError {
    ApiError::NotFound("this tenant has no shadow set; install one with PUT /api/policies/shadow".into())
}
