//! Replay: a candidate set and the live set, each deciding on the stored
//! decision input of a tenant's recent activities, and what differs.
//!
//! A job runs off the request path, on its own thread with its own
//! single-threaded runtime and its own two connections, and at most half
//! the cores run jobs at once ([`Jobs`]): creates keep their CPU. Both sets'
//! policy calls go through a call context of their own (gates, breakers,
//! metrics), so a replay never takes a live call's slot, trips a live
//! breaker or shows in the live policy metrics. Nothing is written to
//! activities; the job's progress and report live in `policy_replays`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::changeset::Changeset;
use super::compare::{Changes, DecisionView, Diff, Sample, Samples, policy_failures};
use super::{Rollout, RolloutError, check};
use crate::domain::TenantId;
use crate::domain::revision::{ChangedFile, diff};
use crate::metrics::Metrics;
use crate::policy::gate::{GateSettings, Gates};
use crate::policy::input::decode_stored;
use crate::policy::loader::Scope;
use crate::policy::set;
use crate::policy::{CallContext, PreparedInput, TenantSnapshot};
use crate::resolve::{self, Resolution};
use crate::store::decision_inputs::{self, Window, WindowRow};
use crate::store::replays::{self, NewReplay, Progress};

/// `limit` when none is given.
pub const DEFAULT_LIMIT: i64 = 10_000;
/// The largest `limit`.
pub const MAX_LIMIT: i64 = 1_000_000;

/// How many stored inputs are read at a time.
const PAGE: i64 = 1_000;
/// How often a running job writes its progress (and its heartbeat).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// A RUNNING job whose heartbeat is older than this has lost its replica.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// A replay to start.
#[derive(Debug)]
pub struct ReplayRequest {
    /// The candidate: the live set with this change.
    pub change: Changeset,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// The two sets a replay compares.
#[derive(Clone, Debug)]
pub struct Sides {
    pub live: Arc<TenantSnapshot>,
    pub candidate: Arc<TenantSnapshot>,
}

impl Sides {
    /// Both sets, their calls rebound to a context of their own.
    pub fn new(live: &TenantSnapshot, candidate: &TenantSnapshot) -> Self {
        let calls = offline_calls();
        Self { live: Arc::new(live.with_calls(&calls)), candidate: Arc::new(candidate.with_calls(&calls)) }
    }
}

/// A call context for evaluations off the request path: no tenant slot
/// limit beyond the job's own thread, no breaker, metrics of its own.
pub fn offline_calls() -> Arc<CallContext> {
    Arc::new(CallContext {
        gates: Gates::new(GateSettings { per_tenant: 1024, breaker_after: 0 }),
        metrics: Arc::new(Metrics::new(false)),
    })
}

/// A report as it grows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub evaluated: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub errors: u64,
    pub changes: Changes,
    pub samples: Samples,
}

impl Report {
    /// Counts one activity decided by both sets.
    pub fn record(&mut self, activity: crate::domain::ActivityId, live: &Resolution, candidate: &Resolution) {
        let (before, after) = (DecisionView::of(live), DecisionView::of(candidate));
        let d = Diff::between(&before, &after);
        let failures = policy_failures(candidate);
        self.evaluated += 1;
        if d.any() {
            self.changed += 1;
            self.changes.add(&d);
        } else {
            self.unchanged += 1;
        }
        if !failures.is_empty() {
            self.errors += 1;
        }
        let error = (!failures.is_empty()).then(|| failures.join("; "));
        self.samples.offer(d.any() || error.is_some(), || Sample { activity_id: activity, error, before, after });
    }

    /// An input that could not be read: counted as an error, no sample.
    fn unreadable(&mut self) {
        self.evaluated += 1;
        self.unchanged += 1;
        self.errors += 1;
    }

    fn write(&self) -> (serde_json::Value, serde_json::Value) {
        (json!(self.changes), json!(self.samples.to_vec()))
    }
}

/// Decides one stored input with both sets and counts it.
pub async fn evaluate(sides: &Sides, row: &WindowRow, report: &mut Report) {
    let base = match decode_stored(&row.input) {
        Ok(base) => base,
        Err(e) => {
            tracing::warn!(activity_id = %row.id, error = %e, "a stored decision input cannot be read");
            report.unreadable();
            return;
        }
    };
    // Both sets on one input: a call they share runs once.
    let input = PreparedInput::memoized(base);
    let activity = row.request();
    let live = resolve::resolve_activity(&sides.live, &input, &activity).await;
    let candidate = resolve::resolve_activity(&sides.candidate, &input, &activity).await;
    report.record(row.id, &live, &candidate);
}

/// Runs the window through both sets. `tick` gets the report every
/// [`PROGRESS_EVERY`] and may stop the run by answering `false`; the
/// answer is `false` when it did.
pub async fn run<F, Fut>(
    pool: &PgPool,
    tenant: TenantId,
    window: &Window,
    sides: &Sides,
    report: &mut Report,
    mut tick: F,
) -> Result<bool, sqlx::Error>
where
    F: FnMut(&Report) -> Fut,
    Fut: Future<Output = bool>,
{
    // The next page is read while this one is decided: Postgres works on
    // another core meanwhile.
    let (tx, mut pages) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn({
        let (pool, window) = (pool.clone(), *window);
        async move {
            let mut cursor = None;
            let mut left = window.limit;
            while left > 0 {
                let rows = decision_inputs::page(&pool, tenant, &window, cursor, left.min(PAGE)).await?;
                let Some(end) = rows.last() else { break };
                cursor = Some((end.created_at, end.id));
                left -= rows.len() as i64;
                if tx.send(rows).await.is_err() {
                    break;
                }
            }
            Ok::<(), sqlx::Error>(())
        }
    });
    let mut last = Instant::now();
    while let Some(rows) = pages.recv().await {
        for (i, row) in rows.iter().enumerate() {
            evaluate(sides, row, report).await;
            if i % 64 == 63 {
                // Lets the reader run on a single-threaded runtime.
                tokio::task::yield_now().await;
            }
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                if !tick(report).await {
                    reader.abort();
                    return Ok(false);
                }
            }
        }
    }
    match reader.await {
        Ok(read) => read.map(|()| true),
        Err(e) => Err(sqlx::Error::Protocol(format!("the replay's reader stopped: {e}"))),
    }
}

