#!/usr/bin/env bash
# Runs the plugins' own unit tests (each crate's `src/tests.rs`, the SDK's
# tests) natively: a guest's logic is plain Rust, so it is tested on the
# host's target, and plugins/build.sh builds the same crates for wasm32.
# Every crate of the workspace builds natively, so none is left out.
#
# Runnable from any directory; extra arguments go to `cargo test`.
# Usage: [PLUGINS_TARGET_DIR=dir] plugins/test.sh [cargo test args]
# PLUGINS_TARGET_DIR is Cargo's target directory for this workspace (default
# plugins/target, shared with plugins/build.sh); a relative one is taken from
# the caller's directory.
set -euo pipefail

plugins="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${PLUGINS_TARGET_DIR:-$plugins/target}"
mkdir -p "$target_dir"
CARGO_TARGET_DIR="$(cd "$target_dir" && pwd)"
export CARGO_TARGET_DIR
cd "$plugins"

cargo test --workspace --locked "$@"
