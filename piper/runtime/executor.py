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

import torch
import torch.distributed as dist
from xdsl.dialects.builtin import ModuleOp

from piper.analysis.plan_check import describe, programs
from piper.backend.aten import CompiledFunction, find_function
from piper.backend.kernels import kernel_hook
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.dialects.graph import torch_dtype

_REDUCE = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


def _zeros_like_type(t, device) -> torch.Tensor:
    return torch.empty(t.get_shape(), dtype=torch_dtype(t.element_type), device=device)


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
        self.ops = list(self.program.body.block.ops)
        self.layout = batch_layout(module)
        self.pc = -1
        self.fault: tuple[int, str] = (-1, "")  # test hook: (instruction, raise|kill)
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

    def where(self) -> str:
        if 0 <= self.pc < len(self.ops):
            return f"instruction {self.pc} ({describe(self.ops[self.pc])})"
        return "start" if self.pc < 0 else "end of step"

    def step(self, state: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> StepStats:
        stats = StepStats()
        env: dict = {}
        live = 0
        pending: dict = {}
        t0 = time.perf_counter()
        for pc, op in enumerate(self.ops):
            self.pc = pc
            if pc == self.fault[0]:
                if self.fault[1] == "kill":
                    import signal

                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure at instruction {pc}")
            if isinstance(op, sched.LoadOp):
                name = op.tensor_name.data
                if name not in state:
                    raise PiperError(f"rank {self.rank}: no training state '{name}'")
                env[op.result] = state[name]
            elif isinstance(op, sched.InputOp):
                name = op.input_name.data
                env[op.result] = slice_input(name, batch[name], op.replica.data, op.mb.data,
                                             self.layout, op.result.type).to(self.device)
            elif isinstance(op, sched.FillOp):
                t = op.result.type
                env[op.result] = torch.full(t.get_shape(), op.value.value.data,
                                            dtype=torch_dtype(t.element_type), device=self.device)
            elif isinstance(op, sched.SumOp):
                vals = [env[v] for v in op.inputs]
                out = vals[0]
                for v in vals[1:]:
                    out = out + v
                scale = op.scale.value.data
                env[op.result] = out if scale == 1.0 else out * scale
            elif isinstance(op, sched.ShardOp):
                k, n = (a.data for a in op.part.data)
                env[op.result] = env[op.value].reshape(-1).chunk(n)[k]
            elif isinstance(op, sched.CallOp):
                outs = self.fns[op.callee.root_reference.data](*[env[v] for v in op.args])
                for r, v in zip(op.res, outs, strict=True):
                    env[r] = v
            elif isinstance(op, sched.SendOp):
                buf = env[op.value].contiguous()
                pending[op.handle] = (dist.isend(buf, dst=op.peer.data, tag=op.tag.data), buf)
            elif isinstance(op, sched.RecvOp):
                buf = _zeros_like_type(op.result_type, self.device)
                pending[op.handle] = (dist.irecv(buf, src=op.peer.data, tag=op.tag.data), buf)
            elif isinstance(op, sched.CollectiveOp):
                pending[op.handle] = self._collective(op, env[op.value])
            elif isinstance(op, sched.WaitOp):
                work, buf = pending.pop(op.handle)
                work.wait()
                if op.result is not None:
                    env[op.result] = buf.view(op.result.type.get_shape())
            elif isinstance(op, sched.FreeOp):
                env.pop(op.value, None)
            elif isinstance(op, sched.StoreOp):
                v = env[op.value]
                state[op.tensor_name.data] = v
                if op.tensor_name.data == "loss":
                    stats.losses.append(float(v))
            else:
                raise PiperError(f"rank {self.rank}: cannot execute '{op.name}'")
            live = sum(v.nbytes for v in env.values() if isinstance(v, torch.Tensor))
            stats.peak_bytes = max(stats.peak_bytes, live)
        self.pc = len(self.ops)
        stats.seconds = time.perf_counter() - t0
        return stats

    def _collective(self, op: sched.CollectiveOp, x: torch.Tensor):
        kind = op.kind.data
        pg = self.groups[tuple(op.members)]
        out_t = op.result_type
        if kind == "all_reduce":
            buf = x.detach().clone().contiguous()
            return dist.all_reduce(buf, op=_REDUCE[op.reduce.data], group=pg, async_op=True), buf
        if kind == "reduce_scatter":
            buf = _zeros_like_type(out_t, self.device)
            work = dist.reduce_scatter_tensor(buf, x.contiguous().view(-1),
                                              op=_REDUCE[op.reduce.data], group=pg, async_op=True)
            return work, buf
        if kind == "all_gather":
            buf = _zeros_like_type(out_t, self.device)
            work = dist.all_gather_into_tensor(buf.view(-1), x.contiguous(), group=pg, async_op=True)
            return work, buf
        if kind == "all_to_all":
            buf = _zeros_like_type(out_t, self.device)
            return dist.all_to_all_single(buf, x.contiguous(), group=pg, async_op=True), buf
        if kind == "broadcast":
            buf = x.detach().clone().contiguous()
            src = op.root.data
            return dist.broadcast(buf, src=src, group=pg, async_op=True), buf
        raise PiperError(f"unknown collective {kind}")


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
                return f"rank {r} stopped answering at {before[r].split('|', 1)[1]}"
        return None

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
                               f"answering {self.timeout:.0f} s ago at {pos.split('|', 1)[1]}")
            except Exception:
                # The store lives with rank 0's agent; losing it means the job is gone.
                _abort(f"piper: rank {rt.rank} stops at {rt.where()}: lost contact with the "
                       "other ranks (a rank or the launcher died)")


def _abort(msg: str):
    print(msg, file=sys.stderr, flush=True)
    os._exit(1)
