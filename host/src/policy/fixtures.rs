//! `reten policy test <dir>`: runs the fixtures in `<dir>/tests/` against a
//! tenant's policies (with the global ones beneath), or against the global
//! policies alone — the way `opa test` runs a policy's tests.
//!
//! A fixture is a TOML (or JSON) file: an `activity` (the create body, without
//! `commerce_id` and `idempotency_key`), a `commerce` with its users, an
//! optional `history`, and what to `expect` — the status, the target, the
//! attributes, or a validation error. Only the expectations a fixture states
//! are checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::workspace::{GlobalSource, Workspace};
use crate::domain::activity::NewActivity;
use crate::domain::commerce::{Address, Commerce, CommerceUser, Contact, HistoryEntry, with_overall_history};
use crate::domain::{ActivityId, Channel, CommerceId, CommerceUserId, ContactType, TenantId, UserRole, time};
use crate::resolve::{self, Resolution};

/// One fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default)]
    pub description: Option<String>,
    /// The create body, as a client sends it (`commerce_id` and
    /// `idempotency_key` are filled in).
    pub activity: Map<String, Value>,
    pub commerce: FixtureCommerce,
    #[serde(default)]
    pub history: Vec<FixtureHistory>,
    /// What to check; `reten policy eval` runs a fixture without one.
    #[serde(default)]
    pub expect: Expect,
}

/// The commerce of a fixture; users are named by `external_id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureCommerce {
    #[serde(default = "default_external_id")]
    pub external_id: String,
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub tax_id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub addresses: Vec<Address>,
    #[serde(default)]
    pub users: Vec<FixtureUser>,
}

fn default_external_id() -> String {
    "c-1".into()
}

fn default_name() -> String {
    "Fixture commerce".into()
}

/// A commerce user of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    pub external_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "yes")]
    pub is_active: bool,
    #[serde(default)]
    pub roles: Vec<UserRole>,
    #[serde(default)]
    pub contacts: Vec<FixtureContact>,
}

fn yes() -> bool {
    true
}

/// A contact of a fixture user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureContact {
    /// `type`, as in the policy input, or `contact_type`, as in sync.
    #[serde(rename = "type", alias = "contact_type")]
    pub contact_type: ContactType,
    pub value: String,
    #[serde(default)]
    pub is_primary: bool,
}

/// A past targeting of a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureHistory {
    /// The user's `external_id`.
    pub user: String,
    pub channel: Channel,
    pub last_targeted_at: String,
}

/// What a fixture expects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `READY` or `UNRESOLVED`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub target: Option<ExpectTarget>,
    #[serde(default)]
    pub attributes: BTreeMap<String, ExpectAttribute>,
    /// A validation error instead of a resolution.
    #[serde(default)]
    pub error: Option<ExpectError>,
    /// What given criteria did, by type (only those listed are checked).
    #[serde(default)]
    pub criteria: Vec<ExpectCriterion>,
}

/// What one criterion of the trace did.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectCriterion {
    /// The criterion type, as in the config: `ROLE_MATCH`.
    #[serde(rename = "type")]
    pub criterion_type: String,
    /// `MATCHED`, `NO_MATCH`, `FAILED`, `NO_POLICY` or `NOT_RUN`.
    #[serde(default)]
    pub outcome: Option<String>,
    /// `RHAI` or `WASM`: the engine of the policy that ran.
    #[serde(default)]
    pub engine: Option<String>,
    /// The candidates it skipped, in order, each `{ user, reason }` (user:
    /// the external id; reason: `INACTIVE`, `UNREACHABLE` or
    /// `NOT_A_COMMERCE_USER`). Compared exactly when given.
    #[serde(default)]
    pub skipped: Option<Vec<ExpectSkip>>,
    /// The note the policy gave the candidate it kept.
    #[serde(default)]
    pub note: Option<String>,
    /// The failure reason when it failed: `DEADLINE`, `BUDGET_EXHAUSTED`, ….
    #[serde(default)]
    pub error: Option<String>,
    /// Text each of which some log line of the call contains.
    #[serde(default)]
    pub logs_include: Vec<String>,
}

/// A skipped candidate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSkip {
    pub user: String,
    pub reason: String,
}

/// The expected target user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectTarget {
    /// The chosen user's `external_id`; `""` for nobody.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub lock_reason: Option<String>,
    #[serde(default)]
    pub criterion_type: Option<String>,
    /// The policy name that decided.
    #[serde(default)]
    pub policy: Option<String>,
    /// The engine of the policy that decided: `RHAI` or `WASM`.
    #[serde(default)]
    pub engine: Option<String>,
}

