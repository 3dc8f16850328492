//! The TOML files of the policies directory: `global/defaults.toml`,
//! `global/attribute-keys.toml` and `tenants/<id>/tenant.toml`.
//!
//! Parsing checks each file on its own; [`check_references`] checks what a
//! file names against the policies that exist.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::limits::LimitsToml;
use crate::domain::{AttributeStrategy, Channel, ResolutionStrategy};

/// `defaults.toml` and `tenant.toml`: target resolution configs, attribute
/// settings, limits, and (tenant only) extra attribute keys.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// A human name for the tenant, shown by the admin API.
    #[serde(default)]
    pub name: Option<String>,
    /// When present, replaces the global target resolution configs.
    #[serde(default)]
    pub target_resolution: Option<Vec<TargetResolutionConfig>>,
    /// Per attribute key; each entry replaces the global one for that key.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeSetting>,
    /// Keys the tenant adds to the global catalogue (tenant.toml only).
    #[serde(default)]
    pub attribute_keys: BTreeMap<String, AttributeKeyDef>,
    #[serde(default)]
    pub limits: Option<LimitsToml>,
    /// Result codes added to the built-in ones ([`default_task_result_types`]),
    /// by code: what `task_result.result` may hold.
    #[serde(default)]
    pub task_result_types: BTreeMap<String, TaskResultType>,
}

/// A result type: a code an activity result may report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResultType {
    /// For display to operators.
    pub label: String,
    /// Whether a result of this type must carry a future `future_scheduled_at`.
    #[serde(default)]
    pub requires_future_scheduled_at: bool,
}

/// The documented result types, which every tenant has.
pub fn default_task_result_types() -> BTreeMap<String, TaskResultType> {
    [
        ("SALE_COMPLETED", "Venta completada", false),
        ("NOT_INTERESTED", "No interesado", false),
        ("RESCHEDULE", "Reprogramar visita", true),
        ("NO_CONTACT", "Sin contacto", false),
    ]
    .into_iter()
    .map(|(code, label, future)| {
        (code.to_owned(), TaskResultType { label: label.to_owned(), requires_future_scheduled_at: future })
    })
    .collect()
}

/// Result type codes: letters, digits and `_`, at most 64 characters.
pub fn is_result_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One target resolution config: when it applies and how it resolves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetResolutionConfig {
    pub resolution_strategy: ResolutionStrategy,
    #[serde(default = "yes")]
    pub fallback_to_commerce_rep: bool,
    #[serde(default = "yes")]
    pub fallback_to_owner: bool,
    /// Lower wins; unique among active configs.
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "yes")]
    pub active: bool,
    /// The channels it applies to; absent means all.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    #[serde(default)]
    pub criteria: Vec<CriterionConfig>,
}

impl TargetResolutionConfig {
    /// Whether this config applies to an activity on `channel`.
    pub fn applies_to(&self, channel: Channel) -> bool {
        self.active && self.channels.as_ref().is_none_or(|c| c.contains(&channel))
    }

    /// The config used when no configured one applies: resolve on creation
    /// with no criteria, both fallbacks on.
    pub fn implicit() -> Self {
        Self {
            resolution_strategy: ResolutionStrategy::OnCreation,
            fallback_to_commerce_rep: true,
            fallback_to_owner: true,
            priority: 0,
            active: true,
            channels: None,
            criteria: Vec::new(),
        }
    }
}

/// One criterion of a config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionConfig {
    /// `ROLE_MATCH`, … — the upper-case name of a policy in `criteria/`.
    #[serde(rename = "type")]
    pub criterion_type: String,
    #[serde(default)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub priority: i32,
}

/// How one attribute key resolves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeSetting {
    pub strategy: AttributeStrategy,
    /// The policy in `attributes/` that computes it; defaults to the key.
    #[serde(default)]
    pub policy: Option<String>,
    /// The value used when nothing else resolves.
    #[serde(default)]
    pub fallback: Option<Value>,
    /// Given to the policy as `input.config`.
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl AttributeSetting {
    /// The policy name for `key`.
    pub fn policy_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.policy.as_deref().unwrap_or(key)
    }

    /// The setting of a key that is in the catalogue but configured nowhere:
    /// resolved upfront by the policy named after it.
    pub fn implicit() -> Self {
        Self { strategy: AttributeStrategy::Upfront, policy: None, fallback: None, config: Map::new() }
    }
}

/// An entry of the attribute key catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeKeyDef {
    pub label: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `attribute-keys.toml`: the global catalogue, one table per key.
pub type Catalogue = BTreeMap<String, AttributeKeyDef>;

fn yes() -> bool {
    true
}

/// A TOML file that could not be read, with its position when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl ConfigError {
    fn plain(message: impl Into<String>) -> Self {
        Self { message: message.into(), line: None, column: None }
    }
}

fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) =
            e.span().map(|span| line_col(text, span.start)).map_or((None, None), |(l, c)| (Some(l), Some(c)));
        ConfigError { message: e.message().to_owned(), line, column }
    })
}

