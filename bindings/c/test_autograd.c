/*
 * test_autograd.c - tests of Autograd's C interface (include/autograd.h), written against the
 * header alone.
 *
 * Covers every function in the header and every error status each one documents. Forward
 * values are compared with plain-C computations; gradients are compared with central finite
 * differences that re-run the forward pass through the C API with perturbed inputs.
 *
 * Output: the name of each test group, one line per failed check (file:line and what
 * differed), and finally exactly "N passed, M failed". Exit status 0 only if M is 0.
 * Set AG_TEST_VERBOSE=1 to also print every error message the library produced.
 *
 * Build: see scripts/c-tests.sh.
 */
#define _POSIX_C_SOURCE 200809L

#include "test_support.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <threads.h>
#include <unistd.h>

/* ========================================================================================== */
/* Plain-C reference computations                                                             */
/* ========================================================================================== */

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } BinOp;
typedef ag_status (*binop_fn)(ag_tensor *, ag_tensor, ag_tensor);
typedef ag_status (*unop_fn)(ag_tensor *, ag_tensor);

/* The broadcasting binary operations. Their second operand is always given positive test
 * data (denominators); positive_a asks for a positive first operand too. */
static const struct {
    const char *name;
    binop_fn fn;
    BinOp op;
    bool positive_a;
} BINOPS[] = {{"ag_add", ag_add, OP_ADD, false},
              {"ag_sub", ag_sub, OP_SUB, false},
              {"ag_mul", ag_mul, OP_MUL, false},
              {"ag_div", ag_div, OP_DIV, false}};
enum { NBINOPS = sizeof BINOPS / sizeof BINOPS[0] };

static double relu_d(double v) { return v > 0 ? v : 0.0; }
static double neg_d(double v) { return -v; }

/* The unary operations with their plain-C references; `positive` asks for positive test data. */
static const struct {
    const char *name;
    unop_fn fn;
    double (*ref)(double);
    bool positive;
} UNOPS[] = {{"ag_neg", ag_neg, neg_d, false},
             {"ag_exp", ag_exp, exp, false},
             {"ag_log", ag_log, log, true},
             {"ag_relu", ag_relu, relu_d, false}};
enum { NUNOPS = sizeof UNOPS / sizeof UNOPS[0] };

static double apply_binop(BinOp op, double a, double b) {
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    }
    return NAN;
}

static void ref_binop(BinOp op, const double *a, Shape sa, const double *b, Shape sb, double *out,
                      Shape so) {
    for (int64_t i = 0; i < numel_of_shape(so); i++)
        out[i] = apply_binop(op, a[broadcast_source(i, so, sa)], b[broadcast_source(i, so, sb)]);
}

/* Sum or mean over `axes` (NULL: all), with NumPy's rules; returns the result's shape. `out`
 * must hold the product of the kept extents. */
static Shape ref_reduce(const double *x, Shape s, const int64_t *axes, int64_t naxes, bool mean,
                        bool keepdims, double *out) {
    bool reduce[AG_MAX_NDIM] = {false};
    for (int64_t d = 0; d < s.ndim; d++) reduce[d] = axes == NULL;
    for (int64_t i = 0; axes && i < naxes; i++) reduce[axes[i] < 0 ? axes[i] + s.ndim : axes[i]] = true;

    Shape kept = s; /* the keepdims shape */
    int64_t count = 1;
    for (int64_t d = 0; d < s.ndim; d++) {
        if (reduce[d]) {
            kept.d[d] = 1;
            count *= s.d[d];
        }
    }
    for (int64_t o = 0; o < numel_of_shape(kept); o++) out[o] = 0.0;
    for (int64_t flat = 0; flat < numel_of_shape(s); flat++) {
        int64_t rem = flat, o = 0, stride = 1;
        for (int64_t d = s.ndim - 1; d >= 0; d--) {
            int64_t c = rem % s.d[d];
            rem /= s.d[d];
            if (!reduce[d]) o += c * stride;
            stride *= kept.d[d];
        }
        out[o] += x[flat];
    }
    if (mean) {
        double c = (double)count; /* 0/0 gives nan for a mean over no elements */
        for (int64_t o = 0; o < numel_of_shape(kept); o++) out[o] /= c;
    }
    if (keepdims) return kept;
    Shape r = {0, {0}};
    for (int64_t d = 0; d < s.ndim; d++)
        if (!reduce[d]) r.d[r.ndim++] = s.d[d];
    return r;
}

static void ref_matmul(const double *a, const double *b, int64_t m, int64_t k, int64_t n, double *out) {
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double acc = 0.0;
            for (int64_t p = 0; p < k; p++) acc += a[i * k + p] * b[p * n + j];
            out[i * n + j] = acc;
        }
    }
}

/* ========================================================================================== */
/* Gradient checks against central finite differences                                         */
/* ========================================================================================== */

/* gradcheck_at (test_support.h) with this file's steps and tolerances: float64 h 1e-6, atol 1e-7,
 * rtol 1e-6; float32 h 1e-2, atol 2e-3, rtol 1e-2. */
#define GRADCHECK(name, f, ctx, in) gradcheck_at((name), (f), (ctx), (in), AG_FLOAT64, 1e-6, 1e-7, 1e-6, HERE)
#define GRADCHECK32(name, f, ctx, in) gradcheck_at((name), (f), (ctx), (in), AG_FLOAT32, 1e-2, 2e-3, 1e-2, HERE)

/* Forward functions for gradcheck. */
typedef struct {
    binop_fn fn;
} BinCtx;
typedef struct {
    unop_fn fn;
} UnCtx;
typedef struct {
    bool mean;
    const int64_t *axes;
    int64_t naxes;
    bool keepdims;
} ReduceCtx;

static ag_status fwd_binop(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    return ((const BinCtx *)ctx)->fn(out, in[0], in[1]);
}
static ag_status fwd_unop(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    return ((const UnCtx *)ctx)->fn(out, in[0]);
}
static ag_status fwd_reduce(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    const ReduceCtx *c = ctx;
    return (c->mean ? ag_mean : ag_sum)(out, in[0], c->axes, c->naxes, c->keepdims);
}
static ag_status fwd_matmul(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_matmul(out, in[0], in[1]);
}

/* A rank-0 constant of t's dtype. */
static ag_status constant_like(ag_tensor *out, double v, ag_tensor t) {
    ag_dtype dt;
    ag_status st = ag_tensor_dtype(&dt, t);
    if (st != AG_OK) return st;
    float f = (float)v;
    return ag_tensor_from_data(out, dt == AG_FLOAT32 ? (const void *)&f : (const void *)&v, NULL, 0, dt);
}

/* sum(relu(x @ W) * 2), freeing every intermediate before returning. */
static ag_status fwd_example(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor xw = 0, r = 0, two = 0, r2 = 0;
    ag_status st = ag_matmul(&xw, in[0], in[1]);
    if (st == AG_OK) st = ag_relu(&r, xw);
    if (st == AG_OK) st = constant_like(&two, 2.0, in[0]);
    if (st == AG_OK) st = ag_mul(&r2, r, two);
    if (st == AG_OK) st = ag_sum(out, r2, NULL, 0, false);
    ag_tensor_free(xw);
    ag_tensor_free(r);
    ag_tensor_free(two);
    ag_tensor_free(r2);
    return st;
}

/* x * x + x: two paths to x, and one op using the same tensor twice. */
static ag_status fwd_diamond(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor xx = 0;
    ag_status st = ag_mul(&xx, in[0], in[0]);
    if (st == AG_OK) st = ag_add(out, xx, in[0]);
    ag_tensor_free(xx);
    return st;
}

/* mean(log(exp(x) + 1) - x / y, axis -1): a longer chain over two inputs. */
static ag_status fwd_chain(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor e = 0, one = 0, e1 = 0, l = 0, q = 0, d = 0, nq = 0;
    const int64_t axis = -1;
    ag_status st = ag_exp(&e, in[0]);
    if (st == AG_OK) st = constant_like(&one, 1.0, in[0]);
    if (st == AG_OK) st = ag_add(&e1, e, one);
    if (st == AG_OK) st = ag_log(&l, e1);
    if (st == AG_OK) st = ag_div(&q, in[0], in[1]);
    if (st == AG_OK) st = ag_neg(&nq, q);
    if (st == AG_OK) st = ag_add(&d, l, nq);
    if (st == AG_OK) st = ag_mean(out, d, &axis, 1, false);
    ag_tensor tmp[] = {e, one, e1, l, q, d, nq};
    for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++) ag_tensor_free(tmp[i]);
    return st;
}

/* ========================================================================================== */
/* Test groups                                                                                */
/* ========================================================================================== */

