/* Single-precision GEMM for the appealnet CPU backend.
 *
 * Structure follows the BLIS idea: five loops (NC over N, KC over K, MC over
 * M, then NR/MR tiles) around packed panels of A and B, with only the MR x NR
 * micro-kernel written per ISA.  Results are bit-identical for any thread
 * count: threads split M and N only, never K, and every C element is
 * accumulated in the same order whatever the partition. */
#ifndef APPEALNET_KERNELS_GEMM_H
#define APPEALNET_KERNELS_GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* C[M,N] = alpha * op(A) @ op(B) + beta * C; row-major; lda/ldb/ldc are row strides in elements.
   op(A) is A[M,K] (lda>=K) or, if trans_a, A is stored [K,M] (lda>=M). Same for B: [K,N] or stored [N,K].
   beta == 0 means C is overwritten (NaN/garbage in C ignored). M,N,K may be 0 (K==0 => C = beta*C).
   alpha == 0 also gives C = beta*C without reading A or B.  Negative sizes are treated as 0.
   Returns 0, or -1 if workspace allocation failed (C untouched in that case).
   Threads: omp_get_max_threads() at call time (1 for small problems). */
int an_gemm_f32(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                float beta, float *C, int64_t ldc);

/* Writes op(B)[k0 : k0+kc, j0 : j0+cols] of a B that is never stored whole
   (e.g. the im2col of a convolution) as a packed GEMM panel:
   panel[k * width + j] for k < kc and j < width, zero for j >= cols.
   Called concurrently from several threads on disjoint panels. */
typedef void (*an_gemm_pack_b_fn)(const void *source, int64_t k0, int64_t kc, int64_t j0,
                                  int64_t cols, int width, float *panel);

/* C = alpha * op(A) @ B + beta * C where B [K, N] is produced panel by panel
   by pack_b(source, ...) straight into the micro-kernel's layout: the copy of
   B that an_gemm_f32 would pack from memory is never written.  Same sums in
   the same order as an_gemm_f32 on the materialised B (bit-identical), same
   return values; M == 1 or N == 1 run the blocked path too. */
int an_gemm_f32_pack_b(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, an_gemm_pack_b_fn pack_b,
                       const void *source, float beta, float *C, int64_t ldc);

/* C = alpha * op(A) @ B + beta * C where B(k, j) = b[b_offsets[k] + j]: each
   row of B is a contiguous run somewhere in one buffer (e.g. the rows of a
   zero-padded image that a stride-1 convolution tap reads), and the
   micro-kernel reads them in place: B is neither materialised nor packed.
   Reads b[b_offsets[k] + j] for j up to N rounded up to the micro-kernel's
   NR (at most AN_GEMM_MAX_NR - 1 past column N - 1): the caller provides that
   slack.  Bit-identical to an_gemm_f32 on the materialised B for M, N >= 2. */
int an_gemm_f32_rows_b(int trans_a, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *b, const int64_t *b_offsets,
                       float beta, float *C, int64_t ldc);

/* C = act(A @ B + row_bias[i] + residual[i * ldr + j]) for C[M, N] (beta
   0, alpha 1), A [M, K] and B [K, N] row-major: the bias and the residual
   (either NULL: none; the residual as a convolution followed by a residual
   join adds it) and the activation (AN_GEMM_ACT_NONE / _RELU / _RELU6) are
   applied to each tile right after its last K block, while it is in cache,
   instead of in another pass over C.  Same result, bit for bit, as
   an_gemm_f32 followed by an_epilogue_rows.  Returns 0, or -1 if workspace
   allocation failed. */
#define AN_GEMM_ACT_NONE 0
#define AN_GEMM_ACT_RELU 1
#define AN_GEMM_ACT_RELU6 2
int an_gemm_f32_epilogue(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc,
                         const float *row_bias, const float *residual, int64_t ldr, int act);

