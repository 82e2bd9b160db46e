"""appealnet.Tensor: the Python face of the C core's float32 tensor.

Storage, autograd fields, the buffer protocol and ``numpy()`` live in C
(``_C.TensorBase``); this class adds operators and PyTorch-named methods.
"""
import numbers

import numpy as np

from . import _C


def _as_tensor(value):
    """Tensors pass through; Python/numpy numbers become 0-d tensors."""
    if isinstance(value, _C.TensorBase):
        return value
    if isinstance(value, (numbers.Number, np.number, np.ndarray, list, tuple)):
        return _C.tensor(value)
    raise TypeError(f"unsupported operand type {type(value).__name__} for a Tensor operation")


def _normalize_index(index, size, dim):
    if index < -size or index >= size:
        raise IndexError(f"index {index} is out of bounds for dimension {dim} with size {size}")
    return index + size if index < 0 else index


class Tensor(_C.TensorBase):
    """A float32 n-d array with reverse-mode autograd (see appealnet.tensor)."""

    __array_priority__ = 1000  # numpy defers binary operators to Tensor

    # ----------------------------------------------------------- basics
    @property
    def dtype(self):
        return np.float32

    def dim(self):
        return self.ndim

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def data(self):
        return _C.detach(self)

    def __repr__(self):
        body = np.array2string(_C.detach(self).numpy(), separator=", ", precision=4,
                               prefix="tensor(")
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn=<{self.grad_fn}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __array__(self, dtype=None, copy=None):
        arr = _C.detach(self).numpy()
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def tolist(self):
        return _C.detach(self).numpy().tolist()

    def __float__(self):
        return self.item()

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self.item())

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    # ------------------------------------------------- pickling / copying
    def __reduce__(self):
        # values and requires_grad; autograd history is not carried (as torch)
        return (_rebuild_tensor, (_C.detach(self).numpy().copy(), self.requires_grad))

    def __deepcopy__(self, memo):
        if not self.is_leaf:
            raise RuntimeError("Only tensors created explicitly by the user (graph leaves) support "
                               "the deepcopy protocol")
        out = _C.clone(_C.detach(self))
        out.requires_grad = self.requires_grad
        if self.grad is not None:
            out.grad = _C.clone(self.grad)
        memo[id(self)] = out
        return out

    # --------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph=False):
        """Accumulates d(self)/d(leaf) into every leaf's .grad.  Unless
        ``retain_graph``, the tensors the graph saved are freed as the pass
        goes (as in PyTorch), and a second backward through it raises."""
        if gradient is not None:
            gradient = _as_tensor(gradient)
        _C.backward(self, gradient, bool(retain_graph))

    def detach(self):
        return _C.detach(self)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    def clone(self):
        return _C.clone(self)

    def contiguous(self):
        return _C.contiguous(self)

    def copy_(self, src):
        _C.copy_(self, _as_tensor(src))
        return self

    def fill_(self, value):
        _C.fill_(self, float(value))
        return self

    def zero_(self):
        return self.fill_(0.0)

    def uniform_(self, low=0.0, high=1.0):
        _C.uniform_(self, float(low), float(high))
        return self

    def normal_(self, mean=0.0, std=1.0):
        _C.normal_(self, float(mean), float(std))
        return self

    # -------------------------------------------------------- operators
    def __add__(self, other):
        return _C.add(self, _as_tensor(other))

    def __radd__(self, other):
        return _C.add(_as_tensor(other), self)

    def __sub__(self, other):
        return _C.sub(self, _as_tensor(other))

    def __rsub__(self, other):
        return _C.sub(_as_tensor(other), self)

    def __mul__(self, other):
        return _C.mul(self, _as_tensor(other))

    def __rmul__(self, other):
        return _C.mul(_as_tensor(other), self)

    def __truediv__(self, other):
        return _C.div(self, _as_tensor(other))

    def __rtruediv__(self, other):
        return _C.div(_as_tensor(other), self)

    def __neg__(self):
        return _C.neg(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return _C.matmul(self, _as_tensor(other))

    def __rmatmul__(self, other):
        return _C.matmul(_as_tensor(other), self)

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise TypeError("only a real scalar exponent is supported")
        return _C.pow_scalar(self, float(exponent))

    def __abs__(self):
        return _C.abs(self)

    # --------------------------------------------------------- indexing
    def __getitem__(self, index):
        if not isinstance(index, tuple):
            index = (index,)
        out, dim = self, 0
        for item in index:
            if item is Ellipsis:
                raise IndexError("Ellipsis indexing is not supported")
            if item is None:
                raise IndexError("None (newaxis) indexing is not supported; use reshape/unsqueeze")
            if dim >= out.ndim:
                raise IndexError(f"too many indices for tensor of dimension {self.ndim}")
            size = out.shape[dim]
            if isinstance(item, (bool, np.bool_)):
                raise IndexError("boolean indexing is not supported")
            if isinstance(item, (numbers.Integral, np.integer)):
                out = _C.select(out, dim, _normalize_index(int(item), size, dim))
            elif isinstance(item, slice):
                start, stop, step = item.indices(size)
                if step < 1:
                    raise ValueError("slice step must be positive")
                stop = max(start, stop)
                out = _C.slice(out, dim, start, stop, step)
                dim += 1
            else:
                idx = np.asarray(item)
                if idx.dtype.kind not in "iu":
                    raise IndexError(f"tensors can only be indexed by ints, slices or integer arrays, "
                                     f"got {idx.dtype}")
                idx = idx.astype(np.int64).reshape(-1)
                out = _C.index_select(out, dim, idx)
                dim += 1
        return out

    # ----------------------------------------------- reductions / shape
    def sum(self, dim=None, keepdim=False):
        return _C.sum(self, _dims(dim), bool(keepdim))

    def mean(self, dim=None, keepdim=False):
        return _C.mean(self, _dims(dim), bool(keepdim))

    def reshape(self, *shape):
        return _C.reshape(self, _shape_args(shape))

    def view(self, *shape):
        return _C.view(self, _shape_args(shape))

    def flatten(self, start_dim=0, end_dim=-1):
        return _C.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return _C.transpose(self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self.transpose(0, 1) if self.ndim == 2 else self

    def permute(self, *dims):
        return _C.permute(self, _shape_args(dims))

    def unsqueeze(self, dim):
        if dim < 0:
            dim += self.ndim + 1
        shape = list(self.shape)
        shape.insert(dim, 1)
        return self.reshape(shape)

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape([s for s in self.shape if s != 1])
        if self.shape[dim] != 1:
            return self
        shape = list(self.shape)
        del shape[dim]
        return self.reshape(shape)

    def chunk(self, chunks, dim=0):
        from .nn import functional as F
        return F.chunk(self, chunks, dim)

    def split(self, split_size, dim=0):
        from .nn import functional as F
        return F.split(self, split_size, dim)

    # ------------------------------------------------------ elementwise
    def exp(self):
        return _C.exp(self)

    def log(self):
        return _C.log(self)

    def sqrt(self):
        return _C.sqrt(self)

    def abs(self):
        return _C.abs(self)

    def clamp(self, min=None, max=None):
        return _C.clamp(self, float("nan") if min is None else float(min),
                        float("nan") if max is None else float(max))

    def relu(self):
        return _C.relu(self)

    def sigmoid(self):
        return _C.sigmoid(self)

    def tanh(self):
        return _C.tanh(self)

    def softmax(self, dim):
        return _C.softmax(self, dim)

    def log_softmax(self, dim):
        return _C.log_softmax(self, dim)

    def argmax(self, dim=None):
        """Indices as a numpy int64 array (not differentiable)."""
        arr = np.asarray(self)
        return np.argmax(arr) if dim is None else np.argmax(arr, axis=dim)


def _rebuild_tensor(array, requires_grad):
    return _C.tensor(array, requires_grad=requires_grad)


def _dims(dim):
    if dim is None:
        return ()
    if isinstance(dim, (numbers.Integral, np.integer)):
        return (int(dim),)
    return tuple(int(d) for d in dim)


def _shape_args(shape):
    """Accepts f(2, 3) and f((2, 3))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


_C._set_tensor_class(Tensor)
