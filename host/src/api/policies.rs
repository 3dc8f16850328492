//! The policy admin API: list what serves, upload, replace or delete a policy
//! file — for the caller's tenant (`MANAGE_ACTIVITY_CONFIG`) or in `global/`
//! (`SUPER_ADMIN`).
//!
//! An upload or a delete is a one-file changeset (see `policy_changes`): the
//! whole set it leaves is compiled and checked first (422 with the errors,
//! nothing written), then written in one swap, recorded as a revision, and
//! answered once the new set serves.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::{Caller, SuperAdmin, Tenant, perm};
use super::config_views::PolicyOrigin;
use super::extract::{ApiPath, RawBody};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, PolicyBytes, TenantHeader, Unprocessable};
use super::{ApiError, AppState};
use crate::domain::TenantId;
use crate::domain::revision::{FileChange, RevisionSource};
use crate::domain::validation::FieldError;
use crate::policy::admin::{self, MAX_POLICY_BYTES, PolicyFile};
use crate::policy::loader::{Layer, LoadError, Scope};
use crate::policy::registry::RegistryState;
use crate::policy::{EngineKind, Origin, Policy, PolicyKind};
use crate::rollout::RolloutError;
use crate::rollout::apply::Origin as ChangeOrigin;
use crate::rollout::changeset::Changeset;

/// The policy admin routes. Uploads take up to [`MAX_POLICY_BYTES`], not the
/// API's usual JSON limit.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tenant))
        .routes(routes!(upload_tenant, delete_tenant).layer(DefaultBodyLimit::max(MAX_POLICY_BYTES)))
        .routes(routes!(list_global))
        .routes(routes!(upload_global, delete_global).layer(DefaultBodyLimit::max(MAX_POLICY_BYTES)))
}

/// The `kind` of a policy file in a path: its folder, or `config` for the
/// TOML files.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyFileKind {
    /// `criteria/<name>.rhai|wasm`.
    Criteria,
    /// `attributes/<name>.rhai|wasm`.
    Attributes,
    /// `tenant.toml` for a tenant; `defaults.toml` or `attribute-keys.toml` globally.
    Config,
}

/// What serves for a tenant (or globally), and what failed to load.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyListing {
    pub tenant_id: Option<TenantId>,
    /// The registry generation this listing reflects.
    pub generation: u64,
    /// The revision whose set serves in this layer on this replica, when it
    /// is recorded.
    pub revision: Option<i64>,
    /// Load errors recorded since start-up, all tenants included.
    /// Load errors recorded since start-up, all layers included (in the
    /// global listing only: a tenant sees its own `errors`).
    pub load_errors_total: Option<u64>,
    pub policies: Vec<PolicyView>,
    pub configs: Vec<ConfigView>,
    /// Every file of these layers that failed its last load.
    pub errors: Vec<LoadError>,
}

/// One serving policy.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub name: String,
    pub kind: PolicyKind,
    /// For criteria: the type that selects it (`ROLE_MATCH`).
    pub criterion_type: Option<String>,
    pub engine: EngineKind,
    /// The sha256 of the file that serves.
    pub version: String,
    #[schema(value_type = PolicyOrigin)]
    pub origin: &'static str,
    pub path: String,
    #[serde(with = "crate::domain::time::millis")]
    pub loaded_at: DateTime<Utc>,
    /// The last load of this file failed: the version above is the previous one.
    pub last_error: Option<LoadError>,
}

/// One serving config file.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    pub path: String,
    pub version: String,
    #[serde(with = "crate::domain::time::millis")]
    pub loaded_at: DateTime<Utc>,
    pub last_error: Option<LoadError>,
}

fn path_string(p: &FsPath) -> String {
    p.to_string_lossy().replace('\\', "/")
}

