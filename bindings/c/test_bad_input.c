/*
 * test_bad_input.c - one test per entry of the "Bad input catalogue" at the end of
 * include/autograd.h (B01, B02, ...), labelled with the entry's ID.
 *
 * Every rejected entry checks
 *   - the status the catalogue gives (and that ag_status_name() names it),
 *   - that ag_last_error() contains the catalogued message fragment (before each call a known,
 *     different error is provoked, so a stale message cannot pass for the new one),
 *   - that the outputs were not written (they are preset to sentinels),
 * and every "accepted" entry checks AG_OK and the defined (IEEE) result. The program carries
 * on after each entry; after the last one it computes a gradient and checks it, and finally
 * checks that ag_live_handle_count() is 0.
 *
 * Output: one line per entry, "B01 ok" or "B01 FAILED <what differed>", then exactly
 * "N passed, M failed" (entries, plus the final gradient and leak checks). Exit status 0 only
 * if M is 0.
 *
 * The out-of-memory entries ask for 2^61 bytes or more: more than any 64-bit address space
 * (x86-64 and AArch64 user space is at most 2^56 bytes even with 5-level paging), so the
 * allocation fails deterministically, natively and under valgrind, whatever the overcommit
 * setting. (Under AddressSanitizer, whose allocator aborts on such sizes by default, run with
 * ASAN_OPTIONS=allocator_may_return_null=1.) Set AG_TEST_VERBOSE=1 to print every message
 * checked.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_bad_input
 *        bindings/c/test_bad_input.c -L .build/release -lautograd -Wl,-rpath,$PWD/.build/release -lm
 */
#define _POSIX_C_SOURCE 200809L

#include "autograd.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ========================================================================================== */
/* Checks                                                                                     */
/* ========================================================================================== */

static char g_why[1024]; /* the first thing that went wrong in the current entry */
static bool g_verbose;

#define SENT_HANDLE ((ag_tensor)0x5A5A5A5A5A5A5A5AULL)
#define SENT_I64 ((int64_t)-777777)
#define SENT_F64 (-12345.678)

__attribute__((format(printf, 2, 3))) static bool fail_at(int line, const char *fmt, ...) {
    if (g_why[0]) return false; /* keep the first failure */
    int k = snprintf(g_why, sizeof g_why, "(line %d) ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_why + k, sizeof g_why - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}
#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
#define CHECK(cond) ((cond) ? true : FAIL("%s", #cond))

/* Provokes a known error whose message no entry expects, so that each entry's message check
 * sees the message of its own call only. */
static void prime(void) {
    ag_tensor t = SENT_HANDLE;
    (void)ag_tensor_zeros(&t, NULL, 0, 4242);
}

static const char *header_name(ag_status s) {
    static const char *const names[] = {"AG_OK",           "AG_ERR_INVALID_HANDLE", "AG_ERR_ARGUMENT",
                                        "AG_ERR_SHAPE",    "AG_ERR_DTYPE",          "AG_ERR_STATE",
                                        "AG_ERR_OUT_OF_MEMORY", "AG_ERR_CALLBACK",  "AG_ERR_INTERNAL",
                                        "AG_ERR_IO",       "AG_ERR_FORMAT"};
    return s >= 0 && s <= AG_ERR_FORMAT ? names[s] : "AG_UNKNOWN_STATUS";
}

/* The status check: `got` must be `want`; for an error, the message must contain `frag`. */
static bool expect_at(ag_status got, ag_status want, const char *frag, const char *expr, int line) {
    const char *msg = ag_last_error();
    if (g_verbose && want != AG_OK) printf("    %s -> %s: %s\n", expr, ag_status_name(got), msg ? msg : "(NULL)");
    if (got != want)
        return fail_at(line, "%s returned %s (%d), want %s; message: \"%s\"", expr, ag_status_name(got), got,
                       header_name(want), got != AG_OK && msg ? msg : "");
    if (strcmp(ag_status_name(got), header_name(want)) != 0)
        return fail_at(line, "ag_status_name(%d) is \"%s\"", got, ag_status_name(got));
    if (want == AG_OK) return true;
    if (frag == NULL || frag[0] == '\0') return fail_at(line, "%s: the test names no message fragment", expr);
    if (msg == NULL || msg[0] == '\0') return fail_at(line, "%s: ag_last_error() is empty", expr);
    if (strstr(msg, frag) == NULL)
        return fail_at(line, "%s: message \"%s\" lacks \"%s\"", expr, msg, frag);
    return true;
}
#define EXPECT(call, want, frag) expect_at((prime(), (call)), (want), (frag), #call, __LINE__)
#define OK(call) expect_at((call), AG_OK, "", #call, __LINE__)

/* ========================================================================================== */
/* Helpers                                                                                    */
/* ========================================================================================== */

static ag_tensor from64(const double *v, const int64_t *shape, int64_t ndim) {
    ag_tensor t = AG_NULL_TENSOR;
    if (ag_tensor_from_data(&t, v, shape, ndim, AG_FLOAT64) != AG_OK) {
        FAIL("setup: ag_tensor_from_data: %s", ag_last_error());
        return AG_NULL_TENSOR;
    }
    return t;
}

static ag_tensor vec64(int64_t n, const double *v) { return from64(v, &n, 1); }

static ag_tensor scalar64(double v) { return from64(&v, NULL, 0); }

static ag_tensor full(const int64_t *shape, int64_t ndim, double v, ag_dtype dtype) {
    ag_tensor t = AG_NULL_TENSOR;
    if (ag_tensor_full(&t, shape, ndim, v, dtype) != AG_OK) {
        FAIL("setup: ag_tensor_full: %s", ag_last_error());
        return AG_NULL_TENSOR;
    }
    return t;
}

static ag_tensor leaf_rg(ag_tensor t) {
    if (t && ag_tensor_set_requires_grad(t, true) != AG_OK) FAIL("setup: set_requires_grad: %s", ag_last_error());
    return t;
}

static void release(ag_tensor t) {
    if (ag_tensor_free(t) != AG_OK) FAIL("cleanup: ag_tensor_free: %s", ag_last_error());
}

static double item(ag_tensor t) {
    double v = NAN;
    if (ag_tensor_item(&v, t) != AG_OK) FAIL("ag_tensor_item: %s", ag_last_error());
    return v;
}

/* Copies up to n float64 elements of t into out. */
static bool values(double *out, int64_t n, ag_tensor t) {
    if (ag_tensor_copy_data(out, n, AG_FLOAT64, t) != AG_OK) return FAIL("ag_tensor_copy_data: %s", ag_last_error());
    return true;
}

static bool is_pinf(double x) { return isinf(x) && x > 0; }
static bool is_ninf(double x) { return isinf(x) && x < 0; }

/* ========================================================================================== */
/* Handles                                                                                    */
/* ========================================================================================== */

static bool b01(void) { /* handle 0 */
    int64_t n = SENT_I64;
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_ndim(&n, AG_NULL_TENSOR),
        AG_ERR_INVALID_HANDLE, "ag_tensor_ndim: tensor handle is 0 (AG_NULL_TENSOR)");
    ok &= CHECK(n == SENT_I64);
    ag_tensor a = scalar64(1);
    ok &= EXPECT(ag_add(&out, a, AG_NULL_TENSOR), AG_ERR_INVALID_HANDLE, "ag_add: b handle is 0 (AG_NULL_TENSOR)");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b02(void) { /* a freed handle */
    ag_tensor a = scalar64(1);
    release(a);
    int64_t n = SENT_I64;
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_numel(&n, a), AG_ERR_INVALID_HANDLE,
                     "is not a live tensor handle (freed, made up, or of another kind)");
    ok &= CHECK(n == SENT_I64);
    ok &= EXPECT(ag_exp(&out, a), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b03(void) { /* a made-up handle */
    const ag_tensor fake[] = {(ag_tensor)0x0123456789ABCDEFULL, (ag_tensor)1, (ag_tensor)UINT64_MAX,
                              (ag_tensor)0x0100000000000001ULL};
    bool ok = true;
    for (size_t i = 0; i < sizeof fake / sizeof fake[0]; i++) {
        int64_t n = SENT_I64;
        ok &= EXPECT(ag_tensor_ndim(&n, fake[i]), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
        ok &= CHECK(n == SENT_I64);
        ok &= EXPECT(ag_tensor_free(fake[i]), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    }
    return ok;
}

static bool b04(void) { /* an optimizer handle where a tensor handle is wanted */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = 0;
    bool ok = OK(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0, false, 0));
    int64_t n = SENT_I64;
    ok &= EXPECT(ag_tensor_ndim(&n, (ag_tensor)opt), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(n == SENT_I64);
    ok &= EXPECT(ag_tensor_free((ag_tensor)opt), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= OK(ag_optimizer_free(opt)); /* the failed free did not release it */
    release(p);
    return ok;
}

static bool b05(void) { /* a tensor handle where an optimizer handle is wanted */
    ag_tensor t = scalar64(1);
    double lr = SENT_F64;
    bool ok = EXPECT(ag_optimizer_step((ag_optimizer)t), AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    ok &= EXPECT(ag_optimizer_lr(&lr, (ag_optimizer)t), AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    ok &= CHECK(lr == SENT_F64);
    ok &= EXPECT(ag_optimizer_free((ag_optimizer)t), AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    ok &= CHECK(item(t) == 1.0); /* still a live tensor */
    ok &= EXPECT(ag_optimizer_step(0), AG_ERR_INVALID_HANDLE, "optimizer handle 0x0 is not a live optimizer handle");
    release(t);
    return ok;
}

static bool b06(void) { /* a tensor handle freed twice */
    ag_tensor t = scalar64(1);
    bool ok = OK(ag_tensor_free(t));
    ok &= EXPECT(ag_tensor_free(t), AG_ERR_INVALID_HANDLE, "ag_tensor_free: handle 0x");
    ok &= EXPECT(ag_tensor_free(t), AG_ERR_INVALID_HANDLE,
                 "is not a live tensor handle (already freed, made up, or of another kind)");
    return ok;
}

static bool b07(void) { /* an optimizer handle freed twice */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = 0;
    bool ok = OK(ag_optimizer_adam(&opt, &p, 1, 0.1, 0.9, 0.999, 1e-8, 0));
    ok &= OK(ag_optimizer_free(opt));
    ok &= EXPECT(ag_optimizer_free(opt), AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    ok &= EXPECT(ag_optimizer_step(opt), AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    release(p);
    return ok;
}

static bool b08(void) { /* accepted: freeing handle 0 does nothing */
    int64_t before = -1, after = -2;
    bool ok = OK(ag_live_handle_count(&before));
    ok &= OK(ag_tensor_free(AG_NULL_TENSOR));
    ok &= OK(ag_optimizer_free(0));
    ok &= OK(ag_live_handle_count(&after));
    ok &= CHECK(before == after);
    return ok;
}

static bool b09(void) { /* a stale handle whose slot has been reused */
    ag_tensor old = scalar64(1);
    release(old);
    ag_tensor fresh = scalar64(2); /* typically takes the same slot with a new generation */
    double v = SENT_F64;
    bool ok = EXPECT(ag_tensor_item(&v, old), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(v == SENT_F64);
    ok &= CHECK(old != fresh);
    ok &= CHECK(item(fresh) == 2.0);
    release(fresh);
    return ok;
}

/* ========================================================================================== */
/* Pointers and counts                                                                        */
/* ========================================================================================== */

static bool b10(void) { /* NULL out pointer for a new tensor */
    int64_t shape[] = {2, 3};
    int64_t live0 = -1, live1 = -2;
    bool ok = OK(ag_live_handle_count(&live0));
    ok &= EXPECT(ag_tensor_zeros(NULL, shape, 2, AG_FLOAT32), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ag_tensor a = scalar64(1);
    ok &= EXPECT(ag_add(NULL, a, a), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_detach(NULL, a), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    release(a);
    ok &= OK(ag_live_handle_count(&live1));
    ok &= CHECK(live0 == live1); /* nothing was made and leaked */
    return ok;
}

static bool b11(void) { /* NULL data with numel > 0 */
    int64_t shape[] = {2, 3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_from_data(&out, NULL, shape, 2, AG_FLOAT64),
        AG_ERR_ARGUMENT, "data is NULL but the shape [2, 3] has 6 elements");
    ok &= CHECK(out == SENT_HANDLE);
    /* accepted: NULL data with numel 0 */
    int64_t empty[] = {0, 3};
    ok &= OK(ag_tensor_from_data(&out, NULL, empty, 2, AG_FLOAT64));
    if (ok) release(out);
    return ok;
}

static bool b12(void) { /* NULL shape with ndim > 0 */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, NULL, 2, AG_FLOAT64), AG_ERR_ARGUMENT, "shape is NULL but ndim is 2");
    ok &= CHECK(out == SENT_HANDLE);
    ag_tensor a = scalar64(1);
    ok &= EXPECT(ag_reshape(&out, a, NULL, 1), AG_ERR_ARGUMENT, "shape is NULL but ndim is 1");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b13(void) { /* NULL out pointers of the query functions */
    ag_tensor t = scalar64(1);
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = 0;
    bool ok = OK(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0, false, 0));
    ok &= EXPECT(ag_tensor_ndim(NULL, t), AG_ERR_ARGUMENT, "ag_tensor_ndim: the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_numel(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_dtype(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_item(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_data_ptr(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_requires_grad(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_grad(NULL, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_live_handle_count(NULL), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_is_grad_enabled(NULL), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_optimizer_lr(NULL, opt), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= OK(ag_optimizer_free(opt));
    release(p);
    release(t);
    return ok;
}

static bool b14(void) { /* concat/stack: tensors NULL, n < 1 */
    ag_tensor out = SENT_HANDLE;
    ag_tensor a = scalar64(1);
    bool ok = EXPECT(ag_concat(&out, NULL, 2, 0), AG_ERR_ARGUMENT, "tensors is NULL but n is 2");
    ok &= EXPECT(ag_concat(&out, &a, 0, 0), AG_ERR_ARGUMENT, "at least one tensor is needed, n is 0");
    ok &= EXPECT(ag_stack(&out, &a, -1, 0), AG_ERR_ARGUMENT, "at least one tensor is needed, n is -1");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b15(void) { /* ag_grad: NULL arrays, counts < 1 */
    ag_tensor x = leaf_rg(scalar64(2));
    ag_tensor y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, x));
    ag_tensor g = SENT_HANDLE;
    ok &= EXPECT(ag_grad(&g, NULL, 1, NULL, &x, 1, true, false, false), AG_ERR_ARGUMENT, "outputs is NULL but noutputs is 1");
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, NULL, 1, true, false, false), AG_ERR_ARGUMENT, "inputs is NULL but ninputs is 1");
    ok &= EXPECT(ag_grad(NULL, &y, 1, NULL, &x, 1, true, false, false),
        AG_ERR_ARGUMENT, "the output pointer 'out_grads' is NULL");
    ok &= EXPECT(ag_grad(&g, &y, 0, NULL, &x, 1, true, false, false),
        AG_ERR_ARGUMENT, "at least one tensor is needed, noutputs is 0");
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, &x, 0, true, false, false),
        AG_ERR_ARGUMENT, "at least one tensor is needed, ninputs is 0");
    ok &= CHECK(g == SENT_HANDLE);
    /* the graph is intact: a correct call works */
    ok &= OK(ag_grad(&g, &y, 1, NULL, &x, 1, false, false, false));
    if (g != SENT_HANDLE) {
        ok &= CHECK(item(g) == 4.0);
        release(g);
    }
    release(y);
    release(x);
    return ok;
}

static bool b16(void) { /* ag_graph_to_dot: length NULL, capacity < 0, out NULL with capacity > 0 */
    ag_tensor x = leaf_rg(scalar64(2));
    ag_tensor y = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&y, x));
    char buf[16];
    memset(buf, '#', sizeof buf);
    int64_t len = SENT_I64;
    ok &= EXPECT(ag_graph_to_dot(buf, sizeof buf, NULL, y), AG_ERR_ARGUMENT, "the output pointer 'length' is NULL");
    ok &= EXPECT(ag_graph_to_dot(buf, -1, &len, y), AG_ERR_ARGUMENT, "capacity -1 is negative");
    ok &= EXPECT(ag_graph_to_dot(NULL, 10, &len, y), AG_ERR_ARGUMENT, "out is NULL but capacity is 10");
    ok &= CHECK(len == SENT_I64);
    for (size_t i = 0; i < sizeof buf; i++) ok &= CHECK(buf[i] == '#');
    ok &= OK(ag_graph_to_dot(NULL, 0, &len, y)); /* accepted: the length query */
    ok &= CHECK(len > 0 && len != SENT_I64);
    release(y);
    release(x);
    return ok;
}

static bool b17(void) { /* ag_tensor_shape: capacity < ndim, out NULL */
    int64_t shape[] = {2, 3};
    ag_tensor t = full(shape, 2, 0, AG_FLOAT32);
    int64_t got[2] = {SENT_I64, SENT_I64};
    bool ok = EXPECT(ag_tensor_shape(got, 1, t), AG_ERR_ARGUMENT, "capacity 1 is less than the rank 2");
    ok &= EXPECT(ag_tensor_shape(NULL, 2, t), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= CHECK(got[0] == SENT_I64 && got[1] == SENT_I64);
    release(t);
    return ok;
}

static bool b18(void) { /* ag_tensor_copy_data: capacity < numel, out NULL */
    int64_t shape[] = {2, 3};
    ag_tensor t = full(shape, 2, 1.5, AG_FLOAT64);
    double buf[6];
    for (int i = 0; i < 6; i++) buf[i] = SENT_F64;
    bool ok = EXPECT(ag_tensor_copy_data(buf, 5, AG_FLOAT64, t), AG_ERR_ARGUMENT,
                     "the output buffer holds 5 elements, the tensor has 6");
    ok &= EXPECT(ag_tensor_copy_data(NULL, 6, AG_FLOAT64, t), AG_ERR_ARGUMENT, "the output pointer is NULL");
    ok &= EXPECT(ag_tensor_copy_data(buf, -1, AG_FLOAT64, t), AG_ERR_ARGUMENT, "capacity -1 is negative");
    for (int i = 0; i < 6; i++) ok &= CHECK(buf[i] == SENT_F64);
    release(t);
    return ok;
}

static bool b19(void) { /* index_select / cross_entropy: an index array NULL with a count > 0 */
    int64_t shape[] = {3, 4};
    ag_tensor a = full(shape, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_index_select(&out, a, 0, NULL, 2), AG_ERR_ARGUMENT, "indices is NULL but its count is 2");
    ok &= EXPECT(ag_cross_entropy(&out, a, NULL, 3), AG_ERR_ARGUMENT, "labels is NULL but its count is 3");
    ok &= EXPECT(ag_index_select(&out, a, 0, NULL, -1), AG_ERR_ARGUMENT, "the number of indices (-1) is negative");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

/* ========================================================================================== */
/* Shapes and ranks                                                                           */
/* ========================================================================================== */

static bool b20(void) { /* ndim < 0 */
    int64_t shape[] = {2};
    ag_tensor out = SENT_HANDLE;
    double d = 1;
    bool ok = EXPECT(ag_tensor_zeros(&out, shape, -1, AG_FLOAT32), AG_ERR_ARGUMENT, "ndim -1 is outside 0...8");
    ok &= EXPECT(ag_tensor_from_data(&out, &d, shape, INT64_MIN, AG_FLOAT64), AG_ERR_ARGUMENT, "is outside 0...8");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b21(void) { /* ndim > AG_MAX_NDIM */
    int64_t shape[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_ones(&out, shape, 9, AG_FLOAT32), AG_ERR_ARGUMENT, "ndim 9 is outside 0...8");
    ag_tensor a = scalar64(1);
    ok &= EXPECT(ag_reshape(&out, a, shape, 9), AG_ERR_ARGUMENT, "ndim 9 is outside 0...8");
    ok &= EXPECT(ag_expand(&out, a, shape, 9), AG_ERR_ARGUMENT, "ndim 9 is outside 0...8");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b22(void) { /* a negative extent */
    int64_t shape[] = {2, -3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, shape, 2, AG_FLOAT64), AG_ERR_SHAPE, "negative extent -3 in shape [2, -3]");
    ok &= EXPECT(ag_tensor_rand_uniform(&out, shape, 2, 0, 1, 1, AG_FLOAT64), AG_ERR_SHAPE, "negative extent -3");
    ok &= EXPECT(ag_tensor_eye(&out, -1, 2, AG_FLOAT64), AG_ERR_SHAPE, "must not be negative");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b23(void) { /* element count overflow: {INT64_MAX, 2} */
    int64_t shape[] = {INT64_MAX, 2};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, shape, 2, AG_FLOAT32), AG_ERR_SHAPE,
                     "the element count of shape [9223372036854775807, 2] overflows int64");
    ok &= EXPECT(ag_tensor_full(&out, shape, 2, 1.0, AG_FLOAT64), AG_ERR_SHAPE, "overflows int64");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b24(void) { /* element count overflow: {2^32, 2^32}, also via reshape/expand/eye */
    int64_t shape[] = {INT64_C(1) << 32, INT64_C(1) << 32};
    ag_tensor out = SENT_HANDLE;
    double d = 0;
    bool ok = EXPECT(ag_tensor_ones(&out, shape, 2, AG_FLOAT64), AG_ERR_SHAPE,
                     "the element count of shape [4294967296, 4294967296] overflows int64");
    ok &= EXPECT(ag_tensor_from_data(&out, &d, shape, 2, AG_FLOAT64), AG_ERR_SHAPE, "overflows int64");
    ok &= EXPECT(ag_tensor_rand_normal(&out, shape, 2, 0, 1, 1, AG_FLOAT32), AG_ERR_SHAPE, "overflows int64");
    ok &= EXPECT(ag_tensor_eye(&out, INT64_C(1) << 32, INT64_C(1) << 32, AG_FLOAT32), AG_ERR_SHAPE, "overflow");
    ag_tensor a = scalar64(1);
    ok &= EXPECT(ag_expand(&out, a, shape, 2), AG_ERR_SHAPE, "overflows int64");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b25(void) { /* operands that do not broadcast */
    int64_t sa[] = {2, 3}, sb[] = {4};
    ag_tensor a = full(sa, 2, 1, AG_FLOAT64), b = full(sb, 1, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_add(&out, a, b), AG_ERR_SHAPE, "shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)");
    ok &= EXPECT(ag_mul(&out, a, b), AG_ERR_SHAPE, "do not broadcast");
    ok &= EXPECT(ag_where(&out, a, a, b), AG_ERR_SHAPE, "do not broadcast");
    ok &= EXPECT(ag_expand(&out, b, sa, 2), AG_ERR_SHAPE, "ag_expand: shapes [4] and [2, 3] do not broadcast");
    ok &= EXPECT(ag_mse_loss(&out, a, b), AG_ERR_SHAPE, "prediction [2, 3] and target [4] differ");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(b);
    return ok;
}

static bool b26(void) { /* matmul: inner extents differ */
    int64_t sa[] = {2, 3}, sb[] = {4, 5}, sv[] = {4};
    ag_tensor a = full(sa, 2, 1, AG_FLOAT32), b = full(sb, 2, 1, AG_FLOAT32), v = full(sv, 1, 1, AG_FLOAT32);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_matmul(&out, a, b), AG_ERR_SHAPE, "inner extents differ: [2, 3] @ [4, 5]");
    ok &= EXPECT(ag_matmul(&out, a, v), AG_ERR_SHAPE, "inner extents differ");
    ok &= EXPECT(ag_dot(&out, v, a), AG_ERR_SHAPE, "needs two 1-D tensors of equal length");
    ok &= EXPECT(ag_linear(&out, a, b, AG_NULL_TENSOR), AG_ERR_SHAPE, "does not fit weight");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(b);
    release(v);
    return ok;
}

static bool b27(void) { /* matmul with a 0-d operand */
    int64_t sa[] = {2, 2};
    ag_tensor a = full(sa, 2, 1, AG_FLOAT64), s = scalar64(2);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_matmul(&out, a, s), AG_ERR_SHAPE, "0-d operands are not allowed");
    ok &= EXPECT(ag_matmul(&out, s, s), AG_ERR_SHAPE, "0-d operands are not allowed");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(s);
    return ok;
}

static bool b28(void) { /* reshape: element counts differ */
    int64_t sa[] = {2, 3}, to[] = {4, 2}, inf[] = {4, -1};
    ag_tensor a = full(sa, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_reshape(&out, a, to, 2), AG_ERR_SHAPE,
                     "shape [4, 2] (8 elements) does not match [2, 3] (6 elements)");
    ok &= EXPECT(ag_reshape(&out, a, inf, 2), AG_ERR_SHAPE, "cannot infer the -1 extent");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b29(void) { /* reshape: two -1 extents */
    int64_t sa[] = {2, 3}, to[] = {-1, -1};
    ag_tensor a = full(sa, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_reshape(&out, a, to, 2), AG_ERR_ARGUMENT, "more than one extent is -1 in [-1, -1]");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b30(void) { /* squeeze of an axis whose extent is not 1 */
    int64_t sa[] = {2, 1, 3}, ax = 0;
    ag_tensor a = full(sa, 3, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_squeeze(&out, a, &ax, 1), AG_ERR_SHAPE, "axis 0 has extent 2, not 1");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b31(void) { /* unsqueeze beyond the maximum rank, or an axis outside -(rank+1)..rank */
    int64_t s8[8] = {1, 1, 1, 1, 1, 1, 1, 2}, s2[] = {2, 3};
    ag_tensor a = full(s8, 8, 1, AG_FLOAT32), b = full(s2, 2, 1, AG_FLOAT32);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_unsqueeze(&out, a, 0), AG_ERR_ARGUMENT, "the result would exceed the maximum rank 8");
    ok &= EXPECT(ag_unsqueeze(&out, b, 3), AG_ERR_ARGUMENT, "axis 3 is outside -3...2 for a tensor of rank 2");
    ok &= EXPECT(ag_unsqueeze(&out, b, -4), AG_ERR_ARGUMENT, "axis -4 is outside -3...2 for a tensor of rank 2");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(b);
    return ok;
}

static bool b32(void) { /* item of a tensor that does not have exactly one element */
    int64_t s[] = {2}, z[] = {0};
    ag_tensor a = full(s, 1, 1, AG_FLOAT64), e = full(z, 1, 1, AG_FLOAT64);
    double v = SENT_F64;
    bool ok = EXPECT(ag_tensor_item(&v, a), AG_ERR_SHAPE, "item() needs exactly one element, the tensor has shape [2]");
    ok &= EXPECT(ag_tensor_item(&v, e), AG_ERR_SHAPE, "needs exactly one element");
    ok &= CHECK(v == SENT_F64);
    release(a);
    release(e);
    return ok;
}

static bool b33(void) { /* cross_entropy: label count != N, logits not 2-D */
    int64_t s[] = {3, 4}, labels[] = {0, 1, 2, 3};
    ag_tensor a = full(s, 2, 0, AG_FLOAT64), v = full(s, 1, 0, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_cross_entropy(&out, a, labels, 2), AG_ERR_SHAPE, "2 labels for 3 rows of logits");
    ok &= EXPECT(ag_cross_entropy(&out, a, labels, 4), AG_ERR_SHAPE, "4 labels for 3 rows of logits");
    ok &= EXPECT(ag_cross_entropy(&out, v, labels, 3), AG_ERR_SHAPE, "logits must be (N, C), got [3]");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(v);
    return ok;
}

static bool b34(void) { /* max/min over an axis of extent 0 */
    int64_t s[] = {0, 3}, ax = 0;
    ag_tensor a = full(s, 2, 0, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_max(&out, a, &ax, 1, false), AG_ERR_SHAPE,
                     "cannot reduce over an axis of extent 0 (shape [0, 3])");
    ok &= EXPECT(ag_min(&out, a, NULL, 0, false), AG_ERR_SHAPE, "cannot reduce over an axis of extent 0");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b35(void) { /* concat / stack of shapes that do not fit; 0-d concat */
    int64_t sa[] = {2, 3}, sb[] = {2, 4};
    ag_tensor t[2] = {full(sa, 2, 1, AG_FLOAT64), full(sb, 2, 1, AG_FLOAT64)};
    ag_tensor s[2] = {scalar64(1), scalar64(2)};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_concat(&out, t, 2, 0), AG_ERR_SHAPE, "which does not fit [2, 3] along axis 0");
    ok &= EXPECT(ag_stack(&out, t, 2, 0), AG_ERR_SHAPE, "tensor 1 has shape [2, 4], tensor 0 has [2, 3]");
    ok &= EXPECT(ag_concat(&out, s, 2, 0), AG_ERR_SHAPE, "cannot concatenate 0-d tensors (use stack)");
    ok &= CHECK(out == SENT_HANDLE);
    for (int i = 0; i < 2; i++) {
        release(t[i]);
        release(s[i]);
    }
    return ok;
}

static bool b36(void) { /* init: rank 0, a zero fan */
    int64_t s[] = {0, 3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_init(&out, NULL, 0, AG_INIT_KAIMING_UNIFORM, 1, AG_FLOAT32), AG_ERR_SHAPE,
                     "a 0-d tensor has no fan-in");
    ok &= EXPECT(ag_tensor_init(&out, s, 2, AG_INIT_XAVIER_NORMAL, 1, AG_FLOAT32),
        AG_ERR_SHAPE, "shape [0, 3] has a zero fan");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

/* ========================================================================================== */
/* Dtypes                                                                                     */
/* ========================================================================================== */

static bool b37(void) { /* an unknown dtype */
    int64_t s[] = {2};
    ag_tensor out = SENT_HANDLE;
    double d[2] = {1, 2};
    bool ok = EXPECT(ag_tensor_zeros(&out, s, 1, 5),
        AG_ERR_DTYPE, "unknown dtype 5 (use AG_FLOAT32 = 1, AG_FLOAT64 = 2, AG_INT64 = 3 or AG_BOOL = 4)");
    ok &= EXPECT(ag_tensor_from_data(&out, d, s, 1, 0), AG_ERR_DTYPE, "unknown dtype 0");
    ok &= EXPECT(ag_tensor_arange(&out, 0, 3, 1, -1), AG_ERR_DTYPE, "unknown dtype -1");
    ok &= EXPECT(ag_tensor_eye(&out, 2, 2, 7), AG_ERR_DTYPE, "unknown dtype 7");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b38(void) { /* copy_data into an unknown dtype */
    int64_t s[] = {2};
    ag_tensor t = full(s, 1, 1, AG_FLOAT32);
    double buf[2] = {SENT_F64, SENT_F64};
    bool ok = EXPECT(ag_tensor_copy_data(buf, 2, 9, t), AG_ERR_DTYPE, "unknown dtype 9");
    ok &= CHECK(buf[0] == SENT_F64 && buf[1] == SENT_F64);
    release(t);
    return ok;
}

static bool b39(void) { /* operands of different dtypes */
    int64_t s[] = {2, 2};
    ag_tensor f = full(s, 2, 1, AG_FLOAT32), d = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    ag_tensor both[2] = {f, d};
    bool ok = EXPECT(ag_add(&out, f, d), AG_ERR_DTYPE, "operands have different dtypes (float32 and float64)");
    ok &= EXPECT(ag_matmul(&out, f, d), AG_ERR_DTYPE, "operands have different dtypes");
    ok &= EXPECT(ag_where(&out, f, f, d), AG_ERR_DTYPE, "a and b have different dtypes");
    ok &= EXPECT(ag_concat(&out, both, 2, 0), AG_ERR_DTYPE, "tensor 1 is float64, tensor 0 is float32");
    ok &= EXPECT(ag_linear(&out, f, d, AG_NULL_TENSOR), AG_ERR_DTYPE, "input is float32, weight is float64");
    ok &= CHECK(out == SENT_HANDLE);
    release(f);
    release(d);
    return ok;
}

static int32_t build_square_sum(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    (void)user_data;
    ag_tensor sq = AG_NULL_TENSOR;
    if (ag_mul(&sq, inputs[0], inputs[0]) != AG_OK) return 1;
    int32_t st = ag_sum(out, sq, NULL, 0, false);
    ag_tensor_free(sq);
    return st;
}

static bool b40(void) { /* gradcheck of a float32 input */
    int64_t s[] = {3};
    ag_tensor x = leaf_rg(full(s, 1, 0.5, AG_FLOAT32));
    bool passed = false;
    int64_t wi = SENT_I64;
    bool ok = EXPECT(ag_gradcheck(&passed, &wi, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, 1e-6, 1e-5, 1e-4),
                     AG_ERR_DTYPE, "inputs must be float64");
    ok &= CHECK(!passed && wi == SENT_I64);
    release(x);
    return ok;
}

static bool b41(void) { /* backward: a seed of the wrong dtype */
    int64_t s[] = {2};
    ag_tensor x = leaf_rg(full(s, 1, 1, AG_FLOAT64));
    ag_tensor y = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&y, x));
    ag_tensor seed = full(s, 1, 1, AG_FLOAT32);
    ok &= EXPECT(ag_backward(y, seed, true, false), AG_ERR_DTYPE, "the seed is float32 but the root is float64");
    ag_tensor g = SENT_HANDLE;
    ok &= OK(ag_tensor_grad(&g, x));
    ok &= CHECK(g == AG_NULL_TENSOR); /* nothing was accumulated */
    release(seed);
    release(y);
    release(x);
    return ok;
}

/* ========================================================================================== */
/* Axes and indices                                                                           */
/* ========================================================================================== */

static bool b42(void) { /* an axis out of range */
    int64_t s[] = {2, 3}, ax2 = 2, axm3 = -3;
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_sum(&out, a, &ax2, 1, false), AG_ERR_ARGUMENT, "axis 2 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_mean(&out, a, &axm3, 1, true), AG_ERR_ARGUMENT, "axis -3 is out of range");
    ok &= EXPECT(ag_var(&out, a, &ax2, 1, 1, false), AG_ERR_ARGUMENT, "axis 2 is out of range");
    ok &= EXPECT(ag_softmax(&out, a, 5), AG_ERR_ARGUMENT, "axis 5 is out of range");
    ok &= EXPECT(ag_log_softmax(&out, a, -3), AG_ERR_ARGUMENT, "axis -3 is out of range");
    ok &= EXPECT(ag_concat(&out, &a, 1, 2), AG_ERR_ARGUMENT, "out of range");
    ok &= EXPECT(ag_stack(&out, &a, 1, 4), AG_ERR_ARGUMENT, "out of range");
    ok &= EXPECT(ag_cumsum(&out, a, -3), AG_ERR_ARGUMENT, "axis -3 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_cumsum(&out, a, INT64_MIN), AG_ERR_ARGUMENT, "axis -9223372036854775808 is out of range");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b43(void) { /* a repeated axis */
    int64_t s[] = {2, 3}, axes[] = {0, -2}, sq[] = {1, 1};
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    int64_t s1[] = {1, 2};
    ag_tensor b = full(s1, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_sum(&out, a, axes, 2, false), AG_ERR_ARGUMENT, "axis -2 is repeated in [0, -2]");
    ok &= EXPECT(ag_logsumexp(&out, a, axes, 2, false), AG_ERR_ARGUMENT, "is repeated");
    ok &= EXPECT(ag_squeeze(&out, b, sq, 2), AG_ERR_ARGUMENT, "is repeated");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    release(b);
    return ok;
}

static bool b44(void) { /* axes NULL with naxes > 0 */
    int64_t s[] = {2, 3};
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_sum(&out, a, NULL, 1, false), AG_ERR_ARGUMENT, "axes is NULL but naxes is 1");
    ok &= EXPECT(ag_max(&out, a, NULL, 2, false), AG_ERR_ARGUMENT, "axes is NULL but naxes is 2");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b45(void) { /* naxes < 0 (or above AG_MAX_NDIM) */
    int64_t s[] = {2, 3}, ax = 0;
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_sum(&out, a, &ax, -1, false), AG_ERR_ARGUMENT, "naxes -1 is outside 0...8");
    ok &= EXPECT(ag_mean(&out, a, &ax, 9, false), AG_ERR_ARGUMENT, "naxes 9 is outside 0...8");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b46(void) { /* permute: not a permutation */
    int64_t s[] = {2, 3, 4}, rep[] = {0, 0, 1}, big[] = {0, 1, 3}, two[] = {1, 0};
    ag_tensor a = full(s, 3, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_permute(&out, a, rep, 3), AG_ERR_ARGUMENT, "[0, 0, 1] is not a permutation of the 3 axes");
    ok &= EXPECT(ag_permute(&out, a, big, 3), AG_ERR_ARGUMENT, "is not a permutation of the 3 axes");
    ok &= EXPECT(ag_permute(&out, a, two, 2), AG_ERR_ARGUMENT, "2 axes given for a tensor of rank 3");
    ok &= EXPECT(ag_permute(&out, a, NULL, 3), AG_ERR_ARGUMENT, "perm is NULL but n is 3");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b47(void) { /* transpose: an axis out of range */
    int64_t s[] = {2, 3};
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_transpose(&out, a, 0, 2), AG_ERR_ARGUMENT, "axes 0, 2 out of range for rank 2");
    ok &= EXPECT(ag_transpose(&out, a, -3, 0), AG_ERR_ARGUMENT, "out of range for rank 2");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b48(void) { /* slice: step 0 or negative, bad axis */
    int64_t s[] = {5};
    ag_tensor a = full(s, 1, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_slice(&out, a, 0, 0, 5, 0), AG_ERR_ARGUMENT, "step must be positive, got 0");
    ok &= EXPECT(ag_slice(&out, a, 0, 4, 0, -1), AG_ERR_ARGUMENT, "step must be positive, got -1");
    ok &= EXPECT(ag_slice(&out, a, 1, 0, 5, 1), AG_ERR_ARGUMENT, "axis 1 is out of range");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b49(void) { /* index_select: an index out of range */
    int64_t s[] = {3, 2}, hi[] = {0, 3}, lo[] = {-4};
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_index_select(&out, a, 0, hi, 2),
        AG_ERR_ARGUMENT, "index 3 is out of range for extent 3 of axis 0");
    ok &= EXPECT(ag_index_select(&out, a, 0, lo, 1), AG_ERR_ARGUMENT, "index -4 is out of range for extent 3");
    ok &= EXPECT(ag_index_select(&out, a, 2, hi, 1), AG_ERR_ARGUMENT, "axis 2 is out of range");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b50(void) { /* gather: an index out of range, index shape not fitting */
    int64_t s[] = {2, 3};
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    int64_t ishape[] = {1, 3}, idx[] = {0, 2, 1}, neg[] = {0, -1, 1}, big[] = {1, 4};
    int64_t idx4[4] = {0};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_gather(&out, a, 0, idx, ishape, 2),
        AG_ERR_ARGUMENT, "index 2 is out of range for extent 2 of axis 0");
    ok &= EXPECT(ag_gather(&out, a, 0, neg, ishape, 2), AG_ERR_ARGUMENT, "index -1 is out of range for extent 2");
    ok &= EXPECT(ag_gather(&out, a, 0, idx4, big, 2), AG_ERR_SHAPE, "index extent 4 exceeds the input's 3 on axis 1");
    ok &= EXPECT(ag_gather(&out, a, 0, idx, ishape, 1), AG_ERR_SHAPE, "the index has rank 1, the input rank 2");
    ok &= EXPECT(ag_gather(&out, a, 0, NULL, ishape, 2), AG_ERR_ARGUMENT, "index is NULL but its count is 3");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b51(void) { /* cross_entropy: a label out of range */
    int64_t s[] = {2, 3}, hi[] = {0, 3}, neg[] = {-1, 0};
    ag_tensor a = full(s, 2, 0, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_cross_entropy(&out, a, hi, 2), AG_ERR_ARGUMENT, "label 3 is out of range for 3 classes");
    ok &= EXPECT(ag_cross_entropy(&out, a, neg, 2), AG_ERR_ARGUMENT, "label -1 is out of range for 3 classes");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

/* ========================================================================================== */
/* Values                                                                                     */
/* ========================================================================================== */

static bool b52(void) { /* arange: step 0 */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_arange(&out, 0, 10, 0, AG_FLOAT64), AG_ERR_ARGUMENT, "arange: step must not be 0");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b53(void) { /* arange: a non-finite argument */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_arange(&out, 0, INFINITY, 1, AG_FLOAT64), AG_ERR_ARGUMENT,
                     "start, stop and step must be finite");
    ok &= EXPECT(ag_tensor_arange(&out, NAN, 1, 1, AG_FLOAT32), AG_ERR_ARGUMENT, "must be finite");
    ok &= EXPECT(ag_tensor_arange(&out, 0, 1, NAN, AG_FLOAT32), AG_ERR_ARGUMENT, "must be finite");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b54(void) { /* arange: more than 2^40 elements */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_arange(&out, 0, 1e300, 1, AG_FLOAT64), AG_ERR_ARGUMENT,
                     "elements is more than the 2^40 allowed");
    ok &= EXPECT(ag_tensor_arange(&out, 0, 1, 1e-300, AG_FLOAT64), AG_ERR_ARGUMENT, "the 2^40 allowed");
    ok &= CHECK(out == SENT_HANDLE);
    /* accepted: a step pointing away from stop gives an empty tensor, as numpy.arange */
    int64_t n = -1;
    ok &= OK(ag_tensor_arange(&out, 0, 10, -1, AG_FLOAT64));
    if (out != SENT_HANDLE) {
        ok &= OK(ag_tensor_numel(&n, out));
        ok &= CHECK(n == 0);
        release(out);
    }
    return ok;
}

static bool b55(void) { /* rand_normal: std < 0 or non-finite */
    int64_t s[] = {3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_rand_normal(&out, s, 1, 0, -1, 1, AG_FLOAT64), AG_ERR_ARGUMENT,
                     "need a finite mean and a finite std >= 0");
    ok &= EXPECT(ag_tensor_rand_normal(&out, s, 1, NAN, 1, 1, AG_FLOAT64), AG_ERR_ARGUMENT, "std >= 0");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b56(void) { /* rand_uniform: low > high or a non-finite bound */
    int64_t s[] = {3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_rand_uniform(&out, s, 1, 2, 1, 1, AG_FLOAT64),
        AG_ERR_ARGUMENT, "need finite low <= high");
    ok &= EXPECT(ag_tensor_rand_uniform(&out, s, 1, 0, INFINITY, 1, AG_FLOAT64),
        AG_ERR_ARGUMENT, "need finite low <= high");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b57(void) { /* var: correction < 0 */
    int64_t s[] = {4};
    ag_tensor a = full(s, 1, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_var(&out, a, NULL, 0, -1, false), AG_ERR_ARGUMENT, "correction -1 is negative");
    ok &= CHECK(out == SENT_HANDLE);
    release(a);
    return ok;
}

static bool b58(void) { /* init: an unknown kind */
    int64_t s[] = {4, 3};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_init(&out, s, 2, 9, 1, AG_FLOAT32),
        AG_ERR_ARGUMENT, "unknown initialiser kind 9 (use AG_INIT_*)");
    ok &= EXPECT(ag_tensor_init(&out, s, 2, 0, 1, AG_FLOAT32), AG_ERR_ARGUMENT, "unknown initialiser kind 0");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b59(void) { /* leaky_relu: a non-finite negative_slope; clamp: a nan bound */
    ag_tensor a = scalar64(-1);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_leaky_relu(&out, a, NAN), AG_ERR_ARGUMENT, "negative_slope must be finite");
    ok &= EXPECT(ag_leaky_relu(&out, a, -INFINITY), AG_ERR_ARGUMENT, "negative_slope must be finite");
    ok &= EXPECT(ag_clamp(&out, a, NAN, 1), AG_ERR_ARGUMENT, "a bound is nan");
    ok &= EXPECT(ag_clamp(&out, a, -INFINITY, NAN), AG_ERR_ARGUMENT, "a bound is nan");
    ok &= CHECK(out == SENT_HANDLE);
    /* accepted: +-INFINITY is no bound; min > max gives max */
    ag_tensor c = AG_NULL_TENSOR, d = AG_NULL_TENSOR;
    ok &= OK(ag_clamp(&c, a, -INFINITY, INFINITY));
    ok &= OK(ag_clamp(&d, a, 2, 1));
    if (ok) ok &= CHECK(item(c) == -1.0) && CHECK(item(d) == 1.0);
    release(c), release(d);
    release(a);
    return ok;
}

static bool b60(void) { /* accepted: NaN passes through the operations */
    double v[] = {NAN, 1.0};
    ag_tensor a = vec64(2, v);
    ag_tensor s = AG_NULL_TENSOR, m = AG_NULL_TENSOR, e = AG_NULL_TENSOR, sm = AG_NULL_TENSOR, mx = AG_NULL_TENSOR;
    bool ok = OK(ag_add_scalar(&s, a, 1));
    ok &= OK(ag_maximum_scalar(&m, a, 5)); /* nan in either operand gives nan */
    ok &= OK(ag_exp(&e, a));
    ok &= OK(ag_sum(&sm, a, NULL, 0, false));
    ok &= OK(ag_max(&mx, a, NULL, 0, false));
    double r[2];
    if (ok) {
        ok &= values(r, 2, s) && CHECK(isnan(r[0]) && r[1] == 2.0);
        ok &= values(r, 2, m) && CHECK(isnan(r[0]) && r[1] == 5.0);
        ok &= values(r, 2, e) && CHECK(isnan(r[0]) && fabs(r[1] - exp(1.0)) < 1e-15);
        ok &= CHECK(isnan(item(sm)));
        ok &= CHECK(isnan(item(mx)));
    }
    release(s), release(m), release(e), release(sm), release(mx);
    release(a);
    return ok;
}

static bool b61(void) { /* accepted: infinities and IEEE division and logarithm */
    double v[] = {1.0, -1.0, 0.0};
    ag_tensor a = vec64(3, v);
    ag_tensor z = scalar64(0.0);
    ag_tensor q = AG_NULL_TENSOR, l = AG_NULL_TENSOR, e = AG_NULL_TENSOR, r = AG_NULL_TENSOR;
    ag_tensor big = scalar64(1000.0);
    bool ok = OK(ag_div(&q, a, z));
    ok &= OK(ag_log(&l, a));
    ok &= OK(ag_exp(&e, big));
    ok &= OK(ag_sqrt(&r, a));
    double x[3];
    if (ok) {
        ok &= values(x, 3, q) && CHECK(is_pinf(x[0]) && is_ninf(x[1]) && isnan(x[2]));
        ok &= values(x, 3, l) && CHECK(x[0] == 0.0 && isnan(x[1]) && is_ninf(x[2]));
        ok &= CHECK(is_pinf(item(e)));
        ok &= values(x, 3, r) && CHECK(x[0] == 1.0 && isnan(x[1]) && x[2] == 0.0);
    }
    release(q), release(l), release(e), release(r);
    release(a), release(z), release(big);
    return ok;
}

static bool b62(void) { /* accepted: sigmoid and softplus stay finite at +-1000 */
    double v[] = {-1000.0, 1000.0};
    ag_tensor x = leaf_rg(vec64(2, v));
    ag_tensor sg = AG_NULL_TENSOR, sp = AG_NULL_TENSOR, t = AG_NULL_TENSOR, y = AG_NULL_TENSOR;
    bool ok = OK(ag_sigmoid(&sg, x));
    ok &= OK(ag_softplus(&sp, x));
    ok &= OK(ag_add(&t, sg, sp));
    ok &= OK(ag_sum(&y, t, NULL, 0, false));
    ok &= OK(ag_backward(y, AG_NULL_TENSOR, false, false));
    double r[2];
    ag_tensor g = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_grad(&g, x));
    if (ok) {
        ok &= values(r, 2, sg) && CHECK(r[0] == 0.0 && r[1] == 1.0);
        ok &= values(r, 2, sp) && CHECK(r[0] == 0.0 && r[1] == 1000.0);
        ok &= values(r, 2, g) && CHECK(isfinite(r[0]) && isfinite(r[1]) && fabs(r[1] - 1.0) < 1e-12 && r[0] == 0.0);
    }
    release(g);
    release(sg), release(sp), release(t), release(y);
    release(x);
    return ok;
}

static bool b63(void) { /* accepted: the mean over zero elements is nan */
    int64_t s[] = {0, 3};
    ag_tensor a = full(s, 2, 0, AG_FLOAT64);
    ag_tensor m = AG_NULL_TENSOR, sm = AG_NULL_TENSOR;
    bool ok = OK(ag_mean(&m, a, NULL, 0, false));
    ok &= OK(ag_sum(&sm, a, NULL, 0, false));
    if (ok) {
        ok &= CHECK(isnan(item(m)));
        ok &= CHECK(item(sm) == 0.0);
    }
    release(m), release(sm);
    release(a);
    return ok;
}

/* ========================================================================================== */
/* Graph misuse                                                                               */
/* ========================================================================================== */

static bool b64(void) { /* set_requires_grad on a result with recorded history */
    ag_tensor x = leaf_rg(scalar64(2));
    ag_tensor y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= EXPECT(ag_tensor_set_requires_grad(y, false),
        AG_ERR_STATE, "requires_grad can only be changed on leaf tensors");
    ok &= EXPECT(ag_tensor_set_requires_grad(y, true),
        AG_ERR_STATE, "requires_grad can only be changed on leaf tensors");
    bool rg = false;
    ok &= OK(ag_tensor_requires_grad(&rg, y));
    ok &= CHECK(rg);
    release(y);
    release(x);
    return ok;
}

static bool b65(void) { /* backward from a root that does not require grad */
    ag_tensor x = scalar64(2), y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, false, false), AG_ERR_STATE, "the root does not require grad");
    ok &= EXPECT(ag_backward(x, AG_NULL_TENSOR, false, false), AG_ERR_STATE, "the root does not require grad");
    release(y);
    release(x);
    return ok;
}

static bool b66(void) { /* backward from a non-scalar root without a seed */
    int64_t s[] = {3};
    ag_tensor x = leaf_rg(full(s, 1, 1, AG_FLOAT64)), y = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&y, x));
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, false, false), AG_ERR_STATE,
                 "a seed (gradient) is needed for a root that is not a scalar");
    ag_tensor g = SENT_HANDLE;
    ok &= OK(ag_tensor_grad(&g, x));
    ok &= CHECK(g == AG_NULL_TENSOR);
    /* the graph was not released by the failure: a seeded backward works */
    ag_tensor seed = full(s, 1, 1, AG_FLOAT64);
    ok &= OK(ag_backward(y, seed, false, false));
    ok &= OK(ag_tensor_grad(&g, x));
    double r[3];
    if (g && g != SENT_HANDLE) {
        ok &= values(r, 3, g) && CHECK(fabs(r[0] - exp(1.0)) < 1e-15);
        release(g);
    }
    release(seed);
    release(y);
    release(x);
    return ok;
}

static bool b67(void) { /* backward: a seed of the wrong shape */
    int64_t s[] = {3}, s2[] = {2};
    ag_tensor x = leaf_rg(full(s, 1, 1, AG_FLOAT64)), y = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&y, x));
    ag_tensor seed = full(s2, 1, 1, AG_FLOAT64);
    ok &= EXPECT(ag_backward(y, seed, false, false), AG_ERR_SHAPE, "the seed has shape [2] but the root has shape [3]");
    release(seed);
    release(y);
    release(x);
    return ok;
}

static bool b68(void) { /* backward a second time through a released graph */
    ag_tensor x = leaf_rg(scalar64(3)), y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= OK(ag_backward(y, AG_NULL_TENSOR, false, false));
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, false, false), AG_ERR_STATE,
                 "was already freed by an earlier backward; pass retain_graph = true");
    ag_tensor g = SENT_HANDLE;
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, &x, 1, false, false, false), AG_ERR_STATE, "was already freed");
    ok &= CHECK(g == SENT_HANDLE);
    ag_tensor acc = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_grad(&acc, x));
    if (acc) {
        ok &= CHECK(item(acc) == 6.0); /* accumulated once */
        release(acc);
    }
    release(y);
    release(x);
    return ok;
}

