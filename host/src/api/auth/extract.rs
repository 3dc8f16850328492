//! The extractors that make authorisation impossible to forget: a handler
//! that takes `Tenant<perm::X>` runs only for a caller holding `X` for the
//! tenant of `x-tenant-id` (or of its API key), within the tenant's rate.
//!
//! The order of checks is fixed, so each failure has one status:
//! 401 (no or bad token) → 400 (missing or malformed `x-tenant-id`) →
//! 403 (token not valid for that tenant, or a missing permission) →
//! 404 (unknown tenant) → 429 (over the tenant's rate).

use std::marker::PhantomData;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{API_KEY_HEADER, Caller};
use crate::api::{ApiError, AppState};
use crate::domain::{Permission, TenantId};

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = parts.headers.get(API_KEY_HEADER) {
            let text = key.to_str().map_err(|_| ApiError::Unauthorized("the API key is malformed".into()))?;
            return state.api_keys.authenticate(&state.pool, text).await;
        }
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("a bearer token is required (Authorization: Bearer <token>)".into())
        })?;
        let value =
            header.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into()))?;
        state.auth.verify(token.trim())
    }
}

/// A caller acting for one tenant, with the permission `P`.
#[derive(Clone, Debug)]
pub struct TenantContext {
    pub tenant_id: TenantId,
    pub caller: Caller,
}

/// The permission an extractor requires.
pub trait RequiredPermission {
    const PERMISSION: Permission;
}

/// Marker types naming the permission a route requires.
pub mod perm {
    use super::{Permission, RequiredPermission};

    macro_rules! marker {
        ($($name:ident),+) => {$(
            #[doc = concat!("Requires `", stringify!($name), "`.")]
            #[derive(Debug)]
            pub struct $name;
            impl RequiredPermission for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )+};
    }

    marker!(
        CreateActivity,
        ViewActivities,
        CancelActivity,
        ManageActivityConfig,
        ManageCommerces,
        SyncCommerces,
        ManageApiKeys,
        CreateTenant,
        DispatchActivity,
        SubmitActivityResult
    );
}

/// Extracts a [`TenantContext`] whose caller holds `P` for the tenant named
/// by `x-tenant-id`.
#[derive(Debug)]
pub struct Tenant<P>(pub TenantContext, PhantomData<P>);

impl<P> std::ops::Deref for Tenant<P> {
    type Target = TenantContext;
    fn deref(&self) -> &TenantContext {
        &self.0
    }
}

/// The header that names the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

impl<P: RequiredPermission + Send + Sync> FromRequestParts<AppState> for Tenant<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let header = match parts.headers.get(TENANT_HEADER) {
            Some(raw) => Some(raw.to_str().ok().and_then(|s| TenantId::parse(s.trim()).ok()).ok_or_else(|| {
                ApiError::BadRequest(format!("the {TENANT_HEADER} header must be a tenant id (a UUID)"))
            })?),
            None => None,
        };
        // An API key names its tenant; the header is then optional.
        let tenant_id = match (caller.api_key, header) {
            (_, Some(tenant)) => tenant,
            (Some((key_tenant, _)), None) => key_tenant,
            (None, None) => return Err(ApiError::BadRequest(format!("the {TENANT_HEADER} header is required"))),
        };
        if !caller.may_act_for(tenant_id) {
            let what = if caller.api_key.is_some() { "API key" } else { "token" };
            return Err(ApiError::Forbidden(format!("the {what} is not valid for tenant {tenant_id}")));
        }
        caller.require(P::PERMISSION)?;
        if !state.tenants.exists(&state.pool, tenant_id).await? {
            return Err(ApiError::not_found("tenant", tenant_id));
        }
        state.limits.admit(tenant_id)?;
        Ok(Tenant(TenantContext { tenant_id, caller }, PhantomData))
    }
}

/// A caller holding the permission `P`, on a route that names no tenant.
/// Checked before the body is read, so the order of statuses holds.
#[derive(Debug)]
pub struct Permitted<P>(pub Caller, PhantomData<P>);

impl<P: RequiredPermission + Send + Sync> FromRequestParts<AppState> for Permitted<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(P::PERMISSION)?;
        Ok(Permitted(caller, PhantomData))
    }
}

/// A SUPER_ADMIN caller (the global policies are theirs alone).
#[derive(Debug)]
pub struct SuperAdmin(pub Caller);

impl FromRequestParts<AppState> for SuperAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.super_admin {
            return Err(ApiError::Forbidden("only a SUPER_ADMIN may list or change the global policies".into()));
        }
        Ok(SuperAdmin(caller))
    }
}

/// A caller who may read `/metrics`: the scraper's static token
/// (`RETEN_METRICS_TOKEN`) or a SUPER_ADMIN. Metrics name every tenant, so
/// nobody else may.
#[derive(Debug)]
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| state.auth.is_metrics_token(t.trim())) {
            return Ok(MetricsReader);
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.super_admin {
            return Err(ApiError::Forbidden("only the metrics token or a SUPER_ADMIN may read the metrics".into()));
        }
        Ok(MetricsReader)
    }
}

/// Remembers tenants known to exist, for an hour, at most 100,000 of them.
/// Tenants are never deleted, so a positive answer never goes stale; the
/// bound and the time to live only keep the memory bounded.
#[derive(Debug)]
pub struct TenantCache {
    known: moka::sync::Cache<TenantId, ()>,
}

impl Default for TenantCache {
    fn default() -> Self {
        Self {
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60 * 60))
                .build(),
        }
    }
}

impl TenantCache {
    /// Whether the tenant exists, asking Postgres only when it is not known.
    pub async fn exists(&self, pool: &sqlx::PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
        if self.known.contains_key(&id) {
            return Ok(true);
        }
        let exists = crate::store::tenants::exists(pool, id).await?;
        if exists {
            self.remember(id);
        }
        Ok(exists)
    }

    /// Records a tenant that exists.
    pub fn remember(&self, id: TenantId) {
        self.known.insert(id, ());
    }
}
