"""Layers under PyTorch's names, defaults and initialisation.

Weights are drawn from the C core's generator (see appealnet.nn.init), so
``appealnet.manual_seed(s)`` before building a model fixes its weights.
"""
import math
import numbers

import numpy as np

from .. import _C
from .._api import no_grad
from . import functional as F
from . import init
from .module import Module, Parameter


_pair = F._pair


def _fan_in_bias_(bias, weight):
    """PyTorch's bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = init.calculate_fan_in_and_fan_out(weight)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(bias, -bound, bound)


# ------------------------------------------------------------------ linear
class Identity(Module):
    """Returns its input unchanged (arguments are accepted and ignored)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, weight [out_features, in_features]."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: features must be non-negative, got in_features="
                             f"{in_features}, out_features={out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(_C.empty((self.out_features, self.in_features)))
        if bias:
            self.bias = Parameter(_C.empty((self.out_features,)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.weight)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


# ------------------------------------------------------------- convolution
class Conv2d(Module):
    """2-D convolution over NCHW input; weight [out, in/groups, kh, kw].

    ``padding`` may be pixels (int or pair), ``'valid'`` (0) or ``'same'``
    (stride 1 only; an odd total padding puts the extra pixel on the
    right/bottom, like PyTorch).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__()
        if groups <= 0:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) must be divisible by "
                             f"groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"Conv2d: out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2d: invalid padding string {padding!r}, should be one "
                                 f"of 'valid', 'same'")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided "
                                 "convolutions")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        self.weight = Parameter(_C.empty((self.out_channels, self.in_channels // self.groups)
                                         + self.kernel_size))
        if bias:
            self.bias = Parameter(_C.empty((self.out_channels,)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _fan_in_bias_(self.bias, self.weight)

    def _explicit_padding(self):
        """(symmetric padding pair, extra (left, right, top, bottom) or None)."""
        if self.padding == "valid":
            return (0, 0), None
        if self.padding != "same":
            return self.padding, None
        symmetric, extra = [], [0, 0, 0, 0]
        for axis in range(2):
            total = self.dilation[axis] * (self.kernel_size[axis] - 1)
            symmetric.append(total // 2)
            # the odd pixel goes after (right for width, bottom for height)
            extra[(1 - axis) * 2 + 1] = total % 2
        return tuple(symmetric), (tuple(extra) if any(extra) else None)

    def forward(self, x):
        padding, extra = self._explicit_padding()
        if extra is not None:
            x = F.pad(x, extra)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, " \
            f"stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) \
                else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


# ------------------------------------------------------------- batch norm
# the C op as loaded; a trace (ONNX export, plans, the profiler) replaces it
_CONV2D_BATCH_NORM = _C.conv2d_batch_norm


class _BatchNorm(Module):
    _expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, *, bias=True):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(_C.empty((self.num_features,)))
            if bias:
                self.bias = Parameter(_C.empty((self.num_features,)))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", _C.zeros((self.num_features,)))
            self.register_buffer("running_var", _C.full((self.num_features,), 1.0))
            # float32 counts exactly up to 2^24 batches; stored as a 0-d tensor
            # so that it travels in state_dict like PyTorch's.
            self.register_buffer("num_batches_tracked", _C.zeros(()))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1.0)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, x):
        if x.ndim not in self._expected_dims:
            expected = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {expected} input "
                             f"(got {x.ndim}D input with shape {list(x.shape)})")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels "
                             f"in dim 1, got input of shape {list(x.shape)}")

    def forward(self, x, activation=None):
        """Normalises x; ``activation`` ("relu" or "relu6") is fused into the
        same pass, so ``bn(x, activation="relu")`` equals ``F.relu(bn(x))``
        bit for bit with one memory pass and one backward node fewer."""
        self._check_input_dim(x)
        F._check_batch_norm_activation(activation)
        running_mean, running_var, use_batch_stats, momentum, count = self._call_arguments()
        out = F.batch_norm(x, running_mean, running_var, self.weight, self.bias,
                           use_batch_stats, momentum, self.eps, activation=activation)
        self._count_batch(count)  # after the call: a bad call changes nothing
        return out

    def _call_arguments(self):
        """(running_mean, running_var, use_batch_stats, momentum, new batch
        count or None) for this call."""
        momentum = 0.0 if self.momentum is None else self.momentum
        count = None
        if self.training and self.track_running_stats:
            count = self.num_batches_tracked.item() + 1
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / count
        use_batch_stats = self.training or self.running_mean is None
        # In training without tracking, or in eval without stats, no running
        # stats are passed (they would be updated or required otherwise).
        track = not self.training or self.track_running_stats
        return (self.running_mean if track else None, self.running_var if track else None,
                use_batch_stats, momentum, count)

    def _count_batch(self, count):
        if count is not None:
            self.num_batches_tracked.fill_(count)

    def _fuses_with(self, conv):
        if not self.training or self._expected_dims != (4,):
            return False
        if type(conv).forward is not Conv2d.forward or type(self).forward is not _BatchNorm.forward:
            return False
        for module in (conv, self):
            if "forward" in module.__dict__ or module.__dict__.get("_forward_pre_hooks") or \
                    module.__dict__.get("_forward_hooks"):
                return False
        return _C.conv2d_batch_norm is _CONV2D_BATCH_NORM  # not wrapped by a trace

    def _after_conv(self, conv, x, activation):
        """conv_batch_norm's fused call (see there)."""
        F._check_batch_norm_activation(activation)
        padding, extra = conv._explicit_padding()
        if extra is not None:
            x = F.pad(x, extra)
        running_mean, running_var, use_batch_stats, momentum, count = self._call_arguments()
        out = F.conv2d_batch_norm(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation,
                                  conv.groups, running_mean, running_var, self.weight, self.bias,
                                  use_batch_stats, momentum, self.eps, activation=activation)
        self._count_batch(count)
        return out


    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


def conv_batch_norm(conv, bn, x, activation=None):
    """``bn(conv(x), activation=activation)`` (``bn(conv(x))`` when
    activation is None), bit for bit: outputs, gradients, running
    statistics.  In training, with a plain :class:`Conv2d` and
    :class:`BatchNorm2d`, the batch statistics come from moments that the
    convolution computes on each output plane as it writes it
    (``F.conv2d_batch_norm``), which saves the batch norm a pass over the
    convolution's output.  The model zoo runs every convolution that a batch
    norm follows through this.

    Anything else is the two calls, unchanged: eval mode; modules of other
    types (a fused or folded pair from ``fuse_for_inference``, a user's
    replacement); forward hooks or a replaced ``forward`` on either module
    (the profiler, tracing); or while a trace wraps the C ops (ONNX export,
    inference plans)."""
    if isinstance(bn, _BatchNorm) and bn._fuses_with(conv):
        return bn._after_conv(conv, x, activation)
    y = conv(x)
    return bn(y) if activation is None else bn(y, activation=activation)


class BatchNorm1d(_BatchNorm):
    """Batch norm over [N, C] or [N, C, L] input."""
    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over [N, C, H, W] input."""
    _expected_dims = (4,)


# ------------------------------------------------------------- activations
class _Activation(Module):
    def __init__(self, inplace=False):
        super().__init__()
        # Results are never written in place; the flag is kept for
        # PyTorch-compatible construction and repr.
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Activation):
    def forward(self, x):
        return F.relu(x)


class ReLU6(_Activation):
    def forward(self, x):
        return F.relu6(x)


class SiLU(_Activation):
    def forward(self, x):
        return F.silu(x)


class Hardswish(_Activation):
    def forward(self, x):
        return F.hardswish(x)


class Hardsigmoid(_Activation):
    def forward(self, x):
        return F.hardsigmoid(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


def _legacy_softmax_dim(ndim):
    # PyTorch's rule when dim is not given.
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        dim = _legacy_softmax_dim(x.ndim) if self.dim is None else self.dim
        return F.softmax(x, dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        dim = _legacy_softmax_dim(x.ndim) if self.dim is None else self.dim
        return F.log_softmax(x, dim)


# ---------------------------------------------------------------- dropout
class Dropout(Module):
    """Zeroes each element with probability p in training (scaling the rest
    by 1/(1-p)); identity in eval."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)
        self.inplace = inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


# ---------------------------------------------------------------- pooling
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        if return_indices:
            raise ValueError("MaxPool2d: return_indices=True is not supported")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = False
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        if divisor_override is not None:
            raise ValueError("AvgPool2d: divisor_override is not supported")
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; None in output_size keeps
    that input dimension."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        size = self.output_size
        if isinstance(size, (numbers.Integral, np.integer)) or size is None:
            size = (size, size)
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAvgPool2d: expected 4D input [N, C, H, W], got shape "
                             f"{list(x.shape)}")
        size = tuple(x.shape[2 + i] if s is None else int(s) for i, s in enumerate(size))
        return F.adaptive_avg_pool2d(x, size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# ------------------------------------------------------------------ shape
class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ChannelShuffle(Module):
    """ShuffleNet's channel shuffle of NCHW input across ``groups``."""

    def __init__(self, groups):
        super().__init__()
        self.groups = int(groups)

    def forward(self, x):
        return F.channel_shuffle(x, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"
