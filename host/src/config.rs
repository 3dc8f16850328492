//! Configuration: every setting is an environment variable and a flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::auth::JwtSettings;
use crate::store::PoolSettings;

/// The `reten` command line.
#[derive(Debug, Parser)]
#[command(name = "reten", version, about = "The Reten activities service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings of `serve`, the default command.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
    /// Mint a development token signed with RETEN_JWT_SECRET.
    Token(TokenArgs),
    /// Work with policy files offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `reten policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile and validate Rhai and Wasm policies and TOML configs: files,
    /// layer folders (global/, tenants/<id>/, or any folder laid out like a
    /// tenant's), or whole policies directories.
    Check {
        /// What to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The global layer beneath a tenant folder (default: the policies
        /// directory's global/, else $RETEN_POLICIES_DIR/global, else the
        /// defaults built into reten).
        #[arg(long)]
        global: Option<PathBuf>,
    },
    /// Run the fixtures in <dir>/tests/ (or one fixture file) against a
    /// tenant's policies over the global ones: a pass/fail line each.
    Test {
        /// A layer folder (global/, tenants/<id>/, or any folder laid out like
        /// a tenant's), or one fixture file in its tests/.
        path: PathBuf,
        /// -v prints each failing fixture's trace; -vv each passing one's too.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// Run only the fixtures whose file name matches this regular
        /// expression.
        #[arg(long, value_name = "PATTERN")]
        run: Option<String>,
        /// The global layer (default as for `check`).
        #[arg(long)]
        global: Option<PathBuf>,
    },
    /// Decide one input offline with a tenant folder's policies: the
    /// decision, the trace, each policy's log lines and cost.
    Eval(Box<EvalArgs>),
    /// Replay a candidate tenant folder against the tenant's latest recorded
    /// revision, on the stored decision inputs of its recent activities
    /// (over DATABASE_URL): what would change, before it serves.
    Replay(Box<ReplayArgs>),
    /// Scaffold a policy with a fixture that passes: a Rhai file in a folder
    /// laid out like a tenant's, or a standalone Rust crate for Wasm.
    New(Box<NewArgs>),
    /// Build a Wasm policy crate for wasm32-unknown-unknown and wrap it into
    /// a component; prints the path it wrote.
    Build(BuildArgs),
}

/// `reten policy new`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("engine").required(true).args(["wasm", "rhai"])))]
pub struct NewArgs {
    /// What the policy is.
    pub kind: NewPolicyKind,
    /// The policy's name in snake_case: its file name, and, upper-cased, the
    /// criterion type that tenant.toml names (top_spender is TOP_SPENDER).
    pub name: String,
    /// A Rust crate built into a WebAssembly component.
    #[arg(long)]
    pub wasm: bool,
    /// A Rhai script.
    #[arg(long)]
    pub rhai: bool,
    /// Where to write: a folder laid out like a tenant's (default: `.`) for
    /// Rhai, the crate's folder (default: `./<name>`) for Wasm.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where the Rust SDK that Wasm crates depend on is written, one folder
    /// per version (default: $XDG_DATA_HOME/reten/sdk, else
    /// ~/.local/share/reten/sdk).
    #[arg(long, env = "RETEN_SDK_DIR")]
    pub sdk_dir: Option<PathBuf>,
}

/// The kinds of policy `reten policy new` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NewPolicyKind {
    /// A target criterion: proposes commerce users, best first.
    Criterion,
    /// An attribute resolver: computes one attribute's value.
    Attribute,
}

