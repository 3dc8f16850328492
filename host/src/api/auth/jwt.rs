//! JWT bearer tokens: verifying them (HS256 with a shared secret, RS256 or
//! ES256 with a public key; `alg: none` and algorithm confusion refused) and
//! minting development tokens.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Caller;
use crate::api::ApiError;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// The shortest HS256 secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims of a Reten token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// A string or an array of strings (RFC 7519).
    pub aud: Option<serde_json::Value>,
    /// The tenants the token may act for. Required (it may be empty).
    pub tenant_ids: Vec<Uuid>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// How tokens are verified (and, for `reten token`, minted).
#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key for RS256 or ES256.
    pub public_key_pem: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// A static bearer token that may read `/metrics` (for a scraper).
    pub metrics_token: Option<String>,
}

/// Verifies tokens.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
    /// The SHA-256 of the metrics token, so a comparison leaks nothing.
    metrics_token_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("public", &self.public.as_ref().map(|(_, a)| *a))
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier. At least one key is required.
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let hs256 = match &settings.secret {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                anyhow::bail!("RETEN_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
            }
            Some(s) => Some(DecodingKey::from_secret(s.as_bytes())),
            None => None,
        };
        let public = match &settings.public_key_pem {
            Some(pem) => Some(parse_public_key(pem)?),
            None => None,
        };
        if hs256.is_none() && public.is_none() {
            anyhow::bail!(
                "no JWT key is configured: set RETEN_JWT_SECRET (HS256, at least {MIN_SECRET_BYTES} bytes) \
                 or RETEN_JWT_PUBLIC_KEY (PEM, RS256/ES256)"
            );
        }
        let metrics_token_hash = match &settings.metrics_token {
            Some(t) if t.len() < MIN_SECRET_BYTES => {
                anyhow::bail!("RETEN_METRICS_TOKEN must be at least {MIN_SECRET_BYTES} bytes long")
            }
            Some(t) => Some(Sha256::digest(t.as_bytes()).into()),
            None => None,
        };
        Ok(Self {
            hs256,
            public,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            metrics_token_hash,
        })
    }

    /// Whether `token` is the configured metrics token (compared by hash).
    pub fn is_metrics_token(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.metrics_token_hash.is_some_and(|h| h == presented)
    }

    /// Verifies a bearer token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized("the token is too large".into()));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized("the token is malformed".into()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().map(|k| (k, Algorithm::HS256)),
            alg => self.public.as_ref().filter(|(_, a)| *a == alg).map(|(k, a)| (k, *a)),
        };
        let Some((key, alg)) = key else {
            return Err(ApiError::Unauthorized(format!("tokens signed with {:?} are not accepted", header.alg)));
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not just right
        // when present.
        let mut required = vec!["exp", "sub"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &self.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            ApiError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidSignature => "the token's signature is invalid",
                    ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                    ErrorKind::InvalidAudience => "the token's audience is not accepted",
                    ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "the token lacks a required claim (sub, exp, tenant_ids)"
                    }
                    _ => "the token is invalid",
                }
                .to_owned(),
            )
        })?;
        Ok(Caller::from_claims(data.claims))
    }
}

fn parse_public_key(pem: &str) -> anyhow::Result<(DecodingKey, Algorithm)> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::ES256));
    }
    anyhow::bail!("RETEN_JWT_PUBLIC_KEY is not an RSA or EC public key in PEM form")
}

/// Mints an HS256 token (for `reten token` and tests).
pub fn mint(secret: &str, claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}
