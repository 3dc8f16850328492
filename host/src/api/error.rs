//! The one error type of the HTTP API, answered as `application/problem+json`
//! (RFC 9457).
//!
//! Invariant: a 5xx never carries internal detail. The cause is logged; the
//! client gets a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::ActivityId;
use crate::domain::validation::FieldError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with every bad field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 400 for a request that is wrong as a whole.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409, naming the activity that holds the idempotency key when that is
    /// the conflict.
    #[error("{detail}")]
    Conflict { detail: String, activity_id: Option<ActivityId> },
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the request is well-formed but its content cannot be used (a
    /// policy that does not compile).
    #[error("{detail}")]
    Unprocessable { detail: String, errors: Vec<FieldError> },
    /// 429 with `Retry-After`: the tenant exceeds its request rate.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_secs: u32 },
    /// 431: the request headers are too large.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 502: a provider did not accept what was sent to it (its error is the
    /// detail).
    #[error("{0}")]
    BadGateway(String),
    /// 503 with `Retry-After`: a dependency (Postgres) is down or saturated.
    #[error("{0}")]
    Unavailable(String),
    /// 500. The cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 404 for a resource the tenant does not have. Another tenant's is the
    /// same as a missing one.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("{what} {id} was not found"))
    }

    /// 409 for an idempotency key that is already taken.
    pub fn duplicate_key(key: &str, holder: ActivityId) -> Self {
        ApiError::Conflict {
            detail: format!("idempotency_key '{key}' was already used by activity {holder}"),
            activity_id: Some(holder),
        }
    }

    /// 400 naming one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation-error",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict { activity_id: Some(_), .. } => "duplicate-idempotency-key",
            ApiError::Conflict { .. } => "conflict",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::TooManyRequests { .. } => "too-many-requests",
            ApiError::HeadersTooLarge(_) => "headers-too-large",
            ApiError::BadGateway(_) => "bad-gateway",
            ApiError::Unavailable(_) => "service-unavailable",
            ApiError::Internal(_) => "internal-error",
        }
    }
}

/// The problem document (RFC 9457), served as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "type": "https://reten.dev/problems/validation-error",
    "title": "Bad Request",
    "status": 400,
    "detail": "the request has 1 invalid field(s): scheduled_at",
    "errors": [{"field": "scheduled_at", "message": "is required"}]
}))]
pub struct Problem<'a> {
    /// What kind of problem: `https://reten.dev/problems/<slug>`.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub problem_type: String,
    /// The status's reason phrase.
    pub title: &'a str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for a person. A 5xx never carries internal detail.
    pub detail: String,
    /// Every bad field (400) or the file that failed to compile (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<FieldError>)]
    pub errors: Option<&'a [FieldError]>,
    /// On a duplicate idempotency key (409): the activity that holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ActivityId)]
    pub activity_id: Option<ActivityId>,
}

/// How long clients should wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 2;

impl ApiError {
    /// The problem document this error answers with.
    fn problem(&self) -> Problem<'_> {
        let status = self.status();
        let detail = match self {
            ApiError::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("the request has {} invalid field(s): {}", errors.len(), fields.join(", "))
            }
            ApiError::Internal(_) => "an internal error occurred; it has been logged".to_owned(),
            other => crate::policy::one_line(&other.to_string()),
        };
        let (errors, activity_id) = match self {
            ApiError::Validation(e) | ApiError::Unprocessable { errors: e, .. } if !e.is_empty() => {
                (Some(e.as_slice()), None)
            }
            ApiError::Conflict { activity_id, .. } => (None, *activity_id),
            _ => (None, None),
        };
        Problem {
            problem_type: format!("https://reten.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors,
            activity_id,
        }
    }

    /// The problem document as JSON: what the OpenAPI document shows as an
    /// example, so examples and answers come from the same code.
    pub fn example(&self) -> serde_json::Value {
        serde_json::to_value(self.problem()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "internal error");
        }
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after_secs, .. } => Some(*retry_after_secs),
            ApiError::Unavailable(_) => Some(RETRY_AFTER_SECS),
            _ => None,
        };
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly".into())
            }
            // A character Postgres cannot store (a NUL) that validation let through.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")) => {
                ApiError::BadRequest("a value holds a character that cannot be stored (NUL)".into())
            }
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly".into())
            }
            _ => ApiError::Internal(anyhow::Error::new(err).context("database query failed")),
        }
    }
}

/// SQLSTATEs that mean "try again later": a connection problem (08…),
/// resources exhausted (53…), an operator stopping the server (57P…), a
/// statement timeout, a serialization failure or deadlock, or the database
/// gone (3D000).
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "57014" | "40001" | "40P01" | "3D000")
}

#[cfg(test)]
mod tests {
    use super::is_unavailable_code;

    #[test]
    fn a_dropped_database_or_a_cut_connection_is_retryable_but_a_constraint_is_not() {
        for code in ["3D000", "08006", "57P01", "53300", "57014"] {
            assert!(is_unavailable_code(Some(code)), "{code}");
        }
        for code in ["23505", "22P02", "42P01"] {
            assert!(!is_unavailable_code(Some(code)), "{code}");
        }
        assert!(!is_unavailable_code(None));
    }
}
