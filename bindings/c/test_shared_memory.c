/*
 * test_shared_memory.c - zero-copy tensors over caller memory, in-place writes and DLPack
 * (issue 19, parts 3 and 4):
 *   - the DLPack structures have the x86-64 layout of dlpack.h 1.x (static assertions below);
 *   - ag_tensor_from_buffer: the tensor's data pointer IS the caller's buffer (compared, not
 *     assumed); writes are seen both ways; destroy runs exactly once, only after the last tensor
 *     and the last graph that saved the values are gone, and never for a call that failed;
 *   - version counters: a caller's write plus ag_tensor_mark_modified makes a graph that saved
 *     the values refuse its backward (AG_ERR_STATE naming the op); ag_tensor_data_ptr_mut bumps
 *     the version and is refused where ag_tensor_copy_ is, and on read-only memory;
 *   - backward never writes into caller memory: a borrowed gradient (a hook's replacement) or
 *     seed keeps its values;
 *   - DLPack export: the fields (hand-written expectations), data == ag_tensor_data_ptr, the
 *     values outlive every handle until the deleter; import: the same pointer back, writes seen
 *     both ways, the deleter called exactly once when the tensor dies and never on failure,
 *     byte_offset, kDLCUDAHost, extent-1 strides, bool; a READ_ONLY import refuses
 *     ag_tensor_copy_, ag_tensor_data_ptr_mut and an optimizer.
 * Every group leaves no live handle (run_group_checking_handles); valgrind runs it too.
 */
#define _POSIX_C_SOURCE 200809L
#include "test_support.h"

#include <stddef.h>

/* The layout the DLPack spec's structures get under the x86-64 System V ABI (the header's
 * declarations must give exactly these): DLDevice {int enum, int32}, DLDataType {u8, u8, u16},
 * DLTensor {ptr 0, device 8, ndim 16, dtype 20, shape 24, strides 32, byte_offset 40} = 48. */
#if defined(__x86_64__) || defined(__aarch64__)
_Static_assert(sizeof(DLPackVersion) == 8, "DLPackVersion");
_Static_assert(offsetof(DLPackVersion, major) == 0 && offsetof(DLPackVersion, minor) == 4, "DLPackVersion fields");
_Static_assert(sizeof(DLDeviceType) == 4, "DLDeviceType is an int-sized enum");
_Static_assert(sizeof(DLDevice) == 8, "DLDevice");
_Static_assert(offsetof(DLDevice, device_type) == 0 && offsetof(DLDevice, device_id) == 4, "DLDevice fields");
_Static_assert(sizeof(DLDataType) == 4, "DLDataType");
_Static_assert(offsetof(DLDataType, code) == 0 && offsetof(DLDataType, bits) == 1 && offsetof(DLDataType, lanes) == 2,
               "DLDataType fields");
_Static_assert(sizeof(DLTensor) == 48, "DLTensor");
_Static_assert(offsetof(DLTensor, data) == 0 && offsetof(DLTensor, device) == 8 && offsetof(DLTensor, ndim) == 16 &&
                   offsetof(DLTensor, dtype) == 20 && offsetof(DLTensor, shape) == 24 &&
                   offsetof(DLTensor, strides) == 32 && offsetof(DLTensor, byte_offset) == 40,
               "DLTensor fields");
_Static_assert(sizeof(DLManagedTensor) == 64, "DLManagedTensor");
_Static_assert(offsetof(DLManagedTensor, dl_tensor) == 0 && offsetof(DLManagedTensor, manager_ctx) == 48 &&
                   offsetof(DLManagedTensor, deleter) == 56,
               "DLManagedTensor fields");
_Static_assert(sizeof(DLManagedTensorVersioned) == 80, "DLManagedTensorVersioned");
_Static_assert(offsetof(DLManagedTensorVersioned, version) == 0 &&
                   offsetof(DLManagedTensorVersioned, manager_ctx) == 8 &&
                   offsetof(DLManagedTensorVersioned, deleter) == 16 && offsetof(DLManagedTensorVersioned, flags) == 24 &&
                   offsetof(DLManagedTensorVersioned, dl_tensor) == 32,
               "DLManagedTensorVersioned fields");
