"""The `fuse` directive: lower stage functions to fused kernels.

    strategy = [piper.place(pp=2), piper.split(4), piper.order(schedule="1f1b"),
                piper.fuse(),                                        # every stage: Triton
                piper.fuse(kernels="aten", filter={"PASS": "OPT"})]  # optimizer: aten

`kernels` says what runs the compute of the stage functions `filter` selects:

    "triton"  matmul epilogues, reductions and pointwise chains are fused
              (fuse-matmul-epilogue, fuse-reductions, fuse-elementwise) and
              every group is marked `backend triton`: a generated kernel
    "aten"    the same groups, marked `backend aten`: their ops run one by one
              with aten (the fallback, to compare or to debug)
    "off"     no groups: groups an earlier `fuse` formed are dissolved

`filter` is a task filter (piper/tasks/filters.py): `{"PP": 1, "PASS":
"B"}`, `{"PASS": ["F", "B"]}`, `{"EP": 0}`, `"*"`; "B" also selects the BI
and BW halves of a split backward. A stage function serves every
microbatch, so MB cannot be filtered on. No filter: every stage function.
Several `fuse` directives apply in the order given, so a later one
overrides an earlier one on the functions both select. JSON:
`{"directive": "fuse", "kernels": "aten", "filter": {"PASS": "B"}}`.

It is the `fuse` pass (piper/passes/fuse.py: the fusion passes, then
kernel-backend). The directive only rewrites IR: the runtime reads each group's backend off
the plan (piper/backend/kernels.py) and never sees the directive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from piper.diagnostics import PiperError
from piper.directives.base import Directive
from piper.directives.options import choice, filter_of
from piper.tasks.filters import ALL, Filter
from piper.passes.fuse import KERNELS
from piper.passes.fuse import Fuse as FusePass


@dataclass(frozen=True, repr=False)
class Fuse(Directive):
    """Fuse the stage functions `filter` selects into kernels run by `kernels`.

    `filter` is kept in its JSON form ("*" or a dict), so the directive
    prints and reads back as JSON like any other.
    """

    directive: ClassVar[str] = "fuse"

    kernels: str = "triton"
    filter: Any = "*"

    def __post_init__(self):
        choice("fuse: kernels", self.kernels, KERNELS)
        f = filter_of("fuse: filter", self.filter)
        if "MB" in f.names:
            raise PiperError(
                f"fuse: filter {f} names MB, but a stage function serves every microbatch; "
                "select stages (PP), passes (PASS) or tags"
            )
        object.__setattr__(self, "filter", f.to_json())

    def selection(self) -> Filter:
        return Filter.of(self.filter)

    def passes(self) -> list[FusePass]:
        f = self.selection()
        return [FusePass(kernels=self.kernels, filter="" if f == ALL else f.text())]


def fuse(kernels: str = "triton", filter: Any = "*") -> Fuse:  # noqa: A002
    """Fuse stage functions into kernels: "triton", "aten" (fallback) or "off"."""
    return Fuse(kernels, "*" if filter is None else filter)
