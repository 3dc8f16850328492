//! Trying a candidate in the small, for authors: one file checked in its
//! set, the set's fixtures run with their traces, and the snapshot a
//! candidate would serve (to decide one stored input again). Nothing here
//! writes anything.

use std::sync::Arc;

use super::changeset::Changeset;
use super::{Rollout, RolloutError, check};
use crate::domain::TenantId;
use crate::domain::validation::FieldError;
use crate::policy::TenantSnapshot;
use crate::policy::fixtures;
use crate::policy::loader::Scope;
use crate::resolve::Trace;

/// One fixture's run.
#[derive(Debug)]
pub struct FixtureRun {
    /// Its file name under `tests/`.
    pub name: String,
    /// What did not go as it expects (empty: it passed).
    pub failures: Vec<String>,
    /// The resolution's trace, when it got that far.
    pub trace: Option<Trace>,
}

impl Rollout {
    /// Checks one file as it would be in the layer's set (the live set with
    /// this file written): every problem of the resulting set, by path.
    pub async fn check_file(&self, scope: Scope, path: &str, bytes: Vec<u8>) -> Result<Vec<FieldError>, RolloutError> {
        let change = Changeset::write_one(path.to_owned(), bytes);
        let before = self.read_set(scope).await?;
        match check::load(&self.registry, scope, &change.apply_to(&before)).await {
            Ok(_) => Ok(Vec::new()),
            Err(RolloutError::Invalid { problems, .. }) => Ok(problems),
            Err(e) => Err(e),
        }
    }

    /// Runs the fixtures (`tests/`) of the tenant's set, or of the live set
    /// with `change`, against the snapshot that set would serve.
    pub async fn run_tests(&self, tenant: TenantId, change: &Changeset) -> Result<Vec<FixtureRun>, RolloutError> {
        let scope = Scope::Tenant(tenant);
        let (_, files, candidate) = self.candidate(scope, change).await?;
        let snapshot = self.registry.candidate_snapshot(&candidate);
        let mut out = Vec::new();
        for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("tests/")) {
            let name = path.trim_start_matches("tests/").to_owned();
            let (failures, trace) = match fixtures::parse_fixture(path, bytes) {
                Ok(fixture) => fixtures::run_fixture_traced(&fixture, tenant, &snapshot).await,
                Err(e) => (vec![format!("the fixture cannot be read: {e:#}")], None),
            };
            out.push(FixtureRun { name, failures, trace });
        }
        Ok(out)
    }

    /// The snapshot the tenant serves, or the one it would serve with
    /// `change` (checked whole first: a problem is a 422).
    pub async fn snapshot_with(
        &self,
        tenant: TenantId,
        change: Option<&Changeset>,
    ) -> Result<Arc<TenantSnapshot>, RolloutError> {
        match change {
            None => Ok(self.registry.snapshot(tenant)),
            Some(change) => {
                let (_, _, candidate) = self.candidate(Scope::Tenant(tenant), change).await?;
                Ok(Arc::new(self.registry.candidate_snapshot(&candidate)))
            }
        }
    }
}
