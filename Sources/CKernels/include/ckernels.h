/* Hot elementwise kernels written in C so that each can be compiled for several instruction
 * sets (AVX2+FMA and the x86-64 baseline) and picked at load time for the CPU it runs on. */
#ifndef AUTOGRAD_CKERNELS_H
#define AUTOGRAD_CKERNELS_H

#include <stdint.h>

/* out[i] = e^x[i] for float32, within 2 ulp; inputs outside [-87, 88] and nan go to libm. */
void agk_exp_f32(const float *x, float *out, int64_t n);

#endif
