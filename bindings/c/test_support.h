/*
 * test_support.h - the plumbing shared by the C test programs in bindings/c (test_autograd.c,
 * test_catalogue.c, test_semantics.c, test_limits.c, test_training.c): counted checks, status
 * checks, making tensors from arrays and reading them back, comparisons with tolerances, gradient
 * checks against central finite differences, live-handle checks and the final summary line.
 *
 * Header-only (static inline functions and macros), so each test program is still one compile
 * command (see scripts/c-tests.sh). Include it after defining _POSIX_C_SOURCE and before any other
 * header of the program's own:
 *
 *     #define _POSIX_C_SOURCE 200809L
 *     #include "test_support.h"
 *
 * Every check counts once in g_passed or g_failed. A failed check prints one line,
 * "  file:line: FAILED: what differed  [context]", where the context is whatever set_ctx() last
 * set (cleared by run_group). main calls test_begin() first and ends with
 * `return test_summary();`, which prints exactly "N passed, M failed" and gives the exit status
 * (0 only if M is 0). With AG_TEST_VERBOSE set (and not "0"), every expected error's message is
 * printed too.
 *
 * Two tolerance conventions, kept apart on purpose:
 *   - close_enough(got, want, atol, rtol): |got - want| <= atol + rtol * |want| (NaN matches
 *     NaN, an infinity matches only itself); used by the array and tensor comparisons and the
 *     gradient checks;
 *   - close_to(got, want, tol): |got - want| <= tol * max(1, |want|) (relative above 1, absolute
 *     below); used by CHECK_CLOSE.
 */
#ifndef AUTOGRAD_TEST_SUPPORT_H
#define AUTOGRAD_TEST_SUPPORT_H

#include "autograd.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================================== */
/* Checks                                                                                     */
/* ========================================================================================== */

static int g_passed, g_failed;
static bool g_verbose;  /* AG_TEST_VERBOSE: print the message of every expected error */
static char g_ctx[200]; /* what the current loop iteration is testing, printed with failures */

#define HERE __FILE__, __LINE__

/* Counts one check; prints a failure as "  file:line: FAILED: <fmt...>  [context]". */
__attribute__((format(printf, 4, 5))) static inline bool check_at(bool ok, const char *file, int line,
                                                                 const char *fmt, ...) {
    if (ok) {
        g_passed++;
        return true;
    }
    g_failed++;
    printf("  %s:%d: FAILED: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_ctx[0]) printf("  [%s]", g_ctx);
    printf("\n");
    return false;
}

/* Sets the context printed with failures; set_ctx("%s", "") clears it. */
__attribute__((format(printf, 1, 2))) static inline void set_ctx(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_ctx, sizeof g_ctx, fmt, ap);
    va_end(ap);
}

#define CHECK(cond) check_at((cond), HERE, "%s", #cond)
#define CHECKF(cond, ...) check_at((cond), HERE, __VA_ARGS__)

/* The status names as the header spells them, kept here independently of the library. */
static inline const char *expected_name(ag_status s) {
    static const char *const names[] = {"AG_OK",           "AG_ERR_INVALID_HANDLE", "AG_ERR_ARGUMENT",
                                        "AG_ERR_SHAPE",    "AG_ERR_DTYPE",          "AG_ERR_STATE",
                                        "AG_ERR_OUT_OF_MEMORY", "AG_ERR_CALLBACK",  "AG_ERR_INTERNAL",
                                        "AG_ERR_IO",       "AG_ERR_FORMAT"};
    return s >= 0 && s <= AG_ERR_FORMAT ? names[s] : "AG_UNKNOWN_STATUS";
}

/* Checks a returned status (one check for AG_OK). For an error status it also checks that
 * ag_last_error() is a non-empty string and that ag_status_name() gives the status's name. */
