//! Two real `reten serve` replicas dispatching one backlog: every activity
//! reaches the receiver exactly once; with one replica killed (SIGKILL)
//! mid-run, every activity still ends DISPATCHED, anything sent twice
//! carries the same key, and nothing is DISPATCHED without a 2xx. The
//! replicas' debug logs never hold the credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reten_host::domain::TenantId;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::dispatch::{API_KEY, SIGNING_SECRET, local, webhook};
use crate::receiver::{Answer, Receiver};
use crate::support::{SECRET, SECRETS_KEY, TestApp, seed_body, standard_commerce};

const TENANTS: usize = 10;
const PER_TENANT: usize = 100;

/// A running replica and everything it logged.
struct Replica {
    child: tokio::process::Child,
    logs: Arc<Mutex<Vec<String>>>,
}

async fn replica(database_url: &str, policies: &std::path::Path, per_tenant: usize) -> Replica {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("RETEN_LISTEN", "127.0.0.1:0")
        .env("RETEN_POLICIES_DIR", policies)
        .env("RETEN_JWT_SECRET", SECRET)
        .env_remove("RETEN_JWT_PUBLIC_KEY")
        .env("RETEN_SECRETS_KEY", SECRETS_KEY)
        .env("RETEN_DISPATCH_ALLOW_HOSTS", "127.0.0.1")
        .env("RETEN_DISPATCH_ALLOW_PUBLIC", "false")
        .env("RETEN_DISPATCH_INTERVAL_MS", "200")
        .env("RETEN_DISPATCH_TIMEOUT_MS", "1000")
        .env("RETEN_DISPATCH_PER_TENANT", per_tenant.to_string())
        .env("RETEN_SHUTDOWN_GRACE_SECS", "5")
        .env("RETEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug,sqlx=warn,cranelift_codegen=info,wasmtime=info,wasmtime_cranelift=info,hyper=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (mut out, mut err) =
        (BufReader::new(child.stdout.take().unwrap()).lines(), BufReader::new(child.stderr.take().unwrap()).lines());
    let (serving_tx, serving) = tokio::sync::oneshot::channel::<()>();
    let out_logs = logs.clone();
    tokio::spawn(async move {
        let mut serving_tx = Some(serving_tx);
        while let Ok(Some(line)) = out.next_line().await {
            let started = serde_json::from_str::<Value>(&line).is_ok_and(|e| e["message"] == "serving");
            out_logs.lock().unwrap().push(line);
            if started && let Some(tx) = serving_tx.take() {
                let _ = tx.send(());
            }
        }
    });
    let err_logs = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            err_logs.lock().unwrap().push(line);
        }
    });
    if tokio::time::timeout(Duration::from_secs(60), serving).await.is_err() {
        panic!("the replica did not start: {:#?}", logs.lock().unwrap());
    }
    Replica { child, logs }
}

/// Ten tenants with a webhook config each and a hundred due activities
/// each, created before any replica runs.
async fn backlog(app: &TestApp, receiver: &Receiver) -> Vec<TenantId> {
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let tenant = app.create_tenant(&format!("replicas-{t}")).await;
        app.sync(tenant, json!([standard_commerce("c-1")])).await;
        let commerce = app.commerce_id(tenant, "c-1").await;
        webhook(app, tenant, "WHATSAPP", receiver).await;
        for n in 0..PER_TENANT {
            let res = app.create_activity(tenant, &seed_body(commerce, &format!("bulk-{n}"))).await;
            assert_eq!(res.body["status"], "READY", "{}", res.body);
        }
        tenants.push(tenant);
    }
    tenants
}

async fn count_dispatched(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM activities WHERE status = 'DISPATCHED'").fetch_one(pool).await.unwrap()
}

/// Polls until every activity is DISPATCHED; fails after `limit`.
async fn all_dispatched(pool: &PgPool, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        poll.tick().await;
        let done = count_dispatched(pool).await;
        if done == (TENANTS * PER_TENANT) as i64 {
            return;
        }
        assert!(Instant::now() < deadline, "only {done} DISPATCHED after {limit:?}");
    }
}

