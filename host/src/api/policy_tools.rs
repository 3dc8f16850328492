//! Authoring tools over the tenant's set (`MANAGE_ACTIVITY_CONFIG`):
//! `POST /api/policies/check` (one file checked in its set, as the author
//! types) and `POST /api/policies/tests` (the set's fixtures, or a
//! candidate's, with their traces). Nothing is written.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::auth::{Tenant, perm};
use super::decisions::CandidateInput;
use super::openapi::{BadRequest, NotFound, PayloadTooLarge, TenantHeader, Unprocessable, UnsupportedMediaType};
use super::policy_changes::{FromJsonBody, MAX_CHANGESET_BYTES, PolicyJson};
use super::{ApiError, AppState};
use crate::domain::validation::FieldError;
use crate::policy::loader::Scope;
use crate::policy::set;
use crate::resolve::Trace;

/// The tool routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(check).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
        .routes(routes!(tests).layer(DefaultBodyLimit::max(MAX_CHANGESET_BYTES)))
}

/// The body of `POST /api/policies/check`: one file of the tenant's set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"path": "criteria/pick_rep.rhai", "content": "fn resolve(input) { [] }"}))]
pub struct CheckInput {
    /// Relative to the tenant's folder, as in a changeset.
    pub path: String,
    /// The file as text.
    #[serde(default)]
    pub content: Option<String>,
    /// The file's bytes in standard base64 (a Wasm component).
    #[serde(default)]
    pub content_base64: Option<String>,
}

impl FromJsonBody for CheckInput {
    fn empty() -> Option<Self> {
        None
    }
    fn parse(value: serde_json::Value) -> Result<Self, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value)
    }
}

/// A problem the checker found.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckError {
    /// The file, relative to the tenant's folder (another file of the set
    /// when the problem is there, e.g. a `tenant.toml` that names a policy
    /// this file no longer defines).
    pub path: String,
    /// 1-based, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

/// What the checker found.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    /// Whether the set with this file loads whole.
    pub ok: bool,
    pub errors: Vec<CheckError>,
}

/// Check one file in its set.
///
/// The tenant's set with this file written is compiled and checked whole,
/// as a changeset would be, and every problem is listed at its line and
/// column; nothing is written. A problem is an answer here (200 with
/// `ok: false`), not an error.
#[utoipa::path(
    post,
    path = "/api/policies/check",
    operation_id = "checkPolicyFile",
    tag = "policies",
    params(TenantHeader),
    request_body(content = CheckInput, content_type = "application/json"),
    responses(
        (status = 200, description = "What the checker found.", body = CheckView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn check(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(input): PolicyJson<CheckInput>,
) -> Result<Json<CheckView>, ApiError> {
    let scope = Scope::Tenant(ctx.tenant_id);
    let mut problems = Vec::new();
    if let Err(message) = set::check_path(scope, &input.path) {
        problems.push(FieldError::new("path", message));
    }
    let bytes = match (input.content, input.content_base64) {
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problems.push(FieldError::new("content_base64", format!("is not standard base64: {e}")));
                None
            }
        },
        _ => {
            problems.push(FieldError::new("content", "send the file as content (text) or content_base64, one of them"));
            None
        }
    };
    let (Some(bytes), true) = (bytes, problems.is_empty()) else { return Err(ApiError::Validation(problems)) };
    let found = state.rollout.check_file(scope, &input.path, bytes).await?;
    let errors: Vec<CheckError> = found
        .into_iter()
        .map(|e| CheckError { path: e.field, line: e.line, column: e.column, message: e.message })
        .collect();
    Ok(Json(CheckView { ok: errors.is_empty(), errors }))
}

/// One fixture's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct FixtureView {
    /// The file under `tests/`.
    pub name: String,
    pub ok: bool,
    /// What did not go as it expects, one line per problem (`null` when it passed).
    pub message: Option<String>,
    /// The resolution's trace, when it got that far.
    pub trace: Option<Trace>,
}

/// The fixtures' outcomes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestsView {
    pub passed: usize,
    pub failed: usize,
    pub results: Vec<FixtureView>,
}

/// Run the tenant's fixtures.
///
/// The fixtures (`tests/`) of the tenant's set run against the snapshot it
/// serves; with a body, those of the candidate (the live set with these
/// files written and deleted, checked whole first: a problem is a 422)
/// against the snapshot it would serve. Nothing is written.
#[utoipa::path(
    post,
    path = "/api/policies/tests",
    operation_id = "runPolicyTests",
    tag = "policies",
    params(TenantHeader),
    request_body(content = Option<CandidateInput>, content_type = "application/json"),
    responses(
        (status = 200, description = "Each fixture's outcome, with its trace.", body = TestsView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
    ),
    security(("bearerAuth" = []), ("apiKey" = []))
)]
async fn tests(
    ctx: Tenant<perm::ManageActivityConfig>,
    State(state): State<AppState>,
    PolicyJson(candidate): PolicyJson<Option<CandidateInput>>,
) -> Result<Json<TestsView>, ApiError> {
    let change = candidate.map(|c| c.change(ctx.tenant_id)).transpose()?.flatten().unwrap_or_default();
    let runs = state.rollout.run_tests(ctx.tenant_id, &change).await?;
    let results: Vec<FixtureView> = runs
        .into_iter()
        .map(|r| FixtureView {
            name: r.name,
            ok: r.failures.is_empty(),
            message: (!r.failures.is_empty()).then(|| r.failures.join("; ")),
            trace: r.trace,
        })
        .collect();
    let passed = results.iter().filter(|r| r.ok).count();
    Ok(Json(TestsView { passed, failed: results.len() - passed, results }))
}
