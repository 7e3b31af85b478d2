/* B10's floor: the matrix products of one training step of B10's transformer, alone, through
 * OpenBLAS (the library Autograd calls), on one thread. Whatever else a step does comes on top,
 * so this bounds how fast any engine on OpenBLAS can run the step (bench/README.md, "What
 * bounds B10").
 *
 *   gcc -O2 bench/b10_gemm_floor.c -o /tmp/b10_gemm_floor -lopenblas && \
 *       OPENBLAS_NUM_THREADS=1 /tmp/b10_gemm_floor
 *
 * Per block: the four linear layers (qkv 64 -> 192, proj 64 -> 64, fc 64 -> 256, fc2 256 -> 64,
 * over 512 rows), each with its forward product and the two of its backward (input gradient,
 * weight gradient); attention's products over 32 x 4 heads of 16 x 16 (scores, scores times v,
 * and the four of their backward). Then the head (64 -> 27) once. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *filled(long n) {
    float *p = malloc((size_t)n * sizeof(float));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (long i = 0; i < n; i++) p[i] = (float)(i % 13) * 0.01f;
    return p;
}

/* A linear layer's three products, y = x w^T, dx = g w, dw = g^T x: the mean time of one set. */
static double linear_products(int m, int n, int k, int reps) {
    float *x = filled((long)m * k), *w = filled((long)n * k), *y = filled((long)m * n);
    float *g = filled((long)m * n), *dx = filled((long)m * k), *dw = filled((long)n * k);
    double t0 = now();
    for (int r = 0; r < reps; r++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, x, k, w, k, 0, y, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1, g, n, w, k, 0, dx, k);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1, g, n, x, k, 0, dw, k);
    }
    double t = (now() - t0) / reps;
    free(x); free(w); free(y); free(g); free(dx); free(dw);
    return t;
}

/* Attention's six products per head (two forward, four backward), b heads of l x l scores. */
static double attention_products(int b, int l, int e, int reps) {
    float *q = filled((long)b * l * e), *k = filled((long)b * l * e), *v = filled((long)b * l * e);
    float *s = filled((long)b * l * l), *o = filled((long)b * l * e), *d = filled((long)b * l * e);
    double t0 = now();
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < b; i++) {
            float *qi = q + (long)i * l * e, *ki = k + (long)i * l * e, *vi = v + (long)i * l * e;
            float *si = s + (long)i * l * l, *oi = o + (long)i * l * e, *di = d + (long)i * l * e;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l, l, e, 1, qi, e, ki, e, 0, si, l);    /* s = q k^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l, e, l, 1, si, l, vi, e, 0, oi, e);  /* o = p v */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l, l, e, 1, oi, e, vi, e, 0, si, l);    /* dp = do v^T */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, e, l, 1, si, l, oi, e, 0, di, e);    /* dv = p^T do */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l, e, l, 1, si, l, ki, e, 0, di, e);  /* dq = ds k */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l, e, l, 1, si, l, qi, e, 0, di, e);    /* dk = ds^T q */
        }
    }
    double t = (now() - t0) / reps;
    free(q); free(k); free(v); free(s); free(o); free(d);
    return t;
}

int main(void) {
    enum { ROWS = 512, WIDTH = 64, HIDDEN = 256, VOCAB = 27, HEADS = 32 * 4, T = 16, HEAD_DIM = 16, REPS = 200 };
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        double qkv = linear_products(ROWS, 3 * WIDTH, WIDTH, REPS), proj = linear_products(ROWS, WIDTH, WIDTH, REPS);
        double fc = linear_products(ROWS, HIDDEN, WIDTH, REPS), fc2 = linear_products(ROWS, WIDTH, HIDDEN, REPS);
        double head = linear_products(ROWS, VOCAB, WIDTH, REPS), attn = attention_products(HEADS, T, HEAD_DIM, REPS);
        double step = 2 * (qkv + proj + fc + fc2 + attn) + head;
        printf("per block: qkv %.0f us, proj %.0f, fc %.0f, fc2 %.0f, attention %.0f; head %.0f; step %.0f us\n",
               qkv * 1e6, proj * 1e6, fc * 1e6, fc2 * 1e6, attn * 1e6, head * 1e6, step * 1e6);
        if (step < best) best = step;
    }
    printf("B10's products per step, best of 5: %.2f ms\n", best * 1e3);
    return 0;
}
