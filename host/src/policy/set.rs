//! A layer's set of files — what a revision records and a changeset changes:
//! the config (`tenant.toml`; globally `defaults.toml` and
//! `attribute-keys.toml`), `criteria/`, `attributes/` and `tests/` — read
//! from disk, and written back as one change that serves in one swap.
//!
//! Invariant: no reload publishes a mix of a change's old and new files.
//! [`Registry::apply`] writes every file while holding the registry's reload
//! lock, which every reload of this process (the watcher's, a rescan's, a
//! notification's) takes first, and reloads the layer once before letting
//! go; a reload that was waiting then reads the finished set, which equals
//! what serves, so it publishes nothing. Other processes sharing the
//! directory cannot take that lock, so the writer also leaves a marker file
//! ([`MARKER`]) in the layer's folder while it writes, and every reload
//! keeps serving what it has for a layer whose marker is fresh. The marker's
//! removal is itself a file event, and the writer also sends a Postgres
//! notification, so the finished set is read at once.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use super::Registry;
use super::admin::write_atomically;
use super::config::is_policy_name;
use super::loader::{CATALOGUE_FILE, Layer, Scope, sha256_hex};
pub use crate::domain::revision::Manifest;

/// A layer's files and their bytes, by path relative to the layer's folder.
pub type FileSet = BTreeMap<String, Vec<u8>>;

/// What a change does to each path it touches: new bytes, or `None` to
/// delete the file.
pub type Writes = BTreeMap<String, Option<Vec<u8>>>;

/// The file a writer keeps in a layer's folder while it writes a change.
/// Hidden, so no loader takes it for a policy.
pub const MARKER: &str = ".reten-change-in-progress";

/// A marker older than this is left over by a writer that died: ignored.
const MARKER_STALE_AFTER: Duration = Duration::from_secs(30);

/// The sub-folders of a layer that hold set files, with the extensions each
/// takes.
const FOLDERS: [(&str, &[&str]); 3] =
    [("criteria", &["rhai", "wasm"]), ("attributes", &["rhai", "wasm"]), ("tests", &["toml", "json"])];

/// Checks that `path` names a file of a `scope` layer's set:
/// `criteria/<name>.rhai|wasm`, `attributes/<name>.rhai|wasm`,
/// `tests/<name>.toml|json` (`<name>` in `[a-z0-9_]+`), or the layer's
/// config file(s).
pub fn check_path(scope: Scope, path: &str) -> Result<(), String> {
    let configs: &[&str] = match scope {
        Scope::Tenant(_) => &["tenant.toml"],
        Scope::Global => &["defaults.toml", CATALOGUE_FILE],
    };
    if configs.contains(&path) {
        return Ok(());
    }
    let expected = || {
        format!(
            "'{path}' is not a policy set path; expected {}, criteria/<name>.rhai|wasm, attributes/<name>.rhai|wasm \
             or tests/<name>.toml|json, with <name> in [a-z0-9_]+",
            configs.join(", ")
        )
    };
    let Some((folder, file)) = path.split_once('/') else { return Err(expected()) };
    let Some((_, extensions)) = FOLDERS.iter().find(|(f, _)| *f == folder) else { return Err(expected()) };
    match file.rsplit_once('.') {
        Some((name, ext)) if extensions.contains(&ext) && is_policy_name(name) => Ok(()),
        _ => Err(expected()),
    }
}

/// Reads a layer's set from disk: every file [`check_path`] accepts
/// (symlinks followed, as ConfigMap volumes need). A missing folder is an
/// empty set.
pub fn read(root: &Path, scope: Scope) -> io::Result<FileSet> {
    read_folder(&root.join(scope.rel_dir()), scope)
}

