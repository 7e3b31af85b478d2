/*
 * test_dlclose.c - loading and unloading libautograd.so while threads use it.
 *
 * The library is opened with dlopen (this program does not link it), used from two threads and the
 * main thread, and closed with dlclose, CYCLES times (default 20; argv[2] overrides). Each cycle:
 *   1. dlopen(LIBRARY) and resolve the functions with dlsym;
 *   2. ag_set_num_threads(4), so a large op uses the library's worker threads (and OpenBLAS's);
 *   3. a "staying" thread calls the library and leaves per-thread state behind: a failed call
 *      (its ag_last_error message), grad mode switched off and on, a small graph and its backward;
 *      then it waits, and exits only AFTER the dlclose (its thread-specific-data destructors run
 *      then);
 *   4. a "large" thread runs elementwise ops on 2^20 elements (above the worker-pool limit of
 *      2^15) and a reduction, and checks the values (1 + 2 = 3 everywhere: exact in float32);
 *   5. the main thread does the same large op at the same time, joins the large thread, frees
 *      everything (ag_live_handle_count must be 0) and calls dlclose while the library's worker
 *      threads are still alive;
 *   6. the staying thread is released and exits; the main thread joins it.
 * The library is linked with -z nodelete (scripts/build.sh), so dlclose leaves it loaded (as
 * include/autograd.h says): every cycle must find ag_version at the same address. Without that,
 * the staying thread dies in a destructor whose code was unmapped (SIGSEGV), and worker threads
 * finishing a chunk run unmapped code (intermittently).
 *
 * Usage: test_dlclose [LIBRARY [CYCLES]]   (LIBRARY defaults to .build/release/libautograd.so)
 * Output: one line per cycle and "N passed, M failed"; exit status 0 only if M is 0.
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_dlclose bindings/c/test_dlclose.c
 *        -ldl -lpthread
 */
#define _POSIX_C_SOURCE 200809L

