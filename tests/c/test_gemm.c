/* Standalone correctness test for an_gemm_f32.
 *
 * Build and run from the repository root:
 *   gcc -std=c11 -O2 -fopenmp -Icsrc tests/c/test_gemm.c csrc/kernels/gemm*.c csrc/cpu/cpu.c -lm -o /tmp/test_gemm && /tmp/test_gemm
 * Sanitizers (must report nothing):
 *   gcc -std=c11 -O1 -g -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
 *       -Icsrc tests/c/test_gemm.c csrc/kernels/gemm*.c csrc/cpu/cpu.c -lm -o /tmp/test_gemm_asan && /tmp/test_gemm_asan
 * Options: -q (only the summary), -v (every case).
 *
 * Each case is compared with a double-accumulating reference, for every ISA
 * level this machine supports and with 1 and 2 threads; the thread counts
 * must agree bit for bit, and C outside the M x N window (the ldc padding)
 * must be left untouched. */
#include "cpu/cpu.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int g_verbose = 1;
static long g_cases, g_failures;

/* Deterministic xorshift so failures reproduce. */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float random_unit(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* p[0 .. n) = the next n values of random_unit(). */
static void fill_random(float *p, int64_t n)
{
    for (int64_t i = 0; i < n; ++i) p[i] = random_unit();
}

/* Sentinel for padding that must never be written. */
static const float k_guard = 12345.0f;

typedef struct test_case {
    int trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    int64_t pad; /* extra elements added to lda/ldb/ldc */
} test_case;

static void set_threads(int threads)
{
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

static const char *label(const test_case *t, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld",
             t->trans_a ? "T" : "N", t->trans_b ? "T" : "N", (long long)t->M, (long long)t->N,
             (long long)t->K, (double)t->alpha, (double)t->beta, (long long)t->pad);
    return buf;
}

static void fail(const test_case *t, const char *isa, int threads, const char *what)
{
    char buf[160];
    ++g_failures;
    if (g_failures <= 30)
        printf("FAIL [%s, %d thread(s)] %s: %s\n", isa, threads, label(t, buf, sizeof buf), what);
}

/* Runs one case for the current ISA with 1 and 2 threads. */
static void run_case(const test_case *t, const char *isa)
{
    const int64_t M = t->M, N = t->N, K = t->K;
    /* Stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K]. */
    const int64_t a_rows = t->trans_a ? K : M, a_cols = t->trans_a ? M : K;
    const int64_t b_rows = t->trans_b ? N : K, b_cols = t->trans_b ? K : N;
    const int64_t lda = a_cols + t->pad, ldb = b_cols + t->pad, ldc = N + t->pad;
    /* +1 so zero-sized operands still give valid, distinct pointers. */
    float *A = malloc(sizeof(float) * (size_t)(a_rows * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(b_rows * ldb + 1));
    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *C_first = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    if (!A || !B || !C0 || !C || !C_first) {
        printf("test allocation failed\n");
        exit(2);
    }
    fill_random(A, a_rows * lda + 1);
    fill_random(B, b_rows * ldb + 1);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < ldc; ++j)
            C0[i * ldc + j] = j >= N ? k_guard : (t->beta == 0.0f ? NAN : random_unit());

    ++g_cases;
    for (int threads = 1; threads <= 2; ++threads) {
        set_threads(threads);
        memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
        int rc = an_gemm_f32(t->trans_a, t->trans_b, M, N, K, t->alpha, A, lda, B, ldb, t->beta, C, ldc);
        if (rc != 0) {
            fail(t, isa, threads, "returned non-zero");
            continue;
        }
        double worst = 0.0;
        int bad = 0;
        for (int64_t i = 0; i < M && !bad; ++i) {
            for (int64_t j = 0; j < ldc; ++j) {
                const float got = C[i * ldc + j];
                if (j >= N) {
                    if (got != k_guard) {
                        fail(t, isa, threads, "wrote into ldc padding");
                        bad = 1;
                        break;
                    }
                    continue;
                }
                double sum = 0.0, magnitude = 0.0;
                for (int64_t k = 0; k < K; ++k) {
                    const double a = t->trans_a ? A[k * lda + i] : A[i * lda + k];
                    const double b = t->trans_b ? B[j * ldb + k] : B[k * ldb + j];
                    sum += a * b;
                    magnitude += fabs(a * b);
                }
                double ref = (double)t->alpha * sum;
                magnitude *= fabs((double)t->alpha);
                if (t->beta != 0.0f) {
                    ref += (double)t->beta * C0[i * ldc + j];
                    magnitude += fabs((double)t->beta * C0[i * ldc + j]);
                }
                const double err = fabs((double)got - ref);
                const double tol = 1e-5 * sqrt((double)(K + 1)) * magnitude + 1e-30;
                if (!(err <= tol)) { /* also catches NaN */
                    char what[128];
                    snprintf(what, sizeof what, "C[%lld,%lld]=%.9g expected %.9g",
                             (long long)i, (long long)j, (double)got, ref);
                    fail(t, isa, threads, what);
                    bad = 1;
                    break;
                }
                if (magnitude > 0 && err / magnitude > worst) worst = err / magnitude;
            }
        }
        if (threads == 1) {
            memcpy(C_first, C, sizeof(float) * (size_t)(M * ldc));
        } else if (memcmp(C_first, C, sizeof(float) * (size_t)(M * ldc)) != 0) {
            fail(t, isa, threads, "differs bitwise from the 1-thread result");
        }
        if (g_verbose > 1) {
            char buf[160];
            printf("ok [%s, %d] %s worst rel err %.2e\n", isa, threads, label(t, buf, sizeof buf), worst);
        }
    }
    free(A);
    free(B);
    free(C0);
    free(C);
    free(C_first);
}

static void run_all_transposes(int64_t M, int64_t N, int64_t K, float alpha, float beta, int64_t pad,
                               const char *isa)
{
    for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
            test_case t = {ta, tb, M, N, K, alpha, beta, pad};
            run_case(&t, isa);
        }
}

