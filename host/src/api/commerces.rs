//! `/api/commerces`: sync, list, read and update commerces.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, ListResponse, PageQuery, QueryParams, TypedBody, parse_bool, path_id};
use super::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, TenantHeader, UnsupportedMediaType};
use super::{ApiError, AppState};
use crate::domain::commerce::{CommercePatch, SyncRequest};
use crate::domain::{CommerceId, ContactType, UserRole};
use crate::store::commerce_sync::{self, SyncError};
use crate::store::commerces::{self as store, CommerceDetail, CommerceFilter, CommerceRow, PatchError};

/// The commerce routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list)).routes(routes!(sync)).routes(routes!(detail, update))
}

/// The filters of `GET /api/commerces`. Unknown parameters are a 400.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommerceQuery {
    /// Text to look for in the name or the external id.
    pub search: Option<String>,
    /// Exactly this external id.
    pub external_id: Option<String>,
    /// Exactly this global external id.
    pub global_external_id: Option<String>,
    pub is_active: Option<bool>,
}

/// The answer of a sync.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"created": 1, "updated": 0, "total": 1}))]
pub struct SyncResult {
    pub created: u64,
    pub updated: u64,
    pub total: u64,
}

/// Sync commerces: a bulk upsert by `external_id`, all or nothing.
///
/// Users are upserted by `external_id` and never deleted by a sync; `roles`,
/// `contacts` and `addresses`, when sent, replace the stored ones;
/// `metadata` is merged.
#[utoipa::path(
    post,
    path = "/api/commerces/sync",
    operation_id = "syncCommerces",
    tag = "commerces",
    params(TenantHeader),
    request_body = SyncRequest,
    responses(
        (status = 201, description = "Synced: how many commerces were created and updated.", body = SyncResult),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn sync(
    ctx: Tenant<perm::SyncCommerces>,
    State(state): State<AppState>,
    TypedBody(req): TypedBody<SyncRequest>,
) -> Result<(StatusCode, Json<SyncResult>), ApiError> {
    req.validate().map_err(ApiError::Validation)?;
    let counts = commerce_sync::sync(&state.pool, ctx.tenant_id, &req).await.map_err(|e| match e {
        SyncError::TaxIdTaken { .. } => ApiError::Conflict { detail: e.to_string(), activity_id: None },
        SyncError::Db(db) => db.into(),
    })?;
    let total = counts.created + counts.updated;
    Ok((StatusCode::CREATED, Json(SyncResult { created: counts.created, updated: counts.updated, total })))
}

/// A commerce as listed and updated.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommerceView {
    pub id: CommerceId,
    pub name: String,
    pub external_id: String,
    pub tax_id: Option<String>,
    pub global_external_id: Option<String>,
    pub is_active: bool,
    pub metadata: Map<String, Value>,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis")]
    pub updated_at: DateTime<Utc>,
}

impl From<CommerceRow> for CommerceView {
    fn from(r: CommerceRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            external_id: r.external_id,
            tax_id: r.tax_id,
            global_external_id: r.global_external_id,
            is_active: r.is_active,
            metadata: r.metadata.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// List commerces.
#[utoipa::path(
    get,
    path = "/api/commerces",
    operation_id = "listCommerces",
    tag = "commerces",
    params(TenantHeader, CommerceQuery, PageQuery),
    responses(
        (status = 200, description = "One page of commerces.", body = ListResponse<CommerceView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(
    ctx: Tenant<perm::ManageCommerces>,
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ListResponse<CommerceView>>, ApiError> {
    let filter = CommerceFilter {
        search: q.get("search").filter(|s| !s.trim().is_empty()),
        external_id: q.get("external_id"),
        global_external_id: q.get("global_external_id"),
        is_active: q.parse("is_active", parse_bool),
    };
    let page = q.page();
    q.finish()?;
    let (rows, total) = store::list(&state.pool, ctx.tenant_id, &filter, page).await?;
    Ok(Json(ListResponse::new(rows.into_iter().map(CommerceView::from).collect(), page, total)))
}

/// A commerce with its addresses and users, in the documented shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommerceDetailView {
    #[serde(flatten)]
    pub commerce: CommerceView,
    pub addresses: Vec<AddressView>,
    pub users: Vec<UserView>,
}

/// An address.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressView {
    pub id: Uuid,
    pub address_alias: Option<String>,
    pub street: Option<String>,
    pub street_number: Option<String>,
    pub unit: Option<String>,
    pub city: Option<String>,
    pub commune: Option<String>,
    pub region: Option<String>,
    pub country_code: Option<String>,
    pub formatted_address: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub source_ref: Option<String>,
    pub is_primary: bool,
    pub is_active: bool,
}

/// A commerce user with roles and contacts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub external_id: String,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    pub roles: Vec<RoleView>,
    pub contacts: Vec<ContactView>,
}

/// `{role}`, as documented.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    #[schema(value_type = UserRole)]
    pub role: String,
}

/// A contact.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(value_type = ContactType)]
    pub contact_type: String,
    pub value: String,
    pub is_primary: bool,
    pub is_active: bool,
}

