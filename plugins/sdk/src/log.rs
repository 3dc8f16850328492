//! Log lines for the policy's author.
//!
//! ```
//! use reten_policy_sdk::log;
//!
//! log::info("looking for the owner");
//! log::debug(format!("users: {}", 4));
//! ```
//!
//! In a component each line goes to the host's `log` import: it shows in the
//! decision's trace (`logs` of the criterion or attribute), in `reten policy
//! eval` and in `reten policy test -v`. The host keeps the first 32 lines of a
//! call, each up to 512 bytes, and says how many it dropped. Nothing leaves
//! the host: a line never reaches a network, a file or the host's own log.
//!
//! Built for any other target (a policy's native `cargo test`), a line goes
//! to standard error.

use crate::bindings::log::{self as host, Level};

/// Writes a line at `level`.
pub fn write(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    #[cfg(target_arch = "wasm32")]
    host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = host::log;
        let name = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        eprintln!("[{name}] {message}");
    }
}

/// Writes a line at level `trace`.
pub fn trace(message: impl AsRef<str>) {
    write(Level::Trace, message);
}

/// Writes a line at level `debug`.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message);
}

/// Writes a line at level `info`.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message);
}

/// Writes a line at level `warn`.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message);
}

/// Writes a line at level `error`.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message);
}
