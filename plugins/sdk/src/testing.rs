//! Building inputs in unit tests, so a policy's logic can be tested natively
//! with `cargo test` (the export macros compile on any target).
//!
//! ```
//! use reten_policy_sdk::prelude::*;
//! use reten_policy_sdk::testing::{input, user};
//!
//! let input = input(vec![user("u1", &[Role::Owner]), user("u2", &[])])
//!     .with_config(json!({ "role": "OWNER" }))
//!     .with_metadata(json!({ "total_spend": 12 }));
//! assert_eq!(input.commerce.users.len(), 2);
//! ```

use serde_json::Value;

use crate::{Activity, ActivityType, Channel, Commerce, CommerceUser, Input, Role};

/// An active user with this id and these roles, and nothing else.
pub fn user(id: &str, roles: &[Role]) -> CommerceUser {
    CommerceUser {
        id: id.to_owned(),
        external_id: None,
        name: None,
        is_active: true,
        roles: roles.to_vec(),
        contacts: Vec::new(),
    }
}

/// An input for a salesman task at a commerce with these users; metadata and
/// config are `{}`, history is empty.
pub fn input(users: Vec<CommerceUser>) -> Input {
    Input {
        tenant_id: "00000000-0000-4000-8000-000000000001".to_owned(),
        activity: Activity {
            activity_type: ActivityType::Task,
            channel: Channel::Salesman,
            reason: "test".to_owned(),
            score: None,
            user_status: None,
            assignment_reason: None,
            scheduled_at: "2025-01-16T09:00:00.000Z".to_owned(),
            suggested_execution_time: None,
        },
        commerce: Commerce {
            id: "00000000-0000-4000-8000-000000000002".to_owned(),
            external_id: "C-1".to_owned(),
            name: "Test commerce".to_owned(),
            tax_id: None,
            global_external_id: None,
            is_active: true,
            metadata: "{}".to_owned(),
            addresses: Vec::new(),
            users,
        },
        history: Vec::new(),
        config: "{}".to_owned(),
    }
}

impl Input {
    /// The same input with this `config` (for tests).
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = config.to_string();
        self
    }

    /// The same input with this commerce `metadata` (for tests).
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.commerce.metadata = metadata.to_string();
        self
    }
}
