"""bench/search_published.py on a tiny Llama: the published-configuration
rows compile and simulate, the depth extrapolation and the search's best
land in the JSON docs/search.md reads. The real run (Llama-3 8B and 70B
shapes, minutes) is bench/results/search_published.json."""

import json
import subprocess
import sys

import pytest
from benchrun import ROOT, bench_module


@pytest.fixture(scope="module")
def bench():
    mod = bench_module("search_published.py")
    # the smallest run of the same code: 1 and 2 layers of 4 extrapolated
    # to 4, 2 devices, one published row (FSDP with a split, as the 8B
    # torchtitan row), a one-candidate search
    mod.DEPTHS["tiny"], mod.GLOBAL["tiny"], mod.DEVICES["tiny"] = (1, 2), 4, 2
    mod.ARCH["tiny"] = dict(mod.ARCH["tiny"], num_hidden_layers=4)
    mod.SPACE["tiny"] = {"pp": [1], "zero": [3], "recompute": [True]}
    rows = mod.published
    mod.published = lambda model: [dict(rows(model)[0], strategy=mod._fsdp(2, 2, False))]
    return mod


def test_quick_run_writes_the_table(bench, tmp_path):
    out = tmp_path / "p.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "search_published" and doc["device"] == "h100"
    (res,) = doc["results"]
    assert res["model"] == "tiny" and res["devices"] == 2 and res["depths"] == [1, 2]
    assert res["layers"] == 4 and "depth_check" not in res
    assert res["memory_budget_bytes"] == 80 * 10**9
    for row in res["published"]:
        p = row["predicted"]
        assert "error" not in p, row
        assert p["devices"] == 2 and p["step_s"] > 0 and p["peak_bytes"] > 0
        # tokens a device a second: the global batch's tokens over the step
        want = res["global_batch_sequences"] * res["seq"] / p["step_s"] / 2
        assert p["tokens_per_s_per_device"] == pytest.approx(want, rel=1e-3)
        assert set(row["at_depth"]) == {"1", "2"} and row["strategy"]
    (row,) = res["published"]
    steps = {d: row["at_depth"][d]["step_s"] for d in ("1", "2")}
    assert steps["2"] > steps["1"]  # a layer more costs time
    assert row["predicted"]["step_s"] == pytest.approx(steps["1"] + 3 * (steps["2"] - steps["1"]),
                                                       rel=1e-5)  # 4 layers, on the line
    assert [d["directive"] for d in row["strategy"]] == [
        "precision", "place", "split", "replicate", "shard"]
    (cand,) = res["search_candidates"]
    assert cand["name"] == "pp1 dp2 mb2 zero3 recompute"
    assert res["search_best"] == cand and cand["predicted"]["fits_80gb"]


def test_extrapolate_is_a_line_through_both_depths(bench):
    at = {4: {"step_s": 1.0, "peak_bytes": 100, "devices": 8},
          8: {"step_s": 1.5, "peak_bytes": 180, "devices": 8}}
    assert bench.extrapolate(at, 32) == {"devices": 8, "step_s": 4.5, "peak_bytes": 660}
    assert "error" in bench.extrapolate({4: at[4], 8: {"error": "no"}}, 32)


def test_capture_of_fake_weights_allocates_nothing_for_the_optimizer():
    """The optimizer's update is traced on empty example tensors: capturing
    a model built on fake tensors (bench/search_published.py's 8B and 70B
    shapes) writes no memory the size of its parameters. With zeros it
    wrote 4 x 512 MiB here (and 4 x 4 GB for the 70B embedding)."""
    code = """
import resource, torch
from torch._subclasses.fake_tensor import FakeTensorMode
from piper.frontend.capture import capture
with FakeTensorMode():
    model = torch.nn.Embedding(1 << 20, 128)   # 2**27 fp32 = 512 MiB
    ids = torch.randint(0, 1 << 20, (2, 3))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
step = capture(model, (ids,), loss_fn=lambda out: out.sum(),
               optimizer=torch.optim.AdamW(model.parameters()))
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
assert type(step.values["weight"]).__name__ == "FakeTensor"
print(grew // 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          cwd=ROOT, env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) < 256  # MiB; zeros: over 2048
