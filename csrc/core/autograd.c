/* autograd.c — define-by-run graph: nodes recorded by ops, a topological
   backward pass from the root, and the thread-local grad mode. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

static _Thread_local int grad_disabled = 0;

void an_set_grad_enabled(int enabled) { grad_disabled = !enabled; }
int an_is_grad_enabled(void) { return !grad_disabled; }

int an_needs_grad(int n, an_tensor *const *inputs)
{
    if (grad_disabled)
        return 0;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad)
            return 1;
    return 0;
}

/* Drops what a node holds on to; the node itself stays so that a second
   backward can say the graph was freed. */
static void node_release_graph(an_node *node)
{
    for (int i = 0; i < node->n_inputs; i++) {
        an_release(node->inputs[i]);
        node->inputs[i] = NULL;
    }
    for (int i = 0; i < node->n_saved; i++) {
        an_release(node->saved[i]);
        node->saved[i] = NULL;
    }
    free(node->extra);
    node->extra = NULL;
    node->freed = 1;
}

void an_node_free(an_node *node)
{
    /* Deep graphs (thousands of chained ops) free recursively through
       an_release; release inputs iteratively enough for realistic depths. */
    node_release_graph(node);
    free(node->inputs);
    free(node);
}

an_node *an_record(an_tensor *out, const char *name, an_backward_fn backward,
                   int n_inputs, an_tensor *const *inputs)
{
    an_node *node = calloc(1, sizeof *node);
    an_tensor **slots = calloc((size_t)(n_inputs > 0 ? n_inputs : 1), sizeof *slots);
    if (!node || !slots) {
        free(node);
        free(slots);
        an_set_error(AN_ERR_MEMORY, "out of memory recording %s", name);
        return NULL;
    }
    node->name = name;
    node->backward = backward;
    node->n_inputs = n_inputs;
    node->inputs = slots;
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i] && inputs[i]->requires_grad) {
            an_retain(inputs[i]);
            slots[i] = inputs[i];
        }
    }
    if (out->grad_fn)
        an_node_free(out->grad_fn);
    out->grad_fn = node;
    out->requires_grad = 1;
    return node;
}

void an_node_save(an_node *node, int slot, an_tensor *t)
{
    if (slot < 0 || slot >= (int)(sizeof node->saved / sizeof node->saved[0]))
        return;
    an_retain(t);
    an_release(node->saved[slot]);
    node->saved[slot] = t;
    if (slot + 1 > node->n_saved)
        node->n_saved = slot + 1;
}

an_status an_finish_backward3(an_status status, an_tensor **grad_inputs, an_tensor *g0,
                              an_tensor *g1, an_tensor *g2)
{
    if (status) {
        an_release(g0);
        an_release(g1);
        an_release(g2);
        return status;
    }
    grad_inputs[0] = g0;
    grad_inputs[1] = g1;
    grad_inputs[2] = g2;
    return AN_OK;
}

int an_node_input_needs_grad(const an_node *node, int i)
{
    return i >= 0 && i < node->n_inputs && node->inputs[i] != NULL;
}

int an_is_leaf(const an_tensor *t) { return t->grad_fn == NULL; }

const char *an_grad_fn_name(const an_tensor *t) { return t->grad_fn ? t->grad_fn->name : NULL; }

an_status an_set_requires_grad(an_tensor *t, int requires_grad)
{
    if (an_check_not_null(t, "requires_grad_", "input"))
        return AN_ERR_TYPE;
    if (t->grad_fn && !requires_grad)
        return an_set_error(AN_ERR_RUNTIME,
                            "you can only change requires_grad flags of leaf variables; use detach() "
                            "to get a tensor that does not require grad");
    t->requires_grad = requires_grad ? 1 : 0;
    return AN_OK;
}

