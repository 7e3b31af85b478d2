/*
 * test_ddp.c - edge cases of the data-parallel layer, run by scripts/ddp-tests.sh on 2 ranks:
 *   - ag_ddp_new gives every rank rank 0's values;
 *   - a parameter that gets a gradient on rank 0 only is averaged on both ranks (rank 1 gets it
 *     through the layer's write-back pass);
 *   - a second ag_backward before ag_ddp_finish_gradients fails with AG_ERR_CALLBACK and the
 *     layer's message, and the step still completes with the first pass's average;
 *   - gradient accumulation: with ag_ddp_set_sync(d, 0) a backward stays local, and the next
 *     synchronised one sends the accumulated gradients (averaged by hand: 3 on both ranks);
 *   - no handle is left behind.
 * Exits non-zero on the first failed check.
 */
#include <stdio.h>
#include <string.h>

#include "autograd_ddp.h"

static int rank;

#define C(x)                                                                                      \
    do {                                                                                          \
        ag_status s_ = (x);                                                                       \
        if (s_ != AG_OK) {                                                                        \
            fprintf(stderr, "test_ddp: rank %d: %s failed: %s\n", rank, #x, ag_last_error());     \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                         \
        }                                                                                         \
    } while (0)
#define EXPECT(cond)                                                                              \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "test_ddp: rank %d: check failed: %s\n", rank, #cond);                \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                         \
        }                                                                                         \
    } while (0)

static void grad_of(double out[2], ag_tensor t) {
    ag_tensor g;
    C(ag_tensor_grad(&g, t));
    EXPECT(g != AG_NULL_TENSOR);
    C(ag_tensor_copy_data(out, 2, AG_FLOAT64, g));
    C(ag_tensor_free(g));
}

int main(int argc, char **argv) {
    int provided, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    EXPECT(size == 2);
    double va[2] = {1 + rank, 2 + rank}, vb[2] = {3, 4}, v[2];
    const int64_t shape[1] = {2};
    ag_tensor a, b;
    C(ag_tensor_from_data(&a, va, shape, 1, AG_FLOAT64));
    C(ag_tensor_from_data(&b, vb, shape, 1, AG_FLOAT64));
    C(ag_tensor_set_requires_grad(a, true));
    C(ag_tensor_set_requires_grad(b, true));
    ag_tensor ps[2] = {a, b};
    ag_ddp *d;
    C(ag_ddp_new(&d, MPI_COMM_WORLD, ps, 2, 8, NULL)); /* 8 bytes: one bucket per parameter */
    C(ag_tensor_copy_data(v, 2, AG_FLOAT64, a));
    EXPECT(v[0] == 1 && v[1] == 2);

    /* loss = sum((1 + rank) * a) (+ sum(b) on rank 0): a.grad averages to 1.5, b.grad to 0.5. */
    ag_tensor m, s;
    C(ag_mul_scalar(&m, a, 1.0 + rank));
    if (rank == 0) {
        ag_tensor t;
        C(ag_add(&t, m, b));
        C(ag_tensor_free(m));
        m = t;
    }
    C(ag_sum(&s, m, NULL, 0, false));
    C(ag_backward(s, AG_NULL_TENSOR, true, false));
    ag_status st = ag_backward(s, AG_NULL_TENSOR, true, false);
    EXPECT(st == AG_ERR_CALLBACK && strstr(ag_last_error(), "before ag_ddp_finish_gradients") != NULL);
    C(ag_ddp_finish_gradients(d));
    grad_of(v, a);
    EXPECT(v[0] == 1.5 && v[1] == 1.5);
    grad_of(v, b);
    EXPECT(v[0] == 0.5 && v[1] == 0.5);

    /* Gradient accumulation: two micro-batches of loss = sum((1 + rank) * a), the first with
     * synchronisation off. Locally a.grad = 2 (1 + rank) = 2 or 4; averaged: 3 on both ranks. */
    C(ag_tensor_zero_grad(a));
    C(ag_tensor_zero_grad(b));
    C(ag_ddp_set_sync(d, 0));
    ag_tensor m2, s2;
    C(ag_mul_scalar(&m2, a, 1.0 + rank));
    C(ag_sum(&s2, m2, NULL, 0, false));
    C(ag_backward(s2, AG_NULL_TENSOR, true, false));
    grad_of(v, a);
    EXPECT(v[0] == 1.0 + rank && v[1] == 1.0 + rank); /* not sent: local only */
    st = ag_ddp_finish_gradients(d);
    EXPECT(st == AG_ERR_STATE && strstr(ag_last_error(), "synchronisation is off") != NULL);
    C(ag_ddp_set_sync(d, 1));
    C(ag_backward(s2, AG_NULL_TENSOR, false, false));
    st = ag_ddp_set_sync(d, 0);
    EXPECT(st == AG_ERR_STATE && strstr(ag_last_error(), "waiting for ag_ddp_finish_gradients") != NULL);
    C(ag_ddp_finish_gradients(d));
    grad_of(v, a);
    EXPECT(v[0] == 3 && v[1] == 3);
    C(ag_tensor_free(s2));
    C(ag_tensor_free(m2));

    C(ag_tensor_free(s));
    C(ag_tensor_free(m));
    C(ag_ddp_free(d));
    C(ag_tensor_free(a));
    C(ag_tensor_free(b));
    int64_t live;
    C(ag_live_handle_count(&live));
    EXPECT(live == 0);
    if (rank == 0) printf("test_ddp: all checks passed on 2 ranks\n");
    MPI_Finalize();
    return 0;
}
