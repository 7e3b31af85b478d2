/*
 * test_custom_ops.c - user-defined ops from C (include/autograd.h, "User-defined ops"):
 * ag_custom_op_new / _apply / _free, ag_custom_ctx_*, ag_set_error, checked from outside.
 *
 * The ops defined here (each with a payload counting its callback calls):
 *   my_mul   a * b (2 inputs, broadcasting): forward and backward with library ops, a JVP.
 *   sincos   (sin x, cos x) (1 input, 2 outputs): forward on raw buffers (ag_tensor_data_ptr,
 *            ag_tensor_from_data), saves both outputs; backward g0 cos x - g1 sin x with library
 *            ops through the saved outputs; a JVP.
 *   my_exp   exp x: forward on raw buffers (ag_tensor_copy_data), saves its output; backward
 *            g * exp(x) through the saved output (so a second derivative must go through it).
 *   fma3     (a * b + c, a - c) (3 inputs, 2 outputs, broadcasting): forward on raw buffers,
 *            broadcasting by hand; backward with library ops, gradients in the broadcast shape.
 *   hypot    sqrt(a^2 + b^2) (2 inputs, broadcasting): forward AND backward on raw buffers, the
 *            gradients written in the broadcast shape; no JVP.
 *
 *   gradcheck     ag_gradcheck (float64) on each op (1 to 3 inputs, 1 and 2 outputs, inputs
 *                 [2,3] with [3], [4,1] with [1,5], [2,3] with [3] and [2,1]); a wrong backward
 *                 fails it (the check can fail); float32 against central finite differences
 *                 (test_support.h) at float32 tolerances.
 *   second        second derivatives: ag_grad with create_graph, then the gradient of that
 *                 gradient, against central differences of the first derivative and (exp,
 *                 (sum sin x)^2) hand-derived Hessians; ag_gradcheck of a gradient function.
 *   catalogue     each op and the same function written with catalogue ops: the same values and
 *                 gradients, float32 and float64.
 *   jvp           ag_jvp through each op with a JVP equals ag_jvp through the catalogue
 *                 equivalent (and the hand tangent of cos); ag_hvp through my_exp's saved output;
 *                 an op without a JVP -> AG_ERR_STATE from ag_custom_op_apply.
 *   destroy       the payload's destroy runs exactly once, after ag_custom_op_free AND after the
 *                 last graph (also a create_graph gradient's) and captured function using the op
 *                 are gone, never before; never when ag_custom_op_new fails.
 *   threads       4 pthreads apply ops and run backward at once: each result equals, bit for bit,
 *                 its single-threaded reference; a backward that calls the library and one that
 *                 waits for another thread calling it do not deadlock.
 *   capture       ag_capture of a function using three ops and ag_grad through them; replays on
 *                 new inputs equal the eager run bit for bit; every replay calls the callbacks
 *                 again (counted).
 *   failures      every callback failure (non-zero return with and without ag_set_error, no
 *                 handle, a freed / made-up / other-kind handle, wrong shape, wrong dtype, a freed
 *                 borrowed handle, writes then fails, a context used after its callback, save in
 *                 the backward) in the forward, the backward (ag_backward, ag_grad, ag_vjp) and the
 *                 JVP: the status and message of the call that ran it, no leak, and the process
 *                 goes on; the accepted cases (no gradient, a gradient in a broadcast shape, no
 *                 tangent, an identity) give the right values.
 *   recompute     ag_recompute calls my_mul's forward again on a leaf's new value; an op of two
 *                 outputs is refused (AG_ERR_STATE).
 *   state         ag_custom_ctx_set_state / _state (op "slope", y = x^2, its derivative kept as the
 *                 state): the backward and the JVP read their own application's state (two
 *                 alive at once); its destroy runs exactly once: when the graph is freed, when a
 *                 backward without retain_graph releases it, right after apply when nothing is
 *                 recorded, when a second set_state replaces it; set_state from the backward or
 *                 the JVP is AG_ERR_STATE and its destroy never runs; each replay of a captured
 *                 function, and a recompute, reads the state its own forward set.
 *
 * Output: "== group" lines, one line per failed check, then exactly "N passed, M failed"; exit
 * status 0 only if M is 0. No handle may be live at the end. Runs under valgrind in
 * scripts/c-tests.sh (AG_TEST_VERBOSE=1 prints every expected error's message).
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

/* ========================================================================================== */
/* Payloads, callback-side helpers                                                            */
/* ========================================================================================== */

/* What an op's callbacks count (atomics: callbacks run on several threads). */
typedef struct {
    atomic_int forward, backward, jvp, destroyed;
} op_stats;

static void stats_destroy(void *payload) { atomic_fetch_add(&((op_stats *)payload)->destroyed, 1); }

#define COUNT(payload, field) atomic_fetch_add(&((op_stats *)(payload))->field, 1)

/* Reads t's shape, dtype and values (as float64, malloc'ed) inside a callback: no check is
 * counted (callbacks run on other threads). NULL on failure (the failed call's message stays). */
static double *cb_read(ag_tensor t, Shape *shape, ag_dtype *dtype) {
    Shape s = {0, {0}};
    int64_t n = 0;
    if (ag_tensor_ndim(&s.ndim, t) != AG_OK || ag_tensor_shape(s.d, AG_MAX_NDIM, t) != AG_OK ||
        ag_tensor_numel(&n, t) != AG_OK || (dtype && ag_tensor_dtype(dtype, t) != AG_OK))
        return NULL;
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (ag_tensor_copy_data(v, n, AG_FLOAT64, t) != AG_OK) {
        free(v);
        return NULL;
    }
    if (shape) *shape = s;
    return v;
}

/* A new tensor of shape s and dtype dt from float64 values. */
static ag_status cb_make(ag_tensor *out, const double *v, Shape s, ag_dtype dt) {
    if (dt == AG_FLOAT64) return ag_tensor_from_data(out, v, s.d, s.ndim, dt);
    int64_t n = numel_of_shape(s);
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)v[i];
    ag_status st = ag_tensor_from_data(out, f, s.d, s.ndim, dt);
    free(f);
    return st;
}

/* t expanded to like's shape (a new handle; t itself when the shapes agree is fine too). */
static ag_status expand_like(ag_tensor *out, ag_tensor t, ag_tensor like) {
    Shape s = {0, {0}};
    ag_status st = ag_tensor_ndim(&s.ndim, like);
    if (!st) st = ag_tensor_shape(s.d, AG_MAX_NDIM, like);
    if (!st) st = ag_expand(out, t, s.d, s.ndim);
    return st;
}

/* The handles the context saved, 0 .. n-1 (new handles: free them). */
static ag_status saved_all(ag_tensor *out, int64_t n, ag_custom_ctx ctx) {
    int64_t count = -1;
    ag_status st = ag_custom_ctx_saved_count(&count, ctx);
    if (!st && count != n) {
        ag_set_error("the context holds an unexpected number of saved tensors");
        return AG_ERR_INTERNAL;
    }
    for (int64_t i = 0; i < n && !st; i++) st = ag_custom_ctx_saved(&out[i], ctx, i);
    return st;
}

static bool needs(ag_custom_ctx ctx, int64_t k) {
    bool b = false;
    return ag_custom_ctx_needs_input_grad(&b, ctx, k) == AG_OK && b;
}

static void free_n(ag_tensor *t, int n) {
    for (int i = 0; i < n; i++) ag_tensor_free(t[i]);
}

/* ========================================================================================== */
/* The ops                                                                                    */
/* ========================================================================================== */

static op_stats s_mul, s_sincos, s_exp, s_fma3, s_hypot;
static ag_custom_op g_mul, g_sincos, g_exp, g_fma3, g_hypot;

/* ---- my_mul: library ops ---- */
static int32_t mul_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    COUNT(payload, forward);
    if (nout != 1 || nin != 2) return 90;
    ag_status st = ag_custom_ctx_save(ctx, in, 2);
    if (!st) st = ag_mul(&out[0], in[0], in[1]);
    return st;
}

static int32_t mul_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    COUNT(payload, backward);
    if (nin != 2 || nout != 1) return 90;
    ag_tensor s[2] = {0, 0};
    ag_status st = saved_all(s, 2, ctx);
    /* In the broadcast shape: the library sums each back to its input's shape. */
    if (!st && needs(ctx, 0)) st = ag_mul(&gin[0], gout[0], s[1]);
    if (!st && needs(ctx, 1)) st = ag_mul(&gin[1], gout[0], s[0]);
    free_n(s, 2);
    return st;
}

static int32_t mul_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                       ag_custom_ctx ctx, void *payload) {
    (void)ctx;
    COUNT(payload, jvp);
    if (nout != 1 || nin != 2) return 90;
    ag_tensor t0 = 0, t1 = 0;
    ag_status st = AG_OK;
    if (tin[0]) st = ag_mul(&t0, tin[0], in[1]);
    if (!st && tin[1]) st = ag_mul(&t1, in[0], tin[1]);
    if (!st) {
        if (t0 && t1) {
            st = ag_add(&tout[0], t0, t1);
        } else {
            /* One term: in the broadcast shape already unless its input was the smaller one. */
            ag_tensor y = 0;
            st = ag_mul(&y, in[0], in[1]);
            if (!st) st = expand_like(&tout[0], t0 ? t0 : t1, y);
            ag_tensor_free(y);
        }
    }
    ag_tensor_free(t0), ag_tensor_free(t1);
    return st;
}

/* ---- sincos: raw forward through ag_tensor_data_ptr ---- */
static int32_t sincos_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                              void *payload) {
    COUNT(payload, forward);
    if (nout != 2 || nin != 1) return 90;
    Shape s = {0, {0}};
    int64_t n = 0;
    ag_dtype dt = 0;
    const void *p = NULL;
    ag_status st = ag_tensor_ndim(&s.ndim, in[0]);
    if (!st) st = ag_tensor_shape(s.d, AG_MAX_NDIM, in[0]);
    if (!st) st = ag_tensor_numel(&n, in[0]);
    if (!st) st = ag_tensor_dtype(&dt, in[0]);
    if (!st) st = ag_tensor_data_ptr(&p, in[0]);
    if (st) return st;
    double *sv = malloc((size_t)(n ? n : 1) * sizeof *sv), *cv = malloc((size_t)(n ? n : 1) * sizeof *cv);
    for (int64_t i = 0; i < n; i++) {
        double x = dt == AG_FLOAT32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
        sv[i] = sin(x);
        cv[i] = cos(x);
    }
    st = cb_make(&out[0], sv, s, dt);
    if (!st) st = cb_make(&out[1], cv, s, dt);
    if (!st) st = ag_custom_ctx_save(ctx, out, 2); /* its own outputs: they keep their history */
    free(sv), free(cv);
    return st;
}

static int32_t sincos_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                               void *payload) {
    COUNT(payload, backward);
    if (nin != 1 || nout != 2) return 90;
    ag_tensor sc[2] = {0, 0}, a = 0, b = 0;
    ag_status st = saved_all(sc, 2, ctx);
    if (!st) st = ag_mul(&a, gout[0], sc[1]);
    if (!st) st = ag_mul(&b, gout[1], sc[0]);
    if (!st) st = ag_sub(&gin[0], a, b);
    free_n(sc, 2), ag_tensor_free(a), ag_tensor_free(b);
    return st;
}

static int32_t sincos_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                          ag_custom_ctx ctx, void *payload) {
    (void)in;
    COUNT(payload, jvp);
    if (nout != 2 || nin != 1) return 90;
    ag_tensor sc[2] = {0, 0}, a = 0;
    ag_status st = saved_all(sc, 2, ctx);
    if (!st) st = ag_mul(&tout[0], tin[0], sc[1]);
    if (!st) st = ag_mul(&a, tin[0], sc[0]);
    if (!st) st = ag_neg(&tout[1], a);
    free_n(sc, 2), ag_tensor_free(a);
    return st;
}

/* ---- my_exp: raw forward through ag_tensor_copy_data, saves its output ---- */
static int32_t exp_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    COUNT(payload, forward);
    if (nout != 1 || nin != 1) return 90;
    Shape s;
    ag_dtype dt = 0;
    double *v = cb_read(in[0], &s, &dt);
    if (!v) return 1;
    for (int64_t i = 0; i < numel_of_shape(s); i++) v[i] = exp(v[i]);
    ag_status st = cb_make(&out[0], v, s, dt);
    if (!st) st = ag_custom_ctx_save(ctx, out, 1);
    free(v);
    return st;
}

static int32_t exp_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    COUNT(payload, backward);
    if (nin != 1 || nout != 1) return 90;
    ag_tensor y = 0;
    ag_status st = ag_custom_ctx_saved(&y, ctx, 0);
    if (!st) st = ag_mul(&gin[0], gout[0], y);
    ag_tensor_free(y);
    return st;
}

static int32_t exp_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                       ag_custom_ctx ctx, void *payload) {
    (void)in, (void)nout, (void)nin;
    COUNT(payload, jvp);
    ag_tensor y = 0;
    ag_status st = ag_custom_ctx_saved(&y, ctx, 0);
    if (!st) st = ag_mul(&tout[0], tin[0], y);
    ag_tensor_free(y);
    return st;
}

/* ---- fma3: raw forward with broadcasting by hand ---- */
static int32_t fma3_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                            void *payload) {
    COUNT(payload, forward);
    if (nout != 2 || nin != 3) return 90;
    Shape sa, sb, sc, sab, so;
    ag_dtype dt = 0;
    double *a = cb_read(in[0], &sa, &dt), *b = cb_read(in[1], &sb, NULL), *c = cb_read(in[2], &sc, NULL);
    ag_status st = a && b && c ? AG_OK : AG_ERR_INTERNAL;
    if (!st && !(broadcast_shape(sa, sb, &sab) && broadcast_shape(sab, sc, &so))) {
        ag_set_error("fma3: the inputs' shapes do not broadcast");
        st = 11;
    }
    if (!st) {
        int64_t n = numel_of_shape(so);
        double *o0 = malloc((size_t)(n ? n : 1) * sizeof *o0), *o1 = malloc((size_t)(n ? n : 1) * sizeof *o1);
        for (int64_t k = 0; k < n; k++) {
            double x = a[broadcast_source(k, so, sa)], y = b[broadcast_source(k, so, sb)],
                   z = c[broadcast_source(k, so, sc)];
            o0[k] = x * y + z;
            o1[k] = x - z;
        }
        st = cb_make(&out[0], o0, so, dt);
        if (!st) st = cb_make(&out[1], o1, so, dt);
        free(o0), free(o1);
    }
    if (!st) st = ag_custom_ctx_save(ctx, in, 3);
    free(a), free(b), free(c);
    return st;
}

