//! The HTTP boundary: one module per resource, each exposing a `router()`
//! over the shared [`AppState`] that registers its handlers together with
//! their OpenAPI operations ([`openapi`]).

pub mod activities;
pub mod api_keys;
pub mod auth;
pub mod commerces;
pub mod config_views;
pub mod decisions;
pub mod dispatch;
pub mod dispatch_configs;
pub mod dispatch_providers;
pub mod error;
pub mod extract;
pub mod health;
pub mod integration;
pub mod lifecycle;
pub mod limits;
pub mod openapi;
pub mod policies;
pub mod policy_changes;
pub mod policy_replays;
pub mod policy_revisions;
pub mod policy_shadow;
pub mod policy_tools;
pub mod results;
pub mod tenants;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::response::Response;
use axum::{Extension, Router};
use sqlx::PgPool;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::policy::Registry;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pool: PgPool,
    /// The create path's connections (no ping per checkout and return).
    pub fast: Arc<crate::store::fast_pool::FastPool>,
    pub registry: Arc<Registry>,
    pub auth: Arc<auth::Authenticator>,
    pub tenants: Arc<auth::TenantCache>,
    pub api_keys: Arc<auth::ApiKeys>,
    pub limits: Arc<limits::Limiter>,
    /// The app's metrics (the policy registry records into the same).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Policy changes: changesets, revisions, restore.
    pub rollout: Arc<crate::rollout::Rollout>,
    /// Dispatch settings, keys, client and metrics, shared with the dispatcher.
    pub dispatch: Arc<crate::dispatch::Dispatch>,
}

/// The settings an app's state is built from (each has its own default).
#[derive(Clone, Debug, Default)]
pub struct AppSettings {
    pub pool: crate::store::PoolSettings,
    pub limits: limits::LimitSettings,
    pub rollout: crate::rollout::RolloutSettings,
    pub dispatch: crate::dispatch::DispatchSettings,
}

impl AppState {
    /// The state of an app over `pool`, with the create path's own pool of
    /// the same size, and the metrics the policy registry records into
    /// (the dispatcher's too). Fails only if the dispatch client cannot be
    /// built.
    pub fn new(
        pool: PgPool,
        registry: Arc<Registry>,
        auth: auth::Authenticator,
        settings: &AppSettings,
        secrets: crate::dispatch::Secrets,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::clone(&registry.calls().metrics);
        let fast = crate::store::fast_pool(&pool, &settings.pool).with_acquire_histogram(metrics.db_acquire.clone());
        let rollout = Arc::new(crate::rollout::Rollout::new(pool.clone(), Arc::clone(&registry), settings.rollout));
        let dispatch = crate::dispatch::Dispatch::new(settings.dispatch.clone(), secrets, metrics.registry())?;
        Ok(Self {
            pool,
            fast: Arc::new(fast),
            registry,
            auth: Arc::new(auth),
            tenants: Default::default(),
            api_keys: Default::default(),
            limits: Arc::new(limits::Limiter::new(settings.limits)),
            metrics,
            rollout,
            dispatch: Arc::new(dispatch),
        })
    }
}

/// Every route but health, readiness and metrics, each with its OpenAPI
/// operation: the routes behind the in-flight bound and the deadline.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(activities::router())
        .merge(lifecycle::router())
        .merge(config_views::router())
        .merge(api_keys::router())
        .merge(commerces::router())
        .merge(tenants::router())
        .merge(policies::router())
        .merge(policy_changes::router())
        .merge(policy_revisions::router())
        .merge(policy_replays::router())
        .merge(policy_shadow::router())
        .merge(policy_tools::router())
        .merge(decisions::router())
        .merge(dispatch_providers::router())
        .merge(dispatch_configs::router())
        .merge(dispatch::router())
        .merge(results::router())
        .merge(integration::router())
        .merge(openapi::router())
}

/// The OpenAPI document of the whole API, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = routes().merge(health::router()).into_openapi();
    openapi::add_guard_responses(&mut document);
    document
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (limited, mut document) = routes().split_for_parts();
    let (exempt, health_document) = health::router().split_for_parts();
    document.merge(health_document);
    openapi::add_guard_responses(&mut document);
    let guard = axum::middleware::from_fn_with_state(state.clone(), limits::guard);
    limits::with_overload_limits(limited, &state.limits)
        .merge(exempt)
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::Served::new(&document)))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(guard)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // Only the method and the route template: never headers,
                    // which carry tokens.
                    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str());
                    tracing::info_span!("http", method = %req.method(), route)
                })
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(
                        status = res.status().as_u16(),
                        latency_us = latency.as_micros() as u64,
                        "response"
                    );
                }),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no route matches this path".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this method is not allowed on this path".into())
}
