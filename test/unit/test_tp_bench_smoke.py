"""bench/tp_bench.py still runs: --tiny, one timed step, tp=2 without
sequence parallelism (a real job of two ranks with both sides: Piper's
plan and PyTorch's DTensor `parallelize_module` with `loss_parallel`).

The driver runs in this process (no second interpreter importing torch);
only the job's two ranks start. Checks the JSON fields bench/README.md
documents, that both sides trained alike (same loss at every step), that
plan=None compiles to the blocks' part of the explicit plan, and that both
sides' activation all-reduces are the closed form (per layer 2 in the
forward and 2 in the backward, plus the vocab-split embedding's and the
loss-parallel head's). No speed is asserted.

The tp2+sp case (`--sequence on`) costs as much again (a second compile and
job), so it is not run here; its closed form and the tally of its
collectives are checked on their own below.
"""

import json
import types

from benchrun import bench_main, bench_module


def test_tp_bench_tiny(tmp_path):
    out = tmp_path / "tp.json"
    assert bench_main("tp_bench.py", ["--tiny", "--steps", "1", "--warmup", "0", "--no-plot",
                                      "--sequence", "off", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "tp"
    assert doc["loss_parallel"] is True and doc["loss_parallel_note"]
    assert doc["sequence"] == [] and doc["sequence_note"]
    assert doc["plan"]["embed.tok"] == "vocab" and doc["plan"]["head.proj"] == "loss"
    [c] = doc["cases"]
    assert c["case"] == "tp2" and c["nproc"] == 2 and c["sequence"] is False
    assert c["ratio_step_time"] > 0 and c["ratio_peak_bytes"] > 0
    assert c["auto_plan_same_ir"]
    for side in ("torch", "piper"):
        s = c[side]
        assert s["what"] and s["median_step_s"] > 0
        assert len(s["peak_bytes_per_rank"]) == 2 and all(b > 0 for b in s["peak_bytes_per_rank"])
        assert len(s["losses"]) == 3 and None not in s["losses"]  # 2 profiled + 1 timed
    assert c["losses_agree"], (c["torch"]["losses"], c["piper"]["losses"])
    b = c["tp_bytes"]
    # tiny: 2 sequences of 8 tokens, dim 16, float32; 2 layers x 4 all-reduces,
    # the embedding's and the head's
    assert b["closed_form_activation"] == {"all_reduce": {
        "count": 2 * 4 + 2, "operand_bytes": 10 * (2 * 8 * 16 * 4),
        "sent_per_rank_bytes": 10 * (2 * 8 * 16 * 4)}}
    assert b["piper_matches_closed_form"] and b["piper_same_on_every_rank"]
    assert b["torch_matches_closed_form"]
    # the loss' row statistics: [16 tokens] each, a handful a step on both sides
    assert 0 < b["piper_rank0"]["other"]["all_reduce"]["count"] <= 4
    assert 0 < b["torch_rank0"]["other"]["all_reduce"]["count"] <= 4


def test_tp_bench_sequence_bytes():
    """With sequence parallelism each activation all-reduce becomes a
    reduce-scatter of the whole [tokens, dim] plus an all-gather of its
    1/n shards: the ring sends the same bytes; Piper's extra all-gathers
    (the inputs of colwise Linears gathered again for the backward) show as
    activation collectives beyond the closed form."""
    tb = bench_module("tp_bench.py")
    cfg = types.SimpleNamespace(batch=2, seq=8, dim=16, layers=2)
    whole = 2 * 8 * 16 * 4
    n = 2
    sp = tb.closed_form(cfg, n, sequence=True)
    assert sp == {"reduce_scatter": {"count": 10, "operand_bytes": 10 * whole,
                                     "sent_per_rank_bytes": 10 * whole / 2},
                  "all_gather": {"count": 10, "operand_bytes": 10 * whole // 2,
                                 "sent_per_rank_bytes": 10 * whole // 2}}
    assert tb._sent(sp) == tb._sent(tb.closed_form(cfg, n, sequence=False)) == 10 * whole
    calls = ([("reduce_scatter", whole), ("all_gather", whole // 2)] * 10
             + [("all_gather", whole // 2)] * 3       # gathered again for the backward
             + [("all_reduce", 64), ("all_gather", 8 * 16 * 4 // 2)])  # loss, positions
    t = tb.tally(calls, whole, n)
    assert t["activation"]["all_gather"]["count"] == 13
    assert t["activation"]["reduce_scatter"] == sp["reduce_scatter"]
    assert t["other"] == {"all_reduce": {"count": 1, "operand_bytes": 64,
                                         "sent_per_rank_bytes": 64.0},
                          "all_gather": {"count": 1, "operand_bytes": 256,
                                         "sent_per_rank_bytes": 256}}
    assert tb._sent(t["activation"]) == 10 * whole + 3 * whole // 2
