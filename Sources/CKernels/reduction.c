#include "agk_reduction.h"

#include <stdlib.h>
#include <string.h>

/* Built for x86-64-v3 and the baseline on x86-64 Linux, picked at load time (as ckernels.c). */
#if defined(__x86_64__) && defined(__linux__) && defined(__clang__)
#define AGK_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AGK_MULTIVERSION
#endif

/* Elements of one run that the vector accumulators sum (each of the 16 lanes takes 1/16 of
 * them) before the block sums are combined pairwise. */
#define AGK_SUM_BLOCK 1024
/* Rows added into one accumulator row of the cascade before it is added into the next level. */
#define AGK_SUM_FAN 16
/* The most levels the cascade needs: AGK_SUM_FAN^16 = 2^64 rows. */
#define AGK_SUM_MAX_LEVELS 16
/* Doubles of stack scratch for the cascade's accumulator rows, all levels together (16 KiB),
 * and the most it takes from the heap when rows are wider than that (1 MiB). */
#define AGK_SUM_SCRATCH 2048
#define AGK_SUM_HEAP (1 << 17)

/* Unaligned loads: x may start anywhere (a view's offset, a row of odd length). */
typedef float agk_sum_v4f __attribute__((vector_size(16), aligned(4), may_alias));
typedef double agk_sum_v4d_load __attribute__((vector_size(32), aligned(8), may_alias));
typedef double agk_sum_v4d __attribute__((vector_size(32)));

/* The sum of n contiguous elements (n up to a block), in double: 16 lanes, then a short tail. */
#define AGK_BLOCK_SUM(name, type, load4)                                                         \
    __attribute__((always_inline)) static inline double name(const type *x, int64_t n) {        \
        agk_sum_v4d a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;                               \
        int64_t i = 0;                                                                          \
        for (; i + 16 <= n; i += 16) {                                                          \
            a0 += load4(x + i);                                                                 \
            a1 += load4(x + i + 4);                                                             \
            a2 += load4(x + i + 8);                                                             \
            a3 += load4(x + i + 12);                                                            \
        }                                                                                       \
        agk_sum_v4d a = (a0 + a1) + (a2 + a3);                                                  \
        double s = (a[0] + a[1]) + (a[2] + a[3]);                                               \
        for (; i < n; i++) s += (double)x[i];                                                   \
        return s;                                                                               \
    }

#define AGK_LOAD4_F32(p) __builtin_convertvector(*(const agk_sum_v4f *)(p), agk_sum_v4d)
#define AGK_LOAD4_F64(p) ((agk_sum_v4d)(*(const agk_sum_v4d_load *)(p)))

AGK_BLOCK_SUM(block_sum_f32, float, AGK_LOAD4_F32)
AGK_BLOCK_SUM(block_sum_f64, double, AGK_LOAD4_F64)

/* The sum of a contiguous run: block sums combined pairwise. A binary counter drives the tree
 * without recursion: after block number c (from 1), its sum absorbs one pending partial sum per
 * trailing zero bit of c, so pending sums cover 2^k blocks each, at most one per k (at most 64). */
#define AGK_RUN_SUM(name, type, block)                                                          \
    __attribute__((always_inline)) static inline double name(const type *x, int64_t n) {        \
        if (n <= AGK_SUM_BLOCK) return block(x, n);                                             \
        double pending[64];                                                                     \
        int depth = 0;                                                                          \
        uint64_t count = 0;                                                                     \
        for (int64_t start = 0; start < n; start += AGK_SUM_BLOCK) {                            \
            int64_t len = n - start < AGK_SUM_BLOCK ? n - start : AGK_SUM_BLOCK;                \
            double s = block(x + start, len);                                                   \
            count++;                                                                            \
            for (uint64_t c = count; (c & 1) == 0; c >>= 1) s = pending[--depth] + s;           \
            pending[depth++] = s;                                                               \
        }                                                                                       \
        double total = pending[--depth];                                                        \
        while (depth > 0) total = pending[--depth] + total;                                     \
        return total;                                                                           \
    }

AGK_RUN_SUM(run_sum_f32, float, block_sum_f32)
AGK_RUN_SUM(run_sum_f64, double, block_sum_f64)

/* acc[k] += x[r * width + k] for r < n, k < tw: one group of rows into level 0 of the cascade.
 * Narrow tiles (an outer-axis sum of a few columns) get a loop of constant width, which the
 * compiler unrolls; a runtime-width loop of 2-8 iterations per row costs more than the adds. */
#define AGK_ADD_ROWS_FIXED(W)                                                                   \
    case W:                                                                                     \
        for (int64_t r = 0; r < n; r++)                                                         \
            for (int k = 0; k < W; k++) acc[k] += (double)x[r * width + k];                     \
        return;
