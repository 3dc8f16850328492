//! The body a provider receives (`camelCase`, like every answer):
//! `{activity, commerce, targetUser, attributes}`. Built from what is stored,
//! so every attempt of one activity sends the same decisions. Pull-mode
//! integrators read the same shape.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{ActivityId, AttributeStatus, CommerceId, TenantId};
use crate::store::dispatch::{ContactForSend, ForSend};

/// The webhook body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub activity: ActivityPart,
    pub commerce: CommercePart,
    /// The resolved target user; `null` when the activity has none.
    pub target_user: Option<TargetPart>,
    /// Each resolved attribute (`RESOLVED` or `FALLBACK`), by key.
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

/// `activity`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityPart {
    pub id: ActivityId,
    pub tenant_id: TenantId,
    #[serde(rename = "type")]
    pub activity_type: crate::domain::ActivityType,
    pub channel: crate::domain::Channel,
    pub reason: String,
    #[serde(with = "crate::domain::time::millis")]
    pub scheduled_at: DateTime<Utc>,
    #[serde(with = "crate::domain::time::millis_opt")]
    pub suggested_execution_time: Option<DateTime<Utc>>,
    pub user_status: Option<String>,
    pub score: Option<i32>,
    pub assignment_reason: Option<String>,
    pub idempotency_key: String,
    #[serde(with = "crate::domain::time::millis")]
    pub created_at: DateTime<Utc>,
}

/// `commerce`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommercePart {
    pub id: CommerceId,
    pub external_id: Option<String>,
    pub name: Option<String>,
}

/// `targetUser`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetPart {
    pub commerce_user_id: Uuid,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub contacts: Vec<ContactPart>,
}

/// One contact of the target user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactPart {
    #[serde(rename = "type")]
    #[schema(value_type = crate::domain::ContactType)]
    pub contact_type: String,
    pub value: String,
    pub is_primary: bool,
}

impl From<&ContactForSend> for ContactPart {
    fn from(c: &ContactForSend) -> Self {
        Self { contact_type: c.contact_type.clone(), value: c.value.clone(), is_primary: c.is_primary }
    }
}

/// The body for a loaded activity of `tenant`.
pub fn build(tenant: TenantId, f: &ForSend) -> Payload {
    let a = &f.activity;
    let target_user = f.targets.0.iter().find_map(|t| {
        t.commerce_user_id.map(|id| TargetPart {
            commerce_user_id: id,
            external_id: t.external_id.clone(),
            name: t.name.clone(),
            contacts: t.contacts.iter().map(ContactPart::from).collect(),
        })
    });
    let settled = [AttributeStatus::Resolved.as_str(), AttributeStatus::Fallback.as_str()];
    let attributes = f
        .attributes
        .0
        .iter()
        .filter(|v| settled.contains(&v.resolution_status.as_str()))
        .map(|v| (v.key.clone(), v.value.clone().unwrap_or(Value::Null)))
        .collect();
    Payload {
        activity: ActivityPart {
            id: a.id,
            tenant_id: tenant,
            activity_type: a.activity_type,
            channel: a.channel,
            reason: a.reason.clone(),
            scheduled_at: a.scheduled_at,
            suggested_execution_time: a.suggested_execution_time,
            user_status: a.user_status.clone(),
            score: a.score,
            assignment_reason: a.assignment_reason.clone(),
            idempotency_key: a.idempotency_key.clone(),
            created_at: a.created_at,
        },
        commerce: CommercePart {
            id: a.commerce_id,
            external_id: a.commerce_external_id.clone(),
            name: a.commerce_name.clone(),
        },
        target_user,
        attributes,
    }
}
