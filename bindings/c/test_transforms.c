/*
 * test_transforms.c - the function transforms of include/autograd.h (ag_jvp, ag_vjp, ag_jacobian,
 * ag_hvp, ag_hessian): values against derivatives worked out by hand in this file, and every
 * error the header lists for them.
 *
 *   jvp         sin(x) * y (float64 and float32): tangent cos(x) tx y + sin(x) ty; a constant
 *               function (zero tangent); the identity (the tangent is a copy of the one given);
 *               reverse over forward: ag_backward through the tangent of sin(x) gives -sin(x) t.
 *   vjp         tanh(W @ x): grads W^T (c (1 - y^2)) and (c (1 - y^2)) x^T, with history where W
 *               requires grad (none under grad mode off); an unused primal gets zeros; .grad is
 *               never touched; reverse over reverse: d/dx sum(cos(x) c) = -sin(x) c.
 *   jacobian    A @ x (a 2 x 3 constant A): J = A, both modes; sin(x) * x on a 2 x 2 input:
 *               a [2, 2, 2, 2] diagonal; x^3 on a 0-d input; an empty input in forward mode.
 *   hvp, hessian  sum(x^3): H = diag(6 x), H v = 6 x v; sum(x * (A @ x)) = x^T A x: H = A + A^T;
 *               hvp agrees with the Hessian's product; forward over reverse through ag_vjp
 *               (the jvp of x -> vjp(sum(x^3)) is 6 x t).
 *   errors      tangent / cotangent / v of another shape or dtype; a non-scalar function for
 *               hvp and hessian; a build function that fails, writes no handle or a made-up one,
 *               frees its input, or changes its output between calls; forward mode inside
 *               forward mode (AG_ERR_STATE from the inner call); a build function that calls
 *               ag_vjp on itself without end (stopped at the nesting limit); NULL pointers, bad
 *               counts, an unknown mode, a result rank above AG_MAX_NDIM, freed handles. Each
 *               failure writes no output and leaves no handle behind.
 *
 * The Jacobian of A @ x in forward mode and the Hessian of x^T A x need the JVP of ag_matmul
 * (forward mode through matrix products); the rest goes through elementwise operations only.
 *
 * Output: "== group" lines, one line per failed check, then exactly "N passed, M failed"; exit
 * status 0 only if M is 0. No handle may be live at the end. Runs under valgrind in
 * scripts/c-tests.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

/* ========================================================================================== */
/* Build functions                                                                            */
/* ========================================================================================== */

enum {
    F_SIN_MUL,       /* sin(in[0]) * in[1] */
    F_SIN,           /* sin(in[0]) */
    F_CONST,         /* a new tensor [1, 2], independent of the inputs */
    F_IDENTITY,      /* in[0] itself */
    F_TANH_MATVEC,   /* tanh(in[0] @ in[1]) */
    F_MATVEC,        /* A @ in[0] (A from the context) */
    F_SIN_TIMES_X,   /* sin(in[0]) * in[0] */
    F_CUBE,          /* in[0] * in[0] * in[0] */
    F_CUBE_SUM,      /* sum(in[0]^3) */
    F_QUADRATIC,     /* sum(in[0] * (A @ in[0])) */
    F_FAIL,          /* makes a failing call, then returns 3 */
    F_NO_HANDLE,     /* returns 0 without writing *out */
    F_MADE_UP,       /* writes a made-up handle */
    F_FREES_INPUT,   /* in[0] * in[0], after freeing in[0] */
    F_GROWS,         /* sum(in[0]^3) on the first call, then in[0] * 2 (more elements) */
    F_TO_FLOAT32,    /* in[0] * 2 on the first call, then float32 zeros of its shape */
    F_NESTED,        /* calls the transform `inner` inside; returns its status != AG_OK */
    F_VJP_CUBE_SUM,  /* the gradient of sum(x^3) at in[0], through ag_vjp */
    F_RECURSE,       /* calls ag_vjp on itself, without end */
};

/* What a transform inside a build function is (F_NESTED). */
enum { IN_JVP, IN_HVP, IN_HESSIAN, IN_JAC_REV, IN_JAC_FWD, IN_VJP };

typedef struct {
    int fn;
    ag_tensor A;         /* F_MATVEC, F_QUADRATIC */
    int inner;           /* F_NESTED */
    int calls;           /* how often build ran */
    ag_status inner_status; /* F_NESTED, F_RECURSE: the status of the innermost failing call */
    int depth;           /* F_RECURSE: how deep the recursion went */
} Ctx;

static int32_t build(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data);

/* x^3 as products (elementwise only). */
static ag_status cube(ag_tensor *out, ag_tensor x) {
    ag_tensor sq = AG_NULL_TENSOR;
    ag_status s = ag_mul(&sq, x, x);
    if (s == AG_OK) s = ag_mul(out, sq, x);
    ag_tensor_free(sq);
    return s;
}

static ag_status cube_sum(ag_tensor *out, ag_tensor x) {
    ag_tensor c = AG_NULL_TENSOR;
    ag_status s = cube(&c, x);
    if (s == AG_OK) s = ag_sum(out, c, NULL, 0, false);
    ag_tensor_free(c);
    return s;
}

