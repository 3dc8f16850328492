//! Response bodies of the activity routes (`camelCase`, UTC timestamps with
//! milliseconds). A freshly created activity and a stored one render through
//! the same types, so the two can never drift apart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::activity::TargetCriterion;
use crate::domain::commerce::Commerce;
use crate::domain::{
    ActivityId, ActivityStatus, ActivityType, AttributeStatus, Channel, CommerceId, EventType, LockReason,
    ResolutionStrategy, ResolverType, TargetStatus, attribute_key_id,
};
use crate::policy::EngineKind;
use crate::resolve::{AttributeDecision, TargetDecision};
use crate::store::activities::{ActivityRow, AttributeRow, EventRow, TargetUserRow};

/// `commerceAssignment`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommerceAssignment {
    pub commerce_id: CommerceId,
    /// The commerce's name; absent in the answer to a create.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = CommerceSummary)]
    pub commerce: Option<CommerceSummary>,
}

/// The commerce's name, in lists and details.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommerceSummary {
    pub name: String,
    pub external_id: String,
}

/// The 201 body of `POST /api/activities`: the seed's fields plus `reason`,
/// `targetUsers`, `attributes` and `createdAt`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedActivity {
    pub id: ActivityId,
    #[serde(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    /// `READY`, or `UNRESOLVED` when a target user or an attribute failed.
    pub status: ActivityStatus,
    pub reason: String,
    pub idempotency_key: String,
    #[serde(with = "crate::domain::time::millis")]
    pub scheduled_at: DateTime<Utc>,
    pub commerce_assignment: CommerceAssignment,
    pub target_users: Vec<TargetUserView>,
    pub attributes: Vec<AttributeView>,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
}

/// An activity in a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivitySummary {
    pub id: ActivityId,
    #[serde(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub status: ActivityStatus,
    pub reason: String,
    pub idempotency_key: String,
    #[serde(with = "crate::domain::time::millis")]
    pub scheduled_at: DateTime<Utc>,
    pub commerce_assignment: CommerceAssignment,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis")]
    pub updated_at: DateTime<Utc>,
}