static bool b69(void) { /* ag_grad: an input the outputs do not use, without allow_unused */
    ag_tensor x = leaf_rg(scalar64(2)), u = leaf_rg(scalar64(5)), y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, x));
    ag_tensor in[2] = {x, u};
    ag_tensor g[2] = {SENT_HANDLE, SENT_HANDLE};
    ok &= EXPECT(ag_grad(g, &y, 1, NULL, in, 2, true, false, false),
        AG_ERR_STATE, "input 1 is not used to compute the outputs (pass allow_unused");
    ok &= CHECK(g[0] == SENT_HANDLE && g[1] == SENT_HANDLE);
    ok &= OK(ag_grad(g, &y, 1, NULL, in, 2, false, false, true)); /* accepted with allow_unused */
    ok &= CHECK(g[1] == AG_NULL_TENSOR);
    if (g[0] && g[0] != SENT_HANDLE) {
        ok &= CHECK(item(g[0]) == 4.0);
        release(g[0]);
    }
    release(y);
    release(x);
    release(u);
    return ok;
}

static bool b70(void) { /* ag_grad: an input or output that does not require grad */
    ag_tensor x = leaf_rg(scalar64(2)), c = scalar64(3), y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, x, c));
    ag_tensor g = SENT_HANDLE;
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, &c, 1, true, false, false), AG_ERR_STATE, "input 0 does not require grad");
    ok &= EXPECT(ag_grad(&g, &c, 1, NULL, &x, 1, true, false, false), AG_ERR_STATE, "the root does not require grad");
    ok &= CHECK(g == SENT_HANDLE);
    release(y);
    release(x);
    release(c);
    return ok;
}

static bool b71(void) { /* ag_grad: a seed that does not match its output */
    int64_t s[] = {2}, s3[] = {3};
    ag_tensor x = leaf_rg(full(s, 1, 1, AG_FLOAT64)), y = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&y, x));
    ag_tensor bad_shape = full(s3, 1, 1, AG_FLOAT64), bad_dtype = full(s, 1, 1, AG_FLOAT32);
    ag_tensor g = SENT_HANDLE;
    ok &= EXPECT(ag_grad(&g, &y, 1, &bad_shape, &x, 1, true, false, false),
        AG_ERR_SHAPE, "the seed has shape [3] but the root has shape [2]");
    ok &= EXPECT(ag_grad(&g, &y, 1, &bad_dtype, &x, 1, true, false, false),
        AG_ERR_DTYPE, "the seed is float32 but the root is float64");
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, &x, 1, true, false, false), AG_ERR_STATE, "a seed (gradient) is needed");
    ok &= CHECK(g == SENT_HANDLE);
    release(bad_shape), release(bad_dtype);
    release(y);
    release(x);
    return ok;
}

/* ========================================================================================== */
/* Callbacks                                                                                  */
/* ========================================================================================== */

static int g_destroyed;
static void count_destroy(void *user_data) {
    (void)user_data;
    g_destroyed++;
}
static int32_t hook_ok(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad, (void)user_data;
    return 0;
}
static int32_t hook_fail(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad, (void)user_data;
    return 7;
}
static int32_t hook_wrong_shape(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)grad, (void)user_data;
    int64_t s[] = {5};
    return ag_tensor_zeros(replacement, s, 1, AG_FLOAT64) == AG_OK ? 0 : 1;
}

static bool b72(void) { /* register_hook: hook NULL */
    ag_tensor x = leaf_rg(scalar64(1));
    int64_t id = SENT_I64;
    g_destroyed = 0;
    bool ok = EXPECT(ag_tensor_register_hook(&id, x, NULL, NULL, count_destroy), AG_ERR_ARGUMENT, "hook is NULL");
    ok &= CHECK(id == SENT_I64);
    ok &= CHECK(g_destroyed == 0); /* destroy is not called on failure */
    release(x);
    ok &= CHECK(g_destroyed == 0);
    return ok;
}

static bool b73(void) { /* register_hook on a tensor that does not require grad */
    ag_tensor x = scalar64(1);
    int64_t id = SENT_I64;
    g_destroyed = 0;
    bool ok = EXPECT(ag_tensor_register_hook(&id, x, hook_ok, NULL, count_destroy), AG_ERR_STATE,
                     "the tensor does not require grad, so no gradient will flow into it");
    ok &= CHECK(id == SENT_I64);
    ok &= CHECK(g_destroyed == 0);
    release(x);
    ok &= CHECK(g_destroyed == 0);
    return ok;
}

static bool b74(void) { /* remove_hook: an unknown id, or an id of another tensor */
    ag_tensor x = leaf_rg(scalar64(1)), z = leaf_rg(scalar64(2));
    int64_t id = -1;
    g_destroyed = 0;
    bool ok = OK(ag_tensor_register_hook(&id, x, hook_ok, NULL, count_destroy));
    ok &= EXPECT(ag_tensor_remove_hook(x, 987654321),
        AG_ERR_ARGUMENT, "no hook with id 987654321 is registered on this tensor");
    ok &= EXPECT(ag_tensor_remove_hook(z, id), AG_ERR_ARGUMENT, "no hook with id");
    ok &= CHECK(g_destroyed == 0);
    ok &= OK(ag_tensor_remove_hook(x, id));
    ok &= CHECK(g_destroyed == 1);
    ok &= EXPECT(ag_tensor_remove_hook(x, id), AG_ERR_ARGUMENT, "no hook with id"); /* removed twice */
    release(x), release(z);
    ok &= CHECK(g_destroyed == 1);
    return ok;
}

static bool b75(void) { /* a hook that returns non-zero */
    ag_tensor x = leaf_rg(scalar64(2)), y = AG_NULL_TENSOR;
    int64_t id = -1;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= OK(ag_tensor_register_hook(&id, x, hook_fail, NULL, NULL));
    char frag[64];
    snprintf(frag, sizeof frag, "gradient hook %" PRId64 " returned 7", id);
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, true, false), AG_ERR_CALLBACK, frag);
    ag_tensor g = SENT_HANDLE;
    ok &= EXPECT(ag_grad(&g, &y, 1, NULL, &x, 1, true, false, false), AG_ERR_CALLBACK, frag);
    ok &= CHECK(g == SENT_HANDLE);
    /* the process and the graph carry on: without the hook it works */
    ok &= OK(ag_tensor_remove_hook(x, id));
    ok &= OK(ag_grad(&g, &y, 1, NULL, &x, 1, false, false, false));
    if (g != SENT_HANDLE) {
        ok &= CHECK(item(g) == 4.0);
        release(g);
    }
    release(y), release(x);
    return ok;
}

static bool b76(void) { /* a hook whose replacement gradient has the wrong shape */
    ag_tensor x = leaf_rg(scalar64(2)), y = AG_NULL_TENSOR;
    int64_t live0 = -1, live1 = -2;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= OK(ag_tensor_register_hook(NULL, x, hook_wrong_shape, NULL, NULL));
    ok &= OK(ag_live_handle_count(&live0));
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, false, false),
        AG_ERR_SHAPE, "the replacement gradient is float64 [5], the gradient is float64 []");
    ok &= OK(ag_live_handle_count(&live1));
    ok &= CHECK(live0 == live1); /* the rejected replacement was freed by the library */
    ag_tensor g = SENT_HANDLE;
    ok &= OK(ag_tensor_grad(&g, x));
    ok &= CHECK(g == AG_NULL_TENSOR);
    release(y), release(x);
    return ok;
}

static int32_t build_fails(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)out, (void)inputs, (void)ninputs, (void)user_data;
    return 3;
}

static bool b77(void) { /* gradcheck: eps <= 0 or non-finite, atol/rtol < 0 */
    ag_tensor x = leaf_rg(scalar64(0.5));
    bool passed = false;
    bool ok = EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, 0, 1e-5, 1e-4),
                     AG_ERR_ARGUMENT, "eps must be positive and finite, got 0.0");
    ok &= EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, -1e-6, 1e-5, 1e-4),
                 AG_ERR_ARGUMENT, "eps must be positive and finite");
    ok &= EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, NAN, 1e-5, 1e-4),
                 AG_ERR_ARGUMENT, "eps must be positive and finite");
    ok &= EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, 1e-6, -1, 1e-4),
                 AG_ERR_ARGUMENT, "atol and rtol must not be negative");
    ok &= CHECK(!passed);
    release(x);
    return ok;
}

static bool b78(void) { /* gradcheck: the build function fails */
    ag_tensor x = leaf_rg(scalar64(0.5));
    bool passed = false;
    double wa = SENT_F64;
    bool ok = EXPECT(ag_gradcheck(&passed, NULL, NULL, &wa, NULL, build_fails, NULL, &x, 1, 1e-6, 1e-5, 1e-4),
                     AG_ERR_CALLBACK, "the build function returned 3");
    ok &= CHECK(!passed && wa == SENT_F64);
    release(x);
    return ok;
}

static bool b79(void) { /* gradcheck: build / passed / inputs NULL, ninputs < 1 */
    ag_tensor x = leaf_rg(scalar64(0.5));
    bool passed = false;
    bool ok = EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, NULL, NULL, &x, 1, 1e-6, 1e-5, 1e-4),
                     AG_ERR_ARGUMENT, "build is NULL");
    ok &= EXPECT(ag_gradcheck(NULL, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 1, 1e-6, 1e-5, 1e-4),
                 AG_ERR_ARGUMENT, "the output pointer 'passed' is NULL");
    ok &= EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, NULL, 1, 1e-6, 1e-5, 1e-4),
                 AG_ERR_ARGUMENT, "inputs is NULL but ninputs is 1");
    ok &= EXPECT(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build_square_sum, NULL, &x, 0, 1e-6, 1e-5, 1e-4),
                 AG_ERR_ARGUMENT, "at least one tensor is needed, ninputs is 0");
    ok &= CHECK(!passed);
    release(x);
    return ok;
}

/* ========================================================================================== */
/* Optimizers                                                                                 */
/* ========================================================================================== */

static bool b80(void) { /* a repeated parameter */
    ag_tensor p = leaf_rg(scalar64(1)), q = leaf_rg(scalar64(2));
    ag_tensor ps[3] = {p, q, p};
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_sgd(&opt, ps, 3, 0.1, 0, false, 0),
        AG_ERR_ARGUMENT, "parameter 2 repeats parameter 0");
    ok &= EXPECT(ag_optimizer_adam(&opt, ps, 3, 0.1, 0.9, 0.999, 1e-8, 0), AG_ERR_ARGUMENT, "repeats parameter");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p), release(q);
    return ok;
}

static bool b81(void) { /* a parameter that is not a leaf requiring grad */
    ag_tensor p = leaf_rg(scalar64(1)), y = AG_NULL_TENSOR, c = scalar64(1);
    bool ok = OK(ag_mul(&y, p, p));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    ag_tensor ps[2] = {p, y};
    ok &= EXPECT(ag_optimizer_sgd(&opt, ps, 2, 0.1, 0, false, 0),
        AG_ERR_STATE, "parameter 1 must be a leaf that requires grad");
    ok &= EXPECT(ag_optimizer_adamw(&opt, &c, 1, 0.1, 0.9, 0.999, 1e-8, 0.01),
        AG_ERR_STATE, "parameter 0 must be a leaf that requires grad");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(y), release(p), release(c);
    return ok;
}

static bool b82(void) { /* a negative or non-finite learning rate */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_sgd(&opt, &p, 1, -0.1, 0, false, 0),
        AG_ERR_ARGUMENT, "the learning rate must be finite and >= 0, got -0.1");
    ok &= EXPECT(ag_optimizer_adam(&opt, &p, 1, NAN, 0.9, 0.999, 1e-8, 0),
        AG_ERR_ARGUMENT, "the learning rate must be finite and >= 0");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p);
    return ok;
}

static bool b83(void) { /* Adam/AdamW: betas outside [0, 1) */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_adam(&opt, &p, 1, 0.1, 1.0, 0.999, 1e-8, 0),
        AG_ERR_ARGUMENT, "Adam: betas must be in [0, 1), got 1.0, 0.999");
    ok &= EXPECT(ag_optimizer_adamw(&opt, &p, 1, 0.1, 0.9, 1.5, 1e-8, 0), AG_ERR_ARGUMENT, "betas must be in [0, 1)");
    ok &= EXPECT(ag_optimizer_adam(&opt, &p, 1, 0.1, -0.1, 0.999, 1e-8, 0), AG_ERR_ARGUMENT, "betas must be in [0, 1)");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p);
    return ok;
}

static bool b84(void) { /* SGD: Nesterov without momentum */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0, true, 0),
        AG_ERR_ARGUMENT, "SGD: Nesterov momentum needs momentum > 0");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p);
    return ok;
}

static bool b85(void) { /* negative or non-finite momentum, weight decay, eps */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_sgd(&opt, &p, 1, 0.1, -0.9, false, 0),
        AG_ERR_ARGUMENT, "SGD: momentum and weight decay must be finite and >= 0");
    ok &= EXPECT(ag_optimizer_sgd(&opt, &p, 1, 0.1, 0, false, INFINITY),
        AG_ERR_ARGUMENT, "momentum and weight decay must be finite and >= 0");
    ok &= EXPECT(ag_optimizer_adam(&opt, &p, 1, 0.1, 0.9, 0.999, -1e-8, 0),
        AG_ERR_ARGUMENT, "Adam: eps and weight decay must be finite and >= 0");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p);
    return ok;
}