static int32_t fma3_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                             void *payload) {
    COUNT(payload, backward);
    if (nin != 3 || nout != 2) return 90;
    ag_tensor s[3] = {0, 0, 0}, t = 0;
    ag_status st = saved_all(s, 3, ctx);
    /* d/da = g0 b + g1, d/db = g0 a, d/dc = g0 - g1, all in the broadcast shape. */
    if (!st && needs(ctx, 0)) {
        st = ag_mul(&t, gout[0], s[1]);
        if (!st) st = ag_add(&gin[0], t, gout[1]);
    }
    if (!st && needs(ctx, 1)) st = ag_mul(&gin[1], gout[0], s[0]);
    if (!st && needs(ctx, 2)) st = ag_sub(&gin[2], gout[0], gout[1]);
    free_n(s, 3), ag_tensor_free(t);
    return st;
}

static int32_t fma3_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                        ag_custom_ctx ctx, void *payload) {
    (void)ctx;
    COUNT(payload, jvp);
    if (nout != 2 || nin != 3) return 90;
    /* t0 = ta b + a tb + tc, t1 = ta - tc, each expanded to the output's shape. */
    ag_tensor zero = 0, acc0 = 0, acc1 = 0, t = 0, u = 0, like = 0;
    ag_status st = ag_mul(&like, in[0], in[1]);
    if (!st) {
        ag_tensor l2 = 0;
        st = ag_add(&l2, like, in[2]);
        ag_tensor_free(like);
        like = l2;
    }
    if (!st) st = ag_mul_scalar(&zero, like, 0.0);
    if (!st) st = ag_mul_scalar(&acc0, zero, 1.0);
    if (!st) st = ag_mul_scalar(&acc1, zero, 1.0);
#define ACC(acc, expr)                                                                         \
    do {                                                                                       \
        if (!st) st = (expr);                                                                  \
        if (!st) st = ag_add(&u, acc, t);                                                      \
        if (!st) { ag_tensor_free(acc); ag_tensor_free(t); acc = u; t = 0; u = 0; }            \
    } while (0)
    if (tin[0]) ACC(acc0, ag_mul(&t, tin[0], in[1]));
    if (tin[1]) ACC(acc0, ag_mul(&t, in[0], tin[1]));
    if (tin[2]) ACC(acc0, ag_mul_scalar(&t, tin[2], 1.0));
    if (tin[0]) ACC(acc1, ag_mul_scalar(&t, tin[0], 1.0));
    if (tin[2]) ACC(acc1, ag_neg(&t, tin[2]));
#undef ACC
    if (!st) {
        tout[0] = acc0, tout[1] = acc1;
        acc0 = acc1 = 0;
    }
    ag_tensor_free(zero), ag_tensor_free(acc0), ag_tensor_free(acc1), ag_tensor_free(t), ag_tensor_free(u);
    ag_tensor_free(like);
    return st;
}

/* ---- hypot: raw forward and raw backward ---- */
static int32_t hypot_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                             void *payload) {
    COUNT(payload, forward);
    if (nout != 1 || nin != 2) return 90;
    Shape sa, sb, so;
    ag_dtype dt = 0;
    double *a = cb_read(in[0], &sa, &dt), *b = cb_read(in[1], &sb, NULL);
    ag_status st = a && b ? AG_OK : AG_ERR_INTERNAL;
    if (!st && !broadcast_shape(sa, sb, &so)) {
        ag_set_error("hypot: the inputs' shapes do not broadcast");
        st = 11;
    }
    if (!st) {
        int64_t n = numel_of_shape(so);
        double *r = malloc((size_t)(n ? n : 1) * sizeof *r);
        for (int64_t k = 0; k < n; k++) {
            double x = a[broadcast_source(k, so, sa)], y = b[broadcast_source(k, so, sb)];
            r[k] = sqrt(x * x + y * y);
        }
        st = cb_make(&out[0], r, so, dt);
        free(r);
    }
    if (!st) st = ag_custom_ctx_save(ctx, (ag_tensor[]){in[0], in[1], out[0]}, 3);
    free(a), free(b);
    return st;
}

static int32_t hypot_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                              void *payload) {
    COUNT(payload, backward);
    if (nin != 2 || nout != 1) return 90;
    ag_tensor s[3] = {0, 0, 0};
    ag_status st = saved_all(s, 3, ctx);
    Shape sa, sb, so, sg;
    ag_dtype da = 0, db = 0;
    double *a = NULL, *b = NULL, *r = NULL, *g = NULL;
    if (!st) {
        a = cb_read(s[0], &sa, &da), b = cb_read(s[1], &sb, &db), r = cb_read(s[2], &so, NULL);
        g = cb_read(gout[0], &sg, NULL);
        if (!a || !b || !r || !g) st = AG_ERR_INTERNAL;
    }
    if (!st) {
        int64_t n = numel_of_shape(so);
        double *ga = malloc((size_t)(n ? n : 1) * sizeof *ga), *gb = malloc((size_t)(n ? n : 1) * sizeof *gb);
        for (int64_t k = 0; k < n; k++) {
            ga[k] = g[k] * a[broadcast_source(k, so, sa)] / r[k];
            gb[k] = g[k] * b[broadcast_source(k, so, sb)] / r[k];
        }
        /* Both in the broadcast shape so: the library reduces them. */
        if (needs(ctx, 0)) st = cb_make(&gin[0], ga, so, da);
        if (!st && needs(ctx, 1)) st = cb_make(&gin[1], gb, so, db);
        free(ga), free(gb);
    }
    free(a), free(b), free(r), free(g), free_n(s, 3);
    return st;
}

static void make_ops(void) {
    CHECK_OK(ag_custom_op_new(&g_mul, "my_mul", 2, 1, mul_forward, mul_backward, mul_jvp, &s_mul, stats_destroy));
    CHECK_OK(ag_custom_op_new(&g_sincos, "sincos", 1, 2, sincos_forward, sincos_backward, sincos_jvp, &s_sincos,
                              stats_destroy));
    CHECK_OK(ag_custom_op_new(&g_exp, "my_exp", 1, 1, exp_forward, exp_backward, exp_jvp, &s_exp, stats_destroy));
    CHECK_OK(ag_custom_op_new(&g_fma3, "fma3", 3, 2, fma3_forward, fma3_backward, fma3_jvp, &s_fma3, stats_destroy));
    CHECK_OK(ag_custom_op_new(&g_hypot, "hypot", 2, 1, hypot_forward, hypot_backward, NULL, &s_hypot, stats_destroy));
}

/* ========================================================================================== */
/* Functions through the ops, and the same with catalogue ops (fwd_fn of test_support.h)      */
/* ========================================================================================== */

static ag_status f_mul(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_custom_op_apply(out, 1, g_mul, in, 2);
}
static ag_status c_mul(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_mul(out, in[0], in[1]);
}

/* 2 sin x + cos^2 x: both outputs. */
static ag_status f_sincos(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor o[2] = {0, 0}, a = 0, b = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_sincos, in, 1);
    if (!st) st = ag_mul_scalar(&a, o[0], 2);
    if (!st) st = ag_mul(&b, o[1], o[1]);
    if (!st) st = ag_add(out, a, b);
    free_n(o, 2), ag_tensor_free(a), ag_tensor_free(b);
    return st;
}
static ag_status c_sincos(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor s = 0, c = 0, a = 0, b = 0;
    ag_status st = ag_sin(&s, in[0]);
    if (!st) st = ag_cos(&c, in[0]);
    if (!st) st = ag_mul_scalar(&a, s, 2);
    if (!st) st = ag_mul(&b, c, c);
    if (!st) st = ag_add(out, a, b);
    ag_tensor_free(s), ag_tensor_free(c), ag_tensor_free(a), ag_tensor_free(b);
    return st;
}

/* cos x alone: the backward sees zeros for the unused first output. */
static ag_status f_sincos_second(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor o[2] = {0, 0};
    ag_status st = ag_custom_op_apply(o, 2, g_sincos, in, 1);
    if (!st) {
        *out = o[1];
        ag_tensor_free(o[0]);
    }
    return st;
}

static ag_status f_exp(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_custom_op_apply(out, 1, g_exp, in, 1);
}
static ag_status c_exp(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_exp(out, in[0]);
}

/* o0 + o1 * o1 of fma3: both outputs. */
static ag_status f_fma3(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor o[2] = {0, 0}, sq = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_fma3, in, 3);
    if (!st) st = ag_mul(&sq, o[1], o[1]);
    if (!st) st = ag_add(out, o[0], sq);
    free_n(o, 2), ag_tensor_free(sq);
    return st;
}
static ag_status c_fma3(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor ab = 0, o0 = 0, o1 = 0, sq = 0;
    ag_status st = ag_mul(&ab, in[0], in[1]);
    if (!st) st = ag_add(&o0, ab, in[2]);
    if (!st) st = ag_sub(&o1, in[0], in[2]);
    if (!st) st = ag_mul(&sq, o1, o1);
    if (!st) st = ag_add(out, o0, sq);
    ag_tensor_free(ab), ag_tensor_free(o0), ag_tensor_free(o1), ag_tensor_free(sq);
    return st;
}

static ag_status f_hypot(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_custom_op_apply(out, 1, g_hypot, in, 2);
}
static ag_status c_hypot(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor a2 = 0, b2 = 0, s = 0;
    ag_status st = ag_mul(&a2, in[0], in[0]);
    if (!st) st = ag_mul(&b2, in[1], in[1]);
    if (!st) st = ag_add(&s, a2, b2);
    if (!st) st = ag_sqrt(out, s);
    ag_tensor_free(a2), ag_tensor_free(b2), ag_tensor_free(s);
    return st;
}

/* A build function (ag_gradcheck, the transforms) running a fwd_fn. */
typedef struct {
    fwd_fn f;
    const void *ctx;
} build_ud;

static int32_t build_adapter(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    (void)n;
    const build_ud *b = user_data;
    return b->f(out, in, b->ctx);
}

/* ========================================================================================== */
/* gradcheck                                                                                  */
/* ========================================================================================== */

/* ag_gradcheck of f at float64 leaves made from `in`; `want` is whether it must pass. */
static void agcheck_at(const char *name, fwd_fn f, const Inputs *in, bool want, const char *file, int line) {
    ag_tensor leaf[MAXIN] = {0};
    for (int i = 0; i < in->n; i++) leaf[i] = make_at(in->data[i], in->shape[i], AG_FLOAT64, true, file, line);
    build_ud ud = {f, NULL};
    bool passed = !want;
    int64_t wi = -1, wx = -1;
    double wa = NAN, wn = NAN;
    ag_status st = ag_gradcheck(&passed, &wi, &wx, &wa, &wn, build_adapter, &ud, leaf, in->n, 1e-6, 1e-7, 1e-6);
    if (check_at(st == AG_OK, file, line, "%s: ag_gradcheck returned %s: %s", name, ag_status_name(st),
                 ag_last_error()))
        check_at(passed == want, file, line,
                 "%s: ag_gradcheck says %s, expected %s (worst: input %" PRId64 "[%" PRId64
                 "], analytic %.17g, numeric %.17g)",
                 name, passed ? "passed" : "failed", want ? "passed" : "failed", wi, wx, wa, wn);
    for (int i = 0; i < in->n; i++) ag_tensor_free(leaf[i]);
}
#define AGCHECK(name, f, in) agcheck_at((name), (f), (in), true, HERE)
#define AGCHECK_FAILS(name, f, in) agcheck_at((name), (f), (in), false, HERE)
#define GRADCHECK32(name, f, in) gradcheck_at((name), (f), NULL, (in), AG_FLOAT32, 1e-2, 2e-3, 1e-2, HERE)

/* exp with a backward 1% off: ag_gradcheck must catch it. */
static int32_t wrong_exp_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                                  void *payload) {
    ag_tensor t = 0;
    int32_t st = exp_backward(&t, nin, gout, nout, ctx, payload);
    if (!st) st = ag_mul_scalar(&gin[0], t, 1.01);
    ag_tensor_free(t);
    return st;
}
static ag_custom_op g_wrong;
static ag_status f_wrong(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    return ag_custom_op_apply(out, 1, g_wrong, in, 1);
}

static void test_gradcheck(void) {
    double a23[6], b3[3], c21[2], x41[4], y15[5], x32[6], x5[5], x4[4];
    fill(a23, 6, 0.3), fill(b3, 3, 1.1), fill(c21, 2, 2.7), fill(x41, 4, 0.9), fill(y15, 5, 3.3);
    fill(x32, 6, 4.1), fill(x5, 5, 5.2), fill(x4, 4, 6.5);
    int b_mul = atomic_load(&s_mul.backward), b_sc = atomic_load(&s_sincos.backward);
    int b_fma = atomic_load(&s_fma3.backward), b_hy = atomic_load(&s_hypot.backward);
    int b_exp = atomic_load(&s_exp.backward);

    const Inputs *mul1 = IN2(a23, SHAPE(2, 3), b3, SHAPE(3));
    const Inputs *mul2 = IN2(x41, SHAPE(4, 1), y15, SHAPE(1, 5));
    const Inputs *sc = IN1(x32, SHAPE(3, 2));
    const Inputs *sc2 = IN1(x5, SHAPE(5));
    const Inputs *fma = IN3(a23, SHAPE(2, 3), b3, SHAPE(3), c21, SHAPE(2, 1));
    const Inputs *ex = IN1(x4, SHAPE(4));
    const Inputs *hy = IN2(x41, SHAPE(4, 1), y15, SHAPE(1, 5));

    AGCHECK("my_mul [2,3] * [3]", f_mul, mul1);
    AGCHECK("my_mul [4,1] * [1,5]", f_mul, mul2);
    AGCHECK("sincos, both outputs", f_sincos, sc);
    AGCHECK("sincos, the second output only", f_sincos_second, sc2);
    AGCHECK("fma3 [2,3], [3], [2,1], both outputs", f_fma3, fma);
    AGCHECK("my_exp (saves its output)", f_exp, ex);
    AGCHECK("hypot [4,1], [1,5] (raw backward)", f_hypot, hy);
    /* The backwards ran (the checks went through the ops, not around them). */
    CHECK(atomic_load(&s_mul.backward) >= b_mul + 2 && atomic_load(&s_sincos.backward) >= b_sc + 2);
    CHECK(atomic_load(&s_fma3.backward) > b_fma && atomic_load(&s_hypot.backward) > b_hy &&
          atomic_load(&s_exp.backward) > b_exp);

    /* A backward 1% off fails ag_gradcheck. */
    op_stats st = {0};
    CHECK_OK(ag_custom_op_new(&g_wrong, "wrong_exp", 1, 1, exp_forward, wrong_exp_backward, NULL, &st, NULL));
    AGCHECK_FAILS("my_exp with a wrong backward", f_wrong, ex);
    CHECK_OK(ag_custom_op_free(g_wrong));

    /* float32: central differences at float32 tolerances (ag_gradcheck is float64-only). */
    GRADCHECK32("float32 my_mul [2,3] * [3]", f_mul, mul1);
    GRADCHECK32("float32 my_mul [4,1] * [1,5]", f_mul, mul2);
    GRADCHECK32("float32 sincos, both outputs", f_sincos, sc);
    GRADCHECK32("float32 sincos, the second output only", f_sincos_second, sc2);
    GRADCHECK32("float32 fma3", f_fma3, fma);
    GRADCHECK32("float32 my_exp", f_exp, ex);
    GRADCHECK32("float32 hypot (raw backward)", f_hypot, hy);
}

