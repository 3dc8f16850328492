//! `reten policy build`: one Wasm policy crate into one component, with
//! nothing installed but Rust.
//!
//! Cargo builds only that crate, as a core module for
//! `wasm32-unknown-unknown` (release, `panic = "abort"`), which carries its
//! WIT world in a custom section (`wit-bindgen` puts it there). Then
//! `wit-component`, the same encoder `plugins/componentize` uses, wraps the
//! module into a validated component. Cargo's own target folder applies
//! (`CARGO_TARGET_DIR`, a workspace's), so a machine may share one between
//! crates; the component goes to `<crate-dir>/target/<crate name>.wasm`
//! either way, where the crate's `criteria/` or `attributes/` link points.

use std::fs;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use reten_host::config::BuildArgs;

/// The only target a policy builds for: no WASI, so it imports nothing but
/// the host's own interfaces.
const TARGET: &str = "wasm32-unknown-unknown";

/// Builds the crate `args` names and writes its component.
pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let manifest = args.crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{} has no Cargo.toml: give the folder of a policy crate", args.crate_dir.display());
    }
    ensure_target(&args.crate_dir)?;
    let module = cargo_build(&args.crate_dir)?;
    let bytes = fs::read(&module.path).with_context(|| format!("cannot read {}", module.path.display()))?;
    let component = componentize(&bytes).map_err(|e| {
        anyhow!(
            "cannot wrap {} into a component (is its policy exported with reten_policy_sdk::export_criterion! or \
             export_attribute!?): {}",
            module.path.display(),
            one_line(&e)
        )
    })?;
    if !exports_resolve(&component) {
        bail!(
            "{} is no Reten policy: it exports no `resolve` (export one with reten_policy_sdk::export_criterion! or \
             export_attribute!)",
            module.path.display()
        );
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => args.crate_dir.join("target").join(format!("{}.wasm", module.name)),
    };
    write_aside_then_rename(&out, &component)?;
    println!("{}", out.display());
    Ok(())
}

/// Installs the target with rustup when it is missing, or says how to.
fn ensure_target(crate_dir: &Path) -> anyhow::Result<()> {
    // In the crate's folder, so that a rust-toolchain.toml there counts.
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .current_dir(crate_dir)
        .stderr(Stdio::null())
        .output();
    let Ok(libdir) = libdir else {
        // No rustc on the PATH: cargo, below, says what it lacks.
        return Ok(());
    };
    if libdir.status.success() && Path::new(String::from_utf8_lossy(&libdir.stdout).trim()).is_dir() {
        return Ok(());
    }
    eprintln!("the {TARGET} target is not installed: running `rustup target add {TARGET}`");
    let added = Command::new("rustup").args(["target", "add", TARGET]).current_dir(crate_dir).status();
    if !added.is_ok_and(|status| status.success()) {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}

/// The core module cargo built.
struct Module {
    /// The library's name (the crate's, with `_` for `-`).
    name: String,
    path: PathBuf,
}

fn cargo_build(crate_dir: &Path) -> anyhow::Result<Module> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--lib", "--release", "--target", TARGET])
        .args(["--config", "profile.release.panic=\"abort\""])
        // Diagnostics rendered on stderr as usual; the artifacts as JSON.
        .args(["--message-format", "json-render-diagnostics", "--manifest-path", "Cargo.toml"])
        // In the crate's folder, so that its .cargo/config.toml counts.
        .current_dir(crate_dir)
        .stdout(Stdio::piped());
    // A relative target folder still means the caller's.
    if let Some(target_dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        command.env("CARGO_TARGET_DIR", std::path::absolute(target_dir).context("cannot resolve CARGO_TARGET_DIR")?);
    }
    let mut child = command.spawn().map_err(|e| {
        anyhow!("cannot run {}: {e} (is Rust installed? see https://rustup.rs)", cargo.to_string_lossy())
    })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut module = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let (Some(path), Some(name)) = (wasm, message["target"]["name"].as_str()) {
            module = Some(Module { name: name.to_owned(), path: PathBuf::from(path) });
        }
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if !status.success() {
        bail!("cargo could not build {} (its messages are above)", crate_dir.display());
    }
    module.ok_or_else(|| {
        anyhow!("{} built no .wasm: its Cargo.toml needs [lib] crate-type = [\"cdylib\"]", crate_dir.display())
    })
}

/// Wraps a core module that names its WIT world into a validated component.
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default().validate(true).module(module)?.encode()
}

/// Whether the component's world exports the function `resolve`, as both
/// policy worlds do. A crate that never names a world still makes a valid
/// component, of an empty one.
fn exports_resolve(component: &[u8]) -> bool {
    let Ok(wit_component::DecodedWasm::Component(resolve, world)) = wit_component::decode(component) else {
        return false;
    };
    resolve.worlds[world].exports.keys().any(|key| resolve.name_world_key(key) == "resolve")
}

/// An error's chain on one line, whatever the encoder's messages hold.
fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes `bytes` to a hidden file beside `out`, then renames it: a watcher
/// never sees half a component, and ignores the hidden one.
fn write_aside_then_rename(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let file_name = out.file_name().with_context(|| format!("{} is not a file name", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let partial = parent.join(format!(".{}.partial", file_name.to_string_lossy()));
    fs::write(&partial, bytes).with_context(|| format!("cannot write {}", partial.display()))?;
    fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_no_module_are_refused_on_one_line() {
        let error = componentize(b"\0asm\x01\0\0\0 and then garbage").unwrap_err();
        let line = one_line(&error);
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }

    #[test]
    fn a_module_that_names_no_world_makes_a_component_that_is_no_policy() {
        // The smallest core module: the magic number and version 1.
        let component = componentize(b"\0asm\x01\0\0\0").unwrap();
        assert!(!exports_resolve(&component));
    }
}
