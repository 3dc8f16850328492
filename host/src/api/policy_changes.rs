//! Policy changes through the API: a changeset (`POST /api/policies/changes`)
//! and a restore of an earlier revision
//! (`POST /api/policies/revisions/{n}/restore`), for the caller's tenant
//! (`MANAGE_ACTIVITY_CONFIG`), with twins under `/api/global-policies/` for
//! the global layer (`SUPER_ADMIN`).
//!
//! The handlers authenticate, parse the change and hand it to
//! [`crate::rollout`], which checks the whole resulting set before writing
//! anything and answers once the new set serves on this replica.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::{Caller, SuperAdmin, Tenant, perm};
use super::extract::{ApiPath, check_shape};
use super::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, Unprocessable, UnsupportedMediaType,
};
use super::{ApiError, AppState};
use crate::domain::revision::{ChangedFile, FileChange, RevisionSource};
use crate::domain::validation::FieldError;
use crate::policy::loader::Scope;
use crate::rollout::RolloutError;
use crate::rollout::apply::{Applied, Origin};
use crate::rollout::changeset::{ChangeOptions, Changeset, ChangesetInput};

/// The largest changeset body: a few Wasm components in base64.
pub const MAX_CHANGESET_BYTES: usize = 24 << 20;

/// The change routes. A changeset takes up to [`MAX_CHANGESET_BYTES`].
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(change_tenant).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
        .routes(routes!(change_global).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
        .routes(routes!(restore_tenant))
        .routes(routes!(restore_global))
}

/// The answer to a change: what serves now and what changed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeView {
    /// The new revision; the serving one when nothing changed; `null` for a dry run.
    pub revision: Option<i64>,
    /// The registry generation serving on this replica.
    pub generation: u64,
    /// Every file the change adds, modifies or deletes (would, for a dry run).
    pub files: Vec<FileChangeView>,
}

/// One changed file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileChangeView {
    /// Relative to the layer's folder (`criteria/pick.wasm`).
    pub path: String,
    /// The file's sha256 (a deleted file's, before it was deleted).
    pub sha256: String,
    pub change: FileChange,
}

impl From<ChangedFile> for FileChangeView {
    fn from(f: ChangedFile) -> Self {
        Self { path: f.path, sha256: f.sha256, change: f.change }
    }
}

impl From<Applied> for ChangeView {
    fn from(a: Applied) -> Self {
        Self { revision: a.revision, generation: a.generation, files: a.files.into_iter().map(Into::into).collect() }
    }
}

/// The body of a restore, all optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    /// Why, for the revision history (default: `restore of revision <n>`).
    #[serde(default)]
    pub message: Option<String>,
    /// Refused (409) unless it is the revision serving.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub base_revision: Option<i64>,
    /// Check and answer, writing nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Also run the restored set's fixtures.
    #[serde(default)]
    pub run_tests: bool,
}

/// Who a change is recorded as: the JWT `sub`, or `api-key:<id>`.
pub fn author(caller: &Caller) -> String {
    match caller.api_key {
        Some((_, id)) => format!("api-key:{id}"),
        None => caller.sub.clone(),
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::ReadOnly => ApiError::Conflict { detail: e.to_string(), activity_id: None },
            RolloutError::Invalid { detail, problems } => ApiError::Unprocessable { detail, errors: problems },
            RolloutError::Conflict(detail) => ApiError::Conflict { detail, activity_id: None },
            RolloutError::NotFound(detail) => ApiError::NotFound(detail),
            RolloutError::Database(e) => e.into(),
            RolloutError::Internal(e) => ApiError::Internal(e.context("the policy change failed")),
        }
    }
}

/// Apply a changeset to the tenant's policies.
///
/// Files are written and deleted as one change: the whole resulting set is
/// compiled and checked first (422 listing every problem, nothing written),
/// then written and served in one swap, recorded as a revision, and
/// answered once it serves on this replica. `base_revision` other than the
/// serving revision is 409; `dry_run` checks and writes nothing;
/// `run_tests` also runs the set's fixtures.
#[utoipa::path(
    post,
    path = "/api/policies/changes",
    operation_id = "changePolicies",
    tag = "policies",
    params(TenantHeader),
    request_body(content = ChangesetInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied (or checked, for a dry run); the set serves.", body = ChangeView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn change_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<ChangesetInput>,
) -> Result<Json<ChangeView>, ApiError> {
    change(&state, &ctx.caller, Scope::Tenant(ctx.tenant_id), input).await
}

/// Apply a changeset to the global policies (`SUPER_ADMIN`).
///
/// As the tenant route, with paths relative to `global/` (`defaults.toml`,
/// `attribute-keys.toml`, …); the set is also checked against every tenant
/// that serves on it.
#[utoipa::path(
    post,
    path = "/api/global-policies/changes",
    operation_id = "changeGlobalPolicies",
    tag = "policies",
    request_body(content = ChangesetInput, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied (or checked, for a dry run); the set serves.", body = ChangeView),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []))
)]
async fn change_global(
    SuperAdmin(caller): SuperAdmin,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<ChangesetInput>,
) -> Result<Json<ChangeView>, ApiError> {
    change(&state, &caller, Scope::Global, input).await
}