/* ========================================================================================== */
/* Second derivatives                                                                         */
/* ========================================================================================== */

/* Scalar functions of one input x, through the ops (constants in ctx). */
typedef struct {
    const double *data;
    Shape shape;
} constant;

static ag_tensor const_tensor(const constant *c) {
    ag_tensor t = 0;
    if (ag_tensor_from_data(&t, c->data, c->shape.d, c->shape.ndim, AG_FLOAT64) != AG_OK) return 0;
    return t;
}

/* sum(my_exp(x)) */
static ag_status L_exp(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor e = 0;
    ag_status st = ag_custom_op_apply(&e, 1, g_exp, in, 1);
    if (!st) st = ag_sum(out, e, NULL, 0, false);
    ag_tensor_free(e);
    return st;
}

/* (sum sin x)^2 through sincos's first output. */
static ag_status L_sinsq(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor o[2] = {0, 0}, s = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_sincos, in, 1);
    if (!st) st = ag_sum(&s, o[0], NULL, 0, false);
    if (!st) st = ag_mul(out, s, s);
    free_n(o, 2), ag_tensor_free(s);
    return st;
}

/* sum(sin x * cos x) through both outputs. */
static ag_status L_sincos(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    ag_tensor o[2] = {0, 0}, p = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_sincos, in, 1);
    if (!st) st = ag_mul(&p, o[0], o[1]);
    if (!st) st = ag_sum(out, p, NULL, 0, false);
    free_n(o, 2), ag_tensor_free(p);
    return st;
}

/* sum(my_mul(x, y)^2 * x) with y [3] a constant, x [2,3]. */
static ag_status L_mul(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    ag_tensor y = const_tensor(ctx), m = 0, sq = 0, p = 0;
    ag_status st = ag_custom_op_apply(&m, 1, g_mul, (ag_tensor[]){in[0], y}, 2);
    if (!st) st = ag_mul(&sq, m, m);
    if (!st) st = ag_mul(&p, sq, in[0]);
    if (!st) st = ag_sum(out, p, NULL, 0, false);
    ag_tensor_free(y), ag_tensor_free(m), ag_tensor_free(sq), ag_tensor_free(p);
    return st;
}

/* sum(o0 * o1 * o1) of fma3(x, b, c) with b [3], c [2,1] constants. */
static ag_status L_fma3(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    const constant *k = ctx;
    ag_tensor b = const_tensor(&k[0]), c = const_tensor(&k[1]), o[2] = {0, 0}, p = 0, q = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_fma3, (ag_tensor[]){in[0], b, c}, 3);
    if (!st) st = ag_mul(&p, o[0], o[1]);
    if (!st) st = ag_mul(&q, p, o[1]);
    if (!st) st = ag_sum(out, q, NULL, 0, false);
    ag_tensor_free(b), ag_tensor_free(c), free_n(o, 2), ag_tensor_free(p), ag_tensor_free(q);
    return st;
}

/* g = dL/dx at x (a float64 leaf of shape s), by ag_grad without create_graph. */
static bool first_derivative(double *g, fwd_fn L, const void *ctx, const double *x, Shape s) {
    ag_tensor leaf = make_at(x, s, AG_FLOAT64, true, HERE), out = 0, gx = 0;
    bool ok = TRY(L(&out, &leaf, ctx)) && TRY(ag_grad(&gx, &out, 1, NULL, &leaf, 1, false, false, false)) &&
              TRY(ag_tensor_copy_data(g, numel_of_shape(s), AG_FLOAT64, gx));
    ag_tensor_free(leaf), ag_tensor_free(out), ag_tensor_free(gx);
    return ok;
}

/* H[j][k] = d g_j / d x_k: g by ag_grad with create_graph, then row j by ag_grad of g with the
 * seed e_j (retain_graph). */
static bool hessian_analytic(double *H, fwd_fn L, const void *ctx, const double *x, Shape s) {
    int64_t n = numel_of_shape(s);
    ag_tensor leaf = make_at(x, s, AG_FLOAT64, true, HERE), out = 0, g = 0;
    bool ok = TRY(L(&out, &leaf, ctx)) && TRY(ag_grad(&g, &out, 1, NULL, &leaf, 1, true, true, false));
    bool rg = false;
    ok = ok && TRY(ag_tensor_requires_grad(&rg, g)) && TRY_TRUE(rg); /* the gradient has history */
    double *e = calloc((size_t)n, sizeof *e);
    for (int64_t j = 0; j < n && ok; j++) {
        e[j] = 1;
        ag_tensor seed = make_at(e, s, AG_FLOAT64, false, HERE), h = 0;
        e[j] = 0;
        ok = TRY(ag_grad(&h, &g, 1, &seed, &leaf, 1, true, false, false)) &&
             TRY(ag_tensor_copy_data(H + j * n, n, AG_FLOAT64, h));
        ag_tensor_free(seed), ag_tensor_free(h);
    }
    free(e);
    ag_tensor_free(leaf), ag_tensor_free(out), ag_tensor_free(g);
    return ok;
}

/* FD[j][k] = (g_j(x + h e_k) - g_j(x - h e_k)) / 2h: central differences of the first derivative. */
static bool hessian_fd(double *FD, fwd_fn L, const void *ctx, const double *x, Shape s) {
    int64_t n = numel_of_shape(s);
    double *xp = malloc((size_t)n * sizeof *xp), *gp = malloc((size_t)n * sizeof *gp),
           *gm = malloc((size_t)n * sizeof *gm);
    memcpy(xp, x, (size_t)n * sizeof *xp);
    bool ok = true;
    const double h = 1e-5;
    for (int64_t k = 0; k < n && ok; k++) {
        xp[k] = x[k] + h;
        ok = first_derivative(gp, L, ctx, xp, s);
        xp[k] = x[k] - h;
        ok = ok && first_derivative(gm, L, ctx, xp, s);
        xp[k] = x[k];
        for (int64_t j = 0; j < n; j++) FD[j * n + k] = (gp[j] - gm[j]) / (2 * h);
    }
    free(xp), free(gp), free(gm);
    return ok;
}

/* The analytic Hessian against central differences of the first derivative, and against
 * `hand` (n x n) when given. */
static void second_at(const char *name, fwd_fn L, const void *ctx, const double *x, Shape s, const double *hand,
                      const char *file, int line) {
    set_ctx("%s", name);
    int64_t n = numel_of_shape(s);
    double *H = calloc((size_t)(n * n), sizeof *H), *FD = calloc((size_t)(n * n), sizeof *FD);
    if (hessian_analytic(H, L, ctx, x, s) && hessian_fd(FD, L, ctx, x, s)) {
        arrays_close_at("Hessian vs finite differences of the first derivative", H, FD, n * n, 1e-6, 1e-6, file,
                        line);
        if (hand) arrays_close_at("Hessian vs hand derivation", H, hand, n * n, 1e-12, 1e-12, file, line);
    }
    free(H), free(FD);
    set_ctx("%s", "");
}
#define SECOND(name, L, ctx, x, s, hand) second_at((name), (L), (ctx), (x), (s), (hand), HERE)

/* For ag_gradcheck of a gradient: out = sum(gx * gx) + sum(gy) with (gx, gy) the gradient of
 * sum(my_mul(x, y) * x) by ag_grad with create_graph. ag_gradcheck's finite-difference calls
 * pass leaves that do not require grad (and may run with grad mode off): turn both on. */
static ag_status f_grad_of_mul(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    (void)ctx;
    bool prev = true;
    ag_set_grad_enabled(&prev, true);
    ag_status st = AG_OK;
    for (int i = 0; i < 2 && !st; i++) {
        bool rg = false;
        st = ag_tensor_requires_grad(&rg, in[i]);
        if (!st && !rg) st = ag_tensor_set_requires_grad(in[i], true);
    }
    ag_tensor m = 0, p = 0, l = 0, g[2] = {0, 0}, gg = 0, a = 0, b = 0;
    if (!st) st = ag_custom_op_apply(&m, 1, g_mul, in, 2);
    if (!st) st = ag_mul(&p, m, in[0]);
    if (!st) st = ag_sum(&l, p, NULL, 0, false);
    if (!st) st = ag_grad(g, &l, 1, NULL, in, 2, true, true, false);
    if (!st) st = ag_mul(&gg, g[0], g[0]);
    if (!st) st = ag_sum(&a, gg, NULL, 0, false);
    if (!st) st = ag_sum(&b, g[1], NULL, 0, false);
    if (!st) st = ag_add(out, a, b);
    ag_tensor_free(m), ag_tensor_free(p), ag_tensor_free(l), free_n(g, 2), ag_tensor_free(gg);
    ag_tensor_free(a), ag_tensor_free(b);
    ag_set_grad_enabled(NULL, prev);
    return st;
}

/* my_mul(x, y) with y a constant made inside (no tangent in a forward-mode pass). */
static ag_status f_mul_const(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    ag_tensor y = const_tensor(ctx);
    ag_status st = ag_custom_op_apply(out, 1, g_mul, (ag_tensor[]){in[0], y}, 2);
    ag_tensor_free(y);
    return st;
}

static void test_second_derivatives(void) {
    int b_exp = atomic_load(&s_exp.backward);
    /* exp: H = diag(exp x) by hand; the second derivative goes through the saved output only. */
    double x4[4] = {-0.7, 0.1, 0.5, 1.2}, hand4[16] = {0};
    for (int i = 0; i < 4; i++) hand4[i * 5] = exp(x4[i]);
    SECOND("sum(my_exp(x))", L_exp, NULL, x4, SHAPE(4), hand4);
    CHECK(atomic_load(&s_exp.backward) > b_exp);

    /* (sum sin x)^2: H_jk = 2 cos x_j cos x_k - 2 delta_jk (sum sin x) sin x_j, by hand. */
    double x3[3] = {0.3, -1.1, 2.0}, hand3[9], S = 0;
    for (int i = 0; i < 3; i++) S += sin(x3[i]);
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 3; k++) hand3[j * 3 + k] = 2 * cos(x3[j]) * cos(x3[k]) - (j == k ? 2 * S * sin(x3[j]) : 0);
    SECOND("(sum sincos(x)[0])^2", L_sinsq, NULL, x3, SHAPE(3), hand3);

    /* sum(sin x cos x) = sum(sin 2x) / 2: H = diag(-2 sin 2x), by hand. */
    double x5[5], hand5[25] = {0};
    fill(x5, 5, 0.4);
    for (int i = 0; i < 5; i++) hand5[i * 6] = -2 * sin(2 * x5[i]);
    SECOND("sum(sin x * cos x)", L_sincos, NULL, x5, SHAPE(5), hand5);

    /* Broadcasting ops: finite differences only. */
    double x23[6], y3[3], b3[3], c21[2];
    fill(x23, 6, 1.3), fill(y3, 3, 2.2), fill(b3, 3, 0.6), fill(c21, 2, 3.9);
    constant yc = {y3, SHAPE(3)};
    SECOND("sum(my_mul(x, y)^2 * x), y [3] broadcast", L_mul, &yc, x23, SHAPE(2, 3), NULL);
    constant bc[2] = {{b3, SHAPE(3)}, {c21, SHAPE(2, 1)}};
    SECOND("sum(fma3(x, b, c)[0] * fma3(...)[1]^2)", L_fma3, bc, x23, SHAPE(2, 3), NULL);

    /* ag_gradcheck of a function that returns a gradient made with create_graph. */
    AGCHECK("gradient of sum(my_mul(x, y) * x), both inputs", f_grad_of_mul, IN2(x23, SHAPE(2, 3), y3, SHAPE(3)));
}

/* ========================================================================================== */
/* The same as the catalogue                                                                  */
/* ========================================================================================== */

static void same_at(const char *name, fwd_fn custom, fwd_fn reference, const Inputs *in, ag_dtype dt, double tol,
                    const char *file, int line) {
    set_ctx("%s (%s)", name, dt == AG_FLOAT32 ? "float32" : "float64");
    Run a, b;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    if (run_at(&a, name, custom, NULL, in, dt, NULL, file, line) &&
        run_at(&b, name, reference, NULL, in, dt, NULL, file, line)) {
        char b1[96], b2[96];
        if (check_at(shape_eq(a.out_shape, b.out_shape), file, line, "output shape %s vs %s",
                     shape_str(a.out_shape, b1, sizeof b1), shape_str(b.out_shape, b2, sizeof b2)))
            arrays_close_at("values", a.out, b.out, a.m, tol, tol, file, line);
        for (int i = 0; i < in->n; i++) {
            char what[64];
            snprintf(what, sizeof what, "gradient of input %d", i);
            if (check_at(a.grad[i] && b.grad[i], file, line, "%s missing", what))
                arrays_close_at(what, a.grad[i], b.grad[i], numel_of_shape(in->shape[i]), tol, tol, file, line);
        }
    }
    run_free(&a), run_free(&b);
    set_ctx("%s", "");
}
#define SAME(name, custom, reference, in, dt, tol) same_at((name), (custom), (reference), (in), (dt), (tol), HERE)

