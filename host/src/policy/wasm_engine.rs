//! The WebAssembly engine: tenant policies as components of the
//! `reten:policy` worlds, run by wasmtime. Two versions serve side by side:
//! `0.1.0` (`plugins/wit/v0.1`, frozen) and `0.2.0` (`plugins/wit/v0.2`),
//! whose worlds also import `log`. Both export the same `resolve` over the
//! same types, so one set of typed bindings calls either; the linker supplies
//! `log` to the components that import it.
//!
//! A component may import nothing but the type-only interface
//! `reten:policy/types` and, from 0.2, `reten:policy/log`; anything else is
//! refused at load. Every call gets a fresh store and instance from the
//! pooling allocator, an epoch deadline, a memory cap that traps on growth
//! beyond it, a cap on the bytes it may hand back, and fuel: the fuel a call
//! burns is its deterministic cost, and a tenant's `limits.fuel` bounds it.
//! Calls are async: a long-running policy yields to the executor at every
//! epoch tick, so it never stalls the other requests of its thread.
//!
//! Tiers: wasmtime has no tiering of its own, so the host keeps two engines.
//! With a baseline tier, a new component serves on Winch's code (compiled in
//! milliseconds) while one background thread compiles it with Cranelift and
//! swaps the optimised code in, per component, in one atomic store. At
//! start-up a component is not even compiled before it serves: it is checked
//! (it validates, imports only what is granted, exports `resolve`) and
//! compiles with Winch on its first call or on the background thread,
//! whichever comes first ([`WasmEngine::defer_compiles`]), so a start with 500
//! new components is ready once its folders are read. The compile cache
//! ([`super::wasm_cache`]) keeps Cranelift's code, so a restart serves
//! optimised code at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex, ComponentType, HasSelf, Lift, Linker, Lower, TypedFunc};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, ResourceLimiter, Store,
    Strategy, Trap, UpdateDeadline,
};

use super::input::PreparedInput;
use super::logs::{LogBuf, LogLevel, LogLine};
use super::wasm_cache::ArtifactCache;
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

    /// Version 0.2: only its `log` import is bound here (its types are 0.1's,
    /// checked by structure, and its export is the same `resolve`).
    pub mod v0_2 {
        wasmtime::component::bindgen!({
            path: "../plugins/wit/v0.2",
            world: "criterion",
            exports: { default: async },
            with: { "reten:policy/types": super::criterion::reten::policy::types },
        });
    }
}

use bindings::types as wit;
use bindings::v0_2::reten::policy::log as wit_log;

/// The interfaces a component may import, and whether each holds only types.
const GRANTED: [(&str, bool); 3] =
    [("reten:policy/types@0.1.0", true), ("reten:policy/types@0.2.0", true), ("reten:policy/log@0.2.0", false)];

/// The only import of version 0.2 that is not types.
const LOG_INTERFACE: &str = "reten:policy/log@0.2.0";

/// How many policy calls may hold an instance at once: the size of the pool.
const POOL_SLOTS: u32 = 256;
/// How many unused slots of the pool stay warm (resident) for a component
/// whose calls may come back, per engine.
const WARM_SLOTS: u32 = 16;
/// How often the epoch advances: the granularity of deadlines and yields.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Which compiler made the code a Wasm call ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WasmTier {
    /// Winch, wasmtime's baseline compiler: compiles in a few milliseconds,
    /// runs slower; serves a new component until Cranelift's code replaces it.
    Baseline,
    /// Cranelift, wasmtime's optimising compiler.
    Optimized,
}

/// How the Wasm engine compiles.
#[derive(Clone, Debug, Default)]
pub struct WasmOptions {
    /// Where compiled components are kept across restarts, if anywhere.
    pub cache_dir: Option<PathBuf>,
    /// Serve a component Winch compiled while Cranelift compiles it in the
    /// background (else Cranelift compiles it before it serves).
    pub baseline_tier: bool,
    /// Compile without fuel metering: calls run on the epoch deadline alone,
    /// report no fuel and ignore `limits.fuel`. Only for measuring what
    /// metering costs (`benches/policy_calls.rs`); the host always meters.
    pub unmetered: bool,
}

/// One compiler's engine, with its own pool of instances.
struct Compiler {
    engine: Engine,
    metered: bool,
    linker: Linker<CallState>,
}

