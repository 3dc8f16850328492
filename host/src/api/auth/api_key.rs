//! API keys presented in `x-api-key`: looked up by their SHA-256 (the only
//! thing stored), trusted for a few seconds in a bounded cache, forgotten at
//! once when this process revokes them; `lastUsedAt` is written at most once
//! a minute per key rather than on every request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Caller;
use crate::api::ApiError;
use crate::domain::Permission;
use crate::store::api_keys::{self as store, ApiKeyRow};

/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Every key starts with this.
pub const KEY_PREFIX: &str = "rtn_sk_";
/// How long a looked-up key is trusted before it is read again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often `lastUsedAt` is written for one key, at most.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Verifies presented keys.
#[derive(Debug)]
pub struct ApiKeys {
    /// Looked-up keys by hash, trusted for [`CACHE_TTL`].
    cache: moka::sync::Cache<String, ApiKeyRow>,
    /// Keys whose `lastUsedAt` was written in the last [`TOUCH_EVERY`].
    touched: moka::sync::Cache<Uuid, ()>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(CACHE_TTL).build(),
            touched: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(TOUCH_EVERY).build(),
        }
    }
}

/// The SHA-256 of a key, in hex: what is stored and looked up.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

impl ApiKeys {
    /// The caller a presented key stands for, or 401.
    pub async fn authenticate(&self, pool: &sqlx::PgPool, presented: &str) -> Result<Caller, ApiError> {
        let presented = presented.trim();
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
            return Err(ApiError::Unauthorized("the API key is malformed".into()));
        }
        let hash = hash_key(presented);
        let row = match self.cache.get(&hash) {
            Some(row) => row,
            None => {
                let row = store::find_by_hash(pool, &hash)
                    .await?
                    .ok_or_else(|| ApiError::Unauthorized("the API key is invalid".into()))?;
                self.cache.insert(hash, row.clone());
                row
            }
        };
        if row.revoked_at.is_some() {
            return Err(ApiError::Unauthorized("the API key has been revoked".into()));
        }
        let now = Utc::now();
        if row.expires_at.is_some_and(|at| at <= now) {
            return Err(ApiError::Unauthorized("the API key has expired".into()));
        }
        self.touch(pool, &row, now).await;
        Ok(Caller {
            sub: row.user_sub.clone(),
            tenant_ids: vec![row.tenant_id],
            permissions: row.permissions.iter().filter_map(|p| Permission::parse(p)).collect(),
            super_admin: false,
            api_key: Some((row.tenant_id, row.id)),
        })
    }

    /// Writes `lastUsedAt`, at most once per [`TOUCH_EVERY`] per key.
    async fn touch(&self, pool: &sqlx::PgPool, row: &ApiKeyRow, now: DateTime<Utc>) {
        // Fresh: this call inserted it, so no other did within the window.
        let due = self.touched.entry(row.id).or_insert(()).is_fresh();
        if due && let Err(e) = store::touch(pool, row.tenant_id, row.id, now).await {
            // Bookkeeping only: the request goes on.
            tracing::warn!(error = %e, key_id = %row.id, "failed to record an API key's last use");
        }
    }

    /// Forgets a key at once (after a revoke).
    pub fn forget(&self, id: Uuid) {
        for (hash, row) in &self.cache {
            if row.id == id {
                self.cache.invalidate(&*hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(super::hash_key("rtn_sk_x").len(), 64);
        assert_ne!(super::hash_key("rtn_sk_x"), super::hash_key("rtn_sk_y"));
    }
}