static int32_t build(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    Ctx *c = user_data;
    c->calls++;
    if (!out || !in || n < 1) return 99;
    ag_tensor tmp = AG_NULL_TENSOR;
    ag_status s = AG_OK;
    switch (c->fn) {
    case F_SIN_MUL:
        if (n < 2) return 98;
        s = ag_sin(&tmp, in[0]);
        if (s == AG_OK) s = ag_mul(out, tmp, in[1]);
        break;
    case F_SIN: s = ag_sin(out, in[0]); break;
    case F_CONST: s = ag_tensor_from_data(out, D(1.0, 2.0), I64(2), 1, AG_FLOAT64); break;
    case F_IDENTITY: *out = in[0]; break;
    case F_TANH_MATVEC:
        if (n < 2) return 98;
        s = ag_matmul(&tmp, in[0], in[1]);
        if (s == AG_OK) s = ag_tanh(out, tmp);
        break;
    case F_MATVEC: s = ag_matmul(out, c->A, in[0]); break;
    case F_SIN_TIMES_X:
        s = ag_sin(&tmp, in[0]);
        if (s == AG_OK) s = ag_mul(out, tmp, in[0]);
        break;
    case F_CUBE: s = cube(out, in[0]); break;
    case F_CUBE_SUM: s = cube_sum(out, in[0]); break;
    case F_QUADRATIC:
        s = ag_matmul(&tmp, c->A, in[0]);
        if (s == AG_OK) {
            ag_tensor p = AG_NULL_TENSOR;
            s = ag_mul(&p, in[0], tmp);
            if (s == AG_OK) s = ag_sum(out, p, NULL, 0, false);
            ag_tensor_free(p);
        }
        break;
    case F_FAIL:
        (void)ag_tensor_zeros(&tmp, NULL, 0, 77); /* fails: the message the outer call quotes */
        return 3;
    case F_NO_HANDLE: return 0;
    case F_MADE_UP: *out = (ag_tensor)0x0123456789abcdefULL; return 0;
    case F_FREES_INPUT:
        s = ag_mul(out, in[0], in[0]);
        ag_tensor_free(in[0]);
        break;
    case F_GROWS:
        s = c->calls == 1 ? cube_sum(out, in[0]) : ag_mul_scalar(out, in[0], 2.0);
        break;
    case F_TO_FLOAT32:
        if (c->calls == 1) {
            s = ag_mul_scalar(out, in[0], 2.0);
        } else {
            int64_t shape[AG_MAX_NDIM], nd = 0;
            s = ag_tensor_ndim(&nd, in[0]);
            if (s == AG_OK) s = ag_tensor_shape(shape, AG_MAX_NDIM, in[0]);
            if (s == AG_OK) s = ag_tensor_zeros(out, shape, nd, AG_FLOAT32);
        }
        break;
    case F_NESTED: {
        Ctx inner = {.fn = F_CUBE_SUM};
        ag_tensor y = AG_NULL_TENSOR, t = AG_NULL_TENSOR;
        switch (c->inner) {
        case IN_JVP: s = ag_jvp(&y, &t, build, &inner, in, 1, in); break;
        case IN_HVP: s = ag_hvp(&t, build, &inner, in[0], in[0]); break;
        case IN_HESSIAN: s = ag_hessian(&t, build, &inner, in[0]); break;
        case IN_JAC_REV: s = ag_jacobian(&t, build, &inner, in[0], AG_JACOBIAN_REVERSE); break;
        case IN_JAC_FWD: s = ag_jacobian(&t, build, &inner, in[0], AG_JACOBIAN_FORWARD); break;
        default: {
            ag_tensor one = AG_NULL_TENSOR;
            s = ag_tensor_full(&one, NULL, 0, 1.0, AG_FLOAT64);
            if (s == AG_OK) s = ag_vjp(&y, &t, build, &inner, in, 1, one);
            ag_tensor_free(one);
        }
        }
        c->inner_status = s;
        ag_tensor_free(y);
        if (s != AG_OK) {
            ag_tensor_free(t);
            return 1;
        }
        *out = t;
        return 0;
    }
    case F_VJP_CUBE_SUM: {
        Ctx inner = {.fn = F_CUBE_SUM};
        ag_tensor one = AG_NULL_TENSOR, y = AG_NULL_TENSOR;
        s = ag_tensor_full(&one, NULL, 0, 1.0, AG_FLOAT64);
        if (s == AG_OK) s = ag_vjp(&y, out, build, &inner, in, 1, one);
        ag_tensor_free(one);
        ag_tensor_free(y);
        break;
    }
    case F_RECURSE: {
        c->depth++;
        ag_tensor one = AG_NULL_TENSOR, y = AG_NULL_TENSOR;
        s = ag_tensor_full(&one, NULL, 0, 1.0, AG_FLOAT64);
        if (s == AG_OK) {
            s = ag_vjp(&y, out, build, c, in, 1, one);
            if (s != AG_OK && c->inner_status == AG_OK) c->inner_status = s; /* the innermost failure */
        }
        ag_tensor_free(one);
        ag_tensor_free(y);
        break;
    }
    default: return 97;
    }
    ag_tensor_free(tmp);
    return s == AG_OK ? 0 : 1;
}

/* ========================================================================================== */
/* Helpers                                                                                    */
/* ========================================================================================== */

/* The message of the last failure contains `frag` (one check). */
static bool message_has_at(const char *frag, const char *file, int line) {
    const char *msg = ag_last_error();
    return check_at(msg && strstr(msg, frag) != NULL, file, line, "ag_last_error() is \"%s\", expected it to contain \"%s\"",
                    msg ? msg : "(null)", frag);
}
#define MESSAGE_HAS(frag) message_has_at((frag), HERE)

/* A 2 x 3 constant. */
static const double A23[6] = {1.5, -2.0, 0.5, 0.25, 3.0, -1.0};
/* A 3 x 3 constant, not symmetric. */
static const double A33[9] = {2.0, -1.0, 0.5, 0.75, 1.0, -2.5, 3.0, 0.25, -0.5};

/* ========================================================================================== */
/* jvp                                                                                        */
/* ========================================================================================== */

