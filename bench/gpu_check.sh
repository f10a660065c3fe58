#!/usr/bin/env bash
# The GPU check of issue 19, in one run on a rented CUDA machine (an H200 with PyTorch
# CUDA, CuPy and numba, no pyFFTW, maybe no array_api_compat): fftconv from this
# working tree (PYTHONPATH, no install of its dependencies), the gpu-marked tests and
# `python -m bench --suite gpu`, their logs and the suite's JSON under $OUT.
#
# Here (a machine with pip and the network), once, before the device run:
#     bash bench/gpu_check.sh --fetch-wheels
# puts the pure-Python wheels the device lacks into .whl/ (array-api-compat, which the
# core needs; array-api-strict, which tests/test_namespaces.py uses; dask, partd and
# locket for the Dask-on-CuPy test), at the versions installed here, and adds .whl/ to
# .git/info/exclude.  Then, with the device tool, carrying .whl:
#     run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=420)
# Options:  --quick       the suite's --quick rows and shorter limits (about 3.5 min)
#           --bench-only  only the suite;  --tests-only  only the tests
# Limits: the tests 170 s, the suite 170 s (--quick: 120 s and 75 s); the whole script
# stays under 6 minutes.  Files in $OUT: env.txt, pytest_gpu.txt, pytest_gpu.xml,
# bench_gpu.txt, bench_gpu.json.  Exit status: the tests' (then the suite's).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WHEELS=(array-api-compat array-api-strict dask partd locket)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    specs=()
    for name in "${WHEELS[@]}"; do
        version=$($PYTHON -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
        specs+=("$name${version:+==$version}")
    done
    mkdir -p .whl .git/info
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    $PYTHON -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${specs[@]}"
    ls -l .whl
    exit $?
fi

QUICK=""; TESTS=1; BENCH=1
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK="--quick" ;;
        --bench-only) TESTS=0 ;;
        --tests-only) BENCH=0 ;;
        *) echo "bench/gpu_check.sh: unknown option $arg (--quick, --bench-only, --tests-only, --fetch-wheels)"; exit 2 ;;
    esac
done
if [[ -n "$QUICK" ]]; then TEST_LIMIT=120; BENCH_LIMIT=75; else TEST_LIMIT=170; BENCH_LIMIT=170; fi

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export FFTCONV_CACHE_DIR=$(mktemp -d /tmp/fftconv-cache-XXXX)   # no wisdom or verdicts kept
start=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "installing .whl/ failed"; exit 3; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}   # fftconv and bench from this tree

{
    echo "== $(date -u)  $(uname -m)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
        --format=csv 2>&1 || echo "nvidia-smi: not available"
    $PYTHON - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "scipy", "torch", "cupy", "numba", "pyfftw", "array_api_compat",
             "array_api_strict", "dask", "pytest", "xdist"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # report, do not stop
        print(f"{name}: {type(exc).__name__}: {exc}")
import torch
print("torch.cuda", torch.cuda.is_available(), torch.version.cuda, torch.backends.cudnn.version())
import fftconv, fftconv.torch
print("fftconv", fftconv.__version__, "from", fftconv.__file__, "backend", fftconv.get_settings().backend)
if torch.cuda.is_available():
    x = torch.randn(2, 3, 64, device="cuda")
    w = torch.randn(4, 3, 9, device="cuda")
    y = fftconv.forward(x, w, padding="same")
    print("smoke: fftconv.forward on CUDA tensors ->", type(y).__name__, y.device, tuple(y.shape))
EOF
} 2>&1 | tee "$OUT/env.txt"

status=0
if (( TESTS )); then
    workers=$($PYTHON -c "import xdist" 2>/dev/null && echo "-n 4" || echo "")
    # the modules that hold gpu-marked tests (collecting the others only costs time, and
    # some import packages the device lacks); all of tests/ if none is found
    files=$(grep -l -E "pytest\.mark\.gpu" tests/test_*.py 2>/dev/null | tr '\n' ' ')
    echo "== pytest -m gpu ${files:-tests} ($TEST_LIMIT s at most${workers:+, $workers})" \
        | tee "$OUT/pytest_gpu.txt"
    timeout -s INT -k 15 "$TEST_LIMIT" $PYTHON -m pytest -m gpu -q ${files:-tests} \
        -p no:cacheprovider $workers --continue-on-collection-errors --durations=15 -rfEs \
        --junitxml="$OUT/pytest_gpu.xml" 2>&1 | tee -a "$OUT/pytest_gpu.txt"
    status=${PIPESTATUS[0]}
    echo "== pytest exit status $status" | tee -a "$OUT/pytest_gpu.txt"
fi
if (( BENCH )); then
    echo "== python -m bench --suite gpu $QUICK ($BENCH_LIMIT s at most)" | tee "$OUT/bench_gpu.txt"
    timeout -s INT -k 15 "$BENCH_LIMIT" $PYTHON -m bench --suite gpu $QUICK \
        --json "$OUT/bench_gpu.json" 2>&1 | tee -a "$OUT/bench_gpu.txt"
    bench_status=${PIPESTATUS[0]}
    echo "== bench exit status $bench_status" | tee -a "$OUT/bench_gpu.txt"
    (( status == 0 )) && status=$bench_status
fi
echo "== gpu_check done in $(( $(date +%s) - start )) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
