//! `reten policy new`: scaffolds a policy with a fixture that passes, so an
//! author starts from something that tests green and changes one thing at a
//! time.
//!
//! - **Rhai**: the script, a fixture and (when the folder has none) a
//!   `tenant.toml` that uses it, in a folder laid out like a tenant's.
//! - **Wasm**: a standalone Rust crate, anywhere. It is a tenant folder too
//!   (`tenant.toml`, `tests/`, and `criteria/<name>.wasm` or
//!   `attributes/<name>.wasm`, a link to `target/<name>.wasm`, the file
//!   `reten policy build` writes), so `reten policy test <crate>` runs its
//!   fixture once it is built.
//!
//! **Where the SDK comes from.** The SDK's sources and the WIT world they
//! generate from are compiled into `reten`. On first use they are written to
//! `<sdk dir>/<reten version>-<digest of the files>/` (the sdk dir is
//! `--sdk-dir`/`RETEN_SDK_DIR`, else `$XDG_DATA_HOME/reten/sdk`, else
//! `~/.local/share/reten/sdk`), with a Cargo.toml of its own, and the crate's
//! Cargo.toml names that folder by its absolute path. So the author edits no
//! path, a crate keeps the SDK it was made with when `reten` is upgraded,
//! and nothing needs a network but crates.io. The crate also gets the plugins
//! workspace's Cargo.lock, which pins the SDK's dependencies to the versions
//! it is tested with (cargo drops the entries the crate does not use): a
//! machine whose cargo cache holds them builds it offline.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use reten_host::config::{NewArgs, NewPolicyKind};

mod sdk;

/// The lock file of the plugins workspace, where the SDK is built and tested.
const LOCK_FILE: &str = include_str!("../../../plugins/Cargo.lock");

/// The plugins' cargo settings for wasm32 (a small shadow stack, which makes
/// calls cheaper), for the crate's `.cargo/config.toml`.
const CARGO_CONFIG: &str = include_str!("../../../plugins/.cargo/config.toml");

/// A policy's name: `[a-z][a-z0-9_]*`, at most 64 bytes. It is the file name,
/// the crate's name, and, upper-cased, the criterion type.
#[derive(Debug)]
struct PolicyName(String);

impl PolicyName {
    fn parse(raw: &str) -> anyhow::Result<Self> {
        let valid = raw.len() <= 64
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            bail!(
                "invalid policy name '{raw}': use snake_case ([a-z][a-z0-9_]*, at most 64 characters), e.g. top_spender"
            );
        }
        Ok(Self(raw.to_owned()))
    }

    /// The criterion type tenant.toml names it by: `TOP_SPENDER`.
    fn criterion_type(&self) -> String {
        self.0.to_ascii_uppercase()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Rhai,
    Wasm,
}

/// One file to write.
enum Content {
    Text(String),
    /// A symbolic link to this (relative) target.
    Link(PathBuf),
}

