//! CPU use from /proc: the machine's, the server's, this process's, and
//! Postgres's and pgbench's (every process of that name), over a window.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// `USER_HZ`: 100 on every Linux this runs on (`getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU counters at one instant, in clock ticks.
pub struct Snapshot {
    at: Instant,
    busy: u64,
    server: Option<u64>,
    own: u64,
    /// (comm, pid) → user + system ticks, for the processes we follow.
    others: HashMap<(String, u32), u64>,
}

/// CPU use over a window, in % of one core (200 = both cores of a 2-core
/// machine).
#[derive(Debug, Serialize)]
pub struct Usage {
    pub cores: usize,
    pub machine: f64,
    pub server: Option<f64>,
    pub loadgen: f64,
    pub postgres: f64,
    pub pgbench: f64,
    /// Everything else that ran (other users of the machine, the kernel's
    /// own threads).
    pub rest: f64,
}

impl Snapshot {
    pub fn take(server_pid: Option<u32>) -> Self {
        let busy = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let v: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                Some(v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut others = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
                if let Some((comm, ticks)) = proc_ticks(pid)
                    && (comm == "postgres" || comm == "pgbench")
                {
                    others.insert((comm, pid), ticks);
                }
            }
        }
        Self {
            at: Instant::now(),
            busy,
            server: server_pid.and_then(proc_ticks).map(|(_, t)| t),
            own: proc_ticks(std::process::id()).map(|(_, t)| t).unwrap_or(0),
            others,
        }
    }
}

/// A process's name and user + system ticks.
fn proc_ticks(pid: u32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let comm = s[open + 1..close].to_owned();
    // After the `(comm)`: state is field 3; utime and stime are 14 and 15.
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    Some((comm, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
}

impl Usage {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Self {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_SEC / secs * 100.0;
        let comm = |name: &str| -> f64 {
            // Processes that started during the window count from zero;
            // ones that ended during it are lost (keep them alive across it).
            pct(b
                .others
                .iter()
                .filter(|((c, _), _)| c == name)
                .map(|(k, t)| t.saturating_sub(a.others.get(k).copied().unwrap_or(0)))
                .sum())
        };
        let machine = pct(b.busy.saturating_sub(a.busy));
        let server = match (a.server, b.server) {
            (Some(x), Some(y)) => Some(pct(y.saturating_sub(x))),
            _ => None,
        };
        let loadgen = pct(b.own.saturating_sub(a.own));
        let (postgres, pgbench) = (comm("postgres"), comm("pgbench"));
        Self {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            machine,
            server,
            loadgen,
            postgres,
            pgbench,
            rest: (machine - server.unwrap_or(0.0) - loadgen - postgres - pgbench).max(0.0),
        }
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu (% of one core, {} cores): machine {:.0}", self.cores, self.machine)?;
        if let Some(s) = self.server {
            write!(f, ", server {s:.0}")?;
        }
        if self.loadgen >= 0.5 {
            write!(f, ", load tool {:.0}", self.loadgen)?;
        }
        write!(f, ", postgres {:.0}", self.postgres)?;
        if self.pgbench >= 0.5 {
            write!(f, ", pgbench {:.0}", self.pgbench)?;
        }
        write!(f, ", rest {:.0}", self.rest)
    }
}

/// `loadtool cpu`: CPU use over a window that starts after a delay — run in
/// the background next to pgbench.
#[derive(Debug, clap::Args)]
pub struct CpuArgs {
    /// Seconds before the window opens.
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Seconds the window lasts.
    #[arg(long)]
    duration: f64,
    /// Where the JSON goes.
    #[arg(long)]
    out: std::path::PathBuf,
}

pub async fn run(args: CpuArgs) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs_f64(args.delay)).await;
    let a = Snapshot::take(None);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let b = Snapshot::take(None);
    let usage = Usage::between(&a, &b);
    println!("{usage}");
    std::fs::write(&args.out, serde_json::to_string_pretty(&usage)?)?;
    Ok(())
}