impl From<CommerceDetail> for CommerceDetailView {
    fn from(d: CommerceDetail) -> Self {
        Self {
            commerce: d.commerce.into(),
            addresses: d
                .addresses
                .into_iter()
                .map(|a| AddressView {
                    id: a.id,
                    address_alias: a.address.address_alias,
                    street: a.address.street,
                    street_number: a.address.street_number,
                    unit: a.address.unit,
                    city: a.address.city,
                    commune: a.address.commune,
                    region: a.address.region,
                    country_code: a.address.country_code,
                    formatted_address: a.address.formatted_address,
                    latitude: a.address.latitude,
                    longitude: a.address.longitude,
                    source_ref: a.source_ref,
                    is_primary: a.address.is_primary,
                    is_active: a.is_active,
                })
                .collect(),
            users: d
                .users
                .into_iter()
                .map(|u| {
                    let (first_name, last_name) = crate::domain::commerce::split_name(u.name.as_deref());
                    UserView {
                        id: u.id,
                        external_id: u.external_id,
                        name: u.name,
                        first_name,
                        last_name,
                        is_active: u.is_active,
                        roles: u.roles.into_iter().map(|role| RoleView { role }).collect(),
                        contacts: u
                            .contacts
                            .into_iter()
                            .map(|c| ContactView {
                                id: c.id,
                                contact_type: c.contact_type,
                                value: c.value,
                                is_primary: c.is_primary,
                                is_active: c.is_active,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// Read a commerce, with its addresses and users.
#[utoipa::path(
    get,
    path = "/api/commerces/{id}",
    operation_id = "getCommerce",
    tag = "commerces",
    params(TenantHeader, ("id" = Uuid, Path, description = "The commerce's id.")),
    responses(
        (status = 200, description = "The commerce, with its addresses and users.", body = CommerceDetailView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn detail(
    ctx: Tenant<perm::ManageCommerces>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<CommerceDetailView>, ApiError> {
    let id = path_id("id", &raw, CommerceId::parse)?;
    let detail =
        store::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("commerce", id))?;
    Ok(Json(detail.into()))
}

/// Update a commerce: absent fields are kept, `null` clears, metadata is merged.
#[utoipa::path(
    patch,
    path = "/api/commerces/{id}",
    operation_id = "updateCommerce",
    tag = "commerces",
    params(TenantHeader, ("id" = Uuid, Path, description = "The commerce's id.")),
    request_body = CommercePatch,
    responses(
        (status = 200, description = "The commerce as updated.", body = CommerceView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn update(
    ctx: Tenant<perm::ManageCommerces>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    TypedBody(patch): TypedBody<CommercePatch>,
) -> Result<Json<CommerceView>, ApiError> {
    let id = path_id("id", &raw, CommerceId::parse)?;
    patch.validate().map_err(ApiError::Validation)?;
    let row = store::patch(&state.pool, ctx.tenant_id, id, &patch)
        .await
        .map_err(|e| match e {
            PatchError::TaxIdTaken => ApiError::Conflict { detail: e.to_string(), activity_id: None },
            PatchError::Db(db) => db.into(),
        })?
        .ok_or_else(|| ApiError::not_found("commerce", id))?;
    Ok(Json(row.into()))
}
