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
#   FUZZ_JOBS=N        N fuzzing processes side by side (libFuzzer -jobs=N -workers=N), each for
#                      FUZZ_SECONDS, sharing the corpus; logs in .build/fuzz/fuzz-*.log
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

mkdir -p "$out/artifacts" "$out/corpus"
bin="$out/fuzz_api"
flags=(-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -Wall -Wextra -Werror)
[[ "$skip_known" == 1 ]] && flags+=(-DFUZZ_SKIP_KNOWN_BUGS)
say "compile: $cc ${flags[*]} $fuzzdir/fuzz_api.c -lautograd"
"$cc" "${flags[@]}" -I include "$fuzzdir/fuzz_api.c" -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm \
    -fuse-ld=lld -o "$bin" || die "compiling $fuzzdir/fuzz_api.c"
st_bin="$out/fuzz_safetensors"
say "compile: $cc ${flags[*]} $fuzzdir/fuzz_safetensors.c -lautograd"
"$cc" "${flags[@]}" -I include "$fuzzdir/fuzz_safetensors.c" -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm \
    -fuse-ld=lld -o "$st_bin" || die "compiling $fuzzdir/fuzz_safetensors.c"

# The same sanitizer settings as the defaults compiled into the target (__asan_default_options),
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

# 1. Regressions: each file alone, so one failure does not hide the others.
failed=()
nreg=0
if [[ "$skip_known" == 1 ]]; then
    say "FUZZ_SKIP_KNOWN=1: not replaying $fuzzdir/regressions/ (the build steers around them)"
