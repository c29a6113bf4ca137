"""bench/tp_bench.py still runs: --tiny, one timed step, tp=2 (a real
job of two ranks with both sides: Piper's plan and PyTorch's DTensor
`parallelize_module`).

The driver runs in this process (no second interpreter importing torch);
only the job's two ranks start. Checks the JSON fields bench/README.md
documents, that both sides trained alike (same loss at every step), that
plan=None compiles to the explicit plan, and that both sides' all-reduce
bytes are the closed form (per layer 2 all-reduces of [tokens, dim] in the
forward, 2 in the backward). No speed is asserted.
"""

import json

from benchrun import bench_main


def test_tp_bench_tiny(tmp_path):
    out = tmp_path / "tp.json"
    assert bench_main("tp_bench.py", ["--tiny", "--steps", "1", "--warmup", "0", "--no-plot",
                                      "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "tp"
    assert doc["sequence"] is None and doc["sequence_note"]
    assert doc["loss_parallel"] is None and doc["loss_parallel_note"]
    [c] = doc["cases"]
    assert c["case"] == "tp2" and c["nproc"] == 2
    assert c["ratio_step_time"] > 0 and c["ratio_peak_bytes"] > 0
    assert c["auto_plan_same_ir"]
    for side in ("torch", "piper"):
        s = c[side]
        assert s["what"] and s["median_step_s"] > 0
        assert len(s["peak_bytes_per_rank"]) == 2 and all(b > 0 for b in s["peak_bytes_per_rank"])
        assert len(s["losses"]) == 3 and None not in s["losses"]  # 2 profiled + 1 timed
    assert c["losses_agree"], (c["torch"]["losses"], c["piper"]["losses"])
    b = c["tp_bytes"]
    # tiny: 2 sequences of 8 tokens, dim 16, float32; 2 layers x 4 all-reduces
    assert b["closed_form_per_step_bytes"] == 2 * 4 * (2 * 8 * 16 * 4)
    assert b["piper_matches_closed_form"] and b["piper_same_on_every_rank"]
    assert b["torch_matches_closed_form"]
