"""piper-opt's pass manager: an unexpected exception inside a pass (a bug in
Piper) is one located line on stderr, `FILE:LINE:COL: error: pass NAME
failed on 'OP': ExcType: message`, exit status 1 (OP is the op the pass was
working on, else the module); the traceback only under --debug. The failing pass here is made to fail on purpose."""

import pathlib
import re

import pytest

from piper.passes.verify_plan import VerifyPlan
from piper.tools.piper_opt import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLAN = """\
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  sched.store "w" %w : tensor<4xf32>
}
"""


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "plan.mlir"
    path.write_text(PLAN)
    return str(path)


def crash_on_store(self, ctx, module):
    for op in module.walk():
        if op.name == "sched.store":
            raise ZeroDivisionError("a bug")


def crash_anywhere(self, ctx, module):
    raise KeyError("nothing")


def test_a_crash_in_a_pass_is_one_line_at_the_op(plan, monkeypatch, capsys):
    monkeypatch.setattr(VerifyPlan, "apply", crash_on_store)
    assert main([plan, "-p", "verify-plan"]) == 1
    err = capsys.readouterr().err
    assert err == (f"{plan}:3:3: error: pass verify-plan failed on 'sched.store': "
                   "ZeroDivisionError: a bug\n")


def test_a_crash_with_no_op_at_hand_points_at_the_file(plan, monkeypatch, capsys):
    monkeypatch.setattr(VerifyPlan, "apply", crash_anywhere)
    assert main([plan, "-p", "verify-plan"]) == 1
    err = capsys.readouterr().err
    assert err == (f"{plan}: error: pass verify-plan failed on 'builtin.module': "
                   "KeyError: 'nothing'\n")


def test_debug_prints_the_traceback_too(plan, monkeypatch, capsys):
    monkeypatch.setattr(VerifyPlan, "apply", crash_on_store)
    assert main([plan, "-p", "verify-plan", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)")
    assert "in crash_on_store" in err
    assert err.splitlines()[-1] == (f"{plan}:3:3: error: pass verify-plan failed on "
                                    "'sched.store': ZeroDivisionError: a bug")


def test_a_crash_in_a_chunk_points_at_the_chunk(tmp_path, monkeypatch, capsys):
    path = tmp_path / "two.mlir"
    path.write_text(PLAN + "// -----\n" + PLAN)
    monkeypatch.setattr(VerifyPlan, "apply", crash_anywhere)
    assert main([str(path), "-p", "verify-plan", "--split-input-file"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(r"^.*two\.mlir", "two.mlir", x) for x in lines] == [
        "two.mlir:1:1: error: pass verify-plan failed on 'builtin.module': KeyError: 'nothing'",
        "two.mlir:6:1: error: pass verify-plan failed on 'builtin.module': KeyError: 'nothing'"]


def test_a_crash_in_a_pass_of_the_strategy_names_that_pass(monkeypatch, capsys):
    from piper.passes.place import Place

    monkeypatch.setattr(Place, "apply", crash_anywhere)
    ir = str(ROOT / "test" / "dist" / "Inputs" / "mlp4.mlir")
    strategy = str(ROOT / "test" / "tools" / "Inputs" / "pp2-1f1b.json")
    assert main([ir, "--strategy", strategy]) == 1
    assert capsys.readouterr().err == (
        f"{ir}:1:1: error: pass place (in strategy) failed on 'builtin.module': "
        "KeyError: 'nothing'\n")
