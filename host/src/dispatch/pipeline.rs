//! One claimed activity, from load to recorded attempt: resolve what
//! ON_DISPATCH left pending, build the body, send it through the config's
//! provider, and record the attempt with its transition. The dispatcher and
//! the manual dispatch route both run this.
//!
//! Invariant: nothing is marked DISPATCHED that was not answered 2xx, and
//! every write applies only while this run still holds the claim.

use std::time::Instant;

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use super::Dispatch;
use super::payload;
use super::providers::Credentials;
use super::resolution::{self, Resolved};
use super::sender::{Delivery, Failure, Sent};
use crate::domain::{ActivityId, ActivityStatus, ProviderCode, TenantId};
use crate::policy::Registry;
use crate::store::dispatch::{self as store, ForSend};
use crate::store::dispatch_configs::{self, ConfigRow};
use crate::store::dispatch_outcomes::{self, Attempt, RetryPolicy, Trigger};
use crate::store::fast_pool::FastPool;

/// What a run needs.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub pool: &'a PgPool,
    /// For the commerce read of a resolution (the create path's read).
    pub fast: &'a FastPool,
    pub registry: &'a Registry,
    pub dispatch: &'a Dispatch,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx: the activity is DISPATCHED.
    Dispatched { provider_activity_id: Option<String> },
    /// Not answered 2xx; the activity is READY again (a retry is due after
    /// the backoff) or FAILED (that was the last attempt). `None`: the claim
    /// was lost meanwhile.
    AttemptFailed { failure: Failure, status: Option<ActivityStatus> },
    /// An ON_DISPATCH item could not be resolved: UNRESOLVED, not sent.
    Unresolved(String),
    /// A target waits for a manual assignment: parked, not sent.
    Held,
    /// The channel has no active config any more: given back, not sent.
    NoConfig,
    /// The activity is no longer this run's (another dispatcher, a result or
    /// a cancel changed it): nothing written.
    Lost,
}

/// Runs one claimed activity.
#[tracing::instrument(level = "debug", skip_all, fields(tenant_id = %tenant, activity_id = %id))]
pub async fn run(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    id: ActivityId,
    owner: Uuid,
    trigger: Trigger,
) -> Result<Outcome, sqlx::Error> {
    let mut f = match load_held(ctx, tenant, id, owner).await? {
        Some(f) => f,
        None => return Ok(Outcome::Lost),
    };
    match resolution::resolve_pending(ctx, tenant, &f, owner).await? {
        Resolved::Nothing => {}
        Resolved::Written => match load_held(ctx, tenant, id, owner).await? {
            Some(again) => f = again,
            None => return Ok(Outcome::Lost),
        },
        Resolved::Failed(why) => {
            tracing::info!(tenant_id = %tenant, activity_id = %id, "unresolved at dispatch");
            return Ok(Outcome::Unresolved(why));
        }
        Resolved::Held => {
            store::park(ctx.pool, tenant, id, owner).await?;
            return Ok(Outcome::Held);
        }
        Resolved::Lost => return Ok(Outcome::Lost),
    }
    let config = match f.config_id {
        Some(config_id) => dispatch_configs::get(ctx.pool, tenant, config_id).await?,
        None => None,
    };
    let Some(config) = config else {
        store::release(ctx.pool, tenant, id, owner).await?;
        return Ok(Outcome::NoConfig);
    };
    send(ctx, tenant, &f, &config, owner, trigger).await
}

/// The activity, if it is READY and this run holds its claim.
async fn load_held(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    id: ActivityId,
    owner: Uuid,
) -> Result<Option<ForSend>, sqlx::Error> {
    let f = store::load(ctx.pool, tenant, id).await?;
    Ok(f.filter(|f| f.activity.status == ActivityStatus::Ready && f.dispatch_lease_owner == Some(owner)))
}