static void test_version_and_status(void) {
    /* Runs first: no call has failed on this thread yet. */
    const char *e = ag_last_error();
    CHECKF(e != NULL && strcmp(e, "") == 0, "ag_last_error() before any failure is \"%s\"", e ? e : "(null)");

    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", AG_VERSION_MAJOR, AG_VERSION_MINOR, AG_VERSION_PATCH);
    const char *v = ag_version();
    CHECKF(v != NULL && strcmp(v, want) == 0, "ag_version() is \"%s\", expected \"%s\"", v ? v : "(null)", want);
    CHECK(ag_version() == v); /* static storage */

    static const struct {
        ag_status code;
        const char *name;
    } names[] = {{AG_OK, "AG_OK"},
                 {AG_ERR_INVALID_HANDLE, "AG_ERR_INVALID_HANDLE"},
                 {AG_ERR_ARGUMENT, "AG_ERR_ARGUMENT"},
                 {AG_ERR_SHAPE, "AG_ERR_SHAPE"},
                 {AG_ERR_DTYPE, "AG_ERR_DTYPE"},
                 {AG_ERR_STATE, "AG_ERR_STATE"},
                 {AG_ERR_OUT_OF_MEMORY, "AG_ERR_OUT_OF_MEMORY"},
                 {AG_ERR_CALLBACK, "AG_ERR_CALLBACK"},
                 {AG_ERR_INTERNAL, "AG_ERR_INTERNAL"},
                 {AG_ERR_IO, "AG_ERR_IO"}, {AG_ERR_FORMAT, "AG_ERR_FORMAT"}, {11, "AG_UNKNOWN_STATUS"},
                 {-1, "AG_UNKNOWN_STATUS"},
                 {1000, "AG_UNKNOWN_STATUS"},
                 {INT32_MIN, "AG_UNKNOWN_STATUS"},
                 {INT32_MAX, "AG_UNKNOWN_STATUS"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *n = ag_status_name(names[i].code);
        CHECKF(n != NULL && strcmp(n, names[i].name) == 0, "ag_status_name(%d) is \"%s\", expected \"%s\"",
               (int)names[i].code, n ? n : "(null)", names[i].name);
    }

    int64_t live = -1;
    CHECK_OK(ag_live_handle_count(&live));
    CHECKF(live == 0, "%" PRId64 " live handles at start", live);
    CHECK_ERR(ag_live_handle_count(NULL), AG_ERR_ARGUMENT);

    /* The message stays until the next failing call: successful calls leave it alone. */
    CHECK_ERR(ag_tensor_ndim(NULL, AG_NULL_TENSOR), AG_ERR_ARGUMENT);
    char saved[512];
    snprintf(saved, sizeof saved, "%s", ag_last_error());
    ag_tensor t = SCALAR(1.0);
    int64_t nd;
    CHECK_OK(ag_tensor_ndim(&nd, t));
    CHECK_OK(ag_tensor_free(t));
    CHECKF(strcmp(ag_last_error(), saved) == 0, "successful calls changed ag_last_error() from \"%s\" to \"%s\"",
           saved, ag_last_error());
    CHECK(live_handles() == 0);
}

static void test_creation(void) {
    int64_t base = live_handles();

    /* float64 from data */
    const double d6[6] = {1.5, -2.0, 3.25, 0.0, -0.125, 1e10};
    double src[6];
    memcpy(src, d6, sizeof src);
    ag_tensor t = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_from_data(&t, src, (const int64_t[]){2, 3}, 2, AG_FLOAT64));
    CHECK(t != AG_NULL_TENSOR);
    src[0] = 99.0; /* the tensor holds a copy */
    int64_t nd = -1, shape[AG_MAX_NDIM], numel = -1;
    ag_dtype dt = 0;
    bool rg = true;
    CHECK_OK(ag_tensor_ndim(&nd, t));
    CHECK(nd == 2);
    CHECK_OK(ag_tensor_shape(shape, AG_MAX_NDIM, t));
    CHECK(shape[0] == 2 && shape[1] == 3);
    CHECK_OK(ag_tensor_numel(&numel, t));
    CHECK(numel == 6);
    CHECK_OK(ag_tensor_dtype(&dt, t));
    CHECK(dt == AG_FLOAT64);
    CHECK_OK(ag_tensor_requires_grad(&rg, t));
    CHECK(rg == false);
    EXPECT_TENSOR(t, SHAPE(2, 3), d6, "from_data float64");
    CHECK(live_handles() == base + 1);

    /* float32 from data */
    const float f4[4] = {0.1f, -2.5f, 3.0f, 1e-3f};
    ag_tensor t32 = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_from_data(&t32, f4, (const int64_t[]){4}, 1, AG_FLOAT32));
    CHECK_OK(ag_tensor_dtype(&dt, t32));
    CHECK(dt == AG_FLOAT32);
    float back32[4] = {0};
    CHECK_OK(ag_tensor_copy_data(back32, 4, AG_FLOAT32, t32));
    CHECK(memcmp(back32, f4, sizeof f4) == 0);
    double back64[4] = {0};
    CHECK_OK(ag_tensor_copy_data(back64, 4, AG_FLOAT64, t32)); /* float32 -> float64 */
    bool same = true;
    for (int i = 0; i < 4; i++) same &= back64[i] == (double)f4[i];
    CHECK(same);

    /* zeros and ones, both dtypes */
    for (int k = 0; k < 4; k++) {
        ag_dtype d = k % 2 ? AG_FLOAT32 : AG_FLOAT64;
        bool ones = k >= 2;
        set_ctx("%s %s", ones ? "ones" : "zeros", d == AG_FLOAT32 ? "float32" : "float64");
        ag_tensor z = AG_NULL_TENSOR;
        const int64_t s3[3] = {2, 1, 3};
        CHECK_OK((ones ? ag_tensor_ones : ag_tensor_zeros)(&z, s3, 3, d));
        CHECK_OK(ag_tensor_dtype(&dt, z));
        CHECK(dt == d);
        double want[6];
        for (int i = 0; i < 6; i++) want[i] = ones ? 1.0 : 0.0;
        EXPECT_TENSOR(z, SHAPE(2, 1, 3), want, "zeros/ones");
        CHECK_OK(ag_tensor_requires_grad(&rg, z));
        CHECK(!rg);
        FREE(z);
    }
    set_ctx("%s", "");

    /* rank 0: shape may be NULL */
    double pi = 3.25, item = 0;
    ag_tensor s = AG_NULL_TENSOR, s2 = AG_NULL_TENSOR, z0 = AG_NULL_TENSOR, o0 = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_from_data(&s, &pi, NULL, 0, AG_FLOAT64));
    CHECK_OK(ag_tensor_from_data(&s2, &pi, (const int64_t[]){7}, 0, AG_FLOAT64)); /* shape ignored */
    CHECK_OK(ag_tensor_ndim(&nd, s));
    CHECK(nd == 0);
    CHECK_OK(ag_tensor_numel(&numel, s));
    CHECK(numel == 1);
    CHECK_OK(ag_tensor_shape(NULL, 0, s)); /* out may be NULL when ndim is 0 */
    CHECK_OK(ag_tensor_shape(shape, 0, s));
    CHECK_OK(ag_tensor_item(&item, s));
    CHECK(item == 3.25);
    CHECK_OK(ag_tensor_item(&item, s2));
    CHECK(item == 3.25);
    CHECK_OK(ag_tensor_zeros(&z0, NULL, 0, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&o0, NULL, 0, AG_FLOAT32));
    EXPECT_TENSOR(z0, S0, D(0.0), "rank-0 zeros");
    EXPECT_TENSOR(o0, S0, D(1.0), "rank-0 ones");
    FREE(s, s2, z0, o0);

    /* the largest rank */
    ag_tensor big = AG_NULL_TENSOR;
    const int64_t s8[AG_MAX_NDIM] = {1, 2, 1, 2, 1, 2, 1, 2};
    CHECK_OK(ag_tensor_ones(&big, s8, AG_MAX_NDIM, AG_FLOAT64));
    CHECK_OK(ag_tensor_ndim(&nd, big));
    CHECK(nd == AG_MAX_NDIM);
    CHECK_OK(ag_tensor_numel(&numel, big));
    CHECK(numel == 16);
    FREE(big);

    /* empty tensors: data may be NULL */
    ag_tensor e1 = AG_NULL_TENSOR, e2 = AG_NULL_TENSOR, e3 = AG_NULL_TENSOR, e4 = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_from_data(&e1, NULL, (const int64_t[]){0, 3}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_from_data(&e2, d6, (const int64_t[]){4, 0}, 2, AG_FLOAT32));
    CHECK_OK(ag_tensor_zeros(&e3, (const int64_t[]){2, 0, 4}, 3, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&e4, (const int64_t[]){0}, 1, AG_FLOAT32));
    CHECK_OK(ag_tensor_numel(&numel, e1));
    CHECK(numel == 0);
    CHECK_OK(ag_tensor_shape(shape, AG_MAX_NDIM, e1));
    CHECK(shape[0] == 0 && shape[1] == 3);
    CHECK_OK(ag_tensor_numel(&numel, e3));
    CHECK(numel == 0);
    CHECK_OK(ag_tensor_copy_data(NULL, 0, AG_FLOAT64, e1)); /* out may be NULL when numel is 0 */
    CHECK_OK(ag_tensor_copy_data(NULL, 0, AG_FLOAT32, e4));
    const void *p = NULL;
    CHECK_OK(ag_tensor_data_ptr(&p, e3)); /* may be NULL */
    FREE(e1, e2, e3, e4);

    /* errors of the three creators; out must stay untouched */
    const int64_t s23[2] = {2, 3};
    const double data[8] = {0};
    CHECK_ERR(ag_tensor_from_data(NULL, data, s23, 2, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_zeros(NULL, s23, 2, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_ones(NULL, s23, 2, AG_FLOAT64), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_from_data, NULL, s23, 2, AG_FLOAT64); /* data NULL */
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_tensor_from_data, NULL, NULL, 0, AG_FLOAT32); /* numel 1 */

    static const struct {
        int64_t shape[3];
        int64_t ndim;
        bool shape_null;
        ag_status want;
        const char *what;
    } bad[] = {
        {{2, 3, 0}, -1, false, AG_ERR_ARGUMENT, "ndim -1"},
        {{2, 3, 0}, AG_MAX_NDIM + 1, false, AG_ERR_ARGUMENT, "ndim > AG_MAX_NDIM"},
        {{2, 3, 0}, INT64_MIN, false, AG_ERR_ARGUMENT, "ndim INT64_MIN"},
        {{0, 0, 0}, 2, true, AG_ERR_ARGUMENT, "shape NULL with ndim 2"},
        {{2, -1, 0}, 2, false, AG_ERR_SHAPE, "negative extent"},
        {{-3, 0, 0}, 1, false, AG_ERR_SHAPE, "negative extent alone"},
        {{0, -1, 0}, 2, false, AG_ERR_SHAPE, "negative extent next to 0"},
        {{INT64_MAX, 4, 0}, 2, false, AG_ERR_SHAPE, "{INT64_MAX, 4} overflows"},
        {{INT64_C(1) << 32, INT64_C(1) << 32, 0}, 2, false, AG_ERR_SHAPE, "2^32 * 2^32 overflows"},
        {{INT64_C(1) << 62, 2, 1}, 3, false, AG_ERR_SHAPE, "2^63 overflows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_ctx("%s", bad[i].what);
        const int64_t *sh = bad[i].shape_null ? NULL : bad[i].shape;
        const int64_t big_shape[AG_MAX_NDIM + 1] = {2, 3, 1, 1, 1, 1, 1, 1, 1};
        if (bad[i].ndim == AG_MAX_NDIM + 1) sh = big_shape;
        CHECK_ERR_OUT(bad[i].want, ag_tensor_from_data, data, sh, bad[i].ndim, AG_FLOAT64);
        CHECK_ERR_OUT(bad[i].want, ag_tensor_zeros, sh, bad[i].ndim, AG_FLOAT64);
        CHECK_ERR_OUT(bad[i].want, ag_tensor_ones, sh, bad[i].ndim, AG_FLOAT32);
    }
    const ag_dtype bad_dtypes[] = {0, 5, -1, 100, INT32_MAX}; /* 3 and 4 are AG_INT64 and AG_BOOL */
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof bad_dtypes[0]; i++) {
        set_ctx("dtype %d", (int)bad_dtypes[i]);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_from_data, data, s23, 2, bad_dtypes[i]);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_zeros, s23, 2, bad_dtypes[i]);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tensor_ones, NULL, 0, bad_dtypes[i]);
    }
    set_ctx("%s", "");

    FREE(t, t32);
    CHECK(live_handles() == base);
}

