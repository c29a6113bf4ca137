"""Feeding a run's batches to its ranks, one step at a time.

A run's data is any iterable of global batches: a list, a generator, a
`torch.utils.data.DataLoader`, or the batches `plan.save` wrote (data.pt).
The launcher reads it one batch per step, checks the batch against the plan
(`as_batch`: form, names, shapes, dtypes, named by step), cuts out what
each rank's program reads (the rows of its (replica, microbatch) chunks,
`InputSpec.reads`) and writes them to `feed/s{step}.r{rank}.pt` in the plan
directory, at most `window` steps ahead of the slowest rank. A rank reads
its file for a step and deletes it (`read_step`). So the launcher, the
ranks and the disk hold a few steps of data, whatever the run's length,
and no rank sees rows it does not train on. When the data ends,
`feed/end.r{rank}` says after how many batches: ranks then stop at that step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.dialects.graph import torch_dtype

FEED = "feed"
INPUTS = "inputs.json"  # the user's names of the plan's inputs, in order


@dataclass
class InputSpec:
    """What the plan reads of a global batch."""

    order: list[str]  # the IR names of the inputs, in the order of the example's
    names: dict[str, str]  # IR name -> the user's name
    shapes: dict[str, list[int]]  # IR name -> shape of one (replica, microbatch) chunk
    dtypes: dict[str, torch.dtype]
    reps: int = 1
    mbs: int = 1
    reads: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)

    def global_shape(self, name: str) -> list[int]:
        shape = self.shapes[name]
        return [shape[0] * self.reps * self.mbs, *shape[1:]] if shape else []

    def form(self) -> str:
        users = [self.names[n] for n in self.order]
        shapes = ", ".join(f"{self.names[n]}: {self.global_shape(n)} {_dtype(self.dtypes[n])}"
                           for n in self.order)
        return (f"a tuple of {len(users)} tensors ({', '.join(users)}) or a dict with the keys "
                f"{', '.join(map(repr, users))}; shapes {shapes}")

    def throughput_unit(self) -> tuple[int, str]:
        """What a step's throughput counts: the elements of the first
        integer input of two or more dimensions (tokens of a language
        model), else the batch's rows (samples)."""
        for n in self.order:
            if not self.dtypes[n].is_floating_point and len(self.shapes[n]) >= 2:
                return math.prod(self.global_shape(n)), "tok"
        rows = self.global_shape(self.order[0])[:1] if self.order else []
        return (rows[0] if rows else 1), "sample"


def _dtype(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def input_spec(module, order: list[str] | None = None,
               names: dict[str, str] | None = None) -> InputSpec:
    """The plan's inputs: per IR name the chunk shape and dtype, the batch
    layout, and per rank the chunks its program reads. `order` and `names`
    (the example inputs' order and the user's names) default to the
    plan's sorted IR names."""
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, torch.dtype] = {}
    reads: dict[int, list[tuple[str, int, int]]] = {}
    reps = mbs = 1
    for d, prog in programs(module).items():
        mine = reads.setdefault(d, [])
        for op in prog.body.block.ops:
            if isinstance(op, sched.InputOp):
                name = op.input_name.data
                shapes.setdefault(name, list(op.result.type.get_shape()))
                dtypes.setdefault(name, torch_dtype(op.result.type.element_type))
                mine.append((name, op.replica.data, op.mb.data))
                reps, mbs = max(reps, op.replica.data + 1), max(mbs, op.mb.data + 1)
    order = [n for n in (order or sorted(shapes)) if n in shapes]
    names = {n: (names or {}).get(n, n) for n in order}
    return InputSpec(order, names, shapes, dtypes, reps, mbs, reads)


def write_input_names(plan_dir: str, order: list[str], names: list[str]) -> None:
    with open(os.path.join(plan_dir, INPUTS), "w") as f:
        json.dump({"ir": order, "names": names}, f)


