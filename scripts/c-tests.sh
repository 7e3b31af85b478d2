#!/usr/bin/env bash
# Builds and runs the C programs in bindings/c against the built libautograd.so:
#   1. compiles every program of the two lists below and the C examples into .build/c/,
#   2. runs each program of both lists,
#   3. runs the programs of the first list again under valgrind's memcheck (the second list's
#      long or threaded ones run natively only),
#   4. runs the examples (graph_picture, digits, cnn_digits, moons, ode_fit, char_transformer) and
#      checks what they write; digits and cnn_digits also train with one step function eagerly
#      and captured then replayed: equal final weights; cnn_digits runs 2 steps (captured,
#      replayed) under valgrind; char_transformer runs shortened (500 steps), eagerly and
#      replayed (100 steps each: equal final weights), and for 2 steps on a small word list
#      under valgrind.
# Assumes the library is built (scripts/build.sh). Exits non-zero if anything fails.
#
# Valgrind policy: definite and indirect leaks, and every memcheck error (invalid read or write,
# use of uninitialised values, bad free), fail the run. "Possibly lost" and "still reachable"
# blocks are tolerated: the Swift runtime linked statically into libautograd.so keeps
# process-lifetime metadata caches (ConcurrentReadableHashMap and friends) that it never frees
# and that valgrind can only reach through interior pointers.
set -euo pipefail
cd "$(dirname "$0")/.."

libdir="$PWD/.build/release"
outdir=.build/c
# The programs in bindings/c, built and run in this order (each must exit 0), then again under
# valgrind; the limit tests (a 1,000,000-op chain, 10,000 training steps), the threads tests, the
# empty-tensor and thread-count test (an address-space limit) and the fork test run once, natively.
programs=(example test_autograd test_catalogue test_semantics test_training test_bad_input test_inplace test_abi_defects
          test_numerics test_transforms test_reusable test_reusable_regressions test_custom_ops test_int64_masks
          test_safetensors test_shared_memory test_grad_ready)
native_only=(test_limits test_threads test_hook_threads test_empty_and_threads test_fork)
if [[ ! -f "$libdir/libautograd.so" ]]; then
    echo "c-tests: $libdir/libautograd.so not found; build it first (scripts/build.sh)" >&2
    exit 1
fi
if ! command -v valgrind >/dev/null; then
    echo "c-tests: valgrind is not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi
mkdir -p "$outdir"

# Prints a command, runs it, and stops the script with a clear message if it fails.
run() {
    echo "+ $*"
    local status=0
    "$@" || status=$?
    if [[ $status -ne 0 ]]; then
        echo "c-tests: FAILED (exit $status): $*" >&2
        exit 1
    fi
}

echo "== compile"
for prog in "${programs[@]}" "${native_only[@]}"; do
    run cc -std=c11 -O1 -Wall -Wextra -Werror -g -I include -o "$outdir/$prog" "bindings/c/$prog.c" \
        -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm -lpthread
done
for ex in graph_picture digits cnn_digits moons ode_fit char_transformer; do
    run cc -std=c11 -O2 -Wall -Wextra -Werror -g -I include -o "$outdir/$ex" "examples/$ex.c" \
        -L "$libdir" -lautograd "-Wl,-rpath,$libdir" -lm
done

for prog in "${programs[@]}" "${native_only[@]}"; do
    echo
    echo "== run $prog"
    run "$outdir/$prog"
done

for prog in "${programs[@]}"; do
    echo
    echo "== valgrind $prog (output in $outdir/$prog.valgrind.log)"
    log="$outdir/$prog.valgrind.log"
    cmd=(valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
        --show-leak-kinds=definite,indirect --error-exitcode=99 "$outdir/$prog")
    echo "+ ${cmd[*]}"
    start=$SECONDS
    status=0
    "${cmd[@]}" >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        # Memcheck's own reports (==pid== lines) and the program's failures.
        grep -v '^== [a-z]' "$log" | tail -n 150
        if [[ $status -eq 99 ]]; then
            echo "c-tests: FAILED: valgrind found memory errors or definite/indirect leaks in $prog" >&2
        else
            echo "c-tests: FAILED: $prog under valgrind exited with status $status" >&2
        fi
        exit 1
    fi
    grep -E 'ERROR SUMMARY|definitely lost|indirectly lost' "$log" | head -n 3 || true
    echo "$prog under valgrind: OK ($((SECONDS - start)) s)"
done

echo
echo "== examples/graph_picture (writes $outdir/graph.dot)"
run "$outdir/graph_picture" "$outdir/graph.dot"
grep -q digraph "$outdir/graph.dot" || { echo "c-tests: FAILED: no DOT written" >&2; exit 1; }