#endif
/* The values the spec fixes (dlpack.h 1.x). */
_Static_assert(kDLCPU == 1 && kDLCUDA == 2 && kDLCUDAHost == 3 && kDLOpenCL == 4 && kDLVulkan == 7 && kDLMetal == 8 &&
                   kDLVPI == 9 && kDLROCM == 10 && kDLROCMHost == 11 && kDLExtDev == 12 && kDLCUDAManaged == 13 &&
                   kDLOneAPI == 14 && kDLWebGPU == 15 && kDLHexagon == 16 && kDLMAIA == 17,
               "DLDeviceType values");
_Static_assert(kDLInt == 0 && kDLUInt == 1 && kDLFloat == 2 && kDLOpaqueHandle == 3 && kDLBfloat == 4 &&
                   kDLComplex == 5 && kDLBool == 6,
               "DLDataTypeCode values");
_Static_assert(DLPACK_FLAG_BITMASK_READ_ONLY == 1 && DLPACK_FLAG_BITMASK_IS_COPIED == 2 &&
                   DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED == 4 && DLPACK_MAJOR_VERSION == 1,
               "DLPack flags and version");

static bool message_has(const char *needle) {
    const char *m = ag_last_error();
    bool ok = strstr(m, needle) != NULL;
    if (!ok) printf("  message was: %s\n", m);
    return ok;
}

/* destroy callbacks and deleters: how often each ran and with what. */
static int g_destroyed;
static void *g_destroyed_with;
static void count_destroy(void *user_data) {
    g_destroyed++;
    g_destroyed_with = user_data;
}

static int g_deleted;
static void count_deleter(DLManagedTensorVersioned *self) {
    (void)self;
    g_deleted++;
}
static int g_deleted_unversioned;
static void count_deleter_unversioned(DLManagedTensor *self) {
    (void)self;
    g_deleted_unversioned++;
}

/* The library's own deleter of an export, wrapped so that its calls are counted. */
static void (*g_export_deleter)(DLManagedTensorVersioned *);
static int g_export_deleted;
static void counting_export_deleter(DLManagedTensorVersioned *self) {
    g_export_deleted++;
    g_export_deleter(self);
}

static void read_back(double *out, int64_t n, ag_tensor t) { TRY(ag_tensor_copy_data(out, n, AG_FLOAT64, t)); }

/* ---- ag_tensor_from_buffer ------------------------------------------------------------------ */

static void buffer_is_shared(void) {
    double buf[4] = {1, 2, 3, 4};
    g_destroyed = 0;
    g_destroyed_with = NULL;
    ag_tensor t = 0, r = 0, y = 0, src = 0;
    CHECK_OK(ag_tensor_from_buffer(&t, buf, I64(2, 2), 2, AG_FLOAT64, buf, count_destroy));
    const void *p = NULL;
    CHECK_OK(ag_tensor_data_ptr(&p, t));
    CHECKF(p == (void *)buf, "data_ptr %p is not the buffer %p", p, (void *)buf);
    int64_t version = -1;
    CHECK_OK(ag_tensor_version(&version, t));
    CHECK(version == 0);

    /* The caller writes its buffer: the tensor (and an op on it) reads the new value. */
    buf[0] = 10;
    double got[4];
    read_back(got, 4, t);
    CHECK(got[0] == 10 && got[1] == 2 && got[2] == 3 && got[3] == 4);
    TRY(ag_mul(&y, t, t)); /* 100, 4, 9, 16 */
    EXPECT_VALUES(y, D(100, 4, 9, 16), 4, "t * t over the buffer");

    /* ag_tensor_copy_ writes the caller's buffer, and bumps the version. */
    src = MAKE(D(5, 6, 7, 8), SHAPE(2, 2));
    CHECK_OK(ag_tensor_copy_(t, src));
    CHECK(buf[0] == 5 && buf[1] == 6 && buf[2] == 7 && buf[3] == 8);
    CHECK_OK(ag_tensor_version(&version, t));
    CHECK(version == 1);
    CHECK_OK(ag_tensor_mark_modified(t));
    CHECK_OK(ag_tensor_version(&version, t));
    CHECK(version == 2);

    /* A reshape shares the values: the memory stays until the last tensor over it is freed. */
    TRY(ag_reshape(&r, t, I64(4), 1));
    CHECK_OK(ag_tensor_data_ptr(&p, r));
    CHECK(p == (void *)buf);
    FREE(t, y, src);
    CHECK(g_destroyed == 0);
    FREE(r);
    CHECK(g_destroyed == 1);
    CHECK(g_destroyed_with == (void *)buf);
}

