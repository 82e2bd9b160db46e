"""Hardware profiler: the compute, size, memory and speed of a model.

AppealNet's design flow (paper Fig. 3) picks the edge network from a pool by
what the device can afford; this module measures what a model costs:

    prof = profile(model, (3, 32, 32))
    prof.macs, prof.params                 # per image; parameters
    prof.activation_bytes_inference        # peak live activations at batch_size
    prof.activation_bytes_training(128)    # activations kept for backward
    print(prof.table())                    # one row per layer

How counting works
------------------
One forward pass of a batch of one all-zero image runs in eval mode under
no_grad.  While it runs, every op of the C core (``appealnet._C``) is
wrapped, so the profiler sees each convolution, batch norm, ReLU, residual add
and SE multiplication whether the model author called a module
(``nn.ReLU()``), a function (``F.relu``) or an operator (``a + b``): the
counts do not depend on that choice.  Forward hooks on every module tell
which module each op ran in.  A leaf module (one without children) becomes
one row; an op run directly in a container's ``forward`` (the ``F.relu`` and
``out + shortcut`` of a residual block) becomes a row of its own, named after
that container and typed ``F.<op>``.  Rows that did no work and hold no
parameters (an empty ``Sequential`` shortcut) are left out.  All counts are
per image.

Conventions (``convention=``)
-----------------------------
``"macs"`` — multiply-accumulates of the linear-algebra ops only:

* ``conv2d``: output elements x (in_channels / groups) x kh x kw
  (so stride, padding, dilation and groups are all accounted for by the
  output size and the weight shape);
* ``linear``: output elements x in_features;
* ``matmul``: output elements x the contracted dimension.

Bias additions, batch norm, activations, pooling and element-wise ops count
zero.  This is the figure usually quoted as "MACs" or "FLOPs" (2510.0 M for
the CIFAR ResNet-101, 91.15 M for the CIFAR MobileNetV2).

``"paper"`` — the convention behind AppealNet's Table I ("MFLOPs"), which is
what the ``ptflops`` counter's module hooks give on the pytorch-cifar
models the paper used:

* ``conv2d`` and ``linear``: their MACs plus one per output element when
  there is a bias;
* ``matmul``: its MACs;
* ``batch_norm``: two per element (normalise, then scale-and-shift) when it
  is affine (has a weight or a bias), one per element otherwise;
* activations, pooling, residual adds, SE multiplications, softmax, shape
  ops: zero.

Why activations count zero: ptflops counts a ReLU (one per element) or a
pooling layer (one per input element) only when it is a module, and
pytorch-cifar writes ``F.relu`` and ``F.avg_pool2d``, so the paper's figures
contain no activation or pooling cost.  Here neither counts in any form, so
the figure does not depend on how a model is written (ptflops itself would
add 0.12 M for the ``nn.AvgPool2d`` shortcuts of our ShuffleNetV1).
Counting "one per BN element and one per activation element" instead gives
2519.70 / 94.41.  The rule above gives 2520.19 / 94.60 for the CIFAR-10
ResNet-101 / MobileNetV2 (paper: 2520.3 / 94.6), 2520.38 / 94.72 with 100
classes (2520.4 / 94.7), and, for torchvision-layout ResNet-101 and
MobileNetV2 at 224x224 with 200 classes (what the Tiny-ImageNet column
fits), 7832.23 / 313.11 (paper: 7832.34 / 313.11).

Memory
------
Activations are float32 (4 bytes per element); parameters and BN buffers are
not activations.  Ops that only reshape (reshape, view, flatten, permute,
transpose, select, slice, detach) are treated as views of their input.

``activation_bytes_inference`` — the peak, over the ops in execution order,
of the activations alive at once when each one is freed right after its last
use (the model input included, the model outputs kept to the end), at
``batch_size`` images: what an executor that frees eagerly needs at least.

``activation_bytes_training(batch)`` — the distinct activations that
autograd keeps for the backward pass, at ``batch`` images, following
PyTorch's saved-tensor rules: conv2d, linear, matmul, batch_norm,
max_pool2d and the non-piecewise-linear activations (silu, hardswish,
hardsigmoid, leaky_relu, ...) keep their input; relu, relu6, sigmoid, tanh,
exp, softmax and log_softmax keep their output; mul and div keep both
operands when both are activations (an SE gate times its feature map);
add, sub, pooling by averaging, concatenation, channel shuffle, padding and
shape ops keep nothing; a batch norm with a fused activation
(``bn(x, activation="relu")``) keeps its input and its output, as batch norm
followed by relu does (the activation is also listed among the row's ops).  A tensor kept by two ops (a ReLU's output that the
next convolution also keeps) counts once.  Per-op scratch (BN's per-channel
statistics, pooling indices beyond the input) and ops skipped in eval mode
(dropout) are not included; gradients and optimizer state are not
activations.

Latency (``measure_latency=True``)
----------------------------------
Forward passes under no_grad in eval mode on all-zero inputs, after two
warm-up runs: ``latency_ms[batch]`` is the median and
``latency_p90_ms[batch]`` the 90th percentile of ``repeats`` timed runs.

TwoHead models
--------------
When the model has a ``predictor`` child (``appealnet.models.TwoHead``),
``predictor_macs`` and ``predictor_params`` give the predictor head's share
of the totals; otherwise they are None.
"""
import numbers
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from . import _C
from ._api import no_grad
from ._tracing import TRACE_LOCK
from .nn.module import Module, Parameter

