/* depthwise_rows_impl.h — depthwise.c's kernels whose vectors cross lanes
 * (the 3x3 row kernels and the flattened narrow planes), for one vector
 * width.  depthwise.c includes it once per width with ROW_LANES (16 or 8)
 * and ROW_IOTA (the lane indices) defined; every function gets the width as
 * a suffix (ROW_FN(rows3x3_s1) is rows3x3_s1_L16 or rows3x3_s1_L8).  Each
 * output is the same sum in the same order at either width, so the widths
 * agree bit for bit; an ISA takes the width whose shuffles it has in
 * registers (AVX2 built the 16-lane ones through the stack). */
#define ROW_CAT_(a, b) a##b
#define ROW_CAT(a, b) ROW_CAT_(a, b)
#define row_vec ROW_CAT(an_vec, ROW_LANES)
#define row_mask ROW_CAT(an_mask, ROW_LANES)
#define row_load ROW_CAT(row_vec, _load)
#define row_store ROW_CAT(row_vec, _store)
#define row_activate ROW_CAT(row_vec, _activate)
#define ROW_FN(name) ROW_CAT(name##_L, ROW_LANES)

/* the 9 weights, each in every lane */
static AN_ALWAYS_INLINE void ROW_FN(splat_kernel)(const float *wk, row_vec w[9])
{
    AN_UNROLL
    for (int t = 0; t < 9; ++t) w[t] = (row_vec){0} + wk[t];
}

/* acc + the three taps of kernel row k on one input row, in tap order */
static AN_ALWAYS_INLINE row_vec ROW_FN(add_kernel_row)(row_vec acc, const row_vec w[9], int k, row_vec left,
                                               row_vec mid, row_vec right)
{
    acc += w[3 * k] * left;
    acc += w[3 * k + 1] * mid;
    acc += w[3 * k + 2] * right;
    return acc;
}

/* Rows [oh0, oh0 + ROWS) of a 3x3, stride-1, padding-1 plane whose width W
 * is a multiple of ROW_LANES, read straight from x: the sums taps3x3 forms
 * on the zero-framed plane, in its order, with the frame's zeros made in
 * registers (a vector shifted in from zero at the row ends, a zero row above
 * and below) instead of a framed copy.  The copy's unaligned stores, read
 * back at once, had cost as much as the arithmetic; and one row at a time
 * left a 9-add dependency chain per vector exposed (about 1250 cycles per
 * 32x32 plane).  Here the ROWS x W/ROW_LANES sums are independent chains and each
 * of the ROWS + 2 input rows is loaded once for all the output rows. */
static AN_ALWAYS_INLINE void ROW_FN(rows3x3_s1)(const float *restrict xp, int64_t H, int64_t W,
                                        int64_t oh0, const int ROWS,
                                        const float *restrict wk, float b,
                                        const int accumulate, const int act, float *restrict y)
{
    const row_vec zero = {0};
    const row_mask from_left = ROW_IOTA + (ROW_LANES - 1);
    const row_mask from_right = ROW_IOTA + 1;
    row_vec w[9];
    ROW_FN(splat_kernel)(wk, w);
    for (int64_t ow = 0; ow < W; ow += ROW_LANES) {
        row_vec acc[ROW_BLOCK];
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r)
            acc[r] = accumulate ? row_load(y + r * W + ow) : zero + b;
        /* input row oh0 - 1 + i feeds output row oh0 + r through kernel row i - r */
        AN_UNROLL
        for (int i = 0; i < ROWS + 2; ++i) {
            const int64_t ih = oh0 - 1 + i;
            row_vec left = zero, mid = zero, right = zero;
            if (ih >= 0 && ih < H) {
                const float *in = xp + ih * W + ow;
                mid = row_load(in);
                left = ow == 0 ? __builtin_shuffle(zero, mid, from_left) : row_load(in - 1);
                right = ow + ROW_LANES == W ? __builtin_shuffle(mid, zero, from_right)
                                            : row_load(in + 1);
            }
            AN_UNROLL
            for (int r = 0; r < ROWS; ++r)
                if (i - r >= 0 && i - r <= 2)
                    acc[r] = ROW_FN(add_kernel_row)(acc[r], w, i - r, left, mid, right);
        }
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r) row_store(y + r * W + ow, row_activate(acc[r], act));
    }
}

/* Rows [oh0, oh0 + ROWS) of a 3x3, stride-2, padding-1 plane with OW a
 * multiple of ROW_LANES (W = 2 OW), read straight from x as rows3x3_s1
 * does: each pair of input vectors is split into its even columns (the
 * centre tap) and odd columns (the right tap), and the left tap is the odd
 * columns shifted by one, the first taken from the vector before (or the
 * frame's zero).  The even/odd-column copy this replaces ran a 144x32x32
 * layer at a third of the stride-1 layer's speed per output. */
