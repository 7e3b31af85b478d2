/*
 * test_threads.c - Autograd's C interface (include/autograd.h) used from several threads at once.
 *
 *   (a) independent graphs: 8 pthreads each build, for THREAD_SECONDS seconds (default 10; the
 *       environment variable overrides it, e.g. THREAD_SECONDS=3), seeded random MLP-like graphs
 *       of their own (matmul/linear, broadcasting adds and multiplies, tanh/sigmoid/gelu/...,
 *       sum/mean/var/max/logsumexp/softmax/cross-entropy/mse reductions, float32 and float64),
 *       run ag_backward, and compare the loss and every leaf gradient BIT FOR BIT with the values
 *       the same seed gave single-threaded before the threads started;
 *   (b) per-thread state: grad mode switched off on one thread while the others keep it on,
 *       verified concurrently between barriers (ag_is_grad_enabled, whether results record a
 *       graph, whether backward is refused), a new thread starting with grad mode on, and
 *       ag_last_error() keeping each thread's own message while the others fail too;
 *   (c) shared tensors, which the library supports and serialises with its graph lock:
 *       (c1) several threads run forward ops on the SAME leaves, and on one shared non-leaf
 *            result, and backward (retain_graph) accumulates into the same leaves' .grad, while
 *            reader threads take ag_tensor_grad snapshots and a leaf hook counts its calls
 *            with a plain (non-atomic) counter. Afterwards every .grad equals the sum of the
 *            per-thread contributions computed single-threaded beforehand (float64, up to
 *            rounding order), a counter leaf's gradient is exactly the number of backward
 *            passes, snapshots never change and never go backwards, and concurrent ag_grad
 *            calls give bit-identical results;
 *       (c2) an SGD optimizer steps a parameter on one thread while other threads run backward
 *            (through graphs recorded before the steps began) into that parameter's .grad and
 *            read it with ag_tensor_grad; the accumulated gradient is checked as in (c1). Two
 *            more threads step one Adam optimizer at once: the result is bit-identical to the
 *            same number of steps on one thread.
 *       (c3) a handle freed (and its slot reused) on one thread while other threads pass it to
 *            ag_sum / ag_tensor_numel: each call either works or is refused with
 *            AG_ERR_INVALID_HANDLE, never anything else.
 *       (c4) two threads call ag_backward on the same graph without retain_graph: one succeeds,
 *            the other is refused with AG_ERR_STATE, and the leaf's gradient counts one pass.
 *   Outside the library's contract (found by this test; not run by default): the graph lock does
 *   not cover reads of a tensor's VALUES (forward operations, ag_tensor_copy_data, ag_tensor_item,
 *   ag_tensor_data_ptr), of requires_grad (every operation), or the optimizer's learning rate
 *   (ag_optimizer_set_lr / ag_optimizer_lr). So an optimizer step updating a parameter in place
 *   while another thread reads its values, ag_tensor_set_requires_grad while another thread
 *   uses the tensor, and ag_optimizer_set_lr while another thread steps are data races.
 *   THREAD_UNSAFE_PROBE=values (SGD steps against ag_tensor_copy_data and ag_sum of a detached
 *   view: counts torn reads, a mix of values before and after a step), =requires_grad
 *   (ag_tensor_set_requires_grad against ag_mul_scalar), =lr (ag_optimizer_set_lr against
 *   ag_optimizer_step) or =1 (all three) runs them as (d), which checks only that nothing
 *   crashes, for ThreadSanitizer to report (scripts/sanitizers.sh does not run it).
 *
 * Environment: THREAD_SECONDS (part a; default 10), THREAD_SHARED_ITERS (backward passes per
 * worker in part c; default 300), THREAD_UNSAFE_PROBE=values|requires_grad|lr|1 (part d),
 * AG_TEST_VERBOSE=1 (prints the library version).
 * Output: one line per group, one line per failed check, a summary of iteration counts, and
 * finally exactly "N passed, M failed". ag_live_handle_count() must be 0 at the end.
 * Exit status 0 only if M is 0.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_threads
 *        bindings/c/test_threads.c -L .build/release -lautograd -Wl,-rpath,... -lm -lpthread
 */
#define _POSIX_C_SOURCE 200809L

#include "autograd.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ========================================================================================== */
/* Checks (thread-safe: atomic counters, one lock around printing)                            */
/* ========================================================================================== */

static atomic_int g_passed, g_failed;
static bool g_verbose;
static pthread_mutex_t g_print = PTHREAD_MUTEX_INITIALIZER;

#define HERE __FILE__, __LINE__

__attribute__((format(printf, 4, 5))) static bool check_at(bool ok, const char *file, int line,
                                                          const char *fmt, ...) {
    if (ok) {
        atomic_fetch_add(&g_passed, 1);
        return true;
    }
    atomic_fetch_add(&g_failed, 1);
    pthread_mutex_lock(&g_print);
    printf("  %s:%d: FAILED: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&g_print);
    return false;
}

#define CHECK(cond) check_at((cond), HERE, "%s", #cond)
#define CHECKF(cond, ...) check_at((cond), HERE, __VA_ARGS__)
#define CHECK_OK(expr)                                                                         \
    do {                                                                                       \
        ag_status st_ = (expr);                                                                \
        check_at(st_ == AG_OK, HERE, "%s returned %s: %s", #expr, ag_status_name(st_),         \
                 st_ == AG_OK ? "" : ag_last_error());                                         \
    } while (0)
#define CHECK_ERR(expr, code)                                                                  \
    do {                                                                                       \
        ag_status st_ = (expr);                                                                \
        check_at(st_ == (code), HERE, "%s returned %s, expected %s", #expr, ag_status_name(st_), \
                 ag_status_name(code));                                                        \
    } while (0)

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    pthread_mutex_lock(&g_print);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&g_print);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long env_long(const char *name, long fallback, long lo, long hi) {
    const char *s = getenv(name);
    if (!s || !*s) return fallback;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "test_threads: %s=%s is not an integer in %ld..%ld; using %ld\n", name, s, lo, hi,
                fallback);
        return fallback;
    }
    return v;
}

static int64_t live_handles(void) {
    int64_t n = -1;
    CHECK_OK(ag_live_handle_count(&n));
    return n;
}

static void must_create(pthread_t *th, void *(*fn)(void *), void *arg) {
    if (pthread_create(th, NULL, fn, arg) != 0) {
        fprintf(stderr, "test_threads: pthread_create failed\n");
        exit(2);
    }
}

/* ========================================================================================== */
/* (a) Seeded random graphs                                                                   */
/* ========================================================================================== */

/* splitmix64: the graph's structure and sizes come from this, its values from the library's
 * seeded generators. */
