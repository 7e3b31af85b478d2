/*
 * test_reusable.c - reusable graphs from C (include/autograd.h, "Reusable graphs"):
 * ag_tensor_set_data, ag_set_recomputable, ag_recompute, ag_capture, ag_function_call /
 * _call_into / _info / _free.
 *
 *   notebook    the design notebooks' example: z1 = x + y, z2 = z1 * y at x = 3, y = 5; x set to
 *               4 with ag_tensor_set_data; ag_recompute(z2); values and dz2/dx = y,
 *               dz2/dy = x + 2 y, dz2/dz1 = y (hand derivation) follow the new x without
 *               rebuilding (float64 and float32). A graph that saved x refuses a stale ag_grad
 *               until it is recomputed.
 *   recompute   after ag_tensor_copy_ into a leaf and after an optimizer step (SGD): the
 *               recomputed loss and gradients equal, bit for bit, those of the same graph built
 *               afresh on the new values, and a plain-C evaluation of the loss (tolerance).
 *   replay      functions with ag_grad inside (broadcasting, reductions, matmul / linear,
 *               softmax / cross-entropy, where / comparisons / clamp, indexing and reshaping;
 *               float32 and float64): captured once, replayed on new inputs; every output
 *               (values and gradients) equals the eager C function's on the same inputs BIT FOR
 *               BIT (memcmp); ag_function_call_into gives the same bits as ag_function_call.
 *   semantics   parameters (made outside) are read in place per call; constants and random
 *               tensors made inside keep their capture-time values; ag_tensor_set_data inside a
 *               capture writes its capture-time data at each replay.
 *   training    a step (linear / relu / linear / mse, ag_backward, optimizer step, zero_grad)
 *               captured and replayed N times against the same eager loop, SGD with momentum
 *               and Adam, float32 and float64: losses and weights equal bit for bit.
 *   info        ag_function_info of an elementwise chain: fused groups > 0; partial capacity.
 *   threads     one function replayed from 4 threads at once, each with its own inputs: every
 *               result equals the eager result of its inputs (the per-function lock).
 *   freed       a freed function handle: call, call_into, info, free again -> AG_ERR_INVALID_HANDLE.
 *
 * Output: "== group" lines, one line per failed check, then exactly "N passed, M failed"; exit
 * status 0 only if M is 0. No handle may be live at the end. Runs under valgrind in
 * scripts/c-tests.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <pthread.h>

/* ========================================================================================== */
/* Helpers                                                                                    */
/* ========================================================================================== */

static size_t dtype_size(ag_dtype dt) { return dt == AG_FLOAT32 ? 4 : 8; }

/* t's elements in its own dtype (malloc'ed; free it), with their count; NULL on failure. */
static void *raw_at(ag_tensor t, int64_t *n_out, ag_dtype *dt_out, const char *file, int line) {
    int64_t n = -1;
    ag_dtype dt = 0;
    if (!status_at(ag_tensor_numel(&n, t), AG_OK, "ag_tensor_numel", file, line) ||
        !status_at(ag_tensor_dtype(&dt, t), AG_OK, "ag_tensor_dtype", file, line))
        return NULL;
    void *buf = malloc((size_t)(n ? n : 1) * dtype_size(dt));
    if (!status_at(ag_tensor_copy_data(buf, n, dt, t), AG_OK, "ag_tensor_copy_data", file, line)) {
        free(buf);
        return NULL;
    }
    *n_out = n;
    *dt_out = dt;
    return buf;
}

/* One check: a and b have the same shape, dtype and bits (memcmp of their elements). */
static bool same_bits_at(ag_tensor a, ag_tensor b, const char *what, const char *file, int line) {
    Shape sa = {0, {0}}, sb = {0, {0}};
    if (!status_at(ag_tensor_ndim(&sa.ndim, a), AG_OK, "ag_tensor_ndim", file, line) ||
        !status_at(ag_tensor_ndim(&sb.ndim, b), AG_OK, "ag_tensor_ndim", file, line) ||
        !status_at(ag_tensor_shape(sa.d, AG_MAX_NDIM, a), AG_OK, "ag_tensor_shape", file, line) ||
        !status_at(ag_tensor_shape(sb.d, AG_MAX_NDIM, b), AG_OK, "ag_tensor_shape", file, line))
        return false;
    char b1[96], b2[96];
    if (!check_at(shape_eq(sa, sb), file, line, "%s: shapes %s and %s", what, shape_str(sa, b1, sizeof b1),
                  shape_str(sb, b2, sizeof b2)))
        return false;
    int64_t na = 0, nb = 0;
    ag_dtype da = 0, db = 0;
    void *va = raw_at(a, &na, &da, file, line), *vb = raw_at(b, &nb, &db, file, line);
    bool ok = va && vb && check_at(da == db, file, line, "%s: dtypes %d and %d", what, (int)da, (int)db);
    if (ok) {
        size_t bytes = (size_t)na * dtype_size(da);
        ok = check_at(memcmp(va, vb, bytes) == 0, file, line, "%s: values differ in their bits", what);
        if (!ok) {
            int shown = 0;
            for (int64_t i = 0; i < na && shown < 4; i++) {
                double x = da == AG_FLOAT32 ? ((float *)va)[i] : ((double *)va)[i];
                double y = da == AG_FLOAT32 ? ((float *)vb)[i] : ((double *)vb)[i];
                if (memcmp((char *)va + (size_t)i * dtype_size(da), (char *)vb + (size_t)i * dtype_size(da),
                           dtype_size(da)) != 0) {
                    printf("      [%" PRId64 "] %.17g vs %.17g\n", i, x, y);
                    shown++;
                }
            }
        }
    }
    free(va);
    free(vb);
    return ok;
}
#define SAME_BITS(a, b, what) same_bits_at((a), (b), (what), HERE)

/* A leaf of `dtype` with values fill(seed) (fill_positive when positive), optionally requiring grad. */
static ag_tensor filled_at(Shape s, ag_dtype dtype, double seed, bool positive, bool rg, const char *file, int line) {
    int64_t n = numel_of_shape(s);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (positive)
        fill_positive(v, n, seed);
    else
        fill(v, n, seed);
    ag_tensor t = make_at(v, s, dtype, rg, file, line);
    free(v);
    return t;
}
#define FILLED(shape, dtype, seed, rg) filled_at((shape), (dtype), (seed), false, (rg), HERE)

static double item_of(ag_tensor t) {
    double v = NAN;
    CHECK_OK(ag_tensor_item(&v, t));
    return v;
}

/* Sets grad mode, returning the previous setting. */
static bool grad_mode(bool on) {
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, on));
    return prev;
}

/* ========================================================================================== */
/* A scope for the temporaries of a C function built from API calls                          */
/* ========================================================================================== */

/* Every result is kept for freeing at the end; after the first failure every later call is
 * skipped (its result is 0) and the failure's status is kept. */
