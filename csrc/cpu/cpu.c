/* Run-time CPU detection; see cpu.h.
 *
 * x86: features from __builtin_cpu_supports, confirmed by XGETBV because a
 * CPU can advertise AVX/AVX-512 while the OS does not save ymm/zmm state on
 * context switches (then using them would corrupt registers).  Cache sizes
 * come from CPUID leaf 4 (Intel) or 0x8000001D (AMD), then sysfs, then
 * defaults. */
#include "cpu/cpu.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define AN_CPU_X86 1
#include <cpuid.h>
#endif

/* Conservative sizes for a CPU we could not inspect: small enough that the
 * blocking derived from them never thrashes on any recent core. */
#define AN_DEFAULT_L1D (32u * 1024u)
#define AN_DEFAULT_L2 (512u * 1024u)
#define AN_DEFAULT_L3 (8u * 1024u * 1024u)

static an_cpu_info g_info;
/* 0 = not detected, 1 = detection in progress, 2 = g_info published. */
static atomic_int g_state = 0;

const char *an_isa_name(an_isa isa)
{
    switch (isa) {
    case AN_ISA_GENERIC: return "generic";
    case AN_ISA_AVX2: return "avx2";
    case AN_ISA_AVX512: return "avx512";
    case AN_ISA_NEON: return "neon";
    }
    return "unknown";
}

static void copy_string(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Collapse runs of blanks and trim: brand strings are space padded. */
static void tidy_model_string(char *s)
{
    char *out = s;
    int pending_space = 0;
    for (const char *in = s; *in; ++in) {
        if (*in == ' ' || *in == '\t' || *in == '\n' || *in == '\r') {
            pending_space = (out != s);
            continue;
        }
        if (pending_space) *out++ = ' ';
        pending_space = 0;
        *out++ = *in;
    }
    *out = '\0';
}

#ifdef AN_CPU_X86
static unsigned long long read_xcr0(void)
{
    unsigned int eax, edx;
    /* Inline asm rather than _xgetbv() so no -mxsave flag is needed; only
     * reached after CPUID reported OSXSAVE, so the instruction exists. */
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect_x86_features(an_cpu_info *info)
{
    unsigned int eax, ebx, ecx, edx;
    int os_ymm = 0, os_zmm = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 27))) {
        unsigned long long xcr0 = read_xcr0();
        os_ymm = (xcr0 & 0x6) == 0x6;          /* XMM + YMM */
        os_zmm = (xcr0 & 0xE6) == 0xE6;        /* + opmask, ZMM0-15 hi, ZMM16-31 */
    }
    __builtin_cpu_init();
    info->has_fma = os_ymm && __builtin_cpu_supports("fma");
    info->has_avx2 = os_ymm && __builtin_cpu_supports("avx2");
    info->has_avx512f = os_zmm && __builtin_cpu_supports("avx512f");
    info->has_avx512bw = os_zmm && __builtin_cpu_supports("avx512bw");
    info->has_avx512dq = os_zmm && __builtin_cpu_supports("avx512dq");
    info->has_avx512vl = os_zmm && __builtin_cpu_supports("avx512vl");
}

static void detect_x86_model(an_cpu_info *info)
{
    unsigned int regs[12];
    unsigned int max_ext = __get_cpuid_max(0x80000000u, NULL);
    if (max_ext < 0x80000004u) return;
    for (unsigned int i = 0; i < 3; ++i)
        __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2],
                regs[4 * i + 3]);
    char brand[49];
    memcpy(brand, regs, 48);
    brand[48] = '\0';
    tidy_model_string(brand);
    if (brand[0]) copy_string(info->model, sizeof info->model, brand);
}

/* Leaf 4 (Intel) and 0x8000001D (AMD) share one layout: one sub-leaf per
 * cache, type 0 ends the list. */
static int detect_x86_caches_deterministic(an_cpu_info *info, unsigned int leaf)
{
    int found = 0;
    for (unsigned int sub = 0; sub < 16; ++sub) {
        unsigned int eax, ebx, ecx, edx;
        __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
        unsigned int type = eax & 0x1f; /* 1 data, 2 instruction, 3 unified */
        if (type == 0) break;
        if (type == 2) continue;
        unsigned int level = (eax >> 5) & 0x7;
        size_t ways = ((ebx >> 22) & 0x3ff) + 1;
        size_t partitions = ((ebx >> 12) & 0x3ff) + 1;
        size_t line = (ebx & 0xfff) + 1;
        size_t sets = (size_t)ecx + 1;
        size_t bytes = ways * partitions * line * sets;
        int shared_by = (int)((eax >> 14) & 0xfff) + 1;
        if (level == 1) { info->l1d_bytes = bytes; found = 1; }
        else if (level == 2) { info->l2_bytes = bytes; found = 1; }
        else if (level == 3) {
            info->l3_bytes = bytes;
            info->l3_shared_by = shared_by;
            found = 1;
        }
    }
    return found;
}

