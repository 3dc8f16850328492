//! The registry of loaded policies: one atomically swapped state, from which
//! each request takes its tenant's snapshot.
//!
//! Invariant: readers never wait. A reload builds a whole new state off to
//! the side and publishes it with one pointer swap; a request that already
//! holds a snapshot finishes on it.
//!
//! Invariant: the generation counts what serves. A reload that changes no
//! version (nothing changed, or the new files failed and the last valid set
//! of each layer keeps serving, see [`super::reload`]) keeps the generation;
//! its errors are reported in the state and counted apart, and every reload
//! is counted on [`Registry::subscribe_reloads`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use chrono::Utc;
use tokio::sync::{broadcast, watch};

use super::loader::{CompileCache, Engines, Layer, LoadContext, LoadError, Scope};
use super::set::Manifest;
use super::snapshot::{ConfigSource, TenantSnapshot};
use super::{Limits, PolicyKind};
use crate::domain::TenantId;

/// The published state: every layer, and every tenant's snapshot.
#[derive(Debug)]
pub struct RegistryState {
    /// Bumped by every reload that published something.
    pub generation: u64,
    pub global: Arc<Layer>,
    pub tenants: BTreeMap<TenantId, Arc<Layer>>,
    /// Problems with the directory itself (a folder that is not a tenant id).
    pub folder_errors: Vec<LoadError>,
    snapshots: HashMap<TenantId, Arc<TenantSnapshot>>,
    /// The snapshot of every tenant without a folder of its own.
    global_snapshot: Arc<TenantSnapshot>,
}

impl RegistryState {
    /// The tenant's snapshot (the global one when it has no folder).
    pub fn snapshot(&self, tenant: TenantId) -> Arc<TenantSnapshot> {
        self.snapshots.get(&tenant).unwrap_or(&self.global_snapshot).clone()
    }

    /// A layer: the global one, or a tenant's if it has a folder.
    pub fn layer(&self, scope: Scope) -> Option<&Arc<Layer>> {
        match scope {
            Scope::Global => Some(&self.global),
            Scope::Tenant(id) => self.tenants.get(&id),
        }
    }

    /// Every load error, global first.
    pub fn errors(&self) -> impl Iterator<Item = &LoadError> {
        self.folder_errors
            .iter()
            .chain(self.global.errors.iter())
            .chain(self.tenants.values().flat_map(|l| l.errors.iter()))
    }
}

/// Settings of the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// The platform's default limits, before `defaults.toml` and `tenant.toml`.
    pub limits: Limits,
    /// Where compiled Wasm components are kept across restarts, if anywhere.
    pub wasm_cache_dir: Option<PathBuf>,
    /// Serve new Wasm components on Winch's code while Cranelift compiles
    /// them in the background (see [`super::wasm_engine`]).
    pub wasm_baseline_tier: bool,
    /// With the baseline tier: the start-up's load checks Wasm components
    /// the compile cache does not hold without compiling them, so the
    /// registry is ready once its folders are read; each compiles on its
    /// first call or on the background compiler (see
    /// [`super::wasm_engine::WasmEngine::defer_compiles`]). Later loads
    /// always compile before they serve.
    pub wasm_compile_on_first_use: bool,
    /// What every policy call shares: the per-tenant gates and breakers, and
    /// the metrics (the app's own, also in its state).
    pub calls: Arc<super::CallContext>,
}

/// A layer whose set of files changed and loaded whole: a set that started
/// serving (an empty manifest when a tenant's folder went away).
#[derive(Clone, Debug)]
pub struct SetServing {
    /// The layer.
    pub scope: Scope,
    /// Its whole set, as it serves now.
    pub manifest: Manifest,
}

/// How many set changes a slow subscriber may fall behind before it is told
/// it lagged (and re-reads the state instead).
const SET_EVENTS: usize = 256;