/* Every function that takes a handle must answer `bad` with AG_ERR_INVALID_HANDLE. `good` is a
 * valid rank-0 float64 leaf that requires grad. */
static void expect_invalid_everywhere(ag_tensor bad, ag_tensor good) {
    int64_t i64 = -7, shape[AG_MAX_NDIM];
    ag_dtype dt = -7;
    double buf[4] = {0}, item = -7.0;
    const void *p = &item;
    bool b = true;
    ag_tensor g = SENTINEL;

    if (bad != AG_NULL_TENSOR) CHECK_ERR(ag_tensor_free(bad), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_ndim(&i64, bad), AG_ERR_INVALID_HANDLE);
    CHECK(i64 == -7);
    CHECK_ERR(ag_tensor_shape(shape, AG_MAX_NDIM, bad), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_numel(&i64, bad), AG_ERR_INVALID_HANDLE);
    CHECK(i64 == -7);
    CHECK_ERR(ag_tensor_dtype(&dt, bad), AG_ERR_INVALID_HANDLE);
    CHECK(dt == -7);
    CHECK_ERR(ag_tensor_copy_data(buf, 4, AG_FLOAT64, bad), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_data_ptr(&p, bad), AG_ERR_INVALID_HANDLE);
    CHECK(p == &item);
    CHECK_ERR(ag_tensor_item(&item, bad), AG_ERR_INVALID_HANDLE);
    CHECK(item == -7.0);
    CHECK_ERR(ag_tensor_set_requires_grad(bad, true), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_set_requires_grad(bad, false), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_requires_grad(&b, bad), AG_ERR_INVALID_HANDLE);
    CHECK(b == true);
    CHECK_ERR(ag_tensor_grad(&g, bad), AG_ERR_INVALID_HANDLE);
    CHECK(g == SENTINEL);
    CHECK_ERR(ag_tensor_zero_grad(bad), AG_ERR_INVALID_HANDLE);
    for (int k = 0; k < NBINOPS; k++) {
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, BINOPS[k].fn, bad, good);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, BINOPS[k].fn, good, bad);
        CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, BINOPS[k].fn, bad, bad);
    }
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_neg, bad);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_exp, bad);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_log, bad);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_relu, bad);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_sum, bad, NULL, 0, false);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_mean, bad, NULL, 0, true);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_matmul, bad, good);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_matmul, good, bad);
    CHECK_ERR(ag_backward(bad, AG_NULL_TENSOR, false, false), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_backward(bad, good, true, false), AG_ERR_INVALID_HANDLE);
    if (bad != AG_NULL_TENSOR) CHECK_ERR(ag_backward(good, bad, true, false), AG_ERR_INVALID_HANDLE);
}

static void test_handles(void) {
    int64_t base = live_handles();
    ag_tensor good = MAKE_RG(D(2.0), S0);

    CHECK_OK(ag_tensor_free(AG_NULL_TENSOR)); /* like free(NULL) */
    CHECK(live_handles() == base + 1);

    set_ctx("zero handle");
    expect_invalid_everywhere(AG_NULL_TENSOR, good);

    set_ctx("freed handle");
    ag_tensor freed = MAKE(D(1.0, 2.0), SHAPE(2));
    CHECK_OK(ag_tensor_free(freed));
    CHECK_ERR(ag_tensor_free(freed), AG_ERR_INVALID_HANDLE); /* double free */
    expect_invalid_everywhere(freed, good);

    set_ctx("made-up handles");
    const ag_tensor made_up[] = {1, 2, 12345, 0xdeadbeefULL, UINT64_MAX, UINT64_C(1) << 63,
                                 good ^ UINT64_C(0xffff000000000000), good + (UINT64_C(1) << 40)};
    for (size_t i = 0; i < sizeof made_up / sizeof made_up[0]; i++) {
        set_ctx("made-up handle 0x%" PRIx64, made_up[i]);
        if (made_up[i] == good) continue;
        expect_invalid_everywhere(made_up[i], good);
    }

    /* A freed handle stays invalid when its slot is reused. */
    set_ctx("slot reuse");
    ag_tensor stale[16], fresh[16];
    for (int i = 0; i < 16; i++) stale[i] = MAKE(D(1.0), S0);
    for (int i = 0; i < 16; i++) CHECK_OK(ag_tensor_free(stale[i]));
    for (int i = 0; i < 16; i++) fresh[i] = MAKE(D(5.0), S0);
    int stale_ok = 0, fresh_ok = 0;
    for (int i = 0; i < 16; i++) {
        int64_t nd;
        stale_ok += ag_tensor_ndim(&nd, stale[i]) == AG_ERR_INVALID_HANDLE;
        for (int j = 0; j < 16; j++) stale_ok -= stale[i] == fresh[j];
        double v = 0;
        fresh_ok += ag_tensor_item(&v, fresh[i]) == AG_OK && v == 5.0;
    }
    CHECKF(stale_ok == 16, "%d of 16 freed handles were still accepted or handed out again", 16 - stale_ok);
    CHECK(fresh_ok == 16);
    for (int i = 0; i < 16; i++) CHECK_OK(ag_tensor_free(fresh[i]));
    set_ctx("%s", "");

    FREE(good);
    CHECK(live_handles() == base);
}

