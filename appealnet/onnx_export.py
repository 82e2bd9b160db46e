"""Export a model to ONNX, with no onnx or protobuf package needed.

    an.export_onnx(model, "edge.onnx", input_shape=(1, 3, 32, 32))
    # onnxruntime.InferenceSession("edge.onnx").run(None, {"input": images})

How it works: one eval-mode forward pass is run under no_grad on a random input
while every function of the ``appealnet._C`` extension module is temporarily
replaced by a recording wrapper (the Python layer looks those functions up as
attributes of the module at each call, so the wrappers see every op).  A call whose
tensor arguments all come from outside the input (weights, BatchNorm statistics,
scalars) is a constant; its tensors become initializers, named after the model's
parameters and buffers where they are ones.  A call that touches a value derived
from the input becomes one or a few ONNX nodes.  The original functions are put
back in a ``finally`` block whatever happens.

With ``dynamic_batch`` the first dimension of the input and outputs is the symbolic
``"batch"``, and reshapes keep the batch dimension with ONNX's 0 ("copy this
dimension") so the graph runs at any batch size.  The trace runs at batch 2 at
least, so that the batch dimension cannot be mistaken for another size-1 dimension.

An op with no ONNX mapping raises NotImplementedError naming it.  Exports are
serialised by a lock; other threads may keep computing meanwhile (their tensors
are not the traced ones, so nothing of theirs is recorded).  Opsets 13 to 21
are supported (the defaults of ONNX 1.8 to 1.16); the IR version follows the opset.
"""
import math
import os

import numpy as np

from . import _C
from . import _protobuf as pb
from ._api import no_grad, tensor
from ._tracing import ops_wrapped
from .serialization import atomic_write

__all__ = ["export_onnx", "SUPPORTED_OPSETS"]

SUPPORTED_OPSETS = range(13, 22)
_INT64_MAX = (1 << 63) - 1
_BATCH_DIM = "batch"

# ONNX TensorProto.DataType and AttributeProto.AttributeType codes used here.
_ONNX_FLOAT, _ONNX_INT64 = 1, 7
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 6, 7

def _ir_version(opset):
    """The IR version that the ONNX release introducing ``opset`` wrote."""
    if opset <= 14:
        return 7
    if opset <= 18:
        return 8
    if opset <= 20:
        return 9
    return 10


# ------------------------------------------------------ protobuf messages
def _tensor_proto_chunks(name, array):
    """A TensorProto as chunks, the raw little-endian data last and uncopied."""
    array = np.asarray(array)
    if array.dtype == np.int64:
        data_type, data = _ONNX_INT64, np.ascontiguousarray(array, dtype="<i8")
    else:
        data_type, data = _ONNX_FLOAT, np.ascontiguousarray(array, dtype="<f4")
    raw = memoryview(data).cast("B")
    head = pb.message(pb.repeated_int(1, array.shape), pb.field_int(2, data_type),
                      pb.field_string(8, name))
    return [head, *pb.field_message_chunks(9, [raw])]


def _attribute_proto(name, value):
    fields = [pb.field_string(1, name)]
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        fields += [pb.field_int(20, _ATTR_INT), pb.field_int(3, int(value))]
    elif isinstance(value, float):
        fields += [pb.field_int(20, _ATTR_FLOAT), pb.field_float(2, value)]
    elif isinstance(value, str):
        fields += [pb.field_int(20, _ATTR_STRING), pb.field_string(4, value)]
    elif all(isinstance(v, (int, np.integer)) for v in value):
        fields += [pb.field_int(20, _ATTR_INTS), pb.repeated_int(8, value)]
    else:
        fields += [pb.field_int(20, _ATTR_FLOATS), pb.repeated_float(7, value)]
    return pb.message(*fields)


def _node_proto(node):
    op_type, inputs, outputs, attributes, name = node
    return pb.message(*[pb.field_string(1, i) for i in inputs],
                      *[pb.field_string(2, o) for o in outputs],
                      pb.field_string(3, name), pb.field_string(4, op_type),
                      *[pb.field_message(5, _attribute_proto(k, v))
                        for k, v in sorted(attributes.items())])


