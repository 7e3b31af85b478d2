/*
 * test_int64_masks.c - the header's section "Integer tensors, masks and random generators" from C
 * (issue 18): int64 and bool tensors (creation, copies, sums, comparisons, the dtype refusals of
 * computing ops), ag_to_dtype, ag_argmax / ag_argmin, ag_topk, ag_one_hot, ag_embedding,
 * ag_masked_fill, the logical ops, ag_cross_entropy_labels, and the generators (handles, state,
 * uniform, normal, randint, randperm, dropout, multinomial), with a captured training step that
 * replays on index and label tensors written in place, and a captured dropout that redraws.
 * Expected values: PyTorch 2.13 (the call is quoted next to the numbers) or hand derivation;
 * statistical bounds are many standard deviations wide (and the streams are seeded).
 * Each group checks that it leaves no handle behind (generators count as handles).
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

static ag_tensor ints_at(const int64_t *v, Shape s, const char *file, int line) {
    ag_tensor t = AG_NULL_TENSOR;
    status_at(ag_tensor_from_data(&t, v, s.d, s.ndim, AG_INT64), AG_OK, "ag_tensor_from_data(int64)", file, line);
    return t;
}
#define INTS(v, shape) ints_at((v), (shape), HERE)

static ag_tensor bools_at(const uint8_t *v, Shape s, const char *file, int line) {
    ag_tensor t = AG_NULL_TENSOR;
    status_at(ag_tensor_from_data(&t, v, s.d, s.ndim, AG_BOOL), AG_OK, "ag_tensor_from_data(bool)", file, line);
    return t;
}
#define BOOLS(v, shape) bools_at((v), (shape), HERE)
#define U8(...) ((const uint8_t[]){__VA_ARGS__})

/* Reads n int64 values of an int64 tensor (checking its dtype and count). */
static bool read_ints_at(int64_t *out, int64_t n, ag_tensor t, const char *file, int line) {
    ag_dtype dt = 0;
    int64_t numel = -1;
    bool ok = status_at(ag_tensor_dtype(&dt, t), AG_OK, "ag_tensor_dtype", file, line);
    ok = ok && check_at(dt == AG_INT64, file, line, "dtype %d, want AG_INT64", (int)dt);
    ok = ok && status_at(ag_tensor_numel(&numel, t), AG_OK, "ag_tensor_numel", file, line);
    ok = ok && check_at(numel == n, file, line, "%" PRId64 " elements, want %" PRId64, numel, n);
    return ok && status_at(ag_tensor_copy_data(out, n, AG_INT64, t), AG_OK, "ag_tensor_copy_data(int64)", file, line);
}

/* t's int64 values equal want[0 .. n-1]. */
static bool expect_ints_at(ag_tensor t, const int64_t *want, int64_t n, const char *what, const char *file, int line) {
    int64_t got[64];
    if (n > 64 || !read_ints_at(got, n, t, file, line)) return false;
    for (int64_t i = 0; i < n; i++)
        if (!check_at(got[i] == want[i], file, line, "%s: element %" PRId64 " is %" PRId64 ", want %" PRId64, what, i,
                      got[i], want[i]))
            return false;
    return true;
}
#define EXPECT_INTS(t, want, n, what) expect_ints_at((t), (want), (n), (what), HERE)

/* t is bool with bytes want[0 .. n-1]. */
static bool expect_bools_at(ag_tensor t, const uint8_t *want, int64_t n, const char *what, const char *file, int line) {
    uint8_t got[64];
    ag_dtype dt = 0;
    bool ok = status_at(ag_tensor_dtype(&dt, t), AG_OK, "ag_tensor_dtype", file, line);
    ok = ok && check_at(dt == AG_BOOL, file, line, "%s: dtype %d, want AG_BOOL", what, (int)dt);
    ok = ok && n <= 64 && status_at(ag_tensor_copy_data(got, n, AG_BOOL, t), AG_OK, "copy_data(bool)", file, line);
    for (int64_t i = 0; ok && i < n; i++)
        ok = check_at(got[i] == want[i], file, line, "%s: element %" PRId64 " is %d, want %d", what, i, got[i], want[i]);
    return ok;
}
#define EXPECT_BOOLS(t, want, n, what) expect_bools_at((t), (want), (n), (what), HERE)

static bool message_has(const char *needle) {
    const char *m = ag_last_error();
    return CHECKF(strstr(m, needle) != NULL, "message \"%s\" lacks \"%s\"", m, needle);
}

/* ========================================================================================== */
/* int64 and bool tensors                                                                     */
/* ========================================================================================== */

static void creation_and_copies(void) {
    /* Values beyond 2^53 survive a copy in and out exactly. */
    const int64_t big[4] = {(INT64_C(1) << 62) + 1, -(INT64_C(1) << 62) - 3, INT64_MAX, INT64_MIN};
    ag_tensor t = INTS(big, SHAPE(2, 2));
    EXPECT_DTYPE(t, AG_INT64);
    EXPECT_INTS(t, big, 4, "int64 round trip");
    /* data_ptr points at the int64 values. */
    const void *p = NULL;
    CHECK_OK(ag_tensor_data_ptr(&p, t));
    CHECK(p != NULL && ((const int64_t *)p)[3] == INT64_MIN);
    /* A transpose moves int64 values. */
    ag_tensor tt = 0;
    CHECK_OK(ag_transpose(&tt, t, 0, 1));
    EXPECT_INTS(tt, I64(big[0], big[2], big[1], big[3]), 4, "transpose");
    /* Copy out as float64; float -> int64 copies are refused (AG_ERR_DTYPE), bool -> int64 works. */
    double d[4];
    CHECK_OK(ag_tensor_copy_data(d, 4, AG_FLOAT64, t));
    CHECK(d[2] == 9223372036854775808.0);
    ag_tensor f = MAKE(D(1.5, 2), SHAPE(2));
    int64_t out2[2] = {-9, -9};
    CHECK_ERR(ag_tensor_copy_data(out2, 2, AG_INT64, f), AG_ERR_DTYPE);
    CHECK(out2[0] == -9);
    /* bool from C: any non-zero byte reads as 1. */
    ag_tensor b = BOOLS(U8(0, 5, 1, 255), SHAPE(4));
    EXPECT_BOOLS(b, U8(0, 1, 1, 1), 4, "bool bytes");
    int64_t out4[4] = {-9, -9, -9, -9};
    CHECK_OK(ag_tensor_copy_data(out4, 4, AG_INT64, b));
    CHECK(out4[0] == 0 && out4[1] == 1 && out4[2] == 1 && out4[3] == 1);
    double one = 0;
    ag_tensor seven = INTS(I64(7), S0);
    CHECK_OK(ag_tensor_item(&one, seven));
    CHECK(one == 7);
    FREE(seven);
    /* full, zeros, ones, eye, arange in int64 and bool. */
    ag_tensor full3 = 0, ones = 0, eye = 0, eyeb = 0, ar = 0, bad = SENTINEL;
    CHECK_OK(ag_tensor_full(&full3, I64(2, 2), 2, 3, AG_INT64));
    EXPECT_INTS(full3, I64(3, 3, 3, 3), 4, "full");
    CHECK_ERR(ag_tensor_full(&bad, I64(2), 1, 2.5, AG_INT64), AG_ERR_ARGUMENT);
    CHECK(bad == SENTINEL);
    CHECK_OK(ag_tensor_ones(&ones, I64(3), 1, AG_INT64));
    EXPECT_INTS(ones, I64(1, 1, 1), 3, "ones");
    CHECK_OK(ag_tensor_eye(&eye, 2, 3, AG_INT64));
    EXPECT_INTS(eye, I64(1, 0, 0, 0, 1, 0), 6, "eye");
    CHECK_OK(ag_tensor_eye(&eyeb, 2, 2, AG_BOOL));
    EXPECT_BOOLS(eyeb, U8(1, 0, 0, 1), 4, "eye bool");
    /* torch.arange(-2, 7, 3) -> [-2, 1, 4] */
    CHECK_OK(ag_tensor_arange(&ar, -2, 7, 3, AG_INT64));
    EXPECT_INTS(ar, I64(-2, 1, 4), 3, "arange");
    /* set_data into an int64 leaf. */
    CHECK_OK(ag_tensor_set_data(ar, I64(9, 8, 7), 3, AG_INT64));
    EXPECT_INTS(ar, I64(9, 8, 7), 3, "set_data");
    FREE(t, tt, f, b, full3, ones, eye, eyeb, ar);
}