static void test_same_as_catalogue(void) {
    double a34[12], b4[4], c31[3], x41[4], y15[5];
    fill(a34, 12, 0.2), fill(b4, 4, 1.7), fill(c31, 3, 2.9), fill(x41, 4, 3.1), fill(y15, 5, 0.8);
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_FLOAT32 : AG_FLOAT64;
        double tol = k ? 2e-6 : 1e-13;
        SAME("my_mul [3,4] * [4]", f_mul, c_mul, IN2(a34, SHAPE(3, 4), b4, SHAPE(4)), dt, tol);
        SAME("sincos", f_sincos, c_sincos, IN1(a34, SHAPE(3, 4)), dt, tol);
        SAME("my_exp", f_exp, c_exp, IN1(b4, SHAPE(4)), dt, tol);
        SAME("fma3", f_fma3, c_fma3, IN3(a34, SHAPE(3, 4), b4, SHAPE(4), c31, SHAPE(3, 1)), dt, tol);
        SAME("hypot", f_hypot, c_hypot, IN2(x41, SHAPE(4, 1), y15, SHAPE(1, 5)), dt, tol);
    }
}

/* ========================================================================================== */
/* Forward mode                                                                               */
/* ========================================================================================== */

/* ag_jvp of f at primals `in` (dtype dt) along tangents `tan` (shapes of in): output and tangent
 * as float64 (malloc'ed), their count in *m. */
static bool jvp_at(double **out, double **tangent, int64_t *m, fwd_fn f, const Inputs *in, const double *const *tan,
                   ag_dtype dt) {
    ag_tensor p[MAXIN] = {0}, t[MAXIN] = {0}, o = 0, ot = 0;
    for (int i = 0; i < in->n; i++) {
        p[i] = make_at(in->data[i], in->shape[i], dt, false, HERE);
        t[i] = make_at(tan[i], in->shape[i], dt, false, HERE);
    }
    build_ud ud = {f, NULL};
    bool ok = CHECK_OK(ag_jvp(&o, &ot, build_adapter, &ud, p, in->n, t));
    Shape s1, s2;
    if (ok) {
        *out = read_at(o, &s1, HERE);
        *tangent = read_at(ot, &s2, HERE);
        ok = *out && *tangent && CHECK(shape_eq(s1, s2));
        *m = numel_of_shape(s1);
    }
    for (int i = 0; i < in->n; i++) ag_tensor_free(p[i]), ag_tensor_free(t[i]);
    ag_tensor_free(o), ag_tensor_free(ot);
    return ok;
}

static void jvp_same_at(const char *name, fwd_fn custom, fwd_fn reference, const Inputs *in,
                        const double *const *tan, ag_dtype dt, double tol, op_stats *stats, const char *file,
                        int line) {
    set_ctx("jvp %s (%s)", name, dt == AG_FLOAT32 ? "float32" : "float64");
    double *o1 = NULL, *t1 = NULL, *o2 = NULL, *t2 = NULL;
    int64_t m1 = 0, m2 = 0;
    int before = atomic_load(&stats->jvp);
    if (jvp_at(&o1, &t1, &m1, custom, in, tan, dt) && jvp_at(&o2, &t2, &m2, reference, in, tan, dt) &&
        check_at(m1 == m2, file, line, "sizes %" PRId64 " vs %" PRId64, m1, m2)) {
        arrays_close_at("output", o1, o2, m1, tol, tol, file, line);
        arrays_close_at("tangent", t1, t2, m1, tol, tol, file, line);
        check_at(atomic_load(&stats->jvp) == before + 1, file, line, "the JVP callback ran %d times, expected once",
                 atomic_load(&stats->jvp) - before);
    }
    free(o1), free(t1), free(o2), free(t2);
    set_ctx("%s", "");
}
#define JVP_SAME(name, custom, reference, in, tan, dt, tol, stats)                             \
    jvp_same_at((name), (custom), (reference), (in), (tan), (dt), (tol), (stats), HERE)

typedef struct {
    ag_status inner;
} nojvp_ud;

/* hypot (no JVP) inside ag_jvp: keeps ag_custom_op_apply's status and returns it. */
static int32_t build_nojvp(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    (void)n;
    nojvp_ud *u = user_data;
    u->inner = ag_custom_op_apply(out, 1, g_hypot, in, 2);
    if (u->inner != AG_OK) {
        bool found = strstr(ag_last_error(),
                            "ag_custom_op_apply: custom op 'hypot' was defined without a JVP, so it cannot be "
                            "differentiated in forward mode") != NULL;
        if (!found) u->inner = -1000; /* the message was not the expected one */
    }
    return u->inner;
}

static void test_jvp(void) {
    double a23[6], b3[3], c21[2], ta23[6], tb3[3], tc21[2];
    fill(a23, 6, 0.5), fill(b3, 3, 1.5), fill(c21, 2, 2.5), fill(ta23, 6, 3.5), fill(tb3, 3, 4.5);
    fill(tc21, 2, 5.5);
    for (int k = 0; k < 2; k++) {
        ag_dtype dt = k ? AG_FLOAT32 : AG_FLOAT64;
        double tol = k ? 2e-6 : 1e-13;
        JVP_SAME("my_mul", f_mul, c_mul, IN2(a23, SHAPE(2, 3), b3, SHAPE(3)), ((const double *const[]){ta23, tb3}), dt,
                 tol, &s_mul);
        JVP_SAME("sincos", f_sincos, c_sincos, IN1(a23, SHAPE(2, 3)), ((const double *const[]){ta23}), dt, tol,
                 &s_sincos);
        JVP_SAME("my_exp", f_exp, c_exp, IN1(b3, SHAPE(3)), ((const double *const[]){tb3}), dt, tol, &s_exp);
        JVP_SAME("fma3", f_fma3, c_fma3, IN3(a23, SHAPE(2, 3), b3, SHAPE(3), c21, SHAPE(2, 1)),
                 ((const double *const[]){ta23, tb3, tc21}), dt, tol, &s_fma3);
    }
    /* Hand: the tangent of cos x along t is -sin(x) t. */
    double *o = NULL, *t = NULL;
    int64_t m = 0;
    if (jvp_at(&o, &t, &m, f_sincos_second, IN1(a23, SHAPE(2, 3)), (const double *const[]){ta23}, AG_FLOAT64) &&
        CHECK(m == 6)) {
        double want[6];
        for (int i = 0; i < 6; i++) want[i] = -sin(a23[i]) * ta23[i];
        ARRAYS_CLOSE("jvp of sincos's cos by hand", t, want, 6);
    }
    free(o), free(t);

    /* A tangent on one input only: y made inside the build carries none, so my_mul's JVP gets
     * AG_NULL_TENSOR for it; by hand the tangent is tx * y (broadcast to [2, 3]). */
    {
        ag_tensor px = MAKE(b3, SHAPE(3)), tx = MAKE(tb3, SHAPE(3)), po = 0, pt = 0;
        constant yc = {a23, SHAPE(2, 3)};
        build_ud bu = {f_mul_const, &yc};
        int before = atomic_load(&s_mul.jvp);
        if (CHECK_OK(ag_jvp(&po, &pt, build_adapter, &bu, &px, 1, &tx))) {
            double want[6];
            for (int i = 0; i < 6; i++) want[i] = tb3[i % 3] * a23[i];
            EXPECT_TENSOR(pt, SHAPE(2, 3), want, "my_mul's tangent with one input's tangent missing");
        }
        CHECK(atomic_load(&s_mul.jvp) == before + 1);
        FREE(px, tx, po, pt);
    }
    /* ag_hvp through my_exp's saved output: d2/dx2 sum(exp x) v = exp(x) v. */
    ag_tensor x = MAKE(D(0.1, -0.4, 0.9), SHAPE(3)), v = MAKE(D(1.0, 2.0, -0.5), SHAPE(3)), h = 0;
    build_ud ud = {L_exp, NULL};
    if (CHECK_OK(ag_hvp(&h, build_adapter, &ud, x, v)))
        EXPECT_TENSOR(h, SHAPE(3), D(exp(0.1), 2 * exp(-0.4), -0.5 * exp(0.9)), "hvp through my_exp");
    FREE(x, v, h);

    /* No JVP: the op's apply inside the pass fails with AG_ERR_STATE; ag_jvp quotes it. */
    ag_tensor p[2] = {MAKE(D(1, 2), SHAPE(2)), MAKE(D(3, 4), SHAPE(2))};
    ag_tensor tg[2] = {MAKE(D(1, 0), SHAPE(2)), MAKE(D(0, 1), SHAPE(2))};
    ag_tensor out = SENTINEL, otan = SENTINEL;
    nojvp_ud u = {AG_OK};
    CHECK_ERR(ag_jvp(&out, &otan, build_nojvp, &u, p, 2, tg), AG_ERR_CALLBACK);
    CHECKF(u.inner == AG_ERR_STATE, "ag_custom_op_apply of an op without a JVP gave %d (-1000: another message)",
           (int)u.inner);
    CHECK(strstr(ag_last_error(), "without a JVP") != NULL);
    CHECK(out == SENTINEL && otan == SENTINEL);
    /* Outside a forward-mode pass the same op applies fine. */
    ag_tensor r = 0;
    if (CHECK_OK(ag_custom_op_apply(&r, 1, g_hypot, p, 2))) EXPECT_TENSOR(r, SHAPE(2), D(sqrt(10.0), sqrt(20.0)), "hypot");
    FREE(r, p[0], p[1], tg[0], tg[1]);
}

/* ========================================================================================== */
/* Payload destroy                                                                            */
/* ========================================================================================== */

static ag_custom_op new_exp_op(op_stats *st) {
    ag_custom_op op = 0;
    CHECK_OK(ag_custom_op_new(&op, "counted_exp", 1, 1, exp_forward, exp_backward, exp_jvp, st, stats_destroy));
    return op;
}

typedef struct {
    ag_custom_op op;
} cap_one;

/* outputs[0] = sum(op(x)) and outputs[1] = d/dx of it. */
static int32_t cap_exp_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                          void *user_data) {
    (void)noutputs, (void)ninputs;
    const cap_one *c = user_data;
    ag_tensor e = 0;
    ag_status st = ag_custom_op_apply(&e, 1, c->op, inputs, 1);
    if (!st) st = ag_sum(&outputs[0], e, NULL, 0, false);
    if (!st) st = ag_grad(&outputs[1], &outputs[0], 1, NULL, inputs, 1, false, false, false);
    ag_tensor_free(e);
    return st;
}

