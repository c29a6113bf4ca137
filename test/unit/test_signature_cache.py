"""Results of pure checks on aten operators are remembered across
processes (piper.dialects.graph_values.remember): a later process gets the
same verification and the same inferred types without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from xdsl.dialects.builtin import TensorType, f32, i64

from piper.dialects import graph_values
from piper.dialects.graph import AtenOp
from piper.dialects.graph_values import ArgRefAttr, to_attr
from piper.passes import retype

SMALL = """func.func @f(%x: tensor<3x4xf32>) -> tensor<4x3xf32> {
  %y = graph.aten "aten.t.default"(%x) : (tensor<3x4xf32>) -> tensor<4x3xf32>
  func.return %y : tensor<4x3xf32>
}
"""


def test_types_inferred_once_are_read_back_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(graph_values, "_CACHE", [])
    op = AtenOp("aten.max.dim", [], [ArgRefAttr(0), to_attr(1, lambda v: None)], {}, [])
    types = [TensorType(f32, [5, 7])]
    computed = retype.infer_types(op, types)
    assert computed == [TensorType(f32, [5]), TensorType(i64, [5])]
    (cache,) = tmp_path.iterdir()
    assert "float32:5;int64:5" in cache.read_text()
    monkeypatch.setattr(graph_values, "_CACHE", [])  # a new process: read from disk
    monkeypatch.setattr(retype, "_infer_types", None)  # would fail if called
    assert retype.infer_types(op, types) == computed


def test_verified_file_is_printed_without_importing_torch(tmp_path):
    src = tmp_path / "t.mlir"
    src.write_text(SMALL)
    env = {"PIPER_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    code = ("import sys; from piper.tools.piper_opt import main; rc = main([sys.argv[1]]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    runs = [subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True,
                           text=True, env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout.strip().endswith("True")  # the first verification runs torch
    assert runs[1].stdout.strip().endswith("False")  # the second reads it back
    assert runs[0].stdout.replace("True", "") == runs[1].stdout.replace("False", "")


def test_cache_off_checks_every_time(tmp_path):
    src = tmp_path / "t.mlir"
    src.write_text(SMALL)
    env = {"PIPER_CACHE_DIR": "off", "PATH": "/usr/bin:/bin"}
    code = ("import sys; from piper.tools.piper_opt import main; main([sys.argv[1]]); "
            "print('torch' in sys.modules)")
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True,
                           text=True, env=env)
        assert r.stdout.strip().endswith("True")


def test_precision_reads_input_dtype_arguments_back(tmp_path, monkeypatch):
    """The precision pass's schema question (which arguments state the input
    dtype) is remembered like inferred types: a later process answers it
    without torch, the same way."""
    from piper.passes import precision

    monkeypatch.setenv("PIPER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(graph_values, "_CACHE", [])
    monkeypatch.setattr(precision, "_INPUT_DTYPE", {})
    target = "aten._softmax_backward_data.default"
    computed = precision._input_dtype_args(target)
    assert computed == {3, "input_dtype"}
    assert precision._input_dtype_args("aten.mm.default") == frozenset()
    monkeypatch.setattr(graph_values, "_CACHE", [])  # a new process: read from disk
    monkeypatch.setattr(precision, "_INPUT_DTYPE", {})
    monkeypatch.setattr(precision, "resolve_target", None)  # would fail if called
    assert precision._input_dtype_args(target) == computed
    assert precision._input_dtype_args("aten.mm.default") == frozenset()


@pytest.mark.parametrize("argv, message", [
    (["gpt", "--dim", "10", "--heads", "3"], "dim 10 is not divisible by heads 3"),
    (["moe", "--optimizer", "adamw", "--momentum", "0.9"], "--momentum applies to"),
    (["mlp", "-o", "/nonexistent-dir/out.mlir"], "No such file or directory"),
])
def test_capture_option_errors_need_no_torch(argv, message):
    """piper-capture checks sizes, options and the output path before it
    imports torch to build the model: a mistyped command fails at once."""
    code = ("import sys; from piper.tools.piper_capture import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert r.stdout.strip() == "False"
