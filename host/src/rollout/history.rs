//! A layer's revision history: listing it, reading one revision whole,
//! restoring one, and telling which revision serves.

use super::apply::{Applied, Origin};
use super::changeset::{ChangeOptions, Changeset};
use super::{Rollout, RolloutError, owner};
use crate::domain::revision::{ChangedFile, RevisionSource, set_digest};
use crate::policy::loader::Scope;
use crate::policy::set::FileSet;
use crate::store::Page;
use crate::store::revisions::{self, RevisionRow};

/// A revision with what changed in it.
#[derive(Clone, Debug)]
pub struct Revision {
    pub row: RevisionRow,
    /// What changed against the previous revision, by path.
    pub files: Vec<ChangedFile>,
}

/// One file of a revision's set, with its bytes.
#[derive(Clone, Debug)]
pub struct SetFile {
    /// Relative to the layer's folder.
    pub path: String,
    pub sha256: String,
    /// The file's bytes.
    pub content: Vec<u8>,
}

impl Rollout {
    /// One page of a layer's revisions, newest first, and how many there are.
    pub async fn revisions(&self, scope: Scope, page: Page) -> Result<(Vec<Revision>, i64), sqlx::Error> {
        let tenant = owner(scope);
        let (rows, total) = revisions::list(&self.pool, tenant, page).await?;
        let numbers: Vec<i64> = rows.iter().map(|r| r.revision).collect();
        let mut changes = revisions::changes(&self.pool, tenant, &numbers).await?;
        let list = rows
            .into_iter()
            .map(|row| {
                let files = changes.extract_if(.., |(n, _)| *n == row.revision).map(|(_, f)| f).collect();
                Revision { row, files }
            })
            .collect();
        Ok((list, total))
    }

    /// One revision of a layer, with its whole set; `None` when it does not
    /// exist (another tenant's is the same as a missing one).
    pub async fn revision(&self, scope: Scope, n: i64) -> Result<Option<(Revision, Vec<SetFile>)>, sqlx::Error> {
        let tenant = owner(scope);
        let Some(row) = revisions::get(&self.pool, tenant, n).await? else { return Ok(None) };
        let files = revisions::changes(&self.pool, tenant, &[n]).await?.into_iter().map(|(_, f)| f).collect();
        let set = revisions::contents(&self.pool, tenant, n)
            .await?
            .into_iter()
            .map(|(path, sha256, content)| SetFile { path, sha256, content })
            .collect();
        Ok(Some((Revision { row, files }, set)))
    }

    /// Serves revision `n`'s whole set again (files not in it are deleted),
    /// through the same checks as any change, as a new `RESTORE` revision.
    pub async fn restore(
        &self,
        scope: Scope,
        n: i64,
        mut options: ChangeOptions,
        author: &str,
    ) -> Result<Applied, RolloutError> {
        if self.read_only() && !options.dry_run {
            return Err(RolloutError::ReadOnly);
        }
        let Some((_, files)) = self.revision(scope, n).await? else {
            return Err(RolloutError::NotFound(format!("revision {n} was not found")));
        };
        let set: FileSet = files.into_iter().map(|f| (f.path, f.content)).collect();
        options.message.get_or_insert_with(|| format!("restore of revision {n}"));
        let change = Changeset::replace_with(set, options);
        self.apply(scope, &change, Origin { author, source: RevisionSource::Restore }).await
    }

    /// The revision whose set serves in a layer on this replica, if it is
    /// recorded.
    pub async fn serving_revision(&self, scope: Scope) -> Result<Option<i64>, sqlx::Error> {
        let state = self.registry.state();
        let manifest = state.layer(scope).map(|l| l.manifest.clone()).unwrap_or_default();
        revisions::newest_with_set(&self.pool, owner(scope), &set_digest(&manifest)).await
    }
}
