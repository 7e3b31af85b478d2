#include "ckernels.h"

#include <math.h>
#include <string.h>

/* On x86-64 Linux each kernel is built three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2,
 * FMA) and the baseline, and the loader picks one (an ifunc); elsewhere it is built once. The
 * v4 and v3 builds give the same bits: the kernels' lanes are independent (no reduction here;
 * those, in reduction.c, fix their lanes explicitly) and both contract the same expressions
 * into fused multiply-adds. AVX-512 halves the instructions of the long polynomial kernels
 * (gelu, its derivative: 1.7x on a Zen 4 core). */
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define AGK_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define AGK_MULTIVERSION
#endif

/* out[i] = e^x[i] as agk_expf gives it, for n elements; out may be x. In chunks of 256: the
 * vectorised core over each chunk (its arguments kept aside), then only the arguments outside
 * [-87, 88] and nan redone with libm (-inf, a masked score, directly: 0). */
__attribute__((always_inline)) static inline void agk_exp_block_f32(const float *x, float *out, int64_t n) {
    float arg[256];
    for (int64_t start = 0; start < n; start += 256) {
        int64_t m = n - start < 256 ? n - start : 256;
        const float *xs = x + start;
        float *os = out + start;
        int extreme = 0;
        for (int64_t i = 0; i < m; i++) {
            arg[i] = xs[i];
            extreme |= !(arg[i] >= -87.0f && arg[i] <= 88.0f);
            os[i] = agk_exp_core(arg[i]);
        }
        if (extreme) {
            for (int64_t i = 0; i < m; i++) {
                if (!(arg[i] >= -87.0f && arg[i] <= 88.0f)) os[i] = arg[i] == -INFINITY ? 0.0f : expf(arg[i]);
            }
        }
    }
}

AGK_MULTIVERSION
void agk_exp_f32(const float *x, float *out, int64_t n) { agk_exp_block_f32(x, out, n); }

/* gelu and its derivative over float32: Phi(x) = erfc(-x * 0.70710677f) / 2 and
 * phi(x) = e^(x * x * -0.5f) * 0.3989422804014327f, in that order of operations (the
 * generic Swift loops' normalCDF and density), no contraction into fused multiply-adds. */
static inline float agk_normal_cdf(float x) {
#pragma clang fp contract(off)
    return agk_erfcf(-x * 0.70710677f) / 2.0f;
}

AGK_MULTIVERSION
void agk_gelu_f32(const float *x, float *out, int64_t n) {
#pragma clang fp contract(off)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * agk_normal_cdf(x[i]);
}

AGK_MULTIVERSION
void agk_gelu_grad_f32(const float *v, const float *x, float *out, int64_t n, int accumulate) {
#pragma clang fp contract(off)
    float d[1024];
    for (int64_t start = 0; start < n; start += 1024) {
        int64_t m = start + 1024 < n ? 1024 : n - start;
        const float *vs = v + start, *xs = x + start;
        float *os = out + start;
        /* e^a with a = -x^2/2 <= 0 by agk_exp_core; arguments below -87 (|x| > 13.2) and nan
         * are redone with libm, as agk_expf does, so the value is agk_expf's. */
        int extreme = 0;
        for (int64_t i = 0; i < m; i++) {
            float a = xs[i] * xs[i] * -0.5f;
            d[i] = vs[i] * (agk_normal_cdf(xs[i]) + xs[i] * (agk_exp_core(a) * 0.3989422804014327f));
            extreme |= !(a >= -87.0f);
        }
        if (extreme) {
            for (int64_t i = 0; i < m; i++) {
                float a = xs[i] * xs[i] * -0.5f;
                if (!(a >= -87.0f)) d[i] = vs[i] * (agk_normal_cdf(xs[i]) + xs[i] * (expf(a) * 0.3989422804014327f));
            }
        }
        if (accumulate) {
            for (int64_t i = 0; i < m; i++) os[i] += d[i];
        } else {
            for (int64_t i = 0; i < m; i++) os[i] = d[i];
        }
    }
}