static void sums_and_comparisons(void) {
    ag_tensor s = INTS(I64(1, 2, 3, 4, 5, 6), SHAPE(2, 3)), r0 = 0, r1 = 0, all = 0, wrap = 0, w = 0, cb = 0;
    /* torch.tensor([[1, 2, 3], [4, 5, 6]]).sum(0) -> [5, 7, 9]; .sum(1) -> [6, 15] */
    CHECK_OK(ag_sum(&r0, s, I64(0), 1, false));
    EXPECT_INTS(r0, I64(5, 7, 9), 3, "sum axis 0");
    CHECK_OK(ag_sum(&r1, s, I64(-1), 1, true));
    EXPECT_SHAPE(r1, SHAPE(2, 1), "sum keepdims");
    EXPECT_INTS(r1, I64(6, 15), 2, "sum axis 1");
    CHECK_OK(ag_sum(&all, s, NULL, 0, false));
    EXPECT_INTS(all, I64(21), 1, "sum");
    /* torch.tensor([2**63 - 1, 1]).sum() -> -9223372036854775808 (wraps) */
    w = INTS(I64(INT64_MAX, 1), SHAPE(2));
    CHECK_OK(ag_sum(&wrap, w, NULL, 0, false));
    EXPECT_INTS(wrap, I64(INT64_MIN), 1, "sum wraps");
    /* bool sums count. */
    ag_tensor b = BOOLS(U8(1, 0, 1, 1, 0, 1), SHAPE(3, 2));
    CHECK_OK(ag_sum(&cb, b, NULL, 0, false));
    EXPECT_INTS(cb, I64(4), 1, "bool count");
    /* torch.tensor([2**62 + 1, 2**62]) > torch.tensor([2**62, 2**62]) -> [True, False] */
    ag_tensor x = INTS(I64((INT64_C(1) << 62) + 1, INT64_C(1) << 62), SHAPE(2));
    ag_tensor y = INTS(I64(INT64_C(1) << 62, INT64_C(1) << 62), SHAPE(2)), gt = 0, eq = 0;
    CHECK_OK(ag_gt(&gt, x, y));
    EXPECT_BOOLS(gt, U8(1, 0), 2, "gt");
    CHECK_OK(ag_eq(&eq, x, y));
    EXPECT_BOOLS(eq, U8(0, 1), 2, "eq");
    /* Mixed dtypes are refused. */
    ag_tensor f = MAKE(D(1, 2), SHAPE(2));
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_eq, x, f);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_lt, x, b);
    FREE(s, r0, r1, all, wrap, w, b, cb, x, y, gt, eq, f);
}

static void computing_ops_refuse(void) {
    ag_tensor ti = INTS(I64(1, 2, 3, 4), SHAPE(2, 2)), tb = BOOLS(U8(1, 0, 1, 1), SHAPE(2, 2));
    ag_tensor ts[2] = {ti, tb};
    for (int k = 0; k < 2; k++) {
        ag_tensor t = ts[k];
        set_ctx("%s", k == 0 ? "int64" : "bool");
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_exp, t);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_tanh, t);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_add, t, t);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_mul, t, t);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_matmul, t, t);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_mean, t, NULL, 0, false);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_softmax, t, 1);
        CHECK_ERR_OUT(AG_ERR_DTYPE, ag_where, t, t, t);
        CHECK_ERR(ag_tensor_set_requires_grad(t, true), AG_ERR_DTYPE);
        message_has("cannot require grad");
        bool rg = true;
        CHECK_OK(ag_tensor_requires_grad(&rg, t));
        CHECK(!rg);
        CHECK_OK(ag_tensor_set_requires_grad(t, false));
    }
    set_ctx("%s", "");
    FREE(ti, tb);
}

/* ========================================================================================== */
/* The ops                                                                                    */
/* ========================================================================================== */

