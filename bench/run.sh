#!/usr/bin/env bash
# The benchmark suite in one command (see bench/README.md):
#
#   bash bench/run.sh            every benchmark, every peer, 1 and 2 threads; writes
#                                bench/results/latest.json, bench/RESULTS.md and bench/ratios.png
#   bash bench/run.sh --quick    fewer repetitions, for development
#   bash bench/run.sh B1 [B8..]  only the benchmarks named (B1..B12)
#
# A quick or partial run writes its JSON and report under bench/results/ instead, so it never
# replaces the committed full report. Exits non-zero when a build fails or a peer crashes;
# a missed target is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/bench
BUILD=$BENCH/build

quick=()
benches=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        [Bb][1-9]|[Bb]1[012]) benches+=("${arg^^}") ;;
        *) echo "run.sh: unknown argument '$arg' (use --quick and/or B1..B12)" >&2; exit 2 ;;
    esac
done
needs() { # needs PEER_BENCHES...: true when a selected benchmark is one of those named
    [ ${#benches[@]} -eq 0 ] && return 0
    local b
    for b in "${benches[@]}"; do [[ " $* " == *" $b "* ]] && return 0; done
    return 1
}
step() { echo; echo "==> $*"; }
die() { echo "run.sh: $*" >&2; exit 1; }
start=$SECONDS
mkdir -p "$BUILD" "$BENCH/results"

# --- 1. Python packages (only those that are not importable already) ---------------------------
step "Python packages"
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --quiet "$@"; }
if "$PY" -c "import torch" 2>/dev/null; then
    echo "torch: present ($("$PY" -c 'import torch; print(torch.__version__)'))"
else
    echo "torch: installing torch==2.13.0+cpu"
    pip_install "torch==2.13.0+cpu" ||
        pip_install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu ||
        die "could not install torch"
fi
for mod in numpy micrograd matplotlib; do
    if "$PY" -c "import $mod" 2>/dev/null; then
        echo "$mod: present"
    else
        echo "$mod: installing"
        pip_install "$mod" || die "could not install $mod"
    fi
done
if needs B8; then # JAX is B8's peer only
    if "$PY" -c "import jax" 2>/dev/null; then
        echo "jax: present ($("$PY" -c 'import jax; print(jax.__version__)'))"
    else
        echo "jax: installing jax==0.10.2 (CPU)"
        pip_install "jax==0.10.2" || die "could not install jax"
    fi
fi

# --- 2. The library ----------------------------------------------------------------------------
step "Building libautograd (scripts/build.sh)"
# build.sh only checks that the .so exists, which an earlier build satisfies; so its log is
# also searched for compiler errors.
if ! bash scripts/build.sh 2>&1 | tee "$BUILD/build.log"; then die "scripts/build.sh failed"; fi
if grep -Eq '(^|: )error: ' "$BUILD/build.log"; then die "the Swift build reported errors (see $BUILD/build.log)"; fi
LIB=$ROOT/.build/release
[ -f "$LIB/libautograd.so" ] || die "$LIB/libautograd.so is missing"

# --- 2b. The Python package (B12: Autograd driven from Python) --------------------------------
if needs B12; then
    step "Installing the Python package (pip install ./bindings/python), for B12"
    # Always reinstalled from the working tree, so B12 measures the current per-op path; pip
    # compiles its extension (libautograd._native), which B12 is about: no extension, no B12.
    pip_install ./bindings/python || die "pip install ./bindings/python failed"
    status=$(cd "$BUILD" && AUTOGRAD_LIBRARY="$LIB" "$PY" -c '
import libautograd as ag
print(ag.native_status())
raise SystemExit(0 if ag.native_enabled() else 1)') ||
        die "the installed package does not use its compiled per-op path: $status"
    echo "$status"
fi

# --- 3. The C and C++ benchmark programs -------------------------------------------------------
step "Compiling the benchmark programs"
CFLAGS=(-O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror)
gcc "${CFLAGS[@]}" -I include "$BENCH/autograd_bench.c" -o "$BUILD/autograd_bench" \
    -L "$LIB" -lautograd -lm -Wl,-rpath,"$LIB" || die "compiling autograd_bench.c failed"
echo "built bench/build/autograd_bench"
if needs B4; then
    gcc "${CFLAGS[@]}" "$BENCH/cblas_bench.c" -o "$BUILD/cblas_bench" -lopenblas -lm ||
        die "compiling cblas_bench.c failed"
    echo "built bench/build/cblas_bench"
fi
if needs B1 B2 B3; then
    T=$("$PY" -c "import torch, os; print(os.path.dirname(torch.__file__))")
    exe=$BUILD/libtorch_bench
    # libtorch's headers take a minute to compile: rebuild only when a source is newer.
    if [ ! -x "$exe" ] || [ "$BENCH/libtorch_bench.cpp" -nt "$exe" ] || [ "$BENCH/bench_common.h" -nt "$exe" ] ||
       [ "$T/lib/libtorch_cpu.so" -nt "$exe" ]; then
        echo "compiling libtorch_bench.cpp against $T (about a minute)"
        g++ -O2 -std=c++20 -D_GLIBCXX_USE_CXX11_ABI=1 -I"$T/include" -I"$T/include/torch/csrc/api/include" \
            "$BENCH/libtorch_bench.cpp" -o "$exe" -L"$T/lib" -ltorch_cpu -lc10 -Wl,-rpath,"$T/lib" ||
            die "compiling libtorch_bench.cpp failed"
    fi
    echo "built bench/build/libtorch_bench"
fi

# --- 4. Measure --------------------------------------------------------------------------------
if [ ${#quick[@]} -eq 0 ] && [ ${#benches[@]} -eq 0 ]; then
    json=$BENCH/results/latest.json md=$BENCH/RESULTS.md png=$BENCH/ratios.png
else
    json=$BENCH/results/partial.json md=$BENCH/results/RESULTS-partial.md png=$BENCH/results/ratios-partial.png
fi
step "Running the benchmarks"
driver_rc=0
"$PY" "$BENCH/driver.py" "${quick[@]}" --out "$json" "${benches[@]}" || driver_rc=$?
[ -f "$json" ] || die "the driver wrote no results"

# --- 5. Report ---------------------------------------------------------------------------------
step "Report"
"$PY" "$BENCH/report.py" --json "$json" --md "$md" --png "$png" || die "report.py failed"
echo "run.sh: finished in $((SECONDS - start)) s"
[ "$driver_rc" -eq 0 ] || die "a peer failed: crashed, exited non-zero or gave no result (see the FAILED lines above)"