/// The expected attribute.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectAttribute {
    #[serde(default)]
    pub status: Option<String>,
    /// Compared exactly.
    #[serde(default)]
    pub value: Option<Value>,
    /// Compared as a subset: every field given must be there with this value
    /// (TOML has no null, so this is how to check part of an object).
    #[serde(default)]
    pub value_includes: Option<Value>,
    #[serde(default)]
    pub resolver_type: Option<String>,
}

/// The expected validation error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectError {
    /// A field the error must name.
    pub field: String,
}

/// The outcome of one fixture.
#[derive(Debug)]
pub struct FixtureResult {
    pub name: String,
    pub description: Option<String>,
    /// Empty when the fixture passed.
    pub failures: Vec<String>,
    /// The resolution's trace, when it got that far.
    pub trace: Option<crate::resolve::Trace>,
}

/// The outcome of `reten policy test`.
pub struct TestRun {
    pub results: Vec<FixtureResult>,
    /// The files of the layers that failed to load.
    pub load_errors: Vec<String>,
    /// Where the global layer came from.
    pub global: GlobalSource,
    /// How many fixtures `--run` left out.
    pub filtered_out: usize,
}

/// Runs the fixtures of a layer folder (its `tests/`), or one fixture file
/// (`<layer>/tests/<name>.toml`), against the folder's policies over the
/// global layer ([`Workspace`]). With `pattern`, only the fixtures whose file
/// name matches the regular expression run.
pub async fn run(path: &Path, global: Option<&Path>, pattern: Option<&str>) -> anyhow::Result<TestRun> {
    let pattern = pattern
        .map(|p| regex::Regex::new(p).with_context(|| format!("--run {p}: not a regular expression")))
        .transpose()?;
    let path = std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))?;
    let (dir, mut files) = if path.is_file() {
        let layer = path.parent().and_then(Path::parent).map(Path::to_owned);
        let in_tests = path.parent().is_some_and(|p| p.file_name().is_some_and(|n| n == "tests"));
        match layer {
            Some(layer) if in_tests => (layer, vec![path.clone()]),
            _ => anyhow::bail!("{}: a fixture file must be in a layer's tests/ folder", path.display()),
        }
    } else {
        let tests = path.join("tests");
        let files: Vec<PathBuf> = std::fs::read_dir(&tests)
            .with_context(|| format!("{} has no tests/ folder", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "json"))
            .collect();
        (path.clone(), files)
    };
    files.sort();
    let before = files.len();
    if let Some(re) = &pattern {
        files.retain(|f| f.file_name().is_some_and(|n| re.is_match(&n.to_string_lossy())));
    }
    let workspace = Workspace::open(&dir, global)?;
    let snapshot = workspace.snapshot();
    let tenant = workspace.tenant();
    let mut results = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let result = match read_fixture(file) {
            Ok(fixture) => {
                let (failures, trace) = run_fixture_traced(&fixture, tenant, &snapshot).await;
                FixtureResult { name, description: fixture.description, failures, trace }
            }
            Err(e) => {
                FixtureResult { name, description: None, failures: vec![format!("cannot read: {e:#}")], trace: None }
            }
        };
        results.push(result);
    }
    Ok(TestRun {
        filtered_out: before - files.len(),
        results,
        load_errors: workspace.load_errors(),
        global: workspace.global.clone(),
    })
}

fn read_fixture(path: &Path) -> anyhow::Result<Fixture> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parse_fixture(&name, &std::fs::read(path)?)
}

/// Parses a fixture file's bytes: JSON when `name` ends in `.json`, else TOML.
pub fn parse_fixture(name: &str, bytes: &[u8]) -> anyhow::Result<Fixture> {
    let text = std::str::from_utf8(bytes).context("the fixture is not UTF-8")?;
    if name.ends_with(".json") { Ok(serde_json::from_str(text)?) } else { Ok(toml::from_str(text)?) }
}

/// The stable id of a fixture user: a UUID v5 of their external id.
fn user_id(external_id: &str) -> CommerceUserId {
    CommerceUserId(Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("reten-fixture-user:{external_id}").as_bytes()))
}

fn commerce(f: &FixtureCommerce) -> Commerce {
    Commerce {
        id: CommerceId(Uuid::new_v5(&Uuid::NAMESPACE_OID, b"reten-fixture-commerce")),
        external_id: f.external_id.clone(),
        name: f.name.clone(),
        tax_id: f.tax_id.clone(),
        global_external_id: None,
        is_active: true,
        metadata: f.metadata.clone(),
        addresses: f.addresses.clone(),
        users: f
            .users
            .iter()
            .map(|u| CommerceUser {
                id: user_id(&u.external_id),
                external_id: Some(u.external_id.clone()),
                name: u.name.clone(),
                is_active: u.is_active,
                roles: u.roles.clone(),
                contacts: u
                    .contacts
                    .iter()
                    .map(|c| Contact { contact_type: c.contact_type, value: c.value.clone(), is_primary: c.is_primary })
                    .collect(),
            })
            .collect(),
    }
}