def read_input_names(plan_dir: str) -> tuple[list[str] | None, dict[str, str] | None]:
    path = os.path.join(plan_dir, INPUTS)
    if not os.path.exists(path):
        return None, None
    try:
        with open(path) as f:
            meta = json.load(f)
        return list(meta["ir"]), dict(zip(meta["ir"], meta["names"], strict=True))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PiperError(f"{path}: not the input names a plan directory holds ({e})") from None


def as_batch(batch, i: int, spec: InputSpec) -> dict[str, torch.Tensor]:
    """Global batch `i` (step i), as the user gave it (a tuple in the
    example inputs' order, or a dict keyed by the user's or the IR's
    names), keyed by IR name and checked against the plan."""
    form = spec.form()
    by_user = {u: n for n, u in spec.names.items()}
    if isinstance(batch, tuple | list):
        if len(batch) != len(spec.order):
            raise PiperError(f"batches[{i}] has {len(batch)} entries; a batch is {form}")
        out = dict(zip(spec.order, batch, strict=True))
    elif isinstance(batch, dict):
        out = {}
        for k, v in batch.items():
            if k not in by_user and k not in spec.names:
                raise PiperError(f"batches[{i}] has the key {k!r}; a batch is {form}")
            out[by_user.get(k, k)] = v
        missing = [spec.names[n] for n in spec.order if n not in out]
        if missing:
            raise PiperError(f"batches[{i}] has no {missing[0]!r}; a batch is {form}")
    else:
        raise PiperError(f"batches[{i}] is a {type(batch).__name__}; a batch is {form}")
    for name in spec.order:
        v, user = out[name], spec.names[name]
        if not isinstance(v, torch.Tensor):
            raise PiperError(f"batches[{i}][{user!r}] is a {type(v).__name__}, not a tensor")
        want = spec.global_shape(name)
        if list(v.shape) != want:
            raise PiperError(
                f"batches[{i}][{user!r}] has shape {list(v.shape)}; the plan takes "
                f"{spec.reps} replicas x {spec.mbs} microbatches of shape "
                f"{spec.shapes[name]}, a batch of shape {want}")
        if v.dtype != spec.dtypes[name]:
            raise PiperError(f"batches[{i}][{user!r}] is {_dtype(v.dtype)}; the plan takes "
                             f"{_dtype(spec.dtypes[name])}")
    return out


def check_data(data) -> None:
    """`data` is an iterable of batches, not one batch."""
    if isinstance(data, dict | torch.Tensor | str | bytes):
        raise PiperError(f"batches: expected an iterable of batches (a list, a generator, a "
                         f"DataLoader); got one {type(data).__name__} (wrap one batch in a list)")
    if not isinstance(data, Iterable):  # iter() would start a DataLoader's epoch
        raise PiperError(f"batches: a {type(data).__name__} is not an iterable of batches (a "
                         f"list, a generator, a DataLoader)")


def rank_chunks(batch: dict[str, torch.Tensor], spec: InputSpec,
                rank: int) -> dict[tuple[str, int, int], torch.Tensor]:
    """What rank `rank` reads of a checked global batch: its chunks, copied
    out of the batch (a saved view would carry the whole batch)."""
    parts = spec.reps * spec.mbs
    out = {}
    for name, rep, mb in spec.reads.get(rank, ()):
        t = batch[name]
        size = t.shape[0] // parts
        k = rep * spec.mbs + mb
        out[(name, rep, mb)] = t[k * size:(k + 1) * size].clone()
    return out


def _step_file(plan_dir: str, step: int, rank: int) -> str:
    return os.path.join(plan_dir, FEED, f"s{step}.r{rank}.pt")


def _end_file(plan_dir: str, rank: int) -> str:
    return os.path.join(plan_dir, FEED, f"end.r{rank}")