/// Sends through the config's provider and records the attempt.
async fn send(
    ctx: &Ctx<'_>,
    tenant: TenantId,
    f: &ForSend,
    config: &ConfigRow,
    owner: Uuid,
    trigger: Trigger,
) -> Result<Outcome, sqlx::Error> {
    let body = serde_json::to_vec(&payload::build(tenant, f)).expect("a payload of strings and JSON values serialises");
    let started_at = Utc::now();
    let clock = Instant::now();
    let attempt_number = f.dispatch_attempts + 1;
    let sent = match config.provider() {
        Some(ProviderCode::Mock) => {
            Sent::Delivered { http_status: 200, provider_activity_id: Some(Uuid::new_v4().to_string()) }
        }
        Some(ProviderCode::Webhook) => webhook(ctx, tenant, f, config, attempt_number, &body).await,
        None => Sent::Failed(Failure::new("CONFIG_INVALID", format!("unknown provider {}", config.provider_code))),
    };
    let attempt = Attempt {
        tenant,
        activity: f.activity.id,
        owner,
        number: attempt_number,
        config_id: Some(config.id),
        provider: &config.provider_code,
        channel: f.activity.channel.as_str(),
        trigger,
        http_status: http_status(&sent),
        started_at,
        duration_ms: i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX),
    };
    record(ctx, f, &attempt, sent).await
}

fn http_status(sent: &Sent) -> Option<i32> {
    match sent {
        Sent::Delivered { http_status, .. } => Some(i32::from(*http_status)),
        Sent::Failed(failure) => failure.http_status.map(i32::from),
    }
}

/// Records the attempt and its transition, and counts it.
async fn record(ctx: &Ctx<'_>, f: &ForSend, attempt: &Attempt<'_>, sent: Sent) -> Result<Outcome, sqlx::Error> {
    let (tenant, attempt_number) = (attempt.tenant, attempt.number);
    let metrics = &ctx.dispatch.metrics;
    match sent {
        Sent::Delivered { provider_activity_id, .. } => {
            let applied = dispatch_outcomes::record_success(ctx.pool, attempt, provider_activity_id.as_deref()).await?;
            metrics.attempt(tenant, f.activity.channel.as_str(), "success");
            if !applied {
                return Ok(Outcome::Lost);
            }
            metrics.dispatched_after((Utc::now() - f.due_at).to_std().unwrap_or_default());
            tracing::debug!(tenant_id = %tenant, activity_id = %f.activity.id, attempt = attempt_number, "dispatched");
            Ok(Outcome::Dispatched { provider_activity_id })
        }
        Sent::Failed(failure) => {
            let settings = &ctx.dispatch.settings;
            let retry = RetryPolicy {
                max_attempts: i32::try_from(settings.max_attempts.max(1)).unwrap_or(i32::MAX),
                base_secs: settings.retry_base.as_secs_f64(),
            };
            let status =
                dispatch_outcomes::record_failure(ctx.pool, attempt, retry, &failure.code, &failure.message).await?;
            metrics.attempt(tenant, f.activity.channel.as_str(), failure.class());
            // The code only: a provider's answer is its own text.
            tracing::warn!(tenant_id = %tenant, activity_id = %f.activity.id, attempt = attempt_number,
                code = %failure.code, status = ?status, "dispatch attempt failed");
            Ok(Outcome::AttemptFailed { failure, status })
        }
    }
}

/// A WEBHOOK send: open the credentials, then post.
async fn webhook(ctx: &Ctx<'_>, tenant: TenantId, f: &ForSend, config: &ConfigRow, attempt: i32, body: &[u8]) -> Sent {
    let credentials = match (&config.credentials_sealed, &config.credentials_key_id) {
        (Some(blob), Some(key_id)) => match Credentials::open(&ctx.dispatch.secrets, tenant, config.id, key_id, blob) {
            Ok(c) => c,
            Err(e) => return Sent::Failed(Failure::new("CREDENTIALS_UNAVAILABLE", e.to_string())),
        },
        _ => Credentials::default(),
    };
    let Some(base_url) = config.base_url.as_deref() else {
        return Sent::Failed(Failure::new("CONFIG_INVALID", "the WEBHOOK config has no base_url"));
    };
    let delivery = Delivery {
        base_url,
        api_key: credentials.api_key.as_deref(),
        signing_secret: credentials.signing_secret.as_deref(),
        activity: f.activity.id,
        attempt,
        body,
    };
    ctx.dispatch.sender.send(&delivery).await
}
