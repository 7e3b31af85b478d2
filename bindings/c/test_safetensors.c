/*
 * test_safetensors.c - tests of the "Files: safetensors" section of include/autograd.h, written
 * against the header alone:
 *
 *   - saving float32, float64, int64 and bool tensors (a 0-d one and an empty one among them) with
 *     metadata, opening the file again, listing it (names in data order), ag_safetensors_info,
 *     loading every tensor and comparing its values, shape and dtype with what was saved;
 *   - a file written here byte by byte (values derived by hand: IEEE 754 bit patterns,
 *     little-endian) read through ag_safetensors_open and ag_safetensors_open_memory; a format
 *     dtype Autograd does not hold (BF16) listed with dtype 0 and refused on load;
 *   - the bytes of a file written by ag_safetensors_save checked against the format by hand;
 *   - the strings the file hands out staying valid until close; loaded tensors outliving it;
 *   - errors: AG_ERR_IO for a missing file and an unwritable directory, AG_ERR_FORMAT for a bad
 *     header, argument errors, closed handles; nothing written to outputs on failure;
 *   - no live handle at the end (and the program runs clean under valgrind).
 *
 * Output: the name of each test group, one line per failed check, and finally exactly
 * "N passed, M failed". Exit status 0 only if M is 0.
 *
 * Build: cc -std=c11 -Wall -Wextra -Werror -g -I include -o test_safetensors
 *        bindings/c/test_safetensors.c -L .build/release -lautograd -Wl,-rpath,... -lm
 */
#define _POSIX_C_SOURCE 200809L

#include "test_support.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64]; /* a fresh temporary directory (mkdtemp), removed at the end */

/* A directory nobody but root may write into. */
static bool mkdir_ok(const char *path) { return mkdir(path, 0555) == 0; }

