//! Policy revisions as values: a layer's set of files as a path → sha256
//! map, where a set came from, and how each file changed between two sets.
//!
//! Two sets are the same set exactly when their maps are equal, so one
//! digest of the map ([`set_digest`]) decides whether a set is new.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A layer's set of files: each path (relative to the layer's folder, like
/// `criteria/pick.rhai`) with the sha256 of its bytes, in hex.
pub type Manifest = BTreeMap<String, String>;

/// The author of every revision a file edit makes.
pub const FILESYSTEM_AUTHOR: &str = "filesystem";

/// How a set came to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RevisionSource {
    /// A changeset, or a PUT or DELETE of one file, through the API.
    Api,
    /// A file edit seen by the watcher or a rescan, or the set found at start-up.
    Filesystem,
    /// A restore of an earlier revision.
    Restore,
    /// A shadow set promoted to serve.
    Promote,
}

impl RevisionSource {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionSource::Api => "API",
            RevisionSource::Filesystem => "FILESYSTEM",
            RevisionSource::Restore => "RESTORE",
            RevisionSource::Promote => "PROMOTE",
        }
    }

    /// The source of a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Api, Self::Filesystem, Self::Restore, Self::Promote].into_iter().find(|s| s.as_str() == raw)
    }
}

/// How one file changed from one set to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FileChange {
    Added,
    Modified,
    Deleted,
}

impl FileChange {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileChange::Added => "ADDED",
            FileChange::Modified => "MODIFIED",
            FileChange::Deleted => "DELETED",
        }
    }

    /// The change of a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Added, Self::Modified, Self::Deleted].into_iter().find(|c| c.as_str() == raw)
    }
}

/// One file that differs between two sets. A deleted file keeps the sha256
/// it had before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedFile {
    /// Relative to the layer's folder.
    pub path: String,
    /// The file's sha256 after the change (before it, for a deletion).
    pub sha256: String,
    pub change: FileChange,
}

/// What changed from `before` to `after`, by path.
pub fn diff(before: &Manifest, after: &Manifest) -> Vec<ChangedFile> {
    let mut out = Vec::new();
    for (path, sha) in after {
        let change = match before.get(path) {
            None => FileChange::Added,
            Some(old) if old != sha => FileChange::Modified,
            Some(_) => continue,
        };
        out.push(ChangedFile { path: path.clone(), sha256: sha.clone(), change });
    }
    for (path, sha) in before {
        if !after.contains_key(path) {
            out.push(ChangedFile { path: path.clone(), sha256: sha.clone(), change: FileChange::Deleted });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The sha256 of a whole set: equal sets, and only they, have equal digests.
pub fn set_digest(manifest: &Manifest) -> String {
    let mut hasher = Sha256::new();
    for (path, sha) in manifest {
        // Paths hold no NUL or newline, so this encoding is unambiguous.
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(sha.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[(&str, &str)]) -> Manifest {
        entries.iter().map(|(p, s)| ((*p).to_owned(), (*s).to_owned())).collect()
    }

    #[test]
    fn a_diff_lists_added_modified_and_deleted_files_by_path() {
        let before = set(&[("criteria/a.rhai", "1"), ("criteria/b.rhai", "2"), ("tenant.toml", "3")]);
        let after = set(&[("criteria/a.rhai", "1"), ("criteria/b.wasm", "4"), ("tenant.toml", "5")]);
        let changes: Vec<(String, FileChange, String)> =
            diff(&before, &after).into_iter().map(|c| (c.path, c.change, c.sha256)).collect();
        assert_eq!(
            changes,
            vec![
                ("criteria/b.rhai".into(), FileChange::Deleted, "2".into()),
                ("criteria/b.wasm".into(), FileChange::Added, "4".into()),
                ("tenant.toml".into(), FileChange::Modified, "5".into()),
            ]
        );
    }

    #[test]
    fn equal_sets_have_equal_digests_and_a_moved_file_changes_it() {
        let a = set(&[("criteria/a.rhai", "1"), ("tenant.toml", "2")]);
        assert_eq!(set_digest(&a), set_digest(&a.clone()));
        let moved = set(&[("criteria/b.rhai", "1"), ("tenant.toml", "2")]);
        assert_ne!(set_digest(&a), set_digest(&moved));
        assert_ne!(set_digest(&a), set_digest(&Manifest::new()));
    }
}