static void test_destroy(void) {
    /* 1. The op freed first, the graph later: destroy waits for the graph. */
    op_stats a = {0};
    ag_custom_op op = new_exp_op(&a);
    ag_tensor x = MAKE_RG(D(0.5, 1.5), SHAPE(2)), y = 0, s = 0;
    CHECK_OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    CHECK_OK(ag_sum(&s, y, NULL, 0, false));
    CHECK_OK(ag_custom_op_free(op));
    CHECK(atomic_load(&a.destroyed) == 0);
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, true, false)); /* the backward still runs the callback */
    CHECK(atomic_load(&a.backward) == 1 && atomic_load(&a.destroyed) == 0);
    FREE(s);
    CHECK(atomic_load(&a.destroyed) == 0); /* y's graph still holds it */
    FREE(y);
    CHECK(atomic_load(&a.destroyed) == 1);
    CHECK_ERR(ag_custom_op_free(op), AG_ERR_INVALID_HANDLE);
    CHECK(atomic_load(&a.destroyed) == 1);

    /* 2. The graph gone first: destroy on ag_custom_op_free, not before. */
    op_stats b = {0};
    op = new_exp_op(&b);
    CHECK_OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    FREE(y);
    CHECK(atomic_load(&b.destroyed) == 0);
    CHECK_OK(ag_custom_op_free(op));
    CHECK(atomic_load(&b.destroyed) == 1);

    /* 3. No graph at all (input without grad). */
    op_stats c = {0};
    op = new_exp_op(&c);
    ag_tensor z = MAKE(D(1, 2), SHAPE(2));
    CHECK_OK(ag_custom_op_apply(&y, 1, op, &z, 1));
    CHECK(atomic_load(&c.destroyed) == 0);
    CHECK_OK(ag_custom_op_free(op));
    CHECK(atomic_load(&c.destroyed) == 1);
    FREE(y, z);
    CHECK(atomic_load(&c.destroyed) == 1);

    /* 4. A second-order graph: the create_graph gradient's graph goes through the op's node
     * (my_exp's saved output), so it keeps the op until it goes; its backward calls the op. */
    op_stats d = {0};
    op = new_exp_op(&d);
    ag_tensor g = 0, g2 = 0, gs = 0;
    CHECK_OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    CHECK_OK(ag_sum(&s, y, NULL, 0, false));
    CHECK_OK(ag_grad(&g, &s, 1, NULL, &x, 1, false, true, false));
    CHECK_OK(ag_custom_op_free(op));
    FREE(s, y);
    CHECK(atomic_load(&d.destroyed) == 0);
    CHECK_OK(ag_sum(&gs, g, NULL, 0, false));
    int bw = atomic_load(&d.backward);
    CHECK_OK(ag_grad(&g2, &gs, 1, NULL, &x, 1, true, false, false));
    EXPECT_TENSOR(g2, SHAPE(2), D(exp(0.5), exp(1.5)), "second derivative after the op was freed");
    CHECK(atomic_load(&d.backward) == bw + 1 && atomic_load(&d.destroyed) == 0);
    FREE(gs, g2);
    CHECK(atomic_load(&d.destroyed) == 0);
    FREE(g);
    CHECK(atomic_load(&d.destroyed) == 1);
    /* A backward without retain_graph releases the graph: nothing can call the op after it,
     * so destroy may run then, before the last handle goes (and runs once). */
    op_stats d2 = {0};
    op = new_exp_op(&d2);
    CHECK_OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    CHECK_OK(ag_sum(&s, y, NULL, 0, false));
    CHECK_OK(ag_custom_op_free(op));
    CHECK(atomic_load(&d2.destroyed) == 0);
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    CHECK(atomic_load(&d2.destroyed) <= 1);
    FREE(s, y);
    CHECK(atomic_load(&d2.destroyed) == 1);

    /* 5. A captured function keeps the op: replays call it after ag_custom_op_free. */
    op_stats e = {0};
    cap_one co = {new_exp_op(&e)};
    ag_function f = 0;
    ag_tensor w = MAKE_RG(D(0.25, -0.5), SHAPE(2));
    CHECK_OK(ag_capture(&f, cap_exp_fn, &w, 1, 2, &co));
    CHECK_OK(ag_custom_op_free(co.op));
    CHECK(atomic_load(&e.destroyed) == 0);
    ag_tensor o[2] = {0, 0};
    z = MAKE(D(1, 2), SHAPE(2));
    int fw = atomic_load(&e.forward);
    if (CHECK_OK(ag_function_call(o, 2, f, &z, 1))) {
        EXPECT_TENSOR(o[0], S0, D(exp(1) + exp(2)), "replay after ag_custom_op_free");
        EXPECT_TENSOR(o[1], SHAPE(2), D(exp(1), exp(2)), "replayed gradient");
    }
    CHECK(atomic_load(&e.forward) == fw + 1 && atomic_load(&e.destroyed) == 0);
    free_n(o, 2);
    CHECK_OK(ag_function_free(f));
    CHECK(atomic_load(&e.destroyed) == 1);
    FREE(w, x, z);

    /* 6. ag_custom_op_new fails: destroy is not called, now or later; *out is not written. */
    op_stats n = {0};
    ag_custom_op bad = (ag_custom_op)SENTINEL;
    CHECK_ERR(ag_custom_op_new(&bad, "x", 1, 1, NULL, exp_backward, NULL, &n, stats_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_custom_op_new(&bad, NULL, 1, 1, exp_forward, exp_backward, NULL, &n, stats_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_custom_op_new(&bad, "", 1, 1, exp_forward, exp_backward, NULL, &n, stats_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_custom_op_new(&bad, "x", 0, 1, exp_forward, exp_backward, NULL, &n, stats_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_custom_op_new(&bad, "x", 1, 257, exp_forward, exp_backward, NULL, &n, stats_destroy),
              AG_ERR_ARGUMENT);
    CHECK_ERR(ag_custom_op_new(NULL, "x", 1, 1, exp_forward, exp_backward, NULL, &n, stats_destroy), AG_ERR_ARGUMENT);
    CHECK(bad == (ag_custom_op)SENTINEL && atomic_load(&n.destroyed) == 0);

    /* 7. No destroy function: nothing to call, the op works and frees. */
    op = 0;
    CHECK_OK(ag_custom_op_new(&op, "plain", 1, 1, exp_forward, exp_backward, NULL, &n, NULL));
    CHECK_OK(ag_custom_op_free(op));
    CHECK(atomic_load(&n.destroyed) == 0);
}

/* ========================================================================================== */
/* Threads                                                                                    */
/* ========================================================================================== */

static op_stats s_via;
static ag_custom_op g_via;

/* via_thread: 3 x; its backward has another thread compute 3 g with the library and waits. */
static int32_t via_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin, (void)ctx;
    COUNT(payload, forward);
    return ag_mul_scalar(&out[0], in[0], 3.0);
}

typedef struct {
    ag_tensor grad, result;
    ag_status st;
} via_job;

static void *via_helper(void *arg) {
    via_job *j = arg;
    ag_tensor t = 0;
    j->st = ag_mul_scalar(&t, j->grad, 1.5);
    if (!j->st) j->st = ag_add(&j->result, t, t); /* 3 g */
    ag_tensor_free(t);
    return NULL;
}

static int32_t via_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    (void)nin, (void)nout, (void)ctx;
    COUNT(payload, backward);
    via_job j = {gout[0], 0, AG_ERR_INTERNAL};
    pthread_t t;
    if (pthread_create(&t, NULL, via_helper, &j) != 0) {
        ag_set_error("via_thread: pthread_create failed");
        return 1;
    }
    pthread_join(t, NULL); /* waits for a thread that calls the library */
    if (j.st) {
        ag_tensor_free(j.result);
        return j.st;
    }
    gin[0] = j.result;
    return 0;
}

/* L = sum(via(sincos(x * w)[0]) + sincos(x * w)[1]^2): mul, sincos and via_thread. Writes L,
 * dL/dx [6], dL/dw [3]. Callable from any thread (counts no checks). */
static ag_status thread_step(const double *xv, const double *wv, double *L, double *gx, double *gw) {
    ag_tensor x = 0, w = 0, y = 0, o[2] = {0, 0}, v = 0, sq = 0, s = 0, l = 0, g[2] = {0, 0};
    ag_status st = ag_tensor_from_data(&x, xv, I64(2, 3), 2, AG_FLOAT64);
    if (!st) st = ag_tensor_from_data(&w, wv, I64(3), 1, AG_FLOAT64);
    if (!st) st = ag_tensor_set_requires_grad(x, true);
    if (!st) st = ag_tensor_set_requires_grad(w, true);
    if (!st) st = ag_custom_op_apply(&y, 1, g_mul, (ag_tensor[]){x, w}, 2);
    if (!st) st = ag_custom_op_apply(o, 2, g_sincos, &y, 1);
    if (!st) st = ag_custom_op_apply(&v, 1, g_via, &o[0], 1);
    if (!st) st = ag_mul(&sq, o[1], o[1]);
    if (!st) st = ag_add(&s, v, sq);
    if (!st) st = ag_sum(&l, s, NULL, 0, false);
    if (!st) st = ag_grad(g, &l, 1, NULL, (ag_tensor[]){x, w}, 2, false, false, false);
    if (!st) st = ag_tensor_copy_data(L, 1, AG_FLOAT64, l);
    if (!st) st = ag_tensor_copy_data(gx, 6, AG_FLOAT64, g[0]);
    if (!st) st = ag_tensor_copy_data(gw, 3, AG_FLOAT64, g[1]);
    ag_tensor_free(x), ag_tensor_free(w), ag_tensor_free(y), free_n(o, 2), ag_tensor_free(v);
    ag_tensor_free(sq), ag_tensor_free(s), ag_tensor_free(l), free_n(g, 2);
    return st;
}

enum { NTHREADS = 4, ROUNDS = 8 };
typedef struct {
    double x[6], w[3];
    double L, gx[6], gw[3]; /* the single-threaded reference */
    atomic_int mismatches, failures;
    char message[256];
} thread_case;

static void *thread_main(void *arg) {
    thread_case *c = arg;
    for (int r = 0; r < ROUNDS; r++) {
        double L, gx[6], gw[3];
        ag_status st = thread_step(c->x, c->w, &L, gx, gw);
        if (st) {
            if (atomic_fetch_add(&c->failures, 1) == 0) snprintf(c->message, sizeof c->message, "%s", ag_last_error());
            continue;
        }
        if (memcmp(&L, &c->L, sizeof L) || memcmp(gx, c->gx, sizeof gx) || memcmp(gw, c->gw, sizeof gw))
            atomic_fetch_add(&c->mismatches, 1);
    }
    return NULL;
}

static void test_threads(void) {
    CHECK_OK(ag_custom_op_new(&g_via, "via_thread", 1, 1, via_forward, via_backward, NULL, &s_via, stats_destroy));
    static thread_case cases[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        thread_case *c = &cases[t];
        memset(c, 0, sizeof *c);
        fill(c->x, 6, 0.7 * t + 0.1), fill(c->w, 3, 1.9 * t + 0.2);
        if (!CHECK_OK(thread_step(c->x, c->w, &c->L, c->gx, c->gw))) return;
    }
    /* The reference against hand derivation for thread 0: y = x w, L = sum(3 sin y + cos^2 y),
     * dL/dy = 3 cos y - 2 cos y sin y; dL/dx = w dL/dy; dL/dw = sum over rows of x dL/dy. */
    {
        const thread_case *c = &cases[0];
        double L = 0, gx[6], gw[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) {
            double wv = c->w[i % 3], y = c->x[i] * wv, d = 3 * cos(y) - 2 * cos(y) * sin(y);
            L += 3 * sin(y) + cos(y) * cos(y);
            gx[i] = wv * d;
            gw[i % 3] += c->x[i] * d;
        }
        CHECK_CLOSE(c->L, L, 1e-12);
        ARRAYS_CLOSE("thread 0 reference dL/dx by hand", c->gx, gx, 6);
        ARRAYS_CLOSE("thread 0 reference dL/dw by hand", c->gw, gw, 3);
    }
    int via_before = atomic_load(&s_via.backward);
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) CHECK(pthread_create(&th[t], NULL, thread_main, &cases[t]) == 0);
    for (int t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < NTHREADS; t++) {
        CHECKF(atomic_load(&cases[t].failures) == 0, "thread %d: %d rounds failed: %s", t,
               atomic_load(&cases[t].failures), cases[t].message);
        CHECKF(atomic_load(&cases[t].mismatches) == 0, "thread %d: %d rounds differ from the reference", t,
               atomic_load(&cases[t].mismatches));
    }
    CHECK(atomic_load(&s_via.backward) == via_before + NTHREADS * ROUNDS);
    CHECK_OK(ag_custom_op_free(g_via));
    CHECK(atomic_load(&s_via.destroyed) == 1);
}

/* ========================================================================================== */
/* Capture and replay                                                                         */
/* ========================================================================================== */

typedef struct {
    ag_tensor w; /* a parameter made outside the capture */
} cap_ud;

/* loss = sum(my_exp(sincos(x * w)[0]) * sincos(x * w)[1]); outputs loss and d loss / d w. */
static int32_t cap_step(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                        void *user_data) {
    if (noutputs != 2 || ninputs != 1) return 90;
    const cap_ud *u = user_data;
    ag_tensor y = 0, o[2] = {0, 0}, e = 0, p = 0;
    ag_status st = ag_custom_op_apply(&y, 1, g_mul, (ag_tensor[]){inputs[0], u->w}, 2);
    if (!st) st = ag_custom_op_apply(o, 2, g_sincos, &y, 1);
    if (!st) st = ag_custom_op_apply(&e, 1, g_exp, &o[0], 1);
    if (!st) st = ag_mul(&p, e, o[1]);
    if (!st) st = ag_sum(&outputs[0], p, NULL, 0, false);
    if (!st) st = ag_grad(&outputs[1], &outputs[0], 1, NULL, &u->w, 1, false, false, false);
    ag_tensor_free(y), free_n(o, 2), ag_tensor_free(e), ag_tensor_free(p);
    return st;
}

static bool same_bits(ag_tensor a, ag_tensor b) {
    int64_t na = -1, nb = -2;
    if (!TRY(ag_tensor_numel(&na, a)) || !TRY(ag_tensor_numel(&nb, b)) || !TRY_TRUE(na == nb)) return false;
    double *va = malloc((size_t)na * sizeof *va), *vb = malloc((size_t)nb * sizeof *vb);
    bool ok = TRY(ag_tensor_copy_data(va, na, AG_FLOAT64, a)) && TRY(ag_tensor_copy_data(vb, nb, AG_FLOAT64, b)) &&
              memcmp(va, vb, (size_t)na * sizeof *va) == 0;
    free(va), free(vb);
    return ok;
}

typedef struct {
    int f_mul, f_sc, f_exp, b_mul, b_sc, b_exp;
} counts;

static counts now(void) {
    return (counts){atomic_load(&s_mul.forward),  atomic_load(&s_sincos.forward),  atomic_load(&s_exp.forward),
                    atomic_load(&s_mul.backward), atomic_load(&s_sincos.backward), atomic_load(&s_exp.backward)};
}

static bool counts_moved(counts a, counts b, int by) {
    return b.f_mul - a.f_mul == by && b.f_sc - a.f_sc == by && b.f_exp - a.f_exp == by && b.b_mul - a.b_mul == by &&
           b.b_sc - a.b_sc == by && b.b_exp - a.b_exp == by;
}

static void test_capture(void) {
    double wv[3] = {0.5, -1.0, 2.0}, xv[6];
    cap_ud u = {MAKE_RG(wv, SHAPE(3))};
    fill(xv, 6, 0.0);
    ag_tensor example = MAKE(xv, SHAPE(2, 3));
    ag_function f = 0;
    counts c0 = now();
    if (!CHECK_OK(ag_capture(&f, cap_step, &example, 1, 2, &u))) {
        FREE(u.w, example);
        return;
    }
    counts c1 = now();
    CHECKF(counts_moved(c0, c1, 1), "the capture ran each callback once");
    int64_t info[AG_FUNCTION_INFO_COUNT];
    if (CHECK_OK(ag_function_info(info, AG_FUNCTION_INFO_COUNT, f))) CHECK(info[5] >= 6); /* >= 3 forwards, 3 backwards rerun */
    for (int r = 0; r < 3; r++) {
        set_ctx("replay %d", r);
        double nx[6];
        fill(nx, 6, 1.0 + 2.3 * r);
        ag_tensor x = MAKE(nx, SHAPE(2, 3)), rep[2] = {0, 0}, eag[2] = {0, 0};
        counts before = now();
        CHECK_OK(ag_function_call(rep, 2, f, &x, 1));
        counts mid = now();
        CHECKF(counts_moved(before, mid, 1), "a replay calls each callback again, once");
        CHECK(cap_step(eag, 2, &x, 1, &u) == 0);
        CHECKF(counts_moved(mid, now(), 1), "the eager run calls each callback once");
        CHECKF(same_bits(rep[0], eag[0]), "replayed loss differs from the eager loss");
        CHECKF(same_bits(rep[1], eag[1]), "replayed gradient differs from the eager gradient");
        /* An independent check of the values: plain C on the same inputs. */
        double loss = 0, gw[3] = {0, 0, 0};
        for (int i = 0; i < 6; i++) {
            double y = nx[i] * wv[i % 3], s = sin(y), c = cos(y), e = exp(s);
            loss += e * c;
            gw[i % 3] += nx[i] * (e * c * c - e * s); /* d/dy e^{sin y} cos y */
        }
        EXPECT_TENSOR_TOL(rep[0], S0, &loss, 1e-12, 1e-12, "replayed loss vs plain C");
        EXPECT_TENSOR_TOL(rep[1], SHAPE(3), gw, 1e-12, 1e-12, "replayed gradient vs plain C");
        FREE(x, rep[0], rep[1], eag[0], eag[1]);
    }
    set_ctx("%s", "");
    CHECK_OK(ag_function_free(f));
    FREE(u.w, example);
}

/* ========================================================================================== */
/* Callback failures                                                                          */
/* ========================================================================================== */

