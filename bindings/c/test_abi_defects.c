/*
 * test_abi_defects.c - regression tests for defects of the C interface found from outside (issue
 * 14, items 1-4), each with the rest of its class:
 *
 *   handles     a freed handle is never valid again: after 2^24 + 64 alloc/free cycles of one
 *               slot (where 24-bit generations used to wrap and hand the freed handle out again)
 *               the stale handle is still refused; consecutive handles are not adjacent
 *               (handle + 1 and handle - 1 are not live handles). The 2^24-cycle loop takes a few
 *               seconds natively and runs only there: it is skipped under valgrind and the
 *               sanitizers (detected at compile time, and for valgrind through LD_PRELOAD).
 *   hooks       a failed ag_tensor_register_hook never calls destroy (the caller keeps user_data):
 *               every failure path one by one, then registration racing
 *               ag_tensor_set_requires_grad(x, false / true) on another thread, counting destroy
 *               calls against successful registrations; a failing hook's message quotes the
 *               failure of its own call.
 *   gradcheck   every way a build function can break its contract (output shape or dtype that
 *               changes between calls, no output, a made-up / freed / optimizer handle as output,
 *               freeing its borrowed inputs, failing with or without a failed call of its own) is
 *               AG_ERR_CALLBACK with a message, writes nothing, leaks nothing; the identity
 *               function, a constant function, a nested ag_gradcheck and a call made with grad
 *               mode off all work.
 *   gradcheck_more_elements, gradcheck_recursion  the cases that killed the process before the
 *               fix: more output elements on a later call (an index out of range), and a build
 *               function that calls ag_gradcheck on itself without end (a stack overflow).
 *   last_error  only a failing call replaces ag_last_error(): after one failure, the pointer it
 *               returned stays the same and readable (valgrind checks the reads) across
 *               successful calls of every part of the interface, ag_gradcheck and a backward with
 *               hooks included; a callback's own failing call inside a successful call is what
 *               ag_last_error() then gives (documented).
 *
 * Usage: test_abi_defects [group ...]   (no argument: every group, in the order above).
 * Output: "== group" lines, one line per failed check, and finally exactly "N passed, M failed";
 * exit status 0 only if M is 0. No handle may be live at the end.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether this run is under valgrind or a sanitizer, where 2^24 library calls take minutes. */
static bool slow_run(void) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return true;
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return true;
#endif
#endif
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

/* ========================================================================================== */
/* handles                                                                                    */
/* ========================================================================================== */

static void test_handles(void) {
    int64_t base = live_handles();

    /* handle + 1 / handle - 1 name no live tensor (the header promises nothing about handle
     * values; the library makes consecutive handles differ in their generation bits). */
    set_ctx("neighbouring handles");
    enum { N = 64 };
    ag_tensor ts[N];
    for (int i = 0; i < N; i++) ts[i] = SCALAR((double)i);
    int adjacent = 0;
    for (int i = 0; i < N; i++) {
        for (int d = -1; d <= 1; d += 2) {
            int64_t n = -1;
            ag_tensor near = ts[i] + (uint64_t)(int64_t)d;
            if (ag_tensor_numel(&n, near) != AG_ERR_INVALID_HANDLE) adjacent++;
        }
    }
    CHECKF(adjacent == 0, "%d of %d neighbours (handle +/- 1) of %d consecutive handles are live handles "
                          "(e.g. %#llx and %#llx)", adjacent, 2 * N, N, (unsigned long long)ts[0],
           (unsigned long long)ts[1]);
    for (int i = 0; i < N; i++) ag_tensor_free(ts[i]);

    /* The generation of one slot must not wrap: free a handle, then reuse its slot 2^24 + 64
     * times (the free list hands the same slot back each time). */
    set_ctx("2^24 + 64 alloc/free cycles of one slot");
    if (slow_run()) {
        printf("  (the 2^24-cycle loop runs natively only: skipped under valgrind and the sanitizers)\n");
    } else {
        ag_tensor stale = SCALAR(42.0);
        CHECK_OK(ag_tensor_free(stale));
        const long cycles = (1L << 24) + 64;
        long reissued = -1;
        double start = now_seconds();
        for (long i = 0; i < cycles; i++) {
            ag_tensor t = AG_NULL_TENSOR;
            if (!TRY(ag_tensor_zeros(&t, NULL, 0, AG_FLOAT64))) break;
            if (t == stale && reissued < 0) {
                reissued = i + 1;
                double v = -1;
                ag_status st = ag_tensor_item(&v, stale);
                CHECKF(false, "the freed handle %#llx was issued again after %ld alloc/free cycles; "
                              "ag_tensor_item(stale) then gives %s and %g (another tensor's value, not 42)",
                       (unsigned long long)stale, reissued, ag_status_name(st), v);
            }
            ag_tensor_free(t);
        }
        printf("  %ld alloc/free cycles in %.1f s\n", cycles, now_seconds() - start);
        CHECK(reissued < 0);
        double v = -1;
        int64_t n = -1;
        CHECK_ERR(ag_tensor_item(&v, stale), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(ag_tensor_numel(&n, stale), AG_ERR_INVALID_HANDLE);
        CHECK_ERR(ag_tensor_free(stale), AG_ERR_INVALID_HANDLE);
        CHECK(v == -1 && n == -1);
    }
    set_ctx("%s", "");
    CHECK(live_handles() == base);
}

/* ========================================================================================== */
/* hooks                                                                                      */
/* ========================================================================================== */

typedef struct {
    int destroyed; /* destroy calls with this user_data (the test frees it itself) */
} HookData;

static atomic_int g_destroys;

static void hook_destroy(void *p) {
    ((HookData *)p)->destroyed++;
    atomic_fetch_add(&g_destroys, 1);
}

static int32_t noop_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad, (void)user_data;
    return 0;
}