enum { SCOPE_CAP = 128 };
typedef struct {
    ag_tensor t[SCOPE_CAP];
    int n;
    ag_status st;
} Scope;

static ag_tensor scope_done(Scope *s, ag_status st) {
    if (st != AG_OK) {
        if (s->st == AG_OK) s->st = st;
        s->t[s->n] = AG_NULL_TENSOR;
        return AG_NULL_TENSOR;
    }
    return s->t[s->n++];
}

static ag_status scope_skip(Scope *s) { return s->n >= SCOPE_CAP - 1 ? AG_ERR_INTERNAL : s->st; }

/* OP(s, ag_fn, args...): calls ag_fn(&slot, args...) unless an earlier call failed. */
#define OP(s, fn, ...)                                                                         \
    ((s)->t[(s)->n] = AG_NULL_TENSOR,                                                          \
     scope_done((s), scope_skip(s) == AG_OK ? fn(&(s)->t[(s)->n], __VA_ARGS__) : scope_skip(s)))

/* Takes t out of the scope (it is the caller's now). */
static ag_tensor scope_take(Scope *s, ag_tensor t) {
    for (int i = 0; i < s->n; i++)
        if (s->t[i] == t) {
            s->t[i] = AG_NULL_TENSOR;
            return t;
        }
    if (s->st == AG_OK) s->st = AG_ERR_INTERNAL;
    return AG_NULL_TENSOR;
}

/* ag_grad of a scalar `loss` with respect to ins[0 .. n-1], results kept in the scope and
 * written to g[0 .. n-1]. */
static void scope_grad(Scope *s, ag_tensor *g, ag_tensor loss, const ag_tensor *ins, int n, bool retain) {
    for (int i = 0; i < n; i++) g[i] = AG_NULL_TENSOR;
    if (s->st != AG_OK) return;
    if (s->n + n >= SCOPE_CAP) {
        s->st = AG_ERR_INTERNAL;
        return;
    }
    ag_status st = ag_grad(g, &loss, 1, NULL, ins, n, retain, false, false);
    if (st != AG_OK) {
        s->st = st;
        return;
    }
    for (int i = 0; i < n; i++) s->t[s->n++] = g[i];
}

static void scope_free(Scope *s) {
    for (int i = 0; i < s->n; i++)
        if (s->t[i]) ag_tensor_free(s->t[i]);
    s->n = 0;
}

/* ========================================================================================== */
/* notebook                                                                                   */
/* ========================================================================================== */

static void test_notebook(void) {
    bool was = true;
    CHECK_OK(ag_set_recomputable(&was, true));
    CHECK(was == false); /* off by default */
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("%s", d ? "float32" : "float64");
        ag_tensor x = make_at(D(3), S0, dt, true, HERE), y = make_at(D(5), S0, dt, true, HERE);
        ag_tensor z1 = 0, z2 = 0, g[2] = {0, 0}, gz1 = 0;
        CHECK_OK(ag_add(&z1, x, y));
        CHECK_OK(ag_mul(&z2, z1, y));
        CHECK(item_of(z2) == 40);
        /* dz2/dx = y = 5, dz2/dy = x + 2y = 13. */
        CHECK_OK(ag_grad(g, &z2, 1, NULL, (ag_tensor[]){x, y}, 2, true, false, false));
        CHECK(item_of(g[0]) == 5 && item_of(g[1]) == 13);
        FREE(g[0], g[1]);

        /* x = 4, written in place (x requires grad: with grad mode off). */
        bool prev = grad_mode(false);
        if (dt == AG_FLOAT32) {
            CHECK_OK(ag_tensor_set_data(x, &(float){4.0f}, 1, AG_FLOAT32));
        } else {
            CHECK_OK(ag_tensor_set_data(x, &(double){4.0}, 1, AG_FLOAT64));
        }
        grad_mode(prev);
        CHECK(item_of(x) == 4);
        CHECK(item_of(z1) == 8 && item_of(z2) == 40); /* nothing re-evaluated yet */

        CHECK_OK(ag_recompute(z2));
        CHECK(item_of(z1) == 9);  /* 4 + 5 */
        CHECK(item_of(z2) == 45); /* 9 * 5 */
        CHECK_OK(ag_grad(g, &z2, 1, NULL, (ag_tensor[]){x, y}, 2, true, false, false));
        CHECK(item_of(g[0]) == 5);  /* y */
        CHECK(item_of(g[1]) == 14); /* x + 2y */
        EXPECT_DTYPE(g[0], dt);
        FREE(g[0], g[1]);
        /* Any node with respect to any node: dz2/dz1 = y. */
        CHECK_OK(ag_grad(&gz1, &z2, 1, NULL, &z1, 1, true, false, false));
        CHECK(item_of(gz1) == 5);
        FREE(gz1);

        /* y = -2 too (from float64 data into either dtype): z1 = 2, z2 = -4, dz2/dy = 4 - 4 = 0,
         * dz2/dx = -2; recomputing z1 alone first is allowed. */
        prev = grad_mode(false);
        CHECK_OK(ag_tensor_set_data(y, &(double){-2.0}, 1, AG_FLOAT64));
        grad_mode(prev);
        CHECK_OK(ag_recompute(z1));
        CHECK(item_of(z1) == 2 && item_of(z2) == 45);
        CHECK_OK(ag_recompute(z2));
        CHECK(item_of(z2) == -4);
        CHECK_OK(ag_grad(g, &z2, 1, NULL, (ag_tensor[]){x, y}, 2, true, false, false));
        CHECK(item_of(g[0]) == -2 && item_of(g[1]) == 0);
        FREE(g[0], g[1]);
        /* A backward through the graph accumulates into .grad with the new values too. */
        CHECK_OK(ag_backward(z2, AG_NULL_TENSOR, true, false));
        ag_tensor gx = 0;
        CHECK_OK(ag_tensor_grad(&gx, x));
        CHECK(gx && item_of(gx) == -2);
        FREE(gx, z2, z1, x, y);
    }
    set_ctx("%s", "");

    /* A graph that saved x refuses a stale ag_grad after x is written, until recomputed:
     * w = x * x * 3 + x, dw/dx = 6x + 1. */
    ag_tensor x = make_at(D(2), S0, AG_FLOAT64, true, HERE), sq = 0, w3 = 0, w = 0, g = SENTINEL;
    CHECK_OK(ag_mul(&sq, x, x));
    CHECK_OK(ag_mul_scalar(&w3, sq, 3));
    CHECK_OK(ag_add(&w, w3, x));
    CHECK(item_of(w) == 14);
    bool prev = grad_mode(false);
    CHECK_OK(ag_tensor_set_data(x, &(double){-1.5}, 1, AG_FLOAT64));
    grad_mode(prev);
    CHECK_ERR(ag_grad(&g, &w, 1, NULL, &x, 1, true, false, false), AG_ERR_STATE);
    CHECK(g == SENTINEL);
    CHECK_OK(ag_recompute(w));
    CHECK(item_of(w) == 3 * 2.25 - 1.5);
    CHECK_OK(ag_grad(&g, &w, 1, NULL, &x, 1, true, false, false));
    CHECK(g != SENTINEL && item_of(g) == -8); /* 6 * -1.5 + 1 */
    FREE(g, w, w3, sq, x);

    /* A leaf root has no history: AG_OK, nothing changes. */
    ag_tensor leaf = SCALAR(7);
    CHECK_OK(ag_recompute(leaf));
    CHECK(item_of(leaf) == 7);
    FREE(leaf);
    CHECK_OK(ag_set_recomputable(&was, false));
    CHECK(was == true);
}