/// Reads a `scope` layer's set from any folder laid out like one (a
/// tenant's `shadow/`).
pub fn read_folder(dir: &Path, scope: Scope) -> io::Result<FileSet> {
    let mut set = FileSet::new();
    let mut candidates: Vec<String> = vec![scope.config_file().to_owned()];
    if scope == Scope::Global {
        candidates.push(CATALOGUE_FILE.to_owned());
    }
    for (folder, _) in FOLDERS {
        let entries = match fs::read_dir(dir.join(folder)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                candidates.push(format!("{folder}/{name}"));
            }
        }
    }
    for path in candidates {
        if check_path(scope, &path).is_err() {
            continue;
        }
        match fs::metadata(dir.join(&path)) {
            Ok(meta) if meta.is_file() => {
                set.insert(path.clone(), fs::read(dir.join(&path))?);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(set)
}

/// The path → sha256 map of a set.
pub fn manifest(set: &FileSet) -> Manifest {
    set.iter().map(|(path, bytes)| (path.clone(), sha256_hex(bytes))).collect()
}

/// The path → sha256 map of a layer folder's `tests/` (the loader knows the
/// versions of everything else it loaded).
pub fn tests_manifest(layer_dir: &Path) -> Manifest {
    let mut out = Manifest::new();
    let Ok(entries) = fs::read_dir(layer_dir.join("tests")) else { return out };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(|n| format!("tests/{n}")) else { continue };
        // Any scope: the tests folder has the same rules in both.
        if check_path(Scope::Global, &name).is_ok()
            && let Ok(bytes) = fs::read(entry.path())
        {
            out.insert(name, sha256_hex(&bytes));
        }
    }
    out
}

/// The layer's set as loaded: its policies' and configs' versions, and the
/// files of its `tests/` folder.
pub(super) fn manifest_of(layer: &Layer, dir: &Path) -> Manifest {
    let rel = layer.scope.rel_dir();
    let mut out = tests_manifest(dir);
    for p in layer.policies.values() {
        if let Ok(path) = p.path.strip_prefix(&rel) {
            out.insert(path.to_string_lossy().replace('\\', "/"), p.version.clone());
        }
    }
    if let Some(c) = &layer.config {
        out.insert(layer.scope.config_file().to_owned(), c.version.clone());
    }
    if let Some(c) = &layer.catalogue {
        out.insert(CATALOGUE_FILE.to_owned(), c.version.clone());
    }
    out
}

/// Whether another writer is changing the layer right now (its marker is
/// present and fresh).
pub fn is_being_changed(layer_dir: &Path) -> bool {
    fs::metadata(layer_dir.join(MARKER))
        .and_then(|m| m.modified())
        .is_ok_and(|at| at.elapsed().map_or(true, |age| age < MARKER_STALE_AFTER))
}

/// Writes a change into a layer's folder under its marker: every new file
/// first (each atomically), then the deletions, so a reader that ignores
/// the marker sees two versions of a policy side by side (an error that
/// keeps the old set serving) rather than none.
fn write(layer_dir: &Path, writes: &Writes) -> io::Result<()> {
    fs::create_dir_all(layer_dir)?;
    let marker = layer_dir.join(MARKER);
    fs::write(&marker, std::process::id().to_string())?;
    let result = (|| {
        for (path, bytes) in writes {
            if let Some(bytes) = bytes {
                write_atomically(&layer_dir.join(path), bytes)?;
            }
        }
        for (path, bytes) in writes {
            if bytes.is_none() {
                match fs::remove_file(layer_dir.join(path)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    })();
    let removed = fs::remove_file(&marker);
    result.and(removed)
}

impl Registry {
    /// Writes a change to a layer's files and serves the result in one swap:
    /// no reload of this process runs between the first write and the
    /// publish, and other processes wait for the marker to go (see the
    /// module's invariant). Returns the generation that serves afterwards.
    /// Blocking: writes and compiles on this thread.
    pub fn apply(&self, scope: Scope, writes: &Writes) -> io::Result<u64> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        write(&self.root.join(scope.rel_dir()), writes)?;
        Ok(match scope {
            Scope::Global => self.reload_all_locked(),
            Scope::Tenant(_) => self.reload_locked(&std::iter::once(scope).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TenantId;

    #[test]
    fn set_paths_are_the_config_and_named_files_in_the_three_folders() {
        let t = Scope::Tenant(TenantId::new());
        for ok in ["tenant.toml", "criteria/pick.rhai", "attributes/tier.wasm", "tests/a_case.toml", "tests/b.json"] {
            assert!(check_path(t, ok).is_ok(), "{ok}");
        }
        for bad in [
            "defaults.toml",
            "criteria/pick.lua",
            "criteria/Pick.rhai",
            "criteria/../x.rhai",
            "criteria/a/b.rhai",
            "tests/x.rhai",
            "shadow/tenant.toml",
            "/etc/passwd",
            "criteria/.hidden.rhai",
            "",
        ] {
            assert!(check_path(t, bad).is_err(), "{bad}");
        }
        assert!(check_path(Scope::Global, "attribute-keys.toml").is_ok());
        assert!(check_path(Scope::Global, "tenant.toml").is_err());
    }

    #[test]
    fn reading_a_set_skips_hidden_and_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        let id = TenantId::new();
        let layer = dir.path().join("tenants").join(id.to_string());
        fs::create_dir_all(layer.join("criteria")).unwrap();
        fs::write(layer.join("criteria/pick.rhai"), "x").unwrap();
        fs::write(layer.join("criteria/.pick.rhai.swp"), "x").unwrap();
        fs::write(layer.join("notes.md"), "x").unwrap();
        fs::write(layer.join(MARKER), "1").unwrap();
        fs::write(layer.join("tenant.toml"), "name = \"t\"").unwrap();
        let set = read(dir.path(), Scope::Tenant(id)).unwrap();
        assert_eq!(set.keys().collect::<Vec<_>>(), ["criteria/pick.rhai", "tenant.toml"]);
        assert!(is_being_changed(&layer));
        assert!(read(dir.path(), Scope::Tenant(TenantId::new())).unwrap().is_empty());
    }
}