fn policy_view(p: &Policy, errors: &[&LoadError]) -> PolicyView {
    let path = path_string(&p.path);
    PolicyView {
        name: p.name.clone(),
        kind: p.kind,
        criterion_type: (p.kind == PolicyKind::Criterion).then(|| p.name.to_uppercase()),
        engine: p.engine,
        version: p.version.clone(),
        origin: match p.origin {
            Origin::Global => "GLOBAL",
            Origin::Tenant(_) => "TENANT",
        },
        last_error: errors.iter().find(|e| e.path == path).map(|e| (*e).clone()),
        path,
        loaded_at: p.loaded_at,
    }
}

fn listing(state: &RegistryState, load_errors_total: u64, scope: Scope) -> PolicyListing {
    let tenant_layer = match scope {
        Scope::Tenant(id) => state.tenants.get(&id).map(Arc::as_ref),
        Scope::Global => None,
    };
    let layers: Vec<&Layer> = std::iter::once(state.global.as_ref()).chain(tenant_layer).collect();
    let mut errors: Vec<&LoadError> = layers.iter().flat_map(|l| l.errors.iter()).collect();
    if scope == Scope::Global {
        errors.extend(state.folder_errors.iter());
    }
    // The effective set: a tenant's policy replaces the global one of its name.
    let mut effective = std::collections::BTreeMap::new();
    for layer in &layers {
        for (key, policy) in &layer.policies {
            effective.insert(key.clone(), policy);
        }
    }
    let policies = effective.values().map(|p| policy_view(p, &errors)).collect();
    let mut configs = Vec::new();
    for layer in &layers {
        let dir = layer.scope.rel_dir();
        if let Some(c) = &layer.config {
            let path = path_string(&dir.join(layer.scope.config_file()));
            let last_error = errors.iter().find(|e| e.path == path).map(|e| (*e).clone());
            configs.push(ConfigView { path, version: c.version.clone(), loaded_at: c.loaded_at, last_error });
        }
        if let Some(c) = &layer.catalogue {
            let path = path_string(&dir.join(crate::policy::loader::CATALOGUE_FILE));
            let last_error = errors.iter().find(|e| e.path == path).map(|e| (*e).clone());
            configs.push(ConfigView { path, version: c.version.clone(), loaded_at: c.loaded_at, last_error });
        }
    }
    PolicyListing {
        tenant_id: match scope {
            Scope::Tenant(id) => Some(id),
            Scope::Global => None,
        },
        generation: state.generation,
        revision: None,
        load_errors_total: (scope == Scope::Global).then_some(load_errors_total),
        policies,
        configs,
        errors: errors.into_iter().cloned().collect(),
    }
}

/// The tenant's effective policies and config files, and what failed to load.
#[utoipa::path(
    get,
    path = "/api/policies",
    operation_id = "listPolicies",
    tag = "policies",
    params(TenantHeader),
    responses(
        (status = 200, description = "The global policies with the tenant's on top, and the load errors.",
            body = PolicyListing),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
) -> Result<Json<PolicyListing>, ApiError> {
    list(&state, Scope::Tenant(ctx.tenant_id)).await
}

async fn list(state: &AppState, scope: Scope) -> Result<Json<PolicyListing>, ApiError> {
    let registry = state.registry.state();
    let mut listing = listing(&registry, state.registry.load_error_count(), scope);
    listing.revision = state.rollout.serving_revision(scope).await?;
    Ok(Json(listing))
}

/// The global policies and config files (`SUPER_ADMIN`), and every load error.
#[utoipa::path(
    get,
    path = "/api/global-policies",
    operation_id = "listGlobalPolicies",
    tag = "policies",
    responses(
        (status = 200, description = "The global layer, and the load errors of every layer.", body = PolicyListing),
    ),
    security(("bearerAuth" = []))
)]
async fn list_global(_admin: SuperAdmin, State(state): State<AppState>) -> Result<Json<PolicyListing>, ApiError> {
    list(&state, Scope::Global).await
}

/// The answer to an upload: what serves now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    pub path: String,
    /// The sha256 of the uploaded bytes, which now serve.
    pub version: String,
    pub generation: u64,
    /// The revision serving now (the upload's, or the one that served when
    /// the bytes were already there).
    pub revision: Option<i64>,
}

