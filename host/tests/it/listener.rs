//! Every replica in step without file events: a notification on the policy
//! channel reloads the layer it names at once, and a listener that lost its
//! connection rescans everything when it is back.

use std::time::Duration;

use reten_host::policy::watcher::WatchOptions;
use reten_host::rollout::Tasks;
use reten_host::rollout::listener::APPLICATION_NAME;
use sqlx::PgPool;

use crate::policy_changes::PICK_OWNER;
use crate::support::{TestApp, sha, until, write};

/// Whether the listener's connection is open and listening.
async fn listening(pool: &PgPool) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database() \
         AND query ILIKE 'LISTEN%'",
    )
    .bind(APPLICATION_NAME)
    .fetch_one(pool)
    .await
    .unwrap();
    n > 0
}

/// An app without a watcher whose listener is up and has done its first
/// rescan: from here on only a notification (or a reconnection) reloads.
async fn listening_app(pool: &PgPool) -> (TestApp, Tasks) {
    let app = TestApp::new(pool.clone()).await;
    let reloads = app.state.registry.subscribe_reloads();
    let before = *reloads.borrow();
    let tasks = Tasks::spawn(pool, &app.state.registry, Default::default());
    until("the listener", async || listening(pool).await && *reloads.borrow() > before).await;
    (app, tasks)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_notification_reloads_the_tenant_it_names_without_any_file_event(pool: PgPool) {
    let (app, _tasks) = listening_app(&pool).await;
    let (tenant, _) = app.seeded("notified").await;
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_OWNER.as_bytes());
    assert_eq!(app.criterion_version(tenant, "PICK"), None, "nothing watches the files");
    sqlx::query("SELECT pg_notify('reten_policies', $1)").bind(tenant.to_string()).execute(&pool).await.unwrap();
    app.wait_for("the notified reload", |_| app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes())))
        .await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_listener_that_lost_its_connection_rescans_when_it_reconnects(pool: PgPool) {
    let (app, _tasks) = listening_app(&pool).await;
    let (tenant, _) = app.seeded("reconnected").await;
    // A change whose notification this replica misses.
    write(&app.tenant_path(tenant, "criteria/pick.rhai"), PICK_OWNER.as_bytes());
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()")
        .bind(APPLICATION_NAME)
        .execute(&pool)
        .await
        .unwrap();
    app.wait_for("the rescan after reconnecting", |_| {
        app.criterion_version(tenant, "PICK") == Some(sha(PICK_OWNER.as_bytes()))
    })
    .await;
    until("the listener to listen again", async || listening(&pool).await).await;
}

#[tokio::test]
async fn without_file_events_the_watcher_still_rescans() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(&crate::support::repo_policies(), dir.path());
    let registry = std::sync::Arc::new(
        reten_host::policy::Registry::load(dir.path(), reten_host::policy::registry::RegistryOptions::default())
            .unwrap(),
    );
    let options =
        WatchOptions { debounce: Duration::from_millis(10), rescan_every: Duration::from_millis(200), events: false };
    let _watcher = reten_host::policy::watcher::spawn(registry.clone(), options).unwrap();
    let tenant = reten_host::domain::TenantId::new();
    write(&dir.path().join("tenants").join(tenant.to_string()).join("criteria/pick.rhai"), PICK_OWNER.as_bytes());
    let mut reloads = registry.subscribe_reloads();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while registry.snapshot(tenant).criterion("PICK").is_none() {
            reloads.changed().await.unwrap();
        }
    })
    .await;
    assert!(seen.is_ok(), "the periodic rescan picked up the file");
}