static void jvp_sin_mul(ag_dtype dtype) {
    double x[3], y[3], tx[3], ty[3], want_y[3], want_t[3];
    fill(x, 3, 0.3);
    fill(y, 3, 1.9);
    fill(tx, 3, 4.1);
    fill(ty, 3, 2.2);
    for (int i = 0; i < 3; i++) {
        want_y[i] = sin(x[i]) * y[i];
        want_t[i] = cos(x[i]) * tx[i] * y[i] + sin(x[i]) * ty[i];
    }
    ag_tensor primals[2] = {make_at(x, SHAPE(3), dtype, false, HERE), make_at(y, SHAPE(3), dtype, false, HERE)};
    ag_tensor tangents[2] = {make_at(tx, SHAPE(3), dtype, false, HERE), make_at(ty, SHAPE(3), dtype, false, HERE)};
    ag_tensor out = AG_NULL_TENSOR, tan = AG_NULL_TENSOR;
    Ctx c = {.fn = F_SIN_MUL};
    if (CHECK_OK(ag_jvp(&out, &tan, build, &c, primals, 2, tangents))) {
        CHECK(c.calls == 1);
        if (dtype == AG_FLOAT64) {
            EXPECT_TENSOR(out, SHAPE(3), want_y, "jvp output sin(x) * y");
            EXPECT_TENSOR(tan, SHAPE(3), want_t, "jvp tangent cos(x) tx y + sin(x) ty");
        } else {
            EXPECT_TENSOR32(out, SHAPE(3), want_y, "jvp output sin(x) * y (float32)");
            EXPECT_TENSOR32(tan, SHAPE(3), want_t, "jvp tangent (float32)");
        }
        EXPECT_DTYPE(tan, dtype);
    }
    FREE(out, tan, primals[0], primals[1], tangents[0], tangents[1]);
}

static void test_jvp(void) {
    jvp_sin_mul(AG_FLOAT64);
    jvp_sin_mul(AG_FLOAT32);

    /* A function that does not use its primal: its tangent is zeros of its shape. */
    ag_tensor x = MAKE(D(0.5, -1.0), SHAPE(2)), t = MAKE(D(1.0, 1.0), SHAPE(2));
    ag_tensor out = AG_NULL_TENSOR, tan = AG_NULL_TENSOR;
    Ctx c = {.fn = F_CONST};
    if (CHECK_OK(ag_jvp(&out, &tan, build, &c, &x, 1, &t))) {
        EXPECT_TENSOR(out, SHAPE(2), D(1.0, 2.0), "constant function");
        EXPECT_TENSOR(tan, SHAPE(2), D(0.0, 0.0), "its tangent is zero");
        FREE(out, tan);
    }

    /* The identity: the tangent given comes back, in memory of its own. */
    c = (Ctx){.fn = F_IDENTITY};
    if (CHECK_OK(ag_jvp(&out, &tan, build, &c, &x, 1, &t))) {
        EXPECT_TENSOR(out, SHAPE(2), D(0.5, -1.0), "identity");
        EXPECT_TENSOR(tan, SHAPE(2), D(1.0, 1.0), "identity's tangent");
        ag_tensor nine = MAKE(D(9.0, 9.0), SHAPE(2));
        CHECK_OK(ag_tensor_copy_(t, nine)); /* the tangent given changes; the one returned must not */
        EXPECT_TENSOR(tan, SHAPE(2), D(1.0, 1.0), "identity's tangent after the given one was overwritten");
        FREE(out, tan, nine);
    }
    FREE(x, t);

    /* Reverse over forward: x requires grad, so the tangent cos(x) t is recorded, and
     * d/dx sum(cos(x) t) = -sin(x) t. */
    double xv[4], tv[4], want[4];
    fill(xv, 4, 0.7);
    fill(tv, 4, 3.3);
    for (int i = 0; i < 4; i++) want[i] = -sin(xv[i]) * tv[i];
    x = MAKE_RG(xv, SHAPE(2, 2));
    t = MAKE(tv, SHAPE(2, 2));
    c = (Ctx){.fn = F_SIN};
    if (CHECK_OK(ag_jvp(&out, &tan, build, &c, &x, 1, &t))) {
        bool rg = false;
        CHECK_OK(ag_tensor_requires_grad(&rg, tan));
        CHECKF(rg, "the tangent of a function of a primal requiring grad carries history");
        ag_tensor s = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
        if (CHECK_OK(ag_sum(&s, tan, NULL, 0, false)) && CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false)) &&
            CHECK_OK(ag_tensor_grad(&g, x)) && CHECK(g != AG_NULL_TENSOR))
            EXPECT_TENSOR(g, SHAPE(2, 2), want, "d/dx of the jvp tangent of sin(x) (reverse over forward)");
        FREE(out, tan, s, g);
    }
    FREE(x, t);
}

/* ========================================================================================== */
/* vjp                                                                                        */
/* ========================================================================================== */

