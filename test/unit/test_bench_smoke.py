"""The benchmarks in bench/ still run: each script at --tiny size, one
timed step, its driver's `main` in this process (the ranks of its job
real processes running both sides).

Checks the JSON each writes (the fields bench/README.md documents, one
entry per case, step times and peak bytes per rank for both sides) and that
PyTorch and Piper trained alike (same losses step by step). No speed is
asserted: these are benchmarks, not timed tests.
"""

import json

import pytest
from benchrun import bench_main

TINY = ["--tiny", "--steps", "1", "--warmup", "0", "--no-plot"]


def run_bench(tmp_path, script: str, *extra: str) -> dict:
    out = tmp_path / f"{script}.json"
    assert bench_main(script, [*TINY, *extra, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def check(doc: dict, benchmark: str, cases: list[str], nproc: int, repeats: int = 1) -> None:
    assert doc["benchmark"] == benchmark
    m = doc["machine"]
    for key in ("cpu", "cores", "torch", "processes", "threads_per_process"):
        assert m[key], key
    assert [c["case"] for c in doc["cases"]] == cases
    for c in doc["cases"]:
        assert c["ratio_step_time"] > 0 and c["ratio_peak_bytes"] > 0
        assert c["repeats"] == repeats
        for side in ("torch", "piper"):
            s = c[side]
            assert s["what"]
            assert len(s["step_s"]) == repeats and s["median_step_s"] > 0
            assert len(s["peak_bytes_per_rank"]) == nproc
            assert all(b > 0 for b in s["peak_bytes_per_rank"])
        # the runtime's own accounting is the plan's estimate, rank by rank
        assert c["piper"]["runtime_peak_live_bytes_per_rank"] == c["piper"]["plan_peak_bytes_per_rank"]
        # both sides trained the same model on the same data: 2 profiled + 1 timed step
        t, p = c["torch"]["losses"], c["piper"]["losses"]
        assert len(t) == len(p) == 3 and None not in t and None not in p
        for a, b in zip(t, p, strict=True):
            assert abs(a - b) <= 1e-4 * abs(a), (c["case"], t, p)


def test_dp_bench(tmp_path):
    # two jobs: the timed steps of both are measured together
    check(run_bench(tmp_path, "dp_bench.py", "--nproc", "2", "--repeat", "2"), "dp", ["dp2"], 2,
          repeats=2)


def test_zero3_bench(tmp_path):
    check(run_bench(tmp_path, "zero3_bench.py", "--nproc", "2", "--prefetch", "1",
                    "--pack", "0,1"), "zero3", ["dp2 prefetch 1", "dp2 prefetch 1 packed"], 2)


def test_pp_bench(tmp_path):
    # one single-stage and one two-stages-per-rank (V) schedule cover every
    # path of the script; the slow test below runs all four
    check(run_bench(tmp_path, "pp_bench.py", "--schedules", "1f1b,dualpipe-v"), "pp",
          ["1f1b", "dualpipe-v"], 4)


@pytest.mark.slow
def test_pp_bench_every_schedule(tmp_path):
    names = ["1f1b", "interleaved", "zb-h1", "dualpipe-v"]
    check(run_bench(tmp_path, "pp_bench.py"), "pp", names, 4)


def test_overhead_bench(tmp_path):
    doc = run_bench(tmp_path, "overhead_bench.py")
    check(doc, "overhead", ["gpt tiny"], 1)
    assert doc["cases"][0]["piper_aten_calls_per_step"] > 100
