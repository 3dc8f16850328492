//! The Rust SDK for policy crates outside this repository: the sources of
//! `plugins/sdk` and the WIT world they generate from, built into `reten`,
//! with a Cargo.toml of their own (no workspace to inherit from), written on
//! first use to `<root>/<reten version>-<digest of the files>/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// The SDK as the crates outside this repository get it: its path under the
/// versioned folder, and its text.
const SDK_FILES: &[(&str, &str)] = &[
    ("reten-policy-sdk/Cargo.toml", include_str!("../templates/sdk.Cargo.toml")),
    ("reten-policy-sdk/src/lib.rs", include_str!("../../../../plugins/sdk/src/lib.rs")),
    ("reten-policy-sdk/src/arena.rs", include_str!("../../../../plugins/sdk/src/arena.rs")),
    ("reten-policy-sdk/src/bindings.rs", include_str!("../../../../plugins/sdk/src/bindings.rs")),
    ("reten-policy-sdk/src/helpers.rs", include_str!("../../../../plugins/sdk/src/helpers.rs")),
    ("reten-policy-sdk/src/log.rs", include_str!("../../../../plugins/sdk/src/log.rs")),
    ("reten-policy-sdk/src/testing.rs", include_str!("../../../../plugins/sdk/src/testing.rs")),
    ("wit/v0.2/policy.wit", include_str!("../../../../plugins/wit/v0.2/policy.wit")),
];

/// The folder the SDK versions go in.
pub(super) fn root(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = match flag {
        Some(dir) => dir.to_owned(),
        None => match std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
            Some(data) => data.join("reten/sdk"),
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .context("cannot tell where to put the Rust SDK: set RETEN_SDK_DIR (or --sdk-dir)")?;
                PathBuf::from(home).join(".local/share/reten/sdk")
            }
        },
    };
    std::path::absolute(&root).with_context(|| format!("cannot resolve {}", root.display()))
}

/// The SDK's folder name: this reten's version and a digest of the files, so
/// that two builds of reten with different SDKs never share a folder.
fn folder_name() -> String {
    let mut digest = Sha256::new();
    for (path, text) in SDK_FILES {
        digest.update(path.as_bytes());
        digest.update([0]);
        digest.update(text.as_bytes());
        digest.update([0]);
    }
    format!("{}-{}", env!("CARGO_PKG_VERSION"), &hex::encode(digest.finalize())[..12])
}

/// Writes the SDK under `root` unless it is there, and returns its crate's
/// folder. The files are written aside and the folder renamed into place, so
/// a folder that exists is complete.
pub(super) fn install(root: &Path) -> anyhow::Result<PathBuf> {
    let folder = root.join(folder_name());
    let crate_dir = folder.join("reten-policy-sdk");
    if folder.is_dir() {
        return Ok(crate_dir);
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(root)
        .with_context(|| format!("cannot write into {}", root.display()))?;
    for (rel, text) in SDK_FILES {
        let path = staging.path().join(rel);
        fs::create_dir_all(path.parent().expect("every SDK file is in a folder"))
            .with_context(|| format!("cannot write into {}", staging.path().display()))?;
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Err(e) = fs::rename(staging.path(), &folder) {
        // Another reten may have put the same SDK there meanwhile.
        if !folder.is_dir() {
            return Err(e).with_context(|| format!("cannot write {}", folder.display()));
        }
    }
    Ok(crate_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_sdk_has_every_source_file_of_plugins_sdk() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        let mut on_disk: Vec<String> =
            fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SDK_FILES
            .iter()
            .filter_map(|(path, _)| path.strip_prefix("reten-policy-sdk/src/"))
            .map(str::to_owned)
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    /// The standalone SDK Cargo.toml must ask for what the plugins workspace
    /// builds the SDK with.
    #[test]
    fn the_standalone_sdk_manifest_matches_the_plugins_workspace() {
        let parse = |text: &str| text.parse::<toml::Table>().unwrap();
        let standalone = parse(include_str!("../templates/sdk.Cargo.toml"));
        let workspace = parse(include_str!("../../../../plugins/Cargo.toml"));
        let sdk = parse(include_str!("../../../../plugins/sdk/Cargo.toml"));
        let deps = standalone["dependencies"].as_table().unwrap();
        let names = |t: &toml::Table| t.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(deps), names(sdk["dependencies"].as_table().unwrap()));
        for (name, spec) in deps {
            assert_eq!(Some(spec), workspace["workspace"]["dependencies"].get(name), "{name}");
        }
        assert_eq!(standalone["package"]["name"], sdk["package"]["name"]);
        assert_eq!(standalone["package"]["version"], workspace["workspace"]["package"]["version"]);
        assert_eq!(standalone["package"]["edition"], workspace["workspace"]["package"]["edition"]);
    }

    #[test]
    fn the_sdk_is_written_once_into_a_versioned_folder() {
        let root = tempfile::tempdir().unwrap();
        let crate_dir = install(root.path()).unwrap();
        assert_eq!(crate_dir, root.path().join(folder_name()).join("reten-policy-sdk"));
        assert!(crate_dir.join("../wit/v0.2/policy.wit").is_file());
        fs::write(crate_dir.join("src/lib.rs"), "changed").unwrap();
        assert_eq!(install(root.path()).unwrap(), crate_dir);
        assert_eq!(fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap(), "changed", "an existing folder is kept");
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no staging folder is left: {names:?}");
    }
}
