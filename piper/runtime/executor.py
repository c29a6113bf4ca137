"""The runtime: execute one device's sched program over torch.distributed.

It knows no strategy. It loads the plan, picks the program of its rank and
runs the instructions in order: loads and stores of training state, slices
of the global batch, calls of compiled stage functions, point-to-point
messages (isend/irecv) and collectives started asynchronously and completed
at their `sched.wait`, and frees. Everything strategy-specific (which stage,
which replica, when to communicate) is already in the program.

Failures: a watchdog thread publishes this rank's position through the
rendezvous store and watches the others'. A rank that raises records where
it failed; every other rank then exits non-zero with a message naming the
failed rank and its instruction, within the configured timeout. A rank that
stops answering (killed) is named once its heartbeat is older than the
timeout.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from xdsl.dialects.builtin import ModuleOp

from piper.analysis.plan_check import describe, programs
from piper.backend.aten import CompiledFunction, find_function
from piper.backend.kernels import kernel_hook
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.dialects.graph import torch_dtype
from piper.runtime.instructions import (
    Call,
    Collective,
    Copy,
    Fill,
    Free,
    Input,
    Instruction,
    Load,
    Recv,
    Send,
    Shard,
    Store,
    Sum,
    Unsupported,
    Wait,
)
from piper.runtime.ownership import private_results

# what `trace` records (piper/runtime/trace.py): compute and communication
_TRACED = frozenset({Call, Collective, Wait, Send, Recv})

# Every reduction of dist.REDUCE_OPS; "avg" is a sum of the inputs each
# divided by the group's size first (gloo has no ReduceOp.AVG).
_REDUCE = {"sum": dist.ReduceOp.SUM, "avg": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


def batch_layout(module: ModuleOp) -> tuple[int, int]:
    """(replicas, microbatches) the global batch is split into."""
    reps = mbs = 1
    for prog in programs(module).values():
        for op in prog.body.block.ops:
            if isinstance(op, sched.InputOp):
                reps = max(reps, op.replica.data + 1)
                mbs = max(mbs, op.mb.data + 1)
    return reps, mbs


def slice_input(name: str, batch: torch.Tensor, replica: int, mb: int,
                layout: tuple[int, int], t) -> torch.Tensor:
    """Chunk (replica, mb) of a global-batch input, split along dim 0."""
    reps, mbs = layout
    parts = reps * mbs
    if batch.shape[0] % parts:
        raise PiperError(
            f"input '{name}': batch of {batch.shape[0]} does not divide into "
            f"{reps} replicas x {mbs} microbatches"
        )
    size = batch.shape[0] // parts
    chunk = batch[(replica * mbs + mb) * size:(replica * mbs + mb + 1) * size]
    if list(chunk.shape) != list(t.get_shape()):
        raise PiperError(
            f"input '{name}': a chunk of the batch has shape {list(chunk.shape)}, "
            f"the plan expects {list(t.get_shape())}"
        )
    return chunk


def stores_loss(op: sched.StoreOp) -> bool:
    """Whether `op` stores the step's loss (recorded in StepStats.losses):
    the store says so with its `loss` marker, whatever the value's name."""
    return op.is_loss


@dataclass
class StepStats:
    seconds: float = 0.0
    peak_bytes: int = 0
    losses: list[float] = field(default_factory=list)


