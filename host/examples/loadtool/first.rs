//! `loadtool first-creates`: right after a cold start, the first create of
//! each of N random tenants, checked against that tenant's own policy.
//!
//! Each create goes out on EMAIL, where the tenant's own Wasm criterion
//! (`role_match_wasm`, looking for the owner, who has an e-mail) decides.
//! A create passes when it answers 201, its target user is the owner, the
//! policy that chose them is the tenant's `role_match_wasm` with the sha256
//! of the tenant's own file, and the stored trace (`GET /api/activities/:id`)
//! says which tier ran it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::http::Conn;
use crate::load::Rng;
use crate::{Targets, addr_of, percentile};

#[derive(Debug, clap::Args)]
pub struct FirstArgs {
    /// The targets file `seed` wrote.
    #[arg(long)]
    targets: PathBuf,
    /// The server's RETEN_POLICIES_DIR (each tenant's own file is hashed).
    #[arg(long)]
    policies: PathBuf,
    /// How many tenants, drawn at random without repetition.
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct FirstReport {
    creates: usize,
    /// Creates decided by the tenant's own policy, with a tier in the trace.
    own_decision: usize,
    /// How many ran on each tier.
    tiers: BTreeMap<String, usize>,
    p50_ms: f64,
    max_ms: f64,
    failures: Vec<String>,
}

pub async fn run(args: FirstArgs) -> anyhow::Result<()> {
    let targets = Targets::read(&args.targets)?;
    let mut rng = Rng::new();
    let mut order: Vec<usize> = (0..targets.tenants.len()).collect();
    // A partial Fisher–Yates shuffle: the first N are a random sample.
    let n = args.tenants.min(order.len());
    for i in 0..n {
        let j = i + rng.below(order.len() - i);
        order.swap(i, j);
    }
    let mut conn = Conn::new(&addr_of(&targets.url));
    let mut report = FirstReport {
        creates: n,
        own_decision: 0,
        tiers: BTreeMap::new(),
        p50_ms: 0.0,
        max_ms: 0.0,
        failures: Vec::new(),
    };
    let mut samples = Vec::with_capacity(n);
    for &index in &order[..n] {
        let tenant = &targets.tenants[index];
        let commerce = tenant.commerces.first().context("a tenant without commerces")?;
        let file = args.policies.join("tenants").join(tenant.id.to_string()).join("criteria/role_match_wasm.wasm");
        let own =
            reten_host::policy::loader::sha256_hex(&std::fs::read(&file).with_context(|| file.display().to_string())?);
        let mut body = crate::seed::create_body(commerce.id, &format!("first-{}", Uuid::new_v4()));
        body["channel"] = "EMAIL".into();
        let auth = format!("Bearer {}", tenant.token);
        let id = tenant.id.to_string();
        let started = Instant::now();
        let res = conn
            .send(
                "POST",
                "/api/activities",
                &[("Authorization", &auth), ("x-tenant-id", &id), ("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        let created = res.json();
        // The create answers the activity without its trace; the read has it.
        let trace = match created["id"].as_str() {
            Some(activity) => {
                let headers = [("Authorization", auth.as_str()), ("x-tenant-id", id.as_str())];
                conn.get(&format!("/api/activities/{activity}"), &headers).await?.json()["resolutionTrace"].clone()
            }
            None => Value::Null,
        };
        match check(res.status, &created, &trace, &own) {
            Ok(tier) => {
                report.own_decision += 1;
                *report.tiers.entry(tier).or_default() += 1;
            }
            Err(why) => report.failures.push(format!("tenant {index}: {why}")),
        }
    }
    samples.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&samples, 0.5);
    report.max_ms = samples.last().copied().unwrap_or(0.0);
    println!(
        "first creates: {}/{} decided by the tenant's own policy (tiers {:?}), p50 {:.1} ms, max {:.1} ms",
        report.own_decision, report.creates, report.tiers, report.p50_ms, report.max_ms
    );
    for f in report.failures.iter().take(5) {
        eprintln!("  {f}");
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// The tier that decided, if the tenant's own Wasm criterion chose the owner.
fn check(status: u16, body: &Value, trace: &Value, own_version: &str) -> Result<String, String> {
    if status != 201 {
        return Err(format!("answered {status}: {body}"));
    }
    let target = &body["targetUsers"][0];
    let chosen = (
        target["commerceUser"]["externalId"].as_str(),
        target["policyName"].as_str(),
        target["policyVersion"].as_str(),
    );
    if chosen != (Some("u-owner"), Some("role_match_wasm"), Some(own_version)) {
        return Err(format!("not the tenant's own decision: {target}"));
    }
    let criteria = trace["target"]["criteria"].as_array();
    let step = criteria.and_then(|cs| cs.iter().find(|c| c["policy"]["name"] == "role_match_wasm"));
    match step.and_then(|s| s["tier"].as_str()) {
        Some(tier) => Ok(tier.to_owned()),
        None => Err(format!("the trace does not say which tier ran: {trace}")),
    }
}
