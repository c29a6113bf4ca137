"""bench/search_validation.py still runs: its --quick mode (tiny GPT, two
strategies, one round of two steps on 4 gloo processes), its driver's
`main` run in this process, checking that the JSON has the fields
docs/search.md documents and that they are in range. Not their goals: tau and regret of two strategies
measured once on a shared machine say nothing (bench/results/search.json
holds the real run)."""

import json

from benchrun import bench_main


def test_search_validation_quick(tmp_path):
    out = tmp_path / "search.json"
    assert bench_main("search_validation.py", ["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "search_validation"
    assert -1.0 <= doc["kendall_tau"] <= 1.0
    assert doc["regret"] >= 1.0
    m = doc["machine"]
    assert m["cores"] >= 1 and m["processes"] == 4 and m["cpu"]
    assert doc["load_average_start"] is None or len(doc["load_average_start"]) == 3
    assert doc["cost_model"]["core_share"] >= 0.5
    fits = doc["comm_probe"]["median"]["fits"]
    assert set(fits) >= {"p2p", "all_reduce/4", "reduce_scatter/2", "all_gather/4"}
    assert all(f["fixed_s"] > 0 and f["bandwidth_Bps"] > 0 for f in fits.values())
    rows = doc["strategies"]
    assert len(rows) == 2
    names = {r["name"] for r in rows}
    assert doc["predicted_best"] in names and doc["measured_best"] in names
    for r in rows:
        assert r["predicted_s"] > 0 and r["measured_s"] > 0
        assert len(r["runs_s"]) == doc["rounds"] == 1
        assert r["strategy"] and r["pp"] * r["dp"] == 4