/* alpha == 0 must not read A or B (they hold NaN here) and scales C. */
static void test_alpha_zero(const char *isa)
{
    float A[6], B[6], C[4] = {1, 2, 3, 4};
    for (int i = 0; i < 6; ++i) A[i] = B[i] = NAN;
    ++g_cases;
    an_gemm_f32(0, 0, 2, 2, 3, 0.0f, A, 3, B, 2, 0.5f, C, 2);
    if (C[0] != 0.5f || C[1] != 1.0f || C[2] != 1.5f || C[3] != 2.0f) {
        test_case t = {0, 0, 2, 2, 3, 0.0f, 0.5f, 0};
        fail(&t, isa, 1, "alpha == 0 did not give beta * C");
    }
}

static void test_isa(const char *isa)
{
    static const int64_t ms[] = {1, 2, 5, 6, 7, 11, 12, 13, 14, 15, 25, 29};
    static const int64_t ns[] = {1, 7, 8, 9, 16, 17, 31, 32, 33, 65};
    static const int64_t ks[] = {0, 1, 7, 37, 300};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    int variant = 0;

    test_alpha_zero(isa);
    /* Empty outputs. */
    run_all_transposes(0, 5, 3, 1.0f, 0.0f, 0, isa);
    run_all_transposes(5, 0, 3, 1.0f, 0.0f, 0, isa);
    run_all_transposes(0, 0, 0, 1.0f, 1.0f, 0, isa);

    /* Tile edges of every kernel (MR 6/8/12/14, NR 8/16/32), all alpha/beta/pad mixes. */
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; ++im)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; ++in)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ++ik) {
                const float beta = betas[variant % 3];
                const float alpha = (variant / 3) % 2 ? -0.75f : 1.0f;
                const int64_t pad = (variant / 2) % 2 ? 3 : 0;
                ++variant;
                run_all_transposes(ms[im], ns[in], ks[ik], alpha, beta, pad, isa);
            }

    /* Odd sizes, multiples of tiles, several K/M/N blocks, conv-like shapes. */
    static const int64_t shapes[][3] = {
        {37, 53, 71},   {42, 96, 64},   {28, 64, 512},  {97, 131, 257}, {300, 257, 513},
        {64, 1024, 576}, {32, 4096, 27}, {1280, 16, 320}, {10, 128, 1280}, {1500, 40, 400},
        {20, 4200, 30}, {1, 1000, 700}, {700, 1, 1000},  {1, 1, 2000},   {3, 2, 1},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s)
        for (int b = 0; b < 3; ++b) {
            const float alpha = b == 2 ? 1.5f : 1.0f;
            run_all_transposes(shapes[s][0], shapes[s][1], shapes[s][2], alpha, betas[b],
                               (s + (size_t)b) % 2 ? 5 : 0, isa);
        }
}

/* AVX-512 picks its tile height (8 or 14 rows) from M: check the choice, and
 * run M around both tile heights and the conv shapes with the choice by M and
 * with each kernel forced. */
