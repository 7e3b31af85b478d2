/* Hot elementwise kernels written in C so that each can be compiled for several instruction
 * sets (AVX2+FMA and the x86-64 baseline) and picked at load time for the CPU it runs on. */
#ifndef AUTOGRAD_CKERNELS_H
#define AUTOGRAD_CKERNELS_H

#include <stdint.h>
#include <math.h>
#include <string.h>

/* e^x = 2^n e^r with n = round(x / ln2) and r = x - n ln2 (ln2 split in a part exact in float
 * and a remainder), |r| <= ln2/2; e^r by its Taylor series to degree 7 (truncation below 1e-9
 * relative); 2^n made from exponent bits. Adding 1.5 * 2^23 rounds x / ln2 to an integer held
 * in the low mantissa bits, which avoids a conversion the vectoriser may not handle. */
static inline float agk_exp_core(float x) {
    /* No fused multiply-adds, in any build of the kernel: the value must not depend on the
     * instruction set, so that agk_expf (inlined into Swift loops) and the kernel agree. */
#pragma clang fp contract(off)
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float shifted = xc * 1.442695040888963f + 12582912.0f;
    float n = shifted - 12582912.0f;
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    int32_t ni = bits - 0x4B400000;
    float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t scale_bits = (uint32_t)(ni + 127) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}


/* e^x for one float, exactly as agk_exp_f32 gives it: what float32 exp is everywhere in the
 * engine (the fused loops of derivatives that use exp agree with the kernel to the bit). */
static inline float agk_expf(float x) {
    return (x >= -87.0f && x <= 88.0f) ? agk_exp_core(x) : expf(x);
}

/* erfc(x) for one float, without a libm call, so that loops using it (gelu, its derivative)
 * vectorise: erfc(|x|) = t exp(-x^2 + P(t)), t = 1 / (1 + |x|/2), with P the degree-9
 * Chebyshev fit of Numerical Recipes' erfcc (relative error below 1.2e-7 for every x >= 0),
 * evaluated in float (vectorises), the exponent split so that its rounding error is put back
 * by a first-order factor: the result keeps its relative accuracy far into the tail.
 * erfc(-x) = 2 - erfc(x); nan stays nan. Within a few float ulp of the exact value. */
static inline float agk_erfcf(float x) {
#pragma clang fp contract(off)
    float z = x < 0 ? -x : x;
    z = z > 20.0f ? 20.0f : z;  /* erfc(20) is 0 in float; keeps inf out of the split below */
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    /* The exponent a = P(t) - z^2 in float, split as z^2 = zh^2 + (z^2 - zh^2) with zh z's
     * top 12 bits (zh^2 exact in float), so that its rounding error stays small far into the
     * tail; below -87 (float's subnormal range) e^a = e^(a + 64) e^-64. */
    float zh;
    {
        uint32_t bits;
        memcpy(&bits, &z, sizeof bits);
        bits &= 0xFFFFF000u;
        memcpy(&zh, &bits, sizeof zh);
    }
    float zl = z - zh;
    float big = -(zh * zh);                 /* exact */
    float small = p - zl * (z + zh);        /* the rest: z^2 - zh^2 = zl (z + zh) */
    float a = big + small;
    float lost = (big - a) + small;         /* what the sum rounded off (|big| >= |small| mostly) */
    a = a < -110.0f ? -110.0f : a;
    int tail = a < -86.0f;
    float e = agk_exp_core(tail ? a + 64.0f : a) * (1.0f + lost) * (tail ? 1.6038109e-28f : 1.0f);
    float r = t * e;
    float v = x < 0 ? 2.0f - r : r;
    return x != x ? x : v;
}

/* gelu for float32, the same arithmetic as the engine's generic loops (so the fused and the
 * recorded paths agree to the bit), vectorised: out[i] = x * erfc(-x / sqrt 2) / 2. */
void agk_gelu_f32(const float *x, float *out, int64_t n);

/* gelu's derivative applied to v: out[i] (+)= v * (erfc(-x / sqrt 2) / 2 + x * phi(x)), phi
 * the normal density e^(-x^2/2) / sqrt(2 pi) (e^ as agk_expf). accumulate != 0 adds to out. */