static void test_inspection(void) {
    int64_t base = live_handles();
    ag_tensor t = MAKE(D(1, 2, 3, 4, 5, 6), SHAPE(2, 3));
    ag_tensor e = MAKE(NULL, SHAPE(0, 2));

    /* NULL outputs */
    CHECK_ERR(ag_tensor_ndim(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_numel(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_dtype(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_requires_grad(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_grad(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_data_ptr(NULL, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_item(NULL, t), AG_ERR_ARGUMENT);

    /* ag_tensor_shape */
    int64_t shape[4] = {-9, -9, -9, -9};
    CHECK_ERR(ag_tensor_shape(NULL, 2, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_shape(shape, 1, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_shape(shape, 0, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_shape(shape, -1, t), AG_ERR_ARGUMENT);
    CHECK(shape[0] == -9 && shape[1] == -9); /* untouched on failure */
    CHECK_OK(ag_tensor_shape(shape, 4, t));
    CHECK(shape[0] == 2 && shape[1] == 3 && shape[2] == -9 && shape[3] == -9);

    /* ag_tensor_copy_data */
    double buf[8];
    for (int i = 0; i < 8; i++) buf[i] = -9.0;
    CHECK_ERR(ag_tensor_copy_data(NULL, 6, AG_FLOAT64, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_copy_data(buf, 5, AG_FLOAT64, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_copy_data(buf, 0, AG_FLOAT64, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_copy_data(buf, -1, AG_FLOAT64, t), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_copy_data(buf, 8, 0, t), AG_ERR_DTYPE);
    CHECK_ERR(ag_tensor_copy_data(buf, 8, 3, t), AG_ERR_DTYPE);
    CHECK_ERR(ag_tensor_copy_data(buf, 8, -1, t), AG_ERR_DTYPE);
    CHECK(buf[0] == -9.0);
    CHECK_OK(ag_tensor_copy_data(buf, 8, AG_FLOAT64, t)); /* more room than needed */
    CHECK(buf[0] == 1 && buf[5] == 6 && buf[6] == -9.0 && buf[7] == -9.0);
    CHECK_OK(ag_tensor_copy_data(buf, 0, AG_FLOAT64, e));

    /* float64 -> float32 conversion */
    const double conv[5] = {0.1, 1.0 / 3.0, -2.5e-7, 123456789.123, -0.0};
    ag_tensor c = MAKE(conv, SHAPE(5));
    float f[6] = {0, 0, 0, 0, 0, -9.0f};
    CHECK_OK(ag_tensor_copy_data(f, 5, AG_FLOAT32, c));
    bool same = true;
    for (int i = 0; i < 5; i++) same &= f[i] == (float)conv[i];
    CHECKF(same, "float64 -> float32: %.9g %.9g %.9g %.9g", f[0], f[1], f[2], f[3]);
    CHECK(signbit(f[4]) && f[5] == -9.0f);
    CHECK_ERR(ag_tensor_copy_data(f, 4, AG_FLOAT32, c), AG_ERR_ARGUMENT);

    /* ag_tensor_item */
    double item = -9.0;
    ag_tensor one = MAKE(D(-4.5), SHAPE(1, 1, 1));
    ag_tensor one32 = MAKE32(D(0.1), S0);
    CHECK_OK(ag_tensor_item(&item, one));
    CHECK(item == -4.5);
    CHECK_OK(ag_tensor_item(&item, one32));
    CHECK(item == (double)0.1f);
    item = -9.0;
    CHECK_ERR(ag_tensor_item(&item, t), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_item(&item, e), AG_ERR_SHAPE);
    CHECK(item == -9.0);

    /* ag_tensor_data_ptr */
    const void *p = NULL;
    CHECK_OK(ag_tensor_data_ptr(&p, t));
    CHECK(p != NULL && ((const double *)p)[0] == 1.0 && ((const double *)p)[5] == 6.0);
    ag_tensor t32 = MAKE32(D(0.5, -1.25, 3.0), SHAPE(3));
    CHECK_OK(ag_tensor_data_ptr(&p, t32));
    CHECK(p != NULL && ((const float *)p)[0] == 0.5f && ((const float *)p)[1] == -1.25f &&
          ((const float *)p)[2] == 3.0f);
    CHECK_OK(ag_tensor_data_ptr(&p, e));
    /* an op result's data */
    ag_tensor n = AG_NULL_TENSOR;
    CHECK_OK(ag_neg(&n, t));
    CHECK_OK(ag_tensor_data_ptr(&p, n));
    CHECK(p != NULL && ((const double *)p)[0] == -1.0 && ((const double *)p)[5] == -6.0);

    /* A borrowed pointer stays valid while a graph uses the tensor, after its handle is
     * freed (valgrind reports a read of freed memory here). */
    ag_tensor lx = MAKE_RG(D(1.5, -2.5), SHAPE(2)), ly = 0;
    CHECK_OK(ag_mul(&ly, lx, lx)); /* the graph saves lx */
    CHECK_OK(ag_tensor_data_ptr(&p, lx));
    FREE(lx);
    CHECK(p != NULL && ((const double *)p)[0] == 1.5 && ((const double *)p)[1] == -2.5);
    FREE(ly);

    FREE(t, e, c, one, one32, t32, n);
    CHECK(live_handles() == base);
}

static void test_requires_grad(void) {
    int64_t base = live_handles();
    bool rg = true;
    ag_tensor x = MAKE(D(1, -2, 3), SHAPE(3)), y = MAKE(D(4, 5, 6), SHAPE(3));
    CHECK_OK(ag_tensor_requires_grad(&rg, x));
    CHECK(!rg);
    CHECK_OK(ag_tensor_set_requires_grad(x, true));
    CHECK_OK(ag_tensor_requires_grad(&rg, x));
    CHECK(rg);
    CHECK_OK(ag_tensor_set_requires_grad(y, true));
    CHECK_OK(ag_tensor_set_requires_grad(y, false));
    CHECK_OK(ag_tensor_requires_grad(&rg, y));
    CHECK(!rg);

    /* results of operations */
    ag_tensor xy = 0, yy = 0, s = 0, ys = 0, y2 = 0;
    CHECK_OK(ag_mul(&xy, x, y));
    CHECK_OK(ag_mul(&yy, y, y));
    CHECK_OK(ag_add(&y2, y, y));
    CHECK_OK(ag_tensor_requires_grad(&rg, xy));
    CHECK(rg);
    CHECK_OK(ag_tensor_requires_grad(&rg, yy));
    CHECK(!rg);
    CHECK_ERR(ag_tensor_set_requires_grad(xy, false), AG_ERR_STATE);
    CHECK_ERR(ag_tensor_set_requires_grad(xy, true), AG_ERR_STATE);
    /* yy was computed with nothing requiring grad, so no history was recorded: it is a leaf
     * (PyTorch's rule) and its flag may change; xy has history and may not. */
    CHECK_OK(ag_tensor_set_requires_grad(yy, true));
    CHECK_OK(ag_tensor_requires_grad(&rg, yy));
    CHECK(rg);
    CHECK_OK(ag_tensor_set_requires_grad(yy, false));
    CHECK_OK(ag_tensor_requires_grad(&rg, xy));
    CHECK(rg);

    /* a gradient is only there after a backward */
    ag_tensor g = SENTINEL;
    CHECK_OK(ag_tensor_grad(&g, x));
    CHECK(g == AG_NULL_TENSOR);

    /* backward from a root that does not require grad (y2 = y + y is left alone above) */
    CHECK_OK(ag_sum(&ys, y2, NULL, 0, false));
    CHECK_ERR(ag_backward(ys, AG_NULL_TENSOR, false, false), AG_ERR_STATE);
    ag_tensor c = MAKE(D(2.0), S0);
    CHECK_ERR(ag_backward(c, AG_NULL_TENSOR, false, false), AG_ERR_STATE);

    /* y does not require grad: only x gets a gradient */
    CHECK_OK(ag_sum(&s, xy, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&g, x));
    EXPECT_TENSOR(g, SHAPE(3), D(4, 5, 6), "d/dx sum(x*y)");
    ag_tensor gy = SENTINEL;
    CHECK_OK(ag_tensor_grad(&gy, y));
    CHECK(gy == AG_NULL_TENSOR);

    /* a leaf that requires grad can itself be the root */
    ag_tensor r = MAKE_RG(D(7.0), S0), gr = 0;
    CHECK_OK(ag_backward(r, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&gr, r));
    EXPECT_TENSOR(gr, S0, D(1.0), "d/dr r");

    FREE(x, y, xy, yy, y2, s, ys, g, c, r, gr);
    CHECK(live_handles() == base);
}

static void test_binary_forward(void) {
    int64_t base = live_handles();
    static const struct {
        Shape a, b;
    } cases[] = {
        {{2, {2, 3}}, {2, {2, 3}}}, {{2, {3, 1}}, {2, {1, 4}}}, {{2, {2, 3}}, {1, {3}}},
        {{1, {3}}, {2, {2, 3}}},    {{0, {0}}, {2, {2, 3}}},    {{2, {2, 3}}, {0, {0}}},
        {{0, {0}}, {0, {0}}},       {{3, {2, 1, 3}}, {2, {4, 1}}}, {{2, {0, 3}}, {1, {3}}},
        {{2, {1, 1}}, {1, {5}}},    {{3, {2, 0, 1}}, {1, {4}}},
    };
    double a_any[32], a_pos[32], b[32], want[64];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Shape sa = cases[c].a, sb = cases[c].b, so;
        char b1[64], b2[64];
        broadcast_shape(sa, sb, &so);
        fill(a_any, numel_of_shape(sa), 0.1 * (double)c);
        fill_positive(a_pos, numel_of_shape(sa), 0.1 * (double)c);
        fill_positive(b, numel_of_shape(sb), 1.0 + (double)c);
        for (int dt = 0; dt < 2; dt++) {
            ag_dtype dtype = dt ? AG_FLOAT32 : AG_FLOAT64;
            ag_tensor ta_any = make_at(a_any, sa, dtype, false, HERE), ta_pos = make_at(a_pos, sa, dtype, false, HERE);
            ag_tensor tb = make_at(b, sb, dtype, false, HERE);
            for (int k = 0; k < NBINOPS; k++) {
                set_ctx("%s %s %s %s", BINOPS[k].name, shape_str(sa, b1, sizeof b1),
                        shape_str(sb, b2, sizeof b2), dt ? "float32" : "float64");
                const double *a = BINOPS[k].positive_a ? a_pos : a_any;
                ag_tensor ta = BINOPS[k].positive_a ? ta_pos : ta_any;
                double ra[32], rb[32];
                for (int64_t i = 0; i < numel_of_shape(sa); i++) ra[i] = round_to(dtype, a[i]);
                for (int64_t i = 0; i < numel_of_shape(sb); i++) rb[i] = round_to(dtype, b[i]);
                ref_binop(BINOPS[k].op, ra, sa, rb, sb, want, so);
                ag_tensor out = AG_NULL_TENSOR;
                if (CHECK_OK(BINOPS[k].fn(&out, ta, tb))) {
                    ag_dtype odt = 0;
                    CHECK_OK(ag_tensor_dtype(&odt, out));
                    CHECK(odt == dtype);
                    expect_tensor_at(out, so, want, dt ? 1e-6 : 1e-14, dt ? 1e-6 : 1e-14, "value", HERE);
                    FREE(out);
                }
            }
            FREE(ta_any, ta_pos, tb);
        }
    }

    /* IEEE division */
    ag_tensor n = MAKE(D(1.0, -1.0, 0.0, 3.0), SHAPE(4)), z = MAKE(D(0.0, 0.0, 0.0, -0.0), SHAPE(4)), q = 0;
    set_ctx("IEEE division");
    CHECK_OK(ag_div(&q, n, z));
    EXPECT_TENSOR(q, SHAPE(4), D(INFINITY, -INFINITY, NAN, -INFINITY), "x / 0");
    FREE(n, z, q);

    /* errors */
    static const struct {
        Shape a, b;
    } nobroadcast[] = {
        {{2, {2, 3}}, {1, {4}}},       {{2, {3, 2}}, {2, {2, 3}}}, {{3, {2, 3, 4}}, {3, {3, 1, 4}}},
        {{1, {0}}, {1, {2}}},          {{2, {2, 3}}, {2, {3, 3}}},
    };
    ag_tensor f64 = MAKE(D(1, 2, 3), SHAPE(3)), f32 = MAKE32(D(1, 2, 3), SHAPE(3));
    ag_tensor s64 = MAKE(D(1), S0), s32 = MAKE32(D(1), S0);
    for (int k = 0; k < NBINOPS; k++) {
        for (size_t c = 0; c < sizeof nobroadcast / sizeof nobroadcast[0]; c++) {
            char b1[64], b2[64];
            set_ctx("%s %s %s", BINOPS[k].name, shape_str(nobroadcast[c].a, b1, sizeof b1),
                    shape_str(nobroadcast[c].b, b2, sizeof b2));
            ag_tensor ta = 0, tb = 0;
            CHECK_OK(ag_tensor_ones(&ta, nobroadcast[c].a.d, nobroadcast[c].a.ndim, AG_FLOAT64));
            CHECK_OK(ag_tensor_ones(&tb, nobroadcast[c].b.d, nobroadcast[c].b.ndim, AG_FLOAT64));
            CHECK_ERR_OUT(AG_ERR_SHAPE, BINOPS[k].fn, ta, tb);
            CHECK_ERR_OUT(AG_ERR_SHAPE, BINOPS[k].fn, tb, ta);
            FREE(ta, tb);
        }
        set_ctx("%s dtypes", BINOPS[k].name);
        CHECK_ERR_OUT(AG_ERR_DTYPE, BINOPS[k].fn, f64, f32);
        CHECK_ERR_OUT(AG_ERR_DTYPE, BINOPS[k].fn, f32, f64);
        CHECK_ERR_OUT(AG_ERR_DTYPE, BINOPS[k].fn, s32, f64);
        CHECK_ERR_OUT(AG_ERR_DTYPE, BINOPS[k].fn, f64, s32);
        CHECK_ERR_OUT(AG_ERR_DTYPE, BINOPS[k].fn, s64, f32);
        set_ctx("%s NULL out", BINOPS[k].name);
        CHECK_ERR(BINOPS[k].fn(NULL, f64, f64), AG_ERR_ARGUMENT);
    }
    set_ctx("%s", "");
    FREE(f64, f32, s64, s32);
    CHECK(live_handles() == base);
}

static void test_unary_forward(void) {
    int64_t base = live_handles();
    const Shape shapes[] = {SHAPE(2, 3), S0, SHAPE(0, 4), SHAPE(1, 2, 1, 3)};
    double x[16], want[16];
    for (size_t k = 0; k < NUNOPS; k++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            for (int dt = 0; dt < 2; dt++) {
                ag_dtype dtype = dt ? AG_FLOAT32 : AG_FLOAT64;
                char b1[64];
                set_ctx("%s %s %s", UNOPS[k].name, shape_str(shapes[s], b1, sizeof b1), dt ? "float32" : "float64");
                int64_t n = numel_of_shape(shapes[s]);
                (UNOPS[k].positive ? fill_positive : fill)(x, n, 0.7 * (double)(k + s));
                for (int64_t i = 0; i < n; i++) {
                    x[i] = round_to(dtype, x[i]);
                    want[i] = UNOPS[k].ref(x[i]);
                }
                ag_tensor t = make_at(x, shapes[s], dtype, false, HERE), out = 0;
                if (CHECK_OK(UNOPS[k].fn(&out, t))) {
                    ag_dtype odt = 0;
                    CHECK_OK(ag_tensor_dtype(&odt, out));
                    CHECK(odt == dtype);
                    expect_tensor_at(out, shapes[s], want, dt ? 1e-6 : 1e-14, dt ? 1e-6 : 1e-14, "value", HERE);
                    FREE(out);
                }
                FREE(t);
            }
        }
        set_ctx("%s NULL out", UNOPS[k].name);
        ag_tensor t = MAKE(D(1.0), S0);
        CHECK_ERR(UNOPS[k].fn(NULL, t), AG_ERR_ARGUMENT);
        FREE(t);
    }
    set_ctx("special values");
    ag_tensor t = MAKE(D(0.0, -1.0, -0.0, INFINITY), SHAPE(4)), l = 0, r = 0, e = 0;
    CHECK_OK(ag_log(&l, t));
    EXPECT_TENSOR(l, SHAPE(4), D(-INFINITY, NAN, -INFINITY, INFINITY), "log");
    CHECK_OK(ag_relu(&r, t));
    EXPECT_TENSOR(r, SHAPE(4), D(0.0, 0.0, 0.0, INFINITY), "relu");
    ag_tensor big = MAKE(D(1000.0, -1000.0, 0.0), SHAPE(3));
    CHECK_OK(ag_exp(&e, big));
    EXPECT_TENSOR(e, SHAPE(3), D(INFINITY, 0.0, 1.0), "exp");
    set_ctx("%s", "");
    FREE(t, l, r, big, e);
    CHECK(live_handles() == base);
}

static void test_reductions(void) {
    int64_t base = live_handles();
    const Shape s3 = SHAPE(2, 3, 4);
    double x[24], want[24];
    fill(x, 24, 0.5);
    ag_tensor t = MAKE(x, s3);
    Inputs in = {1, {x, NULL}, {s3, S0}};

    for (int mean = 0; mean < 2; mean++) {
        const char *name = mean ? "ag_mean" : "ag_sum";
        for (int mask = 0; mask < 8; mask++) {
            for (int keep = 0; keep < 2; keep++) {
                for (int negative = 0; negative < 2; negative++) {
                    int64_t axes[3], naxes = 0;
                    for (int d = 0; d < 3; d++)
                        if (mask & (1 << d)) axes[naxes++] = negative ? d - 3 : d;
                    /* mask 0: axes NULL, every axis */
                    const int64_t *ap = mask ? axes : NULL;
                    if (!mask && negative) continue;
                    set_ctx("%s axes mask %d%s%s", name, mask, negative ? " negative" : "", keep ? " keepdims" : "");
                    Shape ws = ref_reduce(x, s3, ap, naxes, mean, keep, want);
                    ag_tensor out = AG_NULL_TENSOR;
                    if (CHECK_OK((mean ? ag_mean : ag_sum)(&out, t, ap, naxes, keep))) {
                        expect_tensor_at(out, ws, want, 1e-13, 1e-13, "value", HERE);
                        FREE(out);
                    }
                    ReduceCtx ctx = {mean, ap, naxes, keep};
                    GRADCHECK(name, fwd_reduce, &ctx, &in);
                }
            }
        }
        /* axes in any order */
        set_ctx("%s axes {2, 0}", name);
        const int64_t unordered[2] = {2, 0};
        Shape ws = ref_reduce(x, s3, unordered, 2, mean, false, want);
        ag_tensor out = AG_NULL_TENSOR;
        CHECK_OK((mean ? ag_mean : ag_sum)(&out, t, unordered, 2, false));
        expect_tensor_at(out, ws, want, 1e-13, 1e-13, "value", HERE);
        FREE(out);

        /* errors */
        set_ctx("%s errors", name);
        ag_status (*fn)(ag_tensor *, ag_tensor, const int64_t *, int64_t, bool) = mean ? ag_mean : ag_sum;
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){3}, 1, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){-4}, 1, true);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){0, 3}, 2, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){INT64_MIN}, 1, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){0, 0}, 2, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){1, -2}, 2, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){0, 1, 2, 0}, 4, true);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, NULL, 1, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, (const int64_t[]){0}, -1, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, t, NULL, -1, false);
        CHECK_ERR(fn(NULL, t, NULL, 0, false), AG_ERR_ARGUMENT);

        /* rank 0 */
        set_ctx("%s rank 0", name);
        ag_tensor s = MAKE(D(-2.5), S0), r = 0, rk = 0;
        CHECK_OK(fn(&r, s, NULL, 0, false));
        EXPECT_TENSOR(r, S0, D(-2.5), "reduce a scalar");
        CHECK_OK(fn(&rk, s, NULL, 0, true));
        EXPECT_TENSOR(rk, S0, D(-2.5), "reduce a scalar, keepdims");
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, s, (const int64_t[]){0}, 1, false);
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, fn, s, (const int64_t[]){-1}, 1, false);
        FREE(s, r, rk);

        /* empty */
        set_ctx("%s empty", name);
        ag_tensor e = MAKE(NULL, SHAPE(0, 3)), ea = 0, e0 = 0, e1 = 0;
        CHECK_OK(fn(&ea, e, NULL, 0, false));
        EXPECT_TENSOR(ea, S0, D(mean ? NAN : 0.0), "reduce all of (0,3)");
        CHECK_OK(fn(&e0, e, (const int64_t[]){0}, 1, false));
        EXPECT_TENSOR(e0, SHAPE(3), mean ? D(NAN, NAN, NAN) : D(0, 0, 0), "reduce (0,3) over axis 0");
        CHECK_OK(fn(&e1, e, (const int64_t[]){1}, 1, true));
        EXPECT_TENSOR(e1, SHAPE(0, 1), NULL, "reduce (0,3) over axis 1, keepdims");
        FREE(e, ea, e0, e1);
    }

    /* float32 */
    set_ctx("float32 sum/mean");
    ag_tensor t32 = MAKE32(x, s3), o = 0;
    double x32[24];
    for (int i = 0; i < 24; i++) x32[i] = (double)(float)x[i];
    const int64_t ax1 = 1;
    Shape ws = ref_reduce(x32, s3, &ax1, 1, false, false, want);
    CHECK_OK(ag_sum(&o, t32, &ax1, 1, false));
    expect_tensor_at(o, ws, want, 1e-5, 1e-5, "float32 sum axis 1", HERE);
    FREE(o);
    ws = ref_reduce(x32, s3, NULL, 0, true, true, want);
    CHECK_OK(ag_mean(&o, t32, NULL, 0, true));
    expect_tensor_at(o, ws, want, 1e-5, 1e-5, "float32 mean", HERE);
    FREE(o);
    ReduceCtx c32 = {true, (const int64_t[]){-1, 0}, 2, true};
    GRADCHECK32("float32 mean axes {-1, 0}", fwd_reduce, &c32, &in);
    set_ctx("%s", "");

    FREE(t, t32);
    CHECK(live_handles() == base);
}