static void test_avx512_row_kernels(const char *isa)
{
    static const int64_t ms[] = {7, 8, 9, 15, 16, 17, 24, 32, 48, 64};
    static const int64_t ns[] = {8, 31, 33, 65};
    static const int64_t ks[] = {1, 37, 300};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    static const int modes[] = {0, 8, 14};
    /* 8 rows where they waste fewer rows, by a margin over K = 64, at
       least as few up to K = 64 */
    static const struct { int64_t M, K; const char *name; } expected[] = {
        {8, 300, "avx512_8x32"},   {16, 300, "avx512_8x32"},  {32, 300, "avx512_8x32"},
        {64, 300, "avx512_8x32"},  {14, 300, "avx512_14x32"}, {28, 300, "avx512_14x32"},
        {13, 300, "avx512_14x32"}, {96, 300, "avx512_14x32"}, {96, 65, "avx512_14x32"},
        {96, 64, "avx512_8x32"},   {144, 24, "avx512_8x32"},  {384, 64, "avx512_8x32"},
        {28, 16, "avx512_14x32"},  {14, 1, "avx512_14x32"},   {112, 16, "avx512_8x32"},
    };
    for (size_t e = 0; e < sizeof expected / sizeof expected[0]; ++e) {
        ++g_cases;
        if (strcmp(an_gemm_kernel_name_for(expected[e].M, expected[e].K), expected[e].name) != 0) {
            test_case t = {0, 0, expected[e].M, 64, expected[e].K, 1.0f, 0.0f, 0};
            fail(&t, isa, 1, "unexpected kernel chosen for this M");
        }
        /* the accessors of bench_gemm_c.c's kernel-alone ceiling agree with
           the names and K blocks the driver reports */
        ++g_cases;
        const an_gemm_ukernel *uk = an_gemm_ukernel_for(expected[e].M, expected[e].K);
        int64_t kc, mc, nc;
        an_gemm_block_sizes(expected[e].M, 512, expected[e].K, &kc, &mc, &nc);
        if (strcmp(uk->name, expected[e].name) != 0 || kc != an_gemm_kc(expected[e].M, 512, expected[e].K) ||
            mc % uk->mr != 0 || nc % uk->nr != 0 || mc < uk->mr || nc < uk->nr) {
            test_case t = {0, 0, expected[e].M, 512, expected[e].K, 1.0f, 0.0f, 0};
            fail(&t, isa, 1, "an_gemm_ukernel_for / an_gemm_block_sizes disagree with the driver");
        }
    }
    int variant = 0;
    for (size_t mode = 0; mode < sizeof modes / sizeof modes[0]; ++mode) {
        an_gemm_force_avx512_mr(modes[mode]);
        for (size_t im = 0; im < sizeof ms / sizeof ms[0]; ++im)
            for (size_t in = 0; in < sizeof ns / sizeof ns[0]; ++in)
                for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ++ik) {
                    const float beta = betas[variant % 3];
                    const float alpha = (variant / 3) % 2 ? -0.75f : 1.0f;
                    const int64_t pad = (variant / 2) % 2 ? 3 : 0;
                    ++variant;
                    run_all_transposes(ms[im], ns[in], ks[ik], alpha, beta, pad, isa);
                }
        /* The GEMMs of 3x3 convolutions with 16, 32 and 64 channels. */
        static const int64_t conv[][3] = {{16, 1024, 144}, {32, 256, 288}, {64, 64, 576}};
        for (size_t s = 0; s < sizeof conv / sizeof conv[0]; ++s)
            for (int b = 0; b < 3; ++b)
                run_all_transposes(conv[s][0], conv[s][1], conv[s][2], b == 2 ? 1.5f : 1.0f,
                                   betas[b], (s + (size_t)b) % 2 ? 5 : 0, isa);
    }
    an_gemm_force_avx512_mr(0);
}

/* B given as rows of one buffer (an_gemm_f32_rows_b) and B packed by a
 * callback (an_gemm_f32_pack_b): both must equal an_gemm_f32 on the
 * materialised B bit for bit (same packed values, same sums), 1 and 2
 * threads, with the read slack the rows variant documents. */
typedef struct {
    const float *b;
    const int64_t *offsets;
} rows_source;

static void pack_rows_panel(const void *source, int64_t k0, int64_t kc, int64_t j0, int64_t cols,
                            int width, float *panel)
{
    const rows_source *src = source;
    for (int64_t k = 0; k < kc; ++k)
        for (int j = 0; j < width; ++j)
            panel[k * width + j] = j < cols ? src->b[src->offsets[k0 + k] + j0 + j] : 0.0f;
}

static void test_b_sources(const char *isa)
{
    static const int64_t shapes[][3] = {{2, 2, 1}, {7, 33, 5}, {16, 1086, 144}, {15, 70, 300},
                                        {29, 65, 401}, {64, 286, 576}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        /* row k of B starts at offsets[k] of one buffer: overlapping runs
           (like the taps of a padded image), in no particular order */
        const int64_t span = N + 3 * K + AN_GEMM_MAX_NR;
        float *buffer = malloc(sizeof(float) * (size_t)span);
        int64_t *offsets = malloc(sizeof(int64_t) * (size_t)K);
        float *A = malloc(sizeof(float) * (size_t)(M * K));
        float *B = malloc(sizeof(float) * (size_t)(K * N));
        float *expect = malloc(sizeof(float) * (size_t)(M * N));
        float *got = malloc(sizeof(float) * (size_t)(M * N));
        if (!buffer || !offsets || !A || !B || !expect || !got) {
            printf("FAIL: out of memory in test_b_sources\n");
            ++g_failures;
            free(buffer), free(offsets), free(A), free(B), free(expect), free(got);
            return;
        }
        fill_random(buffer, span);
        for (int64_t k = 0; k < K; ++k) offsets[k] = (k * 7919) % (3 * K + 1);
        fill_random(A, M * K);
        for (int64_t k = 0; k < K; ++k)
            for (int64_t j = 0; j < N; ++j) B[k * N + j] = buffer[offsets[k] + j];
        const float beta = s % 2 ? 0.5f : 0.0f;
        rows_source src = {buffer, offsets};
        for (int threads = 1; threads <= 2; ++threads) {
            set_threads(threads);
            for (int variant = 0; variant < 2; ++variant) {
                for (int64_t i = 0; i < M * N; ++i) expect[i] = got[i] = (float)(i % 13) - 6.0f;
                an_gemm_f32(0, 0, M, N, K, 1.25f, A, K, B, N, beta, expect, N);
                int rc = variant == 0
                             ? an_gemm_f32_rows_b(0, M, N, K, 1.25f, A, K, buffer, offsets, beta, got, N)
                             : an_gemm_f32_pack_b(0, M, N, K, 1.25f, A, K, pack_rows_panel, &src, beta,
                                                  got, N);
                ++g_cases;
                test_case t = {0, 0, M, N, K, 1.25f, beta, 0};
                if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * N)) != 0)
                    fail(&t, isa, threads,
                         variant == 0 ? "rows_b differs from an_gemm_f32" : "pack_b differs from an_gemm_f32");
            }
        }
        set_threads(1);
        free(buffer), free(offsets), free(A), free(B), free(expect), free(got);
    }
}

