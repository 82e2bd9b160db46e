/* The batch-norm kernels built for AVX-512 (see batchnorm_impl.h). */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#define BN_VARIANT(name) name##_avx512
#include "batchnorm_impl.h"
#else
typedef int an_batchnorm_avx512_unused; /* ISO C wants a declaration */
#endif