/// The shared engines, their epoch tickers and pools, the compile cache and
/// the background compiler.
pub struct WasmEngine {
    optimized: Compiler,
    /// Winch, when components serve on a baseline tier first.
    baseline: Option<Compiler>,
    slots: Semaphore,
    cache: Option<ArtifactCache>,
    cache_hits: std::sync::atomic::AtomicU64,
    /// One thread that compiles with Cranelift what serves on Winch, one
    /// component at a time, so it takes at most one core from the requests.
    background: Option<rayon::ThreadPool>,
    /// Counts the components whose optimised code replaced their baseline.
    promoted_tx: watch::Sender<u64>,
    /// While true, the background compiler waits: a start-up's Winch
    /// compilations get every core first.
    held: (std::sync::Mutex<bool>, std::sync::Condvar),
    /// While true (a start-up's load), a component the compile cache does
    /// not hold is checked but not compiled: it compiles on its first call
    /// or on the background compiler, whichever comes first.
    defer: AtomicBool,
    /// Compilations that calls wait for (a deferred policy's first call),
    /// at most one per core: a burst of first calls queues here rather than
    /// compiling on every blocking thread at once.
    compiling: Semaphore,
}

impl WasmEngine {
    /// Builds the engine, without an on-disk cache or a baseline tier.
    pub fn new() -> anyhow::Result<Arc<Self>> {
        Self::with_options(WasmOptions::default())
    }

    /// Builds the engine, without a baseline tier. With `cache_dir`,
    /// compiled components are kept there across restarts (see
    /// [`super::wasm_cache`]).
    pub fn with_cache(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        Self::with_options(WasmOptions { cache_dir, ..WasmOptions::default() })
    }

    /// Builds the engines and starts their epoch tickers.
    pub fn with_options(options: WasmOptions) -> anyhow::Result<Arc<Self>> {
        let metered = !options.unmetered;
        let optimized = Compiler::new(Strategy::Cranelift, metered)?;
        let baseline = options.baseline_tier.then(|| Compiler::new(Strategy::Winch, metered)).transpose()?;
        let cache = options.cache_dir.as_deref().map(|dir| ArtifactCache::open(dir, &optimized.engine)).transpose()?;
        let background = match &baseline {
            Some(_) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(|_| "wasm-optimize".into())
                    .build()
                    .map_err(|e| anyhow::anyhow!("failed to start the background Wasm compiler: {e}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            optimized,
            baseline,
            slots: Semaphore::new(POOL_SLOTS as usize),
            cache,
            cache_hits: Default::default(),
            background,
            promoted_tx: watch::channel(0).0,
            held: Default::default(),
            defer: AtomicBool::new(false),
            compiling: Semaphore::new(std::thread::available_parallelism().map_or(1, usize::from)),
        }))
    }

    /// Compiles a component, refuses any import beyond the contract, and
    /// checks that it exports `resolve` of the world `kind` wants.
    ///
    /// With a baseline tier, a component the compile cache does not hold
    /// serves on Winch's code at once, and Cranelift's code replaces it when
    /// the background compiler gets to it.
    pub fn compile(self: &Arc<Self>, bytes: &[u8], kind: PolicyKind) -> Result<WasmPolicy, String> {
        if bytes.get(..8) == Some(b"\0asm\x01\0\0\0") {
            return Err("this is a core WebAssembly module, not a component; \
                        `reten policy build <crate-dir>` builds and wraps a policy crate into one"
                .into());
        }
        if bytes.get(..4) != Some(b"\0asm") {
            return Err(format!(
                "not a WebAssembly file: it does not start with the bytes \\0asm ({} bytes read)",
                bytes.len()
            ));
        }
        let sha = super::loader::sha256_hex(bytes);
        let cached = self.cache.as_ref().and_then(|c| c.load(&self.optimized.engine, &sha));
        if let Some(component) = cached {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            let code = self.code(WasmTier::Optimized, &component, kind)?;
            return Ok(self.serving(Arc::new(ArcSwapOption::from_pointee(code)), None));
        }
        if self.baseline.is_some() && self.defer.load(Ordering::Relaxed) {
            return self.deferred(bytes, sha, kind);
        }
        let slot = Arc::new(ArcSwapOption::empty());
        self.compile_into(&slot, bytes, sha, kind)?;
        Ok(self.serving(slot, None))
    }

    /// Compiles bytes the compile cache lacks into `slot`: with a baseline
    /// tier, Winch's code, with Cranelift's queued to replace it; else (or
    /// where Winch cannot: tail calls, GC, exceptions) Cranelift's.
    fn compile_into(
        self: &Arc<Self>,
        slot: &Arc<ArcSwapOption<Code>>,
        bytes: &[u8],
        sha: String,
        kind: PolicyKind,
    ) -> Result<(), String> {
        if self.baseline.is_some() {
            match self.compile_tier(WasmTier::Baseline, bytes, &sha, kind) {
                Ok(code) => {
                    slot.store(Some(Arc::new(code)));
                    self.optimize_later(slot, bytes.to_vec(), sha, kind);
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, "Winch could not compile a component; Cranelift will"),
            }
        }
        slot.store(Some(Arc::new(self.compile_tier(WasmTier::Optimized, bytes, &sha, kind)?)));
        Ok(())
    }

