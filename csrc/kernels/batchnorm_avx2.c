/* The batch-norm kernels built for AVX2 (see batchnorm_impl.h). */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define BN_VARIANT(name) name##_avx2
#include "batchnorm_impl.h"
#else
typedef int an_batchnorm_avx2_unused; /* ISO C wants a declaration */
#endif
