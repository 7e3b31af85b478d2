/* KNOWN BUG (found by bindings/fuzz; regressions custom-backward-other-shape-in-replay-internal-error
 * and custom-forward-other-dtype-in-replay-internal-error).
 *
 * A captured function calls a custom op's callbacks again in every replay. The header: "a
 * callback that returns other shapes in a replay fails the call with AG_ERR_CALLBACK". Two ways
 * past that check end in AG_ERR_INTERNAL from ag_function_call instead (a status the library
 * promises never to return for bad input):
 *   1. the backward returns its gradient in another shape than at the capture, though one that
 *      is still legal for the input (here [3] for a 0-d input: broadcasting sums it back), or no
 *      gradient at all after a broadcast-shaped one: "replay: 'twice backward' gave 3 elements of
 *      float64, 8 bytes were planned" (the backward step's results are not checked against the
 *      capture's shapes);
 *   2. the forward returns its output in the capture's shape but another dtype (float32 instead
 *      of float64): "replay: 'retype' gave 3 elements of float32, 24 bytes were planned" (the
 *      forward step compares shapes only).
 *
 * Build and run (after scripts/build.sh):
 *   cc -std=c11 -I include bindings/fuzz/known_bugs/custom_op_other_shape_or_dtype_in_replay.c \
 *      -L .build/release -lautograd -Wl,-rpath,$PWD/.build/release -o /tmp/repro && /tmp/repro
 * Exits 0, printing AG_ERR_CALLBACK twice, once fixed.
 */
#include <stdio.h>

#include "autograd.h"

static int backward_calls, forward_calls;
static ag_custom_op op;
static bool with_grad;

static int32_t twice_forward(ag_tensor *out, int64_t m, const ag_tensor *in, int64_t n, ag_custom_ctx ctx, void *p) {
    (void)m, (void)n, (void)ctx, (void)p;
    return ag_mul_scalar(out, in[0], 2.0) == AG_OK ? 0 : 1;
}

/* d(2x)/dx = 2: g * 2 of the input's shape [] at its first call, then a gradient of shape [3]
 * (zeros), which sums back to the 0-d input: legal, but another shape. */
static int32_t twice_backward(ag_tensor *gin, int64_t n, const ag_tensor *gout, int64_t m, ag_custom_ctx ctx, void *p) {
    (void)n, (void)m, (void)ctx, (void)p;
    if (++backward_calls == 1) return ag_mul_scalar(gin, gout[0], 2.0) == AG_OK ? 0 : 1;
    int64_t three = 3;
    return ag_tensor_zeros(gin, &three, 1, AG_FLOAT64) == AG_OK ? 0 : 1;
}

/* x * 2 in x's dtype at its first call, then ones of x's shape in float32 (a forward's outputs
 * may have any dtype: legal, but another dtype in the replay). */
static int32_t retype_forward(ag_tensor *out, int64_t m, const ag_tensor *in, int64_t n, ag_custom_ctx ctx, void *p) {
    (void)m, (void)n, (void)ctx, (void)p;
    if (++forward_calls == 1) return ag_mul_scalar(out, in[0], 2.0) == AG_OK ? 0 : 1;
    int64_t three = 3;
    return ag_tensor_ones(out, &three, 1, AG_FLOAT32) == AG_OK ? 0 : 1;
}

/* y = op(x), and with_grad: dy/dx by ag_grad */
static int32_t fn(ag_tensor *outputs, int64_t no, const ag_tensor *inputs, int64_t ni, void *p) {
    (void)no, (void)ni, (void)p;
    ag_tensor y = 0, g = 0;
    if (ag_custom_op_apply(&y, 1, op, inputs, 1) != AG_OK) return 1;
    outputs[0] = y;
    if (!with_grad) return 0;
    if (ag_grad(&g, &y, 1, NULL, inputs, 1, false, false, false) != AG_OK) return 2;
    outputs[1] = g;
    return 0;
}

static int replay(const char *what, ag_tensor x, int64_t nout) {
    ag_tensor outs[2] = {0, 0};
    ag_function f = 0;
    if (ag_capture(&f, fn, &x, 1, nout, NULL)) {
        printf("%s: capture failed: %s\n", what, ag_last_error());
        return 2;
    }
    ag_status s = ag_function_call(outs, nout, f, &x, 1);
    printf("%s: ag_function_call: %s %s: %s\n", what, ag_status_name(s), s == AG_ERR_CALLBACK ? "(ok)" : "(expected AG_ERR_CALLBACK)",
           ag_last_error());
    for (int k = 0; s == AG_OK && k < nout; k++) ag_tensor_free(outs[k]);
    ag_function_free(f);
    return s == AG_ERR_CALLBACK ? 0 : 1;
}

int main(void) {
    double v[3] = {1.5, 2, 3};
    int64_t three = 3;
    ag_tensor x0 = 0, x3 = 0;
    if (ag_tensor_from_data(&x0, v, NULL, 0, AG_FLOAT64) || ag_tensor_set_requires_grad(x0, true) ||
        ag_tensor_from_data(&x3, v, &three, 1, AG_FLOAT64)) {
        printf("setup failed: %s\n", ag_last_error());
        return 2;
    }
    int failed = 0;
    ag_custom_op_new(&op, "twice", 1, 1, twice_forward, twice_backward, NULL, NULL, NULL);
    with_grad = true;
    failed += replay("1. a backward's gradient of another (legal) shape", x0, 2);
    ag_custom_op_free(op);
    ag_custom_op_new(&op, "retype", 1, 1, retype_forward, NULL, NULL, NULL, NULL);
    with_grad = false;
    failed += replay("2. a forward's output of another dtype", x3, 1);
    ag_custom_op_free(op);
    ag_tensor_free(x0);
    ag_tensor_free(x3);
    return failed ? 1 : 0;
}
