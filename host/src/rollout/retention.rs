//! The decision-input pruner: deletes inputs past
//! `RETEN_DECISION_INPUT_RETENTION_DAYS`, at start-up and then hourly.
//! Every replica runs it; the deletes are idempotent and batched, so two at
//! once only share the work. Reads never depend on it (see
//! [`crate::store::decision_inputs`]).

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::RolloutSettings;
use crate::store::decision_inputs;

/// How often the pruner runs.
const EVERY: Duration = Duration::from_secs(3_600);

/// Starts the pruner.
pub fn spawn(pool: PgPool, settings: RolloutSettings) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let cutoff = settings.decision_input_cutoff(chrono::Utc::now());
            match decision_inputs::prune(&pool, cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned decision inputs past their retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune decision inputs; trying again later"),
            }
        }
    })
}
