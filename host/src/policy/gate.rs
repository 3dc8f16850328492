//! Fair share between tenants: each tenant runs at most a few policy calls at
//! once, so one tenant's slow policies cannot occupy every async worker while
//! other tenants' requests wait.
//!
//! Policy calls are short (tens of µs) when policies behave, so the gate
//! costs a well-behaved tenant almost nothing; a tenant whose calls run to
//! their deadline queues behind itself instead of in front of everyone.
//!
//! A breaker goes further: a policy that hit its deadline on each of its last
//! [`GateSettings::breaker_after`] calls for a tenant is not run for
//! [`BREAKER_OPEN`] — the call fails at once with `CIRCUIT_OPEN`, which
//! resolution treats like any failure (the criterion is skipped, the
//! attribute falls back). Then one call runs again: a success closes the
//! breaker, another deadline reopens it. A new version of the policy starts
//! closed.
//!
//! The gates and breakers are values the application owns ([`Gates`], held
//! by the registry and by every policy it loads), not process globals, so two
//! apps in one process keep their own.
//!
//! Hand-written: the per-tenant slots are one `tokio` semaphore each in a
//! map; the breaker is a counter and a deadline per key. A circuit-breaker
//! crate (`failsafe`) would wrap the call in its own future and error types
//! and knows nothing of "only deadlines count", so it would cost more code
//! than it saves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::TenantId;

/// How many policy calls one tenant may run at once, by default: half the
/// cores, at least one.
pub fn default_per_tenant() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Consecutive deadlines that open the breaker, by default.
pub const BREAKER_AFTER: u32 = 5;

/// How long an open breaker skips the policy.
pub const BREAKER_OPEN: Duration = Duration::from_secs(5);

/// How the gates and breakers behave.
#[derive(Clone, Copy, Debug)]
pub struct GateSettings {
    /// Policy calls one tenant may run at once; 0: [`default_per_tenant`].
    pub per_tenant: usize,
    /// Consecutive deadlines that open a breaker; 0: breakers never open.
    pub breaker_after: u32,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self { per_tenant: 0, breaker_after: BREAKER_AFTER }
    }
}

/// Every tenant's call slots and every policy's breaker, for one app.
#[derive(Debug)]
pub struct Gates {
    settings: GateSettings,
    slots: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    breakers: Mutex<HashMap<(TenantId, String), Breaker>>,
    /// Whether `breakers` holds anything: while it does not (no call has
    /// hit its deadline), a call neither locks nor looks it up.
    any_breaker: AtomicBool,
}

impl Default for Gates {
    fn default() -> Self {
        Self::new(GateSettings::default())
    }
}

#[derive(Debug, Default)]
struct Breaker {
    deadlines: u32,
    open_until: Option<Instant>,
}

impl Gates {
    /// Gates with these settings, every breaker closed. The default share
    /// is worked out here, once: `available_parallelism` reads the cgroup
    /// files on every call, which cost a quarter of the server's CPU when it
    /// ran on every policy call.
    pub fn new(settings: GateSettings) -> Self {
        let per_tenant = match settings.per_tenant {
            0 => default_per_tenant(),
            n => n,
        };
        Self {
            settings: GateSettings { per_tenant, ..settings },
            slots: Mutex::default(),
            breakers: Mutex::default(),
            any_breaker: AtomicBool::new(false),
        }
    }

    /// How many consecutive deadlines open a breaker (0: never).
    pub fn breaker_after(&self) -> u32 {
        self.settings.breaker_after
    }

