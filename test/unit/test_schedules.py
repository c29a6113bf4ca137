"""Pipeline schedules as data: generators, text form, validation."""

from collections import Counter

import pytest

from piper.diagnostics import PiperError
from piper.tasks import schedules as S
from piper.tasks.schedules import Action

GRID = [(p, m) for p in (2, 4, 8) for m in (p, 2 * p, 4 * p)]


def make(name, p, m):
    return {
        "gpipe": lambda: S.gpipe(p, m),
        "1f1b": lambda: S.one_f_one_b(p, m),
        "interleaved2": lambda: S.interleaved_1f1b(p, m, 2),
        "interleaved3": lambda: S.interleaved_1f1b(p, m, 3),
        "zb_h1": lambda: S.zb_h1(p, m),
        "dualpipe_v": lambda: S.dualpipe_v(p, m),
    }[name]()


NAMES = ["gpipe", "1f1b", "interleaved2", "interleaved3", "zb_h1", "dualpipe_v"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("p,m", GRID)
def test_generated_schedules_validate_and_cover_every_task_once(name, p, m):
    s = make(name, p, m)  # dualpipe_v with m < 2p: the greedy V (no steady state)
    S.validate(s)
    v = {"interleaved2": 2, "interleaved3": 3, "dualpipe_v": 2}.get(name, 1)
    assert (s.p, s.m, s.v, s.stages) == (p, m, v, v * p)
    # counted here, independently of validate()
    count = Counter(a.key for acts in s.orders.values() for a in acts)
    assert set(count.values()) == {1}
    for stage in range(s.stages):
        for mb in range(m):
            assert count[(stage, "F", mb)] == 1
            full = count[(stage, "B", mb)]
            split = (count[(stage, "I", mb)], count[(stage, "W", mb)])
            assert (full, split) in ((1, (0, 0)), (0, (1, 1))), (stage, mb)
    # every action sits on the rank its stage is placed on
    for r, acts in s.orders.items():
        assert all(s.placement[a.stage] == r for a in acts)
    # the printed text reads back to the same schedule
    back = S.explicit(str(s))
    assert back.orders == s.orders and back.placement == s.placement
    assert [[a.overlap for a in back.orders[r]] for r in range(p)] == \
        [[a.overlap for a in s.orders[r]] for r in range(p)]


def test_placements():
    assert S.interleaved_1f1b(4, 8, 2).placement == {s: s % 4 for s in range(8)}
    assert S.dualpipe_v(4, 8).placement == {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 2, 6: 1, 7: 0}
    assert S.one_f_one_b(3, 6).placement == {0: 0, 1: 1, 2: 2}


def test_one_f_one_b_shape():
    s = S.one_f_one_b(4, 8)
    assert S.format_actions(s.orders[0]).startswith("0F0 0F1 0F2 0F3 0B0 0F4 0B1")
    assert S.format_actions(s.orders[3]).startswith("3F0 3B0 3F1 3B1")
    assert S.format_actions(s.orders[0]).endswith("0B4 0B5 0B6 0B7")


def test_zb_h1_defers_weight_gradients_on_late_ranks():
    p, m = 4, 8
    s = S.zb_h1(p, m)
    for r, acts in s.orders.items():
        # rank r ends with r+1 W's in a row: its postponed weight gradients
        tail = [a.kind for a in acts[-(r + 1):]]
        assert tail == ["W"] * (r + 1)
        assert acts[-(r + 2)].kind == "I"
        # no W ever comes before its own I
        seen_i = set()
        for a in acts:
            if a.kind == "I":
                seen_i.add(a.mb)
            if a.kind == "W":
                assert a.mb in seen_i


def test_dualpipe_v_overlaps_forward_and_backward_of_the_two_chunks():
    p, m = 4, 12
    s = S.dualpipe_v(p, m)
    for r, acts in s.orders.items():
        pairs = [st for st in S.steps(acts) if len(st) == 2]
        # steady state: 2 pairs per iteration of phase 4, one per iteration of phase 5,
        # less the very first one of the last rank (run as two plain actions)
        expected = 2 * (m - 2 * p + r + 1) + (p - r - 1) - (1 if r == p - 1 else 0)
        assert len(pairs) == expected
        for f, b in pairs:
            assert f.kind == "F" and b.kind == "B" and b.overlap and not f.overlap
            assert f.stage != b.stage and {s.placement[f.stage], s.placement[b.stage]} == {r}
    # W's are deferred: on the last rank, I's of the ramp-down run back to
    # back and their W's come after all of them
    acts = s.orders[p - 1]
    pos = {a.key: i for i, a in enumerate(acts)}
    gaps = [pos[(st, "W", mb)] - pos[(st, "I", mb)] for (st, k, mb) in pos if k == "I"]
    assert len(gaps) == p and max(gaps) >= p
    assert [a.kind for a in acts[-p:]] == ["W"] * p


def test_text_form_and_pairs_round_trip():
    text = "rank0: 0F0 0F1 0B0 0B1\nrank1: 1F0 1B0 1F1 1B1"
    s = S.explicit(text)
    assert (s.p, s.m, s.stages) == (2, 2, 2)
    assert s.text() == text
    S.validate(s)
    S.validate(S.explicit("rank0: 0F0 0F1&0B0 0B1"))  # independent F and B may pair
    pair = S.parse_action("0F5&7B2")
    assert pair == [Action(0, "F", 5), Action(7, "B", 2)] and pair[1].overlap
    assert S.format_actions(pair) == "0F5&7B2"
    # semicolons, comments and spaces are accepted
    s2 = S.explicit("# two ranks\nrank 0: 0F0 0B0 ; rank1: 1F0 1B0  # done")
    assert s2.text() == "rank0: 0F0 0B0\nrank1: 1F0 1B0"
    dp = S.dualpipe_v(2, 4)
    assert "&" in str(dp) and S.explicit(dp.text()).text() == dp.text()


@pytest.mark.parametrize("text,msg", [
    ("rank0: 0F0 0X1", r"'0X1' is not an action"),
    ("0F0 0B0", r"expected 'rankN: entries'"),
    ("rank0: 0F0 1B0\nrank1: 1F0 0B0", r"stage 1 has actions on rank 0 and rank 1"),
    ("rank1: 1F0 1B0", r"no order for rank 0"),
    ("rank0: 0F0\nrank0: 0B0", r"rank 0 is given two orders"),
])
def test_parse_errors(text, msg):
    with pytest.raises(PiperError, match=msg):
        S.explicit(text)


def test_deadlock_is_reported_with_ranks_and_actions():
    # rank 1 wants microbatch 1 first; rank 0 waits on rank 1's backward of
    # microbatch 0 before it sends microbatch 1 forward.
    s = S.explicit("rank0: 0F0 0B0 0F1 0B1\nrank1: 1F1 1F0 1B0 1B1")
    with pytest.raises(PiperError) as e:
        S.validate(s)
    msg = str(e.value)
    assert "schedule deadlocks" in msg
    assert "rank 0 at 0B0 waits for 1B0 (rank 1)" in msg
    assert "rank 1 at 1F1 waits for 0F1 (rank 0)" in msg


def test_weight_gradient_before_input_gradient_deadlocks():
    s = S.explicit("rank0: 0F0 0W0 0I0")
    with pytest.raises(PiperError, match=r"rank 0 at 0W0 waits for 0I0 \(rank 0\)"):
        S.validate(s)


@pytest.mark.parametrize("text,msg", [
    ("rank0: 0F0 0F1 0B0\nrank1: 1F0 1B0 1F1 1B1", r"missing actions 0B1"),
    ("rank0: 0F0 0F0 0B0\nrank1: 1F0 1B0", r"0F0 appears twice"),
    ("rank0: 0F0 0B0 0I0 0W0", r"either B or I\+W"),
    ("rank0: 0F0 0I0", r"missing actions 0W0"),
])
def test_validation_errors(text, msg):
    with pytest.raises(PiperError, match=msg):
        S.validate(S.explicit(text))


def test_pair_that_depends_on_itself_is_rejected():
    s = S.explicit("rank0: 0F0 0F1 0B1&0B0")  # B&B is not an F&B pair
    with pytest.raises(PiperError, match=r"a pair is one F and one B or I"):
        S.validate(s)
    s = S.explicit("rank0: 0F0&0B0")
    with pytest.raises(PiperError, match=r"one needs the other"):
        S.validate(s)


def test_wrong_placement_and_shape_errors():
    s = S.one_f_one_b(2, 2)
    s.placement = {0: 1, 1: 0}
    with pytest.raises(PiperError, match=r"0F0 is on rank 0 but stage 0 is placed on rank 1"):
        S.validate(s)
    with pytest.raises(PiperError, match=r"microbatches \(6\) must be a multiple of pp \(4\)"
                                         r" for interleaved"):
        S.interleaved_1f1b(4, 6, 2)
    bad = S.Schedule("dualpipe_v", 2, 2, 1, {0: 0, 1: 1}, S.one_f_one_b(2, 2).orders)
    with pytest.raises(PiperError, match=r"dualpipe_v needs 2 chunks per device; schedule has 1"):
        S.validate(bad)
    with pytest.raises(PiperError, match=r"microbatches must be at least 1"):
        S.gpipe(2, 0)
    with pytest.raises(PiperError, match=r"unknown schedule 'zb'"):
        S.named("zb", 2, 4)
    assert S.named("interleaved", 2, 4, 2).orders == S.interleaved_1f1b(2, 4, 2).orders
