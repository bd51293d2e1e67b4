#!/usr/bin/env bash
# npm run lint: every check of the code's form, each reported by name, all run even when
# one fails; exits 1 if any failed.
#   eslint            type-aware rules (eslint.config.mjs)
#   prettier          TypeScript and JSON formatted (.prettierrc.json, .prettierignore)
#   ruff format/check Python formatted and linted (pyproject.toml)
#   line length       no line over 120 characters in the product's TypeScript and Python
#
#   infra/lint.sh                  the whole tree
#   infra/lint.sh FILE...          only these files (eslint skipped: it needs the project's tsconfig)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUFF="${TUNEFLEET_HOME:-$HOME/.tunefleet}/bin/ruff"
MAX=120
failed=()
check() { # name, command...
  local name="$1"; shift
  if ! "$@"; then failed+=("$name"); fi
}

if [ $# -gt 0 ]; then
  ts=(); py=()
  for f in "$@"; do
    f="$(realpath "$f")"
    case "$f" in *.py) py+=("$f") ;; *) ts+=("$f") ;; esac
  done
  set -- "${ts[@]}" "${py[@]}"
  lines=("$@")
else
  check eslint npx --no-install eslint .
  ts=(.); py=(.)
  # generated and recorded files are not checked for length (events.schema.json, fixtures)
  mapfile -t lines < <(git ls-files 'shared/*.ts' 'workflows/*.ts' 'scheduler/*.ts' 'agent/*.ts' 'infra/*.ts' \
    'agent/*.py' 'shared/*.py' 'infra/*.py' 'shared/*.sh' 'workflows/*.sh' 'scheduler/*.sh' 'agent/*.sh' 'infra/*.sh')
fi
# the project's settings also for files given from elsewhere
[ ${#ts[@]} -gt 0 ] &&
  check prettier npx --no-install prettier --config "$ROOT/.prettierrc.json" --check --log-level warn "${ts[@]}"
if [ ${#py[@]} -gt 0 ]; then
  if [ -x "$RUFF" ]; then
    check "ruff format" "$RUFF" format --config "$ROOT/pyproject.toml" --check --quiet "${py[@]}"
    check "ruff check" "$RUFF" check --config "$ROOT/pyproject.toml" --quiet "${py[@]}"
  else
    echo "lint: $RUFF missing: run infra/bootstrap.sh tools" >&2
    failed+=("ruff")
  fi
fi
long_lines() { # characters, not bytes (mawk counts bytes)
  [ ${#lines[@]} -gt 0 ] || return 0
  node -e '
    const { readFileSync } = require("node:fs");
    const max = Number(process.argv[1]);
    let found = 0;
    for (const f of process.argv.slice(2)) {
      readFileSync(f, "utf8").split("\n").forEach((line, i) => {
        const n = [...line].length;
        if (n > max) console.log(`${f}:${i + 1}: ${n} characters (at most ${max})`), found++;
      });
    }
    process.exit(found ? 1 : 0);
  ' "$MAX" "${lines[@]}"
}
check "line length" long_lines

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint failed: ${failed[*]}" >&2
  exit 1
fi
echo "lint: clean"
