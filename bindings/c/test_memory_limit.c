/*
 * test_memory_limit.c - Autograd under a memory limit: running out of memory must fail calls
 * with AG_ERR_OUT_OF_MEMORY, never end the process, and the library must work again once memory
 * is freed.
 *
 * The program limits its own address space (setrlimit RLIMIT_AS, the soft limit only, so it can
 * raise it again) to what it uses plus a little headroom, after a warm-up without a limit:
 *   (a) worker threads started under the limit: with 4 threads set, a 2^20-element elementwise
 *       op starts the library's worker threads with only 24 MiB of headroom (each thread stack
 *       takes 8 MiB), so some or all of them cannot be created; the op still runs and is right;
 *   (b) exhaustion by tensor buffers: 1 MiB tensors until AG_ERR_OUT_OF_MEMORY; then, many times
 *       over, a 0-d tensor, add, mul, a 2x2 matmul, a small backward and ag_last_error: each call
 *       either works or gives AG_ERR_OUT_OF_MEMORY with a message (at least one is refused);
 *       after the big tensors are freed the same calls work and give the right values;
 *   (c) exhaustion by small objects: a chain of 0-d ops (graph nodes, no buffers) until a call
 *       fails: it must fail with AG_ERR_OUT_OF_MEMORY (before the emergency reserve, the Swift
 *       runtime aborted here: "failed to allocate 56 bytes"); backward on the chain and new
 *       tensors are then refused or work, never crash; after the chain is freed, everything works.
 * The original limit is restored at the end, and ag_live_handle_count must be 0.
 *
 * Not tested here (see include/autograd.h, Memory): a first matrix product under the limit, or
 * one on more threads than before the limit, which OpenBLAS cannot allocate its work buffer for
 * (it retries forever). The warm-up runs matmuls before the limit for that reason.
 *
 * Output: one line per group with what it saw, failures, and "N passed, M failed".
 * Exit status 0 only if nothing failed. Linux only (/proc/self/statm).
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <sys/resource.h>

/* The address space in use now, in bytes (what RLIMIT_AS counts). */
static long address_space_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0;
    if (!f || fscanf(f, "%ld", &pages) != 1) pages = 0;
    if (f) fclose(f);
    return pages * 4096L;
}

/* The number of threads of this process. */
static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    }
    if (f) fclose(f);
    return n;
}

static struct rlimit g_original;

/* Limits the address space to what is in use now plus `headroom_mib`. */
static void limit_to(long headroom_mib) {
    struct rlimit limit = g_original;
    limit.rlim_cur = (rlim_t)(address_space_bytes() + (headroom_mib << 20));
    if (g_original.rlim_max != RLIM_INFINITY && limit.rlim_cur > g_original.rlim_max) limit.rlim_cur = g_original.rlim_max;
    if (setrlimit(RLIMIT_AS, &limit) != 0) {
        perror("setrlimit");
        exit(2);
    }
}

static void unlimit(void) {
    if (setrlimit(RLIMIT_AS, &g_original) != 0) {
        perror("setrlimit");
        exit(2);
    }
}

/* A call's status, which must be AG_OK or AG_ERR_OUT_OF_MEMORY (with a message saying so). */
static int g_refused, g_worked;
static bool ok_or_oom_at(ag_status st, const char *expr, int line) {
    if (st == AG_OK) {
        g_worked++;
        return true;
    }
    g_refused++;
    const char *msg = ag_last_error();
    check_at(st == AG_ERR_OUT_OF_MEMORY, __FILE__, line, "%s gave %s (%s), want AG_OK or AG_ERR_OUT_OF_MEMORY",
             expr, ag_status_name(st), msg);
    check_at(strstr(msg, "memory") != NULL || strstr(msg, "allocate") != NULL, __FILE__, line,
             "%s: the message does not say what ran out: \"%s\"", expr, msg);
    return false;
}
#define OK_OR_OOM(expr) ok_or_oom_at((expr), #expr, __LINE__)