CONVENTIONS = ("macs", "paper")
BYTES_PER_ELEMENT = 4  # float32

# Ops whose result is a view of (or the same data as) their first input.
_ALIAS_OPS = frozenset({"reshape", "view", "flatten", "permute", "transpose", "select",
                        "slice", "detach"})
# Ops counted (and, for memory, tracked).  Creation, RNG, optimizer and
# thread-control functions of _C are not ops of a forward pass.
_COMPUTE_OPS = frozenset({
    "abs", "adaptive_avg_pool2d", "add", "add_relu", "avg_pool2d", "batch_norm", "channel_shuffle",
    "channel_shuffle_concat", "clamp", "clone", "concat", "contiguous", "conv2d", "div", "dropout", "exp", "hardsigmoid",
    "hardswish", "index_select", "leaky_relu", "linear", "log", "log_sigmoid", "log_softmax",
    "matmul", "max_pool2d", "mean", "mul", "neg", "pad", "pow_scalar", "relu", "relu6",
    "sigmoid", "silu", "softmax", "sqrt", "sub", "sum", "tanh"})
_SAVES_INPUTS = frozenset({"conv2d", "linear", "matmul", "batch_norm", "max_pool2d", "silu",
                           "hardswish", "hardsigmoid", "leaky_relu", "log", "log_sigmoid", "abs",
                           "clamp", "pow_scalar"})
_SAVES_OUTPUT = frozenset({"add_relu", "relu", "relu6", "sigmoid", "tanh", "exp", "softmax", "log_softmax",
                           "sqrt"})
_SAVES_BOTH_OPERANDS = frozenset({"mul", "div"})


# ----------------------------------------------------------------- op costs
def _tensors_in(values):
    """Tensors among positional arguments (concat takes a list of them)."""
    found = []
    for value in values:
        if isinstance(value, _C.TensorBase):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, _C.TensorBase))
    return found


def _numel(tensor):
    return int(np.prod(tensor.shape, dtype=np.int64))


def _op_costs(op, args, output):
    """(macs convention, paper convention) cost of one op call, per the
    rules in the module docstring."""
    out_elements = _numel(output)
    if op == "conv2d":
        weight, bias = args[1], args[2] if len(args) > 2 else None
        kernel_h, kernel_w = weight.shape[2], weight.shape[3]
        macs = out_elements * weight.shape[1] * kernel_h * kernel_w
        return macs, macs + (out_elements if bias is not None else 0)
    if op == "linear":
        weight, bias = args[1], args[2] if len(args) > 2 else None
        macs = out_elements * weight.shape[1]
        return macs, macs + (out_elements if bias is not None else 0)
    if op == "matmul":
        macs = out_elements * args[0].shape[-1]
        return macs, macs
    if op == "batch_norm":
        weight = args[3] if len(args) > 3 else None
        bias = args[4] if len(args) > 4 else None
        affine = weight is not None or bias is not None
        return 0, _numel(args[0]) * (2 if affine else 1)
    return 0, 0


