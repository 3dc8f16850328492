//! Logging: `RUST_LOG` sets the level, `RETEN_LOG_FORMAT` the format.
//!
//! Invariant: no secret reaches a log line. Requests are logged by method
//! and route template only; tokens live in headers, which are never logged.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