/// Received requests by idempotency key, checking each body names its key.
fn by_key(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for r in receiver.received() {
        let key = r.header("idempotency-key").unwrap();
        assert_eq!(r.json()["activity"]["id"], key.as_str(), "the key is the activity's id");
        *keys.entry(key).or_insert(0) += 1;
    }
    keys
}

async fn database_url(pool: &PgPool) -> String {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    format!("postgres://postgres@127.0.0.1:5432/{database}")
}

fn assert_no_credentials(replicas: &[&Replica]) {
    let logs: String = replicas.iter().map(|r| r.logs.lock().unwrap().join("\n")).collect();
    assert!(logs.contains("dispatcher started"), "the replicas logged");
    assert!(!logs.contains(API_KEY) && !logs.contains(SIGNING_SECRET), "credentials in the replicas' logs");
    assert!(!logs.contains(SECRETS_KEY), "the secrets key in the replicas' logs");
}

#[sqlx::test(migrations = "../migrations")]
async fn two_replicas_send_a_thousand_due_activities_of_ten_tenants_each_exactly_once(pool: PgPool) {
    let mut app = TestApp::new(pool.clone()).await;
    app.set_dispatch(local(1_000, 1_000, 3), Some(SECRETS_KEY));
    let receiver = Receiver::start(Answer::Accept).await;
    backlog(&app, &receiver).await;
    let url = database_url(&pool).await;
    let (mut a, mut b) = tokio::join!(replica(&url, app.policies.path(), 16), replica(&url, app.policies.path(), 16));

    all_dispatched(&pool, Duration::from_secs(60)).await;
    let keys = by_key(&receiver);
    assert_eq!(keys.len(), TENANTS * PER_TENANT, "every activity was received");
    let twice: Vec<&String> = keys.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k).collect();
    assert!(twice.is_empty(), "received more than once: {twice:?}");
    let stored: BTreeSet<String> =
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT id FROM activities WHERE provider_activity_id IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|id| id.to_string())
            .collect();
    assert_eq!(stored, keys.keys().cloned().collect(), "each has its provider id");
    assert_no_credentials(&[&a, &b]);
    for r in [&mut a, &mut b] {
        let pid = r.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(20), r.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "SIGTERM stops a replica cleanly: {status}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replica_killed_mid_run_loses_nothing_and_nothing_is_dispatched_without_a_2xx(pool: PgPool) {
    let mut app = TestApp::new(pool.clone()).await;
    app.set_dispatch(local(1_000, 1_000, 3), Some(SECRETS_KEY));
    // Slow answers and two sends per tenant per replica: the run lasts a few
    // seconds, so the kill lands while sends are in flight.
    let receiver = Receiver::start(Answer::Hang(Duration::from_millis(150))).await;
    backlog(&app, &receiver).await;
    let url = database_url(&pool).await;
    let (mut a, b) = tokio::join!(replica(&url, app.policies.path(), 2), replica(&url, app.policies.path(), 2));

    receiver.wait_for(300, Duration::from_secs(60)).await;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let killed_at = count_dispatched(&pool).await;
    assert!(killed_at < (TENANTS * PER_TENANT) as i64, "the kill landed mid-run ({killed_at} dispatched)");

    all_dispatched(&pool, Duration::from_secs(90)).await;
    let keys = by_key(&receiver);
    assert_eq!(keys.len(), TENANTS * PER_TENANT, "every activity was received");
    let without_2xx: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM activities a WHERE a.status = 'DISPATCHED' AND NOT EXISTS (
           SELECT 1 FROM dispatch_attempts t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id
             AND t.outcome = 'SUCCESS' AND t.http_status BETWEEN 200 AND 299)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(without_2xx, 0, "nothing is DISPATCHED without a 2xx attempt");
    let twice = keys.values().filter(|n| **n > 1).count();
    eprintln!("SIGKILL mid-run: {killed_at} dispatched at the kill; {twice} activities received twice, same key");
    assert_no_credentials(&[&a, &b]);
}
