//! Records the sets that start serving from the files themselves — a file
//! edit seen by the watcher, a rescan, a notification, and the sets found at
//! start-up — as `FILESYSTEM` revisions, author `filesystem`.
//!
//! Invariant: a set equal to the latest revision records nothing. The
//! comparison runs under the layer's revision lock, so the API's own writes
//! (recorded by the API, which holds the lock until it commits), and one
//! edit seen by every replica, make one revision. What is recorded is the
//! set serving when the record is made, read back from disk and checked
//! against its sha256; a set that changed meanwhile is left to the next
//! event.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::apply::missing_contents;
use super::{owner, payload};
use crate::domain::revision::{FILESYSTEM_AUTHOR, Manifest, RevisionSource, diff, set_digest};
use crate::policy::Registry;
use crate::policy::loader::Scope;
use crate::store::revisions::{self, NewRevision};

/// How often sets that could not be recorded (Postgres down) are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Starts recording: first every layer that serves now, then every set that
/// starts serving.
pub fn spawn(pool: PgPool, registry: Arc<Registry>) -> JoinHandle<()> {
    tokio::spawn(run(pool, registry))
}

async fn run(pool: PgPool, registry: Arc<Registry>) {
    let mut sets = registry.subscribe_sets();
    let mut pending = record_all(&pool, &registry, every_layer(&registry), Found::AtStartUp).await;
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        pending = record_all(&pool, &registry, pending, Found::Later).await;
        tokio::select! {
            event = sets.recv() => match event {
                Ok(set) => {
                    pending.insert(set.scope);
                }
                Err(RecvError::Lagged(_)) => pending.extend(every_layer(&registry)),
                Err(RecvError::Closed) => return,
            },
            _ = retry.tick(), if !pending.is_empty() => {}
        }
    }
}

/// When a set was found: the first revision of a layer found at start-up
/// says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    AtStartUp,
    Later,
}

/// Records each layer's serving set; the layers that failed, to retry.
async fn record_all(pool: &PgPool, registry: &Registry, scopes: BTreeSet<Scope>, found: Found) -> BTreeSet<Scope> {
    let mut failed = BTreeSet::new();
    for scope in scopes {
        if let Err(e) = record(pool, registry, scope, found).await {
            tracing::warn!(scope = %payload(scope), error = %e, "failed to record a policy revision; retrying");
            failed.insert(scope);
        }
    }
    failed
}

/// The global layer and every tenant with a folder.
fn every_layer(registry: &Registry) -> BTreeSet<Scope> {
    let state = registry.state();
    std::iter::once(Scope::Global).chain(state.tenants.keys().map(|id| Scope::Tenant(*id))).collect()
}

/// Records the layer's serving set unless it is the latest revision already.
async fn record(pool: &PgPool, registry: &Registry, scope: Scope, found: Found) -> Result<(), sqlx::Error> {
    let state = registry.state();
    let manifest: Manifest = match state.layer(scope) {
        // A layer that does not load whole serves its last valid set, which
        // was recorded when it started serving (or is a partial set at
        // start-up, which is no set at all).
        Some(layer) if !layer.errors.is_empty() => return Ok(()),
        Some(layer) => layer.manifest.clone(),
        None => Manifest::new(),
    };
    let digest = set_digest(&manifest);
    let tenant = owner(scope);
    let mut tx = pool.begin().await?;
    revisions::lock(&mut tx, tenant).await?;
    let head = revisions::head(&mut tx, tenant).await?;
    if head.is_none() && manifest.is_empty() {
        // A layer that never had a file: a new folder that is still empty
        // (a writer made the directory and has not written into it yet)
        // serves what no folder serves. Its first revision is its first file.
        return Ok(());
    }
    if head.as_ref().is_some_and(|h| h.set_sha256 == digest) {
        tracing::info!(scope = %payload(scope), set_sha256 = %digest, recorded = false, "policy set checked");
        return Ok(());
    }
    let layer_dir = registry.root().join(scope.rel_dir());
    if !folder_holds(&layer_dir, scope, &manifest) {
        // A file was added, changed or removed since this set was loaded (a
        // replica's start-up set read before an edit another replica has
        // recorded already): the reload that sees the folder records it.
        tracing::debug!(scope = %payload(scope), "the folder no longer holds the serving set");
        return Ok(());
    }
    let (contents, complete) =
        missing_contents(&mut tx, scope, &manifest, |path| std::fs::read(layer_dir.join(path)).ok()).await?;
    if !complete {
        // The files changed again since this set was loaded: the reload
        // that saw it will send its own set.
        tracing::debug!(scope = %payload(scope), "the policy set changed while it was being recorded");
        return Ok(());
    }
    let previous = match &head {
        Some(h) => revisions::manifest(&mut tx, tenant, h.revision).await?,
        None => Manifest::new(),
    };
    let changes = diff(&previous, &manifest);
    let message = (head.is_none() && found == Found::AtStartUp).then_some("the set found at start-up");
    let revision = NewRevision {
        tenant,
        author: FILESYSTEM_AUTHOR,
        source: RevisionSource::Filesystem,
        message,
        set: &manifest,
        set_sha256: &digest,
        changes: &changes,
        contents: &contents,
    };
    let number = revisions::insert(&mut tx, &revision).await?;
    tx.commit().await?;
    tracing::info!(scope = %payload(scope), set_sha256 = %digest, revision = number, recorded = true, "policy set checked");
    Ok(())
}

/// Whether a layer's folder holds exactly `manifest` now: the same files,
/// with the same contents, and no other.
fn folder_holds(dir: &std::path::Path, scope: Scope, manifest: &Manifest) -> bool {
    crate::policy::set::read_folder(dir, scope).is_ok_and(|set| crate::policy::set::manifest(&set) == *manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that loaded a tenant's folder before a file was written
    /// into it must not record its older set once another replica has
    /// recorded the new one (seen in `it replicas` as a DELETED revision
    /// between two ADDED ones).
    #[test]
    fn a_set_the_folder_no_longer_holds_is_not_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope::Tenant(crate::domain::TenantId::new());
        assert!(folder_holds(dir.path(), scope, &Manifest::new()), "an empty folder holds the empty set");
        std::fs::create_dir_all(dir.path().join("criteria")).unwrap();
        std::fs::write(dir.path().join("criteria/pick.rhai"), "fn resolve(input) { [] }").unwrap();
        assert!(!folder_holds(dir.path(), scope, &Manifest::new()), "a file was added since");
        let set = crate::policy::set::read_folder(dir.path(), scope).unwrap();
        let manifest = crate::policy::set::manifest(&set);
        assert!(folder_holds(dir.path(), scope, &manifest));
        std::fs::write(dir.path().join("criteria/pick.rhai"), "fn resolve(input) { [1] }").unwrap();
        assert!(!folder_holds(dir.path(), scope, &manifest), "a file changed since");
        std::fs::write(dir.path().join("criteria/pick.rhai"), "fn resolve(input) { [] }").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not part of a set").unwrap();
        assert!(folder_holds(dir.path(), scope, &manifest), "files outside the set do not count");
    }
}