/* A hook whose own call fails (shapes that do not broadcast) before it returns 4. */
static int32_t failing_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)user_data;
    ag_tensor other = AG_NULL_TENSOR, sum = AG_NULL_TENSOR;
    if (ag_tensor_zeros(&other, (const int64_t[]){5}, 1, AG_FLOAT64) != AG_OK) return 5;
    ag_status st = ag_add(&sum, grad, other);
    ag_tensor_free(other);
    ag_tensor_free(sum);
    return st == AG_OK ? 6 : 4;
}

/* One failing registration: the status, a message fragment, and no destroy call. */
static void expect_refused(ag_tensor t, ag_grad_hook hook, ag_status want, const char *fragment, const char *what) {
    set_ctx("%s", what);
    HookData u = {0};
    int before = atomic_load(&g_destroys);
    int64_t id = -77;
    CHECK_ERR(ag_tensor_register_hook(&id, t, hook, &u, hook_destroy), want);
    CHECKF(strstr(ag_last_error(), fragment) != NULL, "message \"%s\" lacks \"%s\"", ag_last_error(), fragment);
    CHECKF(u.destroyed == 0 && atomic_load(&g_destroys) == before,
           "a failed registration called destroy %d time(s): the caller, who keeps user_data, would free it twice",
           u.destroyed);
    CHECK(id == -77);
}

/* The race, in rounds: the main thread starts round i (a store this thread is spinning on),
 * waits a few spins (a different number each round, to sweep the window) and registers a hook
 * on x, while this thread turns requires_grad off at once; the main thread turns it on again
 * between rounds. Spinning (not a barrier, whose sleeping waiter wakes late) keeps both threads
 * running at the same moment; the waits yield now and then for runs where threads take turns
 * (valgrind, a busy machine). */
typedef struct {
    ag_tensor x;
    int rounds;
    atomic_int ready, go, done;
} Race;

static void wait_for(atomic_int *v, int value) {
    for (unsigned spins = 1; atomic_load(v) != value; spins++)
        if (spins % 1024 == 0) sched_yield();
}

static void *turn_requires_grad_off(void *p) {
    Race *r = p;
    for (int i = 1; i <= r->rounds; i++) {
        atomic_store(&r->ready, i);
        wait_for(&r->go, i);
        ag_tensor_set_requires_grad(r->x, false);
        atomic_store(&r->done, i);
    }
    return NULL;
}

/* The race made deterministic: a hook on another thread's backward (which holds the graph lock
 * while hooks run) signals, sleeps 50 ms, and turns x's requires_grad off; meanwhile the main
 * thread registers a hook on x, which sees requires_grad on, then waits for the lock and finds it
 * off. (Were hooks run outside the lock, the registration would simply succeed first.) */
typedef struct {
    ag_tensor x, other;
    atomic_int in_hook;
} Holder;

