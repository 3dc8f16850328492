//! `reten policy eval`: one input decided offline by a folder's policies,
//! like `opa eval` or Shopify's function-runner. It prints the decision, the
//! trace with each call's time and cost, and every policy's log lines; with
//! `--json`, the body `POST /api/activities/preview` answers.
//!
//! The input is a fixture, a decision input (the JSON `GET
//! /api/activities/{id}/decision-input` answers), or `--activity <id>`: that
//! activity's stored decision input, read from `DATABASE_URL`. Only
//! `--activity` needs a database; nothing needs a server.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use reten_host::api::activities::Preview;
use reten_host::api::views::{AttributeDecisionView, TargetDecisionView};
use reten_host::config::EvalArgs;
use reten_host::domain::activity::NewActivity;
use reten_host::domain::commerce::Commerce;
use reten_host::domain::{CommerceId, TenantId, time};
use reten_host::policy::input::{self, BaseInput};
use reten_host::policy::workspace::Workspace;
use reten_host::policy::{PreparedInput, fixtures};
use reten_host::resolve::{self, Resolution};

use super::trace::{render, thousands};

/// Decides, then prints.
pub async fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let workspace = Workspace::open(&args.dir, args.global.as_deref())?;
    for e in workspace.load_errors() {
        eprintln!("warn  a policy did not load: {e}");
    }
    let snapshot = workspace.snapshot();
    let (source, resolution, commerce) = match (&args.input, args.activity) {
        (Some(path), _) => {
            let (resolution, commerce) = from_file(path, &workspace, &snapshot, &args.attributes).await?;
            (path.display().to_string(), resolution, commerce)
        }
        (None, Some(id)) => {
            let tenant = args.tenant.unwrap_or_else(|| workspace.tenant());
            let (resolution, commerce) = from_activity(&args.database_url, tenant, id, &snapshot).await?;
            (format!("activity {id} (its stored decision input)"), resolution, commerce)
        }
        (None, None) => bail!("give --input <file> or --activity <id>"),
    };
    let preview = Preview {
        status: resolution.status,
        target_users: vec![TargetDecisionView::new(&resolution.target, &commerce, None)],
        attributes: resolution.attributes.iter().map(|a| AttributeDecisionView::new(a, None)).collect(),
        trace: resolution.trace.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&preview)?);
        return Ok(());
    }
    println!("policies   {} over {}", workspace.dir.display(), workspace.global);
    println!("input      {source}");
    print_decision(&resolution, &commerce);
    println!("trace");
    print!("{}", render(&resolution.trace, 2));
    println!("cost       {}", total_cost(&resolution));
    Ok(())
}

async fn from_file(
    path: &Path,
    workspace: &Workspace,
    snapshot: &reten_host::policy::TenantSnapshot,
    attributes: &[String],
) -> anyhow::Result<(Resolution, Arc<Commerce>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.ends_with(".json") {
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))?;
        if value.get("tenant_id").is_some() {
            let base = input::from_json(value).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            return Ok(decide_stored(base, snapshot, attributes, None).await);
        }
    }
    let fixture =
        fixtures::parse_fixture(&name, &bytes).with_context(|| format!("{}: not a fixture", path.display()))?;
    fixtures::decide(&fixture, workspace.tenant(), snapshot)
        .await
        .map_err(|problems| anyhow::anyhow!("{}: {}", path.display(), problems.join("; ")))
}

