/*
 * test_catalogue.c - tests of the operation catalogue of Autograd's C interface
 * (include/autograd.h): the creators, operations and functions added beyond the basic set
 * that bindings/c/test_autograd.c covers. Written against the header alone.
 *
 * For every function: forward values against a plain-C computation, gradients against central
 * finite differences (float64, h = 1e-6) of sum(R * f(inputs)) for fixed weights R, every
 * error status the header documents for it (each time also checking that ag_last_error() is
 * non-empty, that ag_status_name() names the status, and that the output was left alone), and
 * the documented kinks, ties and extreme inputs.
 *
 * Output: the name of each test group, one line per failed check (file:line and what
 * differed), and finally exactly "N passed, M failed". Exit status 0 only if M is 0.
 * Set AG_TEST_VERBOSE=1 to also print every error message the library produced.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_catalogue
 *        bindings/c/test_catalogue.c -L .build/release -lautograd -Wl,-rpath,... -lm
 */
#define _POSIX_C_SOURCE 200809L

#include "test_support.h"

/* A handle that was valid once and has been freed (set up in main). */
static ag_tensor g_stale;

/* ========================================================================================== */
/* Gradient checks against central finite differences                                         */
/* ========================================================================================== */

/* gradcheck_at (test_support.h) on float64 with step h = 1e-6 and tolerance 1e-6 (absolute and
 * relative). */
#define GRADCHECK(name, f, ctx, in) gradcheck_at((name), (f), (ctx), (in), AG_FLOAT64, 1e-6, 1e-6, 1e-6, HERE)

/* Runs f forward and backward with the given weights and compares input i's gradient with
 * `want` exactly-ish (analytic expectations: kinks, ties). */
static void expect_grad_at(const char *what, fwd_fn f, const void *ctx, const Inputs *in, const double *weights,
                           int i, const double *want, const char *file, int line) {
    Run r;
    if (run_at(&r, what, f, ctx, in, AG_FLOAT64, weights, file, line) &&
        check_at(r.grad[i] != NULL, file, line, "%s: no gradient", what))
        arrays_close_at(what, r.grad[i], want, numel_of_shape(in->shape[i]), 1e-12, 1e-12, file, line);
    run_free(&r);
}
#define EXPECT_GRAD(what, f, ctx, in, weights, i, want)                                        \
    expect_grad_at((what), (f), (ctx), (in), (weights), (i), (want), HERE)

/* ========================================================================================== */
/* Plain-C reference helpers                                                                  */
/* ========================================================================================== */

static void unravel(int64_t flat, Shape s, int64_t *c) {
    for (int64_t i = s.ndim - 1; i >= 0; i--) {
        c[i] = flat % s.d[i];
        flat /= s.d[i];
    }
}

static int64_t ravel(const int64_t *c, Shape s) {
    int64_t f = 0;
    for (int64_t i = 0; i < s.ndim; i++) f = f * s.d[i] + c[i];
    return f;
}

/* Product of extents [from, to). */
static int64_t prod(Shape s, int64_t from, int64_t to) {
    int64_t p = 1;
    for (int64_t i = from; i < to; i++) p *= s.d[i];
    return p;
}

static double sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double softplus_d(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

/* ========================================================================================== */
/* Creators                                                                                   */
/* ========================================================================================== */

/* Common error statuses of the shape-taking creators: fn(out, shape, ndim) with the rest bound. */
typedef ag_status (*shape_creator)(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_dtype dtype);

static ag_status cr_full(ag_tensor *o, const int64_t *s, int64_t n, ag_dtype dt) {
    return ag_tensor_full(o, s, n, 2.5, dt);
}
static ag_status cr_unif(ag_tensor *o, const int64_t *s, int64_t n, ag_dtype dt) {
    return ag_tensor_rand_uniform(o, s, n, -1.0, 1.0, 7, dt);
}
static ag_status cr_norm(ag_tensor *o, const int64_t *s, int64_t n, ag_dtype dt) {
    return ag_tensor_rand_normal(o, s, n, 0.0, 1.0, 7, dt);
}

static void creator_shape_errors(const char *name, shape_creator fn) {
    set_ctx("%s", name);
    CHECK_ERR(fn(NULL, I64(2, 3), 2, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, I64(2, 3), -1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, I64(1, 1, 1, 1, 1, 1, 1, 1, 1), 9, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, NULL, 2, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_SHAPE, fn, I64(2, -1), 2, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_DTYPE, fn, I64(2, 3), 2, 0);
    CHECK_ERR_OUT(AG_ERR_DTYPE, fn, I64(2, 3), 2, 5);
    /* rank 0 with a NULL shape and an empty shape are fine */
    ag_tensor t = AG_NULL_TENSOR, e = AG_NULL_TENSOR;
    if (CHECK_OK(fn(&t, NULL, 0, AG_FLOAT64))) {
        EXPECT_SHAPE(t, S0, name);
        FREE(t);
    }
    if (CHECK_OK(fn(&e, I64(0, 3), 2, AG_FLOAT32))) {
        EXPECT_SHAPE(e, SHAPE(0, 3), name);
        EXPECT_DTYPE(e, AG_FLOAT32);
        FREE(e);
    }
    set_ctx("%s", "");
}

/* A creator's result is a leaf without requires_grad that may be marked. */
static void expect_fresh_leaf(ag_tensor t) {
    bool rg = true;
    CHECK_OK(ag_tensor_requires_grad(&rg, t));
    CHECK(!rg);
    CHECK_OK(ag_tensor_set_requires_grad(t, true));
    CHECK_OK(ag_tensor_requires_grad(&rg, t));
    CHECK(rg);
}

static void test_full(void) {
    ag_tensor t = AG_NULL_TENSOR;
    double want[6];
    for (int i = 0; i < 6; i++) want[i] = 2.5;
    if (CHECK_OK(ag_tensor_full(&t, I64(2, 3), 2, 2.5, AG_FLOAT64))) {
        EXPECT_TENSOR(t, SHAPE(2, 3), want, "full 2.5 (2,3)");
        EXPECT_DTYPE(t, AG_FLOAT64);
        expect_fresh_leaf(t);
        FREE(t);
    }
    for (int i = 0; i < 6; i++) want[i] = (double)0.1f;
    if (CHECK_OK(ag_tensor_full(&t, I64(3, 1, 2), 3, 0.1, AG_FLOAT32))) {
        EXPECT_TENSOR(t, SHAPE(3, 1, 2), want, "full 0.1 float32 (value converted to float)");
        EXPECT_DTYPE(t, AG_FLOAT32);
        FREE(t);
    }
    if (CHECK_OK(ag_tensor_full(&t, NULL, 0, -3.0, AG_FLOAT64))) {
        EXPECT_TENSOR(t, S0, D(-3.0), "full rank 0");
        FREE(t);
    }
    if (CHECK_OK(ag_tensor_full(&t, I64(2), 1, NAN, AG_FLOAT64))) {
        EXPECT_TENSOR(t, SHAPE(2), D(NAN, NAN), "full nan");
        FREE(t);
    }
    creator_shape_errors("ag_tensor_full", cr_full);
}

static void expect_arange(double start, double stop, double step, ag_dtype dt, const double *want, int64_t n) {
    set_ctx("arange(%g, %g, %g) dtype %d", start, stop, step, (int)dt);
    ag_tensor t = AG_NULL_TENSOR;
    if (CHECK_OK(ag_tensor_arange(&t, start, stop, step, dt))) {
        if (dt == AG_FLOAT32)
            EXPECT_TENSOR32(t, SHAPE(n), want, "arange");
        else
            EXPECT_TENSOR(t, SHAPE(n), want, "arange");
        EXPECT_DTYPE(t, dt);
        expect_fresh_leaf(t);
        FREE(t);
    }
    set_ctx("%s", "");
}

static void test_arange(void) {
    expect_arange(0, 5, 1, AG_FLOAT64, D(0, 1, 2, 3, 4), 5);
    expect_arange(5, 0, -1.5, AG_FLOAT64, D(5, 3.5, 2, 0.5), 4);
    expect_arange(0, 1, 0.25, AG_FLOAT64, D(0, 0.25, 0.5, 0.75), 4);
    expect_arange(1, 2.5, 0.5, AG_FLOAT64, D(1, 1.5, 2), 3);
    expect_arange(-3, 0.5, 1, AG_FLOAT64, D(-3, -2, -1, 0), 4);
    expect_arange(0, 2, 0.25, AG_FLOAT32, D(0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75), 8);
    double w[10];
    for (int i = 0; i < 10; i++) w[i] = 0.1 * i; /* numpy: start + i * step */
    expect_arange(0, 1, 0.1, AG_FLOAT64, w, 10);
    expect_arange(3, 3, 1, AG_FLOAT64, NULL, 0);  /* empty */
    expect_arange(5, 0, 1, AG_FLOAT64, NULL, 0);  /* empty: wrong direction */
    expect_arange(0, 5, -1, AG_FLOAT64, NULL, 0); /* empty */

    CHECK_ERR(ag_tensor_arange(NULL, 0, 5, 1, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, 5, 0, AG_FLOAT64);           /* step 0 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, 5, -0.0, AG_FLOAT64);        /* step -0 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, NAN, 5, 1, AG_FLOAT64);         /* non-finite */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, INFINITY, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, 5, NAN, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, -INFINITY, 0, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, 0x1p41, 1, AG_FLOAT64);      /* 2^41 elements */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_arange, 0, 1, 0x1p-45, AG_FLOAT32);     /* 2^45 elements */
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_arange, 0, 5, 1, 0);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_arange, 0, 5, 1, 7);
}

static void test_eye(void) {
    static const struct {
        int64_t n, m;
    } cases[] = {{3, 3}, {2, 4}, {4, 2}, {1, 1}, {0, 3}, {3, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int dtc = 0; dtc < 2; dtc++) {
            ag_dtype dt = dtc ? AG_FLOAT32 : AG_FLOAT64;
            int64_t n = cases[c].n, m = cases[c].m;
            set_ctx("eye(%" PRId64 ", %" PRId64 ") dtype %d", n, m, (int)dt);
            double want[16];
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < m; j++) want[i * m + j] = i == j ? 1.0 : 0.0;
            ag_tensor t = AG_NULL_TENSOR;
            if (CHECK_OK(ag_tensor_eye(&t, n, m, dt))) {
                EXPECT_TENSOR(t, SHAPE(n, m), want, "eye");
                EXPECT_DTYPE(t, dt);
                expect_fresh_leaf(t);
                FREE(t);
            }
        }
    }
    set_ctx("%s", "");
    CHECK_ERR(ag_tensor_eye(NULL, 2, 2, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_tensor_eye, -1, 3, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_tensor_eye, 3, -1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_tensor_eye, INT64_C(1) << 40, INT64_C(1) << 40, AG_FLOAT64); /* overflows */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_tensor_eye, INT64_MAX, 2, AG_FLOAT32);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_eye, 2, 2, 0);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_eye, 2, 2, 5);
}

/* Reads a random tensor of 100x100. */
static double *rand_read(bool normal, double p0, double p1, uint64_t seed, ag_dtype dt) {
    ag_tensor t = AG_NULL_TENSOR;
    ag_status st = normal ? ag_tensor_rand_normal(&t, I64(100, 100), 2, p0, p1, seed, dt)
                          : ag_tensor_rand_uniform(&t, I64(100, 100), 2, p0, p1, seed, dt);
    if (!CHECK_OK(st)) return NULL;
    EXPECT_DTYPE(t, dt);
    Shape s;
    double *v = read_at(t, &s, HERE);
    if (v && !CHECK(shape_eq(s, SHAPE(100, 100)))) {
        free(v);
        v = NULL;
    }
    expect_fresh_leaf(t);
    FREE(t);
    return v;
}

static void moments(const double *v, int n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = sqrt(q / n);
}

static int count_differing(const double *a, const double *b, int n) {
    int d = 0;
    for (int i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

static void test_rand_uniform(void) {
    enum { N = 10000 };
    for (int dtc = 0; dtc < 2; dtc++) {
        ag_dtype dt = dtc ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("rand_uniform [-2, 3) dtype %d", (int)dt);
        double *a = rand_read(false, -2.0, 3.0, 42, dt), *b = rand_read(false, -2.0, 3.0, 42, dt);
        double *c = rand_read(false, -2.0, 3.0, 43, dt);
        if (a && b && c) {
            int out_of_range = 0;
            for (int i = 0; i < N; i++) out_of_range += !(a[i] >= -2.0 && a[i] < 3.0);
            CHECKF(out_of_range == 0, "%d values outside [-2, 3)", out_of_range);
            double mean, sd;
            moments(a, N, &mean, &sd);
            /* uniform on [-2, 3): mean 0.5, sd 5/sqrt(12) = 1.443 */
            CHECKF(fabs(mean - 0.5) < 0.05, "mean %g, expected about 0.5", mean);
            CHECKF(fabs(sd - 5.0 / sqrt(12.0)) < 0.05, "sd %g, expected about %g", sd, 5.0 / sqrt(12.0));
            CHECKF(count_differing(a, b, N) == 0, "the same seed gave %d different values", count_differing(a, b, N));
            CHECKF(count_differing(a, c, N) > N / 2, "seeds 42 and 43 gave only %d different values of %d",
                   count_differing(a, c, N), N);
        }
        free(a);
        free(b);
        free(c);
    }
    set_ctx("%s", "");
    creator_shape_errors("ag_tensor_rand_uniform", cr_unif);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_uniform, I64(3), 1, 2.0, 1.0, 1, AG_FLOAT64); /* low > high */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_uniform, I64(3), 1, NAN, 1.0, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_uniform, I64(3), 1, 0.0, INFINITY, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_uniform, I64(3), 1, -INFINITY, 0.0, 1, AG_FLOAT32);
}

static void test_rand_normal(void) {
    enum { N = 10000 };
    for (int dtc = 0; dtc < 2; dtc++) {
        ag_dtype dt = dtc ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("rand_normal(1.5, 2) dtype %d", (int)dt);
        double *a = rand_read(true, 1.5, 2.0, 42, dt), *b = rand_read(true, 1.5, 2.0, 42, dt);
        double *c = rand_read(true, 1.5, 2.0, 43, dt);
        if (a && b && c) {
            int nonfinite = 0;
            for (int i = 0; i < N; i++) nonfinite += !isfinite(a[i]);
            CHECKF(nonfinite == 0, "%d non-finite values", nonfinite);
            double mean, sd;
            moments(a, N, &mean, &sd); /* standard errors: 0.02 and 0.014 */
            CHECKF(fabs(mean - 1.5) < 0.1, "mean %g, expected about 1.5", mean);
            CHECKF(fabs(sd - 2.0) < 0.1, "sd %g, expected about 2", sd);
            int within1 = 0;
            for (int i = 0; i < N; i++) within1 += fabs(a[i] - 1.5) < 2.0;
            CHECKF(fabs(within1 / (double)N - 0.6827) < 0.03, "%d of %d within one sd, expected about 68%%",
                   within1, N);
            CHECKF(count_differing(a, b, N) == 0, "the same seed gave %d different values", count_differing(a, b, N));
            CHECKF(count_differing(a, c, N) > N / 2, "seeds 42 and 43 gave only %d different values of %d",
                   count_differing(a, c, N), N);
        }
        free(a);
        free(b);
        free(c);
    }
    set_ctx("rand_normal std 0");
    ag_tensor t = AG_NULL_TENSOR;
    if (CHECK_OK(ag_tensor_rand_normal(&t, I64(4), 1, -0.75, 0.0, 5, AG_FLOAT64))) {
        EXPECT_TENSOR(t, SHAPE(4), D(-0.75, -0.75, -0.75, -0.75), "std 0 gives the mean");
        FREE(t);
    }
    set_ctx("%s", "");
    creator_shape_errors("ag_tensor_rand_normal", cr_norm);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, 0.0, -1.0, 1, AG_FLOAT64); /* std < 0 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, 0.0, -1e-300, 1, AG_FLOAT32);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, NAN, 1.0, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, INFINITY, 1.0, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, 0.0, INFINITY, 1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_rand_normal, I64(3), 1, 0.0, NAN, 1, AG_FLOAT64);
}

/* ========================================================================================== */
/* Unary operations and the scalar forms of the binary ones                                   */
/* ========================================================================================== */