static int32_t slow_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)replacement, (void)grad;
    Holder *h = user_data;
    atomic_store(&h->in_hook, 1);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    return ag_tensor_set_requires_grad(h->x, false) == AG_OK ? 0 : 1;
}

static void *backward_with_slow_hook(void *p) {
    Holder *h = p;
    ag_tensor s = AG_NULL_TENSOR;
    if (ag_tensor_register_hook(NULL, h->other, slow_hook, h, NULL) != AG_OK ||
        ag_sum(&s, h->other, NULL, 0, false) != AG_OK || ag_backward(s, AG_NULL_TENSOR, false, false) != AG_OK)
        atomic_store(&h->in_hook, -1);
    ag_tensor_free(s);
    return NULL;
}

static void test_hooks(void) {
    int64_t base = live_handles();

    /* Each failure path, deterministically. */
    ag_tensor x = MAKE_RG(D(1.0, 2.0), SHAPE(2));
    ag_tensor c = MAKE(D(1.0, 2.0), SHAPE(2));
    ag_tensor freed = SCALAR(1.0);
    ag_tensor_free(freed);
    ag_optimizer opt = 0;
    CHECK_OK(ag_optimizer_sgd(&opt, &x, 1, 0.1, 0.0, false, 0.0));
    ag_tensor off = MAKE_RG(D(3.0), SHAPE(1));
    CHECK_OK(ag_tensor_set_requires_grad(off, false));
    ag_tensor result_const = AG_NULL_TENSOR, result_nograd = AG_NULL_TENSOR;
    CHECK_OK(ag_exp(&result_const, c));
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    CHECK_OK(ag_exp(&result_nograd, x));
    CHECK_OK(ag_set_grad_enabled(NULL, prev));

    expect_refused(x, NULL, AG_ERR_ARGUMENT, "hook is NULL", "hook NULL");
    expect_refused(AG_NULL_TENSOR, noop_hook, AG_ERR_INVALID_HANDLE, "handle is 0", "handle 0");
    expect_refused(freed, noop_hook, AG_ERR_INVALID_HANDLE, "not a live tensor handle", "freed handle");
    expect_refused(opt, noop_hook, AG_ERR_INVALID_HANDLE, "not a live tensor handle", "an optimizer handle");
    expect_refused(c, noop_hook, AG_ERR_STATE, "does not require grad", "a leaf without requires_grad");
    expect_refused(off, noop_hook, AG_ERR_STATE, "does not require grad", "a leaf whose requires_grad was turned off");
    expect_refused(result_const, noop_hook, AG_ERR_STATE, "does not require grad", "a result of constants");
    expect_refused(result_nograd, noop_hook, AG_ERR_STATE, "does not require grad", "a result made under no_grad");

    /* Success: destroy runs exactly once, when the hook is removed or its tensor goes. */
    set_ctx("successful registrations");
    HookData kept = {0}, removed = {0};
    int64_t id = -1;
    CHECK_OK(ag_tensor_register_hook(&id, x, noop_hook, &removed, hook_destroy));
    CHECK(removed.destroyed == 0);
    CHECK_OK(ag_tensor_remove_hook(x, id));
    CHECK(removed.destroyed == 1);
    ag_tensor y = AG_NULL_TENSOR;
    CHECK_OK(ag_mul_scalar(&y, x, 2.0));
    CHECK_OK(ag_tensor_register_hook(NULL, y, noop_hook, &kept, hook_destroy));
    CHECK_OK(ag_tensor_free(y));
    CHECK(kept.destroyed == 1);

    /* A failing hook: AG_ERR_CALLBACK, and the message quotes the hook's own failed call. */
    set_ctx("a hook whose own call failed");
    ag_tensor s = AG_NULL_TENSOR;
    HookData fh = {0};
    CHECK_OK(ag_tensor_register_hook(&id, x, failing_hook, &fh, hook_destroy));
    CHECK_OK(ag_sum(&s, x, NULL, 0, false));
    CHECK_ERR(ag_backward(s, AG_NULL_TENSOR, false, false), AG_ERR_CALLBACK);
    CHECKF(strstr(ag_last_error(), "returned 4") && strstr(ag_last_error(), "ag_add"),
           "the message does not name the hook's status and its failed call: \"%s\"", ag_last_error());
    CHECK_OK(ag_tensor_remove_hook(x, id));
    CHECK(fh.destroyed == 1);
    FREE(s, c, off, result_const, result_nograd);
    CHECK_OK(ag_optimizer_free(opt));

    /* Registration that finds requires_grad turned off while it waited for the graph lock. */
    set_ctx("register_hook while another thread's hook turns requires_grad off");
    {
        Holder hold = {.x = x, .other = MAKE_RG(D(1.0), SHAPE(1))};
        atomic_init(&hold.in_hook, 0);
        pthread_t bt;
        CHECK(pthread_create(&bt, NULL, backward_with_slow_hook, &hold) == 0);
        while (atomic_load(&hold.in_hook) == 0) sched_yield();
        HookData u = {0};
        int64_t hid = -1;
        ag_status st = ag_tensor_register_hook(&hid, x, noop_hook, &u, hook_destroy);
        pthread_join(bt, NULL);
        CHECK(atomic_load(&hold.in_hook) == 1);
        CHECKF(st == AG_OK || st == AG_ERR_STATE, "register_hook returned %s", ag_status_name(st));
        if (st == AG_OK) {
            CHECK_OK(ag_tensor_remove_hook(x, hid));
            CHECK(u.destroyed == 1);
        } else {
            CHECKF(u.destroyed == 0, "the refused registration called destroy %d time(s): the caller, who keeps "
                   "user_data on failure, would free it twice", u.destroyed);
        }
        CHECK_OK(ag_tensor_set_requires_grad(x, true));
        CHECK_OK(ag_tensor_free(hold.other));
    }

    /* The race: registration against requires_grad turned off by another thread. Every
     * registration either succeeds (destroy runs once, at ag_tensor_remove_hook) or fails with
     * AG_ERR_STATE (destroy never runs). */
    set_ctx("register_hook racing set_requires_grad(x, false)");
    Race race = {.x = x, .rounds = slow_run() ? 2000 : 20000};
    atomic_init(&race.ready, 0);
    atomic_init(&race.go, 0);
    atomic_init(&race.done, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, turn_requires_grad_off, &race) == 0);
    long succeeded = 0, refused = 0, destroyed_on_failure = 0, bad_success = 0, other = 0;
    for (int i = 1; i <= race.rounds; i++) {
        HookData *u = calloc(1, sizeof *u);
        int64_t hid = -1;
        wait_for(&race.ready, i); /* the other thread is spinning now */
        atomic_store(&race.go, i);
        for (volatile int k = 0; k < (i * 37) % 3000; k++) {
        }
        ag_status st = ag_tensor_register_hook(&hid, x, noop_hook, u, hook_destroy);
        wait_for(&race.done, i);
        if (st == AG_OK) {
            succeeded++;
            if (u->destroyed != 0) bad_success++;
            if (ag_tensor_remove_hook(x, hid) != AG_OK || u->destroyed != 1) bad_success++;
        } else if (st == AG_ERR_STATE) {
            refused++;
            if (u->destroyed != 0) destroyed_on_failure++;
        } else {
            other++;
        }
        free(u);
        ag_tensor_set_requires_grad(x, true);
    }
    pthread_join(th, NULL);
    printf("  %d racing registrations: %ld succeeded, %ld refused (AG_ERR_STATE)\n", race.rounds, succeeded, refused);
    CHECKF(destroyed_on_failure == 0,
           "%ld of %ld refused registrations called destroy (the caller keeps user_data on failure)",
           destroyed_on_failure, refused);
    CHECKF(bad_success == 0, "%ld successful registrations did not run destroy exactly once at removal", bad_success);
    CHECKF(other == 0, "%ld registrations failed with a status other than AG_ERR_STATE", other);
    CHECK_OK(ag_tensor_free(x));
    set_ctx("%s", "");
    CHECK(live_handles() == base);
}

