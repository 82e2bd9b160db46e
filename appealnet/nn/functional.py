"""appealnet.nn.functional — differentiable ops under PyTorch's names.

Each function is a thin wrapper over the C core (appealnet._C), which
validates its arguments and raises ValueError/TypeError/IndexError with the
op's name and the shapes involved.
"""
import numbers

import numpy as np

from .. import _C
from .._tensor import _as_tensor

_REDUCTIONS = ("none", "mean", "sum")


def _pair(value, name):
    if isinstance(value, (numbers.Integral, np.integer)):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value}")
    return value


def _reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


# ------------------------------------------------------------ activations
def relu(x, inplace=False):
    return _C.relu(x)


def add_relu(a, b):
    """``relu(a + b)`` in one pass forward and one backward (the join of a
    residual block); bit-identical to ``relu(a + b)``."""
    return _C.add_relu(a, b)


def relu6(x, inplace=False):
    return _C.relu6(x)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    return _C.leaky_relu(x, float(negative_slope))


def sigmoid(x):
    return _C.sigmoid(x)


def tanh(x):
    return _C.tanh(x)


def silu(x, inplace=False):
    return _C.silu(x)


def hardswish(x, inplace=False):
    return _C.hardswish(x)


def hardsigmoid(x, inplace=False):
    return _C.hardsigmoid(x)


def logsigmoid(x):
    return _C.log_sigmoid(x)


log_sigmoid = logsigmoid


def softmax(x, dim):
    return _C.softmax(x, int(dim))


def log_softmax(x, dim):
    return _C.log_softmax(x, int(dim))


# ----------------------------------------------------------- linear algebra
def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, weight [out, in]."""
    return _C.linear(x, weight, bias)


def matmul(a, b):
    return _C.matmul(_as_tensor(a), _as_tensor(b))


# ------------------------------------------------------------ convolution
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution over NCHW input; weight [Cout, Cin/groups, kh, kw]."""
    if isinstance(padding, str):
        raise ValueError("string padding is not supported; give the padding in pixels")
    return _C.conv2d(x, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"),
                     _pair(dilation, "dilation"), int(groups))


_BATCH_NORM_ACTIVATIONS = (None, "relu", "relu6")


def _check_batch_norm_activation(activation):
    if not (activation is None or (isinstance(activation, str)
                                   and activation in _BATCH_NORM_ACTIVATIONS)):
        raise ValueError(f"batch_norm: activation must be None, 'relu' or 'relu6', "
                         f"got {activation!r}")
    return activation


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, activation=None):
    """Batch norm over dim 1.  In training, batch statistics are used and the
    running stats (when given) are updated in place with the unbiased variance.

    ``activation`` ("relu" or "relu6") is applied in the same pass:
    ``batch_norm(x, ..., activation="relu")`` equals ``relu(batch_norm(x, ...))``
    bit for bit, gradients included, but never materialises the normalised
    tensor and runs one backward node instead of two."""
    return _C.batch_norm(x, running_mean, running_var, weight, bias, bool(training),
                         float(momentum), float(eps), _check_batch_norm_activation(activation))


