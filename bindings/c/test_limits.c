/*
 * test_limits.c - scale tests of Autograd's C interface (include/autograd.h), too big to run
 * under valgrind:
 *
 *   1. A chain of 1,000,000 sequential operations (alternately y*A and y+B) built, run backward
 *      and torn down on a pthread created with default attributes (so with the default thread
 *      stack): the value and the gradient are checked against the closed form, every handle is
 *      freed, and nothing may overflow the stack. A second chain of the same length is dropped
 *      without a backward. Each part runs in a child process, so a crash (a stack overflow) is
 *      reported as a failed check instead of ending the run.
 *   2. A training loop of 10,000 steps of a small MLP (forward, loss, backward, read the
 *      gradients, make the updated parameters as new tensors, free the old handles): the
 *      resident set size after step 10,000 must be within 8 MiB of that after step 1,000, and
 *      the number of live handles must not grow.
 * Each part must finish within 30 s; the times and RSS figures are printed.
 *
 * Output: the name of each test group, one line per failed check, and finally exactly
 * "N passed, M failed". Exit status 0 only if M is 0.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_limits bindings/c/test_limits.c
 *        -L .build/release -lautograd -Wl,-rpath,... -lm -lpthread
 */
#define _POSIX_C_SOURCE 200809L

#include "test_support.h"

#include <errno.h>
#include <pthread.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================================== */
/* Time and memory                                                                            */
/* ========================================================================================== */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The resident set size in bytes, from /proc/self/statm (its second field, in pages). */
static long rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static double mib(long bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* ========================================================================================== */
/* 1. A chain of a million operations on a thread with the default stack                     */
/* ========================================================================================== */

enum { CHAIN_OPS = 1000000 };
static const double CHAIN_A = 1.000001, CHAIN_B = 1e-6, CHAIN_X = 0.5;

/* What the worker thread found; sent from the child process to the parent through a pipe. */
typedef struct {
    int failed_step;     /* 0: all went well; otherwise which step failed (see chain_thread) */
    char message[256];   /* the library's message for a failed step */
    double value, grad;  /* the chain's result and d result / dx */
    double build_s, backward_s, free_s;
    int64_t live_before, live_after;
    size_t stack_size;   /* the default thread stack size */
} ChainResult;

typedef struct {
    bool with_backward;
    ChainResult r;
} ChainJob;

static void *chain_thread(void *arg) {
    ChainJob *job = arg;
    ChainResult *r = &job->r;
#define STEP(n, call)                                                                          \
    if ((call) != AG_OK) {                                                                     \
        r->failed_step = (n);                                                                  \
        snprintf(r->message, sizeof r->message, "%s: %s", #call, ag_last_error());             \
        return NULL;                                                                           \
    }
    ag_tensor x = AG_NULL_TENSOR, cur, g = AG_NULL_TENSOR;
    STEP(1, ag_live_handle_count(&r->live_before));
    STEP(2, ag_tensor_from_data(&x, &CHAIN_X, NULL, 0, AG_FLOAT64));
    STEP(3, ag_tensor_set_requires_grad(x, true));
    double t0 = now_seconds();
    cur = x;
    for (int i = 0; i < CHAIN_OPS; i++) {
        ag_tensor next = AG_NULL_TENSOR;
        if (i % 2 == 0) {
            STEP(4, ag_mul_scalar(&next, cur, CHAIN_A));
        } else {
            STEP(5, ag_add_scalar(&next, cur, CHAIN_B));
        }
        if (cur != x) STEP(6, ag_tensor_free(cur)); /* only the graph keeps the middle alive */
        cur = next;
    }
    double t1 = now_seconds();
    r->build_s = t1 - t0;
    STEP(7, ag_tensor_item(&r->value, cur));
    if (job->with_backward) {
        STEP(8, ag_backward(cur, AG_NULL_TENSOR, false, false));
        STEP(9, ag_tensor_grad(&g, x));
        STEP(10, ag_tensor_item(&r->grad, g));
    }
    double t2 = now_seconds();
    r->backward_s = t2 - t1;
    /* Teardown: the last handle to the chain's end releases a million nodes. */
    STEP(11, ag_tensor_free(cur));
    STEP(12, ag_tensor_free(g));
    STEP(13, ag_tensor_free(x));
    r->free_s = now_seconds() - t2;
    STEP(14, ag_live_handle_count(&r->live_after));
#undef STEP
    return NULL;
}

/* Runs the chain on a default-attribute pthread in the child process; writes the result. */
static int chain_child(int fd, bool with_backward) {
    ChainJob job;
    memset(&job, 0, sizeof job);
    job.with_backward = with_backward;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) == 0) {
        pthread_attr_getstacksize(&attr, &job.r.stack_size);
        pthread_attr_destroy(&attr);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, chain_thread, &job) != 0) return 3; /* default attributes */
    pthread_join(th, NULL);
    const char *p = (const char *)&job.r;
    size_t left = sizeof job.r;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n <= 0) return 4;
        p += n;
        left -= (size_t)n;
    }
    return 0;
}

