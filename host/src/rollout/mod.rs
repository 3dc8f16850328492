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
pub mod history;
pub mod listener;
pub mod recorder;

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
}

impl Tasks {
    /// Starts recording the sets that start serving, and listening for
    /// other replicas' changes.
    pub fn spawn(pool: &PgPool, registry: &Arc<Registry>) -> Self {
        Self {
            recorder: recorder::spawn(pool.clone(), Arc::clone(registry)),
            listener: listener::spawn(pool, Arc::clone(registry)),
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.recorder.abort();
        self.listener.abort();
    }
}

/// How changes are allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RolloutSettings {
    /// The directory is managed outside the API (a ConfigMap, git-sync):
    /// every change that would write files is refused.
    pub read_only: bool,
}

/// The policy change service: what the API calls to change, list and
/// restore a layer's policies.
#[derive(Debug)]
pub struct Rollout {
    pool: PgPool,
    registry: Arc<Registry>,
    settings: RolloutSettings,
}

impl Rollout {
    /// Changes go to `registry`'s directory; revisions to `pool`.
    pub fn new(pool: PgPool, registry: Arc<Registry>, settings: RolloutSettings) -> Self {
        Self { pool, registry, settings }
    }

    /// Whether every write is refused.
    pub fn read_only(&self) -> bool {
        self.settings.read_only
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