static void test_matmul(void) {
    int64_t base = live_handles();
    static const int64_t dims[][3] = {{2, 3, 4}, {17, 33, 9}, {1, 1, 1}, {4, 1, 3}, {3, 5, 1}, {2, 0, 3}, {0, 3, 2}, {64, 65, 63}};
    double a[64 * 65], b[65 * 63], want[64 * 63];
    for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++) {
        int64_t m = dims[c][0], k = dims[c][1], n = dims[c][2];
        fill(a, m * k, 0.3 + (double)c);
        fill(b, k * n, 1.1 * (double)c);
        for (int dt = 0; dt < 2; dt++) {
            ag_dtype dtype = dt ? AG_FLOAT32 : AG_FLOAT64;
            set_ctx("matmul (%" PRId64 ",%" PRId64 ")@(%" PRId64 ",%" PRId64 ") %s", m, k, k, n, dt ? "float32" : "float64");
            double ra[64 * 65], rb[65 * 63];
            for (int64_t i = 0; i < m * k; i++) ra[i] = round_to(dtype, a[i]);
            for (int64_t i = 0; i < k * n; i++) rb[i] = round_to(dtype, b[i]);
            ref_matmul(ra, rb, m, k, n, want);
            ag_tensor ta = make_at(a, SHAPE(m, k), dtype, false, HERE), tb = make_at(b, SHAPE(k, n), dtype, false, HERE), o = 0;
            if (CHECK_OK(ag_matmul(&o, ta, tb))) {
                double tol = dt ? 1e-4 : 1e-12;
                expect_tensor_at(o, SHAPE(m, n), want, tol, tol, "value", HERE);
                FREE(o);
            }
            FREE(ta, tb);
        }
        if (m * k * n <= 60 && m * k * n > 0) {
            Inputs in = {2, {a, b}, {SHAPE(m, k), SHAPE(k, n)}};
            GRADCHECK("matmul", fwd_matmul, NULL, &in);
            if (c == 0) GRADCHECK32("matmul float32", fwd_matmul, NULL, &in);
        }
    }

    /* gradient with an empty inner extent: (2,0)@(0,3) is zeros, gradients are empty */
    set_ctx("matmul with k = 0");
    ag_tensor ea = MAKE_RG(NULL, SHAPE(2, 0)), eb = MAKE_RG(NULL, SHAPE(0, 3)), eo = 0, es = 0, ga = 0;
    CHECK_OK(ag_matmul(&eo, ea, eb));
    EXPECT_TENSOR(eo, SHAPE(2, 3), D(0, 0, 0, 0, 0, 0), "(2,0)@(0,3)");
    CHECK_OK(ag_sum(&es, eo, NULL, 0, false));
    CHECK_OK(ag_backward(es, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&ga, ea));
    if (CHECK(ga != AG_NULL_TENSOR)) EXPECT_TENSOR(ga, SHAPE(2, 0), NULL, "d/da of an empty matmul");
    FREE(ea, eb, eo, es, ga);

    /* errors */
    set_ctx("matmul errors");
    ag_tensor m23 = 0, m45 = 0, v3 = 0, m32 = 0, s = 0, r3 = 0, m22 = 0, f32 = 0;
    CHECK_OK(ag_tensor_ones(&m23, (const int64_t[]){2, 3}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&m45, (const int64_t[]){4, 5}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&v3, (const int64_t[]){3}, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&m32, (const int64_t[]){3, 2}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&s, NULL, 0, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&r3, (const int64_t[]){2, 2, 2}, 3, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&m22, (const int64_t[]){2, 2}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&f32, (const int64_t[]){3, 2}, 2, AG_FLOAT32));
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m23, m45);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m23, m23);
    /* 1-D and batched operands follow NumPy's matmul rules (test_catalogue.c checks their
     * values); here only the ones whose extents do not fit. */
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m32, v3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, v3, m23);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, s, m22);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m22, s);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, r3, m32);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_matmul, m23, r3);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_matmul, m23, f32);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_matmul, f32, m23);
    CHECK_ERR(ag_matmul(NULL, m23, m32), AG_ERR_ARGUMENT);
    set_ctx("%s", "");
    FREE(m23, m45, v3, m32, s, r3, m22, f32);
    CHECK(live_handles() == base);
}

