//! Tenant policies: loading, compiling, and running them within limits.
//!
//! A policy is a Rhai script or a WebAssembly component that implements one
//! target criterion or one attribute resolver. The [`registry`] holds every
//! compiled policy and hands each request one immutable [`TenantSnapshot`].
//!
//! Invariant: a policy call never fails the request. Every way a call can go
//! wrong — an error, a trap, a deadline, a memory cap, a bad or huge output —
//! comes back as a [`PolicyFailure`] that resolution records and moves past.

pub mod admin;
pub mod candidate;
pub mod check;
pub mod config;
pub mod fixtures;
pub mod gate;
pub mod input;
pub mod limits;
pub mod loader;
pub mod logs;
pub mod registry;
pub mod reload;
pub mod rhai_engine;
pub mod rhai_reach;
pub mod set;
pub mod snapshot;
pub mod wasm_cache;
pub mod wasm_convert;
pub mod wasm_engine;
pub mod watcher;
pub mod workspace;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

pub use input::PreparedInput;
pub use limits::Limits;
pub use registry::Registry;
pub use snapshot::TenantSnapshot;

use crate::domain::TenantId;
use crate::metrics::Metrics;

/// What every policy call of one application shares: the per-tenant call
/// slots and breakers, and the metrics the calls are counted in. The app
/// builds one and hands it to the registry, which gives it to every policy
/// it loads.
#[derive(Debug, Default)]
pub struct CallContext {
    pub gates: gate::Gates,
    pub metrics: Arc<Metrics>,
}

/// What a policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PolicyKind {
    /// A target criterion, in `criteria/`.
    Criterion,
    /// An attribute resolver, in `attributes/`.
    Attribute,
}

impl PolicyKind {
    /// The folder the kind lives in.
    pub fn dir(self) -> &'static str {
        match self {
            PolicyKind::Criterion => "criteria",
            PolicyKind::Attribute => "attributes",
        }
    }

    /// The kind whose folder is `dir`.
    pub fn from_dir(dir: &str) -> Option<Self> {
        match dir {
            "criteria" => Some(PolicyKind::Criterion),
            "attributes" => Some(PolicyKind::Attribute),
            _ => None,
        }
    }
}

/// The language a policy is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EngineKind {
    Rhai,
    Wasm,
}

impl EngineKind {
    /// The file extension of the engine's policies.
    pub fn extension(self) -> &'static str {
        match self {
            EngineKind::Rhai => "rhai",
            EngineKind::Wasm => "wasm",
        }
    }

    /// The engine whose files end in `ext`.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "rhai" => Some(EngineKind::Rhai),
            "wasm" => Some(EngineKind::Wasm),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Rhai => "RHAI",
            EngineKind::Wasm => "WASM",
        }
    }
}

/// Where a policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `policies/global/`: the platform's.
    Global,
    /// `policies/tenants/<id>/`: the tenant's own.
    Tenant(TenantId),
}

/// A compiled policy, ready to run.
pub struct Policy {
    /// The file stem: `role_match`.
    pub name: String,
    pub kind: PolicyKind,
    pub engine: EngineKind,
    pub origin: Origin,
    /// The sha256 of the file's bytes, in hex: the policy's version.
    pub version: String,
    /// The file, relative to the policies directory.
    pub path: PathBuf,
    pub loaded_at: DateTime<Utc>,
    compiled: Compiled,
    /// A running average of this policy's call time, in µs: a Rhai policy
    /// that runs long is moved off the async workers (see [`Policy::run_rhai`]).
    average_us: AtomicU64,
    /// The file as it was read, so a rescan need not read it again.
    stamp: Option<loader::FileStamp>,
    /// The app's gates, breakers and metrics.
    calls: Arc<CallContext>,
    /// This policy's metric series per tenant, looked up once each.
    meters: Meters,
}

impl Policy {
    /// The same policy, for a layer that read the same bytes again.
    fn duplicate(&self) -> Self {
        Self {
            name: self.name.clone(),
            kind: self.kind,
            engine: self.engine,
            origin: self.origin,
            version: self.version.clone(),
            path: self.path.clone(),
            loaded_at: self.loaded_at,
            compiled: self.compiled.clone(),
            average_us: AtomicU64::new(self.average_us.load(Ordering::Relaxed)),
            stamp: self.stamp,
            calls: Arc::clone(&self.calls),
            meters: Meters::default(),
        }
    }
}

