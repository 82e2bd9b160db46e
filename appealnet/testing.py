"""Checks for users' code and results: gradients of custom ops, pinned results.

* ``gradcheck(fn, inputs)``: the gradients appealnet back-propagates through
  ``fn`` against central finite differences of the same float32 function.
* ``assert_results(path, ...)``: a results.json written by an evaluation run
  meets pinned minimums, or an AssertionError shows expected against found.
"""
import json
import math

import numpy as np

from . import _api
from ._tensor import Tensor

__all__ = ["gradcheck", "assert_results", "RESULT_KEYS", "PROTOCOLS"]

RESULT_KEYS = ("method", "acci_target", "protocol", "delta", "skipping_rate", "appealing_rate",
               "accuracy", "acci", "cost", "relative_saving")
PROTOCOLS = ("test-tuned", "val-tuned")


# ------------------------------------------------------------------ gradcheck
def _split_inputs(inputs):
    """Which inputs are differentiated: float numpy arrays, and tensors that
    require grad.  Everything else (integer arrays such as class targets,
    constant tensors, Python numbers) is passed to fn unchanged."""
    if isinstance(inputs, (np.ndarray, Tensor)):
        inputs = (inputs,)
    checked = {}
    for position, value in enumerate(inputs):
        if isinstance(value, Tensor):
            if value.requires_grad:
                checked[position] = np.array(value.detach().numpy(), dtype=np.float32)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            checked[position] = np.array(value, dtype=np.float32)
    if not checked:
        raise ValueError("gradcheck: no differentiable input (pass float numpy arrays or tensors "
                         "with requires_grad=True)")
    return list(inputs), checked


def _call(fn, inputs, checked, values, requires_grad):
    """fn on fresh leaves holding ``values`` at the checked positions."""
    args = list(inputs)
    leaves = {}
    for position in checked:
        leaves[position] = _api.tensor(values[position], requires_grad=requires_grad)
        args[position] = leaves[position]
    out = fn(*args)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    for index, o in enumerate(outputs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors; output "
                            f"{index} is {type(o).__name__}")
    return outputs, leaves


def _analytical_jacobians(fn, inputs, checked):
    """{position: (n_out_total, n_in)} Jacobians from appealnet's backward,
    one back-propagation per output element."""
    with _api.enable_grad():
        outputs, leaves = _call(fn, inputs, checked, checked, requires_grad=True)
        sizes = [o.numel() for o in outputs]
        jacobians = {p: np.zeros((sum(sizes), v.size)) for p, v in checked.items()}
        row = 0
        for o, size in zip(outputs, sizes):
            if not o.requires_grad:           # no graph: the output is constant in the inputs
                row += size
                continue
            for j in range(size):
                one_hot = np.zeros(size, dtype=np.float32)
                one_hot[j] = 1.0
                for leaf in leaves.values():
                    leaf.grad = None
                o.backward(_api.tensor(one_hot.reshape(o.shape)), retain_graph=True)
                for p, leaf in leaves.items():
                    if leaf.grad is not None:
                        jacobians[p][row + j] = np.asarray(leaf.grad, dtype=np.float64).ravel()
            row += size
    return jacobians, [tuple(o.shape) for o in outputs]


def _evaluate(fn, inputs, checked, values):
    with _api.no_grad():
        outputs, _ = _call(fn, inputs, checked, values, requires_grad=False)
    return np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outputs])


def _numerical_jacobians(fn, inputs, checked, eps):
    """Central differences of the float32 function, taken in float64.

    The perturbed inputs are rounded to float32, so the step is the actual
    difference of the two rounded inputs, not 2 * eps."""
    jacobians = {}
    for position, x in checked.items():
        columns = []
        for i in range(x.size):
            values = dict(checked)
            plus, minus = x.copy(), x.copy()
            plus.flat[i] = x.flat[i] + np.float32(eps)
            minus.flat[i] = x.flat[i] - np.float32(eps)
            values[position] = plus
            f_plus = _evaluate(fn, inputs, checked, values)
            values[position] = minus
            f_minus = _evaluate(fn, inputs, checked, values)
            step = np.float64(plus.flat[i]) - np.float64(minus.flat[i])
            columns.append((f_plus - f_minus) / step)
        jacobians[position] = np.stack(columns, axis=1)
    return jacobians


def _output_element(flat_row, output_shapes):
    for index, shape in enumerate(output_shapes):
        size = int(np.prod(shape, dtype=np.int64))
        if flat_row < size:
            return index, tuple(int(i) for i in np.unravel_index(flat_row, shape)) if shape else ()
        flat_row -= size
    raise AssertionError("unreachable: row beyond the outputs")