    /// A policy serving the code in `slot`, or compiling into it later.
    fn serving(self: &Arc<Self>, code: Arc<ArcSwapOption<Code>>, pending: Option<Arc<Pending>>) -> WasmPolicy {
        WasmPolicy { engine: Arc::clone(self), code, pending }
    }

    /// Compiles on first use (`true`) or at once (`false`): while on, a
    /// component the compile cache does not hold is checked without
    /// compiling — it must validate, import nothing beyond the contract and
    /// export `resolve` — and compiles, with Winch, on its first call or on
    /// the background compiler, whichever comes first. Only with a baseline
    /// tier; the registry turns it on for the start-up's load, so that a
    /// new replica serves as soon as it has read its folders.
    pub fn defer_compiles(&self, on: bool) {
        self.defer.store(on, Ordering::Relaxed);
    }

    /// A policy whose code compiles later ([`WasmEngine::defer_compiles`]).
    fn deferred(self: &Arc<Self>, bytes: &[u8], sha: String, kind: PolicyKind) -> Result<WasmPolicy, String> {
        let wit_version = precheck(bytes)?;
        let source = Mutex::new(Some((bytes.to_vec(), sha)));
        let pending = Arc::new(Pending { source, kind, wit_version, done: OnceLock::new() });
        let policy = self.serving(Arc::new(ArcSwapOption::empty()), Some(Arc::clone(&pending)));
        if let Some(pool) = &self.background {
            let (engine, pending, slot) =
                (Arc::downgrade(self), Arc::downgrade(&pending), Arc::downgrade(&policy.code));
            pool.spawn_fifo(move || {
                let Some(engine) = engine.upgrade() else { return };
                engine.wait_while_held();
                if let (Some(pending), Some(slot)) = (pending.upgrade(), slot.upgrade()) {
                    let _ = engine.finish(&pending, &slot);
                }
            });
        }
        Ok(policy)
    }

    /// Compiles a deferred policy into `slot` once, as [`WasmEngine::compile`]
    /// would have; the first caller compiles, the others wait and share the
    /// outcome.
    fn finish(self: &Arc<Self>, pending: &Pending, slot: &Arc<ArcSwapOption<Code>>) -> Result<(), String> {
        pending
            .done
            .get_or_init(|| {
                let Some((bytes, sha)) = pending.source.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                    return Err("its bytes are gone".into());
                };
                self.compile_into(slot, &bytes, sha, pending.kind).inspect_err(|e| {
                    tracing::warn!(error = %e, "a Wasm policy checked at start-up failed to compile; its calls fail")
                })
            })
            .clone()
    }

    /// How many components were loaded from the on-disk cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Holds the background compiler (`true`) or lets it run (`false`): the
    /// registry holds it while it loads the whole directory at start-up.
    pub fn hold_background(&self, hold: bool) {
        let (lock, released) = &self.held;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = hold;
        released.notify_all();
    }

    fn wait_while_held(&self) {
        let (lock, released) = &self.held;
        let mut held = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A receiver of the count of components whose optimised code replaced
    /// their baseline code.
    pub fn subscribe_promotions(&self) -> watch::Receiver<u64> {
        self.promoted_tx.subscribe()
    }

    fn compiler(&self, tier: WasmTier) -> &Compiler {
        match tier {
            WasmTier::Baseline => self.baseline.as_ref().unwrap_or(&self.optimized),
            WasmTier::Optimized => &self.optimized,
        }
    }

    /// Compiles the bytes with one tier (keeping Cranelift's code in the
    /// compile cache) and checks the component.
    fn compile_tier(&self, tier: WasmTier, bytes: &[u8], sha: &str, kind: PolicyKind) -> Result<Code, String> {
        let component = Component::new(&self.compiler(tier).engine, bytes)
            .map_err(|e| format!("not a valid component: {}", root_cause(&e)))?;
        let code = self.code(tier, &component, kind)?;
        if let (WasmTier::Optimized, Some(cache)) = (tier, &self.cache) {
            cache.store(sha, &component);
        }
        Ok(code)
    }

    fn code(&self, tier: WasmTier, component: &Component, kind: PolicyKind) -> Result<Code, String> {
        let compiler = self.compiler(tier);
        check_imports(&compiler.engine, component)?;
        let pre = compiler
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("cannot be instantiated: {}", root_cause(&e)))?;
        let wit_version = if imports_log(&compiler.engine, component) { "0.2" } else { "0.1" };
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
        let resolve =
            component.get_export_index(None, "resolve").ok_or_else(|| "does not export `resolve`".to_owned())?;
        Ok(Code { tier, world, wit_version, resolve, signature_checked: AtomicBool::new(false) })
    }

    /// Queues the Cranelift compilation of a policy serving on Winch's code.
    /// The job holds the policy weakly: a policy replaced or dropped before
    /// its turn is not compiled.
    fn optimize_later(
        self: &Arc<Self>,
        slot: &Arc<ArcSwapOption<Code>>,
        bytes: Vec<u8>,
        sha: String,
        kind: PolicyKind,
    ) {
        let Some(pool) = &self.background else { return };
        let (engine, code) = (Arc::downgrade(self), Arc::downgrade(slot));
        pool.spawn_fifo(move || {
            let Some(engine) = engine.upgrade() else { return };
            engine.wait_while_held();
            let Some(code) = code.upgrade() else { return };
            match engine.compile_tier(WasmTier::Optimized, &bytes, &sha, kind) {
                Ok(optimized) => {
                    code.store(Some(Arc::new(optimized)));
                    engine.promoted_tx.send_modify(|n| *n += 1);
                }
                Err(e) => {
                    tracing::warn!(sha, error = %e, "Cranelift could not compile a component Winch did; it stays on Winch")
                }
            }
        });
    }
}