async fn from_activity(
    database_url: &str,
    tenant: TenantId,
    id: reten_host::domain::ActivityId,
    snapshot: &reten_host::policy::TenantSnapshot,
) -> anyhow::Result<(Resolution, Arc<Commerce>)> {
    let settings = reten_host::store::PoolSettings { max_connections: 1, ..Default::default() };
    let pool = reten_host::store::connect(database_url, &settings).await.context("failed to reach DATABASE_URL")?;
    let row = reten_host::store::activities::get(&pool, tenant, id).await?.with_context(|| {
        format!("tenant {tenant} has no activity {id} (pass --tenant when the folder is not named after it)")
    })?;
    let bytes = reten_host::store::decision_inputs::latest(&pool, tenant, id, chrono::DateTime::UNIX_EPOCH)
        .await?
        .with_context(|| {
            format!("activity {id} has no decision input kept (past the retention, or created before inputs were kept)")
        })?;
    pool.close().await;
    let base = input::decode_stored(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    Ok(decide_stored(base, snapshot, &[], Some(row.replay())).await)
}

/// Decides a stored (or exported) input: with the activity's own request
/// when there is one, else a request rebuilt from the input's activity.
async fn decide_stored(
    base: BaseInput,
    snapshot: &reten_host::policy::TenantSnapshot,
    attributes: &[String],
    request: Option<NewActivity>,
) -> (Resolution, Arc<Commerce>) {
    let request = request.unwrap_or_else(|| {
        let a = &base.activity;
        NewActivity {
            activity_type: a.activity_type,
            channel: a.channel,
            reason: a.reason.clone(),
            commerce_id: CommerceId(base.commerce.id.0),
            idempotency_key: "eval".into(),
            scheduled_at: time::parse(&a.scheduled_at).unwrap_or_default(),
            suggested_execution_time: a.suggested_execution_time.as_deref().and_then(|t| time::parse(t).ok()),
            user_status: a.user_status.clone(),
            score: a.score,
            assignment_reason: a.assignment_reason.clone(),
            target_criteria: None,
            attribute_keys: attributes.to_vec(),
            attributes: Vec::new(),
        }
    });
    let commerce = Arc::clone(&base.commerce);
    let input = PreparedInput::new(base);
    (resolve::resolve_activity(snapshot, &input, &request).await, commerce)
}

fn print_decision(r: &Resolution, commerce: &Commerce) {
    println!("status     {}", r.status.as_str());
    let t = &r.target;
    let who = match t.commerce_user_id.and_then(|id| commerce.user(id)) {
        Some(u) => {
            let ext = u.external_id.clone().unwrap_or_else(|| u.id.to_string());
            u.name.as_ref().map_or(ext.clone(), |n| format!("{ext} ({n})"))
        }
        None => "nobody".into(),
    };
    let by = match (&t.criterion_type, &t.policy) {
        (Some(c), Some(p)) => format!(" by {c} ({} {})", p.name, p.engine.as_str()),
        (Some(c), None) => format!(" by {c}"),
        _ => String::new(),
    };
    let reason = t.lock_reason.map(|l| format!(", {}", l.as_str())).unwrap_or_default();
    println!("target     {who}: {}{reason}{by}", t.status.as_str());
    if let Some(e) = &t.error_message {
        println!("           {e}");
    }
    for a in &r.attributes {
        let value = a.value.as_ref().map_or("nothing".into(), |v| v.to_string());
        println!("attribute  {} {}: {value}", a.key, a.status.as_str());
    }
}

fn total_cost(r: &Resolution) -> String {
    let (mut calls, mut us, mut fuel, mut ops) = (0u64, 0u64, 0u64, 0u64);
    if let Some(t) = &r.trace.target {
        for c in t.criteria.iter().filter(|c| c.fuel.is_some() || c.operations.is_some()) {
            calls += 1;
            us += c.duration_us;
            fuel += c.fuel.unwrap_or(0);
            ops += c.operations.unwrap_or(0);
        }
    }
    for a in r.trace.attributes.iter().filter(|a| a.fuel.is_some() || a.operations.is_some()) {
        calls += 1;
        us += a.duration_us.unwrap_or(0);
        fuel += a.fuel.unwrap_or(0);
        ops += a.operations.unwrap_or(0);
    }
    format!("{calls} policy calls, {us} µs, {} operations (Rhai), {} fuel (Wasm)", thousands(ops), thousands(fuel))
}
