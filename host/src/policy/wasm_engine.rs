//! The WebAssembly engine: tenant policies as components of the
//! `reten:policy@0.1.0` worlds (`plugins/wit/v0.1`), run by wasmtime.
//!
//! A component may import nothing but the type-only interface
//! `reten:policy/types`; anything else is refused at load. Every call gets a
//! fresh store and instance from the pooling allocator, an epoch deadline,
//! a memory cap that traps on growth beyond it, and a cap on the bytes it may
//! hand back. Calls are async: a long-running policy yields to the executor
//! at every epoch tick, so it never stalls the other requests of its thread.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    UpdateDeadline,
};

use super::input::PreparedInput;
use super::{Candidate, FailureKind, Limits, PolicyFailure, PolicyKind};

/// Bindings of the two worlds; the attribute world reuses the criterion
/// world's types, so there is one Rust type per WIT type.
pub mod bindings {
    /// The `criterion` world.
    pub mod criterion {
        wasmtime::component::bindgen!({
            path: "../plugins/wit/v0.1",
            world: "criterion",
            exports: { default: async },
        });
    }

    /// The `attribute` world.
    pub mod attribute {
        wasmtime::component::bindgen!({
            path: "../plugins/wit/v0.1",
            world: "attribute",
            exports: { default: async },
            with: { "reten:policy/types": super::criterion::reten::policy::types },
        });
    }

    pub use criterion::reten::policy::types;
}

use bindings::types as wit;

/// The one interface a component may import: it holds only types.
pub const TYPES_INTERFACE: &str = "reten:policy/types@0.1.0";

/// How many policy calls may hold an instance at once: the size of the pool.
const POOL_SLOTS: u32 = 256;
/// How often the epoch advances: the granularity of deadlines and yields.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The shared engine, its epoch ticker and its pool.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<CallState>,
    slots: Semaphore,
    /// Where compiled components are kept across restarts, if anywhere.
    cache_dir: Option<PathBuf>,
    cache_hits: std::sync::atomic::AtomicU64,
}

impl WasmEngine {
    /// Builds the engine, without an on-disk cache.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::with_cache(None)
    }

    /// Builds the engine and starts its epoch ticker. With `cache_dir`,
    /// compiled components are kept there across restarts (see
    /// [`WasmEngine::compile`]); the folder is created private (0700).
    pub fn with_cache(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = &cache_dir {
            create_private_dir(dir)?;
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 2)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .total_stacks(POOL_SLOTS)
            .max_memory_size(Limits::CEILING.memory_bytes)
            // Reset the first pages of memories, tables and stacks with memset
            // rather than madvise: the syscall and its TLB shootdown cost more
            // than the policy itself. Guests built with a small stack (the SDK
            // uses 64 KiB) touch little beyond these 256 KiB.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(128 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            // Ends with the engine.
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        let linker = Linker::new(&engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            slots: Semaphore::new(POOL_SLOTS as usize),
            cache_dir,
            cache_hits: Default::default(),
        }))
    }

    /// Compiles a component, refuses any import beyond the contract, and
    /// checks that it exports `resolve` of the world `kind` wants.
    pub fn compile(self: &Arc<Self>, bytes: &[u8], kind: PolicyKind) -> Result<WasmPolicy, String> {
        if bytes.get(..8) == Some(b"\0asm\x01\0\0\0") {
            return Err("this is a core WebAssembly module, not a component; \
                        wrap it with `reten-componentize` (see plugins/README.md)"
                .into());
        }
        let component = self.component(bytes)?;
        check_imports(&self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot be instantiated: {}", root_cause(&e)))?;
        let world = match kind {
            PolicyKind::Criterion => World::Criterion(
                bindings::criterion::CriterionPre::new(pre)
                    .map_err(|e| format!("does not implement the criterion world: {}", root_cause(&e)))?,
            ),
            PolicyKind::Attribute => World::Attribute(
                bindings::attribute::AttributePre::new(pre)
                    .map_err(|e| format!("does not implement the attribute world: {}", root_cause(&e)))?,
            ),
        };
        Ok(WasmPolicy { engine: Arc::clone(self), world })
    }
}

