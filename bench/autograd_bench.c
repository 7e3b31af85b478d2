/*
 * autograd_bench.c - the Autograd peer of the benchmark suite, through the C API only.
 *
 *   autograd_bench BENCH THREADS REPS      BENCH is one of B1..B11 (see bench/README.md)
 *
 * Prints one "RESULT {json}" line per measured case (see bench_common.h). Any failing API call
 * prints ag_last_error() and exits with status 1, so the driver notices a broken engine.
 * B6 measures a single repetition: the driver starts a fresh process for each one.
 */
#include "autograd.h"
#include "bench_common.h"

/* Issue 16's capture-and-replay API (B7, B8, B9), as planned for include/autograd.h. Declared
 * here only while the header lacks it, so that this program compiles before the engine lands. */
#if !defined(AG_FUNCTION_API) && !defined(AG_NULL_FUNCTION)
typedef uint64_t ag_function;
#define AG_NULL_FUNCTION ((ag_function)0)
typedef int32_t (*ag_capture_fn)(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                                 int64_t ninputs, void *user_data);
ag_status ag_tensor_set_data(ag_tensor t, const void *data, int64_t count, ag_dtype dtype);
ag_status ag_set_recomputable(bool *previous, bool enabled);
ag_status ag_recompute(ag_tensor root);
ag_status ag_capture(ag_function *out, ag_capture_fn fn, const ag_tensor *inputs, int64_t ninputs,
                     int64_t noutputs, void *user_data);
ag_status ag_function_call(ag_tensor *outputs, int64_t noutputs, ag_function f,
                           const ag_tensor *inputs, int64_t ninputs);
ag_status ag_function_call_into(const ag_tensor *outputs, int64_t noutputs, ag_function f,
                                const ag_tensor *inputs, int64_t ninputs);
ag_status ag_function_free(ag_function f);
#endif
#ifndef AG_FUNCTION_INFO_COUNT /* added to the API on main after api16.h; informative here */
#define AG_FUNCTION_INFO_COUNT 8
ag_status ag_function_info(int64_t *out, int64_t capacity, ag_function f);
#endif
/* Weak references: against a library without the capture API (one built before issue 16, as
 * bench/compare.py runs, or today's) the program still loads and runs B1-B6, and B7-B9 measure
 * their eager cases and report the replay case as missing (see replay_api_present). */
#pragma weak ag_capture
#pragma weak ag_function_call_into
#pragma weak ag_function_free
#pragma weak ag_function_info

static const char *PEER = "autograd";

