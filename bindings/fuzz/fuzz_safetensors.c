/*
 * fuzz_safetensors.c - a libFuzzer target for the safetensors reader of libautograd.so.
 *
 * Each input is a safetensors file: it is handed as it is to ag_safetensors_open_memory. The
 * target then checks what the header ("Files: safetensors" in include/autograd.h) promises and
 * abort()s when a promise breaks:
 *   - a refused input is AG_ERR_FORMAT (or AG_ERR_OUT_OF_MEMORY), never another status; the
 *     message is non-empty and names the function; the output handle is not written and no
 *     handle is left live;
 *   - an accepted input has the 8-byte length, a header length that fits, and a header starting
 *     with '{';
 *   - every name is a non-NULL string, distinct from every other; ag_safetensors_info gives a
 *     dtype in {0, AG_FLOAT32 .. AG_BOOL}, a rank of 0..64 and non-negative extents, and the
 *     same answer with a smaller capacity (writing nothing past it);
 *   - ag_safetensors_load is AG_ERR_DTYPE exactly for dtype 0, AG_ERR_SHAPE exactly for a rank
 *     above AG_MAX_NDIM, otherwise AG_OK (AG_ERR_FORMAT only for a BOOL byte other than 0 or 1,
 *     AG_ERR_OUT_OF_MEMORY allowed); a loaded tensor has the listed dtype and shape, numel equal
 *     to the product of the listed extents, and its bytes are exactly the input's bytes at its
 *     place in the data: the tensors, in the listed (data) order, tile the data from its first
 *     byte to its last (checked while every dtype before is one Autograd holds, and over the whole
 *     data when all are);
 *   - each metadata entry's key and value are non-NULL, keys are distinct, and
 *     ag_safetensors_metadata(key) gives that entry's value;
 *   - an index out of range, a name not in the file and a NULL name are AG_ERR_ARGUMENT; the
 *     closed handle is then AG_ERR_INVALID_HANDLE;
 *   - at the end ag_live_handle_count() is 0 (and LeakSanitizer sees no leaked memory).
 *
 * Coverage: libFuzzer sees only this harness's branches (the Swift library is not instrumented), so
 * the harness branches on what the library answered: which check refused the input (a branch per
 * message fragment in `classify`), and for accepted files the count of tensors, each dtype, rank
 * and load status, and the metadata count. An input that reaches a new check is then new coverage.
 *
 * Work per input is bounded by its size (libFuzzer's -max_len): the reader never allocates more
 * than the input holds, and a loaded tensor has at most as many bytes as the input.
 *
 * Set FUZZ_TRACE=1 to print each call and its status.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"

const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    /* As fuzz_api.c: allocations over 1 GiB fail instead of aborting. */
    return "allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1";
}

enum { MAX_RANK = 64 };

static bool g_trace;
static const char *g_op = "(start)";

#define TRACE(...)                                                                                  \
    do {                                                                                           \
        if (g_trace) {                                                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    fprintf(stderr, "\nfuzz_safetensors: INVARIANT VIOLATION in %s: ", g_op);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run the input again with FUZZ_TRACE=1 to see every call)\n");
    abort();
}

/* The status must be in `allowed` (a bit mask of statuses); an error must leave a message that
 * starts with the function's name. */
static ag_status expect(ag_status st, unsigned allowed, const char *function) {
    g_op = function;
    TRACE("%s -> %s%s%s", function, ag_status_name(st), st ? ": " : "", st ? ag_last_error() : "");
    if (st < 0 || st > AG_ERR_FORMAT) fail("unknown status %d", st);
    if (!(allowed & (1u << st))) fail("status %s (%d) is not allowed here; message: %s", ag_status_name(st), st, ag_last_error());
    if (st != AG_OK) {
        const char *m = ag_last_error();
        if (!m || strncmp(m, function, strlen(function)) != 0) fail("the message \"%s\" does not start with %s", m ? m : "(NULL)", function);
        if (strcmp(ag_status_name(st), "AG_UNKNOWN_STATUS") == 0) fail("no name for status %d", st);
    }
    return st;
}
#define B(s) (1u << (s))

/* Distinct coverage edges: each MARK() adds a constant of its own (its line), so that the compiler
 * cannot merge two sites into one block. */
static volatile uint64_t g_seen;
#define MARK() (g_seen += __LINE__)
#define SEEN(cond)                                                                                  \
    do {                                                                                           \
        if (cond) MARK();                                                                          \
    } while (0)