static bool b86(void) { /* optimizer: params NULL, n < 1, out NULL */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = (ag_optimizer)SENT_HANDLE;
    bool ok = EXPECT(ag_optimizer_sgd(&opt, NULL, 1, 0.1, 0, false, 0), AG_ERR_ARGUMENT, "params is NULL but n is 1");
    ok &= EXPECT(ag_optimizer_sgd(&opt, &p, 0, 0.1, 0, false, 0),
        AG_ERR_ARGUMENT, "at least one tensor is needed, n is 0");
    ok &= EXPECT(ag_optimizer_adam(NULL, &p, 1, 0.1, 0.9, 0.999, 1e-8, 0),
        AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= CHECK(opt == (ag_optimizer)SENT_HANDLE);
    release(p);
    return ok;
}

static bool b87(void) { /* set_lr: negative or non-finite */
    ag_tensor p = leaf_rg(scalar64(1));
    ag_optimizer opt = 0;
    bool ok = OK(ag_optimizer_sgd(&opt, &p, 1, 0.25, 0, false, 0));
    ok &= EXPECT(ag_optimizer_set_lr(opt, -1), AG_ERR_ARGUMENT, "the learning rate must be finite and >= 0, got -1.0");
    ok &= EXPECT(ag_optimizer_set_lr(opt, INFINITY), AG_ERR_ARGUMENT, "the learning rate must be finite and >= 0");
    double lr = -1;
    ok &= OK(ag_optimizer_lr(&lr, opt));
    ok &= CHECK(lr == 0.25); /* unchanged */
    ok &= OK(ag_optimizer_free(opt));
    release(p);
    return ok;
}

/* ========================================================================================== */
/* Memory                                                                                     */
/* ========================================================================================== */

static bool b88(void) { /* a byte count that overflows int64: {2^40, 2^20} float64 (2^63 bytes) */
    int64_t s[] = {INT64_C(1) << 40, INT64_C(1) << 20};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, s, 2, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY,
                     "cannot allocate 1152921504606846976 elements of float64: size overflows");
    ok &= EXPECT(ag_tensor_eye(&out, INT64_C(1) << 31, INT64_C(1) << 31, AG_FLOAT32),
        AG_ERR_OUT_OF_MEMORY, "size overflows");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b89(void) { /* a representable allocation too large to satisfy: 2^61 bytes */
    int64_t s[] = {INT64_C(1) << 58};                               /* float64: 2^61 bytes */
    int64_t s2[] = {INT64_C(1) << 29, INT64_C(1) << 30};            /* float64: 2^62 bytes */
    int64_t s3[] = {INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 19}; /* float32: 2^61 bytes */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, s, 1, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY,
                     "cannot allocate 2305843009213693952 bytes for 288230376151711744 elements of float64");
    ok &= EXPECT(ag_tensor_ones(&out, s2, 2, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= EXPECT(ag_tensor_full(&out, s3, 3, 2.0, AG_FLOAT32), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    int64_t s4[] = {(INT64_C(1) << 61) - 1}; /* float32: 2^63 - 4 bytes, within 4095 of INT64_MAX */
    ok &= EXPECT(ag_tensor_zeros(&out, s4, 1, AG_FLOAT32), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= EXPECT(ag_tensor_rand_uniform(&out, s, 1, 0, 1, 1, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= EXPECT(ag_tensor_init(&out, s2, 2, AG_INIT_KAIMING_NORMAL, 1, AG_FLOAT64),
        AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= EXPECT(ag_tensor_eye(&out, INT64_C(1) << 29, INT64_C(1) << 30, AG_FLOAT64),
        AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b90(void) { /* from_data with a huge shape: OOM before the data is read */
    int64_t s[] = {INT64_C(1) << 58};
    double one = 1.0; /* only one element really exists: the library must not read past it */
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_from_data(&out, &one, s, 1, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY, "cannot allocate");
    ok &= CHECK(out == SENT_HANDLE);
    return ok;
}

static bool b91(void) { /* an operation whose result is too large: expand {1} to {2^58} float64 */
    int64_t s[] = {INT64_C(1) << 58};
    ag_tensor a = leaf_rg(scalar64(1));
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_expand(&out, a, s, 1),
        AG_ERR_OUT_OF_MEMORY, "ag_expand: cannot allocate 2305843009213693952 bytes");
    ok &= CHECK(out == SENT_HANDLE);
    /* a is untouched and usable */
    ag_tensor y = AG_NULL_TENSOR;
    ok &= OK(ag_mul_scalar(&y, a, 3));
    ok &= OK(ag_backward(y, AG_NULL_TENSOR, false, false));
    ag_tensor g = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_grad(&g, a));
    if (g) {
        ok &= CHECK(item(g) == 3.0);
        release(g);
    }
    release(y), release(a);
    return ok;
}

/* ========================================================================================== */
/* Extremes                                                                                   */
/* ========================================================================================== */

static bool b92(void) { /* INT64_MIN / INT64_MAX as axes, indices, labels, capacities, ids */
    int64_t s[] = {3, 4}, mn = INT64_MIN, mx = INT64_MAX;
    ag_tensor a = full(s, 2, 1, AG_FLOAT64);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_sum(&out, a, &mn, 1, false), AG_ERR_ARGUMENT,
                     "axis -9223372036854775808 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_logsumexp(&out, a, &mx, 1, true), AG_ERR_ARGUMENT,
                 "axis 9223372036854775807 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_transpose(&out, a, INT64_MIN, 0), AG_ERR_ARGUMENT, "out of range for rank 2");
    ok &= EXPECT(ag_unsqueeze(&out, a, INT64_MAX), AG_ERR_ARGUMENT, "axis 9223372036854775807 is outside");
    ok &= EXPECT(ag_softmax(&out, a, INT64_MIN), AG_ERR_ARGUMENT, "axis -9223372036854775808 is out of range");
    ok &= EXPECT(ag_stack(&out, &a, 1, INT64_MAX), AG_ERR_ARGUMENT, "axis 9223372036854775807 is out of range");
    ok &= EXPECT(ag_index_select(&out, a, 0, &mn, 1), AG_ERR_ARGUMENT,
                 "index -9223372036854775808 is out of range for extent 3 of axis 0");
    int64_t idx[3] = {INT64_MIN, 0, 0}, is[2] = {1, 3}, perm[2] = {1, INT64_MAX}, labels[3] = {0, INT64_MIN, 0};
    ok &= EXPECT(ag_gather(&out, a, 0, idx, is, 2), AG_ERR_ARGUMENT, "index -9223372036854775808 is out of range");
    ok &= EXPECT(ag_permute(&out, a, perm, 2), AG_ERR_ARGUMENT, "[1, 9223372036854775807] is not a permutation");
    ok &= EXPECT(ag_cross_entropy(&out, a, labels, 3), AG_ERR_ARGUMENT,
                 "label -9223372036854775808 is out of range for 4 classes");
    ok &= EXPECT(ag_var(&out, a, NULL, 0, INT64_MIN, false), AG_ERR_ARGUMENT,
                 "correction -9223372036854775808 is negative");
    int64_t ext[2] = {INT64_MIN, 4};
    ok &= EXPECT(ag_expand(&out, a, ext, 2), AG_ERR_SHAPE, "negative extent -9223372036854775808");
    ok &= EXPECT(ag_tensor_eye(&out, INT64_MIN, 1, AG_FLOAT64), AG_ERR_SHAPE, "must not be negative");
    ok &= EXPECT(ag_tensor_eye(&out, INT64_MAX, 1, AG_FLOAT64), AG_ERR_OUT_OF_MEMORY, "size overflows");
    ok &= CHECK(out == SENT_HANDLE);
    int64_t shp[2] = {SENT_I64, SENT_I64};
    double buf[12];
    for (int i = 0; i < 12; i++) buf[i] = SENT_F64;
    ok &= EXPECT(ag_tensor_shape(shp, INT64_MIN, a), AG_ERR_ARGUMENT,
                 "capacity -9223372036854775808 is less than the rank 2");
    ok &= EXPECT(ag_tensor_copy_data(buf, INT64_MIN, AG_FLOAT64, a), AG_ERR_ARGUMENT,
                 "capacity -9223372036854775808 is negative");
    ok &= CHECK(shp[0] == SENT_I64 && shp[1] == SENT_I64 && buf[0] == SENT_F64);
    ok &= EXPECT(ag_tensor_remove_hook(a, INT64_MIN), AG_ERR_ARGUMENT, "no hook with id -9223372036854775808");
    ok &= EXPECT(ag_tensor_init(&out, s, 2, INT32_MIN, 1, AG_FLOAT32), AG_ERR_ARGUMENT,
                 "unknown initialiser kind -2147483648");
    ok &= EXPECT(ag_tensor_zeros(&out, s, 2, INT32_MIN), AG_ERR_DTYPE, "unknown dtype -2147483648");
    ok &= CHECK(out == SENT_HANDLE);
    /* accepted: slice bounds are clamped, whatever their size */
    int64_t n = -1;
    ok &= OK(ag_slice(&out, a, 0, INT64_MIN, INT64_MAX, 1));
    if (out != SENT_HANDLE) {
        ok &= OK(ag_tensor_numel(&n, out)) && CHECK(n == 12);
        release(out);
        out = SENT_HANDLE;
    }
    ok &= OK(ag_slice(&out, a, 1, INT64_MAX, INT64_MIN, INT64_MAX));
    if (out != SENT_HANDLE) {
        ok &= OK(ag_tensor_numel(&n, out)) && CHECK(n == 0);
        release(out);
    }
    release(a);
    return ok;
}

static bool b93(void) { /* an empty shape whose other extents overflow */
    int64_t s[] = {0, INT64_MAX, INT64_MAX}, rs[] = {INT64_C(1) << 32, INT64_C(1) << 32, 0};
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_zeros(&out, s, 3, AG_FLOAT64), AG_ERR_SHAPE,
                     "the element count of shape [0, 9223372036854775807, 9223372036854775807] overflows int64");
    ag_tensor e = AG_NULL_TENSOR;
    int64_t zero = 0;
    ok &= OK(ag_tensor_zeros(&e, &zero, 1, AG_FLOAT64));
    ok &= EXPECT(ag_reshape(&out, e, rs, 3), AG_ERR_SHAPE,
                 "the element count of shape [4294967296, 4294967296, 0] overflows int64");
    ok &= CHECK(out == SENT_HANDLE);
    /* an operation's result of such a shape: 7 rows picked from a {1, 2^62, 0} tensor */
    int64_t ws[] = {1, INT64_C(1) << 62, 0}, idx[7] = {0, 0, 0, 0, 0, 0, 0};
    ag_tensor w = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_zeros(&w, ws, 3, AG_FLOAT64));
    ok &= EXPECT(ag_index_select(&out, w, 0, idx, 7), AG_ERR_SHAPE,
                 "the element count of shape [7, 4611686018427387904, 0] overflows int64");
    ok &= CHECK(out == SENT_HANDLE);
    release(w);
    release(e);
    return ok;
}

static bool b94(void) { /* accepted: unknown status names, a NULL `previous` for grad mode */
    bool ok = CHECK(strcmp(ag_status_name(-1), "AG_UNKNOWN_STATUS") == 0);
    ok &= CHECK(strcmp(ag_status_name(11), "AG_UNKNOWN_STATUS") == 0);
    ok &= CHECK(strcmp(ag_status_name(INT32_MIN), "AG_UNKNOWN_STATUS") == 0);
    ok &= CHECK(strcmp(ag_status_name(AG_ERR_OUT_OF_MEMORY), "AG_ERR_OUT_OF_MEMORY") == 0);
    ok &= OK(ag_set_grad_enabled(NULL, false));
    bool on = true;
    ok &= OK(ag_is_grad_enabled(&on)) && CHECK(!on);
    ok &= OK(ag_set_grad_enabled(NULL, true));
    ok &= OK(ag_is_grad_enabled(&on)) && CHECK(on);
    return ok;
}

static bool b95(void) { /* a thread count out of range; the setting before it stays */
    int64_t before = 0, after = -1;
    bool ok = OK(ag_num_threads(&before)) && CHECK(before >= 1 && before <= 256);
    ok &= EXPECT(ag_set_num_threads(0), AG_ERR_ARGUMENT, "the thread count must be between 1 and 256, not 0");
    ok &= EXPECT(ag_set_num_threads(-5), AG_ERR_ARGUMENT, "the thread count must be between 1 and 256, not -5");
    ok &= EXPECT(ag_set_num_threads(257), AG_ERR_ARGUMENT, "the thread count must be between 1 and 256, not 257");
    ok &= EXPECT(ag_set_num_threads(INT64_MIN), AG_ERR_ARGUMENT, "not -9223372036854775808");
    ok &= EXPECT(ag_num_threads(NULL), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= OK(ag_num_threads(&after)) && CHECK(after == before);
    ok &= OK(ag_set_num_threads(1)) && OK(ag_num_threads(&after)) && CHECK(after == 1);
    ok &= OK(ag_set_num_threads(before));
    return ok;
}

static int32_t hook_backward_from(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad;
    /* its status is the outer call's business: the outer backward is what must fail */
    (void)ag_backward(*(ag_tensor *)user_data, AG_NULL_TENSOR, false, false);
    return 0;
}

static bool b96(void) { /* a hook's backward (no retain_graph) frees part of the running pass's graph */
    ag_tensor x = leaf_rg(scalar64(3)), m = AG_NULL_TENSOR, e = AG_NULL_TENSOR, l = AG_NULL_TENSOR;
    ag_tensor two = scalar64(2);
    bool ok = OK(ag_mul(&m, x, x)) && OK(ag_mul(&e, m, two)) && OK(ag_sum(&l, m, NULL, 0, false));
    ok &= OK(ag_tensor_register_hook(NULL, l, hook_backward_from, &e, NULL));
    ok &= EXPECT(ag_backward(l, AG_NULL_TENSOR, false, false), AG_ERR_STATE,
                 "was freed during this backward, by a backward run from a hook");
    /* the nested backward's own gradient landed: d(2 x^2)/dx = 4x = 12 */
    ag_tensor g = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_grad(&g, x));
    if (g != AG_NULL_TENSOR) {
        ok &= CHECK(item(g) == 12.0);
        release(g);
    }
    release(l), release(e), release(m), release(two), release(x);
    return ok;
}

static bool b97(void) { /* ag_tensor_copy_ misuse: a recorded result, a parameter with grad mode on, dtype, shape */
    ag_tensor x = leaf_rg(scalar64(3)), m = AG_NULL_TENSOR, v = scalar64(5), f = AG_NULL_TENSOR, row = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&m, x, x)) && OK(ag_tensor_zeros(&f, NULL, 0, AG_FLOAT32)) &&
              OK(ag_tensor_zeros(&row, (int64_t[]){3}, 1, AG_FLOAT64));
    ok &= EXPECT(ag_tensor_copy_(m, v), AG_ERR_STATE, "in-place write into the result of 'mul'");
    ok &= EXPECT(ag_tensor_copy_(x, v), AG_ERR_STATE, "while grad mode is on");
    ok &= CHECK(item(x) == 3.0); /* nothing written */
    ok &= EXPECT(ag_tensor_copy_(v, f), AG_ERR_DTYPE, "the source is float32 but the tensor is float64");
    ok &= EXPECT(ag_tensor_copy_(v, row), AG_ERR_SHAPE, "cannot be expanded to []");
    ok &= EXPECT(ag_tensor_copy_(AG_NULL_TENSOR, v), AG_ERR_INVALID_HANDLE, "dst handle is 0");
    release(x), release(m), release(v), release(f), release(row);
    return ok;
}

static bool b98(void) { /* a backward through values written in place since they were saved */
    ag_tensor x = leaf_rg(scalar64(3)), m = AG_NULL_TENSOR, l = AG_NULL_TENSOR, v = scalar64(-1);
    bool ok = OK(ag_mul(&m, x, x)) && OK(ag_sum(&l, m, NULL, 0, false)) && OK(ag_backward(l, AG_NULL_TENSOR, true, false));
    bool prev = true;
    ok &= OK(ag_set_grad_enabled(&prev, false)) && OK(ag_tensor_copy_(x, v)) && OK(ag_set_grad_enabled(NULL, prev));
    ok &= EXPECT(ag_backward(l, AG_NULL_TENSOR, true, false), AG_ERR_STATE,
                 "a value saved by 'mul' for backward was modified in place after it was saved");
    ag_tensor g = AG_NULL_TENSOR;
    ok &= OK(ag_tensor_grad(&g, x));
    if (g != AG_NULL_TENSOR) { /* the first pass's 2x = 6 only: the refused pass added nothing */
        ok &= CHECK(item(g) == 6.0);
        release(g);
    }
    release(x), release(m), release(l), release(v);
    return ok;
}

/* ========================================================================================== */
/* Function transforms                                                                        */
/* ========================================================================================== */

/* sin(x): one build function for the transforms' entries; user_data counts its calls. */
static int32_t build_sin(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    if (user_data) ++*(int *)user_data;
    return ag_sin(out, inputs[0]);
}

/* Each way a build function breaks its contract (B103), chosen by *(int *)user_data. */
static int32_t build_broken(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    switch (*(int *)user_data) {
    case 0: return 3;
    case 1: return 0; /* nothing written */
    case 2: *out = (ag_tensor)0x0123456789ABCDEFULL; return 0;
    default: {
        int32_t st = ag_mul(out, inputs[0], inputs[0]);
        ag_tensor_free(inputs[0]);
        return st;
    }
    }
}

/* sum(x^2) on its first call, then 2 x (more elements): changes its output (B104). */
static int32_t build_grows(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    int *calls = user_data;
    if (++*calls == 1) return build_square_sum(out, inputs, ninputs, NULL);
    return ag_mul_scalar(out, inputs[0], 2.0);
}

/* Calls a forward-mode transform (chosen by *(int *)user_data) on its input, and returns that
 * call's status (B105). */
static int32_t build_forward_inside(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    int which = *(int *)user_data;
    ag_tensor y = AG_NULL_TENSOR;
    ag_status st;
    switch (which) {
    case 0: st = ag_jvp(&y, out, build_square_sum, NULL, inputs, 1, inputs); break;
    case 1: st = ag_hvp(out, build_square_sum, NULL, inputs[0], inputs[0]); break;
    case 2: st = ag_hessian(out, build_square_sum, NULL, inputs[0]); break;
    case 3: st = ag_jacobian(out, build_sin, NULL, inputs[0], AG_JACOBIAN_REVERSE); break;
    default: st = ag_jacobian(out, build_sin, NULL, inputs[0], AG_JACOBIAN_FORWARD); break;
    }
    if (y) ag_tensor_free(y);
    return st;
}

static bool b99(void) { /* ag_jvp: a tangent of another shape or dtype than its primal */
    ag_tensor x = vec64(3, (double[]){1, 2, 3}), t2 = vec64(2, (double[]){1, 1}), t32 = full((int64_t[]){3}, 1, 1, AG_FLOAT32);
    ag_tensor o = SENT_HANDLE, ot = SENT_HANDLE;
    int calls = 0;
    bool ok = EXPECT(ag_jvp(&o, &ot, build_sin, &calls, (ag_tensor[]){x, x}, 2, (ag_tensor[]){x, t2}), AG_ERR_SHAPE,
                     "ag_jvp: tangent 1 has shape [2] but its primal has shape [3]");
    ok &= EXPECT(ag_jvp(&o, &ot, build_sin, &calls, &x, 1, &t32), AG_ERR_DTYPE,
                 "tangent 0 is float32 but its primal is float64");
    ok &= CHECK(o == SENT_HANDLE && ot == SENT_HANDLE && calls == 0);
    release(x), release(t2), release(t32);
    return ok;
}

static bool b100(void) { /* ag_vjp: a cotangent of another shape or dtype than the output */
    ag_tensor x = vec64(3, (double[]){1, 2, 3}), c2 = vec64(2, (double[]){1, 1}), c32 = full((int64_t[]){3}, 1, 1, AG_FLOAT32);
    ag_tensor o = SENT_HANDLE, g = SENT_HANDLE;
    bool ok = EXPECT(ag_vjp(&o, &g, build_sin, NULL, &x, 1, c2), AG_ERR_SHAPE,
                     "ag_vjp: the cotangent has shape [2] but the function's output has shape [3]");
    ok &= EXPECT(ag_vjp(&o, &g, build_sin, NULL, &x, 1, c32), AG_ERR_DTYPE,
                 "the cotangent is float32 but the function's output is float64");
    ok &= CHECK(o == SENT_HANDLE && g == SENT_HANDLE);
    release(x), release(c2), release(c32);
    return ok;
}

static bool b101(void) { /* ag_hvp: v of another shape or dtype than the input */
    ag_tensor x = vec64(3, (double[]){1, 2, 3}), v2 = vec64(2, (double[]){1, 1}), v32 = full((int64_t[]){3}, 1, 1, AG_FLOAT32);
    ag_tensor o = SENT_HANDLE;
    bool ok = EXPECT(ag_hvp(&o, build_square_sum, NULL, x, v2), AG_ERR_SHAPE,
                     "ag_hvp: v has shape [2] but the input has shape [3]");
    ok &= EXPECT(ag_hvp(&o, build_square_sum, NULL, x, v32), AG_ERR_DTYPE, "v is float32 but the input is float64");
    ok &= CHECK(o == SENT_HANDLE);
    release(x), release(v2), release(v32);
    return ok;
}

static bool b102(void) { /* ag_hvp / ag_hessian of a function of more than one element */
    ag_tensor x = vec64(3, (double[]){1, 2, 3});
    ag_tensor o = SENT_HANDLE;
    bool ok = EXPECT(ag_hvp(&o, build_sin, NULL, x, x), AG_ERR_SHAPE,
                     "ag_hvp: the function must return one element (a scalar), it returned shape [3]");
    ok &= EXPECT(ag_hessian(&o, build_sin, NULL, x), AG_ERR_SHAPE,
                 "ag_hessian: the function must return one element (a scalar), it returned shape [3]");
    ok &= CHECK(o == SENT_HANDLE);
    release(x);
    return ok;
}

static bool b103(void) { /* a transform whose build function breaks its contract */
    static const char *const frags[] = {"the build function returned 3", "wrote no tensor handle to *out",
                                        "is not a live tensor handle", "freed its input handle 0"};
    ag_tensor x = vec64(2, (double[]){0.5, 2}), v = vec64(2, (double[]){1, -1});
    bool ok = true;
    for (int k = 0; k < 4; k++) {
        ag_tensor o = SENT_HANDLE, o2 = SENT_HANDLE;
        ok &= EXPECT(ag_jvp(&o, &o2, build_broken, &k, &x, 1, &v), AG_ERR_CALLBACK, frags[k]);
        ok &= EXPECT(ag_vjp(&o, &o2, build_broken, &k, &x, 1, v), AG_ERR_CALLBACK, frags[k]);
        ok &= EXPECT(ag_jacobian(&o, build_broken, &k, x, AG_JACOBIAN_REVERSE), AG_ERR_CALLBACK, frags[k]);
        ok &= EXPECT(ag_jacobian(&o, build_broken, &k, x, AG_JACOBIAN_FORWARD), AG_ERR_CALLBACK, frags[k]);
        ok &= EXPECT(ag_hvp(&o, build_broken, &k, x, v), AG_ERR_CALLBACK, frags[k]);
        ok &= EXPECT(ag_hessian(&o, build_broken, &k, x), AG_ERR_CALLBACK, frags[k]);
        ok &= CHECK(o == SENT_HANDLE && o2 == SENT_HANDLE);
    }
    release(x), release(v);
    return ok;
}

static bool b104(void) { /* forward-mode ag_jacobian / ag_hessian: an output that changes between calls */
    ag_tensor x = vec64(2, (double[]){0.5, 2});
    ag_tensor o = SENT_HANDLE;
    int calls = 0;
    bool ok = EXPECT(ag_jacobian(&o, build_grows, &calls, x, AG_JACOBIAN_FORWARD), AG_ERR_CALLBACK,
                     "the function's output changed between calls: float64 [] on call 1, float64 [2] on call 2");
    calls = 0;
    ok &= EXPECT(ag_hessian(&o, build_grows, &calls, x), AG_ERR_CALLBACK,
                 "the function's output changed between calls: float64 [] on call 1, float64 [2] on call 2");
    ok &= CHECK(o == SENT_HANDLE);
    release(x);
    return ok;
}

static bool b105(void) { /* a forward-mode pass inside a forward-mode pass */
    ag_tensor x = vec64(2, (double[]){0.5, 2}), v = vec64(2, (double[]){1, -1});
    bool ok = true;
    for (int k = 0; k < 5; k++) {
        ag_tensor o = SENT_HANDLE, o2 = SENT_HANDLE;
        /* The inner call's status is the build function's return value, quoted by the outer call. */
        ok &= EXPECT(ag_jvp(&o, &o2, build_forward_inside, &k, &x, 1, &v), AG_ERR_CALLBACK,
                     "returned 5 (its last error: ");
        ok &= CHECK(strstr(ag_last_error(), "a forward-mode pass is already running on this thread") != NULL);
        ok &= CHECK(o == SENT_HANDLE && o2 == SENT_HANDLE);
    }
    release(x), release(v);
    return ok;
}

static bool b106(void) { /* ag_jacobian: an unknown mode */
    ag_tensor x = vec64(2, (double[]){0.5, 2});
    ag_tensor o = SENT_HANDLE;
    bool ok = EXPECT(ag_jacobian(&o, build_sin, NULL, x, 3), AG_ERR_ARGUMENT,
                     "unknown Jacobian mode 3 (use AG_JACOBIAN_REVERSE = 1 or AG_JACOBIAN_FORWARD = 2)");
    ok &= EXPECT(ag_jacobian(&o, build_sin, NULL, x, 0), AG_ERR_ARGUMENT, "unknown Jacobian mode 0");
    ok &= EXPECT(ag_jacobian(&o, build_sin, NULL, x, INT32_MIN), AG_ERR_ARGUMENT, "unknown Jacobian mode -2147483648");
    ok &= CHECK(o == SENT_HANDLE);
    release(x);
    return ok;
}

static bool b107(void) { /* a Jacobian or Hessian of rank above AG_MAX_NDIM */
    ag_tensor x = full((int64_t[]){1, 1, 1, 1, 2}, 5, 0.5, AG_FLOAT64);
    ag_tensor o = SENT_HANDLE;
    int calls = 0;
    bool ok = EXPECT(ag_jacobian(&o, build_sin, NULL, x, AG_JACOBIAN_REVERSE), AG_ERR_SHAPE,
                     "the result's shape [1, 1, 1, 1, 2, 1, 1, 1, 1, 2] has rank 10, more than the 8 allowed");
    ok &= EXPECT(ag_hessian(&o, build_sin, &calls, x), AG_ERR_SHAPE, "has rank 10, more than the 8 allowed");
    ok &= CHECK(o == SENT_HANDLE && calls == 0);
    release(x);
    return ok;
}

static bool b108(void) { /* NULL pointers and bad counts in ag_jvp / ag_vjp; build NULL */
    ag_tensor x = vec64(2, (double[]){0.5, 2});
    ag_tensor o = SENT_HANDLE, o2 = SENT_HANDLE;
    bool ok = EXPECT(ag_jvp(&o, &o2, build_sin, NULL, &x, 1, NULL), AG_ERR_ARGUMENT, "tangents is NULL but nprimals is 1");
    ok &= EXPECT(ag_jvp(&o, &o2, build_sin, NULL, NULL, 1, &x), AG_ERR_ARGUMENT, "primals is NULL but nprimals is 1");
    ok &= EXPECT(ag_jvp(&o, &o2, build_sin, NULL, &x, 0, &x), AG_ERR_ARGUMENT, "at least one tensor is needed, nprimals is 0");
    ok &= EXPECT(ag_jvp(&o, NULL, build_sin, NULL, &x, 1, &x), AG_ERR_ARGUMENT, "the output pointer 'output_tangent' is NULL");
    ok &= EXPECT(ag_vjp(&o, NULL, build_sin, NULL, &x, 1, x), AG_ERR_ARGUMENT, "the output pointer 'grads' is NULL");
    ok &= EXPECT(ag_vjp(NULL, &o2, build_sin, NULL, &x, 1, x), AG_ERR_ARGUMENT, "the output pointer 'output' is NULL");
    ok &= EXPECT(ag_vjp(&o, &o2, build_sin, NULL, &x, -1, x), AG_ERR_ARGUMENT, "nprimals is -1");
    ok &= EXPECT(ag_jvp(&o, &o2, NULL, NULL, &x, 1, &x), AG_ERR_ARGUMENT, "ag_jvp: build is NULL");
    ok &= EXPECT(ag_vjp(&o, &o2, NULL, NULL, &x, 1, x), AG_ERR_ARGUMENT, "ag_vjp: build is NULL");
    ok &= EXPECT(ag_jacobian(&o, NULL, NULL, x, AG_JACOBIAN_REVERSE), AG_ERR_ARGUMENT, "ag_jacobian: build is NULL");
    ok &= EXPECT(ag_hvp(&o, NULL, NULL, x, x), AG_ERR_ARGUMENT, "ag_hvp: build is NULL");
    ok &= EXPECT(ag_hessian(&o, NULL, NULL, x), AG_ERR_ARGUMENT, "ag_hessian: build is NULL");
    ok &= CHECK(o == SENT_HANDLE && o2 == SENT_HANDLE);
    release(x);
    return ok;
}

/* ========================================================================================== */
/* Reusable graphs                                                                            */
/* ========================================================================================== */

/* A 2-input, 2-output capture function: out[0] = a * b, out[1] = sum(a * b), unless
 * user_data asks for a broken contract (see cap_mode). */
enum {
    CAP_GOOD,          /* as above */
    CAP_FAILS,         /* makes a failing call, then returns 7 */
    CAP_NO_HANDLE,     /* returns 0 without writing outputs[1] */
    CAP_DEAD_HANDLE,   /* writes a freed handle to outputs[1] */
    CAP_FREES_INPUT,   /* frees inputs[0] */
    CAP_HOOK,          /* a backward through `hooked` (a leaf with a hook) */
    CAP_HOOK_RESULT,   /* a backward through a result with a hook registered inside */
    CAP_HOOK_NONE,     /* the backward of CAP_HOOK, no hook */
    CAP_NESTED,        /* ag_capture inside */
    CAP_CALLS_FUNCTION /* ag_function_call of another function inside */
};
typedef struct {
    int mode;
    int calls;
    ag_status inner;   /* CAP_NESTED, CAP_CALLS_FUNCTION: the status of the inner call */
    ag_tensor hooked;  /* CAP_HOOK: a parameter with a hook */
    ag_function other; /* CAP_CALLS_FUNCTION */
    ag_function made;  /* CAP_NESTED: whatever the inner capture wrote */
} cap_ctx;

static int32_t cap_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                      void *user_data) {
    cap_ctx *c = user_data;
    c->calls++;
    if (noutputs != 2 || ninputs != 2) return 90;
    ag_tensor p = AG_NULL_TENSOR;
    switch (c->mode) {
    case CAP_FAILS: {
        ag_tensor bad = AG_NULL_TENSOR;
        (void)ag_add(&bad, inputs[0], (ag_tensor)0x0123456789ABCDEFULL);
        return 7;
    }
    case CAP_FREES_INPUT:
        (void)ag_tensor_free(inputs[0]);
        return 0;
    case CAP_NESTED:
        c->inner = ag_capture(&c->made, cap_fn, inputs, 2, 2, &(cap_ctx){CAP_GOOD, 0, 0, 0, 0, 0});
        return c->inner == AG_OK ? 0 : 5;
    case CAP_CALLS_FUNCTION: {
        ag_tensor o[2] = {SENT_HANDLE, SENT_HANDLE};
        c->inner = ag_function_call(o, 2, c->other, inputs, 2);
        if (c->inner == AG_OK) {
            ag_tensor_free(o[0]);
            ag_tensor_free(o[1]);
            return 0;
        }
        return 6;
    }
    default: break;
    }
    if (ag_mul(&p, inputs[0], inputs[1]) != AG_OK) return 91;
    if (c->mode == CAP_HOOK || c->mode == CAP_HOOK_RESULT || c->mode == CAP_HOOK_NONE) {
        ag_tensor q = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
        int64_t id = 0;
        ag_status st = ag_mul(&q, p, c->hooked);
        if (st == AG_OK && c->mode == CAP_HOOK_RESULT) st = ag_tensor_register_hook(&id, q, hook_ok, NULL, NULL);
        if (st == AG_OK) st = ag_sum(&s, q, NULL, 0, false);
        if (st == AG_OK) st = ag_backward(s, AG_NULL_TENSOR, false, false);
        ag_tensor_free(q);
        ag_tensor_free(s);
        ag_tensor_free(p);
        c->inner = st;
        if (st != AG_OK) return 8;
        /* Outputs: p's replacement a * b and the backward's loss are gone; return w * 1 and sum(w). */
        if (ag_mul_scalar(&outputs[0], c->hooked, 1) != AG_OK) return 93;
        return ag_sum(&outputs[1], c->hooked, NULL, 0, false) == AG_OK ? 0 : 94;
    }
    outputs[0] = p;
    if (c->mode == CAP_NO_HANDLE) return 0;
    if (ag_sum(&outputs[1], p, NULL, 0, false) != AG_OK) return 92;
    if (c->mode == CAP_DEAD_HANDLE) ag_tensor_free(outputs[1]);
    return 0;
}

/* Two float64 leaves of shape [3] requiring grad, for the captures. */
static void cap_inputs(ag_tensor *in) {
    in[0] = leaf_rg(vec64(3, (double[]){1, 2, 3}));
    in[1] = leaf_rg(vec64(3, (double[]){0.5, -1, 2}));
}

/* A good capture of cap_fn on in. */
static ag_function cap_good(const ag_tensor *in) {
    ag_function f = AG_NULL_FUNCTION;
    if (ag_capture(&f, cap_fn, in, 2, 2, &(cap_ctx){CAP_GOOD, 0, 0, 0, 0, 0}) != AG_OK)
        FAIL("setup: ag_capture: %s", ag_last_error());
    return f;
}

static void release_function(ag_function f) {
    if (ag_function_free(f) != AG_OK) FAIL("cleanup: ag_function_free: %s", ag_last_error());
}

/* out[0] = a * b, out[1] = a + b: two outputs of one shape. */
static int32_t cap_fn2(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                       void *user_data) {
    (void)user_data;
    if (noutputs != 2 || ninputs != 2) return 90;
    if (ag_mul(&outputs[0], inputs[0], inputs[1]) != AG_OK) return 91;
    return ag_add(&outputs[1], inputs[0], inputs[1]) == AG_OK ? 0 : 92;
}

static bool b109(void) { /* ag_tensor_set_data: a count other than numel, data NULL, an unknown dtype */
    ag_tensor t = full((int64_t[]){2, 3}, 2, 1.5, AG_FLOAT64);
    double d[6] = {1, 2, 3, 4, 5, 6}, got[6];
    bool ok = EXPECT(ag_tensor_set_data(t, d, 5, AG_FLOAT64), AG_ERR_ARGUMENT,
                     "ag_tensor_set_data: count 5 does not match the tensor's 6 elements");
    ok &= EXPECT(ag_tensor_set_data(t, d, 7, AG_FLOAT32), AG_ERR_ARGUMENT, "count 7 does not match the tensor's 6 elements");
    ok &= EXPECT(ag_tensor_set_data(t, d, -1, AG_FLOAT64), AG_ERR_ARGUMENT, "count -1 does not match");
    ok &= EXPECT(ag_tensor_set_data(t, NULL, 6, AG_FLOAT64), AG_ERR_ARGUMENT, "data is NULL");
    ok &= EXPECT(ag_tensor_set_data(t, d, 6, 5), AG_ERR_DTYPE, "unknown dtype");
    ok &= EXPECT(ag_tensor_set_data(t, d, 6, 0), AG_ERR_DTYPE, "unknown dtype 0");
    ok &= values(got, 6, t);
    for (int i = 0; i < 6; i++) ok &= CHECK(got[i] == 1.5); /* nothing written */
    /* accepted: an empty tensor with data NULL and count 0 */
    ag_tensor e = full((int64_t[]){0, 3}, 2, 0, AG_FLOAT64);
    ok &= OK(ag_tensor_set_data(e, NULL, 0, AG_FLOAT64));
    release(t), release(e);
    return ok;
}

static bool b110(void) { /* ag_tensor_set_data into a result, or into a leaf requiring grad with grad mode on */
    ag_tensor x = leaf_rg(vec64(2, (double[]){1, 2})), y = AG_NULL_TENSOR;
    double d[2] = {7, 8}, got[2];
    bool ok = OK(ag_exp(&y, x));
    ok &= EXPECT(ag_tensor_set_data(y, d, 2, AG_FLOAT64), AG_ERR_STATE, "only leaves can be written in place");
    ok &= EXPECT(ag_tensor_set_data(x, d, 2, AG_FLOAT64), AG_ERR_STATE, "the write would not be recorded");
    ok &= values(got, 2, x);
    ok &= CHECK(got[0] == 1 && got[1] == 2);
    /* With grad mode off the leaf can be written. */
    bool prev = true;
    ok &= OK(ag_set_grad_enabled(&prev, false));
    ok &= OK(ag_tensor_set_data(x, d, 2, AG_FLOAT64));
    ok &= OK(ag_set_grad_enabled(NULL, prev));
    ok &= values(got, 2, x);
    ok &= CHECK(got[0] == 7 && got[1] == 8);
    release(y), release(x);
    return ok;
}

static bool b111(void) { /* ag_recompute of a graph recorded while recomputable graphs were off */
    ag_tensor x = leaf_rg(vec64(2, (double[]){1, 2})), y = AG_NULL_TENSOR;
    bool was = true;
    bool ok = OK(ag_set_recomputable(&was, false));
    ok &= OK(ag_exp(&y, x));
    ok &= EXPECT(ag_recompute(y), AG_ERR_STATE, "was recorded without its forward");
    ok &= OK(ag_set_recomputable(NULL, was));
    release(y), release(x);
    return ok;
}

static bool b112(void) { /* ag_recompute of a graph freed by a backward without retain_graph */
    ag_tensor x = leaf_rg(vec64(2, (double[]){1, 2})), y = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    bool was = false;
    bool ok = OK(ag_set_recomputable(&was, true));
    ok &= OK(ag_exp(&y, x));
    ok &= OK(ag_sum(&s, y, NULL, 0, false));
    ok &= OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    ok &= EXPECT(ag_recompute(s), AG_ERR_STATE, "was freed by a backward");
    ok &= OK(ag_set_recomputable(NULL, was));
    release(s), release(y), release(x);
    return ok;
}

static bool b113(void) { /* ag_capture: out or fn NULL, bad counts */
    ag_tensor in[2];
    cap_inputs(in);
    cap_ctx c = {CAP_GOOD, 0, 0, 0, 0, 0};
    ag_function f = (ag_function)SENT_HANDLE;
    bool ok = EXPECT(ag_capture(NULL, cap_fn, in, 2, 2, &c), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_capture(&f, NULL, in, 2, 2, &c), AG_ERR_ARGUMENT, "ag_capture: fn is NULL");
    ok &= EXPECT(ag_capture(&f, cap_fn, in, -1, 2, &c), AG_ERR_ARGUMENT, "ninputs -1 is negative");
    ok &= EXPECT(ag_capture(&f, cap_fn, NULL, 2, 2, &c), AG_ERR_ARGUMENT, "inputs is NULL but ninputs is 2");
    ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, 0, &c), AG_ERR_ARGUMENT, "noutputs 0 is outside 1...4096");
    ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, 4097, &c), AG_ERR_ARGUMENT, "noutputs 4097 is outside 1...4096");
    ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, -3, &c), AG_ERR_ARGUMENT, "noutputs -3 is outside 1...4096");
    ok &= CHECK(f == (ag_function)SENT_HANDLE && c.calls == 0);
    release(in[0]), release(in[1]);
    return ok;
}

