//! The Rhai engine: one shared, locked-down engine; one compiled AST per file.
//!
//! A script has no I/O: no modules, no `eval`, no clock. `print` and
//! `debug` write to the call's own log lines ([`super::logs`]), nothing else.
//! Every call is bounded by an operation budget (the engine's, and the
//! tenant's `limits.operations` below it), call depth, string/array/map sizes
//! and a wall-clock deadline; the operations it used are its cost.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Scope};
use serde_json::{Map, Value};

use super::logs::{LogBuf, LogLevel, LogLine};
use super::{Candidate, FailureKind, Limits, PolicyFailure, PreparedInput};

/// The operation budget of one call: a backstop behind the deadline.
pub const MAX_OPERATIONS: u64 = 5_000_000;
/// How often (in operations) the deadline is checked.
const DEADLINE_CHECK_EVERY: u64 = 256;

/// What the engine's callbacks need to know of the call running on this
/// thread, and what they record of it.
#[derive(Default)]
struct Running {
    deadline: Option<Instant>,
    budget: Option<u64>,
    operations: u64,
    logs: LogBuf,
}

thread_local! {
    /// The call running on this thread. A Rhai call never yields, so the
    /// thread that starts it runs it to the end; the engine's callbacks are
    /// shared by every call and find their call here. The counters the
    /// progress callback touches at every operation are plain cells.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static BUDGET_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    static OPERATIONS: Cell<u64> = const { Cell::new(0) };
    static LOGS: RefCell<LogBuf> = RefCell::new(LogBuf::default());
}

/// The token a script is stopped with when it used up its budget.
const BUDGET: &str = "budget";

/// The shared engine.
pub struct RhaiEngine {
    engine: Engine,
}

impl Default for RhaiEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl RhaiEngine {
    /// Builds the locked-down engine.
    pub fn new() -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(256 << 10)
            .set_max_array_size(10_000)
            .set_max_map_size(10_000)
            .set_max_variables(1_000)
            .set_max_functions(500)
            .set_strict_variables(true)
            .disable_symbol("eval")
            .on_print(|text| LOGS.with_borrow_mut(|l| l.push(LogLevel::Info, text)))
            .on_debug(|text, _, _| {
                // A string arrives debug-formatted, in quotes: drop them.
                let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
                LOGS.with_borrow_mut(|l| l.push(LogLevel::Debug, text));
            })
            .on_progress(|ops| {
                OPERATIONS.set(ops);
                if ops > BUDGET_LEFT.get() {
                    return Some(Dynamic::from(BUDGET));
                }
                if !ops.is_multiple_of(DEADLINE_CHECK_EVERY) {
                    return None;
                }
                let late = DEADLINE.get().is_some_and(|d| Instant::now() >= d);
                late.then(|| Dynamic::from("deadline"))
            });
        Self { engine }
    }

    /// Compiles a script and checks that it defines `fn resolve(input)`.
    pub fn compile(self: &Arc<Self>, source: &str) -> Result<RhaiPolicy, CompileError> {
        let ast = self.engine.compile(source).map_err(|e| CompileError {
            message: e.err_type().to_string(),
            line: e.position().line(),
            column: e.position().position(),
        })?;
        let has_resolve = ast.iter_functions().any(|f| f.name == "resolve" && f.params.len() == 1);
        if !has_resolve {
            return Err(CompileError {
                message: "the script must define `fn resolve(input)`".into(),
                line: None,
                column: None,
            });
        }
        let reach = super::rhai_reach::Reach::of_resolve(&ast);
        Ok(RhaiPolicy { engine: Arc::clone(self), ast, reach })
    }
}

/// One call's outcome, with what it cost and wrote.
pub struct RhaiRun {
    pub result: Result<Dynamic, PolicyFailure>,
    /// The operations the call ran.
    pub operations: u64,
    pub logs: Vec<LogLine>,
}

/// A Rhai compile error, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// One compiled script.
pub struct RhaiPolicy {
    engine: Arc<RhaiEngine>,
    ast: AST,
    /// What `resolve` can reach of its input: all a call copies of it.
    reach: super::rhai_reach::Reach,
}

impl RhaiPolicy {
    /// The call's argument: the input with this call's `config`.
    pub fn argument(&self, input: &PreparedInput, config: &Map<String, Value>) -> Result<Dynamic, PolicyFailure> {
        input
            .rhai(&self.reach, config)
            .map_err(|e| PolicyFailure::new(FailureKind::Trap, format!("could not convert the input: {e}")))
    }

    /// What `resolve` can reach of its input.
    pub fn reach(&self) -> &super::rhai_reach::Reach {
        &self.reach
    }