typedef ag_status (*un_call)(ag_tensor *out, ag_tensor a, double s);

static ag_status c_sqrt(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_sqrt(o, a); }
static ag_status c_abs(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_abs(o, a); }
static ag_status c_sin(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_sin(o, a); }
static ag_status c_cos(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_cos(o, a); }
static ag_status c_tanh(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_tanh(o, a); }
static ag_status c_sigmoid(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_sigmoid(o, a); }
static ag_status c_gelu(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_gelu(o, a); }
static ag_status c_softplus(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_softplus(o, a); }
static ag_status c_relu(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_relu(o, a); }
static ag_status c_log1p(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_log1p(o, a); }
static ag_status c_expm1(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_expm1(o, a); }
static ag_status c_erf(ag_tensor *o, ag_tensor a, double s) { (void)s; return ag_erf(o, a); }
/* clamp with s as its bounds: [-s, s], [s, inf), (-inf, s] */
static ag_status c_clamp(ag_tensor *o, ag_tensor a, double s) { return ag_clamp(o, a, -s, s); }
static ag_status c_clamp_min(ag_tensor *o, ag_tensor a, double s) { return ag_clamp(o, a, s, INFINITY); }
static ag_status c_clamp_max(ag_tensor *o, ag_tensor a, double s) { return ag_clamp(o, a, -INFINITY, s); }

static double r_sqrt(double x, double s) { (void)s; return sqrt(x); }
static double r_abs(double x, double s) { (void)s; return fabs(x); }
static double r_sin(double x, double s) { (void)s; return sin(x); }
static double r_cos(double x, double s) { (void)s; return cos(x); }
static double r_tanh(double x, double s) { (void)s; return tanh(x); }
static double r_sigmoid(double x, double s) { (void)s; return sigmoid_d(x); }
static double r_gelu(double x, double s) { (void)s; return gelu_d(x); }
static double r_softplus(double x, double s) { (void)s; return softplus_d(x); }
static double r_leaky(double x, double s) { return x > 0 ? x : s * x; }
static double r_log1p(double x, double s) { (void)s; return log1p(x); }
static double r_expm1(double x, double s) { (void)s; return expm1(x); }
static double r_erf(double x, double s) { (void)s; return erf(x); }
static double r_clamp(double x, double s) { return x < -s ? -s : x > s ? s : x; }
static double r_clamp_min(double x, double s) { return x < s ? s : x; }
static double r_clamp_max(double x, double s) { return x > s ? s : x; }
static double r_add(double x, double s) { return x + s; }
static double r_sub(double x, double s) { return x - s; }
static double r_rsub(double x, double s) { return s - x; }
static double r_mul(double x, double s) { return x * s; }
static double r_div(double x, double s) { return x / s; }
static double r_rdiv(double x, double s) { return s / x; }
static double r_pow(double x, double s) { return pow(x, s); }
static double r_rpow(double x, double s) { return pow(s, x); }
static double r_max(double x, double s) { return x > s ? x : s; }
static double r_min(double x, double s) { return x < s ? x : s; }

typedef struct {
    const char *name;
    un_call call;
    double (*ref)(double x, double s);
    double s;
    bool positive; /* needs positive inputs */
} UnaryCase;

static const UnaryCase UNARY[] = {
    {"ag_sqrt", c_sqrt, r_sqrt, 0, true},
    {"ag_abs", c_abs, r_abs, 0, false},
    {"ag_sin", c_sin, r_sin, 0, false},
    {"ag_cos", c_cos, r_cos, 0, false},
    {"ag_tanh", c_tanh, r_tanh, 0, false},
    {"ag_sigmoid", c_sigmoid, r_sigmoid, 0, false},
    {"ag_leaky_relu(0.1)", ag_leaky_relu, r_leaky, 0.1, false},
    {"ag_leaky_relu(-0.5)", ag_leaky_relu, r_leaky, -0.5, false},
    {"ag_gelu", c_gelu, r_gelu, 0, false},
    {"ag_softplus", c_softplus, r_softplus, 0, false},
    {"ag_log1p", c_log1p, r_log1p, 0, true},
    {"ag_expm1", c_expm1, r_expm1, 0, false},
    {"ag_erf", c_erf, r_erf, 0, false},
    {"ag_clamp(-1.2, 1.2)", c_clamp, r_clamp, 1.2, false},
    {"ag_clamp(0.7, inf)", c_clamp_min, r_clamp_min, 0.7, false},
    {"ag_clamp(-inf, -0.4)", c_clamp_max, r_clamp_max, -0.4, false},
    {"ag_add_scalar(1.5)", ag_add_scalar, r_add, 1.5, false},
    {"ag_sub_scalar(1.5)", ag_sub_scalar, r_sub, 1.5, false},
    {"ag_rsub_scalar(1.5)", ag_rsub_scalar, r_rsub, 1.5, false},
    {"ag_mul_scalar(-2.5)", ag_mul_scalar, r_mul, -2.5, false},
    {"ag_div_scalar(-2.5)", ag_div_scalar, r_div, -2.5, false},
    {"ag_rdiv_scalar(3)", ag_rdiv_scalar, r_rdiv, 3.0, true},
    {"ag_pow_scalar(2.5)", ag_pow_scalar, r_pow, 2.5, true},
    {"ag_pow_scalar(-1.5)", ag_pow_scalar, r_pow, -1.5, true},
    {"ag_pow_scalar(3) on negatives", ag_pow_scalar, r_pow, 3.0, false},
    {"ag_pow_scalar(2) on negatives", ag_pow_scalar, r_pow, 2.0, false},
    {"ag_rpow_scalar(2.5)", ag_rpow_scalar, r_rpow, 2.5, false},
    {"ag_rpow_scalar(0.5)", ag_rpow_scalar, r_rpow, 0.5, false},
    {"ag_maximum_scalar(0.3)", ag_maximum_scalar, r_max, 0.3, false},
    {"ag_minimum_scalar(0.3)", ag_minimum_scalar, r_min, 0.3, false},
    {"ag_maximum_scalar(-1)", ag_maximum_scalar, r_max, -1.0, false},
};
enum { NUNARY = sizeof UNARY / sizeof UNARY[0] };

static ag_status f_unary(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const UnaryCase *u = ctx;
    return u->call(o, in[0], u->s);
}

static void test_unary(void) {
    enum { N = 10 };
    const Shape s = SHAPE(2, 5);
    for (int c = 0; c < NUNARY; c++) {
        const UnaryCase *u = &UNARY[c];
        set_ctx("%s", u->name);
        double x[N], want[N];
        if (u->positive)
            fill_positive(x, N, 0.3 + c);
        else
            fill(x, N, 0.3 + c);

        /* float64 forward */
        for (int i = 0; i < N; i++) want[i] = u->ref(x[i], u->s);
        ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
        if (CHECK_OK(u->call(&r, a, u->s))) {
            EXPECT_TENSOR(r, s, want, u->name);
            EXPECT_DTYPE(r, AG_FLOAT64);
            FREE(r);
        }
        /* float32 forward: the scalar is converted to float32 */
        for (int i = 0; i < N; i++)
            want[i] = round_to(AG_FLOAT32, u->ref(round_to(AG_FLOAT32, x[i]), round_to(AG_FLOAT32, u->s)));
        ag_tensor a32 = MAKE32(x, s);
        if (CHECK_OK(u->call(&r, a32, u->s))) {
            EXPECT_TENSOR32(r, s, want, u->name);
            EXPECT_DTYPE(r, AG_FLOAT32);
            FREE(r);
        }
        /* empty and rank 0 */
        ag_tensor e = MAKE(NULL, SHAPE(0, 3)), z = MAKE(x, S0);
        if (CHECK_OK(u->call(&r, e, u->s))) {
            EXPECT_SHAPE(r, SHAPE(0, 3), u->name);
            FREE(r);
        }
        if (CHECK_OK(u->call(&r, z, u->s))) {
            EXPECT_TENSOR(r, S0, D(u->ref(x[0], u->s)), u->name);
            FREE(r);
        }
        /* gradient */
        GRADCHECK(u->name, f_unary, u, IN1(x, s));
        /* errors */
        CHECK_ERR(u->call(NULL, a, u->s), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, u->call, g_stale, u->s);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, u->call, AG_NULL_TENSOR, u->s);
        FREE(a, a32, e, z);
    }
    set_ctx("%s", "");
}

