/*
 * autograd_bench.c - the Autograd peer of the benchmark suite, through the C API only.
 *
 *   autograd_bench BENCH THREADS REPS      BENCH is one of B1..B6 (see bench/README.md)
 *
 * Prints one "RESULT {json}" line per measured case (see bench_common.h). Any failing API call
 * prints ag_last_error() and exits with status 1, so the driver notices a broken engine.
 * B6 measures a single repetition: the driver starts a fresh process for each one.
 */
#include "autograd.h"
#include "bench_common.h"

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

static void bench_b1(int threads, int reps) {
    const int64_t cycles = 2500, ops = 4 * cycles;
    ag_tensor x[4];
    make_chain_leaves(x);
    double *samples = calloc((size_t)reps, sizeof(double));
    double value = 0, grads[4] = {0};
    for (int r = -1; r < reps; r++) { /* r = -1 is an untimed warm-up */
        double t0 = bench_now();
        ag_tensor v = chain_forward(x, cycles);
        CK(ag_backward(v, AG_NULL_TENSOR, false, false));
        if (r < 0) CK(ag_tensor_item(&value, v)); /* read once, outside the timed repetitions */
        CK(ag_tensor_free(v));
        double t1 = bench_now();
        if (r >= 0) samples[r] = (t1 - t0) / (double)ops * 1e6;
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

static void bench_b2(int threads, int reps) {
    const int steps = 200, warmup = 20;
    mlp2 m;
    int64_t xs[2] = {16, 64}, ys[2] = {16, 1};
    m.x = make_filled(xs, 2, AG_FLOAT64, 0.1, 1.0, false);
    m.y = make_filled(ys, 2, AG_FLOAT64, 0.2, 1.0, false);
    make_layer(&m.w1, &m.b1, 64, 32, AG_FLOAT64, 0.3, 0.4);
    make_layer(&m.w2, &m.b2, 32, 1, AG_FLOAT64, 0.5, 0.6);
    ag_tensor params[4] = {m.w1, m.b1, m.w2, m.b2};
    CK(ag_optimizer_sgd(&m.opt, params, 4, 0.01, 0.0, false, 0.0));
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
    CK(ag_optimizer_free(m.opt));
    ag_tensor all[6] = {m.x, m.y, m.w1, m.b1, m.w2, m.b2};
    for (int i = 0; i < 6; i++) CK(ag_tensor_free(all[i]));
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

static void bench_b3(int threads, int reps) {
    const int steps = 5, warmup = 2;
    mlp3 m;
    int64_t xs[2] = {256, 784};
    m.x = make_filled(xs, 2, AG_FLOAT32, 0.1, 1.0, false);
    make_layer(&m.w[0], &m.b[0], 784, 512, AG_FLOAT32, 0.3, 0.4);
    make_layer(&m.w[1], &m.b[1], 512, 512, AG_FLOAT32, 0.5, 0.6);
    make_layer(&m.w[2], &m.b[2], 512, 10, AG_FLOAT32, 0.7, 0.8);
    for (int i = 0; i < 256; i++) m.labels[i] = i % 10;
    ag_tensor params[6] = {m.w[0], m.b[0], m.w[1], m.b[1], m.w[2], m.b[2]};
    CK(ag_optimizer_sgd(&m.opt, params, 6, 0.01, 0.0, false, 0.0));
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
    CK(ag_optimizer_free(m.opt));
    CK(ag_tensor_free(m.x));
    for (int i = 0; i < 3; i++) { CK(ag_tensor_free(m.w[i])); CK(ag_tensor_free(m.b[i])); }
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
    if (strcmp(bench, "B1") == 0) bench_b1(threads, reps);
    else if (strcmp(bench, "B2") == 0) bench_b2(threads, reps);
    else if (strcmp(bench, "B3") == 0) bench_b3(threads, reps);
    else if (strcmp(bench, "B4") == 0) bench_b4(threads, reps);
    else if (strcmp(bench, "B5") == 0) bench_b5(threads, reps);
    else if (strcmp(bench, "B6") == 0) bench_b6(threads);
    else { fprintf(stderr, "autograd_bench: unknown benchmark %s\n", bench); return 2; }
    return 0;
}