an_status an_set_grad(an_tensor *t, an_tensor *grad)
{
    if (an_check_not_null(t, "grad", "tensor"))
        return AN_ERR_TYPE;
    if (grad && !an_same_shape(t, grad)) {
        char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
        return an_set_error(AN_ERR_VALUE, "assigned grad has shape %s but the tensor has shape %s",
                            an_shape_str(grad->ndim, grad->shape, a, sizeof a),
                            an_shape_str(t->ndim, t->shape, b, sizeof b));
    }
    an_retain(grad);
    an_release(t->grad);
    t->grad = grad;
    return AN_OK;
}

static an_status check_grad_shape(const an_tensor *acc, const an_tensor *src)
{
    if (an_same_shape(acc, src))
        return AN_OK;
    char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
    return an_set_error(AN_ERR_RUNTIME, "gradient shape %s does not match %s",
                        an_shape_str(src->ndim, src->shape, a, sizeof a),
                        an_shape_str(acc->ndim, acc->shape, b, sizeof b));
}

/* src is the caller's own reference, released by the caller right after
   (backward_one, accumulate_pending).  A first gradient that nobody else
   holds becomes the grad itself; the check used to count the reference
   an_contiguous had just taken as someone else's, so every first gradient
   was copied: a leaf input's whole gradient each backward (18.9 MB for a
   144-channel 32x32 layer at batch 32, 9% of its input gradient's time). */
an_status an_accumulate(an_tensor **acc, an_tensor *src)
{
    if (!*acc) {
        an_tensor *copy = an_contiguous(src);
        if (!copy)
            return an_last_status();
        if (copy == src && (src->refcount > 2 || src->storage->refcount > 1)) {
            /* never alias a tensor someone else holds (beyond the caller's
               reference and an_contiguous's): later accumulation writes in place */
            an_release(copy);
            int prev = an_is_grad_enabled();
            an_set_grad_enabled(0);
            copy = an_clone(src);
            an_set_grad_enabled(prev);
            if (!copy)
                return an_last_status();
        }
        *acc = copy;
        return AN_OK;
    }
    an_status shape_status = check_grad_shape(*acc, src);
    if (shape_status)
        return shape_status;
    an_tensor *c = an_contiguous(src);
    if (!c)
        return an_last_status();
    an_tensor *dst = *acc;
    int64_t n = an_numel(dst);
    const float *s = an_data_ptr(c);
    if (an_is_contiguous(dst)) {
        float *d = an_data_ptr(dst);
#pragma omp parallel for schedule(static) if (n > AN_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
    } else {
        /* a user-assigned, strided .grad: accumulate through a contiguous copy */
        an_tensor *sum = an_contiguous(dst);
        if (!sum) {
            an_release(c);
            return an_last_status();
        }
        float *d = an_data_ptr(sum);
        for (int64_t i = 0; i < n; i++)
            d[i] += s[i];
        an_copy_(dst, sum);
        an_release(sum);
    }
    an_release(c);
    return AN_OK;
}

/* A gradient pending on a non-leaf tensor may be a tensor that others hold
   too (one gradient passed to both inputs of an add, say): it is only read,
   unless a second contribution arrives, and then the sum goes to a new
   tensor instead of into the shared one.  Cloning it on arrival, as a leaf's
   .grad must be, copied a whole activation for every residual join whether
   or not a second gradient came (about 70 per ResNet-20 step). */
static int shared_tensor(const an_tensor *t)
{
    return t->refcount > 1 || t->storage->refcount > 1 || !an_is_contiguous(t);
}

static an_status accumulate_pending(an_tensor **acc, an_tensor *src)
{
    an_tensor *dst = *acc;
    if (!dst || !shared_tensor(dst))
        return an_accumulate(acc, src);
    an_status st = check_grad_shape(dst, src);
    if (st)
        return st;
    /* the same float sums, in the same order, as the in-place path */
    int prev = an_is_grad_enabled();
    an_set_grad_enabled(0);
    an_tensor *sum = an_add(dst, src);
    an_set_grad_enabled(prev);
    if (!sum)
        return an_last_status();
    an_release(dst);
    *acc = sum;
    return AN_OK;
}

