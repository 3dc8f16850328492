//! Safe policy changes: a change to a layer's policy files is checked as a
//! whole, applied in one swap, recorded as a revision with its author,
//! reversible, and served by every replica.
//!
//! - [`changeset`]: the change itself — files to write and delete — parsed
//!   once at the edge, and applied to a set in memory (a candidate: the
//!   live set with the change, written nowhere), so a replay or a shadow set
//!   can reuse it.
//! - [`check`]: a candidate set compiled and checked as a reload would
//!   (compile, references), and its fixtures run when asked.
//! - [`apply`]: the write path — base revision, check, write, serve, record,
//!   notify — under the tenant's revision lock.
//! - [`history`]: listing and reading revisions, restoring one, and which
//!   revision serves.
//! - [`recorder`]: records the sets that start serving from the files
//!   themselves (an edit, a rescan, start-up) as `FILESYSTEM` revisions.
//! - [`listener`]: reloads a layer at once when another replica changed it,
//!   and rescans everything after a lost connection.
//!
//! Why the swap is atomic: the writer holds the registry's reload lock from
//! its first write until the reload that publishes the new set, so no reload
//! of this process can publish a mix; the watcher's reload that waited then
//! reads the finished set, which equals what serves, and publishes nothing.
//! Other processes on the same directory honour a marker file the writer
//! keeps in the layer's folder meanwhile (`crate::policy::set`). A set equal
//! to the latest revision records nothing, under the tenant's advisory lock,
//! so the API's own writes seen again by a watcher, or by another replica,
//! make no second revision.

pub mod apply;
pub mod changeset;
pub mod check;
pub mod compare;
pub mod history;
pub mod listener;
pub mod offline;
pub mod recorder;
pub mod replay;
pub mod retention;
pub mod shadow;
pub mod trial;

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::TenantId;
use crate::domain::validation::FieldError;
use crate::policy::Registry;
use crate::policy::loader::Scope;

/// The rollout's background tasks (the recorder and the listener); dropping
/// this stops them.
#[derive(Debug)]
pub struct Tasks {
    recorder: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
    pruner: tokio::task::JoinHandle<()>,
}

impl Tasks {
    /// Starts recording the sets that start serving, listening for other
    /// replicas' changes, and pruning decision inputs past their retention.
    pub fn spawn(pool: &PgPool, registry: &Arc<Registry>, settings: RolloutSettings) -> Self {
        Self {
            recorder: recorder::spawn(pool.clone(), Arc::clone(registry)),
            listener: listener::spawn(pool, Arc::clone(registry)),
            pruner: retention::spawn(pool.clone(), settings),
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.recorder.abort();
        self.listener.abort();
        self.pruner.abort();
    }
}

/// How changes are allowed, and how long decisions are kept to try them on.
#[derive(Clone, Copy, Debug)]
pub struct RolloutSettings {
    /// The directory is managed outside the API (a ConfigMap, git-sync):
    /// every change that would write files is refused.
    pub read_only: bool,
    /// How long decision inputs are kept, in days (0: none is kept).
    pub decision_input_retention_days: u32,
    /// How many live decisions may wait for their shadow evaluation before
    /// further ones are dropped (and counted).
    pub shadow_queue: usize,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self { read_only: false, decision_input_retention_days: 30, shadow_queue: 1024 }
    }
}

impl RolloutSettings {
    /// The oldest instant a decision input may have been recorded at and
    /// still be answered.
    pub fn decision_input_cutoff(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.decision_input_retention_days))
    }
}

/// The policy change service: what the API calls to change, list and
/// restore a layer's policies.
#[derive(Debug)]
pub struct Rollout {
    pool: PgPool,
    registry: Arc<Registry>,
    settings: RolloutSettings,
    /// Where replay jobs run.
    replays: replay::Jobs,
    /// The tenants' shadow sets and their evaluation.
    shadows: Arc<shadow::Shadows>,
    /// Keeps the shadow sets in step with the directory.
    shadow_follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Rollout {
    fn drop(&mut self) {
        if let Some(task) = &self.shadow_follower {
            task.abort();
        }
    }
}

impl Rollout {
    /// Changes go to `registry`'s directory; revisions to `pool`. Starts
    /// the shadow evaluation thread, and (within a runtime) follows the
    /// directory's shadow sets.
    pub fn new(pool: PgPool, registry: Arc<Registry>, settings: RolloutSettings) -> Self {
        let shadows = shadow::Shadows::start(pool.clone(), Arc::clone(&registry), settings.shadow_queue);
        let shadow_follower = shadow::Shadows::follow(&shadows);
        Self { pool, registry, settings, replays: replay::Jobs::default(), shadows, shadow_follower }
    }

    /// Whether every write is refused.
    pub fn read_only(&self) -> bool {
        self.settings.read_only
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    /// Whether decisions keep their input.
    pub fn keeps_decision_inputs(&self) -> bool {
        self.settings.decision_input_retention_days > 0
    }

    /// The registry changes go to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The pool revisions go to.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Why a change was not made. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The directory is managed outside the API.
    #[error("policies are managed in the directory (RETEN_POLICIES_READ_ONLY is set); change the files there")]
    ReadOnly,
    /// The change, or the set it leaves, is not valid: every problem, by path.
    #[error("{detail}")]
    Invalid { detail: String, problems: Vec<FieldError> },
    /// The change was made against another revision than the one serving.
    #[error("{0}")]
    Conflict(String),
    /// A revision or file that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Postgres failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else (a file that could not be written); logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl RolloutError {
    /// A change refused for `problems`.
    pub fn invalid(problems: Vec<FieldError>) -> Self {
        let listed: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
        let detail = format!("the change was not applied; nothing was written: {}", listed.join("; "));
        RolloutError::Invalid { detail, problems }
    }
}

/// The tenant id a layer's revisions are kept under: the tenant's own, or
/// the nil UUID for the global layer.
pub fn owner(scope: Scope) -> TenantId {
    match scope {
        Scope::Global => TenantId(Uuid::nil()),
        Scope::Tenant(id) => id,
    }
}

/// The notification payload naming a layer: the tenant id, or `global`.
pub fn payload(scope: Scope) -> String {
    match scope {
        Scope::Global => "global".into(),
        Scope::Tenant(id) => id.to_string(),
    }
}

/// The layer a notification payload names.
pub fn scope_of_payload(payload: &str) -> Option<Scope> {
    match payload {
        "global" => Some(Scope::Global),
        other => TenantId::parse(other).ok().map(Scope::Tenant),
    }
}