/// `reten policy build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The policy crate's folder (the one holding its Cargo.toml).
    pub crate_dir: PathBuf,
    /// Where to write the component (default:
    /// <crate-dir>/target/<crate name>.wasm).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `reten policy eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A layer folder (tenants/<id>/, any folder laid out like a tenant's, or
    /// global/).
    pub dir: PathBuf,
    /// The input: a fixture (.toml or .json, as in tests/; its `expect` is
    /// ignored), or a decision input (.json, as GET
    /// /api/activities/{id}/decision-input answers it).
    #[arg(long, required_unless_present = "activity", conflicts_with = "activity")]
    pub input: Option<PathBuf>,
    /// Decide this activity's stored decision input, read from DATABASE_URL.
    #[arg(long)]
    pub activity: Option<crate::domain::ActivityId>,
    /// The tenant of --activity (default: the folder's name).
    #[arg(long)]
    pub tenant: Option<crate::domain::TenantId>,
    /// With a decision input: the attribute keys to resolve too.
    #[arg(long = "attribute", value_name = "KEY")]
    pub attributes: Vec<String>,
    /// The global layer (default as for `check`).
    #[arg(long)]
    pub global: Option<PathBuf>,
    /// Print the decision as JSON (the shape of POST /api/activities/preview).
    #[arg(long)]
    pub json: bool,
    /// The Postgres URL, for --activity.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/reten",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// `reten policy replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate: a folder laid out like a tenant's (tenant.toml,
    /// criteria/, attributes/).
    pub dir: PathBuf,
    /// The tenant (default: the folder's name).
    #[arg(long)]
    pub tenant: Option<crate::domain::TenantId>,
    /// The global layer's folder (default: $RETEN_POLICIES_DIR/global, else
    /// the global/ beside the tenant's folder).
    #[arg(long)]
    pub global: Option<PathBuf>,
    /// Activities created at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Activities created at or before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// The most recent this many.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub limit: i64,
    /// Print the report as JSON (the shape of GET /api/policies/replays/{id}).
    #[arg(long)]
    pub json: bool,
    /// How long decision inputs are kept, in days: older ones are not replayed.
    #[arg(long, env = "RETEN_DECISION_INPUT_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,
    /// The Postgres URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/reten",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// Where the database is.
#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// The Postgres URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/reten",
        hide_env_values = true
    )]
    pub database_url: String,
    /// The most connections the pool opens.
    #[arg(long, env = "RETEN_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How long a request waits for a connection before answering 503, in ms.
    #[arg(long, env = "RETEN_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3_000)]
    pub db_acquire_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The pool settings.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            ..PoolSettings::default()
        }
    }
}

/// How tokens are verified.
#[derive(Clone, Debug, Args)]
pub struct JwtArgs {
    /// The HS256 secret (at least 32 bytes).
    #[arg(long, env = "RETEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A PEM public key (RS256 or ES256), or the path of a file holding one.
    #[arg(long, env = "RETEN_JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "RETEN_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "RETEN_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// A static bearer token (at least 32 bytes) that may read /metrics, for a
    /// scraper; without it, only a SUPER_ADMIN token may.
    #[arg(long, env = "RETEN_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

impl JwtArgs {
    /// The verifier settings; a public key given as a path is read.
    pub fn settings(&self) -> anyhow::Result<JwtSettings> {
        let public_key_pem = match &self.jwt_public_key {
            Some(v) if v.trim_start().starts_with("-----BEGIN") => Some(v.clone()),
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("failed to read RETEN_JWT_PUBLIC_KEY file {path}: {e}"))?,
            ),
            None => None,
        };
        Ok(JwtSettings {
            secret: self.jwt_secret.clone(),
            public_key_pem,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            metrics_token: self.metrics_token.clone(),
        })
    }
}