/* Streaming stores pay off once the output is far larger than the caches; below that the
 * ordinary stores leave the result in cache for the next op. */
#define AGK_STREAM_MIN_BYTES (4 << 20)

#if defined(__clang__)
#define AGK_STORE(p, v) __builtin_nontemporal_store((v), (p))
#else
#define AGK_STORE(p, v) (*(p) = (v))
#endif


#if defined(__x86_64__)
#define AGK_FENCE() __builtin_ia32_sfence()
#else
#define AGK_FENCE() ((void)0)
#endif

/* Vectors of 32 bytes (one AVX register; two SSE registers in the baseline build), loaded from
 * any address; stores go to 64-byte aligned outputs. */
typedef float agk_v8f __attribute__((vector_size(32), aligned(4)));
typedef float agk_v8f_store __attribute__((vector_size(32)));
typedef double agk_v4d __attribute__((vector_size(32), aligned(8)));
typedef double agk_v4d_store __attribute__((vector_size(32)));

/* Outputs never alias inputs here (they are fresh tensors), hence restrict. */
#define AGK_BINARY(name, type, vec, vec_store, lanes, op)                                      \
    AGK_MULTIVERSION                                                                          \
    void name(const type *restrict a, const type *restrict b, type *restrict out, int64_t n) { \
        int64_t i = 0;                                                                        \
        if ((uint64_t)n * sizeof(type) >= AGK_STREAM_MIN_BYTES && ((uintptr_t)out & 31) == 0) { \
            for (; i + lanes <= n; i += lanes) {                                              \
                vec x = *(const vec *)(a + i), y = *(const vec *)(b + i);                     \
                AGK_STORE((vec_store *)(out + i), (vec_store)(x op y));                       \
            }                                                                                 \
            AGK_FENCE();                                                                      \
        }                                                                                     \
        for (; i < n; i++) out[i] = a[i] op b[i];                                             \
    }

AGK_BINARY(agk_add_f32, float, agk_v8f, agk_v8f_store, 8, +)
AGK_BINARY(agk_sub_f32, float, agk_v8f, agk_v8f_store, 8, -)
AGK_BINARY(agk_mul_f32, float, agk_v8f, agk_v8f_store, 8, *)
AGK_BINARY(agk_div_f32, float, agk_v8f, agk_v8f_store, 8, /)
AGK_BINARY(agk_add_f64, double, agk_v4d, agk_v4d_store, 4, +)
AGK_BINARY(agk_sub_f64, double, agk_v4d, agk_v4d_store, 4, -)
AGK_BINARY(agk_mul_f64, double, agk_v4d, agk_v4d_store, 4, *)
AGK_BINARY(agk_div_f64, double, agk_v4d, agk_v4d_store, 4, /)

#define AGK_RELU(name, type)                                                                   \
    AGK_MULTIVERSION                                                                          \
    void name(const type *x, type *out, int64_t n) {                                          \
        for (int64_t i = 0; i < n; i++) out[i] = x[i] <= 0 ? 0 : x[i];                        \
    }

AGK_RELU(agk_relu_f32, float)
AGK_RELU(agk_relu_f64, double)


#define AGK_SGD(name, type)                                                                    \
    AGK_MULTIVERSION                                                                          \
    void name(type *restrict p, const type *restrict g, int64_t n, double lr, double wd) {    \
        for (int64_t i = 0; i < n; i++) {                                                     \
            double d = (double)g[i] + wd * (double)p[i];                                      \
            p[i] = (type)((double)p[i] - lr * d);                                             \
        }                                                                                     \
    }

AGK_SGD(agk_sgd_f32, float)
AGK_SGD(agk_sgd_f64, double)

/* Adam's step (see the header), in the order of operations of the Swift loop it replaces and
 * without fused multiply-adds, so that every build gives the same bits. */