/// The replay threads of a process: at most half the cores at once.
#[derive(Debug)]
pub struct Jobs {
    slots: Arc<Semaphore>,
}

impl Default for Jobs {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self { slots: Arc::new(Semaphore::new((cores / 2).max(1))) }
    }
}

/// A job handed to its thread.
struct Job {
    tenant: TenantId,
    id: Uuid,
    window: Window,
    sides: Sides,
}

impl Rollout {
    /// Checks the candidate (422 listing every problem), records the job and
    /// starts it; answers its id at once.
    pub async fn start_replay(
        &self,
        tenant: TenantId,
        request: ReplayRequest,
        author: &str,
    ) -> Result<Uuid, RolloutError> {
        let scope = Scope::Tenant(tenant);
        let (files, _, candidate) = self.candidate(scope, &request.change).await?;
        let sides = Sides::new(&self.registry.snapshot(tenant), &self.registry.candidate_snapshot(&candidate));
        let window = Window {
            since: request.since,
            until: request.until,
            limit: request.limit,
            not_before: self.settings.decision_input_cutoff(Utc::now()),
        };
        let total = decision_inputs::count_window(&self.pool, tenant, &window).await?;
        let id = crate::domain::new_id();
        replays::insert(
            &self.pool,
            &NewReplay {
                tenant,
                id,
                author,
                message: request.change.options.message.as_deref(),
                since: request.since,
                until: request.until,
                limit: request.limit,
                files: files_json(&files),
                total,
            },
        )
        .await?;
        self.spawn_job(Job { tenant, id, window, sides });
        tracing::info!(tenant_id = %tenant, replay_id = %id, total, author, "replay started");
        Ok(id)
    }

    /// What a change does to the files, the live set with it, and that set
    /// loaded aside and checked whole.
    pub(super) async fn candidate(
        &self,
        scope: Scope,
        change: &Changeset,
    ) -> Result<(Vec<ChangedFile>, set::FileSet, crate::policy::candidate::Candidate), RolloutError> {
        let before = self.read_set(scope).await?;
        let missing = change.missing_deletes(&before);
        if !missing.is_empty() {
            return Err(RolloutError::invalid(missing));
        }
        let after = change.apply_to(&before);
        let files = diff(&set::manifest(&before), &set::manifest(&after));
        let candidate = check::load(&self.registry, scope, &after).await?;
        Ok((files, after, candidate))
    }

    /// Runs a job on a thread of its own, once a slot is free.
    fn spawn_job(&self, job: Job) {
        let slots = Arc::clone(&self.replays.slots);
        let options = (*self.pool.connect_options()).clone();
        let spawned = std::thread::Builder::new().name("reten-replay".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "could not start a replay runtime"),
            };
            runtime.block_on(async move {
                let _slot = slots.acquire_owned().await;
                // Two connections: the reader's and the progress writer's.
                match PgPoolOptions::new().max_connections(2).connect_with(options).await {
                    Ok(pool) => {
                        run_job(&pool, &job).await;
                        pool.close().await;
                    }
                    Err(e) => tracing::error!(replay_id = %job.id, error = %e, "a replay could not connect"),
                }
            });
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a replay thread");
        }
    }
}

/// A job from start to end, its outcome recorded.
async fn run_job(pool: &PgPool, job: &Job) {
    let mut report = Report::default();
    let tick = |r: &Report| {
        let (changes, samples) = r.write();
        let counts = counts(r);
        async move {
            let p = Progress { changes: &changes, samples: &samples, ..counts };
            replays::progress(pool, job.tenant, job.id, &p).await.unwrap_or(true)
        }
    };
    let outcome = run(pool, job.tenant, &job.window, &job.sides, &mut report, tick).await;
    let (changes, samples) = report.write();
    let p = Progress { changes: &changes, samples: &samples, ..counts(&report) };
    let error = match &outcome {
        Ok(true) => None,
        Ok(false) => return tracing::info!(replay_id = %job.id, "replay canceled"),
        Err(e) => Some(format!("reading the stored inputs failed: {e}")),
    };
    if let Err(e) = replays::finish(pool, job.tenant, job.id, &p, error.as_deref()).await {
        tracing::error!(replay_id = %job.id, error = %e, "could not record the end of a replay");
    }
    tracing::info!(replay_id = %job.id, evaluated = report.evaluated, changed = report.changed, "replay done");
}

static EMPTY: serde_json::Value = serde_json::Value::Null;

fn counts(r: &Report) -> Progress<'static> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Progress {
        evaluated: n(r.evaluated),
        changed: n(r.changed),
        unchanged: n(r.unchanged),
        errors: n(r.errors),
        changes: &EMPTY,
        samples: &EMPTY,
    }
}

/// What a candidate changes, as stored with its job.
pub fn files_json(files: &[ChangedFile]) -> serde_json::Value {
    files.iter().map(|f| json!({"path": f.path, "sha256": f.sha256, "change": f.change})).collect()
}
