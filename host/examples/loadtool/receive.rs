//! `loadtool receive`: the webhook receiver of `dispatch.sh`. Listens on the
//! loopback only, answers every request 201 with a fresh provider id, and
//! exits by itself after `--max-secs` (or on SIGTERM), so a run can never
//! leave it behind.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// Where to listen and for how long.
#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// A loopback address.
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: SocketAddr,
    /// The longest it runs.
    #[arg(long, default_value_t = 1_800)]
    max_secs: u64,
}

/// Serves until SIGTERM or `max_secs`.
pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.listen.ip().is_loopback(), "the receiver listens on the loopback only");
    let app = axum::Router::new()
        .fallback(|| async { (StatusCode::CREATED, Json(json!({"id": Uuid::new_v4().to_string()}))) });
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    let limit = Duration::from_secs(args.max_secs);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = term => {},
                _ = tokio::signal::ctrl_c() => {},
                () = tokio::time::sleep(limit) => {},
            }
        })
        .await?;
    Ok(())
}
