/*
 * test_hook_threads.c - gradient hooks run without the library's internal lock (issue 14,
 * item 10). A hook that waits for another thread must not deadlock when that thread calls the
 * library meanwhile: ag_tensor_grad, ag_tensor_set_requires_grad and ag_tensor_free on
 * unrelated tensors, a whole backward pass of its own, even a backward through the same
 * retained graph. Each wait is bounded (5 s): with the lock held across hooks the waits time
 * out, the hook returns non-zero and the backward fails with AG_ERR_CALLBACK, so the test fails
 * instead of hanging.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hook_started, helper_done;
    int what;               /* which calls the helper makes (see helper()) */
    ag_tensor unrelated;    /* a leaf with a gradient */
    ag_tensor other;        /* a leaf whose requires_grad the helper flips */
    ag_tensor doomed;       /* a leaf requiring grad that the helper frees */
    ag_tensor shared_loss;  /* the graph the hooked backward runs through (retained) */
    ag_status helper_status[4];
} Rendezvous;

static Rendezvous R = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, 0, 0, 0, 0, 0, {0}};

static bool wait_for(bool *flag) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&R.mu);
    int rc = 0;
    while (!*flag && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&R.cv, &R.mu, &deadline);
    bool ok = *flag;
    pthread_mutex_unlock(&R.mu);
    return ok;
}

static void raise_flag(bool *flag) {
    pthread_mutex_lock(&R.mu);
    *flag = true;
    pthread_cond_broadcast(&R.cv);
    pthread_mutex_unlock(&R.mu);
}

static pthread_t main_thread;

/* The hook: tells the helper it runs, then waits for the helper to finish its calls. */
static int32_t waiting_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement;
    (void)grad;
    (void)user_data;
    if (!pthread_equal(pthread_self(), main_thread)) return 0;
    raise_flag(&R.hook_started);
    return wait_for(&R.helper_done) ? 0 : 1;
}

static void *helper(void *arg) {
    (void)arg;
    if (!wait_for(&R.hook_started)) return NULL;
    if (R.what == 0) {
        ag_tensor g = 0;
        R.helper_status[0] = ag_tensor_grad(&g, R.unrelated);
        if (g) ag_tensor_free(g);
        R.helper_status[1] = ag_tensor_set_requires_grad(R.other, true);
        R.helper_status[2] = ag_tensor_free(R.doomed);
        /* A backward pass of its own, on a graph of its own. */
        ag_tensor y = 0, s = 0;
        R.helper_status[3] = ag_mul(&y, R.other, R.other);
        if (R.helper_status[3] == AG_OK) R.helper_status[3] = ag_sum(&s, y, NULL, 0, false);
        if (R.helper_status[3] == AG_OK) R.helper_status[3] = ag_backward(s, 0, false, false);
        ag_tensor_free(y);
        ag_tensor_free(s);
    } else {
        /* A backward through the same retained graph while the hooked one waits. */
        R.helper_status[0] = ag_backward(R.shared_loss, 0, true, false);
    }
    raise_flag(&R.helper_done);
    return NULL;
}

static void reset(int what) {
    R.hook_started = R.helper_done = false;
    R.what = what;
    memset(R.helper_status, 0, sizeof R.helper_status);
}

/* Hook on a leaf (runs in the pass's last phase) and on a result (runs before its rule). */
static void hook_waits_for_thread_calling_library(bool on_leaf) {
    reset(0);
    ag_tensor x = MAKE_RG(D(1, 2, 3), SHAPE(3)), y = 0, loss = 0, gx = 0;
    R.unrelated = MAKE_RG(D(4), SHAPE(1));
    R.other = MAKE(D(5, 6), SHAPE(2));
    R.doomed = MAKE_RG(D(7), SHAPE(1));
    ag_tensor u2 = 0, us = 0;
    TRY(ag_mul(&u2, R.unrelated, R.unrelated));
    TRY(ag_sum(&us, u2, NULL, 0, false));
    TRY(ag_backward(us, 0, false, false)); /* unrelated.grad = 8 */
    TRY(ag_mul_scalar(&y, x, 3));
    TRY(ag_sum(&loss, y, NULL, 0, false));
    TRY(ag_tensor_register_hook(NULL, on_leaf ? x : y, waiting_hook, NULL, NULL));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, helper, NULL) == 0);
    CHECK_OK(ag_backward(loss, 0, false, false));
    pthread_join(th, NULL);
    CHECK(R.helper_done);
    CHECK(R.helper_status[0] == AG_OK && R.helper_status[1] == AG_OK);
    CHECK(R.helper_status[2] == AG_OK && R.helper_status[3] == AG_OK);
    TRY(ag_tensor_grad(&gx, x));
    EXPECT_VALUES(gx, D(3, 3, 3), 3, "d/dx sum(3x) = 3");
    ag_tensor go = 0;
    TRY(ag_tensor_grad(&go, R.other));
    EXPECT_VALUES(go, D(10, 12), 2, "the helper's backward: d/do sum(o*o) = 2o");
    FREE(x, y, loss, gx, go, u2, us, R.unrelated, R.other);
}

static void hook_on_leaf(void) { hook_waits_for_thread_calling_library(true); }
static void hook_on_result(void) { hook_waits_for_thread_calling_library(false); }

/* Two backward passes through one retained graph, the helper's inside the main pass's hook
 * wait: both end, and x's gradient is accumulated twice (d/dx sum(x*x) = 2x, twice: 4x). The
 * hook waits only on the main thread; on the helper's thread it returns at once. */
static void same_graph_meanwhile(void) {
    reset(1);
    ag_tensor x = MAKE_RG(D(1, 2), SHAPE(2)), y = 0, gx = 0;
    TRY(ag_mul(&y, x, x));
    TRY(ag_sum(&R.shared_loss, y, NULL, 0, false));
    TRY(ag_tensor_register_hook(NULL, x, waiting_hook, NULL, NULL));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, helper, NULL) == 0);
    CHECK_OK(ag_backward(R.shared_loss, 0, true, false));
    pthread_join(th, NULL);
    CHECK(R.helper_done);
    CHECK(R.helper_status[0] == AG_OK);
    TRY(ag_tensor_grad(&gx, x));
    EXPECT_VALUES(gx, D(4, 8), 2, "2x from each of two passes");
    FREE(x, y, gx, R.shared_loss);
}

int main(void) {
    test_begin();
    main_thread = pthread_self();
    run_group_checking_handles("a hook on a leaf waits for a thread that calls the library", hook_on_leaf);
    run_group_checking_handles("a hook on a result waits for a thread that calls the library", hook_on_result);
    run_group_checking_handles("another backward through the same graph while a hook waits", same_graph_meanwhile);
    check_no_leaks();
    return test_summary();
}