echo
echo "== examples/digits (trains an MLP on the UCI digits; fails below 96% test accuracy)"
run "$outdir/digits" examples/data/digits.csv | tee "$outdir/digits.log"
echo
echo "== examples/digits --stop-after 7, then --resume (a checkpoint: weights, Adam's state, the batch"
echo "   order): the resumed run must end with the uninterrupted run's weights, bit for bit"
rm -f "$outdir/digits-checkpoint.safetensors"
run "$outdir/digits" --stop-after 7 "$outdir/digits-checkpoint.safetensors" examples/data/digits.csv \
    >"$outdir/digits-stopped.log"
grep '^checkpoint:' "$outdir/digits-stopped.log"
run "$outdir/digits" --resume "$outdir/digits-checkpoint.safetensors" examples/data/digits.csv \
    >"$outdir/digits-resumed.log"
grep -E '^(checkpoint|final)' "$outdir/digits-resumed.log"
whole_hash=$(grep '^final weights:' "$outdir/digits.log" || true)
resumed_hash=$(grep '^final weights:' "$outdir/digits-resumed.log" || true)
stopped_hash=$(grep '^final weights:' "$outdir/digits-stopped.log" || true)
if [[ -z "$whole_hash" || "$whole_hash" != "$resumed_hash" ]]; then
    echo "c-tests: FAILED: digits resumed from its checkpoint ended with other weights than the uninterrupted" \
        "run (uninterrupted: '${whole_hash}', resumed: '${resumed_hash}')" >&2
    exit 1
fi
if [[ "$stopped_hash" == "$whole_hash" ]]; then
    echo "c-tests: FAILED: the run stopped after epoch 7 already had the final weights: the check shows nothing" >&2
    exit 1
fi
echo "digits: stopped after epoch 7 and resumed: the same final weights as the uninterrupted run: OK"
echo
echo "== examples/digits --eager-step and --replay (one step function, eagerly and captured once then"
echo "   replayed): the final weights must be equal bit for bit"
run "$outdir/digits" --eager-step examples/data/digits.csv >"$outdir/digits-eager.log"
run "$outdir/digits" --replay examples/data/digits.csv >"$outdir/digits-replay.log"
eager_hash=$(grep '^final weights:' "$outdir/digits-eager.log" || true)
replay_hash=$(grep '^final weights:' "$outdir/digits-replay.log" || true)
grep -E '^(final|replay:)' "$outdir/digits-replay.log"
if [[ -z "$eager_hash" || "$eager_hash" != "$replay_hash" ]]; then
    echo "c-tests: FAILED: digits trained by replay ended with other weights than the eager step" \
        "(eager: '${eager_hash}', replay: '${replay_hash}')" >&2
    exit 1
fi
echo "digits: replay and eager step give the same final weights: OK"

echo
echo "== examples/cnn_digits (a CNN on the same digits, float32, eager steps; fails below 98.5% test accuracy;"
echo "   writes $outdir/cnn_digits.svg), then --replay (the step captured once, then replayed): the same"
echo "   final weights bit for bit"
rm -f "$outdir/cnn_digits.svg"
run "$outdir/cnn_digits" --svg "$outdir/cnn_digits.svg" examples/data/digits.csv | tee "$outdir/cnn_digits-eager.log"
grep -q "<svg" "$outdir/cnn_digits.svg" || { echo "c-tests: FAILED: cnn_digits wrote no SVG" >&2; exit 1; }
run "$outdir/cnn_digits" --replay --svg "$outdir/cnn_digits-replay.svg" examples/data/digits.csv \
    >"$outdir/cnn_digits-replay.log"
eager_hash=$(grep '^final weights:' "$outdir/cnn_digits-eager.log" || true)
replay_hash=$(grep '^final weights:' "$outdir/cnn_digits-replay.log" || true)
grep -E '^(final|training step|replay:)' "$outdir/cnn_digits-replay.log"
if [[ -z "$eager_hash" || "$eager_hash" != "$replay_hash" ]]; then
    echo "c-tests: FAILED: cnn_digits trained by replay ended with other weights than the eager step" \
        "(eager: '${eager_hash}', replay: '${replay_hash}')" >&2
    exit 1
fi
echo "cnn_digits: replay and eager step give the same final weights: OK"

echo
echo "== examples/cnn_digits under valgrind: 2 steps (the first runs inside ag_capture, the second is"
echo "   replayed) and the test set's accuracy"
log="$outdir/cnn_digits.valgrind.log"
cmd=(valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --error-exitcode=99 "$outdir/cnn_digits" --replay --steps 2
    --threads 1 --svg "$outdir/cnn_digits-small.svg" examples/data/digits.csv)
echo "+ ${cmd[*]}"
start=$SECONDS
status=0
"${cmd[@]}" >"$log" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
    grep -v '^== [a-z]' "$log" | tail -n 150
    echo "c-tests: FAILED: cnn_digits under valgrind exited with status $status" \
        "(99: memory errors or definite/indirect leaks)" >&2
    exit 1
