/* Body of the batch-norm kernels (see batchnorm.c), compiled once per ISA:
 * batchnorm.c includes it for the portable build, batchnorm_avx2.c and
 * batchnorm_avx512.c under a `#pragma GCC target`, each with its own
 * BN_VARIANT suffix.  The sums run in explicit lanes, so every build gives
 * the same bits; the wider ones only do more lanes per instruction (the
 * double-precision reductions ran two doubles per SSE2 op). */
/* Batch normalisation kernels, see batchnorm.h.
 *
 * Every sum runs in a fixed order whatever thread computes it: each plane's
 * sums in fixed lanes, the planes of a channel added in image order.  The
 * statistics come from per-plane moments (planes in memory order), the
 * normalising pass runs plane by plane, the training backward in blocks of
 * channels, the eval backward channel by channel; the results are the same
 * for any thread count.
 *
 * The activation is a parameter of each per-plane or per-channel worker,
 * which is inlined once per activation with the activation as a literal
 * (see the dispatchers of the *_as workers): the switch on it then folds
 * away and each inner loop is a branch-free select that vectorises.
 */
#include "batchnorm.h"

#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this much work a parallel region (thread wake-up) costs more than it saves. */
#define KERNEL_PARALLEL_GRAIN 32768

#define LANES 8

#if defined(__GNUC__)
#define AN_ALWAYS_INLINE inline __attribute__((always_inline))
#define AN_NOINLINE __attribute__((noinline))
#else
#define AN_ALWAYS_INLINE inline
#define AN_NOINLINE
#endif

/* The activation of one normalised value: the same formulas as the
 * standalone relu / relu6 ops, so fusing them changes no bit. */
static AN_ALWAYS_INLINE float activate(an_bn_activation act, float v)
{
    switch (act) {
    case AN_BN_RELU:
        return v <= 0.0f ? 0.0f : v; /* NaN passes through */
    case AN_BN_RELU6:
        return v <= 0.0f ? 0.0f : (v >= 6.0f ? 6.0f : v);
    default:
        return v;
    }
}

/* dy[i] masked by the activation's derivative, read from its output y[i]
 * (the standalone ops' rules: relu blocks y <= 0 so NaN passes; relu6 lets
 * through only 0 < y < 6, which for y = relu6(v) holds iff 0 < v < 6).
 * dy is loaded unconditionally so the select vectorises: a branch per
 * element mispredicts on about half of them. y is not read for IDENTITY. */
static AN_ALWAYS_INLINE float masked_grad(an_bn_activation act,
                                          const float *restrict dy,
                                          const float *restrict y, int64_t i)
{
    const float g = dy[i];
    switch (act) {
    case AN_BN_RELU:
        return y[i] <= 0.0f ? 0.0f : g;
    case AN_BN_RELU6:
        return (y[i] > 0.0f) & (y[i] < 6.0f) ? g : 0.0f;
    default:
        return g;
    }
}

/* Masked gradients are summed a chunk at a time from a stack buffer that a
 * vectorised select fills: summing the selects directly compiled to a
 * compare-and-branch per element, which mispredicted on about half of them
 * (the fused backward ran at half the speed of relu backward + batch norm
 * backward). A multiple of LANES, so every element keeps its lane. */
#define MASK_CHUNK 256

/* Adds g[k] to lane k % LANES of pg, k in [0, n), n a multiple of LANES.
 * The lanes are copied to locals so that the compiler keeps them in
 * registers and vectorises across them (two doubles per SSE2 op); kept out
 * of line because inlined into the channel loops GCC left them scalar. */
static AN_NOINLINE void add_g_to_lanes(const float *restrict g, int64_t n,
                                       double *restrict pg)
{
    double s[LANES];
    for (int l = 0; l < LANES; ++l) s[l] = pg[l];
    for (int64_t k = 0; k < n; k += LANES)
        for (int l = 0; l < LANES; ++l) s[l] += (double)g[k + l];
    for (int l = 0; l < LANES; ++l) pg[l] = s[l];
}

