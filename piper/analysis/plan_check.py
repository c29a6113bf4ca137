"""Checks of per-device programs (sched level) that no single op can make.

- every value is defined before it is used, in its own program;
- every send has exactly one matching receive (peer, tag, type) and back;
- the members of a group run their collectives in the same order;
- no deadlock: a lockstep run of all programs, where a wait blocks until
  its peers have started the matching communication, always makes progress.

Errors name the devices and instructions involved.
"""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.ir import Operation

from piper.diagnostics import PiperError
from piper.dialects import sched


def programs(module: ModuleOp) -> dict[int, sched.ProgramOp]:
    out = {}
    for op in module.body.block.ops:
        if isinstance(op, sched.ProgramOp):
            d = op.device.data
            if d in out:
                raise PiperError(f"two programs for device {d}")
            out[d] = op
    return out


# lower-dist-to-sched{replicas=first} records the plan's device count here
# when it lowers the programs of some of them only
DEVICES_ATTR = "piper.devices"


def plan_devices(module: ModuleOp, lowered: int) -> int:
    """How many devices a lowered plan runs on: `lowered` (its programs)
    unless it was lowered with replicas=first."""
    attr = module.attributes.get(DEVICES_ATTR)
    return attr.value.data if isinstance(attr, IntegerAttr) else lowered


def describe(op: Operation) -> str:
    if isinstance(op, sched.CallOp):
        return f"call {op.task.data}"
    if isinstance(op, sched.SendOp):
        return f"send to {op.peer.data} tag {op.tag.data}"
    if isinstance(op, sched.RecvOp):
        return f"recv from {op.peer.data} tag {op.tag.data}"
    if isinstance(op, sched.CollectiveOp):
        return f"{op.kind.data} group {op.members} tag {op.tag.data}"
    if isinstance(op, sched.WaitOp):
        return "wait for " + describe(op.handle.owner)
    return op.name


# The instructions the communication checks look at: sends, receives,
# collectives and the waits for them.
_COMM = sched.SendOp | sched.RecvOp | sched.CollectiveOp | sched.WaitOp


def check_plan(module: ModuleOp) -> None:
    progs = programs(module)
    if not progs:
        raise PiperError("verify-plan: no sched.program in the module; run lower-dist-to-sched first")
    whole = plan_devices(module, len(progs))
    if whole != len(progs):
        raise PiperError(f"verify-plan: the module holds the programs of {len(progs)} of its "
                         f"{whole} devices (lowered with replicas=first, for the simulator); "
                         f"lower it with every replica to verify or run it")
    # Each program is read once: its instructions, and its communication
    # instructions with their indices (what the last three checks walk).
    ops = {d: list(p.body.block.ops) for d, p in progs.items()}
    comms = {d: [(i, op) for i, op in enumerate(seq) if isinstance(op, _COMM)]
             for d, seq in ops.items()}
    _check_defs(ops)
    _check_p2p(comms)
    _check_collectives(comms)
    _check_progress(comms)


def _check_defs(ops) -> None:
    for d, seq in ops.items():
        seen = set()
        for i, op in enumerate(seq):
            for v in op.operands:
                if v not in seen:
                    raise PiperError(
                        f"device {d}: instruction {i} ({describe(op)}) uses a value "
                        "before it is produced", op=op)
            seen.update(op.results)


