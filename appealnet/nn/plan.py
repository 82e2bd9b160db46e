"""Inference plans: a model's forward pass recorded once as a flat list of
C-core calls and replayed without the Python around them.

At batch 1 a MobileNetV2 or ShuffleNetV2 forward pass spends a quarter to a
third of its time outside the kernels: in ``Module.__call__``, attribute
lookups, the residual blocks' ``forward`` methods, folded batch norms that
pass their input through.  A plan runs the same ops, with the same arguments
and in the same order, straight from a list, so it gives the same bits as the
model (checked when it is built) in less time::

    plan = compile_for_inference(model, example_input)   # folds BN, records
    logits = plan(x)                                     # x of any batch size

With ``fuse`` (the default) the recorded list is also simplified: a
convolution whose output only feeds a residual join (``out + shortcut`` in
MobileNetV2's blocks, ``F.add_relu(out, shortcut)`` in the ResNets) becomes
one ``conv2d`` call that adds the shortcut, and applies the join's ReLU, as
it writes its output: the same float operations in the same order.

At batch 1 each inverted-residual block (MobileNetV2's 1x1 expansion,
depthwise 3x3 and 1x1 projection; ShuffleNetV2's branches) becomes one call,
``_C.conv_pw_dw_pw``, in which each thread takes a band of the image's rows
through all three layers: the expanded planes, the block's largest tensors,
stay in the cache of the core that wrote them instead of being split one way
by one layer and read the other way by the next (the same bits again).  A
block whose residual is a 1x1 shortcut convolution of its input (the
MobileNetV2 blocks that change the channel count) computes that
convolution inside the same call, on each band's rows.  A run of such
blocks, each reading the one before's output (MobileNetV2's whole body),
becomes one call again, ``_C.block_chain_run``: the blocks run in one
parallel region, the threads meeting at a barrier between blocks instead of
starting and joining a region per block, and each call's preparation
(checks, buffers, its output tensor) is made once for the run.  On the
2-core Zen 5 that took MobileNetV2's batch-1 plan to 0.955x its time on 2
threads (0.979x on 1), with the same bits.

With ``fuse`` the weights of the 1x1 convolutions are also packed once,
when the plan is built, in the layout the GEMM's micro-kernel reads
(``_C.conv2d_pack_weight``): each call then skips packing them and streams
them in one forward run.  At batch 1 those weights come from L3 or memory
on every inference, and packing them per call and reading them row by row
cost a tenth of MobileNetV2's time on one thread.  The packed copies take as much memory again as those weights, and
they belong to the plan's own (fused) copy of the model, which nothing else
changes.

What is recorded is what one forward pass did on an input of one shape: the
sequence of ops of the C core (``appealnet._C``) and their arguments.  Sizes
computed in Python from the input's shape (a ``view(n, -1)``) are frozen into
that sequence, so a plan is kept per input shape: a new shape records a new
plan (one eager forward) and up to ``max_shapes`` of them are kept.  A model
whose ops depend on the values of its input (Python control flow on
``x.sum().item()``, ops on ``x.numpy()``) cannot be replayed: that is refused
when the plan is recorded, as is any randomness.
"""
import collections
import weakref

import numpy as np

from .. import _C
from .._api import no_grad, tensor
from .._tensor import Tensor
from .._tracing import ops_wrapped
from .module import Module

__all__ = ["InferencePlan", "compile_for_inference"]

# Ops whose result is not a function of their arguments, or that change
# state outside the forward pass: a replay could not reproduce them.
_REFUSED_OPS = frozenset({"normal_", "uniform_", "get_rng_state", "set_rng_state", "backward",
                          "sgd_step", "adam_step", "allocator_stats"})