/* Adds g[k] to lane k % LANES of pg and g[k] * (a[k] - m) to that of pgd. */
static AN_NOINLINE void add_g_and_g_dev_to_lanes(const float *restrict g,
                                                 const float *restrict a,
                                                 int64_t n, double m,
                                                 double *restrict pg,
                                                 double *restrict pgd)
{
    double s[LANES], sd[LANES];
    for (int l = 0; l < LANES; ++l) {
        s[l] = pg[l];
        sd[l] = pgd[l];
    }
    for (int64_t k = 0; k < n; k += LANES)
        for (int l = 0; l < LANES; ++l) {
            const double gv = (double)g[k + l];
            s[l] += gv;
            sd[l] += gv * ((double)a[k + l] - m);
        }
    for (int l = 0; l < LANES; ++l) {
        pg[l] = s[l];
        pgd[l] = sd[l];
    }
}

/* Both sums when a is non-NULL, else sum(g) only. */
static inline void add_to_lanes(const float *restrict g,
                                const float *restrict a, int64_t n, double m,
                                double *restrict pg, double *restrict pgd)
{
    if (a)
        add_g_and_g_dev_to_lanes(g, a, n, m, pg, pgd);
    else
        add_g_to_lanes(g, n, pg);
}

/* The same mask with the activation's input recomputed from x as the
 * forward computed it, (x - m) * scale + shift: the same float operations
 * in the same order (no contraction under -std=c11), so the same value and
 * the same mask, without reading y: the training backward reads two
 * tensors instead of three in each of its two passes. */
static AN_ALWAYS_INLINE float masked_grad_x(an_bn_activation act, const float *restrict dy,
                                            const float *restrict x, int64_t i, float m,
                                            float scale, float shift)
{
    const float g = dy[i];
    const float v = (x[i] - m) * scale + shift;
    switch (act) {
    case AN_BN_RELU:
        return v <= 0.0f ? 0.0f : g;
    case AN_BN_RELU6:
        return (v > 0.0f) & (v < 6.0f) ? g : 0.0f;
    default:
        return g;
    }
}

/* sum(g) and, when a is non-NULL, sum(g * (a - m)) in double over one row,
 * g = masked_grad(dy, y), or masked_grad_x(dy, a) when from_x (a = x then):
 * eight lanes summed in order, then the tail. The sums are added to *sum_g
 * and *sum_g_dev. */
static AN_ALWAYS_INLINE void sum_g_and_g_dev_f64(an_bn_activation act,
                                                 const float *restrict dy,
                                                 const float *restrict y,
                                                 const float *restrict a,
                                                 int64_t n, double m,
                                                 double *sum_g,
                                                 double *sum_g_dev,
                                                 const int from_x, float mf,
                                                 float scale, float shift)
{
    double pg[LANES] = {0}, pgd[LANES] = {0};
    const int64_t body = n - n % LANES;
    if (act == AN_BN_IDENTITY) {
        add_to_lanes(dy, a, body, m, pg, pgd);
    } else {
        float g[MASK_CHUNK];
        for (int64_t k0 = 0; k0 < body; k0 += MASK_CHUNK) {
            const int64_t len =
                body - k0 < MASK_CHUNK ? body - k0 : MASK_CHUNK;
            for (int64_t j = 0; j < len; ++j)
                g[j] = from_x ? masked_grad_x(act, dy + k0, a + k0, j, mf, scale, shift)
                              : masked_grad(act, dy + k0, y + k0, j);
            add_to_lanes(g, a ? a + k0 : NULL, len, m, pg, pgd);
        }
    }
    double s = 0.0, sd = 0.0;
    for (int l = 0; l < LANES; ++l) {
        s += pg[l];
        sd += pgd[l];
    }
    for (int64_t k = body; k < n; ++k) {
        const double gv = (double)(from_x ? masked_grad_x(act, dy, a, k, mf, scale, shift)
                                          : masked_grad(act, dy, y, k));
        s += gv;
        if (a) sd += gv * ((double)a[k] - m);
    }
    *sum_g += s;
    *sum_g_dev += sd;
}

