"""Every option of every directive is checked where the directive is made.

A bad value, written in Python (`piper.split(n="4")`) or in JSON
(`{"directive": "split", "n": "4"}`), is one PiperError naming the
directive, the option and the value: a bool is not an integer, a float is
not an integer, a string is not a number (nor a list of numbers), digits
are ASCII, counts have their limits. The table goes through
piper/directives/*.py option by option.
"""

import json

import pytest

import piper
from piper.diagnostics import PiperError
from piper.directives.strategy import MAX_JSON_DEPTH, load

NOT_COUNTS = [0, -1, True, 2.0, 2.5, "2", "\u0662", None, 10**9]  # "\u0662": Arabic-Indic 2
NOT_INDEXES = [-1, True, 0.0, "0", "\u0660", 10**9]
NOT_NAMES = ["", "d p", "dp;", "\u00e9p", "0dp", 1, None, True]
NOT_STAGE_FILTERS = [3.5, [0], {"PP": "0"}, {"PP": True}, {"PP": -1}, {"PP": 1.0},
                     {"PASS": "F"}, {"MB": 0}, "\u0660F0", "[PP=\u0660]"]

# (directive, the other options, option, bad values)
TABLE = [
    ("place", {}, "pp", NOT_COUNTS[:-2] + [10**9]),
    ("place", {"pp": 2}, "placement", ["V", "", 1, None]),
    ("place", {"pp": 2}, "stream", NOT_NAMES),
    ("place", {"filter": {"PP": 0}}, "devices",
     [[True], [0.0], ["0"], "0", "10", [0, 1], [], [-1], [10**9], 0.0]),
    ("place", {"devices": [0]}, "filter", NOT_STAGE_FILTERS),
    ("split", {}, "n", NOT_COUNTS),
    ("split", {"n": 2}, "dim", [1, -1, 0.0, False, "0"]),
    ("split", {"n": 2}, "filter", NOT_STAGE_FILTERS),
    ("replicate", {}, "n", [x for x in NOT_COUNTS if x is not None]),
    ("replicate", {}, "devices", [x for x in NOT_COUNTS if x is not None]),
    ("replicate", {"n": 2}, "axis", NOT_NAMES),
    ("replicate", {"n": 2}, "stream", NOT_NAMES),
    ("replicate", {"n": 2}, "bucket_bytes", [-1, 1.5, True, "1024", None]),
    ("replicate", {"n": 2}, "filter", NOT_STAGE_FILTERS),
    ("shard", {}, "stage", [0, 4, True, 1.0, "1", "\u0661", None]),
    ("shard", {}, "axis", NOT_NAMES),
    ("shard", {}, "gather_stream", NOT_NAMES),
    ("shard", {}, "reduce_stream", NOT_NAMES),
    ("shard", {"stage": 3}, "prefetch", [-2, 1.5, True, "1", None]),
    ("shard", {}, "pack", [1, 0, "true", None]),
    ("shard", {"stage": 3}, "reshard_after_forward", [1, 0, "false", None]),
    ("shard", {}, "filter", NOT_STAGE_FILTERS),
    ("order", {"tasks": ["0F0"]}, "device", NOT_INDEXES),
    ("order", {"device": 0}, "tasks",
     [42, "0X0", "\u0660F0", ["0F0", 3], [["0F0", "0F1", "0F2"]], ["\u0660F0"], [{"PP": "0"}],
      [{"PASS": "Q"}], {"PP": 0}]),
    ("order", {}, "schedule", ["1F1B", "nope", 1, True, ["1f1b"]]),
    ("order", {}, "text", ["rank0: \u0660F0", "rank\u0660: 0F0", "0F0 0B0", "rank0: 0X0", 1,
                           ["rank0: 0F0"]]),
    ("recompute", {}, "stages",
     ["0", "10", 0, True, [True], [0.5], ["1"], [-1], [10**9], ["\u0660"], {"0": 1}]),
    ("expert_parallel", {}, "n", NOT_COUNTS),
    ("expert_parallel", {"n": 2}, "axis", NOT_NAMES),
    ("fuse", {}, "kernels", ["cuda", "", 1, True]),
    ("fuse", {}, "filter", [3, 2.5, {"MB": 0}, {"PP": "1"}, {"PASS": "Q"}, "\u0660F0"]),
]

CASES = [pytest.param(d, base, opt, v, id=f"{d}-{opt}-{v!r}")
         for d, base, opt, values in TABLE for v in values]