def _fused_activation(op, args):
    """The activation a batch_norm call applied in its own pass, or None."""
    if op == "batch_norm" and len(args) > 8:
        return args[8]
    return None


# ------------------------------------------------------------------ records
@dataclass
class LayerRow:
    """One row of the per-layer table (counts per image)."""
    name: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    macs: int = 0
    params: int = 0
    output_elements: int = 0
    ops: list = field(default_factory=list)

    def to_dict(self):
        return {"name": self.name, "type": self.kind,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "output_shape": list(self.output_shape) if self.output_shape else None,
                "macs": self.macs, "params": self.params,
                "output_elements": self.output_elements, "ops": list(self.ops)}


@dataclass
class _OpRecord:
    name: str
    input_buffers: list        # buffer ids of activation inputs
    output_buffer: int
    saved_buffers: list        # buffer ids autograd would keep


class _Tracer:
    """Wraps the C core's ops for one forward pass on one thread; attributes
    each op to the innermost module running (via forward hooks).  Ops run by
    other threads pass through uncounted; the model itself must not be run
    by another thread while it is profiled."""

    def __init__(self, convention):
        self.convention_index = CONVENTIONS.index(convention)
        self.thread = threading.get_ident()
        self.module_stack = []       # (module name, its row if a leaf, else None)
        self.rows = []
        self.ops = []
        self.keep_alive = []         # ids of tensors stay unique while we hold them
        self.buffer_of = {}          # id(tensor) -> buffer id
        self.buffer_elements = []    # buffer id -> elements (per image)
        self.seen_params = set()
        self.module_names = {}       # id(module) -> dotted name, filled by _trace

    # -- buffers ---------------------------------------------------------
    def new_buffer(self, tensor):
        """Registers a freshly computed activation; returns its buffer id."""
        self.keep_alive.append(tensor)
        self.buffer_of[id(tensor)] = len(self.buffer_elements)
        self.buffer_elements.append(_numel(tensor))
        return self.buffer_of[id(tensor)]

    def alias(self, tensor, buffer):
        """Registers a view: same buffer, no new memory."""
        self.keep_alive.append(tensor)
        self.buffer_of[id(tensor)] = buffer

    # -- module hooks ----------------------------------------------------
    def pre_hook(self, name, module):
        def hook(_module, args):
            row = None
            if next(module.children(), None) is None:
                first = _tensors_in(args)
                row = LayerRow(name or "(model)", type(module).__name__,
                               tuple(first[0].shape) if first else (), ())
            self.module_stack.append((name, row))
        return hook

    def post_hook(self):
        def hook(_module, _args, output):
            _, row = self.module_stack.pop()
            if row is not None and (row.ops or row.params):
                outputs = _tensors_in([output])
                if outputs:
                    row.output_shape = tuple(outputs[0].shape)
                    row.output_elements = sum(_numel(t) for t in outputs)
                self.rows.append(row)
        return hook

    # -- op wrapper ------------------------------------------------------
    def wrap(self, op, function):
        def traced(*args, **kwargs):
            output = function(*args, **kwargs)
            if threading.get_ident() == self.thread:
                self.record(op, args, output)
            return output
        traced.__name__ = getattr(function, "__name__", op)
        return traced

    def record(self, op, args, output):
        outputs = _tensors_in([output])
        if not outputs:
            return
        tensors = _tensors_in(args)
        params = [t for t in tensors if isinstance(t, Parameter)]
        activations = [t for t in tensors if id(t) in self.buffer_of]
        input_buffers = [self.buffer_of[id(t)] for t in activations]
        result = outputs[0]
        if op in _ALIAS_OPS or (input_buffers and any(result is t for t in activations)):
            self.alias(result, input_buffers[0] if input_buffers else self.new_buffer(result))
            output_buffer = self.buffer_of[id(result)]
            cost = 0
        else:
            output_buffer = self.new_buffer(result)
            cost = _op_costs(op, args, result)[self.convention_index]
        saved = []
        if op in _SAVES_INPUTS:
            saved = input_buffers[:1]
        elif op in _SAVES_OUTPUT:
            saved = [output_buffer]
        elif op in _SAVES_BOTH_OPERANDS and len(input_buffers) >= 2:
            saved = input_buffers[:2]
        activation = _fused_activation(op, args)
        if activation in _SAVES_OUTPUT:
            # batch norm + relu in one op keeps what the two ops would: the
            # input for the normalisation, the output for the relu's mask
            saved = saved + [output_buffer]
        self.ops.append(_OpRecord(op, input_buffers, output_buffer, saved))

        new_params = 0
        for param in params:
            if id(param) not in self.seen_params:
                self.seen_params.add(id(param))
                new_params += _numel(param)
        self.attribute(op, tensors, result, cost, new_params)
        if activation is not None:
            self.attribute(activation, [result], result, 0, 0)

    def running_module_name(self):
        """Dotted name of the innermost module whose method is running.

        Hooks only see modules entered through ``module(x)``; a model that
        calls ``self.backbone.forward_features(x)`` runs the backbone's code
        without entering it, so the call stack is asked instead."""
        frame = sys._getframe(3)   # running_module_name <- attribute <- record <- traced
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self.module_names:
                return self.module_names[id(owner)]
            frame = frame.f_back
        return ""

    def attribute(self, op, inputs, result, cost, params):
        row = self.module_stack[-1][1] if self.module_stack else None
        if row is None:  # an op run directly in a container's forward
            name = self.running_module_name()
            row = LayerRow(name or "(model)", f"F.{op}",
                           tuple(inputs[0].shape) if inputs else (), tuple(result.shape),
                           output_elements=_numel(result))
            self.rows.append(row)
        row.ops.append(op)
        row.macs += int(cost)
        row.params += params


