"""Annotations users write in model code: `with piper.annotate("PP"): ...`.

Each entry of a tag name takes the next integer index (a loop over layers
yields PP 0, 1, 2, ...); tags nest (an "EP" region inside a "PP" region).
The tags ride on torch.fx's node metadata (`fx.traceback.annotate`), which
aot_autograd copies from each forward op to the backward ops it produced,
so forward and backward ops of one region carry the same tags.

Counters restart at every forward call, so the same model traced twice gets
the same indices. Outside capture the context manager only counts.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import torch.fx.traceback as fx_traceback

MODULE_KEY = "__piper_module__"
# The location of the ops a `loss_fn` outside the model runs.
LOSS_FN = "loss_fn"
_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_state = threading.local()


def _counters() -> dict[str, int]:
    if not hasattr(_state, "counters"):
        _state.counters = {}
    return _state.counters


def reset_counters() -> None:
    """Start indices from 0 again (called at the start of each forward)."""
    _counters().clear()


@contextlib.contextmanager
def annotate(tag: str, index: int | None = None) -> Iterator[int]:
    """Mark the ops run inside as belonging to region `tag` number `index`.

    Without `index`, the region gets the next index for this tag name.
    Yields the index used.
    """
    if not isinstance(tag, str) or not _TAG_NAME.match(tag) or tag == "PASS":
        raise ValueError(
            f"annotate: tag {tag!r} must be an identifier (letters, digits, _) "
            "other than 'PASS'"
        )
    counters = _counters()
    if index is None:
        index = counters.get(tag, 0)
    counters[tag] = max(counters.get(tag, 0), index + 1)
    with fx_traceback.annotate({tag: index}):
        yield index


@contextlib.contextmanager
def module_paths(model) -> Iterator[None]:
    """Record each submodule's path on the ops it runs (for op locations)."""
    handles = []
    stacks: dict[int, list] = {}
    entered: list = []  # annotations in force, innermost last

    def pre(name):
        def hook(mod, args):
            cm = fx_traceback.annotate({MODULE_KEY: name})
            cm.__enter__()
            stacks.setdefault(id(mod), []).append(cm)
            entered.append(cm)

        return hook

    def post(mod, args, out):
        cm = stacks[id(mod)].pop()
        entered.remove(cm)
        cm.__exit__(None, None, None)

    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(pre(name)))
            handles.append(mod.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        # A forward that raised skipped its post hooks: end their annotations.
        while entered:
            with contextlib.suppress(KeyError):  # tracing may have reset the meta
                entered.pop().__exit__(None, None, None)