static void to_dtype(void) {
    /* torch.tensor([1.7, -1.7, 0., -0.5, 2.5, -2.9999]).to(torch.int64) -> [1, -1, 0, 0, 2, -2] */
    ag_tensor a = MAKE(D(1.7, -1.7, 0, -0.5, 2.5, -2.9999), SHAPE(2, 3)), i = 0, i32 = 0;
    CHECK_OK(ag_to_dtype(&i, a, AG_INT64));
    EXPECT_SHAPE(i, SHAPE(2, 3), "to int64");
    EXPECT_INTS(i, I64(1, -1, 0, 0, 2, -2), 6, "to int64");
    ag_tensor a32 = MAKE32(D(1.7, -1.7, 0, -0.5, 2.5, -2.9999), SHAPE(6));
    CHECK_OK(ag_to_dtype(&i32, a32, AG_INT64));
    EXPECT_INTS(i32, I64(1, -1, 0, 0, 2, -2), 6, "float32 to int64");
    const double bad[] = {NAN, INFINITY, -INFINITY, 9223372036854775808.0, -1e19};
    for (int k = 0; k < 5; k++) {
        set_ctx("value %g", bad[k]);
        ag_tensor v = MAKE(D(0, bad[k]), SHAPE(2));
        CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_to_dtype, v, AG_INT64);
        FREE(v);
    }
    set_ctx("%s", "");
    /* torch.tensor([0., -0.0, nan, 0.1, inf]).to(torch.bool) -> [False, False, True, True, True] */
    ag_tensor z = MAKE(D(0, -0.0, NAN, 0.1, INFINITY), SHAPE(5)), zb = 0, back = 0, same = 0, ib = 0;
    CHECK_OK(ag_to_dtype(&zb, z, AG_BOOL));
    EXPECT_BOOLS(zb, U8(0, 0, 1, 1, 1), 5, "to bool");
    CHECK_OK(ag_to_dtype(&back, zb, AG_FLOAT32));
    EXPECT_DTYPE(back, AG_FLOAT32);
    EXPECT_VALUES(back, D(0, 0, 1, 1, 1), 5, "bool to float32");
    CHECK_OK(ag_to_dtype(&ib, zb, AG_INT64));
    EXPECT_INTS(ib, I64(0, 0, 1, 1, 1), 5, "bool to int64");
    CHECK_OK(ag_to_dtype(&same, i, AG_INT64));
    CHECK(same != i);
    EXPECT_INTS(same, I64(1, -1, 0, 0, 2, -2), 6, "to own dtype");
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_to_dtype, a, 0);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_to_dtype, a, 5);
    CHECK_ERR(ag_to_dtype(NULL, a, AG_INT64), AG_ERR_ARGUMENT);
    /* float64 -> float32 is differentiable: d sum(x32 * x32)/dx = 2x, as float64 (hand). */
    ag_tensor x = MAKE_RG(D(1.5, -2, 0.25), SHAPE(3)), x32 = 0, sq = 0, l = 0, g = 0;
    CHECK_OK(ag_to_dtype(&x32, x, AG_FLOAT32));
    CHECK_OK(ag_mul(&sq, x32, x32));
    CHECK_OK(ag_sum(&l, sq, NULL, 0, false));
    CHECK_OK(ag_backward(l, 0, false, false));
    CHECK_OK(ag_tensor_grad(&g, x));
    EXPECT_DTYPE(g, AG_FLOAT64);
    EXPECT_VALUES(g, D(3, -4, 0.5), 3, "gradient through to_dtype");
    FREE(a, i, a32, i32, z, zb, back, ib, same, x, x32, sq, l, g);
}

static void argmax_argmin(void) {
    /* x = [[1, 3, 3, -1], [nan, 2, nan, 5], [0, -2, -2, 7]] */
    ag_tensor x = MAKE(D(1, 3, 3, -1, NAN, 2, NAN, 5, 0, -2, -2, 7), SHAPE(3, 4)), r = 0;
    /* torch.argmax(x, dim=1) -> [1, 0, 3]; torch.argmin(x, dim=1) -> [3, 0, 1] */
    CHECK_OK(ag_argmax(&r, x, 1, false));
    EXPECT_INTS(r, I64(1, 0, 3), 3, "argmax axis 1");
    FREE(r);
    CHECK_OK(ag_argmin(&r, x, -1, false));
    EXPECT_INTS(r, I64(3, 0, 1), 3, "argmin axis -1");
    FREE(r);
    /* torch.argmax(x, dim=0, keepdim=True) -> [[1, 0, 1, 2]]; torch.argmin(x, dim=0) -> [1, 2, 1, 0] */
    CHECK_OK(ag_argmax(&r, x, 0, true));
    EXPECT_SHAPE(r, SHAPE(1, 4), "keepdims");
    EXPECT_INTS(r, I64(1, 0, 1, 2), 4, "argmax axis 0");
    FREE(r);
    CHECK_OK(ag_argmin(&r, x, 0, false));
    EXPECT_INTS(r, I64(1, 2, 1, 0), 4, "argmin axis 0");
    FREE(r);
    /* 0-d: torch.argmax(torch.tensor(2.5), dim=0) -> 0, shape () */
    ag_tensor s = SCALAR(2.5), e = MAKE(NULL, SHAPE(2, 0)), i = INTS(I64(1, 2), SHAPE(2));
    CHECK_OK(ag_argmax(&r, s, -1, false));
    EXPECT_SHAPE(r, S0, "0-d");
    EXPECT_INTS(r, I64(0), 1, "0-d");
    FREE(r);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_argmax, e, 1, false);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_argmax, x, 2, false);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_argmin, x, -3, false);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_argmax, i, 0, false);
    FREE(x, s, e, i);
}

