//! Many `reten serve` processes on one Postgres and one policies directory:
//! a change through one serves on the other at once (by notification, the
//! second one watching no files), one idempotency key sent to both makes one
//! activity, and one file edit seen by both is one revision.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::http1;
use crate::policy_changes::{PICK_OWNER, PICK_REP, USES_PICK};
use crate::support::{SECRET, TestApp, admin_token, seed_body, sha, until, write};

/// A running `reten serve` and everything it logged.
pub(crate) struct Replica {
    _child: tokio::process::Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
}

/// Starts `reten serve` on `policies` and waits until it serves.
pub(crate) async fn replica(database_url: &str, policies: &std::path::Path, env: &[(&str, &str)]) -> Replica {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reten"));
    command
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("RETEN_LISTEN", "127.0.0.1:0")
        .env("RETEN_POLICIES_DIR", policies)
        .env("RETEN_JWT_SECRET", SECRET)
        .env_remove("RETEN_JWT_PUBLIC_KEY")
        .env("RETEN_POLICY_DEBOUNCE_MS", "20")
        .env("RETEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let serving = event["message"] == "serving";
            logs.lock().unwrap().push(event.clone());
            if serving {
                return event["addr"].as_str().expect("the serving line names its address").parse().unwrap();
            }
        }
        panic!("reten serve ended before serving: {:#?}", logs.lock().unwrap());
    })
    .await
    .expect("the replica started within a minute");
    let kept = Arc::clone(&logs);
    // Keep reading: a closed pipe would end the server.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            kept.lock().unwrap().push(serde_json::from_str(&line).unwrap_or(Value::Null));
        }
    });
    Replica { _child: child, addr, logs }
}

impl Replica {
    /// Sends a request as the tenant's admin.
    pub(crate) async fn call(&self, method: &str, path: &str, tenant: &str, body: Option<&Value>) -> (u16, Value) {
        let bearer = format!("Bearer {}", admin_token(reten_host::domain::TenantId::parse(tenant).unwrap()));
        let headers =
            [("authorization", bearer.as_str()), ("x-tenant-id", tenant), ("content-type", "application/json")];
        let bytes = body.map(Value::to_string);
        let res = http1::send(
            self.addr,
            method,
            path,
            &headers,
            bytes.as_deref().map(str::as_bytes),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (res.status, res.json())
    }

    /// The version of the tenant's policy `name` that serves here, if any.
    async fn serving(&self, tenant: &str, name: &str) -> Option<String> {
        let (_, listing) = self.call("GET", "/api/policies", tenant, None).await;
        let policies = listing["policies"].as_array()?.clone();
        policies.iter().find(|p| p["name"] == name).and_then(|p| p["version"].as_str()).map(str::to_owned)
    }

    /// Whether this replica logged checking the tenant's set with this digest.
    fn checked(&self, tenant: &str, set_sha256: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["message"] == "policy set checked" && e["scope"] == tenant && e["set_sha256"] == set_sha256)
    }
}

pub(crate) fn database_url(pool: &PgPool) -> String {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    format!("postgres://postgres@127.0.0.1:5432/{database}")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_changeset_on_one_replica_serves_on_the_other_and_one_key_sent_to_both_makes_one_activity(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let (tenant, commerce) = app.seeded("two-replicas").await;
    let url = database_url(&pool);
    // No periodic rescan on either, and no file events on the second: only
    // the notification can bring it the change.
    let first = replica(&url, app.policies.path(), &[("RETEN_POLICY_RESCAN_SECS", "3600")]).await;
    let second =
        replica(&url, app.policies.path(), &[("RETEN_POLICY_RESCAN_SECS", "3600"), ("RETEN_POLICY_WATCH", "false")])
            .await;
    let t = tenant.to_string();
    assert_eq!(second.serving(&t, "pick").await, None);

    let body = json!({"files": [{"path": "criteria/pick.rhai", "content": PICK_OWNER},
                                {"path": "tenant.toml", "content": USES_PICK}], "message": "pick the owner"});
    let (status, answer) = first.call("POST", "/api/policies/changes", &t, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(first.serving(&t, "pick").await, Some(sha(PICK_OWNER.as_bytes())), "it serves when answered");
    let took = until("the change on the second replica", async || {
        second.serving(&t, "pick").await == Some(sha(PICK_OWNER.as_bytes()))
    })
    .await;
    eprintln!("the change served on the second replica {took:?} after the first answered");
    let (_, listing) = second.call("GET", "/api/policies", &t, None).await;
    assert_eq!(listing["revision"], answer["revision"], "both serve the same revision");

    // 200 creates with one key, split across both replicas, all at once.
    let create = seed_body(commerce, "one-key-two-replicas");
    let answers = futures::future::join_all((0..200).map(|i| {
        let (replica, create, t) = (if i % 2 == 0 { &first } else { &second }, &create, &t);
        async move { replica.call("POST", "/api/activities", t, Some(create)).await }
    }))
    .await;
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "one activity: {:?}", answers.iter().map(|(s, _)| s).collect::<Vec<_>>());
    let id = created[0]["id"].as_str().unwrap();
    let conflicts = answers.iter().filter(|(s, b)| *s == 409 && b["activityId"] == id).count();
    assert_eq!(conflicts, 199, "every other answer is a 409 naming it");
    assert_eq!(created[0]["targetUsers"][0]["criterionType"], "PICK", "decided by the changed set");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM activities WHERE tenant_id = $1")
        .bind(tenant.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn one_file_edit_seen_by_two_replicas_is_one_revision(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let (tenant, _) = app.seeded("one-edit-one-revision").await;
    let url = database_url(&pool);
    let replicas = [replica(&url, app.policies.path(), &[]).await, replica(&url, app.policies.path(), &[]).await];
    let t = tenant.to_string();
    let revisions = async || {
        let (status, body) = replicas[0].call("GET", "/api/policies/revisions", &t, None).await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    };

    for (n, source) in [(1, PICK_OWNER), (2, PICK_REP)] {
        write(&app.tenant_path(tenant, "criteria/pick.rhai"), source.as_bytes());
        for r in &replicas {
            until("the edit to serve", async || r.serving(&t, "pick").await == Some(sha(source.as_bytes()))).await;
        }
        until("its revision", async || revisions().await.len() >= n).await;
        let newest = revisions().await[0].clone();
        let digest = newest["setSha256"].as_str().unwrap().to_owned();
        // Both replicas have recorded, or found recorded, this very set…
        until("both replicas to check the set", async || replicas.iter().all(|r| r.checked(&t, &digest))).await;
        // …and it is one revision.
        let all = revisions().await;
        assert_eq!(all.len(), n, "one revision per edit: {all:#?}");
        assert_eq!((newest["author"].as_str(), newest["source"].as_str()), (Some("filesystem"), Some("FILESYSTEM")));
    }
}
