//! Shadow sets: a candidate that decides on live traffic without serving.
//!
//! A tenant's shadow set is a complete tenant folder at
//! `tenants/<id>/shadow/` (the live set with a change applied, so a
//! deletion shows too), written by `PUT /api/policies/shadow` or committed
//! by hand. Every replica loads the shadow folders it finds after each
//! reload of its registry (a file event, another replica's notification, a
//! rescan), so every replica evaluates the same set.
//!
//! Invariant: shadow work never delays a create. A create hands its input
//! and its live decision to [`Shadows::offer`], which never waits: the job
//! goes on a bounded queue (`RETEN_SHADOW_QUEUE`) or is dropped and
//! counted. One thread of its own, with its own runtime and connection,
//! evaluates the queue with the shadow set's policies (their calls on a
//! context of their own, see [`super::replay::offline_calls`]) and adds its
//! counts to Postgres every [`FLUSH_EVERY`], so the counts are summed over
//! replicas.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use prometheus::{IntCounterVec, Opts};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::apply::{Applied, Origin};
use super::changeset::{ChangeOptions, Changeset};
use super::compare::{DecisionView, Diff, Sample, policy_failures};
use super::{Rollout, RolloutError, check, payload};
use crate::domain::activity::NewActivity;
use crate::domain::revision::{ChangedFile, RevisionSource, diff, set_digest};
use crate::domain::{ActivityId, TenantId};
use crate::metrics::Metrics;
use crate::policy::loader::Scope;
use crate::policy::set::{self, FileSet};
use crate::policy::{CallContext, PreparedInput, Registry, TenantSnapshot};
use crate::resolve::{self, Resolution};
use crate::store::shadows::{self, Counts, Disagreement};

/// The folder of a tenant's shadow set, inside the tenant's folder.
pub const FOLDER: &str = "shadow";
/// How often a replica adds its counts to Postgres.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How many samples the summary shows.
const SAMPLES: i64 = 50;

/// A tenant's shadow set, loaded.
#[derive(Debug)]
pub struct ShadowSet {
    pub tenant: TenantId,
    /// The shadow's id in `policy_shadows`: counts go to it.
    pub id: Uuid,
    /// The digest of the shadow folder's set.
    pub set_sha256: String,
    /// The global layer it was merged with.
    global: String,
    pub snapshot: Arc<TenantSnapshot>,
}

/// One live decision, to be decided again by the shadow set.
struct Job {
    set: Arc<ShadowSet>,
    activity_id: ActivityId,
    input: Arc<PreparedInput>,
    activity: NewActivity,
    live: DecisionView,
}

/// Counts and disagreements not yet added to Postgres, by shadow.
#[derive(Default)]
struct Pending {
    counts: HashMap<(TenantId, Uuid), Counts>,
    found: HashMap<(TenantId, Uuid), Vec<Disagreement>>,
}

/// The shadow metrics, per tenant.
#[derive(Clone)]
struct ShadowMetrics {
    /// By outcome: agreed, disagreed, dropped.
    evaluations: IntCounterVec,
    errors: IntCounterVec,
    app: Arc<Metrics>,
}

impl ShadowMetrics {
    fn new(app: &Arc<Metrics>) -> Self {
        let evaluations = IntCounterVec::new(
            Opts::new(
                "reten_shadow_evaluations_total",
                "Live decisions offered to the tenant's shadow set, by outcome: agreed, disagreed, or dropped \
                 (the shadow queue was full).",
            ),
            &["tenant", "outcome"],
        )
        .expect("a valid metric definition");
        let errors = IntCounterVec::new(
            Opts::new("reten_shadow_errors_total", "Shadow evaluations on which a shadow policy failed."),
            &["tenant"],
        )
        .expect("a valid metric definition");
        // A second app on the same metrics (a test) keeps the first's.
        let _ = app.registry().register(Box::new(evaluations.clone()));
        let _ = app.registry().register(Box::new(errors.clone()));
        Self { evaluations, errors, app: Arc::clone(app) }
    }

    fn count(&self, tenant: TenantId, outcome: &str) {
        self.evaluations.with_label_values(&[self.app.tenant_label(&tenant.to_string()).as_str(), outcome]).inc();
    }
}

/// The shadow sets of a process, and their evaluation.
pub struct Shadows {
    registry: Arc<Registry>,
    pool: PgPool,
    sets: ArcSwap<HashMap<TenantId, Arc<ShadowSet>>>,
    queue: mpsc::Sender<Job>,
    pending: Arc<Mutex<Pending>>,
    metrics: ShadowMetrics,
    calls: Arc<CallContext>,
    /// One sync at a time.
    syncing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadows").field("sets", &self.sets.load().len()).finish_non_exhaustive()
    }
}

