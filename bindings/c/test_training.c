/*
 * test_training.c - tests of the training part of the C interface (include/autograd.h):
 * the seeded initialisers (ag_tensor_init) and the optimizers (ag_optimizer_sgd / adam / adamw,
 * step, zero_grad, set_lr, lr, free), written against the header alone:
 *
 *   - initialisers: the bounds and the standard deviation of every kind on 2-D, 4-D and 1-D
 *     shapes (fans as the header defines them), determinism per seed, float32 as the float64
 *     values rounded, fresh leaves, and every documented error;
 *   - optimizers: a first and a second step of every optimizer (SGD plain, with momentum, with
 *     Nesterov momentum, with weight decay; Adam with and without weight decay; AdamW) against
 *     numbers derived here from the header's formulas; float32 parameters (state in float64);
 *     ag_optimizer_lr / set_lr and a rate changed between steps; zero_grad clearing every
 *     gradient; parameters without a gradient skipped (their state untouched); updates seen
 *     through ag_detach aliases; parameters held by the optimizer after their handles are freed;
 *     a small least-squares problem solved by each optimizer;
 *   - errors: every documented status of every function (bad arguments, repeated parameters,
 *     non-leaf parameters, parameters that do not require grad, tensor handles passed as
 *     optimizers and the reverse, freed and made-up handles), with nothing written to the
 *     outputs on failure;
 *   - memory: freeing the optimizer and then the parameters leaves no live handle (and the
 *     program runs clean under valgrind).
 *
 * Output: the name of each test group, one line per failed check (file:line and what differed),
 * and finally exactly "N passed, M failed". Exit status 0 only if M is 0.
 * Set AG_TEST_VERBOSE=1 to also print every error message the library produced.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_training
 *        bindings/c/test_training.c -L .build/release -lautograd -Wl,-rpath,... -lm
 */
#define _POSIX_C_SOURCE 200809L

#include "test_support.h"

/* A handle nobody made. */
#define MADE_UP ((uint64_t)0x00ab0000000000cdULL)

/* ========================================================================================== */
/* Helpers                                                                                    */
/* ========================================================================================== */

/* A float64 leaf of the given values (1-D, n elements) that requires grad. */
static ag_tensor param64(const double *values, int64_t n) {
    ag_tensor t = 0;
    CHECK_OK(ag_tensor_from_data(&t, values, &n, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(t, true));
    return t;
}

/* Element i of a tensor, as a double. */
static double elem(ag_tensor t, int64_t i) {
    int64_t n = 0;
    CHECK_OK(ag_tensor_numel(&n, t));
    double *buf = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    double v = NAN;
    if (buf != NULL && CHECK_OK(ag_tensor_copy_data(buf, n, AG_FLOAT64, t)) && i < n) v = buf[i];
    free(buf);
    return v;
}

/* Accumulates the gradient g (n values, p's dtype taken as float64 or float32) into p, as the
 * gradient of sum(p * g) (exact: the gradient of a product by a constant is that constant). */
static void add_grad(ag_tensor p, const double *g, int64_t n) {
    ag_dtype dt = AG_FLOAT64;
    CHECK_OK(ag_tensor_dtype(&dt, p));
    ag_tensor c = 0, prod = 0, loss = 0;
    if (dt == AG_FLOAT32) {
        float gf[16];
        for (int64_t i = 0; i < n && i < 16; i++) gf[i] = (float)g[i];
        CHECK_OK(ag_tensor_from_data(&c, gf, &n, 1, AG_FLOAT32));
    } else {
        CHECK_OK(ag_tensor_from_data(&c, g, &n, 1, AG_FLOAT64));
    }
    CHECK_OK(ag_mul(&prod, p, c));
    CHECK_OK(ag_sum(&loss, prod, NULL, 0, false));
    CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_free(loss));
    CHECK_OK(ag_tensor_free(prod));
    CHECK_OK(ag_tensor_free(c));
}

/* Whether p has an accumulated gradient. */
static bool has_grad(ag_tensor p) {
    ag_tensor g = SENTINEL;
    CHECK_OK(ag_tensor_grad(&g, p));
    bool has = g != AG_NULL_TENSOR;
    if (has && g != SENTINEL) CHECK_OK(ag_tensor_free(g));
    return has;
}

/* ========================================================================================== */
/* Initialisers                                                                               */
/* ========================================================================================== */

static const char *init_name(ag_init k) {
    switch (k) {
    case AG_INIT_KAIMING_UNIFORM: return "KAIMING_UNIFORM";
    case AG_INIT_KAIMING_NORMAL: return "KAIMING_NORMAL";
    case AG_INIT_XAVIER_UNIFORM: return "XAVIER_UNIFORM";
    case AG_INIT_XAVIER_NORMAL: return "XAVIER_NORMAL";
    default: return "?";
    }
}

/* Checks the values of one initialiser on one shape: uniform kinds lie in [-b, b) and reach
 * close to both ends, with std b / sqrt(3); normal kinds have the expected std; means near 0. */