/* moments[2p] = sum of plane p, moments[2p + 1] = the sum of its squared
 * deviations around its own mean, both in double: the plane is read twice,
 * the second time from L1 (a 32x32 plane is 4 KB).  Planes in memory order,
 * a run per thread.  Inside a caller's parallel region (a convolution's
 * image units, which call this on the planes they just wrote) it runs on
 * the calling thread. */
/* A plane's two sums run in 32 double lanes (four AVX-512 or eight AVX2
 * accumulators): with the eight of sum_f64 each pass was one chain of
 * dependent adds, about a cycle per element over both passes, which made
 * the moments cost as much as a pass over memory.  The 32 lanes are then
 * folded onto eight (lane l + 8 j onto lane l, in pairs), what is left of
 * the plane runs in those eight (4x4 planes only there), the eight are
 * summed in order and the tail added: a fixed order for each plane size,
 * the same bits under every ISA. */
#define MOMENT_LANES 32

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi" /* the helpers are inlined: no vector crosses a call */
/* eight doubles / floats as one GCC vector (one zmm, two ymm or four xmm):
 * without them GCC left the eight-lane loops scalar, and a 4x4 plane's
 * moments cost more than its normalisation */
typedef double moment_v8d __attribute__((vector_size(64)));
typedef float moment_v8f __attribute__((vector_size(32)));

static AN_ALWAYS_INLINE moment_v8d moment_load(const float *p)
{
    moment_v8f v;
    __builtin_memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, moment_v8d);
}

/* sum(a) (sq = 0) or sum((a - m)^2) (sq = 1) over one plane, in the order
 * described above */
static AN_ALWAYS_INLINE double plane_sum_as(const float *restrict a, int64_t n, double m,
                                            const int sq)
{
    const moment_v8d mv = (moment_v8d){0} + m;
    moment_v8d p8 = {0};
    int64_t k = 0;
    if (n >= MOMENT_LANES) {
        moment_v8d w0 = {0}, w1 = {0}, w2 = {0}, w3 = {0};
        for (; k + MOMENT_LANES <= n; k += MOMENT_LANES) {
            moment_v8d v0 = moment_load(a + k), v1 = moment_load(a + k + 8);
            moment_v8d v2 = moment_load(a + k + 16), v3 = moment_load(a + k + 24);
            if (sq) {
                v0 -= mv, v1 -= mv, v2 -= mv, v3 -= mv;
                v0 *= v0, v1 *= v1, v2 *= v2, v3 *= v3;
            }
            w0 += v0, w1 += v1, w2 += v2, w3 += v3;
        }
        p8 = (w0 + w1) + (w2 + w3);
    }
    for (; k + LANES <= n; k += LANES) {
        moment_v8d v = moment_load(a + k);
        if (sq) {
            v -= mv;
            v *= v;
        }
        p8 += v;
    }
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += p8[l];
    for (; k < n; ++k) {
        const double d = sq ? (double)a[k] - m : (double)a[k];
        s += d * (sq ? d : 1.0);
    }
    return s;
}

