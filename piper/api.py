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

from collections.abc import Sequence
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
        for d, prog in sorted(programs(self.module).items()):
            tasks, comm, nbytes = [], 0, 0
            for op in prog.body.block.ops:
                if isinstance(op, sched.CallOp):
                    tasks.append(op.task.data)
                elif isinstance(op, sched.SendOp | sched.CollectiveOp):
                    comm += 1
                    nbytes += op.bytes if isinstance(op, sched.CollectiveOp) else _bytes(op.value.type)
            lines.append(
                f"device {d}: {' '.join(tasks)} | {comm} messages, {nbytes} B sent, "
                f"peak {program_peak_bytes(prog)} B"
            )
        return "\n".join(lines)

    def save(self, plan_dir: str, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        from piper.runtime.launch import check_batches, save_plan

        try:
            check_batches(self.module, list(batches))
        except PiperError as e:  # say which directives set the batch layout
            from piper.directives.strategy import Replicate, Split, describe

            setting = [describe(d) for d in self.directives if isinstance(d, Split | Replicate)]
            if setting:
                e.message += f" (set by {', '.join(setting)}; capture traced one microbatch)"
            raise
        save_plan(plan_dir, self.module, self.captured.values, list(batches))

    def run(self, batches: Sequence[dict[str, torch.Tensor]], steps: int | None = None,
            plan_dir: str | None = None, timeout: float = 60.0, worker_args=()):
        """Train `steps` steps (default: one per batch) on local processes."""
        import tempfile

        from piper.runtime.launch import run_plan

        steps = len(batches) if steps is None else steps
        with tempfile.TemporaryDirectory() as tmp:
            where = plan_dir or tmp
            self.save(where, batches)
            return run_plan(where, self.num_devices, steps, timeout, tuple(worker_args))


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
    return Plan(module, captured, directives, expanded)
