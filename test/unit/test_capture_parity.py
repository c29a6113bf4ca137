"""Captured training steps of the example models match eager PyTorch.

For each example (MLP, GPT with tied and untied head, MoE) and optimizer
(SGD with momentum, AdamW): three steps of `CapturedStep.run` give the loss,
gradients and updated parameters of three eager steps of an identical model
(fp32, tight tolerance). Also: every op of a captured model carries its
pipeline region and module path, the IR text round-trips, and ops capture
cannot express fail with a PiperError naming the op and the module.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
from xdsl.dialects import func
from xdsl.dialects.builtin import NameLoc

from examples.gpt import GPTConfig, gpt_data, make_gpt
from examples.mlp import MLPConfig, make_mlp, mlp_data
from examples.moe import MoEConfig, make_moe, moe_data
from piper import capture
from piper.backend.aten import find_function, run_function
from piper.diagnostics import PiperError
from piper.dialects.graph import AtenOp
from piper.frontend.capture import CapturedStep
from piper.ir import parse_module, print_module

RTOL, ATOL = 1e-5, 1e-6
STEPS = 3

MLP_CFG = MLPConfig(dim=16, layers=3, classes=8, batch=8)
GPT_TIED = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=True)
GPT_UNTIED = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=False)
MOE_CFG = MoEConfig(dim=16, hidden=32, experts=4, top_k=2, layers=2, classes=8, batch=16)

# name -> (fresh model, example inputs and targets)
MODELS = {
    "mlp": (lambda: make_mlp(MLP_CFG), lambda: mlp_data(MLP_CFG)),
    "gpt-tied": (lambda: make_gpt(GPT_TIED), lambda: gpt_data(GPT_TIED)),
    "gpt-untied": (lambda: make_gpt(GPT_UNTIED), lambda: gpt_data(GPT_UNTIED)),
    "moe": (lambda: make_moe(MOE_CFG), lambda: moe_data(MOE_CFG)),
}

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


@functools.cache
def captured(model: str, optimizer: str) -> CapturedStep:
    """The captured step of a fresh example model (shared: never run it)."""
    make, data = MODELS[model]
    m = make()
    return capture(m, data(), optimizer=OPTIMIZERS[optimizer](m.parameters()))


def fresh(step: CapturedStep) -> CapturedStep:
    """A runnable copy of a shared captured step, at its initial state."""
    values = {k: v.clone() for k, v in step.values.items()}
    return CapturedStep(step.module, step.signature, values)


def _names(attrs) -> list[tuple[str, str]]:
    return [(a.data["graph.name"].data, a.data["graph.kind"].data) for a in attrs.data]


def captured_grads(step: CapturedStep, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients by parameter name from @forward then @backward,
    fed by the names on their arguments and results."""
    module = step.module
    fwd, bwd = find_function(module, "forward"), find_function(module, "backward")
    env = dict(step.values) | dict(zip(step.signature.inputs, inputs, strict=True))
    outs = run_function(module, "forward", [env[n] for n, _ in _names(fwd.arg_attrs)])
    res = _names(fwd.res_attrs)
    assert res[0] == ("loss", "loss")
    assert all(kind == "saved" for _, kind in res[1:])
    saved = {n: v for (n, _), v in zip(res[1:], outs[1:], strict=True)}
    args = []
    for name, kind in _names(bwd.arg_attrs):
        if kind == "saved":
            args.append(saved[name])
        elif kind == "tangent":
            args.append(torch.ones_like(outs[0]))
        else:
            assert kind in ("param", "buffer", "input"), kind
            args.append(env[name])
    grads = run_function(module, "backward", args)
    names = [n for n, kind in _names(bwd.res_attrs) if kind == "grad"]
    return outs[0], dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("model", list(MODELS))
