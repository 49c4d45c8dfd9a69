#!/usr/bin/env bash
# Debian's Chromium and the playwright-core npm package for the dashboard's browser test
# (crates/server/tests/browser.rs). .ci/run runs this in the background before .ci/llama.sh,
# so the two never run apt-get at the same time.
set -euo pipefail
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
npm_dir=/var/tmp/stratus-npm
[ -f "$npm_dir/node_modules/playwright-core/package.json" ] ||
  npm install --prefix "$npm_dir" --no-audit --no-fund --silent playwright-core@1.65.1
echo "chromium $(chromium --version 2>/dev/null || true); playwright-core in $npm_dir"
