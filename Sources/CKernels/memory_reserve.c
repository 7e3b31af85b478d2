/* The emergency memory reserve, and the allocation wrappers that spend it.
 *
 * The Swift runtime aborts the process when malloc returns NULL (swift_slowAlloc: "failed to
 * allocate N bytes"), and every object, array and string the engine makes goes through it. So
 * that running out of memory is an AG_ERR_OUT_OF_MEMORY and not the end of the host process:
 *
 *  - at load, RESERVE_BYTES of address space are mapped (never touched, so they cost no physical
 *    memory, only address space and commit charge: what `ulimit -v` and strict overcommit count);
 *  - scripts/build.sh links libautograd.so with `--wrap` for malloc, calloc, realloc and
 *    posix_memalign, so every such call made by the library's own code and by the statically
 *    linked Swift runtime comes here first. When the real allocator fails, the engine's cached
 *    tensor buffers are returned to the system and the call retried; if it fails again, the
 *    reserve is unmapped and the call retried once more: the space it gave back lets that
 *    allocation, and the small ones of the failing call's unwinding and error message, succeed;
 *  - while the reserve is spent, the engine refuses to create tensors (Storage.make and the C
 *    API's produce check agm_reserve_spent, one relaxed load) after trying to map a new one
 *    (MemoryReserve.rearm): new work fails with AG_ERR_OUT_OF_MEMORY until memory is freed.
 *
 * The allocator calls of other libraries (OpenBLAS, libstdc++'s operator new, glibc's strdup) are
 * not wrapped. Without the link flags (debug and test builds) the wrappers are never called and
 * only the failures the engine sees itself (tensor buffers) release the reserve. */
#include "memory_reserve.h"

#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

enum { RESERVE_BYTES = 8 << 20 };

void *agm_reserve_block = NULL;
static long release_count = 0;

size_t agm_reserve_bytes(void) { return RESERVE_BYTES; }

long agm_reserve_release_count(void) { return __atomic_load_n(&release_count, __ATOMIC_RELAXED); }

void agm_release_reserve(void) {
    void *block = __atomic_exchange_n(&agm_reserve_block, NULL, __ATOMIC_ACQ_REL);
    if (block) {
        munmap(block, RESERVE_BYTES);
        __atomic_add_fetch(&release_count, 1, __ATOMIC_RELAXED);
    }
}

bool agm_rearm_reserve(void) {
    if (__atomic_load_n(&agm_reserve_block, __ATOMIC_ACQUIRE)) return true;
    void *block = mmap(NULL, RESERVE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) return false;
    void *expected = NULL;
    if (!__atomic_compare_exchange_n(&agm_reserve_block, &expected, block, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        munmap(block, RESERVE_BYTES); /* another thread re-armed first */
    }
    return true;
}

void agm_trim_heap(void) { malloc_trim(0); }

__attribute__((constructor)) static void make_reserve(void) { agm_rearm_reserve(); }

/* The real allocator, as the linker's --wrap names it. Weak, so that builds linked without the
 * wrap flags (which never call the wrappers) still link. */
extern void *__real_malloc(size_t size) __attribute__((weak));
extern void *__real_calloc(size_t count, size_t size) __attribute__((weak));
extern void *__real_realloc(void *p, size_t size) __attribute__((weak));
extern int __real_posix_memalign(void **out, size_t alignment, size_t size) __attribute__((weak));

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *p, size_t size);
int __wrap_posix_memalign(void **out, size_t alignment, size_t size);

static bool (*low_memory_handler)(void) = NULL;

void agm_set_low_memory_handler(bool (*handler)(void)) {
    __atomic_store_n(&low_memory_handler, handler, __ATOMIC_RELEASE);
}

/* The slow path of every wrapper, after a failed allocation: stage 0 asks the engine to return
 * its cached buffers (true if it freed any), stage 1 gives the reserve back. The caller retries
 * after each stage that may have made room; after stage 1 it retries even when the reserve was
 * already spent, since other threads may have freed memory. */
__attribute__((noinline, cold)) static bool make_room(int stage) {
    if (stage == 0) {
        bool (*handler)(void) = __atomic_load_n(&low_memory_handler, __ATOMIC_ACQUIRE);
        return handler != NULL && handler();
    }
    agm_release_reserve();
    return true;
}

void *__wrap_malloc(size_t size) {
    void *p = __real_malloc(size);
    for (int stage = 0; __builtin_expect(p == NULL, 0) && stage < 2; stage++) {
        if (make_room(stage)) p = __real_malloc(size);
    }
    return p;
}

void *__wrap_calloc(size_t count, size_t size) {
    void *p = __real_calloc(count, size);
    for (int stage = 0; __builtin_expect(p == NULL, 0) && stage < 2; stage++) {
        if (make_room(stage)) p = __real_calloc(count, size);
    }
    return p;
}

/* A failed realloc leaves p alone, so it may be retried; realloc(p, 0) may return NULL. */
void *__wrap_realloc(void *p, size_t size) {
    void *q = __real_realloc(p, size);
    for (int stage = 0; __builtin_expect(q == NULL && size != 0, 0) && stage < 2; stage++) {
        if (make_room(stage)) q = __real_realloc(p, size);
    }
    return q;
}

/* The Swift runtime allocates with posix_memalign whenever the default alignment is asked for
 * (UnsafeMutablePointer.allocate, over-aligned objects), and so do tensor buffers. */
int __wrap_posix_memalign(void **out, size_t alignment, size_t size) {
    int status = __real_posix_memalign(out, alignment, size);
    for (int stage = 0; __builtin_expect(status != 0, 0) && stage < 2; stage++) {
        if (make_room(stage)) status = __real_posix_memalign(out, alignment, size);
    }
    return status;
}
