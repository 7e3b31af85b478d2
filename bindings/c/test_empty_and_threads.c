/*
 * test_empty_and_threads.c - two promises about cost and determinism, checked over the C ABI.
 *
 * 1. Empty tensors cost nothing, whatever their other extents (issue 14, item 5). Every operation
 *    of the catalogue (include/autograd.h) runs on inputs such as [2^40, 0, 3], which hold no
 *    element, and must return at once, with the right shape (or the documented error), and so must
 *    its backward (ag_backward, and ag_grad with create_graph). An operation that materialises a
 *    broadcast or an intermediate of the huge extents takes seconds to hours, or fails with
 *    AG_ERR_OUT_OF_MEMORY: each call runs under alarm() and an address-space limit of the
 *    process's size after warm-up plus 1 GiB, and is timed (at most 1 s).
 *
 * 2. Results do not depend on the thread count (item 6): matmul (float32 and float64, 2-D,
 *    batched, broadcast, linear) and every reduction, forward and gradients, are bitwise equal at
 *    1, 2, 3 and 4 threads, on sizes above every threading threshold. Also the limits of
 *    ag_set_num_threads.
 *
 * Run natively only (valgrind does not combine with an address-space limit); see scripts/c-tests.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BIG (INT64_C(1) << 40)

/* ========================================================================================== */
/* Timing and the watchdog                                                                    */
/* ========================================================================================== */

static volatile const char *g_running = ""; /* what the watchdog names if it fires */

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "\n  FAILED: timed out (alarm) in: ";
    (void)!write(1, msg, sizeof msg - 1);
    const char *what = (const char *)g_running;
    (void)!write(1, what, strlen(what));
    (void)!write(1, "\n", 1);
    _exit(3);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Each call on empty inputs must take at most this long (they take microseconds; the bound
 * leaves room for a loaded machine). The watchdog kills the program after WATCHDOG_S. */
#define MAX_CALL_S 1.0
#define WATCHDOG_S 20

static char g_what[256];

/* Arms the watchdog and starts the clock for one call named by the context. */
static double start_call(const char *phase) {
    snprintf(g_what, sizeof g_what, "%s: %s", g_ctx, phase);
    g_running = g_what;
    alarm(WATCHDOG_S);
    return now_s();
}

static void end_call(double t0, const char *phase) {
    double dt = now_s() - t0;
    alarm(0);
    g_running = "";
    CHECKF(dt <= MAX_CALL_S, "%s took %.3f s (at most %.1f s)", phase, dt, MAX_CALL_S);
}

/* Limits the address space to what the process uses now plus `extra` bytes. */
static void limit_memory(size_t extra) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1) {
        printf("  (no /proc/self/statm: no memory limit)\n");
        if (f) fclose(f);
        return;
    }
    fclose(f);
    size_t now = (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
    struct rlimit lim = {now + extra, now + extra};
    if (setrlimit(RLIMIT_AS, &lim) != 0) printf("  (setrlimit failed: no memory limit)\n");
    else printf("  address space limited to %zu MiB (%zu MiB in use)\n", (now + extra) >> 20, now >> 20);
}

/* ========================================================================================== */
/* 1. Empty tensors of huge extents                                                           */
/* ========================================================================================== */

static ag_dtype g_dtype = AG_FLOAT64;

typedef ag_status (*op_fn)(ag_tensor *out, const ag_tensor *in);

/* An input: its shape, whether it requires grad; non-empty inputs are filled with 0.75. */
typedef struct {
    Shape shape;
    bool rg;
} Input;

/* What every element of a (small) result must be. */
enum { V_ANY, V_ZERO, V_NAN, V_NEGINF };

typedef struct {
    const char *name;
    op_fn f;
    int nin;
    Input in[3];
    ag_status want; /* AG_OK or the documented error */
    Shape out;      /* the result's shape when want is AG_OK */
    int value;      /* what the result's elements are (checked when it has at most 64) */
} Case;

#define IN(sh, r) {sh, r}

/* The operations, as op_fn. */
#define UNARY(op)                                                                              \
    static ag_status f_##op(ag_tensor *o, const ag_tensor *in) { return ag_##op(o, in[0]); }
#define BINARY(op)                                                                             \
    static ag_status f_##op(ag_tensor *o, const ag_tensor *in) { return ag_##op(o, in[0], in[1]); }
#define SCALAR_OP(op)                                                                          \
    static ag_status f_##op(ag_tensor *o, const ag_tensor *in) { return ag_##op(o, in[0], 0.5); }
UNARY(neg) UNARY(exp) UNARY(log) UNARY(relu) UNARY(sqrt) UNARY(abs) UNARY(sin) UNARY(cos) UNARY(tanh)
UNARY(sigmoid) UNARY(gelu) UNARY(softplus) UNARY(detach) UNARY(log1p) UNARY(expm1) UNARY(erf)
BINARY(add) BINARY(sub) BINARY(mul) BINARY(div) BINARY(pow) BINARY(maximum) BINARY(minimum)
BINARY(eq) BINARY(ne) BINARY(lt) BINARY(le) BINARY(gt) BINARY(ge) BINARY(matmul) BINARY(dot) BINARY(outer)
BINARY(mse_loss) BINARY(atan2)
SCALAR_OP(add_scalar) SCALAR_OP(sub_scalar) SCALAR_OP(rsub_scalar) SCALAR_OP(mul_scalar) SCALAR_OP(div_scalar)
SCALAR_OP(rdiv_scalar) SCALAR_OP(pow_scalar) SCALAR_OP(rpow_scalar) SCALAR_OP(maximum_scalar)
SCALAR_OP(minimum_scalar) SCALAR_OP(leaky_relu)

