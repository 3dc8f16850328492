//! The `reten` binary: parse the command line, then serve, migrate or mint.

use std::process::ExitCode;

use clap::Parser;
use reten_host::api::auth::{self, Claims};
use reten_host::config::{Cli, Command, PolicyCommand, TokenArgs};
use reten_host::startup::{App, shutdown_signal};
use reten_host::{store, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            telemetry::init(&args.log.log_format);
            serve(args).await
        }
        Command::Migrate(args) => {
            telemetry::init("text");
            migrate(args).await
        }
        Command::Token(args) => token(&args),
        Command::Policy(PolicyCommand::Check { path }) => policy_check(&path),
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
        aud: settings.audience,
        tenant_ids: args.tenants.clone(),
        roles: args.roles.clone(),
        permissions: args.permissions.clone(),
    };
    println!("{}", auth::mint(&secret, &claims)?);
    Ok(())
}

fn policy_check(path: &std::path::Path) -> anyhow::Result<()> {
    let results = reten_host::policy::check::check(path)?;
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
