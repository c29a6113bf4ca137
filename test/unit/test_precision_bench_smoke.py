"""bench/precision_bench.py still runs: --tiny, one timed step, 2 processes,
both cases (bf16 against FSDP2's MixedPrecisionPolicy, optimizer offload
against its CPUOffloadPolicy) in one job of two ranks, its driver's `main` run in this process.

Checks the JSON fields bench/README.md documents, that both sides trained
alike (the bf16 losses to bf16 precision, the fp32 ones to 1e-5) and that
the offload plan states its optimizer state in host memory. No speed is
asserted. 50 s to 3 minutes on the shared 2-core machine (two GPT
compiles, one torchrun job of two cases), so kept out of the default run;
test_precision and test_offload cover Piper's side of both cases.
"""

import json

import pytest
from benchrun import bench_main


@pytest.mark.slow
def test_precision_bench_tiny(tmp_path):
    out = tmp_path / "precision.json"
    assert bench_main("precision_bench.py", ["--tiny", "--steps", "1", "--warmup", "0",
                                             "--no-plot", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "precision" and doc["baseline_note"]
    bf16, off = doc["cases"]
    assert (bf16["case"], off["case"]) == ("bf16", "offload")
    for c in (bf16, off):
        assert c["nproc"] == 2 and c["ratio_step_time"] > 0 and c["ratio_peak_bytes"] > 0
        for side in ("torch", "piper"):
            s = c[side]
            assert s["what"] and s["median_step_s"] > 0
            assert len(s["losses"]) == 3 and None not in s["losses"]  # 2 profiled + 1 timed
    assert "MixedPrecisionPolicy" in bf16["torch"]["what"]
    assert "CPUOffloadPolicy" in off["torch"]["what"]
    assert bf16["loss_max_rel_diff"] <= 1e-2  # bf16 on both sides
    assert off["loss_max_rel_diff"] <= 1e-5   # fp32 on both sides
    assert bf16["piper_plan_memory"]["host"]["resident_bytes"] == 0
    mem = off["piper_plan_memory"]["host"]
    assert mem["resident_bytes"] > 0 and mem["peak_live_bytes"] > 0  # the optimizer state
