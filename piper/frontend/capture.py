"""Capture one whole training step of an nn.Module as graph IR.

aot_autograd traces the model and loss into one joint forward+backward graph
(`aot_export_joint_with_descriptors`), whose nodes say whether they are
forward or backward and whose inputs/outputs say which parameter or gradient
they are. Capture splits it into `@forward` (returning the loss and the
values backward needs) and `@backward` (returning one gradient per trained
parameter), traces the optimizer's per-parameter update into `@optimizer`,
and wires the three in `@train_step`, which is what one step of training
computes:

    @train_step(params, buffers, optimizer state, inputs)
        -> (loss, new params, new optimizer state)
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    AnyFloat,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    NameLoc,
    NoneAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Block, Region, SSAValue

from piper.diagnostics import PiperError
from piper.dialects.graph import (
    BUILTIN_NAMESPACES,
    ArgRefAttr,
    AtenOp,
    ConstantOp,
    tensor_type,
)
from piper.dialects.graph_values import to_attr
from piper.frontend import annotate as ann
from piper.frontend.optim import SGD, AdamW, from_torch
from piper.ir import sanitize
from piper.libraries import defining_module

# Ops that are the identity on values in a functional graph.
_IDENTITY = {"aten.detach.default", "aten.alias.default"}


@dataclass
class StepSignature:
    """Names of @train_step's arguments, in order, by kind."""

    params: list[str]
    buffers: list[str]
    states: list[str]  # "<param>:<state>", then "step" if the optimizer counts
    inputs: list[str]
    trained: list[str]  # params that receive a gradient, in param order

    @property
    def arg_names(self) -> list[str]:
        return self.params + self.buffers + self.states + self.inputs