impl Compiler {
    fn new(strategy: Strategy, metered: bool) -> anyhow::Result<Self> {
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
            // Where the kernel can say which pages a call wrote (Linux 6.7+),
            // reset only those: most of the first 256 KiB is never touched.
            .pagemap_scan(Enabled::Auto)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(128 << 10)
            // Each slot a call ever used keeps the pages above resident. A
            // call takes its component's own warm slot when one is free, else
            // the least recently used warm slot of another component once
            // this many are warm and unused, rather than warming a new one:
            // with many components the pool stays at about the calls in
            // flight plus this many warm slots, not all 256 (tens of MiB).
            .max_unused_warm_slots(WARM_SLOTS);
        let mut config = Config::new();
        config
            .strategy(strategy)
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(metered)
            .max_wasm_stack(512 << 10)
            // No map from native code back to Wasm offsets: it is a third of
            // a component's compiled size (resident for every component), and
            // serves only the offsets in a trap's backtrace.
            .generate_address_map(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if strategy == Strategy::Cranelift {
            config.cranelift_opt_level(OptLevel::Speed);
        }
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
        let mut linker = Linker::new(&engine);
        wit_log::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)?;
        Ok(Self { engine, metered, linker })
    }
}

/// Accepts only type imports, the type-only contract interfaces and the
/// `log` interface of 0.2.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let mut refused = Vec::new();
    for (name, item) in ty.imports(engine) {
        let allowed = match &item.ty {
            ComponentItem::Type(_) => true,
            ComponentItem::ComponentInstance(instance) => GRANTED.iter().any(|(granted, types_only)| {
                name == *granted
                    && (!types_only || instance.exports(engine).all(|(_, e)| matches!(e.ty, ComponentItem::Type(_))))
            }),
            _ => false,
        };
        if !allowed {
            refused.push(name.to_owned());
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(refused_message(&refused))
}

/// Why a component that imports `refused` is refused, in one line.
fn refused_message(refused: &[String]) -> String {
    let wasi = refused.iter().filter(|name| name.starts_with("wasi:")).count();
    let listed = if refused.len() > 3 {
        format!("`{}`, `{}`, `{}` and {} more", refused[0], refused[1], refused[2], refused.len() - 3)
    } else {
        refused.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
    };
    let hint = if wasi > 0 {
        "; it was built for a WASI target: build it for wasm32-unknown-unknown (`reten policy build <crate-dir>` does)"
    } else {
        ""
    };
    format!(
        "imports {listed}, which the host does not grant: a policy may import nothing but reten:policy/types and \
         reten:policy/log (no filesystem, network, environment, clock or randomness){hint}"
    )
}

/// What a component is checked for before it compiles
/// ([`WasmEngine::defer_compiles`]), without compiling it: it validates, its
/// own imports are only those the host grants, and it exports `resolve`.
/// What needs compiled code — that the granted interfaces hold only types,
/// and `resolve`'s type — is checked when it compiles. Answers the contract
/// version it imports.
fn precheck(bytes: &[u8]) -> Result<&'static str, String> {
    let invalid =
        |e: wasmparser::BinaryReaderError| format!("not a valid component: {}", super::one_line(&e.to_string()));
    // Every feature on: what wasmtime refuses of it, its compilation will.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(bytes).map_err(invalid)?;
    let (mut depth, mut refused, mut logs, mut resolve) = (0usize, Vec::new(), false, false);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            // The component's own imports, not those of the modules and
            // components nested in it.
            wasmparser::Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let import = import.map_err(invalid)?;
                    let name = import.name.full_name();
                    match import.ty {
                        wasmparser::ComponentTypeRef::Type(_) => {}
                        wasmparser::ComponentTypeRef::Instance(_) if GRANTED.iter().any(|(g, _)| *g == name) => {
                            logs |= name == LOG_INTERFACE;
                        }
                        _ => refused.push(name.into_owned()),
                    }
                }
            }
            wasmparser::Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    resolve |= export.map_err(invalid)?.name.full_name() == "resolve";
                }
            }
            _ => {}
        }
    }
    if !refused.is_empty() {
        return Err(refused_message(&refused));
    }
    if !resolve {
        return Err("does not export `resolve`".into());
    }
    Ok(if logs { "0.2" } else { "0.1" })
}