/* ========================================================================================== */
/* gradcheck                                                                                  */
/* ========================================================================================== */

enum {
    B_SQUARE,          /* x * x: a correct function */
    B_MORE,            /* x * x, then one element more on every later call */
    B_FEWER,           /* x * x, then one element fewer */
    B_RESHAPED,        /* x * x of shape [3], then the same count as [1, 3] */
    B_DTYPE_LATER,     /* x * x, then float32 */
    B_DTYPE_FIRST,     /* float32 from the first call */
    B_NO_OUTPUT,       /* returns 0 without writing *out */
    B_MADE_UP,         /* writes a made-up handle */
    B_OPTIMIZER,       /* writes an optimizer handle (which must survive) */
    B_FREED_OUTPUT,    /* writes x * x, then frees it */
    B_FREES_INPUT,     /* writes x * x and frees its borrowed input */
    B_IDENTITY,        /* writes its input handle */
    B_FAIL_WITH_OUTPUT,/* writes x * x and returns 5 */
    B_FAIL_INNER,      /* a failed call of its own, then returns 1 */
    B_FAIL_PLAIN,      /* returns 9, no failed call of its own */
    B_SWALLOWED,       /* a failed call of its own, then a correct output and 0 */
    B_CONSTANT,        /* a new tensor that does not depend on the input */
    B_NESTED,          /* gradchecks x * x itself, then returns x * x */
    B_RECURSE          /* calls ag_gradcheck on itself, without end */
};

