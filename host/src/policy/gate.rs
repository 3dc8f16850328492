//! Fair share between tenants: each tenant runs at most a few policy calls at
//! once, so one tenant's slow policies cannot occupy every async worker while
//! other tenants' requests wait.
//!
//! Policy calls are short (tens of µs) when policies behave, so the gate
//! costs a well-behaved tenant almost nothing; a tenant whose calls run to
//! their deadline queues behind itself instead of in front of everyone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

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