/* Pre-packed A, for an A that many products use (a layer's weights at
   inference): packed once instead of on every call.  an_gemm_pack_a writes
   A [M, K] (row i at A + i * lda) as ceil(M / R) panels of R =
   an_gemm_packed_a_rows(M, K) rows, element (p * R + r, k) at packed[(p * K +
   k) * R + r], the rows past M zero: an_gemm_packed_a_floats(M, K) floats.
   R is the tile height of the micro-kernel a product with M rows uses, so it
   depends on the ISA in use too: a copy packed under another R must not be
   passed (compare an_gemm_packed_a_rows(M, K) first).
   an_gemm_f32_epilogue_prepacked is an_gemm_f32_epilogue reading A from
   a_packed (NULL: from A, packed as usual), with the same bits. */
int an_gemm_packed_a_rows(int64_t M, int64_t K);
int64_t an_gemm_packed_a_floats(int64_t M, int64_t K);
void an_gemm_pack_a(int64_t M, int64_t K, const float *A, int64_t lda, float *packed);
int an_gemm_f32_epilogue_prepacked(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                   const float *a_packed, const float *B, int64_t ldb, float *C,
                                   int64_t ldc, const float *row_bias, const float *residual,
                                   int64_t ldr, int act);

/* The narrow path of an_gemm_f32_epilogue_prepacked (a few tens of
   columns, AVX-512 and AVX2), split by the caller: a product that one parallel region
   runs beside other work (an inverted-residual block on small planes) takes
   its share of the rows on the calling thread.  an_gemm_narrow_blocks
   returns how many blocks of *rows_per_block rows the product of M x N x K
   splits into (a pre-packed A: its panels), or 0 when the call would not
   take the narrow path.  an_gemm_f32_epilogue_prepacked_rows computes rows
   [row0, row1) of that call's C (row0 on a block's first row), with the
   bits of the whole call, for any split: no workspace, no threads.  Both
   it and an_gemm_f32_prepacked_k_range do nothing for a product that
   an_gemm_narrow_blocks gives 0. */
int64_t an_gemm_narrow_blocks(int64_t M, int64_t N, int64_t K, int prepacked,
                              int64_t *rows_per_block);
/* A product's sums over K run in blocks of an_gemm_kc(M, N, K) products
   each (a function of M, N, K and the CPU only), added block after block
   onto C: ((B0 + B1) + B2) ..., then the epilogue.  On the narrow path,
   an_gemm_f32_prepacked_k_range writes C = the sum of the blocks in
   [k0, k1) (k0 on a block boundary), all M rows, no epilogue, on the
   calling thread: with one block per thread, P1 + P0 followed by
   an_epilogue_rows is the whole call's result, bit for bit. */
int64_t an_gemm_kc(int64_t M, int64_t N, int64_t K);
/* Whether every column count in [n0, n1] (n0 <= n1) gives the same
   an_gemm_kc(M, N, K): one call instead of one per column count, for a
   caller that splits a product's columns (conv_pw_dw_pw's bands). */
int an_gemm_kc_same_over(int64_t M, int64_t n0, int64_t n1, int64_t K);
void an_gemm_f32_prepacked_k_range(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                   const float *a_packed, const float *B, int64_t ldb, float *C,
                                   int64_t ldc, int64_t k0, int64_t k1);
void an_gemm_f32_epilogue_prepacked_rows(int64_t M, int64_t N, int64_t K, const float *A,
                                         int64_t lda, const float *a_packed, const float *B,
                                         int64_t ldb, float *C, int64_t ldc,
                                         const float *row_bias, const float *residual,
                                         int64_t ldr, int act, int64_t row0, int64_t row1);

/* The epilogue alone: c[i, j] = act((c[i, j] + row_bias[i]) + residual[i *
   ldr + j]) over rows x cols (row stride ldc; row_bias / residual NULL:
   none), NaN passing through as in relu.  The one place these float
   operations are written: the convolutions' output passes use it too, so
   every path gives the same bits.  an_bias_act_rows has no residual. */