/* Column blocks whose panels split otherwise between two threads (N past
 * NC, the last block narrower) with two K blocks each and B split over N
 * alone: a thread two blocks ahead used to pack slots of the shared buffer
 * that the other was still reading (about one call in 400 wrong).  Many
 * repeats on 2 threads, each equal to the 1-thread product. */
static void test_column_blocks_two_threads(const char *isa)
{
    const int64_t M = 4, N = 4680, K = 432;
    float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)K);
    float *expect = malloc(sizeof(float) * (size_t)(M * N)), *got = malloc(sizeof(float) * (size_t)(M * N));
    if (!A || !B || !offsets || !expect || !got) {
        printf("FAIL: out of memory in test_column_blocks_two_threads\n");
        ++g_failures;
        free(A), free(B), free(offsets), free(expect), free(got);
        return;
    }
    fill_random(A, M * K);
    fill_random(B, K * N);
    for (int64_t k = 0; k < K; ++k) offsets[k] = k * N;
    rows_source src = {B, offsets};
    set_threads(1);
    memset(expect, 0, sizeof(float) * (size_t)(M * N));
    int rc = an_gemm_f32_pack_b(0, M, N, K, 1.0f, A, K, pack_rows_panel, &src, 1.0f, expect, N);
    set_threads(2);
    int wrong = 0;
    for (int repeat = 0; repeat < 1000 && !rc && !wrong; ++repeat) {
        memset(got, 0, sizeof(float) * (size_t)(M * N));
        rc = an_gemm_f32_pack_b(0, M, N, K, 1.0f, A, K, pack_rows_panel, &src, 1.0f, got, N);
        wrong = memcmp(expect, got, sizeof(float) * (size_t)(M * N)) != 0;
    }
    ++g_cases;
    if (rc || wrong) {
        test_case t = {0, 0, M, N, K, 1.0f, 1.0f, 0};
        fail(&t, isa, 2, "two threads over several column blocks differ from one");
    }
    set_threads(1);
    free(A), free(B), free(offsets), free(expect), free(got);
}

/* Narrow products (alpha 1, row-major A and B, N up to 64 or 160) skip packing on
 * AVX-512 and AVX2: they must equal the packed path (forced through pack_b)
 * bit for bit, for every row fringe (14-row blocks, then 8, 4, 2, 1; 6, 4,
 * 2, 1 on AVX2), column fringe (masks on 16- and 8-column vectors, chunks
 * of 32 and 16 columns) and K spanning
 * several KC blocks, with padded strides whose guard columns must not be
 * written, on 1 and 2 threads. */
static void test_narrow(const char *isa)
{
    /* AVX-512: 8-row blocks below 224 rows; AVX2: blocks of 6, then 4, 2, 1 */
    static const int64_t ms[] = {2, 3, 5, 7, 13, 14, 15, 23, 29, 31, 64, 230};
    /* AVX2 chunks of 16 columns: a masked or whole last vector; its narrow
       path takes up to 160 columns, AVX-512's up to 64 */
    static const int64_t ns[] = {2, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 127, 160, 161};
    static const int64_t ks[] = {1, 5, 383, 900};
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; ++mi)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
                const int64_t M = ms[mi], N = ns[ni], K = ks[ki];
                const int64_t lda = K + 3, ldb = N + 5, ldc = N + 2;
                float *A = malloc(sizeof(float) * (size_t)(M * lda));
                float *B = malloc(sizeof(float) * (size_t)(K * ldb));
                float *expect = malloc(sizeof(float) * (size_t)(M * ldc));
                float *got = malloc(sizeof(float) * (size_t)(M * ldc));
                float *initial = malloc(sizeof(float) * (size_t)(M * ldc));
                int64_t *offsets = malloc(sizeof(int64_t) * (size_t)K);
                if (!A || !B || !expect || !got || !initial || !offsets) {
                    printf("FAIL: out of memory in test_narrow\n");
                    ++g_failures;
                    free(A), free(B), free(expect), free(got), free(initial), free(offsets);
                    return;
                }
                fill_random(A, M * lda);
                fill_random(B, K * ldb);
                for (int64_t k = 0; k < K; ++k) offsets[k] = k * ldb; /* B's rows, for the packer */
                rows_source src = {B, offsets};
                const float beta = (mi + ni + ki) % 2 ? 0.3f : 0.0f; /* not a power of two: beta * c rounds */
                for (int threads = 1; threads <= 2; ++threads) {
                    set_threads(threads);
                    /* random C: beta * c must round (a multiple of 0.5 would not) */
                    for (int64_t i = 0; i < M * ldc; ++i) expect[i] = got[i] = initial[i] = random_unit();
                    int rc = an_gemm_f32(0, 0, M, N, K, 1.0f, A, lda, B, ldb, beta, got, ldc);
                    rc |= an_gemm_f32_pack_b(0, M, N, K, 1.0f, A, lda, pack_rows_panel, &src, beta,
                                             expect, ldc);
                    ++g_cases;
                    test_case t = {0, 0, M, N, K, 1.0f, beta, ldc - N};
                    if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * ldc)) != 0)
                        fail(&t, isa, threads, "narrow product differs from the packed path");
                    /* and from float64 */
                    for (int64_t i = 0; i < M && rc == 0; ++i)
                        for (int64_t j = 0; j < N; ++j) {
                            double ref = beta * (double)initial[i * ldc + j];
                            double mag = fabs(ref);
                            for (int64_t k = 0; k < K; ++k) {
                                ref += (double)A[i * lda + k] * B[k * ldb + j];
                                mag += fabs((double)A[i * lda + k] * B[k * ldb + j]);
                            }
                            if (fabs(got[i * ldc + j] - ref) > 1e-5 * (mag + 1.0)) {
                                fail(&t, isa, threads, "narrow product differs from float64");
                                i = M;
                                break;
                            }
                        }
                }
                set_threads(1);
                free(A), free(B), free(expect), free(got), free(initial), free(offsets);
            }
}