/* Every API call goes through CK: on failure report where and why, then exit(1). */
#define CK(call)                                                                                  \
    do {                                                                                          \
        ag_status st_ = (call);                                                                   \
        if (st_ != AG_OK) {                                                                       \
            fprintf(stderr, "autograd_bench: %s failed at %s:%d: %s (%s)\n", #call, __FILE__,      \
                    __LINE__, ag_status_name(st_), ag_last_error());                              \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

/* A leaf tensor holding the deterministic fill (bench_common.h) of the given shape and dtype. */
static ag_tensor make_filled(const int64_t *shape, int64_t ndim, ag_dtype dtype, double phase,
                             double scale, bool requires_grad) {
    int64_t n = 1;
    for (int64_t i = 0; i < ndim; i++) n *= shape[i];
    size_t elem = dtype == AG_FLOAT32 ? sizeof(float) : sizeof(double);
    void *buf = malloc((size_t)n * elem);
    if (!buf) { fprintf(stderr, "autograd_bench: out of memory\n"); exit(1); }
    if (dtype == AG_FLOAT32) bench_fill_f32(buf, n, phase, scale);
    else bench_fill_f64(buf, n, phase, scale);
    ag_tensor t;
    CK(ag_tensor_from_data(&t, buf, shape, ndim, dtype));
    free(buf);
    if (requires_grad) CK(ag_tensor_set_requires_grad(t, true));
    return t;
}

/* ---------------------------------------------------------------------------------------- */
/* B1 and B6: the scalar op chain (add leaf, mul leaf, tanh, relu) repeated `cycles` times.  */
/* ---------------------------------------------------------------------------------------- */

static const double CHAIN_LEAVES[4] = {0.5, -0.3, 0.8, 1.2};

static void make_chain_leaves(ag_tensor x[4]) {
    for (int k = 0; k < 4; k++) {
        CK(ag_tensor_from_data(&x[k], &CHAIN_LEAVES[k], NULL, 0, AG_FLOAT64));
        CK(ag_tensor_set_requires_grad(x[k], true));
    }
}

/* Builds the chain and returns the handle of its last result. Each intermediate handle is freed
 * as soon as the next op has used it (the graph keeps what backward needs), which matches a
 * Python peer rebinding `v`. */
static ag_tensor chain_forward(const ag_tensor x[4], int64_t cycles) {
    ag_tensor v = x[0], t;
#define CHAIN_STEP(call)                                  \
    do {                                                  \
        CK(call);                                         \
        if (v != x[0]) CK(ag_tensor_free(v));             \
        v = t;                                            \
    } while (0)
    for (int64_t i = 0; i < cycles; i++) {
        CHAIN_STEP(ag_add(&t, v, x[i % 4]));
        CHAIN_STEP(ag_mul(&t, v, x[(i + 1) % 4]));
        CHAIN_STEP(ag_tanh(&t, v));
        CHAIN_STEP(ag_relu(&t, v));
    }
#undef CHAIN_STEP
    return v;
}

/* One B1 repetition on the leaves x: the chain, backward from its end and the release of every
 * handle, timed (seconds returned); then, untimed, the leaf gradients are read into grads and
 * cleared. The chain's final value is read into *value (inside the timed region) when value is
 * not NULL, which B1 does only in its untimed warm-up. */
static double chain_eager_rep(const ag_tensor x[4], int64_t cycles, double *value, double grads[4]) {
    double t0 = bench_now();
    ag_tensor v = chain_forward(x, cycles);
    CK(ag_backward(v, AG_NULL_TENSOR, false, false));
    if (value) CK(ag_tensor_item(value, v));
    CK(ag_tensor_free(v));
    double t1 = bench_now();
    for (int k = 0; k < 4; k++) { /* gradients of this repetition, then zeroed (untimed) */
        ag_tensor g;
        CK(ag_tensor_grad(&g, x[k]));
        grads[k] = 0;
        if (g != AG_NULL_TENSOR) {
            CK(ag_tensor_item(&grads[k], g));
            CK(ag_tensor_free(g));
        }
        CK(ag_tensor_zero_grad(x[k]));
    }
    return t1 - t0;
}

static void bench_b1(int threads, int reps) {
    const int64_t cycles = 2500, ops = 4 * cycles;
    ag_tensor x[4];
    make_chain_leaves(x);
    double *samples = calloc((size_t)reps, sizeof(double));
    double value = 0, grads[4] = {0};
    for (int r = -1; r < reps; r++) { /* r = -1 is an untimed warm-up */
        /* the value is read once, in the warm-up, outside the timed repetitions */
        double dt = chain_eager_rep(x, cycles, r < 0 ? &value : NULL, grads);
        if (r >= 0) samples[r] = dt / (double)ops * 1e6;
    }
    int64_t live;
    CK(ag_live_handle_count(&live));
    char info[512];
    snprintf(info, sizeof info,
             "{\"value\": %.17g, \"grads\": [%.17g, %.17g, %.17g, %.17g], \"live_handles_after\": %lld}",
             value, grads[0], grads[1], grads[2], grads[3], (long long)live);
    bench_result("B1", "chain10k", PEER, threads, "us_per_op", samples, reps, info);
    for (int k = 0; k < 4; k++) CK(ag_tensor_free(x[k]));
    free(samples);
}

static void bench_b6(int threads) {
    const int64_t cycles = 250000;
    ag_tensor x[4];
    make_chain_leaves(x);
    int reset_ok = bench_reset_peak_rss() == 0;
    double rss0 = bench_proc_status_mib("VmRSS");
    double t0 = bench_now();
    ag_tensor v = chain_forward(x, cycles);
    double t1 = bench_now();
    CK(ag_backward(v, AG_NULL_TENSOR, false, false));
    double t2 = bench_now();
    double value;
    CK(ag_tensor_item(&value, v));
    CK(ag_tensor_free(v));
    double t3 = bench_now();
    double hwm = bench_proc_status_mib("VmHWM");
    double fwd = t1 - t0, bwd = t2 - t1, mem = hwm - rss0;
    char info[256];
    snprintf(info, sizeof info, "{\"value\": %.17g, \"release_s\": %.6g, \"peak_reset\": %s}", value,
             t3 - t2, reset_ok ? "true" : "false");
    bench_result("B6", "forward_s", PEER, threads, "s", &fwd, 1, info);
    bench_result("B6", "backward_s", PEER, threads, "s", &bwd, 1, info);
    bench_result("B6", "mem_mib", PEER, threads, "MiB", &mem, 1, info);
    for (int k = 0; k < 4; k++) CK(ag_tensor_free(x[k]));
}

/* ---------------------------------------------------------------------------------------- */
/* B2 and B3: MLP training steps                                                            */
/* ---------------------------------------------------------------------------------------- */

/* One layer's parameters: weight (out, in) and bias (out), filled deterministically with
 * scale 1/sqrt(in) (phases as in bench/README.md). */
static void make_layer(ag_tensor *w, ag_tensor *b, int64_t in, int64_t out, ag_dtype dt,
                       double w_phase, double b_phase) {
    int64_t ws[2] = {out, in}, bs[1] = {out};
    double scale = 1.0 / sqrt((double)in);
    *w = make_filled(ws, 2, dt, w_phase, scale, true);
    *b = make_filled(bs, 1, dt, b_phase, scale, true);
}

/* B2: 64-32-1 MLP, batch 16, float64, ReLU, MSE, SGD(lr 0.01). */
typedef struct { ag_tensor x, y, w1, b1, w2, b2; ag_optimizer opt; } mlp2;

static double mlp2_step(mlp2 *m, bool want_loss) {
    ag_tensor h, r, o, loss;
    CK(ag_linear(&h, m->x, m->w1, m->b1));
    CK(ag_relu(&r, h));
    CK(ag_linear(&o, r, m->w2, m->b2));
    CK(ag_mse_loss(&loss, o, m->y));
    CK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CK(ag_optimizer_step(m->opt));
    CK(ag_optimizer_zero_grad(m->opt));
    double value = 0;
    if (want_loss) CK(ag_tensor_item(&value, loss));
    CK(ag_tensor_free(h)); CK(ag_tensor_free(r)); CK(ag_tensor_free(o)); CK(ag_tensor_free(loss));
    return value;
}

/* B2's data, initial parameters and SGD optimizer (also B8's, for both of its models). */
static void mlp2_init(mlp2 *m) {
    int64_t xs[2] = {16, 64}, ys[2] = {16, 1};
    m->x = make_filled(xs, 2, AG_FLOAT64, 0.1, 1.0, false);
    m->y = make_filled(ys, 2, AG_FLOAT64, 0.2, 1.0, false);
    make_layer(&m->w1, &m->b1, 64, 32, AG_FLOAT64, 0.3, 0.4);
    make_layer(&m->w2, &m->b2, 32, 1, AG_FLOAT64, 0.5, 0.6);
    ag_tensor params[4] = {m->w1, m->b1, m->w2, m->b2};
    CK(ag_optimizer_sgd(&m->opt, params, 4, 0.01, 0.0, false, 0.0));
}

static void mlp2_free(mlp2 *m) {
    CK(ag_optimizer_free(m->opt));
    ag_tensor all[6] = {m->x, m->y, m->w1, m->b1, m->w2, m->b2};
    for (int i = 0; i < 6; i++) CK(ag_tensor_free(all[i]));
}

static void bench_b2(int threads, int reps) {
    const int steps = 200, warmup = 20;
    mlp2 m;
    mlp2_init(&m);
    double first_loss = 0;
    for (int s = 0; s < warmup; s++) {
        double l = mlp2_step(&m, s == 0);
        if (s == 0) first_loss = l;
    }
    double *samples = calloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (int s = 0; s < steps; s++) mlp2_step(&m, false);
        samples[r] = (bench_now() - t0) / steps * 1e6;
    }
    char info[128];
    snprintf(info, sizeof info, "{\"first_loss\": %.17g, \"steps_per_rep\": %d}", first_loss, steps);
    bench_result("B2", "mlp64", PEER, threads, "us_per_step", samples, reps, info);
    mlp2_free(&m);
    free(samples);
}

/* B3: 784-512-512-10 MLP, batch 256, float32, ReLU, cross-entropy, SGD(lr 0.01). */
typedef struct { ag_tensor x, w[3], b[3]; int64_t labels[256]; ag_optimizer opt; } mlp3;

static double mlp3_step(mlp3 *m, bool want_loss) {
    ag_tensor h1, r1, h2, r2, logits, loss;
    CK(ag_linear(&h1, m->x, m->w[0], m->b[0]));
    CK(ag_relu(&r1, h1));
    CK(ag_linear(&h2, r1, m->w[1], m->b[1]));
    CK(ag_relu(&r2, h2));
    CK(ag_linear(&logits, r2, m->w[2], m->b[2]));
    CK(ag_cross_entropy(&loss, logits, m->labels, 256));
    CK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CK(ag_optimizer_step(m->opt));
    CK(ag_optimizer_zero_grad(m->opt));
    double value = 0;
    if (want_loss) CK(ag_tensor_item(&value, loss));
    ag_tensor tmp[6] = {h1, r1, h2, r2, logits, loss};
    for (int i = 0; i < 6; i++) CK(ag_tensor_free(tmp[i]));
    return value;
}

/* B3's data, labels, initial parameters and SGD optimizer (also B9's, for both of its models). */
static void mlp3_init(mlp3 *m) {
    int64_t xs[2] = {256, 784};
    m->x = make_filled(xs, 2, AG_FLOAT32, 0.1, 1.0, false);
    make_layer(&m->w[0], &m->b[0], 784, 512, AG_FLOAT32, 0.3, 0.4);
    make_layer(&m->w[1], &m->b[1], 512, 512, AG_FLOAT32, 0.5, 0.6);
    make_layer(&m->w[2], &m->b[2], 512, 10, AG_FLOAT32, 0.7, 0.8);
    for (int i = 0; i < 256; i++) m->labels[i] = i % 10;
    ag_tensor params[6] = {m->w[0], m->b[0], m->w[1], m->b[1], m->w[2], m->b[2]};
    CK(ag_optimizer_sgd(&m->opt, params, 6, 0.01, 0.0, false, 0.0));
}

static void mlp3_free(mlp3 *m) {
    CK(ag_optimizer_free(m->opt));
    CK(ag_tensor_free(m->x));
    for (int i = 0; i < 3; i++) { CK(ag_tensor_free(m->w[i])); CK(ag_tensor_free(m->b[i])); }
}

static void bench_b3(int threads, int reps) {
    const int steps = 5, warmup = 2;
    mlp3 m;
    mlp3_init(&m);
    double first_loss = 0;
    for (int s = 0; s < warmup; s++) {
        double l = mlp3_step(&m, s == 0);
        if (s == 0) first_loss = l;
    }
    double *samples = calloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (int s = 0; s < steps; s++) mlp3_step(&m, false);
        samples[r] = (bench_now() - t0) / steps * 1e3;
    }
    char info[128];
    snprintf(info, sizeof info, "{\"first_loss\": %.9g, \"steps_per_rep\": %d}", first_loss, steps);
    bench_result("B3", "mlp784", PEER, threads, "ms_per_step", samples, reps, info);
    mlp3_free(&m);
    free(samples);
}