/// Upload or replace one of the tenant's policy files.
///
/// The bytes are compiled and validated first (422 with the error, nothing
/// written), then written atomically; the answer comes once the new version
/// serves.
#[utoipa::path(
    put,
    path = "/api/policies/{kind}/{file}",
    operation_id = "uploadPolicy",
    tag = "policies",
    params(TenantHeader, ("kind" = inline(PolicyFileKind), Path, description = "The file's kind: its folder, or `config` for the TOML file."), ("file" = String, Path, description = "`<name>.rhai` or `<name>.wasm` (`[a-z0-9_]{1,64}`), or `tenant.toml` for `config`.", pattern = r"^([a-z0-9_]{1,64}\.(rhai|wasm)|tenant\.toml)$")),
    request_body(content = inline(PolicyBytes), content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Replaced; the new version serves.", body = UploadView),
        (status = 201, description = "Created; it serves.", body = UploadView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn upload_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath((kind, file)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    upload(&state, &ctx.caller, Scope::Tenant(ctx.tenant_id), (&kind, &file), body).await
}

/// Upload or replace a global policy file (`SUPER_ADMIN`).
///
/// Compiled and validated first against every tenant (422, nothing
/// written), then written atomically; the answer comes once it serves.
#[utoipa::path(
    put,
    path = "/api/global-policies/{kind}/{file}",
    operation_id = "uploadGlobalPolicy",
    tag = "policies",
    params(("kind" = inline(PolicyFileKind), Path, description = "The file's kind: its folder, or `config` for the TOML file."), ("file" = String, Path, description = "`<name>.rhai` or `<name>.wasm` (`[a-z0-9_]{1,64}`), or `defaults.toml` or `attribute-keys.toml` for `config`.", pattern = r"^([a-z0-9_]{1,64}\.(rhai|wasm)|defaults\.toml|attribute-keys\.toml)$")),
    request_body(content = inline(PolicyBytes), content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Replaced; the new version serves.", body = UploadView),
        (status = 201, description = "Created; it serves.", body = UploadView),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []))
)]
async fn upload_global(
    SuperAdmin(caller): SuperAdmin,
    State(state): State<AppState>,
    ApiPath((kind, file)): ApiPath<(String, String)>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    upload(&state, &caller, Scope::Global, (&kind, &file), body).await
}

async fn upload(
    state: &AppState,
    caller: &Caller,
    scope: Scope,
    (kind, file): (&str, &str),
    bytes: Bytes,
) -> Result<(StatusCode, Json<UploadView>), ApiError> {
    refuse_when_read_only(state)?;
    let target = PolicyFile::parse(scope, kind, file).map_err(ApiError::BadRequest)?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest("the body is empty; send the file's bytes".into()));
    }
    let rel = path_string(&target.rel_path(scope));
    let version = admin::version_of(&bytes);
    let change = Changeset::write_one(target.set_path(), bytes.to_vec());
    let author = super::policy_changes::author(caller);
    let origin = ChangeOrigin { author: &author, source: RevisionSource::Api };
    let applied = state.rollout.apply(scope, &change, origin).await.map_err(|e| one_file_error(scope, &rel, e))?;
    tracing::info!(path = %rel, %version, generation = applied.generation, "policy uploaded");
    let created = applied.files.iter().any(|f| f.change == FileChange::Added);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let view = UploadView { path: rel, version, generation: applied.generation, revision: applied.revision };
    Ok((status, Json(view)))
}

/// 409 on a write route when the directory is managed outside the API.
fn refuse_when_read_only(state: &AppState) -> Result<(), ApiError> {
    if state.rollout.read_only() { Err(RolloutError::ReadOnly.into()) } else { Ok(()) }
}