impl Shadows {
    /// Starts the evaluation thread; `queue` live decisions may wait for it.
    pub fn start(pool: PgPool, registry: Arc<Registry>, queue: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let metrics = ShadowMetrics::new(&registry.calls().metrics);
        let shadows = Arc::new(Self {
            sets: ArcSwap::from_pointee(HashMap::new()),
            queue: tx,
            pending: Arc::default(),
            metrics: metrics.clone(),
            calls: super::replay::offline_calls(),
            syncing: tokio::sync::Mutex::new(()),
            registry,
            pool: pool.clone(),
        });
        let options = (*pool.connect_options()).clone();
        let pending = Arc::clone(&shadows.pending);
        let spawned = std::thread::Builder::new()
            .name("reten-shadow".into())
            .spawn(move || evaluate_queue(rx, pending, metrics, options));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the shadow thread; shadow sets are not evaluated");
        }
        shadows
    }

    /// Keeps the loaded sets in step with the directory: once now, then
    /// after every reload of the registry, for as long as `this` lives.
    pub fn follow(this: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let weak: Weak<Self> = Arc::downgrade(this);
        let mut reloads = this.registry.subscribe_reloads();
        Some(runtime.spawn(async move {
            loop {
                let Some(shadows) = weak.upgrade() else { return };
                shadows.sync().await;
                drop(shadows);
                if reloads.changed().await.is_err() {
                    return;
                }
            }
        }))
    }

    /// Offers a live decision to the tenant's shadow set, if it has one.
    /// Never waits: a full queue drops it (counted).
    pub fn offer(
        &self,
        activity_id: ActivityId,
        input: &Arc<PreparedInput>,
        activity: &NewActivity,
        live: &Resolution,
    ) {
        let tenant = input.base.tenant_id;
        let sets = self.sets.load();
        let Some(set) = sets.get(&tenant) else { return };
        let job = Job {
            set: Arc::clone(set),
            activity_id,
            input: Arc::clone(input),
            activity: activity.clone(),
            live: DecisionView::of(live),
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = self.queue.try_send(job) {
            let key = (tenant, job.set.id);
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).counts.entry(key).or_default().dropped += 1;
            self.metrics.count(tenant, "dropped");
        }
    }

    /// The tenant's loaded shadow set, if any.
    pub fn get(&self, tenant: TenantId) -> Option<Arc<ShadowSet>> {
        self.sets.load().get(&tenant).cloned()
    }

    /// Loads the shadow folders found on disk; a set that did not change
    /// (nor the global layer beneath it) is kept as it is.
    pub async fn sync(&self) {
        let _one = self.syncing.lock().await;
        let root = self.registry.root().to_owned();
        let found = match tokio::task::spawn_blocking(move || scan(&root)).await {
            Ok(found) => found,
            Err(e) => return tracing::error!(error = %e, "scanning for shadow sets panicked"),
        };
        let global = self.registry.state().global.fingerprint();
        let current = self.sets.load_full();
        let mut next = HashMap::new();
        for (tenant, files) in found {
            let sha = set_digest(&set::manifest(&files));
            if let Some(set) = current.get(&tenant).filter(|s| s.set_sha256 == sha && s.global == global) {
                next.insert(tenant, Arc::clone(set));
                continue;
            }
            match self.load(tenant, &files, sha, global.clone()).await {
                Ok(set) => {
                    next.insert(tenant, Arc::new(set));
                }
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "the shadow set does not load; not evaluated")
                }
            }
        }
        self.sets.store(Arc::new(next));
    }

    async fn load(&self, tenant: TenantId, files: &FileSet, sha: String, global: String) -> anyhow::Result<ShadowSet> {
        let registry = Arc::clone(&self.registry);
        let candidate =
            check::load(&registry, Scope::Tenant(tenant), files).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let snapshot = Arc::new(registry.candidate_snapshot(&candidate).with_calls(&self.calls));
        // A set found on disk that no shadow records (a commit) starts one.
        let id = shadows::start(&self.pool, tenant, &sha, "filesystem", None, false).await?;
        Ok(ShadowSet { tenant, id, set_sha256: sha, global, snapshot })
    }
}

/// Every tenant folder's shadow set: `tenants/<id>/shadow/`.
fn scan(root: &Path) -> Vec<(TenantId, FileSet)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.join("tenants")) else { return out };
    for entry in entries.flatten() {
        let Some(tenant) = entry.file_name().to_str().and_then(|n| TenantId::parse(n).ok()) else { continue };
        let dir = entry.path().join(FOLDER);
        if !dir.is_dir() {
            continue;
        }
        match set::read_folder(&dir, Scope::Tenant(tenant)) {
            Ok(files) => out.push((tenant, files)),
            Err(e) => tracing::warn!(tenant_id = %tenant, error = %e, "the shadow folder cannot be read"),
        }
    }
    out
}