class RankRuntime:
    """Runs this rank's program, one training step per `step()` call."""

    def __init__(self, module: ModuleOp, rank: int, world: int, device="cpu",
                 compile_fn: Callable | None = None):
        progs = programs(module)
        if len(progs) != world or sorted(progs) != list(range(world)):
            raise PiperError(
                f"the plan has programs for devices {sorted(progs)}, but {world} ranks were launched"
            )
        self.rank, self.world, self.device = rank, world, device
        self.program = progs[rank]
        self.programs = progs
        self.module = module
        self._private: dict[str, tuple[bool, ...]] = {}  # function -> private_results
        self.ops = list(self.program.body.block.ops)
        self.layout = batch_layout(module)
        # The instruction running now (-1: before the first step); in a
        # file every rank of the node can read once `publish_position` ran,
        # so a rank killed without a word is still found where it stopped.
        self.position = np.full(1, -1, dtype=np.int64)
        self.positions_dir: str | None = None
        self.fault: tuple[int, str] = (-1, "")  # test hook: (instruction, raise|kill)
        # per step, (pc, start, end) of each call and communication, when set
        # to a list (`--trace`, piper/runtime/trace.py); None: no clock read
        self.trace: list[list[tuple[int, float, float]]] | None = None
        cache: dict = {}
        # fused groups (kernel.fused) run as the plan marks them: Triton or aten
        hook = kernel_hook(module, device)
        self.fns: dict[str, Callable] = {}
        for op in self.ops:
            if isinstance(op, sched.CallOp):
                name = op.callee.root_reference.data
                if name not in self.fns:
                    fn = find_function(module, name)
                    self.fns[name] = (compile_fn(module, fn, device) if compile_fn
                                      else CompiledFunction(module, fn, device, cache, hook))
        # Every rank creates every group, in one global order.
        groups = sorted({tuple(op.members) for p in progs.values() for op in p.body.block.ops
                         if isinstance(op, sched.CollectiveOp)})
        self.groups = {}
        for g in groups:
            pg = dist.new_group(list(g)) if dist.is_initialized() else None
            self.groups[g] = pg
        self._decode()

    @property
    def pc(self) -> int:
        return int(self.position[0])

    def where(self) -> str:
        return _where(self.ops, self.pc)

    def publish_position(self, directory: str) -> None:
        """Keep the running instruction in `directory`/rank{r}.pos (8 bytes,
        shared memory): written at every instruction, read by the watchdogs
        of this node's other ranks."""
        import mmap

        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"rank{self.rank}.pos")
        with open(path, "wb") as f:
            f.write(self.position.tobytes())
        with open(path, "r+b") as f:
            self._position_map = mmap.mmap(f.fileno(), 8)
        mapped = np.frombuffer(self._position_map, dtype=np.int64)
        mapped[0] = self.position[0]
        self.position = mapped
        self.positions_dir = directory

    def peer_where(self, rank: int) -> str | None:
        """Where rank `rank` is (or was when it died), from its position
        file; None when it has none on this node."""
        if self.positions_dir is None:
            return None
        try:
            with open(os.path.join(self.positions_dir, f"rank{rank}.pos"), "rb") as f:
                data = f.read(8)
        except OSError:
            return None
        if len(data) != 8:
            return None
        ops = list(self.programs[rank].body.block.ops)
        return _where(ops, int(np.frombuffer(data, dtype=np.int64)[0]))

    def _decode(self) -> None:
        """Turn the program into a list of instruction records
        (piper/runtime/instructions.py), once: every SSA value gets a slot
        number, every attribute is read here and not in the step loop."""
        slots: dict = {}

        def s(v) -> int:
            if v not in slots:
                slots[v] = len(slots)
            return slots[v]

        code: list[Instruction] = []
        for op in self.ops:
            if isinstance(op, sched.CallOp):
                fn = self.fns[op.callee.root_reference.data]
                owned = getattr(fn, "call_owned", None)
                if owned is None:
                    def owned(args, _fn=fn):
                        held = tuple(args)
                        args.clear()
                        return _fn(*held)
                # arguments the program only frees after this call: handed
                # over, so the function drops each after its own last use
                dying = tuple(sorted({s(v) for v in op.args if _last_read_by(v, op)}))
                code.append(Call(fn=owned, args=tuple(s(v) for v in op.args),
                                 results=tuple(s(r) for r in op.res), dying=dying))
            elif isinstance(op, sched.FreeOp):
                code.append(Free(slot=s(op.value)))
            elif isinstance(op, sched.WaitOp):
                res = op.result
                code.append(Wait(handle=s(op.handle), result=-1 if res is None else s(res),
                                 shape=None if res is None else tuple(res.type.get_shape())))
            elif isinstance(op, sched.CollectiveOp):
                code.append(Collective(handle=s(op.handle), value=s(op.value),
                                       start=self._collective_start(op, self._consumed(op))))
            elif isinstance(op, sched.SendOp):
                code.append(Send(handle=s(op.handle), value=s(op.value), peer=op.peer.data,
                                 tag=op.tag.data))
            elif isinstance(op, sched.RecvOp):
                t = op.result_type
                code.append(Recv(handle=s(op.handle), shape=tuple(t.get_shape()),
                                 dtype=torch_dtype(t.element_type), peer=op.peer.data,
                                 tag=op.tag.data))
            elif isinstance(op, sched.LoadOp):
                code.append(Load(result=s(op.result), name=op.tensor_name.data))
            elif isinstance(op, sched.StoreOp):
                code.append(Store(value=s(op.value), name=op.tensor_name.data,
                                  is_loss=stores_loss(op)))
            elif isinstance(op, sched.InputOp):
                code.append(Input(result=s(op.result), name=op.input_name.data,
                                  replica=op.replica.data, mb=op.mb.data, type=op.result.type))
            elif isinstance(op, sched.FillOp):
                t = op.result.type
                code.append(Fill(result=s(op.result), shape=tuple(t.get_shape()),
                                 value=op.value.value.data, dtype=torch_dtype(t.element_type)))
            elif isinstance(op, sched.SumOp):
                code.append(Sum(result=s(op.result), inputs=tuple(s(v) for v in op.inputs),
                                scale=op.scale.value.data))
            elif isinstance(op, sched.ShardOp):
                k, n = (a.data for a in op.part.data)
                code.append(Shard(result=s(op.result), value=s(op.value), index=k, parts=n))
            elif isinstance(op, sched.CopyOp):
                code.append(Copy(result=s(op.result), value=s(op.value),
                                 device="cpu" if op.to_host else self.device))
            else:
                code.append(Unsupported(op_name=op.name))
        self.code = code
        self.n_slots = len(slots)

    def _consumed(self, op: sched.CollectiveOp) -> bool:
        """Whether the collective's input is memory the step may write into:
        a call's result that the program never reads again (only frees it)
        and that owns its memory alone (`ownership.private_results`). The
        latter is known for Piper's own compiled functions only; a
        `compile_fn`'s implementation decides what its results share."""
        v = op.value
        call = v.owner
        if not isinstance(call, sched.CallOp) or not _last_read_by(v, op):
            return False
        name = call.callee.root_reference.data
        if not isinstance(self.fns.get(name), CompiledFunction):
            return False
        if name not in self._private:
            self._private[name] = private_results(find_function(self.module, name).body.block)
        private = self._private[name]
        return v.index < len(private) and private[v.index]

    def step(self, state: dict[str, torch.Tensor], batch: dict) -> StepStats:
        """One training step. Live bytes (the tensors this rank's program
        holds) are kept up to date as values are defined and freed, and the
        peak is the largest value after any instruction: the accounting of
        `program_peak_bytes`, at no cost per instruction."""
        stats = StepStats()
        env: list = [None] * self.n_slots
        live = peak = 0
        fault = self.fault[0]
        device = self.device
        position = self.position
        clock = time.perf_counter
        traced = self.trace is not None
        if traced:
            self.trace.append(recs := [])
        t0 = clock()
        for pc, ins in enumerate(self.code):
            position[0] = pc
            if pc == fault:
                self._inject_fault(pc)
            kind = type(ins)
            if kind is Free:
                v = env[ins.slot]
                if v is not None:
                    env[ins.slot] = None
                    live -= v.nbytes
                continue  # nothing grows
            if traced:
                began = clock()
            if kind is Call:
                args = [env[i] for i in ins.args]
                for i in ins.dying:
                    # the free that follows still counts the bytes off
                    env[i] = _Released(env[i].nbytes)
                outs = v = None  # nor may the last call's results keep them
                outs = ins.fn(args)
                for r, v in zip(ins.results, outs, strict=True):
                    env[r] = v
                    live += v.nbytes
            elif kind is Wait:
                work, buf = env[ins.handle]
                env[ins.handle] = None
                work.wait()
                if ins.result >= 0:
                    v = env[ins.result] = buf.view(ins.shape)
                    live += v.nbytes
            elif kind is Collective:
                # the last call's results (`outs`, `v`) must not count as
                # owners of the input: an all_reduce may then run in place
                outs = v = None
                env[ins.handle] = ins.start(env[ins.value], env, state)
            elif kind is Send:
                buf = env[ins.value].contiguous()
                env[ins.handle] = (dist.isend(buf, dst=ins.peer, tag=ins.tag), buf)
            elif kind is Recv:
                buf = torch.empty(ins.shape, dtype=ins.dtype, device=device)
                env[ins.handle] = (dist.irecv(buf, src=ins.peer, tag=ins.tag), buf)
            elif kind is Load:
                v = state.get(ins.name)
                if v is None:
                    raise PiperError(f"rank {self.rank}: no training state '{ins.name}'")
                env[ins.result] = v
                live += v.nbytes
            elif kind is Store:
                v = env[ins.value]
                state[ins.name] = v
                if ins.is_loss:
                    stats.losses.append(float(v))
            elif kind is Input:
                # the feed's chunk of this rank, or the chunk of a global batch
                v = batch.get((ins.name, ins.replica, ins.mb))
                if v is None:
                    v = slice_input(ins.name, batch[ins.name], ins.replica, ins.mb,
                                    self.layout, ins.type)
                v = env[ins.result] = v.to(device)
                live += v.nbytes
            elif kind is Fill:
                v = env[ins.result] = torch.full(ins.shape, ins.value, dtype=ins.dtype,
                                                 device=device)
                live += v.nbytes
            elif kind is Sum:
                srcs, scale = ins.inputs, ins.scale
                if len(srcs) == 1:
                    v = env[srcs[0]] if scale == 1.0 else env[srcs[0]] * scale
                else:
                    # the first add makes a fresh tensor; the rest accumulate into
                    # it (same additions in the same order, no new buffers)
                    v = env[srcs[0]] + env[srcs[1]]
                    for i in srcs[2:]:
                        v.add_(env[i])
                    if scale != 1.0:
                        v.mul_(scale)
                env[ins.result] = v
                live += v.nbytes
            elif kind is Shard:
                v = env[ins.result] = env[ins.value].reshape(-1).chunk(ins.parts)[ins.index]
                live += v.nbytes
            elif kind is Copy:
                v = env[ins.result] = env[ins.value].to(ins.device, copy=True)
                live += v.nbytes
            else:
                raise PiperError(f"rank {self.rank}: cannot execute '{ins.op_name}'")
            if traced and kind in _TRACED:
                recs.append((pc, began, clock()))
            if live > peak:
                peak = live
        position[0] = len(self.ops)
        stats.seconds = clock() - t0
        stats.peak_bytes = peak
        return stats

    def _inject_fault(self, pc: int):
        if self.fault[1] == "kill":
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure at instruction {pc}")

    def _collective_start(self, op: sched.CollectiveOp, consumed: bool = False) -> Callable:
        """A function starting `op` on a tensor (given the environment):
        returns (work, result buffer). `consumed`: the program never reads
        the input again and it owns its memory alone (`_consumed`), so an
        all_reduce may run in the input's own memory when, at run time, no
        other object holds it (`_sole_owner`)."""
        kind = op.kind.data
        pg = self.groups[tuple(op.members)]
        out_t = op.result_type
        shape, dtype, device = tuple(out_t.get_shape()), torch_dtype(out_t.element_type), self.device
        if kind in ("all_reduce", "reduce_scatter"):
            red = _REDUCE[op.reduce.data]
            avg = op.reduce.data == "avg"
            n = len(tuple(op.members))
        if kind == "all_reduce":
            def all_reduce(x, env, state):
                if consumed and _sole_owner(x, env, state):
                    buf = x.div_(n) if avg else x
                else:
                    buf = x.detach() / n if avg else x.detach().clone().contiguous()
                return dist.all_reduce(buf, op=red, group=pg, async_op=True), buf

            return all_reduce
        if kind == "reduce_scatter":
            def reduce_scatter(x, env, state):
                buf = torch.empty(shape, dtype=dtype, device=device)
                flat = x.contiguous().view(-1)
                return dist.reduce_scatter_tensor(buf, flat / n if avg else flat, op=red,
                                                  group=pg, async_op=True), buf

            return reduce_scatter
        if kind == "all_gather":
            def all_gather(x, env, state):
                buf = torch.empty(shape, dtype=dtype, device=device)
                return dist.all_gather_into_tensor(buf.view(-1), x.contiguous(), group=pg,
                                                   async_op=True), buf

            return all_gather
        if kind == "all_to_all":
            def all_to_all(x, env, state):
                buf = torch.empty(shape, dtype=dtype, device=device)
                return dist.all_to_all_single(buf, x.contiguous(), group=pg, async_op=True), buf

            return all_to_all
        if kind == "broadcast":
            src = op.root.data

            def broadcast(x, env, state):
                buf = x.detach().clone().contiguous()
                return dist.broadcast(buf, src=src, group=pg, async_op=True), buf

            return broadcast
        raise PiperError(f"unknown collective {kind}")


