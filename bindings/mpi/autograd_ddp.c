/*
 * autograd_ddp.c - data-parallel training for libautograd over MPI (see autograd_ddp.h).
 *
 * State of one step. Each parameter has a slot in its bucket's flat buffer and a `filled` flag;
 * each bucket counts the parameters still missing. Buckets are started strictly in bucket order
 * (0, 1, 2, ...) on every rank, whatever order they fill in: MPI matches non-blocking
 * collectives on a communicator by the order they are started, so a rank where some parameter got
 * no gradient (its bucket started only in finish) still starts the same collectives in the same
 * order as the others. A started bucket's buffer is not touched until its request completes;
 * finish resets every flag and counter for the next step.
 */
#define _POSIX_C_SOURCE 199309L

#include "autograd_ddp.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BUCKET_IDLE, BUCKET_IN_FLIGHT, BUCKET_DONE };

/* What a hook knows: its context (NULL once the context is gone) and its parameter. Allocated
 * per hook and released by the hook's destroy callback, so that a hook the library still holds
 * never points at freed memory. */
typedef struct {
    ag_ddp *d;
    int64_t index;
} hook_ctx;

typedef struct {
    ag_tensor t;
    int64_t numel;
    int64_t bucket;
    int64_t offset; /* in elements, within the bucket's buffer */
    int64_t hook_id;
    hook_ctx *ctx;
    int filled; /* its gradient is in the bucket this step */
} ddp_param;

typedef struct {
    int64_t first_param; /* the bucket holds params first_param, first_param - 1, ... */
    int64_t nparams;
    int64_t numel;
    void *buf;    /* numel elements: the gradients, then (in place) their sum */
    void *gather; /* rank_order only: size * numel elements, every rank's buf */
    MPI_Request req;
    int state;
    int64_t missing; /* parameters not yet filled this step */
    double t_start, t_done;
} ddp_bucket;