def _value_info_proto(name, shape):
    """A float32 tensor value with dims that are ints or symbolic names."""
    dims = [pb.field_message(1, pb.field_string(2, d) if isinstance(d, str)
                             else pb.field_int(1, d)) for d in shape]
    tensor_type = pb.message(pb.field_int(1, _ONNX_FLOAT), pb.field_message(2, pb.message(*dims)))
    type_proto = pb.field_message(1, tensor_type)
    return pb.message(pb.field_string(1, name), pb.field_message(2, type_proto))


# ---------------------------------------------------------------- graph
class _GraphBuilder:
    """Collects nodes and initializers while the forward pass runs.

    Values are found by the identity of the Tensor objects that carry them;
    every tensor seen is kept alive in ``_pinned`` so that no id is reused
    by a later, different tensor during the trace.
    """

    def __init__(self, opset, batch, dynamic_batch, parameter_names):
        self.opset = opset
        self.batch = batch
        self.dynamic_batch = dynamic_batch
        self.nodes = []
        self.initializers = {}          # name -> numpy array
        self._traced = {}               # id(tensor) -> value name, for input-derived values
        self._constant_names = {}       # id(tensor) -> initializer name
        self._constant_by_content = {}  # (dtype, shape, bytes) -> name, for unnamed constants
        self._parameter_names = parameter_names
        self._pinned = []
        self._counter = 0

    # -- values
    def bind_input(self, t, name):
        self._traced[id(t)] = name
        self._pinned.append(t)

    def is_traced(self, t):
        return isinstance(t, _C.TensorBase) and id(t) in self._traced

    def name(self, t):
        """The value name of a tensor argument: traced, or a new initializer."""
        if id(t) in self._traced:
            return self._traced[id(t)]
        if id(t) not in self._constant_names:
            values = np.array(_C.detach(t).numpy(), dtype=np.float32)
            self._constant_names[id(t)] = self._add_initializer(
                values, self._parameter_names.get(id(t)))
            self._pinned.append(t)
        return self._constant_names[id(t)]

    def constant(self, values, dtype=np.int64):
        """An initializer for attribute-like inputs (shapes, axes, scalars)."""
        return self._add_initializer(np.asarray(values, dtype=dtype), None)

    def _add_initializer(self, values, name):
        if name is None:
            key = (values.dtype.str, values.shape, values.tobytes())
            if key in self._constant_by_content:
                return self._constant_by_content[key]
            name = f"const_{len(self.initializers)}"
            self._constant_by_content[key] = name
        self.initializers[name] = values
        return name

    def bind(self, out, name):
        """``out`` carries the value ``name`` (its op produced it, or it is an alias)."""
        self._traced[id(out)] = name
        self._pinned.append(out)

    # -- nodes
    def node(self, op_type, inputs, out=None, **attributes):
        """Appends a node; returns its output name (bound to ``out`` if given)."""
        self._counter += 1
        output = f"/{op_type}_{self._counter}"
        self.nodes.append((op_type, list(inputs), [output], attributes, output[1:]))
        if out is not None:
            self.bind(out, output)
        return output

    def reshape_target(self, source_shape, target_shape):
        """Reshape's shape input; keeps the batch dimension symbolic."""
        target = list(target_shape)
        if self.dynamic_batch and source_shape and target and source_shape[0] == self.batch:
            # 0 copies the input's batch dimension; -1 absorbs it when it merges
            # with (or splits from) the dimensions next to it.
            target[0] = 0 if target[0] == self.batch else -1
        return self.constant(target)


# ------------------------------------------------------- op conversions
def _dim(dim, ndim):
    return dim + ndim if dim < 0 else dim


def _scalar(g, value):
    return g.constant(value, np.float32)


def _convert_conv2d(g, out, x, weight, bias, stride, padding, dilation, groups, activation=None):
    inputs = [g.name(x), g.name(weight)] + ([g.name(bias)] if bias is not None else [])
    conv = g.node("Conv", inputs, out if activation is None else None,
                  kernel_shape=list(weight.shape[2:]), strides=list(stride),
                  pads=[padding[0], padding[1], padding[0], padding[1]], dilations=list(dilation),
                  group=groups)
    if activation == "relu":
        g.node("Relu", [conv], out)
    elif activation == "relu6":
        g.node("Clip", [conv, _scalar(g, 0.0), _scalar(g, 6.0)], out)
    elif activation is not None:
        raise NotImplementedError(f"ONNX export: conv2d activation {activation!r} has no ONNX mapping")


