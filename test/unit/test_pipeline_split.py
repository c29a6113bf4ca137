"""pipeline-split and split-backward: stage functions that compute exactly the captured step.

For MLPs of 2, 3 and 4 stages and small transformer models (LayerNorm,
attention with a causal-mask buffer, residuals crossing stage boundaries, a
value of stage 0 read again in stage 2), with SGD (momentum) and AdamW: after
pipeline-split, and after pipeline-split + split-backward, the module
verifies and round-trips through its text, every `graph.from` names an
existing result of the same type, @train_step feeds each argument what its
attributes say, and three training steps give bit-identical loss,
parameters and optimizer state. Also: how ops without a PP tag get their
stage, stages without parameters, a model with no PP tags, and the errors a
user can cause (a missing stage, stages out of order); a parameter tied
across stages.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

import piper
from piper.diagnostics import PiperError
from piper.backend.aten import find_function
from piper.dialects.graph import AtenOp
from piper.frontend.capture import CapturedStep
from piper.ir import parse_module, print_module
from piper.passes.func_utils import callee, functions, graph_attrs, parse_from
from piper.passes.graph_to_dist import ConvertGraphToDist
from piper.passes.pipeline_split import PipelineSplit
from piper.passes.split_backward import SplitBackward

STEPS = 3

# --------------------------------------------------------------------------
# Models: every op inside a PP region unless the model says otherwise
# --------------------------------------------------------------------------


class MLP(nn.Module):
    """One Linear+ReLU per stage; the last stage also computes the loss."""

    def __init__(self, stages: int, dim: int = 6):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(stages))

    def forward(self, x, y):
        for i, layer in enumerate(self.layers):
            with piper.annotate("PP"):
                x = torch.relu(layer(x))
                if i == len(self.layers) - 1:
                    return ((x - y) ** 2).mean()


def mlp_data(gen, dim: int = 6):
    return torch.randn(4, dim, generator=gen), torch.randn(4, dim, generator=gen)


class Attention(nn.Module):
    def __init__(self, dim: int, seq: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq)).bool())

    def forward(self, x):
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(~self.mask, float("-inf")).softmax(-1)
        return x + self.proj(att @ v)


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


class Transformer(nn.Module):
    """2 stages: [embed, attention] [feed-forward, head, loss].
    3 stages: [embed, attention] [feed-forward] [+ embed output, head, loss]:
    the embedding output is read in stage 0 and again in stage 2."""

    def __init__(self, stages: int, dim: int = 8, seq: int = 4, n_in: int = 6, classes: int = 5):
        super().__init__()
        self.stages = stages
        self.embed = nn.Linear(n_in, dim)
        self.attn = Attention(dim, seq)
        self.ff = FeedForward(dim)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def loss(self, h, y):
        return F.cross_entropy(self.head(self.ln_f(h)).flatten(0, 1), y.flatten())

    def forward(self, x, y):
        with piper.annotate("PP"):
            h0 = self.embed(x)
            h = self.attn(h0)
        with piper.annotate("PP"):
            h = self.ff(h)
            if self.stages == 2:
                return self.loss(h, y)
        with piper.annotate("PP"):
            return self.loss(h + h0, y)


def transformer_data(gen):
    return torch.randn(2, 4, 6, generator=gen), torch.randint(0, 5, (2, 4), generator=gen)


class FrozenMiddle(nn.Module):
    """3 stages; the middle one has no trained parameter (a frozen one and
    a buffer); the loss (a loss_fn outside the model) has no PP tag."""

    def __init__(self, dim: int = 6):
        super().__init__()
        self.fc0 = nn.Linear(dim, dim)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, dim), requires_grad=False)
        self.register_buffer("offset", torch.linspace(-0.1, 0.1, dim))
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x):
        with piper.annotate("PP"):
            h = torch.relu(self.fc0(x))
        with piper.annotate("PP"):
            h = torch.tanh(h) * self.scale + self.offset
        with piper.annotate("PP"):
            return self.fc2(h)


class Plain(nn.Module):
    """No annotations at all: one stage."""

    def __init__(self, dim: int = 6):
        super().__init__()
        self.fc0 = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, dim)

    def forward(self, x, y):
        return ((self.fc1(torch.relu(self.fc0(x))) - y) ** 2).mean()


def mse(out, y):
    return F.mse_loss(out, y)


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}

# name -> (model factory, data(generator) -> (inputs, targets), loss_fn, stages)
MODELS = {
    "mlp2": (lambda: MLP(2), lambda g: (mlp_data(g), ()), None, 2),
    "mlp3": (lambda: MLP(3), lambda g: (mlp_data(g), ()), None, 3),
    "mlp4": (lambda: MLP(4), lambda g: (mlp_data(g), ()), None, 4),
    "transformer2": (lambda: Transformer(2), lambda g: (transformer_data(g), ()), None, 2),
    "transformer3": (lambda: Transformer(3), lambda g: (transformer_data(g), ()), None, 3),
    "frozen-middle": (lambda: FrozenMiddle(), lambda g: mlp_data(g), mse, 3),
    "plain": (lambda: Plain(), lambda g: (mlp_data(g), ()), None, 1),
}


def _split_data(model: str, gen):
    data = MODELS[model][1](gen)
    if MODELS[model][2] is None:
        return tuple(data[0]), ()
    x, y = data
    return (x,), (y,)


@functools.cache
def captured(model: str, optimizer: str) -> CapturedStep:
    """The captured step of a fresh model (shared: never run it)."""
    make, _, loss_fn, _ = MODELS[model]
    torch.manual_seed(0)
    m = make()
    inputs, targets = _split_data(model, torch.Generator().manual_seed(0))
    opt = OPTIMIZERS[optimizer]([p for p in m.parameters() if p.requires_grad])
    return piper.capture(m, inputs, loss_fn=loss_fn, targets=targets, optimizer=opt)


def batches(model: str) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        inputs, targets = _split_data(model, gen)
        out.append(inputs + targets)
    return out


@functools.cache
def reference(model: str, optimizer: str) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Losses and final training state of the captured (unsplit) step."""
    step = captured(model, optimizer)
    run = CapturedStep(step.module, step.signature, dict(step.values))
    losses = [run.run(*b) for b in batches(model)]
    return losses, run.values


