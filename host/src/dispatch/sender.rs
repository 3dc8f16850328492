//! The WEBHOOK provider's HTTP client: `POST {base_url}/activities` over
//! rustls, through the SSRF guard's resolver, with no proxy from the
//! environment and no redirects, within `RETEN_DISPATCH_TIMEOUT_MS`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use serde_json::Value;

use super::signing::{SIGNATURE_HEADER, signature};
use super::ssrf::{AddressRefused, GuardedResolver, HostPolicy};
use crate::domain::ActivityId;

/// The most of a provider's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// The longest error message kept from an answer.
const MAX_ERROR_CHARS: usize = 500;

/// One request to send.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
    pub signing_secret: Option<&'a str>,
    /// The `Idempotency-Key`: the same on every attempt.
    pub activity: ActivityId,
    pub attempt: i32,
    pub body: &'a [u8],
}

/// How a send ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Answered 2xx, maybe naming the provider's id for the activity.
    Delivered { http_status: u16, provider_activity_id: Option<String> },
    /// Anything else, or no answer.
    Failed(Failure),
}

/// A failed send: a code for machines (`HTTP_503`, `TIMEOUT`, …) and a
/// message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub http_status: Option<u16>,
}

impl Failure {
    /// A failure with no HTTP status.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), http_status: None }
    }

    /// The `result` label of the attempts metric: a closed set.
    pub fn class(&self) -> &'static str {
        match (self.code.as_str(), self.http_status) {
            (_, Some(s)) if s >= 500 => "http_5xx",
            (_, Some(_)) => "http_4xx",
            ("TIMEOUT", _) => "timeout",
            ("ADDRESS_REFUSED", _) => "refused",
            ("CONNECT_ERROR", _) => "connect_error",
            ("CREDENTIALS_UNAVAILABLE" | "CONFIG_INVALID", _) => "config_error",
            _ => "error",
        }
    }
}

/// The WEBHOOK client.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    hosts: Arc<HostPolicy>,
}

impl Sender {
    /// A client whose every connection goes through the SSRF guard.
    pub fn new(hosts: Arc<HostPolicy>, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .dns_resolver(Arc::new(GuardedResolver { hosts: Arc::clone(&hosts) }))
            .user_agent(concat!("reten-dispatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, hosts })
    }

    /// Sends one delivery and reads the answer.
    pub async fn send(&self, d: &Delivery<'_>) -> Sent {
        let url = match endpoint(d.base_url) {
            Ok(url) => url,
            Err(e) => return Sent::Failed(Failure::new("CONFIG_INVALID", format!("base_url {e}"))),
        };
        if let Err(refusal) = self.hosts.check_url(&url) {
            return Sent::Failed(Failure::new("ADDRESS_REFUSED", format!("base_url {refusal}")));
        }
        let headers = match headers(d) {
            Ok(h) => h,
            Err(message) => return Sent::Failed(Failure::new("CONFIG_INVALID", message)),
        };
        let answer = match self.client.post(url).headers(headers).body(d.body.to_vec()).send().await {
            Ok(answer) => answer,
            Err(e) => return Sent::Failed(describe(&e)),
        };
        let status = answer.status();
        let body = match read_capped(answer).await {
            Ok(body) => body,
            Err(e) => return Sent::Failed(describe(&e)),
        };
        if status.is_success() {
            return Sent::Delivered { http_status: status.as_u16(), provider_activity_id: provider_id(&body) };
        }
        let text: String = String::from_utf8_lossy(&body).chars().filter(|c| !c.is_control()).collect();
        let message = format!("the provider answered {status}: {}", truncate(&text));
        Sent::Failed(Failure { code: format!("HTTP_{}", status.as_u16()), message, http_status: Some(status.as_u16()) })
    }
}

/// `{base_url}/activities`.
fn endpoint(base_url: &str) -> Result<Url, String> {
    Url::parse(&format!("{}/activities", base_url.trim_end_matches('/'))).map_err(|e| format!("is invalid: {e}"))
}

fn headers(d: &Delivery<'_>) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(USER_AGENT, HeaderValue::from_static(concat!("reten-dispatch/", env!("CARGO_PKG_VERSION"))));
    let value = |v: &str| HeaderValue::from_str(v);
    h.insert("idempotency-key", value(&d.activity.to_string()).map_err(|_| "bad activity id")?);
    h.insert("x-reten-attempt", HeaderValue::from(d.attempt));
    if let Some(key) = d.api_key {
        let mut v = value(key).map_err(|_| "the api_key cannot be sent as a header (control characters)")?;
        v.set_sensitive(true);
        h.insert("x-api-key", v);
    }
    if let Some(secret) = d.signing_secret {
        let signed = signature(secret.as_bytes(), chrono::Utc::now().timestamp(), d.body);
        h.insert(SIGNATURE_HEADER, value(&signed).map_err(|_| "bad signature")?);
    }
    Ok(h)
}

async fn read_capped(mut answer: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// The provider's id for the activity: `id` or `providerActivityId` of a
/// JSON answer, as text.
fn provider_id(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = value.get("providerActivityId").or_else(|| value.get("id"))?;
    let text = match id {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(text.chars().filter(|c| !c.is_control()).take(255).collect())
}

fn truncate(s: &str) -> String {
    if s.chars().count() > MAX_ERROR_CHARS {
        format!("{}…", s.chars().take(MAX_ERROR_CHARS).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// A transport error as a failure: a refusal by the SSRF guard, a timeout,
/// or a connection that could not be made.
fn describe(e: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<AddressRefused>() {
            return Failure::new("ADDRESS_REFUSED", refused.to_string());
        }
        source = err.source();
    }
    if e.is_timeout() {
        Failure::new("TIMEOUT", "the provider did not answer within RETEN_DISPATCH_TIMEOUT_MS")
    } else if e.is_connect() {
        Failure::new("CONNECT_ERROR", format!("could not connect to the provider: {}", root_cause(e)))
    } else {
        Failure::new("REQUEST_ERROR", format!("the request failed: {}", root_cause(e)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    // The URL is ours (no credentials in it), so it may be shown.
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_id_comes_from_id_or_provider_activity_id() {
        assert_eq!(provider_id(br#"{"id": "p-1"}"#).as_deref(), Some("p-1"));
        assert_eq!(provider_id(br#"{"providerActivityId": 42, "id": "x"}"#).as_deref(), Some("42"));
        assert_eq!(provider_id(b"accepted"), None);
        assert_eq!(provider_id(br#"{"id": ""}"#), None);
    }

    #[test]
    fn the_endpoint_appends_activities_once() {
        assert_eq!(endpoint("https://x.example/hooks/").unwrap().as_str(), "https://x.example/hooks/activities");
        assert_eq!(endpoint("https://x.example").unwrap().as_str(), "https://x.example/activities");
    }
}
