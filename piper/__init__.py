"""Piper: a programmable distributed-training compiler for PyTorch."""

from piper.api import Plan, compile
from piper.directives.strategy import (
    order,
    place,
    recompute,
    replicate,
    shard,
    split,
    split_backward,
)
from piper.frontend import optim
from piper.frontend.annotate import annotate
from piper.frontend.capture import CapturedStep, capture

__all__ = [
    "CapturedStep",
    "Plan",
    "annotate",
    "capture",
    "compile",
    "optim",
    "order",
    "place",
    "recompute",
    "replicate",
    "shard",
    "split",
    "split_backward",
]
