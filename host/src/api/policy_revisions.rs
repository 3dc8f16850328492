//! The revision history of a layer's policies: `GET /api/policies/revisions`
//! (newest first, paginated) and `GET /api/policies/revisions/{n}` (with the
//! whole set and its contents), for the caller's tenant
//! (`MANAGE_ACTIVITY_CONFIG`), with twins under `/api/global-policies/`
//! (`SUPER_ADMIN`). Another tenant's revision is a 404.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{SuperAdmin, Tenant, perm};
use super::extract::{ApiPath, ListResponse, PageQuery, QueryParams};
use super::openapi::{BadRequest, NotFound, TenantHeader};
use super::policy_changes::{FileChangeView, revision_number};
use super::{ApiError, AppState};
use crate::domain::revision::RevisionSource;
use crate::policy::loader::Scope;
use crate::rollout::history::{Revision, SetFile};

/// The revision routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tenant))
        .routes(routes!(get_tenant))
        .routes(routes!(list_global))
        .routes(routes!(get_global))
}

/// One revision: a set of files that started serving.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// Numbered per tenant (the global layer has its own numbers), increasing.
    pub revision: i64,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    /// The JWT `sub`, `api-key:<id>`, or `filesystem` for a file edit.
    pub author: String,
    #[schema(value_type = RevisionSource)]
    pub source: String,
    pub message: Option<String>,
    /// The sha256 of the whole set: equal sets have equal digests.
    pub set_sha256: String,
    /// What changed against the previous revision.
    pub files: Vec<FileChangeView>,
}

impl From<Revision> for RevisionView {
    fn from(r: Revision) -> Self {
        Self {
            revision: r.row.revision,
            created_at: r.row.created_at,
            author: r.row.author,
            source: r.row.source,
            message: r.row.message,
            set_sha256: r.row.set_sha256,
            files: r.files.into_iter().map(Into::into).collect(),
        }
    }
}

/// One revision with its whole set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionDetailView {
    #[serde(flatten)]
    pub revision: RevisionView,
    /// Every file of the set, with its content.
    pub set: Vec<SetFileView>,
}

/// One file of a revision's set: text as `content`, anything else (a Wasm
/// component) as `contentBase64`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetFileView {
    pub path: String,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Standard base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

impl From<SetFile> for SetFileView {
    fn from(f: SetFile) -> Self {
        let text = if f.path.ends_with(".wasm") { None } else { String::from_utf8(f.content.clone()).ok() };
        let content_base64 = text.is_none().then(|| base64::engine::general_purpose::STANDARD.encode(&f.content));
        Self { path: f.path, sha256: f.sha256, content: text, content_base64 }
    }
}

/// The tenant's policy revisions, newest first.
#[utoipa::path(
    get,
    path = "/api/policies/revisions",
    operation_id = "listPolicyRevisions",
    tag = "policies",
    params(TenantHeader, PageQuery),
    responses(
        (status = 200, description = "One page of revisions, newest first.", body = ListResponse<RevisionView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    q: QueryParams,
) -> Result<Json<ListResponse<RevisionView>>, ApiError> {
    list(&state, Scope::Tenant(ctx.tenant_id), q).await
}

/// The global policy revisions, newest first (`SUPER_ADMIN`).
#[utoipa::path(
    get,
    path = "/api/global-policies/revisions",
    operation_id = "listGlobalPolicyRevisions",
    tag = "policies",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of revisions, newest first.", body = ListResponse<RevisionView>),
        (status = 400, response = BadRequest),
    ),
    security(("bearerAuth" = []))
)]
async fn list_global(
    _admin: SuperAdmin,
    State(state): State<AppState>,
    q: QueryParams,
) -> Result<Json<ListResponse<RevisionView>>, ApiError> {
    list(&state, Scope::Global, q).await
}

async fn list(
    state: &AppState,
    scope: Scope,
    mut q: QueryParams,
) -> Result<Json<ListResponse<RevisionView>>, ApiError> {
    let page = q.page();
    q.finish()?;
    let (revisions, total) = state.rollout.revisions(scope, page).await?;
    Ok(Json(ListResponse::new(revisions.into_iter().map(Into::into).collect(), page, total)))
}

/// One of the tenant's policy revisions, with its whole set.
#[utoipa::path(
    get,
    path = "/api/policies/revisions/{n}",
    operation_id = "getPolicyRevision",
    tag = "policies",
    params(TenantHeader, ("n" = i64, Path, description = "The revision.", minimum = 1)),
    responses(
        (status = 200, description = "The revision and every file of its set.", body = RevisionDetailView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn get_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(n): ApiPath<String>,
) -> Result<Json<RevisionDetailView>, ApiError> {
    get(&state, Scope::Tenant(ctx.tenant_id), &n).await
}

/// One of the global policy revisions, with its whole set (`SUPER_ADMIN`).
#[utoipa::path(
    get,
    path = "/api/global-policies/revisions/{n}",
    operation_id = "getGlobalPolicyRevision",
    tag = "policies",
    params(("n" = i64, Path, description = "The revision.", minimum = 1)),
    responses(
        (status = 200, description = "The revision and every file of its set.", body = RevisionDetailView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []))
)]
async fn get_global(
    _admin: SuperAdmin,
    State(state): State<AppState>,
    ApiPath(n): ApiPath<String>,
) -> Result<Json<RevisionDetailView>, ApiError> {
    get(&state, Scope::Global, &n).await
}

async fn get(state: &AppState, scope: Scope, n: &str) -> Result<Json<RevisionDetailView>, ApiError> {
    let n = revision_number(n)?;
    let (revision, set) = state
        .rollout
        .revision(scope, n)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("revision {n} was not found")))?;
    Ok(Json(RevisionDetailView { revision: revision.into(), set: set.into_iter().map(Into::into).collect() }))
}
