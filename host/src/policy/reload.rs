//! How a reload reads the layers: a layer's set is valid only as a whole.
//!
//! Invariant: a layer that fails to load as a whole — a file that does not
//! compile, two engines for one policy, a config that names a policy that
//! does not exist — keeps the set that served before, all of it, and shows
//! the new errors; it never serves part of the new set. The same holds for
//! the global layer across tenants: a global change that would leave some
//! tenant's config naming a policy that no longer exists is not served.
//! Only a layer seen for the first time (at start-up, a new tenant folder)
//! serves what loads of it, since there is no earlier set to keep.
//!
//! A layer whose change-in-progress marker is fresh (see [`super::set`]) is
//! not read at all: another process is writing it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Registry;
use super::loader::{self, Layer, LoadError, Scope};
use super::registry::{RegistryState, SetServing};
use super::set;
use crate::domain::TenantId;

impl Registry {
    /// Reads the global layer and the given tenants' layers, keeping each
    /// layer's last valid set where the new one fails.
    pub(super) fn load_all_layers(
        &self,
        current: &RegistryState,
        tenant_ids: &[TenantId],
    ) -> (Arc<Layer>, BTreeMap<TenantId, Arc<Layer>>) {
        let global = self.load_global(current);
        let tenants = self.load_tenants(current, tenant_ids, &global);
        if global.manifest == current.global.manifest {
            return (global, tenants);
        }
        // The new global layer must not leave a tenant's references dangling.
        let broken = self.tenants_broken_by(current, &tenants);
        if broken.is_empty() {
            return (global, tenants);
        }
        let mut errors = global.errors.clone();
        errors.extend(broken);
        let kept = Arc::new(current.global.with_errors(errors));
        let tenants = self.load_tenants(current, tenant_ids, &kept);
        (kept, tenants)
    }

    fn load_global(&self, current: &RegistryState) -> Arc<Layer> {
        let dir = self.root.join(Scope::Global.rel_dir());
        if current.generation > 0 && set::is_being_changed(&dir) {
            return Arc::clone(&current.global);
        }
        let layer = loader::load_layer(&self.context(None), Scope::Global, Some(&current.global));
        Arc::new(keep_last_valid(layer, (current.generation > 0).then_some(&*current.global)))
    }

    fn load_tenants(
        &self,
        current: &RegistryState,
        tenant_ids: &[TenantId],
        global: &Layer,
    ) -> BTreeMap<TenantId, Arc<Layer>> {
        // Tenants load side by side, one plain thread per core: a cold start
        // over many tenants is their compilations, and a component compiles
        // mostly on one core. Plain threads, not rayon's: wasmtime compiles
        // a component's functions on rayon's pool, and a rayon worker that
        // waits for another tenant's compile of the same bytes could be the
        // one running it (see `CompileCache`).
        let threads = std::thread::available_parallelism().map_or(1, usize::from).min(tenant_ids.len());
        if threads <= 1 {
            return tenant_ids.iter().filter_map(|id| Some((*id, self.load_tenant(current, *id, global)?))).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let loaded = std::sync::Mutex::new(BTreeMap::new());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while let Some(id) = tenant_ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Some(layer) = self.load_tenant(current, *id, global) {
                            loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(*id, layer);
                        }
                    }
                });
            }
        });
        loaded.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// A tenant's layer as it should serve, or `None` when its folder is gone.
    pub(super) fn load_tenant(&self, current: &RegistryState, id: TenantId, global: &Layer) -> Option<Arc<Layer>> {
        let scope = Scope::Tenant(id);
        let dir = self.root.join(scope.rel_dir());
        let previous = current.tenants.get(&id);
        if set::is_being_changed(&dir) {
            // What served before (nothing, for a folder being created).
            return previous.cloned();
        }
        if !dir.is_dir() {
            return None;
        }
        let layer = loader::load_layer(&self.context(Some(global)), scope, previous.map(|l| &**l));
        Some(Arc::new(keep_last_valid(layer, previous.map(|l| &**l))))
    }

    /// Logs and counts the errors `state` has that `current` had not;
    /// whether there were any.
    pub(super) fn report_new_errors(&self, current: &RegistryState, state: &RegistryState) -> bool {
        let known: BTreeSet<(&str, &str)> = current.errors().map(|e| (e.path.as_str(), e.message.as_str())).collect();
        let mut any = false;
        for error in state.errors() {
            if !known.contains(&(error.path.as_str(), error.message.as_str())) {
                any = true;
                self.load_errors.fetch_add(1, Ordering::Relaxed);
                let layer = if error.path.starts_with("global/") { "global" } else { "tenant" };
                self.options.calls.metrics.load_errors.with_label_values(&[layer]).inc();
                tracing::warn!(path = %error.path, line = ?error.line, column = ?error.column, "policy load error: {}", error.message);
            }
        }
        any
    }

    /// The errors of tenants that fail against a new global layer but loaded
    /// against the serving one: the new global layer broke them.
    fn tenants_broken_by(&self, current: &RegistryState, tenants: &BTreeMap<TenantId, Arc<Layer>>) -> Vec<LoadError> {
        let ctx = self.context(Some(&current.global));
        let mut out = Vec::new();
        for (id, layer) in tenants.iter().filter(|(_, l)| !l.errors.is_empty()) {
            let previous = current.tenants.get(id).map(|l| &**l);
            if loader::load_layer(&ctx, Scope::Tenant(*id), previous).errors.is_empty() {
                out.extend(layer.errors.iter().map(|e| LoadError {
                    message: format!("{} (after the change to global/, which therefore does not serve)", e.message),
                    ..e.clone()
                }));
            }
        }
        out
    }
}

/// The layer to serve: the new one if it loaded whole (or there is nothing
/// to keep), else the previous one reporting the new errors.
fn keep_last_valid(layer: Layer, previous: Option<&Layer>) -> Layer {
    match previous {
        Some(prev) if !layer.errors.is_empty() => prev.with_errors(layer.errors),
        _ => layer,
    }
}

/// The layers whose set changed and loaded whole between two states, and
/// the tenants whose folder went away (with an empty set).
pub(super) fn changed_sets(current: &RegistryState, new: &RegistryState) -> Vec<SetServing> {
    let mut out = Vec::new();
    if new.global.errors.is_empty() && new.global.manifest != current.global.manifest {
        out.push(SetServing { scope: Scope::Global, manifest: new.global.manifest.clone() });
    }
    for (id, layer) in &new.tenants {
        let same = |old: &Arc<Layer>| Arc::ptr_eq(old, layer) || old.manifest == layer.manifest;
        if layer.errors.is_empty() && current.tenants.get(id).is_none_or(|old| !same(old)) {
            out.push(SetServing { scope: Scope::Tenant(*id), manifest: layer.manifest.clone() });
        }
    }
    for id in current.tenants.keys().filter(|id| !new.tenants.contains_key(id)) {
        out.push(SetServing { scope: Scope::Tenant(*id), manifest: Default::default() });
    }
    out
}