static int detect_x86_caches(an_cpu_info *info)
{
    unsigned int eax, ebx, ecx, edx;
    unsigned int max_basic = __get_cpuid_max(0, NULL);
    unsigned int max_ext = __get_cpuid_max(0x80000000u, NULL);
    __cpuid(0, eax, ebx, ecx, edx);
    int is_amd_like = (ebx == 0x68747541u /* "Auth" enticAMD */) ||
                      (ebx == 0x6f677948u /* "Hygo" nGenuine */);
    if (is_amd_like) {
        if (max_ext >= 0x80000001u) {
            __cpuid(0x80000001u, eax, ebx, ecx, edx);
            int topology_ext = (ecx >> 22) & 1;
            if (topology_ext && max_ext >= 0x8000001Du &&
                detect_x86_caches_deterministic(info, 0x8000001Du))
                return 1;
        }
        /* Older AMD: legacy descriptors, sizes in KiB / 512 KiB units. */
        int found = 0;
        if (max_ext >= 0x80000005u) {
            __cpuid(0x80000005u, eax, ebx, ecx, edx);
            if (ecx >> 24) { info->l1d_bytes = (size_t)(ecx >> 24) * 1024; found = 1; }
        }
        if (max_ext >= 0x80000006u) {
            __cpuid(0x80000006u, eax, ebx, ecx, edx);
            if (ecx >> 16) { info->l2_bytes = (size_t)(ecx >> 16) * 1024; found = 1; }
            if (edx >> 18) { info->l3_bytes = (size_t)(edx >> 18) * 512 * 1024; found = 1; }
        }
        return found;
    }
    if (max_basic >= 4) return detect_x86_caches_deterministic(info, 4);
    return 0;
}
#endif /* AN_CPU_X86 */

/* Parses sysfs sizes such as "48K", "2048K", "8M". */
static size_t parse_cache_size(const char *text)
{
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 10);
    if (end == text) return 0;
    if (*end == 'K' || *end == 'k') value *= 1024ull;
    else if (*end == 'M' || *end == 'm') value *= 1024ull * 1024ull;
    else if (*end == 'G' || *end == 'g') value *= 1024ull * 1024ull * 1024ull;
    return (size_t)value;
}

static int read_small_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

static int detect_sysfs_caches(an_cpu_info *info)
{
    int found = 0;
    for (int index = 0; index < 8; ++index) {
        char path[96], level_text[16], type_text[32], size_text[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        if (!read_small_file(path, level_text, sizeof level_text)) break;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
        if (!read_small_file(path, type_text, sizeof type_text)) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        if (!read_small_file(path, size_text, sizeof size_text)) continue;
        if (strncmp(type_text, "Instruction", 11) == 0) continue;
        size_t bytes = parse_cache_size(size_text);
        if (bytes == 0) continue;
        int level = atoi(level_text);
        if (level == 1) { info->l1d_bytes = bytes; found = 1; }
        else if (level == 2) { info->l2_bytes = bytes; found = 1; }
        else if (level == 3) { info->l3_bytes = bytes; found = 1; }
    }
    return found;
}

static void detect_proc_model(an_cpu_info *info)
{
    static const char *const keys[] = {"model name", "Hardware", "Processor", "cpu model"};
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    char best[128] = "";
    int best_rank = (int)(sizeof keys / sizeof keys[0]);
    while (fgets(line, sizeof line, f)) {
        for (int rank = 0; rank < best_rank; ++rank) {
            size_t key_len = strlen(keys[rank]);
            if (strncmp(line, keys[rank], key_len) != 0) continue;
            const char *colon = strchr(line + key_len, ':');
            if (!colon) continue;
            copy_string(best, sizeof best, colon + 1);
            tidy_model_string(best);
            if (best[0]) best_rank = rank;
            break;
        }
    }
    fclose(f);
    if (best[0]) copy_string(info->model, sizeof info->model, best);
}

static an_isa best_isa(const an_cpu_info *info)
{
    if (info->has_avx512f && info->has_avx512bw && info->has_avx512dq &&
        info->has_avx512vl && info->has_fma)
        return AN_ISA_AVX512;
    if (info->has_avx2 && info->has_fma) return AN_ISA_AVX2;
#if defined(__aarch64__) /* the NEON kernel uses A64-only lane FMAs */
    if (info->has_neon) return AN_ISA_NEON;
#endif
    return AN_ISA_GENERIC;
}

/* The portable level always runs; NEON only where it is the best level
 * (AArch64); elsewhere the levels up to the best, which on x86 is at most
 * AVX-512 (so never NEON). */
static int isa_runs(const an_cpu_info *info, int isa)
{
    if (isa == (int)AN_ISA_GENERIC) return 1;
    if (info->isa_best == AN_ISA_NEON) return isa == (int)AN_ISA_NEON;
    return isa <= (int)info->isa_best;
}

static int equals_ignoring_case(const char *a, const char *b)
{
    for (; *a && *b; ++a, ++b) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char cb = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (ca != cb) return 0;
    }
    return *a == *b;
}