impl WasmEngine {
    /// How many components were loaded from the on-disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Compiles the bytes, or loads what an earlier run compiled from them.
    ///
    /// A cached artifact is named after the sha256 of the component's bytes
    /// and this engine's compatibility hash (wasmtime version and settings),
    /// so a change of either compiles afresh.
    fn component(&self, bytes: &[u8]) -> Result<Component, String> {
        let compile =
            || Component::new(&self.engine, bytes).map_err(|e| format!("not a valid component: {}", root_cause(&e)));
        let Some(dir) = &self.cache_dir else { return compile() };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        let path = dir.join(format!("{}-{:016x}.cwasm", super::loader::sha256_hex(bytes), hasher.finish()));
        if path.is_file() {
            // SAFETY: `deserialize_file` runs the artifact's native code
            // unchecked, so it must come from this engine: only this process
            // writes the cache folder, which it created 0700, under a name
            // derived from the source bytes' sha256 and the engine's
            // compatibility hash. An artifact that fails to load is
            // recompiled and replaced.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &path) };
            match cached {
                Ok(component) => {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(component);
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "discarding a bad cached component"),
            }
        }
        let component = compile()?;
        if let Ok(artifact) = component.serialize() {
            let tmp = dir.join(format!(
                ".{}.tmp-{}",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                uuid::Uuid::new_v4()
            ));
            let written = std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(dir = %dir.display(), error = %e, "could not cache a compiled component");
            }
        }
        Ok(component)
    }
}

/// Creates a folder only this user can read or write.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Accepts only type imports and the type-only contract interface.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let mut refused = Vec::new();
    for (name, item) in ty.imports(engine) {
        let allowed = match &item.ty {
            ComponentItem::Type(_) => true,
            ComponentItem::ComponentInstance(instance) => {
                name == TYPES_INTERFACE && instance.exports(engine).all(|(_, e)| matches!(e.ty, ComponentItem::Type(_)))
            }
            _ => false,
        };
        if !allowed {
            refused.push(format!("`{name}`"));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "imports {}, which the host does not grant: a policy may import nothing but the types of {TYPES_INTERFACE} \
             (no filesystem, network, environment, clock or randomness)",
            refused.join(", ")
        ))
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

enum World {
    Criterion(bindings::criterion::CriterionPre<CallState>),
    Attribute(bindings::attribute::AttributePre<CallState>),
}

/// A compiled, pre-linked component.
pub struct WasmPolicy {
    engine: Arc<WasmEngine>,
    world: World,
}

/// The state of one call's store: its memory cap and what it hit.
pub struct CallState {
    memory_cap: usize,
    memory_cap_hit: Arc<AtomicBool>,
}

impl ResourceLimiter for CallState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_cap_hit.store(true, Ordering::Relaxed);
            // Trap at once rather than let the guest see a failed grow.
            wasmtime::bail!("memory cap of {} bytes reached (wanted {desired})", self.memory_cap);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One call's store, deadline and outcome flags.
struct Call {
    store: Store<CallState>,
    memory_cap_hit: Arc<AtomicBool>,
    deadline_hit: Arc<AtomicBool>,
    limits: Limits,
}

impl WasmPolicy {
    fn start(&self, limits: &Limits) -> Call {
        let memory_cap_hit = Arc::new(AtomicBool::new(false));
        let deadline_hit = Arc::new(AtomicBool::new(false));
        let state = CallState { memory_cap: limits.memory_bytes, memory_cap_hit: Arc::clone(&memory_cap_hit) };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        // Bounds what the host copies out of the guest (strings and lists in
        // the result), so a huge output is refused before it is allocated.
        store.set_hostcall_fuel(limits.max_output_bytes.saturating_mul(2));
        let deadline = Instant::now() + limits.deadline;
        let hit = Arc::clone(&deadline_hit);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                hit.store(true, Ordering::Relaxed);
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let the executor run other tasks, then carry on.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Call { store, memory_cap_hit, deadline_hit, limits: *limits }
    }

    /// Runs the component as a criterion.
    pub async fn resolve_criterion(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Vec<Candidate>, PolicyFailure> {
        let World::Criterion(pre) = &self.world else {
            return Err(PolicyFailure::new(FailureKind::Trap, "this component is not a criterion"));
        };
        let wit_input = input.wasm(config);
        let candidates = self
            .call(limits, async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_resolve(store, &wit_input).await
            })
            .await?;
        Ok(candidates.into_iter().map(|c| Candidate { commerce_user_id: c.commerce_user_id, note: c.note }).collect())
    }

