//! `reten serve --demo`: a demo tenant with a few commerces, and a token and
//! a curl line that work as printed.
//!
//! The demo tenant's policies are `policies/tenants/<DEMO_TENANT>/`; its
//! commerces are `examples/demo/commerces.json`. Provisioning is idempotent:
//! a second start finds the tenant and only prints a fresh token.

use std::net::SocketAddr;

use anyhow::Context as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::auth::{self, Claims};
use crate::domain::commerce::SyncRequest;
use crate::domain::{CommerceId, TenantId};
use crate::store;

/// The demo tenant's id: its policy folder is named after it.
pub const DEMO_TENANT: TenantId = TenantId(Uuid::from_u128(0xde00_0000_0000_4000_8000_0000_0000_de40));
/// The demo commerce the printed curl line targets.
pub const DEMO_COMMERCE: &str = "demo-c-1";
const COMMERCES: &str = include_str!("../../examples/demo/commerces.json");

/// What a demo start prints.
#[derive(Debug)]
pub struct Demo {
    pub tenant: TenantId,
    pub commerce: CommerceId,
    /// Whether this start created the tenant (false: it existed).
    pub created: bool,
}

/// Creates the demo tenant and its commerces unless they exist.
pub async fn provision(pool: &PgPool) -> anyhow::Result<Demo> {
    let created = !store::tenants::exists(pool, DEMO_TENANT).await?;
    if created {
        store::tenants::create(pool, DEMO_TENANT, "Reten Demo", "reten-demo")
            .await
            .context("failed to create the demo tenant (is the slug reten-demo taken?)")?;
        let request: SyncRequest = serde_json::from_str(COMMERCES).context("examples/demo/commerces.json")?;
        store::commerce_sync::sync(pool, DEMO_TENANT, &request).await.context("failed to create the demo commerces")?;
    }
    let filter = store::commerces::CommerceFilter { external_id: Some(DEMO_COMMERCE.into()), ..Default::default() };
    let (rows, _) = store::commerces::list(pool, DEMO_TENANT, &filter, store::Page { page: 1, per_page: 1 }).await?;
    let commerce = rows.first().map(|c| c.id).context("the demo commerce is missing")?;
    Ok(Demo { tenant: DEMO_TENANT, commerce, created })
}

/// The banner: a token for the demo tenant's ADMIN and a curl line that
/// creates an activity (with a fresh idempotency key, so it answers 201).
pub fn banner(demo: &Demo, addr: SocketAddr, secret: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "demo-admin".into(),
        exp: now + 24 * 3_600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
        tenant_ids: vec![demo.tenant.0],
        roles: vec!["ADMIN".into()],
        permissions: Vec::new(),
    };
    let token = auth::mint(secret, &claims)?;
    let host = if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
    let body = serde_json::json!({
        "type": "MESSAGE",
        "reason": "Monthly promotion",
        "channel": "WHATSAPP",
        "commerce_id": demo.commerce,
        "idempotency_key": format!("demo-{}", Uuid::new_v4()),
        "scheduled_at": "2025-01-16T09:00:00.000Z",
        "attribute_keys": ["commerce_info", "loyalty_tier"]
    });
    let state = if demo.created { "created" } else { "already there" };
    Ok(format!(
        "\nDemo tenant \"Reten Demo\" ({state}): {tenant}\n\
         Token (ADMIN of the demo tenant, valid 24 h):\n{token}\n\n\
         Create an activity:\n\
         curl -sS -X POST http://{host}/api/activities -H 'Authorization: Bearer {token}' \
         -H 'x-tenant-id: {tenant}' -H 'Content-Type: application/json' -d '{body}'\n",
        tenant = demo.tenant,
    ))
}
