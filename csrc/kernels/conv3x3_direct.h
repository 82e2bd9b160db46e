/* Direct 3x3 convolution for images with few input channels (a network's
 * first layer: 3 colour channels), float32, NCHW, AVX-512 and AVX2.
 *
 * With 3 input channels the GEMM lowering multiplies a 27-deep sum per
 * output, short next to what it costs to lay the image out for it (a padded
 * copy, then a pass that moves the product into y with the bias).  Here each
 * output is summed in registers, 8 output channels by 16 or 32 columns of one
 * row at a time (AVX2: 4 channels by 16 columns), and written once.  Every output takes the GEMM's sum:
 * starting from zero, one FMA per tap in (channel, kernel row, kernel column)
 * order, the frame's taps multiplying zero, then + bias and the activation;
 * so the bits are those of the GEMM path.  Pure kernel: no
 * allocation, no parallel region (the caller splits the rows). */
#ifndef APPEALNET_KERNELS_CONV3X3_DIRECT_H
#define APPEALNET_KERNELS_CONV3X3_DIRECT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether the kernel takes a 3x3, stride-1, padding-1, dilation-1,
 * groups-1 layer with C input channels, Cout outputs, planes H x W: C up to
 * 4, Cout a multiple of 8, W 16, 32, 48 or 64, and the CPU running AVX-512
 * or AVX2. */
int an_conv3x3_few_channels_applies(int64_t C, int64_t Cout, int64_t H, int64_t W);

/* Output rows [r0, r1) of every output channel of one image: x [C, H, W],
 * w [Cout, C, 3, 3], bias [Cout] or NULL, y [Cout, H, W]; act an
 * AN_GEMM_ACT_* code of kernels/gemm.h. */
void an_conv3x3_few_channels_rows_f32(const float *x, const float *w, const float *bias,
                                      int64_t C, int64_t Cout, int64_t H, int64_t W, int64_t r0,
                                      int64_t r1, int act, float *y);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_KERNELS_CONV3X3_DIRECT_H */