/* ---------------------------------------------------------------------------------------- */
/* B4: GEMM through ag_matmul (result allocated by the op, then freed)                      */
/* ---------------------------------------------------------------------------------------- */

static void bench_b4(int threads, int reps) {
    const ag_dtype dtypes[2] = {AG_FLOAT32, AG_FLOAT64};
    const int64_t sizes[2] = {1024, 2048};
    double *samples = calloc((size_t)reps, sizeof(double));
    for (int d = 0; d < 2; d++) {
        for (int s = 0; s < 2; s++) {
            int64_t n = sizes[s], shape[2] = {n, n};
            ag_tensor a = make_filled(shape, 2, dtypes[d], 0.1, 1.0, false);
            ag_tensor b = make_filled(shape, 2, dtypes[d], 0.2, 1.0, false);
            double flops = 2.0 * (double)n * (double)n * (double)n;
            for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
                ag_tensor c;
                double t0 = bench_now();
                CK(ag_matmul(&c, a, b));
                CK(ag_tensor_free(c));
                double dt = bench_now() - t0;
                if (r >= 0) samples[r] = flops / dt / 1e9;
            }
            char kase[32];
            snprintf(kase, sizeof kase, "%s_%lld", dtypes[d] == AG_FLOAT32 ? "f32" : "f64", (long long)n);
            bench_result("B4", kase, PEER, threads, "gflops", samples, reps, NULL);
            CK(ag_tensor_free(a));
            CK(ag_tensor_free(b));
        }
    }
    free(samples);
}

/* ---------------------------------------------------------------------------------------- */
/* B5: elementwise ops on 16M float32 elements                                              */
/* ---------------------------------------------------------------------------------------- */

typedef ag_status (*binary_op)(ag_tensor *, ag_tensor, ag_tensor);

static void bench_b5(int threads, int reps) {
    const int64_t n = 16 * 1024 * 1024, shape[1] = {n};
    ag_tensor a = make_filled(shape, 1, AG_FLOAT32, 0.1, 1.0, false);
    ag_tensor b = make_filled(shape, 1, AG_FLOAT32, 0.2, 1.0, false);
    double *samples = calloc((size_t)reps, sizeof(double));
    const char *names[3] = {"add", "mul", "exp"};
    const double bytes_per_elem[3] = {12, 12, 8}; /* 4 bytes x (reads + writes) */
    for (int k = 0; k < 3; k++) {
        for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
            ag_tensor c;
            double t0 = bench_now();
            if (k == 0) CK(ag_add(&c, a, b));
            else if (k == 1) CK(ag_mul(&c, a, b));
            else CK(ag_exp(&c, a));
            CK(ag_tensor_free(c));
            double dt = bench_now() - t0;
            if (r >= 0) samples[r] = bytes_per_elem[k] * (double)n / dt / 1e9;
        }
        bench_result("B5", names[k], PEER, threads, "gbps", samples, reps, NULL);
    }
    /* sum(a * b), forward and backward; gradients cleared between repetitions (untimed). */
    CK(ag_tensor_set_requires_grad(a, true));
    CK(ag_tensor_set_requires_grad(b, true));
    for (int r = -1; r < reps; r++) {
        ag_tensor p, s;
        double t0 = bench_now();
        CK(ag_mul(&p, a, b));
        CK(ag_sum(&s, p, NULL, 0, false));
        CK(ag_backward(s, AG_NULL_TENSOR, false, false));
        CK(ag_tensor_free(p));
        CK(ag_tensor_free(s));
        double dt = bench_now() - t0;
        if (r >= 0) samples[r] = 32.0 * (double)n / dt / 1e9; /* nominal 8 x 4 bytes per element */
        CK(ag_tensor_zero_grad(a));
        CK(ag_tensor_zero_grad(b));
    }
    bench_result("B5", "sum_mul_fwd_bwd", PEER, threads, "gbps", samples, reps, NULL);
    CK(ag_tensor_free(a));
    CK(ag_tensor_free(b));
    free(samples);
}

/* ---------------------------------------------------------------------------------------- */
/* B7, B8, B9: work captured once (ag_capture) and replayed (ag_function_call_into into      */
/* preallocated outputs), timed side by side with the same work done eagerly in the same     */
/* process. A replay that cannot run (no capture API in this library, or a refused call) is   */
/* reported on stderr; the eager case is still reported and the program exits with status 1. */
/* ---------------------------------------------------------------------------------------- */

/* Whether the library exports the capture API (the weak references above are NULL if not). */
static bool replay_api_present(void) {
    if (ag_capture && ag_function_call_into && ag_function_free) return true;
    fprintf(stderr, "autograd_bench: this libautograd has no ag_capture / ag_function_call_into / "
                    "ag_function_free (issue 16's capture API): the replay case is not measured\n");
    return false;
}

/* CK for the replay side: reports a failure and returns false from the calling function, so the
 * eager case of the same process is still measured and reported. */