def test_training_matches_eager(model, optimizer):
    make, data = MODELS[model]
    inputs = data()
    step = fresh(captured(model, optimizer))
    eager = make()
    opt = OPTIMIZERS[optimizer](eager.parameters())
    params = dict(eager.named_parameters())
    assert sorted(step.signature.params) == sorted(params)
    assert step.signature.trained == step.signature.params
    for i in range(STEPS):
        opt.zero_grad()
        want = eager(*inputs)
        want.backward()
        loss, grads = captured_grads(step, inputs)
        torch.testing.assert_close(loss, want.detach(), rtol=RTOL, atol=ATOL)
        assert set(grads) == set(params)
        for name, p in params.items():
            torch.testing.assert_close(
                grads[name], p.grad, rtol=RTOL, atol=ATOL,
                msg=lambda m, name=name: f"step {i} grad of {name}: {m}",
            )
        opt.step()
        got = step.run(*inputs)
        torch.testing.assert_close(got, want.detach(), rtol=RTOL, atol=ATOL)
        for name, p in params.items():
            torch.testing.assert_close(
                step.values[name], p.detach(), rtol=RTOL, atol=ATOL,
                msg=lambda m, name=name: f"step {i} param {name}: {m}",
            )
    # Training moved the weights: the comparison above was not vacuous.
    first = captured(model, optimizer).values
    assert any(not torch.equal(first[n], step.values[n]) for n in params)


def test_tied_head_is_one_parameter():
    step = captured("gpt-tied", "sgd")
    assert "embed.tok.weight" in step.signature.params
    assert "head.proj.weight" not in step.signature.params
    assert "head.proj.weight" in captured("gpt-untied", "sgd").signature.params


def _graph_ops(step: CapturedStep, fn: str) -> list[AtenOp]:
    ops = [op for op in find_function(step.module, fn).body.block.ops if isinstance(op, AtenOp)]
    assert ops
    return ops


def _region_of(path: str, layers: int) -> int:
    """The PP region the example models put a module path in."""
    head, _, rest = path.partition(".")
    if head in ("embed", "inp"):
        return 0
    if head == "head":
        return layers - 1
    assert head in ("blocks", "layers"), path
    return int(rest.split(".")[0])


@pytest.mark.parametrize("model", ["gpt-tied", "gpt-untied", "moe", "mlp"])
def test_every_op_has_its_region_and_module(model):
    step = captured(model, "adamw")
    m = MODELS[model][0]()
    layers = len(getattr(m, "blocks", None) or m.layers)
    modules = {n for n, _ in m.named_modules() if n}
    for fn in ("forward", "backward"):
        for op in _graph_ops(step, fn):
            what = f"@{fn}: {op.op_name} {op.tag_dict()} {op.location}"
            assert isinstance(op.location, NameLoc), what
            path = op.location.desc.data
            assert path in modules, what
            tags = op.tag_dict()
            assert tags.get("PP") == _region_of(path, layers), what
            parts = path.split(".")
            if "experts" in parts[:-1]:
                assert tags.get("EP") == int(parts[parts.index("experts") + 1]), what
            elif len(parts) > 2 or parts[0] != "layers":
                # Only a MoE layer's own ops (gate and combine) run per expert;
                # the gradient summed over the experts ("layers.0.experts")
                # belongs to no single one.
                assert "EP" not in tags, what


def test_gpt_regions_cover_embedding_blocks_and_head():
    step = captured("gpt-tied", "sgd")
    by_target: dict[str, set[int]] = {}
    for fn in ("forward", "backward"):
        for op in _graph_ops(step, fn):
            by_target.setdefault(op.op_name, set()).add(op.tag_dict()["PP"])
    assert by_target["aten.embedding.default"] == {0}
    assert by_target["aten.embedding_dense_backward.default"] == {0}
    assert by_target["aten._softmax.default"] == {0, 1}
    assert by_target["aten.nll_loss_forward.default"] == {1}
    assert by_target["aten.nll_loss_backward.default"] == {1}


def test_moe_experts_are_tagged():
    step = captured("moe", "sgd")
    eps = {(op.tag_dict()["PP"], op.tag_dict().get("EP")) for op in _graph_ops(step, "forward")}
    assert {(pp, ep) for pp in range(2) for ep in range(4)} <= eps
    assert {op.op_name for op in _graph_ops(step, "forward")} >= {
        "aten.topk.default", "aten.scatter.src",
    }


@pytest.mark.parametrize("model", ["gpt-tied", "moe"])
def test_ir_text_round_trips(model):
    step = captured(model, "adamw")
    text = step.text(locations=True)
    assert 'loc("blocks.0.attn.qkv")' in text or 'loc("layers.0.router.fc")' in text
    module = parse_module(text)
    assert print_module(module, locations=True) == text
    names = [op.sym_name.data for op in module.body.block.ops if isinstance(op, func.FuncOp)]
    assert names == ["forward", "backward", "optimizer", "train_step"]


class _Reads(nn.Module):
    """A layer that reads a tensor value into Python (`.item()`)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return h * h.abs().max().item()


class _Selects(nn.Module):
    """A layer whose output shape depends on the data (`torch.nonzero`)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return h[torch.nonzero(h[:, 0] > 0)[:, 0]]