/* Kinks, special values and extreme inputs of the unary operations. */
static void test_unary_special(void) {
    static const UnaryCase relu = {"ag_relu", c_relu, NULL, 0, false}, abs_ = {"ag_abs", c_abs, NULL, 0, false},
                           leaky = {"ag_leaky_relu(0.1)", ag_leaky_relu, NULL, 0.1, false},
                           sqrt_ = {"ag_sqrt", c_sqrt, NULL, 0, false},
                           sigm = {"ag_sigmoid", c_sigmoid, NULL, 0, false},
                           softp = {"ag_softplus", c_softplus, NULL, 0, false},
                           maxs = {"ag_maximum_scalar(0.3)", ag_maximum_scalar, NULL, 0.3, false},
                           mins = {"ag_minimum_scalar(0.3)", ag_minimum_scalar, NULL, 0.3, false},
                           pow2 = {"ag_pow_scalar(2)", ag_pow_scalar, NULL, 2.0, false},
                           rpow2 = {"ag_rpow_scalar(2)", ag_rpow_scalar, NULL, 2.0, false},
                           tanh_ = {"ag_tanh", c_tanh, NULL, 0, false};
    const Shape s3 = SHAPE(3);
    const double *ones3 = D(1, 1, 1);

    /* relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = negative_slope */
    EXPECT_GRAD("relu'(0) = 0", f_unary, &relu, IN1(D(0, -1, 2), s3), ones3, 0, D(0, 0, 1));
    EXPECT_GRAD("abs'(0) = 0", f_unary, &abs_, IN1(D(0, -2, 3), s3), ones3, 0, D(0, -1, 1));
    EXPECT_GRAD("leaky_relu'(0) = slope", f_unary, &leaky, IN1(D(0, -2, 3), s3), ones3, 0, D(0.1, 0.1, 1));
    /* sqrt'(0) = +inf; sqrt(-1) = nan */
    EXPECT_GRAD("sqrt'(0) = +inf", f_unary, &sqrt_, IN1(D(0, 4, 0.25), s3), ones3, 0, D(INFINITY, 0.25, 1));
    {
        ag_tensor a = MAKE(D(-1, 0, 9), s3), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_sqrt(&r, a))) {
            EXPECT_TENSOR(r, s3, D(NAN, 0, 3), "sqrt(-1) is nan");
            FREE(r);
        }
        FREE(a);
    }
    /* maximum_scalar / minimum_scalar: a tie gives half the gradient; nan gives nan */
    EXPECT_GRAD("maximum_scalar tie", f_unary, &maxs, IN1(D(0.3, 1, -1), s3), ones3, 0, D(0.5, 1, 0));
    EXPECT_GRAD("minimum_scalar tie", f_unary, &mins, IN1(D(0.3, 1, -1), s3), ones3, 0, D(0.5, 0, 1));
    {
        ag_tensor a = MAKE(D(NAN, 1, -1), s3), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_maximum_scalar(&r, a, 0.3))) {
            EXPECT_TENSOR(r, s3, D(NAN, 1, 0.3), "maximum_scalar with nan");
            FREE(r);
        }
        if (CHECK_OK(ag_minimum_scalar(&r, a, 0.3))) {
            EXPECT_TENSOR(r, s3, D(NAN, 0.3, -1), "minimum_scalar with nan");
            FREE(r);
        }
        if (CHECK_OK(ag_maximum_scalar(&r, a, NAN))) {
            EXPECT_TENSOR(r, s3, D(NAN, NAN, NAN), "maximum_scalar(nan)");
            FREE(r);
        }
        FREE(a);
    }
    /* pow_scalar(2) at 0 and negatives; rpow_scalar gradient ln(s) s^a */
    EXPECT_GRAD("pow_scalar(2)' = 2x", f_unary, &pow2, IN1(D(0, -3, 1.5), s3), ones3, 0, D(0, -6, 3));
    EXPECT_GRAD("rpow_scalar(2)' = ln2 2^x", f_unary, &rpow2, IN1(D(0, -1, 3), s3), ones3, 0,
                D(log(2.0), 0.5 * log(2.0), 8 * log(2.0)));

    /* sigmoid and softplus at +-1000 (and +-100 in float32, where e^100 overflows) */
    const double big[4] = {1000, -1000, 100, -100};
    const Shape s4 = SHAPE(4);
    const double *ones4 = D(1, 1, 1, 1);
    for (int dtc = 0; dtc < 2; dtc++) {
        ag_dtype dt = dtc ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("extreme inputs, dtype %d", (int)dt);
        ag_tensor a = make_at(big, s4, dt, false, HERE), r = AG_NULL_TENSOR;
        /* sigmoid(-1000) = 5e-435 and sigmoid(-100) = 3.7e-44 (float32: 0 or a denormal) */
        if (CHECK_OK(ag_sigmoid(&r, a))) {
            EXPECT_TENSOR_TOL(r, s4, D(1, 0, 1, exp(-100.0)), 1e-40, 1e-15, "sigmoid(+-1000, +-100)");
            FREE(r);
        }
        if (CHECK_OK(ag_softplus(&r, a))) {
            EXPECT_TENSOR_TOL(r, s4, D(1000, 0, 100, exp(-100.0)), 1e-40, 1e-15, "softplus(+-1000, +-100)");
            FREE(r);
        }
        if (CHECK_OK(ag_tanh(&r, a))) {
            EXPECT_TENSOR(r, s4, D(1, -1, 1, -1), "tanh(+-1000, +-100)");
            FREE(r);
        }
        FREE(a);
    }
    set_ctx("%s", "");
    /* their gradients at +-1000 are finite: sigmoid' = s(1-s) = 0, softplus' = sigmoid */
    EXPECT_GRAD("sigmoid' at +-1000", f_unary, &sigm, IN1(D(1000, -1000, 0), s3), ones3, 0, D(0, 0, 0.25));
    EXPECT_GRAD("softplus' at +-1000", f_unary, &softp, IN1(D(1000, -1000, 0), s3), ones3, 0, D(1, 0, 0.5));
    EXPECT_GRAD("tanh' at +-1000", f_unary, &tanh_, IN1(D(1000, -1000, 0), s3), ones3, 0, D(0, 0, 1));
    /* float32 gradients at +-1000 are finite too */
    for (int w = 0; w < 2; w++) {
        set_ctx("%s float32 gradient at +-1000", w ? "softplus" : "sigmoid");
        ag_tensor a = make_at(D(1000, -1000, 0), s3, AG_FLOAT32, true, HERE), r = AG_NULL_TENSOR, sum = AG_NULL_TENSOR;
        ag_tensor g = AG_NULL_TENSOR;
        if (CHECK_OK(w ? ag_softplus(&r, a) : ag_sigmoid(&r, a)) && CHECK_OK(ag_sum(&sum, r, NULL, 0, false)) &&
            CHECK_OK(ag_backward(sum, AG_NULL_TENSOR, false, false)) && CHECK_OK(ag_tensor_grad(&g, a)) &&
            CHECK(g != AG_NULL_TENSOR))
            EXPECT_TENSOR32(g, s3, w ? D(1, 0, 0.5) : D(0, 0, 0.25), "float32 gradient");
        FREE(a, r, sum, g);
    }
    set_ctx("%s", "");

    /* gelu: exact form against erf, including negative values and the gradient at 0 (= 0.5) */
    static const UnaryCase gelu = {"ag_gelu", c_gelu, NULL, 0, false};
    EXPECT_GRAD("gelu'(0) = 0.5", f_unary, &gelu, IN1(D(0, 0, 0), s3), ones3, 0, D(0.5, 0.5, 0.5));
    {
        const double gx[4] = {-3, -0.5, 0, 2.25};
        double want[4];
        for (int i = 0; i < 4; i++) want[i] = gelu_d(gx[i]);
        ag_tensor a = MAKE(gx, s4), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_gelu(&r, a))) {
            EXPECT_TENSOR(r, s4, want, "gelu = x Phi(x)");
            FREE(r);
        }
        FREE(a);
        double gd[4];
        for (int i = 0; i < 4; i++)
            gd[i] = 0.5 * (1 + erf(gx[i] / sqrt(2.0))) +
                    gx[i] * exp(-gx[i] * gx[i] / 2) / sqrt(2 * 3.14159265358979323846);
        EXPECT_GRAD("gelu' = Phi(x) + x phi(x)", f_unary, &gelu, IN1(gx, s4), ones4, 0, gd);
    }

    /* log1p, expm1, erf: accuracy near 0 (where log(1 + x) and exp(x) - 1 lose x), the edges
     * of log1p's domain, and expm1' = e^x where y + 1 would cancel to 0 (x = -40) */
    static const UnaryCase log1p_ = {"ag_log1p", c_log1p, NULL, 0, false}, expm1_ = {"ag_expm1", c_expm1, NULL, 0, false},
                           erf_ = {"ag_erf", c_erf, NULL, 0, false};
    {
        ag_tensor a = MAKE(D(1e-10, -1, -2, -1e-10), s4), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_log1p(&r, a))) {
            EXPECT_TENSOR_TOL(r, s4, D(9.9999999995e-11, -INFINITY, NAN, -1.00000000005e-10), 0, 1e-15, "log1p near 0 and at -1, -2");
            FREE(r);
        }
        if (CHECK_OK(ag_expm1(&r, a))) {
            EXPECT_TENSOR_TOL(r, s4, D(1.00000000005e-10, expm1(-1.0), expm1(-2.0), -9.9999999995e-11), 0, 1e-15, "expm1 near 0");
            FREE(r);
        }
        if (CHECK_OK(ag_erf(&r, a))) {
            /* erf(x) = 2x/sqrt(pi) near 0 */
            EXPECT_TENSOR_TOL(r, s4, D(1.1283791670955126e-10, erf(-1.0), erf(-2.0), -1.1283791670955126e-10), 0, 1e-15, "erf near 0");
            FREE(r);
        }
        FREE(a);
    }
    EXPECT_GRAD("log1p' = 1/(1 + x)", f_unary, &log1p_, IN1(D(0, -0.5, 3), s3), ones3, 0, D(1, 2, 0.25));
    EXPECT_GRAD("log1p'(-1) = inf", f_unary, &log1p_, IN1(D(-1, 0, 1), s3), ones3, 0, D(INFINITY, 1, 0.5));
    {
        Run r;
        if (RUN(&r, f_unary, &expm1_, IN1(D(-40, 0, 2), s3), ones3) && CHECK(r.grad[0]))
            CLOSE("expm1' = e^x (e^-40 = 4.25e-18, not 0)", r.grad[0], D(exp(-40.0), 1, exp(2.0)), 3, 0, 1e-14);
        run_free(&r);
    }
    EXPECT_GRAD("erf' = 2/sqrt(pi) e^(-x^2)", f_unary, &erf_, IN1(D(0, 1, -30), s3), ones3, 0,
                D(1.1283791670955126, 1.1283791670955126 * exp(-1.0), 0));

    /* clamp: the gradient passes at the bounds (as PyTorch), not beyond them nor at nan, and is
     * selected (an infinite incoming gradient leaves 0 outside); min > max gives max everywhere */
    static const UnaryCase clamp1 = {"ag_clamp(-1, 1)", c_clamp, NULL, 1.0, false};
    const Shape s6 = SHAPE(6);
    const double cx[6] = {-2, -1, 0.5, 1, 3, NAN};
    EXPECT_GRAD("clamp' at and beyond the bounds", f_unary, &clamp1, IN1(cx, s6), D(1, 1, 1, 1, 1, 1), 0,
                D(0, 1, 1, 1, 0, 0));
    {
        ag_tensor a = MAKE(cx, s6), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_clamp(&r, a, -1, 1))) {
            EXPECT_TENSOR(r, s6, D(-1, -1, 0.5, 1, 1, NAN), "clamp(-1, 1)");
            FREE(r);
        }
        if (CHECK_OK(ag_clamp(&r, a, 1, -1))) {
            EXPECT_TENSOR(r, s6, D(-1, -1, -1, -1, -1, NAN), "clamp(1, -1): min > max gives max");
            FREE(r);
        }
        if (CHECK_OK(ag_clamp(&r, a, -INFINITY, INFINITY))) {
            EXPECT_TENSOR(r, s6, cx, "clamp with no bounds");
            FREE(r);
        }
        CHECK_ERR(ag_clamp(NULL, a, 0, 1), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_clamp, a, NAN, 1.0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_clamp, a, 0.0, NAN);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_clamp, g_stale, 0.0, 1.0);
        FREE(a);
    }
    {
        ag_tensor a = make_at(cx, s6, AG_FLOAT64, true, HERE), r = AG_NULL_TENSOR, seed = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
        if (CHECK_OK(ag_clamp(&r, a, -1, 1)) && CHECK_OK(ag_tensor_full(&seed, I64(6), 1, INFINITY, AG_FLOAT64)) &&
            CHECK_OK(ag_backward(r, seed, false, false)) && CHECK_OK(ag_tensor_grad(&g, a)))
            EXPECT_TENSOR(g, s6, D(0, INFINITY, INFINITY, INFINITY, 0, 0), "clamp' with an infinite gradient: selected");
        FREE(a, r, seed, g);
    }
}

/* ========================================================================================== */
/* Binary operations: pow, maximum, minimum, atan2                                            */
/* ========================================================================================== */

typedef ag_status (*bin_fn)(ag_tensor *, ag_tensor, ag_tensor);
typedef struct {
    const char *name;
    bin_fn fn;
    double (*ref)(double a, double b);
    bool positive_a;
} BinCase;

static double b_pow(double a, double b) { return pow(a, b); }
static double b_max(double a, double b) { return isnan(a) || isnan(b) ? NAN : a > b ? a : b; }
static double b_min(double a, double b) { return isnan(a) || isnan(b) ? NAN : a < b ? a : b; }
static double b_atan2(double a, double b) { return atan2(a, b); }

static const BinCase BINARY[] = {{"ag_pow", ag_pow, b_pow, true},
                                 {"ag_maximum", ag_maximum, b_max, false},
                                 {"ag_minimum", ag_minimum, b_min, false},
                                 {"ag_atan2", ag_atan2, b_atan2, false}};

static ag_status f_bin(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    return ((const BinCase *)ctx)->fn(o, in[0], in[1]);
}

static void test_binary(void) {
    static const struct {
        Shape a, b;
    } shapes[] = {{{2, {2, 3}}, {2, {2, 3}}}, {{2, {2, 3}}, {1, {3}}}, {{2, {2, 1}}, {2, {1, 3}}},
                  {{1, {3}}, {0, {0}}},       {{0, {0}}, {3, {2, 1, 2}}}};
    for (size_t c = 0; c < sizeof BINARY / sizeof BINARY[0]; c++) {
        const BinCase *bc = &BINARY[c];
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            Shape sa = shapes[k].a, sb = shapes[k].b, so;
            char b1[64], b2[64];
            set_ctx("%s %s %s", bc->name, shape_str(sa, b1, sizeof b1), shape_str(sb, b2, sizeof b2));
            broadcast_shape(sa, sb, &so);
            double a[8], b[8], want[16];
            int64_t na = numel_of_shape(sa), nb = numel_of_shape(sb), no = numel_of_shape(so);
            if (bc->positive_a)
                fill_positive(a, na, 1.0 + k);
            else
                fill(a, na, 1.0 + k);
            fill(b, nb, 2.5 + 3 * k);
            for (int64_t i = 0; i < no; i++)
                want[i] = bc->ref(a[broadcast_source(i, so, sa)], b[broadcast_source(i, so, sb)]);
            ag_tensor ta = MAKE(a, sa), tb = MAKE(b, sb), r = AG_NULL_TENSOR;
            if (CHECK_OK(bc->fn(&r, ta, tb))) {
                EXPECT_TENSOR(r, so, want, bc->name);
                FREE(r);
            }
            for (int64_t i = 0; i < no; i++)
                want[i] = round_to(AG_FLOAT32, bc->ref(round_to(AG_FLOAT32, a[broadcast_source(i, so, sa)]),
                                                       round_to(AG_FLOAT32, b[broadcast_source(i, so, sb)])));
            ag_tensor a32 = MAKE32(a, sa), b32 = MAKE32(b, sb);
            if (CHECK_OK(bc->fn(&r, a32, b32))) {
                EXPECT_TENSOR32(r, so, want, bc->name);
                EXPECT_DTYPE(r, AG_FLOAT32);
                FREE(r);
            }
            GRADCHECK(bc->name, f_bin, bc, IN2(a, sa, b, sb));
            if (k == 1) {
                CHECK_ERR(bc->fn(NULL, ta, tb), AG_ERR_ARGUMENT);
                CHECK_ERR_OUT(AG_ERR_DTYPE, bc->fn, ta, b32);
                CHECK_ERR_OUT(AG_ERR_DTYPE, bc->fn, a32, tb);
                CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, bc->fn, g_stale, tb);
                CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, bc->fn, ta, g_stale);
                CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, bc->fn, ta, AG_NULL_TENSOR);
                ag_tensor bad = MAKE(D(1, 2, 3, 4), SHAPE(4));
                CHECK_ERR_OUT(AG_ERR_SHAPE, bc->fn, ta, bad);
                CHECK_ERR_OUT(AG_ERR_SHAPE, bc->fn, bad, ta);
                FREE(bad);
            }
            FREE(ta, tb, a32, b32);
        }
    }
    set_ctx("%s", "");

    /* pow: gradient to b is 0 where a == 0 and nan where a < 0; to a: b a^(b-1) */
    const Shape s3 = SHAPE(3);
    const BinCase *pw = &BINARY[0], *mx = &BINARY[1], *mn = &BINARY[2];
    const Inputs *pin = IN2(D(0, -2, 2), s3, D(2, 3, 0.5), s3);
    {
        ag_tensor a = MAKE(pin->data[0], s3), b = MAKE(pin->data[1], s3), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_pow(&r, a, b))) {
            EXPECT_TENSOR(r, s3, D(0, -8, sqrt(2.0)), "pow(0,2), pow(-2,3), pow(2,0.5)");
            FREE(r);
        }
        FREE(a, b);
    }
    EXPECT_GRAD("pow: d/da = b a^(b-1)", f_bin, pw, pin, D(1, 1, 1), 0, D(0, 12, 0.5 / sqrt(2.0)));
    EXPECT_GRAD("pow: d/db = ln(a) a^b; 0 at a == 0, nan at a < 0", f_bin, pw, pin, D(1, 1, 1), 1,
                D(0, NAN, log(2.0) * sqrt(2.0)));

    /* maximum/minimum: ties give half to each; nan in either operand gives nan */
    const Inputs *tin = IN2(D(1, 2, 3), s3, D(1, 0, 5), s3);
    EXPECT_GRAD("maximum tie: half to a", f_bin, mx, tin, D(1, 1, 1), 0, D(0.5, 1, 0));
    EXPECT_GRAD("maximum tie: half to b", f_bin, mx, tin, D(1, 1, 1), 1, D(0.5, 0, 1));
    EXPECT_GRAD("minimum tie: half to a", f_bin, mn, tin, D(1, 1, 1), 0, D(0.5, 0, 1));
    EXPECT_GRAD("minimum tie: half to b", f_bin, mn, tin, D(1, 1, 1), 1, D(0.5, 1, 0));
    /* broadcast tie: b (1) against a (3), two ties -> b gets 0.5 + 0.5 + 1 */
    EXPECT_GRAD("maximum broadcast ties summed back", f_bin, mx, IN2(D(2, 2, 1), s3, D(2), SHAPE(1)), D(1, 1, 1),
                1, D(2.0));
    {
        ag_tensor a = MAKE(D(NAN, 1, 2), s3), b = MAKE(D(0, NAN, 1), s3), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_maximum(&r, a, b))) {
            EXPECT_TENSOR(r, s3, D(NAN, NAN, 2), "maximum with nan");
            FREE(r);
        }
        if (CHECK_OK(ag_minimum(&r, a, b))) {
            EXPECT_TENSOR(r, s3, D(NAN, NAN, 1), "minimum with nan");
            FREE(r);
        }
        FREE(a, b);
    }

    /* atan2: quadrants and signed zeros (C's atan2), the gradient b/r^2, -a/r^2; 0 at (0, 0)
     * (PyTorch's convention); accurate where a^2 + b^2 overflows (1e200) or underflows (1e-200) */
    const BinCase *at = &BINARY[3];
    {
        const Shape s6 = SHAPE(6);
        ag_tensor a = MAKE(D(0, -0.0, 0, 1, -1, 3), s6), b = MAKE(D(0, 0, -0.0, 0, -0.0, -4), s6), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_atan2(&r, a, b))) {
            double got[6];
            if (read_into_at(got, 6, r, HERE)) {
                const double pi = 3.14159265358979323846;
                const double want[6] = {0, -0.0, pi, pi / 2, -pi / 2, atan2(3.0, -4.0)};
                ARRAYS_CLOSE("atan2 at signed zeros", got, want, 6);
                CHECKF(signbit(got[1]) && !signbit(got[0]), "atan2(-0, 0) = %g, atan2(0, 0) = %g", got[1], got[0]);
            }
            FREE(r);
        }
        FREE(a, b);
    }
    const Inputs *ain = IN2(D(0, 3, 1e200, 1e-200), SHAPE(4), D(0, -4, 1e200, 1e-200), SHAPE(4));
    {
        Run r; /* relative tolerance only: 5e-201 must not pass for 0 */
        if (RUN(&r, f_bin, at, ain, D(1, 1, 1, 1)) && CHECK(r.grad[0] && r.grad[1])) {
            CLOSE("atan2: d/da = b/(a^2+b^2), 0 at (0, 0)", r.grad[0], D(0, -4.0 / 25, 5e-201, 5e199), 4, 0, 1e-15);
            CLOSE("atan2: d/db = -a/(a^2+b^2), 0 at (0, 0)", r.grad[1], D(0, -3.0 / 25, -5e-201, -5e199), 4, 0, 1e-15);
        }
        run_free(&r);
    }
}

/* ========================================================================================== */
/* Comparisons and where                                                                      */
/* ========================================================================================== */