struct ag_ddp {
    MPI_Comm comm;
    int rank, size;
    ag_dtype dtype;
    size_t esize;
    MPI_Datatype mpi_type;
    int64_t n;
    ddp_param *params;
    int64_t nbuckets;
    ddp_bucket *buckets;
    int64_t next_start; /* the next bucket to start (buckets start in order) */
    int overlap, rank_order;
    double timeout;
    int64_t step; /* the step in progress, from 1 */
    int writing_back;
    int no_sync; /* ag_ddp_set_sync(d, 0): hooks leave the gradients to accumulate locally */
    int owns_signal;
    /* this step's running totals */
    double hook_s, mpi_s;
    /* the last completed step */
    ag_ddp_step_stats last;
    ag_ddp_bucket_stats *last_buckets;
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ag_status fail(ag_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static ag_status fail(ag_status status, const char *fmt, ...) {
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    ag_set_error(message);
    return status;
}

/* ---- ending the job ---- */

static void describe_step(char *out, size_t cap, const ag_ddp *d) {
    if (d->step == 0)
        snprintf(out, cap, "during setup (ag_ddp_new)");
    else
        snprintf(out, cap, "at step %lld", (long long)d->step);
}

static void describe_bucket(char *out, size_t cap, int64_t bucket) {
    if (bucket < 0)
        out[0] = '\0';
    else
        snprintf(out, cap, " of bucket %lld", (long long)bucket);
}

/* An MPI call failed: say where, and end the whole job. */
static void die_mpi(ag_ddp *d, int rc, const char *what, int64_t bucket) {
    char reason[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    MPI_Error_string(rc, reason, &len);
    char when[64], which[48];
    describe_step(when, sizeof when, d);
    describe_bucket(which, sizeof which, bucket);
    fprintf(stderr,
            "ddp: rank %d: the %s%s %s failed: %s (another rank has probably failed or exited); aborting the job\n",
            d->rank, what, which, when, reason);
    fflush(stderr);
    MPI_Abort(d->comm, 1);
    _exit(1);
}

static void check_mpi(ag_ddp *d, int rc, const char *what, int64_t bucket) {
    if (rc != MPI_SUCCESS) die_mpi(d, rc, what, bucket);
}

/* Tests one request. Returns non-zero when it has completed. */
static int test_request(ag_ddp *d, MPI_Request *req, const char *what, int64_t bucket) {
    int flag = 0;
    check_mpi(d, MPI_Test(req, &flag, MPI_STATUS_IGNORE), what, bucket);
    return flag;
}

/* Waits for one request with the deadline, and returns the completion time. It polls MPI_Test:
 * spinning for the first SPIN_SECONDS (a shared-memory all-reduce needs both ranks inside MPI
 * calls for each of its rounds, so a sleeping poller slows every round), then sleeping 100 us
 * between tests so that a long wait leaves the CPU to others. The whole wait counts as MPI time. */
static double wait_request(ag_ddp *d, MPI_Request *req, const char *what, int64_t bucket) {
    const double SPIN_SECONDS = 0.01;
    const struct timespec pause = {0, 100000};
    double start = now_seconds();
    for (;;) {
        int done = test_request(d, req, what, bucket);
        double t = now_seconds();
        if (done) {
            d->mpi_s += t - start;
            return t;
        }
        if (t - start > d->timeout) {
            char when[64], which[48];
            describe_step(when, sizeof when, d);
            describe_bucket(which, sizeof which, bucket);
            fprintf(stderr,
                    "ddp: rank %d: the %s%s %s did not complete within %g s: another rank has failed, exited or "
                    "hung; aborting the job\n",
                    d->rank, what, which, when, d->timeout);
            fflush(stderr);
            MPI_Abort(d->comm, 1);
            _exit(1);
        }
        if (t - start > SPIN_SECONDS) nanosleep(&pause, NULL);
    }
}

/* ---- the SIGTERM handler ---- */

static char term_message[128];
static size_t term_length;
static int signal_users;
static struct sigaction previous_term_action;

static void on_sigterm(int signo) {
    (void)signo;
    ssize_t ignored = write(STDERR_FILENO, term_message, term_length);
    (void)ignored;
    _exit(1);
}

static void install_signal_handler(ag_ddp *d) {
    if (signal_users++ > 0) {
        d->owns_signal = 1;
        return;
    }
    int len = snprintf(term_message, sizeof term_message,
                       "ddp: rank %d: terminated by the MPI launcher (another rank failed or exited early)\n", d->rank);
    term_length = len < 0 ? 0 : (size_t)len < sizeof term_message ? (size_t)len : sizeof term_message - 1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigterm;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, &previous_term_action);
    d->owns_signal = 1;
}

static void release_signal_handler(ag_ddp *d) {
    if (!d->owns_signal) return;
    d->owns_signal = 0;
    if (--signal_users == 0) sigaction(SIGTERM, &previous_term_action, NULL);
}

/* ---- buckets ---- */

/* Starts bucket b's collective (its buffer is complete). */
static void start_bucket(ag_ddp *d, int64_t b) {
    ddp_bucket *k = &d->buckets[b];
    double t0 = now_seconds();
    int count = (int)k->numel, rc;
    if (d->rank_order)
        rc = MPI_Iallgather(k->buf, count, d->mpi_type, k->gather, count, d->mpi_type, d->comm, &k->req);
    else
        rc = MPI_Iallreduce(MPI_IN_PLACE, k->buf, count, d->mpi_type, MPI_SUM, d->comm, &k->req);
    double t1 = now_seconds();
    d->mpi_s += t1 - t0;
    check_mpi(d, rc, d->rank_order ? "all-gather" : "all-reduce", b);
    k->t_start = t0;
    k->state = BUCKET_IN_FLIGHT;
}

/* Starts, in order, every bucket whose turn it is and that is complete. */
static void start_ready_buckets(ag_ddp *d) {
    while (d->next_start < d->nbuckets && d->buckets[d->next_start].missing == 0) start_bucket(d, d->next_start++);
}

/* Drives the collectives in flight (Open MPI progresses them only inside MPI calls). */
static void progress(ag_ddp *d) {
    double t0 = now_seconds();
    for (int64_t b = 0; b < d->next_start; b++) {
        ddp_bucket *k = &d->buckets[b];
        if (k->state == BUCKET_IN_FLIGHT &&
            test_request(d, &k->req, d->rank_order ? "all-gather" : "all-reduce", b)) {
            k->t_done = now_seconds();
            k->state = BUCKET_DONE;
        }
    }
    d->mpi_s += now_seconds() - t0;
}

/* The gradient-ready hook: the parameter's gradient goes into its slot; complete buckets start. */
static int32_t grad_ready(ag_tensor t, void *user_data) {
    hook_ctx *ctx = user_data;
    ag_ddp *d = ctx->d;
    if (d == NULL || d->writing_back || d->no_sync) return 0;
    double t0 = now_seconds();
    ddp_param *p = &d->params[ctx->index];
    ddp_bucket *k = &d->buckets[p->bucket];
    if (p->filled) {
        ag_set_error("ddp: a parameter received a second gradient before ag_ddp_finish_gradients (call it after "
                     "every ag_backward; accumulating gradients over several backward passes is not supported)");
        return 1;
    }
    ag_tensor g = AG_NULL_TENSOR;
    if (ag_tensor_grad(&g, t) != AG_OK) return 1;
    if (g == AG_NULL_TENSOR) return 0; /* nothing accumulated: treated as no gradient */
    ag_status s = ag_tensor_copy_data((char *)k->buf + (size_t)p->offset * d->esize, p->numel, d->dtype, g);
    ag_tensor_free(g);
    if (s != AG_OK) return 1;
    p->filled = 1;
    k->missing--;
    if (d->overlap) start_ready_buckets(d);
    progress(d);
    d->hook_s += now_seconds() - t0;
    return 0;
}

/* ---- setup ---- */

static uint64_t fnv(uint64_t h, int64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((uint64_t)v >> (8 * i) & 0xff)) * 0x100000001b3ULL;
    return h;
}

/* Checks one rank's arguments; on success writes the dtype and a fingerprint of the layout. */
static ag_status check_params(ag_dtype *dtype, uint64_t *fingerprint, const ag_tensor *params, int64_t n,
                              int64_t bucket_bytes, int rank_order) {
    if (params == NULL || n < 1) return fail(AG_ERR_ARGUMENT, "ag_ddp_new: params is NULL or n < 1");
    uint64_t h = fnv(fnv(fnv(0xcbf29ce484222325ULL, n), bucket_bytes), rank_order);
    for (int64_t i = 0; i < n; i++) {
        ag_dtype dt;
        bool rg;
        int64_t shape[AG_MAX_NDIM], ndim;
        if (ag_tensor_dtype(&dt, params[i]) != AG_OK || ag_tensor_requires_grad(&rg, params[i]) != AG_OK ||
            ag_tensor_ndim(&ndim, params[i]) != AG_OK || ag_tensor_shape(shape, AG_MAX_NDIM, params[i]) != AG_OK)
            return fail(AG_ERR_INVALID_HANDLE, "ag_ddp_new: params[%lld] is not a live tensor handle", (long long)i);
        if (dt != AG_FLOAT32 && dt != AG_FLOAT64)
            return fail(AG_ERR_DTYPE, "ag_ddp_new: params[%lld] is neither float32 nor float64", (long long)i);
        if (i > 0 && dt != *dtype)
            return fail(AG_ERR_DTYPE, "ag_ddp_new: params[%lld] has another dtype than params[0] (one dtype for all)",
                        (long long)i);
        if (!rg) return fail(AG_ERR_ARGUMENT, "ag_ddp_new: params[%lld] does not require grad", (long long)i);
        *dtype = dt;
        h = fnv(fnv(h, dt), ndim);
        for (int64_t j = 0; j < ndim; j++) h = fnv(h, shape[j]);
    }
    *fingerprint = h;
    return AG_OK;
}

static void free_buffers(ag_ddp *d) {
    if (d->buckets != NULL)
        for (int64_t b = 0; b < d->nbuckets; b++) {
            free(d->buckets[b].buf);
            free(d->buckets[b].gather);
        }
    free(d->buckets);
    free(d->params);
    free(d->last_buckets);
}

/* Broadcasts rank 0's parameter values to every rank. */
static ag_status broadcast_values(ag_ddp *d, int64_t total) {
    char *flat = malloc((size_t)total * d->esize + 1);
    if (flat == NULL) return fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: no memory for the broadcast buffer");
    int64_t off = 0;
    for (int64_t i = 0; i < d->n; i++) {
        if (ag_tensor_copy_data(flat + (size_t)off * d->esize, d->params[i].numel, d->dtype, d->params[i].t) != AG_OK) {
            free(flat);
            return AG_ERR_INVALID_HANDLE;
        }
        off += d->params[i].numel;
    }
    /* One message per 2^30 elements at most (MPI counts are int). */
    const int64_t chunk = (int64_t)1 << 30;
    for (int64_t first = 0; first < total; first += chunk) {
        int count = (int)(total - first < chunk ? total - first : chunk);
        MPI_Request req;
        check_mpi(d, MPI_Ibcast(flat + (size_t)first * d->esize, count, d->mpi_type, 0, d->comm, &req),
                  "broadcast of the initial parameters", -1);
        wait_request(d, &req, "broadcast of the initial parameters", -1);
    }
    ag_status s = AG_OK;
    if (d->rank != 0) {
        bool previous;
        ag_set_grad_enabled(&previous, false);
        off = 0;
        for (int64_t i = 0; i < d->n && s == AG_OK; i++) {
            s = ag_tensor_set_data(d->params[i].t, flat + (size_t)off * d->esize, d->params[i].numel, d->dtype);
            off += d->params[i].numel;
        }
        ag_set_grad_enabled(NULL, previous);
    }
    free(flat);
    return s;
}

ag_status ag_ddp_new(ag_ddp **out, MPI_Comm comm, const ag_tensor *params, int64_t n, int64_t bucket_bytes,
                     const ag_ddp_options *opts) {
    if (out == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_new: out is NULL");
    if (comm == MPI_COMM_NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_new: comm is MPI_COMM_NULL");
    ag_ddp_options o;
    memset(&o, 0, sizeof o);
    if (opts != NULL) o = *opts;
    if (bucket_bytes <= 0) bucket_bytes = (int64_t)25 << 20;
    double timeout = o.timeout_seconds;
    if (!(timeout > 0)) {
        const char *env = getenv("AG_DDP_TIMEOUT");
        timeout = env != NULL ? strtod(env, NULL) : 0;
        if (!(timeout > 0)) timeout = 60;
    }

    ag_ddp *d = calloc(1, sizeof *d);
    if (d == NULL) return fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: out of memory");
    d->timeout = timeout;
    d->overlap = !o.no_overlap;
    d->rank_order = o.rank_order != 0;
    int rc = MPI_Comm_dup(comm, &d->comm);
    if (rc != MPI_SUCCESS) {
        free(d);
        return fail(AG_ERR_ARGUMENT, "ag_ddp_new: MPI_Comm_dup failed (is MPI initialised?)");
    }
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);

    /* Every rank checks its own arguments, then all compare: the same status everywhere. */
    uint64_t h = 0;
    ag_status local = check_params(&d->dtype, &h, params, n, bucket_bytes, d->rank_order);
    unsigned long long mine[3] = {h, ~h, local != AG_OK}, all[3];
    MPI_Request req;
    check_mpi(d, MPI_Iallreduce(mine, all, 3, MPI_UNSIGNED_LONG_LONG, MPI_MAX, d->comm, &req),
              "check of the parameter layout", -1);
    wait_request(d, &req, "check of the parameter layout", -1);
    ag_status status = local;
    if (status == AG_OK && all[2] != 0)
        status = fail(AG_ERR_ARGUMENT, "ag_ddp_new: another rank rejected its arguments (see its error)");
    else if (status == AG_OK && (all[0] != mine[0] || all[1] != mine[1]))
        status = fail(AG_ERR_ARGUMENT,
                      "ag_ddp_new: the ranks disagree on the parameters (count, dtypes, shapes), bucket_bytes or "
                      "rank_order");
    if (status != AG_OK) {
        MPI_Comm_free(&d->comm);
        free(d);
        return status;
    }
    d->esize = d->dtype == AG_FLOAT64 ? sizeof(double) : sizeof(float);
    d->mpi_type = d->dtype == AG_FLOAT64 ? MPI_DOUBLE : MPI_FLOAT;
    d->n = n;
    d->params = calloc((size_t)n, sizeof *d->params);
    d->buckets = calloc((size_t)n, sizeof *d->buckets); /* at most one bucket per parameter */
    if (d->params == NULL || d->buckets == NULL) {
        status = fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: out of memory");
        goto failed;
    }

    /* Buckets in reverse parameter order. */
    int64_t total = 0;
    for (int64_t i = n - 1; i >= 0; i--) {
        ddp_param *p = &d->params[i];
        p->t = params[i];
        ag_tensor_numel(&p->numel, p->t);
        total += p->numel;
        ddp_bucket *k = d->nbuckets > 0 ? &d->buckets[d->nbuckets - 1] : NULL;
        if (k == NULL || (k->numel > 0 && (k->numel + p->numel) * (int64_t)d->esize > bucket_bytes)) {
            k = &d->buckets[d->nbuckets++];
            k->first_param = i;
        }
        p->bucket = k - d->buckets;
        p->offset = k->numel;
        k->nparams++;
        k->numel += p->numel;
    }
    for (int64_t b = 0; b < d->nbuckets; b++) {
        ddp_bucket *k = &d->buckets[b];
        if (k->numel > INT32_MAX) {
            status = fail(AG_ERR_ARGUMENT, "ag_ddp_new: bucket %lld holds more than 2^31-1 elements", (long long)b);
            goto failed;
        }
        k->buf = calloc((size_t)k->numel + 1, d->esize);
        if (d->rank_order) k->gather = calloc((size_t)k->numel * (size_t)d->size + 1, d->esize);
        if (k->buf == NULL || (d->rank_order && k->gather == NULL)) {
            status = fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: no memory for the bucket buffers");
            goto failed;
        }
        k->missing = k->nparams;
        k->req = MPI_REQUEST_NULL;
    }
    d->last_buckets = calloc((size_t)d->nbuckets, sizeof *d->last_buckets);
    if (d->last_buckets == NULL) {
        status = fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: out of memory");
        goto failed;
    }

    status = broadcast_values(d, total);
    if (status != AG_OK) goto failed;

    for (int64_t i = 0; i < n; i++) {
        ddp_param *p = &d->params[i];
        p->ctx = malloc(sizeof *p->ctx);
        if (p->ctx == NULL) {
            status = fail(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: out of memory");
            goto failed;
        }
        p->ctx->d = d;
        p->ctx->index = i;
        status = ag_tensor_register_post_accumulate_grad_hook(&p->hook_id, p->t, grad_ready, p->ctx, free);
        if (status != AG_OK) {
            free(p->ctx); /* the caller keeps user_data on failure */
            p->ctx = NULL;
            goto failed;
        }
    }
    d->step = 1;
    d->mpi_s = 0; /* the setup's collectives are not a step's */
    if (!o.no_signal_handler) install_signal_handler(d);
    *out = d;
    return AG_OK;

failed:
    for (int64_t i = 0; d->params != NULL && i < n; i++)
        if (d->params[i].ctx != NULL) ag_tensor_remove_hook(d->params[i].t, d->params[i].hook_id);
    free_buffers(d);
    MPI_Comm_free(&d->comm);
    free(d);
    return status;
}

/* ---- each step ---- */

/* Sums the gathered buckets in rank order into buf (see the header). */
static void sum_in_rank_order(ag_ddp *d, ddp_bucket *k) {
    int64_t m = k->numel;
    if (d->dtype == AG_FLOAT64) {
        const double *g = k->gather;
        double *s = k->buf;
        for (int64_t i = 0; i < m; i++) {
            double acc = g[i];
            for (int r = 1; r < d->size; r++) acc += g[(int64_t)r * m + i];
            s[i] = acc;
        }
    } else {
        const float *g = k->gather;
        float *s = k->buf;
        for (int64_t i = 0; i < m; i++) {
            float acc = g[i];
            for (int r = 1; r < d->size; r++) acc += g[(int64_t)r * m + i];
            s[i] = acc;
        }
    }
}

static void divide(ag_ddp *d, void *buf, int64_t m) {
    if (d->size == 1) return;
    if (d->dtype == AG_FLOAT64) {
        double *s = buf, p = (double)d->size;
        for (int64_t i = 0; i < m; i++) s[i] /= p;
    } else {
        float *s = buf, p = (float)d->size;
        for (int64_t i = 0; i < m; i++) s[i] /= p;
    }
}

static int all_zero(const ag_ddp *d, const void *buf, int64_t m) {
    for (int64_t i = 0; i < m; i++) {
        double v = d->dtype == AG_FLOAT64 ? ((const double *)buf)[i] : (double)((const float *)buf)[i];
        if (v != 0) return 0;
    }
    return 1;
}

/* Gives parameter p (which has no gradient here) the gradient `avg` by a backward pass of
 * sum(p * avg), whose gradient with respect to p is avg exactly. */
static ag_status give_gradient(ag_ddp *d, ddp_param *p, const void *avg) {
    int64_t shape[AG_MAX_NDIM], ndim;
    ag_status s = ag_tensor_ndim(&ndim, p->t);
    if (s == AG_OK) s = ag_tensor_shape(shape, AG_MAX_NDIM, p->t);
    if (s != AG_OK) return s;
    bool previous;
    ag_set_grad_enabled(&previous, true);
    ag_tensor c = AG_NULL_TENSOR, prod = AG_NULL_TENSOR, total = AG_NULL_TENSOR;
    s = ag_tensor_from_data(&c, avg, shape, ndim, d->dtype);
    if (s == AG_OK) s = ag_mul(&prod, p->t, c);
    if (s == AG_OK) s = ag_sum(&total, prod, NULL, 0, false);
    d->writing_back = 1;
    if (s == AG_OK) s = ag_backward(total, AG_NULL_TENSOR, false, false);
    d->writing_back = 0;
    ag_tensor_free(total);
    ag_tensor_free(prod);
    ag_tensor_free(c);
    ag_set_grad_enabled(NULL, previous);
    return s;
}

ag_status ag_ddp_set_sync(ag_ddp *d, int enabled) {
    if (d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_set_sync: d is NULL");
    for (int64_t i = 0; i < d->n; i++)
        if (d->params[i].filled)
            return fail(AG_ERR_STATE, "ag_ddp_set_sync: a synchronised backward is waiting for ag_ddp_finish_gradients "
                                      "(call it first)");
    d->no_sync = !enabled;
    return AG_OK;
}

ag_status ag_ddp_finish_gradients(ag_ddp *d) {
    if (d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_finish_gradients: d is NULL");
    if (d->no_sync)
        return fail(AG_ERR_STATE, "ag_ddp_finish_gradients: synchronisation is off (ag_ddp_set_sync(d, 0)): turn it "
                                  "on before the backward of the last micro-batch, then call this");
    double t_end = now_seconds(); /* backward's end */
    const char *what = d->rank_order ? "all-gather" : "all-reduce";
    /* Start the rest, in order; missing gradients are zeros. */
    for (int64_t b = d->next_start; b < d->nbuckets; b++) {
        ddp_bucket *k = &d->buckets[b];
        if (k->missing > 0)
            for (int64_t i = k->first_param; i > k->first_param - k->nparams; i--)
                if (!d->params[i].filled)
                    memset((char *)k->buf + (size_t)d->params[i].offset * d->esize, 0,
                           (size_t)d->params[i].numel * d->esize);
        k->missing = 0;
    }
    start_ready_buckets(d);
    double wait_start = now_seconds();
    for (int64_t b = 0; b < d->nbuckets; b++) {
        ddp_bucket *k = &d->buckets[b];
        if (k->state == BUCKET_IN_FLIGHT) {
            k->t_done = wait_request(d, &k->req, what, b);
            k->state = BUCKET_DONE;
        }
    }
    double wait_s = now_seconds() - wait_start;

    /* Average and write back. */
    ag_status status = AG_OK;
    for (int64_t b = 0; b < d->nbuckets; b++) {
        ddp_bucket *k = &d->buckets[b];
        if (d->rank_order) sum_in_rank_order(d, k);
        divide(d, k->buf, k->numel);
        for (int64_t i = k->first_param; i > k->first_param - k->nparams && status == AG_OK; i--) {
            ddp_param *p = &d->params[i];
            const void *avg = (const char *)k->buf + (size_t)p->offset * d->esize;
            ag_tensor g = AG_NULL_TENSOR;
            status = ag_tensor_grad(&g, p->t);
            if (status != AG_OK) break;
            if (g != AG_NULL_TENSOR) {
                status = ag_tensor_set_data(g, avg, p->numel, d->dtype);
                ag_tensor_free(g);
            } else if (!all_zero(d, avg, p->numel)) {
                status = give_gradient(d, p, avg);
            }
        }
    }

    /* Statistics, then reset for the next step. */
    ag_ddp_step_stats *st = &d->last;
    memset(st, 0, sizeof *st);
    st->step = d->step;
    st->buckets = d->nbuckets;
    st->hook_seconds = d->hook_s;
    st->mpi_seconds = d->mpi_s;
    st->wait_seconds = wait_s;
    for (int64_t b = 0; b < d->nbuckets; b++) {
        ddp_bucket *k = &d->buckets[b];
        ag_ddp_bucket_stats *bs = &d->last_buckets[b];
        bs->params = k->nparams;
        bs->bytes = k->numel * (int64_t)d->esize;
        bs->first_param = k->first_param;
        bs->started_at = k->t_start - t_end;
        bs->completed_at = k->t_done - t_end;
        st->bytes += bs->bytes;
        st->comm_seconds += k->t_done - k->t_start;
        double before_end = (k->t_done < t_end ? k->t_done : t_end) - k->t_start;
        if (before_end > 0) st->overlapped_seconds += before_end;
        if (k->t_done < t_end) st->buckets_done_in_backward++;
        k->state = BUCKET_IDLE;
        k->missing = k->nparams;
        k->req = MPI_REQUEST_NULL;
    }
    for (int64_t i = 0; i < d->n; i++) d->params[i].filled = 0;
    d->next_start = 0;
    d->hook_s = 0;
    d->mpi_s = 0;
    d->step++;
    st->finish_seconds = now_seconds() - t_end;
    return status;
}

/* ---- the rest ---- */

ag_status ag_ddp_free(ag_ddp *d) {
    if (d == NULL) return AG_OK;
    /* Never free a buffer under a collective in flight. */
    for (int64_t b = 0; b < d->nbuckets; b++)
        if (d->buckets[b].state == BUCKET_IN_FLIGHT)
            wait_request(d, &d->buckets[b].req, d->rank_order ? "all-gather" : "all-reduce", b);
    ag_status status = AG_OK;
    for (int64_t i = 0; i < d->n; i++) {
        ddp_param *p = &d->params[i];
        if (p->ctx == NULL) continue;
        if (ag_tensor_remove_hook(p->t, p->hook_id) != AG_OK) {
            /* The handle is gone; the tensor may live on elsewhere with the hook: make it inert
             * (the library frees the ctx when it drops the hook). */
            p->ctx->d = NULL;
            status = fail(AG_ERR_INVALID_HANDLE,
                          "ag_ddp_free: params[%lld] was freed before the ddp context (free the context first)",
                          (long long)i);
        }
    }
    release_signal_handler(d);
    free_buffers(d);
    MPI_Comm_free(&d->comm);
    free(d);
    return status;
}

ag_status ag_ddp_rank(int *out, const ag_ddp *d) {
    if (out == NULL || d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_rank: out or d is NULL");
    *out = d->rank;
    return AG_OK;
}

ag_status ag_ddp_world_size(int *out, const ag_ddp *d) {
    if (out == NULL || d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_world_size: out or d is NULL");
    *out = d->size;
    return AG_OK;
}

ag_status ag_ddp_num_buckets(int64_t *out, const ag_ddp *d) {
    if (out == NULL || d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_num_buckets: out or d is NULL");
    *out = d->nbuckets;
    return AG_OK;
}

ag_status ag_ddp_last_step_stats(ag_ddp_step_stats *out, const ag_ddp *d) {
    if (out == NULL || d == NULL) return fail(AG_ERR_ARGUMENT, "ag_ddp_last_step_stats: out or d is NULL");
    *out = d->last;
    return AG_OK;
}

ag_status ag_ddp_last_bucket_stats(ag_ddp_bucket_stats *out, int64_t capacity, int64_t *count, const ag_ddp *d) {
    if (d == NULL || capacity < 0 || (out == NULL && capacity > 0))
        return fail(AG_ERR_ARGUMENT, "ag_ddp_last_bucket_stats: d NULL, capacity < 0, or out NULL");
    int64_t m = capacity < d->nbuckets ? capacity : d->nbuckets;
    for (int64_t b = 0; b < m; b++) out[b] = d->last_buckets[b];
    if (count != NULL) *count = d->nbuckets;
    return AG_OK;
}