/// A one-file change's refusal, as the upload and delete routes have always
/// answered it: the fields are paths from the policies directory, and the
/// detail names the file.
fn one_file_error(scope: Scope, rel: &str, e: RolloutError) -> ApiError {
    let RolloutError::Invalid { problems, .. } = e else { return e.into() };
    let errors: Vec<FieldError> = problems
        .into_iter()
        .map(|p| match crate::policy::set::check_path(scope, &p.field) {
            Ok(()) => FieldError { field: path_string(&scope.rel_dir().join(&p.field)), ..p },
            Err(_) => p,
        })
        .collect();
    let messages: Vec<String> = errors.iter().map(|p| p.message.clone()).collect();
    ApiError::Unprocessable { detail: format!("{rel} was not written: {}", messages.join("; ")), errors }
}

/// The answer to a delete.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteView {
    pub deleted: String,
    pub generation: u64,
    /// The revision serving now, without the file.
    pub revision: Option<i64>,
}

/// Delete one of the tenant's policy files; the global one of its name, if
/// any, serves again.
#[utoipa::path(
    delete,
    path = "/api/policies/{kind}/{file}",
    operation_id = "deletePolicy",
    tag = "policies",
    params(TenantHeader, ("kind" = inline(PolicyFileKind), Path, description = "The file's kind: its folder, or `config` for the TOML file."), ("file" = String, Path, description = "`<name>.rhai` or `<name>.wasm` (`[a-z0-9_]{1,64}`), or `tenant.toml` for `config`.", pattern = r"^([a-z0-9_]{1,64}\.(rhai|wasm)|tenant\.toml)$")),
    responses(
        (status = 200, description = "Deleted; the reload is done.", body = DeleteView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn delete_tenant(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath((kind, file)): ApiPath<(String, String)>,
) -> Result<Json<DeleteView>, ApiError> {
    delete(&state, &ctx.caller, Scope::Tenant(ctx.tenant_id), &kind, &file).await
}

/// Delete a global policy file (`SUPER_ADMIN`).
#[utoipa::path(
    delete,
    path = "/api/global-policies/{kind}/{file}",
    operation_id = "deleteGlobalPolicy",
    tag = "policies",
    params(("kind" = inline(PolicyFileKind), Path, description = "The file's kind: its folder, or `config` for the TOML file."), ("file" = String, Path, description = "`<name>.rhai` or `<name>.wasm` (`[a-z0-9_]{1,64}`), or `defaults.toml` or `attribute-keys.toml` for `config`.", pattern = r"^([a-z0-9_]{1,64}\.(rhai|wasm)|defaults\.toml|attribute-keys\.toml)$")),
    responses(
        (status = 200, description = "Deleted; the reload is done.", body = DeleteView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []))
)]
async fn delete_global(
    SuperAdmin(caller): SuperAdmin,
    State(state): State<AppState>,
    ApiPath((kind, file)): ApiPath<(String, String)>,
) -> Result<Json<DeleteView>, ApiError> {
    delete(&state, &caller, Scope::Global, &kind, &file).await
}

async fn delete(
    state: &AppState,
    caller: &Caller,
    scope: Scope,
    kind: &str,
    file: &str,
) -> Result<Json<DeleteView>, ApiError> {
    refuse_when_read_only(state)?;
    let target = PolicyFile::parse(scope, kind, file).map_err(ApiError::BadRequest)?;
    let rel = path_string(&target.rel_path(scope));
    let author = super::policy_changes::author(caller);
    let origin = ChangeOrigin { author: &author, source: RevisionSource::Api };
    let change = Changeset::delete_one(target.set_path());
    let applied = match state.rollout.apply(scope, &change, origin).await {
        // The only problem a one-file delete can have on its own path.
        Err(RolloutError::Invalid { problems, .. }) if problems.iter().any(|p| p.field == "delete[0]") => {
            return Err(ApiError::NotFound(format!("{rel} does not exist")));
        }
        other => other.map_err(|e| one_file_error(scope, &rel, e))?,
    };
    tracing::info!(path = %rel, generation = applied.generation, "policy deleted");
    Ok(Json(DeleteView { deleted: rel, generation: applied.generation, revision: applied.revision }))
}
