"""verify-plan: check per-device programs as a whole (see analysis/plan_check)."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from piper.analysis.plan_check import check_plan


@dataclass(frozen=True)
class VerifyPlan(ModulePass):
    name = "verify-plan"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_plan(op)
