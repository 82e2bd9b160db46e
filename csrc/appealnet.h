/*
 * appealnet.h — the public C API of the appealnet core.
 *
 * A float32 tensor engine with reverse-mode autograd, usable as a plain C11
 * library (no Python anywhere below csrc/python/).  Conventions:
 *
 *   - Every function that makes a tensor returns a NEW reference, or NULL on
 *     failure with the reason in an_last_error() (thread-local).  Functions
 *     that do not return a tensor return an_status.
 *   - Nothing in the library exits, aborts or asserts on user input.
 *   - Tensors are reference counted (an_retain / an_release).  Views share
 *     storage.  Ops accept any strides and produce contiguous outputs.
 *   - Autograd is define-by-run: an op whose inputs require grad (and grad
 *     mode is on for the calling thread) records a node on its output.
 *   - Deterministic: the same inputs give bit-identical results whatever
 *     the OpenMP thread count.
 */
#ifndef APPEALNET_H
#define APPEALNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AN_VERSION "0.1.0"
#define AN_MAX_DIMS 8

/* ---------------------------------------------------------------- status */

typedef enum {
    AN_OK = 0,
    AN_ERR_VALUE,     /* bad argument value or shape      -> ValueError   */
    AN_ERR_TYPE,      /* wrong kind of argument           -> TypeError    */
    AN_ERR_INDEX,     /* index / label out of range       -> IndexError   */
    AN_ERR_MEMORY,    /* allocation failed                -> MemoryError  */
    AN_ERR_RUNTIME    /* invalid state (e.g. freed graph) -> RuntimeError */
} an_status;

