"""The mutation fuzzer of piper-opt (test/fuzz/fuzz_ir.py, docs/fuzzing.md)
at its CI budget: 200 seeded mutants of the lit inputs and strategies, each
a forked piper-opt run, and a few through the real command line. Every
mutant ends with exit status 0 or 1, no traceback, no internal error, no
hang, and a located error."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "test" / "fuzz" / "fuzz_ir.py"
CI_MUTANTS = 200


def _fuzz():
    """test/fuzz/fuzz_ir.py as a module (test/fuzz is not a package)."""
    if "fuzz_ir" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fuzz_ir", FUZZ)
        module = importlib.util.module_from_spec(spec)
        sys.modules["fuzz_ir"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["fuzz_ir"]


def _run(tmp_path, *args) -> dict:
    proc = subprocess.run([sys.executable, str(FUZZ), "--out", str(tmp_path), "--quiet", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    summary = json.loads((tmp_path / "summary.json").read_text())
    failures = "\n".join(f"mutant {f['index']} ({f['source']}: {', '.join(f['mutations'])}): "
                         f"{f['class']}\n{f['stderr']}" for f in summary["failures"])
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{failures}"
    return summary


def test_ci_budget_of_mutants_gets_located_errors_only(tmp_path):
    summary = _run(tmp_path, "--mutants", str(CI_MUTANTS), "--seed", "0", "--timeout", "30")
    assert summary["mutants"] == CI_MUTANTS
    assert (summary["tracebacks"], summary["internal_errors"], summary["hangs"],
            summary["pass_crashes"], summary["unlocated"], summary["bad_exits"]) == (0,) * 6
    # the mutants reach every level and both outcomes
    assert set(summary["by_level"]) == {"graph", "dist", "sched", "kernel", "strategy"}
    assert summary["classes"]["ok"] > 0 and summary["classes"]["rejected"] > 0


def test_the_real_command_line_on_a_few_mutants(tmp_path):
    summary = _run(tmp_path, "--mutants", "10", "--seed", "1", "--runner", "exec")
    assert summary["mutants"] == 10 and not summary["failures"]


def test_a_mutant_is_the_same_on_every_run():
    fuzz = _fuzz()
    sources = fuzz.corpus()
    a, b = fuzz.make_mutant(sources, 7, 42), fuzz.make_mutant(sources, 7, 42)
    assert (a.source, a.mutations, a.data, a.pipeline) == (b.source, b.mutations, b.data,
                                                           b.pipeline)
    assert fuzz.make_mutant(sources, 7, 43).data != a.data


@pytest.mark.parametrize("rc,stderr,cls", [
    (0, "", "ok"),
    (1, "IN:3:5: error: 'dist.task' op ...\n  context\n", "rejected"),
    (1, "IN: error: strategy: entry 0 ...\n", "rejected"),
    (1, "error: no location\n", "unlocated"),
    (1, "", "unlocated"),
    (1, "elsewhere.mlir:1:1: error: x\n", "unlocated"),
    (1, "IN:1:1: error: x\nerror: a second, bare one\n", "unlocated"),
    (1, "Traceback (most recent call last):\n  File ...\nKeyError: 1\n", "traceback"),
    (2, "piper-opt: internal error: KeyError: 1 (run with --debug for a traceback)\n",
     "internal_error"),
    (1, "IN:2:3: error: pass lower-dist-to-sched failed on 'dist.task': KeyError: 1\n",
     "pass_crash"),
    (1, "IN:1:1: error: pass place (in strategy) failed on 'builtin.module': KeyError: 1\n",
     "pass_crash"),
    (None, "", "hang"),
    (3, "", "exit_3"),
])
def test_what_counts_as_a_failure(rc, stderr, cls):
    fuzz = _fuzz()
    m = fuzz.Mutant(0, fuzz.Source("x.mlir", b"", "sched"), [], b"", "verify-plan",
                    ["IN"], "IN")
    assert fuzz.classify(m, rc, stderr) == cls
