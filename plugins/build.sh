#!/usr/bin/env bash
# Builds every guest policy (plugins/examples/*, plugins/testing/*) as a
# WebAssembly component, into plugins/dist/<name>.wasm.
#
#   1. guests: `cargo build --profile guest --target wasm32-unknown-unknown`
#      (core modules carrying their WIT world in a custom section);
#   2. `reten-componentize` (native) wraps each module into a validated
#      component.
#
# Runnable from any directory; a second run with nothing changed takes a few
# seconds. Usage: [PLUGINS_TARGET_DIR=dir] plugins/build.sh
# PLUGINS_TARGET_DIR is Cargo's target directory for this workspace (default
# plugins/target); a relative one is taken from the caller's directory.
set -euo pipefail

plugins="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${PLUGINS_TARGET_DIR:-$plugins/target}"
mkdir -p "$target_dir"
CARGO_TARGET_DIR="$(cd "$target_dir" && pwd)"
export CARGO_TARGET_DIR
cd "$plugins"

target=wasm32-unknown-unknown
dist="$plugins/dist"
start=$SECONDS

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi

# The guest crates: every crate under examples/ and testing/ (crate name =
# the `name` in its Cargo.toml).
guests=()
for manifest in examples/*/Cargo.toml testing/*/Cargo.toml; do
    name="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)"
    guests+=("$name")
done
packages=()
for name in "${guests[@]}"; do
    packages+=(-p "$name")
done

echo "==> building ${#guests[@]} guests for $target"
cargo build --profile guest --target "$target" "${packages[@]}"

echo "==> building reten-componentize"
cargo build --profile tool -p reten-componentize

modules=()
for name in "${guests[@]}"; do
    module="$CARGO_TARGET_DIR/$target/guest/$name.wasm"
    if [[ ! -f "$module" ]]; then
        echo "build.sh: $module was not built" >&2
        exit 1
    fi
    modules+=("$module")
done

echo "==> componentizing into $dist"
"$CARGO_TARGET_DIR/tool/reten-componentize" "${modules[@]}" --out-dir "$dist" >/dev/null

echo
printf '%-28s %10s\n' component bytes
for name in "${guests[@]}"; do
    printf '%-28s %10s\n' "$name.wasm" "$(wc -c <"$dist/$name.wasm" | tr -d ' ')"
done
echo
echo "${#guests[@]} components in $dist ($((SECONDS - start)) s)"