static bool replay_ok(ag_status st, const char *call, int line) {
    if (st == AG_OK) return true;
    fprintf(stderr, "autograd_bench: %s failed at %s:%d: %s (%s); the replay case is not reported\n",
            call, __FILE__, line, ag_status_name(st), ag_last_error());
    return false;
}
#define SOFT(call)                                                 \
    do {                                                           \
        if (!replay_ok((call), #call, __LINE__)) return false;     \
    } while (0)

/* What the compiler made of f (ag_function_info: steps recorded, live, instructions per call,
 * fused groups, fused steps, steps rerun by their op, arena and scratch bytes) as the JSON
 * member "function_info": [...] followed by ", ", or "" when the library lacks it. */
static const char *function_info_json(ag_function f) {
    static char buf[384];
    int64_t v[AG_FUNCTION_INFO_COUNT];
    buf[0] = 0;
    if (!ag_function_info || ag_function_info(v, AG_FUNCTION_INFO_COUNT, f) != AG_OK) return buf;
    int n = snprintf(buf, sizeof buf, "\"function_info\": [");
    for (int i = 0; i < AG_FUNCTION_INFO_COUNT && n < (int)sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (n < (int)sizeof buf) snprintf(buf + n, sizeof buf - (size_t)n, "], ");
    return buf;
}

/* ---- B7: B1's chain, its four gradients captured, replayed with alternating leaf values ---- */

/* The second set of leaf values B7's replays alternate with B1's (CHAIN_LEAVES). */
static const double CHAIN_LEAVES_B[4] = {0.6, -0.2, 0.7, 1.1};
static const int64_t B7_CYCLES = 2500;

/* B1's chain from the leaves x (borrowed), as chain_forward but returning a status instead of
 * exiting: the body of B7's captured function. Frees every intermediate handle. */
static ag_status chain_build(ag_tensor *out, const ag_tensor x[4], int64_t cycles) {
    ag_tensor v = x[0], t = AG_NULL_TENSOR;
    ag_status st = AG_OK;
    for (int64_t i = 0; i < cycles && st == AG_OK; i++) {
        for (int k = 0; k < 4 && st == AG_OK; k++) {
            if (k == 0) st = ag_add(&t, v, x[i % 4]);
            else if (k == 1) st = ag_mul(&t, v, x[(i + 1) % 4]);
            else if (k == 2) st = ag_tanh(&t, v);
            else st = ag_relu(&t, v);
            if (st != AG_OK) break;
            if (v != x[0]) (void)ag_tensor_free(v);
            v = t;
        }
    }
    if (st != AG_OK) {
        if (v != x[0]) (void)ag_tensor_free(v);
        return st;
    }
    *out = v;
    return AG_OK;
}

/* B7's captured function: inputs = the four leaves, outputs = d(chain)/d(leaf) for each. */
static int32_t chain_grads_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                              int64_t ninputs, void *user_data) {
    if (noutputs != 4 || ninputs != 4) return AG_ERR_ARGUMENT;
    ag_tensor v;
    ag_status st = chain_build(&v, inputs, *(const int64_t *)user_data);
    if (st != AG_OK) return st;
    st = ag_grad(outputs, &v, 1, NULL, inputs, 4, false, false, false);
    (void)ag_tensor_free(v);
    return st;
}

/* B7's replay state: the captured function, the leaves at B1's values (xa) and at the second set
 * (xb), and the four preallocated 0-d float64 outputs. */
typedef struct { ag_function f; ag_tensor xa[4], xb[4], g[4]; } chain_replay;

static void make_leaves(ag_tensor x[4], const double values[4]) {
    for (int k = 0; k < 4; k++) {
        CK(ag_tensor_from_data(&x[k], &values[k], NULL, 0, AG_FLOAT64));
        CK(ag_tensor_set_requires_grad(x[k], true));
    }
}

/* Captures at the second set of values, so that the gradients reported (a replay at B1's values)
 * can only agree with PyTorch's if the replay really uses its new inputs. */
static bool chain_replay_setup(chain_replay *c) {
    c->f = AG_NULL_FUNCTION;
    make_leaves(c->xa, CHAIN_LEAVES);
    make_leaves(c->xb, CHAIN_LEAVES_B);
    for (int k = 0; k < 4; k++) CK(ag_tensor_zeros(&c->g[k], NULL, 0, AG_FLOAT64));
    if (!replay_api_present()) return false;
    SOFT(ag_capture(&c->f, chain_grads_fn, c->xb, 4, 4, (void *)&B7_CYCLES));
    return true;
}

/* `calls` replays alternating the second set and B1's values (ending on B1's); seconds taken. */
static bool chain_replay_rep(chain_replay *c, int calls, double *seconds) {
    double t0 = bench_now();
    for (int k = 0; k < calls; k++)
        SOFT(ag_function_call_into(c->g, 4, c->f, (k & 1) ? c->xa : c->xb, 4));
    *seconds = bench_now() - t0;
    return true;
}

static void chain_replay_free(chain_replay *c) {
    if (c->f != AG_NULL_FUNCTION) CK(ag_function_free(c->f));
    for (int k = 0; k < 4; k++) {
        CK(ag_tensor_free(c->xa[k]));
        CK(ag_tensor_free(c->xb[k]));
        CK(ag_tensor_free(c->g[k]));
    }
}

static int bench_b7(int threads, int reps) {
    const int64_t ops = 4 * B7_CYCLES;
    const int calls = 100; /* replays per repetition (even: half at each set of values) */
    ag_tensor x[4];
    make_chain_leaves(x);
    chain_replay c;
    bool replay = chain_replay_setup(&c);
    double *eager = calloc((size_t)reps, sizeof(double)), *replayed = calloc((size_t)reps, sizeof(double));
    double value = 0, grads[4] = {0};
    for (int r = -1; r < reps; r++) { /* r = -1: untimed warm-up of both */
        for (int half = 0; half < 2; half++) {
            if (half == (r & 1)) { /* which one goes first alternates between repetitions */
                double dt = chain_eager_rep(x, B7_CYCLES, r < 0 ? &value : NULL, grads);
                if (r >= 0) eager[r] = dt / (double)ops * 1e6;
            } else if (replay) {
                double dt = 0;
                replay = chain_replay_rep(&c, calls, &dt);
                if (replay && r >= 0) replayed[r] = dt / calls / (double)ops * 1e6;
            }
        }
    }
    char info[1024];
    snprintf(info, sizeof info, "{\"value\": %.17g, \"grads\": [%.17g, %.17g, %.17g, %.17g]}", value,
             grads[0], grads[1], grads[2], grads[3]);
    bench_result("B7", "chain10k_eager", PEER, threads, "us_per_op", eager, reps, info);
    if (replay) { /* the gradients reported: one more replay at B1's values, after one at the others */
        double rg[4];
        replay = replay_ok(ag_function_call_into(c.g, 4, c.f, c.xb, 4), "replay at xb", __LINE__) &&
                 replay_ok(ag_function_call_into(c.g, 4, c.f, c.xa, 4), "replay at xa", __LINE__);
        if (replay) {
            for (int k = 0; k < 4; k++) CK(ag_tensor_item(&rg[k], c.g[k]));
            snprintf(info, sizeof info,
                     "{%s\"grads\": [%.17g, %.17g, %.17g, %.17g], \"replays_per_rep\": %d}",
                     function_info_json(c.f), rg[0], rg[1], rg[2], rg[3], calls);
            bench_result("B7", "chain10k_replay", PEER, threads, "us_per_op", replayed, reps, info);
        }
    }
    chain_replay_free(&c);
    for (int k = 0; k < 4; k++) CK(ag_tensor_free(x[k]));
    free(eager);
    free(replayed);
    return replay ? 0 : 1;
}

/* ---- B8 and B9: a training step captured and replayed, against the same step eagerly ---- */

/* B8's captured function: B2's step (linear, relu, linear, mse_loss, backward, SGD step, zero
 * grad) on the placeholders x = inputs[0], y = inputs[1] with the parameters and optimizer of the
 * mlp2 in user_data. Output: the loss. */
static int32_t mlp2_step_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                            int64_t ninputs, void *user_data) {
    const mlp2 *m = user_data;
    if (noutputs != 1 || ninputs != 2) return AG_ERR_ARGUMENT;
    ag_tensor h = AG_NULL_TENSOR, r = AG_NULL_TENSOR, o = AG_NULL_TENSOR, loss = AG_NULL_TENSOR;
    ag_status st;
    if ((st = ag_linear(&h, inputs[0], m->w1, m->b1)) == AG_OK && (st = ag_relu(&r, h)) == AG_OK &&
        (st = ag_linear(&o, r, m->w2, m->b2)) == AG_OK && (st = ag_mse_loss(&loss, o, inputs[1])) == AG_OK &&
        (st = ag_backward(loss, AG_NULL_TENSOR, false, false)) == AG_OK &&
        (st = ag_optimizer_step(m->opt)) == AG_OK)
        st = ag_optimizer_zero_grad(m->opt);
    ag_tensor tmp[3] = {h, r, o};
    for (int i = 0; i < 3; i++)
        if (tmp[i] != AG_NULL_TENSOR) (void)ag_tensor_free(tmp[i]);
    if (st == AG_OK) outputs[0] = loss;
    else if (loss != AG_NULL_TENSOR) (void)ag_tensor_free(loss);
    return st;
}

/* B9's captured function: B3's step on the placeholder x = inputs[0], with the labels, parameters
 * and optimizer of the mlp3 in user_data. Output: the loss. */
static int32_t mlp3_step_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                            int64_t ninputs, void *user_data) {
    const mlp3 *m = user_data;
    if (noutputs != 1 || ninputs != 1) return AG_ERR_ARGUMENT;
    ag_tensor t[6] = {AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR,
                      AG_NULL_TENSOR}; /* h1, r1, h2, r2, logits, loss */
    ag_status st;
    if ((st = ag_linear(&t[0], inputs[0], m->w[0], m->b[0])) == AG_OK && (st = ag_relu(&t[1], t[0])) == AG_OK &&
        (st = ag_linear(&t[2], t[1], m->w[1], m->b[1])) == AG_OK && (st = ag_relu(&t[3], t[2])) == AG_OK &&
        (st = ag_linear(&t[4], t[3], m->w[2], m->b[2])) == AG_OK &&
        (st = ag_cross_entropy(&t[5], t[4], m->labels, 256)) == AG_OK &&
        (st = ag_backward(t[5], AG_NULL_TENSOR, false, false)) == AG_OK &&
        (st = ag_optimizer_step(m->opt)) == AG_OK)
        st = ag_optimizer_zero_grad(m->opt);
    for (int i = 0; i < 5; i++)
        if (t[i] != AG_NULL_TENSOR) (void)ag_tensor_free(t[i]);
    if (st == AG_OK) outputs[0] = t[5];
    else if (t[5] != AG_NULL_TENSOR) (void)ag_tensor_free(t[5]);
    return st;
}