class _Recorder:
    """Turns the _C calls of one forward pass into replayable steps."""

    def __init__(self, model, example):
        self.constants = {id(t) for t in list(model.parameters()) + list(model.buffers())}
        # id -> slot of each traced tensor while it is alive: a freed
        # tensor's id may be reused, so its entry goes with it (holding every
        # activation alive instead would double the recording's peak memory)
        self.slot_of = {id(example): 0}
        self.shapes = {0: tuple(example.shape)}
        self.slots = 1
        self.steps = []  # (op name, function, template, fills, kwargs, output slots)
        self.error = None

    def forget(self, tensor_id, slot):
        if self.slot_of.get(tensor_id) == slot:
            del self.slot_of[tensor_id]

    def fail(self, message):
        if self.error is None:
            self.error = message

    def wrap(self, name, function):
        def recorded(*args, **kwargs):
            if name in _REFUSED_OPS:
                self.fail(f"the forward pass calls '{name}', which a replay cannot reproduce")
            out = function(*args, **kwargs)
            self.record(name, function, args, kwargs, out)
            return out
        return recorded

    def argument(self, name, value):
        """('slot', index) for a traced tensor, ('const', value) otherwise;
        lists and tuples hold either."""
        if isinstance(value, _C.TensorBase):
            slot = self.slot_of.get(id(value))
            if slot is not None:
                return ("slot", slot)
            if id(value) not in self.constants:
                self.fail(f"op '{name}' reads a tensor that is neither the input, a parameter "
                          f"or buffer of the model, nor the result of an op of the core "
                          f"(register constant tensors with register_buffer)")
            return ("const", value)
        if isinstance(value, (list, tuple)):
            items = [self.argument(name, v) for v in value]
            if any(kind != "const" for kind, _ in items):
                return ("seq", (type(value), items))
            return ("const", value)
        return ("const", value)

    def record(self, name, function, args, kwargs, out):
        specs = [self.argument(name, a) for a in args]
        kw_specs = {k: self.argument(name, v) for k, v in kwargs.items()}
        if any(kind != "const" for kind, _ in kw_specs.values()):
            self.fail(f"op '{name}' takes a traced tensor as a keyword argument")
        # None: an in-place op (it writes into an argument, which keeps its slot)
        outputs = () if out is None else out if isinstance(out, (tuple, list)) else (out,)
        if not all(isinstance(o, _C.TensorBase) for o in outputs):
            self.fail(f"op '{name}' returned {type(out).__name__}, not tensors: a value read "
                      f"back into Python makes the forward pass depend on the data")
        out_slots = []
        for o in outputs:
            if not isinstance(o, _C.TensorBase):
                return
            self.slot_of[id(o)] = self.slots
            self.shapes[self.slots] = tuple(o.shape)
            weakref.finalize(o, self.forget, id(o), self.slots)
            out_slots.append(self.slots)
            self.slots += 1
        template = [value if kind == "const" else None for kind, value in specs]
        fills = [(i, spec) for i, spec in enumerate(specs) if spec[0] != "const"]
        kwargs = {k: v for k, (_, v) in kw_specs.items()}
        single = out is not None and not isinstance(out, (tuple, list))
        self.steps.append((name, function, template, fills, kwargs,
                           out_slots[0] if single else tuple(out_slots), type(out)))


def _fuse_residual_joins(steps, shapes, output_slots):
    """Each conv2d (no activation) whose output only feeds an add or add_relu
    of a tensor of its shape becomes one conv2d with that tensor as its
    residual, run where the join ran: the same float operations in the same
    order (conv + bias, + residual, relu), without writing and re-reading the
    convolution's output or a call for the join."""
    readers = collections.Counter(slot for step in steps for slot in _slots_read(step[3]))
    producer = {}
    fused, dropped = {}, set()
    for index, (name, function, template, fills, kwargs, out, out_type) in enumerate(steps):
        if (name == "conv2d" and not kwargs and len(template) in (7, 8)
                and all(position < 3 for position, _ in fills)
                and (len(template) == 7 or template[7] is None)):
            producer[out] = index
            continue
        if name not in ("add", "add_relu") or kwargs or len(template) != 2 or len(fills) != 2:
            continue
        if not all(spec[0] == "slot" for _, spec in fills):
            continue
        a, b = fills[0][1][1], fills[1][1][1]
        for conv_out, other in ((a, b), (b, a)):
            conv_index = producer.get(conv_out)
            if (conv_index is None or conv_out == other or conv_index in dropped
                    or readers[conv_out] != 1 or conv_out in output_slots
                    or shapes.get(conv_out) != shapes.get(other)
                    or any(steps[k][5] == () for k in range(conv_index + 1, index))):
                continue  # an in-place op in between could change the conv's inputs
            _, conv_fn, conv_template, conv_fills, _, _, _ = steps[conv_index]
            new_template = list(conv_template[:7]) + ["relu" if name == "add_relu" else None, None]
            new_fills = list(conv_fills) + [(8, ("slot", other))]
            fused[index] = ("conv2d", conv_fn, new_template, new_fills, {}, out, out_type)
            dropped.add(conv_index)
            break
    return [fused.get(i, step) for i, step in enumerate(steps) if i not in dropped]


