/* Standalone test for csrc/core/work_share.h: items of a parallel loop
 * handed out at run time.
 *
 * Build and run from the repository root:
 *   gcc -std=c11 -O2 -fopenmp -Icsrc tests/c/test_work_share.c -o /tmp/test_work_share && /tmp/test_work_share
 *
 * What must hold, for every team size and item count tried:
 *   - every item is handed out exactly once;
 *   - a thread takes its own share of the static split first, in order, then
 *     the items left in the following shares;
 *   - a thread that starts late finds its share taken by the others, who
 *     then have done more items than the static split gives them;
 *   - more threads than counters (AN_WORK_SHARE_MAX_SHARES) still hand out
 *     every item once. */
#define _POSIX_C_SOURCE 199309L
#include "core/work_share.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static long g_checks, g_failures;

static void check(int ok, const char *what, int team, long items)
{
    ++g_checks;
    if (!ok) {
        ++g_failures;
        printf("FAIL: %s (team %d, %ld items)\n", what, team, items);
    }
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

#define MAX_THREADS 80

/* Every item once, and each thread's items from its own share in
 * increasing order. */
static void test_each_item_once(int team, long items)
{
    atomic_int *seen = calloc((size_t)(items > 0 ? items : 1), sizeof *seen);
    long own_out_of_order[MAX_THREADS];
    if (!seen) {
        printf("FAIL: out of memory\n");
        ++g_failures;
        return;
    }
    for (int t = 0; t < team; ++t) own_out_of_order[t] = 0;
    an_work_share share;
    an_work_share_init(&share, items, team);
    int got_team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#pragma omp single
        got_team = omp_get_num_threads();
#endif
        const int s = t % (team < AN_WORK_SHARE_MAX_SHARES ? team : AN_WORK_SHARE_MAX_SHARES);
        const int shares = team < AN_WORK_SHARE_MAX_SHARES ? team : AN_WORK_SHARE_MAX_SHARES;
        const long begin = items * s / shares, end = items * (s + 1) / shares;
        an_work_cursor cursor = an_work_cursor_for(&share, t);
        long previous_own = -1;
        for (int64_t item; (item = an_work_next(&share, &cursor)) >= 0;) {
            atomic_fetch_add(&seen[item], 1);
            if (item >= begin && item < end) {
                if (item <= previous_own) own_out_of_order[t]++;
                previous_own = (long)item;
            }
        }
    }
    int once = 1;
    for (long i = 0; i < items; ++i) once &= atomic_load(&seen[i]) == 1;
    check(once, "an item was handed out twice or never", team, items);
    if (got_team == team && team <= AN_WORK_SHARE_MAX_SHARES) {
        int ordered = 1;
        for (int t = 0; t < team; ++t) ordered &= own_out_of_order[t] == 0;
        check(ordered, "a thread took items of its own share out of order", team, items);
    }
    free(seen);
}

/* Thread 0 starts 50 ms late: the others take its share and do more than
 * the static split's items; everything is still done once. */
static void test_late_thread(int team, long items)
{
    atomic_int *seen = calloc((size_t)items, sizeof *seen);
    long done[MAX_THREADS] = {0};
    if (!seen) {
        printf("FAIL: out of memory\n");
        ++g_failures;
        return;
    }
    an_work_share share;
    an_work_share_init(&share, items, team);
    int got_team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#pragma omp single nowait
        got_team = omp_get_num_threads();
#endif
        if (t == 0) sleep_ms(50);
        an_work_cursor cursor = an_work_cursor_for(&share, t);
        for (int64_t item; (item = an_work_next(&share, &cursor)) >= 0;) {
            atomic_fetch_add(&seen[item], 1);
            done[t]++;
        }
    }
    int once = 1;
    for (long i = 0; i < items; ++i) once &= atomic_load(&seen[i]) == 1;
    check(once, "with a late thread, an item was handed out twice or never", team, items);
    if (got_team == team) {
        long others = 0;
        for (int t = 1; t < team; ++t) others += done[t];
        const long static_others = items - items / team;
        check(done[0] < items / team && others > static_others,
              "the punctual threads did not take over the late thread's share", team, items);
    }
    free(seen);
}

/* The order one thread takes items in, with no other thread taking any:
 * 10 items over 3 shares ([0, 3), [3, 6), [6, 10)), thread 1 takes its own
 * share first, then share 2's, then share 0's. */
static void test_order_alone(void)
{
    an_work_share share;
    an_work_share_init(&share, 10, 3);
    an_work_cursor cursor = an_work_cursor_for(&share, 1);
    static const long expect[] = {3, 4, 5, 6, 7, 8, 9, 0, 1, 2, -1, -1};
    int ok = 1;
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; ++i)
        ok &= an_work_next(&share, &cursor) == expect[i];
    check(ok, "one thread alone does not take its own share first, then the next ones", 3, 10);
    /* two threads interleaved by hand: thread 0 runs out and takes from
       the front of thread 1's share, which thread 1 then does not get */
    an_work_share_init(&share, 6, 2);
    an_work_cursor c0 = an_work_cursor_for(&share, 0), c1 = an_work_cursor_for(&share, 1);
    ok = an_work_next(&share, &c1) == 3;
    for (long i = 0; i < 3; ++i) ok &= an_work_next(&share, &c0) == i;
    ok &= an_work_next(&share, &c0) == 4 && an_work_next(&share, &c1) == 5;
    ok &= an_work_next(&share, &c1) == -1 && an_work_next(&share, &c0) == -1;
    check(ok, "a thread that ran out does not take the next item of the other share", 2, 6);
}

int main(void)
{
    test_order_alone();
    static const int teams[] = {1, 2, 3, 4, 7, 33, 70};
    static const long item_counts[] = {0, 1, 2, 5, 64, 1000, 100003};
    for (size_t ti = 0; ti < sizeof teams / sizeof teams[0]; ++ti)
        for (size_t ii = 0; ii < sizeof item_counts / sizeof item_counts[0]; ++ii)
            test_each_item_once(teams[ti], item_counts[ii]);
#ifdef _OPENMP
    /* a sleeping thread: the others must take its work */
    test_late_thread(2, 2000);
    test_late_thread(3, 3001);
#endif
    /* work-share init clamps what it is given */
    an_work_share share;
    an_work_share_init(&share, -5, 0);
    an_work_cursor cursor = an_work_cursor_for(&share, 0);
    check(an_work_next(&share, &cursor) == -1, "a negative item count hands out an item", 0, -5);
    printf("work_share: %ld checks, %ld failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