typedef enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE } CmpOp;
static const struct {
    const char *name;
    bin_fn fn;
    CmpOp op;
} CMPS[] = {{"ag_eq", ag_eq, CMP_EQ}, {"ag_ne", ag_ne, CMP_NE}, {"ag_lt", ag_lt, CMP_LT},
            {"ag_le", ag_le, CMP_LE}, {"ag_gt", ag_gt, CMP_GT}, {"ag_ge", ag_ge, CMP_GE}};

static double cmp_ref(CmpOp op, double a, double b) {
    switch (op) {
    case CMP_EQ: return a == b;
    case CMP_NE: return a != b;
    case CMP_LT: return a < b;
    case CMP_LE: return a <= b;
    case CMP_GT: return a > b;
    case CMP_GE: return a >= b;
    }
    return NAN;
}

static void test_comparisons(void) {
    const Shape sa = SHAPE(2, 3), sb = SHAPE(3), sc = SHAPE(2, 1);
    const double a[6] = {1, 2, 3, 3, 2, 1.5}, b[3] = {2, 2, 1.5}, c[2] = {2, 3};
    for (size_t k = 0; k < sizeof CMPS / sizeof CMPS[0]; k++) {
        set_ctx("%s", CMPS[k].name);
        double want[6], want2[6];
        for (int64_t i = 0; i < 6; i++) {
            want[i] = cmp_ref(CMPS[k].op, a[i], b[broadcast_source(i, sa, sb)]);
            want2[i] = cmp_ref(CMPS[k].op, c[broadcast_source(i, sa, sc)], b[broadcast_source(i, sa, sb)]);
        }
        ag_tensor ta = MAKE_RG(a, sa), tb = MAKE(b, sb), tc = MAKE(c, sc), r = AG_NULL_TENSOR;
        if (CHECK_OK(CMPS[k].fn(&r, ta, tb))) {
            EXPECT_TENSOR(r, sa, want, CMPS[k].name);
            EXPECT_DTYPE(r, AG_FLOAT64);
            bool rg = true;
            CHECK_OK(ag_tensor_requires_grad(&rg, r));
            CHECKF(!rg, "a comparison result requires grad");
            FREE(r);
        }
        if (CHECK_OK(CMPS[k].fn(&r, tc, tb))) { /* (2,1) vs (3) -> (2,3) */
            EXPECT_TENSOR(r, sa, want2, CMPS[k].name);
            FREE(r);
        }
        ag_tensor a32 = MAKE32(a, sa), b32 = MAKE32(b, sb);
        if (CHECK_OK(CMPS[k].fn(&r, a32, b32))) {
            EXPECT_TENSOR(r, sa, want, CMPS[k].name);
            EXPECT_DTYPE(r, AG_FLOAT32);
            FREE(r);
        }
        ag_tensor bad = MAKE(D(1, 2), SHAPE(2));
        CHECK_ERR(CMPS[k].fn(NULL, ta, tb), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_SHAPE, CMPS[k].fn, ta, bad);
        CHECK_ERR_OUT(AG_ERR_DTYPE, CMPS[k].fn, ta, b32);
        CHECK_ERR_OUT(AG_ERR_DTYPE, CMPS[k].fn, a32, tb);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, CMPS[k].fn, g_stale, tb);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, CMPS[k].fn, ta, g_stale);
        FREE(ta, tb, tc, a32, b32, bad);
    }
    set_ctx("%s", "");
}

typedef struct {
    const double *cond;
    Shape scond;
    ag_dtype cdt;
} WhereCtx;

static ag_status f_where(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const WhereCtx *w = ctx;
    ag_tensor c = make_at(w->cond, w->scond, w->cdt, false, HERE);
    ag_status st = ag_where(o, c, in[0], in[1]);
    ag_tensor_free(c);
    return st;
}

static void test_where(void) {
    /* cond (2,1), a (3), b (2,3) -> (2,3); cond of either dtype, true where non-zero */
    const Shape sc = SHAPE(2, 1), sa = SHAPE(3), sb = SHAPE(2, 3), so = SHAPE(2, 3);
    const double cond[2] = {-0.5, 0}, a[3] = {1, 2, 3}, b[6] = {-1, -2, -3, -4, -5, -6};
    double want[6];
    for (int64_t i = 0; i < 6; i++)
        want[i] = cond[broadcast_source(i, so, sc)] != 0 ? a[broadcast_source(i, so, sa)] : b[i];
    for (int cdc = 0; cdc < 2; cdc++) {
        ag_dtype cdt = cdc ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("ag_where, cond dtype %d", (int)cdt);
        ag_tensor c = make_at(cond, sc, cdt, false, HERE), ta = MAKE(a, sa), tb = MAKE(b, sb), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_where(&r, c, ta, tb))) {
            EXPECT_TENSOR(r, so, want, "where");
            EXPECT_DTYPE(r, AG_FLOAT64);
            FREE(r);
        }
        WhereCtx w = {cond, sc, cdt};
        GRADCHECK("ag_where", f_where, &w, IN2(a, sa, b, sb));
        FREE(c, ta, tb);
    }
    set_ctx("ag_where");
    /* a cond with a pattern: cond (2,3) */
    {
        const double c6[6] = {1, 0, 1, 0, 0, 2};
        double w6[6];
        for (int i = 0; i < 6; i++) w6[i] = c6[i] != 0 ? a[i % 3] : b[i];
        WhereCtx w = {c6, so, AG_FLOAT64};
        Run r;
        if (RUN(&r, f_where, &w, IN2(a, sa, b, sb), D(1, 2, 3, 4, 5, 6))) {
            ARRAYS_CLOSE("where values", r.out, w6, 6);
            if (CHECK(r.grad[0] && r.grad[1])) {
                ARRAYS_CLOSE("where: gradient to a where cond holds", r.grad[0], D(1, 0, 3 + 6), 3);
                ARRAYS_CLOSE("where: gradient to b elsewhere", r.grad[1], D(0, 2, 0, 4, 5, 0), 6);
            }
        }
        run_free(&r);
    }
    /* no gradient reaches cond, even when it requires grad */
    {
        ag_tensor c = MAKE_RG(D(1, 0, 1), sa), ta = MAKE_RG(a, sa), tb = MAKE(b, sb), r = AG_NULL_TENSOR,
                  sum = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
        if (CHECK_OK(ag_where(&r, c, ta, tb)) && CHECK_OK(ag_sum(&sum, r, NULL, 0, false)) &&
            CHECK_OK(ag_backward(sum, AG_NULL_TENSOR, false, false)) && CHECK_OK(ag_tensor_grad(&g, c))) {
            /* "none to cond": nothing accumulates, so ag_tensor_grad gives AG_NULL_TENSOR */
            CHECKF(g == AG_NULL_TENSOR, "where: cond received a gradient");
        }
        FREE(c, ta, tb, r, sum, g);
    }
    /* errors */
    {
        ag_tensor c = MAKE(cond, sc), ta = MAKE(a, sa), tb = MAKE(b, sb), b32 = MAKE32(b, sb),
                  c4 = MAKE(D(1, 0, 1, 0), SHAPE(4)), a2 = MAKE(D(1, 2), SHAPE(2));
        CHECK_ERR(ag_where(NULL, c, ta, tb), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_where, c4, ta, tb);
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_where, c, a2, tb);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_where, c, ta, b32);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_where, g_stale, ta, tb);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_where, c, g_stale, tb);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_where, c, ta, g_stale);
        FREE(c, ta, tb, b32, c4, a2);
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Reductions: max, min, var, logsumexp                                                       */
/* ========================================================================================== */

typedef enum { RED_MAX, RED_MIN, RED_VAR, RED_LSE } RedOp;
typedef struct {
    RedOp op;
    const int64_t *axes;
    int64_t naxes;
    bool keepdims;
    int64_t correction;
} RedCtx;

static const char *red_name(RedOp op) {
    return op == RED_MAX ? "ag_max" : op == RED_MIN ? "ag_min" : op == RED_VAR ? "ag_var" : "ag_logsumexp";
}

static ag_status red_call(ag_tensor *o, ag_tensor a, const RedCtx *c) {
    switch (c->op) {
    case RED_MAX: return ag_max(o, a, c->axes, c->naxes, c->keepdims);
    case RED_MIN: return ag_min(o, a, c->axes, c->naxes, c->keepdims);
    case RED_VAR: return ag_var(o, a, c->axes, c->naxes, c->correction, c->keepdims);
    case RED_LSE: return ag_logsumexp(o, a, c->axes, c->naxes, c->keepdims);
    }
    return AG_ERR_INTERNAL;
}

static ag_status f_red(ag_tensor *o, const ag_tensor *in, const void *ctx) { return red_call(o, in[0], ctx); }

/* map[flat] = the output element input element `flat` reduces into; returns the result shape. */
static Shape reduce_map(Shape s, const int64_t *axes, int64_t naxes, bool keepdims, int64_t *map) {
    bool red[AG_MAX_NDIM] = {false};
    for (int64_t d = 0; d < s.ndim; d++) red[d] = axes == NULL;
    for (int64_t i = 0; axes && i < naxes; i++) red[axes[i] < 0 ? axes[i] + s.ndim : axes[i]] = true;
    Shape kept = s;
    for (int64_t d = 0; d < s.ndim; d++)
        if (red[d]) kept.d[d] = 1;
    for (int64_t flat = 0; flat < numel_of_shape(s); flat++) {
        int64_t c[AG_MAX_NDIM];
        unravel(flat, s, c);
        for (int64_t d = 0; d < s.ndim; d++)
            if (red[d]) c[d] = 0;
        map[flat] = ravel(c, kept);
    }
    if (keepdims) return kept;
    Shape r = {0, {0}};
    for (int64_t d = 0; d < s.ndim; d++)
        if (!red[d]) r.d[r.ndim++] = s.d[d];
    return r;
}

/* The reduction in plain C; `out` holds numel(s) values. */
static Shape ref_reduce(const RedCtx *c, const double *x, Shape s, double *out) {
    int64_t map[64], n = numel_of_shape(s);
    Shape so = reduce_map(s, c->axes, c->naxes, c->keepdims, map);
    int64_t m = numel_of_shape(so);
    double acc[64], cnt[64], ext[64];
    for (int64_t o = 0; o < m; o++) {
        acc[o] = 0;
        cnt[o] = 0;
        ext[o] = c->op == RED_MIN ? INFINITY : -INFINITY;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t o = map[i];
        cnt[o] += 1;
        acc[o] += x[i];
        if (c->op == RED_MIN ? x[i] < ext[o] : x[i] > ext[o]) ext[o] = x[i];
    }
    for (int64_t o = 0; o < m; o++) out[o] = c->op == RED_VAR ? 0.0 : ext[o];
    for (int64_t i = 0; i < n; i++) {
        int64_t o = map[i];
        if (c->op == RED_VAR) out[o] += (x[i] - acc[o] / cnt[o]) * (x[i] - acc[o] / cnt[o]);
        if (c->op == RED_LSE) acc[o] = 0;
    }
    if (c->op == RED_LSE) {
        for (int64_t i = 0; i < n; i++) acc[map[i]] += exp(x[i] - ext[map[i]]);
        for (int64_t o = 0; o < m; o++) out[o] = ext[o] + log(acc[o]);
    }
    if (c->op == RED_VAR)
        for (int64_t o = 0; o < m; o++) out[o] /= cnt[o] - (double)c->correction;
    return so;
}

