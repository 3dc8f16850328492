//! Changing the policies directory through the API: naming one file of the
//! policy admin routes, and writing a file atomically.
//!
//! Checking happens before anything is written, on the whole set the change
//! leaves (see `crate::rollout`). A file is written to a temp file in the
//! same folder and renamed over the old one, so a reader (or the watcher)
//! never sees half of it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::loader::{self, CATALOGUE_FILE, Scope, parse_policy_file_name};
use super::{EngineKind, PolicyKind};

/// The largest policy file an upload may carry.
pub const MAX_POLICY_BYTES: usize = 8 << 20;

/// A file of the policies directory that the API may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyFile {
    /// `criteria/<name>.<ext>` or `attributes/<name>.<ext>`.
    Policy { kind: PolicyKind, name: String, engine: EngineKind },
    /// `config/tenant.toml` (tenant), `config/defaults.toml` or
    /// `config/attribute-keys.toml` (global).
    Config(ConfigFileKind),
}

/// The config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFileKind {
    Tenant,
    Defaults,
    Catalogue,
}

impl PolicyFile {
    /// Parses the `{kind}/{file}` of a route, refusing anything that is not a
    /// plain known name: no separators, no `..`, no absolute paths.
    pub fn parse(scope: Scope, kind: &str, file: &str) -> Result<Self, String> {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(format!("'{file}' is not a plain file name"));
        }
        if kind == "config" {
            return match (scope, file) {
                (Scope::Tenant(_), "tenant.toml") => Ok(PolicyFile::Config(ConfigFileKind::Tenant)),
                (Scope::Global, "defaults.toml") => Ok(PolicyFile::Config(ConfigFileKind::Defaults)),
                (Scope::Global, CATALOGUE_FILE) => Ok(PolicyFile::Config(ConfigFileKind::Catalogue)),
                (Scope::Tenant(_), _) => Err("the tenant's config file is tenant.toml".into()),
                (Scope::Global, _) => Err(format!("the global config files are defaults.toml and {CATALOGUE_FILE}")),
            };
        }
        let Some(kind) = PolicyKind::from_dir(kind) else {
            return Err(format!("unknown kind '{kind}'; expected criteria, attributes or config"));
        };
        match parse_policy_file_name(file) {
            Some(Ok((name, engine))) => Ok(PolicyFile::Policy { kind, name, engine }),
            Some(Err(message)) => Err(message),
            None => Err(format!("'{file}' is not a policy file name; expected <name>.rhai or <name>.wasm")),
        }
    }

    /// The file's path relative to the policies directory.
    pub fn rel_path(&self, scope: Scope) -> PathBuf {
        scope.rel_dir().join(self.set_path())
    }

    /// The file's path relative to its layer's folder: its path in a
    /// changeset and a revision.
    pub fn set_path(&self) -> String {
        match self {
            PolicyFile::Policy { kind, name, engine } => format!("{}/{name}.{}", kind.dir(), engine.extension()),
            PolicyFile::Config(ConfigFileKind::Tenant) => "tenant.toml".into(),
            PolicyFile::Config(ConfigFileKind::Defaults) => "defaults.toml".into(),
            PolicyFile::Config(ConfigFileKind::Catalogue) => CATALOGUE_FILE.into(),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder,
/// synced, then renamed over the target. Returns whether the file is new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the path has no folder"))?;
    fs::create_dir_all(dir)?;
    let existed = path.exists();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("policy");
    // Hidden, so the loader never mistakes it for a policy.
    let tmp = dir.join(format!(".{file_name}.upload-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| !existed)
}

/// The sha256 of an upload: the version it will serve under.
pub fn version_of(bytes: &[u8]) -> String {
    loader::sha256_hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_known_names_are_accepted() {
        let t = Scope::Tenant(crate::domain::TenantId::new());
        assert!(PolicyFile::parse(t, "criteria", "role_match.rhai").is_ok());
        assert!(PolicyFile::parse(t, "criteria", "../x.rhai").is_err());
        assert!(PolicyFile::parse(t, "criteria", "/etc/passwd").is_err());
        assert!(PolicyFile::parse(t, "criteria", "Role.rhai").is_err());
        assert!(PolicyFile::parse(t, "criteria", "x.lua").is_err());
        assert!(PolicyFile::parse(t, "scripts", "x.rhai").is_err());
        assert!(PolicyFile::parse(t, "config", "tenant.toml").is_ok());
        assert!(PolicyFile::parse(t, "config", "defaults.toml").is_err());
        assert!(PolicyFile::parse(Scope::Global, "config", "attribute-keys.toml").is_ok());
    }
}