static ag_status f_where(ag_tensor *o, const ag_tensor *in) { return ag_where(o, in[0], in[1], in[2]); }
static ag_status f_clamp(ag_tensor *o, const ag_tensor *in) { return ag_clamp(o, in[0], -0.5, 0.5); }
static ag_status f_cumsum0(ag_tensor *o, const ag_tensor *in) { return ag_cumsum(o, in[0], 0); }
static ag_status f_cumsum1(ag_tensor *o, const ag_tensor *in) { return ag_cumsum(o, in[0], 1); }
static ag_status f_cumsum2(ag_tensor *o, const ag_tensor *in) { return ag_cumsum(o, in[0], -1); }
static ag_status f_linear(ag_tensor *o, const ag_tensor *in) { return ag_linear(o, in[0], in[1], in[2]); }
static ag_status f_linear_nobias(ag_tensor *o, const ag_tensor *in) {
    return ag_linear(o, in[0], in[1], AG_NULL_TENSOR);
}

/* Reductions over named axes: NAME_all, NAME_0 (axis 0), NAME_01 (axes 0 and 1), NAME_1 (axis 1),
 * NAME_0k (axis 0, keepdims). */
#define REDUCTION(op, ...)                                                                     \
    static ag_status f_##op##_all(ag_tensor *o, const ag_tensor *in) {                         \
        return ag_##op(o, in[0], NULL, 0 __VA_ARGS__, false);                                   \
    }                                                                                          \
    static ag_status f_##op##_0(ag_tensor *o, const ag_tensor *in) {                           \
        return ag_##op(o, in[0], I64(0), 1 __VA_ARGS__, false);                                 \
    }                                                                                          \
    static ag_status f_##op##_01(ag_tensor *o, const ag_tensor *in) {                          \
        return ag_##op(o, in[0], I64(0, 1), 2 __VA_ARGS__, false);                              \
    }                                                                                          \
    static ag_status f_##op##_1(ag_tensor *o, const ag_tensor *in) {                           \
        return ag_##op(o, in[0], I64(1), 1 __VA_ARGS__, false);                                 \
    }                                                                                          \
    static ag_status f_##op##_0k(ag_tensor *o, const ag_tensor *in) {                          \
        return ag_##op(o, in[0], I64(0), 1 __VA_ARGS__, true);                                  \
    }
REDUCTION(sum) REDUCTION(mean) REDUCTION(max) REDUCTION(min) REDUCTION(logsumexp) REDUCTION(var, , 0)

static ag_status f_reshape_flat(ag_tensor *o, const ag_tensor *in) { return ag_reshape(o, in[0], I64(0), 1); }
static ag_status f_reshape_3(ag_tensor *o, const ag_tensor *in) {
    return ag_reshape(o, in[0], I64(3, 0, BIG), 3);
}
static ag_status f_transpose(ag_tensor *o, const ag_tensor *in) { return ag_transpose(o, in[0], 0, 2); }
static ag_status f_permute(ag_tensor *o, const ag_tensor *in) { return ag_permute(o, in[0], I64(2, 0, 1), 3); }
static ag_status f_expand(ag_tensor *o, const ag_tensor *in) { return ag_expand(o, in[0], I64(BIG, -1, 3), 3); }
static ag_status f_squeeze(ag_tensor *o, const ag_tensor *in) { return ag_squeeze(o, in[0], I64(2), 1); }
static ag_status f_unsqueeze(ag_tensor *o, const ag_tensor *in) { return ag_unsqueeze(o, in[0], 1); }
static ag_status f_concat0(ag_tensor *o, const ag_tensor *in) { return ag_concat(o, in, 2, 0); }
static ag_status f_concat2(ag_tensor *o, const ag_tensor *in) { return ag_concat(o, in, 2, 2); }
static ag_status f_stack0(ag_tensor *o, const ag_tensor *in) { return ag_stack(o, in, 2, 0); }
static ag_status f_stack3(ag_tensor *o, const ag_tensor *in) { return ag_stack(o, in, 2, 3); }
static ag_status f_slice0(ag_tensor *o, const ag_tensor *in) { return ag_slice(o, in[0], 0, 1, BIG - 1, 2); }
static ag_status f_slice2(ag_tensor *o, const ag_tensor *in) { return ag_slice(o, in[0], 2, 0, 2, 1); }
static ag_status f_index_select0(ag_tensor *o, const ag_tensor *in) {
    return ag_index_select(o, in[0], 0, I64(0, BIG - 1, 5), 3);
}
static ag_status f_index_select2(ag_tensor *o, const ag_tensor *in) {
    return ag_index_select(o, in[0], 2, I64(2, 0), 2);
}
static ag_status f_index_select_none(ag_tensor *o, const ag_tensor *in) {
    return ag_index_select(o, in[0], 0, NULL, 0);
}
static const int64_t no_index[1] = {0}; /* a valid pointer to an index array of no elements */
static ag_status f_gather0(ag_tensor *o, const ag_tensor *in) {
    return ag_gather(o, in[0], 0, no_index, I64(4, 0, 3), 3);
}
static ag_status f_gather2(ag_tensor *o, const ag_tensor *in) {
    return ag_gather(o, in[0], 2, no_index, I64(BIG, 0, 2), 3);
}
static ag_status f_softmax0(ag_tensor *o, const ag_tensor *in) { return ag_softmax(o, in[0], 0); }
static ag_status f_softmax1(ag_tensor *o, const ag_tensor *in) { return ag_softmax(o, in[0], 1); }
static ag_status f_softmax2(ag_tensor *o, const ag_tensor *in) { return ag_softmax(o, in[0], 2); }
static ag_status f_log_softmax0(ag_tensor *o, const ag_tensor *in) { return ag_log_softmax(o, in[0], 0); }
static ag_status f_log_softmax1(ag_tensor *o, const ag_tensor *in) { return ag_log_softmax(o, in[0], 1); }
static ag_status f_log_softmax2(ag_tensor *o, const ag_tensor *in) { return ag_log_softmax(o, in[0], 2); }
static ag_status f_cross_entropy(ag_tensor *o, const ag_tensor *in) {
    return ag_cross_entropy(o, in[0], no_index, 0);
}