/* Records an error for the calling thread and returns `status`. */
an_status an_set_error(an_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
an_status an_last_status(void);
const char *an_last_error(void);
void an_clear_error(void);

/* ---------------------------------------------------------------- tensor */

typedef struct an_storage {
    float *data;
    int64_t numel;               /* capacity in floats */
    int refcount;                /* atomic */
    void *owner;                 /* foreign owner (e.g. a numpy array) or NULL */
    void (*release_owner)(void *owner);
} an_storage;

struct an_node;

typedef struct an_tensor {
    int refcount;                /* atomic */
    an_storage *storage;
    int64_t offset;              /* in elements from storage->data */
    int ndim;
    int64_t shape[AN_MAX_DIMS];
    int64_t strides[AN_MAX_DIMS];/* in elements; may be 0 (broadcast) */
    int requires_grad;
    struct an_tensor *grad;      /* accumulated gradient of a leaf, or NULL */
    struct an_node *grad_fn;     /* node that produced this tensor, or NULL */
    /* used only while an_backward runs */
    struct an_tensor *pending_grad;
    int backward_mark;
} an_tensor;

an_tensor *an_empty(int ndim, const int64_t *shape);
an_tensor *an_zeros(int ndim, const int64_t *shape);
an_tensor *an_full(int ndim, const int64_t *shape, float value);
/* copies numel floats from a C-contiguous buffer */
an_tensor *an_from_data(int ndim, const float *data, const int64_t *shape);
/* wraps foreign memory without copying; release_owner(owner) is called when
   the last view dies.  strides in elements (may be negative); `data` points
   at element [0,...,0]. */
an_tensor *an_from_external(int ndim, const int64_t *shape, const int64_t *strides,
                            float *data, void *owner, void (*release_owner)(void *));
void an_retain(an_tensor *t);
void an_release(an_tensor *t);

int64_t an_numel(const an_tensor *t);
int an_is_contiguous(const an_tensor *t);
float *an_data_ptr(const an_tensor *t);             /* address of element [0,..,0] */
an_tensor *an_contiguous(an_tensor *t);             /* same tensor (retained) or a copy */
an_tensor *an_clone(an_tensor *t);                  /* differentiable copy */
an_tensor *an_detach(an_tensor *t);                 /* shares storage, leaf, no grad */
/* in place, never recorded by autograd */
an_status an_copy_(an_tensor *dst, an_tensor *src); /* shapes must match */
an_status an_fill_(an_tensor *t, float value);
an_status an_uniform_(an_tensor *t, float low, float high);
an_status an_normal_(an_tensor *t, float mean, float std);
int an_has_nonfinite(const an_tensor *t);

/* ------------------------------------------------- random numbers, threads */

/* One global counter-based generator (seed, offset): a draw of n numbers
   reserves n counters, so values never depend on the thread count. */
void an_manual_seed(uint64_t seed);
uint64_t an_initial_seed(void);
/* The whole generator state, for checkpoints that resume exactly. */
void an_get_rng_state(uint64_t *seed, uint64_t *offset);
void an_set_rng_state(uint64_t seed, uint64_t offset);
void an_set_num_threads(int n);          /* process-wide; n >= 1 */
int an_get_num_threads(void);
/* Makes the calling thread use the process-wide count (the bindings call
   this before compute; C callers on extra threads may too). */
void an_apply_num_threads(void);
int an_openmp_enabled(void);

/* -------------------------------------------------------------- autograd */

typedef an_status (*an_backward_fn)(struct an_node *node, an_tensor *grad_output,
                                    an_tensor **grad_inputs);

typedef struct an_node {
    const char *name;            /* e.g. "AddBackward" */
    an_backward_fn backward;     /* fills grad_inputs[i] (new refs) for inputs needing grad */
    int n_inputs;
    an_tensor **inputs;          /* retained; an input that needs no grad may be NULL */
    int n_saved;
    an_tensor *saved[6];         /* retained; released when the graph is freed */
    int64_t ints[16];            /* small op parameters */
    double reals[8];
    void *extra;                 /* op-owned heap data, freed with free() */
    int freed;                   /* saved data released by a backward pass */
} an_node;

void an_set_grad_enabled(int enabled);   /* thread-local, default on */
int an_is_grad_enabled(void);
/* True when the op over these inputs must record a node. */
int an_needs_grad(int n, an_tensor *const *inputs);
/* Creates a node on `out` with the given inputs (retains those requiring grad).
   Returns the node for saving parameters, or NULL on allocation failure
   (error set).  `out` becomes a non-leaf that requires grad. */
an_node *an_record(an_tensor *out, const char *name, an_backward_fn backward,
                   int n_inputs, an_tensor *const *inputs);
void an_node_save(an_node *node, int slot, an_tensor *t); /* retains t */
int an_node_input_needs_grad(const an_node *node, int i);

/* Runs backward from `root`.  grad may be NULL only for a one-element root.
   Unless retain_graph, each node's saved tensors are freed as soon as its
   backward has run (not only at the end of the pass) and a second pass
   errors. */
an_status an_backward(an_tensor *root, an_tensor *grad, int retain_graph);
an_status an_set_requires_grad(an_tensor *t, int requires_grad);
an_status an_set_grad(an_tensor *t, an_tensor *grad); /* grad may be NULL */
int an_is_leaf(const an_tensor *t);
const char *an_grad_fn_name(const an_tensor *t);     /* NULL for a leaf */

/* ---------------------------------------------------------- elementwise */
/* Binary ops broadcast like numpy. */
an_tensor *an_add(an_tensor *a, an_tensor *b);
an_tensor *an_sub(an_tensor *a, an_tensor *b);
an_tensor *an_mul(an_tensor *a, an_tensor *b);
an_tensor *an_div(an_tensor *a, an_tensor *b);
/* relu(a + b) in one pass (a residual join), bit-identical to
   an_relu(an_add(a, b)); both inputs get the same masked gradient.  Shapes
   that differ broadcast through an_add and an_relu. */
an_tensor *an_add_relu(an_tensor *a, an_tensor *b);
an_tensor *an_neg(an_tensor *x);
an_tensor *an_exp(an_tensor *x);
an_tensor *an_log(an_tensor *x);
an_tensor *an_sqrt(an_tensor *x);
an_tensor *an_abs(an_tensor *x);
an_tensor *an_pow_scalar(an_tensor *x, float exponent);
an_tensor *an_clamp(an_tensor *x, float min_value, float max_value); /* NAN = unbounded */

/* ---------------------------------------------------------- activations */
an_tensor *an_relu(an_tensor *x);
an_tensor *an_relu6(an_tensor *x);
an_tensor *an_leaky_relu(an_tensor *x, float negative_slope);
an_tensor *an_sigmoid(an_tensor *x);
an_tensor *an_tanh(an_tensor *x);
an_tensor *an_silu(an_tensor *x);
an_tensor *an_hardswish(an_tensor *x);
an_tensor *an_hardsigmoid(an_tensor *x);
an_tensor *an_log_sigmoid(an_tensor *x);
an_tensor *an_softmax(an_tensor *x, int dim);       /* negative dim counts from the end */
an_tensor *an_log_softmax(an_tensor *x, int dim);

/* ----------------------------------------------------------- reductions */
/* n_dims == 0 reduces over all dims.  Negative dims count from the end. */
an_tensor *an_sum(an_tensor *x, int n_dims, const int *dims, int keepdim);
an_tensor *an_mean(an_tensor *x, int n_dims, const int *dims, int keepdim);

/* ---------------------------------------------------------------- shape */
/* One entry of shape may be -1.  A view when the layout allows, else a copy. */
an_tensor *an_reshape(an_tensor *x, int ndim, const int64_t *shape);
/* Like reshape but refuses (AN_ERR_RUNTIME) when a copy would be needed. */
an_tensor *an_view(an_tensor *x, int ndim, const int64_t *shape);
an_tensor *an_flatten(an_tensor *x, int start_dim, int end_dim);
an_tensor *an_transpose(an_tensor *x, int dim0, int dim1);       /* view */
an_tensor *an_permute(an_tensor *x, int ndim, const int *dims);   /* view */
an_tensor *an_select(an_tensor *x, int dim, int64_t index);       /* view, drops dim */
an_tensor *an_slice(an_tensor *x, int dim, int64_t start, int64_t stop, int64_t step); /* view; python slice semantics after normalisation by caller: 0<=start<=stop<=size, step>=1 */
an_tensor *an_index_select(an_tensor *x, int dim, int64_t n, const int64_t *index); /* copy */
an_tensor *an_concat(int n, an_tensor *const *xs, int dim);
an_tensor *an_channel_shuffle(an_tensor *x, int groups);          /* NCHW */
/* channel_shuffle(concat(xs, 1), n) of n same-shape NCHW tensors, one pass */
an_tensor *an_channel_shuffle_concat(int n, an_tensor *const *xs);
typedef enum { AN_PAD_CONSTANT = 0, AN_PAD_REFLECT, AN_PAD_REPLICATE } an_pad_mode;
/* pads[2*i], pads[2*i+1] = (before, after) for the LAST n_pairs dims, last dim first (PyTorch order) */
an_tensor *an_pad(an_tensor *x, int n_pairs, const int64_t *pads, an_pad_mode mode, float value);

/* --------------------------------------------------------------- linalg */
/* 1-D/2-D/N-D like numpy.matmul (batch dims broadcast). */
an_tensor *an_matmul(an_tensor *a, an_tensor *b);
/* y = x @ weight^T + bias; x [..., in], weight [out, in], bias [out] or NULL */
an_tensor *an_linear(an_tensor *x, an_tensor *weight, an_tensor *bias);

/* ------------------------------------------------------------------- nn */
/* x [N,C,H,W], weight [Cout, C/groups, kh, kw], bias [Cout] or NULL */
an_tensor *an_conv2d(an_tensor *x, an_tensor *weight, an_tensor *bias,
                     const int64_t stride[2], const int64_t padding[2],
                     const int64_t dilation[2], int64_t groups);
/* x [N,C,...]. training: batch statistics, and running stats (if given) are
   updated in place with momentum and the unbiased variance.  Eval: running
   stats (required).  weight/bias may be NULL. */
an_tensor *an_batch_norm(an_tensor *x, an_tensor *running_mean, an_tensor *running_var,
                         an_tensor *weight, an_tensor *bias, int training,
                         double momentum, double eps);
/* Whether 3x3 stride-1 convolutions with 32+ channels on each side use
   Winograd's F(4x4, 3x3) (4x fewer multiplies; the transforms scale values
   by up to 8 before the sums, so results are within about 1e-5 of the
   largest output, 1-2e-6 rms, where the direct lowering is within 1e-6).  On by default; process-wide. */
void an_set_conv_winograd(int enabled);
int an_get_conv_winograd(void);
/* An activation fused into the pass that writes an op's output. */
typedef enum { AN_ACTIVATION_NONE = 0, AN_ACTIVATION_RELU, AN_ACTIVATION_RELU6 } an_activation;
/* act(batch_norm(x, ...)) in one op: the same statistics, then one pass that
   normalises and activates, bit-identical to an_relu / an_relu6 of
   an_batch_norm's result (gradients too), without the intermediate tensor.
   an_batch_norm is this with AN_ACTIVATION_NONE. */
an_tensor *an_batch_norm_act(an_tensor *x, an_tensor *running_mean, an_tensor *running_var,
                             an_tensor *weight, an_tensor *bias, int training,
                             double momentum, double eps, an_activation act);
/* an_conv2d with the activation applied to its output in the same call: for
   inference (a convolution with batch norm folded in), so it refuses inputs
   that require grad (AN_ERR_VALUE).  an_conv2d is this with
   AN_ACTIVATION_NONE. */
an_tensor *an_conv2d_act(an_tensor *x, an_tensor *weight, an_tensor *bias,
                         const int64_t stride[2], const int64_t padding[2],
                         const int64_t dilation[2], int64_t groups, an_activation act);
/* act(conv2d(x) + bias + residual), residual of the output's shape (NULL:
   none), in one call: a convolution and the residual join after it (the
   last 1x1 of an inverted residual block, a ResNet block's second conv with
   the ReLU after the join).  The same bits as an_conv2d followed by an_add
   (or an_add_relu); inference only like an_conv2d_act. */
an_tensor *an_conv2d_fused(an_tensor *x, an_tensor *weight, an_tensor *bias,
                           const int64_t stride[2], const int64_t padding[2],
                           const int64_t dilation[2], int64_t groups, an_tensor *residual,
                           an_activation act);
/* The weight [Cout, C, 1, 1] of a 1x1 convolution (groups 1) packed once
   for the GEMM's micro-kernel, for inference: a tensor [ceil(Cout / R), C, R]
   whose last dimension R is the kernel's tile height (14 or 8 on AVX-512,
   other values on other ISAs).  Passed to an_conv2d_fused_prepacked, it
   spares every call the repacking of the weight and lets the kernel stream
   it from memory in one forward run (at batch 1 the weights of
   MobileNetV2's late layers come from L3 on every inference).  AN_ERR_VALUE
   for any other weight. */
an_tensor *an_conv2d_pack_weight(an_tensor *weight);
/* an_conv2d_fused with `packed` = an_conv2d_pack_weight(weight) (NULL:
   none): the same bits.  The packed copy must come from this weight and be
   packed again if the weight changes; only its shape is checked
   (AN_ERR_VALUE when it cannot belong to the weight).  A copy packed with
   another tile height than the kernel in use now wants (the ISA was forced
   since) is ignored: the weight is then packed as usual. */
an_tensor *an_conv2d_fused_prepacked(an_tensor *x, an_tensor *weight, an_tensor *packed,
                                     an_tensor *bias, const int64_t stride[2],
                                     const int64_t padding[2], const int64_t dilation[2],
                                     int64_t groups, an_tensor *residual, an_activation act);
/* act(batch_norm(conv2d(x, weight, bias), ...)) for training: the two ops
   with their own autograd nodes, results and gradients bit-identical to
   an_conv2d followed by an_batch_norm_act, but the batch statistics come
   from each output plane's moments, which the convolution computes as it
   writes the plane (while it is in cache: its 1x1, im2col, implicit-GEMM
   and Winograd paths; after it for the others), so the batch norm makes no
   pass of its own over the convolution's output to get them.  training = 0
   is the two calls.  Errors are those of the two ops. */
/* The name of the implementation an_conv2d runs for these shapes (one of
   "depthwise", "direct3x3_few_channels", "pointwise", "winograd",
   "implicit_gemm", "implicit_gemm_strided", "im2col_gemm"), from the same
   ordered list and checks; NULL with the error set for shapes conv2d would
   refuse.  For benchmarks and tests. */
const char *an_conv2d_algorithm(const int64_t input_shape[4], const int64_t weight_shape[4],
                                const int64_t stride[2], const int64_t padding[2],
                                const int64_t dilation[2], int64_t groups);
an_tensor *an_conv2d_batch_norm_act(an_tensor *x, an_tensor *weight, an_tensor *bias,
                                    const int64_t stride[2], const int64_t padding[2],
                                    const int64_t dilation[2], int64_t groups,
                                    an_tensor *running_mean, an_tensor *running_var,
                                    an_tensor *gamma, an_tensor *beta, int training,
                                    double momentum, double eps, an_activation act);
/* An inverted-residual block (MobileNetV2's, ShuffleNetV2's branch) in one
   call, for inference:
     e = act1(conv1x1(x, w1) + b1)            (w1 NULL: e = x, no expansion)
     d = actd(depthwise3x3(e, wd, stride, padding 1) + bd)
     y = act2(conv1x1(d, w2) + b2 + residual)
   with p1 / p2 the weights packed by an_conv2d_pack_weight (or NULL), any
   bias or the residual NULL.  The same bits as the three
   an_conv2d_fused_prepacked calls, which it makes itself for layers its
   one-pass path does not take (and for every error, so the messages are
   theirs).  That path, for planes the depthwise kernel runs row by row (16
   or 32 wide) and for stride 2 onto 8-wide planes: at batch 1 each thread
   takes a band of output rows and carries it through the expansion (of the
   input rows the band reads, its edge rows too), the depthwise layer and
   the projection in buffers of its own, so that the expanded planes, the
   block's largest tensors, are read by the core that wrote them; at larger
   batches each thread takes whole images.  One image of small planes (8x8,
   4x4 on AVX-512) runs in one parallel region instead: each thread expands
   a run of channels and runs the depthwise layer on them, then projects a
   run of output rows, or, when the projection's K blocks are as many as the
   threads, sums its own channels' block for every row, the partial sums
   added in block order.  AN_ERR_VALUE for an input that requires grad.
   an_conv_pw_dw_pw_shortcut: the residual is the block's shortcut
   convolution, conv1x1(x, ws, stride) + bs (ws packed as ps, or NULL),
   computed inside the call (on each band's rows in the one-pass path, stride
   1): the same bits as computing it first with an_conv2d_fused_prepacked and
   passing it as the residual. */
an_tensor *an_conv_pw_dw_pw(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                            an_activation act1, an_tensor *wd, an_tensor *bd, int64_t stride,
                            an_activation actd, an_tensor *w2, an_tensor *p2, an_tensor *b2,
                            an_tensor *residual, an_activation act2);
an_tensor *an_conv_pw_dw_pw_shortcut(an_tensor *x, an_tensor *w1, an_tensor *p1, an_tensor *b1,
                                     an_activation act1, an_tensor *wd, an_tensor *bd,
                                     int64_t stride, an_activation actd, an_tensor *w2,
                                     an_tensor *p2, an_tensor *b2, an_tensor *ws, an_tensor *ps,
                                     an_tensor *bs, an_activation act2);
/* A run of inverted-residual blocks, each reading the one before's output
   (MobileNetV2's body at batch 1), run by an_block_chain_run in one
   parallel region instead of one per block: the threads meet at a barrier
   between blocks instead of a fork and a join, and the preparation each
   an_conv_pw_dw_pw call makes (checks, buffers, its output) is made once
   for the run.  Each block is an_conv_pw_dw_pw's (or, with ws,
   an_conv_pw_dw_pw_shortcut's) arguments but the input, which is the
   previous block's output (the chain's input for the first), and the
   residual, which is the block's input when residual_from_input is
   nonzero (an identity shortcut) and none otherwise. */
typedef struct {
    an_tensor *w1, *p1, *b1; /* the expansion (w1 NULL: none) */
    an_activation act1;
    an_tensor *wd, *bd;      /* the depthwise 3x3 layer, padding 1 */
    int64_t stride;
    an_activation actd;
    an_tensor *w2, *p2, *b2; /* the projection */
    int residual_from_input;
    an_tensor *ws, *ps, *bs; /* the shortcut convolution (ws NULL: none) */
    an_activation act2;
} an_pw_dw_pw_block;
typedef struct an_block_chain an_block_chain;
/* Keeps a reference to every tensor of blocks[0 .. count).  NULL with
   AN_ERR_VALUE for no blocks, a missing depthwise or projection weight, a
   packed shortcut weight or shortcut bias without its weight, a shortcut
   and residual_from_input together, or an unknown activation. */
an_block_chain *an_block_chain_create(int64_t count, const an_pw_dw_pw_block *blocks);
/* The chain on x: the same bits as calling an_conv_pw_dw_pw block by block
   (which it does itself for blocks its one region cannot take, on this
   input and thread count, and for every error, so the messages are those
   calls').  The weights are read at each run, so changes made to them in
   place are seen. */
an_tensor *an_block_chain_run(an_block_chain *chain, an_tensor *x);
/* Whether an_block_chain_run on an input of this shape, with the thread
   count and ISA in use now, runs every block in one parallel region. */
int an_block_chain_in_one_region(const an_block_chain *chain, int ndim, const int64_t *shape);
void an_block_chain_free(an_block_chain *chain);
an_tensor *an_max_pool2d(an_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], const int64_t dilation[2], int ceil_mode);
an_tensor *an_avg_pool2d(an_tensor *x, const int64_t kernel[2], const int64_t stride[2],
                         const int64_t padding[2], int ceil_mode, int count_include_pad);
