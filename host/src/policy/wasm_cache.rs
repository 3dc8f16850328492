//! The compile cache on disk: what Cranelift made of each Wasm policy, kept
//! across restarts, so that a restart (or another process of this user on
//! this machine) loads it in milliseconds instead of compiling it again.
//!
//! Invariant: only what this user wrote is ever loaded. An artifact is
//! native code that wasmtime runs unchecked, so the cache is kept local
//! rather than authenticated: the folder must belong to this user and be
//! closed to everyone else (it is created, or narrowed, to 0700), and an
//! artifact is read only if it is a regular file of this user that nobody
//! else may write. A folder of another user is refused; an artifact that
//! fails a check or fails to load is compiled again and replaced. Artifacts
//! are named after the sha256 of the component's bytes and the engine's
//! compatibility hash (wasmtime's version and settings), so a new build or
//! a new setting never loads an old artifact.

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A private folder of compiled components.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    /// This process's user, as the file system records it.
    owner: Option<u32>,
    /// The engine's compatibility hash, part of every artifact's name.
    compat: u64,
}

impl ArtifactCache {
    /// Opens (creating it if needed) the cache folder for artifacts of
    /// `engine`. Fails if the folder cannot be made private to this user.
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the Wasm compile cache {}", dir.display()))?;
        let owner = private_to_this_user(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self { dir: dir.to_owned(), owner, compat: hasher.finish() })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}-{:016x}.cwasm", self.compat))
    }

    /// The component an earlier run compiled from the bytes of `sha`, if
    /// one is there and passes the checks.
    pub fn load(&self, engine: &Engine, sha: &str) -> Option<Component> {
        let path = self.path(sha);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !self.written_by_this_user(&meta) {
            tracing::warn!(path = %path.display(), "ignoring a cached component this service did not write");
            return None;
        }
        // SAFETY: `deserialize_file` runs the artifact's native code
        // unchecked, so it must come from this engine: the file is a regular
        // file of this user that no one else may write, in a folder only this
        // user may write (see the module's invariant), named after the source
        // bytes' sha256 and this engine's compatibility hash.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding a bad cached component");
                None
            }
        }
    }

    /// Keeps a compiled component for the next run (best effort: a cache
    /// that cannot be written only costs a compilation later).
    pub fn store(&self, sha: &str, component: &Component) {
        let path = self.path(sha);
        let Ok(artifact) = component.serialize() else { return };
        let tmp = self.dir.join(format!(".{sha}.tmp-{}", uuid::Uuid::new_v4()));
        let written = write_private(&tmp, &artifact).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache a compiled component");
        }
    }

    #[cfg(unix)]
    fn written_by_this_user(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        meta.file_type().is_file() && Some(meta.uid()) == self.owner && meta.mode() & 0o022 == 0
    }

    #[cfg(not(unix))]
    fn written_by_this_user(&self, meta: &std::fs::Metadata) -> bool {
        meta.file_type().is_file()
    }
}

/// Makes `dir` private (0700) and checks it belongs to this process's user;
/// returns that user.
#[cfg(unix)]
fn private_to_this_user(dir: &Path) -> anyhow::Result<Option<u32>> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    // The user this process writes files as: the owner of a file it creates.
    let probe = dir.join(format!(".owner-probe-{}", uuid::Uuid::new_v4()));
    write_private(&probe, b"").with_context(|| format!("the Wasm compile cache {} is not writable", dir.display()))?;
    let me = std::fs::metadata(&probe).map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    let me = me?;
    let meta = std::fs::symlink_metadata(dir)?;
    anyhow::ensure!(
        meta.is_dir() && meta.uid() == me,
        "the Wasm compile cache {} belongs to another user (or is a symlink): it must be this service's own folder",
        dir.display()
    );
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to make the Wasm compile cache {} private", dir.display()))?;
    Ok(Some(me))
}

#[cfg(not(unix))]
fn private_to_this_user(_dir: &Path) -> anyhow::Result<Option<u32>> {
    Ok(None)
}

/// Writes a new file only this user may read or write.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)
}

/// Where the compile cache goes when `RETEN_WASM_CACHE_DIR` is not set:
/// `$XDG_CACHE_HOME/reten/wasm`, else `$HOME/.cache/reten/wasm`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("reten").join("wasm"))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn an_open_folder_is_narrowed_to_this_user() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        ArtifactCache::open(&cache, &engine()).unwrap();
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "the owner probe is gone");
    }

    #[test]
    fn a_symlinked_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ArtifactCache::open(&link, &engine()).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }
}
