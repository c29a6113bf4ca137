"""The kernel level: fused groups run as Triton kernels match eager torch.

Triton runs in its interpreter here (no GPU needed): every kernel is the
same source a GPU would compile, executed with numpy. On a machine without
a GPU the whole session runs the interpreter (test/unit/conftest.py sets
TRITON_INTERPRET=1 before any kernel is decorated, whatever the test order);
this file's tests ask for it also on a GPU machine (the `triton_interpreter`
fixture), since they run on CPU tensors.
"""

import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from eager import train_eagerly

import piper
from piper.backend.aten import run_function
from piper.backend.kernels import compile_function
from piper.backend.triton_codegen import (
    contiguous_strides,
    generate,
    offset_expr,
    rows_per_program,
)
from piper.diagnostics import PiperError
from piper.dialects.kernel import FusedOp
from piper.dialects.kernel_layout import shape_of
from piper.fused_step import KernelStep, fuse
from piper.ir import parse_module, print_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    """Triton's interpreter for this test (restored after it)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="module")
def kernel_cache(tmp_path_factory):
    old = os.environ.get("PIPER_KERNEL_CACHE")
    path = tmp_path_factory.mktemp("kernels")
    os.environ["PIPER_KERNEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PIPER_KERNEL_CACHE", None)
    else:
        os.environ["PIPER_KERNEL_CACHE"] = old


def fused_ops(module) -> list[FusedOp]:
    return [op for op in module.walk() if isinstance(op, FusedOp)]


def both(module, fn, args):
    """Results of @fn with Triton kernels and with the aten fallback."""
    tri = compile_function(module, fn, "cpu", use_triton=True)
    ref = compile_function(module, fn, "cpu", use_triton=False)
    assert not tri.kernel_report.aten, tri.kernel_report.aten
    assert len(ref.kernel_report.aten) == len(fused_ops(module))
    return tri(*args), ref(*args)


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape)
    if got.dtype == torch.bool:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# elementwise
# --------------------------------------------------------------------------

# (result type, op text) over %x (positive), %y, %b: [8], %c: [4, 1], %s: f64 0-d,
# %m: bool mask
POINTWISE_CASES = [
    ("f32", '"aten.add.Tensor"(%x, %y, "alpha" = 2.0) : (T, T)'),
    ("f32", '"aten.add.Tensor"(%x, %b) : (T, tensor<8xf32>)'),
    ("f32", '"aten.sub.Tensor"(%y, %c) : (T, tensor<4x1xf32>)'),
    ("f32", '"aten.rsub.Scalar"(%x, 3.0) : (T)'),
    ("f32", '"aten.mul.Tensor"(%s, %x) : (tensor<f64>, T)'),
    ("f32", '"aten.div.Tensor"(%y, %x) : (T, T)'),
    ("f32", '"aten.div.Tensor"(%y, 3.0) : (T)'),
    ("f32", '"aten.neg.default"(%y) : (T)'),
    ("f32", '"aten.reciprocal.default"(%x) : (T)'),
    ("f32", '"aten.sqrt.default"(%x) : (T)'),
    ("f32", '"aten.rsqrt.default"(%x) : (T)'),
    ("f32", '"aten.exp.default"(%y) : (T)'),
    ("f32", '"aten.exp2.default"(%y) : (T)'),
    ("f32", '"aten.expm1.default"(%y) : (T)'),
    ("f32", '"aten.log.default"(%x) : (T)'),
    ("f32", '"aten.log2.default"(%x) : (T)'),
    ("f32", '"aten.log1p.default"(%x) : (T)'),
    ("f32", '"aten.sin.default"(%y) : (T)'),
    ("f32", '"aten.cos.default"(%y) : (T)'),
    ("f32", '"aten.abs.default"(%y) : (T)'),
    ("f32", '"aten.floor.default"(%y) : (T)'),
    ("f32", '"aten.ceil.default"(%y) : (T)'),
    ("f32", '"aten.erf.default"(%y) : (T)'),
    ("f32", '"aten.tanh.default"(%y) : (T)'),
    ("f32", '"aten.sigmoid.default"(%y) : (T)'),
    ("f32", '"aten.relu.default"(%y) : (T)'),
    ("f32", '"aten.gelu.default"(%y) : (T)'),
    ("f32", '"aten.gelu.default"(%y, "approximate" = "tanh") : (T)'),
    ("f32", '"aten.silu.default"(%y) : (T)'),
    ("f32", '"aten.gelu_backward.default"(%y, %x) : (T, T)'),
    ("f32", '"aten.gelu_backward.default"(%x, %y, "approximate" = "tanh") : (T, T)'),
    ("f32", '"aten.threshold_backward.default"(%y, %x, 1.0) : (T, T)'),
    ("f32", '"aten.sigmoid_backward.default"(%y, %x) : (T, T)'),
    ("f32", '"aten.tanh_backward.default"(%y, %x) : (T, T)'),
    ("f32", '"aten.silu_backward.default"(%y, %x) : (T, T)'),
    ("f32", '"aten.pow.Tensor_Scalar"(%y, 2) : (T)'),
    ("f32", '"aten.pow.Tensor_Scalar"(%x, 0.5) : (T)'),
    ("f32", '"aten.pow.Tensor_Scalar"(%x, 1.7) : (T)'),
    ("f32", '"aten.pow.Scalar"(2.0, %y) : (T)'),
    ("f32", '"aten.pow.Scalar"(0.9, %y) : (T)'),
    ("f32", '"aten.pow.Tensor_Tensor"(%x, %y) : (T, T)'),
    ("f32", '"aten.maximum.default"(%x, %y) : (T, T)'),
    ("f32", '"aten.minimum.default"(%x, %y) : (T, T)'),
    ("f32", '"aten.clamp.default"(%y, -0.5, 0.5) : (T)'),
    ("f32", '"aten.clamp_min.default"(%y, 0.1) : (T)'),
    ("f32", '"aten.clamp_max.default"(%y, 0.2) : (T)'),
    ("f32", '"aten.where.self"(%m, %x, %y) : (tensor<4x8xi1>, T, T)'),
    ("f32", '"aten.masked_fill.Scalar"(%y, %m, -1.5) : (T, tensor<4x8xi1>)'),
    ("i1", '"aten.gt.Scalar"(%y, 0) : (T)'),
    ("i1", '"aten.ge.Tensor"(%x, %y) : (T, T)'),
    ("i1", '"aten.lt.Tensor"(%y, %b) : (T, tensor<8xf32>)'),
    ("i1", '"aten.le.Scalar"(%y, 0.25) : (T)'),
    ("i1", '"aten.eq.Tensor"(%x, %x) : (T, T)'),
    ("i1", '"aten.ne.Scalar"(%y, 0.0) : (T)'),
    ("i1", '"aten.logical_not.default"(%m) : (tensor<4x8xi1>)'),
    ("f32", '"aten.clone.default"(%y) : (T)'),
    ("bf16", '"aten._to_copy.default"(%y, "dtype" = bf16) : (T)'),
    ("f32", '"aten.ones_like.default"(%y) : (T)'),
    ("f32", '"aten.zeros_like.default"(%y) : (T)'),
    ("f32", '"aten.full_like.default"(%y, 3.5) : (T)'),
    ("f32", '"aten.lerp.Scalar"(%x, %y, 0.1) : (T, T)'),
    ("f32", '"aten.lerp.Scalar"(%x, %y, 0.75) : (T, T)'),
    ("f32", '"aten.addcmul.default"(%y, %x, %b, "value" = 0.001) : (T, T, tensor<8xf32>)'),
    ("f32", '"aten.addcmul.default"(%y, %x, %x) : (T, T, T)'),
    ("f32", '"aten.addcdiv.default"(%y, %c, %x, "value" = -1) : (T, tensor<4x1xf32>, T)'),
    ("f32", '"aten.addcdiv.default"(%x, %y, %x) : (T, T, T)'),
]


def pointwise_module() -> str:
    """One elementwise group computing every case from the same inputs."""
    T = "tensor<4x8xf32>"
    body, ys, types = [], [], []
    for i, (rt, text) in enumerate(POINTWISE_CASES):
        r = f"tensor<4x8x{rt}>"
        body.append(f"    %r{i} = graph.aten {text.replace('(T', f'({T}').replace(' T', f' {T}')}"
                    f" -> {r}")
        ys.append(f"%r{i}")
        types.append(r)
    ins = [T, T, "tensor<8xf32>", "tensor<4x1xf32>", "tensor<f64>", "tensor<4x8xi1>"]
    names = ["x", "y", "b", "c", "s", "m"]
    res = ", ".join(types)
    outer = ", ".join(f"%i{n}: {t}" for n, t in zip(names, ins, strict=True))
    inner = ", ".join(f"%{n}: {t}" for n, t in zip(names, ins, strict=True))
    body_text = "\n".join(body)
    return f"""
