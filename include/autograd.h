/*
 * autograd.h - the C interface of Autograd, a reverse-mode automatic-differentiation
 * engine for N-dimensional float32/float64 tensors.
 *
 * Conventions (every function follows them, so bindings can be written mechanically):
 *   - Every fallible function returns an ag_status; AG_OK (0) means success.
 *   - Outputs come first, through pointer parameters; inputs follow; handles are passed by value.
 *   - On failure nothing is written to the outputs, and ag_last_error() describes what went wrong.
 *   - Every ag_tensor handle a function gives you is yours: release it with ag_tensor_free().
 *     Freeing a handle never breaks a graph that still needs the tensor; the graph keeps its own
 *     references.
 *   - Handles are checked: a zero, freed or made-up handle is answered with
 *     AG_ERR_INVALID_HANDLE, never undefined behaviour.
 *   - Shapes are arrays of int64_t, row-major, rank 0 (a scalar) to AG_MAX_NDIM. For rank 0 the
 *     shape pointer may be NULL.
 *   - Binary operations broadcast their operands with NumPy's rules; the gradient of a
 *     broadcast operand is summed back to that operand's own shape.
 *   - Nothing passed through this interface may crash the host process: bad input is answered
 *     with a status code and a message.
 *
 * Threads: ag_last_error() and grad mode are per thread. The handle table is shared and safe
 * to use from several threads.
 */
#ifndef AUTOGRAD_H
#define AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Versions, status codes, types                                                              */
/* ------------------------------------------------------------------------------------------ */

#define AG_VERSION_MAJOR 0
#define AG_VERSION_MINOR 1
#define AG_VERSION_PATCH 0

/* The largest rank a tensor may have. */
#define AG_MAX_NDIM 8

/* Status codes returned by every fallible function. */
typedef int32_t ag_status;
enum {
    AG_OK = 0,                 /* success */
    AG_ERR_INVALID_HANDLE = 1, /* a zero, freed, made-up or wrong-kind handle */
    AG_ERR_ARGUMENT = 2,       /* a NULL pointer, a bad count, axis, rank or flag */
    AG_ERR_SHAPE = 3,          /* shapes that do not fit together (broadcasting, matmul, data size) */
    AG_ERR_DTYPE = 4,          /* an unknown dtype, or operands of different dtypes */
    AG_ERR_STATE = 5,          /* misuse of the graph: backward twice, no seed for a non-scalar, ... */
    AG_ERR_OUT_OF_MEMORY = 6,  /* an allocation that could not be satisfied */
    AG_ERR_CALLBACK = 7,       /* a user callback returned non-zero */
    AG_ERR_INTERNAL = 8        /* a bug in Autograd: please report it with ag_last_error() */
};

/* Element types. Operands of one operation must have the same dtype (no implicit promotion). */
typedef int32_t ag_dtype;
enum {
    AG_FLOAT32 = 1,
    AG_FLOAT64 = 2
};

/* An opaque tensor handle: a 64-bit integer (index, generation and kind), never a pointer.
 * 0 is never a valid handle; functions that may have nothing to return give 0. */
typedef uint64_t ag_tensor;

#define AG_NULL_TENSOR ((ag_tensor)0)

/* The library's version as "MAJOR.MINOR.PATCH". Static storage; never free it. */
const char *ag_version(void);

/* The message of the last failed call on this thread ("" if none has failed yet).
 * The pointer stays valid until the next failing call on this thread. Never free it. */
const char *ag_last_error(void);

/* A short constant name for a status code ("AG_ERR_SHAPE"); "AG_UNKNOWN_STATUS" for others. */
const char *ag_status_name(ag_status status);

/* The number of live handles of every kind, across all threads (for leak checks in tests). */
ag_status ag_live_handle_count(int64_t *out);

/* ------------------------------------------------------------------------------------------ */
/* Creating, inspecting and freeing tensors                                                   */
/* ------------------------------------------------------------------------------------------ */

/* A new tensor holding a copy of `data`, which must hold numel(shape) elements of `dtype`
 * (float for AG_FLOAT32, double for AG_FLOAT64) in row-major order. The tensor is a leaf that
 * does not require grad. `data` may be NULL only when numel is 0.
 * Errors: AG_ERR_ARGUMENT (out or data NULL, ndim < 0 or > AG_MAX_NDIM, shape NULL with
 * ndim > 0), AG_ERR_SHAPE (a negative extent, or an element count that overflows),
 * AG_ERR_DTYPE (unknown dtype), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_from_data(ag_tensor *out, const void *data, const int64_t *shape, int64_t ndim,
                              ag_dtype dtype);

/* A new leaf tensor of the given shape filled with 0. Errors as ag_tensor_from_data. */
ag_status ag_tensor_zeros(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_dtype dtype);

/* A new leaf tensor of the given shape filled with 1. Errors as ag_tensor_from_data. */
ag_status ag_tensor_ones(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_dtype dtype);

/* Releases the handle. The tensor itself lives on while a graph or another handle needs it.
 * Freeing AG_NULL_TENSOR does nothing and returns AG_OK (like free(NULL)).
 * Errors: AG_ERR_INVALID_HANDLE (freed already, made up, or not a tensor handle). */
ag_status ag_tensor_free(ag_tensor t);

