/* allocator.h — the caching allocator behind an_alloc/an_free.
 *
 * Training repeats the same allocations every step.  Returning those blocks
 * to glibc lets it unmap large ones, and the next step pays a page fault
 * (~12 us) for every fresh 4 KiB page it touches.  So freed blocks are kept
 * in per-size-class free lists and handed out again.
 *
 * Size classes: 64-byte multiples rounded up to a power of two up to 4 KiB,
 * then four classes per power of two (2^k * 1.25, 1.5, 1.75, 2), so a block
 * wastes at most 25% of its size.  A request of 1 MiB or more may also take
 * a cached block of up to four classes above its own (twice its size), so
 * that blocks move between the many sizes of a step's activations.  Blocks
 * are 64-byte aligned.
 *
 * Limits:
 *   APPEALNET_CACHE_LIMIT_MB  most bytes kept cached (default: half of
 *                             physical memory; a MobileNetV2 step at batch
 *                             128 frees 2-3 GB, and a 2 GiB cap once sent
 *                             ~200 blocks a step back to fresh pages, 9% of
 *                             its time);
 *                             a freed block that would exceed it goes back
 *                             to the system.
 *   APPEALNET_NO_CACHE=1      bypass the cache entirely: every an_alloc is an
 *                             aligned_alloc and every an_free a free().  Use it
 *                             for sanitizer runs (AddressSanitizer cannot see a
 *                             use-after-free of a block that sits in a cache;
 *                             built with ASan, cached blocks are poisoned as a
 *                             second line of defence).
 * Both are read once, at the first allocation.
 *
 * Thread-safe (one mutex; allocations are per tensor, not per element). */
#ifndef APPEALNET_CORE_ALLOCATOR_H
#define APPEALNET_CORE_ALLOCATOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 64-byte aligned block of at least `bytes` (0 allowed), or NULL. Sets no
   error: an_alloc in tensor.c reports failures. */
void *an_cache_alloc(size_t bytes);
/* Returns a block from an_cache_alloc (NULL is ignored). */
void an_cache_free(void *p);

typedef struct an_allocator_stats {
    uint64_t hits;          /* allocations served from the cache */
    uint64_t misses;        /* allocations that went to the system */
    uint64_t frees_cached;  /* frees that kept the block */
    uint64_t frees_system;  /* frees that returned the block (cap reached, oversize, no cache) */
    size_t cached_bytes;    /* bytes sitting in the free lists now */
    size_t cached_blocks;
    size_t live_bytes;      /* bytes of blocks handed out and not yet freed */
    size_t limit_bytes;     /* the cap on cached_bytes */
    int enabled;            /* 0 when APPEALNET_NO_CACHE bypasses the cache */
} an_allocator_stats;

void an_allocator_get_stats(an_allocator_stats *out);
/* Frees every cached block; returns how many bytes went back to the system. */
size_t an_allocator_release_cache(void);
/* Zeroes the hit/miss/free counters (the byte counts are state, not counters). */
void an_allocator_reset_counters(void);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_CORE_ALLOCATOR_H */