void an_epilogue_rows(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *row_bias,
                      const float *residual, int64_t ldr, int act);
void an_bias_act_rows(float *c, int64_t rows, int64_t cols, int64_t ldc, const float *row_bias,
                      int act);

/* Frees the calling thread's cached packing buffers (they are otherwise kept
 * for the next call, and freed automatically when a POSIX thread exits). */
void an_gemm_release_workspace(void);

/* Bytes of packing buffers currently cached, summed over all threads. */
size_t an_gemm_workspace_bytes(void);

/* Name of the micro-kernel an_gemm_f32 would use now, e.g. "avx512_14x32". */
const char *an_gemm_kernel_name(void);

/* The micro-kernel a GEMM with M rows and K (after op) would use now: on
 * AVX-512 the row count of the tile is picked from M and K (e.g.
 * "avx512_8x32" for M = 16, 32, 64, and for M = 96 or 144 when K <= 64).
 * Depends on M, K and the ISA only, never on the thread count. */
const char *an_gemm_kernel_name_for(int64_t M, int64_t K);
/* The micro-kernel and the cache blocks (KC, MC, NC) an M x N x K product
   runs with (for bench/bench_gemm_c.c's micro-kernel ceiling). */
const struct an_gemm_ukernel *an_gemm_ukernel_for(int64_t M, int64_t K);
void an_gemm_block_sizes(int64_t M, int64_t N, int64_t K, int64_t *kc, int64_t *mc, int64_t *nc);

/* Testing/benchmarking: 8 or 14 forces that AVX-512 tile height for every
 * later call (process-wide); 0 restores the choice by M and K. */
void an_gemm_force_avx512_mr(int mr);

/* ---- Internal: the contract between gemm.c and the micro-kernel files. ---- */

/* Computes one full MR x NR tile:
 *   c[i*ldc + j] = alpha * sum_k packed_a[k*MR + i] * packed_b[k*NR + j] + beta * c[i*ldc + j]
 * with the k sum taken in increasing k order in each element's own lane (so
 * the tile's position never changes a result).  beta == 0 stores without
 * reading c.  kc >= 1. */
typedef void (*an_gemm_ukernel_fn)(int64_t kc, const float *packed_a, const float *packed_b,
                                   float *c, int64_t ldc, float alpha, float beta);

/* Same product with B read in place: row k of the B panel is the NR floats
   at b + b_offsets[k] (any alignment).  Lets a stride-1 convolution hand the
   GEMM its zero-padded input directly (an_gemm_f32_rows_b). */
typedef void (*an_gemm_ukernel_rows_fn)(int64_t kc, const float *packed_a, const float *b,
                                        const int64_t *b_offsets, float *c, int64_t ldc,
                                        float alpha, float beta);

/* compute / compute_rows followed by C[i, :] += row_bias[i], C[i, j] +=
   residual[i * ldr + j] (either NULL: none) and the activation act
   (AN_GEMM_ACT_*), applied in registers before the store: the same bits as
   an_epilogue_rows on the stored tile, without reading the tile back (that
   second pass cost as much as the product itself on a 1x1 layer with K =
   24).  alpha is 1. */
typedef void (*an_gemm_ukernel_epilogue_fn)(int64_t kc, const float *packed_a, const float *b,
                                            const int64_t *b_offsets, float *c, int64_t ldc,
                                            float beta, const float *row_bias,
                                            const float *residual, int64_t ldr, int act);

/* C[rows, N] = A[rows, K] B[K, N] + beta * C, alpha == 1, A and B row-major
 * and read in place (no packing), the K sum taken in blocks of KC exactly as
 * the blocked driver takes it: bit-identical to it.  For narrow products
 * (N up to the kernel's narrow_max_n columns), where packing costs more
 * than it saves.  row_bias, residual (NULL: none) and act are applied as the
 * last K block is stored, as an_epilogue_rows would. */
