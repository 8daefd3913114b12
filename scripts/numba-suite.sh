#!/usr/bin/env bash
# numba-cuda's own test suite (the one its wheel ships) on vgpu's software GPU.
#
#   scripts/numba-suite.sh                      # the whole suite (hours on 2 cores)
#   scripts/numba-suite.sh cudadrv              # one directory
#   scripts/numba-suite.sh cudapy/test_array.py cudapy/test_math.py::TestCudaMath
#   scripts/numba-suite.sh --out DIR --timeout 300 ...
#
# Needs `cargo build --workspace` (target/debug/vgpu and the shims) and
# `scripts/test-deps.sh numba numba_suite`. Starts its own
# `vgpu host --driver emulated`, runs every test file as its own guest
# process (pytest --import-mode=importlib with tests/py/numba_suite's plugin)
# and writes DIR/summary.txt (totals, per-file counts, each failure's first
# line) and DIR/outcomes.tsv; DIR defaults to target/numba-suite.
# tests/py/numba_suite/run.py --help lists every option.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VGPU_CACHE:-$REPO/.cache}/venv-numba/bin/python"
if ! "$PY" -c 'import numba_cuda, pytest, pytest_timeout' 2>/dev/null; then
    echo "numba-suite: no numba venv with pytest at $PY: run scripts/test-deps.sh numba numba_suite" >&2
    exit 2
fi
exec "$PY" "$REPO/tests/py/numba_suite/run.py" "$@"
