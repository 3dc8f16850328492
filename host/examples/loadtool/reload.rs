//! `loadtool reload`: how long a changed policy file takes to serve.
//!
//! Rewrites one tenant's policy file N times (a Rhai file with a different
//! comment each time, a Wasm file with a different custom section, so a
//! different sha256) and, after each write, polls that tenant's
//! `GET /api/policies` until the policy's `version` is the new file's
//! sha256: the time from the write to the new version serving (which is a
//! new registry generation), on a monotonic clock.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::http::Conn;
use crate::{Targets, addr_of, percentile};

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The targets file `seed` wrote.
    #[arg(long)]
    targets: PathBuf,
    /// The server's RETEN_POLICIES_DIR.
    #[arg(long)]
    policies: PathBuf,
    /// Which tenant (its index in the targets file).
    #[arg(long, default_value_t = 0)]
    tenant: usize,
    /// The file, relative to the tenant's folder.
    #[arg(long, default_value = "criteria/pick_rep.rhai")]
    file: String,
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// Where the JSON report goes.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct ReloadReport {
    changes: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    generations: Vec<u64>,
    samples_ms: Vec<f64>,
}

pub async fn run(args: ReloadArgs) -> anyhow::Result<()> {
    let targets = Targets::read(&args.targets)?;
    let tenant = targets.tenants.get(args.tenant).context("no such tenant index")?;
    let path = args.policies.join("tenants").join(tenant.id.to_string()).join(&args.file);
    let name = std::path::Path::new(&args.file).file_stem().and_then(|s| s.to_str()).context("file name")?.to_owned();
    let base = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let wasm = args.file.ends_with(".wasm");
    let mut conn = Conn::new(&addr_of(&targets.url));
    let auth = format!("Bearer {}", tenant.token);
    let tenant_id = tenant.id.to_string();

    let mut samples = Vec::with_capacity(args.changes);
    let mut generations = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let change = format!("change {i} at {:?}", std::time::SystemTime::now());
        let mut bytes = base.clone();
        if wasm {
            crate::seed::append_custom_section(&mut bytes, "reten-reload", change.as_bytes());
        } else {
            bytes.extend_from_slice(format!("// {change}\n").as_bytes());
        }
        let version = reten_host::policy::loader::sha256_hex(&bytes);
        let written = Instant::now();
        std::fs::write(&path, &bytes)?;
        let generation = loop {
            let r = conn.get("/api/policies", &[("Authorization", &auth), ("x-tenant-id", &tenant_id)]).await?;
            let v = r.json();
            let serving = v["policies"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str() && p["origin"] == "TENANT"))
                .and_then(|p| p["version"].as_str().map(str::to_owned));
            if serving.as_deref() == Some(version.as_str()) {
                break v["generation"].as_u64().unwrap_or(0);
            }
            if written.elapsed() > Duration::from_secs(30) {
                bail!("change {i} did not serve within 30 s: {v}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        samples.push(written.elapsed().as_secs_f64() * 1e3);
        generations.push(generation);
        // Let the watcher settle, at an irregular pace so that writes do not
        // line up with its debounce or rescan.
        tokio::time::sleep(Duration::from_millis(150 + (i as u64 * 37) % 200)).await;
    }
    // Leave the file as it was.
    std::fs::write(&path, &base)?;

    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let report = ReloadReport {
        changes: args.changes,
        p50_ms: percentile(&sorted, 0.50),
        p95_ms: percentile(&sorted, 0.95),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        generations,
        samples_ms: samples,
    };
    println!(
        "reload: {} changes of {}: write → new version serving p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        report.changes, args.file, report.p50_ms, report.p95_ms, report.max_ms
    );
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
