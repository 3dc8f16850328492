//! The resolution trace: every config, criterion, candidate, fallback and
//! attribute considered, and what each policy call did. Stored with the
//! activity and returned by preview, so one can always say why.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{AttributeStatus, AttributeStrategy, Channel, ResolutionStrategy};
use crate::policy::logs::LogLine;
use crate::policy::snapshot::ConfigSource;
use crate::policy::wasm_engine::WasmTier;
use crate::policy::{PolicyFailure, PolicyRef};

/// The whole trace of one resolution.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// The registry generation of the snapshot that decided.
    pub generation: u64,
    pub target: Option<TargetTrace>,
    pub attributes: Vec<AttributeTrace>,
}

/// How the target user was chosen.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetTrace {
    /// Every configured config, and whether it applied.
    pub configs_considered: Vec<ConfigConsidered>,
    /// The config that applied.
    pub config: AppliedConfig,
    /// `REQUEST` when the request's `target_criteria` replaced the config's.
    pub criteria_source: CriteriaSource,
    pub criteria: Vec<CriterionTrace>,
    pub fallbacks: Vec<FallbackTrace>,
}

/// One configured target resolution config.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigConsidered {
    pub priority: i32,
    pub active: bool,
    pub channels: Option<Vec<Channel>>,
    /// Whether the config covers the activity's channel.
    pub applies: bool,
    /// Whether this is the config that decided (the first that applies).
    pub applied: bool,
}

/// The config resolution used.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedConfig {
    pub source: ConfigSource,
    pub priority: i32,
    pub resolution_strategy: ResolutionStrategy,
    pub fallback_to_commerce_rep: bool,
    pub fallback_to_owner: bool,
}

/// Whose criteria ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CriteriaSource {
    Config,
    Request,
}

/// One criterion that ran (or could not).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CriterionTrace {
    #[serde(rename = "type")]
    pub criterion_type: String,
    pub priority: i32,
    pub config: Map<String, Value>,
    pub policy: Option<PolicyRef>,
    /// For a Wasm policy: which compiler's code ran (`BASELINE` while a new
    /// component's optimised code is being compiled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<WasmTier>,
    pub duration_us: u64,
    /// Wasm fuel the call burned: its deterministic cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Rhai operations the call ran: its deterministic cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<u64>,
    pub outcome: CriterionOutcome,
    /// For `NOT_RUN`: why the criterion did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run_reason: Option<String>,
    pub error: Option<PolicyFailure>,
    /// The lines the policy logged (bounded per call).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    pub candidates: Vec<CandidateTrace>,
    /// Candidates after the first 20 skipped ones are counted, not listed.
    pub candidates_omitted: usize,
}

/// What one criterion came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CriterionOutcome {
    /// A candidate was kept.
    Matched,
    /// The policy ran; no candidate could be kept.
    NoMatch,
    /// The policy failed; the criterion was skipped.
    Failed,
    /// No policy implements the type; the criterion was skipped.
    NoPolicy,
    /// The criterion did not run: an earlier one chose the user, or the
    /// config defers the decision (`not_run_reason` says which).
    NotRun,
}

/// One candidate a criterion proposed.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidateTrace {
    pub commerce_user_id: String,
    /// The user's id in the tenant's systems, when the id is a user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub external_id: Option<String>,
    /// The user's name, when the id is a user's and it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub note: Option<String>,
    pub accepted: bool,
    pub skip_reason: Option<SkipReason>,
}

/// Why a candidate was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SkipReason {
    /// The id is not one of the commerce's users.
    NotACommerceUser,
    Inactive,
    /// The user has no contact the channel can use.
    Unreachable,
}

/// One fallback tried.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FallbackTrace {
    pub role: crate::domain::UserRole,
    pub enabled: bool,
    pub commerce_user_id: Option<String>,
}

/// How one attribute key was resolved.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeTrace {
    pub key: String,
    pub strategy: AttributeStrategy,
    pub config_source: ConfigSource,
    pub caller_value: bool,
    pub caller_fallback: bool,
    pub policy: Option<PolicyRef>,
    /// For a Wasm policy: which compiler's code ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<WasmTier>,
    pub duration_us: Option<u64>,
    /// Wasm fuel the call burned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Rhai operations the call ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<u64>,
    pub error: Option<PolicyFailure>,
    /// The lines the policy logged (bounded per call).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    pub outcome: AttributeStatus,
}