static void test_elementwise_gradients(void) {
    int64_t base = live_handles();
    static const struct {
        Shape a, b;
    } cases[] = {
        {{2, {2, 3}}, {2, {2, 3}}}, {{2, {3, 1}}, {2, {1, 4}}}, {{2, {2, 3}}, {1, {3}}},
        {{1, {3}}, {2, {2, 3}}},    {{0, {0}}, {2, {2, 3}}},    {{2, {2, 3}}, {0, {0}}},
        {{0, {0}}, {0, {0}}},       {{3, {2, 1, 3}}, {2, {4, 1}}},
    };
    double a[32], a_pos[32], b[32];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fill(a, numel_of_shape(cases[c].a), 0.2 + (double)c);
        fill_positive(a_pos, numel_of_shape(cases[c].a), 0.2 + (double)c);
        fill_positive(b, numel_of_shape(cases[c].b), 0.9 * (double)c);
        for (int k = 0; k < NBINOPS; k++) {
            Inputs in = {2, {BINOPS[k].positive_a ? a_pos : a, b}, {cases[c].a, cases[c].b}};
            char b1[64], b2[64];
            set_ctx("%s %s %s", BINOPS[k].name, shape_str(cases[c].a, b1, sizeof b1),
                    shape_str(cases[c].b, b2, sizeof b2));
            BinCtx ctx = {BINOPS[k].fn};
            GRADCHECK(BINOPS[k].name, fwd_binop, &ctx, &in);
            if (c == 2) GRADCHECK32(BINOPS[k].name, fwd_binop, &ctx, &in);
        }
    }

    const Shape ushapes[] = {SHAPE(2, 3), S0};
    for (size_t k = 0; k < NUNOPS; k++) {
        for (size_t s = 0; s < 2; s++) {
            char b1[64];
            set_ctx("%s %s", UNOPS[k].name, shape_str(ushapes[s], b1, sizeof b1));
            (UNOPS[k].positive ? fill_positive : fill)(a, 6, 1.3 * (double)k + (double)s);
            Inputs in = {1, {a, NULL}, {ushapes[s], S0}};
            UnCtx ctx = {UNOPS[k].fn};
            GRADCHECK(UNOPS[k].name, fwd_unop, &ctx, &in);
            if (s == 0) GRADCHECK32(UNOPS[k].name, fwd_unop, &ctx, &in);
        }
    }

    /* relu'(0) is 0 */
    set_ctx("relu at 0");
    ag_tensor x = MAKE_RG(D(-1.0, 0.0, 2.0, -0.0), SHAPE(4)), r = 0, s = 0, g = 0;
    CHECK_OK(ag_relu(&r, x));
    CHECK_OK(ag_sum(&s, r, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&g, x));
    EXPECT_TENSOR(g, SHAPE(4), D(0.0, 0.0, 1.0, 0.0), "d/dx sum(relu(x))");
    FREE(x, r, s, g);

    /* compositions */
    set_ctx("compositions");
    double xw[6], ww[6];
    fill(xw, 6, 0.4);
    fill(ww, 6, 2.2);
    Inputs ex = {2, {xw, ww}, {SHAPE(2, 3), SHAPE(3, 2)}};
    GRADCHECK("sum(relu(x @ W) * 2)", fwd_example, NULL, &ex);
    GRADCHECK32("sum(relu(x @ W) * 2) float32", fwd_example, NULL, &ex);
    Inputs one = {1, {xw, NULL}, {SHAPE(2, 3), S0}};
    GRADCHECK("x * x + x", fwd_diamond, NULL, &one);
    double yw[6];
    fill_positive(yw, 6, 0.1);
    Inputs two = {2, {xw, yw}, {SHAPE(2, 3), SHAPE(2, 3)}};
    GRADCHECK("mean(log(exp(x) + 1) - x / y, -1)", fwd_chain, NULL, &two);
    Inputs bc = {2, {xw, yw}, {SHAPE(2, 3), SHAPE(3)}};
    GRADCHECK("mean(log(exp(x) + 1) - x / y, -1), y broadcast", fwd_chain, NULL, &bc);
    set_ctx("%s", "");
    CHECK(live_handles() == base);
}

/* Reads t's gradient into a malloc'ed buffer (NULL if none). */
static double *grad_values_at(ag_tensor t, Shape *shape, const char *file, int line) {
    ag_tensor g = SENTINEL;
    if (!status_at(ag_tensor_grad(&g, t), AG_OK, "ag_tensor_grad", file, line)) return NULL;
    if (!check_at(g != AG_NULL_TENSOR, file, line, "no gradient")) return NULL;
    double *v = read_at(g, shape, file, line);
    ag_tensor_free(g);
    return v;
}