func.func @f({outer}) -> ({res}) {{
  %o:{len(ys)} = kernel.fused elementwise domain [4, 8] block [32] warps 1 ({", ".join("%i" + n for n in names)}) {{
  ^bb0({inner}):
{body_text}
    kernel.yield {", ".join(ys)} : {res}
  }} : ({", ".join(ins)}) -> ({res})
  func.return {", ".join(f"%o#{i}" for i in range(len(ys)))} : {res}
}}
"""


def test_every_pointwise_op_matches_eager():
    module = parse_module(pointwise_module())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 8, generator=g) * 1.5 + 0.5
    y = torch.randn(4, 8, generator=g)
    args = [x, y, torch.randn(8, generator=g), torch.randn(4, 1, generator=g),
            torch.tensor(0.3, dtype=torch.float64), torch.rand(4, 8, generator=g) > 0.5]
    got, want = both(module, "f", args)
    assert len(got) == len(POINTWISE_CASES)
    for (_, text), a, b in zip(POINTWISE_CASES, got, want, strict=True):
        # the interpreter rounds fp32 -> bf16 without carrying into the
        # exponent, so allow one bf16 ulp there (GPUs round exactly)
        tol = {"rtol": 2**-7, "atol": 0.0} if a.dtype == torch.bfloat16 else {}
        try:
            assert_close(a, b, **tol)
        except AssertionError as e:
            raise AssertionError(f"{text}: {e}") from None


def test_elementwise_chain_broadcasts_and_follows_strides():
    text = """