/* ========================================================================================== */
/* recompute after ag_tensor_copy_ and after an optimizer step                                */
/* ========================================================================================== */

/* loss = mse(tanh(x @ W^T + b), t) for x (4,3), W (2,3), b (2), t (4,2). */
static ag_status mlp_loss(Scope *s, ag_tensor *loss, ag_tensor x, ag_tensor W, ag_tensor b, ag_tensor t) {
    ag_tensor h = OP(s, ag_linear, x, W, b);
    ag_tensor a = OP(s, ag_tanh, h);
    *loss = OP(s, ag_mse_loss, a, t);
    return s->st;
}

/* The same loss in plain C (float64). */
static double mlp_loss_c(const double *x, const double *W, const double *b, const double *t) {
    double acc = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            double h = b[j];
            for (int k = 0; k < 3; k++) h += x[i * 3 + k] * W[j * 3 + k];
            double e = tanh(h) - t[i * 2 + j];
            acc += e * e;
        }
    return acc / 8;
}

/* Builds the loss afresh at the current values of x, W, b, t and checks that `loss` and the
 * gradients g (of W and b) of the recomputed graph equal the fresh ones bit for bit. */
static void check_against_fresh(ag_tensor loss, const ag_tensor *g, ag_tensor x, ag_tensor W, ag_tensor b,
                                ag_tensor t, const char *what) {
    Scope s = {0};
    ag_tensor fresh = 0, fg[2];
    mlp_loss(&s, &fresh, x, W, b, t);
    scope_grad(&s, fg, fresh, (ag_tensor[]){W, b}, 2, false);
    if (CHECKF(s.st == AG_OK, "%s: fresh build failed: %s", what, ag_last_error())) {
        SAME_BITS(loss, fresh, what);
        SAME_BITS(g[0], fg[0], what);
        SAME_BITS(g[1], fg[1], what);
    }
    scope_free(&s);
}

static void test_recompute_after_writes(void) {
    CHECK_OK(ag_set_recomputable(NULL, true));
    double xv[12], Wv[6], bv[2], tv[8];
    fill(xv, 12, 0.3), fill(Wv, 6, 1.1), fill(bv, 2, 2.2), fill(tv, 8, 3.3);
    for (int i = 0; i < 8; i++) tv[i] *= 0.4;
    ag_tensor x = MAKE(xv, SHAPE(4, 3)), W = MAKE_RG(Wv, SHAPE(2, 3)), b = MAKE_RG(bv, SHAPE(2)),
              t = MAKE(tv, SHAPE(4, 2));
    Scope s = {0};
    ag_tensor loss = 0, g[2];
    mlp_loss(&s, &loss, x, W, b, t);
    CHECK(s.st == AG_OK);
    CHECK_CLOSE(item_of(loss), mlp_loss_c(xv, Wv, bv, tv), 1e-14);

    /* 1. x (no grad) gets new values from another tensor: ag_tensor_copy_. */
    double xv2[12];
    fill(xv2, 12, 7.7);
    ag_tensor src = MAKE(xv2, SHAPE(4, 3));
    CHECK_OK(ag_tensor_copy_(x, src));
    CHECK_CLOSE(item_of(loss), mlp_loss_c(xv, Wv, bv, tv), 1e-14); /* not yet */
    CHECK_OK(ag_recompute(loss));
    CHECK_CLOSE(item_of(loss), mlp_loss_c(xv2, Wv, bv, tv), 1e-14);
    scope_grad(&s, g, loss, (ag_tensor[]){W, b}, 2, true);
    CHECK(s.st == AG_OK);
    check_against_fresh(loss, g, x, W, b, t, "after ag_tensor_copy_");

    /* 2. An SGD step on W and b (their .grad from a retained backward), then recompute. */
    ag_optimizer opt = 0;
    CHECK_OK(ag_optimizer_sgd(&opt, (ag_tensor[]){W, b}, 2, 0.5, 0, false, 0));
    CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, true, false));
    CHECK_OK(ag_optimizer_step(opt));
    double Wn[6], bn[2];
    READ(Wn, 6, W);
    READ(bn, 2, b);
    double gW[6], gb[2];
    READ(gW, 6, g[0]);
    READ(gb, 2, g[1]);
    for (int i = 0; i < 6; i++) CHECKF(Wn[i] == Wv[i] - 0.5 * gW[i], "W[%d] after the step", i);
    for (int i = 0; i < 2; i++) CHECKF(bn[i] == bv[i] - 0.5 * gb[i], "b[%d] after the step", i);
    /* The graph saved W's old values: a stale gradient is refused until it is recomputed. */
    ag_tensor stale[2] = {SENTINEL, SENTINEL};
    CHECK_ERR(ag_grad(stale, &loss, 1, NULL, (ag_tensor[]){W, b}, 2, true, false, false), AG_ERR_STATE);
    CHECK(stale[0] == SENTINEL);
    CHECK_OK(ag_recompute(loss));
    double before = mlp_loss_c(xv2, Wv, bv, tv), after = mlp_loss_c(xv2, Wn, bn, tv);
    CHECK_CLOSE(item_of(loss), after, 1e-14);
    CHECK(after < before); /* a descent step */
    ag_tensor g2[2];
    scope_grad(&s, g2, loss, (ag_tensor[]){W, b}, 2, true);
    CHECK(s.st == AG_OK);
    check_against_fresh(loss, g2, x, W, b, t, "after an optimizer step");

    /* 3. Graph recorded while recomputable graphs were off, and a graph freed by a backward. */
    CHECK_OK(ag_set_recomputable(NULL, false));
    ag_tensor e = 0;
    CHECK_OK(ag_exp(&e, W));
    CHECK_ERR(ag_recompute(e), AG_ERR_STATE);
    CHECK(strstr(ag_last_error(), "was recorded without its forward") != NULL);
    CHECK_OK(ag_set_recomputable(NULL, true));
    ag_tensor e2 = 0, es = 0;
    CHECK_OK(ag_sin(&e2, W));
    CHECK_OK(ag_sum(&es, e2, NULL, 0, false));
    CHECK_OK(ag_backward(es, AG_NULL_TENSOR, false, false));
    CHECK_ERR(ag_recompute(es), AG_ERR_STATE);
    CHECK(strstr(ag_last_error(), "was freed by a backward") != NULL);
    CHECK_OK(ag_set_recomputable(NULL, false));

    CHECK_OK(ag_optimizer_free(opt));
    scope_free(&s);
    FREE(e, e2, es, src, x, W, b, t);
}

