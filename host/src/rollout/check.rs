//! A candidate set checked before anything is written: compiled and checked
//! as a reload would (see [`crate::policy::candidate`]), then, when asked,
//! its fixtures (`tests/`) run against the snapshot it would serve.

use std::sync::Arc;

use anyhow::Context as _;

use super::RolloutError;
use crate::domain::TenantId;
use crate::domain::validation::FieldError;
use crate::policy::Registry;
use crate::policy::candidate::Candidate;
use crate::policy::fixtures;
use crate::policy::loader::{LoadError, Scope};
use crate::policy::set::FileSet;

/// Checks `set` as the `scope` layer's whole set; `Err` lists every problem
/// by path (relative to the layer's folder when the file is the layer's).
pub async fn check(registry: &Arc<Registry>, scope: Scope, set: &FileSet, run_tests: bool) -> Result<(), RolloutError> {
    let candidate = load(registry, scope, set).await?;
    if run_tests {
        let failures = run_fixtures(registry, &candidate, set).await;
        if !failures.is_empty() {
            return Err(RolloutError::invalid(failures));
        }
    }
    Ok(())
}

/// Loads `set` as the `scope` layer's whole set, aside; `Err` lists every
/// problem by path, as [`check`] does.
pub async fn load(registry: &Arc<Registry>, scope: Scope, set: &FileSet) -> Result<Candidate, RolloutError> {
    let candidate = tokio::task::spawn_blocking({
        let (registry, set) = (Arc::clone(registry), set.clone());
        move || registry.try_set(scope, &set)
    })
    .await
    .context("the policy check panicked")??;
    let problems: Vec<FieldError> = candidate.errors.iter().map(|e| problem(scope, e)).collect();
    if !problems.is_empty() {
        return Err(RolloutError::invalid(problems));
    }
    Ok(candidate)
}

/// A load error as a problem of the change, named by the changeset's path
/// when it is a file of the layer.
fn problem(scope: Scope, e: &LoadError) -> FieldError {
    let prefix = format!("{}/", scope.rel_dir().to_string_lossy().replace('\\', "/"));
    let field = e.path.strip_prefix(&prefix).unwrap_or(&e.path).to_owned();
    FieldError { field, message: e.message.clone(), line: e.line, column: e.column }
}

/// Every fixture of the set that fails against the candidate's snapshot,
/// with what went wrong.
async fn run_fixtures(registry: &Registry, candidate: &Candidate, set: &FileSet) -> Vec<FieldError> {
    let snapshot = registry.candidate_snapshot(candidate);
    let tenant = match candidate.scope {
        Scope::Tenant(id) => id,
        // The global fixtures run as a tenant without a folder of its own.
        Scope::Global => TenantId::new(),
    };
    let mut out = Vec::new();
    for (path, bytes) in set.iter().filter(|(p, _)| p.starts_with("tests/")) {
        let failures = match fixtures::parse_fixture(path, bytes) {
            Ok(fixture) => fixtures::run_fixture(&fixture, tenant, &snapshot).await,
            Err(e) => vec![format!("the fixture cannot be read: {e:#}")],
        };
        if !failures.is_empty() {
            out.push(FieldError::new(path.clone(), format!("the fixture fails: {}", failures.join("; "))));
        }
    }
    out
}
