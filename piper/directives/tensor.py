"""The `tensor_parallel` directive: split chosen Linear layers' weights over n devices.

    strategy = [piper.tensor_parallel(2, plan={"blocks.0.fc": "colwise",
                                               "blocks.1.fc": "rowwise"})]

`plan` maps module-path patterns (fnmatch, `layers.*.mlp.up`) to
`"colwise"` (weight split on its output features, bias too), `"rowwise"`
(weight split on its input features; the output is a partial sum, all-reduced
over the new mesh axis `tp`), `"vocab"` (an embedding split over its rows,
the vocabulary; the lookup is a partial sum) or `"loss"` (the LM head split
over the vocabulary, the cross entropy computed on its logits' shards), the
vocabulary of PyTorch's
`parallelize_module`. In JSON: `{"directive": "tensor_parallel", "n": 2,
"plan": {"blocks.0.fc": "colwise", "blocks.1.fc": "rowwise"}}`. Without a
plan (`plan=None`, JSON without "plan") the pass finds Megatron's pattern in
the captured forward: attention q/k/v and MLP up/gate colwise, their output
and down projections rowwise (piper/passes/tensor_parallel_auto.py).

`sequence=True` (JSON `"sequence": true`) adds Megatron's sequence
parallelism: between the Linear pairs the activations are split along the
sequence, reduce_scatter and all_gather replacing each all_reduce.

It applies after the schedule, like expert_parallel: the pass cuts each task
at its partial sums in place (piper/passes/tensor_parallel.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from piper.diagnostics import PiperError
from piper.directives.base import Directive
from piper.directives.options import MAX_COUNT, choice, flag, identifier, integer
from piper.passes.tensor_parallel import STYLES
from piper.passes.tensor_parallel import TensorParallel as TensorParallelPass


@dataclass(frozen=True, repr=False)
class TensorParallel(Directive):
    """Tensor parallelism over `n` devices of mesh axis `axis`; `plan` is a
    tuple of (module-path pattern, style) pairs, empty for the automatic plan
    (`plan=None`: Megatron's pattern found in the captured forward)."""

    directive: ClassVar[str] = "tensor_parallel"

    n: int
    plan: tuple[tuple[str, str], ...] = ()
    sequence: bool = False
    axis: str = "tp"

    def __post_init__(self):
        integer("tensor_parallel: n", self.n, 1, MAX_COUNT)
        identifier("tensor_parallel: axis", self.axis)
        flag("tensor_parallel: sequence", self.sequence)

    def _json_option(self, name: str, v):
        if name == "plan":
            return dict(v)
        return super()._json_option(name, v)

    def passes(self) -> list[TensorParallelPass]:
        text = ",".join(f"{p}:{s}" for p, s in self.plan)
        return [TensorParallelPass(n=self.n, plan=text, axis=self.axis, sequence=self.sequence)]


def tensor_parallel(n: int, plan: dict[str, str] | None = None, sequence: bool = False,
                    axis: str = "tp") -> TensorParallel:
    if plan is not None and not isinstance(plan, dict):
        raise PiperError(f"tensor_parallel: plan must be an object mapping module-path "
                         f"patterns to \"colwise\", \"rowwise\", \"vocab\" or \"loss\", got {plan!r}")
    if plan is not None and not plan:
        raise PiperError("tensor_parallel: the plan is empty; give module patterns and "
                         "styles, or plan=None for Piper to find them")
    pairs = []
    for pattern, style in (plan or {}).items():
        if not isinstance(pattern, str) or not pattern or any(c in pattern for c in ",:\""):
            raise PiperError(f"tensor_parallel: plan pattern must be a module path pattern "
                             f"without ',', ':' or '\"', got {pattern!r}")
        choice(f"tensor_parallel: plan[{pattern!r}]", style, STYLES)
        pairs.append((pattern, style))
    integer("tensor_parallel: n", n, 1, MAX_COUNT)
    return TensorParallel(n, tuple(pairs), sequence, axis)