def apply(module: ModuleOp, *passes) -> ModuleOp:
    """A copy of `module` after `passes`, verified and re-parsed from its text."""
    module = module.clone()
    for p in passes:
        p.apply(Context(), module)
        module.verify()
    return parse_module(print_module(module))


def split(model: str, optimizer: str = "sgd", backward: bool = False) -> ModuleOp:
    passes = [PipelineSplit()] + ([SplitBackward()] if backward else [])
    return apply(captured(model, optimizer).module, *passes)


# --------------------------------------------------------------------------
# Checks on any split module
# --------------------------------------------------------------------------


def check_references(module: ModuleOp) -> None:
    """Every `graph.from` names an existing result of the same type."""
    fns = functions(module)
    for name, fn in fns.items():
        for i, t in enumerate(fn.function_type.inputs.data):
            ref = graph_attrs(fn, i).get("from")
            if ref is None:
                continue
            src = parse_from(ref)
            assert src is not None and src[0] in fns, f"@{name} arg {i}: bad graph.from {ref!r}"
            outs = fns[src[0]].function_type.outputs.data
            assert src[1] < len(outs), f"@{name} arg {i}: @{src[0]} has {len(outs)} results"
            assert outs[src[1]] == t, f"@{name} arg {i}: {ref} is {outs[src[1]]}, not {t}"