static void test_backward(void) {
    int64_t base = live_handles();
    const double xv[6] = {1.0, -2.0, 0.5, 3.0, -1.5, 2.0};
    double want[6];
    Shape gs;

    /* accumulation across backward calls on a retained graph, snapshots, zero_grad */
    set_ctx("accumulation");
    ag_tensor x = MAKE_RG(xv, SHAPE(2, 3)), xx = 0, y = 0, g1 = 0, g2 = 0, none = SENTINEL;
    CHECK_OK(ag_mul(&xx, x, x));
    CHECK_OK(ag_sum(&y, xx, NULL, 0, false));
    CHECK_OK(ag_backward(y, AG_NULL_TENSOR, true, false));
    CHECK_OK(ag_tensor_grad(&g1, x));
    for (int i = 0; i < 6; i++) want[i] = 2.0 * xv[i];
    EXPECT_TENSOR(g1, SHAPE(2, 3), want, "after one backward");
    CHECK_OK(ag_backward(y, AG_NULL_TENSOR, true, false));
    CHECK_OK(ag_tensor_grad(&g2, x));
    for (int i = 0; i < 6; i++) want[i] = 4.0 * xv[i];
    EXPECT_TENSOR(g2, SHAPE(2, 3), want, "after two backwards (twice the gradient)");
    for (int i = 0; i < 6; i++) want[i] = 2.0 * xv[i];
    EXPECT_TENSOR(g1, SHAPE(2, 3), want, "the first snapshot is unchanged");
    CHECK_OK(ag_tensor_zero_grad(x));
    CHECK_OK(ag_tensor_grad(&none, x));
    CHECK(none == AG_NULL_TENSOR);
    CHECK_OK(ag_tensor_zero_grad(x)); /* nothing to clear: fine */
    CHECK_OK(ag_backward(y, AG_NULL_TENSOR, false, false)); /* starts from zero; releases the graph */
    double *gv = grad_values_at(x, &gs, HERE);
    if (gv) arrays_close_at("after zero_grad and a third backward", gv, want, 6, 1e-12, 1e-12, HERE);
    free(gv);
    /* the graph was released */
    set_ctx("backward twice without retain_graph");
    CHECK_ERR(ag_backward(y, AG_NULL_TENSOR, false, false), AG_ERR_STATE);
    CHECK_ERR(ag_backward(y, AG_NULL_TENSOR, true, false), AG_ERR_STATE);
    gv = grad_values_at(x, &gs, HERE); /* the failed calls added nothing */
    if (gv) arrays_close_at("after failed backwards", gv, want, 6, 1e-12, 1e-12, HERE);
    free(gv);
    /* a graph that shares a released part with an earlier backward's graph */
    set_ctx("partly released graph");
    ag_tensor w2 = 0, w2s = 0, two = MAKE(D(2.0), S0), xx2 = 0, y3 = 0;
    CHECK_OK(ag_mul(&xx2, x, x));
    CHECK_OK(ag_sum(&y3, xx2, NULL, 0, false));
    CHECK_OK(ag_mul(&w2, xx2, two));
    CHECK_OK(ag_sum(&w2s, w2, NULL, 0, false));
    CHECK_OK(ag_tensor_zero_grad(x));
    CHECK_OK(ag_backward(y3, AG_NULL_TENSOR, false, false)); /* releases xx2's node */
    CHECK_ERR(ag_backward(w2s, AG_NULL_TENSOR, false, false), AG_ERR_STATE);
    FREE(w2, w2s, two, xx2, y3);
    /* a new graph over the same leaf still works, and accumulates */
    set_ctx("new graph");
    ag_tensor y2 = 0;
    CHECK_OK(ag_sum(&y2, x, NULL, 0, false));
    CHECK_OK(ag_backward(y2, AG_NULL_TENSOR, false, false));
    for (int i = 0; i < 6; i++) want[i] = 2.0 * xv[i] + 1.0;
    gv = grad_values_at(x, &gs, HERE);
    if (gv) arrays_close_at("new graph on the same leaf", gv, want, 6, 1e-12, 1e-12, HERE);
    free(gv);
    FREE(x, xx, y, g1, g2, y2);

    /* seeds */
    set_ctx("seeds");
    x = MAKE_RG(xv, SHAPE(2, 3));
    ag_tensor three = MAKE(D(3.0), S0), x3 = 0, g = 0;
    const double sv[6] = {0.5, -1.0, 2.0, 0.25, 1.5, -3.0};
    ag_tensor seed = MAKE(sv, SHAPE(2, 3)), seed_t = MAKE(sv, SHAPE(3, 2)), seed_flat = MAKE(sv, SHAPE(6));
    ag_tensor seed32 = MAKE32(sv, SHAPE(2, 3)), seed_freed = MAKE(sv, SHAPE(2, 3));
    CHECK_OK(ag_tensor_free(seed_freed));
    CHECK_OK(ag_mul(&x3, x, three));
    CHECK_ERR(ag_backward(x3, AG_NULL_TENSOR, false, false), AG_ERR_STATE); /* non-scalar, no seed */
    CHECK_ERR(ag_backward(x3, seed_t, false, false), AG_ERR_SHAPE);
    CHECK_ERR(ag_backward(x3, seed_flat, false, false), AG_ERR_SHAPE);
    CHECK_ERR(ag_backward(x3, three, false, false), AG_ERR_SHAPE);
    CHECK_ERR(ag_backward(x3, seed32, false, false), AG_ERR_DTYPE);
    CHECK_ERR(ag_backward(x3, seed_freed, false, false), AG_ERR_INVALID_HANDLE);
    CHECK_OK(ag_tensor_grad(&g, x));
    CHECK(g == AG_NULL_TENSOR); /* the failures left no gradient behind */
    CHECK_OK(ag_backward(x3, seed, false, false)); /* and did not release the graph */
    for (int i = 0; i < 6; i++) want[i] = 3.0 * sv[i];
    CHECK_OK(ag_tensor_grad(&g, x));
    EXPECT_TENSOR(g, SHAPE(2, 3), want, "d/dx (3x) weighted by the seed");
    FREE(g);

    /* an explicit seed for a scalar root, and a numel-1 root of rank 2 */
    ag_tensor s = 0, half = MAKE(D(2.5), S0), one1 = MAKE(D(2.5), SHAPE(1)), m11 = 0;
    CHECK_OK(ag_tensor_zero_grad(x));
    CHECK_OK(ag_sum(&s, x, NULL, 0, false));
    CHECK_ERR(ag_backward(s, one1, true, false), AG_ERR_SHAPE); /* (1,) is not the root's shape () */
    CHECK_OK(ag_backward(s, half, false, false));
    for (int i = 0; i < 6; i++) want[i] = 2.5;
    gv = grad_values_at(x, &gs, HERE);
    if (gv) arrays_close_at("scalar root with seed 2.5", gv, want, 6, 1e-12, 1e-12, HERE);
    free(gv);
    CHECK_OK(ag_tensor_zero_grad(x));
    CHECK_OK(ag_sum(&m11, x, (const int64_t[]){0, 1}, 2, true)); /* shape (1,1) */
    CHECK_OK(ag_backward(m11, AG_NULL_TENSOR, false, false));
    for (int i = 0; i < 6; i++) want[i] = 1.0;
    gv = grad_values_at(x, &gs, HERE);
    if (gv) arrays_close_at("numel-1 root of shape (1,1) without seed", gv, want, 6, 1e-12, 1e-12, HERE);
    free(gv);
    FREE(x, three, x3, seed, seed_t, seed_flat, seed32, s, half, one1, m11);

    /* several leaves and paths; freeing handles does not break the graph */
    set_ctx("paths and freed handles");
    ag_tensor a = MAKE_RG(D(1.5, -2.0, 0.5), SHAPE(3)), b = MAKE_RG(D(2.0, 3.0, -1.0), SHAPE(3));
    ag_tensor ab = 0, z = 0, zs = 0, ga = 0, gb = 0;
    CHECK_OK(ag_mul(&ab, a, b));
    CHECK_OK(ag_add(&z, ab, a)); /* z = a*b + a */
    CHECK_OK(ag_sum(&zs, z, NULL, 0, false));
    FREE(ab, z); /* intermediates: the graph keeps its own references */
    CHECK_OK(ag_backward(zs, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&ga, a));
    CHECK_OK(ag_tensor_grad(&gb, b));
    EXPECT_TENSOR(ga, SHAPE(3), D(3.0, 4.0, 0.0), "d/da sum(a*b + a) = b + 1");
    EXPECT_TENSOR(gb, SHAPE(3), D(1.5, -2.0, 0.5), "d/db sum(a*b + a) = a");
    FREE(zs, ga, gb);
    /* freeing the leaf's own handle before backward */
    ag_tensor az = 0, azs = 0;
    CHECK_OK(ag_exp(&az, a));
    CHECK_OK(ag_sum(&azs, az, NULL, 0, false));
    FREE(a, az);
    CHECK_OK(ag_backward(azs, AG_NULL_TENSOR, false, false));
    FREE(b, azs);

    /* create_graph: second derivatives */
    set_ctx("create_graph");
    const double cv[3] = {1.5, -2.0, 0.5};
    ag_tensor c = MAKE_RG(cv, SHAPE(3)), c2 = 0, c3 = 0, cs = 0, gc = 0, gcs = 0;
    bool rg = false;
    CHECK_OK(ag_mul(&c2, c, c));
    CHECK_OK(ag_mul(&c3, c2, c));
    CHECK_OK(ag_sum(&cs, c3, NULL, 0, false));
    CHECK_OK(ag_backward(cs, AG_NULL_TENSOR, false, true));
    CHECK_OK(ag_tensor_grad(&gc, c)); /* 3c^2, differentiable */
    EXPECT_TENSOR(gc, SHAPE(3), D(3 * 1.5 * 1.5, 3 * 4.0, 3 * 0.25), "d/dc sum(c^3)");
    CHECK_OK(ag_tensor_requires_grad(&rg, gc));
    CHECK(rg);
    /* create_graph implied retain_graph. Retain it again: the gradient's own graph runs through
     * the forward graph's nodes (c2 = c * c), so releasing them would cut it (as in PyTorch). */
    CHECK_OK(ag_backward(cs, AG_NULL_TENSOR, true, false));
    gv = grad_values_at(c, &gs, HERE);
    const double twice[3] = {6 * 1.5 * 1.5, 6 * 4.0, 6 * 0.25};
    if (gv) arrays_close_at("second backward after create_graph", gv, twice, 3, 1e-12, 1e-12, HERE);
    free(gv);
    CHECK_OK(ag_tensor_zero_grad(c));
    if (CHECK_OK(ag_sum(&gcs, gc, NULL, 0, false))) {
        CHECK_OK(ag_backward(gcs, AG_NULL_TENSOR, false, false));
        gv = grad_values_at(c, &gs, HERE);
        const double second[3] = {6 * 1.5, 6 * -2.0, 6 * 0.5};
        if (gv) arrays_close_at("d/dc sum(d/dc sum(c^3)) = 6c", gv, second, 3, 1e-12, 1e-12, HERE);
        free(gv);
    }
    FREE(c, c2, c3, cs, gc, gcs);

    /* float32 gradients keep their dtype */
    set_ctx("float32 gradient");
    ag_tensor f = make_at(D(1.0, 2.0), SHAPE(2), AG_FLOAT32, true, HERE), ff = 0, fs = 0, gf = 0;
    ag_dtype dt = 0;
    CHECK_OK(ag_mul(&ff, f, f));
    CHECK_OK(ag_sum(&fs, ff, NULL, 0, false));
    CHECK_OK(ag_backward(fs, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&gf, f));
    CHECK_OK(ag_tensor_dtype(&dt, gf));
    CHECK(dt == AG_FLOAT32);
    expect_tensor_at(gf, SHAPE(2), D(2.0, 4.0), 1e-6, 1e-6, "d/df sum(f*f)", HERE);
    FREE(f, ff, fs, gf);

    /* empty leaves */
    set_ctx("empty leaf");
    ag_tensor e = MAKE_RG(NULL, SHAPE(0, 3)), es = 0, ge = 0;
    CHECK_OK(ag_sum(&es, e, NULL, 0, false));
    EXPECT_TENSOR(es, S0, D(0.0), "sum of (0,3)");
    CHECK_OK(ag_backward(es, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_tensor_grad(&ge, e));
    if (CHECK(ge != AG_NULL_TENSOR)) EXPECT_TENSOR(ge, SHAPE(0, 3), NULL, "gradient of an empty leaf");
    FREE(e, es, ge);
    set_ctx("%s", "");
    CHECK(live_handles() == base);
}

/* ------------------------------------------------------------------------------------------ */
/* Threads: per-thread error messages, a shared handle table                                  */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    bool empty_at_start;
    bool got_error;
    bool message_set;
    int failures;
} ThreadReport;

