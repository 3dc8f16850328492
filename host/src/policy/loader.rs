//! Reads one layer of the policies directory (`global/` or one tenant's
//! folder) from disk and compiles what changed.
//!
//! Invariant: a file that fails to read, compile or validate never replaces
//! the version that serves. The layer keeps the previous version of that
//! file (if there was one) and records the error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{self, Catalogue, ConfigError, ConfigFile};
use super::rhai_engine::RhaiEngine;
use super::wasm_engine::WasmEngine;
use super::{Compiled, EngineKind, Origin, Policy, PolicyKind};
use crate::domain::TenantId;

/// Which layer of the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Global,
    Tenant(TenantId),
}

impl Scope {
    /// The layer's folder, relative to the policies directory.
    pub fn rel_dir(self) -> PathBuf {
        match self {
            Scope::Global => PathBuf::from("global"),
            Scope::Tenant(id) => Path::new("tenants").join(id.to_string()),
        }
    }

    /// The layer's config file name.
    pub fn config_file(self) -> &'static str {
        match self {
            Scope::Global => "defaults.toml",
            Scope::Tenant(_) => "tenant.toml",
        }
    }

    fn origin(self) -> Origin {
        match self {
            Scope::Global => Origin::Global,
            Scope::Tenant(id) => Origin::Tenant(id),
        }
    }
}

/// The name of the global catalogue file.
pub const CATALOGUE_FILE: &str = "attribute-keys.toml";

/// A file that did not load, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadError {
    /// Relative to the policies directory.
    pub path: String,
    pub message: String,
    /// For Rhai and TOML: the line of the error (1-based).
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub line: Option<usize>,
    /// For Rhai and TOML: the column of the error (1-based).
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub column: Option<usize>,
    #[serde(with = "crate::domain::time::millis")]
    pub at: DateTime<Utc>,
}

/// A config file as loaded: its parsed content and its version.
#[derive(Clone, Debug)]
pub struct LoadedConfig<T> {
    pub value: T,
    pub version: String,
    pub loaded_at: DateTime<Utc>,
}

/// One layer, loaded.
#[derive(Debug)]
pub struct Layer {
    pub scope: Scope,
    /// `defaults.toml` or `tenant.toml`, if present and valid (or the last
    /// valid version).
    pub config: Option<LoadedConfig<ConfigFile>>,
    /// `attribute-keys.toml` (global layer only).
    pub catalogue: Option<LoadedConfig<Catalogue>>,
    /// Every policy, by kind and name.
    pub policies: BTreeMap<(PolicyKind, String), Arc<Policy>>,
    /// What failed in the last load of this layer.
    pub errors: Vec<LoadError>,
    /// The layer's set of files as loaded (config, policies and tests), by
    /// path relative to the layer's folder: what a revision records.
    pub manifest: super::set::Manifest,
}

impl Layer {
    /// An empty layer (a folder that does not exist).
    pub fn empty(scope: Scope) -> Self {
        Self {
            scope,
            config: None,
            catalogue: None,
            policies: BTreeMap::new(),
            errors: Vec::new(),
            manifest: Default::default(),
        }
    }

    /// The same serving content, reporting `errors`: what a reload keeps
    /// when the layer's new set does not load as a whole.
    pub fn with_errors(&self, errors: Vec<LoadError>) -> Self {
        Self {
            scope: self.scope,
            config: self.config.clone(),
            catalogue: self.catalogue.clone(),
            policies: self.policies.clone(),
            errors,
            manifest: self.manifest.clone(),
        }
    }

    /// What the layer serves, to tell a reload that changed something from
    /// one that did not: every policy and config version. Errors are not
    /// part of it: a reload that only failed serves the same, in the same
    /// generation.
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for ((kind, name), p) in &self.policies {
            let _ = write!(out, "{kind:?}/{name}/{:?}/{}/{};", p.engine, p.version, p.loaded_at.timestamp_micros());
        }
        if let Some(c) = &self.config {
            let _ = write!(out, "config/{};", c.version);
        }
        if let Some(c) = &self.catalogue {
            let _ = write!(out, "catalogue/{};", c.version);
        }
        out
    }

    /// The names of the layer's policies of `kind`.
    pub fn names(&self, kind: PolicyKind) -> impl Iterator<Item = &str> {
        self.policies.keys().filter(move |(k, _)| *k == kind).map(|(_, n)| n.as_str())
    }
}