/// The policy registry.
pub struct Registry {
    pub(super) root: PathBuf,
    pub(super) engines: Engines,
    pub(super) cache: CompileCache,
    pub(super) options: RegistryOptions,
    pub(super) state: ArcSwap<RegistryState>,
    /// Serialises reloads (and writes through [`Registry::apply`]); readers
    /// never take it.
    pub(super) reload_lock: Mutex<()>,
    generation_tx: watch::Sender<u64>,
    /// Counts every reload, whether it published or not.
    reloads_tx: watch::Sender<u64>,
    sets_tx: broadcast::Sender<SetServing>,
    pub(super) load_errors: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads the whole policies directory. Fails only if the directory
    /// itself is missing; a broken file is recorded and skipped.
    pub fn load(root: &Path, options: RegistryOptions) -> anyhow::Result<Self> {
        let root = fs::canonicalize(root)
            .with_context(|| format!("the policies directory {} does not exist", root.display()))?;
        let engines = Engines::with_wasm(super::wasm_engine::WasmOptions {
            cache_dir: options.wasm_cache_dir.clone(),
            baseline_tier: options.wasm_baseline_tier,
            unmetered: false,
        })?;
        let cache = CompileCache::default();
        let empty = Arc::new(Layer::empty(Scope::Global));
        let state = build_state(0, Arc::clone(&empty), BTreeMap::new(), Vec::new(), &options.limits, None);
        let registry = Self {
            root,
            engines,
            cache,
            options,
            state: ArcSwap::from_pointee(state),
            reload_lock: Mutex::new(()),
            generation_tx: watch::channel(0).0,
            reloads_tx: watch::channel(0).0,
            sets_tx: broadcast::channel(SET_EVENTS).0,
            load_errors: AtomicU64::new(0),
        };
        let guard = registry.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Winch first on every core; Cranelift's background work after.
        registry.engines.wasm.hold_background(true);
        registry.engines.wasm.defer_compiles(registry.options.wasm_compile_on_first_use);
        let (global, tenants, folder_errors) = registry.read_all(&registry.state.load_full());
        registry.engines.wasm.defer_compiles(false);
        registry.publish(&registry.state.load_full(), global, tenants, folder_errors, true);
        registry.engines.wasm.hold_background(false);
        drop(guard);
        Ok(registry)
    }

    /// The policies directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What every policy call shares: gates, breakers and the app's metrics.
    pub fn calls(&self) -> &Arc<super::CallContext> {
        &self.options.calls
    }

    /// The tenant's current snapshot.
    pub fn snapshot(&self, tenant: TenantId) -> Arc<TenantSnapshot> {
        self.state.load().snapshot(tenant)
    }

    /// The current state, for listing.
    pub fn state(&self) -> Arc<RegistryState> {
        self.state.load_full()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        *self.generation_tx.borrow()
    }

    /// A receiver that sees every new generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// A receiver that sees every reload end, including those that changed
    /// nothing or failed: what to wait on for an error to show.
    pub fn subscribe_reloads(&self) -> watch::Receiver<u64> {
        self.reloads_tx.subscribe()
    }

    /// A receiver of every layer set that starts serving.
    pub fn subscribe_sets(&self) -> broadcast::Receiver<SetServing> {
        self.sets_tx.subscribe()
    }

    /// The Wasm engine: its compile cache and its tier promotions.
    pub fn wasm_engine(&self) -> &Arc<super::wasm_engine::WasmEngine> {
        &self.engines.wasm
    }

    /// How many compilations ran since start-up.
    pub fn compile_count(&self) -> u64 {
        self.cache.compile_count()
    }

    /// Re-reads every layer from disk. Blocking: compiles on this thread.
    pub fn reload_all(&self) -> u64 {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_all_locked()
    }

    /// [`Registry::reload_all`], for a caller that holds the reload lock.
    pub(super) fn reload_all_locked(&self) -> u64 {
        let current = self.state.load_full();
        let (global, tenants, folder_errors) = self.read_all(&current);
        self.publish(&current, global, tenants, folder_errors, false)
    }

    fn read_all(&self, current: &RegistryState) -> (Arc<Layer>, BTreeMap<TenantId, Arc<Layer>>, Vec<LoadError>) {
        let (tenant_ids, folder_errors) = scan_tenant_folders(&self.root);
        let (global, tenants) = self.load_all_layers(current, &tenant_ids);
        (global, tenants, folder_errors)
    }

    /// Re-reads the given layers from disk, keeping the others as they are.
    /// Blocking: compiles on this thread.
    pub fn reload(&self, scopes: &BTreeSet<Scope>) -> u64 {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_locked(scopes)
    }

