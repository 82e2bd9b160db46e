/* allocator.c — size-class caching allocator, see allocator.h.
 *
 * Every cached-mode block carries a 64-byte header just before the pointer
 * handed out: it records the block's class (an_free only gets the pointer)
 * and links the block into its free list while it is cached, so a cached
 * block's own bytes are never written. */
#define _POSIX_C_SOURCE 200809L
#include "allocator.h"

#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#define AN_ALLOCATOR_HAVE_PTHREAD 1
#include <pthread.h>
#include <unistd.h>
#else
#include <stdatomic.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define AN_ALLOCATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AN_ALLOCATOR_ASAN 1
#endif
#endif
#ifdef AN_ALLOCATOR_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define BLOCK_ALIGN 64
#define BLOCK_MAGIC 0xA11CA7EDu
/* Classes: 64 B .. 4 KiB by powers of two (7), then 4 per power of two up to
 * 2^MAX_CLASS_LOG2 bytes; anything larger is never cached. */
#define SMALL_CLASSES 7
#define SMALL_LIMIT 4096
#define MAX_CLASS_LOG2 40
#define CLASS_COUNT (SMALL_CLASSES + 4 * (MAX_CLASS_LOG2 - 12))
#define UNCACHED_CLASS (-1)
/* See an_cache_alloc: from 1 MiB, a request may take a block of up to 4
   classes above its own. */
#define REUSE_MIN_BYTES ((size_t)1 << 20)
#define REUSE_CLASSES_ABOVE 4

typedef struct block_header {
    struct block_header *next; /* free-list link while cached */
    size_t block_bytes;        /* usable bytes after the header */
    int32_t size_class;        /* UNCACHED_CLASS for oversize blocks */
    uint32_t magic;
} block_header;

/* The header occupies one full alignment unit so the user pointer stays
 * 64-byte aligned. */
#define HEADER_BYTES BLOCK_ALIGN
_Static_assert(sizeof(block_header) <= HEADER_BYTES, "block header must fit in 64 bytes");

static struct {
    int initialised;
    int enabled;
    size_t limit_bytes;
    block_header *free_lists[CLASS_COUNT];
    an_allocator_stats stats;
} cache;

/* ---------------------------------------------------------------- locking */

#ifdef AN_ALLOCATOR_HAVE_PTHREAD
static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static void lock(void) { pthread_mutex_lock(&cache_mutex); }
static void unlock(void) { pthread_mutex_unlock(&cache_mutex); }
#else
static atomic_flag cache_flag = ATOMIC_FLAG_INIT;
static void lock(void)
{
    while (atomic_flag_test_and_set_explicit(&cache_flag, memory_order_acquire)) {
    }
}
static void unlock(void) { atomic_flag_clear_explicit(&cache_flag, memory_order_release); }
#endif

/* ------------------------------------------------------------ size classes */

static int floor_log2(uint64_t x) /* x >= 1 */
{
#if defined(__GNUC__) || defined(__clang__)
    return 63 - __builtin_clzll(x);
#else
    int r = 0;
    while (x >>= 1)
        r++;
    return r;
#endif
}

static size_t class_bytes(int size_class)
{
    if (size_class < SMALL_CLASSES)
        return (size_t)64 << size_class;
    int j = size_class - SMALL_CLASSES;
    int k = 12 + j / 4;
    size_t quarter = (size_t)1 << (k - 2);
    return ((size_t)1 << k) + (size_t)(j % 4 + 1) * quarter;
}

/* Smallest class holding `bytes`, or UNCACHED_CLASS when too large. */
static int class_of(size_t bytes)
{
    if (bytes <= 64)
        return 0;
    if (bytes <= SMALL_LIMIT)
        return floor_log2((uint64_t)bytes - 1) + 1 - 6;
    if (bytes > ((size_t)1 << MAX_CLASS_LOG2))
        return UNCACHED_CLASS;
    int k = floor_log2((uint64_t)bytes - 1); /* 2^k < bytes <= 2^(k+1) */
    size_t quarter = (size_t)1 << (k - 2);
    size_t steps = (bytes - ((size_t)1 << k) + quarter - 1) / quarter; /* 1..4 */
    return SMALL_CLASSES + (k - 12) * 4 + (int)steps - 1;
}

/* ------------------------------------------------------------------ setup */

static size_t default_limit_bytes(void)
{
    size_t limit = (size_t)2048 << 20; /* when physical memory is unknown */
#if defined(AN_ALLOCATOR_HAVE_PTHREAD) && defined(_SC_PHYS_PAGES)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0)
        limit = (size_t)pages / 2 * (size_t)page;
#endif
    return limit;
}

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

/* Called with the lock held. */
static void initialise_locked(void)
{
    if (cache.initialised)
        return;
    cache.enabled = !env_flag("APPEALNET_NO_CACHE");
    cache.limit_bytes = default_limit_bytes();
    const char *mb = getenv("APPEALNET_CACHE_LIMIT_MB");
    if (mb && mb[0]) {
        char *end = NULL;
        double v = strtod(mb, &end);
        if (end != mb && v >= 0)
            cache.limit_bytes = (size_t)(v * 1048576.0);
    }
    cache.stats.enabled = cache.enabled;
    cache.stats.limit_bytes = cache.limit_bytes;
    /* release: a thread that sees the flag without the lock sees the settings */
    __atomic_store_n(&cache.initialised, 1, __ATOMIC_RELEASE);
}