/* Sets info->isa from `requested` (negative = automatic), never to a level
 * this CPU cannot run; records why a request was not honoured. */
static void choose_isa(an_cpu_info *info, int requested, const char *source)
{
    info->isa_warning[0] = '\0';
    if (requested < 0) {
        info->isa = info->isa_best;
    } else if (!isa_runs(info, requested)) {
        info->isa = info->isa_best;
        snprintf(info->isa_warning, sizeof info->isa_warning,
                 "%s requested ISA '%s', which this CPU/OS cannot run (its best is '%s', which the C "
                 "library runs instead)",
                 source, an_isa_name((an_isa)requested), an_isa_name(info->isa_best));
    } else {
        info->isa = (an_isa)requested;
    }
}

static void choose_isa_from_environment(an_cpu_info *info)
{
    const char *value = getenv("APPEALNET_ISA");
    if (!value || !value[0] || equals_ignoring_case(value, "auto")) {
        choose_isa(info, -1, "");
        return;
    }
    static const struct { const char *name; an_isa isa; } names[] = {
        {"generic", AN_ISA_GENERIC}, {"avx2", AN_ISA_AVX2}, {"avx512", AN_ISA_AVX512},
        {"neon", AN_ISA_NEON}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        if (equals_ignoring_case(value, names[i].name)) {
            choose_isa(info, (int)names[i].isa, "APPEALNET_ISA");
            return;
        }
    }
    choose_isa(info, -1, "");
    char shown[32];
    copy_string(shown, sizeof shown, value);
    snprintf(info->isa_warning, sizeof info->isa_warning,
             "unknown APPEALNET_ISA value '%s' (expected generic|avx2|avx512|neon; the C library "
             "runs '%s', the best level)",
             shown, an_isa_name(info->isa));
}

static void detect(an_cpu_info *info)
{
    memset(info, 0, sizeof *info);
    copy_string(info->model, sizeof info->model, "unknown");
    info->l3_shared_by = 1;

#ifdef AN_CPU_X86
    detect_x86_features(info);
    detect_x86_model(info);
    info->caches_detected = detect_x86_caches(info);
#endif
#if defined(__aarch64__) || defined(__ARM_NEON)
    info->has_neon = 1; /* Advanced SIMD is mandatory on AArch64 */
#endif
    if (!info->caches_detected) info->caches_detected = detect_sysfs_caches(info);
    if (strcmp(info->model, "unknown") == 0) detect_proc_model(info);

    if (info->l1d_bytes == 0) info->l1d_bytes = AN_DEFAULT_L1D;
    if (info->l2_bytes == 0) info->l2_bytes = AN_DEFAULT_L2;
    if (info->l3_bytes == 0) info->l3_bytes = AN_DEFAULT_L3;

    info->isa_best = best_isa(info);
    choose_isa_from_environment(info);
}

const an_cpu_info *an_cpu_info_get(void)
{
    if (atomic_load_explicit(&g_state, memory_order_acquire) == 2) return &g_info;
    int expected = 0;
    if (atomic_compare_exchange_strong(&g_state, &expected, 1)) {
        detect(&g_info);
        atomic_store_explicit(&g_state, 2, memory_order_release);
    } else {
        /* Another thread is detecting: takes microseconds, so just wait. */
        while (atomic_load_explicit(&g_state, memory_order_acquire) != 2) {
        }
    }
    return &g_info;
}

void an_cpu_force_isa(an_isa isa)
{
    an_cpu_info_get();
    int requested = (int)isa;
    if (requested < (int)AN_ISA_GENERIC) requested = (int)AN_ISA_GENERIC;
    choose_isa(&g_info, requested, "an_cpu_force_isa");
}

void an_cpu_reset_isa(void)
{
    an_cpu_info_get();
    choose_isa_from_environment(&g_info);
}