/* One branch per check of the reader that can refuse a file (the messages' stable fragments). */
static void classify(const char *m) {
    SEEN(strstr(m, "fewer than the 8"));
    SEEN(strstr(m, "is above the format's limit"));
    SEEN(strstr(m, "the header length is"));
    SEEN(strstr(m, "the header must start with"));
    SEEN(strstr(m, "after the header's JSON object"));
    SEEN(strstr(m, "duplicate key"));
    SEEN(strstr(m, "not valid UTF-8"));
    SEEN(strstr(m, "a lone surrogate"));
    SEEN(strstr(m, "not a low surrogate"));
    SEEN(strstr(m, "cannot hold NUL"));
    SEEN(strstr(m, "raw control character"));
    SEEN(strstr(m, "unknown escape"));
    SEEN(strstr(m, "hex digit"));
    SEEN(strstr(m, "unterminated"));
    SEEN(strstr(m, "expected a string"));
    SEEN(strstr(m, "expected ':'"));
    SEEN(strstr(m, "expected ',' or '}'"));
    SEEN(strstr(m, "expected ',' or ']'"));
    SEEN(strstr(m, "expected '[' to start"));
    SEEN(strstr(m, "expected an object for tensor"));
    SEEN(strstr(m, "expected an object of strings"));
    SEEN(strstr(m, "is not a string"));
    SEEN(strstr(m, "has an unknown key"));
    SEEN(strstr(m, "has no dtype"));
    SEEN(strstr(m, "has no shape"));
    SEEN(strstr(m, "has no data_offsets"));
    SEEN(strstr(m, "must be [begin, end]"));
    SEEN(strstr(m, "more than 2 entries"));
    SEEN(strstr(m, "more than 64 entries"));
    SEEN(strstr(m, "unknown dtype"));
    SEEN(strstr(m, "must be non-negative, got"));
    SEEN(strstr(m, "must be a non-negative integer"));
    SEEN(strstr(m, "without fraction or exponent"));
    SEEN(strstr(m, "does not fit int64"));
    SEEN(strstr(m, "leading zero"));
    SEEN(strstr(m, "fraction has no digit"));
    SEEN(strstr(m, "exponent has no digit"));
    SEEN(strstr(m, "end before they begin"));
    SEEN(strstr(m, "run past the end of the data"));
    SEEN(strstr(m, "element count"));
    SEEN(strstr(m, "byte size"));
    SEEN(strstr(m, "byte boundary"));
    SEEN(strstr(m, "but shape"));
    SEEN(strstr(m, "overlaps tensor"));
    SEEN(strstr(m, "leaves a gap"));
    SEEN(strstr(m, "cover only the first"));
}

static int64_t dtype_size(ag_dtype d) { return d == AG_FLOAT32 ? 4 : d == AG_BOOL ? 1 : 8; }

