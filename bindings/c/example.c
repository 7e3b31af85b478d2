/*
 * example.c - a first tour of Autograd's C interface.
 *
 * It builds
 *
 *     f(x, W) = sum(relu(x @ W) * 2)        x: (2,3), W: (3,2), float64
 *
 * asks the library for df/dx and df/dW with one call to ag_backward, and checks every number
 * against values worked out right here with plain C loops, without the library. Then it shows
 * what happens when things go wrong (a freed handle, mismatched shapes) and that the library
 * carries on working normally afterwards.
 *
 * Build (from the repository root, once the library is built):
 *     cc -std=c11 -I include bindings/c/example.c -L .build/release -lautograd \
 *        -Wl,-rpath,$PWD/.build/release -lm -o example
 *
 * Prints "example: all checks passed" and exits 0, or says what differed and exits 1.
 */
#include "autograd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Every fallible Autograd function returns an ag_status; AG_OK (0) means success. On failure,
 * ag_status_name() names the status and ag_last_error() says what went wrong. This macro
 * stops the program at the first unexpected failure. */
#define AG_TRY(call)                                                                     \
    do {                                                                                 \
        ag_status st_ = (call);                                                          \
        if (st_ != AG_OK) {                                                              \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,     \
                    ag_status_name(st_), ag_last_error());                               \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

enum { M = 2, K = 3, N = 2 }; /* x is (M,K), W is (K,N), x @ W is (M,N) */

static int mismatches = 0;

/* Compares `count` values the library computed with the ones we expect. */
static void expect_close(const char *what, const double *got, const double *want, int count) {
    for (int i = 0; i < count; i++) {
        if (fabs(got[i] - want[i]) > 1e-12 * (1.0 + fabs(want[i]))) {
            printf("MISMATCH %s[%d]: library gave %.17g, expected %.17g\n", what, i, got[i],
                   want[i]);
            mismatches++;
        }
    }
}

/* Copies a tensor's elements (row-major) into `buf`, as float64. */
static void read_values(double *buf, int64_t capacity, ag_tensor t) {
    AG_TRY(ag_tensor_copy_data(buf, capacity, AG_FLOAT64, t));
}

/* Prints a tensor of rank 0, 1 or 2 with its shape. */
static void print_tensor(const char *name, ag_tensor t) {
    int64_t ndim, numel, shape[AG_MAX_NDIM];
    AG_TRY(ag_tensor_ndim(&ndim, t));
    AG_TRY(ag_tensor_shape(shape, AG_MAX_NDIM, t));
    AG_TRY(ag_tensor_numel(&numel, t));

    double values[16];
    if (numel > 16) {
        printf("%s: (%lld elements, not shown)\n", name, (long long)numel);
        return;
    }
    read_values(values, 16, t);

    printf("%s, shape (", name);
    for (int64_t d = 0; d < ndim; d++) printf(d ? ", %lld" : "%lld", (long long)shape[d]);
    printf("):\n");
    int64_t cols = ndim == 0 ? 1 : shape[ndim - 1];
    for (int64_t i = 0; i < numel; i++) {
        printf("%s%8.4f", i % cols == 0 ? "    " : " ", values[i]);
        if ((i + 1) % cols == 0) printf("\n");
    }
}

int main(void) {
    printf("Autograd %s\n\n", ag_version());

    /* ---------------------------------------------------------------------------------- */
    /* 1. The inputs. Some entries of x @ W come out negative, so relu has work to do.      */
    /* ---------------------------------------------------------------------------------- */
    const double x_data[M * K] = {1.0, 2.0, -1.0,  /* row 0 */
                                  0.5, -1.5, 2.0}; /* row 1 */
    const double w_data[K * N] = {0.5, -1.0,       /* row 0 */
                                  1.5, 0.25,       /* row 1 */
                                  -0.5, 2.0};      /* row 2 */
    const double two = 2.0;

    const int64_t x_shape[2] = {M, K};
    const int64_t w_shape[2] = {K, N};

    /* A tensor is referred to by a handle (ag_tensor, a 64-bit number). Creation copies the
     * data, so x_data and w_data could be thrown away now. */
    ag_tensor x, w, c2;
    AG_TRY(ag_tensor_from_data(&x, x_data, x_shape, 2, AG_FLOAT64));
    AG_TRY(ag_tensor_from_data(&w, w_data, w_shape, 2, AG_FLOAT64));
    /* The constant 2 is a rank-0 tensor (shape NULL, ndim 0); broadcasting stretches it. */
    AG_TRY(ag_tensor_from_data(&c2, &two, NULL, 0, AG_FLOAT64));

    /* We want df/dx and df/dW, so mark both leaves. c2 is a constant: no gradient. */
    AG_TRY(ag_tensor_set_requires_grad(x, true));
    AG_TRY(ag_tensor_set_requires_grad(w, true));

    /* ---------------------------------------------------------------------------------- */
    /* 2. The forward pass. Every operation gives a new handle and records a graph node.    */
    /* ---------------------------------------------------------------------------------- */
    ag_tensor xw, r, r2, f;
    AG_TRY(ag_matmul(&xw, x, w));   /* (2,3) @ (3,2) -> (2,2) */
    AG_TRY(ag_relu(&r, xw));        /* max(x @ W, 0)         */
    AG_TRY(ag_mul(&r2, r, c2));     /* (2,2) * ()   -> (2,2) */
    AG_TRY(ag_sum(&f, r2, NULL, 0, false)); /* every axis   -> () */

    /* ---------------------------------------------------------------------------------- */
    /* 3. The backward pass. f is a scalar, so no seed is needed (AG_NULL_TENSOR means 1).  */
    /* ---------------------------------------------------------------------------------- */
    AG_TRY(ag_backward(f, AG_NULL_TENSOR, /*retain_graph=*/false, /*create_graph=*/false));

    ag_tensor dx, dw; /* new handles to the gradients accumulated in x and W */
    AG_TRY(ag_tensor_grad(&dx, x));
    AG_TRY(ag_tensor_grad(&dw, w));

    print_tensor("x", x);
    print_tensor("W", w);
    print_tensor("f = sum(relu(x @ W) * 2)", f);
    print_tensor("df/dx", dx);
    print_tensor("df/dW", dw);

    /* ---------------------------------------------------------------------------------- */
    /* 4. The same numbers by hand, with plain loops and no library.                        */
    /*    z = x @ W;  f = sum(2 * relu(z));  dz = 2 * [z > 0];                              */
    /*    df/dx = dz @ W^T;  df/dW = x^T @ dz                                               */
    /* ---------------------------------------------------------------------------------- */
    double z[M * N], dz[M * N], want_f = 0.0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) acc += x_data[i * K + k] * w_data[k * N + j];
            z[i * N + j] = acc;
            dz[i * N + j] = acc > 0.0 ? 2.0 : 0.0; /* relu'(0) is 0, as in PyTorch */
            want_f += 2.0 * (acc > 0.0 ? acc : 0.0);
        }
    }
    double want_dx[M * K], want_dw[K * N];
    for (int i = 0; i < M; i++) {
        for (int k = 0; k < K; k++) {
            double acc = 0.0;
            for (int j = 0; j < N; j++) acc += dz[i * N + j] * w_data[k * N + j];
            want_dx[i * K + k] = acc;
        }
    }
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int i = 0; i < M; i++) acc += x_data[i * K + k] * dz[i * N + j];
            want_dw[k * N + j] = acc;
        }
    }

    int negatives = 0;
    for (int i = 0; i < M * N; i++) negatives += z[i] < 0.0;
    printf("\n(x @ W has %d negative entries, which relu zeroes)\n", negatives);

    double got_xw[M * N], got_f, got_dx[M * K], got_dw[K * N];
    read_values(got_xw, M * N, xw);
    AG_TRY(ag_tensor_item(&got_f, f)); /* the one element of a numel-1 tensor */
    read_values(got_dx, M * K, dx);
    read_values(got_dw, K * N, dw);
    expect_close("x @ W", got_xw, z, M * N);
    expect_close("f", &got_f, &want_f, 1);
    expect_close("df/dx", got_dx, want_dx, M * K);
    expect_close("df/dW", got_dw, want_dw, K * N);

    /* Release every handle we were given. The graph holds its own references, so the order
     * does not matter. */
    ag_tensor handles[] = {x, w, c2, xw, r, r2, f, dx, dw};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) AG_TRY(ag_tensor_free(handles[i]));

    /* ---------------------------------------------------------------------------------- */
    /* 5. Errors are answered with a status and a message; nothing crashes, and the library */
    /*    keeps working afterwards.                                                         */
    /* ---------------------------------------------------------------------------------- */
    printf("\nErrors:\n");
    ag_tensor a, stale, bad = AG_NULL_TENSOR;
    AG_TRY(ag_tensor_ones(&a, x_shape, 2, AG_FLOAT64));
    AG_TRY(ag_tensor_ones(&stale, x_shape, 2, AG_FLOAT64));
    AG_TRY(ag_tensor_free(stale)); /* stale is now a freed handle */

    ag_status st = ag_add(&bad, a, stale);
    printf("  ag_add(a, freed handle) -> %s: %s\n", ag_status_name(st), ag_last_error());
    if (st != AG_ERR_INVALID_HANDLE || bad != AG_NULL_TENSOR) {
        printf("MISMATCH: expected AG_ERR_INVALID_HANDLE and no output\n");
        mismatches++;
    }

    ag_tensor m23, m45;
    AG_TRY(ag_tensor_ones(&m23, (const int64_t[]){2, 3}, 2, AG_FLOAT64));
    AG_TRY(ag_tensor_ones(&m45, (const int64_t[]){4, 5}, 2, AG_FLOAT64));
    st = ag_matmul(&bad, m23, m45);
    printf("  ag_matmul((2,3), (4,5)) -> %s: %s\n", ag_status_name(st), ag_last_error());
    if (st != AG_ERR_SHAPE || bad != AG_NULL_TENSOR) {
        printf("MISMATCH: expected AG_ERR_SHAPE and no output\n");
        mismatches++;
    }

    /* Carry on: d/dv sum(v * v) = 2v. */
    const double v_data[4] = {3.0, -1.5, 0.25, 2.0};
    ag_tensor v, vv, s, dv;
    AG_TRY(ag_tensor_from_data(&v, v_data, (const int64_t[]){4}, 1, AG_FLOAT64));
    AG_TRY(ag_tensor_set_requires_grad(v, true));
    AG_TRY(ag_mul(&vv, v, v));
    AG_TRY(ag_sum(&s, vv, NULL, 0, false));
    AG_TRY(ag_backward(s, AG_NULL_TENSOR, false, false));
    AG_TRY(ag_tensor_grad(&dv, v));
    print_tensor("\nafterwards, d/dv sum(v * v)", dv);

    double got_dv[4], want_dv[4];
    read_values(got_dv, 4, dv);
    for (int i = 0; i < 4; i++) want_dv[i] = 2.0 * v_data[i];
    expect_close("d/dv sum(v*v)", got_dv, want_dv, 4);

    ag_tensor more[] = {a, m23, m45, v, vv, s, dv};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) AG_TRY(ag_tensor_free(more[i]));

    /* Every handle has been released, so none should be left. */
    int64_t live;
    AG_TRY(ag_live_handle_count(&live));
    if (live != 0) {
        printf("MISMATCH: %lld handles still live at the end\n", (long long)live);
        mismatches++;
    }

    if (mismatches) {
        printf("\nexample: %d checks FAILED\n", mismatches);
        return 1;
    }
    printf("\nexample: all checks passed\n");
    return 0;
}
