#!/usr/bin/env bash
# npm test: every suite — lint, mocha unit, mocha integration (real nats-server and
# Temporal dev server on free ports, started and stopped by the harness), pytest for the
# trainer. Ends with each suite's time, a check that no process the suite started is
# still running (stopped and counted as a failure if one is), and one line
# "N passed, N failed[, N skipped]" summed over all suites; exits non-zero if anything failed.
# Every process the suites start carries TUNEFLEET_TEST_RUN in its environment
# (test/harness/procs.ts finds them by it).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TUNEFLEET_HOME="${TUNEFLEET_HOME:-$HOME/.tunefleet}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
export TUNEFLEET_TEST_RUN="run-$$-$(date +%s%N)"
T_START=$(date +%s)

# what the suites need and a fresh clone lacks (cached and quick when already there)
bash infra/bootstrap.sh npm tools trainer judge browser >&2 || { echo "0 passed, 1 failed"; exit 1; }

passed=0; failed=0; skipped=0
add() { passed=$((passed + $1)); failed=$((failed + $2)); skipped=$((skipped + $3)); }
times=""
t0=0
begin() { echo "== $1"; t0=$(date +%s); }
took() { times="$times$(printf '  %-12s %5d s' "$1" $(( $(date +%s) - t0 )))"$'\n'; }

# lint and pytest run beside the mocha suites at the lowest CPU priority (nice 19, below
# the trainers the suites start at nice 10): they take mostly the cycles the suites leave
# idle (the integration and chaos suites wait on timeouts and heartbeats much of the time;
# pytest's deadlines are generous), and what is left of them runs alone after the mocha
# suites. Their output is printed, and their results counted, after the mocha suites.
nice -n 19 bash infra/lint.sh > "$OUT/lint.txt" 2>&1 &
lint_pid=$!
lint_t0=$(date +%s)

run_mocha() { # name, then mocha args; counts from mocha's JSON results
  local name="$1"; shift
  begin "mocha $name"
  # hooks.js: the root hooks that stop whatever a failed test left running
  npx --no-install mocha --require dist/test/harness/hooks.js "$@" --reporter spec --reporter-option "maxDiffSize=4000" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  local p f s
  p=$(grep -Eo '^ +[0-9]+ passing' "$OUT/$name.txt" | grep -Eo '[0-9]+' | tail -1)
  f=$(grep -Eo '^ +[0-9]+ failing' "$OUT/$name.txt" | grep -Eo '[0-9]+' | tail -1)
  s=$(grep -Eo '^ +[0-9]+ pending' "$OUT/$name.txt" | grep -Eo '[0-9]+' | tail -1)
  p=${p:-0}; f=${f:-0}; s=${s:-0}
  # a crash before mocha's summary still counts as a failure
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  add "$p" "$f" "$s"
  took "$name"
}
run_mocha unit 'dist/test/unit/**/*.test.js'

# pytest: started now (lint is done by the end of the unit suite), reported at the end
wait "$lint_pid"; lint_rc=$?
lint_s=$(( $(date +%s) - lint_t0 ))
pytest_t0=$(date +%s)
( cd agent/trainer && exec nice -n 19 "$TUNEFLEET_HOME/bin/python" -m pytest -q -p no:cacheprovider \
    --junitxml="$OUT/pytest.xml" tests ) > "$OUT/pytest.txt" 2>&1 &
pytest_pid=$!
run_mocha integration --timeout 600000 'dist/test/integration/**/*.test.js'
# the chaos scenarios tagged [ci]; `npm run chaos` runs them all
run_mocha chaos --timeout 600000 --grep '\[ci\]' 'dist/test/chaos/**/*.test.js'

echo "== lint (beside the unit suite)"
cat "$OUT/lint.txt"
if [ "$lint_rc" -eq 0 ]; then add 1 0 0; else add 0 1 0; fi
times="$times$(printf '  %-12s %5d s (beside the mocha suites)' lint "$lint_s")"$'\n'

echo "== pytest trainer (beside the integration and chaos suites)"
wait "$pytest_pid"; rc=$?
cat "$OUT/pytest.txt"
if [ -f "$OUT/pytest.xml" ]; then
  read -r t f e s < <(python3 -c "
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == 'testsuite' else list(r)
g = lambda k: sum(int(x.get(k, 0)) for x in suites)
print(g('tests'), g('failures'), g('errors'), g('skipped'))" "$OUT/pytest.xml")
  add $((t - f - e - s)) $((f + e)) "$s"
  if [ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ]; then add 0 1 0; fi
else
  add 0 1 0
fi
times="$times$(printf '  %-12s %5d s (beside the mocha suites)' pytest $(( $(date +%s) - pytest_t0 )))"$'\n'

echo "== processes left by the suite"
if node dist/test/harness/procs.js "$TUNEFLEET_TEST_RUN"; then add 1 0 0; else add 0 1 0; fi

echo "== time per suite"
printf '%s' "$times"
printf '  %-12s %5d s\n' total $(( $(date +%s) - T_START ))

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