typedef struct {
    uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in lo..hi inclusive. */
static int rng_int(Rng *r, int lo, int hi) { return lo + (int)(rng_next(r) % (uint64_t)(hi - lo + 1)); }

/* Every handle one graph makes, freed together at the end. */
typedef struct {
    ag_tensor h[160];
    int n;
} Arena;

static void arena_free(Arena *a) {
    for (int i = 0; i < a->n; i++) ag_tensor_free(a->h[i]);
    a->n = 0;
}

/* The outcome of one graph: the loss and every leaf gradient, as raw bytes of their dtype. */
typedef struct {
    unsigned char *bytes;
    size_t nbytes;
    int nops;
    char err[320]; /* non-empty if a call failed */
} GraphResult;

static void result_free(GraphResult *r) {
    free(r->bytes);
    r->bytes = NULL;
    r->nbytes = 0;
}

/* Appends t's elements (in its own dtype) to r->bytes; false on failure. */
static bool append_values(GraphResult *r, ag_tensor t, ag_dtype dt) {
    int64_t n = 0;
    if (ag_tensor_numel(&n, t) != AG_OK) return false;
    size_t esz = dt == AG_FLOAT32 ? sizeof(float) : sizeof(double);
    unsigned char *grown = realloc(r->bytes, r->nbytes + (size_t)n * esz + 1);
    if (!grown) return false;
    r->bytes = grown;
    if (n > 0 && ag_tensor_copy_data(r->bytes + r->nbytes, n, dt, t) != AG_OK) return false;
    r->nbytes += (size_t)n * esz;
    return true;
}

#define OP(call)                                                                               \
    do {                                                                                       \
        ag_status st_ = (call);                                                                \
        if (st_ != AG_OK) {                                                                    \
            snprintf(res->err, sizeof res->err, "line %d: %s -> %s: %s", __LINE__, #call,      \
                     ag_status_name(st_), ag_last_error());                                    \
            goto done;                                                                         \
        }                                                                                      \
    } while (0)
/* var = fn(&var, args...), kept in the arena. */
#define MK(var, fn, ...)                                                                       \
    OP(fn(&var, __VA_ARGS__));                                                                 \
    ar.h[ar.n++] = var;                                                                        \
    res->nops++

/* Builds the graph of `seed`, runs backward, and records loss and gradients in *res. */
static void run_graph(uint64_t seed, GraphResult *res) {
    memset(res, 0, sizeof *res);
    Arena ar = {.n = 0};
    Rng r = {seed * 0x2545F4914F6CDD1DULL + 12345};
    ag_dtype dt = (rng_next(&r) & 1) ? AG_FLOAT32 : AG_FLOAT64;
    int64_t B = rng_int(&r, 1, 6), In = rng_int(&r, 1, 7), H = rng_int(&r, 1, 8), O = rng_int(&r, 2, 5);
    uint64_t vs = seed * 16;

    ag_tensor x, W1, b1, W2, b2, s;
    MK(x, ag_tensor_rand_normal, (int64_t[]){B, In}, 2, 0.0, 1.0, vs + 1, dt);
    MK(W1, ag_tensor_rand_uniform, (int64_t[]){H, In}, 2, -1.0, 1.0, vs + 2, dt);
    MK(b1, ag_tensor_rand_uniform, (int64_t[]){H}, 1, -0.5, 0.5, vs + 3, dt);
    MK(W2, ag_tensor_init, (int64_t[]){O, H}, 2, AG_INIT_XAVIER_UNIFORM, vs + 4, dt);
    MK(b2, ag_tensor_rand_uniform, (int64_t[]){O}, 1, -0.5, 0.5, vs + 5, dt);
    bool row_scale = rng_next(&r) & 1; /* s broadcasts along rows (B,1) or columns (1,O) */
    MK(s, ag_tensor_rand_uniform, (int64_t[]){row_scale ? B : 1, row_scale ? 1 : O}, 2, 0.5, 1.5, vs + 6, dt);
    ag_tensor leaves[] = {x, W1, b1, W2, b2, s};
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) OP(ag_tensor_set_requires_grad(leaves[i], true));

    /* layer 1 */
    ag_tensor z1, h;
    if (rng_next(&r) & 1) {
        MK(z1, ag_linear, x, W1, b1);
    } else {
        ag_tensor W1t, m;
        MK(W1t, ag_transpose, W1, 0, 1);
        MK(m, ag_matmul, x, W1t);
        MK(z1, ag_add, m, b1); /* (B,H) + (H) */
    }
    switch (rng_int(&r, 0, 5)) {
    case 0: MK(h, ag_tanh, z1); break;
    case 1: MK(h, ag_sigmoid, z1); break;
    case 2: MK(h, ag_gelu, z1); break;
    case 3: MK(h, ag_softplus, z1); break;
    case 4: MK(h, ag_leaky_relu, z1, 0.1); break;
    default: MK(h, ag_relu, z1); break;
    }
    if (H == In && (rng_next(&r) & 1)) {
        ag_tensor res_h;
        MK(res_h, ag_add, h, x);
        h = res_h;
    }
    /* layer 2 */
    ag_tensor z2;
    switch (rng_int(&r, 0, 2)) {
    case 0: MK(z2, ag_linear, h, W2, b2); break;
    case 1: {
        ag_tensor W2t, m;
        MK(W2t, ag_transpose, W2, 0, 1);
        MK(m, ag_matmul, h, W2t);
        MK(z2, ag_add, m, b2);
        break;
    }
    default: {
        ag_tensor W2t, m, b2row;
        MK(W2t, ag_permute, W2, (int64_t[]){1, 0}, 2);
        MK(m, ag_matmul, h, W2t);
        MK(b2row, ag_unsqueeze, b2, 0);
        MK(z2, ag_add, b2row, m); /* (1,O) + (B,O) */
        break;
    }
    }
    ag_tensor z;
    MK(z, ag_mul, z2, s);

    /* the loss: the sum of 2 or 3 terms */
    int nterms = rng_int(&r, 2, 3);
    ag_tensor loss = AG_NULL_TENSOR;
    for (int k = 0; k < nterms; k++) {
        ag_tensor term = AG_NULL_TENSOR, a, b, c;
        switch (rng_int(&r, 0, 9)) {
        case 0: MK(term, ag_sum, z, NULL, 0, false); break;
        case 1:
            MK(a, ag_pow_scalar, z, 2.0);
            MK(term, ag_mean, a, NULL, 0, false);
            break;
        case 2:
            MK(a, ag_logsumexp, z, (int64_t[]){1}, 1, false);
            MK(term, ag_mean, a, NULL, 0, false);
            break;
        case 3: {
            int64_t labels[6];
            for (int64_t i = 0; i < B; i++) labels[i] = rng_int(&r, 0, (int)O - 1);
            MK(term, ag_cross_entropy, z, labels, B);
            break;
        }
        case 4:
            MK(a, ag_var, z, (int64_t[]){0}, 1, 0, false);
            MK(term, ag_mean, a, NULL, 0, false);
            break;
        case 5:
            MK(a, ag_max, z, (int64_t[]){-1}, 1, false);
            MK(term, ag_sum, a, NULL, 0, false);
            break;
        case 6:
            MK(a, ag_softmax, z, 1);
            MK(b, ag_tensor_rand_uniform, (int64_t[]){B, O}, 2, 0.0, 1.0, vs + 7 + (uint64_t)k, dt);
            MK(c, ag_mul, a, b);
            MK(term, ag_sum, c, NULL, 0, false);
            break;
        case 7:
            MK(b, ag_tensor_rand_normal, (int64_t[]){B, O}, 2, 0.0, 1.0, vs + 7 + (uint64_t)k, dt);
            MK(term, ag_mse_loss, z, b);
            break;
        case 8: /* z / (1 + sum(|z|) over rows), broadcast (1,O) over (B,O) */
            MK(a, ag_abs, z);
            MK(b, ag_sum, a, (int64_t[]){0}, 1, true);
            MK(c, ag_add_scalar, b, 1.0);
            MK(a, ag_div, z, c);
            MK(term, ag_sum, a, NULL, 0, false);
            break;
        default:
            MK(a, ag_tanh, z);
            MK(b, ag_mul_scalar, a, 0.5);
            MK(c, ag_exp, b);
            MK(term, ag_mean, c, (int64_t[]){0, 1}, 2, false);
            break;
        }
        if (loss == AG_NULL_TENSOR) {
            loss = term;
        } else {
            ag_tensor sum;
            MK(sum, ag_add, loss, term);
            loss = sum;
        }
    }
    OP(ag_backward(loss, AG_NULL_TENSOR, false, false));

    if (!append_values(res, loss, dt)) {
        snprintf(res->err, sizeof res->err, "reading the loss failed: %s", ag_last_error());
        goto done;
    }
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
        ag_tensor g;
        MK(g, ag_tensor_grad, leaves[i]);
        if (g == AG_NULL_TENSOR || !append_values(res, g, dt)) {
            snprintf(res->err, sizeof res->err, "leaf %zu: no gradient or reading it failed (%s)", i,
                     ag_last_error());
            goto done;
        }
    }
done:
    arena_free(&ar);
}
#undef MK
#undef OP

enum { NSEEDS = 48, NTHREADS = 8 };
static GraphResult g_expected[NSEEDS];

typedef struct {
    int id;
    double seconds;
    long iterations;
    long mismatches;
    long ops;
} GraphJob;

static void *graph_thread(void *arg) {
    GraphJob *job = arg;
    double deadline = now_seconds() + job->seconds;
    int printed = 0;
    for (long it = 0;; it++) {
        if (it > 0 && (it & 3) == 0 && now_seconds() >= deadline) break;
        int k = (int)((job->id * 7 + it * 5) % NSEEDS);
        GraphResult got;
        run_graph((uint64_t)k, &got);
        const GraphResult *want = &g_expected[k];
        bool same = got.err[0] == '\0' && got.nbytes == want->nbytes && got.nops == want->nops &&
                    memcmp(got.bytes, want->bytes, got.nbytes) == 0;
        if (!same) {
            job->mismatches++;
            if (printed++ < 3) {
                CHECKF(false, "thread %d, seed %d: %s", job->id, k,
                       got.err[0] ? got.err : "loss or gradients differ from the single-threaded run");
            }
        }
        job->iterations++;
        job->ops += got.nops;
        result_free(&got);
    }
    return NULL;
}

