//! A real HTTP receiver for dispatch tests: an axum server on 127.0.0.1:0
//! in the test process that records every request (headers, body, when) and
//! answers as the test says: 2xx with an id, an error status, or never.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 201 with `{"id": "prov-<n>"}`.
    Accept,
    /// This status, with an error body.
    Status(u16),
    /// Holds the request open for this long before answering 200.
    Hang(Duration),
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

#[derive(Clone)]
struct Shared {
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    count: watch::Sender<usize>,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    count: watch::Receiver<usize>,
}

impl Receiver {
    /// Starts a receiver that answers `answer`.
    pub async fn start(answer: Answer) -> Self {
        let (count_tx, count) = watch::channel(0);
        let shared = Shared {
            answer: Arc::new(Mutex::new(answer)),
            received: Arc::new(Mutex::new(Vec::new())),
            count: count_tx,
        };
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, shared, count }
    }

    /// The base URL a config points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Changes how it answers from now on.
    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; fails after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let mut count = self.count.clone();
        tokio::time::timeout(limit, count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} requests did not arrive within {limit:?}; {} did", self.received().len()))
            .unwrap();
        self.received()
    }
}

async fn record(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let answer = *shared.answer.lock().unwrap();
    let n = {
        let mut received = shared.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
            at: std::time::Instant::now(),
        });
        received.len()
    };
    shared.count.send_replace(n);
    match answer {
        Answer::Accept => (StatusCode::CREATED, axum::Json(json!({"id": format!("prov-{n}")}))).into_response(),
        Answer::Status(code) => {
            (StatusCode::from_u16(code).unwrap(), axum::Json(json!({"error": "the receiver refused it"})))
                .into_response()
        }
        Answer::Hang(d) => {
            // A provider that does not answer in time.
            let _ = tokio::time::timeout(d, std::future::pending::<()>()).await;
            StatusCode::OK.into_response()
        }
    }
}
