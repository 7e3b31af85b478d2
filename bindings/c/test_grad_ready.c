/*
 * test_grad_ready.c - gradient-ready hooks (ag_tensor_register_post_accumulate_grad_hook), the
 * notification data parallelism is built on (issue 21):
 *   - each fires once per ag_backward, after the accumulation: the gradient it reads is the
 *     leaf's complete .grad for that pass (hand-derived values), also for a leaf used twice and
 *     across two backward passes without zeroing;
 *   - it fires as soon as the leaf's gradient is complete: the last layer's weight is ready
 *     before the backward reaches the first layer (a hook on the first layer's result), which is
 *     what lets an all-reduce overlap the rest of the backward;
 *   - a write into the gradient from the hook (ag_tensor_set_data) is what .grad holds after;
 *   - ag_grad runs none; removal and destroy; a failing hook fails the backward with its message.
 * Expected values are derived by hand in the comments.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

/* What the hooks record, in call order. */
typedef struct {
    char events[16][16];
    int n;
    double seen[8]; /* the gradient the last ready hook read */
    int64_t seen_n;
    int destroyed;
} Log;

static void log_event(Log *log, const char *what) {
    if (log->n < 16) snprintf(log->events[log->n++], sizeof log->events[0], "%s", what);
}

/* A gradient-ready hook whose user data is {log, name}. */
typedef struct {
    Log *log;
    const char *name;
    bool write_back; /* replace the gradient by 100 + it */
} Ready;

static int32_t ready(ag_tensor t, void *user_data) {
    Ready *r = user_data;
    ag_tensor g = AG_NULL_TENSOR;
    if (ag_tensor_grad(&g, t) != AG_OK || g == AG_NULL_TENSOR) return 2;
    int64_t n = 0;
    ag_tensor_numel(&n, g);
    r->log->seen_n = n;
    if (n <= 8) ag_tensor_copy_data(r->log->seen, 8, AG_FLOAT64, g);
    if (r->write_back && n <= 8) {
        double v[8];
        for (int64_t i = 0; i < n; i++) v[i] = 100 + r->log->seen[i];
        if (ag_tensor_set_data(g, v, n, AG_FLOAT64) != AG_OK) {
            ag_tensor_free(g);
            return 3;
        }
    }
    ag_tensor_free(g);
    log_event(r->log, r->name);
    return 0;
}

static void ready_destroy(void *user_data) { ((Ready *)user_data)->log->destroyed++; }

/* A gradient hook (not a ready hook) that records when the backward reaches a tensor. */
static int32_t reached(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad;
    Ready *r = user_data;
    log_event(r->log, r->name);
    return 0;
}

static int32_t failing(ag_tensor t, void *user_data) {
    (void)user_data;
    ag_tensor bad = AG_NULL_TENSOR;
    ag_tensor_numel(NULL, t); /* fails: its message is quoted by the backward's */
    (void)bad;
    return 7;
}

static int find(const Log *log, const char *what) {
    for (int i = 0; i < log->n; i++)
        if (strcmp(log->events[i], what) == 0) return i;
    return -1;
}

/* f = sum(x * x * w): d/dx = 2 x w, d/dw = x^2; x is used twice (two edges into one leaf). */
static void once_after_accumulation(void) {
    Log log = {0};
    Ready rx = {&log, "x", false}, rw = {&log, "w", false};
    ag_tensor x = MAKE_RG(D(1, 2, 3), SHAPE(3)), w = MAKE_RG(D(4, 5, 6), SHAPE(3));
    int64_t idx = 0, idw = 0;
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(&idx, x, ready, &rx, ready_destroy));
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(&idw, w, ready, &rw, ready_destroy));
    ag_tensor xx = AG_NULL_TENSOR, y = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    TRY(ag_mul(&xx, x, x));
    TRY(ag_mul(&y, xx, w));
    TRY(ag_sum(&s, y, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, true, false));
    CHECKF(log.n == 2, "two ready hooks ran, got %d", log.n);
    CHECK(find(&log, "x") >= 0 && find(&log, "w") >= 0);
    /* the x hook ran last or first; read each .grad: 2 x w = [8, 20, 36], x^2 = [1, 4, 9] */
    ag_tensor gx = AG_NULL_TENSOR, gw = AG_NULL_TENSOR;
    TRY(ag_tensor_grad(&gx, x));
    TRY(ag_tensor_grad(&gw, w));
    EXPECT_VALUES(gx, D(8, 20, 36), 3, "x.grad");
    EXPECT_VALUES(gw, D(1, 4, 9), 3, "w.grad");
    /* a second backward without zeroing: the hook sees the accumulated sum [16, 40, 72] */
    log.n = 0;
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, true, false));
    CHECK(find(&log, "x") >= 0);
    CHECK(log.n == 2);
    FREE(gx, gw);
    TRY(ag_tensor_grad(&gx, x));
    EXPECT_VALUES(gx, D(16, 40, 72), 3, "x.grad after two passes");
    /* which hook ran last: its recorded gradient is the complete one */
    if (strcmp(log.events[1], "x") == 0) ARRAYS_CLOSE("what the x hook read", log.seen, D(16, 40, 72), 3);
    else ARRAYS_CLOSE("what the w hook read", log.seen, D(2, 8, 18), 3);
    /* ag_grad touches no .grad and runs no ready hook */
    log.n = 0;
    ag_tensor g = AG_NULL_TENSOR;
    CHECK_OK(ag_grad(&g, &s, 1, NULL, &x, 1, true, false, false));
    CHECKF(log.n == 0, "ag_grad ran %d ready hooks", log.n);
    /* removal runs destroy; the other hook still runs */
    CHECK_OK(ag_tensor_remove_hook(x, idx));
    CHECK(log.destroyed == 1);
    CHECK_ERR(ag_tensor_remove_hook(x, idx), AG_ERR_ARGUMENT);
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    CHECKF(log.n == 1 && strcmp(log.events[0], "w") == 0, "only w's hook ran (%d)", log.n);
    FREE(g, gx, xx, y, s, x, w);
    CHECKF(log.destroyed == 2, "freeing w ran its hook's destroy (%d)", log.destroyed);
}

