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
 *     AG_ERR_INVALID_HANDLE, never undefined behaviour, for the life of the process (a freed
 *     handle never becomes valid again; see ag_tensor).
 *   - Shapes are arrays of int64_t, row-major, rank 0 (a scalar) to AG_MAX_NDIM. For rank 0 the
 *     shape pointer may be NULL.
 *   - Binary operations broadcast their operands with NumPy's rules; the gradient of a
 *     broadcast operand is summed back to that operand's own shape.
 *   - Nothing passed through this interface may crash the host process: bad input is answered
 *     with a status code and a message.
 *   - Empty tensors (an extent 0) cost nothing, whatever their other extents: every operation
 *     whose result is empty, and its backward, returns at once without allocating for the other
 *     extents (a [2^40, 0, 3] @ [1, 3, 4] product is an empty [2^40, 0, 4], and the gradient of
 *     the [1, 3, 4] operand is zeros). A result that is not empty is real memory even when an
 *     input is empty: the sum over the extent-0 axis of [2^40, 0, 3] is 2^40 * 3 zeros
 *     (AG_ERR_OUT_OF_MEMORY when that cannot be allocated).
 *
 * fork(): a child may use the library, even when other threads of the parent were inside it
 * when it forked (a backward pass, a matrix product, an optimizer step): handlers registered
 * with pthread_atfork when the library is loaded wait for those calls to finish, hold every
 * lock of the library across fork, and give the child fresh, unlocked ones; the child starts
 * with no worker threads (new ones start when needed, up to ag_num_threads) and OpenBLAS runs
 * single-threaded in it as in the parent. Its tensors, graphs and handles are copies of the
 * parent's as they were at fork: the child may use and free them independently. Not covered: a
 * fork from inside a callback of the library (a hook, a gradcheck function), after which the
 * child must not call the library; and the Swift runtime's own internal locks, taken the first
 * time each type is used: fork while another thread makes the very first calls of the process
 * into the library may, rarely, leave the child hanging (make one call before starting threads
 * that fork).
 *
 * Threads: ag_last_error() and grad mode are per thread. Everything else may be used from
 * several threads at once, the same tensors included: operations only read their inputs;
 * backward passes, gradients, requires_grad, hook lists, in-place writes and optimizer steps
 * are serialised by one internal lock (two backward passes through one unretained graph: one
 * succeeds, the other gets AG_ERR_STATE). Gradient hooks run with that lock released, so a hook
 * may wait for another thread that calls the library (any function, on any tensor); while a
 * hook runs, other threads may run their own backward passes, through the same graph too. One
 * exception, as in PyTorch: an in-place write (an optimizer step, ag_tensor_copy_) changes
 * values other threads may be reading (operations on them, ag_tensor_copy_data,
 * ag_tensor_data_ptr), which can then see a half-updated tensor; order such reads and writes
 * yourself.
 *
 * In-place writes and version counters: a tensor's values change only through an in-place
 * write: an optimizer step on its parameters, or ag_tensor_copy_. Every such write bumps a
 * version counter of the values (shared by detached aliases); each graph node records the
 * versions of the values it saved for backward, and a backward (or ag_grad) that would run a
 * rule whose saved values were written since fails with AG_ERR_STATE naming the op, instead of
 * mixing old and new values (as PyTorch refuses). Gradients returned by ag_tensor_grad and
 * ag_grad never share memory with a parameter, a seed or another gradient.
 *
 * Memory: buffers of 128 KiB or more released by freed tensors are kept for reuse by later
 * tensors of the same size (fresh pages cost more to fault in than a kernel costs to run), up
 * to a quarter of physical memory and at most 1 GiB; the oldest go back to the system first.
 * The environment variable AG_BUFFER_CACHE_MB, read once when the library first needs it, sets
 * that limit in MiB instead (0 keeps nothing). AG_NUM_THREADS sets the initial thread count
 * (see ag_set_num_threads).
 *
 * Running out of memory (malloc failing: `ulimit -v`, RLIMIT_AS, strict overcommit) fails calls
 * with AG_ERR_OUT_OF_MEMORY; it does not end the process. The library holds an 8 MiB emergency
 * reserve of address space (mapped at load, never touched, so it costs no physical memory); when
 * an allocation fails the reserve is given back, so that the failing call (and the Swift runtime
 * inside it, which would otherwise abort) can finish, unwind and report. While the reserve cannot
 * be mapped again, every call that creates a tensor (operations, views and creation functions,
 * ag_backward, ag_grad, an optimizer's first step) is refused with AG_ERR_OUT_OF_MEMORY ("out of memory:
 * ... no new tensors are created until memory is freed"); ag_tensor_free, reading values,
 * ag_last_error and the other calls keep working. Each refused call first returns the cached
 * buffers and free heap memory to the system and tries again, so once tensors are freed the next
 * call works. Worker threads that cannot be started only mean less parallelism. Not guarded:
 *   - an allocation larger than the reserve made by the Swift runtime after the reserve is spent
 *     (the handle table doubling with hundreds of thousands of live handles, the work lists of a
 *     backward pass through a graph of about a million nodes) still aborts the process, as does
 *     memory exhausted again by the host itself while the reserve is spent;
 *   - OpenBLAS (matmul, linear): a thread's first matrix product, and OpenBLAS threads added by
 *     ag_set_num_threads, allocate an OpenBLAS work buffer (128 MiB with Debian's 0.3.21); when
 *     that fails OpenBLAS retries forever, so the call (or the process exit) hangs. Under a tight
 *     limit, run one matrix product and set the thread count before memory runs short.
 *
 * Loading and unloading: dlclose leaves the library loaded (it is linked with -z nodelete): its
 * worker threads, and the per-thread state of every thread that called it, outlive any dlclose.
 * A later dlopen gets the same library with its state (live handles, thread count) as it was.
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
    AG_ERR_OUT_OF_MEMORY = 6,  /* an allocation that could not be satisfied, or new tensors refused
                                * while memory is exhausted (see Memory above) */
    AG_ERR_CALLBACK = 7,       /* a user callback returned non-zero */
    AG_ERR_INTERNAL = 8,       /* a bug in Autograd: please report it with ag_last_error() */
    AG_ERR_IO = 9,             /* a file that cannot be opened, read or written (the message has
                                * the path and the system's reason) */
    AG_ERR_FORMAT = 10         /* a file or buffer that is not what it claims to be: truncated, or
                                * a header that is malformed or lies (see "Files: safetensors") */
};

/* Element types. Operands of one operation must have the same dtype (no implicit promotion).
 * Only float32 and float64 values are computed with and have gradients. */
typedef int32_t ag_dtype;
enum {
    AG_FLOAT32 = 1,
    AG_FLOAT64 = 2,
    AG_INT64 = 3,  /* indices, labels, counts: see "Integer tensors, masks and random generators" */
    AG_BOOL = 4    /* masks, one byte each (0 or 1) */
};

/* An opaque tensor handle: a 64-bit integer (index, generation and kind), never a pointer.
 * What a caller may rely on:
 *   - 0 is never a valid handle; functions that may have nothing to return give 0.
 *   - A handle is valid from the call that gave it until it is freed; a freed handle is never
 *     valid again in this process (it is never issued a second time), so using it is always
 *     AG_ERR_INVALID_HANDLE.
 *   - Nothing else: compare handles for equality only. No arithmetic (handle + 1 is not the
 *     next tensor, and is almost never a valid handle), no ordering, and the values differ from
 *     run to run.
 * Limits: at most 1,048,575 handles of all kinds (ag_tensor and ag_optimizer together) live at
 * once; a call that would make one more fails with AG_ERR_OUT_OF_MEMORY ("the handle table is
 * full"). Each slot of the table gives at least 2^39 handles before it is retired for good
 * (counting against that limit), far beyond the life of any process. */
typedef uint64_t ag_tensor;

#define AG_NULL_TENSOR ((ag_tensor)0)

/* The library's version as "MAJOR.MINOR.PATCH". Static storage; never free it. */
const char *ag_version(void);

/* The message of the last failed call on this thread ("" if none has failed yet).
 * The pointer stays valid, and its text the same, until the next failing call on this thread:
 * successful calls never clear or replace it. A call made by a callback (a gradient hook, a
 * gradcheck build function) is a call on this thread like any other: if it fails, its message
 * replaces the last one even when the outer call (ag_backward, ag_gradcheck) then succeeds.
 * When the callback's failure makes the outer call fail, the outer message quotes it (cut to
 * its first 150 and last 350 characters when longer: the end holds the innermost cause).
 * Never free it. */
const char *ag_last_error(void);

/* Sets this thread's ag_last_error() to `message` (copied), as a failed call would: for a
 * callback (a custom op's, a hook, a build or capture function) that fails for a reason of its
 * own, so that the failing call it makes fail quotes it. Returns AG_OK.
 * Errors: AG_ERR_ARGUMENT (message NULL). */
ag_status ag_set_error(const char *message);

/* A short constant name for a status code ("AG_ERR_SHAPE"); "AG_UNKNOWN_STATUS" for others. */
const char *ag_status_name(ag_status status);

/* The number of live handles of every kind, across all threads (for leak checks in tests). */
ag_status ag_live_handle_count(int64_t *out);

/* Sets how many threads Autograd's kernels and matrix products may use, the caller included:
 * 1 runs everything on the calling thread. Process-wide. The default is the environment
 * variable AG_NUM_THREADS when set, else the number of online CPUs (at most 8). n may be 1 to
 * 256; up to n - 1 worker threads are started when a large kernel first needs them, and when
 * n is lowered the workers beyond n - 1 end (asleep ones at once, busy ones after their work).
 * Results do not depend on the thread count, bit for bit: elementwise kernels compute each
 * element the same way on any thread, reductions run in a fixed order, and a matrix product is
 * cut into blocks of output rows (or columns) whose boundaries depend on its shape only, each
 * computed by one single-threaded OpenBLAS call (blocks of 512 rows, or 256 for short wide
 * products, at most 8 per matrix: a 1024 x 1024 product uses at most 2 threads, a batch of
 * matrices as many as it has blocks in all). For that, the library sets OpenBLAS to one
 * thread (openblas_set_num_threads(1)) before its first product and at every call of this
 * function; a program that changes OpenBLAS's thread count itself gives up this guarantee for
 * products. Results may differ between machines (OpenBLAS picks its kernels by CPU).
 * Errors: AG_ERR_ARGUMENT when n is not between 1 and 256. */
ag_status ag_set_num_threads(int64_t n);

/* The thread count set by ag_set_num_threads (or the default). Errors: AG_ERR_ARGUMENT (out NULL). */
ag_status ag_num_threads(int64_t *out);

/* ------------------------------------------------------------------------------------------ */
/* Creating, inspecting and freeing tensors                                                   */
/* ------------------------------------------------------------------------------------------ */

/* A new tensor holding a copy of `data`, which must hold numel(shape) elements of `dtype`
 * (float for AG_FLOAT32, double for AG_FLOAT64, int64_t for AG_INT64, one byte each for AG_BOOL:
 * non-zero reads as 1) in row-major order. The tensor is a leaf that does not require grad.
 * `data` may be NULL only when numel is 0.
 * Errors: AG_ERR_ARGUMENT (out or data NULL, ndim < 0 or > AG_MAX_NDIM, shape NULL with
 * ndim > 0), AG_ERR_SHAPE (a negative extent, or non-zero extents whose product overflows int64,
 * even when another extent is 0),
 * AG_ERR_DTYPE (unknown dtype), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_from_data(ag_tensor *out, const void *data, const int64_t *shape, int64_t ndim,
                              ag_dtype dtype);

/* A new leaf tensor of the given shape filled with 0. Errors as ag_tensor_from_data. */
ag_status ag_tensor_zeros(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_dtype dtype);

/* A new leaf tensor of the given shape filled with 1. Errors as ag_tensor_from_data. */
ag_status ag_tensor_ones(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_dtype dtype);

/* A new leaf tensor of the given shape filled with `value` (converted to dtype).
 * Errors as ag_tensor_from_data. */
ag_status ag_tensor_full(ag_tensor *out, const int64_t *shape, int64_t ndim, double value, ag_dtype dtype);

/* A new 1-D leaf tensor start, start + step, ... up to but excluding stop (as numpy.arange).
 * Errors: AG_ERR_ARGUMENT (step 0, a non-finite argument, more than 2^40 elements),
 * AG_ERR_DTYPE, AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_arange(ag_tensor *out, double start, double stop, double step, ag_dtype dtype);

/* A new (n, m) leaf tensor with ones on the main diagonal and zeros elsewhere.
 * Errors: AG_ERR_SHAPE (n or m negative, or n*m overflows), AG_ERR_DTYPE, AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_eye(ag_tensor *out, int64_t n, int64_t m, ag_dtype dtype);

/* A new leaf tensor of uniform random values in [low, high), from a generator seeded with
 * `seed`: the same seed gives the same numbers on every run and machine.
 * Errors as ag_tensor_from_data, and AG_ERR_ARGUMENT (low > high or a non-finite bound). */
ag_status ag_tensor_rand_uniform(ag_tensor *out, const int64_t *shape, int64_t ndim, double low, double high,
                                 uint64_t seed, ag_dtype dtype);

/* A new leaf tensor of normal random values with the given mean and standard deviation,
 * seeded like ag_tensor_rand_uniform. Errors: as that, and AG_ERR_ARGUMENT (std < 0). */
ag_status ag_tensor_rand_normal(ag_tensor *out, const int64_t *shape, int64_t ndim, double mean, double std,
                                uint64_t seed, ag_dtype dtype);

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

/* The number of elements of t (1 for a scalar).
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_numel(int64_t *out, ag_tensor t);

/* The element type of t. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_dtype(ag_dtype *out, ag_tensor t);

/* Copies t's elements, row-major, into `out`, converted to `dtype` (float32 <-> float64
 * conversion is allowed, int64 and bool copy out to their own dtype or a float one, bool also to
 * int64; other conversions are AG_ERR_DTYPE: use ag_to_dtype). `capacity` is the number of
 * elements `out` can hold.
 * Errors: AG_ERR_ARGUMENT (out NULL while numel > 0, capacity < numel), AG_ERR_DTYPE
 * (unknown dtype), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_copy_data(void *out, int64_t capacity, ag_dtype dtype, ag_tensor t);

/* A borrowed, read-only pointer to t's elements (row-major, t's own dtype), without copying.
 * It stays valid while any handle to t (or a graph using t) is alive; read it before freeing
 * t's handle. Never write through it and never free it. For an empty tensor it may be NULL.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_data_ptr(const void **out, ag_tensor t);

/* Writes src's values into dst in place: the PyTorch copy_ (src is broadcast to dst's shape;
 * src may share dst's values, a detached alias). Tensors sharing dst's values (ag_detach) see
 * the write. The write bumps the values' version counter, so a graph that saved dst's old values
 * refuses to run backward through them (AG_ERR_STATE) instead of using the new ones. For
 * updating parameters by hand (w -= lr * w.grad): compute the new values with grad mode off,
 * then copy them in with grad mode off.
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_DTYPE (dst and src differ), AG_ERR_SHAPE (src does not
 * broadcast to dst's shape), AG_ERR_STATE (dst is the result of a recorded operation, or dst
 * requires grad while grad mode is on: that write would not be recorded),
 * AG_ERR_OUT_OF_MEMORY. Nothing is written on failure. */
ag_status ag_tensor_copy_(ag_tensor dst, ag_tensor src);

/* The single element of a tensor with numel 1, as a double.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_SHAPE (numel != 1), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_item(double *out, ag_tensor t);

/* Marks a leaf tensor as one whose gradient is wanted (or not). Leaves are tensors with no
 * recorded history: those made by the ag_tensor_* creators, and results of operations that
 * recorded nothing (no input required grad). A result with recorded history cannot change it.
 * Errors: AG_ERR_STATE (t has recorded history), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_set_requires_grad(ag_tensor t, bool requires_grad);

/* Whether t requires grad: a leaf so marked, or the result of an operation recorded in a graph.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_requires_grad(bool *out, ag_tensor t);

/* A new handle to the gradient accumulated in leaf t by ag_backward, or AG_NULL_TENSOR in *out
 * if none has been accumulated (never backpropagated into, cleared by ag_tensor_zero_grad, or
 * t is not a leaf: gradients are kept for leaves only).
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

/* a / b elementwise, broadcasting (IEEE semantics: x/0 is +-inf or nan). Gradients: g / b to a,
 * -((g * (a / b)) / b) to b, in that order on every path (fused or not). Errors also: AG_ERR_SHAPE. */
ag_status ag_div(ag_tensor *out, ag_tensor a, ag_tensor b);

/* -a. */
ag_status ag_neg(ag_tensor *out, ag_tensor a);

/* e^a. */
ag_status ag_exp(ag_tensor *out, ag_tensor a);

/* Natural logarithm (IEEE semantics: log(0) = -inf, log of a negative number = nan). */
ag_status ag_log(ag_tensor *out, ag_tensor a);

/* log(1 + a), accurate near 0 (where log(1 + a) loses a to rounding): -inf at -1, nan below.
 * Gradient: g / (a + 1). */
ag_status ag_log1p(ag_tensor *out, ag_tensor a);

/* e^a - 1, accurate near 0 (where e^a - 1 cancels). Gradient: g * e^a, computed as exp(a) (PyTorch
 * uses y + 1, which is 0 below a = -37 in float64, -17 in float32, where e^a is not). */
ag_status ag_expm1(ag_tensor *out, ag_tensor a);

/* The error function erf(a) = 2/sqrt(pi) * integral of e^(-t^2) from 0 to a. Gradient:
 * g * (e^(-a^2) * 2/sqrt(pi)). */
ag_status ag_erf(ag_tensor *out, ag_tensor a);

/* max(a, 0), nan where a is nan. Its derivative at exactly 0 is taken to be 0, at nan 1 (as in
 * PyTorch). Where a <= 0 the gradient is 0 even when the incoming one is inf or nan (selected,
 * not multiplied by 0). */
ag_status ag_relu(ag_tensor *out, ag_tensor a);

/* The sum of a's elements over `axes` (naxes entries; negative axes count from the end).
 * naxes 0 sums over every axis (axes is then not read and may be NULL). With keepdims the reduced axes stay as extent 1.
 * Accuracy: partial sums are kept in double (float32 included) and combined pairwise, so the
 * error grows with log(count): a float32 sum of 2e7 terms is within about 1e-7 (relative) of the
 * exact sum, whichever axes are reduced. The same sums serve ag_mean, ag_var, ag_logsumexp,
 * the softmax family, the losses and the gradient of every broadcast operand. The order of the
 * additions depends only on the shape (not on threads or alignment).
 * Errors also: AG_ERR_ARGUMENT (an axis out of range or repeated, axes NULL with naxes > 0,
 * naxes < 0). */
ag_status ag_sum(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);

/* The mean of a's elements over `axes` (the sum times 1/count); arguments, errors and accuracy
 * as ag_sum. The mean over zero elements is nan. */
ag_status ag_mean(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);

/* Matrix product with NumPy's matmul rules, on OpenBLAS sgemm/dgemm:
 *   1-D @ 1-D -> 0-d (inner product); 2-D (m,k) @ (k,n) -> (m,n);
 *   1-D a is taken as (1,k) and 1-D b as (k,1), the added axis removed from the result;
 *   N-D operands are stacks of matrices over their leading (batch) axes, which broadcast.
 * Errors also: AG_ERR_SHAPE (a 0-d operand, inner extents that differ, batch axes that do not
 * broadcast, a matrix extent above 2^31 - 1, the limit of BLAS's 32-bit sizes). */
ag_status ag_matmul(ag_tensor *out, ag_tensor a, ag_tensor b);

/* a ** b elementwise, broadcasting. Gradients: b * a^(b-1) to a (taken as 0 where b == 0),
 * ln(a) * a^b to b (nan where a < 0, taken as 0 where a == 0 and b >= 0, -inf where a == 0 and
 * b < 0, as PyTorch). A gradient taken as 0 is 0 for any incoming gradient (inf and nan too), and
 * its own derivatives (create_graph) are 0: d2/dx2 x**0 and x**1 at x = 0 are 0.
 * Errors also: AG_ERR_SHAPE. */
ag_status ag_pow(ag_tensor *out, ag_tensor a, ag_tensor b);

/* The larger of a and b elementwise, broadcasting. Where a == b the gradient is split evenly,
 * half to each (as PyTorch). nan in either operand gives nan, and both operands the gradient (as
 * PyTorch). The operand that loses gets 0, even for an inf or nan gradient. Errors also: AG_ERR_SHAPE. */
ag_status ag_maximum(ag_tensor *out, ag_tensor a, ag_tensor b);

/* The smaller of a and b elementwise; ties as ag_maximum. Errors also: AG_ERR_SHAPE. */
ag_status ag_minimum(ag_tensor *out, ag_tensor a, ag_tensor b);

/* atan2(a, b) elementwise, broadcasting: the angle of the point (b, a) in [-pi, pi], as C's atan2
 * and torch.atan2 (signed zeros included: atan2(0, -0) = pi, atan2(-0, 0) = -0). Gradients:
 * g * b / (a^2 + b^2) to a, -g * a / (a^2 + b^2) to b, computed without forming a^2 + b^2, so they
 * stay accurate where it would overflow or underflow (|a|, |b| above 1e154 or below 1e-154 in
 * float64, 1e19 / 1e-19 in float32: PyTorch gives 0 there). At a = b = 0 both gradients are 0
 * (as PyTorch), for any incoming gradient (inf and nan too), and so is the JVP there
 * (torch.func.jvp gives nan). Errors also: AG_ERR_SHAPE. */
ag_status ag_atan2(ag_tensor *out, ag_tensor a, ag_tensor b);

/* Scalar forms of the binary operations: s is converted to a's dtype and broadcast.
 * The r-forms put the scalar first: rsub = s - a, rdiv = s / a, rpow = s ** a. */
ag_status ag_add_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_sub_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_rsub_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_mul_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_div_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_rdiv_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_pow_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_rpow_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_maximum_scalar(ag_tensor *out, ag_tensor a, double s);
ag_status ag_minimum_scalar(ag_tensor *out, ag_tensor a, double s);

/* Unary operations (elementwise, same shape and dtype). Kinks: abs'(0) = 0, relu'(0) = 0,
 * leaky_relu'(0) = negative_slope. abs at 0 gives 0 even for an inf or nan gradient (PyTorch:
 * nan for inf); leaky_relu multiplies the gradient by its slope (as PyTorch). sigmoid and
 * softplus are computed in forms that stay finite, with finite gradients, for any finite input
 * (x = +-1000 included). gelu is the exact form x * Phi(x) with the normal CDF Phi (PyTorch's
 * default). softplus(x) = log(1 + e^x).
 * sqrt of a negative number is nan; sqrt'(0) is +inf. */
ag_status ag_sqrt(ag_tensor *out, ag_tensor a);
ag_status ag_abs(ag_tensor *out, ag_tensor a);
ag_status ag_sin(ag_tensor *out, ag_tensor a);
ag_status ag_cos(ag_tensor *out, ag_tensor a);
ag_status ag_tanh(ag_tensor *out, ag_tensor a);
ag_status ag_sigmoid(ag_tensor *out, ag_tensor a);
/* ag_leaky_relu also returns AG_ERR_ARGUMENT for a non-finite negative_slope. */
ag_status ag_leaky_relu(ag_tensor *out, ag_tensor a, double negative_slope);
ag_status ag_gelu(ag_tensor *out, ag_tensor a);
ag_status ag_softplus(ag_tensor *out, ag_tensor a);

/* a limited to [min, max] elementwise, as torch.clamp: min(max(a, min), max). A missing bound is
 * -INFINITY (no lower bound) or INFINITY (no upper bound): the same values and gradients as
 * torch.clamp's None. nan in a stays nan; where min > max every element is max. The bounds are
 * converted to a's dtype. Gradient: g where min <= a <= max (the bounds included, as PyTorch),
 * 0 elsewhere and where a is nan, selected: 0 even for an inf or nan incoming gradient.
 * Errors also: AG_ERR_ARGUMENT (a nan bound: torch.clamp would make every element nan). */
ag_status ag_clamp(ag_tensor *out, ag_tensor a, double min, double max);

/* Reductions over `axes`, with arguments and errors as ag_sum.
 * max/min: the gradient is split evenly among the elements that tie for the extreme (as
 * torch.amax); the others get 0, even for an inf or nan gradient; reducing over zero elements is
 * AG_ERR_SHAPE.
 * var: the variance with `correction` subtracted from the count N in the divisor (0: population,
 * 1: sample, as torch.var's correction); correction < 0 is AG_ERR_ARGUMENT. As torch.var, the
 * divisor is max(0, N - correction): with correction >= N the variance is +inf, or nan when
 * every element equals the mean (one element, all equal, none). The gradient is
 * 2 (a - mean) / max(0, N - correction) times the incoming gradient: at correction >= N that is
 * -inf/+inf by the sign of (a - mean), nan where a equals the mean (torch.var with dims gives
 * the same at correction = N; torch's dim=None rule gives +inf for every a != mean, and above N
 * torch divides the gradient by the negative N - correction, unlike its value).
 * logsumexp: log(sum(exp(a - m))) + m with m the maximum (no overflow; a - m is exact where it
 * matters, so a large common offset costs no precision). -inf over zero elements or a row of
 * -inf; +inf for a row holding +inf; nan for a row holding nan. */
ag_status ag_max(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);
ag_status ag_min(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);
ag_status ag_var(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, int64_t correction,
                 bool keepdims);
ag_status ag_logsumexp(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes, bool keepdims);

/* The cumulative sum of a along `axis` (negative counts from the end), as torch.cumsum: element i
 * along the axis is the sum of elements 0..i; the result has a's shape. A 0-d tensor takes axis 0
 * or -1 and is its own cumulative sum. Accuracy: float32 is accumulated in double and each element
 * rounded once (the order and accumulator of PyTorch's CPU kernel, so the same bits); float64 in
 * a compensated (Neumaier) running sum, so the error does not grow with the length (PyTorch's
 * running sum does). inf and nan carry on to the end of their lane. Gradient: the cumulative sum
 * of g taken from the end of the axis (sum of g over elements i.. end); the JVP is the cumulative
 * sum of the tangent. Errors also: AG_ERR_ARGUMENT (axis out of range). */
ag_status ag_cumsum(ag_tensor *out, ag_tensor a, int64_t axis);

/* ---- shape operations. Results are new tensors; gradients flow back through them. ---- */

/* a with another shape of the same element count; one extent may be -1 (inferred).
 * Errors also: AG_ERR_ARGUMENT (bad ndim, shape NULL, more than one -1),
 * AG_ERR_SHAPE (element counts differ). */
ag_status ag_reshape(ag_tensor *out, ag_tensor a, const int64_t *shape, int64_t ndim);

/* a with axes dim0 and dim1 swapped (negative axes count from the end).
 * Errors also: AG_ERR_ARGUMENT (an axis out of range). */
ag_status ag_transpose(ag_tensor *out, ag_tensor a, int64_t dim0, int64_t dim1);

/* a with its axes reordered: result axis i is a's axis perm[i]; n must equal a's rank.
 * Errors also: AG_ERR_ARGUMENT (not a permutation of a's axes). */
ag_status ag_permute(ag_tensor *out, ag_tensor a, const int64_t *perm, int64_t n);

/* a broadcast to `shape` (NumPy rules; -1 keeps an extent). Its gradient is summed back.
 * Errors also: AG_ERR_ARGUMENT (bad ndim), AG_ERR_SHAPE (a does not broadcast to shape). */
ag_status ag_expand(ag_tensor *out, ag_tensor a, const int64_t *shape, int64_t ndim);

/* a without the given extent-1 axes; axes NULL with naxes 0 removes every extent-1 axis.
 * Errors also: AG_ERR_ARGUMENT (an axis out of range or repeated), AG_ERR_SHAPE (a named axis
 * whose extent is not 1). */
ag_status ag_squeeze(ag_tensor *out, ag_tensor a, const int64_t *axes, int64_t naxes);

/* a with a new extent-1 axis at position `axis` of the result (-1: last).
 * Errors also: AG_ERR_ARGUMENT (axis outside -(rank+1) .. rank, or the result rank would exceed
 * AG_MAX_NDIM). */
ag_status ag_unsqueeze(ag_tensor *out, ag_tensor a, int64_t axis);

/* The n tensors joined along an existing axis; all must have the same dtype, rank and extents
 * except along `axis`. Errors also: AG_ERR_ARGUMENT (tensors NULL, n < 1, bad axis),
 * AG_ERR_SHAPE, AG_ERR_DTYPE. */
ag_status ag_concat(ag_tensor *out, const ag_tensor *tensors, int64_t n, int64_t axis);

/* The n tensors, all of one shape, stacked along a new axis `axis` of the result.
 * Errors also: as ag_concat. */
ag_status ag_stack(ag_tensor *out, const ag_tensor *tensors, int64_t n, int64_t axis);

/* Elements start, start + step, ... before stop along `axis`, as Python's a[start:stop:step]:
 * negative start/stop count from the end and out-of-range bounds are clamped; step must be > 0.
 * Errors also: AG_ERR_ARGUMENT (bad axis, step <= 0). */
ag_status ag_slice(ag_tensor *out, ag_tensor a, int64_t axis, int64_t start, int64_t stop, int64_t step);

/* The entries indices[0..n-1] of a along `axis` (negative indices count from the end); the result
 * has extent n along axis. Repeated indices accumulate their gradients (in float64 for float32,
 * compensated for float64: accurate however often an index repeats).
 * Errors also: AG_ERR_ARGUMENT (bad axis, indices NULL with n > 0, an index out of range),
 * AG_ERR_SHAPE (the result's element count overflows int64, as for any shape: the product of
 * its non-zero extents must fit, e.g. n = 7 along an axis of extent 1 of a [1, 2^62, 0] tensor). */
ag_status ag_index_select(ag_tensor *out, ag_tensor a, int64_t axis, const int64_t *indices, int64_t n);

/* torch.gather: out[i][j][k] = a[index[i][j][k]][j][k] for axis 0 (likewise for other axes).
 * `index` is an int64 array of shape index_shape, of a's rank, with extents no larger than a's
 * on every axis but `axis`; the result has index_shape. A position gathered several times gets
 * the sum of their gradients, accumulated as ag_index_select's.
 * Errors also: AG_ERR_ARGUMENT (bad axis, NULL pointers, an index out of range), AG_ERR_SHAPE. */
ag_status ag_gather(ag_tensor *out, ag_tensor a, int64_t axis, const int64_t *index, const int64_t *index_shape,
                    int64_t index_ndim);

/* ---- linear algebra (OpenBLAS) ---- */

/* The inner product of two 1-D tensors of equal length: a 0-d tensor.
 * Errors also: AG_ERR_SHAPE. */
ag_status ag_dot(ag_tensor *out, ag_tensor a, ag_tensor b);

/* The outer product of 1-D tensors: (m) x (n) -> (m, n). Errors also: AG_ERR_SHAPE. */
ag_status ag_outer(ag_tensor *out, ag_tensor a, ag_tensor b);

/* ---- neural-network functions ---- */

/* softmax along `axis`: exp(z) / sum(exp(z)) with z = a - max(a), the difference taken once in
 * a's dtype. It is exact where exp(z) is not negligible, so the result and its gradient stay
 * within a few ulp of the float64 answer at any finite offset (float32 inputs near 1e7,
 * float64 near 1e15). A row holding +inf or nan, or only -inf, is all nan (as torch.softmax).
 * Errors also: AG_ERR_ARGUMENT (bad axis). */
ag_status ag_softmax(ag_tensor *out, ag_tensor a, int64_t axis);

/* log(softmax(a)) along `axis`, computed as z - log(sum(exp(z))) with z = a - max(a) (see
 * ag_softmax: accurate at any finite offset; the same nan rows). */
ag_status ag_log_softmax(ag_tensor *out, ag_tensor a, int64_t axis);

/* The mean over the batch of -log_softmax(logits)[i, labels[i]]: logits is (N, C), labels holds
 * N class indices in 0..C-1. A 0-d result; gradients flow to logits. Built on ag_log_softmax,
 * so as accurate at large logits.
 * Errors also: AG_ERR_SHAPE (logits not 2-D, nlabels != N), AG_ERR_ARGUMENT (labels NULL with
 * N > 0, a label out of range). */
ag_status ag_cross_entropy(ag_tensor *out, ag_tensor logits, const int64_t *labels, int64_t nlabels);

/* mean((pred - target)^2) over every element: a 0-d result; pred and target of one shape.
 * Errors also: AG_ERR_SHAPE. */
ag_status ag_mse_loss(ag_tensor *out, ag_tensor pred, ag_tensor target);

/* x @ weight^T + bias (PyTorch's linear): x (..., in), weight (out, in), bias (out) or
 * AG_NULL_TENSOR for none. Errors also: AG_ERR_SHAPE. */
ag_status ag_linear(ag_tensor *out, ag_tensor x, ag_tensor weight, ag_tensor bias);

/* ---- comparisons (results are 0/1 in a's dtype and carry no gradient) and selection ---- */

ag_status ag_eq(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_ne(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_lt(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_le(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_gt(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_ge(ag_tensor *out, ag_tensor a, ag_tensor b);

/* cond ? a : b elementwise, all three broadcast together; cond is true where non-zero (of either
 * dtype). Gradients flow to a where cond holds and to b elsewhere (the other gets 0, even for an
 * inf or nan gradient), none to cond.
 * Errors also: AG_ERR_SHAPE, AG_ERR_DTYPE (a and b differ). */
ag_status ag_where(ag_tensor *out, ag_tensor cond, ag_tensor a, ag_tensor b);

/* ------------------------------------------------------------------------------------------ */
/* Integer tensors, masks and random generators                                               */
/* ------------------------------------------------------------------------------------------ */

/* Besides float32 and float64, a tensor may hold int64 values (AG_INT64: indices, labels,
 * counts) or bool values (AG_BOOL: masks, one byte each, 0 or 1; from C, any non-zero byte given
 * to ag_tensor_from_data reads as 1). What they may do:
 *   - Create (from_data, zeros, ones, full: a whole number for int64, eye, arange: whole
 *     numbers for int64), read (copy_data to their own dtype or to a float dtype, bool also to
 *     int64; data_ptr; item), write (copy_, set_data), and move them: reshape, permute,
 *     transpose, expand, squeeze, unsqueeze, slice, index_select, concat, stack, gather.
 *   - Compare: ag_eq ... ag_ge of two int64 (or two bool) tensors give a bool tensor (of
 *     float tensors, 0/1 in their dtype, as before). ag_sum of int64 or bool gives int64 (a
 *     count of true elements for bool; int64 sums wrap on overflow, as PyTorch's).
 *   - Serve as masks (ag_where, ag_masked_fill: any dtype, non-zero is true) and indices
 *     (ag_embedding, ag_one_hot, ag_cross_entropy_labels).
 * Nothing else: an op that computes (arithmetic, exp, matmul, mean, softmax, ...) given an
 * int64 or bool operand fails with AG_ERR_DTYPE, and so does ag_tensor_set_requires_grad(t, true)
 * on one: only float values have gradients. Convert with ag_to_dtype.
 * Ops here that pick by index or mask (ag_embedding, ag_cross_entropy_labels, ag_masked_fill)
 * read the index or mask tensor as a step of its own in a capture (ag_capture), so a replay
 * uses the values it is given (set them with ag_tensor_set_data). */
/* a's values in `dtype`. float32 <-> float64 is differentiable (the gradient is converted
 * back). To int64: truncated toward zero; nan, inf or a value outside int64 is AG_ERR_ARGUMENT.
 * To bool: non-zero is true (nan too). From bool: 0 or 1. To a's own dtype: a new handle to
 * a's values. Errors also: AG_ERR_DTYPE (unknown dtype), AG_ERR_ARGUMENT. */
ag_status ag_to_dtype(ag_tensor *out, ag_tensor a, ag_dtype dtype);

/* The index (int64) of the largest element of a along `axis` (negative counts from the end),
 * that axis removed unless keepdims. Of equal maxima the first wins; nan counts as the largest
 * (the first nan wins), as torch.argmax. For the flattened tensor, reshape it to (-1) first.
 * A 0-d a is taken as one element (axis 0 or -1). No gradient.
 * Errors also: AG_ERR_ARGUMENT (axis out of range), AG_ERR_SHAPE (the axis has extent 0),
 * AG_ERR_DTYPE (a is not float). */
ag_status ag_argmax(ag_tensor *out, ag_tensor a, int64_t axis, bool keepdims);

/* As ag_argmax for the smallest element (nan counts as the smallest). */
ag_status ag_argmin(ag_tensor *out, ag_tensor a, int64_t axis, bool keepdims);

/* The k largest (largest = true) or smallest elements of a along `axis` in *values, in order
 * (largest first, or smallest first; equal values in index order; nan counts as the largest),
 * and their positions along the axis in *indices (int64), both of a's shape with that axis
 * k long. Gradients flow from values to the positions picked. Both outputs are set, or
 * neither. A capture refuses topk values that need a gradient (their backward would hold the
 * positions found at capture time). Errors also: AG_ERR_ARGUMENT (values or indices NULL, k
 * outside 0..extent, axis out of range), AG_ERR_SHAPE (a is 0-d), AG_ERR_DTYPE. */
ag_status ag_topk(ag_tensor *values, ag_tensor *indices, ag_tensor a, int64_t k, int64_t axis, bool largest);

/* One-hot rows of an int64 tensor of class indices: shape indices.shape + (classes), 1 at each
 * index, 0 elsewhere, in `dtype` (AG_FLOAT32, AG_FLOAT64 or AG_INT64). classes = -1 takes the
 * largest index + 1 (as torch.nn.functional.one_hot). No gradient.
 * Errors also: AG_ERR_DTYPE (indices not int64, dtype bool or unknown), AG_ERR_ARGUMENT (an
 * index < 0 or >= classes, classes < -1, classes = -1 with no index), AG_ERR_SHAPE (rank). */
ag_status ag_one_hot(ag_tensor *out, ag_tensor indices, int64_t classes, ag_dtype dtype);

/* Rows of weight (V, D) picked by an int64 tensor of indices in 0..V-1: a tensor of shape
 * indices.shape + (D) (PyTorch's embedding). The gradient to weight adds each picked row's
 * gradient into its row (a row picked many times sums in float64 first, so a float32 sum of
 * 1e7 terms stays within a few ulp). The backward reads the indices tensor as saved: writing it
 * in place before the backward is AG_ERR_STATE.
 * Errors also: AG_ERR_DTYPE (indices not int64, weight not float), AG_ERR_SHAPE (weight not
 * 2-D, result rank above AG_MAX_NDIM), AG_ERR_ARGUMENT (an index out of range). */
ag_status ag_embedding(ag_tensor *out, ag_tensor indices, ag_tensor weight);

/* a with `value` (in a's dtype) where mask holds: mask is bool (or any dtype, non-zero true)
 * and broadcasts to a's shape; the result has a's shape. The gradient flows to a where mask
 * does not hold (0 where it does, even for an inf or nan gradient).
 * Errors also: AG_ERR_SHAPE (mask does not broadcast to a), AG_ERR_DTYPE (a is not float). */
ag_status ag_masked_fill(ag_tensor *out, ag_tensor a, ag_tensor mask, double value);

/* Elementwise not, and, or of masks (any dtype: non-zero is true; and/or broadcast), as bool.
 * Errors also: AG_ERR_SHAPE (shapes that do not broadcast). */
ag_status ag_logical_not(ag_tensor *out, ag_tensor a);
ag_status ag_logical_and(ag_tensor *out, ag_tensor a, ag_tensor b);
ag_status ag_logical_or(ag_tensor *out, ag_tensor a, ag_tensor b);

/* ag_cross_entropy with the labels as an int64 tensor of N class indices (shape (N)): the
 * batch mean of -log_softmax(logits)[i, labels[i]]. The same value and gradient; the labels
 * are a tensor, so a captured training step replays with the labels it is given.
 * Errors also: AG_ERR_DTYPE (labels not int64, logits not float), AG_ERR_SHAPE (logits not
 * 2-D, labels not (N)), AG_ERR_ARGUMENT (a label out of range). */
ag_status ag_cross_entropy_labels(ag_tensor *out, ag_tensor logits, ag_tensor labels);

/* ---- random generators ---- */

/* A seeded random number generator that carries its state: every draw (dropout masks, random
 * tensors, samples, permutations) advances it, so a whole run follows from one seed. The
 * stream is SplitMix64: the first ag_random_uniform of a new generator gives the same values
 * as ag_tensor_rand_uniform with the same seed, on every machine. Thread-safe: each draw takes
 * the generator's lock (threads sharing one get numbers in the order they draw).
 * In a capture, a replay draws anew from the generator, as the eager step would; a recompute
 * (ag_recompute) keeps the values drawn when the graph was built.
 * Free with ag_generator_free; a generator lives on while a captured function uses it. */
typedef uint64_t ag_generator;

/* A new generator seeded with `seed`. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_generator_new(ag_generator *out, uint64_t seed);

/* Releases the handle; AG_NULL_TENSOR (0) does nothing. Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_generator_free(ag_generator g);

/* The generator's whole state (one 64-bit word); setting it back replays the draws that followed.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_generator_get_state(uint64_t *out, ag_generator g);
ag_status ag_generator_set_state(ag_generator g, uint64_t state);

/* A new leaf of uniform values in [low, high) drawn from g (float32 or float64).
 * Errors as ag_tensor_rand_uniform, and AG_ERR_INVALID_HANDLE (g), AG_ERR_DTYPE (int64, bool). */
ag_status ag_random_uniform(ag_tensor *out, const int64_t *shape, int64_t ndim, double low, double high,
                            ag_generator g, ag_dtype dtype);

/* A new leaf of normal values drawn from g. Errors as ag_random_uniform, and std < 0. */
ag_status ag_random_normal(ag_tensor *out, const int64_t *shape, int64_t ndim, double mean, double std,
                           ag_generator g, ag_dtype dtype);

/* A new int64 leaf of values uniform in low..high-1 drawn from g (no modulo bias).
 * Errors: as ag_tensor_zeros, AG_ERR_ARGUMENT (low >= high), AG_ERR_INVALID_HANDLE. */
ag_status ag_randint(ag_tensor *out, const int64_t *shape, int64_t ndim, int64_t low, int64_t high, ag_generator g);

/* A new int64 leaf holding a random permutation of 0..n-1 (Fisher-Yates) drawn from g: for
 * shuffling a dataset each epoch. Errors: AG_ERR_ARGUMENT (n < 0 or > 2^40),
 * AG_ERR_INVALID_HANDLE, AG_ERR_OUT_OF_MEMORY. */
ag_status ag_randperm(ag_tensor *out, int64_t n, ag_generator g);

/* Inverted dropout: when training and p > 0, each element of a is zeroed with probability p
 * (drawn from g) and the others are scaled by 1/(1-p), so the expectation is kept (p = 1
 * zeroes all); otherwise a new handle to a itself. The gradient is masked and scaled alike.
 * Errors also: AG_ERR_ARGUMENT (p outside [0, 1] or nan), AG_ERR_INVALID_HANDLE (g),
 * AG_ERR_DTYPE (a not float). */
ag_status ag_dropout(ag_tensor *out, ag_tensor a, double p, bool training, ag_generator g);

/* `samples` category indices (int64) drawn from g by the weights in each row of `weights`, (C)
 * or (N, C): results (samples) or (N, samples). Weights must be finite and >= 0 with a positive
 * one per row; they need not sum to 1. Without replacement a category is drawn at most once,
 * so samples may not exceed the categories of positive weight (as torch.multinomial).
 * Errors also: AG_ERR_ARGUMENT (samples < 0, a bad weight, too many samples without
 * replacement), AG_ERR_SHAPE (weights not 1-D or 2-D, no category), AG_ERR_DTYPE,
 * AG_ERR_INVALID_HANDLE (g). */
ag_status ag_multinomial(ag_tensor *out, ag_tensor weights, int64_t samples, bool replacement, ag_generator g);

/* ------------------------------------------------------------------------------------------ */
/* Convolution and pooling                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* PyTorch's conventions: batched NCHW inputs (N, C, H, W), or (N, C, L) for conv1d; unbatched
 * (C, H, W) inputs are not accepted (add a batch axis of 1). Pairs of parameters are passed as
 * two int64_t arguments (height first). N = 0 or C = 0 gives an empty result of the right shape
 * (and empty gradients); a spatial extent (H, W, L) of 0 is refused, as in PyTorch. Results and
 * gradients have x's dtype; every tensor operand must be float32 or float64, of one dtype.
 * Errors (all of this section): AG_ERR_INVALID_HANDLE; AG_ERR_DTYPE (an operand not float32 or
 * float64, operands of different dtypes); AG_ERR_SHAPE (wrong rank, shapes that do not fit, a
 * spatial extent 0, a kernel larger than the padded input, sizes that overflow int64);
 * AG_ERR_ARGUMENT (out NULL, a parameter out of its range, as listed with each function). */

/* 2-D convolution (cross-correlation, as torch.nn.functional.conv2d): x (N, C, H, W), weight
 * (O, C/groups, kH, kW), bias (O) or AG_NULL_TENSOR -> (N, O, OH, OW) with
 * OH = floor((H + 2 padding_h - dilation_h (kH - 1) - 1) / stride_h) + 1 (OW likewise).
 * Channels split into `groups` groups: group g's outputs see only group g's inputs. Padding
 * reads zeros. Gradients flow to x, weight and bias; twice differentiable (bilinear in x and
 * weight), forward mode too. Computed as im2col (an unfold of x's windows into rows) times the
 * weight in one BLAS product per group, then a permute to NCHW; float32 sums overlapping
 * windows of the input's gradient in double.
 * Errors also: AG_ERR_ARGUMENT (stride or dilation < 1, padding < 0, groups < 1, a weight with
 * kH or kW of 0); AG_ERR_SHAPE (x not 4-D or weight not 4-D, C or O not divisible by groups,
 * weight[1] != C/groups, bias not (O)). */
ag_status ag_conv2d(ag_tensor *out, ag_tensor x, ag_tensor weight, ag_tensor bias, int64_t stride_h,
                    int64_t stride_w, int64_t padding_h, int64_t padding_w, int64_t dilation_h,
                    int64_t dilation_w, int64_t groups);

/* 1-D convolution (torch.nn.functional.conv1d): x (N, C, L), weight (O, C/groups, k), bias (O)
 * or AG_NULL_TENSOR -> (N, O, OL), OL = floor((L + 2 padding - dilation (k - 1) - 1) / stride)
 * + 1. ag_conv2d over (N, C, 1, L): the same gradients and errors. */
ag_status ag_conv1d(ag_tensor *out, ag_tensor x, ag_tensor weight, ag_tensor bias, int64_t stride,
                    int64_t padding, int64_t dilation, int64_t groups);

/* Max pooling (torch.nn.functional.max_pool2d, no dilation, floor mode): x (N, C, H, W) ->
 * (N, C, OH, OW), the maximum of each kernel_h x kernel_w window, OH = floor((H + 2 padding_h -
 * kernel_h) / stride_h) + 1. stride_h = stride_w = 0 means stride = kernel (PyTorch's default).
 * Padding counts as -infinity and may be at most half the kernel (so every window holds an
 * input position). A nan in a window is its maximum. Gradient: each window's incoming gradient
 * goes to ONE position, its first maximum in scan order (rows, then columns), as PyTorch (ties,
 * such as the zeros after a relu, pick the first); positions picked by several overlapping
 * windows sum them (in double for float32). The rule finds the maxima again from the saved input
 * (no index tensor is kept). Forward mode: the tangent read at the same positions.
 * Errors also: AG_ERR_ARGUMENT (kernel < 1, stride < 0, one stride 0 and not the other, padding
 * < 0 or more than half the kernel). */
ag_status ag_max_pool2d(ag_tensor *out, ag_tensor x, int64_t kernel_h, int64_t kernel_w,
                        int64_t stride_h, int64_t stride_w, int64_t padding_h, int64_t padding_w);

/* Average pooling (torch.nn.functional.avg_pool2d, floor mode): the mean of each window, sizes
 * and stride as ag_max_pool2d (stride 0, 0 means the kernel). Padding counts as zeros; with
 * count_include_pad (PyTorch's default: pass true) every window divides by kernel_h * kernel_w,
 * without it by the number of input positions the window covers. Linear: the gradient spreads
 * each window's incoming gradient evenly over it (divided the same way).
 * Errors also: as ag_max_pool2d. */
ag_status ag_avg_pool2d(ag_tensor *out, ag_tensor x, int64_t kernel_h, int64_t kernel_w,
                        int64_t stride_h, int64_t stride_w, int64_t padding_h, int64_t padding_w,
                        bool count_include_pad);

/* Adaptive average pooling (torch.nn.functional.adaptive_avg_pool2d): x (N, C, H, W) ->
 * (N, C, output_h, output_w); output (i, j) is the mean of rows floor(i H / output_h) up to
 * ceil((i + 1) H / output_h) (exclusive) and of the columns likewise, so windows may overlap or
 * differ in size. An output extent of 0 gives an empty result. Linear, with its gradient.
 * (1, 1) is a mean over H and W; windows that tile the input evenly are an average pool; other
 * sizes are products with constant averaging matrices.
 * Errors also: AG_ERR_ARGUMENT (an output extent < 0), AG_ERR_SHAPE (x not 4-D, H or W 0, an
 * output whose element count overflows, or, for a non-empty output, an averaging matrix
 * output_h x H or output_w x W of more than 2^28 entries). */
ag_status ag_adaptive_avg_pool2d(ag_tensor *out, ag_tensor x, int64_t output_h, int64_t output_w);

/* ------------------------------------------------------------------------------------------ */
/* Normalisation, attention and training helpers                                              */
/* ------------------------------------------------------------------------------------------ */

/* torch.nn.functional.layer_norm: (x - mean) / sqrt(var + eps) over the last `normalized_ndim`
 * axes of x (var biased, as torch), times weight plus bias, each of the shape of those axes or
 * AG_NULL_TENSOR for none. The standardisation is one op with row kernels (statistics in
 * double, also for float32) whose derivative is stated over differentiable ops: gradients flow
 * to x, weight and bias, at every order, and in forward mode. An empty x gives an empty result
 * (and empty gradients).
 * Errors also: AG_ERR_ARGUMENT (normalized_ndim outside 1..rank, eps negative or not finite),
 * AG_ERR_SHAPE (weight or bias not of the normalized axes' shape), AG_ERR_DTYPE (an operand not
 * floating point, or of another dtype than x). */
ag_status ag_layer_norm(ag_tensor *out, ag_tensor x, int64_t normalized_ndim, ag_tensor weight, ag_tensor bias,
                        double eps);

/* torch.nn.functional.batch_norm for x (N, C, *) (rank >= 2): each channel normalised by
 * (x - m) / sqrt(v + eps), times weight plus bias (each (C) or AG_NULL_TENSOR).
 * training true: m and v are the channel's mean and biased variance over the batch and spatial
 * axes; if running_mean and running_var are given (both (C), or both AG_NULL_TENSOR) they are
 * then updated in place, r = (1 - momentum) r + momentum s, with s the batch mean and the
 * UNBIASED batch variance (torch's rule), their version bumped (graphs that saved them refuse a
 * stale backward). With N * spatial == 0 the result is empty and they are left unchanged.
 * training false: m and v are running_mean and running_var (required); gradients also flow to
 * them if they require grad. Gradients flow to x, weight and bias (training: through the batch
 * statistics), at every order, and in forward mode.
 * Errors also: AG_ERR_ARGUMENT (N * spatial == 1 in training, as torch; only one of the running
 * tensors given; eval without them; the two running tensors sharing values; momentum not
 * finite; eps negative or not finite), AG_ERR_SHAPE (x of rank < 2, a (C) tensor of another
 * shape), AG_ERR_DTYPE (an operand not floating point or of another dtype than x), AG_ERR_STATE
 * (training with a running tensor that requires grad or is the result of a recorded op). */
ag_status ag_batch_norm(ag_tensor *out, ag_tensor x, ag_tensor running_mean, ag_tensor running_var,
                        ag_tensor weight, ag_tensor bias, bool training, double momentum, double eps);

/* torch.nn.functional.group_norm for x (N, C, *) (rank >= 2): the C channels split into
 * `groups` groups of C / groups consecutive channels; each group of each sample normalised over
 * its channels and spatial positions (biased variance), then times weight plus bias (each (C)
 * or AG_NULL_TENSOR). Gradients as ag_layer_norm.
 * Errors also: AG_ERR_ARGUMENT (groups < 1 or not dividing C, eps negative or not finite),
 * AG_ERR_SHAPE (x of rank < 2, weight or bias not (C)), AG_ERR_DTYPE (as ag_layer_norm). */
ag_status ag_group_norm(ag_tensor *out, ag_tensor x, int64_t groups, ag_tensor weight, ag_tensor bias, double eps);

/* torch.nn.functional.scaled_dot_product_attention: softmax(q k^T * scale + mask) v for
 * q (..., L, E), k (..., S, E), v (..., S, Ev); the batch axes (...) broadcast; the result is
 * (..., L, Ev). attn_mask is additive, of q's dtype, broadcasting to (..., L, S), or
 * AG_NULL_TENSOR. is_causal masks key j > query i with -inf (aligned top-left, as torch).
 * scale 0 means 1 / sqrt(E). A row whose scores are all -inf (fully masked) gives zeros and zero
 * gradients (torch 2.5 and later; a plain softmax would give nan); S == 0 gives zeros.
 * Composed of a batched GEMM, the mask, a softmax (one op with row kernels, its derivative
 * stated over differentiable ops) and a GEMM: gradients flow to q, k, v and attn_mask, at every
 * order, and in forward mode.
 * Errors also: AG_ERR_ARGUMENT (attn_mask given with is_causal, as torch; scale not finite),
 * AG_ERR_SHAPE (rank < 2, E or S extents that differ, batch axes or a mask that do not
 * broadcast, an L, S, E or Ev extent above 2^31 - 1: BLAS's limit, as for ag_matmul, also when
 * another extent is 0), AG_ERR_DTYPE (an operand not floating point, or of another dtype than q). */
ag_status ag_scaled_dot_product_attention(ag_tensor *out, ag_tensor q, ag_tensor k, ag_tensor v, ag_tensor attn_mask,
                                          bool is_causal, double scale);

/* torch.nn.utils.clip_grad_norm_: stores in *out_total_norm the norm of order norm_type (> 0,
 * or INFINITY) of the gradients (ag_tensor_grad) of params[0..n-1] taken together (the norm of
 * their norms), computed in double whatever their dtype. Parameters without a gradient are
 * skipped; none (n == 0 included): 0. When c = max_norm / (total + 1e-6) is below 1, each
 * gradient is replaced by c * gradient (in its dtype, with no history); a gradient fetched
 * earlier keeps its values (as after ag_backward's accumulation). A non-finite total scales as
 * torch does: nan makes every gradient nan, inf scales them by 0 (an infinite element becomes
 * nan). Inside a capture the scaling is recorded, so a replay scales each call's gradients.
 * Errors also: AG_ERR_ARGUMENT (out_total_norm NULL, n < 0, params NULL with n > 0, a repeated
 * parameter, max_norm negative or nan, norm_type not > 0), AG_ERR_INVALID_HANDLE. */
ag_status ag_clip_grad_norm(double *out_total_norm, const ag_tensor *params, int64_t n, double max_norm,
                            double norm_type);

/* The learning rate at `step` (0 for the first) of linear warm-up then cosine decay (the GPT
 * recipe), to pass to ag_optimizer_set_lr before each step: base_lr * (step + 1) / warmup_steps
 * while step < warmup_steps; then min_lr + (base_lr - min_lr) * (1 + cos(pi * (step -
 * warmup_steps) / (total_steps - warmup_steps))) / 2; min_lr from step total_steps on.
 * Errors: AG_ERR_ARGUMENT (out NULL, step < 0, warmup_steps < 0, total_steps < warmup_steps,
 * a rate negative or not finite, min_lr > base_lr). */
ag_status ag_lr_warmup_cosine(double *out, int64_t step, int64_t warmup_steps, int64_t total_steps, double base_lr,
                              double min_lr);

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
 * without a seed, the graph was already released, a backward run from a hook (or on another
 * thread while a hook ran) without retain_graph released part of it during this pass, or
 * values a node saved were written in place since: see version counters at the top; the
 * gradients of leaves are then left as they were; 64 backward passes already nested on this
 * thread, see ag_grad_hook), AG_ERR_SHAPE / AG_ERR_DTYPE (seed does not match root),
 * AG_ERR_CALLBACK (a hook returned non-zero, or a custom op's backward failed: see "User-defined
 * ops"), AG_ERR_SHAPE (a hook's replacement gradient has the wrong shape or dtype; the
 * replacement is freed). */
ag_status ag_backward(ag_tensor root, ag_tensor seed, bool retain_graph, bool create_graph);
/* Memory: a graph keeps the values its backward needs, and never keeps a leaf alive (a leaf's
 * values are kept for backward even after its last handle is freed, but its gradient is then
 * dropped). So a differentiable gradient from create_graph, whose graph leads back to the leaf,
 * creates no reference cycle: freeing every handle frees everything, no ag_tensor_zero_grad
 * needed. */

/* The gradients of the sum over k of <outputs[k], seeds[k]> with respect to each of `inputs`,
 * returned as new tensors in out_grads[0 .. ninputs-1] (yours to free), without touching any
 * tensor's accumulated gradient (torch.autograd.grad). Inputs may be leaves or results of
 * operations. seeds may be NULL (each output then must be a scalar and gets seed 1), or an array
 * of noutputs handles where AG_NULL_TENSOR stands for 1 on a scalar output.
 *   retain_graph / create_graph: as ag_backward.
 *   allow_unused: an input the outputs do not depend on gets AG_NULL_TENSOR; without it that is
 *   AG_ERR_STATE.
 * Errors: AG_ERR_ARGUMENT (NULL arrays, counts < 1), AG_ERR_INVALID_HANDLE, AG_ERR_STATE (an
 * output that does not require grad, a non-scalar output without a seed, a released graph, an
 * unused input without allow_unused, 64 nested backward passes as for ag_backward), AG_ERR_SHAPE
 * / AG_ERR_DTYPE (a seed that does not match), AG_ERR_CALLBACK (a hook or a custom op's backward
 * failed). On failure nothing is written to out_grads. */
ag_status ag_grad(ag_tensor *out_grads, const ag_tensor *outputs, int64_t noutputs, const ag_tensor *seeds,
                  const ag_tensor *inputs, int64_t ninputs, bool retain_graph, bool create_graph,
                  bool allow_unused);

/* ------------------------------------------------------------------------------------------ */
/* Grad mode, detach, hooks                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Turns recording on or off for operations on the calling thread (off = torch.no_grad()) and
 * writes the previous state to *previous (which may be NULL). Each thread starts with it on.
 * Never fails; returns AG_OK. */
ag_status ag_set_grad_enabled(bool *previous, bool enabled);

/* Whether operations on the calling thread record graphs. Errors: AG_ERR_ARGUMENT (out NULL). */
ag_status ag_is_grad_enabled(bool *out);

/* A new tensor sharing a's values, with no history and not requiring grad (a leaf).
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_detach(ag_tensor *out, ag_tensor a);

/* A gradient hook. Called during ag_backward / ag_grad with the gradient flowing into the
 * tensor it is registered on (for a leaf: the total from that pass, before it is accumulated).
 * `grad` is borrowed: valid during the call only; do not free it. To replace the gradient, write
 * a new handle to *replacement: the library takes that handle over and frees it; leave
 * *replacement as AG_NULL_TENSOR to keep the gradient. The replacement must have the gradient's
 * shape and dtype. A non-zero return aborts the backward pass, which then fails with
 * AG_ERR_CALLBACK (gradients already accumulated by it stay). The hook runs on the thread that
 * called backward, without the library's internal lock held (it may wait for other threads that
 * call the library; and backward passes on several threads run their hooks at the same time,
 * as in PyTorch, so user data a hook shares between threads needs its own synchronisation),
 * with grad mode on only if that pass has create_graph (as in PyTorch): without
 * create_graph, results of operations made inside a hook record no history and do not require
 * grad (so a backward from one of them fails with AG_ERR_STATE), unless the hook turns grad mode
 * on with ag_set_grad_enabled. A hook may run backward passes itself; at most 64 backward passes
 * run nested on one thread (through hooks and custom ops' backwards), and the one that would be
 * the 65th fails with AG_ERR_STATE (a hook whose backward reaches the hook again would otherwise
 * recurse until the stack overflows). */
typedef int32_t (*ag_grad_hook)(ag_tensor *replacement, ag_tensor grad, void *user_data);

/* Registers `hook` on t (hooks run in registration order). `destroy`, if not NULL, is called
 * with user_data once the hook can no longer run: when it is removed, or when t is gone (for a
 * leaf: its last handle freed, graphs do not keep leaves alive; for a result: its last handle freed and
 * every graph using it gone). `destroy` should only release user_data: it runs on whichever
 * thread drops the hook, in rare cases (a graph freed by a backward pass) while the library's
 * internal lock is held, so it must not wait for other threads that call the library.
 * *out_id receives an id for ag_tensor_remove_hook (out_id may be NULL).
 * Errors: AG_ERR_ARGUMENT (hook NULL), AG_ERR_INVALID_HANDLE, AG_ERR_STATE (t does not require
 * grad, checked under the graph lock: also when another thread turns it off meanwhile).
 * On any failure the caller keeps ownership of user_data: `destroy` is not called, now or later.
 * A hook's failure (AG_ERR_CALLBACK from the backward) quotes the message of a failed call the
 * hook itself made, if any. */
ag_status ag_tensor_register_hook(int64_t *out_id, ag_tensor t, ag_grad_hook hook, void *user_data,
                                  void (*destroy)(void *user_data));

/* Removes the hook with the given id from t (its `destroy` runs now), whichever kind it is.
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_ARGUMENT (no hook with that id on t). */
ag_status ag_tensor_remove_hook(ag_tensor t, int64_t id);

/* A gradient-ready hook (PyTorch's post-accumulate-grad hook), the notification data
 * parallelism is built on. Called once per ag_backward for each leaf t it is registered on
 * that received a gradient in that pass, right after the pass has added that gradient into
 * t's .grad, and as soon as the pass has nothing more to send to t: before the pass goes on
 * through the rest of the graph (layers nearer the input), so that work the hook starts (copying
 * the gradient into a buffer, a non-blocking all-reduce) overlaps the rest of the backward.
 * Other leaves' .grad may not be complete yet when it runs. `t` is borrowed (valid during the
 * call only; do not free it): read the gradient with ag_tensor_grad; the hook may also write it
 * in place (ag_tensor_set_data on that gradient). ag_grad never runs these hooks (it touches no
 * .grad). A non-zero return aborts the backward pass, which fails with AG_ERR_CALLBACK (its last
 * error quoted as for ag_grad_hook); gradients already accumulated stay. It runs as ag_grad_hook
 * does: on the backward's thread, without the library's internal lock, grad mode as there. */
typedef int32_t (*ag_post_accumulate_grad_hook)(ag_tensor t, void *user_data);

/* Registers a gradient-ready hook on the leaf t (hooks of this kind run in registration order,
 * after t's ag_grad_hook hooks and the accumulation). `destroy` and *out_id as for
 * ag_tensor_register_hook; ag_tensor_remove_hook removes it.
 * Errors: AG_ERR_ARGUMENT (hook NULL), AG_ERR_INVALID_HANDLE, AG_ERR_STATE (t does not require
 * grad, or is not a leaf: it has history, so nothing is accumulated into it). On any failure the
 * caller keeps ownership of user_data. */
ag_status ag_tensor_register_post_accumulate_grad_hook(int64_t *out_id, ag_tensor t, ag_post_accumulate_grad_hook hook,
                                                       void *user_data, void (*destroy)(void *user_data));

/* ------------------------------------------------------------------------------------------ */
/* Gradient checking and graph pictures                                                       */
/* ------------------------------------------------------------------------------------------ */

/* A function of tensors, given to ag_gradcheck and to the function transforms (ag_jvp, ag_vjp,
 * ag_jacobian, ag_hvp, ag_hessian), which call it on this thread, once or many times: it reads
 * `inputs` (borrowed; do not free them) and writes a new tensor handle to *out (the library
 * frees it; *out may also be one of the inputs, for the identity). Its output must have the same
 * shape and dtype on every call of one ag_gradcheck / ag_jacobian / ag_hessian (ag_gradcheck
 * also wants float64). Non-zero return: a failure (AG_ERR_CALLBACK); a handle left in *out is
 * freed then too. user_data is passed through untouched; the library never frees it. */
typedef int32_t (*ag_build_fn)(ag_tensor *out, const ag_tensor *inputs, int64_t ninputs, void *user_data);

/* Checks the analytic gradient of build(inputs) against central finite differences with step
 * eps, in float64: the output is weighted by fixed pseudo-random weights and summed, and for every
 * element of every input that requires grad, |analytic - numeric| <= atol + rtol * |numeric| must
 * hold. The inputs must be float64; they are not modified (copies are perturbed).
 * Outputs: *passed, and the worst element: input index, flat element index, analytic and numeric
 * values (every output pointer but `passed` may be NULL).
 * The analytic gradient is recorded whatever this thread's grad mode, so ag_gradcheck works
 * under ag_set_grad_enabled(false) and from inside another ag_gradcheck's build function (at
 * most 8 calls that run build functions, ag_gradcheck and the function transforms counted
 * together, active on one thread at once: a ninth fails with AG_ERR_STATE).
 * Errors: AG_ERR_ARGUMENT (build or passed NULL, inputs NULL, ninputs < 1, eps <= 0, atol or
 * rtol < 0), AG_ERR_INVALID_HANDLE, AG_ERR_DTYPE (an input not float64), AG_ERR_STATE (a ninth
 * nested call), and AG_ERR_CALLBACK whenever build breaks its contract, the message saying
 * how: it returned non-zero (quoting the message of its own failed call, if any), wrote no
 * handle or one that is not a live tensor handle (0 with a zero return, made up, freed, another
 * kind: a handle of another kind is left alone), freed one of its borrowed inputs, gave a
 * non-float64 output, or an output whose shape or dtype differs from its first call's ("the
 * function's output changed between calls"). Also any error of the backward pass it runs
 * through build's graph (a hook there failing, AG_ERR_OUT_OF_MEMORY). On every failure nothing
 * is written to the outputs and the library leaks no handle. */
ag_status ag_gradcheck(bool *passed, int64_t *worst_input, int64_t *worst_index, double *worst_analytic,
                       double *worst_numeric, ag_build_fn build, void *user_data, const ag_tensor *inputs,
                       int64_t ninputs, double eps, double atol, double rtol);

/* Writes a Graphviz DOT description of the graph that produced `root` (one box per tensor and
 * per operation: op names, shapes, dtypes, which tensors require grad) as a NUL-terminated string
 * into out, like snprintf: at most capacity - 1 characters and a NUL are written, and *length
 * receives the full length (without the NUL). Call with out NULL and capacity 0 to learn the
 * length. Errors: AG_ERR_ARGUMENT (length NULL, capacity < 0, out NULL with capacity > 0),
 * AG_ERR_INVALID_HANDLE. */
ag_status ag_graph_to_dot(char *out, int64_t capacity, int64_t *length, ag_tensor root);

/* ------------------------------------------------------------------------------------------ */
/* Function transforms                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Derivatives of a function given as a build function (an ag_build_fn, above), as JAX's jvp,
 * vjp, jacrev / jacfwd, hessian and torch.func's hvp: the library calls build on tensors of
 * its own (aliases of the inputs, carrying tangents in forward mode) as often as the
 * transform needs, on this thread. Forward mode (ag_jvp, ag_hvp, ag_hessian, ag_jacobian
 * with AG_JACOBIAN_FORWARD) sends tangents through every operation the function calls; reverse
 * mode runs backward passes
 * through the graph the function records (whatever this thread's grad mode: it is turned on
 * while build runs in reverse mode). The results are new handles, yours to free. Derivatives
 * (tangents, gradients, Jacobians, Hessians and their products) share no memory with a tensor
 * you passed in; the *output of ag_jvp and ag_vjp is what build returned (for the identity, a
 * tensor sharing the primal's values, as ag_detach gives).
 *
 * Errors common to all five: AG_ERR_ARGUMENT (an output pointer NULL, build NULL),
 * AG_ERR_INVALID_HANDLE (an input handle), AG_ERR_OUT_OF_MEMORY, and AG_ERR_CALLBACK whenever
 * build breaks its contract, the message saying how: it returned non-zero (quoting the message
 * of its own failed call, if any), wrote no handle or one that is not a live tensor handle,
 * freed one of its borrowed inputs, or (ag_jacobian in forward mode, ag_hessian) gave an output
 * whose shape or dtype differs from its first call's ("the function's output changed between
 * calls"). AG_ERR_STATE: called from a build function while 8 calls that run build functions
 * (ag_gradcheck and these, counted together) are active on this thread; and ag_jvp, ag_hvp,
 * ag_hessian or ag_jacobian called while a forward-mode pass runs on this thread, i.e. from the
 * build function of ag_jvp, ag_hvp, ag_hessian or forward-mode ag_jacobian ("a forward-mode pass
 * is already running on this thread"). Reverse mode may nest inside forward mode: ag_vjp there
 * gives gradients that carry their tangents (a jvp of a vjp is a Hessian-vector product), as
 * does ag_grad with create_graph. Also any error of a backward pass the transform runs (a hook
 * failing). On every failure nothing is written to the outputs and the library leaks no
 * handle. */

/* f(primals) and its directional derivative along `tangents` (forward mode, one pass):
 * *output = f(primals), *output_tangent = sum_k J_k(primals) tangents[k] (J_k the Jacobian of f
 * with respect to primal k), of f's output shape and dtype; zeros when the output does not
 * depend on the primals. tangents holds one tensor per primal, of its shape and dtype. Both
 * results carry history where a primal requires grad and grad mode is on, so ag_backward or
 * ag_grad can differentiate them again (reverse over forward).
 * Errors (besides the common ones): AG_ERR_ARGUMENT (output or output_tangent NULL, primals or
 * tangents NULL, nprimals < 1), AG_ERR_SHAPE / AG_ERR_DTYPE (a tangent whose shape / dtype
 * differs from its primal's), AG_ERR_STATE (inside another forward-mode pass). */
ag_status ag_jvp(ag_tensor *output, ag_tensor *output_tangent, ag_build_fn build, void *user_data,
                 const ag_tensor *primals, int64_t nprimals, const ag_tensor *tangents);

/* f(primals) and the vector-Jacobian product (reverse mode, one backward pass): *output =
 * f(primals), and grads[k] = the gradient of sum(f(primals) * cotangent) with respect to primal
 * k, of its shape and dtype (zeros for a primal f does not use), for k < nprimals: grads must
 * have room for nprimals handles. The cotangent has f's output shape and dtype. No .grad is
 * touched. Where a primal requires grad and grad mode is on, the results carry history, so
 * ag_backward or ag_grad can differentiate them again (reverse over reverse), as ag_grad with
 * create_graph would: build gets that primal itself, its hooks run, and one whose history an
 * earlier backward released is AG_ERR_STATE. Otherwise the results carry no history (inside a
 * forward-mode pass they carry their tangents) and the primals are differentiated as values
 * (build gets new tensors sharing their values, not their graphs).
 * Errors (besides the common ones): AG_ERR_ARGUMENT (output or grads NULL, primals NULL,
 * nprimals < 1), AG_ERR_SHAPE / AG_ERR_DTYPE (a cotangent whose shape / dtype differs from f's
 * output), AG_ERR_STATE (a primal requiring grad whose history was released, above). */
ag_status ag_vjp(ag_tensor *output, ag_tensor *grads, ag_build_fn build, void *user_data,
                 const ag_tensor *primals, int64_t nprimals, ag_tensor cotangent);

/* How ag_jacobian computes: one backward pass per element of f's output, or one forward-mode
 * pass per element of the input (the cheaper when the input has fewer elements). */
typedef int32_t ag_jacobian_mode;
enum {
    AG_JACOBIAN_REVERSE = 1, /* as jax.jacrev */
    AG_JACOBIAN_FORWARD = 2  /* as jax.jacfwd */
};

/* The Jacobian of f at `input`: a tensor of shape f(input).shape + input.shape (rank at most
 * AG_MAX_NDIM), in f's output dtype, whose element [i..., j...] is d f[i...] / d input[j...].
 * Reverse mode calls build once; forward mode once per element of input (f's output must keep
 * its shape and dtype), or once when input is empty. No history.
 * Errors (besides the common ones): AG_ERR_ARGUMENT (jacobian NULL, a mode other than
 * AG_JACOBIAN_REVERSE / AG_JACOBIAN_FORWARD), AG_ERR_SHAPE (a Jacobian of rank above
 * AG_MAX_NDIM, or whose non-zero extents multiply past int64: found after f's first call,
 * before any derivative is computed), AG_ERR_STATE (called inside a forward-mode pass, in either
 * mode: assembled from values, its result would carry no tangent). */
ag_status ag_jacobian(ag_tensor *jacobian, ag_build_fn build, void *user_data, ag_tensor input,
                      ag_jacobian_mode mode);

/* The Hessian-vector product H v of a scalar f at `input` (H the Hessian of f there), by
 * forward over reverse (the tangent of f's gradient along v, in one pass, without forming H):
 * a tensor of input's shape and dtype, no history. f's output must have one element (a 0-d
 * tensor, or any shape of one element); v has input's shape and dtype.
 * Errors (besides the common ones): AG_ERR_ARGUMENT (product NULL), AG_ERR_SHAPE (v's shape
 * differs from input's; f's output has more or fewer than one element), AG_ERR_DTYPE (v's
 * dtype differs), AG_ERR_STATE (inside another forward-mode pass). */
ag_status ag_hvp(ag_tensor *product, ag_build_fn build, void *user_data, ag_tensor input, ag_tensor v);

/* The Hessian of a scalar f at `input`: a tensor of shape input.shape + input.shape (so input
 * has rank at most AG_MAX_NDIM / 2), in input's dtype, no history, element [i..., j...] =
 * d^2 f / d input[i...] d input[j...]. One forward-over-reverse product per element of input:
 * build is called that many times (never for an empty input), and its one-element output must
 * keep its shape and dtype.
 * Errors (besides the common ones): AG_ERR_ARGUMENT (hessian NULL), AG_ERR_SHAPE (input of
 * rank above AG_MAX_NDIM / 2, or an empty input whose other extents make the Hessian's count
 * overflow int64: both before build is called; f's first output not of one element),
 * AG_ERR_STATE (inside another forward-mode pass). */
ag_status ag_hessian(ag_tensor *hessian, ag_build_fn build, void *user_data, ag_tensor input);

/* ------------------------------------------------------------------------------------------ */
/* Training: initialisers and optimizers                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Weight initialisers (torch.nn.init conventions). For a shape (out, in, ...), fan_in is
 * in * receptive and fan_out is out * receptive (receptive: the product of the trailing extents);
 * a 1-D shape has fan_in = fan_out = its length. */
typedef int32_t ag_init;
enum {
    AG_INIT_KAIMING_UNIFORM = 1, /* U(-b, b), b = sqrt(2) * sqrt(3 / fan_in) (He, for ReLU) */
    AG_INIT_KAIMING_NORMAL = 2,  /* N(0, 2 / fan_in) */
    AG_INIT_XAVIER_UNIFORM = 3,  /* U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot) */
    AG_INIT_XAVIER_NORMAL = 4    /* N(0, 2 / (fan_in + fan_out)) */
};

/* A new leaf tensor initialised by `kind` from a generator seeded with `seed` (same seed, same
 * numbers everywhere). Errors as ag_tensor_zeros, and AG_ERR_ARGUMENT (unknown kind),
 * AG_ERR_SHAPE (rank 0, or a zero fan). */
ag_status ag_tensor_init(ag_tensor *out, const int64_t *shape, int64_t ndim, ag_init kind, uint64_t seed,
                         ag_dtype dtype);

/* An opaque optimizer handle (a 64-bit integer like ag_tensor, of another kind: passing one
 * where the other is wanted is AG_ERR_INVALID_HANDLE). Release it with ag_optimizer_free. */
typedef uint64_t ag_optimizer;

/* Optimizers over the n parameters params[0..n-1]: leaves that require grad, held by the optimizer
 * (their handles may be freed). Each step updates every parameter that has a gradient, in place
 * (tensors sharing its values, e.g. by ag_detach, see the update), and skips the others. State
 * (momentum, moments) is per parameter and kept in float64. Formulas as torch.optim:
 *   SGD: d = grad + weight_decay * p; with momentum, buf = d on the first step, then
 *        buf = momentum * buf + d; p -= lr * (nesterov ? d + momentum * buf : buf).
 *   Adam: d = grad + weight_decay * p; m = b1 m + (1-b1) d; v = b2 v + (1-b2) d^2;
 *        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 *   AdamW: p *= 1 - lr * weight_decay, then the Adam step with d = grad.
 * Errors: AG_ERR_ARGUMENT (out or params NULL, n < 1, a repeated parameter, lr < 0, a negative or
 * non-finite hyper-parameter, betas outside [0, 1), nesterov without momentum),
 * AG_ERR_INVALID_HANDLE, AG_ERR_STATE (a parameter that is not a leaf requiring grad). */
ag_status ag_optimizer_sgd(ag_optimizer *out, const ag_tensor *params, int64_t n, double lr, double momentum,
                           bool nesterov, double weight_decay);
ag_status ag_optimizer_adam(ag_optimizer *out, const ag_tensor *params, int64_t n, double lr, double beta1,
                            double beta2, double eps, double weight_decay);
ag_status ag_optimizer_adamw(ag_optimizer *out, const ag_tensor *params, int64_t n, double lr, double beta1,
                             double beta2, double eps, double weight_decay);

/* One update step: every parameter that has a gradient is updated in place, which bumps its
 * version counter (graphs that saved its old values then refuse a backward; see the top).
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_OUT_OF_MEMORY (the optimizer's state for a parameter's
 * first step could not be allocated; no parameter is updated then). */
ag_status ag_optimizer_step(ag_optimizer opt);

/* Clears the gradient of every parameter (as ag_tensor_zero_grad). Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_optimizer_zero_grad(ag_optimizer opt);

/* Changes the learning rate for the following steps. Errors: AG_ERR_INVALID_HANDLE,
 * AG_ERR_ARGUMENT (lr negative or not finite). */
ag_status ag_optimizer_set_lr(ag_optimizer opt, double lr);

/* The current learning rate. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_optimizer_lr(double *out, ag_optimizer opt);

/* Releases the optimizer and its state (the parameters live on while other handles or graphs
 * hold them). Freeing 0 does nothing. Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_optimizer_free(ag_optimizer opt);

/* ------------------------------------------------------------------------------------------ */
/* Reusable graphs: values in place, recompute, capture and replay                            */
/* ------------------------------------------------------------------------------------------ */

/*
 * A graph built once can live: write new values into its leaves (ag_tensor_set_data,
 * ag_tensor_copy_), re-evaluate it in place (ag_recompute), and read values and derivatives
 * again without rebuilding. Or capture a whole function once (forward, ag_backward / ag_grad,
 * optimizer steps) and replay it on new inputs as one call (ag_capture, ag_function_call): the
 * replay runs the same arithmetic in the same order as the function did, so its results equal
 * the eager function's bit for bit, with its memory planned once (no allocation for values per
 * call), no handle table per op, what no output needs dropped, and runs of elementwise ops fused
 * into single blocked loops.
 */

/* Writes `count` elements of `dtype` from `data` (row-major; converted to t's dtype, float32 <->
 * float64) into t's values in place, with the rules of ag_tensor_copy_: t must be a leaf, not
 * one that requires grad while grad mode is on; the write bumps t's version counter, so a graph
 * that saved t's old values refuses a stale backward (or is brought up to date by ag_recompute).
 * Inside a capture the data is read at capture time: a replay writes those same values.
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_ARGUMENT (data NULL while count > 0, count != numel),
 * AG_ERR_DTYPE (unknown dtype), AG_ERR_STATE (as ag_tensor_copy_), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_set_data(ag_tensor t, const void *data, int64_t count, ag_dtype dtype);

/* Recomputable graphs, per thread, off by default: while on, every op recorded on this thread
 * keeps its forward (its inputs' values and parameters), so that ag_recompute can run it again.
 * Costs memory (the inputs of every recorded op stay alive with the graph), nothing while off.
 * *previous (if not NULL) receives the setting before the call. Errors: none. */
ag_status ag_set_recomputable(bool *previous, bool enabled);

/* Re-evaluates, in place, every recorded op between the leaves and `root` (children first) from
 * the current values of what it reads: after leaves were written (ag_tensor_set_data,
 * ag_tensor_copy_, an optimizer step), root and every intermediate of its graph hold the values
 * a fresh build would give, and ag_backward / ag_grad through the graph (retained with
 * retain_graph) use them, any node with respect to any node. Ops made on tensors that require
 * no grad recorded nothing and are constants of the graph; so are the results of ops that have
 * no gradient, even on tensors that require grad (comparisons, argmax, ag_to_dtype to int64 or
 * bool, random draws): a mask made by ag_gt(x, ...) keeps its first values when x changes
 * (make such masks again after writing x, rather than recomputing through them). A root with no recorded history is
 * left as it is (AG_OK). Other graphs that saved the recomputed values then refuse a stale
 * backward (version counters).
 * Errors: AG_ERR_INVALID_HANDLE, AG_ERR_STATE (an op under root was recorded while recomputable
 * graphs were off, or is a custom op that cannot be rerun (see "User-defined ops"): "was
 * recorded without its forward"; or the graph was freed by a backward without retain_graph),
 * AG_ERR_CALLBACK (a custom op's forward, called again, failed: the ops before it are
 * recomputed, those after are not). Nothing is written on the other errors. */
ag_status ag_recompute(ag_tensor root);

/* A captured function (a handle, like ag_tensor; 0 is never one). */
typedef uint64_t ag_function;
#define AG_NULL_FUNCTION ((ag_function)0)

/* The function ag_capture runs once: writes `noutputs` new tensor handles into outputs[0 ..
 * noutputs-1] (the library takes them over, also on failure), computed from the ninputs
 * placeholder tensors in inputs (borrowed: do not free them). It may call any op, ag_backward,
 * ag_grad, ag_optimizer_step / _zero_grad, ag_tensor_copy_ (into its inputs or tensors made
 * outside it). Returns AG_OK, or any other value to fail the capture (its last ag_last_error()
 * is quoted). */
typedef int32_t (*ag_capture_fn)(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                                 int64_t ninputs, void *user_data);

/* Captures fn: runs it once on new placeholder leaves with the shapes, dtypes, values and
 * requires_grad of inputs[0 .. ninputs-1] (ninputs may be 0, inputs then NULL), and compiles
 * everything it did into a replayable function, stored in *out (free it with
 * ag_function_free). The run happens: an optimizer step in fn updates the parameters once, as a
 * first training step on the example inputs.
 * What a replay does: the ops, backward passes and in-place writes fn made, in their order, on
 * the new inputs. Tensors made outside fn (parameters) are read where they are at each call, so
 * updates to them are seen; an optimizer step updates its parameters (and its state, step count
 * included) in place at each call, as the eager step does; tensors made inside fn (constants,
 * seeded random tensors) keep their capture-time values. What it does not redo: C code between
 * the ops (branches on values are frozen at the capture's path), and `.grad` fields (a replay
 * updates the parameters an optimizer writes, not their gradients: return gradients as outputs),
 * and ops fn runs on other threads (only the capturing thread is recorded: their results are
 * read as constants). An input fn writes in place (ag_tensor_copy_ into it) is written back to
 * the caller's tensor at each call, as fn would write it.
 * Errors: AG_ERR_ARGUMENT (out or fn NULL, inputs NULL with ninputs > 0, ninputs < 0, noutputs
 * < 1 or above 4096), AG_ERR_INVALID_HANDLE (an input), AG_ERR_CALLBACK (fn failed, wrote a
 * handle that is not a live tensor, or freed an input), AG_ERR_STATE (fn reached a hook in a
 * backward: hooks cannot be replayed; a capture inside a capture or inside a forward-mode pass;
 * a captured function called inside a capture), AG_ERR_OUT_OF_MEMORY; errors of fn's own calls
 * are returned by them to fn. Nothing is created on failure (fn's effects on parameters stay). */
ag_status ag_capture(ag_function *out, ag_capture_fn fn, const ag_tensor *inputs, int64_t ninputs,
                     int64_t noutputs, void *user_data);

/* Replays f on inputs[0 .. ninputs-1] (the count, shapes and dtypes of the capture's; values
 * only are read) and writes new tensor handles holding the outputs (no history) into
 * outputs[0 .. noutputs-1]. Calls of one function from several threads run one at a time (a lock
 * per function); different functions run in parallel (as eager calls, two replays that write the
 * same parameters race).
 * Errors: AG_ERR_ARGUMENT (outputs NULL, noutputs different from the capture's, inputs NULL with
 * ninputs > 0, ninputs different from the capture's), AG_ERR_INVALID_HANDLE (f freed or not a
 * function; an input), AG_ERR_DTYPE / AG_ERR_SHAPE (an input's dtype, then its shape, differs from
 * the capture's: shapes are fixed per capture, capture again for new ones), AG_ERR_STATE (called
 * inside a capture), AG_ERR_CALLBACK (a custom op's callback, called again by the replay, failed
 * or gave other shapes than at the capture: see "User-defined ops"), AG_ERR_OUT_OF_MEMORY. No
 * handle is created on failure. */
ag_status ag_function_call(ag_tensor *outputs, int64_t noutputs, ag_function f, const ag_tensor *inputs,
                           int64_t ninputs);

/* The same, writing the outputs into existing tensors outputs[0 .. noutputs-1] in place (each a
 * leaf with the output's shape and dtype, not requiring grad while grad mode is on; their version
 * counters are bumped): a call that allocates nothing.
 * Errors: those of ag_function_call, and AG_ERR_DTYPE / AG_ERR_SHAPE (an output tensor's dtype,
 * then its shape), AG_ERR_STATE (an output tensor is the result of a recorded op, or requires grad with
 * grad mode on), AG_ERR_ARGUMENT (two output tensors share their values). */
ag_status ag_function_call_into(const ag_tensor *outputs, int64_t noutputs, ag_function f,
                                const ag_tensor *inputs, int64_t ninputs);

/* What the compiler made of f, written to out[0 .. min(capacity, AG_FUNCTION_INFO_COUNT)-1]:
 * steps recorded, steps live (needed by an output or an in-place write), instructions a call runs,
 * fused groups, steps inside fused groups, steps rerun by their op (one allocation each per call),
 * arena bytes, scratch bytes.
 * Errors: AG_ERR_ARGUMENT (out NULL with capacity > 0, capacity < 0), AG_ERR_INVALID_HANDLE. */
#define AG_FUNCTION_INFO_COUNT 8
ag_status ag_function_info(int64_t *out, int64_t capacity, ag_function f);

/* Frees a captured function. Freeing AG_NULL_FUNCTION does nothing (AG_OK).
 * Errors: AG_ERR_INVALID_HANDLE (freed already, made up, or not a function). */
ag_status ag_function_free(ag_function f);

/* ------------------------------------------------------------------------------------------ */
/* User-defined ops                                                                           */
/* ------------------------------------------------------------------------------------------ */

/*
 * An operation Autograd does not have, defined by its user and differentiated like the
 * catalogue's (PyTorch's autograd.Function, JAX's custom_vjp / custom_jvp): a forward callback
 * of n inputs and m outputs, a backward callback (the VJP: output gradients in, input gradients
 * out) and, optionally, a JVP callback (input tangents in, output tangents out), with a payload
 * and its destructor. Apply it with ag_custom_op_apply as any op: when grad mode is on and an
 * input requires grad, its outputs require grad and ag_backward / ag_grad run its backward.
 *
 * Handles in callbacks: the tensors a callback is given (inputs, output gradients, tangents) are
 * borrowed: valid during the call, never to be freed. The tensors it writes (outputs, input
 * gradients, output tangents) are new handles the library takes over and frees; a callback may
 * also write one of the handles it was given (an identity). The context (ag_custom_ctx) is valid
 * during the callback only: the forward saves tensors on it for the backward and the JVP
 * (ag_custom_ctx_save) and may give the application a state of its own (ag_custom_ctx_set_state:
 * sizes, flags, anything that is not a tensor); they read them with ag_custom_ctx_saved and
 * ag_custom_ctx_state, and ask which inputs need a gradient with ag_custom_ctx_needs_input_grad.
 *
 * The forward runs with grad mode off (its ops record nothing) and may compute any way it
 * likes: with library ops, or on raw buffers (read inputs with ag_tensor_data_ptr or
 * ag_tensor_copy_data, make outputs with ag_tensor_from_data). All m outputs share one dtype.
 * The backward receives one gradient per output (zeros for an output no gradient reached) and
 * writes one per input: AG_NULL_TENSOR for none (no gradient flows to that input, as for an
 * input that needs none: what it writes for such an input is ignored). A gradient has its
 * input's dtype and its input's shape or one that broadcasting reduces to it (the library sums
 * it back, as for the catalogue's broadcasting ops). The backward runs with grad mode on only
 * for a create_graph pass; written with library ops, it is then recorded, so second
 * derivatives through the op work. A saved output is, in the backward, that output with its
 * history; any other saved tensor made inside the forward is a constant there (as in PyTorch:
 * save inputs and outputs, not intermediates, when second derivatives through them matter).
 * The JVP receives a tangent per input (AG_NULL_TENSOR for an input without one) and writes
 * one per output (AG_NULL_TENSOR for zeros), of the output's shape and dtype; it runs inside a
 * forward-mode pass (ag_jvp, ag_hvp, ag_hessian, a forward-mode ag_jacobian), right after the
 * forward, with the forward's context. Without a JVP, such a pass through the op fails with
 * AG_ERR_STATE; without a backward, so does a backward through it.
 *
 * Errors from callbacks: a callback returns 0 for success. Any other value fails the call that
 * ran it (ag_custom_op_apply for the forward and the JVP, ag_backward / ag_grad and the
 * transforms for the backward) with AG_ERR_CALLBACK, whose message names the op and the
 * callback and quotes the last failed call the callback made, or the message it set with
 * ag_set_error. So does a callback that breaks its contract: it writes no handle where one is
 * needed, a handle that is not a live tensor, tensors of the wrong shape or dtype, or frees a
 * handle it was given. The library frees what the callback wrote in every case; nothing leaks,
 * and nothing it did can crash the process.
 *
 * Nesting: a callback may apply custom ops (other ones, or its own on other inputs); at most
 * 64 custom-op callbacks run nested on one thread, and the call that would start a 65th fails
 * with AG_ERR_STATE (a forward that applies its own op on the same inputs would otherwise
 * recurse until the stack overflows).
 *
 * Threads: the forward and the JVP run on the thread that applies the op; the backward on the
 * thread that runs the backward pass, with the library's internal lock released (as for
 * gradient hooks: it may call the library and wait for other threads that do). Callbacks of one
 * op may run on several threads at once (one per thread applying the op or running a backward
 * through it); what they share in the payload needs its own synchronisation.
 *
 * Capture and recompute: in a capture (ag_capture), a custom op and its backward are each
 * recorded as one step, and every replay calls the callbacks again (the forward, and the
 * backward where the captured function runs one) on the replay's values, on the calling
 * thread; a forward that returns or saves tensors of other shapes or dtypes than at the capture
 * fails the call with AG_ERR_CALLBACK (a backward's gradients may take any shape legal for their
 * inputs: they are summed back to the inputs' shapes in every replay). ag_recompute reruns
 * (calls the forward of) an op of one output that saves only inputs and outputs; it refuses one
 * of several outputs, or one that saved an intermediate, with AG_ERR_STATE.
 *
 * Lifetime: the payload is the library's once ag_custom_op_new succeeds; `destroy` (if not NULL)
 * runs once nothing can call the op any more: its handle freed and every graph and captured
 * function that uses it gone. Like a hook's destructor it runs on whichever thread lets go last,
 * possibly with the internal lock held, so it should only release the payload.
 */
typedef uint64_t ag_custom_op;
#define AG_NULL_CUSTOM_OP ((ag_custom_op)0)

/* A custom op callback's context: a handle valid only during the callback it is passed to. */
typedef uint64_t ag_custom_ctx;

/* The forward: writes noutputs new tensor handles to outputs[0 .. noutputs-1] from the
 * ninputs borrowed inputs. */
typedef int32_t (*ag_custom_forward_fn)(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs,
                                        int64_t ninputs, ag_custom_ctx ctx, void *payload);

/* The backward (VJP): writes a gradient (or AG_NULL_TENSOR) for each of the ninputs inputs to
 * input_grads, from the noutputs borrowed output gradients. */
typedef int32_t (*ag_custom_backward_fn)(ag_tensor *input_grads, int64_t ninputs, const ag_tensor *output_grads,
                                         int64_t noutputs, ag_custom_ctx ctx, void *payload);

/* The JVP: writes a tangent (or AG_NULL_TENSOR for zeros) for each of the noutputs outputs to
 * output_tangents, from the borrowed inputs and their tangents (AG_NULL_TENSOR where an input
 * has none), ninputs of each. */
typedef int32_t (*ag_custom_jvp_fn)(ag_tensor *output_tangents, int64_t noutputs, const ag_tensor *inputs,
                                    const ag_tensor *input_tangents, int64_t ninputs, ag_custom_ctx ctx,
                                    void *payload);

/* Defines an op named `name` (copied, and kept for the life of the process, once per distinct
 * name, as nodes may outlive the op; it names the op's nodes in messages and pictures) of
 * ninputs inputs and noutputs outputs (each 1 to 256). backward and jvp may be NULL (see above).
 * On success *out is a new handle (free it with ag_custom_op_free) and the payload belongs to
 * the op; on failure the caller keeps it (destroy is not called).
 * Errors: AG_ERR_ARGUMENT (out, name or forward NULL, an empty name, a count out of range). */
ag_status ag_custom_op_new(ag_custom_op *out, const char *name, int64_t ninputs, int64_t noutputs,
                           ag_custom_forward_fn forward, ag_custom_backward_fn backward, ag_custom_jvp_fn jvp,
                           void *payload, void (*destroy)(void *user_data));

/* Applies op to inputs[0 .. ninputs-1]: runs its forward (and its JVP inside a forward-mode
 * pass) and writes noutputs new handles to outputs.
 * Errors: AG_ERR_ARGUMENT (outputs or inputs NULL, counts that differ from the op's),
 * AG_ERR_INVALID_HANDLE (op or an input), AG_ERR_CALLBACK (the forward or the JVP failed or
 * broke its contract), AG_ERR_STATE (a forward-mode pass and the op has no JVP),
 * AG_ERR_OUT_OF_MEMORY. */
ag_status ag_custom_op_apply(ag_tensor *outputs, int64_t noutputs, ag_custom_op op, const ag_tensor *inputs,
                             int64_t ninputs);

/* Frees the handle; graphs and captured functions that use the op keep it until they go.
 * Freeing AG_NULL_CUSTOM_OP does nothing (AG_OK).
 * Errors: AG_ERR_INVALID_HANDLE (freed already, made up, or not a custom op). */
ag_status ag_custom_op_free(ag_custom_op op);

/* Saves tensors[0 .. n-1] for the backward and the JVP (forward only; the library keeps its own
 * references, the caller keeps its handles). Saved tensors written in place before the backward
 * make it fail with AG_ERR_STATE, as for the catalogue's ops.
 * Errors: AG_ERR_INVALID_HANDLE (ctx not live, a tensor), AG_ERR_ARGUMENT (tensors NULL,
 * n < 1), AG_ERR_STATE (called from the backward or the JVP). */
ag_status ag_custom_ctx_save(ag_custom_ctx ctx, const ag_tensor *tensors, int64_t n);

/* The number of tensors the forward saved. Errors: AG_ERR_ARGUMENT (out NULL),
 * AG_ERR_INVALID_HANDLE (ctx not live). */
ag_status ag_custom_ctx_saved_count(int64_t *out, ag_custom_ctx ctx);

/* A new handle to saved tensor `index` (in the order saved; free it).
 * Errors: AG_ERR_ARGUMENT (out NULL, index out of range), AG_ERR_INVALID_HANDLE (ctx not live). */
ag_status ag_custom_ctx_saved(ag_tensor *out, ag_custom_ctx ctx, int64_t index);

/* Gives this application of the op a state of the user's own (PyTorch's `ctx.k = 3`; forward
 * only): the backward and the JVP of the same application read it with ag_custom_ctx_state.
 * `destroy` (if not NULL) runs once the application is over: its graph freed (or released by a
 * backward without retain_graph), or at once after the forward and the JVP when the op was not
 * recorded; and when a later call replaces the state. In a captured function each replay's
 * forward sets a new state, which that replay's backward reads.
 * Errors: AG_ERR_INVALID_HANDLE (ctx not live), AG_ERR_STATE (called from the backward or the
 * JVP); on failure the caller keeps `state` (destroy is not called). */
ag_status ag_custom_ctx_set_state(ag_custom_ctx ctx, void *state, void (*destroy)(void *user_data));

/* The state the forward of this application set (NULL if none).
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE (ctx not live). */
ag_status ag_custom_ctx_state(void **out, ag_custom_ctx ctx);

/* Whether input `index` needs a gradient (in the forward: it requires grad and the op is
 * recorded; in the backward: a gradient for it is wanted by this pass's graph).
 * Errors: AG_ERR_ARGUMENT (out NULL, index out of range), AG_ERR_INVALID_HANDLE (ctx not live). */
ag_status ag_custom_ctx_needs_input_grad(bool *out, ag_custom_ctx ctx, int64_t index);

/* ------------------------------------------------------------------------------------------ */
/* Files: safetensors                                                                         */
/* ------------------------------------------------------------------------------------------ */

/*
 * safetensors is the tensor file format PyTorch, JAX, MLX and tinygrad read and write: an 8-byte
 * little-endian unsigned header length N, N bytes of UTF-8 JSON, then the tensors' bytes. The JSON
 * maps each tensor's name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]} (byte
 * offsets into the data that follows the header, row-major, little-endian), and the optional key
 * "__metadata__" to an object of string keys and string values. Autograd reads and writes F32, F64
 * and I64 (AG_FLOAT32, AG_FLOAT64, AG_INT64) and BOOL (AG_BOOL); a file may hold tensors of the
 * other dtypes of the format (F16, BF16, I32, U8, ...): they are listed, with dtype 0, and loading
 * one is AG_ERR_DTYPE.
 *
 * A file is untrusted input. Opening one reads and checks only its header: the header length
 * against the file's size (and at most 100,000,000 bytes, the format's own limit), the JSON
 * (strictly: RFC 8259, starting with '{' and followed by whitespace only (writers pad with
 * spaces), no duplicate keys at any level, strings of valid UTF-8 without U+0000, each tensor an
 * object of exactly "dtype", "shape" and "data_offsets", shape and offsets non-negative integers
 * without fraction or exponent that fit int64, at most 64 dimensions per tensor, "__metadata__"
 * an object of strings), each dtype, that each tensor's byte range lies inside the data, has
 * exactly numel(shape) * size(dtype) bytes (the product checked for overflow) and overlaps no
 * other, and that the ranges cover the data without gaps. Any failure is AG_ERR_FORMAT (or AG_ERR_IO for the file system) with a message naming the
 * tensor and what is wrong; no memory is allocated for a tensor's values before its size has been
 * checked against the file, so a lying header cannot make the library allocate more than the file
 * holds. Loading reads that tensor's bytes only (a file of many tensors is not read whole).
 */

/* An open safetensors file (its header read and checked; values are read by ag_safetensors_load):
 * a handle, as an ag_tensor is, never 0; released with ag_safetensors_close. */
typedef uint64_t ag_safetensors;

/* Writes the n tensors (float32, float64, int64 or bool; any shape, empty ones included) to a
 * safetensors file at `path`, under names[i], with the nmetadata pairs metadata_keys[i] ->
 * metadata_values[i] (UTF-8 strings) as the file's "__metadata__". The file is written to a
 * temporary file beside `path` and renamed over it, so a failure never leaves a partial file at
 * `path`. Names must be non-empty, distinct, valid UTF-8 and not "__metadata__"; metadata keys
 * must be distinct; path and every string valid UTF-8. metadata_keys and metadata_values may be
 * NULL when nmetadata is 0. The tensors' values follow the header in the order given, contiguous;
 * "__metadata__" comes first in the header and is left out when nmetadata is 0; the header is
 * padded with spaces so that the values start at a multiple of 8 bytes into the file. The
 * temporary file is "<path>.tmp.<pid>.<n>", flushed to disk (fsync) before the rename.
 * Errors: AG_ERR_ARGUMENT (path, names or tensors NULL with n > 0, n or nmetadata < 0, a bad or
 * repeated name or key, a string that is not valid UTF-8), AG_ERR_INVALID_HANDLE, AG_ERR_IO (the
 * file cannot be written; the message has the path and the reason), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_safetensors_save(const char *path, const char *const *names, const ag_tensor *tensors, int64_t n,
                              const char *const *metadata_keys, const char *const *metadata_values,
                              int64_t nmetadata);

/* Opens the safetensors file at `path` and checks its header (see above); the file stays open
 * until ag_safetensors_close. Errors: AG_ERR_ARGUMENT (out or path NULL, path not valid UTF-8),
 * AG_ERR_IO (cannot open or read it, or not a regular file), AG_ERR_FORMAT (not a valid safetensors file: the message says why),
 * AG_ERR_OUT_OF_MEMORY. */
ag_status ag_safetensors_open(ag_safetensors *out, const char *path);

/* As ag_safetensors_open, from `length` bytes in memory (copied: the caller may free them at
 * once). Errors: AG_ERR_ARGUMENT (out NULL, data NULL with length > 0, length < 0),
 * AG_ERR_FORMAT, AG_ERR_OUT_OF_MEMORY. */
ag_status ag_safetensors_open_memory(ag_safetensors *out, const void *data, int64_t length);

/* The number of tensors in the file. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_count(int64_t *out, ag_safetensors file);

/* The name of tensor `index` (0 .. count-1, in the order of their data in the file: by begin
 * offset, then end offset, then header order), as a NUL-terminated UTF-8 string owned by the
 * file: valid until ag_safetensors_close.
 * Errors: AG_ERR_ARGUMENT (out NULL, index out of range), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_name(const char **out, ag_safetensors file, int64_t index);

/* The dtype, rank and extents of the tensor called `name`, without reading its values: *out_dtype
 * is AG_FLOAT32, AG_FLOAT64, AG_INT64, AG_BOOL, or 0 for a dtype of the format that Autograd does
 * not hold; out_shape receives min(rank, capacity) extents (it may be NULL when capacity is 0).
 * Any output pointer may be NULL when it is not wanted. A rank above AG_MAX_NDIM (up to the
 * header's 64) is reported as it is; only loading such a tensor fails.
 * Errors: AG_ERR_ARGUMENT (name NULL, no tensor of that name, capacity < 0, out_shape NULL with
 * capacity > 0), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_info(ag_dtype *out_dtype, int64_t *out_ndim, int64_t *out_shape, int64_t capacity,
                              ag_safetensors file, const char *name);

/* A new leaf tensor holding the values of the tensor called `name` (read from the file now).
 * Errors: AG_ERR_ARGUMENT (out or name NULL, no tensor of that name), AG_ERR_INVALID_HANDLE,
 * AG_ERR_DTYPE (a dtype Autograd does not hold), AG_ERR_SHAPE (rank above AG_MAX_NDIM),
 * AG_ERR_FORMAT (a BOOL byte other than 0 or 1), AG_ERR_IO (the read failed, or the file shrank
 * since it was opened), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_safetensors_load(ag_tensor *out, ag_safetensors file, const char *name);

/* The number of "__metadata__" entries. Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_metadata_count(int64_t *out, ag_safetensors file);

/* Metadata entry `index` (0 .. count-1, in file order): its key and value, NUL-terminated UTF-8
 * strings owned by the file (valid until ag_safetensors_close). Either output may be NULL.
 * Errors: AG_ERR_ARGUMENT (index out of range), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_metadata_entry(const char **out_key, const char **out_value, ag_safetensors file,
                                        int64_t index);

/* The metadata value stored under `key`, or NULL in *out when there is none (owned by the file,
 * as above). Errors: AG_ERR_ARGUMENT (out or key NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_metadata(const char **out, ag_safetensors file, const char *key);

/* Closes the file; the tensors loaded from it live on. Closing 0 does nothing.
 * Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_safetensors_close(ag_safetensors file);

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints: parameters and optimizer state in one safetensors file                        */
/* ------------------------------------------------------------------------------------------ */

/*
 * A checkpoint is a safetensors file (readable by any safetensors reader) holding the n named
 * parameters under their own names and, when an optimizer is given, its whole state: its kind,
 * learning rate and hyper-parameters in the metadata ("autograd.optimizer", ...), and per
 * parameter the tensors "optimizer.<name>.<slot>" (SGD: momentum_buffer; Adam and AdamW: exp_avg,
 * exp_avg_sq, float64, and step, int64). Restoring it into the same model and an optimizer of the
 * same kind continues training exactly: a run stopped and resumed from its checkpoint ends with
 * the same weights, bit for bit, as one that never stopped (examples/digits.c --stop-after and
 * --resume show it).
 */

/* Saves the n parameters (under names[i]) and, if opt is not 0, opt's state to `path`, with the
 * caller's metadata pairs besides (keys must not start with "autograd."). Every parameter opt
 * updates must be among params. Written as ag_safetensors_save writes (never a partial file).
 * Errors: those of ag_safetensors_save; AG_ERR_ARGUMENT (a parameter of opt not among params, a
 * metadata key starting with "autograd."); AG_ERR_INVALID_HANDLE (opt). */
ag_status ag_checkpoint_save(const char *path, const char *const *names, const ag_tensor *params, int64_t n,
                             ag_optimizer opt, const char *const *metadata_keys,
                             const char *const *metadata_values, int64_t nmetadata);

/* Restores a checkpoint written by ag_checkpoint_save: writes each parameter's saved values into
 * params[i] in place (a leaf of the same shape and dtype; the write bumps its version counter, as
 * an optimizer step does, and needs no no-grad scope), and, if opt is not 0, replaces opt's state
 * and learning rate with the saved ones. Nothing is written unless everything fits: a missing
 * tensor, a shape or dtype that differs, an optimizer of another kind or with other parameters
 * fails before any parameter or state changes. Read the caller's own metadata with
 * ag_safetensors_open and ag_safetensors_metadata.
 * Errors: those of ag_safetensors_open; AG_ERR_ARGUMENT (path or names NULL, n < 0, a name not in
 * the file, the checkpoint's optimizer kind differs from opt's, or it has no optimizer state while
 * opt is given; a hyper-parameter of opt that differs from the saved one: they are checked, not
 * restored), AG_ERR_SHAPE, AG_ERR_DTYPE (a parameter that does not match its saved tensor),
 * AG_ERR_STATE (a parameter that is not a leaf, or is read-only memory), AG_ERR_FORMAT (saved
 * optimizer state that is inconsistent), AG_ERR_INVALID_HANDLE. */
ag_status ag_checkpoint_load(const char *path, const char *const *names, const ag_tensor *params, int64_t n,
                             ag_optimizer opt);

/* ------------------------------------------------------------------------------------------ */
/* Shared memory: tensors over caller memory, writing values in place, DLPack                 */
/* ------------------------------------------------------------------------------------------ */

/*
 * Zero-copy. ag_tensor_from_buffer makes a tensor over memory the caller owns, and DLPack
 * exchanges tensors with NumPy, PyTorch, JAX and others, both without copying: the library and
 * the other side then read (and may write) the same bytes.
 *
 * Lifetime: memory given to the library (ag_tensor_from_buffer, ag_tensor_from_dlpack) must stay
 * valid until the library calls its destructor (the `destroy` callback, the DLPack deleter); that
 * happens once no tensor, graph or exported DLPack tensor uses the values any more, on whichever
 * thread drops the last use, possibly inside a library call and with the library's internal lock
 * held: the destructor must only release memory, never call the library or wait for a thread that
 * does. Memory the library exports (ag_tensor_to_dlpack) stays valid until the consumer calls the
 * DLPack deleter, even after every ag_tensor handle to it is freed.
 *
 * Mutation: values shared this way may change under the library's feet, which version counters
 * exist to catch (see the top). A write through the library (ag_tensor_copy_, an optimizer step,
 * ag_tensor_data_ptr_mut) bumps the version; a write the library cannot see (the caller writing
 * its own buffer, NumPy writing an array it imported) must be followed by
 * ag_tensor_mark_modified on a tensor over those values, so that a graph that saved them refuses
 * a backward (AG_ERR_STATE) instead of silently mixing old and new values. Memory imported as
 * read-only (the DLPack READ_ONLY flag) is never written by the library: in-place writes into it
 * (ag_tensor_copy_, ag_tensor_set_data, ag_tensor_data_ptr_mut, an optimizer over it, batch
 * norm's running statistics, a captured function writing it) are AG_ERR_STATE. Backward never
 * reuses shared memory for a gradient, even when no handle to it is left (a hook's replacement):
 * gradients over it are computed into memory of their own.
 */

/* A new leaf tensor over numel(shape) elements of `dtype` at `data`, row-major, WITHOUT copying:
 * the tensor reads and writes that memory (zero-copy): ag_tensor_data_ptr gives `data` back.
 * `data` must be aligned to the element size and stay valid until `destroy` (if not NULL) is
 * called with user_data, exactly once, when the library no longer uses the memory (see Lifetime
 * above). data may be NULL only when numel is 0; a tensor of no element holds no pointer
 * (ag_tensor_data_ptr gives NULL) and its destroy still runs once. AG_BOOL elements are bytes;
 * any non-zero byte reads as true. On any failure the caller keeps its memory: `destroy` is not
 * called, now or later.
 * Errors: AG_ERR_ARGUMENT (out NULL, data NULL with numel > 0, data misaligned for dtype, ndim
 * outside 0...AG_MAX_NDIM, shape NULL with ndim > 0), AG_ERR_SHAPE (a negative extent, an element
 * count that overflows), AG_ERR_DTYPE (unknown dtype), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_from_buffer(ag_tensor *out, void *data, const int64_t *shape, int64_t ndim, ag_dtype dtype,
                                void *user_data, void (*destroy)(void *user_data));

/* A writable pointer to t's elements (row-major, t's own dtype; NULL for an empty tensor), for
 * writing new values in place. Allowed where ag_tensor_copy_ is (t a leaf, not one that requires
 * grad while grad mode is on, not read-only memory), and counts as one in-place write: it bumps
 * t's version counter now, so graphs that saved t's values refuse a later backward. Write before
 * recording new operations on t; for a later write, call it again. The pointer is valid while t
 * (or another tensor sharing its values) lives. Refused while this thread captures a function
 * (ag_capture): such a write could not be replayed.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE, AG_ERR_STATE (as ag_tensor_copy_,
 * read-only memory, a capture running; the version is then not bumped). */
ag_status ag_tensor_data_ptr_mut(void **out, ag_tensor t);

/* Records that t's values were written outside the library (its buffer by its owner, through a
 * DLPack consumer): bumps the version counter shared by every tensor over those values, so graphs
 * that saved them refuse a backward (AG_ERR_STATE) rather than use the new values.
 * Errors: AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_mark_modified(ag_tensor t);

/* The version counter of t's values (see the top): how many in-place writes they have had, as
 * far as the library knows, modulo 2^32 (0 for new values). Shared by the tensors that share t's
 * values inside the library (a detach, a reshape); a tensor made by ag_tensor_from_buffer or
 * ag_tensor_from_dlpack has a counter of its own, even over memory that another tensor holds
 * (the import of the library's own export): a write through one is not seen by the other's
 * counter, so mark the other modified.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE. */
ag_status ag_tensor_version(int64_t *out, ag_tensor t);

/* DLPack (https://dmlc.github.io/dlpack/latest/), the zero-copy exchange format of NumPy, PyTorch,
 * JAX and MLX. The structures below are those of dlpack.h 1.1, a faithful subset of every 1.x
 * (checked against the dlpack.h 1.3 that PyTorch 2.13 ships: the same structures, layout and
 * values; 1.2 and 1.3 add device and dtype codes and an exchange API, not declared here). They
 * are declared under dlpack.h's own include guard: include dlpack.h before or after this header,
 * or neither (include it first to have its later additions). */
#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 1
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)
#define DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED (1UL << 2UL)
typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;
typedef enum {
    kDLCPU = 1,
    kDLCUDA = 2,
    kDLCUDAHost = 3,
    kDLOpenCL = 4,
    kDLVulkan = 7,
    kDLMetal = 8,
    kDLVPI = 9,
    kDLROCM = 10,
    kDLROCMHost = 11,
    kDLExtDev = 12,
    kDLCUDAManaged = 13,
    kDLOneAPI = 14,
    kDLWebGPU = 15,
    kDLHexagon = 16,
    kDLMAIA = 17
} DLDeviceType;
typedef struct {
    DLDeviceType device_type;
    int32_t device_id;
} DLDevice;
typedef enum {
    kDLInt = 0U,
    kDLUInt = 1U,
    kDLFloat = 2U,
    kDLOpaqueHandle = 3U,
    kDLBfloat = 4U,
    kDLComplex = 5U,
    kDLBool = 6U
} DLDataTypeCode;
typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;
typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;
#endif /* DLPACK_DLPACK_H_ */

/* Exports t's values as a DLPack tensor without copying: (*out)->dl_tensor.data is t's own memory
 * (equal to ag_tensor_data_ptr; NULL for a tensor of no element, as DLPack advises), CPU
 * (device_id 0), float32 (kDLFloat, 32), float64 (kDLFloat, 64), int64 (kDLInt, 64) or bool
 * (kDLBool, 8), one lane, row-major with explicit compact strides in elements (an extent of 0
 * counts as 1 in them), byte_offset 0; a 0-d tensor has ndim 0 (shape and strides then point to
 * memory that is not read). Version 1.1; flags DLPACK_FLAG_BITMASK_READ_ONLY for read-only
 * memory, else 0. One malloc'd block holds the structure, the shape and the strides. The values
 * stay alive until the consumer calls (*out)->deleter(*out), even after t's handles are freed;
 * call the deleter exactly once, from any thread. Writes by the consumer: see Mutation above.
 * Errors: AG_ERR_ARGUMENT (out NULL), AG_ERR_INVALID_HANDLE, AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_to_dlpack(DLManagedTensorVersioned **out, ag_tensor t);

/* As ag_tensor_to_dlpack, as the older unversioned DLManagedTensor (for consumers that predate
 * DLPack 1.0). It has no flags, so read-only memory is refused: AG_ERR_STATE. */
ag_status ag_tensor_to_dlpack_unversioned(DLManagedTensor **out, ag_tensor t);

/* A new leaf tensor over a DLPack tensor's memory, without copying. On success the library owns
 * `m` and calls m->deleter(m) (if not NULL) once it no longer uses the memory (see Lifetime
 * above); on failure the caller still owns it. Accepted: CPU (kDLCPU, or kDLCUDAHost), major
 * version 1, float32/float64/int64/bool with one lane, rank up to AG_MAX_NDIM, row-major
 * contiguous (strides NULL, or equal to the compact ones; an extent of 1 or 0 may have any
 * stride), data + byte_offset aligned to the element size. Other layouts are refused, not copied:
 * make the array contiguous first (numpy.ascontiguousarray, torch.Tensor.contiguous). With no
 * element any strides are accepted and data is not read. A READ_ONLY tensor gives a tensor whose
 * values the library never writes; other flags are ignored. The tensor's data pointer is
 * data + byte_offset (so from_dlpack(to_dlpack(t)) shares t's memory). m->deleter may run on any
 * thread (see Lifetime above). For a major version other than 1 the call fails and the caller,
 * who keeps m, may still call m->deleter(m), which DLPack guarantees is safe.
 * Errors: AG_ERR_ARGUMENT (out or m NULL, another device, an unsupported major version, strides
 * that are not row-major contiguous, misaligned data, data NULL with elements, shape NULL with
 * ndim > 0, a byte_offset past the end of the address space), AG_ERR_DTYPE (a type Autograd
 * does not hold, lanes other than 1), AG_ERR_SHAPE (ndim below 0 or above AG_MAX_NDIM, a
 * negative extent, an element count that overflows), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_tensor_from_dlpack(ag_tensor *out, DLManagedTensorVersioned *m);

/* As ag_tensor_from_dlpack, from the older unversioned DLManagedTensor. */
ag_status ag_tensor_from_dlpack_unversioned(ag_tensor *out, DLManagedTensor *m);

/* ------------------------------------------------------------------------------------------ */
/* Bad input catalogue                                                                        */
/* ------------------------------------------------------------------------------------------ */

/*
 * What the library answers to bad input. Each entry: its ID, the input (the function and what
 * is wrong with it), the status returned, and a stable fragment of the message ag_last_error()
 * then gives. Every message begins with the name of the function that failed
 * ("ag_add: shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)"); numbers and shapes in the
 * messages are those of the call. On every rejection nothing is written to the outputs, no
 * handle is created, and the process carries on. Entries marked "accepted" are inputs that look
 * wrong but are defined: they return AG_OK with the result given (IEEE semantics for nan and
 * inf). bindings/c/test_bad_input.c tests every entry under its ID.
 *
 * Handles
 *  B01  a tensor handle 0 (AG_NULL_TENSOR): ag_tensor_ndim(&n, 0), ag_add(&o, a, 0)
 *       -> AG_ERR_INVALID_HANDLE  "tensor handle is 0 (AG_NULL_TENSOR)" (ag_add: "b handle is 0")
 *  B02  a freed tensor handle: ag_tensor_numel, ag_exp
 *       -> AG_ERR_INVALID_HANDLE  "is not a live tensor handle (freed, made up, or of another
 *          kind)"
 *  B03  a made-up handle (0x0123456789abcdef, 1, UINT64_MAX, ...): ag_tensor_ndim, ag_tensor_free
 *       -> AG_ERR_INVALID_HANDLE  "is not a live tensor handle"
 *  B04  an optimizer handle where a tensor is wanted: ag_tensor_ndim, ag_tensor_free
 *       -> AG_ERR_INVALID_HANDLE  "is not a live tensor handle" (the optimizer stays alive)
 *  B05  a tensor handle (or 0) where an optimizer is wanted: ag_optimizer_step, _lr, _free
 *       -> AG_ERR_INVALID_HANDLE  "is not a live optimizer handle" (the tensor stays alive)
 *  B06  a tensor handle freed twice: the second ag_tensor_free
 *       -> AG_ERR_INVALID_HANDLE  "ag_tensor_free: handle 0x", "is not a live tensor handle
 *          (already freed, made up, or of another kind)"
 *  B07  an optimizer handle freed twice, or used after ag_optimizer_free
 *       -> AG_ERR_INVALID_HANDLE  "is not a live optimizer handle"
 *  B08  accepted: ag_tensor_free(AG_NULL_TENSOR), ag_optimizer_free(0) -> AG_OK, nothing happens
 *  B09  a stale handle whose slot has been reused by a newer tensor (ag_tensor_item)
 *       -> AG_ERR_INVALID_HANDLE  "is not a live tensor handle" (handles carry a generation)
 *
 * Pointers and counts
 *  B10  out NULL in a creator or an operation: ag_tensor_zeros, ag_add, ag_detach
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL" (nothing is computed or leaked)
 *  B11  ag_tensor_from_data: data NULL with numel > 0
 *       -> AG_ERR_ARGUMENT  "data is NULL but the shape [2, 3] has 6 elements"
 *       (accepted: data NULL when numel is 0)
 *  B12  shape NULL with ndim > 0: ag_tensor_zeros, ag_reshape
 *       -> AG_ERR_ARGUMENT  "shape is NULL but ndim is 2"
 *  B13  out NULL in a query: ag_tensor_ndim/_numel/_dtype/_item/_data_ptr/_requires_grad/_grad,
 *       ag_live_handle_count, ag_num_threads, ag_is_grad_enabled, ag_optimizer_lr
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL"
 *  B14  ag_concat / ag_stack: tensors NULL with n > 0, or n < 1
 *       -> AG_ERR_ARGUMENT  "tensors is NULL but n is 2", "at least one tensor is needed, n is 0"
 *  B15  ag_grad: outputs or inputs NULL, out_grads NULL, noutputs or ninputs < 1
 *       -> AG_ERR_ARGUMENT  "outputs is NULL but noutputs is 1", "the output pointer 'out_grads' is
 *          NULL", "at least one tensor is needed, ninputs is 0" (the graph stays usable)
 *  B16  ag_graph_to_dot: length NULL, capacity < 0, out NULL with capacity > 0
 *       -> AG_ERR_ARGUMENT  "the output pointer 'length' is NULL", "capacity -1 is negative",
 *          "out is NULL but capacity is 10" (accepted: out NULL, capacity 0 gives the length)
 *  B17  ag_tensor_shape: capacity < ndim, or out NULL
 *       -> AG_ERR_ARGUMENT  "capacity 1 is less than the rank 2"
 *  B18  ag_tensor_copy_data: capacity < numel, capacity < 0, out NULL
 *       -> AG_ERR_ARGUMENT  "the output buffer holds 5 elements, the tensor has 6",
 *          "capacity -1 is negative", "the output pointer is NULL"
 *  B19  an index array NULL with a count > 0, or a negative count: ag_index_select,
 *       ag_cross_entropy
 *       -> AG_ERR_ARGUMENT  "indices is NULL but its count is 2", "labels is NULL but its count
 *          is 3", "the number of indices (-1) is negative"
 *
 * Shapes and ranks
 *  B20  ndim < 0 (ag_tensor_zeros, ag_tensor_from_data with INT64_MIN)
 *       -> AG_ERR_ARGUMENT  "ndim -1 is outside 0...8"
 *  B21  ndim > AG_MAX_NDIM: ag_tensor_ones, ag_reshape, ag_expand with ndim 9
 *       -> AG_ERR_ARGUMENT  "ndim 9 is outside 0...8"
 *  B22  a negative extent: ag_tensor_zeros / rand_uniform {2, -3}; ag_tensor_eye(-1, 2)
 *       -> AG_ERR_SHAPE  "negative extent -3 in shape [2, -3]"; eye: "must not be negative"
 *  B23  an element count that overflows int64: {INT64_MAX, 2} (ag_tensor_zeros, ag_tensor_full)
 *       -> AG_ERR_SHAPE  "the element count of shape [9223372036854775807, 2] overflows int64"
 *  B24  an element count that overflows int64: {2^32, 2^32} (ag_tensor_ones, from_data,
 *       rand_normal, ag_tensor_eye(2^32, 2^32), ag_expand)
 *       -> AG_ERR_SHAPE  "the element count of shape [4294967296, 4294967296] overflows int64"
 *          (checked before any allocation or read of data)
 *  B25  operands that do not broadcast: ag_add/ag_mul/ag_where of (2,3) and (4), ag_expand of
 *       (4) to (2,3); ag_mse_loss of different shapes
 *       -> AG_ERR_SHAPE  "shapes [2, 3] and [4] do not broadcast (axis 1: 3 vs 4)";
 *          mse_loss: "prediction [2, 3] and target [4] differ"
 *  B26  matmul inner extents differ: (2,3) @ (4,5), (2,3) @ (4); ag_dot, ag_linear likewise
 *       -> AG_ERR_SHAPE  "inner extents differ: [2, 3] @ [4, 5]"; dot: "needs two 1-D tensors
 *          of equal length"; linear: "does not fit weight"
 *  B27  ag_matmul with a 0-d operand
 *       -> AG_ERR_SHAPE  "0-d operands are not allowed"
 *  B28  ag_reshape to a different element count, or a -1 that cannot be inferred
 *       -> AG_ERR_SHAPE  "shape [4, 2] (8 elements) does not match [2, 3] (6 elements)",
 *          "cannot infer the -1 extent"
 *  B29  ag_reshape with two -1 extents
 *       -> AG_ERR_ARGUMENT  "more than one extent is -1 in [-1, -1]"
 *  B30  ag_squeeze of a named axis whose extent is not 1
 *       -> AG_ERR_SHAPE  "axis 0 has extent 2, not 1"
 *  B31  ag_unsqueeze of a rank-8 tensor (beyond AG_MAX_NDIM), or an axis outside
 *       -(rank+1)..rank
 *       -> AG_ERR_ARGUMENT  "the result would exceed the maximum rank 8"; axis: "axis 3 is
 *          outside -3...2 for a tensor of rank 2"
 *  B32  ag_tensor_item of a tensor whose numel is not 1 (shape [2], shape [0])
 *       -> AG_ERR_SHAPE  "item() needs exactly one element, the tensor has shape [2]"
 *  B33  ag_cross_entropy: nlabels != N, or logits not 2-D
 *       -> AG_ERR_SHAPE  "2 labels for 3 rows of logits", "logits must be (N, C), got [3]"
 *  B34  ag_max / ag_min over an axis of extent 0
 *       -> AG_ERR_SHAPE  "cannot reduce over an axis of extent 0 (shape [0, 3])"
 *  B35  ag_concat / ag_stack of shapes that do not fit; ag_concat of 0-d tensors
 *       -> AG_ERR_SHAPE  "which does not fit [2, 3] along axis 0", stack: "tensor 1 has shape
 *          [2, 4], tensor 0 has [2, 3]", "cannot concatenate 0-d tensors (use stack)"
 *  B36  ag_tensor_init of rank 0 or of a shape with a zero fan
 *       -> AG_ERR_SHAPE  "a 0-d tensor has no fan-in", "shape [0, 3] has a zero fan"
 *
 * Dtypes
 *  B37  an unknown dtype (0, 3, 7, -1): ag_tensor_zeros, from_data, arange, eye
 *       -> AG_ERR_DTYPE  "unknown dtype 3 (use AG_FLOAT32 = 1 or AG_FLOAT64 = 2)"
 *  B38  ag_tensor_copy_data into an unknown dtype
 *       -> AG_ERR_DTYPE  "unknown dtype 9"
 *  B39  operands of different dtypes (no promotion): ag_add, ag_matmul, ag_where, ag_concat,
 *       ag_linear
 *       -> AG_ERR_DTYPE  "operands have different dtypes (float32 and float64)"; where: "a and b
 *          have different dtypes"; concat: "tensor 1 is float64, tensor 0 is float32";
 *          linear: "input is float32, weight is float64"
 *  B40  ag_gradcheck with a float32 input
 *       -> AG_ERR_DTYPE  "inputs must be float64"
 *  B41  ag_backward with a seed of another dtype than the root
 *       -> AG_ERR_DTYPE  "the seed is float32 but the root is float64" (nothing is accumulated)
 *
 * Axes and indices
 *  B42  an axis out of range: ag_sum, ag_mean, ag_var, ag_softmax, ag_log_softmax, ag_concat,
 *       ag_stack, ag_cumsum (negative axes count from the end)
 *       -> AG_ERR_ARGUMENT  "axis 2 is out of range for a tensor of rank 2"
 *  B43  a repeated axis ({0, -2} on rank 2): ag_sum, ag_logsumexp, ag_squeeze
 *       -> AG_ERR_ARGUMENT  "axis -2 is repeated in [0, -2]"
 *  B44  axes NULL with naxes > 0: ag_sum, ag_max
 *       -> AG_ERR_ARGUMENT  "axes is NULL but naxes is 1"
 *  B45  naxes < 0 or > AG_MAX_NDIM: ag_sum, ag_mean
 *       -> AG_ERR_ARGUMENT  "naxes -1 is outside 0...8"
 *  B46  ag_permute: not a permutation ({0, 0, 1}, {0, 1, 3}), n != rank, perm NULL
 *       -> AG_ERR_ARGUMENT  "[0, 0, 1] is not a permutation of the 3 axes", "2 axes given for a
 *          tensor of rank 3", "perm is NULL but n is 3"
 *  B47  ag_transpose: an axis out of range
 *       -> AG_ERR_ARGUMENT  "axes 0, 2 out of range for rank 2"
 *  B48  ag_slice: step 0 or negative; a bad axis
 *       -> AG_ERR_ARGUMENT  "step must be positive, got 0"
 *  B49  ag_index_select: an index out of range (3 or -4 for extent 3); a bad axis
 *       -> AG_ERR_ARGUMENT  "index 3 is out of range for extent 3 of axis 0"
 *  B50  ag_gather: an index out of range; index extents larger than the input's off `axis`;
 *       index rank != input rank; index NULL
 *       -> AG_ERR_ARGUMENT  "index 2 is out of range for extent 2 of axis 0";
 *          AG_ERR_SHAPE  "index extent 4 exceeds the input's 3 on axis 1", "the index has rank
 *          1, the input rank 2"; AG_ERR_ARGUMENT  "index is NULL but its count is 3"
 *  B51  ag_cross_entropy: a label out of range (3 or -1 for 3 classes)
 *       -> AG_ERR_ARGUMENT  "label 3 is out of range for 3 classes"
 *
 * Values
 *  B52  ag_tensor_arange with step 0
 *       -> AG_ERR_ARGUMENT  "arange: step must not be 0"
 *  B53  ag_tensor_arange with a non-finite start, stop or step
 *       -> AG_ERR_ARGUMENT  "start, stop and step must be finite"
 *  B54  ag_tensor_arange of more than 2^40 elements (0..1e300 step 1; 0..1 step 1e-300)
 *       -> AG_ERR_ARGUMENT  "elements is more than the 2^40 allowed"
 *       (accepted: a step pointing away from stop gives an empty tensor, as numpy.arange)
 *  B55  ag_tensor_rand_normal with std < 0 or a non-finite mean/std
 *       -> AG_ERR_ARGUMENT  "need a finite mean and a finite std >= 0"
 *  B56  ag_tensor_rand_uniform with low > high or a non-finite bound
 *       -> AG_ERR_ARGUMENT  "need finite low <= high"
 *  B57  ag_var with correction < 0
 *       -> AG_ERR_ARGUMENT  "correction -1 is negative"
 *  B58  ag_tensor_init with an unknown kind (0, 9)
 *       -> AG_ERR_ARGUMENT  "unknown initialiser kind 9 (use AG_INIT_*)"
 *  B59  ag_leaky_relu with a non-finite negative_slope; ag_clamp with a nan bound
 *       -> AG_ERR_ARGUMENT  "negative_slope must be finite", "a bound is nan"
 *       (accepted: ag_clamp with +-INFINITY bounds (no bound) and with min > max (every element
 *       is max))
 *  B60  accepted: nan passes through operations: nan + 1 = nan, maximum(nan, 5) = nan,
 *       exp(nan) = nan, sum and max over a nan are nan -> AG_OK
 *  B61  accepted: IEEE infinities: 1/0 = +inf, -1/0 = -inf, 0/0 = nan, log(0) = -inf,
 *       log(-1) = nan, exp(1000) = +inf (float64), sqrt(-1) = nan -> AG_OK
 *  B62  accepted: sigmoid(+-1000) = 1 / 0 and softplus(+-1000) = 1000 / 0, with finite
 *       gradients -> AG_OK
 *  B63  accepted: the mean over zero elements is nan, the sum over zero elements 0 -> AG_OK
 *
 * Graph misuse
 *  B64  ag_tensor_set_requires_grad on a result with recorded history (true or false)
 *       -> AG_ERR_STATE  "requires_grad can only be changed on leaf tensors"
 *  B65  ag_backward from a root that does not require grad
 *       -> AG_ERR_STATE  "the root does not require grad"
 *  B66  ag_backward from a non-scalar root without a seed
 *       -> AG_ERR_STATE  "a seed (gradient) is needed for a root that is not a scalar"
 *          (the graph is not released: a seeded backward then works)
 *  B67  ag_backward with a seed of another shape than the root
 *       -> AG_ERR_SHAPE  "the seed has shape [2] but the root has shape [3]"
 *  B68  ag_backward (or ag_grad) again through a graph released by a backward without
 *       retain_graph
 *       -> AG_ERR_STATE  "was already freed by an earlier backward; pass retain_graph = true"
 *  B69  ag_grad: an input the outputs do not use, without allow_unused
 *       -> AG_ERR_STATE  "input 1 is not used to compute the outputs (pass allow_unused"
 *          (accepted with allow_unused: that input's gradient is AG_NULL_TENSOR)
 *  B70  ag_grad: an input, or an output, that does not require grad
 *       -> AG_ERR_STATE  "input 0 does not require grad", "the root does not require grad"
 *  B71  ag_grad: a seed of the wrong shape / dtype, or none for a non-scalar output
 *       -> AG_ERR_SHAPE  "the seed has shape [3] but the root has shape [2]";
 *          AG_ERR_DTYPE  "the seed is float32 but the root is float64";
 *          AG_ERR_STATE  "a seed (gradient) is needed"
 *
 * Callbacks and gradcheck
 *  B72  ag_tensor_register_hook with hook NULL
 *       -> AG_ERR_ARGUMENT  "hook is NULL" (destroy is not called, *out_id not written)
 *  B73  ag_tensor_register_hook on a tensor that does not require grad
 *       -> AG_ERR_STATE  "the tensor does not require grad, so no gradient will flow into it"
 *  B74  ag_tensor_remove_hook with an unknown id, another tensor's id, or an id removed already
 *       -> AG_ERR_ARGUMENT  "no hook with id 987654321 is registered on this tensor"
 *  B75  a gradient hook that returns non-zero (7), in ag_backward or ag_grad
 *       -> AG_ERR_CALLBACK  "gradient hook 2 returned 7" (the id and the value returned)
 *  B76  a gradient hook whose replacement has another shape or dtype than the gradient
 *       -> AG_ERR_SHAPE  "the replacement gradient is float64 [5], the gradient is float64 []"
 *          (the library frees the rejected replacement)
 *  B77  ag_gradcheck with eps <= 0 or non-finite, or atol / rtol < 0
 *       -> AG_ERR_ARGUMENT  "eps must be positive and finite, got 0.0", "atol and rtol must not
 *          be negative"
 *  B78  ag_gradcheck whose build function returns non-zero (3)
 *       -> AG_ERR_CALLBACK  "the build function returned 3"
 *  B79  ag_gradcheck with build NULL, passed NULL, inputs NULL, ninputs < 1
 *       -> AG_ERR_ARGUMENT  "build is NULL", "the output pointer 'passed' is NULL", "inputs is
 *          NULL but ninputs is 1", "at least one tensor is needed, ninputs is 0"
 *
 * Optimizers
 *  B80  a repeated parameter ({p, q, p}): ag_optimizer_sgd, ag_optimizer_adam
 *       -> AG_ERR_ARGUMENT  "parameter 2 repeats parameter 0"
 *  B81  a parameter that is not a leaf requiring grad (a result; a leaf without requires_grad)
 *       -> AG_ERR_STATE  "parameter 1 must be a leaf that requires grad"
 *  B82  a negative or non-finite learning rate
 *       -> AG_ERR_ARGUMENT  "the learning rate must be finite and >= 0, got -0.1"
 *  B83  Adam / AdamW with a beta outside [0, 1) (1.0, 1.5, -0.1)
 *       -> AG_ERR_ARGUMENT  "Adam: betas must be in [0, 1), got 1.0, 0.999"
 *  B84  SGD with nesterov and momentum 0
 *       -> AG_ERR_ARGUMENT  "SGD: Nesterov momentum needs momentum > 0"
 *  B85  a negative or non-finite momentum, weight decay or eps
 *       -> AG_ERR_ARGUMENT  "SGD: momentum and weight decay must be finite and >= 0",
 *          "Adam: eps and weight decay must be finite and >= 0"
 *  B86  params NULL, n < 1, out NULL
 *       -> AG_ERR_ARGUMENT  "params is NULL but n is 1", "at least one tensor is needed, n is
 *          0", "the output pointer 'out' is NULL"
 *  B87  ag_optimizer_set_lr with a negative or non-finite rate
 *       -> AG_ERR_ARGUMENT  "the learning rate must be finite and >= 0, got -1.0" (lr unchanged)
 *
 * Memory
 *  B88  an element count that fits int64 but a byte count that does not: ag_tensor_zeros
 *       {2^40, 2^20} float64 (2^63 bytes), ag_tensor_eye(2^31, 2^31) float32 (2^64 bytes)
 *       -> AG_ERR_OUT_OF_MEMORY  "cannot allocate 1152921504606846976 elements of float64: size
 *          overflows"
 *  B89  a representable allocation too large to satisfy, 2^61 or 2^62 bytes: ag_tensor_zeros
 *       {2^58} float64, ones {2^29, 2^30} float64, full {2^20, 2^20, 2^19} float32, rand_uniform,
 *       init, eye(2^29, 2^30) float64, zeros {2^61 - 1} float32 (2^63 - 4 bytes)
 *       -> AG_ERR_OUT_OF_MEMORY  "cannot allocate 2305843009213693952 bytes for
 *          288230376151711744 elements of float64"
 *  B90  ag_tensor_from_data with shape {2^58} float64 and a one-element buffer
 *       -> AG_ERR_OUT_OF_MEMORY  "cannot allocate" (the allocation fails before data is read)
 *  B91  an operation whose result cannot be allocated: ag_expand of a scalar to {2^58} float64
 *       -> AG_ERR_OUT_OF_MEMORY  "ag_expand: cannot allocate 2305843009213693952 bytes"
 *          (the operand is unchanged and usable)
 *
 * Extremes
 *  B92  INT64_MIN / INT64_MAX (INT32_MIN for enums) as an axis, index, label, permutation entry,
 *       correction, extent, capacity, hook id, init kind or dtype: the same status as any other
 *       out-of-range value, with the value in the message (no arithmetic overflow); e.g.
 *       ag_sum axis INT64_MIN
 *       -> AG_ERR_ARGUMENT  "axis -9223372036854775808 is out of range for a tensor of rank 2";
 *          ag_index_select "index -9223372036854775808 is out of range for extent 3 of axis 0";
 *          ag_tensor_shape "capacity -9223372036854775808 is less than the rank 2";
 *          ag_tensor_eye(INT64_MAX, 1) AG_ERR_OUT_OF_MEMORY "size overflows"
 *       (accepted: ag_slice bounds INT64_MIN / INT64_MAX are clamped like any others)
 *  B93  a shape with a zero extent whose other extents multiply past int64:
 *       ag_tensor_zeros {0, INT64_MAX, INT64_MAX}, ag_reshape to {2^32, 2^32, 0}
 *       -> AG_ERR_SHAPE  "the element count of shape [0, 9223372036854775807,
 *          9223372036854775807] overflows int64" (refused although numel would be 0: every
 *          partial product of an accepted shape fits int64); the same for an operation's
 *          result of such a shape: ag_index_select of 7 indices along axis 0 of {1, 2^62, 0}
 *          -> AG_ERR_SHAPE "the element count of shape [7, 4611686018427387904, 0] overflows int64"
 *  B94  accepted: ag_status_name of an unknown status (-1, 11, INT32_MIN) gives
 *       "AG_UNKNOWN_STATUS"; ag_set_grad_enabled with previous NULL -> AG_OK
 *  B95  ag_set_num_threads: n < 1 or n > 256
 *       -> AG_ERR_ARGUMENT  "the thread count must be between 1 and 256, not 0"
 *  B96  a hook whose ag_backward (without retain_graph) runs through part of the graph of the
 *       backward that called it, releasing nodes that pass has yet to run
 *       -> the outer ag_backward: AG_ERR_STATE  "the graph through 'mul' was freed during this
 *          backward, by a backward run from a hook; pass retain_graph = true to that backward"
 *  B97  ag_tensor_copy_ into the result of a recorded op, into a leaf requiring grad with grad
 *       mode on, from another dtype, from a shape that does not broadcast to dst's
 *       -> AG_ERR_STATE  "in-place write into the result of 'mul'", "... while grad mode is on";
 *          AG_ERR_DTYPE  "the source is float32 but the tensor is float64";
 *          AG_ERR_SHAPE  "shape [3] cannot be expanded to []" (nothing is written)
 *  B98  ag_backward through a retained graph whose saved values were written in place since
 *       (an optimizer step, ag_tensor_copy_)
 *       -> AG_ERR_STATE  "a value saved by 'mul' for backward was modified in place after it was
 *          saved" (no gradient is accumulated by the refused pass)
 *
 * Function transforms
 *  B99  ag_jvp with a tangent whose shape or dtype differs from its primal's
 *       -> AG_ERR_SHAPE  "tangent 1 has shape [2] but its primal has shape [3]";
 *          AG_ERR_DTYPE  "tangent 0 is float32 but its primal is float64" (build is not called)
 *  B100 ag_vjp with a cotangent whose shape or dtype differs from the function's output
 *       -> AG_ERR_SHAPE  "the cotangent has shape [2] but the function's output has shape [3]";
 *          AG_ERR_DTYPE  "the cotangent is float32 but the function's output is float64"
 *  B101 ag_hvp with a v whose shape or dtype differs from the input's
 *       -> AG_ERR_SHAPE  "v has shape [2] but the input has shape [3]";
 *          AG_ERR_DTYPE  "v is float32 but the input is float64" (build is not called)
 *  B102 ag_hvp or ag_hessian of a function whose output has more than one element (or none)
 *       -> AG_ERR_SHAPE  "the function must return one element (a scalar), it returned shape [3]"
 *  B103 a transform (ag_jvp, ag_vjp, ag_jacobian, ag_hvp, ag_hessian) whose build function
 *       returns non-zero (3), returns 0 without writing *out, writes a made-up handle, or frees
 *       its borrowed input
 *       -> AG_ERR_CALLBACK  "the build function returned 3", "wrote no tensor handle to *out",
 *          "is not a live tensor handle", "freed its input handle 0"
 *  B104 ag_jacobian in forward mode, or ag_hessian, whose build function's output changes shape
 *       or dtype on a later call
 *       -> AG_ERR_CALLBACK  "the function's output changed between calls: float64 [] on call 1,
 *          float64 [2] on call 2"
 *  B105 ag_jvp, ag_hvp, ag_hessian or ag_jacobian (either mode) called from the build function of
 *       ag_jvp (or of ag_hvp, ag_hessian, forward-mode ag_jacobian)
 *       -> AG_ERR_STATE  "a forward-mode pass is already running on this thread" (the outer
 *          call then fails with AG_ERR_CALLBACK quoting it, if build returns non-zero)
 *  B106 ag_jacobian with an unknown mode (0, 3, INT32_MIN)
 *       -> AG_ERR_ARGUMENT  "unknown Jacobian mode 3 (use AG_JACOBIAN_REVERSE = 1 or
 *          AG_JACOBIAN_FORWARD = 2)"
 *  B107 a Jacobian or Hessian of rank above AG_MAX_NDIM: ag_jacobian of a rank-5 function of a
 *       rank-5 input, ag_hessian of a rank-5 input
 *       -> AG_ERR_SHAPE  "the result's shape [1, 1, 1, 1, 2, 1, 1, 1, 1, 2] has rank 10, more
 *          than the 8 allowed" (before any derivative is computed)
 *  B108 ag_jvp / ag_vjp with primals or tangents NULL, nprimals < 1, or output, output_tangent,
 *       grads NULL; any transform with build NULL
 *       -> AG_ERR_ARGUMENT  "tangents is NULL but nprimals is 1", "at least one tensor is
 *          needed, nprimals is 0", "the output pointer 'grads' is NULL", "build is NULL"
 *
 * Reusable graphs
 *  B109 ag_tensor_set_data with count != numel, data NULL with count > 0, an unknown dtype
 *       -> AG_ERR_ARGUMENT  "count 5 does not match the tensor's 6 elements", "data is NULL"
 *          (AG_ERR_DTYPE "unknown dtype")
 *  B110 ag_tensor_set_data into the result of a recorded op, or into a leaf requiring grad with
 *       grad mode on
 *       -> AG_ERR_STATE  "only leaves can be written in place", "the write would not be recorded"
 *  B111 ag_recompute of a graph recorded while recomputable graphs were off
 *       -> AG_ERR_STATE  "was recorded without its forward"
 *  B112 ag_recompute of a graph freed by a backward without retain_graph
 *       -> AG_ERR_STATE  "was freed by a backward"
 *  B113 ag_capture with out or fn NULL, ninputs < 0, inputs NULL with ninputs > 0, noutputs < 1
 *       or > 4096
 *       -> AG_ERR_ARGUMENT  "fn is NULL", "noutputs 0 is outside 1...4096"
 *  B114 ag_capture whose function fails, writes 0 or a dead handle to an output, or frees an
 *       input
 *       -> AG_ERR_CALLBACK  "the function returned 7", "wrote no tensor handle to outputs[1]",
 *          "freed inputs[0], a tensor handle it was given"
 *  B115 ag_capture whose function runs a backward (ag_backward, ag_grad) that reaches a hook, on
 *       a leaf made outside or on a result
 *       -> AG_ERR_STATE  "hooks run user code on each backward and cannot be replayed" (from the
 *          backward; ag_capture then fails with AG_ERR_CALLBACK quoting it if the function
 *          returns that status, with AG_ERR_STATE if it returns 0 anyway)
 *  B116 ag_capture called from a capture's function; ag_function_call inside a capture
 *       -> AG_ERR_STATE  "capture cannot be nested", "cannot be called inside a capture" (the
 *          outer ag_capture then fails with AG_ERR_CALLBACK quoting it, if the function returns
 *          non-zero)
 *  B117 ag_function_call / _call_into with the wrong number of inputs or outputs, an input of
 *       another shape or dtype
 *       -> AG_ERR_ARGUMENT  "2 inputs for a function captured with 3"; AG_ERR_SHAPE "shapes are
 *          fixed per capture"; AG_ERR_DTYPE "capture again for other dtypes"
 *  B118 a freed, made-up or tensor handle where a function is wanted (ag_function_call,
 *       ag_function_info, ag_function_free twice); a function handle where a tensor is wanted
 *       -> AG_ERR_INVALID_HANDLE  "is not a live function handle", "is not a live tensor handle"
 *  B119 ag_function_call_into with an output tensor of another shape or dtype, the result of a
 *       recorded op, or two outputs sharing values (each output's dtype is checked before its
 *       shape)
 *       -> AG_ERR_SHAPE "output 0 is float64 [2]"; AG_ERR_DTYPE "output 0 is float32 [3]";
 *          AG_ERR_STATE "only leaves can be written in place"; AG_ERR_ARGUMENT "share their
 *          values"
 *
 * User-defined ops
 *  B120 ag_custom_op_new with out, name or forward NULL, an empty name, ninputs or noutputs
 *       outside 1...256 (0, -1, 257, INT64_MIN, INT64_MAX)
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL", "name is NULL", "forward is NULL",
 *          "a custom op needs a name (non-empty, without NUL characters)", "ninputs 0 is outside
 *          1...256", "noutputs 257 is outside 1...256" (destroy is not called, now or later; *out
 *          is not written) (accepted: 256 inputs and outputs, backward and jvp NULL)
 *  B121 ag_custom_op_apply with outputs or inputs NULL, or noutputs / ninputs other than the op's
 *       -> AG_ERR_ARGUMENT  "the output pointer 'outputs' is NULL", "noutputs is 1, custom op
 *          'cop' has 2 outputs", "ninputs is 2, custom op 'cop' takes 1 input", "inputs is NULL
 *          but ninputs is 1" (the forward is not called)
 *  B122 a custom op handle 0, freed, made up or of another kind (a tensor): ag_custom_op_apply,
 *       ag_custom_op_free (also twice); an input that is not a live tensor; a custom op handle
 *       where a tensor is wanted
 *       -> AG_ERR_INVALID_HANDLE  "custom op handle is 0 (AG_NULL_CUSTOM_OP)", "is not a live
 *          custom op handle (freed, made up, or of another kind)", "inputs[0] handle 0x", "is not
 *          a live tensor handle" (the op stays alive)
 *          (accepted: ag_custom_op_free(AG_NULL_CUSTOM_OP) -> AG_OK)
 *  B123 a context used outside its callback (kept after the forward returned, 0, made up):
 *       ag_custom_ctx_save, _saved_count, _saved, _needs_input_grad
 *       -> AG_ERR_INVALID_HANDLE  "is not a live context (a context is valid only during the
 *          callback it was passed to)" (nothing is written)
 *  B124 inside a callback: ag_custom_ctx_save with tensors NULL or n < 1; ag_custom_ctx_saved or
 *       _needs_input_grad with an index out of range (-1, INT64_MIN, the count); out NULL
 *       -> AG_ERR_ARGUMENT  "tensors is NULL but n is 1", "at least one tensor is needed, n is
 *          0", "index 1 is out of range: the forward saved 1 tensor", "input index 1 is out of
 *          range: the op has 1 input", "the output pointer 'out' is NULL" (a callback that goes on and
 *          returns 0 succeeds)
 *  B125 ag_custom_ctx_save from the backward or the JVP
 *       -> AG_ERR_STATE  "tensors can be saved in the forward callback only (this context belongs
 *          to the backward callback)" ("... the jvp callback")
 *  B126 ag_set_error with message NULL
 *       -> AG_ERR_ARGUMENT  "ag_set_error: message is NULL" (accepted: any string, also "" and
 *          outside a callback: AG_OK, and ag_last_error() is then that string)
 *  B127 a callback that returns non-zero (7): the forward (ag_custom_op_apply, ag_function_call),
 *       the backward (ag_backward, ag_grad, ag_vjp and the other transforms, ag_function_call),
 *       the JVP (ag_custom_op_apply in a forward-mode pass)
 *       -> AG_ERR_CALLBACK  "custom op 'cop': the forward returned 7", "... the backward returned
 *          7", "... the JVP returned 7", followed by " (its last error: the series did not
 *          converge)" quoting its ag_set_error message or the last call it made that failed
 *          ("(its last error: ag_exp: a handle 0x123456789abcdef is not a live tensor handle")
 *  B128 a forward that returns 0 without writing every output
 *       -> AG_ERR_CALLBACK  "custom op 'cop': the forward returned 0 (success) but wrote no tensor
 *          handle to outputs[1]" (accepted: AG_NULL_TENSOR from the backward is no
 *          gradient for that input (ag_grad then: B69), from the JVP a zero tangent)
 *  B129 a callback that writes a handle that is not a live tensor (one it freed, made up, of
 *       another kind: the op's own)
 *       -> AG_ERR_CALLBACK  "custom op 'cop': the forward wrote 0x123456789abcdef to outputs[1],
 *          which is not a live tensor handle" ("the backward wrote ... to input_grads[0]", "the
 *          JVP wrote ... to output_tangents[0]"; a handle of another kind is left alone)
 *  B130 a callback that frees a handle it was given (an input, an output gradient, a tangent)
 *       -> AG_ERR_CALLBACK  "custom op 'cop': the forward freed inputs[0], a tensor handle it was
 *          given" ("the backward freed output_grads[0]", "the JVP freed input_tangents[0]")
 *  B131 a forward whose outputs differ in dtype
 *       -> AG_ERR_CALLBACK  "custom op 'cop': the forward returned output 0 as float64 and output
 *          1 as float32; the outputs of an op share one dtype"
 *  B132 a backward that returns a gradient of another dtype than its input, or of a shape that
 *       does not reduce to its input's
 *       -> AG_ERR_CALLBACK  "the backward returned gradient 0 as float32, input 0 is float64",
 *          "the backward returned gradient 0 of shape [3] for input 0 of shape [2]" (accepted: a
 *          shape that broadcasting reduces, [3, 2] for [2]: it is summed back)
 *  B133 a JVP that returns a tangent of another shape or dtype than its output
 *       -> AG_ERR_CALLBACK  "the JVP returned tangent 0 as float64 [3], output 0 is float64 [2]"
 *  B134 a backward through an op defined without a backward; a forward-mode pass (ag_jvp, ag_hvp,
 *       ag_hessian, forward-mode ag_jacobian) through an op defined without a JVP
 *       -> AG_ERR_STATE  "custom op 'cop' was defined without a backward, so no gradient flows
 *          through it"; from ag_custom_op_apply: "custom op 'cop' was defined without a JVP, so it
 *          cannot be differentiated in forward mode" (the transform then fails with
 *          AG_ERR_CALLBACK quoting it, if build returns non-zero)
 *  B135 ag_function_call of a capture whose custom op's forward gives other shapes than at the
 *       capture
 *       -> AG_ERR_CALLBACK  "custom op 'cop': in a replay the forward returned and saved tensors
 *          of shapes [[3], [3]], at the capture [[2], [2]]" (nothing is written; the function
 *          works again once the shapes are back)
 *  B136 ag_custom_ctx_set_state from the backward or the JVP
 *       -> AG_ERR_STATE  "ag_custom_ctx_set_state: the state can be set in the forward callback
 *          only (this context belongs to the backward callback)" ("... the jvp callback") (its
 *          destroy is not called, now or later; the forward's state stays, and a callback that
 *          goes on and returns 0 succeeds)
 *  B137 ag_custom_ctx_set_state or ag_custom_ctx_state with a context that is not live (kept
 *       after its callback returned, 0, made up, a tensor handle); ag_custom_ctx_state with out
 *       NULL
 *       -> AG_ERR_INVALID_HANDLE  "is not a live context (a context is valid only during the
 *          callback it was passed to)"; AG_ERR_ARGUMENT  "ag_custom_ctx_state: the output pointer
 *          'out' is NULL" (destroy is not called; nothing is written) (accepted: the state read in
 *          a forward before it sets one is NULL, in a replay or a recompute too; state and
 *          destroy NULL; a second set_state in the forward replaces the first, whose destroy runs
 *          then)
 *  B138 a custom-op callback that would be the 65th running nested on one thread (a forward
 *       that applies its own op to its inputs)
 *       -> AG_ERR_STATE  "ag_custom_op_apply: custom op 'rec': 64 custom-op callbacks are running
 *          nested on this thread already, the most allowed (does its forward apply the op
 *          itself?)" from the innermost ag_custom_op_apply; each forward that returns that
 *          status fails its own apply with AG_ERR_CALLBACK "custom op 'rec': the forward returned
 *          7 (its last error: ..." (nothing leaks) (accepted: 64 nested)
 *  B139 a backward pass that would be the 65th running nested on one thread (a gradient hook
 *       whose ag_grad reaches the hook again)
 *       -> AG_ERR_STATE  "ag_grad: 64 backward passes are running nested on this thread already,
 *          the most allowed (a gradient hook or a custom op's backward runs a backward that
 *          reaches it again?)" from the innermost pass; each hook that returns that status fails
 *          its own pass with AG_ERR_CALLBACK "ag_grad: gradient hook ", " returned 7 (its last
 *          error: ag_grad: gradient hook " (nothing leaks) (accepted: 64 nested)
 *  B140 ag_recompute of a graph holding a custom op of several outputs, or one whose forward
 *       saved an intermediate (a tensor neither an input nor an output)
 *       -> AG_ERR_STATE  "ag_recompute: 'mid' was recorded without its forward", "a custom op of
 *          several outputs, or one that saved an intermediate, has none to rerun" (nothing is
 *          written) (accepted: an op of one output that saves inputs and outputs only, with or
 *          without a state: its forward is called again)
 *
 * Integer tensors, masks and random generators
 *  B141 ag_to_dtype to AG_INT64 of nan, inf, -inf, 2^63 or -1e19; an unknown dtype (0, 5)
 *       -> AG_ERR_ARGUMENT  "ag_to_dtype: element 1 is nan, which has no int64 value (nan,
 *          infinite or out of range)"; AG_ERR_DTYPE  "unknown dtype 5" (accepted: truncation
 *          toward zero, -0.5 -> 0 and 2.9 -> 2)
 *  B142 ag_argmax / ag_argmin: an axis out of range (2 or -3 for rank 2, 1 for a 0-d input), an
 *       axis of extent 0, an int64 or bool input, out NULL
 *       -> AG_ERR_ARGUMENT  "ag_argmax: axis 2 is out of range for a tensor of rank 2";
 *          AG_ERR_SHAPE  "cannot take the largest of an axis of extent 0 (shape [2, 0])" ("the
 *          smallest" for argmin); AG_ERR_DTYPE  "input is int64; this op needs float32 or
 *          float64"; AG_ERR_ARGUMENT  "the output pointer 'out' is NULL" (accepted: a 0-d input
 *          at axis 0 or -1 gives 0; extent 0 off the axis gives an empty result)
 *  B143 ag_topk: values or indices NULL, k outside 0...extent (-1, 5 for 4), a bad axis, a 0-d
 *       input, an int64 input
 *       -> AG_ERR_ARGUMENT  "the output pointer 'values' is NULL" ('indices'), "ag_topk: k = 5 is
 *          outside 0...4 (the extent of axis 0)", "axis 1 is out of range for a tensor of rank
 *          1"; AG_ERR_SHAPE  "the input is 0-d; it needs an axis"; AG_ERR_DTYPE  "input is
 *          int64" (neither output is written) (accepted: k = 0 and k = extent)
 *  B144 ag_one_hot: an index out of range (5 for 5 classes, -1), classes < -1, classes = -1
 *       with no index or with an index of INT64_MAX, float indices, dtype AG_BOOL or unknown,
 *       rank-8 indices
 *       -> AG_ERR_ARGUMENT  "ag_one_hot: index 5 (element 1) is out of range for 5 classes",
 *          "the number of classes must be -1 or at least 0, got -2", "classes = -1 needs at
 *          least one index"; AG_ERR_DTYPE  "indices must be int64, got float64", "the result is
 *          float32, float64 or int64, not bool", "unknown dtype 9"; AG_ERR_SHAPE  "a rank-8 index
 *          tensor gives a result above the maximum rank 8" (accepted: classes = 0 with no index)
 *  B145 ag_embedding: an index out of range (4 for 4 rows, -1), float indices, an int64
 *       weight, a weight not 2-D, rank-8 indices; the indices written in place before the
 *       backward
 *       -> AG_ERR_ARGUMENT  "ag_embedding: index 4 (element 1) is out of range for 4 rows";
 *          AG_ERR_DTYPE  "indices must be int64, got float64", "weight is int64; this op needs
 *          float32 or float64"; AG_ERR_SHAPE  "weight must be (rows, width), got [2]", "a rank-8
 *          index tensor gives a result above the maximum rank 8"; from ag_backward: AG_ERR_STATE
 *          "a value saved by 'embedding' for backward was modified in place" (nothing is
 *          accumulated)
 *  B146 ag_masked_fill: a mask that does not broadcast to a's shape ([2] or [4, 2, 3] for
 *       [2, 3]: the result has a's shape), an int64 or bool a
 *       -> AG_ERR_SHAPE  "ag_masked_fill: mask of shape [2] does not broadcast to the input's
 *          [2, 3]"; AG_ERR_DTYPE  "input is int64; this op needs float32 or float64" (accepted:
 *          a float mask, nan counting as true; value inf)
 *  B147 ag_logical_and / ag_logical_or: shapes that do not broadcast; ag_logical_not with out NULL
 *       -> AG_ERR_SHAPE  "ag_logical_and: shapes [2] and [3] do not broadcast";
 *          AG_ERR_ARGUMENT  "the output pointer 'out' is NULL"
 *  B148 ag_cross_entropy_labels: float labels, int64 logits, a label out of range (3 or -1 for 3
 *       classes), labels not of shape (N) ([3] or [4, 1] for 4 rows), logits not 2-D
 *       -> AG_ERR_DTYPE  "ag_cross_entropy_labels: cross_entropy: labels must be int64, got
 *          float64", "logits is int64"; AG_ERR_ARGUMENT  "label 3 (element 2) is out of range for
 *          3 classes"; AG_ERR_SHAPE  "labels of shape [3] for 4 rows of logits (want (4))",
 *          "logits must be (N, C), got [2]"
 *  B149 an int64 or bool operand of an op that computes (ag_exp, ag_add, ag_matmul, ag_mean,
 *       ag_softmax, ag_where's a and b, ...); operands of different dtypes (ag_add of float64 and
 *       bool, ag_eq of int64 and float64); ag_tensor_set_requires_grad(t, true) of an int64 or
 *       bool t; ag_tensor_copy_data of a float tensor as AG_INT64; ag_tensor_full of 2.5 as
 *       AG_INT64
 *       -> AG_ERR_DTYPE  "ag_exp: its operand is int64; this op needs float32 or float64 (convert
 *          with to_dtype)" ("ag_mean: input is bool", "ag_where: a is bool"), "operands have
 *          different dtypes (int64 and float64)", "requires_grad: int64 tensors cannot require
 *          grad (only float32 and float64 values have gradients)", "cannot copy float64 values out
 *          as int64; convert the tensor with to_dtype first"; AG_ERR_ARGUMENT  "full: 2.5 is not a
 *          whole number within int64's range" (accepted: requires_grad false; ag_sum of a bool
 *          tensor counts, as int64; a bool tensor copied out as int64)
 *  B150 a generator handle 0, freed, made up or of another kind (a tensor): ag_random_uniform,
 *       ag_randperm, ag_dropout, ag_randint, ag_generator_get_state / _set_state; ag_generator_free
 *       twice or of a tensor; a generator where a tensor is wanted; ag_generator_get_state or
 *       ag_generator_new with out NULL
 *       -> AG_ERR_INVALID_HANDLE  "ag_random_uniform: generator handle is 0", "is not a live
 *          generator handle (freed, made up, or of another kind)", "ag_generator_free: handle 0x",
 *          "is not a live generator handle (already freed, made up, or of another kind)", "is not
 *          a live tensor handle"; AG_ERR_ARGUMENT  "the output pointer 'out' is NULL" (the tensor
 *          and the generator stay alive) (accepted: ag_generator_free(0) -> AG_OK; a captured
 *          function keeps using a generator freed after the capture)
 *  B151 ag_random_uniform / ag_random_normal: dtype AG_INT64, AG_BOOL or unknown, low > high, a
 *       nan or inf bound or mean, std < 0, shape NULL with ndim > 0, a negative extent
 *       -> AG_ERR_DTYPE  "ag_random_uniform: uniform: random values are float32 or float64, not
 *          int64 (randint draws int64)", "unknown dtype 7"; AG_ERR_ARGUMENT  "uniform: need finite
 *          low <= high", "normal: need a finite mean and a finite std >= 0", "shape is NULL but
 *          ndim is 1"; AG_ERR_SHAPE  "negative extent -2 in shape [-2]" (nothing is drawn: the
 *          generator's state is unchanged)
 *  B152 ag_randint with low >= high; ag_randperm with n < 0 or n > 2^40
 *       -> AG_ERR_ARGUMENT  "ag_randint: need low < high, got 3 and 3", "ag_randperm: n must be
 *          >= 0, got -1", "n = 1099511627777 is more than the 2^40 allowed" (accepted: low =
 *          INT64_MIN, high = INT64_MAX; n = 0)
 *  B153 ag_dropout with p outside [0, 1] (1.5, -0.25, also when not training) or nan; an int64 a
 *       -> AG_ERR_ARGUMENT  "ag_dropout: p must be in [0, 1], got 1.5"; AG_ERR_DTYPE  "input is
 *          int64; this op needs float32 or float64" (accepted: p = 1 zeroes every element)
 *  B154 ag_multinomial: samples < 0, more samples without replacement than positive weights, a
 *       negative, inf or nan weight, a row of zeros, weights not (C) or (N, C), no category,
 *       int64 weights
 *       -> AG_ERR_ARGUMENT  "ag_multinomial: the number of samples must be >= 0, got -1", "3
 *          samples without replacement, but row 0 has only 2 categories of positive weight",
 *          "weights must be finite and >= 0, row 0 holds -1.0", "row 1 has no positive weight";
 *          AG_ERR_SHAPE  "weights must be (C) or (N, C), got [1, 1, 2]", "there are no categories
 *          (shape [0])"; AG_ERR_DTYPE  "input is int64" (accepted: 0 samples; as many samples
 *          without replacement as positive weights)
 *  B155 ag_conv2d, ag_conv1d: stride, padding, dilation or groups out of range; a weight that
 *       does not fit the input's channels, channels not divisible by groups, a bias of another
 *       length, an input of the wrong rank, a kernel larger than the padded input; operands of
 *       different dtypes
 *       -> AG_ERR_ARGUMENT  "ag_conv2d: stride must be positive, got (0, 1)", "padding must be
 *          non-negative", "dilation must be positive", "groups must be positive, got 0";
 *          AG_ERR_SHAPE  "weight [4, 2, 3, 3] does not fit input [2, 3, 5, 5] with groups = 1",
 *          "3 input channels are not divisible by groups = 2", "bias has shape [3], want [4]",
 *          "the input must be 4-D (N, C, H, W)" (3-D (N, C, L) for conv1d), "is larger than the
 *          padded input (5) along H"; AG_ERR_DTYPE  "x is float32, weight is float64"
 *  B156 ag_max_pool2d, ag_avg_pool2d, ag_adaptive_avg_pool2d: a kernel extent < 1, one stride 0
 *       and the other not, padding above half the kernel, an input not 4-D, a kernel larger than
 *       the padded input, an output size < 0, an averaging matrix above 2^28 entries (an output
 *       extent of 2147483647 over 5: it used to abort the process)
 *       -> AG_ERR_ARGUMENT  "kernel size must be positive, got (0, 2)", "stride must be positive,
 *          or 0, 0 for the kernel size; got (1, 0)", "padding must be at most half the kernel
 *          size", "output size must be non-negative, got (-1, 2)"; AG_ERR_SHAPE  "the input must
 *          be 4-D", "the kernel (span 7", "more than the 2^28 entries allowed" (accepted: an
 *          adaptive output of extent 0, whatever the other)
 *  B157 ag_layer_norm, ag_group_norm: normalized_ndim outside 1..rank, eps < 0 or not finite, a
 *       weight or bias of another shape than the normalized axes, groups < 1 or not dividing C
 *       -> AG_ERR_ARGUMENT  "normalized_ndim must be in 1...2 for an input of shape [2, 3], got 0",
 *          "eps must be finite and >= 0, got -1.0", "groups must be positive and divide the 3
 *          channels, got 2"; AG_ERR_SHAPE  "weight has shape [5], the normalized axes of [2, 3]
 *          are [3]"
 *  B158 ag_batch_norm: one value per channel in training, one running statistic without the
 *       other, eval without running statistics, an input of rank < 2, a running statistic that
 *       requires grad in training
 *       -> AG_ERR_ARGUMENT  "expected more than 1 value per channel when training, got input
 *          shape [1, 3]", "running_mean and running_var must both be given or both be none",
 *          "eval mode (training false) needs running_mean and running_var"; AG_ERR_SHAPE  "the
 *          input must be (N, C, *) with rank >= 2"; AG_ERR_STATE  "running_var requires grad;
 *          running statistics are updated in place in training and must not require grad"
 *  B159 ag_scaled_dot_product_attention: a mask with is_causal, a mask that does not broadcast to
 *       the scores, query and key of other feature extents, key and value of other lengths,
 *       operands of different dtypes, a non-finite scale, a query of rank < 2
 *       -> AG_ERR_ARGUMENT  (mask with is_causal), "scale must be finite (0: 1/sqrt(E)), got
 *          nan"; AG_ERR_SHAPE  "attn_mask of shape [4, 5] does not broadcast to the scores'
 *          shape [2, 4, 4]", "have different feature extents (8 and 6)", "have different
 *          lengths (4 and 6)", "query must have rank >= 2"; AG_ERR_DTYPE  "key is float32 but
 *          query is float64"
 *  B160 ag_clip_grad_norm, ag_lr_warmup_cosine: a NULL output, n < 0, a repeated parameter,
 *       max_norm < 0 or nan, norm_type <= 0, a step < 0, total_steps below warmup_steps, min_lr
 *       above base_lr, a non-finite rate
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out_total_norm' is NULL", "n (-1) is negative",
 *          "parameter 1 repeats parameter 0", "max_norm must be >= 0 (not nan), got -1.0",
 *          "norm_type must be > 0 or inf, got 0.0", "step must be >= 0, got -1", "total_steps (5)
 *          is below warmup_steps (10)", "min_lr (0.1) is above base_lr (0.01)", "base_lr must be
 *          finite and >= 0, got nan" (nothing is written on failure; accepted: n = 0, total 0)
 *
 * Files: safetensors (a rejected open makes no handle; a rejected save leaves `path` as it was)
 *  B161 ag_safetensors_open / _open_memory: out NULL, path NULL or not valid UTF-8, data NULL
 *       with length > 0, length < 0; a path that does not exist, a directory, a FIFO (refused
 *       at once, never waited on), a path under a regular file
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL", "path is NULL", "path is not
 *          valid UTF-8", "data is NULL but length is 16", "length (-1) is negative";
 *          AG_ERR_IO  "cannot open '<path>': No such file or directory", "'<path>': it is not a
 *          regular file", "Not a directory"
 *  B162 a truncated file: fewer than the 8 bytes of the header length, or a header length
 *       larger than what follows it
 *       -> AG_ERR_FORMAT  "the buffer is truncated: it has 5 bytes, fewer than the 8 of the
 *          header length" (from a file: "'<path>' is truncated: ..."), "is truncated: the header
 *          length is 100 bytes but only 2 follow it"
 *  B163 an absurd header length: above 100,000,000 (the format's limit), 2^64 - 1
 *       -> AG_ERR_FORMAT  "the header length 100000001 is above the format's limit of 100000000
 *          bytes"
 *  B164 a header that is not the format's JSON: not starting with '{', bytes after the object,
 *       a repeated key (at any level), a string with invalid UTF-8, a lone surrogate, a raw
 *       control character or \u0000, a tensor entry that is not an object or has an unknown or
 *       missing key, a "__metadata__" that is not an object of strings
 *       -> AG_ERR_FORMAT  "bad header JSON at byte", "the header must start with '{'",
 *          "after the header's JSON object", "duplicate key \"a\"", "not valid UTF-8", "a lone
 *          surrogate", "has an unknown key \"extra\"", "has no dtype", "the \"__metadata__\"
 *          value of \"k\" is not a string"
 *  B165 a dtype that is not the format's, and numbers a shape or data_offsets may not hold:
 *       negative, with a fraction or exponent, beyond int64; a rank above 64
 *       -> AG_ERR_FORMAT  "has an unknown dtype \"F33\"", "must be non-negative, got -1",
 *          "must be an integer without fraction or exponent, got 1.5", "9223372036854775808 does
 *          not fit int64", "the shape of \"a\" has more than 64 entries"
 *  B166 a header that lies about the data: a range past the end of the data or ending before
 *       it begins, a size that is not numel(shape) * size(dtype), an element count or byte size
 *       that overflows int64, overlapping ranges, a gap between ranges, bytes after the last
 *       -> AG_ERR_FORMAT  "data_offsets [0, 8] run past the end of the data (4 bytes)", "end
 *          before they begin", "has 4 bytes (data_offsets [0, 4]) but shape [3] of F32 needs
 *          12", "overflows int64", "overlaps tensor \"a\"", "leaves a gap of 4 bytes after byte
 *          4", "the data has 8 bytes but the tensors cover only the first 4"
 *  B167 ag_safetensors_count / _name / _info / _metadata_count / _metadata_entry /
 *       _metadata: out NULL (where required), an index outside 0..count-1, capacity < 0,
 *       out_shape NULL with capacity > 0, name or key NULL, a name not in the file
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL", "index 1 is outside 0..<1 (the
 *          file has 1 tensors)", "capacity (-1) is negative", "out_shape is NULL but capacity
 *          is 1", "name is NULL", "key is NULL", "no tensor named \"b\" in the file"
 *          (accepted: a key not in the metadata gives NULL in *out)
 *  B168 ag_safetensors_load: a dtype of the format Autograd does not hold (BF16), a rank above
 *       AG_MAX_NDIM, a BOOL byte other than 0 or 1, a file that shrank after it was opened
 *       -> AG_ERR_DTYPE  "tensor \"h\" is BF16, which Autograd does not hold"; AG_ERR_SHAPE
 *          "tensor \"r\" has rank 9, above the maximum rank 8"; AG_ERR_FORMAT  "(BOOL) holds
 *          the byte 2 at element 1"; AG_ERR_IO  "shorter than when it was opened" (listing and
 *          ag_safetensors_info still work for such tensors)
 *  B169 ag_safetensors_save: path NULL, n < 0, nmetadata < 0, names or tensors NULL with n > 0,
 *       a name NULL, empty, not valid UTF-8, "__metadata__" or repeated, a repeated metadata
 *       key, metadata arrays NULL with nmetadata > 0, a dead tensor handle; a directory that
 *       does not exist
 *       -> AG_ERR_ARGUMENT  "path is NULL", "n (-1) is negative", "names is NULL but n is 1",
 *          "names[0] is NULL", "the name of tensor 0 is empty", "names[0] is not valid UTF-8",
 *          "may not be called \"__metadata__\"", "the name \"a\" of tensor 1 repeats an
 *          earlier tensor's", "the metadata key \"k\" (entry 1) repeats an earlier key",
 *          "metadata_keys is NULL but nmetadata is 1"; AG_ERR_INVALID_HANDLE  "tensors[0]
 *          handle"; AG_ERR_IO  "cannot create '<path>.tmp.", "No such file or directory"
 *  B170 a safetensors handle that is 0, closed, made up or of another kind (a tensor), and a
 *       safetensors handle where a tensor is wanted; closing twice
 *       -> AG_ERR_INVALID_HANDLE  "safetensors handle is 0", "is not a live safetensors handle
 *          (closed, made up, or of another kind)", "ag_safetensors_close: handle 0x", "(already
 *          closed, made up, or of another kind)", "is not a live tensor handle" (accepted:
 *          ag_safetensors_close(0) -> AG_OK)
 * Shared memory and DLPack (on every rejection the caller keeps its memory: no destroy callback
 * or deleter is called, now or later)
 *  B171 ag_tensor_from_buffer: data NULL with numel > 0, out NULL
 *       -> AG_ERR_ARGUMENT  "data is NULL but the shape [2, 3] has 6 elements", "the output
 *          pointer 'out' is NULL" (accepted: data NULL when numel is 0)
 *  B172 ag_tensor_from_buffer: data not aligned to the element size (a float64 buffer + 4)
 *       -> AG_ERR_ARGUMENT  "is not aligned to the 8-byte elements of float64"
 *  B173 ag_tensor_from_buffer: ndim 9, a negative extent, an unknown dtype
 *       -> AG_ERR_ARGUMENT  "ndim 9 is outside 0...8"; AG_ERR_SHAPE  "negative extent -3 in shape
 *          [2, -3]"; AG_ERR_DTYPE  "unknown dtype 9"
 *  B174 ag_tensor_data_ptr_mut of a result, or of a leaf that requires grad while grad mode is
 *       on; out NULL (also ag_tensor_version)
 *       -> AG_ERR_STATE  "the tensor is the result of 'mul'", "requires grad while grad mode is
 *          on"; AG_ERR_ARGUMENT  "the output pointer 'out' is NULL" (the version is not bumped)
 *  B175 an in-place write into read-only memory (a DLPack import flagged READ_ONLY):
 *       ag_tensor_copy_, ag_tensor_set_data, ag_tensor_data_ptr_mut, ag_optimizer_sgd /
 *       ag_optimizer_adam with it as a parameter, ag_batch_norm with it as running_mean
 *       -> AG_ERR_STATE  "is read-only memory" (ag_optimizer_sgd: "parameter 0 is read-only
 *          memory"; ag_batch_norm: "running_mean (updated in place in training) is read-only
 *          memory"); nothing is written
 *  B176 ag_tensor_to_dlpack / _unversioned: out NULL; the unversioned form of read-only memory
 *       -> AG_ERR_ARGUMENT  "the output pointer 'out' is NULL"; AG_ERR_STATE  "which the
 *          unversioned DLManagedTensor cannot mark read-only"
 *  B177 ag_tensor_from_dlpack: m NULL, out NULL, a major version other than 1 (2.0)
 *       -> AG_ERR_ARGUMENT  "m is NULL", "the output pointer 'out' is NULL", "DLPack version 2.0
 *          is not supported"
 *  B178 ag_tensor_from_dlpack: another device (kDLCUDA), a dtype Autograd does not hold
 *       (float16, uint8, int32, two lanes)
 *       -> AG_ERR_ARGUMENT  "is on device type 2 (device_id 0)"; AG_ERR_DTYPE  "the DLPack dtype
 *          (code 2, bits 16, lanes 1) is not one Autograd holds"
 *  B179 ag_tensor_from_dlpack: ndim -1 or 9, a negative extent, an element count that overflows
 *       int64, shape NULL with ndim > 0
 *       -> AG_ERR_SHAPE  "ndim 9 is outside 0...8", "negative extent -1 in shape [2, -1]", "the
 *          element count of shape [4294967296, 4294967296] overflows int64"; AG_ERR_ARGUMENT
 *          "shape is NULL but its ndim is 2"
 *  B180 ag_tensor_from_dlpack: strides that are not row-major contiguous (column-major,
 *       broadcast 0), data + byte_offset misaligned, data NULL with elements, a byte_offset
 *       past the end of the address space
 *       -> AG_ERR_ARGUMENT  "strides [1, 2] for shape [2, 3] are not row-major contiguous",
 *          "is not aligned to the 8-byte elements of float64", "data is NULL but its shape [4]
 *          has 4 elements", "runs past the end of the address space" (accepted: any stride
 *          for an extent of 1, any strides with no element)
 *
 * Checkpoints (a rejected load writes no parameter and changes no optimizer state)
 *  B181 ag_checkpoint_save: path or names NULL, n < 0, a handle that is not a live optimizer, a
 *       metadata key starting with "autograd.", a parameter of the optimizer not among params,
 *       a directory that does not exist
 *       -> AG_ERR_ARGUMENT  "path is NULL", "names is NULL but n is 2", "n (-1) is negative",
 *          "the metadata key 'autograd.mine' starts with 'autograd.'", "the optimizer's parameter
 *          1 (shape [3]) is not among the named parameters"; AG_ERR_INVALID_HANDLE  "is not a
 *          live optimizer handle"; AG_ERR_IO  "<path>"
 *  B182 ag_checkpoint_load: path NULL, a file that does not exist, a name not in the file, a
 *       parameter of another shape or dtype or not a leaf, an optimizer of another kind, an
 *       optimizer given for a checkpoint without optimizer state
 *       -> AG_ERR_ARGUMENT  "path is NULL", "no tensor named 'u' in the file", "the file holds
 *          the state of a 'adam' optimizer, but the optimizer given is 'sgd'", "the file has no
 *          optimizer state"; AG_ERR_IO  "<path>"; AG_ERR_SHAPE  "'w' is saved with shape [2], but
 *          the parameter has shape [3]"; AG_ERR_DTYPE  "'w' is saved as F64, but the parameter is
 *          float32"; AG_ERR_STATE  "only leaves are restored in place" (accepted: opt 0 restores
 *          the values only)
 *  B183 ag_checkpoint_load of a file whose optimizer state does not fit the optimizer: a slot
 *       missing, a moment of another shape, a step count of 0 or above 2^53 (per parameter or
 *       in all), a learning rate that is not a number; a hyper-parameter that differs from the
 *       optimizer's
 *       -> AG_ERR_FORMAT  "the optimizer state of 'w' is incomplete", "state 'exp_avg_sq' of
 *          parameter 0 is float64 [3], want float64 [2]", "the step count of parameter 0 must be
 *          in 1...9007199254740992" (0 or INT64_MAX), "a step count must be in
 *          0...9007199254740992", "the metadata 'autograd.optimizer.lr' is missing or not a number";
 *          AG_ERR_ARGUMENT  "the saved beta1 (0.5) differs from the optimizer's (0.9)"
 */

#ifdef __cplusplus
}
#endif

#endif /* AUTOGRAD_H */