static bool b114(void) { /* ag_capture: a function that fails, writes 0 or a dead handle, frees an input */
    static const int modes[] = {CAP_FAILS, CAP_NO_HANDLE, CAP_DEAD_HANDLE, CAP_FREES_INPUT};
    static const char *const frags[] = {"ag_capture: the function returned 7 (its last error: ag_add: ",
                                        "wrote no tensor handle to outputs[1]",
                                        "to outputs[1], which is not a live tensor handle",
                                        "freed inputs[0], a tensor handle it was given"};
    bool ok = true;
    for (int k = 0; k < 4; k++) {
        ag_tensor in[2];
        cap_inputs(in);
        cap_ctx c = {modes[k], 0, 0, 0, 0, 0};
        ag_function f = (ag_function)SENT_HANDLE;
        ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, 2, &c), AG_ERR_CALLBACK, frags[k]);
        ok &= CHECK(f == (ag_function)SENT_HANDLE && c.calls == 1);
        release(in[0]), release(in[1]); /* the caller's inputs are untouched, even by CAP_FREES_INPUT */
    }
    return ok;
}

static bool b115(void) { /* ag_capture: a backward that reaches a hook (on a leaf made outside, on a result) */
    bool ok = true;
    for (int k = 0; k < 2; k++) {
        ag_tensor in[2];
        cap_inputs(in);
        ag_tensor w = leaf_rg(vec64(3, (double[]){1, 1, 1}));
        int64_t id = 0;
        if (k == 0) ok &= OK(ag_tensor_register_hook(&id, w, hook_ok, NULL, NULL));
        cap_ctx c = {k == 0 ? CAP_HOOK : CAP_HOOK_RESULT, 0, 0, w, 0, 0};
        ag_function f = (ag_function)SENT_HANDLE;
        /* The backward inside gets AG_ERR_STATE; the capture quotes it (the function returns 8). */
        ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, 2, &c), AG_ERR_CALLBACK,
                     "the function returned 8 (its last error: ag_backward: capture: the backward reached a hook on ");
        ok &= CHECK(strstr(ag_last_error(), "hooks run user code on each backward and cannot be replayed") != NULL);
        ok &= CHECK(c.inner == AG_ERR_STATE && f == (ag_function)SENT_HANDLE && c.calls == 1);
        /* Without the hook the same function captures. */
        if (k == 0) ok &= OK(ag_tensor_remove_hook(w, id));
        c.mode = CAP_HOOK_NONE;
        ok &= OK(ag_capture(&f, cap_fn, in, 2, 2, &c));
        ok &= CHECK(f != (ag_function)SENT_HANDLE && c.inner == AG_OK);
        if (f != (ag_function)SENT_HANDLE) release_function(f);
        release(w), release(in[0]), release(in[1]);
    }
    return ok;
}

static bool b116(void) { /* a capture inside a capture; a captured function called inside a capture */
    ag_tensor in[2];
    cap_inputs(in);
    cap_ctx c = {CAP_NESTED, 0, 0, 0, 0, (ag_function)SENT_HANDLE};
    ag_function f = (ag_function)SENT_HANDLE;
    /* The inner call's status is the function's own; the outer call quotes its message. */
    bool ok = EXPECT(ag_capture(&f, cap_fn, in, 2, 2, &c), AG_ERR_CALLBACK, "the function returned 5");
    ok &= CHECK(strstr(ag_last_error(), "capture cannot be nested") != NULL);
    ok &= CHECK(c.inner == AG_ERR_STATE && c.made == (ag_function)SENT_HANDLE);
    ag_function other = cap_good(in);
    cap_ctx c2 = {CAP_CALLS_FUNCTION, 0, 0, 0, other, 0};
    ok &= EXPECT(ag_capture(&f, cap_fn, in, 2, 2, &c2), AG_ERR_CALLBACK, "the function returned 6");
    ok &= CHECK(strstr(ag_last_error(), "cannot be called inside a capture") != NULL);
    ok &= CHECK(c2.inner == AG_ERR_STATE && f == (ag_function)SENT_HANDLE);
    release_function(other);
    release(in[0]), release(in[1]);
    return ok;
}

static bool b117(void) { /* ag_function_call / _call_into: wrong counts, shapes, dtypes of inputs or outputs */
    ag_tensor in[2];
    cap_inputs(in);
    ag_function f = cap_good(in);
    ag_tensor x4 = vec64(4, (double[]){1, 2, 3, 4}), x32 = full((int64_t[]){3}, 1, 1, AG_FLOAT32);
    ag_tensor o[3] = {SENT_HANDLE, SENT_HANDLE, SENT_HANDLE};
    ag_tensor into[2] = {vec64(3, (double[]){0, 0, 0}), scalar64(0)};
    bool ok = EXPECT(ag_function_call(o, 2, f, in, 1), AG_ERR_ARGUMENT, "1 inputs for a function captured with 2");
    ok &= EXPECT(ag_function_call(o, 2, f, (ag_tensor[]){in[0], in[1], in[0]}, 3), AG_ERR_ARGUMENT,
                 "3 inputs for a function captured with 2");
    ok &= EXPECT(ag_function_call(o, 2, f, NULL, 2), AG_ERR_ARGUMENT, "inputs is NULL but ninputs is 2");
    ok &= EXPECT(ag_function_call(o, 2, f, in, -1), AG_ERR_ARGUMENT, "ninputs -1 is negative");
    ok &= EXPECT(ag_function_call(o, 1, f, in, 2), AG_ERR_ARGUMENT, "noutputs is 1, the function has 2 outputs");
    ok &= EXPECT(ag_function_call(o, 3, f, in, 2), AG_ERR_ARGUMENT, "noutputs is 3, the function has 2 outputs");
    ok &= EXPECT(ag_function_call(NULL, 2, f, in, 2), AG_ERR_ARGUMENT, "the output pointer 'outputs' is NULL");
    ok &= EXPECT(ag_function_call(o, 2, f, (ag_tensor[]){in[0], x4}, 2), AG_ERR_SHAPE,
                 "input 1 has shape [4], the function was captured with [3] (shapes are fixed per capture");
    ok &= EXPECT(ag_function_call(o, 2, f, (ag_tensor[]){x32, in[1]}, 2), AG_ERR_DTYPE,
                 "input 0 is float32, the function was captured with float64 (capture again for other dtypes)");
    ok &= CHECK(o[0] == SENT_HANDLE && o[1] == SENT_HANDLE && o[2] == SENT_HANDLE);
    ok &= EXPECT(ag_function_call_into(into, 2, f, in, 1), AG_ERR_ARGUMENT, "1 inputs for a function captured with 2");
    ok &= EXPECT(ag_function_call_into(into, 1, f, in, 2), AG_ERR_ARGUMENT, "noutputs is 1, the function has 2 outputs");
    ok &= EXPECT(ag_function_call_into(NULL, 2, f, in, 2), AG_ERR_ARGUMENT, "outputs is NULL but noutputs is 2");
    ok &= EXPECT(ag_function_call_into(into, 2, f, (ag_tensor[]){x4, in[1]}, 2), AG_ERR_SHAPE,
                 "shapes are fixed per capture");
    ok &= EXPECT(ag_function_call_into(into, 2, f, (ag_tensor[]){in[0], x32}, 2), AG_ERR_DTYPE,
                 "capture again for other dtypes");
    double got[3];
    ok &= values(got, 3, into[0]);
    ok &= CHECK(got[0] == 0 && got[1] == 0 && got[2] == 0 && item(into[1]) == 0); /* nothing written */
    /* The right call works after all that: a * b = (0.5, -2, 6), sum 4.5. */
    ok &= OK(ag_function_call_into(into, 2, f, in, 2));
    ok &= values(got, 3, into[0]);
    ok &= CHECK(got[0] == 0.5 && got[1] == -2 && got[2] == 6 && item(into[1]) == 4.5);
    release_function(f);
    release(x4), release(x32), release(into[0]), release(into[1]), release(in[0]), release(in[1]);
    return ok;
}

static bool b118(void) { /* a freed, made-up or tensor handle where a function is wanted, and the reverse */
    ag_tensor in[2];
    cap_inputs(in);
    ag_function f = cap_good(in), freed = cap_good(in);
    release_function(freed);
    ag_tensor o[2] = {SENT_HANDLE, SENT_HANDLE};
    int64_t info[AG_FUNCTION_INFO_COUNT];
    for (int i = 0; i < AG_FUNCTION_INFO_COUNT; i++) info[i] = SENT_I64;
    const ag_function bad[] = {freed, (ag_function)0x0123456789ABCDEFULL, (ag_function)in[0], (ag_function)UINT64_MAX};
    bool ok = true;
    for (int k = 0; k < 4; k++) {
        ok &= EXPECT(ag_function_call(o, 2, bad[k], in, 2), AG_ERR_INVALID_HANDLE, "is not a live function handle");
        ok &= EXPECT(ag_function_call_into(in, 2, bad[k], in, 2), AG_ERR_INVALID_HANDLE, "is not a live function handle");
        ok &= EXPECT(ag_function_info(info, AG_FUNCTION_INFO_COUNT, bad[k]), AG_ERR_INVALID_HANDLE,
                     "is not a live function handle");
        ok &= EXPECT(ag_function_free(bad[k]), AG_ERR_INVALID_HANDLE, "is not a live function handle");
    }
    ok &= EXPECT(ag_function_free(freed), AG_ERR_INVALID_HANDLE,
                 "ag_function_free: function handle 0x");
    ok &= EXPECT(ag_function_call(o, 2, AG_NULL_FUNCTION, in, 2), AG_ERR_INVALID_HANDLE,
                 "function handle is 0 (AG_NULL_FUNCTION)");
    ok &= CHECK(o[0] == SENT_HANDLE && o[1] == SENT_HANDLE && info[0] == SENT_I64);
    /* A function handle where a tensor is wanted: refused, and the function stays alive. */
    int64_t n = SENT_I64;
    ag_tensor out = SENT_HANDLE;
    ok &= EXPECT(ag_tensor_numel(&n, (ag_tensor)f), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= EXPECT(ag_exp(&out, (ag_tensor)f), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= EXPECT(ag_tensor_free((ag_tensor)f), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= EXPECT(ag_function_call(o, 2, f, (ag_tensor[]){(ag_tensor)f, in[1]}, 2), AG_ERR_INVALID_HANDLE,
                 "is not a live tensor handle");
    ok &= CHECK(n == SENT_I64 && out == SENT_HANDLE && o[0] == SENT_HANDLE);
    ok &= OK(ag_function_info(info, AG_FUNCTION_INFO_COUNT, f));
    release_function(f);
    ok &= OK(ag_function_free(AG_NULL_FUNCTION)); /* accepted */
    release(in[0]), release(in[1]);
    return ok;
}

static bool b119(void) { /* ag_function_call_into: an output of another shape or dtype, a result, shared values */
    ag_tensor in[2];
    cap_inputs(in);
    ag_function f = cap_good(in);
    ag_tensor a3 = vec64(3, (double[]){0, 0, 0}), a2 = vec64(2, (double[]){0, 0}), s = scalar64(0);
    ag_tensor rg = leaf_rg(scalar64(0)), res = AG_NULL_TENSOR, alias = AG_NULL_TENSOR;
    bool ok = OK(ag_exp(&res, rg));
    ok &= OK(ag_detach(&alias, a3));
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a2, s}, 2, f, in, 2), AG_ERR_SHAPE,
                 "output 0 is float64 [2], the function's output 0 is float64 [3]");
    /* An output of another dtype only (AG_ERR_DTYPE): see known_bugs_reusable.c. */
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a3, res}, 2, f, in, 2), AG_ERR_STATE,
                 "only leaves can be written in place");
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a3, rg}, 2, f, in, 2), AG_ERR_STATE,
                 "the write would not be recorded");
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a3, a3}, 2, f, in, 2), AG_ERR_SHAPE, "output 1 is float64 [3]");
    double got[3];
    ok &= values(got, 3, a3);
    ok &= CHECK(got[0] == 0 && got[1] == 0 && got[2] == 0 && item(s) == 0); /* nothing written */
    release_function(f);
    /* Two outputs sharing values need two outputs of one shape: out[0] = a * b, out[1] = a + b. */
    release(a2);
    ag_function g = AG_NULL_FUNCTION;
    ok &= OK(ag_capture(&g, cap_fn2, in, 2, 2, NULL));
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a3, a3}, 2, g, in, 2), AG_ERR_ARGUMENT,
                 "outputs 0 and 1 share their values");
    ok &= EXPECT(ag_function_call_into((ag_tensor[]){a3, alias}, 2, g, in, 2), AG_ERR_ARGUMENT,
                 "outputs 0 and 1 share their values");
    ok &= values(got, 3, a3);
    ok &= CHECK(got[0] == 0 && got[1] == 0 && got[2] == 0);
    release_function(g);
    release(a3), release(alias), release(s), release(res), release(rg), release(in[0]), release(in[1]);
    return ok;
}

/* ---- User-defined ops (B120 - B140) ---- */

/* What the op "cop" does wrong in each callback. */
enum {
    CB_OK,
    CB_RET7,          /* returns 7 */
    CB_SET_ERROR,     /* ag_set_error, then returns 7 */
    CB_FAILED_CALL,   /* a library call fails; returns its status */
    CB_NO_HANDLE,     /* returns 0, a slot left AG_NULL_TENSOR */
    CB_FREED,         /* writes a handle it freed */
    CB_MADE_UP,       /* writes a made-up handle */
    CB_OTHER_KIND,    /* writes the custom op's own handle */
    CB_SHAPE,         /* a tensor of the wrong shape */
    CB_DTYPE,         /* a tensor of the wrong dtype */
    CB_FREE_BORROWED, /* frees a handle it was given */
    CB_BROADCAST,     /* backward: a gradient of shape [3, 2] for the input [2] */
    CB_CTX_ARGS,      /* forward: the ag_custom_ctx_* calls with bad arguments */
    CB_SAVE,          /* ag_custom_ctx_save from the backward or the JVP */
    CB_KEEP_CTX       /* forward: keeps its context past its return */
};

typedef struct {
    int fwd, bwd, jvp;
    ag_custom_ctx kept;
    ag_custom_op self;
    int destroyed;
    int ncalls; /* the calls with bad arguments made inside a callback: status and message */
    ag_status st[12];
    char msg[12][400];
    ag_tensor wrote; /* what a ctx call wrote where it must not have */
} cop_cfg;

static void cop_record(cop_cfg *c, ag_status st) {
    if (c->ncalls < 12) {
        c->st[c->ncalls] = st;
        snprintf(c->msg[c->ncalls], sizeof c->msg[0], "%s", st != AG_OK ? ag_last_error() : "");
        c->ncalls++;
    }
}

static void cop_destroy(void *payload) { ((cop_cfg *)payload)->destroyed++; }

/* cop: x [2] -> (exp x, 2 x). */
static int32_t cop_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin;
    cop_cfg *c = payload;
    ag_tensor junk = SENT_HANDLE;
    switch (c->fwd) {
    case CB_RET7: return 7;
    case CB_SET_ERROR: ag_set_error("the series did not converge"); return 7;
    case CB_FAILED_CALL: return ag_exp(&junk, (ag_tensor)0x0123456789ABCDEFULL);
    case CB_KEEP_CTX: c->kept = ctx; break;
    case CB_SHAPE: /* as a replay's forward that gives other shapes than at the capture */
        if (ag_tensor_ones(&out[0], (int64_t[]){3}, 1, AG_FLOAT64) != AG_OK) return 90;
        return ag_tensor_ones(&out[1], (int64_t[]){3}, 1, AG_FLOAT64);
    case CB_CTX_ARGS: {
        ag_tensor t = SENT_HANDLE;
        bool b = false;
        cop_record(c, ag_custom_ctx_save(ctx, NULL, 1));
        cop_record(c, ag_custom_ctx_save(ctx, in, 0));
        cop_record(c, ag_custom_ctx_save(ctx, in, -1));
        cop_record(c, ag_custom_ctx_save(ctx, in, 1)); /* fine: one saved */
        cop_record(c, ag_custom_ctx_saved_count(NULL, ctx));
        cop_record(c, ag_custom_ctx_saved(&t, ctx, 1));
        cop_record(c, ag_custom_ctx_saved(&t, ctx, -1));
        cop_record(c, ag_custom_ctx_saved(NULL, ctx, 0));
        cop_record(c, ag_custom_ctx_needs_input_grad(&b, ctx, 1));
        cop_record(c, ag_custom_ctx_needs_input_grad(&b, ctx, INT64_MIN));
        cop_record(c, ag_custom_ctx_needs_input_grad(NULL, ctx, 0));
        c->wrote = t;
        break;
    }
    default: break;
    }
    ag_status st = ag_custom_ctx_save(ctx, in, 1);
    if (st == AG_OK) st = ag_exp(&out[0], in[0]);
    if (st != AG_OK) return st;
    switch (c->fwd) {
    case CB_NO_HANDLE: return 0;
    case CB_FREED:
        if (ag_mul_scalar(&out[1], in[0], 2) != AG_OK) return 90;
        ag_tensor_free(out[1]);
        return 0;
    case CB_MADE_UP: out[1] = (ag_tensor)0x0123456789ABCDEFULL; return 0;
    case CB_OTHER_KIND: out[1] = (ag_tensor)c->self; return 0;
    case CB_DTYPE: return ag_tensor_zeros(&out[1], (int64_t[]){2}, 1, AG_FLOAT32);
    case CB_FREE_BORROWED:
        st = ag_mul_scalar(&out[1], in[0], 2);
        ag_tensor_free(in[0]);
        return st;
    default: return ag_mul_scalar(&out[1], in[0], 2);
    }
}

/* d/dx = g0 exp x + 2 g1. */
static int32_t cop_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    (void)nin, (void)nout;
    cop_cfg *c = payload;
    switch (c->bwd) {
    case CB_RET7: return 7;
    case CB_SET_ERROR: ag_set_error("the adjoint did not converge"); return 7;
    case CB_FAILED_CALL: return ag_tensor_zeros(&gin[0], (int64_t[]){-2}, 1, AG_FLOAT64);
    case CB_NO_HANDLE: return 0;
    case CB_MADE_UP: gin[0] = (ag_tensor)0x0123456789ABCDEFULL; return 0;
    case CB_OTHER_KIND: gin[0] = (ag_tensor)c->self; return 0;
    case CB_SHAPE: return ag_tensor_ones(&gin[0], (int64_t[]){3}, 1, AG_FLOAT64);
    case CB_DTYPE: return ag_tensor_ones(&gin[0], (int64_t[]){2}, 1, AG_FLOAT32);
    case CB_FREE_BORROWED: ag_tensor_free(gout[0]); return ag_tensor_ones(&gin[0], (int64_t[]){2}, 1, AG_FLOAT64);
    case CB_SAVE: return ag_custom_ctx_save(ctx, gout, 1);
    default: break;
    }
    ag_tensor x = AG_NULL_TENSOR, e = AG_NULL_TENSOR, a = AG_NULL_TENSOR, b = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    ag_status st = ag_custom_ctx_saved(&x, ctx, 0);
    if (st == AG_OK) st = ag_exp(&e, x);
    if (st == AG_OK) st = ag_mul(&a, gout[0], e);
    if (st == AG_OK) st = ag_mul_scalar(&b, gout[1], 2);
    if (st == AG_OK) st = ag_add(&s, a, b);
    if (st == AG_OK && c->bwd == CB_BROADCAST) { /* [3, 2], each row s / 3: summed back to s */
        ag_tensor d = AG_NULL_TENSOR;
        st = ag_div_scalar(&d, s, 3);
        if (st == AG_OK) st = ag_expand(&gin[0], d, (int64_t[]){3, 2}, 2);
        ag_tensor_free(d);
    } else if (st == AG_OK) {
        gin[0] = s;
        s = AG_NULL_TENSOR;
    }
    ag_tensor_free(x), ag_tensor_free(e), ag_tensor_free(a), ag_tensor_free(b), ag_tensor_free(s);
    if (st == AG_OK && c->bwd == CB_FREED) ag_tensor_free(gin[0]);
    return st;
}

/* tangents (exp(x) t, 2 t). */
static int32_t cop_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                       ag_custom_ctx ctx, void *payload) {
    (void)nout, (void)nin;
    cop_cfg *c = payload;
    switch (c->jvp) {
    case CB_RET7: return 7;
    case CB_SET_ERROR: ag_set_error("no tangent today"); return 7;
    case CB_MADE_UP: tout[0] = (ag_tensor)0x0123456789ABCDEFULL; return 0;
    case CB_SHAPE: return ag_tensor_ones(&tout[0], (int64_t[]){3}, 1, AG_FLOAT64);
    case CB_DTYPE: return ag_tensor_ones(&tout[0], (int64_t[]){2}, 1, AG_FLOAT32);
    case CB_FREE_BORROWED: ag_tensor_free(tin[0]); return 0;
    case CB_SAVE: return ag_custom_ctx_save(ctx, in, 1);
    default: break;
    }
    ag_tensor e = AG_NULL_TENSOR;
    ag_status st = ag_exp(&e, in[0]);
    if (st == AG_OK && c->jvp != CB_NO_HANDLE) st = ag_mul(&tout[0], tin[0], e);
    if (st == AG_OK) st = ag_mul_scalar(&tout[1], tin[0], 2);
    ag_tensor_free(e);
    if (st == AG_OK && c->jvp == CB_FREED) ag_tensor_free(tout[1]);
    return st;
}

/* A new op "cop" over cfg (its destroy counts into cfg). */
static ag_custom_op cop_new(cop_cfg *cfg, bool backward, bool jvp) {
    ag_custom_op op = AG_NULL_CUSTOM_OP;
    if (ag_custom_op_new(&op, "cop", 1, 2, cop_forward, backward ? cop_backward : NULL, jvp ? cop_jvp : NULL, cfg,
                         cop_destroy) != AG_OK)
        FAIL("setup: ag_custom_op_new: %s", ag_last_error());
    cfg->self = op;
    return op;
}

static void release_op(ag_custom_op op) {
    if (ag_custom_op_free(op) != AG_OK) FAIL("cleanup: ag_custom_op_free: %s", ag_last_error());
}

/* The live handle count (for the no-leak checks of the callback entries). */
static int64_t live_count(void) {
    int64_t n = -1;
    if (ag_live_handle_count(&n) != AG_OK) FAIL("ag_live_handle_count: %s", ag_last_error());
    return n;
}

/* sum(o0 + o1) of cop applied to x: the root a backward runs from. */
static ag_status cop_loss(ag_tensor *out, ag_custom_op op, ag_tensor x) {
    ag_tensor o[2] = {AG_NULL_TENSOR, AG_NULL_TENSOR}, s = AG_NULL_TENSOR;
    ag_status st = ag_custom_op_apply(o, 2, op, &x, 1);
    if (st == AG_OK) st = ag_add(&s, o[0], o[1]);
    if (st == AG_OK) st = ag_sum(out, s, NULL, 0, false);
    ag_tensor_free(o[0]), ag_tensor_free(o[1]), ag_tensor_free(s);
    return st;
}

typedef struct {
    ag_custom_op op;
    ag_status inner;     /* what ag_custom_op_apply returned inside the pass */
    char message[512];   /* and its message */
} cop_build;

static int32_t build_cop(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    cop_build *b = user_data;
    ag_tensor o[2] = {AG_NULL_TENSOR, AG_NULL_TENSOR};
    b->inner = ag_custom_op_apply(o, 2, b->op, inputs, 1);
    if (b->inner != AG_OK) {
        snprintf(b->message, sizeof b->message, "%s", ag_last_error());
        return b->inner;
    }
    ag_status st = ag_add(out, o[0], o[1]);
    ag_tensor_free(o[0]), ag_tensor_free(o[1]);
    return st;
}

static bool b120(void) { /* ag_custom_op_new: out, name or forward NULL, an empty name, counts outside 1...256 */
    cop_cfg c = {0};
    ag_custom_op op = (ag_custom_op)SENT_HANDLE;
    bool ok = EXPECT(ag_custom_op_new(NULL, "cop", 1, 1, cop_forward, cop_backward, NULL, &c, cop_destroy),
                     AG_ERR_ARGUMENT, "ag_custom_op_new: the output pointer 'out' is NULL");
    ok &= EXPECT(ag_custom_op_new(&op, NULL, 1, 1, cop_forward, cop_backward, NULL, &c, cop_destroy), AG_ERR_ARGUMENT,
                 "ag_custom_op_new: name is NULL");
    ok &= EXPECT(ag_custom_op_new(&op, "cop", 1, 1, NULL, cop_backward, cop_jvp, &c, cop_destroy), AG_ERR_ARGUMENT,
                 "ag_custom_op_new: forward is NULL");
    ok &= EXPECT(ag_custom_op_new(&op, "", 1, 1, cop_forward, cop_backward, NULL, &c, cop_destroy), AG_ERR_ARGUMENT,
                 "ag_custom_op_new: a custom op needs a name (non-empty, without NUL characters)");
    const int64_t counts[] = {0, -1, 257, INT64_MIN, INT64_MAX};
    for (int k = 0; k < 5; k++) {
        char frag[96];
        snprintf(frag, sizeof frag, "ninputs %" PRId64 " is outside 1...256", counts[k]);
        ok &= EXPECT(ag_custom_op_new(&op, "cop", counts[k], 1, cop_forward, NULL, NULL, &c, cop_destroy),
                     AG_ERR_ARGUMENT, frag);
        snprintf(frag, sizeof frag, "noutputs %" PRId64 " is outside 1...256", counts[k]);
        ok &= EXPECT(ag_custom_op_new(&op, "cop", 1, counts[k], cop_forward, NULL, NULL, &c, cop_destroy),
                     AG_ERR_ARGUMENT, frag);
    }
    ok &= CHECK(op == (ag_custom_op)SENT_HANDLE && c.destroyed == 0); /* nothing written, destroy not called */
    /* accepted: 256 inputs and 256 outputs, backward and jvp NULL */
    ok &= OK(ag_custom_op_new(&op, "wide", 256, 256, cop_forward, NULL, NULL, &c, cop_destroy));
    release_op(op);
    ok &= CHECK(c.destroyed == 1);
    return ok;
}

static bool b121(void) { /* ag_custom_op_apply: outputs or inputs NULL, counts other than the op's */
    cop_cfg c = {0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = vec64(2, (double[]){0.5, -1});
    ag_tensor o[3] = {SENT_HANDLE, SENT_HANDLE, SENT_HANDLE};
    bool ok = EXPECT(ag_custom_op_apply(NULL, 2, op, &x, 1), AG_ERR_ARGUMENT,
                     "ag_custom_op_apply: the output pointer 'outputs' is NULL");
    ok &= EXPECT(ag_custom_op_apply(o, 1, op, &x, 1), AG_ERR_ARGUMENT, "noutputs is 1, custom op 'cop' has 2 outputs");
    ok &= EXPECT(ag_custom_op_apply(o, 3, op, &x, 1), AG_ERR_ARGUMENT, "noutputs is 3, custom op 'cop' has 2 outputs");
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, (ag_tensor[]){x, x}, 2), AG_ERR_ARGUMENT,
                 "ninputs is 2, custom op 'cop' takes 1 input");
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, &x, 0), AG_ERR_ARGUMENT, "ninputs is 0, custom op 'cop' takes 1 input");
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, &x, INT64_MIN), AG_ERR_ARGUMENT, "ninputs is -9223372036854775808");
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, NULL, 1), AG_ERR_ARGUMENT, "inputs is NULL but ninputs is 1");
    ok &= CHECK(o[0] == SENT_HANDLE && o[1] == SENT_HANDLE && o[2] == SENT_HANDLE);
    /* The forward was never called: the right call is its first. */
    ok &= OK(ag_custom_op_apply(o, 2, op, &x, 1));
    release(o[0]), release(o[1]), release(x);
    release_op(op);
    return ok;
}

static bool b122(void) { /* a custom op handle 0, freed, made up or of another kind; an op where a tensor is wanted */
    cop_cfg c = {0}, c2 = {0};
    ag_custom_op op = cop_new(&c, true, true), freed = cop_new(&c2, true, true);
    release_op(freed);
    ag_tensor x = vec64(2, (double[]){0.5, -1});
    ag_tensor o[2] = {SENT_HANDLE, SENT_HANDLE};
    bool ok = EXPECT(ag_custom_op_apply(o, 2, AG_NULL_CUSTOM_OP, &x, 1), AG_ERR_INVALID_HANDLE,
                     "ag_custom_op_apply: custom op handle is 0 (AG_NULL_CUSTOM_OP)");
    const ag_custom_op bad[] = {freed, (ag_custom_op)0x0123456789ABCDEFULL, (ag_custom_op)x, (ag_custom_op)UINT64_MAX};
    for (int k = 0; k < 4; k++) {
        ok &= EXPECT(ag_custom_op_apply(o, 2, bad[k], &x, 1), AG_ERR_INVALID_HANDLE,
                     "is not a live custom op handle (freed, made up, or of another kind)");
        ok &= EXPECT(ag_custom_op_free(bad[k]), AG_ERR_INVALID_HANDLE,
                     "is not a live custom op handle (already freed, made up, or of another kind)");
    }
    ok &= EXPECT(ag_custom_op_free(freed), AG_ERR_INVALID_HANDLE, "ag_custom_op_free: custom op handle 0x");
    /* An input that is not a live tensor (a freed one, the op itself). */
    ag_tensor dead = vec64(2, (double[]){1, 2});
    release(dead);
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, &dead, 1), AG_ERR_INVALID_HANDLE,
                 "inputs[0] handle 0x");
    ok &= EXPECT(ag_custom_op_apply(o, 2, op, (ag_tensor[]){(ag_tensor)op}, 1), AG_ERR_INVALID_HANDLE,
                 "is not a live tensor handle");
    /* The op where a tensor is wanted: refused, and the op stays alive. */
    int64_t n = SENT_I64;
    ok &= EXPECT(ag_tensor_numel(&n, (ag_tensor)op), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= EXPECT(ag_tensor_free((ag_tensor)op), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(o[0] == SENT_HANDLE && o[1] == SENT_HANDLE && n == SENT_I64 && c.destroyed == 0 && c2.destroyed == 1);
    ok &= OK(ag_custom_op_apply(o, 2, op, &x, 1));
    release(o[0]), release(o[1]), release(x);
    release_op(op);
    ok &= OK(ag_custom_op_free(AG_NULL_CUSTOM_OP)); /* accepted */
    ok &= CHECK(c.destroyed == 1);
    return ok;
}

static bool b123(void) { /* a context used outside its callback: kept past the forward, 0, made up */
    cop_cfg c = {CB_KEEP_CTX, CB_OK, CB_OK, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = vec64(2, (double[]){0.5, -1});
    ag_tensor o[2] = {AG_NULL_TENSOR, AG_NULL_TENSOR};
    bool ok = OK(ag_custom_op_apply(o, 2, op, &x, 1));
    const ag_custom_ctx bad[] = {c.kept, 0, (ag_custom_ctx)0x0123456789ABCDEFULL, (ag_custom_ctx)x};
    const char *frag = "is not a live context (a context is valid only during the callback it was passed to)";
    for (int k = 0; k < 4; k++) {
        int64_t n = SENT_I64;
        ag_tensor t = SENT_HANDLE;
        bool b = true;
        ok &= EXPECT(ag_custom_ctx_save(bad[k], &x, 1), AG_ERR_INVALID_HANDLE, frag);
        ok &= EXPECT(ag_custom_ctx_saved_count(&n, bad[k]), AG_ERR_INVALID_HANDLE, frag);
        ok &= EXPECT(ag_custom_ctx_saved(&t, bad[k], 0), AG_ERR_INVALID_HANDLE, frag);
        ok &= EXPECT(ag_custom_ctx_needs_input_grad(&b, bad[k], 0), AG_ERR_INVALID_HANDLE, frag);
        ok &= CHECK(n == SENT_I64 && t == SENT_HANDLE && b == true);
    }
    ok &= EXPECT(ag_custom_ctx_saved_count(&(int64_t){0}, c.kept), AG_ERR_INVALID_HANDLE,
                 "ag_custom_ctx_saved_count: context handle 0x");
    release(o[0]), release(o[1]), release(x);
    release_op(op);
    return ok;
}

static bool b124(void) { /* inside a callback: ag_custom_ctx_* with NULL pointers, n < 1, an index out of range */
    cop_cfg c = {CB_CTX_ARGS, CB_OK, CB_OK, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1}));
    ag_tensor o[2] = {AG_NULL_TENSOR, AG_NULL_TENSOR};
    /* The forward carries on after its refused calls and returns 0: the apply succeeds. */
    bool ok = OK(ag_custom_op_apply(o, 2, op, &x, 1));
    static const ag_status want[] = {AG_ERR_ARGUMENT, AG_ERR_ARGUMENT, AG_ERR_ARGUMENT, AG_OK,
                                     AG_ERR_ARGUMENT, AG_ERR_ARGUMENT, AG_ERR_ARGUMENT, AG_ERR_ARGUMENT,
                                     AG_ERR_ARGUMENT, AG_ERR_ARGUMENT, AG_ERR_ARGUMENT};
    static const char *const frags[] = {
        "ag_custom_ctx_save: tensors is NULL but n is 1",
        "ag_custom_ctx_save: at least one tensor is needed, n is 0",
        "ag_custom_ctx_save: at least one tensor is needed, n is -1",
        "",
        "ag_custom_ctx_saved_count: the output pointer 'out' is NULL",
        "ag_custom_ctx_saved: index 1 is out of range: the forward saved 1 tensor",
        "ag_custom_ctx_saved: index -1 is out of range: the forward saved 1 tensor",
        "ag_custom_ctx_saved: the output pointer 'out' is NULL",
        "ag_custom_ctx_needs_input_grad: input index 1 is out of range: the op has 1 input",
        "ag_custom_ctx_needs_input_grad: input index -9223372036854775808 is out of range",
        "ag_custom_ctx_needs_input_grad: the output pointer 'out' is NULL",
    };
    ok &= CHECK(c.ncalls == 11);
    for (int k = 0; k < c.ncalls && k < 11; k++) {
        if (g_verbose && want[k] != AG_OK) printf("    (inside the forward) -> %s: %s\n", ag_status_name(c.st[k]), c.msg[k]);
        if (c.st[k] != want[k]) ok = FAIL("call %d inside the forward returned %s: %s", k, ag_status_name(c.st[k]), c.msg[k]);
        else if (want[k] != AG_OK && strstr(c.msg[k], frags[k]) == NULL)
            ok = FAIL("call %d inside the forward: message \"%s\" lacks \"%s\"", k, c.msg[k], frags[k]);
    }
    ok &= CHECK(c.wrote == SENT_HANDLE); /* the refused ag_custom_ctx_saved wrote nothing */
    release(o[0]), release(o[1]), release(x);
    release_op(op);
    return ok;
}