enum {
    M_OK,
    M_RET7,            /* returns 7, no message of its own */
    M_SET_ERROR,       /* ag_set_error("...") then returns 7 */
    M_FAILED_CALL,     /* a library call fails, then returns its status */
    M_NO_HANDLE,       /* returns 0 without writing outputs[1] (forward) / input_grads[0] */
    M_FREED_HANDLE,    /* writes a handle it freed */
    M_MADE_UP,         /* writes a made-up handle */
    M_OTHER_KIND,      /* writes the custom op's own handle */
    M_SHAPE,           /* wrong shape */
    M_DTYPE,           /* wrong dtype */
    M_FREE_BORROWED,   /* frees a handle it was given */
    M_WRITE_THEN_FAIL, /* writes its handles, then returns 5 */
    M_KEEP_CTX,        /* forward: keeps its context for later */
    M_STALE_CTX,       /* uses the forward's context after it returned */
    M_SAVE,            /* ag_custom_ctx_save outside the forward */
    M_BROADCAST,       /* backward: a gradient in a broadcast shape [3, 2] for input [2] */
    M_IDENTITY         /* writes a handle it was given */
};

typedef struct {
    int fwd, bwd, jvp;
    ag_custom_ctx kept;
    ag_custom_op self;
} bad_cfg;

static bad_cfg g_bad;
static ag_custom_op g_bad_op;

/* x [2] -> (exp x, 2 x), float64. */
static int32_t bad_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin;
    bad_cfg *c = payload;
    ag_tensor junk = 0;
    switch (c->fwd) {
    case M_RET7: return 7;
    case M_SET_ERROR: ag_set_error("the solver did not converge after 50 iterations"); return 7;
    case M_FAILED_CALL: return ag_exp(&junk, (ag_tensor)0x0123456789abcdefULL);
    case M_KEEP_CTX: c->kept = ctx; break;
    default: break;
    }
    ag_status st = ag_custom_ctx_save(ctx, in, 1);
    if (!st) st = ag_exp(&out[0], in[0]);
    if (st) return st;
    switch (c->fwd) {
    case M_NO_HANDLE: return 0;
    case M_FREED_HANDLE:
        ag_mul_scalar(&out[1], in[0], 2);
        ag_tensor_free(out[1]);
        return 0;
    case M_MADE_UP: out[1] = (ag_tensor)0x0123456789abcdefULL; return 0;
    case M_OTHER_KIND: out[1] = (ag_tensor)c->self; return 0;
    case M_DTYPE: return ag_tensor_zeros(&out[1], I64(2), 1, AG_FLOAT32);
    case M_IDENTITY: out[1] = in[0]; return 0;
    case M_WRITE_THEN_FAIL: ag_mul_scalar(&out[1], in[0], 2); return 5;
    case M_FREE_BORROWED:
        st = ag_mul_scalar(&out[1], in[0], 2);
        ag_tensor_free(in[0]); /* after its last use: the only thing wrong is the free */
        return st;
    default: return ag_mul_scalar(&out[1], in[0], 2);
    }
}

/* d/dx = g0 exp x + 2 g1. */
static int32_t bad_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    (void)nin, (void)nout;
    bad_cfg *c = payload;
    int64_t k = 0;
    switch (c->bwd) {
    case M_RET7: return 7;
    case M_SET_ERROR: ag_set_error("the adjoint solver did not converge"); return 7;
    case M_FAILED_CALL: return ag_tensor_zeros(&gin[0], I64(-2), 1, AG_FLOAT64);
    case M_NO_HANDLE: return 0;
    case M_MADE_UP: gin[0] = (ag_tensor)0x0123456789abcdefULL; return 0;
    case M_OTHER_KIND: gin[0] = (ag_tensor)c->self; return 0;
    case M_SHAPE: return ag_tensor_ones(&gin[0], I64(3), 1, AG_FLOAT64);
    case M_DTYPE: return ag_tensor_ones(&gin[0], I64(2), 1, AG_FLOAT32);
    case M_FREE_BORROWED: ag_tensor_free(gout[0]); return ag_tensor_ones(&gin[0], I64(2), 1, AG_FLOAT64);
    case M_STALE_CTX: return ag_custom_ctx_saved_count(&k, c->kept);
    case M_SAVE: return ag_custom_ctx_save(ctx, gout, 1);
    case M_IDENTITY: gin[0] = gout[1]; return 0; /* d/dx of the second output alone would be 2 g1 */
    case M_BROADCAST: {
        /* [3, 2]: each row the true gradient / 3, which the library sums back to [2]. */
        ag_tensor y = 0, a = 0, b = 0, t = 0, r = 0;
        ag_status st = ag_custom_ctx_saved(&y, ctx, 0);
        ag_tensor e = 0;
        if (!st) st = ag_exp(&e, y);
        if (!st) st = ag_mul(&a, gout[0], e);
        if (!st) st = ag_mul_scalar(&b, gout[1], 2);
        if (!st) st = ag_add(&t, a, b);
        if (!st) st = ag_div_scalar(&r, t, 3);
        if (!st) st = ag_expand(&gin[0], r, I64(3, 2), 2);
        ag_tensor_free(y), ag_tensor_free(e), ag_tensor_free(a), ag_tensor_free(b), ag_tensor_free(t);
        ag_tensor_free(r);
        return st;
    }
    default: break;
    }
    ag_tensor y = 0, e = 0, a = 0, b = 0;
    ag_status st = ag_custom_ctx_saved(&y, ctx, 0);
    if (!st) st = ag_exp(&e, y);
    if (!st) st = ag_mul(&a, gout[0], e);
    if (!st) st = ag_mul_scalar(&b, gout[1], 2);
    if (!st) st = ag_add(&gin[0], a, b);
    ag_tensor_free(y), ag_tensor_free(e), ag_tensor_free(a), ag_tensor_free(b);
    if (!st && c->bwd == M_FREED_HANDLE) ag_tensor_free(gin[0]);
    if (!st && c->bwd == M_WRITE_THEN_FAIL) return 5;
    return st;
}

/* tangents (exp(x) t, 2 t). */
static int32_t bad_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                       ag_custom_ctx ctx, void *payload) {
    (void)nout, (void)nin;
    bad_cfg *c = payload;
    switch (c->jvp) {
    case M_RET7: return 7;
    case M_SET_ERROR: ag_set_error("no tangent for you"); return 7;
    case M_MADE_UP: tout[0] = (ag_tensor)0x0123456789abcdefULL; return 0;
    case M_SHAPE: return ag_tensor_ones(&tout[0], I64(3), 1, AG_FLOAT64);
    case M_DTYPE: return ag_tensor_ones(&tout[0], I64(2), 1, AG_FLOAT32);
    case M_FREE_BORROWED: ag_tensor_free(tin[0]); return 0;
    case M_SAVE: return ag_custom_ctx_save(ctx, in, 1);
    default: break;
    }
    ag_tensor e = 0;
    ag_status st = ag_exp(&e, in[0]);
    if (!st && c->jvp != M_NO_HANDLE) st = ag_mul(&tout[0], tin[0], e);
    if (!st) st = ag_mul_scalar(&tout[1], tin[0], 2);
    ag_tensor_free(e);
    if (!st && c->jvp == M_FREED_HANDLE) ag_tensor_free(tout[1]);
    if (!st && c->jvp == M_WRITE_THEN_FAIL) return 5;
    return st;
}

/* Applies the bad op to a fresh leaf [0.5, -1] requiring grad; the expected status and message. */
static void forward_case(int mode, ag_status want, const char *frag, const char *file, int line) {
    set_ctx("forward mode %d", mode);
    g_bad = (bad_cfg){mode, M_OK, M_OK, 0, g_bad_op};
    int64_t before = live_handles();
    ag_tensor x = make_at(D(0.5, -1), SHAPE(2), AG_FLOAT64, true, file, line);
    ag_tensor o[2] = {SENTINEL, SENTINEL};
    ag_status st = ag_custom_op_apply(o, 2, g_bad_op, &x, 1);
    if (status_at(st, want, "ag_custom_op_apply", file, line) && want != AG_OK) {
        const char *msg = ag_last_error();
        check_at(strstr(msg, frag) != NULL, file, line, "message \"%s\" lacks \"%s\"", msg, frag);
        check_at(o[0] == SENTINEL && o[1] == SENTINEL, file, line, "outputs written on failure");
    }
    if (st == AG_OK) free_n(o, 2);
    ag_tensor_free(x);
    int64_t after = live_handles();
    check_at(after == before, file, line, "%" PRId64 " live handles before, %" PRId64 " after", before, after);
    set_ctx("%s", "");
}
#define FORWARD_CASE(mode, want, frag) forward_case((mode), (want), (frag), HERE)

/* L = sum(o0) + sum(o1) through the bad op; the backward run by ag_backward, ag_grad and ag_vjp. */
typedef struct {
    int which; /* 0 ag_backward, 1 ag_grad, 2 ag_vjp */
} bwd_how;

static int32_t build_bad(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    (void)n, (void)user_data;
    ag_tensor o[2] = {0, 0}, s = 0;
    ag_status st = ag_custom_op_apply(o, 2, g_bad_op, in, 1);
    if (!st) st = ag_add(&s, o[0], o[1]);
    if (!st) st = ag_sum(out, s, NULL, 0, false);
    free_n(o, 2), ag_tensor_free(s);
    return st;
}

static const char *const how_name[] = {"ag_backward", "ag_grad", "ag_vjp"};

static void backward_case(int mode, ag_status want, const char *frag, const char *file, int line) {
    for (int how = 0; how < 3; how++) {
        set_ctx("backward mode %d through %s", mode, how_name[how]);
        g_bad = (bad_cfg){M_KEEP_CTX, mode, M_OK, 0, g_bad_op};
        int64_t before = live_handles();
        ag_tensor x = make_at(D(0.5, -1), SHAPE(2), AG_FLOAT64, true, file, line), l = 0, g = SENTINEL;
        ag_tensor vout = SENTINEL;
        ag_status st;
        if (how < 2) {
            if (!status_at((ag_status)build_bad(&l, &x, 1, NULL), AG_OK, "build_bad", file, line)) {
                ag_tensor_free(x);
                continue;
            }
            st = how == 0 ? ag_backward(l, AG_NULL_TENSOR, false, false)
                          : ag_grad(&g, &l, 1, NULL, &x, 1, false, false, false);
        } else {
            ag_tensor one = make_at(D(1.0), S0, AG_FLOAT64, false, file, line);
            st = ag_vjp(&vout, &g, build_bad, NULL, &x, 1, one);
            ag_tensor_free(one);
        }
        if (status_at(st, want, how_name[how], file, line) && want != AG_OK) {
            const char *msg = ag_last_error();
            check_at(strstr(msg, frag) != NULL && strncmp(msg, how_name[how], strlen(how_name[how])) == 0, file,
                     line, "message \"%s\" lacks \"%s\" or does not start with %s", msg, frag, how_name[how]);
            if (how > 0) check_at(g == SENTINEL && vout == SENTINEL, file, line, "outputs written on failure");
        }
        if (st == AG_OK && how == 0) {
            g = 0;
            status_at(ag_tensor_grad(&g, x), AG_OK, "ag_tensor_grad", file, line);
        }
        if (st == AG_OK && how == 2) ag_tensor_free(vout);
        if (g != SENTINEL) ag_tensor_free(g);
        ag_tensor_free(l), ag_tensor_free(x);
        int64_t after = live_handles();
        check_at(after == before, file, line, "%" PRId64 " live handles before, %" PRId64 " after", before, after);
    }
    set_ctx("%s", "");
}
#define BACKWARD_CASE(mode, want, frag) backward_case((mode), (want), (frag), HERE)

typedef struct {
    ag_status inner;
    char message[512];
} jvp_probe;

static int32_t build_bad_jvp(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    (void)n;
    jvp_probe *p = user_data;
    ag_tensor o[2] = {0, 0};
    p->inner = ag_custom_op_apply(o, 2, g_bad_op, in, 1);
    if (p->inner) {
        snprintf(p->message, sizeof p->message, "%s", ag_last_error());
        return p->inner;
    }
    ag_status st = ag_add(out, o[0], o[1]);
    free_n(o, 2);
    return st;
}

/* The JVP run by ag_custom_op_apply inside ag_jvp: apply's status and message; ag_jvp then fails
 * with AG_ERR_CALLBACK (or, for an accepted case, gives `tangent`). */
static void jvp_case(int mode, ag_status want, const char *frag, const double *tangent, const char *file, int line) {
    set_ctx("jvp mode %d", mode);
    g_bad = (bad_cfg){M_OK, M_OK, mode, 0, g_bad_op};
    int64_t before = live_handles();
    ag_tensor x = make_at(D(0.5, -1), SHAPE(2), AG_FLOAT64, false, file, line);
    ag_tensor t = make_at(D(1, 3), SHAPE(2), AG_FLOAT64, false, file, line);
    ag_tensor out = SENTINEL, ot = SENTINEL;
    jvp_probe p = {AG_OK, ""};
    ag_status st = ag_jvp(&out, &ot, build_bad_jvp, &p, &x, 1, &t);
    check_at(p.inner == want, file, line, "ag_custom_op_apply in the pass returned %s, expected %s: %s",
             ag_status_name(p.inner), expected_name(want), p.message);
    if (want != AG_OK) {
        check_at(strstr(p.message, frag) != NULL && strncmp(p.message, "ag_custom_op_apply: ", 20) == 0, file, line,
                 "message \"%s\" lacks \"%s\"", p.message, frag);
        status_at(st, AG_ERR_CALLBACK, "ag_jvp", file, line);
        check_at(out == SENTINEL && ot == SENTINEL, file, line, "ag_jvp wrote its outputs on failure");
    } else if (status_at(st, AG_OK, "ag_jvp", file, line)) {
        expect_tensor_at(ot, SHAPE(2), tangent, 1e-12, 1e-12, "tangent", file, line);
        ag_tensor_free(out), ag_tensor_free(ot);
    }
    ag_tensor_free(x), ag_tensor_free(t);
    int64_t after = live_handles();
    check_at(after == before, file, line, "%" PRId64 " live handles before, %" PRId64 " after", before, after);
    set_ctx("%s", "");
}
#define JVP_CASE(mode, want, frag, tangent) jvp_case((mode), (want), (frag), (tangent), HERE)

