//! The dispatcher: a task in every `reten serve` that claims due activities
//! and sends them.
//!
//! It runs a round every `RETEN_DISPATCH_INTERVAL_MS`, at once when a create
//! of a due activity `NOTIFY`s (any replica's), and again as sends finish
//! while a backlog remains. A round claims, per tenant, at most
//! [`super::BATCH_PER_TENANT`] and no more than the tenant's free send slots
//! (`RETEN_DISPATCH_PER_TENANT`), round-robin across tenants; so one
//! tenant's backlog never delays another's, and nothing claimed waits in a
//! queue while its claim runs out.
//!
//! At shutdown it stops claiming, lets the sends in flight finish within the
//! grace period, and gives back the claims of those that did not, so another
//! replica takes them at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use uuid::Uuid;

use super::pipeline::{self, Ctx};
use super::{BATCH_PER_TENANT, Dispatch};
use crate::domain::TenantId;
use crate::policy::Registry;
use crate::store::dispatch::{self as store, ClaimLimits, Claimed};
use crate::store::dispatch_outcomes::Trigger;
use crate::store::fast_pool::FastPool;

/// How often the oldest-due gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// How often old attempts are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);

/// What the dispatcher runs on.
#[derive(Clone, Debug)]
pub struct Parts {
    pub pool: PgPool,
    pub fast: Arc<FastPool>,
    pub registry: Arc<Registry>,
    pub dispatch: Arc<Dispatch>,
}

/// A running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
    owner: Uuid,
}

impl Dispatcher {
    /// Starts the dispatcher.
    pub fn spawn(parts: Parts) -> Self {
        let owner = Uuid::new_v4();
        let (stop, stop_rx) = watch::channel(None);
        let state = Loop {
            parts,
            owner,
            in_flight: JoinSet::new(),
            claims: HashMap::new(),
            per_tenant: HashMap::new(),
            backlog: false,
        };
        let task = tokio::spawn(state.run(stop_rx));
        Self { stop, task, owner }
    }

    /// The id its claims carry.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Stops claiming, lets the sends in flight finish within `grace`, and
    /// gives back the claims of the rest.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the dispatcher ended abnormally");
        }
    }
}

struct Loop {
    parts: Parts,
    owner: Uuid,
    in_flight: JoinSet<Claimed>,
    claims: HashMap<tokio::task::Id, Claimed>,
    per_tenant: HashMap<TenantId, i64>,
    /// Whether the last round may have left due activities behind.
    backlog: bool,
}