static bool b125(void) { /* ag_custom_ctx_save from the backward or the JVP */
    cop_cfg c = {CB_OK, CB_SAVE, CB_SAVE, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR;
    bool ok = OK(cop_loss(&l, op, x));
    /* The backward returns the status of its refused call: ag_backward quotes it. */
    ok &= EXPECT(ag_backward(l, AG_NULL_TENSOR, false, false), AG_ERR_CALLBACK,
                 "ag_backward: custom op 'cop': the backward returned 5 (its last error: ag_custom_ctx_save: tensors "
                 "can be saved in the forward callback only (this context belongs to the backward callback))");
    ag_tensor t = full((int64_t[]){2}, 1, 1.0, AG_FLOAT64), y = SENT_HANDLE, yt = SENT_HANDLE;
    cop_build b = {op, AG_OK, ""};
    ok &= EXPECT(ag_jvp(&y, &yt, build_cop, &b, &x, 1, &t), AG_ERR_CALLBACK, "ag_jvp: the build function returned 7");
    ok &= CHECK(b.inner == AG_ERR_CALLBACK && y == SENT_HANDLE && yt == SENT_HANDLE);
    if (strstr(b.message, "this context belongs to the jvp callback") == NULL)
        ok = FAIL("ag_custom_op_apply in ag_jvp: \"%s\"", b.message);
    release(l), release(t), release(x);
    release_op(op);
    return ok;
}

static bool b126(void) { /* ag_set_error(NULL); accepted: a message, also outside a callback */
    bool ok = EXPECT(ag_set_error(NULL), AG_ERR_ARGUMENT, "ag_set_error: message is NULL");
    ok &= OK(ag_set_error("my own words"));
    ok &= CHECK(strcmp(ag_last_error(), "my own words") == 0);
    ok &= OK(ag_set_error(""));
    ok &= CHECK(strcmp(ag_last_error(), "") == 0);
    return ok;
}

/* The forward failing under `mode`: ag_custom_op_apply's status and message, nothing written or leaked. */
static bool cop_forward_fails(int mode, const char *frag, int line) {
    cop_cfg c = {mode, CB_OK, CB_OK, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1}));
    int64_t before = live_count();
    ag_tensor o[2] = {SENT_HANDLE, SENT_HANDLE};
    bool ok = expect_at((prime(), ag_custom_op_apply(o, 2, op, &x, 1)), AG_ERR_CALLBACK, frag, "ag_custom_op_apply",
                        line);
    ok &= CHECK(o[0] == SENT_HANDLE && o[1] == SENT_HANDLE);
    if (live_count() != before) ok = FAIL("(line %d) a handle leaked", line);
    release(x);
    release_op(op);
    return ok;
}

/* The backward failing under `mode`, run by ag_backward, ag_grad and ag_vjp: each call's status and
 * message (beginning with its name), nothing written or leaked. */
static bool cop_backward_fails(int mode, const char *frag, int line) {
    cop_cfg c = {CB_OK, mode, CB_OK, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR, g = SENT_HANDLE, y = SENT_HANDLE;
    ag_tensor cot = full((int64_t[]){2}, 1, 1.0, AG_FLOAT64);
    int64_t before = live_count();
    bool ok = OK(cop_loss(&l, op, x));
    ok &= expect_at((prime(), ag_backward(l, AG_NULL_TENSOR, true, false)), AG_ERR_CALLBACK, frag, "ag_backward", line);
    if (strncmp(ag_last_error(), "ag_backward: ", 13) != 0) ok = FAIL("(line %d) \"%s\"", line, ag_last_error());
    ok &= expect_at((prime(), ag_grad(&g, &l, 1, NULL, &x, 1, true, false, false)), AG_ERR_CALLBACK, frag, "ag_grad",
                    line);
    if (strncmp(ag_last_error(), "ag_grad: ", 9) != 0) ok = FAIL("(line %d) \"%s\"", line, ag_last_error());
    release(l);
    cop_build b = {op, AG_OK, ""};
    ok &= expect_at((prime(), ag_vjp(&y, &g, build_cop, &b, &x, 1, cot)), AG_ERR_CALLBACK, frag, "ag_vjp", line);
    if (strncmp(ag_last_error(), "ag_vjp: ", 8) != 0) ok = FAIL("(line %d) \"%s\"", line, ag_last_error());
    ok &= CHECK(g == SENT_HANDLE && y == SENT_HANDLE);
    if (live_count() != before) ok = FAIL("(line %d) a handle leaked", line);
    release(cot), release(x);
    release_op(op);
    return ok;
}

/* The JVP failing under `mode`, run by ag_custom_op_apply inside ag_jvp's build function. */
static bool cop_jvp_fails(int mode, const char *frag, int line) {
    cop_cfg c = {CB_OK, CB_OK, mode, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = vec64(2, (double[]){0.5, -1}), t = vec64(2, (double[]){1, 3});
    ag_tensor y = SENT_HANDLE, yt = SENT_HANDLE;
    int64_t before = live_count();
    cop_build b = {op, AG_OK, ""};
    bool ok = expect_at((prime(), ag_jvp(&y, &yt, build_cop, &b, &x, 1, &t)), AG_ERR_CALLBACK,
                        "ag_jvp: the build function returned 7 (its last error: ag_custom_op_apply: ", "ag_jvp", line);
    if (b.inner != AG_ERR_CALLBACK) ok = FAIL("(line %d) ag_custom_op_apply in the pass returned %s", line, ag_status_name(b.inner));
    if (strncmp(b.message, "ag_custom_op_apply: ", 20) != 0 || strstr(b.message, frag) == NULL)
        ok = FAIL("(line %d) ag_custom_op_apply in the pass: message \"%s\" lacks \"%s\"", line, b.message, frag);
    if (g_verbose) printf("    (ag_custom_op_apply in ag_jvp) -> %s\n", b.message);
    ok &= CHECK(y == SENT_HANDLE && yt == SENT_HANDLE);
    if (live_count() != before) ok = FAIL("(line %d) a handle leaked", line);
    release(x), release(t);
    release_op(op);
    return ok;
}

static bool b127(void) { /* a callback returns non-zero: with ag_set_error, after a failed call, with neither */
    bool ok = cop_forward_fails(CB_RET7, "ag_custom_op_apply: custom op 'cop': the forward returned 7", __LINE__);
    ok &= cop_forward_fails(CB_SET_ERROR, "custom op 'cop': the forward returned 7 (its last error: the series did not "
                                          "converge)", __LINE__);
    ok &= cop_forward_fails(CB_FAILED_CALL, "custom op 'cop': the forward returned 1 (its last error: ag_exp: a handle "
                                            "0x123456789abcdef is not a live tensor handle", __LINE__);
    ok &= cop_backward_fails(CB_RET7, "custom op 'cop': the backward returned 7", __LINE__);
    ok &= cop_backward_fails(CB_SET_ERROR, "custom op 'cop': the backward returned 7 (its last error: the adjoint did "
                                           "not converge)", __LINE__);
    ok &= cop_backward_fails(CB_FAILED_CALL, "custom op 'cop': the backward returned 3 (its last error: "
                                             "ag_tensor_zeros: negative extent -2 in shape [-2])", __LINE__);
    ok &= cop_jvp_fails(CB_RET7, "custom op 'cop': the JVP returned 7", __LINE__);
    ok &= cop_jvp_fails(CB_SET_ERROR, "custom op 'cop': the JVP returned 7 (its last error: no tangent today)", __LINE__);
    return ok;
}

static bool b128(void) { /* the forward writes no handle; accepted: none from the backward or the JVP */
    bool ok = cop_forward_fails(CB_NO_HANDLE, "custom op 'cop': the forward returned 0 (success) but wrote no tensor "
                                              "handle to outputs[1]", __LINE__);
    /* accepted: the backward writes AG_NULL_TENSOR: no gradient reaches x */
    cop_cfg c = {CB_OK, CB_NO_HANDLE, CB_NO_HANDLE, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR, g = SENT_HANDLE;
    ok &= OK(cop_loss(&l, op, x));
    ok &= OK(ag_backward(l, AG_NULL_TENSOR, true, false));
    ok &= OK(ag_tensor_grad(&g, x));
    ok &= CHECK(g == AG_NULL_TENSOR);
    ok &= OK(ag_grad(&g, &l, 1, NULL, &x, 1, false, false, true)); /* allow_unused: AG_NULL_TENSOR */
    ok &= CHECK(g == AG_NULL_TENSOR);
    release(l);
    /* accepted: the JVP writes AG_NULL_TENSOR for output 0: a zero tangent; output 1's is 2 t */
    ag_tensor y = AG_NULL_TENSOR, yt = AG_NULL_TENSOR, t = vec64(2, (double[]){1, 3}), z = vec64(2, (double[]){0.5, -1});
    cop_build b = {op, AG_OK, ""};
    double got[2] = {0, 0};
    ok &= OK(ag_jvp(&y, &yt, build_cop, &b, &z, 1, &t));
    ok &= values(got, 2, yt);
    ok &= CHECK(got[0] == 2 && got[1] == 6);
    release(y), release(yt), release(t), release(z), release(x);
    release_op(op);
    return ok;
}

static bool b129(void) { /* a callback writes a freed, made-up or other-kind handle */
    const char *tail = ", which is not a live tensor handle (freed, made up, or of another kind)";
    char f[300];
    bool ok = true;
    static const int modes[] = {CB_FREED, CB_MADE_UP, CB_OTHER_KIND};
    for (int k = 0; k < 3; k++) {
        snprintf(f, sizeof f, "to outputs[1]%s", tail);
        ok &= cop_forward_fails(modes[k], f, __LINE__);
        snprintf(f, sizeof f, "to input_grads[0]%s", tail);
        ok &= cop_backward_fails(modes[k], f, __LINE__);
    }
    ok &= cop_forward_fails(CB_MADE_UP, "custom op 'cop': the forward wrote 0x123456789abcdef to outputs[1]", __LINE__);
    ok &= cop_backward_fails(CB_MADE_UP, "custom op 'cop': the backward wrote 0x123456789abcdef to input_grads[0]", __LINE__);
    ok &= cop_jvp_fails(CB_MADE_UP, "custom op 'cop': the JVP wrote 0x123456789abcdef to output_tangents[0]", __LINE__);
    snprintf(f, sizeof f, "custom op 'cop': the JVP wrote 0x");
    ok &= cop_jvp_fails(CB_FREED, f, __LINE__);
    return ok;
}

static bool b130(void) { /* a callback frees a handle it was given */
    bool ok = cop_forward_fails(CB_FREE_BORROWED, "custom op 'cop': the forward freed inputs[0], a tensor handle it "
                                                  "was given (borrowed: the library's, do not free it)", __LINE__);
    ok &= cop_backward_fails(CB_FREE_BORROWED, "custom op 'cop': the backward freed output_grads[0], a tensor handle "
                                               "it was given", __LINE__);
    /* The JVP names the tangent by its input's number. */
    ok &= cop_jvp_fails(CB_FREE_BORROWED, "custom op 'cop': the JVP freed input_tangents[0], a tensor handle it was "
                                          "given", __LINE__);
    return ok;
}

static bool b131(void) { /* the forward's outputs differ in dtype */
    return cop_forward_fails(CB_DTYPE, "custom op 'cop': the forward returned output 0 as float64 and output 1 as "
                                       "float32; the outputs of an op share one dtype", __LINE__);
}

static bool b132(void) { /* a gradient of another dtype, or of a shape that does not reduce to its input's */
    bool ok = cop_backward_fails(CB_DTYPE, "custom op 'cop': the backward returned gradient 0 as float32, input 0 is "
                                           "float64", __LINE__);
    ok &= cop_backward_fails(CB_SHAPE, "custom op 'cop': the backward returned gradient 0 of shape [3] for input 0 "
                                       "of shape [2] (a gradient has the input's shape, or one that broadcasting "
                                       "reduces to it)", __LINE__);
    /* accepted: [3, 2] for the input [2]: summed back */
    cop_cfg c = {CB_OK, CB_BROADCAST, CB_OK, 0, 0, 0, 0, {0}, {{0}}, 0};
    ag_custom_op op = cop_new(&c, true, true);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
    ok &= OK(cop_loss(&l, op, x));
    ok &= OK(ag_grad(&g, &l, 1, NULL, &x, 1, false, false, false));
    double got[2] = {0, 0};
    ok &= values(got, 2, g);
    if (fabs(got[0] - (exp(0.5) + 2)) > 1e-12 || fabs(got[1] - (exp(-1) + 2)) > 1e-12)
        ok = FAIL("the gradient summed from [3, 2] is %.17g, %.17g", got[0], got[1]);
    release(g), release(l), release(x);
    release_op(op);
    return ok;
}

static bool b133(void) { /* the JVP's tangent has another shape or dtype than its output */
    bool ok = cop_jvp_fails(CB_SHAPE, "custom op 'cop': the JVP returned tangent 0 as float64 [3], output 0 is "
                                      "float64 [2]", __LINE__);
    ok &= cop_jvp_fails(CB_DTYPE, "custom op 'cop': the JVP returned tangent 0 as float32 [2], output 0 is float64 [2]",
                        __LINE__);
    return ok;
}

static bool b134(void) { /* an op without a backward in a backward; without a JVP in a forward-mode pass */
    cop_cfg c = {0};
    ag_custom_op op = cop_new(&c, false, false);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR, g = SENT_HANDLE;
    bool ok = OK(cop_loss(&l, op, x));
    ok &= EXPECT(ag_backward(l, AG_NULL_TENSOR, true, false), AG_ERR_STATE,
                 "ag_backward: custom op 'cop' was defined without a backward, so no gradient flows through it");
    ok &= EXPECT(ag_grad(&g, &l, 1, NULL, &x, 1, true, false, false), AG_ERR_STATE,
                 "ag_grad: custom op 'cop' was defined without a backward");
    ok &= CHECK(g == SENT_HANDLE);
    ag_tensor t = vec64(2, (double[]){1, 3}), y = SENT_HANDLE, yt = SENT_HANDLE;
    cop_build b = {op, AG_OK, ""};
    ok &= EXPECT(ag_jvp(&y, &yt, build_cop, &b, &x, 1, &t), AG_ERR_CALLBACK, "ag_jvp: the build function returned 5");
    ok &= CHECK(b.inner == AG_ERR_STATE && y == SENT_HANDLE && yt == SENT_HANDLE);
    if (strstr(b.message, "ag_custom_op_apply: custom op 'cop' was defined without a JVP, so it cannot be "
                          "differentiated in forward mode") == NULL)
        ok = FAIL("ag_custom_op_apply in ag_jvp: \"%s\"", b.message);
    release(t), release(l), release(x);
    release_op(op);
    return ok;
}

typedef struct {
    ag_custom_op op;
} cop_capture;

static int32_t cap_cop(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                       void *user_data) {
    (void)noutputs, (void)ninputs;
    const cop_capture *cc = user_data;
    return cop_loss(&outputs[0], cc->op, inputs[0]);
}

/* outputs[0] = d/dx sum(cop(x)) (the backward runs in each replay). */
static int32_t cap_cop_grad(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs,
                            void *user_data) {
    (void)noutputs, (void)ninputs;
    const cop_capture *cc = user_data;
    ag_tensor l = AG_NULL_TENSOR;
    ag_status st = cop_loss(&l, cc->op, inputs[0]);
    if (st == AG_OK) st = ag_grad(&outputs[0], &l, 1, NULL, inputs, 1, false, false, false);
    ag_tensor_free(l);
    return st;
}

static bool b135(void) { /* a replay whose custom op's forward returns other shapes than at the capture */
    cop_cfg c = {0};
    cop_capture cc = {cop_new(&c, true, true)};
    ag_tensor x = vec64(2, (double[]){0.5, -1}), o = SENT_HANDLE;
    ag_function f = AG_NULL_FUNCTION;
    bool ok = OK(ag_capture(&f, cap_cop, &x, 1, 1, &cc));
    c.fwd = CB_SHAPE; /* [3] now: the capture planned [2] */
    ok &= EXPECT(ag_function_call(&o, 1, f, &x, 1), AG_ERR_CALLBACK,
                 "custom op 'cop': in a replay the forward returned and saved tensors of shapes [[3], [3]], at the "
                 "capture [[2], [2]]");
    ok &= CHECK(o == SENT_HANDLE);
    /* A forward, or a backward, that fails in a replay. */
    c.fwd = CB_SET_ERROR;
    ok &= EXPECT(ag_function_call(&o, 1, f, &x, 1), AG_ERR_CALLBACK,
                 "ag_function_call: custom op 'cop': the forward returned 7 (its last error: the series did not "
                 "converge)");
    c.fwd = CB_OK; /* and the function works again */
    ok &= OK(ag_function_call(&o, 1, f, &x, 1));
    ok &= CHECK(fabs(item(o) - (exp(0.5) + exp(-1) + 1 - 2)) < 1e-12);
    release(o);
    ag_function fg = AG_NULL_FUNCTION;
    ag_tensor xg = leaf_rg(vec64(2, (double[]){0.5, -1})), og = SENT_HANDLE;
    ok &= OK(ag_capture(&fg, cap_cop_grad, &xg, 1, 1, &cc));
    c.bwd = CB_RET7;
    ok &= EXPECT(ag_function_call(&og, 1, fg, &xg, 1), AG_ERR_CALLBACK,
                 "ag_function_call: custom op 'cop': the backward returned 7");
    ok &= CHECK(og == SENT_HANDLE);
    c.bwd = CB_OK;
    ok &= OK(ag_function_call(&og, 1, fg, &xg, 1));
    double got[2] = {0, 0};
    ok &= values(got, 2, og);
    if (fabs(got[0] - (exp(0.5) + 2)) > 1e-12 || fabs(got[1] - (exp(-1) + 2)) > 1e-12)
        ok = FAIL("replayed gradient %.17g, %.17g", got[0], got[1]);
    release(og), release(xg), release(x);
    release_function(fg);
    release_function(f);
    release_op(cc.op);
    return ok;
}

/* ---- The application's state, nesting, recompute (B136 - B140) ---- */

/* sop: x -> 2 x (1 input, 1 output), saving x; its callbacks make the calls of sop_cfg. */
typedef struct {
    bool late;          /* the backward and the JVP call ag_custom_ctx_set_state */
    bool misuse;        /* the forward: ag_custom_ctx_state(NULL, ctx), a state read before any is set, two sets */
    ag_custom_ctx kept; /* the forward's context, kept past its return */
    int state_destroyed; /* destroy calls of the states set (all point at destroyed counters) */
    int late_destroyed;
    int ncalls;
    ag_status st[6];
    char msg[6][400];
    void *read_before, *read_after; /* what ag_custom_ctx_state read in the forward before / after its sets */
    int destroyed_at_second_set;
} sop_cfg;

static void sop_record(sop_cfg *c, ag_status st) {
    if (c->ncalls < 6) {
        c->st[c->ncalls] = st;
        snprintf(c->msg[c->ncalls], sizeof c->msg[0], "%s", st != AG_OK ? ag_last_error() : "");
        c->ncalls++;
    }
}

static void sop_state_destroy(void *state) { (*(int *)state)++; }

static int32_t sop_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin;
    sop_cfg *c = payload;
    c->kept = ctx;
    if (c->misuse) {
        c->read_before = (void *)SENT_HANDLE;
        sop_record(c, ag_custom_ctx_state(NULL, ctx));
        sop_record(c, ag_custom_ctx_state(&c->read_before, ctx)); /* none set yet: NULL */
        sop_record(c, ag_custom_ctx_set_state(ctx, NULL, NULL));  /* accepted */
        sop_record(c, ag_custom_ctx_set_state(ctx, &c->state_destroyed, sop_state_destroy));
        sop_record(c, ag_custom_ctx_set_state(ctx, &c->state_destroyed, sop_state_destroy)); /* replaces it */
        c->destroyed_at_second_set = c->state_destroyed;
        sop_record(c, ag_custom_ctx_state(&c->read_after, ctx));
    } else {
        ag_status st = ag_custom_ctx_set_state(ctx, &c->state_destroyed, sop_state_destroy);
        if (st != AG_OK) return st;
    }
    ag_status st = ag_custom_ctx_save(ctx, in, 1);
    return st != AG_OK ? st : ag_mul_scalar(&out[0], in[0], 2);
}

static int32_t sop_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    (void)nin, (void)nout;
    sop_cfg *c = payload;
    if (c->late) sop_record(c, ag_custom_ctx_set_state(ctx, &c->late_destroyed, sop_state_destroy));
    void *state = NULL;
    ag_status st = ag_custom_ctx_state(&state, ctx);
    if (st == AG_OK && state != &c->state_destroyed) st = 91; /* the forward's state stays */
    return st != AG_OK ? st : ag_mul_scalar(&gin[0], gout[0], 2);
}

static int32_t sop_jvp(ag_tensor *tout, int64_t nout, const ag_tensor *in, const ag_tensor *tin, int64_t nin,
                       ag_custom_ctx ctx, void *payload) {
    (void)nout, (void)in, (void)nin;
    sop_cfg *c = payload;
    if (c->late) sop_record(c, ag_custom_ctx_set_state(ctx, &c->late_destroyed, sop_state_destroy));
    void *state = NULL;
    ag_status st = ag_custom_ctx_state(&state, ctx);
    if (st == AG_OK && state != &c->state_destroyed) st = 91;
    return st != AG_OK ? st : ag_mul_scalar(&tout[0], tin[0], 2);
}

static ag_custom_op sop_new(sop_cfg *c) {
    ag_custom_op op = AG_NULL_CUSTOM_OP;
    if (ag_custom_op_new(&op, "sop", 1, 1, sop_forward, sop_backward, sop_jvp, c, NULL) != AG_OK)
        FAIL("setup: ag_custom_op_new: %s", ag_last_error());
    return op;
}

static int32_t build_sop(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data) {
    (void)ninputs;
    return ag_custom_op_apply(out, 1, *(const ag_custom_op *)user_data, inputs, 1);
}

/* Checks the calls a callback recorded: status and message fragment each ("" for AG_OK). */
static bool sop_calls(const sop_cfg *c, int n, const ag_status *want, const char *const *frags, const char *where) {
    bool ok = CHECK(c->ncalls == n);
    for (int k = 0; k < c->ncalls && k < n; k++) {
        const char *got = ag_status_name(c->st[k]);
        if (g_verbose && want[k] != AG_OK) printf("    (inside the %s) -> %s: %s\n", where, got, c->msg[k]);
        if (c->st[k] != want[k]) ok = FAIL("call %d inside the %s returned %s: %s", k, where, got, c->msg[k]);
        else if (want[k] != AG_OK && strstr(c->msg[k], frags[k]) == NULL)
            ok = FAIL("call %d inside the %s: message \"%s\" lacks \"%s\"", k, where, c->msg[k], frags[k]);
    }
    return ok;
}

static bool b136(void) { /* ag_custom_ctx_set_state from the backward or the JVP */
    sop_cfg c = {0};
    c.late = true;
    ag_custom_op op = sop_new(&c);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), y = AG_NULL_TENSOR, l = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
    bool ok = OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    ok &= OK(ag_sum(&l, y, NULL, 0, false));
    /* The backward goes on after its refused call and returns 0: the pass succeeds. */
    ok &= OK(ag_grad(&g, &l, 1, NULL, &x, 1, false, false, false));
    double got[2] = {0, 0};
    ok &= values(got, 2, g);
    ok &= CHECK(got[0] == 2 && got[1] == 2);
    static const ag_status want[] = {AG_ERR_STATE};
    static const char *const frag_b[] = {"ag_custom_ctx_set_state: the state can be set in the forward callback only "
                                         "(this context belongs to the backward callback)"};
    ok &= sop_calls(&c, 1, want, frag_b, "backward");
    release(g), release(l), release(y);
    ok &= CHECK(c.state_destroyed == 1 && c.late_destroyed == 0); /* the forward's went with the graph */
    c.ncalls = 0;
    ag_tensor z = vec64(2, (double[]){0.5, -1}), t = vec64(2, (double[]){1, 3});
    ag_tensor o = AG_NULL_TENSOR, ot = AG_NULL_TENSOR;
    ok &= OK(ag_jvp(&o, &ot, build_sop, &op, &z, 1, &t));
    static const char *const frag_j[] = {"ag_custom_ctx_set_state: the state can be set in the forward callback only "
                                         "(this context belongs to the jvp callback)"};
    ok &= sop_calls(&c, 1, want, frag_j, "JVP");
    ok &= values(got, 2, ot);
    ok &= CHECK(got[0] == 2 && got[1] == 6);
    release(o), release(ot), release(t), release(z), release(x);
    release_op(op);
    ok &= CHECK(c.state_destroyed == 2 && c.late_destroyed == 0); /* the refused states' destroy never ran */
    return ok;
}

static bool b137(void) { /* a context not live; ag_custom_ctx_state(NULL); accepted: NULL before a set, a new set */
    sop_cfg c = {0};
    c.misuse = true;
    ag_custom_op op = sop_new(&c);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), y = AG_NULL_TENSOR;
    bool ok = OK(ag_custom_op_apply(&y, 1, op, &x, 1));
    static const ag_status want[] = {AG_ERR_ARGUMENT, AG_OK, AG_OK, AG_OK, AG_OK, AG_OK};
    static const char *const frags[] = {"ag_custom_ctx_state: the output pointer 'out' is NULL", "", "", "", "", ""};
    ok &= sop_calls(&c, 6, want, frags, "forward");
    ok &= CHECK(c.read_before == NULL && c.read_after == &c.state_destroyed);
    ok &= CHECK(c.destroyed_at_second_set == 1 && c.state_destroyed == 1); /* the replaced one only */
    /* A context that is not live: the forward's, kept; 0; made up; a tensor handle. */
    const ag_custom_ctx bad[] = {c.kept, 0, (ag_custom_ctx)0x0123456789ABCDEFULL, (ag_custom_ctx)x};
    const char *frag = "is not a live context (a context is valid only during the callback it was passed to)";
    int mine = 0;
    for (int k = 0; k < 4; k++) {
        void *p = (void *)SENT_HANDLE;
        ok &= EXPECT(ag_custom_ctx_set_state(bad[k], &mine, sop_state_destroy), AG_ERR_INVALID_HANDLE, frag);
        ok &= EXPECT(ag_custom_ctx_state(&p, bad[k]), AG_ERR_INVALID_HANDLE, frag);
        ok &= CHECK(p == (void *)SENT_HANDLE);
    }
    ok &= EXPECT(ag_custom_ctx_set_state(c.kept, &mine, sop_state_destroy), AG_ERR_INVALID_HANDLE,
                 "ag_custom_ctx_set_state: context handle 0x");
    ok &= EXPECT(ag_custom_ctx_state(NULL, c.kept), AG_ERR_ARGUMENT,
                 "ag_custom_ctx_state: the output pointer 'out' is NULL");
    release(y);
    /* the refused state's destroy never ran; the forward's second went with y */
    ok &= CHECK(mine == 0 && c.state_destroyed == 2);
    release(x);
    release_op(op);
    return ok;
}

/* rec: x -> 2 x, whose forward applies rec itself on its input, down to `limit` nested forwards
 * (0: no limit); the innermost failed apply's status and message are kept. */
typedef struct {
    ag_custom_op self;
    int limit, depth, deepest;
    ag_status inner;
    char message[600];
} rec_cfg;

static int32_t rec_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin, (void)ctx;
    rec_cfg *r = payload;
    r->depth++;
    if (r->depth > r->deepest) r->deepest = r->depth;
    ag_status st;
    if (r->limit && r->depth >= r->limit) {
        st = ag_mul_scalar(&out[0], in[0], 2);
    } else {
        st = ag_custom_op_apply(&out[0], 1, r->self, in, 1);
        if (st != AG_OK && r->inner == AG_OK) {
            r->inner = st;
            snprintf(r->message, sizeof r->message, "%s", ag_last_error());
        }
    }
    r->depth--;
    return st;
}

static bool b138(void) { /* the 65th custom-op callback nested on one thread */
    rec_cfg r = {0};
    if (ag_custom_op_new(&r.self, "rec", 1, 1, rec_forward, NULL, NULL, &r, NULL) != AG_OK)
        return FAIL("setup: ag_custom_op_new: %s", ag_last_error());
    ag_tensor x = vec64(2, (double[]){0.5, -1}), y = SENT_HANDLE;
    int64_t before = live_count();
    bool ok = EXPECT(ag_custom_op_apply(&y, 1, r.self, &x, 1), AG_ERR_CALLBACK,
                     "ag_custom_op_apply: custom op 'rec': the forward returned 7 (its last error: ag_custom_op_apply: "
                     "custom op 'rec': the forward returned 7");
    if (g_verbose) printf("    (the innermost ag_custom_op_apply) -> %s: %s\n", ag_status_name(r.inner), r.message);
    ok &= CHECK(r.inner == AG_ERR_STATE && r.deepest == 64 && y == SENT_HANDLE);
    if (strstr(r.message, "ag_custom_op_apply: custom op 'rec': 64 custom-op callbacks are running nested on this "
                          "thread already, the most allowed (does its forward apply the op itself?)") == NULL)
        ok = FAIL("the innermost ag_custom_op_apply: \"%s\"", r.message);
    ok &= CHECK(live_count() == before);
    /* accepted: 64 nested forwards */
    r.limit = 64, r.deepest = 0, r.inner = AG_OK;
    ok &= OK(ag_custom_op_apply(&y, 1, r.self, &x, 1));
    ok &= CHECK(r.deepest == 64);
    double got[2] = {0, 0};
    ok &= values(got, 2, y);
    ok &= CHECK(got[0] == 1 && got[1] == -2);
    release(y), release(x);
    release_op(r.self);
    return ok;
}

/* A hook on a = 2 x that runs ag_grad(sum(a), x) again, which reaches the hook again, down to
 * `limit` nested passes (0: no limit). */
typedef struct {
    ag_tensor root, x;
    int limit, depth, deepest;
    ag_status inner;
    char message[600];
} rehook_cfg;

static int32_t rehook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad;
    rehook_cfg *h = user_data;
    h->depth++;
    if (h->depth > h->deepest) h->deepest = h->depth;
    ag_status st = AG_OK;
    if (!h->limit || h->depth < h->limit) {
        ag_tensor g = AG_NULL_TENSOR;
        st = ag_grad(&g, &h->root, 1, NULL, &h->x, 1, true, false, false);
        if (st != AG_OK && h->inner == AG_OK) {
            h->inner = st;
            snprintf(h->message, sizeof h->message, "%s", ag_last_error());
        }
        ag_tensor_free(g);
    }
    h->depth--;
    return st;
}