def _shown(v):
    """The value and its parts: the message shows the offending one."""
    yield repr(v)
    if isinstance(v, list | tuple):
        for x in v:
            yield from _shown(x)
    elif isinstance(v, dict):  # a filter is shown in its JSON form
        yield json.dumps(v)
        for x in v.values():
            yield from _shown(x)
    if isinstance(v, str):  # order text: the token at fault
        yield from (repr(t) for t in v.split())


def _check(msg: str, directive: str, option: str, value):
    assert f"{directive}: {option}" in msg, msg
    assert any(s in msg for s in _shown(value)), msg


@pytest.mark.parametrize("directive,base,option,value", CASES)
def test_bad_option_in_python(directive, base, option, value):
    with pytest.raises(PiperError) as e:
        getattr(piper, directive)(**base, **{option: value})
    _check(e.value.message, directive, option, value)


@pytest.mark.parametrize("directive,base,option,value", CASES)
def test_bad_option_in_json(directive, base, option, value):
    text = json.dumps([{"directive": directive, **base, option: value}])
    with pytest.raises(PiperError) as e:
        load(text)
    msg = e.value.message
    assert msg.startswith("strategy: entry 0: "), msg
    _check(msg, directive, option, json.loads(json.dumps(value)))


def test_json_and_python_give_the_same_message():
    with pytest.raises(PiperError) as py:
        piper.recompute(stages="10")
    with pytest.raises(PiperError) as js:
        load('[{"directive": "recompute", "stages": "10"}]')
    assert py.value.message == "recompute: stages must be a list of stage numbers, got '10'"
    assert js.value.message == "strategy: entry 0: " + py.value.message


def test_json_positional_shortcuts_do_not_apply():
    """`place(2)` is pp=2 and `order("1f1b")` a schedule in Python; in JSON
    a value belongs to the field it is written under."""
    with pytest.raises(PiperError, match="place: filter: expected a dict"):
        load('[{"directive": "place", "filter": 2}]')
    with pytest.raises(PiperError, match="order: device must be an integer >= 0, got '1f1b'"):
        load('[{"directive": "order", "device": "1f1b"}]')


@pytest.mark.parametrize("directive", ["place", "split", "replicate", "shard", "order",
                                       "recompute", "split_backward", "fuse",
                                       "expert_parallel"])
def test_unknown_json_option(directive):
    with pytest.raises(PiperError, match=rf"entry 0 \({directive}\) has unknown fields \['size'\]"):
        load(json.dumps([{"directive": directive, "size": 1}]))


@pytest.mark.parametrize("directive", [[], {}, 3, None, "Split"])
def test_json_directive_name_must_be_known(directive):
    with pytest.raises(PiperError, match='entry 0 must be an object with "directive" one of'):
        load(json.dumps([{"directive": directive}]))


@pytest.mark.parametrize("strategy", [42, 4.5, b"[]", {"directive": "split", "n": 2},
                                      piper.split(2)])
def test_strategy_must_be_a_list_json_text_or_path(strategy):
    with pytest.raises(PiperError) as e:
        load(strategy)
    assert "strategy must be a list of directives, JSON text, or the path of a .json file" \
        in e.value.message
    if strategy == piper.split(2):
        assert "put it in a list" in e.value.message


def test_deeply_nested_json_is_refused_with_its_position():
    with pytest.raises(PiperError) as e:
        load("[" * 100000 + "]" * 100000)
    assert e.value.message == f"strategy: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    assert e.value.location == f"strategy:1:{MAX_JSON_DEPTH + 1}"
    line = ' {"directive": "order", "device": 0, "tasks": '
    with pytest.raises(PiperError) as e:
        load("[\n" + line + "[" * 40 + "]" * 40 + "}\n]")
    # the list and the object are 2 levels: the (MAX - 1)th bracket of tasks is one too many
    assert e.value.location == f"strategy:2:{len(line) + MAX_JSON_DEPTH - 1}"
    # brackets inside strings do not count
    ok = json.dumps([{"directive": "order", "device": 0, "tasks": ["[PP=0 PASS=F]"] * 50}])
    assert len(load(ok)[0][0].tasks) == 50


def test_order_text_is_parsed_when_made():
    with pytest.raises(PiperError, match="order: text: rank 0: filter: '\u0660F0' is neither an action"):
        piper.order(text="rank0: \u0660F0")
    assert piper.order(text="rank0: 0F0 0B0\nrank1: 1F0 1B0").text == \
        "rank0: 0F0 0B0; rank1: 1F0 1B0"
