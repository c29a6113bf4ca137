"""Piper: a programmable distributed-training compiler for PyTorch.

The names below load on first use (PEP 562), so that tools which only
read and print IR (piper-opt) start without importing torch.
"""

import importlib

_EXPORTS = {
    "Plan": "piper.api",
    "compile": "piper.api",
    "load_checkpoint": "piper.api",
    "PiperError": "piper.diagnostics",
    "expert_parallel": "piper.directives.expert",
    "fuse": "piper.directives.fuse",
    "expand": "piper.directives.strategy",
    "order": "piper.directives.strategy",
    "place": "piper.directives.strategy",
    "recompute": "piper.directives.strategy",
    "replicate": "piper.directives.strategy",
    "shard": "piper.directives.strategy",
    "split": "piper.directives.strategy",
    "split_backward": "piper.directives.strategy",
    "search": "piper.strategy_search",
    "precision": "piper.directives.precision",
    "offload": "piper.directives.offload",
    "tensor_parallel": "piper.directives.tensor",
    "annotate": "piper.frontend.annotate",
    "clear_annotations": "piper.frontend.annotate",
    "CapturedStep": "piper.frontend.capture",
    "capture": "piper.frontend.capture",
}
_MODULES = {"moe": "piper.moe", "optim": "piper.frontend.optim"}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'piper' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