static bool b139(void) { /* the 65th backward pass nested on one thread (a hook whose backward reaches itself) */
    rehook_cfg h = {0};
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), a = AG_NULL_TENSOR, g = SENT_HANDLE;
    bool ok = OK(ag_mul_scalar(&a, x, 2));
    ok &= OK(ag_sum(&h.root, a, NULL, 0, false));
    h.x = x;
    ok &= OK(ag_tensor_register_hook(NULL, a, rehook, &h, NULL));
    int64_t before = live_count();
    ok &= EXPECT(ag_grad(&g, &h.root, 1, NULL, &x, 1, true, false, false), AG_ERR_CALLBACK,
                 "ag_grad: gradient hook ");
    if (strstr(ag_last_error(), " returned 7 (its last error: ag_grad: gradient hook ") == NULL)
        ok = FAIL("the outer ag_grad: \"%.200s\"", ag_last_error());
    /* Each level quotes the one below, cut to 500 characters (start and end): the message stays
     * short and still ends with the innermost cause. */
    if (strlen(ag_last_error()) > 700 || strstr(ag_last_error(), " ... ") == NULL ||
        strstr(ag_last_error(), "backward passes are running nested on this thread already") == NULL)
        ok = FAIL("the outer ag_grad's message is %zu characters: \"%.200s\"", strlen(ag_last_error()), ag_last_error());
    if (g_verbose) printf("    (the innermost ag_grad) -> %s: %s\n", ag_status_name(h.inner), h.message);
    /* pass 1 runs hook 1, whose pass 2 runs hook 2, ..., hook 64's pass would be the 65th */
    ok &= CHECK(h.inner == AG_ERR_STATE && h.deepest == 64 && g == SENT_HANDLE);
    if (strstr(h.message, "ag_grad: 64 backward passes are running nested on this thread already, the most allowed "
                          "(a gradient hook or a custom op's backward runs a backward that reaches it again?)") == NULL)
        ok = FAIL("the innermost ag_grad: \"%s\"", h.message);
    ok &= CHECK(live_count() == before);
    /* accepted: 64 nested passes */
    h.limit = 64, h.deepest = 0, h.inner = AG_OK;
    ok &= OK(ag_grad(&g, &h.root, 1, NULL, &x, 1, true, false, false));
    ok &= CHECK(h.deepest == 64);
    double got[2] = {0, 0};
    ok &= values(got, 2, g);
    ok &= CHECK(got[0] == 2 && got[1] == 2);
    release(g), release(h.root), release(a), release(x);
    return ok;
}

/* mid: x -> (2 x)^2, saving the intermediate 2 x; backward 4 (2 x) g. */
static int32_t mid_forward(ag_tensor *out, int64_t nout, const ag_tensor *in, int64_t nin, ag_custom_ctx ctx,
                           void *payload) {
    (void)nout, (void)nin, (void)payload;
    ag_tensor t = AG_NULL_TENSOR;
    ag_status st = ag_mul_scalar(&t, in[0], 2);
    if (st == AG_OK) st = ag_custom_ctx_save(ctx, &t, 1);
    if (st == AG_OK) st = ag_mul(&out[0], t, t);
    ag_tensor_free(t);
    return st;
}

static int32_t mid_backward(ag_tensor *gin, int64_t nin, const ag_tensor *gout, int64_t nout, ag_custom_ctx ctx,
                            void *payload) {
    (void)nin, (void)nout, (void)payload;
    ag_tensor t = AG_NULL_TENSOR, p = AG_NULL_TENSOR;
    ag_status st = ag_custom_ctx_saved(&t, ctx, 0);
    if (st == AG_OK) st = ag_mul(&p, t, gout[0]);
    if (st == AG_OK) st = ag_mul_scalar(&gin[0], p, 4);
    ag_tensor_free(t), ag_tensor_free(p);
    return st;
}

static bool b140(void) { /* ag_recompute of a custom op of several outputs, or one that saved an intermediate */
    bool was = false, prev = false;
    bool ok = OK(ag_set_recomputable(&was, true));
    cop_cfg c = {0};
    ag_custom_op two = cop_new(&c, true, true), mid = AG_NULL_CUSTOM_OP, one = AG_NULL_CUSTOM_OP;
    if (ag_custom_op_new(&mid, "mid", 1, 1, mid_forward, mid_backward, NULL, NULL, NULL) != AG_OK)
        ok = FAIL("setup: ag_custom_op_new: %s", ag_last_error());
    sop_cfg sc = {0};
    one = sop_new(&sc);
    ag_tensor x = leaf_rg(vec64(2, (double[]){0.5, -1})), l = AG_NULL_TENSOR, m = AG_NULL_TENSOR, s = AG_NULL_TENSOR;
    ok &= OK(cop_loss(&l, two, x));
    ok &= OK(ag_custom_op_apply(&m, 1, mid, &x, 1));
    ok &= OK(ag_custom_op_apply(&s, 1, one, &x, 1));
    ok &= OK(ag_set_recomputable(NULL, was));
    ok &= OK(ag_set_grad_enabled(&prev, false));
    ok &= OK(ag_tensor_set_data(x, (double[]){2, 3}, 2, AG_FLOAT64));
    ok &= OK(ag_set_grad_enabled(NULL, prev));
    const char *frag = "a custom op of several outputs, or one that saved an intermediate, has none to rerun";
    double before = item(l);
    ok &= EXPECT(ag_recompute(l), AG_ERR_STATE, frag);
    ok &= CHECK(item(l) == before); /* nothing written */
    ok &= EXPECT(ag_recompute(m), AG_ERR_STATE, "ag_recompute: 'mid' was recorded without its forward");
    ok &= EXPECT(ag_recompute(m), AG_ERR_STATE, frag);
    double got[2] = {0, 0};
    ok &= values(got, 2, m);
    ok &= CHECK(got[0] == 1 && got[1] == 4);
    /* accepted: one output, saving its input only (and a state): rerun */
    ok &= OK(ag_recompute(s));
    ok &= values(got, 2, s);
    ok &= CHECK(got[0] == 4 && got[1] == 6);
    release(s), release(m), release(l), release(x);
    release_op(one), release_op(mid), release_op(two);
    return ok;
}

/* ---- Integer tensors, masks and random generators (B141 - B154) ---- */

static ag_tensor ints64(const int64_t *v, const int64_t *shape, int64_t ndim) {
    ag_tensor t = AG_NULL_TENSOR;
    if (ag_tensor_from_data(&t, v, shape, ndim, AG_INT64) != AG_OK) {
        FAIL("setup: ag_tensor_from_data(int64): %s", ag_last_error());
        return AG_NULL_TENSOR;
    }
    return t;
}

static ag_tensor ivec(int64_t n, const int64_t *v) { return ints64(v, &n, 1); }

static ag_tensor bvec(int64_t n, const uint8_t *v) {
    ag_tensor t = AG_NULL_TENSOR;
    if (ag_tensor_from_data(&t, v, &n, 1, AG_BOOL) != AG_OK) FAIL("setup: ag_tensor_from_data(bool): %s", ag_last_error());
    return t;
}

static ag_generator new_gen(uint64_t seed) {
    ag_generator g = 0;
    if (ag_generator_new(&g, seed) != AG_OK) FAIL("setup: ag_generator_new: %s", ag_last_error());
    return g;
}

static void release_gen(ag_generator g) {
    if (ag_generator_free(g) != AG_OK) FAIL("cleanup: ag_generator_free: %s", ag_last_error());
}

/* out must still hold the sentinel (nothing written on failure). */
#define UNTOUCHED(out) CHECK((out) == SENT_HANDLE)

static bool b141(void) { /* ag_to_dtype: nan, inf or out of range to int64; an unknown dtype */
    const double bad[] = {NAN, INFINITY, -INFINITY, 9223372036854775808.0, -1e19};
    const char *frag[] = {"is nan, which has no int64 value", "is inf, which has no int64 value",
                          "is -inf, which has no int64 value", "which has no int64 value (nan, infinite or out of range)",
                          "which has no int64 value"};
    bool ok = true;
    for (int k = 0; k < 5; k++) {
        ag_tensor a = vec64(2, (double[]){0.5, bad[k]}), out = SENT_HANDLE;
        ok &= EXPECT(ag_to_dtype(&out, a, AG_INT64), AG_ERR_ARGUMENT, frag[k]);
        ok &= UNTOUCHED(out);
        ok &= EXPECT(ag_to_dtype(&out, a, AG_INT64), AG_ERR_ARGUMENT, "ag_to_dtype: element 1 is");
        release(a);
    }
    ag_tensor a = vec64(2, (double[]){-0.5, 2.9}), out = SENT_HANDLE;
    ok &= EXPECT(ag_to_dtype(&out, a, 5), AG_ERR_DTYPE, "unknown dtype 5");
    ok &= EXPECT(ag_to_dtype(&out, a, 0), AG_ERR_DTYPE, "unknown dtype 0");
    ok &= UNTOUCHED(out);
    /* accepted: truncation toward zero, nan to bool is true */
    ok &= OK(ag_to_dtype(&out, a, AG_INT64));
    int64_t got[2] = {9, 9};
    ok &= OK(ag_tensor_copy_data(got, 2, AG_INT64, out));
    ok &= CHECK(got[0] == 0 && got[1] == 2);
    release(out), release(a);
    return ok;
}

static bool b142(void) { /* ag_argmax / ag_argmin: a bad axis, an axis of extent 0, a non-float input */
    ag_tensor x = full((int64_t[]){2, 3}, 2, 1, AG_FLOAT64), e = full((int64_t[]){2, 0}, 2, 0, AG_FLOAT64);
    ag_tensor s = scalar64(1), i = ivec(2, (int64_t[]){1, 2}), out = SENT_HANDLE;
    bool ok = EXPECT(ag_argmax(&out, x, 2, false), AG_ERR_ARGUMENT, "ag_argmax: axis 2 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_argmin(&out, x, -3, false), AG_ERR_ARGUMENT, "axis -3 is out of range for a tensor of rank 2");
    ok &= EXPECT(ag_argmax(&out, s, 1, false), AG_ERR_ARGUMENT, "axis 1 is out of range for a tensor of rank 1");
    ok &= EXPECT(ag_argmax(&out, e, 1, true), AG_ERR_SHAPE, "argmax: cannot take the largest of an axis of extent 0 (shape [2, 0])");
    ok &= EXPECT(ag_argmin(&out, e, -1, false), AG_ERR_SHAPE, "argmin: cannot take the smallest of an axis of extent 0");
    ok &= EXPECT(ag_argmax(&out, i, 0, false), AG_ERR_DTYPE, "argmax: input is int64; this op needs float32 or float64");
    ok &= EXPECT(ag_argmax(NULL, x, 0, false), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= UNTOUCHED(out);
    /* accepted: a 0-d input at axis 0 or -1 gives 0; extent 0 off the axis gives an empty result */
    ok &= OK(ag_argmax(&out, s, -1, false));
    double v = -1;
    ok &= OK(ag_tensor_item(&v, out));
    ok &= CHECK(v == 0);
    release(out);
    ag_tensor e2 = full((int64_t[]){0, 3}, 2, 0, AG_FLOAT64);
    ok &= OK(ag_argmax(&out, e2, 1, false));
    int64_t n = -1;
    ok &= OK(ag_tensor_numel(&n, out));
    ok &= CHECK(n == 0);
    release(out), release(e2), release(x), release(e), release(s), release(i);
    return ok;
}

static bool b143(void) { /* ag_topk: values or indices NULL, k outside 0..extent, a bad axis, 0-d, non-float */
    ag_tensor v = vec64(4, (double[]){1, 4, 2, 3}), s = scalar64(1), i = ivec(2, (int64_t[]){1, 2});
    ag_tensor vals = SENT_HANDLE, idx = SENT_HANDLE;
    bool ok = EXPECT(ag_topk(NULL, &idx, v, 1, 0, true), AG_ERR_ARGUMENT, "the output pointer 'values' is NULL");
    ok &= EXPECT(ag_topk(&vals, NULL, v, 1, 0, true), AG_ERR_ARGUMENT, "the output pointer 'indices' is NULL");
    ok &= EXPECT(ag_topk(&vals, &idx, v, 5, 0, true), AG_ERR_ARGUMENT, "ag_topk: k = 5 is outside 0...4 (the extent of axis 0)");
    ok &= EXPECT(ag_topk(&vals, &idx, v, -1, 0, false), AG_ERR_ARGUMENT, "k = -1 is outside 0...4");
    ok &= EXPECT(ag_topk(&vals, &idx, v, 1, 1, true), AG_ERR_ARGUMENT, "topk: axis 1 is out of range for a tensor of rank 1");
    ok &= EXPECT(ag_topk(&vals, &idx, s, 1, 0, true), AG_ERR_SHAPE, "topk: the input is 0-d; it needs an axis");
    ok &= EXPECT(ag_topk(&vals, &idx, i, 1, 0, true), AG_ERR_DTYPE, "topk: input is int64");
    ok &= UNTOUCHED(vals) && UNTOUCHED(idx);
    /* accepted: k = 0 and k = extent */
    ok &= OK(ag_topk(&vals, &idx, v, 4, 0, true));
    int64_t got[4];
    ok &= OK(ag_tensor_copy_data(got, 4, AG_INT64, idx));
    ok &= CHECK(got[0] == 1 && got[1] == 3 && got[2] == 2 && got[3] == 0);
    release(vals), release(idx);
    ok &= OK(ag_topk(&vals, &idx, v, 0, 0, true));
    release(vals), release(idx), release(v), release(s), release(i);
    return ok;
}

static bool b144(void) { /* ag_one_hot: bad indices, classes or dtype; a result above AG_MAX_NDIM */
    ag_tensor i = ivec(2, (int64_t[]){0, 5}), n = ivec(1, (int64_t[]){-1}), f = vec64(1, (double[]){1});
    ag_tensor e = ints64(NULL, (int64_t[]){0}, 1), ok3 = ivec(2, (int64_t[]){0, 2}), out = SENT_HANDLE;
    ag_tensor r8 = ints64((int64_t[]){0}, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1}, 8);
    bool ok = EXPECT(ag_one_hot(&out, i, 5, AG_FLOAT32), AG_ERR_ARGUMENT, "ag_one_hot: index 5 (element 1) is out of range for 5 classes");
    ok &= EXPECT(ag_one_hot(&out, n, 5, AG_FLOAT32), AG_ERR_ARGUMENT, "index -1 (element 0) is out of range for 5 classes");
    ok &= EXPECT(ag_one_hot(&out, ok3, -2, AG_FLOAT32), AG_ERR_ARGUMENT, "the number of classes must be -1 or at least 0, got -2");
    ok &= EXPECT(ag_one_hot(&out, e, -1, AG_FLOAT32), AG_ERR_ARGUMENT, "classes = -1 needs at least one index");
    ag_tensor big = ivec(1, (int64_t[]){INT64_MAX}); /* once a trap (SIGILL): INT64_MAX + 1 classes */
    ok &= EXPECT(ag_one_hot(&out, big, -1, AG_FLOAT32), AG_ERR_ARGUMENT, "the largest index 9223372036854775807 leaves no room for a number of classes");
    release(big);
    ok &= EXPECT(ag_one_hot(&out, f, 3, AG_FLOAT32), AG_ERR_DTYPE, "one_hot: indices must be int64, got float64");
    ok &= EXPECT(ag_one_hot(&out, ok3, 3, AG_BOOL), AG_ERR_DTYPE, "one_hot: the result is float32, float64 or int64, not bool");
    ok &= EXPECT(ag_one_hot(&out, ok3, 3, 9), AG_ERR_DTYPE, "unknown dtype 9");
    ok &= EXPECT(ag_one_hot(&out, r8, 2, AG_FLOAT32), AG_ERR_SHAPE, "one_hot: a rank-8 index tensor gives a result above the maximum rank 8");
    ok &= UNTOUCHED(out);
    /* accepted: classes = 0 with no index; classes = -1 infers 3 */
    ok &= OK(ag_one_hot(&out, e, 0, AG_INT64));
    release(out);
    ok &= OK(ag_one_hot(&out, ok3, -1, AG_INT64));
    int64_t got[6];
    ok &= OK(ag_tensor_copy_data(got, 6, AG_INT64, out));
    ok &= CHECK(got[0] == 1 && got[1] == 0 && got[5] == 1);
    release(out), release(i), release(n), release(f), release(e), release(ok3), release(r8);
    return ok;
}

static bool b145(void) { /* ag_embedding: bad indices or weight; the indices written before the backward */
    ag_tensor w = leaf_rg(full((int64_t[]){4, 2}, 2, 0.5, AG_FLOAT64)), out = SENT_HANDLE;
    ag_tensor far = ivec(2, (int64_t[]){1, 4}), neg = ivec(1, (int64_t[]){-1}), fi = vec64(1, (double[]){1});
    ag_tensor wi = ints64((int64_t[]){1, 2, 3, 4}, (int64_t[]){2, 2}, 2), w1 = vec64(2, (double[]){1, 2});
    ag_tensor r8 = ints64((int64_t[]){0}, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1}, 8), idx = ivec(2, (int64_t[]){3, 0});
    bool ok = EXPECT(ag_embedding(&out, far, w), AG_ERR_ARGUMENT, "ag_embedding: index 4 (element 1) is out of range for 4 rows");
    ok &= EXPECT(ag_embedding(&out, neg, w), AG_ERR_ARGUMENT, "index -1 (element 0) is out of range for 4 rows");
    ok &= EXPECT(ag_embedding(&out, fi, w), AG_ERR_DTYPE, "embedding: indices must be int64, got float64");
    ok &= EXPECT(ag_embedding(&out, idx, wi), AG_ERR_DTYPE, "embedding: weight is int64; this op needs float32 or float64");
    ok &= EXPECT(ag_embedding(&out, idx, w1), AG_ERR_SHAPE, "embedding: weight must be (rows, width), got [2]");
    ok &= EXPECT(ag_embedding(&out, r8, w), AG_ERR_SHAPE, "embedding: a rank-8 index tensor gives a result above the maximum rank 8");
    ok &= UNTOUCHED(out);
    ag_tensor e = AG_NULL_TENSOR, l = AG_NULL_TENSOR;
    ok &= OK(ag_embedding(&e, idx, w));
    ok &= OK(ag_sum(&l, e, NULL, 0, false));
    ok &= OK(ag_tensor_set_data(idx, (int64_t[]){0, 0}, 2, AG_INT64));
    ok &= EXPECT(ag_backward(l, AG_NULL_TENSOR, false, false), AG_ERR_STATE, "modified in place");
    ag_tensor g = SENT_HANDLE;
    ok &= OK(ag_tensor_grad(&g, w));
    ok &= CHECK(g == AG_NULL_TENSOR); /* nothing accumulated */
    release(l), release(e), release(w), release(far), release(neg), release(fi), release(wi), release(w1);
    release(r8), release(idx);
    return ok;
}

static bool b146(void) { /* ag_masked_fill: a mask that does not broadcast to a; a non-float a */
    ag_tensor a = full((int64_t[]){2, 3}, 2, 1, AG_FLOAT64), m2 = bvec(2, (uint8_t[]){1, 0}), out = SENT_HANDLE;
    ag_tensor big = full((int64_t[]){4, 2, 3}, 3, 1, AG_BOOL), ai = ivec(2, (int64_t[]){1, 2}), ab = bvec(2, (uint8_t[]){1, 1});
    bool ok = EXPECT(ag_masked_fill(&out, a, m2, 0), AG_ERR_SHAPE, "ag_masked_fill: mask of shape [2] does not broadcast to the input's [2, 3]");
    ok &= EXPECT(ag_masked_fill(&out, a, big, 0), AG_ERR_SHAPE, "mask of shape [4, 2, 3] does not broadcast to the input's [2, 3]");
    ok &= EXPECT(ag_masked_fill(&out, ai, m2, 0), AG_ERR_DTYPE, "masked_fill: input is int64; this op needs float32 or float64");
    ok &= EXPECT(ag_masked_fill(&out, ab, m2, 0), AG_ERR_DTYPE, "masked_fill: input is bool");
    ok &= UNTOUCHED(out);
    /* accepted: a float mask (non-zero, nan too, is true), a value of inf */
    ag_tensor mf = vec64(3, (double[]){NAN, 0, 2});
    ok &= OK(ag_masked_fill(&out, a, mf, INFINITY));
    double got[6];
    ok &= values(got, 6, out);
    ok &= CHECK(is_pinf(got[0]) && got[1] == 1 && is_pinf(got[2]) && is_pinf(got[3]));
    release(out), release(mf), release(a), release(m2), release(big), release(ai), release(ab);
    return ok;
}