def check_wiring(module: ModuleOp) -> None:
    """@train_step feeds each argument what its attributes say."""
    fns = functions(module)
    ts = fns["train_step"]
    ts_args = {a: graph_attrs(ts, i) for i, a in enumerate(ts.body.block.args)}
    made_by: dict = {}
    for op in ts.body.block.ops:
        if isinstance(op, func.CallOp):
            fn = fns[callee(op)]
            for i, v in enumerate(op.operands):
                info = graph_attrs(fn, i)
                where = f"@{callee(op)} arg {i} ({info})"
                if "from" in info:
                    assert made_by.get(v) == parse_from(info["from"]), where
                elif info["kind"] == "tangent":
                    assert isinstance(v.owner, AtenOp), where
                    assert v.owner.target.data == "aten.ones_like.default", where
                else:
                    assert info["kind"] in ("param", "buffer", "input", "state", "grad"), where
                    assert ts_args[v] == {"name": info["name"], "kind": info["kind"]}, where
            for k, r in enumerate(op.results):
                made_by[r] = (callee(op), k)


def stage_function_names(module: ModuleOp) -> list[str]:
    return [n for n in functions(module) if n != "train_step"]


def run_split(model: str, optimizer: str, module: ModuleOp):
    step = captured(model, optimizer)
    run = CapturedStep(module=module, signature=step.signature, values=dict(step.values))
    losses = [run.run(*b) for b in batches(model)]
    return losses, run.values


def kinds(fn: func.FuncOp, results: bool = False) -> list[str]:
    n = len(fn.function_type.outputs.data if results else fn.function_type.inputs.data)
    return [graph_attrs(fn, i, results).get("kind", "") for i in range(n)]


def names(fn: func.FuncOp, kind: str, results: bool = False) -> list[str]:
    n = len(fn.function_type.outputs.data if results else fn.function_type.inputs.data)
    return [graph_attrs(fn, i, results)["name"] for i in range(n)
            if graph_attrs(fn, i, results).get("kind") == kind]


# --------------------------------------------------------------------------
# Numerics: the split step is the captured step
# --------------------------------------------------------------------------

CASES = [
    ("mlp2", "sgd"), ("mlp2", "adamw"),
    ("mlp3", "sgd"), ("mlp3", "adamw"),
    ("mlp4", "sgd"), ("mlp4", "adamw"),
    ("transformer2", "adamw"), ("transformer3", "sgd"), ("transformer3", "adamw"),
    ("frozen-middle", "adamw"), ("plain", "sgd"),
]


