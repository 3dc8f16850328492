//! Authentication and tenant authorisation, in three parts that depend on
//! nothing of the routes: [`jwt`] (bearer tokens), [`api_key`] (keys sent as
//! `x-api-key`), and [`extract`] (the extractors handlers take, which check
//! the tenant, the permission and the rate). [`Caller`] is what both kinds of
//! credential become. `api/api_keys.rs` holds the routes that manage keys.

pub mod api_key;
pub mod caller;
pub mod extract;
pub mod jwt;

pub use api_key::{API_KEY_HEADER, ApiKeys, KEY_PREFIX, hash_key};
pub use caller::Caller;
pub use extract::{
    MetricsReader, Permitted, RequiredPermission, SuperAdmin, TENANT_HEADER, Tenant, TenantCache, TenantContext, perm,
};
pub use jwt::{Authenticator, Claims, JwtSettings, MAX_TOKEN_BYTES, MIN_SECRET_BYTES, mint};
