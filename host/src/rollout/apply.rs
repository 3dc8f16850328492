//! The write path of a change, in the order DESIGN.md gives it: under the
//! layer's revision lock, compare the base revision, build the candidate
//! set from the files on disk and the change, check it whole, then record
//! the revision, write the files and serve them in one swap, and notify
//! every replica when the transaction commits.
//!
//! Invariant: a change that fails leaves nothing behind. Nothing is written
//! before the whole set has passed; a write, a reload or a commit that fails
//! afterwards puts the previous files back (and the revision is rolled back
//! with its transaction).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgConnection;

use super::changeset::{Changeset, writes_between};
use super::{Rollout, RolloutError, check, owner, payload};
use crate::domain::revision::{ChangedFile, Manifest, RevisionSource, diff, set_digest};
use crate::domain::validation::FieldError;
use crate::policy::loader::Scope;
use crate::policy::set::{self, FileSet};
use crate::store::revisions::{self, Head, NewRevision};

/// What a change did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The revision serving now: the new one, or the one that served when
    /// nothing changed; `None` for a dry run.
    pub revision: Option<i64>,
    /// The registry generation serving now.
    pub generation: u64,
    /// What the change did (or, for a dry run, would do) to the files.
    pub files: Vec<ChangedFile>,
}

/// Who makes a change, and how.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// The JWT `sub`, or `api-key:<id>`.
    pub author: &'a str,
    pub source: RevisionSource,
}

impl Rollout {
    /// Applies a change to a layer, or refuses it with nothing written.
    #[tracing::instrument(skip_all, fields(scope = %payload(scope)))]
    pub async fn apply(&self, scope: Scope, change: &Changeset, origin: Origin<'_>) -> Result<Applied, RolloutError> {
        if self.read_only() && !change.options.dry_run {
            return Err(RolloutError::ReadOnly);
        }
        let mut tx = self.pool.begin().await?;
        if scope != Scope::Global {
            // A tenant's set is checked against the global layer: no global
            // change may land meanwhile. Global first, then the tenant: one
            // order everywhere, so no deadlock.
            revisions::lock_shared(&mut tx, owner(Scope::Global)).await?;
        }
        revisions::lock(&mut tx, owner(scope)).await?;
        let head = revisions::head(&mut tx, owner(scope)).await?;
        let serving = head.as_ref().map_or(0, |h| h.revision);
        if let Some(base) = change.options.base_revision
            && base != serving
        {
            return Err(RolloutError::Conflict(format!(
                "base_revision {base} is not the revision serving ({serving}); nothing was written: \
                 read revision {serving} and make the change against it"
            )));
        }
        let before = self.read_set(scope).await?;
        let missing = change.missing_deletes(&before);
        if !missing.is_empty() {
            return Err(RolloutError::invalid(missing));
        }
        let after = change.apply_to(&before);
        let files = diff(&set::manifest(&before), &set::manifest(&after));
        self.refuse_unfixable_files(scope)?;
        check::check(&self.registry, scope, &after, change.options.run_tests).await?;
        if change.options.dry_run || files.is_empty() {
            let revision = if change.options.dry_run { None } else { head.map(|h| h.revision) };
            return Ok(Applied { revision, generation: self.registry.generation(), files });
        }
        let message = change.options.message.as_deref();
        let revision = record(&mut tx, scope, head, &after, origin, message).await?;
        let generation = self.write(scope, &before, &after).await?;
        let committed = async {
            revisions::notify(&mut tx, &payload(scope)).await?;
            tx.commit().await
        };
        if let Err(e) = committed.await {
            self.undo(scope, &before, &after).await;
            return Err(e.into());
        }
        tracing::info!(revision, generation, author = origin.author, files = files.len(), "policy change applied");
        Ok(Applied { revision: Some(revision), generation, files })
    }

    /// The layer's set as it is on disk.
    pub(super) async fn read_set(&self, scope: Scope) -> Result<FileSet, RolloutError> {
        let root = self.registry.root().to_owned();
        let set = tokio::task::spawn_blocking(move || set::read(&root, scope))
            .await
            .context("reading the policy set panicked")?
            .context("failed to read the policy set")?;
        Ok(set)
    }

