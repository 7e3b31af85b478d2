/*
 * test_fork.c - fork() while other threads are inside the library (issue 14, item 9).
 *
 * A second thread loops backward passes (through a matrix product and elementwise operations
 * large enough to use the worker pool), and a third loops forward matrix products and large
 * elementwise operations, while the main thread forks FORKS times. Each child, which has only
 * the forking thread, must be able to use the library (include/autograd.h, "fork()"): it runs a
 * backward pass, a matrix product that is split over the worker pool, an elementwise operation
 * above the threading threshold and a few handle operations, checks the values against
 * hand-computed ones, and exits 0. The parent waits for each child with a deadline; a child
 * that hangs (a lock inherited held) is killed and counted as a failure.
 *
 * Run natively only (valgrind and fork with threads do not mix well); see scripts/c-tests.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FORKS 40
/* How long a child may take before it counts as hung: 10 s natively; FORK_CHILD_DEADLINE_S
 * raises it for builds that run many times slower (scripts/sanitizers.sh gives ThreadSanitizer
 * 40 s: there a child's matrix product and backward pass took over 10 s about once in 140
 * forks on a loaded 2-core machine, and none of 120 forks took 40 s). */
static double child_deadline_s(void) {
    const char *s = getenv("FORK_CHILD_DEADLINE_S");
    double v = s ? atof(s) : 0;
    return v > 0 ? v : 10.0;
}
#define CHILD_DEADLINE_S child_deadline_s()
#define BIG_N (1 << 19) /* above the threading threshold of elementwise kernels (2^15) */
#define MM 512          /* a 512 x 512 product is split into blocks that run on the pool */

static atomic_int g_stop;
static atomic_long g_backward_passes, g_forward_products;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* sum(exp(x) * 2 + (a @ b)) with x of BIG_N elements and a, b of MM x MM, backward to x and a:
 * a backward pass long enough that forks land inside it. Returns false on any failure. */
static bool one_backward_pass(ag_tensor x, ag_tensor a, ag_tensor b) {
    ag_tensor e = 0, e2 = 0, s1 = 0, p = 0, s2 = 0, loss = 0;
    bool ok = ag_exp(&e, x) == AG_OK && ag_mul_scalar(&e2, e, 2.0) == AG_OK &&
              ag_sum(&s1, e2, NULL, 0, false) == AG_OK && ag_matmul(&p, a, b) == AG_OK &&
              ag_sum(&s2, p, NULL, 0, false) == AG_OK && ag_add(&loss, s1, s2) == AG_OK &&
              ag_backward(loss, AG_NULL_TENSOR, false, false) == AG_OK;
    ag_tensor_free(e);
    ag_tensor_free(e2);
    ag_tensor_free(s1);
    ag_tensor_free(p);
    ag_tensor_free(s2);
    ag_tensor_free(loss);
    ag_tensor_zero_grad(x);
    ag_tensor_zero_grad(a);
    return ok;
}

typedef struct {
    ag_tensor x, a, b;
} Inputs3;

static void *backward_loop(void *arg) {
    Inputs3 *in = arg;
    while (!g_stop) {
        if (!one_backward_pass(in->x, in->a, in->b)) {
            printf("  backward thread: a pass failed: %s\n", ag_last_error());
            return (void *)1;
        }
        g_backward_passes++;
    }
    return NULL;
}

static void *forward_loop(void *arg) {
    Inputs3 *in = arg;
    while (!g_stop) {
        ag_tensor p = 0, q = 0;
        if (ag_matmul(&p, in->b, in->b) != AG_OK || ag_tanh(&q, in->x) != AG_OK) {
            printf("  forward thread: failed: %s\n", ag_last_error());
            return (void *)1;
        }
        ag_tensor_free(p);
        ag_tensor_free(q);
        g_forward_products++;
    }
    return NULL;
}