/// Whether the component imports the `log` interface of 0.2.
fn imports_log(engine: &Engine, component: &Component) -> bool {
    component.component_type().imports(engine).any(|(name, _)| name == LOG_INTERFACE)
}

/// The error and its causes, on one line.
fn root_cause(e: &wasmtime::Error) -> String {
    super::one_line(&format!("{e:#}"))
}

enum World {
    Criterion(bindings::criterion::CriterionPre<CallState>),
    Attribute(bindings::attribute::AttributePre<CallState>),
}

impl World {
    fn instance_pre(&self) -> &wasmtime::component::InstancePre<CallState> {
        match self {
            World::Criterion(pre) => pre.instance_pre(),
            World::Attribute(pre) => pre.instance_pre(),
        }
    }
}

/// The policy input as a call lowers it into the guest: the request's WIT
/// record (converted once per request) and this call's `config`, borrowed,
/// so that no call copies the input on the host before copying it into the
/// guest. Its component type is `policy-input`'s: the bindings' check of
/// `resolve` at load ([`bindings::criterion::CriterionPre::new`]) and the
/// check of this type at each call ([`Func::typed`]) both hold.
#[derive(ComponentType, Lower)]
#[component(record)]
struct InputRef<'a> {
    #[component(name = "tenant-id")]
    tenant_id: &'a str,
    activity: &'a wit::Activity,
    commerce: &'a wit::Commerce,
    history: &'a [wit::HistoryEntry],
    config: &'a str,
}

/// One tier's code of a component, pre-linked against that tier's engine.
struct Code {
    tier: WasmTier,
    world: World,
    /// `0.1` or `0.2`: the contract version the component was built for.
    wit_version: &'static str,
    /// The `resolve` export.
    resolve: ComponentExportIndex,
    /// Whether a call checked `resolve`'s signature against [`InputRef`]
    /// and the world's result (the first call does).
    signature_checked: AtomicBool,
}

/// A compiled, pre-linked component. Its code is swapped in one store when
/// Cranelift's replaces Winch's: a call runs wholly on the code it loaded.
pub struct WasmPolicy {
    engine: Arc<WasmEngine>,
    /// Empty until a deferred policy compiles.
    code: Arc<ArcSwapOption<Code>>,
    /// What a deferred policy compiles from ([`WasmEngine::defer_compiles`]).
    pending: Option<Arc<Pending>>,
}

/// A policy checked at start-up whose code is not compiled yet.
struct Pending {
    /// Its bytes and their sha256, until it compiles.
    source: Mutex<Option<(Vec<u8>, String)>>,
    kind: PolicyKind,
    /// The contract version its imports name ([`precheck`]).
    wit_version: &'static str,
    /// The compilation's outcome, once.
    done: OnceLock<Result<(), String>>,
}

/// The state of one call's store: its memory cap and what it hit, and the
/// lines it logged.
pub struct CallState {
    memory_cap: usize,
    memory_cap_hit: Arc<AtomicBool>,
    logs: LogBuf,
}

impl wit_log::Host for CallState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        let level = match level {
            wit_log::Level::Trace => LogLevel::Trace,
            wit_log::Level::Debug => LogLevel::Debug,
            wit_log::Level::Info => LogLevel::Info,
            wit_log::Level::Warn => LogLevel::Warn,
            wit_log::Level::Error => LogLevel::Error,
        };
        self.logs.push(level, &message);
    }
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
    /// The fuel the call started with.
    fuel: u64,
}

