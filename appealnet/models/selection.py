"""Choosing the edge network: the "DNN pool" and hardware profiler of
AppealNet's design flow (paper Fig. 3).

Each candidate is profiled (``appealnet.profiler.profile``); those that fit
the device budget compete on a key, and the winner is returned with every
profile:

    choice = select(["resnet20", "mobilenet_v2", "resnet18"], max_macs=100e6)
    choice.name, choice.model, choice.profile.macs
    choice.profiles["resnet18"].macs, choice.rejected["resnet18"]

Keys: ``"macs"`` (the default without accuracies: the largest network the
budget allows, since capacity is what buys accuracy), ``"accuracy"`` (the
default when ``accuracies={name: accuracy}`` is given: the most accurate
candidate that fits), ``"params"`` (most parameters) and ``"latency_ms"``
(the fastest).  Ties go to fewer MACs, then to the earlier pool entry.
"""
import math
import numbers
from dataclasses import dataclass, field

from .. import nn
from ..profiler import CONVENTIONS, profile

KEYS = ("accuracy", "macs", "params", "latency_ms")


@dataclass
class Selection:
    """The chosen candidate, and what was learnt about every candidate."""
    name: str
    model: nn.Module
    profile: object
    profiles: dict = field(default_factory=dict)     # name -> Profile (every candidate)
    rejected: dict = field(default_factory=dict)     # name -> why it does not fit


def _budget(value, what):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"select: {what} must be a positive number, got {value!r}")
    return float(value)


def _candidates(pool, num_classes):
    """(name, model) pairs from names, built models or a {name: model} mapping."""
    from . import create

    if isinstance(pool, (str, nn.Module)):
        pool = [pool]
    entries = list(pool.items()) if isinstance(pool, dict) else [(None, entry) for entry in pool]
    if not entries:
        raise ValueError("select: the pool is empty")
    candidates, seen = [], set()
    for name, entry in entries:
        if isinstance(entry, str):
            model = create(entry, num_classes)
            name = name or entry
        elif isinstance(entry, nn.Module):
            model = entry
            arch = getattr(entry, "arch", None)
            name = name or (arch.get("name") if isinstance(arch, dict) else None) \
                or type(entry).__name__
        else:
            raise TypeError(f"select: a pool entry must be a model name or an appealnet "
                            f"nn.Module, got {type(entry).__name__}")
        base, copy_index = name, 2
        while name in seen:  # two built models of the same architecture
            name = f"{base}#{copy_index}"
            copy_index += 1
        seen.add(name)
        candidates.append((name, model))
    return candidates


def _violation(name, prof, max_macs, max_params, max_latency_ms, latency_batch_size):
    """Why a profiled candidate exceeds the budget, or None if it fits."""
    unit = "MACs" if prof.convention == "macs" else "MFLOPs (paper convention)"
    if max_macs is not None and prof.macs > max_macs:
        return (f"{name} needs {prof.macs / 1e6:.2f} M {unit} > max_macs "
                f"{max_macs / 1e6:g} M")
    if max_params is not None and prof.params > max_params:
        return (f"{name} has {prof.params / 1e6:.3f} M params > max_params "
                f"{max_params / 1e6:g} M")
    if max_latency_ms is not None:
        latency = prof.latency_ms[latency_batch_size]
        if latency > max_latency_ms:
            return (f"{name} takes {latency:.2f} ms (median, batch {latency_batch_size}) > "
                    f"max_latency_ms {max_latency_ms:g} ms")
    return None


def select(pool, max_macs=None, max_params=None, max_latency_ms=None, key=None,
           input_shape=(3, 32, 32), accuracies=None, convention="macs", num_classes=10,
           latency_batch_size=1, repeats=5):
    """The best candidate of ``pool`` that fits the budget, as a Selection.

    Arguments:
        pool: model names (built with ``create(name, num_classes)``), built
            models, or a ``{name: model}`` mapping.
        max_macs: per-image compute budget in the chosen ``convention``
            (raw count: 50e6 is 50 M).
        max_params: parameter budget (raw count).
        max_latency_ms: median latency budget at ``latency_batch_size`` on
            this machine (measured with ``repeats`` timed runs).
        key: what the fitting candidates compete on (see the module
            docstring); default "accuracy" when ``accuracies`` is given,
            else "macs".
        accuracies: ``{name: accuracy}`` of the candidates (e.g. measured
            on a validation set); needed for key "accuracy".

    Raises ValueError when nothing fits, naming the constraint that
    excluded the last candidate, and for bad arguments.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"select: convention must be one of {CONVENTIONS}, got {convention!r}")
    max_macs = _budget(max_macs, "max_macs")
    max_params = _budget(max_params, "max_params")
    max_latency_ms = _budget(max_latency_ms, "max_latency_ms")
    if key is None:
        key = "accuracy" if accuracies is not None else "macs"
    if key not in KEYS:
        raise ValueError(f"select: key must be one of {KEYS}, got {key!r}")
    if key == "accuracy" and accuracies is None:
        raise ValueError("select: key 'accuracy' needs accuracies={name: accuracy}")
    if accuracies is not None and not isinstance(accuracies, dict):
        raise TypeError(f"select: accuracies must be a dict name -> accuracy, got "
                        f"{type(accuracies).__name__}")

    candidates = _candidates(pool, num_classes)
    if key == "accuracy":
        missing = [name for name, _ in candidates if name not in accuracies]
        if missing:
            raise ValueError(f"select: accuracies has no entry for {', '.join(missing)}")
    timed = max_latency_ms is not None or key == "latency_ms"

    profiles, rejected, fitting = {}, {}, []
    for index, (name, model) in enumerate(candidates):
        prof = profile(model, input_shape, convention=convention, measure_latency=timed,
                       latency_batch_sizes=(latency_batch_size,), repeats=repeats)
        profiles[name] = prof
        reason = _violation(name, prof, max_macs, max_params, max_latency_ms,
                            latency_batch_size)
        if reason is None:
            fitting.append((index, name, model, prof))
        else:
            rejected[name] = reason
    if not fitting:
        last = candidates[-1][0]
        others = "; ".join(reason for name, reason in rejected.items() if name != last)
        raise ValueError(f"no model fits: {rejected[last]}"
                         + (f" (also: {others})" if others else ""))

    def score(item):
        index, name, _, prof = item
        if key == "accuracy":
            merit = float(accuracies[name])
        elif key == "macs":
            merit = prof.macs
        elif key == "params":
            merit = prof.params
        else:
            merit = -prof.latency_ms[latency_batch_size]
        return (merit, -prof.macs, -index)

    _, name, model, prof = max(fitting, key=score)
    return Selection(name, model, prof, profiles, rejected)


__all__ = ["KEYS", "Selection", "select"]
