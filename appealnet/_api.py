"""Top-level functions: creation, seeds, threads, grad mode."""
import contextlib

from . import _C
from ._tensor import _shape_args


def tensor(data, requires_grad=False):
    """A float32 tensor holding a copy of ``data`` (array-like or Tensor).

    float64, integer and bool data are converted by value; other dtypes
    (complex, object, strings) raise TypeError.
    """
    return _C.tensor(data, requires_grad=requires_grad)


def from_numpy(array):
    """A tensor sharing memory with a writable float32 numpy array."""
    return _C.from_numpy(array)


def empty(*shape):
    return _C.empty(_shape_args(shape))


def zeros(*shape, requires_grad=False):
    return _C.zeros(_shape_args(shape)).requires_grad_(requires_grad)


def ones(*shape, requires_grad=False):
    return _C.full(_shape_args(shape), 1.0).requires_grad_(requires_grad)


def full(shape, value, requires_grad=False):
    return _C.full(_shape_args((shape,)), float(value)).requires_grad_(requires_grad)


def zeros_like(t):
    return _C.zeros(t.shape)


def ones_like(t):
    return _C.full(t.shape, 1.0)


def randn(*shape, requires_grad=False):
    """Standard normal samples from the global generator (see manual_seed)."""
    t = _C.empty(_shape_args(shape))
    _C.normal_(t, 0.0, 1.0)
    return t.requires_grad_(requires_grad)


def rand(*shape, requires_grad=False):
    """Uniform [0, 1) samples from the global generator."""
    t = _C.empty(_shape_args(shape))
    _C.uniform_(t, 0.0, 1.0)
    return t.requires_grad_(requires_grad)


def manual_seed(seed):
    """Seeds the global generator (initialisation, dropout, rand/randn)."""
    _C.manual_seed(int(seed))


def initial_seed():
    return _C.initial_seed()


def get_rng_state():
    """The global generator's state as a tuple (seed, offset): saving it in a
    checkpoint and restoring it with set_rng_state resumes draws exactly."""
    return _C.get_rng_state()


def set_rng_state(state):
    seed, offset = state
    _C.set_rng_state(int(seed), int(offset))


def set_num_threads(n):
    """Number of OpenMP threads used by the calling thread's compute."""
    _C.set_num_threads(int(n))


def get_num_threads():
    return _C.get_num_threads()


def set_conv_winograd(enabled):
    """Whether conv2d runs 3x3, stride-1, padding-1 layers with 32 or more
    channels in and out through Winograd's F(4x4, 3x3) (on by default).

    It does 4x fewer multiplies, in the forward pass and both gradients; its
    transforms scale values by up to 8 before the sums, so results are
    within about 1e-5 of the largest output (1-2e-6 rms) where the direct
    lowering is within 1e-6.  Turn it off to get the direct lowering's
    numbers.  Process-wide."""
    _C.set_conv_winograd(bool(enabled))


def get_conv_winograd():
    return _C.get_conv_winograd()


def is_grad_enabled():
    return _C.is_grad_enabled()


class _GradMode(contextlib.ContextDecorator):
    """Sets grad mode (thread-local in the core) on entry, restores it on
    exit; a stack of saved modes makes a decorator instance re-entrant."""

    mode = True

    def __enter__(self):
        self.__dict__.setdefault("_saved", []).append(_C.is_grad_enabled())
        _C.set_grad_enabled(self.mode)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self._saved.pop())
        return False


class no_grad(_GradMode):
    """Ops inside record no autograd graph (saves memory at inference)."""

    mode = False


class enable_grad(_GradMode):
    """Turns recording back on inside a no_grad region."""

    mode = True


class set_grad_enabled(_GradMode):
    """Sets grad mode at once (like torch); as a context manager or decorator
    the previous mode comes back on exit."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self._saved = [_C.is_grad_enabled()]
        _C.set_grad_enabled(self.mode)

    def __enter__(self):
        return self  # already set by the constructor


def cat(tensors, dim=0):
    """Concatenates tensors along ``dim`` (differentiable)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    return _C.concat(tensors, int(dim))


concat = cat



def cpu_info():
    """CPU model, the SIMD level chosen at run time and the cache sizes."""
    return _C.cpu_description()