static void test_chain(bool with_backward) {
    const char *what = with_backward ? "backward through" : "dropping without backward";
    int fds[2];
    if (!CHECK(pipe(fds) == 0)) return;
    fflush(stdout);
    double t0 = now_seconds();
    pid_t pid = fork();
    if (!CHECK(pid >= 0)) return;
    if (pid == 0) {
        close(fds[0]);
        _exit(chain_child(fds[1], with_backward));
    }
    close(fds[1]);
    ChainResult r;
    memset(&r, 0, sizeof r);
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fds[0]);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    double elapsed = now_seconds() - t0;
    if (!CHECKF(WIFEXITED(wstatus), "%s a chain of %d ops: the process died (signal %d: a stack overflow?)", what,
                CHAIN_OPS, WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : -1))
        return;
    if (!CHECKF(WEXITSTATUS(wstatus) == 0 && got == sizeof r, "the child failed before reporting (exit %d)",
                WEXITSTATUS(wstatus)))
        return;
    printf("  %s a chain of %d ops on a thread with the default stack (%.1f MiB): build %.2f s, %s %.2f s, "
           "free %.2f s; total %.2f s\n",
           what, CHAIN_OPS, mib((long)r.stack_size), r.build_s, with_backward ? "backward" : "value", r.backward_s,
           r.free_s, elapsed);
    if (!CHECKF(r.failed_step == 0, "step %d failed: %s", r.failed_step, r.message)) return;

    /* Closed form: n pairs of y <- A y + B from y = x give A^n x + B (A^n - 1) / (A - 1); the
     * derivative is A^n. */
    double n = CHAIN_OPS / 2, an = pow(CHAIN_A, n);
    double want_value = an * CHAIN_X + CHAIN_B * (an - 1.0) / (CHAIN_A - 1.0);
    CHECKF(fabs(r.value - want_value) <= 1e-8 * fabs(want_value), "chain value %.17g, closed form %.17g", r.value,
           want_value);
    if (with_backward)
        CHECKF(fabs(r.grad - an) <= 1e-8 * an, "d chain / dx = %.17g, closed form A^%g = %.17g", r.grad, n, an);
    CHECKF(r.live_after == r.live_before, "%" PRId64 " live handles after freeing everything, %" PRId64 " before",
           r.live_after, r.live_before);
    CHECKF(elapsed < 30.0, "took %.1f s (limit 30 s)", elapsed);
}

static void test_chain_backward(void) { test_chain(true); }
static void test_chain_drop(void) { test_chain(false); }

/* ========================================================================================== */
/* 2. Training-loop memory                                                                    */
/* ========================================================================================== */

/* pred = tanh(X @ W1 + b1) @ W2 + b2, loss = mse_loss(pred, T); X (16, 4), hidden 16. */
enum { STEPS = 10000, BATCH = 16, IN = 4, HID = 16, NPARAM = 4 };
static const int64_t k_shapes[NPARAM][2] = {{IN, HID}, {HID, 0}, {HID, 1}, {1, 0}};
static const int64_t k_ndims[NPARAM] = {2, 1, 2, 1};
static const int64_t k_sizes[NPARAM] = {IN * HID, HID, HID, 1};

/* One step: loss and gradients at p, then p <- p - lr * grad (new tensors; old ones freed). */
static bool train_step(ag_tensor *p, ag_tensor X, ag_tensor T, double lr, double *loss_out, double *grad_norm) {
    ag_tensor a = 0, b = 0, h = 0, o = 0, pred = 0, loss = 0;
    bool ok = TRY(ag_matmul(&a, X, p[0])) && TRY(ag_add(&b, a, p[1])) && TRY(ag_tanh(&h, b)) &&
              TRY(ag_matmul(&o, h, p[2])) && TRY(ag_add(&pred, o, p[3])) &&
              TRY(ag_mse_loss(&loss, pred, T)) && TRY(ag_tensor_item(loss_out, loss)) &&
              TRY(ag_backward(loss, AG_NULL_TENSOR, false, false));
    for (ag_tensor *q = (ag_tensor[]){a, b, h, o, pred, loss}, *e = q + 6; q < e; q++) ag_tensor_free(*q);
    if (!ok) return false;

    /* Read every gradient, and make the updated parameters with grad mode off, so the update
     * records nothing; the results are leaves that are then marked as requiring grad. */
    double norm = 0, buf[IN * HID];
    bool prev = true;
    ag_set_grad_enabled(&prev, false);
    for (int k = 0; k < NPARAM && ok; k++) {
        ag_tensor g = 0, step = 0, next = 0;
        ok = TRY(ag_tensor_grad(&g, p[k])) && TRY_TRUE(g != AG_NULL_TENSOR) &&
             TRY(ag_tensor_copy_data(buf, k_sizes[k], AG_FLOAT64, g)) && TRY(ag_mul_scalar(&step, g, lr)) &&
             TRY(ag_sub(&next, p[k], step)) && TRY(ag_tensor_set_requires_grad(next, true));
        for (int64_t i = 0; i < k_sizes[k]; i++) norm += buf[i] * buf[i];
        ag_tensor_free(g);
        ag_tensor_free(step);
        if (ok) {
            ag_tensor_free(p[k]);
            p[k] = next;
        } else {
            ag_tensor_free(next);
        }
    }
    ag_set_grad_enabled(NULL, prev);
    *grad_norm = sqrt(norm);
    return ok;
}