#define AGK_ADAM(name, type)                                                                   \
    AGK_MULTIVERSION                                                                          \
    void name(type *restrict p, const type *restrict g, double *restrict m, double *restrict v, \
              int64_t n, const agk_adam_constants *k) {                                      \
        _Pragma("clang fp contract(off)")                                                     \
        const double lr = k->lr, b1 = k->beta1, b2 = k->beta2, eps = k->eps, wd = k->weight_decay; \
        const double c1 = k->correction1, c2 = k->correction2;                                \
        const double shrink = 1 - lr * wd, a1 = 1 - b1, a2 = 1 - b2;                          \
        if (k->decoupled) {                                                                   \
            for (int64_t i = 0; i < n; i++) {                                                 \
                double x = (double)p[i] * shrink, d = (double)g[i];                           \
                double mi = b1 * m[i] + a1 * d, vi = b2 * v[i] + a2 * d * d;                  \
                m[i] = mi;                                                                    \
                v[i] = vi;                                                                    \
                p[i] = (type)(x - lr * (mi / c1) / (sqrt(vi / c2) + eps));                    \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t i = 0; i < n; i++) {                                                 \
                double x = (double)p[i], d = (double)g[i] + wd * x;                           \
                double mi = b1 * m[i] + a1 * d, vi = b2 * v[i] + a2 * d * d;                  \
                m[i] = mi;                                                                    \
                v[i] = vi;                                                                    \
                p[i] = (type)(x - lr * (mi / c1) / (sqrt(vi / c2) + eps));                    \
            }                                                                                 \
        }                                                                                     \
    }

AGK_ADAM(agk_adam_f32, float)
AGK_ADAM(agk_adam_f64, double)

/* Layer norm's row kernels (see the header). Each sum runs in eight double lanes, element i
 * into lane i % 8, the lanes then added pairwise: a fixed order, so every build gives the same
 * bits, and one the vectoriser maps onto its registers. */
#define AGK_LANES 8
#define AGK_LANE_TOTAL(a) ((((a)[0] + (a)[1]) + ((a)[2] + (a)[3])) + (((a)[4] + (a)[5]) + ((a)[6] + (a)[7])))
/* Runs the statements given (which read `i` and `lane`) for i = 0 ..< width with lane = i % 8:
 * whole blocks of eight first (an inner loop of fixed length, which the vectoriser maps onto
 * its registers), then the tail in lanes 0, 1, ... */
#define AGK_FOR_LANES(width, ...)                                                              \
    do {                                                                                      \
        int64_t full_ = (width) - (width) % AGK_LANES;                                        \
        for (int64_t block_ = 0; block_ < full_; block_ += AGK_LANES)                         \
            for (int lane = 0; lane < AGK_LANES; lane++) {                                    \
                int64_t i = block_ + lane;                                                    \
                __VA_ARGS__;                                                                  \
            }                                                                                 \
        for (int64_t i = full_; i < (width); i++) {                                           \
            int lane = (int)(i - full_);                                                      \
            __VA_ARGS__;                                                                      \
        }                                                                                     \
    } while (0)

