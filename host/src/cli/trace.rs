//! A resolution trace drawn for a terminal: the config that applied, each
//! criterion with its engine, version, time, cost and outcome, each
//! candidate with its name and why it was kept or skipped, the fallbacks,
//! each attribute, and every log line. `reten policy eval` and `reten policy
//! test -v` print it.

use std::fmt::Write as _;

use reten_host::resolve::Trace;
use reten_host::resolve::trace::{CriterionOutcome, CriterionTrace};
use serde_json::Value;

/// The trace, one item per line, indented by `indent` spaces.
pub fn render(trace: &Trace, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    if let Some(t) = &trace.target {
        let c = &t.config;
        let _ = writeln!(
            out,
            "{pad}config     {} priority {}, {} (fallbacks: commerce rep {}, owner {}){}",
            wire(&c.source),
            c.priority,
            wire(&c.resolution_strategy),
            yes_no(c.fallback_to_commerce_rep),
            yes_no(c.fallback_to_owner),
            if matches!(t.criteria_source, reten_host::resolve::trace::CriteriaSource::Request) {
                "; criteria from the request"
            } else {
                ""
            }
        );
        for considered in &t.configs_considered {
            let mark = if considered.applied {
                "applied"
            } else if considered.applies {
                "applies"
            } else {
                "skipped"
            };
            let channels = considered
                .channels
                .as_ref()
                .map(|cs| cs.iter().map(wire).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "all channels".into());
            let _ = writeln!(
                out,
                "{pad}             priority {} {} [{channels}] {mark}",
                considered.priority,
                if considered.active { "active" } else { "inactive" }
            );
        }
        for (i, step) in t.criteria.iter().enumerate() {
            criterion(&mut out, &pad, i + 1, step);
        }
        for f in &t.fallbacks {
            let found = f.commerce_user_id.as_deref().unwrap_or("nobody reachable");
            let state = if f.enabled { found } else { "off" };
            let _ = writeln!(out, "{pad}fallback   {}: {state}", wire(&f.role));
        }
    }
    for a in &trace.attributes {
        let policy = a.policy.as_ref().map(|p| format!(" {} {} {}", p.name, p.engine.as_str(), short(&p.version)));
        let _ = writeln!(
            out,
            "{pad}attribute  {} {}{} -> {}{}",
            a.key,
            wire(&a.strategy),
            policy.unwrap_or_default(),
            wire(&a.outcome),
            cost(a.duration_us, a.fuel, a.operations, a.tier.map(|t| wire(&t)))
        );
        if let Some(e) = &a.error {
            let _ = writeln!(out, "{pad}             error {}: {}", e.kind.as_str(), e.message);
        }
        logs(&mut out, &pad, &a.logs);
    }
    out
}

fn criterion(out: &mut String, pad: &str, n: usize, step: &CriterionTrace) {
    let policy = match &step.policy {
        Some(p) => format!("{} {} {}", p.name, p.engine.as_str(), short(&p.version)),
        None => "no policy".into(),
    };
    let ran = !matches!(step.outcome, CriterionOutcome::NotRun | CriterionOutcome::NoPolicy);
    let spent = if ran {
        cost(Some(step.duration_us), step.fuel, step.operations, step.tier.map(|t| wire(&t)))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{pad}criterion  {n}. {} (priority {}) {policy} -> {}{spent}",
        step.criterion_type,
        step.priority,
        wire(&step.outcome)
    );
    if !step.config.is_empty() {
        let _ = writeln!(out, "{pad}             config {}", Value::Object(step.config.clone()));
    }
    if let Some(why) = &step.not_run_reason {
        let _ = writeln!(out, "{pad}             not run: {why}");
    }
    if let Some(e) = &step.error {
        let _ = writeln!(out, "{pad}             error {}: {}", e.kind.as_str(), e.message);
    }
    for c in &step.candidates {
        let who = match (&c.external_id, &c.name) {
            (Some(ext), Some(name)) => format!("{ext} ({name})"),
            (Some(ext), None) => ext.clone(),
            (None, Some(name)) => format!("{} ({name})", c.commerce_user_id),
            (None, None) => c.commerce_user_id.clone(),
        };
        let verdict = match c.skip_reason {
            None => "kept".to_owned(),
            Some(r) => format!("skipped: {}", wire(&r)),
        };
        let note = c.note.as_deref().map(|n| format!("  note: {n}")).unwrap_or_default();
        let _ = writeln!(out, "{pad}             {} {who} {verdict}{note}", if c.accepted { "+" } else { "-" });
    }
    if step.candidates_omitted > 0 {
        let _ = writeln!(out, "{pad}             … {} more skipped candidates", step.candidates_omitted);
    }
    logs(out, pad, &step.logs);
}

fn logs(out: &mut String, pad: &str, lines: &[reten_host::policy::logs::LogLine]) {
    for l in lines {
        let _ = writeln!(out, "{pad}             log {:<5} {}", l.level.as_str(), l.message);
    }
}

/// "  (42 µs, 1,234 operations)" and the like.
fn cost(us: Option<u64>, fuel: Option<u64>, ops: Option<u64>, tier: Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(us) = us {
        parts.push(format!("{us} µs"));
    }
    if let Some(f) = fuel {
        parts.push(format!("{} fuel", thousands(f)));
    }
    if let Some(o) = ops {
        parts.push(format!("{} operations", thousands(o)));
    }
    if let Some(t) = tier {
        parts.push(format!("tier {t}"));
    }
    if parts.is_empty() { String::new() } else { format!("  ({})", parts.join(", ")) }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn yes_no(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// The wire name of an enum (its JSON string).
pub fn wire<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}