/* an_gemm_f32_epilogue finishes each tile with the bias and the activation:
 * it must equal an_gemm_f32 followed by that pass, bit for bit, on the
 * narrow path (N <= 64), the blocked one (K over several KC blocks, fringes),
 * and the degenerate shapes (M or N of 1, K of 0), with 1 and 2 threads. */
static void test_bias_act(const char *isa)
{
    static const int64_t shapes[][3] = {{2, 2, 1}, {29, 16, 40}, {15, 64, 300}, {70, 100, 700},
                                        {1, 37, 20}, {33, 1, 20}, {9, 18, 0}, {64, 512, 576},
                                        {144, 1024, 24}, {16, 512, 32}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], ldc = N + 3;
        float *A = malloc(sizeof(float) * (size_t)(M * (K + 1)));
        float *B = malloc(sizeof(float) * (size_t)((K + 1) * N));
        float *bias = malloc(sizeof(float) * (size_t)M);
        float *expect = malloc(sizeof(float) * (size_t)(M * ldc));
        float *got = malloc(sizeof(float) * (size_t)(M * ldc));
        const int64_t ldr = N + 5;
        float *res = malloc(sizeof(float) * (size_t)(M * ldr));
        if (!A || !B || !bias || !expect || !got || !res) {
            printf("FAIL: out of memory in test_bias_act\n");
            ++g_failures;
            free(A), free(B), free(bias), free(expect), free(got), free(res);
            return;
        }
        for (int64_t i = 0; i < M * ldr; ++i) res[i] = 2.0f * random_unit();
        fill_random(A, M * K);
        fill_random(B, K * N);
        for (int64_t i = 0; i < M; ++i) bias[i] = 3.0f * random_unit();
        /* a NaN in row 1 must come out NaN through relu/relu6 (the register
         * epilogue compares, it does not take a max) */
        if (M > 1 && K > 0) A[K] = NAN;
        for (int act = AN_GEMM_ACT_NONE; act <= AN_GEMM_ACT_RELU6; ++act)
            for (int variant = 0; variant < 4; ++variant) /* bit 0: a bias, bit 1: a residual */
                for (int threads = 1; threads <= 2; ++threads) {
                    const int with_bias = variant & 1, with_res = variant >> 1;
                    set_threads(threads);
                    for (int64_t i = 0; i < M * ldc; ++i) expect[i] = got[i] = k_guard;
                    int rc = an_gemm_f32(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, expect, ldc);
                    for (int64_t i = 0; i < M; ++i)
                        for (int64_t j = 0; j < N; ++j) {
                            float v = expect[i * ldc + j];
                            if (with_bias) v += bias[i];
                            if (with_res) v += res[i * ldr + j];
                            if (act != AN_GEMM_ACT_NONE) v = v <= 0.0f ? 0.0f : v;
                            if (act == AN_GEMM_ACT_RELU6) v = v >= 6.0f ? 6.0f : v;
                            expect[i * ldc + j] = v;
                        }
                    rc |= an_gemm_f32_epilogue(M, N, K, A, K, B, N, got, ldc, with_bias ? bias : NULL,
                                               with_res ? res : NULL, ldr, act);
                    ++g_cases;
                    test_case t = {0, 0, M, N, K, 1.0f, 0.0f, ldc - N};
                    if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * ldc)) != 0)
                        fail(&t, isa, threads, "bias/activation epilogue differs from a separate pass");
                }
        set_threads(1);
        free(A), free(B), free(bias), free(expect), free(got), free(res);
    }
}