def _conv_parts(step):
    """(input slot, weight, bias, stride, padding, groups, activation, residual
    spec or None) of a recorded conv2d whose only traced arguments are its
    input (and a residual); None for anything else."""
    name, _, template, fills, kwargs, out, _ = step
    if name != "conv2d" or kwargs or not 7 <= len(template) <= 9 or type(out) is not int:
        return None
    spec = dict(fills)
    if set(spec) - {0, 8} or spec[0][0] != "slot" or not isinstance(template[1], _C.TensorBase):
        return None
    if tuple(template[5]) != (1, 1) or template[1].requires_grad:
        return None
    activation = template[7] if len(template) > 7 else None
    return (spec[0][1], template[1], template[2], tuple(template[3]), tuple(template[4]),
            template[6], activation, spec.get(8))


def _is_pointwise(parts):
    """Whether _conv_parts found a 1x1, stride-1, unpadded convolution with
    groups 1 (what conv2d_pack_weight packs and conv_pw_dw_pw chains)."""
    return (parts is not None and tuple(parts[1].shape[2:]) == (1, 1)
            and parts[3:6] == ((1, 1), (0, 0), 1))


def _shortcut_of(steps, producer, residual_spec, x_slot, private):
    """(index, _conv_parts) of the step whose output is the residual when that
    step is a 1x1, stride-1 convolution of x_slot with no activation or
    residual of its own, and nothing else reads its output; else None."""
    if residual_spec is None or residual_spec[0] != "slot" or not private(residual_spec[1]):
        return None
    index = producer.get(residual_spec[1])
    parts = _conv_parts(steps[index]) if index is not None else None
    if (not _is_pointwise(parts) or parts[0] != x_slot or parts[6] is not None
            or parts[7] is not None):
        return None
    return index, parts


def _fuse_blocks(steps, shapes, output_slots):
    """Each 1x1 -> depthwise 3x3 -> 1x1 chain at batch 1 (an inverted
    residual block; the first 1x1 may be missing) whose intermediate tensors
    nothing else reads becomes one conv_pw_dw_pw call, run where the last
    1x1 ran: the same bits (the op makes the three calls itself where its
    one-pass path does not apply)."""
    readers = collections.Counter(slot for step in steps for slot in _slots_read(step[3]))
    producer = {step[5]: index for index, step in enumerate(steps) if type(step[5]) is int}
    only_reader = {}
    for index, step in enumerate(steps):
        for slot in _slots_read(step[3]):
            only_reader[slot] = index
    private = lambda slot: readers[slot] == 1 and slot not in output_slots  # noqa: E731
    replaced, dropped = {}, set()
    for index, step in enumerate(steps):
        dw = _conv_parts(step)
        if dw is None or dw[7] is not None:
            continue
        e_slot, wd, bd, stride, padding, groups, act_d, _ = dw
        if (tuple(wd.shape[1:]) != (1, 3, 3) or groups != wd.shape[0] or padding != (1, 1)
                or stride not in ((1, 1), (2, 2)) or shapes.get(e_slot, (0,))[0] != 1):
            continue
        if not private(step[5]) or only_reader.get(step[5]) is None:
            continue
        last = only_reader[step[5]]
        project = _conv_parts(steps[last])
        if not _is_pointwise(project) or project[0] != step[5]:
            continue
        first = producer.get(e_slot)
        expand = _conv_parts(steps[first]) if first is not None and private(e_slot) else None
        if expand is not None and (expand[7] is not None or not _is_pointwise(expand)):
            expand = None
        start = first if expand is not None else index
        if any(k in dropped or k in replaced for k in (start, index, last)) or any(
                steps[k][5] == () for k in range(start, last)):
            continue  # taken by another chain, or an in-place op in between could change its inputs
        x_slot = expand[0] if expand is not None else e_slot
        w1, b1, act1 = (expand[1], expand[2], expand[6]) if expand is not None else (None, None, None)
        template = [None, w1, None, b1, act1, wd, bd, stride[0], act_d,
                    project[1], None, project[2], None, project[6]]
        fills = [(0, ("slot", x_slot))] + ([(12, project[7])] if project[7] is not None else [])
        shortcut, parts = _shortcut_of(steps, producer, project[7], x_slot, private) or (None, None)
        if shortcut is not None and shortcut not in dropped and shortcut not in replaced and not any(
                steps[k][5] == () for k in range(min(shortcut, start), last)):
            # the residual is a 1x1 convolution of the block's input that
            # nothing else reads: computed inside the call, per band
            template += [parts[1], None, parts[2]]
            fills = fills[:1]
            dropped.add(shortcut)
        replaced[last] = ("conv_pw_dw_pw", _C.conv_pw_dw_pw, template, fills, {}, steps[last][5],
                          steps[last][6])
        dropped.update({index} | ({first} if expand is not None else set()))
    return [replaced.get(i, step) for i, step in enumerate(steps) if i not in dropped]