static void topk(void) {
    /* torch.topk(tensor([3, 1, nan, 3, -2, 5, 1]), 3) -> values [nan, 5, 3], indices [2, 5, 0] */
    ag_tensor v = MAKE(D(3, 1, NAN, 3, -2, 5, 1), SHAPE(7)), vals = 0, idx = 0;
    CHECK_OK(ag_topk(&vals, &idx, v, 3, 0, true));
    EXPECT_VALUES(vals, D(NAN, 5, 3), 3, "topk values");
    EXPECT_INTS(idx, I64(2, 5, 0), 3, "topk indices");
    FREE(vals, idx);
    /* torch.topk(tensor([3, 1, 3, -2, 5, 1]), 4, largest=False) -> [-2, 1, 1, 3], [3, 1, 5, 0] */
    ag_tensor w = MAKE32(D(3, 1, 3, -2, 5, 1), SHAPE(6));
    CHECK_OK(ag_topk(&vals, &idx, w, 4, -1, false));
    EXPECT_DTYPE(vals, AG_FLOAT32);
    EXPECT_VALUES(vals, D(-2, 1, 1, 3), 4, "smallest values");
    EXPECT_INTS(idx, I64(3, 1, 5, 0), 4, "smallest indices");
    FREE(vals, idx);
    /* k = 0: empty outputs. */
    CHECK_OK(ag_topk(&vals, &idx, v, 0, 0, true));
    EXPECT_SHAPE(vals, SHAPE(0), "k = 0");
    EXPECT_SHAPE(idx, SHAPE(0), "k = 0");
    FREE(vals, idx);
    /* torch.topk(m, 2, dim=0) for m = [[0.5, -1, 4], [2, 3, -4], [1, 0, 0.25]]
     *   -> values [[2, 3, 4], [1, 0, 0.25]], indices [[1, 1, 0], [2, 2, 2]] */
    ag_tensor m = MAKE_RG(D(0.5, -1, 4, 2, 3, -4, 1, 0, 0.25), SHAPE(3, 3)), l = 0, g = 0;
    CHECK_OK(ag_topk(&vals, &idx, m, 2, 0, true));
    EXPECT_TENSOR(vals, SHAPE(2, 3), D(2, 3, 4, 1, 0, 0.25), "topk axis 0");
    EXPECT_INTS(idx, I64(1, 1, 0, 2, 2, 2), 6, "topk axis 0 indices");
    /* The gradient of sum(values) is 1 at the picked positions (hand). */
    CHECK_OK(ag_sum(&l, vals, NULL, 0, false));
    CHECK_OK(ag_backward(l, 0, false, false));
    CHECK_OK(ag_tensor_grad(&g, m));
    EXPECT_VALUES(g, D(0, 0, 1, 1, 1, 0, 1, 1, 1), 9, "topk gradient");
    FREE(vals, idx, l, g);
    /* Errors: neither output is written. */
    ag_tensor s = SCALAR(1), i = INTS(I64(1, 2), SHAPE(2));
    const struct {
        ag_tensor a;
        int64_t k, axis;
        ag_status want;
    } bad[] = {{v, 8, 0, AG_ERR_ARGUMENT}, {v, -1, 0, AG_ERR_ARGUMENT}, {m, 1, 2, AG_ERR_ARGUMENT},
               {s, 1, 0, AG_ERR_SHAPE},   {i, 1, 0, AG_ERR_DTYPE}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        set_ctx("bad topk %zu", k);
        ag_tensor o1 = SENTINEL, o2 = SENTINEL;
        CHECK_ERR(ag_topk(&o1, &o2, bad[k].a, bad[k].k, bad[k].axis, true), bad[k].want);
        CHECK(o1 == SENTINEL && o2 == SENTINEL);
    }
    set_ctx("%s", "");
    ag_tensor o = SENTINEL;
    CHECK_ERR(ag_topk(NULL, &o, v, 1, 0, true), AG_ERR_ARGUMENT);
    CHECK(o == SENTINEL);
    CHECK_ERR(ag_topk(&o, NULL, v, 1, 0, true), AG_ERR_ARGUMENT);
    CHECK(o == SENTINEL);
    FREE(v, w, m, s, i);
}

static void one_hot(void) {
    /* torch.nn.functional.one_hot(torch.tensor([2, 0, 1, 2]), -1) */
    ag_tensor i = INTS(I64(2, 0, 1, 2), SHAPE(4)), o = 0;
    CHECK_OK(ag_one_hot(&o, i, -1, AG_INT64));
    EXPECT_SHAPE(o, SHAPE(4, 3), "one_hot");
    EXPECT_INTS(o, I64(0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1), 12, "one_hot");
    FREE(o);
    CHECK_OK(ag_one_hot(&o, i, 4, AG_FLOAT32));
    EXPECT_TENSOR32(o, SHAPE(4, 4), D(0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0), "one_hot float32");
    FREE(o);
    ag_tensor e = INTS(NULL, SHAPE(0)), f = MAKE(D(1), SHAPE(1)), big = INTS(I64(0, 5), SHAPE(2));
    ag_tensor neg = INTS(I64(-1), SHAPE(1)), r8 = INTS(I64(0), SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    CHECK_OK(ag_one_hot(&o, e, 3, AG_FLOAT64));
    EXPECT_SHAPE(o, SHAPE(0, 3), "empty");
    FREE(o);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_one_hot, big, 5, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_one_hot, neg, 5, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_one_hot, i, -2, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_one_hot, e, -1, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_one_hot, f, 3, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_one_hot, i, 3, AG_BOOL);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_one_hot, i, 3, 9);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_one_hot, r8, 2, AG_FLOAT64);
    FREE(i, e, f, big, neg, r8);
}

/* embedding(indices, w), tanh: the gradcheck's function (ctx: the indices tensor). */
static ag_status emb_tanh(ag_tensor *out, const ag_tensor *in, const void *ctx) {
    ag_tensor e = 0;
    ag_status st = ag_embedding(&e, *(const ag_tensor *)ctx, in[0]);
    if (st != AG_OK) return st;
    st = ag_tanh(out, e);
    ag_tensor_free(e);
    return st;
}

static void embedding(void) {
    /* weight w[r][j] = 3r + j (4 x 3); indices [[0, 2], [2, 3], [2, 0]]: rows picked. */
    double wv[12];
    for (int k = 0; k < 12; k++) wv[k] = k;
    ag_tensor w = MAKE_RG(wv, SHAPE(4, 3)), idx = INTS(I64(0, 2, 2, 3, 2, 0), SHAPE(3, 2)), e = 0, g = 0, seed = 0;
    CHECK_OK(ag_embedding(&e, idx, w));
    EXPECT_TENSOR(e, SHAPE(3, 2, 3), D(0, 1, 2, 6, 7, 8, 6, 7, 8, 9, 10, 11, 6, 7, 8, 0, 1, 2), "embedding");
    /* seed[k][j] = 10k + j: row r's gradient sums the seeds of the picks of r (hand):
     * row 0: k = 0, 5 -> (50, 52, 54); row 1: none; row 2: k = 1, 2, 4 -> (70, 73, 76); row 3: k = 3. */
    double sv[18];
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 3; j++) sv[k * 3 + j] = 10 * k + j;
    seed = MAKE(sv, SHAPE(3, 2, 3));
    CHECK_OK(ag_backward(e, seed, false, false));
    CHECK_OK(ag_tensor_grad(&g, w));
    EXPECT_VALUES(g, D(50, 52, 54, 0, 0, 0, 70, 73, 76, 30, 31, 32), 12, "embedding gradient");
    /* float64 gradcheck on the weight, repeated indices included. */
    double wr[10];
    fill(wr, 10, 0.7);
    gradcheck_at("embedding", emb_tanh, &idx, IN1(wr, SHAPE(5, 2)), AG_FLOAT64, 1e-6, 1e-7, 1e-6, HERE);
    /* Errors. */
    ag_tensor far = INTS(I64(4), SHAPE(1)), neg = INTS(I64(-1), SHAPE(1)), fi = MAKE(D(1), SHAPE(1));
    ag_tensor wi = INTS(I64(1, 2, 3, 4), SHAPE(2, 2)), w1 = MAKE(D(1, 2), SHAPE(2)), r8 = INTS(I64(0), SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_embedding, far, w);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_embedding, neg, w);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_embedding, fi, w);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_embedding, idx, wi);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_embedding, idx, w1);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_embedding, r8, w);
    /* The indices written in place before the backward: AG_ERR_STATE. */
    ag_tensor e2 = 0, l2 = 0;
    CHECK_OK(ag_embedding(&e2, idx, w));
    CHECK_OK(ag_sum(&l2, e2, NULL, 0, false));
    CHECK_OK(ag_tensor_set_data(idx, I64(1, 1, 1, 1, 1, 1), 6, AG_INT64));
    CHECK_ERR(ag_backward(l2, 0, false, false), AG_ERR_STATE);
    FREE(w, idx, e, g, seed, far, neg, fi, wi, w1, r8, e2, l2);
}