static void test_vjp(void) {
    /* f(W, x) = tanh(W @ x), W 2 x 3, x 3; with r = c (1 - y^2): dW = r x^T, dx = W^T r. */
    double W[6], x[3], cv[2], y[2], r[2], want_dW[6], want_dx[3] = {0};
    fill(W, 6, 0.1);
    fill(x, 3, 2.5);
    fill(cv, 2, 5.0);
    for (int i = 0; i < 2; i++) {
        double s = 0;
        for (int k = 0; k < 3; k++) s += W[i * 3 + k] * x[k];
        y[i] = tanh(s);
        r[i] = cv[i] * (1 - y[i] * y[i]);
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) {
            want_dW[i * 3 + k] = r[i] * x[k];
            want_dx[k] += W[i * 3 + k] * r[i];
        }
    /* W requires grad (its .grad must stay untouched), x does not. */
    ag_tensor prim[2] = {MAKE_RG(W, SHAPE(2, 3)), MAKE(x, SHAPE(3))}, cot = MAKE(cv, SHAPE(2));
    ag_tensor out = AG_NULL_TENSOR, grads[2] = {SENTINEL, SENTINEL};
    Ctx c = {.fn = F_TANH_MATVEC};
    if (CHECK_OK(ag_vjp(&out, grads, build, &c, prim, 2, cot))) {
        CHECK(c.calls == 1);
        EXPECT_TENSOR(out, SHAPE(2), y, "vjp output tanh(W @ x)");
        EXPECT_TENSOR(grads[0], SHAPE(2, 3), want_dW, "vjp dW = (c (1 - y^2)) x^T");
        EXPECT_TENSOR(grads[1], SHAPE(3), want_dx, "vjp dx = W^T (c (1 - y^2))");
        ag_tensor g = SENTINEL;
        CHECK_OK(ag_tensor_grad(&g, prim[0]));
        CHECKF(g == AG_NULL_TENSOR, "ag_vjp accumulated into W's .grad");
        bool rg = false;
        CHECK_OK(ag_tensor_requires_grad(&rg, grads[1]));
        CHECKF(rg, "dx = W^T r depends on W, which requires grad: it carries history");
        FREE(out, grads[0], grads[1]);
    }
    /* With grad mode off nothing carries history. */
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    c = (Ctx){.fn = F_TANH_MATVEC};
    if (CHECK_OK(ag_vjp(&out, grads, build, &c, prim, 2, cot))) {
        bool rg = true, rg2 = true;
        CHECK_OK(ag_tensor_requires_grad(&rg, out));
        CHECK_OK(ag_tensor_requires_grad(&rg2, grads[1]));
        CHECKF(!rg && !rg2, "ag_vjp under grad mode off gave results with history");
        EXPECT_TENSOR(grads[1], SHAPE(3), want_dx, "vjp dx under grad mode off");
        FREE(out, grads[0], grads[1]);
    }
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    FREE(cot);

    /* Reverse over reverse: x requires grad, g = cos(x) c, and d/dx sum(g) = -sin(x) c. */
    double xs[3], cs[3], want_xx[3];
    fill(xs, 3, 0.4);
    fill(cs, 3, 1.3);
    for (int k = 0; k < 3; k++) want_xx[k] = -sin(xs[k]) * cs[k];
    ag_tensor xr = MAKE_RG(xs, SHAPE(3)), cr = MAKE(cs, SHAPE(3)), gx = AG_NULL_TENSOR;
    c = (Ctx){.fn = F_SIN};
    if (CHECK_OK(ag_vjp(&out, &gx, build, &c, &xr, 1, cr))) {
        ag_tensor s = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
        if (CHECK_OK(ag_sum(&s, gx, NULL, 0, false)) && CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false)) &&
            CHECK_OK(ag_tensor_grad(&g, xr)) && CHECK(g != AG_NULL_TENSOR))
            EXPECT_TENSOR(g, SHAPE(3), want_xx, "d/dx of the vjp gradient cos(x) c (reverse over reverse)");
        FREE(out, gx, s, g);
    }
    FREE(xr, cr);

    /* A primal the function does not use gets zeros. */
    ag_tensor cot2 = MAKE(D(1.0, -1.0, 2.0), SHAPE(3));
    ag_tensor prim2[2] = {MAKE(x, SHAPE(3)), MAKE(D(7.0, 8.0), SHAPE(2))};
    c = (Ctx){.fn = F_SIN};
    grads[0] = grads[1] = SENTINEL;
    if (CHECK_OK(ag_vjp(&out, grads, build, &c, prim2, 2, cot2))) {
        double want[3];
        for (int k = 0; k < 3; k++) want[k] = cos(x[k]) * (k == 0 ? 1.0 : k == 1 ? -1.0 : 2.0);
        EXPECT_TENSOR(grads[0], SHAPE(3), want, "vjp of sin: cos(x) c");
        EXPECT_TENSOR(grads[1], SHAPE(2), D(0.0, 0.0), "vjp: an unused primal gets zeros");
        FREE(out, grads[0], grads[1]);
    }
    FREE(cot2, prim[0], prim[1], prim2[0], prim2[1]);
}

/* ========================================================================================== */
/* jacobian                                                                                   */
/* ========================================================================================== */

static void jacobian_case(const char *what, Ctx c, ag_tensor x, ag_jacobian_mode mode, Shape want_shape,
                          const double *want) {
    set_ctx("%s, %s mode", what, mode == AG_JACOBIAN_REVERSE ? "reverse" : "forward");
    ag_tensor j = AG_NULL_TENSOR;
    if (CHECK_OK(ag_jacobian(&j, build, &c, x, mode))) {
        EXPECT_TENSOR(j, want_shape, want, what);
        FREE(j);
    }
    set_ctx("%s", "");
}