/* Shapes as constant initialisers. */
#define SH(...) {sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), {__VA_ARGS__}}
#define SH0 {0, {0}}
#define A3 SH(BIG, 0, 3) /* the empty operand of huge extent */

static const Case cases[] = {
    /* unary and scalar forms */
    {"neg", f_neg, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"exp", f_exp, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"log", f_log, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"relu", f_relu, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"sqrt", f_sqrt, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"abs", f_abs, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"sin", f_sin, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"cos", f_cos, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"tanh", f_tanh, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"sigmoid", f_sigmoid, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"gelu", f_gelu, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"softplus", f_softplus, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"leaky_relu", f_leaky_relu, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"detach", f_detach, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"log1p", f_log1p, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"expm1", f_expm1, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"erf", f_erf, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"clamp", f_clamp, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"add_scalar", f_add_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"sub_scalar", f_sub_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"rsub_scalar", f_rsub_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"mul_scalar", f_mul_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"div_scalar", f_div_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"rdiv_scalar", f_rdiv_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"pow_scalar", f_pow_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"rpow_scalar", f_rpow_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"maximum_scalar", f_maximum_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"minimum_scalar", f_minimum_scalar, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    /* binary, broadcasting a small operand (which gets a zero gradient) both ways round */
    {"add", f_add, 2, {IN(A3, true), IN(SH(1, 1, 3), true)}, AG_OK, A3, V_ANY},
    {"sub", f_sub, 2, {IN(SH(3), true), IN(A3, true)}, AG_OK, A3, V_ANY},
    {"mul", f_mul, 2, {IN(A3, true), IN(SH(1, 3), true)}, AG_OK, A3, V_ANY},
    {"div", f_div, 2, {IN(SH(3), true), IN(A3, true)}, AG_OK, A3, V_ANY},
    {"pow base", f_pow, 2, {IN(A3, true), IN(SH(3), true)}, AG_OK, A3, V_ANY},
    {"pow exponent", f_pow, 2, {IN(SH(1, 3), true), IN(A3, true)}, AG_OK, A3, V_ANY},
    {"maximum", f_maximum, 2, {IN(A3, true), IN(SH(3), true)}, AG_OK, A3, V_ANY},
    {"minimum", f_minimum, 2, {IN(SH(1, 1, 3), true), IN(A3, true)}, AG_OK, A3, V_ANY},
    {"atan2", f_atan2, 2, {IN(A3, true), IN(SH(3), true)}, AG_OK, A3, V_ANY},
    {"atan2, empty b", f_atan2, 2, {IN(SH(1, 3), true), IN(A3, true)}, AG_OK, A3, V_ANY},
    {"add, both broadcast", f_add, 2, {IN(SH(1, 0, 3), true), IN(SH(BIG, 0, 1), false)}, AG_OK, A3, V_ANY},
    {"eq", f_eq, 2, {IN(A3, true), IN(SH(3), true)}, AG_OK, A3, V_ANY},
    {"ne", f_ne, 2, {IN(A3, false), IN(SH(3), false)}, AG_OK, A3, V_ANY},
    {"lt", f_lt, 2, {IN(A3, false), IN(SH(3), false)}, AG_OK, A3, V_ANY},
    {"le", f_le, 2, {IN(A3, false), IN(SH(3), false)}, AG_OK, A3, V_ANY},
    {"gt", f_gt, 2, {IN(A3, false), IN(SH(3), false)}, AG_OK, A3, V_ANY},
    {"ge", f_ge, 2, {IN(A3, false), IN(SH(3), false)}, AG_OK, A3, V_ANY},
    {"where, empty cond", f_where, 3, {IN(A3, false), IN(SH(3), true), IN(SH(1, 3), true)}, AG_OK, A3, V_ANY},
    {"where, empty branch", f_where, 3, {IN(SH(3), false), IN(A3, true), IN(SH(1, 1, 1), true)}, AG_OK, A3,
     V_ANY},
    /* reductions: over everything, over the huge axis (an empty result), over the huge and the
     * empty axes (a small result), over the empty axis alone (a result of 2^40 * 3 elements: out
     * of memory at once, or for max/min no elements to reduce) */
    {"sum all", f_sum_all, 1, {IN(A3, true)}, AG_OK, SH0, V_ZERO},
    {"sum axis 0", f_sum_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"sum axes 0,1", f_sum_01, 1, {IN(A3, true)}, AG_OK, SH(3), V_ZERO},
    {"sum axis 0 keepdims", f_sum_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    {"sum axis 1", f_sum_1, 1, {IN(A3, true)}, AG_ERR_OUT_OF_MEMORY, SH0, V_ANY},
    {"mean axis 1", f_mean_1, 1, {IN(A3, true)}, AG_ERR_OUT_OF_MEMORY, SH0, V_ANY},
    {"mean all", f_mean_all, 1, {IN(A3, true)}, AG_OK, SH0, V_NAN},
    {"mean axis 0", f_mean_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"mean axes 0,1", f_mean_01, 1, {IN(A3, true)}, AG_OK, SH(3), V_NAN},
    {"mean axis 0 keepdims", f_mean_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    {"max all", f_max_all, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"max axis 0", f_max_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"max axes 0,1", f_max_01, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"max axis 0 keepdims", f_max_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    {"max axis 1", f_max_1, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"min all", f_min_all, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"min axis 0", f_min_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"min axes 0,1", f_min_01, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"min axis 1", f_min_1, 1, {IN(A3, true)}, AG_ERR_SHAPE, SH0, V_ANY},
    {"min axis 0 keepdims", f_min_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    {"var all", f_var_all, 1, {IN(A3, true)}, AG_OK, SH0, V_NAN},
    {"var axis 0", f_var_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"var axes 0,1", f_var_01, 1, {IN(A3, true)}, AG_OK, SH(3), V_NAN},
    {"var axis 0 keepdims", f_var_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    {"var axis 1", f_var_1, 1, {IN(A3, true)}, AG_ERR_OUT_OF_MEMORY, SH0, V_ANY},
    {"logsumexp all", f_logsumexp_all, 1, {IN(A3, true)}, AG_OK, SH0, V_NEGINF},
    {"logsumexp axis 0", f_logsumexp_0, 1, {IN(A3, true)}, AG_OK, SH(0, 3), V_ANY},
    {"logsumexp axes 0,1", f_logsumexp_01, 1, {IN(A3, true)}, AG_OK, SH(3), V_NEGINF},
    {"logsumexp axis 1", f_logsumexp_1, 1, {IN(A3, true)}, AG_ERR_OUT_OF_MEMORY, SH0, V_ANY},
    {"logsumexp axis 0 keepdims", f_logsumexp_0k, 1, {IN(A3, true)}, AG_OK, SH(1, 0, 3), V_ANY},
    /* cumsum along the huge axis, the empty one and the last: an empty result of the input's shape */
    {"cumsum axis 0", f_cumsum0, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"cumsum axis 1", f_cumsum1, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"cumsum axis -1", f_cumsum2, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    /* shape operations */
    {"reshape to [0]", f_reshape_flat, 1, {IN(A3, true)}, AG_OK, SH(0), V_ANY},
    {"reshape to [3,0,2^40]", f_reshape_3, 1, {IN(A3, true)}, AG_OK, SH(3, 0, BIG), V_ANY},
    {"transpose", f_transpose, 1, {IN(A3, true)}, AG_OK, SH(3, 0, BIG), V_ANY},
    {"permute", f_permute, 1, {IN(A3, true)}, AG_OK, SH(3, BIG, 0), V_ANY},
    {"expand", f_expand, 1, {IN(SH(1, 0, 3), true)}, AG_OK, A3, V_ANY},
    {"squeeze", f_squeeze, 1, {IN(SH(BIG, 0, 1, 3), true)}, AG_OK, A3, V_ANY},
    {"unsqueeze", f_unsqueeze, 1, {IN(A3, true)}, AG_OK, SH(BIG, 1, 0, 3), V_ANY},
    {"concat axis 0", f_concat0, 2, {IN(A3, true), IN(A3, true)}, AG_OK, SH(2 * BIG, 0, 3), V_ANY},
    {"concat axis 2", f_concat2, 2, {IN(A3, true), IN(SH(BIG, 0, 5), true)}, AG_OK, SH(BIG, 0, 8), V_ANY},
    {"stack axis 0", f_stack0, 2, {IN(A3, true), IN(A3, true)}, AG_OK, SH(2, BIG, 0, 3), V_ANY},
    {"stack axis 3", f_stack3, 2, {IN(A3, true), IN(A3, true)}, AG_OK, SH(BIG, 0, 3, 2), V_ANY},
    {"slice axis 0", f_slice0, 1, {IN(A3, true)}, AG_OK, SH(BIG / 2 - 1, 0, 3), V_ANY},
    {"slice axis 2", f_slice2, 1, {IN(A3, true)}, AG_OK, SH(BIG, 0, 2), V_ANY},
    {"index_select axis 0", f_index_select0, 1, {IN(A3, true)}, AG_OK, SH(3, 0, 3), V_ANY},
    {"index_select axis 2", f_index_select2, 1, {IN(A3, true)}, AG_OK, SH(BIG, 0, 2), V_ANY},
    {"index_select no indices", f_index_select_none, 1, {IN(A3, true)}, AG_OK, SH(0, 0, 3), V_ANY},
    {"gather axis 0", f_gather0, 1, {IN(A3, true)}, AG_OK, SH(4, 0, 3), V_ANY},
    {"gather axis 2", f_gather2, 1, {IN(A3, true)}, AG_OK, SH(BIG, 0, 2), V_ANY},
    /* linear algebra: batched products with an empty matrix axis and a broadcast operand */
    {"matmul [B,0,3]@[1,3,4]", f_matmul, 2, {IN(A3, true), IN(SH(1, 3, 4), true)}, AG_OK, SH(BIG, 0, 4),
     V_ANY},
    {"matmul [1,2,3]@[B,3,0]", f_matmul, 2, {IN(SH(1, 2, 3), true), IN(SH(BIG, 3, 0), true)}, AG_OK,
     SH(BIG, 2, 0), V_ANY},
    {"matmul [B,0,3]@[3,4]", f_matmul, 2, {IN(A3, true), IN(SH(3, 4), true)}, AG_OK, SH(BIG, 0, 4), V_ANY},
    {"matmul [2,3]@[B,3,0]", f_matmul, 2, {IN(SH(2, 3), true), IN(SH(BIG, 3, 0), true)}, AG_OK,
     SH(BIG, 2, 0), V_ANY},
    {"matmul [B,0,3]@[3]", f_matmul, 2, {IN(A3, true), IN(SH(3), true)}, AG_OK, SH(BIG, 0), V_ANY},
    {"matmul [3]@[B,3,0]", f_matmul, 2, {IN(SH(3), true), IN(SH(BIG, 3, 0), true)}, AG_OK, SH(BIG, 0),
     V_ANY},
    {"matmul [B,1,0,3]@[1,5,3,4]", f_matmul, 2, {IN(SH(BIG, 1, 0, 3), true), IN(SH(1, 5, 3, 4), true)}, AG_OK,
     SH(BIG, 5, 0, 4), V_ANY},
    {"matmul [0,2,3]@[1,3,4]", f_matmul, 2, {IN(SH(0, 2, 3), true), IN(SH(1, 3, 4), true)}, AG_OK,
     SH(0, 2, 4), V_ANY},
    {"matmul [B,2,0]@[1,0,4] (2^43 zeros)", f_matmul, 2, {IN(SH(BIG, 2, 0), true), IN(SH(1, 0, 4), true)},
     AG_ERR_OUT_OF_MEMORY, SH0, V_ANY},
    {"dot", f_dot, 2, {IN(SH(0), true), IN(SH(0), true)}, AG_OK, SH0, V_ZERO},
    {"outer [0]x[5]", f_outer, 2, {IN(SH(0), true), IN(SH(5), true)}, AG_OK, SH(0, 5), V_ANY},
    {"outer [5]x[0]", f_outer, 2, {IN(SH(5), true), IN(SH(0), true)}, AG_OK, SH(5, 0), V_ANY},
    {"linear", f_linear, 3, {IN(A3, true), IN(SH(4, 3), true), IN(SH(4), true)}, AG_OK, SH(BIG, 0, 4),
     V_ANY},
    {"linear, no bias", f_linear_nobias, 2, {IN(A3, true), IN(SH(4, 3), true)}, AG_OK, SH(BIG, 0, 4), V_ANY},
    {"linear, no outputs", f_linear, 3, {IN(SH(2, 5), true), IN(SH(0, 5), true), IN(SH(0), true)}, AG_OK,
     SH(2, 0), V_ANY},
    /* neural-network functions */
    {"softmax axis 0", f_softmax0, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"softmax axis 1", f_softmax1, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"softmax axis 2", f_softmax2, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"log_softmax axis 0", f_log_softmax0, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"log_softmax axis 1", f_log_softmax1, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"log_softmax axis 2", f_log_softmax2, 1, {IN(A3, true)}, AG_OK, A3, V_ANY},
    {"cross_entropy [0,2^40]", f_cross_entropy, 1, {IN(SH(0, BIG), true)}, AG_OK, SH0, V_NAN},
    {"mse_loss", f_mse_loss, 2, {IN(A3, true), IN(A3, true)}, AG_OK, SH0, V_NAN},
};

static ag_tensor make_input(Input in) {
    ag_tensor t = AG_NULL_TENSOR;
    int64_t n = numel_of_shape(in.shape);
    if (n == 0) TRY(ag_tensor_zeros(&t, in.shape.d, in.shape.ndim, g_dtype));
    else TRY(ag_tensor_full(&t, in.shape.d, in.shape.ndim, 0.75, g_dtype));
    if (in.rg) TRY(ag_tensor_set_requires_grad(t, true));
    return t;
}

static bool value_matches(double v, int value) {
    switch (value) {
    case V_ZERO: return v == 0.0;
    case V_NAN: return isnan(v);
    case V_NEGINF: return isinf(v) && v < 0;
    default: return true;
    }
}

/* A tensor's shape equals `want`, and its elements (when at most 64) are all `value`. */
static void expect_result(ag_tensor t, Shape want, int value, const char *what) {
    Shape s = {0, {0}};
    if (!TRY(ag_tensor_ndim(&s.ndim, t)) || !TRY(ag_tensor_shape(s.d, AG_MAX_NDIM, t))) return;
    char b1[128], b2[128];
    if (!CHECKF(shape_eq(s, want), "%s: shape %s, expected %s", what, shape_str(s, b1, sizeof b1),
                shape_str(want, b2, sizeof b2)))
        return;
    int64_t n = numel_of_shape(s);
    if (n > 64 || value == V_ANY) return;
    double buf[64];
    if (!TRY(ag_tensor_copy_data(buf, 64, AG_FLOAT64, t))) return;
    for (int64_t i = 0; i < n; i++)
        if (!CHECKF(value_matches(buf[i], value), "%s: element %" PRId64 " is %g", what, i, buf[i])) return;
}

/* Backward from sum(result): each input that requires grad gets a gradient of its own shape,
 * all zeros (the result holds no element, or none that depends on a non-empty input). Once
 * through ag_backward, once through ag_grad with create_graph. */
static void check_backward(const Case *c, const ag_tensor *in, ag_tensor out) {
    bool any_rg = false;
    for (int i = 0; i < c->nin; i++) any_rg |= c->in[i].rg;
    bool out_rg = false;
    TRY(ag_tensor_requires_grad(&out_rg, out));
    if (!any_rg || !out_rg) return;
    ag_tensor root = AG_NULL_TENSOR;
    double t0 = start_call("sum for backward");
    bool ok = TRY(ag_sum(&root, out, NULL, 0, false));
    end_call(t0, "sum of the result");
    if (!ok) return;

    t0 = start_call("ag_backward");
    ok = TRY(ag_backward(root, AG_NULL_TENSOR, true, false));
    end_call(t0, "ag_backward");
    for (int i = 0; ok && i < c->nin; i++) {
        if (!c->in[i].rg) continue;
        ag_tensor g = AG_NULL_TENSOR;
        TRY(ag_tensor_grad(&g, in[i]));
        char what[64];
        snprintf(what, sizeof what, "gradient of input %d", i);
        if (CHECKF(g != AG_NULL_TENSOR, "%s: none", what)) expect_result(g, c->in[i].shape, V_ZERO, what);
        TRY(ag_tensor_free(g));
        TRY(ag_tensor_zero_grad(in[i]));
    }

    ag_tensor rgs[3], grads[3] = {0, 0, 0};
    int n = 0;
    for (int i = 0; i < c->nin; i++)
        if (c->in[i].rg) rgs[n++] = in[i];
    t0 = start_call("ag_grad create_graph");
    ok = TRY(ag_grad(grads, &root, 1, NULL, rgs, n, false, true, true));
    end_call(t0, "ag_grad with create_graph");
    for (int i = 0, k = 0; ok && i < c->nin; i++) {
        if (!c->in[i].rg) continue;
        /* allow_unused: an input the result does not depend on (comparisons) may get none */
        if (grads[k] != AG_NULL_TENSOR) expect_result(grads[k], c->in[i].shape, V_ZERO, "ag_grad gradient");
        TRY(ag_tensor_free(grads[k]));
        k++;
    }
    TRY(ag_tensor_free(root));
}

static void run_case(const Case *c) {
    set_ctx("%s, %s", c->name, g_dtype == AG_FLOAT32 ? "float32" : "float64");
    if (g_verbose) printf("  %s\n", g_ctx);
    ag_tensor in[3] = {0, 0, 0};
    for (int i = 0; i < c->nin; i++) in[i] = make_input(c->in[i]);
    ag_tensor out = SENTINEL;
    double t0 = start_call("forward");
    ag_status st = c->f(&out, in);
    end_call(t0, "forward");
    if (c->want == AG_OK) {
        if (CHECKF(st == AG_OK, "forward returned %s: %s", ag_status_name(st), ag_last_error())) {
            expect_result(out, c->out, c->value, "result");
            check_backward(c, in, out);
            TRY(ag_tensor_free(out));
        }
    } else {
        CHECKF(st == c->want, "forward returned %s, expected %s (%s)", ag_status_name(st), expected_name(c->want),
               st == AG_OK ? "" : ag_last_error());
        if (st == AG_OK) TRY(ag_tensor_free(out));
        else CHECK(out == SENTINEL);
    }
    for (int i = 0; i < c->nin; i++) TRY(ag_tensor_free(in[i]));
}

static void test_empty_ops(void) {
    for (int d = 0; d < 2; d++) {
        g_dtype = d == 0 ? AG_FLOAT64 : AG_FLOAT32;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    }
    set_ctx("%s", "");
}

/* Creators, an optimizer step and gradient accumulation on empty tensors of huge extents. */
static void test_empty_creators_and_training(void) {
    const int64_t *s = I64(BIG, 0, 3);
    ag_tensor t[6] = {0};
    set_ctx("creators");
    double t0 = start_call("creators");
    TRY(ag_tensor_zeros(&t[0], s, 3, AG_FLOAT32));
    TRY(ag_tensor_ones(&t[1], s, 3, AG_FLOAT64));
    TRY(ag_tensor_full(&t[2], s, 3, 2.0, AG_FLOAT32));
    TRY(ag_tensor_rand_uniform(&t[3], s, 3, 0, 1, 7, AG_FLOAT64));
    TRY(ag_tensor_rand_normal(&t[4], s, 3, 0, 1, 7, AG_FLOAT32));
    TRY(ag_tensor_from_data(&t[5], NULL, s, 3, AG_FLOAT64));
    end_call(t0, "creators");
    for (int i = 0; i < 6; i++) {
        expect_result(t[i], SHAPE(BIG, 0, 3), V_ANY, "creator");
        TRY(ag_tensor_free(t[i]));
    }
    ag_tensor eye = 0;
    CHECK_OK(ag_tensor_eye(&eye, 0, BIG, AG_FLOAT64));
    expect_result(eye, SHAPE(0, BIG), V_ANY, "eye");
    TRY(ag_tensor_free(eye));

    set_ctx("optimizer steps on an empty parameter");
    ag_tensor p = 0, w = 0, y = 0, loss = 0;
    TRY(ag_tensor_zeros(&p, s, 3, AG_FLOAT64));
    TRY(ag_tensor_set_requires_grad(p, true));
    TRY(ag_tensor_full(&w, I64(3), 1, 1.0, AG_FLOAT64));
    TRY(ag_tensor_set_requires_grad(w, true));
    ag_tensor params[2] = {p, w};
    ag_optimizer opts[3] = {0, 0, 0};
    TRY(ag_optimizer_sgd(&opts[0], params, 2, 0.1, 0.9, false, 0.01));
    TRY(ag_optimizer_adam(&opts[1], params, 2, 0.1, 0.9, 0.999, 1e-8, 0.01));
    TRY(ag_optimizer_adamw(&opts[2], params, 2, 0.1, 0.9, 0.999, 1e-8, 0.01));
    for (int step = 0; step < 2; step++) {
        t0 = start_call("training step");
        TRY(ag_mul(&y, p, w));
        TRY(ag_sum(&loss, y, NULL, 0, false));
        TRY(ag_backward(loss, AG_NULL_TENSOR, false, false));
        for (int k = 0; k < 3; k++) TRY(ag_optimizer_step(opts[k]));
        end_call(t0, "forward, backward and three optimizer steps");
        TRY(ag_tensor_free(y));
        TRY(ag_tensor_free(loss));
    }
    ag_tensor g = 0;
    TRY(ag_tensor_grad(&g, p));
    expect_result(g, SHAPE(BIG, 0, 3), V_ANY, "gradient of the empty parameter");
    TRY(ag_tensor_free(g));
    for (int k = 0; k < 3; k++) TRY(ag_optimizer_free(opts[k]));
    TRY(ag_tensor_free(p));
    TRY(ag_tensor_free(w));
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* 2. Results do not depend on the thread count                                               */
/* ========================================================================================== */

/* A tensor's bytes in its own dtype (malloc'ed; free it), and their count. */
static void *raw_bytes(ag_tensor t, size_t *bytes) {
    int64_t n = 0;
    ag_dtype dt = 0;
    TRY(ag_tensor_numel(&n, t));
    TRY(ag_tensor_dtype(&dt, t));
    size_t size = (size_t)n * (dt == AG_FLOAT32 ? 4 : 8);
    void *buf = malloc(size ? size : 1);
    TRY(ag_tensor_copy_data(buf, n, dt, t));
    *bytes = size;
    return buf;
}

/* Values in [-1, 1) that are not round numbers, from a seed (no library call involved). */
static ag_tensor pseudo_random(Shape s, ag_dtype dt, uint64_t seed, bool rg) {
    int64_t n = numel_of_shape(s);
    double *v = malloc((size_t)n * sizeof *v);
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int64_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        v[i] = (double)(x >> 11) / 4503599627370496.0 - 1.0; /* 2^52 */
    }
    ag_tensor t = make_at(v, s, dt, rg, HERE);
    free(v);
    return t;
}

typedef struct {
    const char *name;
    int nin;
    Shape in[3];
    /* the result (forward) from the inputs */
    ag_status (*f)(ag_tensor *out, const ag_tensor *in);
} DetCase;

static ag_status f_sum_axis1(ag_tensor *o, const ag_tensor *in) { return ag_sum(o, in[0], I64(1), 1, false); }
static ag_status f_mean_axis0(ag_tensor *o, const ag_tensor *in) { return ag_mean(o, in[0], I64(0), 1, true); }
static ag_status f_var_axis1(ag_tensor *o, const ag_tensor *in) { return ag_var(o, in[0], I64(1), 1, 1, false); }
static ag_status f_lse_axis1(ag_tensor *o, const ag_tensor *in) { return ag_logsumexp(o, in[0], I64(1), 1, false); }
static ag_status f_max_axis0(ag_tensor *o, const ag_tensor *in) { return ag_max(o, in[0], I64(0), 1, false); }
static ag_status f_softmax_last(ag_tensor *o, const ag_tensor *in) { return ag_softmax(o, in[0], -1); }
static ag_status f_cross_entropy_det(ag_tensor *o, const ag_tensor *in) {
    static int64_t labels[600];
    for (int i = 0; i < 600; i++) labels[i] = (i * 7) % 500;
    return ag_cross_entropy(o, in[0], labels, 600);
}
static ag_status f_mul_sum(ag_tensor *o, const ag_tensor *in) {
    ag_tensor p = 0;
    ag_status st = ag_mul(&p, in[0], in[1]);
    if (st == AG_OK) st = ag_sum(o, p, NULL, 0, false);
    ag_tensor_free(p);
    return st;
}

static const DetCase det_cases[] = {
    /* the case, and products large enough to be split into blocks (and to have been
     * split by OpenBLAS's own threads before) */
    {"matmul 300x200 @ 200x250", 2, {SH(300, 200), SH(200, 250)}, f_matmul},
    {"matmul 700x300 @ 300x600", 2, {SH(700, 300), SH(300, 600)}, f_matmul},
    {"matmul 256x784 @ 784x600 (column blocks)", 2, {SH(256, 784), SH(784, 600)}, f_matmul},
    {"matmul batched, broadcast [3,300,200] @ [1,200,260]", 2, {SH(3, 300, 200), SH(1, 200, 260)}, f_matmul},
    {"matmul 1-D @ 2-D", 2, {SH(700), SH(700, 900)}, f_matmul},
    {"linear [600,500] w[700,500] b[700]", 3, {SH(600, 500), SH(700, 500), SH(700)}, f_linear},
    /* reductions and the ops made of them, over more elements than the threading threshold */
    {"sum all 2^20", 1, {SH(1 << 20)}, f_sum_all},
    {"sum axis 1", 1, {SH(1024, 1024)}, f_sum_axis1},
    {"mean axis 0 keepdims", 1, {SH(1024, 1024)}, f_mean_axis0},
    {"var axis 1", 1, {SH(1024, 1024)}, f_var_axis1},
    {"logsumexp axis 1", 1, {SH(1024, 1024)}, f_lse_axis1},
    {"max axis 0", 1, {SH(1024, 1024)}, f_max_axis0},
    {"softmax", 1, {SH(1024, 1024)}, f_softmax_last},
    {"cross_entropy", 1, {SH(600, 500)}, f_cross_entropy_det},
    {"sum(a * b) 2^20", 2, {SH(1 << 20), SH(1 << 20)}, f_mul_sum},
};

/* The result and the gradients of sum(result * w) (w fixed, not round) for each input, at 1,
 * 2, 3 and 4 threads: bitwise equal to those at 1 thread. */
static void test_thread_count_independence(void) {
    int64_t before = 0;
    TRY(ag_num_threads(&before));
    for (size_t ci = 0; ci < sizeof det_cases / sizeof det_cases[0]; ci++) {
        const DetCase *c = &det_cases[ci];
        for (int d = 0; d < 2; d++) {
            ag_dtype dt = d == 0 ? AG_FLOAT64 : AG_FLOAT32;
            set_ctx("%s, %s", c->name, dt == AG_FLOAT32 ? "float32" : "float64");
            ag_tensor in[3] = {0, 0, 0};
            for (int i = 0; i < c->nin; i++) in[i] = pseudo_random(c->in[i], dt, 11 + 7 * i + ci, true);
            void *want[4] = {0};
            size_t want_bytes[4] = {0};
            for (int threads = 1; threads <= 4; threads++) {
                TRY(ag_set_num_threads(threads));
                ag_tensor out = 0, w = 0, prod = 0, loss = 0;
                if (!TRY(c->f(&out, in))) break;
                Shape os = {0, {0}};
                TRY(ag_tensor_ndim(&os.ndim, out));
                TRY(ag_tensor_shape(os.d, AG_MAX_NDIM, out));
                w = pseudo_random(os, dt, 99, false);
                TRY(ag_mul(&prod, out, w));
                TRY(ag_sum(&loss, prod, NULL, 0, false));
                TRY(ag_backward(loss, AG_NULL_TENSOR, false, false));
                ag_tensor got[4] = {out, 0, 0, 0};
                for (int i = 0; i < c->nin; i++) TRY(ag_tensor_grad(&got[1 + i], in[i]));
                for (int k = 0; k < 1 + c->nin; k++) {
                    size_t bytes = 0;
                    void *b = raw_bytes(got[k], &bytes);
                    if (threads == 1) {
                        want[k] = b;
                        want_bytes[k] = bytes;
                        continue;
                    }
                    size_t differ = 0, n = bytes / (dt == AG_FLOAT32 ? 4 : 8);
                    for (size_t e = 0; e < n; e++) {
                        size_t es = dt == AG_FLOAT32 ? 4 : 8;
                        differ += memcmp((char *)b + e * es, (char *)want[k] + e * es, es) != 0;
                    }
                    CHECKF(bytes == want_bytes[k] && differ == 0,
                           "%s at %d threads: %zu of %zu elements differ from 1 thread",
                           k == 0 ? "result" : k == 1 ? "gradient 0" : k == 2 ? "gradient 1" : "gradient 2", threads,
                           differ, n);
                    free(b);
                }
                for (int k = 1; k < 1 + c->nin; k++) TRY(ag_tensor_free(got[k]));
                for (int i = 0; i < c->nin; i++) TRY(ag_tensor_zero_grad(in[i]));
                TRY(ag_tensor_free(out));
                TRY(ag_tensor_free(w));
                TRY(ag_tensor_free(prod));
                TRY(ag_tensor_free(loss));
            }
            for (int k = 0; k < 4; k++) free(want[k]);
            for (int i = 0; i < c->nin; i++) TRY(ag_tensor_free(in[i]));
        }
    }
    set_ctx("%s", "");
    TRY(ag_set_num_threads(before));
}

/* The threads of this process (the entries of /proc/self/task); -1 if unknown. */
static int process_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    fclose(f);
    return n;
}

/* The limits of ag_set_num_threads: 1 to 256, the count round-trips, a large count then a small
 * one gives the same results, and the workers beyond the new count end: 256 threads start 255
 * workers for a kernel of 2^24 elements (256 chunks); after ag_set_num_threads(2) at most one
 * is left, so the process has at least 250 threads fewer. */
static void test_thread_count_limits(void) {
    int64_t before = 0, got = 0;
    TRY(ag_num_threads(&before));
    CHECK_ERR(ag_set_num_threads(0), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_set_num_threads(257), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_set_num_threads(-1), AG_ERR_ARGUMENT);
    CHECK_OK(ag_set_num_threads(256));
    CHECK_OK(ag_num_threads(&got));
    CHECK(got == 256);
    ag_tensor x = 0, e1 = 0, e2 = 0, a = 0, p1 = 0, p2 = 0;
    TRY(ag_tensor_full(&x, I64(1 << 20), 1, 0.5, AG_FLOAT32));
    TRY(ag_exp(&e1, x));
    a = pseudo_random(SHAPE(600, 600), AG_FLOAT64, 5, false);
    TRY(ag_matmul(&p1, a, a));
    CHECK_OK(ag_set_num_threads(2));
    TRY(ag_exp(&e2, x));
    TRY(ag_matmul(&p2, a, a));
    size_t b1 = 0, b2 = 0, b3 = 0, b4 = 0;
    void *r1 = raw_bytes(e1, &b1), *r2 = raw_bytes(e2, &b2), *r3 = raw_bytes(p1, &b3), *r4 = raw_bytes(p2, &b4);
    CHECK(b1 == b2 && memcmp(r1, r2, b1) == 0);
    CHECK(b3 == b4 && memcmp(r3, r4, b3) == 0);
    free(r1), free(r2), free(r3), free(r4);
    FREE(x, e1, e2, a, p1, p2);

    ag_tensor big = 0, ebig = 0;
    CHECK_OK(ag_set_num_threads(256));
    TRY(ag_tensor_full(&big, I64(1 << 24), 1, 0.5, AG_FLOAT32));
    TRY(ag_exp(&ebig, big));
    TRY(ag_tensor_free(ebig));
    int high = process_threads();
    CHECK_OK(ag_set_num_threads(2));
    int low = process_threads();
    for (int i = 0; i < 5000 && low > high - 250; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        low = process_threads();
    }
    printf("  threads of the process: %d at ag_set_num_threads(256) after a large kernel, %d after (2)\n", high,
           low);
    CHECKF(high >= 256 && low <= high - 250, "threads: %d at 256, %d after lowering to 2 (want 250 fewer)", high,
           low);
    TRY(ag_exp(&ebig, big)); /* the pool still works */
    FREE(big, ebig);
    TRY(ag_set_num_threads(before));
}

int main(void) {
    test_begin();
    signal(SIGALRM, on_alarm);
    /* Warm up (worker threads, BLAS buffers), then limit the address space. */
    {
        ag_tensor a = 0, b = 0, c = 0;
        TRY(ag_tensor_full(&a, I64(1 << 20), 1, 1.0, AG_FLOAT32));
        TRY(ag_exp(&b, a));
        TRY(ag_tensor_free(a));
        TRY(ag_tensor_free(b));
        TRY(ag_tensor_full(&a, I64(256, 256), 2, 1.0, AG_FLOAT64));
        TRY(ag_matmul(&c, a, a));
        TRY(ag_tensor_free(a));
        TRY(ag_tensor_free(c));
    }
    run_group_checking_handles("results do not depend on the thread count (1, 2, 3, 4)", test_thread_count_independence);
    run_group_checking_handles("ag_set_num_threads limits", test_thread_count_limits);
    limit_memory((size_t)1 << 30);
    run_group_checking_handles("empty tensors of huge extents: every operation, forward and backward", test_empty_ops);
    run_group_checking_handles("empty tensors of huge extents: creators and optimizer steps",
                               test_empty_creators_and_training);
    check_no_leaks();
    return test_summary();
}
