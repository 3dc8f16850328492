//! The connections of the create path: a small pool that hands out and takes
//! back connections without a round trip.
//!
//! Why not sqlx's pool: sqlx 0.8 pings every connection it takes back,
//! unconditionally (`PoolConnection::return_to_pool` in sqlx-core 0.8.6; its
//! options can skip the ping on acquire, `test_before_acquire(false)`, but
//! not on release), so a create's two statements would cost four round trips
//! and four wakeups of a Postgres backend instead of two. deadpool-postgres
//! and bb8 pool tokio-postgres or their own managers, not a
//! `sqlx::PgConnection`, which the store's queries need.
//!
//! This pool returns a connection only when its last statement completed, so
//! it never needs to check one it takes back; a connection dropped
//! mid-statement (a cancelled request) is closed instead. A connection that
//! sat idle for a while is pinged before use, so one cut by a Postgres
//! restart is replaced, not failed on. Like any pool it also retires
//! connections past their lifetime, trims those idle too long
//! ([`FastPool::trim`], which the app calls periodically), closes everything
//! at shutdown ([`FastPool::close`]), and reports its size.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::HistogramVec;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How the pool behaves.
#[derive(Clone, Copy, Debug)]
pub struct FastPoolSettings {
    /// The most connections open at once.
    pub max: usize,
    /// How long an acquire waits for a free connection.
    pub acquire_timeout: Duration,
    /// A connection idle longer than this is pinged before use.
    pub check_after_idle: Duration,
    /// A connection idle longer than this is closed by [`FastPool::trim`].
    pub idle_timeout: Duration,
    /// A connection older than this is closed instead of reused.
    pub max_lifetime: Duration,
}

impl Default for FastPoolSettings {
    fn default() -> Self {
        Self {
            max: 16,
            acquire_timeout: Duration::from_secs(3),
            check_after_idle: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10 * 60),
            max_lifetime: Duration::from_secs(30 * 60),
        }
    }
}

/// An idle connection, with when it was opened and when it was last returned.
struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

/// The pool.
pub struct FastPool {
    options: PgConnectOptions,
    settings: FastPoolSettings,
    /// Most recently returned at the back: acquire takes from the back (warm
    /// connections first), trimming from the front.
    idle: Mutex<VecDeque<Idle>>,
    permits: Semaphore,
    acquire_seconds: Option<HistogramVec>,
}

impl std::fmt::Debug for FastPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPool").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl FastPool {
    /// A pool of connections made with `options`.
    pub fn new(options: PgConnectOptions, settings: FastPoolSettings) -> Self {
        Self {
            options,
            settings,
            idle: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(settings.max),
            acquire_seconds: None,
        }
    }

    /// Records every acquire's wait in `histogram`, labelled `ok` or `error`.
    pub fn with_acquire_histogram(mut self, histogram: HistogramVec) -> Self {
        self.acquire_seconds = Some(histogram);
        self
    }

    /// The most connections this pool opens.
    pub fn max(&self) -> usize {
        self.settings.max
    }

    /// Connections handed out now, and idle ones.
    pub fn usage(&self) -> (usize, usize) {
        let idle = self.lock_idle().len();
        (self.settings.max.saturating_sub(self.permits.available_permits()), idle)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection, waiting at most the acquire timeout for one to be free.
    pub async fn acquire(&self) -> Result<FastConnection<'_>, sqlx::Error> {
        let started = Instant::now();
        let result = self.acquire_inner().await;
        if let Some(h) = &self.acquire_seconds {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            h.with_label_values(&[outcome]).observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn acquire_inner(&self) -> Result<FastConnection<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.settings.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let next = self.lock_idle().pop_back();
            let Some(Idle { mut conn, opened, since }) = next else { break };
            if opened.elapsed() >= self.settings.max_lifetime {
                // Retired: a graceful close, off this request's path.
                tokio::spawn(async move { drop(conn.close().await) });
                continue;
            }
            if since.elapsed() < self.settings.check_after_idle || conn.ping().await.is_ok() {
                return Ok(FastConnection { conn: Some(conn), opened, pool: self, clean: false, _permit: permit });
            }
            // Cut while idle: drop it and try the next one.
        }
        let conn = self.options.connect().await?;
        Ok(FastConnection { conn: Some(conn), opened: Instant::now(), pool: self, clean: false, _permit: permit })
    }

    /// Closes the idle connections that sat idle past the idle timeout or
    /// lived past their lifetime; returns how many it closed.
    pub async fn trim(&self) -> usize {
        let expired: VecDeque<Idle> = {
            let mut idle = self.lock_idle();
            let (keep, expired): (VecDeque<Idle>, VecDeque<Idle>) = idle.drain(..).partition(|i| {
                i.since.elapsed() < self.settings.idle_timeout && i.opened.elapsed() < self.settings.max_lifetime
            });
            *idle = keep;
            expired
        };
        let closed = expired.len();
        for i in expired {
            drop(i.conn.close().await);
        }
        closed
    }

    /// Closes the pool: acquires fail from now on (`PoolClosed`), idle
    /// connections are closed gracefully, and connections in use are closed
    /// when they come back.
    pub async fn close(&self) {
        self.permits.close();
        let idle: Vec<Idle> = self.lock_idle().drain(..).collect();
        for i in idle {
            drop(i.conn.close().await);
        }
    }

    /// Whether [`FastPool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }
}

/// A connection handed out; back to the pool when dropped after
/// [`FastConnection::done`], closed otherwise.
pub struct FastConnection<'a> {
    conn: Option<PgConnection>,
    opened: Instant,
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
            && !self.pool.is_closed()
        {
            self.pool.lock_idle().push_back(Idle { conn, opened: self.opened, since: Instant::now() });
        }
        // Otherwise the connection is dropped: its socket closes, and its
        // backend ends (rolling back anything half done).
    }
}