func.func @f(%x: tensor<6x5xf32>, %b: tensor<5xf32>, %c: tensor<6x1xf32>, %s: tensor<f32>) -> (tensor<6x5xf32>, tensor<6x5xf32>) {
  %a = graph.aten "aten.mul.Tensor"(%x, %s) : (tensor<6x5xf32>, tensor<f32>) -> tensor<6x5xf32>
  %d = graph.aten "aten.add.Tensor"(%a, %b) : (tensor<6x5xf32>, tensor<5xf32>) -> tensor<6x5xf32>
  %e = graph.aten "aten.sub.Tensor"(%d, %c, "alpha" = 0.5) : (tensor<6x5xf32>, tensor<6x1xf32>) -> tensor<6x5xf32>
  %f = graph.aten "aten.tanh.default"(%e) : (tensor<6x5xf32>) -> tensor<6x5xf32>
  func.return %d, %f : tensor<6x5xf32>, tensor<6x5xf32>
}
"""
    module = fuse(parse_module(text), ["fuse-elementwise"])
    (group,) = fused_ops(module)
    assert group.kind_name == "elementwise" and len(group.body_ops) == 4
    x = torch.randn(5, 6).t()  # a transposed view: strides (1, 6)
    b = torch.randn(5)
    c = torch.randn(6, 1).expand(6, 1)
    s = torch.tensor(1.5)
    want = [x * s + b, torch.tanh(x * s + b - 0.5 * c)]
    fn = compile_function(module, "f", "cpu")
    for args in ([x, b, c, s], [x.contiguous(), b, c, s]):
        for g, w in zip(fn(*args), want, strict=True):
            assert_close(g, w)
    # one kernel per stride pattern, the contiguous one with a flat index
    from piper.backend.triton_codegen import TritonGroup

    src = TritonGroup(group).source()
    # inputs in order of first use: x, s, b, c
    assert "tl.load(in0 + offs, mask=mask" in src
    assert "tl.load(in1)" in src  # 0-d: one scalar load
    assert "tl.load(in2 + (offs % 5), mask=mask" in src
    assert "tl.load(in3 + (offs // 5), mask=mask" in src


def test_offset_expr_merges_contiguous_dims():
    assert offset_expr("i", [2, 3, 4], [12, 4, 1]) == "i"
    assert offset_expr("i", [2, 3, 4], [0, 4, 1]) == "(i % 12)"
    assert offset_expr("i", [2, 3, 4], [1, 0, 2]) == "(i // 12) + (i % 4) * 2"
    assert offset_expr("i", [2, 1, 4], [4, 4, 1]) == "i"
    assert offset_expr("i", [3], [0]) == ""


# --------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------

REDUCTION_IR = """
func.func @f(%x: tensor<2x3x10xf32>, %w: tensor<10xf32>, %b: tensor<10xf32>, %g: tensor<2x3x10xf32>, %t: tensor<6xi64>, %one: tensor<f32>) -> (tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x1xf32>, tensor<2x3x1xf32>, tensor<2x3x10xf32>, tensor<10xf32>, tensor<10xf32>, tensor<3x10xf32>, tensor<2x1x1xf32>, tensor<2x3xf32>, tensor<6x10xf32>, tensor<f32>) {
  %sc = graph.aten "aten.mul.Tensor"(%x, 0.5) : (tensor<2x3x10xf32>) -> tensor<2x3x10xf32>
  %sm = graph.aten "aten._softmax.default"(%sc, -1, false) : (tensor<2x3x10xf32>) -> tensor<2x3x10xf32>
  %smb = graph.aten "aten._softmax_backward_data.default"(%g, %sm, -1, f32) : (tensor<2x3x10xf32>, tensor<2x3x10xf32>) -> tensor<2x3x10xf32>
  %lsm = graph.aten "aten._log_softmax.default"(%x, 2, false) : (tensor<2x3x10xf32>) -> tensor<2x3x10xf32>
  %ln, %mean, %rstd = graph.aten "aten.native_layer_norm.default"(%x, [10], %w, %b, 1.0e-05) : (tensor<2x3x10xf32>, tensor<10xf32>, tensor<10xf32>) -> (tensor<2x3x10xf32>, tensor<2x3x1xf32>, tensor<2x3x1xf32>)
  %dx, %dw, %db = graph.aten "aten.native_layer_norm_backward.default"(%g, %x, [10], %mean, %rstd, %w, %b, [true, true, true]) : (tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x1xf32>, tensor<2x3x1xf32>, tensor<10xf32>, tensor<10xf32>) -> (tensor<2x3x10xf32>, tensor<10xf32>, tensor<10xf32>)
  %col = graph.aten "aten.sum.dim_IntList"(%x, [0]) : (tensor<2x3x10xf32>) -> tensor<3x10xf32>
  %sq = graph.aten "aten.mul.Tensor"(%x, %x) : (tensor<2x3x10xf32>, tensor<2x3x10xf32>) -> tensor<2x3x10xf32>
  %mx = graph.aten "aten.amax.default"(%sq, [1, 2], true) : (tensor<2x3x10xf32>) -> tensor<2x1x1xf32>
  %mn = graph.aten "aten.mean.dim"(%x, [-1]) : (tensor<2x3x10xf32>) -> tensor<2x3xf32>
  %flat = graph.aten "aten.view.default"(%lsm, [6, 10]) : (tensor<2x3x10xf32>) -> tensor<6x10xf32>
  %nb = graph.aten "aten.nll_loss_backward.default"(%one, %flat, %t, none, 1, -100, %one) : (tensor<f32>, tensor<6x10xf32>, tensor<6xi64>, tensor<f32>) -> tensor<6x10xf32>
  %ceb = graph.aten "aten._log_softmax_backward_data.default"(%nb, %flat, 1, f32) : (tensor<6x10xf32>, tensor<6x10xf32>) -> tensor<6x10xf32>
  %all = graph.aten "aten.sum.default"(%g) : (tensor<2x3x10xf32>) -> tensor<f32>
  func.return %sm, %smb, %lsm, %ln, %mean, %rstd, %dx, %dw, %db, %col, %mx, %mn, %ceb, %all : tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x10xf32>, tensor<2x3x1xf32>, tensor<2x3x1xf32>, tensor<2x3x10xf32>, tensor<10xf32>, tensor<10xf32>, tensor<3x10xf32>, tensor<2x1x1xf32>, tensor<2x3xf32>, tensor<6x10xf32>, tensor<f32>
}
"""


def test_reductions_match_eager():
    module = parse_module(REDUCTION_IR)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 10, generator=g)
    t = torch.tensor([1, 9, -100, 0, 4, 4])  # one ignored row
    args = [x, torch.randn(10, generator=g), torch.randn(10, generator=g),
            torch.randn(2, 3, 10, generator=g), t, torch.tensor(5.0)]
    want = run_function(module, "f", args)
    fused = fuse(module, ["fuse-reductions"])
    groups = fused_ops(fused)
    assert {op.kind_name for op in groups} == {"reduction"}
    # rows of the last dim (softmax, LN, ...), LN weight/bias grads over the
    # rows, a column sum, amax over two dims, cross-entropy rows, a full sum
    assert {tuple(op.reduce_dims) for op in groups} == {
        (2,), (0, 1), (0,), (1, 2), (1,), (0, 1, 2)}
    rows = [op for op in groups if op.reduce_dims == [2]][0]
    held = {b.target.data for b in rows.body_ops}
    assert {"aten._softmax.default", "aten._softmax_backward_data.default",
            "aten._log_softmax.default", "aten.native_layer_norm.default",
            "aten.native_layer_norm_backward.default"} <= held
    # short rows are taken several a program: 6 rows of 10 -> 3 programs of 2
    src = generate(rows, [contiguous_strides(shape_of(v)) for v in rows.inputs])
    assert src.grid == (3,) and "tl.arange(0, 2)[:, None]" in src.text
    assert [rows_per_program(n, 16) for n in (1, 6, 7, 16, 1024)] == [1, 2, 1, 16, 256]
    got, ref = both(fused, "f", args)
    for a, b, c in zip(got, ref, want, strict=True):
        assert_close(a, c)
        assert_close(b, c)


# --------------------------------------------------------------------------
# matmul with epilogue
# --------------------------------------------------------------------------

MATMUL_IR = """
func.func @f(%x: tensor<20x24xf32>, %w: tensor<40x24xf32>, %b: tensor<40xf32>, %dy: tensor<20x40xf32>, %res: tensor<4x5x24xf32>) -> (tensor<20x40xf32>, tensor<4x5x24xf32>, tensor<20x40xf32>) {
  %t = graph.aten "aten.t.default"(%w) : (tensor<40x24xf32>) -> tensor<24x40xf32>
  %a = graph.aten "aten.addmm.default"(%b, %x, %t, "beta" = 0.5, "alpha" = 2.0) : (tensor<40xf32>, tensor<20x24xf32>, tensor<24x40xf32>) -> tensor<20x40xf32>
  %g = graph.aten "aten.gelu.default"(%a) : (tensor<20x40xf32>) -> tensor<20x40xf32>
  %m = graph.aten "aten.mm.default"(%dy, %w) : (tensor<20x40xf32>, tensor<40x24xf32>) -> tensor<20x24xf32>
  %v = graph.aten "aten.view.default"(%m, [4, 5, 24]) : (tensor<20x24xf32>) -> tensor<4x5x24xf32>
  %gb = graph.aten "aten.gelu_backward.default"(%v, %res) : (tensor<4x5x24xf32>, tensor<4x5x24xf32>) -> tensor<4x5x24xf32>
  %h = graph.aten "aten.mm.default"(%x, %t) : (tensor<20x24xf32>, tensor<24x40xf32>) -> tensor<20x40xf32>
  %r = graph.aten "aten.relu.default"(%h) : (tensor<20x40xf32>) -> tensor<20x40xf32>
  func.return %g, %gb, %r : tensor<20x40xf32>, tensor<4x5x24xf32>, tensor<20x40xf32>
}
"""


def test_matmul_epilogue_matches_eager():
    module = parse_module(MATMUL_IR)
    gen = torch.Generator().manual_seed(2)
    args = [torch.randn(20, 24, generator=gen), torch.randn(40, 24, generator=gen),
            torch.randn(40, generator=gen), torch.randn(20, 40, generator=gen),
            torch.randn(4, 5, 24, generator=gen)]
    want = run_function(module, "f", args)
    fused = fuse(module, ["fuse-matmul-epilogue"])
    groups = fused_ops(fused)
    assert [op.kind_name for op in groups] == ["matmul"] * 3
    # small tiles force several programs and a K loop with a masked tail
    for op in groups:
        from xdsl.dialects.builtin import ArrayAttr, IntAttr

        op.block = ArrayAttr([IntAttr(16), IntAttr(16), IntAttr(16)])
    got, ref = both(fused, "f", args)
    for a, b, c in zip(got, ref, want, strict=True):
        assert_close(a, c, rtol=1e-5, atol=1e-5)
        assert_close(b, c)


# --------------------------------------------------------------------------
# switching off, fallback, cache
# --------------------------------------------------------------------------

SMALL = """
func.func @f(%x: tensor<8xf32>) -> tensor<8xf32> {
  %a = graph.aten "aten.pow.Scalar"(-2.0, %x) : (tensor<8xf32>) -> tensor<8xf32>
  %b = graph.aten "aten.add.Tensor"(%a, %x) : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  func.return %b : tensor<8xf32>
}
"""


def test_switch_off_and_fallback(monkeypatch):
    module = fuse(parse_module(SMALL), ["fuse-elementwise"])
    assert len(fused_ops(module)) == 1
    x = torch.arange(8, dtype=torch.float32)
    want = torch.pow(-2.0, x) + x
    # a negative base is not emitted: the group runs with aten, and says why
    fn = compile_function(module, "f", "cpu")
    assert fn.kernel_report.triton == []
    assert "pow with base -2.0" in fn.kernel_report.aten[0][1]
    assert_close(fn(x)[0], want)
    good = fuse(parse_module(SMALL.replace("-2.0", "2.0")), ["fuse-elementwise"])
    assert len(compile_function(good, "f", "cpu").kernel_report.triton) == 1
    off = compile_function(good, "f", "cpu", use_triton=False)
    assert off.kernel_report.triton == [] and len(off.kernel_report.aten) == 1
    monkeypatch.setenv("PIPER_TRITON", "0")
    env_off = compile_function(good, "f", "cpu", use_triton=True)
    assert env_off.kernel_report.triton == []
    assert_close(env_off(x)[0], torch.pow(2.0, x) + x)
    monkeypatch.delenv("PIPER_TRITON")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(PiperError, match="TRITON_INTERPRET=1"):
        compile_function(good, "f", "cpu")


def test_kernels_are_cached_by_content(kernel_cache):
    from piper.backend.triton_codegen import TritonGroup

    text = SMALL.replace("-2.0", "3.0")
    a = TritonGroup(fused_ops(fuse(parse_module(text), ["fuse-elementwise"]))[0])
    b = TritonGroup(fused_ops(fuse(parse_module(text), ["fuse-elementwise"]))[0])
    src = a.source()
    assert src == b.source()
    files = [p for p in kernel_cache.glob("piper_elementwise_*.py") if p.read_text() == src]
    assert len(files) == 1
    assert "@triton.jit" in src and files[0].stem in src


# --------------------------------------------------------------------------
# training parity: three steps, fused vs the unfused reference
# --------------------------------------------------------------------------


class TinyBlock(nn.Module):
    """LayerNorm, attention-style softmax, a GELU MLP and a residual stream."""

    def __init__(self, d=16, vocab=10):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.inp(x)
        a = self.ln1(h)
        att = torch.softmax(self.q(a) @ self.k(a).transpose(-1, -2) / 4.0, dim=-1)
        h = h + att @ a
        h = h + self.down(F.gelu(self.up(self.ln2(h))))
        return self.head(h)


def train_and_compare(model, inputs, loss_fn, targets, optimizer, kinds):
    step = piper.capture(model, inputs, loss_fn, targets, optimizer)
    fused = KernelStep(step, device="cpu")
    groups = fused_ops(fused.module)
    assert {op.kind_name for op in groups} == kinds
    assert any(op.parent_op().sym_name.data == "backward" for op in groups)
    assert any(op.parent_op().sym_name.data == "optimizer" for op in groups)
    assert len(fused.kernel_report.triton) == len(groups) and not fused.kernel_report.aten
    for _ in range(3):
        want = step.run(*inputs, *targets)
        got = fused.run(*inputs, *targets)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name, want in step.values.items():
        torch.testing.assert_close(fused.values[name], want, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")
    return fused


def test_mlp_training_matches_reference():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(),
                        nn.Linear(32, 4))
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    opt = torch.optim.AdamW(mlp.parameters(), lr=1e-2)
    fused = train_and_compare(mlp, [x], F.mse_loss, [y], opt,
                              {"matmul", "reduction", "elementwise"})
    text = print_module(fused.module)
    assert '"aten.relu.default"' in text.split("kernel.fused matmul", 1)[1]


def test_transformer_block_training_matches_reference():
    torch.manual_seed(0)
    model = TinyBlock()
    x, y = torch.randn(2, 4, 8), torch.randint(0, 10, (2, 4))

    def loss(out, t):
        return F.cross_entropy(out.reshape(-1, 10), t.reshape(-1))

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fused = train_and_compare(model, [x], loss, [y], opt,
                              {"matmul", "reduction", "elementwise"})
    bodies = {t for op in fused_ops(fused.module) for t in
              (b.target.data for b in op.body_ops)}
    for t in ("aten.native_layer_norm.default", "aten._softmax.default",
              "aten._log_softmax.default", "aten.native_layer_norm_backward.default",
              "aten._softmax_backward_data.default", "aten.nll_loss_backward.default",
              "aten.gelu.default", "aten.gelu_backward.default"):
        assert t in bodies, t


# --------------------------------------------------------------------------
# the fuse directive and the runtime: a real pipelined plan with kernels
# --------------------------------------------------------------------------


def stage_groups(module) -> dict[str, list[FusedOp]]:
    """Fused groups per stage function (@F0, @B1, @OPT0, ...)."""
    from xdsl.dialects import func

    return {fn.sym_name.data: [op for op in fn.walk() if isinstance(op, FusedOp)]
            for fn in module.body.block.ops
            if isinstance(fn, func.FuncOp) and fn.sym_name.data != "train_step"}


def gpt_plan(strategy, optimizer=None):
    from examples.gpt import GPTConfig, gpt_data, make_gpt

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=False)
    model = make_gpt(cfg)
    opt = optimizer(model) if optimizer else torch.optim.SGD(model.parameters(), lr=0.1)
    return cfg, piper.compile(model, gpt_data(cfg), optimizer=opt, strategy=strategy)


PIPELINE_2 = [piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b")]


def test_gpt_pipeline_with_triton_kernels_trains_like_eager(tmp_path, monkeypatch):
    """pp=2, 2 microbatches, 1F1B, every stage fused: two gloo processes run
    the Triton kernels (interpreter) and match eager single-process training.

    SGD with momentum, so the parameters check the gradients directly: fused
    reductions sum in another order than aten (differences of a few fp32
    ulps), which Adam would blow up on the elements whose gradient is ~1e-8
    (it divides every gradient by its own magnitude). The Adam update kernels
    are checked against the unfused step in the tests above.
    """
    from examples.gpt import GPTConfig, gpt_data, make_gpt
    cache = tmp_path / "cache"
    monkeypatch.setenv("PIPER_KERNEL_CACHE", str(cache))  # the workers' cache
    steps, mb = 2, 2

    def sgd(m):
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    cfg, plan = gpt_plan(PIPELINE_2 + [piper.fuse()], sgd)
    groups = stage_groups(plan.module)
    # forward, backward and optimizer of both stages hold fused groups, all Triton
    for name in ("F0", "F1", "B0", "B1", "OPT0", "OPT1"):
        assert groups[name], name
    assert {op.backend_name for gs in groups.values() for op in gs} == {"triton"}
    held = {b.target.data for fn in ("B0", "B1") for op in groups[fn] for b in op.body_ops}
    for t in ("aten._softmax_backward_data.default", "aten.native_layer_norm_backward.default",
              "aten.gelu_backward.default", "aten._log_softmax_backward_data.default",
              "aten.nll_loss_backward.default"):
        assert t in held, t
    per_step = GPTConfig(**{**cfg.__dict__, "batch": cfg.batch * mb})
    batches = []
    for s in range(steps):
        a, b = gpt_data(per_step, seed=50 + s)
        batches.append({"input0": a, "input1": b})
    result = plan.run(batches, timeout=120)

    reference = make_gpt(cfg)
    losses = train_eagerly(reference, batches, sgd(reference))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")
    # every group was compiled as a Triton kernel by a worker (a group that
    # fell back to aten leaves no kernel source in the cache)
    made = {p.stem for p in cache.glob("piper_*.py")}
    for fn, gs in groups.items():
        for op in gs:
            name = generate(op, [contiguous_strides(shape_of(v)) for v in op.inputs]).name
            assert name in made, f"@{fn}: {op.kind_name} group did not run as a Triton kernel"


def test_fuse_directive_selects_stages_and_backends():
    from piper.directives.strategy import from_json, to_json

    _, plan = gpt_plan(PIPELINE_2 + [
        piper.fuse(),
        piper.fuse(kernels="aten", filter={"PASS": "OPT"}),
        piper.fuse(kernels="off", filter={"PASS": "B", "PP": 1}),
    ])
    groups = stage_groups(plan.module)
    assert not groups["B1"]
    assert groups["B0"] and groups["F1"] and groups["OPT1"]
    backends = {fn: {op.backend_name for op in gs} for fn, gs in groups.items() if gs}
    assert backends == {"F0": {"triton"}, "F1": {"triton"}, "B0": {"triton"},
                        "OPT0": {"aten"}, "OPT1": {"aten"}}
    # a later fuse overrides an earlier one: the order of the list counts
    _, plan = gpt_plan(PIPELINE_2 + [piper.fuse(kernels="off"), piper.fuse(filter={"PP": 0})])
    assert {fn for fn, gs in stage_groups(plan.module).items() if gs} == {"F0", "B0", "OPT0"}
    # the same strategy as JSON, and the passes it stands for
    ds = [piper.place(pp=2), piper.fuse(kernels="aten", filter={"PASS": ["F", "B"], "PP": "*"})]
    back = from_json(to_json(ds))
    assert back == ds
    # the directive is the `fuse` pass of the same options
    assert [str(p.pipeline_pass_spec()) for p in back[1].passes()] == [
        'fuse{kernels="aten" filter="[PP=* PASS=F|B]"}']
    assert [str(p.pipeline_pass_spec()) for p in piper.fuse(kernels="off").passes()] == [
        'fuse{kernels="off"}']


@pytest.mark.parametrize("bad, message", [
    (lambda: piper.fuse(kernels="cuda"), "fuse: kernels must be one of 'triton', 'aten', 'off'"),
    (lambda: piper.fuse(filter={"PASS": "X"}), "fuse: filter: PASS 'X' is not one of"),
    (lambda: piper.fuse(filter={"MB": 0}), "a stage function serves every microbatch"),
    (lambda: __import__("piper.directives.strategy", fromlist=["from_json"]).from_json(
        '[{"directive": "fuse", "kernels": "gpu"}]'), "fuse: kernels must be one of"),
    (lambda: gpt_plan(PIPELINE_2 + [piper.fuse(filter={"PP": 5})]),
     r"strategy\[3\].*fuse.*filter \[PP=5\] selects no stage function"),
    (lambda: gpt_plan(PIPELINE_2 + [piper.fuse(filter={"EP": 0})]),
     "names tag 'EP', which the model does not have"),
])
def test_fuse_directive_errors(bad, message):
    with pytest.raises(PiperError) as e:
        bad()
    assert re.search(message, e.value.render()), e.value.render()


def test_runtime_runs_groups_as_the_plan_marks_them(monkeypatch):
    """RankRuntime builds its stage functions with the kernel hook: a group
    marked aten runs with aten anywhere; a Triton group on a CPU without the
    interpreter is one clear error naming the group."""
    from piper.runtime.executor import RankRuntime

    _, aten_plan = gpt_plan(PIPELINE_2 + [piper.fuse(kernels="aten")])
    _, tri_plan = gpt_plan(PIPELINE_2 + [piper.fuse(filter={"PASS": "B", "PP": 1})])
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    RankRuntime(aten_plan.module, 1, 2)  # no Triton needed
    RankRuntime(tri_plan.module, 0, 2)  # rank 0 runs no Triton group
    with pytest.raises(PiperError, match="Triton kernels need a GPU device") as e:
        RankRuntime(tri_plan.module, 1, 2)
    assert e.value.render().startswith("kernel.fused at loc(")  # names the group


# --------------------------------------------------------------------------
# the benchmark script runs (tiny sizes, interpreter)
# --------------------------------------------------------------------------


@pytest.mark.filterwarnings("error::UserWarning")
def test_bench_smoke(tmp_path, capsys):
    import json

    from benchrun import bench_module

    bench = bench_module("kernels_bench.py")
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["device_name"] and data["interpreted"] is True
    step = data["step"]
    assert step["model"] == "examples/gpt.py"
    assert step["fused_vs_eager_loss_diff"] < 1e-5
    assert step["aten_vs_eager_loss_diff"] < 1e-5
    assert step["fallback_groups"] == 0
    assert min(step["groups"].values()) > 0
    assert step["torch_compile_ms"] is None and "no GPU" in step["torch_compile_skipped"]
    assert {k["kind"] for k in data["kernels"]} == {"elementwise", "reduction"}
    assert len(data["kernels"]) == 7
    for k in data["kernels"]:
        assert k["bytes"] > 0 and k["fused_ms"] > 0 and k["max_abs_err"] < 1e-4, k
    # the default output names the device
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench.peak_bandwidth("NVIDIA H200") == 4.8e12


# --------------------------------------------------------------------------
# without a GPU and without TRITON_INTERPRET, piper.fuse() works by itself
# --------------------------------------------------------------------------

CPU_CHOICE_SCRIPT = '''
import os, torch, piper
from examples.mlp import MLPConfig, make_mlp, mlp_data
assert "TRITON_INTERPRET" not in os.environ and "PIPER_TRITON" not in os.environ
cfg = MLPConfig(dim=8, layers=2, classes=4, batch=2)

def plan(kernels):
    torch.manual_seed(0)
    model = make_mlp(cfg)
    return piper.compile(model, mlp_data(cfg), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         strategy=[piper.place(pp=2), piper.split(2), piper.order("1f1b"),
                                   piper.fuse(kernels)])

fused = plan("triton")
assert any(type(op).__name__ == "FusedOp" for op in fused.module.walk())
torch.manual_seed(1)
batches = [mlp_data(MLPConfig(dim=8, layers=2, classes=4, batch=4)) for _ in range(2)]
got = fused.run(batches, progress=False)
print("TRITON_INTERPRET=" + os.environ.get("TRITON_INTERPRET", "unset"))
want = plan("aten").run(batches, progress=False)
assert torch.allclose(torch.tensor(got.losses), torch.tensor(want.losses), rtol=1e-4, atol=1e-6), \\
    (got.losses, want.losses)
print("same losses")
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the kernels for real")
def test_fuse_without_gpu_picks_the_interpreter_by_itself(tmp_path):
    """A fresh process with TRITON_INTERPRET unset (conftest sets it for this
    session, so the test starts its own): piper.fuse() compiles and runs on
    2 ranks, Piper picks Triton's interpreter once, says so once, and the
    ranks make the same choice (the losses equal the aten plan's)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PIPER_TRITON")}
    env.update(PYTHONPATH=str(ROOT), PIPER_KERNEL_CACHE=str(tmp_path / "kernels"))
    proc = subprocess.run([sys.executable, "-c", CPU_CHOICE_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TRITON_INTERPRET=1\nsame losses" in proc.stdout
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("piper: no GPU")]
    assert notes == ["piper: no GPU: fused kernels run in Triton's interpreter (slow); choose "
                     "with piper.fuse(kernels=\"aten\"), PIPER_TRITON=0 (aten) or "
                     "TRITON_INTERPRET=1 (the interpreter)"], proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the kernels for real")
def test_fuse_without_gpu_or_triton_falls_back_to_aten(tmp_path):
    """Where triton cannot be imported, a Triton group on CPU runs with aten,
    and Piper says so once."""
    import subprocess
    import sys

    script = f'''
import sys
sys.modules["triton"] = None  # import triton fails
import torch
from piper.backend.kernels import compile_function
from piper.fused_step import fuse
from piper.ir import parse_module
module = fuse(parse_module({SMALL.replace("-2.0", "2.0")!r}), ["fuse-elementwise"])
for _ in range(2):
    fn = compile_function(module, "f", "cpu")
    x = torch.arange(8, dtype=torch.float32)
    assert torch.equal(fn(x)[0], torch.pow(2.0, x) + x)
    print(fn.kernel_report.triton, fn.kernel_report.aten[0][1])
'''
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PIPER_TRITON")}
    env.update(PYTHONPATH=str(ROOT), PIPER_KERNEL_CACHE=str(tmp_path / "kernels"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["[] no GPU, and triton cannot be imported"] * 2, proc.stdout
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("piper: no GPU")]
    assert len(notes) == 1 and "fused kernels run with aten; choose with" in notes[0], \
        proc.stderr
