"""bench/compile_bench.py still runs: its --tiny sweeps through the command
line, checking the JSON it writes (the fields bench/README.md documents,
plan sizes that follow from each case's strategy). No speed is asserted:
it is a benchmark, not a timed test."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_compile_bench(tmp_path):
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compile_bench.py"),
                           "--tiny", "--no-plot", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "compile" and doc["tiny"] is True
    for key in ("cpu", "cores", "python", "torch", "xdsl"):
        assert doc["machine"][key], key
    assert len(doc["load_average_at_start"]) == 3 and len(doc["load_average_at_end"]) == 3
    cases = doc["cases"]
    assert {c["sweep"] for c in cases} == {"scale", "schedules", "dp"}
    assert {c["schedule"] for c in cases} >= {"1f1b", "interleaved", "zb-h1"}
    assert any(c["dp"] > 1 and c["bucket_bytes"] for c in cases)
    for c in cases:
        assert "skipped" not in c, c
        # every (stage, microbatch) has F and B (zb-h1: B split into I and W),
        # every stage one optimizer task; all of it once per replica
        per_mb = 3 if c["schedule"] == "zb-h1" else 2
        tasks = (c["stages"] * c["microbatches"] * per_mb + c["stages"]) * c["dp"]
        assert c["tasks"] == tasks, c
        assert c["devices"] == c["pp"] * c["dp"], c
        assert c["stages"] == c["pp"] * (2 if c["schedule"] == "interleaved" else 1)
        assert c["instructions"] > c["tasks"]
        for key in ("capture_s", "compile_s", "total_s"):
            assert c[key] >= 0, key
        assert abs(c["total_s"] - c["capture_s"] - c["compile_s"]) < 0.01
        assert len(c["load_average_before"]) == 3 and len(c["load_average_after"]) == 3
        assert c["max_rss_mb"] > 0
        assert set(c["parts_s"]) >= {"ir_verify", "dist_passes", "lowering", "verify_plan"}
        assert {"place", "split", "order", "lower-dist-to-sched",
                "verify-plan"} <= set(c["passes_s"])
        assert sum(c["parts_s"].values()) <= c["compile_s"] + 0.01
    summary = doc["summary"]
    for sweep in ("scale", "schedules", "dp", "all_dp1"):
        assert summary[sweep]["compile_exponent"] is not None, sweep