/// Compiled policies by engine and sha256: identical bytes compile once,
/// whichever tenants hold them, even when tenants load side by side (the
/// second waits for the first's compile).
#[derive(Default)]
pub struct CompileCache {
    entries: Mutex<HashMap<CacheKey, Compiled>>,
    /// Compilations under way: a load of the same bytes waits on the cell.
    in_flight: Mutex<HashMap<CacheKey, Arc<InFlight>>>,
    /// Bytes that failed: not compiled again while they stay the same.
    failures: Mutex<HashMap<CacheKey, CompileFailure>>,
    compiles: AtomicU64,
}

impl CompileCache {
    /// How many compilations ran since start-up (cache hits excluded).
    pub fn compile_count(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    fn get(&self, key: &CacheKey) -> Option<Compiled> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    fn failure(&self, key: &CacheKey) -> Option<CompileFailure> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(key).cloned()
    }

    fn insert_failure(&self, key: CacheKey, failure: CompileFailure) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= 1_000 {
            failures.clear();
        }
        failures.insert(key, failure);
    }

    fn insert(&self, key: CacheKey, compiled: Compiled) {
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(key, compiled);
    }

    /// Drops entries no loaded policy uses any more.
    pub fn retain(&self, live: &BTreeSet<CacheKey>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| live.contains(k));
    }
}

/// A compilation under way: set once, by the load that runs it.
type InFlight = OnceLock<Result<Compiled, CompileFailure>>;

/// What identifies a compiled policy: the engine, the world it was checked
/// against, and the sha256 of its bytes.
pub type CacheKey = (EngineKind, PolicyKind, String);

/// The engines a loader compiles with.
#[derive(Clone)]
pub struct Engines {
    pub rhai: Arc<RhaiEngine>,
    pub wasm: Arc<WasmEngine>,
}

impl Engines {
    /// Builds both engines.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_wasm_cache(None)
    }

    /// Builds both engines, the Wasm one keeping compiled components in
    /// `cache_dir` across restarts.
    pub fn with_wasm_cache(cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        Ok(Self { rhai: Arc::new(RhaiEngine::new()), wasm: WasmEngine::with_cache(cache_dir)? })
    }

    /// Builds both engines, the Wasm one as `options` say.
    pub fn with_wasm(options: super::wasm_engine::WasmOptions) -> anyhow::Result<Self> {
        Ok(Self { rhai: Arc::new(RhaiEngine::new()), wasm: WasmEngine::with_options(options)? })
    }
}

/// What a policy file failed with, in the admin API's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileFailure {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl From<ConfigError> for CompileFailure {
    fn from(e: ConfigError) -> Self {
        Self { message: e.message, line: e.line, column: e.column }
    }
}

/// The sha256 of some bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles one policy's bytes (through the cache).
pub fn compile(
    engines: &Engines,
    cache: &CompileCache,
    engine: EngineKind,
    kind: PolicyKind,
    bytes: &[u8],
    sha: &str,
) -> Result<Compiled, CompileFailure> {
    let key = (engine, kind, sha.to_owned());
    if let Some(hit) = cache.get(&key) {
        return Ok(hit);
    }
    if let Some(failure) = cache.failure(&key) {
        return Err(failure);
    }
    let cell = {
        let mut in_flight = cache.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // A compile that ended since the look-up above has left its result
        // in the cache before leaving `in_flight`.
        if let Some(hit) = cache.get(&key) {
            return Ok(hit);
        }
        Arc::clone(in_flight.entry(key.clone()).or_default())
    };
    let mut first = false;
    let compiled = cell
        .get_or_init(|| {
            first = true;
            compile_uncached(engines, engine, kind, bytes)
        })
        .clone();
    if first {
        match &compiled {
            Ok(c) => cache.insert(key.clone(), c.clone()),
            Err(f) => cache.insert_failure(key.clone(), f.clone()),
        }
        cache.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    }
    compiled
}

fn compile_uncached(
    engines: &Engines,
    engine: EngineKind,
    kind: PolicyKind,
    bytes: &[u8],
) -> Result<Compiled, CompileFailure> {
    let compiled = match engine {
        EngineKind::Rhai => {
            let source = std::str::from_utf8(bytes).map_err(|e| CompileFailure {
                message: format!("a Rhai script must be UTF-8: {e}"),
                line: None,
                column: None,
            })?;
            let policy = engines.rhai.compile(source).map_err(|e| CompileFailure {
                message: e.message,
                line: e.line,
                column: e.column,
            })?;
            Compiled::Rhai(Arc::new(policy))
        }
        EngineKind::Wasm => {
            let policy = engines.wasm.compile(bytes, kind).map_err(|message| CompileFailure {
                message,
                line: None,
                column: None,
            })?;
            Compiled::Wasm(Arc::new(policy))
        }
    };
    Ok(compiled)
}