def _peak_live_elements(tracer, input_buffer, output_buffers):
    """Peak of the per-image elements alive at once, each buffer freed after
    its last use (outputs kept to the end)."""
    count = len(tracer.buffer_elements)
    birth = [None] * count
    last_use = [None] * count
    birth[input_buffer] = -1
    last_use[input_buffer] = -1
    for index, record in enumerate(tracer.ops):
        for buffer in record.input_buffers:
            last_use[buffer] = index
        if birth[record.output_buffer] is None:
            birth[record.output_buffer] = index
        last_use[record.output_buffer] = max(last_use[record.output_buffer] or index, index)
    end = len(tracer.ops)
    for buffer in output_buffers:
        last_use[buffer] = end
    deltas = np.zeros(end + 3, dtype=np.int64)   # slot 0 is "before the first op"
    for buffer in range(count):
        if birth[buffer] is None:
            continue
        deltas[birth[buffer] + 1] += tracer.buffer_elements[buffer]
        deltas[last_use[buffer] + 2] -= tracer.buffer_elements[buffer]
    return int(np.cumsum(deltas).max())


def _saved_elements(tracer):
    saved = {buffer for record in tracer.ops for buffer in record.saved_buffers}
    return int(sum(tracer.buffer_elements[buffer] for buffer in saved))


