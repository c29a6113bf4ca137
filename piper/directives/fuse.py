"""The `fuse` directive: lower stage functions to fused kernels.

    strategy = [piper.place(pp=2), piper.split(4), piper.order(schedule="1f1b"),
                piper.fuse(),                                   # every stage, Triton
                piper.fuse(kernels="aten", filter={"PASS": "OPT"})]  # optimizer: aten

`kernels` says what runs the selected stage functions' compute:

    "triton"  matmul epilogues, reductions and pointwise chains are fused
              (fuse-matmul-epilogue, fuse-reductions, fuse-elementwise) and
              every group is marked `backend triton`: a generated kernel
    "aten"    the same groups, marked `backend aten`: their ops run one by one
              with aten (the fallback, to compare or debug)
    "off"     no groups: fused groups an earlier `fuse` made are dissolved

`filter` selects stage functions by task kind and stage, like the other
directives' filters: `{"PASS": "F" | "B" | "I" | "W" | "OPT" | [..] | "*",
"PP": stage | [stages] | "*"}`; "B" also selects the I and W halves of a
split backward. No filter: every stage function. Several `fuse` directives
apply in the order given, so a later one overrides an earlier one on the
functions both select. In JSON: `{"directive": "fuse", "kernels": "aten",
"filter": {"PASS": "B"}}`.

The directive only rewrites IR: the runtime reads each group's backend off
the plan (piper/backend/kernels.py), it never sees the directive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from piper.diagnostics import PiperError

KERNELS = ("triton", "aten", "off")
PASS_KINDS = ("F", "B", "I", "W", "OPT")
FUSION_PASSES = ("fuse-matmul-epilogue", "fuse-reductions", "fuse-elementwise")


def _as_list(value: Any) -> list:
    if value is None or value == "*":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class Fuse:
    """Fuse the selected stage functions into kernels run by `kernels`."""

    kernels: str = "triton"
    filter: dict | None = None

    def __post_init__(self):
        if self.kernels not in KERNELS:
            raise PiperError(
                f"fuse: kernels must be one of {', '.join(repr(k) for k in KERNELS)}, "
                f"got {self.kernels!r}"
            )
        self.selection()  # reject a bad filter when the directive is made

    def selection(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(task kinds, stages) the filter selects; empty means all."""
        flt = self.filter or {}
        if not isinstance(flt, dict):
            raise PiperError(f"fuse: filter must be a dict such as {{\"PASS\": \"F\"}}, got {flt!r}")
        bad = sorted(set(flt) - {"PASS", "PP"})
        if bad:
            raise PiperError(f"fuse: filter keys are PASS and PP, got {bad[0]!r}")
        kinds = _as_list(flt.get("PASS"))
        for k in kinds:
            if k not in PASS_KINDS:
                raise PiperError(
                    f"fuse: filter PASS must be one of {', '.join(PASS_KINDS)} or \"*\", got {k!r}"
                )
        stages = _as_list(flt.get("PP"))
        for s in stages:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise PiperError(f"fuse: filter PP must be a stage number or \"*\", got {s!r}")
        return tuple(kinds), tuple(stages)

    def passes(self) -> list[str]:
        kinds, stages = self.selection()
        sel = ""
        if kinds:
            sel += " kinds=" + ",".join(f'"{k}"' for k in kinds)
        if stages:
            sel += " stages=" + ",".join(str(s) for s in stages)
        backend = f'kernel-backend{{backend="{self.kernels}"{sel}}}'
        if self.kernels == "off":
            return [backend]
        return [f"{p}{{{sel.strip()}}}" if sel else p for p in FUSION_PASSES] + [backend]


def fuse(kernels: str = "triton", filter: dict | None = None) -> Fuse:  # noqa: A002
    """Fuse stage functions into kernels: "triton", "aten" (fallback) or "off"."""
    return Fuse(kernels, dict(filter) if filter is not None else None)