static void masked_fill_and_logical(void) {
    ag_tensor a = MAKE_RG(D(1, 2, 3, 4, 5, 6), SHAPE(2, 3)), m = BOOLS(U8(1, 0, 1), SHAPE(1, 3)), y = 0, g = 0;
    CHECK_OK(ag_masked_fill(&y, a, m, -INFINITY));
    EXPECT_TENSOR(y, SHAPE(2, 3), D(-INFINITY, 2, -INFINITY, -INFINITY, 5, -INFINITY), "masked_fill");
    /* The gradient is 0 where filled, even for an inf or nan incoming gradient. */
    ag_tensor seed = MAKE(D(INFINITY, 1, NAN, -INFINITY, 2, INFINITY), SHAPE(2, 3));
    CHECK_OK(ag_backward(y, seed, false, false));
    CHECK_OK(ag_tensor_grad(&g, a));
    EXPECT_VALUES(g, D(0, 1, 0, 0, 2, 0), 6, "masked_fill gradient");
    /* An int64 mask: non-zero is true. */
    ag_tensor mi = INTS(I64(0, 7, 0, 0, 0, -1), SHAPE(2, 3)), y2 = 0;
    CHECK_OK(ag_masked_fill(&y2, a, mi, 9));
    EXPECT_VALUES(y2, D(1, 9, 3, 4, 5, 9), 6, "int64 mask");
    ag_tensor m2 = BOOLS(U8(1, 0), SHAPE(2)), ai = INTS(I64(1, 2), SHAPE(2));
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_masked_fill, a, m2, 0);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_masked_fill, ai, m2, 0);
    /* torch.logical_and(tensor([[1], [0]]), tensor([3, 0, -2])) -> [[T, F, T], [F, F, F]] */
    ag_tensor c = INTS(I64(1, 0), SHAPE(2, 1)), d = INTS(I64(3, 0, -2), SHAPE(3)), r = 0;
    CHECK_OK(ag_logical_and(&r, c, d));
    EXPECT_SHAPE(r, SHAPE(2, 3), "logical_and");
    EXPECT_BOOLS(r, U8(1, 0, 1, 0, 0, 0), 6, "logical_and");
    FREE(r);
    CHECK_OK(ag_logical_or(&r, c, d));
    EXPECT_BOOLS(r, U8(1, 1, 1, 1, 0, 1), 6, "logical_or");
    FREE(r);
    /* nan is true: logical_not([0.5, 0, nan]) -> [F, T, F] */
    ag_tensor fl = MAKE(D(0.5, 0, NAN), SHAPE(3));
    CHECK_OK(ag_logical_not(&r, fl));
    EXPECT_BOOLS(r, U8(0, 1, 0), 3, "logical_not");
    FREE(r);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_logical_and, fl, m2);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_logical_or, m2, fl);
    FREE(a, m, y, g, seed, mi, y2, m2, ai, c, d, fl);
}

static void cross_entropy_labels(void) {
    const double lv[12] = {0.5, -1.2, 2.0, 1.0, 0.3, -0.7, -0.4, 0.9, 0.1, 2.2, -0.3, 0.6};
    /* torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0, 1, 1])) (float64) */
    const double want_grad[12] = {0.044135514716592786, 0.008062831364308501, -0.05219834608090129,
                                  -0.10112568288369195, 0.07392879799194046, 0.027196884891751507,
                                  0.03956937166697906,  -0.1048082364025664, 0.06523886473558736,
                                  0.1947068526799285,   -0.2340174882657044, 0.039310635585775903};
    ag_tensor x = MAKE_RG(lv, SHAPE(4, 3)), y = MAKE_RG(lv, SHAPE(4, 3)), lab = INTS(I64(2, 0, 1, 1), SHAPE(4));
    ag_tensor l1 = 0, l2 = 0, g1 = 0, g2 = 0;
    CHECK_OK(ag_cross_entropy_labels(&l1, x, lab));
    CHECK_OK(ag_cross_entropy(&l2, y, I64(2, 0, 1, 1), 4));
    double v1 = 0, v2 = 0;
    CHECK_OK(ag_tensor_item(&v1, l1));
    CHECK_OK(ag_tensor_item(&v2, l2));
    CHECK_CLOSE(v1, 1.0114814914791366, 1e-14);
    CHECK(v1 == v2);
    CHECK_OK(ag_backward(l1, 0, false, false));
    CHECK_OK(ag_backward(l2, 0, false, false));
    CHECK_OK(ag_tensor_grad(&g1, x));
    CHECK_OK(ag_tensor_grad(&g2, y));
    EXPECT_TENSOR_TOL(g1, SHAPE(4, 3), want_grad, 1e-15, 1e-13, "cross_entropy_labels gradient");
    double a[12], b[12];
    READ(a, 12, g1);
    READ(b, 12, g2);
    ARRAYS_CLOSE("labels tensor vs labels array", a, b, 12);
    /* Errors. */
    ag_tensor fl = MAKE(D(2, 0, 1, 1), SHAPE(4)), far = INTS(I64(2, 0, 3, 1), SHAPE(4)), neg = INTS(I64(2, 0, -1, 1), SHAPE(4));
    ag_tensor l3 = INTS(I64(2, 0, 1), SHAPE(3)), x1 = MAKE(D(1, 2), SHAPE(2)), li = INTS(I64(1, 2, 3, 4), SHAPE(2, 2));
    ag_tensor two = INTS(I64(0, 1), SHAPE(2));
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_cross_entropy_labels, x, fl);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_cross_entropy_labels, li, two);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cross_entropy_labels, x, far);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_cross_entropy_labels, x, neg);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy_labels, x, l3);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_cross_entropy_labels, x1, two);
    FREE(x, y, lab, l1, l2, g1, g2, fl, far, neg, l3, x1, li, two);
}

/* ========================================================================================== */
/* Generators                                                                                 */
/* ========================================================================================== */

