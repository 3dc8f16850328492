//! The test harness: the real router over a fresh database and a private
//! copy of the repository's policies directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use reten_host::api::auth::{self, Authenticator, Claims, JwtSettings};
use reten_host::api::{self, AppSettings, AppState};
use reten_host::domain::TenantId;
use reten_host::policy::Registry;
use reten_host::policy::registry::RegistryOptions;
use reten_host::rollout::RolloutSettings;
use serde_json::{Value, json};
use sqlx::PgPool;
use tempfile::TempDir;
use tower::ServiceExt;
use uuid::Uuid;

/// The HS256 secret every test token is signed with.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

/// One running app.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub pool: PgPool,
    /// The app's policies directory (a copy of the repository's).
    pub policies: TempDir,
    /// The dispatcher, when the app runs one ([`TestApp::dispatching`]).
    pub dispatcher: Option<reten_host::dispatch::worker::Dispatcher>,
}

/// A response, with its body parsed as JSON (or `Null` when empty).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// The fields named by a problem's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().map(|e| e["field"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }

    /// Asserts the status, printing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, expected: StatusCode) -> &Self {
        assert_eq!(self.status, expected, "unexpected status; body: {:#}", self.body);
        self
    }
}

/// The repository's `policies/` directory.
pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl TestApp {
    /// An app over `pool` with a copy of the repository's policies.
    pub async fn new(pool: PgPool) -> Self {
        let policies = tempfile::tempdir().unwrap();
        copy_dir(&repo_policies(), policies.path());
        Self::with_policies(pool, policies).await
    }

    /// An app over `pool` with a copy of the repository's policies and these
    /// request limits.
    pub async fn with_limits(pool: PgPool, limits: reten_host::api::limits::LimitSettings) -> Self {
        let mut app = Self::new(pool).await;
        app.state.limits = Arc::new(reten_host::api::limits::Limiter::new(limits));
        app.router = api::router(app.state.clone());
        app
    }

    /// An app over `pool` with a copy of the repository's policies whose
    /// policy calls go through gates and breakers with these settings.
    pub async fn with_gates(pool: PgPool, gates: reten_host::policy::gate::GateSettings) -> Self {
        let policies = tempfile::tempdir().unwrap();
        copy_dir(&repo_policies(), policies.path());
        let calls = reten_host::policy::CallContext {
            gates: reten_host::policy::gate::Gates::new(gates),
            metrics: Default::default(),
        };
        let options = RegistryOptions { calls: Arc::new(calls), ..Default::default() };
        Self::with_registry_options(pool, policies, options, RolloutSettings::default()).await
    }

    /// An app over `pool` with the given policies directory.
    pub async fn with_policies(pool: PgPool, policies: TempDir) -> Self {
        Self::with_registry_options(pool, policies, RegistryOptions::default(), RolloutSettings::default()).await
    }

    /// An app over `pool` with the given policies directory and policy
    /// change settings.
    pub async fn with_rollout(pool: PgPool, policies: TempDir, settings: RolloutSettings) -> Self {
        Self::with_registry_options(pool, policies, RegistryOptions::default(), settings).await
    }

    /// An app over `pool` with the given policies directory, registry
    /// options and policy change settings.
    pub async fn with_registry_options(
        pool: PgPool,
        policies: TempDir,
        options: RegistryOptions,
        rollout: RolloutSettings,
    ) -> Self {
        let registry = Registry::load(policies.path(), options).unwrap();
        let auth = Authenticator::new(&JwtSettings { secret: Some(SECRET.into()), ..Default::default() }).unwrap();
        let settings = AppSettings { rollout, dispatch: quiet_dispatch(), ..AppSettings::default() };
        let secrets = reten_host::dispatch::Secrets::from_base64(Some(SECRETS_KEY), None).unwrap();
        let state = AppState::new(pool.clone(), Arc::new(registry), auth, &settings, secrets).unwrap();
        Self { router: api::router(state.clone()), state, pool, policies, dispatcher: None }
    }

    /// Sends one request through the real router.
    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        TestResponse { status, headers, body }
    }

    /// Sends a JSON request with a token and a tenant header.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        tenant: Option<TenantId>,
        body: Option<&Value>,
    ) -> TestResponse {
        self.call_raw(method, uri, token, tenant, body.map(Value::to_string)).await
    }

    /// [`TestApp::call`] with the JSON body as text, for bodies a `Value`
    /// cannot hold (numbers out of range, duplicate keys).
    pub async fn call_raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        tenant: Option<TenantId>,
        body: Option<String>,
    ) -> TestResponse {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t.to_string());
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b)),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    /// `GET` as the tenant's admin.
    pub async fn get(&self, tenant: TenantId, uri: &str) -> TestResponse {
        self.call(Method::GET, uri, Some(&admin_token(tenant)), Some(tenant), None).await
    }

    /// `POST` as the tenant's admin.
    pub async fn post(&self, tenant: TenantId, uri: &str, body: &Value) -> TestResponse {
        self.call(Method::POST, uri, Some(&admin_token(tenant)), Some(tenant), Some(body)).await
    }

    /// Creates a tenant through the API and returns its id.
    pub async fn create_tenant(&self, slug: &str) -> TenantId {
        let res = self
            .call(
                Method::POST,
                "/api/tenant/setup",
                Some(&super_admin_token()),
                None,
                Some(&json!({"name": slug, "slug": slug})),
            )
            .await;
        res.assert_status(StatusCode::CREATED);
        TenantId::parse(res.body["id"].as_str().unwrap()).unwrap()
    }

    /// Syncs commerces for a tenant through the API.
    pub async fn sync(&self, tenant: TenantId, items: Value) -> TestResponse {
        self.post(tenant, "/api/commerces/sync", &json!({ "items": items })).await
    }

    /// A tenant with the standard commerce `c-1`; returns the tenant and the
    /// commerce's id.
    pub async fn seeded(&self, slug: &str) -> (TenantId, Uuid) {
        let tenant = self.create_tenant(slug).await;
        self.sync(tenant, json!([standard_commerce("c-1")])).await.assert_status(StatusCode::CREATED);
        let commerce = self.commerce_id(tenant, "c-1").await;
        (tenant, commerce)
    }

    /// The id of a commerce by external id.
    pub async fn commerce_id(&self, tenant: TenantId, external_id: &str) -> Uuid {
        let res = self.get(tenant, &format!("/api/commerces?external_id={external_id}")).await;
        res.assert_status(StatusCode::OK);
        Uuid::parse_str(res.body["data"][0]["id"].as_str().expect("commerce exists")).unwrap()
    }

    /// The id of a commerce user by external id.
    pub async fn user_id(&self, tenant: TenantId, commerce: Uuid, external_id: &str) -> String {
        let res = self.get(tenant, &format!("/api/commerces/{commerce}")).await;
        let users = res.body["users"].as_array().unwrap();
        users.iter().find(|u| u["externalId"] == external_id).expect("user exists")["id"].as_str().unwrap().to_owned()
    }

    /// Creates an activity as the tenant's admin.
    pub async fn create_activity(&self, tenant: TenantId, body: &Value) -> TestResponse {
        self.post(tenant, "/api/activities", body).await
    }

    /// Writes a file under the tenant's policy folder and reloads that tenant.
    pub fn write_tenant_file(&self, tenant: TenantId, rel: &str, contents: &str) {
        let path = self.policies.path().join("tenants").join(tenant.to_string()).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self.state.registry.reload_all();
    }

    /// The text of `GET /metrics`, read as a SUPER_ADMIN.
    pub async fn metrics(&self) -> String {
        let res = self.call(Method::GET, "/metrics", Some(&super_admin_token()), None, None).await;
        res.assert_status(StatusCode::OK);
        res.body.as_str().expect("the metrics are text").to_owned()
    }

    /// The number of rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.pool).await.unwrap()
    }
}