/// Everything a layer load needs besides the directory.
pub struct LoadContext<'a> {
    pub root: &'a Path,
    pub engines: &'a Engines,
    pub cache: &'a CompileCache,
    /// What the loaded policies' calls share: gates, breakers, metrics.
    pub calls: &'a Arc<super::CallContext>,
    /// The global layer, against which a tenant's config is checked.
    pub global: Option<&'a Layer>,
}

/// Loads one layer, reusing what `previous` holds for unchanged or broken files.
pub fn load_layer(ctx: &LoadContext<'_>, scope: Scope, previous: Option<&Layer>) -> Layer {
    let rel = scope.rel_dir();
    let dir = ctx.root.join(&rel);
    let mut layer = Layer::empty(scope);
    if !dir.is_dir() {
        return layer;
    }
    let now = Utc::now();
    let mut errors = Vec::new();

    for kind in [PolicyKind::Criterion, PolicyKind::Attribute] {
        let files = list_policy_files(&dir.join(kind.dir()), &rel.join(kind.dir()), &mut errors, now);
        for (name, entries) in files {
            let key = (kind, name.clone());
            let kept = previous.and_then(|p| p.policies.get(&key)).cloned();
            if entries.len() > 1 {
                let listed: Vec<String> = entries.iter().map(|(p, _)| display(p)).collect();
                errors.push(error_at(
                    &entries[0].0,
                    format!("{} define the same policy; keep one", listed.join(" and ")),
                    None,
                    now,
                ));
                if let Some(p) = kept {
                    layer.policies.insert(key, p);
                }
                continue;
            }
            let (rel_path, engine) = &entries[0];
            match load_policy(ctx, scope, kind, &name, *engine, rel_path, previous, now) {
                Ok(policy) => {
                    layer.policies.insert(key, policy);
                }
                Err(failure) => {
                    errors.push(error_at(rel_path, failure.message, Some((failure.line, failure.column)), now));
                    if let Some(p) = kept {
                        layer.policies.insert(key, p);
                    }
                }
            }
        }
    }

    if scope == Scope::Global {
        let rel_path = rel.join(CATALOGUE_FILE);
        // A catalogue that fails to parse keeps the previous one; a deleted
        // one is gone, as a deleted config is (the check of a candidate set
        // sees the same).
        layer.catalogue = match load_toml(ctx.root, &rel_path, config::parse_catalogue, &mut errors, now) {
            Some(loaded) => Some(loaded),
            None if ctx.root.join(&rel_path).exists() => previous.and_then(|p| p.catalogue.clone()),
            None => None,
        };
    }

    let rel_path = rel.join(scope.config_file());
    let parsed = load_toml(ctx.root, &rel_path, |t| config::parse_config(t, scope != Scope::Global), &mut errors, now);
    layer.config = match parsed {
        Some(loaded) => match check_config_references(&loaded.value, &layer, ctx.global) {
            Ok(()) => Some(loaded),
            Err(e) => {
                errors.push(error_at(&rel_path, e.message, Some((e.line, e.column)), now));
                previous.and_then(|p| p.config.clone())
            }
        },
        None if ctx.root.join(&rel_path).exists() => previous.and_then(|p| p.config.clone()),
        None => None,
    };

    // An error that persists keeps the time it was first seen.
    if let Some(prev) = previous {
        for e in &mut errors {
            if let Some(old) = prev.errors.iter().find(|o| o.path == e.path && o.message == e.message) {
                e.at = old.at;
            }
        }
    }
    layer.errors = errors;
    layer.manifest = super::set::manifest_of(&layer, &dir);
    layer
}

#[allow(clippy::too_many_arguments)]
fn load_policy(
    ctx: &LoadContext<'_>,
    scope: Scope,
    kind: PolicyKind,
    name: &str,
    engine: EngineKind,
    rel_path: &Path,
    previous: Option<&Layer>,
    now: DateTime<Utc>,
) -> Result<Arc<Policy>, CompileFailure> {
    let path = ctx.root.join(rel_path);
    let previous = previous.and_then(|p| p.policies.get(&(kind, name.to_owned()))).filter(|p| p.engine == engine);
    let stamp = FileStamp::of(&path);
    if let Some(prev) = previous
        && prev.stamp.is_some()
        && prev.stamp == stamp
    {
        // Same inode, size and (settled) modification time: not re-read.
        return Ok(Arc::clone(prev));
    }
    let bytes = fs::read(&path).map_err(|e| CompileFailure {
        message: format!("could not read the file: {e}"),
        line: None,
        column: None,
    })?;
    let sha = sha256_hex(&bytes);
    let stamp = stamp.filter(FileStamp::settled);
    if let Some(prev) = previous
        && prev.version == sha
    {
        if prev.stamp == stamp {
            return Ok(Arc::clone(prev));
        }
        return Ok(Arc::new(Policy { stamp, average_us: Default::default(), ..prev.duplicate() }));
    }
    let compiled = compile(ctx.engines, ctx.cache, engine, kind, &bytes, &sha)?;
    Ok(Arc::new(Policy {
        name: name.to_owned(),
        kind,
        engine,
        origin: scope.origin(),
        version: sha,
        path: rel_path.to_owned(),
        loaded_at: now,
        compiled,
        average_us: Default::default(),
        stamp,
        calls: Arc::clone(ctx.calls),
        meters: Default::default(),
    }))
}