def _convert_batch_norm(g, out, x, mean, var, weight, bias, training, momentum, eps,
                        activation=None):
    if training or mean is None or var is None:
        raise NotImplementedError("ONNX export: batch_norm with batch statistics (training "
                                  "mode or no running statistics) is not supported")
    channels = x.shape[1]
    scale = g.name(weight) if weight is not None else g.constant(np.ones(channels), np.float32)
    shift = g.name(bias) if bias is not None else g.constant(np.zeros(channels), np.float32)
    # a fused activation becomes its own node after the normalisation: runtimes
    # fuse the pair again themselves
    normalized = g.node("BatchNormalization",
                        [g.name(x), scale, shift, g.name(mean), g.name(var)],
                        out if activation is None else None, epsilon=float(eps))
    if activation == "relu":
        g.node("Relu", [normalized], out)
    elif activation == "relu6":
        g.node("Clip", [normalized, _scalar(g, 0.0), _scalar(g, 6.0)], out)
    elif activation is not None:
        raise NotImplementedError(f"ONNX export: batch_norm activation {activation!r} "
                                  f"has no ONNX mapping")


def _unary(op_type, **attributes):
    def convert(g, out, x, *_):
        g.node(op_type, [g.name(x)], out, **attributes)
    return convert


def _convert_add_relu(g, out, a, b):
    g.node("Relu", [g.node("Add", [g.name(a), g.name(b)])], out)


def _convert_relu6(g, out, x):
    g.node("Clip", [g.name(x), _scalar(g, 0.0), _scalar(g, 6.0)], out)


def _convert_clamp(g, out, x, low, high):
    inputs = [g.name(x), "" if math.isnan(low) else _scalar(g, low),
              "" if math.isnan(high) else _scalar(g, high)]
    while inputs[-1] == "":
        inputs.pop()
    g.node("Clip", inputs, out)


def _convert_leaky_relu(g, out, x, slope):
    g.node("LeakyRelu", [g.name(x)], out, alpha=float(slope))


def _convert_silu(g, out, x):
    gate = g.node("Sigmoid", [g.name(x)])
    g.node("Mul", [g.name(x), gate], out)


def _convert_hardswish(g, out, x):
    if g.opset >= 14:
        g.node("HardSwish", [g.name(x)], out)
    else:
        gate = g.node("HardSigmoid", [g.name(x)], alpha=1.0 / 6.0, beta=0.5)
        g.node("Mul", [g.name(x), gate], out)


def _convert_log_sigmoid(g, out, x):
    # log(sigmoid(x)) = -softplus(-x)
    negated = g.node("Neg", [g.name(x)])
    g.node("Neg", [g.node("Softplus", [negated])], out)


def _convert_pow(g, out, x, exponent):
    g.node("Pow", [g.name(x), _scalar(g, exponent)], out)


def _binary(op_type):
    def convert(g, out, a, b):
        g.node(op_type, [g.name(a), g.name(b)], out)
    return convert


def _convert_softmax(op_type):
    def convert(g, out, x, dim):
        g.node(op_type, [g.name(x)], out, axis=_dim(dim, x.ndim))
    return convert


def _convert_linear(g, out, x, weight, bias):
    if x.ndim == 2 and weight.ndim == 2:
        inputs = [g.name(x), g.name(weight)] + ([g.name(bias)] if bias is not None else [])
        g.node("Gemm", inputs, out, transB=1)
        return
    transposed = g.node("Transpose", [g.name(weight)], perm=[1, 0])
    if bias is None:
        g.node("MatMul", [g.name(x), transposed], out)
    else:
        g.node("Add", [g.node("MatMul", [g.name(x), transposed]), g.name(bias)], out)