    /// [`Registry::reload`], for a caller that holds the reload lock.
    pub(super) fn reload_locked(&self, scopes: &BTreeSet<Scope>) -> u64 {
        if scopes.contains(&Scope::Global) {
            return self.reload_all_locked();
        }
        let current = self.state.load_full();
        // A folder that is not a tenant id only shows in a full reload (its
        // events reload everything): the tenants' own reloads keep the list.
        let folder_errors = current.folder_errors.clone();
        let mut tenants = current.tenants.clone();
        for scope in scopes {
            let Scope::Tenant(id) = *scope else { continue };
            match self.load_tenant(&current, id, &current.global) {
                Some(layer) => tenants.insert(id, layer),
                None => tenants.remove(&id),
            };
        }
        self.publish(&current, Arc::clone(&current.global), tenants, folder_errors, false)
    }

    pub(super) fn context<'a>(&'a self, global: Option<&'a Layer>) -> LoadContext<'a> {
        LoadContext { root: &self.root, engines: &self.engines, cache: &self.cache, calls: &self.options.calls, global }
    }

    fn publish(
        &self,
        current: &RegistryState,
        global: Arc<Layer>,
        tenants: BTreeMap<TenantId, Arc<Layer>>,
        folder_errors: Vec<LoadError>,
        force: bool,
    ) -> u64 {
        // Nothing changed for readers unless a version did: same versions,
        // same generation. The state is still replaced, to show this read's
        // errors and keep what it learnt about the files (their stamps), so
        // the next rescan can skip reading them.
        let changed = force || serves_differently(current, &global, &tenants);
        let generation = if changed { current.generation + 1 } else { current.generation };
        let state = build_state(generation, global, tenants, folder_errors, &self.options.limits, Some(current));
        let failed = self.report_new_errors(current, &state);
        let outcome = match (changed, failed) {
            (true, _) => "published",
            (false, true) => "failed",
            (false, false) => "unchanged",
        };
        self.options.calls.metrics.reloads.with_label_values(&[outcome]).inc();
        if changed {
            let live: BTreeSet<_> = std::iter::once(&state.global)
                .chain(state.tenants.values())
                .flat_map(|l| l.policies.values())
                .map(|p| (p.engine, p.kind, p.version.clone()))
                .collect();
            self.cache.retain(&live);
        }
        let sets = super::reload::changed_sets(current, &state);
        self.state.store(Arc::new(state));
        if changed {
            self.generation_tx.send_replace(generation);
            tracing::info!(generation, "policies reloaded");
        }
        for set in sets {
            // No subscriber (a test, a CLI) is fine: nobody records.
            let _ = self.sets_tx.send(set);
        }
        self.reloads_tx.send_modify(|n| *n += 1);
        generation
    }

    /// How many load errors were recorded since start-up (each distinct
    /// error once, however many reloads see it).
    pub fn load_error_count(&self) -> u64 {
        self.load_errors.load(Ordering::Relaxed)
    }
}

/// Whether a new set of layers serves a version the current state does
/// not. A layer the reload kept (the same `Arc`) is not compared again: with
/// a thousand tenants, a reload of one compares one.
fn serves_differently(current: &RegistryState, global: &Arc<Layer>, tenants: &BTreeMap<TenantId, Arc<Layer>>) -> bool {
    let same = |a: &Arc<Layer>, b: &Arc<Layer>| Arc::ptr_eq(a, b) || a.fingerprint() == b.fingerprint();
    !same(&current.global, global)
        || current.tenants.len() != tenants.len()
        || tenants.iter().any(|(id, layer)| current.tenants.get(id).is_none_or(|old| !same(old, layer)))
}

/// The tenant folders under `tenants/`, and the folders that are not tenant ids.
fn scan_tenant_folders(root: &Path) -> (Vec<TenantId>, Vec<LoadError>) {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    let Ok(entries) = fs::read_dir(root.join("tenants")) else {
        return (ids, errors);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        match TenantId::parse(&name) {
            Ok(id) => ids.push(id),
            Err(_) => errors.push(LoadError {
                path: format!("tenants/{name}"),
                message: "a tenant folder must be named after the tenant's id (a UUID)".into(),
                line: None,
                column: None,
                at: Utc::now(),
            }),
        }
    }
    ids.sort();
    (ids, errors)
}

