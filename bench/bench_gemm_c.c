/* GEMM timing harness: GFLOP/s of an_gemm_f32 next to the measured FMA peak
 * of one core for the selected ISA, and (time_kernel_alone) the ceiling that
 * the micro-kernel sets on one thread.
 *
 * Build from the repository root:
 *   gcc -std=c11 -O3 -fopenmp -Icsrc bench/bench_gemm_c.c csrc/kernels/gemm*.c csrc/cpu/cpu.c -lm -o /tmp/bench_gemm
 * Run: /tmp/bench_gemm [threads ...]      (default: 1 and, if available, 2)
 * APPEALNET_ISA=generic|avx2|avx512|neon picks the kernel (neon: on AArch64). */
#define _POSIX_C_SOURCE 199309L
#include "cpu/cpu.h"
#include "kernels/gemm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak: many independent FMA chains (more than latency x ports) so the FMA
 * units, not dependencies, limit the rate.  Returns GFLOP/s of one thread. */
#if defined(__x86_64__) || defined(_M_X64)
__attribute__((target("avx512f,fma"))) static double peak_avx512(long iterations)
{
    __m512 acc[16];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps((float)i);
    double start = now_seconds();
    for (long it = 0; it < iterations; ++it)
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    double seconds = now_seconds() - start;
    __m512 sum = acc[0];
    for (int i = 1; i < 16; ++i) sum = _mm512_add_ps(sum, acc[i]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return (double)iterations * 16 * 16 * 2 / seconds * 1e-9;
}

__attribute__((target("avx2,fma"))) static double peak_avx2(long iterations)
{
    __m256 acc[12];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps((float)i);
    double start = now_seconds();
    for (long it = 0; it < iterations; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    double seconds = now_seconds() - start;
    float out[8];
    __m256 sum = acc[0];
    for (int i = 1; i < 12; ++i) sum = _mm256_add_ps(sum, acc[i]);
    _mm256_storeu_ps(out, sum);
    volatile float sink = out[0];
    (void)sink;
    return (double)iterations * 12 * 8 * 2 / seconds * 1e-9;
}
#endif

#if defined(__aarch64__)
/* 24 independent 4-wide FMA chains, as many as the NEON kernel keeps */
static double peak_neon(long iterations)
{
    float32x4_t acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = vdupq_n_f32((float)i);
    const float32x4_t mul = vdupq_n_f32(0.999999f), add = vdupq_n_f32(1e-7f);
    double start = now_seconds();
    for (long it = 0; it < iterations; ++it)
        for (int i = 0; i < 24; ++i) acc[i] = vfmaq_f32(add, acc[i], mul);
    double seconds = now_seconds() - start;
    float32x4_t sum = acc[0];
    for (int i = 1; i < 24; ++i) sum = vaddq_f32(sum, acc[i]);
    volatile float sink = vgetq_lane_f32(sum, 0);
    (void)sink;
    return (double)iterations * 24 * 4 * 2 / seconds * 1e-9;
}
#endif

static double peak_generic(long iterations)
{
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = (float)i;
    double start = now_seconds();
    for (long it = 0; it < iterations; ++it)
        for (int i = 0; i < 32; ++i) acc[i] = acc[i] * 0.999999f + 1e-7f;
    double seconds = now_seconds() - start;
    volatile float sink = acc[0] + acc[31];
    (void)sink;
    return (double)iterations * 32 * 2 / seconds * 1e-9;
}

static double measure_peak(an_isa isa)
{
    double best = 0.0;
    for (int rep = 0; rep < 5; ++rep) {
        double g;
#if defined(__x86_64__) || defined(_M_X64)
        if (isa == AN_ISA_AVX512) g = peak_avx512(20000000);
        else if (isa == AN_ISA_AVX2) g = peak_avx2(20000000);
        else
#endif
#if defined(__aarch64__)
        if (isa == AN_ISA_NEON) g = peak_neon(20000000);
        else
#endif
            g = peak_generic(20000000);
        if (g > best) best = g;
    }
    (void)isa;
    return best;
}

typedef struct shape {
    int64_t M, N, K;
    int trans_a, trans_b;
    const char *note;
} shape;

static double time_gemm(const shape *s, int threads)
{
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    const int64_t M = s->M, N = s->N, K = s->K;
    float *A = aligned_alloc(64, (size_t)((M * K * 4 + 63) / 64 * 64));
    float *B = aligned_alloc(64, (size_t)((K * N * 4 + 63) / 64 * 64));
    float *C = aligned_alloc(64, (size_t)((M * N * 4 + 63) / 64 * 64));
    if (!A || !B || !C) return 0.0;
    for (int64_t i = 0; i < M * K; ++i) A[i] = (float)((i * 7) % 13) * 0.1f;
    for (int64_t i = 0; i < K * N; ++i) B[i] = (float)((i * 5) % 11) * 0.1f;
    for (int64_t i = 0; i < M * N; ++i) C[i] = 0.0f;
    const int64_t lda = s->trans_a ? M : K, ldb = s->trans_b ? K : N;
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    /* Repeat until ~0.3 s per measurement; keep the best of 5. */
    int reps = (int)(3e8 / flops) + 1;
    double best = 1e30;
    an_gemm_f32(s->trans_a, s->trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
    for (int trial = 0; trial < 5; ++trial) {
        double start = now_seconds();
        for (int r = 0; r < reps; ++r)
            an_gemm_f32(s->trans_a, s->trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
        double t = (now_seconds() - start) / reps;
        if (t < best) best = t;
    }
    free(A);
    free(B);
    free(C);
    return flops / best * 1e-9;
}

/* The micro-kernel alone on one thread: the product's tiles in the
 * driver's order and cache blocks (an_gemm_block_sizes), from A and B
 * packed once beforehand, so no packing and no threads.  The distance from
 * this to time_gemm on one thread is what the driver costs (packing, the
 * caches it disturbs, the fringe); from the peak to this, the micro-kernel.
 * Fringe tiles run whole into a scratch tile: only 2MNK flops are counted.
 * Printed for NN shapes that the blocked driver takes. */
static double time_kernel_alone(const shape *s)
{
    const int64_t M = s->M, N = s->N, K = s->K;
    const an_gemm_ukernel *uk = an_gemm_ukernel_for(M, K);
    const int mr = uk->mr, nr = uk->nr;
    int64_t KC, MC, NC;
    an_gemm_block_sizes(M, N, K, &KC, &MC, &NC);
    const int64_t m_tiles = (M + mr - 1) / mr, n_panels = (N + nr - 1) / nr;
    /* panel ip of A: K x mr floats (k-major), K block pc at + pc * mr; B likewise */
    float *A = aligned_alloc(64, (size_t)((m_tiles * mr * K * 4 + 63) / 64 * 64));
    float *B = aligned_alloc(64, (size_t)((n_panels * nr * K * 4 + 63) / 64 * 64));
    float *C = aligned_alloc(64, (size_t)((M * N * 4 + 63) / 64 * 64));
    float *tile = aligned_alloc(64, (size_t)AN_GEMM_MAX_MR * AN_GEMM_MAX_NR * 4);
    if (!A || !B || !C || !tile) {
        free(A);
        free(B);
        free(C);
        free(tile);
        return 0.0;
    }
    for (int64_t i = 0; i < m_tiles * mr * K; ++i) A[i] = (float)((i * 7) % 13) * 0.1f;
    for (int64_t i = 0; i < n_panels * nr * K; ++i) B[i] = (float)((i * 5) % 11) * 0.1f;
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    int reps = (int)(3e8 / flops) + 1;
    double best = 1e30;
    for (int trial = 0; trial < 6; ++trial) {
        double start = now_seconds();
        for (int r = 0; r < reps; ++r)
            for (int64_t jc = 0; jc < N; jc += NC)
                for (int64_t pc = 0; pc < K; pc += KC) {
                    const int64_t kc = K - pc < KC ? K - pc : KC;
                    for (int64_t ic = 0; ic < M; ic += MC)
                        for (int64_t j = jc; j < N && j < jc + NC; j += nr)
                            for (int64_t i = ic; i < M && i < ic + MC; i += mr) {
                                const int full = M - i >= mr && N - j >= nr;
                                uk->compute(kc, A + (i / mr) * K * mr + pc * mr, B + (j / nr) * K * nr + pc * nr,
                                            full ? C + i * N + j : tile, full ? N : nr, 1.0f,
                                            pc == 0 ? 0.0f : 1.0f);
                            }
                }
        double t = (now_seconds() - start) / reps;
        if (trial > 0 && t < best) best = t; /* the first trial warms the caches */
    }
    free(A);
    free(B);
    free(C);
    free(tile);
    return flops / best * 1e-9;
}

int main(int argc, char **argv)
{
    int thread_counts[8] = {1, 2};
    int n_thread_counts = 2;
#ifndef _OPENMP
    n_thread_counts = 1;
#endif
    if (argc > 1) {
        n_thread_counts = 0;
        for (int i = 1; i < argc && n_thread_counts < 8; ++i) thread_counts[n_thread_counts++] = atoi(argv[i]);
    }
    const an_cpu_info *cpu = an_cpu_info_get();
    const double peak = measure_peak(cpu->isa);
    printf("cpu: %s  isa: %s  kernel: %s\n", cpu->model, an_isa_name(cpu->isa), an_gemm_kernel_name());
    if (cpu->isa_warning[0]) printf("warning: %s\n", cpu->isa_warning);
    printf("measured FMA peak, 1 core: %.1f GFLOP/s\n\n", peak);

    static const shape shapes[] = {
        {256, 256, 256, 0, 0, "square"},    {512, 512, 512, 0, 0, "square"},
        {1024, 1024, 1024, 0, 0, "square"}, {2048, 2048, 2048, 0, 0, "square"},
        {1024, 1024, 1024, 0, 1, "A @ B^T"}, {1024, 1024, 1024, 1, 0, "A^T @ B"},
        {64, 1024, 576, 0, 0, "conv"},      {32, 4096, 27, 0, 0, "conv"},
        {1280, 16, 320, 0, 0, "conv"},      {10, 128, 1280, 0, 0, "conv"},
        {1280, 512, 320, 0, 0, "conv"},     {512, 512, 4608, 0, 0, "conv"},
    };
    printf("%-22s %-8s", "shape (M x N x K)", "note");
    for (int t = 0; t < n_thread_counts; ++t) printf("  %3d thr GF/s  %%peak", thread_counts[t]);
    printf("  kernel alone GF/s  %%peak\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        char name[64];
        snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)shapes[s].M, (long long)shapes[s].N,
                 (long long)shapes[s].K);
        printf("%-22s %-8s", name, shapes[s].note);
        for (int t = 0; t < n_thread_counts; ++t) {
            double g = time_gemm(&shapes[s], thread_counts[t]);
            printf("  %12.1f %5.0f%%", g, 100.0 * g / (peak * thread_counts[t]));
        }
        /* where the blocked driver runs (not the narrow and few-row paths) */
        const an_gemm_ukernel *uk = an_gemm_ukernel_for(shapes[s].M, shapes[s].K);
        if (!shapes[s].trans_a && !shapes[s].trans_b && shapes[s].N > 64 && shapes[s].M > 4 * uk->mr) {
            const double g = time_kernel_alone(&shapes[s]);
            printf("  %17.1f %5.0f%%", g, 100.0 * g / peak);
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
