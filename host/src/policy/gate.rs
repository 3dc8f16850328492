//! Fair share between tenants: each tenant runs at most a few policy calls at
//! once, so one tenant's slow policies cannot occupy every async worker while
//! other tenants' requests wait.
//!
//! Policy calls are short (tens of µs) when policies behave, so the gate
//! costs a well-behaved tenant almost nothing; a tenant whose calls run to
//! their deadline queues behind itself instead of in front of everyone.
//!
//! A breaker goes further: a policy that hit its deadline on each of its last
//! [`BREAKER_AFTER`] calls for a tenant is not run for [`BREAKER_OPEN`] — the
//! call fails at once with `CIRCUIT_OPEN`, which resolution treats like any
//! failure (the criterion is skipped, the attribute falls back). Then one
//! call runs again: a success closes the breaker, another deadline reopens
//! it. A new version of the policy starts closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::TenantId;

/// How many policy calls one tenant may run at once, by default: half the
/// cores, at least one.
pub fn default_per_tenant() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

static PER_TENANT: AtomicUsize = AtomicUsize::new(0);
static GATES: LazyLock<Mutex<HashMap<TenantId, Arc<Semaphore>>>> = LazyLock::new(Default::default);

/// Sets how many policy calls one tenant may run at once (0: the default).
pub fn set_per_tenant(calls: usize) {
    PER_TENANT.store(calls, Ordering::Relaxed);
}

fn per_tenant() -> usize {
    match PER_TENANT.load(Ordering::Relaxed) {
        0 => default_per_tenant(),
        n => n,
    }
}

/// Waits for one of the tenant's policy call slots.
pub async fn enter(tenant: TenantId) -> Option<OwnedSemaphorePermit> {
    let gate = {
        let mut gates = GATES.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(gates.entry(tenant).or_insert_with(|| Arc::new(Semaphore::new(per_tenant()))))
    };
    gate.acquire_owned().await.ok()
}

/// Consecutive deadlines that open the breaker, by default.
pub const BREAKER_AFTER: u32 = 5;

static BREAKER_AFTER_SETTING: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(BREAKER_AFTER);

/// Sets how many consecutive deadlines open a breaker; 0 switches breakers off.
pub fn set_breaker_after(deadlines: u32) {
    BREAKER_AFTER_SETTING.store(deadlines, Ordering::Relaxed);
}

/// How many consecutive deadlines open a breaker now (0: never).
pub fn breaker_after() -> u32 {
    BREAKER_AFTER_SETTING.load(Ordering::Relaxed)
}
/// How long an open breaker skips the policy.
pub const BREAKER_OPEN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Breaker {
    deadlines: u32,
    open_until: Option<Instant>,
}

static BREAKERS: LazyLock<Mutex<HashMap<(TenantId, String), Breaker>>> = LazyLock::new(Default::default);

/// How long the breaker of this tenant's policy version stays open, if it is.
pub fn breaker_open(tenant: TenantId, version: &str) -> Option<Duration> {
    let breakers = BREAKERS.lock().unwrap_or_else(|e| e.into_inner());
    let until = breakers.get(&(tenant, version.to_owned()))?.open_until?;
    until.checked_duration_since(Instant::now())
}

/// Records a call that ran: a deadline counts towards opening the breaker,
/// anything else closes it.
pub fn breaker_record(tenant: TenantId, version: &str, deadline: bool) {
    let mut breakers = BREAKERS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (tenant, version.to_owned());
    if !deadline {
        breakers.remove(&key);
        return;
    }
    let after = breaker_after();
    if after == 0 {
        return;
    }
    let breaker = breakers.entry(key).or_default();
    breaker.deadlines += 1;
    if breaker.deadlines >= after {
        breaker.open_until = Some(Instant::now() + BREAKER_OPEN);
    }
}