def _check_p2p(comms) -> None:
    sends, recvs = {}, {}
    for d, seq in comms.items():
        for _, op in seq:
            if isinstance(op, sched.SendOp):
                key = (d, op.peer.data, op.tag.data)
                if key in sends:
                    raise PiperError(f"device {d}: two sends to {key[1]} with tag {key[2]}",
                                     op=op)
                sends[key] = op
            elif isinstance(op, sched.RecvOp):
                key = (op.peer.data, d, op.tag.data)
                if key in recvs:
                    raise PiperError(
                        f"device {d}: two receives from {key[0]} with tag {key[2]}", op=op)
                recvs[key] = op
    for key, s in sends.items():
        r = recvs.get(key)
        if r is None:
            raise PiperError(
                f"device {key[0]}: send to {key[1]} tag {key[2]} has no matching receive on "
                f"device {key[1]}", op=s)
        if r.result_type != s.value.type:
            raise PiperError(
                f"device {key[0]} sends {s.value.type} with tag {key[2]} but device "
                f"{key[1]} receives {r.result_type}", op=r)
    for key in recvs.keys() - sends.keys():
        raise PiperError(
            f"device {key[1]}: receive from {key[0]} tag {key[2]} has no matching send on "
            f"device {key[0]}", op=recvs[key])


def _check_collectives(comms) -> None:
    seqs: dict[tuple[int, ...], dict[int, list]] = {}
    for d, seq in comms.items():
        for _, op in seq:
            if isinstance(op, sched.CollectiveOp):
                g = op.member_set[0]
                seqs.setdefault(g, {}).setdefault(d, []).append(
                    (op.kind.data, op.tag.data, op.value.type, op)
                )
    for g, per in seqs.items():
        missing = [m for m in g if m not in per]
        if missing:
            raise PiperError(f"group {list(g)}: devices {missing} run none of its collectives")
        ref_dev = g[0]
        ref = per[ref_dev]
        for m in g[1:]:
            mine = per[m]
            for i in range(max(len(ref), len(mine))):
                a = ref[i] if i < len(ref) else None
                b = mine[i] if i < len(mine) else None
                if a is None or b is None or a[:3] != b[:3]:
                    raise PiperError(
                        f"group {list(g)}: collective {i} differs between device {ref_dev} "
                        f"({_fmt(a)}) and device {m} ({_fmt(b)})",
                        op=(b or a)[3])


def _fmt(entry) -> str:
    return "none" if entry is None else f"{entry[0]} tag {entry[1]}"


def _check_progress(comms) -> None:
    """Lockstep run: a wait blocks until every peer has started its side.
    Only communication instructions (`comms`: (index, op) per device) can
    block or unblock, so the run steps over them alone: `pc[d]` is a
    position in `comms[d]`."""
    pc = {d: 0 for d in comms}
    started: set[tuple] = set()
    # (group, tag) -> the members that started it: a wait checks a count,
    # not every member (a collective over n replicas is n waits).
    joined: dict[tuple, set[int]] = {}

    def start(op: Operation, d: int) -> None:
        if isinstance(op, sched.SendOp):
            started.add(("send", d, op.peer.data, op.tag.data))
        elif isinstance(op, sched.RecvOp):
            started.add(("recv", op.peer.data, d, op.tag.data))
        else:
            g, members = op.member_set
            if d in members:
                joined.setdefault((g, op.tag.data), set()).add(d)

    def peers_started(op: Operation, d: int) -> bool:
        if isinstance(op, sched.SendOp):
            return ("recv", d, op.peer.data, op.tag.data) in started
        if isinstance(op, sched.RecvOp):
            return ("send", op.peer.data, d, op.tag.data) in started
        g, members = op.member_set
        return len(joined.get((g, op.tag.data), ())) == len(members)

    while True:
        progressed = False
        for d, seq in comms.items():
            while pc[d] < len(seq):
                op = seq[pc[d]][1]
                if isinstance(op, sched.WaitOp):
                    if not peers_started(op.handle.owner, d):
                        break
                else:
                    start(op, d)
                pc[d] += 1
                progressed = True
        if all(pc[d] == len(seq) for d, seq in comms.items()):
            return
        if not progressed:
            stuck = [(d, *seq[pc[d]]) for d, seq in comms.items() if pc[d] < len(seq)]
            raise PiperError("verify-plan: deadlock: " + "; ".join(
                f"device {d} at instruction {i} ({describe(op)})" for d, i, op in stuck),
                op=stuck[0][2])