static inline bool status_at(ag_status got, ag_status want, const char *expr, const char *file, int line) {
    const char *want_name = expected_name(want);
    if (want == AG_OK) {
        return check_at(got == AG_OK, file, line, "%s returned %s (%d): %s", expr, ag_status_name(got), (int)got,
                        ag_last_error());
    }
    if (!check_at(got == want, file, line, "%s returned %s (%d), expected %s%s%s", expr, ag_status_name(got),
                  (int)got, want_name, got != AG_OK ? "; message: " : "", got != AG_OK ? ag_last_error() : "")) {
        return false;
    }
    const char *msg = ag_last_error();
    bool ok = check_at(msg != NULL && msg[0] != '\0', file, line, "%s: ag_last_error() is empty after %s", expr,
                       want_name);
    const char *name = ag_status_name(got);
    ok &= check_at(name != NULL && strcmp(name, want_name) == 0, file, line,
                   "ag_status_name(%d) is \"%s\", expected \"%s\"", (int)got, name ? name : "(null)", want_name);
    if (g_verbose && msg) printf("    %s -> %s: %s\n", expr, want_name, msg);
    return ok;
}

#define CHECK_OK(expr) status_at((expr), AG_OK, #expr, HERE)
#define CHECK_ERR(expr, code) status_at((expr), (code), #expr, HERE)

/* For calls repeated thousands of times: counts (and prints) a failure only, so that the totals
 * stay readable; the loop's success is then one check. */
static inline bool quiet_ok_at(ag_status st, const char *expr, const char *file, int line) {
    return st == AG_OK || status_at(st, AG_OK, expr, file, line);
}
#define TRY(expr) quiet_ok_at((expr), #expr, HERE)
#define TRY_TRUE(cond) ((cond) || check_at(false, HERE, "%s", #cond))

/* A value no call should write into a handle output (ag_tensor or ag_optimizer) on failure. */
#define SENTINEL ((ag_tensor)0x5e5e5e5e5e5e5e5eULL)

