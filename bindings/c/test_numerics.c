/*
 * test_numerics.c - accuracy of the reductions through the C ABI (issue 14, items 13, 14, 16):
 * float32 sums of millions of terms over every axis pattern (and the gradient of a broadcast
 * operand, which is such a sum), softmax / log_softmax / logsumexp at large offsets against
 * float64 references computed here from x - max(x), and ag_var with correction >= N as torch.var.
 * Every expected value is computed here (or is torch.var's), never read from the library.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

/* The float32 nearest 0.1, as a double: n copies of it sum to n * TENTH exactly. */
#define TENTH ((double)0.1f)

static double rel_err(double got, double want) { return fabs(got - want) / fabs(want); }

/* 4e6 float32 copies of 0.1 summed over each axis pattern: within 1e-6 (a running float sum
 * drifts by about 1e-3 here). */
static void test_float32_sums(void) {
    static const struct {
        const char *label;
        int64_t ndim, shape[3], naxes, axes[2];
    } cases[] = {
        {"full", 1, {4000000}, 0, {0}},
        {"inner axis", 2, {2, 2000000}, 1, {1}},
        {"outer axis", 2, {2000000, 2}, 1, {0}},
        {"middle axis", 3, {2, 1000000, 2}, 1, {1}},
        {"outer and inner axes", 3, {1000, 2, 2000}, 2, {0, 2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        set_ctx("%s", cases[c].label);
        ag_tensor x = AG_NULL_TENSOR, s = AG_NULL_TENSOR, m = AG_NULL_TENSOR;
        if (!TRY(ag_tensor_full(&x, cases[c].shape, cases[c].ndim, 0.1, AG_FLOAT32))) continue;
        int64_t terms = 1;
        if (cases[c].naxes == 0) {
            for (int64_t d = 0; d < cases[c].ndim; d++) terms *= cases[c].shape[d];
        } else {
            for (int64_t a = 0; a < cases[c].naxes; a++) terms *= cases[c].shape[cases[c].axes[a]];
        }
        const int64_t *axes = cases[c].naxes ? cases[c].axes : NULL;
        if (TRY(ag_sum(&s, x, axes, cases[c].naxes, false)) && TRY(ag_mean(&m, x, axes, cases[c].naxes, false))) {
            double got[4] = {0}, mean[4] = {0};
            int64_t n = 0;
            CHECK_OK(ag_tensor_numel(&n, s));
            if (n <= 4 && READ(got, n, s) && READ(mean, n, m)) {
                for (int64_t k = 0; k < n; k++) {
                    CHECKF(rel_err(got[k], (double)terms * TENTH) <= 1e-6, "sum[%" PRId64 "] = %.9g, want %.9g",
                           k, got[k], (double)terms * TENTH);
                    CHECKF(rel_err(mean[k], TENTH) <= 1e-6, "mean[%" PRId64 "] = %.9g", k, mean[k]);
                }
            }
        }
        FREE(x, s, m);
    }

    /* The gradient of a broadcast (1) operand against 4e6 elements is their sum. */
    set_ctx("broadcast gradient");
    ag_tensor w = MAKE32_RG(D(1.0), SHAPE(1)), big = AG_NULL_TENSOR, p = AG_NULL_TENSOR, l = AG_NULL_TENSOR,
              g = AG_NULL_TENSOR;
    if (TRY(ag_tensor_full(&big, I64(4000000), 1, 0.1, AG_FLOAT32)) && TRY(ag_mul(&p, w, big)) &&
        TRY(ag_sum(&l, p, NULL, 0, false)) && TRY(ag_backward(l, AG_NULL_TENSOR, false, false)) &&
        TRY(ag_tensor_grad(&g, w))) {
        double got = 0;
        if (READ(&got, 1, g)) CHECKF(rel_err(got, 4e6 * TENTH) <= 1e-6, "grad = %.9g, want %.9g", got, 4e6 * TENTH);
    }
    FREE(w, big, p, l, g);
}

/* softmax, log_softmax and logsumexp of rows offset + (values in [-3, 3]), float32 at offsets up
 * to 1e7 and float64 at 1e15, against float64 from z = x - max(x): within 8 ulp (softmax,
 * relative) and 4 ulp of |z| + log(sum) (log_softmax). Before: 3.4e-3 relative at 1e5. */
static void test_softmax_offsets(void) {
    enum { R = 4, C = 8 };
    static const struct {
        ag_dtype dtype;
        double offset;
    } cases[] = {{AG_FLOAT32, 0}, {AG_FLOAT32, 1e3}, {AG_FLOAT32, 1e5}, {AG_FLOAT32, 1e7},
                 {AG_FLOAT64, 1e5}, {AG_FLOAT64, 1e15}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const ag_dtype dt = cases[c].dtype;
        const double ulp = dt == AG_FLOAT32 ? 0x1p-23 : 0x1p-52;
        set_ctx("%s at offset %g", dt == AG_FLOAT32 ? "float32" : "float64", cases[c].offset);
        double x[R * C], sm[R * C], lsm[R * C], lse[R];
        for (int i = 0; i < R * C; i++) x[i] = round_to(dt, cases[c].offset + 3 * sin(1.7 * i + 0.3));
        for (int r = 0; r < R; r++) {
            double m = -INFINITY, s = 0;
            for (int k = 0; k < C; k++) m = fmax(m, x[r * C + k]);
            for (int k = 0; k < C; k++) s += exp(x[r * C + k] - m);
            for (int k = 0; k < C; k++) {
                sm[r * C + k] = exp(x[r * C + k] - m) / s;
                lsm[r * C + k] = (x[r * C + k] - m) - log(s);
            }
            lse[r] = m + log(s);
        }
        ag_tensor t = make_at(x, SHAPE(R, C), dt, false, HERE), y = AG_NULL_TENSOR, ly = AG_NULL_TENSOR,
                  e = AG_NULL_TENSOR;
        double got[R * C], lgot[R * C], egot[R];
        if (TRY(ag_softmax(&y, t, 1)) && READ(got, R * C, y)) {
            for (int i = 0; i < R * C; i++)
                CHECKF(fabs(got[i] - sm[i]) <= 8 * ulp * sm[i], "softmax[%d] = %.17g, want %.17g", i, got[i], sm[i]);
        }
        if (TRY(ag_log_softmax(&ly, t, 1)) && READ(lgot, R * C, ly)) {
            for (int i = 0; i < R * C; i++) {
                double scale = fabs(lsm[i]) + fabs(lse[i / C] - x[i]) + 1;
                CHECKF(fabs(lgot[i] - lsm[i]) <= 4 * ulp * scale, "log_softmax[%d] = %.17g, want %.17g", i, lgot[i],
                       lsm[i]);
            }
        }
        if (TRY(ag_logsumexp(&e, t, I64(1), 1, false)) && READ(egot, R, e)) {
            for (int r = 0; r < R; r++)
                CHECKF(fabs(egot[r] - lse[r]) <= 2 * ulp * (fabs(lse[r]) + 1), "logsumexp[%d] = %.17g, want %.17g", r,
                       egot[r], lse[r]);
        }
        FREE(t, y, ly, e);
    }
}

/* torch.var divides by max(0, N - correction); at correction = N the gradient is
 * 2 (x - mean) / 0: [[-inf, -inf, inf], [nan, nan, nan]] for rows [1, 2, 4], [3, 3, 3] (torch.var
 * with dim=1, correction=3). Before: -4.67 at correction 4, and a nan gradient. */
static void test_var_correction(void) {
    ag_tensor x = MAKE_RG(D(1, 2, 4, 3, 3, 3), SHAPE(2, 3)), v = AG_NULL_TENSOR, l = AG_NULL_TENSOR,
              g = AG_NULL_TENSOR, v4 = AG_NULL_TENSOR;
    double got[2], grad[6];
    set_ctx("correction 4 > N = 3");
    if (TRY(ag_var(&v4, x, I64(1), 1, 4, false)) && READ(got, 2, v4)) {
        CHECKF(isinf(got[0]) && got[0] > 0, "var = %g, want +inf", got[0]);
        CHECKF(isnan(got[1]), "var of equal elements = %g, want nan", got[1]);
    }
    set_ctx("correction 3 = N");
    if (TRY(ag_var(&v, x, I64(1), 1, 3, false)) && READ(got, 2, v) && TRY(ag_sum(&l, v, NULL, 0, false)) &&
        TRY(ag_backward(l, AG_NULL_TENSOR, false, false)) && TRY(ag_tensor_grad(&g, x)) && READ(grad, 6, g)) {
        CHECKF(isinf(got[0]) && got[0] > 0 && isnan(got[1]), "var = [%g, %g], want [inf, nan]", got[0], got[1]);
        CHECKF(grad[0] == -INFINITY && grad[1] == -INFINITY && grad[2] == INFINITY, "grad row 0 = [%g, %g, %g]",
               grad[0], grad[1], grad[2]);
        CHECKF(isnan(grad[3]) && isnan(grad[4]) && isnan(grad[5]), "grad row 1 = [%g, %g, %g]", grad[3], grad[4],
               grad[5]);
    }
    FREE(x, v, l, g, v4);
}

int main(void) {
    test_begin();
    run_group_checking_handles("float32 sums of millions of terms (item 13)", test_float32_sums);
    run_group_checking_handles("softmax, log_softmax, logsumexp at large offsets (item 14)", test_softmax_offsets);
    run_group_checking_handles("var with correction >= N (item 16)", test_var_correction);
    check_no_leaks();
    return test_summary();
}
