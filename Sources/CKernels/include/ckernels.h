/* Hot elementwise kernels written in C so that each can be compiled for several instruction
 * sets (AVX2+FMA and the x86-64 baseline) and picked at load time for the CPU it runs on. */
#ifndef AUTOGRAD_CKERNELS_H
#define AUTOGRAD_CKERNELS_H

#include <stdint.h>

/* out[i] = e^x[i] for float32, within 2 ulp; inputs outside [-87, 88] and nan go to libm. */
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

/* relu: out[i] = x[i] <= 0 ? 0 : x[i] (nan stays nan; out may be x); its gradient:
 * out[i] = y[i] <= 0 ? 0 : g[i], selected, with y the saved output (out may be g). */
void agk_relu_f32(const float *x, float *out, int64_t n);
void agk_relu_f64(const double *x, double *out, int64_t n);
void agk_relu_grad_f32(const float *g, const float *y, float *out, int64_t n);
void agk_relu_grad_f64(const double *g, const double *y, double *out, int64_t n);

/* SGD without momentum, in double whatever the dtype: p[i] = p[i] - lr * (g[i] + wd * p[i]). */
void agk_sgd_f32(float *p, const float *g, int64_t n, double lr, double wd);
void agk_sgd_f64(double *p, const double *g, int64_t n, double lr, double wd);

#endif
