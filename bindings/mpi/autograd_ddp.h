/*
 * autograd_ddp.h - data-parallel training (DDP) for libautograd over MPI.
 *
 * A small layer compiled into the programs that use it (mpicc ... bindings/mpi/autograd_ddp.c),
 * never into libautograd.so: the engine stays free of MPI. Every rank holds a full copy of the
 * model and trains on its own shard of each global batch; after every backward pass the layer
 * averages the parameters' gradients over the ranks, so that every rank's optimizer step sees the
 * same gradients and the copies stay identical.
 *
 * How (the PyTorch DistributedDataParallel recipe):
 *   - ag_ddp_new duplicates the communicator (the layer's messages never mix with the program's),
 *     broadcasts rank 0's initial parameter values to every rank, groups the parameters into
 *     buckets of at most bucket_bytes in REVERSE registration order (the order in which backward
 *     finishes their gradients: the last layer first), and registers a gradient-ready hook
 *     (ag_tensor_register_post_accumulate_grad_hook) on every parameter.
 *   - During ag_backward, each hook copies its parameter's finished gradient into the bucket's
 *     flat buffer; the hook that completes a bucket starts a non-blocking all-reduce of it, so
 *     the communication of the last layers runs while backward still works on the first ones.
 *     Every hook also tests the requests in flight (Open MPI moves a non-blocking collective on
 *     only inside MPI calls).
 *   - ag_ddp_finish_gradients, called after ag_backward and before the optimizer step, starts
 *     the buckets that did not fill, waits for every all-reduce (with a deadline), divides by the
 *     world size and writes the averages back into the parameters' gradients.
 *
 * Conventions as in autograd.h: every function returns an ag_status (AG_OK = 0), outputs come
 * first, and a failure sets ag_last_error() (read it on the failing thread). Call everything on
 * the thread that calls MPI and ag_backward (MPI_THREAD_FUNNELED is enough).
 *
 * Failures of the job are not returned but end it: when an MPI call fails or a collective does
 * not complete within the timeout (another rank crashed, exited or hangs), the layer prints one
 * line to stderr naming this rank, the step, the bucket, what it waited for and how long, and
 * calls MPI_Abort(comm, 1). It also installs a SIGTERM handler (unless told not to) that prints
 * "ddp: rank N: terminated by the MPI launcher (another rank failed or exited early)" and exits
 * with status 1: mpirun sends SIGTERM to the surviving ranks when one rank dies.
 *
 * The order of the sums (what makes results reproducible). Let g_r be rank r's gradient of one
 * element and P the world size.
 *   - Default: MPI_Iallreduce(MPI_SUM) then a division by P. The order in which MPI adds the
 *     g_r depends on its reduction algorithm (and, in principle, on the message size and the
 *     number of ranks); Open MPI gives every rank the same result, and the same run repeated
 *     gives the same bits, but the order is MPI's, not ours. With P = 2 the sum is g_0 + g_1 on
 *     both ranks whatever the algorithm (IEEE addition is commutative).
 *   - rank_order: the buckets are gathered (MPI_Iallgather) and every rank adds them itself, in
 *     rank order, one element at a time: ((g_0 + g_1) + g_2) + ... + g_{P-1}, then divides by P.
 *     The result is the same bits on every rank and independent of MPI's algorithms, at the cost
 *     of P times the receive buffer and traffic.
 *   Within a rank, libautograd's kernels add in a fixed order that does not depend on the thread
 *   count (see ag_set_num_threads), so a run repeated with the same P gives the same weights,
 *   bit for bit.
 */
#ifndef AUTOGRAD_DDP_H
#define AUTOGRAD_DDP_H

#include <mpi.h>
#include <stdint.h>

#include "autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An opaque data-parallel context. */
typedef struct ag_ddp ag_ddp;

/* Options; a zeroed struct (or NULL) gives the defaults. */
typedef struct {
    /* Non-zero: no all-reduce starts during backward; ag_ddp_finish_gradients starts them all
     * and waits (the blocking baseline, to measure what overlapping saves). */
    int no_overlap;
    /* Non-zero: gather and add in rank order (see "The order of the sums" above). */
    int rank_order;
    /* Seconds to wait for one collective before declaring the job broken. 0: the environment
     * variable AG_DDP_TIMEOUT (seconds, > 0) if set, else 60. */
    double timeout_seconds;
    /* Non-zero: do not install the SIGTERM handler. */
    int no_signal_handler;
} ag_ddp_options;

/* Makes a data-parallel context over `comm` for the parameters params[0..n-1] (leaves that
 * require grad, all float32 or all float64, the same count and shapes in the same order on
 * every rank). Collective: every rank of comm must call it. It
 *   - duplicates comm (MPI_Comm_dup) and sets MPI_ERRORS_RETURN on the duplicate,
 *   - checks that every rank passes the same parameter layout and options,
 *   - overwrites every rank's parameter values with rank 0's (one broadcast),
 *   - groups the parameters into buckets, in reverse order params[n-1], params[n-2], ...: a new
 *     bucket starts when adding the next parameter would pass bucket_bytes (a parameter larger
 *     than bucket_bytes gets a bucket of its own); bucket_bytes <= 0 means 25 MiB,
 *   - registers a gradient-ready hook on every parameter, and the SIGTERM handler.
 * The parameter handles must stay live until ag_ddp_free. MPI must be initialised.
 * Errors: AG_ERR_ARGUMENT (out NULL, params NULL or n < 1, a NULL or non-parameter handle, a
 * communicator that is MPI_COMM_NULL, ranks that disagree on the layout or the options),
 * AG_ERR_DTYPE (mixed dtypes or not float32/float64), AG_ERR_INVALID_HANDLE,
 * AG_ERR_OUT_OF_MEMORY. Argument errors found after the first collective are returned on every
 * rank alike. */
