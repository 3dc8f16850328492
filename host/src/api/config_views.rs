//! `/api/activity-config/*`: read-only views of the effective configuration,
//! computed from the policy files, in the documented shapes — plus the
//! policy (engine and version) behind each criterion and attribute.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::auth::{Tenant, perm};
use super::openapi::{BadRequest, NotFound, TenantHeader};
use crate::domain::{AttributeStrategy, Channel, ResolutionStrategy, ResolverType, TenantId, attribute_key_id};
use crate::policy::snapshot::ConfigSource;
use crate::policy::{EngineKind, Origin, Policy, TenantSnapshot};

/// The config view routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(target_resolution))
        .routes(routes!(attribute_keys))
        .routes(routes!(attribute_policies))
}

/// A stable id for a piece of file-based configuration.
fn config_id(tenant: TenantId, what: &str) -> Uuid {
    Uuid::new_v5(&tenant.0, what.as_bytes())
}

/// The policy behind a criterion or attribute.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInfo {
    pub name: String,
    pub engine: EngineKind,
    /// The sha256 of the policy file, in hex.
    pub version: String,
    /// `GLOBAL` (`policies/global/`) or `TENANT` (the tenant's folder).
    #[schema(value_type = PolicyOrigin)]
    pub origin: &'static str,
}

/// Where a policy file lives.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PolicyOrigin {
    /// `policies/global/`.
    Global,
    /// `policies/tenants/<tenant-id>/`.
    Tenant,
}

impl From<&Policy> for PolicyInfo {
    fn from(p: &Policy) -> Self {
        let origin = match p.origin {
            Origin::Global => "GLOBAL",
            Origin::Tenant(_) => "TENANT",
        };
        Self { name: p.name.clone(), engine: p.engine, version: p.version.clone(), origin }
    }
}

/// A target resolution config.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetConfigView {
    pub id: Uuid,
    pub resolution_strategy: ResolutionStrategy,
    pub fallback_to_commerce_rep: bool,
    pub fallback_to_owner: bool,
    pub priority: i32,
    pub is_active: bool,
    /// The channels it applies to; `null` means all.
    pub channels: Option<Vec<Channel>>,
    /// `TENANT` (tenant.toml) or `GLOBAL` (global/defaults.toml).
    pub source: ConfigSource,
    pub criteria: Vec<CriterionView>,
}

/// A criterion of a config.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CriterionView {
    pub id: Uuid,
    pub criteria_type: String,
    pub criteria_config: Map<String, Value>,
    pub priority: i32,
    /// The policy that implements the type now; `null` if none does.
    pub policy: Option<PolicyInfo>,
}

