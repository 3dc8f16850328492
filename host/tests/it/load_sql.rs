//! The load harness's pgbench script (examples/load/, written by the
//! `loadtool` example) replays exactly what one `POST /api/activities` sends
//! to Postgres: the same statements, in the same order, each its own
//! transaction, with only the parameters substituted — and the replayed
//! transaction writes the same activity the service wrote.

#[path = "../../examples/loadtool/pgbench.rs"]
mod pgbench;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use uuid::Uuid;

use crate::support::{TestApp, seed_body};

/// Records the SQL of every statement sqlx executes on this thread: sqlx
/// logs each one (target `sqlx::query`, at DEBUG by default) with its first
/// four words as `summary` and, when it is longer, the whole text as
/// `db.statement` (`"\n\n{sql}\n"`; see sqlx-core's `logger.rs`).
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        #[derive(Default)]
        struct Fields {
            summary: String,
            statement: String,
        }
        impl Visit for Fields {
            fn record_str(&mut self, field: &Field, value: &str) {
                match field.name() {
                    "summary" => self.summary = value.to_owned(),
                    "db.statement" => self.statement = value.to_owned(),
                    _ => {}
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "summary" && self.summary.is_empty() {
                    self.summary = format!("{value:?}").trim_matches('"').to_owned();
                }
            }
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let sql = if f.statement.is_empty() {
            f.summary
        } else {
            let s = f.statement.strip_prefix("\n\n").unwrap_or(&f.statement);
            s.strip_suffix('\n').unwrap_or(s).to_owned()
        };
        self.0.lock().unwrap().push(sql);
    }
}