/// The settings of `serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// The address to listen on.
    #[arg(long, env = "RETEN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The policies directory.
    #[arg(long, env = "RETEN_POLICIES_DIR", default_value = "policies")]
    pub policies_dir: PathBuf,
    /// A private folder where compiled Wasm policies are kept across restarts
    /// (a warm start skips compiling them). Only this service may write it.
    /// Default: `$XDG_CACHE_HOME/reten/wasm`, else `~/.cache/reten/wasm`;
    /// `off`: no cache.
    #[arg(long, env = "RETEN_WASM_CACHE_DIR")]
    pub wasm_cache_dir: Option<PathBuf>,
    /// Serve a new Wasm policy on Winch's code (compiled in milliseconds)
    /// while Cranelift compiles it in the background; `false`: every Wasm
    /// policy is compiled by Cranelift before it serves.
    #[arg(long, env = "RETEN_WASM_BASELINE", default_value_t = true, action = clap::ArgAction::Set)]
    pub wasm_baseline: bool,
    /// At start-up, compile every Wasm policy the compile cache lacks before
    /// the service is ready (`true`), or check each without compiling it and
    /// compile it on its first call or in the background (`false`, with the
    /// baseline tier): a new replica over many tenants is ready in about a
    /// second instead of the time its compilations take.
    #[arg(long, env = "RETEN_WASM_COMPILE_BEFORE_READY", default_value_t = false, action = clap::ArgAction::Set)]
    pub wasm_compile_before_ready: bool,
    /// The longest a reload waits for a policy file still being written to be
    /// closed, in ms (a file event otherwise reloads at once).
    #[arg(long, env = "RETEN_POLICY_DEBOUNCE_MS", default_value_t = 100)]
    pub policy_debounce_ms: u64,
    /// How often the whole policies directory is re-read regardless of events, in seconds.
    #[arg(long, env = "RETEN_POLICY_RESCAN_SECS", default_value_t = 30)]
    pub policy_rescan_secs: u64,
    /// Watch the policies directory for file events (the periodic rescan, and
    /// the reload on another replica's notification, run either way).
    #[arg(long, env = "RETEN_POLICY_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub policy_watch: bool,
    /// The policies directory is managed outside the API (a ConfigMap,
    /// git-sync): every route that writes policy files answers 409.
    #[arg(long, env = "RETEN_POLICIES_READ_ONLY", default_value_t = false, action = clap::ArgAction::Set)]
    pub policies_read_only: bool,
    /// How long the input of each decision is kept for replay and for
    /// `GET /api/activities/{id}/decision-input`, in days (0: none is kept).
    #[arg(long, env = "RETEN_DECISION_INPUT_RETENTION_DAYS", default_value_t = 30)]
    pub decision_input_retention_days: u32,
    /// How many live decisions may wait for their shadow evaluation; past
    /// that, shadow evaluations are dropped and counted, never waited for.
    #[arg(long, env = "RETEN_SHADOW_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub shadow_queue: u32,
    /// How long in-flight requests may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "RETEN_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How many policy calls one tenant may run at once (0: half the cores,
    /// at least one), so one tenant's slow policies cannot hold every worker.
    #[arg(long, env = "RETEN_POLICY_CALLS_PER_TENANT", default_value_t = 0)]
    pub policy_calls_per_tenant: usize,
    /// Consecutive deadlines after which a tenant's policy is skipped for 5 s
    /// (0: never).
    #[arg(long, env = "RETEN_POLICY_BREAKER_AFTER", default_value_t = 5)]
    pub policy_breaker_after: u32,
    /// Label policy metrics with the tenant id (switch off when tenants are
    /// too many to count one by one).
    #[arg(long, env = "RETEN_METRICS_TENANT_LABELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_tenant_labels: bool,
    /// Provision a demo tenant with commerces (once), then print a ready
    /// token and a curl line. Without a JWT key, a random secret is used for
    /// this run.
    #[arg(long, env = "RETEN_DEMO")]
    pub demo: bool,
    #[command(flatten)]
    pub dispatch: DispatchArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The dispatcher and the credentials it sends.
#[derive(Clone, Debug, Args)]
pub struct DispatchArgs {
    /// Run the dispatcher on this replica.
    #[arg(long, env = "RETEN_DISPATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub dispatch: bool,
    /// How often the dispatcher looks for due activities, in ms (it is also
    /// woken by every create of a due activity).
    #[arg(long, env = "RETEN_DISPATCH_INTERVAL_MS", default_value_t = 1_000)]
    pub dispatch_interval_ms: u64,
    /// Sends in flight per tenant on this replica.
    #[arg(long, env = "RETEN_DISPATCH_PER_TENANT", default_value_t = 16)]
    pub dispatch_per_tenant: usize,
    /// How long a provider has to answer, in ms.
    #[arg(long, env = "RETEN_DISPATCH_TIMEOUT_MS", default_value_t = 10_000)]
    pub dispatch_timeout_ms: u64,
    /// The wait after a first failed attempt, in ms; ×4 after each further one.
    #[arg(long, env = "RETEN_DISPATCH_RETRY_BASE_MS", default_value_t = 30_000)]
    pub dispatch_retry_base_ms: u64,
    /// Attempts before an activity is FAILED.
    #[arg(long, env = "RETEN_DISPATCH_MAX_ATTEMPTS", default_value_t = 3)]
    pub dispatch_max_attempts: u32,
    /// Hosts (names or IP literals, comma-separated, matched exactly) that
    /// may be reached over http and at private addresses: development and tests.
    #[arg(long, env = "RETEN_DISPATCH_ALLOW_HOSTS", value_delimiter = ',')]
    pub dispatch_allow_hosts: Vec<String>,
    /// Whether hosts outside RETEN_DISPATCH_ALLOW_HOSTS may be reached at
    /// all; false keeps every send on the allow list (sandboxes, test runs).
    #[arg(long, env = "RETEN_DISPATCH_ALLOW_PUBLIC", default_value_t = true, action = clap::ArgAction::Set)]
    pub dispatch_allow_public: bool,
    /// The base64 of 32 bytes: seals dispatch credentials (AES-256-GCM).
    #[arg(long, env = "RETEN_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// The previous key during a rotation: still opens what it sealed.
    #[arg(long, env = "RETEN_SECRETS_KEY_PREVIOUS", hide_env_values = true)]
    pub secrets_key_previous: Option<String>,
}