#else
/* the same order with arrays for the lanes */
static AN_ALWAYS_INLINE double plane_sum_as(const float *restrict a, int64_t n, double m,
                                            const int sq)
{
    double p8[LANES] = {0};
    int64_t k = 0;
    if (n >= MOMENT_LANES) {
        double part[MOMENT_LANES] = {0};
        for (; k + MOMENT_LANES <= n; k += MOMENT_LANES)
            for (int l = 0; l < MOMENT_LANES; ++l) {
                const double d = sq ? (double)a[k + l] - m : (double)a[k + l];
                part[l] += sq ? d * d : d;
            }
        for (int l = 0; l < LANES; ++l)
            p8[l] = (part[l] + part[l + LANES]) + (part[l + 2 * LANES] + part[l + 3 * LANES]);
    }
    for (; k + LANES <= n; k += LANES)
        for (int l = 0; l < LANES; ++l) {
            const double d = sq ? (double)a[k + l] - m : (double)a[k + l];
            p8[l] += sq ? d * d : d;
        }
    double s = 0.0;
    for (int l = 0; l < LANES; ++l) s += p8[l];
    for (; k < n; ++k) {
        const double d = sq ? (double)a[k] - m : (double)a[k];
        s += sq ? d * d : d;
    }
    return s;
}
#endif

static AN_ALWAYS_INLINE double plane_sum(const float *restrict a, int64_t n)
{
    return plane_sum_as(a, n, 0.0, 0);
}

static AN_ALWAYS_INLINE double plane_sq_dev(const float *restrict a, int64_t n, double m)
{
    return plane_sum_as(a, n, m, 1);
}

static void plane_moments_run(const float *x, int64_t p0, int64_t p1, int64_t HW, double *moments)
{
    for (int64_t p = p0; p < p1; ++p) {
        const float *plane = x + p * HW;
        const double s = plane_sum(plane, HW);
        moments[2 * p] = s;
        moments[2 * p + 1] = HW > 0 ? plane_sq_dev(plane, HW, s / (double)HW) : 0.0;
    }
}

void BN_VARIANT(an_batchnorm_plane_moments_f32)(const float *x, int64_t planes, int64_t HW,
                                                double *moments)
{
#ifdef _OPENMP
    /* tested outside the pragma: a region with if(0) still forks a team of
       one, microseconds a call, and the convolutions call this per plane */
    if (planes * HW > KERNEL_PARALLEL_GRAIN && !omp_in_parallel()) {
#pragma omp parallel
        {
            const int64_t team = omp_get_num_threads(), thread = omp_get_thread_num();
            plane_moments_run(x, planes * thread / team, planes * (thread + 1) / team, HW, moments);
        }
        return;
    }
#endif
    plane_moments_run(x, 0, planes, HW, moments);
}

/* ------------------------------------------------------------------ forward */

/* y = act((x - m) * scale + shift) over one plane of HW values */
static AN_ALWAYS_INLINE void normalize_plane_as(an_bn_activation act, const float *restrict xs,
                                                float m, float scale, float shift, int64_t HW,
                                                float *restrict ys)
{
    for (int64_t k = 0; k < HW; ++k)
        ys[k] = activate(act, (xs[k] - m) * scale + shift);
}

static void normalize_plane(an_bn_activation act, const float *x, float m, float scale,
                            float shift, int64_t HW, float *y)
{
    switch (act) {
    case AN_BN_RELU:
        normalize_plane_as(AN_BN_RELU, x, m, scale, shift, HW, y);
        break;
    case AN_BN_RELU6:
        normalize_plane_as(AN_BN_RELU6, x, m, scale, shift, HW, y);
        break;
    default:
        normalize_plane_as(AN_BN_IDENTITY, x, m, scale, shift, HW, y);
        break;
    }
}

static inline float inv_sqrt_eps(float var, float eps)
{
    return (float)(1.0 / sqrt((double)var + (double)eps));
}

/* Channels whose scale and shift are set up at a time (on the stack) */
#define BN_CHANNEL_BLOCK 256

