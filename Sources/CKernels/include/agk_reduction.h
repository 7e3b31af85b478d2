/* Summation kernels (pairwise/cascaded, so the rounding error grows with log n, not n). */
#ifndef AUTOGRAD_AGK_REDUCTION_H
#define AUTOGRAD_AGK_REDUCTION_H

#include <stdint.h>

/* out[o * inner + i] = sum over r of x[(o * reduce + r) * inner + i], for a contiguous array of
 * shape [outer, reduce, inner] (any of them may be 1; none negative; out does not overlap x).
 * Every partial sum is kept in double, float32 included; the terms are combined pairwise in
 * blocks (a run along the reduced axis) or in a cascade of row accumulators (a reduced axis
 * outside the innermost), so the error bound grows with log(reduce), not with reduce. The
 * order of the additions depends only on the shape, never on the thread count or alignment. */
void agk_sum_f32(const float *x, int64_t outer, int64_t reduce, int64_t inner, float *out);
void agk_sum_f64(const double *x, int64_t outer, int64_t reduce, int64_t inner, double *out);

#endif
