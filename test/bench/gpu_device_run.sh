#!/usr/bin/env bash
# The GPU checks, as one prepared run on an NVIDIA machine with python3 + torch + transformers + peft
# (no internet). Carry the wheels the host lacks in .whl/ (bitsandbytes, jsonschema and its needs,
# rouge-score, nltk). Everything lands in $OUT:
#   nvidia-smi.csv / nvidia-smi.xml   real outputs of the two commands agent/gpu.ts runs (parser fixtures)
#   pytest.log                        the trainer tests on CUDA, incl. QLoRA + 8-bit AdamW and exact resume
#   memory-calibration.json           peak memory of a grid of jobs (test/bench/memory_calibrate.py)
#   gpu-bench.json                    tokens/s, MFU, peak memory vs HF Trainer (test/bench/gpu_bench.py)
set -u
OUT=${OUT:-/tmp/tunefleet-gpu}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
fields=$(sed -n "/NVIDIA_SMI_FIELDS = \[/,/\]/p" agent/gpu.ts | grep -o "'[a-z_.]*'" | tr -d "'" | paste -sd, -)
nvidia-smi --query-gpu="$fields" --format=csv,noheader,nounits >"$OUT/nvidia-smi.csv" 2>&1; echo "csv exit $?"
nvidia-smi -q -x >"$OUT/nvidia-smi.xml" 2>&1; echo "xml exit $?"
python3 -c "import torch, transformers, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/versions.txt"
(cd agent/trainer && timeout "${PYTEST_S:-150}" python3 -m pytest -q -p no:cacheprovider tests -k "${PYTEST_K:-cuda or kill9 or resume or every_method or gradient_checkpointing or speed}" 2>&1) | tail -40 >"$OUT/pytest.log"; tail -3 "$OUT/pytest.log"
timeout "${CAL_S:-170}" python3 test/bench/memory_calibrate.py --out "$OUT" 2>&1 | grep '^{"shape"' | cut -c1-400 | tee "$OUT/calibrate.log"
timeout "${BENCH_S:-420}" python3 test/bench/gpu_bench.py --steps 15 --warmup 4 --out "$OUT" 2>&1 | grep -v '^{"type"' | tail -30 >"$OUT/bench.log"; tail -22 "$OUT/bench.log"