static void test_jacobian(void) {
    ag_jacobian_mode modes[2] = {AG_JACOBIAN_REVERSE, AG_JACOBIAN_FORWARD};
    double xv[4];
    fill(xv, 4, 1.1);

    /* sin(x) * x on a 2 x 2 input: J[i, j, k, l] = (cos(x) x + sin(x))[i, j] when (i, j) = (k, l). */
    double want[16] = {0};
    for (int e = 0; e < 4; e++) want[e * 4 + e] = cos(xv[e]) * xv[e] + sin(xv[e]);
    ag_tensor x = MAKE(xv, SHAPE(2, 2));
    for (int m = 0; m < 2; m++)
        jacobian_case("sin(x) * x", (Ctx){.fn = F_SIN_TIMES_X}, x, modes[m], SHAPE(2, 2, 2, 2), want);
    FREE(x);

    /* x^3 on a 0-d input: 3 x^2, of shape []. */
    ag_tensor s = SCALAR(1.5);
    for (int m = 0; m < 2; m++) jacobian_case("x^3 at 1.5", (Ctx){.fn = F_CUBE}, s, modes[m], S0, D(6.75));
    FREE(s);

    /* An empty input: a [2, 0] Jacobian of the constant [1, 2] (forward mode calls build once). */
    ag_tensor e = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_zeros(&e, I64(0), 1, AG_FLOAT64));
    for (int m = 0; m < 2; m++) jacobian_case("a constant of an empty input", (Ctx){.fn = F_CONST}, e, modes[m], SHAPE(2, 0), NULL);
    FREE(e);

    /* A @ x, A 2 x 3: J = A (forward mode needs ag_matmul's JVP). */
    ag_tensor A = MAKE(A23, SHAPE(2, 3));
    x = MAKE(xv, SHAPE(3));
    for (int m = 0; m < 2; m++) jacobian_case("A @ x", (Ctx){.fn = F_MATVEC, .A = A}, x, modes[m], SHAPE(2, 3), A23);
    FREE(A, x);
}

/* ========================================================================================== */
/* hvp and hessian                                                                            */
/* ========================================================================================== */

static void test_hvp_hessian(void) {
    double xv[3], vv[3], want_h[9] = {0}, want_hv[3];
    fill(xv, 3, 0.9);
    fill(vv, 3, 2.4);
    for (int i = 0; i < 3; i++) {
        want_h[i * 3 + i] = 6 * xv[i];
        want_hv[i] = 6 * xv[i] * vv[i];
    }
    ag_tensor x = MAKE(xv, SHAPE(3)), v = MAKE(vv, SHAPE(3)), h = AG_NULL_TENSOR, hv = AG_NULL_TENSOR;
    Ctx c = {.fn = F_CUBE_SUM};
    if (CHECK_OK(ag_hessian(&h, build, &c, x))) {
        CHECK(c.calls == 3); /* one forward-over-reverse product per element */
        EXPECT_TENSOR(h, SHAPE(3, 3), want_h, "Hessian of sum(x^3) = diag(6 x)");
        FREE(h);
    }
    c = (Ctx){.fn = F_CUBE_SUM};
    if (CHECK_OK(ag_hvp(&hv, build, &c, x, v))) {
        CHECK(c.calls == 1);
        EXPECT_TENSOR(hv, SHAPE(3), want_hv, "hvp of sum(x^3) = 6 x v");
        FREE(hv);
    }

    /* Forward over reverse through the API: the jvp of x -> grad sum(x^3) (by ag_vjp) is 6 x t. */
    ag_tensor out = AG_NULL_TENSOR, tan = AG_NULL_TENSOR;
    c = (Ctx){.fn = F_VJP_CUBE_SUM};
    if (CHECK_OK(ag_jvp(&out, &tan, build, &c, &x, 1, &v))) {
        double want_g[3];
        for (int i = 0; i < 3; i++) want_g[i] = 3 * xv[i] * xv[i];
        EXPECT_TENSOR(out, SHAPE(3), want_g, "vjp inside jvp: the gradient 3 x^2");
        EXPECT_TENSOR(tan, SHAPE(3), want_hv, "vjp inside jvp: its tangent 6 x v");
        FREE(out, tan);
    }

    /* The quadratic form x^T A x: H = A + A^T, and H v (needs ag_matmul's JVP). */
    double want_q[9], want_qv[3] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            want_q[i * 3 + j] = A33[i * 3 + j] + A33[j * 3 + i];
            want_qv[i] += want_q[i * 3 + j] * vv[j];
        }
    ag_tensor A = MAKE(A33, SHAPE(3, 3));
    c = (Ctx){.fn = F_QUADRATIC, .A = A};
    if (CHECK_OK(ag_hessian(&h, build, &c, x))) {
        EXPECT_TENSOR(h, SHAPE(3, 3), want_q, "Hessian of x^T A x = A + A^T");
        FREE(h);
    }
    c = (Ctx){.fn = F_QUADRATIC, .A = A};
    if (CHECK_OK(ag_hvp(&hv, build, &c, x, v))) {
        EXPECT_TENSOR(hv, SHAPE(3), want_qv, "hvp of x^T A x = (A + A^T) v");
        FREE(hv);
    }

    /* A linear function: a zero Hessian; an empty input: an empty Hessian, build never called. */
    ag_tensor one = SCALAR(1.0);
    c = (Ctx){.fn = F_IDENTITY}; /* linear: H = 0 */
    if (CHECK_OK(ag_hessian(&h, build, &c, one))) {
        EXPECT_TENSOR(h, S0, D(0.0), "Hessian of the identity on a scalar");
        FREE(h);
    }
    ag_tensor e = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_zeros(&e, I64(0), 1, AG_FLOAT64));
    c = (Ctx){.fn = F_FAIL};
    if (CHECK_OK(ag_hessian(&h, build, &c, e))) {
        CHECK(c.calls == 0);
        EXPECT_SHAPE(h, SHAPE(0, 0), "Hessian of an empty input");
        FREE(h);
    }
    FREE(x, v, A, one, e);
}

/* ========================================================================================== */
/* Errors                                                                                     */
/* ========================================================================================== */

