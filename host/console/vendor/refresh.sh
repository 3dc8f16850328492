#!/usr/bin/env bash
# Refreshes the vendored Swagger UI (the interactive API reference at
# GET /docs) from its npm registry package, swagger-ui-dist. Only the files
# the page serves are kept, with the package's LICENSE and NOTICE, the
# licenses of what its bundle includes (swagger-ui-bundle.js.LICENSE.txt) and
# a VERSION file.
#
#   host/console/vendor/refresh.sh           # the version pinned in VERSION
#   host/console/vendor/refresh.sh 5.36.0    # another version
#
# The files are embedded in the binary at build time (include_bytes!), so
# a refresh is a commit: review the diff, rebuild, and run scripts/browser-test.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=$here/swagger-ui
version=${1:-$(sed -n 's/^version=//p' "$dest/VERSION")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tar -xzf "$work"/swagger-ui-dist-*.tgz -C "$work"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE swagger-ui-bundle.js.LICENSE.txt; do
    cp "$work/package/$f" "$dest/$f"
done
# The bundle's trailing source-map comment names a file we do not serve.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest/swagger-ui-bundle.js"
sed -i 's#/\*\# sourceMappingURL=[^*]*\*/##' "$dest/swagger-ui.css"
license=$(node -p "require('$work/package/package.json').license" 2>/dev/null || echo Apache-2.0)
printf 'package=swagger-ui-dist\nversion=%s\nlicense=%s\nsource=npm registry, package swagger-ui-dist\n' \
    "$version" "$license" >"$dest/VERSION"
echo "swagger-ui-dist $version vendored into $dest"