static void check_init_stats(ag_init kind, const int64_t *shape, int64_t ndim, double fan_in, double fan_out,
                             uint64_t seed) {
    set_ctx("%s, ndim %lld, fan_in %g, fan_out %g, seed %llu", init_name(kind), (long long)ndim, fan_in, fan_out,
            (unsigned long long)seed);
    ag_tensor t = 0;
    if (!CHECK_OK(ag_tensor_init(&t, shape, ndim, kind, seed, AG_FLOAT64))) return;
    int64_t n = 0, rank = -1;
    ag_dtype dt = 0;
    CHECK_OK(ag_tensor_numel(&n, t));
    CHECK_OK(ag_tensor_ndim(&rank, t));
    CHECK_OK(ag_tensor_dtype(&dt, t));
    CHECK(rank == ndim);
    CHECK(dt == AG_FLOAT64);
    int64_t got_shape[AG_MAX_NDIM] = {0};
    CHECK_OK(ag_tensor_shape(got_shape, AG_MAX_NDIM, t));
    for (int64_t i = 0; i < ndim; i++) CHECK(got_shape[i] == shape[i]);
    bool rg = true;
    CHECK_OK(ag_tensor_requires_grad(&rg, t));
    CHECK(!rg); /* a fresh leaf that does not require grad */

    const double *v = NULL;
    CHECK_OK(ag_tensor_data_ptr((const void **)&v, t));
    double sum = 0, sumsq = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        sum += v[i];
        sumsq += v[i] * v[i];
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
    }
    double mean = sum / (double)n, std = sqrt(sumsq / (double)n - mean * mean);
    bool uniform = kind == AG_INIT_KAIMING_UNIFORM || kind == AG_INIT_XAVIER_UNIFORM;
    double want_std;
    if (kind == AG_INIT_KAIMING_UNIFORM || kind == AG_INIT_KAIMING_NORMAL)
        want_std = sqrt(2.0 / fan_in);
    else
        want_std = sqrt(2.0 / (fan_in + fan_out));
    /* For the uniform kinds: b = sqrt(3) * std, i.e. sqrt(2) sqrt(3 / fan_in) and sqrt(6 / (in + out)). */
    if (uniform) {
        double b = kind == AG_INIT_KAIMING_UNIFORM ? sqrt(2.0) * sqrt(3.0 / fan_in) : sqrt(6.0 / (fan_in + fan_out));
        CHECKF(lo >= -b && hi < b, "values in [%.6g, %.6g], expected within [-%.6g, %.6g)", lo, hi, b, b);
        CHECKF(lo < -0.98 * b && hi > 0.98 * b, "values in [%.6g, %.6g] do not reach near +-%.6g", lo, hi, b);
    } else {
        CHECKF(lo < -3 * want_std && hi > 3 * want_std, "normal values in [%.6g, %.6g], std %.6g: no tails", lo, hi,
               want_std);
    }
    /* Sampling tolerance: n >= 4000 gives a relative std error of about 1-2%. */
    CHECKF(fabs(std / want_std - 1) < 0.05, "std %.6g, expected %.6g", std, want_std);
    CHECKF(fabs(mean) < 4 * want_std / sqrt((double)n), "mean %.6g, expected about 0 (std %.6g, n %lld)", mean,
           want_std, (long long)n);
    CHECK_OK(ag_tensor_free(t));
    set_ctx("%s", "");
}

static bool same_values(ag_tensor a, ag_tensor b, int64_t n) {
    double *x = calloc((size_t)n, sizeof(double)), *y = calloc((size_t)n, sizeof(double));
    bool same = x != NULL && y != NULL && ag_tensor_copy_data(x, n, AG_FLOAT64, a) == AG_OK &&
                ag_tensor_copy_data(y, n, AG_FLOAT64, b) == AG_OK && memcmp(x, y, sizeof(double) * (size_t)n) == 0;
    free(x);
    free(y);
    return same;
}