/// The target resolution configs (`GET /api/activity-config/target-resolution`), by priority.
#[utoipa::path(
    get,
    path = "/api/activity-config/target-resolution",
    operation_id = "listTargetResolutionConfigs",
    tag = "activity-config",
    params(TenantHeader),
    responses(
        (status = 200, description = "The configs, active ones first, by priority.", body = Vec<TargetConfigView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn target_resolution(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
) -> Json<Vec<TargetConfigView>> {
    let snapshot = state.registry.snapshot(ctx.tenant_id);
    let mut configs: Vec<_> = snapshot.target_configs.iter().enumerate().collect();
    configs.sort_by_key(|(_, c)| (!c.active, c.priority));
    let source = snapshot.target_configs_source;
    let views = configs
        .into_iter()
        .map(|(i, c)| TargetConfigView {
            id: config_id(ctx.tenant_id, &format!("target-resolution/{source:?}/{i}")),
            resolution_strategy: c.resolution_strategy,
            fallback_to_commerce_rep: c.fallback_to_commerce_rep,
            fallback_to_owner: c.fallback_to_owner,
            priority: c.priority,
            is_active: c.active,
            channels: c.channels.clone(),
            source,
            criteria: c
                .criteria
                .iter()
                .enumerate()
                .map(|(j, k)| CriterionView {
                    id: config_id(ctx.tenant_id, &format!("target-resolution/{source:?}/{i}/criteria/{j}")),
                    criteria_type: k.criterion_type.clone(),
                    criteria_config: k.config.clone(),
                    priority: k.priority,
                    policy: snapshot.criterion(&k.criterion_type).map(|p| PolicyInfo::from(&**p)),
                })
                .collect(),
        })
        .collect();
    Json(views)
}

/// An attribute key of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeKeyView {
    pub id: Uuid,
    pub key: String,
    pub label: String,
    pub description: Option<String>,
    /// `GLOBAL` (attribute-keys.toml) or `TENANT` (tenant.toml).
    pub source: ConfigSource,
}

/// The attribute key catalogue (`GET /api/activity-config/attribute-keys`).
#[utoipa::path(
    get,
    path = "/api/activity-config/attribute-keys",
    operation_id = "listAttributeKeys",
    tag = "activity-config",
    params(TenantHeader),
    responses(
        (status = 200, description = "Every attribute key: the global catalogue plus the tenant's keys.", body = Vec<AttributeKeyView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn attribute_keys(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
) -> Json<Vec<AttributeKeyView>> {
    let snapshot = state.registry.snapshot(ctx.tenant_id);
    Json(
        snapshot
            .catalogue
            .iter()
            .map(|(key, (def, source))| AttributeKeyView {
                id: attribute_key_id(key),
                key: key.clone(),
                label: def.label.clone(),
                description: def.description.clone(),
                source: *source,
            })
            .collect(),
    )
}

/// How one attribute key resolves.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributePolicyView {
    pub id: Uuid,
    pub attribute_key_id: Uuid,
    pub strategy: AttributeStrategy,
    /// The same as `strategy`, under the name the Spanish docs use.
    pub resolution_strategy: AttributeStrategy,
    pub resolver_type: Option<ResolverType>,
    pub attribute_key: AttributeKeyRef,
    pub fallback: Option<Value>,
    pub config: Map<String, Value>,
    /// The policy that computes it now; `null` for caller-provided keys or
    /// when no policy exists.
    pub policy: Option<PolicyInfo>,
    /// `TENANT`, `GLOBAL`, or `IMPLICIT` (in the catalogue, configured
    /// nowhere: upfront through the policy named after the key).
    pub source: ConfigSource,
}

/// `{key, label}` of an attribute key.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttributeKeyRef {
    pub key: String,
    pub label: String,
}

fn attribute_policy(tenant: TenantId, snapshot: &TenantSnapshot, key: &str, label: &str) -> AttributePolicyView {
    let (setting, source) = snapshot.attribute_setting(key);
    let policy = match setting.strategy {
        AttributeStrategy::CallerProvided => None,
        _ => snapshot.attribute_policy(setting.policy_name(key)),
    };
    let resolver_type = match (setting.strategy, policy) {
        (AttributeStrategy::CallerProvided, _) => Some(ResolverType::CallerProvided),
        (_, Some(p)) if TenantSnapshot::is_tenant_policy(p) => Some(ResolverType::ClientHook),
        (_, Some(_)) => Some(ResolverType::InternalService),
        (_, None) => None,
    };
    AttributePolicyView {
        id: config_id(tenant, &format!("attribute-policy/{key}")),
        attribute_key_id: attribute_key_id(key),
        strategy: setting.strategy,
        resolution_strategy: setting.strategy,
        resolver_type,
        attribute_key: AttributeKeyRef { key: key.to_owned(), label: label.to_owned() },
        fallback: setting.fallback.clone(),
        config: setting.config.clone(),
        policy: policy.map(|p| PolicyInfo::from(&**p)),
        source,
    }
}

/// How each attribute key resolves (`GET /api/activity-config/attribute-policies`): one per catalogue key.
#[utoipa::path(
    get,
    path = "/api/activity-config/attribute-policies",
    operation_id = "listAttributePolicies",
    tag = "activity-config",
    params(TenantHeader),
    responses(
        (status = 200, description = "One per catalogue key.", body = Vec<AttributePolicyView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn attribute_policies(
    ctx: Tenant<perm::ViewActivities>,
    State(state): State<AppState>,
) -> Json<Vec<AttributePolicyView>> {
    let snapshot = state.registry.snapshot(ctx.tenant_id);
    Json(
        snapshot
            .catalogue
            .iter()
            .map(|(key, (def, _))| attribute_policy(ctx.tenant_id, &snapshot, key, &def.label))
            .collect(),
    )
}