typedef struct {
    int mode;
    int calls;
    ag_optimizer opt;    /* B_OPTIMIZER */
    int nested_failures; /* B_NESTED: nested checks that failed or did not pass */
} Build;

static int32_t build(ag_tensor *out, const ag_tensor *in, int64_t n, void *user_data) {
    Build *b = user_data;
    b->calls++;
    if (n != 1) return 50;
    bool first = b->calls == 1;
    switch (b->mode) {
    case B_MORE:
        if (!first) return ag_tensor_zeros(out, (const int64_t[]){4}, 1, AG_FLOAT64);
        break;
    case B_FEWER:
        if (!first) return ag_tensor_zeros(out, (const int64_t[]){2}, 1, AG_FLOAT64);
        break;
    case B_RESHAPED:
        if (!first) return ag_tensor_zeros(out, (const int64_t[]){1, 3}, 2, AG_FLOAT64);
        break;
    case B_DTYPE_LATER:
        if (!first) return ag_tensor_zeros(out, (const int64_t[]){3}, 1, AG_FLOAT32);
        break;
    case B_DTYPE_FIRST: return ag_tensor_zeros(out, (const int64_t[]){3}, 1, AG_FLOAT32);
    case B_NO_OUTPUT: return 0;
    case B_MADE_UP: *out = 0x0123456789abcdefULL; return 0;
    case B_OPTIMIZER: *out = b->opt; return 0;
    case B_FREED_OUTPUT: {
        ag_status st = ag_mul(out, in[0], in[0]);
        ag_tensor_free(*out);
        return st;
    }
    case B_FREES_INPUT: {
        ag_status st = ag_mul(out, in[0], in[0]);
        ag_tensor_free(in[0]);
        return st;
    }
    case B_IDENTITY: *out = in[0]; return 0;
    case B_FAIL_WITH_OUTPUT: return ag_mul(out, in[0], in[0]) == AG_OK ? 5 : 6;
    case B_FAIL_INNER: {
        ag_tensor bad = AG_NULL_TENSOR;
        ag_tensor other = AG_NULL_TENSOR;
        if (ag_tensor_zeros(&other, (const int64_t[]){5}, 1, AG_FLOAT64) != AG_OK) return 2;
        ag_status st = ag_add(&bad, in[0], other);
        ag_tensor_free(other);
        ag_tensor_free(bad);
        return st == AG_OK ? 3 : 1;
    }
    case B_FAIL_PLAIN: return 9;
    case B_SWALLOWED: {
        int64_t nd = 0;
        if (ag_tensor_ndim(&nd, AG_NULL_TENSOR) == AG_OK) return 7; /* fails, and is ignored */
        break;
    }
    case B_CONSTANT: return ag_tensor_ones(out, (const int64_t[]){2}, 1, AG_FLOAT64);
    case B_NESTED: {
        Build inner = {B_SQUARE, 0, 0, 0};
        bool passed = false;
        if (ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build, &inner, in, 1, 1e-6, 1e-7, 1e-5) != AG_OK || !passed)
            b->nested_failures++;
        break;
    }
    case B_RECURSE: {
        bool passed = false;
        if (ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build, b, in, 1, 1e-6, 1e-7, 1e-5) != AG_OK) return 1;
        break;
    }
    default: break;
    }
    return ag_mul(out, in[0], in[0]);
}

/* ag_gradcheck of build in `mode` on x = [0.5, -1, 2] (requires grad): the status, a fragment of
 * the message (NULL for AG_OK), nothing written on failure, no handle leaked. */