static ag_generator gen(uint64_t seed) {
    ag_generator g = 0;
    CHECK_OK(ag_generator_new(&g, seed));
    return g;
}

static void generator_handles_and_state(void) {
    ag_generator g = gen(42), h = gen(42);
    CHECK(g != 0 && g != h);
    /* The first uniform of a new generator equals ag_tensor_rand_uniform with its seed. */
    ag_tensor u = 0, v = 0, ref = 0;
    CHECK_OK(ag_random_uniform(&u, I64(50), 1, -1, 2, g, AG_FLOAT64));
    CHECK_OK(ag_tensor_rand_uniform(&ref, I64(50), 1, -1, 2, 42, AG_FLOAT64));
    double a[50], b[50], c[50];
    READ(a, 50, u);
    READ(b, 50, ref);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* A second draw differs; the twin generator gives the same first draw. */
    FREE(u);
    CHECK_OK(ag_random_uniform(&u, I64(50), 1, -1, 2, g, AG_FLOAT64));
    READ(c, 50, u);
    CHECK(memcmp(a, c, sizeof a) != 0);
    CHECK_OK(ag_random_uniform(&v, I64(50), 1, -1, 2, h, AG_FLOAT64));
    READ(c, 50, v);
    CHECK(memcmp(a, c, sizeof a) == 0);
    FREE(u, v, ref);
    /* get/set state replays. */
    uint64_t s = 0;
    CHECK_OK(ag_generator_get_state(&s, g));
    ag_tensor n1 = 0, n2 = 0, p1 = 0, p2 = 0;
    CHECK_OK(ag_random_normal(&n1, I64(8), 1, 1, 2, g, AG_FLOAT32));
    CHECK_OK(ag_randperm(&p1, 10, g));
    CHECK_OK(ag_generator_set_state(g, s));
    CHECK_OK(ag_random_normal(&n2, I64(8), 1, 1, 2, g, AG_FLOAT32));
    CHECK_OK(ag_randperm(&p2, 10, g));
    float f1[8], f2[8];
    int64_t q1[10], q2[10];
    CHECK_OK(ag_tensor_copy_data(f1, 8, AG_FLOAT32, n1));
    CHECK_OK(ag_tensor_copy_data(f2, 8, AG_FLOAT32, n2));
    CHECK(memcmp(f1, f2, sizeof f1) == 0);
    read_ints_at(q1, 10, p1, HERE);
    read_ints_at(q2, 10, p2, HERE);
    CHECK(memcmp(q1, q2, sizeof q1) == 0);
    FREE(n1, n2, p1, p2);
    /* Handles: free twice, a freed (stale) generator, a tensor handle as a generator and a
     * generator as a tensor, a made-up handle, 0. */
    ag_tensor t = SCALAR(1), o = SENTINEL;
    CHECK_ERR(ag_generator_free((ag_generator)t), AG_ERR_INVALID_HANDLE);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_random_uniform, I64(2), 1, 0, 1, (ag_generator)t, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_dropout, t, 0.5, true, (ag_generator)t);
    CHECK_ERR(ag_tensor_free((ag_tensor)h), AG_ERR_INVALID_HANDLE);
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_exp, (ag_tensor)h);
    CHECK_OK(ag_generator_free(h));
    CHECK_ERR(ag_generator_free(h), AG_ERR_INVALID_HANDLE);
    message_has("not a live generator handle");
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_randperm, 3, h);
    uint64_t st = 12345;
    CHECK_ERR(ag_generator_get_state(&st, h), AG_ERR_INVALID_HANDLE);
    CHECK(st == 12345);
    CHECK_ERR(ag_generator_set_state(h, 1), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_generator_get_state(&st, (ag_generator)0x0123456789ABCDEFULL), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_generator_get_state(&st, 0), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_generator_get_state(NULL, g), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_generator_new(NULL, 1), AG_ERR_ARGUMENT);
    CHECK_OK(ag_generator_free(0));
    CHECK_ERR_OUT(AG_ERR_INVALID_HANDLE, ag_randint, I64(2), 1, 0, 5, 0);
    /* Argument errors. */
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_random_uniform, I64(2), 1, 0, 1, g, AG_INT64);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_random_normal, I64(2), 1, 0, 1, g, AG_BOOL);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_random_uniform, I64(2), 1, 1, 0, g, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_random_normal, I64(2), 1, 0, -1, g, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_random_uniform, NULL, 1, 0, 1, g, AG_FLOAT64);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_randint, I64(2), 1, 3, 3, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_randperm, -1, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_randperm, (INT64_C(1) << 40) + 1, g);
    (void)o;
    FREE(t);
    CHECK_OK(ag_generator_free(g));
}

static void randint_randperm(void) {
    ag_generator g = gen(11);
    ag_tensor r = 0;
    CHECK_OK(ag_randint(&r, I64(100, 100), 2, -3, 7, g));
    EXPECT_DTYPE(r, AG_INT64);
    int64_t *v = malloc(10000 * sizeof *v);
    read_ints_at(v, 10000, r, HERE);
    int counts[10] = {0};
    bool in_range = true;
    for (int k = 0; k < 10000; k++) {
        if (v[k] < -3 || v[k] >= 7) in_range = false;
        else counts[v[k] + 3]++;
    }
    CHECK(in_range);
    /* Chi-square over 10 values (9 degrees of freedom, mean 9): 60 is p < 1e-9. */
    double chi2 = 0;
    for (int k = 0; k < 10; k++) chi2 += (counts[k] - 1000.0) * (counts[k] - 1000.0) / 1000.0;
    CHECKF(chi2 < 60, "chi-square %g", chi2);
    FREE(r);
    /* No modulo bias: a span of about 2/3 * 2^64 from INT64_MIN; a modulo draw would put 2/3 of
     * the draws in the lower half, an unbiased one 1/2 (sd 0.005). */
    uint64_t span = 0xAAAAAAAAAAAAAAABULL;
    int64_t low = INT64_MIN, high = (int64_t)((uint64_t)low + span), half = (int64_t)((uint64_t)low + span / 2);
    CHECK_OK(ag_randint(&r, I64(10000), 1, low, high, g));
    read_ints_at(v, 10000, r, HERE);
    int lower = 0;
    in_range = true;
    for (int k = 0; k < 10000; k++) {
        if (v[k] >= high) in_range = false;
        if (v[k] < half) lower++;
    }
    CHECK(in_range);
    CHECKF(fabs(lower / 10000.0 - 0.5) < 0.05, "lower half: %d of 10000", lower);
    FREE(r);
    /* randperm is a permutation. */
    CHECK_OK(ag_randperm(&r, 100, g));
    read_ints_at(v, 100, r, HERE);
    bool seen[100] = {false}, perm = true, identity = true;
    for (int k = 0; k < 100; k++) {
        if (v[k] < 0 || v[k] >= 100 || seen[v[k]]) perm = false;
        else seen[v[k]] = true;
        if (v[k] != k) identity = false;
    }
    CHECK(perm && !identity);
    FREE(r);
    CHECK_OK(ag_randperm(&r, 0, g));
    EXPECT_SHAPE(r, SHAPE(0), "randperm(0)");
    FREE(r);
    free(v);
    CHECK_OK(ag_generator_free(g));
}