static void test_reductions(void) {
    const Shape s = SHAPE(2, 3, 2);
    double x[12];
    fill(x, 12, 0.7);
    static const struct {
        int64_t axes[3];
        int64_t naxes;
        bool null_axes, keepdims;
    } cases[] = {{{0}, 0, true, false}, {{0}, 0, true, true},    {{1}, 1, false, false}, {{-1}, 1, false, true},
                 {{0, 2}, 2, false, false}, {{2, 0}, 2, false, true}, {{0, 1, 2}, 3, false, false}};
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    static const struct {
        RedOp op;
        int64_t corr;
    } ops[] = {{RED_MAX, 0}, {RED_MIN, 0}, {RED_VAR, 0}, {RED_VAR, 1}, {RED_LSE, 0}};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        for (int ci = 0; ci < ncases; ci++) {
            RedCtx c = {ops[k].op, cases[ci].null_axes ? NULL : cases[ci].axes, cases[ci].naxes, cases[ci].keepdims,
                        ops[k].corr};
            set_ctx("%s axes case %d (naxes %" PRId64 ", keepdims %d) correction %" PRId64, red_name(c.op), ci,
                    c.naxes, (int)c.keepdims, c.correction);
            double want[12];
            Shape so = ref_reduce(&c, x, s, want);
            ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
            if (CHECK_OK(red_call(&r, a, &c))) {
                EXPECT_TENSOR(r, so, want, red_name(c.op));
                FREE(r);
            }
            double x32[12], want32[12];
            for (int i = 0; i < 12; i++) x32[i] = round_to(AG_FLOAT32, x[i]);
            ref_reduce(&c, x32, s, want32);
            ag_tensor a32 = MAKE32(x, s);
            if (CHECK_OK(red_call(&r, a32, &c))) {
                EXPECT_TENSOR32(r, so, want32, red_name(c.op));
                EXPECT_DTYPE(r, AG_FLOAT32);
                FREE(r);
            }
            GRADCHECK(red_name(c.op), f_red, &c, IN1(x, s));
            FREE(a, a32);
        }
    }
    /* var with correction 2 over an axis of 3 */
    {
        RedCtx c = {RED_VAR, I64(1), 1, false, 2};
        set_ctx("ag_var correction 2");
        double want[12];
        Shape so = ref_reduce(&c, x, s, want);
        ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
        if (CHECK_OK(red_call(&r, a, &c))) {
            EXPECT_TENSOR(r, so, want, "var correction 2");
            FREE(r);
        }
        GRADCHECK("ag_var correction 2", f_red, &c, IN1(x, s));
        /* hand-computed: var([1,2,3,4]) = 1.25 (population), 5/3 (sample) */
        ag_tensor v = MAKE(D(1, 2, 3, 4), SHAPE(4));
        RedCtx c0 = {RED_VAR, NULL, 0, false, 0}, c1 = {RED_VAR, NULL, 0, false, 1};
        if (CHECK_OK(red_call(&r, v, &c0))) {
            EXPECT_TENSOR(r, S0, D(1.25), "var([1,2,3,4]) correction 0");
            FREE(r);
        }
        if (CHECK_OK(red_call(&r, v, &c1))) {
            EXPECT_TENSOR(r, S0, D(5.0 / 3.0), "var([1,2,3,4]) correction 1");
            FREE(r);
        }
        FREE(a, v);
    }

    /* errors, for each reduction */
    for (int op = RED_MAX; op <= RED_LSE; op++) {
        set_ctx("%s errors", red_name((RedOp)op));
        ag_tensor a = MAKE(x, s);
        RedCtx c = {(RedOp)op, I64(1), 1, false, 0};
        CHECK_ERR(red_call(NULL, a, &c), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, red_call, g_stale, &c);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, red_call, AG_NULL_TENSOR, &c);
        RedCtx bad[] = {{(RedOp)op, I64(3), 1, false, 0},     {(RedOp)op, I64(-4), 1, false, 0},
                        {(RedOp)op, I64(1, 1), 2, false, 0},  {(RedOp)op, I64(1, -2), 2, true, 0},
                        {(RedOp)op, NULL, 1, false, 0},       {(RedOp)op, I64(0), -1, false, 0},
                        {(RedOp)op, I64(0, 1, 2, 0), 4, false, 0}};
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) CHECK_ERR_OUT(AG_ERR_ARGUMENT, red_call, a, &bad[b]);
        FREE(a);
    }
    set_ctx("ag_var correction < 0");
    {
        ag_tensor a = MAKE(x, s);
        RedCtx c = {RED_VAR, I64(1), 1, false, -1};
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, red_call, a, &c);
        c.axes = NULL;
        c.naxes = 0;
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, red_call, a, &c);
        FREE(a);
    }
    /* max/min over zero elements */
    for (int op = RED_MAX; op <= RED_MIN; op++) {
        set_ctx("%s over an empty axis", red_name((RedOp)op));
        ag_tensor e = MAKE(NULL, SHAPE(0, 3)), r = AG_NULL_TENSOR;
        RedCtx all = {(RedOp)op, NULL, 0, false, 0}, ax0 = {(RedOp)op, I64(0), 1, false, 0},
               ax1 = {(RedOp)op, I64(1), 1, false, 0}, ax1k = {(RedOp)op, I64(-1), 1, true, 0};
        CHECK_ERR_OUT(AG_ERR_SHAPE, red_call, e, &all);
        CHECK_ERR_OUT(AG_ERR_SHAPE, red_call, e, &ax0);
        /* reducing the non-empty axis of an empty tensor is fine: no outputs */
        if (CHECK_OK(red_call(&r, e, &ax1))) {
            EXPECT_SHAPE(r, SHAPE(0), "empty result");
            FREE(r);
        }
        if (CHECK_OK(red_call(&r, e, &ax1k))) {
            EXPECT_SHAPE(r, SHAPE(0, 1), "empty result, keepdims");
            FREE(r);
        }
        ag_tensor e2 = MAKE(NULL, SHAPE(2, 0));
        CHECK_ERR_OUT(AG_ERR_SHAPE, red_call, e2, &ax1);
        FREE(e, e2);
    }
    set_ctx("%s", "");

    /* ties: the gradient is split evenly among the tied extremes */
    {
        const Shape st = SHAPE(2, 3);
        const double t[6] = {1, 3, 3, 2, 2, 2};
        RedCtx mx = {RED_MAX, I64(1), 1, false, 0}, mn = {RED_MIN, I64(1), 1, false, 0},
               mxall = {RED_MAX, NULL, 0, false, 0}, mnall = {RED_MIN, NULL, 0, false, 0};
        Run r;
        if (RUN(&r, f_red, &mx, IN1(t, st), D(1, 1))) ARRAYS_CLOSE("max ties: values", r.out, D(3, 2), 2);
        run_free(&r);
        EXPECT_GRAD("max ties split evenly (axis 1)", f_red, &mx, IN1(t, st), D(1, 1), 0,
                    D(0, 0.5, 0.5, 1.0 / 3, 1.0 / 3, 1.0 / 3));
        EXPECT_GRAD("min ties split evenly (axis 1)", f_red, &mn, IN1(t, st), D(2, 3), 0, D(2, 0, 0, 1, 1, 1));
        EXPECT_GRAD("max ties split evenly (all)", f_red, &mxall, IN1(t, st), NULL, 0, D(0, 0.5, 0.5, 0, 0, 0));
        EXPECT_GRAD("min ties split evenly (all)", f_red, &mnall, IN1(D(1, 3, 1, 2, 1, 5), st), NULL, 0,
                    D(1.0 / 3, 0, 1.0 / 3, 0, 1.0 / 3, 0));
    }
    /* logsumexp at +-1000 stays finite; its gradient is softmax */
    {
        RedCtx c = {RED_LSE, I64(1), 1, false, 0};
        const Shape sl = SHAPE(2, 3);
        const double l[6] = {1000, 1000, 999, -1000, -1000, -1001};
        double e1 = exp(-1.0), z = 2 + e1;
        Run r;
        if (RUN(&r, f_red, &c, IN1(l, sl), D(1, 1))) {
            ARRAYS_CLOSE("logsumexp at +-1000", r.out, D(1000 + log(z), -1000 + log(z)), 2);
            if (CHECK(r.grad[0]))
                ARRAYS_CLOSE("logsumexp' at +-1000 = softmax", r.grad[0], D(1 / z, 1 / z, e1 / z, 1 / z, 1 / z, e1 / z),
                             6);
        }
        run_free(&r);
    }
}

/* ========================================================================================== */
/* cumsum                                                                                     */
/* ========================================================================================== */

static ag_status f_cumsum(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    return ag_cumsum(o, in[0], *(const int64_t *)ctx);
}

/* The cumulative sum along `axis` (normalised) in plain C, one running sum per lane. */
static void ref_cumsum(const double *x, Shape s, int64_t axis, double *out) {
    int64_t n = s.d[axis], inner = prod(s, axis + 1, s.ndim), outer = prod(s, 0, axis);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++) {
                int64_t k = (o * n + i) * inner + j;
                acc += x[k];
                out[k] = acc;
            }
        }
}

static void test_cumsum(void) {
    const Shape s = SHAPE(2, 3, 2);
    double x[12], want[12];
    fill(x, 12, 1.9);
    const int64_t axes[] = {0, 1, 2, -1, -2, -3};
    for (size_t k = 0; k < sizeof axes / sizeof axes[0]; k++) {
        int64_t axis = axes[k], norm = axis < 0 ? axis + 3 : axis;
        set_ctx("ag_cumsum axis %" PRId64, axis);
        ref_cumsum(x, s, norm, want);
        ag_tensor a = MAKE(x, s), a32 = MAKE32(x, s), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_cumsum(&r, a, axis))) {
            EXPECT_TENSOR(r, s, want, "cumsum float64");
            FREE(r);
        }
        double x32[12];
        for (int i = 0; i < 12; i++) x32[i] = round_to(AG_FLOAT32, x[i]);
        ref_cumsum(x32, s, norm, want);
        for (int i = 0; i < 12; i++) want[i] = round_to(AG_FLOAT32, want[i]);
        if (CHECK_OK(ag_cumsum(&r, a32, axis))) {
            /* float32: summed in double and rounded once, so exactly the rounded double sums */
            EXPECT_TENSOR_TOL(r, s, want, 0, 0, "cumsum float32");
            EXPECT_DTYPE(r, AG_FLOAT32);
            FREE(r);
        }
        GRADCHECK("ag_cumsum", f_cumsum, &axes[k], IN1(x, s));
        FREE(a, a32);
    }
    /* the gradient is the cumulative sum of the weights from the end: [1, 2, 3, 4] -> [10, 9, 7, 4] */
    static const int64_t ax0 = 0;
    EXPECT_GRAD("cumsum' = reversed cumsum of g", f_cumsum, &ax0, IN1(D(5, -1, 2, 0.5), SHAPE(4)), D(1, 2, 3, 4), 0,
                D(10, 9, 7, 4));
    set_ctx("ag_cumsum 0-d, empty, inf and nan");
    {
        ag_tensor z = MAKE(D(2.5), S0), e = MAKE(NULL, SHAPE(2, 0)), w = MAKE(D(1, INFINITY, 1, NAN, 2, 3), SHAPE(2, 3)),
                  r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_cumsum(&r, z, 0))) {
            EXPECT_TENSOR(r, S0, D(2.5), "0-d, axis 0");
            FREE(r);
        }
        if (CHECK_OK(ag_cumsum(&r, z, -1))) {
            EXPECT_TENSOR(r, S0, D(2.5), "0-d, axis -1");
            FREE(r);
        }
        if (CHECK_OK(ag_cumsum(&r, e, 1))) {
            EXPECT_SHAPE(r, SHAPE(2, 0), "empty");
            FREE(r);
        }
        if (CHECK_OK(ag_cumsum(&r, w, -1))) {
            EXPECT_TENSOR(r, SHAPE(2, 3), D(1, INFINITY, INFINITY, NAN, NAN, NAN), "inf and nan carry on in their lane");
            FREE(r);
        }
        CHECK_ERR(ag_cumsum(NULL, w, 0), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cumsum, w, 2);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cumsum, w, -3);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cumsum, w, INT64_MIN);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cumsum, w, INT64_MAX);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cumsum, z, 1);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_cumsum, g_stale, 0);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_cumsum, AG_NULL_TENSOR, 0);
        FREE(z, e, w);
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Shape operations                                                                           */
/* ========================================================================================== */

typedef struct {
    const int64_t *shape;
    int64_t ndim;
} ShapeCtx;

static ag_status f_reshape(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const ShapeCtx *c = ctx;
    return ag_reshape(o, in[0], c->shape, c->ndim);
}
static ag_status f_expand(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const ShapeCtx *c = ctx;
    return ag_expand(o, in[0], c->shape, c->ndim);
}

static void test_reshape(void) {
    double x[24];
    fill(x, 24, 0.1);
    const Shape s = SHAPE(2, 3, 4);
    ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
    static const struct {
        int64_t shape[4];
        int64_t ndim;
        Shape want;
    } cases[] = {{{4, 6}, 2, {2, {4, 6}}},         {{-1, 4}, 2, {2, {6, 4}}},       {{2, -1, 2}, 3, {3, {2, 6, 2}}},
                 {{24}, 1, {1, {24}}},             {{-1}, 1, {1, {24}}},
                 {{1, 2, 1, 12}, 4, {4, {1, 2, 1, 12}}},
                 {{3, 8, -1}, 3, {3, {3, 8, 1}}}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char b[64];
        set_ctx("ag_reshape to %s", shape_str(cases[k].want, b, sizeof b));
        if (CHECK_OK(ag_reshape(&r, a, cases[k].shape, cases[k].ndim))) {
            EXPECT_TENSOR(r, cases[k].want, x, "reshape keeps the row-major data");
            FREE(r);
        }
    }
    set_ctx("ag_reshape");
    /* rank 0 <-> (1) and (1,1) */
    ag_tensor one = MAKE(D(7.5), SHAPE(1)), sc = MAKE(D(7.5), S0);
    int64_t dummy = 1;
    if (CHECK_OK(ag_reshape(&r, one, &dummy, 0))) {
        EXPECT_TENSOR(r, S0, D(7.5), "reshape (1) -> ()");
        FREE(r);
    }
    if (CHECK_OK(ag_reshape(&r, sc, I64(1, -1), 2))) {
        EXPECT_TENSOR(r, SHAPE(1, 1), D(7.5), "reshape () -> (1,-1)");
        FREE(r);
    }
    /* an empty tensor */
    ag_tensor e = MAKE(NULL, SHAPE(0, 6));
    if (CHECK_OK(ag_reshape(&r, e, I64(3, 0, 2), 3))) {
        EXPECT_SHAPE(r, SHAPE(3, 0, 2), "reshape empty");
        FREE(r);
    }
    /* gradient */
    ShapeCtx c1 = {I64(2, -1, 3), 3}, c2 = {I64(-1), 1};
    GRADCHECK("ag_reshape (2,-1,3)", f_reshape, &c1, IN1(x, SHAPE(3, 4)));
    GRADCHECK("ag_reshape (-1)", f_reshape, &c2, IN1(x, SHAPE(2, 3, 2)));
    /* errors */
    CHECK_ERR(ag_reshape(NULL, a, I64(4, 6), 2), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_reshape, a, I64(-1, -1, 6), 3); /* more than one -1 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_reshape, a, I64(-1, 2, -1), 3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_reshape, a, I64(5, 5), 2);          /* element counts differ */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_reshape, a, I64(-1, 5), 2);         /* 24 is not a multiple of 5 */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_reshape, a, I64(25), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_reshape, a, NULL, 2);            /* shape NULL */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_reshape, a, I64(24), -1);        /* bad ndim */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_reshape, a, I64(1, 1, 1, 1, 1, 1, 1, 1, 24), 9);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_reshape, g_stale, I64(24), 1);
    FREE(a, one, sc, e);
    set_ctx("%s", "");
}

/* A general permutation in plain C: result axis i is a's axis perm[i]. */
static Shape ref_permute(const double *x, Shape s, const int64_t *perm, double *out) {
    Shape so = {s.ndim, {0}};
    for (int64_t i = 0; i < s.ndim; i++) so.d[i] = s.d[perm[i]];
    for (int64_t f = 0; f < numel_of_shape(so); f++) {
        int64_t co[AG_MAX_NDIM], ci[AG_MAX_NDIM];
        unravel(f, so, co);
        for (int64_t i = 0; i < s.ndim; i++) ci[perm[i]] = co[i];
        out[f] = x[ravel(ci, s)];
    }
    return so;
}

typedef struct {
    int64_t d0, d1;
} TransCtx;
static ag_status f_transpose(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const TransCtx *c = ctx;
    return ag_transpose(o, in[0], c->d0, c->d1);
}
typedef struct {
    const int64_t *perm;
    int64_t n;
} PermCtx;
static ag_status f_permute(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const PermCtx *c = ctx;
    return ag_permute(o, in[0], c->perm, c->n);
}

static void test_transpose_permute(void) {
    double x[24], want[24];
    fill(x, 24, 0.2);
    const Shape s = SHAPE(2, 3, 4);
    ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
    static const struct {
        int64_t d0, d1;
        int64_t perm[3];
    } tcases[] = {{0, 2, {2, 1, 0}}, {-1, -3, {2, 1, 0}}, {1, 2, {0, 2, 1}}, {-2, 0, {1, 0, 2}}, {1, 1, {0, 1, 2}}};
    for (size_t k = 0; k < sizeof tcases / sizeof tcases[0]; k++) {
        set_ctx("ag_transpose(%" PRId64 ", %" PRId64 ")", tcases[k].d0, tcases[k].d1);
        Shape so = ref_permute(x, s, tcases[k].perm, want);
        if (CHECK_OK(ag_transpose(&r, a, tcases[k].d0, tcases[k].d1))) {
            EXPECT_TENSOR(r, so, want, "transpose");
            FREE(r);
        }
    }
    set_ctx("ag_transpose");
    ag_tensor m = MAKE(x, SHAPE(2, 3));
    if (CHECK_OK(ag_transpose(&r, m, 0, 1))) {
        EXPECT_TENSOR(r, SHAPE(3, 2), D(x[0], x[3], x[1], x[4], x[2], x[5]), "2-D transpose");
        FREE(r);
    }
    TransCtx tc = {0, 2};
    GRADCHECK("ag_transpose(0, 2)", f_transpose, &tc, IN1(x, SHAPE(2, 3, 2)));
    CHECK_ERR(ag_transpose(NULL, a, 0, 1), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_transpose, a, 3, 0);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_transpose, a, 0, -4);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_transpose, g_stale, 0, 1);

    static const int64_t perms[][3] = {{2, 0, 1}, {1, 2, 0}, {0, 1, 2}, {2, 1, 0}};
    for (size_t k = 0; k < sizeof perms / sizeof perms[0]; k++) {
        set_ctx("ag_permute(%" PRId64 ", %" PRId64 ", %" PRId64 ")", perms[k][0], perms[k][1], perms[k][2]);
        Shape so = ref_permute(x, s, perms[k], want);
        if (CHECK_OK(ag_permute(&r, a, perms[k], 3))) {
            EXPECT_TENSOR(r, so, want, "permute");
            FREE(r);
        }
    }
    set_ctx("ag_permute");
    PermCtx pc = {I64(2, 0, 1), 3};
    GRADCHECK("ag_permute(2, 0, 1)", f_permute, &pc, IN1(x, SHAPE(2, 3, 2)));
    CHECK_ERR(ag_permute(NULL, a, I64(2, 0, 1), 3), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, I64(1, 0), 2);       /* n != rank */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, I64(0, 1, 2, 3), 4);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, I64(0, 0, 1), 3);    /* repeated */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, I64(0, 1, 3), 3);    /* out of range */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, I64(0, 1, -9), 3);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_permute, a, NULL, 3);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_permute, g_stale, I64(0), 1);
    FREE(a, m);
    set_ctx("%s", "");
}