static AN_ALWAYS_INLINE void ROW_FN(rows3x3_s2)(const float *restrict xp, int64_t H, int64_t W,
                                        int64_t oh0, const int ROWS,
                                        const float *restrict wk, float b, const int act,
                                        float *restrict y)
{
    const int64_t OW = W / 2;
    const row_vec zero = {0};
    const row_mask from_left = ROW_IOTA + (ROW_LANES - 1);
    const row_mask evens = ROW_IOTA * 2;
    const row_mask odds = ROW_IOTA * 2 + 1;
    row_vec w[9];
    ROW_FN(splat_kernel)(wk, w);
    for (int64_t ow = 0; ow < OW; ow += ROW_LANES) {
        row_vec acc[ROW_BLOCK];
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r) acc[r] = zero + b;
        /* input row 2 oh0 - 1 + i feeds output row oh0 + r through kernel row i - 2 r */
        AN_UNROLL
        for (int i = 0; i < 2 * ROWS + 1; ++i) {
            const int64_t ih = 2 * oh0 - 1 + i;
            row_vec left = zero, mid = zero, right = zero;
            if (ih >= 0 && ih < H) {
                const float *in = xp + ih * W + 2 * ow;
                const row_vec lo = row_load(in), hi = row_load(in + ROW_LANES);
                mid = __builtin_shuffle(lo, hi, evens);
                right = __builtin_shuffle(lo, hi, odds);
                left = __builtin_shuffle(ow == 0 ? zero : row_load(in - ROW_LANES), right, from_left);
            }
            AN_UNROLL
            for (int r = 0; r < ROWS; ++r)
                if (i - 2 * r >= 0 && i - 2 * r <= 2)
                    acc[r] = ROW_FN(add_kernel_row)(acc[r], w, i - 2 * r, left, mid, right);
        }
        AN_UNROLL
        for (int r = 0; r < ROWS; ++r) row_store(y + r * OW + ow, row_activate(acc[r], act));
    }
}

/* ---- Narrow planes, flattened ----------------------------------------- *
 * A 3x3, stride-1, padding-1 plane 4 or 8 wide (the 4x4 and 8x8 stages of
 * MobileNetV2) is read as one flat run of H*W floats, ROW_LANES outputs per vector:
 * output o = oh*W + ow takes tap (i, j) from flat position o + (i-1)*W +
 * (j-1), the same offset for every lane.  What the offset gets wrong at the
 * plane's edges reads zero: rows above and below fall in a zero pad at each
 * end of the run, and a tap that would wrap into the neighbouring row (the
 * left tap at ow = 0, the right one at ow = W-1) reads from a copy of the
 * plane whose column W-1 (for the left tap) or 0 (for the right one) is
 * zeroed: the column it would wrap to, which no in-range tap of that kind
 * reads.  So each output sums its start (the bias, or the value it
 * accumulates onto) and w * x over the 9 taps in row-major order, the
 * frame's taps adding w * 0: the sums of the framed and channels-last paths,
 * bit for bit, without the latter's transposes (two thirds of its time on a
 * 576x8x8 layer) and with the activation applied in registers.  Vectors are
 * taken four at a time (at 16 lanes four 4x4 planes, two 8x4 or one 8x8; at
 * 8, two 4x4 planes or half an 8x8), so four
 * independent sums hide the add latency. */
/* Copies plane xp into slot `slot` of the three copies (column W-1 zeroed,
 * as is, column 0 zeroed); their pads are zero and stay so. */
static AN_ALWAYS_INLINE void ROW_FN(flat_fill)(const float *restrict xp, int64_t HW, row_mask keep_left,
                                       row_mask keep_right, float *restrict buf, int64_t slot)
{
    float *mid = buf + FLAT_COPY + slot * FLAT_SLOT + FLAT_PAD;
    float *left = mid - FLAT_COPY, *right = mid + FLAT_COPY;
    for (int64_t o = 0; o < HW; o += ROW_LANES) {
        const row_vec v = row_load(xp + o);
        row_store(mid + o, v);
        row_store(left + o, (row_vec)((row_mask)v & keep_left));
        row_store(right + o, (row_vec)((row_mask)v & keep_right));
    }
}

/* The copies of chunk `chunk` (group_planes planes from plane p0) into buf,
 * and each slot's channel. */
static AN_ALWAYS_INLINE void ROW_FN(flat_fill_chunk)(const flat_job *j, int64_t p0, int group_planes,
                                             row_mask keep_left, row_mask keep_right,
                                             float *restrict buf, int64_t channel[FLAT_GROUP])
{
    const int64_t HW = j->H * j->W;
    for (int slot = 0; slot < group_planes; ++slot) {
        channel[slot] = slot == 0 ? p0 % j->C : channel[slot - 1] + 1;
        while (channel[slot] >= j->C) channel[slot] -= j->C;
        /* a slot past the last plane gets a copy of it, its output discarded */
        const int64_t p = p0 + slot < j->planes ? p0 + slot : j->planes - 1;
        ROW_FN(flat_fill)(j->x + p * HW, HW, keep_left, keep_right, buf, slot);
    }
}