/* y = act(gamma * (x - mean) * inv_sqrt(var + eps) + beta) per channel:
 * batch statistics in training, running ones in eval (invstd_out: the
 * training forward keeps 1 / sqrt(var + eps) for its backward).  The
 * threads take contiguous runs of planes (image by image), where they took
 * channels, each one's N planes C * HW floats apart: runs of 256 bytes
 * 16 KB apart on 8x8 planes with 64 channels, which the prefetchers did
 * not follow.  Each value's arithmetic is the same.  Eval, 2 threads, on a
 * Zen 5: 64 channels of 8x8 at batch 128 0.43x the time, 960 of 4x4 at
 * batch 32 0.63x, 16 of 32x32 0.9x; ResNet-20's inference at batch 128
 * 0.978x (8 of 8 rounds faster, in one process alternating with the
 * channel order), its training step 1.000x.  (Plane order in the training
 * backward, which reads each channel's planes twice, was 1.05-1.15x slower:
 * a channel's planes no longer stayed in L2 between its two passes; it now
 * runs in blocks of channels that fit L2, see backward_train_blocks.) */
static void normalize_all(const float *x, const float *mean, const float *var, const float *gamma,
                          const float *beta, float eps, an_bn_activation act, int64_t N,
                          int64_t C, int64_t HW, float *y, float *invstd_out)
{
    for (int64_t c0 = 0; c0 < C; c0 += BN_CHANNEL_BLOCK) {
        const int64_t channels = C - c0 < BN_CHANNEL_BLOCK ? C - c0 : BN_CHANNEL_BLOCK;
        float scale[BN_CHANNEL_BLOCK], shift[BN_CHANNEL_BLOCK];
        for (int64_t i = 0; i < channels; ++i) {
            const int64_t c = c0 + i;
            const float inv = inv_sqrt_eps(var[c], eps);
            scale[i] = gamma ? gamma[c] * inv : inv;
            shift[i] = beta ? beta[c] : 0.0f;
            if (invstd_out) invstd_out[c] = inv;
        }
        const int64_t planes = N * channels;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (planes * HW > KERNEL_PARALLEL_GRAIN)
#endif
        for (int64_t p = 0; p < planes; ++p) {
            const int64_t n = p / channels, i = p % channels, c = c0 + i;
            normalize_plane(act, x + (n * C + c) * HW, mean[c], scale[i], shift[i], HW,
                            y + (n * C + c) * HW);
        }
    }
}

void BN_VARIANT(an_batchnorm_forward_train_f32)(const float *x, const float *mean,
                                    const float *var_biased,
                                    const float *gamma, const float *beta,
                                    float eps, an_bn_activation act,
                                    int64_t N, int64_t C, int64_t HW,
                                    float *y, float *invstd_out)
{
    normalize_all(x, mean, var_biased, gamma, beta, eps, act, N, C, HW, y, invstd_out);
}

void BN_VARIANT(an_batchnorm_forward_eval_f32)(const float *x, const float *running_mean,
                                   const float *running_var,
                                   const float *gamma, const float *beta,
                                   float eps, an_bn_activation act, int64_t N,
                                   int64_t C, int64_t HW, float *y)
{
    normalize_all(x, running_mean, running_var, gamma, beta, eps, act, N, C, HW, y, NULL);
}

/* ----------------------------------------------------------------- backward */

/* The backward through batch statistics (M = N*HW > 0), block of channels
 * by block (backward_train_blocks), in three steps:
 *   1. per plane (image n, channel c) of the block: sum(g) and
 *      sum(g * (x - mean)), g the masked gradient;
 *   2. per channel, those of its planes added in image order (the order
 *      the channel-by-channel loop added them in, so the same bits);
 *   3. per plane of the block: dx.
 * Threads took whole channels before, each reading its channel's N planes
 * C * HW floats apart, twice: on 128 x 96 x 32 x 32 the backward ran at
 * 29 GB/s where the forward's passes in plane order ran at about 65. */
typedef struct {
    float k, mean_g, a; /* dx = k * (g - mean_g - (x - mean) * a) */
    float scale, shift; /* the forward's, for the activation's mask */
} backward_channel;

