#!/usr/bin/env bash
# The CUDA backend on a real GPU, in one go (about 5 minutes at most):
#   1. set up: the machine's own python3 (it has numba, numba-cuda, PyTorch with CUDA, pytest,
#      hypothesis, numpy, pyyaml, safetensors, pillow); what netspec needs beyond that (pydantic and
#      its three helpers) comes as wheels in .whl/, installed with pip --no-index (nothing outside the
#      machine can be reached from it, and this repo's .venv is Python 3.11 for this machine's CPU
#      image, so it is not carried);
#   2. the CUDA tests (tests/cuda) on the GPU, without the simulator;
#   3. tools/gpu_bench.py: ResNet-50, VGG-16 and U-Net at batch 1 and 32 against PyTorch (cuDNN),
#      a table of medians after warm-up with ratios.
# Every step says what it could not do and the script goes on; the exit status is the tests'.
#
# Before (on the development machine, once; needs pip and network there):
#     bash tools/gpu_check.sh --fetch-wheels     # downloads the wheels into .whl/ (git-ignored)
# Then, through the device tool, from the repository root:
#     run(command="bash tools/gpu_check.sh", carry=[".whl"], timeout_s=420)
# Environment: PYTHON (default python3), TEST_TIMEOUT (s, default 150), BENCH_BUDGET (s, default 170),
# BENCH_SPECS (zoo names, default gpu_bench.py's).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
WHEELS="$ROOT/.whl"

if [ "${1:-}" = "--fetch-wheels" ]; then
    # pydantic's version pair as in this repo's .venv when there is one (they must match each other)
    VENV_PY="$ROOT/.venv/bin/python"
    pyd=2.14.4; core=2.50.5
    if [ -x "$VENV_PY" ]; then
        pyd=$("$VENV_PY" -c "import pydantic; print(pydantic.VERSION)" 2>/dev/null || echo $pyd)
        core=$("$VENV_PY" -c "import pydantic_core; print(pydantic_core.__version__)" 2>/dev/null || echo $core)
    fi
    mkdir -p "$WHEELS"
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    "${VENV_PY:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" \
        "pydantic==$pyd" "pydantic-core==$core" annotated-types typing-inspection
    ls -l "$WHEELS"
    exit $?
fi

say() { printf '\n== %s\n' "$*"; }
unset NUMBA_ENABLE_CUDASIM   # real hardware, never the simulator
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

say "1. setup"
if ! command -v "$PY" >/dev/null; then echo "gpu_check: no $PY here; set PYTHON"; exit 2; fi
"$PY" --version
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || echo "gpu_check: nvidia-smi not found"
missing=$("$PY" - <<'EOF'
import importlib
need = ["numpy", "numba", "yaml", "pydantic", "safetensors", "PIL", "pytest", "hypothesis"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: missing for $PY: $missing"
    if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/netspec-site \
            "$WHEELS"/*.whl && export PYTHONPATH="/tmp/netspec-site${PYTHONPATH:+:$PYTHONPATH}" \
            && echo "gpu_check: installed $(ls "$WHEELS" | tr '\n' ' ')into /tmp/netspec-site" \
            || echo "gpu_check: could not install the wheels in .whl/"
    else
        echo "gpu_check: no .whl/ carried (run 'bash tools/gpu_check.sh --fetch-wheels' here first, then carry .whl)"
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF'
import importlib, sys
for m in ("numba", "numba_cuda", "torch", "pydantic"):
    try:
        mod = importlib.import_module(m)
        print(f"  {m} {getattr(mod, '__version__', getattr(mod, 'VERSION', '?'))}")
    except Exception as e:
        print(f"  {m}: not importable ({type(e).__name__}: {e})")
try:
    from numba import cuda
    print("  numba.cuda.is_available():", cuda.is_available())
    if cuda.is_available():
        d = cuda.get_current_device()
        print("  device:", d.name.decode() if isinstance(d.name, bytes) else d.name, "cc", d.compute_capability)
except Exception as e:
    print(f"  numba.cuda: {type(e).__name__}: {e}")
try:
    import netspec.backends.cuda as nc
    print("  netspec CUDA backend available:", nc.available())
except Exception as e:
    print(f"  netspec does not import: {type(e).__name__}: {e}")
EOF

say "2. CUDA tests on the GPU (tests/cuda, no simulator)"
timeout "${TEST_TIMEOUT:-150}" "$PY" -m pytest tests/cuda -v --tb=short -p no:cacheprovider --maxfail=25 -rs
tests_rc=$?
[ $tests_rc -eq 124 ] && echo "gpu_check: the tests ran past ${TEST_TIMEOUT:-150} s and were stopped"
[ $tests_rc -eq 5 ] && echo "gpu_check: no CUDA tests were collected: no usable GPU for numba.cuda (see step 1)"

say "3. benchmark against PyTorch (cuDNN)"
timeout $(( ${BENCH_BUDGET:-170} + 60 )) "$PY" tools/gpu_bench.py ${BENCH_SPECS:-} --batches 1 32 --runs 5 --warmup 2 \
    --budget "${BENCH_BUDGET:-170}" ${OUT:+--json "$OUT/gpu_bench.json"}
bench_rc=$?
[ $bench_rc -eq 124 ] && echo "gpu_check: the benchmark ran past its time and was stopped"
[ $bench_rc -ne 0 ] && echo "gpu_check: the benchmark did not finish cleanly (exit $bench_rc)"

say "done: tests exit $tests_rc, benchmark exit $bench_rc"
exit $tests_rc
