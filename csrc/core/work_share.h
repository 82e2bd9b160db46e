/*
 * work_share.h — items of a parallel loop handed out at run time, each
 * thread starting on its own share.
 *
 * A static split (thread t takes items [n t / T, n (t + 1) / T)) leaves the
 * team waiting for its slowest core, and cores do not run at one speed: on a
 * shared host a busy neighbour slows one of them by 10-25% for seconds at a
 * time, and an edge SoC pairs big cores with little ones.  Here each thread
 * first takes the items of its own share, in order (the data it wrote in the
 * previous phase stays in its cache), then the remaining items of the
 * others' shares.  Every item is taken exactly once, whoever takes it; a
 * loop whose items each compute their own output is therefore bit-identical
 * to the static split.
 *
 * Set up with an_work_share_init on one thread before the parallel region
 * (it holds one counter per share, each on a cache line of its own).
 */
#ifndef APPEALNET_WORK_SHARE_H
#define APPEALNET_WORK_SHARE_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

/* Threads past this many share the counters of the first ones (thread t
   starts on share t % AN_WORK_SHARE_MAX_SHARES): still correct, less local.
   32 keeps the counters at 2 KiB, on the caller's stack. */
#define AN_WORK_SHARE_MAX_SHARES 32

typedef struct {
    alignas(64) atomic_llong taken; /* items of this share handed out so far */
} an_work_share_counter;

typedef struct {
    an_work_share_counter share[AN_WORK_SHARE_MAX_SHARES];
    int64_t items;
    int shares;
} an_work_share;

/* Thread-side state: which share it is taking from now. */
typedef struct {
    int start, visited;
} an_work_cursor;

static inline void an_work_share_init(an_work_share *w, int64_t items, int team)
{
    w->items = items < 0 ? 0 : items;
    w->shares = team < 1 ? 1 : team > AN_WORK_SHARE_MAX_SHARES ? AN_WORK_SHARE_MAX_SHARES : team;
    for (int s = 0; s < w->shares; ++s) atomic_init(&w->share[s].taken, 0);
}

static inline an_work_cursor an_work_cursor_for(const an_work_share *w, int thread)
{
    an_work_cursor c = {thread % w->shares, 0};
    return c;
}

/* The next item for the thread holding `c`, or -1 when every item is taken. */
static inline int64_t an_work_next(an_work_share *w, an_work_cursor *c)
{
    for (; c->visited < w->shares; ++c->visited) {
        const int s = (c->start + c->visited) % w->shares;
        const int64_t begin = w->items * s / w->shares, end = w->items * (s + 1) / w->shares;
        if (begin >= end) continue;
        /* relaxed: the items' data reach other threads through the
           region's barriers, not through this counter */
        const int64_t i = atomic_fetch_add_explicit(&w->share[s].taken, 1, memory_order_relaxed);
        if (begin + i < end) return begin + i;
    }
    return -1;
}

#endif
