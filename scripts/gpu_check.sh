#!/usr/bin/env bash
# `make gpu-check`: on a machine with a CUDA GPU, build the extension in place, compile the Triton
# kernels into the cache, run the GPU tests, compute-sanitizer (memcheck, racecheck) over every op, and
# print the GPU benchmark table. Uses the python that already has torch, triton, nvcc's matching
# toolkit, ninja and pytest (no venv, no network); PYTHON=... picks another interpreter.
#
#   scripts/gpu_check.sh [--dry-run]    # --dry-run: list the steps, their time budgets and the
#                                       # compute-sanitizer found; runs nothing, needs no GPU
#
# Every step has a time budget, and the budgets plus each step's kill grace fit in TOTAL_SECONDS, under
# the 8 minutes a lent GPU gives (the benchmark takes what is left, and is skipped under a minute). A
# failed step does not stop the later ones; each step says what its pass proved, and the exit status
# is non-zero if any failed. Everything printed is also written to $GPU_CHECK_OUT/gpu_check.log
# (default build/gpu-check/); the benchmark report (benchmarks.report: CSV, PNG, Markdown) goes beside
# it and its table into benchmarks/RESULTS.md's GPU section (it needs pytest-benchmark and matplotlib).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT_DIR=${GPU_CHECK_OUT:-build/gpu-check}
TOTAL_SECONDS=450  # 8 minutes less 30 s for start-up and the final report
KILL_AFTER=5       # seconds between a step's TERM and KILL
BENCH_MIN=60

# name | budget in seconds | what a pass proves
PLAN=(
  "build|110|the C++/CUDA operator library compiles against this torch and CUDA toolkit"
  "warm-triton|45|every Triton kernel specialization the tests use compiles for this GPU (now cached)"
  "tests-cuda|55|the CUDA backend matches the float64 reference (all shapes, layouts, dtypes, operand sets) \
and the CPU kernel bit for bit, replays in CUDA graphs, compiles without recompiling, passes opcheck"
  "tests-triton|55|the same for the Triton backend"
  "tests-64-bit|25|offsets past 2**31 elements are right on both backends (skipped with under 35 GB)"
  "other-gpu-tests|25|the gpu-marked tests elsewhere (sampler, w2s_loss, backend switch) pass"
  "memcheck|30|no op on either backend reads or writes outside its tensors or misaligned"
  "racecheck|30|no op on either backend has a shared-memory race"
)
PYTEST="\"\$PYTHON\" -m pytest -q -p no:cacheprovider"
SANITIZE="PYTORCH_NO_CUDA_MEMORY_CACHING=1 \"\$SANITIZER\" --error-exitcode 1"
declare -A COMMAND=(
  [build]="\"\$PYTHON\" setup.py -q build_ext --inplace"
  [warm-triton]="\"\$PYTHON\" tests/gpu/warm_triton_cache.py"
  [tests-cuda]="$PYTEST tests/gpu tests/test_cuda_build.py -k 'not triton and not 64_bit'"
  [tests-triton]="$PYTEST tests/gpu -k 'triton and not 64_bit'"
  [tests-64-bit]="$PYTEST tests/gpu -k 64_bit"
  [other-gpu-tests]="$PYTEST -m gpu tests --ignore=tests/gpu --continue-on-collection-errors"
  [memcheck]="$SANITIZE --tool memcheck \"\$PYTHON\" tests/gpu/sanitize_ops.py"
  [racecheck]="$SANITIZE --tool racecheck \"\$PYTHON\" tests/gpu/sanitize_ops.py"
)

find_sanitizer() {  # $COMPUTE_SANITIZER, PATH, then the toolkit folders (nvcc may be a wrapper elsewhere)
  local candidates=("${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer)") nvcc dir
  for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do [ -n "$dir" ] && candidates+=("$dir/bin/compute-sanitizer"); done
  nvcc=$(command -v nvcc) && candidates+=("$(dirname "$(readlink -f "$nvcc")")/compute-sanitizer")
  dir=$("$PYTHON" -c "from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or '')" 2>/dev/null) &&
    [ -n "$dir" ] && candidates+=("$dir/bin/compute-sanitizer")
  candidates+=(/usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer)
  for path in "${candidates[@]}"; do
    if [ -n "$path" ] && [ -x "$path" ]; then echo "$path"; return 0; fi
  done
  return 1
}

case "${1:-}" in
  "") dry_run=0 ;;
  --dry-run) dry_run=1 ;;
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_check.sh: unknown argument '$1' (expected --dry-run or --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "gpu_check.sh: one argument at most, got $#: $*" >&2; exit 2; }
SANITIZER=$(find_sanitizer) || SANITIZER=""

if [ "$dry_run" -eq 1 ]; then
  budget=0
  for entry in "${PLAN[@]}"; do
    IFS='|' read -r name seconds proves <<< "$entry"
    printf 'step %-16s %4d s  proves: %s\n    %s\n' "$name" "$seconds" "$proves" "${COMMAND[$name]}"
    budget=$((budget + seconds + KILL_AFTER))
  done
  printf 'step %-16s %4s    proves: the GPU benchmark table (what is left of %d s, at least %d s, else skipped)\n' \
    bench rest "$TOTAL_SECONDS" "$BENCH_MIN"
  echo "worst case before the benchmark: $budget s (budgets plus ${KILL_AFTER} s kill grace each) of $TOTAL_SECONDS s"
  echo "compute-sanitizer: ${SANITIZER:-not found}"
  exit 0
fi

mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1
status=0
step() {  # step NAME SECONDS PROVES: run COMMAND[NAME] with a timeout, say what it proved
  local name=$1 limit=$2 proves=$3 t0=$SECONDS rc
  echo "== $name (budget ${limit} s): ${COMMAND[$name]}"
  timeout --kill-after=$KILL_AFTER "$limit" bash -c "${COMMAND[$name]}"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "== $name passed after $((SECONDS - t0)) s: $proves"
  else
    echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo ', timed out')) after $((SECONDS - t0)) s;" \
      "NOT shown: $proves"
    status=1
  fi
}

date -u "+== gpu-check %Y-%m-%d %H:%M UTC on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
if ! "$PYTHON" -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check: $PYTHON's torch sees no CUDA device; nothing to check"
  exit 1
fi
export PYTHON SANITIZER MAX_JOBS=${MAX_JOBS:-$(nproc)}  # MAX_JOBS: ninja's parallel compile jobs
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "== compute-sanitizer: ${SANITIZER:-not found (set COMPUTE_SANITIZER or CUDA_HOME); memcheck and racecheck fail}"
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name seconds proves <<< "$entry"
  step "$name" "$seconds" "$proves"
done
# The benchmark gets the time the steps above left; it starts no new size after its budget.
limit=$((TOTAL_SECONDS - SECONDS))
if [ "$limit" -ge "$BENCH_MIN" ]; then
  COMMAND[bench]="\"\$PYTHON\" -m benchmarks.report --device cuda --budget-s $((limit - 45)) --out-dir \"$OUT_DIR\""
  step bench "$limit" "the GPU benchmark table ran, every provider checked against the float64 reference first"
else
  echo "== bench skipped: ${limit} s left, under ${BENCH_MIN} s"
fi

verdict=$([ "$status" -eq 0 ] && echo passed || echo FAILED)
echo "== gpu-check $verdict after $SECONDS s; log $OUT_DIR/gpu_check.log," \
  "report $OUT_DIR/cuda-*.{md,csv,png} and benchmarks/RESULTS.md"
exit $status
