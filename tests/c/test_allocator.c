/*
 * test_allocator.c — the caching allocator (csrc/core/allocator.c) on its
 * own: alignment and size classes, reuse of freed blocks, the cap, release,
 * and four threads allocating and freeing concurrently with every block's
 * contents checked (a block handed to two owners at once would be caught).
 *
 * Built and run by tests/test_c_library.py, also under ASan/UBSan.  ASan
 * cannot see a use-after-free of a block held in the cache (cached blocks
 * are poisoned under ASan, but set APPEALNET_NO_CACHE=1 for sanitizer runs
 * of the other programs to check them against the system allocator); this
 * program checks both modes' bookkeeping.
 */
#define _POSIX_C_SOURCE 200809L
#include "appealnet.h"
#include "core/allocator.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

static an_allocator_stats stats(void)
{
    an_allocator_stats s;
    an_allocator_get_stats(&s);
    return s;
}

static void test_alignment_and_sizes(void)
{
    /* tile edges of the size classes and odd sizes around them */
    static const size_t sizes[] = {0, 1, 4, 63, 64, 65, 127, 128, 4095, 4096, 4097, 5119, 5120,
                                   5121, 8191, 8192, 8193, 65536 + 4, 1000003, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = an_cache_alloc(sizes[i]);
        CHECK(p != NULL);
        if (!p)
            continue;
        CHECK(((uintptr_t)p & 63) == 0);
        memset(p, 0xAB, sizes[i]); /* the whole requested size is writable (ASan checks) */
        an_cache_free(p);
    }
    an_cache_free(NULL); /* a no-op */
}

static void test_reuse_and_release(void)
{
    an_allocator_stats s0 = stats();
    if (!s0.enabled) {
        printf("APPEALNET_NO_CACHE set: reuse checks skipped\n");
        return;
    }
    an_allocator_release_cache();
    void *a = an_cache_alloc(10000);
    an_allocator_stats s1 = stats();
    CHECK(s1.cached_bytes == 0);
    an_cache_free(a);
    an_allocator_stats s2 = stats();
    CHECK(s2.cached_blocks == 1);
    CHECK(s2.cached_bytes >= 10000 && s2.cached_bytes <= 10000 * 5 / 4 + 64);
    /* another size in the same class is served from the cache */
    void *b = an_cache_alloc(9000);
    an_allocator_stats s3 = stats();
    CHECK(s3.hits == s2.hits + 1 && s3.misses == s2.misses);
    CHECK(s3.cached_bytes == 0 && s3.cached_blocks == 0);
    an_cache_free(b);
    /* a size in the next class is not */
    void *c = an_cache_alloc(20000);
    CHECK(stats().misses == s3.misses + 1);
    an_cache_free(c);
    CHECK(stats().cached_blocks == 2);
    size_t released = an_allocator_release_cache();
    CHECK(released == s2.cached_bytes + 20480);
    CHECK(stats().cached_bytes == 0 && stats().cached_blocks == 0);

    /* an_workspace_bytes reports the cache, an_release_workspace empties it */
    int64_t shape[2] = {100, 100};
    an_tensor *t = an_zeros(2, shape);
    an_release(t);
    CHECK(an_workspace_bytes() >= 40000);
    an_release_workspace();
    CHECK(stats().cached_bytes == 0);
}

/* Each thread keeps a rotating set of live blocks, fills every block with a
 * pattern of its own and checks it before freeing: two owners of one block
 * would overwrite each other's pattern. */
#define THREADS 4
#define ROUNDS 4000
#define LIVE 16

typedef struct {
    int id;
    int errors;
} worker_args;

static void *worker(void *arg)
{
    worker_args *w = arg;
    uint32_t *blocks[LIVE] = {0};
    size_t counts[LIVE] = {0};
    uint32_t state = 12345u + (uint32_t)w->id * 7919u;
    for (int round = 0; round < ROUNDS; round++) {
        state = state * 1664525u + 1013904223u;
        int slot = (int)(state >> 28) % LIVE;
        if (blocks[slot]) {
            uint32_t tag = (uint32_t)w->id << 24 | (uint32_t)slot;
            for (size_t i = 0; i < counts[slot]; i++)
                if (blocks[slot][i] != (tag ^ (uint32_t)i)) {
                    w->errors++;
                    break;
                }
            an_cache_free(blocks[slot]);
            blocks[slot] = NULL;
        }
        counts[slot] = 1 + (state >> 8) % 6000; /* spans many classes */
        blocks[slot] = an_cache_alloc(counts[slot] * sizeof(uint32_t));
        if (!blocks[slot]) {
            w->errors++;
            continue;
        }
        if (((uintptr_t)blocks[slot] & 63) != 0)
            w->errors++;
        uint32_t tag = (uint32_t)w->id << 24 | (uint32_t)slot;
        for (size_t i = 0; i < counts[slot]; i++)
            blocks[slot][i] = tag ^ (uint32_t)i;
    }
    for (int s = 0; s < LIVE; s++)
        an_cache_free(blocks[s]);
    return NULL;
}

static void test_threads(void)
{
    an_allocator_stats before = stats();
    pthread_t threads[THREADS];
    worker_args args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].id = i + 1;
        args[i].errors = 0;
        CHECK(pthread_create(&threads[i], NULL, worker, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(args[i].errors == 0);
    }
    an_allocator_stats after = stats();
    CHECK(after.live_bytes == before.live_bytes); /* every block came back */
    uint64_t allocs = (after.hits - before.hits) + (after.misses - before.misses);
    uint64_t frees = (after.frees_cached - before.frees_cached) + (after.frees_system - before.frees_system);
    CHECK(allocs == (uint64_t)THREADS * ROUNDS);
    CHECK(frees == allocs);
    if (after.enabled)
        CHECK(after.hits - before.hits > allocs / 2); /* mostly served from the cache */
    an_allocator_release_cache();
}

int main(void)
{
    test_alignment_and_sizes();
    test_reuse_and_release();
    test_threads();
    an_release_workspace();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("allocator: all checks passed\n");
    return 0;
}
