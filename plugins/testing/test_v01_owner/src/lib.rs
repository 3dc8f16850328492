//! `test_v01_owner` — a criterion built against the frozen 0.1 contract
//! directly with `wit-bindgen`, as components built before 0.2 were: the
//! users holding OWNER, noted "owner (0.1)". The host must keep serving it
//! unchanged beside 0.2 components.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1",
        world: "reten:policy/criterion@0.1.0",
    });
}

use bindings::reten::policy::types::{Candidate, PolicyError, PolicyInput, UserRole};

struct Plugin;

impl bindings::Guest for Plugin {
    fn resolve(input: PolicyInput) -> Result<Vec<Candidate>, PolicyError> {
        Ok(input
            .commerce
            .users
            .iter()
            .filter(|u| u.roles.contains(&UserRole::Owner))
            .map(|u| Candidate { commerce_user_id: u.id.clone(), note: Some("owner (0.1)".into()) })
            .collect())
    }
}

bindings::export!(Plugin with_types_in bindings);