/* One round of small work, each call allowed to be refused: a 0-d tensor, add, mul, a 2x2
 * matmul, and d(x*x)/dx at x = 3 (6, by hand). Returns whether everything worked (and was right). */
static bool small_round(void) {
    ag_tensor x = 0, y = 0, s = 0, m = 0, mm = 0, g = 0;
    bool all = true;
    double v = 0;
    all &= OK_OR_OOM(ag_tensor_full(&x, NULL, 0, 3.0, AG_FLOAT64));
    if (x) all &= OK_OR_OOM(ag_tensor_set_requires_grad(x, true));
    if (x) all &= OK_OR_OOM(ag_mul(&y, x, x));
    if (y) all &= OK_OR_OOM(ag_add(&s, y, x));
    if (s && TRY(ag_tensor_item(&v, s))) CHECKF(v == 12.0, "3*3 + 3 = %g", v);
    all &= OK_OR_OOM(ag_tensor_full(&m, I64(2, 2), 2, 0.5, AG_FLOAT64));
    if (m) all &= OK_OR_OOM(ag_matmul(&mm, m, m));
    double out[4] = {0}; /* [[.5, .5], [.5, .5]] squared: every element .5 * .5 + .5 * .5 = .5 */
    if (mm && TRY(ag_tensor_copy_data(out, 4, AG_FLOAT64, mm))) CHECKF(out[0] == 0.5 && out[3] == 0.5, "matmul %g %g", out[0], out[3]);
    if (y) {
        all &= OK_OR_OOM(ag_backward(y, 0, false, false));
        if (all && TRY(ag_tensor_grad(&g, x)) && g && TRY(ag_tensor_item(&v, g))) CHECKF(v == 6.0, "d(x*x)/dx at 3 = %g", v);
    }
    (void)ag_last_error();
    FREE(x, y, s, m, mm, g);
    return all;
}

/* (a) ------------------------------------------------------------------------------------ */
static void worker_threads_under_limit(void) {
    CHECK_OK(ag_set_num_threads(4));
    int before = thread_count();
    limit_to(24);
    int64_t n = 1 << 20;
    ag_tensor a = 0, b = 0, c = 0, s = 0;
    double total = 0;
    ag_status st = ag_tensor_full(&a, &n, 1, 1.0, AG_FLOAT32);
    if (st == AG_OK) st = ag_tensor_full(&b, &n, 1, 2.0, AG_FLOAT32);
    if (st == AG_OK) st = ag_add(&c, a, b);
    if (st == AG_OK) st = ag_sum(&s, c, NULL, 0, false);
    if (st == AG_OK) st = ag_tensor_item(&total, s);
    int after = thread_count();
    FREE(a, b, c, s);
    unlimit();
    CHECKF(st == AG_OK, "the large op under the limit: %s: %s", ag_status_name(st), ag_last_error());
    if (st == AG_OK) CHECKF(total == 3.0 * n, "sum %.1f, want %.1f", total, 3.0 * n);
    printf("  worker threads started under the limit: %d of 3 (threads %d -> %d)\n", after - before, before, after);
}

/* (b) ------------------------------------------------------------------------------------ */
enum { MAX_BIG = 4096 };
static ag_tensor g_big[MAX_BIG];