static void test_independent_graphs(double seconds) {
    /* The reference: every seed once, single-threaded; and each again, to be sure a difference
     * later can only come from the threads. */
    for (int k = 0; k < NSEEDS; k++) {
        run_graph((uint64_t)k, &g_expected[k]);
        CHECKF(g_expected[k].err[0] == '\0', "seed %d single-threaded: %s", k, g_expected[k].err);
        GraphResult again;
        run_graph((uint64_t)k, &again);
        CHECKF(again.nbytes == g_expected[k].nbytes &&
                   memcmp(again.bytes, g_expected[k].bytes, again.nbytes) == 0,
               "seed %d is not reproducible even single-threaded", k);
        result_free(&again);
    }
    int64_t base = live_handles();
    CHECK(base == 0);

    pthread_t th[NTHREADS];
    GraphJob jobs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        jobs[i] = (GraphJob){.id = i, .seconds = seconds};
        must_create(&th[i], graph_thread, &jobs[i]);
    }
    long total = 0, ops = 0, bad = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].iterations;
        ops += jobs[i].ops;
        bad += jobs[i].mismatches;
        CHECKF(jobs[i].iterations > 0, "thread %d ran no iteration", i);
    }
    CHECKF(bad == 0, "%ld of %ld graphs differed from the single-threaded results", bad, total);
    CHECK(live_handles() == base);
    say("  %d threads x %.1f s: %ld graphs (%ld ops + backward), %ld mismatches; per thread:", NTHREADS,
        seconds, total, ops, bad);
    for (int i = 0; i < NTHREADS; i++) say(" %ld", jobs[i].iterations);
    say("\n");
    for (int k = 0; k < NSEEDS; k++) result_free(&g_expected[k]);
}

/* ========================================================================================== */
/* (b) Per-thread grad mode and last error                                                    */
/* ========================================================================================== */

enum { MODE_THREADS = 8, MODE_ROUNDS = 24 };

typedef struct {
    int id;
    pthread_barrier_t *barrier;
} ModeJob;

static void *grad_mode_thread(void *arg) {
    ModeJob *job = arg;
    ag_tensor leaf = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_full(&leaf, (int64_t[]){3}, 1, 1.5 + job->id, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(leaf, true));
    for (int round = 0; round < MODE_ROUNDS; round++) {
        int off = round % MODE_THREADS;
        bool mine = job->id == off;
        pthread_barrier_wait(job->barrier);
        if (mine) {
            bool prev = false;
            CHECK_OK(ag_set_grad_enabled(&prev, false));
            CHECKF(prev, "round %d thread %d: grad mode was off before switching it off", round, job->id);
        }
        pthread_barrier_wait(job->barrier); /* the chosen thread has switched its mode off */

        bool enabled = !mine;
        CHECK_OK(ag_is_grad_enabled(&enabled));
        CHECKF(enabled == !mine, "round %d thread %d: ag_is_grad_enabled says %d (thread %d turned its own off)",
               round, job->id, enabled, off);
        ag_tensor y = AG_NULL_TENSOR, total = AG_NULL_TENSOR;
        bool rg = !mine;
        CHECK_OK(ag_mul_scalar(&y, leaf, 2.0));
        CHECK_OK(ag_sum(&total, y, NULL, 0, false));
        CHECK_OK(ag_tensor_requires_grad(&rg, total));
        CHECKF(rg == !mine, "round %d thread %d: result requires_grad = %d with grad mode %s", round, job->id,
               rg, mine ? "off" : "on");
        if (mine) {
            CHECK_ERR(ag_backward(total, AG_NULL_TENSOR, false, false), AG_ERR_STATE);
        } else {
            CHECK_OK(ag_backward(total, AG_NULL_TENSOR, false, false));
        }
        /* Every thread fails a call of its own; the messages must not mix. */
        int64_t bad_shape[] = {100 + job->id, 7};
        ag_tensor junk = AG_NULL_TENSOR;
        CHECK_ERR(ag_reshape(&junk, leaf, bad_shape, 2), AG_ERR_SHAPE);
        char mine_msg[512];
        snprintf(mine_msg, sizeof mine_msg, "%s", ag_last_error());
        char token[32];
        snprintf(token, sizeof token, "%d", 100 + job->id);
        CHECKF(strstr(mine_msg, token) != NULL, "thread %d: the error message \"%s\" does not mention %s", job->id,
               mine_msg, token);
        pthread_barrier_wait(job->barrier); /* every thread has failed its own call */
        CHECKF(strcmp(ag_last_error(), mine_msg) == 0,
               "thread %d: ag_last_error() changed to \"%s\" while other threads failed", job->id,
               ag_last_error());
        /* still the same mode after the others' activity */
        CHECK_OK(ag_is_grad_enabled(&enabled));
        CHECKF(enabled == !mine, "round %d thread %d: grad mode changed under it", round, job->id);
        ag_tensor_free(y);
        ag_tensor_free(total);
        pthread_barrier_wait(job->barrier);
        if (mine) {
            bool prev = true;
            CHECK_OK(ag_set_grad_enabled(&prev, true));
            CHECKF(!prev, "round %d thread %d: previous mode reported on", round, job->id);
        }
    }
    /* backward passes with grad on: every round but the thread's own */
    ag_tensor g = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_grad(&g, leaf));
    double v[3] = {0};
    if (g) CHECK_OK(ag_tensor_copy_data(v, 3, AG_FLOAT64, g));
    int own_rounds = MODE_ROUNDS / MODE_THREADS + (job->id < MODE_ROUNDS % MODE_THREADS);
    double want = 2.0 * (MODE_ROUNDS - own_rounds);
    CHECKF(v[0] == want && v[2] == want, "thread %d: gradient %g, expected %g", job->id, v[0], want);
    ag_tensor_free(g);
    ag_tensor_free(leaf);
    return NULL;
}

static void *fresh_thread_mode(void *arg) {
    bool *out = arg;
    *out = false;
    CHECK_OK(ag_is_grad_enabled(out));
    return NULL;
}

static void test_grad_mode_per_thread(void) {
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, MODE_THREADS);
    pthread_t th[MODE_THREADS];
    ModeJob jobs[MODE_THREADS];
    for (int i = 0; i < MODE_THREADS; i++) {
        jobs[i] = (ModeJob){.id = i, .barrier = &barrier};
        must_create(&th[i], grad_mode_thread, &jobs[i]);
    }
    for (int i = 0; i < MODE_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);

    /* A new thread starts with grad mode on even while this one has it off. */
    bool prev = false, fresh = false, here = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    pthread_t t;
    must_create(&t, fresh_thread_mode, &fresh);
    pthread_join(t, NULL);
    CHECK(fresh == true);
    CHECK_OK(ag_is_grad_enabled(&here));
    CHECK(here == false);
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    CHECK(live_handles() == 0);
}

/* ========================================================================================== */
/* (c) Shared tensors                                                                         */
/* ========================================================================================== */

enum { SH_WORKERS = 6, SH_READERS = 2, SH_B = 4, SH_IN = 5, SH_H = 6, SH_CNT = 4 };

/* A leaf hook's state. Hooks run without the library's lock (a hook may wait for other
 * threads), so the hooks of backward passes on several threads run at the same time, as in
 * PyTorch: the counts are atomics. */
typedef struct {
    atomic_long calls;
    atomic_long bad_shape;
} HookCount;

static int32_t counting_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement;
    HookCount *hc = user_data;
    atomic_fetch_add(&hc->calls, 1);
    int64_t n = 0;
    if (ag_tensor_numel(&n, grad) != AG_OK || n != SH_H * SH_IN) atomic_fetch_add(&hc->bad_shape, 1);
    return 0;
}

typedef struct {
    /* shared */
    ag_tensor W, b, cnt, ysh; /* ysh: a shared non-leaf result tanh(W u) */
    long iters;
    atomic_int workers_done;
    /* per worker constants and their expected contributions */
    ag_tensor x[SH_WORKERS], c[SH_WORKERS], d[SH_WORKERS];
    double gW[SH_WORKERS][SH_H * SH_IN], gb[SH_WORKERS][SH_H];
    atomic_long grad_calls;   /* ag_grad calls (they run the leaf hooks too) */
    atomic_long snapshots;    /* reader snapshots taken */
    atomic_long ysh_hook_calls, ysh_hook_destroyed, ysh_hooks_added;
    pthread_barrier_t *start;
} Shared;

typedef struct {
    Shared *sh;
    int id;
} SharedJob;

