//! The load client of `examples/outage.sh` (a database outage drill).
//!
//! `outage_client load …` sends `POST /api/activities` continuously from
//! several workers, each request with a fresh idempotency key, for a fixed
//! time, while `/readyz` is polled; it writes one TSV line per request (key,
//! phase, outcome, status, activity id, latency, Retry-After) and prints a
//! summary. The phase (`before`, `outage`, `after`) comes from marker files
//! the script creates when it stops and restarts Postgres.
//!
//! `outage_client retry …` re-sends, with the same key and body, every
//! create that did not end in a 201 or a 409 (a 503, a 5xx, or a connection
//! that failed before or during the exchange) until each gets a 201 or a
//! 409, and appends those outcomes.
//!
//! One request per connection, over a plain `TcpStream`, so that a failure
//! is known to be before the request left (not sent) or after (ambiguous).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "../tests/it/http1.rs"]
mod http1;

use http1::Failure;

/// The request timeout: far beyond any configured server timeout, so that a
/// hang shows as a latency, not as a client error.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Args(HashMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut it = raw.iter();
        while let Some(k) = it.next() {
            let key = k.strip_prefix("--").unwrap_or_else(|| panic!("unexpected argument {k}"));
            let value = it.next().unwrap_or_else(|| panic!("--{key} needs a value"));
            map.insert(key.to_owned(), value.clone());
        }
        Self(map)
    }
    fn get(&self, k: &str) -> &str {
        self.0.get(k).unwrap_or_else(|| panic!("--{k} is required"))
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.0.get(k).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("--{k} must be a number")))
    }
}

/// Who and where.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    bearer: String,
    tenant: String,
    commerce: String,
}

/// One request's outcome, as a TSV line.
struct Record {
    key: String,
    phase: &'static str,
    outcome: &'static str,
    status: u16,
    activity_id: String,
    latency_ms: u128,
    retry_after: String,
    /// When the request started, in ms since the Unix epoch.
    at_ms: u128,
}

impl Record {
    fn line(&self) -> String {
        let id = if self.activity_id.is_empty() { "-" } else { &self.activity_id };
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.key, self.phase, self.outcome, self.status, id, self.latency_ms, self.retry_after, self.at_ms
        )
    }
}

fn body(commerce: &str, key: &str) -> String {
    json!({
        "type": "MESSAGE",
        "reason": "Outage drill",
        "channel": "WHATSAPP",
        "commerce_id": commerce,
        "idempotency_key": key,
        "scheduled_at": "2025-01-16T09:00:00.000Z",
        "attribute_keys": ["commerce_info"]
    })
    .to_string()
}

/// Sends a create and drops the connection `after` the request is written,
/// without reading the answer: a client whose connection fails mid-flight.
/// The server may or may not have acted on it; only a retry can tell.
async fn abandon(t: &Target, key: &str, phase: &'static str, after: Duration) -> Record {
    use tokio::io::AsyncWriteExt as _;
    let body = body(&t.commerce, key);
    let at_ms = now_ms();
    let started = Instant::now();
    let request = format!(
        "POST /api/activities HTTP/1.1\r\nhost: {}\r\nconnection: close\r\nauthorization: {}\r\n\
         x-tenant-id: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        t.addr,
        t.bearer,
        t.tenant,
        body.len()
    );
    let outcome = match tokio::net::TcpStream::connect(t.addr).await {
        Ok(mut stream) => {
            let _ = stream.write_all(request.as_bytes()).await;
            tokio::time::sleep(after).await;
            drop(stream);
            "abandoned"
        }
        Err(_) => "notsent",
    };
    Record {
        key: key.to_owned(),
        phase,
        outcome,
        status: 0,
        activity_id: String::new(),
        latency_ms: started.elapsed().as_millis(),
        retry_after: "-".into(),
        at_ms,
    }
}

async fn create(t: &Target, key: &str, phase: &'static str) -> Record {
    let body = body(&t.commerce, key);
    let headers = [
        ("authorization", t.bearer.as_str()),
        ("x-tenant-id", t.tenant.as_str()),
        ("content-type", "application/json"),
    ];
    let at_ms = now_ms();
    let started = Instant::now();
    let res = http1::send(t.addr, "POST", "/api/activities", &headers, Some(body.as_bytes()), TIMEOUT).await;
    let latency_ms = started.elapsed().as_millis();
    let mut r = Record {
        key: key.to_owned(),
        phase,
        outcome: "",
        status: 0,
        activity_id: String::new(),
        latency_ms,
        retry_after: "-".into(),
        at_ms,
    };
    match res {
        Ok(res) => {
            let b = res.json();
            r.status = res.status;
            r.retry_after = res.header("retry-after").unwrap_or("-").to_owned();
            r.outcome = match res.status {
                201 => {
                    r.activity_id = b["id"].as_str().unwrap_or_default().to_owned();
                    "created"
                }
                409 => {
                    r.activity_id = b["activityId"].as_str().unwrap_or_default().to_owned();
                    "duplicate"
                }
                503 => "unavailable",
                s if s >= 500 => "error5xx",
                _ => "other4xx",
            };
        }
        Err(Failure::NotSent(_)) => r.outcome = "notsent",
        Err(Failure::Ambiguous(_)) => r.outcome = "ambiguous",
    }
    r
}