impl Policy {
    /// The same policy whose calls go through `calls`: evaluations off the
    /// request path (a replay, a shadow set) use their own gates, breakers
    /// and metrics, so they never take a live call's slot or trip its
    /// breaker.
    pub fn with_calls(&self, calls: &Arc<CallContext>) -> Self {
        Self { calls: Arc::clone(calls), ..self.duplicate() }
    }
}

/// A policy's metric series per tenant ([`Metrics::policy_meter`]): a call
/// counts itself with one map lookup instead of four label lookups. Bounded
/// like the series themselves: one entry per tenant that called the policy.
#[derive(Default)]
struct Meters(std::sync::RwLock<std::collections::HashMap<TenantId, crate::metrics::PolicyMeter>>);

impl Meters {
    fn with<R>(&self, tenant: TenantId, policy: &Policy, f: impl FnOnce(&crate::metrics::PolicyMeter) -> R) -> R {
        if let Some(meter) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(&tenant) {
            return f(meter);
        }
        let mut label = uuid::Uuid::encode_buffer();
        let label = tenant.0.hyphenated().encode_lower(&mut label);
        let unit = match policy.engine {
            EngineKind::Rhai => crate::metrics::CostUnit::Operations,
            EngineKind::Wasm => crate::metrics::CostUnit::Fuel,
        };
        let meter = policy.calls.metrics.policy_meter(label, &policy.name, policy.engine.as_str(), unit);
        let mut meters = self.0.write().unwrap_or_else(|e| e.into_inner());
        f(meters.entry(tenant).or_insert(meter))
    }
}

/// A Rhai policy whose calls average more than this runs on the blocking
/// pool: a Rhai call cannot yield, and it must not hold an async worker that
/// other requests need.
const OFFLOAD_AFTER_US: u64 = 1_000;

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("engine", &self.engine)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The engine-specific compiled form, shared by every tenant whose file has
/// the same bytes.
#[derive(Clone)]
pub enum Compiled {
    Rhai(Arc<rhai_engine::RhaiPolicy>),
    Wasm(Arc<wasm_engine::WasmPolicy>),
}

/// A candidate a criterion proposes, as the policy returned it (not yet
/// checked against the commerce).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub commerce_user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a policy call produced no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl PolicyFailure {
    /// A failure of `kind`. The message is made one readable line: a
    /// trap's backtrace or a parser's pretty-printed value would otherwise
    /// spread over many.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: one_line(&message.into()) }
    }
}

impl fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// The ways a policy call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureKind {
    /// The call ran past its deadline (or its operation budget).
    Deadline,
    /// The call hit its memory cap (or a size cap on strings, arrays, maps).
    Memory,
    /// The policy trapped, panicked or raised an uncaught error.
    Trap,
    /// The policy reported an error of its own.
    PolicyError,
    /// The output was not of the expected shape.
    BadOutput,
    /// The output was larger than allowed.
    OutputTooLarge,
    /// The call used up the tenant's per-call budget of Wasm fuel
    /// (`limits.fuel`) or Rhai operations (`limits.operations`).
    BudgetExhausted,
    /// Not run: the policy hit its deadline on each of its last calls for
    /// this tenant, so it is skipped for a few seconds (see [`gate`]).
    CircuitOpen,
}

impl FailureKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Deadline => "DEADLINE",
            FailureKind::Memory => "MEMORY",
            FailureKind::Trap => "TRAP",
            FailureKind::PolicyError => "POLICY_ERROR",
            FailureKind::BadOutput => "BAD_OUTPUT",
            FailureKind::OutputTooLarge => "OUTPUT_TOO_LARGE",
            FailureKind::BudgetExhausted => "BUDGET_EXHAUSTED",
            FailureKind::CircuitOpen => "CIRCUIT_OPEN",
        }
    }

    /// The metric label: the wire name in lower case.
    pub fn metric_label(self) -> &'static str {
        match self {
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Trap => "trap",
            FailureKind::PolicyError => "policy_error",
            FailureKind::BadOutput => "bad_output",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::BudgetExhausted => "budget_exhausted",
            FailureKind::CircuitOpen => "circuit_open",
        }
    }
}

/// The outcome of one policy call, with how long it took, what it cost and
/// what it logged.
#[derive(Clone, Debug)]
pub struct Call<T> {
    pub result: Result<T, PolicyFailure>,
    pub duration: Duration,
    /// For a Wasm policy that ran: which compiler's code ran.
    pub tier: Option<wasm_engine::WasmTier>,
    /// For a Wasm policy that ran: the fuel it burned.
    pub fuel: Option<u64>,
    /// For a Rhai policy that ran: the operations it ran.
    pub operations: Option<u64>,
    /// The lines it logged, bounded ([`logs`]).
    pub logs: Vec<logs::LogLine>,
}

