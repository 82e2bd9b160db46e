"""Sequential, ModuleList, ModuleDict: modules holding modules."""
import numbers
from collections import OrderedDict

from .layers import Conv2d, _BatchNorm, conv_batch_norm
from .module import Module


def _normalize_position(index, length, kind):
    if not isinstance(index, numbers.Integral):
        raise TypeError(f"{kind} indices must be integers or slices, not {type(index).__name__}")
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {kind} of length {length}")
    return index + length if index < 0 else index


class Sequential(Module):
    """Runs its modules in order, each on the previous one's output.

        Sequential(Conv2d(1, 8, 3), ReLU())
        Sequential(OrderedDict([("conv", Conv2d(1, 8, 3)), ("act", ReLU())]))
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        position = _normalize_position(index, len(self), "Sequential")
        return list(self._modules.values())[position]

    def __setitem__(self, index, module):
        position = _normalize_position(index, len(self), "Sequential")
        self.add_module(list(self._modules.keys())[position], module)

    def __delitem__(self, index):
        keys = list(self._modules.keys())
        if isinstance(index, slice):
            for key in keys[index]:
                del self._modules[key]
        else:
            del self._modules[keys[_normalize_position(index, len(self), "Sequential")]]
        # Keep names 0..n-1 when they were positional (PyTorch does the same).
        if all(k.isdigit() for k in self._modules):
            modules = list(self._modules.values())
            self._modules.clear()
            for i, module in enumerate(modules):
                self._modules[str(i)] = module

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        # A Conv2d followed by a batch norm runs as nn.conv_batch_norm: the
        # same bits, the statistics from the convolution's output pass in
        # training (it falls back to the two calls wherever that would not
        # be the same).
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            if (i + 1 < len(modules) and isinstance(modules[i], Conv2d)
                    and isinstance(modules[i + 1], _BatchNorm)):
                x = conv_batch_norm(modules[i], modules[i + 1], x)
                i += 2
            else:
                x = modules[i](x)
                i += 1
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (no forward)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[str(_normalize_position(index, len(self), "ModuleList"))]

    def __setitem__(self, index, module):
        self.add_module(str(_normalize_position(index, len(self), "ModuleList")), module)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[_normalize_position(index, len(self), "ModuleList")]
        self._modules.clear()
        for i, module in enumerate(modules):
            self._modules[str(i)] = module

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward; iterate over it instead")


class ModuleDict(Module):
    """A dict of modules whose parameters are registered (no forward)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for key, module in items:
            self.add_module(key, module)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward; index it instead")
