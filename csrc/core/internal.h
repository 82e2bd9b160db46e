/*
 * internal.h — helpers shared by the core and the ops (not part of the
 * public API; no Python here either).
 */
#ifndef APPEALNET_INTERNAL_H
#define APPEALNET_INTERNAL_H

#include "../appealnet.h"
#include <stdio.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements a parallel region costs more than it saves. */
#define AN_PARALLEL_GRAIN 32768

/* "[2, 3, 4]" into buf; returns buf. */
const char *an_shape_str(int ndim, const int64_t *shape, char *buf, size_t len);
#define AN_SHAPE_BUF 96

/* Validation used by every op before it allocates anything. */
an_status an_check_not_null(const an_tensor *t, const char *op, const char *arg);
an_status an_check_ndim(const an_tensor *t, int ndim, const char *op, const char *arg);
/* Normalises a possibly negative dim; error names the op. */
an_status an_normalize_dim(int dim, int ndim, const char *op, int *out);

an_tensor *an_empty_like(const an_tensor *t);
an_tensor *an_zeros_like(const an_tensor *t);
/* A view sharing storage with explicit geometry (no autograd). */
an_tensor *an_make_view(an_tensor *base, int ndim, const int64_t *shape,
                        const int64_t *strides, int64_t offset);
void an_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* The same elements in the same order as fewer, longer dims: size-1 dims
   dropped, and each dim merged into the one outside it where the outer one
   steps exactly over it (stride = size * stride).  Returns the new count
   (0 for a single element); for strided copies, whose per-row cost paid
   for each 16-float row of a channel slice. */
int an_merge_dims(int ndim, const int64_t *shape, const int64_t *strides, int64_t *merged_shape,
                  int64_t *merged_strides);
int an_same_shape(const an_tensor *a, const an_tensor *b);

/* numpy broadcasting of two shapes into out (ndim = max); error names op. */
an_status an_broadcast_shapes(const an_tensor *a, const an_tensor *b, const char *op,
                              int *out_ndim, int64_t *out_shape);
/* Sums grad (shape of a broadcast result) down to `shape` (new reference). */
an_tensor *an_sum_to_shape(an_tensor *grad, int ndim, const int64_t *shape);

/* Ends a backward rule with up to three input gradients: on success hands
   them to grad_inputs[0..2], on failure releases them; returns status. */
an_status an_finish_backward3(an_status status, an_tensor **grad_inputs, an_tensor *g0,
                              an_tensor *g1, an_tensor *g2);

/* Accumulate src into *acc (creating it when NULL).  Shapes must match. */
an_status an_accumulate(an_tensor **acc, an_tensor *src);

/* Uniform floats in [0,1) from counters [offset, offset+n) of stream `seed`. */
float an_random_uniform01(uint64_t seed, uint64_t counter);
/* Reserves n counters of the global generator; returns (seed, first offset). */
void an_random_reserve(uint64_t n, uint64_t *seed, uint64_t *offset);

/* Grows with the caller thread-local error on failure. */
void *an_alloc(size_t bytes);          /* 64-byte aligned; error set on failure */
void an_free(void *p);

/* an_batch_norm_act in training with x's plane moments ([N * C][2], see
   an_batchnorm_plane_moments_f32) given, from the convolution that wrote
   x, instead of computed from x (ops/norm.c; an_conv2d_batch_norm_act). */
an_tensor *an_batch_norm_act_with_moments(an_tensor *x, an_tensor *running_mean,
                                          an_tensor *running_var, an_tensor *weight,
                                          an_tensor *bias, double momentum, double eps,
                                          an_activation activation, const double *moments);

#endif