def gradcheck(fn, inputs, eps=1e-3, atol=1e-3, rtol=1e-2):
    """Checks appealnet's backward through ``fn`` against finite differences.

    ``fn(*inputs)`` must build its result from appealnet ops and return a
    Tensor or a tuple of Tensors; it must be deterministic (seed any dropout
    inside it).  ``inputs`` are numpy arrays or appealnet tensors: float
    arrays and tensors with ``requires_grad=True`` are differentiated (as
    float32 leaves), the rest are passed through as constants.

    Every Jacobian element d output / d input is compared:
    ``|analytical - numerical| <= atol + rtol * |numerical|``.  The defaults
    suit float32 with eps = 1e-3 (the finite-difference rounding error is
    about 1e-7 * |f| / eps); keep inputs away from kinks such as relu at 0.

    Returns True, or raises AssertionError naming the worst element.
    """
    if not eps > 0:
        raise ValueError(f"gradcheck: eps must be positive, got {eps}")
    inputs, checked = _split_inputs(inputs)
    analytical, output_shapes = _analytical_jacobians(fn, inputs, checked)
    numerical = _numerical_jacobians(fn, inputs, checked, eps)
    worst = None
    n_bad = n_total = 0
    for position in checked:
        a, n = analytical[position], numerical[position]
        tolerance = atol + rtol * np.abs(n)
        excess = np.abs(a - n) - tolerance
        bad = ~(excess <= 0)                  # NaN on either side is a failure too
        n_bad += int(bad.sum())
        n_total += excess.size
        if bad.any():
            flat = int(np.argmax(np.where(np.isnan(excess), np.inf, excess)))
            row, col = np.unravel_index(flat, excess.shape)
            score = excess[row, col] if not np.isnan(excess[row, col]) else np.inf
            if worst is None or score > worst[0]:
                worst = (score, position, int(row), int(col), a[row, col], n[row, col],
                         tolerance[row, col])
    if worst is None:
        return True
    _, position, row, col, a_value, n_value, tol = worst
    output_index, output_at = _output_element(row, output_shapes)
    input_at = tuple(int(i) for i in np.unravel_index(col, checked[position].shape))
    raise AssertionError(
        f"gradcheck failed: {n_bad} of {n_total} Jacobian elements out of tolerance; worst is "
        f"d output[{output_index}]{list(output_at)} / d input[{position}]{list(input_at)}: "
        f"analytical {a_value:.6g}, numerical {n_value:.6g}, |difference| "
        f"{abs(a_value - n_value):.3g} > atol + rtol * |numerical| = {tol:.3g} "
        f"(eps={eps}, atol={atol}, rtol={rtol})")


# -------------------------------------------------------------- assert_results
def _load_rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected a top-level object with a 'rows' list")
    for index, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {index} is not an object")
        missing = [k for k in RESULT_KEYS if k not in row]
        if missing:
            raise ValueError(f"{path}: row {index} lacks the key(s) {missing}")
    return data["rows"]


def _meets(found, minimum):
    return isinstance(found, (int, float)) and not math.isnan(found) and found >= minimum


def _format(value):
    return "None" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def assert_results(path, min_saving=None, min_accuracy=None, method="appealnet", acci=0.9,
                   protocol=None):
    """Asserts that ``method`` at AccI target ``acci`` in the results.json at
    ``path`` has ``relative_saving >= min_saving`` and ``accuracy >=
    min_accuracy`` (each only when given).

    Without ``protocol`` every matching row ("test-tuned" and "val-tuned")
    must pass.  Returns the matching rows.  Raises AssertionError with
    expected against found for each pinned value (or the methods, targets and
    protocols that are there when nothing matches), and ValueError for a
    malformed file.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS} or None, got {protocol!r}")
    rows = _load_rows(path)
    method_rows = [r for r in rows if r["method"] == method]
    if not method_rows:
        available = sorted({str(r["method"]) for r in rows})
        raise AssertionError(f"{path}: no results for method {method!r}; "
                             f"available methods: {available}")
    target_rows = [r for r in method_rows if math.isclose(float(r["acci_target"]), acci,
                                                          abs_tol=1e-9)]
    if not target_rows:
        available = sorted({float(r["acci_target"]) for r in method_rows})
        raise AssertionError(f"{path}: method {method!r} has no results at AccI target {acci}; "
                             f"available targets: {available}")
    if protocol is not None:
        matching = [r for r in target_rows if r["protocol"] == protocol]
        if not matching:
            available = sorted({str(r["protocol"]) for r in target_rows})
            raise AssertionError(f"{path}: method {method!r} at AccI target {acci} has no "
                                 f"{protocol!r} results; available protocols: {available}")
        target_rows = matching
    pinned = [(key, minimum) for key, minimum in (("relative_saving", min_saving),
                                                  ("accuracy", min_accuracy))
              if minimum is not None]
    lines, failed = [], False
    for row in target_rows:
        lines.append(f"  [protocol {row['protocol']}]")
        for key, minimum in pinned:
            ok = _meets(row[key], minimum)
            failed |= not ok
            lines.append(f"    {key:<16} expected >= {_format(float(minimum)):<10} "
                         f"found {_format(row[key]):<10} {'ok' if ok else 'FAIL'}")
    if failed:
        raise AssertionError(f"{path}: method {method!r} at AccI target {acci} misses pinned "
                             f"values:\n" + "\n".join(lines))
    return target_rows