impl From<ActivityRow> for ActivitySummary {
    fn from(r: ActivityRow) -> Self {
        Self {
            id: r.id,
            activity_type: r.activity_type,
            channel: r.channel,
            status: r.status,
            reason: r.reason,
            idempotency_key: r.idempotency_key,
            scheduled_at: r.scheduled_at,
            commerce_assignment: assignment(r.commerce_id, r.commerce_name, r.commerce_external_id),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

fn assignment(id: CommerceId, name: Option<String>, external_id: Option<String>) -> CommerceAssignment {
    let commerce = name.zip(external_id).map(|(name, external_id)| CommerceSummary { name, external_id });
    CommerceAssignment { commerce_id: id, commerce }
}

/// `GET /api/activities/:id`: everything stored about an activity.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityDetail {
    pub id: ActivityId,
    #[serde(rename = "type")]
    pub activity_type: ActivityType,
    pub channel: Channel,
    pub status: ActivityStatus,
    pub reason: String,
    pub idempotency_key: String,
    #[serde(with = "crate::domain::time::millis")]
    pub scheduled_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub suggested_execution_time: Option<DateTime<Utc>>,
    pub user_status: Option<String>,
    pub score: Option<i32>,
    pub assignment_reason: Option<String>,
    pub commerce_assignment: CommerceAssignment,
    /// The request's override of the configured criteria, if it sent one.
    #[schema(value_type = Option<Vec<TargetCriterion>>)]
    pub target_criteria: Option<Value>,
    pub attribute_keys: Vec<String>,
    pub target_users: Vec<TargetUserView>,
    pub attributes: Vec<AttributeView>,
    /// Why each decision was made. On creation, the trace of the resolution
    /// (as a preview shows it); after a retry, that retry's trace.
    #[schema(value_type = Object)]
    pub resolution_trace: Value,
    pub created_by: String,
    /// The provider's id for the activity, from its answer to the dispatch.
    pub provider_activity_id: Option<String>,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis")]
    pub updated_at: DateTime<Utc>,
}

impl ActivityDetail {
    /// Renders a stored activity with its target users and attributes.
    pub fn new(r: ActivityRow, targets: Vec<TargetUserRow>, attributes: Vec<AttributeRow>) -> Self {
        Self {
            id: r.id,
            activity_type: r.activity_type,
            channel: r.channel,
            status: r.status,
            reason: r.reason,
            idempotency_key: r.idempotency_key,
            scheduled_at: r.scheduled_at,
            suggested_execution_time: r.suggested_execution_time,
            user_status: r.user_status,
            score: r.score,
            assignment_reason: r.assignment_reason,
            commerce_assignment: assignment(r.commerce_id, r.commerce_name, r.commerce_external_id),
            target_criteria: r.target_criteria.and_then(|c| serde_json::to_value(c.0).ok()),
            attribute_keys: r.attribute_keys,
            target_users: targets.into_iter().map(TargetUserView::from).collect(),
            attributes: attributes.into_iter().map(AttributeView::from).collect(),
            resolution_trace: r.resolution_trace.0,
            created_by: r.created_by,
            provider_activity_id: r.provider_activity_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// What was decided about a target user (also what a preview shows).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetDecisionView {
    pub commerce_user_id: Option<Uuid>,
    pub resolution_status: TargetStatus,
    pub resolution_strategy: ResolutionStrategy,
    pub lock_reason: Option<LockReason>,
    /// The criterion type that chose the user, when a criterion did.
    pub criterion_type: Option<String>,
    /// The policy (name, engine, sha256) that chose the user, when one did.
    pub policy_name: Option<String>,
    pub policy_engine: Option<EngineKind>,
    /// The sha256 of the policy file, in hex.
    pub policy_version: Option<String>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub locked_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub commerce_user: Option<CommerceUserName>,
}

impl TargetDecisionView {
    /// Renders a decision just made, as a read of it would.
    pub fn new(t: &TargetDecision, commerce: &Commerce, at: Option<DateTime<Utc>>) -> Self {
        let user = t.commerce_user_id.and_then(|u| commerce.user(u));
        let decided = t.commerce_user_id.and(at);
        Self {
            commerce_user_id: t.commerce_user_id.map(|u| u.0),
            resolution_status: t.status,
            resolution_strategy: t.strategy,
            lock_reason: t.lock_reason,
            criterion_type: t.criterion_type.clone(),
            policy_name: t.policy.as_ref().map(|p| p.name.clone()),
            policy_engine: t.policy.as_ref().map(|p| p.engine),
            policy_version: t.policy.as_ref().map(|p| p.version.clone()),
            resolved_at: decided,
            locked_at: decided,
            error_message: t.error_message.clone(),
            commerce_user: user.map(|u| CommerceUserName::new(u.external_id.clone(), u.name.clone())),
        }
    }
}

/// A stored target user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetUserView {
    pub id: Uuid,
    pub activity_id: ActivityId,
    #[serde(flatten)]
    pub decision: TargetDecisionView,
}

/// The commerce user's name, split the way the documented shape wants it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommerceUserName {
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl CommerceUserName {
    fn new(external_id: Option<String>, name: Option<String>) -> Self {
        let (first_name, last_name) = crate::domain::commerce::split_name(name.as_deref());
        Self { external_id, name, first_name, last_name }
    }
}

impl From<TargetUserRow> for TargetUserView {
    fn from(r: TargetUserRow) -> Self {
        let commerce_user =
            r.commerce_user_id.map(|_| CommerceUserName::new(r.commerce_user_external_id, r.commerce_user_name));
        Self {
            id: r.id,
            activity_id: r.activity_id,
            decision: TargetDecisionView {
                commerce_user_id: r.commerce_user_id,
                resolution_status: r.resolution_status,
                resolution_strategy: r.resolution_strategy,
                lock_reason: r.lock_reason,
                criterion_type: r.criterion_type,
                policy_name: r.policy_name,
                policy_engine: r.policy_engine,
                policy_version: r.policy_version,
                resolved_at: r.resolved_at,
                locked_at: r.locked_at,
                error_message: r.error_message,
                commerce_user,
            },
        }
    }
}

impl TargetUserView {
    /// Renders a decision just written by a create, as a read would.
    pub fn from_decision(
        id: Uuid,
        activity: ActivityId,
        t: &TargetDecision,
        commerce: &Commerce,
        at: DateTime<Utc>,
    ) -> Self {
        Self { id, activity_id: activity, decision: TargetDecisionView::new(t, commerce, Some(at)) }
    }
}

/// What was decided about an attribute (also what a preview shows).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeDecisionView {
    pub key: String,
    pub attribute_key_id: Uuid,
    /// Any JSON value, or `null` when none was resolved.
    #[schema(value_type = Value)]
    pub value: Option<Value>,
    pub resolution_status: AttributeStatus,
    pub resolver_type: Option<ResolverType>,
    pub policy_name: Option<String>,
    pub policy_engine: Option<EngineKind>,
    /// The sha256 of the policy file, in hex.
    pub policy_version: Option<String>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
}

impl AttributeDecisionView {
    /// Renders a decision just made, as a read of it would.
    pub fn new(a: &AttributeDecision, at: Option<DateTime<Utc>>) -> Self {
        Self {
            key: a.key.clone(),
            attribute_key_id: attribute_key_id(&a.key),
            value: a.value.clone(),
            resolution_status: a.status,
            resolver_type: a.resolver_type,
            policy_name: a.policy.as_ref().map(|p| p.name.clone()),
            policy_engine: a.policy.as_ref().map(|p| p.engine),
            policy_version: a.policy.as_ref().map(|p| p.version.clone()),
            resolved_at: a.value.as_ref().and(at),
            error_message: a.error_message.clone(),
        }
    }
}

/// A stored attribute.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeView {
    pub id: Uuid,
    pub activity_id: ActivityId,
    #[serde(flatten)]
    pub decision: AttributeDecisionView,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis")]
    pub updated_at: DateTime<Utc>,
}

impl From<AttributeRow> for AttributeView {
    fn from(r: AttributeRow) -> Self {
        Self {
            id: r.id,
            activity_id: r.activity_id,
            decision: AttributeDecisionView {
                key: r.key,
                attribute_key_id: r.attribute_key_id,
                value: r.value.map(|v| v.0),
                resolution_status: r.resolution_status,
                resolver_type: r.resolver_type,
                policy_name: r.policy_name,
                policy_engine: r.policy_engine,
                policy_version: r.policy_version,
                resolved_at: r.resolved_at,
                error_message: r.error_message,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl AttributeView {
    /// Renders a decision just written by a create, as a read would.
    pub fn from_decision(id: Uuid, activity: ActivityId, a: &AttributeDecision, at: DateTime<Utc>) -> Self {
        Self {
            id,
            activity_id: activity,
            decision: AttributeDecisionView::new(a, Some(at)),
            created_at: at,
            updated_at: at,
        }
    }
}

/// A status event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: Uuid,
    pub event_type: EventType,
    pub from_status: Option<ActivityStatus>,
    pub to_status: ActivityStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(with = "crate::domain::time::millis")]
    pub occurred_at: DateTime<Utc>,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            id: r.id,
            event_type: r.event_type,
            from_status: r.from_status,
            to_status: r.to_status,
            error_code: r.error_code,
            error_message: r.error_message,
            occurred_at: r.occurred_at,
        }
    }
}

/// Examples of the bodies above, for the OpenAPI document: the seed's
/// create, as the service answers it.
pub mod examples {
    use serde_json::{Value, json};