def _prepack_weights(steps):
    """Each 1x1 convolution with a constant weight gets the weight packed
    for the GEMM as its packed_weight argument (the same bits, see the
    module docstring)."""
    packed_steps = []
    for step in steps:
        name, function, template, fills, kwargs, out, out_type = step
        if name == "conv_pw_dw_pw":
            template = list(template)
            if template[1] is not None:
                template[2] = _C.conv2d_pack_weight(template[1])
            template[10] = _C.conv2d_pack_weight(template[9])
            if len(template) > 14:  # the shortcut convolution's weight
                template[15] = _C.conv2d_pack_weight(template[14])
            step = (name, function, template, fills, kwargs, out, out_type)
        elif _is_pointwise(_conv_parts(step)):
            template = list(template) + [None] * (9 - len(template))
            template.append(_C.conv2d_pack_weight(template[1]))
            step = (name, function, template, fills, kwargs, out, out_type)
        packed_steps.append(step)
    return packed_steps


class _BlockChain:
    """Consecutive conv_pw_dw_pw steps, each reading the one before's output,
    as one call: ``_C.block_chain_run``, which runs them in one parallel
    region (the threads meet at a barrier between blocks instead of a fork
    and a join per call) with the same bits.  ``templates`` holds each
    block's conv_pw_dw_pw arguments (input and residual unset),
    ``from_input`` whether the block's input is its residual."""

    __slots__ = ("templates", "from_input", "chain")

    def __init__(self, templates, from_input):
        self.templates = templates
        self.from_input = from_input
        self.chain = _C.block_chain([tuple(t[1:12]) + (residual, t[13]) + tuple(t[14:17])
                                     for t, residual in zip(templates, from_input)])

    def __call__(self, x):
        return _C.block_chain_run(self.chain, x)


def _chain_blocks(steps, output_slots):
    """Each run of two or more conv_pw_dw_pw steps in which a step's input is
    the output of the step before, which nothing else reads, and whose
    residual, if any, is its own input, becomes one block_chain step."""
    reader_steps = collections.defaultdict(set)
    for index, step in enumerate(steps):
        for slot in _slots_read(step[3]):
            reader_steps[slot].add(index)

    def block_input(step):
        """(input slot, whether the input is also the residual) of a
        conv_pw_dw_pw step a chain can take, else None."""
        name, _, _, fills, kwargs, out, _ = step
        spec = dict(fills)
        if (name != "conv_pw_dw_pw" or kwargs or type(out) is not int or set(spec) - {0, 12}
                or spec[0][0] != "slot" or spec.get(12, spec[0]) != spec[0]):
            return None
        return spec[0][1], 12 in spec

    chained, index = [], 0
    while index < len(steps):
        run = [index] if block_input(steps[index]) is not None else []
        while run and run[-1] + 1 < len(steps):
            out, following = steps[run[-1]][5], block_input(steps[run[-1] + 1])
            if (following is None or following[0] != out or out in output_slots
                    or reader_steps[out] != {run[-1] + 1}):
                break
            run.append(run[-1] + 1)
        if len(run) < 2:
            chained.append(steps[index])
            index += 1
            continue
        chain = _BlockChain([steps[k][2] for k in run], [block_input(steps[k])[1] for k in run])
        x_slot = block_input(steps[run[0]])[0]
        chained.append(("block_chain", chain, [None], [(0, ("slot", x_slot))], {},
                        steps[run[-1]][5], steps[run[-1]][6]))
        index = run[-1] + 1
    return chained