/// What an engine reports of a call beside its result.
#[derive(Default)]
struct Ran {
    tier: Option<wasm_engine::WasmTier>,
    fuel: Option<u64>,
    operations: Option<u64>,
    logs: Vec<logs::LogLine>,
}

impl Policy {
    /// Runs a criterion: the candidates in order of preference. On a
    /// memoizing input ([`PreparedInput::memoized`]) the same call made
    /// before answers again without running.
    pub async fn resolve_criterion(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Call<Vec<Candidate>> {
        let Some(memo) = input.memo() else { return self.run_criterion(input, config, limits).await };
        let key = self.memo_key(config, limits);
        if let Some(hit) = memo.criterion(&key) {
            return hit;
        }
        let call = self.run_criterion(input, config, limits).await;
        memo.keep_criterion(key, &call);
        call
    }

    /// Runs an attribute resolver: `Some(value)`, or `None` for "nothing";
    /// memoized like [`Policy::resolve_criterion`].
    pub async fn resolve_attribute(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Call<Option<Value>> {
        let Some(memo) = input.memo() else { return self.run_attribute(input, config, limits).await };
        let key = self.memo_key(config, limits);
        if let Some(hit) = memo.attribute(&key) {
            return hit;
        }
        let call = self.run_attribute(input, config, limits).await;
        memo.keep_attribute(key, &call);
        call
    }

    /// What makes two calls the same call: the policy's bytes, its config
    /// and its limits (the input is the memo's own).
    fn memo_key(&self, config: &Map<String, Value>, limits: &Limits) -> String {
        format!("{}|{limits:?}|{}", self.version, serde_json::to_string(config).unwrap_or_default())
    }

    async fn run_criterion(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Call<Vec<Candidate>> {
        debug_assert_eq!(self.kind, PolicyKind::Criterion);
        let mut ran = Ran::default();
        let run = async {
            let candidates = match &self.compiled {
                Compiled::Rhai(p) => {
                    let out = self.run_rhai(p, input, config, limits, &mut ran).await;
                    out.and_then(|out| rhai_engine::RhaiPolicy::criterion_output(out, limits))
                }
                Compiled::Wasm(p) => {
                    let run = p.resolve_criterion(input, config, limits).await;
                    ran = Ran { tier: Some(run.tier), fuel: run.fuel, operations: None, logs: run.logs };
                    run.result
                }
            }?;
            if candidates.len() > limits.max_candidates {
                return Err(PolicyFailure::new(
                    FailureKind::OutputTooLarge,
                    format!("returned {} candidates; at most {} are allowed", candidates.len(), limits.max_candidates),
                ));
            }
            Ok(candidates)
        };
        let call = self.guarded(input, run).await;
        self.with_ran(input, call, ran)
    }

    async fn run_attribute(
        &self,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
    ) -> Call<Option<Value>> {
        debug_assert_eq!(self.kind, PolicyKind::Attribute);
        let mut ran = Ran::default();
        let run = async {
            let value = match &self.compiled {
                Compiled::Rhai(p) => self
                    .run_rhai(p, input, config, limits, &mut ran)
                    .await
                    .and_then(rhai_engine::RhaiPolicy::attribute_output),
                Compiled::Wasm(p) => {
                    let run = p.resolve_attribute(input, config, limits).await;
                    ran = Ran { tier: Some(run.tier), fuel: run.fuel, operations: None, logs: run.logs };
                    run.result
                }
            }?;
            check_output_size(value, limits)
        };
        let call = self.guarded(input, run).await;
        self.with_ran(input, call, ran)
    }

    /// Completes a call with what its engine reported, and counts its cost.
    fn with_ran<T>(&self, input: &PreparedInput, call: Call<T>, ran: Ran) -> Call<T> {
        let failure = call.result.as_ref().err().map(|f| f.kind.metric_label());
        let cost = ran.fuel.or(ran.operations);
        self.meters.with(input.base.tenant_id, self, |meter| {
            meter.record(&self.calls.metrics, call.duration, failure, cost);
        });
        Call { tier: ran.tier, fuel: ran.fuel, operations: ran.operations, logs: ran.logs, ..call }
    }

    /// What every call goes through, whatever the kind: the breaker (an open
    /// one answers at once), the tenant's call slot, the clock, and the
    /// record (breaker, running average, metrics).
    async fn guarded<T>(&self, input: &PreparedInput, run: impl Future<Output = Result<T, PolicyFailure>>) -> Call<T> {
        let tenant = input.base.tenant_id;
        if let Some(wait) = self.calls.gates.breaker_open(tenant, &self.version) {
            let failure = PolicyFailure::new(
                FailureKind::CircuitOpen,
                format!(
                    "not run: it hit its deadline on its last {} calls; it runs again in {} ms",
                    self.calls.gates.breaker_after(),
                    wait.as_millis()
                ),
            );
            self.record(Duration::ZERO, Some(&failure));
            return Call {
                result: Err(failure),
                duration: Duration::ZERO,
                tier: None,
                fuel: None,
                operations: None,
                logs: Vec::new(),
            };
        }
        let _slot = self.calls.gates.enter(tenant).await;
        let started = Instant::now();
        let result = run.await;
        let duration = started.elapsed();
        let failure = result.as_ref().err();
        self.calls.gates.breaker_record(
            tenant,
            &self.version,
            failure.is_some_and(|f| f.kind == FailureKind::Deadline),
        );
        self.record(duration, failure);
        Call { result, duration, tier: None, fuel: None, operations: None, logs: Vec::new() }
    }

    /// Runs a Rhai call: inline while the policy is quick (a few µs, less
    /// than a thread hand-off), on the blocking pool once its calls average
    /// over [`OFFLOAD_AFTER_US`], so a slow script cannot stall the requests
    /// that share its async worker.
    async fn run_rhai(
        &self,
        policy: &Arc<rhai_engine::RhaiPolicy>,
        input: &PreparedInput,
        config: &Map<String, Value>,
        limits: &Limits,
        ran: &mut Ran,
    ) -> Result<rhai::Dynamic, PolicyFailure> {
        let arg = policy.argument(input, config)?;
        let run = if self.average_us.load(Ordering::Relaxed) < OFFLOAD_AFTER_US {
            policy.run(arg, limits)
        } else {
            let (policy, limits) = (Arc::clone(policy), *limits);
            tokio::task::spawn_blocking(move || policy.run(arg, &limits)).await.unwrap_or_else(|_| {
                rhai_engine::RhaiRun {
                    result: Err(PolicyFailure::new(FailureKind::Trap, "the script's thread panicked")),
                    operations: 0,
                    logs: Vec::new(),
                }
            })
        };
        ran.operations = Some(run.operations);
        ran.logs = run.logs;
        run.result
    }

    /// Feeds the running average ([`Policy::run_rhai`]); the call's metrics
    /// are counted in [`Policy::with_ran`].
    fn record(&self, elapsed: Duration, failure: Option<&PolicyFailure>) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let average = self.average_us.load(Ordering::Relaxed);
        let mut next = average - average / 8 + us / 8;
        if failure.is_some_and(|f| f.kind == FailureKind::Deadline) {
            // A call stopped at its deadline or its operation budget is slow
            // whatever it measured: the budget can run out in a few ms, which
            // one eighth of would not tip the average.
            next = next.max(OFFLOAD_AFTER_US);
        }
        self.average_us.store(next, Ordering::Relaxed);
    }

    /// The name, engine and version, as recorded with every decision.
    pub fn reference(&self) -> PolicyRef {
        PolicyRef { name: self.name.clone(), engine: self.engine, version: self.version.clone() }
    }
}

/// Joins a text's lines with "; " and its runs of blanks into one space,
/// and caps it at 1,000 characters.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with([',', '[', '(', '{', ':']) { " " } else { "; " });
        }
        out.extend(line.split_whitespace().flat_map(|w| [" ", w]).skip(1));
    }
    if out.chars().count() > 1_000 {
        out = out.chars().take(1_000).collect::<String>() + "…";
    }
    out
}