impl DispatchArgs {
    /// The dispatcher's settings.
    pub fn settings(&self, tenant_labels: bool) -> crate::dispatch::DispatchSettings {
        crate::dispatch::DispatchSettings {
            enabled: self.dispatch,
            interval: Duration::from_millis(self.dispatch_interval_ms.max(10)),
            per_tenant: self.dispatch_per_tenant.max(1),
            timeout: Duration::from_millis(self.dispatch_timeout_ms.max(1)),
            retry_base: Duration::from_millis(self.dispatch_retry_base_ms),
            max_attempts: self.dispatch_max_attempts.max(1),
            allow_hosts: self.dispatch_allow_hosts.iter().filter(|h| !h.trim().is_empty()).cloned().collect(),
            allow_public: self.dispatch_allow_public,
            tenant_labels,
            ..crate::dispatch::DispatchSettings::default()
        }
    }

    /// The credential keys; a malformed one is an error.
    pub fn secrets(&self) -> anyhow::Result<crate::dispatch::Secrets> {
        crate::dispatch::Secrets::from_base64(self.secrets_key.as_deref(), self.secrets_key_previous.as_deref())
    }
}

/// Abuse limits.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// The most bytes all request headers may take together (else 431).
    #[arg(long, env = "RETEN_MAX_HEADER_BYTES", default_value_t = 16 << 10)]
    pub max_header_bytes: usize,
    /// The longest a request may take, in ms (else 503).
    #[arg(long, env = "RETEN_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// The most requests served at once (else 503).
    #[arg(long, env = "RETEN_MAX_IN_FLIGHT", default_value_t = 1_024)]
    pub max_in_flight: usize,
    /// Sustained requests per second per tenant (else 429); 0 disables it.
    #[arg(long, env = "RETEN_TENANT_RATE_LIMIT", default_value_t = 1_000.0)]
    pub tenant_rate_limit: f64,
    /// Requests a tenant may send at once above its rate.
    #[arg(long, env = "RETEN_TENANT_BURST", default_value_t = 2_000.0)]
    pub tenant_burst: f64,
}

impl LimitArgs {
    /// The limiter's settings.
    pub fn settings(&self) -> crate::api::limits::LimitSettings {
        crate::api::limits::LimitSettings {
            max_header_bytes: self.max_header_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            max_in_flight: self.max_in_flight.max(1),
            tenant_rate: self.tenant_rate_limit.max(0.0),
            tenant_burst: self.tenant_burst.max(1.0),
        }
    }
}

/// How logs are written.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// `text` or `json`. The level comes from RUST_LOG.
    #[arg(long, env = "RETEN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The settings of `token`.
#[derive(Clone, Debug, Args)]
pub struct TokenArgs {
    /// The caller's name (`sub`).
    #[arg(long)]
    pub sub: String,
    /// A tenant the token may act for (repeatable).
    #[arg(long = "tenant")]
    pub tenants: Vec<uuid::Uuid>,
    /// An explicit permission (repeatable), e.g. CREATE_ACTIVITY.
    #[arg(long = "permission")]
    pub permissions: Vec<String>,
    /// A role (repeatable): SUPER_ADMIN, ADMIN, FDE or VIEWER.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// How long the token lives: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// Parses `90s`, `30m`, `1h`, `7d`.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let (n, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = n.parse().map_err(|_| format!("'{raw}' is not a duration like 30m or 1h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return Err(format!("'{raw}' has an unknown unit; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(super::parse_ttl("1h").unwrap().as_secs(), 3_600);
        assert_eq!(super::parse_ttl("90s").unwrap().as_secs(), 90);
        assert!(super::parse_ttl("1y").is_err());
    }
}
