/* winograd.h — Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2016) for 3x3,
 * stride-1, padding-1 convolutions (cross-correlation, as conv2d).
 *
 * Each 4x4 block of outputs ("tile") comes from the 6x6 input patch around
 * it: V = B^T d B and U = G g G^T are 6x6, the 36 products
 * M = sum over channels V * U are 36 independent GEMMs, and Y = A^T M A.
 * That is 36 multiplies per tile and channel pair instead of 144 (4x
 * fewer).  Layouts, channels last so that the transforms run 16 channels
 * per vector: V [36][T][C], U [36][C][K], M [36][T][K] for T tiles numbered
 * (image, tile row, tile column).  Pure functions. */
#ifndef APPEALNET_KERNELS_WINOGRAD_H
#define APPEALNET_KERNELS_WINOGRAD_H

#include <stdint.h>

/* Tiles along an extent (the last one may hang over the edge). */
static inline int64_t an_winograd_tiles(int64_t extent) { return (extent + 3) / 4; }

/* Transformed values per tile: 6 x 6. */
#define AN_WINOGRAD_POINTS 36

/* Floats of scratch the transforms of an H x W plane need. */
int64_t an_winograd_scratch_floats(int64_t H, int64_t W);

/* U[36][C][k] for output channels k_begin <= k < k_end of U[36][C][K], from
 * w [K][C][3][3] (a split of K across threads writes disjoint parts; k_begin
 * a multiple of 16).  Returns 0 when each of those weights is finite, else 1
 * (U is then of no use, as for the inputs below). */
int an_winograd_f4x3_weights(const float *w, int64_t K, int64_t C, int64_t k_begin, int64_t k_end,
                             float *U);

/* V[36][rows][C] from images x [nb][C][H][W]: their tiles go to rows
 * 0 .. nb * tiles per image - 1 (V may point into a larger buffer).
 * Returns 0 when every input is finite, else 1: the transform then forms
 * inf - inf and 0 * inf terms that a direct sum never does. */
int an_winograd_f4x3_input(const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                           int64_t rows, float *scratch, float *V);

/* y [nb][K][H][W] = act(A^T M A + bias[k]) from M[36][rows][K] (its first
 * nb * tiles rows); act is an AN_GEMM_ACT_* code.  M is read up to 16
 * floats past its end. */
void an_winograd_f4x3_output(const float *M, int64_t nb, int64_t K, int64_t H, int64_t W,
                             int64_t rows, const float *bias, int act, float *scratch, float *y);

/* DY[36][rows][K] = A dy_t A^T for each 4x4 tile of dy [nb][K][H][W] (the
 * weight gradient's transform of the output gradient).  Returns 0 when
 * every value is finite, else 1. */
int an_winograd_f4x3_output_grad(const float *dy, int64_t nb, int64_t K, int64_t H, int64_t W,
                                 int64_t rows, float *scratch, float *DY);

/* dw [k][C][3][3] += G^T W G for k_begin <= k < k_end, from W[36][K][C]
 * (the transformed weight gradient, summed over tiles). */
void an_winograd_f4x3_weight_grad(const float *Wt, int64_t K, int64_t C, int64_t k_begin,
                                  int64_t k_end, float *dw);

#endif
