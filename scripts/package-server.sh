#!/usr/bin/env bash
# package-server.sh - `npm run package:server`: the server as a release tarball (docs/deployment.md).
#
# dist/packages/ros2-enclave-server-<version>.tgz (npm pack layout: one folder, package/) holds what the server
# and enclavectl run, and nothing of tests, benches, TypeScript sources or source maps:
#   bin/  dist/server/  dist/client/  dist/ui/  migrations/  server/policy/assets/  package.json  npm-shrinkwrap.json
# (the lock file under the name npm pack keeps)
# Installed on a machine with Node 20 by:
#   tar -xzf ros2-enclave-server-<version>.tgz && cd package && npm ci --omit=dev && node bin/enclave-server.js
# The Dockerfile installs the same tarball the same way.
#
# Needs the dev dependencies (typescript): run after `npm ci` (or `npm ci --ignore-scripts`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

OUT=$ROOT/dist/packages
STAGE=$OUT/.server-stage
VERSION=$(node -p "require('./package.json').version")
NAME=ros2-enclave-server-$VERSION.tgz
say() { printf '[package-server] %s\n' "$*"; }

rm -rf "$STAGE"
mkdir -p "$STAGE/server/policy"
# A fresh output folder: nothing stale from an older build (or from tests compiled into dist/) gets in.
npx --no-install tsc -p tsconfig.build.json --outDir "$STAGE/dist" --sourceMap false
say "compiled server/ and client/ into the release ($(find "$STAGE/dist" -name '*.js' | wc -l) files)"
# The web console (/ui/), where the compiled server looks for it: dist/ui next to dist/server.
node --import tsx scripts/build-ui.ts "$STAGE/dist/ui" | sed 's/^/[package-server] /'
cp -a bin migrations "$STAGE/"
cp -a server/policy/assets "$STAGE/server/policy/"

# The release's package.json: the same dependencies (npm ci needs them in step with the lock file), and no
# scripts that need the sources or the dev dependencies (`prepare` would run tsc during npm ci).
node -e '
  const fs = require("fs");
  const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"));
  pkg.scripts = { start: "node bin/enclave-server.js" };
  fs.writeFileSync(process.argv[1], JSON.stringify(pkg, null, 2) + "\n");
' "$STAGE/package.json"
# npm pack never ships a package-lock.json; npm-shrinkwrap.json is the lock file a published package carries,
# and npm ci installs from it just the same.
cp package-lock.json "$STAGE/npm-shrinkwrap.json"

mkdir -p "$OUT"
rm -f "$OUT/$NAME"
( cd "$STAGE" && npm pack --silent --pack-destination "$OUT" > /dev/null )
[ -s "$OUT/$NAME" ] || { echo "package-server: npm pack did not write $OUT/$NAME" >&2; exit 1; }

# What must never be in a release.
if unwanted=$(tar -tzf "$OUT/$NAME" | grep -E '^package/(test|bench|scripts|docs|tools|node_modules|data|secrets)/|\.ts$|\.map$'); then
  echo "package-server: the tarball contains files it must not: $unwanted" >&2
  exit 1
fi
rm -rf "$STAGE"
say "$OUT/$NAME: $(tar -tzf "$OUT/$NAME" | grep -vc '/$') files, $(du -k "$OUT/$NAME" | cut -f1) KiB"