/* What a child does: only the forking thread exists. Exit status 0 when everything worked and
 * gave the hand-computed values, else the number of the step that failed. */
static int child_work(void) {
    /* A backward pass: d/dx sum(x * x * 3) = 6x, on BIG_N elements (the pool's kernels). */
    ag_tensor x = 0, y = 0, y3 = 0, s = 0, g = 0;
    if (ag_tensor_full(&x, I64(BIG_N), 1, 0.5, AG_FLOAT64) != AG_OK) return 10;
    if (ag_tensor_set_requires_grad(x, true) != AG_OK) return 11;
    if (ag_mul(&y, x, x) != AG_OK || ag_mul_scalar(&y3, y, 3.0) != AG_OK) return 12;
    if (ag_sum(&s, y3, NULL, 0, false) != AG_OK) return 13;
    if (ag_backward(s, AG_NULL_TENSOR, false, false) != AG_OK) return 14;
    if (ag_tensor_grad(&g, x) != AG_OK || g == 0) return 15;
    const double *gp = NULL;
    if (ag_tensor_data_ptr((const void **)&gp, g) != AG_OK) return 16;
    if (gp[0] != 3.0 || gp[BIG_N - 1] != 3.0) return 17;
    double total = 0;
    if (ag_tensor_item(&total, s) != AG_OK || total != 0.75 * BIG_N) return 18;

    /* A matrix product split over the pool: ones(MM, MM) @ full(MM, MM, 0.25) = 0.25 * MM. */
    ag_tensor a = 0, b = 0, c = 0;
    if (ag_tensor_ones(&a, I64(MM, MM), 2, AG_FLOAT32) != AG_OK) return 20;
    if (ag_tensor_full(&b, I64(MM, MM), 2, 0.25, AG_FLOAT32) != AG_OK) return 21;
    if (ag_matmul(&c, a, b) != AG_OK) return 22;
    const float *cp = NULL;
    if (ag_tensor_data_ptr((const void **)&cp, c) != AG_OK) return 23;
    for (int64_t i = 0; i < (int64_t)MM * MM; i += 4099)
        if (cp[i] != 0.25f * MM) return 24;

    /* An elementwise operation above the threading threshold: exp(0) = 1. */
    ag_tensor z = 0, ez = 0;
    if (ag_tensor_zeros(&z, I64(BIG_N), 1, AG_FLOAT32) != AG_OK || ag_exp(&ez, z) != AG_OK) return 30;
    const float *ep = NULL;
    if (ag_tensor_data_ptr((const void **)&ep, ez) != AG_OK || ep[0] != 1.0f || ep[BIG_N - 1] != 1.0f) return 31;

    /* Handles: everything made here is freed, and a freed handle is refused. */
    ag_tensor all[] = {x, y, y3, s, g, a, b, c, z, ez};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (ag_tensor_free(all[i]) != AG_OK) return 40;
    if (ag_tensor_free(x) != AG_ERR_INVALID_HANDLE) return 41;
    return 0;
}

/* Prints every thread's stack of the hung process `pid` (gdb -batch, if gdb is installed), so
 * that a hang in CI says where it hangs. */
static void print_stacks(pid_t pid) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "command -v gdb >/dev/null && timeout 60 gdb -batch -p %d -ex 'thread apply all bt 30' 2>&1",
             (int)pid);
    printf("  the hung child's threads (gdb):\n");
    fflush(stdout);
    if (system(cmd) != 0) printf("  (no stacks: gdb missing or failed)\n");
    fflush(stdout);
}