static AN_ALWAYS_INLINE void backward_plane_sums_as(an_bn_activation act, const float *dy,
                                                    const float *x, int64_t HW, float mf,
                                                    const backward_channel *ch, double *sums)
{
    double sum_g = 0.0, sum_g_dev = 0.0;
    sum_g_and_g_dev_f64(act, dy, NULL, x, HW, (double)mf, &sum_g, &sum_g_dev, 1, mf, ch->scale,
                        ch->shift);
    sums[0] = sum_g;
    sums[1] = sum_g_dev;
}

static AN_ALWAYS_INLINE void backward_plane_dx_as(an_bn_activation act, const float *restrict dys,
                                                  const float *restrict xs, int64_t HW, float mf,
                                                  const backward_channel *ch, float *restrict dxs)
{
    const float k = ch->k, mean_g = ch->mean_g, a = ch->a, scale = ch->scale, shift = ch->shift;
    for (int64_t i = 0; i < HW; ++i)
        dxs[i] = k * (masked_grad_x(act, dys, xs, i, mf, scale, shift) - mean_g - (xs[i] - mf) * a);
}

/* planes (n, c) for n in [0, N), c in [c0, c0 + width), taken in that
 * order (image by image), items [q0, q1) of it: step 1 (dx NULL: their
 * sums) or step 3 (dx) */
static AN_ALWAYS_INLINE void backward_train_planes_as(an_bn_activation act, const float *dy,
                                                      const float *x, const float *mean, int64_t C,
                                                      int64_t HW, int64_t c0, int64_t width,
                                                      int64_t q0, int64_t q1,
                                                      const backward_channel *channels,
                                                      double *sums, float *dx)
{
    if (q0 >= q1)
        return;
    int64_t n = q0 / width, c = c0 + q0 % width; /* one division, not two a plane */
    for (int64_t q = q0; q < q1; ++q) {
        const int64_t p = n * C + c, off = p * HW;
        if (dx)
            backward_plane_dx_as(act, dy + off, x + off, HW, mean[c], channels + c, dx + off);
        else
            backward_plane_sums_as(act, dy + off, x + off, HW, mean[c], channels + c, sums + 2 * p);
        if (++c == c0 + width) {
            c = c0;
            ++n;
        }
    }
}

static void backward_train_planes(an_bn_activation act, const float *dy, const float *x,
                                  const float *mean, int64_t C, int64_t HW, int64_t c0,
                                  int64_t width, int64_t q0, int64_t q1,
                                  const backward_channel *channels, double *sums, float *dx)
{
    switch (act) {
    case AN_BN_RELU:
        backward_train_planes_as(AN_BN_RELU, dy, x, mean, C, HW, c0, width, q0, q1, channels, sums,
                                 dx);
        break;
    case AN_BN_RELU6:
        backward_train_planes_as(AN_BN_RELU6, dy, x, mean, C, HW, c0, width, q0, q1, channels, sums,
                                 dx);
        break;
    default:
        backward_train_planes_as(AN_BN_IDENTITY, dy, x, mean, C, HW, c0, width, q0, q1, channels,
                                 sums, dx);
        break;
    }
}

/* Step 2 for channels [c0, c1): the planes' sums added in image order, then
 * the channel's constants for dx. */
static void backward_train_combine(const double *sums, const float *invstd, const float *gamma,
                                   int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t c1,
                                   backward_channel *channels, float *dgamma, float *dbeta)
{
    const int64_t M = N * HW;
    for (int64_t c = c0; c < c1; ++c) {
        double sum_g = 0.0, sum_g_dev = 0.0;
        for (int64_t n = 0; n < N; ++n) {
            sum_g += sums[2 * (n * C + c)];
            sum_g_dev += sums[2 * (n * C + c) + 1];
        }
        const double inv = (double)invstd[c];
        const double sum_g_xhat = sum_g_dev * inv;
        if (dbeta) dbeta[c] = (float)sum_g;
        if (dgamma) dgamma[c] = (float)sum_g_xhat;
        /* The header's formula divided through by M:
         *   dx = k * (g - sum(g)/M - (x - mean) * a)
         * with k = gamma*invstd and a = invstd * sum(g*xhat) / M
         * (so (x - mean) * a == xhat * sum(g*xhat) / M). */
        const double gm = gamma ? (double)gamma[c] : 1.0;
        channels[c].k = (float)(gm * inv);
        channels[c].mean_g = (float)(sum_g / (double)M);
        channels[c].a = (float)(inv * sum_g_xhat / (double)M);
    }
}

