//! Graceful shutdown of the real `reten` binary: SIGTERM in the middle of a
//! create load stops accepting connections at once, lets the requests in
//! flight finish (slow ones included), and exits 0 within
//! `RETEN_SHUTDOWN_GRACE_SECS`. Every 201 the clients saw has its row, whole;
//! no row exists without a 201; a create whose connection failed is resolved
//! by a retry with the same key after a restart (201 or 409). The server's
//! own log output, at debug level, never holds the token.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::http1::{self, Failure};
use crate::support::{SECRET, TestApp, admin_token, plugin, seed_body};

const GRACE_SECS: u64 = 5;
/// How long each slow create's criterion runs (a Wasm loop cut at its
/// deadline; Wasm calls yield to the executor, so they block nothing).
const SLOW_MS: u64 = 600;

/// A running `reten serve`, its address and everything it logged.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

async fn start(database_url: &str, policies: &std::path::Path) -> Server {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("RETEN_LISTEN", "127.0.0.1:0")
        .env("RETEN_POLICIES_DIR", policies)
        .env("RETEN_JWT_SECRET", SECRET)
        .env_remove("RETEN_JWT_PUBLIC_KEY")
        .env("RETEN_SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        // The slow creates must stay slow (no breaker skipping the looping
        // policy) and must not hold up the fast ones (no per-tenant gate of
        // one call on a 2-core machine).
        .env("RETEN_POLICY_BREAKER_AFTER", "0")
        .env("RETEN_POLICY_CALLS_PER_TENANT", "8")
        .env("RETEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug,cranelift_codegen=info,wasmtime=info,wasmtime_cranelift=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr_logs = logs.clone();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            stderr_logs.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            logs.lock().unwrap().push(line.clone());
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"] == "serving"
            {
                return event["addr"].as_str().expect("the serving line names its address").parse().unwrap();
            }
        }
        panic!("reten serve ended before serving: {:#?}", logs.lock().unwrap());
    })
    .await
    .expect("the server started within a minute");
    let stdout_logs = logs.clone();
    // Keep reading: a closed pipe would end the server.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            stdout_logs.lock().unwrap().push(line);
        }
    });
    Server { child, addr, logs }
}

impl Server {
    fn sigterm(&self) {
        let pid = self.child.id().expect("the server is running").to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; fails past `limit`.
    async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the server did not exit within {limit:?}"))
            .unwrap()
    }
}

/// What one create got.
#[derive(Debug)]
enum Outcome {
    Created(String),
    Duplicate(String),
    Status(u16, Value),
    Failed(Failure),
}

async fn create(addr: SocketAddr, token: &str, tenant: &str, body: &Value) -> Outcome {
    let bearer = format!("Bearer {token}");
    let bytes = body.to_string();
    let headers = [("authorization", bearer.as_str()), ("x-tenant-id", tenant), ("content-type", "application/json")];
    match http1::send(addr, "POST", "/api/activities", &headers, Some(bytes.as_bytes()), Duration::from_secs(30)).await
    {
        Ok(res) => {
            let b = res.json();
            match res.status {
                201 => Outcome::Created(b["id"].as_str().unwrap().to_owned()),
                409 => Outcome::Duplicate(b["activityId"].as_str().unwrap_or_default().to_owned()),
                s => Outcome::Status(s, b),
            }
        }
        Err(e) => Outcome::Failed(e),
    }
}

