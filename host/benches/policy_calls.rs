//! Per-call cost of policies: a Rhai criterion, a Wasm criterion on a fresh
//! instance, and the full resolution of one activity.
//!
//! Needs the plugins built (`plugins/build.sh`). Run with
//! `cargo bench -p reten-host --bench policy_calls`.

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use reten_host::domain::activity::NewActivity;
use reten_host::domain::commerce::{Commerce, CommerceUser, Contact, HistoryEntry};
use reten_host::domain::{ActivityId, Channel, CommerceId, CommerceUserId, ContactType, TenantId, UserRole};
use reten_host::metrics::Metrics;
use reten_host::policy::gate::{GateSettings, Gates};
use reten_host::policy::registry::RegistryOptions;
use reten_host::policy::{CallContext, Registry, TenantSnapshot};
use reten_host::resolve;
use serde_json::json;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn user(name: &str, roles: &[UserRole], contact: ContactType) -> CommerceUser {
    CommerceUser {
        id: CommerceUserId::new(),
        external_id: Some(name.to_lowercase()),
        name: Some(name.into()),
        is_active: true,
        roles: roles.to_vec(),
        contacts: vec![Contact { contact_type: contact, value: "+56911111111".into(), is_primary: true }],
    }
}

/// A typical commerce: four users, metadata, one address, some history.
fn commerce() -> (Commerce, Vec<HistoryEntry>) {
    let users = vec![
        user("Maria Gonzalez", &[UserRole::Owner], ContactType::Whatsapp),
        user("Ana Diaz", &[UserRole::Orders], ContactType::Email),
        user("Pedro Soto", &[UserRole::Finance], ContactType::Phone),
        user("Juan Perez", &[UserRole::CommerceRep], ContactType::Phone),
    ];
    let history = users
        .iter()
        .take(2)
        .map(|u| HistoryEntry {
            commerce_user_id: u.id,
            channel: Some(Channel::Whatsapp),
            activity_id: ActivityId::new(),
            last_targeted_at: chrono::Utc::now(),
        })
        .collect();
    let metadata = json!({"segment": "gold", "total_spend": 12500, "promotions": [{"code": "2x1"}]});
    let commerce = Commerce {
        id: CommerceId::new(),
        external_id: "c-1".into(),
        name: "Almacén Don Pepe".into(),
        tax_id: Some("76.123.456-7".into()),
        global_external_id: None,
        is_active: true,
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        addresses: vec![Default::default()],
        users,
    };
    (commerce, reten_host::domain::commerce::with_overall_history(history))
}

fn activity(snapshot: &TenantSnapshot, commerce: &Commerce) -> NewActivity {
    let body = json!({
        "type": "MESSAGE", "reason": "Monthly promotion", "channel": "WHATSAPP", "commerce_id": commerce.id,
        "idempotency_key": "bench", "scheduled_at": "2025-01-16T09:00:00.000Z", "attribute_keys": ["commerce_info"]
    });
    NewActivity::parse(&body, snapshot).expect("a valid body")
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&manifest.join("../policies"), dir.path());
    let wasm = std::fs::read(manifest.join("../plugins/dist/role_match_wasm.wasm"))
        .expect("plugins/dist/role_match_wasm.wasm: run plugins/build.sh first");
    std::fs::write(dir.path().join("global/criteria/role_match_wasm.wasm"), wasm).expect("write");
    let looping = std::fs::read(manifest.join("../plugins/dist/test_loop.wasm")).expect("plugins/dist/test_loop.wasm");
    std::fs::write(dir.path().join("global/criteria/test_loop.wasm"), looping).expect("write");
    let registry = Registry::load(dir.path(), RegistryOptions::default()).expect("policies load");
    let tenant = TenantId::new();
    let snapshot = registry.snapshot(tenant);
    let (commerce, history) = commerce();
    let commerce = Arc::new(commerce);
    let activity = activity(&snapshot, &commerce);
    let input = resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history.clone());
    let config = json!({"role": "COMMERCE_REP"}).as_object().cloned().unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");

    let rhai = snapshot.criterion("ROLE_MATCH").expect("role_match.rhai").clone();
    c.bench_function("rhai_criterion_role_match", |b| {
        b.to_async(&rt).iter(|| async {
            let call = rhai.resolve_criterion(&input, &config, &snapshot.limits).await;
            assert!(call.result.is_ok(), "{:?}", call.result);
        })
    });

    let wasm = snapshot.criterion("ROLE_MATCH_WASM").expect("role_match_wasm.wasm").clone();
    c.bench_function("wasm_criterion_role_match_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            let call = wasm.resolve_criterion(&input, &config, &snapshot.limits).await;
            assert!(call.result.is_ok(), "{:?}", call.result);
        })
    });

    // The same component on an engine without fuel metering: what metering
    // costs a call (the host always meters; see WasmOptions::unmetered).
    let unmetered =
        reten_host::policy::wasm_engine::WasmEngine::with_options(reten_host::policy::wasm_engine::WasmOptions {
            unmetered: true,
            ..Default::default()
        })
        .expect("engine");
    let bytes = std::fs::read(manifest.join("../plugins/dist/role_match_wasm.wasm")).expect("role_match_wasm.wasm");
    let epoch_only = unmetered.compile(&bytes, reten_host::policy::PolicyKind::Criterion).expect("compiles");
    c.bench_function("wasm_criterion_role_match_fresh_instance_epoch_only", |b| {
        b.to_async(&rt).iter(|| async {
            let run = epoch_only.resolve_criterion(&input, &config, &snapshot.limits).await;
            assert!(run.result.is_ok(), "{:?}", run.result);
        })
    });

    c.bench_function("full_resolution_of_one_activity", |b| {
        b.to_async(&rt).iter(|| async {
            // A fresh input per iteration: the per-request conversions count.
            let input = resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history.clone());
            let resolution = resolve::resolve_activity(&snapshot, &input, &activity).await;
            assert_eq!(resolution.status, reten_host::domain::ActivityStatus::Ready);
        })
    });
}