/// What a file looked like when it was read: its inode, size and
/// modification time. Two reads with equal stamps read the same bytes — as
/// long as the modification time had settled (was at least a second old)
/// when the file was read, since a file system may keep one timestamp for
/// writes a few milliseconds apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: std::time::SystemTime,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        Some(Self { device, inode, len: meta.len(), modified: meta.modified().ok()? })
    }

    fn settled(&self) -> bool {
        self.modified.elapsed().is_ok_and(|age| age >= std::time::Duration::from_secs(1))
    }
}

/// The policy files of one kind folder, by policy name. More than one entry
/// for a name means the same policy exists in two engines.
fn list_policy_files(
    dir: &Path,
    rel: &Path,
    errors: &mut Vec<LoadError>,
    now: DateTime<Utc>,
) -> BTreeMap<String, Vec<(PathBuf, EngineKind)>> {
    let mut out: BTreeMap<String, Vec<(PathBuf, EngineKind)>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(parsed) = parse_policy_file_name(file_name) else {
            continue;
        };
        let rel_path = rel.join(file_name);
        // Follow symlinks: ConfigMap volumes are made of them.
        if !fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match parsed {
            Ok((name, engine)) => out.entry(name).or_default().push((rel_path, engine)),
            Err(message) => errors.push(error_at(&rel_path, message, None, now)),
        }
    }
    out
}

/// Splits `role_match.rhai` into its name and engine. `None` for files that
/// are not policies at all (hidden files, editor backups, temp files).
pub fn parse_policy_file_name(file_name: &str) -> Option<Result<(String, EngineKind), String>> {
    if file_name.starts_with('.') {
        return None;
    }
    let (stem, ext) = file_name.rsplit_once('.')?;
    let engine = EngineKind::from_extension(ext)?;
    if !config::is_policy_name(stem) {
        return Some(Err(format!("policy file names must be [a-z0-9_]+.{} (got '{file_name}')", engine.extension())));
    }
    Some(Ok((stem.to_owned(), engine)))
}

fn load_toml<T>(
    root: &Path,
    rel_path: &Path,
    parse: impl Fn(&str) -> Result<T, ConfigError>,
    errors: &mut Vec<LoadError>,
    now: DateTime<Utc>,
) -> Option<LoadedConfig<T>> {
    let path = root.join(rel_path);
    if !path.exists() {
        return None;
    }
    let result = fs::read(&path)
        .map_err(|e| ConfigError { message: format!("could not read the file: {e}"), line: None, column: None })
        .and_then(|bytes| {
            let text = String::from_utf8(bytes.clone()).map_err(|_| ConfigError {
                message: "the file is not UTF-8".into(),
                line: None,
                column: None,
            })?;
            parse(&text).map(|value| LoadedConfig { value, version: sha256_hex(&bytes), loaded_at: now })
        });
    match result {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            errors.push(error_at(rel_path, e.message, Some((e.line, e.column)), now));
            None
        }
    }
}

fn check_config_references(file: &ConfigFile, layer: &Layer, global: Option<&Layer>) -> Result<(), ConfigError> {
    let layers = global.into_iter().chain(std::iter::once(layer));
    let mut criteria = BTreeSet::new();
    let mut attribute_policies = BTreeSet::new();
    let mut catalogue = BTreeSet::new();
    for l in layers {
        criteria.extend(l.names(PolicyKind::Criterion).map(str::to_uppercase));
        attribute_policies.extend(l.names(PolicyKind::Attribute).map(str::to_owned));
        if let Some(c) = &l.catalogue {
            catalogue.extend(c.value.keys().cloned());
        }
    }
    catalogue.extend(file.attribute_keys.keys().cloned());
    config::check_references(file, &criteria, &catalogue, &attribute_policies)
}

fn error_at(
    rel_path: &Path,
    message: String,
    position: Option<(Option<usize>, Option<usize>)>,
    at: DateTime<Utc>,
) -> LoadError {
    let (line, column) = position.unwrap_or((None, None));
    LoadError { path: display(rel_path), message, line, column, at }
}

fn display(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/")
}