/* A packed once (an_gemm_pack_a) and read by an_gemm_f32_epilogue_prepacked:
 * the layout the header describes (zero rows past M), and the same bits as
 * an_gemm_f32_epilogue packing A itself, on the narrow path (N <= 64) and
 * the blocked one (one and several K blocks, fringe panels), 1 and 2
 * threads, with and without bias, residual and activation. */
static void test_prepacked_a(const char *isa)
{
    static const int64_t ms[] = {1, 2, 7, 8, 9, 13, 14, 15, 29, 64, 223, 224, 225};
    static const int64_t ns[] = {16, 64, 65, 200};
    static const int64_t ks[] = {1, 24, 900};
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; ++mi)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
                const int64_t M = ms[mi], N = ns[ni], K = ks[ki];
                const int64_t lda = K + 3, ldc = N + 2, ldr = N + 1;
                const int64_t rows = an_gemm_packed_a_rows(M, K);
                const int64_t packed_floats = an_gemm_packed_a_floats(M, K);
                float *A = malloc(sizeof(float) * (size_t)(M * lda));
                float *B = malloc(sizeof(float) * (size_t)(K * N));
                float *packed = malloc(sizeof(float) * (size_t)packed_floats);
                float *bias = malloc(sizeof(float) * (size_t)M);
                float *res = malloc(sizeof(float) * (size_t)(M * ldr));
                float *expect = malloc(sizeof(float) * (size_t)(M * ldc));
                float *got = malloc(sizeof(float) * (size_t)(M * ldc));
                if (!A || !B || !packed || !bias || !res || !expect || !got) {
                    printf("FAIL: out of memory in test_prepacked_a\n");
                    ++g_failures;
                    free(A), free(B), free(packed), free(bias), free(res), free(expect), free(got);
                    return;
                }
                fill_random(A, M * lda);
                fill_random(B, K * N);
                fill_random(bias, M);
                fill_random(res, M * ldr);
                for (int64_t i = 0; i < packed_floats; ++i) packed[i] = k_guard;
                an_gemm_pack_a(M, K, A, lda, packed);
                test_case t = {0, 0, M, N, K, 1.0f, 0.0f, ldc - N};
                ++g_cases;
                if (packed_floats != (M + rows - 1) / rows * rows * K) {
                    fail(&t, isa, 1, "an_gemm_packed_a_floats is not ceil(M / R) * R * K");
                } else {
                    for (int64_t i = 0; i < (M + rows - 1) / rows * rows; ++i)
                        for (int64_t k = 0; k < K; ++k) {
                            const float want = i < M ? A[i * lda + k] : 0.0f;
                            if (packed[((i / rows) * K + k) * rows + i % rows] != want) {
                                fail(&t, isa, 1, "packed A is not laid out as the header says");
                                i = M + rows;
                                break;
                            }
                        }
                }
                for (int variant = 0; variant < 2; ++variant)
                    for (int threads = 1; threads <= 2; ++threads) {
                        set_threads(threads);
                        const float *vb = variant ? bias : NULL, *vr = variant ? res : NULL;
                        const int act = variant ? AN_GEMM_ACT_RELU6 : AN_GEMM_ACT_NONE;
                        for (int64_t i = 0; i < M * ldc; ++i) expect[i] = got[i] = k_guard;
                        int rc = an_gemm_f32_epilogue(M, N, K, A, lda, B, N, expect, ldc, vb, vr, ldr,
                                                      act);
                        rc |= an_gemm_f32_epilogue_prepacked(M, N, K, A, lda, packed, B, N, got, ldc,
                                                             vb, vr, ldr, act);
                        ++g_cases;
                        if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * ldc)) != 0)
                            fail(&t, isa, threads, "pre-packed A differs from A packed per call");
                    }
                set_threads(1);
                free(A), free(B), free(packed), free(bias), free(res), free(expect), free(got);
            }
}

/* A tile's lanes never depend on where the tile sits, so the rows of a
 * product whose last row tile is short (the fringe: 16 rows are 6 + 6 + 4
 * on AVX2) must equal, bit for bit, the same rows computed as part of a
 * product that fills that tile (rows past M given other values), for beta 0
 * and not, with the epilogue (bias, residual, activation; beta 1 on the
 * blocks after the first when K = 900 takes several), one and several K
 * blocks, the narrow and the blocked path, A packed per call and
 * pre-packed. */