static void test_failures(void) {
    char name[] = "bad";
    CHECK_OK(ag_custom_op_new(&g_bad_op, name, 1, 2, bad_forward, bad_backward, bad_jvp, &g_bad, NULL));
    memcpy(name, "XYZ", 3); /* the name was copied */

    /* The forward (ag_custom_op_apply). */
    FORWARD_CASE(M_OK, AG_OK, "");
    FORWARD_CASE(M_IDENTITY, AG_OK, "");
    FORWARD_CASE(M_RET7, AG_ERR_CALLBACK, "ag_custom_op_apply: custom op 'bad': the forward returned 7");
    FORWARD_CASE(M_SET_ERROR, AG_ERR_CALLBACK,
                 "custom op 'bad': the forward returned 7 (its last error: the solver did not converge after 50 "
                 "iterations)");
    FORWARD_CASE(M_FAILED_CALL, AG_ERR_CALLBACK,
                 "the forward returned 1 (its last error: ag_exp: a handle 0x123456789abcdef is not a live tensor "
                 "handle");
    FORWARD_CASE(M_NO_HANDLE, AG_ERR_CALLBACK,
                 "custom op 'bad': the forward returned 0 (success) but wrote no tensor handle to outputs[1]");
    FORWARD_CASE(M_FREED_HANDLE, AG_ERR_CALLBACK, "to outputs[1], which is not a live tensor handle");
    FORWARD_CASE(M_MADE_UP, AG_ERR_CALLBACK,
                 "the forward wrote 0x123456789abcdef to outputs[1], which is not a live tensor handle");
    FORWARD_CASE(M_OTHER_KIND, AG_ERR_CALLBACK, "to outputs[1], which is not a live tensor handle");
    FORWARD_CASE(M_DTYPE, AG_ERR_CALLBACK,
                 "custom op 'bad': the forward returned output 0 as float64 and output 1 as float32; the outputs of "
                 "an op share one dtype");
    FORWARD_CASE(M_FREE_BORROWED, AG_ERR_CALLBACK,
                 "custom op 'bad': the forward freed inputs[0], a tensor handle it was given");
    FORWARD_CASE(M_WRITE_THEN_FAIL, AG_ERR_CALLBACK, "custom op 'bad': the forward returned 5");

    /* A context used after its callback returned. */
    g_bad = (bad_cfg){M_KEEP_CTX, M_OK, M_OK, 0, g_bad_op};
    ag_tensor x = MAKE_RG(D(0.5, -1), SHAPE(2)), o[2] = {0, 0}, t = SENTINEL;
    CHECK_OK(ag_custom_op_apply(o, 2, g_bad_op, &x, 1));
    int64_t n = -7;
    bool b = false;
    CHECK_ERR(ag_custom_ctx_saved_count(&n, g_bad.kept), AG_ERR_INVALID_HANDLE);
    CHECK(strstr(ag_last_error(), "is not a live context (a context is valid only during the callback it was passed "
                                  "to)") != NULL);
    CHECK_ERR(ag_custom_ctx_save(g_bad.kept, &x, 1), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_custom_ctx_saved(&t, g_bad.kept, 0), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_custom_ctx_needs_input_grad(&b, g_bad.kept, 0), AG_ERR_INVALID_HANDLE);
    CHECK(n == -7 && t == SENTINEL);
    free_n(o, 2);
    FREE(x);

    /* The backward (ag_backward, ag_grad, ag_vjp). */
    BACKWARD_CASE(M_OK, AG_OK, "");
    BACKWARD_CASE(M_RET7, AG_ERR_CALLBACK, ": custom op 'bad': the backward returned 7");
    BACKWARD_CASE(M_SET_ERROR, AG_ERR_CALLBACK,
                  "custom op 'bad': the backward returned 7 (its last error: the adjoint solver did not converge)");
    BACKWARD_CASE(M_FAILED_CALL, AG_ERR_CALLBACK,
                  "the backward returned 3 (its last error: ag_tensor_zeros: negative extent -2 in shape [-2]");
    BACKWARD_CASE(M_FREED_HANDLE, AG_ERR_CALLBACK,
                  "custom op 'bad': the backward wrote 0x");
    BACKWARD_CASE(M_MADE_UP, AG_ERR_CALLBACK,
                  "the backward wrote 0x123456789abcdef to input_grads[0], which is not a live tensor handle");
    BACKWARD_CASE(M_OTHER_KIND, AG_ERR_CALLBACK, "to input_grads[0], which is not a live tensor handle");
    BACKWARD_CASE(M_SHAPE, AG_ERR_CALLBACK,
                  "custom op 'bad': the backward returned gradient 0 of shape [3] for input 0 of shape [2] (a "
                  "gradient has the input's shape, or one that broadcasting reduces to it)");
    BACKWARD_CASE(M_DTYPE, AG_ERR_CALLBACK,
                  "custom op 'bad': the backward returned gradient 0 as float32, input 0 is float64");
    BACKWARD_CASE(M_FREE_BORROWED, AG_ERR_CALLBACK,
                  "custom op 'bad': the backward freed output_grads[0], a tensor handle it was given");
    BACKWARD_CASE(M_WRITE_THEN_FAIL, AG_ERR_CALLBACK, "custom op 'bad': the backward returned 5");
    BACKWARD_CASE(M_STALE_CTX, AG_ERR_CALLBACK,
                  "the backward returned 1 (its last error: ag_custom_ctx_saved_count: context handle 0x");
    BACKWARD_CASE(M_SAVE, AG_ERR_CALLBACK,
                  "the backward returned 5 (its last error: ag_custom_ctx_save: tensors can be saved in the forward "
                  "callback only (this context belongs to the backward callback))");
    /* A message set by the failed call is quoted even when a later successful call came between. */

    /* Accepted: a gradient in a broadcast shape is summed back; an identity backward; no gradient. */
    for (int k = 0; k < 3; k++) {
        int mode = k == 0 ? M_BROADCAST : k == 1 ? M_IDENTITY : M_NO_HANDLE;
        set_ctx("accepted backward mode %d", mode);
        g_bad = (bad_cfg){M_OK, mode, M_OK, 0, g_bad_op};
        ag_tensor xx = MAKE_RG(D(0.5, -1), SHAPE(2)), l = 0, g = 0;
        CHECK(build_bad(&l, &xx, 1, NULL) == 0);
        CHECK_OK(ag_backward(l, AG_NULL_TENSOR, false, false));
        CHECK_OK(ag_tensor_grad(&g, xx));
        if (k == 0) EXPECT_TENSOR(g, SHAPE(2), D(exp(0.5) + 2, exp(-1) + 2), "gradient summed from [3, 2]");
        if (k == 1) EXPECT_TENSOR(g, SHAPE(2), D(1, 1), "identity backward: the second output's gradient (ones)");
        if (k == 2) CHECK(g == AG_NULL_TENSOR); /* no gradient flowed */
        FREE(g, l, xx);
        if (k == 2) {
            /* ag_grad: an input that got no gradient is AG_ERR_STATE without allow_unused, as for
             * an unused input; with allow_unused it is AG_NULL_TENSOR. */
            xx = MAKE_RG(D(0.5, -1), SHAPE(2));
            CHECK(build_bad(&l, &xx, 1, NULL) == 0);
            g = SENTINEL;
            CHECK_ERR(ag_grad(&g, &l, 1, NULL, &xx, 1, true, false, false), AG_ERR_STATE);
            CHECK(strstr(ag_last_error(), "input 0 is not used to compute the outputs") != NULL && g == SENTINEL);
            CHECK_OK(ag_grad(&g, &l, 1, NULL, &xx, 1, false, false, true));
            CHECK(g == AG_NULL_TENSOR);
            FREE(l, xx);
        }
    }
    set_ctx("%s", "");

    /* The JVP (ag_custom_op_apply inside ag_jvp). */
    double t_ok[2] = {exp(0.5) * 1 + 2 * 1, exp(-1) * 3 + 2 * 3};
    double t_none[2] = {2, 6}; /* tangent 0 is zeros */
    JVP_CASE(M_OK, AG_OK, "", t_ok);
    JVP_CASE(M_NO_HANDLE, AG_OK, "", t_none);
    JVP_CASE(M_RET7, AG_ERR_CALLBACK, "custom op 'bad': the JVP returned 7", NULL);
    JVP_CASE(M_SET_ERROR, AG_ERR_CALLBACK, "the JVP returned 7 (its last error: no tangent for you)", NULL);
    JVP_CASE(M_FREED_HANDLE, AG_ERR_CALLBACK, "custom op 'bad': the JVP wrote 0x", NULL);
    JVP_CASE(M_MADE_UP, AG_ERR_CALLBACK,
             "the JVP wrote 0x123456789abcdef to output_tangents[0], which is not a live tensor handle", NULL);
    JVP_CASE(M_SHAPE, AG_ERR_CALLBACK,
             "custom op 'bad': the JVP returned tangent 0 as float64 [3], output 0 is float64 [2]", NULL);
    JVP_CASE(M_DTYPE, AG_ERR_CALLBACK,
             "custom op 'bad': the JVP returned tangent 0 as float32 [2], output 0 is float64 [2]", NULL);
    JVP_CASE(M_FREE_BORROWED, AG_ERR_CALLBACK,
             "custom op 'bad': the JVP freed input_tangents[0], a tensor handle it was given", NULL);
    JVP_CASE(M_WRITE_THEN_FAIL, AG_ERR_CALLBACK, "custom op 'bad': the JVP returned 5", NULL);
    JVP_CASE(M_SAVE, AG_ERR_CALLBACK,
             "the JVP returned 5 (its last error: ag_custom_ctx_save: tensors can be saved in the forward callback "
             "only (this context belongs to the jvp callback))",
             NULL);

    /* After all that the op still works. */
    g_bad = (bad_cfg){M_OK, M_OK, M_OK, 0, g_bad_op};
    ag_tensor xx = MAKE_RG(D(0.5, -1), SHAPE(2)), l = 0, g = 0;
    CHECK(build_bad(&l, &xx, 1, NULL) == 0);
    CHECK_OK(ag_grad(&g, &l, 1, NULL, &xx, 1, false, false, false));
    EXPECT_TENSOR(g, SHAPE(2), D(exp(0.5) + 2, exp(-1) + 2), "gradient after the failures");
    FREE(g, l, xx);
    CHECK_OK(ag_custom_op_free(g_bad_op));
}

/* ========================================================================================== */
/* The application's state (ag_custom_ctx_set_state / ag_custom_ctx_state)                    */
/* ========================================================================================== */

/* slope: y = x^2 on raw buffers; its forward keeps the derivative 2x as the application's state
 * (a malloc'ed slope_state, numbered), and the backward and the JVP read it there: g * 2x, t * 2x.
 * A backward that read another application's state would give another gradient. */
#define MAX_STATES 64

typedef struct {
    int serial; /* the order in which forwards made it */
    int64_t n;
    double slope[8];
} slope_state;

enum { SL_PLAIN, SL_TWICE, SL_SET_LATE }; /* SL_TWICE: the forward sets a second state over the first;
                                             SL_SET_LATE: the backward and the JVP try to set one */

static struct {
    int mode;
    atomic_int made;                         /* states made by forwards */
    atomic_int destroyed[MAX_STATES];        /* destroy calls per state */
    int first_destroyed_at_replace;          /* SL_TWICE: the first state's destroys right after the second set */
    int bwd_serial, jvp_serial;              /* the state the last backward / JVP read */
    ag_status late_st;                       /* SL_SET_LATE: what the backward's / JVP's set_state returned */
    char late_msg[400];
    int late_destroyed;                      /* destroy calls of the state they tried to set */
} g_sl;

static void slope_destroy(void *p) {
    slope_state *s = p;
    if (s->serial >= 0 && s->serial < MAX_STATES) atomic_fetch_add(&g_sl.destroyed[s->serial], 1);
    free(s);
}

static void late_destroy(void *p) { (void)p, g_sl.late_destroyed++; }

static slope_state *slope_new(const double *x, int64_t n) {
    slope_state *s = calloc(1, sizeof *s);
    s->serial = atomic_fetch_add(&g_sl.made, 1);
    s->n = n;
    for (int64_t i = 0; i < n && i < 8; i++) s->slope[i] = 2 * x[i];
    return s;
}

static int32_t slope_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                             void *payload) {
    (void)payload;
    if (nout != 1 || nin != 1) return 90;
    Shape s;
    double *v = cb_read(in[0], &s, NULL);
    if (!v) return 1;
    int64_t n = numel_of_shape(s);
    if (n > 8 || atomic_load(&g_sl.made) >= MAX_STATES - 1) {
        free(v);
        ag_set_error("slope: at most 8 elements and 63 states");
        return 91;
    }
    slope_state *first = slope_new(v, n);
    ag_status st = ag_custom_ctx_set_state(ctx, first, slope_destroy);
    if (st) free(first); /* on failure the state stays ours */
    if (!st && g_sl.mode == SL_TWICE) {
        slope_state *second = slope_new(v, n);
        int serial = first->serial; /* first is freed by the set below */
        st = ag_custom_ctx_set_state(ctx, second, slope_destroy);
        if (st) free(second);
        g_sl.first_destroyed_at_replace = atomic_load(&g_sl.destroyed[serial]);
    }
    void *read = NULL;
    if (!st) st = ag_custom_ctx_state(&read, ctx); /* what the forward set last */
    if (!st && (read == NULL || ((slope_state *)read)->serial != atomic_load(&g_sl.made) - 1)) {
        ag_set_error("slope: the forward does not read the state it set");
        st = 92;
    }
    for (int64_t i = 0; i < n; i++) v[i] *= v[i];
    if (!st) st = cb_make(&out[0], v, s, AG_FLOAT64);
    free(v);
    return st;
}

/* out = a * state's slope (a new tensor of a's shape). */
static ag_status times_slope(ag_tensor *out, ag_tensor a, ag_custom_ctx ctx, int *serial) {
    void *p = NULL;
    ag_status st = ag_custom_ctx_state(&p, ctx);
    if (st) return st;
    const slope_state *state = p;
    if (!state) {
        ag_set_error("slope: no state");
        return 93;
    }
    *serial = state->serial;
    Shape s;
    double *v = cb_read(a, &s, NULL);
    if (!v) return 1;
    for (int64_t i = 0; i < numel_of_shape(s) && i < state->n; i++) v[i] *= state->slope[i];
    st = cb_make(out, v, s, AG_FLOAT64);
    free(v);
    return st;
}

static void try_late_set(ag_custom_ctx ctx) {
    static int junk;
    g_sl.late_st = ag_custom_ctx_set_state(ctx, &junk, late_destroy);
    snprintf(g_sl.late_msg, sizeof g_sl.late_msg, "%s", g_sl.late_st ? ag_last_error() : "");
}

