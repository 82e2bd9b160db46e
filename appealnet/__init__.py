"""appealnet — edge/cloud collaborative inference (AppealNet) on a small
float32 autograd engine written in C.

    import appealnet as an
    x = an.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    x.grad                      # tensor([[2., 4.]])
"""
import os as _os

# How long an idle OpenMP thread spins before it sleeps.  libgomp's default
# (300k spins, milliseconds) wrecks throughput when the cores are shared: a
# ResNet-32 step went from 0.1 s to 4 s here while other processes kept both
# cores busy.  Sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs a futex wake-up
# per parallel region instead, 30-40 us on a KVM guest, which tripled the
# batch-1 latency of ResNet-20 on 2 threads (6.1 ms vs 1.8 ms).  A short spin
# (10k pauses, tens of microseconds: the gap between two ops) gets both: as
# fast as spinning on quiet cores, no slower than sleeping on busy ones
# (measured in bench/README.md).  A policy the user chose wins.  libgomp
# reads this when the extension loads it, just below.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from . import _C  # noqa: E402

# APPEALNET_ISA asked for a level this CPU cannot run, or is misspelt.  The C
# library falls back to the best level and records why (it never aborts);
# Python refuses to import instead, so that no result (a benchmark, a
# portable-kernel test run) is silently taken under a kernel nobody asked for.
if _C.isa_warning():
    raise RuntimeError(f"appealnet: {_C.isa_warning()}. Unset APPEALNET_ISA (the best level is then "
                       "chosen at run time) or name one this CPU runs.")
from ._tensor import Tensor
from ._api import (tensor, from_numpy, zeros, ones, full, empty, zeros_like, ones_like, randn, rand,
                   manual_seed, initial_seed, get_rng_state, set_rng_state, set_num_threads, get_num_threads, no_grad,
                   set_conv_winograd, get_conv_winograd, enable_grad, set_grad_enabled, is_grad_enabled, cat, concat,
                   cpu_info)

from . import nn, optim, losses, metrics, testing, models, data  # noqa: E402  (they import Tensor)
from .profiler import profile  # noqa: E402
from .serialization import save, load, save_state_dict, load_state_dict_file  # noqa: E402
from .interchange import import_state_dict, export_state_dict  # noqa: E402
from .onnx_export import export_onnx  # noqa: E402

__version__ = _C.__version__

__all__ = [
    "Tensor", "tensor", "from_numpy", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
    "randn", "rand", "manual_seed", "initial_seed", "get_rng_state", "set_rng_state", "set_num_threads", "get_num_threads", "no_grad",
    "set_conv_winograd", "get_conv_winograd", "enable_grad", "set_grad_enabled", "is_grad_enabled", "cat", "concat", "cpu_info", "nn", "optim", "losses", "metrics", "testing", "models", "data", "profile",
    "save", "load", "save_state_dict", "load_state_dict_file", "import_state_dict", "export_state_dict",
    "export_onnx",
]