/* Writes src's parameter values into dst's (grad mode off, as for a hand-written update) and
 * clears dst's gradients: after a capture, the replayed model starts from the initial parameters
 * whether or not the capture's own run of the step updated them. */
static void copy_params(const ag_tensor *dst, const ag_tensor *src, int n, ag_optimizer opt) {
    bool prev;
    CK(ag_set_grad_enabled(&prev, false));
    for (int i = 0; i < n; i++) CK(ag_tensor_copy_(dst[i], src[i]));
    CK(ag_set_grad_enabled(NULL, prev));
    CK(ag_optimizer_zero_grad(opt));
}

/* What a training benchmark with replay needs: the eager step, and the captured one. */
typedef struct {
    const char *bench, *eager_case, *replay_case, *metric;
    double unit;       /* seconds -> metric */
    int warmup, steps; /* warm-up steps, steps per repetition */
    double (*eager_step)(void *model, bool want_loss);
    void *eager_model;
    ag_function f;     /* AG_NULL_FUNCTION: no replay */
    const ag_tensor *inputs;
    int64_t ninputs;
    ag_tensor loss;    /* preallocated 0-d output of the replay */
} train_replay;

static bool replay_step(const train_replay *b, bool want_loss, double *loss) {
    SOFT(ag_function_call_into(&b->loss, 1, b->f, b->inputs, b->ninputs));
    if (want_loss) CK(ag_tensor_item(loss, b->loss));
    return true;
}

/* `steps` replays; seconds taken. */
static bool replay_steps(const train_replay *b, double *seconds) {
    double t0 = bench_now(), unused;
    for (int s = 0; s < b->steps; s++)
        if (!replay_step(b, false, &unused)) return false;
    *seconds = bench_now() - t0;
    return true;
}

/* Warm-up of each (first and last warm-up losses recorded), then `reps` repetitions of `steps`
 * steps of each, which one first alternating; prints the eager result and, when the replay ran
 * throughout, the replay result. Returns 0, or 1 when the replay case is missing. */
static int run_train_replay(train_replay *b, int threads, int reps) {
    bool replay = b->f != AG_NULL_FUNCTION;
    double eager_first = 0, eager_last = 0, replay_first = 0, replay_last = 0, l;
    for (int s = 0; s < b->warmup; s++) {
        l = b->eager_step(b->eager_model, s == 0 || s == b->warmup - 1);
        if (s == 0) eager_first = l;
        if (s == b->warmup - 1) eager_last = l;
    }
    for (int s = 0; s < b->warmup && replay; s++) {
        replay = replay_step(b, s == 0 || s == b->warmup - 1, &l);
        if (s == 0) replay_first = l;
        if (s == b->warmup - 1) replay_last = l;
    }
    double *eager = calloc((size_t)reps, sizeof(double)), *replayed = calloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (int half = 0; half < 2; half++) {
            if (half == (r & 1)) {
                double t0 = bench_now();
                for (int s = 0; s < b->steps; s++) b->eager_step(b->eager_model, false);
                eager[r] = (bench_now() - t0) / b->steps * b->unit;
            } else if (replay) {
                double dt = 0;
                replay = replay_steps(b, &dt);
                replayed[r] = dt / b->steps * b->unit;
            }
        }
    }
    char info[768];
    snprintf(info, sizeof info, "{\"first_loss\": %.17g, \"last_warmup_loss\": %.17g, \"steps_per_rep\": %d}",
             eager_first, eager_last, b->steps);
    bench_result(b->bench, b->eager_case, PEER, threads, b->metric, eager, reps, info);
    if (replay) {
        snprintf(info, sizeof info,
                 "{%s\"first_loss\": %.17g, \"last_warmup_loss\": %.17g, \"steps_per_rep\": %d}",
                 function_info_json(b->f), replay_first, replay_last, b->steps);
        bench_result(b->bench, b->replay_case, PEER, threads, b->metric, replayed, reps, info);
    }
    free(eager);
    free(replayed);
    return replay ? 0 : 1;
}

static double mlp2_step_any(void *m, bool want_loss) { return mlp2_step(m, want_loss); }
static double mlp3_step_any(void *m, bool want_loss) { return mlp3_step(m, want_loss); }

/* B8: B2's step captured (inputs x, y) and replayed, and eagerly, each on its own model. */
static int bench_b8(int threads, int reps) {
    mlp2 eager, rep, init;
    mlp2_init(&eager);
    mlp2_init(&rep);
    ag_tensor inputs[2] = {rep.x, rep.y}, loss;
    CK(ag_tensor_zeros(&loss, NULL, 0, AG_FLOAT64));
    train_replay b = {"B8", "mlp64_eager", "mlp64_replay", "us_per_step", 1e6, 20, 200,
                      mlp2_step_any, &eager, AG_NULL_FUNCTION, inputs, 2, loss};
    if (replay_api_present() &&
        replay_ok(ag_capture(&b.f, mlp2_step_fn, inputs, 2, 1, &rep), "ag_capture(B8 step)", __LINE__)) {
        mlp2_init(&init);
        ag_tensor dst[4] = {rep.w1, rep.b1, rep.w2, rep.b2}, src[4] = {init.w1, init.b1, init.w2, init.b2};
        copy_params(dst, src, 4, rep.opt);
        mlp2_free(&init);
    }
    int rc = run_train_replay(&b, threads, reps);
    if (b.f != AG_NULL_FUNCTION) CK(ag_function_free(b.f));
    CK(ag_tensor_free(loss));
    mlp2_free(&eager);
    mlp2_free(&rep);
    return rc;
}

/* B9: B3's step captured (input x) and replayed, and eagerly, each on its own model. */
static int bench_b9(int threads, int reps) {
    mlp3 *eager = malloc(sizeof *eager), *rep = malloc(sizeof *rep), *init = malloc(sizeof *init);
    if (!eager || !rep || !init) { fprintf(stderr, "autograd_bench: out of memory\n"); exit(1); }
    mlp3_init(eager);
    mlp3_init(rep);
    ag_tensor loss;
    CK(ag_tensor_zeros(&loss, NULL, 0, AG_FLOAT32));
    train_replay b = {"B9", "mlp784_eager", "mlp784_replay", "ms_per_step", 1e3, 2, 5,
                      mlp3_step_any, eager, AG_NULL_FUNCTION, &rep->x, 1, loss};
    if (replay_api_present() &&
        replay_ok(ag_capture(&b.f, mlp3_step_fn, &rep->x, 1, 1, rep), "ag_capture(B9 step)", __LINE__)) {
        mlp3_init(init);
        ag_tensor dst[6], src[6];
        for (int i = 0; i < 3; i++) {
            dst[2 * i] = rep->w[i], dst[2 * i + 1] = rep->b[i];
            src[2 * i] = init->w[i], src[2 * i + 1] = init->b[i];
        }
        copy_params(dst, src, 6, rep->opt);
        mlp3_free(init);
    }
    int rc = run_train_replay(&b, threads, reps);
    if (b.f != AG_NULL_FUNCTION) CK(ag_function_free(b.f));
    CK(ag_tensor_free(loss));
    mlp3_free(eager);
    mlp3_free(rep);
    free(eager);
    free(rep);
    free(init);
    return rc;
}

/* ---- B10 and B11: a small transformer's and a small CNN's training step, eager and replayed ---- */

/* Each step first writes the next of NBATCH fixed batches into the step's input tensors
 * (ag_tensor_set_data), in every peer, so that a replay is seen to compute from its inputs. */