/* ========================================================================================== */
/* Functions with ag_grad inside: captured, replayed, compared with eager bit for bit         */
/* ========================================================================================== */

enum { K_BROADCAST, K_REDUCE, K_LINEAR, K_SOFTMAX_CE, K_WHERE, K_INDEX, K_CHAIN, K_COUNT };
static const char *const kind_names[K_COUNT] = {"broadcast", "reduce",  "linear", "softmax/cross-entropy",
                                                "where",     "indexing", "chain"};

typedef struct {
    int kind;
    int nin, nout;
    Shape in[4];
    bool positive[4]; /* inputs that must be positive (logarithms) */
} Kind;

static Kind kind_of(int k) {
    Kind K = {k, 0, 0, {{0, {0}}}, {false}};
    switch (k) {
    case K_BROADCAST: /* y = tanh(a * b + a) * exp(b / 2) - c; loss = sum(y^2); a (3,4), b (4), c (3,1) */
        K.nin = 3, K.in[0] = SHAPE(3, 4), K.in[1] = SHAPE(4), K.in[2] = SHAPE(3, 1);
        K.nout = 2 + 3;
        break;
    case K_REDUCE: /* mean, var, logsumexp, max, cumsum, sum of a (2,3,4); log of p (2,3,4) > 0 */
        K.nin = 2, K.in[0] = SHAPE(2, 3, 4), K.in[1] = SHAPE(2, 3, 4), K.positive[1] = true;
        K.nout = 2 + 2;
        break;
    case K_LINEAR: /* sigmoid(linear(x, W, b) @ V); x (5,3), W (4,3), b (4), V (4,2) */
        K.nin = 4, K.in[0] = SHAPE(5, 3), K.in[1] = SHAPE(4, 3), K.in[2] = SHAPE(4), K.in[3] = SHAPE(4, 2);
        K.nout = 2 + 4;
        break;
    case K_SOFTMAX_CE: /* cross_entropy(z, labels) + sum(softmax(z) * w) + sum(log_softmax(z)); z (6,5), w (5) */
        K.nin = 2, K.in[0] = SHAPE(6, 5), K.in[1] = SHAPE(5);
        K.nout = 2 + 2;
        break;
    case K_WHERE: /* where(a > b, a * a, 3 b), maximum, clamp, relu, abs; a, b (4,4) */
        K.nin = 2, K.in[0] = SHAPE(4, 4), K.in[1] = SHAPE(4, 4);
        K.nout = 2 + 2;
        break;
    case K_INDEX: /* index_select, gather, slice, concat, stack, transpose, reshape, permute; a (5,4), b (4) */
        K.nin = 2, K.in[0] = SHAPE(5, 4), K.in[1] = SHAPE(4);
        K.nout = 2 + 2;
        break;
    case K_CHAIN: /* 40 scalar-ish elementwise ops on a (8) and b (8): fused groups */
        K.nin = 2, K.in[0] = SHAPE(8), K.in[1] = SHAPE(8);
        K.nout = 2 + 2;
        break;
    }
    return K;
}

/* The function of kind k: outputs out[0] = the loss (a scalar), out[1] = an intermediate value,
 * out[2 ..] = d loss / d in[i] (ag_grad). Returns the first failing status. */