/* Each failing call below: the status, a message fragment, no output written, no handle left. */
#define EXPECT_FAIL(call, code, frag, ...)                                                     \
    do {                                                                                       \
        int64_t live_ = live_handles();                                                        \
        CHECK_ERR((call), (code));                                                             \
        MESSAGE_HAS(frag);                                                                     \
        ag_tensor outs_[] = {SENTINEL, __VA_ARGS__};                                           \
        for (size_t k_ = 1; k_ < sizeof outs_ / sizeof outs_[0]; k_++)                         \
            CHECKF(outs_[k_] == SENTINEL, "%s wrote output %zu although it failed", #call, k_); \
        CHECKF(live_handles() == live_, "%s left handles behind", #call);                     \
    } while (0)

static void test_shape_dtype_errors(void) {
    ag_tensor x = MAKE(D(0.5, 1.0, 1.5), SHAPE(3)), y = MAKE(D(1.0, 2.0, 3.0), SHAPE(3));
    ag_tensor t2 = MAKE(D(1.0, 1.0), SHAPE(2)), t32 = MAKE32(D(1.0, 1.0, 1.0), SHAPE(3));
    ag_tensor s = SCALAR(2.0);
    ag_tensor o = SENTINEL, ot = SENTINEL, g[2] = {SENTINEL, SENTINEL};
    Ctx c = {.fn = F_SIN_MUL};

    EXPECT_FAIL(ag_jvp(&o, &ot, build, &c, (ag_tensor[]){x, y}, 2, (ag_tensor[]){x, t2}), AG_ERR_SHAPE,
                "ag_jvp: tangent 1 has shape [2] but its primal has shape [3]", o, ot);
    EXPECT_FAIL(ag_jvp(&o, &ot, build, &c, (ag_tensor[]){x, y}, 2, (ag_tensor[]){t32, y}), AG_ERR_DTYPE,
                "tangent 0 is float32 but its primal is float64", o, ot);
    CHECKF(c.calls == 0, "the build function ran before the tangents were checked");

    c = (Ctx){.fn = F_SIN};
    EXPECT_FAIL(ag_vjp(&o, g, build, &c, &x, 1, t2), AG_ERR_SHAPE,
                "ag_vjp: the cotangent has shape [2] but the function's output has shape [3]", o, g[0]);
    EXPECT_FAIL(ag_vjp(&o, g, build, &c, &x, 1, t32), AG_ERR_DTYPE, "the cotangent is float32 but the function's output is float64",
                o, g[0]);
    EXPECT_FAIL(ag_vjp(&o, g, build, &c, &x, 1, s), AG_ERR_SHAPE, "has shape [] but", o, g[0]);

    c = (Ctx){.fn = F_CUBE_SUM};
    EXPECT_FAIL(ag_hvp(&o, build, &c, x, t2), AG_ERR_SHAPE, "ag_hvp: v has shape [2] but the input has shape [3]", o);
    EXPECT_FAIL(ag_hvp(&o, build, &c, x, t32), AG_ERR_DTYPE, "v is float32 but the input is float64", o);
    CHECK(c.calls == 0);

    /* A function of more than one element for hvp and hessian. */
    c = (Ctx){.fn = F_SIN};
    EXPECT_FAIL(ag_hvp(&o, build, &c, x, y), AG_ERR_SHAPE, "the function must return one element (a scalar), it returned shape [3]", o);
    EXPECT_FAIL(ag_hessian(&o, build, &c, x), AG_ERR_SHAPE, "ag_hessian: the function must return one element", o);

    /* Results beyond AG_MAX_NDIM: the Jacobian of a rank-5 function of a rank-5 input; the
     * Hessian of a rank-5 input (rank 4 gives rank 8, allowed). */
    ag_tensor r4 = AG_NULL_TENSOR, r5 = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_ones(&r4, I64(1, 1, 1, 2), 4, AG_FLOAT64));
    CHECK_OK(ag_tensor_ones(&r5, I64(1, 1, 1, 1, 2), 5, AG_FLOAT64));
    c = (Ctx){.fn = F_SIN};
    EXPECT_FAIL(ag_jacobian(&o, build, &c, r5, AG_JACOBIAN_REVERSE), AG_ERR_SHAPE,
                "ag_jacobian: the result's shape [1, 1, 1, 1, 2, 1, 1, 1, 1, 2] has rank 10, more than the 8 allowed", o);
    c = (Ctx){.fn = F_SIN};
    EXPECT_FAIL(ag_jacobian(&o, build, &c, r5, AG_JACOBIAN_FORWARD), AG_ERR_SHAPE, "has rank 10", o);
    CHECKF(c.calls == 1, "forward mode ran %d calls before refusing the rank", c.calls);
    c = (Ctx){.fn = F_CUBE_SUM};
    EXPECT_FAIL(ag_hessian(&o, build, &c, r5), AG_ERR_SHAPE, "ag_hessian: the result's shape", o);
    CHECK(c.calls == 0);
    if (CHECK_OK(ag_hessian(&o, build, &c, r4))) {
        EXPECT_SHAPE(o, SHAPE(1, 1, 1, 2, 1, 1, 1, 2), "a Hessian of rank 8");
        FREE(o);
    }
    FREE(x, y, t2, t32, s, r4, r5);
}

/* A build function that breaks its contract, in each transform. */
static void test_callback_errors(void) {
    ag_tensor x = MAKE(D(0.5, -1.0), SHAPE(2)), v = MAKE(D(1.0, 2.0), SHAPE(2)), one = SCALAR(1.0);
    static const struct {
        int fn;
        const char *frag;
    } broken[] = {
        {F_FAIL, "the build function returned 3 (its last error: ag_tensor_zeros: unknown dtype 77"},
        {F_NO_HANDLE, "wrote no tensor handle to *out"},
        {F_MADE_UP, "is not a live tensor handle"},
        {F_FREES_INPUT, "freed its input handle 0"},
    };
    for (size_t k = 0; k < sizeof broken / sizeof broken[0]; k++) {
        set_ctx("build function %d", broken[k].fn);
        ag_tensor o = SENTINEL, o2 = SENTINEL;
        Ctx c = {.fn = broken[k].fn};
        EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, 1, &v), AG_ERR_CALLBACK, broken[k].frag, o, o2);
        EXPECT_FAIL(ag_vjp(&o, &o2, build, &c, &x, 1, v), AG_ERR_CALLBACK, broken[k].frag, o, o2);
        EXPECT_FAIL(ag_jacobian(&o, build, &c, x, AG_JACOBIAN_REVERSE), AG_ERR_CALLBACK, broken[k].frag, o);
        EXPECT_FAIL(ag_jacobian(&o, build, &c, x, AG_JACOBIAN_FORWARD), AG_ERR_CALLBACK, broken[k].frag, o);
        EXPECT_FAIL(ag_hvp(&o, build, &c, x, v), AG_ERR_CALLBACK, broken[k].frag, o);
        EXPECT_FAIL(ag_hessian(&o, build, &c, x), AG_ERR_CALLBACK, broken[k].frag, o);
        CHECKF(c.calls == 6, "each transform stopped at the first broken call (%d calls)", c.calls);
    }
    set_ctx("%s", "");

    /* An output that changes between calls: more elements, then another dtype. */
    ag_tensor o = SENTINEL;
    Ctx c = {.fn = F_GROWS};
    EXPECT_FAIL(ag_jacobian(&o, build, &c, x, AG_JACOBIAN_FORWARD), AG_ERR_CALLBACK,
                "ag_jacobian: the function's output changed between calls: float64 [] on call 1, float64 [2] on call 2", o);
    c = (Ctx){.fn = F_GROWS};
    EXPECT_FAIL(ag_hessian(&o, build, &c, x), AG_ERR_CALLBACK,
                "ag_hessian: the function's output changed between calls: float64 [] on call 1, float64 [2] on call 2", o);
    CHECK(c.calls == 2);
    c = (Ctx){.fn = F_TO_FLOAT32};
    EXPECT_FAIL(ag_jacobian(&o, build, &c, x, AG_JACOBIAN_FORWARD), AG_ERR_CALLBACK,
                "float64 [2] on call 1, float32 [2] on call 2", o);
    /* Reverse mode and hvp call build once: nothing can change. */
    c = (Ctx){.fn = F_GROWS};
    if (CHECK_OK(ag_jacobian(&o, build, &c, x, AG_JACOBIAN_REVERSE))) FREE(o);
    FREE(x, v, one);
}

