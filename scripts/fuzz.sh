#!/usr/bin/env bash
# Fuzzes the C interface of libautograd.so with libFuzzer (bindings/fuzz/README.md says more), with
# two targets: fuzz_api.c (programs of API calls) and fuzz_safetensors.c (safetensors files):
#   1. builds bindings/fuzz/fuzz_api.c and bindings/fuzz/fuzz_safetensors.c with the Swift
#      toolchain's clang (-fsanitize=fuzzer,address,undefined) against
#      .build/release/libautograd.so (built first with scripts/build.sh when missing),
#   2. fuzz_api: replays every input in bindings/fuzz/regressions/ (each crash found so far) and
#      the seed corpus bindings/fuzz/corpus/; stops there, non-zero, if any of them fails,
#   3. fuzz_api: fuzzes for FUZZ_SECONDS (default 60) from the seed corpus; stops, non-zero, with
#      libFuzzer's own status on a crash, a trap, a leak, a timeout or a broken invariant. The
#      input that failed is left in .build/fuzz/artifacts/,
#   4. fuzz_safetensors: the same with bindings/fuzz/safetensors_regressions/ and
#      bindings/fuzz/safetensors_corpus/, fuzzing for FUZZ_SAFETENSORS_SECONDS (default 30);
#      failing inputs go to .build/fuzz/safetensors_artifacts/.
#
# Environment:
#   FUZZ_SECONDS=N     how long to fuzz fuzz_api (default 60; 0 only replays)
#   FUZZ_SAFETENSORS_SECONDS=N  how long to fuzz fuzz_safetensors (default 30; 0 only replays)
#   FUZZ_JOBS=N        N fuzzing processes side by side (libFuzzer -jobs=N -workers=N) per target,
#                      sharing its corpus; logs in .build/fuzz/<target>-jobs/
#   FUZZ_SKIP_KNOWN=1  build with -DFUZZ_SKIP_KNOWN_BUGS: steer around the reproducers in
#                      regressions/ (and skip replaying them) to look for other bugs meanwhile
#   FUZZ_ARGS="..."    more libFuzzer flags (e.g. -seed=1 or -max_len=4096)
#   FUZZ_LIBDIR=DIR    the folder of the libautograd.so to test (default .build/release)
# Longer runs: FUZZ_SECONDS=3600 bash scripts/fuzz.sh, or FUZZ_SECONDS=3600 FUZZ_JOBS=4 bash scripts/fuzz.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
st_seconds=${FUZZ_SAFETENSORS_SECONDS:-30}
jobs=${FUZZ_JOBS:-1}
skip_known=${FUZZ_SKIP_KNOWN:-0}
start=$SECONDS
out=.build/fuzz
libdir=$(cd "${FUZZ_LIBDIR:-.build/release}" 2>/dev/null && pwd || echo "$PWD/${FUZZ_LIBDIR:-.build/release}")
fuzzdir=bindings/fuzz

say() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: FAILED: %s\n' "$*" >&2; exit 1; }

# The Swift toolchain's clang (it ships libFuzzer and the sanitizer runtimes); FUZZ_CC overrides.
cc=${FUZZ_CC:-}
if [[ -z "$cc" ]]; then
    swift_bin=$(command -v swift || true)
    [[ -n "$swift_bin" ]] && cc="$(dirname "$(readlink -f "$swift_bin")")/clang"
    [[ -x "$cc" ]] || cc=$(command -v clang || true)
fi
[[ -n "$cc" && -x "$cc" ]] || die "no clang found (install the Swift toolchain, or set FUZZ_CC)"
symbolizer="$(dirname "$cc")/llvm-symbolizer"

if [[ ! -f "$libdir/libautograd.so" && -z "${FUZZ_LIBDIR:-}" ]]; then
    say "$libdir/libautograd.so not found: building it (scripts/build.sh)"
    bash scripts/build.sh || die "scripts/build.sh"
fi
[[ -f "$libdir/libautograd.so" ]] || die "$libdir/libautograd.so not found"

mkdir -p "$out"
flags=(-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -Wall -Wextra -Werror)
[[ "$skip_known" == 1 ]] && flags+=(-DFUZZ_SKIP_KNOWN_BUGS)
for target in fuzz_api fuzz_safetensors; do
    say "compile: $cc ${flags[*]} $fuzzdir/$target.c -lautograd"
    "$cc" "${flags[@]}" -I include "$fuzzdir/$target.c" -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm \
        -fuse-ld=lld -o "$out/$target" || die "compiling $fuzzdir/$target.c"
done

# The same sanitizer settings as the defaults compiled into the targets (__asan_default_options),
# plus symbolized stacks. Allocations over 1 GiB fail, so a huge request must come back from the
# library as AG_ERR_OUT_OF_MEMORY; ASan prints a WARNING line for each, filtered out below.
# Under ASan the library's cache of freed large buffers (up to 1 GiB, see the top of autograd.h)
# sits on top of ASan's quarantine and libFuzzer's corpus, near -rss_limit_mb; keep it small here.
export AG_BUFFER_CACHE_MB="${AG_BUFFER_CACHE_MB:-64}"
export ASAN_OPTIONS="allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
[[ -x "$symbolizer" ]] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
if [[ -f "$fuzzdir/lsan.supp" ]]; then
    export LSAN_OPTIONS="suppressions=$PWD/$fuzzdir/lsan.supp:${LSAN_OPTIONS:-}"