fn check_output_size(value: Option<Value>, limits: &Limits) -> Result<Option<Value>, PolicyFailure> {
    if let Some(v) = &value {
        let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > limits.max_output_bytes {
            return Err(PolicyFailure::new(
                FailureKind::OutputTooLarge,
                format!("returned {size} bytes of JSON; at most {} are allowed", limits.max_output_bytes),
            ));
        }
    }
    Ok(value)
}

/// Which policy version decided something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    pub name: String,
    pub engine: EngineKind,
    pub version: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::registry::RegistryOptions;
    use super::*;
    use crate::domain::commerce::Commerce;
    use crate::domain::{ActivityType, Channel, CommerceId, TenantId};
    use crate::policy::input::{ActivityInput, BaseInput};

    fn input() -> PreparedInput {
        input_with_users(Vec::new())
    }

    /// An input whose commerce has an owner and a rep, in that order.
    pub(crate) fn input_with_owner() -> PreparedInput {
        use crate::domain::UserRole;
        use crate::domain::commerce::CommerceUser;
        let user = |name: &str, role| CommerceUser {
            id: crate::domain::CommerceUserId::new(),
            external_id: Some(name.into()),
            name: Some(name.into()),
            is_active: true,
            roles: vec![role],
            contacts: Vec::new(),
        };
        input_with_users(vec![user("u-rep", UserRole::CommerceRep), user("u-owner", UserRole::Owner)])
    }

    fn input_with_users(users: Vec<crate::domain::commerce::CommerceUser>) -> PreparedInput {
        let commerce = Commerce {
            id: CommerceId::new(),
            external_id: "c".into(),
            name: "n".into(),
            tax_id: None,
            global_external_id: None,
            is_active: true,
            metadata: Map::new(),
            addresses: Vec::new(),
            users,
        };
        PreparedInput::new(BaseInput {
            tenant_id: TenantId::new(),
            activity: ActivityInput {
                activity_type: ActivityType::Task,
                channel: Channel::Salesman,
                reason: "r".into(),
                score: None,
                user_status: None,
                assignment_reason: None,
                scheduled_at: "2025-01-16T09:00:00.000Z".into(),
                suggested_execution_time: None,
            },
            commerce: Arc::new(commerce),
            history: Vec::new(),
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_memoizing_input_answers_the_same_call_once_and_a_different_config_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("global/criteria")).unwrap();
        std::fs::write(dir.path().join("global/criteria/pick.rhai"), "fn resolve(input) { [input.config.who] }")
            .unwrap();
        let registry = Registry::load(dir.path(), RegistryOptions::default()).unwrap();
        let snapshot = registry.snapshot(TenantId::new());
        let policy = snapshot.criterion("PICK").unwrap().clone();
        let calls = |p: &Policy| {
            p.calls
                .metrics
                .render(&[])
                .lines()
                .filter(|l| l.starts_with("reten_policy_calls_total"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>()
        };
        let base = input_with_owner().base;
        let input = PreparedInput::memoized(BaseInput { history: Vec::new(), ..base });
        let config = |who: &str| serde_json::json!({"who": who}).as_object().unwrap().clone();
        let a1 = policy.resolve_criterion(&input, &config("a"), &snapshot.limits).await;
        let a2 = policy.resolve_criterion(&input, &config("a"), &snapshot.limits).await;
        let b = policy.resolve_criterion(&input, &config("b"), &snapshot.limits).await;
        assert_eq!(a1.result.as_ref().unwrap()[0].commerce_user_id, "a");
        assert_eq!(a1.result, a2.result);
        assert_eq!(b.result.unwrap()[0].commerce_user_id, "b");
        assert_eq!(calls(&policy), 2, "the repeated call did not run again; the other config did");
        // Without a memo, every call runs.
        let plain = input_with_owner();
        policy.resolve_criterion(&plain, &config("a"), &snapshot.limits).await;
        assert_eq!(calls(&policy), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_rhai_policy_moves_off_the_async_worker_so_other_tasks_run_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("global/criteria")).unwrap();
        std::fs::write(dir.path().join("global/criteria/spin.rhai"), "fn resolve(input) { loop {} }").unwrap();
        let registry = Registry::load(dir.path(), RegistryOptions::default()).unwrap();
        let snapshot = registry.snapshot(TenantId::new());
        let policy = snapshot.criterion("SPIN").unwrap().clone();
        let input = input();
        // The first call runs inline, to its deadline, and marks the policy slow.
        let first = policy.resolve_criterion(&input, &Map::new(), &snapshot.limits).await;
        assert_eq!(first.result.unwrap_err().kind, FailureKind::Deadline);

        let config = Map::new();
        let quick = tokio::spawn(async { "quick" });
        tokio::select! {
            biased;
            done = quick => assert_eq!(done.unwrap(), "quick"),
            _ = policy.resolve_criterion(&input, &config, &snapshot.limits) => {
                panic!("the slow call held the only worker until its deadline")
            }
        }
    }
}
