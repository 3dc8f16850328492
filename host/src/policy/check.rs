//! `reten policy check <file|dir>`: compile and validate policies offline,
//! with the same checks (and the same errors) as a reload or an upload.

use std::path::{Path, PathBuf};

use super::config;
use super::loader::{
    self, CATALOGUE_FILE, CompileCache, Engines, LoadContext, LoadError, Scope, parse_policy_file_name,
};
use super::workspace::Workspace;
use super::{EngineKind, PolicyKind};
use crate::domain::TenantId;

/// The outcome for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub path: String,
    pub outcome: Result<String, LoadError>,
}

/// Checks a file, a layer folder (`global/`, `tenants/<id>/`, or any folder
/// laid out like a tenant's, over the global layer [`Workspace`] finds) or a
/// whole policies directory. `global` is `--global`.
pub fn check(path: &Path, global: Option<&Path>) -> anyhow::Result<Vec<Checked>> {
    let engines = Engines::new()?;
    let cache = CompileCache::default();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![check_file(&engines, &cache, path)]);
    }
    let path = std::fs::canonicalize(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let (root, scopes) = if path.join("global").is_dir() || path.join("tenants").is_dir() {
        let mut scopes = vec![Scope::Global];
        for entry in std::fs::read_dir(path.join("tenants")).into_iter().flatten().flatten() {
            if let Ok(id) = TenantId::parse(&entry.file_name().to_string_lossy()) {
                scopes.push(Scope::Tenant(id));
            }
        }
        (path.clone(), scopes)
    } else if name == "global" {
        (parent(&path, 1), vec![Scope::Global])
    } else if let (Ok(id), None, true) = (TenantId::parse(&name), global, parent(&path, 1).ends_with("tenants")) {
        // The global layer is loaded (the tenant's config may name its
        // policies) but only the tenant's folder is reported.
        (parent(&path, 2), vec![Scope::Tenant(id)])
    } else {
        // Anywhere else: the folder and the global layer copied side by
        // side, checked there, and reported under the folder's own paths.
        let workspace = Workspace::open(&path, global)?;
        let prefix = format!("{}/", workspace.scope.rel_dir().to_string_lossy());
        let mut out = check(&workspace.root().join(workspace.scope.rel_dir()), None)?;
        for c in &mut out {
            if let Some(rest) = c.path.strip_prefix(&prefix) {
                c.path = path.join(rest).to_string_lossy().into_owned();
            }
            if let Err(e) = &mut c.outcome {
                e.path.clone_from(&c.path);
            }
        }
        return Ok(out);
    };
    let ctx = LoadContext { root: &root, engines: &engines, cache: &cache, calls: &Default::default(), global: None };
    let global = loader::load_layer(&ctx, Scope::Global, None);
    let ctx = LoadContext { global: Some(&global), ..ctx };
    let mut out = Vec::new();
    for scope in scopes {
        let tenant_layer = match scope {
            Scope::Global => None,
            Scope::Tenant(_) => Some(loader::load_layer(&ctx, scope, None)),
        };
        let layer = tenant_layer.as_ref().unwrap_or(&global);
        for p in layer.policies.values() {
            out.push(Checked {
                path: p.path.to_string_lossy().into_owned(),
                outcome: Ok(format!("{} {} {}", kind_name(p.kind), p.engine.as_str(), &p.version[..12])),
            });
        }
        for (file, version) in [
            (scope.config_file(), layer.config.as_ref().map(|c| &c.version)),
            (CATALOGUE_FILE, layer.catalogue.as_ref().map(|c| &c.version)),
        ] {
            if let Some(v) = version {
                let path = scope.rel_dir().join(file).to_string_lossy().into_owned();
                out.push(Checked { path, outcome: Ok(format!("CONFIG {}", &v[..12])) });
            }
        }
        for e in &layer.errors {
            out.retain(|c| c.path != e.path);
            out.push(Checked { path: e.path.clone(), outcome: Err(e.clone()) });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn parent(path: &Path, levels: usize) -> PathBuf {
    let mut p = path.to_owned();
    for _ in 0..levels {
        p.pop();
    }
    p
}

fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Criterion => "CRITERION",
        PolicyKind::Attribute => "ATTRIBUTE",
    }
}

/// Checks one file on its own: a policy (its kind from its folder) or a TOML
/// config (its kind from its name).
fn check_file(engines: &Engines, cache: &CompileCache, path: &Path) -> Checked {
    let display = path.to_string_lossy().into_owned();
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let failure = |message: String, line, column| Checked {
        path: display.clone(),
        outcome: Err(LoadError { path: display.clone(), message, line, column, at: chrono::Utc::now() }),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return failure(format!("could not read the file: {e}"), None, None),
    };
    let version = loader::sha256_hex(&bytes);
    if file_name.ends_with(".toml") {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return failure("the file is not UTF-8".into(), None, None);
        };
        let parsed = match file_name {
            CATALOGUE_FILE => config::parse_catalogue(text).map(|_| ()),
            "defaults.toml" => config::parse_config(text, false).map(|_| ()),
            _ => config::parse_config(text, true).map(|_| ()),
        };
        return match parsed {
            Ok(()) => Checked { path: display.clone(), outcome: Ok(format!("CONFIG {}", &version[..12])) },
            Err(e) => failure(e.message, e.line, e.column),
        };
    }
    let (_, engine) = match parse_policy_file_name(file_name) {
        Some(Ok(parsed)) => parsed,
        Some(Err(message)) => return failure(message, None, None),
        None => return failure("not a policy file: expected <name>.rhai, <name>.wasm or a .toml".into(), None, None),
    };
    let folder = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default();
    // A loose Rhai file fits either kind; a loose component must fit one world.
    let kinds = match PolicyKind::from_dir(folder) {
        Some(kind) => vec![kind],
        None if engine == EngineKind::Rhai => vec![PolicyKind::Criterion],
        None => vec![PolicyKind::Criterion, PolicyKind::Attribute],
    };
    let mut last = None;
    for kind in kinds {
        match loader::compile(engines, cache, engine, kind, &bytes, &version) {
            Ok(_) => {
                return Checked {
                    path: display.clone(),
                    outcome: Ok(format!("{} {} {}", kind_name(kind), engine.as_str(), &version[..12])),
                };
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or(loader::CompileFailure { message: "nothing to check".into(), line: None, column: None });
    failure(e.message, e.line, e.column)
}
