//! Resolution over the repository's real policy files, without HTTP or a
//! database: the commerce and the request are built in memory.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::domain::activity::NewActivity;
use crate::domain::commerce::{Commerce, CommerceUser, Contact};
use crate::domain::{CommerceId, CommerceUserId, ContactType, LockReason, TargetStatus, UserRole};
use crate::policy::Registry;
use crate::policy::registry::RegistryOptions;

fn registry() -> Registry {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    Registry::load(&root, RegistryOptions::default()).expect("the repository's policies load")
}

fn user(name: &str, roles: &[UserRole], contacts: &[ContactType]) -> CommerceUser {
    CommerceUser {
        id: CommerceUserId::new(),
        external_id: Some(name.to_lowercase()),
        name: Some(name.into()),
        is_active: true,
        roles: roles.to_vec(),
        contacts: contacts.iter().map(|t| Contact { contact_type: *t, value: "x".into(), is_primary: true }).collect(),
    }
}

fn commerce(users: Vec<CommerceUser>) -> Commerce {
    Commerce {
        id: CommerceId::new(),
        external_id: "c-1".into(),
        name: "Shop".into(),
        tax_id: None,
        global_external_id: None,
        is_active: true,
        metadata: serde_json::Map::new(),
        addresses: Vec::new(),
        users,
    }
}

fn request(commerce: &Commerce, snapshot: &crate::policy::TenantSnapshot, extra: serde_json::Value) -> NewActivity {
    let mut body = json!({
        "type": "MESSAGE", "reason": "r", "channel": "WHATSAPP", "commerce_id": commerce.id,
        "idempotency_key": "k", "scheduled_at": "2025-01-16T09:00:00Z", "attribute_keys": ["commerce_info"]
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    NewActivity::parse(&body, snapshot).expect("a valid request")
}

async fn run(commerce: Commerce, extra: serde_json::Value) -> Resolution {
    let registry = registry();
    let snapshot = registry.snapshot(crate::domain::TenantId::new());
    let activity = request(&commerce, &snapshot, extra);
    let input = prepare_input(crate::domain::TenantId::new(), &activity, Arc::new(commerce), Vec::new());
    resolve_activity(&snapshot, &input, &activity).await
}

#[tokio::test]
async fn the_default_config_locks_the_reachable_commerce_rep() {
    let rep = user("Juan", &[UserRole::CommerceRep], &[ContactType::Phone]);
    let rep_id = rep.id;
    let r = run(commerce(vec![user("Maria", &[UserRole::Owner], &[ContactType::Whatsapp]), rep]), json!({})).await;
    assert_eq!(r.status, ActivityStatus::Ready);
    assert_eq!(r.target.commerce_user_id, Some(rep_id));
    assert_eq!(r.target.status, TargetStatus::Locked);
    assert_eq!(r.target.lock_reason, Some(LockReason::CriteriaMatch));
    assert_eq!(r.target.policy.as_ref().unwrap().name, "role_match");
    assert_eq!(r.attributes[0].value.as_ref().unwrap()["name"], "Shop");
}

#[tokio::test]
async fn an_unreachable_rep_is_skipped_and_the_owner_is_the_fallback() {
    let owner = user("Maria", &[UserRole::Owner], &[ContactType::Whatsapp]);
    let owner_id = owner.id;
    let r = run(commerce(vec![owner, user("Juan", &[UserRole::CommerceRep], &[ContactType::Email])]), json!({})).await;
    assert_eq!(r.target.commerce_user_id, Some(owner_id));
    assert_eq!(r.target.lock_reason, Some(LockReason::FallbackOwner));
    let target = r.trace.target.unwrap();
    assert_eq!(target.criteria[0].candidates[0].skip_reason, Some(trace::SkipReason::Unreachable));
    assert_eq!(target.fallbacks.len(), 2);
}

#[tokio::test]
async fn nobody_reachable_fails_the_target_and_the_activity() {
    let r = run(commerce(vec![user("Juan", &[UserRole::CommerceRep], &[])]), json!({})).await;
    assert_eq!(r.target.status, TargetStatus::Failed);
    assert_eq!(r.status, ActivityStatus::Unresolved);
}

#[tokio::test]
async fn a_misconfigured_criterion_is_skipped_with_its_error() {
    let rep = user("Juan", &[UserRole::CommerceRep], &[ContactType::Phone]);
    let r = run(commerce(vec![rep]), json!({"target_criteria": [{"type": "ROLE_MATCH"}]})).await;
    let target = r.trace.target.unwrap();
    assert_eq!(target.criteria[0].outcome, trace::CriterionOutcome::Failed);
    assert!(target.criteria[0].error.as_ref().unwrap().message.contains("config.role is required"));
    assert_eq!(r.target.lock_reason, Some(LockReason::FallbackCommerceRep));
}