/// Runs one fixture against a snapshot: what did not go as it expects
/// (empty when it passed).
pub async fn run_fixture(f: &Fixture, tenant: TenantId, snapshot: &super::TenantSnapshot) -> Vec<String> {
    run_fixture_traced(f, tenant, snapshot).await.0
}

/// [`run_fixture`], with the resolution's trace when it got that far (a
/// fixture that expects a validation error has none).
pub async fn run_fixture_traced(
    f: &Fixture,
    tenant: TenantId,
    snapshot: &super::TenantSnapshot,
) -> (Vec<String>, Option<crate::resolve::Trace>) {
    let commerce = Arc::new(commerce(&f.commerce));
    let mut body = Value::Object(f.activity.clone());
    body["commerce_id"] = json!(commerce.id);
    body["idempotency_key"] = json!("fixture");
    let mut failures = Vec::new();
    let activity = match (NewActivity::parse(&body, snapshot), &f.expect.error) {
        (Err(errors), Some(expected)) => {
            if !errors.iter().any(|e| e.field == expected.field) {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                failures.push(format!("expected an error on {}, got errors on {}", expected.field, fields.join(", ")));
            }
            return (failures, None);
        }
        (Err(errors), None) => {
            let listed: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            return (vec![format!("the activity does not validate: {}", listed.join("; "))], None);
        }
        (Ok(_), Some(expected)) => {
            return (vec![format!("expected an error on {}, but it validated", expected.field)], None);
        }
        (Ok(a), None) => a,
    };
    let input = fixture_input(f, tenant, &activity, &commerce, &mut failures);
    let resolution = resolve::resolve_activity(snapshot, &input, &activity).await;
    check(&f.expect, &resolution, &commerce, &mut failures);
    (failures, Some(resolution.trace))
}

