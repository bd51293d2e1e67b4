#!/usr/bin/env bash
# Run the trainer's pytest suite on the oldest supported stack (agent/trainer/requirements-oldest.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TUNEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tunefleet}"
REQ="$ROOT/agent/trainer/requirements-oldest.txt"
hash=$({ cat "$REQ"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
ENV="$CACHE/pyenv-oldest-$hash"
if [ ! -f "$ENV/.complete" ]; then
  rm -rf "$ENV"
  python3 -m venv "$ENV"
  "$ENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  touch "$ENV/.complete"
fi
"$ENV/bin/python" -c 'import torch, transformers, peft; print(f"oldest stack: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'
cd "$ROOT/agent/trainer" && "$ENV/bin/python" -m pytest -q -p no:cacheprovider tests