static ag_status kind_fn(int k, ag_tensor *out, const ag_tensor *in) {
    Scope s = {0}, *sc = &s;
    ag_tensor loss = 0, mid = 0;
    Kind K = kind_of(k);
    switch (k) {
    case K_BROADCAST: {
        ag_tensor ab = OP(sc, ag_mul, in[0], in[1]);
        ag_tensor ab_a = OP(sc, ag_add, ab, in[0]);
        ag_tensor th = OP(sc, ag_tanh, ab_a);
        ag_tensor b2 = OP(sc, ag_div_scalar, in[1], 2);
        ag_tensor eb = OP(sc, ag_exp, b2);
        ag_tensor y0 = OP(sc, ag_mul, th, eb);
        mid = OP(sc, ag_sub, y0, in[2]);
        ag_tensor sq = OP(sc, ag_mul, mid, mid);
        loss = OP(sc, ag_sum, sq, NULL, 0, false);
        break;
    }
    case K_REDUCE: {
        ag_tensor m = OP(sc, ag_mean, in[0], I64(1), 1, true);      /* (2,1,4) */
        ag_tensor c = OP(sc, ag_sub, in[0], m);                     /* centred */
        ag_tensor v = OP(sc, ag_var, c, I64(2), 1, 1, false);       /* (2,3) */
        ag_tensor lse = OP(sc, ag_logsumexp, in[0], I64(0, 2), 2, false); /* (3) */
        ag_tensor mx = OP(sc, ag_max, in[0], I64(0), 1, false);     /* (3,4) */
        ag_tensor mn = OP(sc, ag_min, in[0], I64(2), 1, true);      /* (2,3,1) */
        ag_tensor cs = OP(sc, ag_cumsum, in[0], 2);                 /* (2,3,4) */
        ag_tensor lp = OP(sc, ag_log, in[1]);
        ag_tensor sq = OP(sc, ag_sqrt, in[1]);
        ag_tensor p1 = OP(sc, ag_mul, cs, lp);
        ag_tensor p2 = OP(sc, ag_mul, mn, sq);                      /* broadcast (2,3,1)*(2,3,4) */
        ag_tensor p3 = OP(sc, ag_add, p1, p2);
        ag_tensor p4 = OP(sc, ag_add, p3, mx);                      /* broadcast (3,4) */
        ag_tensor s1 = OP(sc, ag_sum, p4, I64(0, 1), 2, false);     /* (4) */
        ag_tensor s2 = OP(sc, ag_sum, v, NULL, 0, false);
        ag_tensor s3 = OP(sc, ag_sum, lse, NULL, 0, false);
        ag_tensor s4 = OP(sc, ag_mean, s1, NULL, 0, false);
        ag_tensor t1 = OP(sc, ag_add, s2, s3);
        mid = OP(sc, ag_mul, s1, s4);
        loss = OP(sc, ag_add, t1, s4);
        break;
    }
    case K_LINEAR: {
        ag_tensor h = OP(sc, ag_linear, in[0], in[1], in[2]); /* (5,4) */
        ag_tensor hv = OP(sc, ag_matmul, h, in[3]);           /* (5,2) */
        mid = OP(sc, ag_sigmoid, hv);
        ag_tensor t = OP(sc, ag_transpose, mid, 0, 1);        /* (2,5) */
        ag_tensor tm = OP(sc, ag_matmul, t, h);               /* (2,4) */
        ag_tensor g = OP(sc, ag_gelu, tm);
        loss = OP(sc, ag_mean, g, NULL, 0, false);
        break;
    }
    case K_SOFTMAX_CE: {
        static const int64_t labels[6] = {0, 4, 2, 2, 1, 3};
        ag_tensor ce = OP(sc, ag_cross_entropy, in[0], labels, 6);
        mid = OP(sc, ag_softmax, in[0], 1);
        ag_tensor sw = OP(sc, ag_mul, mid, in[1]);
        ag_tensor ssw = OP(sc, ag_sum, sw, NULL, 0, false);
        ag_tensor ls = OP(sc, ag_log_softmax, in[0], 0);
        ag_tensor lsm = OP(sc, ag_mean, ls, NULL, 0, false);
        ag_tensor a1 = OP(sc, ag_add, ce, ssw);
        loss = OP(sc, ag_add, a1, lsm);
        break;
    }
    case K_WHERE: {
        ag_tensor gt = OP(sc, ag_gt, in[0], in[1]);
        ag_tensor aa = OP(sc, ag_mul, in[0], in[0]);
        ag_tensor b3 = OP(sc, ag_mul_scalar, in[1], 3);
        ag_tensor w = OP(sc, ag_where, gt, aa, b3);
        ag_tensor mx = OP(sc, ag_maximum, w, in[1]);
        ag_tensor cl = OP(sc, ag_clamp, mx, -1.0, 2.5);
        ag_tensor ab = OP(sc, ag_abs, in[0]);
        ag_tensor le = OP(sc, ag_le, ab, in[1]);
        ag_tensor r = OP(sc, ag_relu, in[1]);
        ag_tensor lr = OP(sc, ag_leaky_relu, in[0], 0.1);
        ag_tensor w2 = OP(sc, ag_where, le, r, lr);
        mid = OP(sc, ag_mul, cl, w2);
        ag_tensor ms = OP(sc, ag_minimum_scalar, mid, 1.5);
        loss = OP(sc, ag_sum, ms, NULL, 0, false);
        break;
    }
    case K_INDEX: {
        static const int64_t rows[4] = {4, 0, 0, 2};
        static const int64_t gidx[8] = {3, 0, 1, 1, 2, 2, 0, 3}; /* (4,2) along axis 1 */
        ag_tensor sel = OP(sc, ag_index_select, in[0], 0, rows, 4);            /* (4,4) */
        ag_tensor ga = OP(sc, ag_gather, sel, 1, gidx, I64(4, 2), 2);          /* (4,2) */
        ag_tensor sl = OP(sc, ag_slice, in[0], 1, 1, 4, 2);                    /* (5,2) */
        ag_tensor sl2 = OP(sc, ag_slice, sl, 0, 0, 4, 1);                      /* (4,2) */
        ag_tensor cat = OP(sc, ag_concat, (ag_tensor[]){ga, sl2}, 2, 1);       /* (4,4) */
        ag_tensor bb = OP(sc, ag_unsqueeze, in[1], 0);                         /* (1,4) */
        ag_tensor be = OP(sc, ag_expand, bb, I64(4, 4), 2);                    /* (4,4) */
        ag_tensor st = OP(sc, ag_stack, (ag_tensor[]){cat, be}, 2, 0);         /* (2,4,4) */
        ag_tensor pm = OP(sc, ag_permute, st, I64(2, 0, 1), 3);                /* (4,2,4) */
        ag_tensor rs = OP(sc, ag_reshape, pm, I64(8, -1), 2);                  /* (8,4) */
        ag_tensor tr = OP(sc, ag_transpose, rs, 0, 1);                         /* (4,8) */
        ag_tensor sn = OP(sc, ag_sin, tr);
        mid = OP(sc, ag_mul, sn, tr);
        ag_tensor sq = OP(sc, ag_squeeze, bb, I64(0), 1);                      /* (4) */
        ag_tensor dt = OP(sc, ag_dot, sq, in[1]);
        ag_tensor sm = OP(sc, ag_sum, mid, NULL, 0, false);
        loss = OP(sc, ag_add, sm, dt);
        break;
    }
    case K_CHAIN: {
        ag_tensor v = in[0];
        for (int i = 0; i < 10; i++) {
            ag_tensor a = OP(sc, ag_add, v, in[i % 2]);
            ag_tensor m = OP(sc, ag_mul, a, in[(i + 1) % 2]);
            ag_tensor t = OP(sc, ag_tanh, m);
            v = OP(sc, ag_relu, t);
        }
        mid = v;
        ag_tensor e = OP(sc, ag_exp, v);
        loss = OP(sc, ag_sum, e, NULL, 0, false);
        break;
    }
    }
    ag_tensor g[4] = {0};
    scope_grad(sc, g, loss, in, K.nin, true);
    if (s.st == AG_OK) {
        out[0] = scope_take(sc, loss);
        out[1] = scope_take(sc, mid);
        for (int i = 0; i < K.nin; i++) out[2 + i] = scope_take(sc, g[i]);
    }
    ag_status st = s.st;
    scope_free(sc);
    return st;
}

/* The capture's function: kind_fn of the kind in user_data. */
static int32_t capture_kind(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                            void *user_data) {
    int k = *(const int *)user_data;
    Kind K = kind_of(k);
    if (noutputs != K.nout || ninputs != K.nin) return 91;
    return kind_fn(k, outputs, inputs);
}

/* The inputs of kind K at `seed`: new leaves of dtype dt, requiring grad when rg. */
static void kind_inputs(ag_tensor *in, const Kind *K, ag_dtype dt, double seed, bool rg) {
    for (int i = 0; i < K->nin; i++) in[i] = filled_at(K->in[i], dt, seed + 0.37 * i, K->positive[i], rg, HERE);
}

/* Eager outputs of kind k on inputs at `seed` (leaves requiring grad, freed here). */
static bool kind_eager(ag_tensor *out, int k, ag_dtype dt, double seed) {
    Kind K = kind_of(k);
    ag_tensor in[4] = {0};
    kind_inputs(in, &K, dt, seed, true);
    ag_status st = kind_fn(k, out, in);
    for (int i = 0; i < K.nin; i++) ag_tensor_free(in[i]);
    return CHECKF(st == AG_OK, "eager %s failed: %s: %s", kind_names[k], ag_status_name(st), ag_last_error());
}

static void free_n(ag_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        if (t[i]) CHECK_OK(ag_tensor_free(t[i]));
        t[i] = AG_NULL_TENSOR;
    }
}