/// What a fixture decides, as a create would (`reten policy eval`): the
/// resolution and the commerce it was made for. A body that does not
/// validate, or a history that cannot be read, is an error naming each
/// field.
pub async fn decide(
    f: &Fixture,
    tenant: TenantId,
    snapshot: &super::TenantSnapshot,
) -> Result<(Resolution, Arc<Commerce>), Vec<String>> {
    let commerce = Arc::new(commerce(&f.commerce));
    let mut body = Value::Object(f.activity.clone());
    body["commerce_id"] = json!(commerce.id);
    body["idempotency_key"] = json!("fixture");
    let activity = NewActivity::parse(&body, snapshot)
        .map_err(|errors| errors.iter().map(|e| format!("activity.{}: {}", e.field, e.message)).collect::<Vec<_>>())?;
    let mut problems = Vec::new();
    let input = fixture_input(f, tenant, &activity, &commerce, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((resolve::resolve_activity(snapshot, &input, &activity).await, commerce))
}

fn fixture_input(
    f: &Fixture,
    tenant: TenantId,
    activity: &NewActivity,
    commerce: &Arc<Commerce>,
    problems: &mut Vec<String>,
) -> super::PreparedInput {
    let mut history = Vec::new();
    for h in &f.history {
        match time::parse(&h.last_targeted_at) {
            Ok(at) => history.push(HistoryEntry {
                commerce_user_id: user_id(&h.user),
                channel: Some(h.channel),
                activity_id: ActivityId::new(),
                last_targeted_at: at,
            }),
            Err(e) => problems.push(format!("history of {}: last_targeted_at {e}", h.user)),
        }
    }
    resolve::prepare_input(tenant, activity, Arc::clone(commerce), with_overall_history(history))
}

fn same(failures: &mut Vec<String>, what: &str, expected: &str, got: &str) {
    if expected != got {
        failures.push(format!("{what}: expected {expected}, got {got}"));
    }
}

fn check(expect: &Expect, r: &Resolution, commerce: &Commerce, failures: &mut Vec<String>) {
    if let Some(status) = &expect.status {
        same(failures, "status", status, r.status.as_str());
    }
    if let Some(t) = &expect.target {
        let chosen = r
            .target
            .commerce_user_id
            .and_then(|id| commerce.user(id))
            .and_then(|u| u.external_id.clone())
            .unwrap_or_default();
        if let Some(user) = &t.user {
            same(failures, "target user", &format_user(user), &format_user(&chosen));
        }
        if let Some(s) = &t.status {
            same(failures, "target status", s, r.target.status.as_str());
        }
        if let Some(reason) = &t.lock_reason {
            same(failures, "target lock_reason", reason, r.target.lock_reason.map_or("none", |l| l.as_str()));
        }
        if let Some(c) = &t.criterion_type {
            same(failures, "target criterion_type", c, r.target.criterion_type.as_deref().unwrap_or("none"));
        }
        if let Some(p) = &t.policy {
            same(failures, "target policy", p, r.target.policy.as_ref().map_or("none", |p| p.name.as_str()));
        }
        if let Some(e) = &t.engine {
            same(failures, "target engine", e, r.target.policy.as_ref().map_or("none", |p| p.engine.as_str()));
        }
    }
    check_criteria(&expect.criteria, r, failures);
    for (key, e) in &expect.attributes {
        let Some(a) = r.attributes.iter().find(|a| &a.key == key) else {
            failures.push(format!("attribute {key}: expected, but the activity does not carry it"));
            continue;
        };
        if let Some(s) = &e.status {
            same(failures, &format!("attribute {key} status"), s, a.status.as_str());
        }
        if let Some(rt) = &e.resolver_type {
            same(
                failures,
                &format!("attribute {key} resolver_type"),
                rt,
                a.resolver_type.map_or("none", |r| r.as_str()),
            );
        }
        let got = a.value.clone().unwrap_or(Value::Null);
        if let Some(v) = &e.value
            && &got != v
        {
            failures.push(format!("attribute {key} value: expected {v}, got {got}"));
        }
        if let Some(v) = &e.value_includes
            && !includes(&got, v)
        {
            failures.push(format!("attribute {key} value: expected it to include {v}, got {got}"));
        }
    }
}

fn check_criteria(expected: &[ExpectCriterion], r: &Resolution, failures: &mut Vec<String>) {
    let steps = r.trace.target.as_ref().map(|t| t.criteria.as_slice()).unwrap_or_default();
    for e in expected {
        let what = |field: &str| format!("criterion {} {field}", e.criterion_type);
        let Some(step) = steps.iter().find(|s| s.criterion_type == e.criterion_type) else {
            failures.push(format!("criterion {}: expected in the trace, but it is not there", e.criterion_type));
            continue;
        };
        if let Some(o) = &e.outcome {
            same(failures, &what("outcome"), o, outcome_name(step.outcome));
        }
        if let Some(engine) = &e.engine {
            same(failures, &what("engine"), engine, step.policy.as_ref().map_or("none", |p| p.engine.as_str()));
        }
        if let Some(err) = &e.error {
            same(failures, &what("error"), err, step.error.as_ref().map_or("none", |f| f.kind.as_str()));
        }
        if let Some(note) = &e.note {
            let kept = step.candidates.iter().find(|c| c.accepted).and_then(|c| c.note.as_deref()).unwrap_or("none");
            same(failures, &what("note"), note, kept);
        }
        if let Some(skipped) = &e.skipped {
            let want: Vec<String> = skipped.iter().map(|s| format!("{} {}", s.user, s.reason)).collect();
            let got: Vec<String> = step
                .candidates
                .iter()
                .filter(|c| !c.accepted)
                .map(|c| {
                    let user = c.external_id.clone().unwrap_or_else(|| c.commerce_user_id.clone());
                    let reason = c.skip_reason.and_then(|r| serde_json::to_value(r).ok());
                    format!("{user} {}", reason.as_ref().and_then(Value::as_str).unwrap_or("?"))
                })
                .collect();
            if want != got {
                failures.push(format!("{}: expected [{}], got [{}]", what("skipped"), want.join(", "), got.join(", ")));
            }
        }
        for text in &e.logs_include {
            if !step.logs.iter().any(|l| l.message.contains(text.as_str())) {
                failures.push(format!("{}: expected a line containing {text:?}", what("logs")));
            }
        }
    }
}

fn outcome_name(o: crate::resolve::trace::CriterionOutcome) -> &'static str {
    use crate::resolve::trace::CriterionOutcome as O;
    match o {
        O::Matched => "MATCHED",
        O::NoMatch => "NO_MATCH",
        O::Failed => "FAILED",
        O::NoPolicy => "NO_POLICY",
        O::NotRun => "NOT_RUN",
    }
}

/// Whether `got` has every field of `want` with the same value (recursively
/// for objects; other values must be equal).
fn includes(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| includes(gv, v))),
        _ => got == want,
    }
}

fn format_user(external_id: &str) -> String {
    if external_id.is_empty() { "nobody".into() } else { external_id.to_owned() }
}