def _resolve(spec, slots):
    kind, value = spec
    if kind == "slot":
        return slots[value]
    seq_type, items = value
    return seq_type(v if k == "const" else _resolve((k, v), slots) for k, v in items)


def _slots_read(fills):
    for _, spec in fills:
        kind, value = spec
        if kind == "slot":
            yield value
        else:
            yield from _slots_read([(None, item) for item in value[1] if item[0] != "const"])


def _same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


class _ShapePlan:
    """The steps recorded for one input shape."""

    def __init__(self, recorder, output, fuse_joins, prepack=False, fuse_blocks=False,
                 chain_blocks=False):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        if not outputs or not all(isinstance(o, _C.TensorBase) for o in outputs):
            raise TypeError("compile_for_inference: the model must return a Tensor or a tuple "
                            "or list of Tensors")
        missing = [i for i, o in enumerate(outputs) if id(o) not in recorder.slot_of]
        if missing:
            raise RuntimeError(f"compile_for_inference: output {missing[0]} of the model was not "
                               f"computed by an op of the core from its input")
        self.output_type = type(output) if isinstance(output, (tuple, list)) else None
        self.output_slots = [recorder.slot_of[id(o)] for o in outputs]
        self.slots = recorder.slots
        steps = recorder.steps
        if fuse_joins:
            steps = _fuse_residual_joins(steps, recorder.shapes, set(self.output_slots))
        if fuse_blocks:
            steps = _fuse_blocks(steps, recorder.shapes, set(self.output_slots))
        if prepack:
            steps = _prepack_weights(steps)
        if fuse_blocks and chain_blocks:
            steps = _chain_blocks(steps, set(self.output_slots))
        # each slot is dropped after the last step that reads it, so a
        # replay holds no more activations than the eager forward pass
        last_read = {}
        for index, step in enumerate(steps):
            for slot in _slots_read(step[3]):
                last_read[slot] = index
        keep = set(self.output_slots)
        frees = collections.defaultdict(list)
        for slot, index in last_read.items():
            if slot not in keep:
                frees[index].append(slot)
        self.steps = []
        for index, (name, function, template, fills, kwargs, out, _) in enumerate(steps):
            flat = all(spec[0] == "slot" for _, spec in fills)
            flat_fills = tuple((i, spec[1]) for i, spec in fills) if flat else None
            self.steps.append((function, tuple(template), flat_fills, tuple(fills), kwargs, out,
                               tuple(frees.get(index, ()))))
        self.op_names = [step[0] for step in steps]

    def _compile(self):
        """self.steps as one straight-line Python function: each step a call
        with its constants bound by name and its slots as local variables
        (no argument lists built, no loop), about half the interpreter's time
        per step of the generic loop below.  Compiled again whenever
        self.steps is replaced (bench/plan_chain.py wraps the steps)."""
        namespace = {}

        def bind(value):
            name = f"k{len(namespace)}"
            namespace[name] = value
            return name

        def expression(spec):
            kind, value = spec
            if kind == "slot":
                return f"s{value}"
            seq_type, items = value
            parts = [bind(v) if k == "const" else expression((k, v)) for k, v in items]
            return f"{bind(seq_type)}(({''.join(part + ', ' for part in parts)}))"

        lines = ["def run(s0):"]
        for function, template, _, fills, kwargs, out, frees in self.steps:
            filled = dict(fills)
            args = [expression(filled[i]) if i in filled else bind(value)
                    for i, value in enumerate(template)]
            if kwargs:
                args.append(f"**{bind(kwargs)}")
            call = f"{bind(function)}({', '.join(args)})"
            if type(out) is int:
                lines.append(f"    s{out} = {call}")
            elif out:
                lines.append(f"    result = {call}")
                lines.extend(f"    s{slot} = result[{k}]" for k, slot in enumerate(out))
            else:
                lines.append(f"    {call}")
            lines.extend(f"    s{slot} = None" for slot in frees)
        outputs = ", ".join(f"s{slot}" for slot in self.output_slots)
        if self.output_type is None:
            lines.append(f"    return {outputs}")
        else:
            lines.append(f"    return {bind(self.output_type)}([{outputs}])")
        exec(compile("\n".join(lines), "<inference plan>", "exec"), namespace)
        self._compiled = (self.steps, namespace["run"])

    def run(self, x):
        compiled_steps, compiled = getattr(self, "_compiled", (None, None))
        if compiled_steps is not self.steps:
            self._compile()
            compiled = self._compiled[1]
        return compiled(x)

    def run_stepwise(self, x):
        """run() as a loop over self.steps (what the compiled function does)."""
        slots = [None] * self.slots
        slots[0] = x
        for function, template, flat_fills, fills, kwargs, out, frees in self.steps:
            args = list(template)
            if flat_fills is not None:
                for position, slot in flat_fills:
                    args[position] = slots[slot]
            else:
                for position, spec in fills:
                    args[position] = _resolve(spec, slots)
            result = function(*args, **kwargs) if kwargs else function(*args)
            if type(out) is int:
                slots[out] = result
            elif out:
                for slot, value in zip(out, result):
                    slots[slot] = value
            for slot in frees:
                slots[slot] = None
        outputs = [slots[s] for s in self.output_slots]
        return outputs[0] if self.output_type is None else self.output_type(outputs)