/// The commerce most tests use: Maria the owner (WhatsApp), Juan the
/// commerce rep (phone), Ana in orders (e-mail only), Pedro inactive rep.
pub fn standard_commerce(external_id: &str) -> Value {
    json!({
        "external_id": external_id,
        "name": "Almacén Don Pepe",
        "tax_id": format!("tax-{external_id}"),
        "metadata": {"segment": "gold", "promotions": [{"code": "2x1"}]},
        "addresses": [
            {"street": "Av. Siempre Viva", "street_number": "742", "city": "Santiago", "is_primary": true},
            {"street": "Calle Falsa", "street_number": "123", "city": "Santiago"}
        ],
        "users": [
            {"external_id": "u-maria", "name": "Maria Gonzalez", "roles": ["OWNER"],
             "contacts": [{"contact_type": "WHATSAPP", "value": "+56911111111", "is_primary": true}]},
            {"external_id": "u-juan", "name": "Juan Perez", "roles": ["COMMERCE_REP"],
             "contacts": [{"contact_type": "PHONE", "value": "+56922222222", "is_primary": true}]},
            {"external_id": "u-ana", "name": "Ana Diaz", "roles": ["ORDERS"],
             "contacts": [{"contact_type": "EMAIL", "value": "ana@example.com", "is_primary": true}]},
            {"external_id": "u-pedro", "name": "Pedro Inactivo", "roles": ["COMMERCE_REP"], "is_active": false,
             "contacts": [{"contact_type": "PHONE", "value": "+56933333333"}]}
        ]
    })
}

