"""The machine a benchmark runs on, measured in the same run: the CPU line
(model, the ISA chosen at run time, cache sizes, threads) and one core's
fp32 FMA peak, from a small C loop compiled and run on the spot.

Every script in bench/ prints both before its figures (print_peak), so a
results file says what the hardware could do while the numbers were taken:
on a shared machine the peak itself moves by several percent over minutes.

    peak = print_peak(an._C.cpu_description(), threads)

The loop keeps more independent FMA chains than the FMA units' latency
times their count (16 x 512-bit, 12 x 256-bit, 24 x 128-bit on AArch64), so
the units limit the rate; it is timed on the thread's CPU clock (time the
scheduler takes the core away does not count), best of 7.  No C compiler,
or an ISA without a vector FMA loop here (the portable build on x86):
"not measured"."""
import os
import shutil
import subprocess
import tempfile

PEAK_SOURCE = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <string.h>
#include <time.h>
/* -O3 matters: at -O2 gcc keeps the accumulators in memory. */
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
                          return t.tv_sec + 1e-9 * t.tv_nsec; }
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f,fma"))) static double avx512(long n) {
    __m512 a[16]; const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps((float)i);
    double t = now();
    for (long k = 0; k < n; k++) for (int i = 0; i < 16; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    t = now() - t;
    for (int i = 1; i < 16; i++) a[0] = _mm512_add_ps(a[0], a[i]);
    volatile float s = _mm512_reduce_add_ps(a[0]); (void)s;
    return n * 16.0 * 16 * 2 / t * 1e-9; }
__attribute__((target("avx2,fma"))) static double avx2(long n) {
    __m256 a[12]; const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    double t = now();
    for (long k = 0; k < n; k++) for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    t = now() - t;
    float o[8]; for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_storeu_ps(o, a[0]); volatile float s = o[0]; (void)s;
    return n * 12.0 * 8 * 2 / t * 1e-9; }
static double loop(const char *isa, long n) {
    if (strcmp(isa, "avx512") == 0) return avx512(n);
    if (strcmp(isa, "avx2") == 0) return avx2(n);
    return -1; }
#elif defined(__aarch64__)
#include <arm_neon.h>
static double neon(long n) {
    float32x4_t a[24]; const float32x4_t x = vdupq_n_f32(0.999999f), y = vdupq_n_f32(1e-7f);
    for (int i = 0; i < 24; i++) a[i] = vdupq_n_f32((float)i);
    double t = now();
    for (long k = 0; k < n; k++) for (int i = 0; i < 24; i++) a[i] = vfmaq_f32(y, a[i], x);
    t = now() - t;
    for (int i = 1; i < 24; i++) a[0] = vaddq_f32(a[0], a[i]);
    volatile float s = vgetq_lane_f32(a[0], 0); (void)s;
    return n * 24.0 * 4 * 2 / t * 1e-9; }
static double loop(const char *isa, long n) { return strcmp(isa, "neon") == 0 ? neon(n) : -1; }
#else
static double loop(const char *isa, long n) { (void)isa; (void)n; return -1; }
#endif
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    double best = 0;
    for (int r = 0; r < 7; r++) { double g = loop(argv[1], 20000000);
                                  if (g < 0) return 3;
                                  if (g > best) best = g; }
    printf("%.2f\n", best); return 0; }
"""

# the ISA names of appealnet's cpu line that have a loop above
PEAK_ISAS = ("avx512", "avx2", "neon")


def isa_of(cpu_description):
    """The ISA level in appealnet's cpu line ("...; isa=avx512 (gemm ...)")."""
    if "isa=" not in cpu_description:
        return "generic"
    return cpu_description.split("isa=")[1].split()[0].rstrip(";")


def measure_peak(isa):
    """One core's FMA peak in GFLOP/s for the ISA our GEMM uses (None if we
    cannot compile the loop or the ISA has no vector FMA loop here)."""
    if isa not in PEAK_ISAS:
        return None
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "peak.c"), os.path.join(tmp, "peak")
        with open(src, "w") as f:
            f.write(PEAK_SOURCE)
        build = subprocess.run([cc, "-std=c11", "-O3", src, "-o", exe], capture_output=True, text=True)
        if build.returncode != 0:
            return None
        run = subprocess.run([exe, isa], capture_output=True, text=True, timeout=120)
        return float(run.stdout.strip()) if run.returncode == 0 else None


def print_peak(cpu_description, threads):
    """Prints the cpu line and the FMA peak (one core, and `threads` cores at
    that rate); returns one core's peak in GFLOP/s, or None."""
    isa = isa_of(cpu_description)
    print(f"cpu: {cpu_description}")
    peak = measure_peak(isa)
    if peak is None:
        print(f"FMA peak: not measured (no vector FMA loop for isa={isa}, or no C compiler)")
    else:
        print(f"FMA peak of one core ({isa} loop, thread CPU time, best of 7): {peak:.1f} GFLOP/s"
              f"; {threads} core(s): {peak * threads:.1f} GFLOP/s", flush=True)
    return peak
