#include "ckernels.h"

#include <math.h>
#include <string.h>

/* On x86-64 Linux each kernel is built twice, for x86-64-v3 (AVX2, FMA) and for the baseline,
 * and the loader picks one (an ifunc); elsewhere it is built once. */
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define AGK_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AGK_MULTIVERSION
#endif

/* e^x = 2^n e^r with n = round(x / ln2) and r = x - n ln2 (ln2 split in a part exact in float
 * and a remainder), |r| <= ln2/2; e^r by its Taylor series to degree 7 (truncation below 1e-9
 * relative); 2^n made from exponent bits. Adding 1.5 * 2^23 rounds x / ln2 to an integer held
 * in the low mantissa bits, which avoids a conversion the vectoriser may not handle. */
static inline float exp_core(float x) {
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

AGK_MULTIVERSION
void agk_exp_f32(const float *x, float *out, int64_t n) {
    for (int64_t start = 0; start < n; start += 1024) {
        int64_t end = start + 1024 < n ? start + 1024 : n;
        for (int64_t i = start; i < end; i++) out[i] = exp_core(x[i]);
        /* Out of range or nan: !(x >= -87 && x <= 88) is true for both. */
        int extreme = 0;
        for (int64_t i = start; i < end; i++) extreme |= !(x[i] >= -87.0f && x[i] <= 88.0f);
        if (extreme) {
            for (int64_t i = start; i < end; i++) {
                if (!(x[i] >= -87.0f && x[i] <= 88.0f)) out[i] = expf(x[i]);
            }
        }
    }
}