    /// Runs `resolve(arg)` on this thread, within the limits.
    pub fn run(&self, arg: Dynamic, limits: &Limits) -> RhaiRun {
        let guard = RunningGuard::set(Running {
            deadline: Some(Instant::now() + limits.deadline),
            budget: limits.operations,
            ..Running::default()
        });
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let result = self
            .engine
            .engine
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &self.ast, "resolve", (arg,))
            .map_err(|e| failure(*e, limits));
        let done = guard.finish();
        RhaiRun { result, operations: done.operations, logs: done.logs.finish() }
    }

    /// Reads a criterion's output: an array of user ids (strings), or of
    /// `#{id, note}` maps.
    pub fn criterion_output(out: Dynamic, limits: &Limits) -> Result<Vec<Candidate>, PolicyFailure> {
        let items = out.try_cast_result::<rhai::Array>().map_err(|out| {
            bad_output(format!("a criterion must return an array of user ids, got {}", out.type_name()))
        })?;
        if items.len() > limits.max_candidates {
            return Err(PolicyFailure::new(
                FailureKind::OutputTooLarge,
                format!("returned {} candidates; at most {} are allowed", items.len(), limits.max_candidates),
            ));
        }
        items.into_iter().enumerate().map(|(i, item)| candidate(i, item)).collect()
    }

    /// Reads an attribute's output: `()` means nothing.
    pub fn attribute_output(out: Dynamic) -> Result<Option<Value>, PolicyFailure> {
        if out.is_unit() {
            return Ok(None);
        }
        let value: Value = rhai::serde::from_dynamic(&out)
            .map_err(|e| bad_output(format!("the value cannot be represented as JSON: {e}")))?;
        Ok(Some(value))
    }
}

fn candidate(i: usize, item: Dynamic) -> Result<Candidate, PolicyFailure> {
    if item.is_string() {
        return Ok(Candidate { commerce_user_id: item.to_string(), note: None });
    }
    let type_name = item.type_name();
    if let Ok(map) = item.try_cast_result::<rhai::Map>() {
        let id = map.get("id").filter(|d| d.is_string()).map(ToString::to_string);
        let note = map.get("note").filter(|d| d.is_string()).map(ToString::to_string);
        if let Some(commerce_user_id) = id {
            return Ok(Candidate { commerce_user_id, note });
        }
    }
    Err(bad_output(format!("candidate {i} must be a user id string or #{{id, note}}, got {type_name}")))
}

fn bad_output(message: String) -> PolicyFailure {
    PolicyFailure::new(FailureKind::BadOutput, message)
}

fn failure(err: EvalAltResult, limits: &Limits) -> PolicyFailure {
    use EvalAltResult as E;
    match err {
        E::ErrorTerminated(token, _) if token.is_string() && token.to_string() == BUDGET => PolicyFailure::new(
            FailureKind::BudgetExhausted,
            format!("used up its budget of {} operations (limits.operations)", limits.operations.unwrap_or_default()),
        ),
        E::ErrorTerminated(..) => PolicyFailure::new(
            FailureKind::Deadline,
            format!("stopped at its deadline of {} ms", limits.deadline.as_millis()),
        ),
        E::ErrorTooManyOperations(pos) => {
            PolicyFailure::new(FailureKind::Deadline, format!("stopped after {MAX_OPERATIONS} operations{}", at(pos)))
        }
        E::ErrorDataTooLarge(what, pos) => {
            PolicyFailure::new(FailureKind::Memory, format!("{what} exceeds its size cap{}", at(pos)))
        }
        E::ErrorStackOverflow(pos) => {
            PolicyFailure::new(FailureKind::Memory, format!("call depth exceeds its cap{}", at(pos)))
        }
        E::ErrorRuntime(value, pos) => PolicyFailure::new(FailureKind::PolicyError, format!("{value}{}", at(pos))),
        other => PolicyFailure::new(FailureKind::Trap, other.to_string()),
    }
}

/// " (at line L, position C)" for a known position, nothing otherwise.
fn at(pos: rhai::Position) -> String {
    if pos.is_none() { String::new() } else { format!(" (at {pos})") }
}

/// Sets this thread's running call for the span of one call, and puts back
/// what was there (a panic must not leave a stale deadline behind).
struct RunningGuard(Option<Running>);

impl RunningGuard {
    fn set(running: Running) -> Self {
        Self(Some(swap(running)))
    }

    /// Ends the call: what it recorded.
    fn finish(mut self) -> Running {
        let previous = self.0.take().unwrap_or_default();
        swap(previous)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            swap(previous);
        }
    }
}

/// Installs `next` as this thread's running call; answers the one it
/// replaces, with what that call recorded.
fn swap(next: Running) -> Running {
    Running {
        deadline: DEADLINE.replace(next.deadline),
        budget: Some(BUDGET_LEFT.replace(next.budget.unwrap_or(u64::MAX))).filter(|b| *b != u64::MAX),
        operations: OPERATIONS.replace(next.operations),
        logs: LOGS.with_borrow_mut(|l| std::mem::replace(l, next.logs)),
    }
}