fi
common=(-timeout=10 -rss_limit_mb=2048 -max_len=1024)
noise='WARNING: AddressSanitizer failed to allocate'

# One target, start to end: replays every input of its regressions folder (each file alone, so
# one failure does not hide the others), then its seed corpus, then fuzzes it for `seconds`
# (0: replay only). New inputs go to .build/fuzz/<corpus_out>; the committed corpus is only read.
# Stops the script, non-zero, on any failure. Sets `summary`.
#   run_target NAME REGRESSIONS CORPUS SECONDS CORPUS_OUT ARTIFACTS SECONDS_VARIABLE
run_target() {
    local name=$1 regressions=$2 corpus=$3 seconds=$4 corpus_out=$5 artifacts=$6 variable=$7
    local bin="$out/$name" t0=$SECONDS failed=() nreg=0 f base log status
    if [[ "$skip_known" == 1 && "$name" == fuzz_api ]]; then
        say "FUZZ_SKIP_KNOWN=1: not replaying $regressions/ (the build steers around them)"
    else
        for f in "$regressions"/*; do
            [[ -f "$f" && "$f" != *.md ]] || continue
            nreg=$((nreg + 1))
            base=$(basename "$f")
            log="$out/replay-$name-$base.log"
            if "$bin" "${common[@]}" "$f" >"$log" 2>&1; then
                say "$name regression $base: OK"
            else
                failed+=("$base")
                say "$name regression $base: FAILED (log: $log)"
                grep -v "$noise" "$log" | grep -E 'INVARIANT|ERROR|SUMMARY|Direct leak|^    #[0-9] ' | head -n 12 | sed 's/^/    /'
            fi
        done
    fi
    local ncorp
    ncorp=$(find "$corpus" -type f | wc -l)
    log="$out/replay-$name-corpus.log"
    if "$bin" "${common[@]}" -runs=0 "$corpus" >"$log" 2>&1; then
        say "$name corpus: $ncorp inputs replayed: OK"
    else
        failed+=("corpus")
        say "$name corpus: FAILED (log: $log)"
        grep -v "$noise" "$log" | tail -n 30 | sed 's/^/    /'
    fi
    if [[ ${#failed[@]} -gt 0 ]]; then
        say "replay took $((SECONDS - t0)) s"
        say "reproduce one with: FUZZ_TRACE=1 $bin $regressions/NAME"
        die "$name: ${#failed[@]} replay(s) failed: ${failed[*]}"
    fi
    summary="$name: $nreg regressions, $ncorp corpus inputs, $seconds s of fuzzing"
    if [[ "$seconds" -le 0 ]]; then
        say "$name: replay only ($variable=0)"
        return
    fi
    mkdir -p "$out/$corpus_out" "$out/$artifacts"
    local run=("$bin" "${common[@]}" -max_total_time="$seconds" -print_final_stats=1
        -artifact_prefix="$out/$artifacts/" "$out/$corpus_out" "$corpus")
    [[ "$jobs" -gt 1 ]] && run+=(-jobs="$jobs" -workers="$jobs")
    # shellcheck disable=SC2206
    run+=(${FUZZ_ARGS:-})
    say "fuzzing $name for $seconds s ($jobs job(s)): ${run[*]}"
    log="$out/$name.log"
    "${run[@]}" 2>&1 | grep -v "$noise" >"$log"
    status=${PIPESTATUS[0]}
    if [[ "$jobs" -gt 1 ]]; then
        cat fuzz-*.log 2>/dev/null | grep -v "$noise" >>"$log"
        mkdir -p "$out/$name-jobs"
        mv -f fuzz-*.log "$out/$name-jobs/" 2>/dev/null || true
    fi
    # Progress lines (pulses and the last coverage line), then the final statistics.
    grep -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)' "$log" | tail -n 8
    grep -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|DONE|INITED)' "$log" | tail -n 1 | sed 's/^/last: /'
    grep -E '^stat::' "$log"
    if [[ "$status" -ne 0 ]]; then
        echo "---- the failure (full log: $log)"
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -n 60
        say "reproduce with: FUZZ_TRACE=1 $bin $out/$artifacts/<the file named above>"
        say "then minimize it (-minimize_crash=1 -exact_artifact_path=...) and add it to $regressions/"
        die "$name: libFuzzer exited with $status after $((SECONDS - t0)) s"
    fi
}

run_target fuzz_api "$fuzzdir/regressions" "$fuzzdir/corpus" "$seconds" corpus artifacts FUZZ_SECONDS
api_summary=$summary
say "OK: $api_summary"
run_target fuzz_safetensors "$fuzzdir/safetensors_regressions" "$fuzzdir/safetensors_corpus" "$st_seconds" \
    safetensors_corpus safetensors_artifacts FUZZ_SAFETENSORS_SECONDS
say "OK: $api_summary; $summary; $((SECONDS - start)) s in all"
say "a longer run: FUZZ_SECONDS=3600 FUZZ_SAFETENSORS_SECONDS=3600 bash scripts/fuzz.sh  (or add FUZZ_JOBS=4 for 4 processes)"
exit 0