static void dropout(void) {
    ag_generator g = gen(21);
    ag_tensor x = 0, y = 0, l = 0, gr = 0;
    CHECK_OK(ag_tensor_ones(&x, I64(100, 100), 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(x, true));
    CHECK_OK(ag_dropout(&y, x, 0.3, true, g));
    double *v = malloc(10000 * sizeof *v), *gv = malloc(10000 * sizeof *gv);
    READ(v, 10000, y);
    int zeros = 0;
    bool scaled = true;
    double sum = 0;
    for (int k = 0; k < 10000; k++) {
        if (v[k] == 0) zeros++;
        else if (v[k] != 1 / (1 - 0.3)) scaled = false;
        sum += v[k];
    }
    /* Zeroed with probability 0.3 (sd of the fraction 0.0046), the mean kept at 1. */
    CHECKF(fabs(zeros / 10000.0 - 0.3) < 0.03, "%d zeros", zeros);
    CHECK(scaled);
    CHECKF(fabs(sum / 10000 - 1) < 0.05, "mean %g", sum / 10000);
    /* The gradient of sum(y) is the mask times the scale: y itself for x = 1. */
    CHECK_OK(ag_sum(&l, y, NULL, 0, false));
    CHECK_OK(ag_backward(l, 0, false, false));
    CHECK_OK(ag_tensor_grad(&gr, x));
    READ(gv, 10000, gr);
    CHECK(memcmp(v, gv, 10000 * sizeof *v) == 0);
    FREE(y, l, gr);
    /* p = 0, training false: the input itself (a new handle); p = 1: zeros. */
    ag_tensor a = MAKE(D(1, -2, 3), SHAPE(3)), same = 0;
    uint64_t s0 = 0, s1 = 1;
    CHECK_OK(ag_generator_get_state(&s0, g));
    CHECK_OK(ag_dropout(&same, a, 0.9, false, g));
    CHECK(same != a);
    EXPECT_VALUES(same, D(1, -2, 3), 3, "training false");
    FREE(same);
    CHECK_OK(ag_dropout(&same, a, 0, true, g));
    EXPECT_VALUES(same, D(1, -2, 3), 3, "p = 0");
    FREE(same);
    CHECK_OK(ag_generator_get_state(&s1, g));
    CHECK(s0 == s1);
    CHECK_OK(ag_dropout(&same, a, 1, true, g));
    EXPECT_VALUES(same, D(0, 0, 0), 3, "p = 1");
    FREE(same);
    ag_tensor ai = INTS(I64(1), SHAPE(1));
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_dropout, a, -0.1, true, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_dropout, a, 1.5, true, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_dropout, a, NAN, true, g);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_dropout, ai, 0.5, true, g);
    free(v), free(gv);
    FREE(x, a, ai);
    CHECK_OK(ag_generator_free(g));
}

static void multinomial(void) {
    ag_generator g = gen(8);
    /* With replacement: weights [1, 0, 3] -> frequencies 1/4, 0, 3/4 (sd 0.005 for 8000). */
    ag_tensor w = MAKE(D(1, 0, 3), SHAPE(3)), r = 0;
    CHECK_OK(ag_multinomial(&r, w, 8000, true, g));
    int64_t *v = malloc(12000 * sizeof *v);
    read_ints_at(v, 8000, r, HERE);
    int c0 = 0, c1 = 0;
    for (int k = 0; k < 8000; k++) c0 += v[k] == 0, c1 += v[k] == 1;
    CHECK(c1 == 0);
    CHECKF(fabs(c0 / 8000.0 - 0.25) < 0.03, "%d zeros", c0);
    FREE(r);
    /* Without replacement, rows of (N, C): each row distinct; for [1, 1, 2] P(first = 2) = 1/2. */
    double *wv = malloc(12000 * sizeof *wv);
    for (int k = 0; k < 12000; k++) wv[k] = (k % 3 == 2) ? 2 : 1;
    ag_tensor ww = MAKE(wv, SHAPE(4000, 3));
    CHECK_OK(ag_multinomial(&r, ww, 3, false, g));
    EXPECT_SHAPE(r, SHAPE(4000, 3), "rows");
    read_ints_at(v, 12000, r, HERE);
    int first2 = 0;
    bool distinct = true;
    for (int i = 0; i < 4000; i++) {
        int64_t *row = v + 3 * i;
        if (row[0] == row[1] || row[0] == row[2] || row[1] == row[2]) distinct = false;
        first2 += row[0] == 2;
    }
    CHECK(distinct);
    CHECKF(fabs(first2 / 4000.0 - 0.5) < 0.05, "first = 2 in %d of 4000 rows", first2);
    FREE(r);
    CHECK_OK(ag_multinomial(&r, w, 0, false, g));
    EXPECT_SHAPE(r, SHAPE(0), "no samples");
    FREE(r);
    /* Errors. */
    ag_tensor neg = MAKE(D(1, -1), SHAPE(2)), inf = MAKE(D(1, INFINITY), SHAPE(2)), zero = MAKE(D(1, 1, 0, 0), SHAPE(2, 2));
    ag_tensor r3 = MAKE(D(1, 2), SHAPE(1, 1, 2)), none = MAKE(NULL, SHAPE(0)), wi = INTS(I64(1, 2), SHAPE(2));
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_multinomial, w, 3, false, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_multinomial, w, -1, true, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_multinomial, neg, 1, true, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_multinomial, inf, 1, true, g);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_multinomial, zero, 1, true, g);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_multinomial, r3, 1, true, g);
    CHECK_ERR_OUT(AG_ERR_SHAPE, ag_multinomial, none, 1, true, g);
    CHECK_ERR_OUT(AG_ERR_DTYPE, ag_multinomial, wi, 1, true, g);
    free(v), free(wv);
    FREE(w, ww, neg, inf, zero, r3, none, wi);
    CHECK_OK(ag_generator_free(g));
}