static void test_fringe_rows(const char *isa)
{
    static const int64_t ms[] = {2, 4, 5, 7, 10, 11, 13, 16, 17, 28, 29}; /* M = 1: the gemv path */
    static const int64_t ns[] = {33, 200};
    static const int64_t ks[] = {1, 24, 900};
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; ++mi)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ++ni)
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ++ki) {
                const int64_t M = ms[mi], N = ns[ni], K = ks[ki];
                const int64_t mr = an_gemm_packed_a_rows(M, K), full = (M + mr - 1) / mr * mr;
                if (an_gemm_packed_a_rows(full, K) != mr) continue; /* another kernel for the full rows */
                const int64_t ldc = N + 3, ldr = N + 1;
                float *A = malloc(sizeof(float) * (size_t)(full * K));
                float *B = malloc(sizeof(float) * (size_t)(K * N));
                float *packed = malloc(sizeof(float) * (size_t)an_gemm_packed_a_floats(full, K));
                float *bias = malloc(sizeof(float) * (size_t)full);
                float *res = malloc(sizeof(float) * (size_t)(full * ldr));
                float *start = malloc(sizeof(float) * (size_t)(full * ldc));
                float *expect = malloc(sizeof(float) * (size_t)(full * ldc));
                float *got = malloc(sizeof(float) * (size_t)(full * ldc));
                if (!A || !B || !packed || !bias || !res || !start || !expect || !got) {
                    printf("FAIL: out of memory in test_fringe_rows\n");
                    ++g_failures;
                    free(A), free(B), free(packed), free(bias), free(res), free(start);
                    free(expect), free(got);
                    return;
                }
                fill_random(A, full * K);
                fill_random(B, K * N);
                fill_random(bias, full);
                fill_random(res, full * ldr);
                fill_random(start, full * ldc);
                test_case t = {0, 0, M, N, K, 1.0f, 0.0f, ldc - N};
                for (int variant = 0; variant < 3; ++variant) { /* beta 0, beta 0.5, epilogue */
                    const float beta = variant == 1 ? 0.5f : 0.0f;
                    const int epilogue = variant == 2;
                    for (int64_t i = 0; i < full * ldc; ++i) expect[i] = got[i] = start[i];
                    int rc;
                    if (epilogue) { /* the epilogue entry points take beta 0 */
                        rc = an_gemm_f32_epilogue(full, N, K, A, K, B, N, expect, ldc, bias, res, ldr,
                                                  AN_GEMM_ACT_RELU);
                        rc |= an_gemm_f32_epilogue(M, N, K, A, K, B, N, got, ldc, bias, res, ldr,
                                                   AN_GEMM_ACT_RELU);
                    } else {
                        rc = an_gemm_f32(0, 0, full, N, K, 1.0f, A, K, B, N, beta, expect, ldc);
                        rc |= an_gemm_f32(0, 0, M, N, K, 1.0f, A, K, B, N, beta, got, ldc);
                    }
                    ++g_cases;
                    if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * ldc)) != 0)
                        fail(&t, isa, 1, epilogue ? "short last row tile differs from a full one (epilogue)"
                                                  : "short last row tile differs from a full one");
                    if (rc == 0 && memcmp(start + M * ldc, got + M * ldc,
                                          sizeof(float) * (size_t)((full - M) * ldc)) != 0)
                        fail(&t, isa, 1, "a short last row tile wrote past row M");
                }
                /* pre-packed: the full product's packing holds the short one's rows */
                an_gemm_pack_a(full, K, A, K, packed);
                for (int64_t i = 0; i < full * ldc; ++i) expect[i] = got[i] = start[i];
                int rc = an_gemm_f32_epilogue_prepacked(full, N, K, A, K, packed, B, N, expect, ldc,
                                                        bias, NULL, 0, AN_GEMM_ACT_RELU6);
                rc |= an_gemm_f32_epilogue_prepacked(M, N, K, A, K, packed, B, N, got, ldc, bias, NULL,
                                                     0, AN_GEMM_ACT_RELU6);
                ++g_cases;
                if (rc != 0 || memcmp(expect, got, sizeof(float) * (size_t)(M * ldc)) != 0)
                    fail(&t, isa, 1, "short last row tile differs from a full one (pre-packed A)");
                free(A), free(B), free(packed), free(bias), free(res), free(start), free(expect), free(got);
            }
}

/* Narrow products with a long K sum it in two halves (an_gemm_kc), and
 * an_gemm_f32_prepacked_k_range sums one K block for every row: the second
 * half's block added to the first's, then an_epilogue_rows, is the whole
 * call bit for bit (what conv_pw_dw_pw's threads do with one half each),
 * A pre-packed or not.  The ISAs with a narrow path (AVX-512, AVX2) only. */