/// The evaluation thread: decides each queued job with the shadow set and
/// adds the counts to Postgres every [`FLUSH_EVERY`]; ends when the queue
/// closes, after a last flush.
fn evaluate_queue(
    mut rx: mpsc::Receiver<Job>,
    pending: Arc<Mutex<Pending>>,
    metrics: ShadowMetrics,
    options: PgConnectOptions,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "could not start the shadow runtime"),
    };
    runtime.block_on(async move {
        let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => evaluate(job, &pending, &metrics).await,
                    None => break,
                },
                _ = flush.tick() => flush_pending(&pool, &pending).await,
            }
        }
        flush_pending(&pool, &pending).await;
        pool.close().await;
    });
}

async fn evaluate(job: Job, pending: &Mutex<Pending>, metrics: &ShadowMetrics) {
    let shadow = resolve::resolve_activity(&job.set.snapshot, &job.input, &job.activity).await;
    let after = DecisionView::of(&shadow);
    let differs = Diff::between(&job.live, &after).any();
    let failures = policy_failures(&shadow);
    let tenant = job.set.tenant;
    metrics.count(tenant, if differs { "disagreed" } else { "agreed" });
    if !failures.is_empty() {
        metrics.errors.with_label_values(&[metrics.app.tenant_label(&tenant.to_string()).as_str()]).inc();
    }
    let key = (tenant, job.set.id);
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    let c = p.counts.entry(key).or_default();
    c.evaluated += 1;
    if differs {
        c.disagreed += 1;
    } else {
        c.agreed += 1;
    }
    c.errors += i64::from(!failures.is_empty());
    if differs || !failures.is_empty() {
        let found = p.found.entry(key).or_default();
        if (found.len() as i64) < shadows::KEPT_DISAGREEMENTS {
            found.push(Disagreement {
                activity: job.activity_id,
                error: (!failures.is_empty()).then(|| failures.join("; ")),
                live: json!(job.live),
                shadow: json!(after),
            });
        }
    }
}

async fn flush_pending(pool: &PgPool, pending: &Mutex<Pending>) {
    let taken = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
    for ((tenant, id), found) in &taken.found {
        if let Err(e) = shadows::keep(pool, *tenant, *id, found).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "could not keep shadow disagreements");
        }
    }
    for ((tenant, id), counts) in &taken.counts {
        if counts.is_zero() {
            continue;
        }
        if let Err(e) = shadows::add(pool, *tenant, *id, counts).await {
            tracing::warn!(tenant_id = %tenant, error = %e, "could not add shadow counts; they are lost");
        }
    }
}

/// What `GET /api/policies/shadow` shows.
#[derive(Clone, Debug)]
pub struct Summary {
    pub started_at: DateTime<Utc>,
    pub author: String,
    pub message: Option<String>,
    /// What the shadow set changes against the live set.
    pub files: Vec<ChangedFile>,
    pub counts: Counts,
    pub samples: Vec<Sample>,
}

impl Rollout {
    /// Installs the live set with `change` applied as the tenant's shadow
    /// set (replacing any other, with fresh counts), once it checks whole.
    pub async fn install_shadow(
        &self,
        tenant: TenantId,
        change: &Changeset,
        author: &str,
    ) -> Result<Summary, RolloutError> {
        if self.read_only() {
            return Err(RolloutError::ReadOnly);
        }
        let scope = Scope::Tenant(tenant);
        let (_, candidate_files, _) = self.candidate(scope, change).await?;
        let sha = set_digest(&set::manifest(&candidate_files));
        shadows::start(&self.pool, tenant, &sha, author, change.options.message.as_deref(), true).await?;
        let dir = self.tenant_dir(tenant);
        tokio::task::spawn_blocking(move || write_folder(&dir, &candidate_files))
            .await
            .context("writing the shadow set panicked")?
            .context("failed to write the shadow set")?;
        self.shadows.sync().await;
        self.notify(scope).await?;
        tracing::info!(tenant_id = %tenant, author, "shadow set installed");
        self.shadow_summary(tenant).await?.ok_or_else(|| {
            RolloutError::Internal(anyhow::anyhow!("the shadow set was written but did not load on this replica"))
        })
    }