/* Forward mode inside forward mode is refused; reverse mode inside forward mode works (above);
 * anything inside reverse mode works. */
static void test_nesting(void) {
    ag_tensor x = MAKE(D(0.5, -1.0), SHAPE(2)), v = MAKE(D(1.0, 2.0), SHAPE(2));
    static const struct {
        int inner;
        const char *name;
    } inner[] = {{IN_JVP, "ag_jvp"}, {IN_HVP, "ag_hvp"}, {IN_HESSIAN, "ag_hessian"}, {IN_JAC_REV, "ag_jacobian"},
                 {IN_JAC_FWD, "ag_jacobian"}};
    for (size_t k = 0; k < sizeof inner / sizeof inner[0]; k++) {
        set_ctx("%s (%zu) inside the build function of ag_jvp", inner[k].name, k);
        ag_tensor o = SENTINEL, o2 = SENTINEL;
        Ctx c = {.fn = F_NESTED, .inner = inner[k].inner};
        EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, 1, &v), AG_ERR_CALLBACK, "a forward-mode pass is already running on this thread", o, o2);
        CHECKF(c.inner_status == AG_ERR_STATE, "the inner call returned %s", ag_status_name(c.inner_status));
        c = (Ctx){.fn = F_NESTED, .inner = inner[k].inner};
        EXPECT_FAIL(ag_hvp(&o, build, &c, x, v), AG_ERR_CALLBACK, "a forward-mode pass is already running on this thread", o);
        CHECKF(c.inner_status == AG_ERR_STATE, "the inner call returned %s", ag_status_name(c.inner_status));
    }
    /* Inside reverse mode (ag_vjp, reverse ag_jacobian), every transform runs. */
    for (size_t k = 0; k < sizeof inner / sizeof inner[0]; k++) {
        set_ctx("%s (%zu) inside the build function of ag_vjp", inner[k].name, k);
        ag_tensor o = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
        Ctx c = {.fn = F_NESTED, .inner = inner[k].inner};
        /* The inner results for sum(x^3) on x [2]: a jvp tangent [], a Hessian [2, 2], else [2]. */
        int64_t rank = inner[k].inner == IN_JVP ? 0 : inner[k].inner == IN_HESSIAN ? 2 : 1;
        ag_tensor cot = AG_NULL_TENSOR;
        CHECK_OK(ag_tensor_ones(&cot, I64(2, 2), rank, AG_FLOAT64));
        if (CHECK_OK(ag_vjp(&o, &g, build, &c, &x, 1, cot))) FREE(o, g);
        CHECK(c.inner_status == AG_OK);
        FREE(cot);
    }
    set_ctx("%s", "");

    /* A build function that calls ag_vjp on itself without end: stopped at the nesting limit. */
    ag_tensor o = SENTINEL, g = SENTINEL, one = SCALAR(1.0);
    Ctx c = {.fn = F_RECURSE};
    EXPECT_FAIL(ag_vjp(&o, &g, build, &c, &one, 1, one), AG_ERR_CALLBACK, "does a build function call ag_vjp on itself?", o, g);
    CHECKF(c.depth == 8, "the recursion went %d deep", c.depth);
    CHECKF(c.inner_status == AG_ERR_STATE, "the innermost ag_vjp returned %s", ag_status_name(c.inner_status));
    FREE(x, v, one);
}

