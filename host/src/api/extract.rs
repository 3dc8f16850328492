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
        serde_json::from_slice(&bytes).map(JsonBody).map_err(malformed)
    }
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
        let per_page = self
            .parse("per_page", |s| parse_bounded(s, 1, 100))
            .or_else(|| self.parse("limit", |s| parse_bounded(s, 1, 100)))
            .unwrap_or(25);
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

/// Parses a path segment as an id; a malformed one is a 400 naming the
/// parameter.
pub fn path_id<T>(name: &str, raw: &str, parse: impl FnOnce(&str) -> Result<T, uuid::Error>) -> Result<T, ApiError> {
    parse(raw).map_err(|_| ApiError::field(name, "must be a UUID"))
}

/// The `{data, meta}` envelope of a list.
#[derive(Debug, serde::Serialize)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub meta: ListMeta,
}

/// Paging facts of a list.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    pub page: u32,
    pub limit: u32,
    pub total: i64,
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