else
    for f in "$fuzzdir"/regressions/*; do
        [[ -f "$f" && "$f" != *.md ]] || continue
        nreg=$((nreg + 1))
        name=$(basename "$f")
        log="$out/replay-$name.log"
        if "$bin" "${common[@]}" "$f" >"$log" 2>&1; then
            say "regression $name: OK"
        else
            failed+=("$name")
            say "regression $name: FAILED (log: $log)"
            grep -v "$noise" "$log" | grep -E 'INVARIANT|ERROR|SUMMARY|Direct leak|^    #[0-9] ' | head -n 12 | sed 's/^/    /'
        fi
    done
fi

# 2. The seed corpus, every input once.
ncorp=$(find "$fuzzdir/corpus" -type f | wc -l)
if "$bin" "${common[@]}" -runs=0 "$fuzzdir/corpus" >"$out/replay-corpus.log" 2>&1; then
    say "corpus: $ncorp inputs replayed: OK"
else
    failed+=("corpus")
    say "corpus: FAILED (log: $out/replay-corpus.log)"
    grep -v "$noise" "$out/replay-corpus.log" | tail -n 30 | sed 's/^/    /'
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    say "replay took $((SECONDS - start)) s"
    say "reproduce one with: FUZZ_TRACE=1 $bin $fuzzdir/regressions/NAME"
    die "${#failed[@]} replay(s) failed: ${failed[*]}"
fi
api_fuzz() {
# 3. Fuzz. New inputs go to .build/fuzz/corpus; the committed corpus is only read.
run=("$bin" "${common[@]}" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/artifacts/"
    "$out/corpus" "$fuzzdir/corpus")
[[ "$jobs" -gt 1 ]] && run+=(-jobs="$jobs" -workers="$jobs")
# shellcheck disable=SC2206
run+=(${FUZZ_ARGS:-})
say "fuzzing for $seconds s ($jobs job(s)): ${run[*]}"
log="$out/fuzz.log"
"${run[@]}" 2>&1 | grep -v "$noise" >"$log"
status=${PIPESTATUS[0]}
if [[ "$jobs" -gt 1 ]]; then
    cat fuzz-*.log 2>/dev/null | grep -v "$noise" >>"$log"
    mv -f fuzz-*.log "$out/" 2>/dev/null || true
fi
# Progress lines (pulses and the last coverage line), then the final statistics.
grep -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)' "$log" | tail -n 8
grep -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|DONE|INITED)' "$log" | tail -n 1 | sed 's/^/last: /'
grep -E '^stat::' "$log"
if [[ "$status" -ne 0 ]]; then
    echo "---- the failure (full log: $log)"
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -n 60
    say "reproduce with: FUZZ_TRACE=1 $bin $out/artifacts/<the file named above>"
    say "then minimize it (-minimize_crash=1 -exact_artifact_path=...) and add it to $fuzzdir/regressions/"
    die "libFuzzer exited with $status after $((SECONDS - start)) s"
fi
}
if [[ "$seconds" -le 0 ]]; then
    say "fuzz_api: replay only (FUZZ_SECONDS=0)"
else
    api_fuzz
fi
api_summary="fuzz_api: $nreg regressions, $ncorp corpus inputs, ${seconds} s of fuzzing"
say "OK: $api_summary"

# 4. fuzz_safetensors: its regressions, its corpus, then fuzzing, as for fuzz_api above.
st_start=$SECONDS
st_failed=()
st_nreg=0
for f in "$fuzzdir"/safetensors_regressions/*; do
    [[ -f "$f" && "$f" != *.md ]] || continue
    st_nreg=$((st_nreg + 1))
    name=$(basename "$f")
    log="$out/replay-safetensors-$name.log"
    if "$st_bin" "${common[@]}" "$f" >"$log" 2>&1; then
        say "safetensors regression $name: OK"
    else
        st_failed+=("$name")
        say "safetensors regression $name: FAILED (log: $log)"
        grep -v "$noise" "$log" | grep -E 'INVARIANT|ERROR|SUMMARY|Direct leak|^    #[0-9] ' | head -n 12 | sed 's/^/    /'
    fi
done
st_ncorp=$(find "$fuzzdir/safetensors_corpus" -type f | wc -l)
if "$st_bin" "${common[@]}" -runs=0 "$fuzzdir/safetensors_corpus" >"$out/replay-safetensors-corpus.log" 2>&1; then
    say "safetensors corpus: $st_ncorp inputs replayed: OK"
else
    st_failed+=("corpus")
    say "safetensors corpus: FAILED (log: $out/replay-safetensors-corpus.log)"
    grep -v "$noise" "$out/replay-safetensors-corpus.log" | tail -n 30 | sed 's/^/    /'
fi
if [[ ${#st_failed[@]} -gt 0 ]]; then
    say "reproduce one with: FUZZ_TRACE=1 $st_bin $fuzzdir/safetensors_regressions/NAME"
    die "${#st_failed[@]} fuzz_safetensors replay(s) failed: ${st_failed[*]}"
fi
if [[ "$st_seconds" -gt 0 ]]; then
    mkdir -p "$out/safetensors_corpus" "$out/safetensors_artifacts"
    run=("$st_bin" "${common[@]}" -max_total_time="$st_seconds" -print_final_stats=1
        -artifact_prefix="$out/safetensors_artifacts/" "$out/safetensors_corpus" "$fuzzdir/safetensors_corpus")
    [[ "$jobs" -gt 1 ]] && run+=(-jobs="$jobs" -workers="$jobs")
    # shellcheck disable=SC2206
    run+=(${FUZZ_ARGS:-})
    say "fuzzing fuzz_safetensors for $st_seconds s ($jobs job(s)): ${run[*]}"
    log="$out/fuzz_safetensors.log"
    "${run[@]}" 2>&1 | grep -v "$noise" >"$log"
    status=${PIPESTATUS[0]}
    if [[ "$jobs" -gt 1 ]]; then
        cat fuzz-*.log 2>/dev/null | grep -v "$noise" >>"$log"
        mkdir -p "$out/safetensors_jobs"
        mv -f fuzz-*.log "$out/safetensors_jobs/" 2>/dev/null || true
    fi
    grep -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)' "$log" | tail -n 8
    grep -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|DONE|INITED)' "$log" | tail -n 1 | sed 's/^/last: /'
    grep -E '^stat::' "$log"
    if [[ "$status" -ne 0 ]]; then
        echo "---- the failure (full log: $log)"
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -n 60
        say "reproduce with: FUZZ_TRACE=1 $st_bin $out/safetensors_artifacts/<the file named above>"
        say "then minimize it (-minimize_crash=1 -exact_artifact_path=...) and add it to $fuzzdir/safetensors_regressions/"
        die "fuzz_safetensors: libFuzzer exited with $status after $((SECONDS - st_start)) s"
    fi
else
    say "fuzz_safetensors: replay only (FUZZ_SAFETENSORS_SECONDS=0)"
fi
st_summary="fuzz_safetensors: $st_nreg regressions, $st_ncorp corpus inputs, ${st_seconds} s of fuzzing"
say "OK: $api_summary; $st_summary; $((SECONDS - start)) s in all"
say "a longer run: FUZZ_SECONDS=3600 FUZZ_SAFETENSORS_SECONDS=3600 bash scripts/fuzz.sh  (or add FUZZ_JOBS=4 for 4 processes)"
exit 0