/// Scaffolds the policy `args` describes.
pub fn run(args: &NewArgs) -> anyhow::Result<()> {
    let name = PolicyName::parse(&args.name)?;
    let engine = if args.wasm { Engine::Wasm } else { Engine::Rhai };
    let dir = args.dir.clone().unwrap_or_else(|| match engine {
        Engine::Rhai => PathBuf::from("."),
        Engine::Wasm => PathBuf::from(&name.0),
    });
    let vars = Vars::new(args.kind, &name, engine);
    let mut files = vec![
        (vars.policy_path(), policy_content(args.kind, engine, &vars)),
        (PathBuf::from("tests").join(format!("{}.toml", name.0)), Content::Text(vars.render(fixture(args.kind)))),
    ];
    let mut sdk = None;
    if engine == Engine::Wasm {
        let crate_dir = sdk::install(&sdk::root(args.sdk_dir.as_deref())?)?;
        let vars = vars.with_sdk(&crate_dir);
        let source = match args.kind {
            NewPolicyKind::Criterion => include_str!("templates/criterion.rs.tmpl"),
            NewPolicyKind::Attribute => include_str!("templates/attribute.rs.tmpl"),
        };
        files.extend([
            (PathBuf::from("Cargo.toml"), Content::Text(vars.render(include_str!("templates/Cargo.toml.tmpl")))),
            (PathBuf::from("Cargo.lock"), Content::Text(LOCK_FILE.to_owned())),
            (PathBuf::from(".gitignore"), Content::Text("/target\n".to_owned())),
            (PathBuf::from(".cargo/config.toml"), Content::Text(CARGO_CONFIG.to_owned())),
            (PathBuf::from("src/lib.rs"), Content::Text(vars.render(source))),
        ]);
        sdk = Some(crate_dir);
    }
    refuse_to_overwrite(&dir, &vars, &files)?;
    let tenant_toml = vars.render(match args.kind {
        NewPolicyKind::Criterion => include_str!("templates/criterion.tenant.toml.tmpl"),
        NewPolicyKind::Attribute => include_str!("templates/attribute.tenant.toml.tmpl"),
    });
    let keep_tenant_toml = fs::symlink_metadata(dir.join("tenant.toml")).is_ok();
    if !keep_tenant_toml {
        files.push((PathBuf::from("tenant.toml"), Content::Text(tenant_toml)));
    }
    for (rel, content) in &files {
        write(&dir.join(rel), content)?;
        println!("wrote {}", dir.join(rel).display());
    }
    if keep_tenant_toml {
        println!("{} exists and was left alone; to use {}, add:\n", dir.join("tenant.toml").display(), vars.title());
        println!("{}", snippet(args.kind, &vars));
    }
    if let Some(sdk) = sdk {
        println!("the SDK it depends on: {}", sdk.display());
        println!("next: edit src/lib.rs, then `reten policy build {0}` and `reten policy test {0}`", dir.display());
    } else {
        println!("next: `reten policy test {}`", dir.display());
    }
    Ok(())
}

/// The template variables, `{{name}}` and the like.
struct Vars(Vec<(&'static str, String)>);

impl Vars {
    fn new(kind: NewPolicyKind, name: &PolicyName, engine: Engine) -> Self {
        let (kind, kind_dir) = match kind {
            NewPolicyKind::Criterion => ("criterion", "criteria"),
            NewPolicyKind::Attribute => ("attribute", "attributes"),
        };
        let (ext, engine) = match engine {
            Engine::Rhai => ("rhai", "RHAI"),
            Engine::Wasm => ("wasm", "WASM"),
        };
        Self(vec![
            ("name", name.0.clone()),
            ("TYPE", name.criterion_type()),
            ("kind", kind.to_owned()),
            ("kind_dir", kind_dir.to_owned()),
            ("ext", ext.to_owned()),
            ("ENGINE", engine.to_owned()),
        ])
    }

    /// The same, with `{{sdk_path}}`: the SDK crate's folder as a TOML string.
    fn with_sdk(&self, sdk: &Path) -> Self {
        let mut vars = Self(self.0.clone());
        let quoted = toml::Value::String(sdk.to_string_lossy().into_owned()).to_string();
        vars.0.push(("sdk_path", quoted));
        vars
    }

    fn get(&self, key: &str) -> &str {
        self.0.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v.as_str())
    }

    fn render(&self, template: &str) -> String {
        self.0.iter().fold(template.to_owned(), |text, (key, value)| text.replace(&format!("{{{{{key}}}}}"), value))
    }

    /// `criteria/top_spender.wasm`.
    fn policy_path(&self) -> PathBuf {
        Path::new(self.get("kind_dir")).join(format!("{}.{}", self.get("name"), self.get("ext")))
    }

    /// How tenant.toml names the policy: `TOP_SPENDER`, or the attribute key.
    fn title(&self) -> &str {
        if self.get("kind") == "criterion" { self.get("TYPE") } else { self.get("name") }
    }
}

fn policy_content(kind: NewPolicyKind, engine: Engine, vars: &Vars) -> Content {
    match (engine, kind) {
        (Engine::Rhai, NewPolicyKind::Criterion) => {
            Content::Text(vars.render(include_str!("templates/criterion.rhai.tmpl")))
        }
        (Engine::Rhai, NewPolicyKind::Attribute) => {
            Content::Text(vars.render(include_str!("templates/attribute.rhai.tmpl")))
        }
        // The component `reten policy build` writes, seen from the kind's folder.
        (Engine::Wasm, _) => Content::Link(Path::new("../target").join(format!("{}.wasm", vars.get("name")))),
    }
}

fn fixture(kind: NewPolicyKind) -> &'static str {
    match kind {
        NewPolicyKind::Criterion => include_str!("templates/criterion.fixture.toml.tmpl"),
        NewPolicyKind::Attribute => include_str!("templates/attribute.fixture.toml.tmpl"),
    }
}