static void check_file(ag_safetensors f, const uint8_t *data, size_t size) {
    /* Accepted: the length fits and the header starts with '{'. */
    if (size < 8) fail("accepted an input of %zu bytes", size);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)data[i] << (8 * i);
    if (n > size - 8 || n > 100000000) fail("accepted a header length of %llu with %zu bytes", (unsigned long long)n, size);
    if (n == 0 || data[8] != '{') fail("accepted a header that does not start with '{'");
    const uint8_t *payload = data + 8 + n;
    int64_t payload_len = (int64_t)(size - 8 - n);

    int64_t count = -1;
    expect(ag_safetensors_count(&count, f), B(AG_OK), "ag_safetensors_count");
    if (count < 0 || count > (int64_t)size) fail("count %lld for a %zu-byte input", (long long)count, size);
    SEEN(count == 0);
    SEEN(count == 1);
    SEEN(count == 2);
    SEEN(count > 2 && count <= 8);
    SEEN(count > 8);
    const char **names = calloc((size_t)count + 1, sizeof *names);
    if (!names) fail("out of memory in the harness");
    int64_t cursor = 0; /* where the next tensor's bytes start, while every size so far is known */
    bool tiled = true;
    for (int64_t i = 0; i < count; i++) {
        const char *name = NULL;
        expect(ag_safetensors_name(&name, f, i), B(AG_OK), "ag_safetensors_name");
        if (!name) fail("name %lld is NULL", (long long)i);
        for (int64_t j = 0; j < i; j++)
            if (strcmp(names[j], name) == 0) fail("names %lld and %lld are both \"%s\"", (long long)j, (long long)i, name);
        names[i] = name;
        TRACE("  tensor %lld: \"%s\"", (long long)i, name);

        ag_dtype dt = -1;
        int64_t ndim = -1, shape[MAX_RANK + 1];
        for (int k = 0; k <= MAX_RANK; k++) shape[k] = -7;
        expect(ag_safetensors_info(&dt, &ndim, shape, MAX_RANK, f, name), B(AG_OK), "ag_safetensors_info");
        if (!(dt == 0 || (dt >= AG_FLOAT32 && dt <= AG_BOOL))) fail("dtype %d", dt);
        if (ndim < 0 || ndim > MAX_RANK) fail("rank %lld", (long long)ndim);
        if (shape[MAX_RANK] != -7) fail("info wrote past its capacity");
        switch (dt) {
        case 0: MARK(); break;
        case AG_FLOAT32: MARK(); break;
        case AG_FLOAT64: MARK(); break;
        case AG_INT64: MARK(); break;
        default: MARK(); break;
        }
        SEEN(ndim == 0);
        SEEN(ndim == 1);
        SEEN(ndim > 1 && ndim <= AG_MAX_NDIM);
        SEEN(ndim > AG_MAX_NDIM);
        /* The product of the non-zero extents must fit int64 (zero extent or not). */
        int64_t product = 1;
        bool zero = false;
        for (int64_t k = 0; k < ndim; k++) {
            if (shape[k] < 0) fail("extent %lld is %lld", (long long)k, (long long)shape[k]);
            if (shape[k] == 0) {
                zero = true;
            } else {
                if (product > INT64_MAX / shape[k]) fail("accepted a shape whose element count overflows");
                product *= shape[k];
            }
        }
        int64_t numel = zero ? 0 : product;
        if (dt != 0 && numel > payload_len / dtype_size(dt)) fail("%lld elements do not fit %lld bytes of data", (long long)numel, (long long)payload_len);
        /* A smaller capacity: the same rank, nothing written past the capacity. */
        int64_t small[2] = {-7, -7}, ndim2 = -1;
        ag_dtype dt2 = -1;
        expect(ag_safetensors_info(&dt2, &ndim2, small, 1, f, name), B(AG_OK), "ag_safetensors_info");
        if (dt2 != dt || ndim2 != ndim || small[1] != -7 || (ndim > 0 && small[0] != shape[0])) fail("info with capacity 1 differs");

        ag_tensor t = 0;
        unsigned allowed = dt == 0 ? B(AG_ERR_DTYPE)
                           : ndim > AG_MAX_NDIM ? B(AG_ERR_SHAPE)
                           : B(AG_OK) | B(AG_ERR_OUT_OF_MEMORY) | (dt == AG_BOOL ? B(AG_ERR_FORMAT) : 0);
        ag_status st = expect(ag_safetensors_load(&t, f, name), allowed, "ag_safetensors_load");
        if (st != AG_OK && t != 0) fail("a failed load wrote its output");
        SEEN(st == AG_OK);
        SEEN(st == AG_ERR_FORMAT);
        SEEN(st == AG_ERR_OUT_OF_MEMORY);
        if (dt == 0 || ndim > AG_MAX_NDIM) {
            if (dt == 0) tiled = false; /* its size is not known through the interface */
            else cursor += numel * dtype_size(dt);
            continue;
        }
        int64_t bytes = numel * dtype_size(dt);
        if (tiled && cursor + bytes > payload_len) fail("tensor \"%s\" runs past the data", name);
        if (st == AG_ERR_FORMAT) {
            /* A BOOL byte other than 0 or 1 must really be there. */
            bool found = !tiled;
            for (int64_t k = 0; tiled && k < bytes; k++) found |= payload[cursor + k] > 1;
            if (!found) fail("BOOL tensor \"%s\" refused but its bytes are all 0 or 1", name);
        }
        if (st == AG_OK) {
            ag_dtype got = 0;
            int64_t rank = -1, n_el = -1, tshape[AG_MAX_NDIM];
            expect(ag_tensor_dtype(&got, t), B(AG_OK), "ag_tensor_dtype");
            expect(ag_tensor_ndim(&rank, t), B(AG_OK), "ag_tensor_ndim");
            expect(ag_tensor_numel(&n_el, t), B(AG_OK), "ag_tensor_numel");
            if (got != dt || rank != ndim || n_el != numel) fail("loaded %s: dtype %d rank %lld numel %lld, listed %d %lld %lld", name, got, (long long)rank, (long long)n_el, dt, (long long)ndim, (long long)numel);
            expect(ag_tensor_shape(tshape, AG_MAX_NDIM, t), B(AG_OK), "ag_tensor_shape");
            for (int64_t k = 0; k < rank; k++)
                if (tshape[k] != shape[k]) fail("loaded extent %lld is %lld, listed %lld", (long long)k, (long long)tshape[k], (long long)shape[k]);
            bool requires = true;
            expect(ag_tensor_requires_grad(&requires, t), B(AG_OK), "ag_tensor_requires_grad");
            if (requires) fail("a loaded tensor requires grad");
            if (tiled) {
                uint8_t *buf = malloc((size_t)bytes + 1);
                if (!buf) fail("out of memory in the harness");
                expect(ag_tensor_copy_data(buf, numel, dt, t), B(AG_OK), "ag_tensor_copy_data");
                if (bytes && memcmp(buf, payload + cursor, (size_t)bytes) != 0)
                    fail("tensor \"%s\" holds other bytes than the data at offset %lld", name, (long long)cursor);
                free(buf);
            }
            expect(ag_tensor_free(t), B(AG_OK), "ag_tensor_free");
        }
        cursor += bytes;
    }
    if (tiled && cursor != payload_len) fail("the tensors cover %lld of the %lld bytes of data", (long long)cursor, (long long)payload_len);

    /* Out-of-range and unknown names. */
    const char *name = (const char *)1;
    expect(ag_safetensors_name(&name, f, count), B(AG_ERR_ARGUMENT), "ag_safetensors_name");
    expect(ag_safetensors_name(&name, f, -1), B(AG_ERR_ARGUMENT), "ag_safetensors_name");
    if (name != (const char *)1) fail("a failed ag_safetensors_name wrote its output");
    ag_tensor t = 0;
    expect(ag_safetensors_load(&t, f, NULL), B(AG_ERR_ARGUMENT), "ag_safetensors_load");
    bool known = false;
    for (int64_t i = 0; i < count; i++) known |= strcmp(names[i], "\x01?") == 0;
    if (!known) expect(ag_safetensors_load(&t, f, "\x01?"), B(AG_ERR_ARGUMENT), "ag_safetensors_load");
    if (t != 0) fail("a failed load wrote its output");

    /* Metadata. */
    int64_t nm = -1;
    expect(ag_safetensors_metadata_count(&nm, f), B(AG_OK), "ag_safetensors_metadata_count");
    if (nm < 0 || nm > (int64_t)size) fail("metadata count %lld", (long long)nm);
    SEEN(nm == 0);
    SEEN(nm == 1);
    SEEN(nm > 1);
    const char **keys = calloc((size_t)nm + 1, sizeof *keys);
    if (!keys) fail("out of memory in the harness");
    for (int64_t i = 0; i < nm; i++) {
        const char *k = NULL, *v = NULL, *w = NULL;
        expect(ag_safetensors_metadata_entry(&k, &v, f, i), B(AG_OK), "ag_safetensors_metadata_entry");
        if (!k || !v) fail("metadata entry %lld has a NULL key or value", (long long)i);
        for (int64_t j = 0; j < i; j++)
            if (strcmp(keys[j], k) == 0) fail("metadata keys %lld and %lld are both \"%s\"", (long long)j, (long long)i, k);
        keys[i] = k;
        expect(ag_safetensors_metadata(&w, f, k), B(AG_OK), "ag_safetensors_metadata");
        if (!w || strcmp(w, v) != 0) fail("ag_safetensors_metadata(\"%s\") differs from entry %lld", k, (long long)i);
    }
    expect(ag_safetensors_metadata_entry(NULL, NULL, f, nm), B(AG_ERR_ARGUMENT), "ag_safetensors_metadata_entry");
    free(keys);
    free(names);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *t = getenv("FUZZ_TRACE");
    g_trace = t && *t && strcmp(t, "0") != 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_safetensors f = (ag_safetensors)0x5A5A5A5A5A5A5A5AULL;
    /* libFuzzer may pass NULL for an empty input: give a valid pointer then. */
    static const uint8_t empty[1] = {0};
    ag_status st = expect(ag_safetensors_open_memory(&f, size ? data : empty, (int64_t)size),
                          B(AG_OK) | B(AG_ERR_FORMAT) | B(AG_ERR_OUT_OF_MEMORY), "ag_safetensors_open_memory");
    if (st != AG_OK) classify(ag_last_error());
    if (st == AG_OK) {
        check_file(f, data, size);
        expect(ag_safetensors_close(f), B(AG_OK), "ag_safetensors_close");
        int64_t n = 0;
        expect(ag_safetensors_count(&n, f), B(AG_ERR_INVALID_HANDLE), "ag_safetensors_count");
    } else if (f != (ag_safetensors)0x5A5A5A5A5A5A5A5AULL) {
        fail("a failed open wrote its output");
    }
    g_op = "end of input";
    int64_t live = -1;
    expect(ag_live_handle_count(&live), B(AG_OK), "ag_live_handle_count");
    if (live != 0) fail("%lld handles live at the end", (long long)live);
    return 0;
}