static bool b147(void) { /* ag_logical_and / ag_logical_or: shapes that do not broadcast */
    ag_tensor a = bvec(2, (uint8_t[]){1, 0}), b = full((int64_t[]){3}, 1, 1, AG_INT64), out = SENT_HANDLE;
    bool ok = EXPECT(ag_logical_and(&out, a, b), AG_ERR_SHAPE, "ag_logical_and: ");
    ok &= EXPECT(ag_logical_or(&out, b, a), AG_ERR_SHAPE, "ag_logical_or: ");
    ok &= EXPECT(ag_logical_not(NULL, a), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= UNTOUCHED(out);
    release(a), release(b);
    return ok;
}

static bool b148(void) { /* ag_cross_entropy_labels: wrong dtypes or shapes, a label out of range */
    ag_tensor x = full((int64_t[]){4, 3}, 2, 0.5, AG_FLOAT64), out = SENT_HANDLE;
    ag_tensor lf = vec64(4, (double[]){2, 0, 1, 1}), far = ivec(4, (int64_t[]){2, 0, 3, 1}), neg = ivec(4, (int64_t[]){2, 0, -1, 1});
    ag_tensor l3 = ivec(3, (int64_t[]){2, 0, 1}), x1 = vec64(2, (double[]){1, 2}), two = ivec(2, (int64_t[]){0, 1});
    ag_tensor xi = ints64((int64_t[]){1, 2, 3, 4}, (int64_t[]){2, 2}, 2), l41 = ints64((int64_t[]){0, 1, 2, 0}, (int64_t[]){4, 1}, 2);
    bool ok = EXPECT(ag_cross_entropy_labels(&out, x, lf), AG_ERR_DTYPE, "ag_cross_entropy_labels: cross_entropy: labels must be int64, got float64");
    ok &= EXPECT(ag_cross_entropy_labels(&out, xi, two), AG_ERR_DTYPE, "cross_entropy: logits is int64; this op needs float32 or float64");
    ok &= EXPECT(ag_cross_entropy_labels(&out, x, far), AG_ERR_ARGUMENT, "cross_entropy: label 3 (element 2) is out of range for 3 classes");
    ok &= EXPECT(ag_cross_entropy_labels(&out, x, neg), AG_ERR_ARGUMENT, "label -1 (element 2) is out of range for 3 classes");
    ok &= EXPECT(ag_cross_entropy_labels(&out, x, l3), AG_ERR_SHAPE, "cross_entropy: labels of shape [3] for 4 rows of logits (want (4))");
    ok &= EXPECT(ag_cross_entropy_labels(&out, x, l41), AG_ERR_SHAPE, "labels of shape [4, 1] for 4 rows of logits");
    ok &= EXPECT(ag_cross_entropy_labels(&out, x1, two), AG_ERR_SHAPE, "cross_entropy: logits must be (N, C), got [2]");
    ok &= UNTOUCHED(out);
    release(x), release(lf), release(far), release(neg), release(l3), release(x1), release(two), release(xi), release(l41);
    return ok;
}

static bool b149(void) { /* int64 / bool operands of computing ops; requires_grad on them; float copied out as int64 */
    ag_tensor i = ints64((int64_t[]){1, 2, 3, 4}, (int64_t[]){2, 2}, 2), b = bvec(2, (uint8_t[]){1, 0});
    ag_tensor f = vec64(2, (double[]){1.5, 2}), out = SENT_HANDLE;
    bool ok = EXPECT(ag_exp(&out, i), AG_ERR_DTYPE, "ag_exp: its operand is int64; this op needs float32 or float64 (convert with to_dtype)");
    ok &= EXPECT(ag_add(&out, i, i), AG_ERR_DTYPE, "this op needs float32 or float64");
    ok &= EXPECT(ag_add(&out, f, b), AG_ERR_DTYPE, "ag_add: ");
    ok &= EXPECT(ag_matmul(&out, i, i), AG_ERR_DTYPE, "this op needs float32 or float64");
    ok &= EXPECT(ag_mean(&out, b, NULL, 0, false), AG_ERR_DTYPE, "mean: input is bool");
    ok &= EXPECT(ag_softmax(&out, i, 1), AG_ERR_DTYPE, "this op needs float32 or float64");
    ok &= EXPECT(ag_where(&out, b, b, b), AG_ERR_DTYPE, "where: a is bool");
    ok &= EXPECT(ag_eq(&out, i, f), AG_ERR_DTYPE, "eq: operands have different dtypes");
    ok &= UNTOUCHED(out);
    ok &= EXPECT(ag_tensor_set_requires_grad(i, true), AG_ERR_DTYPE,
                 "requires_grad: int64 tensors cannot require grad (only float32 and float64 values have gradients)");
    ok &= EXPECT(ag_tensor_set_requires_grad(b, true), AG_ERR_DTYPE, "bool tensors cannot require grad");
    int64_t got[2] = {7, 7};
    ok &= EXPECT(ag_tensor_copy_data(got, 2, AG_INT64, f), AG_ERR_DTYPE,
                 "cannot copy float64 values out as int64; convert the tensor with to_dtype first");
    ok &= CHECK(got[0] == 7);
    ok &= EXPECT(ag_tensor_full(&out, (int64_t[]){2}, 1, 2.5, AG_INT64), AG_ERR_ARGUMENT,
                 "full: 2.5 is not a whole number within int64's range");
    ok &= UNTOUCHED(out);
    /* accepted: requires_grad false; sum counts; bool copied out as int64 */
    ok &= OK(ag_tensor_set_requires_grad(i, false));
    ok &= OK(ag_sum(&out, b, NULL, 0, false));
    ok &= OK(ag_tensor_copy_data(got, 1, AG_INT64, out));
    ok &= CHECK(got[0] == 1);
    release(out), release(i), release(b), release(f);
    return ok;
}

static bool b150(void) { /* generator handles: 0, freed, made up, a tensor; freed twice; NULL outs */
    ag_generator g = new_gen(1), dead = new_gen(2);
    release_gen(dead);
    ag_tensor t = scalar64(1), out = SENT_HANDLE;
    uint64_t st = 777;
    bool ok = EXPECT(ag_random_uniform(&out, (int64_t[]){2}, 1, 0, 1, 0, AG_FLOAT64), AG_ERR_INVALID_HANDLE,
                     "ag_random_uniform: generator handle is 0");
    ok &= EXPECT(ag_randperm(&out, 3, dead), AG_ERR_INVALID_HANDLE,
                 "is not a live generator handle (freed, made up, or of another kind)");
    ok &= EXPECT(ag_dropout(&out, t, 0.5, true, (ag_generator)t), AG_ERR_INVALID_HANDLE, "is not a live generator handle");
    ok &= EXPECT(ag_randint(&out, (int64_t[]){2}, 1, 0, 3, (ag_generator)0x0123456789ABCDEFULL), AG_ERR_INVALID_HANDLE,
                 "is not a live generator handle");
    ok &= UNTOUCHED(out);
    ok &= EXPECT(ag_generator_get_state(&st, dead), AG_ERR_INVALID_HANDLE, "ag_generator_get_state: generator handle 0x");
    ok &= CHECK(st == 777);
    ok &= EXPECT(ag_generator_set_state((ag_generator)t, 5), AG_ERR_INVALID_HANDLE, "is not a live generator handle");
    ok &= EXPECT(ag_generator_free(dead), AG_ERR_INVALID_HANDLE,
                 "ag_generator_free: handle 0x");
    ok &= EXPECT(ag_generator_free((ag_generator)t), AG_ERR_INVALID_HANDLE,
                 "is not a live generator handle (already freed, made up, or of another kind)");
    ok &= EXPECT(ag_exp(&out, (ag_tensor)g), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= EXPECT(ag_tensor_free((ag_tensor)g), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= UNTOUCHED(out);
    ok &= EXPECT(ag_generator_get_state(NULL, g), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_generator_new(NULL, 3), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    /* accepted: freeing 0; the generator and the tensor are still live after the failed frees */
    ok &= OK(ag_generator_free(0));
    ok &= OK(ag_generator_get_state(&st, g));
    ok &= CHECK(item(t) == 1);
    release(t);
    release_gen(g);
    return ok;
}

static bool b151(void) { /* ag_random_uniform / ag_random_normal: an int64 or bool dtype, bad bounds, a bad shape */
    ag_generator g = new_gen(3);
    ag_tensor out = SENT_HANDLE;
    uint64_t before = 0, after = 1;
    bool ok = OK(ag_generator_get_state(&before, g));
    ok &= EXPECT(ag_random_uniform(&out, (int64_t[]){2}, 1, 0, 1, g, AG_INT64), AG_ERR_DTYPE,
                 "ag_random_uniform: uniform: random values are float32 or float64, not int64 (randint draws int64)");
    ok &= EXPECT(ag_random_normal(&out, (int64_t[]){2}, 1, 0, 1, g, AG_BOOL), AG_ERR_DTYPE,
                 "normal: random values are float32 or float64, not bool");
    ok &= EXPECT(ag_random_uniform(&out, (int64_t[]){2}, 1, 0, 1, g, 7), AG_ERR_DTYPE, "unknown dtype 7");
    ok &= EXPECT(ag_random_uniform(&out, (int64_t[]){2}, 1, 1, 0, g, AG_FLOAT64), AG_ERR_ARGUMENT, "uniform: need finite low <= high");
    ok &= EXPECT(ag_random_uniform(&out, (int64_t[]){2}, 1, NAN, 1, g, AG_FLOAT32), AG_ERR_ARGUMENT, "need finite low <= high");
    ok &= EXPECT(ag_random_normal(&out, (int64_t[]){2}, 1, 0, -1, g, AG_FLOAT64), AG_ERR_ARGUMENT,
                 "normal: need a finite mean and a finite std >= 0");
    ok &= EXPECT(ag_random_normal(&out, (int64_t[]){2}, 1, INFINITY, 1, g, AG_FLOAT64), AG_ERR_ARGUMENT, "need a finite mean");
    ok &= EXPECT(ag_random_uniform(&out, NULL, 1, 0, 1, g, AG_FLOAT64), AG_ERR_ARGUMENT, "shape is NULL but ndim is 1");
    ok &= EXPECT(ag_random_normal(&out, (int64_t[]){-2}, 1, 0, 1, g, AG_FLOAT64), AG_ERR_SHAPE, "negative extent -2 in shape [-2]");
    ok &= UNTOUCHED(out);
    ok &= OK(ag_generator_get_state(&after, g));
    ok &= CHECK(before == after); /* nothing drawn */
    release_gen(g);
    return ok;
}

static bool b152(void) { /* ag_randint: low >= high; ag_randperm: n < 0 or above 2^40 */
    ag_generator g = new_gen(4);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_randint(&out, (int64_t[]){2}, 1, 3, 3, g), AG_ERR_ARGUMENT, "ag_randint: need low < high, got 3 and 3");
    ok &= EXPECT(ag_randint(&out, (int64_t[]){2}, 1, 3, -3, g), AG_ERR_ARGUMENT, "need low < high, got 3 and -3");
    ok &= EXPECT(ag_randperm(&out, -1, g), AG_ERR_ARGUMENT, "ag_randperm: n must be >= 0, got -1");
    ok &= EXPECT(ag_randperm(&out, (INT64_C(1) << 40) + 1, g), AG_ERR_ARGUMENT, "randperm: n = 1099511627777 is more than the 2^40 allowed");
    ok &= EXPECT(ag_randperm(&out, INT64_MAX, g), AG_ERR_ARGUMENT, "is more than the 2^40 allowed");
    ok &= UNTOUCHED(out);
    /* accepted: the whole int64 range but its top value; n = 0 */
    ok &= OK(ag_randint(&out, (int64_t[]){4}, 1, INT64_MIN, INT64_MAX, g));
    release(out);
    ok &= OK(ag_randperm(&out, 0, g));
    release(out);
    release_gen(g);
    return ok;
}

static bool b153(void) { /* ag_dropout: p outside [0, 1] or nan; a non-float input */
    ag_generator g = new_gen(5);
    ag_tensor a = vec64(2, (double[]){1, 2}), ai = ivec(2, (int64_t[]){1, 2}), out = SENT_HANDLE;
    bool ok = EXPECT(ag_dropout(&out, a, 1.5, true, g), AG_ERR_ARGUMENT, "ag_dropout: p must be in [0, 1], got 1.5");
    ok &= EXPECT(ag_dropout(&out, a, -0.25, false, g), AG_ERR_ARGUMENT, "p must be in [0, 1], got -0.25");
    ok &= EXPECT(ag_dropout(&out, a, NAN, true, g), AG_ERR_ARGUMENT, "p must be in [0, 1], got nan");
    ok &= EXPECT(ag_dropout(&out, ai, 0.5, true, g), AG_ERR_DTYPE, "dropout: input is int64; this op needs float32 or float64");
    ok &= UNTOUCHED(out);
    /* accepted: p = 1 zeroes everything */
    ok &= OK(ag_dropout(&out, a, 1, true, g));
    double got[2];
    ok &= values(got, 2, out);
    ok &= CHECK(got[0] == 0 && got[1] == 0);
    release(out), release(a), release(ai);
    release_gen(g);
    return ok;
}

static bool b154(void) { /* ag_multinomial: bad samples or weights; a weights tensor of the wrong rank or dtype */
    ag_generator g = new_gen(6);
    ag_tensor w = vec64(3, (double[]){1, 0, 3}), neg = vec64(2, (double[]){1, -1}), inf = vec64(2, (double[]){1, INFINITY});
    ag_tensor nanw = vec64(2, (double[]){NAN, 1}), zero = from64((double[]){1, 1, 0, 0}, (int64_t[]){2, 2}, 2);
    ag_tensor r3 = full((int64_t[]){1, 1, 2}, 3, 1, AG_FLOAT64), s = scalar64(1), none = full((int64_t[]){0}, 1, 1, AG_FLOAT64);
    ag_tensor wi = ivec(2, (int64_t[]){1, 2}), out = SENT_HANDLE;
    bool ok = EXPECT(ag_multinomial(&out, w, -1, true, g), AG_ERR_ARGUMENT, "ag_multinomial: the number of samples must be >= 0, got -1");
    ok &= EXPECT(ag_multinomial(&out, w, 3, false, g), AG_ERR_ARGUMENT,
                 "multinomial: 3 samples without replacement, but row 0 has only 2 categories of positive weight");
    ok &= EXPECT(ag_multinomial(&out, neg, 1, true, g), AG_ERR_ARGUMENT, "multinomial: weights must be finite and >= 0, row 0 holds -1");
    ok &= EXPECT(ag_multinomial(&out, inf, 1, true, g), AG_ERR_ARGUMENT, "weights must be finite and >= 0, row 0 holds inf");
    ok &= EXPECT(ag_multinomial(&out, nanw, 1, true, g), AG_ERR_ARGUMENT, "row 0 holds nan");
    ok &= EXPECT(ag_multinomial(&out, zero, 1, true, g), AG_ERR_ARGUMENT, "multinomial: row 1 has no positive weight");
    ok &= EXPECT(ag_multinomial(&out, r3, 1, true, g), AG_ERR_SHAPE, "multinomial: weights must be (C) or (N, C), got [1, 1, 2]");
    ok &= EXPECT(ag_multinomial(&out, s, 1, true, g), AG_ERR_SHAPE, "weights must be (C) or (N, C), got []");
    ok &= EXPECT(ag_multinomial(&out, none, 1, true, g), AG_ERR_SHAPE, "multinomial: there are no categories (shape [0])");
    ok &= EXPECT(ag_multinomial(&out, wi, 1, true, g), AG_ERR_DTYPE, "multinomial: input is int64");
    ok &= UNTOUCHED(out);
    /* accepted: 0 samples; as many samples as positive weights without replacement */
    ok &= OK(ag_multinomial(&out, w, 2, false, g));
    int64_t got[2] = {-1, -1};
    ok &= OK(ag_tensor_copy_data(got, 2, AG_INT64, out));
    ok &= CHECK((got[0] == 0 && got[1] == 2) || (got[0] == 2 && got[1] == 0));
    release(out);
    ok &= OK(ag_multinomial(&out, w, 0, false, g));
    release(out), release(w), release(neg), release(inf), release(nanw), release(zero), release(r3), release(s);
    release(none), release(wi);
    release_gen(g);
    return ok;
}


/* ---- Convolution and pooling; normalisation, attention and training helpers (B155 - B160) ---- */

static bool b155(void) { /* ag_conv2d / ag_conv1d: geometry out of range, shapes that do not fit, dtypes */
    ag_tensor x = full((int64_t[]){2, 3, 5, 5}, 4, 1, AG_FLOAT64), w = full((int64_t[]){4, 3, 3, 3}, 4, 1, AG_FLOAT64);
    ag_tensor wg = full((int64_t[]){4, 2, 3, 3}, 4, 1, AG_FLOAT64), b = full((int64_t[]){4}, 1, 1, AG_FLOAT64);
    ag_tensor b3 = full((int64_t[]){3}, 1, 1, AG_FLOAT64), x3 = full((int64_t[]){2, 3, 7}, 3, 1, AG_FLOAT64);
    ag_tensor w3 = full((int64_t[]){4, 3, 3}, 3, 1, AG_FLOAT64), x32 = full((int64_t[]){2, 3, 5, 5}, 4, 1, AG_FLOAT32), out = SENT_HANDLE;
    bool ok = EXPECT(ag_conv2d(&out, x, w, b, 0, 1, 0, 0, 1, 1, 1), AG_ERR_ARGUMENT, "ag_conv2d: stride must be positive, got (0, 1)");
    ok &= EXPECT(ag_conv2d(&out, x, w, b, 1, 1, -1, 0, 1, 1, 1), AG_ERR_ARGUMENT, "padding must be non-negative, got (-1, 0)");
    ok &= EXPECT(ag_conv2d(&out, x, w, b, 1, 1, 0, 0, 0, 1, 1), AG_ERR_ARGUMENT, "dilation must be positive, got (0, 1)");
    ok &= EXPECT(ag_conv2d(&out, x, w, b, 1, 1, 0, 0, 1, 1, 0), AG_ERR_ARGUMENT, "groups must be positive, got 0");
    ok &= EXPECT(ag_conv2d(&out, x, wg, b, 1, 1, 0, 0, 1, 1, 1), AG_ERR_SHAPE,
                 "weight [4, 2, 3, 3] does not fit input [2, 3, 5, 5] with groups = 1 (want weight[1] = C/groups = 3)");
    ok &= EXPECT(ag_conv2d(&out, x, w, b, 1, 1, 0, 0, 1, 1, 2), AG_ERR_SHAPE, "3 input channels are not divisible by groups = 2");
    ok &= EXPECT(ag_conv2d(&out, x, w, b3, 1, 1, 0, 0, 1, 1, 1), AG_ERR_SHAPE, "bias has shape [3], want [4]");
    ok &= EXPECT(ag_conv2d(&out, x3, w, b, 1, 1, 0, 0, 1, 1, 1), AG_ERR_SHAPE, "the input must be 4-D (N, C, H, W), got shape [2, 3, 7]");
    ok &= EXPECT(ag_conv2d(&out, x, w, b, 1, 1, 0, 0, 3, 3, 1), AG_ERR_SHAPE, "is larger than the padded input (5) along H");
    ok &= EXPECT(ag_conv2d(&out, x32, w, b, 1, 1, 0, 0, 1, 1, 1), AG_ERR_DTYPE, "ag_conv2d: x is float32, weight is float64");
    ok &= EXPECT(ag_conv1d(&out, x3, w3, b, 0, 0, 1, 1), AG_ERR_ARGUMENT, "ag_conv1d: stride must be positive, got 0");
    ok &= EXPECT(ag_conv1d(&out, x, w3, b, 1, 0, 1, 1), AG_ERR_SHAPE, "the input must be 3-D (N, C, L), got shape [2, 3, 5, 5]");
    ok &= UNTOUCHED(out);
    ok &= OK(ag_conv2d(&out, x, w, b, 2, 2, 1, 1, 1, 1, 1)); /* accepted: (2, 4, 3, 3) */
    int64_t shape[4] = {0}, nd = 0;
    ok &= OK(ag_tensor_ndim(&nd, out)) && OK(ag_tensor_shape(shape, 4, out));
    ok &= CHECK(nd == 4 && shape[0] == 2 && shape[1] == 4 && shape[2] == 3 && shape[3] == 3);
    release(out), release(x), release(w), release(wg), release(b), release(b3), release(x3), release(w3), release(x32);
    return ok;
}

static bool b156(void) { /* ag_max_pool2d / ag_avg_pool2d / ag_adaptive_avg_pool2d: bad kernel, stride, padding, output size */
    ag_tensor x = full((int64_t[]){2, 3, 5, 5}, 4, 1, AG_FLOAT64), x3 = full((int64_t[]){2, 3, 7}, 3, 1, AG_FLOAT64), out = SENT_HANDLE;
    bool ok = EXPECT(ag_max_pool2d(&out, x, 0, 2, 0, 0, 0, 0), AG_ERR_ARGUMENT, "ag_max_pool2d: kernel size must be positive, got (0, 2)");
    ok &= EXPECT(ag_max_pool2d(&out, x, 2, 2, 1, 0, 0, 0), AG_ERR_ARGUMENT, "stride must be positive, or 0, 0 for the kernel size; got (1, 0)");
    ok &= EXPECT(ag_max_pool2d(&out, x, 2, 2, 0, 0, 2, 0), AG_ERR_ARGUMENT, "padding must be at most half the kernel size");
    ok &= EXPECT(ag_max_pool2d(&out, x3, 2, 2, 0, 0, 0, 0), AG_ERR_SHAPE, "the input must be 4-D (N, C, H, W), got shape [2, 3, 7]");
    ok &= EXPECT(ag_avg_pool2d(&out, x, 7, 7, 0, 0, 0, 0, true), AG_ERR_SHAPE, "ag_avg_pool2d: the kernel (span 7");
    ok &= EXPECT(ag_adaptive_avg_pool2d(&out, x, -1, 2), AG_ERR_ARGUMENT, "output size must be non-negative, got (-1, 2)");
    /* once an abort of the whole process (a 2147483647 x 5 matrix of doubles) */
    ok &= EXPECT(ag_adaptive_avg_pool2d(&out, x, 2, 2147483647), AG_ERR_SHAPE, "more than the 2^28 entries allowed");
    ok &= UNTOUCHED(out);
    ok &= OK(ag_adaptive_avg_pool2d(&out, x, 0, 2147483647)); /* accepted: an empty output, no matrix */
    release(out), release(x), release(x3);
    return ok;
}

static bool b157(void) { /* ag_layer_norm / ag_group_norm: bad normalized_ndim, eps, groups, affine shapes */
    ag_tensor x2 = full((int64_t[]){2, 3}, 2, 1, AG_FLOAT64), w3 = full((int64_t[]){3}, 1, 1, AG_FLOAT64);
    ag_tensor w5 = full((int64_t[]){5}, 1, 1, AG_FLOAT64), x = full((int64_t[]){2, 3, 5, 5}, 4, 1, AG_FLOAT64), out = SENT_HANDLE;
    bool ok = EXPECT(ag_layer_norm(&out, x2, 0, AG_NULL_TENSOR, AG_NULL_TENSOR, 1e-5), AG_ERR_ARGUMENT,
                     "ag_layer_norm: normalized_ndim must be in 1...2 for an input of shape [2, 3], got 0");
    ok &= EXPECT(ag_layer_norm(&out, x2, 1, w3, AG_NULL_TENSOR, -1), AG_ERR_ARGUMENT, "eps must be finite and >= 0, got -1.0");
    ok &= EXPECT(ag_layer_norm(&out, x2, 1, w5, AG_NULL_TENSOR, 1e-5), AG_ERR_SHAPE, "weight has shape [5], the normalized axes of [2, 3] are [3]");
    ok &= EXPECT(ag_group_norm(&out, x, 2, AG_NULL_TENSOR, AG_NULL_TENSOR, 1e-5), AG_ERR_ARGUMENT,
                 "ag_group_norm: groups must be positive and divide the 3 channels, got 2");
    ok &= EXPECT(ag_group_norm(&out, x, 0, AG_NULL_TENSOR, AG_NULL_TENSOR, 1e-5), AG_ERR_ARGUMENT, "divide the 3 channels, got 0");
    ok &= UNTOUCHED(out);
    release(x2), release(w3), release(w5), release(x);
    return ok;
}

static bool b158(void) { /* ag_batch_norm: one value per channel in training, running statistics missing or requiring grad, rank */
    ag_tensor x13 = full((int64_t[]){1, 3}, 2, 1, AG_FLOAT64), x2 = full((int64_t[]){2, 3}, 2, 1, AG_FLOAT64), v = full((int64_t[]){5}, 1, 1, AG_FLOAT64);
    ag_tensor rm = full((int64_t[]){3}, 1, 0, AG_FLOAT64), rv = full((int64_t[]){3}, 1, 1, AG_FLOAT64), out = SENT_HANDLE;
    bool ok = EXPECT(ag_batch_norm(&out, x13, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, true, 0.1, 1e-5), AG_ERR_ARGUMENT,
                     "ag_batch_norm: expected more than 1 value per channel when training, got input shape [1, 3]");
    ok &= EXPECT(ag_batch_norm(&out, x2, rm, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, true, 0.1, 1e-5), AG_ERR_ARGUMENT,
                 "running_mean and running_var must both be given or both be none");
    ok &= EXPECT(ag_batch_norm(&out, x2, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, false, 0.1, 1e-5), AG_ERR_ARGUMENT,
                 "eval mode (training false) needs running_mean and running_var");
    ok &= EXPECT(ag_batch_norm(&out, v, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, AG_NULL_TENSOR, true, 0.1, 1e-5), AG_ERR_SHAPE,
                 "the input must be (N, C, *) with rank >= 2, got shape [5]");
    ok &= OK(ag_tensor_set_requires_grad(rv, true));
    ok &= EXPECT(ag_batch_norm(&out, x2, rm, rv, AG_NULL_TENSOR, AG_NULL_TENSOR, true, 0.1, 1e-5), AG_ERR_STATE,
                 "running_var requires grad; running statistics are updated in place in training and must not require grad");
    ok &= UNTOUCHED(out);
    release(x13), release(x2), release(v), release(rm), release(rv);
    return ok;
}

static bool b159(void) { /* ag_scaled_dot_product_attention: mask with is_causal, extents that differ, dtypes, scale, rank */
    ag_tensor q = full((int64_t[]){2, 4, 8}, 3, 1, AG_FLOAT64), k = full((int64_t[]){2, 5, 6}, 3, 1, AG_FLOAT64);
    ag_tensor v = full((int64_t[]){2, 6, 8}, 3, 1, AG_FLOAT64), m44 = full((int64_t[]){4, 4}, 2, 0, AG_FLOAT64);
    ag_tensor m45 = full((int64_t[]){4, 5}, 2, 0, AG_FLOAT64), q32 = full((int64_t[]){2, 4, 8}, 3, 1, AG_FLOAT32);
    ag_tensor r1 = full((int64_t[]){5}, 1, 1, AG_FLOAT64), out = SENT_HANDLE;
    bool ok = EXPECT(ag_scaled_dot_product_attention(&out, q, q, q, m44, true, 0), AG_ERR_ARGUMENT, "ag_scaled_dot_product_attention:");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, q, q, q, m45, false, 0), AG_ERR_SHAPE,
                 "attn_mask of shape [4, 5] does not broadcast to the scores' shape [2, 4, 4]");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, q, k, k, AG_NULL_TENSOR, false, 0), AG_ERR_SHAPE,
                 "query [2, 4, 8] and key [2, 5, 6] have different feature extents (8 and 6)");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, q, q, v, AG_NULL_TENSOR, false, 0), AG_ERR_SHAPE,
                 "key [2, 4, 8] and value [2, 6, 8] have different lengths (4 and 6)");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, q, q32, q, AG_NULL_TENSOR, false, 0), AG_ERR_DTYPE, "key is float32 but query is float64");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, q, q, q, AG_NULL_TENSOR, false, NAN), AG_ERR_ARGUMENT, "scale must be finite (0: 1/sqrt(E)), got nan");
    ok &= EXPECT(ag_scaled_dot_product_attention(&out, r1, r1, r1, AG_NULL_TENSOR, false, 0), AG_ERR_SHAPE,
                 "query must have rank >= 2 (..., length, features), got shape [5]");
    ok &= UNTOUCHED(out);
    release(q), release(k), release(v), release(m44), release(m45), release(q32), release(r1);
    return ok;
}

static bool b160(void) { /* ag_clip_grad_norm / ag_lr_warmup_cosine: NULL out, bad counts, repeats, bounds, schedules */
    ag_tensor p = full((int64_t[]){3}, 1, 1, AG_FLOAT64);
    ag_tensor ps[2] = {p, p};
    double total = -7, lr = -7;
    bool ok = EXPECT(ag_clip_grad_norm(NULL, ps, 1, 1, 2), AG_ERR_ARGUMENT, "the output pointer 'out_total_norm' is NULL");
    ok &= EXPECT(ag_clip_grad_norm(&total, ps, -1, 1, 2), AG_ERR_ARGUMENT, "ag_clip_grad_norm: n (-1) is negative");
    ok &= EXPECT(ag_clip_grad_norm(&total, ps, 2, 1, 2), AG_ERR_ARGUMENT, "parameter 1 repeats parameter 0");
    ok &= EXPECT(ag_clip_grad_norm(&total, ps, 1, -1, 2), AG_ERR_ARGUMENT, "max_norm must be >= 0 (not nan), got -1.0");
    ok &= EXPECT(ag_clip_grad_norm(&total, ps, 1, 1, 0), AG_ERR_ARGUMENT, "norm_type must be > 0 or inf, got 0.0");
    ok &= CHECK(total == -7);
    ok &= EXPECT(ag_lr_warmup_cosine(&lr, -1, 10, 100, 0.1, 0.01), AG_ERR_ARGUMENT, "step must be >= 0, got -1");
    ok &= EXPECT(ag_lr_warmup_cosine(&lr, 1, 10, 5, 0.1, 0.01), AG_ERR_ARGUMENT, "total_steps (5) is below warmup_steps (10)");
    ok &= EXPECT(ag_lr_warmup_cosine(&lr, 1, 10, 100, 0.01, 0.1), AG_ERR_ARGUMENT, "min_lr (0.1) is above base_lr (0.01)");
    ok &= EXPECT(ag_lr_warmup_cosine(&lr, 1, 10, 100, NAN, 0.01), AG_ERR_ARGUMENT, "base_lr must be finite and >= 0, got nan");
    ok &= EXPECT(ag_lr_warmup_cosine(NULL, 1, 10, 100, 0.1, 0.01), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= CHECK(lr == -7);
    ok &= OK(ag_clip_grad_norm(&total, ps, 0, 1, 2)) && CHECK(total == 0); /* accepted: no parameter */
    release(p);
    return ok;
}

/* Safetensors files (B161..B170): files built in memory, byte by byte. */

#define SENT_FILE ((ag_safetensors)0x5A5A5A5A5A5A5A5AULL)

/* The 8-byte little-endian header length, the header, then ndata bytes of data (zeros when
 * data is NULL); returns the length. */
static size_t st_build(unsigned char *out, const char *header, const unsigned char *data, size_t ndata) {
    size_t h = strlen(header);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(out + 8, header, h);
    if (data) memcpy(out + 8 + h, data, ndata);
    else memset(out + 8 + h, 0, ndata);
    return 8 + h + ndata;
}

/* ag_safetensors_open_memory of the header and ndata zero bytes must fail with `want` and a
 * message containing `frag`, and leave its output alone. */
static bool st_refused_at(const char *header, size_t ndata, ag_status want, const char *frag, int line) {
    static unsigned char buf[4096];
    size_t n = st_build(buf, header, NULL, ndata);
    ag_safetensors f = SENT_FILE;
    bool ok = expect_at((prime(), ag_safetensors_open_memory(&f, buf, (int64_t)n)), want, frag, header, line);
    if (f != SENT_FILE) ok = fail_at(line, "ag_safetensors_open_memory wrote its output although it failed");
    return ok;
}
#define ST_REFUSED(header, ndata, want, frag) st_refused_at((header), (ndata), (want), (frag), __LINE__)

/* A valid file of the header and data, opened from memory (0 on failure). */
static ag_safetensors st_open(const char *header, const unsigned char *data, size_t ndata) {
    static unsigned char buf[4096];
    size_t n = st_build(buf, header, data, ndata);
    ag_safetensors f = 0;
    if (ag_safetensors_open_memory(&f, buf, (int64_t)n) != AG_OK) {
        FAIL("setup: ag_safetensors_open_memory: %s", ag_last_error());
        return 0;
    }
    return f;
}

static void st_close(ag_safetensors f) {
    if (ag_safetensors_close(f) != AG_OK) FAIL("cleanup: ag_safetensors_close: %s", ag_last_error());
}

/* A fresh temporary directory's path in `dir` (64 bytes), or "" on failure. */
static void st_tempdir(char *dir) {
    snprintf(dir, 64, "/tmp/ag-bad-input-XXXXXX");
    if (!mkdtemp(dir)) {
        FAIL("setup: mkdtemp failed");
        dir[0] = '\0';
    }
}

static bool b161(void) { /* ag_safetensors_open / _open_memory: NULLs, lengths, paths that are no file */
    unsigned char buf[16] = {0};
    ag_safetensors f = SENT_FILE;
    bool ok = EXPECT(ag_safetensors_open(NULL, "/tmp/x"), AG_ERR_ARGUMENT, "ag_safetensors_open: the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_open(&f, NULL), AG_ERR_ARGUMENT, "ag_safetensors_open: path is NULL");
    ok &= EXPECT(ag_safetensors_open(&f, "/tmp/\xff\xfe"), AG_ERR_ARGUMENT, "path is not valid UTF-8");
    ok &= EXPECT(ag_safetensors_open_memory(NULL, buf, 16), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_open_memory(&f, NULL, 16), AG_ERR_ARGUMENT, "ag_safetensors_open_memory: data is NULL but length is 16");
    ok &= EXPECT(ag_safetensors_open_memory(&f, buf, -1), AG_ERR_ARGUMENT, "length (-1) is negative");
    ok &= EXPECT(ag_safetensors_open(&f, "/nonexistent-autograd/m.safetensors"), AG_ERR_IO,
                 "ag_safetensors_open: cannot open '/nonexistent-autograd/m.safetensors': No such file or directory");
    char dir[64], under[128];
    st_tempdir(dir);
    ok &= EXPECT(ag_safetensors_open(&f, dir), AG_ERR_IO, "it is not a regular file");
    snprintf(under, sizeof under, "%s/fifo", dir);
    if (mkfifo(under, 0644) == 0) {
        ok &= EXPECT(ag_safetensors_open(&f, under), AG_ERR_IO, "it is not a regular file");
        unlink(under);
    } else {
        ok &= FAIL("setup: mkfifo failed");
    }
    snprintf(under, sizeof under, "%s/plain", dir);
    FILE *p = fopen(under, "wb");
    if (p) fclose(p);
    snprintf(under, sizeof under, "%s/plain/m.safetensors", dir);
    ok &= EXPECT(ag_safetensors_open(&f, under), AG_ERR_IO, "Not a directory");
    snprintf(under, sizeof under, "%s/plain", dir);
    unlink(under);
    rmdir(dir);
    ok &= CHECK(f == SENT_FILE);
    return ok;
}

static bool b162(void) { /* a truncated file: fewer than 8 bytes, a header length past the end */
    unsigned char buf[32] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    ag_safetensors f = SENT_FILE;
    bool ok = EXPECT(ag_safetensors_open_memory(&f, buf, 5), AG_ERR_FORMAT,
                     "ag_safetensors_open_memory: the buffer is truncated: it has 5 bytes, fewer than the 8 of the header length");
    ok &= EXPECT(ag_safetensors_open_memory(&f, buf, 0), AG_ERR_FORMAT, "it has 0 bytes");
    ok &= EXPECT(ag_safetensors_open_memory(&f, buf, 10), AG_ERR_FORMAT, "is truncated: the header length is 100 bytes but only 2 follow it");
    /* From a file: the message names it. */
    char dir[64], path[128];
    st_tempdir(dir);
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    FILE *p = fopen(path, "wb");
    if (p) {
        fwrite(buf, 1, 10, p);
        fclose(p);
    }
    char frag[200];
    snprintf(frag, sizeof frag, "'%s' is truncated: the header length is 100 bytes", path);
    ok &= EXPECT(ag_safetensors_open(&f, path), AG_ERR_FORMAT, frag);
    unlink(path);
    rmdir(dir);
    ok &= CHECK(f == SENT_FILE);
    return ok;
}

static bool b163(void) { /* an absurd header length */
    unsigned char buf[16] = {0x01, 0xE1, 0xF5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100,000,001 */
    ag_safetensors f = SENT_FILE;
    bool ok = EXPECT(ag_safetensors_open_memory(&f, buf, 10), AG_ERR_FORMAT,
                     "the header length 100000001 is above the format's limit of 100000000 bytes");
    memset(buf, 0xFF, 8);
    ok &= EXPECT(ag_safetensors_open_memory(&f, buf, 16), AG_ERR_FORMAT, "the header length 18446744073709551615 is above");
    ok &= CHECK(f == SENT_FILE);
    return ok;
}

static bool b164(void) { /* a header that is not the format's JSON */
    bool ok = ST_REFUSED(" {}", 0, AG_ERR_FORMAT, "the header must start with '{'");
    ok &= ST_REFUSED("{\"a\":", 0, AG_ERR_FORMAT, "bad header JSON at byte 5: expected an object for tensor \"a\"");
    ok &= ST_REFUSED("{} x", 0, AG_ERR_FORMAT, "after the header's JSON object");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT, "duplicate key \"a\"");
    ok &= ST_REFUSED("{\"\xc3(\":{}}", 0, AG_ERR_FORMAT, "not valid UTF-8");
    ok &= ST_REFUSED("{\"\\ud800\":{}}", 0, AG_ERR_FORMAT, "a lone surrogate");
    ok &= ST_REFUSED("{\"\\u0000\":{}}", 0, AG_ERR_FORMAT, "cannot hold NUL");
    ok &= ST_REFUSED("{\"a\tb\":{}}", 0, AG_ERR_FORMAT, "a raw control character");
    ok &= ST_REFUSED("{\"a\":[]}", 0, AG_ERR_FORMAT, "expected an object for tensor \"a\"");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4, AG_ERR_FORMAT,
                     "has an unknown key \"extra\"");
    ok &= ST_REFUSED("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT, "tensor \"a\" has no dtype");
    ok &= ST_REFUSED("{\"__metadata__\":{\"k\":1}}", 0, AG_ERR_FORMAT, "the \"__metadata__\" value of \"k\" is not a string");
    ok &= ST_REFUSED("{\"__metadata__\":[]}", 0, AG_ERR_FORMAT, "expected an object of strings for \"__metadata__\"");
    return ok;
}

static bool b165(void) { /* unknown dtypes, numbers a shape or offsets may not hold, rank > 64 */
    bool ok = ST_REFUSED("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                         "tensor \"a\" has an unknown dtype \"F33\"");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT, "must be non-negative, got -1");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                     "must be an integer without fraction or exponent, got 1.5");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4, AG_ERR_FORMAT,
                     "without fraction or exponent, got 4e0");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                     "9223372036854775808 does not fit int64");
    char header[512];
    int k = snprintf(header, sizeof header, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1");
    for (int i = 1; i < 65; i++) k += snprintf(header + k, sizeof header - (size_t)k, ",1");
    snprintf(header + k, sizeof header - (size_t)k, "],\"data_offsets\":[0,4]}}");
    ok &= ST_REFUSED(header, 4, AG_ERR_FORMAT, "the shape of \"a\" has more than 64 entries");
    return ok;
}

static bool b166(void) { /* headers that lie about the data */
    bool ok = ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", 4, AG_ERR_FORMAT,
                         "tensor \"a\": data_offsets [0, 8] run past the end of the data (4 bytes)");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, AG_ERR_FORMAT, "end before they begin");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                     "tensor \"a\" has 4 bytes (data_offsets [0, 4]) but shape [3] of F32 needs 12");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                     "the element count of shape [4294967296, 4294967296] overflows int64");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,4]}}", 4, AG_ERR_FORMAT,
                     "the byte size of shape [2305843009213693952] of F64 overflows int64");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, AG_ERR_FORMAT,
                     "tensor \"b\" (data_offsets [4, 12]) overlaps tensor \"a\" (data_offsets [0, 8])");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, AG_ERR_FORMAT,
                     "leaves a gap of 4 bytes after byte 4");
    ok &= ST_REFUSED("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, AG_ERR_FORMAT,
                     "the data has 8 bytes but the tensors cover only the first 4");
    return ok;
}