static int thread_errors(void *arg) {
    ThreadReport *r = arg;
    const char *e = ag_last_error();
    r->empty_at_start = e != NULL && e[0] == '\0';
    r->got_error = ag_tensor_ndim(NULL, AG_NULL_TENSOR) == AG_ERR_ARGUMENT;
    e = ag_last_error();
    r->message_set = e != NULL && e[0] != '\0';
    return 0;
}

static int thread_churn(void *arg) {
    ThreadReport *r = arg;
    for (int i = 0; i < 200; i++) {
        double v[4] = {i, i + 1.0, -i, 0.5}, out[4] = {0};
        ag_tensor t = 0, s = 0;
        r->failures += ag_tensor_from_data(&t, v, (const int64_t[]){4}, 1, AG_FLOAT64) != AG_OK;
        r->failures += ag_add(&s, t, t) != AG_OK;
        r->failures += ag_tensor_copy_data(out, 4, AG_FLOAT64, s) != AG_OK;
        for (int k = 0; k < 4; k++) r->failures += out[k] != 2.0 * v[k];
        r->failures += ag_tensor_free(t) != AG_OK;
        r->failures += ag_tensor_free(s) != AG_OK;
        r->failures += ag_tensor_free(s) != AG_ERR_INVALID_HANDLE;
    }
    return 0;
}

static void test_threads(void) {
    int64_t base = live_handles();
    ag_tensor m = MAKE(D(1, 2), SHAPE(1, 2)), bad = SENTINEL;
    CHECK_ERR(ag_matmul(&bad, m, m), AG_ERR_SHAPE);
    char saved[512];
    snprintf(saved, sizeof saved, "%s", ag_last_error());

    ThreadReport r = {false, false, false, 0};
    thrd_t th;
    if (CHECK(thrd_create(&th, thread_errors, &r) == thrd_success)) {
        thrd_join(th, NULL);
        CHECKF(r.empty_at_start, "a new thread's ag_last_error() is not empty");
        CHECK(r.got_error && r.message_set);
        CHECKF(strcmp(ag_last_error(), saved) == 0, "another thread's failure changed this thread's message to \"%s\"",
               ag_last_error());
    }

    enum { NT = 4 };
    ThreadReport reports[NT];
    thrd_t threads[NT];
    int started = 0;
    for (int i = 0; i < NT; i++) {
        reports[i] = (ThreadReport){false, false, false, 0};
        started += thrd_create(&threads[i], thread_churn, &reports[i]) == thrd_success;
    }
    CHECK(started == NT);
    int failures = 0;
    for (int i = 0; i < started; i++) {
        thrd_join(threads[i], NULL);
        failures += reports[i].failures;
    }
    CHECKF(failures == 0, "%d failures while %d threads created and freed tensors", failures, NT);
    FREE(m);
    CHECK(live_handles() == base);
}

/* ------------------------------------------------------------------------------------------ */
/* Allocation failures, run in a child process so that a crash is reported, not suffered      */
/* ------------------------------------------------------------------------------------------ */

static int child_create(int which) {
    /* 2^50 elements: 4-8 PiB, more than any address space holds. */
    const int64_t huge[1] = {INT64_C(1) << 50};
    const int64_t wrap[2] = {INT64_C(1) << 60, 4}; /* 2^62 elements: the byte count overflows */
    ag_tensor t = SENTINEL;
    ag_status st;
    switch (which) {
    case 0: st = ag_tensor_zeros(&t, huge, 1, AG_FLOAT64); break;
    case 1: st = ag_tensor_ones(&t, huge, 1, AG_FLOAT32); break;
    default: st = ag_tensor_zeros(&t, wrap, 2, AG_FLOAT64); break;
    }
    if (st != AG_OK && t != SENTINEL) return 50;            /* wrote its output */
    if (st != AG_OK && ag_last_error()[0] == '\0') return 51; /* no message */
    return st;
}

static void test_out_of_memory(void) {
    static const char *const what[] = {"zeros (2^50) float64", "ones (2^50) float32", "zeros (2^60, 4) float64"};
    for (int which = 0; which < 3; which++) {
        set_ctx("%s", what[which]);
        fflush(stdout);
        pid_t pid = fork();
        if (!CHECK(pid >= 0)) continue;
        if (pid == 0) _exit(child_create(which));
        int wstatus = 0;
        if (!CHECK(waitpid(pid, &wstatus, 0) == pid)) continue;
        if (!CHECKF(WIFEXITED(wstatus), "the call crashed the process (signal %d)",
                    WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : -1))
            continue;
        int code = WEXITSTATUS(wstatus);
        if (which < 2) {
            CHECKF(code == AG_ERR_OUT_OF_MEMORY, "returned %s (exit %d), expected AG_ERR_OUT_OF_MEMORY",
                   ag_status_name(code), code);
        } else {
            CHECKF(code == AG_ERR_OUT_OF_MEMORY || code == AG_ERR_SHAPE,
                   "returned %s (exit %d), expected AG_ERR_SHAPE or AG_ERR_OUT_OF_MEMORY", ag_status_name(code), code);
        }
    }
    set_ctx("%s", "");
}

/* ------------------------------------------------------------------------------------------ */
/* Deep graphs: backward and releasing a long chain must not overflow the stack. Run in a      */
/* child process, so that a crash is reported.                                                */
/* ------------------------------------------------------------------------------------------ */

enum { DEPTH = 100000 };

/* x -> neg -> neg -> ... (DEPTH times); only the chain's end keeps a handle. */
static int build_chain(ag_tensor x, ag_tensor *end) {
    ag_tensor cur = x;
    for (int i = 0; i < DEPTH; i++) {
        ag_tensor next = AG_NULL_TENSOR;
        if (ag_neg(&next, cur) != AG_OK) return 11;
        if (cur != x && ag_tensor_free(cur) != AG_OK) return 12;
        cur = next;
    }
    *end = cur;
    return 0;
}

static int child_deep(int which) {
    int64_t before = -1, after = -1;
    double v = 1.5, got = 0.0;
    ag_tensor x = AG_NULL_TENSOR, end = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
    if (ag_live_handle_count(&before) != AG_OK) return 10;
    if (ag_tensor_from_data(&x, &v, NULL, 0, AG_FLOAT64) != AG_OK) return 10;
    if (ag_tensor_set_requires_grad(x, true) != AG_OK) return 10;
    int rc = build_chain(x, &end);
    if (rc) return rc;
    if (which == 0) {
        if (ag_backward(end, AG_NULL_TENSOR, false, false) != AG_OK) return 13;
        if (ag_tensor_grad(&g, x) != AG_OK || ag_tensor_item(&got, g) != AG_OK) return 14;
        if (got != 1.0) return 15; /* an even number of negations */
    }
    /* which == 1: dropped without a backward, the whole recorded chain is released here */
    if (ag_tensor_free(end) != AG_OK || ag_tensor_free(g) != AG_OK || ag_tensor_free(x) != AG_OK) return 16;
    if (ag_live_handle_count(&after) != AG_OK || after != before) return 17;
    return 0;
}

static void test_deep_graphs(void) {
    static const char *const what[] = {"backward through a chain of 100000 ops, then release it",
                                       "release a chain of 100000 ops without backward"};
    for (int which = 0; which < 2; which++) {
        set_ctx("%s", what[which]);
        fflush(stdout);
        pid_t pid = fork();
        if (!CHECK(pid >= 0)) continue;
        if (pid == 0) _exit(child_deep(which));
        int wstatus = 0;
        if (!CHECK(waitpid(pid, &wstatus, 0) == pid)) continue;
        if (!CHECKF(WIFEXITED(wstatus), "the process crashed (signal %d)", WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : -1))
            continue;
        CHECKF(WEXITSTATUS(wstatus) == 0, "step %d failed (see child_deep)", WEXITSTATUS(wstatus));
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */

int main(void) {
    test_begin();

    run_group("version, status names, last error, live handles", test_version_and_status);
    run_group("creating tensors", test_creation);
    run_group("handles", test_handles);
    run_group("inspecting tensors", test_inspection);
    run_group("requires_grad", test_requires_grad);
    run_group("binary operations: values and errors", test_binary_forward);
    run_group("unary operations: values and errors", test_unary_forward);
    run_group("sum and mean", test_reductions);
    run_group("matmul", test_matmul);
    run_group("elementwise gradients", test_elementwise_gradients);
    run_group("backward", test_backward);
    run_group("threads", test_threads);
    run_group("allocation failures", test_out_of_memory);
    run_group("deep graphs", test_deep_graphs);

    check_no_leaks();
    return test_summary();
}