/* Channels go in blocks of about BN_BACKWARD_BLOCK_BYTES of dy and x (at
 * least one channel), which the team shares out image by image, so each
 * thread reads runs of the block's planes that lie together in memory, and
 * the second pass finds much of the block still in the two L2s.  Against
 * the channel-by-channel loop (two threads, Zen 5, the same bits): 128 x
 * 384 x 8 x 8 backward 2.7-3.0 -> 1.4-1.9 ms, 128 x 576 x 8 x 8 4.6-4.8 ->
 * 2.8-3.0, 128 x 96 x 32 x 32 7.6-7.9 -> 6.9-7.5, 128 x 960 x 4 x 4
 * 1.44-1.63 -> 1.35-1.38; blocks of 2 MB were slower on 32x32 planes
 * (8.0-8.2 ms) and all of the tensor in plane order slower everywhere
 * but 8x8 (128 x 144 x 32 x 32 11.8 -> 13.3 ms). */
#define BN_BACKWARD_BLOCK_BYTES (1024 << 10)

static void backward_train_blocks(an_bn_activation act, const float *dy, const float *x,
                                  const float *mean, const float *invstd, const float *gamma,
                                  int64_t N, int64_t C, int64_t HW, backward_channel *channels,
                                  double *sums, float *dx, float *dgamma, float *dbeta, int team)
{
    const int64_t channel_bytes = 2 * N * HW * (int64_t)sizeof(float);
    int64_t width = BN_BACKWARD_BLOCK_BYTES / (channel_bytes > 0 ? channel_bytes : 1);
    if (width < 1) width = 1;
    if (width > C) width = C;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
#ifdef _OPENMP
        const int64_t size = omp_get_num_threads(), thread = omp_get_thread_num();
#else
        const int64_t size = 1, thread = 0;
#endif
        for (int64_t c0 = 0; c0 < C; c0 += width) {
            const int64_t w = C - c0 < width ? C - c0 : width, items = N * w;
            const int64_t q0 = items * thread / size, q1 = items * (thread + 1) / size;
            backward_train_planes(act, dy, x, mean, C, HW, c0, w, q0, q1, channels, sums, NULL);
#ifdef _OPENMP
#pragma omp barrier
#endif
            backward_train_combine(sums, invstd, gamma, N, C, HW, c0 + w * thread / size,
                                   c0 + w * (thread + 1) / size, channels, dgamma, dbeta);
#ifdef _OPENMP
#pragma omp barrier
#endif
            if (dx)
                backward_train_planes(act, dy, x, mean, C, HW, c0, w, q0, q1, channels, NULL, dx);
        }
    }
}

void BN_VARIANT(an_batchnorm_backward_train_f32)(const float *dy, an_bn_activation act,
                                     const float *x, const float *mean,
                                     const float *invstd, const float *gamma,
                                     const float *beta, int64_t N, int64_t C,
                                     int64_t HW, float *dx, float *dgamma,
                                     float *dbeta, double *workspace)
{
    if (N * HW <= 0) { /* no elements: dx is empty, the sums are 0 */
        for (int64_t c = 0; c < C; ++c) {
            if (dgamma) dgamma[c] = 0.0f;
            if (dbeta) dbeta[c] = 0.0f;
        }
        return;
    }
    double *sums = workspace;
    backward_channel *channels = (backward_channel *)(workspace + 2 * N * C);
    for (int64_t c = 0; c < C; ++c) {
        channels[c].scale = gamma ? gamma[c] * invstd[c] : invstd[c];
        channels[c].shift = beta ? beta[c] : 0.0f;
    }
    int team = 1;
#ifdef _OPENMP
    if (N * C * HW > KERNEL_PARALLEL_GRAIN && !omp_in_parallel())
        team = omp_get_max_threads();
#endif
    backward_train_blocks(act, dy, x, mean, invstd, gamma, N, C, HW, channels, sums, dx, dgamma,
                          dbeta, team);
}

