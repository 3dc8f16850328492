//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]`
//! (its path, parameters, body and every status it can answer), and each
//! resource module registers its handlers with utoipa-axum's `routes!`, which
//! adds the route to the router and the operation to the document in one
//! step. A route cannot be served without being documented, nor documented
//! without being served.
//!
//! This module holds what the operations share: the document's header, the
//! security schemes, the `x-tenant-id` header, and the problem+json answers,
//! whose examples are rendered by [`ApiError`] itself.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, Response as ResponseDoc, ResponseBuilder, Schema,
};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{Problem, RETRY_AFTER_SECS};
use super::{ApiError, AppState};
use crate::domain::ActivityId;
use crate::domain::validation::FieldError;

/// The security scheme of a bearer JWT.
pub const BEARER: &str = "bearerAuth";
/// The security scheme of an `x-api-key` key.
pub const API_KEY: &str = "apiKey";
/// The media type of every error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The document's header and the components the operations share. The
/// operations themselves come from the resource modules' routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Reten API",
        description = "Creates activities (tasks and messages) for a tenant's commerces, with target users and \
                       attributes resolved by the tenant's policies (Rhai or WebAssembly).\n\n\
                       Requests are `snake_case`, responses `camelCase`, timestamps UTC with milliseconds. \
                       Every error is `application/problem+json`.\n\n\
                       Auth: `Authorization: Bearer <JWT>` (claims `sub`, `exp`, `tenant_ids`, `roles`, \
                       `permissions`) plus `x-tenant-id` on tenant routes, or an `x-api-key` bound to one tenant. \
                       The checks run in a fixed order: 401 no or bad credentials, 400 missing or malformed \
                       `x-tenant-id`, 403 not valid for the tenant or a missing permission, 404 unknown tenant."
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(Problem<'_>, FieldError),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            TooManyRequests,
            HeadersTooLarge,
            BadGateway,
            Unavailable
        )
    ),
    tags(
        (name = "activities", description = "Create, preview, list and read activities."),
        (name = "lifecycle", description = "Retry resolution, assign a target user by hand, cancel."),
        (name = "activity-config", description = "The effective configuration, computed from the policy files."),
        (name = "commerces", description = "Sync, list, read and update commerces."),
        (name = "tenants", description = "Provision tenants."),
        (name = "api-keys", description = "Tenant-bound keys for integrations, sent as `x-api-key`."),
        (name = "policies", description = "List, upload and delete policy files, the tenant's or the global ones."),
        (name = "dispatch", description = "Providers, each tenant's dispatch configs, manual dispatch and retry."),
        (name = "results", description = "Activity results, from the platform or an integration."),
        (name = "integration", description = "The Task Integration API: API keys only (`x-api-key`)."),
        (name = "health", description = "Liveness, readiness and this document.")
    )
)]
pub struct ApiDoc;

/// Adds the two ways to authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT (HS256, or RS256/ES256) with `sub`, `exp`, `tenant_ids`, `roles` (SUPER_ADMIN, \
                         ADMIN, FDE, VIEWER) and `permissions`. Tenant routes also need `x-tenant-id`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                super::auth::API_KEY_HEADER,
                "A key from `POST /api/api-keys` (`rtn_sk_…`): acts for its tenant with its permissions; \
                 `x-tenant-id` is then optional.",
            ))),
        );
    }
}

/// The `x-tenant-id` header of the tenant routes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TenantHeader {
    /// The tenant to act for. Required with a bearer token; with an API key
    /// it defaults to the key's tenant.
    #[param(rename = "x-tenant-id", required = false)]
    pub x_tenant_id: Uuid,
}

/// The body of a policy upload: the file's bytes (Rhai source, a Wasm
/// component, or TOML), at most 8 MiB.
#[derive(Debug)]
pub struct PolicyBytes;

impl PartialSchema for PolicyBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("application/octet-stream")
            .min_length(Some(1))
            .description(Some("The file's bytes: Rhai source, a Wasm component, or TOML; at most 8 MiB."))
            .into()
    }
}

impl ToSchema for PolicyBytes {}