/* ========================================================================================== */
/* Capture and replay                                                                         */
/* ========================================================================================== */

typedef struct {
    ag_tensor table, proj, idx, lab; /* made outside the function */
    ag_generator g;
} step_ctx;

/* loss = cross_entropy_labels(tanh(embedding(idx, table)) @ proj^T, lab); outputs: loss and its
 * gradients with respect to table and proj. */
static ag_status emb_step(ag_tensor *out3, const step_ctx *c) {
    ag_tensor e = 0, h = 0, z = 0, loss = 0;
    ag_status st = ag_embedding(&e, c->idx, c->table);
    if (st == AG_OK) st = ag_tanh(&h, e);
    if (st == AG_OK) st = ag_linear(&z, h, c->proj, AG_NULL_TENSOR);
    if (st == AG_OK) st = ag_cross_entropy_labels(&loss, z, c->lab);
    ag_tensor wrt[2] = {c->table, c->proj};
    if (st == AG_OK) st = ag_grad(out3 + 1, &loss, 1, NULL, wrt, 2, false, false, false);
    ag_tensor_free(e), ag_tensor_free(h), ag_tensor_free(z);
    if (st == AG_OK) out3[0] = loss;
    else ag_tensor_free(loss);
    return st;
}

static int32_t cap_emb_step(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs, void *ud) {
    (void)inputs, (void)ninputs;
    return noutputs == 3 && emb_step(outputs, ud) == AG_OK ? 0 : 1;
}

static int32_t cap_dropout(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs, void *ud) {
    (void)noutputs, (void)ninputs;
    const step_ctx *c = ud;
    return ag_dropout(&outputs[0], inputs[0], 0.5, true, c->g) == AG_OK ? 0 : 1;
}

static void capture_replay(void) {
    double tv[24], pv[12];
    fill(tv, 24, 0.3);
    fill(pv, 12, 1.1);
    step_ctx c = {MAKE_RG(tv, SHAPE(6, 4)), MAKE_RG(pv, SHAPE(3, 4)), INTS(I64(0, 1, 2, 3, 4), SHAPE(5)),
                  INTS(I64(0, 1, 2, 0, 1), SHAPE(5)), 0};
    ag_function f = 0;
    CHECK_OK(ag_capture(&f, cap_emb_step, NULL, 0, 3, &c));
    /* New indices and labels set in place: the replay matches the eager step on them. */
    const int64_t idx[2][5] = {{5, 4, 3, 2, 1}, {0, 0, 0, 5, 5}}, lab[2][5] = {{2, 1, 0, 2, 1}, {1, 1, 1, 0, 0}};
    for (int k = 0; k < 2; k++) {
        set_ctx("replay %d", k);
        CHECK_OK(ag_tensor_set_data(c.idx, idx[k], 5, AG_INT64));
        CHECK_OK(ag_tensor_set_data(c.lab, lab[k], 5, AG_INT64));
        ag_tensor rep[3] = {0}, eag[3] = {0};
        CHECK_OK(ag_function_call(rep, 3, f, NULL, 0));
        CHECK_OK(emb_step(eag, &c));
        const int64_t n[3] = {1, 24, 12};
        for (int j = 0; j < 3; j++) {
            double a[24], b[24];
            READ(a, n[j], rep[j]);
            READ(b, n[j], eag[j]);
            CHECKF(memcmp(a, b, (size_t)n[j] * sizeof(double)) == 0, "output %d differs from the eager step", j);
        }
        FREE(rep[0], rep[1], rep[2], eag[0], eag[1], eag[2]);
    }
    set_ctx("%s", "");
    /* An index out of range set in place: the replay fails (no crash, no output). */
    CHECK_OK(ag_tensor_set_data(c.idx, I64(0, 1, 2, 3, 6), 5, AG_INT64));
    ag_tensor none[3] = {SENTINEL, SENTINEL, SENTINEL};
    CHECK(ag_function_call(none, 3, f, NULL, 0) != AG_OK);
    CHECK(none[0] == SENTINEL);
    CHECK_OK(ag_function_free(f));
    /* A captured dropout redraws at each replay: replay k equals the (k+1)-th eager draw of a
     * twin generator; the function keeps its generator alive after ag_generator_free. */
    ag_generator twin = gen(99);
    c.g = gen(99);
    ag_tensor x = 0, tmp = 0;
    CHECK_OK(ag_tensor_ones(&x, I64(64), 1, AG_FLOAT64));
    CHECK_OK(ag_capture(&f, cap_dropout, &x, 1, 1, &c));
    CHECK_OK(ag_dropout(&tmp, x, 0.5, true, twin)); /* the capture's draw */
    FREE(tmp);
    CHECK_OK(ag_generator_free(c.g));
    double prev[64] = {0};
    for (int k = 0; k < 3; k++) {
        ag_tensor r = 0, e = 0;
        double a[64], b[64];
        CHECK_OK(ag_function_call(&r, 1, f, &x, 1));
        CHECK_OK(ag_dropout(&e, x, 0.5, true, twin));
        READ(a, 64, r);
        READ(b, 64, e);
        CHECKF(memcmp(a, b, sizeof a) == 0, "replay %d differs from the twin's draw", k);
        CHECKF(memcmp(a, prev, sizeof a) != 0, "replay %d drew the same mask again", k);
        memcpy(prev, a, sizeof a);
        FREE(r, e);
    }
    CHECK_OK(ag_function_free(f));
    CHECK_OK(ag_generator_free(twin));
    FREE(x, c.table, c.proj, c.idx, c.lab);
}

int main(void) {
    test_begin();
    run_group_checking_handles("int64/bool creation and copies", creation_and_copies);
    run_group_checking_handles("int64/bool sums and comparisons", sums_and_comparisons);
    run_group_checking_handles("computing ops refuse int64/bool", computing_ops_refuse);
    run_group_checking_handles("to_dtype", to_dtype);
    run_group_checking_handles("argmax/argmin", argmax_argmin);
    run_group_checking_handles("topk", topk);
    run_group_checking_handles("one_hot", one_hot);
    run_group_checking_handles("embedding", embedding);
    run_group_checking_handles("masked_fill and logical ops", masked_fill_and_logical);
    run_group_checking_handles("cross_entropy_labels", cross_entropy_labels);
    run_group_checking_handles("generators: handles and state", generator_handles_and_state);
    run_group_checking_handles("randint and randperm", randint_randperm);
    run_group_checking_handles("dropout", dropout);
    run_group_checking_handles("multinomial", multinomial);
    run_group_checking_handles("capture and replay", capture_replay);
    check_no_leaks();
    return test_summary();
}