fn body_for(commerce: Uuid, key: &str, slow: bool) -> Value {
    let mut body = seed_body(commerce, key);
    if slow {
        body["target_criteria"] = json!([{"type": "TEST_LOOP"}]);
    }
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn sigterm_mid_load_finishes_in_flight_creates_loses_none_and_exits_0(pool: PgPool) {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let app = TestApp::new(pool.clone()).await;
    let (tenant, commerce) = app.seeded("shutdown").await;
    app.write_tenant_bytes(tenant, "criteria/test_loop.wasm", &plugin("test_loop"));
    app.write_tenant_file(tenant, "tenant.toml", &format!("[limits]\ndeadline_ms = {SLOW_MS}\n"));
    let token = admin_token(tenant);
    let tenant_s = tenant.to_string();

    let mut server = start(&url, app.policies.path()).await;
    let addr = server.addr;

    // Six clients, two of them slow, each sending creates back to back with
    // fresh keys until the server stops accepting.
    let stop = Arc::new(AtomicBool::new(false));
    // A permit per answered create, fast and slow apart: SIGTERM waits for
    // load to be flowing on both.
    let (fast_done, slow_done) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (token, tenant_s, stop) = (token.clone(), tenant_s.clone(), stop.clone());
        let slow = w < 2;
        let done = if slow { slow_done.clone() } else { fast_done.clone() };
        workers.push(tokio::spawn(async move {
            let mut log: Vec<(String, bool, Outcome, Instant)> = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("sd-{w}-{n}");
                let outcome = create(addr, &token, &tenant_s, &body_for(commerce, &key, slow)).await;
                let not_sent = matches!(outcome, Outcome::Failed(Failure::NotSent(_)));
                log.push((key, slow, outcome, Instant::now()));
                done.add_permits(1);
                if not_sent {
                    break;
                }
            }
            log
        }));
    }
    // Both slow workers have had a create answered and gone on to their next
    // (600 ms to run); the fast ones then answer 30 more, each a round trip
    // through the same scheduler, so the slow ones' next creates are in the
    // server by then.
    tokio::time::timeout(Duration::from_secs(60), async {
        slow_done.acquire_many(2).await.unwrap().forget();
        let before = u32::try_from(fast_done.available_permits()).unwrap();
        fast_done.acquire_many(before + 30).await.unwrap().forget();
    })
    .await
    .expect("creates were answered within a minute");

    server.sigterm();
    let sigterm_at = Instant::now();
    // It stops accepting at once: a new connection is refused while the
    // slow creates in flight are still running (they finish after, below).
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let refused_at = loop {
        let probe = http1::send(addr, "GET", "/healthz", &[], None, Duration::from_secs(2)).await;
        if matches!(probe, Err(Failure::NotSent(_))) {
            break Instant::now();
        }
        assert!(sigterm_at.elapsed() < Duration::from_secs(1), "still accepting 1 s after SIGTERM: {probe:?}");
        poll.tick().await;
    };

    let status = server.exit_within(Duration::from_secs(GRACE_SECS + 10)).await;
    let took = sigterm_at.elapsed();
    assert!(status.success(), "SIGTERM ends the server with 0: {status}");
    assert!(took < Duration::from_secs(GRACE_SECS), "the server exited {took:?} after SIGTERM");
    stop.store(true, Ordering::Relaxed);

    let mut created: BTreeMap<String, String> = BTreeMap::new();
    let mut ambiguous: Vec<(String, bool)> = Vec::new();
    let mut finished_after_sigterm = 0;
    let mut other = Vec::new();
    let mut sent = 0;
    let mut slow_timeline = Vec::new();
    for w in workers {
        for (key, slow, outcome, at) in w.await.unwrap() {
            if slow {
                let when = at.checked_duration_since(sigterm_at).map(|d| format!("+{d:?}"));
                slow_timeline.push(format!("{key}: {outcome:?} at SIGTERM{}", when.unwrap_or_else(|| "-".into())));
            }
            match outcome {
                Outcome::Created(id) => {
                    sent += 1;
                    if at > refused_at && slow {
                        finished_after_sigterm += 1;
                    }
                    created.insert(key, id);
                }
                Outcome::Failed(Failure::NotSent(_)) => {}
                Outcome::Failed(Failure::Ambiguous(e)) => {
                    sent += 1;
                    eprintln!("{key}: {e}");
                    ambiguous.push((key, slow));
                }
                Outcome::Status(status, body) => {
                    sent += 1;
                    other.push(format!("{key}: {status} {body}"));
                }
                Outcome::Duplicate(id) => {
                    sent += 1;
                    other.push(format!("{key}: 409 naming {id}, for a fresh key"));
                }
            }
        }
    }
    assert!(other.is_empty(), "every answer is a 201: {other:#?}");
    assert!(created.len() > 10, "the load ran: {} creates", created.len());
    assert!(
        finished_after_sigterm > 0,
        "slow creates in flight at SIGTERM finished with their 201 after new connections were refused \
         (refused {:?} after SIGTERM): {slow_timeline:#?}",
        refused_at - sigterm_at
    );
    eprintln!(
        "shutdown: {sent} sent, {} created ({finished_after_sigterm} finished after the listener closed), {} ambiguous",
        created.len(),
        ambiguous.len()
    );

    // Every 201 has its row, whole; no row exists without a 201.
    let rows: Vec<(String, Uuid, i64, i64, i64, i32)> = sqlx::query_as(
        "SELECT a.idempotency_key, a.id,
                (SELECT count(*) FROM activity_target_users t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id),
                (SELECT count(*) FROM activity_attributes t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id),
                (SELECT count(*) FROM activity_status_events t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id),
                cardinality(a.attribute_keys)
         FROM activities a WHERE a.tenant_id = $1",
    )
    .bind(tenant.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored: BTreeMap<String, String> = rows.iter().map(|r| (r.0.clone(), r.1.to_string())).collect();
    assert_eq!(stored.len(), rows.len(), "no key holds two activities");
    let missing: Vec<&String> = created.iter().filter(|(k, id)| stored.get(*k) != Some(*id)).map(|(k, _)| k).collect();
    assert!(missing.is_empty(), "every 201 has its row: missing {missing:?}");
    let unexplained: Vec<&String> = stored.keys().filter(|k| !created.contains_key(*k)).collect();
    assert!(unexplained.is_empty(), "no row without a 201 (the server acted but its answer was lost): {unexplained:?}");
    let partial: Vec<&String> =
        rows.iter().filter(|r| r.2 != 1 || r.3 != i64::from(r.5) || r.4 != 1).map(|r| &r.0).collect();
    assert!(partial.is_empty(), "no activity is half-written: {partial:?}");

    // After a restart, a retry with the same key resolves each ambiguous
    // create (201: it had not happened; 409: it had), and replays of created
    // keys answer 409 naming the same activity.
    let first_logs = server.logs.clone();
    let mut server = start(&url, app.policies.path()).await;
    let replays: Vec<(String, bool)> = created.keys().take(3).map(|k| (k.clone(), false)).collect();
    for (key, slow) in ambiguous.iter().chain(&replays) {
        match create(server.addr, &token, &tenant_s, &body_for(commerce, key, *slow)).await {
            Outcome::Created(id) => {
                assert!(!created.contains_key(key), "{key} was created twice");
                created.insert(key.clone(), id);
            }
            Outcome::Duplicate(id) => {
                let holder: Uuid =
                    sqlx::query_scalar("SELECT id FROM activities WHERE tenant_id = $1 AND idempotency_key = $2")
                        .bind(tenant.0)
                        .bind(key)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(id, holder.to_string(), "{key}: the 409 names the stored activity");
                created.entry(key.clone()).or_insert(id);
            }
            o => panic!("{key}: a retry answers 201 or 409, got {o:?}"),
        }
    }
    let keys: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT idempotency_key FROM activities WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(keys, created.keys().cloned().collect::<BTreeSet<_>>(), "rows are exactly the keys answered 201 or 409");
    server.sigterm();
    assert!(server.exit_within(Duration::from_secs(GRACE_SECS + 10)).await.success());

    // The server's own output, at debug level, never holds the token.
    let logs = [first_logs.lock().unwrap().join("\n"), server.logs.lock().unwrap().join("\n")].join("\n");
    assert!(logs.contains("/api/activities"), "the requests were logged");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(&token) && !logs.contains(signature), "the token appears in the server's logs");
    assert!(!logs.contains(SECRET), "the JWT secret appears in the server's logs");
}