# ------------------------------------------------------------------ profile
class Profile:
    """What ``profile`` measured; see the module docstring for definitions."""

    def __init__(self, model_name, input_shape, convention, macs, params, layers,
                 batch_size, training_batch_size, peak_live_elements, saved_elements,
                 predictor_macs=None, predictor_params=None):
        self.model_name = model_name
        self.input_shape = tuple(input_shape)
        self.convention = convention
        self.macs = int(macs)
        self.params = int(params)
        self.layers = layers
        self.batch_size = int(batch_size)
        self.training_batch_size = int(training_batch_size)
        self.predictor_macs = predictor_macs
        self.predictor_params = predictor_params
        self.peak_live_elements_per_image = int(peak_live_elements)
        self.saved_elements_per_image = int(saved_elements)
        self.latency_ms = {}
        self.latency_p90_ms = {}

    @property
    def activation_bytes_inference(self):
        """Peak live activation bytes of a forward pass at ``batch_size``."""
        return self.peak_live_elements_per_image * self.batch_size * BYTES_PER_ELEMENT

    def activation_bytes_training(self, batch=None):
        """Bytes of the activations kept for backward at ``batch`` images
        (default: the profile's ``training_batch_size``)."""
        batch = self.training_batch_size if batch is None else _positive_int(batch, "batch")
        return self.saved_elements_per_image * batch * BYTES_PER_ELEMENT

    def macs_under(self, prefix):
        """Sum of the rows of module ``prefix`` and its descendants."""
        return sum(row.macs for row in self.layers
                   if row.name == prefix or row.name.startswith(prefix + "."))

    def table(self):
        """The per-layer rows and the totals as aligned text."""
        header = ("layer", "type", "input", "output", "MACs" if self.convention == "macs"
                  else "MFLOPs(paper)", "params", "out elems")
        body = [(row.name, row.kind, _shape_text(row.input_shape), _shape_text(row.output_shape),
                 f"{row.macs:,}", f"{row.params:,}", f"{row.output_elements:,}")
                for row in self.layers]
        widths = [max(len(str(cells[i])) for cells in [header] + body) for i in range(7)]
        right = {4, 5, 6}

        def line(cells):
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines = [line(header), line(["-" * w for w in widths])] + [line(cells) for cells in body]
        lines.append("")
        unit = "MACs" if self.convention == "macs" else "FLOPs (paper convention)"
        lines.append(f"{self.model_name} at input {_shape_text(self.input_shape)}: "
                     f"{self.macs / 1e6:.2f} M {unit} per image, {self.params / 1e6:.3f} M params")
        if self.predictor_macs is not None:
            lines.append(f"predictor head: {self.predictor_macs:,} {unit}, "
                         f"{self.predictor_params:,} params")
        lines.append(f"activations: {_mib(self.activation_bytes_inference)} peak at inference "
                     f"(batch {self.batch_size}), {_mib(self.activation_bytes_training())} kept "
                     f"for backward (batch {self.training_batch_size})")
        for batch in sorted(self.latency_ms):
            lines.append(f"latency at batch {batch}: median {self.latency_ms[batch]:.3f} ms, "
                         f"p90 {self.latency_p90_ms[batch]:.3f} ms")
        return "\n".join(lines)

    def to_dict(self):
        """Plain Python values (JSON-serialisable)."""
        return {
            "model": self.model_name, "input_shape": list(self.input_shape),
            "convention": self.convention, "macs": self.macs, "params": self.params,
            "predictor_macs": self.predictor_macs, "predictor_params": self.predictor_params,
            "batch_size": self.batch_size, "training_batch_size": self.training_batch_size,
            "activation_bytes_inference": self.activation_bytes_inference,
            "activation_bytes_training": self.activation_bytes_training(),
            "latency_ms": {str(b): v for b, v in self.latency_ms.items()},
            "latency_p90_ms": {str(b): v for b, v in self.latency_p90_ms.items()},
            "layers": [row.to_dict() for row in self.layers],
        }

    def __repr__(self):
        return (f"Profile({self.model_name}, macs={self.macs:,} ({self.convention}), "
                f"params={self.params:,})")


def _shape_text(shape):
    return "x".join(str(s) for s in shape) if shape else "-"


def _mib(nbytes):
    return f"{nbytes / 2**20:.2f} MiB"


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) \
            or value < 1:
        raise ValueError(f"profile: {what} must be a positive integer, got {value!r}")
    return int(value)


def _check_input_shape(input_shape):
    if isinstance(input_shape, (numbers.Integral, np.integer)):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"profile: input_shape must be a tuple of ints (one image, no batch "
                        f"dimension), got {input_shape!r}") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, (numbers.Integral, np.integer))
                        or s < 1 for s in shape):
        raise ValueError(f"profile: input_shape must be positive ints (one image, no batch "
                         f"dimension, e.g. (3, 32, 32)), got {input_shape!r}")
    return tuple(int(s) for s in shape)


def _model_name(model):
    arch = getattr(model, "arch", None)
    if isinstance(arch, dict) and isinstance(arch.get("name"), str):
        return arch["name"]
    return type(model).__name__