typedef void (*an_gemm_narrow_fn)(int64_t rows, int64_t N, int64_t K, int64_t KC, const float *A,
                                  int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                  int64_t ldc, const float *row_bias, const float *residual,
                                  int64_t ldr, int act);
/* The same product with A pre-packed (an_gemm_pack_a, panels of panel_rows
 * = the kernel's MR rows, panel_stride floats apart: panel_rows times the
 * packed matrix's whole K) and A_packed at column 0 of the panel holding
 * row 0 of these rows (a K range starting at k0: k0 * panel_rows further). */
typedef void (*an_gemm_narrow_prepacked_fn)(int64_t rows, int64_t N, int64_t K, int64_t KC,
                                            const float *A_packed, int panel_rows,
                                            int64_t panel_stride, const float *B, int64_t ldb,
                                            float beta, float *C, int64_t ldc,
                                            const float *row_bias, const float *residual,
                                            int64_t ldr, int act);

/* Rows [0, rows) (1 <= rows < MR) of one tile NR columns wide, written
   straight into C: the first rows of the A panel (packed_a, MR floats per
   k) times the B panel (packed, NR floats per k, or in place through
   b_offsets as compute_rows reads it), + beta * C, then with `finish` the
   epilogue of an_gemm_ukernel_epilogue_fn.  alpha is 1.  The same bits as
   the full tile computed into a scratch tile, stored with alpha 1 and beta,
   then given an_epilogue_rows (the fringe path it replaces), without the
   unused rows' FMAs or the second pass. */
typedef void (*an_gemm_ukernel_partial_fn)(int rows, int64_t kc, const float *packed_a,
                                           const float *b, const int64_t *b_offsets, float *c,
                                           int64_t ldc, float beta, int finish,
                                           const float *row_bias, const float *residual,
                                           int64_t ldr, int act);

/* `tiles` full tiles side by side along a row of C, each as
   an_gemm_ukernel_epilogue_fn computes it from packed B panels b_stride
   floats apart (tile t: b + t * b_stride, c + t * NR, residual + t * NR):
   one call for a row of short sums, whose per-tile call and set-up cost a
   tenth of the tile's time at K = 24. */
typedef void (*an_gemm_ukernel_epilogue_row_fn)(int64_t tiles, int64_t kc, const float *packed_a,
                                                const float *b, int64_t b_stride, float *c,
                                                int64_t ldc, float beta, const float *row_bias,
                                                const float *residual, int64_t ldr, int act);

typedef struct an_gemm_ukernel {
    const char *name;
    int mr;
    int nr;
    an_gemm_ukernel_fn compute;
    an_gemm_ukernel_rows_fn compute_rows;
    an_gemm_ukernel_epilogue_fn compute_epilogue; /* NULL: the driver runs the pass */
    an_gemm_narrow_fn narrow;                     /* NULL (both): no narrow path */
    an_gemm_narrow_prepacked_fn narrow_prepacked;
    int narrow_max_n; /* the widest product (columns) the narrow path takes */
    an_gemm_ukernel_partial_fn compute_partial; /* NULL: fringe rows via a scratch tile */
    an_gemm_ukernel_epilogue_row_fn compute_epilogue_row; /* NULL: tile by tile */
} an_gemm_ukernel;

/* Largest tile any kernel uses: sizes the on-stack fringe tile buffer. */
#define AN_GEMM_MAX_MR 16
#define AN_GEMM_MAX_NR 32

extern const an_gemm_ukernel an_gemm_ukernel_generic;
#if defined(__aarch64__)
extern const an_gemm_ukernel an_gemm_ukernel_neon; /* 12 x 8, AN_ISA_NEON */
#endif
#if defined(__x86_64__) || defined(_M_X64)
extern const an_gemm_ukernel an_gemm_ukernel_avx2;
extern const an_gemm_ukernel an_gemm_ukernel_avx512;      /* 14 x 32, the default */
extern const an_gemm_ukernel an_gemm_ukernel_avx512_8x32; /* chosen per call by M */
#endif

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_GEMM_H */