#define AGK_STANDARDIZE(type, suffix)                                                          \
    /* A row's mean and 1 / sqrt(var + eps), biased variance, two passes. */                  \
    __attribute__((always_inline)) static inline void agk_row_stats_##suffix(                 \
        const type *restrict x, int64_t width, double eps, double *mean, double *rstd) {      \
        _Pragma("clang fp contract(off)")                                                     \
        double s[AGK_LANES] = {0}, q[AGK_LANES] = {0};                                        \
        AGK_FOR_LANES(width, s[lane] += (double)x[i]);                                        \
        double m = AGK_LANE_TOTAL(s) / (double)width;                                         \
        AGK_FOR_LANES(width, double d = (double)x[i] - m; q[lane] += d * d);                  \
        *mean = m;                                                                            \
        *rstd = 1.0 / sqrt(AGK_LANE_TOTAL(q) / (double)width + eps);                          \
    }                                                                                         \
                                                                                              \
    AGK_MULTIVERSION                                                                          \
    void agk_standardize_##suffix(const type *restrict x, type *restrict y, int64_t rows,      \
                                  int64_t width, double eps) {                                \
        _Pragma("clang fp contract(off)")                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                  \
            const type *xr = x + r * width;                                                   \
            type *yr = y + r * width;                                                         \
            double m, rs;                                                                     \
            agk_row_stats_##suffix(xr, width, eps, &m, &rs);                                  \
            for (int64_t i = 0; i < width; i++) yr[i] = (type)(((double)xr[i] - m) * rs);    \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    AGK_MULTIVERSION                                                                          \
    void agk_standardize_backward_##suffix(const type *restrict g, const type *restrict x,    \
                                           type *restrict out, int64_t rows, int64_t width,   \
                                           double eps) {                                      \
        _Pragma("clang fp contract(off)")                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                  \
            const type *xr = x + r * width, *gr = g + r * width;                              \
            type *o = out + r * width;                                                        \
            double m, rs;                                                                     \
            agk_row_stats_##suffix(xr, width, eps, &m, &rs);                                  \
            double sg[AGK_LANES] = {0}, sgy[AGK_LANES] = {0};                                 \
            AGK_FOR_LANES(width, double gi = (double)gr[i]; sg[lane] += gi;                   \
                          sgy[lane] += gi * (((double)xr[i] - m) * rs));                      \
            double mg = AGK_LANE_TOTAL(sg) / (double)width, mgy = AGK_LANE_TOTAL(sgy) / (double)width; \
            for (int64_t i = 0; i < width; i++) {                                             \
                double yi = ((double)xr[i] - m) * rs;                                         \
                o[i] = (type)(rs * (((double)gr[i] - mg) - yi * mgy));                        \
            }                                                                                 \
        }                                                                                     \
    }

AGK_STANDARDIZE(float, f32)
AGK_STANDARDIZE(double, f64)

__attribute__((always_inline)) static inline void agk_exp_block_f64(const double *x, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = exp(x[i]);
}

/* Attention's safe softmax over rows (see the header); e^ as agk_expf for float (the engine's
 * float32 exp) and libm's exp for double; sums in the eight fixed double lanes. */
#define AGK_SAFE_SOFTMAX(type, suffix)                                                         \
    AGK_MULTIVERSION                                                                          \
    void agk_safe_softmax_##suffix(const type *restrict x, type *restrict y, int64_t rows,     \
                                   int64_t width) {                                           \
        _Pragma("clang fp contract(off)")                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                  \
            const type *xr = x + r * width;                                                   \
            type *yr = y + r * width;                                                         \
            type m = xr[0];                                                                   \
            for (int64_t i = 1; i < width; i++) m = (xr[i] > m || xr[i] != xr[i]) ? xr[i] : m; \
            if (m == -INFINITY) { /* every score masked: zeros, not 0/0 */                     \
                for (int64_t i = 0; i < width; i++) yr[i] = 0;                                \
                continue;                                                                     \
            }                                                                                 \
            for (int64_t i = 0; i < width; i++) yr[i] = xr[i] - m;                            \
            agk_exp_block_##suffix(yr, yr, width);                                            \
            double s[AGK_LANES] = {0};                                                        \
            AGK_FOR_LANES(width, s[lane] += (double)yr[i]);                                   \
            type total = (type)AGK_LANE_TOTAL(s);                                             \
            for (int64_t i = 0; i < width; i++) yr[i] = yr[i] / total;                        \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    AGK_MULTIVERSION                                                                          \
    void agk_safe_softmax_backward_##suffix(const type *restrict g, const type *restrict y,   \
                                            type *restrict out, int64_t rows, int64_t width) { \
        _Pragma("clang fp contract(off)")                                                     \
        for (int64_t r = 0; r < rows; r++) {                                                  \
            const type *gr = g + r * width, *yr = y + r * width;                              \
            type *o = out + r * width;                                                        \
            double s[AGK_LANES] = {0};                                                        \
            AGK_FOR_LANES(width, s[lane] += (double)gr[i] * (double)yr[i]);                   \
            double dot = AGK_LANE_TOTAL(s);                                                   \
            for (int64_t i = 0; i < width; i++) o[i] = (type)((double)yr[i] * ((double)gr[i] - dot)); \
        }                                                                                     \
    }

AGK_SAFE_SOFTMAX(float, f32)
AGK_SAFE_SOFTMAX(double, f64)