async fn change(
    state: &AppState,
    caller: &Caller,
    scope: Scope,
    input: ChangesetInput,
) -> Result<Json<ChangeView>, ApiError> {
    if state.rollout.read_only() && !input.dry_run {
        return Err(RolloutError::ReadOnly.into());
    }
    let change = Changeset::parse(scope, input).map_err(RolloutError::invalid)?;
    let author = author(caller);
    let applied = state.rollout.apply(scope, &change, Origin { author: &author, source: RevisionSource::Api }).await?;
    Ok(Json(applied.into()))
}

/// Restore one of the tenant's revisions.
///
/// Writes revision `n`'s whole set (files not in it are deleted) as a new
/// revision (`source: RESTORE`), through the same checks as a changeset,
/// and answers like one. The body is optional.
#[utoipa::path(
    post,
    path = "/api/policies/revisions/{n}/restore",
    operation_id = "restorePolicyRevision",
    tag = "policies",
    params(TenantHeader, ("n" = i64, Path, description = "The revision to restore.", minimum = 1)),
    request_body(content = Option<RestoreInput>, content_type = "application/json"),
    responses(
        (status = 200, description = "Restored (or checked, for a dry run); the set serves.", body = ChangeView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn restore_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(n): ApiPath<String>,
    PolicyJson(input): PolicyJson<Option<RestoreInput>>,
) -> Result<Json<ChangeView>, ApiError> {
    restore(&state, &ctx.caller, Scope::Tenant(ctx.tenant_id), &n, input.unwrap_or_default()).await
}

/// Restore one of the global revisions (`SUPER_ADMIN`).
#[utoipa::path(
    post,
    path = "/api/global-policies/revisions/{n}/restore",
    operation_id = "restoreGlobalPolicyRevision",
    tag = "policies",
    params(("n" = i64, Path, description = "The revision to restore.", minimum = 1)),
    request_body(content = Option<RestoreInput>, content_type = "application/json"),
    responses(
        (status = 200, description = "Restored (or checked, for a dry run); the set serves.", body = ChangeView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []))
)]
async fn restore_global(
    SuperAdmin(caller): SuperAdmin,
    State(state): State<AppState>,
    ApiPath(n): ApiPath<String>,
    PolicyJson(input): PolicyJson<Option<RestoreInput>>,
) -> Result<Json<ChangeView>, ApiError> {
    restore(&state, &caller, Scope::Global, &n, input.unwrap_or_default()).await
}

async fn restore(
    state: &AppState,
    caller: &Caller,
    scope: Scope,
    n: &str,
    input: RestoreInput,
) -> Result<Json<ChangeView>, ApiError> {
    let n = revision_number(n)?;
    let options = ChangeOptions {
        message: input.message,
        base_revision: input.base_revision,
        dry_run: input.dry_run,
        run_tests: input.run_tests,
    };
    let applied = state.rollout.restore(scope, n, options, &author(caller)).await?;
    Ok(Json(applied.into()))
}

/// A revision number in a path: 400 naming `n` unless it is a positive integer.
pub fn revision_number(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ApiError::Validation(vec![FieldError::new("n", "must be a revision number (1 or more)")])),
    }
}

/// A JSON body of the policy change routes, within the route's own body
/// limit; `Option<T>` takes an empty body as `None`.
#[derive(Debug)]
pub struct PolicyJson<T>(pub T);

/// What a [`PolicyJson`] can hold: a body, or an optional one.
pub trait FromJsonBody: Sized {
    /// The value of an empty body, if one is allowed.
    fn empty() -> Option<Self>;
    /// The value of a parsed body.
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>>;
}

impl FromJsonBody for ChangesetInput {
    fn empty() -> Option<Self> {
        None
    }
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value)
    }
}

impl<T: DeserializeOwned> FromJsonBody for Option<T> {
    fn empty() -> Option<Self> {
        Some(None)
    }
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value).map(Some)
    }
}

impl<S: Send + Sync, T: FromJsonBody> FromRequest<S> for PolicyJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the body exceeds this route's size limit".into())
            } else {
                ApiError::BadRequest(format!("the body could not be read: {}", rejection.body_text()))
            }
        })?;
        if bytes.is_empty() {
            return T::empty()
                .map(PolicyJson)
                .ok_or_else(|| ApiError::BadRequest("the body is empty; send a JSON changeset".into()));
        }
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
            let got = if content_type.is_empty() { "none".to_owned() } else { format!("'{content_type}'") };
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body must be JSON with Content-Type: application/json (got {got})"
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        check_shape(&value)?;
        T::parse(value).map(PolicyJson).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::Validation(vec![FieldError::new(field, e.into_inner().to_string())])
        })
    }
}
