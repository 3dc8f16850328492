//! Target resolution: which commerce user an activity goes to.

use crate::domain::activity::TargetCriterion;
use crate::domain::commerce::Commerce;
use crate::domain::{Channel, CommerceUserId, LockReason, ResolutionStrategy, TargetStatus, UserRole};
use crate::policy::config::TargetResolutionConfig;
use crate::policy::snapshot::ConfigSource;
use crate::policy::{PolicyRef, PreparedInput, TenantSnapshot};

use super::Stage;
use super::trace::{
    AppliedConfig, CandidateTrace, ConfigConsidered, CriteriaSource, CriterionOutcome, CriterionTrace, FallbackTrace,
    SkipReason, TargetTrace,
};

/// How many skipped candidates a criterion's trace lists.
const TRACED_CANDIDATES: usize = 20;

/// The decision about one target user.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetDecision {
    pub commerce_user_id: Option<CommerceUserId>,
    pub status: TargetStatus,
    pub strategy: ResolutionStrategy,
    pub lock_reason: Option<LockReason>,
    /// The criterion type that chose the user, when a criterion did.
    pub criterion_type: Option<String>,
    /// The policy version that chose the user, when a policy did.
    pub policy: Option<PolicyRef>,
    pub error_message: Option<String>,
}

impl TargetDecision {
    /// Whether the target is settled (or deliberately left for later).
    pub fn is_failed(&self) -> bool {
        self.status == TargetStatus::Failed
    }
}

/// Resolves the target user of an activity on `channel` for `commerce`, as
/// a create does. `override_criteria` is the request's `target_criteria`, if
/// it sent one.
pub async fn resolve_target(
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    commerce: &Commerce,
    channel: Channel,
    override_criteria: Option<&[TargetCriterion]>,
) -> (TargetDecision, TargetTrace) {
    resolve_target_at(Stage::Creation, snapshot, input, commerce, channel, override_criteria).await
}

/// [`resolve_target`] at a given stage: at [`Stage::Dispatch`] an
/// `ON_DISPATCH` config resolves now instead of leaving the target PENDING.
/// `MANUAL` waits for an assignment at every stage.
pub async fn resolve_target_at(
    stage: Stage,
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    commerce: &Commerce,
    channel: Channel,
    override_criteria: Option<&[TargetCriterion]>,
) -> (TargetDecision, TargetTrace) {
    let implicit = TargetResolutionConfig::implicit();
    let chosen = snapshot.target_config_for(channel);
    let configs_considered = snapshot
        .target_configs
        .iter()
        .map(|c| ConfigConsidered {
            priority: c.priority,
            active: c.active,
            channels: c.channels.clone(),
            applies: c.applies_to(channel),
            applied: chosen.is_some_and(|chosen| std::ptr::eq(chosen, c)),
        })
        .collect();
    let (config, source) = match chosen {
        Some(c) => (c, snapshot.target_configs_source),
        None => (&implicit, ConfigSource::Implicit),
    };
    let mut trace = TargetTrace {
        configs_considered,
        config: AppliedConfig {
            source,
            priority: config.priority,
            resolution_strategy: config.resolution_strategy,
            fallback_to_commerce_rep: config.fallback_to_commerce_rep,
            fallback_to_owner: config.fallback_to_owner,
        },
        criteria_source: if override_criteria.is_some() { CriteriaSource::Request } else { CriteriaSource::Config },
        criteria: Vec::new(),
        fallbacks: Vec::new(),
    };

    let strategy = config.resolution_strategy;
    let deferred = match strategy {
        ResolutionStrategy::OnCreation => None,
        ResolutionStrategy::OnDispatch if stage == Stage::Creation => {
            Some("the config resolves ON_DISPATCH: criteria run when the activity is sent")
        }
        ResolutionStrategy::OnDispatch => None,
        ResolutionStrategy::Manual => Some("the config is MANUAL: the target waits for an assignment"),
    };
    let mut criteria: Vec<TargetCriterion> = match override_criteria {
        Some(c) => c.to_vec(),
        None => config
            .criteria
            .iter()
            .map(|c| TargetCriterion {
                criterion_type: c.criterion_type.clone(),
                config: c.config.clone(),
                priority: c.priority,
            })
            .collect(),
    };
    // A stable sort: ties keep their order.
    criteria.sort_by_key(|c| c.priority);

    if let Some(why) = deferred {
        trace.criteria = criteria.iter().map(|c| not_run(snapshot, c, why.to_owned())).collect();
        let pending = TargetDecision {
            commerce_user_id: None,
            status: TargetStatus::Pending,
            strategy,
            lock_reason: None,
            criterion_type: None,
            policy: None,
            error_message: None,
        };
        return (pending, trace);
    }

    for (i, criterion) in criteria.iter().enumerate() {
        let (chosen, step) = run_criterion(snapshot, input, commerce, channel, criterion).await;
        let policy = step.policy.clone();
        trace.criteria.push(step);
        if let Some(user) = chosen {
            let why = format!("{} (priority {}) chose the user first", criterion.criterion_type, criterion.priority);
            trace.criteria.extend(criteria[i + 1..].iter().map(|c| not_run(snapshot, c, why.clone())));
            let decision =
                locked(user, strategy, LockReason::CriteriaMatch, Some(criterion.criterion_type.clone()), policy);
            return (decision, trace);
        }
    }

    for (role, enabled, reason) in [
        (UserRole::CommerceRep, config.fallback_to_commerce_rep, LockReason::FallbackCommerceRep),
        (UserRole::Owner, config.fallback_to_owner, LockReason::FallbackOwner),
    ] {
        let found =
            enabled.then(|| commerce.users.iter().find(|u| u.has_role(role) && u.reachable_on(channel))).flatten();
        trace.fallbacks.push(FallbackTrace { role, enabled, commerce_user_id: found.map(|u| u.id.to_string()) });
        if let Some(user) = found {
            return (locked(user.id, strategy, reason, None, None), trace);
        }
    }

    let failed = TargetDecision {
        commerce_user_id: None,
        status: TargetStatus::Failed,
        strategy,
        lock_reason: None,
        criterion_type: None,
        policy: None,
        error_message: Some(format!("no criterion matched a user reachable on {channel}, and no fallback found one")),
    };
    (failed, trace)
}