def _last_read_by(v, op) -> bool:
    """Whether `op` is the only instruction that reads `v` (the rest of its
    uses are frees): the program never needs it after `op`."""
    return all(u.operation is op or isinstance(u.operation, sched.FreeOp) for u in v.uses)


class _Released:
    """An environment slot whose tensor was handed to the call that last
    reads it; its `sched.free` still subtracts these bytes, so the live-byte
    accounting stays the plan's (instruction by instruction)."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def _sole_owner(x: torch.Tensor, env: list, state: dict) -> bool:
    """Whether nothing but x's environment slot holds x, checked when the
    step runs: x is no view (`_base`), is contiguous, and no Python object
    but that slot (and this call chain) refers to x: not the training
    state, not a function's cached constant, not a second slot.

    That no other tensor shares x's storage without referring to x (a
    `detach` of a state tensor does) is not asked of torch here: there is
    no public API for a storage's user count. The plan answers it before
    the step (`RankRuntime._consumed`, `ownership.private_results`); this
    check only guards against holders the plan cannot see."""
    if x._base is not None or not x.is_contiguous():
        return False
    return sys.getrefcount(x) == _SOLE_REFS


def _probe_refs(x, env, state):
    return sys.getrefcount(x)


def _calibrate() -> int:
    """References to a tensor held by one environment slot alone, seen
    from `_sole_owner` when a collective's start function calls it: the
    same call chain as in `RankRuntime.step`, measured once."""
    def start(x, env, state):
        return _probe_refs(x, env, state)

    env = [torch.empty(1)]
    return start(env[0], env, {})


_SOLE_REFS = _calibrate()


class Watchdog:
    """Shares each rank's position through the store; ends this rank when
    another failed or stopped answering."""

    def __init__(self, runtime: RankRuntime, store, timeout: float, interval: float = 0.5):
        self.rt, self.store, self.timeout, self.interval = runtime, store, timeout, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.last_seen: dict[int, tuple[str, float]] = {}  # rank -> (beat, when it changed)

    def start(self):
        self.store.set(f"piper/hb/{self.rt.rank}", f"0|{self.rt.where()}")
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join()

    def dead_rank(self) -> str | None:
        """A peer whose heartbeat does not move over a few intervals."""
        try:
            def beats():
                out = {}
                for r in range(self.rt.world):
                    key = f"piper/hb/{r}"
                    if r != self.rt.rank and self.store.check([key]):
                        out[r] = self.store.get(key).decode()
                return out

            before = beats()
            time.sleep(3 * self.interval)
            after = beats()
        except Exception:
            return None
        for r in sorted(before):
            if after.get(r) == before[r]:
                return f"rank {r} stopped answering at {self.last_position(r, before[r])}"
        return None

    def last_position(self, rank: int, beat: str) -> str:
        """Rank `rank`'s latest known position: its position file when on
        this node (exact, even after a kill), else its last heartbeat."""
        return self.rt.peer_where(rank) or beat.split("|", 1)[1]

    def culprit(self) -> str:
        """Who failed: the recorded failure, else the stalest heartbeat."""
        try:
            if self.store.check(["piper/failed"]):
                who, where, why = self.store.get("piper/failed").decode().split("|", 2)
                return f"rank {who} failed at {where}: {why}"
        except Exception:
            pass
        return "another rank failed"

    def watch_signals(self):
        """Receive SIGTERM/SIGINT (blocked in every thread) and leave with
        a message naming the rank that failed."""
        import signal

        def run():
            sig = signal.sigwait({signal.SIGTERM, signal.SIGINT})
            why = self.culprit()
            if why == "another rank failed":
                why = self.dead_rank() or why
            _abort(f"piper: rank {self.rt.rank} stops at {self.rt.where()} "
                   f"(signal {signal.Signals(sig).name}): {why}")

        threading.Thread(target=run, daemon=True).start()

    def report_failure(self, err: BaseException):
        msg = f"{self.rt.rank}|{self.rt.where()}|{type(err).__name__}: {err}"
        try:
            self.store.set("piper/failed", msg)
        except Exception:
            pass

    def _run(self):
        rt = self.rt
        last_seen = self.last_seen
        beat = 0
        while not self.stop.wait(self.interval):
            beat += 1
            try:
                self.store.set(f"piper/hb/{rt.rank}", f"{beat}|{rt.where()}")
                if self.store.check(["piper/failed"]):
                    who, where, why = self.store.get("piper/failed").decode().split("|", 2)
                    if int(who) != rt.rank:
                        _abort(f"piper: rank {rt.rank} stops at {rt.where()}: rank {who} failed "
                               f"at {where}: {why}")
                now = time.monotonic()
                for r in range(rt.world):
                    if r == rt.rank:
                        continue
                    key = f"piper/hb/{r}"
                    if not self.store.check([key]):
                        continue
                    pos = self.store.get(key).decode()
                    prev = last_seen.get(r)
                    if prev is None or prev[0] != pos:
                        last_seen[r] = (pos, now)
                    elif now - prev[1] > self.timeout:
                        _abort(f"piper: rank {rt.rank} stops at {rt.where()}: rank {r} stopped "
                               f"answering {self.timeout:.0f} s ago at "
                               f"{self.last_position(r, pos)}")
            except Exception:
                # The store lives with rank 0's agent; losing it means the job is gone.
                _abort(f"piper: rank {rt.rank} stops at {rt.where()}: lost contact with the "
                       "other ranks (a rank or the launcher died)")


def _where(ops: list, pc: int) -> str:
    if 0 <= pc < len(ops):
        return f"instruction {pc} ({describe(ops[pc])})"
    return "start" if pc < 0 else "end of step"


# Where this rank leaves its one-line failure report for the launcher
# (set by the worker: progress/rank{r}.failed in the plan directory).
FAILURE_FILE: str | None = None


def report(msg: str) -> None:
    """This rank's failure, on stderr and, whole, in its own report file:
    the launcher prints one line per failing rank, never interleaved."""
    print(msg, file=sys.stderr, flush=True)
    if FAILURE_FILE:
        try:
            with open(FAILURE_FILE, "w") as f:
                f.write(msg.replace("\n", " ") + "\n")
        except OSError:
            pass


def _abort(msg: str):
    report(msg)
    os._exit(1)
