"""Runs a model with every op of the C core (``appealnet._C``) wrapped.

Models call the core through the module attribute (``_C.conv2d(...)``), so
swapping the attributes for the duration of one forward pass sees every op
whether the model author called a module, a function or an operator.  ONNX
export and inference plans (``appealnet.nn.plan``) trace this way; one trace
runs at a time: two traces patching _C at once could each take the other's
wrappers for the originals and leave them installed.
"""
import contextlib
import threading

from . import _C

TRACE_LOCK = threading.Lock()

# Functions of _C that are not ops of a forward pass.
NOT_OPS = frozenset({
    "TensorBase", "_make_subclass", "_set_tensor_class", "is_grad_enabled", "set_grad_enabled",
    "get_num_threads", "set_num_threads", "cpu_description", "openmp_enabled", "manual_seed",
    "initial_seed", "workspace_bytes", "release_workspace", "has_nonfinite", "MAX_DIMS",
    "conv2d_algorithm",
})


def op_names():
    """Names of the _C functions a trace wraps."""
    return [name for name in dir(_C)
            if not name.startswith("__") and name not in NOT_OPS and callable(getattr(_C, name))
            and not isinstance(getattr(_C, name), type)]


@contextlib.contextmanager
def ops_wrapped(make_wrapper):
    """Inside the block, each _C op ``name`` is ``make_wrapper(name, function)``."""
    with TRACE_LOCK:
        originals = {name: getattr(_C, name) for name in op_names()}
        try:
            for name, function in originals.items():
                setattr(_C, name, make_wrapper(name, function))
            yield
        finally:
            for name, function in originals.items():
                setattr(_C, name, function)
