//! The policies an offline command (`reten policy check`, `test`, `eval`)
//! works on: one folder laid out like a layer, wherever it is, over a global
//! layer.
//!
//! The folder is `global/` itself, `tenants/<id>/` inside a policies
//! directory, or any folder laid out like a tenant's (`tenant.toml`,
//! `criteria/`, `attributes/`, `tests/`), such as one `reten policy new`
//! wrote. A Wasm policy crate counts too: its `Cargo.toml` names the kind in
//! `[package.metadata.reten]`, and the component `reten policy build` wrote
//! (`target/<crate>.wasm`) serves as `criteria/<crate>.wasm` or
//! `attributes/<crate>.wasm`.
//!
//! The global layer beneath it is, in order: `--global <dir>`; the `global/`
//! of the policies directory the folder is in; `$RETEN_POLICIES_DIR/global`;
//! else the defaults built into the binary (the shipped `policies/global`).
//! Both layers are copied into a scratch policies directory and loaded there,
//! so the command behaves the same in any folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use uuid::Uuid;

use super::loader::Scope;
use super::registry::RegistryOptions;
use super::set::{self, FileSet};
use super::{Registry, TenantSnapshot};
use crate::domain::TenantId;

/// The shipped `policies/global`, built into the binary.
pub const BUILT_IN_GLOBAL: [(&str, &[u8]); 7] = [
    ("defaults.toml", include_bytes!("../../../policies/global/defaults.toml")),
    ("attribute-keys.toml", include_bytes!("../../../policies/global/attribute-keys.toml")),
    ("criteria/role_match.rhai", include_bytes!("../../../policies/global/criteria/role_match.rhai")),
    (
        "criteria/last_contacted_all_channels.rhai",
        include_bytes!("../../../policies/global/criteria/last_contacted_all_channels.rhai"),
    ),
    (
        "criteria/last_contacted_same_channel.rhai",
        include_bytes!("../../../policies/global/criteria/last_contacted_same_channel.rhai"),
    ),
    ("attributes/commerce_info.rhai", include_bytes!("../../../policies/global/attributes/commerce_info.rhai")),
    ("attributes/promotions.rhai", include_bytes!("../../../policies/global/attributes/promotions.rhai")),
];

/// Where the global layer came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobalSource {
    /// A folder: `--global`, the policies directory's, or
    /// `$RETEN_POLICIES_DIR/global`.
    Folder(PathBuf),
    /// The defaults built into the binary.
    BuiltIn,
}

impl std::fmt::Display for GlobalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GlobalSource::Folder(p) => write!(f, "{}", p.display()),
            GlobalSource::BuiltIn => f.write_str("the defaults built into reten"),
        }
    }
}

/// A folder's policies loaded over a global layer, in a scratch directory.
pub struct Workspace {
    /// The folder as given, canonical.
    pub dir: PathBuf,
    /// The layer the folder is: global, or a tenant (named after the folder
    /// when it is a tenant id, else a stable id made from its path).
    pub scope: Scope,
    pub global: GlobalSource,
    pub registry: Arc<Registry>,
    /// The scratch policies directory (removed when dropped).
    scratch: tempfile::TempDir,
}