/// The 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses and checks `defaults.toml` or `tenant.toml` on its own.
pub fn parse_config(text: &str, is_tenant: bool) -> Result<ConfigFile, ConfigError> {
    let file: ConfigFile = from_toml(text)?;
    if !is_tenant && !file.attribute_keys.is_empty() {
        return Err(ConfigError::plain("attribute_keys belong in global/attribute-keys.toml, not defaults.toml"));
    }
    for key in file.attributes.keys().chain(file.attribute_keys.keys()) {
        if !is_policy_name(key) {
            return Err(ConfigError::plain(format!("attribute key '{key}' must match [a-z0-9_]+")));
        }
    }
    if let Some(configs) = &file.target_resolution {
        let mut priorities = BTreeSet::new();
        for (i, c) in configs.iter().enumerate() {
            if c.active && !priorities.insert(c.priority) {
                return Err(ConfigError::plain(format!(
                    "target_resolution[{i}]: priority {} is already used by another active config",
                    c.priority
                )));
            }
            for (j, criterion) in c.criteria.iter().enumerate() {
                if !is_criterion_type(&criterion.criterion_type) {
                    return Err(ConfigError::plain(format!(
                        "target_resolution[{i}].criteria[{j}].type '{}' must be upper case, like ROLE_MATCH",
                        criterion.criterion_type
                    )));
                }
            }
        }
    }
    if let Some(limits) = &file.limits {
        super::Limits::default().with_overrides(limits).map_err(ConfigError::plain)?;
    }
    if let Some(code) = file.task_result_types.keys().find(|c| !is_result_code(c)) {
        return Err(ConfigError::plain(format!("task result type '{code}' must match [A-Za-z0-9_]+")));
    }
    Ok(file)
}

/// Parses `attribute-keys.toml`.
pub fn parse_catalogue(text: &str) -> Result<Catalogue, ConfigError> {
    let catalogue: Catalogue = from_toml(text)?;
    for key in catalogue.keys() {
        if !is_policy_name(key) {
            return Err(ConfigError::plain(format!("attribute key '{key}' must match [a-z0-9_]+")));
        }
    }
    Ok(catalogue)
}

/// What a config file names must exist: criteria policies, attribute keys and
/// attribute policies.
pub fn check_references(
    file: &ConfigFile,
    criteria: &BTreeSet<String>,
    catalogue: &BTreeSet<String>,
    attribute_policies: &BTreeSet<String>,
) -> Result<(), ConfigError> {
    for (i, c) in file.target_resolution.iter().flatten().enumerate() {
        for (j, criterion) in c.criteria.iter().enumerate() {
            if !criteria.contains(&criterion.criterion_type) {
                return Err(ConfigError::plain(format!(
                    "target_resolution[{i}].criteria[{j}]: no policy criteria/{}.{{rhai,wasm}} exists for {}",
                    criterion.criterion_type.to_lowercase(),
                    criterion.criterion_type
                )));
            }
        }
    }
    for (key, setting) in &file.attributes {
        if !catalogue.contains(key) {
            return Err(ConfigError::plain(format!("attributes.{key}: '{key}' is not in the attribute key catalogue")));
        }
        let policy = setting.policy_name(key);
        if setting.strategy == AttributeStrategy::Upfront && !attribute_policies.contains(policy) {
            return Err(ConfigError::plain(format!(
                "attributes.{key}: no policy attributes/{policy}.{{rhai,wasm}} exists"
            )));
        }
    }
    Ok(())
}

/// Policy and attribute key names: `[a-z0-9_]+`, at most 64 characters.
pub fn is_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_criterion_type(name: &str) -> bool {
    is_policy_name(&name.to_ascii_lowercase()) && !name.bytes().any(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_config_parses() {
        let text = r#"
            [[target_resolution]]
            resolution_strategy = "ON_CREATION"
            priority = 0
            [[target_resolution.criteria]]
            type = "ROLE_MATCH"
            config = { role = "COMMERCE_REP" }
            priority = 0
        "#;
        let file = parse_config(text, false).unwrap();
        let configs = file.target_resolution.unwrap();
        assert!(configs[0].fallback_to_commerce_rep && configs[0].fallback_to_owner && configs[0].active);
        assert_eq!(configs[0].criteria[0].config["role"], "COMMERCE_REP");
    }

    #[test]
    fn duplicate_active_priorities_are_refused() {
        let text = r#"
            [[target_resolution]]
            resolution_strategy = "ON_CREATION"
            [[target_resolution]]
            resolution_strategy = "MANUAL"
        "#;
        assert!(parse_config(text, true).unwrap_err().message.contains("priority 0"));
    }

    #[test]
    fn a_typo_is_reported_with_its_line() {
        let err = parse_config("name = \"x\"\nlimit = 3\n", true).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn names_must_be_lower_snake_case() {
        assert!(is_policy_name("role_match"));
        assert!(!is_policy_name("../x"));
        assert!(!is_policy_name("Role"));
    }
}
