"""appealnet — edge/cloud collaborative inference (AppealNet) on a small
float32 autograd engine written in C.

    import appealnet as an
    x = an.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad                      # tensor([[2., 4.]])
"""
from . import _C
from ._tensor import Tensor
from ._api import (tensor, from_numpy, zeros, ones, full, empty, zeros_like, ones_like, randn, rand,
                   manual_seed, initial_seed, get_rng_state, set_rng_state, set_num_threads, get_num_threads, no_grad,
                   enable_grad, set_grad_enabled, is_grad_enabled, cat, concat,
                   cpu_info)

from . import nn, optim, losses, metrics, testing  # noqa: E402  (they import Tensor from above)

__version__ = _C.__version__

__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
    "randn", "rand", "manual_seed", "initial_seed", "get_rng_state", "set_rng_state", "set_num_threads", "get_num_threads", "no_grad",
    "enable_grad", "set_grad_enabled", "is_grad_enabled", "cat", "concat", "cpu_info", "nn", "optim", "losses", "metrics", "testing",
]
