//! One tenant's effective policy set: the global layer with the tenant's
//! overrides on top, frozen.
//!
//! Invariant: a request sees one snapshot from validation to the last policy
//! call, so every decision of an activity comes from one consistent set of
//! versions, whatever reloads happen meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{AttributeKeyDef, AttributeSetting, TargetResolutionConfig, TaskResultType};
use super::{Limits, Origin, Policy};
use crate::domain::Channel;
use crate::domain::activity::Vocabulary;

/// Where a piece of configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigSource {
    /// `global/defaults.toml` or `global/attribute-keys.toml`.
    Global,
    /// The tenant's `tenant.toml`.
    Tenant,
    /// Nothing configured: the built-in default.
    Implicit,
}

/// One tenant's effective policies, immutable.
#[derive(Debug)]
pub struct TenantSnapshot {
    /// The registry generation this snapshot was built in.
    pub generation: u64,
    /// The target resolution configs, and whether they came from the tenant.
    pub target_configs: Vec<TargetResolutionConfig>,
    pub target_configs_source: ConfigSource,
    /// The attribute key catalogue: global keys plus the tenant's.
    pub catalogue: BTreeMap<String, (AttributeKeyDef, ConfigSource)>,
    /// How each configured key resolves.
    pub attribute_settings: BTreeMap<String, (AttributeSetting, ConfigSource)>,
    /// Criterion policies by type (`ROLE_MATCH`).
    pub criteria: BTreeMap<String, Arc<Policy>>,
    /// Attribute policies by name (`commerce_info`).
    pub attribute_policies: BTreeMap<String, Arc<Policy>>,
    pub limits: Limits,
    /// The result codes activity results may report: the built-in ones, the
    /// global layer's and the tenant's.
    pub task_result_types: BTreeMap<String, TaskResultType>,
}

impl TenantSnapshot {
    /// The same set whose policy calls go through `calls` (see
    /// [`Policy::with_calls`]).
    pub fn with_calls(&self, calls: &Arc<super::CallContext>) -> Self {
        let rebind = |m: &BTreeMap<String, Arc<Policy>>| {
            m.iter().map(|(k, p)| (k.clone(), Arc::new(p.with_calls(calls)))).collect()
        };
        Self {
            generation: self.generation,
            target_configs: self.target_configs.clone(),
            target_configs_source: self.target_configs_source,
            catalogue: self.catalogue.clone(),
            attribute_settings: self.attribute_settings.clone(),
            criteria: rebind(&self.criteria),
            attribute_policies: rebind(&self.attribute_policies),
            limits: self.limits,
            task_result_types: self.task_result_types.clone(),
        }
    }

    /// The config that applies to `channel`: the active one with the lowest
    /// priority that covers the channel.
    pub fn target_config_for(&self, channel: Channel) -> Option<&TargetResolutionConfig> {
        self.target_configs.iter().filter(|c| c.applies_to(channel)).min_by_key(|c| c.priority)
    }

    /// The criterion policy of a type.
    pub fn criterion(&self, criterion_type: &str) -> Option<&Arc<Policy>> {
        self.criteria.get(criterion_type)
    }

    /// How `key` resolves, and where that was configured. A catalogue key
    /// configured nowhere resolves upfront through the policy named after it.
    pub fn attribute_setting(&self, key: &str) -> (AttributeSetting, ConfigSource) {
        self.attribute_settings
            .get(key)
            .cloned()
            .unwrap_or_else(|| (AttributeSetting::implicit(), ConfigSource::Implicit))
    }

    /// The attribute policy of a name.
    pub fn attribute_policy(&self, name: &str) -> Option<&Arc<Policy>> {
        self.attribute_policies.get(name)
    }

    /// Whether a policy is the tenant's own rather than the platform's.
    pub fn is_tenant_policy(policy: &Policy) -> bool {
        matches!(policy.origin, Origin::Tenant(_))
    }
}

impl Vocabulary for TenantSnapshot {
    fn has_criterion(&self, criterion_type: &str) -> bool {
        self.criteria.contains_key(criterion_type)
    }

    fn criterion_types(&self) -> Vec<String> {
        self.criteria.keys().cloned().collect()
    }

    fn has_attribute_key(&self, key: &str) -> bool {
        self.catalogue.contains_key(key)
    }
}