static void test_expand(void) {
    const double x[3] = {1.5, -2, 3};
    ag_tensor a = MAKE(x, SHAPE(3, 1)), r = AG_NULL_TENSOR;
    double want[24];
    const Shape so = SHAPE(2, 3, 4);
    for (int64_t i = 0; i < 24; i++) want[i] = x[broadcast_source(i, so, SHAPE(3, 1))];
    set_ctx("ag_expand (3,1)");
    if (CHECK_OK(ag_expand(&r, a, I64(2, 3, 4), 3))) {
        EXPECT_TENSOR(r, so, want, "expand (3,1) -> (2,3,4)");
        FREE(r);
    }
    if (CHECK_OK(ag_expand(&r, a, I64(2, -1, 4), 3))) {
        EXPECT_TENSOR(r, so, want, "expand (3,1) -> (2,-1,4)");
        FREE(r);
    }
    if (CHECK_OK(ag_expand(&r, a, I64(-1, -1), 2))) {
        EXPECT_TENSOR(r, SHAPE(3, 1), x, "expand (3,1) -> (-1,-1)");
        FREE(r);
    }
    ag_tensor sc = MAKE(D(4.0), S0);
    if (CHECK_OK(ag_expand(&r, sc, I64(2, 2), 2))) {
        EXPECT_TENSOR(r, SHAPE(2, 2), D(4, 4, 4, 4), "expand () -> (2,2)");
        FREE(r);
    }
    ShapeCtx c1 = {I64(2, 3, 4), 3}, c2 = {I64(2, -1, 3), 3};
    GRADCHECK("ag_expand (3,1) -> (2,3,4)", f_expand, &c1, IN1(x, SHAPE(3, 1)));
    GRADCHECK("ag_expand (1,3) -> (2,-1,3)", f_expand, &c2, IN1(x, SHAPE(1, 3)));
    /* the gradient is summed back: with weights 1, each element was used 2*4 = 8 times */
    double ones24[24];
    for (int i = 0; i < 24; i++) ones24[i] = 1.0;
    EXPECT_GRAD("ag_expand gradient summed back", f_expand, &c1, IN1(x, SHAPE(3, 1)), ones24, 0, D(8, 8, 8));
    set_ctx("ag_expand errors");
    CHECK_ERR(ag_expand(NULL, a, I64(2, 3, 4), 3), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_expand, a, I64(2, 4, 4), 3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_expand, a, I64(3), 1); /* fewer axes than a */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_expand, a, I64(3, 1), -1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_expand, a, I64(1, 1, 1, 1, 1, 1, 1, 3, 1), 9);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_expand, a, NULL, 2);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_expand, g_stale, I64(3, 1), 2);
    FREE(a, sc);
    set_ctx("%s", "");
}

typedef struct {
    const int64_t *axes;
    int64_t naxes;
} AxesCtx;
static ag_status f_squeeze(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const AxesCtx *c = ctx;
    return ag_squeeze(o, in[0], c->axes, c->naxes);
}
static ag_status f_unsqueeze(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    return ag_unsqueeze(o, in[0], *(const int64_t *)ctx);
}

static void test_squeeze_unsqueeze(void) {
    double x[6];
    fill(x, 6, 0.4);
    ag_tensor a = MAKE(x, SHAPE(1, 3, 1, 2)), r = AG_NULL_TENSOR;
    static const struct {
        int64_t axes[2];
        int64_t naxes;
        bool null_axes;
        Shape want;
    } cases[] = {{{0}, 0, true, {2, {3, 2}}},    {{0}, 1, false, {3, {3, 1, 2}}},  {{-2}, 1, false, {3, {1, 3, 2}}},
                 {{0, 2}, 2, false, {2, {3, 2}}}, {{2, -4}, 2, false, {2, {3, 2}}}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        set_ctx("ag_squeeze case %zu", k);
        if (CHECK_OK(ag_squeeze(&r, a, cases[k].null_axes ? NULL : cases[k].axes, cases[k].naxes))) {
            EXPECT_TENSOR(r, cases[k].want, x, "squeeze");
            FREE(r);
        }
    }
    set_ctx("ag_squeeze");
    ag_tensor ones = MAKE(D(2.5), SHAPE(1, 1));
    if (CHECK_OK(ag_squeeze(&r, ones, NULL, 0))) {
        EXPECT_TENSOR(r, S0, D(2.5), "squeeze (1,1) -> ()");
        FREE(r);
    }
    AxesCtx c0 = {I64(0), 1}, call = {NULL, 0};
    GRADCHECK("ag_squeeze (0)", f_squeeze, &c0, IN1(x, SHAPE(1, 3, 1, 2)));
    GRADCHECK("ag_squeeze all", f_squeeze, &call, IN1(x, SHAPE(1, 3, 1, 2)));
    CHECK_ERR(ag_squeeze(NULL, a, NULL, 0), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_squeeze, a, I64(1), 1);    /* extent 3 */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_squeeze, a, I64(0, 3), 2); /* extent 2 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_squeeze, a, I64(4), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_squeeze, a, I64(-5), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_squeeze, a, I64(0, 0), 2);  /* repeated */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_squeeze, a, I64(0, -4), 2); /* repeated */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_squeeze, a, NULL, 1);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_squeeze, g_stale, NULL, 0);

    ag_tensor b = MAKE(x, SHAPE(2, 3));
    static const struct {
        int64_t axis;
        Shape want;
    } ucases[] = {{0, {3, {1, 2, 3}}}, {1, {3, {2, 1, 3}}}, {2, {3, {2, 3, 1}}}, {-1, {3, {2, 3, 1}}},
                  {-2, {3, {2, 1, 3}}}, {-3, {3, {1, 2, 3}}}};
    for (size_t k = 0; k < sizeof ucases / sizeof ucases[0]; k++) {
        set_ctx("ag_unsqueeze(%" PRId64 ")", ucases[k].axis);
        if (CHECK_OK(ag_unsqueeze(&r, b, ucases[k].axis))) {
            EXPECT_TENSOR(r, ucases[k].want, x, "unsqueeze");
            FREE(r);
        }
    }
    set_ctx("ag_unsqueeze");
    ag_tensor z = MAKE(D(1.25), S0);
    if (CHECK_OK(ag_unsqueeze(&r, z, 0))) {
        EXPECT_TENSOR(r, SHAPE(1), D(1.25), "unsqueeze () -> (1)");
        FREE(r);
    }
    int64_t ax1 = 1, axm1 = -1;
    GRADCHECK("ag_unsqueeze(1)", f_unsqueeze, &ax1, IN1(x, SHAPE(2, 3)));
    GRADCHECK("ag_unsqueeze(-1)", f_unsqueeze, &axm1, IN1(x, SHAPE(3, 2)));
    CHECK_ERR(ag_unsqueeze(NULL, b, 0), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_unsqueeze, b, 3);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_unsqueeze, b, -4);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_unsqueeze, z, 1);
    ag_tensor r8 = MAKE(D(1.0), SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_unsqueeze, r8, 0); /* rank would exceed AG_MAX_NDIM */
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_unsqueeze, g_stale, 0);
    FREE(a, ones, b, z, r8);
    set_ctx("%s", "");
}

/* concat/stack references */
static Shape ref_concat(const double *const *xs, const Shape *ss, int n, int64_t axis, double *out) {
    Shape so = ss[0];
    so.d[axis] = 0;
    for (int t = 0; t < n; t++) so.d[axis] += ss[t].d[axis];
    int64_t outer = prod(ss[0], 0, axis), inner = prod(ss[0], axis + 1, ss[0].ndim), k = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int t = 0; t < n; t++)
            for (int64_t i = 0; i < ss[t].d[axis] * inner; i++) out[k++] = xs[t][o * ss[t].d[axis] * inner + i];
    return so;
}

static Shape ref_stack(const double *const *xs, Shape s, int n, int64_t axis, double *out) {
    Shape so = {s.ndim + 1, {0}};
    for (int64_t i = 0, j = 0; i < so.ndim; i++) so.d[i] = i == axis ? n : s.d[j++];
    int64_t outer = prod(s, 0, axis), inner = prod(s, axis, s.ndim);
    for (int64_t o = 0; o < outer; o++)
        for (int t = 0; t < n; t++)
            for (int64_t i = 0; i < inner; i++) out[(o * n + t) * inner + i] = xs[t][o * inner + i];
    return so;
}

typedef struct {
    int n;
    int64_t axis;
} CatCtx;
static ag_status f_concat(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const CatCtx *c = ctx;
    return ag_concat(o, in, c->n, c->axis);
}
static ag_status f_stack(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const CatCtx *c = ctx;
    return ag_stack(o, in, c->n, c->axis);
}

static void test_concat_stack(void) {
    double x0[9], x1[9], x2[9], want[64];
    fill(x0, 9, 0.5);
    fill(x1, 9, 1.5);
    fill(x2, 9, 2.5);
    const double *xs[3] = {x0, x1, x2};
    ag_tensor r = AG_NULL_TENSOR;
    {
        /* along axis 0: (2,3) (1,3) (3,3) -> (6,3) */
        const Shape ss[3] = {SHAPE(2, 3), SHAPE(1, 3), SHAPE(3, 3)};
        ag_tensor ts[3] = {MAKE(x0, ss[0]), MAKE(x1, ss[1]), MAKE(x2, ss[2])};
        Shape so = ref_concat(xs, ss, 3, 0, want);
        set_ctx("ag_concat axis 0");
        if (CHECK_OK(ag_concat(&r, ts, 3, 0))) {
            EXPECT_TENSOR(r, so, want, "concat axis 0");
            FREE(r);
        }
        if (CHECK_OK(ag_concat(&r, ts, 3, -2))) {
            EXPECT_TENSOR(r, so, want, "concat axis -2");
            FREE(r);
        }
        if (CHECK_OK(ag_concat(&r, ts, 1, 1))) {
            EXPECT_TENSOR(r, ss[0], x0, "concat of one tensor");
            FREE(r);
        }
        CatCtx c = {3, 0};
        GRADCHECK("ag_concat axis 0", f_concat, &c, IN3(x0, SHAPE(2, 2), x1, SHAPE(1, 2), x2, SHAPE(3, 2)));
        /* errors */
        ag_tensor b4 = MAKE(x0, SHAPE(2, 4)), v3 = MAKE(x0, SHAPE(3)), f32 = MAKE32(x1, ss[1]);
        CHECK_ERR(ag_concat(NULL, ts, 3, 0), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_concat, NULL, 3, 0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_concat, ts, 0, 0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_concat, ts, -1, 0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_concat, ts, 3, 2);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_concat, ts, 3, -3);
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_concat, ((const ag_tensor[]){ts[0], b4}), 2, 0); /* extents off the axis */
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_concat, ((const ag_tensor[]){ts[0], v3}), 2, 0); /* ranks differ */
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_concat, ts, 3, 1);                               /* (2,3),(1,3) along 1 */
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_concat, ((const ag_tensor[]){ts[0], f32}), 2, 0);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_concat, ((const ag_tensor[]){ts[0], g_stale}), 2, 0);
        FREE(ts[0], ts[1], ts[2], b4, v3, f32);
    }
    {
        /* along the last axis: (2,1) (2,2) -> (2,3) */
        const Shape ss[2] = {SHAPE(2, 1), SHAPE(2, 2)};
        ag_tensor ts[2] = {MAKE(x0, ss[0]), MAKE(x1, ss[1])};
        Shape so = ref_concat(xs, ss, 2, 1, want);
        set_ctx("ag_concat axis 1");
        if (CHECK_OK(ag_concat(&r, ts, 2, -1))) {
            EXPECT_TENSOR(r, so, want, "concat axis -1");
            FREE(r);
        }
        CatCtx c = {2, 1};
        GRADCHECK("ag_concat axis 1", f_concat, &c, IN2(x0, ss[0], x1, ss[1]));
        FREE(ts[0], ts[1]);
    }
    {
        const Shape s = SHAPE(2, 3);
        ag_tensor ts[3] = {MAKE(x0, s), MAKE(x1, s), MAKE(x2, s)};
        for (int64_t axis = -3; axis <= 2; axis++) {
            set_ctx("ag_stack axis %" PRId64, axis);
            Shape so = ref_stack(xs, s, 3, axis < 0 ? axis + 3 : axis, want);
            if (CHECK_OK(ag_stack(&r, ts, 3, axis))) {
                EXPECT_TENSOR(r, so, want, "stack");
                FREE(r);
            }
        }
        set_ctx("ag_stack");
        CatCtx c1 = {3, 1}, c0 = {2, 0};
        GRADCHECK("ag_stack axis 1", f_stack, &c1, IN3(x0, s, x1, s, x2, s));
        GRADCHECK("ag_stack axis 0", f_stack, &c0, IN2(x0, SHAPE(3), x1, SHAPE(3)));
        ag_tensor other = MAKE(x0, SHAPE(3, 2)), f32 = MAKE32(x1, s);
        CHECK_ERR(ag_stack(NULL, ts, 3, 0), AG_ERR_ARGUMENT);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_stack, NULL, 3, 0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_stack, ts, 0, 0);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_stack, ts, 3, 3);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_stack, ts, 3, -4);
        CHECK_ERR_OUT(AG_ERR_SHAPE, ag_stack, ((const ag_tensor[]){ts[0], other}), 2, 0);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_stack, ((const ag_tensor[]){ts[0], f32}), 2, 0);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_stack, ((const ag_tensor[]){g_stale, ts[0]}), 2, 0);
        FREE(ts[0], ts[1], ts[2], other, f32);
    }
    set_ctx("%s", "");
}

/* Python's a[start:stop:step] along axis, step > 0. */
static Shape ref_slice(const double *x, Shape s, int64_t axis, int64_t start, int64_t stop, int64_t step,
                       double *out) {
    int64_t len = s.d[axis];
    if (start < 0) start += len;
    if (stop < 0) stop += len;
    start = start < 0 ? 0 : start > len ? len : start;
    stop = stop < 0 ? 0 : stop > len ? len : stop;
    int64_t cnt = stop > start ? (stop - start + step - 1) / step : 0;
    Shape so = s;
    so.d[axis] = cnt;
    int64_t outer = prod(s, 0, axis), inner = prod(s, axis + 1, s.ndim), k = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < cnt; j++)
            for (int64_t i = 0; i < inner; i++) out[k++] = x[(o * len + start + j * step) * inner + i];
    return so;
}

typedef struct {
    int64_t axis, start, stop, step;
} SliceCtx;
static ag_status f_slice(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const SliceCtx *c = ctx;
    return ag_slice(o, in[0], c->axis, c->start, c->stop, c->step);
}