/* A graph that saved the values keeps the memory after every handle to it is freed; destroy runs
 * once that graph goes. */
static void graph_keeps_buffer(void) {
    double buf[3] = {1, 2, 3};
    g_destroyed = 0;
    ag_tensor x = 0, w = MAKE_RG(D(4, 5, 6), SHAPE(3)), y = 0, loss = 0, g = 0;
    CHECK_OK(ag_tensor_from_buffer(&x, buf, I64(3), 1, AG_FLOAT64, NULL, count_destroy));
    TRY(ag_mul(&y, w, x)); /* saves x for dw = x */
    TRY(ag_sum(&loss, y, NULL, 0, false));
    FREE(x);
    CHECK(g_destroyed == 0);
    CHECK_OK(ag_backward(loss, 0, true, false));
    TRY(ag_tensor_grad(&g, w));
    EXPECT_VALUES(g, D(1, 2, 3), 3, "d sum(w * x) / dw = x, read from the buffer after its handle went");
    CHECK(g_destroyed == 0);
    FREE(y);
    CHECK(g_destroyed == 0); /* loss's graph still holds the mul node */
    FREE(loss);
    CHECK(g_destroyed == 1);
    FREE(g, w);
    CHECK(g_destroyed == 1);
}

/* The caller writes the buffer after a graph saved it and says so: backward refuses. */
static void caller_write_refuses_stale_backward(void) {
    double buf[3] = {1, 2, 3};
    ag_tensor x = 0, w = MAKE_RG(D(4, 5, 6), SHAPE(3)), y = 0, loss = 0;
    TRY(ag_tensor_from_buffer(&x, buf, I64(3), 1, AG_FLOAT64, NULL, NULL));
    TRY(ag_mul(&y, w, x));
    TRY(ag_sum(&loss, y, NULL, 0, false));
    buf[1] = 20;
    CHECK_OK(ag_tensor_mark_modified(x));
    CHECK_ERR(ag_backward(loss, 0, true, false), AG_ERR_STATE);
    CHECK(message_has("ag_backward"));
    CHECK(message_has("'mul'"));
    CHECK(message_has("modified in place"));
    /* A graph built after the write runs, and reads the new value. */
    ag_tensor y2 = 0, loss2 = 0, g = 0;
    TRY(ag_mul(&y2, w, x));
    TRY(ag_sum(&loss2, y2, NULL, 0, false));
    CHECK_OK(ag_backward(loss2, 0, false, false));
    TRY(ag_tensor_grad(&g, w));
    EXPECT_VALUES(g, D(1, 20, 3), 3, "dw = x after the write");
    FREE(x, w, y, loss, y2, loss2, g);
}