static void path_in_dir(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* The whole file at `path` (malloc'd; *n its length), or NULL. */
static unsigned char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(1 << 16);
    *n = buf ? fread(buf, 1, 1 << 16, f) : 0;
    fclose(f);
    return buf;
}

static bool write_whole(const char *path, const unsigned char *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(bytes, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

/* A file in memory: the 8-byte little-endian header length, the header, the data. */
static size_t build(unsigned char *out, const char *header, const unsigned char *data, size_t ndata) {
    size_t h = strlen(header);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(out + 8, header, h);
    if (ndata) memcpy(out + 8 + h, data, ndata);
    return 8 + h + ndata;
}

/* ========================================================================================== */

/* Saves four dtypes (a 0-d tensor, an empty one, a rank-3 one), reopens, lists, loads, compares. */
static void round_trip(void) {
    double w[6] = {1.5, -0.25, 3.0, 1e-3, -7.0, 0.0};
    float wf[6];
    for (int i = 0; i < 6; i++) wf[i] = (float)w[i];
    double b = 3.141592653589793;
    int64_t steps[4] = {INT64_MIN, -1, 0, INT64_MAX};
    uint8_t mask[3] = {1, 0, 1};
    int64_t sw[2] = {2, 3}, ss[3] = {2, 1, 2}, sm[1] = {3}, se[2] = {0, 5};
    ag_tensor t[5] = {0};
    CHECK_OK(ag_tensor_from_data(&t[0], wf, sw, 2, AG_FLOAT32));
    CHECK_OK(ag_tensor_from_data(&t[1], &b, NULL, 0, AG_FLOAT64));
    CHECK_OK(ag_tensor_from_data(&t[2], steps, ss, 3, AG_INT64));
    CHECK_OK(ag_tensor_from_data(&t[3], mask, sm, 1, AG_BOOL));
    CHECK_OK(ag_tensor_from_data(&t[4], NULL, se, 2, AG_FLOAT32));
    const char *names[5] = {"layer.weight", "bias", "step", "mask", "empty"};
    const char *keys[3] = {"format", "quote\"back\\slash\nnewline", "\xc3\xa9t\xc3\xa9"};
    const char *vals[3] = {"pt", "tab\there \xf0\x9f\x98\x80", ""};
    char path[128];
    path_in_dir(path, sizeof path, "model.safetensors");
    CHECK_OK(ag_safetensors_save(path, names, t, 5, keys, vals, 3));

    ag_safetensors f = 0;
    if (!CHECK_OK(ag_safetensors_open(&f, path))) goto done;
    int64_t n = -1;
    CHECK_OK(ag_safetensors_count(&n, f));
    CHECK(n == 5);
    for (int64_t i = 0; i < 5 && i < n; i++) {
        const char *name = NULL;
        CHECK_OK(ag_safetensors_name(&name, f, i));
        CHECKF(name && strcmp(name, names[i]) == 0, "name %" PRId64 " is %s, want %s", i, name ? name : "(null)", names[i]);
    }
    ag_dtype dt = -1;
    int64_t nd = -1, shape[4] = {-1, -1, -1, -1};
    CHECK_OK(ag_safetensors_info(&dt, &nd, shape, 4, f, "step"));
    CHECK(dt == AG_INT64 && nd == 3 && shape[0] == 2 && shape[1] == 1 && shape[2] == 2 && shape[3] == -1);
    CHECK_OK(ag_safetensors_info(&dt, &nd, shape, 1, f, "layer.weight"));  /* capacity below the rank */
    CHECK(dt == AG_FLOAT32 && nd == 2 && shape[0] == 2 && shape[1] == 1);
    CHECK_OK(ag_safetensors_info(&dt, &nd, NULL, 0, f, "bias"));
    CHECK(dt == AG_FLOAT64 && nd == 0);
    CHECK_OK(ag_safetensors_info(NULL, NULL, NULL, 0, f, "mask"));  /* every output optional */

    ag_tensor u = 0;
    CHECK_OK(ag_safetensors_load(&u, f, "layer.weight"));
    {
        float got[6] = {0};
        ag_dtype d = 0;
        int64_t s[2] = {0};
        bool rg = true;
        CHECK_OK(ag_tensor_dtype(&d, u));
        CHECK_OK(ag_tensor_shape(s, 2, u));
        CHECK_OK(ag_tensor_copy_data(got, 6, AG_FLOAT32, u));
        CHECK_OK(ag_tensor_requires_grad(&rg, u));
        CHECK(d == AG_FLOAT32 && s[0] == 2 && s[1] == 3 && !rg);
        CHECK(memcmp(got, wf, sizeof wf) == 0);
        CHECK_OK(ag_tensor_free(u));
    }
    CHECK_OK(ag_safetensors_load(&u, f, "bias"));
    {
        double got = 0;
        int64_t k = -1;
        CHECK_OK(ag_tensor_ndim(&k, u));
        CHECK_OK(ag_tensor_copy_data(&got, 1, AG_FLOAT64, u));
        CHECK(k == 0 && got == b);
        CHECK_OK(ag_tensor_free(u));
    }
    CHECK_OK(ag_safetensors_load(&u, f, "step"));
    {
        int64_t got[4] = {0};
        CHECK_OK(ag_tensor_copy_data(got, 4, AG_INT64, u));
        CHECK(memcmp(got, steps, sizeof steps) == 0);
        CHECK_OK(ag_tensor_free(u));
    }
    CHECK_OK(ag_safetensors_load(&u, f, "mask"));
    {
        uint8_t got[3] = {9, 9, 9};
        ag_dtype d = 0;
        CHECK_OK(ag_tensor_dtype(&d, u));
        CHECK_OK(ag_tensor_copy_data(got, 3, AG_BOOL, u));
        CHECK(d == AG_BOOL && got[0] == 1 && got[1] == 0 && got[2] == 1);
        CHECK_OK(ag_tensor_free(u));
    }
    CHECK_OK(ag_safetensors_load(&u, f, "empty"));
    {
        int64_t k = -1, s[2] = {-1, -1};
        CHECK_OK(ag_tensor_numel(&k, u));
        CHECK_OK(ag_tensor_shape(s, 2, u));
        CHECK(k == 0 && s[0] == 0 && s[1] == 5);
        CHECK_OK(ag_tensor_free(u));
    }

    int64_t nm = -1;
    CHECK_OK(ag_safetensors_metadata_count(&nm, f));
    CHECK(nm == 3);
    for (int64_t i = 0; i < 3 && i < nm; i++) {
        const char *k = NULL, *v = NULL;
        CHECK_OK(ag_safetensors_metadata_entry(&k, &v, f, i));
        CHECKF(k && v && strcmp(k, keys[i]) == 0 && strcmp(v, vals[i]) == 0, "metadata entry %" PRId64, i);
    }
    const char *v = NULL, *v2 = (const char *)1;
    CHECK_OK(ag_safetensors_metadata(&v, f, keys[1]));
    CHECK(v && strcmp(v, vals[1]) == 0);
    CHECK_OK(ag_safetensors_metadata(&v2, f, "missing"));
    CHECK(v2 == NULL);
    CHECK_OK(ag_safetensors_metadata_entry(NULL, NULL, f, 0));
    /* The strings stay valid (and unchanged) until close: compare once more after other calls. */
    const char *first = NULL;
    CHECK_OK(ag_safetensors_name(&first, f, 0));
    CHECK_OK(ag_safetensors_load(&u, f, "bias"));
    CHECK(first && strcmp(first, "layer.weight") == 0 && v && strcmp(v, vals[1]) == 0);
    CHECK_OK(ag_safetensors_close(f));
    /* A loaded tensor outlives the file. */
    double got = 0;
    CHECK_OK(ag_tensor_copy_data(&got, 1, AG_FLOAT64, u));
    CHECK(got == b);
    CHECK_OK(ag_tensor_free(u));
    /* The closed handle is refused everywhere. */
    CHECK_ERR(ag_safetensors_count(&n, f), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_safetensors_close(f), AG_ERR_INVALID_HANDLE);
    CHECK_OK(ag_safetensors_close(0));
done:
    unlink(path);
    for (int i = 0; i < 5; i++) ag_tensor_free(t[i]);
}

/* The writer's bytes, derived by hand from the format: length, JSON in the caller's order,
 * padding with spaces to a multiple of 8, values little-endian. */
static void written_bytes(void) {
    float x[2] = {1.0f, -2.0f};
    int64_t s = 2;
    ag_tensor t = 0;
    CHECK_OK(ag_tensor_from_data(&t, x, &s, 1, AG_FLOAT32));
    const char *names[1] = {"x"};
    const char *k[1] = {"k"}, *vv[1] = {"v"};
    char path[128];
    path_in_dir(path, sizeof path, "bytes.safetensors");
    CHECK_OK(ag_safetensors_save(path, names, &t, 1, k, vv, 1));
    const char *json = "{\"__metadata__\":{\"k\":\"v\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t h = strlen(json), padded = (h + 7) / 8 * 8;
    unsigned char want[256];
    memset(want, ' ', sizeof want);
    for (int i = 0; i < 8; i++) want[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(want + 8, json, h);
    const unsigned char data[8] = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0};
    memcpy(want + 8 + padded, data, 8);
    size_t n = 0;
    unsigned char *got = read_whole(path, &n);
    CHECKF(got && n == 8 + padded + 8 && memcmp(got, want, n) == 0, "the file's %zu bytes differ from the %zu expected", n,
           8 + padded + 8);
    free(got);
    /* No metadata, no tensor: still a valid file ({} and spaces). */
    CHECK_OK(ag_safetensors_save(path, NULL, NULL, 0, NULL, NULL, 0));
    got = read_whole(path, &n);
    CHECK(got && n == 16 && got[0] == 8 && memcmp(got + 8, "{}      ", 8) == 0);
    free(got);
    unlink(path);
    ag_tensor_free(t);
}

/* A file made byte by byte: 1.0f = 0x3F800000, 0.5 = 0x3FE0000000000000, int64 258 = 0x0102,
 * bool 1 0, a BF16 pair; read from disk and from memory. */
static void hand_built(void) {
    const char *header = "{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[12,20]},"
                         "\"f\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                         "\"d\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[4,12]},"
                         "\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[22,26]},"
                         "\"m\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[20,22]},"
                         "\"__metadata__\":{\"a\":\"b\"}}  ";
    const unsigned char data[26] = {0x00, 0x00, 0x80, 0x3F, 0, 0, 0, 0, 0, 0, 0xE0, 0x3F,
                                    0x02, 0x01, 0, 0, 0, 0, 0, 0, 1, 0, 0x80, 0x3F, 0x00, 0x40};
    unsigned char file[1024];
    size_t len = build(file, header, data, sizeof data);
    char path[128];
    path_in_dir(path, sizeof path, "hand.safetensors");
    CHECK(write_whole(path, file, len));
    for (int from_memory = 0; from_memory < 2; from_memory++) {
        set_ctx("%s", from_memory ? "open_memory" : "open");
        ag_safetensors f = 0;
        if (!CHECK_OK(from_memory ? ag_safetensors_open_memory(&f, file, (int64_t)len) : ag_safetensors_open(&f, path))) continue;
        const char *order[5] = {"f", "d", "i", "m", "h"};
        for (int i = 0; i < 5; i++) {
            const char *name = NULL;
            CHECK_OK(ag_safetensors_name(&name, f, i));
            CHECKF(name && strcmp(name, order[i]) == 0, "entry %d is %s, want %s (data order)", i, name ? name : "(null)", order[i]);
        }
        ag_tensor u = 0;
        float fv = 0;
        double dv = 0;
        int64_t iv = 0;
        uint8_t mv[2] = {9, 9};
        CHECK_OK(ag_safetensors_load(&u, f, "f"));
        CHECK_OK(ag_tensor_copy_data(&fv, 1, AG_FLOAT32, u));
        CHECK(fv == 1.0f);
        ag_tensor_free(u);
        CHECK_OK(ag_safetensors_load(&u, f, "d"));
        CHECK_OK(ag_tensor_copy_data(&dv, 1, AG_FLOAT64, u));
        CHECK(dv == 0.5);
        ag_tensor_free(u);
        CHECK_OK(ag_safetensors_load(&u, f, "i"));
        CHECK_OK(ag_tensor_copy_data(&iv, 1, AG_INT64, u));
        CHECK(iv == 258);
        ag_tensor_free(u);
        CHECK_OK(ag_safetensors_load(&u, f, "m"));
        CHECK_OK(ag_tensor_copy_data(mv, 2, AG_BOOL, u));
        CHECK(mv[0] == 1 && mv[1] == 0);
        ag_tensor_free(u);
        ag_dtype dt = -1;
        int64_t nd = -1, sh[1] = {-1};
        CHECK_OK(ag_safetensors_info(&dt, &nd, sh, 1, f, "h"));
        CHECK(dt == 0 && nd == 1 && sh[0] == 2);
        u = SENTINEL;
        CHECK_ERR(ag_safetensors_load(&u, f, "h"), AG_ERR_DTYPE);
        CHECK(u == SENTINEL && strstr(ag_last_error(), "BF16") != NULL);
        const char *v = NULL;
        CHECK_OK(ag_safetensors_metadata(&v, f, "a"));
        CHECK(v && strcmp(v, "b") == 0);
        CHECK_OK(ag_safetensors_close(f));
    }
    set_ctx("%s", "");
    /* open_memory copies: the caller's buffer may change at once. */
    ag_safetensors f = 0;
    CHECK_OK(ag_safetensors_open_memory(&f, file, (int64_t)len));
    memset(file, 0xAB, len);
    ag_tensor u = 0;
    float fv = 0;
    CHECK_OK(ag_safetensors_load(&u, f, "f"));
    CHECK_OK(ag_tensor_copy_data(&fv, 1, AG_FLOAT32, u));
    CHECK(fv == 1.0f);
    ag_tensor_free(u);
    ag_safetensors_close(f);
    unlink(path);
}

static bool message_has(const char *frag) {
    bool ok = strstr(ag_last_error(), frag) != NULL;
    CHECKF(ok, "message \"%s\" lacks \"%s\"", ag_last_error(), frag);
    return ok;
}

static void errors(void) {
    ag_safetensors f = SENTINEL;
    CHECK_ERR(ag_safetensors_open(&f, "/nonexistent-autograd-dir/x.safetensors"), AG_ERR_IO);
    message_has("ag_safetensors_open: cannot open '/nonexistent-autograd-dir/x.safetensors': No such file or directory");
    CHECK(f == SENTINEL);
    float x = 1;
    int64_t s = 1;
    ag_tensor t = 0;
    CHECK_OK(ag_tensor_from_data(&t, &x, &s, 1, AG_FLOAT32));
    const char *names[2] = {"a", "a"};
    CHECK_ERR(ag_safetensors_save("/nonexistent-autograd-dir/x.safetensors", names, &t, 1, NULL, NULL, 0), AG_ERR_IO);
    message_has("cannot create '/nonexistent-autograd-dir/x.safetensors.tmp.");
    char path[128];
    path_in_dir(path, sizeof path, "bad.safetensors");
    ag_tensor two[2] = {t, t};
    CHECK_ERR(ag_safetensors_save(path, names, two, 2, NULL, NULL, 0), AG_ERR_ARGUMENT);
    message_has("repeats");
    CHECK(access(path, F_OK) != 0);  /* nothing written */
    const char *bad_utf8[1] = {"\xff"};
    CHECK_ERR(ag_safetensors_save(path, bad_utf8, &t, 1, NULL, NULL, 0), AG_ERR_ARGUMENT);
    message_has("names[0] is not valid UTF-8");
    /* A directory (not writable by anyone but root: skip the check as root). */
    if (geteuid() != 0) {
        char ro[128];
        path_in_dir(ro, sizeof ro, "readonly");
        CHECK(mkdir_ok(ro));
        char inside[192];
        snprintf(inside, sizeof inside, "%s/x.safetensors", ro);
        CHECK_ERR(ag_safetensors_save(inside, names, &t, 1, NULL, NULL, 0), AG_ERR_IO);
        message_has("Permission denied");
        rmdir(ro);
    }
    /* A path under a regular file (refused even for root). */
    char under_file[192];
    path_in_dir(path, sizeof path, "plain");
    CHECK(write_whole(path, (const unsigned char *)"x", 1));
    snprintf(under_file, sizeof under_file, "%s/x.safetensors", path);
    CHECK_ERR(ag_safetensors_save(under_file, names, &t, 1, NULL, NULL, 0), AG_ERR_IO);
    message_has("Not a directory");
    CHECK_ERR(ag_safetensors_open(&f, under_file), AG_ERR_IO);
    message_has("Not a directory");
    unlink(path);
    path_in_dir(path, sizeof path, "bad.safetensors");
    /* A file that is not a safetensors file. */
    unsigned char junk[16] = "not a tensor fi";
    CHECK(write_whole(path, junk, sizeof junk));
    CHECK_ERR(ag_safetensors_open(&f, path), AG_ERR_FORMAT);
    CHECK(f == SENTINEL);
    unlink(path);
    CHECK_ERR(ag_safetensors_open_memory(&f, junk, 5), AG_ERR_FORMAT);
    message_has("the buffer is truncated: it has 5 bytes");
    CHECK_ERR(ag_safetensors_open_memory(&f, NULL, 5), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_open_memory(&f, junk, -1), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_open_memory(NULL, junk, 16), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_open(&f, NULL), AG_ERR_ARGUMENT);
    CHECK(f == SENTINEL);
    /* Arguments of the readers. */
    unsigned char file[256];
    size_t len = build(file, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", (const unsigned char *)"\0\0\0\0", 4);
    CHECK_OK(ag_safetensors_open_memory(&f, file, (int64_t)len));
    const char *name = (const char *)1;
    CHECK_ERR(ag_safetensors_name(&name, f, 1), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_name(&name, f, -1), AG_ERR_ARGUMENT);
    CHECK(name == (const char *)1);
    int64_t sh[1];
    CHECK_ERR(ag_safetensors_info(NULL, NULL, sh, -1, f, "a"), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_info(NULL, NULL, NULL, 1, f, "a"), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_info(NULL, NULL, sh, 1, f, "b"), AG_ERR_ARGUMENT);
    message_has("no tensor named \"b\"");
    CHECK_ERR(ag_safetensors_info(NULL, NULL, sh, 1, f, NULL), AG_ERR_ARGUMENT);
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_safetensors_load, f, "zz");
    CHECK_ERR_OUT(AG_ERR_ARGUMENT, ag_safetensors_load, f, NULL);
    CHECK_ERR(ag_safetensors_load(NULL, f, "a"), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_metadata(NULL, f, "a"), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_metadata(&name, f, NULL), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_metadata_entry(NULL, NULL, f, 0), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_safetensors_count(NULL, f), AG_ERR_ARGUMENT);
    /* Handles of another kind. */
    int64_t n = -1;
    CHECK_ERR(ag_safetensors_count(&n, t), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_safetensors_close(t), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_tensor_numel(&n, f), AG_ERR_INVALID_HANDLE);
    CHECK_ERR(ag_safetensors_count(&n, 0), AG_ERR_INVALID_HANDLE);
    CHECK(n == -1);
    CHECK_OK(ag_safetensors_close(f));
    ag_tensor_free(t);
}

int main(void) {
    test_begin();
    snprintf(g_dir, sizeof g_dir, "/tmp/ag-safetensors-XXXXXX");
    if (!mkdtemp(g_dir)) {
        printf("cannot make a temporary directory\n");
        return 1;
    }
    run_group_checking_handles("round trip", round_trip);
    run_group_checking_handles("written bytes", written_bytes);
    run_group_checking_handles("hand-built file", hand_built);
    run_group_checking_handles("errors", errors);
    rmdir(g_dir);
    check_no_leaks();
    return test_summary();
}