#define AGK_ADD_ROWS(name, type)                                                                \
    __attribute__((always_inline)) static inline void name(const type *x, int64_t n,            \
                                                           int64_t width, int64_t tw,           \
                                                           double *acc) {                       \
        switch (tw) {                                                                           \
            AGK_ADD_ROWS_FIXED(1) AGK_ADD_ROWS_FIXED(2) AGK_ADD_ROWS_FIXED(3)                   \
            AGK_ADD_ROWS_FIXED(4) AGK_ADD_ROWS_FIXED(5) AGK_ADD_ROWS_FIXED(6)                   \
            AGK_ADD_ROWS_FIXED(7) AGK_ADD_ROWS_FIXED(8)                                         \
        default:                                                                                \
            for (int64_t r = 0; r < n; r++)                                                     \
                for (int64_t k = 0; k < tw; k++) acc[k] += (double)x[r * width + k];            \
        }                                                                                       \
    }

AGK_ADD_ROWS(add_rows_f32, float)
AGK_ADD_ROWS(add_rows_f64, double)

/* out[i] = sum over r < rows of x[r * width + i], width > 1. A cascade of accumulator rows (in
 * double): level 0 takes the input rows; after AGK_SUM_FAN additions a level is added into the
 * next one up and cleared, so each level sums at most AGK_SUM_FAN terms and the error bound
 * grows with AGK_SUM_FAN * log_FAN(rows). The columns go in tiles whose accumulators fit in
 * the scratch; within a tile the rows are read in order. Each column's additions happen in the
 * same order whatever the tile width, so the result does not depend on the scratch size. */
#define AGK_ROWS_SUM(name, type, add_rows)                                                       \
    __attribute__((always_inline)) static inline void name(const type *x, int64_t rows,         \
                                                           int64_t width, type *out) {          \
        int levels = 1;                                                                         \
        for (uint64_t cap = AGK_SUM_FAN; cap < (uint64_t)rows; cap *= AGK_SUM_FAN) {            \
            levels++;                                                                           \
            if (levels == AGK_SUM_MAX_LEVELS) break;                                            \
        }                                                                                       \
        double scratch[AGK_SUM_SCRATCH], *acc = scratch, *heap = NULL;                          \
        int64_t capacity = AGK_SUM_SCRATCH;                                                     \
        if (width > AGK_SUM_SCRATCH / levels) {                                                 \
            /* Wide rows: a heap scratch lets a tile span more of a row (fewer, longer runs);  \
             * without it the stack tiles give the same sums, in the same order. */            \
            int64_t want = width < AGK_SUM_HEAP / levels ? width * levels : AGK_SUM_HEAP;       \
            heap = malloc((size_t)want * sizeof(double));                                       \
            if (heap) { acc = heap; capacity = want; }                                          \
        }                                                                                       \
        const int64_t tile = capacity / levels;                                                 \
        for (int64_t c0 = 0; c0 < width; c0 += tile) {                                          \
            const int64_t tw = width - c0 < tile ? width - c0 : tile;                           \
            memset(acc, 0, (size_t)levels * (size_t)tw * sizeof(double));                       \
            int count[AGK_SUM_MAX_LEVELS] = {0}; /* additions into each level above 0 */        \
            for (int64_t r0 = 0; r0 < rows; r0 += AGK_SUM_FAN) {                                \
                const int64_t r1 = rows - r0 < AGK_SUM_FAN ? rows : r0 + AGK_SUM_FAN;           \
                add_rows(x + r0 * width + c0, r1 - r0, width, tw, acc);                         \
                if (r1 - r0 < AGK_SUM_FAN) break; /* the last, partial group stays in level 0 */\
                for (int l = 0; l + 1 < levels; l++) {                                          \
                    double *lo = acc + (int64_t)l * tw, *hi = lo + tw;                          \
                    for (int64_t k = 0; k < tw; k++) { hi[k] += lo[k]; lo[k] = 0; }             \
                    if (++count[l + 1] < AGK_SUM_FAN) break;                                    \
                    count[l + 1] = 0;                                                           \
                }                                                                               \
            }                                                                                   \
            for (int64_t k = 0; k < tw; k++) {                                                  \
                double s = acc[k];                                                              \
                for (int l = 1; l < levels; l++) s += acc[(int64_t)l * tw + k];                 \
                out[c0 + k] = (type)s;                                                          \
            }                                                                                   \
        }                                                                                       \
        free(heap);                                                                             \
    }

AGK_ROWS_SUM(rows_sum_f32, float, add_rows_f32)
AGK_ROWS_SUM(rows_sum_f64, double, add_rows_f64)

#define AGK_SUM(name, type, run, rows_sum)                                                      \
    AGK_MULTIVERSION                                                                            \
    void name(const type *x, int64_t outer, int64_t reduce, int64_t inner, type *out) {         \
        if (inner == 1) {                                                                       \
            for (int64_t o = 0; o < outer; o++) out[o] = (type)run(x + o * reduce, reduce);     \
        } else {                                                                                \
            for (int64_t o = 0; o < outer; o++)                                                 \
                rows_sum(x + o * reduce * inner, reduce, inner, out + o * inner);               \
        }                                                                                       \
    }

AGK_SUM(agk_sum_f32, float, run_sum_f32, rows_sum_f32)
AGK_SUM(agk_sum_f64, double, run_sum_f64, rows_sum_f64)