@dataclass
class CapturedStep:
    """A captured training step: its IR and the current training state.

    `input_names`: the user's name of each model input and target, in the
    order of @train_step's inputs (`input0`, `input1`, ... in the IR): the
    forward's parameter names, or the keys of a dict of example inputs.
    `libraries`: the modules that register the custom operators the step
    calls. `state_keys`, `aliases` and `extra` rebuild the model's own
    state dict from trained values (`state_dict`)."""

    module: ModuleOp
    signature: StepSignature
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    input_names: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    state_keys: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def state_dict(self, values: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The model's state dict (its own keys, tied names included) from
        `values` (default: this step's current values): what
        `model.load_state_dict` takes."""
        values = self.values if values is None else values
        out = {}
        for k in self.state_keys:
            name = self.aliases.get(k, k)
            out[k] = values[name] if name in values else self.extra[k]
        return out

    def run(self, *inputs: torch.Tensor, device="cpu") -> torch.Tensor:
        """One training step with the reference executor; updates `values`."""
        from piper.backend.aten import run_function

        sig = self.signature
        if len(inputs) != len(sig.inputs):
            raise PiperError(
                f"train_step takes {len(sig.inputs)} inputs, got {len(inputs)}"
            )
        args = [self.values[n] for n in sig.params + sig.buffers + sig.states]
        outs = run_function(self.module, "train_step", [*args, *inputs], device)
        loss, rest = outs[0], outs[1:]
        for name, value in zip(sig.params + sig.states, rest, strict=True):
            self.values[name] = value
        return loss

    def text(self, locations: bool = True) -> str:
        from piper.ir import print_module

        return print_module(self.module, locations=locations)


def capture(
    model: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor] | None = None,
    targets: Sequence[torch.Tensor] = (),
    optimizer=None,
) -> CapturedStep:
    """Trace one training step of `model` into graph IR.

    `loss_fn(model(*example_inputs), *targets)` must return a scalar; without
    `loss_fn` the model itself must return the scalar loss. `optimizer` is a
    torch.optim.SGD/AdamW over `model.parameters()` or a piper.optim spec;
    default plain SGD with lr 1e-2.
    """
    spec = from_torch(optimizer) if optimizer is not None else SGD(lr=1e-2)
    keywords: tuple[str, ...] = ()
    if isinstance(example_inputs, dict):
        keywords = tuple(example_inputs)
        example_inputs = tuple(example_inputs.values())
    else:
        example_inputs = tuple(example_inputs)
    targets = tuple(targets)
    for i, t in enumerate(example_inputs + targets):
        if not isinstance(t, torch.Tensor):
            what = (f"example input '{keywords[i]}'" if i < len(keywords)
                    else f"example input {i}")
            raise PiperError(f"capture: {what} is a {type(t).__name__}, not a tensor")
    wrapper = _LossWrapper(model, loss_fn, len(example_inputs), keywords)
    joint = _trace_joint(wrapper, example_inputs + targets)
    aliases = _aliases(model)
    _merge_tied(joint, aliases)
    _tag_gradient_accumulation(joint)
    names_in = [f"input{i}" for i in range(len(example_inputs))] + [
        f"target{i}" for i in range(len(targets))
    ]
    builder = _StepBuilder(joint, names_in, spec)
    module, sig = builder.build()
    values: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for n in sig.params:
        values[n] = params[n].detach().clone()
    for n in sig.buffers:
        values[n] = buffers[n].detach().clone()
    for n in sig.states:
        if n == "step":
            values[n] = torch.zeros((), dtype=torch.float64)
        else:
            values[n] = torch.zeros_like(values[n.rsplit(":", 1)[0]])
    own = model.state_dict(keep_vars=True)
    extra = {k: v.detach().clone() for k, v in own.items()
             if aliases.get(k, k) not in values}
    user_names = list(keywords) or _parameter_names(model, len(example_inputs))
    user_names += [f"target{i}" for i in range(len(targets))]
    return CapturedStep(module, sig, values, input_names=user_names,
                        libraries=_libraries(joint), state_keys=list(own), aliases=aliases,
                        extra=extra)


def _parameter_names(model: torch.nn.Module, n: int) -> list[str]:
    """The names of the first `n` positional parameters of model.forward
    (`input{i}` where it has none: *args)."""
    import inspect

    names = []
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    names = names[:n]
    return names + [f"input{i}" for i in range(len(names), n)]


def _libraries(gm: fx.GraphModule) -> list[str]:
    """The modules that register the custom operators `gm` calls."""
    found = set()
    for n in gm.graph.nodes:
        t = n.target
        if n.op == "call_function" and isinstance(t, torch._ops.OpOverload) \
                and t.namespace not in BUILTIN_NAMESPACES:
            mod = defining_module(t)
            if mod is not None:
                found.add(mod)
    return sorted(found)


class _LossWrapper(torch.nn.Module):
    def __init__(self, model, loss_fn, n_inputs, keywords=()):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.n_inputs = n_inputs
        self.keywords = keywords

    def forward(self, *args):
        ann.reset_counters()
        inputs = args[: self.n_inputs]
        if self.keywords:
            out = self.model(**dict(zip(self.keywords, inputs, strict=True)))
        else:
            out = self.model(*inputs)
        if self.loss_fn is None:
            loss = _loss_of(out)
        else:
            import torch.fx.traceback as fx_traceback

            with fx_traceback.annotate({ann.MODULE_KEY: ann.LOSS_FN}):
                loss = self.loss_fn(out, *args[self.n_inputs :])
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise PiperError(
                f"the loss must be a scalar tensor; the model returns {_what(loss)} (return "
                f"the loss from forward, pass labels to a model that computes it, or give "
                f"loss_fn)")
        return loss


def _loss_of(out):
    """The loss in a model's output: the output itself, its `loss` field
    (transformers' ModelOutput, a dict), or the first element of a tuple."""
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, dict):
        loss = out.get("loss")
    if loss is None and isinstance(out, tuple | list) and out:
        loss = out[0]
    return out if loss is None else loss


def _what(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {list(v.shape)}"
    return "None" if v is None else f"a {type(v).__name__}"


def _trace_joint(wrapper, args) -> fx.GraphModule:
    from torch._functorch.aot_autograd import aot_export_joint_with_descriptors
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        UnsupportedOperatorException,
    )

    tags = ann.outside_tags(wrapper.model)
    with contextlib.ExitStack() as stack, ann.module_paths(wrapper.model, tags), \
            compiler_front_door():
        try:
            jwd = aot_export_joint_with_descriptors(stack, wrapper, args)
        except (DataDependentOutputException, DynamicOutputShapeException) as e:
            why = (
                "its output shape depends on tensor values"
                if isinstance(e, DynamicOutputShapeException)
                else "it reads tensor values into Python"
            )
            hint = ""
            if "nonzero" in str(e.func) or "where" in str(e.func):
                hint = ("; to route tokens to experts with static shapes use piper.moe "
                        "(route, dispatch, combine), or piper.moe.route_through_slots(model) "
                        "for a transformers MoE model")
            raise PiperError(
                f"capture: unsupported operation {e.func}: {why}"
                f"{_raised_in(wrapper.model, e.__traceback__)}{hint}"
            ) from None
        except UnsupportedOperatorException as e:
            need = ""
            if getattr(e.func, "namespace", "aten") not in BUILTIN_NAMESPACES:
                need = ("; a custom operator needs a fake kernel so that capture knows its "
                        "result shapes without running it (torch.library.register_fake)")
            raise PiperError(
                f"capture: unsupported operation {e.func}{need}"
                f"{_raised_in(wrapper.model, e.__traceback__)}"
            ) from None
        except RuntimeError as e:  # torch.library.custom_op without a fake kernel
            found = re.search(r"no fake impl registered for <CustomOpDef\(([\w:.]+)\)>", str(e))
            if found is None:
                raise
            raise PiperError(
                f"capture: custom operator {found.group(1)} has no fake kernel; capture needs "
                f"one to know its result shapes without running it: add one with "
                f"@{found.group(1).split('::')[-1]}.register_fake (torch.library.register_fake)"
                f"{_raised_in(wrapper.model, e.__traceback__)}"
            ) from None
        except AssertionError as e:  # the tracer met a real tensor it was not given
            found = re.search(r"Found in ([\w.]+)\(", str(e))
            if "FakeTensor" not in str(e) or found is None:
                raise
            raise PiperError(
                f"capture: {found.group(1)} reads a tensor that is not a parameter, buffer, "
                f"input or literal of the model; register it with register_buffer"
                f"{_raised_in(wrapper.model, e.__traceback__)}"
            ) from None
        return jwd.graph_module


@contextlib.contextmanager
def compiler_front_door():
    """Trace as the PyTorch compiler does: `torch.compiler.is_compiling()`
    is true inside, so library code (transformers' masks, MoE routing)
    takes the static, traceable path it keeps for torch.compile and
    torch.export instead of reading tensor values in Python.

    This is the state non-strict torch.export traces a model in. Capture
    sets it around its own aot_autograd trace rather than calling
    torch.export and tracing the exported program a second time: one trace
    instead of two, about 2x faster on transformers models. torch keeps
    the switch private (`torch._export.utils._compiling_state_context`);
    if it moves, the two public flags it sets are set here directly.
    """
    try:
        from torch._export.utils import _compiling_state_context
    except ImportError:  # pragma: no cover - depends on the torch release
        _compiling_state_context = None
    if _compiling_state_context is not None:
        with _compiling_state_context():
            yield
        return
    old = torch.compiler._is_compiling_flag, torch.compiler._is_exporting_flag
    torch.compiler._is_compiling_flag = torch.compiler._is_exporting_flag = True
    try:
        yield
    finally:
        torch.compiler._is_compiling_flag, torch.compiler._is_exporting_flag = old


def _raised_in(model: torch.nn.Module, tb) -> str:
    """' (in module 'path', file:line)' for the innermost module of `model`
    whose own code is on traceback `tb`, or ''."""
    names = {id(m): n for n, m in model.named_modules()}
    torch_dir = torch.__file__.rsplit("/", 1)[0]
    where = ""
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        owner = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
        user_code = not code.co_filename.startswith(torch_dir)
        if user_code and owner is not None and id(owner) in names:
            path = names[id(owner)]
            what = f"module '{path}'" if path else "the model's forward"
            where = f" (in {what}, {code.co_filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    return where


def _aliases(model: torch.nn.Module) -> dict[str, str]:
    """Second names of tied parameters/buffers -> the name capture uses
    (the first, as `named_parameters()` gives it)."""
    out: dict[str, str] = {}
    for named in (model.named_parameters, model.named_buffers):
        first: dict[int, str] = {}
        for name, t in named(remove_duplicate=False):
            out_name = first.setdefault(id(t), name)
            if out_name != name:
                out[name] = out_name
    return out


def _merge_tied(gm: fx.GraphModule, aliases: dict[str, str]) -> None:
    """Make each tied parameter one graph input with one gradient.

    aot_autograd lifts a tensor reachable under two names as two inputs,
    each with its own partial gradient. Capture keeps the first name: the
    other input's uses move to it and its gradient is added to the first's,
    which is what eager autograd accumulates.
    """
    if not aliases:
        return
    g = gm.graph

    def name_of(desc) -> str | None:
        target = getattr(desc, "target", None)
        if target is None or type(desc).__name__ not in ("ParamAOTInput", "BufferAOTInput"):
            return None
        target = target.removeprefix("model.")
        return aliases.get(target, target)

    first: dict[str, fx.Node] = {}
    for n in [n for n in g.nodes if n.op == "placeholder"]:
        name = name_of(n.meta.get("desc"))
        if name is None:
            continue
        if name in first:
            n.replace_all_uses_with(first[name])
            g.erase_node(n)
        else:
            first[name] = n
    out = next(n for n in g.nodes if n.op == "output")
    values = list(out.args[0])
    at: dict[str, int] = {}
    for i, (v, d) in enumerate(zip(values, out.meta["desc"], strict=True)):
        if v is None or type(d).__name__ != "GradAOTOutput":
            continue
        name = name_of(d.grad_of)
        if name is None:
            continue
        if name not in at:
            at[name] = i
            continue
        j = at[name]
        with g.inserting_before(out):
            total = g.call_function(torch.ops.aten.add.Tensor, (values[j], v))
        total.meta["val"] = values[j].meta["val"]
        total.meta["partitioner_tag"] = "is_backward"
        total.meta["is_gradient_acc"] = True
        values[j], values[i] = total, None
    out.args = (type(out.args[0])(values),)


def _tag_gradient_accumulation(gm: fx.GraphModule) -> None:
    """Give the backward nodes that sum gradients tags and a module path.

    torch.fx leaves gradient accumulation (the sum of the gradients of a
    value used more than once) unannotated. Such a node takes the tags its
    gradient inputs share, outermost first (`{PP: 1}` for the experts of
    `{PP: 1, EP: e}`), and their common module path; inputs that share no
    tag (a weight tied across regions) give it the tags and module of the
    input computed last.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for n in gm.graph.nodes:
        if not n.meta.get("is_gradient_acc") or _tags(n):
            continue
        ins = sorted((a for a in n.all_input_nodes if _tags(a)), key=order.__getitem__)
        if not ins:
            continue
        shared: dict[str, int] = {}
        for k, v in _tags(ins[0]).items():
            if any(_tags(a).get(k) != v for a in ins[1:]):
                break
            shared[k] = v
        paths = [(_location(a) or "").split(".") for a in ins]
        common = []
        for parts in zip(*paths, strict=False):
            if any(p != parts[0] for p in parts):
                break
            common.append(parts[0])
        path = ".".join(common) or _location(ins[-1])
        if not shared:
            shared, path = _tags(ins[-1]), _location(ins[-1])
        custom = dict(shared)
        if path:
            custom[ann.MODULE_KEY] = path
        n.meta["custom"] = custom


def _names(**kw) -> DictionaryAttr:
    return DictionaryAttr({f"graph.{k}": StringAttr(v) for k, v in kw.items()})


class _StepBuilder:
    def __init__(self, gm: fx.GraphModule, input_names: list[str], spec):
        self.gm = gm
        self.input_names = input_names
        self.spec = spec

    # -- classification of the joint graph ----------------------------------

    def build(self) -> tuple[ModuleOp, StepSignature]:
        g = self.gm.graph
        placeholders = [n for n in g.nodes if n.op == "placeholder"]
        out_node = next(n for n in g.nodes if n.op == "output")
        params, buffers, inputs, tangent = [], [], [], None
        ph_name: dict[fx.Node, str] = {}
        for n in placeholders:
            desc = n.meta.get("desc")
            kind = type(desc).__name__
            if kind == "ParamAOTInput":
                params.append(n)
                ph_name[n] = desc.target.removeprefix("model.")
            elif kind == "BufferAOTInput":
                buffers.append(n)
                ph_name[n] = desc.target.removeprefix("model.")
            elif kind == "PlainAOTInput":
                inputs.append(n)
                ph_name[n] = self.input_names[desc.idx]
            elif kind == "TangentAOTInput":
                tangent = n
            else:
                raise PiperError(f"capture: unexpected graph input {desc}")
        if tangent is None:
            raise PiperError("capture: the loss does not depend on any parameter")
        outs = out_node.args[0]
        descs = out_node.meta["desc"]
        loss_node = None
        grads: dict[str, fx.Node] = {}
        for v, d in zip(outs, descs, strict=True):
            kind = type(d).__name__
            if kind == "PlainAOTOutput":
                loss_node = v
            elif kind == "GradAOTOutput" and v is not None:
                target = getattr(d.grad_of, "target", None)
                if target is not None and type(d.grad_of).__name__ == "ParamAOTInput":
                    grads[target.removeprefix("model.")] = v
        self.ph_name = ph_name
        body = [n for n in g.nodes if n.op == "call_function"]
        fwd = [n for n in body if n.meta.get("partitioner_tag") != "is_backward"]
        bwd = [n for n in body if n.meta.get("partitioner_tag") == "is_backward"]
        fwd_set = set(fwd) | set(placeholders) - {tangent}
        saved: list[fx.Node] = []
        for n in bwd:
            for a in n.all_input_nodes:
                if a in fwd_set and a not in saved and a.op != "placeholder":
                    saved.append(a)
        saved = [self._resolve_identity(s) for s in saved]
        saved = list(dict.fromkeys(saved))
        bwd_ph = []
        for n in bwd:
            for a in n.all_input_nodes:
                a = self._resolve_identity(a)
                if a.op == "placeholder" and a is not tangent and a not in bwd_ph:
                    bwd_ph.append(a)
        saved = [s for s in saved if s.op != "placeholder"]

        param_names = [ph_name[p] for p in params]
        trained = [p for p in param_names if p in grads]
        states = [f"{p}:{s}" for p in trained for s in self.spec.state_names]
        if self.spec.uses_step and trained:
            states.append("step")
        sig = StepSignature(
            params=param_names,
            buffers=[ph_name[b] for b in buffers],
            states=states,
            inputs=[ph_name[i] for i in inputs],
            trained=trained,
        )
        module = ModuleOp([])
        fwd_fn = self._forward(params + buffers + inputs, fwd, loss_node, saved)
        bwd_fn = self._backward(saved, bwd_ph, tangent, bwd, [grads[p] for p in trained], trained)
        opt_fn = self._optimizer(sig, params)
        step_fn = self._train_step(sig, fwd_fn, bwd_fn, opt_fn, params, buffers, inputs, saved, bwd_ph)
        for f in (fwd_fn, bwd_fn, opt_fn, step_fn):
            module.body.block.add_op(f)
        return module, sig

    def _resolve_identity(self, n: fx.Node) -> fx.Node:
        while n.op == "call_function" and str(n.target) in _IDENTITY:
            n = n.args[0]
        return n

    # -- functions ----------------------------------------------------------

    def _arg_attrs(self, nodes, kind_of) -> ArrayAttr:
        return ArrayAttr([_names(name=self._value_name(n), kind=kind_of(n)) for n in nodes])

    def _value_name(self, n: fx.Node) -> str:
        return self.ph_name.get(n, n.name)

    def _kind(self, n: fx.Node) -> str:
        desc = type(n.meta.get("desc")).__name__
        return {
            "ParamAOTInput": "param",
            "BufferAOTInput": "buffer",
            "PlainAOTInput": "input",
        }.get(desc, "saved")

    def _new_function(self, name, arg_nodes, arg_types, arg_attrs):
        block = Block(arg_types=arg_types)
        env: dict[fx.Node, object] = {}
        for n, a in zip(arg_nodes, block.args, strict=True):
            env[n] = a
            a.name_hint = sanitize(self._value_name(n))
        return block, env

    def _forward(self, ins, nodes, loss_node, saved):
        block, env = self._new_function(
            "forward", ins, [_type_of(n) for n in ins], None
        )
        for n in nodes:
            _emit(n, env, block, self.gm)
        results = [env[loss_node]] + [env[s] for s in saved]
        block.add_op(func.ReturnOp(*results))
        res_attrs = ArrayAttr(
            [_names(name="loss", kind="loss")]
            + [_names(name=s.name, kind="saved") for s in saved]
        )
        return func.FuncOp(
            "forward",
            ([_type_of(n) for n in ins], [r.type for r in results]),
            Region(block),
            arg_attrs=self._arg_attrs(ins, self._kind),
            res_attrs=res_attrs,
        )

    def _backward(self, saved, phs, tangent, nodes, grad_nodes, trained):
        ins = saved + phs + [tangent]
        block, env = self._new_function(
            "backward", ins, [_type_of(n) for n in ins], None
        )
        block.args[-1].name_hint = "tangent"
        for n in nodes:
            _emit(n, env, block, self.gm)
        results = [env[self._resolve_identity(g)] for g in grad_nodes]
        block.add_op(func.ReturnOp(*results))

        def kind(n):
            return "tangent" if n is tangent else self._kind(n)

        attrs = self._arg_attrs(ins, kind)
        data = list(attrs.data)
        data[-1] = _names(name="loss", kind="tangent")
        return func.FuncOp(
            "backward",
            ([_type_of(n) for n in ins], [r.type for r in results]),
            Region(block),
            arg_attrs=ArrayAttr(data),
            res_attrs=ArrayAttr([_names(name=p, kind="grad") for p in trained]),
        )

    def _optimizer(self, sig: StepSignature, params):
        by_name = {self.ph_name[p]: p for p in params}
        spec = self.spec
        ptypes = [_type_of(by_name[p]) for p in sig.trained]
        n_state = len(spec.state_names)
        step_t = tensor_type([], torch.float64)
        arg_types = ptypes + ptypes  # params, grads
        arg_attrs = [_names(name=p, kind="param") for p in sig.trained]
        arg_attrs += [_names(name=p, kind="grad") for p in sig.trained]
        for p, t in zip(sig.trained, ptypes, strict=True):
            for s in spec.state_names:
                arg_types.append(t)
                arg_attrs.append(_names(name=f"{p}:{s}", kind="state"))
        if spec.uses_step:
            arg_types.append(step_t)
            arg_attrs.append(_names(name="step", kind="state"))
        block = Block(arg_types=arg_types)
        k = len(sig.trained)
        new_params, new_states = [], []
        step = None
        if spec.uses_step:
            block.args[-1].name_hint = "step"
            one = AtenOp("aten.add.Tensor", [block.args[-1]], [ArgRefAttr(0), to_attr(1.0, lambda v: None)], {}, [step_t])
            one.location = NameLoc(StringAttr("step"), NoneAttr())
            block.add_op(one)
            step = one.outputs[0]
        traced: dict[tuple, fx.GraphModule] = {}
        for i, p in enumerate(sig.trained):
            pv, gv = block.args[i], block.args[k + i]
            pv.name_hint = sanitize(p)
            gv.name_hint = sanitize(p) + "_grad"
            svs = [block.args[2 * k + i * n_state + j] for j in range(n_state)]
            for j, s in enumerate(spec.state_names):
                svs[j].name_hint = sanitize(f"{p}_{s}")
            t = _type_of(by_name[p])
            key = (tuple(t.get_shape()), t.element_type)
            if key not in traced:
                traced[key] = _trace_update(spec, by_name[p].meta["val"])
            gm = traced[key]
            env: dict[fx.Node, object] = {}
            phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
            feed = [pv, gv, *svs] + ([step] if spec.uses_step else [])
            for n, v in zip(phs, feed, strict=True):
                env[n] = v
            before = block.last_op
            for n in gm.graph.nodes:
                if n.op == "call_function":
                    _emit(n, env, block, gm)
            # The update's ops have no module of their own: they are where
            # the parameter they update is.
            loc = NameLoc(StringAttr(p), NoneAttr())
            o = block.first_op if before is None else before.next_op
            while o is not None:
                o.location = loc
                o = o.next_op
            out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
            new_p, new_s = out[0], out[1]
            new_params.append(env[new_p])
            new_states.extend(env[s] for s in new_s)
        results = new_params + new_states + ([step] if spec.uses_step else [])
        block.add_op(func.ReturnOp(*results))
        res_attrs = [_names(name=p, kind="param") for p in sig.trained]
        res_attrs += [a for a in arg_attrs[2 * k :]]
        return func.FuncOp(
            "optimizer",
            (arg_types, [r.type for r in results]),
            Region(block),
            arg_attrs=ArrayAttr(arg_attrs),
            res_attrs=ArrayAttr(res_attrs),
        )

    def _train_step(self, sig, fwd_fn, bwd_fn, opt_fn, params, buffers, inputs, saved, bwd_ph):
        ins = params + buffers + inputs
        types = [_type_of(n) for n in params + buffers]
        opt_inputs = opt_fn.function_type.inputs.data
        k = len(sig.trained)
        state_types = list(opt_inputs[2 * k :])
        types += state_types + [_type_of(n) for n in inputs]
        block = Block(arg_types=types)
        np_, nb = len(params), len(buffers)
        env: dict[fx.Node, SSAValue] = {}
        for n, a in zip(params + buffers, block.args[: np_ + nb], strict=True):
            env[n] = a
            a.name_hint = sanitize(self._value_name(n))
        state_args = block.args[np_ + nb : np_ + nb + len(state_types)]
        for name, a in zip(sig.states, state_args, strict=True):
            a.name_hint = sanitize(name)
        for n, a in zip(inputs, block.args[np_ + nb + len(state_types) :], strict=True):
            env[n] = a
            a.name_hint = sanitize(self._value_name(n))
        fcall = func.CallOp("forward", [env[n] for n in ins], fwd_fn.function_type.outputs.data)
        block.add_op(fcall)
        loss = fcall.results[0]
        loss.name_hint = "loss"
        saved_vals = dict(zip(saved, fcall.results[1:], strict=True))
        ones = AtenOp("aten.ones_like.default", [loss], [ArgRefAttr(0)], {}, [loss.type])
        block.add_op(ones)
        bcall = func.CallOp(
            "backward",
            [saved_vals[s] for s in saved] + [env[p] for p in bwd_ph] + [ones.outputs[0]],
            bwd_fn.function_type.outputs.data,
        )
        block.add_op(bcall)
        by_name = {self.ph_name[p]: env[p] for p in params}
        ocall = func.CallOp(
            "optimizer",
            [by_name[p] for p in sig.trained] + list(bcall.results) + list(state_args),
            opt_fn.function_type.outputs.data,
        )
        block.add_op(ocall)
        updated = dict(zip(sig.trained, ocall.results[:k], strict=True))
        new_params = [updated.get(self.ph_name[p], env[p]) for p in params]
        results = [loss] + new_params + list(ocall.results[k:])
        block.add_op(func.ReturnOp(*results))
        arg_attrs = [_names(name=self.ph_name[n], kind=self._kind(n)) for n in params + buffers]
        arg_attrs += [_names(name=s, kind="state") for s in sig.states]
        arg_attrs += [_names(name=self.ph_name[n], kind="input") for n in inputs]
        res_attrs = [_names(name="loss", kind="loss")]
        res_attrs += [_names(name=self.ph_name[p], kind="param") for p in params]
        res_attrs += [_names(name=s, kind="state") for s in sig.states]
        return func.FuncOp(
            "train_step",
            (types, [r.type for r in results]),
            Region(block),
            arg_attrs=ArrayAttr(arg_attrs),
            res_attrs=ArrayAttr(res_attrs),
        )


def _type_of(n: fx.Node) -> TensorType:
    v = n.meta.get("val")
    if not isinstance(v, torch.Tensor):
        raise PiperError(f"capture: value {n.name} is not a tensor ({type(v).__name__})")
    return _tensor_type(v, f"value {n.name}", "")


def _tensor_type(v: torch.Tensor, what: str, at: str) -> TensorType:
    """The graph type of `v`; a dtype graph IR has no type for is an error
    naming what produced it."""
    try:
        return tensor_type(v.shape, v.dtype)
    except ValueError:
        raise PiperError(
            f"capture: {what} is a {str(v.dtype).removeprefix('torch.')} tensor, which graph "
            f"IR has no element type for{at}"
        ) from None


# A captured literal tensor up to this many elements becomes a graph.constant.
MAX_CONSTANT_ELEMENTS = 4096


def _constant(n: fx.Node, gm: fx.GraphModule, user: str, at: str) -> ConstantOp:
    """graph.constant for a get_attr node of the traced graph (a literal
    tensor in the model's code, lifted by the tracer)."""
    value = getattr(gm, n.target, None)
    if not isinstance(value, torch.Tensor):
        raise PiperError(
            f"capture: {user} reads {n.target} ({type(value).__name__}), a value graph IR "
            f"cannot hold{at}"
        )
    t = _tensor_type(value, f"constant {n.target} read by {user}", at)
    if value.numel() > MAX_CONSTANT_ELEMENTS:
        raise PiperError(
            f"capture: {user} reads a constant tensor {n.target} of {value.numel()} elements "
            f"(at most {MAX_CONSTANT_ELEMENTS} are kept in the IR); make it a parameter or "
            f"a buffer{at}"
        )
    items = value.detach().reshape(-1).tolist()
    elem = t.element_type
    attrs = [
        FloatAttr(float(x), elem) if isinstance(elem, AnyFloat) else IntegerAttr(int(x), elem)
        for x in items
    ]
    return ConstantOp(attrs, t)


def _location(n: fx.Node) -> str | None:
    custom = n.meta.get("custom") or {}
    return custom.get(ann.MODULE_KEY)


def _tags(n: fx.Node) -> dict[str, int]:
    custom = n.meta.get("custom") or {}
    # Only Piper's integer region tags: torch's tracer adds string entries
    # of its own (`_torchdynamo_disable...`).
    return {
        k: v for k, v in custom.items()
        if k != ann.MODULE_KEY and isinstance(v, int) and not isinstance(v, bool)
    }


def _lookup(env: dict, n: fx.Node):
    """The value of n, looking through identity ops emitted elsewhere."""
    while n not in env and n.op == "call_function" and str(n.target) in _IDENTITY:
        n = n.args[0]
    return env[n]


def _emit(n: fx.Node, env: dict, block: Block, gm: fx.GraphModule) -> None:
    """Append the graph op for fx node `n`; record its value(s) in env.
    Constants it reads (get_attr nodes of `gm`) are emitted before it, once
    per function."""
    target = n.target
    where = _location(n)
    at = f" (in module '{where}')" if where else ""
    if target is operator.getitem:
        src, idx = n.args
        vals = _lookup(env, src)
        if not isinstance(vals, tuple) or vals[idx] is None:
            raise PiperError(f"capture: {n.name} selects a non-tensor result{at}")
        env[n] = vals[idx]
        return
    if not isinstance(target, torch._ops.OpOverload):
        raise PiperError(f"capture: unsupported operation {target}{at}")
    name = str(target)
    if name in _IDENTITY:
        env[n] = _lookup(env, n.args[0])
        return
    operands: list[SSAValue] = []

    def ref(v):
        if isinstance(v, fx.Node):
            if v.op == "get_attr" and v not in env:
                c = _constant(v, gm, name, at)
                if where:
                    c.location = NameLoc(StringAttr(where), NoneAttr())
                block.add_op(c)
                env[v] = c.output[0]
                c.output[0].name_hint = sanitize(str(v.target))
            val = _lookup(env, v)
            if isinstance(val, tuple):
                raise PiperError(f"capture: {name} takes a tuple value{at}")
            operands.append(val)
            return ArgRefAttr(len(operands) - 1)
        return None

    try:
        args = [to_attr(a, ref) for a in n.args]
        kwargs = {k: to_attr(v, ref) for k, v in n.kwargs.items()}
    except (TypeError, ValueError) as e:
        raise PiperError(f"capture: unsupported operator {name}: {e}{at}") from None
    val = n.meta.get("val")
    if isinstance(val, torch.Tensor):
        types, single = [_tensor_type(val, f"the result of {name}", at)], True
    elif isinstance(val, tuple | list):
        types = [_tensor_type(v, f"a result of {name}", at) for v in val if isinstance(v, torch.Tensor)]
        single = False
    else:
        raise PiperError(f"capture: unsupported operator {name} (result {type(val).__name__}){at}")
    op = AtenOp(name, operands, args, kwargs, types, _tags(n))
    if where:
        op.location = NameLoc(StringAttr(where), NoneAttr())
    block.add_op(op)
    if single:
        env[n] = op.outputs[0]
        op.outputs[0].name_hint = sanitize(n.name)
    else:
        it = iter(op.outputs)
        env[n] = tuple(next(it) if isinstance(v, torch.Tensor) else None for v in val)


def _trace_update(spec: SGD | AdamW, like: torch.Tensor) -> fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx

    n_state = len(spec.state_names)

    def fn(p, g, *rest):
        states = rest[:n_state]
        step = rest[n_state] if spec.uses_step else None
        new_p, new_s = spec.update(p, g, states, step)
        return new_p, list(new_s)

    # empty, not zeros: tracing reads only shapes and dtypes, and an
    # untouched allocation costs neither time nor memory (a 128256 x 8192
    # embedding's zeros are 4 GB written four times over)
    ex = [torch.empty(like.shape, dtype=like.dtype) for _ in range(2 + n_state)]
    if spec.uses_step:
        ex.append(torch.ones((), dtype=torch.float64))
    return make_fx(fn, tracing_mode="fake")(*ex)
