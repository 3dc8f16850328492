//! The dispatch providers: a catalogue in the code (`WEBHOOK`, `MOCK`), with
//! stable ids, the channels each serves and the credentials each needs, and
//! the credentials of one config.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::secrets::{Sealed, Secrets, SecretsError};
use crate::domain::{Channel, ProviderCode, TenantId};

/// When the catalogue's channel definitions were defined (they are code).
pub const DEFINED_AT: &str = "2026-12-02T00:01:00.000Z";

const NAMESPACE: Uuid = Uuid::from_u128(0x4d2a_61c0_7e3b_4f15_a8d2_93c7_0b5e_1f64);

/// One provider of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provider {
    pub code: ProviderCode,
    pub name: &'static str,
    pub description: &'static str,
}

/// One credential a provider takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialField {
    /// The key in `credentials` (`api_key`).
    pub key: &'static str,
    pub label: &'static str,
    /// How a form should show it (`password`: masked).
    pub field_type: &'static str,
    pub required: bool,
}

const WEBHOOK_CREDENTIALS: &[CredentialField] = &[
    CredentialField { key: "api_key", label: "API key (sent as x-api-key)", field_type: "password", required: true },
    CredentialField {
        key: "signing_secret",
        label: "Signing secret (signs each request: x-reten-signature)",
        field_type: "password",
        required: false,
    },
];

/// Every provider, in a stable order.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        code: ProviderCode::Webhook,
        name: "Webhook (REST)",
        description: "POST {base_url}/activities with x-api-key, Idempotency-Key and an HMAC signature",
    },
    Provider {
        code: ProviderCode::Mock,
        name: "Mock",
        description: "Always succeeds with a random provider id and sends nothing; for development",
    },
];

impl Provider {
    /// The provider's stable id (a UUID v5 of its code).
    pub fn id(&self) -> Uuid {
        provider_id(self.code)
    }

    /// The credentials it takes.
    pub fn credentials(&self) -> &'static [CredentialField] {
        match self.code {
            ProviderCode::Webhook => WEBHOOK_CREDENTIALS,
            ProviderCode::Mock => &[],
        }
    }

    /// Whether it needs a `base_url`.
    pub fn needs_base_url(&self) -> bool {
        self.code == ProviderCode::Webhook
    }

    /// The channels it serves: every one.
    pub fn channels(&self) -> &'static [Channel] {
        Channel::ALL
    }
}

/// The stable id of a provider.
pub fn provider_id(code: ProviderCode) -> Uuid {
    Uuid::new_v5(&NAMESPACE, code.as_str().as_bytes())
}

/// The stable id of a provider's definition of a channel.
pub fn channel_definition_id(code: ProviderCode, channel: Channel) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{}/{}", code.as_str(), channel.as_str()).as_bytes())
}

/// The provider of an id, if the catalogue has it.
pub fn by_id(id: Uuid) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.id() == id)
}

/// The provider of a code.
pub fn by_code(code: ProviderCode) -> &'static Provider {
    PROVIDERS.iter().find(|p| p.code == code).expect("every provider code is in the catalogue")
}

/// A config's credentials, as sealed at rest. Never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.api_key.is_none() && self.signing_secret.is_none()
    }

    /// Seals them for the config `id` of `tenant` (bound to both).
    pub fn seal(&self, secrets: &Secrets, tenant: TenantId, id: Uuid) -> Result<Sealed, SecretsError> {
        let plaintext = serde_json::to_vec(self).expect("two optional strings always serialise");
        secrets.seal(aad(tenant, id).as_bytes(), &plaintext)
    }

    /// Opens the credentials sealed for the config `id` of `tenant`.
    pub fn open(
        secrets: &Secrets,
        tenant: TenantId,
        id: Uuid,
        key_id: &str,
        blob: &[u8],
    ) -> Result<Self, SecretsError> {
        let plaintext = secrets.open(key_id, aad(tenant, id).as_bytes(), blob)?;
        serde_json::from_slice(&plaintext).map_err(|_| SecretsError::Corrupt)
    }
}

/// What credentials are bound to: the config's tenant and id.
fn aad(tenant: TenantId, id: Uuid) -> String {
    format!("reten/dispatch-config/{tenant}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_are_stable_and_credentials_never_print() {
        assert_eq!(by_id(provider_id(ProviderCode::Webhook)).map(|p| p.code), Some(ProviderCode::Webhook));
        assert_ne!(provider_id(ProviderCode::Webhook), provider_id(ProviderCode::Mock));
        let c = Credentials { api_key: Some("sk-live-1".into()), signing_secret: Some("whsec".into()) };
        assert!(!format!("{c:?}").contains("sk-live-1"));
    }
}