/// A Wasm call on a single-threaded runtime while another call on the same
/// thread loops until its deadline: async calls yield at every epoch tick
/// (1 ms), so the fast call waits at most a tick, not the whole deadline.
fn noisy_neighbour(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&manifest.join("../policies"), dir.path());
    for name in ["role_match_wasm", "test_loop"] {
        let bytes = std::fs::read(manifest.join(format!("../plugins/dist/{name}.wasm"))).expect("run plugins/build.sh");
        std::fs::write(dir.path().join(format!("global/criteria/{name}.wasm")), bytes).expect("write");
    }
    // The neighbour is another tenant: calls of one tenant wait for its own
    // call slots (half the cores), so the same tenant's fast call would wait
    // out the whole deadline (about 18 ms). And no breaker: with one, the
    // neighbour's calls fail at once after a few deadlines (`CIRCUIT_OPEN`),
    // so it would no longer loop, and its `loop` (which then never awaits
    // anything) would hold the thread for good.
    let calls = Arc::new(CallContext {
        gates: Gates::new(GateSettings { per_tenant: 0, breaker_after: 0 }),
        metrics: Arc::new(Metrics::new(false)),
    });
    let registry = Registry::load(dir.path(), RegistryOptions { calls, ..Default::default() }).expect("policies load");
    let tenant = TenantId::new();
    let snapshot = registry.snapshot(tenant);
    let (commerce, history) = commerce();
    let activity = activity(&snapshot, &commerce);
    let commerce = Arc::new(commerce);
    let input = Arc::new(resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), history.clone()));
    let neighbour_input = Arc::new(resolve::prepare_input(TenantId::new(), &activity, commerce, history));
    let config = json!({"role": "COMMERCE_REP"}).as_object().cloned().unwrap_or_default();
    let fast = snapshot.criterion("ROLE_MATCH_WASM").expect("role_match_wasm").clone();
    let slow = snapshot.criterion("TEST_LOOP").expect("test_loop").clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    c.bench_function("wasm_call_while_a_neighbour_loops_on_the_same_thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (slow, input2, limits) = (slow.clone(), Arc::clone(&neighbour_input), snapshot.limits);
                let neighbour = tokio::spawn(async move {
                    loop {
                        let _ = slow.resolve_criterion(&input2, &Default::default(), &limits).await;
                    }
                });
                tokio::task::yield_now().await;
                let started = std::time::Instant::now();
                for _ in 0..iters {
                    let call = fast.resolve_criterion(&input, &config, &snapshot.limits).await;
                    assert!(call.result.is_ok(), "{:?}", call.result);
                }
                let elapsed = started.elapsed();
                neighbour.abort();
                elapsed
            })
        })
    });
}

criterion_group!(policy_calls, benches, noisy_neighbour);
criterion_main!(policy_calls);
