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

use super::Registry;
use super::registry::RegistryOptions;
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
    #[serde(rename = "type")]
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
}

/// Runs every fixture of a layer folder (`global/` or `tenants/<id>/`).
pub async fn run(dir: &Path) -> anyhow::Result<(Vec<FixtureResult>, Vec<String>)> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{} does not exist", dir.display()))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let (root, tenant, layer_prefix) = if name == "global" {
        (parent(&dir, 1), TenantId::new(), "global/".to_owned())
    } else if let Ok(id) = TenantId::parse(&name) {
        (parent(&dir, 2), id, format!("tenants/{id}/"))
    } else {
        anyhow::bail!("{} is neither a global/ folder nor a tenants/<tenant-id>/ folder", dir.display());
    };
    let registry = Registry::load(&root, RegistryOptions::default())?;
    let state = registry.state();
    let load_errors: Vec<String> = state
        .errors()
        .filter(|e| e.path.starts_with("global/") || e.path.starts_with(&layer_prefix))
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    let snapshot = registry.snapshot(tenant);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .with_context(|| format!("{} has no tests/ folder", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "json"))
        .collect();
    files.sort();
    let mut results = Vec::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let result = match read_fixture(&file) {
            Ok(fixture) => {
                let failures = run_fixture(&fixture, tenant, &snapshot).await;
                FixtureResult { name, description: fixture.description, failures }
            }
            Err(e) => FixtureResult { name, description: None, failures: vec![format!("cannot read: {e:#}")] },
        };
        results.push(result);
    }
    Ok((results, load_errors))
}

fn parent(path: &Path, levels: usize) -> PathBuf {
    let mut p = path.to_owned();
    for _ in 0..levels {
        p.pop();
    }
    p
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
    let mut history = Vec::new();
    for h in &f.history {
        match time::parse(&h.last_targeted_at) {
            Ok(at) => history.push(HistoryEntry {
                commerce_user_id: user_id(&h.user),
                channel: Some(h.channel),
                activity_id: ActivityId::new(),
                last_targeted_at: at,
            }),
            Err(e) => failures.push(format!("history of {}: last_targeted_at {e}", h.user)),
        }
    }
    let input = resolve::prepare_input(tenant, &activity, Arc::clone(&commerce), with_overall_history(history));
    let resolution = resolve::resolve_activity(snapshot, &input, &activity).await;
    check(&f.expect, &resolution, &commerce, &mut failures);
    (failures, Some(resolution.trace))
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
    }
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
