//! Every replica in step: a Postgres `LISTEN` on the policy channel. A
//! change through the API (on any replica) notifies the layer it changed
//! when it commits, and this replica reloads that layer at once, whether or
//! not the file events reach it. A lost connection may have lost
//! notifications, so after every (re)connection the whole directory is
//! rescanned.
//!
//! The listener has a connection of its own (application name
//! `reten-policy-listener`), outside the request pools.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

use super::scope_of_payload;
use crate::policy::Registry;
use crate::store::revisions::CHANNEL;

/// The application name of the listener's connection.
pub const APPLICATION_NAME: &str = "reten-policy-listener";

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts listening, with a connection made like `pool`'s.
pub fn spawn(pool: &PgPool, registry: Arc<Registry>) -> JoinHandle<()> {
    let options = (*pool.connect_options()).clone().application_name(APPLICATION_NAME);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    tokio::spawn(run(own, registry))
}

async fn run(pool: PgPool, registry: Arc<Registry>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut listener = match listen(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "the policy listener cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        // Whatever was notified while this replica was not listening.
        reload(&registry, None).await;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => reload(&registry, Some(notification.payload())).await,
                Ok(None) => {
                    tracing::warn!("the policy listener lost its connection; reconnecting, then rescanning");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the policy listener failed; reconnecting, then rescanning");
                    break;
                }
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Reloads the layer a payload names, or everything.
async fn reload(registry: &Arc<Registry>, payload: Option<&str>) {
    let scope = match payload.map(scope_of_payload) {
        Some(None) => {
            tracing::warn!(payload, "a policy notification names no layer; ignored");
            return;
        }
        Some(Some(scope)) => Some(scope),
        None => None,
    };
    let registry = Arc::clone(registry);
    let outcome = tokio::task::spawn_blocking(move || match scope {
        Some(scope) => registry.reload(&std::iter::once(scope).collect()),
        None => registry.reload_all(),
    })
    .await;
    if let Err(e) = outcome {
        tracing::error!(error = %e, "a policy reload panicked; the serving policies are unchanged");
    }
}
