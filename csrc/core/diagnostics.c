/* diagnostics.c — what the core knows about the machine and its caches. */
#include "internal.h"
#include "allocator.h"
#include "../cpu/cpu.h"
#include "../kernels/gemm.h"

#include <stdio.h>

const char *an_cpu_description(void)
{
    static _Thread_local char text[512];
    const an_cpu_info *cpu = an_cpu_info_get();
    snprintf(text, sizeof text, "%s; isa=%s (gemm %s); L1d=%zuK L2=%zuK L3=%zuK; openmp=%s threads=%d%s%s",
             cpu->model, an_isa_name(cpu->isa), an_gemm_kernel_name(), cpu->l1d_bytes / 1024,
             cpu->l2_bytes / 1024, cpu->l3_bytes / 1024, an_openmp_enabled() ? "yes" : "no",
             an_get_num_threads(), cpu->isa_warning[0] ? "; " : "", cpu->isa_warning);
    return text;
}

const char *an_isa_warning(void)
{
    return an_cpu_info_get()->isa_warning;
}

/* The tensor block cache plus every thread's GEMM packing buffers. */
size_t an_workspace_bytes(void)
{
    an_allocator_stats stats;
    an_allocator_get_stats(&stats);
    return stats.cached_bytes + an_gemm_workspace_bytes();
}

/* GEMM keeps one packing buffer per thread and can only free the calling
   thread's, so each OpenMP worker is asked to free its own. */
void an_release_workspace(void)
{
    an_gemm_release_workspace();
#ifdef _OPENMP
    if (!omp_in_parallel()) {
#pragma omp parallel num_threads(omp_get_max_threads())
        an_gemm_release_workspace();
    }
#endif
    an_allocator_release_cache();
}