void agk_gelu_grad_f32(const float *v, const float *x, float *out, int64_t n, int accumulate);

/* out[i] = e^x[i] for float32, within 2 ulp; inputs outside [-87, 88] and nan go to libm (-inf
 * directly: 0). out may be x. */
void agk_exp_f32(const float *x, float *out, int64_t n);

/* out[i] = a[i] OP b[i] over n elements (no broadcasting), OP one of + - * /; out must not
 * overlap a or b. Large outputs are written with streaming stores, which skip reading the
 * destination into the cache first. */
void agk_add_f32(const float *a, const float *b, float *out, int64_t n);
void agk_sub_f32(const float *a, const float *b, float *out, int64_t n);
void agk_mul_f32(const float *a, const float *b, float *out, int64_t n);
void agk_div_f32(const float *a, const float *b, float *out, int64_t n);
void agk_add_f64(const double *a, const double *b, double *out, int64_t n);
void agk_sub_f64(const double *a, const double *b, double *out, int64_t n);
void agk_mul_f64(const double *a, const double *b, double *out, int64_t n);
void agk_div_f64(const double *a, const double *b, double *out, int64_t n);

/* relu: out[i] = x[i] <= 0 ? 0 : x[i] (nan stays nan; out may be x). */
void agk_relu_f32(const float *x, float *out, int64_t n);
void agk_relu_f64(const double *x, double *out, int64_t n);

/* SGD without momentum, in double whatever the dtype: p[i] = p[i] - lr * (g[i] + wd * p[i]). */
void agk_sgd_f32(float *p, const float *g, int64_t n, double lr, double wd);
void agk_sgd_f64(double *p, const double *g, int64_t n, double lr, double wd);

/* Adam's constants for one step of one parameter (correction1 = 1 - beta1^t, correction2 =
 * 1 - beta2^t for its step t; decoupled != 0: AdamW's weight decay). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, correction1, correction2;
    int32_t decoupled;
} agk_adam_constants;

/* Adam (decoupled == 0: weight decay added to the gradient; else AdamW: the parameter shrunk
 * by lr * weight_decay first), in double whatever the dtype, moments m and v in double:
 * m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d d; p -= lr (m / c1) / (sqrt(v / c2) + eps).
 * p, g, m and v must not overlap. */
void agk_adam_f32(float *p, const float *g, double *m, double *v, int64_t n, const agk_adam_constants *k);
void agk_adam_f64(double *p, const double *g, double *m, double *v, int64_t n, const agk_adam_constants *k);

/* Layer norm's core over `rows` contiguous rows of `width` (> 0) values: y = (x - mean) r with
 * r = 1 / sqrt(var + eps) (biased variance), statistics and arithmetic in double. */
void agk_standardize_f32(const float *x, float *y, int64_t rows, int64_t width, double eps);
void agk_standardize_f64(const double *x, double *y, int64_t rows, int64_t width, double eps);

/* Its VJP for the gradient g, the statistics recomputed from x: per row, with y as above,
 * out = r ((g - mean(g)) - y mean(g y)). out must not overlap g or x. */
void agk_standardize_backward_f32(const float *g, const float *x, float *out, int64_t rows, int64_t width, double eps);
void agk_standardize_backward_f64(const double *g, const double *x, double *out, int64_t rows, int64_t width, double eps);

/* softmax over `rows` contiguous rows of `width` (> 0) values, a row whose maximum is -inf
 * (every score masked) giving zeros: y = e^(x - max) / sum (a nan or +inf in a row makes it
 * nan). The sum in double, rounded to the dtype before the division. */
void agk_safe_softmax_f32(const float *x, float *y, int64_t rows, int64_t width);
void agk_safe_softmax_f64(const double *x, double *y, int64_t rows, int64_t width);

/* Its VJP from the output y: per row, out = y (g - sum(g y)), in double. out must not overlap
 * g or y. */
void agk_safe_softmax_backward_f32(const float *g, const float *y, float *out, int64_t rows, int64_t width);
void agk_safe_softmax_backward_f64(const double *g, const double *y, double *out, int64_t rows, int64_t width);

/* A spin-wait hint to the CPU (x86 pause, Arm yield): a thread polling for work costs its
 * sibling less. */
static inline void agk_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