static void test_replay_equals_eager(void) {
    for (int d = 0; d < 2; d++) {
        ag_dtype dt = d ? AG_FLOAT32 : AG_FLOAT64;
        for (int k = 0; k < K_COUNT; k++) {
            set_ctx("%s, %s", kind_names[k], d ? "float32" : "float64");
            Kind K = kind_of(k);
            ag_tensor ex[4] = {0};
            kind_inputs(ex, &K, dt, 0.5, true);
            ag_function f = AG_NULL_FUNCTION;
            if (!CHECK_OK(ag_capture(&f, capture_kind, ex, K.nin, K.nout, &k))) {
                free_n(ex, K.nin);
                continue;
            }
            /* The capture ran the function once on the examples: replaying them gives the same. */
            ag_tensor eager[8] = {0}, rep[8] = {0}, into[8] = {0};
            if (kind_eager(eager, k, dt, 0.5) && CHECK_OK(ag_function_call(rep, K.nout, f, ex, K.nin)))
                for (int o = 0; o < K.nout; o++) SAME_BITS(rep[o], eager[o], "replay on the examples");
            free_n(eager, K.nout), free_n(rep, K.nout);
            free_n(ex, K.nin);

            /* New inputs (with and without requires_grad: values only are read). */
            for (int r = 0; r < 3; r++) {
                double seed = 1.9 + 1.3 * r;
                ag_tensor in[4] = {0};
                kind_inputs(in, &K, dt, seed, r == 1);
                if (!kind_eager(eager, k, dt, seed)) {
                    free_n(in, K.nin);
                    continue;
                }
                if (CHECK_OK(ag_function_call(rep, K.nout, f, in, K.nin))) {
                    for (int o = 0; o < K.nout; o++) {
                        char what[64];
                        snprintf(what, sizeof what, "replay %d, output %d", r, o);
                        SAME_BITS(rep[o], eager[o], what);
                        bool rg = true;
                        CHECK_OK(ag_tensor_requires_grad(&rg, rep[o]));
                        CHECK(!rg); /* outputs carry no history */
                    }
                    /* _call_into: the same bits written into existing leaves. */
                    for (int o = 0; o < K.nout; o++) {
                        Shape so = {0, {0}};
                        CHECK_OK(ag_tensor_ndim(&so.ndim, rep[o]));
                        CHECK_OK(ag_tensor_shape(so.d, AG_MAX_NDIM, rep[o]));
                        CHECK_OK(ag_tensor_full(&into[o], so.d, so.ndim, 123.0, dt));
                    }
                    if (CHECK_OK(ag_function_call_into(into, K.nout, f, in, K.nin)))
                        for (int o = 0; o < K.nout; o++) SAME_BITS(into[o], eager[o], "call_into");
                    free_n(into, K.nout);
                }
                free_n(rep, K.nout), free_n(eager, K.nout), free_n(in, K.nin);
            }
            CHECK_OK(ag_function_free(f));
        }
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* Parameters, constants, set_data inside a capture                                           */
/* ========================================================================================== */

typedef struct {
    ag_tensor W;       /* a parameter (made outside), (3,2) */
    ag_tensor P;       /* written by set_data inside the function, (2) */
} SemCtx;

/* out[0] = x @ W + P * c + r, where c = full(2.5) and r = rand_uniform are made inside (constants),
 * P is first set to {1, -2} by ag_tensor_set_data. out[1] = r. */
static int32_t capture_semantics(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                                 void *user_data) {
    SemCtx *c = user_data;
    if (noutputs != 2 || ninputs != 1) return 91;
    if (ag_tensor_set_data(c->P, (double[]){1, -2}, 2, AG_FLOAT64) != AG_OK) return 92;
    Scope s = {0}, *sc = &s;
    ag_tensor k = OP(sc, ag_tensor_full, I64(2), 1, 2.5, AG_FLOAT64);
    ag_tensor r = OP(sc, ag_tensor_rand_uniform, I64(2), 1, -1.0, 1.0, 12345, AG_FLOAT64);
    ag_tensor xw = OP(sc, ag_matmul, inputs[0], c->W);
    ag_tensor pk = OP(sc, ag_mul, c->P, k);
    ag_tensor y0 = OP(sc, ag_add, xw, pk);
    ag_tensor y = OP(sc, ag_add, y0, r);
    if (s.st == AG_OK) {
        outputs[0] = scope_take(sc, y);
        outputs[1] = scope_take(sc, r);
    }
    int32_t st = s.st;
    scope_free(sc);
    return st;
}

static void test_semantics(void) {
    double Wv[6] = {1, 2, -1, 0.5, 3, -2};
    SemCtx c = {MAKE(Wv, SHAPE(3, 2)), MAKE(D(0, 0), SHAPE(2))};
    ag_tensor x = MAKE(D(1, 2, 3), SHAPE(3));
    ag_function f = 0;
    CHECK_OK(ag_capture(&f, capture_semantics, &x, 1, 2, &c));
    double p[2];
    READ(p, 2, c.P);
    CHECK(p[0] == 1 && p[1] == -2); /* the capture ran */
    ag_tensor out[2] = {0}, out2[2] = {0};
    CHECK_OK(ag_function_call(out, 2, f, &x, 1));
    double r[2], y[2];
    READ(r, 2, out[1]);
    READ(y, 2, out[0]);
    CHECK(r[0] >= -1 && r[0] <= 1 && r[1] >= -1 && r[1] <= 1);
    /* x @ W = (1 - 2 + 9, 2 + 1 - 6) = (8, -3); + P * 2.5 = (2.5, -5). */
    CHECK(y[0] == (8 + 2.5) + r[0] && y[1] == (-3 - 5.0) + r[1]);

    /* The parameter W changed outside: read in place. P changed outside: written back by the replay. */
    CHECK_OK(ag_tensor_set_data(c.W, (double[]){0, 0, 0, 0, 1, 1}, 6, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_data(c.P, (double[]){100, 100}, 2, AG_FLOAT64));
    ag_tensor x2 = MAKE(D(-1, 4, 2), SHAPE(3));
    CHECK_OK(ag_function_call(out2, 2, f, &x2, 1));
    double r2[2], y2[2];
    READ(r2, 2, out2[1]);
    READ(y2, 2, out2[0]);
    CHECK(r2[0] == r[0] && r2[1] == r[1]); /* the random tensor is a constant of the capture */
    CHECK(y2[0] == (2 + 2.5) + r[0] && y2[1] == (2 - 5.0) + r[1]);
    READ(p, 2, c.P);
    CHECK(p[0] == 1 && p[1] == -2);
    free_n(out, 2), free_n(out2, 2);
    CHECK_OK(ag_function_free(f));
    FREE(x, x2, c.W, c.P);
}

/* ========================================================================================== */
/* A training step captured and replayed N times, against the eager loop                      */
/* ========================================================================================== */

enum { NB = 5, NSTEPS = 12 };
typedef struct {
    ag_tensor p[4]; /* W1 (8,5), b1 (8), W2 (3,8), b2 (3) */
    ag_optimizer opt;
} Model;

static bool model_make(Model *m, ag_dtype dt, bool adam) {
    static const Shape shapes[4] = {{2, {8, 5}}, {1, {8}}, {2, {3, 8}}, {1, {3}}};
    for (int i = 0; i < 4; i++) {
        int64_t n = numel_of_shape(shapes[i]);
        double v[64];
        fill(v, n, 10.0 + i);
        for (int j = 0; j < n; j++) v[j] *= 0.3;
        m->p[i] = make_at(v, shapes[i], dt, true, HERE);
    }
    ag_status st = adam ? ag_optimizer_adam(&m->opt, m->p, 4, 0.01, 0.9, 0.999, 1e-8, 0.01)
                        : ag_optimizer_sgd(&m->opt, m->p, 4, 0.05, 0.9, false, 0.001);
    return CHECK_OK(st);
}

static void model_free(Model *m) {
    CHECK_OK(ag_optimizer_free(m->opt));
    free_n(m->p, 4);
}

/* One step: loss = mse(linear(relu(linear(x, W1, b1)), W2, b2), y); backward; step; zero_grad. */
static ag_status train_step(ag_tensor *loss_out, Model *m, ag_tensor x, ag_tensor y) {
    Scope s = {0}, *sc = &s;
    ag_tensor h = OP(sc, ag_linear, x, m->p[0], m->p[1]);
    ag_tensor r = OP(sc, ag_relu, h);
    ag_tensor o = OP(sc, ag_linear, r, m->p[2], m->p[3]);
    ag_tensor loss = OP(sc, ag_mse_loss, o, y);
    if (s.st == AG_OK) s.st = ag_backward(loss, AG_NULL_TENSOR, false, false);
    if (s.st == AG_OK) s.st = ag_optimizer_step(m->opt);
    if (s.st == AG_OK) s.st = ag_optimizer_zero_grad(m->opt);
    if (s.st == AG_OK) *loss_out = scope_take(sc, loss);
    ag_status st = s.st;
    scope_free(sc);
    return st;
}

static int32_t capture_train(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                             void *user_data) {
    if (noutputs != 1 || ninputs != 2) return 91;
    return train_step(&outputs[0], user_data, inputs[0], inputs[1]);
}

static void batch(ag_tensor *x, ag_tensor *y, ag_dtype dt, int b) {
    *x = filled_at(SHAPE(4, 5), dt, 20.0 + b, false, false, HERE);
    *y = filled_at(SHAPE(4, 3), dt, 40.0 + b, false, false, HERE);
}

static void test_training(void) {
    for (int d = 0; d < 2; d++)
        for (int adam = 0; adam < 2; adam++) {
            ag_dtype dt = d ? AG_FLOAT32 : AG_FLOAT64;
            set_ctx("%s, %s", adam ? "Adam" : "SGD with momentum", d ? "float32" : "float64");
            ag_tensor xs[NB], ys[NB];
            for (int b = 0; b < NB; b++) batch(&xs[b], &ys[b], dt, b);
            /* Eager. */
            Model me = {{0}, 0}, mr = {{0}, 0};
            model_make(&me, dt, adam);
            ag_tensor le[NSTEPS] = {0}, lr[NSTEPS] = {0};
            for (int i = 0; i < NSTEPS; i++) TRY(train_step(&le[i], &me, xs[i % NB], ys[i % NB]));
            /* Captured on batch 0 (its step is the first step), replayed on the next ones. */
            model_make(&mr, dt, adam);
            ag_function f = 0;
            if (CHECK_OK(ag_capture(&f, capture_train, (ag_tensor[]){xs[0], ys[0]}, 2, 1, &mr))) {
                double first = 0;
                /* The capture's own loss is not returned: replay step 0 is the capture's run. */
                for (int i = 1; i < NSTEPS; i++)
                    TRY(ag_function_call(&lr[i], 1, f, (ag_tensor[]){xs[i % NB], ys[i % NB]}, 2));
                for (int i = 1; i < NSTEPS; i++) {
                    char what[48];
                    snprintf(what, sizeof what, "loss of step %d", i);
                    SAME_BITS(lr[i], le[i], what);
                }
                for (int i = 0; i < 4; i++) {
                    char what[48];
                    snprintf(what, sizeof what, "parameter %d after %d steps", i, NSTEPS);
                    SAME_BITS(mr.p[i], me.p[i], what);
                }
                /* Training happened: the loss on batch 0 went down from step 0 to step 2 NB. */
                first = item_of(le[0]);
                CHECK(item_of(le[2 * NB]) < first);
                /* .grad fields: zeroed by the step's zero_grad, left as they are by a replay. */
                ag_tensor g = SENTINEL;
                CHECK_OK(ag_tensor_grad(&g, mr.p[0]));
                if (g != SENTINEL && g != AG_NULL_TENSOR) FREE(g);
                CHECK_OK(ag_function_free(f));
            }
            free_n(le, NSTEPS), free_n(lr, NSTEPS);
            model_free(&me), model_free(&mr);
            free_n(xs, NB), free_n(ys, NB);
        }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* ag_function_info                                                                           */
/* ========================================================================================== */

static void test_info(void) {
    int k = K_CHAIN;
    Kind K = kind_of(k);
    ag_tensor ex[4] = {0};
    kind_inputs(ex, &K, AG_FLOAT64, 0.5, true);
    ag_function f = 0;
    if (CHECK_OK(ag_capture(&f, capture_kind, ex, K.nin, K.nout, &k))) {
        int64_t info[AG_FUNCTION_INFO_COUNT + 2];
        for (int i = 0; i < AG_FUNCTION_INFO_COUNT + 2; i++) info[i] = -99;
        CHECK_OK(ag_function_info(info, AG_FUNCTION_INFO_COUNT + 2, f));
        CHECK(info[AG_FUNCTION_INFO_COUNT] == -99 && info[AG_FUNCTION_INFO_COUNT + 1] == -99);
        printf("    chain: recorded %" PRId64 ", live %" PRId64 ", instructions %" PRId64 ", fused groups %" PRId64
               ", fused steps %" PRId64 ", rerun %" PRId64 ", arena %" PRId64 " B, scratch %" PRId64 " B\n",
               info[0], info[1], info[2], info[3], info[4], info[5], info[6], info[7]);
        /* 40 forward ops and their backward: at least 40 steps, most of them fused. */
        CHECK(info[0] >= 40);
        CHECK(info[1] > 0 && info[1] <= info[0]);
        CHECK(info[3] > 0);            /* fused groups */
        CHECK(info[4] >= 2 * info[3]); /* each group fuses at least two steps */
        CHECK(info[4] >= 20);
        CHECK(info[6] > 0); /* arena bytes */
        for (int i = 0; i < AG_FUNCTION_INFO_COUNT; i++) CHECKF(info[i] >= 0, "info[%d] = %" PRId64, i, info[i]);
        /* A smaller capacity writes that many. */
        int64_t part[3] = {-1, -1, -1};
        CHECK_OK(ag_function_info(part, 2, f));
        CHECK(part[0] == info[0] && part[1] == info[1] && part[2] == -1);
        CHECK_OK(ag_function_info(NULL, 0, f));
        CHECK_OK(ag_function_free(f));
    }
    free_n(ex, K.nin);
}

/* ========================================================================================== */
/* Concurrent replays of one function                                                         */
/* ========================================================================================== */

enum { NTHREADS = 4, NCALLS = 20 };
typedef struct {
    ag_function f;
    int k, id;
    ag_dtype dt;
    int bad; /* calls whose outputs differed from the eager ones, or failed */
    int done;
} Worker;

static bool same_bits_quiet(ag_tensor a, ag_tensor b) {
    int64_t na = 0, nb = 0;
    ag_dtype da = 0, db = 0;
    if (ag_tensor_numel(&na, a) || ag_tensor_numel(&nb, b) || ag_tensor_dtype(&da, a) || ag_tensor_dtype(&db, b))
        return false;
    if (na != nb || da != db) return false;
    size_t bytes = (size_t)na * dtype_size(da);
    void *va = malloc(bytes ? bytes : 1), *vb = malloc(bytes ? bytes : 1);
    bool ok = ag_tensor_copy_data(va, na, da, a) == AG_OK && ag_tensor_copy_data(vb, nb, db, b) == AG_OK &&
              memcmp(va, vb, bytes) == 0;
    free(va);
    free(vb);
    return ok;
}

static void *worker(void *arg) {
    Worker *w = arg;
    Kind K = kind_of(w->k);
    for (int c = 0; c < NCALLS; c++) {
        double seed = 3.0 + w->id * 10.0 + c;
        ag_tensor in[4] = {0}, rep[8] = {0}, eager[8] = {0};
        for (int i = 0; i < K.nin; i++) {
            int64_t n = numel_of_shape(K.in[i]);
            double v[64];
            if (K.positive[i])
                fill_positive(v, n, seed + 0.37 * i);
            else
                fill(v, n, seed + 0.37 * i);
            float vf[64];
            for (int j = 0; j < n; j++) vf[j] = (float)v[j];
            if (ag_tensor_from_data(&in[i], w->dt == AG_FLOAT32 ? (void *)vf : (void *)v, K.in[i].d, K.in[i].ndim,
                                    w->dt) != AG_OK ||
                ag_tensor_set_requires_grad(in[i], true) != AG_OK)
                w->bad++;
        }
        /* Replays (the lock) interleaved with eager runs of the same function on other threads. */
        if (ag_function_call(rep, K.nout, w->f, in, K.nin) != AG_OK) {
            w->bad++;
        } else if (kind_fn(w->k, eager, in) != AG_OK) {
            w->bad++;
        } else {
            for (int o = 0; o < K.nout; o++) w->bad += !same_bits_quiet(rep[o], eager[o]);
        }
        for (int o = 0; o < 8; o++) {
            if (rep[o]) ag_tensor_free(rep[o]);
            if (eager[o]) ag_tensor_free(eager[o]);
        }
        for (int i = 0; i < K.nin; i++) ag_tensor_free(in[i]);
        w->done++;
    }
    return NULL;
}

static void test_threads(void) {
    for (int d = 0; d < 2; d++) {
        int k = d ? K_LINEAR : K_WHERE;
        ag_dtype dt = d ? AG_FLOAT32 : AG_FLOAT64;
        set_ctx("%s, %s", kind_names[k], d ? "float32" : "float64");
        Kind K = kind_of(k);
        ag_tensor ex[4] = {0};
        kind_inputs(ex, &K, dt, 0.5, true);
        ag_function f = 0;
        if (CHECK_OK(ag_capture(&f, capture_kind, ex, K.nin, K.nout, &k))) {
            Worker w[NTHREADS];
            pthread_t th[NTHREADS];
            for (int i = 0; i < NTHREADS; i++) {
                w[i] = (Worker){f, k, i, dt, 0, 0};
                CHECK(pthread_create(&th[i], NULL, worker, &w[i]) == 0);
            }
            for (int i = 0; i < NTHREADS; i++) {
                CHECK(pthread_join(th[i], NULL) == 0);
                CHECKF(w[i].done == NCALLS && w[i].bad == 0, "thread %d: %d calls, %d differed or failed", i,
                       w[i].done, w[i].bad);
            }
            CHECK_OK(ag_function_free(f));
        }
        free_n(ex, K.nin);
    }
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* A freed function handle                                                                    */
/* ========================================================================================== */

static void test_freed(void) {
    int k = K_BROADCAST;
    Kind K = kind_of(k);
    ag_tensor ex[4] = {0};
    kind_inputs(ex, &K, AG_FLOAT64, 0.5, true);
    ag_function f = 0;
    CHECK_OK(ag_capture(&f, capture_kind, ex, K.nin, K.nout, &k));
    CHECK(f != AG_NULL_FUNCTION);
    int64_t before = live_handles();
    CHECK_OK(ag_function_free(f));
    CHECK(live_handles() == before - 1); /* the function was a live handle */
    ag_tensor out[8];
    for (int i = 0; i < 8; i++) out[i] = SENTINEL;
    CHECK_ERR(ag_function_call(out, K.nout, f, ex, K.nin), AG_ERR_INVALID_HANDLE);
    CHECK(strstr(ag_last_error(), "is not a live function handle") != NULL);
    CHECK(out[0] == SENTINEL);
    CHECK_ERR(ag_function_call_into(ex, K.nout, f, ex, K.nin), AG_ERR_INVALID_HANDLE);
    int64_t info[8] = {-5};
    CHECK_ERR(ag_function_info(info, 8, f), AG_ERR_INVALID_HANDLE);
    CHECK(info[0] == -5);
    CHECK_ERR(ag_function_free(f), AG_ERR_INVALID_HANDLE);
    CHECK_OK(ag_function_free(AG_NULL_FUNCTION));
    /* The examples are the caller's still. */
    double v[12];
    READ(v, 12, ex[0]);
    free_n(ex, K.nin);
}

int main(void) {
    test_begin();
    run_group_checking_handles("notebook", test_notebook);
    run_group_checking_handles("recompute after ag_tensor_copy_ and an optimizer step", test_recompute_after_writes);
    run_group_checking_handles("replay equals eager, bit for bit", test_replay_equals_eager);
    run_group_checking_handles("parameters, constants and set_data inside a capture", test_semantics);
    run_group_checking_handles("a captured training step", test_training);
    run_group_checking_handles("ag_function_info", test_info);
    run_group_checking_handles("concurrent replays of one function", test_threads);
    run_group_checking_handles("a freed function handle", test_freed);
    check_no_leaks();
    return test_summary();
}