    /// The tenant's shadow: its counts (summed over replicas), what it
    /// changes and its latest disagreements; `None` when it has none.
    pub async fn shadow_summary(&self, tenant: TenantId) -> Result<Option<Summary>, RolloutError> {
        let dir = self.tenant_dir(tenant).join(FOLDER);
        if !dir.is_dir() {
            return Ok(None);
        }
        let Some(row) = shadows::get(&self.pool, tenant).await? else { return Ok(None) };
        let scope = Scope::Tenant(tenant);
        let live = self.read_set(scope).await?;
        let shadow = tokio::task::spawn_blocking(move || set::read_folder(&dir, scope))
            .await
            .context("reading the shadow set panicked")?
            .context("failed to read the shadow set")?;
        let samples = shadows::recent(&self.pool, tenant, row.id, SAMPLES)
            .await?
            .into_iter()
            .filter_map(|d| {
                Some(Sample {
                    activity_id: d.activity,
                    error: d.error,
                    before: serde_json::from_value(d.live).ok()?,
                    after: serde_json::from_value(d.shadow).ok()?,
                })
            })
            .collect();
        Ok(Some(Summary {
            started_at: row.started_at,
            author: row.author,
            message: row.message,
            files: diff(&set::manifest(&live), &set::manifest(&shadow)),
            counts: Counts {
                evaluated: row.evaluated,
                agreed: row.agreed,
                disagreed: row.disagreed,
                errors: row.errors,
                dropped: row.dropped,
            },
            samples,
        }))
    }

    /// Ends the tenant's shadow (its folder and its counts); whether it had one.
    pub async fn end_shadow(&self, tenant: TenantId) -> Result<bool, RolloutError> {
        if self.read_only() {
            return Err(RolloutError::ReadOnly);
        }
        let dir = self.tenant_dir(tenant).join(FOLDER);
        let had_folder = dir.is_dir();
        tokio::task::spawn_blocking(move || remove_folder(&dir))
            .await
            .context("removing the shadow set panicked")?
            .context("failed to remove the shadow set")?;
        let had_row = shadows::end(&self.pool, tenant).await?;
        self.shadows.sync().await;
        self.notify(Scope::Tenant(tenant)).await?;
        Ok(had_folder || had_row)
    }

    /// Applies the shadow set as a change (`source: PROMOTE`, a new
    /// revision), then ends the shadow.
    pub async fn promote_shadow(
        &self,
        tenant: TenantId,
        author: &str,
        message: Option<String>,
    ) -> Result<Applied, RolloutError> {
        if self.read_only() {
            return Err(RolloutError::ReadOnly);
        }
        let scope = Scope::Tenant(tenant);
        let dir = self.tenant_dir(tenant).join(FOLDER);
        if !dir.is_dir() {
            return Err(RolloutError::NotFound(format!("tenant {tenant} has no shadow set to promote")));
        }
        let files = tokio::task::spawn_blocking(move || set::read_folder(&dir, scope))
            .await
            .context("reading the shadow set panicked")?
            .context("failed to read the shadow set")?;
        let options =
            ChangeOptions { message: message.or_else(|| Some("promote the shadow set".into())), ..Default::default() };
        let change = Changeset::replace_with(files, options);
        let applied = self.apply(scope, &change, Origin { author, source: RevisionSource::Promote }).await?;
        self.end_shadow(tenant).await?;
        Ok(applied)
    }

    /// The shadow sets of this process.
    pub fn shadows(&self) -> &Arc<Shadows> {
        &self.shadows
    }

    fn tenant_dir(&self, tenant: TenantId) -> PathBuf {
        self.registry.root().join(Scope::Tenant(tenant).rel_dir())
    }

    /// Tells every replica to reload the layer (and so its shadow).
    async fn notify(&self, scope: Scope) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        crate::store::revisions::notify(&mut conn, &payload(scope)).await
    }
}

/// Writes a shadow folder whole: staged beside it, then renamed in.
fn write_folder(tenant_dir: &Path, files: &FileSet) -> std::io::Result<()> {
    let staging = tenant_dir.join(format!(".shadow-new-{}", Uuid::new_v4().simple()));
    for (path, bytes) in files {
        let target = staging.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
    }
    std::fs::create_dir_all(&staging)?;
    let target = tenant_dir.join(FOLDER);
    let old = tenant_dir.join(format!(".shadow-old-{}", Uuid::new_v4().simple()));
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&staging, &target)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Removes a shadow folder (renamed aside first, so no reader sees half of it).
fn remove_folder(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir);
    let aside = parent.join(format!(".shadow-old-{}", Uuid::new_v4().simple()));
    std::fs::rename(dir, &aside)?;
    std::fs::remove_dir_all(&aside)
}