#include "autograd.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_passed, g_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            g_passed++;                                                                            \
        } else {                                                                                   \
            g_failed++;                                                                            \
            printf("  %s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond);                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* The functions used, resolved afresh from each dlopen. */
static struct {
    const char *(*version)(void);
    const char *(*last_error)(void);
    ag_status (*set_num_threads)(int64_t);
    ag_status (*live_handle_count)(int64_t *);
    ag_status (*full)(ag_tensor *, const int64_t *, int64_t, double, ag_dtype);
    ag_status (*add)(ag_tensor *, ag_tensor, ag_tensor);
    ag_status (*mul)(ag_tensor *, ag_tensor, ag_tensor);
    ag_status (*exp)(ag_tensor *, ag_tensor);
    ag_status (*sum)(ag_tensor *, ag_tensor, const int64_t *, int64_t, bool);
    ag_status (*item)(double *, ag_tensor);
    ag_status (*set_requires_grad)(ag_tensor, bool);
    ag_status (*backward)(ag_tensor, ag_tensor, bool, bool);
    ag_status (*grad)(ag_tensor *, ag_tensor);
    ag_status (*set_grad_enabled)(bool *, bool);
    ag_status (*free)(ag_tensor);
} ag;

static bool resolve(void *lib) {
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&ag.field = dlsym(lib, name);                                                    \
        if (!ag.field) {                                                                           \
            printf("  dlsym %s: %s\n", name, dlerror());                                           \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    SYM(version, "ag_version");
    SYM(last_error, "ag_last_error");
    SYM(set_num_threads, "ag_set_num_threads");
    SYM(live_handle_count, "ag_live_handle_count");
    SYM(full, "ag_tensor_full");
    SYM(add, "ag_add");
    SYM(mul, "ag_mul");
    SYM(exp, "ag_exp");
    SYM(sum, "ag_sum");
    SYM(item, "ag_tensor_item");
    SYM(set_requires_grad, "ag_tensor_set_requires_grad");
    SYM(backward, "ag_backward");
    SYM(grad, "ag_tensor_grad");
    SYM(set_grad_enabled, "ag_set_grad_enabled");
    SYM(free, "ag_tensor_free");
#undef SYM
    return true;
}

/* Errors are counted under a mutex (the checks run on three threads). */
static pthread_mutex_t g_count_lock = PTHREAD_MUTEX_INITIALIZER;
#define CHECK_LOCKED(cond, ...)                                                                    \
    do {                                                                                           \
        pthread_mutex_lock(&g_count_lock);                                                         \
        CHECK(cond, __VA_ARGS__);                                                                  \
        pthread_mutex_unlock(&g_count_lock);                                                       \
    } while (0)

enum { LARGE = 1 << 20 };

/* full(1) + full(2) over LARGE float32 elements, exp of it, and the sum of the first: every
 * elementwise kernel here is above the worker-pool limit. */
static void large_op(const char *who) {
    int64_t shape[1] = {LARGE};
    ag_tensor a = 0, b = 0, c = 0, e = 0, s = 0;
    double total = 0;
    ag_status st = ag.full(&a, shape, 1, 1.0, AG_FLOAT32);
    if (st == AG_OK) st = ag.full(&b, shape, 1, 2.0, AG_FLOAT32);
    if (st == AG_OK) st = ag.add(&c, a, b);
    if (st == AG_OK) st = ag.exp(&e, c);
    if (st == AG_OK) st = ag.sum(&s, c, NULL, 0, false);
    if (st == AG_OK) st = ag.item(&total, s);
    CHECK_LOCKED(st == AG_OK, "%s: status %d: %s", who, st, ag.last_error());
    CHECK_LOCKED(total == 3.0 * LARGE, "%s: sum %.1f, want %.1f", who, total, 3.0 * LARGE);
    ag.free(a), ag.free(b), ag.free(c), ag.free(e), ag.free(s);
}

static void *large_thread(void *arg) {
    (void)arg;
    large_op("large thread");
    return NULL;
}

/* The staying thread: uses the library, then waits for `unloaded` before it exits. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static bool g_ready, g_unloaded;

static void *staying_thread(void *arg) {
    (void)arg;
    /* A failed call: this thread now has an ag_last_error message. */
    ag_status st = ag.free((ag_tensor)0x0100000100000063ULL);
    CHECK_LOCKED(st == AG_ERR_INVALID_HANDLE, "freeing a made-up handle gave %d", st);
    CHECK_LOCKED(strlen(ag.last_error()) > 0, "no message for the failed call");
    /* Grad mode off and on again: this thread now has grad-mode state. */
    bool previous = false;
    CHECK_LOCKED(ag.set_grad_enabled(&previous, false) == AG_OK && previous, "grad mode was off");
    CHECK_LOCKED(ag.set_grad_enabled(NULL, true) == AG_OK, "%s", ag.last_error());
    /* d(x*x)/dx at x = 3 is 6. */
    ag_tensor x = 0, y = 0, g = 0;
    double dx = 0;
    st = ag.full(&x, NULL, 0, 3.0, AG_FLOAT64);
    if (st == AG_OK) st = ag.set_requires_grad(x, true);
    if (st == AG_OK) st = ag.mul(&y, x, x);
    if (st == AG_OK) st = ag.backward(y, 0, false, false);
    if (st == AG_OK) st = ag.grad(&g, x);
    if (st == AG_OK) st = ag.item(&dx, g);
    CHECK_LOCKED(st == AG_OK && dx == 6.0, "status %d, dx %g: %s", st, dx, ag.last_error());
    ag.free(x), ag.free(y), ag.free(g);

    pthread_mutex_lock(&g_lock);
    g_ready = true;
    pthread_cond_broadcast(&g_cond);
    while (!g_unloaded) pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    return NULL; /* the thread's destructors run now, after the dlclose */
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : ".build/release/libautograd.so";
    int cycles = argc > 2 ? atoi(argv[2]) : 20;
    setvbuf(stdout, NULL, _IOLBF, 0);
    void *first_address = NULL;
    for (int cycle = 1; cycle <= cycles; cycle++) {
        void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            printf("dlopen %s: %s\n", path, dlerror());
            return 1;
        }
        if (!resolve(lib)) return 1;
        void *address = (void *)ag.version;
        if (cycle == 1) first_address = address;
        CHECK(address == first_address, "cycle %d: ag_version at %p, first at %p (the library was "
              "unloaded and mapped again)", cycle, address, first_address);
        CHECK(ag.set_num_threads(4) == AG_OK, "%s", ag.last_error());

        g_ready = g_unloaded = false;
        pthread_t staying, large;
        if (pthread_create(&staying, NULL, staying_thread, NULL) != 0 ||
            pthread_create(&large, NULL, large_thread, NULL) != 0) {
            printf("pthread_create failed\n");
            return 1;
        }
        large_op("main thread");
        pthread_join(large, NULL);
        pthread_mutex_lock(&g_lock);
        while (!g_ready) pthread_cond_wait(&g_cond, &g_lock);
        pthread_mutex_unlock(&g_lock);
        int64_t live = -1;
        CHECK(ag.live_handle_count(&live) == AG_OK && live == 0, "cycle %d: %" PRId64 " live handles",
              cycle, live);

        CHECK(dlclose(lib) == 0, "dlclose: %s", dlerror());
        memset(&ag, 0, sizeof ag); /* nothing may call into the closed handle's functions now */
        pthread_mutex_lock(&g_lock);
        g_unloaded = true;
        pthread_cond_broadcast(&g_cond);
        pthread_mutex_unlock(&g_lock);
        pthread_join(staying, NULL);
        printf("cycle %d: dlopen, ops on 3 threads, dlclose, a thread exits after it: ok\n", cycle);
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