/// One Wasm call's outcome, with the tier that ran, the fuel it burned and
/// the lines it logged.
pub struct WasmRun<T> {
    pub result: Result<T, PolicyFailure>,
    pub tier: WasmTier,
    pub fuel: Option<u64>,
    pub logs: Vec<LogLine>,
}

impl<T> WasmRun<T> {
    fn failed(failure: PolicyFailure, tier: WasmTier) -> Self {
        Self { result: Err(failure), tier, fuel: None, logs: Vec::new() }
    }

    fn map<U>(self, f: impl FnOnce(T) -> Result<U, PolicyFailure>) -> WasmRun<U> {
        WasmRun { result: self.result.and_then(f), tier: self.tier, fuel: self.fuel, logs: self.logs }
    }
}

impl WasmPolicy {
    /// The tier whose code the next call runs (a deferred policy compiles
    /// Winch's first).
    pub fn tier(&self) -> WasmTier {
        self.code.load().as_ref().map_or(WasmTier::Baseline, |c| c.tier)
    }

    /// Whether the code is compiled (a deferred policy's is not until its
    /// first call or the background compiler gets to it).
    pub fn is_compiled(&self) -> bool {
        self.code.load().is_some()
    }

    /// The code to run: a deferred policy's is compiled now (on the blocking
    /// pool), or awaited if the background compiler is at it.
    async fn loaded(&self) -> Result<Arc<Code>, PolicyFailure> {
        if let Some(code) = self.code.load_full() {
            return Ok(code);
        }
        let failed = |e: String| PolicyFailure::new(FailureKind::Trap, format!("the component failed to compile: {e}"));
        let Some(pending) = &self.pending else { return Err(failed("it has no code".into())) };
        let Ok(_compiling) = self.engine.compiling.acquire().await else { return Err(shutting_down()) };
        if let Some(code) = self.code.load_full() {
            // Compiled while this call waited for its turn.
            return Ok(code);
        }
        let (engine, pending, slot) = (Arc::clone(&self.engine), Arc::clone(pending), Arc::clone(&self.code));
        tokio::task::spawn_blocking(move || engine.finish(&pending, &slot))
            .await
            .unwrap_or_else(|_| Err("the compiler panicked".into()))
            .map_err(failed)?;
        self.code.load_full().ok_or_else(|| failed("it has no code".into()))
    }

    fn start(&self, tier: WasmTier, limits: &Limits) -> Call {
        let memory_cap_hit = Arc::new(AtomicBool::new(false));
        let deadline_hit = Arc::new(AtomicBool::new(false));
        let state = CallState {
            memory_cap: limits.memory_bytes,
            memory_cap_hit: Arc::clone(&memory_cap_hit),
            logs: LogBuf::default(),
        };
        let mut store = Store::new(&self.engine.compiler(tier).engine, state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        if self.engine.compiler(tier).metered {
            // Cannot fail on a metered engine.
            let _ = store.set_fuel(fuel);
        }
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
        Call { store, memory_cap_hit, deadline_hit, limits: *limits, fuel }
    }

    /// The contract version the component was built for: `0.1` or `0.2`.
    pub fn wit_version(&self) -> &'static str {
        match (&*self.code.load(), &self.pending) {
            (Some(code), _) => code.wit_version,
            (None, Some(pending)) => pending.wit_version,
            (None, None) => "0.1",
        }
    }