    /// Waits for one of the tenant's policy call slots.
    pub async fn enter(&self, tenant: TenantId) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let per_tenant = self.settings.per_tenant.max(1);
            Arc::clone(slots.entry(tenant).or_insert_with(|| Arc::new(Semaphore::new(per_tenant))))
        };
        gate.acquire_owned().await.ok()
    }

    /// How long the breaker of this tenant's policy version stays open, if it is.
    pub fn breaker_open(&self, tenant: TenantId, version: &str) -> Option<Duration> {
        if !self.any_breaker.load(Ordering::Acquire) {
            return None;
        }
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let until = breakers.get(&(tenant, version.to_owned()))?.open_until?;
        until.checked_duration_since(Instant::now())
    }

    /// Records a call that ran: a deadline counts towards opening the
    /// breaker, anything else closes it.
    pub fn breaker_record(&self, tenant: TenantId, version: &str, deadline: bool) {
        if !deadline && !self.any_breaker.load(Ordering::Acquire) {
            return;
        }
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant, version.to_owned());
        if !deadline {
            breakers.remove(&key);
            self.any_breaker.store(!breakers.is_empty(), Ordering::Release);
            return;
        }
        let after = self.settings.breaker_after;
        if after == 0 {
            return;
        }
        let breaker = breakers.entry(key).or_default();
        self.any_breaker.store(true, Ordering::Release);
        breaker.deadlines += 1;
        if breaker.deadlines >= after {
            breaker.open_until = Some(Instant::now() + BREAKER_OPEN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_after_the_configured_deadlines_and_a_success_closes_it() {
        let gates = Gates::new(GateSettings { per_tenant: 1, breaker_after: 2 });
        let tenant = TenantId::new();
        gates.breaker_record(tenant, "v1", true);
        assert!(gates.breaker_open(tenant, "v1").is_none(), "one deadline of two opens nothing");
        gates.breaker_record(tenant, "v1", true);
        assert!(gates.breaker_open(tenant, "v1").is_some());
        assert!(gates.breaker_open(tenant, "v2").is_none(), "a new version starts closed");
        assert!(gates.breaker_open(TenantId::new(), "v1").is_none(), "another tenant's breaker is its own");
        gates.breaker_record(tenant, "v1", false);
        assert!(gates.breaker_open(tenant, "v1").is_none());
    }

    #[test]
    fn the_default_share_is_worked_out_once_when_the_gates_are_built() {
        // Found by a profile: the default was worked out (cgroup files read)
        // on every policy call. Built once, the settings hold the number.
        let gates = Gates::new(GateSettings { per_tenant: 0, breaker_after: 5 });
        assert_eq!(gates.settings.per_tenant, default_per_tenant());
        assert!(gates.settings.per_tenant >= 1);
        assert_eq!(Gates::default().settings.per_tenant, default_per_tenant());
    }

    #[test]
    fn breakers_never_open_when_switched_off() {
        let gates = Gates::new(GateSettings { per_tenant: 1, breaker_after: 0 });
        let tenant = TenantId::new();
        for _ in 0..20 {
            gates.breaker_record(tenant, "v1", true);
        }
        assert!(gates.breaker_open(tenant, "v1").is_none());
    }

    #[test]
    fn two_gates_in_one_process_keep_their_own_state() {
        let (a, b) = (Gates::new(GateSettings { per_tenant: 1, breaker_after: 1 }), Gates::default());
        let tenant = TenantId::new();
        a.breaker_record(tenant, "v1", true);
        assert!(a.breaker_open(tenant, "v1").is_some());
        assert!(b.breaker_open(tenant, "v1").is_none());
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_share_of_call_slots() {
        let gates = Gates::new(GateSettings { per_tenant: 1, breaker_after: 5 });
        let (a, b) = (TenantId::new(), TenantId::new());
        let held = gates.enter(a).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(50), gates.enter(a)).await;
        assert!(second.is_err(), "a second call of the same tenant waits for the first");
        let other = tokio::time::timeout(Duration::from_secs(5), gates.enter(b)).await;
        assert!(matches!(other, Ok(Some(_))), "another tenant is not held up");
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), gates.enter(a)).await;
        assert!(matches!(again, Ok(Some(_))), "the slot is free once the first call ends");
    }
}