def conv2d_algorithm(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Which implementation ``conv2d`` runs for these shapes: "depthwise",
    "direct3x3_few_channels", "pointwise", "winograd", "implicit_gemm",
    "implicit_gemm_strided" or "im2col_gemm" (the first of that ordered list
    that accepts them).  For benchmarks and tests; shapes conv2d would
    refuse raise its error."""
    if isinstance(padding, str):
        raise ValueError("string padding is not supported; give the padding in pixels")
    return _C.conv2d_algorithm(tuple(int(d) for d in input_shape), tuple(int(d) for d in weight_shape),
                               _pair(stride, "stride"), _pair(padding, "padding"),
                               _pair(dilation, "dilation"), int(groups))


def conv2d_batch_norm(x, weight, bias, stride, padding, dilation, groups, running_mean,
                      running_var, bn_weight=None, bn_bias=None, training=False, momentum=0.1,
                      eps=1e-5, activation=None):
    """``batch_norm(conv2d(x, weight, bias, stride, padding, dilation, groups),
    running_mean, running_var, bn_weight, bn_bias, training, momentum, eps,
    activation)``: the same two ops, autograd nodes, results and gradients,
    bit for bit.  In training the batch statistics come from each output
    plane's moments (sum, squared deviations), which the convolution computes
    as it writes the plane, while it is still in cache: the batch norm then
    makes no pass of its own over the convolution's output to get them."""
    if isinstance(padding, str):
        raise ValueError("string padding is not supported; give the padding in pixels")
    return _C.conv2d_batch_norm(x, weight, bias, _pair(stride, "stride"), _pair(padding, "padding"),
                                _pair(dilation, "dilation"), int(groups), running_mean, running_var,
                                bn_weight, bn_bias, bool(training), float(momentum), float(eps),
                                _check_batch_norm_activation(activation))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    stride = kernel_size if stride is None else stride
    return _C.max_pool2d(x, _pair(kernel_size, "kernel_size"), _pair(stride, "stride"),
                         _pair(padding, "padding"), _pair(dilation, "dilation"), bool(ceil_mode))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    stride = kernel_size if stride is None else stride
    return _C.avg_pool2d(x, _pair(kernel_size, "kernel_size"), _pair(stride, "stride"),
                         _pair(padding, "padding"), bool(ceil_mode), bool(count_include_pad))


def adaptive_avg_pool2d(x, output_size):
    return _C.adaptive_avg_pool2d(x, _pair(output_size, "output_size"))


def dropout(x, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return _C.dropout(x, float(p), bool(training))


def pad(x, pad, mode="constant", value=0.0):
    """Pads the last len(pad)//2 dims; pad = (left, right, top, bottom, ...)."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise ValueError(f"pad must have an even number of entries, got {len(pad)}")
    if mode not in ("constant", "reflect", "replicate"):
        raise ValueError(f"pad mode must be 'constant', 'reflect' or 'replicate', got {mode!r}")
    return _C.pad(x, pad, mode, float(value))


# ------------------------------------------------------------------ shape
def flatten(x, start_dim=0, end_dim=-1):
    return _C.flatten(x, int(start_dim), int(end_dim))


def channel_shuffle(x, groups):
    return _C.channel_shuffle(x, int(groups))


def channel_shuffle_cat(tensors):
    """``channel_shuffle(cat(tensors, dim=1), len(tensors))`` for tensors of one
    shape [N, C, H, W], in one pass forward and one backward (the end of a
    ShuffleNet v2 unit): output channel ``a * n + i`` is channel ``a`` of
    ``tensors[i]``."""
    return _C.channel_shuffle_concat(list(tensors))


def cat(tensors, dim=0):
    return _C.concat(list(tensors), int(dim))


def split(x, split_size_or_sections, dim=0):
    """Views of x along dim: chunks of a given size, or sizes given as a list."""
    size = x.shape[dim]
    if isinstance(split_size_or_sections, (numbers.Integral, np.integer)):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sections = [min(step, size - s) for s in range(0, size, step)] or [0]
    else:
        sections = [int(s) for s in split_size_or_sections]
        if sum(sections) != size or any(s < 0 for s in sections):
            raise ValueError(f"split: sections {sections} do not sum to dimension size {size}")
    out, start = [], 0
    for s in sections:
        out.append(_C.slice(x, dim, start, start + s, 1))
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    size = x.shape[dim]
    step = -(-size // chunks) if size else 1
    return split(x, step, dim)


# ----------------------------------------------------------------- losses
def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Cross-entropy of logits [N, C] against integer class labels [N]."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    return _C.cross_entropy(logits, target, _reduction(reduction), float(label_smoothing),
                            int(ignore_index))


def binary_cross_entropy_with_logits(logits, target, weight=None, reduction="mean",
                                     pos_weight=None):
    return _C.binary_cross_entropy_with_logits(logits, _as_tensor(target), weight, pos_weight,
                                               _reduction(reduction))


def mse_loss(input, target, reduction="mean"):
    return _C.mse_loss(input, _as_tensor(target), _reduction(reduction))