ag_status ag_ddp_new(ag_ddp **out, MPI_Comm comm, const ag_tensor *params, int64_t n, int64_t bucket_bytes,
                     const ag_ddp_options *opts);

/* Completes a step's gradients: starts every bucket not started during backward (a parameter
 * that got no gradient on this rank in this pass contributes zeros), waits for all the
 * all-reduces (aborting the job past the timeout, as described above), and replaces each
 * parameter's gradient with the average over the ranks. A parameter with no gradient on this
 * rank but a non-zero average (another rank had one) gets the average through a one-element
 * backward pass (sum(p * average): the C API has no direct .grad setter), so all ranks stay
 * identical; one with no gradient anywhere stays without one. Then the step counter advances and
 * the layer is ready for the next backward.
 * Call it once after every synchronised ag_backward and before the optimizer step. A second
 * backward before it fails: the hook of a parameter already sent refuses, so ag_backward returns
 * AG_ERR_CALLBACK naming ag_ddp_finish_gradients (to accumulate over micro-batches, turn
 * synchronisation off for all but the last: ag_ddp_set_sync).
 * Errors: AG_ERR_ARGUMENT (d NULL), AG_ERR_STATE (synchronisation is off), AG_ERR_INVALID_HANDLE
 * (a parameter freed meanwhile), AG_ERR_OUT_OF_MEMORY. */
ag_status ag_ddp_finish_gradients(ag_ddp *d);

/* Gradient accumulation over micro-batches (PyTorch's no_sync): with enabled = 0, the hooks do
 * nothing and each ag_backward only adds into the parameters' local .grad; turn it back on
 * (enabled = 1) before the backward of the last micro-batch, whose hooks then send the whole
 * accumulated gradients, and call ag_ddp_finish_gradients after it as usual. On by default.
 * Not collective, but every rank must follow the same pattern (the collectives must match).
 * Errors: AG_ERR_ARGUMENT (d NULL), AG_ERR_STATE (a synchronised backward is waiting for
 * ag_ddp_finish_gradients). */
ag_status ag_ddp_set_sync(ag_ddp *d, int enabled);

/* Removes the hooks, restores the previous SIGTERM handling when the last context goes, frees
 * the buffers and the duplicated communicator. Not collective with the other ranks' frees, but
 * MPI_Comm_free is collective in MPI's sense: call it on every rank. NULL is a no-op.
 * Errors: AG_ERR_INVALID_HANDLE if a parameter handle was freed before (everything else is still
 * released; the hook on a tensor still alive elsewhere is made inert). */
ag_status ag_ddp_free(ag_ddp *d);

/* This rank, the number of ranks, the number of buckets. Errors: AG_ERR_ARGUMENT (NULL). */
ag_status ag_ddp_rank(int *out, const ag_ddp *d);
ag_status ag_ddp_world_size(int *out, const ag_ddp *d);
ag_status ag_ddp_num_buckets(int64_t *out, const ag_ddp *d);

/* What the last completed step (the last ag_ddp_finish_gradients) cost this rank. All times in
 * seconds of wall clock (CLOCK_MONOTONIC). "Backward's end" is the moment ag_ddp_finish_gradients
 * was entered (call it right after ag_backward). */
typedef struct {
    int64_t step;               /* 1 for the first step, ... (0: none completed yet) */
    int64_t buckets;            /* number of buckets */
    int64_t bytes;              /* gradient bytes all-reduced by this rank */
    double hook_seconds;        /* time inside the hooks (copies and MPI calls), added to backward */
    double mpi_seconds;         /* time inside MPI calls (in hooks and in finish, waits included) */
    double wait_seconds;        /* time finish spent waiting for all-reduces: the exposed part */
    double finish_seconds;      /* all of ag_ddp_finish_gradients (waits, averaging, write-back) */
    double comm_seconds;        /* summed over buckets: from start to observed completion */
    double overlapped_seconds;  /* the part of comm_seconds before backward's end */
    int64_t buckets_done_in_backward; /* buckets whose completion was observed before backward's end */
} ag_ddp_step_stats;

/* Writes the last completed step's statistics. Errors: AG_ERR_ARGUMENT (NULL). */
ag_status ag_ddp_last_step_stats(ag_ddp_step_stats *out, const ag_ddp *d);

/* One bucket of the last completed step; times relative to backward's end (negative: before). */
typedef struct {
    int64_t params;            /* parameters in the bucket */
    int64_t bytes;             /* its size */
    int64_t first_param;       /* index (into params) of its first parameter, the highest index */
    double started_at;         /* when its all-reduce started */
    double completed_at;       /* when its completion was observed (MPI_Test or the wait) */
} ag_ddp_bucket_stats;

/* Writes the statistics of min(capacity, buckets) buckets, in bucket order (bucket 0 holds the
 * last parameters), and the bucket count to *count (may be NULL).
 * Errors: AG_ERR_ARGUMENT (out NULL with capacity > 0, d NULL, capacity < 0). */
ag_status ag_ddp_last_bucket_stats(ag_ddp_bucket_stats *out, int64_t capacity, int64_t *count, const ag_ddp *d);

#ifdef __cplusplus
}
#endif

#endif /* AUTOGRAD_DDP_H */