static int32_t slope_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                              void *payload) {
    (void)nin, (void)nout, (void)payload;
    if (g_sl.mode == SL_SET_LATE) try_late_set(ctx); /* refused; the backward goes on */
    return times_slope(&gin[0], gout[0], ctx, &g_sl.bwd_serial);
}

static int32_t slope_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                         ag_custom_ctx ctx, void *payload) {
    (void)nout, (void)in, (void)nin, (void)payload;
    if (g_sl.mode == SL_SET_LATE) try_late_set(ctx);
    return times_slope(&tout[0], tin[0], ctx, &g_sl.jvp_serial);
}

static ag_custom_op g_slope;

static int32_t build_slope(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    (void)n, (void)user_data;
    return ag_custom_op_apply(out, 1, g_slope, in, 1);
}

/* outputs[0] = sum(slope(x)), outputs[1] = its gradient (the replay's backward reads the state). */
static int32_t cap_slope(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                         void *user_data) {
    (void)noutputs, (void)ninputs, (void)user_data;
    ag_tensor y = 0;
    ag_status st = ag_custom_op_apply(&y, 1, g_slope, inputs, 1);
    if (!st) st = ag_sum(&outputs[0], y, NULL, 0, false);
    if (!st) st = ag_grad(&outputs[1], &outputs[0], 1, NULL, inputs, 1, false, false, false);
    ag_tensor_free(y);
    return st;
}

static int destroyed(int serial) { return atomic_load(&g_sl.destroyed[serial]); }
static int last_made(void) { return atomic_load(&g_sl.made) - 1; }

/* The states alive now: made and not destroyed. */
static int states_alive(void) {
    int alive = 0;
    for (int k = 0; k < atomic_load(&g_sl.made); k++) alive += destroyed(k) == 0;
    return alive;
}

static void test_state(void) {
    CHECK_OK(ag_custom_op_new(&g_slope, "slope", 1, 1, slope_forward, slope_backward, slope_jvp, NULL, NULL));
    g_sl.mode = SL_PLAIN;

    /* 1. Two applications alive at once: each backward reads its own forward's state; each
     * state is destroyed when its graph goes, not before. */
    set_ctx("%s", "two applications");
    ag_tensor x1 = MAKE_RG(D(1, 2), SHAPE(2)), x2 = MAKE_RG(D(-3, 0.5), SHAPE(2));
    ag_tensor y1 = 0, y2 = 0, s1 = 0, s2 = 0, g = 0;
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x1, 1));
    int k1 = last_made();
    CHECK_OK(ag_custom_op_apply(&y2, 1, g_slope, &x2, 1));
    int k2 = last_made();
    EXPECT_TENSOR(y2, SHAPE(2), D(9, 0.25), "slope(x2)");
    CHECK_OK(ag_sum(&s1, y1, NULL, 0, false));
    CHECK_OK(ag_sum(&s2, y2, NULL, 0, false));
    CHECK_OK(ag_grad(&g, &s2, 1, NULL, &x2, 1, true, false, false));
    EXPECT_TENSOR(g, SHAPE(2), D(-6, 1), "d/dx2 = 2 x2 (x2's state)");
    CHECK(g_sl.bwd_serial == k2);
    FREE(g);
    CHECK_OK(ag_grad(&g, &s1, 1, NULL, &x1, 1, true, false, false));
    EXPECT_TENSOR(g, SHAPE(2), D(2, 4), "d/dx1 = 2 x1 (x1's state)");
    CHECK(g_sl.bwd_serial == k1);
    FREE(g);
    CHECK(destroyed(k1) == 0 && destroyed(k2) == 0); /* retained graphs keep them */
    FREE(s1, y1);
    CHECK(destroyed(k1) == 1 && destroyed(k2) == 0); /* x1's graph gone: its state only */
    CHECK_OK(ag_grad(&g, &s2, 1, NULL, &x2, 1, true, false, false)); /* x2's still works */
    EXPECT_TENSOR(g, SHAPE(2), D(-6, 1), "d/dx2 again");
    FREE(g, s2, y2);
    CHECK(destroyed(k1) == 1 && destroyed(k2) == 1);

    /* 2. A backward without retain_graph releases the graph: the state goes then, while the
     * output's handle still lives. */
    set_ctx("%s", "backward without retain_graph");
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x1, 1));
    k1 = last_made();
    CHECK_OK(ag_sum(&s1, y1, NULL, 0, false));
    CHECK_OK(ag_backward(s1, AG_NULL_TENSOR, false, false));
    CHECK(g_sl.bwd_serial == k1 && destroyed(k1) == 1);
    ag_tensor gx = 0;
    CHECK_OK(ag_tensor_grad(&gx, x1));
    EXPECT_TENSOR(gx, SHAPE(2), D(2, 4), "x1.grad");
    FREE(gx, s1, y1);
    CHECK(destroyed(k1) == 1);
    CHECK_OK(ag_tensor_zero_grad(x1));

    /* 3. Nothing recorded (an input without grad; grad mode off): destroyed right after apply. */
    set_ctx("%s", "not recorded");
    ag_tensor c = MAKE(D(1, 2), SHAPE(2));
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &c, 1));
    CHECK(destroyed(last_made()) == 1);
    FREE(y1);
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x1, 1));
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    CHECK(destroyed(last_made()) == 1);
    FREE(y1);

    /* 4. The JVP reads its application's state (in a forward-mode pass), gone with the pass. */
    set_ctx("%s", "jvp");
    ag_tensor t = MAKE(D(1, -1), SHAPE(2)), o = 0, ot = 0;
    CHECK_OK(ag_jvp(&o, &ot, build_slope, NULL, &c, 1, &t));
    EXPECT_TENSOR(o, SHAPE(2), D(1, 4), "slope(c)");
    EXPECT_TENSOR(ot, SHAPE(2), D(2, -4), "its tangent 2 c t");
    CHECK(g_sl.jvp_serial == last_made());
    FREE(o, ot);
    CHECK(destroyed(last_made()) == 1);

    /* 5. A second set_state in the forward replaces the first, whose destroy runs then. */
    set_ctx("%s", "replaced");
    g_sl.mode = SL_TWICE;
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x1, 1));
    g_sl.mode = SL_PLAIN;
    k2 = last_made(), k1 = k2 - 1;
    CHECK(g_sl.first_destroyed_at_replace == 1);
    CHECK(destroyed(k1) == 1 && destroyed(k2) == 0);
    CHECK_OK(ag_sum(&s1, y1, NULL, 0, false));
    CHECK_OK(ag_grad(&g, &s1, 1, NULL, &x1, 1, false, false, false));
    EXPECT_TENSOR(g, SHAPE(2), D(2, 4), "the gradient through the second state");
    CHECK(g_sl.bwd_serial == k2);
    FREE(g, s1, y1);
    CHECK(destroyed(k1) == 1 && destroyed(k2) == 1);

    /* 6. set_state from the backward and from the JVP: AG_ERR_STATE, their destroy never runs,
     * the forward's state stays in place. */
    set_ctx("%s", "set_state from the backward and the JVP");
    g_sl.mode = SL_SET_LATE;
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x1, 1));
    k1 = last_made();
    CHECK_OK(ag_sum(&s1, y1, NULL, 0, false));
    g_sl.late_st = AG_OK;
    CHECK_OK(ag_grad(&g, &s1, 1, NULL, &x1, 1, false, false, false));
    CHECK(g_sl.late_st == AG_ERR_STATE);
    CHECKF(strstr(g_sl.late_msg, "ag_custom_ctx_set_state: the state can be set in the forward callback only "
                                 "(this context belongs to the backward callback)") != NULL,
           "message: %s", g_sl.late_msg);
    EXPECT_TENSOR(g, SHAPE(2), D(2, 4), "the gradient through the forward's state");
    CHECK(g_sl.bwd_serial == k1);
    FREE(g, s1, y1);
    g_sl.late_st = AG_OK;
    CHECK_OK(ag_jvp(&o, &ot, build_slope, NULL, &c, 1, &t));
    CHECK(g_sl.late_st == AG_ERR_STATE);
    CHECKF(strstr(g_sl.late_msg, "(this context belongs to the jvp callback)") != NULL, "message: %s", g_sl.late_msg);
    EXPECT_TENSOR(ot, SHAPE(2), D(2, -4), "the tangent through the forward's state");
    FREE(o, ot);
    g_sl.mode = SL_PLAIN;
    CHECK(g_sl.late_destroyed == 0);

    /* 7. A captured function: each replay's forward sets a new state, which that replay's
     * backward reads; the previous one is destroyed; all go with the function. */
    set_ctx("%s", "capture");
    ag_function f = 0;
    int before = atomic_load(&g_sl.made);
    if (CHECK_OK(ag_capture(&f, cap_slope, &x2, 1, 2, NULL))) {
        for (int r = 0; r < 3; r++) {
            set_ctx("replay %d", r);
            double xv[2] = {0.5 + r, -1.0 - 2 * r};
            ag_tensor xr = MAKE_RG(xv, SHAPE(2)), out[2] = {0, 0};
            int made = atomic_load(&g_sl.made);
            if (CHECK_OK(ag_function_call(out, 2, f, &xr, 1))) {
                CHECK(atomic_load(&g_sl.made) == made + 1 && g_sl.bwd_serial == made);
                EXPECT_TENSOR(out[0], S0, D(xv[0] * xv[0] + xv[1] * xv[1]), "replayed sum of squares");
                EXPECT_TENSOR(out[1], SHAPE(2), D(2 * xv[0], 2 * xv[1]), "replayed gradient: this replay's state");
            }
            CHECKF(states_alive() <= 1, "%d states alive after replay %d", states_alive(), r);
            free_n(out, 2);
            FREE(xr);
        }
        set_ctx("%s", "capture");
        CHECK_OK(ag_function_free(f));
    }
    CHECK(atomic_load(&g_sl.made) > before && states_alive() == 0);

    /* 8. Recompute reruns the forward: its new state replaces the old, the backward reads it. */
    set_ctx("%s", "recompute");
    bool was = false;
    CHECK_OK(ag_set_recomputable(&was, true));
    ag_tensor x3 = MAKE_RG(D(1, 2), SHAPE(2));
    CHECK_OK(ag_custom_op_apply(&y1, 1, g_slope, &x3, 1));
    CHECK_OK(ag_set_recomputable(NULL, was));
    k1 = last_made();
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    CHECK_OK(ag_tensor_set_data(x3, D(3, -4), 2, AG_FLOAT64));
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    CHECK_OK(ag_recompute(y1));
    k2 = last_made();
    CHECK(k2 == k1 + 1 && destroyed(k1) == 1 && destroyed(k2) == 0);
    EXPECT_TENSOR(y1, SHAPE(2), D(9, 16), "recomputed");
    CHECK_OK(ag_sum(&s1, y1, NULL, 0, false));
    CHECK_OK(ag_grad(&g, &s1, 1, NULL, &x3, 1, false, false, false));
    EXPECT_TENSOR(g, SHAPE(2), D(6, -8), "the gradient through the recomputed state");
    CHECK(g_sl.bwd_serial == k2);
    FREE(g, s1, y1, x3);

    /* Every state was destroyed, exactly once. */
    set_ctx("%s", "");
    for (int k = 0; k < atomic_load(&g_sl.made); k++)
        CHECKF(destroyed(k) == 1, "state %d: destroy ran %d times", k, destroyed(k));
    FREE(x1, x2, c, t);
    CHECK_OK(ag_custom_op_free(g_slope));
}

/* ========================================================================================== */
/* Recompute                                                                                  */
/* ========================================================================================== */

static void test_recompute(void) {
    bool was = false;
    CHECK_OK(ag_set_recomputable(&was, true));
    ag_tensor x = MAKE_RG(D(2), SHAPE(1)), y = MAKE_RG(D(3), SHAPE(1)), z = 0, g = 0;
    CHECK_OK(ag_custom_op_apply(&z, 1, g_mul, (ag_tensor[]){x, y}, 2));
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    CHECK_OK(ag_tensor_set_data(x, D(4), 1, AG_FLOAT64));
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    int fw = atomic_load(&s_mul.forward);
    CHECK_OK(ag_recompute(z));
    CHECK(atomic_load(&s_mul.forward) == fw + 1); /* the forward was called again */
    EXPECT_TENSOR(z, SHAPE(1), D(12), "recomputed my_mul");
    CHECK_OK(ag_grad(&g, &z, 1, NULL, &y, 1, false, false, false));
    EXPECT_TENSOR(g, SHAPE(1), D(4), "d/dy after the recompute = the new x");
    FREE(z, g);
    /* Several outputs: refused. */
    ag_tensor o[2] = {0, 0};
    CHECK_OK(ag_custom_op_apply(o, 2, g_sincos, &x, 1));
    CHECK_ERR(ag_recompute(o[0]), AG_ERR_STATE);
    free_n(o, 2);
    CHECK_OK(ag_set_recomputable(NULL, was));
    FREE(x, y);
}

/* ========================================================================================== */

int main(void) {
    test_begin();
    alarm(900); /* a deadlock ends the run instead of hanging it */
    int64_t start = live_handles();
    make_ops();
    run_group_checking_handles("gradcheck: 1 to 3 inputs, 1 and 2 outputs, broadcasting, float64 and float32",
                               test_gradcheck);
    run_group_checking_handles("second derivatives through backwards written with library ops",
                               test_second_derivatives);
    run_group_checking_handles("the same values and gradients as the catalogue", test_same_as_catalogue);
    run_group_checking_handles("forward mode: the JVP callback", test_jvp);
    run_group_checking_handles("payload destroy", test_destroy);
    run_group_checking_handles("threads", test_threads);
    run_group_checking_handles("capture and replay", test_capture);
    run_group_checking_handles("callback failures", test_failures);
    run_group_checking_handles("recompute", test_recompute);
    run_group_checking_handles("the application's state", test_state);
    printf("== freeing the ops\n");
    op_stats *all[] = {&s_mul, &s_sincos, &s_exp, &s_fma3, &s_hypot};
    ag_custom_op ops[] = {g_mul, g_sincos, g_exp, g_fma3, g_hypot};
    for (int i = 0; i < 5; i++) {
        CHECK(atomic_load(&all[i]->destroyed) == 0);
        CHECK_OK(ag_custom_op_free(ops[i]));
        CHECKF(atomic_load(&all[i]->destroyed) == 1, "op %d: destroy ran %d times", i, atomic_load(&all[i]->destroyed));
    }
    CHECK(live_handles() == start);
    check_no_leaks();
    return test_summary();
}
