//! Hostile input, as property tests (proptest; `cargo fuzz` needs a nightly
//! toolchain, and only stable Rust is available here).
//!
//! - Arbitrary and near-valid JSON bodies at the write routes (create,
//!   preview, commerce sync and update, API keys, tenant setup) and arbitrary
//!   bytes as a JSON body, through the real router: never a 5xx, never a
//!   panic, every error a problem document.
//! - The policy file loaders — `tenant.toml`/`defaults.toml`
//!   (`parse_config`), `attribute-keys.toml` (`parse_catalogue`), Rhai
//!   (`RhaiEngine::compile`) and Wasm (`WasmEngine::compile`) — over
//!   arbitrary text and bytes and over mutations of the real files and
//!   plugins: `Ok` or `Err`, never a panic.
//! - End to end: generated `tenant.toml`s, Rhai criteria and mutated Wasm
//!   plugins uploaded through the admin API, then used by a create or a
//!   preview: never a 5xx.
//!
//! Case counts keep the whole file well under a minute; set
//! `RETEN_FUZZ_SCALE=10` (say) for a longer run. Failures are shrunk and
//! printed with their minimal input; nothing is persisted to disk.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reten_host::domain::TenantId;
use reten_host::policy::PolicyKind;
use reten_host::policy::config::{parse_catalogue, parse_config};
use reten_host::policy::rhai_engine::RhaiEngine;
use reten_host::policy::wasm_engine::WasmEngine;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{
    TestApp, TestResponse, admin_token, plugin, repo_policies, seed_body, standard_commerce, super_admin_token,
};

// ---------------------------------------------------------------------------
// Running properties.

/// `n` cases, times `RETEN_FUZZ_SCALE` (default 1).
fn cases(n: u32) -> u32 {
    let scale = std::env::var("RETEN_FUZZ_SCALE").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    n.saturating_mul(scale.max(1))
}

fn config(n: u32) -> Config {
    Config { cases: cases(n), failure_persistence: None, max_shrink_iters: 200, ..Config::default() }
}

