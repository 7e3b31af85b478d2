/*
 * fuzz_api.c - a libFuzzer target for the C interface of libautograd.so.
 *
 * Each input is decoded into a short program of C API calls over a small pool of handles:
 *   - NT tensor slots and NO optimizer slots that the program owns,
 *   - stale handles (freed by the program earlier in the same input),
 *   - made-up handles that can never be valid (generation 0, an unknown kind, an index past any
 *     slot), handles of the wrong kind, and AG_NULL_TENSOR.
 * One opcode byte picks the call; the following bytes pick handles, shapes, axes, indices,
 * scalars (nan and inf included), flags and capacities. Running out of bytes reads zeros and ends
 * the program.
 *
 * After every call the target checks the interface's invariants and abort()s when one breaks:
 *   - the status is a known code (AG_OK .. AG_ERR_INTERNAL) and never AG_ERR_INTERNAL;
 *   - a failing call leaves a non-empty ag_last_error() and a status name other than
 *     "AG_UNKNOWN_STATUS";
 *   - a failing call writes none of its outputs (they are pre-filled with sentinels);
 *   - a handle returned with AG_OK is a live handle of its kind (ag_tensor_ndim succeeds);
 *   - a call that names a freed, made-up or wrong-kind handle never returns AG_OK, and the pure
 *     queries answer it with exactly AG_ERR_INVALID_HANDLE;
 *   - the status the header documents for the arguments, where the header pins it down (shapes
 *     that broadcast or not, axes in range or not, a capacity too small, ...), and the shape of a
 *     successful result;
 *   - ag_live_handle_count() equals the number of handles the program holds, after every call;
 *   - hook destroy callbacks run exactly once; none is pending once everything is freed;
 *   - ag_grad leaves every accumulated gradient as it was (checked while no hook is registered);
 *   - at the end of each input, and at checkpoints inside it, after freeing everything and turning
 *     grad mode back on, ag_live_handle_count() is 0 (and LeakSanitizer sees no leaked memory).
 *
 * Work per input is bounded: tensors made on purpose have at most CAP elements, results larger
 * than CAP are freed at once, and calls whose result would land between BIG and HUGE elements
 * (large enough to be slow, too small to be refused) are skipped. Absurd shapes (negative,
 * overflowing, 2^31 and more elements) are still passed: the library must refuse them, and the
 * sanitizer options below make any allocation over 1 GiB fail, so a huge request must come back
 * as AG_ERR_OUT_OF_MEMORY rather than take the machine.
 *
 * Set FUZZ_TRACE=1 in the environment to print every call of the program (for reproducers), and
 * FUZZ_STATS=1 to print, at exit, how often each call got each status.
 *
 * While a bug found by the fuzzer is unfixed, its trigger can be stepped around in a block
 * `#ifdef FUZZ_SKIP_KNOWN_BUGS` naming its reproducer in regressions/ (FUZZ_SKIP_KNOWN=1 bash
 * scripts/fuzz.sh builds with it), so that fuzzing can go on looking for others. None is open.
 *
 * User-defined ops (issue 17): opcode bytes 248..255 drive ag_custom_op_* through callbacks whose
 * behaviour the input chooses, with a model of the status each call must return (see the
 * section "User-defined ops" below, and the README).
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"

/* ------------------------------------------------------------------------------------------ */
/* Sanitizer defaults (the script passes the same; these make the binary right when run alone) */
/* ------------------------------------------------------------------------------------------ */

const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    /* Allocations over 1 GiB fail (NULL / ENOMEM) instead of aborting or succeeding lazily:
     * huge shapes must come back from the library as AG_ERR_OUT_OF_MEMORY. */
    return "allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1";
}

/* ------------------------------------------------------------------------------------------ */
/* Limits                                                                                     */
/* ------------------------------------------------------------------------------------------ */

enum {
    NT = 8,         /* tensor slots */
    NO = 2,         /* optimizer slots */
    NSTALE = 16,    /* remembered freed handles */
    CAP = 4096,     /* most elements of a tensor made on purpose or kept in the pool */
    MAXS = 12,      /* shape buffers (more than AG_MAX_NDIM, for rank 9 attempts) */
    MAXARR = 8,     /* handle arrays (concat, stack, grad, optimizers) */
    NIDX = 64,      /* index buffers */
    MAX_OPS = 400,  /* calls per input */
};
#define BIG ((int64_t)1 << 18)  /* results above this are skipped ... */
#define HUGE ((int64_t)1 << 29) /* ... unless at least this large (then they must be refused) */

/* ------------------------------------------------------------------------------------------ */
/* Diagnostics                                                                                */
/* ------------------------------------------------------------------------------------------ */

static bool g_trace;
static const char *g_op = "(start)";
static int g_step;

#define TRACE(...)                                                                                  \
    do {                                                                                           \
        if (g_trace) {                                                                             \
            fprintf(stderr, "[%3d] ", g_step);                                                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    fprintf(stderr, "\nfuzz_api: INVARIANT VIOLATION at step %d in %s: ", g_step, g_op);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run the input again with FUZZ_TRACE=1 to see the whole call sequence)\n");
    abort();
}

#define M(s) (1u << (s))
#define M_OK M(AG_OK)
#define M_OOM M(AG_ERR_OUT_OF_MEMORY)
#define M_INV M(AG_ERR_INVALID_HANDLE)
#define M_ARG M(AG_ERR_ARGUMENT)
#define M_SHAPE M(AG_ERR_SHAPE)
#define M_DTYPE M(AG_ERR_DTYPE)
#define M_STATE M(AG_ERR_STATE)
#define M_CB M(AG_ERR_CALLBACK)
#define M_ANY (M_OK | M_OOM | M_INV | M_ARG | M_SHAPE | M_DTYPE | M_STATE | M_CB)
#define M_ERR (M_ANY & ~M_OK)

/* The checks every call gets: a known status, never INTERNAL, a message and a name on failure. */
static ag_status chk(ag_status s) {
    if (s < AG_OK || s > AG_ERR_INTERNAL) fail("unknown status %d", (int)s);
    const char *name = ag_status_name(s);
    if (!name || !*name || strcmp(name, "AG_UNKNOWN_STATUS") == 0)
        fail("ag_status_name(%d) is \"%s\"", (int)s, name ? name : "(null)");
    if (s != AG_OK) {
        const char *msg = ag_last_error();
        if (!msg || !*msg) fail("status %s with an empty ag_last_error()", name);
        TRACE("    -> %s: %s", name, msg);
        if (s == AG_ERR_INTERNAL) fail("AG_ERR_INTERNAL: %s", msg);
    }
    return s;
}

/* FUZZ_STATS=1: count, per call site name, the statuses seen; printed at exit. */
static bool g_stats;
typedef struct {
    const char *name;
    uint64_t n[AG_ERR_INTERNAL + 1];
} Stat;
enum { NSTAT = 256 }; /* call sites counted */
static Stat g_stat[NSTAT];
static uint64_t g_hook_calls, g_build_calls;
static void count(ag_status s) {
    if (!g_stats) return;
    for (int i = 0; i < NSTAT; i++) {
        if (!g_stat[i].name) g_stat[i].name = g_op;
        if (g_stat[i].name == g_op || strcmp(g_stat[i].name, g_op) == 0) {
            g_stat[i].n[s]++;
            return;
        }
    }
}
static void print_stats(void) {
    fprintf(stderr, "\n%-44s %9s %7s %7s %7s %7s %7s %7s %7s\n", "call", "OK", "HANDLE", "ARG", "SHAPE", "DTYPE",
            "STATE", "OOM", "CALLBK");
    for (int i = 0; i < NSTAT && g_stat[i].name; i++) {
        fprintf(stderr, "%-44.44s", g_stat[i].name);
        for (int k = 0; k < AG_ERR_INTERNAL; k++) fprintf(stderr, " %*llu", k ? 7 : 9, (unsigned long long)g_stat[i].n[k]);
        fputc('\n', stderr);
    }
    fprintf(stderr, "hook calls %llu, gradcheck build calls %llu\n", (unsigned long long)g_hook_calls,
            (unsigned long long)g_build_calls);
}

/* chk, and the status must be one of `allowed`. */
static ag_status expect(ag_status s, unsigned allowed, const char *why) {
    chk(s);
    count(s);
    if (!(M(s) & allowed)) {
        fail("status %s (%s), not what the header says for these arguments (%s)", ag_status_name(s),
             s == AG_OK ? "-" : ag_last_error(), why);
    }
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* Input decoding                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *d;
    size_t n, i;
} Rd;

static uint8_t u8(Rd *r) { return r->i < r->n ? r->d[r->i++] : 0; }
static bool more(const Rd *r) { return r->i < r->n; }
static bool bit(Rd *r) { return u8(r) & 1; }
static uint64_t u64(Rd *r) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v |= (uint64_t)u8(r) << (8 * k);
    return v;
}

static const double kDoubles[] = {
    0.0,   -0.0,  1.0,    -1.0,   0.5,    2.0,     -2.5,      3.0,      1e-3,     1e3,
    1e30,  -1e30, 1e308,  -1e308, 5e-324, NAN,     INFINITY,  -INFINITY, 0.1,     7.0,
    100.0, -100.0, 1000.0, -1000.0, 1e-8, 0.9,     0.999,     1e-12,    4096.0,   -0.5,
    1e12,  1e20,  0.25,   -3.0,   88.0,   -88.0,   710.0,     -745.0,   1.5,      -1e-300,
};
#define NKD ((int)(sizeof kDoubles / sizeof kDoubles[0]))

static const int64_t kInts[] = {
    0,  1,  -1, 2,   -2,   3,   4,    -3,        7,           8,         9,          100,
    -100, INT64_MAX, INT64_MIN, INT64_MAX / 2, (int64_t)1 << 31, (int64_t)1 << 32,
    -((int64_t)1 << 31), (int64_t)1 << 40, (int64_t)1 << 62, 4096, 65535, -9, INT32_MAX, INT32_MIN,
};
#define NKI ((int)(sizeof kInts / sizeof kInts[0]))

static double rd_double(Rd *r) {
    uint8_t b = u8(r);
    if (b < 128) return kDoubles[b % NKD];
    if (b < 232) return (double)((int)b - 180) / 4.0; /* -13 .. 12.75 */
    uint64_t bits = u64(r);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Indices, counts, small integers and now and then an extreme one. */
static int64_t rd_i64(Rd *r) {
    uint8_t b = u8(r);
    if (b < 168) return (int64_t)(b % 21) - 10; /* -10 .. 10 */
    if (b < 248) return kInts[b % NKI];
    return (int64_t)u64(r);
}

/* Axes: mostly -5 .. 5, sometimes extreme. */
static int64_t rd_axis(Rd *r) {
    uint8_t b = u8(r);
    if (b < 232) return (int64_t)(b % 11) - 5;
    return kInts[b % NKI];
}

static ag_dtype rd_dtype(Rd *r) {
    uint8_t b = u8(r);
    if (b < 120) return AG_FLOAT32;
    if (b < 244) return AG_FLOAT64;
    static const ag_dtype bad[] = {0, 5, -1, INT32_MIN, INT32_MAX, 255}; /* 3 and 4 are AG_INT64 and AG_BOOL now (issue 18) */
    return bad[b % 6];
}
static bool dtype_ok(ag_dtype d) { return d == AG_FLOAT32 || d == AG_FLOAT64; }

/* ------------------------------------------------------------------------------------------ */
/* Shapes                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* The element count of a shape; false if it overflows or has a negative extent or a bad rank. */
static bool numel_of(const int64_t *shape, int64_t nd, int64_t *out) {
    int64_t n = 1;
    bool zero = false;
    if (nd < 0 || nd > AG_MAX_NDIM) return false;
    for (int64_t i = 0; i < nd; i++) {
        if (shape[i] < 0) return false;
        if (shape[i] == 0) zero = true;
    }
    /* As the library counts: the non-zero extents must multiply within int64 (so every partial
     * product of an accepted shape fits), even when a zero extent makes the count 0. */
    for (int64_t i = 0; i < nd; i++)
        if (shape[i] != 0 && __builtin_mul_overflow(n, shape[i], &n)) return false;
    *out = zero ? 0 : n;
    return true;
}

/* Whether the library may be asked for a result of `n` elements (ok = count known): small, or so
 * large it must be refused. */
static bool size_allowed(bool ok, int64_t n) { return !ok || n <= BIG || n >= HUGE; }

enum { SH_SANE = 0, SH_BAD = 1, SH_HUGE = 2, SH_ODD = 3 };
/* A shape for a creator. SH_SANE: rank 0..8, numel <= CAP. SH_BAD: must be refused (bad rank,
 * negative extent, overflowing count). SH_HUGE: a count >= 2^31 that does not overflow: must
 * be refused (AG_ERR_OUT_OF_MEMORY, or AG_ERR_SHAPE). SH_ODD: a zero extent beside extents
 * whose product overflows: accepted (0 elements) or refused with AG_ERR_SHAPE. */
static int rd_shape(Rd *r, int64_t *shape, int64_t *nd) {
    for (int i = 0; i < MAXS; i++) shape[i] = 1;
    uint8_t b = u8(r);
    if (b < 232) {
        int rank = b % 5;
        if (b >= 200) rank = 5 + b % 4;
        int64_t n = 1;
        for (int i = 0; i < rank; i++) {
            uint8_t e = u8(r);
            int64_t x = e < 208 ? e % 6 : (e < 240 ? (e % 32) + 1 : (int64_t)(e % 16) * 16 + 64);
            if (x != 0 && n * x > CAP) x = 1;
            shape[i] = x;
            n *= x;
        }
        *nd = rank;
        return SH_SANE;
    }
    switch (b % 13) {
    case 0: *nd = 9; return SH_BAD;
    case 1: *nd = -1; return SH_BAD;
    case 2: *nd = b & 1 ? INT64_MIN : ((int64_t)1 << 40); return SH_BAD;
    case 3: *nd = 2; shape[0] = 3; shape[1] = -2; return SH_BAD;
    case 4: *nd = 1; shape[0] = -1; return SH_BAD;
    case 5: *nd = 2; shape[0] = INT64_MAX; shape[1] = 2; return SH_BAD;
    case 6: *nd = 2; shape[0] = (int64_t)1 << 32; shape[1] = (int64_t)1 << 32; return SH_BAD;
    case 7: *nd = 1; shape[0] = (int64_t)1 << 31; return SH_HUGE;
    case 8: *nd = 3; shape[0] = 0; shape[1] = INT64_MAX; shape[2] = INT64_MAX; return SH_ODD;
    case 9: *nd = 3; shape[0] = INT64_MAX; shape[1] = INT64_MAX; shape[2] = 0; return SH_ODD;
    case 10: *nd = 4; for (int i = 0; i < 4; i++) shape[i] = (int64_t)1 << 20; return SH_BAD;
    case 11: *nd = 1; shape[0] = INT64_MIN; return SH_BAD;
    default: *nd = 2; shape[0] = 3; shape[1] = (int64_t)1 << 40; return SH_HUGE;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The handle pool                                                                            */
/* ------------------------------------------------------------------------------------------ */

static ag_tensor pool[NT];
static ag_optimizer opts[NO];
static uint64_t stale[NSTALE]; /* freed tensor and optimizer handles */
static int nstale;
static int64_t owned; /* live handles this program holds */
static bool grad_on = true;

static const ag_tensor SENT = 0x5EA7BEEFDEADBEEFull; /* never a valid handle (kind 5, index 0xDBEEF) */

typedef struct {
    uint64_t h;
    bool bad; /* certainly not a live handle of the wanted kind */
} H;

static void remember_stale(uint64_t h) { stale[nstale++ % NSTALE] = h; }

static uint64_t made_up(Rd *r) {
    uint8_t b = u8(r);
    uint32_t low = (uint32_t)b * 2654435761u;
    switch (b % 6) {
    /* The library's layout: kind in bits 60-63, generation in bits 20-59, index + 1 in bits 0-19. */
    case 0: return ((uint64_t)3 << 60) | ((uint64_t)1 << 20) | (low % 64 + 1); /* unknown kind */
    case 1: return ((uint64_t)1 << 60) | (low % 64 + 1);                       /* generation 0 */
    case 2: return ((uint64_t)1 << 60) | ((uint64_t)1 << 20) | 0xFFFF0u;       /* index past any slot */
    case 3: return UINT64_MAX;
    case 4: return ((uint64_t)0xF << 60) | low;
    default: return ((uint64_t)2 << 60); /* optimizer kind, index 0 */
    }
}

/* A tensor handle: mostly a pool slot (0 when the slot is empty), sometimes a bad one. */
static H pick_t(Rd *r) {
    uint8_t b = u8(r);
    if (b < 208) {
        ag_tensor h = pool[b % NT];
        return (H){h, h == 0};
    }
    switch (b % 7) {
    case 0: return (H){0, true};
    case 1: {
        uint64_t h = nstale ? stale[u8(r) % (nstale < NSTALE ? nstale : NSTALE)] : 0;
        return (H){h, true};
    }
    case 2: return (H){made_up(r), true};
    case 3: { /* the wrong kind */
        uint64_t h = opts[u8(r) % NO];
        return (H){h ? h : made_up(r), true};
    }
    case 4: { /* a live handle with another generation */
        ag_tensor h = pool[u8(r) % NT];
        return (H){h ^ ((uint64_t)(1 + u8(r) % 255) << 32), true};
    }
    case 5: { /* a live handle with slot index 0 */
        ag_tensor h = pool[u8(r) % NT];
        return (H){h & ~(uint64_t)0xFFFFFFFFu, true};
    }
    default: return (H){0xFFFFFFFFFFFFFFFFull, true};
    }
}

static H pick_o(Rd *r) {
    uint8_t b = u8(r);
    if (b < 200) {
        ag_optimizer h = opts[b % NO];
        return (H){h, h == 0};
    }
    switch (b % 4) {
    case 0: return (H){0, true};
    case 1: {
        uint64_t h = nstale ? stale[u8(r) % (nstale < NSTALE ? nstale : NSTALE)] : 0;
        return (H){h, true};
    }
    case 2: { /* a tensor handle: the wrong kind */
        ag_tensor h = pool[u8(r) % NT];
        return (H){h ? h : made_up(r), true};
    }
    default: return (H){made_up(r), true};
    }
}

/* What the program knows of a live tensor, read through the interface. */
typedef struct {
    int64_t nd;
    int64_t shape[MAXS];
    int64_t numel;
    ag_dtype dtype;
    bool rg; /* requires grad */
} Info;

static Info info_of(ag_tensor t) {
    Info in;
    memset(&in, 0, sizeof in);
    const char *saved = g_op;
    g_op = "info (ndim/shape/numel/dtype/requires_grad of a live handle)";
    if (chk(ag_tensor_ndim(&in.nd, t)) != AG_OK) fail("ag_tensor_ndim of a live handle %#llx", (unsigned long long)t);
    if (in.nd < 0 || in.nd > AG_MAX_NDIM) fail("ndim %lld", (long long)in.nd);
    if (chk(ag_tensor_shape(in.shape, MAXS, t)) != AG_OK) fail("ag_tensor_shape of a live handle");
    if (chk(ag_tensor_numel(&in.numel, t)) != AG_OK) fail("ag_tensor_numel of a live handle");
    if (chk(ag_tensor_dtype(&in.dtype, t)) != AG_OK) fail("ag_tensor_dtype of a live handle");
    if (!dtype_ok(in.dtype)) fail("dtype %d", (int)in.dtype);
    if (chk(ag_tensor_requires_grad(&in.rg, t)) != AG_OK) fail("ag_tensor_requires_grad of a live handle");
    int64_t n = 0;
    if (!numel_of(in.shape, in.nd, &n) || n != in.numel)
        fail("numel %lld does not match the shape (rank %lld)", (long long)in.numel, (long long)in.nd);
    g_op = saved;
    return in;
}

/* Whether t is a leaf that requires grad. set_requires_grad(t, true) on a tensor that already
 * requires grad changes nothing: it succeeds on a leaf and fails (AG_ERR_STATE) on a result. */
static bool leaf_requiring_grad(ag_tensor t) {
    if (!info_of(t).rg) return false;
    const char *saved = g_op;
    g_op = "ag_tensor_set_requires_grad(t, true) on a tensor requiring grad (leaf probe)";
    ag_status s = expect(ag_tensor_set_requires_grad(t, true), M_OK | M_STATE, "leaf probe");
    g_op = saved;
    return s == AG_OK;
}

static void check_live_count(void) {
    int64_t n = -1;
    if (chk(ag_live_handle_count(&n)) != AG_OK) fail("ag_live_handle_count failed");
    if (n != owned) fail("ag_live_handle_count() = %lld, but the program holds %lld handles", (long long)n, (long long)owned);
}

static void free_tensor(ag_tensor t) {
    const char *saved = g_op;
    g_op = "ag_tensor_free (of a handle the program holds)";
    TRACE("ag_tensor_free(%#llx)", (unsigned long long)t);
    ag_status s = chk(ag_tensor_free(t));
    if (s != AG_OK) fail("freeing a live handle gave %s", ag_status_name(s));
    owned--;
    remember_stale(t);
    g_op = saved;
}

/* Takes a handle returned with AG_OK: checks it and puts it in slot `dst` (freeing the slot's old
 * handle), or frees it at once when it is too large to keep. */
static void take(ag_tensor t, uint8_t dst) {
    if (t == SENT || t == 0) fail("AG_OK but no handle was written (%#llx)", (unsigned long long)t);
    owned++;
    Info in = info_of(t);
    if (in.numel > CAP) {
        free_tensor(t);
        return;
    }
    int slot = dst % NT;
    if (pool[slot]) free_tensor(pool[slot]);
    pool[slot] = t;
    TRACE("    -> slot %d = %#llx", slot, (unsigned long long)t);
}

static H g_ins[4];
static int g_nins;
/* Custom ops (below): whether one of their callbacks broke its contract or deviated since a mark
 * (a call that may run them, through a graph or a captured function, may then be refused). */
static uint64_t co_mark(void);
static unsigned co_loose(uint64_t mark);
static void check_recording(ag_tensor out, const H *ins, int n, bool diff);

/* For a call that wrote a tensor handle to `out`: on failure it must be untouched; on success
 * check the recording rule against the inputs named by inputs() and take it. Returns the status. */
static ag_status result(ag_status s, ag_tensor out, uint8_t dst) {
    int nins = g_nins;
    g_nins = 0;
    if (s == AG_OK && nins > 0 && out != SENT && out != 0) {
        owned++;
        check_recording(out, g_ins, nins, true);
        owned--;
    }
    if (s != AG_OK) {
        if (out != SENT) fail("the call failed (%s) but wrote %#llx to its output", ag_status_name(s), (unsigned long long)out);
        return s;
    }
    take(out, dst);
    return s;
}

static bool any_bad(const H *hs, int n) {
    for (int i = 0; i < n; i++)
        if (hs[i].bad) return true;
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* Data buffers                                                                               */
/* ------------------------------------------------------------------------------------------ */

static double dbuf[CAP + 64];
static float fbuf[CAP + 64];

static void fill_data(Rd *r, int64_t n) {
    uint8_t mode = u8(r), k = u8(r);
    for (int64_t i = 0; i < n && i < CAP + 64; i++) {
        double v;
        switch (mode % 4) {
        case 0: v = (double)((i * 7 + k) % 11) * 0.25 - 1.25; break;
        case 1: v = kDoubles[(i * 3 + k) % NKD]; break;
        case 2: v = (double)(int8_t)(r->i + i < r->n ? r->d[r->i + i] : k) / 16.0; break;
        default: v = (i == k % (n ? n : 1)) ? kDoubles[k % NKD] : (double)(i % 5) - 2.0; break;
        }
        dbuf[i] = v;
        fbuf[i] = (float)v;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Hooks and gradcheck callbacks                                                              */
/* ------------------------------------------------------------------------------------------ */

#define HOOK_MAGIC 0x486F6F6Bu
typedef struct {
    uint32_t magic;
    uint8_t mode;
    int calls;
} HookUd;
static int64_t g_hooks_alive; /* registered with a destroy callback that has not run yet */
static HookUd g_static_hook = {HOOK_MAGIC, 0, 0}; /* for hooks without destroy */
static bool g_hook_may_free; /* set while nothing after the call uses pool handles */
static int g_hook_depth;

static void hook_destroy(void *p) {
    HookUd *u = p;
    if (!u || u->magic != HOOK_MAGIC) fail("hook destroy called with a bad or already destroyed user_data");
    u->magic = 0xDEADu;
    g_hooks_alive--;
    TRACE("    (hook destroy %p)", p);
    free(u);
}

static int32_t hook_fn(ag_tensor *rep, ag_tensor grad, void *p) {
    HookUd *u = p;
    if (!u || u->magic != HOOK_MAGIC) fail("a hook ran after its destroy callback, or with a bad user_data");
    if (!rep) fail("a hook got a NULL replacement pointer");
    if (*rep != AG_NULL_TENSOR) fail("a hook's *replacement was not AG_NULL_TENSOR on entry");
    const char *saved = g_op;
    g_op = "hook callback";
    owned++; /* the borrowed gradient handle is live during the call */
    Info in = info_of(grad);
    owned--;
    u->calls++;
    g_hook_calls++;
    uint8_t mode = u->mode;
    if (mode & 0x80) mode = (u->calls & 1) ? mode & 0x7F : 0; /* every other call */
    int32_t ret = 0;
    ag_status s = AG_OK;
    switch (mode % 13) {
    case 0: break; /* observe */
    case 1: s = ag_mul_scalar(rep, grad, 0.5); break;
    case 2: ret = 1; break; /* fail */
    case 3: s = ag_sum(rep, grad, NULL, 0, false); break; /* a scalar: the wrong shape unless grad is one */
    case 4: s = ag_detach(rep, grad); break;
    case 5: *rep = made_up(&(Rd){(const uint8_t *)"\x02", 1, 0}); break; /* a handle that is not one */
    case 6: s = ag_tensor_zeros(rep, in.shape, in.nd, in.dtype == AG_FLOAT32 ? AG_FLOAT64 : AG_FLOAT32); break;
    case 7: { /* call into the library from the hook and release what it made */
        ag_tensor tmp = 0;
        if (ag_exp(&tmp, grad) == AG_OK) ag_tensor_free(tmp);
        int64_t n = 0;
        ag_live_handle_count(&n);
        break;
    }
    case 8: { /* free a handle of the pool (maybe of the tensor this hook sits on) mid-backward */
        int slot = (mode >> 4) % NT;
        if (g_hook_may_free && pool[slot]) {
            TRACE("    (hook frees slot %d)", slot);
            free_tensor(pool[slot]);
            pool[slot] = 0;
        }
        break;
    }
    case 9: { /* grad mode off inside the hook, then back */
        bool prev = true;
        expect(ag_set_grad_enabled(&prev, false), M_OK, "set_grad_enabled in a hook");
        ag_tensor tmp = 0;
        if (expect(ag_exp(&tmp, grad), M_OK | M_OOM, "an op in a hook") == AG_OK) {
            bool rg = true;
            expect(ag_tensor_requires_grad(&rg, tmp), M_OK, "requires_grad");
            if (rg) fail("a result made in a hook with grad mode off requires grad");
            ag_tensor_free(tmp);
        }
        expect(ag_set_grad_enabled(NULL, prev), M_OK, "set_grad_enabled in a hook");
        break;
    }
    case 10: { /* backward again, from inside a backward pass (once) */
        int slot = (mode >> 4) % NT;
        if (g_hook_depth == 0 && pool[slot]) {
            g_hook_depth++;
            TRACE("    (hook runs ag_backward(slot %d))", slot);
            g_op = "ag_backward inside a hook";
            chk(ag_backward(pool[slot], 0, (mode & 16) != 0, false));
            g_hook_depth--;
        }
        break;
    }
    case 11: { /* read a gradient, and hook the borrowed gradient itself */
        int slot = (mode >> 4) % NT;
        ag_tensor g = SENT;
        if (pool[slot] && expect(ag_tensor_grad(&g, pool[slot]), M_OK, "grad in a hook") == AG_OK && g)
            ag_tensor_free(g);
        int64_t id = 0;
        g_op = "ag_tensor_register_hook on a hook's gradient";
        expect(ag_tensor_register_hook(&id, grad, hook_fn, &g_static_hook, NULL), M_OK | M_STATE,
               "register_hook on the borrowed gradient");
        break;
    }
    default: ret = -7; break;
    }
    if (s != AG_OK) {
        chk(s);
        if (*rep != AG_NULL_TENSOR) fail("a call inside a hook failed but wrote its output");
        ret = 2;
    }
    g_op = saved;
    return ret;
}

/* A gradient-ready hook: it must find the leaf's gradient accumulated already, then does what
 * hook_fn does with that gradient (observe, fail, call the library, free pool handles, run a
 * nested backward, ...); a replacement hook_fn makes is released, as ready hooks replace nothing. */
static int32_t ready_fn(ag_tensor t, void *p) {
    const char *saved = g_op;
    g_op = "gradient-ready hook callback";
    ag_tensor g = SENT;
    owned++; /* the borrowed leaf handle is live during the call */
    if (chk(ag_tensor_grad(&g, t)) != AG_OK) fail("ag_tensor_grad of a ready hook's leaf failed");
    owned--;
    if (g == AG_NULL_TENSOR || g == SENT) fail("a gradient-ready hook ran before the leaf had a gradient");
    ag_tensor replacement = AG_NULL_TENSOR;
    int32_t ret = hook_fn(&replacement, g, p);
    if (replacement != AG_NULL_TENSOR) (void)ag_tensor_free(replacement); /* may be a made-up handle */
    ag_tensor_free(g);
    g_op = saved;
    return ret;
}

typedef struct {
    uint8_t mode;
} BuildUd;

static int32_t build_fn(ag_tensor *out, const ag_tensor *in, int64_t n, void *p) {
    BuildUd *b = p;
    g_build_calls++;
    if (!out || !in || n < 1) fail("gradcheck build got NULL pointers or no inputs");
    ag_status s = AG_OK;
    ag_tensor tmp = 0;
    switch (b->mode % 8) {
    case 0: s = ag_mul(out, in[0], in[n - 1]); break;
    case 1: s = ag_tanh(out, in[0]); break;
    case 2: return 3; /* the build fails */
    case 3: s = ag_sum(out, in[0], NULL, 0, false); break;
    case 4: s = ag_softmax(out, in[0], -1); break;
    case 5: s = ag_matmul(out, in[0], in[n - 1]); break;
    case 6:
        s = ag_sigmoid(&tmp, in[0]);
        if (s == AG_OK) {
            s = ag_add(out, tmp, in[n - 1]);
            ag_tensor_free(tmp);
        }
        break;
    default: s = ag_logsumexp(out, in[0], NULL, 0, false); break;
    }
    return s == AG_OK ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Expected statuses                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* NumPy broadcasting of k shapes; false if they do not broadcast. ok/n: the result's count. */
static bool broadcast(const Info **ins, int k, int64_t *shape, int64_t *nd) {
    int64_t rank = 0;
    for (int i = 0; i < k; i++)
        if (ins[i]->nd > rank) rank = ins[i]->nd;
    for (int64_t d = 0; d < rank; d++) {
        int64_t e = 1;
        for (int i = 0; i < k; i++) {
            int64_t off = d - (rank - ins[i]->nd);
            if (off < 0) continue;
            int64_t x = ins[i]->shape[off];
            if (x == 1) continue;
            if (e == 1) e = x;
            else if (e != x) return false;
        }
        shape[d] = e;
    }
    *nd = rank;
    return true;
}

static int64_t max_extent(const Info *in) {
    int64_t m = 0;
    for (int64_t i = 0; i < in->nd; i++)
        if (in->shape[i] > m) m = in->shape[i];
    return m;
}

static void same_shape(const Info *a, const int64_t *shape, int64_t nd, const char *what) {
    if (a->nd != nd) fail("%s: result rank %lld, expected %lld", what, (long long)a->nd, (long long)nd);
    for (int64_t i = 0; i < nd; i++)
        if (a->shape[i] != shape[i])
            fail("%s: result extent %lld is %lld, expected %lld", what, (long long)i, (long long)a->shape[i],
                 (long long)shape[i]);
}

/* Normalises reduction axes; false if out of range or repeated. */
static bool norm_axes(const int64_t *axes, int64_t naxes, int64_t rank, bool *reduced) {
    for (int i = 0; i < MAXS; i++) reduced[i] = false;
    for (int64_t i = 0; i < naxes; i++) {
        int64_t a = axes[i];
        if (a < -rank || a >= rank) return false;
        if (a < 0) a += rank;
        if (reduced[a]) return false;
        reduced[a] = true;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* The program                                                                                */
/* ------------------------------------------------------------------------------------------ */

enum {
    OP_FROM_DATA, OP_ZEROS, OP_ONES, OP_FULL, OP_ARANGE, OP_EYE, OP_RAND, OP_INIT,
    OP_FREE, OP_QUERY, OP_COPY, OP_PTR, OP_ITEM, OP_SET_RG, OP_GRAD_OF, OP_ZERO_GRAD,
    OP_BINARY, OP_SCALAR, OP_UNARY, OP_REDUCE, OP_RESHAPE, OP_TRANSPOSE, OP_PERMUTE, OP_EXPAND,
    OP_SQUEEZE, OP_UNSQUEEZE, OP_CONCAT, OP_SLICE, OP_INDEX_SELECT, OP_GATHER, OP_MATMUL,
    OP_SOFTMAX, OP_CROSS_ENTROPY, OP_MSE, OP_LINEAR, OP_WHERE, OP_BACKWARD, OP_AGGRAD,
    OP_GRAD_MODE, OP_DETACH, OP_HOOK, OP_REMOVE_HOOK, OP_GRADCHECK, OP_DOT_GRAPH, OP_OPT_NEW,
    OP_OPT_USE, OP_OPT_FREE, OP_MISC, OP_FREE_BAD, OP_BACKWARD_ALL,
    OP_HOOK_RG, OP_GRADCHECK_CHANGE, OP_INPLACE, OP_ADDED, OP_TRANSFORM, OP_REUSE,
    OP_COUNT,
    OP_CUSTOM = OP_COUNT /* opcode bytes 248..255 (the others keep their meaning: b % OP_COUNT) */
};

typedef struct {
    ag_tensor t;
    int64_t id;
} HookRec;
static HookRec hook_ids[8];
static int nhook_ids;

/* Creation ------------------------------------------------------------------------------------ */

static void op_create(Rd *r, int op) {
    int64_t shape[MAXS], nd;
    int cls = rd_shape(r, shape, &nd);
    ag_dtype dt = rd_dtype(r);
    uint8_t dst = u8(r);
    ag_tensor out = SENT;
    ag_status s;
    /* What the header promises, given the shape class. */
    unsigned allowed;
    if (!dtype_ok(dt)) allowed = M_DTYPE | M_ARG | M_SHAPE;
    else if (cls == SH_SANE) allowed = M_OK | M_OOM;
    else if (cls == SH_BAD) allowed = (nd < 0 || nd > AG_MAX_NDIM) ? M_ARG : M_SHAPE | M_OOM;
    else if (cls == SH_HUGE) allowed = M_OOM | M_SHAPE;
    else allowed = M_OK | M_SHAPE | M_OOM;
    if (!dtype_ok(dt) && cls != SH_SANE) allowed |= M_ARG | M_SHAPE | M_OOM;
    const int64_t *sp = shape;
    if (nd == 0 && (u8(r) & 3) == 0) sp = NULL; /* rank 0 may pass NULL */
    else if (nd > 0 && (u8(r) & 15) == 0) { sp = NULL; allowed = M_ARG | (dtype_ok(dt) ? 0 : M_DTYPE); if (nd > AG_MAX_NDIM || nd < 0) allowed = M_ARG | M_DTYPE; }

    switch (op) {
    case OP_FROM_DATA: {
        if (cls == SH_HUGE) return; /* the data buffer could not hold it: outside the contract */
        int64_t n = 0;
        bool known = numel_of(shape, nd, &n);
        if (cls == SH_SANE) fill_data(r, n);
        const void *data = dt == AG_FLOAT32 ? (const void *)fbuf : (const void *)dbuf;
        if (u8(r) % 8 == 0) {
            data = NULL; /* allowed only for 0 elements */
            if (cls == SH_SANE && known && n > 0) allowed = M_ARG | (dtype_ok(dt) ? 0 : M_DTYPE);
        }
        g_op = "ag_tensor_from_data";
        TRACE("ag_tensor_from_data(data=%p, ndim=%lld, dtype=%d) class %d", data, (long long)nd, (int)dt, cls);
        s = ag_tensor_from_data(&out, data, sp, nd, dt);
        break;
    }
    case OP_ZEROS:
        g_op = "ag_tensor_zeros";
        TRACE("ag_tensor_zeros(ndim=%lld, dtype=%d) class %d", (long long)nd, (int)dt, cls);
        s = ag_tensor_zeros(&out, sp, nd, dt);
        break;
    case OP_ONES:
        g_op = "ag_tensor_ones";
        TRACE("ag_tensor_ones(ndim=%lld, dtype=%d) class %d", (long long)nd, (int)dt, cls);
        s = ag_tensor_ones(&out, sp, nd, dt);
        break;
    case OP_FULL: {
        double v = rd_double(r);
        g_op = "ag_tensor_full";
        TRACE("ag_tensor_full(ndim=%lld, value=%g, dtype=%d) class %d", (long long)nd, v, (int)dt, cls);
        s = ag_tensor_full(&out, sp, nd, v, dt);
        break;
    }
    case OP_RAND: {
        double a = rd_double(r), b = rd_double(r);
        uint64_t seed = u8(r);
        bool normal = bit(r);
        bool bad_args = !isfinite(a) || !isfinite(b) || (normal ? b < 0 : a > b);
        if (bad_args) allowed = (allowed & ~(M_OK | M_OOM)) | M_ARG;
        if (normal) {
            g_op = "ag_tensor_rand_normal";
            TRACE("ag_tensor_rand_normal(ndim=%lld, mean=%g, std=%g, dtype=%d) class %d", (long long)nd, a, b, (int)dt, cls);
            s = ag_tensor_rand_normal(&out, sp, nd, a, b, seed, dt);
        } else {
            g_op = "ag_tensor_rand_uniform";
            TRACE("ag_tensor_rand_uniform(ndim=%lld, low=%g, high=%g, dtype=%d) class %d", (long long)nd, a, b, (int)dt, cls);
            s = ag_tensor_rand_uniform(&out, sp, nd, a, b, seed, dt);
        }
        break;
    }
    default: { /* OP_INIT */
        static const ag_init kinds[] = {AG_INIT_KAIMING_UNIFORM, AG_INIT_KAIMING_NORMAL, AG_INIT_XAVIER_UNIFORM,
                                        AG_INIT_XAVIER_NORMAL, 0, 5, -1};
        ag_init kind = kinds[u8(r) % 7];
        int64_t n = 1;
        bool known = numel_of(shape, nd, &n);
        /* rank 0 or a zero fan: AG_ERR_SHAPE; an unknown kind: AG_ERR_ARGUMENT */
        if (nd == 0 || (known && n == 0)) allowed = (allowed & ~(M_OK | M_OOM)) | M_SHAPE;
        if (kind < 1 || kind > 4) allowed = (allowed & ~(M_OK | M_OOM)) | M_ARG;
        g_op = "ag_tensor_init";
        TRACE("ag_tensor_init(ndim=%lld, kind=%d, dtype=%d) class %d", (long long)nd, (int)kind, (int)dt, cls);
        s = ag_tensor_init(&out, sp, nd, kind, u8(r), dt);
        break;
    }
    }
    expect(s, allowed, "creation");
    result(s, out, dst);
}

static void op_arange(Rd *r) {
    double start = rd_double(r), stop = rd_double(r), step = rd_double(r);
    if (u8(r) & 1) { start = (double)rd_i64(r); stop = (double)rd_i64(r); step = (double)(int8_t)u8(r) / 4.0; }
    ag_dtype dt = rd_dtype(r);
    uint8_t dst = u8(r);
    unsigned allowed = M_OK | M_OOM;
    bool finite = isfinite(start) && isfinite(stop) && isfinite(step);
    if (!finite || step == 0) allowed = M_ARG;
    else {
        double count = ceil((stop - start) / step);
        if (!(count <= (double)((int64_t)1 << 40))) allowed = M_ARG;
        else if (count > (double)BIG && count < (double)HUGE) return; /* slow, not refused */
        else if (count >= (double)HUGE) allowed = M_OOM;
        if (!isfinite((stop - start) / step)) allowed = M_ARG | M_OOM;
    }
    if (!dtype_ok(dt)) allowed = M_DTYPE | M_ARG;
    ag_tensor out = SENT;
    g_op = "ag_tensor_arange";
    TRACE("ag_tensor_arange(%g, %g, %g, dtype=%d)", start, stop, step, (int)dt);
    ag_status s = ag_tensor_arange(&out, start, stop, step, dt);
    expect(s, allowed, "arange");
    result(s, out, dst);
}

static void op_eye(Rd *r) {
    int64_t n = rd_i64(r), m = rd_i64(r);
    ag_dtype dt = rd_dtype(r);
    uint8_t dst = u8(r);
    unsigned allowed = M_OK | M_OOM;
    int64_t prod;
    if (n < 0 || m < 0 || __builtin_mul_overflow(n, m, &prod)) allowed = M_SHAPE;
    else if (prod > BIG && prod < HUGE) return;
    else if (prod >= HUGE) allowed = M_OOM | M_SHAPE;
    if (!dtype_ok(dt)) allowed = M_DTYPE | M_SHAPE;
    ag_tensor out = SENT;
    g_op = "ag_tensor_eye";
    TRACE("ag_tensor_eye(%lld, %lld, dtype=%d)", (long long)n, (long long)m, (int)dt);
    ag_status s = ag_tensor_eye(&out, n, m, dt);
    expect(s, allowed, "eye");
    result(s, out, dst);
}

/* Queries ------------------------------------------------------------------------------------- */

static void op_free(Rd *r) {
    uint8_t b = u8(r);
    int slot = b % NT;
    if (pool[slot]) {
        g_op = "ag_tensor_free";
        free_tensor(pool[slot]);
        pool[slot] = 0;
    } else {
        g_op = "ag_tensor_free(AG_NULL_TENSOR)";
        TRACE("ag_tensor_free(0)");
        expect(ag_tensor_free(0), M_OK, "freeing AG_NULL_TENSOR is a no-op");
    }
}

static void op_free_bad(Rd *r) {
    H h = pick_t(r);
    if (!h.bad) return;
    g_op = "ag_tensor_free (bad handle)";
    TRACE("ag_tensor_free(%#llx) [bad]", (unsigned long long)h.h);
    expect(ag_tensor_free(h.h), h.h == 0 ? M_OK : M_INV, "freeing a freed, made-up or wrong-kind handle");
    H o = pick_o(r);
    if (!o.bad) return;
    g_op = "ag_optimizer_free (bad handle)";
    TRACE("ag_optimizer_free(%#llx) [bad]", (unsigned long long)o.h);
    expect(ag_optimizer_free(o.h), o.h == 0 ? M_OK : M_INV, "freeing a bad optimizer handle");
}

static void op_query(Rd *r) {
    H h = pick_t(r);
    uint8_t which = u8(r);
    g_op = "tensor queries";
    TRACE("queries(%#llx) which=%u%s", (unsigned long long)h.h, which, h.bad ? " [bad]" : "");
    unsigned want = h.bad ? M_INV : M_OK;
    int64_t v = -77;
    ag_dtype d = -77;
    bool b = true;
    switch (which % 6) {
    case 0:
        g_op = "ag_tensor_ndim";
        expect(ag_tensor_ndim(&v, h.h), want, "ndim");
        if (h.bad && v != -77) fail("output written on failure");
        expect(ag_tensor_ndim(NULL, h.h), M_ARG | (h.bad ? M_INV : 0), "ndim with out NULL");
        break;
    case 1:
        g_op = "ag_tensor_numel";
        expect(ag_tensor_numel(&v, h.h), want, "numel");
        if (h.bad && v != -77) fail("output written on failure");
        expect(ag_tensor_numel(NULL, h.h), M_ARG | (h.bad ? M_INV : 0), "numel with out NULL");
        break;
    case 2:
        g_op = "ag_tensor_dtype";
        expect(ag_tensor_dtype(&d, h.h), want, "dtype");
        if (h.bad && d != -77) fail("output written on failure");
        expect(ag_tensor_dtype(NULL, h.h), M_ARG | (h.bad ? M_INV : 0), "dtype with out NULL");
        break;
    case 3:
        g_op = "ag_tensor_requires_grad";
        expect(ag_tensor_requires_grad(&b, h.h), want, "requires_grad");
        if (h.bad && b != true) fail("output written on failure");
        expect(ag_tensor_requires_grad(NULL, h.h), M_ARG | (h.bad ? M_INV : 0), "requires_grad with out NULL");
        break;
    default: {
        /* ag_tensor_shape with a random capacity; the buffer always holds MAXS + 4 */
        int64_t buf[MAXS + 4];
        for (int i = 0; i < MAXS + 4; i++) buf[i] = -55;
        int64_t cap = (int64_t)(u8(r) % 12) - 2; /* -2 .. 9 */
        bool null = (u8(r) & 7) == 0;
        g_op = "ag_tensor_shape";
        ag_status s = chk(ag_tensor_shape(null ? NULL : buf, null ? 0 : cap, h.h));
        if (h.bad) {
            expect(s, M_INV | M_ARG, "shape of a bad handle");
        } else {
            Info in = info_of(h.h);
            unsigned w;
            if (null) w = in.nd == 0 ? M_OK | M_ARG : M_ARG;
            else w = cap < in.nd ? M_ARG : M_OK;
            if (!null && cap < 0) w = M_ARG | (in.nd == 0 ? M_OK : 0);
            expect(s, w, "ag_tensor_shape with capacity vs rank");
            if (s == AG_OK && !null) {
                for (int64_t i = 0; i < in.nd; i++)
                    if (buf[i] != in.shape[i]) fail("shape differs between calls");
                for (int64_t i = in.nd; i < MAXS + 4; i++)
                    if (buf[i] != -55) fail("ag_tensor_shape wrote past ndim (index %lld)", (long long)i);
            }
            if (s != AG_OK && !null)
                for (int i = 0; i < MAXS + 4; i++)
                    if (buf[i] != -55) fail("ag_tensor_shape failed but wrote its output");
        }
        break;
    }
    }
}

static unsigned char cbuf[(CAP + 64) * 8];

static void op_copy(Rd *r) {
    H h = pick_t(r);
    ag_dtype dt = rd_dtype(r);
    uint8_t cm = u8(r);
    int64_t numel = h.bad ? 0 : info_of(h.h).numel;
    int64_t cap;
    switch (cm % 7) {
    case 0: cap = numel; break;
    case 1: cap = numel - 1; break;
    case 2: cap = numel + 1; break;
    case 3: cap = 0; break;
    case 4: cap = -1; break;
    case 5: cap = CAP + 64; break;
    default: cap = INT64_MIN; break;
    }
    if (cap > CAP + 64) cap = CAP + 64; /* never claim more than the buffer holds */
    bool null = (u8(r) & 7) == 0;
    if (null) cap = 0;
    memset(cbuf, 0xAB, sizeof cbuf);
    g_op = "ag_tensor_copy_data";
    TRACE("ag_tensor_copy_data(out=%s, capacity=%lld, dtype=%d, %#llx)%s", null ? "NULL" : "buf", (long long)cap,
          (int)dt, (unsigned long long)h.h, h.bad ? " [bad]" : "");
    ag_status s = chk(ag_tensor_copy_data(null ? NULL : cbuf, cap, dt, h.h));
    if (h.bad) {
        expect(s, M_INV | M_ARG | M_DTYPE, "copy_data of a bad handle");
    } else {
        unsigned w = M_OK;
        if (cap < numel) w = M_ARG;
        if (null && numel > 0) w = M_ARG;
        if (!dtype_ok(dt)) w = M_DTYPE | (w == M_ARG ? M_ARG : 0);
        expect(s, w, "copy_data: capacity, dtype");
    }
    size_t es = dt == AG_FLOAT32 ? 4 : 8;
    if (s != AG_OK || null) {
        for (size_t i = 0; i < sizeof cbuf; i++)
            if (cbuf[i] != 0xAB) fail("copy_data failed but wrote its output (byte %zu)", i);
    } else {
        for (size_t i = (size_t)numel * es; i < (size_t)numel * es + 16 && i < sizeof cbuf; i++)
            if (cbuf[i] != 0xAB) fail("copy_data wrote past numel elements (byte %zu)", i);
        /* the copy agrees with the borrowed pointer */
        const void *p = NULL;
        ag_dtype own = 0;
        chk(ag_tensor_data_ptr(&p, h.h));
        chk(ag_tensor_dtype(&own, h.h));
        if (own == dt && numel > 0 && memcmp(p, cbuf, (size_t)numel * es) != 0)
            fail("copy_data in the tensor's own dtype differs from data_ptr");
    }
}

static void op_ptr(Rd *r) {
    H h = pick_t(r);
    const void *p = (const void *)0x1234;
    g_op = "ag_tensor_data_ptr";
    TRACE("ag_tensor_data_ptr(%#llx)%s", (unsigned long long)h.h, h.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_data_ptr(&p, h.h), h.bad ? M_INV : M_OK, "data_ptr");
    if (s != AG_OK) {
        if (p != (const void *)0x1234) fail("data_ptr failed but wrote its output");
        expect(ag_tensor_data_ptr(NULL, h.h), M_ARG | M_INV, "data_ptr with out NULL");
        return;
    }
    expect(ag_tensor_data_ptr(NULL, h.h), M_ARG, "data_ptr with out NULL");
    Info in = info_of(h.h);
    if (in.numel > 0 && !p) fail("data_ptr is NULL for %lld elements", (long long)in.numel);
    /* Read every element (ASan checks the buffer is that long). */
    volatile double acc = 0;
    for (int64_t i = 0; i < in.numel; i++)
        acc += in.dtype == AG_FLOAT32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
    (void)acc;
}

static void op_item(Rd *r) {
    H h = pick_t(r);
    double v = -77.0;
    g_op = "ag_tensor_item";
    TRACE("ag_tensor_item(%#llx)%s", (unsigned long long)h.h, h.bad ? " [bad]" : "");
    ag_status s = chk(ag_tensor_item(&v, h.h));
    if (h.bad) {
        expect(s, M_INV, "item of a bad handle");
    } else {
        Info in = info_of(h.h);
        expect(s, in.numel == 1 ? M_OK : M_SHAPE, "item: numel == 1");
        if (s == AG_OK) {
            const void *p = NULL;
            chk(ag_tensor_data_ptr(&p, h.h));
            double w = in.dtype == AG_FLOAT32 ? (double)*(const float *)p : *(const double *)p;
            if (!(v == w || (v != v && w != w))) fail("item %g differs from the element %g", v, w);
        }
    }
    if (s != AG_OK && v != -77.0) fail("item failed but wrote its output");
    expect(ag_tensor_item(NULL, h.h), M_ARG | M_INV | M_SHAPE, "item with out NULL");
}

static void op_set_rg(Rd *r) {
    H h = pick_t(r);
    bool want = bit(r);
    g_op = "ag_tensor_set_requires_grad";
    TRACE("ag_tensor_set_requires_grad(%#llx, %d)%s", (unsigned long long)h.h, want, h.bad ? " [bad]" : "");
    unsigned allowed = M_INV;
    if (!h.bad) allowed = info_of(h.h).rg ? M_OK | M_STATE : M_OK; /* a tensor not requiring grad is a leaf */
    ag_status s = expect(ag_tensor_set_requires_grad(h.h, want), allowed, "set_requires_grad");
    if (s == AG_OK && info_of(h.h).rg != want) fail("requires_grad is not what was set");
}

static void op_grad_of(Rd *r) {
    H h = pick_t(r);
    uint8_t dst = u8(r);
    ag_tensor out = SENT;
    g_op = "ag_tensor_grad";
    TRACE("ag_tensor_grad(%#llx)%s", (unsigned long long)h.h, h.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_grad(&out, h.h), h.bad ? M_INV : M_OK, "grad");
    if (s != AG_OK) {
        if (out != SENT) fail("ag_tensor_grad failed but wrote its output");
    } else if (out != AG_NULL_TENSOR) {
        Info t = info_of(h.h);
        owned++;
        Info g = info_of(out);
        owned--;
        same_shape(&g, t.shape, t.nd, "the gradient has its tensor's shape");
        if (g.dtype != t.dtype) fail("the gradient's dtype differs from its tensor's");
        take(out, dst);
    } else if (out == SENT) {
        fail("AG_OK but nothing written");
    }
    expect(ag_tensor_grad(NULL, h.h), M_ARG | (h.bad ? M_INV : 0), "grad with out NULL");
}

static void op_zero_grad(Rd *r) {
    H h = pick_t(r);
    g_op = "ag_tensor_zero_grad";
    TRACE("ag_tensor_zero_grad(%#llx)%s", (unsigned long long)h.h, h.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_zero_grad(h.h), h.bad ? M_INV : M_OK, "zero_grad");
    if (s == AG_OK) {
        ag_tensor g = SENT;
        expect(ag_tensor_grad(&g, h.h), M_OK, "grad after zero_grad");
        if (g != AG_NULL_TENSOR) fail("a gradient is left after ag_tensor_zero_grad");
    }
}

/* Operations ---------------------------------------------------------------------------------- */

/* After a successful op: the recording rule. `diff` says whether the op is differentiable. */
static void check_recording(ag_tensor out, const H *ins, int n, bool diff) {
    bool any = false;
    for (int i = 0; i < n; i++)
        if (!ins[i].bad && ins[i].h && info_of(ins[i].h).rg) any = true;
    bool rg = info_of(out).rg;
    if (!grad_on && rg) fail("a result made with grad mode off requires grad");
    if (grad_on && diff && any && !rg) fail("a result of inputs requiring grad, grad mode on, does not require grad");
    if (!any && rg) fail("a result of inputs not requiring grad requires grad");
    /* "Results are new tensors": one that records history is not a leaf (a handle to the input
     * itself would be, and would share its requires_grad flag, gradient and hooks). */
    if (grad_on && diff && any && leaf_requiring_grad(out))
        fail("the result is a leaf: a handle to the input tensor itself, not a new tensor with history");
}

/* Names the inputs of the op about to run, for result()'s recording check. */
static void inputs(int n, H a, H b, H c) {
    g_ins[0] = a;
    g_ins[1] = b;
    g_ins[2] = c;
    g_nins = n;
}

static void op_binary(Rd *r) {
    H a = pick_t(r), b = pick_t(r);
    uint8_t which = u8(r) % 14, dst = u8(r);
    static const char *names[] = {"ag_add", "ag_sub", "ag_mul", "ag_div", "ag_pow", "ag_maximum", "ag_minimum",
                                  "ag_eq", "ag_ne", "ag_lt", "ag_le", "ag_gt", "ag_ge", "ag_mse_loss"};
    g_op = names[which];
    unsigned allowed = M_INV;
    int64_t bshape[MAXS], bnd = 0;
    bool bc = false;
    Info ia = {0}, ib = {0};
    if (!a.bad && !b.bad) {
        ia = info_of(a.h);
        ib = info_of(b.h);
        const Info *ins[2] = {&ia, &ib};
        bc = broadcast(ins, 2, bshape, &bnd);
        int64_t n = 0;
        bool known = bc && numel_of(bshape, bnd, &n);
        if (bc && !size_allowed(known, n)) return;
        if (which == 13) { /* mse_loss: one shape */
            bool same = ia.nd == ib.nd;
            for (int64_t i = 0; same && i < ia.nd; i++) same = ia.shape[i] == ib.shape[i];
            allowed = same ? M_OK | M_OOM : M_SHAPE;
        } else {
            allowed = bc ? (known ? M_OK | M_OOM : M_SHAPE | M_OOM) : M_SHAPE;
        }
        if (ia.dtype != ib.dtype) allowed = M_DTYPE | (allowed & M_SHAPE);
    }
    ag_tensor out = SENT;
    TRACE("%s(%#llx, %#llx)%s", g_op, (unsigned long long)a.h, (unsigned long long)b.h, (a.bad || b.bad) ? " [bad]" : "");
    ag_status s;
    switch (which) {
    case 0: s = ag_add(&out, a.h, b.h); break;
    case 1: s = ag_sub(&out, a.h, b.h); break;
    case 2: s = ag_mul(&out, a.h, b.h); break;
    case 3: s = ag_div(&out, a.h, b.h); break;
    case 4: s = ag_pow(&out, a.h, b.h); break;
    case 5: s = ag_maximum(&out, a.h, b.h); break;
    case 6: s = ag_minimum(&out, a.h, b.h); break;
    case 7: s = ag_eq(&out, a.h, b.h); break;
    case 8: s = ag_ne(&out, a.h, b.h); break;
    case 9: s = ag_lt(&out, a.h, b.h); break;
    case 10: s = ag_le(&out, a.h, b.h); break;
    case 11: s = ag_gt(&out, a.h, b.h); break;
    case 12: s = ag_ge(&out, a.h, b.h); break;
    default: s = ag_mse_loss(&out, a.h, b.h); break;
    }
    expect(s, allowed, "binary op: handles, dtypes, broadcasting");
    if (s == AG_OK) {
        owned++;
        Info o = info_of(out);
        owned--;
        if (which == 13) same_shape(&o, NULL, 0, "mse_loss is 0-d");
        else same_shape(&o, bshape, bnd, "broadcast result shape");
        if (o.dtype != ia.dtype) fail("result dtype differs from the operands'");
        H ins[2] = {a, b};
        owned++;
        check_recording(out, ins, 2, which < 7 || which == 13);
        if (which >= 7 && which <= 12 && o.rg) fail("a comparison result requires grad");
        owned--;
    }
    result(s, out, dst);
}

static void op_scalar(Rd *r) {
    H a = pick_t(r);
    uint8_t which = u8(r) % 11, dst = u8(r);
    double v = rd_double(r);
    static const char *names[] = {"ag_add_scalar", "ag_sub_scalar", "ag_rsub_scalar", "ag_mul_scalar",
                                  "ag_div_scalar", "ag_rdiv_scalar", "ag_pow_scalar", "ag_rpow_scalar",
                                  "ag_maximum_scalar", "ag_minimum_scalar", "ag_leaky_relu"};
    g_op = names[which];
    ag_tensor out = SENT;
    TRACE("%s(%#llx, %g)%s", g_op, (unsigned long long)a.h, v, a.bad ? " [bad]" : "");
    ag_status s;
    switch (which) {
    case 0: s = ag_add_scalar(&out, a.h, v); break;
    case 1: s = ag_sub_scalar(&out, a.h, v); break;
    case 2: s = ag_rsub_scalar(&out, a.h, v); break;
    case 3: s = ag_mul_scalar(&out, a.h, v); break;
    case 4: s = ag_div_scalar(&out, a.h, v); break;
    case 5: s = ag_rdiv_scalar(&out, a.h, v); break;
    case 6: s = ag_pow_scalar(&out, a.h, v); break;
    case 7: s = ag_rpow_scalar(&out, a.h, v); break;
    case 8: s = ag_maximum_scalar(&out, a.h, v); break;
    case 9: s = ag_minimum_scalar(&out, a.h, v); break;
    default: s = ag_leaky_relu(&out, a.h, v); break;
    }
    unsigned allowed = a.bad ? M_INV : M_OK | M_OOM;
    /* The library refuses a non-finite leaky_relu slope (AG_ERR_ARGUMENT; the header does not
     * list it, see the README's findings). */
    if (which == 10 && !isfinite(v)) allowed = M_ARG | (a.bad ? M_INV : 0);
    expect(s, allowed, "elementwise op with a scalar");
    if (s == AG_OK) {
        Info ia = info_of(a.h);
        owned++;
        Info o = info_of(out);
        same_shape(&o, ia.shape, ia.nd, "elementwise result shape");
        if (o.dtype != ia.dtype) fail("result dtype differs");
        check_recording(out, &a, 1, true);
        owned--;
    }
    result(s, out, dst);
}

static void op_unary(Rd *r) {
    H a = pick_t(r);
    uint8_t which = u8(r) % 15, dst = u8(r);
    static const char *names[] = {"ag_neg", "ag_exp", "ag_log", "ag_relu", "ag_sqrt", "ag_abs", "ag_sin", "ag_cos",
                                  "ag_tanh", "ag_sigmoid", "ag_gelu", "ag_softplus", "ag_detach", "ag_neg(NULL out)",
                                  "ag_softmax-free"};
    g_op = names[which];
    ag_tensor out = SENT;
    TRACE("%s(%#llx)%s", g_op, (unsigned long long)a.h, a.bad ? " [bad]" : "");
    ag_status s;
    switch (which) {
    case 0: s = ag_neg(&out, a.h); break;
    case 1: s = ag_exp(&out, a.h); break;
    case 2: s = ag_log(&out, a.h); break;
    case 3: s = ag_relu(&out, a.h); break;
    case 4: s = ag_sqrt(&out, a.h); break;
    case 5: s = ag_abs(&out, a.h); break;
    case 6: s = ag_sin(&out, a.h); break;
    case 7: s = ag_cos(&out, a.h); break;
    case 8: s = ag_tanh(&out, a.h); break;
    case 9: s = ag_sigmoid(&out, a.h); break;
    case 10: s = ag_gelu(&out, a.h); break;
    case 11: s = ag_softplus(&out, a.h); break;
    case 12: s = ag_detach(&out, a.h); break;
    case 13:
        expect(ag_neg(NULL, a.h), M_ARG | (a.bad ? M_INV : 0), "out NULL");
        expect(ag_exp(NULL, a.h), M_ARG | (a.bad ? M_INV : 0), "out NULL");
        return;
    default: s = ag_abs(&out, a.h); break;
    }
    expect(s, a.bad ? M_INV : M_OK | M_OOM, "elementwise op");
    if (s == AG_OK) {
        Info ia = info_of(a.h);
        owned++;
        Info o = info_of(out);
        same_shape(&o, ia.shape, ia.nd, "elementwise result shape");
        if (o.dtype != ia.dtype) fail("result dtype differs");
        if (which == 12) {
            if (o.rg) fail("a detached tensor requires grad");
        } else {
            check_recording(out, &a, 1, true);
        }
        owned--;
    }
    result(s, out, dst);
}

/* The ops issue 15 added: log1p, expm1, erf (elementwise), clamp (bounds from the scalar table:
 * nan is AG_ERR_ARGUMENT, +-inf no bound; the values then lie within the bounds), atan2
 * (broadcasting, as the binary ops) and cumsum (one axis; rank 0 takes 0 or -1). */
static void op_added(Rd *r) {
    H a = pick_t(r);
    uint8_t which = u8(r) % 6, dst = u8(r);
    static const char *names[] = {"ag_log1p", "ag_expm1", "ag_erf", "ag_clamp", "ag_atan2", "ag_cumsum"};
    g_op = names[which];
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    ag_tensor out = SENT;
    ag_status s;
    unsigned allowed = a.bad ? M_INV : M_OK | M_OOM;
    int64_t oshape[MAXS], ond = ia.nd;
    memcpy(oshape, ia.shape, sizeof oshape);
    H ins[2] = {a, a};
    int nin = 1;
    double lo = 0, hi = 0;
    switch (which) {
    case 0:
    case 1:
    case 2:
        TRACE("%s(%#llx)%s", g_op, (unsigned long long)a.h, a.bad ? " [bad]" : "");
        s = which == 0 ? ag_log1p(&out, a.h) : which == 1 ? ag_expm1(&out, a.h) : ag_erf(&out, a.h);
        break;
    case 3: {
        lo = rd_double(r);
        hi = rd_double(r);
        if (bit(r)) lo = -INFINITY;
        else if (bit(r)) hi = INFINITY;
        /* The handle is looked up first; a nan bound is refused after it. */
        if (isnan(lo) || isnan(hi)) allowed = a.bad ? M_INV : M_ARG;
        TRACE("ag_clamp(%#llx, %g, %g)%s", (unsigned long long)a.h, lo, hi, a.bad ? " [bad]" : "");
        s = ag_clamp(&out, a.h, lo, hi);
        break;
    }
    case 4: {
        H b = pick_t(r);
        ins[1] = b;
        nin = 2;
        allowed = M_INV;
        if (!a.bad && !b.bad) {
            Info ib = info_of(b.h);
            const Info *both[2] = {&ia, &ib};
            bool bc = broadcast(both, 2, oshape, &ond);
            int64_t n = 0;
            bool known = bc && numel_of(oshape, ond, &n);
            if (bc && !size_allowed(known, n)) return;
            allowed = bc ? (known ? M_OK | M_OOM : M_SHAPE | M_OOM) : M_SHAPE;
            if (ia.dtype != ib.dtype) allowed = M_DTYPE | (allowed & M_SHAPE);
        }
        TRACE("ag_atan2(%#llx, %#llx)%s", (unsigned long long)a.h, (unsigned long long)b.h, (a.bad || b.bad) ? " [bad]" : "");
        s = ag_atan2(&out, a.h, b.h);
        break;
    }
    default: {
        int64_t ax = rd_axis(r);
        if (!a.bad) {
            allowed = (ax >= -ia.nd && ax < ia.nd) ? M_OK | M_OOM : M_ARG;
            if (ia.nd == 0 && (ax == 0 || ax == -1)) allowed = M_OK | M_OOM;
        }
        TRACE("ag_cumsum(%#llx, %lld)%s", (unsigned long long)a.h, (long long)ax, a.bad ? " [bad]" : "");
        s = ag_cumsum(&out, a.h, ax);
        break;
    }
    }
    expect(s, allowed, "added op: handles, dtypes, broadcasting, bounds, axis");
    if (s == AG_OK) {
        owned++;
        Info o = info_of(out);
        same_shape(&o, oshape, ond, "result shape");
        if (o.dtype != ia.dtype) fail("result dtype differs from the operand's");
        check_recording(out, ins, nin, true);
        if (which == 3 && o.numel <= CAP && lo <= hi) {
            static double v[CAP];
            if (chk(ag_tensor_copy_data(v, CAP, AG_FLOAT64, out)) != AG_OK) fail("reading a clamp result");
            /* The bounds in the tensor's dtype (float32 rounds them). */
            double flo = ia.dtype == AG_FLOAT32 ? (double)(float)lo : lo, fhi = ia.dtype == AG_FLOAT32 ? (double)(float)hi : hi;
            for (int64_t i = 0; i < o.numel; i++)
                if (!isnan(v[i]) && (v[i] < flo || v[i] > fhi)) fail("clamp(%g, %g) gave %g", lo, hi, v[i]);
        }
        owned--;
    }
    result(s, out, dst);
}

static int rd_axes(Rd *r, int64_t *axes) {
    int n = u8(r) % 5;
    if (n == 4) n = 0;
    for (int i = 0; i < n; i++) axes[i] = rd_axis(r);
    return n;
}

static void op_reduce(Rd *r) {
    H a = pick_t(r);
    uint8_t which = u8(r) % 6, dst = u8(r);
    int64_t axes[8];
    int64_t naxes = rd_axes(r, axes);
    bool keep = bit(r);
    int64_t corr = (int64_t)(u8(r) % 5) - 1;
    uint8_t mangle = u8(r);
    const int64_t *ap = axes;
    if ((mangle & 15) == 1) ap = NULL;          /* NULL with naxes > 0: ARG */
    if ((mangle & 15) == 2) naxes = -1 - (mangle >> 4);
    static const char *names[] = {"ag_sum", "ag_mean", "ag_max", "ag_min", "ag_var", "ag_logsumexp"};
    g_op = names[which];
    unsigned allowed = M_INV;
    Info ia = {0};
    int64_t oshape[MAXS], ond = 0;
    if (!a.bad) {
        ia = info_of(a.h);
        bool reduced[MAXS];
        if (naxes < 0 || (naxes > 0 && !ap)) allowed = M_ARG;
        else if (ia.nd == 0 && naxes > 0) {
            /* Rank 0: axis 0 / -1 may be accepted (PyTorch) or refused (NumPy). */
            bool ok01 = naxes == 1 && (axes[0] == 0 || axes[0] == -1);
            allowed = ok01 ? M_OK | M_ARG : M_ARG;
        } else if (!norm_axes(axes, naxes, ia.nd, reduced)) {
            allowed = M_ARG;
        } else {
            allowed = M_OK | M_OOM;
            int64_t rn = 1;
            for (int64_t d = 0; d < ia.nd; d++) {
                bool red = naxes == 0 || reduced[d];
                if (red) {
                    rn *= ia.shape[d] > 0 ? 1 : 0;
                    if (keep) oshape[ond++] = 1;
                } else {
                    oshape[ond++] = ia.shape[d];
                }
            }
            if (which == 4 && corr < 0) allowed = M_ARG;
            /* max/min over zero elements: AG_ERR_SHAPE (an empty result may or may not count) */
            if ((which == 2 || which == 3) && ia.numel == 0) allowed = M_SHAPE | (rn == 0 ? 0 : M_OK);
            int64_t on;
            if ((which == 2 || which == 3) && ia.numel == 0 && rn == 0) allowed = M_SHAPE;
            if (!numel_of(oshape, ond, &on)) allowed |= M_SHAPE;
        }
        if (which == 4 && corr < 0) allowed |= M_ARG;
    }
    ag_tensor out = SENT;
    TRACE("%s(%#llx, naxes=%lld [%lld %lld %lld %lld], keepdims=%d, correction=%lld)%s", g_op,
          (unsigned long long)a.h, (long long)naxes, (long long)axes[0], (long long)axes[1], (long long)axes[2],
          (long long)axes[3], keep, (long long)corr, a.bad ? " [bad]" : "");
    ag_status s;
    switch (which) {
    case 0: s = ag_sum(&out, a.h, ap, naxes, keep); break;
    case 1: s = ag_mean(&out, a.h, ap, naxes, keep); break;
    case 2: s = ag_max(&out, a.h, ap, naxes, keep); break;
    case 3: s = ag_min(&out, a.h, ap, naxes, keep); break;
    case 4: s = ag_var(&out, a.h, ap, naxes, corr, keep); break;
    default: s = ag_logsumexp(&out, a.h, ap, naxes, keep); break;
    }
    expect(s, allowed, "reduction: axes in range and distinct, correction >= 0");
    if (s == AG_OK && !(ia.nd == 0 && naxes > 0)) {
        owned++;
        Info o = info_of(out);
        same_shape(&o, oshape, ond, "reduction result shape");
        check_recording(out, &a, 1, true);
        owned--;
    }
    result(s, out, dst);
}

static void op_reshape(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t shape[MAXS], nd;
    uint8_t mode = u8(r);
    unsigned allowed = M_INV;
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    if (mode < 128 && !a.bad) {
        /* a valid target: split the element count, maybe with one -1 */
        int64_t n = ia.numel;
        nd = u8(r) % 5;
        for (int i = 0; i < MAXS; i++) shape[i] = 1;
        if (nd == 0 && n != 1) nd = 1;
        if (nd > 0) shape[0] = n;
        for (int64_t i = 1; i < nd && n > 0; i++) {
            int64_t f = 1 + u8(r) % 4;
            if (shape[0] % f == 0) { shape[0] /= f; shape[i] = f; }
        }
        if (nd > 0 && n > 0 && (mode & 1)) shape[u8(r) % nd] = -1;
        allowed = M_OK | M_OOM;
    } else {
        rd_shape(r, shape, &nd);
        if (u8(r) & 1 && nd > 0 && nd <= AG_MAX_NDIM) shape[u8(r) % nd] = -1;
        if (u8(r) & 1 && nd > 1 && nd <= AG_MAX_NDIM) shape[0] = -1, shape[1] = -1;
        if (!a.bad) {
            int64_t n, neg1 = 0, other_neg = 0;
            for (int64_t i = 0; i < nd && nd <= AG_MAX_NDIM && nd > 0; i++) {
                if (shape[i] == -1) neg1++;
                else if (shape[i] < 0) other_neg++;
            }
            if (nd < 0 || nd > AG_MAX_NDIM || neg1 > 1) allowed = M_ARG;
            else if (neg1 == 0 && other_neg == 0 && numel_of(shape, nd, &n)) allowed = n == ia.numel ? M_OK | M_OOM : M_SHAPE;
            else allowed = M_ANY; /* -1 inference and odd values: any documented answer */
        }
    }
    bool nul = nd > 0 && (u8(r) & 31) == 0;
    if (nul && !a.bad) allowed = M_ARG | ((nd < 0 || nd > AG_MAX_NDIM) ? M_ARG : 0);
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_reshape";
    TRACE("ag_reshape(%#llx, ndim=%lld [%lld %lld %lld])%s", (unsigned long long)a.h, (long long)nd,
          (long long)shape[0], (long long)shape[1], (long long)shape[2], a.bad ? " [bad]" : "");
    ag_status s = ag_reshape(&out, a.h, nul ? NULL : shape, nd);
    expect(s, allowed | (a.bad ? M_ARG : 0), "reshape: same element count, at most one -1");
    if (s == AG_OK) {
        owned++;
        Info o = info_of(out);
        if (o.numel != ia.numel) fail("reshape changed the element count");
        owned--;
    }
    result(s, out, dst);
}

static void op_transpose(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t d0 = rd_axis(r), d1 = rd_axis(r);
    unsigned allowed = M_INV;
    if (!a.bad) {
        Info ia = info_of(a.h);
        int64_t n = ia.nd;
        bool ok = d0 >= -n && d0 < n && d1 >= -n && d1 < n;
        allowed = ok ? M_OK | M_OOM : M_ARG;
        if (n == 0 && (d0 == 0 || d0 == -1) && (d1 == 0 || d1 == -1)) allowed = M_OK | M_ARG;
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_transpose";
    TRACE("ag_transpose(%#llx, %lld, %lld)%s", (unsigned long long)a.h, (long long)d0, (long long)d1, a.bad ? " [bad]" : "");
    ag_status s = expect(ag_transpose(&out, a.h, d0, d1), allowed, "transpose: axes in range");
    result(s, out, dst);
}

static void op_permute(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t perm[MAXS];
    int64_t n = u8(r) % 6;
    uint8_t mode = u8(r);
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    if (mode < 160 && !a.bad) { /* a real permutation, by a few swaps */
        n = ia.nd;
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        for (int k = 0; k < 3 && n > 1; k++) {
            int64_t i = u8(r) % n, j = u8(r) % n, t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        if (mode & 1 && n > 0) perm[u8(r) % n] -= n; /* negative axes */
    } else {
        for (int64_t i = 0; i < n; i++) perm[i] = rd_axis(r);
    }
    unsigned allowed = M_INV;
    if (!a.bad) {
        bool seen[MAXS] = {0}, ok = n == ia.nd;
        for (int64_t i = 0; ok && i < n; i++) {
            int64_t p = perm[i];
            if (p < -ia.nd || p >= ia.nd) { ok = false; break; }
            if (p < 0) p += ia.nd;
            if (seen[p]) ok = false;
            seen[p] = true;
        }
        allowed = ok ? M_OK | M_OOM : M_ARG;
        /* negative entries in a permutation: the header does not say; accept either */
        for (int64_t i = 0; ok && i < n; i++)
            if (perm[i] < 0) allowed |= M_ARG;
    }
    bool nul = n > 0 && (u8(r) & 15) == 0;
    if (nul && !a.bad) allowed = M_ARG;
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_permute";
    TRACE("ag_permute(%#llx, n=%lld [%lld %lld %lld %lld])%s", (unsigned long long)a.h, (long long)n, (long long)perm[0],
          (long long)perm[1], (long long)perm[2], (long long)perm[3], a.bad ? " [bad]" : "");
    ag_status s = expect(ag_permute(&out, a.h, nul ? NULL : perm, n), allowed, "permute: a permutation of the axes");
    if (s == AG_OK) {
        owned++;
        Info o = info_of(out);
        for (int64_t i = 0; i < n; i++) {
            int64_t p = perm[i] < 0 ? perm[i] + ia.nd : perm[i];
            if (o.shape[i] != ia.shape[p]) fail("permute result extent %lld", (long long)i);
        }
        owned--;
    }
    result(s, out, dst);
}

static void op_expand(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t shape[MAXS], nd;
    uint8_t mode = u8(r);
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    unsigned allowed = M_ANY;
    if (mode < 160 && !a.bad) {
        /* a valid target: a's shape with extent-1 axes grown, maybe new leading axes, maybe -1s */
        int64_t extra = u8(r) % 3;
        if (ia.nd + extra > AG_MAX_NDIM) extra = 0;
        nd = ia.nd + extra;
        for (int64_t i = 0; i < extra; i++) shape[i] = u8(r) % 4;
        for (int64_t i = 0; i < ia.nd; i++) {
            int64_t e = ia.shape[i];
            uint8_t c = u8(r);
            shape[extra + i] = e == 1 ? c % 5 : ((c & 3) == 0 ? -1 : e);
        }
        int64_t n;
        int64_t real[MAXS];
        for (int64_t i = 0; i < nd; i++) real[i] = shape[i] == -1 ? ia.shape[i - extra] : shape[i];
        bool known = numel_of(real, nd, &n);
        if (!size_allowed(known, n)) return;
        allowed = known ? M_OK | M_OOM : M_SHAPE | M_OOM;
    } else {
        rd_shape(r, shape, &nd);
        if (!a.bad) {
            int64_t n;
            if (nd < 0 || nd > AG_MAX_NDIM) allowed = M_ARG;
            else if (numel_of(shape, nd, &n)) {
                if (!size_allowed(true, n)) return;
                /* no -1: broadcastable from the right? */
                bool ok = nd >= ia.nd;
                for (int64_t i = 0; ok && i < ia.nd; i++) {
                    int64_t e = ia.shape[ia.nd - 1 - i], t = shape[nd - 1 - i];
                    if (e != 1 && e != t) ok = false;
                }
                allowed = ok ? M_OK | M_OOM : M_SHAPE | M_ARG;
                if (ok && n >= HUGE) allowed = M_OOM | M_SHAPE | M_OK; /* a lazy view may be fine */
            } else {
                bool minus1 = false;
                for (int64_t i = 0; i < nd; i++) minus1 |= shape[i] == -1;
                allowed = minus1 ? M_ANY : M_SHAPE | M_ARG | M_OOM;
            }
        }
    }
    if (a.bad) allowed = M_INV | M_ARG;
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_expand";
    TRACE("ag_expand(%#llx, ndim=%lld [%lld %lld %lld])%s", (unsigned long long)a.h, (long long)nd, (long long)shape[0],
          (long long)shape[1], (long long)shape[2], a.bad ? " [bad]" : "");
    ag_status s = expect(ag_expand(&out, a.h, shape, nd), allowed, "expand: broadcastable target");
    result(s, out, dst);
}

static void op_squeeze(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t axes[8];
    int64_t n = rd_axes(r, axes);
    bool nul = (u8(r) & 7) == 0;
    unsigned allowed = M_INV;
    Info ia = {0};
    if (!a.bad) {
        ia = info_of(a.h);
        bool red[MAXS];
        if (nul && n > 0) allowed = M_ARG;
        else if (nul || n == 0) allowed = M_OK | M_OOM;
        else if (ia.nd == 0) allowed = M_ARG | M_OK;
        else if (!norm_axes(axes, n, ia.nd, red)) allowed = M_ARG;
        else {
            allowed = M_OK | M_OOM;
            for (int64_t d = 0; d < ia.nd; d++)
                if (red[d] && ia.shape[d] != 1) allowed = M_SHAPE;
        }
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_squeeze";
    TRACE("ag_squeeze(%#llx, n=%lld%s)%s", (unsigned long long)a.h, (long long)n, nul ? " NULL" : "", a.bad ? " [bad]" : "");
    ag_status s = expect(ag_squeeze(&out, a.h, nul ? NULL : axes, n), allowed, "squeeze: axes of extent 1");
    result(s, out, dst);
}

static void op_unsqueeze(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t ax = rd_axis(r);
    unsigned allowed = M_INV;
    if (!a.bad) {
        Info ia = info_of(a.h);
        allowed = (ax >= -(ia.nd + 1) && ax <= ia.nd && ia.nd + 1 <= AG_MAX_NDIM) ? M_OK | M_OOM : M_ARG;
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_unsqueeze";
    TRACE("ag_unsqueeze(%#llx, %lld)%s", (unsigned long long)a.h, (long long)ax, a.bad ? " [bad]" : "");
    ag_status s = expect(ag_unsqueeze(&out, a.h, ax), allowed, "unsqueeze: axis range, rank <= 8");
    result(s, out, dst);
}

static void op_concat(Rd *r) {
    bool stack = bit(r);
    int64_t n = (int64_t)(u8(r) % 6) - 1; /* -1 .. 4 */
    H hs[MAXARR];
    ag_tensor arr[MAXARR];
    for (int64_t i = 0; i < n; i++) {
        hs[i] = pick_t(r);
        arr[i] = hs[i].h;
    }
    int64_t ax = rd_axis(r);
    uint8_t dst = u8(r);
    bool nul = (u8(r) & 15) == 0;
    unsigned allowed;
    if (n < 1 || nul) allowed = M_ARG;
    else if (any_bad(hs, (int)n)) allowed = M_INV | M_ARG;
    else {
        Info ins[MAXARR];
        int64_t total = 0;
        for (int64_t i = 0; i < n; i++) {
            ins[i] = info_of(arr[i]);
            total += ins[i].numel;
        }
        if (stack && total > BIG) return;
        bool same_dt = true, ok = true;
        int64_t rank = ins[0].nd;
        int64_t lim = stack ? rank + 1 : rank;
        if (ax < -lim || ax >= lim || (stack && rank + 1 > AG_MAX_NDIM)) ok = false;
        int64_t axn = ax < 0 ? ax + lim : ax;
        for (int64_t i = 1; i < n; i++) {
            if (ins[i].dtype != ins[0].dtype) same_dt = false;
            if (ins[i].nd != rank) { ok = false; continue; }
            for (int64_t d = 0; d < rank; d++)
                if (ins[i].shape[d] != ins[0].shape[d] && (stack || d != axn)) ok = false;
        }
        if (!same_dt) allowed = M_DTYPE | M_SHAPE | M_ARG;
        else allowed = ok ? M_OK | M_OOM : M_SHAPE | M_ARG;
        /* concat along an axis whose extents sum past int64: the header does not say which */
        if (!stack && ok && rank > 0) allowed |= M_SHAPE;
        /* stacking zero-element tensors with huge extents: the new count may overflow */
        if (stack && ok && ins[0].numel == 0) allowed |= M_SHAPE;
    }
    ag_tensor out = SENT;
    g_op = stack ? "ag_stack" : "ag_concat";
    TRACE("%s(n=%lld%s, axis=%lld)", g_op, (long long)n, nul ? " NULL" : "", (long long)ax);
    ag_status s = stack ? ag_stack(&out, nul ? NULL : arr, n, ax) : ag_concat(&out, nul ? NULL : arr, n, ax);
    expect(s, allowed, "concat/stack: same dtype, rank and extents");
    result(s, out, dst);
}

static void op_slice(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t ax = rd_axis(r), start = rd_i64(r), stop = rd_i64(r), step = rd_i64(r);
    if (u8(r) & 1) step = 1 + (step & 3);
    unsigned allowed = M_INV;
    if (!a.bad) {
        Info ia = info_of(a.h);
        bool ok = ax >= -ia.nd && ax < ia.nd && step > 0;
        allowed = ok ? M_OK | M_OOM : M_ARG;
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_slice";
    TRACE("ag_slice(%#llx, axis=%lld, %lld:%lld:%lld)%s", (unsigned long long)a.h, (long long)ax, (long long)start,
          (long long)stop, (long long)step, a.bad ? " [bad]" : "");
    ag_status s = expect(ag_slice(&out, a.h, ax, start, stop, step), allowed, "slice: axis in range, step > 0");
    result(s, out, dst);
}

static void op_index_select(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t ax = rd_axis(r);
    int64_t n = (int64_t)(u8(r) % 10) - 1;
    int64_t idx[NIDX];
    for (int64_t i = 0; i < n; i++) idx[i] = (u8(r) & 3) == 0 ? rd_i64(r) : (int64_t)(u8(r) % 8) - 2;
    bool nul = n > 0 && (u8(r) & 15) == 0;
    unsigned allowed = M_INV;
    if (!a.bad) {
        Info ia = info_of(a.h);
        if (n < 0 || nul || ax < -ia.nd || ax >= ia.nd) allowed = M_ARG;
        else {
            int64_t e = ia.shape[ax < 0 ? ax + ia.nd : ax];
            bool ok = true;
            for (int64_t i = 0; i < n; i++)
                if (idx[i] < -e || idx[i] >= e) ok = false;
            allowed = ok ? M_OK | M_OOM : M_ARG;
            /* the result's shape must be representable: the product of its non-zero extents
             * (every axis but `ax`, then n) must fit in int64, as for every shape */
            int64_t axis = ax < 0 ? ax + ia.nd : ax, prod = 1;
            bool over = false;
            for (int64_t i = 0; i <= ia.nd; i++) {
                int64_t d = i == ia.nd ? n : i == axis ? 1 : ia.shape[i];
                if (d != 0 && __builtin_mul_overflow(prod, d, &prod)) over = true;
            }
            if (over) allowed |= M_SHAPE;
        }
    }
    if (a.bad) allowed |= M_ARG;
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_index_select";
    TRACE("ag_index_select(%#llx, axis=%lld, n=%lld [%lld %lld])%s", (unsigned long long)a.h, (long long)ax, (long long)n,
          (long long)(n > 0 ? idx[0] : 0), (long long)(n > 1 ? idx[1] : 0), a.bad ? " [bad]" : "");
    ag_status s = expect(ag_index_select(&out, a.h, ax, nul ? NULL : idx, n), allowed, "index_select: axis, indices in range");
    result(s, out, dst);
}

static void op_gather(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t ax = rd_axis(r);
    int64_t ishape[MAXS], ind;
    int64_t idx[256];
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    uint8_t mode = u8(r);
    if (mode < 160 && !a.bad) { /* index of a's rank with extents <= a's */
        ind = ia.nd;
        for (int64_t i = 0; i < ind; i++) {
            int64_t e = ia.shape[i] < 4 ? ia.shape[i] : 4;
            ishape[i] = e <= 0 ? 0 : u8(r) % (e + 1);
            if (i == (ax < 0 ? ax + ia.nd : ax)) ishape[i] = u8(r) % 4;
        }
    } else {
        ind = u8(r) % 5;
        for (int64_t i = 0; i < ind; i++) ishape[i] = (int64_t)(u8(r) % 5) - ((mode & 1) ? 1 : 0);
        if ((mode & 7) == 7) ind = 9;
    }
    int64_t in = 0;
    bool known = ind >= 0 && ind <= AG_MAX_NDIM && numel_of(ishape, ind, &in);
    if (known && in > 256) return;
    int64_t ext = 1;
    if (!a.bad && ax >= -ia.nd && ax < ia.nd) ext = ia.shape[ax < 0 ? ax + ia.nd : ax];
    bool idx_ok = true;
    for (int64_t i = 0; known && i < in; i++) {
        uint8_t c = u8(r);
        idx[i] = (c & 7) == 0 ? rd_i64(r) : (ext > 0 ? (int64_t)(c % ext) : 0);
        if (idx[i] < 0 || idx[i] >= ext) idx_ok = false;
    }
    bool nul = (u8(r) & 15) == 0;
    unsigned allowed = M_INV | M_ARG | M_SHAPE;
    if (!a.bad) {
        if (nul && known && in > 0) allowed = M_ARG;
        else if (ind < 0 || ind > AG_MAX_NDIM || !known) allowed = M_ARG | M_SHAPE;
        else if (ax < -ia.nd || ax >= ia.nd) allowed = M_ARG | M_SHAPE;
        else if (ind != ia.nd) allowed = M_SHAPE | M_ARG;
        else {
            bool shape_ok = true;
            int64_t axn = ax < 0 ? ax + ia.nd : ax;
            for (int64_t i = 0; i < ind; i++)
                if (i != axn && ishape[i] > ia.shape[i]) shape_ok = false;
            if (!shape_ok) allowed = M_SHAPE | (idx_ok ? 0 : M_ARG);
            else if (!idx_ok) allowed = M_ARG; /* negative indices: not documented as allowed */
            else allowed = M_OK | M_OOM;
        }
        if (nul) allowed |= M_ARG; /* a NULL index may be refused before anything else */
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_gather";
    TRACE("ag_gather(%#llx, axis=%lld, index_ndim=%lld [%lld %lld %lld], n=%lld%s)%s", (unsigned long long)a.h, (long long)ax,
          (long long)ind, (long long)ishape[0], (long long)ishape[1], (long long)ishape[2], (long long)in,
          nul ? " NULL" : "", a.bad ? " [bad]" : "");
    ag_status s = expect(ag_gather(&out, a.h, ax, nul ? NULL : idx, ishape, ind), allowed, "gather");
    if (s == AG_OK) {
        owned++;
        Info o = info_of(out);
        same_shape(&o, ishape, ind, "gather result has index_shape");
        owned--;
    }
    result(s, out, dst);
}

static void op_matmul(Rd *r) {
    H a = pick_t(r), b = pick_t(r);
    uint8_t which = u8(r) % 3, dst = u8(r);
    static const char *names[] = {"ag_matmul", "ag_dot", "ag_outer"};
    g_op = names[which];
    unsigned allowed = M_INV;
    if (!a.bad && !b.bad) {
        Info ia = info_of(a.h), ib = info_of(b.h);
        int64_t n;
        if (which == 0) {
            if (ia.nd == 0 || ib.nd == 0) allowed = M_SHAPE;
            else {
                int64_t k1 = ia.shape[ia.nd - 1], k2 = ib.nd == 1 ? ib.shape[0] : ib.shape[ib.nd - 2];
                Info ba = ia, bb = ib; /* batch axes */
                ba.nd = ia.nd > 2 ? ia.nd - 2 : 0;
                bb.nd = ib.nd > 2 ? ib.nd - 2 : 0;
                int64_t bs[MAXS], bnd;
                const Info *ins[2] = {&ba, &bb};
                bool bc = broadcast(ins, 2, bs, &bnd);
                if (k1 != k2 || !bc) allowed = M_SHAPE;
                else {
                    int64_t m = ia.nd >= 2 ? ia.shape[ia.nd - 2] : 1, nn = ib.nd >= 2 ? ib.shape[ib.nd - 1] : 1;
                    bs[bnd++] = m;
                    bs[bnd++] = nn;
                    bool known = numel_of(bs, bnd, &n);
                    int64_t work;
                    if (known && __builtin_mul_overflow(n, k1 ? k1 : 1, &work)) work = INT64_MAX;
                    if (known && work > BIG * 16 && n < HUGE) return;
                    if (!size_allowed(known, n)) return;
                    allowed = known ? M_OK | M_OOM : M_SHAPE | M_OOM;
                }
            }
        } else if (which == 1) {
            allowed = (ia.nd == 1 && ib.nd == 1 && ia.shape[0] == ib.shape[0]) ? M_OK | M_OOM : M_SHAPE;
        } else {
            if (ia.nd == 1 && ib.nd == 1) {
                bool known = !__builtin_mul_overflow(ia.shape[0], ib.shape[0], &n);
                if (!size_allowed(known, n)) return;
                allowed = known ? M_OK | M_OOM : M_SHAPE;
            } else {
                allowed = M_SHAPE;
            }
        }
        /* BLAS takes 32-bit extents: larger ones (possible beside a zero extent) are AG_ERR_SHAPE */
        if (max_extent(&ia) > INT32_MAX || max_extent(&ib) > INT32_MAX) allowed |= M_SHAPE;
        if (ia.dtype != ib.dtype) allowed = M_DTYPE | (allowed & M_SHAPE);
    }
    ag_tensor out = SENT;
    TRACE("%s(%#llx, %#llx)%s", g_op, (unsigned long long)a.h, (unsigned long long)b.h, (a.bad || b.bad) ? " [bad]" : "");
    if (!a.bad && !b.bad) inputs(2, a, b, b);
    ag_status s = which == 0 ? ag_matmul(&out, a.h, b.h) : which == 1 ? ag_dot(&out, a.h, b.h) : ag_outer(&out, a.h, b.h);
    expect(s, allowed, "matmul/dot/outer shapes");
    result(s, out, dst);
}

static void op_softmax(Rd *r) {
    H a = pick_t(r);
    bool lg = bit(r);
    int64_t ax = rd_axis(r);
    uint8_t dst = u8(r);
    unsigned allowed = M_INV;
    if (!a.bad) {
        Info ia = info_of(a.h);
        allowed = (ax >= -ia.nd && ax < ia.nd) ? M_OK | M_OOM : M_ARG;
        if (ia.nd == 0 && (ax == 0 || ax == -1)) allowed = M_OK | M_ARG;
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = lg ? "ag_log_softmax" : "ag_softmax";
    TRACE("%s(%#llx, %lld)%s", g_op, (unsigned long long)a.h, (long long)ax, a.bad ? " [bad]" : "");
    ag_status s = lg ? ag_log_softmax(&out, a.h, ax) : ag_softmax(&out, a.h, ax);
    expect(s, allowed, "softmax: axis in range");
    result(s, out, dst);
}

static void op_cross_entropy(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    int64_t labels[NIDX];
    int64_t n = (int64_t)(u8(r) % 12) - 1;
    Info ia = {0};
    if (!a.bad) ia = info_of(a.h);
    if (!a.bad && ia.nd == 2 && (u8(r) & 3) != 0 && ia.shape[0] < NIDX) n = ia.shape[0];
    int64_t C = (!a.bad && ia.nd == 2) ? ia.shape[1] : 3;
    bool lab_ok = true;
    for (int64_t i = 0; i < n; i++) {
        uint8_t c = u8(r);
        labels[i] = (c & 7) == 0 ? rd_i64(r) : (C > 0 ? (int64_t)(c % C) : 0);
        if (labels[i] < 0 || labels[i] >= C) lab_ok = false;
    }
    bool nul = n > 0 && (u8(r) & 15) == 0;
    unsigned allowed = M_INV;
    if (!a.bad) {
        if (ia.nd != 2 || n != ia.shape[0]) allowed = M_SHAPE | (n < 0 || nul ? M_ARG : 0);
        else if (nul) allowed = M_ARG;
        else allowed = lab_ok ? M_OK | M_OOM : M_ARG;
    }
    ag_tensor out = SENT;
    if (!a.bad) inputs(1, a, a, a);
    g_op = "ag_cross_entropy";
    TRACE("ag_cross_entropy(%#llx, nlabels=%lld%s)%s", (unsigned long long)a.h, (long long)n, nul ? " NULL" : "", a.bad ? " [bad]" : "");
    ag_status s = expect(ag_cross_entropy(&out, a.h, nul ? NULL : labels, n), allowed | (a.bad ? M_ARG : 0),
                         "cross_entropy: (N, C) logits, N labels in 0..C-1");
    result(s, out, dst);
}

static void op_linear(Rd *r) {
    H x = pick_t(r), w = pick_t(r), b = pick_t(r);
    if ((u8(r) & 1) || b.h == 0) b = (H){0, false}; /* no bias */
    uint8_t dst = u8(r);
    unsigned allowed = M_INV;
    if (!x.bad && !w.bad && !b.bad) {
        Info ix = info_of(x.h), iw = info_of(w.h), ib = {0};
        if (b.h) ib = info_of(b.h);
        bool ok = ix.nd >= 1 && iw.nd == 2 && ix.shape[ix.nd - 1] == iw.shape[1];
        if (b.h && !(ib.nd == 1 && ib.shape[0] == iw.shape[0])) ok = false;
        int64_t on = 0;
        if (ok) {
            bool known = !__builtin_mul_overflow(ix.shape[ix.nd - 1] ? ix.numel / ix.shape[ix.nd - 1] : 0, iw.shape[0], &on);
            int64_t work;
            if (!size_allowed(known, on)) return;
            if (known && (__builtin_mul_overflow(on, iw.shape[1] ? iw.shape[1] : 1, &work) || work > BIG * 16) && on < HUGE) return;
        }
        allowed = ok ? M_OK | M_OOM : M_SHAPE;
        if (max_extent(&ix) > INT32_MAX || max_extent(&iw) > INT32_MAX) allowed |= M_SHAPE; /* BLAS */
        if (ix.dtype != iw.dtype || (b.h && ib.dtype != ix.dtype)) allowed = M_DTYPE | (allowed & M_SHAPE);
        if (ix.numel == 0 && ix.nd >= 1) allowed |= M_SHAPE; /* zero-extent batch with odd extents */
    }
    ag_tensor out = SENT;
    if (!x.bad && !w.bad && !b.bad) inputs(b.h ? 3 : 2, x, w, b);
    g_op = "ag_linear";
    TRACE("ag_linear(%#llx, %#llx, %#llx)", (unsigned long long)x.h, (unsigned long long)w.h, (unsigned long long)b.h);
    ag_status s = expect(ag_linear(&out, x.h, w.h, b.h), allowed, "linear: x (..., in), weight (out, in), bias (out)");
    result(s, out, dst);
}

static void op_where(Rd *r) {
    H c = pick_t(r), a = pick_t(r), b = pick_t(r);
    uint8_t dst = u8(r);
    unsigned allowed = M_INV;
    if (!c.bad && !a.bad && !b.bad) {
        Info ic = info_of(c.h), ia = info_of(a.h), ib = info_of(b.h);
        const Info *ins[3] = {&ic, &ia, &ib};
        int64_t bs[MAXS], bnd, n;
        bool bc = broadcast(ins, 3, bs, &bnd);
        bool known = bc && numel_of(bs, bnd, &n);
        if (bc && !size_allowed(known, n)) return;
        allowed = bc ? (known ? M_OK | M_OOM : M_SHAPE | M_OOM) : M_SHAPE;
        if (ia.dtype != ib.dtype) allowed = M_DTYPE | (allowed & M_SHAPE);
    }
    ag_tensor out = SENT;
    if (!a.bad && !b.bad && !c.bad) inputs(2, a, b, b);
    g_op = "ag_where";
    TRACE("ag_where(%#llx, %#llx, %#llx)", (unsigned long long)c.h, (unsigned long long)a.h, (unsigned long long)b.h);
    ag_status s = expect(ag_where(&out, c.h, a.h, b.h), allowed, "where: broadcast, a and b of one dtype");
    result(s, out, dst);
}

/* Backward, grad, hooks ------------------------------------------------------------------------ */

static void op_backward(Rd *r) {
    H root = pick_t(r);
    H seed = (H){0, false};
    uint8_t f = u8(r);
    if (f & 1) seed = pick_t(r);
    if (seed.h == 0) seed.bad = false; /* AG_NULL_TENSOR stands for 1 */
    bool retain = f & 2, create = f & 4;
    unsigned allowed = M_ERR | M_OK;
    if (root.bad || seed.bad) allowed = M_INV | M_ARG | M_SHAPE | M_DTYPE | M_STATE;
    else {
        Info ir = info_of(root.h);
        if (!ir.rg) allowed = M_STATE | M_SHAPE | M_DTYPE;
        if (!seed.h && ir.numel != 1) allowed = M_STATE;
        if (seed.h) {
            Info is = info_of(seed.h);
            bool same = is.nd == ir.nd && is.dtype == ir.dtype;
            for (int64_t i = 0; same && i < is.nd; i++) same = is.shape[i] == ir.shape[i];
            if (!same) allowed &= ~M_OK;
        }
    }
    g_hook_may_free = true;
    g_op = "ag_backward";
    TRACE("ag_backward(%#llx, seed=%#llx, retain=%d, create=%d)", (unsigned long long)root.h, (unsigned long long)seed.h,
          retain, create);
    expect(ag_backward(root.h, seed.h, retain, create), allowed, "backward");
    g_hook_may_free = false;
}

static void op_backward_all(Rd *r) {
    /* a complete training-like step: loss = sum over a pool tensor, backward, read grads */
    H a = pick_t(r);
    bool create = bit(r);
    uint8_t dst = u8(r);
    if (a.bad) return;
    ag_tensor loss = SENT;
    g_op = "ag_sum (for backward)";
    TRACE("ag_sum(%#llx) then backward(create=%d)", (unsigned long long)a.h, create);
    ag_status s = expect(ag_sum(&loss, a.h, NULL, 0, false), M_OK | M_OOM, "sum over everything");
    if (s != AG_OK) return;
    owned++;
    Info il = info_of(loss);
    g_op = "ag_backward (of a full sum)";
    s = expect(ag_backward(loss, 0, false, create), il.rg ? M_OK | M_STATE | M_CB | M_SHAPE | M_DTYPE | M_INV : M_STATE,
               "backward of a sum");
    owned--;
    take(loss, dst);
}

/* The accumulated gradients of the pool's tensors (values in float64), for ag_grad's promise. */
typedef struct {
    bool has;
    int64_t numel;
    double v[CAP];
} GradSnap;
static GradSnap g_before[NT], g_after[NT];
static bool g_any_hook; /* hooks may run backward themselves */

static void snapshot_grads(GradSnap *snap) {
    const char *saved = g_op;
    g_op = "snapshot of accumulated gradients";
    for (int i = 0; i < NT; i++) {
        snap[i].has = false;
        snap[i].numel = 0;
        if (!pool[i]) continue;
        ag_tensor g = SENT;
        expect(ag_tensor_grad(&g, pool[i]), M_OK, "grad of a live tensor");
        if (!g) continue;
        int64_t n = 0;
        expect(ag_tensor_numel(&n, g), M_OK, "numel of a gradient");
        snap[i].has = true;
        snap[i].numel = n <= CAP ? n : 0;
        if (n <= CAP) expect(ag_tensor_copy_data(snap[i].v, CAP, AG_FLOAT64, g), M_OK, "copy of a gradient");
        ag_tensor_free(g);
    }
    g_op = saved;
}

static void op_aggrad(Rd *r) {
    int64_t no = (int64_t)(u8(r) % 4) - (u8(r) % 8 == 0 ? 1 : 0);
    int64_t ni = (int64_t)(u8(r) % 4) - (u8(r) % 8 == 0 ? 1 : 0);
    H outs[4], seeds[4], ins[4];
    ag_tensor oa[4], sa[4], ia[4];
    bool with_seeds = bit(r);
    for (int64_t i = 0; i < no; i++) {
        outs[i] = pick_t(r);
        oa[i] = outs[i].h;
        seeds[i] = (u8(r) & 1) ? pick_t(r) : (H){0, false};
        if (seeds[i].h == 0) seeds[i].bad = false;
        sa[i] = seeds[i].h;
    }
    for (int64_t i = 0; i < ni; i++) {
        ins[i] = pick_t(r);
        ia[i] = ins[i].h;
    }
    uint8_t f = u8(r);
    bool retain = f & 1, create = f & 2, unused = f & 4;
    uint8_t dst = u8(r);
    unsigned allowed = M_ANY;
    if (no < 1 || ni < 1) {
        allowed = M_ARG;
        if ((no > 0 && any_bad(outs, (int)no)) || (ni > 0 && any_bad(ins, (int)ni)) ||
            (with_seeds && no > 0 && any_bad(seeds, (int)no)))
            allowed |= M_INV; /* handles may be checked before counts */
    } else if (any_bad(outs, (int)no) || any_bad(ins, (int)ni) || (with_seeds && any_bad(seeds, (int)no)))
        allowed = M_ERR;
    else {
        for (int64_t i = 0; i < no; i++)
            if (!info_of(oa[i]).rg) allowed = M_ERR;
    }
    ag_tensor grads[8];
    for (int i = 0; i < 8; i++) grads[i] = SENT;
    g_op = "ag_grad";
    TRACE("ag_grad(noutputs=%lld, ninputs=%lld, seeds=%d, retain=%d, create=%d, allow_unused=%d)", (long long)no,
          (long long)ni, with_seeds, retain, create, unused);
    bool snap = !g_any_hook;
    if (snap) snapshot_grads(g_before);
    ag_status s = expect(ag_grad(grads, oa, no, with_seeds ? sa : NULL, ia, ni, retain, create, unused), allowed,
                         "ag_grad: counts, handles, outputs requiring grad");
    if (s != AG_OK) {
        for (int i = 0; i < 8; i++)
            if (grads[i] != SENT) fail("ag_grad failed but wrote out_grads[%d]", i);
        return;
    }
    for (int i = (int)ni; i < 8; i++)
        if (grads[i] != SENT) fail("ag_grad wrote past ninputs (out_grads[%d])", i);
    if (snap) { /* "without touching any tensor's accumulated gradient" */
        snapshot_grads(g_after);
        for (int i = 0; i < NT; i++) {
            const GradSnap *b = &g_before[i], *c = &g_after[i];
            if (b->has != c->has || b->numel != c->numel || (b->has && memcmp(b->v, c->v, (size_t)b->numel * 8) != 0))
                fail("ag_grad changed the accumulated gradient of slot %d", i);
        }
    }
    for (int64_t i = 0; i < ni; i++) {
        if (grads[i] == SENT) fail("ag_grad succeeded but left out_grads[%lld] unwritten", (long long)i);
        if (grads[i] == AG_NULL_TENSOR) {
            if (!unused) fail("ag_grad gave AG_NULL_TENSOR without allow_unused");
            continue;
        }
        owned++;
        Info g = info_of(grads[i]), x = info_of(ia[i]);
        owned--;
        same_shape(&g, x.shape, x.nd, "ag_grad: a gradient has its input's shape");
    }
    for (int64_t i = 0; i < ni; i++) /* only now: taking may free an input */
        if (grads[i] != AG_NULL_TENSOR) take(grads[i], (uint8_t)(dst + i));
}

static void op_grad_mode(Rd *r) {
    bool en = bit(r);
    bool prev = !grad_on;
    bool use_prev = bit(r);
    g_op = "ag_set_grad_enabled";
    TRACE("ag_set_grad_enabled(%d)", en);
    expect(ag_set_grad_enabled(use_prev ? &prev : NULL, en), M_OK, "set_grad_enabled never fails");
    if (use_prev && prev != grad_on) fail("previous grad mode %d, expected %d", prev, grad_on);
    grad_on = en;
    bool now = !en;
    g_op = "ag_is_grad_enabled";
    expect(ag_is_grad_enabled(&now), M_OK, "is_grad_enabled");
    if (now != en) fail("is_grad_enabled %d after setting %d", now, en);
    expect(ag_is_grad_enabled(NULL), M_ARG, "is_grad_enabled(NULL)");
}

static void op_detach(Rd *r) {
    H a = pick_t(r);
    uint8_t dst = u8(r);
    ag_tensor out = SENT;
    g_op = "ag_detach";
    TRACE("ag_detach(%#llx)%s", (unsigned long long)a.h, a.bad ? " [bad]" : "");
    ag_status s = expect(ag_detach(&out, a.h), a.bad ? M_INV : M_OK | M_OOM, "detach");
    if (s == AG_OK) {
        owned++;
        if (info_of(out).rg) fail("a detached tensor requires grad");
        owned--;
    }
    result(s, out, dst);
    expect(ag_detach(NULL, a.h), M_ARG | (a.bad ? M_INV : 0), "detach(NULL)");
}

static void op_hook(Rd *r) {
    H t = pick_t(r);
    uint8_t mode = u8(r), f = u8(r);
    bool with_destroy = f & 1, null_hook = (f & 30) == 2, with_id = !(f & 32), ready = f & 64;
    HookUd *ud = &g_static_hook;
    if (with_destroy) {
        ud = malloc(sizeof *ud);
        ud->magic = HOOK_MAGIC;
        ud->mode = mode;
        ud->calls = 0;
    }
    unsigned allowed = M_INV | M_ARG;
    /* a ready hook needs a leaf that requires grad (leaf_requiring_grad probes it) */
    if (!t.bad)
        allowed = null_hook ? M_ARG : (ready ? leaf_requiring_grad(t.h) : info_of(t.h).rg) ? M_OK : M_STATE;
    int64_t id = -12345;
    g_op = ready ? "ag_tensor_register_post_accumulate_grad_hook" : "ag_tensor_register_hook";
    TRACE("%s(%#llx, mode=%u, destroy=%d, hook=%s)%s", g_op, (unsigned long long)t.h, mode, with_destroy,
          null_hook ? "NULL" : "fn", t.bad ? " [bad]" : "");
    int64_t before = g_hooks_alive;
    ag_status s = ready ? expect(ag_tensor_register_post_accumulate_grad_hook(with_id ? &id : NULL, t.h,
                                                                              null_hook ? NULL : ready_fn, ud,
                                                                              with_destroy ? hook_destroy : NULL),
                                 allowed, "register_post_accumulate_grad_hook")
                        : expect(ag_tensor_register_hook(with_id ? &id : NULL, t.h, null_hook ? NULL : hook_fn, ud,
                                                         with_destroy ? hook_destroy : NULL),
                                 allowed, "register_hook");
    if (g_hooks_alive != before) fail("register_hook ran a destroy callback");
    if (s != AG_OK) {
        if (id != -12345) fail("register_hook failed but wrote *out_id");
        if (with_destroy) free(ud); /* on failure destroy is not called */
        return;
    }
    if (with_destroy) g_hooks_alive++;
    g_any_hook = true;
    if (with_id) {
        if (id == -12345) fail("register_hook succeeded without writing *out_id");
        hook_ids[nhook_ids++ % 8] = (HookRec){t.h, id};
    }
}

static void op_remove_hook(Rd *r) {
    uint8_t b = u8(r);
    H t = pick_t(r);
    int64_t id = rd_i64(r);
    bool known = false;
    if (nhook_ids && (b & 3) != 0) {
        HookRec h = hook_ids[b % (nhook_ids < 8 ? nhook_ids : 8)];
        id = h.id;
        if (b & 4) {
            t.h = h.t;
            t.bad = true; /* the tensor may have been freed since: find out */
            for (int i = 0; i < NT; i++)
                if (pool[i] == h.t) t.bad = false;
        }
        known = true;
    }
    (void)known;
    int64_t before = g_hooks_alive;
    g_op = "ag_tensor_remove_hook";
    TRACE("ag_tensor_remove_hook(%#llx, %lld)%s", (unsigned long long)t.h, (long long)id, t.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_remove_hook(t.h, id), t.bad ? M_INV : M_OK | M_ARG, "remove_hook");
    if (s != AG_OK && g_hooks_alive != before) fail("a failed remove_hook ran a destroy callback");
    if (s == AG_OK && g_hooks_alive < before - 1) fail("remove_hook ran more than one destroy callback");
}

/* Picks n gradcheck inputs into hs and in; returns their element count (live ones only). */
static int64_t pick_gradcheck_inputs(Rd *r, int64_t n, H *hs, ag_tensor *in) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        hs[i] = pick_t(r);
        in[i] = hs[i].h;
        if (!hs[i].bad) total += info_of(in[i]).numel;
    }
    return total;
}

static void op_gradcheck(Rd *r) {
    int64_t n = (int64_t)(u8(r) % 4) - 1;
    H hs[4];
    ag_tensor in[4];
    if (pick_gradcheck_inputs(r, n, hs, in) > 24) return; /* finite differences cost two builds per element */
    BuildUd bu = {u8(r)};
    double eps = (u8(r) & 3) ? 1e-6 : rd_double(r);
    double atol = (u8(r) & 3) ? 1e-5 : rd_double(r);
    double rtol = (u8(r) & 3) ? 1e-3 : rd_double(r);
    bool passed = false;
    int64_t wi = -9, wx = -9;
    double wa = -9, wn = -9;
    unsigned allowed = M_ANY;
    if (n < 1) allowed = M_ARG;
    else if (any_bad(hs, (int)n)) allowed = M_INV | M_ARG;
    else {
        for (int64_t i = 0; i < n; i++)
            if (info_of(in[i]).dtype != AG_FLOAT64) allowed = M_DTYPE | M_ARG;
        if (!(eps > 0) || !(atol >= 0) || !(rtol >= 0)) allowed = (allowed & ~M_OK) | M_ARG;
        if (bu.mode % 8 == 2) allowed &= ~M_OK;
    }
    g_op = "ag_gradcheck";
    TRACE("ag_gradcheck(n=%lld, mode=%u, eps=%g, atol=%g, rtol=%g)", (long long)n, bu.mode, eps, atol, rtol);
    ag_status s = expect(ag_gradcheck(&passed, &wi, &wx, &wa, &wn, build_fn, &bu, in, n, eps, atol, rtol), allowed,
                         "gradcheck");
    if (s != AG_OK && (passed || wi != -9 || wx != -9 || wa != -9 || wn != -9)) fail("gradcheck failed but wrote outputs");
    expect(ag_gradcheck(NULL, NULL, NULL, NULL, NULL, build_fn, &bu, in, n, eps, atol, rtol), M_ARG | M_INV,
           "gradcheck with passed NULL");
}

static char dotbuf[512];

static void op_dot_graph(Rd *r) {
    H t = pick_t(r);
    uint8_t c = u8(r);
    int64_t cap = c < 200 ? c : (int64_t)(c % 8) - 4;
    bool null_out = (u8(r) & 7) == 0, null_len = (u8(r) & 15) == 0;
    if (null_out) cap = (u8(r) & 1) ? 0 : 5;
    memset(dotbuf, 0x5A, sizeof dotbuf);
    int64_t len = -9;
    unsigned allowed;
    if (null_len || cap < 0 || (null_out && cap > 0)) allowed = M_ARG | (t.bad ? M_INV : 0);
    else allowed = t.bad ? M_INV : M_OK;
    g_op = "ag_graph_to_dot";
    TRACE("ag_graph_to_dot(out=%s, capacity=%lld, length=%s, %#llx)%s", null_out ? "NULL" : "buf", (long long)cap,
          null_len ? "NULL" : "&len", (unsigned long long)t.h, t.bad ? " [bad]" : "");
    ag_status s = expect(ag_graph_to_dot(null_out ? NULL : dotbuf, cap, null_len ? NULL : &len, t.h), allowed, "graph_to_dot");
    if (s != AG_OK) {
        if (len != -9) fail("graph_to_dot failed but wrote *length");
        for (size_t i = 0; i < sizeof dotbuf; i++)
            if ((unsigned char)dotbuf[i] != 0x5A) fail("graph_to_dot failed but wrote its buffer");
        return;
    }
    if (len < 0) fail("graph_to_dot length %lld", (long long)len);
    if (!null_out && cap == 0)
        for (size_t i = 0; i < sizeof dotbuf; i++)
            if ((unsigned char)dotbuf[i] != 0x5A) fail("graph_to_dot wrote into a buffer of capacity 0");
    if (!null_out && cap > 0) {
        int64_t w = len < cap - 1 ? len : cap - 1;
        if (dotbuf[w] != '\0') fail("graph_to_dot did not NUL-terminate at %lld", (long long)w);
        if ((int64_t)strlen(dotbuf) != w) fail("graph_to_dot wrote %zu characters, expected %lld", strlen(dotbuf), (long long)w);
        for (size_t i = (size_t)cap; i < sizeof dotbuf; i++)
            if ((unsigned char)dotbuf[i] != 0x5A) fail("graph_to_dot wrote past capacity");
    }
}

/* Optimizers ----------------------------------------------------------------------------------- */

/* Makes a fresh leaf requiring grad in slot `slot` (for optimizer parameters). */
static void make_param(Rd *r, int slot) {
    int64_t shape[2] = {1 + u8(r) % 4, 1 + u8(r) % 3};
    int64_t nd = u8(r) % 3;
    ag_dtype dt = (u8(r) & 1) ? AG_FLOAT64 : AG_FLOAT32;
    ag_tensor out = SENT;
    g_op = "ag_tensor_rand_uniform (a parameter)";
    TRACE("ag_tensor_rand_uniform(ndim=%lld) as a parameter", (long long)nd);
    ag_status s = expect(ag_tensor_rand_uniform(&out, shape, nd, -1.0, 1.0, 7, dt), M_OK | M_OOM, "parameter");
    if (result(s, out, (uint8_t)slot) != AG_OK || pool[slot] != out) return;
    g_op = "ag_tensor_set_requires_grad (a parameter)";
    expect(ag_tensor_set_requires_grad(out, true), M_OK, "a fresh leaf");
}

/* A few training steps over the optimizer's parameters: loss = sum_i sum(p_i * p_i) (or another
 * function), backward, step, zero_grad. */
static void train(Rd *r, ag_optimizer opt, const ag_tensor *ps, int64_t n) {
    int steps = 1 + u8(r) % 3;
    uint8_t f = u8(r);
    for (int k = 0; k < steps; k++) {
        ag_tensor loss = 0;
        for (int64_t i = 0; i < n; i++) {
            ag_tensor t = SENT, l = SENT, acc = SENT;
            g_op = "train: forward";
            ag_status s = expect((f & 1) ? ag_mul(&t, ps[i], ps[i]) : ag_tanh(&t, ps[i]), M_OK | M_OOM, "train forward");
            if (s != AG_OK) continue;
            s = expect(ag_sum(&l, t, NULL, 0, false), M_OK | M_OOM, "train sum");
            ag_tensor_free(t);
            if (s != AG_OK) continue;
            if (!loss) {
                loss = l;
                continue;
            }
            s = expect(ag_add(&acc, loss, l), M_OK | M_OOM | M_DTYPE, "train accumulate");
            if (s == AG_OK) {
                ag_tensor_free(loss);
                loss = acc;
            }
            ag_tensor_free(l);
        }
        if (loss) {
            g_op = "train: ag_backward";
            TRACE("train: backward, step");
            expect(ag_backward(loss, 0, (f & 2) != 0, false), grad_on ? M_OK | M_CB | M_SHAPE | M_DTYPE | M_INV | M_STATE : M_STATE,
                   "train backward");
            ag_tensor_free(loss);
        }
        g_op = "train: ag_optimizer_step";
        expect(ag_optimizer_step(opt), M_OK | M_OOM, "train step");
        if (f & 4) {
            g_op = "train: ag_optimizer_zero_grad";
            expect(ag_optimizer_zero_grad(opt), M_OK, "train zero_grad");
            for (int64_t i = 0; i < n; i++) {
                ag_tensor g = SENT;
                expect(ag_tensor_grad(&g, ps[i]), M_OK, "grad after zero_grad");
                if (g != AG_NULL_TENSOR) fail("a parameter keeps a gradient after ag_optimizer_zero_grad");
            }
        }
    }
}

static void op_opt_new(Rd *r) {
    uint8_t kind = u8(r) % 3, dst = u8(r);
    int64_t n = (int64_t)(u8(r) % 5) - 1;
    H hs[MAXARR];
    ag_tensor ps[MAXARR];
    uint8_t mode = u8(r);
    if (mode < 160) {
        /* parameters that work: leaves requiring grad from the pool, or fresh ones */
        n = 0;
        for (int i = 0; i < NT && n < 3; i++) {
            int slot = (i + mode) % NT;
            if (pool[slot] && leaf_requiring_grad(pool[slot])) {
                bool dup = false;
                for (int64_t j = 0; j < n; j++) dup |= ps[j] == pool[slot];
                if (!dup) {
                    hs[n] = (H){pool[slot], false};
                    ps[n++] = pool[slot];
                }
            }
        }
        if (n == 0) {
            make_param(r, mode % NT);
            if (!pool[mode % NT] || !leaf_requiring_grad(pool[mode % NT])) return;
            hs[0] = (H){pool[mode % NT], false};
            ps[n++] = pool[mode % NT];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            hs[i] = pick_t(r);
            ps[i] = hs[i].h;
        }
    }
    double lr = (u8(r) & 3) ? 0.1 : rd_double(r);
    double p1 = (u8(r) & 3) ? (kind == 0 ? 0.9 : 0.9) : rd_double(r);
    double p2 = (u8(r) & 3) ? 0.999 : rd_double(r);
    double eps = (u8(r) & 3) ? 1e-8 : rd_double(r);
    double wd = (u8(r) & 3) ? 0.0 : rd_double(r);
    bool nesterov = bit(r);
    if (kind == 0 && (u8(r) & 1)) p1 = 0;
    bool nul = (u8(r) & 31) == 0;
    unsigned allowed = M_OK | M_OOM;
    if (n < 1 || nul) allowed = M_ARG;
    else if (any_bad(hs, (int)n)) allowed = M_INV | M_ARG;
    else {
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < i; j++)
                if (ps[i] == ps[j]) allowed = M_ARG | M_STATE;
            if (!leaf_requiring_grad(ps[i])) allowed = (allowed & ~(M_OK | M_OOM)) | M_STATE | M_ARG;
        }
        bool bad_hp = !(lr >= 0) || !isfinite(lr) || !(wd >= 0) || !isfinite(wd);
        if (kind == 0) bad_hp = bad_hp || !(p1 >= 0) || !isfinite(p1) || (nesterov && p1 == 0);
        else bad_hp = bad_hp || !(p1 >= 0 && p1 < 1) || !(p2 >= 0 && p2 < 1) || !(eps >= 0) || !isfinite(eps);
        if (bad_hp) allowed = (allowed & ~(M_OK | M_OOM)) | M_ARG;
        /* two handles may name one tensor (e.g. two ag_tensor_grad handles of one gradient): a
         * repeated parameter */
        if (n > 1) allowed |= M_ARG;
    }
    ag_optimizer out = SENT;
    static const char *names[] = {"ag_optimizer_sgd", "ag_optimizer_adam", "ag_optimizer_adamw"};
    g_op = names[kind];
    TRACE("%s(n=%lld%s, lr=%g, %g, %g, eps=%g, wd=%g, nesterov=%d)", g_op, (long long)n, nul ? " NULL" : "", lr, p1, p2,
          eps, wd, nesterov);
    ag_status s;
    const ag_tensor *pp = nul ? NULL : ps;
    if (kind == 0) s = ag_optimizer_sgd(&out, pp, n, lr, p1, nesterov, wd);
    else if (kind == 1) s = ag_optimizer_adam(&out, pp, n, lr, p1, p2, eps, wd);
    else s = ag_optimizer_adamw(&out, pp, n, lr, p1, p2, eps, wd);
    expect(s, allowed, "optimizer: params leaves requiring grad, hyper-parameters in range");
    if (s != AG_OK) {
        if (out != SENT) fail("optimizer creation failed but wrote its output");
        return;
    }
    if (out == SENT || out == 0) fail("AG_OK without an optimizer handle");
    owned++;
    double got = -1;
    expect(ag_optimizer_lr(&got, out), M_OK, "lr of a new optimizer");
    if (got != lr) fail("optimizer lr %g, created with %g", got, lr);
    int slot = dst % NO;
    if (opts[slot]) {
        g_op = "ag_optimizer_free";
        expect(ag_optimizer_free(opts[slot]), M_OK, "free a live optimizer");
        owned--;
        remember_stale(opts[slot]);
    }
    opts[slot] = out;
    if (mode < 160 && (mode & 1)) train(r, out, ps, n);
}

static void op_opt_use(Rd *r) {
    H o = pick_o(r);
    uint8_t which = u8(r) % 5;
    unsigned want = o.bad ? M_INV : M_OK | M_OOM;
    switch (which) {
    case 0:
    case 1:
        g_op = "ag_optimizer_step";
        TRACE("ag_optimizer_step(%#llx)%s", (unsigned long long)o.h, o.bad ? " [bad]" : "");
        expect(ag_optimizer_step(o.h), want, "step");
        break;
    case 2:
        g_op = "ag_optimizer_zero_grad";
        TRACE("ag_optimizer_zero_grad(%#llx)%s", (unsigned long long)o.h, o.bad ? " [bad]" : "");
        expect(ag_optimizer_zero_grad(o.h), want, "zero_grad");
        break;
    case 3: {
        double lr = rd_double(r);
        g_op = "ag_optimizer_set_lr";
        TRACE("ag_optimizer_set_lr(%#llx, %g)%s", (unsigned long long)o.h, lr, o.bad ? " [bad]" : "");
        unsigned w = o.bad ? M_INV | M_ARG : (lr >= 0 && isfinite(lr) ? M_OK : M_ARG);
        ag_status s = expect(ag_optimizer_set_lr(o.h, lr), w, "set_lr");
        if (s == AG_OK) {
            double got = -1;
            expect(ag_optimizer_lr(&got, o.h), M_OK, "lr");
            if (got != lr) fail("lr %g after set_lr(%g)", got, lr);
        }
        break;
    }
    default: {
        double got = -77;
        g_op = "ag_optimizer_lr";
        TRACE("ag_optimizer_lr(%#llx)%s", (unsigned long long)o.h, o.bad ? " [bad]" : "");
        ag_status s = expect(ag_optimizer_lr(&got, o.h), o.bad ? M_INV : M_OK, "lr");
        if (s != AG_OK && got != -77) fail("optimizer_lr failed but wrote its output");
        expect(ag_optimizer_lr(NULL, o.h), M_ARG | (o.bad ? M_INV : 0), "lr(NULL)");
        break;
    }
    }
}

static void op_opt_free(Rd *r) {
    int slot = u8(r) % NO;
    g_op = "ag_optimizer_free";
    if (!opts[slot]) {
        TRACE("ag_optimizer_free(0)");
        expect(ag_optimizer_free(0), M_OK, "optimizer_free(0)");
        return;
    }
    TRACE("ag_optimizer_free(%#llx)", (unsigned long long)opts[slot]);
    expect(ag_optimizer_free(opts[slot]), M_OK, "free a live optimizer");
    owned--;
    remember_stale(opts[slot]);
    opts[slot] = 0;
}

static void cleanup(void);

static void op_misc(Rd *r) {
    uint8_t which = u8(r) % 4;
    g_op = "misc";
    switch (which) {
    case 0: {
        const char *v = ag_version();
        if (!v || strcmp(v, "0.1.0") != 0) fail("ag_version() = %s", v ? v : "(null)");
        break;
    }
    case 1: {
        int32_t st = (int32_t)rd_i64(r);
        const char *n = ag_status_name(st);
        if (!n || !*n) fail("ag_status_name(%d) empty", st);
        bool known = st >= AG_OK && st <= AG_ERR_FORMAT; /* AG_ERR_IO and AG_ERR_FORMAT came with issue 19 */
        if (known != (strcmp(n, "AG_UNKNOWN_STATUS") != 0)) fail("ag_status_name(%d) = %s", st, n);
        break;
    }
    case 2:
        g_op = "ag_live_handle_count(NULL)";
        expect(ag_live_handle_count(NULL), M_ARG, "live_handle_count(NULL)");
        break;
    default: /* a checkpoint: free everything now and check that nothing is left */
        TRACE("checkpoint: free everything");
        cleanup();
        break;
    }
}

/* Hook registration interleaved with requires_grad changes on one tensor (issue 14): turned off
 * and on between registrations, sequentially (the race itself is in bindings/c/test_abi_defects.c).
 * A refused registration must leave its user data alone (the caller keeps it: destroy never
 * runs); an accepted one owns it, and may be removed at once. */
static void op_hook_rg(Rd *r) {
    H t = pick_t(r);
    int steps = 1 + u8(r) % 8;
    for (int i = 0; i < steps; i++) {
        uint8_t b = u8(r);
        if (b & 1) {
            bool want = (b >> 1) & 1;
            g_op = "ag_tensor_set_requires_grad (between hook registrations)";
            TRACE("ag_tensor_set_requires_grad(%#llx, %d)%s", (unsigned long long)t.h, want, t.bad ? " [bad]" : "");
            unsigned allowed = M_INV;
            if (!t.bad) allowed = info_of(t.h).rg ? M_OK | M_STATE : M_OK;
            ag_status s = expect(ag_tensor_set_requires_grad(t.h, want), allowed, "set_requires_grad");
            if (s == AG_OK && info_of(t.h).rg != want) fail("requires_grad is not what was set");
            continue;
        }
        HookUd *ud = malloc(sizeof *ud);
        ud->magic = HOOK_MAGIC;
        ud->mode = u8(r);
        ud->calls = 0;
        unsigned allowed = t.bad ? M_INV : info_of(t.h).rg ? M_OK : M_STATE;
        int64_t id = -12345, before = g_hooks_alive;
        g_op = "ag_tensor_register_hook (between requires_grad changes)";
        TRACE("ag_tensor_register_hook(%#llx, mode=%u, destroy=1)%s", (unsigned long long)t.h, ud->mode,
              t.bad ? " [bad]" : "");
        ag_status s = expect(ag_tensor_register_hook(&id, t.h, hook_fn, ud, hook_destroy), allowed, "register_hook");
        if (g_hooks_alive != before) fail("register_hook ran a destroy callback");
        if (s != AG_OK) {
            if (ud->magic != HOOK_MAGIC) fail("a refused registration destroyed its user data");
            if (id != -12345) fail("register_hook failed but wrote *out_id");
            free(ud); /* the caller keeps user_data on failure */
            continue;
        }
        g_hooks_alive++;
        g_any_hook = true;
        if (b & 2) {
            g_op = "ag_tensor_remove_hook (right after registering)";
            TRACE("ag_tensor_remove_hook(%#llx, %lld)", (unsigned long long)t.h, (long long)id);
            expect(ag_tensor_remove_hook(t.h, id), M_OK, "remove_hook of a hook just registered");
            if (g_hooks_alive != before) fail("remove_hook did not run the destroy callback exactly once");
        } else {
            hook_ids[nhook_ids++ % 8] = (HookRec){t.h, id};
        }
    }
}

/* In-place writes and version counters (issue 14, item 12). ag_tensor_copy_(dst, src) between
 * pool tensors, with grad mode as the program set it: its status follows from the two tensors
 * (handles, dtypes, src broadcasting to dst, dst a result with history, dst requiring grad with
 * grad mode on); on success dst holds src's values. Then, with a bit, a graph that saved a leaf
 * (sum(x * x), retained) whose values are then written in place must refuse its backward with
 * AG_ERR_STATE, and a fresh graph on the written values must run. */
static void op_inplace(Rd *r) {
    H d = pick_t(r), src = pick_t(r);
    unsigned allowed;
    Info di, si;
    memset(&di, 0, sizeof di);
    memset(&si, 0, sizeof si);
    if (d.bad || src.bad) {
        allowed = M_INV;
    } else {
        di = info_of(d.h);
        si = info_of(src.h);
        const Info *ins[2] = {&di, &si};
        int64_t bs[MAXS], bnd = 0;
        bool fits = broadcast(ins, 2, bs, &bnd) && bnd == di.nd && memcmp(bs, di.shape, (size_t)bnd * sizeof bs[0]) == 0;
        bool leaf = !di.rg || leaf_requiring_grad(d.h);
        /* The library checks in this order: history, dtype, grad mode, then broadcasting. */
        if (!leaf) allowed = M_STATE;
        else if (di.dtype != si.dtype) allowed = M_DTYPE;
        else if (di.rg && grad_on) allowed = M_STATE;
        else allowed = fits ? M_OK | M_OOM : M_SHAPE | M_OOM;
    }
    g_op = "ag_tensor_copy_";
    TRACE("ag_tensor_copy_(%#llx, %#llx)%s", (unsigned long long)d.h, (unsigned long long)src.h,
          d.bad || src.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_copy_(d.h, src.h), allowed, "copy_: handles, dtypes, history, grad mode, broadcasting");
    if (s == AG_OK && di.numel == si.numel && di.numel <= CAP) {
        /* Same count and broadcast-compatible means the same shape: compare the values. */
        static double a[CAP], b[CAP];
        g_op = "ag_tensor_copy_data (after ag_tensor_copy_)";
        if (chk(ag_tensor_copy_data(a, CAP, AG_FLOAT64, d.h)) != AG_OK ||
            chk(ag_tensor_copy_data(b, CAP, AG_FLOAT64, src.h)) != AG_OK)
            fail("reading the tensors after an in-place copy");
        if (memcmp(a, b, (size_t)di.numel * sizeof a[0]) != 0) fail("ag_tensor_copy_ did not write src's values into dst");
    }
    if (!bit(r)) return;
    /* A retained graph that saved x, then x written in place. */
    ag_tensor x = SENT, y = SENT, loss = SENT, v = SENT, y2 = SENT, loss2 = SENT;
    g_op = "inplace: a leaf, sum(x * x) and a retained backward";
    int64_t n = 1 + u8(r) % 5000, shape[1] = {n};
    ag_dtype dt = bit(r) ? AG_FLOAT32 : AG_FLOAT64;
    if (expect(ag_tensor_full(&x, shape, 1, 1.5, dt), M_OK | M_OOM, "full") != AG_OK) return;
    owned++;
    bool prev = true;
    expect(ag_set_grad_enabled(&prev, true), M_OK, "grad mode on");
    expect(ag_tensor_set_requires_grad(x, true), M_OK, "requires_grad on a new leaf");
    if (expect(ag_mul(&y, x, x), M_OK | M_OOM, "x * x") == AG_OK) owned++;
    if (y != SENT && expect(ag_sum(&loss, y, NULL, 0, false), M_OK | M_OOM, "sum") == AG_OK) owned++;
    if (loss != SENT && expect(ag_backward(loss, 0, true, false), M_OK | M_OOM, "first backward") == AG_OK &&
        expect(ag_tensor_full(&v, shape, 1, -0.5, dt), M_OK | M_OOM, "full") == AG_OK) {
        owned++;
        expect(ag_set_grad_enabled(NULL, false), M_OK, "grad mode off");
        expect(ag_tensor_copy_(x, v), M_OK, "copy_ into a parameter under no_grad");
        expect(ag_set_grad_enabled(NULL, true), M_OK, "grad mode on");
        g_op = "inplace: the stale backward";
        TRACE("ag_backward through sum(x * x) after ag_tensor_copy_(x, ...) (n=%lld): must be AG_ERR_STATE", (long long)n);
        expect(ag_backward(loss, 0, true, bit(r)), M_STATE, "a backward through values written since they were saved");
        if (!strstr(ag_last_error(), "'mul'")) fail("the stale backward's message does not name the op: %s", ag_last_error());
        /* A graph built after the write runs: d/dx sum(x*x) = 2x = -1 per element. */
        if (expect(ag_mul(&y2, x, x), M_OK | M_OOM, "x * x again") == AG_OK) owned++;
        if (y2 != SENT && expect(ag_sum(&loss2, y2, NULL, 0, false), M_OK | M_OOM, "sum again") == AG_OK) owned++;
        ag_tensor g = SENT;
        if (loss2 != SENT && expect(ag_grad(&g, &loss2, 1, NULL, &x, 1, false, false, false), M_OK | M_OOM, "fresh grad") == AG_OK) {
            owned++;
            double first = 0;
            g_op = "inplace: the fresh gradient";
            if (n == 1 && chk(ag_tensor_copy_data(&first, 1, AG_FLOAT64, g)) != AG_OK) fail("reading the fresh gradient");
            if (n == 1 && first != -1.0) fail("d/dx sum(x*x) at x = -0.5 is %g, not -1", first);
            free_tensor(g);
        }
    }
    expect(ag_set_grad_enabled(NULL, prev), M_OK, "grad mode back");
    ag_tensor made[] = {x, y, loss, v, y2, loss2};
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        if (made[i] != SENT) free_tensor(made[i]);
}

/* A gradcheck build function that changes its output from call `at` on (issue 14): more or fewer
 * elements, another shape with as many, float32, no handle, a made-up handle, the identity (its
 * input), or x * x after freeing its borrowed input. It notes when what it returns breaks the
 * contract (a float64 output of the first call's shape, a live handle, inputs left alone);
 * ag_gradcheck must then fail with AG_ERR_CALLBACK, and otherwise succeed. */
typedef struct {
    uint8_t change, at;
    int calls;
    bool broke;
    Info first; /* what it returned on its first call */
} ChangeUd;

static int32_t changing_build(ag_tensor *out, const ag_tensor *in, int64_t n, void *p) {
    ChangeUd *c = p;
    c->calls++;
    g_build_calls++;
    if (!out || !in || n < 1) fail("gradcheck build got NULL pointers or no inputs");
    const char *saved = g_op;
    g_op = "changing gradcheck build";
    owned += n; /* the borrowed inputs are live during the call */
    Info x = info_of(in[0]);
    ag_status s = AG_OK;
    bool made = true; /* *out is a new handle this function made */
    if (c->calls < c->at) {
        s = ag_mul(out, in[0], in[0]);
    } else {
        int64_t k = x.numel, shape[2] = {k + 1, 1};
        switch (c->change % 8) {
        case 0: s = ag_tensor_zeros(out, shape, 1, AG_FLOAT64); break; /* one element more */
        case 1:
            shape[0] = k > 0 ? k - 1 : 0;
            s = ag_tensor_zeros(out, shape, 1, AG_FLOAT64); /* one fewer */
            break;
        case 2:
            shape[0] = k;
            s = ag_tensor_zeros(out, shape, 2, AG_FLOAT64); /* [k, 1]: as many, maybe another shape */
            break;
        case 3: s = ag_tensor_zeros(out, x.shape, x.nd, AG_FLOAT32); break;
        case 4: made = false; break; /* AG_OK, nothing written */
        case 5:
            *out = SENT;
            made = false;
            c->broke = true;
            break;
        case 6: *out = in[0]; made = false; break; /* the identity */
        default:
            s = ag_mul(out, in[0], in[0]);
            chk(ag_tensor_free(in[0]));
            owned--;
            c->broke = true;
            break;
        }
        if (c->change % 8 == 4) c->broke = true;
    }
    if (s != AG_OK) fail("an operation in the build function failed: %s", ag_last_error());
    if (made || c->change % 8 == 6) {
        Info o = info_of(*out);
        if (c->calls == 1) c->first = o;
        bool same = o.dtype == AG_FLOAT64 && o.dtype == c->first.dtype && o.nd == c->first.nd;
        for (int64_t d = 0; same && d < o.nd; d++) same = o.shape[d] == c->first.shape[d];
        if (!same) c->broke = true;
    }
    owned -= n;
    if (c->change % 8 == 7 && c->calls >= c->at) owned++; /* the freed input was counted out above */
    g_op = saved;
    return 0;
}

static void op_gradcheck_change(Rd *r) {
    int64_t n = 1 + u8(r) % 2;
    H hs[2];
    ag_tensor in[2];
    if (pick_gradcheck_inputs(r, n, hs, in) > 24) return; /* finite differences cost two builds per element */
    ChangeUd c;
    memset(&c, 0, sizeof c);
    c.change = u8(r);
    c.at = 1 + u8(r) % 6;
    bool valid = !any_bad(hs, (int)n);
    for (int64_t i = 0; valid && i < n; i++)
        if (info_of(in[i]).dtype != AG_FLOAT64) valid = false;
    bool passed = false;
    int64_t wi = -9, wx = -9;
    double wa = -9, wn = -9;
    g_op = "ag_gradcheck (a build function that changes its output)";
    TRACE("ag_gradcheck(n=%lld, change=%u, at call %u)", (long long)n, c.change % 8, c.at);
    ag_status s = expect(ag_gradcheck(&passed, &wi, &wx, &wa, &wn, changing_build, &c, in, n, 1e-6, 1e-5, 1e-3),
                         valid ? M_OK | M_CB : M_INV | M_DTYPE, "gradcheck with a changing build function");
    if (s != AG_OK && (passed || wi != -9 || wx != -9 || wa != -9 || wn != -9)) fail("gradcheck failed but wrote outputs");
    if (valid && c.broke && s == AG_OK) fail("gradcheck accepted a build function that broke its contract (change %u)", c.change % 8);
    if (valid && !c.broke && s != AG_OK) fail("gradcheck refused a build function that kept its contract: %s", ag_last_error());
    if (valid && s == AG_OK && wi < 0) fail("gradcheck succeeded without writing the worst element");
}

/* ------------------------------------------------------------------------------------------ */
/* Function transforms                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* The build function of the transforms: a small function of its input, or one that breaks its
 * contract, or one that calls ag_jvp itself (refused inside a forward-mode pass). */
enum {
    TF_SIN, TF_SQUARE, TF_SUMSQ, TF_LSE, TF_IDENTITY, TF_TANH2, /* kept contracts */
    TF_FAILS, TF_NO_HANDLE, TF_FREES_INPUT,                     /* broken ones */
    TF_NESTED_JVP,                                              /* ag_jvp of sin inside */
    TF_COUNT
};
typedef struct {
    uint8_t fn;
    int calls;
} TransUd;

static bool tf_scalar(uint8_t fn) { return fn == TF_SUMSQ || fn == TF_LSE; }
static bool tf_breaks(uint8_t fn) { return fn == TF_FAILS || fn == TF_NO_HANDLE || fn == TF_FREES_INPUT; }

static int32_t transform_build(ag_tensor *out, const ag_tensor *in, int64_t n, void *p) {
    TransUd *u = p;
    u->calls++;
    g_build_calls++;
    if (!out || !in || n != 1) fail("a transform's build function got NULL pointers or %lld inputs", (long long)n);
    const char *saved = g_op;
    g_op = "transform build function";
    ag_status s = AG_OK;
    ag_tensor tmp = AG_NULL_TENSOR;
    switch (u->fn) {
    case TF_SIN: s = ag_sin(out, in[0]); break;
    case TF_SQUARE: s = ag_mul(out, in[0], in[0]); break;
    case TF_SUMSQ:
        s = ag_mul(&tmp, in[0], in[0]);
        if (s == AG_OK) s = ag_sum(out, tmp, NULL, 0, false);
        break;
    case TF_LSE: s = ag_logsumexp(out, in[0], NULL, 0, false); break;
    case TF_IDENTITY: *out = in[0]; break;
    case TF_TANH2:
        s = ag_tanh(&tmp, in[0]);
        if (s == AG_OK) s = ag_mul_scalar(out, tmp, 2.0);
        break;
    case TF_FAILS: g_op = saved; return 3;
    case TF_NO_HANDLE: g_op = saved; return 0;
    case TF_FREES_INPUT:
        s = ag_mul(out, in[0], in[0]);
        chk(ag_tensor_free(in[0]));
        break;
    default: { /* the tangent of sin along the input itself, by ag_jvp */
        TransUd inner = {TF_SIN, 0};
        ag_tensor y = SENT, t = SENT;
        s = chk(ag_jvp(&y, &t, transform_build, &inner, in, 1, in));
        if (s == AG_OK) {
            chk(ag_tensor_free(y));
            *out = t;
        } else if (y != SENT || t != SENT) {
            fail("ag_jvp inside a build function failed but wrote its outputs");
        } else if (s != AG_ERR_STATE && s != AG_ERR_OUT_OF_MEMORY) {
            fail("ag_jvp inside a build function: %s (%s)", ag_status_name(s), ag_last_error());
        }
        break;
    }
    }
    if (tmp) chk(ag_tensor_free(tmp));
    g_op = saved;
    return s == AG_OK ? 0 : 1;
}

/* Whether a Jacobian / Hessian of shape a + b may exist: rank at most AG_MAX_NDIM, and non-zero
 * extents whose product fits int64 (the rule for every shape; an empty input with huge extents
 * can break it). */
static bool result_fits(const int64_t *a, int64_t na, const int64_t *b, int64_t nb) {
    int64_t shape[2 * MAXS], n = 0;
    if (na + nb > AG_MAX_NDIM) return false;
    for (int64_t d = 0; d < na; d++) shape[d] = a[d];
    for (int64_t d = 0; d < nb; d++) shape[na + d] = b[d];
    return numel_of(shape, na + nb, &n);
}

/* Reads a live tensor of at most 64 elements as float64. */
static int64_t read_small(ag_tensor t, double *buf) {
    int64_t n = -1;
    if (chk(ag_tensor_numel(&n, t)) != AG_OK || n > 64) fail("read_small: numel %lld", (long long)n);
    if (n > 0 && chk(ag_tensor_copy_data(buf, n, AG_FLOAT64, t)) != AG_OK) fail("read_small: copy_data");
    return n;
}

/* t holds scale * the values of u, element for element (NaN matches NaN). */
static void same_values(ag_tensor t, ag_tensor u, double scale, const char *what) {
    double a[64], b[64];
    int64_t n = read_small(t, a), m = read_small(u, b);
    if (n != m) fail("%s: %lld elements, expected %lld", what, (long long)n, (long long)m);
    for (int64_t i = 0; i < n; i++) {
        double want = scale * b[i];
        if (!(a[i] == want || (isnan(a[i]) && isnan(want))))
            fail("%s: element %lld is %.17g, expected %.17g", what, (long long)i, a[i], want);
    }
}

/* One function transform of a pool tensor x, with a tangent / cotangent / v from the pool (x
 * itself half the time, else of any shape and dtype), a build function from the table above,
 * sometimes NULL, a count of 0 or an invalid Jacobian mode. The status follows from shapes,
 * dtypes and the build function (forward mode refuses ag_jvp inside it); results have the
 * documented shapes, and the identity's derivatives and the hvp of sum(x^2) (2 v) their exact
 * values. */
static void op_transform(Rd *r) {
    uint8_t which = u8(r) % 5; /* jvp, vjp, jacobian, hvp, hessian */
    H x = pick_t(r);
    H v = bit(r) ? x : pick_t(r);
    TransUd u = {(uint8_t)(u8(r) % TF_COUNT), 0};
    uint8_t flags = u8(r);
    bool no_build = flags % 16 == 0;
    int64_t np = flags % 16 == 1 ? 0 : 1;
    int32_t mode = (flags >> 4) % 8 == 0 ? (int32_t)rd_i64(r) : (flags >> 4) % 2 ? AG_JACOBIAN_FORWARD : AG_JACOBIAN_REVERSE;
    uint8_t dst = u8(r);
    bool uses_v = which == 0 || which == 1 || which == 3;
    Info xi, vi;
    memset(&xi, 0, sizeof xi);
    memset(&vi, 0, sizeof vi);
    if (!x.bad) xi = info_of(x.h);
    if (uses_v && !v.bad) vi = info_of(v.h);
    if (xi.numel > 16) return; /* a Jacobian or Hessian costs a pass per element */

    /* What f gives, and what the header then says. */
    int64_t yr = tf_scalar(u.fn) ? 0 : xi.nd, ycount = tf_scalar(u.fn) ? 1 : xi.numel;
    bool vshape = vi.nd == xi.nd, vdtype = vi.dtype == xi.dtype;
    for (int64_t d = 0; vshape && d < xi.nd; d++) vshape = vi.shape[d] == xi.shape[d];
    bool yshape = vi.nd == yr; /* v as a cotangent */
    for (int64_t d = 0; yshape && d < yr; d++) yshape = vi.shape[d] == xi.shape[d];
    bool broken = tf_breaks(u.fn), nested = u.fn == TF_NESTED_JVP;
    unsigned allowed;
    if (no_build) allowed = M_ARG | M_INV;
    else if ((which <= 1 && np == 0)) allowed = M_ARG | M_INV;
    else if (x.bad || (uses_v && v.bad)) allowed = M_INV;
    else {
        switch (which) {
        case 0: /* jvp: the tangent is checked before f runs */
            allowed = !vdtype ? M_DTYPE : !vshape ? M_SHAPE : broken || nested ? M_CB : M_OK;
            break;
        case 1: /* vjp: f first, then the cotangent against its output */
            allowed = broken ? M_CB : vi.dtype != xi.dtype ? M_DTYPE : !yshape ? M_SHAPE : M_OK;
            if (xi.rg && grad_on) { /* x itself is differentiated (create_graph) */
                allowed |= M_STATE;  /* its history may have been released */
                if (g_any_hook) allowed = M_ANY; /* its hooks run */
            }
            break;
        case 2: /* jacobian: f first, then the result's shape (rank, count) */
            if (mode != AG_JACOBIAN_REVERSE && mode != AG_JACOBIAN_FORWARD) allowed = M_ARG;
            else if (broken || (nested && mode == AG_JACOBIAN_FORWARD && xi.numel > 0)) allowed = M_CB;
            else allowed = result_fits(xi.shape, yr, xi.shape, xi.nd) ? M_OK : M_SHAPE;
            break;
        case 3: /* hvp: v first, then f, then its element count */
            allowed = !vdtype ? M_DTYPE : !vshape ? M_SHAPE : broken || nested ? M_CB : ycount != 1 ? M_SHAPE : M_OK;
            break;
        default: /* hessian: the result's shape first; an empty x never calls f */
            allowed = !result_fits(xi.shape, xi.nd, xi.shape, xi.nd) ? M_SHAPE
                      : xi.numel == 0         ? M_OK
                      : broken || nested      ? M_CB
                      : ycount != 1           ? M_SHAPE
                                              : M_OK;
            break;
        }
        allowed |= M_OOM;
    }
    static const char *const names[] = {"ag_jvp", "ag_vjp", "ag_jacobian", "ag_hvp", "ag_hessian"};
    g_op = names[which];
    TRACE("%s(x=%#llx, v=%#llx, fn=%u, build=%d, n=%lld, mode=%d)%s", names[which], (unsigned long long)x.h,
          (unsigned long long)v.h, u.fn, !no_build, (long long)np, mode, x.bad || (uses_v && v.bad) ? " [bad]" : "");
    ag_build_fn fn = no_build ? NULL : transform_build;
    ag_tensor o1 = SENT, o2 = SENT;
    ag_status s;
    uint64_t mark = co_mark();
    switch (which) {
    case 0: s = ag_jvp(&o1, &o2, fn, &u, &x.h, np, &v.h); break;
    case 1: s = ag_vjp(&o1, &o2, fn, &u, &x.h, np, v.h); break;
    case 2: s = ag_jacobian(&o1, fn, &u, x.h, mode); break;
    case 3: s = ag_hvp(&o1, fn, &u, x.h, v.h); break;
    default: s = ag_hessian(&o1, fn, &u, x.h); break;
    }
    expect(s, allowed | co_loose(mark), "transform: handles, shapes, dtypes, the build function");
    if (s != AG_OK) {
        if (o1 != SENT || o2 != SENT) fail("%s failed but wrote its outputs", names[which]);
        return;
    }
    if (o1 == SENT || o1 == 0 || ((which <= 1) && (o2 == SENT || o2 == 0)))
        fail("%s succeeded without writing its outputs", names[which]);
    if (which > 1 && o2 != SENT) fail("%s wrote past its output", names[which]);
    owned += which <= 1 ? 2 : 1;
    Info a = info_of(o1);
    int64_t want[2 * MAXS], wn = 0;
    switch (which) {
    case 0:
    case 1: {
        Info b = info_of(o2);
        int64_t ys[MAXS];
        for (int64_t d = 0; d < yr; d++) ys[d] = xi.shape[d];
        same_shape(&a, ys, yr, "a transform's output has f's shape");
        if (which == 0) same_shape(&b, ys, yr, "a jvp tangent has f's output shape");
        else same_shape(&b, xi.shape, xi.nd, "a vjp gradient has its primal's shape");
        if (b.dtype != xi.dtype) fail("%s: a derivative of dtype %d for a primal of %d", names[which], b.dtype, xi.dtype);
        /* (x's own hooks run in a recorded vjp and may change its gradient) */
        if (u.fn == TF_IDENTITY && !(which == 1 && xi.rg && grad_on && g_any_hook))
            same_values(o2, v.h, 1.0, "the identity's jvp tangent / vjp gradient is v");
        break;
    }
    case 2:
        for (int64_t d = 0; d < yr; d++) want[wn++] = xi.shape[d];
        /* fallthrough */
    case 4:
        for (int64_t d = 0; d < xi.nd; d++) want[wn++] = xi.shape[d];
        if (which == 4)
            for (int64_t d = 0; d < xi.nd; d++) want[wn++] = xi.shape[d];
        same_shape(&a, want, wn, "a Jacobian / Hessian has the shapes of f(x) and x");
        break;
    default:
        same_shape(&a, xi.shape, xi.nd, "an hvp has x's shape");
        if (u.fn == TF_SUMSQ) same_values(o1, v.h, 2.0, "the hvp of sum(x^2) is 2 v");
        break;
    }
    owned -= which <= 1 ? 2 : 1;
    take(o1, dst);
    if (which <= 1) take(o2, (uint8_t)(dst + 1));
}

/* ------------------------------------------------------------------------------------------ */
/* Reusable graphs (issue 16): capture and replay, set_data, recompute                        */
/* ------------------------------------------------------------------------------------------ */

enum {
    NF = 2,      /* captured-function slots */
    NCIN = 3,    /* a capture's inputs, at most */
    NCOUT = 4,   /* its outputs, at most */
    NCPAR = 2,   /* pool tensors it reads in place (parameters) */
    NCOPS = 10,  /* ops of its program */
    NREG = NCIN + NCPAR + NCOPS,
};

/* One op of a capture's program, on registers: inputs, then parameters, then results. */
enum {
    CK_UNARY, CK_BINARY, CK_SCALAR, CK_SUM, CK_MATMUL, CK_GRAD, CK_BACKWARD, CK_SET_DATA, CK_COPY,
    CK_NESTED_CAPTURE, CK_CALL_INSIDE, CK_OPT_STEP, CK_COUNT
};
typedef struct {
    uint8_t kind, a, b, which;
    double s;
} CapOp;

/* A capture's program, chosen by the input: replayed by the capture function, and run eagerly on
 * copies of the same inputs to compare with the replays. */
typedef struct {
    int nin, nops, nout;
    CapOp ops[NCOPS];
    uint8_t outsel[NCOUT];
    ag_tensor params[NCPAR];
    uint8_t breaks; /* 0 keeps the contract; 1 fails, 2 writes no handle, 3 a dead one, 4 frees an input */
    bool effects;   /* writes a parameter or its .grad (backward, optimizer step, set_data / copy_ on a
                       parameter): replays and eager runs change state, so they are not compared */
} CapProg;

typedef struct {
    const CapProg *p;
    int calls;
    bool failed; /* the function returned non-zero or broke its contract */
    Info out[NCOUT];
} CapUd;

typedef struct {
    ag_function f;
    CapProg prog;
    Info in[NCIN], out[NCOUT];
    bool grad_on, prm_rg[NCPAR]; /* grad mode and the parameters' requires_grad when captured */
} Fn;
static Fn fns[NF];
static bool g_recomputable;

/* What one run of a program gives: its outputs (new handles the caller owns) or a failure. */
typedef struct {
    int32_t ret; /* 0, or why it failed (the capture function's return value) */
    ag_tensor out[NCOUT];
} CapRun;

static int32_t capture_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs, void *ud);

/* Runs the program on `in` (borrowed): the body of the capture function, and the eager reference.
 * Every register it makes is freed before it returns, except the outputs. */
static CapRun run_prog(const CapProg *p, const ag_tensor *in, bool capturing) {
    CapRun res;
    memset(&res, 0, sizeof res);
    ag_tensor reg[NREG];
    bool mine[NREG];
    int n = 0;
    memset(mine, 0, sizeof mine);
    for (int i = 0; i < p->nin; i++) reg[n++] = in[i];
    for (int i = 0; i < NCPAR; i++) reg[n++] = p->params[i];
    const char *saved = g_op;
    g_op = capturing ? "capture function" : "eager run of a capture's program";
    for (int k = 0; k < p->nops && res.ret == 0; k++) {
        const CapOp *o = &p->ops[k];
        ag_tensor a = reg[o->a % n], b = reg[o->b % n], t = SENT, tmp = SENT;
        ag_status s = AG_OK;
        switch (o->kind) {
        case CK_UNARY:
            switch (o->which % 6) {
            case 0: s = ag_exp(&t, a); break;
            case 1: s = ag_tanh(&t, a); break;
            case 2: s = ag_relu(&t, a); break;
            case 3: s = ag_neg(&t, a); break;
            case 4: s = ag_sigmoid(&t, a); break;
            default: s = ag_sin(&t, a); break;
            }
            break;
        case CK_BINARY:
            switch (o->which % 5) {
            case 0: s = ag_add(&t, a, b); break;
            case 1: s = ag_sub(&t, a, b); break;
            case 2: s = ag_mul(&t, a, b); break;
            case 3: s = ag_maximum(&t, a, b); break;
            default: s = ag_div(&t, a, b); break;
            }
            break;
        case CK_SCALAR: s = o->which & 1 ? ag_mul_scalar(&t, a, o->s) : ag_add_scalar(&t, a, o->s); break;
        case CK_SUM: {
            int64_t axis = o->which % 2;
            s = o->which & 2 ? ag_sum(&t, a, &axis, 1, o->which & 4) : ag_sum(&t, a, NULL, 0, false);
            break;
        }
        case CK_MATMUL: s = ag_matmul(&t, a, b); break;
        case CK_GRAD: /* d sum(a) / d b (b unused: AG_NULL_TENSOR, which later ops refuse) */
            s = ag_sum(&tmp, a, NULL, 0, false);
            if (s == AG_OK) s = chk(ag_grad(&t, &tmp, 1, NULL, &b, 1, o->which & 1, false, true));
            break;
        case CK_BACKWARD:
            s = ag_sum(&tmp, a, NULL, 0, false);
            if (s == AG_OK) s = chk(ag_backward(tmp, 0, o->which & 1, false));
            break;
        case CK_SET_DATA: { /* a's own values, scaled: numel known, so the count is right */
            int64_t cnt = 0;
            s = chk(ag_tensor_numel(&cnt, a));
            if (s == AG_OK && cnt <= CAP) {
                for (int64_t i = 0; i < cnt; i++) dbuf[i] = o->s * (double)((i % 7) - 3);
                s = chk(ag_tensor_set_data(a, dbuf, cnt, AG_FLOAT64));
            }
            break;
        }
        case CK_COPY: s = chk(ag_tensor_copy_(a, b)); break;
        case CK_NESTED_CAPTURE: { /* refused, and harmless to go on after */
            if (!capturing) break;
            ag_function g = (ag_function)SENT;
            expect(ag_capture(&g, NULL, NULL, 0, 1, NULL), M_ARG, "ag_capture with fn NULL");
            CapProg inner;
            memset(&inner, 0, sizeof inner);
            inner.nin = 1, inner.nops = 1, inner.nout = 1; /* exp(a) */
            CapUd iu = {&inner, 0, false, {{0}}};
            g_op = "ag_capture inside a capture";
            expect(ag_capture(&g, capture_fn, &a, 1, 1, &iu), M_STATE | (a ? 0 : M_INV), "a nested capture");
            if (iu.calls) fail("a nested capture ran its function");
            if (g != (ag_function)SENT) fail("a refused nested ag_capture wrote its output");
            g_op = "capture function";
            break;
        }
        case CK_CALL_INSIDE: { /* a captured function called inside a capture: AG_ERR_STATE */
            if (!capturing) break;
            Fn *fn = &fns[o->which % NF];
            if (!fn->f) break;
            ag_tensor outs[NCOUT];
            for (int i = 0; i < NCOUT; i++) outs[i] = SENT;
            ag_tensor ins[NCIN];
            for (int i = 0; i < fn->prog.nin; i++) ins[i] = reg[(o->a + i) % n];
            g_op = "ag_function_call inside a capture";
            s = chk(ag_function_call(outs, fn->prog.nout, fn->f, ins, fn->prog.nin));
            if (s == AG_OK) fail("ag_function_call inside a capture succeeded");
            for (int i = 0; i < NCOUT; i++)
                if (outs[i] != SENT) fail("a refused ag_function_call wrote its outputs");
            s = AG_OK;
            g_op = "capture function";
            break;
        }
        default: { /* an optimizer step (with the capture: a step per replay) */
            ag_optimizer opt = opts[o->which % NO];
            if (opt) s = chk(ag_optimizer_step(opt));
            break;
        }
        }
        chk(s);
        if (tmp != SENT && tmp) chk(ag_tensor_free(tmp));
        if (s != AG_OK) {
            if (t != SENT) fail("%s: a failed call wrote its output", g_op);
            res.ret = 10 + o->kind;
            break;
        }
        if (t != SENT && n < NREG) {
            mine[n] = true;
            reg[n++] = t; /* may be AG_NULL_TENSOR (an unused input of ag_grad) */
        } else if (t != SENT && t) {
            chk(ag_tensor_free(t));
        }
    }
    /* The outputs: registers made here (a parameter or an input is never returned). */
    for (int k = 0; k < p->nout && res.ret == 0; k++) {
        int j = p->outsel[k] % n;
        while (j >= 0 && (!mine[j] || !reg[j])) j--;
        if (j < 0) {
            res.ret = 9; /* nothing made: the program fails */
            break;
        }
        /* Each output its own handle: a copy (ag_mul_scalar by 1) when already given out. */
        bool dup = false;
        for (int q = 0; q < k; q++) dup = dup || res.out[q] == reg[j];
        if (dup) {
            ag_tensor c = SENT;
            if (chk(ag_mul_scalar(&c, reg[j], 1.0)) != AG_OK) {
                res.ret = 8;
                break;
            }
            res.out[k] = c;
        } else {
            res.out[k] = reg[j];
            mine[j] = false;
        }
    }
    for (int i = 0; i < n; i++)
        if (mine[i] && reg[i]) chk(ag_tensor_free(reg[i]));
    if (res.ret != 0)
        for (int k = 0; k < NCOUT; k++) {
            if (res.out[k]) chk(ag_tensor_free(res.out[k]));
            res.out[k] = 0;
        }
    g_op = saved;
    return res;
}


static int32_t capture_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs, void *ud) {
    CapUd *u = ud;
    u->calls++;
    const CapProg *p = u->p;
    if (!outputs || noutputs != p->nout || ninputs != p->nin || (ninputs > 0 && !inputs))
        fail("the capture function got %lld inputs and %lld outputs for %d and %d", (long long)ninputs,
             (long long)noutputs, p->nin, p->nout);
    for (int64_t k = 0; k < noutputs; k++)
        if (outputs[k] != 0) fail("outputs[%lld] is not 0 on entry", (long long)k);
    CapRun res = run_prog(p, inputs, true);
    if (res.ret != 0) {
        u->failed = true;
        return res.ret;
    }
    for (int k = 0; k < p->nout; k++) {
        owned++;
        u->out[k] = info_of(res.out[k]);
        owned--;
        outputs[k] = res.out[k];
    }
    switch (p->breaks) {
    case 1: u->failed = true; return 7;
    case 2: u->failed = true; outputs[p->nout - 1] = 0; chk(ag_tensor_free(res.out[p->nout - 1])); return 0;
    case 3: u->failed = true; chk(ag_tensor_free(res.out[p->nout - 1])); return 0; /* a dead handle */
    case 4:
        if (p->nin > 0) {
            u->failed = true;
            chk(ag_tensor_free(inputs[0]));
        }
        return 0;
    default: return 0;
    }
}

/* A copy of a live tensor as a new leaf (same values, dtype and shape; requires_grad as `rg`,
 * or as t's when rg < 0). */
static ag_tensor leaf_copy(ag_tensor t, int rg) {
    Info in = info_of(t);
    static double buf[CAP];
    if (in.numel > CAP) fail("leaf_copy: %lld elements", (long long)in.numel);
    ag_tensor c = SENT;
    const char *saved = g_op;
    g_op = "leaf copy (for an eager run)";
    if (in.numel > 0 && chk(ag_tensor_copy_data(buf, CAP, AG_FLOAT64, t)) != AG_OK) fail("leaf_copy: copy_data");
    if (expect(ag_tensor_from_data(&c, buf, in.shape, in.nd, AG_FLOAT64), M_OK | M_OOM, "from_data") != AG_OK) {
        g_op = saved;
        return 0;
    }
    if (in.dtype == AG_FLOAT32) { /* float32 values are exact in float64: convert back */
        ag_tensor d = SENT;
        int64_t cnt = in.numel;
        static float fb[CAP];
        for (int64_t i = 0; i < cnt; i++) fb[i] = (float)buf[i];
        if (expect(ag_tensor_from_data(&d, fb, in.shape, in.nd, AG_FLOAT32), M_OK | M_OOM, "from_data") != AG_OK) {
            chk(ag_tensor_free(c));
            g_op = saved;
            return 0;
        }
        chk(ag_tensor_free(c));
        c = d;
    }
    if (rg < 0 ? in.rg : rg) expect(ag_tensor_set_requires_grad(c, true), M_OK, "requires_grad on a new leaf");
    g_op = saved;
    return c;
}

/* The bits of two live tensors are the same (shape, dtype, every element). */
static bool same_bits(ag_tensor a, ag_tensor b) {
    Info x = info_of(a), y = info_of(b);
    if (x.dtype != y.dtype || x.nd != y.nd || x.numel != y.numel) return false;
    for (int64_t d = 0; d < x.nd; d++)
        if (x.shape[d] != y.shape[d]) return false;
    static double p[CAP], q[CAP];
    if (x.numel == 0) return true;
    if (x.numel > CAP) { /* (a capture's output may be large) in place, in their own dtype */
        const void *pa = NULL, *pb = NULL;
        if (chk(ag_tensor_data_ptr(&pa, a)) != AG_OK || chk(ag_tensor_data_ptr(&pb, b)) != AG_OK || !pa || !pb)
            fail("same_bits: data_ptr");
        return memcmp(pa, pb, (size_t)x.numel * (x.dtype == AG_FLOAT32 ? 4 : 8)) == 0;
    }
    if (chk(ag_tensor_copy_data(p, CAP, AG_FLOAT64, a)) != AG_OK || chk(ag_tensor_copy_data(q, CAP, AG_FLOAT64, b)) != AG_OK)
        fail("same_bits: copy_data");
    return memcmp(p, q, (size_t)x.numel * sizeof p[0]) == 0; /* float32 widens exactly */
}

/* Whether fn's parameters are still the pool's (the program can read them eagerly). */
static bool params_live(const Fn *fn) {
    for (int i = 0; i < NCPAR; i++) {
        ag_tensor t = fn->prog.params[i];
        bool found = t == 0;
        for (int k = 0; k < NT && !found; k++) found = pool[k] == t;
        if (!found) return false;
        if (t && info_of(t).rg != fn->prm_rg[i]) return false; /* another program now */
    }
    return true;
}

/* The program run eagerly on copies of `in` (before a call, which may write into tensors it
 * reads): e->ret is 0 and e->out its outputs when the run can be compared with a replay. */
static void eager_outputs(const Fn *fn, const ag_tensor *in, CapRun *e) {
    memset(e, 0, sizeof *e);
    e->ret = -1;
    if (fn->prog.effects || fn->grad_on != grad_on || !params_live(fn) || g_any_hook) return;
    /* the eager function on the same inputs: leaves with the placeholders' requires_grad */
    ag_tensor cp[NCIN] = {0};
    for (int i = 0; i < fn->prog.nin; i++)
        if (!(cp[i] = leaf_copy(in[i], fn->in[i].rg))) {
            for (int j = 0; j < i; j++) chk(ag_tensor_free(cp[j]));
            return;
        }
    *e = run_prog(&fn->prog, cp, false);
    /* (ag_grad, set_data and copy_ may fail on values where they worked when captured; the
     * run is then not compared) */
    for (int i = 0; i < fn->prog.nin; i++) chk(ag_tensor_free(cp[i]));
}

/* outs (a replay) must equal the eager outputs bit for bit; frees them. */
static void compare_with_eager(const Fn *fn, CapRun *e, const ag_tensor *outs) {
    if (e->ret != 0) return;
    const char *saved = g_op;
    g_op = "a replay compared with the eager program";
    for (int k = 0; k < fn->prog.nout; k++) {
        if (!same_bits(outs[k], e->out[k])) {
            TRACE("    output %d differs from the eager program's", k);
            fail("a replay's output %d differs from the eager program's on the same inputs (bit for bit)", k);
        }
        chk(ag_tensor_free(e->out[k]));
    }
    count(AG_OK); /* FUZZ_STATS: replays compared with the eager program */
    e->ret = -1;
    g_op = saved;
}

static void drop_eager(CapRun *e) {
    for (int k = 0; e->ret == 0 && k < NCOUT; k++)
        if (e->out[k]) chk(ag_tensor_free(e->out[k]));
    e->ret = -1;
}

static void free_fn(int i) {
    if (!fns[i].f) return;
    const char *saved = g_op;
    g_op = "ag_function_free (of a function the program holds)";
    TRACE("ag_function_free(%#llx)", (unsigned long long)fns[i].f);
    expect(ag_function_free(fns[i].f), M_OK, "free a live function");
    remember_stale(fns[i].f);
    owned--;
    fns[i].f = 0;
    g_op = saved;
}

/* A function handle: mostly a slot, else freed, made up, or a tensor handle. */
static H pick_f(Rd *r) {
    uint8_t b = u8(r);
    if (b < 200) {
        ag_function f = fns[b % NF].f;
        return (H){f, f == 0};
    }
    switch (b % 4) {
    case 0: return (H){0, true};
    case 1: return (H){nstale ? stale[u8(r) % (nstale < NSTALE ? nstale : NSTALE)] : 0, true};
    case 2: return (H){pool[u8(r) % NT] ? pool[u8(r) % NT] : made_up(r), true};
    default: return (H){made_up(r), true};
    }
}

/* Reads a capture's program from the input. */
static void rd_prog(Rd *r, CapProg *p) {
    memset(p, 0, sizeof *p);
    p->nin = u8(r) % (NCIN + 1);
    p->nops = 1 + u8(r) % NCOPS;
    p->nout = 1 + u8(r) % NCOUT;
    for (int i = 0; i < NCPAR; i++) p->params[i] = bit(r) ? pool[u8(r) % NT] : 0;
    for (int k = 0; k < p->nops; k++) {
        CapOp *o = &p->ops[k];
        o->kind = u8(r) % CK_COUNT;
        o->a = u8(r);
        o->b = u8(r);
        o->which = u8(r);
        o->s = rd_double(r);
        if (o->kind == CK_BACKWARD || o->kind == CK_OPT_STEP) p->effects = true;
        /* an in-place write into a parameter, or a copy_ that may reach one */
        if ((o->kind == CK_SET_DATA || o->kind == CK_COPY) && (o->a % (p->nin + NCPAR + k)) >= p->nin) p->effects = true;
    }
    for (int k = 0; k < NCOUT; k++) p->outsel[k] = u8(r);
    uint8_t b = u8(r);
    p->breaks = b < 224 ? 0 : 1 + b % 4;
}

/* ag_capture of a program the input chose, on pool tensors (or bad handles), with bad counts or
 * NULL pointers now and then. The status follows from the arguments and what the capture
 * function did (AG_ERR_CALLBACK exactly when it failed or broke its contract); a captured
 * function is called at once on its examples and compared with the eager program. */
static void reuse_capture(Rd *r) {
    CapProg p;
    rd_prog(r, &p);
    H in[NCIN];
    for (int i = 0; i < p.nin; i++) in[i] = pick_t(r);
    uint8_t flags = u8(r), slot = u8(r) % NF;
    int64_t nin = p.nin, nout = p.nout;
    bool null_out = flags % 32 == 0, null_fn = flags % 32 == 1, null_in = flags % 32 == 2 && nin > 0;
    if (flags % 32 == 3) nin = -1 - (flags >> 5);
    if (flags % 32 == 4) nout = (flags >> 5) & 1 ? 0 : 4097 + (flags >> 6);
    bool arg_bad = null_out || null_fn || null_in || nin < 0 || nout < 1 || nout > 4096;
    bool bad = any_bad(in, p.nin);
    for (int i = 0; i < p.nin && !bad; i++)
        if (info_of(in[i].h).numel > CAP) return;
    ag_tensor ex[NCIN];
    for (int i = 0; i < p.nin; i++) ex[i] = in[i].h;
    CapUd u = {&p, 0, false, {{0}}};
    ag_function f = (ag_function)SENT;
    g_op = "ag_capture";
    TRACE("ag_capture(nin=%lld, nout=%lld, ops=%d, breaks=%d, effects=%d)%s%s", (long long)nin, (long long)nout, p.nops,
          p.breaks, p.effects, bad ? " [bad input]" : "", arg_bad ? " [bad argument]" : "");
    ag_status s = chk(ag_capture(null_out ? NULL : &f, null_fn ? NULL : capture_fn, null_in ? NULL : ex, nin, nout, &u));
    g_op = "ag_capture";
    unsigned allowed;
    if (arg_bad) allowed = M_ARG | (bad ? M_INV : 0);
    else if (bad) allowed = M_INV;
    else allowed = (u.failed ? M_CB : M_OK) | M_OOM;
    if (u.calls > 1) fail("the capture function ran %d times", u.calls);
    if ((arg_bad || bad) && u.calls) fail("the capture function ran although the arguments were refused");
    expect(s, allowed, "capture: arguments, and whether the function kept its contract");
    if (s != AG_OK) {
        if (f != (ag_function)SENT) fail("a failed ag_capture wrote its output");
        return;
    }
    if (f == (ag_function)SENT || f == 0) fail("ag_capture succeeded without writing a handle");
    owned++;
    free_fn(slot);
    Fn *fn = &fns[slot];
    fn->f = f;
    fn->prog = p;
    for (int i = 0; i < p.nin; i++) fn->in[i] = info_of(ex[i]);
    fn->grad_on = grad_on;
    for (int i = 0; i < NCPAR; i++) fn->prm_rg[i] = p.params[i] && info_of(p.params[i]).rg;
    for (int k = 0; k < p.nout; k++) fn->out[k] = u.out[k];
    /* A replay on the examples equals the eager program on them. */
    ag_tensor outs[NCOUT];
    for (int k = 0; k < NCOUT; k++) outs[k] = SENT;
    CapRun e;
    uint64_t mark = co_mark();
    eager_outputs(fn, ex, &e);
    g_op = "ag_function_call (on the capture's examples)";
    if (expect(ag_function_call(outs, p.nout, f, ex, p.nin), M_OK | M_OOM | co_loose(mark), "a call on the examples") != AG_OK) {
        drop_eager(&e);
        return;
    }
    owned += p.nout;
    for (int k = 0; k < p.nout; k++) {
        Info o = info_of(outs[k]);
        same_shape(&o, fn->out[k].shape, fn->out[k].nd, "a replay's output has the capture's shape");
        if (o.dtype != fn->out[k].dtype) fail("a replay's output %d has dtype %d, the capture's %d", k, o.dtype, fn->out[k].dtype);
        if (o.rg) fail("a replay's output requires grad");
    }
    if (co_mark() == mark) compare_with_eager(fn, &e, outs);
    else drop_eager(&e); /* a custom op's callback changed its results between the runs */
    for (int k = 0; k < p.nout; k++) free_tensor(outs[k]);
}

/* The statuses a call of fn with these inputs may give (before the outputs are considered). */
static unsigned call_statuses(H f, const H *in, int64_t nin, bool null_in, int64_t nout, unsigned *extra) {
    *extra = 0;
    if (f.bad) return M_INV | M_ARG;
    const Fn *fn = NULL;
    for (int i = 0; i < NF; i++)
        if (fns[i].f == f.h) fn = &fns[i];
    if (!fn) fail("a live function handle that is in no slot");
    unsigned e = 0;
    if (nout != fn->prog.nout) e |= M_ARG;
    if (nin < 0 || null_in || nin != fn->prog.nin) e |= M_ARG;
    for (int64_t i = 0; i < nin && i < NCIN + 1 && !null_in; i++) {
        if (in[i].bad) {
            e |= M_INV;
            continue;
        }
        if (i >= fn->prog.nin) continue;
        Info x = info_of(in[i].h);
        if (x.dtype != fn->in[i].dtype) e |= M_DTYPE;
        else if (x.nd != fn->in[i].nd || memcmp(x.shape, fn->in[i].shape, (size_t)x.nd * sizeof x.shape[0]) != 0) e |= M_SHAPE;
    }
    return e;
}

/* ag_function_call or ag_function_call_into with right or wrong inputs, counts and targets. */
static void reuse_call(Rd *r, bool into) {
    H f = pick_f(r);
    const Fn *fn = NULL;
    for (int i = 0; i < NF && !f.bad; i++)
        if (fns[i].f == f.h) fn = &fns[i];
    uint8_t flags = u8(r);
    int64_t nin = fn && flags % 8 ? fn->prog.nin : u8(r) % (NCIN + 2);
    int64_t nout = fn && (flags >> 3) % 8 ? fn->prog.nout : u8(r) % (NCOUT + 2);
    bool null_in = flags >> 6 == 3 && nin > 0;
    if (flags >> 6 == 2 && flags & 1) nin = -1;
    H in[NCIN + 1];
    for (int64_t i = 0; i < nin && i < NCIN + 1; i++) {
        /* the function's own input shapes often: a fresh tensor of that shape and dtype */
        if (fn && i < fn->prog.nin && bit(r)) {
            ag_tensor t = SENT;
            fill_data(r, fn->in[i].numel);
            g_op = "ag_tensor_from_data (a call's input)";
            ag_status st = expect(fn->in[i].dtype == AG_FLOAT32
                                      ? ag_tensor_from_data(&t, fbuf, fn->in[i].shape, fn->in[i].nd, AG_FLOAT32)
                                      : ag_tensor_from_data(&t, dbuf, fn->in[i].shape, fn->in[i].nd, AG_FLOAT64),
                                  M_OK | M_OOM, "from_data");
            if (st != AG_OK) return;
            take(t, u8(r));
            in[i] = (H){t, false};
            for (int k = 0; k < NT; k++) /* take() may have put it in any slot; it is live there */
                if (pool[k] == t) in[i].bad = false;
        } else {
            in[i] = pick_t(r);
        }
    }
    /* take() may have freed an earlier input (its slot reused): pick again from what is live */
    for (int64_t i = 0; i < nin && i < NCIN + 1; i++) {
        bool live = false;
        for (int k = 0; k < NT; k++) live = live || (pool[k] && pool[k] == in[i].h);
        if (!in[i].bad && !live) in[i].bad = true;
    }
    unsigned extra;
    unsigned errs = call_statuses(f, in, nin, null_in, nout, &extra);
    ag_tensor ins[NCIN + 1];
    for (int64_t i = 0; i < nin && i < NCIN + 1; i++) ins[i] = in[i].h;
    if (nin > NCIN + 1) return;
    if (!into) {
        ag_tensor outs[NCOUT + 2];
        for (int k = 0; k < NCOUT + 2; k++) outs[k] = SENT;
        bool null_out = (flags & 7) == 0 && (flags >> 6) == 1;
        CapRun e;
        e.ret = -1;
        uint64_t mark = co_mark();
        if (fn && !errs && !null_out) eager_outputs(fn, ins, &e);
        g_op = "ag_function_call";
        TRACE("ag_function_call(f=%#llx, nin=%lld, nout=%lld)%s", (unsigned long long)f.h, (long long)nin, (long long)nout,
              errs || null_out ? " [bad]" : "");
        ag_status s = chk(ag_function_call(null_out ? NULL : outs, nout, f.h, null_in ? NULL : ins, nin));
        expect(s, errs || null_out ? (errs | (null_out ? M_ARG : 0)) : M_OK | M_OOM | co_loose(mark), "call: handles, counts, shapes, dtypes");
        for (int k = s == AG_OK ? (int)nout : 0; k < NCOUT + 2; k++)
            if (outs[k] != SENT) fail("ag_function_call wrote outputs[%d] %s", k, s == AG_OK ? "past its count" : "although it failed");
        if (s != AG_OK) {
            drop_eager(&e);
            return;
        }
        owned += nout;
        for (int k = 0; k < nout; k++) {
            Info o = info_of(outs[k]);
            same_shape(&o, fn->out[k].shape, fn->out[k].nd, "a replay's output has the capture's shape");
            if (o.rg) fail("a replay's output requires grad");
        }
        if (co_mark() == mark) compare_with_eager(fn, &e, outs);
        else drop_eager(&e);
        owned -= nout;
        uint8_t dst = u8(r);
        for (int k = 0; k < nout; k++) take(outs[k], (uint8_t)(dst + k));
        return;
    }
    /* call_into: targets of the function's output shapes (fresh zeros), or from the pool */
    int64_t nt = nout;
    H tg[NCOUT + 2];
    bool fresh[NCOUT + 2] = {false};
    for (int64_t k = 0; k < nt && k < NCOUT + 2; k++) {
        if (fn && k < fn->prog.nout && u8(r) < 192) {
            ag_tensor t = SENT;
            g_op = "ag_tensor_zeros (a call_into target)";
            if (expect(ag_tensor_zeros(&t, fn->out[k].shape, fn->out[k].nd, fn->out[k].dtype), M_OK | M_OOM, "zeros") != AG_OK) {
                for (int64_t q = 0; q < k; q++)
                    if (fresh[q]) free_tensor(tg[q].h);
                return;
            }
            owned++;
            tg[k] = (H){t, false};
            fresh[k] = true;
        } else {
            tg[k] = pick_t(r);
        }
    }
    unsigned terr = 0;
    bool share = false;
    for (int64_t k = 0; k < nt; k++) {
        if (tg[k].bad) {
            terr |= M_INV;
            continue;
        }
        Info t = info_of(tg[k].h);
        for (int64_t q = 0; q < k; q++)
            if (!tg[q].bad && (tg[q].h == tg[k].h || info_of(tg[q].h).numel == t.numel)) share = true;
        if (!fn || k >= fn->prog.nout) continue;
        bool other_shape = t.nd != fn->out[k].nd || memcmp(t.shape, fn->out[k].shape, (size_t)t.nd * sizeof t.shape[0]) != 0;
        if (t.dtype != fn->out[k].dtype)
            terr |= M_DTYPE; /* checked before the shape (B119) */
        else if (other_shape)
            terr |= M_SHAPE;
        else if (t.rg && (grad_on || !leaf_requiring_grad(tg[k].h)))
            terr |= M_STATE;
    }
    if (share) terr |= M_ARG;
    bool null_t = (flags & 7) == 0 && (flags >> 6) == 1 && nt > 0;
    unsigned allowed = errs | terr | (null_t ? M_ARG : 0);
    if (!allowed) allowed = M_OK;
    allowed |= M_OOM;
    if (share && !(errs | (terr & ~M_ARG)) && !null_t) allowed |= M_OK; /* equal counts need not share */
    ag_tensor tgs[NCOUT + 2];
    for (int64_t k = 0; k < nt; k++) tgs[k] = tg[k].h;
    CapRun e;
    e.ret = -1;
    uint64_t mark = co_mark();
    if (fn && (allowed & M_OK)) eager_outputs(fn, ins, &e);
    g_op = "ag_function_call_into";
    TRACE("ag_function_call_into(f=%#llx, nin=%lld, nout=%lld)%s", (unsigned long long)f.h, (long long)nin,
          (long long)nout, allowed & M_OK ? "" : " [bad]");
    ag_status s = chk(ag_function_call_into(null_t ? NULL : tgs, nt, f.h, null_in ? NULL : ins, nin));
    expect(s, allowed | ((allowed & M_OK) ? co_loose(mark) : 0), "call_into: handles, counts, shapes, dtypes, targets");
    if (s == AG_OK) {
        for (int64_t k = 0; k < nt; k++) {
            Info t = info_of(tgs[k]);
            if (t.rg && grad_on) fail("call_into wrote into a tensor requiring grad with grad mode on");
        }
        /* (two targets that share their values hold the last output written) */
        if (!share && co_mark() == mark) compare_with_eager(fn, &e, tgs);
    }
    drop_eager(&e);
    for (int64_t k = 0; k < nt; k++)
        if (fresh[k]) free_tensor(tg[k].h);
}

/* ag_tensor_set_data of a pool tensor: count, data pointer and dtype right or wrong; the values
 * read back are the data converted to the tensor's dtype. */
static void reuse_set_data(Rd *r) {
    H t = pick_t(r);
    uint8_t flags = u8(r);
    ag_dtype dt = flags & 1 ? AG_FLOAT32 : AG_FLOAT64;
    if (flags % 16 == 14) dt = rd_dtype(r);
    Info in;
    memset(&in, 0, sizeof in);
    if (!t.bad) in = info_of(t.h);
    int64_t count = t.bad ? 4 : in.numel;
    if (flags % 16 == 2) count = rd_i64(r);
    bool null_data = flags % 16 == 4 || (flags % 16 == 6 && count == 0);
    if (count >= 0 && count <= CAP) fill_data(r, count);
    if (!null_data && (count < 0 || count > CAP)) count = count < 0 ? count : CAP + 1; /* refused before any read */
    unsigned allowed;
    if (t.bad) allowed = M_INV | M_ARG | M_DTYPE;
    else if (!dtype_ok(dt)) allowed = M_DTYPE;
    else if (count != in.numel) allowed = M_ARG;
    else if (null_data && count > 0) allowed = M_ARG;
    else if (in.rg && (grad_on || !leaf_requiring_grad(t.h))) allowed = M_STATE;
    else allowed = M_OK | M_OOM;
    /* (a count above CAP that equals numel cannot happen: pool tensors have at most CAP elements) */
    if (count > CAP && !(allowed & M_OK)) allowed |= M_ARG;
    const void *data = null_data ? NULL : dt == AG_FLOAT32 ? (const void *)fbuf : (const void *)dbuf;
    g_op = "ag_tensor_set_data";
    TRACE("ag_tensor_set_data(%#llx, count=%lld, dtype=%d, data=%s)", (unsigned long long)t.h, (long long)count, dt,
          data ? "buf" : "NULL");
    ag_status s = expect(ag_tensor_set_data(t.h, data, count, dt), allowed, "set_data: handle, dtype, count, data, leaf, grad mode");
    if (s != AG_OK || count == 0) return;
    static double got[CAP];
    if (chk(ag_tensor_copy_data(got, CAP, AG_FLOAT64, t.h)) != AG_OK) fail("reading back after set_data");
    for (int64_t i = 0; i < count; i++) {
        double want = dt == AG_FLOAT32 ? (double)fbuf[i] : dbuf[i];
        if (in.dtype == AG_FLOAT32) want = (double)(float)want;
        if (!(got[i] == want || (isnan(got[i]) && isnan(want))))
            fail("set_data: element %lld reads %.17g, written %.17g", (long long)i, got[i], want);
    }
}

/* The notebook: a graph built while recomputable graphs are on, from a leaf copy of a pool tensor;
 * the leaf is written (set_data), the graph recomputed; its values (and, where it requires grad,
 * the gradient through it) equal, bit for bit, those of the same graph built afresh. */
static void reuse_recompute(Rd *r) {
    H x = pick_t(r);
    uint8_t nops = 1 + u8(r) % 4, ops[4], rg = bit(r);
    for (int k = 0; k < 4; k++) ops[k] = u8(r);
    if (x.bad || info_of(x.h).numel > 256) return;
    ag_tensor xc = leaf_copy(x.h, -1);
    if (!xc) return;
    owned++;
    g_op = "recompute: the graph";
    expect(ag_tensor_set_requires_grad(xc, rg && grad_on), M_OK, "requires_grad on a new leaf");
    bool prev = false;
    expect(ag_set_recomputable(&prev, true), M_OK, "set_recomputable");
    if (prev != g_recomputable) fail("ag_set_recomputable reported %d as the previous setting, set was %d", prev, g_recomputable);
    ag_tensor y[2][5];
    int built[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { /* the write, the recompute, then a fresh build (recomputable off) */
            expect(ag_set_recomputable(NULL, false), M_OK, "set_recomputable");
            Info xi = info_of(xc);
            fill_data(r, xi.numel);
            bool p2 = true;
            expect(ag_set_grad_enabled(&p2, false), M_OK, "grad mode off");
            expect(ag_tensor_set_data(xc, dbuf, xi.numel, AG_FLOAT64), M_OK | M_OOM, "set_data into a leaf (no grad)");
            expect(ag_set_grad_enabled(NULL, p2), M_OK, "grad mode back");
            g_op = "ag_recompute";
            TRACE("ag_recompute (ops %d)", nops);
            if (built[0] == 0) break;
            if (expect(ag_recompute(y[0][built[0] - 1]), M_OK | M_OOM, "recompute a recomputable graph") != AG_OK) break;
        }
        g_op = pass ? "recompute: the fresh graph" : "recompute: the graph";
        ag_tensor v = xc;
        for (int k = 0; k < nops; k++) {
            ag_tensor t = SENT;
            ag_status s;
            switch (ops[k] % 6) {
            case 0: s = ag_mul(&t, v, xc); break;
            case 1: s = ag_tanh(&t, v); break;
            case 2: s = ag_add_scalar(&t, v, 0.5); break;
            case 3: s = ag_exp(&t, v); break;
            case 4: s = ag_sum(&t, v, NULL, 0, false); break;
            default: s = ag_sub(&t, xc, v); break;
            }
            if (expect(s, M_OK | M_OOM, "an op of the recomputed graph") != AG_OK) break;
            owned++;
            y[pass][built[pass]++] = v = t;
        }
    }
    /* (without requires_grad nothing was recorded: the graph's values are constants, and
     * ag_recompute leaves them as they are) */
    if (built[1] == built[0] && built[0] > 0 && rg && grad_on) {
        g_op = "recompute against a fresh build";
        for (int k = 0; k < built[0]; k++)
            if (!same_bits(y[0][k], y[1][k])) fail("recomputed node %d differs from the same node built afresh", k);
        Info top = info_of(y[0][built[0] - 1]);
        if (top.rg && top.numel == 1) { /* the gradient through both graphs */
            ag_tensor g0 = SENT, g1 = SENT;
            if (expect(ag_grad(&g0, &y[0][built[0] - 1], 1, NULL, &xc, 1, true, false, true), M_OK | M_OOM, "grad") == AG_OK &&
                expect(ag_grad(&g1, &y[1][built[1] - 1], 1, NULL, &xc, 1, true, false, true), M_OK | M_OOM, "grad") == AG_OK &&
                g0 && g1) {
                owned += 2;
                if (!same_bits(g0, g1)) fail("the gradient through a recomputed graph differs from a fresh graph's");
                owned -= 2;
            }
            if (g0 != SENT && g0) chk(ag_tensor_free(g0));
            if (g1 != SENT && g1) chk(ag_tensor_free(g1));
        }
    }
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < built[pass]; k++) free_tensor(y[pass][k]);
    free_tensor(xc);
    expect(ag_set_recomputable(NULL, g_recomputable), M_OK, "set_recomputable back");
}

static void op_reuse(Rd *r) {
    uint8_t which = u8(r) % 9;
    switch (which) {
    case 0:
    case 1: reuse_capture(r); break;
    case 2: reuse_call(r, false); break;
    case 3: reuse_call(r, true); break;
    case 4: reuse_set_data(r); break;
    case 5: reuse_recompute(r); break;
    case 6: { /* recomputable graphs on or off, and ag_recompute of any pool tensor */
        bool on = bit(r), prev = !on;
        g_op = "ag_set_recomputable";
        expect(ag_set_recomputable(bit(r) ? &prev : NULL, on), M_OK, "set_recomputable");
        g_recomputable = on;
        H t = pick_t(r);
        g_op = "ag_recompute";
        TRACE("ag_set_recomputable(%d); ag_recompute(%#llx)", on, (unsigned long long)t.h);
        uint64_t mark = co_mark();
        ag_status rs = chk(ag_recompute(t.h));
        expect(rs, t.bad ? M_INV : M_OK | M_STATE | M_OOM | co_loose(mark), "recompute of a pool tensor");
        break;
    }
    case 7: { /* ag_function_info with any capacity */
        H f = pick_f(r);
        int64_t cap = bit(r) ? rd_i64(r) : u8(r) % 12;
        bool null_out = u8(r) < 16;
        int64_t buf[16];
        for (int i = 0; i < 16; i++) buf[i] = (int64_t)0x5E5E5E5E5E5E5E5Eull;
        bool arg_bad = cap < 0 || (null_out && cap > 0);
        if (cap > 16 && !null_out) cap = 16 + (cap & 1) * 0; /* the buffer's size */
        g_op = "ag_function_info";
        TRACE("ag_function_info(f=%#llx, capacity=%lld%s)", (unsigned long long)f.h, (long long)cap, null_out ? ", NULL" : "");
        ag_status s = expect(ag_function_info(null_out ? NULL : buf, cap, f.h),
                             arg_bad ? M_ARG | (f.bad ? M_INV : 0) : f.bad ? M_INV : M_OK, "function_info");
        int64_t wrote = s == AG_OK && !null_out ? (cap < AG_FUNCTION_INFO_COUNT ? cap : AG_FUNCTION_INFO_COUNT) : 0;
        for (int i = 0; i < 16; i++) {
            bool sent = buf[i] == (int64_t)0x5E5E5E5E5E5E5E5Eull;
            if (i >= wrote && !sent) fail("ag_function_info wrote out[%d] (capacity %lld, status %s)", i, (long long)cap, ag_status_name(s));
            if (i < wrote && (sent || buf[i] < 0)) fail("ag_function_info: out[%d] = %lld", i, (long long)buf[i]);
        }
        if (wrote >= 5 && (buf[1] > buf[0] || buf[4] > buf[0])) fail("ag_function_info: more live or fused steps than steps");
        break;
    }
    default: { /* free a function (twice, a bad one), and a function handle where a tensor is wanted */
        H f = pick_f(r);
        g_op = "ag_function_free";
        if (!f.bad) {
            for (int i = 0; i < NF; i++)
                if (fns[i].f == f.h) free_fn(i);
            expect(ag_function_free(f.h), M_INV, "a function freed twice");
        } else {
            expect(ag_function_free(f.h), f.h == 0 ? M_OK : M_INV, "free a bad function handle");
        }
        for (int i = 0; i < NF; i++) {
            if (!fns[i].f) continue;
            int64_t n = 0;
            ag_tensor o = SENT;
            g_op = "a function handle where a tensor is wanted";
            expect(ag_tensor_numel(&n, fns[i].f), M_INV, "numel of a function handle");
            expect(ag_exp(&o, fns[i].f), M_INV, "exp of a function handle");
            expect(ag_tensor_free(fns[i].f), M_INV, "ag_tensor_free of a function handle");
            if (o != SENT) fail("ag_exp of a function handle wrote its output");
            break;
        }
        break;
    }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* User-defined ops (issue 17)                                                                */
/* ------------------------------------------------------------------------------------------ */

/*
 * A custom op here computes a small program the input chose (up to CO_STEPS elementwise,
 * broadcasting and reduction steps on its inputs) in its forward; its backward is the program's
 * vector-Jacobian product written with library ops on the saved inputs (a reverse sweep, so
 * create_graph records it), its JVP the program's forward-mode sweep. Each callback may break its
 * contract in a way the input chose, from its Nth call on (so a capture can succeed and its replay
 * fail): a non-zero status, no handle, a freed or made-up handle, a handle of another kind, the
 * wrong shape or dtype, freeing what it was given, writing a handle it was given, the same handle
 * twice, keeping its context for later. Every callback works out, from what it is about to write,
 * whether that breaks the header's contract (g_co_breaks: the call that ran it must then be
 * AG_ERR_CALLBACK) or only deviates legally (g_co_devs: another output shape, no gradient, an
 * identity: replays and recomputes may then refuse it). The statuses are checked against that
 * model; values and gradients against the same program run with catalogue ops.
 */
enum {
    NCO = 3,                         /* custom op slots */
    CO_IN = 3,                       /* inputs of an op, at most */
    CO_OUT = 2,                      /* outputs */
    CO_STEPS = 4,                    /* program steps */
    CO_REG = CO_IN + CO_STEPS,       /* registers: inputs, then step results */
    CO_LIVE = 64,                    /* payloads alive at once (more: no new op) */
};
enum { CS_ADD, CS_SUB, CS_MUL, CS_TANH, CS_SIN, CS_NEG, CS_SCALE, CS_SUM, CS_COUNT };
/* How a callback behaves (CB_OK keeps the contract; so do CB_SET_ERROR_OK and CB_KEEP_CTX). */
enum {
    CB_OK, CB_STATUS, CB_NO_HANDLE, CB_FREED_HANDLE, CB_MADE_UP, CB_OTHER_KIND, CB_WRONG_SHAPE, CB_WRONG_DTYPE,
    CB_FREES_BORROWED, CB_IDENTITY, CB_DUP, CB_SET_ERROR_OK, CB_KEEP_CTX, CB_COUNT
};
enum { CF_FORWARD, CF_BACKWARD, CF_JVP };
static const char *const k_cf_names[3] = {"forward", "backward", "JVP"};

typedef struct {
    uint8_t kind, a, b;
    double s;
} CoStep;

#define CO_MAGIC 0xC05707u
typedef struct {
    uint32_t magic;
    int nin, nout, nsteps;
    CoStep steps[CO_STEPS];
    uint8_t outsel[CO_OUT];
    bool has_bwd, has_jvp;
    bool save_out, save_inter; /* the forward saves its outputs / its first intermediate too */
    bool reduce;               /* the backward sums gradients back to the input's shape itself */
    bool destroyable;          /* made with a destroy callback (else the program frees it at the end) */
    bool ctx_checks;           /* its callbacks try the context's refusals (bad indices, NULLs) too */
    uint8_t mode[3], from[3], which[3], arg[3];
    int calls[3];
    ag_custom_op h;   /* its handle, while the program holds it (0 after) */
    bool recorded;    /* a graph or a captured function may hold the op (destroy may wait) */
    bool escaped;     /* recorded in a graph of the pool (which may outlive any check) */
    bool last_needs[CO_IN]; /* what the backward's last call was told by needs_input_grad */
    Info last[CO_OUT]; /* what the forward's last call wrote (for the JVP right after it) */
    bool last_ok;
} CoUd;

static ag_custom_op cops[NCO];
static CoUd *coud[NCO];
static CoUd *g_co_live[CO_LIVE]; /* payloads whose destroy has not run */
static int g_nco_live;
static CoUd *g_co_kept[CO_LIVE]; /* payloads without destroy, freed at the end */
static int g_nco_kept;
static uint64_t g_co_breaks, g_co_devs; /* callbacks that broke the contract / deviated legally */
static uint64_t g_co_calls;
static ag_custom_ctx g_kept_ctx; /* a context kept by a callback (dead once it returned) */
static const bool *g_co_needs;   /* what the next forward must answer for needs_input_grad */

/* M_CB if a custom callback broke or deviated since `mark` (a replay, a recompute or a backward
 * through a graph of the pool may then fail with AG_ERR_CALLBACK). */
static uint64_t co_mark(void) { return g_co_breaks + g_co_devs; }
static unsigned co_loose(uint64_t mark) { return co_mark() != mark ? M_CB : 0; }

static int co_find_live(const CoUd *u) {
    for (int i = 0; i < g_nco_live; i++)
        if (g_co_live[i] == u) return i;
    return -1;
}
static bool co_known(const CoUd *u) {
    if (co_find_live(u) >= 0) return true;
    for (int i = 0; i < g_nco_kept; i++)
        if (g_co_kept[i] == u) return true;
    return false;
}

static void co_destroy(void *p) {
    CoUd *u = p;
    int i = co_find_live(u);
    if (i < 0) fail("custom op destroy called with a payload that is not live (twice, or a bad pointer)");
    if (u->magic != CO_MAGIC) fail("custom op destroy: bad magic");
    if (u->h) fail("custom op destroy ran while the program still holds the op's handle %#llx", (unsigned long long)u->h);
    TRACE("    (custom op destroy %p)", p);
    g_co_live[i] = g_co_live[--g_nco_live];
    u->magic = 0xDEAD;
    free(u);
}

static CoUd *co_ud(void *p, int cf) {
    CoUd *u = p;
    if (!u || !co_known(u) || u->magic != CO_MAGIC)
        fail("a custom op's %s ran with a payload that is destroyed or bad", k_cf_names[cf]);
    return u;
}

/* The behaviour of callback cf on this call: its mode from its from-th call on. */
static uint8_t co_mode(CoUd *u, int cf) {
    u->calls[cf]++;
    g_co_calls++;
    return u->calls[cf] >= u->from[cf] ? u->mode[cf] : CB_OK;
}

static bool co_reduces(const Info *g, const Info *x) {
    int64_t lead = g->nd - x->nd;
    if (lead < 0) return false;
    for (int64_t i = 0; i < x->nd; i++)
        if (x->shape[i] != g->shape[i + lead] && x->shape[i] != 1) return false;
    return true;
}
static bool same_info(const Info *a, const Info *b) {
    if (a->nd != b->nd || a->dtype != b->dtype) return false;
    for (int64_t i = 0; i < a->nd; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* Whether h is a live tensor handle (its Info in *in). */
static bool co_live_tensor(ag_tensor h, Info *in) {
    if (h == 0) return false;
    int64_t nd = 0;
    ag_status s = chk(ag_tensor_ndim(&nd, h));
    if (s != AG_OK) {
        if (s != AG_ERR_INVALID_HANDLE) fail("ag_tensor_ndim of a handle a callback writes: %s", ag_status_name(s));
        return false;
    }
    if (in) *in = info_of(h);
    return true;
}

/* The program's registers: the inputs (borrowed), then the steps' results (made here). */
typedef struct {
    ag_tensor r[CO_REG];
    bool mine[CO_REG];
    int n;
} CoRegs;

static ag_status co_step(const CoStep *st, ag_tensor a, ag_tensor b, ag_tensor *t) {
    switch (st->kind % CS_COUNT) {
    case CS_ADD: return ag_add(t, a, b);
    case CS_SUB: return ag_sub(t, a, b);
    case CS_MUL: return ag_mul(t, a, b);
    case CS_TANH: return ag_tanh(t, a);
    case CS_SIN: return ag_sin(t, a);
    case CS_NEG: return ag_neg(t, a);
    case CS_SCALE: return ag_mul_scalar(t, a, st->s);
    default: return ag_sum(t, a, NULL, 0, false);
    }
}

static void co_free_regs(CoRegs *R) {
    for (int i = 0; i < R->n; i++)
        if (R->mine[i] && R->r[i]) chk(ag_tensor_free(R->r[i]));
    R->n = 0;
}

/* Runs the program on `in` (nin borrowed handles). On failure nothing is left made. */
static ag_status co_run(const CoUd *u, const ag_tensor *in, CoRegs *R) {
    memset(R, 0, sizeof *R);
    for (int i = 0; i < u->nin; i++) R->r[R->n++] = in[i];
    for (int k = 0; k < u->nsteps; k++) {
        const CoStep *st = &u->steps[k];
        ag_tensor t = SENT;
        ag_status s = chk(co_step(st, R->r[st->a % R->n], R->r[st->b % R->n], &t));
        if (s != AG_OK) {
            if (t != SENT) fail("%s: a failed op wrote its output", g_op);
            co_free_regs(R);
            return s;
        }
        R->mine[R->n] = true;
        R->r[R->n++] = t;
    }
    return AG_OK;
}
static int co_out_reg(const CoUd *u, const CoRegs *R, int k) { return u->outsel[k] % R->n; }

/* A fresh tensor of the shape of `like` (or `shape`) and a dtype, zeros; 0 on OOM. */
static ag_tensor co_zeros(const int64_t *shape, int64_t nd, ag_dtype dt) {
    ag_tensor t = SENT;
    if (expect(ag_tensor_zeros(&t, shape, nd, dt), M_OK | M_OOM, "zeros in a callback") != AG_OK) return 0;
    return t;
}

/* t summed back to x's shape (the reduction broadcasting undoes); *out = t when nothing to do. */
static ag_status co_reduce_to(ag_tensor t, const Info *x, ag_tensor *out) {
    Info ti = info_of(t);
    int64_t lead = ti.nd - x->nd, axes[MAXS], na = 0;
    if (lead < 0) fail("co_reduce_to: a gradient of rank %lld for an input of rank %lld", (long long)ti.nd, (long long)x->nd);
    for (int64_t i = 0; i < lead; i++) axes[na++] = i;
    for (int64_t i = 0; i < x->nd; i++)
        if (x->shape[i] == 1 && ti.shape[lead + i] != 1) axes[na++] = lead + i;
    if (na == 0) {
        *out = t;
        return AG_OK;
    }
    ag_tensor sm = SENT;
    ag_status s = expect(ag_sum(&sm, t, axes, na, true), M_OK | M_OOM, "sum back to an input's shape");
    if (s != AG_OK) return s;
    s = expect(ag_reshape(out, sm, x->shape, x->nd), M_OK | M_OOM, "reshape to an input's shape");
    chk(ag_tensor_free(sm));
    return s;
}

/* G[i] += t (t is taken over: owned). Inputs keep a broadcast shape when !reduce and the shapes
 * agree; otherwise both sides are summed back to register i's shape first. */
static ag_status co_acc(ag_tensor *G, bool *own, int i, ag_tensor t, const Info *ri, bool keep_broadcast) {
    ag_status s = AG_OK;
    Info ti = info_of(t), gi;
    if (G[i]) gi = info_of(G[i]);
    if (!keep_broadcast || (G[i] && !same_info(&ti, &gi))) {
        ag_tensor rt = SENT;
        if ((s = co_reduce_to(t, ri, &rt)) != AG_OK) {
            chk(ag_tensor_free(t));
            return s;
        }
        if (rt != t) chk(ag_tensor_free(t));
        t = rt;
        if (G[i] && !same_info(ri, &gi)) {
            ag_tensor rg = SENT;
            if ((s = co_reduce_to(G[i], ri, &rg)) != AG_OK) {
                chk(ag_tensor_free(t));
                return s;
            }
            if (rg != G[i]) {
                if (own[i]) chk(ag_tensor_free(G[i]));
                G[i] = rg;
                own[i] = true;
            }
        }
    }
    if (!G[i]) {
        G[i] = t;
        own[i] = true;
        return AG_OK;
    }
    ag_tensor sum = SENT;
    s = expect(ag_add(&sum, G[i], t), M_OK | M_OOM, "accumulating a gradient");
    chk(ag_tensor_free(t));
    if (s != AG_OK) return s;
    if (own[i]) chk(ag_tensor_free(G[i]));
    G[i] = sum;
    own[i] = true;
    return AG_OK;
}

/* The vector-Jacobian product of the program at x (registers recomputed from x: the backward's
 * ops are recorded where a create_graph pass turns grad mode on); gout[k] the gradient of output
 * k; ys[k] (or 0) the saved output k, used for tanh's derivative where that output is a tanh.
 * gin[i]: a new handle, the gradient of input i (or one of gout's, borrowed, or 0 for none). */
static ag_status co_vjp(const CoUd *u, const ag_tensor *x, const ag_tensor *gout, const ag_tensor *ys, ag_tensor *gin,
                        bool *gin_own) {
    CoRegs R;
    ag_status s = co_run(u, x, &R);
    if (s != AG_OK) return s;
    ag_tensor G[CO_REG] = {0};
    bool own[CO_REG] = {false};
    Info ri[CO_REG];
    for (int j = 0; j < R.n; j++) ri[j] = info_of(R.r[j]);
    for (int k = 0; k < u->nout && s == AG_OK; k++) {
        int j = co_out_reg(u, &R, k);
        if (!G[j]) {
            G[j] = gout[k]; /* borrowed */
            own[j] = false;
        } else {
            ag_tensor t = SENT;
            s = expect(ag_mul_scalar(&t, gout[k], 1.0), M_OK | M_OOM, "copy of an output gradient");
            if (s == AG_OK) s = co_acc(G, own, j, t, &ri[j], true);
        }
    }
    for (int k = u->nsteps - 1; k >= 0 && s == AG_OK; k--) {
        int j = u->nin + k;
        if (!G[j]) continue;
        const CoStep *st = &u->steps[k];
        int ia = st->a % j, ib = st->b % j;
        ag_tensor g = G[j], a = R.r[ia], b = R.r[ib], t1 = SENT, t2 = SENT, tmp = SENT, tmp2 = SENT;
        bool ka = ia < u->nin && !u->reduce, kb = ib < u->nin && !u->reduce;
        switch (st->kind % CS_COUNT) {
        case CS_ADD:
        case CS_SUB:
            s = expect(ag_mul_scalar(&t1, g, 1.0), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            if (s == AG_OK) s = expect(ag_mul_scalar(&t2, g, st->kind % CS_COUNT == CS_ADD ? 1.0 : -1.0), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ib, t2, &ri[ib], kb);
            break;
        case CS_MUL:
            s = expect(ag_mul(&t1, g, b), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            if (s == AG_OK) s = expect(ag_mul(&t2, g, a), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ib, t2, &ri[ib], kb);
            break;
        case CS_TANH: { /* g (1 - y^2), y the saved output where this step is one */
            ag_tensor y = R.r[j];
            for (int q = 0; q < u->nout; q++)
                if (ys && ys[q] && co_out_reg(u, &R, q) == j) y = ys[q];
            s = expect(ag_mul(&tmp, y, y), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = expect(ag_rsub_scalar(&tmp2, tmp, 1.0), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = expect(ag_mul(&t1, g, tmp2), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            break;
        }
        case CS_SIN:
            s = expect(ag_cos(&tmp, a), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = expect(ag_mul(&t1, g, tmp), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            break;
        case CS_NEG:
            s = expect(ag_neg(&t1, g), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            break;
        case CS_SCALE:
            s = expect(ag_mul_scalar(&t1, g, st->s), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            break;
        default:
            s = expect(ag_expand(&t1, g, ri[ia].shape, ri[ia].nd), M_OK | M_OOM, "vjp");
            if (s == AG_OK) s = co_acc(G, own, ia, t1, &ri[ia], ka);
            break;
        }
        if (tmp != SENT) chk(ag_tensor_free(tmp));
        if (tmp2 != SENT) chk(ag_tensor_free(tmp2));
    }
    for (int j = u->nin; j < R.n; j++)
        if (G[j] && own[j]) chk(ag_tensor_free(G[j]));
    for (int i = 0; i < u->nin; i++) {
        if (s == AG_OK) {
            gin[i] = G[i];
            gin_own[i] = own[i];
        } else if (G[i] && own[i]) {
            chk(ag_tensor_free(G[i]));
        }
    }
    co_free_regs(&R);
    return s;
}

/* The program's forward-mode sweep at x along tx (0: no tangent): tout[k] the tangent of output
 * k, expanded to its shape (0 for none; possibly one of tx, borrowed). */
static ag_status co_jvp_sweep(const CoUd *u, const ag_tensor *x, const ag_tensor *tx, ag_tensor *tout, bool *tout_own) {
    CoRegs R;
    ag_status s = co_run(u, x, &R);
    if (s != AG_OK) return s;
    ag_tensor T[CO_REG] = {0};
    bool own[CO_REG] = {false};
    for (int i = 0; i < u->nin; i++) T[i] = tx[i];
    for (int k = 0; k < u->nsteps && s == AG_OK; k++) {
        int j = u->nin + k;
        const CoStep *st = &u->steps[k];
        int ia = st->a % j, ib = st->b % j;
        ag_tensor ta = T[ia], tb = T[ib], a = R.r[ia], b = R.r[ib], t = 0, p = SENT, q = SENT, tmp = SENT, tmp2 = SENT;
        switch (st->kind % CS_COUNT) {
        case CS_ADD:
        case CS_SUB: {
            bool sub = st->kind % CS_COUNT == CS_SUB;
            if (ta && tb) s = expect(sub ? ag_sub(&p, ta, tb) : ag_add(&p, ta, tb), M_OK | M_OOM, "jvp");
            else if (ta) s = expect(ag_mul_scalar(&p, ta, 1.0), M_OK | M_OOM, "jvp");
            else if (tb) s = expect(ag_mul_scalar(&p, tb, sub ? -1.0 : 1.0), M_OK | M_OOM, "jvp");
            if (p != SENT && s == AG_OK) t = p;
            break;
        }
        case CS_MUL:
            if (ta) s = expect(ag_mul(&p, ta, b), M_OK | M_OOM, "jvp");
            if (tb && s == AG_OK) s = expect(ag_mul(&q, a, tb), M_OK | M_OOM, "jvp");
            if (s == AG_OK && p != SENT && q != SENT) s = expect(ag_add(&t, p, q), M_OK | M_OOM, "jvp");
            else if (s == AG_OK) t = p != SENT ? p : q != SENT ? q : 0, p = q = SENT;
            break;
        case CS_TANH:
            if (!ta) break;
            s = expect(ag_mul(&tmp, R.r[j], R.r[j]), M_OK | M_OOM, "jvp");
            if (s == AG_OK) s = expect(ag_rsub_scalar(&tmp2, tmp, 1.0), M_OK | M_OOM, "jvp");
            if (s == AG_OK) s = expect(ag_mul(&t, ta, tmp2), M_OK | M_OOM, "jvp");
            break;
        case CS_SIN:
            if (!ta) break;
            s = expect(ag_cos(&tmp, a), M_OK | M_OOM, "jvp");
            if (s == AG_OK) s = expect(ag_mul(&t, ta, tmp), M_OK | M_OOM, "jvp");
            break;
        case CS_NEG:
            if (ta) s = expect(ag_neg(&t, ta), M_OK | M_OOM, "jvp");
            break;
        case CS_SCALE:
            if (ta) s = expect(ag_mul_scalar(&t, ta, st->s), M_OK | M_OOM, "jvp");
            break;
        default:
            if (ta) s = expect(ag_sum(&t, ta, NULL, 0, false), M_OK | M_OOM, "jvp");
            break;
        }
        if (t == SENT) t = 0;
        if (p != SENT && p != t) chk(ag_tensor_free(p));
        if (q != SENT && q != t) chk(ag_tensor_free(q));
        if (tmp != SENT) chk(ag_tensor_free(tmp));
        if (tmp2 != SENT) chk(ag_tensor_free(tmp2));
        if (s == AG_OK && t) { /* to the step's shape (an add of a smaller tangent) */
            Info ti = info_of(t), rj = info_of(R.r[j]);
            if (!same_info(&ti, &rj)) {
                ag_tensor e = SENT;
                s = expect(ag_expand(&e, t, rj.shape, rj.nd), M_OK | M_OOM, "jvp: expand to the step's shape");
                chk(ag_tensor_free(t));
                t = s == AG_OK ? e : 0;
            }
        }
        T[j] = t;
        own[j] = t != 0;
    }
    for (int k = 0; k < u->nout; k++) {
        int j = co_out_reg(u, &R, k);
        tout[k] = s == AG_OK ? T[j] : 0;
        tout_own[k] = false;
        if (s == AG_OK && own[j]) { /* handed out: the first slot owns it */
            tout_own[k] = true;
            own[j] = false;
        }
    }
    for (int j = 0; j < R.n; j++)
        if (own[j] && T[j]) chk(ag_tensor_free(T[j]));
    co_free_regs(&R);
    return s;
}

/* Results a callback is about to write: res[k] (own[k]: made by it, freed if replaced). */
typedef struct {
    ag_tensor res[CO_REG];
    bool own[CO_REG];
    int n;
    bool freed_borrowed;
    int32_t ret;
} CoOut;

/* Replaces slot w (freeing what it held if made here and held by no other slot). */
static void co_put(CoOut *o, int w, ag_tensor h, bool own) {
    if (o->res[w] && o->own[w]) {
        bool shared = false;
        for (int k = 0; k < o->n; k++) shared = shared || (k != w && o->res[k] == o->res[w]);
        if (shared) { /* another slot keeps it: hand ownership there */
            for (int k = 0; k < o->n; k++)
                if (k != w && o->res[k] == o->res[w]) o->own[k] = true;
        } else {
            chk(ag_tensor_free(o->res[w]));
        }
    }
    o->res[w] = h;
    o->own[w] = own;
}

static void co_release_all(CoOut *o) {
    for (int w = 0; w < o->n; w++) co_put(o, w, 0, false);
}

/* The misbehaviour `mode` on results o (slot from u->which, given handles `given`). */
static void co_misbehave(CoUd *u, int cf, uint8_t mode, CoOut *o, const ag_tensor *given, int ngiven, ag_custom_ctx ctx,
                         const Info *slot_info) {
    int w = u->which[cf] % o->n;
    uint8_t arg = u->arg[cf];
    switch (mode) {
    case CB_STATUS: {
        static const int32_t codes[] = {1, -1, 7, INT32_MIN, INT32_MAX, 2};
        o->ret = codes[arg % 6];
        if (arg & 8) ag_set_error("fuzz: the callback failed on purpose");
        if (arg & 16) co_release_all(o); /* else it writes them anyway: the library frees them */
        break;
    }
    case CB_NO_HANDLE: co_put(o, w, 0, false); break;
    case CB_FREED_HANDLE: {
        int64_t one = 1;
        ag_tensor t = co_zeros(&one, 1, AG_FLOAT64);
        if (t) {
            chk(ag_tensor_free(t));
            co_put(o, w, t, false);
        }
        break;
    }
    case CB_MADE_UP: co_put(o, w, made_up(&(Rd){&arg, 1, 0}), false); break;
    case CB_OTHER_KIND: co_put(o, w, (arg & 1) && u->h ? u->h : ctx, false); break;
    case CB_WRONG_SHAPE: {
        int64_t n = slot_info[w].numel + 2;
        ag_tensor t = co_zeros(&n, 1, slot_info[w].dtype);
        if (cf == CF_FORWARD && o->res[w]) { /* the forward may return any shape: its sum */
            ag_tensor sm = SENT;
            if (expect(ag_sum(&sm, o->res[w], NULL, 0, false), M_OK | M_OOM, "sum") == AG_OK) {
                if (t) chk(ag_tensor_free(t));
                t = sm;
            }
        }
        if (t) co_put(o, w, t, true);
        break;
    }
    case CB_WRONG_DTYPE: {
        ag_tensor t = co_zeros(slot_info[w].shape, slot_info[w].nd, slot_info[w].dtype == AG_FLOAT32 ? AG_FLOAT64 : AG_FLOAT32);
        if (t) co_put(o, w, t, true);
        break;
    }
    case CB_FREES_BORROWED:
        if (ngiven > 0 && given[arg % ngiven]) {
            TRACE("    (the %s frees its borrowed handle %d)", k_cf_names[cf], arg % ngiven);
            chk(ag_tensor_free(given[arg % ngiven]));
            o->freed_borrowed = true;
        }
        break;
    case CB_IDENTITY:
        if (ngiven > 0) co_put(o, w, given[arg % ngiven], false);
        break;
    case CB_DUP:
        if (o->n > 1) co_put(o, (w + 1) % o->n, o->res[w], false);
        break;
    case CB_SET_ERROR_OK: ag_set_error("fuzz: a message set by a callback that then succeeds"); break;
    case CB_KEEP_CTX: g_kept_ctx = ctx; break;
    default: break;
    }
}

/* Context checks every callback makes: the saved count, and arguments that must be refused. */
static void co_ctx_checks(const CoUd *u, int cf, ag_custom_ctx ctx, int64_t want_saved) {
    int64_t n = -1;
    expect(ag_custom_ctx_saved_count(&n, ctx), M_OK, "saved_count in a callback");
    if (n != want_saved) fail("the %s sees %lld saved tensors, %lld were saved", k_cf_names[cf], (long long)n, (long long)want_saved);
    if (!u->ctx_checks) return;
    expect(ag_custom_ctx_saved_count(NULL, ctx), M_ARG, "saved_count(NULL)");
    bool b = false;
    expect(ag_custom_ctx_needs_input_grad(&b, ctx, u->nin), M_ARG, "needs_input_grad past the inputs");
    expect(ag_custom_ctx_needs_input_grad(&b, ctx, -1), M_ARG, "needs_input_grad(-1)");
    expect(ag_custom_ctx_needs_input_grad(NULL, ctx, 0), M_ARG, "needs_input_grad(NULL)");
    ag_tensor t = SENT;
    expect(ag_custom_ctx_saved(&t, ctx, n), M_ARG, "saved past the count");
    expect(ag_custom_ctx_saved(NULL, ctx, 0), M_ARG, "saved(NULL)");
    if (t != SENT) fail("a refused ag_custom_ctx_saved wrote its output");
    expect(ag_custom_ctx_save(ctx, NULL, 1), M_ARG, "save(NULL, 1)");
    if (cf != CF_FORWARD) {
        int64_t one = 1;
        ag_tensor z = co_zeros(&one, 1, AG_FLOAT64);
        if (z) {
            expect(ag_custom_ctx_save(ctx, &z, 1), M_STATE, "save outside the forward");
            chk(ag_tensor_free(z));
        }
    }
    expect(ag_custom_ctx_saved_count(&n, ctx ^ ((uint64_t)1 << 33)), M_INV, "a context handle of another generation");
}

/* Whether a callback in this mode may do something a replay or a recompute refuses (the modes
 * that only set a message or keep the context change nothing the library sees). */
static bool co_deviates(uint8_t mode) { return mode != CB_OK && mode != CB_SET_ERROR_OK && mode != CB_KEEP_CTX; }

static int64_t co_saved_count(const CoUd *u) { return u->nin + (u->save_out ? u->nout : 0) + (u->save_inter && u->nsteps ? 1 : 0); }

/* Writes o's results to out[0 .. o->n - 1] and counts the verdict. */
static int32_t co_finish(CoOut *o, ag_tensor *out, bool broke, bool deviated, const char *cf) {
    for (int k = 0; k < o->n; k++) out[k] = o->res[k];
    broke = broke || o->ret != 0 || o->freed_borrowed;
    if (broke) {
        g_co_breaks++;
        TRACE("    (the %s breaks its contract: the call that ran it must be AG_ERR_CALLBACK)", cf);
    } else if (deviated) {
        g_co_devs++;
        TRACE("    (the %s deviates, within its contract)", cf);
    }
    return o->ret;
}

static int32_t co_forward(ag_tensor *out, int64_t m, const ag_tensor *in, int64_t n, ag_custom_ctx ctx, void *p) {
    CoUd *u = co_ud(p, CF_FORWARD);
    if (!out || !in || m != u->nout || n != u->nin) fail("a custom op's forward got %lld inputs and %lld outputs", (long long)n, (long long)m);
    const char *saved_op = g_op;
    g_op = "custom op forward";
    uint8_t mode = co_mode(u, CF_FORWARD);
    const bool *needs = g_co_needs;
    g_co_needs = NULL;
    TRACE("    custom forward (call %d, mode %d)", u->calls[CF_FORWARD], mode);
    u->last_ok = false;
    co_ctx_checks(u, CF_FORWARD, ctx, 0);
    for (int k = 0; k < u->nin; k++) {
        bool b = false;
        expect(ag_custom_ctx_needs_input_grad(&b, ctx, k), M_OK, "needs_input_grad");
        if (needs && b != needs[k]) fail("needs_input_grad(%d) is %d in the forward, expected %d", k, b, needs[k]);
    }
    CoOut o;
    memset(&o, 0, sizeof o);
    o.n = u->nout;
    CoRegs R;
    if (co_run(u, in, &R) != AG_OK) { /* the program cannot run on these inputs: a failure */
        g_co_breaks++;
        TRACE("    (the forward's program failed: the call must be AG_ERR_CALLBACK)");
        g_op = saved_op;
        return 1;
    }
    Info prog[CO_OUT];
    for (int k = 0; k < u->nout; k++) {
        int j = co_out_reg(u, &R, k);
        o.res[k] = R.r[j];
        prog[k] = info_of(R.r[j]);
    }
    /* Saved: the inputs, the outputs, the first intermediate (the library keeps its own). */
    bool saved_ok = expect(ag_custom_ctx_save(ctx, in, n), M_OK | M_OOM, "save the inputs") == AG_OK;
    if (saved_ok && u->save_out) saved_ok = expect(ag_custom_ctx_save(ctx, o.res, u->nout), M_OK | M_OOM, "save the outputs") == AG_OK;
    if (saved_ok && u->save_inter && u->nsteps)
        saved_ok = expect(ag_custom_ctx_save(ctx, &R.r[u->nin], 1), M_OK | M_OOM, "save an intermediate") == AG_OK;
    if (u->ctx_checks) {
        ag_tensor bad = made_up(&(Rd){(const uint8_t *)"\x01", 1, 0});
        expect(ag_custom_ctx_save(ctx, &bad, 1), M_INV, "save a made-up handle");
        expect(ag_custom_ctx_save(ctx, in, 0), M_ARG, "save n = 0");
    }
    if (saved_ok) {
        int64_t cnt = -1;
        expect(ag_custom_ctx_saved_count(&cnt, ctx), M_OK, "saved_count");
        if (cnt != co_saved_count(u)) fail("saved_count %lld after saving %lld", (long long)cnt, (long long)co_saved_count(u));
        ag_tensor s0 = SENT;
        if (expect(ag_custom_ctx_saved(&s0, ctx, 0), M_OK | M_OOM, "saved(0) in the forward") == AG_OK) {
            if (s0 == in[0] || s0 == SENT) fail("ag_custom_ctx_saved gave the borrowed handle itself, not a new one");
            chk(ag_tensor_free(s0));
        }
    }
    /* the registers the outputs use stay; the rest go */
    for (int j = 0; j < R.n; j++) {
        bool used = false;
        for (int k = 0; k < u->nout; k++)
            if (co_out_reg(u, &R, k) == j) used = true;
        if (R.mine[j] && !used) chk(ag_tensor_free(R.r[j]));
    }
    for (int k = 0; k < u->nout; k++) { /* ownership: the first slot holding a register made here */
        int j = co_out_reg(u, &R, k);
        o.own[k] = R.mine[j];
        R.mine[j] = false;
    }
    if (!saved_ok) {
        co_release_all(&o);
        g_co_breaks++;
        g_op = saved_op;
        return 1;
    }
    co_misbehave(u, CF_FORWARD, mode, &o, in, (int)n, ctx, prog);
    /* The verdict, from what it writes (the header's contract): every slot a live tensor, the
     * outputs of one dtype. Another shape or dtype than the program's is a legal deviation. */
    bool broke = false, dev = false;
    for (int k = 0; k < u->nout; k++) {
        Info in_k;
        if (!co_live_tensor(o.res[k], &in_k)) {
            broke = true;
            continue;
        }
        u->last[k] = in_k;
        if (!same_info(&in_k, &prog[k])) dev = true;
    }
    if (!broke && u->nout == 2 && u->last[0].dtype != u->last[1].dtype) broke = true;
    u->last_ok = !broke && o.ret == 0 && !o.freed_borrowed;
    int32_t ret = co_finish(&o, out, broke, dev || co_deviates(mode), "forward");
    g_op = saved_op;
    return ret;
}

static int32_t co_backward(ag_tensor *gin, int64_t n, const ag_tensor *gout, int64_t m, ag_custom_ctx ctx, void *p) {
    CoUd *u = co_ud(p, CF_BACKWARD);
    if (!gin || !gout || m != u->nout || n != u->nin) fail("a custom op's backward got %lld gradients for %lld inputs", (long long)m, (long long)n);
    const char *saved_op = g_op;
    g_op = "custom op backward";
    uint8_t mode = co_mode(u, CF_BACKWARD);
    TRACE("    custom backward (call %d, mode %d)", u->calls[CF_BACKWARD], mode);
    co_ctx_checks(u, CF_BACKWARD, ctx, co_saved_count(u));
    bool needs[CO_IN];
    ag_tensor x[CO_IN] = {0}, ys[CO_OUT] = {0};
    Info xi[CO_IN];
    ag_status s = AG_OK;
    for (int k = 0; k < u->nin && s == AG_OK; k++) {
        expect(ag_custom_ctx_needs_input_grad(&needs[k], ctx, k), M_OK, "needs_input_grad");
        s = expect(ag_custom_ctx_saved(&x[k], ctx, k), M_OK | M_OOM, "a saved input");
        u->last_needs[k] = needs[k];
        if (s == AG_OK) {
            xi[k] = info_of(x[k]);
        } else {
            x[k] = 0;
        }
    }
    for (int k = 0; u->save_out && k < u->nout && s == AG_OK; k++) {
        s = expect(ag_custom_ctx_saved(&ys[k], ctx, u->nin + k), M_OK | M_OOM, "a saved output");
        if (s != AG_OK) ys[k] = 0;
    }
    CoOut o;
    memset(&o, 0, sizeof o);
    o.n = u->nin;
    bool dev = false;
    /* the output gradients: live, one per output; if their shapes are not the program's (the
     * forward deviated) the backward gives no gradient at all, which the contract allows */
    bool match = s == AG_OK;
    if (s == AG_OK) {
        CoRegs R;
        s = co_run(u, x, &R);
        for (int k = 0; k < u->nout && s == AG_OK; k++) {
            Info gi;
            if (!co_live_tensor(gout[k], &gi)) fail("the backward's output gradient %d is not a live tensor", k);
            Info pk = info_of(R.r[co_out_reg(u, &R, k)]);
            if (!same_info(&gi, &pk)) match = false;
        }
        if (s == AG_OK) co_free_regs(&R);
    }
    if (s == AG_OK && match) {
        bool own[CO_IN] = {false};
        s = co_vjp(u, x, gout, ys, o.res, own);
        for (int k = 0; k < u->nin; k++) o.own[k] = own[k];
    } else if (s == AG_OK) {
        dev = true;
    }
    for (int k = 0; k < u->nin; k++)
        if (x[k]) chk(ag_tensor_free(x[k]));
    for (int k = 0; k < u->nout; k++)
        if (ys[k]) chk(ag_tensor_free(ys[k]));
    if (s != AG_OK) { /* out of memory */
        co_release_all(&o);
        g_co_breaks++;
        g_op = saved_op;
        return 1;
    }
    co_misbehave(u, CF_BACKWARD, mode, &o, gout, (int)m, ctx, xi);
    bool broke = false;
    for (int k = 0; k < u->nin; k++) {
        if (!o.res[k]) continue;
        Info g;
        if (!co_live_tensor(o.res[k], &g)) broke = true;
        else if (needs[k] && (g.dtype != xi[k].dtype || !co_reduces(&g, &xi[k]))) broke = true;
    }
    int32_t ret = co_finish(&o, gin, broke, dev || co_deviates(mode), "backward");
    g_op = saved_op;
    return ret;
}

static int32_t co_jvp(ag_tensor *tout, int64_t m, const ag_tensor *in, const ag_tensor *tin, int64_t n, ag_custom_ctx ctx,
                      void *p) {
    CoUd *u = co_ud(p, CF_JVP);
    if (!tout || !in || !tin || m != u->nout || n != u->nin) fail("a custom op's JVP got %lld inputs and %lld outputs", (long long)n, (long long)m);
    if (!u->last_ok) fail("a custom op's JVP ran after a forward that failed or broke its contract");
    const char *saved_op = g_op;
    g_op = "custom op JVP";
    uint8_t mode = co_mode(u, CF_JVP);
    TRACE("    custom JVP (call %d, mode %d)", u->calls[CF_JVP], mode);
    co_ctx_checks(u, CF_JVP, ctx, co_saved_count(u));
    for (int k = 0; k < u->nin; k++) {
        Info ti;
        if (!tin[k]) continue;
        if (!co_live_tensor(tin[k], &ti)) fail("the JVP's tangent %d is not a live tensor", k);
        Info xk = info_of(in[k]);
        if (!same_info(&ti, &xk)) fail("the JVP's tangent %d differs from its input in shape or dtype", k);
    }
    CoOut o;
    memset(&o, 0, sizeof o);
    o.n = u->nout;
    bool own[CO_OUT] = {false};
    ag_status s = co_jvp_sweep(u, in, tin, o.res, own);
    for (int k = 0; k < u->nout; k++) o.own[k] = own[k];
    if (s != AG_OK) {
        co_release_all(&o);
        g_co_breaks++;
        g_op = saved_op;
        return 1;
    }
    co_misbehave(u, CF_JVP, mode, &o, tin, (int)n, ctx, u->last);
    bool broke = false;
    for (int k = 0; k < u->nout; k++) {
        Info t;
        if (!o.res[k]) continue; /* zeros */
        if (!co_live_tensor(o.res[k], &t) || !same_info(&t, &u->last[k])) broke = true;
    }
    int32_t ret = co_finish(&o, tout, broke, co_deviates(mode), "JVP");
    g_op = saved_op;
    return ret;
}

/* Frees slot k's op handle; destroy must run at once when nothing recorded it. */
static void co_drop(int k) {
    if (!cops[k]) return;
    CoUd *u = coud[k];
    const char *saved = g_op;
    g_op = "ag_custom_op_free (of an op the program holds)";
    TRACE("ag_custom_op_free(%#llx)", (unsigned long long)cops[k]);
    u->h = 0;
    bool recorded = u->recorded, destroyable = u->destroyable;
    expect(ag_custom_op_free(cops[k]), M_OK, "free a live op");
    owned--;
    remember_stale(cops[k]);
    if (destroyable && !recorded && co_find_live(u) >= 0)
        fail("the op's destroy did not run when its handle was freed, though no graph or function recorded it");
    cops[k] = 0;
    coud[k] = NULL;
    g_op = saved;
}

static void co_rd_steps(Rd *r, CoUd *u) {
    static const double scales[] = {0.5, -2.0, 3.0, 0.0, 1.0, -0.25};
    u->nsteps = 1 + u8(r) % CO_STEPS;
    for (int k = 0; k < u->nsteps; k++) {
        CoStep *st = &u->steps[k];
        st->kind = u8(r) % CS_COUNT;
        st->a = u8(r);
        st->b = u8(r);
        st->s = scales[u8(r) % 6];
    }
    for (int k = 0; k < CO_OUT; k++) u->outsel[k] = u8(r);
    /* mostly the last step's result: outputs that are inputs (identities) now and then */
    if (u8(r) < 200) u->outsel[0] = (uint8_t)(u->nin + u->nsteps - 1);
}

/* ag_custom_op_new with good or bad arguments, into slot k. */
static void co_new(Rd *r) {
    int slot = u8(r) % NCO;
    if (g_nco_live >= CO_LIVE || g_nco_kept >= CO_LIVE) return;
    CoUd *u = calloc(1, sizeof *u);
    if (!u) fail("out of memory");
    u->magic = CO_MAGIC;
    u->nin = 1 + u8(r) % CO_IN;
    u->nout = 1 + u8(r) % CO_OUT;
    co_rd_steps(r, u);
    uint8_t f = u8(r);
    u->has_bwd = f % 8 != 0;
    u->has_jvp = f % 4 != 1;
    u->save_out = f & 8;
    u->save_inter = (f & 48) == 48;
    u->reduce = f & 64;
    u->destroyable = !(f & 128) || u8(r) < 128;
    u->ctx_checks = (f & 0x30) == 0x10;
    for (int c = 0; c < 3; c++) {
        uint8_t b = u8(r);
        u->mode[c] = b < 150 ? CB_OK : 1 + b % (CB_COUNT - 1);
        u->from[c] = 1 + u8(r) % 3;
        u->which[c] = u8(r);
        u->arg[c] = u8(r);
    }
    uint8_t bad = u8(r);
    int64_t nin = u->nin, nout = u->nout;
    const char *name = "fuzz_op";
    bool null_out = false, null_fwd = false;
    switch (bad % 24) {
    case 0: nin = (int64_t[]){0, -1, 257, INT64_MIN}[(bad >> 5) % 4]; break;
    case 1: nout = (int64_t[]){0, -1, 257, INT64_MAX}[(bad >> 5) % 4]; break;
    case 2: name = NULL; break;
    case 3: name = ""; break;
    case 4: null_fwd = true; break;
    case 5: null_out = true; break;
    default: break;
    }
    bool arg_bad = bad % 24 < 6;
    ag_custom_op h = (ag_custom_op)SENT;
    if (u->destroyable) g_co_live[g_nco_live++] = u;
    else g_co_kept[g_nco_kept++] = u;
    g_op = "ag_custom_op_new";
    TRACE("ag_custom_op_new(nin=%lld, nout=%lld, steps=%d, bwd=%d, jvp=%d, modes=%d/%d/%d from %d/%d/%d, destroy=%d)%s",
          (long long)nin, (long long)nout, u->nsteps, u->has_bwd, u->has_jvp, u->mode[0], u->mode[1], u->mode[2], u->from[0],
          u->from[1], u->from[2], u->destroyable, arg_bad ? " [bad]" : "");
    ag_status s = expect(ag_custom_op_new(null_out ? NULL : &h, name, nin, nout, null_fwd ? NULL : co_forward,
                                          u->has_bwd ? co_backward : NULL, u->has_jvp ? co_jvp : NULL, u,
                                          u->destroyable ? co_destroy : NULL),
                         arg_bad ? M_ARG : M_OK | M_OOM, "custom op new: counts, name, forward, out");
    if (s != AG_OK) { /* the caller keeps the payload: destroy must not have run */
        if (h != (ag_custom_op)SENT) fail("a refused ag_custom_op_new wrote its output");
        if (u->destroyable) {
            int i = co_find_live(u);
            if (i < 0) fail("a refused ag_custom_op_new ran the payload's destroy");
            g_co_live[i] = g_co_live[--g_nco_live];
        } else {
            g_nco_kept--;
        }
        free(u);
        return;
    }
    if (h == (ag_custom_op)SENT || h == 0) fail("ag_custom_op_new succeeded without writing a handle");
    owned++;
    co_drop(slot);
    cops[slot] = h;
    coud[slot] = u;
    u->h = h;
}

/* An op handle: mostly a slot, else 0, freed, made up, or a tensor handle. */
static H pick_co(Rd *r, int *slot) {
    uint8_t b = u8(r);
    *slot = -1;
    if (b < 208) {
        *slot = b % NCO;
        return (H){cops[*slot], cops[*slot] == 0};
    }
    switch (b % 4) {
    case 0: return (H){0, true};
    case 1: return (H){nstale ? stale[u8(r) % (nstale < NSTALE ? nstale : NSTALE)] : 0, true};
    case 2: return (H){pool[u8(r) % NT] ? pool[u8(r) % NT] : made_up(r), true};
    default: return (H){made_up(r), true};
    }
}

/* Every subset of the inputs that broadcasts has at most CAP elements (the program combines them). */
static bool co_small_enough(const ag_tensor *in, int n) {
    Info is[CO_IN];
    for (int i = 0; i < n; i++) is[i] = info_of(in[i]);
    for (int mask = 1; mask < (1 << n); mask++) {
        const Info *sel[CO_IN];
        int k = 0;
        for (int i = 0; i < n; i++)
            if (mask & (1 << i)) sel[k++] = &is[i];
        int64_t shape[MAXS], nd, cnt;
        if (broadcast(sel, k, shape, &nd) && (!numel_of(shape, nd, &cnt) || cnt > CAP)) return false;
    }
    return true;
}

/* Applies an op to pool tensors (or bad handles, counts, NULLs): the status follows from the
 * arguments and the forward's verdict; the outputs require grad exactly when the op is recorded. */
static void co_apply(Rd *r) {
    int slot;
    H op = pick_co(r, &slot);
    if (slot >= 0 && !cops[slot] && (u8(r) & 3)) /* mostly an op that exists */
        for (int k = 1; k < NCO && op.bad; k++)
            if (cops[(slot + k) % NCO]) {
                slot = (slot + k) % NCO;
                op = (H){cops[slot], false};
            }
    CoUd *u = op.bad ? NULL : coud[slot];
    uint8_t f = u8(r);
    int64_t nin = u && f % 8 ? u->nin : u8(r) % (CO_IN + 2);
    int64_t nout = u && (f >> 3) % 8 ? u->nout : u8(r) % (CO_OUT + 2);
    bool null_out = f >> 6 == 1 && (f & 7) == 0, null_in = f >> 6 == 2 && (f & 7) == 0 && nin > 0;
    H in[CO_IN + 1];
    ag_tensor ins[CO_IN + 1];
    for (int64_t i = 0; i < nin; i++) {
        in[i] = pick_t(r);
        ins[i] = in[i].h;
    }
    uint8_t dst = u8(r);
    bool bad_in = any_bad(in, (int)nin);
    bool arg_bad = null_out || null_in || (u && (nin != u->nin || nout != u->nout)) || (!u && (nout < 1 || nout > 256));
    unsigned allowed;
    bool runs = false, needs[CO_IN] = {false}, rec = false;
    if (op.bad) allowed = M_INV | (arg_bad ? M_ARG : 0);
    else if (arg_bad) allowed = M_ARG | (bad_in ? M_INV : 0);
    else if (bad_in) allowed = M_INV;
    else {
        if (!co_small_enough(ins, (int)nin)) return;
        runs = true;
        for (int64_t i = 0; i < nin; i++) rec = rec || info_of(ins[i]).rg;
        rec = rec && grad_on;
        for (int64_t i = 0; i < nin; i++) needs[i] = rec && info_of(ins[i]).rg;
        allowed = 0; /* after the call: from the forward's verdict */
    }
    ag_tensor outs[CO_OUT + 2];
    for (int k = 0; k < CO_OUT + 2; k++) outs[k] = SENT;
    int calls[3] = {0, 0, 0};
    if (u) memcpy(calls, u->calls, sizeof calls);
    uint64_t breaks = g_co_breaks;
    g_co_needs = runs ? needs : NULL;
    g_op = "ag_custom_op_apply";
    TRACE("ag_custom_op_apply(op=%#llx, nout=%lld, nin=%lld)%s", (unsigned long long)op.h, (long long)nout, (long long)nin,
          runs ? "" : " [bad]");
    ag_status s = chk(ag_custom_op_apply(null_out ? NULL : outs, nout, op.h, null_in ? NULL : ins, nin));
    g_co_needs = NULL;
    g_op = "ag_custom_op_apply";
    if (runs) allowed = g_co_breaks != breaks ? M_CB : M_OK | M_OOM;
    expect(s, allowed, "apply: op handle, counts, inputs, and the forward's verdict");
    if (u && !runs && memcmp(calls, u->calls, sizeof calls) != 0) fail("a refused ag_custom_op_apply ran a callback");
    if (u && u->calls[CF_JVP] != calls[CF_JVP]) fail("the JVP ran outside a forward-mode pass");
    if (u && runs && u->calls[CF_FORWARD] != calls[CF_FORWARD] + 1) fail("apply ran the forward %d times", u->calls[CF_FORWARD] - calls[CF_FORWARD]);
    for (int k = s == AG_OK ? (int)nout : 0; k < CO_OUT + 2; k++)
        if (outs[k] != SENT) fail("ag_custom_op_apply wrote outputs[%d] %s", k, s == AG_OK ? "past its count" : "although it failed");
    if (s != AG_OK) return;
    owned += nout;
    for (int64_t k = 0; k < nout; k++) {
        for (int64_t i = 0; i < nin; i++)
            if (outs[k] == ins[i]) fail("ag_custom_op_apply returned an input's handle as output %lld", (long long)k);
        Info o = info_of(outs[k]);
        if (o.rg != rec) fail("output %lld of a custom op %s grad (recorded: %d)", (long long)k, o.rg ? "requires" : "does not require", rec);
    }
    if (rec) u->recorded = u->escaped = true;
    owned -= nout;
    for (int64_t k = 0; k < nout; k++) take(outs[k], (uint8_t)(dst + k));
}

/* ---- the deep check: an op on fresh leaves against the same program in catalogue ops ---- */

/* Close enough for two computations of the same values in another order: relative to the
 * largest magnitude of either tensor (NaN matches NaN). */
static bool co_close(ag_tensor a, ag_tensor b, const char *what, bool must) {
    const char *saved = g_op;
    g_op = what; /* FUZZ_STATS: comparisons made */
    count(AG_OK);
    g_op = saved;
    Info x = info_of(a), y = info_of(b);
    if (!same_info(&x, &y)) {
        if (must) fail("%s: shapes or dtypes differ", what);
        return false;
    }
    static double p[CAP], q[CAP];
    if (x.numel > CAP) return true;
    if (x.numel && (chk(ag_tensor_copy_data(p, CAP, AG_FLOAT64, a)) != AG_OK || chk(ag_tensor_copy_data(q, CAP, AG_FLOAT64, b)) != AG_OK))
        fail("%s: copy_data", what);
    double scale = 1;
    for (int64_t i = 0; i < x.numel; i++) {
        if (!isfinite(p[i]) || !isfinite(q[i])) return true; /* overflowed: not compared */
        scale = fmax(scale, fmax(fabs(p[i]), fabs(q[i])));
    }
    double tol = (x.dtype == AG_FLOAT32 ? 1e-3 : 1e-9) * scale;
    for (int64_t i = 0; i < x.numel; i++)
        if (fabs(p[i] - q[i]) > tol) {
            if (must) fail("%s: element %lld is %.17g and %.17g", what, (long long)i, p[i], q[i]);
            return false;
        }
    return true;
}

/* The gradients by ag_grad (allow_unused), NULL as zeros: custom against catalogue. */
static void co_same_grad(ag_tensor g, ag_tensor gc, ag_tensor like, const char *what) {
    if (!g && !gc) return;
    Info li = info_of(like);
    ag_tensor z = 0;
    if (!g || !gc) {
        z = co_zeros(li.shape, li.nd, li.dtype);
        if (!z) return;
    }
    co_close(g ? g : z, gc ? gc : z, what, true);
    if (z) chk(ag_tensor_free(z));
}

typedef struct {
    CoUd *u;
    ag_custom_op op;
    bool live;      /* op is a live handle */
    bool catalogue; /* the program in catalogue ops instead */
    int w;          /* the output returned */
    bool failed;
    int calls;
} CoBuild;

/* ag_jvp's build function: the op (or the catalogue program) on its inputs, output w. */
static int32_t co_build(ag_tensor *out, const ag_tensor *in, int64_t n, void *p) {
    CoBuild *b = p;
    b->calls++;
    const CoUd *u = b->u;
    if (!out || !in || n != u->nin) fail("a custom op build function got %lld inputs", (long long)n);
    const char *saved = g_op;
    if (b->catalogue) {
        g_op = "catalogue program (a jvp build function)";
        CoRegs R;
        if (expect(co_run(u, in, &R), M_OK | M_OOM, "the program in forward mode") != AG_OK) {
            b->failed = true;
            g_op = saved;
            return 1;
        }
        int j = co_out_reg(u, &R, b->w);
        *out = R.r[j]; /* an input itself: the identity */
        R.mine[j] = false;
        co_free_regs(&R);
        g_op = saved;
        return 0;
    }
    g_op = "ag_custom_op_apply in forward mode (a jvp build function)";
    ag_tensor outs[CO_OUT] = {SENT, SENT};
    uint64_t breaks = g_co_breaks;
    int jcalls = u->calls[CF_JVP];
    ag_status s = chk(ag_custom_op_apply(outs, u->nout, b->op, in, n));
    unsigned allowed = !b->live ? M_INV : g_co_breaks != breaks ? M_CB : !u->has_jvp ? M_STATE : M_OK | M_OOM;
    expect(s, allowed, "apply in forward mode: a live op, the forward and JVP verdicts, a JVP at all");
    if (b->live && u->has_jvp && s != AG_ERR_INVALID_HANDLE && u->last_ok && u->calls[CF_JVP] != jcalls + 1)
        fail("in forward mode a forward that succeeded was not followed by one JVP call");
    if (s != AG_OK) {
        b->failed = true;
        g_op = saved;
        return 1;
    }
    *out = outs[b->w];
    if (u->nout == 2 && outs[1 - b->w] != outs[b->w]) chk(ag_tensor_free(outs[1 - b->w]));
    g_op = saved;
    return 0;
}

typedef struct {
    CoUd *u;
    ag_custom_op op;
    bool live, with_grad, failed;
    int calls;
} CoCap;

/* The body of a captured function: the op on its inputs, and (with_grad) d sum(y0) / d in[0]. */
static int32_t co_cap_body(CoCap *c, const ag_tensor *in, ag_tensor *outputs) {
    const CoUd *u = c->u;
    ag_tensor ys[CO_OUT] = {SENT, SENT};
    uint64_t breaks = g_co_breaks;
    ag_status s = chk(ag_custom_op_apply(ys, u->nout, c->op, in, u->nin));
    expect(s, !c->live ? M_INV : g_co_breaks != breaks ? M_CB : M_OK | M_OOM, "apply in a captured function");
    if (s != AG_OK) return 1;
    if (!c->with_grad) { /* (written only on success: a failing function leaves its outputs alone) */
        for (int k = 0; k < u->nout; k++) outputs[k] = ys[k];
        return 0;
    }
    ag_tensor l = SENT, g = SENT;
    if (expect(ag_sum(&l, ys[0], NULL, 0, false), M_OK | M_OOM, "sum") != AG_OK) {
        for (int k = 0; k < u->nout; k++) chk(ag_tensor_free(ys[k]));
        return 2;
    }
    bool lrg = info_of(l).rg;
    breaks = g_co_breaks;
    s = chk(ag_grad(&g, &l, 1, NULL, in, 1, false, false, true));
    expect(s, !lrg || !u->has_bwd ? M_STATE : g_co_breaks != breaks ? M_CB : M_OK | M_OOM,
           "ag_grad through the op in a captured function: l requires grad, a backward, its verdict");
    chk(ag_tensor_free(l));
    if (s == AG_OK && !g) { /* no gradient reached in[0] (the backward gave none): zeros */
        Info xi = info_of(in[0]);
        g = co_zeros(xi.shape, xi.nd, xi.dtype);
        if (!g) s = AG_ERR_OUT_OF_MEMORY;
    }
    if (s != AG_OK) {
        for (int k = 0; k < u->nout; k++) chk(ag_tensor_free(ys[k]));
        return 3;
    }
    for (int k = 0; k < u->nout; k++) outputs[k] = ys[k];
    outputs[u->nout] = g;
    return 0;
}

static int32_t co_capture_fn(ag_tensor *outputs, int64_t noutputs, const ag_tensor *inputs, int64_t ninputs, void *ud) {
    CoCap *c = ud;
    c->calls++;
    if (!outputs || noutputs != c->u->nout + c->with_grad || ninputs != c->u->nin) fail("the capture function got bad counts");
    const char *saved = g_op;
    g_op = "capture function (a custom op)";
    int32_t ret = co_cap_body(c, inputs, outputs);
    if (ret) c->failed = true;
    g_op = saved;
    return ret;
}

/* New leaves of the shapes of `like` with small values (requires grad as rg). */
static bool co_leaves(Rd *r, int n, const Info *shapes, bool rg, ag_tensor *out) {
    for (int i = 0; i < n; i++) {
        fill_data(r, shapes[i].numel);
        for (int64_t e = 0; e < shapes[i].numel; e++) { /* small values: comparisons stay meaningful */
            double v = fmod(dbuf[e], 3.0);
            dbuf[e] = isfinite(v) ? v : 0.5;
            fbuf[e] = (float)dbuf[e];
        }
        ag_tensor t = SENT;
        ag_status s = expect(shapes[i].dtype == AG_FLOAT32 ? ag_tensor_from_data(&t, fbuf, shapes[i].shape, shapes[i].nd, AG_FLOAT32)
                                                            : ag_tensor_from_data(&t, dbuf, shapes[i].shape, shapes[i].nd, AG_FLOAT64),
                             M_OK | M_OOM, "a leaf for a custom op");
        if (s != AG_OK) {
            for (int j = 0; j < i; j++) free_tensor(out[j]);
            return false;
        }
        owned++;
        if (rg) expect(ag_tensor_set_requires_grad(t, true), M_OK, "requires_grad on a new leaf");
        out[i] = t;
    }
    return true;
}

/* The deep check of slot k's op on fresh leaves (broadcasting shapes, one dtype): values,
 * gradients (ag_grad, with create_graph and second derivatives) and the JVP against the same
 * program in catalogue ops; then a capture and a replay on new values against the eager run. The
 * op's handle may be freed at any point (later uses are AG_ERR_INVALID_HANDLE; the op lives on
 * in what recorded it, and its destroy runs once this check has let go of everything). */
static void co_check(Rd *r) {
    int slot = u8(r) % NCO;
    if (!cops[slot]) return;
    CoUd *u = coud[slot];
    ag_custom_op oph = cops[slot];
    uint8_t f = u8(r), g2 = u8(r);
    int free_at = f % 8; /* 1: after apply, 2: after the gradients, 3: after the jvp, 4: at the end */
    bool cg = f & 8, do_jvp = f & 16, do_cap = f & 32, with_grad = f & 64;
    ag_dtype dt = g2 & 1 ? AG_FLOAT32 : AG_FLOAT64;
    /* a base shape, rank 0..3 with extents 1..4; each input drops leading axes and sets some to 1 */
    int64_t base[3], rank = g2 >> 1 & 3;
    for (int d = 0; d < rank; d++) base[d] = 1 + u8(r) % 4;
    Info shapes[CO_IN];
    for (int i = 0; i < u->nin; i++) {
        uint8_t v = u8(r);
        int64_t drop = rank ? v % (rank + 1) : 0;
        memset(&shapes[i], 0, sizeof shapes[i]);
        shapes[i].nd = rank - drop;
        shapes[i].numel = 1;
        shapes[i].dtype = dt;
        for (int64_t d = 0; d < shapes[i].nd; d++) {
            shapes[i].shape[d] = (v >> (3 + d)) & 1 ? 1 : base[drop + d];
            shapes[i].numel *= shapes[i].shape[d];
        }
    }
    bool prev_grad = grad_on;
    g_op = "custom op check: grad mode on";
    expect(ag_set_grad_enabled(NULL, true), M_OK, "grad mode on");
    grad_on = true;
    ag_tensor x[CO_IN], xc[CO_IN], x2[CO_IN];
    int nx = 0, nxc = 0, nx2 = 0;
    ag_tensor y[CO_OUT] = {0}, yc[CO_OUT] = {0};
    int ny = 0;
    CoRegs RC;
    RC.n = 0;
    bool live = true;
    bool compare = true;  /* nothing deviated: custom and catalogue compute the same */
    bool fwd_same = true; /* the forward gave the program's shapes (the catalogue's seeds fit) */
    const bool destroyable = u->destroyable, escaped = u->escaped; /* (u may be gone at the end) */
    uint64_t mark = co_mark();
    TRACE("custom op check (slot %d, dtype %d, rank %lld, free at %d, cg %d, jvp %d, capture %d)", slot, dt, (long long)rank,
          free_at, cg, do_jvp, do_cap);
#define CO_FREE_AT(k)                                                                                                          \
    do {                                                                                                                       \
        if (free_at == (k) && live) {                                                                                          \
            co_drop(slot);                                                                                                     \
            live = false;                                                                                                      \
        }                                                                                                                      \
    } while (0)

    if (!co_leaves(r, u->nin, shapes, true, x)) goto done;
    nx = u->nin;
    /* the catalogue's leaves: the same values */
    for (int i = 0; i < u->nin; i++) {
        xc[i] = leaf_copy(x[i], 1);
        if (!xc[i]) goto done;
        owned++;
        nxc++;
    }

    /* 1. apply */
    {
        bool needs[CO_IN];
        for (int i = 0; i < u->nin; i++) needs[i] = true;
        ag_tensor outs[CO_OUT] = {SENT, SENT};
        uint64_t breaks = g_co_breaks;
        g_co_needs = needs;
        g_op = "ag_custom_op_apply (check)";
        ag_status s = chk(ag_custom_op_apply(outs, u->nout, oph, x, u->nin));
        g_co_needs = NULL;
        expect(s, g_co_breaks != breaks ? M_CB : M_OK | M_OOM, "apply on fresh leaves: the forward's verdict");
        if (s != AG_OK) goto done;
        u->recorded = true;
        owned += u->nout;
        ny = u->nout;
        for (int k = 0; k < u->nout; k++) y[k] = outs[k];
        if (co_mark() != mark) compare = fwd_same = false;
    }
    CO_FREE_AT(1);
    /* 2. the catalogue program on copies */
    g_op = "the program in catalogue ops (check)";
    if (expect(co_run(u, xc, &RC), M_OK | M_OOM, "the program on leaves (it ran as the forward)") != AG_OK) goto done;
    for (int k = 0; k < u->nout; k++) yc[k] = RC.r[co_out_reg(u, &RC, k)];
    for (int k = 0; compare && k < u->nout; k++) co_close(y[k], yc[k], "a custom op's output against the catalogue's", true);

    /* 3. gradients of sum_k <y_k, S_k> with respect to a subset of the leaves */
    {
        ag_tensor S[CO_OUT] = {0}, gi[CO_IN], gci[CO_IN], xs[CO_IN], xcs[CO_IN];
        int ns = 0, idx[CO_IN];
        uint8_t sub = u8(r);
        for (int i = 0; i < u->nin; i++)
            if (sub & (1 << i) || i == u->nin - 1) idx[ns++] = i;
        for (int i = 0; i < ns; i++) {
            xs[i] = x[idx[i]];
            xcs[i] = xc[idx[i]];
            gi[i] = gci[i] = SENT;
        }
        bool ok = true;
        for (int k = 0; k < u->nout && ok; k++) {
            Info yi = info_of(y[k]);
            if (!co_leaves(r, 1, &yi, false, &S[k])) ok = false;
        }
        if (ok) {
            g_op = "ag_grad through a custom op (check)";
            uint64_t breaks = g_co_breaks, devs = g_co_devs;
            int bcalls = u->calls[CF_BACKWARD];
            ag_status s = chk(ag_grad(gi, y, u->nout, S, xs, ns, true, cg, true));
            unsigned allowed = !u->has_bwd ? M_STATE : g_co_breaks != breaks ? M_CB : M_OK | M_OOM;
            expect(s, allowed, "ag_grad: a backward at all, and its verdict");
            if (u->has_bwd && s != AG_ERR_OUT_OF_MEMORY && u->calls[CF_BACKWARD] == bcalls) fail("ag_grad did not call the op's backward");
            if (u->has_bwd && u->calls[CF_BACKWARD] != bcalls)
                for (int i = 0; i < ns; i++)
                    if (!u->last_needs[idx[i]]) fail("needs_input_grad(%d) was false in the backward of an ag_grad with respect to input %d", idx[i], idx[i]);
            if (g_co_devs != devs || g_co_breaks != breaks) compare = false;
            if (s == AG_OK) /* (AG_NULL_TENSOR for an input no gradient reached) */
                for (int i = 0; i < ns; i++) owned += gi[i] != 0;
            if (s == AG_OK && !fwd_same) {
                for (int i = 0; i < ns; i++)
                    if (gi[i]) free_tensor(gi[i]);
            } else if (s == AG_OK) {
                g_op = "ag_grad through the catalogue program (check)";
                ag_status sc = expect(ag_grad(gci, yc, u->nout, S, xcs, ns, true, cg, true), M_OK | M_OOM, "ag_grad of the catalogue");
                if (sc == AG_OK) {
                    for (int i = 0; i < ns; i++) owned += gci[i] != 0;
                    for (int i = 0; compare && i < ns; i++) co_same_grad(gi[i], gci[i], xs[i], "a custom op's gradient against the catalogue's");
                    /* 4. second derivatives: H = d sum_i <g_i, V_i> / dx, through the backward's ops */
                    if (cg && compare) {
                        ag_tensor go[CO_IN], gco[CO_IN], V[CO_IN], H[CO_IN], Hc[CO_IN];
                        int nh = 0;
                        for (int i = 0; i < ns; i++) {
                            if (!gi[i] || !gci[i]) continue;
                            bool r1 = info_of(gi[i]).rg, r2 = info_of(gci[i]).rg;
                            if (r1 != r2) fail("gradient %d of a custom op %s history, the catalogue's %s", i, r1 ? "has" : "has no", r2 ? "has" : "has not");
                            if (!r1) continue;
                            Info gii = info_of(gi[i]);
                            if (!co_leaves(r, 1, &gii, false, &V[nh])) break;
                            go[nh] = gi[i];
                            gco[nh++] = gci[i];
                        }
                        if (nh > 0) {
                            for (int i = 0; i < ns; i++) H[i] = Hc[i] = SENT;
                            g_op = "second derivatives through a custom op (check)";
                            breaks = g_co_breaks, devs = g_co_devs;
                            s = chk(ag_grad(H, go, nh, V, xs, ns, true, false, true));
                            expect(s, g_co_breaks != breaks ? M_CB : M_OK | M_OOM, "second ag_grad: the backward's verdict");
                            if (s == AG_OK) {
                                for (int i = 0; i < ns; i++) owned += H[i] != 0;
                                sc = expect(ag_grad(Hc, gco, nh, V, xcs, ns, true, false, true), M_OK | M_OOM, "second ag_grad of the catalogue");
                                if (sc == AG_OK) {
                                    for (int i = 0; i < ns; i++) owned += Hc[i] != 0;
                                    if (g_co_devs == devs && g_co_breaks == breaks)
                                        for (int i = 0; i < ns; i++) co_same_grad(H[i], Hc[i], xs[i], "a second derivative through a custom op against the catalogue's");
                                    for (int i = 0; i < ns; i++)
                                        if (Hc[i]) free_tensor(Hc[i]);
                                }
                                for (int i = 0; i < ns; i++)
                                    if (H[i]) free_tensor(H[i]);
                            }
                        }
                        for (int i = 0; i < nh; i++) free_tensor(V[i]);
                    }
                    for (int i = 0; i < ns; i++)
                        if (gci[i]) free_tensor(gci[i]);
                }
                for (int i = 0; i < ns; i++)
                    if (gi[i]) free_tensor(gi[i]);
            } else {
                for (int i = 0; i < ns; i++)
                    if (gi[i] != SENT) fail("a failed ag_grad wrote out_grads[%d]", i);
            }
        }
        for (int k = 0; k < u->nout; k++)
            if (S[k]) free_tensor(S[k]);
    }
    CO_FREE_AT(2);

    /* 5. the JVP: ag_jvp of the op (output w) against ag_jvp of the catalogue program */
    if (do_jvp) {
        ag_tensor T[CO_IN];
        if (co_leaves(r, u->nin, shapes, false, T)) {
            CoBuild b = {u, oph, live, false, (int)(u8(r) % u->nout), false, 0};
            CoBuild bc = b;
            bc.catalogue = true;
            ag_tensor o = SENT, t = SENT, oc = SENT, tc = SENT;
            uint64_t m0 = co_mark();
            g_op = "ag_jvp of a custom op (check)";
            ag_status s = chk(ag_jvp(&o, &t, co_build, &b, x, u->nin, T));
            if (b.calls != 1) fail("ag_jvp called its build function %d times", b.calls);
            expect(s, b.failed ? M_CB : M_OK | M_OOM, "ag_jvp: the build function (the op in forward mode)");
            if (s == AG_OK) {
                owned += 2;
                g_op = "ag_jvp of the catalogue program (check)";
                if (expect(ag_jvp(&oc, &tc, co_build, &bc, xc, u->nin, T), M_OK | M_OOM, "ag_jvp of the catalogue") == AG_OK) {
                    owned += 2;
                    if (co_mark() == m0 && compare) {
                        co_close(o, oc, "ag_jvp's output: custom op against catalogue", true);
                        co_close(t, tc, "ag_jvp's tangent: custom op against catalogue", true);
                    }
                    free_tensor(oc);
                    free_tensor(tc);
                }
                free_tensor(o);
                free_tensor(t);
            } else if (o != SENT || t != SENT) {
                fail("a failed ag_jvp wrote its outputs");
            }
            for (int i = 0; i < u->nin; i++) free_tensor(T[i]);
        }
    }
    CO_FREE_AT(3);

    /* 6. capture the op (and its gradient), then replay it on new values against the eager run */
    if (do_cap) {
        int nout = u->nout + with_grad;
        CoCap c = {u, oph, live, with_grad, false, 0};
        ag_function fn = (ag_function)SENT;
        g_op = "ag_capture of a custom op (check)";
        TRACE("ag_capture of a custom op (grad %d)", with_grad);
        ag_status s = chk(ag_capture(&fn, co_capture_fn, x, u->nin, nout, &c));
        if (c.calls != 1) fail("ag_capture ran its function %d times", c.calls);
        expect(s, c.failed ? M_CB : M_OK | M_OOM, "capture: the function's verdict");
        if (s == AG_OK) {
            owned++;
            u->recorded = true;
            if (co_leaves(r, u->nin, shapes, true, x2)) {
                nx2 = u->nin;
                ag_tensor e[CO_OUT + 1], outs[CO_OUT + 1];
                for (int k = 0; k <= CO_OUT; k++) e[k] = outs[k] = SENT;
                /* the eager run first (on copies: same values), then the replay */
                uint64_t m0 = co_mark();
                ag_tensor xe[CO_IN];
                int nxe = 0;
                for (int i = 0; i < u->nin; i++)
                    if ((xe[i] = leaf_copy(x2[i], 1))) owned++, nxe++;
                CoCap ce = {u, oph, live, with_grad, false, 0};
                g_op = "the eager run of a captured custom op";
                int32_t er = nxe == u->nin ? co_capture_fn(e, nout, xe, u->nin, &ce) : 1;
                uint64_t m1 = co_mark(), breaks = g_co_breaks;
                g_op = "ag_function_call of a captured custom op (check)";
                s = chk(ag_function_call(outs, nout, fn, x2, u->nin));
                unsigned allowed = g_co_breaks != breaks ? M_CB : M_OK | M_OOM | co_loose(m1);
                expect(s, allowed, "a replay: callbacks called again, their verdicts and shapes");
                if (s == AG_OK) {
                    owned += nout;
                    if (er == 0 && co_mark() == m0)
                        for (int k = 0; k < nout; k++)
                            if (!same_bits(outs[k], e[k])) fail("a replay of a custom op differs from the eager run (output %d)", k);
                    for (int k = 0; k < nout; k++) free_tensor(outs[k]);
                }
                if (er == 0) {
                    owned += nout;
                    for (int k = 0; k < nout; k++) free_tensor(e[k]);
                }
                for (int i = 0; i < nxe; i++) free_tensor(xe[i]);
            }
            g_op = "ag_function_free (check)";
            expect(ag_function_free(fn), M_OK, "free the function");
            owned--;
        } else if (fn != (ag_function)SENT) {
            fail("a failed ag_capture wrote its output");
        }
    }
    CO_FREE_AT(4);

done:
    for (int k = 0; k < ny; k++) free_tensor(y[k]);
    for (int j = 0; j < RC.n; j++)
        if (RC.mine[j]) {
            owned++;
            free_tensor(RC.r[j]);
        }
    for (int i = 0; i < nx2; i++) free_tensor(x2[i]);
    for (int i = 0; i < nxc; i++) free_tensor(xc[i]);
    for (int i = 0; i < nx; i++) free_tensor(x[i]);
    /* the op no longer recorded anywhere this check reached: freed here, its destroy has run */
    if (!live && destroyable && !escaped && co_find_live(u) >= 0)
        fail("the op's destroy has not run: its handle is freed and the check let go of everything that used it");
    expect(ag_set_grad_enabled(NULL, prev_grad), M_OK, "grad mode back");
    grad_on = prev_grad;
#undef CO_FREE_AT
}

/* Misuse outside the callbacks: an op freed twice or a bad one, an op handle where a tensor is
 * wanted and back, a context used after its callback returned (or made up), ag_set_error. */
static void co_misuse(Rd *r) {
    uint8_t w = u8(r) % 4;
    switch (w) {
    case 0: {
        int slot;
        H op = pick_co(r, &slot);
        g_op = "ag_custom_op_free (twice, or a bad handle)";
        if (!op.bad) {
            co_drop(slot);
            expect(ag_custom_op_free(op.h), M_INV, "an op freed twice");
        } else {
            expect(ag_custom_op_free(op.h), op.h == 0 ? M_OK : M_INV, "free a bad op handle");
        }
        break;
    }
    case 1: {
        g_op = "an op handle where a tensor is wanted, a tensor where an op is";
        for (int k = 0; k < NCO; k++) {
            if (!cops[k]) continue;
            int64_t n = 0;
            ag_tensor o = SENT;
            expect(ag_tensor_numel(&n, cops[k]), M_INV, "numel of an op handle");
            expect(ag_exp(&o, cops[k]), M_INV, "exp of an op handle");
            expect(ag_tensor_free(cops[k]), M_INV, "ag_tensor_free of an op handle");
            if (o != SENT) fail("ag_exp of an op handle wrote its output");
            break;
        }
        H t = pick_t(r);
        if (!t.bad) {
            expect(ag_custom_op_free(t.h), M_INV, "ag_custom_op_free of a tensor handle");
            info_of(t.h); /* still alive */
        }
        break;
    }
    case 2: {
        uint8_t b = u8(r);
        ag_custom_ctx ctx = g_kept_ctx && b < 200 ? g_kept_ctx : b & 1 ? 0 : made_up(r);
        g_op = "a custom op context outside its callback";
        TRACE("custom op context %#llx outside its callback", (unsigned long long)ctx);
        int64_t n = -7;
        bool nb = false;
        ag_tensor t = SENT;
        expect(ag_custom_ctx_saved_count(&n, ctx), M_INV, "saved_count of a dead context");
        expect(ag_custom_ctx_saved(&t, ctx, 0), M_INV, "saved of a dead context");
        expect(ag_custom_ctx_needs_input_grad(&nb, ctx, 0), M_INV, "needs_input_grad of a dead context");
        if (n != -7 || nb || t != SENT) fail("a refused context call wrote its output");
        H x = pick_t(r);
        if (!x.bad) expect(ag_custom_ctx_save(ctx, &x.h, 1), M_INV, "save on a dead context");
        expect(ag_tensor_numel(&n, ctx), ctx ? M_INV : M_INV, "a context handle where a tensor is wanted");
        break;
    }
    default: {
        g_op = "ag_set_error";
        expect(ag_set_error(NULL), M_ARG, "ag_set_error(NULL)");
        static const char *const msgs[] = {"fuzz: a message", "", "fuzz: \xc3\xa9\xe2\x82\xac unicode"};
        const char *m = msgs[u8(r) % 3];
        expect(ag_set_error(m), M_OK, "ag_set_error");
        const char *got = ag_last_error();
        if (!got || strcmp(got, m) != 0) fail("ag_last_error() is \"%s\" after ag_set_error(\"%s\")", got ? got : "(null)", m);
        break;
    }
    }
}

static void op_custom(Rd *r) {
    switch (u8(r) % 10) {
    case 0:
    case 1: co_new(r); break;
    case 2:
    case 3: co_apply(r); break;
    case 4:
    case 5:
    case 6: co_check(r); break;
    case 7: co_drop(u8(r) % NCO); break;
    default: co_misuse(r); break;
    }
}

/* At the end (and at checkpoints), once every other handle is gone: the ops' handles freed,
 * every destroy run, and the payloads without destroy released. */
static void co_cleanup(void) {
    for (int k = 0; k < NCO; k++) co_drop(k);
}
static void co_after_cleanup(void) {
    if (g_nco_live != 0)
        fail("%d custom op destroy callbacks have not run though every handle is freed", g_nco_live);
    for (int i = 0; i < g_nco_kept; i++) {
        g_co_kept[i]->magic = 0xDEAD;
        free(g_co_kept[i]);
    }
    g_nco_kept = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Issue 18: integer tensors, generators, convolution, pooling, norms, attention, helpers     */
/* ------------------------------------------------------------------------------------------ */

/* Opcode bytes 240..247 (the others keep their meaning) pick one of eight groups; within one,
 * the next byte picks the call. Integer (int64 and bool) tensors live in a pool of their own,
 * ipool, so that the models of the older ops (which read the float pool) stay as they were;
 * the new ops take operands from both pools (an int tensor where a float one is wanted is
 * AG_ERR_DTYPE) and generators from gens. Each model lists the errors the header gives for the
 * arguments: with none, AG_OK (or AG_ERR_OUT_OF_MEMORY); with several, any of them (the header
 * does not order them). */

enum { NI = 4, NG = 2 };
static ag_tensor ipool[NI];
static ag_generator gens[NG];

static bool dtype_any(ag_dtype d) { return dtype_ok(d) || d == AG_INT64 || d == AG_BOOL; }

/* info_of for a tensor of any dtype (int64 and bool included). */
static Info info_any(ag_tensor t) {
    Info in;
    memset(&in, 0, sizeof in);
    const char *saved = g_op;
    g_op = "info (ndim/shape/numel/dtype of a live handle of any dtype)";
    if (chk(ag_tensor_ndim(&in.nd, t)) != AG_OK) fail("ag_tensor_ndim of a live handle %#llx", (unsigned long long)t);
    if (in.nd < 0 || in.nd > AG_MAX_NDIM) fail("ndim %lld", (long long)in.nd);
    if (chk(ag_tensor_shape(in.shape, MAXS, t)) != AG_OK) fail("ag_tensor_shape of a live handle");
    if (chk(ag_tensor_numel(&in.numel, t)) != AG_OK) fail("ag_tensor_numel of a live handle");
    if (chk(ag_tensor_dtype(&in.dtype, t)) != AG_OK) fail("ag_tensor_dtype of a live handle");
    if (!dtype_any(in.dtype)) fail("dtype %d", (int)in.dtype);
    if (chk(ag_tensor_requires_grad(&in.rg, t)) != AG_OK) fail("ag_tensor_requires_grad of a live handle");
    if (!dtype_ok(in.dtype) && in.rg) fail("an int64 or bool tensor requires grad");
    int64_t n = 0;
    if (!numel_of(in.shape, in.nd, &n) || n != in.numel)
        fail("numel %lld does not match the shape (rank %lld)", (long long)in.numel, (long long)in.nd);
    g_op = saved;
    return in;
}

/* Takes a handle of any dtype returned with AG_OK: float results go to the pool, int64 and bool
 * ones to ipool (slot dst), or are freed at once when too large to keep. */
static void take_any(ag_tensor t, uint8_t dst) {
    if (t == SENT || t == 0) fail("AG_OK but no handle was written (%#llx)", (unsigned long long)t);
    owned++;
    Info in = info_any(t);
    if (in.numel > CAP) {
        free_tensor(t);
        return;
    }
    if (dtype_ok(in.dtype)) {
        owned--;
        take(t, dst);
        return;
    }
    int slot = dst % NI;
    if (ipool[slot]) free_tensor(ipool[slot]);
    ipool[slot] = t;
    TRACE("    -> int slot %d = %#llx", slot, (unsigned long long)t);
}

/* result() for any dtype: a failed call wrote nothing, a successful one is taken. */
static ag_status result_any(ag_status s, ag_tensor out, uint8_t dst) {
    if (s != AG_OK) {
        if (out != SENT) fail("the call failed (%s) but wrote %#llx to its output", ag_status_name(s), (unsigned long long)out);
        return s;
    }
    take_any(out, dst);
    return s;
}

/* An operand for the new ops: mostly a float pool tensor (or a bad handle, as pick_t), now and
 * then an int64 or bool one. */
static H pick_x(Rd *r) {
    uint8_t b = u8(r);
    if (b < 40) {
        ag_tensor h = ipool[b % NI];
        return (H){h, h == 0};
    }
    return pick_t(r);
}

/* An index or mask operand: mostly an ipool tensor, sometimes a float one or a bad handle. */
static H pick_i(Rd *r) {
    uint8_t b = u8(r);
    if (b < 176) {
        ag_tensor h = ipool[b % NI];
        if (h) return (H){h, false};
    }
    return pick_t(r);
}

static H pick_g(Rd *r) {
    uint8_t b = u8(r);
    if (b < 216) {
        ag_generator g = gens[b % NG];
        return (H){g, g == 0};
    }
    switch (b % 4) {
    case 0: return (H){0, true};
    case 1: return (H){nstale ? stale[u8(r) % (nstale < NSTALE ? nstale : NSTALE)] : made_up(r), true};
    case 2: { /* a tensor handle: the wrong kind */
        ag_tensor h = pool[u8(r) % NT];
        return (H){h ? h : made_up(r), true};
    }
    default: return (H){made_up(r), true};
    }
}

/* Small parameters (kernel sizes, strides, ...): mostly 0..4, sometimes -2..-1 or extreme. */
static int64_t rd_small(Rd *r) {
    uint8_t b = u8(r);
    if (b < 200) return b % 5;
    if (b < 224) return (int64_t)(b % 3) - 2;
    return rd_i64(r);
}

/* The values of a tensor of at most CAP elements as int64 (ints and bools) or double. */
static int64_t ibuf[CAP + 64];
static void read_ints(ag_tensor t, int64_t n) {
    if (chk(ag_tensor_copy_data(ibuf, CAP, AG_INT64, t)) != AG_OK) fail("reading an int64/bool tensor as int64");
    (void)n;
}
static void read_doubles(ag_tensor t) {
    if (chk(ag_tensor_copy_data(dbuf, CAP, AG_FLOAT64, t)) != AG_OK) fail("reading a tensor as float64");
}

/* Whether the shape of a broadcast with `to` is `to` itself. */
static bool broadcasts_to(const Info *a, const Info *to) {
    if (a->nd > to->nd) return false;
    for (int64_t i = 0; i < a->nd; i++) {
        int64_t x = a->shape[a->nd - 1 - i], y = to->shape[to->nd - 1 - i];
        if (x != 1 && x != y) return false;
    }
    return true;
}

/* The result's shape and dtype and the recording rule for a differentiable result of the float
 * operands among ins (others are skipped). */
static void check_float_result(ag_tensor out, const int64_t *shape, int64_t nd, ag_dtype dt, const H *ins, int n,
                               bool diff, const char *what) {
    owned++;
    Info o = info_of(out);
    if (shape) same_shape(&o, shape, nd, what);
    if (o.dtype != dt) fail("%s: result dtype %d, expected %d", what, (int)o.dtype, (int)dt);
    H fl[4];
    int k = 0;
    for (int i = 0; i < n && k < 4; i++)
        if (!ins[i].bad && ins[i].h && dtype_ok(info_any(ins[i].h).dtype)) fl[k++] = ins[i];
    check_recording(out, fl, k, diff);
    owned--;
}

static void check_int_result(ag_tensor out, const int64_t *shape, int64_t nd, ag_dtype dt, const char *what) {
    owned++;
    Info o = info_any(out);
    if (shape) same_shape(&o, shape, nd, what);
    if (o.dtype != dt) fail("%s: result dtype %d, expected %d", what, (int)o.dtype, (int)dt);
    if (o.rg) fail("%s: an integer result requires grad", what);
    owned--;
}

/* errs: the errors that apply; the allowed statuses follow. */
static unsigned allowed_of(unsigned errs) { return errs ? errs : M_OK | M_OOM; }

/* ---- integer tensors: creation, conversion, argmax, topk, one_hot, comparisons ---- */

static void i18_make(Rd *r) {
    int64_t shape[MAXS] = {0}, nd = u8(r) % 4, n = 1;
    for (int64_t i = 0; i < nd; i++) {
        shape[i] = u8(r) % 5;
        n *= shape[i];
    }
    uint8_t mode = u8(r) % 6, dst = u8(r);
    int64_t lo = (int64_t)(u8(r) % 5) - 2, span = 1 + u8(r) % 8;
    ag_tensor out = SENT;
    ag_status s;
    ag_dtype dt = (mode == 1 || mode == 4) ? AG_BOOL : AG_INT64;
    switch (mode) {
    case 0:
    case 1: {
        static int64_t iv[CAP];
        static uint8_t bv[CAP];
        for (int64_t i = 0; i < n; i++) {
            iv[i] = (u8(r) & 15) == 0 ? rd_i64(r) : lo + (int64_t)(u8(r) % span);
            bv[i] = u8(r) % 3 == 0 ? 0 : (uint8_t)(1 + u8(r) % 3); /* any non-zero byte reads as 1 */
        }
        g_op = "ag_tensor_from_data (int64 / bool)";
        TRACE("ag_tensor_from_data(%s, %lld elements)", dt == AG_BOOL ? "bool" : "int64", (long long)n);
        s = expect(ag_tensor_from_data(&out, mode == 0 ? (const void *)iv : (const void *)bv, shape, nd, dt), M_OK | M_OOM,
                   "from_data of int64 / bool");
        if (s == AG_OK && mode == 1 && n > 0) {
            read_ints(out, n);
            for (int64_t i = 0; i < n; i++)
                if (ibuf[i] != (bv[i] != 0)) fail("a bool tensor from bytes reads %lld at %lld", (long long)ibuf[i], (long long)i);
        }
        break;
    }
    case 2: {
        double v = (u8(r) & 3) == 0 ? rd_double(r) : (double)lo;
        bool whole = isfinite(v) && v == floor(v) && fabs(v) < 9.2e18;
        g_op = "ag_tensor_full (int64)";
        TRACE("ag_tensor_full(int64, %g)", v);
        s = expect(ag_tensor_full(&out, shape, nd, v, AG_INT64), whole ? M_OK | M_OOM : M_ARG, "full int64: a whole number");
        break;
    }
    case 3: {
        double a = (double)lo, b = (double)(lo + (int64_t)span), st = (u8(r) & 3) == 0 ? rd_double(r) : 1;
        g_op = "ag_tensor_arange (int64)";
        TRACE("ag_tensor_arange(%g, %g, %g, int64)", a, b, st);
        bool whole = isfinite(st) && st == floor(st) && st != 0 && fabs(st) < 1e15;
        /* A fractional step can ask for many elements: AG_ERR_OUT_OF_MEMORY either way (the header lists it). */
        s = expect(ag_tensor_arange(&out, a, b, st, AG_INT64), whole ? M_OK | M_OOM : M_ARG | M_OK | M_OOM, "arange int64");
        break;
    }
    case 4:
    default: {
        /* comparisons of two ipool tensors: bool; sum of one: int64 */
        H a = pick_i(r), b = pick_i(r);
        bool sum = mode == 5;
        g_op = sum ? "ag_sum (int64 / bool)" : "ag_lt (int64 / bool)";
        if (a.bad || (!sum && b.bad)) {
            s = sum ? ag_sum(&out, a.h, NULL, 0, false) : ag_lt(&out, a.h, b.h);
            expect(s, M_INV, "a bad handle");
            result_any(s, out, dst);
            return;
        }
        Info ia = info_any(a.h), ib = sum ? ia : info_any(b.h);
        TRACE("%s(%#llx, %#llx)", g_op, (unsigned long long)a.h, (unsigned long long)b.h);
        if (sum) {
            s = ag_sum(&out, a.h, NULL, 0, false);
            expect(s, M_OK | M_OOM, "sum of any dtype");
            if (s == AG_OK) {
                ag_dtype want = dtype_ok(ia.dtype) ? ia.dtype : AG_INT64;
                owned++;
                Info o = info_any(out);
                owned--;
                if (o.dtype != want) fail("ag_sum of dtype %d gave dtype %d", (int)ia.dtype, (int)o.dtype);
                if (ia.dtype == AG_BOOL && ia.numel <= CAP) {
                    int64_t cnt = 0, got = -1;
                    read_ints(a.h, ia.numel);
                    for (int64_t i = 0; i < ia.numel; i++) cnt += ibuf[i] != 0;
                    if (chk(ag_tensor_copy_data(&got, 1, AG_INT64, out)) != AG_OK) fail("reading a count");
                    if (got != cnt) fail("ag_sum of a bool mask is %lld, counted %lld", (long long)got, (long long)cnt);
                }
            }
            result_any(s, out, dst);
            return;
        }
        const Info *both[2] = {&ia, &ib};
        int64_t bs[MAXS], bnd = 0, bn = 0;
        bool bc = broadcast(both, 2, bs, &bnd);
        unsigned errs = 0;
        if (!bc) errs |= M_SHAPE;
        if (ia.dtype != ib.dtype) errs |= M_DTYPE;
        if (bc && numel_of(bs, bnd, &bn) && bn > BIG) return;
        s = expect(ag_lt(&out, a.h, b.h), allowed_of(errs), "lt of two int64 or two bool tensors: bool");
        if (s == AG_OK) {
            ag_dtype want = dtype_ok(ia.dtype) ? ia.dtype : AG_BOOL;
            owned++;
            Info o = info_any(out);
            owned--;
            same_shape(&o, bs, bnd, "comparison shape");
            if (o.dtype != want) fail("ag_lt of dtype %d gave dtype %d", (int)ia.dtype, (int)o.dtype);
        }
        result_any(s, out, dst);
        return;
    }
    }
    result_any(s, out, dst);
}

static void i18_convert(Rd *r) {
    H a = pick_x(r);
    uint8_t which = u8(r) % 5, dst = u8(r);
    ag_tensor out = SENT, idx = SENT;
    ag_status s;
    if (a.bad) {
        g_op = "issue-18 op with a bad handle";
        TRACE("to_dtype/argmax/topk/one_hot of a bad handle %#llx", (unsigned long long)a.h);
        switch (which) {
        case 0: s = ag_to_dtype(&out, a.h, AG_FLOAT64); break;
        case 1: s = ag_argmax(&out, a.h, 0, false); break;
        case 2: s = ag_argmin(&out, a.h, 0, true); break;
        case 3: s = ag_topk(&out, &idx, a.h, 1, 0, true); break;
        default: s = ag_one_hot(&out, a.h, 3, AG_FLOAT32); break;
        }
        expect(s, M_INV | M_ARG | M_SHAPE, "a bad handle");
        if (idx != SENT) fail("a failed topk wrote its indices");
        result_any(s, out, dst);
        return;
    }
    Info ia = info_any(a.h);
    bool fl = dtype_ok(ia.dtype);
    switch (which) {
    case 0: { /* to_dtype */
        uint8_t d = u8(r);
        ag_dtype dt = d < 240 ? (ag_dtype)(1 + d % 4) : (ag_dtype)rd_i64(r);
        unsigned errs = dtype_any(dt) ? 0 : M_DTYPE;
        bool maybe_arg = false;
        if (!errs && dt == AG_INT64 && fl) {
            if (ia.numel > CAP) return;
            read_doubles(a.h);
            for (int64_t i = 0; i < ia.numel; i++)
                if (!isfinite(dbuf[i]) || dbuf[i] >= 9.3e18 || dbuf[i] <= -9.3e18) errs |= M_ARG;
                else if (fabs(dbuf[i]) >= 9.2e18) maybe_arg = true;
        }
        g_op = "ag_to_dtype";
        TRACE("ag_to_dtype(%#llx, %d)", (unsigned long long)a.h, (int)dt);
        s = expect(ag_to_dtype(&out, a.h, dt), allowed_of(errs) | (maybe_arg ? M_ARG : 0),
                   "to_dtype: a known dtype; to int64 finite values within int64");
        if (s == AG_OK) {
            /* to its own dtype: "a new handle to a's values" (maybe a itself: no recording check) */
            if (dtype_ok(dt)) check_float_result(out, ia.shape, ia.nd, dt, &a, 1, fl && dt != ia.dtype, "to_dtype");
            else check_int_result(out, ia.shape, ia.nd, dt, "to_dtype");
            if (dt == AG_BOOL && ia.numel <= CAP && ia.numel > 0) {
                owned++;
                read_ints(out, ia.numel);
                owned--;
                for (int64_t i = 0; i < ia.numel; i++)
                    if (ibuf[i] != 0 && ibuf[i] != 1) fail("to_dtype(bool) read as int64 gives %lld", (long long)ibuf[i]);
            }
        }
        result_any(s, out, dst);
        return;
    }
    case 1:
    case 2: { /* argmax / argmin */
        int64_t ax = rd_axis(r);
        bool keep = bit(r);
        unsigned errs = 0;
        int64_t rank = ia.nd ? ia.nd : 1;
        bool ax_ok = ax >= -rank && ax < rank;
        if (!ax_ok) errs |= M_ARG;
        if (!fl) errs |= M_DTYPE;
        int64_t shape[MAXS], nd = 0;
        if (ax_ok && ia.nd > 0) {
            int64_t a0 = ax < 0 ? ax + ia.nd : ax;
            if (ia.shape[a0] == 0) errs |= M_SHAPE;
            for (int64_t i = 0; i < ia.nd; i++) {
                if (i == a0 && !keep) continue;
                shape[nd++] = i == a0 ? 1 : ia.shape[i];
            }
        } else if (ax_ok && keep) {
            nd = 0; /* a 0-d input: keepdims keeps it 0-d (or gives rank 1: either) */
        }
        g_op = which == 1 ? "ag_argmax" : "ag_argmin";
        TRACE("%s(%#llx, %lld, %d)", g_op, (unsigned long long)a.h, (long long)ax, keep);
        s = which == 1 ? ag_argmax(&out, a.h, ax, keep) : ag_argmin(&out, a.h, ax, keep);
        expect(s, allowed_of(errs), "argmax/argmin: a float tensor, an axis in range of non-zero extent");
        if (s == AG_OK) {
            check_int_result(out, ia.nd > 0 ? shape : NULL, nd, AG_INT64, g_op);
            /* every index lies within the axis */
            owned++;
            Info o = info_any(out);
            if (o.numel <= CAP && o.numel > 0) {
                int64_t ext = ia.nd ? ia.shape[ax < 0 ? ax + ia.nd : ax] : 1;
                read_ints(out, o.numel);
                for (int64_t i = 0; i < o.numel; i++)
                    if (ibuf[i] < 0 || ibuf[i] >= ext) fail("%s gave index %lld on an axis of %lld", g_op, (long long)ibuf[i], (long long)ext);
            }
            owned--;
        }
        result_any(s, out, dst);
        return;
    }
    case 3: { /* topk */
        int64_t k = rd_small(r), ax = rd_axis(r);
        bool largest = bit(r);
        uint8_t f = u8(r), dsti = u8(r);
        unsigned errs = 0;
        bool ax_ok = ia.nd > 0 && ax >= -ia.nd && ax < ia.nd;
        if (ia.nd == 0) errs |= M_SHAPE | ((ax == 0 || ax == -1) && k >= 0 && k <= 1 ? 0 : M_ARG);
        else if (!ax_ok) errs |= M_ARG;
        int64_t shape[MAXS], a0 = 0;
        if (ax_ok) {
            a0 = ax < 0 ? ax + ia.nd : ax;
            if (k < 0 || k > ia.shape[a0]) errs |= M_ARG;
            memcpy(shape, ia.shape, sizeof shape);
            shape[a0] = k;
        } else if (k < 0) {
            errs |= M_ARG;
        }
        if (!fl) errs |= M_DTYPE;
        bool nul_v = (f & 15) == 1, nul_i = (f & 15) == 2;
        if (nul_v || nul_i) errs |= M_ARG;
        g_op = "ag_topk";
        TRACE("ag_topk(%#llx, k=%lld, axis=%lld, largest=%d%s)", (unsigned long long)a.h, (long long)k, (long long)ax,
              largest, nul_v ? ", values NULL" : nul_i ? ", indices NULL" : "");
        s = expect(ag_topk(nul_v ? NULL : &out, nul_i ? NULL : &idx, a.h, k, ax, largest), allowed_of(errs),
                   "topk: k in 0..extent, an axis in range, a float tensor of rank >= 1, both outputs");
        if (s != AG_OK) {
            if (out != SENT || idx != SENT) fail("a failed topk wrote an output");
            return;
        }
        check_float_result(out, shape, ia.nd, ia.dtype, &a, 1, true, "topk values");
        check_int_result(idx, shape, ia.nd, AG_INT64, "topk indices");
        /* values are in order, and equal the input at their indices (checked along a 1-D input) */
        if (ia.nd == 1 && k > 0 && ia.numel <= CAP) {
            static double x[CAP];
            read_doubles(a.h);
            memcpy(x, dbuf, sizeof(double) * (size_t)ia.numel);
            owned += 2;
            read_doubles(out);
            read_ints(idx, k);
            owned -= 2;
            for (int64_t i = 0; i < k; i++) {
                if (ibuf[i] < 0 || ibuf[i] >= ia.numel) fail("topk index %lld out of range", (long long)ibuf[i]);
                double v = x[ibuf[i]];
                if (!(v == dbuf[i] || (isnan(v) && isnan(dbuf[i])))) fail("topk value %g is not x[%lld] = %g", dbuf[i], (long long)ibuf[i], v);
                if (i > 0 && !isnan(dbuf[i]) && !isnan(dbuf[i - 1]) && (largest ? dbuf[i] > dbuf[i - 1] : dbuf[i] < dbuf[i - 1]))
                    fail("topk values out of order at %lld", (long long)i);
                /* nan counts as the largest: first when largest, last (never before a number) when not */
                if (i > 0 && !largest && isnan(dbuf[i - 1]) && !isnan(dbuf[i]))
                    fail("topk(largest = false) put nan before %g (nan counts as the largest)", dbuf[i]);
            }
        }
        take_any(out, dst);
        take_any(idx, dsti);
        return;
    }
    default: { /* one_hot */
        int64_t classes = (u8(r) & 7) == 0 ? rd_i64(r) : (int64_t)(u8(r) % 7) - 1;
        uint8_t d = u8(r);
        ag_dtype dt = d < 240 ? (ag_dtype)(1 + d % 4) : (ag_dtype)rd_i64(r);
        unsigned errs = 0;
        if (ia.dtype != AG_INT64) errs |= M_DTYPE;
        if (!(dt == AG_FLOAT32 || dt == AG_FLOAT64 || dt == AG_INT64)) errs |= M_DTYPE;
        if (classes < -1) errs |= M_ARG;
        if (ia.nd + 1 > AG_MAX_NDIM) errs |= M_SHAPE;
        int64_t c = classes;
        if (ia.dtype == AG_INT64) {
            if (ia.numel > CAP) return;
            if (ia.numel > 0) read_ints(a.h, ia.numel);
            if (classes == -1) {
                if (ia.numel == 0) errs |= M_ARG;
                int64_t m = -1;
                for (int64_t i = 0; i < ia.numel; i++)
                    if (ibuf[i] > m) m = ibuf[i];
                c = m < INT64_MAX ? m + 1 : m;
            }
            for (int64_t i = 0; i < ia.numel; i++)
                if (ibuf[i] < 0 || (c >= 0 && ibuf[i] >= c)) errs |= M_ARG;
        }
        int64_t on = 0;
        if (!errs && c >= 0) {
            if (__builtin_mul_overflow(ia.numel, c, &on)) errs |= M_SHAPE | M_OOM;
            else if (!size_allowed(true, on)) return;
            else if (on >= HUGE) errs |= M_OOM | M_SHAPE;
        }
        if (!errs && c < 0) return;
        g_op = "ag_one_hot";
        TRACE("ag_one_hot(%#llx, %lld, %d)", (unsigned long long)a.h, (long long)classes, (int)dt);
        s = expect(ag_one_hot(&out, a.h, classes, dt), allowed_of(errs),
                   "one_hot: int64 indices in 0..classes-1, classes >= -1, a float or int64 dtype");
        if (s == AG_OK) {
            int64_t shape[MAXS];
            memcpy(shape, ia.shape, sizeof shape);
            shape[ia.nd] = c;
            if (dtype_ok(dt)) check_float_result(out, shape, ia.nd + 1, dt, &a, 0, false, "one_hot");
            else check_int_result(out, shape, ia.nd + 1, dt, "one_hot");
            if (on <= CAP && on > 0) {
                owned++;
                read_doubles(out);
                owned--;
                double total = 0;
                for (int64_t i = 0; i < on; i++) total += dbuf[i];
                if (total != (double)ia.numel) fail("one_hot has %g ones for %lld indices", total, (long long)ia.numel);
            }
        }
        result_any(s, out, dst);
        return;
    }
    }
}

/* ---- indices and masks: embedding, cross_entropy_labels, masked_fill, logical ops ---- */

static void i18_index(Rd *r) {
    uint8_t which = u8(r) % 6, dst = u8(r);
    ag_tensor out = SENT;
    ag_status s;
    H i = pick_i(r), x = pick_x(r);
    if (i.bad || (which != 4 && x.bad)) {
        g_op = "issue-18 index op with a bad handle";
        TRACE("embedding/cross_entropy_labels/masked_fill/logical of bad handles %#llx %#llx", (unsigned long long)i.h,
              (unsigned long long)x.h);
        switch (which) {
        case 0: s = ag_embedding(&out, i.h, x.h); break;
        case 1: s = ag_cross_entropy_labels(&out, x.h, i.h); break;
        case 2: s = ag_masked_fill(&out, x.h, i.h, 1.0); break;
        case 3: s = ag_logical_and(&out, i.h, x.h); break;
        case 4: s = ag_logical_not(&out, i.h); break;
        default: s = ag_logical_or(&out, i.h, x.h); break;
        }
        expect(s, M_INV | M_DTYPE | M_SHAPE | M_ARG, "a bad handle");
        result_any(s, out, dst);
        return;
    }
    Info ii = info_any(i.h), ix = which == 4 ? ii : info_any(x.h);
    if (ii.numel > CAP) return;
    switch (which) {
    case 0: { /* embedding(indices, weight) */
        unsigned errs = 0;
        if (ii.dtype != AG_INT64) errs |= M_DTYPE;
        if (!dtype_ok(ix.dtype)) errs |= M_DTYPE;
        if (ix.nd != 2) errs |= M_SHAPE;
        if (ii.nd + 1 > AG_MAX_NDIM) errs |= M_SHAPE;
        if (ii.dtype == AG_INT64 && ix.nd == 2 && ii.numel > 0) {
            read_ints(i.h, ii.numel);
            for (int64_t k = 0; k < ii.numel; k++)
                if (ibuf[k] < 0 || ibuf[k] >= ix.shape[0]) errs |= M_ARG;
        }
        int64_t shape[MAXS], on = 0;
        memcpy(shape, ii.shape, sizeof shape);
        if (ix.nd == 2) {
            shape[ii.nd] = ix.shape[1];
            if (__builtin_mul_overflow(ii.numel, ix.shape[1], &on) || (on > BIG && !errs)) return;
        }
        g_op = "ag_embedding";
        TRACE("ag_embedding(%#llx, %#llx)", (unsigned long long)i.h, (unsigned long long)x.h);
        s = expect(ag_embedding(&out, i.h, x.h), allowed_of(errs), "embedding: int64 indices in 0..V-1, a (V, D) float weight");
        if (s == AG_OK) check_float_result(out, shape, ii.nd + 1, ix.dtype, &x, 1, true, "embedding");
        break;
    }
    case 1: { /* cross_entropy_labels(logits, labels) */
        unsigned errs = 0;
        if (ii.dtype != AG_INT64) errs |= M_DTYPE;
        if (!dtype_ok(ix.dtype)) errs |= M_DTYPE;
        if (ix.nd != 2) errs |= M_SHAPE;
        else if (ii.nd != 1 || ii.shape[0] != ix.shape[0]) errs |= M_SHAPE;
        if (ii.dtype == AG_INT64 && ix.nd == 2 && ii.numel > 0) {
            read_ints(i.h, ii.numel);
            for (int64_t k = 0; k < ii.numel; k++)
                if (ibuf[k] < 0 || ibuf[k] >= ix.shape[1]) errs |= M_ARG;
        }
        if (ix.numel > BIG) return;
        g_op = "ag_cross_entropy_labels";
        TRACE("ag_cross_entropy_labels(%#llx, %#llx)", (unsigned long long)x.h, (unsigned long long)i.h);
        s = expect(ag_cross_entropy_labels(&out, x.h, i.h), allowed_of(errs),
                   "cross_entropy_labels: (N, C) float logits, (N) int64 labels in 0..C-1");
        if (s == AG_OK) check_float_result(out, NULL, 0, ix.dtype, &x, 1, true, "cross_entropy_labels");
        break;
    }
    case 2: { /* masked_fill(a, mask, value) */
        double v = rd_double(r);
        unsigned errs = 0;
        if (!dtype_ok(ix.dtype)) errs |= M_DTYPE;
        if (!broadcasts_to(&ii, &ix)) errs |= M_SHAPE;
        g_op = "ag_masked_fill";
        TRACE("ag_masked_fill(%#llx, %#llx, %g)", (unsigned long long)x.h, (unsigned long long)i.h, v);
        s = expect(ag_masked_fill(&out, x.h, i.h, v), allowed_of(errs), "masked_fill: a mask broadcasting to a float a");
        if (s == AG_OK) check_float_result(out, ix.shape, ix.nd, ix.dtype, &x, 1, true, "masked_fill");
        break;
    }
    default: { /* logical_and / not / or: any dtypes */
        const Info *both[2] = {&ii, &ix};
        int64_t bs[MAXS], bnd = 0, bn = 0;
        bool bc = broadcast(both, 2, bs, &bnd);
        if (bc && numel_of(bs, bnd, &bn) && bn > BIG) return;
        g_op = which == 3 ? "ag_logical_and" : which == 4 ? "ag_logical_not" : "ag_logical_or";
        TRACE("%s(%#llx, %#llx)", g_op, (unsigned long long)i.h, (unsigned long long)x.h);
        if (which == 4) {
            s = expect(ag_logical_not(&out, i.h), M_OK | M_OOM, "logical_not of any dtype");
            if (s == AG_OK) check_int_result(out, ii.shape, ii.nd, AG_BOOL, g_op);
        } else {
            s = which == 3 ? ag_logical_and(&out, i.h, x.h) : ag_logical_or(&out, i.h, x.h);
            expect(s, bc ? M_OK | M_OOM : M_SHAPE, "logical and/or: shapes that broadcast");
            if (s == AG_OK) check_int_result(out, bs, bnd, AG_BOOL, g_op);
        }
        break;
    }
    }
    result_any(s, out, dst);
}

/* ---- generators, random creators, dropout, multinomial ---- */

static void i18_random(Rd *r) {
    uint8_t which = u8(r) % 10, dst = u8(r);
    ag_tensor out = SENT;
    ag_status s;
    switch (which) {
    case 0: { /* new */
        int slot = u8(r) % NG;
        uint64_t seed = (u8(r) & 3) == 0 ? u64(r) : u8(r);
        ag_generator g = SENT;
        g_op = "ag_generator_new";
        TRACE("ag_generator_new(%llu) -> gen slot %d", (unsigned long long)seed, slot);
        if ((dst & 31) == 0) {
            expect(ag_generator_new(NULL, seed), M_ARG, "out NULL");
            return;
        }
        s = expect(ag_generator_new(&g, seed), M_OK | M_OOM, "a new generator");
        if (s != AG_OK) {
            if (g != SENT) fail("a failed ag_generator_new wrote its output");
            return;
        }
        if (g == 0 || g == SENT) fail("ag_generator_new gave no handle");
        owned++;
        if (gens[slot]) {
            expect(ag_generator_free(gens[slot]), M_OK, "free a live generator");
            owned--;
            remember_stale(gens[slot]);
        }
        gens[slot] = g;
        return;
    }
    case 1: { /* free, of a live slot or a bad handle */
        H g = pick_g(r);
        g_op = "ag_generator_free";
        TRACE("ag_generator_free(%#llx)%s", (unsigned long long)g.h, g.bad ? " [bad]" : "");
        s = expect(ag_generator_free(g.h), g.h == 0 ? M_OK : g.bad ? M_INV : M_OK, "free a generator (0 does nothing)");
        if (s == AG_OK && g.h) {
            for (int k = 0; k < NG; k++)
                if (gens[k] == g.h) gens[k] = 0;
            owned--;
            remember_stale(g.h);
        }
        return;
    }
    case 2: { /* state: get, draw, set back, draw again: the same values */
        H g = pick_g(r);
        uint64_t st = 0x5EA7;
        g_op = "ag_generator_get_state";
        TRACE("ag_generator_get_state / set_state(%#llx)%s", (unsigned long long)g.h, g.bad ? " [bad]" : "");
        s = expect(ag_generator_get_state(&st, g.h), g.bad ? M_INV : M_OK, "get_state");
        if (s != AG_OK) {
            if (st != 0x5EA7) fail("a failed get_state wrote its output");
            expect(ag_generator_set_state(g.h, u64(r)), M_INV, "set_state of a bad handle");
            return;
        }
        expect(ag_generator_get_state(NULL, g.h), M_ARG, "get_state(NULL)");
        int64_t shape[1] = {1 + u8(r) % 8};
        ag_tensor a = SENT, b = SENT;
        g_op = "ag_random_uniform (twice from one state)";
        if (expect(ag_random_uniform(&a, shape, 1, 0, 1, g.h, AG_FLOAT64), M_OK | M_OOM, "uniform") != AG_OK) return;
        owned++;
        if (bit(r)) expect(ag_generator_set_state(g.h, st), M_OK, "set_state");
        else expect(ag_generator_set_state(g.h, u64(r)), M_OK, "set_state to any word");
        uint64_t st2 = 0;
        expect(ag_generator_get_state(&st2, g.h), M_OK, "get_state");
        if (expect(ag_random_uniform(&b, shape, 1, 0, 1, g.h, AG_FLOAT64), M_OK | M_OOM, "uniform") == AG_OK) {
            owned++;
            static double va[8];
            read_doubles(a);
            memcpy(va, dbuf, sizeof va);
            read_doubles(b);
            for (int64_t k = 0; st2 == st && k < shape[0]; k++)
                if (va[k] != dbuf[k]) fail("draws after set_state to the same state differ at %lld", (long long)k);
            for (int64_t k = 0; k < shape[0]; k++)
                if (!(dbuf[k] >= 0 && dbuf[k] < 1)) fail("a uniform value %g outside [0, 1)", dbuf[k]);
            free_tensor(b);
        }
        free_tensor(a);
        return;
    }
    case 3:
    case 4:
    case 5: { /* random_uniform / random_normal / randint */
        int64_t shape[MAXS], nd;
        int cls = rd_shape(r, shape, &nd);
        H g = pick_g(r);
        double lo = rd_double(r), hi = rd_double(r);
        if (bit(r)) {
            lo = (double)(int64_t)(u8(r) % 7) - 3;
            hi = lo + (double)(u8(r) % 5);
        }
        ag_dtype dt = which == 5 ? AG_INT64 : (u8(r) < 232 ? (ag_dtype)(1 + u8(r) % 2) : (ag_dtype)(1 + u8(r) % 5));
        unsigned errs = 0;
        if (cls == SH_BAD) errs |= (nd < 0 || nd > AG_MAX_NDIM) ? M_ARG : M_SHAPE | M_OOM;
        else if (cls == SH_HUGE) errs |= M_OOM | M_SHAPE;
        else if (cls == SH_ODD) errs |= M_SHAPE | M_OOM; /* or 0 elements */
        if (g.bad) errs |= M_INV;
        unsigned maybe = cls == SH_ODD ? M_OK : 0;
        const char *name;
        if (which == 3) {
            name = "ag_random_uniform";
            if (!dtype_ok(dt)) errs |= M_DTYPE;
            if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi)) errs |= M_ARG;
        } else if (which == 4) {
            name = "ag_random_normal";
            if (!dtype_ok(dt)) errs |= M_DTYPE;
            if (hi < 0 || isnan(hi)) errs |= M_ARG;
            if (!isfinite(lo) || !isfinite(hi)) maybe |= M_ARG | (errs ? 0 : M_OK | M_OOM);
        } else {
            name = "ag_randint";
        }
        int64_t ilo = (int64_t)(isfinite(lo) && fabs(lo) < 1e18 ? lo : -1), ihi = (int64_t)(isfinite(hi) && fabs(hi) < 1e18 ? hi : 1);
        if (which == 5) {
            if ((u8(r) & 7) == 0) ilo = rd_i64(r), ihi = rd_i64(r);
            if (ilo >= ihi) errs |= M_ARG;
        }
        g_op = name;
        TRACE("%s(rank %lld, %g, %g, g=%#llx, dtype %d)%s", name, (long long)nd, lo, hi, (unsigned long long)g.h, (int)dt,
              g.bad ? " [bad]" : "");
        if (which == 3) s = ag_random_uniform(&out, shape, nd, lo, hi, g.h, dt);
        else if (which == 4) s = ag_random_normal(&out, shape, nd, lo, hi, g.h, dt);
        else s = ag_randint(&out, shape, nd, ilo, ihi, g.h);
        expect(s, allowed_of(errs) | maybe, "random creator: shape, bounds, generator, dtype");
        if (s == AG_OK) {
            owned++;
            Info o = info_any(out);
            if (cls == SH_SANE) same_shape(&o, shape, nd, name);
            if (o.rg) fail("%s: a new leaf requires grad", name);
            if (which == 5 && o.dtype != AG_INT64) fail("randint gave dtype %d", (int)o.dtype);
            if (which == 5 && o.numel <= CAP && o.numel > 0) {
                read_ints(out, o.numel);
                for (int64_t k = 0; k < o.numel; k++)
                    if (ibuf[k] < ilo || ibuf[k] >= ihi) fail("randint(%lld, %lld) gave %lld", (long long)ilo, (long long)ihi, (long long)ibuf[k]);
            }
            owned--;
        }
        result_any(s, out, dst);
        return;
    }
    case 6: { /* randperm */
        int64_t n = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 40;
        H g = pick_g(r);
        unsigned errs = (n < 0 || n > ((int64_t)1 << 40)) ? M_ARG : 0;
        if (g.bad) errs |= M_INV;
        if (!errs && n > BIG) return;
        g_op = "ag_randperm";
        TRACE("ag_randperm(%lld, %#llx)", (long long)n, (unsigned long long)g.h);
        s = expect(ag_randperm(&out, n, g.h), allowed_of(errs), "randperm: 0 <= n <= 2^40, a live generator");
        if (s == AG_OK) {
            int64_t shape[1] = {n};
            check_int_result(out, shape, 1, AG_INT64, "randperm");
            if (n > 0 && n <= CAP) {
                static bool seen[CAP];
                memset(seen, 0, sizeof seen);
                owned++;
                read_ints(out, n);
                owned--;
                for (int64_t k = 0; k < n; k++) {
                    if (ibuf[k] < 0 || ibuf[k] >= n || seen[ibuf[k]]) fail("randperm(%lld) is not a permutation", (long long)n);
                    seen[ibuf[k]] = true;
                }
            }
        }
        result_any(s, out, dst);
        return;
    }
    case 7: { /* multinomial */
        H w = pick_x(r), g = pick_g(r);
        int64_t samples = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 6;
        bool repl = bit(r);
        if (w.bad || g.bad) {
            g_op = "ag_multinomial";
            s = ag_multinomial(&out, w.h, samples, repl, g.h);
            expect(s, M_INV | M_ARG | M_SHAPE | M_DTYPE, "a bad handle");
            result_any(s, out, dst);
            return;
        }
        Info iw = info_any(w.h);
        unsigned errs = 0;
        if (samples < 0) errs |= M_ARG;
        if (!dtype_ok(iw.dtype)) errs |= M_DTYPE;
        if (iw.nd != 1 && iw.nd != 2) errs |= M_SHAPE;
        int64_t C = iw.nd >= 1 ? iw.shape[iw.nd - 1] : 0, rows = iw.nd == 2 ? iw.shape[0] : 1;
        if ((iw.nd == 1 || iw.nd == 2) && C == 0) errs |= M_SHAPE;
        if (dtype_ok(iw.dtype) && (iw.nd == 1 || iw.nd == 2) && C > 0 && iw.numel <= CAP && iw.numel > 0) {
            read_doubles(w.h);
            for (int64_t q = 0; q < rows; q++) {
                int64_t pos = 0;
                for (int64_t c = 0; c < C; c++) {
                    double v = dbuf[q * C + c];
                    if (!isfinite(v) || v < 0) errs |= M_ARG;
                    else if (v > 0) pos++;
                }
                if (pos == 0) errs |= M_ARG;
                if (!repl && samples > pos) errs |= M_ARG;
            }
        }
        int64_t on = 0;
        if (!errs && (__builtin_mul_overflow(rows, samples, &on) || on > BIG)) return;
        g_op = "ag_multinomial";
        TRACE("ag_multinomial(%#llx, %lld, %d, %#llx)", (unsigned long long)w.h, (long long)samples, repl, (unsigned long long)g.h);
        s = expect(ag_multinomial(&out, w.h, samples, repl, g.h), allowed_of(errs),
                   "multinomial: (C) or (N, C) finite weights >= 0, a positive one per row, samples >= 0");
        if (s == AG_OK) {
            int64_t shape[2] = {rows, samples};
            check_int_result(out, iw.nd == 2 ? shape : shape + 1, iw.nd, AG_INT64, "multinomial");
            if (on > 0 && on <= CAP) {
                static double wv[CAP];
                memcpy(wv, dbuf, sizeof(double) * (size_t)iw.numel);
                owned++;
                read_ints(out, on);
                owned--;
                for (int64_t q = 0; q < rows; q++)
                    for (int64_t k = 0; k < samples; k++) {
                        int64_t c = ibuf[q * samples + k];
                        if (c < 0 || c >= C || !(wv[q * C + c] > 0)) fail("multinomial drew category %lld of weight 0 or outside", (long long)c);
                        for (int64_t j = 0; !repl && j < k; j++)
                            if (ibuf[q * samples + j] == c) fail("multinomial without replacement drew %lld twice", (long long)c);
                    }
            }
        }
        result_any(s, out, dst);
        return;
    }
    default: { /* dropout */
        H a = pick_x(r), g = pick_g(r);
        double p = (u8(r) & 3) == 0 ? rd_double(r) : (double)(u8(r) % 5) / 4.0;
        bool training = u8(r) % 4 != 0;
        unsigned errs = 0;
        Info ia = {0};
        if (a.bad) errs |= M_INV;
        else ia = info_any(a.h);
        if (g.bad) errs |= M_INV;
        if (!(p >= 0 && p <= 1)) errs |= M_ARG;
        if (!a.bad && !dtype_ok(ia.dtype)) errs |= M_DTYPE;
        if (!a.bad && ia.numel > BIG) return;
        g_op = "ag_dropout";
        TRACE("ag_dropout(%#llx, %g, %d, %#llx)", (unsigned long long)a.h, p, training, (unsigned long long)g.h);
        s = expect(ag_dropout(&out, a.h, p, training, g.h), allowed_of(errs), "dropout: p in [0, 1], a float tensor, a generator");
        if (s == AG_OK) {
            bool identity = !(training && p > 0);
            owned++;
            Info o = info_of(out);
            same_shape(&o, ia.shape, ia.nd, "dropout");
            if (o.dtype != ia.dtype) fail("dropout changed the dtype");
            if (!identity) check_recording(out, &a, 1, true);
            /* each element is 0 or x / (1 - p) */
            if (ia.numel > 0 && ia.numel <= CAP) {
                static double x[CAP];
                read_doubles(a.h);
                memcpy(x, dbuf, sizeof(double) * (size_t)ia.numel);
                read_doubles(out);
                double sc = identity ? 1 : p < 1 ? 1 / (1 - p) : 0;
                for (int64_t k = 0; k < ia.numel; k++) {
                    double want = x[k] * sc, got = dbuf[k];
                    double tiny = ia.dtype == AG_FLOAT32 ? 1e-37 : 1e-300;
                    bool ok = got == 0 || (isnan(want) && isnan(got)) || fabs(got - want) <= 1e-6 * fabs(want) + tiny ||
                              (isinf(want) && got == want) || (isinf(got) && fabs(want) > 3.4e38 && ia.dtype == AG_FLOAT32);
                    if (identity && !(got == x[k] || (isnan(got) && isnan(x[k])))) ok = false;
                    if (!ok) fail("dropout(p = %g, training %d) gave %g for %g", p, training, got, x[k]);
                }
            }
            owned--;
        }
        result_any(s, out, dst);
        return;
    }
    }
}

/* ---- convolution and pooling ---- */

/* floor((in + 2 pad - span) / stride) + 1 in 128 bits; < 1 when the window does not fit. */
/* Products of extents for the harness's own size checks: the extents of an empty tensor may be
 * huge, and a product of four of them can pass even __int128; these saturate instead (all
 * arguments are >= 0). */
static const __int128 I128_MAX = (__int128)(((unsigned __int128)1 << 127) - 1);
static __int128 mul_sat(__int128 a, __int128 b) {
    if (a == 0 || b == 0) return 0;
    return a > I128_MAX / b ? I128_MAX : a * b;
}
static __int128 mul4_sat(__int128 a, __int128 b, __int128 c, __int128 d) { return mul_sat(mul_sat(a, b), mul_sat(c, d)); }

static __int128 out_extent(int64_t in, int64_t pad, __int128 span, int64_t stride) {
    __int128 padded = (__int128)in + 2 * (__int128)pad;
    if (padded < span || stride < 1) return 0;
    return (padded - span) / stride + 1;
}

static void i18_conv(Rd *r) {
    bool one = u8(r) % 3 == 0; /* conv1d */
    H x = pick_x(r), w = pick_x(r), b = pick_x(r);
    if ((u8(r) & 1) || b.h == 0) b = (H){0, false};
    int64_t sh = 1 + u8(r) % 2, sw = 1 + u8(r) % 3, ph = u8(r) % 3, pw = u8(r) % 3, dh = 1 + u8(r) % 2, dw = 1 + u8(r) % 2,
            groups = 1 + u8(r) % 3;
    uint8_t odd = u8(r), dst = u8(r);
    switch (odd % 16) { /* now and then a parameter out of range or extreme */
    case 0: sh = rd_small(r); break;
    case 1: pw = rd_i64(r); break;
    case 2: dw = rd_i64(r); break;
    case 3: groups = rd_i64(r); break;
    case 4: ph = rd_i64(r); break;
    case 5: sw = rd_i64(r); break;
    default: break;
    }
    if (one) sh = 1, ph = 0, dh = 1;
    bool nul = (dst & 63) == 0;
    unsigned errs = 0;
    if (x.bad || w.bad || b.bad) {
        g_op = one ? "ag_conv1d" : "ag_conv2d";
        TRACE("%s with a bad handle", g_op);
        ag_tensor out = SENT;
        ag_status s = one ? ag_conv1d(&out, x.h, w.h, b.h, sw, pw, dw, groups)
                          : ag_conv2d(&out, x.h, w.h, b.h, sh, sw, ph, pw, dh, dw, groups);
        expect(s, M_INV | M_ARG, "a bad handle");
        result_any(s, out, dst);
        return;
    }
    Info ix = info_any(x.h), iw = info_any(w.h), ib = {0};
    if (b.h) ib = info_any(b.h);
    int rank = one ? 3 : 4;
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0 || groups < 1) errs |= M_ARG;
    if (!dtype_ok(ix.dtype) || !dtype_ok(iw.dtype) || iw.dtype != ix.dtype || (b.h && ib.dtype != ix.dtype)) errs |= M_DTYPE;
    int64_t shape[4] = {0, 0, 0, 0};
    __int128 on = 0;
    if (ix.nd != rank || iw.nd != rank) {
        errs |= M_SHAPE;
        if (iw.nd == rank && (iw.shape[rank - 1] == 0 || (!one && iw.shape[2] == 0))) errs |= M_ARG;
    } else {
        int64_t N = ix.shape[0], C = ix.shape[1], H = one ? 1 : ix.shape[2], W = ix.shape[rank - 1];
        int64_t O = iw.shape[0], Cg = iw.shape[1], kH = one ? 1 : iw.shape[2], kW = iw.shape[rank - 1];
        if (kH == 0 || kW == 0) errs |= M_ARG;
        if (groups >= 1 && (C % groups || O % groups || Cg != C / groups)) errs |= M_SHAPE;
        if (b.h && (ib.nd != 1 || ib.shape[0] != O)) errs |= M_SHAPE;
        if (H == 0 || W == 0) errs |= M_SHAPE;
        if (dh >= 1 && dw >= 1 && ph >= 0 && pw >= 0 && sh >= 1 && sw >= 1 && kH > 0 && kW > 0) {
            __int128 spanh = (__int128)dh * (kH - 1) + 1, spanw = (__int128)dw * (kW - 1) + 1;
            __int128 oh = out_extent(H, ph, spanh, sh), ow = out_extent(W, pw, spanw, sw);
            if (oh < 1 || ow < 1) errs |= M_SHAPE;
            else if (oh > INT64_MAX || ow > INT64_MAX) errs |= M_SHAPE | M_OOM;
            else {
                on = mul4_sat(N, O, oh, ow);
                __int128 work = mul_sat(mul4_sat(N, oh, ow, Cg ? Cg : 1), mul_sat(kH, kW));
                shape[0] = N, shape[1] = O, shape[2] = (int64_t)oh, shape[3] = (int64_t)ow;
                if (one) shape[2] = (int64_t)ow;
                int64_t cnt;
                if (on > INT64_MAX || !numel_of(shape, rank, &cnt)) errs |= M_SHAPE | M_OOM;
                else if (!errs && (on > BIG || work > ((int64_t)1 << 22)) && on < HUGE) return;
                else if (on >= HUGE) errs |= M_OOM | M_SHAPE;
            }
        }
    }
    if (nul) errs |= M_ARG;
    ag_tensor out = SENT;
    g_op = one ? "ag_conv1d" : "ag_conv2d";
    TRACE("%s(%#llx, %#llx, %#llx, stride %lld,%lld pad %lld,%lld dil %lld,%lld groups %lld)%s", g_op,
          (unsigned long long)x.h, (unsigned long long)w.h, (unsigned long long)b.h, (long long)sh, (long long)sw,
          (long long)ph, (long long)pw, (long long)dh, (long long)dw, (long long)groups, nul ? " out NULL" : "");
    ag_status s = one ? ag_conv1d(nul ? NULL : &out, x.h, w.h, b.h, sw, pw, dw, groups)
                      : ag_conv2d(nul ? NULL : &out, x.h, w.h, b.h, sh, sw, ph, pw, dh, dw, groups);
    expect(s, allowed_of(errs), "convolution: ranks, groups, a kernel that fits, parameters in range, one float dtype");
    if (s == AG_OK) {
        H ins[3] = {x, w, b};
        check_float_result(out, shape, rank, ix.dtype, ins, b.h ? 3 : 2, true, g_op);
    }
    result_any(s, out, dst);
}

static void i18_pool(Rd *r) {
    uint8_t which = u8(r) % 3, dst = u8(r);
    H x = pick_x(r);
    int64_t kh = 1 + u8(r) % 3, kw = 1 + u8(r) % 3, sh = u8(r) % 3, sw = sh ? 1 + u8(r) % 2 : 0, ph = u8(r) % 2, pw = u8(r) % 2;
    bool cip = bit(r);
    uint8_t odd = u8(r);
    switch (odd % 12) {
    case 0: kh = rd_small(r); break;
    case 1: sw = rd_small(r); break;
    case 2: ph = rd_small(r); break;
    case 3: pw = rd_i64(r); break;
    case 4: kw = rd_i64(r); break;
    case 5: sh = rd_i64(r); break;
    default: break;
    }
    int64_t oh_a = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 4, ow_a = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 4;
    ag_tensor out = SENT;
    ag_status s;
    static const char *names[] = {"ag_max_pool2d", "ag_avg_pool2d", "ag_adaptive_avg_pool2d"};
    g_op = names[which];
    if (x.bad) {
        TRACE("%s of a bad handle", g_op);
        s = which == 0 ? ag_max_pool2d(&out, x.h, kh, kw, sh, sw, ph, pw)
            : which == 1 ? ag_avg_pool2d(&out, x.h, kh, kw, sh, sw, ph, pw, cip)
                         : ag_adaptive_avg_pool2d(&out, x.h, oh_a, ow_a);
        expect(s, M_INV | M_ARG, "a bad handle");
        result_any(s, out, dst);
        return;
    }
    Info ix = info_any(x.h);
    unsigned errs = 0;
    if (!dtype_ok(ix.dtype)) errs |= M_DTYPE;
    int64_t shape[4] = {0, 0, 0, 0};
    bool rank_ok = ix.nd == 4;
    if (!rank_ok) errs |= M_SHAPE;
    else {
        shape[0] = ix.shape[0], shape[1] = ix.shape[1];
        if (ix.shape[2] == 0 || ix.shape[3] == 0) errs |= M_SHAPE;
    }
    __int128 on = 0;
    if (which < 2) {
        if (kh < 1 || kw < 1 || sh < 0 || sw < 0 || (sh == 0) != (sw == 0) || ph < 0 || pw < 0) errs |= M_ARG;
        if (kh >= 1 && kw >= 1 && (ph > kh / 2 || pw > kw / 2)) errs |= M_ARG;
        int64_t esh = sh == 0 ? kh : sh, esw = sw == 0 ? kw : sw;
        if (rank_ok && kh >= 1 && kw >= 1 && esh >= 1 && esw >= 1 && ph >= 0 && pw >= 0) {
            __int128 oh = out_extent(ix.shape[2], ph, kh, esh), ow = out_extent(ix.shape[3], pw, kw, esw);
            if (oh < 1 || ow < 1) errs |= M_SHAPE;
            else if (oh > INT64_MAX || ow > INT64_MAX) errs |= M_SHAPE | M_OOM;
            else {
                on = mul4_sat(ix.shape[0], ix.shape[1], oh, ow);
                __int128 work = mul_sat(on, mul_sat(kh, kw));
                shape[2] = (int64_t)oh, shape[3] = (int64_t)ow;
                int64_t cnt;
                if (on > INT64_MAX || !numel_of(shape, 4, &cnt)) errs |= M_SHAPE | M_OOM;
                else if (!errs && (on > BIG || work > ((int64_t)1 << 22)) && on < HUGE) return;
                else if (on >= HUGE) errs |= M_OOM | M_SHAPE;
            }
        }
        TRACE("%s(%#llx, kernel %lld,%lld stride %lld,%lld pad %lld,%lld%s)", g_op, (unsigned long long)x.h, (long long)kh,
              (long long)kw, (long long)sh, (long long)sw, (long long)ph, (long long)pw, which == 1 ? (cip ? ", include pad" : ", exclude pad") : "");
        s = which == 0 ? ag_max_pool2d(&out, x.h, kh, kw, sh, sw, ph, pw) : ag_avg_pool2d(&out, x.h, kh, kw, sh, sw, ph, pw, cip);
    } else {
        if (oh_a < 0 || ow_a < 0) errs |= M_ARG;
        else if (rank_ok) {
            on = mul4_sat(ix.shape[0], ix.shape[1], oh_a, ow_a);
            /* An output extent far beyond the input's needs an averaging matrix of more than
             * 2^28 entries: refused with AG_ERR_SHAPE (regressions/adaptive-avg-pool-huge-output-
             * extent-aborts: it used to abort the process) unless the output is empty. */
            if (on > 0 && ((__int128)oh_a * ix.shape[2] > ((__int128)1 << 28) || (__int128)ow_a * ix.shape[3] > ((__int128)1 << 28)))
                errs |= M_SHAPE;
            shape[2] = oh_a, shape[3] = ow_a;
            int64_t cnt;
            if (on > INT64_MAX || !numel_of(shape, 4, &cnt)) errs |= M_SHAPE | M_OOM;
            else if (!errs && (on > BIG || oh_a > BIG || ow_a > BIG) && on < HUGE) return;
            else if (on >= HUGE) errs |= M_OOM | M_SHAPE;
        }
        TRACE("ag_adaptive_avg_pool2d(%#llx, %lld, %lld)", (unsigned long long)x.h, (long long)oh_a, (long long)ow_a);
        s = ag_adaptive_avg_pool2d(&out, x.h, oh_a, ow_a);
    }
    expect(s, allowed_of(errs), "pooling: a 4-D float input, a kernel that fits, parameters in range");
    if (s == AG_OK) check_float_result(out, shape, 4, ix.dtype, &x, 1, true, g_op);
    result_any(s, out, dst);
}

/* ---- normalisation and attention ---- */

static bool shape_is(const Info *a, const int64_t *shape, int64_t nd) {
    if (a->nd != nd) return false;
    for (int64_t i = 0; i < nd; i++)
        if (a->shape[i] != shape[i]) return false;
    return true;
}

static void i18_norm(Rd *r) {
    uint8_t which = u8(r) % 3, dst = u8(r);
    H x = pick_x(r), w = pick_x(r), b = pick_x(r), rm = pick_x(r), rv = pick_x(r);
    uint8_t f = u8(r);
    if (f & 1 || w.h == 0) w = (H){0, false};
    if (f & 2 || b.h == 0) b = (H){0, false};
    if (which != 1 || (f & 12) == 0) rm = rv = (H){0, false};
    else if ((f & 12) == 4) rv = (H){0, false}; /* one running tensor: refused */
    if (rm.h == 0) rm.bad = false;
    if (rv.h == 0) rv.bad = false;
    double eps = (u8(r) & 7) == 0 ? rd_double(r) : 1e-5;
    double mom = (u8(r) & 7) == 0 ? rd_double(r) : 0.1;
    bool training = u8(r) % 3 != 0;
    int64_t nn = (u8(r) & 7) == 0 ? rd_i64(r) : 1 + u8(r) % 2, groups = (u8(r) & 7) == 0 ? rd_i64(r) : 1 + u8(r) % 3;
    ag_tensor out = SENT;
    ag_status s;
    static const char *names[] = {"ag_layer_norm", "ag_batch_norm", "ag_group_norm"};
    g_op = names[which];
    if (x.bad || w.bad || b.bad || rm.bad || rv.bad) {
        TRACE("%s with a bad handle", g_op);
        s = which == 0 ? ag_layer_norm(&out, x.h, nn, w.h, b.h, eps)
            : which == 1 ? ag_batch_norm(&out, x.h, rm.h, rv.h, w.h, b.h, training, mom, eps)
                         : ag_group_norm(&out, x.h, groups, w.h, b.h, eps);
        expect(s, M_INV | M_ARG, "a bad handle");
        result_any(s, out, dst);
        return;
    }
    Info ix = info_any(x.h), iw = {0}, ib = {0}, im = {0}, iv = {0};
    if (w.h) iw = info_any(w.h);
    if (b.h) ib = info_any(b.h);
    if (rm.h) im = info_any(rm.h);
    if (rv.h) iv = info_any(rv.h);
    if (ix.numel > BIG / 4) return;
    unsigned errs = 0, maybe = 0;
    if (!(eps >= 0) || !isfinite(eps)) errs |= M_ARG;
    ag_dtype dt = ix.dtype;
    if (!dtype_ok(dt) || (w.h && iw.dtype != dt) || (b.h && ib.dtype != dt) || (rm.h && im.dtype != dt) || (rv.h && iv.dtype != dt))
        errs |= M_DTYPE;
    H ins[5] = {x, w, b, rm, rv};
    int nins = 3;
    if (which == 0) {
        if (nn < 1 || nn > ix.nd) errs |= M_ARG;
        else {
            const int64_t *tail = ix.shape + (ix.nd - nn);
            if ((w.h && !shape_is(&iw, tail, nn)) || (b.h && !shape_is(&ib, tail, nn))) errs |= M_SHAPE;
        }
        TRACE("ag_layer_norm(%#llx, %lld, w %#llx, b %#llx, eps %g)", (unsigned long long)x.h, (long long)nn,
              (unsigned long long)w.h, (unsigned long long)b.h, eps);
        s = ag_layer_norm(&out, x.h, nn, w.h, b.h, eps);
    } else {
        int64_t C = ix.nd >= 2 ? ix.shape[1] : 0, cshape[1] = {C};
        if (ix.nd < 2) errs |= M_SHAPE;
        else {
            if ((w.h && !shape_is(&iw, cshape, 1)) || (b.h && !shape_is(&ib, cshape, 1))) errs |= M_SHAPE;
        }
        if (which == 1) {
            nins = 5;
            if ((rm.h == 0) != (rv.h == 0)) errs |= M_ARG;
            if (!training && !rm.h) errs |= M_ARG;
            if (ix.nd >= 2 && ((rm.h && !shape_is(&im, cshape, 1)) || (rv.h && !shape_is(&iv, cshape, 1)))) errs |= M_SHAPE;
            if (rm.h && rm.h == rv.h) errs |= M_ARG;
            else if (rm.h && rv.h) maybe |= M_ARG; /* two handles may share values (views) */
            if (!isfinite(mom)) errs |= M_ARG;
            if (training && ((rm.h && im.rg) || (rv.h && iv.rg))) errs |= M_STATE;
            if (training && rm.h) maybe |= M_STATE; /* a running tensor with history that no longer requires grad */
            if (training && ix.nd >= 2 && C > 0 && ix.numel / C == 1) errs |= M_ARG;
            TRACE("ag_batch_norm(%#llx, rm %#llx, rv %#llx, w %#llx, b %#llx, training %d, momentum %g, eps %g)",
                  (unsigned long long)x.h, (unsigned long long)rm.h, (unsigned long long)rv.h, (unsigned long long)w.h,
                  (unsigned long long)b.h, training, mom, eps);
            s = ag_batch_norm(&out, x.h, rm.h, rv.h, w.h, b.h, training, mom, eps);
        } else {
            if (groups < 1 || (ix.nd >= 2 && C % groups != 0)) errs |= M_ARG;
            TRACE("ag_group_norm(%#llx, %lld, w %#llx, b %#llx, eps %g)", (unsigned long long)x.h, (long long)groups,
                  (unsigned long long)w.h, (unsigned long long)b.h, eps);
            s = ag_group_norm(&out, x.h, groups, w.h, b.h, eps);
        }
    }
    expect(s, allowed_of(errs) | (errs ? 0 : maybe), "normalisation: axes, (C) or normalized-shape affine tensors, eps, running statistics");
    if (s == AG_OK) check_float_result(out, ix.shape, ix.nd, dt, ins, nins, true, g_op);
    result_any(s, out, dst);
}

static void i18_attention(Rd *r) {
    H q = pick_x(r), k = pick_x(r), v = pick_x(r), m = pick_x(r);
    uint8_t f = u8(r), dst = u8(r);
    if (!(f & 1) || m.h == 0) m = (H){0, false};
    bool causal = f & 2;
    if (m.h && causal && (f & 12)) causal = false; /* mostly not both: that is refused */
    double scale = (f & 48) == 0 ? rd_double(r) : (f & 16) ? 0 : 0.5;
    g_op = "ag_scaled_dot_product_attention";
    ag_tensor out = SENT;
    ag_status s;
    if (q.bad || k.bad || v.bad || m.bad) {
        TRACE("attention with a bad handle");
        s = ag_scaled_dot_product_attention(&out, q.h, k.h, v.h, m.h, causal, scale);
        expect(s, M_INV | M_ARG, "a bad handle");
        result_any(s, out, dst);
        return;
    }
    Info iq = info_any(q.h), ik = info_any(k.h), iv = info_any(v.h), im = {0};
    if (m.h) im = info_any(m.h);
    unsigned errs = 0, maybe = 0;
    if (m.h && causal) errs |= M_ARG;
    if (!isfinite(scale)) errs |= M_ARG;
    ag_dtype dt = iq.dtype;
    if (!dtype_ok(dt) || ik.dtype != dt || iv.dtype != dt || (m.h && im.dtype != dt)) errs |= M_DTYPE;
    int64_t shape[MAXS], nd = 0;
    bool known = false;
    if (iq.nd < 2 || ik.nd < 2 || iv.nd < 2) errs |= M_SHAPE;
    else {
        int64_t L = iq.shape[iq.nd - 2], E = iq.shape[iq.nd - 1], S = ik.shape[ik.nd - 2], Ek = ik.shape[ik.nd - 1];
        int64_t Sv = iv.shape[iv.nd - 2], Ev = iv.shape[iv.nd - 1];
        if (E != Ek || S != Sv) errs |= M_SHAPE;
        Info bq = iq, bk = ik, bv = iv;
        bq.nd -= 2, bk.nd -= 2, bv.nd -= 2;
        const Info *three[3] = {&bq, &bk, &bv};
        int64_t bs[MAXS], bnd = 0;
        if (!broadcast(three, 3, bs, &bnd)) errs |= M_SHAPE;
        else {
            /* In double: the extents of an empty tensor may be huge, and their product (or E + Ev + 1)
             * overflows int64 and even __int128; only its size against a threshold matters here. */
            double work = (double)L * ((double)S + 1) * ((double)E + (double)Ev + 1);
            for (int64_t i = 0; i < bnd; i++) work *= (double)bs[i];
            if (!errs && work > (double)((int64_t)1 << 22)) return;
            memcpy(shape, bs, sizeof(int64_t) * (size_t)bnd);
            shape[bnd] = L, shape[bnd + 1] = Ev;
            nd = bnd + 2;
            known = true;
            if (m.h) {
                Info sc = {0};
                sc.nd = bnd + 2;
                memcpy(sc.shape, bs, sizeof(int64_t) * (size_t)bnd);
                sc.shape[bnd] = L, sc.shape[bnd + 1] = S;
                if (!broadcasts_to(&im, &sc)) {
                    const Info *two[2] = {&im, &sc};
                    int64_t ms[MAXS], mnd;
                    if (broadcast(two, 2, ms, &mnd)) maybe |= M_SHAPE | M_OK, known = false; /* a mask that adds batch axes */
                    else errs |= M_SHAPE;
                }
            }
        }
    }
    /* BLAS takes 32-bit extents: an L, S, E or Ev above INT32_MAX (possible beside a zero extent)
     * may be AG_ERR_SHAPE, as for ag_matmul (found by the CI's fuzz run of issue 19). */
    if (iq.nd >= 2 && ik.nd >= 2 && iv.nd >= 2 &&
        (iq.shape[iq.nd - 2] > INT32_MAX || iq.shape[iq.nd - 1] > INT32_MAX || ik.shape[ik.nd - 2] > INT32_MAX ||
         ik.shape[ik.nd - 1] > INT32_MAX || iv.shape[iv.nd - 1] > INT32_MAX)) {
        if (errs) errs |= M_SHAPE;
        else maybe |= M_SHAPE;
    }
    TRACE("ag_scaled_dot_product_attention(%#llx, %#llx, %#llx, mask %#llx, causal %d, scale %g)", (unsigned long long)q.h,
          (unsigned long long)k.h, (unsigned long long)v.h, (unsigned long long)m.h, causal, scale);
    s = ag_scaled_dot_product_attention(&out, q.h, k.h, v.h, m.h, causal, scale);
    expect(s, (errs ? errs : M_OK | M_OOM | maybe), "attention: ranks >= 2, E and S agree, batch axes and mask broadcast, one dtype");
    if (s == AG_OK) {
        H ins[4] = {q, k, v, m};
        check_float_result(out, known ? shape : NULL, nd, dt, ins, m.h ? 4 : 3, true, g_op);
    }
    result_any(s, out, dst);
}

/* ---- training helpers: clip_grad_norm, lr_warmup_cosine ---- */

/* a + b for b >= 0, INT64_MAX where the sum would overflow (a may be a decoded INT64_MAX). */
static int64_t add_saturating(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

static void i18_train(Rd *r) {
    if (bit(r)) {
        int64_t step = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 20, warm = (u8(r) & 7) == 0 ? rd_i64(r) : u8(r) % 6,
                total = (u8(r) & 7) == 0 ? rd_i64(r) : add_saturating(warm, u8(r) % 12);
        double base = (u8(r) & 7) == 0 ? rd_double(r) : 0.1, lo = (u8(r) & 7) == 0 ? rd_double(r) : 0.01;
        bool nul = (u8(r) & 31) == 0;
        unsigned errs = 0;
        if (nul || step < 0 || warm < 0 || total < warm || !(base >= 0) || !isfinite(base) || !(lo >= 0) || !isfinite(lo) || lo > base)
            errs |= M_ARG;
        double out = -12345;
        g_op = "ag_lr_warmup_cosine";
        TRACE("ag_lr_warmup_cosine(%lld, %lld, %lld, %g, %g)", (long long)step, (long long)warm, (long long)total, base, lo);
        ag_status s = expect(ag_lr_warmup_cosine(nul ? NULL : &out, step, warm, total, base, lo), allowed_of(errs) & ~M_OOM,
                             "warm-up cosine: step, warmup >= 0, total >= warmup, 0 <= min_lr <= base_lr, finite");
        if (s != AG_OK) {
            if (out != -12345) fail("a failed ag_lr_warmup_cosine wrote its output");
            return;
        }
        double want;
        if (step < warm) want = base * ((double)step + 1) / (double)warm;
        else if (step >= total) want = lo;
        else want = lo + (base - lo) * (1 + cos(3.14159265358979323846 * (double)(step - warm) / (double)(total - warm))) / 2;
        if (!(fabs(out - want) <= 1e-12 * (1 + fabs(want)))) fail("lr at step %lld is %.17g, the formula gives %.17g", (long long)step, out, want);
        if (!((step < warm || out >= lo - 1e-12 * (1 + lo)) && out >= 0 && out <= base * (1 + 1e-12)))
            fail("lr %.17g outside [%g, %g] (the warm-up may start below min_lr)", out, lo, base);
        return;
    }
    int n = (int)(u8(r) % 4);
    H ps[MAXARR];
    ag_tensor hs[MAXARR];
    for (int i = 0; i < n; i++) {
        ps[i] = pick_x(r);
        hs[i] = ps[i].h;
    }
    double max_norm = (u8(r) & 3) == 0 ? rd_double(r) : (double)(u8(r) % 8) / 2;
    uint8_t f = u8(r);
    double nt = (f & 7) == 0 ? rd_double(r) : (f & 7) == 1 ? INFINITY : (double)(1 + (f & 7) % 3);
    int64_t cnt = n;
    bool nul_out = (f & 0xF8) == 0x08, nul_ps = (f & 0xF8) == 0x10;
    if ((f & 0xF8) == 0x18) cnt = -1;
    unsigned errs = 0, maybe = 0;
    if (nul_out || cnt < 0 || (nul_ps && n > 0) || !(max_norm >= 0) || !(nt > 0)) errs |= M_ARG;
    for (int i = 0; i < n && cnt > 0 && !nul_ps; i++) {
        if (ps[i].bad && ps[i].h) errs |= M_INV;
        if (ps[i].h == 0) errs |= M_INV | M_ARG;
        for (int j = 0; j < i; j++)
            if (hs[j] == hs[i] && hs[i]) errs |= M_ARG;
        if (i > 0) maybe |= M_ARG; /* two handles to one tensor count as a repeat */
    }
    double total = -1;
    g_op = "ag_clip_grad_norm";
    TRACE("ag_clip_grad_norm(%d params, max %g, type %g)", n, max_norm, nt);
    ag_status s = expect(ag_clip_grad_norm(nul_out ? NULL : &total, nul_ps ? NULL : hs, cnt, max_norm, nt),
                         errs ? errs : M_OK | M_OOM | maybe, "clip_grad_norm: distinct live parameters, max_norm >= 0, norm_type > 0");
    if (s != AG_OK) {
        if (total != -1) fail("a failed ag_clip_grad_norm wrote its output");
        return;
    }
    if (!(total >= 0) && !isnan(total)) fail("clip_grad_norm total %g", total);
    if (n == 0 && total != 0) fail("clip_grad_norm of no parameters gave %g", total);
}

/* ------------------------------------------------------------------------------------------ */
/* Shared memory and DLPack (issue 19)                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Opcode byte 247 with an even selector byte of 128 or more (odd: attention, even below 128:
 * training, as before; an older input with an even byte from 128 there ran training). Three calls:
 *   0. ag_tensor_from_buffer over the harness's own buffer (aligned, one byte off, or NULL) with
 *      a decoded shape and dtype;
 *   1. ag_tensor_from_dlpack over a DLManagedTensorVersioned whose every field is decoded:
 *      version, device, dtype (codes, bits and lanes Autograd does not hold included), rank -1
 *      to 9, extents (negative and overflowing included), strides (NULL, compact, or decoded),
 *      byte_offset (misaligned and past the address space included), flags (READ_ONLY), data
 *      (the buffer or NULL);
 *   2. ag_tensor_to_dlpack of a pool tensor (or a bad handle), checked field by field against
 *      the tensor, then imported back (the same data pointer) or released by its deleter.
 * The library is never handed a wild pointer: shape and strides point to 8 int64s each, and a
 * call the harness cannot rule out being accepted over more bytes than its buffer holds is not
 * made. The status must be the one the harness predicts from the header's rules (OK or OOM for
 * a valid call, an error for an invalid one); the destroy callback or deleter must not have run
 * after a failure, and must run exactly once when the accepted tensor's handle is freed. */
static double g_shm_mem[64]; /* 512 bytes, 8-byte aligned */
static int g_shm_released;
static void shm_destroy(void *user_data) {
    (void)user_data;
    g_shm_released++;
}
static void shm_deleter(DLManagedTensorVersioned *self) {
    (void)self;
    g_shm_released++;
}

static int64_t shm_size(ag_dtype dt) {
    return dt == AG_FLOAT32 ? 4 : dt == AG_FLOAT64 || dt == AG_INT64 ? 8 : dt == AG_BOOL ? 1 : 0;
}

/* After a call over lent memory: nothing released on failure; on success the data pointer is
 * `want` (NULL without elements), then freeing the handle releases the memory exactly once. */
static void shm_settle(ag_status s, ag_tensor out, const void *want, int64_t n) {
    if (s != AG_OK) {
        if (out != SENT) fail("a failed call over lent memory wrote its output");
        if (g_shm_released) fail("a failed call released the caller's memory (%d times)", g_shm_released);
        return;
    }
    owned++;
    const void *p = NULL;
    if (chk(ag_tensor_data_ptr(&p, out)) != AG_OK) fail("ag_tensor_data_ptr of a tensor over lent memory");
    if (p != (n > 0 ? want : NULL)) fail("data pointer %p, the lent memory starts at %p (%lld elements)", p, want, (long long)n);
    if (g_shm_released) fail("the lent memory was released while its tensor lives");
    free_tensor(out);
    if (g_shm_released != 1) fail("freeing the only tensor over lent memory released it %d times", g_shm_released);
}

static void shm_from_buffer(Rd *r) {
    int64_t shape[MAXS], nd = 0, n = 0;
    int kind = rd_shape(r, shape, &nd);
    ag_dtype dt = rd_dtype(r);
    if (u8(r) < 64) dt = u8(r) & 1 ? AG_INT64 : AG_BOOL;
    uint8_t at = u8(r) % 4; /* 0, 1: aligned; 2: one byte off; 3: NULL */
    char *data = at == 3 ? NULL : (char *)g_shm_mem + (at == 2);
    bool counted = numel_of(shape, nd, &n), aligned = data && ((uintptr_t)data % (uintptr_t)(shm_size(dt) ? shm_size(dt) : 1)) == 0;
    if (kind == SH_HUGE || (counted && shm_size(dt) && n > 0 && data && n > ((int64_t)sizeof g_shm_mem - 1) / shm_size(dt)))
        return; /* could be accepted over more than the buffer */
    bool valid = counted && shm_size(dt) && (n == 0 || aligned);
    g_op = "ag_tensor_from_buffer";
    TRACE("ag_tensor_from_buffer(%p, rank %lld, dtype %d)", (void *)data, (long long)nd, (int)dt);
    g_shm_released = 0;
    ag_tensor out = SENT;
    ag_status s = expect(ag_tensor_from_buffer(&out, data, shape, nd, dt, NULL, shm_destroy),
                         valid ? M_OK | M_OOM : M_ARG | M_SHAPE | M_DTYPE, "from_buffer: shape, dtype, NULL, alignment");
    shm_settle(s, out, data, n);
}

static void shm_from_dlpack(Rd *r) {
    static int64_t shape[8], strides[8];
    static const uint32_t majors[] = {1, 1, 1, 0, 2};
    static const int32_t devices[] = {kDLCPU, kDLCPU, kDLCUDAHost, kDLCUDA, 0, 99};
    static const uint8_t types[][3] = {{kDLFloat, 32, 1}, {kDLFloat, 64, 1}, {kDLInt, 64, 1}, {kDLBool, 8, 1},
                                       {kDLFloat, 16, 1}, {kDLUInt, 8, 1}, {kDLInt, 32, 1}, {kDLFloat, 64, 2},
                                       {kDLComplex, 64, 1}, {kDLBool, 8, 0}, {kDLBfloat, 16, 1}, {kDLOpaqueHandle, 64, 1}};
    static const int64_t extents[] = {1, 2, 3, 0, 1, 2, -1, INT64_MAX, (int64_t)1 << 32, 4};
    static const uint64_t offsets[] = {0, 0, 8, 16, 4, 1, UINT64_MAX - 8, 24};
    DLManagedTensorVersioned m;
    memset(&m, 0, sizeof m);
    m.version.major = majors[u8(r) % 5];
    m.version.minor = u8(r);
    m.deleter = shm_deleter;
    m.flags = u8(r) & 7;
    DLTensor *t = &m.dl_tensor;
    t->device.device_type = (DLDeviceType)devices[u8(r) % 6];
    t->device.device_id = u8(r) % 3;
    const uint8_t *ty = types[u8(r) % 12];
    t->dtype.code = ty[0], t->dtype.bits = ty[1], t->dtype.lanes = ty[2];
    t->ndim = (int32_t)(u8(r) % 11) - 1;
    for (int i = 0; i < 8; i++) shape[i] = i < t->ndim ? extents[u8(r) % 10] : 1;
    t->shape = bit(r) || t->ndim <= 0 ? shape : NULL;
    uint8_t sk = u8(r) % 4; /* 0, 1: NULL; 2: compact; 3: decoded */
    int64_t step = 1;
    for (int i = 7; i >= 0; i--) {
        if (i < t->ndim) strides[i] = sk == 3 ? (int64_t)(u8(r) % 8) - 1 : step;
        else strides[i] = 1;
        if (i < t->ndim && shape[i] > 0 && shape[i] < 1 << 20) step *= shape[i];
    }
    t->strides = sk >= 2 ? strides : NULL;
    t->byte_offset = offsets[u8(r) % 8];
    t->data = u8(r) % 5 == 0 ? NULL : (void *)g_shm_mem;
    /* What the header's rules make of it. */
    int64_t es = 0, n = 0;
    if (t->dtype.lanes == 1) {
        if (t->dtype.code == kDLFloat && (t->dtype.bits == 32 || t->dtype.bits == 64)) es = t->dtype.bits / 8;
        if (t->dtype.code == kDLInt && t->dtype.bits == 64) es = 8;
        if (t->dtype.code == kDLBool && t->dtype.bits == 8) es = 1;
    }
    bool rank_ok = t->ndim >= 0 && t->ndim <= AG_MAX_NDIM;
    bool counted = rank_ok && (t->ndim == 0 || t->shape) && numel_of(shape, t->ndim, &n);
    uint64_t off = t->byte_offset;
    if (counted && n > 0 && t->data && es) {
        /* Accepted or not, never let the library read past the buffer. */
        if (off > sizeof g_shm_mem || n > (int64_t)((sizeof g_shm_mem - off) / (uint64_t)es)) return;
    }
    bool compact = true;
    if (counted && n > 0 && t->strides) {
        int64_t want = 1;
        for (int i = t->ndim - 1; i >= 0; i--) {
            if (shape[i] > 1 && t->strides[i] != want) compact = false;
            want *= shape[i];
        }
    }
    /* Where the elements start (computed only within the buffer: no pointer overflow). */
    const char *at = t->data && off <= sizeof g_shm_mem ? (const char *)t->data + off : NULL;
    bool valid = m.version.major == 1 && (t->device.device_type == kDLCPU || t->device.device_type == kDLCUDAHost) && es &&
                 counted && compact && (n == 0 || (t->data && (uintptr_t)at % (uintptr_t)es == 0));
    g_op = "ag_tensor_from_dlpack";
    TRACE("ag_tensor_from_dlpack(version %u, device %d, dtype %u/%u/%u, ndim %d, offset %llu)", m.version.major,
          (int)t->device.device_type, t->dtype.code, t->dtype.bits, t->dtype.lanes, t->ndim, (unsigned long long)off);
    g_shm_released = 0;
    ag_tensor out = SENT;
    ag_status s = expect(ag_tensor_from_dlpack(&out, &m), valid ? M_OK | M_OOM : M_ARG | M_SHAPE | M_DTYPE,
                         "from_dlpack: version, device, dtype, rank, extents, strides, data, byte_offset");
    if (s == AG_OK && (m.flags & DLPACK_FLAG_BITMASK_READ_ONLY)) {
        void *p = NULL;
        g_op = "ag_tensor_data_ptr_mut (of a READ_ONLY import)";
        expect(ag_tensor_data_ptr_mut(&p, out), M_STATE, "read-only memory is never written");
    }
    shm_settle(s, out, at, n);
}

static void shm_to_dlpack(Rd *r) {
    H a = pick_t(r);
    DLManagedTensorVersioned *m = NULL;
    g_op = "ag_tensor_to_dlpack";
    TRACE("ag_tensor_to_dlpack(%#llx)%s", (unsigned long long)a.h, a.bad ? " [bad]" : "");
    ag_status s = expect(ag_tensor_to_dlpack(&m, a.h), a.bad ? M_INV : M_OK | M_OOM, "to_dlpack of a pool tensor");
    if (s != AG_OK) return;
    Info in = info_of(a.h);
    const void *p = NULL;
    if (chk(ag_tensor_data_ptr(&p, a.h)) != AG_OK) fail("ag_tensor_data_ptr of a live handle");
    DLTensor *t = &m->dl_tensor;
    if (t->data != p || t->ndim != in.nd || t->device.device_type != kDLCPU || t->byte_offset != 0 || m->flags != 0 ||
        m->version.major != 1 || t->dtype.lanes != 1 || t->dtype.code != kDLFloat || t->dtype.bits != (in.dtype == AG_FLOAT32 ? 32 : 64))
        fail("the DLPack export does not describe the tensor");
    int64_t want = 1;
    for (int i = (int)in.nd - 1; i >= 0; i--) {
        if (t->shape[i] != in.shape[i] || t->strides[i] != want) fail("export axis %d: extent or stride", i);
        want *= in.shape[i] > 0 ? in.shape[i] : 1;
    }
    if (bit(r)) {
        g_op = "DLPack deleter (of an export)";
        m->deleter(m);
        return;
    }
    ag_tensor back = SENT;
    g_op = "ag_tensor_from_dlpack (of an export)";
    if (expect(ag_tensor_from_dlpack(&back, m), M_OK | M_OOM, "an export is a valid import") != AG_OK) {
        m->deleter(m);
        return;
    }
    owned++;
    const void *q = NULL;
    if (chk(ag_tensor_data_ptr(&q, back)) != AG_OK || q != p) fail("the import of an export has another data pointer");
    free_tensor(back);
}

static void op_shared_memory(Rd *r) {
    switch (u8(r) % 3) {
    case 0: shm_from_buffer(r); break;
    case 1: shm_from_dlpack(r); break;
    default: shm_to_dlpack(r); break;
    }
}

static void op_issue18(Rd *r, uint8_t b) {
    switch (b - 240) {
    case 0: i18_make(r); break;
    case 1: i18_convert(r); break;
    case 2: i18_index(r); break;
    case 3: i18_random(r); break;
    case 4: i18_conv(r); break;
    case 5: i18_pool(r); break;
    case 6: i18_norm(r); break;
    default: {
        uint8_t c = u8(r); /* odd: attention; even: training below 128, shared memory from 128 */
        if (c & 1) i18_attention(r);
        else if (c >= 128) op_shared_memory(r);
        else i18_train(r);
        break;
    }
    }
}

static void i18_cleanup(void) {
    for (int i = 0; i < NI; i++) {
        if (ipool[i]) free_tensor(ipool[i]);
        ipool[i] = 0;
    }
    for (int i = 0; i < NG; i++) {
        if (gens[i]) {
            g_op = "ag_generator_free (cleanup)";
            expect(ag_generator_free(gens[i]), M_OK, "free a live generator");
            owned--;
            remember_stale(gens[i]);
        }
        gens[i] = 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                               */
/* ------------------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *t = getenv("FUZZ_TRACE");
    g_trace = t && *t && strcmp(t, "0") != 0;
    const char *st = getenv("FUZZ_STATS");
    g_stats = st && *st && strcmp(st, "0") != 0;
    if (g_stats) atexit(print_stats);
    return 0;
}

static void cleanup(void) {
    g_op = "cleanup";
    for (int i = 0; i < NF; i++) free_fn(i);
    co_cleanup();
    i18_cleanup();
    if (g_recomputable) {
        expect(ag_set_recomputable(NULL, false), M_OK, "set_recomputable");
        g_recomputable = false;
    }
    for (int i = 0; i < NO; i++) {
        if (opts[i]) {
            TRACE("ag_optimizer_free(%#llx)", (unsigned long long)opts[i]);
            expect(ag_optimizer_free(opts[i]), M_OK, "free a live optimizer");
            owned--;
            opts[i] = 0;
        }
    }
    for (int i = 0; i < NT; i++) {
        if (pool[i]) {
            free_tensor(pool[i]);
            pool[i] = 0;
        }
    }
    g_op = "cleanup: ag_set_grad_enabled(true)";
    expect(ag_set_grad_enabled(NULL, true), M_OK, "set_grad_enabled");
    grad_on = true;
    g_op = "end of input";
    int64_t n = -1;
    expect(ag_live_handle_count(&n), M_OK, "live_handle_count");
    if (n != 0) fail("%lld handles still alive after freeing everything the program made", (long long)n);
    if (owned != 0) fail("internal: owned = %lld", (long long)owned);
    if (g_hooks_alive != 0)
        fail("%lld hook destroy callbacks have not run though every handle is freed", (long long)g_hooks_alive);
    co_after_cleanup();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Rd rd = {data, size, 0}, *r = &rd;
    memset(pool, 0, sizeof pool);
    memset(opts, 0, sizeof opts);
    memset(fns, 0, sizeof fns);
    memset(cops, 0, sizeof cops);
    memset(ipool, 0, sizeof ipool);
    memset(gens, 0, sizeof gens);
    memset(coud, 0, sizeof coud);
    g_nco_live = g_nco_kept = 0;
    g_kept_ctx = 0;
    g_co_needs = NULL;
    g_recomputable = false;
    nstale = 0;
    nhook_ids = 0;
    owned = 0;
    g_hooks_alive = 0;
    g_any_hook = false;
    grad_on = true;
    g_step = 0;
    g_op = "start";
    {
        int64_t n = -1;
        if (ag_live_handle_count(&n) != AG_OK || n != 0) fail("handles alive before the input: %lld", (long long)n);
    }
    for (g_step = 0; more(r) && g_step < MAX_OPS; g_step++) {
        if (g_trace) fprintf(stderr, "[%3d] -- opcode byte at offset %zu\n", g_step, r->i);
        uint8_t b = u8(r);
        if (b >= 240 && b < 248) { /* issue 18's ops */
            op_issue18(r, b);
            g_op = "after the call";
            check_live_count();
            continue;
        }
        uint8_t op = b >= 248 ? (uint8_t)OP_CUSTOM : b % OP_COUNT;
        switch (op) {
        case OP_FROM_DATA:
        case OP_ZEROS:
        case OP_ONES:
        case OP_FULL:
        case OP_RAND:
        case OP_INIT: op_create(r, op); break;
        case OP_ARANGE: op_arange(r); break;
        case OP_EYE: op_eye(r); break;
        case OP_FREE: op_free(r); break;
        case OP_FREE_BAD: op_free_bad(r); break;
        case OP_QUERY: op_query(r); break;
        case OP_COPY: op_copy(r); break;
        case OP_PTR: op_ptr(r); break;
        case OP_ITEM: op_item(r); break;
        case OP_SET_RG: op_set_rg(r); break;
        case OP_GRAD_OF: op_grad_of(r); break;
        case OP_ZERO_GRAD: op_zero_grad(r); break;
        case OP_BINARY: op_binary(r); break;
        case OP_SCALAR: op_scalar(r); break;
        case OP_UNARY: op_unary(r); break;
        case OP_REDUCE: op_reduce(r); break;
        case OP_RESHAPE: op_reshape(r); break;
        case OP_TRANSPOSE: op_transpose(r); break;
        case OP_PERMUTE: op_permute(r); break;
        case OP_EXPAND: op_expand(r); break;
        case OP_SQUEEZE: op_squeeze(r); break;
        case OP_UNSQUEEZE: op_unsqueeze(r); break;
        case OP_CONCAT: op_concat(r); break;
        case OP_SLICE: op_slice(r); break;
        case OP_INDEX_SELECT: op_index_select(r); break;
        case OP_GATHER: op_gather(r); break;
        case OP_MATMUL: op_matmul(r); break;
        case OP_SOFTMAX: op_softmax(r); break;
        case OP_CROSS_ENTROPY: op_cross_entropy(r); break;
        case OP_MSE: op_binary(r); break;
        case OP_LINEAR: op_linear(r); break;
        case OP_WHERE: op_where(r); break;
        case OP_BACKWARD: op_backward(r); break;
        case OP_BACKWARD_ALL: op_backward_all(r); break;
        case OP_AGGRAD: op_aggrad(r); break;
        case OP_GRAD_MODE: op_grad_mode(r); break;
        case OP_DETACH: op_detach(r); break;
        case OP_HOOK: op_hook(r); break;
        case OP_REMOVE_HOOK: op_remove_hook(r); break;
        case OP_GRADCHECK: op_gradcheck(r); break;
        case OP_DOT_GRAPH: op_dot_graph(r); break;
        case OP_OPT_NEW: op_opt_new(r); break;
        case OP_OPT_USE: op_opt_use(r); break;
        case OP_OPT_FREE: op_opt_free(r); break;
        case OP_HOOK_RG: op_hook_rg(r); break;
        case OP_GRADCHECK_CHANGE: op_gradcheck_change(r); break;
        case OP_INPLACE: op_inplace(r); break;
        case OP_ADDED: op_added(r); break;
        case OP_TRANSFORM: op_transform(r); break;
        case OP_REUSE: op_reuse(r); break;
        case OP_CUSTOM: op_custom(r); break;
        default: op_misc(r); break;
        }
        g_op = "after the call";
        check_live_count();
    }
    cleanup();
    return 0;
}