static bool b167(void) { /* the readers' arguments */
    ag_safetensors f = st_open("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", NULL, 4);
    const char *s = (const char *)"sentinel";
    const char *s2 = s;
    int64_t n = SENT_I64, shape[1] = {SENT_I64};
    ag_dtype dt = 77;
    bool ok = EXPECT(ag_safetensors_count(NULL, f), AG_ERR_ARGUMENT, "ag_safetensors_count: the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_name(NULL, f, 0), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_name(&s, f, 1), AG_ERR_ARGUMENT, "ag_safetensors_name: index 1 is outside 0..<1 (the file has 1 tensors)");
    ok &= EXPECT(ag_safetensors_name(&s, f, -1), AG_ERR_ARGUMENT, "index -1 is outside 0..<1");
    ok &= EXPECT(ag_safetensors_info(&dt, &n, shape, -1, f, "a"), AG_ERR_ARGUMENT, "capacity (-1) is negative");
    ok &= EXPECT(ag_safetensors_info(&dt, &n, NULL, 1, f, "a"), AG_ERR_ARGUMENT, "out_shape is NULL but capacity is 1");
    ok &= EXPECT(ag_safetensors_info(&dt, &n, shape, 1, f, NULL), AG_ERR_ARGUMENT, "ag_safetensors_info: name is NULL");
    ok &= EXPECT(ag_safetensors_info(&dt, &n, shape, 1, f, "b"), AG_ERR_ARGUMENT, "no tensor named \"b\" in the file");
    ok &= EXPECT(ag_safetensors_metadata_count(NULL, f), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_metadata_entry(&s, &s2, f, 0), AG_ERR_ARGUMENT, "index 0 is outside 0..<0 (the file has 0 metadata entries)");
    ok &= EXPECT(ag_safetensors_metadata(NULL, f, "k"), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_safetensors_metadata(&s, f, NULL), AG_ERR_ARGUMENT, "ag_safetensors_metadata: key is NULL");
    ok &= CHECK(n == SENT_I64 && shape[0] == SENT_I64 && dt == 77 && s == s2);
    ok &= OK(ag_safetensors_metadata(&s, f, "k")) && CHECK(s == NULL); /* accepted: no such key */
    st_close(f);
    return ok;
}

static bool b168(void) { /* ag_safetensors_load: a dtype Autograd does not hold, rank > 8, a bad BOOL byte, a shrunk file */
    const unsigned char data[8] = {0, 0, 0, 0, 0, 0, 1, 2};
    ag_safetensors f = st_open("{\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                               "\"r\":{\"dtype\":\"BOOL\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[4,5]},"
                               "\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[5,8]}}", data, 8);
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_safetensors_load(&out, f, "h"), AG_ERR_DTYPE, "ag_safetensors_load: tensor \"h\" is BF16, which Autograd does not hold");
    ok &= EXPECT(ag_safetensors_load(&out, f, "r"), AG_ERR_SHAPE, "tensor \"r\" has rank 9, above the maximum rank 8");
    ok &= EXPECT(ag_safetensors_load(&out, f, "m"), AG_ERR_FORMAT, "tensor \"m\" (BOOL) holds the byte 2 at element 2");
    ok &= EXPECT(ag_safetensors_load(&out, f, "x"), AG_ERR_ARGUMENT, "no tensor named \"x\" in the file");
    ok &= EXPECT(ag_safetensors_load(&out, f, NULL), AG_ERR_ARGUMENT, "name is NULL");
    ok &= EXPECT(ag_safetensors_load(NULL, f, "m"), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= UNTOUCHED(out);
    /* Listed and described all the same. */
    ag_dtype dt = 77;
    int64_t nd = -1, shape[9] = {0};
    ok &= OK(ag_safetensors_info(&dt, &nd, shape, 9, f, "r")) && CHECK(dt == AG_BOOL && nd == 9 && shape[8] == 1);
    ok &= OK(ag_safetensors_info(&dt, &nd, shape, 9, f, "h")) && CHECK(dt == 0 && nd == 1 && shape[0] == 2);
    st_close(f);
    /* A file cut short after it was opened. */
    char dir[64], path[128];
    st_tempdir(dir);
    snprintf(path, sizeof path, "%s/shrinks.safetensors", dir);
    double v[4] = {1, 2, 3, 4};
    ag_tensor t = vec64(4, v);
    const char *names[1] = {"a"};
    ag_safetensors g = 0;
    ok &= OK(ag_safetensors_save(path, names, &t, 1, NULL, NULL, 0));
    ok &= OK(ag_safetensors_open(&g, path));
    FILE *p = fopen(path, "r+b");
    if (p) {
        ok &= CHECK(ftruncate(fileno(p), 40) == 0);
        fclose(p);
    }
    ok &= EXPECT(ag_safetensors_load(&out, g, "a"), AG_ERR_IO, "shorter than when it was opened");
    ok &= UNTOUCHED(out);
    st_close(g);
    release(t);
    unlink(path);
    rmdir(dir);
    return ok;
}

static bool b169(void) { /* ag_safetensors_save: arguments, names, keys, handles, paths */
    char dir[64], path[128];
    st_tempdir(dir);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    ag_tensor t = scalar64(1), dead = scalar64(2);
    release(dead);
    ag_tensor two[2] = {t, t};
    const char *a[1] = {"a"}, *aa[2] = {"a", "a"}, *null_name[1] = {NULL}, *empty[1] = {""};
    const char *bad[1] = {"\xc3("}, *meta[1] = {"__metadata__"}, *kk[2] = {"k", "k"}, *vv[2] = {"1", "2"};
    bool ok = EXPECT(ag_safetensors_save(NULL, a, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "ag_safetensors_save: path is NULL");
    ok &= EXPECT(ag_safetensors_save(path, a, &t, -1, NULL, NULL, 0), AG_ERR_ARGUMENT, "n (-1) is negative");
    ok &= EXPECT(ag_safetensors_save(path, a, &t, 1, NULL, NULL, -1), AG_ERR_ARGUMENT, "nmetadata (-1) is negative");
    ok &= EXPECT(ag_safetensors_save(path, NULL, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "names is NULL but n is 1");
    ok &= EXPECT(ag_safetensors_save(path, a, NULL, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "tensors is NULL but n is 1");
    ok &= EXPECT(ag_safetensors_save(path, null_name, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "names[0] is NULL");
    ok &= EXPECT(ag_safetensors_save(path, empty, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "the name of tensor 0 is empty");
    ok &= EXPECT(ag_safetensors_save(path, bad, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "names[0] is not valid UTF-8");
    ok &= EXPECT(ag_safetensors_save(path, meta, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT, "may not be called \"__metadata__\"");
    ok &= EXPECT(ag_safetensors_save(path, aa, two, 2, NULL, NULL, 0), AG_ERR_ARGUMENT, "the name \"a\" of tensor 1 repeats an earlier tensor's");
    ok &= EXPECT(ag_safetensors_save(path, a, &t, 1, kk, vv, 2), AG_ERR_ARGUMENT, "the metadata key \"k\" (entry 1) repeats an earlier key");
    ok &= EXPECT(ag_safetensors_save(path, a, &t, 1, NULL, vv, 1), AG_ERR_ARGUMENT, "metadata_keys is NULL but nmetadata is 1");
    ok &= EXPECT(ag_safetensors_save(path, a, &t, 1, kk, NULL, 1), AG_ERR_ARGUMENT, "metadata_values is NULL but nmetadata is 1");
    ok &= EXPECT(ag_safetensors_save(path, a, &dead, 1, NULL, NULL, 0), AG_ERR_INVALID_HANDLE, "tensors[0] handle");
    ok &= CHECK(access(path, F_OK) != 0); /* nothing was written */
    ok &= EXPECT(ag_safetensors_save("/nonexistent-autograd/m.safetensors", a, &t, 1, NULL, NULL, 0), AG_ERR_IO,
                 "cannot create '/nonexistent-autograd/m.safetensors.tmp.");
    ok &= EXPECT(ag_safetensors_save("/nonexistent-autograd/m.safetensors", a, &t, 1, NULL, NULL, 0), AG_ERR_IO,
                 "No such file or directory");
    release(t);
    rmdir(dir);
    return ok;
}

static bool b170(void) { /* safetensors handles: 0, closed, made up, a tensor; a safetensors handle as a tensor */
    ag_safetensors f = st_open("{}", NULL, 0), closed = st_open("{}", NULL, 0);
    st_close(closed);
    ag_tensor t = scalar64(1), out = SENT_HANDLE;
    int64_t n = SENT_I64;
    bool ok = EXPECT(ag_safetensors_count(&n, 0), AG_ERR_INVALID_HANDLE, "ag_safetensors_count: safetensors handle is 0");
    ok &= EXPECT(ag_safetensors_count(&n, closed), AG_ERR_INVALID_HANDLE,
                 "is not a live safetensors handle (closed, made up, or of another kind)");
    ok &= EXPECT(ag_safetensors_load(&out, closed, "a"), AG_ERR_INVALID_HANDLE, "is not a live safetensors handle");
    ok &= EXPECT(ag_safetensors_metadata_count(&n, (ag_safetensors)0x0123456789ABCDEFULL), AG_ERR_INVALID_HANDLE,
                 "is not a live safetensors handle");
    ok &= EXPECT(ag_safetensors_count(&n, (ag_safetensors)t), AG_ERR_INVALID_HANDLE, "is not a live safetensors handle");
    ok &= EXPECT(ag_safetensors_close((ag_safetensors)t), AG_ERR_INVALID_HANDLE, "ag_safetensors_close: handle 0x");
    ok &= EXPECT(ag_safetensors_close(closed), AG_ERR_INVALID_HANDLE, "(already closed, made up, or of another kind)");
    ok &= EXPECT(ag_tensor_numel(&n, (ag_tensor)f), AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(n == SENT_I64) && UNTOUCHED(out);
    ok &= OK(ag_safetensors_close(0)); /* accepted */
    ok &= OK(ag_tensor_numel(&n, t)) && CHECK(n == 1); /* the tensor lives on */
    st_close(f);
    release(t);
    return ok;
}

/* ---- Shared memory and DLPack (B171 - B180) ------------------------------------------------ */

/* destroy callbacks and DLPack deleters: a rejected call must never run them. */
static int g_lent_released;
static void lent_destroy(void *user_data) {
    (void)user_data;
    g_lent_released++;
}
static void lent_deleter(DLManagedTensorVersioned *self) {
    (void)self;
    g_lent_released++;
}

static double g_lent[8];
static int64_t g_lent_shape[8], g_lent_strides[8];

/* A valid float64 DLPack tensor of shape [4] over g_lent (each entry then breaks one field). */
static DLManagedTensorVersioned lent_tensor(void) {
    DLManagedTensorVersioned m;
    memset(&m, 0, sizeof m);
    m.version.major = 1;
    m.deleter = lent_deleter;
    m.dl_tensor.data = g_lent;
    m.dl_tensor.device.device_type = kDLCPU;
    m.dl_tensor.ndim = 1;
    m.dl_tensor.dtype.code = kDLFloat;
    m.dl_tensor.dtype.bits = 64;
    m.dl_tensor.dtype.lanes = 1;
    g_lent_shape[0] = 4;
    m.dl_tensor.shape = g_lent_shape;
    return m;
}

/* A READ_ONLY import over g_lent, shape [3] (its deleter counts in g_lent_released). */
static ag_tensor read_only_import(void) {
    static DLManagedTensorVersioned m;
    m = lent_tensor();
    g_lent_shape[0] = 3;
    m.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
    ag_tensor t = AG_NULL_TENSOR;
    if (ag_tensor_from_dlpack(&t, &m) != AG_OK) FAIL("setup: ag_tensor_from_dlpack: %s", ag_last_error());
    return t;
}

static bool b171(void) { /* ag_tensor_from_buffer: data NULL with elements, out NULL */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_from_buffer(&out, NULL, (int64_t[]){2, 3}, 2, AG_FLOAT64, NULL, lent_destroy),
                     AG_ERR_ARGUMENT, "ag_tensor_from_buffer: data is NULL but the shape [2, 3] has 6 elements");
    ok &= EXPECT(ag_tensor_from_buffer(NULL, g_lent, (int64_t[]){2}, 1, AG_FLOAT64, NULL, lent_destroy), AG_ERR_ARGUMENT,
                 "the output pointer 'out' is NULL");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    ok &= OK(ag_tensor_from_buffer(&out, NULL, (int64_t[]){0, 3}, 2, AG_FLOAT64, NULL, lent_destroy)); /* accepted */
    release(out);
    ok &= CHECK(g_lent_released == 1);
    return ok;
}

static bool b172(void) { /* ag_tensor_from_buffer: misaligned data */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    bool ok = EXPECT(ag_tensor_from_buffer(&out, (char *)g_lent + 4, (int64_t[]){2}, 1, AG_FLOAT64, NULL, lent_destroy),
                     AG_ERR_ARGUMENT, "is not aligned to the 8-byte elements of float64");
    ok &= EXPECT(ag_tensor_from_buffer(&out, (char *)g_lent + 2, (int64_t[]){2}, 1, AG_FLOAT32, NULL, lent_destroy),
                 AG_ERR_ARGUMENT, "is not aligned to the 4-byte elements of float32");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    return ok;
}

static bool b173(void) { /* ag_tensor_from_buffer: rank, extent, dtype */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    bool ok = EXPECT(ag_tensor_from_buffer(&out, g_lent, nine, 9, AG_FLOAT64, NULL, lent_destroy), AG_ERR_ARGUMENT,
                     "ag_tensor_from_buffer: ndim 9 is outside 0...8");
    ok &= EXPECT(ag_tensor_from_buffer(&out, g_lent, (int64_t[]){2, -3}, 2, AG_FLOAT64, NULL, lent_destroy), AG_ERR_SHAPE,
                 "negative extent -3 in shape [2, -3]");
    ok &= EXPECT(ag_tensor_from_buffer(&out, g_lent, (int64_t[]){2}, 1, 9, NULL, lent_destroy), AG_ERR_DTYPE,
                 "unknown dtype 9");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    return ok;
}

static bool b174(void) { /* ag_tensor_data_ptr_mut: a result, a leaf requiring grad with grad mode on, out NULL */
    ag_tensor w = leaf_rg(vec64(2, (double[]){1, 2})), y = AG_NULL_TENSOR;
    bool ok = OK(ag_mul(&y, w, w));
    void *p = &g_lent;
    int64_t v0 = SENT_I64, v1 = SENT_I64;
    ok &= OK(ag_tensor_version(&v0, w));
    ok &= EXPECT(ag_tensor_data_ptr_mut(&p, y), AG_ERR_STATE, "ag_tensor_data_ptr_mut: the tensor is the result of 'mul'");
    ok &= EXPECT(ag_tensor_data_ptr_mut(&p, w), AG_ERR_STATE, "requires grad while grad mode is on");
    ok &= EXPECT(ag_tensor_data_ptr_mut(NULL, w), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_version(NULL, w), AG_ERR_ARGUMENT, "ag_tensor_version: the output pointer 'out' is NULL");
    ok &= CHECK(p == (void *)&g_lent);
    ok &= OK(ag_tensor_version(&v1, w)) && CHECK(v1 == v0);
    release(w), release(y);
    return ok;
}

static bool b175(void) { /* in-place writes into read-only memory */
    for (int i = 0; i < 8; i++) g_lent[i] = i + 1;
    g_lent_released = 0;
    ag_tensor t = read_only_import(), src = vec64(3, (double[]){9, 9, 9}), out = SENT_HANDLE;
    double nines[3] = {9, 9, 9};
    bool ok = EXPECT(ag_tensor_copy_(t, src), AG_ERR_STATE, "ag_tensor_copy_: in-place write: the tensor is read-only memory");
    ok &= EXPECT(ag_tensor_set_data(t, nines, 3, AG_FLOAT64), AG_ERR_STATE, "is read-only memory");
    void *p = NULL;
    ok &= EXPECT(ag_tensor_data_ptr_mut(&p, t), AG_ERR_STATE, "ag_tensor_data_ptr_mut: the tensor is read-only memory");
    ok &= CHECK(p == NULL);
    ag_tensor x = full((int64_t[]){4, 3}, 2, 1, AG_FLOAT64);
    ok &= EXPECT(ag_batch_norm(&out, x, t, src, AG_NULL_TENSOR, AG_NULL_TENSOR, true, 0.1, 1e-5), AG_ERR_STATE,
                 "ag_batch_norm: running_mean (updated in place in training) is read-only memory");
    ok &= UNTOUCHED(out);
    ok &= OK(ag_tensor_set_requires_grad(t, true));
    ag_optimizer opt = 0;
    ok &= EXPECT(ag_optimizer_sgd(&opt, &t, 1, 0.1, 0, false, 0), AG_ERR_STATE, "parameter 0 is read-only memory");
    ok &= EXPECT(ag_optimizer_adam(&opt, &t, 1, 0.1, 0.9, 0.999, 1e-8, 0), AG_ERR_STATE, "parameter 0 is read-only memory");
    ok &= CHECK(opt == 0);
    ok &= CHECK(g_lent[0] == 1 && g_lent[1] == 2 && g_lent[2] == 3);
    release(t), release(src), release(x);
    ok &= CHECK(g_lent_released == 1);
    return ok;
}

static bool b176(void) { /* ag_tensor_to_dlpack / _unversioned: out NULL; unversioned read-only */
    g_lent_released = 0;
    ag_tensor t = read_only_import(), v = vec64(2, (double[]){1, 2});
    bool ok = EXPECT(ag_tensor_to_dlpack(NULL, v), AG_ERR_ARGUMENT, "ag_tensor_to_dlpack: the output pointer 'out' is NULL");
    ok &= EXPECT(ag_tensor_to_dlpack_unversioned(NULL, v), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    DLManagedTensor *u = NULL;
    ok &= EXPECT(ag_tensor_to_dlpack_unversioned(&u, t), AG_ERR_STATE,
                 "which the unversioned DLManagedTensor cannot mark read-only");
    ok &= CHECK(u == NULL);
    release(t), release(v);
    ok &= CHECK(g_lent_released == 1);
    return ok;
}

static bool b177(void) { /* ag_tensor_from_dlpack: m NULL, out NULL, major version 2 */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    DLManagedTensorVersioned m = lent_tensor();
    bool ok = EXPECT(ag_tensor_from_dlpack(&out, NULL), AG_ERR_ARGUMENT, "ag_tensor_from_dlpack: m is NULL");
    ok &= EXPECT(ag_tensor_from_dlpack_unversioned(&out, NULL), AG_ERR_ARGUMENT, "ag_tensor_from_dlpack_unversioned: m is NULL");
    ok &= EXPECT(ag_tensor_from_dlpack(NULL, &m), AG_ERR_ARGUMENT, "the output pointer 'out' is NULL");
    m.version.major = 2;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "DLPack version 2.0 is not supported");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    return ok;
}

static bool b178(void) { /* ag_tensor_from_dlpack: device, dtype */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    DLManagedTensorVersioned m = lent_tensor();
    m.dl_tensor.device.device_type = kDLCUDA;
    bool ok = EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "is on device type 2 (device_id 0)");
    static const uint8_t bad[][3] = {{kDLFloat, 16, 1}, {kDLUInt, 8, 1}, {kDLInt, 32, 1}, {kDLFloat, 64, 2}, {kDLComplex, 64, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = lent_tensor();
        m.dl_tensor.dtype.code = bad[i][0];
        m.dl_tensor.dtype.bits = bad[i][1];
        m.dl_tensor.dtype.lanes = bad[i][2];
        ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_DTYPE, "is not one Autograd holds");
    }
    m = lent_tensor();
    m.dl_tensor.dtype.bits = 16;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_DTYPE, "the DLPack dtype (code 2, bits 16, lanes 1) is not one Autograd holds");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    return ok;
}

static bool b179(void) { /* ag_tensor_from_dlpack: rank, extents, overflow, shape NULL */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    DLManagedTensorVersioned m = lent_tensor();
    m.dl_tensor.ndim = 9;
    bool ok = EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_SHAPE, "ndim 9 is outside 0...8");
    m.dl_tensor.ndim = -1;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_SHAPE, "ndim -1 is outside 0...8");
    m = lent_tensor();
    m.dl_tensor.ndim = 2;
    g_lent_shape[0] = 2, g_lent_shape[1] = -1;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_SHAPE, "negative extent -1 in shape [2, -1]");
    g_lent_shape[0] = 4294967296, g_lent_shape[1] = 4294967296;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_SHAPE, "the element count of shape [4294967296, 4294967296] overflows int64");
    m.dl_tensor.shape = NULL;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "shape is NULL but its ndim is 2");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    return ok;
}

static bool b180(void) { /* ag_tensor_from_dlpack: strides, alignment, NULL data, byte_offset */
    g_lent_released = 0;
    ag_tensor out = SENT_HANDLE;
    DLManagedTensorVersioned m = lent_tensor();
    m.dl_tensor.ndim = 2;
    g_lent_shape[0] = 2, g_lent_shape[1] = 3;
    g_lent_strides[0] = 1, g_lent_strides[1] = 2;
    m.dl_tensor.strides = g_lent_strides;
    bool ok = EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "strides [1, 2] for shape [2, 3] are not row-major contiguous");
    g_lent_strides[0] = 0, g_lent_strides[1] = 1; /* a broadcast row */
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "strides [0, 1] for shape [2, 3] are not row-major contiguous");
    m = lent_tensor();
    m.dl_tensor.byte_offset = 4;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "is not aligned to the 8-byte elements of float64");
    m = lent_tensor();
    m.dl_tensor.data = NULL;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "data is NULL but its shape [4] has 4 elements");
    m = lent_tensor();
    m.dl_tensor.byte_offset = UINT64_MAX - 8;
    ok &= EXPECT(ag_tensor_from_dlpack(&out, &m), AG_ERR_ARGUMENT, "runs past the end of the address space");
    ok &= UNTOUCHED(out);
    ok &= CHECK(g_lent_released == 0);
    /* Accepted: an extent of 1 with any stride; any strides with no element. */
    m = lent_tensor();
    m.dl_tensor.ndim = 2;
    g_lent_shape[0] = 1, g_lent_shape[1] = 4;
    g_lent_strides[0] = 12345, g_lent_strides[1] = 1;
    m.dl_tensor.strides = g_lent_strides;
    ok &= OK(ag_tensor_from_dlpack(&out, &m));
    release(out);
    g_lent_shape[0] = 0, g_lent_strides[1] = -7;
    ok &= OK(ag_tensor_from_dlpack(&out, &m));
    release(out);
    ok &= CHECK(g_lent_released == 2);
    return ok;
}

/* ---- Checkpoints (B181 - B183) ---- */

/* A path for a scratch checkpoint file of this process. */
static const char *checkpoint_path(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "/tmp/ag-bad-input-%ld-%s.safetensors", (long)getpid(), name);
    return path;
}

static bool b181(void) { /* ag_checkpoint_save: NULLs, counts, handles, reserved keys, an unnamed parameter */
    ag_tensor w = leaf_rg(full((int64_t[]){2}, 1, 1, AG_FLOAT64)), v = leaf_rg(full((int64_t[]){3}, 1, 2, AG_FLOAT64));
    ag_optimizer opt = 0;
    bool ok = OK(ag_optimizer_adam(&opt, (ag_tensor[]){w, v}, 2, 0.1, 0.9, 0.999, 1e-8, 0));
    const char *path = checkpoint_path("b181"), *names[2] = {"w", "v"};
    const char *keys[1] = {"autograd.mine"}, *values[1] = {"1"};
    ok &= EXPECT(ag_checkpoint_save(NULL, names, (ag_tensor[]){w, v}, 2, opt, NULL, NULL, 0), AG_ERR_ARGUMENT,
                 "ag_checkpoint_save: path is NULL");
    ok &= EXPECT(ag_checkpoint_save(path, NULL, (ag_tensor[]){w, v}, 2, opt, NULL, NULL, 0), AG_ERR_ARGUMENT,
                 "names is NULL but n is 2");
    ok &= EXPECT(ag_checkpoint_save(path, names, (ag_tensor[]){w, v}, -1, opt, NULL, NULL, 0), AG_ERR_ARGUMENT,
                 "n (-1) is negative");
    ok &= EXPECT(ag_checkpoint_save(path, names, (ag_tensor[]){w, v}, 2, (ag_optimizer)w, NULL, NULL, 0),
                 AG_ERR_INVALID_HANDLE, "is not a live optimizer handle");
    ok &= EXPECT(ag_checkpoint_save(path, names, (ag_tensor[]){w, v}, 2, opt, keys, values, 1), AG_ERR_ARGUMENT,
                 "the metadata key 'autograd.mine' starts with 'autograd.'");
    ok &= EXPECT(ag_checkpoint_save(path, names, (ag_tensor[]){w, v}, 1, opt, NULL, NULL, 0), AG_ERR_ARGUMENT,
                 "the optimizer's parameter 1 (shape [3]) is not among the named parameters");
    ok &= EXPECT(ag_checkpoint_save("/nonexistent-dir/x.safetensors", names, (ag_tensor[]){w, v}, 2, opt, NULL, NULL, 0),
                 AG_ERR_IO, "/nonexistent-dir/x.safetensors");
    ok &= OK(ag_checkpoint_save(path, names, (ag_tensor[]){w, v}, 2, opt, NULL, NULL, 0)); /* accepted */
    unlink(path);
    ok &= OK(ag_optimizer_free(opt));
    release(w), release(v);
    return ok;
}

static bool b182(void) { /* ag_checkpoint_load: what does not fit the checkpoint changes nothing */
    ag_tensor w = leaf_rg(full((int64_t[]){2}, 1, 1, AG_FLOAT64));
    ag_optimizer adam = 0, sgd = 0;
    bool ok = OK(ag_optimizer_adam(&adam, &w, 1, 0.1, 0.9, 0.999, 1e-8, 0));
    const char *path = checkpoint_path("b182"), *names[1] = {"w"}, *other[1] = {"u"};
    ok &= OK(ag_checkpoint_save(path, names, &w, 1, adam, NULL, NULL, 0));
    ag_tensor wide = leaf_rg(full((int64_t[]){3}, 1, 5, AG_FLOAT64)), w32 = leaf_rg(full((int64_t[]){2}, 1, 5, AG_FLOAT32));
    ag_tensor fresh = leaf_rg(full((int64_t[]){2}, 1, 5, AG_FLOAT64)), sum = AG_NULL_TENSOR;
    ok &= OK(ag_optimizer_sgd(&sgd, &fresh, 1, 0.1, 0.9, false, 0));
    ok &= OK(ag_add(&sum, fresh, fresh));
    ok &= EXPECT(ag_checkpoint_load(NULL, names, &fresh, 1, 0), AG_ERR_ARGUMENT, "ag_checkpoint_load: path is NULL");
    ok &= EXPECT(ag_checkpoint_load("/nonexistent-dir/x.safetensors", names, &fresh, 1, 0), AG_ERR_IO,
                 "/nonexistent-dir/x.safetensors");
    ok &= EXPECT(ag_checkpoint_load(path, other, &fresh, 1, 0), AG_ERR_ARGUMENT, "no tensor named 'u' in the file");
    ok &= EXPECT(ag_checkpoint_load(path, names, &wide, 1, 0), AG_ERR_SHAPE,
                 "'w' is saved with shape [2], but the parameter has shape [3]");
    ok &= EXPECT(ag_checkpoint_load(path, names, &w32, 1, 0), AG_ERR_DTYPE, "'w' is saved as F64, but the parameter is float32");
    ok &= EXPECT(ag_checkpoint_load(path, names, &sum, 1, 0), AG_ERR_STATE, "only leaves are restored in place");
    ok &= EXPECT(ag_checkpoint_load(path, names, &fresh, 1, sgd), AG_ERR_ARGUMENT,
                 "the file holds the state of a 'adam' optimizer, but the optimizer given is 'sgd'");
    double got[2] = {0};
    ok &= OK(ag_tensor_copy_data(got, 2, AG_FLOAT64, fresh)) && CHECK(got[0] == 5 && got[1] == 5); /* nothing written */
    ok &= OK(ag_checkpoint_load(path, names, &fresh, 1, 0)); /* accepted: the values only */
    ok &= OK(ag_tensor_copy_data(got, 2, AG_FLOAT64, fresh)) && CHECK(got[0] == 1 && got[1] == 1);
    ok &= OK(ag_checkpoint_save(path, names, &w, 1, 0, NULL, NULL, 0)); /* no optimizer state in it */
    ok &= EXPECT(ag_checkpoint_load(path, names, &fresh, 1, sgd), AG_ERR_ARGUMENT,
                 "the file has no optimizer state (no 'autograd.optimizer' metadata), but an optimizer was given");
    unlink(path);
    ok &= OK(ag_optimizer_free(adam));
    ok &= OK(ag_optimizer_free(sgd));
    release(w), release(wide), release(w32), release(fresh), release(sum);
    return ok;
}

static bool b183(void) { /* ag_checkpoint_load: optimizer state in the file that is inconsistent */
    ag_tensor w = leaf_rg(full((int64_t[]){2}, 1, 1, AG_FLOAT64)), m = full((int64_t[]){2}, 1, 0.5, AG_FLOAT64);
    ag_tensor m3 = full((int64_t[]){3}, 1, 0.5, AG_FLOAT64), step0 = AG_NULL_TENSOR, step1 = AG_NULL_TENSOR;
    int64_t zero = 0, one = 1;
    bool ok = OK(ag_tensor_from_data(&step0, &zero, NULL, 0, AG_INT64));
    ok &= OK(ag_tensor_from_data(&step1, &one, NULL, 0, AG_INT64));
    ag_optimizer adam = 0;
    ok &= OK(ag_optimizer_adam(&adam, &w, 1, 0.1, 0.9, 0.999, 1e-8, 0));
    const char *path = checkpoint_path("b183"), *names[1] = {"w"};
    const char *keys[7] = {"autograd.optimizer", "autograd.optimizer.lr", "autograd.optimizer.steps", "autograd.optimizer.beta1",
                           "autograd.optimizer.beta2", "autograd.optimizer.eps", "autograd.optimizer.weight_decay"};
    const char *values[7] = {"adam", "0.1", "1", "0.9", "0.999", "1e-08", "0.0"};
    const char *incomplete[3] = {"w", "optimizer.w.exp_avg", "optimizer.w.step"};
    const char *whole[4] = {"w", "optimizer.w.exp_avg", "optimizer.w.exp_avg_sq", "optimizer.w.step"};
    ok &= OK(ag_safetensors_save(path, incomplete, (ag_tensor[]){w, m, step1}, 3, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT,
                 "the optimizer state of 'w' is incomplete");
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m3, step1}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT,
                 "state 'exp_avg_sq' of parameter 0 is float64 [3], want float64 [2]");
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step0}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT, "the step count of parameter 0 must be in 1...");
    ag_tensor step_max = AG_NULL_TENSOR;
    int64_t most = INT64_MAX;
    ok &= OK(ag_tensor_from_data(&step_max, &most, NULL, 0, AG_INT64));
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step_max}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT, /* a later step would overflow it */
                 "the step count of parameter 0 must be in 1...9007199254740992");
    release(step_max);
    values[2] = "9223372036854775807";
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step1}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT, "a step count must be in 0...9007199254740992");
    values[2] = "1";
    values[1] = "fast";
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step1}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_FORMAT,
                 "the metadata 'autograd.optimizer.lr' is missing or not a number");
    values[1] = "0.1";
    values[3] = "0.5";
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step1}, 4, keys, values, 7));
    ok &= EXPECT(ag_checkpoint_load(path, names, &w, 1, adam), AG_ERR_ARGUMENT, "the saved beta1 (0.5) differs from the optimizer's (0.9)");
    values[3] = "0.9";
    ok &= OK(ag_safetensors_save(path, whole, (ag_tensor[]){w, m, m, step1}, 4, keys, values, 7));
    ok &= OK(ag_checkpoint_load(path, names, &w, 1, adam)); /* accepted: a consistent file */
    unlink(path);
    ok &= OK(ag_optimizer_free(adam));
    release(w), release(m), release(m3), release(step0), release(step1);
    return ok;
}

/* ========================================================================================== */
/* Driver                                                                                     */
/* ========================================================================================== */

/* ---- Gradient-ready hooks (B184) ---- */

static int32_t ready_ok(ag_tensor t, void *user_data) {
    (void)t, (void)user_data;
    return 0;
}

static int32_t ready_fail(ag_tensor t, void *user_data) {
    (void)t, (void)user_data;
    return 5;
}

static bool b184(void) { /* post-accumulate-grad hooks: NULL hook, a constant, a non-leaf, a stale handle, a failure */
    ag_tensor x = leaf_rg(scalar64(2)), c = scalar64(3), y = AG_NULL_TENSOR;
    int64_t id = SENT_I64;
    g_destroyed = 0;
    bool ok = OK(ag_mul(&y, x, x));
    ok &= EXPECT(ag_tensor_register_post_accumulate_grad_hook(&id, x, NULL, NULL, count_destroy), AG_ERR_ARGUMENT,
                 "hook is NULL");
    ok &= EXPECT(ag_tensor_register_post_accumulate_grad_hook(&id, c, ready_ok, NULL, count_destroy), AG_ERR_STATE,
                 "does not require grad");
    ok &= EXPECT(ag_tensor_register_post_accumulate_grad_hook(&id, y, ready_ok, NULL, count_destroy), AG_ERR_STATE,
                 "is not a leaf");
    ok &= EXPECT(ag_tensor_register_post_accumulate_grad_hook(&id, (ag_tensor)987654321, ready_ok, NULL, count_destroy),
                 AG_ERR_INVALID_HANDLE, "is not a live tensor handle");
    ok &= CHECK(id == SENT_I64);
    ok &= CHECK(g_destroyed == 0);
    ok &= OK(ag_tensor_register_post_accumulate_grad_hook(&id, x, ready_fail, NULL, count_destroy));
    char frag[64];
    snprintf(frag, sizeof frag, "post-accumulate-grad hook %" PRId64 " returned 5", id);
    ok &= EXPECT(ag_backward(y, AG_NULL_TENSOR, true, false), AG_ERR_CALLBACK, frag);
    ok &= OK(ag_tensor_remove_hook(x, id));
    ok &= CHECK(g_destroyed == 1);
    ok &= OK(ag_backward(y, AG_NULL_TENSOR, false, false)); /* the graph carries on without it */
    release(y), release(x), release(c);
    return ok;
}

typedef struct {
    const char *id;
    bool (*run)(void);
} entry;

static const entry entries[] = {
    {"B01", b01}, {"B02", b02}, {"B03", b03}, {"B04", b04}, {"B05", b05}, {"B06", b06}, {"B07", b07},
    {"B08", b08}, {"B09", b09}, {"B10", b10}, {"B11", b11}, {"B12", b12}, {"B13", b13}, {"B14", b14},
    {"B15", b15}, {"B16", b16}, {"B17", b17}, {"B18", b18}, {"B19", b19}, {"B20", b20}, {"B21", b21},
    {"B22", b22}, {"B23", b23}, {"B24", b24}, {"B25", b25}, {"B26", b26}, {"B27", b27}, {"B28", b28},
    {"B29", b29}, {"B30", b30}, {"B31", b31}, {"B32", b32}, {"B33", b33}, {"B34", b34}, {"B35", b35},
    {"B36", b36}, {"B37", b37}, {"B38", b38}, {"B39", b39}, {"B40", b40}, {"B41", b41}, {"B42", b42},
    {"B43", b43}, {"B44", b44}, {"B45", b45}, {"B46", b46}, {"B47", b47}, {"B48", b48}, {"B49", b49},
    {"B50", b50}, {"B51", b51}, {"B52", b52}, {"B53", b53}, {"B54", b54}, {"B55", b55}, {"B56", b56},
    {"B57", b57}, {"B58", b58}, {"B59", b59}, {"B60", b60}, {"B61", b61}, {"B62", b62}, {"B63", b63},
    {"B64", b64}, {"B65", b65}, {"B66", b66}, {"B67", b67}, {"B68", b68}, {"B69", b69}, {"B70", b70},
    {"B71", b71}, {"B72", b72}, {"B73", b73}, {"B74", b74}, {"B75", b75}, {"B76", b76}, {"B77", b77},
    {"B78", b78}, {"B79", b79}, {"B80", b80}, {"B81", b81}, {"B82", b82}, {"B83", b83}, {"B84", b84},
    {"B85", b85}, {"B86", b86}, {"B87", b87}, {"B88", b88}, {"B89", b89}, {"B90", b90}, {"B91", b91},
    {"B92", b92}, {"B93", b93}, {"B94", b94}, {"B95", b95}, {"B96", b96}, {"B97", b97}, {"B98", b98},
    {"B99", b99}, {"B100", b100}, {"B101", b101}, {"B102", b102}, {"B103", b103}, {"B104", b104},
    {"B105", b105}, {"B106", b106}, {"B107", b107}, {"B108", b108}, {"B109", b109}, {"B110", b110},
    {"B111", b111}, {"B112", b112}, {"B113", b113}, {"B114", b114}, {"B115", b115}, {"B116", b116},
    {"B117", b117}, {"B118", b118}, {"B119", b119}, {"B120", b120}, {"B121", b121}, {"B122", b122},
    {"B123", b123}, {"B124", b124}, {"B125", b125}, {"B126", b126}, {"B127", b127}, {"B128", b128},
    {"B129", b129}, {"B130", b130}, {"B131", b131}, {"B132", b132}, {"B133", b133}, {"B134", b134},
    {"B135", b135}, {"B136", b136}, {"B137", b137}, {"B138", b138}, {"B139", b139}, {"B140", b140},
    {"B141", b141}, {"B142", b142}, {"B143", b143}, {"B144", b144}, {"B145", b145}, {"B146", b146},
    {"B147", b147}, {"B148", b148}, {"B149", b149}, {"B150", b150}, {"B151", b151}, {"B152", b152},
    {"B153", b153}, {"B154", b154}, {"B155", b155}, {"B156", b156}, {"B157", b157}, {"B158", b158},
    {"B159", b159}, {"B160", b160}, {"B161", b161}, {"B162", b162}, {"B163", b163}, {"B164", b164},
    {"B165", b165}, {"B166", b166}, {"B167", b167}, {"B168", b168}, {"B169", b169}, {"B170", b170},
    {"B171", b171}, {"B172", b172}, {"B173", b173}, {"B174", b174}, {"B175", b175}, {"B176", b176},
    {"B177", b177}, {"B178", b178}, {"B179", b179}, {"B180", b180},
    {"B181", b181}, {"B182", b182}, {"B183", b183}, {"B184", b184},
};

/* After every bad input: a correct gradient. f(x, w) = sum((x @ w + 1)^2) for x (2,3), w (3,2);
 * df/dw = x^T @ (2 (x @ w + 1)), computed here in plain C. */
static bool final_gradient(void) {
    double xv[6] = {1, -2, 0.5, 3, 0.25, -1}, wv[6] = {0.5, -1, 2, 0.75, -0.5, 1};
    int64_t sx[] = {2, 3}, sw[] = {3, 2};
    ag_tensor x = from64(xv, sx, 2), w = leaf_rg(from64(wv, sw, 2));
    ag_tensor m = AG_NULL_TENSOR, a = AG_NULL_TENSOR, sq = AG_NULL_TENSOR, f = AG_NULL_TENSOR, g = AG_NULL_TENSOR;
    bool ok = OK(ag_matmul(&m, x, w));
    ok &= OK(ag_add_scalar(&a, m, 1));
    ok &= OK(ag_mul(&sq, a, a));
    ok &= OK(ag_sum(&f, sq, NULL, 0, false));
    ok &= OK(ag_backward(f, AG_NULL_TENSOR, false, false));
    ok &= OK(ag_tensor_grad(&g, w));
    double want[6] = {0}, got[6];
    double r[2][2];
    double fv = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double s = 1;
            for (int k = 0; k < 3; k++) s += xv[i * 3 + k] * wv[k * 2 + j];
            r[i][j] = 2 * s;
            fv += s * s;
        }
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 2; i++) want[k * 2 + j] += xv[i * 3 + k] * r[i][j];
    if (ok && g) {
        ok &= CHECK(fabs(item(f) - fv) < 1e-12);
        ok &= values(got, 6, g);
        for (int i = 0; i < 6; i++)
            if (fabs(got[i] - want[i]) > 1e-12) ok = FAIL("dw[%d] = %.17g, want %.17g", i, got[i], want[i]);
    } else {
        ok = FAIL("no gradient");
    }
    release(g), release(f), release(sq), release(a), release(m), release(w), release(x);
    return ok;
}

int main(void) {
    const char *v = getenv("AG_TEST_VERBOSE");
    g_verbose = v && v[0] && strcmp(v, "0") != 0;
    int passed = 0, failed = 0;
    size_t n = sizeof entries / sizeof entries[0];
    for (size_t i = 0; i < n; i++) {
        g_why[0] = '\0';
        if (g_verbose) printf("%s\n", entries[i].id);
        bool ok = entries[i].run();
        if (ok && !g_why[0]) {
            printf("%s ok\n", entries[i].id);
            passed++;
        } else {
            printf("%s FAILED %s\n", entries[i].id, g_why[0] ? g_why : "(no reason recorded)");
            failed++;
        }
    }
    g_why[0] = '\0';
    if (final_gradient()) {
        printf("gradient after the bad inputs ok\n");
        passed++;
    } else {
        printf("gradient after the bad inputs FAILED %s\n", g_why);
        failed++;
    }
    int64_t live = -1;
    g_why[0] = '\0';
    if (ag_live_handle_count(&live) == AG_OK && live == 0) {
        printf("live handles at the end: 0 ok\n");
        passed++;
    } else {
        printf("live handles at the end FAILED: %" PRId64 " handles are live\n", live);
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