/// The state to publish. A tenant whose layer and global layer are the
/// ones `previous` served keeps its snapshot (built in an earlier
/// generation, and identical): a reload of one tenant merges one.
fn build_state(
    generation: u64,
    global: Arc<Layer>,
    tenants: BTreeMap<TenantId, Arc<Layer>>,
    folder_errors: Vec<LoadError>,
    base_limits: &Limits,
    previous: Option<&RegistryState>,
) -> RegistryState {
    let kept = previous.filter(|p| Arc::ptr_eq(&p.global, &global));
    let global_snapshot = match kept {
        Some(p) => Arc::clone(&p.global_snapshot),
        None => Arc::new(merge(generation, &global, None, base_limits)),
    };
    let snapshots = tenants
        .iter()
        .map(|(id, layer)| {
            let same = kept.filter(|p| p.tenants.get(id).is_some_and(|old| Arc::ptr_eq(old, layer)));
            let snapshot = same
                .and_then(|p| p.snapshots.get(id))
                .map_or_else(|| Arc::new(merge(generation, &global, Some(layer), base_limits)), Arc::clone);
            (*id, snapshot)
        })
        .collect();
    RegistryState { generation, global, tenants, folder_errors, snapshots, global_snapshot }
}

/// The effective set of one tenant: the global layer, the tenant's on top.
pub(super) fn merge(generation: u64, global: &Layer, tenant: Option<&Layer>, base_limits: &Limits) -> TenantSnapshot {
    let global_cfg = global.config.as_ref().map(|c| &c.value);
    let tenant_cfg = tenant.and_then(|t| t.config.as_ref()).map(|c| &c.value);

    let (target_configs, target_configs_source) = match (
        tenant_cfg.and_then(|c| c.target_resolution.clone()),
        global_cfg.and_then(|c| c.target_resolution.clone()),
    ) {
        (Some(t), _) => (t, ConfigSource::Tenant),
        (None, Some(g)) => (g, ConfigSource::Global),
        (None, None) => (Vec::new(), ConfigSource::Implicit),
    };

    let mut catalogue = BTreeMap::new();
    if let Some(c) = &global.catalogue {
        catalogue.extend(c.value.iter().map(|(k, v)| (k.clone(), (v.clone(), ConfigSource::Global))));
    }
    if let Some(t) = tenant_cfg {
        catalogue.extend(t.attribute_keys.iter().map(|(k, v)| (k.clone(), (v.clone(), ConfigSource::Tenant))));
    }

    let mut attribute_settings = BTreeMap::new();
    if let Some(g) = global_cfg {
        attribute_settings.extend(g.attributes.iter().map(|(k, v)| (k.clone(), (v.clone(), ConfigSource::Global))));
    }
    if let Some(t) = tenant_cfg {
        attribute_settings.extend(t.attributes.iter().map(|(k, v)| (k.clone(), (v.clone(), ConfigSource::Tenant))));
    }

    let mut criteria = BTreeMap::new();
    let mut attribute_policies = BTreeMap::new();
    for layer in std::iter::once(global).chain(tenant) {
        for ((kind, name), policy) in &layer.policies {
            match kind {
                PolicyKind::Criterion => criteria.insert(name.to_uppercase(), Arc::clone(policy)),
                PolicyKind::Attribute => attribute_policies.insert(name.clone(), Arc::clone(policy)),
            };
        }
    }

    let mut task_result_types = super::config::default_task_result_types();
    for cfg in global_cfg.into_iter().chain(tenant_cfg) {
        task_result_types.extend(cfg.task_result_types.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    let mut limits = *base_limits;
    for cfg in global_cfg.into_iter().chain(tenant_cfg) {
        if let Some(o) = &cfg.limits {
            // Already checked when the file was parsed.
            limits = limits.with_overrides(o).unwrap_or(limits);
        }
    }

    TenantSnapshot {
        generation,
        target_configs,
        target_configs_source,
        catalogue,
        attribute_settings,
        criteria,
        attribute_policies,
        limits,
        task_result_types,
    }
}
