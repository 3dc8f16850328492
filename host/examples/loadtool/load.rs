//! `loadtool load`: drives `POST /api/activities`.
//!
//! Each stream is a set of connections (one request in flight on each) over
//! a set of tenants. Closed loop (the default): every connection sends its
//! next request as soon as the previous one answers, like wrk. With a rate:
//! requests are due at fixed intervals and their latency counts from when
//! they were due, so a slow server is not hidden by sending less
//! (no coordinated omission). Every request has a fresh idempotency key and
//! a (tenant, commerce) drawn at random.
//!
//! At the end of the duration no request is started; the ones in flight are
//! awaited and counted, so the number of 201s is exactly the number of
//! activities the run created.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde::Serialize;
use uuid::Uuid;

use crate::http::Conn;
use crate::{Targets, addr_of, percentile};

/// Drives creates and reports what they did.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The targets file `seed` wrote.
    #[arg(long)]
    targets: PathBuf,
    /// Seconds measured.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before the measurement (not counted, but its creates
    /// are rows too: they are reported as `warmup_created`).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// A stream: `name=N,tenants=all|normal|loop,concurrency=C[,rate=R]`
    /// (repeatable; default one closed-loop stream over the normal tenants).
    #[arg(long = "stream")]
    streams: Vec<String>,
    /// Connections of the default stream.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The server's pid, to report its CPU use.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where the JSON report goes.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct StreamSpec {
    name: String,
    tenants: String,
    concurrency: usize,
    rate: Option<f64>,
}

fn parse_stream(s: &str) -> anyhow::Result<StreamSpec> {
    let mut spec = StreamSpec { name: "load".into(), tenants: "normal".into(), concurrency: 16, rate: None };
    for part in s.split(',') {
        let (k, v) = part.split_once('=').with_context(|| format!("`{part}` is not key=value"))?;
        match k {
            "name" => spec.name = v.to_owned(),
            "tenants" => spec.tenants = v.to_owned(),
            "concurrency" => spec.concurrency = v.parse()?,
            "rate" => spec.rate = Some(v.parse()?).filter(|r: &f64| *r > 0.0),
            _ => anyhow::bail!("unknown stream key `{k}`"),
        }
    }
    ensure!(spec.concurrency > 0, "a stream needs at least one connection");
    Ok(spec)
}

/// What one stream did in the measured window.
#[derive(Debug, Serialize)]
pub struct StreamReport {
    pub name: String,
    pub tenants: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub requests: usize,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Responses by status (`0`: no response: connection error or timeout).
    pub statuses: BTreeMap<u16, usize>,
    pub non_2xx: usize,
    pub created: usize,
    /// 201s during the warm-up (rows too).
    pub warmup_created: usize,
    /// The measured window second by second.
    pub timeline: Vec<Second>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub duration_secs: f64,
    pub streams: Vec<StreamReport>,
    pub cpu: crate::cpu::Usage,
}

/// One request's outcome: when it was due, how long it took, its status.
struct Sample {
    measured: bool,
    /// When it was due, in ms after the measured window opened.
    due_ms: u32,
    latency_us: u32,
    status: u16,
}

/// One second of the measured window: how many requests were due in it and
/// their latency, to tell a stall (one bad second) from a standing queue.
#[derive(Debug, Serialize)]
pub struct Second {
    pub second: usize,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Pre-built request headers for one (tenant, commerce).
struct Pair {
    auth: String,
    tenant: String,
    commerce: Uuid,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let targets = Targets::read(&args.targets)?;
    let addr = addr_of(&targets.url);
    let specs: Vec<StreamSpec> = if args.streams.is_empty() {
        vec![StreamSpec { name: "load".into(), tenants: "normal".into(), concurrency: args.concurrency, rate: None }]
    } else {
        args.streams.iter().map(|s| parse_stream(s)).collect::<anyhow::Result<_>>()?
    };
    let run_tag = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(args.duration);

