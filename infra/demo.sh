#!/usr/bin/env bash
# npm run demo: set up what is missing, start the local stack, run a real fine-tuning job.
# npm run demo -- --ha: the same on the production engines (tunefleet up --ha; builds them the first time).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$(date +%s)
bash "$ROOT/infra/bootstrap.sh"
node "$ROOT/dist/infra/demo.js" "$@"
echo "[demo] total $(( $(date +%s) - t0 )) s (bootstrap included)"