static void test_training_memory(void) {
    double xv[BATCH * IN], tv[BATCH];
    for (int i = 0; i < BATCH; i++) {
        double s = 0;
        for (int j = 0; j < IN; j++) {
            xv[i * IN + j] = sin(1.3 * i + 0.7 * j);
            s += xv[i * IN + j] * (j % 2 ? 0.5 : -0.3);
        }
        tv[i] = tanh(s);
    }
    ag_tensor X = 0, T = 0, p[NPARAM] = {0};
    CHECK_OK(ag_tensor_from_data(&X, xv, (const int64_t[]){BATCH, IN}, 2, AG_FLOAT64));
    CHECK_OK(ag_tensor_from_data(&T, tv, (const int64_t[]){BATCH, 1}, 2, AG_FLOAT64));
    for (int k = 0; k < NPARAM; k++) {
        CHECK_OK(ag_tensor_rand_normal(&p[k], k_shapes[k], k_ndims[k], 0.0, 0.5, 100 + (uint64_t)k, AG_FLOAT64));
        CHECK_OK(ag_tensor_set_requires_grad(p[k], true));
    }
    int64_t live_1000 = -1, live_end = -1;
    long rss_1000 = -1, rss_end = -1;
    double first_loss = NAN, loss = NAN, gnorm = NAN, t_1000 = 0;
    double t0 = now_seconds();
    int step;
    for (step = 1; step <= STEPS; step++) {
        if (!train_step(p, X, T, 0.1, &loss, &gnorm)) break;
        if (step == 1) first_loss = loss;
        if (step == 1000) {
            rss_1000 = rss_bytes();
            CHECK_OK(ag_live_handle_count(&live_1000));
            t_1000 = now_seconds() - t0;
        }
    }
    double elapsed = now_seconds() - t0;
    rss_end = rss_bytes();
    CHECK_OK(ag_live_handle_count(&live_end));
    CHECKF(step == STEPS + 1, "training stopped at step %d", step);
    printf("  %d training steps in %.2f s (%.1f us/step; first 1000 in %.2f s); loss %.4g -> %.4g, |grad| %.3g\n",
           step - 1, elapsed, 1e6 * elapsed / (step - 1 > 0 ? step - 1 : 1), t_1000, first_loss, loss, gnorm);
    printf("  RSS after step 1000: %.2f MiB, after step %d: %.2f MiB (growth %+.2f MiB)\n", mib(rss_1000), STEPS,
           mib(rss_end), mib(rss_end - rss_1000));
    CHECK(rss_1000 > 0 && rss_end > 0);
    CHECKF(rss_end - rss_1000 <= 8L * 1024 * 1024, "RSS grew by %.2f MiB between step 1000 and step %d (limit 8 MiB)",
           mib(rss_end - rss_1000), STEPS);
    CHECKF(live_end == live_1000, "live handles: %" PRId64 " after step 1000, %" PRId64 " at the end", live_1000,
           live_end);
    CHECKF(loss < 0.5 * first_loss, "the loss did not go down: %g -> %g", first_loss, loss);
    CHECKF(elapsed < 30.0, "took %.1f s (limit 30 s)", elapsed);
    for (int k = 0; k < NPARAM; k++) ag_tensor_free(p[k]);
    ag_tensor_free(X);
    ag_tensor_free(T);
}

/* ========================================================================================== */

int main(void) {
    test_begin();
    run_group("backward through a chain of 1,000,000 ops on a default pthread, then free it", test_chain_backward);
    run_group("free a chain of 1,000,000 ops without backward on a default pthread", test_chain_drop);
    run_group("memory of a 10,000-step training loop", test_training_memory);

    check_no_leaks();
    return test_summary();
}