def _atomic_save(obj, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Feeder:
    """The launcher's side: writes the steps of `data` for `ranks`, from
    step `start` (the batches before it are skipped: a resumed run reads on
    from where its checkpoint was taken) until `steps` (None: until the
    data ends), keeping at most `window` steps unread."""

    def __init__(self, plan_dir: str, spec: InputSpec, data: Iterable, ranks: Iterable[int],
                 start: int = 0, steps: int | None = None, window: int = 8):
        self.plan_dir, self.spec, self.ranks = plan_dir, spec, list(ranks)
        self.steps, self.window = steps, window
        self.next = start
        self.ended = False
        self.short = ""  # the data ended before `steps`: what to tell the user
        self.pending: list[int] = []  # written steps not yet read by every rank
        feed = os.path.join(plan_dir, FEED)
        os.makedirs(feed, exist_ok=True)
        mine = tuple(f".r{r}" for r in self.ranks)  # another node's launcher feeds the others
        for f in os.listdir(feed):  # a previous run's leftovers
            if f.removesuffix(".tmp").removesuffix(".pt").endswith(mine):
                os.remove(os.path.join(feed, f))
        check_data(data)
        self.data: Iterator = iter(data)
        for i in range(start):  # the position a checkpoint recorded
            if next(self.data, None) is None:
                raise PiperError(f"data: the checkpoint was taken after {start} batches, but "
                                 f"the data ends after {i}")

    @property
    def done(self) -> bool:
        return self.ended or (self.steps is not None and self.next >= self.steps)

    def pump(self, most: int | None = None, budget: float = 0.05) -> None:
        """Write what the window allows, at most `most` batches and for
        about `budget` seconds (the launcher reports progress in between);
        raises PiperError on a bad batch."""
        self.pending = [s for s in self.pending
                        if any(os.path.exists(_step_file(self.plan_dir, s, r)) for r in self.ranks)]
        t0, written = time.monotonic(), 0
        while not self.done and len(self.pending) < self.window and (
                most is None or written < most) and (
                written == 0 or time.monotonic() - t0 < budget):
            written += 1
            step = self.next
            try:
                batch = next(self.data)
            except StopIteration:
                self._end(step)
                return
            except PiperError:
                raise
            except Exception as e:  # the user's data code raised
                raise PiperError(f"data: reading batches[{step}] (step {step}) raised "
                                 f"{type(e).__name__}: {e}") from None
            checked = as_batch(batch, step, self.spec)
            for r in self.ranks:
                _atomic_save(rank_chunks(checked, self.spec, r), _step_file(self.plan_dir, step, r))
            self.pending.append(step)
            self.next += 1

    def _end(self, n: int) -> None:
        """The data ended after `n` batches: ranks stop at step n (saving
        their checkpoint, when asked); short of `steps`, `short` says so."""
        if self.steps is not None and n < self.steps:
            self.short = (f"data: the data ended after {n} batches, but {self.steps} steps "
                          f"were asked for (one global batch per step); the run stopped at "
                          f"step {n}")
        self.ended = True
        for r in self.ranks:
            end = _end_file(self.plan_dir, r)
            with open(end + ".tmp", "w") as f:
                f.write(str(n))
            os.replace(end + ".tmp", end)


def read_step(plan_dir: str, step: int, rank: int,
              timeout: float) -> dict[tuple[str, int, int], torch.Tensor] | None:
    """The rank's side: its chunks of step `step`, or None when the data
    ended before it. Waits for the launcher at most `timeout` seconds."""
    path = _step_file(plan_dir, step, rank)
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        if os.path.exists(path):
            chunks = torch.load(path, weights_only=True)
            os.remove(path)
            return chunks
        end = _end_file(plan_dir, rank)
        if os.path.exists(end):
            with open(end) as f:
                if int(f.read()) <= step:
                    return None
        if time.monotonic() > deadline:
            raise PiperError(f"no batch for step {step} arrived within {timeout:.0f} s: the "
                             f"launcher reading the data stopped or is slower than that")
        time.sleep(min(0.0005 * tries, 0.01))
