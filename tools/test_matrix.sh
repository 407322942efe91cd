#!/usr/bin/env bash
# The test suite under each CPU kernel set and thread count a user's machine may pick:
# torch's ATen capability (default / avx2 / what the CPU offers), MKL capped at AVX2, and one or
# two OpenMP threads. Results of different code paths differ in the last bits between these, so
# every float comparison in tests/ must hold under all of them. Extra arguments go to pytest
# (e.g. `tools/test_matrix.sh tests/test_modeling.py`).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
settings=(
  "OMP_NUM_THREADS=2"
  "OMP_NUM_THREADS=1"
  "ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=2"
  "ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1"
  "ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2"
  "ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1"
  "MKL_ENABLE_INSTRUCTIONS=AVX2 OMP_NUM_THREADS=2"
)
failed=0
for s in "${settings[@]}"; do
  printf '[matrix] %-48s ' "$s"
  if out=$(env $s "$PY" -m pytest -q -p no:cacheprovider "${@:-tests}" 2>&1); then
    echo "ok   $(tail -n 1 <<<"$out")"
  else
    echo "FAIL $(tail -n 1 <<<"$out")"
    grep -E '^(FAILED|ERROR)' <<<"$out" | sed 's/^/[matrix]     /'
    failed=1
  fi
done
exit $failed