static void test_slice(void) {
    double x[20], want[20];
    fill(x, 20, 0.9);
    const Shape s = SHAPE(5, 4);
    ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
    static const SliceCtx cases[] = {{0, 1, 4, 2},   {0, -3, -1, 1},  {0, -100, 100, 1}, {0, 3, 1, 1},
                                     {1, 0, 4, 3},   {-1, 1, 100, 2}, {0, 4, 100, 1},    {-2, 0, 5, 5},
                                     {1, -1, 4, 1},  {0, 5, 9, 1},    {1, 2, 2, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const SliceCtx *c = &cases[k];
        set_ctx("ag_slice(axis %" PRId64 ", %" PRId64 ":%" PRId64 ":%" PRId64 ")", c->axis, c->start, c->stop, c->step);
        Shape so = ref_slice(x, s, c->axis < 0 ? c->axis + 2 : c->axis, c->start, c->stop, c->step, want);
        if (CHECK_OK(ag_slice(&r, a, c->axis, c->start, c->stop, c->step))) {
            EXPECT_TENSOR(r, so, want, "slice");
            FREE(r);
        }
    }
    set_ctx("ag_slice");
    SliceCtx g1 = {1, 0, 4, 3}, g2 = {0, 1, 4, 2};
    GRADCHECK("ag_slice axis 1 0:4:3", f_slice, &g1, IN1(x, SHAPE(3, 4)));
    GRADCHECK("ag_slice axis 0 1:4:2", f_slice, &g2, IN1(x, SHAPE(5, 2)));
    EXPECT_GRAD("ag_slice gradient is zero off the slice", f_slice, &g2, IN1(x, SHAPE(5, 1)), D(1, 2), 0,
                D(0, 1, 0, 2, 0));
    CHECK_ERR(ag_slice(NULL, a, 0, 0, 2, 1), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_slice, a, 0, 0, 2, 0);  /* step 0 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_slice, a, 0, 4, 0, -1); /* step < 0 */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_slice, a, 2, 0, 2, 1);  /* bad axis */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_slice, a, -3, 0, 2, 1);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_slice, g_stale, 0, 0, 1, 1);
    FREE(a);
    set_ctx("%s", "");
}

typedef struct {
    int64_t axis;
    const int64_t *idx;
    int64_t n;
} IdxCtx;
static ag_status f_index_select(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const IdxCtx *c = ctx;
    return ag_index_select(o, in[0], c->axis, c->idx, c->n);
}

static Shape ref_index_select(const double *x, Shape s, int64_t axis, const int64_t *idx, int64_t n, double *out) {
    int64_t len = s.d[axis], outer = prod(s, 0, axis), inner = prod(s, axis + 1, s.ndim), k = 0;
    Shape so = s;
    so.d[axis] = n;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < n; j++) {
            int64_t ix = idx[j] < 0 ? idx[j] + len : idx[j];
            for (int64_t i = 0; i < inner; i++) out[k++] = x[(o * len + ix) * inner + i];
        }
    return so;
}

static void test_index_select(void) {
    double x[12], want[24];
    fill(x, 12, 1.1);
    const Shape s = SHAPE(4, 3);
    ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
    static const struct {
        int64_t axis;
        int64_t idx[4];
        int64_t n;
    } cases[] = {{0, {2, 0, 2, -1}, 4}, {1, {1}, 1}, {-1, {2, -3}, 2}, {0, {0}, 0}, {-2, {-4, 3, 1}, 3}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        set_ctx("ag_index_select case %zu", k);
        int64_t axis = cases[k].axis < 0 ? cases[k].axis + 2 : cases[k].axis;
        Shape so = ref_index_select(x, s, axis, cases[k].idx, cases[k].n, want);
        if (CHECK_OK(ag_index_select(&r, a, cases[k].axis, cases[k].idx, cases[k].n))) {
            EXPECT_TENSOR(r, so, want, "index_select");
            FREE(r);
        }
    }
    set_ctx("ag_index_select");
    IdxCtx c0 = {0, I64(2, 0, 2, -1), 4}, c1 = {1, I64(2, 2, 0), 3};
    GRADCHECK("ag_index_select axis 0 (repeats)", f_index_select, &c0, IN1(x, s));
    GRADCHECK("ag_index_select axis 1 (repeats)", f_index_select, &c1, IN1(x, s));
    /* repeated indices accumulate: rows 2 (twice), 0, 3 */
    EXPECT_GRAD("ag_index_select repeated indices accumulate", f_index_select, &c0, IN1(x, SHAPE(4, 1)),
                D(1, 10, 100, 1000), 0, D(10, 0, 101, 1000));
    CHECK_ERR(ag_index_select(NULL, a, 0, I64(0), 1), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 0, I64(0, 4), 2);  /* out of range */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 0, I64(-5), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 1, I64(3), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 2, I64(0), 1);     /* bad axis */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, -3, I64(0), 1);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 0, NULL, 2);       /* indices NULL */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_index_select, a, 0, I64(0), -1);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_index_select, g_stale, 0, I64(0), 1);
    FREE(a);
    set_ctx("%s", "");
}

typedef struct {
    int64_t axis;
    const int64_t *index;
    Shape ishape;
} GatherCtx;
static ag_status f_gather(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const GatherCtx *c = ctx;
    return ag_gather(o, in[0], c->axis, c->index, c->ishape.d, c->ishape.ndim);
}

static void ref_gather(const double *x, Shape s, int64_t axis, const int64_t *index, Shape is, double *out) {
    for (int64_t f = 0; f < numel_of_shape(is); f++) {
        int64_t c[AG_MAX_NDIM];
        unravel(f, is, c);
        c[axis] = index[f];
        out[f] = x[ravel(c, s)];
    }
}

static void test_gather(void) {
    double x[12], want[12];
    fill(x, 12, 1.3);
    const Shape s = SHAPE(3, 4);
    ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
    /* i0 has spare entries so that a too-large index_shape never makes the library read past it */
    static const int64_t i0[16] = {0, 2, 1, 2, 1, 0, 0, 2}, i1[16] = {3, 0, 1, 1, 2, 0}, i2[6] = {3, 3, 0, 1, 2, 1};
    const GatherCtx cases[] = {{0, i0, {2, {2, 4}}}, {1, i1, {2, {3, 2}}}, {-1, i2, {2, {2, 3}}},
                               {0, i0, {2, {1, 2}}}, {1, i1, {2, {0, 2}}}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const GatherCtx *c = &cases[k];
        set_ctx("ag_gather case %zu", k);
        ref_gather(x, s, c->axis < 0 ? c->axis + 2 : c->axis, c->index, c->ishape, want);
        if (CHECK_OK(ag_gather(&r, a, c->axis, c->index, c->ishape.d, c->ishape.ndim))) {
            EXPECT_TENSOR(r, c->ishape, want, "gather");
            FREE(r);
        }
    }
    set_ctx("ag_gather");
    GRADCHECK("ag_gather axis 0 (repeats)", f_gather, &cases[0], IN1(x, s));
    GRADCHECK("ag_gather axis 1 (repeats)", f_gather, &cases[1], IN1(x, s));
    GRADCHECK("ag_gather axis -1, smaller index", f_gather, &cases[2], IN1(x, s));
    /* repeats accumulate: axis 0, column 0 takes rows 0 and 1, column 1 rows 2 and 0, ... */
    EXPECT_GRAD("ag_gather repeated indices accumulate", f_gather, &cases[0], IN1(x, s), D(1, 2, 3, 4, 5, 6, 7, 8), 0,
                D(1, 6, 7, 0, 5, 0, 3, 0, 0, 2, 0, 12));
    CHECK_ERR(ag_gather(NULL, a, 0, i0, I64(2, 4), 2), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 0, I64(3, 0, 0, 0), I64(1, 4), 2);  /* index out of range */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 1, I64(0, 4), I64(1, 2), 2);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 1, I64(0, -7), I64(1, 2), 2);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 2, i0, I64(2, 4), 2);               /* bad axis */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, -3, i0, I64(2, 4), 2);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 0, NULL, I64(2, 4), 2);             /* NULL pointers */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_gather, a, 0, i0, NULL, 2);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_gather, a, 1, i1, I64(4, 1), 2);                  /* 4 rows > 3 */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_gather, a, 0, i0, I64(2, 5), 2);                  /* 5 columns > 4 */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_gather, a, 0, i0, I64(4), 1);                     /* rank differs */
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_gather, g_stale, 0, i0, I64(1, 1), 2);
    FREE(a);
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Linear algebra: dot, outer, matmul                                                         */
/* ========================================================================================== */

static ag_status f_dot(ag_tensor *o, const ag_tensor *in, const void *c) { (void)c; return ag_dot(o, in[0], in[1]); }
static ag_status f_outer(ag_tensor *o, const ag_tensor *in, const void *c) {
    (void)c;
    return ag_outer(o, in[0], in[1]);
}
static ag_status f_matmul(ag_tensor *o, const ag_tensor *in, const void *c) {
    (void)c;
    return ag_matmul(o, in[0], in[1]);
}

/* NumPy matmul in plain C; false if the shapes do not fit. */
static bool ref_matmul(const double *a, Shape sa, const double *b, Shape sb, double *out, Shape *so) {
    if (sa.ndim == 0 || sb.ndim == 0) return false;
    Shape pa = sa, pb = sb;
    if (sa.ndim == 1) pa = (Shape){2, {1, sa.d[0]}};
    if (sb.ndim == 1) pb = (Shape){2, {sb.d[0], 1}};
    int64_t m = pa.d[pa.ndim - 2], k = pa.d[pa.ndim - 1], n = pb.d[pb.ndim - 1];
    if (pb.d[pb.ndim - 2] != k) return false;
    Shape ba = {pa.ndim - 2, {0}}, bb = {pb.ndim - 2, {0}}, bo;
    memcpy(ba.d, pa.d, (size_t)ba.ndim * sizeof(int64_t));
    memcpy(bb.d, pb.d, (size_t)bb.ndim * sizeof(int64_t));
    if (!broadcast_shape(ba, bb, &bo)) return false;
    for (int64_t bi = 0; bi < numel_of_shape(bo); bi++) {
        const double *A = a + broadcast_source(bi, bo, ba) * m * k, *B = b + broadcast_source(bi, bo, bb) * k * n;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t p = 0; p < k; p++) acc += A[i * k + p] * B[p * n + j];
                out[(bi * m + i) * n + j] = acc;
            }
    }
    *so = bo;
    if (sa.ndim > 1) so->d[so->ndim++] = m;
    if (sb.ndim > 1) so->d[so->ndim++] = n;
    return true;
}

static void test_dot_outer(void) {
    const double a[4] = {1.5, -2, 0.5, 3}, b[4] = {2, 1, -4, 0.25};
    const Shape s4 = SHAPE(4);
    ag_tensor ta = MAKE(a, s4), tb = MAKE(b, s4), r = AG_NULL_TENSOR;
    set_ctx("ag_dot");
    if (CHECK_OK(ag_dot(&r, ta, tb))) {
        EXPECT_TENSOR(r, S0, D(1.5 * 2 - 2 * 1 + 0.5 * -4 + 3 * 0.25), "dot");
        FREE(r);
    }
    ag_tensor a32 = MAKE32(a, s4), b32 = MAKE32(b, s4);
    if (CHECK_OK(ag_dot(&r, a32, b32))) {
        EXPECT_TENSOR32(r, S0, D(-0.25), "dot float32");
        EXPECT_DTYPE(r, AG_FLOAT32);
        FREE(r);
    }
    GRADCHECK("ag_dot", f_dot, NULL, IN2(a, s4, b, s4));
    EXPECT_GRAD("ag_dot: d/da = b", f_dot, NULL, IN2(a, s4, b, s4), D(2), 0, D(4, 2, -8, 0.5));
    ag_tensor t3 = MAKE(a, SHAPE(3)), m22 = MAKE(a, SHAPE(2, 2)), sc = MAKE(a, S0);
    CHECK_ERR(ag_dot(NULL, ta, tb), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_dot, ta, t3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_dot, m22, ta);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_dot, ta, m22);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_dot, sc, sc);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_dot, ta, b32);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_dot, g_stale, tb);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_dot, ta, g_stale);

    set_ctx("ag_outer");
    double want[12];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = a[i] * b[j];
    if (CHECK_OK(ag_outer(&r, t3, tb))) {
        EXPECT_TENSOR(r, SHAPE(3, 4), want, "outer");
        FREE(r);
    }
    GRADCHECK("ag_outer", f_outer, NULL, IN2(a, SHAPE(3), b, s4));
    CHECK_ERR(ag_outer(NULL, t3, tb), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_outer, m22, tb);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_outer, ta, m22);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_outer, sc, tb);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_outer, a32, tb);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_outer, g_stale, tb);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_outer, ta, g_stale);
    FREE(ta, tb, a32, b32, t3, m22, sc);
    set_ctx("%s", "");
}

static void test_matmul(void) {
    static const struct {
        Shape a, b;
        bool grad;
    } cases[] = {
        {{1, {4}}, {1, {4}}, true},                   /* 1-D @ 1-D -> 0-d */
        {{2, {2, 4}}, {2, {4, 3}}, true},             /* 2-D */
        {{1, {4}}, {2, {4, 3}}, true},                /* 1-D @ 2-D */
        {{2, {2, 4}}, {1, {4}}, true},                /* 2-D @ 1-D */
        {{4, {2, 1, 3, 4}}, {3, {5, 4, 2}}, false},   /* batched, broadcast */
        {{4, {2, 1, 2, 3}}, {3, {3, 3, 2}}, true},    /* batched, broadcast */
        {{1, {3}}, {3, {2, 3, 2}}, true},             /* 1-D @ batched */
        {{3, {2, 2, 3}}, {1, {3}}, true},             /* batched @ 1-D */
        {{3, {1, 2, 3}}, {2, {3, 2}}, true},          /* batched @ 2-D */
    };
    static double a[64], b[64], want[128];
    fill(a, 64, 0.15);
    fill(b, 64, 2.15);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        Shape sa = cases[k].a, sb = cases[k].b, so;
        char b1[64], b2[64];
        set_ctx("ag_matmul %s @ %s", shape_str(sa, b1, sizeof b1), shape_str(sb, b2, sizeof b2));
        if (!CHECK(ref_matmul(a, sa, b, sb, want, &so))) continue;
        ag_tensor ta = MAKE(a, sa), tb = MAKE(b, sb), r = AG_NULL_TENSOR;
        if (CHECK_OK(ag_matmul(&r, ta, tb))) {
            EXPECT_TENSOR(r, so, want, "matmul");
            FREE(r);
        }
        if (cases[k].grad) GRADCHECK("ag_matmul", f_matmul, NULL, IN2(a, sa, b, sb));
        FREE(ta, tb);
    }
    set_ctx("ag_matmul errors");
    ag_tensor m24 = MAKE(a, SHAPE(2, 4)), m33 = MAKE(a, SHAPE(3, 3)), sc = MAKE(a, S0), v3 = MAKE(a, SHAPE(3)),
              b234 = MAKE(a, SHAPE(2, 3, 4)), b345 = MAKE(b, SHAPE(3, 4, 5)), m43 = MAKE(b, SHAPE(4, 3)),
              m43f = MAKE32(b, SHAPE(4, 3));
    CHECK_ERR(ag_matmul(NULL, m24, m43), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m24, m33);   /* inner extents differ */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, sc, v3);     /* 0-d operand */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, v3, sc);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, b234, b345); /* batch axes 2 and 3 */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, v3, m24);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_matmul, m24, m43f);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_matmul, g_stale, m43);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_matmul, m24, g_stale);
    FREE(m24, m33, sc, v3, b234, b345, m43, m43f);
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Neural-network functions                                                                   */
/* ========================================================================================== */

static ag_status f_softmax(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    return ag_softmax(o, in[0], *(const int64_t *)ctx);
}
static ag_status f_log_softmax(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    return ag_log_softmax(o, in[0], *(const int64_t *)ctx);
}