/// The statements a create executes, recorded from a real request.
///
/// tracing caches, per call site, whether any subscriber wants its events;
/// a scoped subscriber set on this thread can miss the first events of a
/// call site whose interest another test's thread was computing at that
/// moment (seen twice in full runs: nothing recorded at all). So the cache
/// is rebuilt once the subscriber is set, and a create that recorded
/// nothing at all is sent again, a few times at most, under a new key;
/// what is recorded is then compared as strictly as ever.
async fn record_create(app: &TestApp, tenant: reten_host::domain::TenantId, body: &Value) -> (Vec<String>, Value) {
    for attempt in 0..5 {
        let mut body = body.clone();
        if attempt > 0 {
            body["idempotency_key"] = Value::String(format!("{}-{attempt}", body["idempotency_key"].as_str().unwrap()));
        }
        let recorded = Statements::default();
        let subscriber = tracing_subscriber::registry().with(recorded.clone());
        let res = {
            // The test runtime is single-threaded: the request runs on this
            // thread, under this subscriber.
            let _guard = tracing::subscriber::set_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
            app.create_activity(tenant, &body).await
        };
        res.assert_status(StatusCode::CREATED);
        let statements = recorded.0.lock().unwrap().clone();
        if !statements.is_empty() {
            return (statements, res.body);
        }
    }
    panic!("five creates in a row recorded no statement at all");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_pgbench_script_replays_exactly_the_statements_of_a_create(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let (tenant, commerce) = app.seeded("load-sql").await;
    // The first create of a tenant may check it exists (cached per process);
    // steady state is from the second one on.
    app.create_activity(tenant, &seed_body(commerce, "warm-up")).await.assert_status(StatusCode::CREATED);

    // (1) What a create really executes: the two constants, in order.
    let (executed, created) = record_create(&app, tenant, &seed_body(commerce, "recorded")).await;
    assert_eq!(
        executed,
        pgbench::CREATE_STATEMENTS.map(str::to_owned).to_vec(),
        "a create must execute exactly LOAD_FOR_CREATE_SQL then INSERT_ACTIVITY_SQL; \
         when this changes, change examples/loadtool/pgbench.rs with it"
    );

    // (2) The script the harness generates from that create: per branch,
    // the same statements in the same order, only parameters substituted.
    let activity = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let replay = pgbench::capture(&app.pool, tenant.0, activity).await.unwrap();
    let script = pgbench::script(&[replay.clone(), replay.clone(), replay.clone()], 2);
    let transactions = pgbench::parse_script(&script).unwrap();
    assert_eq!(transactions.len(), 3, "one transaction per replayed commerce");
    for tx in &transactions {
        let params = pgbench::check_transaction(tx).unwrap_or_else(|e| panic!("{e}\n\nscript:\n{script}"));
        let (load, insert) = (&params[0], &params[1]);
        assert_eq!(load.len(), 3);
        assert_eq!(insert.len(), 25);
        // Every transaction creates: a fresh idempotency key (a parameter,
        // the same in both statements, as the service binds it) and ids.
        assert_eq!(load[&3], pgbench::KEY);
        assert_eq!(insert[&3], pgbench::KEY);
        for n in [2, 22] {
            assert_eq!(insert[&n], pgbench::NEW_ID, "${n}");
        }
        for n in [23, 24] {
            assert!(insert[&n].starts_with(&format!("ARRAY[{}", pgbench::NEW_ID)), "${n}: {}", insert[&n]);
        }
        // The rest are the values the create bound.
        assert_eq!(load[&1], format!("'{}'", tenant.0));
        assert_eq!(load[&2], format!("'{commerce}'"));
        assert_eq!(insert[&1], load[&1]);
        assert_eq!(insert[&8], load[&2]);
    }

    // (3) Run as pgbench would (`:key` bound to a new key), the replay
    // writes the activity the service wrote: same row, target user,
    // attribute and event, but for ids, key and times; and it moves the
    // targeted user's history to itself.
    let key = format!("replayed-{}", Uuid::new_v4());
    // record_create may have sent its create more than once.
    let events_before = app.count("activity_status_events").await;
    let mut conn = app.pool.acquire().await.unwrap();
    for statement in &transactions[0] {
        let sql = statement.replace(pgbench::KEY, &format!("'{key}'"));
        sqlx::raw_sql(&sql).execute(&mut *conn).await.unwrap();
    }
    let replayed: Uuid = sqlx::query_scalar("SELECT id FROM activities WHERE tenant_id = $1 AND idempotency_key = $2")
        .bind(tenant.0)
        .bind(&key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored(&app.pool, replayed).await,
        stored(&app.pool, activity).await,
        "the replay must write what the create wrote"
    );
    assert_eq!(app.count("activity_status_events").await, events_before + 1, "the replay adds one event");
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM commerce_user_last_targets WHERE activity_id = $1")
        .bind(replayed)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(history, 1, "the replay updates the targeted user's history like a create");
    let inputs: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT input FROM decision_inputs WHERE activity_id = ANY($1) ORDER BY recorded_at")
            .bind([activity, replayed])
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(inputs.len(), 2, "the replay keeps its decision input like a create");
    assert_eq!(inputs[0], inputs[1]);
}

/// An activity as stored, without what differs between two creates of the
/// same decision (ids, key, sequence numbers, times).
async fn stored(pool: &PgPool, activity: Uuid) -> Value {
    sqlx::query_scalar(
        r#"
        SELECT jsonb_build_object(
          'activity', to_jsonb(a) - 'id' - 'idempotency_key' - 'created_at' - 'updated_at',
          'targets', (SELECT jsonb_agg(to_jsonb(t) - 'id' - 'activity_id' - 'created_at' - 'updated_at')
                      FROM activity_target_users t WHERE t.tenant_id = a.tenant_id AND t.activity_id = a.id),
          'attributes', (SELECT jsonb_agg(to_jsonb(v) - 'id' - 'activity_id' - 'created_at' - 'updated_at'
                                          ORDER BY v.position)
                         FROM activity_attributes v WHERE v.tenant_id = a.tenant_id AND v.activity_id = a.id),
          'events', (SELECT jsonb_agg(to_jsonb(e) - 'id' - 'seq' - 'activity_id' - 'occurred_at')
                     FROM activity_status_events e WHERE e.tenant_id = a.tenant_id AND e.activity_id = a.id))
        FROM activities a WHERE a.id = $1
        "#,
    )
    .bind(activity)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[test]
fn the_script_check_refuses_anything_but_parameter_substitutions() {
    let replay = pgbench::Replay { params: [vec!["'x'".to_owned(); 3], vec!["NULL".to_owned(); 25]] };
    let good = pgbench::parse_script(&pgbench::script(&[replay], 8)).unwrap();
    pgbench::check_transaction(&good[0]).unwrap();

    // A changed statement, a statement missing, one more, or two in another order.
    let mut changed = good[0].clone();
    changed[1] = changed[1].replace("DO NOTHING", "DO UPDATE SET status = 'X'");
    let missing = vec![good[0][1].clone()];
    let mut extra = good[0].clone();
    extra.push("SELECT 1".to_owned());
    let swapped = vec![good[0][1].clone(), good[0][0].clone()];
    for bad in [changed, missing, extra, swapped] {
        assert!(pgbench::check_transaction(&bad).is_err(), "accepted: {bad:?}");
    }
    // A parameter that is not a value, and one `$N` substituted two ways.
    let injected = good[0][0].replacen("'x'", "'x' OR true", 1);
    assert!(pgbench::check_transaction(&[injected, good[0][1].clone()]).is_err());
    let twice = good[0][1].replacen("NULL, NULL)", "NULL, now())", 1);
    assert!(twice != good[0][1], "the template has `$19, $19)`");
    assert!(pgbench::check_transaction(&[good[0][0].clone(), twice]).is_err());
}