static void test_initialisers(void) {
    printf("initialisers\n");
    const ag_init kinds[4] = {AG_INIT_KAIMING_UNIFORM, AG_INIT_KAIMING_NORMAL, AG_INIT_XAVIER_UNIFORM,
                              AG_INIT_XAVIER_NORMAL};
    const int64_t s2[2] = {80, 120};        /* fan_in 120, fan_out 80 */
    const int64_t s4[4] = {16, 8, 5, 5};    /* fan_in 8 * 25 = 200, fan_out 16 * 25 = 400 */
    const int64_t s1[1] = {5000};           /* fan_in = fan_out = 5000 */
    const int64_t s3[3] = {40, 30, 7};      /* fan_in 210, fan_out 280 */
    for (int k = 0; k < 4; k++) {
        check_init_stats(kinds[k], s2, 2, 120, 80, 11);
        check_init_stats(kinds[k], s4, 4, 200, 400, 12);
        check_init_stats(kinds[k], s1, 1, 5000, 5000, 13);
        check_init_stats(kinds[k], s3, 3, 210, 280, 14);
    }

    /* Determinism: the same seed gives the same numbers, another seed others; float32 holds
     * the float64 values rounded. */
    for (int k = 0; k < 4; k++) {
        set_ctx("determinism of %s", init_name(kinds[k]));
        ag_tensor a = 0, b = 0, c = 0, f = 0;
        CHECK_OK(ag_tensor_init(&a, s2, 2, kinds[k], 99, AG_FLOAT64));
        CHECK_OK(ag_tensor_init(&b, s2, 2, kinds[k], 99, AG_FLOAT64));
        CHECK_OK(ag_tensor_init(&c, s2, 2, kinds[k], 100, AG_FLOAT64));
        CHECK_OK(ag_tensor_init(&f, s2, 2, kinds[k], 99, AG_FLOAT32));
        CHECK(same_values(a, b, 80 * 120));
        CHECK(!same_values(a, c, 80 * 120));
        const double *av = NULL;
        const float *fv = NULL;
        CHECK_OK(ag_tensor_data_ptr((const void **)&av, a));
        CHECK_OK(ag_tensor_data_ptr((const void **)&fv, f));
        ag_dtype dt = 0;
        CHECK_OK(ag_tensor_dtype(&dt, f));
        CHECK(dt == AG_FLOAT32);
        int mismatches = 0;
        for (int i = 0; av != NULL && fv != NULL && i < 80 * 120; i++) mismatches += fv[i] != (float)av[i];
        CHECKF(av != NULL && fv != NULL && mismatches == 0, "%d float32 values differ from the rounded float64 ones",
               mismatches);
        CHECK_OK(ag_tensor_free(a));
        CHECK_OK(ag_tensor_free(b));
        CHECK_OK(ag_tensor_free(c));
        CHECK_OK(ag_tensor_free(f));
    }
    /* Different kinds with one seed differ; seed 0 and huge seeds work. */
    {
        set_ctx("kinds and seeds");
        ag_tensor a = 0, b = 0, z = 0, m = 0;
        CHECK_OK(ag_tensor_init(&a, s2, 2, AG_INIT_KAIMING_UNIFORM, 5, AG_FLOAT64));
        CHECK_OK(ag_tensor_init(&b, s2, 2, AG_INIT_XAVIER_UNIFORM, 5, AG_FLOAT64));
        CHECK(!same_values(a, b, 80 * 120));
        CHECK_OK(ag_tensor_init(&z, s2, 2, AG_INIT_KAIMING_NORMAL, 0, AG_FLOAT64));
        CHECK_OK(ag_tensor_init(&m, s2, 2, AG_INIT_KAIMING_NORMAL, UINT64_MAX, AG_FLOAT64));
        CHECK(isfinite(elem(z, 0)) && isfinite(elem(m, 0)));
        /* An initialised tensor can become a parameter. */
        CHECK_OK(ag_tensor_set_requires_grad(a, true));
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_sgd(&opt, &a, 1, 0.1, 0, false, 0));
        CHECK_OK(ag_optimizer_free(opt));
        ag_tensor all[4] = {a, b, z, m};
        for (int i = 0; i < 4; i++) CHECK_OK(ag_tensor_free(all[i]));
    }

    /* Errors. */
    set_ctx("ag_tensor_init errors");
    ag_tensor t = SENTINEL;
    const int64_t zero_in[2] = {4, 0}, zero_out[2] = {0, 4}, zero_rf[3] = {4, 4, 0}, neg[2] = {4, -1};
    const int64_t empty1[1] = {0};
    const int64_t big[AG_MAX_NDIM + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_ERR(ag_tensor_init(NULL, s2, 2, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, s2, 2, 0, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, s2, 2, 5, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, s2, 2, -1, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, NULL, 0, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_SHAPE); /* rank 0 */
    CHECK_ERR(ag_tensor_init(&t, zero_in, 2, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_init(&t, zero_out, 2, AG_INIT_XAVIER_NORMAL, 1, AG_FLOAT64), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_init(&t, zero_rf, 3, AG_INIT_KAIMING_NORMAL, 1, AG_FLOAT64), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_init(&t, empty1, 1, AG_INIT_XAVIER_UNIFORM, 1, AG_FLOAT64), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_init(&t, neg, 2, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_init(&t, NULL, 2, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, s2, -1, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, big, AG_MAX_NDIM + 1, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_init(&t, s2, 2, AG_INIT_KAIMING_UNIFORM, 1, 0), AG_ERR_DTYPE);
    CHECK_ERR(ag_tensor_init(&t, s2, 2, AG_INIT_KAIMING_UNIFORM, 1, 3), AG_ERR_DTYPE);
    CHECK(t == SENTINEL); /* nothing written on failure */
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Optimizer steps against the header's formulas                                             */
/* ========================================================================================== */

enum { NP = 3 };
static const double P0[NP] = {1.5, -0.75, 0.2};
static const double G1[NP] = {0.5, -1.25, 2.0};  /* the gradient at step 1 */
static const double G2[NP] = {-1.0, 0.3, 0.125}; /* the gradient at step 2 */

typedef struct {
    const char *name;
    int kind; /* 0 SGD, 1 Adam, 2 AdamW */
    double lr, momentum, beta1, beta2, eps, weight_decay;
    bool nesterov;
} opt_config;

static ag_status make_opt(ag_optimizer *out, const opt_config *c, const ag_tensor *params, int64_t n) {
    switch (c->kind) {
    case 0: return ag_optimizer_sgd(out, params, n, c->lr, c->momentum, c->nesterov, c->weight_decay);
    case 1: return ag_optimizer_adam(out, params, n, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
    default: return ag_optimizer_adamw(out, params, n, c->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
    }
}

/* The expected parameters after each of `steps` steps with gradients grads[t] and rates lrs[t],
 * by the header's formulas, written out here; p and the state are double. When `round32` is set
 * the parameter is stored as float after every step (a float32 parameter; the state stays
 * double), and the gradient is the float-rounded one. */
static void expected_steps(double out[][NP], const opt_config *c, const double *const *grads, const double *lrs,
                           int steps, bool round32) {
    double p[NP], buf[NP] = {0}, m[NP] = {0}, v[NP] = {0};
    for (int i = 0; i < NP; i++) p[i] = round32 ? (double)(float)P0[i] : P0[i];
    for (int t = 1; t <= steps; t++) {
        double lr = lrs[t - 1];
        for (int i = 0; i < NP; i++) {
            double g = round32 ? (double)(float)grads[t - 1][i] : grads[t - 1][i];
            if (c->kind == 0) {
                /* SGD: d = grad + wd * p; buf = d (first step) or momentum * buf + d;
                 * p -= lr * (nesterov ? d + momentum * buf : buf); without momentum p -= lr * d. */
                double d = g + c->weight_decay * p[i];
                if (c->momentum == 0) {
                    p[i] = p[i] - lr * d;
                } else {
                    buf[i] = t == 1 ? d : c->momentum * buf[i] + d;
                    p[i] = p[i] - lr * (c->nesterov ? d + c->momentum * buf[i] : buf[i]);
                }
            } else {
                /* Adam: d = grad + wd * p. AdamW: p *= 1 - lr * wd, then d = grad.
                 * m = b1 m + (1-b1) d; v = b2 v + (1-b2) d^2;
                 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
                double d = g;
                if (c->kind == 2)
                    p[i] = p[i] * (1 - lr * c->weight_decay);
                else
                    d = g + c->weight_decay * p[i];
                m[i] = c->beta1 * m[i] + (1 - c->beta1) * d;
                v[i] = c->beta2 * v[i] + (1 - c->beta2) * d * d;
                double mhat = m[i] / (1 - pow(c->beta1, t)), vhat = v[i] / (1 - pow(c->beta2, t));
                p[i] = p[i] - lr * mhat / (sqrt(vhat) + c->eps);
            }
            if (round32) p[i] = (double)(float)p[i];
            out[t - 1][i] = p[i];
        }
    }
}

static const opt_config CONFIGS[] = {
    {"SGD", 0, 0.1, 0, 0, 0, 0, 0, false},
    {"SGD weight decay", 0, 0.1, 0, 0, 0, 0, 0.2, false},
    {"SGD momentum", 0, 0.1, 0.9, 0, 0, 0, 0, false},
    {"SGD momentum + weight decay", 0, 0.05, 0.8, 0, 0, 0, 0.1, false},
    {"SGD Nesterov", 0, 0.1, 0.9, 0, 0, 0, 0, true},
    {"SGD Nesterov + weight decay", 0, 0.05, 0.5, 0, 0, 0, 0.3, true},
    {"Adam", 1, 0.01, 0, 0.9, 0.999, 1e-8, 0, false},
    {"Adam other betas", 1, 0.1, 0, 0.5, 0.9, 1e-3, 0, false},
    {"Adam weight decay", 1, 0.01, 0, 0.9, 0.999, 1e-8, 0.5, false},
    {"AdamW", 2, 0.01, 0, 0.9, 0.999, 1e-8, 0.1, false},
    {"AdamW other betas", 2, 0.2, 0, 0.0, 0.5, 0.1, 0.25, false},
};
enum { NCONFIGS = sizeof CONFIGS / sizeof CONFIGS[0] };

static void test_hand_steps(void) {
    printf("optimizer steps against the header's formulas\n");
    const double *grads[2] = {G1, G2};
    for (int k = 0; k < NCONFIGS; k++) {
        const opt_config *c = &CONFIGS[k];
        for (int variant = 0; variant < 3; variant++) {
            /* 0: float64; 1: float64 with the rate changed before step 2; 2: float32 */
            bool f32 = variant == 2;
            double lrs[2] = {c->lr, variant == 1 ? c->lr * 2.5 : c->lr};
            set_ctx("%s, %s", c->name, variant == 0 ? "float64" : variant == 1 ? "float64, lr changed" : "float32");
            double want[2][NP];
            expected_steps(want, c, grads, lrs, 2, f32);
            ag_tensor p = 0;
            int64_t n = NP;
            if (f32) {
                float pf[NP];
                for (int i = 0; i < NP; i++) pf[i] = (float)P0[i];
                CHECK_OK(ag_tensor_from_data(&p, pf, &n, 1, AG_FLOAT32));
                CHECK_OK(ag_tensor_set_requires_grad(p, true));
            } else {
                p = param64(P0, NP);
            }
            ag_optimizer opt = SENTINEL;
            if (!CHECK_OK(make_opt(&opt, c, &p, 1))) {
                CHECK_OK(ag_tensor_free(p));
                continue;
            }
            CHECK(opt != SENTINEL && opt != 0);
            for (int t = 0; t < 2; t++) {
                if (variant == 1 && t == 1) {
                    CHECK_OK(ag_optimizer_set_lr(opt, lrs[1]));
                    double lr = -1;
                    CHECK_OK(ag_optimizer_lr(&lr, opt));
                    CHECK(lr == lrs[1]);
                }
                CHECK_OK(ag_optimizer_zero_grad(opt));
                add_grad(p, grads[t], NP);
                CHECK_OK(ag_optimizer_step(opt));
                for (int i = 0; i < NP; i++) {
                    double got = elem(p, i);
                    /* float64: the same formulas in the same order give the same doubles, up to
                     * rounding; float32: within one float rounding of the value. */
                    double tol = f32 ? 2e-7 : 1e-14;
                    CHECKF(close_to(got, want[t][i], tol), "step %d, element %d: %.17g, expected %.17g", t + 1, i, got,
                           want[t][i]);
                }
            }
            ag_dtype dt = 0;
            CHECK_OK(ag_tensor_dtype(&dt, p));
            CHECK(dt == (f32 ? AG_FLOAT32 : AG_FLOAT64)); /* the step keeps the dtype */
            CHECK_OK(ag_optimizer_free(opt));
            CHECK_OK(ag_tensor_free(p));
        }
    }
    set_ctx("%s", "");

    /* Two of them written out as literal numbers, for a reader to follow. */
    {
        /* SGD momentum 0.9, lr 0.1, p = 1.5: grad 0.5 -> buf 0.5, p 1.45; grad -1 ->
         * buf 0.9 * 0.5 - 1 = -0.55, p = 1.45 + 0.055 = 1.505. */
        const double one = 1.5, g1 = 0.5, g2 = -1.0;
        ag_tensor p = param64(&one, 1);
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0.9, false, 0));
        add_grad(p, &g1, 1);
        CHECK_OK(ag_optimizer_step(opt));
        CHECK_CLOSE(elem(p, 0), 1.45, 1e-15);
        CHECK_OK(ag_optimizer_zero_grad(opt));
        add_grad(p, &g2, 1);
        CHECK_OK(ag_optimizer_step(opt));
        CHECK_CLOSE(elem(p, 0), 1.505, 1e-15);
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(p));
    }
    {
        /* Adam, lr 0.01, first step with grad 0.5 on p = 1.5: m^ = 0.5, v^ = 0.25,
         * p = 1.5 - 0.01 * 0.5 / (0.5 + 1e-8) = 1.5 - 0.01 * (1 - 2e-8 + ...) = 1.4900000002. */
        const double one = 1.5, g1 = 0.5;
        ag_tensor p = param64(&one, 1);
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_adam(&opt, &p, 1, 0.01, 0.9, 0.999, 1e-8, 0));
        add_grad(p, &g1, 1);
        CHECK_OK(ag_optimizer_step(opt));
        CHECK_CLOSE(elem(p, 0), 1.4900000002, 1e-15);
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(p));
    }
}

/* ========================================================================================== */
/* lr, zero_grad, skipped parameters, aliases, ownership                                      */
/* ========================================================================================== */

static void test_behaviour(void) {
    printf("optimizer behaviour\n");
    /* ag_optimizer_lr and set_lr; lr 0 is allowed and freezes SGD. */
    {
        set_ctx("lr and set_lr");
        ag_tensor p = param64(P0, NP);
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_sgd(&opt, &p, 1, 0.25, 0, false, 0));
        double lr = -1;
        CHECK_OK(ag_optimizer_lr(&lr, opt));
        CHECK(lr == 0.25);
        CHECK_OK(ag_optimizer_set_lr(opt, 0.0));
        CHECK_OK(ag_optimizer_lr(&lr, opt));
        CHECK(lr == 0.0);
        add_grad(p, G1, NP);
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECK(elem(p, i) == P0[i]);
        CHECK_OK(ag_optimizer_set_lr(opt, 1e6));
        CHECK_OK(ag_optimizer_lr(&lr, opt));
        CHECK(lr == 1e6);
        CHECK_OK(ag_optimizer_set_lr(opt, 0.5));
        CHECK_OK(ag_optimizer_step(opt)); /* the same gradient, still accumulated */
        for (int i = 0; i < NP; i++) CHECK_CLOSE(elem(p, i), P0[i] - 0.5 * G1[i], 1e-15);
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(p));
    }
    /* zero_grad clears the gradient of every parameter. */
    {
        set_ctx("zero_grad");
        ag_tensor a = param64(P0, NP), b = param64(G1, NP);
        ag_tensor ps[2] = {a, b};
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_adam(&opt, ps, 2, 0.01, 0.9, 0.999, 1e-8, 0));
        add_grad(a, G1, NP);
        add_grad(b, G2, NP);
        CHECK(has_grad(a) && has_grad(b));
        CHECK_OK(ag_optimizer_zero_grad(opt));
        CHECK(!has_grad(a) && !has_grad(b));
        /* a step now changes nothing: no parameter has a gradient */
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECK(elem(a, i) == P0[i] && elem(b, i) == G1[i]);
        /* gradients accumulate across backward calls; the step uses their sum */
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_optimizer_sgd(&opt, ps, 2, 0.1, 0, false, 0));
        add_grad(a, G1, NP);
        add_grad(a, G2, NP);
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECK_CLOSE(elem(a, i), P0[i] - 0.1 * (G1[i] + G2[i]), 1e-15);
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(a));
        CHECK_OK(ag_tensor_free(b));
    }
    /* Parameters without a gradient are skipped, and their state is not touched: the first
     * step a parameter takes is a first step (SGD's buffer starts as d, Adam's t is 1). */
    for (int k = 0; k < NCONFIGS; k++) {
        const opt_config *c = &CONFIGS[k];
        set_ctx("skipping, %s", c->name);
        ag_tensor a = param64(P0, NP), b = param64(P0, NP);
        ag_tensor ps[2] = {a, b};
        ag_optimizer opt = 0;
        CHECK_OK(make_opt(&opt, c, ps, 2));
        add_grad(a, G2, NP); /* step 1: only a has a gradient */
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECKF(elem(b, i) == P0[i], "b moved without a gradient");
        CHECK_OK(ag_optimizer_zero_grad(opt));
        add_grad(b, G1, NP); /* step 2: only b */
        CHECK_OK(ag_optimizer_step(opt));
        const double *grads[1] = {G1};
        const double lrs[1] = {c->lr};
        double want[1][NP], want_a[1][NP];
        expected_steps(want, c, grads, lrs, 1, false);
        const double *grads_a[1] = {G2};
        expected_steps(want_a, c, grads_a, lrs, 1, false);
        for (int i = 0; i < NP; i++) {
            CHECKF(close_to(elem(b, i), want[0][i], 1e-14), "b[%d] = %.17g, expected a first step to %.17g", i,
                   elem(b, i), want[0][i]);
            CHECKF(elem(a, i) == want_a[0][i] || close_to(elem(a, i), want_a[0][i], 1e-14),
                   "a[%d] = %.17g changed by the step it had no gradient for (expected %.17g)", i, elem(a, i),
                   want_a[0][i]);
        }
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(a));
        CHECK_OK(ag_tensor_free(b));
    }
    /* In-place updates are seen by tensors sharing the values (ag_detach), and the optimizer
     * holds its parameters: their handles may be freed before it steps. */
    {
        set_ctx("aliases and ownership");
        int64_t before = live_handles();
        ag_tensor p = param64(P0, NP), alias = 0;
        CHECK_OK(ag_detach(&alias, p));
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0, false, 0));
        add_grad(p, G1, NP);
        CHECK_OK(ag_tensor_free(p)); /* the optimizer holds the parameter, and so its gradient */
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECK_CLOSE(elem(alias, i), P0[i] - 0.1 * G1[i], 1e-15);
        CHECK_OK(ag_optimizer_zero_grad(opt));
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(alias));
        CHECK(live_handles() == before);

        /* With the handle kept: the alias sees exactly the update. */
        p = param64(P0, NP);
        CHECK_OK(ag_detach(&alias, p));
        CHECK_OK(ag_optimizer_adamw(&opt, &p, 1, 0.01, 0.9, 0.999, 1e-8, 0.1));
        add_grad(p, G1, NP);
        CHECK_OK(ag_optimizer_step(opt));
        for (int i = 0; i < NP; i++) CHECK(elem(alias, i) == elem(p, i) && elem(p, i) != P0[i]);
        CHECK_OK(ag_optimizer_free(opt));
        /* the parameter outlives the optimizer */
        CHECK_CLOSE(elem(p, 0), elem(alias, 0), 0);
        CHECK_OK(ag_tensor_free(p));
        CHECK_OK(ag_tensor_free(alias));
        CHECK(live_handles() == before);
    }
    /* A parameter used by two optimizers, and one optimizer over parameters of both dtypes. */
    {
        set_ctx("shared parameters, mixed dtypes");
        ag_tensor p = param64(P0, NP), q = 0;
        int64_t n = NP;
        float qf[NP] = {1, 2, 3};
        CHECK_OK(ag_tensor_from_data(&q, qf, &n, 1, AG_FLOAT32));
        CHECK_OK(ag_tensor_set_requires_grad(q, true));
        ag_optimizer o1 = 0, o2 = 0;
        ag_tensor pq[2] = {p, q};
        CHECK_OK(ag_optimizer_sgd(&o1, pq, 2, 0.1, 0, false, 0));
        CHECK_OK(ag_optimizer_sgd(&o2, &p, 1, 0.1, 0, false, 0));
        add_grad(p, G1, NP);
        add_grad(q, G1, NP);
        CHECK_OK(ag_optimizer_step(o1));
        CHECK_OK(ag_optimizer_step(o2));
        for (int i = 0; i < NP; i++) {
            CHECK_CLOSE(elem(p, i), P0[i] - 0.2 * G1[i], 1e-15);
            CHECK_CLOSE(elem(q, i), (double)(float)(qf[i] - 0.1 * (double)(float)G1[i]), 1e-7);
        }
        CHECK_OK(ag_optimizer_free(o2));
        CHECK_OK(ag_optimizer_free(o1));
        CHECK_OK(ag_tensor_free(p));
        CHECK_OK(ag_tensor_free(q));
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Convergence: least squares with each optimizer                                             */
/* ========================================================================================== */

static void test_convergence(void) {
    printf("convergence: min |A w - y|^2 with each optimizer\n");
    /* A (4x3) full rank, y = A w* with w* = (1, -2, 0.5). */
    const double A[12] = {1, 0.5, 0, 0.2, 1, 0.3, 0, 0.4, 1, 0.5, 0.5, 0.5};
    const double wstar[3] = {1, -2, 0.5};
    double y[4];
    for (int r = 0; r < 4; r++) y[r] = A[r * 3] * wstar[0] + A[r * 3 + 1] * wstar[1] + A[r * 3 + 2] * wstar[2];
    const opt_config configs[] = {
        {"SGD", 0, 0.2, 0, 0, 0, 0, 0, false},
        {"SGD momentum", 0, 0.05, 0.9, 0, 0, 0, 0, false},
        {"SGD Nesterov", 0, 0.05, 0.9, 0, 0, 0, 0, true},
        {"Adam", 1, 0.05, 0, 0.9, 0.999, 1e-8, 0, false},
        {"AdamW", 2, 0.05, 0, 0.9, 0.999, 1e-8, 0, false},
    };
    const int64_t sa[2] = {4, 3}, sy[1] = {4}, sw[1] = {3};
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        set_ctx("%s", configs[k].name);
        ag_tensor a = 0, yt = 0, w = 0;
        CHECK_OK(ag_tensor_from_data(&a, A, sa, 2, AG_FLOAT64));
        CHECK_OK(ag_tensor_from_data(&yt, y, sy, 1, AG_FLOAT64));
        CHECK_OK(ag_tensor_zeros(&w, sw, 1, AG_FLOAT64));
        CHECK_OK(ag_tensor_set_requires_grad(w, true));
        ag_optimizer opt = 0;
        CHECK_OK(make_opt(&opt, &configs[k], &w, 1));
        double loss_value = NAN;
        for (int step = 0; step < 600; step++) {
            if (step == 400) CHECK_OK(ag_optimizer_set_lr(opt, configs[k].lr * 0.2)); /* anneal */
            ag_tensor pred = 0, loss = 0;
            CHECK_OK(ag_matmul(&pred, a, w));
            CHECK_OK(ag_mse_loss(&loss, pred, yt));
            CHECK_OK(ag_optimizer_zero_grad(opt));
            CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, false, false));
            CHECK_OK(ag_optimizer_step(opt));
            CHECK_OK(ag_tensor_item(&loss_value, loss));
            CHECK_OK(ag_tensor_free(loss));
            CHECK_OK(ag_tensor_free(pred));
        }
        CHECKF(loss_value < 1e-8, "final loss %.3g", loss_value);
        for (int i = 0; i < 3; i++) CHECKF(fabs(elem(w, i) - wstar[i]) < 1e-3, "w[%d] = %.6g", i, elem(w, i));
        CHECK_OK(ag_optimizer_free(opt));
        CHECK_OK(ag_tensor_free(w));
        CHECK_OK(ag_tensor_free(yt));
        CHECK_OK(ag_tensor_free(a));
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Errors                                                                                     */
/* ========================================================================================== */