static void test_argument_errors(void) {
    ag_tensor x = MAKE(D(0.5, -1.0), SHAPE(2)), v = MAKE(D(1.0, 2.0), SHAPE(2)), gone = MAKE(D(1.0, 2.0), SHAPE(2));
    FREE(gone);
    ag_tensor o = SENTINEL, o2 = SENTINEL;
    Ctx c = {.fn = F_SIN};
    EXPECT_FAIL(ag_jvp(NULL, &o2, build, &c, &x, 1, &v), AG_ERR_ARGUMENT, "the output pointer 'output' is NULL", o2);
    EXPECT_FAIL(ag_jvp(&o, NULL, build, &c, &x, 1, &v), AG_ERR_ARGUMENT, "the output pointer 'output_tangent' is NULL", o);
    EXPECT_FAIL(ag_jvp(&o, &o2, NULL, &c, &x, 1, &v), AG_ERR_ARGUMENT, "ag_jvp: build is NULL", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, NULL, 1, &v), AG_ERR_ARGUMENT, "primals is NULL but nprimals is 1", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, 1, NULL), AG_ERR_ARGUMENT, "tangents is NULL but nprimals is 1", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, 0, &v), AG_ERR_ARGUMENT, "at least one tensor is needed, nprimals is 0", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, -1, &v), AG_ERR_ARGUMENT, "nprimals is -1", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &gone, 1, &v), AG_ERR_INVALID_HANDLE, "primals[0] handle", o, o2);
    EXPECT_FAIL(ag_jvp(&o, &o2, build, &c, &x, 1, &gone), AG_ERR_INVALID_HANDLE, "tangents[0] handle", o, o2);
    EXPECT_FAIL(ag_vjp(NULL, &o2, build, &c, &x, 1, v), AG_ERR_ARGUMENT, "the output pointer 'output' is NULL", o2);
    EXPECT_FAIL(ag_vjp(&o, NULL, build, &c, &x, 1, v), AG_ERR_ARGUMENT, "the output pointer 'grads' is NULL", o);
    EXPECT_FAIL(ag_vjp(&o, &o2, NULL, &c, &x, 1, v), AG_ERR_ARGUMENT, "ag_vjp: build is NULL", o, o2);
    EXPECT_FAIL(ag_vjp(&o, &o2, build, &c, NULL, 1, v), AG_ERR_ARGUMENT, "primals is NULL but nprimals is 1", o, o2);
    EXPECT_FAIL(ag_vjp(&o, &o2, build, &c, &x, 0, v), AG_ERR_ARGUMENT, "nprimals is 0", o, o2);
    EXPECT_FAIL(ag_vjp(&o, &o2, build, &c, &x, 1, gone), AG_ERR_INVALID_HANDLE, "cotangent handle", o, o2);
    EXPECT_FAIL(ag_vjp(&o, &o2, build, &c, &x, 1, AG_NULL_TENSOR), AG_ERR_INVALID_HANDLE, "cotangent handle is 0", o, o2);
    EXPECT_FAIL(ag_jacobian(NULL, build, &c, x, AG_JACOBIAN_REVERSE), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    EXPECT_FAIL(ag_jacobian(&o, NULL, &c, x, AG_JACOBIAN_REVERSE), AG_ERR_ARGUMENT, "ag_jacobian: build is NULL", o);
    EXPECT_FAIL(ag_jacobian(&o, build, &c, gone, AG_JACOBIAN_REVERSE), AG_ERR_INVALID_HANDLE, "input handle", o);
    EXPECT_FAIL(ag_jacobian(&o, build, &c, x, 0), AG_ERR_ARGUMENT,
                "unknown Jacobian mode 0 (use AG_JACOBIAN_REVERSE = 1 or AG_JACOBIAN_FORWARD = 2)", o);
    EXPECT_FAIL(ag_jacobian(&o, build, &c, x, INT32_MIN), AG_ERR_ARGUMENT, "unknown Jacobian mode -2147483648", o);
    EXPECT_FAIL(ag_hvp(NULL, build, &c, x, v), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    EXPECT_FAIL(ag_hvp(&o, NULL, &c, x, v), AG_ERR_ARGUMENT, "ag_hvp: build is NULL", o);
    EXPECT_FAIL(ag_hvp(&o, build, &c, gone, v), AG_ERR_INVALID_HANDLE, "input handle", o);
    EXPECT_FAIL(ag_hvp(&o, build, &c, x, gone), AG_ERR_INVALID_HANDLE, "v handle", o);
    EXPECT_FAIL(ag_hessian(NULL, build, &c, x), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    EXPECT_FAIL(ag_hessian(&o, NULL, &c, x), AG_ERR_ARGUMENT, "ag_hessian: build is NULL", o);
    EXPECT_FAIL(ag_hessian(&o, build, &c, AG_NULL_TENSOR), AG_ERR_INVALID_HANDLE, "input handle is 0", o);
    CHECKF(c.calls == 0, "a build function ran for a call refused on its arguments");
    FREE(x, v);
}

int main(void) {
    test_begin();
    run_group_checking_handles("jvp", test_jvp);
    run_group_checking_handles("vjp", test_vjp);
    run_group_checking_handles("jacobian", test_jacobian);
    run_group_checking_handles("hvp and hessian", test_hvp_hessian);
    run_group_checking_handles("shape and dtype errors", test_shape_dtype_errors);
    run_group_checking_handles("build functions that break their contract", test_callback_errors);
    run_group_checking_handles("nested transforms", test_nesting);
    run_group_checking_handles("argument errors", test_argument_errors);
    check_no_leaks();
    return test_summary();
}