/* Waits for `pid` until the deadline; prints its stacks and kills it if it is still running. */
static int wait_with_deadline(pid_t pid, double deadline_s, bool *timed_out) {
    double end = now_s() + deadline_s;
    int status = 0;
    *timed_out = false;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0) return -1;
        if (now_s() > end) {
            *timed_out = true;
            print_stacks(pid);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return status;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void test_fork_during_backward(void) {
    TRY(ag_set_num_threads(2));
    Inputs3 in = {0, 0, 0};
    TRY(ag_tensor_full(&in.x, I64(BIG_N), 1, 0.001, AG_FLOAT32));
    TRY(ag_tensor_set_requires_grad(in.x, true));
    TRY(ag_tensor_full(&in.a, I64(MM, MM), 2, 0.5, AG_FLOAT32));
    TRY(ag_tensor_set_requires_grad(in.a, true));
    TRY(ag_tensor_full(&in.b, I64(MM, MM), 2, 0.25, AG_FLOAT32));
    CHECK(one_backward_pass(in.x, in.a, in.b));

    pthread_t bt, ft;
    CHECK(pthread_create(&bt, NULL, backward_loop, &in) == 0);
    CHECK(pthread_create(&ft, NULL, forward_loop, &in) == 0);
    /* Wait until both threads are running passes. */
    while (g_backward_passes < 1 || g_forward_products < 1) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int ok = 0, hung = 0, failed = 0;
    double longest = 0; /* the longest child, against the deadline */
    for (int i = 0; i < FORKS; i++) {
        /* Spread the forks over the pass: a few milliseconds apart. */
        struct timespec ts = {0, 1000000L * (1 + i % 7)};
        nanosleep(&ts, NULL);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) exit(child_work()); /* exit, not _exit: a normal end (atexit, coverage profiles) */
        if (!CHECKF(pid > 0, "fork failed")) break;
        bool timed_out = false;
        double started = now_s();
        int status = wait_with_deadline(pid, CHILD_DEADLINE_S, &timed_out);
        double took = now_s() - started;
        if (took > longest) longest = took;
        if (timed_out) {
            hung++;
            CHECKF(false, "child %d hung (killed after %.0f s)", i, CHILD_DEADLINE_S);
            if (hung == 3) break; /* enough to tell; each costs the whole deadline */
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            CHECKF(false, "child %d: %s %d", i, WIFEXITED(status) ? "exit status" : "killed by signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        } else {
            ok++;
        }
    }
    g_stop = 1;
    void *r1 = NULL, *r2 = NULL;
    pthread_join(bt, &r1);
    pthread_join(ft, &r2);
    CHECK(r1 == NULL && r2 == NULL);
    printf("  %d children ok, %d hung, %d failed (the longest took %.2f s; deadline %.0f s); the parent ran %ld "
           "backward passes and %ld forward products\n",
           ok, hung, failed, longest, CHILD_DEADLINE_S, (long)g_backward_passes, (long)g_forward_products);
    CHECK(ok == FORKS);

    /* The parent carries on: a pass, and the pool still works. */
    CHECK(one_backward_pass(in.x, in.a, in.b));
    TRY(ag_tensor_free(in.x));
    TRY(ag_tensor_free(in.a));
    TRY(ag_tensor_free(in.b));
}

/* A child forked from a quiet parent, and a child that forks a grandchild. */
static void test_fork_nested(void) {
    pid_t pid = fork();
    if (pid == 0) {
        int r = child_work();
        if (r != 0) _exit(r);
        pid_t grandchild = fork();
        if (grandchild == 0) exit(child_work());
        bool timed_out = false;
        int status = wait_with_deadline(grandchild, CHILD_DEADLINE_S, &timed_out);
        _exit(timed_out ? 90 : WIFEXITED(status) ? WEXITSTATUS(status) : 91);
    }
    bool timed_out = false;
    int status = wait_with_deadline(pid, 2 * CHILD_DEADLINE_S, &timed_out);
    CHECKF(!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0, "nested fork: %s, status %d",
           timed_out ? "hung" : "finished", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(void) {
    test_begin();
    run_group_checking_handles("fork while other threads run backward passes and products", test_fork_during_backward);
    run_group_checking_handles("fork from a child (a grandchild)", test_fork_nested);
    check_no_leaks();
    return test_summary();
}
