"""Strategy search: candidates compile and verify, known answers, pruning, errors.

The search ranks directive lists with the simulator's step time (analytic
costs) under a memory budget (docs/search.md). The cases use the small MLP
example (4 "PP" regions) on 2 or 4 devices, and spaces small enough to check
by hand: a budget that only ZeRO-3 meets, 1F1B against GPipe on memory, and
the closed-form pruning against compiling every candidate.
"""

import functools
import json

import pytest
import torch

import piper
from examples.mlp import MLPConfig, make_mlp, mlp_data
from piper.diagnostics import PiperError
from piper.strategy_search import search_captured


@functools.cache
def captured():
    cfg = MLPConfig(dim=32, layers=4, classes=4, batch=4)
    model = make_mlp(cfg)
    return piper.capture(model, mlp_data(cfg), optimizer=torch.optim.AdamW(model.parameters()))


def run(**kw):
    kw.setdefault("device", "h100")
    return search_captured(captured().module, **kw)


def test_only_zero3_fits():
    space = {"pp": [1], "zero": [0, 1, 2, 3]}
    free = run(devices=2, batches_per_step=2, space=space)
    peaks = {c.zero: c.peak_bytes for c in free.candidates}
    assert peaks[3] < min(peaks[z] for z in (0, 1, 2)), peaks
    tight = run(devices=2, batches_per_step=2, space=space, memory_per_device=peaks[3])
    assert [c.zero for c in tight.ranked] == [3]
    assert tight.best.strategy[-1].to_dict() == {"directive": "shard", "stage": 3}
    assert all(c.status == "pruned" and "budget" in c.reason for c in tight.candidates[1:])
    # the chosen plan compiles as it is printed: the JSON strategy= takes
    text = tight.table().splitlines()[-1].removeprefix("best: ")
    cfg = MLPConfig(dim=32, layers=4, classes=4, batch=4)
    model = make_mlp(cfg)
    plan = piper.compile(model, mlp_data(cfg), optimizer=torch.optim.AdamW(model.parameters()),
                         strategy=text)  # JSON text, as printed
    assert json.loads(text)[-1] == {"directive": "shard", "stage": 3}
    assert "shard" in plan.summary()


def test_1f1b_beats_gpipe_on_memory_with_equal_stages():
    space = {"pp": [2], "schedule": ["gpipe", "1f1b"]}
    free = run(devices=2, batches_per_step=8, space=space)
    peak = {c.schedule: c.peak_bytes for c in free.candidates}
    assert peak["1f1b"] < peak["gpipe"], peak
    tight = run(devices=2, batches_per_step=8, space=space, memory_per_device=peak["1f1b"])
    assert tight.best.schedule == "1f1b" and len(tight.ranked) == 1


def test_pruning_by_bounds_never_drops_what_fits():
    space = {"pp": [1, 2], "zero": [0, 1, 3], "schedule": ["1f1b"]}
    free = run(devices=4, batches_per_step=4, space=space)
    budget = sorted(c.peak_bytes for c in free.candidates)[len(free.candidates) // 2]
    pruned = run(devices=4, batches_per_step=4, space=space, memory_per_device=budget)
    full = run(devices=4, batches_per_step=4, space=space, memory_per_device=budget,
               prune_with_bounds=False)
    assert [c.name for c in pruned.ranked] == [c.name for c in full.ranked]
    assert pruned.ranked and len(pruned.ranked) < len(pruned.candidates)
    for c in pruned.candidates:  # a bound is never above the exact peak
        exact = next(f for f in full.candidates if f.name == c.name).peak_bytes
        assert c.bound_bytes <= exact, (c.name, c.bound_bytes, exact)


@pytest.mark.parametrize("kw, message", [
    (dict(devices=2, batches_per_step=2, space={"pp": [1]}, memory_per_device=1000),
     "search: no candidate fits in 1000 B a device; the smallest lower bound is "),
    (dict(devices=2, batches_per_step=2, space={"pp": [1], "zero": [0, 1]},
          memory_per_device=1000, prune_with_bounds=False),
     "the smallest peak found is "),
    (dict(devices=5, batches_per_step=4), "search: no strategy for 5 devices and 4 batches"),
    (dict(devices=2, space={"tp": [2]}), "search: unknown space key 'tp'"),
    (dict(devices=2, space={"schedule": ["zb-h2"]}), "unknown schedule 'zb-h2'"),
    (dict(devices=0), "search: devices must be an integer of at least 1, got 0"),
    (dict(devices="2"), "search: devices must be an integer of at least 1, got '2'"),
])
def test_bad_input(kw, message):
    with pytest.raises(PiperError) as e:
        run(**kw)
    assert message in str(e.value)


def test_piper_search_is_the_function_after_its_module_is_imported():
    import piper.strategy_search  # noqa: F401  (a submodule named `search` would shadow it)

    assert callable(piper.search) and piper.search.__name__ == "search"