enum { NBATCH = 4 };

/* The data of NBATCH batches for the two inputs (x, y) of a step. */
typedef struct {
    int64_t count[2];
    ag_dtype dtype[2];
    void *data[NBATCH][2];
} batches;

static void batches_free(batches *d) {
    for (int k = 0; k < NBATCH; k++) { free(d->data[k][0]); free(d->data[k][1]); }
}

/* Writes batch `step % NBATCH` into in[0], in[1]. */
static void feed(const ag_tensor in[2], const batches *d, int64_t step) {
    for (int i = 0; i < 2; i++)
        CK(ag_tensor_set_data(in[i], d->data[step % NBATCH][i], d->count[i], d->dtype[i]));
}

/* n int64 values drawn from SplitMix64 (state advanced), each next() mod m. */
static int64_t *draw_ints(uint64_t *state, int64_t n, uint64_t m) {
    int64_t *v = malloc((size_t)n * sizeof(int64_t));
    if (!v) { fprintf(stderr, "autograd_bench: out of memory\n"); exit(1); }
    for (int64_t i = 0; i < n; i++) v[i] = (int64_t)(bench_splitmix64(state) % m);
    return v;
}

/* A model: its parameters (in a fixed order) and its optimizer. */
enum { MAX_PARAMS = 32 };
typedef struct {
    ag_tensor p[MAX_PARAMS];
    int n;
    ag_optimizer opt;
} net;

static void net_free(net *m) {
    CK(ag_optimizer_free(m->opt));
    for (int i = 0; i < m->n; i++) CK(ag_tensor_free(m->p[i]));
}

/* The intermediate handles of one step, freed together at its end (the graph keeps what the
 * backward needs). */
typedef struct {
    ag_tensor h[160];
    int n;
} handles;

/* A slot for the next op's result; the last one filled is `last`. */
static ag_tensor *slot(handles *s) {
    if (s->n == (int)(sizeof s->h / sizeof s->h[0])) {
        fprintf(stderr, "autograd_bench: too many intermediate handles\n");
        exit(1);
    }
    s->h[s->n] = AG_NULL_TENSOR;
    return &s->h[s->n++];
}
#define LAST(s) ((s).h[(s).n - 1])

static void handles_free(handles *s) {
    for (int i = 0; i < s->n; i++)
        if (s->h[i] != AG_NULL_TENSOR) (void)ag_tensor_free(s->h[i]);
    s->n = 0;
}

/* A training step on inputs (x, y): forward, loss, ag_backward, optimizer step, zero_grad; the
 * loss in *loss. Returns the first failing call's status (the eager step exits on it, the
 * captured function passes it on), having freed every intermediate handle either way. */
typedef ag_status (*net_step_fn)(ag_tensor *loss, const net *m, ag_tensor x, ag_tensor y);

#define OP(call)                                  \
    do {                                          \
        if ((st = (call)) != AG_OK) goto failed;  \
    } while (0)

/* The end of a step: the loss (the last handle, kept) through backward, the optimizer step and
 * zero_grad. */
static ag_status finish_step(ag_tensor *loss, const net *m, handles *s, ag_status st) {
    if (st == AG_OK && (st = ag_backward(LAST(*s), AG_NULL_TENSOR, false, false)) == AG_OK &&
        (st = ag_optimizer_step(m->opt)) == AG_OK)
        st = ag_optimizer_zero_grad(m->opt);
    if (st == AG_OK) {
        *loss = LAST(*s);
        s->n--; /* the loss is the caller's */
    }
    handles_free(s);
    return st;
}

/* B10's transformer (bench/README.md): vocab 27, context 16, width 64, 4 heads of 16, 2 pre-norm
 * blocks, as examples/char_transformer.c. The parameters, in this order: */
enum { TF_VOCAB = 27, TF_T = 16, TF_WIDTH = 64, TF_HEADS = 4, TF_HIDDEN = 256, TF_LAYERS = 2, TF_BATCH = 32 };
enum { TF_LN1_W, TF_LN1_B, TF_ATTN_W, TF_ATTN_B, TF_PROJ_W, TF_PROJ_B, TF_LN2_W, TF_LN2_B, TF_FC_W, TF_FC_B,
       TF_FC2_W, TF_FC2_B, TF_PER_BLOCK };
enum { TF_TOK_EMB, TF_POS_EMB, TF_FIRST_BLOCK };
enum { TF_LNF_W = TF_FIRST_BLOCK + TF_LAYERS * TF_PER_BLOCK, TF_LNF_B, TF_HEAD_W, TF_HEAD_B, TF_NPARAMS };

static ag_tensor tf_bp(const net *m, int block, int which) {
    return m->p[TF_FIRST_BLOCK + block * TF_PER_BLOCK + which];
}

/* How a parameter of B10 starts: rows, cols (0 for a vector), and the deterministic fill with
 * scale 1/sqrt(fan_in) (fan_in 0: scale 1), or ones, or zeros. */
enum { TF_FILL, TF_ONES, TF_ZEROS };
typedef struct { int64_t rows, cols, fan_in; int init; } tf_spec;

static tf_spec tf_spec_of(int k) {
    static const tf_spec block[TF_PER_BLOCK] = {
        {TF_WIDTH, 0, 0, TF_ONES}, {TF_WIDTH, 0, 0, TF_ZEROS},                       /* ln1 */
        {3 * TF_WIDTH, TF_WIDTH, TF_WIDTH, TF_FILL}, {3 * TF_WIDTH, 0, TF_WIDTH, TF_FILL}, /* qkv */
        {TF_WIDTH, TF_WIDTH, TF_WIDTH, TF_FILL}, {TF_WIDTH, 0, TF_WIDTH, TF_FILL},     /* proj */
        {TF_WIDTH, 0, 0, TF_ONES}, {TF_WIDTH, 0, 0, TF_ZEROS},                       /* ln2 */
        {TF_HIDDEN, TF_WIDTH, TF_WIDTH, TF_FILL}, {TF_HIDDEN, 0, TF_WIDTH, TF_FILL},   /* fc */
        {TF_WIDTH, TF_HIDDEN, TF_HIDDEN, TF_FILL}, {TF_WIDTH, 0, TF_HIDDEN, TF_FILL},  /* fc2 */
    };
    static const tf_spec head[TF_FIRST_BLOCK] = {{TF_VOCAB, TF_WIDTH, 0, TF_FILL}, {TF_T, TF_WIDTH, 0, TF_FILL}};
    static const tf_spec tail[4] = {{TF_WIDTH, 0, 0, TF_ONES}, {TF_WIDTH, 0, 0, TF_ZEROS},
                                    {TF_VOCAB, TF_WIDTH, TF_WIDTH, TF_FILL}, {TF_VOCAB, 0, TF_WIDTH, TF_FILL}};
    if (k < TF_FIRST_BLOCK) return head[k];
    if (k < TF_LNF_W) return block[(k - TF_FIRST_BLOCK) % TF_PER_BLOCK];
    return tail[k - TF_LNF_W];
}

/* Parameter k (in the enum's order) filled with phase 0.3 + 0.1 k (see tf_spec_of): embeddings
 * scale 1, a linear layer in -> out's weight (out, in) and bias (out) scale 1/sqrt(in), layer
 * norms' weights 1 and biases 0. AdamW (lr 1e-3, betas 0.9 0.999, eps 1e-8, weight decay 0.01). */
