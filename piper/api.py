"""piper.compile: from an nn.Module and a strategy to per-device programs.

    plan = piper.compile(model, (x,), loss_fn, (y,), optimizer,
                         strategy=[piper.place(pp=2), piper.split(4),
                                   piper.replicate(2), piper.order("1f1b")])
    print(plan.summary())
    print(plan.strategy_json())             # the core directives, editable

`strategy` is a list of directives, JSON text, or the path of a JSON file
(docs/directives.md).
    result = plan.run(batches, steps=3)     # torchrun, one process per device

Capture traces ONE microbatch on one replica: the global batch of a step is
microbatches x replicas x the example batch.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import torch
from xdsl.dialects.builtin import ModuleOp

from piper.analysis.memory import program_peak_bytes
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.frontend.capture import CapturedStep, capture


@dataclass
class Plan:
    module: ModuleOp
    captured: CapturedStep
    directives: list  # as the user gave them
    expanded: list = field(default_factory=list)  # the core directives they stand for
    trained: dict = field(default_factory=dict)  # the last run's final state

    def strategy_json(self) -> str:
        """The expanded strategy as JSON: compiling it gives this plan again."""
        from piper.directives.strategy import to_json

        return to_json(self.expanded)

    @property
    def num_devices(self) -> int:
        return len(programs(self.module))

    def text(self) -> str:
        from piper.ir import print_module

        return print_module(self.module)

    def summary(self) -> str:
        """One line per device: tasks in order, messages, estimated peak bytes."""
        from piper.directives.strategy import describe

        lines = ["strategy: " + ", ".join(describe(d) for d in self.directives)]
        lines += [f"stage {s}: {', '.join(paths)}" for s, paths in self.stage_modules().items()]
        for d, prog in sorted(programs(self.module).items()):
            tasks, comm, nbytes = [], 0, 0
            for op in prog.body.block.ops:
                if isinstance(op, sched.CallOp):
                    tasks.append(op.task.data)
                elif isinstance(op, sched.SendOp | sched.CollectiveOp):
                    comm += 1
                    nbytes += op.bytes if isinstance(op, sched.CollectiveOp) else _bytes(op.value.type)
            host = program_peak_bytes(prog, "host")
            lines.append(
                f"device {d}: {' '.join(tasks)} | {comm} messages, {nbytes} B sent, "
                f"peak {program_peak_bytes(prog)} B" + (f" (host {host} B)" if host else "")
            )
        return "\n".join(lines)

    def inputs(self):
        """What the plan reads of a global batch (piper.runtime.feed.InputSpec)."""
        from piper.runtime.feed import input_spec

        sig = self.captured.signature
        return input_spec(self.module, list(sig.inputs),
                          dict(zip(sig.inputs, self.captured.input_names, strict=True)))

    def batches(self, batches) -> list[dict[str, torch.Tensor]]:
        """`batches` as the plan reads them: each batch a tuple of tensors in
        the order of the example inputs (then targets), or a dict keyed by
        the forward's parameter names (or the example inputs' keys), or by
        the IR's own names (`input0`, ...)."""
        from piper.runtime.feed import as_batch, check_data

        check_data(batches)
        spec = self.inputs()
        try:
            return [as_batch(b, i, spec) for i, b in enumerate(batches)]
        except PiperError as e:
            raise self._explained(e) from None

    def _explained(self, e: PiperError) -> PiperError:
        """A batch-shape error, with the directives that set the batch layout."""
        from piper.directives.strategy import Replicate, Split, describe

        setting = [describe(d) for d in self.directives if isinstance(d, Split | Replicate)]
        if setting and "microbatches of shape" in e.message:
            e.message += f" (set by {', '.join(setting)}; capture traced one microbatch)"
        return e

    def stage_modules(self) -> dict[int, list[str]]:
        """Per pipeline stage, the module paths whose forward ops it runs
        (cut after a ModuleList index: `model.layers.3`), in order."""
        from xdsl.dialects import func
        from xdsl.dialects.builtin import NameLoc

        out: dict[int, list[str]] = {}
        for fn in self.module.body.block.ops:
            name = fn.sym_name.data if isinstance(fn, func.FuncOp) else ""
            if not (name.startswith("F") and name[1:].isdigit()):
                continue
            paths: dict[str, None] = {}
            for op in fn.body.block.ops:
                loc = getattr(op, "location", None)
                if isinstance(loc, NameLoc):
                    parts = loc.desc.data.split(".")
                    cut = next((i for i, p in enumerate(parts) if p.isdigit()), len(parts) - 1)
                    paths[".".join(parts[: cut + 1])] = None
            out[int(name[1:])] = list(paths)
        return dict(sorted(out.items()))

    def save(self, plan_dir: str, batches=None) -> None:
        """Write the plan directory piper-run reads; with `batches` (as
        `batches` takes them) also data.pt, for `piper-run DIR` without
        `--data`."""
        self._save(plan_dir, None if batches is None else self.batches(batches))

    def _save(self, plan_dir: str, batches: list[dict[str, torch.Tensor]] | None) -> None:
        from piper.libraries import write as write_libraries
        from piper.runtime.checkpoint import NAMES
        from piper.runtime.feed import write_input_names
        from piper.runtime.launch import save_plan

        if "__main__" in self.captured.libraries:
            raise PiperError(
                "a custom operator of this plan is defined in the script run as __main__; "
                "ranks import the modules that register custom operators: define it in a "
                "module of its own and import it")
        save_plan(plan_dir, self.module, self.captured.values, batches)
        write_libraries(plan_dir, self.captured.libraries)
        write_input_names(plan_dir, list(self.captured.signature.inputs),
                          list(self.captured.input_names))
        names = {k: self.captured.aliases.get(k, k) for k in self.captured.state_keys}
        with open(os.path.join(plan_dir, NAMES), "w") as f:
            json.dump({k: v for k, v in names.items() if v in self.captured.values}, f)

    def run(self, data, steps: int | None = None, plan_dir: str | None = None,
            timeout: float = 60.0, worker_args=(), *, run_dir: str | None = None,
            checkpoint_every: int = 0, checkpoint_dir: str = "", keep_checkpoints: int = 2,
            resume: bool = False, progress=None, log_every: int = 10, on_checkpoint=None,
            trace: str | None = None):
        """Train on local processes, from the weights the model had at
        capture (or the newest checkpoint with `resume=True`).

        `data`: any iterable of global batches (a list, a generator, a
        `DataLoader`), each a tuple in the example inputs' order or a dict
        keyed by their names; it is read one batch per step and streamed to
        the ranks, each getting only its chunks. `steps`: default one per
        batch until the data ends; data ending before `steps` is an error.
        A progress line per step goes to `progress` (a stream; None:
        stdout; False: none), metrics to `run_dir/metrics.jsonl`;
        `checkpoint_every`, `checkpoint_dir`, `keep_checkpoints`, `resume`
        and `on_checkpoint(step, path) -> dict | None` as in
        `piper.runtime.launch.run_plan`. `trace`: a directory where each
        rank writes the trace of its instructions (`rank{r}.json`, Chrome
        trace format, piper/runtime/trace.py). `plan.state_dict()` gives the
        trained weights afterwards."""
        from piper.runtime.feed import check_data
        from piper.runtime.launch import run_plan

        check_data(data)
        if trace:
            trace = os.path.abspath(trace)
            try:  # before any rank starts, not when the ranks write
                os.makedirs(trace, exist_ok=True)
            except OSError as e:
                raise PiperError(f"trace: cannot create the directory '{trace}': "
                                 f"{e.strerror}") from None
            worker_args = (*worker_args, "--trace", trace)
        with tempfile.TemporaryDirectory() as tmp:
            where = plan_dir or tmp
            self._save(where, None)
            try:
                result = run_plan(
                    where, self.num_devices, steps, timeout, tuple(worker_args), data=data,
                    run_dir=run_dir, checkpoint_every=checkpoint_every,
                    checkpoint_dir=checkpoint_dir, keep_checkpoints=keep_checkpoints,
                    resume=resume, progress=progress, log_every=log_every,
                    on_checkpoint=on_checkpoint)
            except PiperError as e:
                raise self._explained(e) from None
        self.trained = result.state
        if run_dir is None and plan_dir is None:
            result.metrics = ""  # it was in the temporary plan directory
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's full, unsharded state dict with its own names after
        the last `run` (before any run: the weights at capture), for
        `model.load_state_dict(...)` and then `save_pretrained`."""
        return self.captured.state_dict(self.trained or self.captured.values)


def _bytes(t) -> int:
    from piper.dialects.dist import type_bytes

    return type_bytes(t)


def compile(model: torch.nn.Module, example_inputs, loss_fn=None, targets=(), optimizer=None,
            strategy=()) -> Plan:
    from piper.directives.strategy import compile_strategy, load

    from piper.ir import gc_paused

    directives, source = load(strategy)
    with gc_paused():
        captured = capture(model, example_inputs, loss_fn, targets, optimizer)
    module = captured.module.clone()
    expanded = compile_strategy(module, directives, source)
    for d in expanded:  # training state a directive adds (precision's loss scale)
        captured.values.update(getattr(d, "initial_state", dict)())
    return Plan(module, captured, directives, expanded)


def load_checkpoint(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load a Piper checkpoint directory (a periodic one, `--save-checkpoint`'s,
    of any layout) into a plain `model`: its parameters and the buffers the
    plan trained, under the model's own names. Returns `model`."""
    from piper.runtime.checkpoint import to_model_state

    model.load_state_dict(to_model_state(path, model), strict=False)
    return model