/// The phase, from the marker files the script creates around each step:
/// `stopping` (stop issued), `outage` (stop returned: Postgres is down),
/// `starting` (start issued), `after` (Postgres accepts connections again).
fn phase(markers: &Path) -> &'static str {
    for (marker, phase) in
        [("started", "after"), ("starting", "starting"), ("stopped", "outage"), ("stopping", "stopping")]
    {
        if markers.join(marker).exists() {
            return phase;
        }
    }
    "before"
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn target(args: &Args) -> Target {
    Target {
        addr: args.get("addr").parse().expect("--addr is host:port"),
        bearer: format!("Bearer {}", args.get("token")),
        tenant: args.get("tenant").to_owned(),
        commerce: args.get("commerce").to_owned(),
    }
}

async fn load(args: Args) {
    let t = target(&args);
    let markers = PathBuf::from(args.get("markers"));
    let run = args.get("run").to_owned();
    let seconds = args.num("seconds", 15);
    let workers = args.num("workers", 8);
    // Every n-th request of each worker drops its connection mid-flight.
    let abandon_every = args.num("abandon-every", 40).max(1);
    let out = PathBuf::from(args.get("out"));
    let until = Instant::now() + Duration::from_secs(seconds);

    let done = Arc::new(AtomicBool::new(false));
    let readyz = {
        let (done, markers, addr) = (done.clone(), markers.clone(), t.addr);
        tokio::spawn(async move {
            let mut seen: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                let phase = phase(&markers);
                let status = match http1::send(addr, "GET", "/readyz", &[], None, Duration::from_secs(10)).await {
                    Ok(r) => r.status.to_string(),
                    Err(e) => format!("{e}"),
                };
                *seen.entry((phase, status)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };

    let mut tasks = Vec::new();
    for w in 0..workers {
        let (t, markers, run) = (t.clone(), markers.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut records = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                let key = format!("{run}-{w}-{n}");
                n += 1;
                let r = if n % abandon_every == abandon_every / 2 {
                    // 0 to 9 ms after the request is written: before, during
                    // or after the server's work on it.
                    abandon(&t, &key, phase(&markers), Duration::from_millis((n * 7 + w) % 10)).await
                } else {
                    create(&t, &key, phase(&markers)).await
                };
                let back_off = !matches!(r.outcome, "created" | "duplicate" | "abandoned");
                records.push(r);
                if back_off {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            records
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.expect("a worker panicked"));
    }
    done.store(true, Ordering::Relaxed);
    let readyz = readyz.await.expect("the readyz poller panicked");

    let mut file = std::fs::File::create(&out).expect("cannot write --out");
    for r in &records {
        file.write_all(r.line().as_bytes()).unwrap();
    }

    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut max_latency: BTreeMap<&str, u128> = BTreeMap::new();
    for r in &records {
        *by.entry((r.phase, r.outcome)).or_default() += 1;
        let m = max_latency.entry(r.phase).or_default();
        *m = (*m).max(r.latency_ms);
    }
    println!("load: {} requests from {workers} workers in {seconds} s", records.len());
    for ((phase, outcome), n) in &by {
        println!("  {phase:<7} {outcome:<12} {n}");
    }
    for (phase, ms) in &max_latency {
        println!("  {phase:<7} max latency {ms} ms");
    }
    for ((phase, status), n) in &readyz {
        println!("  {phase:<7} /readyz {status} x{n}");
    }
}

async fn retry(args: Args) {
    let t = target(&args);
    let input = std::fs::read_to_string(args.get("in")).expect("cannot read --in");
    let out = PathBuf::from(args.get("out"));
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for line in input.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        last.insert(cols[0].to_owned(), cols[2].to_owned());
    }
    let pending: Vec<(&String, &String)> =
        last.iter().filter(|(_, outcome)| !matches!(outcome.as_str(), "created" | "duplicate")).collect();
    let mut file = std::fs::File::create(&out).expect("cannot write --out");
    let mut by: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut unresolved = 0;
    for (key, first) in &pending {
        let mut outcome = "";
        for _ in 0..10 {
            let r = create(&t, key, "retry").await;
            file.write_all(r.line().as_bytes()).unwrap();
            outcome = r.outcome;
            if matches!(outcome, "created" | "duplicate") {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !matches!(outcome, "created" | "duplicate") {
            unresolved += 1;
        }
        *by.entry(((*first).clone(), outcome)).or_default() += 1;
    }
    println!("retry: {} keys without a 201 or a 409 re-sent with the same key", pending.len());
    for ((first, outcome), n) in &by {
        println!("  first {first:<12} -> retry {outcome:<10} {n}");
    }
    println!("  unresolved after 10 tries: {unresolved}");
    if unresolved > 0 {
        std::process::exit(1);
    }
}

#[tokio::main]
async fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = raw.split_first() else {
        eprintln!("usage: outage_client load|retry --addr H:P --token T --tenant ID --commerce ID …");
        std::process::exit(2);
    };
    let args = Args::parse(rest);
    match mode.as_str() {
        "load" => load(args).await,
        "retry" => retry(args).await,
        other => {
            eprintln!("unknown mode {other}; use load or retry");
            std::process::exit(2);
        }
    }
}
