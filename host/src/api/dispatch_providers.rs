//! `/api/dispatch-providers`: the provider catalogue (`WEBHOOK`, `MOCK`),
//! each with its channel definitions and the credentials it takes
//! (reference §9.3).

use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, path_id};
use super::openapi::{BadRequest, NotFound, TenantHeader};
use super::{ApiError, AppState};
use crate::dispatch::providers::{self, PROVIDERS, Provider};
use crate::domain::{Channel, ProviderCode};

/// The provider routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_providers)).routes(routes!(channel_definitions))
}

/// One credential a provider takes.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialFieldView {
    /// The key in `credentials`.
    pub key: &'static str,
    pub label: &'static str,
    /// How a form shows it: `password` is masked.
    #[serde(rename = "type")]
    pub field_type: &'static str,
    pub required: bool,
}

/// A provider's definition of one channel.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDefinitionView {
    pub id: Uuid,
    pub dispatch_provider_id: Uuid,
    pub channel: Channel,
    pub credential_schema: Vec<CredentialFieldView>,
    /// The settings it reads: none (settings are stored as given).
    #[schema(value_type = Vec<Object>)]
    pub settings_schema: Vec<Value>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: &'static str,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: &'static str,
}

/// A provider of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    pub id: Uuid,
    pub code: ProviderCode,
    pub name: &'static str,
    pub description: &'static str,
    /// `REST`.
    pub protocol_type: &'static str,
    pub is_active: bool,
    pub channel_definitions: Vec<ChannelDefinitionView>,
}

fn definitions(p: &Provider) -> Vec<ChannelDefinitionView> {
    p.channels()
        .iter()
        .map(|c| ChannelDefinitionView {
            id: providers::channel_definition_id(p.code, *c),
            dispatch_provider_id: p.id(),
            channel: *c,
            credential_schema: p
                .credentials()
                .iter()
                .map(|f| CredentialFieldView {
                    key: f.key,
                    label: f.label,
                    field_type: f.field_type,
                    required: f.required,
                })
                .collect(),
            settings_schema: Vec::new(),
            created_at: providers::DEFINED_AT,
            updated_at: providers::DEFINED_AT,
        })
        .collect()
}

impl From<&Provider> for ProviderView {
    fn from(p: &Provider) -> Self {
        Self {
            id: p.id(),
            code: p.code,
            name: p.name,
            description: p.description,
            protocol_type: "REST",
            is_active: true,
            channel_definitions: definitions(p),
        }
    }
}

/// The dispatch providers, with their channel definitions.
#[utoipa::path(
    get,
    path = "/api/dispatch-providers",
    operation_id = "listDispatchProviders",
    tag = "dispatch",
    params(TenantHeader),
    responses(
        (status = 200, description = "Every provider: WEBHOOK and MOCK.", body = Vec<ProviderView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list_providers(_ctx: Tenant<perm::ViewActivities>) -> Json<Vec<ProviderView>> {
    Json(PROVIDERS.iter().map(ProviderView::from).collect())
}

/// One provider's channel definitions.
#[utoipa::path(
    get,
    path = "/api/dispatch-providers/{id}/channel-definitions",
    operation_id = "listDispatchProviderChannelDefinitions",
    tag = "dispatch",
    params(TenantHeader, ("id" = Uuid, Path, description = "The provider's id.")),
    responses(
        (status = 200, description = "The channels it serves and the credentials each needs.",
            body = Vec<ChannelDefinitionView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn channel_definitions(
    _ctx: Tenant<perm::ViewActivities>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Vec<ChannelDefinitionView>>, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    let provider = providers::by_id(id).ok_or_else(|| ApiError::not_found("dispatch provider", id))?;
    Ok(Json(definitions(provider)))
}