    let mut handles = Vec::new();
    let mut tenants_of = Vec::new();
    for (s, spec) in specs.iter().enumerate() {
        let tenants: Vec<_> =
            targets.tenants.iter().filter(|t| spec.tenants == "all" || t.role == spec.tenants).collect();
        ensure!(!tenants.is_empty(), "stream {}: no tenant of role {}", spec.name, spec.tenants);
        tenants_of.push(tenants.len());
        let pairs: Arc<Vec<Pair>> = Arc::new(
            tenants
                .iter()
                .flat_map(|t| {
                    t.commerces.iter().map(|c| Pair {
                        auth: format!("Bearer {}", t.token),
                        tenant: t.id.to_string(),
                        commerce: c.id,
                    })
                })
                .collect(),
        );
        let tickets = Arc::new(AtomicU64::new(0));
        for task in 0..spec.concurrency {
            let pairs = Arc::clone(&pairs);
            let tickets = Arc::clone(&tickets);
            let addr = addr.clone();
            let rate = spec.rate;
            let key_prefix = format!("{run_tag}-{s}-{task}");
            handles.push((
                s,
                tokio::spawn(async move {
                    drive(addr, pairs, tickets, rate, key_prefix, start, measure_from, stop_at).await
                }),
            ));
        }
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_at_start = crate::cpu::Snapshot::take(args.server_pid);
    tokio::time::sleep_until(stop_at.into()).await;
    let cpu_at_stop = crate::cpu::Snapshot::take(args.server_pid);

    let mut samples: Vec<Vec<Sample>> = specs.iter().map(|_| Vec::new()).collect();
    for (s, h) in handles {
        samples[s].extend(h.await?);
    }
    let finished = Instant::now();
    // Requests started before the stop and answered after it count; the
    // window they are divided by is the measured duration.
    let window = args.duration;

    let streams = specs
        .iter()
        .zip(samples)
        .zip(tenants_of)
        .map(|((spec, samples), tenants)| {
            let warmup_created = samples.iter().filter(|x| !x.measured && x.status == 201).count();
            let measured: Vec<&Sample> = samples.iter().filter(|x| x.measured).collect();
            let mut lat: Vec<u32> = measured.iter().map(|x| x.latency_us).collect();
            lat.sort_unstable();
            let mut statuses = BTreeMap::new();
            for x in &measured {
                *statuses.entry(x.status).or_insert(0) += 1;
            }
            let ms = |us: u32| f64::from(us) / 1e3;
            StreamReport {
                name: spec.name.clone(),
                tenants,
                concurrency: spec.concurrency,
                rate: spec.rate,
                requests: measured.len(),
                requests_per_sec: measured.len() as f64 / window,
                p50_ms: ms(percentile(&lat, 0.50)),
                p90_ms: ms(percentile(&lat, 0.90)),
                p99_ms: ms(percentile(&lat, 0.99)),
                max_ms: ms(lat.last().copied().unwrap_or(0)),
                non_2xx: measured.iter().filter(|x| !(200..300).contains(&x.status)).count(),
                created: measured.iter().filter(|x| x.status == 201).count(),
                statuses,
                warmup_created,
                timeline: timeline(&measured),
            }
        })
        .collect::<Vec<_>>();
    let report =
        Report { duration_secs: window, streams, cpu: crate::cpu::Usage::between(&cpu_at_start, &cpu_at_stop) };

    for s in &report.streams {
        println!(
            "{:<8} c={:<3} {:>8.0} req/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.1} ms  \
             non-2xx {}  201s {}  statuses {:?}",
            s.name,
            s.concurrency,
            s.requests_per_sec,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.non_2xx,
            s.created,
            s.statuses
        );
    }
    for s in &report.streams {
        let p99: Vec<String> = s.timeline.iter().map(|t| format!("{:.0}", t.p99_ms)).collect();
        println!("{:<8} p99 ms second by second: {}", s.name, p99.join(" "));
    }
    println!("{}; drained in {:.0} ms", report.cpu, finished.saturating_duration_since(stop_at).as_secs_f64() * 1e3);
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// One connection's loop.
#[allow(clippy::too_many_arguments)]
async fn drive(
    addr: String,
    pairs: Arc<Vec<Pair>>,
    tickets: Arc<AtomicU64>,
    rate: Option<f64>,
    key_prefix: String,
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
) -> Vec<Sample> {
    let mut conn = Conn::new(&addr);
    let mut rng = Rng::new();
    let mut samples = Vec::with_capacity(1 << 14);
    let mut body = String::with_capacity(512);
    tokio::time::sleep_until(start.into()).await;
    for n in 0u64.. {
        // When this request is due.
        let due = match rate {
            Some(r) => {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                let due = start + Duration::from_secs_f64(ticket as f64 / r);
                if due >= stop_at {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                now
            }
        };
        let pair = &pairs[rng.below(pairs.len())];
        body.clear();
        // The key's counter is zero-padded: each connection's keys come in
        // text order, so its inserts take one place of the key's index (as
        // pgbench's replay, `pgbench::script`).
        body.push_str(&format!(
            "{{\"type\":\"MESSAGE\",\"reason\":\"Monthly promotion\",\"channel\":\"WHATSAPP\",\
             \"commerce_id\":\"{}\",\"idempotency_key\":\"ld-{key_prefix}-{n:09}\",\
             \"scheduled_at\":\"2025-01-16T09:00:00.000Z\",\"attribute_keys\":[\"loyalty_tier\"]}}",
            pair.commerce
        ));
        let headers = [
            ("Authorization", pair.auth.as_str()),
            ("x-tenant-id", pair.tenant.as_str()),
            ("Content-Type", "application/json"),
        ];
        let status = match conn.send("POST", "/api/activities", &headers, body.as_bytes()).await {
            Ok(r) => r.status,
            Err(_) => 0,
        };
        let latency = due.elapsed();
        samples.push(Sample {
            measured: due >= measure_from,
            due_ms: u32::try_from(due.saturating_duration_since(measure_from).as_millis()).unwrap_or(u32::MAX),
            latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
            status,
        });
    }
    samples
}

/// The measured samples grouped by the second they were due in.
fn timeline(measured: &[&Sample]) -> Vec<Second> {
    let seconds = measured.iter().map(|x| x.due_ms as usize / 1000 + 1).max().unwrap_or(0);
    let mut by_second: Vec<Vec<u32>> = vec![Vec::new(); seconds];
    for x in measured {
        by_second[x.due_ms as usize / 1000].push(x.latency_us);
    }
    let ms = |us: u32| f64::from(us) / 1e3;
    by_second
        .into_iter()
        .enumerate()
        .map(|(second, mut lat)| {
            lat.sort_unstable();
            Second {
                second,
                requests: lat.len(),
                p50_ms: ms(percentile(&lat, 0.50)),
                p99_ms: ms(percentile(&lat, 0.99)),
                max_ms: ms(lat.last().copied().unwrap_or(0)),
            }
        })
        .collect()
}

/// xorshift64*: enough to spread requests over tenants and commerces.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}