static void gradcheck_case(int mode, const char *name, ag_status want, const char *fragment, bool want_passed) {
    set_ctx("build function: %s", name);
    int64_t base = live_handles();
    ag_tensor x = MAKE_RG(D(0.5, -1.0, 2.0), SHAPE(3));
    Build b = {mode, 0, 0, 0};
    ag_tensor param = AG_NULL_TENSOR;
    if (mode == B_OPTIMIZER) {
        param = MAKE_RG(D(1.0), SHAPE(1));
        CHECK_OK(ag_optimizer_sgd(&b.opt, &param, 1, 0.1, 0.0, false, 0.0));
    }
    bool passed = !want_passed;
    int64_t wi = -9, wx = -9;
    double wa = -9, wn = -9;
    ag_status st = ag_gradcheck(&passed, &wi, &wx, &wa, &wn, build, &b, &x, 1, 1e-6, 1e-7, 1e-5);
    status_at(st, want, name, HERE);
    if (want == AG_OK) {
        CHECKF(passed == want_passed, "passed is %d, expected %d (worst: input %lld[%lld], analytic %g, numeric %g)",
               passed, want_passed, (long long)wi, (long long)wx, wa, wn);
    } else {
        CHECKF(strstr(ag_last_error(), fragment) != NULL, "message \"%s\" lacks \"%s\"", ag_last_error(), fragment);
        CHECKF(passed == !want_passed && wi == -9 && wx == -9 && wa == -9 && wn == -9,
               "ag_gradcheck failed but wrote its outputs");
    }
    if (mode == B_NESTED) CHECKF(b.nested_failures == 0, "%d nested gradchecks failed", b.nested_failures);
    if (mode == B_OPTIMIZER) {
        double lr = 0;
        CHECK_OK(ag_optimizer_lr(&lr, b.opt)); /* still alive: the library left it alone */
        CHECK_OK(ag_optimizer_free(b.opt));
        CHECK_OK(ag_tensor_free(param));
    }
    CHECK_OK(ag_tensor_free(x));
    CHECKF(live_handles() == base, "%lld handles leaked", (long long)(live_handles() - base));
}

static void test_gradcheck(void) {
    gradcheck_case(B_SQUARE, "x * x", AG_OK, NULL, true);
    gradcheck_case(B_FEWER, "fewer elements on a later call", AG_ERR_CALLBACK, "output changed between calls", false);
    gradcheck_case(B_RESHAPED, "another shape, as many elements", AG_ERR_CALLBACK, "output changed between calls",
                   false);
    gradcheck_case(B_DTYPE_LATER, "float32 on a later call", AG_ERR_CALLBACK, "output changed between calls", false);
    gradcheck_case(B_DTYPE_FIRST, "float32 output", AG_ERR_CALLBACK, "must be float64", false);
    gradcheck_case(B_NO_OUTPUT, "returns 0 but writes nothing", AG_ERR_CALLBACK, "wrote no tensor handle", false);
    gradcheck_case(B_MADE_UP, "a made-up output handle", AG_ERR_CALLBACK, "is not a live tensor handle", false);
    gradcheck_case(B_OPTIMIZER, "an optimizer handle as output", AG_ERR_CALLBACK, "is not a live tensor handle",
                   false);
    gradcheck_case(B_FREED_OUTPUT, "an output it freed", AG_ERR_CALLBACK, "is not a live tensor handle", false);
    gradcheck_case(B_FREES_INPUT, "frees its borrowed input", AG_ERR_CALLBACK, "freed its input handle 0", false);
    gradcheck_case(B_FAIL_WITH_OUTPUT, "fails after writing an output", AG_ERR_CALLBACK, "returned 5", false);
    gradcheck_case(B_FAIL_INNER, "fails after a failed call", AG_ERR_CALLBACK, "(its last error: ag_add", false);
    gradcheck_case(B_IDENTITY, "the identity (its input as output)", AG_OK, NULL, true);
    gradcheck_case(B_SWALLOWED, "a failed call it recovers from", AG_OK, NULL, true);
    gradcheck_case(B_CONSTANT, "a constant (no dependence on the input)", AG_OK, NULL, true);
    gradcheck_case(B_NESTED, "gradchecks inside", AG_OK, NULL, true);

    /* A failing build function with no failed call of its own: the message must not quote an
     * older failure of this thread. */
    set_ctx("build fails, no failed call of its own");
    int64_t nd = 0;
    CHECK_ERR(ag_tensor_ndim(&nd, AG_NULL_TENSOR), AG_ERR_INVALID_HANDLE);
    gradcheck_case(B_FAIL_PLAIN, "returns 9", AG_ERR_CALLBACK, "the build function returned 9", false);
    CHECKF(strstr(ag_last_error(), "AG_NULL_TENSOR") == NULL && strstr(ag_last_error(), "its last error") == NULL,
           "the message quotes an older failure: \"%s\"", ag_last_error());

    /* With grad mode off on the calling thread, the analytic pass still records. */
    set_ctx("grad mode off");
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, false));
    gradcheck_case(B_SQUARE, "x * x under no_grad", AG_OK, NULL, true);
    CHECK_OK(ag_set_grad_enabled(NULL, prev));
    set_ctx("%s", "");
}