impl Workspace {
    /// Loads `dir` over the global layer (`global`: `--global`, if given).
    pub fn open(dir: &Path, global: Option<&Path>) -> anyhow::Result<Self> {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{} does not exist", dir.display()))?;
        if !dir.is_dir() {
            anyhow::bail!("{} is not a folder", dir.display());
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let in_tree = dir.parent().is_some_and(|p| p.file_name().is_some_and(|n| n == "tenants"));
        let scope = if name == "global" && global.is_none() {
            Scope::Global
        } else {
            let id = match TenantId::parse(&name) {
                Ok(id) => id,
                Err(_) => TenantId(Uuid::new_v5(&Uuid::NAMESPACE_URL, dir.to_string_lossy().as_bytes())),
            };
            Scope::Tenant(id)
        };
        let scratch = tempfile::Builder::new().prefix("reten-policies-").tempdir()?;
        let (global_source, global_files) = match scope {
            Scope::Global => (GlobalSource::Folder(dir.clone()), read(&dir, Scope::Global)?),
            Scope::Tenant(_) => {
                let beside = in_tree.then(|| dir.parent().and_then(Path::parent).map(|root| root.join("global")));
                let env = std::env::var_os("RETEN_POLICIES_DIR").map(|root| PathBuf::from(root).join("global"));
                let folder = match global {
                    Some(g) => Some(g.to_owned()),
                    None => beside.flatten().filter(|g| g.is_dir()).or(env.filter(|g| g.is_dir())),
                };
                match folder {
                    Some(g) => {
                        let files = read(&g, Scope::Global)?;
                        (GlobalSource::Folder(g), files)
                    }
                    None => (GlobalSource::BuiltIn, built_in_global()),
                }
            }
        };
        write_set(&scratch.path().join("global"), &global_files)?;
        if let Scope::Tenant(_) = scope {
            let mut files = read(&dir, scope)?;
            files.extend(crate_component(&dir)?);
            write_set(&scratch.path().join(scope.rel_dir()), &files)?;
        }
        let registry = Arc::new(Registry::load(scratch.path(), RegistryOptions::default())?);
        Ok(Self { dir, scope, global: global_source, registry, scratch })
    }

    /// The tenant whose snapshot decides (a fresh one for the global layer
    /// alone).
    pub fn tenant(&self) -> TenantId {
        match self.scope {
            Scope::Tenant(id) => id,
            Scope::Global => TenantId(Uuid::nil()),
        }
    }

    /// The snapshot the folder's tenant would serve.
    pub fn snapshot(&self) -> Arc<TenantSnapshot> {
        self.registry.snapshot(self.tenant())
    }

    /// The files of the two layers that failed to load, as `path: message`
    /// with the folder's own paths.
    pub fn load_errors(&self) -> Vec<String> {
        let prefix = match self.scope {
            Scope::Tenant(_) => format!("{}/", self.scope.rel_dir().display()),
            Scope::Global => "global/".to_owned(),
        };
        self.registry
            .state()
            .errors()
            .filter(|e| e.path.starts_with("global/") || e.path.starts_with(&prefix))
            .map(|e| format!("{}: {}", e.path.strip_prefix(&prefix).unwrap_or(&e.path), e.message))
            .collect()
    }

    /// The scratch policies directory both layers were copied into.
    pub fn root(&self) -> &Path {
        self.scratch.path()
    }
}

/// The built-in global layer as a set.
pub fn built_in_global() -> FileSet {
    BUILT_IN_GLOBAL.iter().map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec())).collect()
}

fn read(dir: &Path, scope: Scope) -> anyhow::Result<FileSet> {
    set::read_folder(dir, scope).with_context(|| format!("failed to read {}", dir.display()))
}

/// For a Wasm policy crate: its built component, under the path it serves
/// at (`criteria/<crate>.wasm`), when `Cargo.toml` says which kind it is.
fn crate_component(dir: &Path) -> anyhow::Result<FileSet> {
    let mut out = FileSet::new();
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else { return Ok(out) };
    let manifest: toml::Table = toml::from_str(&text).with_context(|| format!("{}/Cargo.toml", dir.display()))?;
    let package = manifest.get("package").and_then(|p| p.as_table());
    let name = package.and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(|n| n.replace('-', "_"));
    let kind = package
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("reten"))
        .and_then(|r| r.get("kind"))
        .and_then(|k| k.as_str());
    let (Some(name), Some(kind)) = (name, kind) else { return Ok(out) };
    let folder = match kind {
        "criterion" => "criteria",
        "attribute" => "attributes",
        other => anyhow::bail!("Cargo.toml: [package.metadata.reten] kind must be criterion or attribute, not {other}"),
    };
    let built = dir.join("target").join(format!("{name}.wasm"));
    match std::fs::read(&built) {
        Ok(bytes) => {
            out.insert(format!("{folder}/{name}.wasm"), bytes);
        }
        Err(_) => {
            anyhow::bail!("{} is not built yet: run `reten policy build {}` first", built.display(), dir.display())
        }
    }
    Ok(out)
}

fn write_set(dir: &Path, files: &FileSet) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_global_layer_is_the_shipped_one_file_for_file() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/global");
        let mut on_disk = set::read_folder(&shipped, Scope::Global).unwrap();
        on_disk.retain(|path, _| !path.starts_with("tests/"));
        assert_eq!(built_in_global(), on_disk, "BUILT_IN_GLOBAL must list every file of policies/global");
    }

    #[test]
    fn a_folder_outside_any_policies_directory_loads_over_the_built_in_global_layer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("criteria")).unwrap();
        std::fs::write(dir.path().join("criteria/first.rhai"), "fn resolve(input) { [] }").unwrap();
        let ws = Workspace::open(dir.path(), None).unwrap();
        assert!(matches!(ws.scope, Scope::Tenant(_)));
        if std::env::var_os("RETEN_POLICIES_DIR").is_none() {
            assert_eq!(ws.global, GlobalSource::BuiltIn);
        }
        let snapshot = ws.snapshot();
        assert!(snapshot.criterion("FIRST").is_some() && snapshot.criterion("ROLE_MATCH").is_some());
        assert!(ws.load_errors().is_empty(), "{:?}", ws.load_errors());
    }
}