def _as_input(x, what):
    if isinstance(x, _C.TensorBase):
        return x
    try:
        array = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: expected an appealnet Tensor or an array of numbers, got "
                        f"{type(x).__name__}") from exc
    return tensor(array)


def _record(model, example, fuse_joins, prepack=False, fuse_blocks=False, chain_blocks=False):
    """(_ShapePlan, eager output) from one traced forward pass of ``model``."""
    recorder = _Recorder(model, example)
    read_back = {}

    def guard(method_name):
        original = getattr(Tensor, method_name)

        def guarded(self, *args, **kwargs):
            if id(self) in recorder.slot_of:
                recorder.fail(f"the forward pass reads an activation back into Python "
                              f"(Tensor.{method_name}): the ops then depend on the data")
            return original(self, *args, **kwargs)
        return original, guarded

    for method_name in ("numpy", "item"):
        read_back[method_name] = guard(method_name)
    own = {name: Tensor.__dict__[name] for name in read_back if name in Tensor.__dict__}
    try:
        for method_name, (_, guarded) in read_back.items():
            setattr(Tensor, method_name, guarded)
        with ops_wrapped(recorder.wrap), no_grad():
            output = model(example)
    finally:
        for method_name in read_back:
            if method_name in own:
                setattr(Tensor, method_name, own[method_name])
            else:
                delattr(Tensor, method_name)
    if recorder.error is not None:
        raise RuntimeError(f"compile_for_inference: {recorder.error}")
    return _ShapePlan(recorder, output, fuse_joins, prepack, fuse_blocks, chain_blocks), output