    /// Runs the component as a criterion.
    pub async fn resolve_criterion(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> WasmRun<Vec<Candidate>> {
        let code = match self.loaded().await {
            Ok(code) => code,
            Err(failure) => return WasmRun::failed(failure, WasmTier::Baseline),
        };
        let World::Criterion(_) = &code.world else {
            return WasmRun::failed(
                PolicyFailure::new(FailureKind::Trap, "this component is not a criterion"),
                code.tier,
            );
        };
        self.call::<Vec<wit::Candidate>>(&code, input, config, limits).await.map(|cs| {
            Ok(cs.into_iter().map(|c| Candidate { commerce_user_id: c.commerce_user_id, note: c.note }).collect())
        })
    }

    /// Runs the component as an attribute resolver.
    pub async fn resolve_attribute(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> WasmRun<Option<Value>> {
        let code = match self.loaded().await {
            Ok(code) => code,
            Err(failure) => return WasmRun::failed(failure, WasmTier::Baseline),
        };
        let World::Attribute(_) = &code.world else {
            let failure = PolicyFailure::new(FailureKind::Trap, "this component is not an attribute resolver");
            return WasmRun::failed(failure, code.tier);
        };
        self.call::<Option<String>>(&code, input, config, limits).await.map(|text| {
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
        })
    }

    /// What every call of either world goes through: a pooled instance slot,
    /// a fresh store with the call's limits, and the translation of what went
    /// wrong (the policy's own error, a trap, the deadline, the memory cap).
    async fn call<T>(
        &self,
        code: &Code,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> WasmRun<T>
    where
        T: Lift + Send + Sync + 'static,
    {
        let tier = code.tier;
        let Ok(_slot) = self.engine.slots.acquire().await else { return WasmRun::failed(shutting_down(), tier) };
        let base = input.wasm_base();
        let config = serde_json::to_string(config).unwrap_or_else(|_| "{}".into());
        let arg = InputRef {
            tenant_id: &base.tenant_id,
            activity: &base.activity,
            commerce: &base.commerce,
            history: &base.history,
            config: &config,
        };
        let mut call = self.start(tier, limits);
        let run = async |store: &mut Store<CallState>| -> wasmtime::Result<Result<T, wit::PolicyError>> {
            let instance = code.world.instance_pre().instantiate_async(&mut *store).await?;
            let resolve = instance
                .get_func(&mut *store, code.resolve)
                .ok_or_else(|| wasmtime::format_err!("the component does not export `resolve`"))?;
            let resolve = if code.signature_checked.load(Ordering::Relaxed) {
                // SAFETY: a call of this same code (the same component, so the
                // same types) checked this signature with `typed` before; a
                // code serves one world, so `T` is the same for every call.
                #[allow(unsafe_code)]
                unsafe {
                    TypedFunc::<(InputRef<'_>,), (Result<T, wit::PolicyError>,)>::new_unchecked(resolve)
                }
            } else {
                let typed = resolve.typed::<(InputRef<'_>,), (Result<T, wit::PolicyError>,)>(&*store)?;
                code.signature_checked.store(true, Ordering::Relaxed);
                typed
            };
            let (out,) = resolve.call_async(&mut *store, (arg,)).await?;
            Ok(out)
        };
        let result = match run(&mut call.store).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(policy_error(e)),
            Err(e) => Err(call.failure(&e)),
        };
        let fuel = call.store.get_fuel().ok().map(|left| call.fuel.saturating_sub(left));
        let logs = call.store.data_mut().logs.take();
        WasmRun { result, tier, fuel, logs }
    }
}

impl Call {
    /// Classifies a failed call: deadline, memory cap, output cap or trap.
    fn failure(&self, err: &wasmtime::Error) -> PolicyFailure {
        let text = format!("{err:#}");
        if matches!(err.downcast_ref::<Trap>(), Some(Trap::OutOfFuel)) {
            return PolicyFailure::new(
                FailureKind::BudgetExhausted,
                format!("used up its budget of {} fuel (limits.fuel)", self.limits.fuel.unwrap_or(self.fuel)),
            );
        }
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
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist").join(format!("{name}.wasm"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run plugins/build.sh", path.display()))
    }

    #[tokio::test]
    async fn a_component_serves_on_winch_then_on_cranelift_with_the_same_answers() {
        let engine = WasmEngine::with_options(WasmOptions { baseline_tier: true, ..WasmOptions::default() }).unwrap();
        let mut promoted = engine.subscribe_promotions();
        let policy = engine.compile(&plugin("test_pick_owner"), PolicyKind::Criterion).unwrap();
        assert_eq!(policy.tier(), WasmTier::Baseline);
        let input = crate::policy::tests::input_with_owner();
        let limits = Limits::default();
        let baseline = policy.resolve_criterion(&input, &Map::new(), &limits).await;
        assert_eq!(baseline.tier, WasmTier::Baseline);
        tokio::time::timeout(Duration::from_secs(120), promoted.wait_for(|n| *n >= 1))
            .await
            .expect("Cranelift's code replaced Winch's within the bound")
            .unwrap();
        let optimized = policy.resolve_criterion(&input, &Map::new(), &limits).await;
        assert_eq!(optimized.tier, WasmTier::Optimized);
        // Fuel is deterministic per tier; Winch and Cranelift count a few
        // percent apart (11,284 and 11,065 for this component).
        let (b, o) = (baseline.fuel.unwrap(), optimized.fuel.unwrap());
        assert!(b > 1_000 && o > 1_000 && b.abs_diff(o) * 10 < o, "fuel {b} (Winch) vs {o} (Cranelift)");
        assert_eq!(baseline.result.unwrap(), optimized.result.unwrap());
    }

    #[tokio::test]
    async fn a_deferred_component_compiles_on_its_first_call_and_answers_as_a_compiled_one() {
        let engine = WasmEngine::with_options(WasmOptions { baseline_tier: true, ..WasmOptions::default() }).unwrap();
        // The background compiler waits, so only the call can compile it.
        engine.hold_background(true);
        engine.defer_compiles(true);
        let deferred = engine.compile(&plugin("test_pick_owner"), PolicyKind::Criterion).unwrap();
        let logging = engine.compile(&plugin("test_log_v2"), PolicyKind::Criterion).unwrap();
        engine.defer_compiles(false);
        assert!(!deferred.is_compiled(), "checked, not compiled");
        assert_eq!((deferred.wit_version(), logging.wit_version()), ("0.1", "0.2"));
        let input = crate::policy::tests::input_with_owner();
        let run = deferred.resolve_criterion(&input, &Map::new(), &Limits::default()).await;
        assert!(deferred.is_compiled());
        assert_eq!(run.tier, WasmTier::Baseline);
        let compiled = engine.compile(&plugin("test_pick_owner"), PolicyKind::Criterion).unwrap();
        let expected = compiled.resolve_criterion(&input, &Map::new(), &Limits::default()).await;
        assert_eq!(run.result.unwrap(), expected.result.unwrap());
        assert_eq!(run.fuel, expected.fuel, "the same Winch code");
        engine.hold_background(false);
    }

    #[tokio::test]
    async fn the_background_compiler_compiles_a_deferred_component_without_a_call() {
        let engine = WasmEngine::with_options(WasmOptions { baseline_tier: true, ..WasmOptions::default() }).unwrap();
        let mut promoted = engine.subscribe_promotions();
        engine.defer_compiles(true);
        let deferred = engine.compile(&plugin("test_pick_owner"), PolicyKind::Criterion).unwrap();
        engine.defer_compiles(false);
        // Winch's code first, then Cranelift's replaces it: one promotion.
        tokio::time::timeout(Duration::from_secs(120), promoted.wait_for(|n| *n >= 1))
            .await
            .expect("compiled in the background within the bound")
            .unwrap();
        assert!(deferred.is_compiled());
        assert_eq!(deferred.tier(), WasmTier::Optimized);
    }

    #[test]
    fn a_deferred_component_is_still_refused_for_bad_bytes_a_forbidden_import_or_no_resolve() {
        let engine = WasmEngine::with_options(WasmOptions { baseline_tier: true, ..WasmOptions::default() }).unwrap();
        engine.defer_compiles(true);
        let refused = |bytes: &[u8]| engine.compile(bytes, PolicyKind::Criterion).err().expect("refused at load");
        let mut truncated = plugin("test_pick_owner");
        truncated.truncate(truncated.len() / 2);
        assert!(refused(&truncated).starts_with("not a valid component"), "{}", refused(&truncated));
        let clock = refused(&plugin("test_import_clock"));
        assert!(clock.contains("which the host does not grant") && clock.contains("wasm32-unknown-unknown"), "{clock}");
        // A component with nothing in it: valid, but no `resolve`.
        let empty = wat_component();
        assert_eq!(refused(&empty), "does not export `resolve`");
    }

    /// The smallest valid component: the preamble alone.
    fn wat_component() -> Vec<u8> {
        b"\0asm\x0d\0\x01\0".to_vec()
    }

    #[test]
    fn a_cached_component_serves_optimised_code_at_once_even_with_a_baseline_tier() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = plugin("test_pick_owner");
        WasmEngine::with_cache(Some(dir.path().to_owned())).unwrap().compile(&bytes, PolicyKind::Criterion).unwrap();
        let options =
            WasmOptions { cache_dir: Some(dir.path().to_owned()), baseline_tier: true, ..WasmOptions::default() };
        let engine = WasmEngine::with_options(options).unwrap();
        let policy = engine.compile(&bytes, PolicyKind::Criterion).unwrap();
        assert_eq!((policy.tier(), engine.cache_hits()), (WasmTier::Optimized, 1));
    }

    #[cfg(unix)]
    #[test]
    fn an_artifact_someone_else_could_write_is_not_loaded() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let bytes = plugin("test_pick_owner");
        WasmEngine::with_cache(Some(dir.path().to_owned())).unwrap().compile(&bytes, PolicyKind::Criterion).unwrap();
        let artifact = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
        let engine = WasmEngine::with_cache(Some(dir.path().to_owned())).unwrap();
        engine.compile(&bytes, PolicyKind::Criterion).unwrap();
        assert_eq!(engine.cache_hits(), 0, "a group- or world-writable artifact is compiled again");
        assert_eq!(std::fs::metadata(&artifact).unwrap().permissions().mode() & 0o777, 0o600, "and replaced");
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