/* Growable array of tensor pointers (borrowed). */
typedef struct {
    an_tensor **items;
    int64_t count, capacity;
} tensor_list;

static int list_push(tensor_list *l, an_tensor *t)
{
    if (l->count == l->capacity) {
        int64_t cap = l->capacity ? 2 * l->capacity : 64;
        an_tensor **grown = realloc(l->items, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        l->items = grown;
        l->capacity = cap;
    }
    l->items[l->count++] = t;
    return 0;
}

/* Post-order DFS (iterative: graphs of deep nets must not overflow the C
   stack) giving every tensor after all tensors computed from it. */
static an_status topological_order(an_tensor *root, tensor_list *order)
{
    tensor_list stack = {0};
    tensor_list child_index = {0}; /* parallel stack: next input to visit, stored as pointer-sized int */
    an_status status = AN_OK;
    root->backward_mark = 1;
    if (list_push(&stack, root) || list_push(&child_index, NULL))
        goto oom;
    while (stack.count) {
        an_tensor *t = stack.items[stack.count - 1];
        intptr_t next = (intptr_t)child_index.items[child_index.count - 1];
        an_node *node = t->grad_fn;
        if (node && node->freed) {
            status = an_set_error(
                AN_ERR_RUNTIME,
                "Trying to backward through the graph a second time (or directly access saved "
                "tensors after they have already been freed). Saved intermediate values of the graph "
                "are freed when you call .backward(). Specify retain_graph=True if you need to "
                "backward through the graph a second time.");
            break;
        }
        if (node && next < node->n_inputs) {
            child_index.items[child_index.count - 1] = (an_tensor *)(next + 1);
            an_tensor *in = node->inputs[next];
            if (in && !in->backward_mark) {
                in->backward_mark = 1;
                if (list_push(&stack, in) || list_push(&child_index, NULL))
                    goto oom;
            }
            continue;
        }
        stack.count--;
        child_index.count--;
        if (list_push(order, t))
            goto oom;
    }
    free(stack.items);
    free(child_index.items);
    return status;
oom:
    free(stack.items);
    free(child_index.items);
    return an_set_error(AN_ERR_MEMORY, "out of memory in backward");
}

/* Runs t's node on t's gradient g (taken over) and hands each input its
   part; a leaf that requires grad adds g to its .grad. */
static an_status backward_one(an_tensor *t, an_tensor *g)
{
    if (!g)
        return AN_OK; /* no path from the root carried a gradient here */
    an_node *node = t->grad_fn;
    if (!node) {
        an_status status = t->requires_grad ? an_accumulate(&t->grad, g) : AN_OK;
        an_release(g);
        return status;
    }
    an_tensor *stack_slots[8] = {0};
    an_tensor **grad_inputs = node->n_inputs <= 8
                                  ? stack_slots
                                  : calloc((size_t)node->n_inputs, sizeof *grad_inputs);
    if (!grad_inputs) {
        an_release(g);
        return an_set_error(AN_ERR_MEMORY, "out of memory in backward");
    }
    an_status status = node->backward(node, g, grad_inputs);
    an_release(g);
    for (int i = 0; i < node->n_inputs; i++) {
        an_tensor *gi = grad_inputs[i];
        if (!gi)
            continue;
        an_tensor *in = node->inputs[i];
        if (status == AN_OK && in) {
            if (!an_same_shape(gi, in)) {
                char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
                status = an_set_error(AN_ERR_RUNTIME,
                                      "%s returned a gradient of shape %s for an input of shape %s",
                                      node->name, an_shape_str(gi->ndim, gi->shape, a, sizeof a),
                                      an_shape_str(in->ndim, in->shape, b, sizeof b));
            } else if (!in->pending_grad && gi->refcount == 1 &&
                       gi->storage->refcount == 1 && an_is_contiguous(gi)) {
                in->pending_grad = gi;
                continue; /* sole owner: ownership moves to the input */
            } else if (!in->pending_grad && an_is_contiguous(gi)) {
                /* gi is also held elsewhere (the caller's seed, a
                   gradient passed to two inputs): kept as it is,
                   copied only if a second contribution arrives */
                an_retain(gi);
                in->pending_grad = gi;
            } else {
                status = accumulate_pending(&in->pending_grad, gi);
            }
        }
        an_release(gi);
    }
    if (grad_inputs != stack_slots)
        free(grad_inputs);
    return status;
}

an_status an_backward(an_tensor *root, an_tensor *grad, int retain_graph)
{
    if (an_check_not_null(root, "backward", "tensor"))
        return AN_ERR_TYPE;
    if (!root->requires_grad)
        return an_set_error(AN_ERR_RUNTIME,
                            "element 0 of tensors does not require grad and does not have a grad_fn");
    an_tensor *seed;
    if (grad) {
        if (!an_same_shape(grad, root)) {
            char a[AN_SHAPE_BUF], b[AN_SHAPE_BUF];
            return an_set_error(AN_ERR_VALUE,
                                "backward: gradient has shape %s but the tensor has shape %s",
                                an_shape_str(grad->ndim, grad->shape, a, sizeof a),
                                an_shape_str(root->ndim, root->shape, b, sizeof b));
        }
        seed = an_contiguous(grad);
    } else {
        if (an_numel(root) != 1) {
            char a[AN_SHAPE_BUF];
            return an_set_error(AN_ERR_RUNTIME,
                                "grad can be implicitly created only for scalar outputs (tensor has shape %s); "
                                "pass a gradient to backward()",
                                an_shape_str(root->ndim, root->shape, a, sizeof a));
        }
        seed = an_full(root->ndim, root->shape, 1.0f);
    }
    if (!seed)
        return an_last_status();

    tensor_list order = {0};
    an_status status = topological_order(root, &order);
    int prev_grad_mode = an_is_grad_enabled();
    an_set_grad_enabled(0); /* backward computations are never recorded */
    /* Without retain_graph, each tensor's node lets go of its inputs and
       saved tensors as soon as the tensor has been handled, as PyTorch
       frees a node's saved variables after its backward: held to the end
       of the pass, every activation of the forward stayed alive while the
       early layers' large gradients were made, and a MobileNetV2 step at
       batch 128 peaked 370 MB above what its forward had saved.  Every
       tensor of the walk is held until its turn, so that a consumer
       letting go of it cannot free it (and its node) before then. */
    const int release_early = !retain_graph && status == AN_OK;
    if (release_early)
        for (int64_t k = 0; k < order.count; k++)
            an_retain(order.items[k]);
    if (status == AN_OK) {
        root->pending_grad = seed;
        seed = NULL;
        for (int64_t k = order.count - 1; k >= 0 && status == AN_OK; k--) {
            an_tensor *t = order.items[k];
            an_tensor *g = t->pending_grad;
            t->pending_grad = NULL;
            status = backward_one(t, g);
            if (release_early && status == AN_OK) {
                t->backward_mark = 0;
                if (t->grad_fn)
                    node_release_graph(t->grad_fn);
                order.items[k] = NULL;
                an_release(t); /* may free t and its node */
            }
        }
    }
    /* Clear marks and any gradients left pending after an error; without
       retain_graph, let go of the tensors not reached. */
    for (int64_t k = 0; k < order.count; k++) {
        an_tensor *t = order.items[k];
        if (!t)
            continue;
        t->backward_mark = 0;
        an_release(t->pending_grad);
        t->pending_grad = NULL;
        if (release_early)
            an_release(t);
    }
    an_release(seed);
    free(order.items);
    an_set_grad_enabled(prev_grad_mode);
    return status;
}