/* ag_tensor_data_ptr_mut: the buffer, a version bump, and the refusals of ag_tensor_copy_. */
static void data_ptr_mut(void) {
    double buf[2] = {1, 2};
    ag_tensor t = 0, y = 0, w = MAKE_RG(D(1, 2), SHAPE(2));
    TRY(ag_tensor_from_buffer(&t, buf, I64(2), 1, AG_FLOAT64, NULL, NULL));
    void *p = NULL;
    int64_t v0 = -1, v1 = -1;
    TRY(ag_tensor_version(&v0, t));
    CHECK_OK(ag_tensor_data_ptr_mut(&p, t));
    CHECK(p == (void *)buf);
    TRY(ag_tensor_version(&v1, t));
    CHECK(v1 == v0 + 1);

    /* A non-leaf: refused, nothing written. */
    TRY(ag_mul(&y, w, t));
    p = (void *)&buf;
    CHECK_ERR(ag_tensor_data_ptr_mut(&p, y), AG_ERR_STATE);
    CHECK(message_has("ag_tensor_data_ptr_mut"));
    CHECK(message_has("result of 'mul'"));
    CHECK(p == (void *)&buf);
    /* A leaf that requires grad, with grad mode on: refused; with grad mode off: allowed. */
    CHECK_ERR(ag_tensor_data_ptr_mut(&p, w), AG_ERR_STATE);
    CHECK(message_has("requires grad"));
    bool previous = false;
    TRY(ag_set_grad_enabled(&previous, false));
    CHECK_OK(ag_tensor_data_ptr_mut(&p, w));
    ((double *)p)[0] = 7;
    TRY(ag_set_grad_enabled(NULL, previous));
    EXPECT_VALUES(w, D(7, 2), 2, "w written through data_ptr_mut");
    /* An empty tensor has no pointer. */
    ag_tensor e = 0;
    TRY(ag_tensor_zeros(&e, I64(0, 3), 2, AG_FLOAT64));
    p = (void *)&buf;
    CHECK_OK(ag_tensor_data_ptr_mut(&p, e));
    CHECK(p == NULL);
    CHECK_ERR(ag_tensor_data_ptr_mut(NULL, t), AG_ERR_ARGUMENT);
    FREE(t, y, w, e);
}

/* Backward never writes caller memory: a gradient replaced by a hook with a tensor over the
 * caller's buffer (which the library then holds alone) goes into mul's fused rule, which would
 * otherwise reuse that buffer for dx = g * 3 (and hand it out as x's .grad); a borrowed seed
 * likewise. */
static double g_hook_buf[3];
static int32_t borrowed_replacement(ag_tensor *replacement, ag_tensor grad, void *user_data) {
    (void)grad;
    (void)user_data;
    return ag_tensor_from_buffer(replacement, g_hook_buf, I64(3), 1, AG_FLOAT64, g_hook_buf, count_destroy);
}

static void backward_never_writes_borrowed(void) {
    g_hook_buf[0] = 1;
    g_hook_buf[1] = 2;
    g_hook_buf[2] = 3;
    g_destroyed = 0;
    ag_tensor x = MAKE_RG(D(1, 1, 1), SHAPE(3)), three = MAKE(D(3, 3, 3), SHAPE(3)), y = 0, loss = 0, g = 0;
    TRY(ag_mul(&y, x, three));
    TRY(ag_sum(&loss, y, NULL, 0, false));
    int64_t id = 0;
    CHECK_OK(ag_tensor_register_hook(&id, y, borrowed_replacement, NULL, NULL));
    CHECK_OK(ag_backward(loss, 0, false, false));
    CHECKF(g_hook_buf[0] == 1 && g_hook_buf[1] == 2 && g_hook_buf[2] == 3,
           "backward wrote into the borrowed gradient: %g %g %g", g_hook_buf[0], g_hook_buf[1], g_hook_buf[2]);
    TRY(ag_tensor_grad(&g, x));
    EXPECT_VALUES(g, D(3, 6, 9), 3, "dx = replaced gradient * 3");
    const void *p = NULL;
    TRY(ag_tensor_data_ptr(&p, g));
    CHECK(p != (void *)g_hook_buf);
    CHECK(g_destroyed == 1); /* the replacement is gone with the pass: .grad does not alias it */
    FREE(x, three, y, loss, g);

    /* A borrowed seed: unchanged, and dx = seed * 3. */
    double seed_buf[3] = {1, 2, 3};
    ag_tensor x2 = MAKE_RG(D(1, 1, 1), SHAPE(3)), three2 = MAKE(D(3, 3, 3), SHAPE(3)), y2 = 0, seed = 0, g2 = 0;
    TRY(ag_mul(&y2, x2, three2));
    TRY(ag_tensor_from_buffer(&seed, seed_buf, I64(3), 1, AG_FLOAT64, NULL, NULL));
    CHECK_OK(ag_backward(y2, seed, false, false));
    CHECK(seed_buf[0] == 1 && seed_buf[1] == 2 && seed_buf[2] == 3);
    TRY(ag_tensor_grad(&g2, x2));
    EXPECT_VALUES(g2, D(3, 6, 9), 3, "dx = seed * 3");
    FREE(x2, three2, y2, seed, g2);
}

