"""Inference fusion: batch norm folded into the convolution before it, and
the activation that follows applied inside the convolution's call.

In eval mode a batch norm is a per-channel affine map, so
``bn(conv(x))`` equals a convolution with weights ``W * s`` and bias
``(b - mean) * s + beta`` where ``s = gamma / sqrt(var + eps)``.  Folding it
removes one pass over every activation (and, at batch 1, most of the
per-op overhead: a ResNet-20 forward calls 19 batch norms).  onnxruntime does
the same when it loads a model; PyTorch's eager mode does not.

The pairs are found by running the model once on an example input: a batch
norm is folded into a convolution when its input is that convolution's output
tensor and each module runs exactly once.  The fused copy is then checked
against the original on the example input, so a convolution output that was
also used elsewhere (which folding would change) is reported, not silently
computed wrong.
"""
import copy

import numpy as np

from .. import _C
from .._api import no_grad, tensor
from .layers import Conv2d, _BatchNorm
from .module import Module, Parameter

__all__ = ["fuse_for_inference", "FusedConv2d", "FoldedBatchNorm"]


class FusedConv2d(Conv2d):
    """A Conv2d carrying a folded batch norm (in its weight and bias) and the
    activation that followed it ("relu", "relu6" or None), applied in the same
    call.  Inference only: the fused activation refuses inputs that require
    grad."""

    activation = None

    def forward(self, x):
        padding, extra = self._explicit_padding()
        if extra is not None:
            from . import functional as F
            x = F.pad(x, extra)
        return _C.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                         self.groups, self.activation)

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r} (fused)"


class FoldedBatchNorm(Module):
    """Stands where a batch norm was, after it was folded into the convolution
    before it: passes its input through.  The activation the model asks for
    must be the one fused into that convolution."""

    def __init__(self, num_features, activation):
        super().__init__()
        self.num_features = num_features
        self.activation = activation

    def forward(self, x, activation=None):
        if activation != self.activation:
            raise RuntimeError(f"FoldedBatchNorm: fused with activation {self.activation!r} "
                               f"but called with activation {activation!r}")
        return x

    def extra_repr(self):
        return f"{self.num_features}, activation={self.activation!r} (folded into the conv)"


def _trace_pairs(model, example_input):
    """[(conv, bn, activation)] where bn's input is conv's output tensor."""
    produced, outputs, calls, seen = {}, [], {}, []

    def after_conv(module, args, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        produced[id(output)] = module
        outputs.append(output)  # keeps the tensor alive: its id stays unique

    handles, patched = [], []
    for module in model.modules():
        if isinstance(module, Conv2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, _BatchNorm):
            original = module.forward

            def traced(x, activation=None, _bn=module, _original=original):
                calls[id(_bn)] = calls.get(id(_bn), 0) + 1
                seen.append((produced.get(id(x)), _bn, activation))
                return _original(x, activation=activation)

            module.__dict__["forward"] = traced
            patched.append(module)
    try:
        with no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module in patched:
            del module.__dict__["forward"]
    return [(conv, bn, act) for conv, bn, act in seen
            if conv is not None and calls[id(conv)] == 1 and calls[id(bn)] == 1]


def _fold(conv, bn, activation):
    """A FusedConv2d equal to activation(bn(conv(x))) in eval mode."""
    weight = conv.weight.detach().numpy().astype(np.float64)
    out_channels = weight.shape[0]
    bias = conv.bias.detach().numpy().astype(np.float64) if conv.bias is not None else np.zeros(out_channels)
    mean = bn.running_mean.numpy().astype(np.float64)
    var = bn.running_var.numpy().astype(np.float64)
    gamma = bn.weight.detach().numpy().astype(np.float64) if bn.weight is not None else np.ones(out_channels)
    beta = bn.bias.detach().numpy().astype(np.float64) if bn.bias is not None else np.zeros(out_channels)
    scale = gamma / np.sqrt(var + bn.eps)
    # conv belongs to the model's private deep copy and is replaced: its
    # settings (stride, padding, hooks, ...) move over as they are
    fused = FusedConv2d.__new__(FusedConv2d)
    fused.__dict__.update(conv.__dict__)
    fused.__dict__["_parameters"] = type(conv._parameters)()
    fused.weight = Parameter(tensor((weight * scale[:, None, None, None]).astype(np.float32)))
    fused.bias = Parameter(tensor(((bias - mean) * scale + beta).astype(np.float32)))
    fused.activation = activation
    return fused


def _replace(root, old, new):
    for module in root.modules():
        for name, child in list(module._modules.items()):
            if child is old:
                module._modules[name] = new


def fuse_for_inference(model, example_input, rtol=1e-4, atol=1e-5):
    """An eval-mode copy of ``model`` with every Conv2d -> BatchNorm pair
    folded into one FusedConv2d (and the batch norm's fused activation, if
    any, applied by it); ``model`` itself is not changed.

    ``example_input`` is one input of the right shape (a batch of 1 is
    enough): the model runs on it once to find the pairs, and the fused copy
    must then reproduce the original's output on it within ``rtol``/``atol``
    of its scale, else a RuntimeError names the difference.  Parameters of
    the copy do not require grad (it is for inference and deployment; export
    it with ``appealnet.onnx_export`` or save its state_dict)."""
    if not isinstance(model, Module):
        raise TypeError(f"fuse_for_inference: expected an appealnet.nn.Module, got "
                        f"{type(model).__name__}")
    if not isinstance(example_input, _C.TensorBase):
        example_input = tensor(np.asarray(example_input, dtype=np.float32))
    fused = copy.deepcopy(model)
    fused.eval()
    for conv, bn, activation in _trace_pairs(fused, example_input):
        if bn.running_mean is None or bn.running_var is None:
            continue  # normalises with batch statistics even in eval: not foldable
        new = _fold(conv, bn, activation)
        _replace(fused, conv, new)
        _replace(fused, bn, FoldedBatchNorm(bn.num_features, activation))
    fused.requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            expected = _output_arrays(model(example_input))
            got = _output_arrays(fused(example_input))
    finally:
        model.train(was_training)
    for e, g in zip(expected, got):  # each output of a model returning a tuple
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        if e.shape != g.shape or not np.allclose(g, e, rtol=rtol, atol=atol * max(scale, 1.0)):
            worst = float(np.max(np.abs(g - e))) if e.shape == g.shape else float("nan")
            raise RuntimeError(f"fuse_for_inference: the fused model differs from the original by "
                               f"up to {worst:.3g} on the example input (a convolution output used "
                               f"by more than its batch norm?)")
    return fused


def _output_arrays(output):
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    return [o.numpy() for o in outputs]
