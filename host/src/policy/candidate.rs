//! Trying a layer's set before it serves: compiled and checked exactly as a
//! reload would, without touching the policies directory.
//!
//! The candidate set is written to a scratch directory laid out like the
//! policies directory and loaded there with the registry's own engines and
//! compile cache, so the checks are the reload's own (compile, two engines
//! for one policy, references), and the reload that follows a write finds
//! every policy compiled. A tenant's set is checked against the global layer
//! that serves; a global set against itself and against every tenant that
//! serves on it.

use std::sync::Arc;

use anyhow::Context as _;

use super::Registry;
use super::loader::{self, Layer, LoadContext, LoadError, Scope};
use super::registry::merge;
use super::set::FileSet;
use super::snapshot::TenantSnapshot;

/// A candidate set, loaded.
#[derive(Debug)]
pub struct Candidate {
    pub scope: Scope,
    /// The layer as the candidate set loads.
    pub layer: Layer,
    /// Everything that keeps it from serving as a whole: its own errors and,
    /// for the global layer, the tenants it would break.
    pub errors: Vec<LoadError>,
}

impl Registry {
    /// Loads `files` as the `scope` layer's whole set, aside. Blocking:
    /// compiles on this thread.
    pub fn try_set(&self, scope: Scope, files: &FileSet) -> anyhow::Result<Candidate> {
        let scratch = tempfile::Builder::new().prefix("reten-candidate-").tempdir()?;
        let dir = scratch.path().join(scope.rel_dir());
        for (path, bytes) in files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, bytes).with_context(|| format!("failed to stage {path}"))?;
        }
        std::fs::create_dir_all(&dir)?;
        let state = self.state();
        let global = match scope {
            Scope::Global => None,
            Scope::Tenant(_) => Some(&*state.global),
        };
        let ctx = LoadContext {
            root: scratch.path(),
            engines: &self.engines,
            cache: &self.cache,
            calls: &self.options.calls,
            global,
        };
        let layer = loader::load_layer(&ctx, scope, None);
        let mut errors = layer.errors.clone();
        if scope == Scope::Global {
            errors.extend(self.tenants_broken_by_candidate(&state.tenants, &layer));
        }
        Ok(Candidate { scope, layer, errors })
    }

    /// The errors each serving tenant would newly have on `global`.
    fn tenants_broken_by_candidate(
        &self,
        tenants: &std::collections::BTreeMap<crate::domain::TenantId, Arc<Layer>>,
        global: &Layer,
    ) -> Vec<LoadError> {
        let ctx = self.context(Some(global));
        let mut out = Vec::new();
        for (id, serving) in tenants {
            let loaded = loader::load_layer(&ctx, Scope::Tenant(*id), Some(serving));
            out.extend(
                loaded
                    .errors
                    .into_iter()
                    .filter(|e| !serving.errors.iter().any(|old| old.path == e.path && old.message == e.message)),
            );
        }
        out
    }

    /// The snapshot a tenant would serve with a candidate layer (a global
    /// candidate: the snapshot of a tenant without a folder).
    pub fn candidate_snapshot(&self, candidate: &Candidate) -> TenantSnapshot {
        let state = self.state();
        let limits = &self.options.limits;
        match candidate.scope {
            Scope::Global => merge(state.generation, &candidate.layer, None, limits),
            Scope::Tenant(_) => merge(state.generation, &state.global, Some(&candidate.layer), limits),
        }
    }
}