/* The rank of t (0 for a scalar). Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_ndim(int64_t *out, ag_tensor t);

/* Writes t's extents to out[0 .. ndim-1]; `capacity` is the length of `out`.
 * Errors: AG_ERR_ARGUMENT (out NULL while ndim > 0, or capacity < ndim),
 * AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_shape(int64_t *out, int64_t capacity, ag_tensor t);

/* The number of elements of t (1 for a scalar). Errors: AG_ERR_ARGUMENT, AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_numel(int64_t *out, ag_tensor t);

/* The element type of t. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_dtype(ag_dtype *out, ag_tensor t);

/* Copies t's elements, row-major, into `out`, converted to `dtype` (float32 <-> float64
 * conversion is allowed). `capacity` is the number of elements `out` can hold.
 * Errors: AG_ERR_ARGUMENT (out NULL while numel > 0, capacity < numel), AG_ERR_DTYPE
 * (unknown dtype), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_copy_data(void *out, int64_t capacity, ag_dtype dtype, ag_tensor t);

/* A borrowed, read-only pointer to t's elements (row-major, t's own dtype), without copying.
 * It stays valid while any handle to t (or a graph using t) is alive; read it before freeing
 * t's handle. Never write through it and never free it. For an empty tensor it may be NULL.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_data_ptr(const void **out, ag_tensor t);

/* The single element of a tensor with numel 1, as a double.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_SHAPE (numel != 1), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_item(double *out, ag_tensor t);

/* Marks a leaf tensor as one whose gradient is wanted (or not). Only leaves (tensors made by
 * the ag_tensor_* creators, not results of operations) can change this flag.
 * Errors: AG_ERR_STATE (t is not a leaf), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_set_requires_grad(ag_tensor t, bool requires_grad);

/* Whether t requires grad: a leaf so marked, or the result of an operation recorded in a graph.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_requires_grad(bool *out, ag_tensor t);

/* A new handle to the gradient accumulated in leaf t by ag_backward, or AG_NULL_TENSOR in *out
 * if none has been accumulated (never backpropagated into, or cleared by ag_tensor_zero_grad).
 * The returned tensor is a snapshot: a later backward does not change it.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_grad(ag_tensor *out, ag_tensor t);

/* Clears the gradient accumulated in t (afterwards ag_tensor_grad gives AG_NULL_TENSOR and the
 * next backward starts from zero). Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_zero_grad(ag_tensor t);

/* ------------------------------------------------------------------------------------------ */
/* Operations. Each returns a new tensor in *out. When any input requires grad (and grad mode */
/* is on) the result records a node in the graph; otherwise nothing is recorded.              */
/* Common errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE, AG_ERR_DTYPE (operands   */
/* of different dtypes), AG_ERR_OUT_OF_MEMORY.                                                */
/* ------------------------------------------------------------------------------------------ */

/* a + b, broadcasting. Errors also: AG_ERR_SHAPE (shapes that do not broadcast). */
ag_status ag_add(ag_tensor *out, ag_tensor a, ag_tensor b);

/* a - b, broadcasting. Errors also: AG_ERR_SHAPE. */
ag_status ag_sub(ag_tensor *out, ag_tensor a, ag_tensor b);

/* a * b elementwise, broadcasting. Errors also: AG_ERR_SHAPE. */
ag_status ag_mul(ag_tensor *out, ag_tensor a, ag_tensor b);

/* a / b elementwise, broadcasting (IEEE semantics: x/0 is +-inf or nan). Errors also: AG_ERR_SHAPE. */
ag_status ag_div(ag_tensor *out, ag_tensor a, ag_tensor b);

/* -a. */
ag_status ag_neg(ag_tensor *out, ag_tensor a);

/* e^a. */
ag_status ag_exp(ag_tensor *out, ag_tensor a);

/* Natural logarithm (IEEE semantics: log(0) = -inf, log of a negative number = nan). */
ag_status ag_log(ag_tensor *out, ag_tensor a);

/* max(a, 0). Its derivative at exactly 0 is taken to be 0 (as in PyTorch). */
ag_status ag_relu(ag_tensor *out, ag_tensor a);

/* The sum of a's elements over `axes` (naxes entries; negative axes count from the end).
 * axes NULL with naxes 0 sums over every axis. With keepdims the reduced axes stay as extent 1.
 * Errors also: AG_ERR_ARGUMENT (an axis out of range or repeated, axes NULL with naxes > 0,
 * naxes < 0). */
ag_status ag_sum(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);

/* The mean of a's elements over `axes`; arguments and errors as ag_sum. The mean over zero
 * elements is nan. */
ag_status ag_mean(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);

/* Matrix product of 2-D tensors: (m,k) @ (k,n) -> (m,n), on OpenBLAS sgemm/dgemm.
 * Errors also: AG_ERR_SHAPE (an operand is not 2-D, or the inner extents differ). */
ag_status ag_matmul(ag_tensor *out, ag_tensor a, ag_tensor b);

/* ------------------------------------------------------------------------------------------ */
/* Backward                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Backpropagates from `root`, adding d(root)/d(leaf), weighted by `seed`, into the gradient of
 * every leaf that requires grad and that root depends on (read it with ag_tensor_grad).
 * Gradients accumulate, summed over every path, across calls until ag_tensor_zero_grad.
 *   seed: AG_NULL_TENSOR means 1, allowed only when root is a scalar (numel 1); otherwise a
 *         tensor of root's shape and dtype.
 *   retain_graph: keep the graph's saved tensors so backward can run through it again. Without
 *         it a second backward through the same graph fails with AG_ERR_STATE. Running backward
 *         twice on a retained graph accumulates twice (as PyTorch does).
 *   create_graph: record the backward computation itself, so gradients are differentiable
 *         (second derivatives, Hessian-vector products). Implies retain_graph.
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_STATE (root does not require grad, a non-scalar root
 * without a seed, the graph was already released), AG_ERR_SHAPE / AG_ERR_DTYPE (seed does not
 * match root). */
ag_status ag_backward(ag_tensor root, ag_tensor seed, bool retain_graph, bool create_graph);

#ifdef __cplusplus
}
#endif

#endif /* AUTOGRAD_H */
