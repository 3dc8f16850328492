//! Attribute resolution: the value of each attribute key an activity carries.

use serde_json::Value;

use crate::domain::activity::CallerAttribute;
use crate::domain::{AttributeStatus, AttributeStrategy, ResolverType};
use crate::policy::config::AttributeSetting;
use crate::policy::snapshot::ConfigSource;
use crate::policy::{PolicyFailure, PolicyRef, PreparedInput, TenantSnapshot};

use super::Stage;
use super::trace::AttributeTrace;

/// The decision about one attribute key.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeDecision {
    pub key: String,
    pub value: Option<Value>,
    pub status: AttributeStatus,
    pub resolver_type: Option<ResolverType>,
    /// The policy that ran for it, if one did (also when it failed).
    pub policy: Option<PolicyRef>,
    pub error_message: Option<String>,
}

/// Resolves one key as a create does: the caller's value, else the
/// configured strategy, else the caller's fallback, else the configured
/// fallback, else FAILED.
pub async fn resolve_attribute(
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    key: &str,
    caller: Option<&CallerAttribute>,
) -> (AttributeDecision, AttributeTrace) {
    resolve_attribute_at(Stage::Creation, snapshot, input, key, caller).await
}

/// [`resolve_attribute`] at a given stage: at [`Stage::Dispatch`] an
/// `ON_DISPATCH` key runs its policy now, with the same fallbacks as an
/// `UPFRONT` one.
pub async fn resolve_attribute_at(
    stage: Stage,
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    key: &str,
    caller: Option<&CallerAttribute>,
) -> (AttributeDecision, AttributeTrace) {
    let (setting, config_source) = snapshot.attribute_setting(key);
    let caller_value = caller.and_then(|c| c.value.clone());
    let caller_fallback = caller.and_then(|c| c.fallback.clone());
    let mut trace = AttributeTrace {
        key: key.to_owned(),
        strategy: setting.strategy,
        config_source,
        caller_value: caller_value.is_some(),
        caller_fallback: caller_fallback.is_some(),
        policy: None,
        tier: None,
        duration_us: None,
        fuel: None,
        operations: None,
        logs: Vec::new(),
        error: None,
        outcome: AttributeStatus::Pending,
    };
    let mut decision = AttributeDecision {
        key: key.to_owned(),
        value: None,
        status: AttributeStatus::Pending,
        resolver_type: None,
        policy: None,
        error_message: None,
    };

    if let Some(value) = caller_value {
        decision.value = Some(value);
        decision.status = AttributeStatus::Resolved;
        decision.resolver_type = Some(ResolverType::CallerProvided);
        trace.outcome = decision.status;
        return (decision, trace);
    }

    let why_not = match setting.strategy {
        AttributeStrategy::OnDispatch if stage == Stage::Creation => {
            trace.outcome = AttributeStatus::Pending;
            return (decision, trace);
        }
        AttributeStrategy::CallerProvided => "the caller provided no value".to_owned(),
        AttributeStrategy::Upfront | AttributeStrategy::OnDispatch => {
            match run_policy(snapshot, input, key, &setting, &mut decision, &mut trace).await {
                Ok(()) => {
                    trace.outcome = decision.status;
                    return (decision, trace);
                }
                Err(why) => why,
            }
        }
    };

    if let Some(fallback) = caller_fallback {
        decision.value = Some(fallback);
        decision.status = AttributeStatus::Fallback;
        decision.resolver_type = Some(ResolverType::CallerProvided);
        decision.error_message = Some(format!("{why_not}; used the caller's fallback"));
    } else if let Some(fallback) = setting.fallback.clone() {
        decision.value = Some(fallback);
        decision.status = AttributeStatus::Fallback;
        decision.resolver_type = Some(match config_source {
            ConfigSource::Tenant => ResolverType::ClientHook,
            ConfigSource::Global | ConfigSource::Implicit => ResolverType::InternalService,
        });
        decision.error_message = Some(format!("{why_not}; used the configured fallback"));
    } else {
        decision.status = AttributeStatus::Failed;
        decision.error_message = Some(format!("{why_not}, and no fallback is configured"));
    }
    trace.outcome = decision.status;
    (decision, trace)
}

/// Runs the key's policy. `Ok` when it produced a value (the decision is
/// filled in), else why not.
async fn run_policy(
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    key: &str,
    setting: &AttributeSetting,
    decision: &mut AttributeDecision,
    trace: &mut AttributeTrace,
) -> Result<(), String> {
    let name = setting.policy_name(key);
    let Some(policy) = snapshot.attribute_policy(name) else {
        return Err(format!("no policy attributes/{name} exists"));
    };
    let reference = policy.reference();
    decision.policy = Some(reference.clone());
    trace.policy = Some(reference);
    let call = policy.resolve_attribute(input, &setting.config, &snapshot.limits).await;
    trace.duration_us = Some(u64::try_from(call.duration.as_micros()).unwrap_or(u64::MAX));
    trace.tier = call.tier;
    trace.fuel = call.fuel;
    trace.operations = call.operations;
    trace.logs = call.logs;
    match call.result {
        Ok(Some(value)) => {
            decision.value = Some(value);
            decision.status = AttributeStatus::Resolved;
            decision.resolver_type = Some(if TenantSnapshot::is_tenant_policy(policy) {
                ResolverType::ClientHook
            } else {
                ResolverType::InternalService
            });
            Ok(())
        }
        Ok(None) => Err(format!("policy {name} returned nothing")),
        Err(failure) => {
            let why = describe(name, &failure);
            trace.error = Some(failure);
            Err(why)
        }
    }
}

fn describe(name: &str, failure: &PolicyFailure) -> String {
    format!("policy {name} failed ({}): {}", failure.kind.as_str(), failure.message)
}
