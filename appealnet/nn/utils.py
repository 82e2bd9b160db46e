"""Gradient utilities (appealnet.nn.utils)."""
import math

import numpy as np

from .. import _C


def _grads(parameters):
    if isinstance(parameters, _C.TensorBase):
        parameters = [parameters]
    return [(p, p.grad) for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scales all gradients together so that their joint norm is at most
    max_norm; returns the total norm before clipping (a Python float).

    The norm is accumulated in float64 over every gradient, in parameter
    order, so it does not depend on the thread count.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    pairs = _grads(parameters)
    if not pairs:
        return 0.0
    arrays = [np.asarray(g, dtype=np.float64) for _, g in pairs]
    if math.isinf(norm_type):
        total = max((float(np.max(np.abs(a))) if a.size else 0.0) for a in arrays)
    else:
        total = float(sum(float(np.sum(np.abs(a) ** norm_type)) for a in arrays)) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for (_, g), a in zip(pairs, arrays):
            g.copy_(_C.tensor((a * coef).astype(np.float32)))
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamps every gradient element to [-clip_value, clip_value]."""
    clip_value = float(clip_value)
    for _, g in _grads(parameters):
        g.copy_(_C.tensor(np.clip(np.asarray(g), -clip_value, clip_value)))


def parameters_to_vector(parameters):
    """All parameters flattened into one float32 numpy vector."""
    return np.concatenate([np.asarray(_C.detach(p)).reshape(-1) for p in parameters])


# Inference fusion lives in its own module; it is part of nn.utils' API.
from .fusion import FoldedBatchNorm, FusedConv2d, fuse_for_inference  # noqa: E402,F401
from .plan import InferencePlan, compile_for_inference  # noqa: E402,F401
