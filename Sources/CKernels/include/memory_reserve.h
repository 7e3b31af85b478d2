/* The emergency memory reserve (memory_reserve.c): address space held back so that, when memory
 * runs out, the allocations a failing call needs to unwind and report its error (and those of
 * the Swift runtime, which aborts the process when malloc fails) can still succeed. */
#ifndef AUTOGRAD_MEMORY_RESERVE_H
#define AUTOGRAD_MEMORY_RESERVE_H

#include <stdbool.h>
#include <stddef.h>

/* The reserve's mapping, or NULL while it is spent. Written only by memory_reserve.c. */
extern void *agm_reserve_block;

/* Whether the reserve is spent: one relaxed atomic load, cheap enough for the per-op path. */
static inline bool agm_reserve_spent(void) {
    return __atomic_load_n(&agm_reserve_block, __ATOMIC_RELAXED) == NULL;
}

/* The reserve's size in bytes. */
size_t agm_reserve_bytes(void);

/* Gives the reserve back to the system (nothing when it is already spent). */
void agm_release_reserve(void);

/* Maps a new reserve when it is spent; true when a reserve is held afterwards. */
bool agm_rearm_reserve(void);

/* Returns free heap memory to the system (malloc_trim), so that a reserve can be mapped again. */
void agm_trim_heap(void);

/* Sets the function the allocation wrappers call when an allocation fails, before they spend
 * the reserve: it returns cached memory to the system without allocating or blocking, and
 * says whether it freed anything. */
void agm_set_low_memory_handler(bool (*handler)(void));

/* How many times the reserve was released: for tests and messages. */
long agm_reserve_release_count(void);

#endif
