/* isa_variants.h — one C body built for several ISAs in the same file.
 *
 * AN_FOR_EACH_ISA(define) expands define(suffix, attribute) once per build:
 * (generic, ) everywhere, plus (avx2, target attribute) and (avx512, ...)
 * on x86-64 with GCC or Clang.  AN_BY_ISA(prefix) picks prefix##suffix for
 * the ISA selected at run time (an_cpu_info_get()->isa, which honours
 * APPEALNET_ISA).  The bodies are plain C, so every build gives the same
 * results; the wider builds just vectorise better. */
#ifndef APPEALNET_KERNELS_ISA_VARIANTS_H
#define APPEALNET_KERNELS_ISA_VARIANTS_H

#include "cpu/cpu.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define AN_HAVE_X86_VARIANTS 1
#define AN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define AN_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define AN_FOR_EACH_ISA(define) define(generic, ) define(avx2, AN_TARGET_AVX2) define(avx512, AN_TARGET_AVX512)
#define AN_BY_ISA(prefix)                                                                        \
    (an_cpu_info_get()->isa == AN_ISA_AVX512 ? prefix##avx512                                    \
     : an_cpu_info_get()->isa == AN_ISA_AVX2 ? prefix##avx2                                      \
                                             : prefix##generic)
#else
#define AN_FOR_EACH_ISA(define) define(generic, )
#define AN_BY_ISA(prefix) prefix##generic
#endif

#if defined(__GNUC__)
#define AN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AN_ALWAYS_INLINE inline
#endif

#endif