/* Failed calls leave the memory with the caller: destroy is never called. */
static void failures_keep_memory(void) {
    double buf[4] = {0};
    g_destroyed = 0;
    ag_tensor t = SENTINEL;
    CHECK_ERR(ag_tensor_from_buffer(&t, (char *)buf + 1, I64(2), 1, AG_FLOAT64, NULL, count_destroy), AG_ERR_ARGUMENT);
    CHECK(message_has("not aligned"));
    CHECK_ERR(ag_tensor_from_buffer(&t, NULL, I64(2), 1, AG_FLOAT32, NULL, count_destroy), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_from_buffer(&t, buf, I64(2), 1, 9, NULL, count_destroy), AG_ERR_DTYPE);
    CHECK_ERR(ag_tensor_from_buffer(&t, buf, I64(-2), 1, AG_FLOAT64, NULL, count_destroy), AG_ERR_SHAPE);
    CHECK_ERR(ag_tensor_from_buffer(NULL, buf, I64(2), 1, AG_FLOAT64, NULL, count_destroy), AG_ERR_ARGUMENT);
    CHECK(t == SENTINEL);
    CHECK(g_destroyed == 0);
    /* Accepted: NULL data with no element; the tensor then has no pointer. */
    CHECK_OK(ag_tensor_from_buffer(&t, NULL, I64(0, 4), 2, AG_FLOAT32, NULL, count_destroy));
    const void *p = buf;
    TRY(ag_tensor_data_ptr(&p, t));
    CHECK(p == NULL);
    FREE(t);
    CHECK(g_destroyed == 1);
}

/* ---- DLPack --------------------------------------------------------------------------------- */

