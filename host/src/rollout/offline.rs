//! `reten policy replay`: the replay of [`super::replay`] from the command
//! line, over `DATABASE_URL`, with no server.
//!
//! The live set is the tenant's latest recorded revision (the set that
//! served last); the candidate is the folder given. Both are loaded in a
//! scratch policies directory over the global layer (`--global`, else
//! `$RETEN_POLICIES_DIR/global`, else the `global/` beside the tenant's
//! folder), then decide on the stored inputs as the API's replay does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};

use super::replay::{Report, Sides, run};
use crate::domain::TenantId;
use crate::domain::revision::{ChangedFile, diff};
use crate::policy::Registry;
use crate::policy::loader::Scope;
use crate::policy::registry::RegistryOptions;
use crate::policy::set::{self, FileSet};
use crate::store::decision_inputs::{self, Window};
use crate::store::revisions;

/// What to replay.
#[derive(Debug)]
pub struct OfflineReplay {
    /// The candidate: a folder laid out like a tenant's.
    pub dir: PathBuf,
    /// The tenant (default: the folder's name).
    pub tenant: Option<TenantId>,
    /// The global layer's folder.
    pub global: Option<PathBuf>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: i64,
    /// Inputs recorded before this are past the retention.
    pub not_before: DateTime<Utc>,
}

/// The outcome of an offline replay.
#[derive(Debug)]
pub struct OfflineReport {
    pub tenant: TenantId,
    /// The revision the live set is (`None`: no revision recorded, the
    /// global layer alone).
    pub live_revision: Option<i64>,
    /// What the candidate changes against it.
    pub files: Vec<ChangedFile>,
    pub total: i64,
    pub report: Report,
}

/// Runs a replay; `progress` hears `(evaluated, total)` as it goes.
pub async fn replay(
    database_url: &str,
    o: &OfflineReplay,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<OfflineReport> {
    let dir = std::fs::canonicalize(&o.dir).with_context(|| format!("{} does not exist", o.dir.display()))?;
    let tenant = match o.tenant {
        Some(t) => t,
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| TenantId::parse(n).ok())
            .with_context(|| format!("{} is not named after a tenant id; pass --tenant", dir.display()))?,
    };
    let scope = Scope::Tenant(tenant);
    let global = global_dir(&dir, o.global.as_deref())?;
    let pool =
        crate::store::connect(database_url, &crate::store::PoolSettings { max_connections: 2, ..Default::default() })
            .await
            .context("failed to reach DATABASE_URL")?;
    let (live_revision, live) = latest_set(&pool, tenant).await?;
    let candidate_files = set::read_folder(&dir, scope).with_context(|| format!("failed to read {}", dir.display()))?;
    let global_files =
        set::read_folder(&global, Scope::Global).with_context(|| format!("failed to read {}", global.display()))?;
    let files = diff(&set::manifest(&live), &set::manifest(&candidate_files));

    let scratch = tempfile::Builder::new().prefix("reten-replay-").tempdir()?;
    write_set(&scratch.path().join("global"), &global_files)?;
    write_set(&scratch.path().join(scope.rel_dir()), &live)?;
    let registry = Arc::new(Registry::load(scratch.path(), RegistryOptions::default())?);
    let candidate = registry.try_set(scope, &candidate_files)?;
    if !candidate.errors.is_empty() {
        let listed: Vec<String> = candidate.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
        bail!("the candidate does not load, so nothing was replayed:\n  {}", listed.join("\n  "));
    }
    let sides = Sides::new(&registry.snapshot(tenant), &registry.candidate_snapshot(&candidate));
    let window = Window { since: o.since, until: o.until, limit: o.limit, not_before: o.not_before };
    let total = decision_inputs::count_window(&pool, tenant, &window).await?;
    let mut report = Report::default();
    let all = u64::try_from(total).unwrap_or(0);
    progress(0, all);
    run(&pool, tenant, &window, &sides, &mut report, |r| {
        progress(r.evaluated, all);
        async { true }
    })
    .await?;
    progress(report.evaluated, all);
    pool.close().await;
    Ok(OfflineReport { tenant, live_revision, files, total, report })
}

/// The global layer's folder: `--global`, else `$RETEN_POLICIES_DIR/global`,
/// else the `global/` of the policies directory the tenant's folder is in.
fn global_dir(tenant_dir: &Path, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(g) = given {
        return Ok(g.to_owned());
    }
    if let Some(root) = std::env::var_os("RETEN_POLICIES_DIR") {
        let g = PathBuf::from(root).join("global");
        if g.is_dir() {
            return Ok(g);
        }
    }
    let beside = tenant_dir.parent().and_then(Path::parent).map(|root| root.join("global"));
    match beside {
        Some(g) if g.is_dir() => Ok(g),
        _ => bail!("no global layer found: pass --global <dir> or set RETEN_POLICIES_DIR"),
    }
}

/// The tenant's latest recorded revision and its set.
async fn latest_set(pool: &sqlx::PgPool, tenant: TenantId) -> anyhow::Result<(Option<i64>, FileSet)> {
    let mut conn = pool.acquire().await?;
    let Some(head) = revisions::head(&mut conn, tenant).await? else { return Ok((None, FileSet::new())) };
    let set = revisions::contents(pool, tenant, head.revision).await?.into_iter().map(|(p, _, c)| (p, c)).collect();
    Ok((Some(head.revision), set))
}

fn write_set(dir: &Path, files: &FileSet) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)?;
    }
    Ok(())
}