/// A problem+json response with named examples rendered by [`ApiError`].
fn problem(description: &str, examples: Vec<(&str, ApiError)>) -> ResponseBuilder {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(Problem::<'_>::name())))
        .examples_from_iter(
            examples.into_iter().map(|(name, error)| (name, ExampleBuilder::new().value(Some(error.example())))),
        )
        .build();
    ResponseBuilder::new().description(description).content(PROBLEM_JSON, content)
}

/// The activity id the examples use.
fn example_activity() -> ActivityId {
    ActivityId(Uuid::from_u128(0xee0e8400_e29b_41d4_a716_446655440000))
}

/// Declares a reusable problem response: a unit type whose [`ToResponse`]
/// builds it.
macro_rules! problem_response {
    ($(#[$doc:meta])* $name:ident => $build:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl<'s> ToResponse<'s> for $name {
            fn response() -> (&'s str, RefOr<ResponseDoc>) {
                (stringify!($name), $build.build().into())
            }
        }
    };
}

problem_response!(
    /// 400: every bad field, or a request wrong as a whole.
    BadRequest => problem(
        "The request is invalid: `errors` lists every bad field (body, query parameter or path id), or \
         `detail` says what is wrong (malformed JSON, a missing or malformed `x-tenant-id`, a state that \
         does not allow the change).",
        vec![
            ("validation-error", ApiError::Validation(vec![
                FieldError::new("type", "must be one of TASK or MESSAGE"),
                FieldError::new("scheduled_at", "is required"),
            ])),
            ("missing-tenant", ApiError::BadRequest("the x-tenant-id header is required".into())),
        ],
    )
);

problem_response!(
    /// 401: no credentials, or bad ones.
    Unauthorized => problem(
        "No bearer token or API key, or one that is malformed, expired, revoked or badly signed.",
        vec![(
            "no-token",
            ApiError::Unauthorized("a bearer token is required (Authorization: Bearer <token>)".into()),
        )],
    )
    .header("WWW-Authenticate", HeaderBuilder::new().schema(String::schema()).description(Some("`Bearer`")).build())
);

problem_response!(
    /// 403: not for this tenant, or a permission is missing.
    Forbidden => problem(
        "The credentials are not valid for the tenant, or lack the permission the operation requires.",
        vec![(
            "missing-permission",
            ApiError::Forbidden("this operation requires the CREATE_ACTIVITY permission".into()),
        )],
    )
);

problem_response!(
    /// 404: the tenant or the resource does not exist (another tenant's is
    /// the same as a missing one).
    NotFound => problem(
        "The tenant, or the resource named by the path or the body, does not exist for this tenant.",
        vec![("not-found", ApiError::not_found("activity", example_activity()))],
    )
);

problem_response!(
    /// 409: a conflict with the stored state.
    Conflict => problem(
        "A conflict with what is stored: a used idempotency key (with `activityId`), a taken slug or tax id, \
         or a concurrent change.",
        vec![
            ("duplicate-idempotency-key", ApiError::duplicate_key("msg-2025-01-15-001", example_activity())),
            ("conflict", ApiError::Conflict {
                detail: "the slug 'acme-foods' is already taken".into(),
                activity_id: None,
            }),
        ],
    )
);

problem_response!(
    /// 413: the body is larger than the route's limit.
    PayloadTooLarge => problem(
        "The body is larger than the route's limit: 256 KiB for JSON bodies, 8 MiB for policy files.",
        vec![(
            "too-large",
            ApiError::PayloadTooLarge(format!(
                "the body exceeds the limit of {} KiB",
                super::extract::MAX_BODY_BYTES >> 10
            )),
        )],
    )
);

problem_response!(
    /// 415: the body is not JSON.
    UnsupportedMediaType => problem(
        "The body must be JSON (`Content-Type: application/json` or `application/*+json`).",
        vec![(
            "not-json",
            ApiError::UnsupportedMediaType(
                "the body must be JSON with Content-Type: application/json (got 'text/plain')".into(),
            ),
        )],
    )
);

problem_response!(
    /// 422: an uploaded policy file does not compile or validate.
    Unprocessable => problem(
        "The file does not compile or validate; nothing was written. `errors` names the file, with the line \
         and column when known.",
        vec![(
            "does-not-compile",
            ApiError::Unprocessable {
                detail: "criteria/pick.rhai was not written: Unknown operator: '+++'".into(),
                errors: vec![FieldError {
                    field: "tenants/3fa85f64-5717-4562-b3fc-2c963f66afa6/criteria/pick.rhai".into(),
                    message: "Unknown operator: '+++'".into(),
                    line: Some(3),
                    column: Some(7),
                }],
            },
        )],
    )
);

problem_response!(
    /// 502: the provider did not answer 2xx.
    BadGateway => problem(
        "The provider did not accept the activity (it answered non-2xx, or not at all); the attempt counts. \
         `detail` carries the provider's error.",
        vec![(
            "provider-error",
            ApiError::BadGateway("the provider answered 503 Service Unavailable: try later (attempt 1 of 3)".into()),
        )],
    )
);

problem_response!(
    /// 503: the database is down or saturated.
    Unavailable => problem(
        "The database is unavailable or saturated; retry after `Retry-After` seconds.",
        vec![("unavailable", ApiError::Unavailable("the database is unavailable; retry shortly".into()))],
    )
    .header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(u32::schema())
            .description(Some(format!("Seconds to wait: {RETRY_AFTER_SECS}.")))
            .build(),
    )
);