/// Runs a property whose check is async (it goes through the router and
/// Postgres) from a blocking thread, so that proptest can drive it case by
/// case and shrink a failure. The strategy is built on that thread.
async fn check_async<S, F, Fut>(n: u32, strategy: impl FnOnce() -> S + Send + 'static, check: F)
where
    S: Strategy,
    S::Value: Send + 'static,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(config(n));
        runner.run(&strategy(), |value| handle.block_on(check(value))).map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// How many answers of each status each route got, printed at the end of a
/// test (run with `--nocapture`) to show what the generators reach.
static TALLY: std::sync::Mutex<std::collections::BTreeMap<(String, u16), usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn print_tally(prefix: &str) {
    let tally = TALLY.lock().unwrap();
    for ((what, status), n) in tally.iter().filter(|((w, _), _)| w.starts_with(prefix)) {
        eprintln!("  {what}: {status} x{n}");
    }
}

/// Never a 5xx; every error is a problem document.
fn sane(what: &str, res: &TestResponse) -> Result<(), TestCaseError> {
    *TALLY.lock().unwrap().entry((what.to_owned(), res.status.as_u16())).or_default() += 1;
    prop_assert!(res.status.as_u16() < 500, "{what}: {} {}", res.status, res.body);
    if res.status.is_client_error() {
        prop_assert_eq!(
            res.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}: {} {}",
            what,
            res.status,
            res.body
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Strategies.

/// Strings that tend to break things: empty, NUL, control and bidi
/// characters, BOMs, astral planes, huge, timestamp edge cases, enum values,
/// injection and path traversal attempts.
fn nasty_string() -> impl Strategy<Value = String> {
    let fixed: Vec<String> = vec![
        "".into(),
        "\0".into(),
        "a\0b".into(),
        "\u{0}\u{1}\u{1f}\u{7f}".into(),
        "\u{feff}".into(),
        "\u{202e}abc".into(),
        "\u{10ffff}".into(),
        "😀".repeat(100),
        " ".into(),
        "\t\r\n".into(),
        "x".repeat(10_000),
        "\\u0000".into(),
        "2025-01-16T09:00:00.000Z".into(),
        "2025-02-30T00:00:00Z".into(),
        "2025-01-16T25:61:61Z".into(),
        "0000-01-01T00:00:00Z".into(),
        "9999-12-31T23:59:59.999999999Z".into(),
        "+275760-09-13T00:00:00Z".into(),
        "-000001-01-01T00:00:00Z".into(),
        "2025-01-16".into(),
        "1736985600".into(),
        "MESSAGE".into(),
        "TASK".into(),
        "WHATSAPP".into(),
        "SALESMAN".into(),
        "whatsapp".into(),
        "ROLE_MATCH".into(),
        "LAST_CONTACTED_SAME_CHANNEL".into(),
        "commerce_info".into(),
        "promotions".into(),
        "OWNER".into(),
        "CREATE_ACTIVITY".into(),
        "SUPER_ADMIN".into(),
        "00000000-0000-0000-0000-000000000000".into(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".into(),
        "'; DROP TABLE activities; --".into(),
        "%s%s%s%n".into(),
        "../../../../etc/passwd".into(),
        "${jndi:ldap://x}".into(),
        "null".into(),
        "-1".into(),
        "1e999".into(),
        "NaN".into(),
    ];
    prop_oneof![
        3 => prop::sample::select(fixed),
        2 => "\\PC{0,24}",
        1 => any::<String>(),
        1 => Just(()).prop_map(|_| Uuid::new_v4().to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![
            any::<i64>(),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(i64::from(i32::MAX) + 1),
            Just(-1i64),
            Just(0i64),
            -5i64..10_000
        ]
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![any::<f64>(), Just(1e308), Just(-0.0), Just(f64::MIN_POSITIVE), Just(0.5)]
            .prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        nasty_string().prop_map(Value::from),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((nasty_string(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

/// One step of a path into a JSON document.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(value: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                prefix.push(Seg::Key(k.clone()));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                prefix.push(Seg::Index(i));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.as_object_mut()?.get_mut(k),
        Seg::Index(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// What to do at a path.
#[derive(Clone, Debug)]
enum Edit {
    /// Another value of the same JSON type: a nasty string for a string, an
    /// edge number for a number, and so on (keeps the document's shape).
    Retype(String, Value, bool),
    Replace(Value),
    Remove,
    AddField(String, Value),
    Duplicate,
}

/// `base` with 1 to 5 random edits at random places: near-valid documents
/// that get past the first check and reach the deep ones.
fn mutated_json(base: Value) -> BoxedStrategy<Value> {
    let mut all = Vec::new();
    paths(&base, &mut Vec::new(), &mut all);
    let number = leaf().prop_filter("a number", Value::is_number);
    let edit = prop_oneof![
        6 => (nasty_string(), number, any::<bool>()).prop_map(|(s, n, b)| Edit::Retype(s, n, b)),
        3 => json_value().prop_map(Edit::Replace),
        2 => Just(Edit::Remove),
        1 => (nasty_string(), json_value()).prop_map(|(k, v)| Edit::AddField(k, v)),
        1 => Just(Edit::Duplicate),
    ];
    prop::collection::vec((prop::sample::select(all), edit), 1..4)
        .prop_map(move |edits| {
            let mut doc = base.clone();
            for (path, edit) in edits {
                match edit {
                    Edit::Retype(s, n, b) => {
                        if let Some(slot) = at(&mut doc, &path) {
                            match slot {
                                Value::String(_) => *slot = Value::String(s),
                                Value::Number(_) => *slot = n,
                                Value::Bool(_) => *slot = Value::Bool(b),
                                Value::Array(a) if !a.is_empty() && b => a.truncate(a.len() - 1),
                                Value::Array(a) => {
                                    if let Some(first) = a.first().cloned() {
                                        a.push(first);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    Edit::Replace(v) => {
                        if let Some(slot) = at(&mut doc, &path) {
                            *slot = v;
                        }
                    }
                    Edit::Remove => {
                        if let Some((last, parent)) = path.split_last()
                            && let Some(p) = at(&mut doc, parent)
                        {
                            match (p, last) {
                                (Value::Object(m), Seg::Key(k)) => drop(m.remove(k)),
                                (Value::Array(a), Seg::Index(i)) if *i < a.len() => drop(a.remove(*i)),
                                _ => {}
                            }
                        }
                    }
                    Edit::AddField(k, v) => {
                        if let Some(Value::Object(m)) = at(&mut doc, &path) {
                            m.insert(k, v);
                        }
                    }
                    Edit::Duplicate => {
                        if let Some(Value::Array(a)) = at(&mut doc, &path)
                            && let Some(first) = a.first().cloned()
                        {
                            a.extend(std::iter::repeat_n(first, 3));
                        }
                    }
                }
            }
            doc
        })
        .boxed()
}

/// A create body with every optional field, so that mutations reach them all.
fn full_body(commerce: Uuid) -> Value {
    let mut body = seed_body(commerce, "hostile");
    let extra = json!({
        "suggested_execution_time": "2025-01-16T10:00:00.000Z",
        "user_status": "ACTIVE",
        "score": 10,
        "assignment_reason": "because",
        "target_criteria": [
            {"type": "ROLE_MATCH", "config": {"role": "OWNER"}, "priority": 0},
            {"type": "LAST_CONTACTED_SAME_CHANNEL", "priority": 1}
        ],
        "attribute_keys": ["commerce_info", "promotions"],
        "attributes": [{"key": "commerce_info", "value": {"a": 1}}, {"key": "promotions", "fallback": []}]
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

/// Bytes with random edits: bit flips, overwrites, deletions, insertions,
/// truncation and duplication.
fn mutated_bytes(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let op = (0u8..6, any::<prop::sample::Index>(), any::<u8>(), 1usize..64, prop::collection::vec(any::<u8>(), 1..32));
    (prop::sample::select(seeds), prop::collection::vec(op, 1..6))
        .prop_map(|(mut bytes, ops)| {
            for (kind, index, byte, len, insert) in ops {
                if bytes.is_empty() {
                    bytes.extend_from_slice(&insert);
                    continue;
                }
                let i = index.index(bytes.len());
                let end = (i + len).min(bytes.len());
                match kind {
                    0 => bytes[i] ^= 1 << (byte % 8),
                    1 => bytes[i] = byte,
                    2 => drop(bytes.drain(i..end)),
                    3 => drop(bytes.splice(i..i, insert)),
                    4 => bytes.truncate(i),
                    _ => {
                        let slice = bytes[i..end].to_vec();
                        bytes.splice(i..i, slice);
                    }
                }
            }
            bytes
        })
        .boxed()
}

/// Text with random edits (see [`mutated_bytes`]), as a string.
fn mutated_text(seeds: Vec<String>) -> BoxedStrategy<String> {
    mutated_bytes(seeds.into_iter().map(String::into_bytes).collect())
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
        .boxed()
}

/// The repository's TOML files and Rhai scripts.
fn repo_files(ext: &str) -> Vec<String> {
    fn walk(dir: &std::path::Path, ext: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|x| x == ext) {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_policies(), ext, &mut out);
    assert!(!out.is_empty(), "the repository has .{ext} files");
    out
}

/// A `tenant.toml` built from the real ones, with structural edits
/// (serialised back to TOML): it parses, and probes the checks behind.
fn mutated_tenant_toml() -> BoxedStrategy<String> {
    let seeds: Vec<Value> = repo_files("toml")
        .iter()
        .filter(|t| !t.contains("[expect"))
        .filter_map(|t| toml::from_str::<toml::Value>(t).ok())
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    let limits = json!({"limits": {"deadline_ms": 50, "memory_mib": 32, "max_output_kib": 64, "max_candidates": 10}});
    let strategies: Vec<BoxedStrategy<Value>> = seeds.into_iter().chain([limits]).map(mutated_json).collect();
    proptest::strategy::Union::new(strategies)
        .prop_filter_map("representable in TOML", |v| toml::to_string(&v).ok())
        .boxed()
}

/// One of `valid` nine times in ten, else one of `invalid`.
fn mostly(valid: Vec<&'static str>, invalid: Vec<&'static str>) -> BoxedStrategy<&'static str> {
    prop_oneof![9 => prop::sample::select(valid), 1 => prop::sample::select(invalid)].boxed()
}

/// A `tenant.toml` generated field by field from the file's vocabulary —
/// mostly valid names and values, with edge cases mixed in (unknown enums,
/// extreme priorities and limits, duplicate priorities, odd keys and
/// policies) — so that many parse and reach the checks and the loader.
fn generated_tenant_toml() -> BoxedStrategy<String> {
    let extreme = vec![-1, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX];
    let priority = prop_oneof![4 => 0i64..3, 1 => prop::sample::select(extreme)];
    let config_map = prop::collection::btree_map(
        prop::sample::select(vec!["role", "threshold", "x", ""]).prop_map(str::to_owned),
        prop_oneof![
            prop::sample::select(vec!["OWNER", "COMMERCE_REP", "NOPE", ""]).prop_map(Value::from),
            leaf().prop_filter("TOML has no null", |v| !v.is_null())
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let criterion = (
        mostly(
            vec!["ROLE_MATCH", "LAST_CONTACTED_SAME_CHANNEL", "LAST_CONTACTED_ALL_CHANNELS"],
            vec!["NOPE", "role_match", "", "ROLE MATCH"],
        ),
        prop::option::of(config_map.clone()),
        prop::option::of(priority.clone()),
    )
        .prop_map(|(t, config, priority)| {
            let mut c = json!({"type": t});
            if let Some(config) = config {
                c["config"] = config;
            }
            if let Some(p) = priority {
                c["priority"] = json!(p);
            }
            c
        });
    let resolution = (
        mostly(vec!["ON_CREATION", "ON_DISPATCH", "MANUAL"], vec!["on_creation", "LATER"]),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(priority),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::collection::vec(
            mostly(vec!["SALESMAN", "CALLCENTER", "WHATSAPP", "EMAIL", "SMS", "PUSH"], vec!["FAX", "whatsapp"]),
            0..4,
        )),
        prop::collection::vec(criterion, 0..3),
    )
        .prop_map(|(strategy, rep, owner, priority, active, channels, criteria)| {
            let mut c = json!({"resolution_strategy": strategy, "criteria": criteria});
            let fields = [
                ("fallback_to_commerce_rep", rep.map(Value::from)),
                ("fallback_to_owner", owner.map(Value::from)),
                ("priority", priority.map(Value::from)),
                ("active", active.map(Value::from)),
                ("channels", channels.map(|c| json!(c))),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    c[k] = v;
                }
            }
            c
        });
    let key = mostly(vec!["commerce_info", "promotions", "coupon", "tier"], vec!["Bad-Key", "x".repeat(65).leak(), ""]);
    let attribute = (
        mostly(vec!["UPFRONT", "ON_DISPATCH", "CALLER_PROVIDED"], vec!["LATER"]),
        prop::option::of(mostly(vec!["commerce_info", "promotions"], vec!["missing", "../x"])),
        prop::option::of(json_value().prop_filter("TOML has no null", |v| !v.to_string().contains("null"))),
        prop::option::of(config_map),
    )
        .prop_map(|(strategy, policy, fallback, config)| {
            let mut a = json!({"strategy": strategy});
            if let Some(p) = policy {
                a["policy"] = json!(p);
            }
            if let Some(f) = fallback {
                a["fallback"] = f;
            }
            if let Some(c) = config {
                a["config"] = c;
            }
            a
        });
    let limit = || {
        prop::option::of(prop_oneof![
            4 => prop::sample::select(vec![1i64, 16, 20, 64, 256]),
            1 => prop::sample::select(vec![0i64, 1_000, 1_001, 4_096, 10_001, -1, i64::MAX]),
        ])
    };
    (
        prop::option::of(nasty_string().prop_filter("no NUL in TOML", |s| !s.contains('\0'))),
        prop::option::of(prop::collection::vec(resolution, 0..3)),
        prop::collection::btree_map(key.clone(), attribute, 0..3),
        prop::collection::btree_map(key, (nasty_string(), prop::option::of(nasty_string())), 0..3),
        prop::option::of((limit(), limit(), limit(), limit())),
    )
        .prop_filter_map("representable in TOML", |(name, resolution, attributes, keys, limits)| {
            let mut doc = serde_json::Map::new();
            if let Some(n) = name {
                doc.insert("name".into(), json!(n));
            }
            if let Some(r) = resolution {
                doc.insert("target_resolution".into(), json!(r));
            }
            if !attributes.is_empty() {
                doc.insert("attributes".into(), json!(attributes));
            }
            if !keys.is_empty() {
                let keys: Map<String, Value> = keys
                    .into_iter()
                    .map(|(k, (label, description))| {
                        let mut d = json!({"label": label});
                        if let Some(desc) = description {
                            d["description"] = json!(desc);
                        }
                        (k.to_owned(), d)
                    })
                    .collect();
                doc.insert("attribute_keys".into(), Value::Object(keys));
            }
            if let Some((deadline, memory, output, candidates)) = limits {
                let mut l = serde_json::Map::new();
                for (k, v) in [
                    ("deadline_ms", deadline),
                    ("memory_mib", memory),
                    ("max_output_kib", output),
                    ("max_candidates", candidates),
                ] {
                    if let Some(v) = v {
                        l.insert(k.into(), json!(v));
                    }
                }
                doc.insert("limits".into(), Value::Object(l));
            }
            toml::to_string(&Value::Object(doc)).ok()
        })
        .boxed()
}

/// Rhai expressions over the input, with the operations that can overflow,
/// divide by zero, index out of range or mismatch types.
fn rhai_expr() -> BoxedStrategy<String> {
    let leaf = prop::sample::select(vec![
        "input",
        "input.commerce",
        "input.commerce.users",
        "input.commerce.users[0]",
        "input.commerce.users[0].id",
        "input.commerce.metadata",
        "input.activity.score",
        "input.activity",
        "input.history",
        "input.config",
        "input.nope",
        "()",
        "0",
        "1",
        "-1",
        "42",
        "9223372036854775807",
        "-9223372036854775807 - 1",
        "1.5e308",
        "0.0",
        "\"\"",
        "\"x\"",
        "\"\\u{0}\"",
        "[]",
        "[1, 2, 3]",
        "#{}",
        "#{a: 1}",
        "true",
        "'c'",
    ])
    .prop_map(str::to_owned);
    leaf.prop_recursive(4, 32, 3, |inner| {
        let two = (inner.clone(), inner.clone());
        prop_oneof![
            (
                prop::sample::select(vec![
                    "+", "-", "*", "/", "%", "**", "<<", ">>", "&", "|", "^", "==", "<", "??", "in"
                ]),
                two.clone()
            )
                .prop_map(|(op, (a, b))| format!("({a} {op} {b})")),
            two.clone().prop_map(|(a, b)| format!("{a}[{b}]")),
            two.clone().prop_map(|(a, b)| format!("[{a}, {b}]")),
            two.clone().prop_map(|(a, b)| format!("#{{k: {a}, v: {b}}}")),
            two.clone().prop_map(|(a, b)| format!("{a}.map(|u| {b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.filter(|u| {b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.contains({b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.index_of({b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.split({b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.sub_string({b}, {b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.extract({b})")),
            two.clone().prop_map(|(a, b)| format!("{a}.get({b})")),
            two.clone().prop_map(|(a, b)| format!("range({a}, {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("if {a} {{ {b} }} else {{ {c} }}")),
            two.prop_map(|(a, b)| format!("{{ let v = {a}; v.push({b}); v }}")),
            (
                prop::sample::select(vec![
                    "len",
                    "to_string",
                    "keys",
                    "values",
                    "sort",
                    "reverse",
                    "chars",
                    "to_upper",
                    "abs",
                    "to_int",
                    "to_float",
                    "is_empty",
                    "pop",
                    "shift",
                    "to_json",
                    "to_blob",
                    "floor",
                    "sqrt"
                ]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{a}.{f}()")),
            (
                prop::sample::select(vec!["parse_int", "parse_float", "type_of", "to_string", "is_def_var", "sign"]),
                inner
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
        ]
    })
    .boxed()
}

/// A criterion script: `fn resolve(input)` returning an expression.
fn rhai_script() -> BoxedStrategy<String> {
    rhai_expr().prop_map(|e| format!("fn resolve(input) {{\n    {e}\n}}\n")).boxed()
}

/// Rhai-ish token soup: keywords, operators and punctuation in any order.
fn rhai_soup() -> BoxedStrategy<String> {
    let token = prop::sample::select(vec![
        "fn", "resolve", "(", ")", "{", "}", "[", "]", "#{", "let", "const", "if", "else", "loop", "while", "for",
        "in", "return", "throw", "try", "catch", "import", "export", "as", "eval", "Fn", "call", "this", "global",
        "private", "switch", "=>", "|", "||", "x", "input", ".", ",", ";", ":", "::", "=", "+=", "**", "?.", "??",
        "`${", "`", "\"", "'", "0x", "1_000", "1e", "//", "/*", "*/", "\n", "!", "?",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|t| t.join(" ")).boxed()
}

fn rhai_engine() -> Arc<RhaiEngine> {
    static ENGINE: OnceLock<Arc<RhaiEngine>> = OnceLock::new();
    ENGINE.get_or_init(|| Arc::new(RhaiEngine::new())).clone()
}

fn wasm_engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new().unwrap()).clone()
}

/// The built plugins, criteria first.
fn plugins() -> Vec<Vec<u8>> {
    ["test_pick_owner", "role_match_wasm", "last_order", "loyalty_tier", "test_attr_v1"]
        .into_iter()
        .map(plugin)
        .collect()
}

// ---------------------------------------------------------------------------
// The loaders, in process.

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn the_config_loaders_never_panic_on_any_text(
        text in prop_oneof![any::<String>(), rhai_soup(), mutated_text(repo_files("toml"))]
    ) {
        let _ = parse_config(&text, true);
        let _ = parse_config(&text, false);
        let _ = parse_catalogue(&text);
    }

    #[test]
    fn the_config_loaders_never_panic_on_structured_near_valid_toml(
        text in prop_oneof![generated_tenant_toml(), mutated_tenant_toml()]
    ) {
        let _ = parse_config(&text, true);
        let _ = parse_config(&text, false);
        let _ = parse_catalogue(&text);
    }

    #[test]
    fn the_rhai_compiler_never_panics(
        source in prop_oneof![any::<String>(), rhai_soup(), rhai_script(), mutated_text(repo_files("rhai"))]
    ) {
        let _ = rhai_engine().compile(&source);
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn the_wasm_compiler_never_panics(
        bytes in prop_oneof![
            3 => mutated_bytes(plugins()),
            1 => prop::collection::vec(any::<u8>(), 0..256),
            1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| [b"\0asm\x0d\0\x01\0".to_vec(), b].concat()),
        ],
        attribute in any::<bool>(),
    ) {
        let kind = if attribute { PolicyKind::Attribute } else { PolicyKind::Criterion };
        let _ = wasm_engine().compile(&bytes, kind);
    }
}

/// The real plugins compile, so the mutations above start from valid input.
#[test]
fn the_unmutated_plugins_compile() {
    for (i, bytes) in plugins().iter().enumerate() {
        let kind = if i < 3 { PolicyKind::Criterion } else { PolicyKind::Attribute };
        if let Err(e) = wasm_engine().compile(bytes, kind) {
            panic!("plugin {i}: {e}");
        }
    }
    for source in repo_files("rhai") {
        assert!(rhai_engine().compile(&source).is_ok(), "{source}");
    }
}

// ---------------------------------------------------------------------------
// Bodies through the router.

#[sqlx::test(migrations = "../migrations")]
async fn arbitrary_create_and_preview_bodies_never_get_a_5xx(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("hostile-create").await;
    // The intact body is accepted, so mutations start from a valid request.
    app.create_activity(tenant, &full_body(commerce)).await.assert_status(StatusCode::CREATED);

    let a = app.clone();
    check_async(
        512,
        move || prop_oneof![4 => mutated_json(full_body(commerce)), 1 => json_value()],
        move |mut body: Value| {
            let app = a.clone();
            async move {
                // A fresh key unless the mutation changed it, so that valid
                // mutants go all the way to the insert rather than a 409.
                if body.get("idempotency_key") == Some(&json!("hostile")) {
                    body["idempotency_key"] = json!(Uuid::new_v4().to_string());
                }
                sane("POST /api/activities", &app.create_activity(tenant, &body).await)?;
                sane("POST /api/activities/preview", &app.post(tenant, "/api/activities/preview", &body).await)
            }
        },
    )
    .await;

    // Bytes that are not JSON, or barely.
    let a = app.clone();
    check_async(
        64,
        || {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                mutated_bytes(vec![serde_json::to_vec(&full_body(Uuid::nil())).unwrap()]),
                Just(b"[".repeat(10_000)),
                Just([b"{\"a\":".repeat(5_000), b"1".to_vec(), b"}".repeat(5_000)].concat()),
            ]
        },
        move |bytes| {
            let app = a.clone();
            async move {
                let req = Request::post("/api/activities")
                    .header("authorization", format!("Bearer {}", admin_token(tenant)))
                    .header("x-tenant-id", tenant.to_string())
                    .header("content-type", "application/json")
                    .body(Body::from(bytes))
                    .unwrap();
                sane("POST /api/activities (bytes)", &app.send(req).await)
            }
        },
    )
    .await;

    print_tally("POST /api/activities");
    // The service is intact: the valid body still works.
    let mut body = full_body(commerce);
    body["idempotency_key"] = json!("after-the-storm");
    app.create_activity(tenant, &body).await.assert_status(StatusCode::CREATED);
}

#[sqlx::test(migrations = "../migrations")]
async fn arbitrary_commerce_key_and_tenant_bodies_never_get_a_5xx(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("hostile-commerce").await;

    let a = app.clone();
    check_async(
        256,
        move || {
            let sync = json!({"items": [standard_commerce("c-1"), standard_commerce("c-2")]});
            let patch = json!({"name": "New name", "is_active": true, "metadata": {"segment": "silver"},
                               "tax_id": "t-9", "global_external_id": "g-1"});
            let key = json!({"name": "k", "permissions": ["CREATE_ACTIVITY"], "expiresAt": "2099-01-01T00:00:00.000Z"});
            let setup = json!({"name": "Acme", "slug": "acme"});
            (
                0usize..4,
                prop_oneof![
                    mutated_json(sync),
                    mutated_json(patch),
                    mutated_json(key),
                    mutated_json(setup),
                    json_value()
                ],
            )
        },
        move |(route, body): (usize, Value)| {
            let app = a.clone();
            async move {
                let res = match route {
                    0 => app.post(tenant, "/api/commerces/sync", &body).await,
                    1 => {
                        let uri = format!("/api/commerces/{commerce}");
                        app.call(Method::PATCH, &uri, Some(&admin_token(tenant)), Some(tenant), Some(&body)).await
                    }
                    2 => app.post(tenant, "/api/api-keys", &body).await,
                    _ => {
                        let root = super_admin_token();
                        app.call(Method::POST, "/api/tenant/setup", Some(&root), None, Some(&body)).await
                    }
                };
                let what = [
                    "POST /api/commerces/sync",
                    "PATCH /api/commerces/{id}",
                    "POST /api/api-keys",
                    "POST /api/tenant/setup",
                ];
                sane(what[route], &res)
            }
        },
    )
    .await;
    for what in
        ["POST /api/commerces/sync", "PATCH /api/commerces/{id}", "POST /api/api-keys", "POST /api/tenant/setup"]
    {
        print_tally(what);
    }
    // Whatever the syncs did, the tenant's commerce still reads back.
    app.get(tenant, &format!("/api/commerces/{commerce}")).await.assert_status(StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Policy files through the admin API, then used.

/// Uploads through the tenant admin API.
async fn put(app: &TestApp, tenant: TenantId, uri: &str, bytes: Vec<u8>) -> TestResponse {
    app.send_bytes(Method::PUT, uri, &admin_token(tenant), Some(tenant), bytes).await
}

#[sqlx::test(migrations = "../migrations")]
async fn generated_tenant_tomls_uploaded_then_used_never_get_a_5xx(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("hostile-toml").await;
    let a = app.clone();
    check_async(
        128,
        || prop_oneof![4 => generated_tenant_toml(), 1 => mutated_tenant_toml(), 1 => mutated_text(repo_files("toml"))],
        move |text| {
            let app = a.clone();
            async move {
                let res = put(&app, tenant, "/api/policies/config/tenant.toml", text.into_bytes()).await;
                sane("toml: PUT tenant.toml", &res)?;
                if res.status.is_success() {
                    let mut body = full_body(commerce);
                    body["idempotency_key"] = json!(Uuid::new_v4().to_string());
                    body.as_object_mut().unwrap().remove("target_criteria");
                    sane("toml: create after the upload", &app.create_activity(tenant, &body).await)?;
                    sane("toml: config view", &app.get(tenant, "/api/activity-config/target-resolution").await)?;
                    sane("toml: attribute keys", &app.get(tenant, "/api/activity-config/attribute-keys").await)?;
                }
                Ok(())
            }
        },
    )
    .await;
    print_tally("toml:");
}

#[sqlx::test(migrations = "../migrations")]
async fn generated_rhai_criteria_uploaded_then_run_never_get_a_5xx(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("hostile-rhai").await;
    let a = app.clone();
    check_async(
        256,
        || prop_oneof![4 => rhai_script(), 1 => mutated_text(repo_files("rhai"))],
        move |source| {
            let app = a.clone();
            async move {
                let res = put(&app, tenant, "/api/policies/criteria/fuzzed.rhai", source.into_bytes()).await;
                sane("rhai: PUT fuzzed.rhai", &res)?;
                if res.status.is_success() {
                    let mut body = seed_body(commerce, "fuzz");
                    body["target_criteria"] = json!([{"type": "FUZZED"}]);
                    let res = app.post(tenant, "/api/activities/preview", &body).await;
                    sane("rhai: preview", &res)?;
                    prop_assert_eq!(res.status, StatusCode::OK, "a policy never fails a request: {}", res.body);
                    let kind = res.body["trace"]["target"]["criteria"][0]["error"]["kind"].as_str().unwrap_or("ok");
                    *TALLY.lock().unwrap().entry((format!("rhai: criterion outcome {kind}"), 200)).or_default() += 1;
                }
                Ok(())
            }
        },
    )
    .await;
    print_tally("rhai:");
}

#[sqlx::test(migrations = "../migrations")]
async fn mutated_wasm_plugins_uploaded_then_run_never_get_a_5xx(pool: PgPool) {
    let app = Arc::new(TestApp::new(pool).await);
    let (tenant, commerce) = app.seeded("hostile-wasm").await;
    let a = app.clone();
    check_async(
        48,
        || mutated_bytes(plugins()[..3].to_vec()),
        move |bytes| {
            let app = a.clone();
            async move {
                let res = put(&app, tenant, "/api/policies/criteria/mutant.wasm", bytes).await;
                sane("wasm: PUT mutant.wasm", &res)?;
                if res.status.is_success() {
                    let mut body = seed_body(commerce, "mutant");
                    body["target_criteria"] = json!([{"type": "MUTANT", "config": {"role": "OWNER"}}]);
                    let res = app.post(tenant, "/api/activities/preview", &body).await;
                    sane("wasm: preview", &res)?;
                    prop_assert_eq!(res.status, StatusCode::OK, "a policy never fails a request: {}", res.body);
                }
                Ok(())
            }
        },
    )
    .await;
    print_tally("wasm:");
}
