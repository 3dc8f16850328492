//! The OpenAPI document at `GET /openapi.json`: served without credentials,
//! valid OpenAPI 3.1, listing exactly the routes the router serves, and
//! declaring every status, media type and body shape that real requests get.
//!
//! Bodies are checked against the document's schemas with a small JSON
//! Schema checker (below) that covers the keywords the document uses.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestApp, TestResponse, admin_token, seed_body, super_admin_token, token};

/// Every route the service serves, read from the resource modules' routers.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/activities"),
    ("GET", "/api/activities"),
    ("POST", "/api/activities/preview"),
    ("GET", "/api/activities/{id}"),
    ("GET", "/api/activities/{id}/target-users"),
    ("GET", "/api/activities/{id}/attributes"),
    ("GET", "/api/activities/{id}/status-events"),
    ("PATCH", "/api/activities/{id}/retry-resolution"),
    ("GET", "/api/activities/{id}/decision-input"),
    ("POST", "/api/policies/replays"),
    ("GET", "/api/policies/replays"),
    ("GET", "/api/policies/replays/{id}"),
    ("DELETE", "/api/policies/replays/{id}"),
    ("PUT", "/api/policies/shadow"),
    ("GET", "/api/policies/shadow"),
    ("DELETE", "/api/policies/shadow"),
    ("POST", "/api/policies/shadow/promote"),
    ("POST", "/api/policies/check"),
    ("POST", "/api/policies/tests"),
    ("POST", "/api/activities/{id}/preview"),
    ("PATCH", "/api/activities/{id}/target-users/{targetUserId}/resolve"),
    ("PATCH", "/api/activities/{id}/cancel"),
    ("GET", "/api/activity-config/target-resolution"),
    ("GET", "/api/activity-config/attribute-keys"),
    ("GET", "/api/activity-config/attribute-policies"),
    ("POST", "/api/api-keys"),
    ("GET", "/api/api-keys"),
    ("POST", "/api/api-keys/{id}/revoke"),
    ("GET", "/api/commerces"),
    ("POST", "/api/commerces/sync"),
    ("GET", "/api/commerces/{id}"),
    ("PATCH", "/api/commerces/{id}"),
    ("POST", "/api/tenant/setup"),
    ("GET", "/api/policies"),
    ("PUT", "/api/policies/{kind}/{file}"),
    ("DELETE", "/api/policies/{kind}/{file}"),
    ("GET", "/api/global-policies"),
    ("PUT", "/api/global-policies/{kind}/{file}"),
    ("DELETE", "/api/global-policies/{kind}/{file}"),
    ("POST", "/api/policies/changes"),
    ("POST", "/api/global-policies/changes"),
    ("GET", "/api/policies/revisions"),
    ("GET", "/api/policies/revisions/{n}"),
    ("POST", "/api/policies/revisions/{n}/restore"),
    ("GET", "/api/global-policies/revisions"),
    ("GET", "/api/global-policies/revisions/{n}"),
    ("POST", "/api/global-policies/revisions/{n}/restore"),
    ("GET", "/api/dispatch-providers"),
    ("GET", "/api/dispatch-providers/{id}/channel-definitions"),
    ("GET", "/api/dispatch-configs"),
    ("POST", "/api/dispatch-configs"),
    ("PATCH", "/api/dispatch-configs/{id}"),
    ("DELETE", "/api/dispatch-configs/{id}"),
    ("POST", "/api/activities/tasks/{id}/dispatch"),
    ("PATCH", "/api/activities/{id}/retry-dispatch"),
    ("POST", "/api/activity-results/tasks"),
    ("GET", "/api/activities/{id}/results"),
    ("GET", "/api/integration/activities/tasks"),
    ("GET", "/api/integration/task-result-type-configs"),
    ("POST", "/api/integration/activity-results/tasks"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The HTTP methods an OpenAPI path item can hold.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The served document, and checks of real answers against it.
pub struct Doc(Value);

impl Doc {
    /// Fetches `GET /openapi.json` without credentials.
    pub async fn fetch(app: &TestApp) -> Self {
        let res = app.call(Method::GET, "/openapi.json", None, None, None).await;
        res.assert_status(StatusCode::OK);
        assert_eq!(res.headers[header::CONTENT_TYPE], "application/json");
        Self(res.body)
    }

    /// Every `(METHOD, path)` operation of the document.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for method in METHODS {
                if item.get(*method).is_some() {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    /// The operation of a method and a path template.
    #[track_caller]
    fn operation(&self, method: &Method, template: &str) -> &Value {
        let op = &self.0["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        op
    }

    /// A `$ref` inside the document.
    fn resolve(&self, reference: &str) -> Result<&Value, String> {
        let pointer = reference.strip_prefix('#').ok_or_else(|| format!("{reference} is not a local $ref"))?;
        self.0.pointer(pointer).ok_or_else(|| format!("{reference} does not resolve"))
    }

    /// The declared response of an operation for a status, `$ref` resolved.
    pub fn response(&self, method: &Method, template: &str, status: StatusCode) -> Option<&Value> {
        let response = self.operation(method, template)["responses"].get(status.as_str())?;
        match response.get("$ref").and_then(Value::as_str) {
            Some(r) => self.resolve(r).ok(),
            None => Some(response),
        }
    }

    /// Asserts that the status is declared for the operation, with the
    /// response's media type, and that the body fits the declared schema.
    #[track_caller]
    pub fn check(&self, method: Method, template: &str, res: &TestResponse) {
        let what = format!("{method} {template} answered {}", res.status);
        let response = self
            .response(&method, template, res.status)
            .unwrap_or_else(|| panic!("{what}, which the document does not declare; body: {:#}", res.body));
        let content_type = res.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap()).unwrap_or("");
        let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let content = response["content"].as_object().expect("a response with content");
        let (_, media) = content
            .iter()
            .find(|(declared, _)| essence(declared) == essence(content_type))
            .unwrap_or_else(|| panic!("{what} as {content_type}, but declares {:?}", content.keys()));
        if let Err(e) = self.validate(&media["schema"], &res.body, "body") {
            panic!("{what} with a body that breaks its schema: {e}\nbody: {:#}", res.body);
        }
    }

    /// Checks `value` against `schema`: the JSON Schema keywords the
    /// document uses. Returns the first mismatch.
    fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let Some(schema) = schema.as_object() else { return Ok(()) };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            self.validate(self.resolve(reference)?, value, at)?;
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            if !types.iter().any(|t| is_type(value, t)) {
                return Err(format!("{at}: {value} is not of type {types:?}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        for s in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.validate(s, value, at)?;
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one.iter().filter(|s| self.validate(s, value, at).is_ok()).count();
            if matching != 1 {
                return Err(format!("{at}: {value} matches {matching} of the oneOf schemas, not 1"));
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|s| self.validate(s, value, at).is_ok())
        {
            return Err(format!("{at}: {value} matches none of the anyOf schemas"));
        }
        let number = |k: &str| schema.get(k).and_then(Value::as_f64);
        let count = |k: &str| schema.get(k).and_then(Value::as_u64).map(|n| n as usize);
        match value {
            Value::Object(map) => {
                for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                    let name = name.as_str().unwrap_or_default();
                    if !map.contains_key(name) {
                        return Err(format!("{at}: the required property {name} is missing"));
                    }
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                for (k, v) in map {
                    match (properties.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                        (Some(s), _) => self.validate(s, v, &format!("{at}.{k}"))?,
                        (None, Some(Value::Bool(false))) => return Err(format!("{at}: {k} is not a known property")),
                        (None, Some(extra @ Value::Object(_))) => self.validate(extra, v, &format!("{at}.{k}"))?,
                        (None, _) => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.validate(s, item, &format!("{at}[{i}]"))?;
                    }
                }
                if count("minItems").is_some_and(|n| items.len() < n)
                    || count("maxItems").is_some_and(|n| items.len() > n)
                {
                    return Err(format!("{at}: {} items is out of bounds", items.len()));
                }
            }
            Value::String(s) => {
                let chars = s.chars().count();
                if count("minLength").is_some_and(|n| chars < n) || count("maxLength").is_some_and(|n| chars > n) {
                    return Err(format!("{at}: {chars} characters is out of bounds"));
                }
                let valid = match schema.get("format").and_then(Value::as_str) {
                    Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                    Some("uuid") => Uuid::parse_str(s).is_ok(),
                    _ => true,
                };
                if !valid {
                    return Err(format!("{at}: {s:?} is not a {}", schema["format"]));
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or_default();
                if number("minimum").is_some_and(|m| n < m) || number("maximum").is_some_and(|m| n > m) {
                    return Err(format!("{at}: {n} is out of bounds"));
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
        Ok(())
    }
}

/// Whether a JSON value is of a JSON Schema type.
fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

/// A concrete URI for a path template: placeholder ids and a policy file
/// that does not exist.
fn concrete(template: &str) -> String {
    let id = "00000000-0000-4000-8000-000000000000";
    template
        .replace("{id}", id)
        .replace("{targetUserId}", id)
        .replace("{kind}", "criteria")
        .replace("{file}", "not_a_policy_here.rhai")
}

/// Every `$ref` string anywhere under `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_document_is_served_without_credentials_and_is_valid_openapi_3_1(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = Doc::fetch(&app).await;

    let spec = oas3::from_json(doc.0.to_string()).expect("the document parses as OpenAPI 3.1");
    let version = spec.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1), "openapi: {}", spec.openapi);
    assert!(spec.openapi.starts_with("3.1."));
    assert_eq!(spec.operations().count(), ROUTES.len());

    // Every reference resolves, and every operation id is unique.
    let mut all = Vec::new();
    refs(&doc.0, &mut all);
    assert!(all.len() > 100, "the document should reuse its components");
    for r in all {
        doc.resolve(r).unwrap();
    }
    let ids: Vec<&str> = spec.operations().filter_map(|(_, _, op)| op.operation_id.as_deref()).collect();
    assert_eq!(ids.len(), ROUTES.len(), "every operation has an id");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "operation ids are unique: {ids:?}");

    // Both ways to authenticate are declared; every /api operation requires
    // one, and every error it declares is problem+json (but the body
    // reader's plain-text 413 on uploads).
    let schemes = &doc.0["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["name"], "x-api-key");
    assert_eq!(schemes["apiKey"]["in"], "header");
    for (method, path) in doc.operations() {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let op = doc.operation(&method, &path);
        if !path.starts_with("/api/") && path != "/metrics" {
            assert!(op.get("security").is_none(), "{method} {path} needs no credentials");
            continue;
        }
        assert!(op["security"].as_array().is_some_and(|s| !s.is_empty()), "{method} {path} has no security");
        for (status, _) in op["responses"].as_object().unwrap() {
            let status = StatusCode::from_bytes(status.as_bytes()).unwrap();
            let response = doc.response(&method, &path, status).unwrap();
            if status.is_success() || (status == StatusCode::PAYLOAD_TOO_LARGE && method == Method::PUT) {
                continue;
            }
            let problem = &response["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{method} {path} {status}");
        }
        let tenant_route =
            path.starts_with("/api/") && !path.starts_with("/api/global-policies") && path != "/api/tenant/setup";
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has_header = params.iter().any(|p| p["name"] == "x-tenant-id" && p["in"] == "header");
        assert_eq!(has_header, tenant_route, "{method} {path}: x-tenant-id");
    }

    // The checker below catches what breaks a schema…
    let created = json!({"$ref": "#/components/schemas/CreatedActivity"});
    let example =
        &doc.operation(&Method::POST, "/api/activities")["responses"]["201"]["content"]["application/json"]["example"];
    doc.validate(&created, example, "201").unwrap();
    for (field, wrong) in [("status", json!("Ready")), ("scheduledAt", json!("tomorrow")), ("targetUsers", json!({}))] {
        let mut broken = example.clone();
        broken[field] = wrong;
        assert!(doc.validate(&created, &broken, "201").is_err(), "{field} should break the schema");
    }
    let mut missing = example.clone();
    missing.as_object_mut().unwrap().remove("idempotencyKey");
    assert!(doc.validate(&created, &missing, "201").is_err());

    // …and every example fits its schema: the schemas' own, and the bodies'
    // and responses'.
    for (name, schema) in doc.0["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            doc.validate(schema, example, name).unwrap();
        }
    }
    let mut media = Vec::new();
    for (_, response) in doc.0["components"]["responses"].as_object().unwrap() {
        media.extend(response["content"].as_object().unwrap().values());
    }
    for (_, item) in doc.0["paths"].as_object().unwrap() {
        for method in METHODS {
            let op = &item[*method];
            for content in [&op["requestBody"]["content"]]
                .into_iter()
                .chain(op["responses"].as_object().into_iter().flat_map(|r| r.values()).map(|r| &r["content"]))
            {
                media.extend(content.as_object().into_iter().flat_map(|c| c.values()));
            }
        }
    }
    let mut examples = 0;
    for m in media {
        let named = m["examples"].as_object().into_iter().flat_map(|e| e.values()).map(|e| &e["value"]);
        for example in m.get("example").into_iter().chain(named) {
            doc.validate(&m["schema"], example, "example").unwrap();
            examples += 1;
        }
    }
    assert!(examples >= 15, "only {examples} examples");

    // The create body is described as documented, with the seed's example.
    let create = doc.operation(&Method::POST, "/api/activities");
    let body = &create["requestBody"]["content"]["application/json"];
    assert_eq!(body["example"]["idempotency_key"], "msg-2025-01-15-001");
    let schema = doc.resolve(body["schema"]["$ref"].as_str().unwrap()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["required"],
        json!(["type", "channel", "reason", "commerce_id", "idempotency_key", "scheduled_at"])
    );
    let upload = doc.operation(&Method::PUT, "/api/policies/{kind}/{file}");
    assert!(upload["requestBody"]["content"]["application/octet-stream"].is_object());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_document_lists_every_route_the_router_serves_and_nothing_else(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let tenant = app.create_tenant("openapi-routes").await;
    let doc = Doc::fetch(&app).await;

    let expected: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let documented = doc.operations();
    assert_eq!(
        documented,
        expected,
        "documented but not listed: {:?}; listed but not documented: {:?}",
        documented.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&documented).collect::<Vec<_>>()
    );

    // Each documented operation reaches a handler: never the fallback's 404
    // nor a 405. Bodies are empty or `{}`, so nothing is created.
    let root = super_admin_token();
    for (method, template) in &documented {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri = concrete(template);
        let res = if method == Method::PUT {
            app.send_bytes(method.clone(), &uri, &root, Some(tenant), Vec::new()).await
        } else if method == Method::GET || method == Method::DELETE {
            app.call(method.clone(), &uri, Some(&root), Some(tenant), None).await
        } else {
            app.call(method.clone(), &uri, Some(&root), Some(tenant), Some(&json!({}))).await
        };
        assert_ne!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {:#}", res.body);
        assert!(
            !(res.status == StatusCode::NOT_FOUND && res.body["detail"] == "no route matches this path"),
            "{method} {uri} fell through to the router's fallback"
        );
        doc.check(method, template, &res);
    }

    // The fallbacks themselves are not operations.
    let res = app.call(Method::GET, "/api/nothing-here", Some(&root), Some(tenant), None).await;
    res.assert_status(StatusCode::NOT_FOUND);
    assert_eq!(res.body["detail"], "no route matches this path");
    let res = app.call(Method::DELETE, "/api/activities", Some(&root), Some(tenant), None).await;
    res.assert_status(StatusCode::METHOD_NOT_ALLOWED);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_status_and_body_real_requests_get_is_declared_for_their_operation(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let doc = Doc::fetch(&app).await;
    let (tenant, commerce) = app.seeded("openapi-statuses").await;
    let admin = admin_token(tenant);
    let root = super_admin_token();
    let app = &app;
    let call = |method: Method, uri: &str, tok: Option<&str>, body: Option<Value>| {
        let uri = uri.to_owned();
        let tok = tok.map(str::to_owned);
        async move { app.call(method, &uri, tok.as_deref(), Some(tenant), body.as_ref()).await }
    };

    // Creating: 201, then the same key 409, a bad body 400, an unknown
    // commerce 404, no token 401, a viewer 403, not JSON 415.
    let create = "/api/activities";
    let created = app.create_activity(tenant, &seed_body(commerce, "oa-1")).await;
    created.assert_status(StatusCode::CREATED);
    doc.check(Method::POST, create, &created);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let duplicate = app.create_activity(tenant, &seed_body(commerce, "oa-1")).await;
    duplicate.assert_status(StatusCode::CONFLICT);
    doc.check(Method::POST, create, &duplicate);
    let mut bad = seed_body(commerce, "oa-2");
    bad["type"] = json!("LETTER");
    bad["colour"] = json!("red");
    let invalid = app.create_activity(tenant, &bad).await;
    invalid.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::POST, create, &invalid);
    let unknown = app.create_activity(tenant, &seed_body(Uuid::new_v4(), "oa-3")).await;
    unknown.assert_status(StatusCode::NOT_FOUND);
    doc.check(Method::POST, create, &unknown);
    let anonymous = call(Method::POST, create, None, Some(seed_body(commerce, "oa-4"))).await;
    anonymous.assert_status(StatusCode::UNAUTHORIZED);
    doc.check(Method::POST, create, &anonymous);
    let viewer = token("viewer@test", &[tenant], &["VIEWER"], &[]);
    let forbidden = call(Method::POST, create, Some(&viewer), Some(seed_body(commerce, "oa-5"))).await;
    forbidden.assert_status(StatusCode::FORBIDDEN);
    doc.check(Method::POST, create, &forbidden);
    let req = Request::post(create)
        .header("authorization", format!("Bearer {admin}"))
        .header("x-tenant-id", tenant.to_string())
        .header("content-type", "text/plain")
        .body(Body::from(seed_body(commerce, "oa-6").to_string()))
        .unwrap();
    let not_json = app.send(req).await;
    not_json.assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    doc.check(Method::POST, create, &not_json);
    let no_tenant = app.call(Method::GET, create, Some(&admin), None, None).await;
    no_tenant.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::GET, create, &no_tenant);
    let other = app.call(Method::GET, create, Some(&root), Some(reten_host::domain::TenantId::new()), None).await;
    other.assert_status(StatusCode::NOT_FOUND);
    doc.check(Method::GET, create, &other);

    // Reading what was created, and the views.
    for (uri, template) in [
        (format!("{create}?status=READY&channel=WHATSAPP&per_page=10"), create.to_owned()),
        (format!("{create}/{id}"), "/api/activities/{id}".to_owned()),
        (format!("{create}/{id}/target-users"), "/api/activities/{id}/target-users".to_owned()),
        (format!("{create}/{id}/attributes"), "/api/activities/{id}/attributes".to_owned()),
        (format!("{create}/{id}/status-events"), "/api/activities/{id}/status-events".to_owned()),
        ("/api/activity-config/target-resolution".to_owned(), "/api/activity-config/target-resolution".to_owned()),
        ("/api/activity-config/attribute-keys".to_owned(), "/api/activity-config/attribute-keys".to_owned()),
        ("/api/activity-config/attribute-policies".to_owned(), "/api/activity-config/attribute-policies".to_owned()),
        ("/api/commerces?is_active=true".to_owned(), "/api/commerces".to_owned()),
        (format!("/api/commerces/{commerce}"), "/api/commerces/{id}".to_owned()),
        ("/api/policies".to_owned(), "/api/policies".to_owned()),
        ("/api/global-policies".to_owned(), "/api/global-policies".to_owned()),
        ("/healthz".to_owned(), "/healthz".to_owned()),
        ("/readyz".to_owned(), "/readyz".to_owned()),
    ] {
        let res = call(Method::GET, &uri, Some(&root), None).await;
        res.assert_status(StatusCode::OK);
        doc.check(Method::GET, &template, &res);
    }
    let bad_query = call(Method::GET, &format!("{create}?status=LOST&colour=red"), Some(&admin), None).await;
    bad_query.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::GET, create, &bad_query);
    let bad_id = call(Method::GET, &format!("{create}/not-a-uuid"), Some(&admin), None).await;
    bad_id.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::GET, "/api/activities/{id}", &bad_id);

    let preview =
        call(Method::POST, &format!("{create}/preview"), Some(&admin), Some(seed_body(commerce, "oa-7"))).await;
    preview.assert_status(StatusCode::OK);
    doc.check(Method::POST, "/api/activities/preview", &preview);

    // The lifecycle: a READY activity cannot be retried; it can be
    // canceled once.
    let retry = call(Method::PATCH, &format!("{create}/{id}/retry-resolution"), Some(&admin), None).await;
    retry.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::PATCH, "/api/activities/{id}/retry-resolution", &retry);
    let cancel = format!("{create}/{id}/cancel");
    let canceled = call(Method::PATCH, &cancel, Some(&admin), None).await;
    canceled.assert_status(StatusCode::OK);
    doc.check(Method::PATCH, "/api/activities/{id}/cancel", &canceled);
    let again = call(Method::PATCH, &cancel, Some(&admin), None).await;
    again.assert_status(StatusCode::BAD_REQUEST);
    doc.check(Method::PATCH, "/api/activities/{id}/cancel", &again);

    // Commerces.
    let synced = app.sync(tenant, json!([{"external_id": "c-2", "name": "Kiosco", "tax_id": "tax-c-2"}])).await;
    synced.assert_status(StatusCode::CREATED);
    doc.check(Method::POST, "/api/commerces/sync", &synced);
    let patch = format!("/api/commerces/{commerce}");
    let updated =
        call(Method::PATCH, &patch, Some(&admin), Some(json!({"global_external_id": null, "metadata": {"x": 1}})))
            .await;
    updated.assert_status(StatusCode::OK);
    doc.check(Method::PATCH, "/api/commerces/{id}", &updated);
    let taken = call(Method::PATCH, &patch, Some(&admin), Some(json!({"tax_id": "tax-c-2"}))).await;
    taken.assert_status(StatusCode::CONFLICT);
    doc.check(Method::PATCH, "/api/commerces/{id}", &taken);

    // API keys: create, list, revoke.
    let key = call(
        Method::POST,
        "/api/api-keys",
        Some(&admin),
        Some(json!({"name": "erp", "permissions": ["view_activities"]})),
    )
    .await;
    key.assert_status(StatusCode::CREATED);
    doc.check(Method::POST, "/api/api-keys", &key);
    let keys = call(Method::GET, "/api/api-keys", Some(&admin), None).await;
    keys.assert_status(StatusCode::OK);
    doc.check(Method::GET, "/api/api-keys", &keys);
    let revoke = format!("/api/api-keys/{}/revoke", key.body["id"].as_str().unwrap());
    let revoked = call(Method::POST, &revoke, Some(&admin), None).await;
    revoked.assert_status(StatusCode::OK);
    doc.check(Method::POST, "/api/api-keys/{id}/revoke", &revoked);

    // Tenants: a new slug 201, a taken one 409.
    let setup = |slug: &str| json!({"name": "Acme", "slug": slug});
    let tenant_created = call(Method::POST, "/api/tenant/setup", Some(&root), Some(setup("oa-acme"))).await;
    tenant_created.assert_status(StatusCode::CREATED);
    doc.check(Method::POST, "/api/tenant/setup", &tenant_created);
    let slug_taken = call(Method::POST, "/api/tenant/setup", Some(&root), Some(setup("oa-acme"))).await;
    slug_taken.assert_status(StatusCode::CONFLICT);
    doc.check(Method::POST, "/api/tenant/setup", &slug_taken);

    // Policies: created 201, replaced 200, refused 422, too large 413 (plain
    // text, from the body reader), deleted 200.
    let upload = "/api/policies/{kind}/{file}";
    let uri = "/api/policies/criteria/oa_pick.rhai";
    let good = b"fn resolve(input) { [] }".to_vec();
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let res = app.send_bytes(Method::PUT, uri, &admin, Some(tenant), good.clone()).await;
        res.assert_status(expected);
        doc.check(Method::PUT, upload, &res);
    }
    // Uploads take up to 8 MiB (their route's limit), not the 256 KiB of JSON bodies.
    let mut big = format!("// {}\n", "x".repeat(1 << 20)).into_bytes();
    big.extend_from_slice(&good);
    let replaced = app.send_bytes(Method::PUT, uri, &admin, Some(tenant), big).await;
    replaced.assert_status(StatusCode::OK);
    doc.check(Method::PUT, upload, &replaced);
    let refused = app.send_bytes(Method::PUT, uri, &admin, Some(tenant), b"fn resolve(input) { +++ }".to_vec()).await;
    refused.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    doc.check(Method::PUT, upload, &refused);
    let huge = vec![b' '; (8 << 20) + 1];
    let too_large = app.send_bytes(Method::PUT, uri, &admin, Some(tenant), huge).await;
    too_large.assert_status(StatusCode::PAYLOAD_TOO_LARGE);
    doc.check(Method::PUT, upload, &too_large);
    let deleted = call(Method::DELETE, uri, Some(&admin), None).await;
    deleted.assert_status(StatusCode::OK);
    doc.check(Method::DELETE, upload, &deleted);
    let gone = call(Method::DELETE, uri, Some(&admin), None).await;
    gone.assert_status(StatusCode::NOT_FOUND);
    doc.check(Method::DELETE, upload, &gone);
    let not_root = app.send_bytes(Method::PUT, "/api/global-policies/criteria/x.rhai", &admin, None, good).await;
    not_root.assert_status(StatusCode::FORBIDDEN);
    doc.check(Method::PUT, "/api/global-policies/{kind}/{file}", &not_root);

    // Changesets, revisions and restore: applied 200 (a component in
    // base64), a stale base 409, refused 422, a dry run, then the history.
    let changes = "/api/policies/changes";
    let wasm = base64::engine::general_purpose::STANDARD.encode(crate::support::plugin("test_pick_owner"));
    let body = json!({"files": [{"path": "criteria/oa_swap.wasm", "content_base64": wasm}], "message": "oa"});
    let applied = call(Method::POST, changes, Some(&admin), Some(body)).await;
    applied.assert_status(StatusCode::OK);
    doc.check(Method::POST, changes, &applied);
    let n = applied.body["revision"].as_i64().unwrap();
    let stale = call(
        Method::POST,
        changes,
        Some(&admin),
        Some(json!({"delete": ["criteria/oa_swap.wasm"], "base_revision": 1})),
    )
    .await;
    stale.assert_status(StatusCode::CONFLICT);
    doc.check(Method::POST, changes, &stale);
    let refused =
        call(Method::POST, changes, Some(&admin), Some(json!({"files": [{"path": "x/y", "content": ""}]}))).await;
    refused.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    doc.check(Method::POST, changes, &refused);
    let dry =
        call(Method::POST, changes, Some(&admin), Some(json!({"delete": ["criteria/oa_swap.wasm"], "dry_run": true})))
            .await;
    dry.assert_status(StatusCode::OK);
    doc.check(Method::POST, changes, &dry);
    let listed = call(Method::GET, "/api/policies/revisions", Some(&admin), None).await;
    listed.assert_status(StatusCode::OK);
    doc.check(Method::GET, "/api/policies/revisions", &listed);
    let one = call(Method::GET, &format!("/api/policies/revisions/{n}"), Some(&admin), None).await;
    one.assert_status(StatusCode::OK);
    doc.check(Method::GET, "/api/policies/revisions/{n}", &one);
    let missing = call(Method::GET, "/api/policies/revisions/999", Some(&admin), None).await;
    missing.assert_status(StatusCode::NOT_FOUND);
    doc.check(Method::GET, "/api/policies/revisions/{n}", &missing);
    let restored = call(Method::POST, "/api/policies/revisions/1/restore", Some(&admin), None).await;
    restored.assert_status(StatusCode::OK);
    doc.check(Method::POST, "/api/policies/revisions/{n}/restore", &restored);
    let global = app.call(Method::GET, "/api/global-policies/revisions", Some(&root), None, None).await;
    global.assert_status(StatusCode::OK);
    doc.check(Method::GET, "/api/global-policies/revisions", &global);
}