an_tensor *an_adaptive_avg_pool2d(an_tensor *x, int64_t out_h, int64_t out_w);
/* Uses the global generator; identity when !training or p == 0. */
an_tensor *an_dropout(an_tensor *x, double p, int training);

/* --------------------------------------------------------------- losses */
typedef enum { AN_REDUCTION_NONE = 0, AN_REDUCTION_MEAN, AN_REDUCTION_SUM } an_reduction;
/* logits [N,C] (or [N,C,d...]); labels: N (or N*d...) int64 class indices.
   Labels equal to ignore_index contribute nothing (mean divides by the rest). */
an_tensor *an_cross_entropy(an_tensor *logits, const int64_t *labels, int64_t n_labels,
                            an_reduction reduction, double label_smoothing,
                            int64_t ignore_index);
/* target and (optional) weight broadcast to logits; pos_weight broadcast to the last dim. */
an_tensor *an_binary_cross_entropy_with_logits(an_tensor *logits, an_tensor *target,
                                               an_tensor *weight, an_tensor *pos_weight,
                                               an_reduction reduction);
an_tensor *an_mse_loss(an_tensor *input, an_tensor *target, an_reduction reduction);

/* ----------------------------------------------------------- optimizers */
/* In-place updates of a parameter from its .grad; never recorded.  Buffers
   are tensors of the parameter's shape owned by the optimizer. */
an_status an_sgd_step(an_tensor *param, an_tensor *grad, an_tensor *momentum_buffer /*nullable*/,
                      double lr, double momentum, double dampening, double weight_decay,
                      int nesterov, int first_step);
/* decoupled_weight_decay != 0 gives AdamW.  step counts from 1. */
an_status an_adam_step(an_tensor *param, an_tensor *grad, an_tensor *exp_avg,
                       an_tensor *exp_avg_sq, int64_t step, double lr, double beta1,
                       double beta2, double eps, double weight_decay,
                       int decoupled_weight_decay);

/* ------------------------------------------------------------ diagnostics */
const char *an_cpu_description(void);    /* CPU model, ISA chosen, caches */
const char *an_isa_warning(void);        /* why APPEALNET_ISA was not honoured ("": it was, or unset) */
size_t an_workspace_bytes(void);         /* bytes held by caches (GEMM packing, ...) */
void an_release_workspace(void);

#ifdef __cplusplus
}
#endif
#endif /* APPEALNET_H */