static void exhaustion_by_buffers(void) {
    limit_to(64);
    int64_t n = 1 << 18; /* 1 MiB of float32 */
    int count = 0;
    ag_status st = AG_OK;
    while (count < MAX_BIG && (st = ag_tensor_full(&g_big[count], &n, 1, 1.0, AG_FLOAT32)) == AG_OK) count++;
    printf("  %d tensors of 1 MiB, then %s: %s\n", count, ag_status_name(st), ag_last_error());
    CHECKF(st == AG_ERR_OUT_OF_MEMORY, "allocating until the limit ended with %s", ag_status_name(st));
    CHECKF(count > 0 && count < MAX_BIG, "%d tensors", count);

    g_refused = g_worked = 0;
    for (int round = 0; round < 200; round++) small_round();
    printf("  200 rounds of small work while memory is exhausted: %d calls worked, %d refused\n", g_worked, g_refused);
    CHECKF(g_refused > 0, "no call was refused while memory was exhausted (%d worked)", g_worked);
    CHECKF(strlen(ag_last_error()) > 0, "ag_last_error is empty");

    for (int i = 0; i < count; i++) CHECK_OK(ag_tensor_free(g_big[i]));
    g_refused = g_worked = 0;
    bool all = true;
    for (int round = 0; round < 20; round++) all &= small_round();
    ag_tensor again = 0;
    all &= OK_OR_OOM(ag_tensor_full(&again, &n, 1, 1.0, AG_FLOAT32));
    FREE(again);
    printf("  after freeing them: %d calls worked, %d refused\n", g_worked, g_refused);
    CHECKF(all && g_refused == 0, "calls were refused after the big tensors were freed (%d)", g_refused);
    unlimit();
}

/* (c) ------------------------------------------------------------------------------------ */
static void exhaustion_by_graph_nodes(void) {
    ag_tensor x = 0;
    if (!TRY(ag_tensor_full(&x, NULL, 0, 1.0, AG_FLOAT64)) || !TRY(ag_tensor_set_requires_grad(x, true))) return;
    limit_to(64);
    ag_tensor v = x, t = 0;
    long ops = 0;
    ag_status st = AG_OK;
    /* v = v * x: every op records a node and makes a 0-d result; the handles are freed at once
     * (the graph keeps what backward needs), so only graph nodes pile up. */
    while (ops < 20000000L && (st = ag_mul(&t, v, x)) == AG_OK) {
        if (v != x) TRY(ag_tensor_free(v));
        v = t;
        ops++;
    }
    printf("  a chain of %ld ops, then %s: %s\n", ops, ag_status_name(st), ag_last_error());
    CHECKF(st == AG_ERR_OUT_OF_MEMORY, "building the chain until the limit ended with %s", ag_status_name(st));

    g_refused = g_worked = 0;
    OK_OR_OOM(ag_backward(v, 0, true, false));
    for (int round = 0; round < 50; round++) small_round();
    printf("  backward on the chain and 50 rounds of small work: %d calls worked, %d refused\n", g_worked, g_refused);
    CHECKF(g_refused > 0, "no call was refused while memory was exhausted");

    if (v != x) CHECK_OK(ag_tensor_free(v));
    g_refused = g_worked = 0;
    bool all = true;
    for (int round = 0; round < 20; round++) all &= small_round();
    printf("  after freeing the chain: %d calls worked, %d refused\n", g_worked, g_refused);
    CHECKF(all && g_refused == 0, "calls were refused after the chain was freed (%d)", g_refused);
    unlimit();
    CHECK_OK(ag_tensor_free(x));
}

int main(void) {
    test_begin();
    if (getrlimit(RLIMIT_AS, &g_original) != 0) {
        perror("getrlimit");
        return 2;
    }
    /* Warm-up without a limit: the library loaded, OpenBLAS's threads and work buffers made (see
     * the note above), stdout's buffer allocated. */
    CHECK_OK(ag_set_num_threads(4));
    for (ag_dtype dt = AG_FLOAT32; dt <= AG_FLOAT64; dt++) {
        ag_tensor a = 0, p = 0;
        if (TRY(ag_tensor_full(&a, I64(256, 256), 2, 1.0, dt)) && TRY(ag_matmul(&p, a, a))) FREE(p);
        FREE(a);
    }
    CHECK_OK(ag_set_num_threads(1));
    printf("warm-up done: %ld MiB of address space in use\n", address_space_bytes() >> 20);

    run_group("(a) worker threads started under a memory limit", worker_threads_under_limit);
    run_group("(b) memory exhausted by tensor buffers", exhaustion_by_buffers);
    run_group("(c) memory exhausted by graph nodes", exhaustion_by_graph_nodes);

    int64_t live = -1;
    CHECK_OK(ag_live_handle_count(&live));
    CHECKF(live == 0, "%lld live handles at the end", (long long)live);
    return test_summary();
}
