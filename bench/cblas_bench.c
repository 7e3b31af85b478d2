/*
 * cblas_bench.c - the "cblas called directly" peer of B4: OpenBLAS sgemm/dgemm into a
 * preallocated C, the ceiling ag_matmul is compared with.
 *
 *   cblas_bench B4 THREADS REPS
 */
#include <cblas.h>

#include "bench_common.h"

/* OpenBLAS's own thread control; declared here instead of relying on its extension header. */
void openblas_set_num_threads(int);

static const char *PEER = "cblas";

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) { fprintf(stderr, "cblas_bench: out of memory\n"); exit(1); }
    return p;
}

static void run_case(int is_f32, int n, int threads, int reps, double *samples) {
    size_t nn = (size_t)n * (size_t)n, elem = is_f32 ? sizeof(float) : sizeof(double);
    void *a = xmalloc(nn * elem), *b = xmalloc(nn * elem), *c = xmalloc(nn * elem);
    if (is_f32) {
        bench_fill_f32(a, (int64_t)nn, 0.1, 1.0);
        bench_fill_f32(b, (int64_t)nn, 0.2, 1.0);
        memset(c, 0, nn * elem);
    } else {
        bench_fill_f64(a, (int64_t)nn, 0.1, 1.0);
        bench_fill_f64(b, (int64_t)nn, 0.2, 1.0);
        memset(c, 0, nn * elem);
    }
    double flops = 2.0 * (double)n * (double)n * (double)n;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = bench_now();
        if (is_f32)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        else
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
        double dt = bench_now() - t0;
        if (r >= 0) samples[r] = flops / dt / 1e9;
    }
    char kase[32];
    snprintf(kase, sizeof kase, "%s_%d", is_f32 ? "f32" : "f64", n);
    bench_result("B4", kase, PEER, threads, "gflops", samples, reps, NULL);
    free(a); free(b); free(c);
}

int main(int argc, char **argv) {
    const char *bench;
    int threads, reps;
    bench_parse_args(argc, argv, &bench, &threads, &reps);
    if (strcmp(bench, "B4") != 0) {
        fprintf(stderr, "cblas_bench: only B4 is defined for this peer, not %s\n", bench);
        return 2;
    }
    openblas_set_num_threads(threads);
    bench_settle();
    double *samples = calloc((size_t)reps, sizeof(double));
    const int sizes[2] = {1024, 2048};
    for (int is_f32 = 1; is_f32 >= 0; is_f32--)
        for (int s = 0; s < 2; s++) run_case(is_f32, sizes[s], threads, reps, samples);
    free(samples);
    return 0;
}