/* Chunks [chunk0, chunk1) of group_planes planes each; buf: 2 * FLAT_BUFFER
 * floats, zero, chunk c's copies in half c & 1.  The next chunk is copied
 * before this one is computed: read right after they were stored, the
 * copies' unaligned loads would each wait for a store that cannot forward to
 * them (that doubled the time).
 * PER_PLANE: the plane's vectors, 1, 2 or (FLAT_GROUP for) a multiple of
 * FLAT_GROUP, a compile-time constant so that placing a group's vectors
 * costs no division. */
static AN_ALWAYS_INLINE void ROW_FN(flat3x3_s1_body)(const flat_job *j, int64_t chunk0, int64_t chunk1,
                                             float *restrict buf, const int PER_PLANE,
                                             const int accumulate, const int act)
{
    const int64_t W = j->W, HW = j->H * W;
    const int group_planes = FLAT_GROUP / PER_PLANE;
    row_mask keep_left, keep_right;
    for (int l = 0; l < ROW_LANES; ++l) {
        keep_left[l] = l % W == W - 1 ? 0 : -1;
        keep_right[l] = l % W == 0 ? 0 : -1;
    }
    _Alignas(64) float discard[FLAT_GROUP * ROW_LANES];
    int64_t channels[2][FLAT_GROUP];
    if (chunk0 < chunk1)
        ROW_FN(flat_fill_chunk)(j, chunk0 * group_planes, group_planes, keep_left, keep_right,
                        buf + (chunk0 & 1) * FLAT_BUFFER, channels[chunk0 & 1]);
    for (int64_t chunk = chunk0; chunk < chunk1; ++chunk) {
        if (chunk + 1 < chunk1)
            ROW_FN(flat_fill_chunk)(j, (chunk + 1) * group_planes, group_planes, keep_left, keep_right,
                            buf + ((chunk + 1) & 1) * FLAT_BUFFER, channels[(chunk + 1) & 1]);
        const float *copies = buf + (chunk & 1) * FLAT_BUFFER;
        const int64_t *channel = channels[chunk & 1];
        const int64_t p0 = chunk * group_planes;
        float wk[FLAT_GROUP][9], start[FLAT_GROUP];
        for (int slot = 0; slot < group_planes; ++slot) {
            const float *k = j->w + channel[slot] * 9;
            for (int t = 0; t < 9; ++t) wk[slot][t] = k[j->rotate ? 8 - t : t];
            start[slot] = j->bias ? j->bias[channel[slot]] : 0.0f;
        }
        const int64_t chunk_vectors = PER_PLANE < FLAT_GROUP ? FLAT_GROUP : HW / ROW_LANES;
        for (int64_t o0 = 0; o0 < chunk_vectors; o0 += FLAT_GROUP) {
            const float *mid[FLAT_GROUP];
            float *out[FLAT_GROUP];
            row_vec acc[FLAT_GROUP];
            AN_UNROLL
            for (int g = 0; g < FLAT_GROUP; ++g) {
                /* vector g: plane slot g / PER_PLANE, its vector g % PER_PLANE
                 * (or o0 + g of a plane of several groups) */
                const int slot = PER_PLANE < FLAT_GROUP ? g / PER_PLANE : 0;
                const int64_t o = (PER_PLANE < FLAT_GROUP ? g % PER_PLANE : o0 + g) * ROW_LANES;
                mid[g] = copies + FLAT_COPY + slot * FLAT_SLOT + FLAT_PAD + o;
                out[g] = p0 + slot < j->planes ? j->y + (p0 + slot) * HW + o : discard + g * ROW_LANES;
                acc[g] = accumulate ? row_load(out[g]) : (row_vec){0} + start[slot];
            }
            AN_UNROLL
            for (int t = 0; t < 9; ++t) {
                const int64_t i = t / 3, jj = t % 3;
                /* the copy for this column of taps, then the flat offset */
                const int64_t offset = (jj - 1) * FLAT_COPY + (i - 1) * W + (jj - 1);
                AN_UNROLL
                for (int g = 0; g < FLAT_GROUP; ++g) {
                    const int slot = PER_PLANE < FLAT_GROUP ? g / PER_PLANE : 0;
                    acc[g] += ((row_vec){0} + wk[slot][t]) * row_load(mid[g] + offset);
                }
            }
            AN_UNROLL
            for (int g = 0; g < FLAT_GROUP; ++g) row_store(out[g], row_activate(acc[g], act));
        }
    }
}

#undef ROW_CAT_
#undef ROW_CAT
#undef row_vec
#undef row_mask
#undef row_load
#undef row_store
#undef row_activate
#undef ROW_FN
