"""bench/moe_bench.py still runs: --tiny, one timed step, ep=2, through its
driver's `main` in this process (a real job of two ranks with the three sides: the PyTorch
all_to_all_single reference, Piper routed, Piper dense).

Checks the JSON fields bench/README.md documents, that Piper and the
reference trained alike (same losses step by step, the first step's
agreeing), and that the plan's all_to_all bytes are the closed form. No
speed is asserted.

In the default run (no faster test covers the reference's path): about
60 s on the loaded 2-core machine (the DualPipeV overlap at tiny size included).
"""

import json

from benchrun import bench_main


def test_moe_bench_tiny(tmp_path):
    out = tmp_path / "moe.json"
    assert bench_main("moe_bench.py", ["--tiny", "--steps", "1", "--warmup", "0", "--no-plot",
                                       "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "moe"
    o = doc["overlap"]
    assert o["note"] and o["same_losses"]
    # the runtime's traces: with the pairs, ranks compute while all_to_alls
    # travel; without them every all_to_all is waited for right away
    assert o["paired"]["hidden_all_to_all"] > o["unpaired"]["hidden_all_to_all"]
    assert o["paired"]["median_step_s"] > 0 and o["unpaired"]["median_step_s"] > 0
    [c] = doc["cases"]
    assert c["case"] == "ep2" and c["nproc"] == 2
    assert c["ratio_step_time"] > 0 and c["ratio_routed_over_dense_step_time"] > 0
    for side in ("torch", "piper", "piper_dense"):
        s = c[side]
        assert s["what"] and s["median_step_s"] > 0
        assert len(s["peak_bytes_per_rank"]) == 2 and all(b > 0 for b in s["peak_bytes_per_rank"])
        assert len(s["losses"]) == 3 and None not in s["losses"]  # 2 profiled + 1 timed
    assert c["first_step_loss"]["agree"], c["first_step_loss"]
    for a, b in zip(c["torch"]["losses"], c["piper"]["losses"], strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (c["torch"]["losses"], c["piper"]["losses"])
    d = c["dispatch_bytes"]
    assert d["slot_rows_equal_tokens_x_top_k"] and d["plan_matches_closed_form"]
    # tiny: 16 tokens per rank, top-2, dim 16, float32, n=2; 2 layers x 4 all_to_alls
    assert d["closed_form_per_all_to_all_bytes"] == 16 * 2 * 16 * 4 / 2
    assert d["plan_sent_per_step_bytes"] == 8 * 16 * 2 * 16 * 4 // 2