impl Loop {
    async fn run(mut self, mut stop: watch::Receiver<Option<Duration>>) {
        let listener = spawn_listener(self.parts.pool.clone(), Arc::clone(&self.parts.dispatch));
        let mut tick = tokio::time::interval(self.parts.dispatch.settings.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut gauged, mut purged) = (Instant::now() - GAUGE_EVERY, Instant::now());
        tracing::info!(owner = %self.owner, "dispatcher started");
        let grace = loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    let grace = *stop.borrow();
                    if changed.is_err() || grace.is_some() {
                        break grace.unwrap_or_default();
                    }
                    continue;
                }
                Some(done) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.finished(done);
                    if !self.backlog {
                        continue;
                    }
                }
                () = self.parts.dispatch.woken() => {}
                _ = tick.tick() => {
                    if gauged.elapsed() >= GAUGE_EVERY {
                        gauged = Instant::now();
                        self.gauge().await;
                    }
                    if purged.elapsed() >= PURGE_EVERY {
                        purged = Instant::now();
                        self.purge().await;
                    }
                }
            }
            self.round().await;
        };
        listener.abort();
        self.drain(grace).await;
    }

    /// Claims what this replica has room for, and starts each send.
    async fn round(&mut self) {
        let settings = &self.parts.dispatch.settings;
        let total = settings.max_in_flight.saturating_sub(self.in_flight.len());
        let per_tenant = i64::try_from(settings.per_tenant.clamp(1, BATCH_PER_TENANT)).unwrap_or(1);
        if total == 0 {
            self.backlog = true;
            return;
        }
        let busy: Vec<(TenantId, i64)> = self.per_tenant.iter().map(|(t, n)| (*t, (per_tenant - n).max(0))).collect();
        let limits = ClaimLimits { per_tenant, busy: &busy, total: i64::try_from(total).unwrap_or(i64::MAX) };
        let claimed = match store::claim(&self.parts.pool, self.owner, &limits, settings.lease()).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "the dispatch claim failed; the next round tries again");
                return;
            }
        };
        let full_total = claimed.len() >= total;
        for c in claimed {
            self.start(c);
        }
        self.backlog = full_total || self.per_tenant.values().any(|n| *n >= per_tenant);
    }

    fn start(&mut self, c: Claimed) {
        let parts = self.parts.clone();
        let owner = self.owner;
        let handle = self.in_flight.spawn(async move {
            let ctx =
                Ctx { pool: &parts.pool, fast: &parts.fast, registry: &parts.registry, dispatch: &parts.dispatch };
            if let Err(e) = pipeline::run(&ctx, c.tenant_id, c.id, owner, Trigger::Scheduled).await {
                // Its claim runs out and a later round sends it again.
                tracing::warn!(tenant_id = %c.tenant_id, activity_id = %c.id, error = %e, "dispatch failed");
            }
            c
        });
        self.claims.insert(handle.id(), c);
        *self.per_tenant.entry(c.tenant_id).or_default() += 1;
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, Claimed), JoinError>) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        if let Err(e) = &done
            && e.is_panic()
        {
            tracing::error!("a dispatch task panicked; its claim runs out and it is sent again");
        }
        if let Some(c) = self.claims.remove(&id)
            && let Some(n) = self.per_tenant.get_mut(&c.tenant_id)
        {
            *n -= 1;
            if *n <= 0 {
                self.per_tenant.remove(&c.tenant_id);
            }
        }
    }

    /// Waits for the sends in flight up to `grace`; gives back the claims
    /// of those still running then.
    async fn drain(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.in_flight.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) | Err(_) => break,
            }
        }
        let left: Vec<Claimed> = self.claims.values().copied().collect();
        self.in_flight.shutdown().await;
        if !left.is_empty() {
            match store::release_many(&self.parts.pool, self.owner, &left).await {
                Ok(n) => tracing::info!(released = n, "dispatcher stopped; unfinished sends given back"),
                Err(e) => tracing::warn!(error = %e, "could not give back claims; they run out on their own"),
            }
        }
        tracing::info!("dispatcher stopped");
    }

    async fn gauge(&self) {
        match store::oldest_due(&self.parts.pool).await {
            Ok(ages) => self.parts.dispatch.metrics.set_oldest_due(&ages),
            Err(e) => tracing::debug!(error = %e, "could not read the oldest due activities"),
        }
    }

    async fn purge(&self) {
        let retention = chrono::Duration::from_std(self.parts.dispatch.settings.attempt_retention).unwrap_or_default();
        match store::purge_attempts(&self.parts.pool, chrono::Utc::now() - retention).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "old dispatch attempts purged"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge old dispatch attempts"),
        }
    }
}

/// Listens for `NOTIFY` from creates of due activities on any replica and
/// wakes the local dispatcher; reconnects after an outage (the interval
/// covers what was missed meanwhile).
fn spawn_listener(pool: PgPool, dispatch: Arc<Dispatch>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen(store::WAKE_CHANNEL).await {
                    Ok(()) => {
                        dispatch.wake();
                        while listener.recv().await.is_ok() {
                            dispatch.wake();
                        }
                        tracing::debug!("the dispatch listener lost its connection");
                    }
                    Err(e) => tracing::debug!(error = %e, "the dispatch listener could not listen"),
                },
                Err(e) => tracing::debug!(error = %e, "the dispatch listener could not connect"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