fi
grep -E 'ERROR SUMMARY|definitely lost|indirectly lost' "$log" | head -n 3 || true
echo "cnn_digits under valgrind: OK ($((SECONDS - start)) s)"

echo
echo "== examples/moons (a scalar MLP; writes $outdir/moons.svg)"
run "$outdir/moons" "$outdir/moons.svg"
grep -q "<svg" "$outdir/moons.svg" || { echo "c-tests: FAILED: no SVG written" >&2; exit 1; }

echo
echo "== examples/ode_fit (a custom op: RK4 with a hand-written adjoint; fits a pendulum's damping,"
echo "   fails unless its gradcheck passes and the damping is recovered; writes $outdir/ode_fit.svg)"
rm -f "$outdir/ode_fit.svg"
run "$outdir/ode_fit" "$outdir/ode_fit.svg"
grep -q "<svg" "$outdir/ode_fit.svg" || { echo "c-tests: FAILED: ode_fit wrote no SVG" >&2; exit 1; }

echo
echo "== examples/char_transformer (a 2-layer character transformer on the words of Debian's wamerican,"
echo "   shortened to 500 steps; fails unless its validation loss is below 2.8 nats per character; writes"
echo "   $outdir/char_transformer.svg; the full run is scripts/char-transformer.sh)"
words=/usr/share/dict/american-english
if [[ ! -f "$words" ]]; then
    echo "c-tests: FAILED: $words not found (scripts/setup.sh installs the wamerican package)" >&2
    exit 1
fi
rm -f "$outdir/char_transformer.svg"
log="$outdir/char_transformer.log"
echo "+ $outdir/char_transformer --steps 500 --svg $outdir/char_transformer.svg (output in $log)"
status=0
"$outdir/char_transformer" --steps 500 --svg "$outdir/char_transformer.svg" >"$log" 2>&1 || status=$?
grep -E '^(model|step +[0-9]+ +validation|training|validation|samples|char_transformer)' "$log" || true
if [[ $status -ne 0 ]]; then
    tail -n 20 "$log"
    echo "c-tests: FAILED (exit $status): examples/char_transformer --steps 500" >&2
    exit 1
fi
grep -q '^validation loss: [0-9.]* nats per character' "$log" ||
    { echo "c-tests: FAILED: char_transformer printed no validation loss" >&2; exit 1; }
grep -q "<svg" "$outdir/char_transformer.svg" ||
    { echo "c-tests: FAILED: char_transformer wrote no SVG" >&2; exit 1; }

echo
echo "== examples/char_transformer --replay (the training step captured once, then replayed): 100 steps"
echo "   eagerly and replayed must end with the same weights, bit for bit"
for mode in eager replay; do
    flag=()
    [[ $mode == replay ]] && flag=(--replay)
    run "$outdir/char_transformer" --steps 100 --eval-every 1000 --no-loss-check --samples 0 "${flag[@]}" \
        --svg "$outdir/char_transformer-$mode.svg" >"$outdir/char_transformer-$mode.log"
done
eager_hash=$(grep '^final weights:' "$outdir/char_transformer-eager.log" || true)
replay_hash=$(grep '^final weights:' "$outdir/char_transformer-replay.log" || true)
grep -E '^(training|final weights|replay:)' "$outdir/char_transformer-replay.log"
if [[ -z "$eager_hash" || "$eager_hash" != "$replay_hash" ]]; then
    echo "c-tests: FAILED: char_transformer trained by replay ended with other weights than eagerly" \
        "(eager: '${eager_hash}', replay: '${replay_hash}')" >&2
    exit 1
fi
echo "char_transformer: replay and eager steps give the same final weights: OK"

echo
echo "== examples/char_transformer under valgrind: 2 steps on every 200th word (the first step runs eagerly"
echo "   inside ag_capture, the second is replayed), 2 samples"
grep -E '^[a-z]+$' "$words" | awk 'NR % 200 == 0' >"$outdir/words-small.txt"
log="$outdir/char_transformer.valgrind.log"
cmd=(valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --error-exitcode=99 "$outdir/char_transformer" --steps 2 --replay
    --threads 1 --words "$outdir/words-small.txt" --samples 2 --svg "$outdir/char_transformer-small.svg"
    --no-loss-check)
echo "+ ${cmd[*]}"
start=$SECONDS
status=0
"${cmd[@]}" >"$log" 2>&1 || status=$?
if [[ $status -ne 0 ]]; then
    grep -v '^== [a-z]' "$log" | tail -n 150
    echo "c-tests: FAILED: char_transformer under valgrind exited with status $status" \
        "(99: memory errors or definite/indirect leaks)" >&2
    exit 1
fi
grep -E 'ERROR SUMMARY|definitely lost|indirectly lost' "$log" | head -n 3 || true
echo "char_transformer under valgrind: OK ($((SECONDS - start)) s)"

echo
echo "c-tests: OK"
