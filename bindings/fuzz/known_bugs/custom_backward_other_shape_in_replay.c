/* KNOWN BUG (found by bindings/fuzz, regression custom-backward-other-shape-in-replay-internal-error).
 *
 * A captured function runs ag_grad through a custom op. In a replay the op's backward returns its
 * gradient in another shape than at the capture, one that is still legal for the input (here
 * [3] for a 0-d input: broadcasting reduces it). The header: "a callback that returns other
 * shapes in a replay fails the call with AG_ERR_CALLBACK". ag_function_call returns
 * AG_ERR_INTERNAL instead ("replay: 'twice backward' gave 3 elements of float64, 8 bytes were
 * planned"), a status the library promises never to return for bad input.
 *
 * Build and run (after scripts/build.sh):
 *   cc -std=c11 -I include bindings/fuzz/known_bugs/custom_backward_other_shape_in_replay.c \
 *      -L .build/release -lautograd -Wl,-rpath,$PWD/.build/release -o /tmp/repro && /tmp/repro
 * Prints "AG_ERR_CALLBACK (ok)" once fixed.
 */
#include <stdio.h>

#include "autograd.h"

static int backward_calls;

static int32_t forward(ag_tensor *out, int64_t m, const ag_tensor *in, int64_t n, ag_custom_ctx ctx, void *p) {
    (void)m, (void)n, (void)ctx, (void)p;
    return ag_mul_scalar(out, in[0], 2.0) == AG_OK ? 0 : 1;
}

/* d(2x)/dx = 2: g * 2 of the input's shape [] at first, then (from the second call on) a
 * gradient of shape [3] (zeros), which sums back to the 0-d input: legal, but another shape. */
static int32_t backward(ag_tensor *gin, int64_t n, const ag_tensor *gout, int64_t m, ag_custom_ctx ctx, void *p) {
    (void)n, (void)m, (void)ctx, (void)p;
    if (++backward_calls == 1) return ag_mul_scalar(gin, gout[0], 2.0) == AG_OK ? 0 : 1;
    int64_t three = 3;
    return ag_tensor_zeros(gin, &three, 1, AG_FLOAT64) == AG_OK ? 0 : 1;
}

static ag_custom_op op;

/* y = twice(x); dy/dx by ag_grad */
static int32_t fn(ag_tensor *outputs, int64_t no, const ag_tensor *inputs, int64_t ni, void *p) {
    (void)no, (void)ni, (void)p;
    ag_tensor y = 0, g = 0;
    if (ag_custom_op_apply(&y, 1, op, inputs, 1) != AG_OK) return 1;
    if (ag_grad(&g, &y, 1, NULL, inputs, 1, false, false, false) != AG_OK) return 2;
    outputs[0] = y;
    outputs[1] = g;
    return 0;
}

int main(void) {
    double v = 1.5;
    ag_tensor x = 0, outs[2] = {0, 0};
    ag_function f = 0;
    if (ag_tensor_from_data(&x, &v, NULL, 0, AG_FLOAT64) || ag_tensor_set_requires_grad(x, true) ||
        ag_custom_op_new(&op, "twice", 1, 1, forward, backward, NULL, NULL, NULL) ||
        ag_capture(&f, fn, &x, 1, 2, NULL)) {
        printf("setup failed: %s\n", ag_last_error());
        return 2;
    }
    ag_status s = ag_function_call(outs, 2, f, &x, 1);
    printf("ag_function_call: %s %s: %s\n", ag_status_name(s), s == AG_ERR_CALLBACK ? "(ok)" : "(expected AG_ERR_CALLBACK)",
           ag_last_error());
    if (s == AG_OK) ag_tensor_free(outs[0]), ag_tensor_free(outs[1]);
    ag_function_free(f);
    ag_custom_op_free(op);
    ag_tensor_free(x);
    return s == AG_ERR_CALLBACK ? 0 : 1;
}
