//! Authentication (JWT bearer tokens) and tenant authorisation.
//!
//! The order of checks is fixed, so each failure has one status:
//! 401 (no or bad token) → 400 (missing or malformed `x-tenant-id`) →
//! 403 (token not valid for that tenant, or a missing permission) →
//! 404 (unknown tenant).

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::RwLock;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::domain::{Permission, PermissionSet, Role, TenantId};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// The shortest HS256 secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims of a Reten token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A string or an array of strings (RFC 7519).
    pub aud: Option<serde_json::Value>,
    /// The tenants the token may act for. Required (it may be empty).
    pub tenant_ids: Vec<Uuid>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// How tokens are verified (and, for `reten token`, minted).
#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key for RS256 or ES256.
    pub public_key_pem: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// A static bearer token that may read `/metrics` (for a scraper).
    pub metrics_token: Option<String>,
}

/// Verifies tokens.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
    /// The SHA-256 of the metrics token, so a comparison leaks nothing.
    metrics_token_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public", &self.public.as_ref().map(|(_, a)| *a))
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier. At least one key is required.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let hs256 = match &settings.secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                anyhow::bail!("RETEN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let public = match &settings.public_key_pem {
            Some(pem) => Some(parse_public_key(pem)?),
            None => None,
        };
        if hs256.is_none() && public.is_none() {
            anyhow::bail!(
                "no JWT key is configured: set RETEN_JWT_SECRET (HS256, at least {MIN_SECRET_BYTES} bytes) \
                 or RETEN_JWT_PUBLIC_KEY (PEM, RS256/ES256)"
            );
        }
        let metrics_token_hash = match &settings.metrics_token {
            Some(t) if t.len() < MIN_SECRET_BYTES => {
                anyhow::bail!("RETEN_METRICS_TOKEN must be at least {MIN_SECRET_BYTES} bytes long")
            }
            Some(t) => Some(Sha256::digest(t.as_bytes()).into()),
            None => None,
        };
        Ok(Self {
            hs256,
            public,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            metrics_token_hash,
        })
    }

    /// Whether `token` is the configured metrics token (compared by hash).
    pub fn is_metrics_token(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.metrics_token_hash.is_some_and(|h| h == presented)
    }

    /// Verifies a bearer token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized("the token is too large".into()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized("the token is malformed".into()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().map(|k| (k, Algorithm::HS256)),
            alg => self.public.as_ref().filter(|(_, a)| *a == alg).map(|(k, a)| (k, *a)),
        };
        let Some((key, alg)) = key else {
            return Err(ApiError::Unauthorized(format!("tokens signed with {:?} are not accepted", header.alg)));
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not just right
        // when present.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            ApiError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                    ErrorKind::InvalidAudience => "the token's audience is not accepted",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "the token lacks a required claim (sub, exp, tenant_ids)"
                    }
                    _ => "the token is invalid",
                }
                .to_owned(),
            )
        })?;
        Ok(Caller::from_claims(data.claims))
    }
}

fn parse_public_key(pem: &str) -> anyhow::Result<(DecodingKey, Algorithm)> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::ES256));
    }
    anyhow::bail!("RETEN_JWT_PUBLIC_KEY is not an RSA or EC public key in PEM form")
}

/// Mints an HS256 token (for `reten token` and tests).
pub fn mint(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

/// Who is calling, and what they may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub sub: String,
    pub tenant_ids: Vec<TenantId>,
    pub permissions: PermissionSet,
    pub super_admin: bool,
    /// The API key the caller presented (its tenant and id), if it used one.
    pub api_key: Option<(TenantId, uuid::Uuid)>,
}

impl Caller {
    fn from_claims(claims: Claims) -> Self {
        let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let permissions = roles
            .iter()
            .flat_map(|r| r.permissions().iter().copied())
            .chain(claims.permissions.iter().filter_map(|p| Permission::parse(p)))
            .collect();
        Self {
            sub: claims.sub,
            tenant_ids: claims.tenant_ids.into_iter().map(TenantId).collect(),
            permissions,
            super_admin: roles.contains(&Role::SuperAdmin),
            api_key: None,
        }
    }

    /// 403 unless the caller holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this operation requires the {p} permission")))
        }
    }

    /// Whether the caller may act for `tenant`.
    pub fn may_act_for(&self, tenant: TenantId) -> bool {
        self.super_admin || self.tenant_ids.contains(&tenant)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = parts.headers.get(super::api_keys::API_KEY_HEADER) {
            return super::api_keys::caller_from_key(state, key).await;
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

/// Remembers tenants known to exist. Tenants are never deleted, so a
/// positive answer never goes stale.
#[derive(Debug, Default)]
pub struct TenantCache {
    known: RwLock<HashSet<TenantId>>,
}

impl TenantCache {
    /// Whether the tenant exists, asking Postgres only the first time.
    pub async fn exists(&self, pool: &sqlx::PgPool, id: TenantId) -> Result<bool, sqlx::Error> {
        if self.known.read().unwrap_or_else(|e| e.into_inner()).contains(&id) {
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
        self.known.write().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
}