    /// Runs the component as an attribute resolver.
    pub async fn resolve_attribute(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Result<Option<Value>, PolicyFailure> {
        let World::Attribute(pre) = &self.world else {
            return Err(PolicyFailure::new(FailureKind::Trap, "this component is not an attribute resolver"));
        };
        let wit_input = input.wasm(config);
        let text = self
            .call(limits, async |store| {
                let instance = pre.instantiate_async(&mut *store).await?;
                instance.call_resolve(store, &wit_input).await
            })
            .await?;
        let Some(text) = text else { return Ok(None) };
        if text.len() > limits.max_output_bytes {
            return Err(PolicyFailure::new(
                FailureKind::OutputTooLarge,
                format!("returned {} bytes of JSON; at most {} are allowed", text.len(), limits.max_output_bytes),
            ));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| PolicyFailure::new(FailureKind::BadOutput, format!("the value is not valid JSON: {e}")))
    }

    /// What every call of either world goes through: a pooled instance slot,
    /// a fresh store with the call's limits, and the translation of what went
    /// wrong (the policy's own error, a trap, the deadline, the memory cap).
    async fn call<T>(
        &self,
        limits: &Limits,
        run: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<Result<T, wit::PolicyError>>,
    ) -> Result<T, PolicyFailure> {
        let _slot = self.engine.slots.acquire().await.map_err(|_| shutting_down())?;
        let mut call = self.start(limits);
        match run(&mut call.store).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(policy_error(e)),
            Err(e) => Err(call.failure(&e)),
        }
    }
}

impl Call {
    /// Classifies a failed call: deadline, memory cap, output cap or trap.
    fn failure(&self, err: &wasmtime::Error) -> PolicyFailure {
        let text = format!("{err:#}");
        if self.deadline_hit.load(Ordering::Relaxed) || matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return PolicyFailure::new(
                FailureKind::Deadline,
                format!("stopped at its deadline of {} ms", self.limits.deadline.as_millis()),
            );
        }
        if self.memory_cap_hit.load(Ordering::Relaxed) {
            return PolicyFailure::new(
                FailureKind::Memory,
                format!("stopped at its memory cap of {} MiB", self.limits.memory_bytes >> 20),
            );
        }
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return PolicyFailure::new(
                FailureKind::OutputTooLarge,
                format!("its output exceeds {} bytes", self.limits.max_output_bytes),
            );
        }
        let detail = match err.downcast_ref::<Trap>() {
            Some(Trap::UnreachableCodeReached) => "trapped: unreachable code reached (a panic)".to_owned(),
            Some(trap) => format!("trapped: {trap}"),
            None => format!("failed: {text}"),
        };
        PolicyFailure::new(FailureKind::Trap, detail)
    }
}

fn shutting_down() -> PolicyFailure {
    PolicyFailure::new(FailureKind::Trap, "the Wasm engine is shutting down")
}

fn policy_error(e: wit::PolicyError) -> PolicyFailure {
    let kind = match e.kind {
        wit::ErrorKind::BadConfig => "bad config",
        wit::ErrorKind::BadInput => "bad input",
        wit::ErrorKind::Internal => "internal",
    };
    PolicyFailure::new(FailureKind::PolicyError, format!("{kind}: {}", e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist").join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run plugins/build.sh", path.display()))
    }

    #[test]
    fn a_second_engine_loads_the_compiled_component_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let bytes = plugin("test_pick_owner");
        let first = WasmEngine::with_cache(Some(cache.clone())).unwrap();
        first.compile(&bytes, PolicyKind::Criterion).unwrap();
        assert_eq!(first.cache_hits(), 0);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "one artifact written");
        let second = WasmEngine::with_cache(Some(cache.clone())).unwrap();
        second.compile(&bytes, PolicyKind::Criterion).unwrap();
        assert_eq!(second.cache_hits(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }

    #[test]
    fn a_corrupt_cached_artifact_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = plugin("test_pick_owner");
        WasmEngine::with_cache(Some(dir.path().to_owned())).unwrap().compile(&bytes, PolicyKind::Criterion).unwrap();
        let artifact = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&artifact, b"not an artifact").unwrap();
        let engine = WasmEngine::with_cache(Some(dir.path().to_owned())).unwrap();
        engine.compile(&bytes, PolicyKind::Criterion).unwrap();
        assert_eq!(engine.cache_hits(), 0);
        assert!(std::fs::read(&artifact).unwrap().len() > 1_000, "the artifact was rewritten");
    }
}