fn locked(
    user: CommerceUserId,
    strategy: ResolutionStrategy,
    reason: LockReason,
    criterion_type: Option<String>,
    policy: Option<PolicyRef>,
) -> TargetDecision {
    TargetDecision {
        commerce_user_id: Some(user),
        status: TargetStatus::Locked,
        strategy,
        lock_reason: Some(reason),
        criterion_type,
        policy,
        error_message: None,
    }
}

/// The trace of a criterion that did not run, and why.
fn not_run(snapshot: &TenantSnapshot, criterion: &TargetCriterion, why: String) -> CriterionTrace {
    CriterionTrace {
        outcome: CriterionOutcome::NotRun,
        not_run_reason: Some(why),
        policy: snapshot.criterion(&criterion.criterion_type).map(|p| p.reference()),
        ..CriterionTrace::new(criterion)
    }
}

impl CriterionTrace {
    fn new(criterion: &TargetCriterion) -> Self {
        CriterionTrace {
            criterion_type: criterion.criterion_type.clone(),
            priority: criterion.priority,
            config: criterion.config.clone(),
            policy: None,
            tier: None,
            duration_us: 0,
            fuel: None,
            operations: None,
            outcome: CriterionOutcome::NoPolicy,
            not_run_reason: None,
            error: None,
            logs: Vec::new(),
            candidates: Vec::new(),
            candidates_omitted: 0,
        }
    }
}

/// Runs one criterion and keeps its first candidate that is a reachable,
/// active user of the commerce.
async fn run_criterion(
    snapshot: &TenantSnapshot,
    input: &PreparedInput,
    commerce: &Commerce,
    channel: Channel,
    criterion: &TargetCriterion,
) -> (Option<CommerceUserId>, CriterionTrace) {
    let mut step = CriterionTrace::new(criterion);
    let Some(policy) = snapshot.criterion(&criterion.criterion_type) else {
        return (None, step);
    };
    step.policy = Some(policy.reference());
    let call = policy.resolve_criterion(input, &criterion.config, &snapshot.limits).await;
    step.duration_us = u64::try_from(call.duration.as_micros()).unwrap_or(u64::MAX);
    step.tier = call.tier;
    step.fuel = call.fuel;
    step.operations = call.operations;
    step.logs = call.logs;
    let candidates = match call.result {
        Ok(c) => c,
        Err(failure) => {
            step.outcome = CriterionOutcome::Failed;
            step.error = Some(failure);
            return (None, step);
        }
    };
    step.outcome = CriterionOutcome::NoMatch;
    for candidate in candidates {
        let user = CommerceUserId::parse(&candidate.commerce_user_id).ok().and_then(|id| commerce.user(id));
        let skip = match user {
            None => Some(SkipReason::NotACommerceUser),
            Some(u) if !u.is_active => Some(SkipReason::Inactive),
            Some(u) if !u.reachable_on(channel) => Some(SkipReason::Unreachable),
            Some(_) => None,
        };
        if step.candidates.len() < TRACED_CANDIDATES || skip.is_none() {
            step.candidates.push(CandidateTrace {
                commerce_user_id: candidate.commerce_user_id.chars().take(100).collect(),
                external_id: user.and_then(|u| u.external_id.clone()),
                name: user.and_then(|u| u.name.clone()),
                note: candidate.note.map(|n| n.chars().take(200).collect()),
                accepted: skip.is_none(),
                skip_reason: skip,
            });
        } else {
            step.candidates_omitted += 1;
        }
        if skip.is_none() {
            step.outcome = CriterionOutcome::Matched;
            return (user.map(|u| u.id), step);
        }
    }
    (None, step)
}
