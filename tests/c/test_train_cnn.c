/*
 * test_train_cnn.c — trains a tiny CNN entirely from C (conv2d, batch norm,
 * ReLU, global average pooling, linear, cross-entropy, SGD with momentum)
 * on a synthetic two-class problem: is the bright stripe in the image
 * horizontal or vertical?  The loss must fall and the accuracy reach 95%,
 * and nothing may leak (run under ASan/LeakSanitizer by .ci/run).
 */
#include "appealnet.h"

#include <math.h>
#include <stdio.h>

#define N 32
#define S 8
#define CLASSES 2

static an_tensor *param(int ndim, const int64_t *shape, float bound)
{
    an_tensor *t = an_empty(ndim, shape);
    an_uniform_(t, -bound, bound);
    an_set_requires_grad(t, 1);
    return t;
}

int main(void)
{
    an_manual_seed(7);
    /* data: stripe at a random row (class 0) or column (class 1), plus noise */
    int64_t xshape[4] = {N, 1, S, S};
    an_tensor *x = an_empty(4, xshape);
    an_tensor *noise = an_empty(4, xshape);
    an_normal_(noise, 0.0f, 0.3f);
    int64_t labels[N];
    float *px = an_data_ptr(x), *pn = an_data_ptr(noise);
    for (int n = 0; n < N; n++) {
        labels[n] = n % 2;
        int where = (n * 5) % S;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                int on = labels[n] == 0 ? i == where : j == where;
                px[(n * S + i) * S + j] = (on ? 1.0f : 0.0f) + pn[(n * S + i) * S + j];
            }
    }
    an_release(noise);

    int64_t w1s[4] = {8, 1, 3, 3}, cs[1] = {8}, w2s[2] = {CLASSES, 8}, bs[1] = {CLASSES};
    an_tensor *w1 = param(4, w1s, 1.0f / 3.0f), *b1 = param(1, cs, 1.0f / 3.0f);
    an_tensor *gamma = an_full(1, cs, 1.0f), *beta = an_zeros(1, cs);
    an_set_requires_grad(gamma, 1);
    an_set_requires_grad(beta, 1);
    an_tensor *rmean = an_zeros(1, cs), *rvar = an_full(1, cs, 1.0f);
    an_tensor *w2 = param(2, w2s, 0.35f), *b2 = param(1, bs, 0.35f);
    an_tensor *params[] = {w1, b1, gamma, beta, w2, b2};
    an_tensor *momentum[6];
    for (int i = 0; i < 6; i++)
        momentum[i] = an_zeros(params[i]->ndim, params[i]->shape);

    const int64_t one[2] = {1, 1};
    double first_loss = 0, last_loss = 0;
    int failures = 0;
    for (int step = 0; step < 60; step++) {
        /* relu(batch_norm(conv2d(x))), the statistics from the convolution's output pass */
        an_tensor *act = an_conv2d_batch_norm_act(x, w1, b1, one, one, one, 1, rmean, rvar, gamma,
                                                  beta, 1, 0.1, 1e-5, AN_ACTIVATION_RELU);
        an_tensor *pooled = an_adaptive_avg_pool2d(act, 1, 1);
        an_tensor *flat = an_flatten(pooled, 1, -1);
        an_tensor *logits = an_linear(flat, w2, b2);
        an_tensor *loss = an_cross_entropy(logits, labels, N, AN_REDUCTION_MEAN, 0.0, -100);
        if (!loss) {
            fprintf(stderr, "forward failed: %s\n", an_last_error());
            return 1;
        }
        double value = an_data_ptr(loss)[0];
        if (step == 0)
            first_loss = value;
        last_loss = value;
        for (int i = 0; i < 6; i++)
            an_set_grad(params[i], NULL);
        if (an_backward(loss, NULL, 0) != AN_OK) {
            fprintf(stderr, "backward failed: %s\n", an_last_error());
            return 1;
        }
        for (int i = 0; i < 6; i++)
            if (an_sgd_step(params[i], params[i]->grad, momentum[i], 0.2, 0.9, 0.0, 0.0, 0, step == 0)) {
                fprintf(stderr, "sgd failed: %s\n", an_last_error());
                return 1;
            }
        an_tensor *temps[] = {act, pooled, flat, logits, loss};
        for (int i = 0; i < 5; i++)
            an_release(temps[i]);
    }

    /* accuracy in eval mode, with the running statistics */
    an_set_grad_enabled(0);
    an_tensor *h = an_conv2d(x, w1, b1, one, one, one, 1);
    an_tensor *bn = an_batch_norm(h, rmean, rvar, gamma, beta, 0, 0.1, 1e-5);
    an_tensor *act = an_relu(bn);
    an_tensor *pooled = an_adaptive_avg_pool2d(act, 1, 1);
    an_tensor *flat = an_flatten(pooled, 1, -1);
    an_tensor *logits = an_linear(flat, w2, b2);
    int correct = 0;
    for (int n = 0; n < N; n++) {
        const float *row = an_data_ptr(logits) + n * CLASSES;
        correct += (row[1] > row[0]) == (labels[n] == 1);
    }
    an_set_grad_enabled(1);
    an_tensor *temps[] = {h, bn, act, pooled, flat, logits, x, rmean, rvar};
    for (int i = 0; i < 9; i++)
        an_release(temps[i]);
    for (int i = 0; i < 6; i++) {
        an_release(params[i]);
        an_release(momentum[i]);
    }
    an_release_workspace();

    printf("test_train_cnn: loss %.4f -> %.4f, accuracy %d/%d\n", first_loss, last_loss, correct, N);
    if (!(last_loss < 0.5 * first_loss)) {
        fprintf(stderr, "loss did not fall enough\n");
        failures++;
    }
    if (correct < (95 * N) / 100) {
        fprintf(stderr, "accuracy too low\n");
        failures++;
    }
    return failures ? 1 : 0;
}