class InferencePlan:
    """A model's forward pass replayed from recorded C-core calls (see the
    module docstring).  Call it like the model; it runs under no_grad and
    gives the model's output bit for bit.

    ``model`` is the eval-mode module the plan records from (after
    ``compile_for_inference``, the copy with batch norms folded);
    ``fuse_joins`` folds residual joins into the convolution before them;
    ``fuse_blocks`` runs each inverted-residual block (1x1, depthwise 3x3,
    1x1) of a batch-1 plan as one call (``_C.conv_pw_dw_pw``);
    ``chain_blocks`` runs each run of such blocks, one feeding the next, as
    one call (``_C.block_chain_run``: one parallel region for the run);
    ``prepack`` packs the 1x1 convolutions' weights once (only for a model
    whose weights will not change: the packed copies would not follow);
    ``shapes`` lists the input shapes recorded so far."""

    def __init__(self, model, max_shapes=8, fuse_joins=True, prepack=False, fuse_blocks=True,
                 chain_blocks=True):
        if not isinstance(model, Module):
            raise TypeError(f"InferencePlan: expected an appealnet.nn.Module, got "
                            f"{type(model).__name__}")
        if not isinstance(max_shapes, int) or isinstance(max_shapes, bool) or max_shapes < 1:
            raise ValueError(f"InferencePlan: max_shapes must be a positive int, got {max_shapes!r}")
        self.model = model
        self.max_shapes = max_shapes
        self.fuse_joins = bool(fuse_joins)
        self.prepack = bool(prepack)
        self.fuse_blocks = bool(fuse_blocks)
        self.chain_blocks = bool(chain_blocks)
        self._plans = collections.OrderedDict()

    @property
    def shapes(self):
        return list(self._plans)

    def ops(self, shape):
        """Names of the core ops the plan for input ``shape`` runs, in order."""
        return list(self._plan_for(tuple(shape)).op_names)

    def _plan_for(self, shape, example=None):
        plan = self._plans.get(shape)
        if plan is not None:
            self._plans.move_to_end(shape)
            return plan
        if example is None:
            example = tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        modes = [(module, module.training) for module in self.model.modules()]
        try:
            self.model.eval()
            plan, expected = _record(self.model, example, self.fuse_joins, self.prepack,
                                     self.fuse_blocks, self.chain_blocks)
            self._verify(plan, example, expected)
            # a second input: an op that escaped the trace would keep the
            # first input's values and differ here
            other = tensor(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
            with no_grad():
                self._verify(plan, other, self.model(other))
        finally:
            for module, training in modes:
                module.training = training
        self._plans[shape] = plan
        if len(self._plans) > self.max_shapes:
            self._plans.popitem(last=False)
        return plan

    @staticmethod
    def _verify(plan, example, expected):
        with no_grad():
            got = plan.run(example)
        expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        if len(got) != len(expected) or not all(
                _same_bits(g.numpy(), e.numpy()) for g, e in zip(got, expected)):
            raise RuntimeError("compile_for_inference: replaying the recorded ops does not "
                               "reproduce the model's output (its forward pass does something "
                               "outside the ops of the core that a replay cannot see)")

    def __call__(self, x):
        x = _as_input(x, "InferencePlan")
        plan = self._plan_for(tuple(x.shape))
        with no_grad():
            return plan.run(x)

    def __repr__(self):
        return (f"InferencePlan({type(self.model).__name__}, shapes={self.shapes}, "
                f"max_shapes={self.max_shapes})")


def compile_for_inference(model, example_input, fuse=True, max_shapes=8):
    """An :class:`InferencePlan` of ``model`` for inputs like ``example_input``.

    With ``fuse`` (the default) batch norms are first folded into their
    convolutions by :func:`fuse_for_inference` (on a copy: ``model`` is not
    changed) and residual joins into the convolutions before them, and the
    1x1 convolutions' weights of that copy are packed once for the GEMM; the
    plan then reproduces the fused model bit for bit.  The
    plan for ``example_input``'s shape is recorded and checked now; other
    shapes are recorded on first use (at most ``max_shapes`` are kept)."""
    if not isinstance(model, Module):
        raise TypeError(f"compile_for_inference: expected an appealnet.nn.Module, got "
                        f"{type(model).__name__}")
    example = _as_input(example_input, "compile_for_inference")
    if example.ndim == 0 or example.numel() == 0:
        raise ValueError(f"compile_for_inference: the example input must be a non-empty "
                         f"tensor, got shape {tuple(example.shape)}")
    if fuse:
        from .fusion import fuse_for_inference
        model = fuse_for_inference(model, example)
    plan = InferencePlan(model, max_shapes=max_shapes, fuse_joins=fuse, prepack=fuse,
                         fuse_blocks=fuse, chain_blocks=fuse)
    plan._plan_for(tuple(example.shape), example)
    return plan