static void export_fields(void) {
    float values[6] = {1, 2, 3, 4, 5, 6};
    ag_tensor t = 0;
    TRY(ag_tensor_from_data(&t, values, I64(2, 3), 2, AG_FLOAT32));
    const void *p = NULL;
    TRY(ag_tensor_data_ptr(&p, t));
    DLManagedTensorVersioned *m = NULL;
    CHECK_OK(ag_tensor_to_dlpack(&m, t));
    if (!CHECK(m != NULL)) return;
    CHECK(m->version.major == 1 && m->version.minor == 1);
    CHECK(m->flags == 0);
    CHECK(m->deleter != NULL);
    DLTensor *d = &m->dl_tensor;
    CHECKF(d->data == p, "exported data %p, the tensor's %p", d->data, p);
    CHECK(d->device.device_type == kDLCPU && d->device.device_id == 0);
    CHECK(d->ndim == 2);
    CHECK(d->dtype.code == kDLFloat && d->dtype.bits == 32 && d->dtype.lanes == 1);
    CHECK(d->shape[0] == 2 && d->shape[1] == 3);
    CHECK(d->strides != NULL && d->strides[0] == 3 && d->strides[1] == 1);
    CHECK(d->byte_offset == 0);
    /* The values outlive every handle until the deleter. */
    FREE(t);
    const float *f = d->data;
    CHECK(f[0] == 1 && f[5] == 6);
    g_export_deleter = m->deleter;
    g_export_deleted = 0;
    m->deleter = counting_export_deleter;
    m->deleter(m);
    CHECK(g_export_deleted == 1);

    /* A 0-d int64 tensor: ndim 0; an empty bool tensor: data NULL; float64 [4, 1, 2]: strides
     * 2, 2, 1. */
    ag_tensor s = 0, e = 0, c = 0;
    TRY(ag_tensor_full(&s, NULL, 0, 7, AG_INT64));
    CHECK_OK(ag_tensor_to_dlpack(&m, s));
    CHECK(m->dl_tensor.ndim == 0 && m->dl_tensor.dtype.code == kDLInt && m->dl_tensor.dtype.bits == 64);
    CHECK(*(const int64_t *)m->dl_tensor.data == 7);
    m->deleter(m);
    TRY(ag_tensor_zeros(&e, I64(2, 0), 2, AG_BOOL));
    CHECK_OK(ag_tensor_to_dlpack(&m, e));
    CHECK(m->dl_tensor.data == NULL && m->dl_tensor.ndim == 2 && m->dl_tensor.shape[1] == 0);
    CHECK(m->dl_tensor.dtype.code == kDLBool && m->dl_tensor.dtype.bits == 8 && m->dl_tensor.dtype.lanes == 1);
    m->deleter(m);
    TRY(ag_tensor_zeros(&c, I64(4, 1, 2), 3, AG_FLOAT64));
    DLManagedTensor *u = NULL;
    CHECK_OK(ag_tensor_to_dlpack_unversioned(&u, c));
    CHECK(u->dl_tensor.strides[0] == 2 && u->dl_tensor.strides[1] == 2 && u->dl_tensor.strides[2] == 1);
    CHECK(u->dl_tensor.dtype.code == kDLFloat && u->dl_tensor.dtype.bits == 64);
    TRY(ag_tensor_data_ptr(&p, c));
    CHECK(u->dl_tensor.data == p);
    u->deleter(u);
    CHECK_ERR(ag_tensor_to_dlpack(NULL, c), AG_ERR_ARGUMENT);
    CHECK_ERR(ag_tensor_to_dlpack(&m, 0), AG_ERR_INVALID_HANDLE);
    FREE(s, e, c);
}

/* from_dlpack(to_dlpack(t)): the same memory, writes seen both ways, one deleter call. */
static void round_trip(void) {
    ag_tensor t = MAKE(D(1, 2, 3), SHAPE(3)), back = 0, src = MAKE(D(7, 8, 9), SHAPE(3));
    const void *p = NULL, *q = NULL;
    TRY(ag_tensor_data_ptr(&p, t));
    DLManagedTensorVersioned *m = NULL;
    TRY(ag_tensor_to_dlpack(&m, t));
    g_export_deleter = m->deleter;
    g_export_deleted = 0;
    m->deleter = counting_export_deleter;
    CHECK_OK(ag_tensor_from_dlpack(&back, m));
    TRY(ag_tensor_data_ptr(&q, back));
    CHECK(q == p);
    double *values = (double *)p;
    values[0] = 100; /* through the memory: both tensors see it */
    double got[3];
    read_back(got, 3, back);
    CHECK(got[0] == 100);
    CHECK_OK(ag_tensor_copy_(back, src)); /* through the import: the original sees it */
    read_back(got, 3, t);
    CHECK(got[0] == 7 && got[1] == 8 && got[2] == 9);
    FREE(t);
    CHECK(g_export_deleted == 0);
    FREE(back);
    CHECK(g_export_deleted == 1);

    /* Unversioned both ways. */
    ag_tensor u = MAKE32(D(1, 2), SHAPE(2)), ub = 0;
    DLManagedTensor *um = NULL;
    TRY(ag_tensor_to_dlpack_unversioned(&um, u));
    CHECK_OK(ag_tensor_from_dlpack_unversioned(&ub, um));
    TRY(ag_tensor_data_ptr(&p, u));
    TRY(ag_tensor_data_ptr(&q, ub));
    CHECK(p == q);
    FREE(src, u, ub);
}

