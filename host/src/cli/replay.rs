//! `reten policy replay`: runs [`reten_host::rollout::offline`] with a
//! progress bar on stderr, then prints the report as a table (or JSON).

use indicatif::{ProgressBar, ProgressStyle};
use reten_host::config::ReplayArgs;
use reten_host::rollout::compare::{DecisionView, SAMPLES};
use reten_host::rollout::offline::{self, OfflineReplay, OfflineReport};
use serde_json::json;

/// Replays, then prints.
pub async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let request = OfflineReplay {
        dir: args.dir.clone(),
        tenant: args.tenant,
        global: args.global.clone(),
        since: args.since,
        until: args.until,
        limit: args.limit,
        not_before: chrono::Utc::now() - chrono::Duration::days(i64::from(args.retention_days)),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} replaying [{bar:40}] {pos}/{len} activities ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let out = offline::replay(&args.database_url, &request, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let out = out?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&as_json(&out))?);
    } else {
        print_table(&out);
    }
    Ok(())
}

fn as_json(o: &OfflineReport) -> serde_json::Value {
    let r = &o.report;
    json!({
        "tenantId": o.tenant,
        "liveRevision": o.live_revision,
        "files": o.files.iter().map(|f| json!({"path": f.path, "sha256": f.sha256, "change": f.change})).collect::<Vec<_>>(),
        "total": o.total,
        "evaluated": r.evaluated,
        "changed": r.changed,
        "unchanged": r.unchanged,
        "errors": r.errors,
        "changes": r.changes,
        "samples": r.samples.to_vec(),
    })
}

fn print_table(o: &OfflineReport) {
    let r = &o.report;
    let live =
        o.live_revision.map_or("the global layer alone (no revision recorded)".to_owned(), |n| format!("revision {n}"));
    println!("tenant {} — candidate against {live}", o.tenant);
    for f in &o.files {
        println!("  {:<9} {}", f.change.as_str(), f.path);
    }
    println!();
    println!("  {:<22} {:>9}", "activities", o.total);
    println!("  {:<22} {:>9}", "evaluated", r.evaluated);
    println!("  {:<22} {:>9}", "changed", r.changed);
    println!("  {:<22} {:>9}", "  status", r.changes.status);
    println!("  {:<22} {:>9}", "  target user", r.changes.target);
    println!("  {:<22} {:>9}", "  lock reason", r.changes.lock_reason);
    for (key, n) in &r.changes.attributes {
        println!("  {:<22} {:>9}", format!("  attribute {key}"), n);
    }
    println!("  {:<22} {:>9}", "unchanged", r.unchanged);
    println!("  {:<22} {:>9}", "candidate errors", r.errors);
    let samples = r.samples.to_vec();
    if samples.is_empty() {
        return;
    }
    println!();
    println!("samples (up to {SAMPLES}, changes and errors first):");
    println!("  {:<36}  {:<44}  {:<44}  error", "activity", "before", "after");
    for s in samples {
        let error = s.error.as_deref().unwrap_or("");
        println!("  {:<36}  {:<44}  {:<44}  {error}", s.activity_id.to_string(), brief(&s.before), brief(&s.after));
    }
}

/// A decision in one cell: status, target user and the criterion that chose.
fn brief(d: &DecisionView) -> String {
    let target = d.target_commerce_user_id.map_or("-".to_owned(), |u| u.to_string());
    format!("{} {} {}", d.status, target, d.criterion_type.as_deref().unwrap_or("-"))
}
