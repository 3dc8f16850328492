//! Building the application from its settings, and running it until a
//! shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::{self, AppSettings, AppState};
use crate::config::ServeArgs;
use crate::dispatch::worker::{Dispatcher, Parts as DispatcherParts};
use crate::metrics::Metrics;
use crate::policy::gate::{GateSettings, Gates};
use crate::policy::registry::RegistryOptions;
use crate::policy::watcher::{self, WatchOptions, Watcher};
use crate::policy::{CallContext, Registry};
use crate::store;

/// A built application, bound to its port, not yet serving.
pub struct App {
    /// What `--demo` prints once the app is built.
    pub demo_banner: Option<String>,
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    _watcher: Watcher,
    _rollout: crate::rollout::Tasks,
}

impl App {
    /// Creates the database if needed, migrates it, loads the policies and
    /// binds the listener.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(args.metrics_tenant_labels));
        let calls = Arc::new(CallContext {
            gates: Gates::new(GateSettings {
                per_tenant: args.policy_calls_per_tenant,
                breaker_after: args.policy_breaker_after,
            }),
            metrics,
        });
        let mut jwt = args.jwt.settings()?;
        if args.demo && jwt.secret.is_none() && jwt.public_key_pem.is_none() {
            tracing::warn!("demo mode without RETEN_JWT_SECRET: using a random secret; tokens end with this process");
            jwt.secret = Some(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        }
        let auth = api::auth::Authenticator::new(&jwt)?;
        let secrets = args.dispatch.secrets()?;
        store::ensure_database(&args.database.database_url).await?;
        let pool = store::connect(&args.database.database_url, &args.database.pool()).await?;
        store::migrate(&pool).await?;
        let policies_dir = args.policies_dir.clone();
        let options = RegistryOptions {
            wasm_cache_dir: wasm_cache_dir(args.wasm_cache_dir.as_deref()),
            wasm_baseline_tier: args.wasm_baseline,
            wasm_compile_on_first_use: args.wasm_baseline && !args.wasm_compile_before_ready,
            calls,
            ..RegistryOptions::default()
        };
        let registry = tokio::task::spawn_blocking(move || Registry::load(&policies_dir, options))
            .await
            .context("the policy loader panicked")??;
        let registry = Arc::new(registry);
        let watcher = watcher::spawn(
            Arc::clone(&registry),
            WatchOptions {
                debounce: Duration::from_millis(args.policy_debounce_ms),
                rescan_every: Duration::from_secs(args.policy_rescan_secs.max(1)),
                events: args.policy_watch,
            },
        )
        .context("failed to watch the policies directory")?;
        let listener =
            TcpListener::bind(&args.listen).await.with_context(|| format!("failed to listen on {}", args.listen))?;
        let demo_banner = if args.demo {
            let demo = crate::demo::provision(&pool).await?;
            crate::store::dispatch_configs::ensure_mock(&pool, demo.tenant).await?;
            let addr = listener.local_addr()?;
            Some(match &jwt.secret {
                Some(secret) => crate::demo::banner(&demo, addr, secret)?,
                None => format!("Demo tenant: {} (mint tokens with your identity provider)", demo.tenant),
            })
        } else {
            None
        };
        let settings = AppSettings {
            pool: args.database.pool(),
            limits: args.limits.settings(),
            rollout: crate::rollout::RolloutSettings {
                read_only: args.policies_read_only,
                decision_input_retention_days: args.decision_input_retention_days,
                shadow_queue: args.shadow_queue as usize,
            },
            dispatch: crate::dispatch::DispatchSettings {
                keep_decision_inputs: args.decision_input_retention_days > 0,
                ..args.dispatch.settings(args.metrics_tenant_labels)
            },
        };
        let rollout_tasks = crate::rollout::Tasks::spawn(&pool, &registry, settings.rollout);
        let state = AppState::new(pool, registry, auth, &settings, secrets)?;
        Ok(Self {
            demo_banner,
            listener,
            state,
            grace: Duration::from_secs(args.shutdown_grace_secs),
            _watcher: watcher,
            _rollout: rollout_tasks,
        })
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// within the grace period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let registry = self.state.registry.state();
        tracing::info!(%addr, generation = registry.generation, load_errors = registry.errors().count(), "serving");
        let router = api::router(self.state.clone());
        let trimmer = tokio::spawn(trim_idle_connections(Arc::clone(&self.state.fast)));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let dispatcher = self.spawn_dispatcher(stop_rx.clone());
        let server = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            let _ = stop_tx.send(true);
        });
        let grace = self.grace;
        let mut stop_rx2 = stop_rx.clone();
        let deadline = async move {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result.context("the server failed")?,
            () = deadline => tracing::warn!("grace period over; dropping unfinished requests"),
        }
        if let Some(dispatcher) = dispatcher
            && dispatcher.await.is_err()
        {
            tracing::error!("the dispatcher's shutdown panicked");
        }
        trimmer.abort();
        self.state.fast.close().await;
        self.state.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The compile cache folder: the one configured, none for `off`, else the
/// default place when it can be created (a read-only home only costs the
/// cache).
fn wasm_cache_dir(configured: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    match configured {
        Some(dir) if dir.as_os_str() == "off" => None,
        Some(dir) => Some(dir.to_owned()),
        None => {
            let dir = crate::policy::wasm_cache::default_dir()?;
            match std::fs::create_dir_all(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "no Wasm compile cache: its default folder cannot be created");
                    None
                }
            }
        }
    }
}

/// Closes the create path's idle connections past their idle timeout or
/// lifetime, every few seconds, until aborted.
async fn trim_idle_connections(fast: Arc<store::fast_pool::FastPool>) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let closed = fast.trim().await;
        if closed > 0 {
            tracing::debug!(closed, "closed idle connections of the create path");
        }
    }
}

impl App {
    /// Starts the dispatcher unless `RETEN_DISPATCH=false`; it stops when
    /// `stop` turns true, finishing its sends within the grace period.
    fn spawn_dispatcher(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.state.dispatch.settings.enabled {
            tracing::info!("the dispatcher is off on this replica (RETEN_DISPATCH=false)");
            return None;
        }
        let dispatcher = Dispatcher::spawn(DispatcherParts {
            pool: self.state.pool.clone(),
            fast: Arc::clone(&self.state.fast),
            registry: Arc::clone(&self.state.registry),
            dispatch: Arc::clone(&self.state.dispatch),
        });
        let grace = self.grace;
        Some(tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            dispatcher.shutdown(grace).await;
        }))
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::wasm_cache_dir;

    #[test]
    fn the_compile_cache_is_the_configured_folder_or_none_for_off() {
        assert_eq!(wasm_cache_dir(Some(Path::new("off"))), None);
        assert_eq!(wasm_cache_dir(Some(Path::new("/srv/cache"))), Some(Path::new("/srv/cache").to_owned()));
    }
}