/* A caller-made DLManagedTensorVersioned over a static buffer. */
static double g_dl_data[8];
static int64_t g_dl_shape[8], g_dl_strides[8];
static DLManagedTensorVersioned dl_tensor(int32_t ndim, const int64_t *shape, const int64_t *strides, uint64_t flags) {
    DLManagedTensorVersioned m;
    memset(&m, 0, sizeof m);
    m.version.major = 1;
    m.version.minor = 0;
    m.deleter = count_deleter;
    m.flags = flags;
    m.dl_tensor.data = g_dl_data;
    m.dl_tensor.device.device_type = kDLCPU;
    m.dl_tensor.ndim = ndim;
    m.dl_tensor.dtype.code = kDLFloat;
    m.dl_tensor.dtype.bits = 64;
    m.dl_tensor.dtype.lanes = 1;
    for (int32_t i = 0; i < ndim && i < 8; i++) {
        g_dl_shape[i] = shape[i];
        if (strides) g_dl_strides[i] = strides[i];
    }
    m.dl_tensor.shape = g_dl_shape;
    m.dl_tensor.strides = strides ? g_dl_strides : NULL;
    return m;
}

static void import_checks(void) {
    for (int i = 0; i < 8; i++) g_dl_data[i] = i + 1;
    g_deleted = 0;
    ag_tensor t = SENTINEL;

    /* Accepted: explicit compact strides; an extent of 1 with any stride; byte_offset;
     * kDLCUDAHost. */
    DLManagedTensorVersioned m = dl_tensor(3, I64(2, 1, 3), I64(3, 99, 1), 0);
    m.dl_tensor.device.device_type = kDLCUDAHost;
    m.dl_tensor.byte_offset = 16; /* starts at element 2 */
    m.dl_tensor.shape[0] = 2;
    CHECK_OK(ag_tensor_from_dlpack(&t, &m));
    const void *p = NULL;
    TRY(ag_tensor_data_ptr(&p, t));
    CHECK(p == (void *)&g_dl_data[2]);
    EXPECT_VALUES(t, D(3, 4, 5, 6, 7, 8), 6, "import from element 2");
    CHECK(g_deleted == 0);
    FREE(t);
    CHECK(g_deleted == 1);

    /* Refused, deleter not called, nothing written. */
    g_deleted = 0;
    t = SENTINEL;
    m = dl_tensor(2, I64(2, 3), I64(1, 2), 0); /* column-major */
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_ARGUMENT);
    CHECK(message_has("not row-major contiguous"));
    m = dl_tensor(1, I64(4), NULL, 0);
    m.version.major = 2;
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_ARGUMENT);
    CHECK(message_has("version 2.0"));
    m = dl_tensor(1, I64(4), NULL, 0);
    m.dl_tensor.device.device_type = kDLCUDA;
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_ARGUMENT);
    CHECK(message_has("device type 2"));
    m = dl_tensor(1, I64(4), NULL, 0);
    m.dl_tensor.dtype.bits = 16;
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_DTYPE);
    m = dl_tensor(1, I64(4), NULL, 0);
    m.dl_tensor.ndim = 9;
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_SHAPE);
    m = dl_tensor(1, I64(-4), NULL, 0);
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_SHAPE);
    m = dl_tensor(1, I64(4), NULL, 0);
    m.dl_tensor.byte_offset = 4;
    CHECK_ERR(ag_tensor_from_dlpack(&t, &m), AG_ERR_ARGUMENT);
    CHECK(message_has("not aligned"));
    CHECK_ERR(ag_tensor_from_dlpack(&t, NULL), AG_ERR_ARGUMENT);
    CHECK(t == SENTINEL);
    CHECK(g_deleted == 0);

    /* A bool import (kDLBool, 8 bits); a byte other than 0 or 1 reads as true. */
    static uint8_t flags[3] = {1, 0, 2};
    DLManagedTensor u;
    memset(&u, 0, sizeof u);
    u.dl_tensor.data = flags;
    u.dl_tensor.device.device_type = kDLCPU;
    u.dl_tensor.ndim = 1;
    u.dl_tensor.dtype.code = kDLBool;
    u.dl_tensor.dtype.bits = 8;
    u.dl_tensor.dtype.lanes = 1;
    u.dl_tensor.shape = g_dl_shape;
    g_dl_shape[0] = 3;
    u.deleter = count_deleter_unversioned;
    g_deleted_unversioned = 0;
    ag_tensor b = 0, nb = 0;
    CHECK_OK(ag_tensor_from_dlpack_unversioned(&b, &u));
    ag_dtype dt = 0;
    TRY(ag_tensor_dtype(&dt, b));
    CHECK(dt == AG_BOOL);
    CHECK_OK(ag_logical_not(&nb, b));
    EXPECT_VALUES(nb, D(0, 1, 0), 3, "logical_not of bytes 1, 0, 2");
    FREE(b, nb);
    CHECK(g_deleted_unversioned == 1);
}