static void test_k_halves(const char *isa)
{
    static const int64_t shapes[][3] = {{20, 64, 384}, {64, 64, 576}, {29, 16, 960}, {15, 33, 300}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const int64_t kc = an_gemm_kc(M, N, K);
        test_case t = {0, 0, M, N, K, 1.0f, 0.0f, 0};
        ++g_cases;
        if (!(kc < K && 2 * kc >= K)) {
            fail(&t, isa, 1, "a narrow product's long K is not taken in two halves");
            continue;
        }
        const int64_t packed_floats = an_gemm_packed_a_floats(M, K);
        float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
        float *packed = malloc(sizeof(float) * (size_t)packed_floats);
        float *bias = malloc(sizeof(float) * (size_t)M), *res = malloc(sizeof(float) * (size_t)(M * N));
        float *expect = malloc(sizeof(float) * (size_t)(M * N));
        float *halves = malloc(sizeof(float) * (size_t)(2 * M * N));
        if (!A || !B || !packed || !bias || !res || !expect || !halves) {
            printf("FAIL: out of memory in test_k_halves\n");
            ++g_failures;
            free(A), free(B), free(packed), free(bias), free(res), free(expect), free(halves);
            return;
        }
        fill_random(A, M * K);
        fill_random(B, K * N);
        fill_random(bias, M);
        fill_random(res, M * N);
        an_gemm_pack_a(M, K, A, K, packed);
        for (int with_packed = 0; with_packed < 2; ++with_packed) {
            const float *ap = with_packed ? packed : NULL;
            set_threads(2);
            int rc = an_gemm_f32_epilogue_prepacked(M, N, K, A, K, ap, B, N, expect, N, bias, res, N,
                                                    AN_GEMM_ACT_RELU);
            set_threads(1);
            an_gemm_f32_prepacked_k_range(M, N, K, A, K, ap, B, N, halves, N, 0, kc);
            an_gemm_f32_prepacked_k_range(M, N, K, A, K, ap, B, N, halves + M * N, N, kc, K);
            for (int64_t i = 0; i < M * N; ++i) halves[i] = halves[M * N + i] + halves[i];
            an_epilogue_rows(halves, M, N, N, bias, res, N, AN_GEMM_ACT_RELU);
            ++g_cases;
            if (rc != 0 || memcmp(expect, halves, sizeof(float) * (size_t)(M * N)) != 0)
                fail(&t, isa, 2, "the two K halves added in order differ from the whole call");
        }
        free(A), free(B), free(packed), free(bias), free(res), free(expect), free(halves);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "-q") == 0) g_verbose = 0;
        if (strcmp(argv[i], "-v") == 0) g_verbose = 2;
    }
    const an_cpu_info *cpu = an_cpu_info_get();
    printf("cpu: %s; L1d %zu KiB, L2 %zu KiB, L3 %zu KiB; best ISA %s\n", cpu->model,
           cpu->l1d_bytes / 1024, cpu->l2_bytes / 1024, cpu->l3_bytes / 1024,
           an_isa_name(cpu->isa_best));
#ifndef _OPENMP
    printf("note: built without OpenMP, the 2-thread runs use 1 thread\n");
#endif

    long total_failures = 0;
    for (int level = AN_ISA_GENERIC; level <= (int)AN_ISA_NEON; ++level) {
        /* the portable level, the x86 levels up to the best, or NEON on AArch64 */
        const int runs = level == AN_ISA_GENERIC ||
                         (cpu->isa_best == AN_ISA_NEON ? level == AN_ISA_NEON
                                                       : level != AN_ISA_NEON && level <= (int)cpu->isa_best);
        if (!runs) continue;
        an_cpu_force_isa((an_isa)level);
        if (an_cpu_info_get()->isa != (an_isa)level) {
            printf("FAIL: could not force ISA %s\n", an_isa_name((an_isa)level));
            ++total_failures;
            continue;
        }
        const char *isa = an_isa_name((an_isa)level);
        g_cases = g_failures = 0;
        test_isa(isa);
        if (level == AN_ISA_AVX512) test_avx512_row_kernels(isa);
        if (level == AN_ISA_AVX2 || level == AN_ISA_AVX512)
            test_k_halves(isa); /* the ISAs with a narrow path */
        test_b_sources(isa);
        test_narrow(isa);
        test_bias_act(isa);
        test_prepacked_a(isa);
        test_fringe_rows(isa);
        if (level == (int)cpu->isa_best) /* the driver's threads, whatever the kernel */
            test_column_blocks_two_threads(isa);
        if (level == AN_ISA_AVX512) { /* both tile heights, whatever M would pick */
            an_gemm_force_avx512_mr(8);
            test_prepacked_a(isa);
            an_gemm_force_avx512_mr(14);
            test_prepacked_a(isa);
            an_gemm_force_avx512_mr(0);
        }
        printf("%-8s kernel %-14s %6ld cases, %ld failure(s)\n", isa, an_gemm_kernel_name(), g_cases,
               g_failures);
        total_failures += g_failures;
    }

    /* Forcing a level this CPU cannot run (above the best, or the other
     * architecture's) must give the best one, with a warning. */
    {
        const an_isa unsupported =
            cpu->isa_best == AN_ISA_NEON || cpu->isa_best < AN_ISA_AVX512 ? AN_ISA_AVX512 : AN_ISA_NEON;
        an_cpu_force_isa(unsupported);
        if (an_cpu_info_get()->isa != cpu->isa_best || !an_cpu_info_get()->isa_warning[0]) {
            printf("FAIL: forcing the unsupported ISA %s was not refused with a warning\n",
                   an_isa_name(unsupported));
            ++total_failures;
        }
    }
    an_cpu_reset_isa();

    /* The workspace cache is released on request. */
    set_threads(1);
    if (an_gemm_workspace_bytes() == 0) {
        printf("FAIL: no workspace cached after large GEMMs\n");
        ++total_failures;
    }
    an_gemm_release_workspace();
    if (an_gemm_workspace_bytes() != 0) {
        printf("FAIL: %zu workspace bytes left after release\n", an_gemm_workspace_bytes());
        ++total_failures;
    }

    printf("%s: %ld failure(s)\n", total_failures ? "FAILED" : "PASSED", total_failures);
    return total_failures ? 1 : 0;
}
