//! Conversions from the host's policy input to the WIT records of
//! `reten:policy@0.1.0`: done once per request and engine.

use super::wasm_engine::bindings::types as wit;
use crate::domain::commerce::{Address, Commerce, CommerceUser, Contact, HistoryEntry};
use crate::domain::{ActivityType, Channel, ContactType, UserRole, time};
use crate::policy::input::BaseInput;

/// Everything but `config`.
pub fn base(b: &BaseInput) -> wit::PolicyInput {
    wit::PolicyInput {
        tenant_id: b.tenant_id.to_string(),
        activity: wit::Activity {
            activity_type: match b.activity.activity_type {
                ActivityType::Task => wit::ActivityType::Task,
                ActivityType::Message => wit::ActivityType::Message,
            },
            channel: channel(b.activity.channel),
            reason: b.activity.reason.clone(),
            score: b.activity.score,
            user_status: b.activity.user_status.clone(),
            assignment_reason: b.activity.assignment_reason.clone(),
            scheduled_at: b.activity.scheduled_at.clone(),
            suggested_execution_time: b.activity.suggested_execution_time.clone(),
        },
        commerce: commerce(&b.commerce),
        history: b.history.iter().map(history).collect(),
        config: String::new(),
    }
}

fn commerce(c: &Commerce) -> wit::Commerce {
    wit::Commerce {
        id: c.id.to_string(),
        external_id: c.external_id.clone(),
        name: c.name.clone(),
        tax_id: c.tax_id.clone(),
        global_external_id: c.global_external_id.clone(),
        is_active: c.is_active,
        metadata: serde_json::to_string(&c.metadata).unwrap_or_else(|_| "{}".into()),
        addresses: c.addresses.iter().map(address).collect(),
        users: c.users.iter().map(user).collect(),
    }
}

fn address(a: &Address) -> wit::Address {
    wit::Address {
        address_alias: a.address_alias.clone(),
        street: a.street.clone(),
        street_number: a.street_number.clone(),
        unit: a.unit.clone(),
        city: a.city.clone(),
        commune: a.commune.clone(),
        region: a.region.clone(),
        country_code: a.country_code.clone(),
        formatted_address: a.formatted_address.clone(),
        latitude: a.latitude,
        longitude: a.longitude,
        is_primary: a.is_primary,
    }
}

fn user(u: &CommerceUser) -> wit::CommerceUser {
    wit::CommerceUser {
        id: u.id.to_string(),
        external_id: u.external_id.clone(),
        name: u.name.clone(),
        is_active: u.is_active,
        roles: u.roles.iter().map(|r| role(*r)).collect(),
        contacts: u.contacts.iter().map(contact).collect(),
    }
}

fn contact(c: &Contact) -> wit::Contact {
    wit::Contact {
        contact_type: match c.contact_type {
            ContactType::Phone => wit::ContactType::Phone,
            ContactType::Email => wit::ContactType::Email,
            ContactType::Whatsapp => wit::ContactType::Whatsapp,
            ContactType::Other => wit::ContactType::Other,
        },
        value: c.value.clone(),
        is_primary: c.is_primary,
    }
}

fn history(h: &HistoryEntry) -> wit::HistoryEntry {
    wit::HistoryEntry {
        commerce_user_id: h.commerce_user_id.to_string(),
        channel: h.channel.map(channel),
        activity_id: h.activity_id.to_string(),
        last_targeted_at: time::format(&h.last_targeted_at),
    }
}

fn role(r: UserRole) -> wit::UserRole {
    match r {
        UserRole::Owner => wit::UserRole::Owner,
        UserRole::Orders => wit::UserRole::Orders,
        UserRole::Finance => wit::UserRole::Finance,
        UserRole::Attention => wit::UserRole::Attention,
        UserRole::Admin => wit::UserRole::Admin,
        UserRole::CommerceRep => wit::UserRole::CommerceRep,
        UserRole::Other => wit::UserRole::Other,
    }
}

fn channel(c: Channel) -> wit::Channel {
    match c {
        Channel::Salesman => wit::Channel::Salesman,
        Channel::Callcenter => wit::Channel::Callcenter,
        Channel::Whatsapp => wit::Channel::Whatsapp,
        Channel::Email => wit::Channel::Email,
        Channel::Sms => wit::Channel::Sms,
        Channel::Push => wit::Channel::Push,
    }
}
