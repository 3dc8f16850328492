//! Replays of a candidate change over the tenant's recent decisions:
//! `POST /api/policies/replays` (202, a job), `GET /api/policies/replays` and
//! `GET/DELETE /api/policies/replays/{id}` (`MANAGE_ACTIVITY_CONFIG`). The
//! job runs in [`crate::rollout::replay`]; its state is in Postgres, so any
//! replica answers for it.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{Tenant, perm};
use super::extract::{ApiPath, ListResponse, PageQuery, QueryParams, path_id};
use super::openapi::{BadRequest, NotFound, PayloadTooLarge, TenantHeader, Unprocessable, UnsupportedMediaType};
use super::policy_changes::{FileChangeView, FromJsonBody, MAX_CHANGESET_BYTES, PolicyJson, author};
use super::{ApiError, AppState};
use crate::domain::validation::FieldError;
use crate::policy::loader::Scope;
use crate::rollout::RolloutError;
use crate::rollout::changeset::{Changeset, ChangesetInput, FileInput};
use crate::rollout::compare::{Changes, Sample};
use crate::rollout::replay::{DEFAULT_LIMIT, MAX_LIMIT, ReplayRequest, STALE_AFTER};
use crate::store::replays::{self, ReplayRow};

/// The replay routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(start, list).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
        .routes(routes!(get, cancel))
}

/// The body of `POST /api/policies/replays`: a candidate change (as a
/// changeset, without `dry_run`) and the window of activities to replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "files": [{"path": "tenant.toml", "content": "# the criteria swapped …"}],
    "since": "2026-11-01T00:00:00Z",
    "limit": 10000
}))]
pub struct ReplayInput {
    /// Files the candidate adds or replaces.
    #[serde(default)]
    pub files: Vec<FileInput>,
    /// Paths the candidate deletes.
    #[serde(default)]
    pub delete: Vec<String>,
    /// What the candidate is, for the job list.
    #[serde(default)]
    pub message: Option<String>,
    /// Activities created at or after this instant.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Activities created at or before this instant.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// The most recent this many (default 10,000, at most 1,000,000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub limit: Option<i64>,
}

impl FromJsonBody for ReplayInput {
    fn empty() -> Option<Self> {
        None
    }
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value)
    }
}

/// A started job.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    /// Read the job at `/api/policies/replays/{id}`.
    pub id: Uuid,
}

/// A replay job: its progress while it runs, and its report.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayView {
    pub id: Uuid,
    /// `RUNNING`, `DONE`, `FAILED` or `CANCELED`.
    #[schema(example = "DONE")]
    pub status: String,
    pub author: String,
    pub message: Option<String>,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis_opt")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<DateTime<Utc>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// What the candidate changes against the live set.
    pub files: Vec<FileChangeView>,
    /// Activities in the window with a stored input.
    pub total: i64,
    pub evaluated: i64,
    /// Activities whose decision differs in any part.
    pub changed: i64,
    pub unchanged: i64,
    /// Activities on which a candidate policy failed (that may also change the decision).
    pub errors: i64,
    /// What changed, part by part.
    pub changes: Changes,
    /// Up to 50, changes and errors first.
    pub samples: Vec<Sample>,
    /// Why the job failed, when it did.
    pub error: Option<String>,
}

impl From<ReplayRow> for ReplayView {
    fn from(r: ReplayRow) -> Self {
        let stale = r.status == "RUNNING"
            && Utc::now().signed_duration_since(r.heartbeat_at).to_std().is_ok_and(|age| age > STALE_AFTER);
        let (status, error) = if stale {
            ("FAILED".to_owned(), Some("the replica running this replay stopped; start it again".to_owned()))
        } else {
            (r.status, r.error)
        };
        Self {
            id: r.id,
            status,
            author: r.author,
            message: r.message,
            created_at: r.created_at,
            finished_at: r.finished_at,
            since: r.since,
            until: r.until,
            limit: i64::from(r.row_limit),
            files: serde_json::from_value::<Vec<FileRecord>>(r.files.0)
                .unwrap_or_default()
                .into_iter()
                .map(|f| FileChangeView { path: f.path, sha256: f.sha256, change: f.change })
                .collect(),
            total: r.total,
            evaluated: r.evaluated,
            changed: r.changed,
            unchanged: r.unchanged,
            errors: r.errors,
            changes: serde_json::from_value(r.changes.0).unwrap_or_default(),
            samples: serde_json::from_value(r.samples.0).unwrap_or_default(),
            error,
        }
    }
}

