//! `/api/commerces`: sync, list, read and update commerces.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ListResponse, QueryParams, TypedBody, parse_bool, path_id};
use super::{ApiError, AppState};
use crate::domain::CommerceId;
use crate::domain::commerce::{CommercePatch, SyncRequest};
use crate::store::commerces::{self as store, CommerceDetail, CommerceFilter, CommerceRow, PatchError, SyncError};

/// The commerce routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/commerces", get(list))
        .route("/api/commerces/sync", post(sync))
        .route("/api/commerces/{id}", get(detail).patch(update))
}

/// The answer of a sync.
#[derive(Debug, Serialize)]
pub struct SyncResult {
    pub created: u64,
    pub updated: u64,
    pub total: u64,
}

/// `POST /api/commerces/sync`: bulk upsert by `external_id`, all or nothing.
async fn sync(
    ctx: Tenant<perm::SyncCommerces>,
    State(state): State<AppState>,
    TypedBody(req): TypedBody<SyncRequest>,
) -> Result<(StatusCode, Json<SyncResult>), ApiError> {
    req.validate().map_err(ApiError::Validation)?;
    let counts = store::sync(&state.pool, ctx.tenant_id, &req).await.map_err(|e| match e {
        SyncError::TaxIdTaken { .. } => ApiError::Conflict { detail: e.to_string(), activity_id: None },
        SyncError::Db(db) => db.into(),
    })?;
    let total = counts.created + counts.updated;
    Ok((StatusCode::CREATED, Json(SyncResult { created: counts.created, updated: counts.updated, total })))
}

/// A commerce as listed and updated.
#[derive(Debug, Serialize)]
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

/// `GET /api/commerces`.
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
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommerceDetailView {
    #[serde(flatten)]
    pub commerce: CommerceView,
    pub addresses: Vec<AddressView>,
    pub users: Vec<UserView>,
}

/// An address.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
pub struct RoleView {
    pub role: String,
}

/// A contact.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    pub id: Uuid,
    #[serde(rename = "type")]
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

/// `GET /api/commerces/:id`.
async fn detail(
    ctx: Tenant<perm::ManageCommerces>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<CommerceDetailView>, ApiError> {
    let id = path_id("id", &raw, CommerceId::parse)?;
    let detail =
        store::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("commerce", id))?;
    Ok(Json(detail.into()))
}

/// `PATCH /api/commerces/:id`: metadata is merged.
async fn update(
    ctx: Tenant<perm::ManageCommerces>,
    State(state): State<AppState>,
    Path(raw): Path<String>,
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