/* fn(&out, args...) must fail with `code` and leave out untouched. */
#define CHECK_ERR_OUT(code, fn, ...)                                                           \
    do {                                                                                       \
        ag_tensor o_ = SENTINEL;                                                               \
        CHECK_ERR((fn)(&o_, __VA_ARGS__), code);                                               \
        CHECKF(o_ == SENTINEL, "%s wrote its output although it failed", #fn);                 \
    } while (0)

/* ========================================================================================== */
/* Tolerances                                                                                 */
/* ========================================================================================== */

/* |got - want| <= atol + rtol * |want|; a NaN want matches NaN, an infinite want only itself. */
static inline bool close_enough(double got, double want, double atol, double rtol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* |got - want| <= tol * max(1, |want|). */
static inline bool close_to(double got, double want, double tol) {
    return fabs(got - want) <= tol * fmax(1.0, fabs(want));
}

#define CHECK_CLOSE(got, want, tol)                                                                            \
    do {                                                                                                       \
        double got_ = (got), want_ = (want);                                                                   \
        CHECKF(close_to(got_, want_, (tol)), "%s = %.17g, expected %.17g (%s)", #got, got_, want_, #want);     \
    } while (0)

/* One check: got[0..n) is close_enough to want[0..n); prints the first few differences. */
static inline bool arrays_close_at(const char *what, const double *got, const double *want, int64_t n, double atol,
                                   double rtol, const char *file, int line) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += !close_enough(got[i], want[i], atol, rtol);
    if (!check_at(bad == 0, file, line, "%s: %" PRId64 " of %" PRId64 " values differ", what, bad, n)) {
        int shown = 0;
        for (int64_t i = 0; i < n && shown < 6; i++) {
            if (!close_enough(got[i], want[i], atol, rtol)) {
                printf("      [%" PRId64 "] got %.17g, expected %.17g (diff %.3g)\n", i, got[i], want[i],
                       got[i] - want[i]);
                shown++;
            }
        }
        return false;
    }
    return true;
}
#define CLOSE(what, got, want, n, atol, rtol) arrays_close_at((what), (got), (want), (n), (atol), (rtol), HERE)
#define ARRAYS_CLOSE(what, got, want, n) arrays_close_at((what), (got), (want), (n), 1e-12, 1e-12, HERE)

/* ========================================================================================== */
/* Shapes                                                                                     */
/* ========================================================================================== */

typedef struct {
    int64_t ndim;
    int64_t d[AG_MAX_NDIM];
} Shape;

__attribute__((unused)) static const Shape S0 = {0, {0}}; /* rank 0 */

static inline Shape make_shape(const int64_t *d, size_t n) {
    Shape s = {(int64_t)n, {0}};
    memcpy(s.d, d, n * sizeof *d);
    return s;
}
#define SHAPE(...)                                                                             \
    make_shape((const int64_t[]){__VA_ARGS__}, sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define I64(...) ((const int64_t[]){__VA_ARGS__})
#define D(...) ((const double[]){__VA_ARGS__})

static inline int64_t numel_of_shape(Shape s) {
    int64_t n = 1;
    for (int64_t i = 0; i < s.ndim; i++) n *= s.d[i];
    return n;
}

static inline bool shape_eq(Shape a, Shape b) {
    if (a.ndim != b.ndim) return false;
    for (int64_t i = 0; i < a.ndim; i++)
        if (a.d[i] != b.d[i]) return false;
    return true;
}

static inline const char *shape_str(Shape s, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "(");
    for (int64_t i = 0; i < s.ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%" PRId64 : "%" PRId64, s.d[i]);
    if (n < cap) snprintf(buf + n, cap - n, ")");
    return buf;
}

/* NumPy broadcasting of two shapes; false if they do not broadcast. */
static inline bool broadcast_shape(Shape a, Shape b, Shape *out) {
    int64_t n = a.ndim > b.ndim ? a.ndim : b.ndim;
    out->ndim = n;
    for (int64_t i = 0; i < n; i++) {
        int64_t da = i < a.ndim ? a.d[a.ndim - 1 - i] : 1;
        int64_t db = i < b.ndim ? b.d[b.ndim - 1 - i] : 1;
        if (da != db && da != 1 && db != 1) return false;
        out->d[n - 1 - i] = da == 1 ? db : da;
    }
    return true;
}

/* The flat index into a tensor of shape `in` that broadcasts to element `flat` of `out`. */
static inline int64_t broadcast_source(int64_t flat, Shape out, Shape in) {
    int64_t idx = 0, stride = 1;
    for (int64_t i = out.ndim - 1; i >= 0; i--) {
        int64_t c = flat % out.d[i];
        flat /= out.d[i];
        int64_t j = i - (out.ndim - in.ndim);
        if (j >= 0) {
            if (in.d[j] != 1) idx += c * stride;
            stride *= in.d[j];
        }
    }
    return idx;
}

/* ========================================================================================== */
/* Tensors from arrays, and reading them back                                                 */
/* ========================================================================================== */

/* v as the given dtype would store it, back as a double. */
static inline double round_to(ag_dtype dtype, double v) { return dtype == AG_FLOAT32 ? (double)(float)v : v; }

/* A new leaf from float64 values, stored as `dtype`; 0 (and a failed check) on failure. Two
 * checks with requires_grad, one without. */
static inline ag_tensor make_at(const double *data, Shape s, ag_dtype dtype, bool requires_grad, const char *file,
                                int line) {
    int64_t n = numel_of_shape(s);
    ag_tensor t = AG_NULL_TENSOR;
    ag_status st;
    if (dtype == AG_FLOAT32) {
        float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
        for (int64_t i = 0; i < n; i++) f[i] = (float)data[i];
        st = ag_tensor_from_data(&t, f, s.d, s.ndim, AG_FLOAT32);
        free(f);
    } else {
        double dummy = 0.0;
        st = ag_tensor_from_data(&t, n ? data : &dummy, s.d, s.ndim, dtype);
    }
    if (!status_at(st, AG_OK, "ag_tensor_from_data", file, line)) return AG_NULL_TENSOR;
    if (requires_grad)
        status_at(ag_tensor_set_requires_grad(t, true), AG_OK, "ag_tensor_set_requires_grad", file, line);
    return t;
}
#define MAKE(data, shape) make_at((data), (shape), AG_FLOAT64, false, HERE)
#define MAKE_RG(data, shape) make_at((data), (shape), AG_FLOAT64, true, HERE)
#define MAKE32(data, shape) make_at((data), (shape), AG_FLOAT32, false, HERE)
#define MAKE32_RG(data, shape) make_at((data), (shape), AG_FLOAT32, true, HERE)
#define SCALAR(v) make_at(&(double){(v)}, S0, AG_FLOAT64, false, HERE)

/* Reads t's shape and elements (as float64, malloc'ed; free it). NULL and a failed check on
 * failure; six checks on success. */
static inline double *read_at(ag_tensor t, Shape *shape_out, const char *file, int line) {
    Shape s = {0, {0}};
    int64_t numel = -1;
    if (!status_at(ag_tensor_ndim(&s.ndim, t), AG_OK, "ag_tensor_ndim", file, line)) return NULL;
    if (!check_at(s.ndim >= 0 && s.ndim <= AG_MAX_NDIM, file, line, "ndim %" PRId64, s.ndim)) return NULL;
    if (!status_at(ag_tensor_shape(s.d, AG_MAX_NDIM, t), AG_OK, "ag_tensor_shape", file, line) ||
        !status_at(ag_tensor_numel(&numel, t), AG_OK, "ag_tensor_numel", file, line))
        return NULL;
    if (!check_at(numel == numel_of_shape(s), file, line, "numel %" PRId64 " disagrees with the shape", numel))
        return NULL;
    double *buf = malloc((size_t)(numel ? numel : 1) * sizeof *buf);
    if (!status_at(ag_tensor_copy_data(buf, numel, AG_FLOAT64, t), AG_OK, "ag_tensor_copy_data", file, line)) {
        free(buf);
        return NULL;
    }
    if (shape_out) *shape_out = s;
    return buf;
}

/* Reads the elements of t (as float64) into buf, checking that t has exactly n (three checks). */
static inline bool read_into_at(double *buf, int64_t n, ag_tensor t, const char *file, int line) {
    int64_t numel = -1;
    if (!status_at(ag_tensor_numel(&numel, t), AG_OK, "ag_tensor_numel", file, line)) return false;
    if (!check_at(numel == n, file, line, "tensor has %" PRId64 " elements, expected %" PRId64, numel, n))
        return false;
    return status_at(ag_tensor_copy_data(buf, n, AG_FLOAT64, t), AG_OK, "ag_tensor_copy_data", file, line);
}
#define READ(buf, n, t) read_into_at((buf), (n), (t), HERE)

/* Checks t's shape (one check) and values (one check), after reading it (read_at). */
static inline bool expect_tensor_at(ag_tensor t, Shape want_shape, const double *want, double atol, double rtol,
                                    const char *what, const char *file, int line) {
    Shape s;
    double *got = read_at(t, &s, file, line);
    if (!got) return false;
    char b1[96], b2[96];
    bool ok = check_at(shape_eq(s, want_shape), file, line, "%s: shape %s, expected %s", what,
                       shape_str(s, b1, sizeof b1), shape_str(want_shape, b2, sizeof b2));
    if (ok) ok = arrays_close_at(what, got, want, numel_of_shape(s), atol, rtol, file, line);
    free(got);
    return ok;
}
#define EXPECT_TENSOR(t, shape, want, what) expect_tensor_at((t), (shape), (want), 1e-12, 1e-12, (what), HERE)
#define EXPECT_TENSOR32(t, shape, want, what) expect_tensor_at((t), (shape), (want), 1e-6, 2e-6, (what), HERE)
#define EXPECT_TENSOR_TOL(t, shape, want, atol, rtol, what)                                    \
    expect_tensor_at((t), (shape), (want), (atol), (rtol), (what), HERE)

/* t holds n (at most 64) elements close to want (tol absolute and relative). */
static inline bool expect_values_at(ag_tensor t, const double *want, int64_t n, double tol, const char *what,
                                    const char *file, int line) {
    double buf[64];
    if (!check_at(n <= 64, file, line, "expect: too many elements")) return false;
    if (!read_into_at(buf, n, t, file, line)) return false;
    return arrays_close_at(what, buf, want, n, tol, tol, file, line);
}
#define EXPECT_VALUES(t, want, n, what) expect_values_at((t), (want), (n), 1e-12, (what), HERE)

/* Checks only t's shape. */
static inline bool expect_shape_at(ag_tensor t, Shape want, const char *what, const char *file, int line) {
    Shape s = {0, {0}};
    if (!status_at(ag_tensor_ndim(&s.ndim, t), AG_OK, "ag_tensor_ndim", file, line)) return false;
    if (!status_at(ag_tensor_shape(s.d, AG_MAX_NDIM, t), AG_OK, "ag_tensor_shape", file, line)) return false;
    char b1[96], b2[96];
    return check_at(shape_eq(s, want), file, line, "%s: shape %s, expected %s", what, shape_str(s, b1, sizeof b1),
                    shape_str(want, b2, sizeof b2));
}
#define EXPECT_SHAPE(t, shape, what) expect_shape_at((t), (shape), (what), HERE)

static inline bool expect_dtype_at(ag_tensor t, ag_dtype want, const char *file, int line) {
    ag_dtype dt = 0;
    if (!status_at(ag_tensor_dtype(&dt, t), AG_OK, "ag_tensor_dtype", file, line)) return false;
    return check_at(dt == want, file, line, "dtype %d, expected %d", (int)dt, (int)want);
}
#define EXPECT_DTYPE(t, dt) expect_dtype_at((t), (dt), HERE)

/* Frees each handle, one CHECK_OK each. */
static inline void free_list_at(const ag_tensor *ts, size_t n, const char *file, int line) {
    for (size_t i = 0; i < n; i++) status_at(ag_tensor_free(ts[i]), AG_OK, "ag_tensor_free", file, line);
}
#define FREE(...)                                                                              \
    free_list_at((const ag_tensor[]){__VA_ARGS__}, sizeof((const ag_tensor[]){__VA_ARGS__}) / sizeof(ag_tensor), \
                 HERE)

/* ag_live_handle_count() (one check); -1 if it fails. */
static inline int64_t live_handles(void) {
    int64_t n = -1;
    CHECK_OK(ag_live_handle_count(&n));
    return n;
}

/* Deterministic test data: values in [-2, 2], none closer to 0 than 0.1. */
static inline void fill(double *x, int64_t n, double seed) {
    for (int64_t i = 0; i < n; i++) {
        double v = 2.0 * sin(seed + 1.7 * (double)i + 0.3 * (double)(i * i % 7));
        if (fabs(v) < 0.1) v += v < 0 ? -0.25 : 0.25;
        x[i] = v;
    }
}

/* Deterministic positive test data in [0.5, 2] (denominators, logarithms). */
static inline void fill_positive(double *x, int64_t n, double seed) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5 + 1.5 * fabs(sin(seed + 2.3 * (double)i));
}

/* ========================================================================================== */
/* Gradient checks against central finite differences                                         */
/* ========================================================================================== */

/* A forward computation through the C API: inputs -> one output tensor. It may create and free
 * intermediate tensors (freeing them must not break the graph). */
typedef ag_status (*fwd_fn)(ag_tensor *out, const ag_tensor *in, const void *ctx);

enum { MAXIN = 4 };
typedef struct {
    int n;                     /* number of inputs (1 to MAXIN) */
    const double *data[MAXIN]; /* their values */
    Shape shape[MAXIN];        /* their shapes */
} Inputs;

#define IN1(d0, s0) (&(Inputs){1, {(d0)}, {(s0)}})
#define IN2(d0, s0, d1, s1) (&(Inputs){2, {(d0), (d1)}, {(s0), (s1)}})
#define IN3(d0, s0, d1, s1, d2, s2) (&(Inputs){3, {(d0), (d1), (d2)}, {(s0), (s1), (s2)}})

/* The result of one forward + backward through the C API. */
typedef struct {
    Shape out_shape;
    int64_t m;           /* numel of the output */
    double *out;         /* forward values */
    double *R;           /* the weights (the seed) */
    double *grad[MAXIN]; /* each input's gradient (NULL if it has none) */
} Run;

static inline void run_free(Run *r) {
    free(r->out);
    free(r->R);
    for (int i = 0; i < MAXIN; i++) free(r->grad[i]);
    memset(r, 0, sizeof *r);
}

/* Runs f on leaves of `dtype` that require grad and backpropagates with the seed `weights`
 * (NULL: fixed pseudo-random weights, rounded to dtype, or the NULL seed (1) for a rank-0
 * output). Reads every input's gradient, checking its dtype and shape. `name` prefixes the
 * messages of a failed forward or backward. Free r with run_free, also after a failure. */
static inline bool run_at(Run *r, const char *name, fwd_fn f, const void *ctx, const Inputs *in, ag_dtype dtype,
                          const double *weights, const char *file, int line) {
    memset(r, 0, sizeof *r);
    ag_tensor leaf[MAXIN] = {0}, out = AG_NULL_TENSOR, seed = AG_NULL_TENSOR;
    bool ok = false;
    for (int i = 0; i < in->n; i++) {
        leaf[i] = make_at(in->data[i], in->shape[i], dtype, true, file, line);
        if (!leaf[i]) goto done;
    }
    ag_status st = f(&out, leaf, ctx);
    if (!check_at(st == AG_OK, file, line, "%s: forward failed: %s: %s", name, ag_status_name(st), ag_last_error()))
        goto done;
    r->out = read_at(out, &r->out_shape, file, line);
    if (!r->out) goto done;
    r->m = numel_of_shape(r->out_shape);
    r->R = malloc((size_t)(r->m ? r->m : 1) * sizeof *r->R);
    if (weights) {
        memcpy(r->R, weights, (size_t)r->m * sizeof *r->R);
        seed = make_at(r->R, r->out_shape, dtype, false, file, line);
    } else if (r->out_shape.ndim == 0) {
        r->R[0] = 1.0; /* AG_NULL_TENSOR as seed means 1 */
    } else {
        for (int64_t k = 0; k < r->m; k++) r->R[k] = round_to(dtype, cos(1.0 + 0.9 * (double)k));
        seed = make_at(r->R, r->out_shape, dtype, false, file, line);
    }
    st = ag_backward(out, seed, false, false);
    if (!check_at(st == AG_OK, file, line, "%s: ag_backward failed: %s: %s", name, ag_status_name(st),
                  ag_last_error()))
        goto done;
    for (int i = 0; i < in->n; i++) {
        ag_tensor g = AG_NULL_TENSOR;
        if (!status_at(ag_tensor_grad(&g, leaf[i]), AG_OK, "ag_tensor_grad", file, line)) continue;
        if (g == AG_NULL_TENSOR) continue;
        expect_dtype_at(g, dtype, file, line);
        Shape sg;
        r->grad[i] = read_at(g, &sg, file, line);
        ag_tensor_free(g);
        char b1[96], b2[96];
        if (r->grad[i] && !check_at(shape_eq(sg, in->shape[i]), file, line, "%s: gradient %d: shape %s, expected %s",
                                    name, i, shape_str(sg, b1, sizeof b1), shape_str(in->shape[i], b2, sizeof b2))) {
            free(r->grad[i]);
            r->grad[i] = NULL;
        }
    }
    ok = true;
done:
    for (int i = 0; i < in->n; i++) ag_tensor_free(leaf[i]);
    ag_tensor_free(out);
    ag_tensor_free(seed);
    return ok;
}

/* run_at on float64 leaves, named after f. */
#define RUN(r, f, ctx, in, weights) run_at((r), #f, (f), (ctx), (in), AG_FLOAT64, (weights), HERE)

/* sum_k R[k] * f(inputs)[k], evaluated through the C API on `dtype` tensors without grad. */
static inline bool eval_loss(fwd_fn f, const void *ctx, const Inputs *in, ag_dtype dtype, const double *R, int64_t m,
                             double *loss, const char *file, int line) {
    ag_tensor t[MAXIN] = {0}, out = AG_NULL_TENSOR;
    bool ok = true;
    for (int i = 0; i < in->n; i++) t[i] = make_at(in->data[i], in->shape[i], dtype, false, file, line);
    ag_status st = f(&out, t, ctx);
    if (st != AG_OK) {
        check_at(false, file, line, "forward failed in a finite difference: %s: %s", ag_status_name(st),
                 ag_last_error());
        ok = false;
    } else {
        Shape so;
        double *v = read_at(out, &so, file, line);
        ok = v != NULL && check_at(numel_of_shape(so) == m, file, line, "output size changed");
        if (ok) {
            double acc = 0.0;
            for (int64_t k = 0; k < m; k++) acc += R[k] * v[k];
            *loss = acc;
        }
        free(v);
        ag_tensor_free(out);
    }
    for (int i = 0; i < in->n; i++) ag_tensor_free(t[i]);
    return ok;
}

/* num[j] = d sum(R * f(inputs)) / d input_i[j] by central differences with step h (the
 * perturbed points rounded to dtype, the step taken as their actual distance). */
static inline bool central_differences_at(double *num, fwd_fn f, const void *ctx, const Inputs *in, int i,
                                          ag_dtype dtype, double h, const double *R, int64_t m, const char *file,
                                          int line) {
    int64_t n = numel_of_shape(in->shape[i]);
    double *pert = malloc((size_t)(n ? n : 1) * sizeof *pert);
    if (n) memcpy(pert, in->data[i], (size_t)n * sizeof *pert);
    Inputs p = *in;
    p.data[i] = pert;
    bool ok = true;
    for (int64_t j = 0; j < n && ok; j++) {
        double x0 = in->data[i][j], xp = round_to(dtype, x0 + h), xm = round_to(dtype, x0 - h), lp = 0, lm = 0;
        pert[j] = xp;
        ok = eval_loss(f, ctx, &p, dtype, R, m, &lp, file, line);
        pert[j] = xm;
        ok = ok && eval_loss(f, ctx, &p, dtype, R, m, &lm, file, line);
        pert[j] = x0;
        num[j] = (lp - lm) / (xp - xm);
    }
    free(pert);
    return ok;
}

/* Runs f on `dtype` leaves that require grad, backpropagates with fixed weights R (the NULL seed
 * for a rank-0 output), and compares every input's gradient with central differences (step h)
 * of sum(R * f(inputs)), within close_enough(atol, rtol). Also checks each gradient's dtype and
 * shape. Each program wraps it in a GRADCHECK macro with its own step and tolerances. */
static inline void gradcheck_at(const char *name, fwd_fn f, const void *ctx, const Inputs *in, ag_dtype dtype,
                                double h, double atol, double rtol, const char *file, int line) {
    Run r;
    if (run_at(&r, name, f, ctx, in, dtype, NULL, file, line)) {
        for (int i = 0; i < in->n; i++) {
            char what[240];
            snprintf(what, sizeof what, "%s: d/d(input %d) vs finite differences", name, i);
            if (!check_at(r.grad[i] != NULL, file, line, "%s: no gradient", what)) continue;
            int64_t n = numel_of_shape(in->shape[i]);
            double *num = malloc((size_t)(n ? n : 1) * sizeof *num);
            if (central_differences_at(num, f, ctx, in, i, dtype, h, r.R, r.m, file, line))
                arrays_close_at(what, r.grad[i], num, n, atol, rtol, file, line);
            free(num);
        }
    }
    run_free(&r);
}

/* ========================================================================================== */
/* Running the groups, and the summary                                                        */
/* ========================================================================================== */

/* Line-buffered stdout (failures interleave correctly with a crash or a child process) and
 * AG_TEST_VERBOSE (set, non-empty and not "0"). */
static inline void test_begin(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *v = getenv("AG_TEST_VERBOSE");
    g_verbose = v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

/* Prints "== name", clears the context and runs the group. */
static inline void run_group(const char *name, void (*fn)(void)) {
    printf("== %s\n", name);
    g_ctx[0] = '\0';
    fn();
}

/* run_group, and checks that the group leaves as many live handles as it found (three checks). */
static inline void run_group_checking_handles(const char *name, void (*fn)(void)) {
    printf("== %s\n", name);
    g_ctx[0] = '\0';
    int64_t before = live_handles();
    fn();
    g_ctx[0] = '\0';
    int64_t after = live_handles();
    CHECKF(after == before, "%s: %" PRId64 " handles live before, %" PRId64 " after", name, before, after);
}

/* "== leaks": no handle may be live at the end (two checks). */
static inline void check_no_leaks(void) {
    printf("== leaks\n");
    int64_t live = -1;
    CHECK_OK(ag_live_handle_count(&live));
    CHECKF(live == 0, "%" PRId64 " handles still live at the end", live);
}

/* Prints exactly "N passed, M failed"; returns main's exit status (0 only if nothing failed). */
static inline int test_summary(void) {
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

#endif /* AUTOGRAD_TEST_SUPPORT_H */