/* A READ_ONLY import is never written: copy_, data_ptr_mut, an optimizer are refused. */
static void read_only_import(void) {
    for (int i = 0; i < 8; i++) g_dl_data[i] = i + 1;
    g_deleted = 0;
    DLManagedTensorVersioned m = dl_tensor(1, I64(3), NULL, DLPACK_FLAG_BITMASK_READ_ONLY);
    ag_tensor t = 0, src = MAKE(D(9, 9, 9), SHAPE(3));
    CHECK_OK(ag_tensor_from_dlpack(&t, &m));
    CHECK_ERR(ag_tensor_copy_(t, src), AG_ERR_STATE);
    CHECK(message_has("ag_tensor_copy_"));
    CHECK(message_has("read-only"));
    void *p = NULL;
    CHECK_ERR(ag_tensor_data_ptr_mut(&p, t), AG_ERR_STATE);
    CHECK(message_has("read-only"));
    CHECK(p == NULL);
    TRY(ag_tensor_set_requires_grad(t, true));
    ag_optimizer opt = 0;
    CHECK_ERR(ag_optimizer_sgd(&opt, &t, 1, 0.1, 0, false, 0), AG_ERR_STATE);
    CHECK(message_has("parameter 0"));
    CHECK(message_has("read-only"));
    CHECK(opt == 0);
    CHECK(g_dl_data[0] == 1 && g_dl_data[1] == 2 && g_dl_data[2] == 3);
    /* Its export says READ_ONLY; the unversioned form, which cannot say it, is refused. */
    DLManagedTensorVersioned *e = NULL;
    CHECK_OK(ag_tensor_to_dlpack(&e, t));
    CHECK(e->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
    DLManagedTensor *u = NULL;
    CHECK_ERR(ag_tensor_to_dlpack_unversioned(&u, t), AG_ERR_STATE);
    CHECK(u == NULL);
    FREE(t, src);
    CHECK(g_deleted == 0); /* the export still holds the values */
    e->deleter(e);
    CHECK(g_deleted == 1);
}

int main(void) {
    test_begin();
    run_group_checking_handles("from_buffer: the caller's buffer, both ways, destroy once", buffer_is_shared);
    run_group_checking_handles("from_buffer: a graph keeps the memory", graph_keeps_buffer);
    run_group_checking_handles("mark_modified: a stale backward is refused", caller_write_refuses_stale_backward);
    run_group_checking_handles("data_ptr_mut", data_ptr_mut);
    run_group_checking_handles("backward never writes borrowed memory", backward_never_writes_borrowed);
    run_group_checking_handles("failed calls keep the memory", failures_keep_memory);
    run_group_checking_handles("DLPack export: fields", export_fields);
    run_group_checking_handles("DLPack: round trip", round_trip);
    run_group_checking_handles("DLPack import: accepted and refused", import_checks);
    run_group_checking_handles("DLPack import: READ_ONLY", read_only_import);
    int64_t live = -1;
    CHECK_OK(ag_live_handle_count(&live));
    CHECK(live == 0);
    return test_summary();
}
