//! Request extractors whose rejections are [`ApiError`]s, so a malformed body,
//! query or path gets the same problem+json as every other error.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::domain::validation::FieldError;
use crate::store::Page;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 256 << 10;

/// A JSON body, parsed but not interpreted.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        let value = serde_json::from_slice(&bytes).map_err(malformed)?;
        check_shape(&value)?;
        Ok(JsonBody(value))
    }
}

/// How deep a request's JSON may nest (objects and arrays).
pub const MAX_JSON_DEPTH: usize = 32;
/// How many values (of any kind, nested included) a request's JSON may hold.
pub const MAX_JSON_VALUES: usize = 20_000;

/// Refuses, before anything reads the body, what no field may hold: JSON
/// nested deeper than [`MAX_JSON_DEPTH`], more than [`MAX_JSON_VALUES`]
/// values, and NUL characters (Postgres cannot store them), naming each
/// string that holds one.
pub fn check_shape(value: &Value) -> Result<(), ApiError> {
    fn walk(v: &Value, path: &mut String, depth: usize, count: &mut usize, errors: &mut Vec<FieldError>) -> bool {
        *count += 1;
        if depth > MAX_JSON_DEPTH || *count > MAX_JSON_VALUES {
            return false;
        }
        let len = path.len();
        match v {
            Value::String(s) if s.contains('\0') => {
                errors.push(FieldError::new(field_of(path), "must not contain a NUL character (\\u0000)"))
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    let ok = walk(item, path, depth + 1, count, errors);
                    path.truncate(len);
                    if !ok {
                        return false;
                    }
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    if k.contains('\0') {
                        errors.push(FieldError::new(field_of(path), "has a key with a NUL character (\\u0000)"));
                    }
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    let ok = walk(item, path, depth + 1, count, errors);
                    path.truncate(len);
                    if !ok {
                        return false;
                    }
                }
            }
            _ => {}
        }
        true
    }
    fn field_of(path: &str) -> String {
        if path.is_empty() { "body".into() } else { path.to_owned() }
    }
    let mut errors = Vec::new();
    let mut count = 0;
    if !walk(value, &mut String::new(), 0, &mut count, &mut errors) {
        return Err(ApiError::BadRequest(format!(
            "the body is nested deeper than {MAX_JSON_DEPTH} levels or holds more than {MAX_JSON_VALUES} values"
        )));
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

/// A JSON body deserialised into `T`; a type error names the field's path.
#[derive(Debug)]
pub struct TypedBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for TypedBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        // Malformed JSON first, so it is told apart from a wrong shape.
        let value: Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        check_shape(&value)?;
        serde_path_to_error::deserialize(value).map(TypedBody).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::Validation(vec![FieldError::new(field, e.into_inner().to_string())])
        })
    }
}

async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json")) {
        let got = if content_type.is_empty() { "none".to_owned() } else { format!("'{content_type}'") };
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON with Content-Type: application/json (got {got})"
        )));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("the body exceeds the limit of {} KiB", MAX_BODY_BYTES >> 10))
        } else {
            ApiError::BadRequest(format!("the body could not be read: {}", rejection.body_text()))
        }
    })
}

fn malformed(e: serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!("the body is not valid JSON: {e}"))
}

/// The query string as name/value pairs, read field by field.
#[derive(Debug)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    seen: BTreeSet<String>,
    errors: Vec<FieldError>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?;
        let nul: Vec<FieldError> = pairs
            .iter()
            .filter(|(k, v)| k.contains('\0') || v.contains('\0'))
            .map(|(k, _)| FieldError::new(k.clone(), "must not contain a NUL character (%00)"))
            .collect();
        if !nul.is_empty() {
            return Err(ApiError::Validation(nul));
        }
        Ok(Self { pairs, seen: BTreeSet::new(), errors: Vec::new() })
    }
}

impl QueryParams {
    /// The raw value of a parameter (the last one if repeated).
    pub fn get(&mut self, name: &str) -> Option<String> {
        self.seen.insert(name.to_owned());
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// A parameter parsed with `parse`; records an error when it fails.
    pub fn parse<T>(&mut self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let raw = self.get(name)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(message) => {
                self.errors.push(FieldError::new(name, message));
                None
            }
        }
    }

    /// `page`, and `per_page` (alias `limit`): 1-based, default 25, max 100.
    pub fn page(&mut self) -> Page {
        let page = self.parse("page", |s| parse_bounded(s, 1, u32::MAX)).unwrap_or(1);
        // Both are read, so sending both is not "an unknown parameter";
        // `per_page` wins.
        let per_page = self.parse("per_page", |s| parse_bounded(s, 1, 100));
        let limit = self.parse("limit", |s| parse_bounded(s, 1, 100));
        let per_page = per_page.or(limit).unwrap_or(25);
        Page { page, per_page }
    }

    /// Every parameter that was malformed or unknown, as one 400.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut errors = self.errors;
        for (k, _) in &self.pairs {
            if !self.seen.contains(k) && !errors.iter().any(|e| &e.field == k) {
                errors.push(FieldError::new(k.clone(), "is not a known query parameter"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
    }
}

/// The paging parameters of the lists, for the OpenAPI document ([`QueryParams::page`] reads them).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The page, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
    /// The same as `per_page`, under another name. Send one of the two:
    /// when `per_page` is sent, `limit` is refused as unknown (400).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn parse_bounded(s: &str, min: u32, max: u32) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer from {min} to {max}")),
    }
}

/// Parses a boolean query value.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// Path parameters; a malformed path (say, invalid UTF-8) is a problem+json
/// 400 like every other error.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::BadRequest(format!("the path is malformed: {}", e.body_text())))
    }
}

/// A raw body of any content type, within the route's body limit.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the body exceeds this route's size limit".into())
            } else {
                ApiError::BadRequest(format!("the body could not be read: {}", rejection.body_text()))
            }
        })
    }
}

/// Parses a path segment as an id; a malformed one is a 400 naming the
/// parameter.
pub fn path_id<T>(name: &str, raw: &str, parse: impl FnOnce(&str) -> Result<T, uuid::Error>) -> Result<T, ApiError> {
    parse(raw).map_err(|_| ApiError::field(name, "must be a UUID"))
}

/// The `{data, meta}` envelope of a list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub meta: ListMeta,
}

/// Paging facts of a list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"page": 1, "limit": 25, "total": 1, "totalPages": 1}))]
pub struct ListMeta {
    /// The page returned, from 1.
    #[schema(minimum = 1)]
    pub page: u32,
    /// Items per page (`per_page`, or its alias `limit`).
    #[schema(minimum = 1, maximum = 100)]
    pub limit: u32,
    /// Items matching the filters, on all pages.
    #[schema(minimum = 0)]
    pub total: i64,
    #[schema(minimum = 0)]
    pub total_pages: i64,
}

impl<T> ListResponse<T> {
    /// Wraps one page of `total` items.
    pub fn new(data: Vec<T>, page: Page, total: i64) -> Self {
        let per = i64::from(page.per_page);
        Self {
            data,
            meta: ListMeta { page: page.page, limit: page.per_page, total, total_pages: (total + per - 1) / per },
        }
    }
}
