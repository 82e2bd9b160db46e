/* The batch-norm kernel prototypes (documented in batchnorm.h), with each
 * name passed through AN_BN_FN: batchnorm.h includes this with the plain
 * names, batchnorm.c again with the _avx2 / _avx512 suffixes of its
 * per-ISA builds.  No include guard on purpose. */

void AN_BN_FN(an_batchnorm_plane_moments_f32)(const float *x, int64_t planes, int64_t HW,
                                              double *moments);

void AN_BN_FN(an_batchnorm_forward_train_f32)(const float *x, const float *mean,
                                    const float *var_biased,
                                    const float *gamma, const float *beta,
                                    float eps, an_bn_activation act,
                                    int64_t N, int64_t C, int64_t HW,
                                    float *y, float *invstd_out);

void AN_BN_FN(an_batchnorm_forward_eval_f32)(const float *x, const float *running_mean,
                                   const float *running_var,
                                   const float *gamma, const float *beta,
                                   float eps, an_bn_activation act, int64_t N,
                                   int64_t C, int64_t HW, float *y);

void AN_BN_FN(an_batchnorm_backward_train_f32)(const float *dy, an_bn_activation act,
                                     const float *x, const float *mean,
                                     const float *invstd, const float *gamma,
                                     const float *beta, int64_t N, int64_t C,
                                     int64_t HW, float *dx, float *dgamma,
                                     float *dbeta, double *workspace);

void AN_BN_FN(an_batchnorm_backward_eval_f32)(const float *dy, const float *y,
                                    an_bn_activation act, const float *x,
                                    const float *running_mean,
                                    const float *running_var,
                                    const float *gamma, float eps, int64_t N,
                                    int64_t C, int64_t HW, float *dx,
                                    float *dgamma, float *dbeta);