/* loss_t = sum(tanh(x_t W^T + b) * c_t) + sum(cnt) + sum(ysh * d_t); *out receives it, and the
 * intermediate handles go to tmp[0..5] (to free). */
static ag_status shared_loss(ag_tensor *out, ag_tensor tmp[7], const Shared *sh, int t) {
    ag_status s;
    memset(tmp, 0, 7 * sizeof *tmp);
    if ((s = ag_linear(&tmp[0], sh->x[t], sh->W, sh->b)) != AG_OK) return s;
    if ((s = ag_tanh(&tmp[1], tmp[0])) != AG_OK) return s;
    if ((s = ag_mul(&tmp[2], tmp[1], sh->c[t])) != AG_OK) return s;
    if ((s = ag_sum(&tmp[3], tmp[2], NULL, 0, false)) != AG_OK) return s;
    if ((s = ag_sum(&tmp[4], sh->cnt, NULL, 0, false)) != AG_OK) return s;
    if ((s = ag_dot(&tmp[5], sh->ysh, sh->d[t])) != AG_OK) return s;
    if ((s = ag_add(&tmp[6], tmp[3], tmp[4])) != AG_OK) return s;
    return ag_add(out, tmp[6], tmp[5]);
}

static void free_all(ag_tensor *t, int n) {
    for (int i = 0; i < n; i++) ag_tensor_free(t[i]);
}

static void *shared_worker(void *arg) {
    SharedJob *job = arg;
    Shared *sh = job->sh;
    int t = job->id;
    pthread_barrier_wait(sh->start);
    for (long it = 0; it < sh->iters; it++) {
        ag_tensor tmp[7], loss = AG_NULL_TENSOR;
        ag_status s = shared_loss(&loss, tmp, sh, t);
        if (!CHECKF(s == AG_OK, "worker %d: forward failed: %s", t, ag_last_error())) {
            free_all(tmp, 7);
            break;
        }
        /* retain_graph: the shared result's node is part of every worker's graph. */
        CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, true, false));
        if (it % 16 == 0) {
            /* ag_grad on the same shared leaves at the same time: bit-identical to the
             * single-threaded ag_grad, and it must not touch .grad. */
            ag_tensor outs[2] = {0, 0};
            ag_status gs = ag_grad(outs, (ag_tensor[]){loss}, 1, NULL, (ag_tensor[]){sh->W, sh->b}, 2, true, false,
                                   false);
            atomic_fetch_add(&sh->grad_calls, 1);
            if (CHECKF(gs == AG_OK, "worker %d: ag_grad: %s", t, ag_last_error())) {
                double gw[SH_H * SH_IN], gb[SH_H];
                CHECK_OK(ag_tensor_copy_data(gw, SH_H * SH_IN, AG_FLOAT64, outs[0]));
                CHECK_OK(ag_tensor_copy_data(gb, SH_H, AG_FLOAT64, outs[1]));
                CHECKF(memcmp(gw, sh->gW[t], sizeof gw) == 0 && memcmp(gb, sh->gb[t], sizeof gb) == 0,
                       "worker %d iteration %ld: concurrent ag_grad differs from the single-threaded one", t, it);
            }
            free_all(outs, 2);
        }
        free_all(tmp, 7);
        ag_tensor_free(loss);
        if (it % 8 == 3) sched_yield();
    }
    atomic_fetch_add(&sh->workers_done, 1);
    return NULL;
}

/* A hook on the shared non-leaf result, added and removed by the readers while the workers run
 * backward through it. */
static int32_t ysh_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement;
    (void)grad;
    atomic_fetch_add(&((Shared *)user_data)->ysh_hook_calls, 1);
    return 0;
}

static void ysh_hook_destroy(void *user_data) { atomic_fetch_add(&((Shared *)user_data)->ysh_hook_destroyed, 1); }

/* Takes snapshots of cnt.grad and W.grad while the workers run: cnt.grad is all equal integer
 * counts (one per finished backward), never decreasing; a snapshot never changes later. */
static void *shared_reader(void *arg) {
    SharedJob *job = arg;
    Shared *sh = job->sh;
    double last = 0, maxv = (double)(sh->iters * SH_WORKERS);
    int printed = 0;
    pthread_barrier_wait(sh->start);
    while (atomic_load(&sh->workers_done) < SH_WORKERS) {
        ag_tensor g = AG_NULL_TENSOR, gw = AG_NULL_TENSOR;
        CHECK_OK(ag_tensor_grad(&g, sh->cnt));
        CHECK_OK(ag_tensor_grad(&gw, sh->W));
        if (g != AG_NULL_TENSOR) {
            double v[SH_CNT] = {0};
            CHECK_OK(ag_tensor_copy_data(v, SH_CNT, AG_FLOAT64, g));
            bool ok = v[0] == floor(v[0]) && v[0] >= last && v[0] >= 1 && v[0] <= maxv;
            for (int i = 1; i < SH_CNT; i++) ok &= v[i] == v[0];
            if (!ok && printed++ < 3) {
                CHECKF(false, "reader %d: cnt.grad snapshot [%g %g %g %g] after %g: not a count of passes", job->id,
                       v[0], v[1], v[2], v[3], last);
            }
            last = v[0];
        }
        if (gw != AG_NULL_TENSOR) {
            double a[SH_H * SH_IN], b[SH_H * SH_IN];
            CHECK_OK(ag_tensor_copy_data(a, SH_H * SH_IN, AG_FLOAT64, gw));
            sched_yield();
            CHECK_OK(ag_tensor_copy_data(b, SH_H * SH_IN, AG_FLOAT64, gw));
            bool finite = true;
            for (int i = 0; i < SH_H * SH_IN; i++) finite &= isfinite(a[i]);
            if ((memcmp(a, b, sizeof a) != 0 || !finite) && printed++ < 3) {
                CHECKF(false, "reader %d: a W.grad snapshot changed after it was taken, or is not finite", job->id);
            }
        }
        /* the shared graph's picture, and a hook on its shared node, while backward runs */
        int64_t len = 0;
        CHECK_OK(ag_graph_to_dot(NULL, 0, &len, sh->ysh));
        CHECKF(len > 0, "reader %d: empty DOT for the shared result", job->id);
        int64_t hid = 0;
        CHECK_OK(ag_tensor_register_hook(&hid, sh->ysh, ysh_hook, sh, ysh_hook_destroy));
        atomic_fetch_add(&sh->ysh_hooks_added, 1);
        sched_yield();
        CHECK_OK(ag_tensor_remove_hook(sh->ysh, hid));
        atomic_fetch_add(&sh->snapshots, 1);
        ag_tensor_free(g);
        ag_tensor_free(gw);
    }
    return NULL;
}

static bool close_to(double got, double want, double rel) { return fabs(got - want) <= rel * (1.0 + fabs(want)); }