/* One channel of the backward with constant (running) statistics. */
static AN_ALWAYS_INLINE void backward_eval_channel_as(
    an_bn_activation act, const float *dy, const float *y, const float *x,
    const float *running_mean, const float *running_var, const float *gamma,
    float eps, int64_t N, int64_t C, int64_t HW, int64_t c, float *dx,
    float *dgamma, float *dbeta)
{
    const float inv = inv_sqrt_eps(running_var[c], eps);
    if (dgamma || dbeta) {
        double sum_g = 0.0, sum_g_dev = 0.0;
        const double m = dgamma ? (double)running_mean[c] : 0.0;
        for (int64_t n = 0; n < N; ++n) {
            const int64_t off = (n * C + c) * HW;
            const float *ys = act == AN_BN_IDENTITY ? NULL : y + off;
            /* without dgamma, x and the mean may be NULL: no dev sum */
            sum_g_and_g_dev_f64(act, dy + off, ys, dgamma ? x + off : NULL,
                                HW, m, &sum_g, &sum_g_dev, 0, 0.0f, 1.0f, 0.0f);
        }
        if (dbeta) dbeta[c] = (float)sum_g;
        if (dgamma) dgamma[c] = (float)(sum_g_dev * (double)inv);
    }
    if (dx) {
        const float k = gamma ? gamma[c] * inv : inv;
        for (int64_t n = 0; n < N; ++n) {
            const int64_t off = (n * C + c) * HW;
            const float *restrict dys = dy + off;
            const float *restrict ys = act == AN_BN_IDENTITY ? NULL : y + off;
            float *restrict dxs = dx + off;
            for (int64_t i = 0; i < HW; ++i)
                dxs[i] = masked_grad(act, dys, ys, i) * k;
        }
    }
}

static void backward_eval_channel(an_bn_activation act, const float *dy,
                                  const float *y, const float *x,
                                  const float *running_mean,
                                  const float *running_var, const float *gamma,
                                  float eps, int64_t N, int64_t C, int64_t HW,
                                  int64_t c, float *dx, float *dgamma,
                                  float *dbeta)
{
    switch (act) {
    case AN_BN_RELU:
        backward_eval_channel_as(AN_BN_RELU, dy, y, x, running_mean,
                                 running_var, gamma, eps, N, C, HW, c, dx,
                                 dgamma, dbeta);
        break;
    case AN_BN_RELU6:
        backward_eval_channel_as(AN_BN_RELU6, dy, y, x, running_mean,
                                 running_var, gamma, eps, N, C, HW, c, dx,
                                 dgamma, dbeta);
        break;
    default:
        backward_eval_channel_as(AN_BN_IDENTITY, dy, y, x, running_mean,
                                 running_var, gamma, eps, N, C, HW, c, dx,
                                 dgamma, dbeta);
        break;
    }
}

void BN_VARIANT(an_batchnorm_backward_eval_f32)(const float *dy, const float *y,
                                    an_bn_activation act, const float *x,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, float eps, int64_t N,
                                    int64_t C, int64_t HW, float *dx,
                                    float *dgamma, float *dbeta)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (N * C * HW > KERNEL_PARALLEL_GRAIN)
#endif
    for (int64_t c = 0; c < C; ++c)
        backward_eval_channel(act, dy, y, x, running_mean, running_var, gamma,
                              eps, N, C, HW, c, dx, dgamma, dbeta);
}