def _convert_max_pool2d(g, out, x, kernel, stride, padding, dilation, ceil_mode):
    g.node("MaxPool", [g.name(x)], out, kernel_shape=list(kernel), strides=list(stride),
           pads=[padding[0], padding[1], padding[0], padding[1]], dilations=list(dilation),
           ceil_mode=int(ceil_mode))


def _convert_avg_pool2d(g, out, x, kernel, stride, padding, ceil_mode, count_include_pad):
    g.node("AveragePool", [g.name(x)], out, kernel_shape=list(kernel), strides=list(stride),
           pads=[padding[0], padding[1], padding[0], padding[1]], ceil_mode=int(ceil_mode),
           count_include_pad=int(count_include_pad))


def _convert_adaptive_avg_pool2d(g, out, x, size):
    height, width = x.shape[2], x.shape[3]
    size = tuple(size)
    if size == (1, 1):
        g.node("GlobalAveragePool", [g.name(x)], out)
    elif size == (height, width):
        g.bind(out, g.name(x))
    elif height % size[0] == 0 and width % size[1] == 0:
        # Evenly divisible: adaptive pooling is plain pooling with a fixed window.
        kernel = [height // size[0], width // size[1]]
        g.node("AveragePool", [g.name(x)], out, kernel_shape=kernel, strides=kernel)
    else:
        raise NotImplementedError(f"ONNX export: adaptive_avg_pool2d from {height}x{width} to "
                                  f"{size[0]}x{size[1]} (sizes that do not divide evenly) is "
                                  f"not supported")


def _convert_dropout(g, out, x, p, training):
    if training and p > 0.0:
        raise NotImplementedError("ONNX export: dropout in training mode is not supported")
    g.bind(out, g.name(x))  # identity in eval: no node at all


def _alias(g, out, x, *_, **__):
    g.bind(out, g.name(x))


def _convert_pad(g, out, x, pads, mode, value):
    # appealnet/PyTorch order: (last dim before, after, second-to-last before, after, ...);
    # ONNX: all dims' "before" amounts, then all "after" amounts.
    before, after = [0] * x.ndim, [0] * x.ndim
    for i in range(len(pads) // 2):
        before[x.ndim - 1 - i], after[x.ndim - 1 - i] = pads[2 * i], pads[2 * i + 1]
    onnx_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    inputs = [g.name(x), g.constant(before + after)]
    if onnx_mode == "constant":
        inputs.append(_scalar(g, value))
    g.node("Pad", inputs, out, mode=onnx_mode)


def _convert_reshape(g, out, x, *_):
    g.node("Reshape", [g.name(x), g.reshape_target(x.shape, out.shape)], out)


def _convert_flatten(g, out, x, start, end):
    if x.ndim >= 2 and _dim(start, x.ndim) == 1 and _dim(end, x.ndim) == x.ndim - 1:
        g.node("Flatten", [g.name(x)], out, axis=1)
    else:
        _convert_reshape(g, out, x)


def _convert_channel_shuffle(g, out, x, groups):
    batch, channels, height, width = x.shape
    grouped = g.node("Reshape", [g.name(x), g.reshape_target(
        x.shape, (batch, groups, channels // groups, height, width))])
    swapped = g.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    g.node("Reshape", [swapped, g.reshape_target(x.shape, x.shape)], out)


def _convert_channel_shuffle_concat(g, out, tensors):
    joined = g.node("Concat", [g.name(t) for t in tensors], axis=1)
    batch, channels, height, width = tensors[0].shape
    groups = len(tensors)
    shape = (batch, channels * groups, height, width)
    grouped = g.node("Reshape", [joined, g.reshape_target(shape, (batch, groups, channels, height, width))])
    swapped = g.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    g.node("Reshape", [swapped, g.reshape_target(shape, shape)], out)


def _convert_concat(g, out, tensors, dim):
    g.node("Concat", [g.name(t) for t in tensors], out, axis=_dim(dim, out.ndim))


def _convert_slice(g, out, x, dim, start, stop, step):
    dim = _dim(dim, x.ndim)
    size = x.shape[dim]
    if start == 0 and stop >= size and step == 1:
        g.bind(out, g.name(x))
        return
    # An end at the dimension's size is written as "to the end", so that slicing
    # the (dynamic) batch dimension stays correct at other batch sizes.
    end = _INT64_MAX if stop >= size else stop
    g.node("Slice", [g.name(x), g.constant([start]), g.constant([end]), g.constant([dim]),
                     g.constant([step])], out)


def _convert_select(g, out, x, dim, index):
    g.node("Gather", [g.name(x), g.constant(index)], out, axis=_dim(dim, x.ndim))


def _convert_index_select(g, out, x, dim, index):
    g.node("Gather", [g.name(x), g.constant(np.asarray(index).reshape(-1))], out,
           axis=_dim(dim, x.ndim))


def _convert_permute(g, out, x, dims):
    g.node("Transpose", [g.name(x)], out, perm=[_dim(d, x.ndim) for d in dims])


def _convert_transpose(g, out, x, dim0, dim1):
    perm = list(range(x.ndim))
    dim0, dim1 = _dim(dim0, x.ndim), _dim(dim1, x.ndim)
    perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
    g.node("Transpose", [g.name(x)], out, perm=perm)


def _reduction(op_type):
    def convert(g, out, x, dims, keepdim):
        axes = [_dim(d, x.ndim) for d in dims]
        inputs = [g.name(x)]
        attributes = {"keepdims": int(keepdim)}
        # ReduceSum takes its axes as an input from opset 13, the others from 18.
        if axes and (op_type == "ReduceSum" or g.opset >= 18):
            inputs.append(g.constant(axes))
        elif axes:
            attributes["axes"] = axes
        g.node(op_type, inputs, out, **attributes)
    return convert


_CONVERTERS = {
    "conv2d": _convert_conv2d,
    "batch_norm": _convert_batch_norm,
    "relu": _unary("Relu"),
    "relu6": _convert_relu6,
    "leaky_relu": _convert_leaky_relu,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "silu": _convert_silu,
    "hardswish": _convert_hardswish,
    "hardsigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "log_sigmoid": _convert_log_sigmoid,
    "softmax": _convert_softmax("Softmax"),
    "log_softmax": _convert_softmax("LogSoftmax"),
    "exp": _unary("Exp"),
    "log": _unary("Log"),
    "sqrt": _unary("Sqrt"),
    "abs": _unary("Abs"),
    "neg": _unary("Neg"),
    "pow_scalar": _convert_pow,
    "clamp": _convert_clamp,
    "add": _binary("Add"),
    "add_relu": _convert_add_relu,
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "div": _binary("Div"),
    "matmul": _binary("MatMul"),
    "linear": _convert_linear,
    "max_pool2d": _convert_max_pool2d,
    "avg_pool2d": _convert_avg_pool2d,
    "adaptive_avg_pool2d": _convert_adaptive_avg_pool2d,
    "dropout": _convert_dropout,
    "pad": _convert_pad,
    "reshape": _convert_reshape,
    "view": _convert_reshape,
    "flatten": _convert_flatten,
    "channel_shuffle": _convert_channel_shuffle,
    "channel_shuffle_concat": _convert_channel_shuffle_concat,
    "concat": _convert_concat,
    "slice": _convert_slice,
    "select": _convert_select,
    "index_select": _convert_index_select,
    "permute": _convert_permute,
    "transpose": _convert_transpose,
    "sum": _reduction("ReduceSum"),
    "mean": _reduction("ReduceMean"),
    "contiguous": _alias,
    "clone": _alias,
    "detach": _alias,
    "tensor": _alias,
}


# ---------------------------------------------------------------- tracing
def _tensor_arguments(args):
    for arg in args:
        if isinstance(arg, _C.TensorBase):
            yield arg
        elif isinstance(arg, (list, tuple)):
            yield from (a for a in arg if isinstance(a, _C.TensorBase))


def _recording(op_name, function, graph):
    def recorded(*args, **kwargs):
        out = function(*args, **kwargs)
        if any(graph.is_traced(t) for t in _tensor_arguments(args)):
            convert = _CONVERTERS.get(op_name)
            if convert is None:
                raise NotImplementedError(f"ONNX export: op '{op_name}' has no ONNX mapping")
            convert(graph, out, *args, **kwargs)
        return out
    return recorded


def _trace(model, example, graph):
    """Runs model(example) with every _C op recorded into ``graph``."""
    with ops_wrapped(lambda name, function: _recording(name, function, graph)):
        with no_grad():
            return model(example)


def _parameter_names(model):
    names = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        names.setdefault(id(t), name)
    return names


def _check_arguments(input_shape, opset, input_name, output_names):
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {list(shape)}")
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported; choose one of "
                         f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    if not isinstance(input_name, str) or not input_name:
        raise ValueError(f"input_name must be a non-empty string, got {input_name!r}")
    if output_names is not None:
        output_names = [str(n) for n in output_names]
        names = [input_name] + output_names
        if len(set(names)) != len(names) or not all(output_names):
            raise ValueError(f"input and output names must be distinct non-empty strings, "
                             f"got input {input_name!r} and outputs {output_names}")
    return shape, output_names


def export_onnx(model, path, input_shape, opset=17, input_name="input", output_names=None,
                dynamic_batch=True):
    """Writes ``model`` as an ONNX file at ``path`` (atomically).

    ``input_shape`` is the full input shape, batch first (e.g. ``(1, 3, 32, 32)``).
    The model is traced in eval mode (its modes are restored afterwards).  A model
    returning a tuple (e.g. TwoHead's ``(logits, q_logit)``) gets one graph output
    per element, named by ``output_names`` (default ``output`` for one output,
    ``output_0``, ``output_1``, ... for several).  Returns the output names.
    """
    shape, output_names = _check_arguments(input_shape, opset, input_name, output_names)
    trace_shape = shape
    if dynamic_batch and shape[0] < 2:
        trace_shape = (2,) + shape[1:]
    graph = _GraphBuilder(opset, trace_shape[0], dynamic_batch, _parameter_names(model))
    example = tensor(np.random.default_rng(0).standard_normal(trace_shape).astype(np.float32))
    graph.bind_input(example, input_name)

    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        outputs = _trace(model, example, graph)
    finally:
        for module, training in modes:
            module.training = training

    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    if not outputs or not all(isinstance(o, _C.TensorBase) for o in outputs):
        raise TypeError("ONNX export: the model must return a Tensor or a tuple of Tensors")
    if output_names is None:
        output_names = ["output"] if len(outputs) == 1 else \
            [f"output_{i}" for i in range(len(outputs))]
    if len(output_names) != len(outputs):
        raise ValueError(f"output_names has {len(output_names)} names but the model returns "
                         f"{len(outputs)} outputs")

    graph_outputs = []
    for name, out in zip(output_names, outputs):
        graph.nodes.append(("Identity", [graph.name(out)], [name], {}, f"output/{name}"))
        dims = list(out.shape)
        if dynamic_batch and dims and dims[0] == trace_shape[0]:
            dims[0] = _BATCH_DIM
        graph_outputs.append(_value_info_proto(name, dims))
    input_dims = [_BATCH_DIM if dynamic_batch else shape[0]] + list(shape[1:])

    graph_name = type(model).__name__
    if isinstance(getattr(model, "arch", None), dict):
        graph_name = str(model.arch.get("name", graph_name))
    graph_chunks = [pb.message(*[pb.field_message(1, _node_proto(n)) for n in graph.nodes],
                               pb.field_string(2, graph_name))]
    for name, values in graph.initializers.items():
        graph_chunks += pb.field_message_chunks(5, _tensor_proto_chunks(name, values))
    graph_chunks.append(pb.message(pb.field_message(11, _value_info_proto(input_name, input_dims)),
                                   *[pb.field_message(12, o) for o in graph_outputs]))
    model_chunks = [pb.message(
        pb.field_int(1, _ir_version(opset)),
        pb.field_string(2, "appealnet"),
        pb.field_string(3, getattr(_C, "__version__", "unknown")),
        pb.field_message(8, pb.message(pb.field_string(1, ""), pb.field_int(2, opset))))]
    model_chunks += pb.field_message_chunks(7, graph_chunks)

    def write(file):
        for chunk in model_chunks:
            file.write(chunk)

    atomic_write(os.fspath(path), write)
    return output_names
