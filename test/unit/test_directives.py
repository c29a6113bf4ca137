"""The filter-based strategy language: filters, core directives, generators.

Filters match tasks by tag; generators (place(pp=...), order(schedule=...))
expand into core directives whose JSON compiles to the identical plan; core
options reach the IR (streams, gradient buckets, ZeRO-3 prefetch); bad
strategies end in one error naming the directive by position and text.
Multi-process parity of these strategies is in test_strategies.py.
"""

import functools
import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import piper
from examples.mlp import MLPConfig, make_mlp, mlp_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.tasks.filters import Filter, parse_text
from piper.directives.strategy import compile_plan, compile_strategy, from_json, load, to_json
from piper.ir import print_module


@functools.cache
def captured(layers: int, dim: int = 4):
    cfg = MLPConfig(dim=dim, layers=layers, classes=4, batch=2)
    model = make_mlp(cfg)
    return piper.capture(model, mlp_data(cfg), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def compiled(strategy, layers=2, dim=4):
    module = captured(layers, dim).module.clone()
    compile_plan(module, strategy)
    return module


def calls(module, device):
    return [op for op in programs(module)[device].body.block.ops if isinstance(op, sched.CallOp)]


# ---------------------------------------------------------------- filters


def test_filter_matching():
    f = Filter.of({"PP": 1, "PASS": "F"})
    assert f.matches(1, "F", 0) and f.matches(1, "F", 7)
    assert not f.matches(1, "B", 0) and not f.matches(0, "F", 0)
    b = Filter.of({"PASS": "B"})  # a whole backward: B, or both halves where split
    assert b.matches(0, "B", 0) and b.matches(0, "I", 0) and b.matches(0, "W", 0)
    assert Filter.of({"PASS": "BI"}) == Filter.of({"PASS": "I"})  # I/W are aliases
    assert not Filter.of({"PASS": "BI"}).matches(0, "W", 0)
    assert Filter.of({"PP": [0, 2]}).matches(2, "OPT") and not Filter.of({"PP": [0, 2]}).matches(1)
    ep = Filter.of({"EP": "*"})  # a wildcard needs the tag to be there
    assert ep.matches(0, "F", 0, {"EP": {3}}) and not ep.matches(0, "F", 0, {})
    assert Filter.of({"EP": [1, 2]}).matches(0, "F", 0, {"EP": {0, 2}})
    assert Filter.of("*").matches(5, "W", 3)
    # a stage (no kind, no microbatch) never matches a filter on PASS or MB
    assert not Filter.of({"MB": 0}).matches(0)


@pytest.mark.parametrize("spec,text", [
    ({"PP": 1, "PASS": "F", "MB": 3}, "1F3"),
    ({"PP": 0, "PASS": "W", "MB": 2}, "0W2"),
    ({"PASS": "F", "PP": [0, 2]}, "[PP=0|2 PASS=F]"),
    ({"MB": "*", "EP": 1}, "[MB=* EP=1]"),
    ("*", "[*]"),
])
def test_filter_text_and_json_round_trip(spec, text):
    f = Filter.of(spec)
    assert f.text() == text
    assert parse_text(text) == f
    assert Filter.of(json.loads(json.dumps(f.to_json()))) == f


@pytest.mark.parametrize("spec,message", [
    ({"PASS": "X"}, "PASS 'X' is not one of F, B, BI, BW, OPT"),
    ({"PP": -1}, "PP takes a non-negative integer"),
    ({"PP": "one"}, "PP takes a non-negative integer"),
    ({"PP": []}, "PP has an empty list"),
    ({"1x": 0}, "tag name '1x' is not an identifier"),
    ("0Q1", "neither an action like 1F3"),
    ("[PP=1 PP=2]", "names PP twice"),
    (3, "expected a dict"),
])
def test_filter_errors(spec, message):
    with pytest.raises(PiperError, match=re.escape(message)):
        Filter.of(spec)


# ---------------------------------------------------------------- expansion

SCHEDULES = {  # name -> (chunks per device, split backward, placement)
    "gpipe": (1, False, "loop"),
    "1f1b": (1, False, "loop"),
    "interleaved": (2, False, "loop"),
    "zb-h1": (1, True, "loop"),
    "dualpipe-v": (2, True, "v"),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_expanded_schedule_json_compiles_to_the_identical_plan(name, tmp_path):
    chunks, split_bw, placement = SCHEDULES[name]
    strategy = ([piper.split_backward()] if split_bw else []) + [
        piper.place(pp=2, placement=placement), piper.split(4), piper.order(schedule=name)]
    core = piper.expand(strategy, captured(2 * chunks))
    assert not any(getattr(d, "generator", False) for d in core)
    orders = [d for d in core if isinstance(d, piper.directives.strategy.Order)]
    assert [o.device for o in orders] == [0, 1]
    text = to_json(core)
    assert from_json(text) == core
    path = tmp_path / "strategy.json"
    path.write_text(text)
    directives, source = load(str(path))
    assert source == str(path) and directives == core
    want = compiled(strategy, 2 * chunks)
    got = compiled(directives, 2 * chunks)
    assert print_module(got) == print_module(want)


def test_expand_without_a_model_needs_the_stage_count():
    core = piper.expand([piper.place(pp=2), piper.split(2), piper.order("gpipe")], stages=2)
    assert to_json(core).splitlines()[1:-1] == [
        ' {"directive": "place", "filter": {"PP": 0}, "devices": [0]},',
        ' {"directive": "place", "filter": {"PP": 1}, "devices": [1]},',
        ' {"directive": "split", "n": 2},',
        ' {"directive": "order", "device": 0, "tasks": ["0F0", "0F1", "0B0", "0B1"]},',
        ' {"directive": "order", "device": 1, "tasks": ["1F0", "1F1", "1B0", "1B1"]}',
    ]
    with pytest.raises(PiperError, match="give the model"):
        piper.expand([piper.place(pp=2)])


def test_a_printed_directive_is_its_json_and_reads_back(capsys):
    """`print(core)` shows the JSON docs/directives.md promises; the printed
    list is a JSON strategy."""
    core = piper.expand([piper.place(pp=2), piper.split(2), piper.order("gpipe")], stages=2)
    assert str(core[2]) == repr(core[2]) == '{"directive": "split", "n": 2}'
    print(core)
    printed = capsys.readouterr().out
    assert printed.startswith('[{"directive": "place", "filter": {"PP": 0}, "devices": [0]}, ')
    assert load(printed) == (core, "strategy")
    every = [piper.place(pp=2, placement="v", stream="s1"), piper.place({"PP": [0, 1]}, devices=2),
             piper.split(4), piper.replicate(2, bucket_bytes=1024, stream="grads"),
             piper.shard(3, prefetch=1, pack=False), piper.recompute([0, 1]),
             piper.split_backward(), piper.order(schedule="1f1b"),
             piper.order(text="rank0: 0F0 0B0; rank1: 1F0 1B0"),
             piper.order(1, ["1F0", ["1F1", "0B0"], {"PASS": "B", "MB": [0, 1]}, "[EP=*]"]),
             piper.fuse("aten", {"PASS": "OPT"}), piper.expert_parallel(2, axis="ep2")]
    assert load(str(every)) == (every, "strategy")
    assert load(str(every[3:4]))[0][0].bucket_bytes == 1024


def test_wildcard_order_is_gpipe():
    """Per device: every forward, then every backward, is GPipe."""
    gpipe = compiled([piper.place(pp=2), piper.split(4), piper.order(schedule="gpipe")])
    core = compiled([piper.place({"PP": 0}, devices=[0]), piper.place({"PP": 1}, devices=[1]),
                     piper.split(4),
                     piper.order(0, [{"PASS": "F"}, {"PASS": "B"}]),
                     piper.order(1, ["[PASS=F]", "[PASS=B]"])])
    assert print_module(core) == print_module(gpipe)


class Tagged(nn.Module):
    """Three PP stages; stages 0 and 2 also carry tag SIDE (0 and 1)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x, y):
        with piper.annotate("PP"), piper.annotate("SIDE", 0):
            h = F.relu(self.a(x))
        with piper.annotate("PP"):
            h = F.relu(self.b(h))
        with piper.annotate("PP"), piper.annotate("SIDE", 1):
            return F.cross_entropy(self.c(h), y)


def test_filters_on_model_tags_place_and_order():
    model = Tagged()
    step = piper.capture(model, (torch.randn(2, 4), torch.tensor([0, 3])),
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    strategy = [
        piper.place({"SIDE": "*"}, devices=[0]),  # stages 0 and 2
        piper.place({"PP": 1}, devices=[1]),
        piper.split(2),
        piper.order(0, [{"SIDE": 0, "PASS": "F"}, {"SIDE": 1, "PASS": ["F", "B"]},
                        {"PP": 0, "PASS": "B"}]),
        piper.order(1, [{"PASS": "F"}, {"PASS": "B"}]),
    ]
    module = step.module.clone()
    core = compile_strategy(module, strategy)
    assert [c.task.data for c in calls(module, 0) if "OPT" not in c.task.data] == \
        ["0F0", "0F1", "2F0", "2B0", "2F1", "2B1", "0B0", "0B1"]
    assert from_json(to_json(core)) == core
    again = step.module.clone()
    compile_plan(again, from_json(to_json(core)))
    assert print_module(again) == print_module(module)
    with pytest.raises(PiperError, match=r"strategy\[0\]: error: directive place\(\{\"SIDE\": 2\}, "
                                         r"devices=\[0\]\): place: filter \{\"SIDE\": 2\} matches "
                                         r"no stage"):
        compile_plan(step.module.clone(), [piper.place({"SIDE": 2}, devices=[0])])


# ---------------------------------------------------------------- errors

PLACES = [piper.place({"PP": 0}, devices=[0]), piper.place({"PP": 1}, devices=[1])]
ONE_F_ONE_B_1 = piper.order(1, "1F0 1B0 1F1 1B1")

ERRORS = {
    "filter matches no stage": (
        [piper.place({"PP": 5}, devices=[0])],
        r'strategy[0]: error: directive place({"PP": 5}, devices=[0]): place: filter {"PP": 5} '
        r"matches no stage (the model has stages 0..1)"),
    "stage placed twice": (
        [piper.place({"PP": 0}, devices=[0]), piper.place({"PP": [0, 1]}, devices=[1])],
        r'strategy[1]: error: directive place({"PP": [0, 1]}, devices=[1]): place: stage 0 is '
        r'already placed by strategy[0] place({"PP": 0}, devices=[0])'),
    "device out of range": (
        [piper.place({"PP": 0}, devices=[0]), piper.place({"PP": 1}, devices=[2])],
        "place: pipeline device 1 runs no stage; devices must be 0..2"),
    "stage not placed": (
        [piper.place({"PP": 0}, devices=[0])], "place: no place directive covers stage 1"),
    "unknown tag": (
        [piper.place({"XP": 0}, devices=[0])],
        "names tag 'XP', which the model does not have (tags: PP; and PASS, MB)"),
    "order misses a task": (
        PLACES + [piper.split(2), piper.order(0, ["0F0", "0F1", "0B0"]), ONE_F_ONE_B_1],
        "strategy[3]: error: directive order(0, [0F0 0F1 0B0]): order: rank 0 order does not "
        "match its tasks; missing 0B1"),
    "order repeats a task": (
        PLACES + [piper.split(2), piper.order(0, "0F0 0F1 0B0 0B1 0F0"), ONE_F_ONE_B_1],
        "strategy[3]: error: directive order(0, [0F0 0F1 0B0 0B1 0F0]): order: rank 0 order "
        "repeats 0F0 (entry 4; entry 0 already ordered it)"),
    "order entry matches no task": (
        PLACES + [piper.split(2), ONE_F_ONE_B_1, piper.order(0, "0F0 0F1 0B0 0B1 1F0")],
        "strategy[4]: error: directive order(0, [0F0 0F1 0B0 0B1 1F0]): order: rank 0 order "
        "entry 4 (1F0) matches no task of device 0"),
    "order for a device out of range": (
        PLACES + [piper.order(0, "0F0 0B0"), piper.order(1, "1F0 1B0"), piper.order(2, "1F0")],
        "strategy[4]: error: directive order(2, [1F0]): order: device 2 is out of range"),
    "order for a device missing": (
        PLACES + [piper.order(0, "0F0 0B0")], "order: no order for pipeline device 1"),
    "mesh size does not divide": (
        [piper.replicate(3), piper.shard(1)],
        "strategy[1]: error: directive shard(): shard: 'blocks.0.fc.weight' has 16 elements, "
        "which do not divide over 3 replicas"),
    # (microbatches that do not divide over pp for interleaved: test_plan_schedules.py,
    # which has a model with 2 stages per device)
    "interleaved given one chunk": (
        [piper.place(pp=2), piper.split(3), piper.order("interleaved")],
        "strategy[2]: error: directive order(schedule='interleaved'): schedule: 'interleaved' "
        "needs at least 2 stages per device; the plan has 1"),
    "two chunks needed, one given": (
        [piper.split_backward(), piper.place(pp=2), piper.split(4), piper.order("dualpipe-v")],
        "strategy[3]: error: directive order(schedule='dualpipe-v'): schedule: 'dualpipe-v' "
        "needs 2 chunks per device; the plan has 1"),
    "split of part of the model": (
        [piper.split(2, {"PP": 0})],
        'split: filter {"PP": 0} selects stages [0] of 0..1; it applies to the whole model'),
    "bucketed gradients sharded": (
        [piper.replicate(2, bucket_bytes=1024), piper.shard(1)],
        "directive shard(): shard: the gradients are bucketed"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_strategy_names_the_directive(case):
    strategy, message = ERRORS[case]
    with pytest.raises(PiperError) as e:
        compiled(strategy)
    assert message in e.value.render()


@pytest.mark.parametrize("make,message", [
    (lambda: piper.place({"PASS": "F"}, devices=[0]), "PASS is a property of tasks"),
    (lambda: piper.place({"PP": 0}, devices=[0, 1]), "devices must name one pipeline device"),
    (lambda: piper.order(0, [{"PASS": "Q"}]), "PASS 'Q' is not one of"),
    (lambda: piper.order(0, []), "empty task list"),
    (lambda: piper.shard(1, prefetch=1), "prefetch gathers parameters early, so it needs stage=3"),
    (lambda: piper.split(2, dim=1), "only dim=0"),
    (lambda: piper.replicate(2, bucket_bytes=-1), "bucket_bytes must be an integer >= 0"),
    (lambda: from_json('[{"directive": "place", "filter": {"PP": 0}}]'),
     "strategy: entry 0: place: devices must name one pipeline device"),
    (lambda: from_json('[{"directive": "order", "device": 0, "tasks": ["0X0"]}]'),
     "strategy: entry 0: order: tasks[0]: '0X0' is neither an action"),
    (lambda: from_json('[{"directive": "split", "n": 2, "size": 3}]'),
     "strategy: entry 0 (split) has unknown fields ['size']"),
    (lambda: load("/nonexistent/strategy.json"), "cannot read /nonexistent/strategy.json"),
    (lambda: piper.shard(True), "shard: stage must be 1, 2 or 3, got True"),
    (lambda: piper.shard(1.0), "shard: stage must be 1, 2 or 3, got 1.0"),
    (lambda: piper.place(pp=0), "place: pp must be an integer >= 1, got 0"),
    (lambda: piper.split(10**9), "split: n must be at most 4096, got 1000000000"),
    (lambda: piper.replicate(10**6), "replicate: n must be at most 4096, got 1000000"),
    (lambda: piper.recompute(stages="ab"), "recompute: stages must be a list of stage numbers"),
    (lambda: piper.recompute(stages=[0, "1"]), "recompute: stages[1] must be an integer >= 0, got '1'"),
    (lambda: from_json('[{"directive": "shard", "stage": true}]'), "stage must be 1, 2 or 3"),
    # found by the fuzzer (docs/fuzzing.md): an internal error or a hang before
    (lambda: from_json('[{"directive": ["place"]}]'), 'entry 0 must be an object with "directive"'),
    (lambda: from_json('[{"directive": "order", "schedule": [0, 1]}]'),
     "strategy: entry 0: order: schedule must be the name of a schedule (gpipe, 1f1b, "
     "interleaved, zb-h1, dualpipe-v), got [0, 1]"),
    (lambda: from_json('[{"directive": "shard", "pack": "yes"}]'),
     "strategy: entry 0: shard: pack must be true or false, got 'yes'"),
    (lambda: piper.place({"PP": 3}, devices=[2**63]), "place: devices[0] must be at most 4095"),
    (lambda: piper.order(2**63, ["0F0"]), "order: device must be at most 4095"),
    (lambda: from_json('[{"directive": "recompute", "stages": [true, 2]}]'),
     "strategy: entry 0: recompute: stages[0] must be an integer >= 0, got True"),
])
def test_bad_directive_is_refused_when_made(make, message):
    with pytest.raises(PiperError, match=re.escape(message)):
        make()


def test_a_strategy_file_that_is_not_utf8_is_located(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(b'[{"directive": "split", "n": 2}]\n\xff')
    with pytest.raises(PiperError) as e:
        load(str(path))
    assert e.value.render() == (f"{path}: error: strategy: the file is not UTF-8 text "
                                "(byte 0xff on line 2)")


# ---------------------------------------------------------------- options reach the IR


def test_streams_reach_the_device_programs():
    module = compiled([piper.place({"PP": 0}, devices=[0], stream="compute0"),
                       piper.place({"PP": 1}, devices=[1]),
                       piper.replicate(2, stream="grads"),
                       piper.shard(3, gather_stream="gather", reduce_stream="reduce")], dim=16)
    progs = programs(module)
    streams = {(op.task.data, op.stream.data) for op in calls(module, 0)}
    assert ("0F0", "compute0") in streams and ("0B0", "compute0") in streams
    assert {op.stream.data for op in calls(module, 2)} == {"compute"}
    kinds = {(op.kind.data, op.stream.data) for p in progs.values() for op in p.body.block.ops
             if isinstance(op, sched.CollectiveOp)}
    assert ("all_gather", "gather") in kinds and ("reduce_scatter", "reduce") in kinds
    assert ("all_reduce", "comm") in kinds  # the loss, not a gradient


def test_bucketed_replicate_packs_each_stages_gradients():
    def collectives(module):
        return [op for op in programs(module)[0].body.block.ops
                if isinstance(op, sched.CollectiveOp) and op.kind.data == "all_reduce"]

    plain = compiled([piper.replicate(2)], layers=1, dim=16)
    bucketed = compiled([piper.replicate(2, bucket_bytes=1200, stream="grads")], layers=1, dim=16)
    # 4 gradients (1024, 64, 256, 16 bytes) -> 2 buckets; plus the loss
    assert len(collectives(plain)) == 5 and len(collectives(bucketed)) == 3
    assert sorted(op.bytes for op in collectives(bucketed) if op.stream.data == "grads") == \
        [272, 1088]
    names = [c.task.data for c in calls(bucketed, 0)]
    assert names.count("pack") == 2 and names.count("unpack") == 2
    one_each = compiled([piper.replicate(2, bucket_bytes=8)], layers=1, dim=16)
    assert len(collectives(one_each)) == 5  # every gradient bigger than a bucket: no packing


def test_zero3_prefetch_starts_each_gather_k_calls_ahead():
    def ahead_of_use(module) -> list[int]:
        """For each parameter all_gather on device 0: calls between its start and its user."""
        ops = list(programs(module)[0].body.block.ops)
        out = []
        for i, op in enumerate(ops):
            if isinstance(op, sched.CollectiveOp) and op.kind.data == "all_gather":
                waited = {o.result for o in ops if isinstance(o, sched.WaitOp)
                          and o.handle == op.handle}
                user = next(j for j, o in enumerate(ops) if j > i and isinstance(o, sched.CallOp)
                            and any(a in waited for a in o.args))
                if ops[user].task.data == "unpack":  # a packed gather: the task reading its unpack
                    waited = set(ops[user].results)
                    user = next(j for j, o in enumerate(ops) if j > user
                                and isinstance(o, sched.CallOp) and any(a in waited for a in o.args))
                out.append(sum(1 for o in ops[i + 1:user] if isinstance(o, sched.CallOp)
                               and o.task.data not in ("pack", "unpack")))
        return out

    base = [piper.split(4), piper.replicate(2)]
    eager = compiled(base + [piper.shard(3)], layers=2, dim=16)
    lazy = compiled(base + [piper.shard(3, prefetch=0)], layers=2, dim=16)
    ahead = compiled(base + [piper.shard(3, prefetch=1)], layers=2, dim=16)
    assert max(ahead_of_use(eager)) > 1  # without prefetch, all gathers start at the top
    assert set(ahead_of_use(lazy)) == {0}
    assert set(ahead_of_use(ahead)) <= {0, 1} and 1 in ahead_of_use(ahead)


def test_zero3_prefetch_is_an_ir_property():
    from piper.ir import context
    from piper.passes.graph_to_dist import ConvertGraphToDist
    from piper.passes.pipeline_split import PipelineSplit
    from piper.passes.split_replicate import Replicate
    from piper.passes.shard import Zero

    module = captured(2, 16).module.clone()
    ctx = context()
    for p in (PipelineSplit(), ConvertGraphToDist(), Replicate(n=2), Zero(stage=3, prefetch=2)):
        p.apply(ctx, module)
    text = print_module(module)
    assert text.count("dist.all_gather") == text.count("prefetch 2") > 0


def test_shard_directives_on_disjoint_stages():
    def scatters(pack: bool) -> dict[int, int]:
        module = compiled([piper.replicate(2), piper.split(2),
                           piper.shard(1, filter={"PP": 0}, pack=pack),
                           piper.shard(2, filter={"PP": 1}, pack=pack)])
        return {d: sum(1 for op in programs(module)[d].body.block.ops
                       if isinstance(op, sched.CollectiveOp) and op.kind.data == "reduce_scatter")
                for d in (0, 2)}

    # stage 0 (ZeRO-1, 2 parameters) scatters each summed gradient once;
    # stage 1 (ZeRO-2, 4 parameters) each microbatch's gradient
    assert scatters(pack=False) == {0: 2, 2: 4 * 2}
    # packed: one reduce_scatter per stage (ZeRO-1) and per microbatch (ZeRO-2)
    assert scatters(pack=True) == {0: 1, 2: 2}
    with pytest.raises(PiperError, match=r"strategy\[3\]: error: directive shard\(stage=2, "
                                         r"filter=\{\"PP\": \[0, 1\]\}\): shard: stage 0 is "
                                         r"already sharded by strategy\[2\]"):
        compiled([piper.replicate(2), piper.split(2), piper.shard(1, filter={"PP": 0}),
                  piper.shard(2, filter={"PP": [0, 1]})])


def test_replicate_devices_reads_from_json_as_from_python():
    assert from_json('[{"directive": "replicate", "devices": 3}]') == [piper.replicate(devices=3)]
    with pytest.raises(PiperError, match="n=2 and devices=3 disagree"):
        from_json('[{"directive": "replicate", "n": 2, "devices": 3}]')