static void test_errors(void) {
    printf("optimizer errors\n");
    ag_tensor p = param64(P0, NP), q = param64(G1, NP);
    ag_tensor plain = 0, result = 0, freed = param64(P0, NP);
    int64_t n = NP;
    CHECK_OK(ag_tensor_from_data(&plain, P0, &n, 1, AG_FLOAT64)); /* does not require grad */
    CHECK_OK(ag_mul_scalar(&result, p, 2.0));                     /* not a leaf */
    CHECK_OK(ag_tensor_free(freed));
    ag_optimizer opt = SENTINEL;
    const ag_tensor one[1] = {p};
    const ag_tensor two[2] = {p, q};

    /* The creators share their parameter-list errors. */
    for (int kind = 0; kind < 3; kind++) {
        const opt_config c = {kind == 0 ? "SGD" : kind == 1 ? "Adam" : "AdamW", kind, 0.1, 0.9, 0.9, 0.999, 1e-8, 0.01,
                              false};
        set_ctx("%s parameter list", c.name);
        CHECK_ERR(make_opt(NULL, &c, one, 1), AG_ERR_ARGUMENT);
        CHECK_ERR(make_opt(&opt, &c, NULL, 1), AG_ERR_ARGUMENT);
        CHECK_ERR(make_opt(&opt, &c, one, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make_opt(&opt, &c, one, -1), AG_ERR_ARGUMENT);
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){p, q, p}, 3), AG_ERR_ARGUMENT); /* repeated */
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){p, p}, 2), AG_ERR_ARGUMENT);
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){p, result}, 2), AG_ERR_STATE); /* not a leaf */
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){plain}, 1), AG_ERR_STATE);    /* no requires_grad */
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){p, 0}, 2), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){freed}, 1), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(make_opt(&opt, &c, (ag_tensor[]){MADE_UP}, 1), AG_ERR_INVALID_HANDLE);
        opt_config bad = c;
        bad.lr = -0.1;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        bad.lr = NAN;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        bad.lr = INFINITY;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        bad = c;
        bad.weight_decay = -1e-3;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        bad.weight_decay = NAN;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        bad.weight_decay = INFINITY;
        CHECK_ERR(make_opt(&opt, &bad, two, 2), AG_ERR_ARGUMENT);
        CHECK(opt == SENTINEL);
    }
    set_ctx("SGD hyper-parameters");
    CHECK_ERR(ag_optimizer_sgd(&opt, two, 2, 0.1, -0.5, false, 0), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_sgd(&opt, two, 2, 0.1, NAN, false, 0), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_sgd(&opt, two, 2, 0.1, INFINITY, false, 0), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_sgd(&opt, two, 2, 0.1, 0, true, 0), AG_ERR_ARGUMENT); /* Nesterov, no momentum */
    set_ctx("Adam / AdamW hyper-parameters");
    for (int w = 0; w < 2; w++) {
        ag_status (*make)(ag_optimizer *, const ag_tensor *, int64_t, double, double, double, double, double) =
            w == 0 ? ag_optimizer_adam : ag_optimizer_adamw;
        CHECK_ERR(make(&opt, two, 2, 0.1, 1.0, 0.999, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, -0.1, 0.999, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, NAN, 0.999, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, 1.0, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, -1e-9, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, NAN, 1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, 0.999, -1e-8, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, 0.999, NAN, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(make(&opt, two, 2, 0.1, 0.9, 0.999, INFINITY, 0), AG_ERR_ARGUMENT);
        /* the edges that are allowed: betas 0, eps 0, lr 0 */
        ag_optimizer ok = 0;
        CHECK_OK(make(&ok, two, 2, 0.0, 0.0, 0.0, 0.0, 0));
        CHECK_OK(ag_optimizer_free(ok));
    }
    CHECK(opt == SENTINEL);

    /* Handles of the wrong kind, freed and made-up handles. */
    set_ctx("handles");
    ag_optimizer good = 0, gone = 0;
    CHECK_OK(ag_optimizer_sgd(&good, two, 2, 0.1, 0.9, false, 0));
    CHECK_OK(ag_optimizer_adam(&gone, two, 2, 0.1, 0.9, 0.999, 1e-8, 0));
    CHECK_OK(ag_optimizer_free(gone));
    const ag_optimizer bad_opts[4] = {0, gone, MADE_UP, (ag_optimizer)p /* a tensor handle */};
    for (int b = 0; b < 4; b++) {
        set_ctx("bad optimizer handle #%d", b);
        double lr = -7;
        CHECK_ERR(ag_optimizer_step(bad_opts[b]), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(ag_optimizer_zero_grad(bad_opts[b]), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(ag_optimizer_set_lr(bad_opts[b], 0.1), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(ag_optimizer_lr(&lr, bad_opts[b]), AG_ERR_INVALID_HANDLE);
        CHECK(lr == -7);
        if (bad_opts[b] != 0) CHECK_ERR(ag_optimizer_free(bad_opts[b]), AG_ERR_INVALID_HANDLE);
    }
    set_ctx("handles");
    CHECK_OK(ag_optimizer_free(0)); /* like free(NULL) */
    /* The tensor passed as an optimizer is untouched. */
    CHECK(elem(p, 0) == P0[0]);
    /* An optimizer handle where a tensor is wanted. */
    ag_tensor out = SENTINEL;
    int64_t numel = -1;
    CHECK_ERR(ag_tensor_free((ag_tensor)good), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_numel(&numel, (ag_tensor)good), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_add(&out, p, (ag_tensor)good), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_zero_grad((ag_tensor)good), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_optimizer_sgd(&opt, (ag_tensor[]){p, (ag_tensor)good}, 2, 0.1, 0, false, 0), AG_ERR_INVALID_HANDLE);
    CHECK(out == SENTINEL && numel == -1 && opt == SENTINEL);
    /* ... and the optimizer still works after all that. */
    CHECK_OK(ag_optimizer_step(good));
    double lr = 0;
    CHECK_OK(ag_optimizer_lr(&lr, good));
    CHECK(lr == 0.1);

    /* lr / set_lr arguments. */
    set_ctx("lr and set_lr arguments");
    CHECK_ERR(ag_optimizer_lr(NULL, good), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_set_lr(good, -1e-3), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_set_lr(good, NAN), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_set_lr(good, INFINITY), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_optimizer_set_lr(good, -INFINITY), AG_ERR_ARGUMENT);
    CHECK_OK(ag_optimizer_lr(&lr, good));
    CHECK(lr == 0.1); /* unchanged by the failed calls */

    /* Double free. */
    CHECK_OK(ag_optimizer_free(good));
    CHECK_ERR(ag_optimizer_free(good), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_optimizer_step(good), AG_ERR_INVALID_HANDLE);

    set_ctx("%s", "");
    CHECK_OK(ag_tensor_free(p));
    CHECK_OK(ag_tensor_free(q));
    CHECK_OK(ag_tensor_free(plain));
    CHECK_OK(ag_tensor_free(result));
}

/* ========================================================================================== */
/* Memory                                                                                     */
/* ========================================================================================== */

static void test_memory(void) {
    printf("memory\n");
    int64_t before = live_handles();
    /* Many optimizers and steps: optimizer and then parameters freed leaves nothing. */
    for (int k = 0; k < NCONFIGS; k++) {
        set_ctx("%s", CONFIGS[k].name);
        ag_tensor w = 0;
        const int64_t shape[2] = {8, 5};
        CHECK_OK(ag_tensor_init(&w, shape, 2, AG_INIT_XAVIER_UNIFORM, (uint64_t)k, AG_FLOAT64));
        CHECK_OK(ag_tensor_set_requires_grad(w, true));
        ag_tensor b = param64(P0, NP);
        ag_tensor ps[2] = {w, b};
        ag_optimizer opt = 0;
        CHECK_OK(make_opt(&opt, &CONFIGS[k], ps, 2));
        CHECK(live_handles() == before + 3);
        for (int s = 0; s < 5; s++) {
            ag_tensor sq = 0, l1 = 0, l2 = 0, loss = 0;
            CHECK_OK(ag_mul(&sq, w, w));
            CHECK_OK(ag_sum(&l1, sq, NULL, 0, false));
            CHECK_OK(ag_sum(&l2, b, NULL, 0, false));
            CHECK_OK(ag_add(&loss, l1, l2));
            CHECK_OK(ag_optimizer_zero_grad(opt));
            CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, false, false));
            CHECK_OK(ag_optimizer_step(opt));
            ag_tensor tmp[4] = {sq, l1, l2, loss};
            for (int i = 0; i < 4; i++) CHECK_OK(ag_tensor_free(tmp[i]));
        }
        CHECK_OK(ag_optimizer_free(opt));
        CHECK(live_handles() == before + 2);
        CHECK_OK(ag_tensor_free(w));
        CHECK_OK(ag_tensor_free(b));
        CHECK(live_handles() == before);
    }
    /* Parameters freed first, then the optimizer. */
    {
        set_ctx("parameters freed before the optimizer");
        ag_tensor p = param64(P0, NP);
        ag_optimizer opt = 0;
        CHECK_OK(ag_optimizer_adam(&opt, &p, 1, 0.1, 0.9, 0.999, 1e-8, 0));
        add_grad(p, G1, NP);
        CHECK_OK(ag_optimizer_step(opt));
        CHECK_OK(ag_tensor_free(p));
        CHECK_OK(ag_optimizer_step(opt));
        CHECK_OK(ag_optimizer_zero_grad(opt));
        CHECK(live_handles() == before + 1);
        CHECK_OK(ag_optimizer_free(opt));
        CHECK(live_handles() == before);
    }
    set_ctx("%s", "");
}

int main(void) {
    test_begin();
    test_initialisers();
    test_hand_steps();
    test_behaviour();
    test_convergence();
    test_errors();
    test_memory();
    printf("live handles at the end\n");
    CHECKF(live_handles() == 0, "%lld handles are still live", (long long)live_handles());
    return test_summary();
}
