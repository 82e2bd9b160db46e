/* runtime.c — the global random generator and the thread count. */
#include "internal.h"

/* A counter-based generator (splitmix64 of seed and counter): any element's
   value depends only on (seed, counter), so parallel fills are reproducible
   whatever the number of threads. */
static uint64_t generator_seed = 0x5eed;
static uint64_t generator_offset = 0;

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

float an_random_uniform01(uint64_t seed, uint64_t counter)
{
    uint64_t bits = splitmix64(splitmix64(seed) ^ counter);
    return (float)(bits >> 40) * (1.0f / 16777216.0f); /* 24 random bits */
}

void an_random_reserve(uint64_t n, uint64_t *seed, uint64_t *offset)
{
    *seed = generator_seed;
    *offset = __atomic_fetch_add(&generator_offset, n, __ATOMIC_RELAXED);
}

void an_manual_seed(uint64_t seed)
{
    generator_seed = seed;
    __atomic_store_n(&generator_offset, 0, __ATOMIC_RELAXED);
}

uint64_t an_initial_seed(void) { return generator_seed; }

void an_get_rng_state(uint64_t *seed, uint64_t *offset)
{
    *seed = generator_seed;
    *offset = __atomic_load_n(&generator_offset, __ATOMIC_RELAXED);
}

void an_set_rng_state(uint64_t seed, uint64_t offset)
{
    generator_seed = seed;
    __atomic_store_n(&generator_offset, offset, __ATOMIC_RELAXED);
}

/* OpenMP's thread count is a per-thread setting; the library keeps one
   process-wide value so that every caller thread (a data loader thread, a
   second Python thread) computes with the count the user chose. */
static int requested_threads = 0; /* 0: OpenMP's default */

void an_set_num_threads(int n)
{
    if (n < 1)
        return;
    __atomic_store_n(&requested_threads, n, __ATOMIC_RELAXED);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

void an_apply_num_threads(void)
{
#ifdef _OPENMP
    int n = __atomic_load_n(&requested_threads, __ATOMIC_RELAXED);
    if (n > 0 && omp_get_max_threads() != n)
        omp_set_num_threads(n);
    /* One level of parallelism: kernels called inside a parallel region
       (a GEMM per image unit of a convolution) must run on their thread.
       With nesting enabled (some runtimes' default) each of them forked a
       full team: 16 threads became 256 and a ResNet-20 step ran 12x slower
       than on 4 threads. */
    if (omp_get_max_active_levels() != 1)
        omp_set_max_active_levels(1);
#endif
}

int an_get_num_threads(void)
{
#ifdef _OPENMP
    an_apply_num_threads();
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int an_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
