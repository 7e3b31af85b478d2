/*
 * test_reusable_regressions.c - regression tests for engine bugs found while testing reusable
 * graphs from C (issue 16). Each check states what include/autograd.h documents; on the engine
 * of commit ecad302 every one of them failed (5 of 37 checks), all pass since the fixes:
 *
 *   1. A capture's function that runs a backward reaching a hook, ignores that backward's
 *      AG_ERR_STATE and returns 0: the capture fails with AG_ERR_STATE ("cannot be replayed")
 *      and creates nothing (B115). It used to succeed: the refusal reached the backward's caller
 *      only. Now Backward.hooksInCapture also marks the recording refused (Trace.refuse).
 *   2. ag_function_call_into with an output tensor of the right shape but another dtype:
 *      AG_ERR_DTYPE (B119); it used to be AG_ERR_SHAPE.
 *   3. ag_optimizer_step inside a capture's function when no parameter of the optimizer has a
 *      gradient: AG_OK, nothing updated, as eagerly; it used to kill the process (a Swift trap in
 *      Trace.noteEffect, an index into an empty array). Run in a child process here (the
 *      fuzzer's reproducer: bindings/fuzz/regressions/optimizer-step-without-gradients-in-capture-traps).
 *
 * Output: "== group" lines, one line per failed check, then exactly "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

static int32_t hook_ok(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad, (void)user_data;
    return 0;
}

/* out[0] = sum(x * w), after a backward through it that reaches w's hook; the backward's
 * failure is ignored. */
static int32_t swallow_hook_error(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                                  void *user_data) {
    (void)noutputs, (void)ninputs;
    ag_tensor w = *(const ag_tensor *)user_data, p = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    if (ag_mul(&p, inputs[0], w) != AG_OK || ag_sum(&s, p, NULL, 0, false) != AG_OK) return 1;
    (void)ag_backward(s, AG_NULL_TENSOR, true, false); /* AG_ERR_STATE: reaches the hook */
    ag_tensor_free(p);
    outputs[0] = s;
    return 0;
}

static void test_hook_error_swallowed(void) {
    ag_tensor x = MAKE(D(1, 2, 3), SHAPE(3)), w = MAKE_RG(D(1, 1, 1), SHAPE(3));
    int64_t id = 0;
    CHECK_OK(ag_tensor_register_hook(&id, w, hook_ok, NULL, NULL));
    ag_function f = AG_NULL_FUNCTION;
    CHECK_ERR(ag_capture(&f, swallow_hook_error, &x, 1, 1, &w), AG_ERR_STATE);
    CHECK(strstr(ag_last_error(), "cannot be replayed") != NULL);
    CHECK(f == AG_NULL_FUNCTION);
    if (f != AG_NULL_FUNCTION) CHECK_OK(ag_function_free(f));
    FREE(x, w);
}

static int32_t mul_and_sum(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                           void *user_data) {
    (void)noutputs, (void)ninputs, (void)user_data;
    if (ag_mul(&outputs[0], inputs[0], inputs[1]) != AG_OK) return 1;
    return ag_sum(&outputs[1], outputs[0], NULL, 0, false) == AG_OK ? 0 : 2;
}

static void test_call_into_dtype(void) {
    ag_tensor a = MAKE(D(1, 2, 3), SHAPE(3)), b = MAKE(D(0.5, -1, 2), SHAPE(3));
    ag_function f = AG_NULL_FUNCTION;
    CHECK_OK(ag_capture(&f, mul_and_sum, (ag_tensor[]){a, b}, 2, 2, NULL));
    ag_tensor o64 = MAKE(D(0, 0, 0), SHAPE(3)), s64 = SCALAR(0), o32 = MAKE32(D(0, 0, 0), SHAPE(3));
    ag_tensor s32 = make_at(D(0), S0, AG_FLOAT32, false, HERE);
    CHECK_ERR(ag_function_call_into((ag_tensor[]){o32, s64}, 2, f, (ag_tensor[]){a, b}, 2), AG_ERR_DTYPE);
    CHECK(strstr(ag_last_error(), "output 0 is float32 [3]") != NULL);
    CHECK_ERR(ag_function_call_into((ag_tensor[]){o64, s32}, 2, f, (ag_tensor[]){a, b}, 2), AG_ERR_DTYPE);
    CHECK_OK(ag_function_free(f));
    FREE(a, b, o64, s64, o32, s32);
}

static ag_optimizer g_opt;

static int32_t step_only(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                         void *user_data) {
    (void)noutputs, (void)inputs, (void)ninputs, (void)user_data;
    if (ag_optimizer_step(g_opt) != AG_OK) return 1;
    return ag_tensor_zeros(outputs, I64(2), 1, AG_FLOAT64);
}

/* In a child: w requires grad and has no gradient; an AdamW step inside a capture. Exits 0 when
 * the capture returns AG_OK and leaves w as it was (nothing to update). */
static int step_without_gradients_child(void) {
    ag_tensor w = AG_NULL_TENSOR;
    if (ag_tensor_full(&w, I64(2), 1, 0.5, AG_FLOAT64) || ag_tensor_set_requires_grad(w, true) ||
        ag_optimizer_adamw(&g_opt, &w, 1, 0.1, 0.9, 0.999, 1e-8, 0))
        return 2;
    ag_function f = AG_NULL_FUNCTION;
    ag_status st = ag_capture(&f, step_only, NULL, 0, 1, NULL);
    double v[2] = {0, 0};
    ag_tensor_copy_data(v, 2, AG_FLOAT64, w);
    int rc = st == AG_OK && v[0] == 0.5 && v[1] == 0.5 ? 0 : 3;
    ag_function_free(f);
    ag_optimizer_free(g_opt);
    ag_tensor_free(w);
    return rc;
}

static void test_step_without_gradients(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(step_without_gradients_child());
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child %s %d", WIFSIGNALED(status) ? "died of signal" : "exited with",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

int main(void) {
    test_begin();
    run_group_checking_handles("a hook error swallowed by the capture's function (B115)", test_hook_error_swallowed);
    run_group_checking_handles("ag_function_call_into: an output of another dtype (B119)", test_call_into_dtype);
    run_group("ag_optimizer_step without gradients inside a capture (a trap)", test_step_without_gradients);
    check_no_leaks();
    return test_summary();
}