@pytest.mark.parametrize("backward", [False, True], ids=["pipeline-split", "both"])
@pytest.mark.parametrize(("model", "optimizer"), CASES, ids=[f"{m}-{o}" for m, o in CASES])
def test_split_step_is_exact(model, optimizer, backward):
    module = split(model, optimizer, backward)
    stages = MODELS[model][3]
    parts = ("F", "I", "W", "OPT") if backward else ("F", "B", "OPT")
    expected = [f"{p}{s}" for p in parts for s in range(stages)]
    assert sorted(stage_function_names(module)) == sorted(expected)
    check_references(module)
    check_wiring(module)
    want_losses, want = reference(model, optimizer)
    losses, values = run_split(model, optimizer, module)
    for got, ref in zip(losses, want_losses, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert values.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(values[name], want[name], rtol=0, atol=0, msg=name)


# --------------------------------------------------------------------------
# The stage functions' signatures
# --------------------------------------------------------------------------


def test_mlp_stage_signatures():
    fns = functions(split("mlp3", "sgd"))
    layer = [[f"layers.{s}.weight", f"layers.{s}.bias"] for s in range(3)]
    # forward: own params and inputs, then activations of the stage before
    assert kinds(fns["F0"]) == ["param", "param", "input"]
    assert names(fns["F0"], "input") == ["input0"]
    assert kinds(fns["F1"]) == ["param", "param", "act"]
    assert graph_attrs(fns["F1"], 2)["from"] == "F0#0"
    assert kinds(fns["F2"]) == ["param", "param", "input", "act"]
    assert names(fns["F2"], "input") == ["input1"]  # the targets
    assert graph_attrs(fns["F2"], 3)["from"] == "F1#0"
    assert kinds(fns["F0"], True) == ["act", "saved"]
    f2 = kinds(fns["F2"], True)
    assert f2[0] == "loss" and set(f2[1:]) == {"saved"}
    # backward: saved values of its own forward, gradients of later stages
    for s in range(3):
        b = fns[f"B{s}"]
        for i, kind in enumerate(kinds(b)):
            ref = graph_attrs(b, i).get("from")
            if kind == "saved":
                assert ref.startswith(f"F{s}#")
            if kind == "grad_act":
                assert ref == f"B{s + 1}#0"
        assert names(b, "grad", results=True) == layer[s]
        assert names(fns[f"OPT{s}"], "param") == layer[s]
        assert names(fns[f"OPT{s}"], "param", results=True) == layer[s]
        states = [f"{p}:momentum_buffer" for p in layer[s]]
        assert names(fns[f"OPT{s}"], "state") == names(fns[f"OPT{s}"], "state", True)
        assert sorted(names(fns[f"OPT{s}"], "state")) == sorted(states)
        grads = [graph_attrs(fns[f"OPT{s}"], i).get("from")
                 for i, k in enumerate(kinds(fns[f"OPT{s}"])) if k == "grad"]
        first = 1 if s > 0 else 0  # after B{s}'s grad_act result
        assert grads == [f"B{s}#{first}", f"B{s}#{first + 1}"]
    assert "tangent" in kinds(fns["B2"]) and "tangent" not in kinds(fns["B1"])
    assert kinds(fns["B0"], True) == ["grad", "grad"]
    assert kinds(fns["B1"], True) == ["grad_act", "grad", "grad"]
    assert "forward" not in fns and "backward" not in fns and "optimizer" not in fns


def _calls(module: ModuleOp) -> list[str]:
    ts = functions(module)["train_step"]
    return [callee(o) for o in ts.body.block.ops if isinstance(o, func.CallOp)]


def test_train_step_call_order():
    assert _calls(split("mlp3")) == ["F0", "F1", "F2", "B2", "B1", "B0", "OPT0", "OPT1", "OPT2"]
    assert _calls(split("mlp3", backward=True)) == [
        "F0", "F1", "F2", "I2", "W2", "I1", "W1", "I0", "W0", "OPT0", "OPT1", "OPT2"]


def test_step_counter_in_every_stage():
    """AdamW's step count increments in every OPT, which each update only
    their own parameters and bias corrections."""
    fns = functions(split("mlp3", "adamw"))
    for s in range(3):
        opt = fns[f"OPT{s}"]
        assert names(opt, "state")[-1] == "step"
        assert names(opt, "state", results=True)[-1] == "step"
        (step_arg,) = [a for a in opt.body.block.args
                       if graph_attrs(opt, a.index)["name"] == "step"]
        increments = [u.operation for u in step_arg.uses]
        assert len(increments) == 1 and increments[0].target.data == "aten.add.Tensor"
        # 2 parameters: one pair of bias-correction powers each
        pows = [o for o in opt.body.block.ops
                if isinstance(o, AtenOp) and o.target.data == "aten.pow.Scalar"]
        assert len(pows) == 4


def test_transformer_crossing_values():
    """Residuals cross stage boundaries; the embedding output goes from
    stage 0 straight to stage 2; gradients only flow to earlier stages."""
    fns = functions(split("transformer3", "adamw"))
    acts = {s: [graph_attrs(fns[f"F{s}"], i)["from"]
                for i, k in enumerate(kinds(fns[f"F{s}"])) if k == "act"] for s in range(3)}
    assert acts[0] == []
    assert [r.split("#")[0] for r in acts[1]] == ["F0"]
    assert [r.split("#")[0] for r in acts[2]] == ["F0", "F1"]
    assert names(fns["F0"], "buffer") == ["attn.mask"]
    for s in range(3):
        b = fns[f"B{s}"]
        for i, k in enumerate(kinds(b)):
            if k == "grad_act":
                src = parse_from(graph_attrs(b, i)["from"])
                assert src[0].startswith("B") and int(src[0][1:]) > s
            if k == "saved":
                assert graph_attrs(b, i)["from"].startswith(f"F{s}#")
        assert ("grad_act" in kinds(b, True)) == (s > 0)
    # the skip value goes from F0 to F2 without passing through F1
    (skip,) = [graph_attrs(fns["F2"], i)["name"] for i in range(len(kinds(fns["F2"])))
               if graph_attrs(fns["F2"], i).get("from", "").startswith("F0#")]
    assert skip not in names(fns["F1"], "act") + names(fns["F1"], "act", results=True)
    assert skip in names(fns["F0"], "act", results=True)


def test_untagged_ops_take_a_stage():
    """The untagged loss (a loss_fn outside the model, at loc("loss_fn"))
    goes with its producers (the last stage); stage 1 trains nothing."""
    fns = functions(split("frozen-middle", "adamw"))
    relus = [o for s in range(3) for o in fns[f"F{s}"].body.block.ops
             if isinstance(o, AtenOp) and o.target.data == "aten.relu.default"]
    assert [o.parent_op().sym_name.data for o in relus] == ["F0"]
    assert kinds(fns["F2"], True)[0] == "loss"
    assert kinds(fns["F1"])[:2] == ["param", "buffer"]
    assert names(fns["F1"], "param") == ["scale"]
    assert kinds(fns["B1"], True) == ["grad_act"]
    assert names(fns["OPT1"], "state") == ["step"] and names(fns["OPT1"], "param") == []


def test_no_tags_is_one_stage():
    fns = functions(split("plain", "sgd"))
    assert kinds(fns["F0"], True)[0] == "loss"
    assert "tangent" in kinds(fns["B0"])
    assert "grad_act" not in kinds(fns["B0"], True)


# --------------------------------------------------------------------------
# split-backward
# --------------------------------------------------------------------------


def test_split_backward_signatures():
    fns = functions(split("mlp3", "sgd", backward=True))
    for s in range(3):
        i_fn, w_fn = fns[f"I{s}"], fns[f"W{s}"]
        i_kinds = kinds(i_fn, True)
        n_in = i_kinds.count("grad_act")
        assert n_in == (1 if s > 0 else 0)
        assert i_kinds == ["grad_act"] * n_in + ["saved"] * (len(i_kinds) - n_in)
        assert kinds(w_fn, True) == ["grad", "grad"]
        assert names(w_fn, "grad", True) == [f"layers.{s}.weight", f"layers.{s}.bias"]
        # W reads its forward's saved values, I's, and nothing from other stages
        for i in range(len(kinds(w_fn))):
            ref = graph_attrs(w_fn, i).get("from")
            assert ref is None or ref.split("#")[0] in (f"F{s}", f"I{s}"), ref
        assert any(graph_attrs(w_fn, i).get("from", "").startswith(f"I{s}#")
                   for i in range(len(kinds(w_fn))))
        for i, k in enumerate(kinds(i_fn)):
            if k == "grad_act":
                assert graph_attrs(i_fn, i)["from"] == f"I{s + 1}#0"
        opt = fns[f"OPT{s}"]
        assert [graph_attrs(opt, i)["from"] for i, k in enumerate(kinds(opt)) if k == "grad"] \
            == [f"W{s}#0", f"W{s}#1"]
    # I0 has no gradient to send but computes the ReLU's backward for W0
    i0_ops = [o.target.data for o in fns["I0"].body.block.ops if isinstance(o, AtenOp)]
    assert i0_ops == ["aten.threshold_backward.default"]
    w0_ops = {o.target.data for o in fns["W0"].body.block.ops if isinstance(o, AtenOp)}
    assert "aten.mm.default" in w0_ops and "aten.threshold_backward.default" not in w0_ops


def test_split_backward_stage_without_parameters():
    fns = functions(split("frozen-middle", "adamw", backward=True))
    w1 = fns["W1"]
    assert w1.function_type.inputs.data == () and w1.function_type.outputs.data == ()
    assert kinds(fns["I1"], True) == ["grad_act"]


# --------------------------------------------------------------------------
# Hand-written IR: stage inference and backward ordering
# --------------------------------------------------------------------------

HAND_WRITTEN = """
func.func @forward(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "a", graph.kind = "saved"}) {
  %a = graph.aten "aten.mul.Tensor"(%x, %w0) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.neg.default"(%a) tags {PP = 0} : (tensor<4xf32>) -> tensor<4xf32>
  %b = graph.aten "aten.mul.Tensor"(%n, %w1) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %l = graph.aten "aten.sum.default"(%b) : (tensor<4xf32>) -> tensor<f32> loc("loss_fn")
  func.return %l, %n : tensor<f32>, tensor<4xf32>
}
func.func @backward(%n: tensor<4xf32> {graph.name = "n", graph.kind = "saved"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}, tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) {
  %gb = graph.aten "aten.expand.default"(%t, [4]) : (tensor<f32>) -> tensor<4xf32>
  %gw1 = graph.aten "aten.mul.Tensor"(%gb, %n) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %gn = graph.aten "aten.mul.Tensor"(%gb, %w1) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %ga = graph.aten "aten.neg.default"(%gn) tags {PP = 0} : (tensor<4xf32>) -> tensor<4xf32>
  %g = graph.aten "aten.mul.Tensor"(%ga, %x) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %gw0 = graph.aten "aten.add.Tensor"(%g, %g) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %gw0, %gw1 : tensor<4xf32>, tensor<4xf32>
}
func.func @optimizer(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %g0: tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}, %g1: tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, tensor<4xf32> {graph.name = "w1", graph.kind = "param"}) {
  %s0 = graph.aten "aten.mul.Tensor"(%g0, 0.5) : (tensor<4xf32>) -> tensor<4xf32>
  %n0 = graph.aten "aten.sub.Tensor"(%w0, %s0) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %s1 = graph.aten "aten.mul.Tensor"(%g1, 0.5) : (tensor<4xf32>) -> tensor<4xf32>
  %n1 = graph.aten "aten.sub.Tensor"(%w1, %s1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n0, %n1 : tensor<4xf32>, tensor<4xf32>
}
func.func @train_step(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, tensor<4xf32> {graph.name = "w1", graph.kind = "param"}) {
  %l, %n = func.call @forward(%w0, %w1, %x) : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<f32>, tensor<4xf32>)
  %t = graph.aten "aten.ones_like.default"(%l) : (tensor<f32>) -> tensor<f32>
  %g0, %g1 = func.call @backward(%n, %x, %w1, %t) : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>)
  %n0, %n1 = func.call @optimizer(%w0, %w1, %g0, %g1) : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
  func.return %l, %n0, %n1 : tensor<f32>, tensor<4xf32>, tensor<4xf32>
}
"""


def _run_train_step(module: ModuleOp, args):
    from piper.backend.aten import run_function

    return run_function(module, "train_step", args)


def test_hand_written_step():
    """An untagged loss_fn op follows its producers; a backward op tagged
    with a later stage than a gradient it reads (the gradient sum tagged
    PP 1 reading a PP 0 value) runs in the earlier stage, which also owns
    the parameter; F1 saves the value of stage 0 that B1 reads."""
    module = parse_module(HAND_WRITTEN)
    out = apply(module, PipelineSplit())
    fns = functions(out)
    check_references(out)
    check_wiring(out)
    ops_of = {n: [o.target.data for o in f.body.block.ops if isinstance(o, AtenOp)]
              for n, f in fns.items()}
    assert ops_of["F0"] == ["aten.mul.Tensor", "aten.neg.default"]
    assert ops_of["F1"] == ["aten.mul.Tensor", "aten.sum.default"]
    assert ops_of["B1"] == ["aten.expand.default", "aten.mul.Tensor", "aten.mul.Tensor"]
    assert ops_of["B0"] == ["aten.neg.default", "aten.mul.Tensor", "aten.add.Tensor"]
    assert names(fns["B0"], "grad", True) == ["w0"] and names(fns["B1"], "grad", True) == ["w1"]
    assert kinds(fns["B1"]) == ["saved", "param", "tangent"]
    assert graph_attrs(fns["B1"], 0)["from"].startswith("F1#")
    args = [torch.tensor([1.0, 2, 3, 4]), torch.tensor([0.5, -1, 2, 0]), torch.tensor([3.0, 1, -2, 1])]
    want = _run_train_step(module, args)
    for got, ref in zip(_run_train_step(out, args), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    both = apply(out, SplitBackward())
    for got, ref in zip(_run_train_step(both, args), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_stage_functions_lower_to_dist():
    """convert-graph-to-dist reads the conventions: every edge resolves."""
    module = split("mlp2", "adamw", backward=True)
    ConvertGraphToDist().apply(Context(), module)
    module.verify()
    text = print_module(module)
    assert "dist.task I stage 1" in text and "dist.task W stage 0" in text


# --------------------------------------------------------------------------
# Errors a user can cause
# --------------------------------------------------------------------------


class Scale(nn.Module):
    def forward(self, x):
        return x * 2


class Unannotated(nn.Module):
    """`self.pre` runs outside any PP region and both stages read it."""

    def __init__(self):
        super().__init__()
        self.pre = Scale()
        self.fc0 = nn.Linear(4, 4)
        self.fc1 = nn.Linear(4, 4)

    def forward(self, x, y):
        z = self.pre(x)
        with piper.annotate("PP"):
            h = torch.relu(self.fc0(z))
        with piper.annotate("PP"):
            return ((self.fc1(h) + z - y) ** 2).mean()


class Regions(nn.Module):
    """Linear layers in the PP regions `stages` name, the loss in the last."""

    def __init__(self, stages):
        super().__init__()
        self.stages = stages
        self.fcs = nn.ModuleList(nn.Linear(4, 4) for _ in stages)

    def forward(self, x, y):
        for i, (s, fc) in enumerate(zip(self.stages, self.fcs, strict=True)):
            with piper.annotate("PP", s):
                x = torch.relu(fc(x))
                if i == len(self.fcs) - 1:
                    return ((x - y) ** 2).mean()


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)

    def forward(self, x, y):
        with piper.annotate("PP"):
            h = torch.relu(self.shared(x))
        with piper.annotate("PP"):
            return ((self.shared(h) - y) ** 2).mean()


def _error(model: nn.Module) -> str:
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    step = piper.capture(model, (x, y))
    with pytest.raises(PiperError) as e:
        PipelineSplit().apply(Context(), step.module.clone())
    return e.value.render()


def _split_and_check(model: nn.Module) -> dict[str, func.FuncOp]:
    """Split `model`'s step; check that it trains exactly like the unsplit
    step for 2 SGD steps; return the stage functions."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen)
    step = piper.capture(model, (x, y))
    module = apply(step.module, PipelineSplit())
    check_references(module)
    check_wiring(module)
    whole = CapturedStep(step.module, step.signature, dict(step.values))
    parts = CapturedStep(module, step.signature, dict(step.values))
    for _ in range(2):
        torch.testing.assert_close(parts.run(x, y), whole.run(x, y), rtol=0, atol=0)
    for name, v in whole.values.items():
        torch.testing.assert_close(parts.values[name], v, rtol=0, atol=0, msg=name)
    return functions(module)


def _stage_of(fns, target: str) -> list[str]:
    return [f for f in sorted(fns) if f.startswith("F")
            for o in fns[f].body.block.ops
            if isinstance(o, AtenOp) and o.target.data == target]


def test_prologue_ops_join_the_first_stage_that_reads_them():
    """`pre` runs before every region and both stages read it: it joins
    stage 0, and stage 1 receives its value as an activation."""
    fns = _split_and_check(Unannotated())
    assert _stage_of(fns, "aten.mul.Tensor") == ["F0"]
    assert "act" in kinds(fns["F1"])


class Between(nn.Module):
    """A ReLU of the model's own forward between two PP regions."""

    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.fc1 = nn.Linear(4, 4)

    def forward(self, x, y):
        with piper.annotate("PP"):
            h = self.fc0(x)
        h = torch.relu(h)
        with piper.annotate("PP"):
            return ((self.fc1(h) - y) ** 2).mean()


def test_ops_between_regions_join_their_producers_stage():
    fns = _split_and_check(Between())
    assert _stage_of(fns, "aten.relu.default") == ["F0"]


class Epilogue(nn.Module):
    """Two regions, then a head and the loss outside every region."""

    def __init__(self):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.head = nn.Linear(4, 4)

    def forward(self, x, y):
        for fc in self.fcs:
            with piper.annotate("PP"):
                x = torch.tanh(fc(x))
        return ((self.head(x) - y) ** 2).mean()


def test_epilogue_ops_join_the_last_stage():
    fns = _split_and_check(Epilogue())
    assert _stage_of(fns, "aten.mse_loss.default") + _stage_of(fns, "aten.pow.Tensor_Scalar") \
        == ["F1"]
    assert kinds(fns["F1"], True)[0] == "loss"
    assert "head.weight" in names(fns["F1"], "param")


def test_loss_fn_ops_are_located_and_join_the_last_stage():
    step = captured("frozen-middle", "adamw")
    fwd = [o for o in find_function(step.module, "forward").body.block.ops if isinstance(o, AtenOp)]
    loss_ops = [o for o in fwd if "PP" not in o.tag_dict()]
    assert [o.target.data for o in loss_ops] == ["aten.mse_loss.default"]
    assert loss_ops[0].location.desc.data == "loss_fn"


def test_error_missing_stage():
    msg = _error(Regions([0, 2]))
    assert "stages must be numbered 0..2" in msg and "no op has stage 1" in msg


@pytest.mark.parametrize(("regions", "message"), [
    ([0, 2], "PP stages must be numbered 0..2 with no gaps; no op has stage 1"),
    ([1, 0, 1], "stages out of order"),
])
def test_annotation_errors_name_the_place_directive(regions, message):
    inputs = (torch.randn(4, 4), torch.randn(4, 4))
    with pytest.raises(PiperError) as e:
        piper.compile(Regions(regions), inputs, strategy=[piper.place(pp=2), piper.split(2)])
    text = e.value.render()
    assert "strategy[0]" in text and "directive place(pp=2): pipeline-split: " + message in text


def test_error_stages_out_of_order():
    msg = _error(Regions([1, 0, 1]))
    assert "stages out of order" in msg
    assert "in stage 0 reads" in msg and "later stage 1" in msg


def test_parameter_tied_across_stages_is_sent_by_its_first_stage():
    """`shared` runs in both stages: stage 0 owns it (reads it, updates
    it), sends it to stage 1 as an activation, and receives stage 1's part
    of its gradient; the split step is exact."""
    fns = _split_and_check(Tied())
    assert names(fns["F0"], "param") == ["shared.weight", "shared.bias"]
    assert names(fns["F1"], "param") == []
    assert {"shared_weight", "shared_bias"} <= set(names(fns["F0"], "act", results=True))
    assert "shared.weight" in names(fns["B0"], "grad", results=True)
    assert names(fns["OPT1"], "param") == []


def test_error_pass_order():
    module = split("mlp2")
    with pytest.raises(PiperError, match="already split"):
        PipelineSplit().apply(Context(), module)
    with pytest.raises(PiperError, match="run pipeline-split first"):
        SplitBackward().apply(Context(), captured("mlp2", "sgd").module.clone())
    SplitBackward().apply(Context(), module)
    with pytest.raises(PiperError, match="already split"):
        SplitBackward().apply(Context(), module)
