#!/usr/bin/env bash
# Runs every test marked `multiprocess` (pytest -m multiprocess, so tests added later are included)
# RUNS times each while BURNERS CPU-burning processes compete for the cores, each run under a
# timeout. Prints a per-test summary; exits 1 if any run failed or timed out. Not part of `make test`.
#
#   scripts/stress_multiprocess.sh                 # 20 runs per test, 2 burners, 600 s per run
#   RUNS=5 PYTHON=/path/to/python scripts/stress_multiprocess.sh
#   FILES="tests/test_distributed_sd3.py" scripts/stress_multiprocess.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RUNS=${RUNS:-20}
BURNERS=${BURNERS:-2}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-600}  # above the tests' own 300-s waits
LOG_DIR=${LOG_DIR:-build/stress-multiprocess}
mkdir -p "$LOG_DIR"

# One unit per test file, run with -m multiprocess: a file's multi-process tests share one spawn (a
# module fixture), so running them by node id would repeat that spawn per test. FILES=... picks some.
mapfile -t TESTS < <(if [ -n "${FILES:-}" ]; then printf '%s\n' $FILES; else
    "$PYTHON" -m pytest -q --collect-only -p no:cacheprovider -m multiprocess tests 2>/dev/null | grep '::' |
    cut -d: -f1 | sort -u; fi)
if [ "${#TESTS[@]}" -eq 0 ]; then
    echo "stress_multiprocess: no test is marked multiprocess (or collection failed)" >&2
    exit 1
fi

BURNER_PIDS=()
RUN_PID=
stop_children() {  # only what this script started, by process id
    for pid in "${BURNER_PIDS[@]}" $RUN_PID; do kill "$pid" 2>/dev/null; done
    wait "${BURNER_PIDS[@]}" $RUN_PID 2>/dev/null
}
trap stop_children EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$BURNERS"); do
    sh -c 'while :; do :; done' &
    BURNER_PIDS+=("$!")
done
echo "stress_multiprocess: ${#TESTS[@]} test(s) x $RUNS runs, $BURNERS burners, ${RUN_TIMEOUT_S} s per run; $(uptime)"

total_failed=0
declare -a SUMMARY
for test in "${TESTS[@]}"; do
    passed=0; failed=0; timed_out=0; skipped=0
    slug=$(echo "$test" | tr -c 'A-Za-z0-9_.-' '_')
    for run in $(seq "$RUNS"); do
        log="$LOG_DIR/$slug.run$run.log"
        start=$(date +%s)
        # In the background so that an interrupt reaches the trap at once (timeout passes it on to pytest).
        timeout -k 10 "$RUN_TIMEOUT_S" "$PYTHON" -m pytest -q -p no:cacheprovider -m multiprocess "$test" >"$log" 2>&1 &
        RUN_PID=$!
        wait "$RUN_PID"
        rc=$?
        RUN_PID=
        took=$(( $(date +%s) - start ))
        if [ "$rc" -eq 0 ] && grep -q " skipped" "$log" && ! grep -q " passed" "$log"; then
            skipped=$((skipped + 1)); status=skipped
        elif [ "$rc" -eq 0 ]; then
            passed=$((passed + 1)); status=passed; rm -f "$log"
        elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            timed_out=$((timed_out + 1)); status="TIMED OUT (log: $log)"
        else
            failed=$((failed + 1)); status="FAILED rc=$rc (log: $log)"
        fi
        echo "  $test run $run/$RUNS: $status, ${took} s"
    done
    total_failed=$((total_failed + failed + timed_out))
    SUMMARY+=("$test: $passed passed, $failed failed, $timed_out timed out, $skipped skipped of $RUNS")
done

echo "stress_multiprocess summary ($(uptime)):"
printf '  %s\n' "${SUMMARY[@]}"
if [ "$total_failed" -ne 0 ]; then
    echo "stress_multiprocess: $total_failed failing run(s)"
    exit 1
fi
echo "stress_multiprocess: no failures"