    /// Refuses every change while the layer's folder holds a file that no
    /// changeset can name (a policy with a bad name): the set would not load
    /// whole after the change either.
    fn refuse_unfixable_files(&self, scope: Scope) -> Result<(), RolloutError> {
        let state = self.registry.state();
        let Some(layer) = state.layer(scope) else { return Ok(()) };
        let prefix = format!("{}/", scope.rel_dir().to_string_lossy().replace('\\', "/"));
        let problems: Vec<FieldError> = layer
            .errors
            .iter()
            .filter(|e| e.path.strip_prefix(&prefix).is_some_and(|p| set::check_path(scope, p).is_err()))
            .map(|e| FieldError::new(e.path.clone(), format!("{} (fix or remove it in the directory)", e.message)))
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(RolloutError::invalid(problems)) }
    }

    /// Writes `after` over `before` and serves it in one swap; on any
    /// failure, puts `before` back.
    async fn write(&self, scope: Scope, before: &FileSet, after: &FileSet) -> Result<u64, RolloutError> {
        let writes = writes_between(before, after);
        let expected = set::manifest(after);
        let registry = Arc::clone(&self.registry);
        let outcome = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let generation = registry.apply(scope, &writes).context("failed to write the policy files")?;
            let state = registry.state();
            let layer = state.layer(scope);
            if !layer.is_some_and(|l| l.errors.is_empty() && l.manifest == expected) {
                let errors: Vec<String> =
                    layer.iter().flat_map(|l| l.errors.iter()).map(|e| e.message.clone()).collect();
                let serving: Vec<&String> = layer.iter().flat_map(|l| l.manifest.keys()).collect();
                let checked: Vec<&String> = expected.keys().collect();
                anyhow::bail!(
                    "the written set did not serve as checked (serving {serving:?}, checked {checked:?}): {}",
                    errors.join("; ")
                );
            }
            Ok(generation)
        })
        .await
        .context("writing the policy files panicked")
        .and_then(|r| r);
        match outcome {
            Ok(generation) => Ok(generation),
            Err(e) => {
                self.undo(scope, before, after).await;
                Err(RolloutError::Internal(e))
            }
        }
    }

    /// Puts `before` back where `after` was written.
    async fn undo(&self, scope: Scope, before: &FileSet, after: &FileSet) {
        let writes = writes_between(after, before);
        let registry = Arc::clone(&self.registry);
        match tokio::task::spawn_blocking(move || registry.apply(scope, &writes)).await {
            Ok(Ok(_)) => tracing::warn!("a policy change failed after writing; the previous files are back"),
            Ok(Err(e)) => tracing::error!(error = %e, "a policy change failed and its files could not be put back"),
            Err(e) => tracing::error!(error = %e, "putting back the files of a failed policy change panicked"),
        }
    }
}

/// Records `after` as the next revision (the caller holds the lock).
async fn record(
    tx: &mut PgConnection,
    scope: Scope,
    head: Option<Head>,
    after: &FileSet,
    origin: Origin<'_>,
    message: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let tenant = owner(scope);
    let manifest = set::manifest(after);
    let previous = match &head {
        Some(h) => revisions::manifest(tx, tenant, h.revision).await?,
        None => Manifest::new(),
    };
    let changes = diff(&previous, &manifest);
    let (contents, _) = missing_contents(tx, scope, &manifest, |path| after.get(path).cloned()).await?;
    let revision = NewRevision {
        tenant,
        author: origin.author,
        source: origin.source,
        message,
        set: &manifest,
        set_sha256: &set_digest(&manifest),
        changes: &changes,
        contents: &contents,
    };
    revisions::insert(tx, &revision).await
}

/// The contents of `manifest` not stored yet, by sha256, read with `bytes_of`
/// (by path), and whether every one could be read. A file whose bytes are
/// gone or no longer match its sha256 is left out; the caller decides
/// whether that is fatal.
pub(super) async fn missing_contents(
    tx: &mut PgConnection,
    scope: Scope,
    manifest: &Manifest,
    bytes_of: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(Vec<(String, Vec<u8>)>, bool), sqlx::Error> {
    let shas: Vec<String> = manifest.values().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let stored: BTreeSet<String> = revisions::stored(tx, owner(scope), &shas).await?.into_iter().collect();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut complete = true;
    for (path, sha) in manifest {
        if stored.contains(sha) || out.iter().any(|(s, _)| s == sha) {
            continue;
        }
        match bytes_of(path).filter(|b| &crate::policy::loader::sha256_hex(b) == sha) {
            Some(bytes) => out.push((sha.clone(), bytes)),
            None => complete = false,
        }
    }
    Ok((out, complete))
}
