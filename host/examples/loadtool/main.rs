//! `loadtool`: the Rust half of the load harness in `examples/load/`.
//!
//! - `seed`: provisions tenants and commerces through the API, writes each
//!   tenant's policy folder, waits until it serves, and makes one create per
//!   commerce (the warm-up the pgbench scripts are captured from);
//! - `folders`: writes (or waits for) the tenants' policy folders apart from
//!   `seed`, for a cold start over many tenants;
//! - `pgbench`: writes pgbench scripts replaying what those creates sent
//!   (see `pgbench.rs`);
//! - `load`: drives `POST /api/activities` over HTTP/1.1 keep-alive
//!   connections, closed-loop or at a fixed rate, and reports throughput,
//!   latency percentiles, statuses and CPU;
//! - `ready`: waits for `/readyz`, timing a cold start;
//! - `cpu`: CPU use by process over a window (next to pgbench);
//! - `reload`: times "policy file written → new version serving";
//! - `first-creates`: the first create of random tenants after a cold start,
//!   checked against each tenant's own policy (and the tier that ran it);
//! - `receive`: a webhook receiver on the loopback for `dispatch.sh`.
//!
//! Run through the scripts (`examples/load/*.sh`), or by hand:
//! `cargo run --release -p reten-host --example loadtool -- --help`.

mod cpu;
mod first;
mod http;
mod load;
mod pgbench;
mod receive;
mod reload;
mod seed;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use reten_host::api::auth::{self, Claims};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "loadtool", about = "Seeds, loads and times the reten service (examples/load/)")]
struct Cli {
    /// Tokio worker threads (1 = a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Seed(seed::SeedArgs),
    Folders(seed::FoldersArgs),
    Pgbench(PgbenchArgs),
    Load(load::LoadArgs),
    Ready(ReadyArgs),
    Cpu(cpu::CpuArgs),
    Reload(reload::ReloadArgs),
    FirstCreates(first::FirstArgs),
    Receive(receive::ReceiveArgs),
}

/// Writes pgbench scripts replaying the warm-up creates of `seed`.
#[derive(Debug, clap::Args)]
struct PgbenchArgs {
    /// The targets file `seed` wrote.
    #[arg(long)]
    targets: PathBuf,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Where the script (`create.pgbench`) goes.
    #[arg(long)]
    out_dir: PathBuf,
    /// Only tenants of this role (`normal` or `loop`).
    #[arg(long, default_value = "normal")]
    role: String,
    /// How many (tenant, commerce) pairs each pgbench client replays (see
    /// `pgbench::script`).
    #[arg(long, default_value_t = 8)]
    pairs_per_client: usize,
}

/// Waits for `GET /readyz` to answer 200 and prints the milliseconds since
/// `--since-ns` (Unix time in ns, e.g. `date +%s%N` before the server
/// started).
#[derive(Debug, clap::Args)]
struct ReadyArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    since_ns: Option<u128>,
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Give up as soon as this process (the server) is gone.
    #[arg(long)]
    pid: Option<u32>,
}

/// What `seed` provisioned: the input of every other command.
#[derive(Debug, Serialize, Deserialize)]
pub struct Targets {
    pub url: String,
    pub tenants: Vec<TenantTarget>,
}

/// One tenant: its id, an ADMIN token, its role in the run and its commerces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantTarget {
    pub index: usize,
    pub id: Uuid,
    /// `normal`, or `loop` (its first criterion loops until its deadline).
    pub role: String,
    pub token: String,
    pub commerces: Vec<CommerceTarget>,
}

/// One commerce, and the activity its warm-up create made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommerceTarget {
    pub id: Uuid,
    pub warmup_activity: Option<Uuid>,
}

impl Targets {
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// `host:port` of an `http://host:port[/…]` URL.
pub fn addr_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Mints an HS256 token.
pub fn token(secret: &str, sub: &str, tenants: &[Uuid], roles: &[&str]) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now + 12 * 3_600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
        tenant_ids: tenants.to_vec(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        permissions: Vec::new(),
    };
    auth::mint(secret, &claims)
}

/// The value at quantile `q` (0..=1) of sorted samples.
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()?
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Seed(args) => seed::run(args).await,
            Command::Folders(args) => seed::folders(args).await,
            Command::Pgbench(args) => write_pgbench(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Ready(args) => ready(args).await,
            Command::Cpu(args) => cpu::run(args).await,
            Command::Reload(args) => reload::run(args).await,
            Command::FirstCreates(args) => first::run(args).await,
            Command::Receive(args) => receive::run(args).await,
        }
    })
}

async fn write_pgbench(args: PgbenchArgs) -> anyhow::Result<()> {
    let targets = Targets::read(&args.targets)?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&args.database_url).await?;
    let mut replays = Vec::new();
    for tenant in targets.tenants.iter().filter(|t| t.role == args.role) {
        for commerce in &tenant.commerces {
            let activity = commerce.warmup_activity.context("a commerce without a warm-up create; run seed first")?;
            let replay = pgbench::capture(&pool, tenant.id, activity).await.map_err(anyhow::Error::msg)?;
            // Never write a script the checker would refuse.
            pgbench::check_transaction(&replay.statements()).map_err(anyhow::Error::msg)?;
            replays.push(replay);
        }
    }
    anyhow::ensure!(!replays.is_empty(), "no warm-up creates of role {} to replay", args.role);
    std::fs::create_dir_all(&args.out_dir)?;
    let path = args.out_dir.join("create.pgbench");
    std::fs::write(&path, pgbench::script(&replays, args.pairs_per_client))?;
    println!(
        "pgbench: {} (tenant, commerce) pairs in {} ({} per client)",
        replays.len(),
        path.display(),
        args.pairs_per_client.min(replays.len())
    );
    Ok(())
}

async fn ready(args: ReadyArgs) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut conn = http::Conn::new(&addr_of(&args.url));
    // Gone, or a zombie its parent has not reaped yet.
    let alive = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)).unwrap_or("Z");
        state != "Z" && state != "X"
    };
    loop {
        let answered = conn.get("/readyz", &[]).await.is_ok_and(|r| r.status == 200);
        if let Some(pid) = args.pid {
            // Checked after the answer too: it must come from this server.
            anyhow::ensure!(alive(pid), "the server (pid {pid}) exited");
        }
        if answered {
            break;
        }
        anyhow::ensure!(start.elapsed().as_secs() < args.timeout_secs, "not ready after {} s", args.timeout_secs);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ms = match args.since_ns {
        Some(since) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            now.saturating_sub(since) as f64 / 1e6
        }
        None => start.elapsed().as_secs_f64() * 1e3,
    };
    println!("{ms:.0}");
    Ok(())
}