/* Before the fix this killed the process (an index out of range in ag_gradcheck). */
static void test_gradcheck_more_elements(void) {
    gradcheck_case(B_MORE, "more elements on a later call", AG_ERR_CALLBACK, "output changed between calls", false);
    set_ctx("%s", "");
}

/* Before the fix this overflowed the stack. */
static void test_gradcheck_recursion(void) {
    gradcheck_case(B_RECURSE, "calls ag_gradcheck on itself", AG_ERR_CALLBACK, "nested ag_gradcheck calls", false);
    set_ctx("%s", "");
}

/* ========================================================================================== */
/* last_error                                                                                 */
/* ========================================================================================== */

static const char *g_msg;    /* the pointer ag_last_error() gave after the one failure */
static char g_saved[512];    /* its text then */

/* The pointer is unchanged and its text too (valgrind checks the read of freed memory). */
static void same_message_at(const char *after, const char *file, int line) {
    bool same_text = strcmp(g_msg, g_saved) == 0; /* reads the old pointer whatever happened */
    const char *now = ag_last_error();
    check_at(now == g_msg && same_text, file, line,
             "after %s (successful), ag_last_error() moved from %p to %p, text \"%s\" (was \"%s\")", after,
             (const void *)g_msg, (const void *)now, now, g_saved);
}
#define SAME(after) same_message_at((after), HERE)

static int32_t times_two_hook(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)user_data;
    return ag_mul_scalar(replacement, grad, 2.0) == AG_OK ? 0 : 1;
}

