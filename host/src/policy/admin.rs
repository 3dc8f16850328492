//! Changing the policies directory through the API: naming, validating and
//! atomically writing or removing one file.
//!
//! Invariant: an upload is compiled and validated before anything touches
//! the disk; a file that fails is never written, so the version that serves
//! stays. A file that passes is written to a temp file in the same folder and
//! renamed over the old one, so a reader (or the watcher) never sees half of
//! it.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::config::{self, ConfigError};
use super::loader::{self, CATALOGUE_FILE, CompileFailure, Scope, parse_policy_file_name};
use super::{EngineKind, PolicyKind, Registry};

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
        let dir = scope.rel_dir();
        match self {
            PolicyFile::Policy { kind, name, engine } => {
                dir.join(kind.dir()).join(format!("{name}.{}", engine.extension()))
            }
            PolicyFile::Config(ConfigFileKind::Tenant) => dir.join("tenant.toml"),
            PolicyFile::Config(ConfigFileKind::Defaults) => dir.join("defaults.toml"),
            PolicyFile::Config(ConfigFileKind::Catalogue) => dir.join(CATALOGUE_FILE),
        }
    }
}

/// Compiles and validates an upload against the policies serving now,
/// exactly as a reload would.
pub fn validate(registry: &Registry, scope: Scope, file: &PolicyFile, bytes: &[u8]) -> Result<(), CompileFailure> {
    match file {
        PolicyFile::Policy { kind, engine, .. } => registry.compile(*engine, *kind, bytes),
        PolicyFile::Config(kind) => {
            let text = std::str::from_utf8(bytes).map_err(|_| plain("the file is not UTF-8"))?;
            match kind {
                ConfigFileKind::Catalogue => config::parse_catalogue(text).map(|_| ()).map_err(Into::into),
                ConfigFileKind::Defaults | ConfigFileKind::Tenant => {
                    let parsed = config::parse_config(text, *kind == ConfigFileKind::Tenant)?;
                    check_against_serving(registry, scope, &parsed).map_err(Into::into)
                }
            }
        }
    }
}

fn check_against_serving(registry: &Registry, scope: Scope, file: &config::ConfigFile) -> Result<(), ConfigError> {
    let state = registry.state();
    let tenant = match scope {
        Scope::Tenant(id) => state.tenants.get(&id).cloned(),
        Scope::Global => None,
    };
    let mut criteria = BTreeSet::new();
    let mut attribute_policies = BTreeSet::new();
    let mut catalogue: BTreeSet<String> = file.attribute_keys.keys().cloned().collect();
    for layer in std::iter::once(&state.global).chain(tenant.as_ref()) {
        criteria.extend(layer.names(PolicyKind::Criterion).map(str::to_uppercase));
        attribute_policies.extend(layer.names(PolicyKind::Attribute).map(str::to_owned));
        if let Some(c) = &layer.catalogue {
            catalogue.extend(c.value.keys().cloned());
        }
    }
    config::check_references(file, &criteria, &catalogue, &attribute_policies)
}

fn plain(message: &str) -> CompileFailure {
    CompileFailure { message: message.into(), line: None, column: None }
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
