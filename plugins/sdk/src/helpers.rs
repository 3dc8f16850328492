//! Conveniences on the generated types: reading the JSON fields, looking at
//! users, building candidates and errors.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Candidate, Commerce, CommerceUser, ErrorKind, Input, PolicyError, Role};

/// Parses a JSON field of the input. Blank text counts as an empty object.
fn parse_json<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    if text.trim().is_empty() { serde_json::from_str("{}") } else { serde_json::from_str(text) }
}

impl Input {
    /// The policy's `config`, deserialised into `T`.
    ///
    /// Blank config text counts as `{}`, so a `T` whose fields all have
    /// `#[serde(default)]` works without any config. A config that is not JSON
    /// or does not fit `T` gives a [`ErrorKind::BadConfig`] error.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, PolicyError> {
        parse_json(&self.config).map_err(|error| PolicyError::bad_config(format!("invalid config: {error}")))
    }
}

impl Commerce {
    /// The commerce's `metadata`, parsed (blank text counts as `{}`).
    ///
    /// Metadata that is not JSON gives a [`ErrorKind::BadInput`] error.
    pub fn metadata(&self) -> Result<Value, PolicyError> {
        parse_json(&self.metadata)
            .map_err(|error| PolicyError::bad_input(format!("commerce metadata is not JSON: {error}")))
    }

    /// The user with this `id`, if the commerce has one.
    pub fn user(&self, id: &str) -> Option<&CommerceUser> {
        self.users.iter().find(|user| user.id == id)
    }

    /// The user whose `external-id` is this, if the commerce has one.
    pub fn user_by_external_id(&self, external_id: &str) -> Option<&CommerceUser> {
        self.users.iter().find(|user| user.external_id.as_deref() == Some(external_id))
    }

    /// The active users, in input order.
    pub fn active_users(&self) -> impl Iterator<Item = &CommerceUser> {
        self.users.iter().filter(|user| user.is_active)
    }
}

impl CommerceUser {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl Role {
    /// The role's name as the host spells it: `OWNER`, `COMMERCE_REP`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "OWNER",
            Role::Orders => "ORDERS",
            Role::Finance => "FINANCE",
            Role::Attention => "ATTENTION",
            Role::Admin => "ADMIN",
            Role::CommerceRep => "COMMERCE_REP",
            Role::Other => "OTHER",
        }
    }

    /// Parses a role name, case-insensitively, `-` and `_` alike:
    /// `COMMERCE_REP`, `commerce-rep`, …
    pub fn parse(name: &str) -> Option<Role> {
        let name = name.trim().replace('-', "_").to_ascii_uppercase();
        [Role::Owner, Role::Orders, Role::Finance, Role::Attention, Role::Admin, Role::CommerceRep, Role::Other]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

impl Candidate {
    /// A candidate for the commerce user with this id, without a note.
    pub fn new(commerce_user_id: impl Into<String>) -> Self {
        Candidate { commerce_user_id: commerce_user_id.into(), note: None }
    }

    /// The same candidate with a note (shown in the resolution trace).
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

impl PolicyError {
    /// An error of this kind with this message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PolicyError { kind, message: message.into() }
    }

    /// The `config` does not make sense to the policy.
    pub fn bad_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadConfig, message)
    }

    /// The input lacks something the policy needs.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Any other failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{input, user};
    use crate::{Candidate, ErrorKind, Input, Role};

    #[test]
    fn config_blank_is_an_empty_object() {
        let mut input: Input = input(vec![]);
        input.config = "  ".to_owned();
        let config: serde_json::Value = input.config().unwrap();
        assert_eq!(config, json!({}));
    }

    #[test]
    fn config_that_does_not_fit_is_bad_config() {
        let input = input(vec![]).with_config(json!({ "n": "one" }));
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            #[allow(dead_code)]
            n: u32,
        }
        let error = input.config::<Config>().unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadConfig);
    }

    #[test]
    fn metadata_that_is_not_json_is_bad_input() {
        let mut input = input(vec![]);
        input.commerce.metadata = "{nope".to_owned();
        assert_eq!(input.commerce.metadata().unwrap_err().kind, ErrorKind::BadInput);
    }

    #[test]
    fn users_and_roles() {
        let mut idle = user("u2", &[Role::Owner]);
        idle.is_active = false;
        let input = input(vec![user("u1", &[Role::CommerceRep]), idle]);
        let commerce = &input.commerce;
        assert!(commerce.user("u1").unwrap().has_role(Role::CommerceRep));
        assert!(!commerce.user("u1").unwrap().has_role(Role::Owner));
        assert!(commerce.user("u3").is_none());
        let active: Vec<_> = commerce.active_users().map(|u| u.id.as_str()).collect();
        assert_eq!(active, ["u1"]);
    }

    #[test]
    fn role_names() {
        assert_eq!(Role::parse("COMMERCE_REP"), Some(Role::CommerceRep));
        assert_eq!(Role::parse("commerce-rep"), Some(Role::CommerceRep));
        assert_eq!(Role::parse("boss"), None);
        assert_eq!(Role::Owner.as_str(), "OWNER");
    }

    #[test]
    fn candidate_and_attribute_output() {
        let candidate = Candidate::new("u1").with_note("why");
        assert_eq!(candidate.commerce_user_id, "u1");
        assert_eq!(candidate.note.as_deref(), Some("why"));
        let out = crate::__private::attribute_output(Ok(Some(json!({ "a": [1, "b"] }))));
        assert_eq!(out.unwrap().as_deref(), Some(r#"{"a":[1,"b"]}"#));
        assert_eq!(crate::__private::attribute_output(Ok(None)).unwrap(), None);
    }
}