static void tf_init(net *m) {
    m->n = TF_NPARAMS;
    for (int k = 0; k < TF_NPARAMS; k++) {
        tf_spec sp = tf_spec_of(k);
        int64_t shape[2] = {sp.rows, sp.cols};
        int ndim = sp.cols ? 2 : 1;
        if (sp.init == TF_ONES) CK(ag_tensor_ones(&m->p[k], shape, ndim, AG_FLOAT32));
        else if (sp.init == TF_ZEROS) CK(ag_tensor_zeros(&m->p[k], shape, ndim, AG_FLOAT32));
        else m->p[k] = make_filled(shape, ndim, AG_FLOAT32, 0.3 + 0.1 * k,
                                   sp.fan_in ? 1.0 / sqrt((double)sp.fan_in) : 1.0, false);
        CK(ag_tensor_set_requires_grad(m->p[k], true));
    }
    CK(ag_optimizer_adamw(&m->opt, m->p, TF_NPARAMS, 1e-3, 0.9, 0.999, 1e-8, 0.01));
}

/* B10's step: idx (32, 16) int64 tokens, targets (512) int64. */
static ag_status tf_step(ag_tensor *loss, const net *m, ag_tensor idx, ag_tensor targets) {
    const int64_t B = TF_BATCH, T = TF_T, D = TF_WIDTH, H = TF_HEADS;
    handles s = {.n = 0};
    ag_status st;
    ag_tensor x, qkv, part[3];
    OP(ag_embedding(slot(&s), idx, m->p[TF_TOK_EMB]));
    OP(ag_add(slot(&s), LAST(s), m->p[TF_POS_EMB])); /* (B, T, D) + (T, D) */
    x = LAST(s);
    for (int l = 0; l < TF_LAYERS; l++) {
        /* x = x + proj(attention(layer_norm(x))), q, k, v split from one linear to 3 D */
        OP(ag_layer_norm(slot(&s), x, 1, tf_bp(m, l, TF_LN1_W), tf_bp(m, l, TF_LN1_B), 1e-5));
        OP(ag_linear(slot(&s), LAST(s), tf_bp(m, l, TF_ATTN_W), tf_bp(m, l, TF_ATTN_B)));
        qkv = LAST(s);
        for (int j = 0; j < 3; j++) { /* (B, T, D) slice -> (B, T, H, D/H) -> (B, H, T, D/H) */
            OP(ag_slice(slot(&s), qkv, 2, j * D, (j + 1) * D, 1));
            OP(ag_reshape(slot(&s), LAST(s), (int64_t[]){B, T, H, D / H}, 4));
            OP(ag_transpose(slot(&s), LAST(s), 1, 2));
            part[j] = LAST(s);
        }
        OP(ag_scaled_dot_product_attention(slot(&s), part[0], part[1], part[2], AG_NULL_TENSOR, true, 0.0));
        OP(ag_transpose(slot(&s), LAST(s), 1, 2));
        OP(ag_reshape(slot(&s), LAST(s), (int64_t[]){B, T, D}, 3));
        OP(ag_linear(slot(&s), LAST(s), tf_bp(m, l, TF_PROJ_W), tf_bp(m, l, TF_PROJ_B)));
        OP(ag_add(slot(&s), x, LAST(s)));
        x = LAST(s);
        /* x = x + fc2(gelu(fc(layer_norm(x)))) */
        OP(ag_layer_norm(slot(&s), x, 1, tf_bp(m, l, TF_LN2_W), tf_bp(m, l, TF_LN2_B), 1e-5));
        OP(ag_linear(slot(&s), LAST(s), tf_bp(m, l, TF_FC_W), tf_bp(m, l, TF_FC_B)));
        OP(ag_gelu(slot(&s), LAST(s)));
        OP(ag_linear(slot(&s), LAST(s), tf_bp(m, l, TF_FC2_W), tf_bp(m, l, TF_FC2_B)));
        OP(ag_add(slot(&s), x, LAST(s)));
        x = LAST(s);
    }
    OP(ag_layer_norm(slot(&s), x, 1, m->p[TF_LNF_W], m->p[TF_LNF_B], 1e-5));
    OP(ag_linear(slot(&s), LAST(s), m->p[TF_HEAD_W], m->p[TF_HEAD_B]));
    OP(ag_reshape(slot(&s), LAST(s), (int64_t[]){B * T, TF_VOCAB}, 2));
    OP(ag_cross_entropy_labels(slot(&s), LAST(s), targets));
failed:
    return finish_step(loss, m, &s, st);
}

/* B11's CNN: conv 1->16 3x3 pad 1, relu, max pool 2; conv 16->32 3x3 pad 1, relu, max pool 2;
 * (64, 128) -> linear 128 -> 10. Parameters conv1 (w, b), conv2 (w, b), fc (w, b), phases
 * 0.3 ... 0.8, scale 1/sqrt(fan in) (9, 144, 128). Adam (lr 1e-3, betas 0.9 0.999, eps 1e-8). */
enum { CNN_BATCH = 64, CNN_CLASSES = 10 };

static void cnn_init(net *m) {
    static const int64_t shapes[6][4] = {{16, 1, 3, 3}, {16}, {32, 16, 3, 3}, {32}, {10, 128}, {10}};
    static const int ndims[6] = {4, 1, 4, 1, 2, 1};
    static const double fan_in[6] = {9, 9, 144, 144, 128, 128};
    m->n = 6;
    for (int k = 0; k < 6; k++)
        m->p[k] = make_filled(shapes[k], ndims[k], AG_FLOAT32, 0.3 + 0.1 * k, 1.0 / sqrt(fan_in[k]), true);
    CK(ag_optimizer_adam(&m->opt, m->p, 6, 1e-3, 0.9, 0.999, 1e-8, 0.0));
}

/* B11's step: x (64, 1, 8, 8) float32, labels (64) int64. */
static ag_status cnn_step(ag_tensor *loss, const net *m, ag_tensor x, ag_tensor labels) {
    handles s = {.n = 0};
    ag_status st;
    OP(ag_conv2d(slot(&s), x, m->p[0], m->p[1], 1, 1, 1, 1, 1, 1, 1));
    OP(ag_relu(slot(&s), LAST(s)));
    OP(ag_max_pool2d(slot(&s), LAST(s), 2, 2, 0, 0, 0, 0));
    OP(ag_conv2d(slot(&s), LAST(s), m->p[2], m->p[3], 1, 1, 1, 1, 1, 1, 1));
    OP(ag_relu(slot(&s), LAST(s)));
    OP(ag_max_pool2d(slot(&s), LAST(s), 2, 2, 0, 0, 0, 0));
    OP(ag_reshape(slot(&s), LAST(s), (int64_t[]){CNN_BATCH, 128}, 2));
    OP(ag_linear(slot(&s), LAST(s), m->p[4], m->p[5]));
    OP(ag_cross_entropy_labels(slot(&s), LAST(s), labels));
failed:
    return finish_step(loss, m, &s, st);
}
#undef OP

/* ag_capture's function for B10 and B11: the step on the placeholders (x, y); its output is the
 * loss, whose value (the capture's run is the replayed model's first step) goes to `loss`. */
typedef struct {
    net_step_fn step;
    const net *m;
    double loss;
} net_capture;

static int32_t net_capture_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                              void *user_data) {
    net_capture *c = user_data;
    if (noutputs != 1 || ninputs != 2) return AG_ERR_ARGUMENT;
    ag_tensor loss;
    ag_status st = c->step(&loss, c->m, inputs[0], inputs[1]);
    if (st != AG_OK) return st;
    outputs[0] = loss;
    return ag_tensor_item(&c->loss, loss);
}

/* One eager step of m on batch `step` (written into in first); the loss if want_loss. */
static double net_eager_step(net_step_fn fn, const net *m, const ag_tensor in[2], const batches *d, int64_t step,
                             bool want_loss) {
    ag_tensor loss;
    double value = 0;
    feed(in, d, step);
    CK(fn(&loss, m, in[0], in[1]));
    if (want_loss) CK(ag_tensor_item(&value, loss));
    CK(ag_tensor_free(loss));
    return value;
}

