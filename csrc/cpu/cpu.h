/* Run-time CPU detection: SIMD features, cache sizes, model string and the
 * ISA level the compute kernels should use.
 *
 * Detection runs once, on the first call to an_cpu_info_get(); later calls
 * return the same object.  The environment variable APPEALNET_ISA
 * (generic | avx2 | avx512 | neon) lowers the chosen level, e.g. to compare kernels;
 * a level the CPU (or the OS) cannot run is never chosen: the best available
 * level is used instead and the reason is recorded in isa_warning. */
#ifndef APPEALNET_CPU_H
#define APPEALNET_CPU_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* On x86-64 the levels are ordered: a higher one implies every lower one
 * can run.  AN_ISA_NEON exists only on AArch64, beside GENERIC. */
typedef enum an_isa {
    AN_ISA_GENERIC = 0, /* portable C (auto-vectorised: SSE2, or NEON on aarch64) */
    AN_ISA_AVX2 = 1,    /* AVX2 + FMA, OS saves ymm state */
    AN_ISA_AVX512 = 2,  /* AVX-512 F/BW/DQ/VL + FMA, OS saves zmm state */
    AN_ISA_NEON = 3     /* AArch64 Advanced SIMD: the NEON GEMM micro-kernel */
} an_isa;

typedef struct an_cpu_info {
    /* Instruction-set features usable by user code (CPU support AND the OS
     * saving the corresponding register state). */
    int has_avx2;
    int has_fma;
    int has_avx512f;
    int has_avx512bw;
    int has_avx512dq;
    int has_avx512vl;
    int has_neon;

    /* Cache sizes in bytes of one cache instance as seen by one core
     * (L1d and L2 are private on all current x86/ARM server parts; L3 is
     * usually shared by l3_shared_by logical CPUs).  Never 0: defaults are
     * filled in when detection fails. */
    size_t l1d_bytes;
    size_t l2_bytes;
    size_t l3_bytes;
    int l3_shared_by;
    int caches_detected; /* 0 when the sizes above are defaults */

    char model[128]; /* CPU brand string, "unknown" if not found */

    an_isa isa_best;  /* best level this CPU/OS can run */
    an_isa isa;       /* level the kernels use (APPEALNET_ISA or forced) */
    char isa_warning[192]; /* empty unless a requested level was refused */
} an_cpu_info;

/* Detects on first use; always returns the same non-NULL pointer. */
const an_cpu_info *an_cpu_info_get(void);

/* "generic", "avx2", "avx512", "neon" ("unknown" for out-of-range values). */
const char *an_isa_name(an_isa isa);

/* For tests and benchmarks: choose the kernels' ISA level.  A level this CPU
 * cannot run (above isa_best, or another architecture's) gives isa_best
 * (with isa_warning set).  Must not be called
 * while kernels run on other threads. */
void an_cpu_force_isa(an_isa isa);

/* Undo an_cpu_force_isa: back to the APPEALNET_ISA / automatic choice. */
void an_cpu_reset_isa(void);

#ifdef __cplusplus
}
#endif

#endif /* APPEALNET_CPU_H */