/// The seed's example body, for `commerce`.
pub fn seed_body(commerce: Uuid, key: &str) -> Value {
    json!({
        "type": "MESSAGE",
        "reason": "Monthly promotion",
        "channel": "WHATSAPP",
        "commerce_id": commerce,
        "idempotency_key": key,
        "scheduled_at": "2025-01-16T09:00:00.000Z",
        "attribute_keys": ["commerce_info"]
    })
}

/// A token with `claims` filled in around the given fields.
pub fn token(sub: &str, tenants: &[TenantId], roles: &[&str], permissions: &[&str]) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp: chrono::Utc::now().timestamp() + 3_600,
        nbf: None,
        iat: None,
        iss: None,
        aud: None,
        tenant_ids: tenants.iter().map(|t| t.0).collect(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    };
    auth::mint(SECRET, &claims).unwrap()
}

/// An ADMIN of one tenant.
pub fn admin_token(tenant: TenantId) -> String {
    token("admin@test", &[tenant], &["ADMIN"], &[])
}

/// A SUPER_ADMIN.
pub fn super_admin_token() -> String {
    token("root@test", &[], &["SUPER_ADMIN"], &[])
}

/// A built plugin from `plugins/dist/` (run `plugins/build.sh` first).
pub fn plugin(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{} is missing ({e}); build the plugins with plugins/build.sh (scripts/test does)", path.display())
    })
}

impl TestApp {
    /// Writes raw bytes under the tenant's policy folder and reloads.
    pub fn write_tenant_bytes(&self, tenant: TenantId, rel: &str, bytes: &[u8]) {
        let path = self.policies.path().join("tenants").join(tenant.to_string()).join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        self.state.registry.reload_all();
    }
}

impl TestApp {
    /// An app whose policies directory is watched, as in production (short
    /// debounce, no periodic rescan).
    pub async fn watching(pool: PgPool) -> (Self, reten_host::policy::watcher::Watcher) {
        let policies = tempfile::tempdir().unwrap();
        copy_dir(&repo_policies(), policies.path());
        Self::watching_dir(pool, policies).await
    }

    /// A watched app over the given policies directory.
    pub async fn watching_dir(pool: PgPool, policies: TempDir) -> (Self, reten_host::policy::watcher::Watcher) {
        Self::watching_with(pool, policies, std::time::Duration::from_millis(20)).await
    }

    /// A watched app whose watcher waits at most `debounce` for a file being
    /// written to be closed.
    pub async fn watching_with(
        pool: PgPool,
        policies: TempDir,
        debounce: std::time::Duration,
    ) -> (Self, reten_host::policy::watcher::Watcher) {
        let app = Self::with_policies(pool, policies).await;
        let options = reten_host::policy::watcher::WatchOptions {
            debounce,
            rescan_every: std::time::Duration::from_secs(3_600),
            events: true,
        };
        let watcher = reten_host::policy::watcher::spawn(app.state.registry.clone(), options).unwrap();
        (app, watcher)
    }