/// The document, serialised once, as the router serves it.
#[derive(Clone, Debug)]
pub struct Served(Arc<Bytes>);

impl Served {
    /// Serialises the document.
    pub fn new(document: &Document) -> Self {
        let json = serde_json::to_vec(document).unwrap_or_default();
        Self(Arc::new(Bytes::from(json)))
    }
}

/// The route of this document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(openapi_json))
}

problem_response!(
    /// 429: the tenant exceeds its request rate.
    TooManyRequests => problem(
        "The tenant exceeds its request rate; retry after `Retry-After` seconds.",
        vec![(
            "rate-limited",
            ApiError::TooManyRequests {
                detail: "tenant 3fa85f64-5717-4562-b3fc-2c963f66afa6 exceeds its 1000 requests per second".into(),
                retry_after_secs: 1,
            },
        )],
    )
    .header(
        "Retry-After",
        HeaderBuilder::new().schema(u32::schema()).description(Some("Seconds to wait.")).build(),
    )
);

problem_response!(
    /// 431: the request headers are too large.
    HeadersTooLarge => problem(
        "The request headers together exceed the limit (16 KiB by default).",
        vec![(
            "headers-too-large",
            ApiError::HeadersTooLarge("the request headers take 20480 bytes; at most 16384 are allowed".into()),
        )],
    )
);

/// Declares, once for every operation, the answers the guards give before
/// any handler runs, so each operation lists every status it can return
/// without repeating them: 431 everywhere; 401 and 403 on every operation
/// that takes credentials; 404 (unknown tenant) and 429 on every tenant
/// route; 503 (at capacity, or past the request deadline) everywhere but
/// health, readiness and metrics. An operation's own answer for a status
/// (a 404 naming what was not found) is kept.
pub fn add_guard_responses(doc: &mut Document) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let exempt = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let tenant_route = op.parameters.iter().flatten().any(|p| p.name == super::auth::TENANT_HEADER);
            let responses = &mut op.responses.responses;
            let mut add = |status: &str, name: &str| {
                responses.entry(status.into()).or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            };
            add("431", "HeadersTooLarge");
            if secured {
                add("401", "Unauthorized");
                add("403", "Forbidden");
            }
            if tenant_route {
                add("404", "NotFound");
                add("429", "TooManyRequests");
            }
            if !exempt {
                add("503", "Unavailable");
            }
        }
    }
}

/// The OpenAPI 3.1 document of this API.
///
/// Generated from the handlers; needs no credentials.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    tag = "health",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object, content_type = "application/json")
    )
)]
async fn openapi_json(Extension(served): Extension<Served>) -> Response {
    let mut response = served.0.as_ref().clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