static int cache_enabled(void)
{
    /* The settings never change after initialisation: only the first use
     * takes the lock to read the environment. */
    if (!__atomic_load_n(&cache.initialised, __ATOMIC_ACQUIRE)) {
        lock();
        initialise_locked();
        unlock();
    }
    return cache.enabled;
}

/* ------------------------------------------------------------- alloc/free */

static void *system_alloc(size_t bytes)
{
    size_t rounded = (bytes + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1);
    if (rounded < bytes)
        return NULL; /* overflow */
    return aligned_alloc(BLOCK_ALIGN, rounded ? rounded : BLOCK_ALIGN);
}

void *an_cache_alloc(size_t bytes)
{
    if (!cache_enabled()) {
        void *p = system_alloc(bytes);
        lock();
        cache.stats.misses++;
        unlock();
        return p;
    }
    int size_class = class_of(bytes);
    size_t usable;
    if (size_class != UNCACHED_CLASS) {
        usable = class_bytes(size_class);
        /* A large request may take a free block up to REUSE_CLASSES_ABOVE
           classes larger (up to twice its size; the block keeps its class):
           a training step's activations come in many sizes, and with
           each class serving only its own, the cache held the sum of every
           class's own peak.  MobileNetV2's step at batch 128 needs 1.95 GB
           at its peak and the cache had grown to 2.3 GB. */
        const int last = usable >= REUSE_MIN_BYTES && size_class + REUSE_CLASSES_ABOVE < CLASS_COUNT
                             ? size_class + REUSE_CLASSES_ABOVE
                             : size_class;
        lock();
        for (int c = size_class; c <= last; c++) {
            block_header *h = cache.free_lists[c];
            if (!h)
                continue;
            const size_t held = h->block_bytes;
            cache.free_lists[c] = h->next;
            cache.stats.hits++;
            cache.stats.cached_bytes -= held;
            cache.stats.cached_blocks--;
            cache.stats.live_bytes += held;
            UNPOISON((char *)h + HEADER_BYTES, held);
            unlock();
            h->next = NULL;
            return (char *)h + HEADER_BYTES;
        }
        unlock();
    } else {
        usable = (bytes + BLOCK_ALIGN - 1) & ~(size_t)(BLOCK_ALIGN - 1);
        if (usable < bytes || usable > SIZE_MAX - HEADER_BYTES)
            return NULL;
    }
    block_header *h = system_alloc(HEADER_BYTES + usable);
    if (!h)
        return NULL;
    h->next = NULL;
    h->block_bytes = usable;
    h->size_class = size_class;
    h->magic = BLOCK_MAGIC;
    lock();
    cache.stats.misses++;
    cache.stats.live_bytes += usable;
    unlock();
    return (char *)h + HEADER_BYTES;
}

void an_cache_free(void *p)
{
    if (!p)
        return;
    if (!cache_enabled()) {
        free(p);
        lock();
        cache.stats.frees_system++;
        unlock();
        return;
    }
    block_header *h = (block_header *)((char *)p - HEADER_BYTES);
    size_t usable = h->block_bytes;
    int keep = 0;
    lock();
    cache.stats.live_bytes -= usable;
    if (h->size_class != UNCACHED_CLASS && cache.stats.cached_bytes + usable <= cache.limit_bytes) {
        POISON(p, usable);
        h->next = cache.free_lists[h->size_class];
        cache.free_lists[h->size_class] = h;
        cache.stats.cached_bytes += usable;
        cache.stats.cached_blocks++;
        cache.stats.frees_cached++;
        keep = 1;
    } else {
        cache.stats.frees_system++;
    }
    unlock();
    if (!keep)
        free(h);
}

void an_allocator_get_stats(an_allocator_stats *out)
{
    lock();
    initialise_locked();
    *out = cache.stats;
    unlock();
}

size_t an_allocator_release_cache(void)
{
    block_header *lists[CLASS_COUNT];
    lock();
    size_t released = cache.stats.cached_bytes;
    memcpy(lists, cache.free_lists, sizeof lists);
    memset(cache.free_lists, 0, sizeof cache.free_lists);
    cache.stats.cached_bytes = 0;
    cache.stats.cached_blocks = 0;
    unlock();
    /* Freed outside the lock: other threads keep allocating meanwhile. */
    for (int c = 0; c < CLASS_COUNT; c++) {
        block_header *h = lists[c];
        while (h) {
            block_header *next = h->next;
            UNPOISON((char *)h + HEADER_BYTES, h->block_bytes);
            free(h);
            h = next;
        }
    }
    return released;
}

void an_allocator_reset_counters(void)
{
    lock();
    cache.stats.hits = cache.stats.misses = 0;
    cache.stats.frees_cached = cache.stats.frees_system = 0;
    unlock();
}