static void ref_softmax(const double *x, Shape s, int64_t axis, bool log_, double *out) {
    int64_t len = s.d[axis], outer = prod(s, 0, axis), inner = prod(s, axis + 1, s.ndim);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, z = 0;
            for (int64_t j = 0; j < len; j++) m = fmax(m, x[(o * len + j) * inner + i]);
            for (int64_t j = 0; j < len; j++) z += exp(x[(o * len + j) * inner + i] - m);
            for (int64_t j = 0; j < len; j++) {
                double v = x[(o * len + j) * inner + i] - m;
                out[(o * len + j) * inner + i] = log_ ? v - log(z) : exp(v) / z;
            }
        }
}

static void test_softmax(void) {
    double x[12], want[12];
    fill(x, 12, 0.6);
    static const struct {
        Shape s;
        int64_t axis;
    } cases[] = {{{2, {3, 4}}, 1}, {{2, {3, 4}}, 0}, {{2, {3, 4}}, -1}, {{3, {2, 3, 2}}, 1}, {{1, {5}}, 0}};
    for (int lg = 0; lg < 2; lg++) {
        const char *name = lg ? "ag_log_softmax" : "ag_softmax";
        fwd_fn f = lg ? f_log_softmax : f_softmax;
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            Shape s = cases[k].s;
            int64_t axis = cases[k].axis;
            char b1[64];
            set_ctx("%s %s axis %" PRId64, name, shape_str(s, b1, sizeof b1), axis);
            ref_softmax(x, s, axis < 0 ? axis + s.ndim : axis, lg, want);
            ag_tensor a = MAKE(x, s), r = AG_NULL_TENSOR;
            if (CHECK_OK(f(&r, &a, &axis))) {
                EXPECT_TENSOR(r, s, want, name);
                FREE(r);
            }
            GRADCHECK(name, f, &axis, IN1(x, s));
            FREE(a);
        }
        set_ctx("%s at logits ~1000", name);
        /* logits around 1000: the same as around 0 */
        const double big[6] = {1000, 1001, 1002, -1000, -1001, -999}, small[6] = {0, 1, 2, -1, -2, 0};
        int64_t axis = 1;
        const Shape s = SHAPE(2, 3);
        ref_softmax(small, s, 1, lg, want);
        Run r;
        if (RUN(&r, f, &axis, IN1(big, s), D(1, -1, 0.5, 2, 0, -1))) {
            ARRAYS_CLOSE(name, r.out, want, 6);
            if (CHECK(r.grad[0])) {
                int bad = 0;
                for (int i = 0; i < 6; i++) bad += !isfinite(r.grad[0][i]);
                CHECKF(bad == 0, "%s: %d non-finite gradients at logits ~1000", name, bad);
            }
        }
        run_free(&r);
        /* errors */
        set_ctx("%s errors", name);
        ag_tensor a = MAKE(x, SHAPE(3, 4)), o = SENTINEL;
        CHECK_ERR(lg ? ag_log_softmax(NULL, a, 0) : ag_softmax(NULL, a, 0), AG_ERR_ARGUMENT);
        CHECK_ERR(lg ? ag_log_softmax(&o, a, 2) : ag_softmax(&o, a, 2), AG_ERR_ARGUMENT);
        CHECK(o == SENTINEL);
        CHECK_ERR(lg ? ag_log_softmax(&o, a, -3) : ag_softmax(&o, a, -3), AG_ERR_ARGUMENT);
        CHECK(o == SENTINEL);
        CHECK_ERR(lg ? ag_log_softmax(&o, g_stale, 0) : ag_softmax(&o, g_stale, 0), AG_ERR_INVALID_HANDLE);
        CHECK(o == SENTINEL);
        FREE(a);
    }
    /* softmax gradient at logits ~1000 equals the one at ~0 (shift invariance) */
    set_ctx("softmax gradient shift invariance");
    {
        int64_t axis = 1;
        const Shape s = SHAPE(2, 3);
        Run r1, r2;
        bool ok1 = RUN(&r1, f_softmax, &axis, IN1(D(1000, 1001, 1002, -1000, -1001, -999), s), D(1, -1, 0.5, 2, 0, -1));
        bool ok2 = RUN(&r2, f_softmax, &axis, IN1(D(0, 1, 2, -1, -2, 0), s), D(1, -1, 0.5, 2, 0, -1));
        if (ok1 && ok2 && CHECK(r1.grad[0] && r2.grad[0]))
            arrays_close_at("softmax gradient at ~1000 vs ~0", r1.grad[0], r2.grad[0], 6, 1e-12, 1e-9, HERE);
        run_free(&r1);
        run_free(&r2);
    }
    set_ctx("%s", "");
}

typedef struct {
    const int64_t *labels;
    int64_t n;
} CeCtx;
static ag_status f_ce(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    const CeCtx *c = ctx;
    return ag_cross_entropy(o, in[0], c->labels, c->n);
}

static void test_cross_entropy(void) {
    double x[12], sm[12];
    fill(x, 12, 0.8);
    const Shape s = SHAPE(3, 4);
    const int64_t labels[3] = {1, 0, 3};
    ref_softmax(x, s, 1, false, sm);
    double loss = 0, grad[12];
    for (int i = 0; i < 3; i++) {
        double m = -INFINITY, z = 0;
        for (int j = 0; j < 4; j++) m = fmax(m, x[i * 4 + j]);
        for (int j = 0; j < 4; j++) z += exp(x[i * 4 + j] - m);
        loss += (m + log(z) - x[i * 4 + labels[i]]) / 3;
        for (int j = 0; j < 4; j++) grad[i * 4 + j] = (sm[i * 4 + j] - (j == labels[i])) / 3;
    }
    set_ctx("ag_cross_entropy");
    CeCtx c = {labels, 3};
    Run r;
    if (RUN(&r, f_ce, &c, IN1(x, s), NULL)) {
        CHECK(r.out_shape.ndim == 0);
        ARRAYS_CLOSE("cross_entropy value", r.out, &loss, 1);
        if (CHECK(r.grad[0])) ARRAYS_CLOSE("cross_entropy gradient = (softmax - onehot) / N", r.grad[0], grad, 12);
    }
    run_free(&r);
    GRADCHECK("ag_cross_entropy", f_ce, &c, IN1(x, s));
    ag_tensor a32 = MAKE32(x, s), out = AG_NULL_TENSOR;
    if (CHECK_OK(ag_cross_entropy(&out, a32, labels, 3))) {
        EXPECT_TENSOR_TOL(out, S0, &loss, 1e-5, 1e-5, "cross_entropy float32");
        EXPECT_DTYPE(out, AG_FLOAT32);
        FREE(out);
    }
    /* logits ~1000: row 0 [1000, 0, -1000] label 2 -> 2000; row 1 [0, 1000, 999] label 2 ->
     * 1000 + log(1 + e^-1) - 999 */
    set_ctx("ag_cross_entropy at logits ~1000");
    {
        CeCtx cb = {I64(2, 2), 2};
        const double big[6] = {1000, 0, -1000, 0, 1000, 999};
        double want = (2000 + 1 + log1p(exp(-1.0))) / 2;
        double p1 = 1 / (1 + exp(-1.0)), p2 = exp(-1.0) / (1 + exp(-1.0));
        Run rb;
        if (RUN(&rb, f_ce, &cb, IN1(big, SHAPE(2, 3)), NULL)) {
            ARRAYS_CLOSE("cross_entropy at ~1000", rb.out, &want, 1);
            if (CHECK(rb.grad[0]))
                ARRAYS_CLOSE("cross_entropy gradient at ~1000", rb.grad[0],
                             D(0.5, 0, -0.5, 0, p1 / 2, (p2 - 1) / 2), 6);
        }
        run_free(&rb);
    }
    set_ctx("ag_cross_entropy errors");
    ag_tensor a = MAKE(x, s), v = MAKE(x, SHAPE(4)), b3 = MAKE(x, SHAPE(1, 3, 4));
    CHECK_ERR(ag_cross_entropy(NULL, a, labels, 3), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy, v, labels, 1);   /* logits not 2-D */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy, b3, labels, 1);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy, a, labels, 2);   /* nlabels != N */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy, a, I64(0, 0, 0, 0), 4);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cross_entropy, a, I64(1, 4, 0), 3);  /* label out of range */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cross_entropy, a, I64(1, -1, 0), 3);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cross_entropy, a, NULL, 3);          /* labels NULL */
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_cross_entropy, g_stale, labels, 3);
    FREE(a, v, b3, a32);
    set_ctx("%s", "");
}

static ag_status f_mse(ag_tensor *o, const ag_tensor *in, const void *c) {
    (void)c;
    return ag_mse_loss(o, in[0], in[1]);
}

static void test_mse(void) {
    double p[6], t[6], want = 0;
    fill(p, 6, 0.2);
    fill(t, 6, 3.2);
    for (int i = 0; i < 6; i++) want += (p[i] - t[i]) * (p[i] - t[i]) / 6;
    const Shape s = SHAPE(2, 3);
    set_ctx("ag_mse_loss");
    ag_tensor tp = MAKE(p, s), tt = MAKE(t, s), r = AG_NULL_TENSOR;
    if (CHECK_OK(ag_mse_loss(&r, tp, tt))) {
        EXPECT_TENSOR(r, S0, &want, "mse_loss");
        FREE(r);
    }
    GRADCHECK("ag_mse_loss", f_mse, NULL, IN2(p, s, t, s));
    double g[6];
    for (int i = 0; i < 6; i++) g[i] = 2 * (p[i] - t[i]) / 6;
    EXPECT_GRAD("ag_mse_loss: d/dpred = 2 (pred - target) / n", f_mse, NULL, IN2(p, s, t, s), NULL, 0, g);
    ag_tensor t3 = MAKE(t, SHAPE(3)), t32 = MAKE32(t, s), t6 = MAKE(t, SHAPE(6));
    CHECK_ERR(ag_mse_loss(NULL, tp, tt), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_mse_loss, tp, t3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_mse_loss, tp, t6);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_mse_loss, tp, t32);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_mse_loss, t32, tp);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_mse_loss, g_stale, tt);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_mse_loss, tp, g_stale);
    FREE(tp, tt, t3, t32, t6);
    set_ctx("%s", "");
}

static ag_status f_linear(ag_tensor *o, const ag_tensor *in, const void *ctx) {
    bool bias = *(const bool *)ctx;
    return ag_linear(o, in[0], in[1], bias ? in[2] : AG_NULL_TENSOR);
}

static void ref_linear(const double *x, int64_t M, int64_t in, const double *w, int64_t out, const double *b,
                       double *y) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t o = 0; o < out; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++) acc += x[m * in + i] * w[o * in + i];
            y[m * out + o] = acc;
        }
}

static void test_linear(void) {
    double x[12], w[12], b[4], want[16];
    fill(x, 12, 0.1);
    fill(w, 12, 1.1);
    fill(b, 4, 2.1);
    const Shape sw = SHAPE(4, 3), sb = SHAPE(4);
    static const struct {
        Shape x, out;
        int64_t M;
    } cases[] = {{{2, {2, 3}}, {2, {2, 4}}, 2}, {{3, {2, 2, 3}}, {3, {2, 2, 4}}, 4}, {{1, {3}}, {1, {4}}, 1}};
    ag_tensor tw = MAKE(w, sw), tb = MAKE(b, sb), r = AG_NULL_TENSOR;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char b1[64];
        set_ctx("ag_linear x %s", shape_str(cases[k].x, b1, sizeof b1));
        ag_tensor tx = MAKE(x, cases[k].x);
        ref_linear(x, cases[k].M, 3, w, 4, b, want);
        if (CHECK_OK(ag_linear(&r, tx, tw, tb))) {
            EXPECT_TENSOR(r, cases[k].out, want, "linear with bias");
            FREE(r);
        }
        ref_linear(x, cases[k].M, 3, w, 4, NULL, want);
        if (CHECK_OK(ag_linear(&r, tx, tw, AG_NULL_TENSOR))) {
            EXPECT_TENSOR(r, cases[k].out, want, "linear without bias");
            FREE(r);
        }
        FREE(tx);
    }
    set_ctx("ag_linear");
    bool yes = true, no = false;
    GRADCHECK("ag_linear with bias", f_linear, &yes, IN3(x, SHAPE(2, 3), w, sw, b, sb));
    GRADCHECK("ag_linear without bias", f_linear, &no, IN2(x, SHAPE(2, 3), w, sw));
    GRADCHECK("ag_linear batched with bias", f_linear, &yes, IN3(x, SHAPE(2, 2, 3), w, SHAPE(2, 3), b, SHAPE(2)));
    set_ctx("ag_linear errors");
    ag_tensor tx = MAKE(x, SHAPE(2, 3)), w42 = MAKE(w, SHAPE(4, 2)), b3 = MAKE(b, SHAPE(3)), w1 = MAKE(w, SHAPE(3)),
              x32 = MAKE32(x, SHAPE(2, 3)), b32 = MAKE32(b, sb);
    CHECK_ERR(ag_linear(NULL, tx, tw, tb), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_linear, tx, w42, tb);            /* in extents differ */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_linear, tx, tw, b3);             /* bias length */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_linear, tx, w1, AG_NULL_TENSOR); /* weight not 2-D */
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_linear, x32, tw, tb);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_linear, tx, tw, b32);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_linear, g_stale, tw, tb);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_linear, tx, g_stale, tb);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_linear, tx, tw, g_stale);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_linear, AG_NULL_TENSOR, tw, tb);
    FREE(tw, tb, tx, w42, b3, w1, x32, b32);
    set_ctx("%s", "");
}

/* ========================================================================================== */

int main(void) {
    test_begin();

    double one = 1.0;
    CHECK_OK(ag_tensor_from_data(&g_stale, &one, NULL, 0, AG_FLOAT64));
    CHECK_OK(ag_tensor_free(g_stale));

    run_group_checking_handles("ag_tensor_full", test_full);
    run_group_checking_handles("ag_tensor_arange", test_arange);
    run_group_checking_handles("ag_tensor_eye", test_eye);
    run_group_checking_handles("ag_tensor_rand_uniform", test_rand_uniform);
    run_group_checking_handles("ag_tensor_rand_normal", test_rand_normal);
    run_group_checking_handles("unary operations and scalar forms", test_unary);
    run_group_checking_handles("unary kinks and extreme inputs", test_unary_special);
    run_group_checking_handles("ag_pow, ag_maximum, ag_minimum, ag_atan2", test_binary);
    run_group_checking_handles("comparisons", test_comparisons);
    run_group_checking_handles("ag_where", test_where);
    run_group_checking_handles("ag_max, ag_min, ag_var, ag_logsumexp", test_reductions);
    run_group_checking_handles("ag_cumsum", test_cumsum);
    run_group_checking_handles("ag_reshape", test_reshape);
    run_group_checking_handles("ag_transpose, ag_permute", test_transpose_permute);
    run_group_checking_handles("ag_expand", test_expand);
    run_group_checking_handles("ag_squeeze, ag_unsqueeze", test_squeeze_unsqueeze);
    run_group_checking_handles("ag_concat, ag_stack", test_concat_stack);
    run_group_checking_handles("ag_slice", test_slice);
    run_group_checking_handles("ag_index_select", test_index_select);
    run_group_checking_handles("ag_gather", test_gather);
    run_group_checking_handles("ag_dot, ag_outer", test_dot_outer);
    run_group_checking_handles("ag_matmul", test_matmul);
    run_group_checking_handles("ag_softmax, ag_log_softmax", test_softmax);
    run_group_checking_handles("ag_cross_entropy", test_cross_entropy);
    run_group_checking_handles("ag_mse_loss", test_mse);
    run_group_checking_handles("ag_linear", test_linear);

    check_no_leaks();
    return test_summary();
}
