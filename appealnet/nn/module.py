"""Parameter and Module: the building blocks of every network.

A Module owns three ordered registries filled by plain attribute
assignment, exactly like PyTorch:

    self.weight = Parameter(...)      -> _parameters  (trained)
    self.register_buffer("mean", t)   -> _buffers     (state, not trained)
    self.block = Linear(...)          -> _modules     (children)

Everything else (parameters(), state_dict(), train()/eval(), zero_grad())
walks these registries recursively.
"""
import copy
from collections import OrderedDict, namedtuple

import numpy as np

from .. import _C
from .._tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable when assigned to it.

    ``Parameter(data)`` shares memory with ``data`` (a detached view), and
    requires grad unless ``requires_grad=False``.
    """

    def __new__(cls, data=None, requires_grad=True):
        if data is None:
            data = _C.empty((0,))
        if not isinstance(data, _C.TensorBase):
            raise TypeError(f"Parameter: expected an appealnet Tensor as data, got "
                            f"{type(data).__name__}; use appealnet.tensor(...) first")
        return _C._make_subclass(cls, data, bool(requires_grad))

    def __init__(self, data=None, requires_grad=True):
        pass

    # Parameters are dictionary keys in optimizer state: identity hashing,
    # whatever comparison operators Tensor may grow.
    __hash__ = object.__hash__

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        copy = Parameter(_C.clone(_C.detach(self)), self.requires_grad)
        memo[id(self)] = copy
        return copy

    def __reduce__(self):
        return (_rebuild_parameter, (_C.detach(self).numpy().copy(), self.requires_grad))


def _rebuild_parameter(array, requires_grad):
    return Parameter(_C.tensor(array), requires_grad)


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What load_state_dict(strict=False) could not match."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _as_float32_array(value, key):
    """A state_dict value (numpy array, appealnet/torch tensor, number) as float32."""
    if isinstance(value, _C.TensorBase):
        return np.asarray(_C.detach(value).numpy(), dtype=np.float32)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"load_state_dict: value for {key!r} is not array-like "
                        f"({type(value).__name__})") from exc
    if array.dtype.kind not in "fiub":
        raise TypeError(f"load_state_dict: value for {key!r} has dtype {array.dtype}; "
                        f"expected numbers")
    return array.astype(np.float32, copy=False)


def _indent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class RemovableHandle:
    """Returned by ``register_forward_hook``/``register_forward_pre_hook``:
    ``handle.remove()`` unregisters the hook (twice is harmless); also a
    context manager that removes the hook on exit."""

    _next_id = 0

    def __init__(self, hooks_dict):
        self._hooks_dict = hooks_dict
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks_dict.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class Module:
    """Base class of all layers and models (PyTorch's nn.Module, minus
    devices).  Subclasses call ``super().__init__()`` first, assign
    sub-modules and parameters as attributes, and define ``forward``."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"Module [{type(self).__name__}] is missing the required "
                                  f"\"forward\" function")

    def __call__(self, *args, **kwargs):
        # .get: modules unpickled from before hooks existed have no registries
        pre_hooks = self.__dict__.get("_forward_pre_hooks")
        hooks = self.__dict__.get("_forward_hooks")
        if not pre_hooks and not hooks:
            return self.forward(*args, **kwargs)
        for hook in list(pre_hooks.values()) if pre_hooks else ():
            replaced = hook(self, args)
            if replaced is not None:
                args = replaced if isinstance(replaced, tuple) else (replaced,)
        output = self.forward(*args, **kwargs)
        for hook in list(hooks.values()) if hooks else ():
            replaced = hook(self, args, output)
            if replaced is not None:
                output = replaced
        return output

    # -------------------------------------------------------------- hooks
    def _hook_registry(self, name):
        registry = self.__dict__.get(name)
        if registry is None:
            registry = OrderedDict()
            object.__setattr__(self, name, registry)
        return registry

    def register_forward_pre_hook(self, hook):
        """Calls ``hook(module, args)`` before every forward (positional
        arguments only, as PyTorch does by default); a non-None return value
        replaces the arguments (a single value is wrapped in a tuple).
        Returns a handle whose ``remove()`` unregisters the hook."""
        if not callable(hook):
            raise TypeError(f"register_forward_pre_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        registry = self._hook_registry("_forward_pre_hooks")
        handle = RemovableHandle(registry)
        registry[handle.id] = hook
        return handle

    def register_forward_hook(self, hook):
        """Calls ``hook(module, args, output)`` after every forward; a non-None
        return value replaces the output.  Returns a handle whose
        ``remove()`` unregisters the hook."""
        if not callable(hook):
            raise TypeError(f"register_forward_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        registry = self._hook_registry("_forward_hooks")
        handle = RemovableHandle(registry)
        registry[handle.id] = hook
        return handle

    # ------------------------------------------------------ registration
    def _check_initialised(self, what):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__})")

    @staticmethod
    def _check_name(name, kind, owner):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name can't be empty or contain \".\", got {name!r}")
        if hasattr(owner, name) and name not in owner._parameters and \
                name not in owner._buffers and name not in owner._modules:
            raise KeyError(f"attribute {name!r} already exists")

    def register_parameter(self, name, param):
        """Adds a parameter (or None, a declared-but-absent parameter)."""
        self._check_initialised("parameters")
        self._check_name(name, "parameter", self)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (appealnet.nn.Parameter or None required)")
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Adds state that is saved in state_dict but not trained (e.g. BN
        running statistics).  ``persistent=False`` leaves it out of state_dict."""
        self._check_initialised("buffers")
        self._check_name(name, "buffer", self)
        if tensor is not None and not isinstance(tensor, _C.TensorBase):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (appealnet Tensor or None required)")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        """Adds a child module (or None)."""
        self._check_initialised("child modules")
        if not isinstance(name, str):
            raise TypeError(f"module name should be a string, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"module name can't be empty or contain \".\", got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            self._check_initialised("parameters")
            self.__dict__.pop(name, None)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                f"(appealnet.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._check_initialised("child modules")
            self.__dict__.pop(name, None)
            self.add_module(name, value)
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (appealnet.nn.Module or None expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, _C.TensorBase):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                f"(appealnet Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: look in the registries.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                del entries[name]
                self.__dict__["_non_persistent_buffers"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = set(super().__dir__())
        keys.update(self._parameters, self._buffers, self._modules)
        return sorted(keys)

    # ---------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for self and every descendant, each once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            child_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter); a parameter shared by two modules appears once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self, trainable_only=False):
        """Total number of parameter elements (each shared parameter once)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Calls fn on every child (recursively) and then on self; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -------------------------------------------------------------- modes
    def train(self, mode=True):
        """Training mode (batch statistics in BN, dropout active) or not."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freezes (False) or unfreezes every parameter."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        """Drops (or zeroes) every parameter's accumulated gradient."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    # --------------------------------------------------------- state dict
    def _state_items(self, prefix):
        """(key, tensor) in PyTorch's order: own params, own persistent
        buffers, then each child recursively."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, param
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers:
                yield prefix + name, buffer
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(prefix + name + ".")

    def state_dict(self, prefix=""):
        """OrderedDict of dotted name -> float32 numpy copy of every parameter
        and persistent buffer (BN running stats and num_batches_tracked too)."""
        out = OrderedDict()
        for key, tensor in self._state_items(prefix):
            out[key] = np.array(_C.detach(tensor).numpy(), dtype=np.float32, copy=True)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copies values into the existing tensors in place (so optimizers
        keep their references).  Every key is validated before anything is
        written: missing/unexpected keys (when strict) and shape mismatches
        (always) raise RuntimeError naming the keys and shapes."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"expected a dict-like state_dict, got {type(state_dict).__name__}")
        own = OrderedDict(self._state_items(""))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors, arrays = [], {}
        for key, tensor in own.items():
            if key not in state_dict:
                continue
            array = _as_float32_array(state_dict[key], key)
            if tuple(array.shape) != tuple(tensor.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{list(array.shape)} from checkpoint, the shape in current "
                              f"model is {list(tensor.shape)}.")
            else:
                arrays[key] = array
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        for key, array in arrays.items():
            own[key].copy_(_C.tensor(np.array(array, dtype=np.float32, order="C")))
        return _IncompatibleKeys(missing, unexpected)

    def __deepcopy__(self, memo):
        """An independent copy (e.g. for a best-model snapshot or an EMA):
        parameters and buffers are cloned, sharing between them is kept."""
        for _, buffer in self.named_buffers():
            if id(buffer) not in memo:
                memo[id(buffer)] = _C.clone(_C.detach(buffer))
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            object.__setattr__(clone, key, copy.deepcopy(value, memo))
        return clone

    # --------------------------------------------------------------- repr
    def extra_repr(self):
        """One line of settings shown inside the module's repr."""
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _indent(repr(module), 2))
        head = self._get_name() + "("
        if not lines:
            return head + ")"
        if len(lines) == 1 and not self._modules:
            return head + lines[0] + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