class _Net(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), inner)

    def forward(self, x):
        return self.body(x).sum()


@pytest.mark.parametrize(
    ("inner", "op", "why"),
    [
        (_Reads, "aten._local_scalar_dense.default", "reads tensor values"),
        (_Selects, "aten.nonzero.default", "output shape depends on tensor values"),
    ],
)
def test_unsupported_op_names_op_and_module(inner, op, why):
    with pytest.raises(PiperError) as info:
        capture(_Net(inner()), (torch.randn(5, 4),))
    msg = str(info.value)
    assert f"unsupported operation {op}" in msg
    assert why in msg
    assert "in module 'body.1'" in msg
    assert "test_capture_parity.py:" in msg


def test_failed_capture_leaves_no_annotation_behind():
    import torch.fx.traceback as fx_traceback

    with pytest.raises(PiperError):
        capture(_Net(_Reads()), (torch.randn(5, 4),))
    assert "custom" not in fx_traceback.current_meta
    step = capture(make_mlp(MLP_CFG), mlp_data(MLP_CFG))
    assert all("PP" in op.tag_dict() for op in _graph_ops(step, "forward"))


class _Scaled(nn.Module):
    """A layer that multiplies by a literal tensor written in its code."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * torch.tensor([1.0, -2.0, 0.5, 3.0]) + torch.tensor(2)


def test_literal_tensors_become_constants_and_train_like_eager():
    torch.manual_seed(0)
    eager = _Net(_Scaled())
    step = capture(eager, (torch.randn(5, 4),), optimizer=torch.optim.SGD(eager.parameters(), lr=0.1))
    text = step.text(locations=True)
    assert ("graph.constant [1.000000e+00 : f32, -2.000000e+00 : f32, 5.000000e-01 : f32, "
            '3.000000e+00 : f32] : tensor<4xf32> loc("body.1")') in text
    assert "graph.constant [2 : i64] : tensor<i64>" in text
    assert print_module(parse_module(text), locations=True) == text
    opt = torch.optim.SGD(eager.parameters(), lr=0.1)
    x = torch.randn(5, 4)
    for _ in range(STEPS):
        opt.zero_grad()
        want = eager(x)
        want.backward()
        opt.step()
        torch.testing.assert_close(step.run(x), want.detach(), rtol=RTOL, atol=ATOL)
    for name, p in eager.named_parameters():
        torch.testing.assert_close(step.values[name], p.detach(), rtol=RTOL, atol=ATOL)


_GEN = torch.Generator().manual_seed(0)
_GLOBAL = torch.ones(8)  # a tensor model code reads that the model does not own


class _Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.f = f

    def forward(self, x):
        return self.f(self.fc(x))


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (lambda h: h + torch.randn(h.shape, generator=_GEN),
         "aten.randn.generator reads _opaque_obj0 (Generator), a value graph IR cannot hold"),
        (lambda h: torch.fft.rfft(h).abs(),
         "the result of aten._fft_r2c.default is a complex64 tensor, which graph IR has no "
         "element type for"),
        (lambda h: h.to(torch.float8_e4m3fn).to(torch.float32),
         "unsupported operator aten._to_copy.default: dtype torch.float8_e4m3fn has no graph "
         "element type"),
        (lambda h: h * torch.tensor([1.0] * 5000)[:4],
         "reads a constant tensor _tensor_constant0 of 5000 elements"),
        (lambda h: h * _GLOBAL[:4],
         "aten.slice.Tensor reads a tensor that is not a parameter, buffer, input or literal "
         "of the model; register it with register_buffer"),
    ],
    ids=["generator", "complex", "float8", "big-constant", "global-tensor"],
)
def test_values_graph_ir_cannot_hold_name_the_op_and_module(f, message):
    with pytest.raises(PiperError) as info:
        capture(_Net(_Lambda(f)), (torch.randn(5, 4),))
    msg = str(info.value)
    assert message in msg
    assert "in module 'body.1'" in msg


def test_optimizer_ops_are_located_at_their_parameter():
    step = captured("mlp", "adamw")
    params = set(step.signature.trained)
    ops = _graph_ops(step, "optimizer")
    assert ops
    for op in ops:
        assert isinstance(op.location, NameLoc), op
        assert op.location.desc.data in params | {"step"}, op.location
    assert {op.location.desc.data for op in ops} == params | {"step"}