static void test_shared_leaves(long iters) {
    Shared sh = {.iters = iters};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, SH_WORKERS + SH_READERS);
    sh.start = &start;
    ag_tensor u = AG_NULL_TENSOR, Wu = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_rand_uniform(&sh.W, (int64_t[]){SH_H, SH_IN}, 2, -1, 1, 901, AG_FLOAT64));
    CHECK_OK(ag_tensor_rand_uniform(&sh.b, (int64_t[]){SH_H}, 1, -1, 1, 902, AG_FLOAT64));
    CHECK_OK(ag_tensor_zeros(&sh.cnt, (int64_t[]){SH_CNT}, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_rand_normal(&u, (int64_t[]){SH_IN}, 1, 0, 1, 903, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(sh.W, true));
    CHECK_OK(ag_tensor_set_requires_grad(sh.b, true));
    CHECK_OK(ag_tensor_set_requires_grad(sh.cnt, true));
    CHECK_OK(ag_matmul(&Wu, sh.W, u));
    CHECK_OK(ag_tanh(&sh.ysh, Wu));
    for (int t = 0; t < SH_WORKERS; t++) {
        CHECK_OK(ag_tensor_rand_normal(&sh.x[t], (int64_t[]){SH_B, SH_IN}, 2, 0, 1, 910 + (uint64_t)t, AG_FLOAT64));
        CHECK_OK(ag_tensor_rand_uniform(&sh.c[t], (int64_t[]){SH_B, SH_H}, 2, -1, 1, 920 + (uint64_t)t, AG_FLOAT64));
        CHECK_OK(ag_tensor_rand_uniform(&sh.d[t], (int64_t[]){SH_H}, 1, -1, 1, 930 + (uint64_t)t, AG_FLOAT64));
        /* this worker's contribution, single-threaded, without touching .grad */
        ag_tensor tmp[7], loss = AG_NULL_TENSOR, outs[2] = {0, 0};
        CHECK_OK(shared_loss(&loss, tmp, &sh, t));
        CHECK_OK(ag_grad(outs, (ag_tensor[]){loss}, 1, NULL, (ag_tensor[]){sh.W, sh.b}, 2, true, false, false));
        CHECK_OK(ag_tensor_copy_data(sh.gW[t], SH_H * SH_IN, AG_FLOAT64, outs[0]));
        CHECK_OK(ag_tensor_copy_data(sh.gb[t], SH_H, AG_FLOAT64, outs[1]));
        free_all(outs, 2);
        free_all(tmp, 7);
        ag_tensor_free(loss);
    }
    ag_tensor g0 = (ag_tensor)0x5e5e5e5e5e5e5e5eULL;
    CHECK_OK(ag_tensor_grad(&g0, sh.W));
    CHECK(g0 == AG_NULL_TENSOR); /* ag_grad touched no .grad */

    static HookCount hook_count;
    atomic_store(&hook_count.calls, 0);
    atomic_store(&hook_count.bad_shape, 0);
    int64_t hook_id = 0;
    CHECK_OK(ag_tensor_register_hook(&hook_id, sh.W, counting_hook, &hook_count, NULL));

    pthread_t th[SH_WORKERS + SH_READERS];
    SharedJob jobs[SH_WORKERS + SH_READERS];
    for (int i = 0; i < SH_WORKERS; i++) {
        jobs[i] = (SharedJob){&sh, i};
        must_create(&th[i], shared_worker, &jobs[i]);
    }
    for (int i = 0; i < SH_READERS; i++) {
        jobs[SH_WORKERS + i] = (SharedJob){&sh, i};
        must_create(&th[SH_WORKERS + i], shared_reader, &jobs[SH_WORKERS + i]);
    }
    for (int i = 0; i < SH_WORKERS + SH_READERS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    /* Every pass counted; every .grad is the sum of the contributions. */
    long passes = iters * SH_WORKERS;
    ag_tensor gc = AG_NULL_TENSOR, gw = AG_NULL_TENSOR, gb = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_grad(&gc, sh.cnt));
    CHECK_OK(ag_tensor_grad(&gw, sh.W));
    CHECK_OK(ag_tensor_grad(&gb, sh.b));
    double vc[SH_CNT] = {0}, vw[SH_H * SH_IN] = {0}, vb[SH_H] = {0};
    if (gc) CHECK_OK(ag_tensor_copy_data(vc, SH_CNT, AG_FLOAT64, gc));
    if (gw) CHECK_OK(ag_tensor_copy_data(vw, SH_H * SH_IN, AG_FLOAT64, gw));
    if (gb) CHECK_OK(ag_tensor_copy_data(vb, SH_H, AG_FLOAT64, gb));
    for (int i = 0; i < SH_CNT; i++) {
        CHECKF(vc[i] == (double)passes, "cnt.grad[%d] = %.17g, expected %ld backward passes", i, vc[i], passes);
    }
    int bad_w = 0, bad_b = 0;
    double worst = 0;
    for (int i = 0; i < SH_H * SH_IN; i++) {
        double want = 0;
        for (int t = 0; t < SH_WORKERS; t++) want += sh.gW[t][i];
        want *= (double)iters;
        if (!close_to(vw[i], want, 1e-10)) bad_w++;
        worst = fmax(worst, fabs(vw[i] - want) / (1 + fabs(want)));
    }
    for (int i = 0; i < SH_H; i++) {
        double want = 0;
        for (int t = 0; t < SH_WORKERS; t++) want += sh.gb[t][i];
        want *= (double)iters;
        if (!close_to(vb[i], want, 1e-10)) bad_b++;
    }
    CHECKF(bad_w == 0, "%d elements of W.grad differ from the sum of the contributions (worst relative %g)", bad_w,
           worst);
    CHECKF(bad_b == 0, "%d elements of b.grad differ from the sum of the contributions", bad_b);
    long want_calls = passes + atomic_load(&sh.grad_calls);
    CHECKF(atomic_load(&hook_count.calls) == want_calls, "the W hook ran %ld times, expected %ld (backward + ag_grad passes)",
           atomic_load(&hook_count.calls), want_calls);
    CHECK(atomic_load(&hook_count.bad_shape) == 0);
    CHECK_OK(ag_tensor_remove_hook(sh.W, hook_id));
    CHECKF(atomic_load(&sh.ysh_hook_destroyed) == atomic_load(&sh.ysh_hooks_added),
           "%ld hooks added to the shared result, %ld destroyed", atomic_load(&sh.ysh_hooks_added),
           atomic_load(&sh.ysh_hook_destroyed));
    say("  %d workers x %ld backward passes into shared leaves, %ld concurrent ag_grad calls, %ld reader "
        "snapshots, %ld hooks added/removed on the shared result (%ld calls); W.grad worst relative "
        "difference %.2g\n",
        SH_WORKERS, iters, atomic_load(&sh.grad_calls), atomic_load(&sh.snapshots), atomic_load(&sh.ysh_hooks_added),
        atomic_load(&sh.ysh_hook_calls), worst);

    free_all((ag_tensor[]){gc, gw, gb, u, Wu, sh.ysh, sh.W, sh.b, sh.cnt}, 9);
    free_all(sh.x, SH_WORKERS);
    free_all(sh.c, SH_WORKERS);
    free_all(sh.d, SH_WORKERS);
    CHECK(live_handles() == 0);
}

/* ---- (c2) optimizer steps on one thread, backward and .grad reads on the others ---- */

enum { OPT_WORKERS = 6, OPT_M = 3, OPT_N = 4, ADAM_THREADS = 2, ADAM_STEPS = 150, ADAM_N = 5 };

typedef struct {
    ag_tensor P;
    ag_optimizer opt;
    ag_tensor loss[OPT_WORKERS]; /* recorded before any step; backward runs with retain_graph */
    double G[OPT_WORKERS][OPT_M * OPT_N];
    long iters;
    atomic_int workers_done;
    atomic_long steps;
    ag_optimizer adam; /* stepped by ADAM_THREADS threads at once */
    pthread_barrier_t *start;
} OptShared;

typedef struct {
    OptShared *os;
    int id;
} OptJob;

static void *opt_worker(void *arg) {
    OptJob *job = arg;
    OptShared *os = job->os;
    pthread_barrier_wait(os->start);
    for (long it = 0; it < os->iters; it++) {
        CHECK_OK(ag_backward(os->loss[job->id], AG_NULL_TENSOR, true, false));
        ag_tensor g = AG_NULL_TENSOR;
        CHECK_OK(ag_tensor_grad(&g, os->P));
        double v[OPT_M * OPT_N];
        if (CHECK(g != AG_NULL_TENSOR)) {
            CHECK_OK(ag_tensor_copy_data(v, OPT_M * OPT_N, AG_FLOAT64, g));
            bool finite = true;
            for (int i = 0; i < OPT_M * OPT_N; i++) finite &= isfinite(v[i]);
            CHECK(finite);
        }
        ag_tensor_free(g);
        if (it % 4 == 1) sched_yield();
    }
    atomic_fetch_add(&os->workers_done, 1);
    return NULL;
}

static void *opt_stepper(void *arg) {
    OptJob *job = arg;
    OptShared *os = job->os;
    pthread_barrier_wait(os->start);
    do { /* at least one step, however the threads are scheduled */
        CHECK_OK(ag_optimizer_step(os->opt));
        double lr = 0;
        CHECK_OK(ag_optimizer_lr(&lr, os->opt));
        CHECK(lr == 1e-3);
        atomic_fetch_add(&os->steps, 1);
        sched_yield();
    } while (atomic_load(&os->workers_done) < OPT_WORKERS);
    return NULL;
}

static void *adam_stepper(void *arg) {
    OptJob *job = arg;
    pthread_barrier_wait(job->os->start);
    for (int i = 0; i < ADAM_STEPS; i++) {
        CHECK_OK(ag_optimizer_step(job->os->adam));
        if (i % 8 == 0) sched_yield();
    }
    return NULL;
}

/* A parameter of ADAM_N elements with a constant gradient and an Adam optimizer over it. */
static void make_adam(ag_tensor *q, ag_optimizer *opt) {
    ag_tensor k = 0, m = 0, s = 0;
    CHECK_OK(ag_tensor_rand_uniform(q, (int64_t[]){ADAM_N}, 1, -1, 1, 980, AG_FLOAT32));
    CHECK_OK(ag_tensor_rand_normal(&k, (int64_t[]){ADAM_N}, 1, 0, 1, 981, AG_FLOAT32));
    CHECK_OK(ag_tensor_set_requires_grad(*q, true));
    CHECK_OK(ag_mul(&m, *q, k));
    CHECK_OK(ag_sum(&s, m, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_optimizer_adam(opt, q, 1, 1e-2, 0.9, 0.999, 1e-8, 0.01));
    free_all((ag_tensor[]){k, m, s}, 3);
}

static void test_optimizer_while_backward(long iters) {
    OptShared os = {.iters = iters};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, OPT_WORKERS + 1 + ADAM_THREADS);
    os.start = &start;
    /* The reference: ADAM_THREADS * ADAM_STEPS steps on one thread. Serialised steps from
     * several threads must end bit-identical (Adam's moments and step count included). */
    ag_tensor q_ref = 0, q = 0;
    ag_optimizer adam_ref = 0;
    make_adam(&q_ref, &adam_ref);
    for (int i = 0; i < ADAM_THREADS * ADAM_STEPS; i++) CHECK_OK(ag_optimizer_step(adam_ref));
    make_adam(&q, &os.adam);
    ag_tensor keep[OPT_WORKERS * 6];
    int nkeep = 0;
    CHECK_OK(ag_tensor_rand_uniform(&os.P, (int64_t[]){OPT_M, OPT_N}, 2, -1, 1, 950, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(os.P, true));
    double p0[OPT_M * OPT_N];
    CHECK_OK(ag_tensor_copy_data(p0, OPT_M * OPT_N, AG_FLOAT64, os.P));
    for (int t = 0; t < OPT_WORKERS; t++) {
        /* loss_t = sum(tanh(P + v_t) * w_t): d loss_t / dP = (1 - tanh^2) w_t uses saved forward
         * values only (tanh's output and w_t), never P's own values, so it is the same whatever
         * the steps did to P meanwhile, and the version counters have nothing to refuse. (A
         * graph that saved P itself, such as P @ v, is refused after a step: test_inplace.c.) */
        ag_tensor v = 0, w = 0, Pv = 0, th = 0, m = 0;
        CHECK_OK(ag_tensor_rand_normal(&v, (int64_t[]){OPT_M, OPT_N}, 2, 0, 1, 960 + (uint64_t)t, AG_FLOAT64));
        CHECK_OK(ag_tensor_rand_uniform(&w, (int64_t[]){OPT_M, 1}, 2, -1, 1, 970 + (uint64_t)t, AG_FLOAT64));
        CHECK_OK(ag_add(&Pv, os.P, v));
        CHECK_OK(ag_tanh(&th, Pv));
        CHECK_OK(ag_mul(&m, th, w));
        CHECK_OK(ag_sum(&os.loss[t], m, NULL, 0, false));
        ag_tensor g = 0;
        CHECK_OK(ag_grad(&g, (ag_tensor[]){os.loss[t]}, 1, NULL, (ag_tensor[]){os.P}, 1, true, false, false));
        CHECK_OK(ag_tensor_copy_data(os.G[t], OPT_M * OPT_N, AG_FLOAT64, g));
        ag_tensor_free(g);
        keep[nkeep++] = v, keep[nkeep++] = w, keep[nkeep++] = Pv, keep[nkeep++] = th, keep[nkeep++] = m;
    }
    /* One pass before the threads start, so that P has a gradient (and moves) at every step. */
    CHECK_OK(ag_backward(os.loss[0], AG_NULL_TENSOR, true, false));
    CHECK_OK(ag_optimizer_sgd(&os.opt, &os.P, 1, 1e-3, 0.0, false, 0.0));

    pthread_t th[OPT_WORKERS + 1 + ADAM_THREADS];
    OptJob jobs[OPT_WORKERS + 1 + ADAM_THREADS];
    for (int i = 0; i < OPT_WORKERS; i++) {
        jobs[i] = (OptJob){&os, i};
        must_create(&th[i], opt_worker, &jobs[i]);
    }
    jobs[OPT_WORKERS] = (OptJob){&os, OPT_WORKERS};
    must_create(&th[OPT_WORKERS], opt_stepper, &jobs[OPT_WORKERS]);
    for (int i = 0; i < ADAM_THREADS; i++) {
        jobs[OPT_WORKERS + 1 + i] = (OptJob){&os, i};
        must_create(&th[OPT_WORKERS + 1 + i], adam_stepper, &jobs[OPT_WORKERS + 1 + i]);
    }
    for (int i = 0; i < OPT_WORKERS + 1 + ADAM_THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    float qa[ADAM_N] = {0}, qb[ADAM_N] = {0};
    CHECK_OK(ag_tensor_copy_data(qa, ADAM_N, AG_FLOAT32, q_ref));
    CHECK_OK(ag_tensor_copy_data(qb, ADAM_N, AG_FLOAT32, q));
    CHECKF(memcmp(qa, qb, sizeof qa) == 0,
           "Adam stepped by %d threads at once differs from the same number of steps on one thread "
           "(%.9g vs %.9g)", ADAM_THREADS, (double)qb[0], (double)qa[0]);
    CHECK_OK(ag_optimizer_free(adam_ref));
    CHECK_OK(ag_optimizer_free(os.adam));
    free_all((ag_tensor[]){q_ref, q}, 2);

    ag_tensor g = AG_NULL_TENSOR;
    double vg[OPT_M * OPT_N] = {0}, p[OPT_M * OPT_N] = {0};
    CHECK_OK(ag_tensor_grad(&g, os.P));
    if (g) CHECK_OK(ag_tensor_copy_data(vg, OPT_M * OPT_N, AG_FLOAT64, g));
    CHECK_OK(ag_tensor_copy_data(p, OPT_M * OPT_N, AG_FLOAT64, os.P));
    int bad = 0, moved = 0, finite = 0;
    for (int i = 0; i < OPT_M * OPT_N; i++) {
        double want = 0;
        for (int t = 0; t < OPT_WORKERS; t++) want += os.G[t][i];
        want = want * (double)iters + os.G[0][i];
        bad += !close_to(vg[i], want, 1e-10);
        moved += p[i] != p0[i];
        finite += isfinite(p[i]) != 0;
        /* Each step subtracted lr times the gradient accumulated so far: a partial sum of the
         * contributions, so no larger elementwise than iters * sum_t |G_t|. */
        double bound = 0;
        for (int t = 0; t < OPT_WORKERS; t++) bound += fabs(os.G[t][i]);
        bound = (bound * (double)iters + fabs(os.G[0][i])) * 1e-3 * (double)atomic_load(&os.steps);
        double delta = p[i] - p0[i];
        CHECKF(fabs(delta) <= bound * (1 + 1e-9) + 1e-12, "P[%d] moved by %g, more than the bound %g", i, delta, bound);
    }
    CHECKF(bad == 0, "%d elements of P.grad differ from %ld x the sum of the contributions (+ the first pass)", bad,
           iters);
    CHECK(finite == OPT_M * OPT_N);
    CHECKF(atomic_load(&os.steps) > 0 && moved > 0, "%ld steps moved %d elements", atomic_load(&os.steps), moved);
    say("  %d workers x %ld backward passes while %ld SGD steps ran on another thread and %d threads "
        "stepped one Adam optimizer %d times each\n",
        OPT_WORKERS, iters, atomic_load(&os.steps), ADAM_THREADS, ADAM_STEPS);
    ag_tensor_free(g);
    CHECK_OK(ag_optimizer_free(os.opt));
    free_all(os.loss, OPT_WORKERS);
    free_all(keep, nkeep);
    ag_tensor_free(os.P);
    CHECK(live_handles() == 0);
}

/* ---- (c3) a handle freed on one thread while others use it: AG_OK or AG_ERR_INVALID_HANDLE ---- */

enum { HF_USERS = 4, HF_ROUNDS = 400 };

typedef struct {
    _Atomic ag_tensor current; /* the handle in play; freed and replaced by the owner */
    atomic_int done;
    atomic_long ok, refused, wrong;
    pthread_barrier_t *start;
} HandleRace;

static void *handle_user(void *arg) {
    HandleRace *hr = arg;
    pthread_barrier_wait(hr->start);
    while (!atomic_load(&hr->done)) {
        ag_tensor h = atomic_load(&hr->current);
        ag_tensor s = AG_NULL_TENSOR;
        ag_status st = ag_sum(&s, h, NULL, 0, false);
        if (st == AG_OK) {
            double v = 0;
            if (ag_tensor_item(&v, s) != AG_OK || v != 4.0) atomic_fetch_add(&hr->wrong, 1);
            ag_tensor_free(s);
            atomic_fetch_add(&hr->ok, 1);
        } else if (st == AG_ERR_INVALID_HANDLE && s == AG_NULL_TENSOR) {
            atomic_fetch_add(&hr->refused, 1);
        } else {
            atomic_fetch_add(&hr->wrong, 1);
        }
        int64_t n = 0;
        st = ag_tensor_numel(&n, h);
        if (!(st == AG_OK ? n == 4 : st == AG_ERR_INVALID_HANDLE)) atomic_fetch_add(&hr->wrong, 1);
    }
    return NULL;
}

static void test_handle_freed_while_used(void) {
    HandleRace hr = {0};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, HF_USERS + 1);
    hr.start = &start;
    ag_tensor first = 0;
    CHECK_OK(ag_tensor_ones(&first, (int64_t[]){4}, 1, AG_FLOAT64));
    atomic_store(&hr.current, first);
    pthread_t th[HF_USERS];
    for (int i = 0; i < HF_USERS; i++) must_create(&th[i], handle_user, &hr);
    pthread_barrier_wait(&start);
    long double_free_refused = 0;
    for (int round = 0; round < HF_ROUNDS; round++) {
        sched_yield();
        /* Free the handle while the users may be inside a call with it, then publish a new one;
         * the freed slot is reused, so a stale handle must be told apart by its generation. */
        ag_tensor old = atomic_load(&hr.current);
        CHECK_OK(ag_tensor_free(old));
        ag_tensor next = 0;
        CHECK_OK(ag_tensor_ones(&next, (int64_t[]){4}, 1, AG_FLOAT64));
        atomic_store(&hr.current, next);
        double_free_refused += ag_tensor_free(old) == AG_ERR_INVALID_HANDLE;
    }
    atomic_store(&hr.done, 1);
    for (int i = 0; i < HF_USERS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    CHECK_OK(ag_tensor_free(atomic_load(&hr.current)));
    CHECKF(atomic_load(&hr.wrong) == 0, "%ld calls on a handle being freed gave neither the right answer nor "
           "AG_ERR_INVALID_HANDLE", atomic_load(&hr.wrong));
    CHECK(double_free_refused == HF_ROUNDS);
    say("  %d handles freed and replaced while %d threads used them: %ld calls answered, %ld refused with "
        "AG_ERR_INVALID_HANDLE\n",
        HF_ROUNDS, HF_USERS, atomic_load(&hr.ok), atomic_load(&hr.refused));
    CHECK(live_handles() == 0);
}

/* ---- (c4) two threads run backward through the same graph, without retain_graph ---- */

enum { RACE_ROUNDS = 200 };

typedef struct {
    ag_tensor root;
    pthread_barrier_t *barrier;
    ag_status status[2];
} BackwardRace;

typedef struct {
    BackwardRace *br;
    int id;
} BackwardRacer;

static void *backward_racer(void *arg) {
    BackwardRacer *r = arg;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        pthread_barrier_wait(r->br->barrier); /* main has built this round's graph */
        r->br->status[r->id] = ag_backward(r->br->root, AG_NULL_TENSOR, false, false);
        pthread_barrier_wait(r->br->barrier); /* both are done */
        pthread_barrier_wait(r->br->barrier); /* main has checked */
    }
    return NULL;
}

/* The graph is released by whichever backward runs first; the other must be refused with
 * AG_ERR_STATE, and the leaf's gradient must grow by exactly one pass per round. */
static void test_backward_same_graph(void) {
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 3);
    BackwardRace br = {.barrier = &barrier};
    BackwardRacer racers[2] = {{&br, 0}, {&br, 1}};
    ag_tensor x = 0;
    CHECK_OK(ag_tensor_full(&x, (int64_t[]){3}, 1, 0.5, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(x, true));
    pthread_t th[2];
    must_create(&th[0], backward_racer, &racers[0]);
    must_create(&th[1], backward_racer, &racers[1]);
    int one_ok = 0, first_wins[2] = {0, 0};
    for (int round = 0; round < RACE_ROUNDS; round++) {
        ag_tensor y = 0;
        CHECK_OK(ag_mul(&y, x, x));
        CHECK_OK(ag_sum(&br.root, y, NULL, 0, false));
        pthread_barrier_wait(&barrier);
        pthread_barrier_wait(&barrier);
        ag_status a = br.status[0], b = br.status[1];
        bool ok = (a == AG_OK && b == AG_ERR_STATE) || (a == AG_ERR_STATE && b == AG_OK);
        one_ok += ok;
        if (ok) first_wins[a == AG_OK ? 0 : 1]++;
        else if (round < 3 || one_ok == round) {
            CHECKF(false, "round %d: the two backward calls returned %s and %s (want one AG_OK, one AG_ERR_STATE)",
                   round, ag_status_name(a), ag_status_name(b));
        }
        ag_tensor_free(y);
        ag_tensor_free(br.root);
        pthread_barrier_wait(&barrier);
    }
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    pthread_barrier_destroy(&barrier);
    CHECKF(one_ok == RACE_ROUNDS, "%d of %d rounds had exactly one successful backward", one_ok, RACE_ROUNDS);
    ag_tensor g = 0;
    double v[3] = {0};
    CHECK_OK(ag_tensor_grad(&g, x));
    if (g) CHECK_OK(ag_tensor_copy_data(v, 3, AG_FLOAT64, g));
    CHECKF(v[0] == RACE_ROUNDS && v[2] == RACE_ROUNDS, "x.grad = %g after %d rounds, expected %d (2x = 1 per pass)",
           v[0], RACE_ROUNDS, RACE_ROUNDS);
    say("  %d rounds of two concurrent backward calls on one graph: one AG_OK and one AG_ERR_STATE each "
        "(first thread won %d, second %d)\n",
        RACE_ROUNDS, first_wins[0], first_wins[1]);
    free_all((ag_tensor[]){g, x}, 2);
    CHECK(live_handles() == 0);
}

/* ========================================================================================== */
/* (d) Opt-in probe of what the contract leaves out (THREAD_UNSAFE_PROBE=values|requires_grad|lr|1) */
/* ========================================================================================== */

enum { PROBE_N = 64 * 1024, PROBE_STEPS = 60 };

typedef struct {
    ag_tensor P, L;
    ag_optimizer opt;
    bool values;        /* race optimizer steps against reads of P's values */
    bool requires_grad; /* race requires_grad changes against operations on L */
    bool lr;            /* race ag_optimizer_set_lr against ag_optimizer_step */
    atomic_int stop;
    atomic_long reads, torn;
} Probe;

/* P starts at 0 with gradient 1 and SGD lr 1, so after k whole steps every element is exactly -k:
 * a read that sees different values is torn (part before, part after a step). */
static void *probe_reader(void *arg) {
    Probe *pr = arg;
    double *vals = malloc(PROBE_N * sizeof *vals);
    if (!vals) return NULL;
    while (!atomic_load(&pr->stop)) {
        if (pr->values) {
            ag_tensor y = 0, d = 0;
            double total = 0;
            CHECK_OK(ag_tensor_copy_data(vals, PROBE_N, AG_FLOAT64, pr->P)); /* memcpy of P's values */
            bool torn = false;
            for (int i = 1; i < PROBE_N; i++) torn |= vals[i] != vals[0];
            CHECK_OK(ag_detach(&d, pr->P));
            CHECK_OK(ag_sum(&y, d, NULL, 0, false)); /* a Swift kernel reading P's values */
            CHECK_OK(ag_tensor_item(&total, y));
            torn |= fmod(total, (double)PROBE_N) != 0;
            atomic_fetch_add(&pr->reads, 1);
            if (torn && atomic_fetch_add(&pr->torn, 1) == 0) {
                int k = 1;
                while (k < PROBE_N && vals[k] == vals[0]) k++;
                if (k < PROBE_N) {
                    say("  probe: first torn read: ag_tensor_copy_data gave P[0] = %g but P[%d] = %g\n", vals[0], k,
                        vals[k]);
                } else {
                    say("  probe: first torn read: ag_sum(ag_detach(P)) = %g, not a multiple of %d (a step was "
                        "half done)\n", total, PROBE_N);
                }
            }
            ag_tensor_free(y);
            ag_tensor_free(d);
        }
        if (pr->requires_grad) {
            ag_tensor z = 0;
            CHECK_OK(ag_mul_scalar(&z, pr->L, 2.0)); /* reads L.requires_grad */
            ag_tensor_free(z);
        }
        if (pr->lr) CHECK_OK(ag_optimizer_set_lr(pr->opt, 1.0)); /* writes the learning rate */
    }
    free(vals);
    return NULL;
}

static void *probe_writer(void *arg) {
    Probe *pr = arg;
    for (int i = 0; i < PROBE_STEPS; i++) {
        if (pr->values || pr->lr) CHECK_OK(ag_optimizer_step(pr->opt)); /* writes P's values in place */
        if (pr->requires_grad) CHECK_OK(ag_tensor_set_requires_grad(pr->L, (i & 1) != 0));
        sched_yield();
    }
    atomic_store(&pr->stop, 1);
    return NULL;
}

/* which: "values", "requires_grad", "lr" or "1" (all three) */
static void test_unsafe_probe_which(const char *which) {
    Probe pr = {0};
    bool all = strcmp(which, "1") == 0;
    pr.values = all || strcmp(which, "values") == 0;
    pr.requires_grad = all || strcmp(which, "requires_grad") == 0;
    pr.lr = all || strcmp(which, "lr") == 0;
    CHECK_OK(ag_tensor_zeros(&pr.P, (int64_t[]){PROBE_N}, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_zeros(&pr.L, (int64_t[]){3}, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_set_requires_grad(pr.P, true));
    ag_tensor s = 0;
    CHECK_OK(ag_sum(&s, pr.P, NULL, 0, false));
    CHECK_OK(ag_backward(s, AG_NULL_TENSOR, false, false)); /* P.grad = ones */
    CHECK_OK(ag_optimizer_sgd(&pr.opt, &pr.P, 1, 1.0, 0.0, false, 0.0));
    pthread_t r[2], w;
    must_create(&r[0], probe_reader, &pr);
    must_create(&r[1], probe_reader, &pr);
    must_create(&w, probe_writer, &pr);
    pthread_join(w, NULL);
    pthread_join(r[0], NULL);
    pthread_join(r[1], NULL);
    if (pr.values) {
        say("  probe: %ld of %ld reads of a parameter's values during optimizer steps were torn (a mix of "
            "values before and after a step)\n",
            atomic_load(&pr.torn), atomic_load(&pr.reads));
    }
    CHECK_OK(ag_optimizer_free(pr.opt));
    free_all((ag_tensor[]){s, pr.P, pr.L}, 3);
    CHECK(live_handles() == 0);
}

static const char *g_probe;
static void test_unsafe_probe(void) { test_unsafe_probe_which(g_probe); }

/* ========================================================================================== */

/* Kernel threads (ag_set_num_threads): large elementwise ops, a reduction and their backward
 * give bit-identical results with 1, 2 and 3 threads; exp is also checked against libm. */
static bool kernel_results(int64_t threads, float *out, int64_t n) {
    CHECK_OK(ag_set_num_threads(threads));
    int64_t shape[1] = {n};
    ag_tensor a = 0, b = 0, e = 0, p = 0, s = 0, y = 0, ga = 0;
    bool ok = true;
    ok &= ag_tensor_rand_uniform(&a, shape, 1, -3, 3, 11, AG_FLOAT32) == AG_OK;
    ok &= ag_tensor_rand_uniform(&b, shape, 1, -3, 3, 12, AG_FLOAT32) == AG_OK;
    ok &= ag_tensor_set_requires_grad(a, true) == AG_OK;
    ok &= ag_exp(&e, a) == AG_OK && ag_mul(&p, e, b) == AG_OK && ag_tanh(&y, p) == AG_OK;
    ok &= ag_sum(&s, y, NULL, 0, false) == AG_OK && ag_backward(s, 0, false, false) == AG_OK;
    ok &= ag_tensor_grad(&ga, a) == AG_OK;
    ok &= ag_tensor_copy_data(out, n, AG_FLOAT32, y) == AG_OK;
    ok &= ag_tensor_copy_data(out + n, n, AG_FLOAT32, ga) == AG_OK;
    ok &= ag_tensor_copy_data(out + 2 * n, 1, AG_FLOAT32, s) == AG_OK;
    ok &= ag_tensor_copy_data(out + 2 * n + 1, n, AG_FLOAT32, e) == AG_OK;
    ok &= ag_tensor_copy_data(out + 3 * n + 1, n, AG_FLOAT32, a) == AG_OK;
    ag_tensor all[7] = {a, b, e, p, s, y, ga};
    for (int i = 0; i < 7; i++) if (all[i]) ag_tensor_free(all[i]);
    return ok;
}

static void test_kernel_thread_counts(void) {
    int64_t before = 0;
    CHECK_OK(ag_num_threads(&before));
    const int64_t n = 3 * 1024 * 1024 + 7; /* several blocks per thread, a ragged end */
    float *one = malloc(sizeof(float) * (size_t)(4 * n + 1)), *many = malloc(sizeof(float) * (size_t)(4 * n + 1));
    CHECKF(one && many, "out of memory");
    if (!one || !many) { free(one); free(many); return; }
    CHECKF(kernel_results(1, one, n), "1 thread: %s", ag_last_error());
    for (int64_t t = 2; t <= 3; t++) {
        CHECKF(kernel_results(t, many, n), "%" PRId64 " threads: %s", t, ag_last_error());
        CHECKF(memcmp(one, many, sizeof(float) * (size_t)(4 * n + 1)) == 0,
               "results with %" PRId64 " threads differ from one thread", t);
    }
    /* exp against libm in double: within 2 ulp of float (relative 2.4e-7). */
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = exp((double)one[3 * n + 1 + i]);
        double rel = fabs((double)one[2 * n + 1 + i] - ref) / ref;
        if (rel > worst) worst = rel;
    }
    CHECKF(worst <= 2.4e-7, "exp: worst relative error %.3g above 2 ulp", worst);
    free(one);
    free(many);
    CHECK_OK(ag_set_num_threads(before));
}

static void run_group(const char *name, void (*fn)(void)) {
    int before = atomic_load(&g_failed);
    double t0 = now_seconds();
    say("%s\n", name);
    fn();
    say("  -> %s (%.1f s)\n", atomic_load(&g_failed) == before ? "ok" : "FAILED", now_seconds() - t0);
}

static double g_seconds;
static long g_shared_iters;
static void group_a(void) { test_independent_graphs(g_seconds); }
static void group_c1(void) { test_shared_leaves(g_shared_iters); }
static void group_c2(void) { test_optimizer_while_backward(g_shared_iters); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *v = getenv("AG_TEST_VERBOSE");
    g_verbose = v && *v && strcmp(v, "0") != 0;
    g_seconds = (double)env_long("THREAD_SECONDS", 10, 0, 86400);
    g_shared_iters = env_long("THREAD_SHARED_ITERS", 300, 1, 100000000);
    const char *probe = getenv("THREAD_UNSAFE_PROBE");
    if (g_verbose) say("Autograd %s\n", ag_version());

    run_group("(a) independent seeded graphs on 8 threads, bit-for-bit against single-threaded runs", group_a);
    run_group("(b) grad mode and ag_last_error per thread", test_grad_mode_per_thread);
    run_group("(b2) kernel threads: 1, 2 and 3 threads give bit-identical results", test_kernel_thread_counts);
    run_group("(c1) shared leaves: concurrent forward, backward into one .grad, ag_grad, hooks, snapshots",
              group_c1);
    run_group("(c2) shared parameter: SGD steps on one thread, backward and .grad reads on others", group_c2);
    run_group("(c3) a handle freed on one thread while others use it", test_handle_freed_while_used);
    run_group("(c4) two threads run backward through one graph without retain_graph", test_backward_same_graph);
    if (probe && (strcmp(probe, "1") == 0 || strcmp(probe, "values") == 0 || strcmp(probe, "requires_grad") == 0 ||
                  strcmp(probe, "lr") == 0)) {
        g_probe = probe;
        run_group("(d) PROBE (outside the contract): forward reads and requires_grad changes during steps",
                  test_unsafe_probe);
    }

    int64_t live = -1;
    CHECK_OK(ag_live_handle_count(&live));
    CHECKF(live == 0, "%" PRId64 " handles still live at exit", live);
    printf("%d passed, %d failed\n", atomic_load(&g_passed), atomic_load(&g_failed));
    return atomic_load(&g_failed) == 0 ? 0 : 1;
}
