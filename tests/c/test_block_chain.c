/*
 * test_block_chain.c — an_block_chain from plain C, as an edge device runs a
 * MobileNetV2 body: three inverted-residual blocks (a shortcut convolution,
 * an identity residual, a stride-2 block onto small planes) chained, run on
 * 1 and 2 threads, must give the bits of the blocks called one by one with
 * an_conv_pw_dw_pw; bad chains are refused with a message.
 *
 * Built and run by tests/test_c_library.py (also under ASan/UBSan from
 * .ci/run):  gcc -std=c11 -O1 -fopenmp -Icsrc tests/c/test_block_chain.c
 *            $(find csrc -name '*.c' -not -path 'csrc/python/*') -lm
 */
#include "appealnet.h"
#include "check.h"

#include <stdio.h>
#include <string.h>

static an_tensor *random_tensor(int ndim, const int64_t *shape, float scale)
{
    an_tensor *t = an_empty(ndim, shape);
    if (t && an_normal_(t, 0.0f, scale) != AN_OK) {
        an_release(t);
        return NULL;
    }
    return t;
}

/* A block: C -> Ce (expansion, relu6) -> depthwise (stride, relu6) -> Co. */
static an_pw_dw_pw_block make_block(int64_t C, int64_t Ce, int64_t Co, int64_t stride,
                                    int residual_from_input, int shortcut)
{
    const int64_t w1s[4] = {Ce, C, 1, 1}, wds[4] = {Ce, 1, 3, 3}, w2s[4] = {Co, Ce, 1, 1};
    const int64_t wss[4] = {Co, C, 1, 1}, ce[1] = {Ce}, co[1] = {Co};
    an_pw_dw_pw_block b;
    memset(&b, 0, sizeof b);
    b.w1 = random_tensor(4, w1s, 0.4f);
    b.p1 = an_conv2d_pack_weight(b.w1);
    b.b1 = random_tensor(1, ce, 1.0f);
    b.act1 = AN_ACTIVATION_RELU6;
    b.wd = random_tensor(4, wds, 1.0f);
    b.bd = random_tensor(1, ce, 1.0f);
    b.stride = stride;
    b.actd = AN_ACTIVATION_RELU6;
    b.w2 = random_tensor(4, w2s, 0.2f);
    b.b2 = random_tensor(1, co, 1.0f);
    b.residual_from_input = residual_from_input;
    if (shortcut) {
        b.ws = random_tensor(4, wss, 0.5f);
        b.ps = an_conv2d_pack_weight(b.ws);
        b.bs = random_tensor(1, co, 1.0f);
    }
    b.act2 = AN_ACTIVATION_NONE;
    return b;
}

static void release_block(an_pw_dw_pw_block *b)
{
    an_tensor *all[11] = {b->w1, b->p1, b->b1, b->wd, b->bd, b->w2, b->p2, b->b2, b->ws, b->ps, b->bs};
    for (int i = 0; i < 11; i++) an_release(all[i]);
}

static an_tensor *one_by_one(an_tensor *x, const an_pw_dw_pw_block *blocks, int count)
{
    an_retain(x);
    for (int i = 0; i < count && x; i++) {
        const an_pw_dw_pw_block *b = &blocks[i];
        an_tensor *y =
            b->ws ? an_conv_pw_dw_pw_shortcut(x, b->w1, b->p1, b->b1, b->act1, b->wd, b->bd,
                                              b->stride, b->actd, b->w2, b->p2, b->b2, b->ws,
                                              b->ps, b->bs, b->act2)
                  : an_conv_pw_dw_pw(x, b->w1, b->p1, b->b1, b->act1, b->wd, b->bd, b->stride,
                                     b->actd, b->w2, b->p2, b->b2,
                                     b->residual_from_input ? x : NULL, b->act2);
        an_release(x);
        x = y;
    }
    return x;
}

static int same_bits(const an_tensor *a, const an_tensor *b)
{
    return a && b && a->ndim == b->ndim && an_numel(a) == an_numel(b) &&
           memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0 &&
           memcmp(an_data_ptr(a), an_data_ptr(b), sizeof(float) * (size_t)an_numel(a)) == 0;
}

int main(void)
{
    an_manual_seed(7);
    an_pw_dw_pw_block blocks[3] = {make_block(8, 48, 16, 1, 0, 1), make_block(16, 96, 16, 1, 1, 0),
                                   make_block(16, 96, 24, 2, 0, 0)};
    const int64_t xs[4] = {1, 8, 16, 16};
    an_tensor *x = random_tensor(4, xs, 2.0f);
    an_block_chain *chain = an_block_chain_create(3, blocks);
    CHECK(chain != NULL);
    for (int threads = 1; threads <= 2 && chain; threads++) {
        an_set_num_threads(threads);
        an_tensor *expected = one_by_one(x, blocks, 3);
        an_tensor *got = an_block_chain_run(chain, x);
        CHECK(expected && expected->shape[1] == 24 && expected->shape[2] == 8);
        CHECK(same_bits(got, expected));
        if (threads == 2)
            CHECK(an_block_chain_in_one_region(chain, 4, xs));
        an_release(expected);
        an_release(got);
    }

    /* refused: no blocks; a shortcut and an identity residual together; a
       second block that does not take the first's output (at run time, with
       the convolution's own message) */
    CHECK(an_block_chain_create(0, blocks) == NULL && an_last_status() == AN_ERR_VALUE &&
          strstr(an_last_error(), "at least one block"));
    an_pw_dw_pw_block both = blocks[0];
    both.residual_from_input = 1;
    CHECK(an_block_chain_create(1, &both) == NULL &&
          strstr(an_last_error(), "block 0: a shortcut convolution and residual_from_input"));
    an_pw_dw_pw_block mismatched[2] = {blocks[0], blocks[0]}; /* 16 channels into 8 */
    an_block_chain *broken = an_block_chain_create(2, mismatched);
    CHECK(broken != NULL);
    an_tensor *none = an_block_chain_run(broken, x);
    CHECK(none == NULL && an_last_status() == AN_ERR_VALUE && strstr(an_last_error(), "channels"));
    CHECK(an_block_chain_run(NULL, x) == NULL && an_last_status() == AN_ERR_VALUE);
    CHECK(an_block_chain_run(chain, NULL) == NULL && strstr(an_last_error(), "input must be a tensor"));

    an_block_chain_free(broken);
    an_block_chain_free(chain); /* the chain's references: the blocks' own remain */
    for (int i = 0; i < 3; i++) release_block(&blocks[i]);
    an_release(x);
    if (failures) {
        fprintf(stderr, "test_block_chain: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_block_chain: ok\n");
    return 0;
}
