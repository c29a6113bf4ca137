"""Piper: a programmable distributed-training compiler for PyTorch."""

from piper.api import Plan, compile
from piper.diagnostics import PiperError
from piper.directives.expert import expert_parallel
from piper.directives.fuse import fuse
from piper.directives.strategy import (
    expand,
    order,
    place,
    recompute,
    replicate,
    shard,
    split,
    split_backward,
)
from piper.frontend import optim
from piper.frontend.annotate import annotate, clear_annotations
from piper.frontend.capture import CapturedStep, capture

__all__ = [
    "CapturedStep",
    "PiperError",
    "Plan",
    "annotate",
    "capture",
    "clear_annotations",
    "compile",
    "expand",
    "expert_parallel",
    "fuse",
    "optim",
    "order",
    "place",
    "recompute",
    "replicate",
    "shard",
    "split",
    "split_backward",
]