/* One replay of f on batch `step` (written into in first) into the 0-d loss. */
static bool net_replay_step(ag_function f, const ag_tensor in[2], ag_tensor loss, const batches *d, int64_t step,
                            bool want_loss, double *value) {
    feed(in, d, step);
    SOFT(ag_function_call_into(&loss, 1, f, in, 2));
    if (want_loss) CK(ag_tensor_item(value, loss));
    return true;
}

/* B10 and B11: the model's step eagerly (case eager_case) and captured once and replayed (case
 * replay_case), each on its own copy of the model and its own input tensors, in this process.
 * Warm-up: `warmup` steps of each (the replayed model's first step is the capture's own run),
 * their first and last losses recorded; then `reps` repetitions of `steps` steps of each, which
 * one first alternating. Each step writes the next batch (cycling through NBATCH) into its inputs.
 * Returns 0, or 1 when the replay case is missing. */
static int bench_net(const char *bench, const char *eager_case, const char *replay_case, net_step_fn fn,
                     void (*init)(net *), const batches *d, const int64_t *xshape, int xndim, int warmup, int steps,
                     int threads, int reps) {
    net eager, rep;
    init(&eager);
    init(&rep);
    ag_tensor ein[2], rin[2], loss;
    const int64_t yshape[1] = {d->count[1]};
    for (int i = 0; i < 2; i++) {
        CK(ag_tensor_zeros(&ein[i], i ? yshape : xshape, i ? 1 : xndim, d->dtype[i]));
        CK(ag_tensor_zeros(&rin[i], i ? yshape : xshape, i ? 1 : xndim, d->dtype[i]));
    }
    CK(ag_tensor_zeros(&loss, NULL, 0, AG_FLOAT32));
    double eager_first = 0, eager_last = 0, replay_first = 0, replay_last = 0;
    int64_t es = 0, rs = 0; /* steps made by each */
    for (; es < warmup; es++) {
        double l = net_eager_step(fn, &eager, ein, d, es, true);
        if (es == 0) eager_first = l;
        eager_last = l;
    }
    net_capture cap = {fn, &rep, 0};
    ag_function f = AG_NULL_FUNCTION;
    feed(rin, d, rs);
    bool replay = replay_api_present() &&
                  replay_ok(ag_capture(&f, net_capture_fn, rin, 2, 1, &cap), "ag_capture(step)", __LINE__);
    if (replay) replay_first = replay_last = cap.loss, rs = 1;
    for (; replay && rs < warmup; rs++)
        replay = net_replay_step(f, rin, loss, d, rs, true, &replay_last);
    double *eager_s = calloc((size_t)reps, sizeof(double)), *replay_s = calloc((size_t)reps, sizeof(double));
    for (int r = 0; r < reps; r++) {
        for (int half = 0; half < 2; half++) {
            if (half == (r & 1)) {
                double t0 = bench_now();
                for (int s = 0; s < steps; s++, es++) net_eager_step(fn, &eager, ein, d, es, false);
                eager_s[r] = (bench_now() - t0) / steps * 1e3;
            } else if (replay) {
                double t0 = bench_now(), unused;
                for (int s = 0; s < steps && replay; s++, rs++)
                    replay = net_replay_step(f, rin, loss, d, rs, false, &unused);
                replay_s[r] = (bench_now() - t0) / steps * 1e3;
            }
        }
    }
    char info[768];
    snprintf(info, sizeof info, "{\"first_loss\": %.9g, \"last_warmup_loss\": %.9g, \"steps_per_rep\": %d}",
             eager_first, eager_last, steps);
    bench_result(bench, eager_case, PEER, threads, "ms_per_step", eager_s, reps, info);
    if (replay) {
        snprintf(info, sizeof info, "{%s\"first_loss\": %.9g, \"last_warmup_loss\": %.9g, \"steps_per_rep\": %d}",
                 function_info_json(f), replay_first, replay_last, steps);
        bench_result(bench, replay_case, PEER, threads, "ms_per_step", replay_s, reps, info);
    }
    if (f != AG_NULL_FUNCTION) CK(ag_function_free(f));
    for (int i = 0; i < 2; i++) { CK(ag_tensor_free(ein[i])); CK(ag_tensor_free(rin[i])); }
    CK(ag_tensor_free(loss));
    net_free(&eager);
    net_free(&rep);
    free(eager_s);
    free(replay_s);
    return replay ? 0 : 1;
}

/* B10: batches of 32 windows of 16 random tokens and 512 random targets (0..26), drawn from
 * SplitMix64 seeded with 10 in the order x0, y0, x1, y1, ... (tokens = next() mod 27). */
static int bench_b10(int threads, int reps) {
    batches d = {{TF_BATCH * TF_T, TF_BATCH * TF_T}, {AG_INT64, AG_INT64}, {{0}}};
    uint64_t state = 10;
    for (int k = 0; k < NBATCH; k++)
        for (int i = 0; i < 2; i++) d.data[k][i] = draw_ints(&state, TF_BATCH * TF_T, TF_VOCAB);
    const int64_t xshape[2] = {TF_BATCH, TF_T};
    int rc = bench_net("B10", "transformer_eager", "transformer_replay", tf_step, tf_init, &d, xshape, 2, 3, 10,
                       threads, reps);
    batches_free(&d);
    return rc;
}

/* B11: batch k's x (64, 1, 8, 8) has phase 0.1 + k (scale 1); its 64 labels (0..9) are drawn
 * from SplitMix64 seeded with 11, batch after batch (next() mod 10). */
static int bench_b11(int threads, int reps) {
    batches d = {{CNN_BATCH * 64, CNN_BATCH}, {AG_FLOAT32, AG_INT64}, {{0}}};
    uint64_t state = 11;
    for (int k = 0; k < NBATCH; k++) {
        float *x = malloc(sizeof(float) * CNN_BATCH * 64);
        if (!x) { fprintf(stderr, "autograd_bench: out of memory\n"); exit(1); }
        bench_fill_f32(x, CNN_BATCH * 64, 0.1 + k, 1.0);
        d.data[k][0] = x;
        d.data[k][1] = draw_ints(&state, CNN_BATCH, CNN_CLASSES);
    }
    const int64_t xshape[4] = {CNN_BATCH, 1, 8, 8};
    int rc = bench_net("B11", "cnn_eager", "cnn_replay", cnn_step, cnn_init, &d, xshape, 4, 3, 20, threads, reps);
    batches_free(&d);
    return rc;
}

int main(int argc, char **argv) {
    const char *bench;
    int threads, reps;
    bench_parse_args(argc, argv, &bench, &threads, &reps);
    CK(ag_set_num_threads(threads));
    int64_t actual;
    CK(ag_num_threads(&actual));
    if (actual != threads) {
        fprintf(stderr, "autograd_bench: asked for %d threads, ag_num_threads says %lld\n", threads,
                (long long)actual);
        return 1;
    }
    bench_settle();
    if (strcmp(bench, "B7") == 0) return bench_b7(threads, reps);
    if (strcmp(bench, "B8") == 0) return bench_b8(threads, reps);
    if (strcmp(bench, "B9") == 0) return bench_b9(threads, reps);
    if (strcmp(bench, "B10") == 0) return bench_b10(threads, reps);
    if (strcmp(bench, "B11") == 0) return bench_b11(threads, reps);
    if (strcmp(bench, "B1") == 0) bench_b1(threads, reps);
    else if (strcmp(bench, "B2") == 0) bench_b2(threads, reps);
    else if (strcmp(bench, "B3") == 0) bench_b3(threads, reps);
    else if (strcmp(bench, "B4") == 0) bench_b4(threads, reps);
    else if (strcmp(bench, "B5") == 0) bench_b5(threads, reps);
    else if (strcmp(bench, "B6") == 0) bench_b6(threads);
    else { fprintf(stderr, "autograd_bench: unknown benchmark %s\n", bench); return 2; }
    return 0;
}
