//! `reten serve --demo`, run as a newcomer would: the printed curl line,
//! pasted as is, creates an activity, which the demo's MOCK dispatch config
//! then dispatches; a second start changes nothing.

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{copy_dir, repo_policies};

/// Starts `reten serve --demo` and returns it with the curl line it printed.
async fn start(database_url: &str, policies: &std::path::Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reten"))
        .args(["serve", "--demo"])
        .env("DATABASE_URL", database_url)
        .env("RETEN_LISTEN", "127.0.0.1:0")
        .env("RETEN_POLICIES_DIR", policies)
        .env_remove("RETEN_JWT_SECRET")
        .env_remove("RETEN_JWT_PUBLIC_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let curl = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("curl ") {
                return line;
            }
        }
        panic!("reten serve --demo ended without printing a curl line");
    })
    .await
    .expect("the demo printed its curl line within a minute");
    // Keep reading: the server logs to stdout, and a closed pipe would end it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, curl)
}

async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "SIGTERM ends the server cleanly: {status}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_demo_curl_line_pasted_as_is_answers_201_and_a_second_start_is_idempotent(pool: PgPool) {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let url = format!("postgres://postgres@127.0.0.1:5432/{database}");
    let policies = tempfile::tempdir().unwrap();
    copy_dir(&repo_policies(), policies.path());

    for start_number in 1..=2 {
        let (child, curl) = start(&url, policies.path()).await;
        let out = tokio::process::Command::new("sh").arg("-c").arg(&curl).output().await.unwrap();
        assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Only a 201 carries the created activity.
        assert!(body["id"].as_str().is_some(), "start {start_number}: {body}");
        assert_eq!(body["status"], "READY", "{body}");
        assert_eq!(body["targetUsers"][0]["criterionType"], "PREFERRED_CONTACT", "{body}");
        let tier = body["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "loyalty_tier").unwrap().clone();
        assert_eq!(tier["value"]["tier"], "GOLD");
        // The demo's MOCK dispatch config takes it at once.
        let id = uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        let dispatched = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                poll.tick().await;
                let status: String = sqlx::query_scalar("SELECT status FROM activities WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if status == "DISPATCHED" {
                    break;
                }
            }
        });
        assert!(dispatched.await.is_ok(), "start {start_number}: the demo activity was not DISPATCHED within 10 s");
        stop(child).await;
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&pool).await.unwrap();
    let commerces: i64 = sqlx::query_scalar("SELECT count(*) FROM commerces").fetch_one(&pool).await.unwrap();
    let activities: i64 = sqlx::query_scalar("SELECT count(*) FROM activities").fetch_one(&pool).await.unwrap();
    assert_eq!((tenants, commerces, activities), (1, 3, 2), "the second start provisioned nothing new");
    let configs: i64 = sqlx::query_scalar("SELECT count(*) FROM dispatch_configs WHERE provider_code = 'MOCK'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(configs, 6, "one MOCK config per channel, created once");
}