static void test_last_error(void) {
    int64_t base = live_handles();
    ag_tensor none = AG_NULL_TENSOR;
    CHECK_ERR(ag_tensor_ndim(NULL, none), AG_ERR_ARGUMENT);
    g_msg = ag_last_error();
    snprintf(g_saved, sizeof g_saved, "%s", g_msg);

    /* Information and creation */
    CHECK(ag_version() != NULL);
    CHECK(ag_status_name(AG_ERR_SHAPE) != NULL);
    int64_t n = 0;
    CHECK_OK(ag_live_handle_count(&n));
    CHECK_OK(ag_num_threads(&n));
    CHECK_OK(ag_set_num_threads(n));
    SAME("information calls");
    ag_tensor x = AG_NULL_TENSOR, w = AG_NULL_TENSOR, z = AG_NULL_TENSOR;
    CHECK_OK(ag_tensor_from_data(&x, D(0.5, -1.0, 2.0), (const int64_t[]){3}, 1, AG_FLOAT64));
    CHECK_OK(ag_tensor_init(&w, (const int64_t[]){3, 3}, 2, AG_INIT_XAVIER_UNIFORM, 7, AG_FLOAT64));
    CHECK_OK(ag_tensor_zeros(&z, (const int64_t[]){3}, 1, AG_FLOAT64));
    SAME("creation");
    /* Inspection */
    int64_t shape[AG_MAX_NDIM];
    ag_dtype dt = 0;
    double buf[3];
    const void *ptr = NULL;
    bool rg = false;
    CHECK_OK(ag_tensor_ndim(&n, x));
    CHECK_OK(ag_tensor_shape(shape, AG_MAX_NDIM, x));
    CHECK_OK(ag_tensor_numel(&n, x));
    CHECK_OK(ag_tensor_dtype(&dt, x));
    CHECK_OK(ag_tensor_copy_data(buf, 3, AG_FLOAT64, x));
    CHECK_OK(ag_tensor_data_ptr(&ptr, x));
    CHECK_OK(ag_tensor_set_requires_grad(x, true));
    CHECK_OK(ag_tensor_set_requires_grad(w, true));
    CHECK_OK(ag_tensor_requires_grad(&rg, x));
    SAME("inspection");
    /* Operations, hooks, backward, grad */
    ag_tensor h = AG_NULL_TENSOR, t = AG_NULL_TENSOR, loss = AG_NULL_TENSOR, g = AG_NULL_TENSOR, d = AG_NULL_TENSOR;
    int64_t id = 0;
    CHECK_OK(ag_tensor_register_hook(&id, x, times_two_hook, NULL, NULL));
    CHECK_OK(ag_matmul(&h, w, x));
    CHECK_OK(ag_tanh(&t, h));
    CHECK_OK(ag_sum(&loss, t, NULL, 0, false));
    SAME("operations and register_hook");
    CHECK_OK(ag_grad(&g, &loss, 1, NULL, &x, 1, true, false, false));
    CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, true, false));
    CHECK_OK(ag_tensor_free(g));
    CHECK_OK(ag_tensor_grad(&g, x));
    CHECK_OK(ag_detach(&d, x));
    CHECK_OK(ag_tensor_remove_hook(x, id));
    CHECK_OK(ag_tensor_zero_grad(x));
    bool prev = true;
    CHECK_OK(ag_set_grad_enabled(&prev, true));
    CHECK_OK(ag_is_grad_enabled(&prev));
    int64_t len = 0;
    CHECK_OK(ag_graph_to_dot(NULL, 0, &len, loss));
    SAME("backward with a hook, grad, detach, DOT");
    /* Optimizers */
    ag_optimizer opt = 0;
    double lr = 0;
    CHECK_OK(ag_optimizer_adam(&opt, &w, 1, 0.01, 0.9, 0.999, 1e-8, 0.0));
    CHECK_OK(ag_backward(loss, AG_NULL_TENSOR, false, false));
    CHECK_OK(ag_optimizer_step(opt));
    CHECK_OK(ag_optimizer_zero_grad(opt));
    CHECK_OK(ag_optimizer_set_lr(opt, 0.02));
    CHECK_OK(ag_optimizer_lr(&lr, opt));
    CHECK_OK(ag_optimizer_free(opt));
    SAME("optimizer calls");
    /* gradcheck: the defect (it cleared the message and freed this very string) */
    bool passed = false;
    Build b = {B_SQUARE, 0, 0, 0};
    CHECK_OK(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build, &b, &x, 1, 1e-6, 1e-7, 1e-5));
    CHECK(passed);
    SAME("ag_gradcheck");
    FREE(x, w, z, h, t, loss, g, d);
    SAME("ag_tensor_free");

    /* A callback's own failing call inside an outer call that succeeds: that failure is the
     * last failing call on this thread, so ag_last_error() gives it (documented). */
    set_ctx("a failed call inside a successful ag_gradcheck");
    ag_tensor y = MAKE_RG(D(0.5, -1.0, 2.0), SHAPE(3));
    Build sw = {B_SWALLOWED, 0, 0, 0};
    CHECK_OK(ag_gradcheck(&passed, NULL, NULL, NULL, NULL, build, &sw, &y, 1, 1e-6, 1e-7, 1e-5));
    CHECKF(strstr(ag_last_error(), "ag_tensor_ndim") != NULL, "ag_last_error() is \"%s\", expected the build "
           "function's own failed ag_tensor_ndim", ag_last_error());
    CHECK_OK(ag_tensor_free(y));
    set_ctx("%s", "");
    CHECK(live_handles() == base);
}

/* ========================================================================================== */

static const struct {
    const char *name;
    void (*fn)(void);
} groups[] = {{"handles", test_handles},
              {"hooks", test_hooks},
              {"gradcheck", test_gradcheck},
              {"gradcheck_more_elements", test_gradcheck_more_elements},
              {"gradcheck_recursion", test_gradcheck_recursion},
              {"last_error", test_last_error}};

int main(int argc, char **argv) {
    test_begin();
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        bool chosen = argc < 2;
        for (int a = 1; a < argc; a++) chosen |= strcmp(argv[a], groups[i].name) == 0;
        if (chosen) run_group(groups[i].name, groups[i].fn);
    }
    check_no_leaks();
    return test_summary();
}