    /// The path of a file in a tenant's folder.
    pub fn tenant_path(&self, tenant: TenantId, rel: &str) -> PathBuf {
        self.policies.path().join("tenants").join(tenant.to_string()).join(rel)
    }

    /// Waits — on the registry's reloads, never on a timer — until the
    /// published state satisfies `cond`; fails after 20 s.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&reten_host::policy::registry::RegistryState) -> bool) {
        let mut rx = self.state.registry.subscribe_reloads();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if cond(&self.state.registry.state()) {
                return;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!(
                    "timed out waiting for {what}; errors: {:?}",
                    self.state.registry.state().errors().collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The version of the criterion serving `criterion_type` for a tenant.
    pub fn criterion_version(&self, tenant: TenantId, criterion_type: &str) -> Option<String> {
        self.state.registry.snapshot(tenant).criterion(criterion_type).map(|p| p.version.clone())
    }

    /// Sends raw bytes with a method, a token and an optional tenant.
    pub async fn send_bytes(
        &self,
        method: Method,
        uri: &str,
        token: &str,
        tenant: Option<TenantId>,
        bytes: Vec<u8>,
    ) -> TestResponse {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/octet-stream");
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t.to_string());
        }
        self.send(req.body(Body::from(bytes)).unwrap()).await
    }
}

/// Writes a file (creating its folder) without telling anyone.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The sha256 of some bytes, as policies are versioned.
pub fn sha(bytes: &[u8]) -> String {
    reten_host::policy::loader::sha256_hex(bytes)
}

/// The `RETEN_SECRETS_KEY` of test apps (base64 of 32 bytes).
pub const SECRETS_KEY: &str = "dGVzdC1zZWNyZXRzLWtleS0zMi1ieXRlcy1sb25nISE=";

/// Dispatch settings for tests: nothing outside the allow list (empty) is
/// ever resolved or reached.
pub fn quiet_dispatch() -> reten_host::dispatch::DispatchSettings {
    reten_host::dispatch::DispatchSettings { allow_public: false, ..Default::default() }
}

/// Dispatch state over its own metrics registry.
pub fn dispatch_state(
    settings: reten_host::dispatch::DispatchSettings,
    key: Option<&str>,
) -> Arc<reten_host::dispatch::Dispatch> {
    let secrets = reten_host::dispatch::Secrets::from_base64(key, None).unwrap();
    Arc::new(reten_host::dispatch::Dispatch::new(settings, secrets, &prometheus::Registry::new()).unwrap())
}

impl TestApp {
    /// Replaces the app's dispatch settings and keys (the router sees them).
    pub fn set_dispatch(&mut self, settings: reten_host::dispatch::DispatchSettings, key: Option<&str>) {
        self.state.dispatch = dispatch_state(settings, key);
        self.router = api::router(self.state.clone());
    }

    /// Replaces the app's dispatch settings and keys, given as `Secrets`.
    pub fn set_dispatch_secrets(
        &mut self,
        settings: reten_host::dispatch::DispatchSettings,
        secrets: reten_host::dispatch::Secrets,
    ) {
        let dispatch = reten_host::dispatch::Dispatch::new(settings, secrets, &prometheus::Registry::new()).unwrap();
        self.state.dispatch = Arc::new(dispatch);
        self.router = api::router(self.state.clone());
    }

    /// Starts the app's dispatcher, with its current settings.
    pub fn start_dispatcher(&mut self) {
        let parts = reten_host::dispatch::worker::Parts {
            pool: self.pool.clone(),
            fast: self.state.fast.clone(),
            registry: self.state.registry.clone(),
            dispatch: self.state.dispatch.clone(),
        };
        self.dispatcher = Some(reten_host::dispatch::worker::Dispatcher::spawn(parts));
    }
}

/// Polls `cond` every 10 ms until it holds; fails naming `what` after a
/// minute. Returns how long it took.
pub async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) -> std::time::Duration {
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            tick.tick().await;
            if cond().await {
                return;
            }
        }
    })
    .await;
    done.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    started.elapsed()
}
