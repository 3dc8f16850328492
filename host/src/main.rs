//! The `reten` binary: parse the command line, then serve, migrate or mint.

use std::process::ExitCode;

use clap::Parser;
use reten_host::api::auth::{self, Claims};
use reten_host::config::{Cli, Command, PolicyCommand, TokenArgs};
use reten_host::startup::{App, shutdown_signal};
use reten_host::{store, telemetry};

mod cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => {
            telemetry::init(&args.log.log_format);
            serve(*args).await
        }
        Command::Migrate(args) => {
            telemetry::init("text");
            migrate(args).await
        }
        Command::Token(args) => token(&args),
        Command::Policy(PolicyCommand::Check { paths, global }) => policy_check(&paths, global.as_deref()),
        Command::Policy(PolicyCommand::Test { path, verbose, run, global }) => {
            policy_test(&path, verbose, run.as_deref(), global.as_deref()).await
        }
        Command::Policy(PolicyCommand::Eval(args)) => cli::eval::run(&args).await,
        Command::Policy(PolicyCommand::Replay(args)) => cli::replay::run(&args).await,
        Command::Policy(PolicyCommand::New(args)) => cli::new::run(&args),
        Command::Policy(PolicyCommand::Build(args)) => cli::build::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: reten_host::config::ServeArgs) -> anyhow::Result<()> {
    let app = App::build(&args).await?;
    if let Some(banner) = &app.demo_banner {
        println!("{banner}");
    }
    app.run_until(shutdown_signal()).await
}

async fn migrate(args: reten_host::config::DatabaseArgs) -> anyhow::Result<()> {
    store::ensure_database(&args.database_url).await?;
    let pool = store::connect(&args.database_url, &args.pool()).await?;
    store::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let settings = args.jwt.settings()?;
    let secret = settings.secret.ok_or_else(|| anyhow::anyhow!("RETEN_JWT_SECRET must be set to mint a token"))?;
    if secret.len() < auth::MIN_SECRET_BYTES {
        anyhow::bail!("RETEN_JWT_SECRET must be at least {} bytes long", auth::MIN_SECRET_BYTES);
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: args.sub.clone(),
        exp: now + i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        nbf: None,
        iat: Some(now),
        iss: settings.issuer,
        aud: settings.audience.map(serde_json::Value::String),
        tenant_ids: args.tenants.clone(),
        roles: args.roles.clone(),
        permissions: args.permissions.clone(),
    };
    println!("{}", auth::mint(&secret, &claims)?);
    Ok(())
}

fn policy_check(paths: &[std::path::PathBuf], global: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for path in paths {
        results.extend(reten_host::policy::check::check(path, global)?);
    }
    let mut failed = 0;
    for r in &results {
        match &r.outcome {
            Ok(summary) => println!("ok     {}  {summary}", r.path),
            Err(e) => {
                failed += 1;
                let position = match (e.line, e.column) {
                    (Some(l), Some(c)) => format!(":{l}:{c}"),
                    (Some(l), None) => format!(":{l}"),
                    _ => String::new(),
                };
                println!("error  {}{position}  {}", r.path, e.message);
            }
        }
    }
    println!("{} checked, {failed} failed", results.len());
    if failed > 0 {
        anyhow::bail!("{failed} file(s) failed the check");
    }
    Ok(())
}

async fn policy_test(
    path: &std::path::Path,
    verbose: u8,
    pattern: Option<&str>,
    global: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let run = reten_host::policy::fixtures::run(path, global, pattern).await?;
    for e in &run.load_errors {
        println!("warn  policy load error: {e}");
    }
    let results = &run.results;
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    for r in results {
        let about = r.description.as_deref().map(|d| format!("  ({d})")).unwrap_or_default();
        let passed = r.failures.is_empty();
        println!("{}  {}{about}", if passed { "PASS" } else { "FAIL" }, r.name);
        for f in &r.failures {
            println!("        {f}");
        }
        let show = if passed { verbose >= 2 } else { verbose >= 1 };
        if let (true, Some(trace)) = (show, &r.trace) {
            print!("{}", cli::trace::render(trace, 8));
        }
    }
    let skipped =
        if run.filtered_out > 0 { format!(", {} not selected by --run", run.filtered_out) } else { String::new() };
    println!(
        "{} fixtures: {} passed, {failed} failed{skipped} (global layer: {})",
        results.len(),
        results.len() - failed,
        run.global
    );
    if results.is_empty() {
        anyhow::bail!("no fixtures ran from {}", path.display());
    }
    if failed > 0 {
        if verbose == 0 {
            println!("(run with -v to see each failing fixture's trace)");
        }
        anyhow::bail!("{failed} fixture(s) failed");
    }
    Ok(())
}
