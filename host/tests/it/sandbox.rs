//! Policy sandbox escape attempts. A Wasm plugin that imports WASI
//! (filesystem, clock, random) is refused at upload with the import named; a
//! Rhai script that reaches for `eval`, modules, the clock or undeclared
//! state is refused at compile; one that builds huge strings, arrays or
//! blobs, or recurses without end, is stopped at run time with the reason in
//! the trace. After each attempt the tenant's next request succeeds and the
//! host is unaffected.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestApp, admin_token, plugin, seed_body, super_admin_token};

/// Uploads a tenant criterion through the admin API.
async fn upload(
    app: &TestApp,
    tenant: TenantId,
    file: &str,
    bytes: impl Into<Vec<u8>>,
) -> crate::support::TestResponse {
    let uri = format!("/api/policies/criteria/{file}");
    app.send_bytes(Method::PUT, &uri, &admin_token(tenant), Some(tenant), bytes.into()).await
}

/// The tenant still works: a plain create answers 201 READY, promptly.
async fn still_works(app: &TestApp, tenant: TenantId, commerce: Uuid, key: &str) {
    let started = Instant::now();
    let res = app.create_activity(tenant, &seed_body(commerce, key)).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["status"], "READY", "{}", res.body);
    assert_eq!(res.body["targetUsers"][0]["lockReason"], "CRITERIA_MATCH", "{}", res.body);
    assert!(started.elapsed() < Duration::from_secs(5), "the next request took {:?}", started.elapsed());
    app.call(Method::GET, "/readyz", None, None, None).await.assert_status(StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn wasm_plugins_importing_wasi_are_refused_at_upload_naming_the_import(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("sandbox-wasm").await;
    let generation = app.state.registry.generation();
    let cases = [
        ("test_import_filesystem", "wasi:filesystem/preopens"),
        ("test_import_clock", "wasi:clocks/wall-clock"),
        ("test_import_random", "wasi:random/random"),
        ("test_forbidden_import", "reten:secrets/vault"),
    ];
    for (name, import) in cases {
        let bytes = plugin(name);
        let res = upload(&app, tenant, &format!("{name}.wasm"), bytes.clone()).await;
        res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
        let detail = res.body["detail"].as_str().unwrap();
        assert!(detail.contains(import), "{name}: the error names {import}: {detail}");
        assert!(detail.contains("was not written"), "{name}: {detail}");
        assert!(!app.tenant_path(tenant, &format!("criteria/{name}.wasm")).exists(), "{name} was not written");

        // Nor may a SUPER_ADMIN install one globally.
        let uri = format!("/api/global-policies/criteria/{name}.wasm");
        let res = app.send_bytes(Method::PUT, &uri, &super_admin_token(), None, bytes).await;
        res.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.body["detail"].as_str().unwrap().contains(import), "{}", res.body);
    }
    assert_eq!(app.state.registry.generation(), generation, "nothing was reloaded");
    let mut body = seed_body(commerce, "wasi-1");
    body["target_criteria"] = json!([{"type": "TEST_IMPORT_FILESYSTEM"}]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(res.error_fields(), ["target_criteria[0].type"], "the refused plugin serves nothing");
    still_works(&app, tenant, commerce, "wasi-2").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn rhai_scripts_reaching_for_eval_modules_the_clock_or_the_host_are_refused_at_compile(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("sandbox-rhai-compile").await;
    let deep = format!("fn resolve(input) {{ {}1{} }}", "(".repeat(10_000), ")".repeat(10_000));
    let deep_blocks = format!("fn resolve(input) {{ {}[]{} }}", "{ ".repeat(5_000), " }".repeat(5_000));
    let cases: Vec<(&str, String, &str)> = vec![
        ("eval", r#"fn resolve(input) { eval("[]") }"#.into(), "eval"),
        ("eval_in_string_call", r#"fn resolve(input) { let e = eval; e("[]") }"#.into(), "eval"),
        ("import", "import \"policies/global/criteria/role_match\" as rm;\nfn resolve(input) { [] }".into(), ""),
        ("import_in_fn", "fn resolve(input) { import \"/etc/passwd\" as p; [] }".into(), ""),
        ("undeclared_variable", "fn resolve(input) { secrets }".into(), "secrets"),
        ("global_scope", "let leaked = 1;\nfn resolve(input) { leaked }".into(), "leaked"),
        ("deep_parens", deep, ""),
        ("deep_blocks", deep_blocks, ""),
        ("no_resolve", "fn main() { [] }".into(), "fn resolve(input)"),
    ];
    let mut accepted = Vec::new();
    for (name, source, mentions) in &cases {
        let res = upload(&app, tenant, &format!("{name}.rhai"), source.clone()).await;
        if res.status != StatusCode::UNPROCESSABLE_ENTITY {
            accepted.push(format!("{name}: {} {}", res.status, res.body));
            continue;
        }
        let detail = res.body.to_string();
        eprintln!("{name}: refused at compile: {}", res.body["detail"]);
        assert!(detail.contains(mentions), "{name}: the error mentions '{mentions}': {detail}");
        assert!(!app.tenant_path(tenant, &format!("criteria/{name}.rhai")).exists());
    }
    assert!(accepted.is_empty(), "these escape attempts compiled:\n{}", accepted.join("\n"));

    // The same refusals offline, through the loader the watcher uses: the
    // file is reported and never serves.
    app.write_tenant_file(tenant, "criteria/eval.rhai", &cases[0].1);
    let state = app.state.registry.state();
    let error = state.errors().find(|e| e.path.ends_with("eval.rhai")).expect("a load error for eval.rhai");
    assert!(!error.message.is_empty());
    assert!(app.criterion_version(tenant, "EVAL").is_none(), "the refused script serves nothing");
    still_works(&app, tenant, commerce, "compile-1").await;
}

/// The criterion step of a preview with the single criterion `kind`.
async fn preview_step(app: &TestApp, tenant: TenantId, commerce: Uuid, kind: &str) -> (Value, Duration) {
    let mut body = seed_body(commerce, "preview");
    body["target_criteria"] = json!([{"type": kind}]);
    let started = Instant::now();
    let res = app.post(tenant, "/api/activities/preview", &body).await;
    let elapsed = started.elapsed();
    res.assert_status(StatusCode::OK);
    (res.body["trace"]["target"]["criteria"][0].clone(), elapsed)
}

#[sqlx::test(migrations = "../migrations")]
async fn rhai_scripts_that_exhaust_memory_or_the_stack_are_stopped_at_run_time_with_a_clear_error(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("sandbox-rhai-run").await;
    // (file, source, acceptable failure kinds, words the message must hold)
    let cases: &[(&str, &str, &[&str], &str)] = &[
        ("string_doubling", "fn resolve(input) { let s = \"x\"; loop { s += s; } }", &["MEMORY"], "size cap"),
        (
            "string_append",
            "fn resolve(input) { let s = \"\"; loop { s += \"0123456789abcdef\"; } }",
            &["MEMORY", "DEADLINE"],
            "",
        ),
        ("string_pad", "fn resolve(input) { let s = \"x\"; s.pad(2000000000, 'y'); [s] }", &["MEMORY"], "size cap"),
        (
            "string_in_array",
            "fn resolve(input) { let s = \"x\"; for i in 0..17 { s += s; } let a = []; loop { a.push(s); } }",
            &["MEMORY", "DEADLINE"],
            "",
        ),
        ("array_doubling", "fn resolve(input) { let a = [1]; loop { a += a; } }", &["MEMORY"], "size cap"),
        ("array_pad", "fn resolve(input) { let a = []; a.pad(2000000000, 0); a }", &["MEMORY"], "size cap"),
        (
            "map_growth",
            "fn resolve(input) { let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; } }",
            &["MEMORY", "DEADLINE"],
            "",
        ),
        ("blob", "fn resolve(input) { let b = blob(2000000000); [] }", &["MEMORY"], "size cap"),
        (
            "range_collect",
            "fn resolve(input) { let a = []; for i in 0..2000000000 { a.push(i); } a }",
            &["MEMORY", "DEADLINE"],
            "",
        ),
        ("recursion", "fn down(n) { down(n + 1) }\nfn resolve(input) { down(0) }", &["MEMORY"], "call depth"),
        (
            "mutual_recursion",
            "fn ping(n) { pong(n) }\nfn pong(n) { ping(n) }\nfn resolve(input) { ping(0) }",
            &["MEMORY"],
            "call depth",
        ),
        ("self_recursion", "fn resolve(input) { resolve(input) }", &["MEMORY"], "call depth"),
        ("fn_pointer_recursion", "fn resolve(input) { Fn(\"resolve\").call(input) }", &["MEMORY"], "call depth"),
        ("closure_recursion", "fn resolve(input) { let f = |g| g.call(g); f.call(f) }", &["MEMORY"], "call depth"),
        ("fn_pointer_eval", "fn resolve(input) { Fn(\"eval\").call(\"[]\") }", &["TRAP", "POLICY_ERROR"], ""),
        ("call_eval", "fn resolve(input) { call(Fn(\"eval\"), \"[]\") }", &["TRAP", "POLICY_ERROR"], ""),
        ("clock", "fn resolve(input) { let t = timestamp(); [] }", &["TRAP"], "timestamp"),
    ];
    let mut wrong = Vec::new();
    for (name, source, kinds, words) in cases {
        let res = upload(&app, tenant, &format!("{name}.rhai"), *source).await;
        if !res.status.is_success() {
            // Refused at compile is as good as stopped at run time.
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {}", res.body);
            eprintln!("{name}: refused at compile: {}", res.body["detail"]);
            continue;
        }
        let (step, elapsed) = preview_step(&app, tenant, commerce, &name.to_uppercase()).await;
        let kind = step["error"]["kind"].as_str().unwrap_or("none");
        let message = step["error"]["message"].as_str().unwrap_or_default();
        eprintln!("{name}: stopped after {elapsed:?}: {kind}: {message}");
        if step["outcome"] != "FAILED" || !kinds.contains(&kind) || !message.contains(words) || message.is_empty() {
            wrong.push(format!("{name}: expected {kinds:?} with '{words}', got {step}"));
        }
        // Bounded by the 20 ms deadline and the caps, not by the machine.
        assert!(elapsed < Duration::from_secs(5), "{name}: the preview took {elapsed:?}");
    }
    assert!(wrong.is_empty(), "these scripts were not stopped as expected:\n{}", wrong.join("\n"));

    // The stopped policies never fail a request: a create that runs two of
    // them falls back, stores the reasons, and the next create is READY.
    let mut body = seed_body(commerce, "run-1");
    body["target_criteria"] = json!([{"type": "STRING_DOUBLING"}, {"type": "RECURSION", "priority": 1}]);
    let res = app.create_activity(tenant, &body).await;
    res.assert_status(StatusCode::CREATED);
    assert_eq!(res.body["targetUsers"][0]["lockReason"], "FALLBACK_COMMERCE_REP", "{}", res.body);
    let id = res.body["id"].as_str().unwrap();
    let stored = app.get(tenant, &format!("/api/activities/{id}")).await;
    let steps = stored.body["resolutionTrace"]["target"]["criteria"].as_array().unwrap().clone();
    assert_eq!(steps.len(), 2);
    assert!(steps.iter().all(|s| s["error"]["kind"] == "MEMORY"), "{steps:?}");
    still_works(&app, tenant, commerce, "run-2").await;

    // Another tenant never noticed.
    let (other, other_commerce) = app.seeded("sandbox-bystander").await;
    still_works(&app, other, other_commerce, "bystander-1").await;
}