/// What to add to an existing tenant.toml.
fn snippet(kind: NewPolicyKind, vars: &Vars) -> String {
    match kind {
        NewPolicyKind::Criterion => vars.render(
            "# in one of its [[target_resolution]] configs:\n[[target_resolution.criteria]]\ntype = \"{{TYPE}}\"\npriority = 0\n",
        ),
        NewPolicyKind::Attribute => vars.render(include_str!("templates/attribute.tenant.toml.tmpl")),
    }
}

/// Fails, naming them all, when any file to write exists already (or the
/// policy exists in the other engine, which the loader would refuse).
fn refuse_to_overwrite(dir: &Path, vars: &Vars, files: &[(PathBuf, Content)]) -> anyhow::Result<()> {
    let other_engine = if vars.get("ext") == "rhai" { "wasm" } else { "rhai" };
    let twin = Path::new(vars.get("kind_dir")).join(format!("{}.{other_engine}", vars.get("name")));
    let existing: Vec<String> = files
        .iter()
        .map(|(rel, _)| rel)
        .chain(std::iter::once(&twin))
        .map(|rel| dir.join(rel))
        .filter(|path| fs::symlink_metadata(path).is_ok())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "refusing to overwrite {}: nothing was written (remove them, or pick another name or --dir)",
            existing.join(", ")
        );
    }
    Ok(())
}

fn write(path: &Path, content: &Content) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match content {
        Content::Text(text) => fs::write(path, text).with_context(|| format!("cannot write {}", path.display())),
        Content::Link(target) => link(target, path),
    }
}

#[cfg(unix)]
fn link(target: &Path, path: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(target, path).with_context(|| format!("cannot link {}", path.display()))
}

#[cfg(not(unix))]
fn link(target: &Path, path: &Path) -> anyhow::Result<()> {
    std::os::windows::fs::symlink_file(target, path).with_context(|| {
        format!("cannot link {} (copy {} there after each build instead)", path.display(), target.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case_and_their_criterion_type_is_upper_case() {
        assert_eq!(PolicyName::parse("top_spender2").unwrap().criterion_type(), "TOP_SPENDER2");
        for bad in ["", "TopSpender", "top-spender", "2nd", "_x", "a/b", &"x".repeat(65)] {
            let error = PolicyName::parse(bad).unwrap_err().to_string();
            assert!(error.contains("snake_case"), "{bad}: {error}");
        }
    }

    #[test]
    fn templates_leave_no_placeholder() {
        let name = PolicyName::parse("top_spender").unwrap();
        for kind in [NewPolicyKind::Criterion, NewPolicyKind::Attribute] {
            for engine in [Engine::Rhai, Engine::Wasm] {
                let vars = Vars::new(kind, &name, engine).with_sdk(Path::new("/sdk"));
                for template in [
                    include_str!("templates/Cargo.toml.tmpl"),
                    include_str!("templates/criterion.rs.tmpl"),
                    include_str!("templates/attribute.rs.tmpl"),
                    include_str!("templates/criterion.rhai.tmpl"),
                    include_str!("templates/attribute.rhai.tmpl"),
                    include_str!("templates/criterion.tenant.toml.tmpl"),
                    include_str!("templates/attribute.tenant.toml.tmpl"),
                    fixture(kind),
                ] {
                    let text = vars.render(template);
                    assert!(!text.contains("{{"), "{text}");
                }
            }
        }
    }
}
