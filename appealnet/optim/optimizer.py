"""Optimizers under torch.optim's names and update rules.

The per-element update loops run in C (``_C.sgd_step``/``_C.adam_step``,
GIL released, parallel over elements); this file keeps PyTorch's
bookkeeping: parameter groups with per-group options, per-parameter state,
state_dict()/load_state_dict().
"""
import copy
import numbers

import numpy as np

from .. import _C
from .._api import enable_grad


class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _state_value_to_saved(value):
    if isinstance(value, _C.TensorBase):
        return np.array(_C.detach(value).numpy(), dtype=np.float32, copy=True)
    return copy.deepcopy(value)


class Optimizer:
    """Base class: holds ``param_groups`` (list of dicts with a 'params' list
    and the options) and ``state`` (dict parameter -> dict of buffers)."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, _C.TensorBase):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Adds a group (dict with 'params' and optional per-group options)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, _C.TensorBase):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs; "
                            "please use a list instead")
        params = list(params)
        for p in params:
            if not isinstance(p, _C.TensorBase):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        unique = []
        for p in params:
            if not any(p is q for q in unique):
                unique.append(p)
        group["params"] = unique
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in unique):
            raise ValueError("some parameters appear in more than one parameter group")
        self._validate_group(group)
        self.param_groups.append(group)

    def _validate_group(self, group):
        """Subclasses check their options (ValueError with PyTorch's messages)."""

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a .grad; returns closure()'s
        loss when a closure is given (it is evaluated with grad enabled)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if not grad.is_contiguous():
                    grad = grad.contiguous()
                self._update(p, grad, group, self.state.setdefault(p, {}))
        return loss

    def _update(self, param, grad, group, state):
        raise NotImplementedError

    # ------------------------------------------------------------ state dict
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [options with
        'params' as indices]} — parameters numbered in group order, buffers
        as float32 numpy copies."""
        index_of, groups, next_index = {}, [], 0
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            indices = []
            for p in group["params"]:
                if id(p) not in index_of:
                    index_of[id(p)] = next_index
                    next_index += 1
                indices.append(index_of[id(p)])
            packed["params"] = indices
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    state[index_of[id(p)]] = {k: _state_value_to_saved(v)
                                              for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores options and buffers saved by state_dict() into this
        optimizer (same group layout required)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)} vs {len(self.param_groups)})")
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group: group {i} has "
                                 f"{len(saved['params'])} params, expected {len(group['params'])}")
        param_of = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for p, index in zip(group["params"], saved["params"]):
                param_of[index] = p
        new_state = {}
        for index, entries in state_dict["state"].items():
            if index not in param_of:
                raise ValueError(f"loaded state dict has state for parameter {index}, which is "
                                 f"in no parameter group")
            p = param_of[index]
            restored = {}
            for name, value in entries.items():
                if isinstance(value, np.ndarray) or isinstance(value, _C.TensorBase):
                    array = np.asarray(value, dtype=np.float32)
                    if tuple(array.shape) != tuple(p.shape):
                        raise ValueError(f"loaded state for parameter {index} ({name}) has shape "
                                         f"{list(array.shape)}, parameter has {list(p.shape)}")
                    restored[name] = _C.tensor(np.array(array, dtype=np.float32, order="C"))
                else:
                    restored[name] = copy.deepcopy(value)
            new_state[p] = restored
        for group, saved in zip(self.param_groups, saved_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = copy.deepcopy(value)
        self.state = new_state

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _check_non_negative(value, message):
    if not isinstance(value, numbers.Real) or value < 0.0:
        raise ValueError(f"{message}: {value}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form:
    buf = momentum * buf + (1 - dampening) * g, with buf = g on the first
    step), Nesterov momentum and L2 weight decay."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_non_negative(group["lr"], "Invalid learning rate")
        _check_non_negative(group["momentum"], "Invalid momentum value")
        _check_non_negative(group["weight_decay"], "Invalid weight_decay value")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, param, grad, group, state):
        momentum = float(group["momentum"])
        buffer, first_step = None, False
        if momentum != 0.0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = _C.zeros(param.shape)
                state["momentum_buffer"] = buffer
                first_step = True
        _C.sgd_step(param, grad, buffer, float(group["lr"]), momentum, float(group["dampening"]),
                    float(group["weight_decay"]), bool(group["nesterov"]), first_step)


class Adam(Optimizer):
    """Adam with bias correction; weight_decay adds wd * param to the
    gradient (L2).  AdamW below decouples it instead."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        if amsgrad:
            raise ValueError(f"{type(self).__name__}: amsgrad=True is not supported")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=False)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_non_negative(group["lr"], "Invalid learning rate")
        _check_non_negative(group["eps"], "Invalid epsilon value")
        betas = tuple(group["betas"])
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        _check_non_negative(group["weight_decay"], "Invalid weight_decay value")

    def _update(self, param, grad, group, state):
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = _C.zeros(param.shape)
            state["exp_avg_sq"] = _C.zeros(param.shape)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        _C.adam_step(param, grad, state["exp_avg"], state["exp_avg_sq"], int(state["step"]),
                     float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
                     float(group["weight_decay"]), self._decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay: param *= 1 - lr * weight_decay
    before the Adam update."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