def _trace(model, input_shape, convention):
    """Runs the counting forward; returns the tracer, input and output buffers."""
    tracer = _Tracer(convention)
    handles, originals = [], {}
    modes = [(module, module.training) for module in model.modules()]
    # Counting needs no speed, and one image is too small to share out:
    # waking idle OpenMP threads for each tiny op costs more than the op.
    threads = _C.get_num_threads()
    try:
        _C.set_num_threads(1)
        for name, module in model.named_modules():
            tracer.module_names[id(module)] = name
            handles.append(module.register_forward_pre_hook(tracer.pre_hook(name, module)))
            handles.append(module.register_forward_hook(tracer.post_hook()))
        for op in _COMPUTE_OPS | _ALIAS_OPS:
            if hasattr(_C, op):
                originals[op] = getattr(_C, op)
                setattr(_C, op, tracer.wrap(op, originals[op]))
        model.eval()
        image = _C.zeros((1,) + input_shape)
        input_buffer = tracer.new_buffer(image)
        with no_grad():
            output = model(image)
    finally:
        _C.set_num_threads(threads)
        for op, function in originals.items():
            setattr(_C, op, function)
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    output_buffers = [tracer.buffer_of[id(t)] for t in _flatten_outputs(output)
                      if id(t) in tracer.buffer_of]
    return tracer, input_buffer, output_buffers


def _flatten_outputs(output):
    if isinstance(output, _C.TensorBase):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _flatten_outputs(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flatten_outputs(item)]
    return []


# The C ops are swapped on the shared _C module: one trace at a time, with
# ONNX export and inference plans too (they swap the same functions).
_TRACE_LOCK = TRACE_LOCK


def profile(model, input_shape, convention="macs", batch_size=1, training_batch_size=128,
            measure_latency=False, latency_batch_sizes=(1, 32), repeats=10):
    """Profiles ``model`` on inputs of ``input_shape`` (one image, without the
    batch dimension, e.g. ``(3, 32, 32)``); returns a :class:`Profile`.

    ``convention`` picks how ``macs`` counts ("macs" or "paper", see the
    module docstring).  ``batch_size`` scales ``activation_bytes_inference``;
    ``training_batch_size`` is the default batch of
    ``activation_bytes_training()``.  With ``measure_latency`` the forward
    pass is timed ``repeats`` times at each of ``latency_batch_sizes``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"profile: expected an appealnet.nn.Module, got {type(model).__name__}")
    if convention not in CONVENTIONS:
        raise ValueError(f"profile: convention must be one of {CONVENTIONS}, got {convention!r}")
    input_shape = _check_input_shape(input_shape)
    batch_size = _positive_int(batch_size, "batch_size")
    training_batch_size = _positive_int(training_batch_size, "training_batch_size")
    if measure_latency:
        repeats = _positive_int(repeats, "repeats")
        latency_batch_sizes = tuple(_positive_int(b, "latency_batch_sizes entry")
                                    for b in latency_batch_sizes)
        if not latency_batch_sizes:
            raise ValueError("profile: latency_batch_sizes is empty")

    with _TRACE_LOCK:
        tracer, input_buffer, output_buffers = _trace(model, input_shape, convention)
    rows = tracer.rows
    result = Profile(
        _model_name(model), input_shape, convention,
        macs=sum(row.macs for row in rows),
        params=model.num_parameters(),
        layers=rows, batch_size=batch_size, training_batch_size=training_batch_size,
        peak_live_elements=_peak_live_elements(tracer, input_buffer, output_buffers),
        saved_elements=_saved_elements(tracer))
    predictor = getattr(model, "_modules", {}).get("predictor")
    if isinstance(predictor, Module):
        result.predictor_macs = result.macs_under("predictor")
        result.predictor_params = predictor.num_parameters()
    if measure_latency:
        for batch in latency_batch_sizes:
            median, p90 = measure_latency_ms(model, input_shape, batch, repeats)
            result.latency_ms[batch] = median
            result.latency_p90_ms[batch] = p90
    return result


def measure_latency_ms(model, input_shape, batch, repeats=10, warmup=2):
    """(median, 90th percentile) wall time in ms of one no-grad eval forward
    of ``batch`` all-zero images."""
    input_shape = _check_input_shape(input_shape)
    batch = _positive_int(batch, "batch")
    repeats = _positive_int(repeats, "repeats")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    images = _C.zeros((batch,) + input_shape)
    times = []
    try:
        with no_grad():
            for _ in range(warmup):
                model(images)
            for _ in range(repeats):
                start = time.perf_counter()
                model(images)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        for module, mode in modes:
            module.training = mode
    times = np.asarray(times)
    return float(np.median(times)), float(np.percentile(times, 90))


__all__ = ["CONVENTIONS", "LayerRow", "Profile", "profile", "measure_latency_ms"]
