//! Dispatch credentials at rest: AES-256-GCM under `RETEN_SECRETS_KEY`.
//!
//! A sealed value is a random 96-bit nonce followed by the ciphertext and
//! its tag, bound to associated data (the config's tenant and id) so that a
//! blob copied onto another row does not open. Each key has a fingerprint
//! stored beside the blob; `RETEN_SECRETS_KEY_PREVIOUS` still opens what the
//! previous key sealed during a rotation, and anything written again is
//! sealed under the current key.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context as _;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The length of a nonce, in bytes.
const NONCE_BYTES: usize = 12;

/// One key, with its fingerprint. Never printed.
struct SecretKey {
    /// Identifies the key beside what it sealed; derived, not secret.
    id: String,
    cipher: Aes256Gcm,
}

impl SecretKey {
    fn parse(var: &str, encoded: &str) -> anyhow::Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .with_context(|| format!("{var} is not valid base64"))?;
        if bytes.len() != 32 {
            anyhow::bail!("{var} must be the base64 of 32 bytes (it decodes to {} bytes)", bytes.len());
        }
        let mut hasher = Sha256::new();
        hasher.update(b"reten-secrets-key-id:");
        hasher.update(&bytes);
        let id = hex::encode(&hasher.finalize()[..4]);
        let cipher = Aes256Gcm::new_from_slice(&bytes).context("an AES-256 key is 32 bytes")?;
        Ok(Self { id, cipher })
    }
}

/// The keys that seal and open credentials.
#[derive(Default)]
pub struct Secrets {
    current: Option<SecretKey>,
    previous: Option<SecretKey>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Fingerprints only: never key material.
        f.debug_struct("Secrets")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

/// Why a value could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("RETEN_SECRETS_KEY is not set, so credentials cannot be stored or read")]
    NoKey,
    #[error(
        "the credentials were sealed under key {0}, which is neither RETEN_SECRETS_KEY nor RETEN_SECRETS_KEY_PREVIOUS"
    )]
    UnknownKey(String),
    #[error("the sealed credentials do not open (corrupt, or moved to another row)")]
    Corrupt,
}

/// A sealed value and the fingerprint of the key that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub blob: Vec<u8>,
}

impl Secrets {
    /// The keys from their base64 forms (`RETEN_SECRETS_KEY`,
    /// `RETEN_SECRETS_KEY_PREVIOUS`); either may be absent.
    pub fn from_base64(current: Option<&str>, previous: Option<&str>) -> anyhow::Result<Self> {
        let parse = |var: &str, v: Option<&str>| v.filter(|s| !s.trim().is_empty()).map(|s| SecretKey::parse(var, s));
        let current = parse("RETEN_SECRETS_KEY", current).transpose()?;
        let previous = parse("RETEN_SECRETS_KEY_PREVIOUS", previous).transpose()?;
        if current.is_none() && previous.is_some() {
            anyhow::bail!("RETEN_SECRETS_KEY_PREVIOUS is set without RETEN_SECRETS_KEY");
        }
        Ok(Self { current, previous })
    }

    /// Whether credentials can be sealed (a current key is set).
    pub fn can_seal(&self) -> bool {
        self.current.is_some()
    }

    /// The fingerprint of the current key.
    pub fn current_key_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let key = self.current.as_ref().ok_or(SecretsError::NoKey)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext =
            key.cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).map_err(|_| SecretsError::Corrupt)?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(Sealed { key_id: key.id.clone(), blob })
    }

    /// Opens what [`Secrets::seal`] sealed, with the key that sealed it.
    pub fn open(&self, key_id: &str, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let key =
            [&self.current, &self.previous].into_iter().flatten().find(|k| k.id == key_id).ok_or_else(
                || match &self.current {
                    None => SecretsError::NoKey,
                    Some(_) => SecretsError::UnknownKey(key_id.to_owned()),
                },
            )?;
        if blob.len() < NONCE_BYTES {
            return Err(SecretsError::Corrupt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SecretsError::Corrupt)?;
        key.cipher.decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad }).map_err(|_| SecretsError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_aad_only() {
        let secrets = Secrets::from_base64(Some(&key(1)), None).unwrap();
        let sealed = secrets.seal(b"tenant/config", b"sk-123").unwrap();
        assert!(!sealed.blob.windows(6).any(|w| w == b"sk-123"), "the plaintext is not in the blob");
        assert_eq!(secrets.open(&sealed.key_id, b"tenant/config", &sealed.blob).unwrap(), b"sk-123");
        assert_eq!(secrets.open(&sealed.key_id, b"tenant/other", &sealed.blob), Err(SecretsError::Corrupt));
    }

    #[test]
    fn the_previous_key_still_opens_during_a_rotation() {
        let old = Secrets::from_base64(Some(&key(1)), None).unwrap();
        let sealed = old.seal(b"aad", b"secret").unwrap();
        let rotated = Secrets::from_base64(Some(&key(2)), Some(&key(1))).unwrap();
        assert_eq!(rotated.open(&sealed.key_id, b"aad", &sealed.blob).unwrap(), b"secret");
        assert_ne!(rotated.seal(b"aad", b"secret").unwrap().key_id, sealed.key_id, "new writes use the new key");
        let forgotten = Secrets::from_base64(Some(&key(2)), None).unwrap();
        assert!(matches!(forgotten.open(&sealed.key_id, b"aad", &sealed.blob), Err(SecretsError::UnknownKey(_))));
    }

    #[test]
    fn a_key_must_be_32_bytes_of_base64_and_never_prints() {
        assert!(Secrets::from_base64(Some("c2hvcnQ="), None).is_err());
        assert!(Secrets::from_base64(Some("not base64!"), None).is_err());
        assert!(Secrets::from_base64(None, Some(&key(1))).is_err());
        let secrets = Secrets::from_base64(Some(&key(7)), None).unwrap();
        assert!(!format!("{secrets:?}").contains(&key(7)));
        assert_eq!(Secrets::default().seal(b"", b"x"), Err(SecretsError::NoKey));
    }
}