    /// The 201 body of the seed's create.
    pub fn created_activity() -> Value {
        let activity = "ee0e8400-e29b-41d4-a716-446655440000";
        let at = "2025-01-15T12:00:00.123Z";
        let version = "9f2c4e1a7b3d5f60812a4c6e8b0d2f4a6c8e0a2b4d6f8a0c2e4a6b8d0f2a4c6e";
        json!({
            "id": activity,
            "type": "MESSAGE",
            "channel": "WHATSAPP",
            "status": "READY",
            "reason": "Monthly promotion",
            "idempotencyKey": "msg-2025-01-15-001",
            "scheduledAt": "2025-01-16T09:00:00.000Z",
            "commerceAssignment": {"commerceId": "880e8400-e29b-41d4-a716-446655440000"},
            "targetUsers": [{
                "id": "5a1d2b3c-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                "activityId": activity,
                "commerceUserId": "5f0c1c7e-3f4b-4a8e-9d55-1c2b3a4d5e6f",
                "resolutionStatus": "LOCKED",
                "resolutionStrategy": "ON_CREATION",
                "lockReason": "CRITERIA_MATCH",
                "criterionType": "ROLE_MATCH",
                "policyName": "role_match",
                "policyEngine": "RHAI",
                "policyVersion": version,
                "resolvedAt": at,
                "lockedAt": at,
                "errorMessage": null,
                "commerceUser": {
                    "externalId": "u-maria",
                    "name": "Maria Gonzalez",
                    "firstName": "Maria",
                    "lastName": "Gonzalez"
                }
            }],
            "attributes": [{
                "id": "7b8c9d0e-1f2a-4b3c-9d4e-5f6a7b8c9d0e",
                "activityId": activity,
                "key": "commerce_info",
                "attributeKeyId": "2c5e8f1a-4b7d-5a0c-8e3f-6a9b2c5d8e1f",
                "value": {"name": "Almacén Don Pepe", "segment": "gold"},
                "resolutionStatus": "RESOLVED",
                "resolverType": "INTERNAL_SERVICE",
                "policyName": "commerce_info",
                "policyEngine": "RHAI",
                "policyVersion": version,
                "resolvedAt": at,
                "errorMessage": null,
                "createdAt": at,
                "updatedAt": at
            }],
            "createdAt": at
        })
    }
}