/// A changed file as stored with a job.
#[derive(Deserialize)]
struct FileRecord {
    path: String,
    sha256: String,
    change: crate::domain::revision::FileChange,
}

/// Replay a candidate change over the tenant's recent decisions.
///
/// The candidate (the live set with this change) is compiled and checked
/// whole first: a problem is a 422 and no job starts. Then both the
/// candidate and the live set decide on the stored decision input of each
/// activity in the window, off the request path; nothing is written to
/// activities. Answers 202 with the job's id at once.
#[utoipa::path(
    post,
    path = "/api/policies/replays",
    operation_id = "startPolicyReplay",
    tag = "policies",
    params(TenantHeader),
    request_body(content = ReplayInput, content_type = "application/json"),
    responses(
        (status = 202, description = "Started; read it at /api/policies/replays/{id}.", body = Started),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn start(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<ReplayInput>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let limit = input.limit.unwrap_or(DEFAULT_LIMIT);
    let mut problems = Vec::new();
    if !(1..=MAX_LIMIT).contains(&limit) {
        problems.push(FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    if let (Some(since), Some(until)) = (input.since, input.until)
        && since > until
    {
        problems.push(FieldError::new("until", "must not be before since"));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let change_input =
        ChangesetInput { files: input.files, delete: input.delete, message: input.message, ..Default::default() };
    let change = Changeset::parse(Scope::Tenant(ctx.tenant_id), change_input).map_err(RolloutError::invalid)?;
    let request = ReplayRequest { change, since: input.since, until: input.until, limit };
    let id = state.rollout.start_replay(ctx.tenant_id, request, &author(&ctx.caller)).await?;
    Ok((StatusCode::ACCEPTED, Json(Started { id })))
}

/// The tenant's replays, newest first.
#[utoipa::path(
    get,
    path = "/api/policies/replays",
    operation_id = "listPolicyReplays",
    tag = "policies",
    params(TenantHeader, PageQuery),
    responses(
        (status = 200, description = "One page of replays, newest first.", body = ListResponse<ReplayView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn list(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<ListResponse<ReplayView>>, ApiError> {
    let page = q.page();
    q.finish()?;
    let (rows, total) = replays::list(&state.pool, ctx.tenant_id, page).await?;
    Ok(Json(ListResponse::new(rows.into_iter().map(Into::into).collect(), page, total)))
}

/// One replay: its progress while it runs, its report when done.
#[utoipa::path(
    get,
    path = "/api/policies/replays/{id}",
    operation_id = "getPolicyReplay",
    tag = "policies",
    params(TenantHeader, ("id" = Uuid, Path, description = "The replay's id.")),
    responses(
        (status = 200, description = "The replay.", body = ReplayView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn get(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ReplayView>, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    let row = replays::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("replay", id))?;
    Ok(Json(row.into()))
}

/// Cancel a running replay.
///
/// Its counts so far stay readable, with status `CANCELED`. A replay that
/// already ended is left as it is.
#[utoipa::path(
    delete,
    path = "/api/policies/replays/{id}",
    operation_id = "cancelPolicyReplay",
    tag = "policies",
    params(TenantHeader, ("id" = Uuid, Path, description = "The replay's id.")),
    responses(
        (status = 200, description = "The replay after the cancel.", body = ReplayView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn cancel(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<ReplayView>, ApiError> {
    let id = path_id("id", &raw, Uuid::parse_str)?;
    replays::cancel(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("replay", id))?;
    let row = replays::get(&state.pool, ctx.tenant_id, id).await?.ok_or_else(|| ApiError::not_found("replay", id))?;
    Ok(Json(row.into()))
}
