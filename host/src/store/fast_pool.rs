//! The connections of the create path: a small pool that hands out and takes
//! back connections without a round trip.
//!
//! sqlx's pool pings every connection it takes back (and, by default, every
//! one it hands out): a create's two statements would cost four round trips
//! and four wakeups of a Postgres backend instead of two. This pool returns a
//! connection only when its last statement completed, so it never needs to
//! check one it takes back; a connection dropped mid-statement (a cancelled
//! request) is closed instead. A connection that sat idle for a while is
//! pinged before use, so one cut by a Postgres restart is replaced, not
//! failed on.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Idle longer than this, a connection is pinged before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool.
pub struct FastPool {
    options: PgConnectOptions,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
    acquire_timeout: Duration,
    check_after_idle: Duration,
    max: usize,
}

impl std::fmt::Debug for FastPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPool").field("max", &self.max).finish_non_exhaustive()
    }
}

impl FastPool {
    /// A pool of at most `max` connections made with `options`.
    pub fn new(options: PgConnectOptions, max: usize, acquire_timeout: Duration) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
            acquire_timeout,
            check_after_idle: CHECK_AFTER_IDLE,
            max,
        }
    }

    /// Pings a connection idle longer than `after` before handing it out
    /// (default one second).
    pub fn check_after_idle(mut self, after: Duration) -> Self {
        self.check_after_idle = after;
        self
    }

    /// Connections handed out now, and idle ones.
    pub fn usage(&self) -> (usize, usize) {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).len();
        (self.max - self.permits.available_permits(), idle)
    }

    /// A connection, waiting at most the acquire timeout for one to be free.
    pub async fn acquire(&self) -> Result<FastConnection<'_>, sqlx::Error> {
        let started = Instant::now();
        let result = self.acquire_inner().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        crate::metrics::METRICS.db_acquire.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn acquire_inner(&self) -> Result<FastConnection<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, idle_since)) = next else { break };
            if idle_since.elapsed() < self.check_after_idle || conn.ping().await.is_ok() {
                return Ok(FastConnection { conn: Some(conn), pool: self, clean: false, _permit: permit });
            }
            // Cut while idle: drop it and try the next one.
        }
        let conn = self.options.connect().await?;
        Ok(FastConnection { conn: Some(conn), pool: self, clean: false, _permit: permit })
    }
}

/// A connection handed out; back to the pool when dropped after
/// [`FastConnection::done`], closed otherwise.
pub struct FastConnection<'a> {
    conn: Option<PgConnection>,
    pool: &'a FastPool,
    clean: bool,
    _permit: SemaphorePermit<'a>,
}

impl FastConnection<'_> {
    /// Marks the connection reusable: its last statement completed.
    pub fn done(mut self) {
        self.clean = true;
    }
}

impl Deref for FastConnection<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("the connection is present until drop")
    }
}

impl DerefMut for FastConnection<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("the connection is present until drop")
    }
}

impl Drop for FastConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
        {
            self.pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push((conn, Instant::now()));
        }
        // Otherwise the connection is dropped: its socket closes, and its
        // backend ends (rolling back anything half done).
    }
}