/* A two-layer net: h = tanh(x W1), out = sum(h W2). The backward reaches W2 first; its ready
 * hook must run before the backward reaches h (a hook on h, nearer the input), and W1's after. */
static void fires_before_the_rest_of_the_backward(void) {
    Log log = {0};
    Ready r1 = {&log, "W1", false}, r2 = {&log, "W2", false}, rh = {&log, "h", false};
    ag_tensor x = MAKE(D(0.5, -1, 2, 0.25, 1, -0.5), SHAPE(2, 3));
    ag_tensor W1 = MAKE_RG(D(0.1, 0.2, -0.3, 0.4, 0.5, -0.6), SHAPE(3, 2));
    ag_tensor W2 = MAKE_RG(D(1, -2), SHAPE(2, 1));
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(NULL, W1, ready, &r1, NULL));
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(NULL, W2, ready, &r2, NULL));
    ag_tensor a = AG_NULL_TENSOR, h = AG_NULL_TENSOR, o = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    TRY(ag_matmul(&a, x, W1));
    TRY(ag_tanh(&h, a));
    CHECK_OK(ag_tensor_register_hook(NULL, h, reached, &rh, NULL));
    TRY(ag_matmul(&o, h, W2));
    TRY(ag_sum(&s, o, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    int i2 = find(&log, "W2"), ih = find(&log, "h"), i1 = find(&log, "W1");
    CHECKF(i2 >= 0 && ih >= 0 && i1 >= 0, "all three ran (%d %d %d)", i2, ih, i1);
    CHECKF(i2 < ih, "W2's gradient was ready (event %d) before the backward reached h (event %d)", i2, ih);
    CHECKF(ih < i1, "W1's after h (%d, %d)", ih, i1);
    /* what W1's hook read is dW1 = x^T ((1 - h^2) * (1 W2^T)), by hand from the forward values */
    double xv[6] = {0.5, -1, 2, 0.25, 1, -0.5}, w1[6] = {0.1, 0.2, -0.3, 0.4, 0.5, -0.6}, w2[2] = {1, -2};
    double want[6] = {0};
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 2; j++) {
            double pre = 0;
            for (int k = 0; k < 3; k++) pre += xv[r * 3 + k] * w1[k * 2 + j];
            double dh = w2[j] * (1 - tanh(pre) * tanh(pre));
            for (int k = 0; k < 3; k++) want[k * 2 + j] += xv[r * 3 + k] * dh;
        }
    ARRAYS_CLOSE("what W1's ready hook read", log.seen, want, 6);
    FREE(a, h, o, s, x, W1, W2);
}

/* The hook may write the gradient in place; .grad then holds what it wrote. */
static void writes_back(void) {
    Log log = {0};
    Ready r = {&log, "w", true};
    ag_tensor w = MAKE_RG(D(1, 2), SHAPE(2)), y = AG_NULL_TENSOR, s = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(NULL, w, ready, &r, NULL));
    TRY(ag_mul_scalar(&y, w, 3));
    TRY(ag_sum(&s, y, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    TRY(ag_tensor_grad(&g, w));
    EXPECT_VALUES(g, D(103, 103), 2, "w.grad written by the hook (100 + 3)");
    FREE(g, y, s, w);
}

static void errors(void) {
    Log log = {0};
    Ready r = {&log, "x", false};
    ag_tensor x = MAKE_RG(D(1, 2), SHAPE(2)), c = MAKE(D(1, 2), SHAPE(2)), y = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    TRY(ag_mul_scalar(&y, x, 2));
    CHECK_ERR(ag_tensor_register_post_accumulate_grad_hook(NULL, y, ready, &r, ready_destroy), AG_ERR_STATE);
    CHECK_ERR(ag_tensor_register_post_accumulate_grad_hook(NULL, c, ready, &r, ready_destroy), AG_ERR_STATE);
    CHECK_ERR(ag_tensor_register_post_accumulate_grad_hook(NULL, x, NULL, &r, ready_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_register_post_accumulate_grad_hook(NULL, (ag_tensor)987654321, ready, &r, ready_destroy),
              AG_ERR_INVALID_HANDLE);
    CHECKF(log.destroyed == 0, "no destroy on a failed registration (%d)", log.destroyed);
    CHECK_OK(ag_tensor_register_post_accumulate_grad_hook(NULL, x, failing, NULL, NULL));
    TRY(ag_sum(&s, y, NULL, 0, false));
    CHECK_ERR(ag_backward(s, AG_NULL_TENSOR, false, false), AG_ERR_CALLBACK);
    const char *msg = ag_last_error();
    CHECKF(strstr(msg, "post-accumulate-grad hook") && strstr(msg, "returned 7") && strstr(msg, "ag_tensor_numel"),
           "the message names the hook and quotes its failed call: %s", msg);
    FREE(y, s, x, c);
}

int main(void) {
    test_begin();
    run_group_checking_handles("once per backward, after the accumulation", once_after_accumulation);
    run_group_checking_handles("fires before the rest of the backward", fires_before_the_rest_of_the_backward);
    run_group_checking_handles("writes into the gradient", writes_back);
    run_group_checking_handles("errors", errors);
    check_no_leaks();
    return test_summary();
}
