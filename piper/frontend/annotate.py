"""Region annotations: which ops of a model form pipeline stages, experts, ...

Two forms, which mean the same thing to capture:

- inside `forward`, around model code: `with piper.annotate("PP"): ...`;
  each entry of a tag name takes the next integer index (a loop over layers
  yields PP 0, 1, 2, ...), or `annotate("EP", e)` names the index;
- from outside, on submodules of a model you did not write:
  `piper.annotate("PP", model.model.layers)` makes each module of a
  ModuleList (or list, or one module) its own region, indexed 0, 1, 2, ...
  in order; `piper.annotate("PP", {layer: i, ...})` sets the indices (several
  modules may share one). Nothing in the model changes: the annotation is
  kept beside it, and capture enters the region whenever the module runs.

Tags nest (an "EP" region inside a "PP" region). They ride on torch.fx's
node metadata (`fx.traceback.annotate`), which aot_autograd copies from each
forward op to the backward ops it produced, so forward and backward ops of
one region carry the same tags.

Counters restart at every forward call, so the same model traced twice gets
the same indices. Outside capture the context manager only counts.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import weakref
from collections.abc import Iterator

import torch
import torch.fx.traceback as fx_traceback

from piper.diagnostics import PiperError

MODULE_KEY = "__piper_module__"
# The location of the ops a `loss_fn` outside the model runs.
LOSS_FN = "loss_fn"
_TAG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_state = threading.local()

# Annotations from outside: module -> {tag: (index, call id)}. Weak, so an
# annotation lives as long as its module and never keeps a model alive.
_OUTSIDE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# call id -> the modules that call annotated (to find ones outside the model).
_CALLS: dict[int, list[weakref.ref]] = {}
_call_ids = itertools.count()


def _counters() -> dict[str, int]:
    if not hasattr(_state, "counters"):
        _state.counters = {}
    return _state.counters


def reset_counters() -> None:
    """Start indices from 0 again (called at the start of each forward)."""
    _counters().clear()


def _check_tag(tag) -> None:
    if not isinstance(tag, str) or not _TAG_NAME.match(tag) or tag == "PASS":
        raise PiperError(
            f"annotate: tag {tag!r} must be an identifier (letters, digits, _) "
            "other than 'PASS'"
        )


def annotate(tag: str, where=None):
    """Mark a region `tag`: around code (`with annotate(tag[, index])`) or on
    modules from outside (`annotate(tag, modules)`; see the module docstring).

    `where`: None or an int index (context-manager form); an nn.Module, a
    ModuleList, a list/tuple of modules, or a dict {module: index}.
    """
    _check_tag(tag)
    if where is None or (isinstance(where, int) and not isinstance(where, bool)):
        if where is not None and where < 0:
            raise PiperError(f"annotate: index {where} of tag '{tag}' must be 0 or more")
        return _region(tag, where)
    _annotate_modules(tag, where)
    return None


@contextlib.contextmanager
def _region(tag: str, index: int | None) -> Iterator[int]:
    counters = _counters()
    if index is None:
        index = counters.get(tag, 0)
    counters[tag] = max(counters.get(tag, 0), index + 1)
    with fx_traceback.annotate({tag: index}):
        yield index


def _describe_module(m: torch.nn.Module) -> str:
    return type(m).__name__


def _annotate_modules(tag: str, where) -> None:
    if isinstance(where, dict):
        pairs = list(where.items())
    elif isinstance(where, torch.nn.ModuleList | torch.nn.Sequential | list | tuple):
        pairs = list(zip(where, itertools.count()))
    elif isinstance(where, torch.nn.Module):
        pairs = [(where, 0)]
    else:
        raise PiperError(
            f"annotate('{tag}', ...): expected a module, a ModuleList, a list of modules or "
            f"a dict {{module: index}}, got {type(where).__name__}"
        )
    if not pairs:
        raise PiperError(f"annotate('{tag}', ...): no modules given")
    seen: dict[int, int] = {}
    for k, (m, i) in enumerate(pairs):
        if not isinstance(m, torch.nn.Module):
            raise PiperError(
                f"annotate('{tag}', ...): entry {k} is a {type(m).__name__}, not an nn.Module")
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise PiperError(
                f"annotate('{tag}', ...): the index of {_describe_module(m)} (entry {k}) is "
                f"{i!r}; indices are integers 0, 1, ...")
        if id(m) in seen:
            raise PiperError(
                f"annotate('{tag}', ...): {_describe_module(m)} is given twice (entries "
                f"{seen[id(m)]} and {k})")
        seen[id(m)] = k
        old = _OUTSIDE.get(m, {}).get(tag)
        if old is not None and old[0] != i:
            raise PiperError(
                f"annotate('{tag}', ...): {_describe_module(m)} (entry {k}) is already in "
                f"{tag} region {old[0]}, not {i}; call piper.clear_annotations(model) first "
                f"to annotate it anew")
    call = next(_call_ids)
    _CALLS[call] = [weakref.ref(m) for m, _ in pairs]
    for m, i in pairs:
        _OUTSIDE.setdefault(m, {})[tag] = (i, call)


def clear_annotations(model: torch.nn.Module, tag: str | None = None) -> None:
    """Forget the outside annotations on `model` and its submodules (all
    tags, or only `tag`)."""
    for m in model.modules():
        tags = _OUTSIDE.get(m)
        if tags is None:
            continue
        for t in [t for t in tags if tag is None or t == tag]:
            del tags[t]
        if not tags:
            del _OUTSIDE[m]


def outside_tags(model: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Module path -> {tag: index} of the outside annotations in `model`.

    Errors: an annotate call whose modules are partly outside `model`, and
    a module inside another module of the same tag (overlapping regions)."""
    paths = {id(m): name for name, m in model.named_modules()}
    found: dict[str, dict[str, int]] = {}
    calls: set[int] = set()
    for name, m in model.named_modules():
        for tag, (i, call) in _OUTSIDE.get(m, {}).items():
            found.setdefault(name, {})[tag] = i
            calls.add(call)
    for call in sorted(calls):
        mods = [r() for r in _CALLS.get(call, [])]
        outside = [m for m in mods if m is not None and id(m) not in paths]
        if outside:
            what = ", ".join(_describe_module(m) for m in outside[:4])
            raise PiperError(
                f"annotate: {len(outside)} of the {len(mods)} modules annotated together are "
                f"not inside the model being captured ({what}); annotate the model's own "
                f"submodules (e.g. model.model.layers)")
    for name, mine in found.items():
        for other, theirs in found.items():
            inside = other != name and (other == "" or name.startswith(other + "."))
            common = sorted(mine.keys() & theirs.keys()) if inside else []
            if common:
                tag = common[0]
                raise PiperError(
                    f"annotate: '{name}' ({tag} {mine[tag]}) is inside "
                    f"'{other or 'the model'}' ({tag} {theirs[tag]}); regions of one tag "
                    f"must not overlap")
    return found


@contextlib.contextmanager
def module_paths(model, tags: dict[str, dict[str, int]] | None = None) -> Iterator[None]:
    """Record each submodule's path on the ops it runs (for op locations),
    and enter the outside annotations `tags` (path -> {tag: index}) while
    the annotated modules run."""
    tags = tags or {}
    handles = []
    stacks: dict[int, list] = {}
    entered: list = []  # annotations in force, innermost last

    def pre(name):
        meta = {MODULE_KEY: name, **tags.get(name, {})} if name else dict(tags.get(name, {}))

        def hook(mod, args):
            cm = fx_traceback.annotate(meta)
            cm.__enter__()
            stacks.setdefault(id(mod), []).append(cm)
            entered.append(cm)

        return hook

    def post(mod, args, out):
        cm = stacks[id(mod)].pop()
        entered.remove(cm)
        cm.__exit__(None, None, None)

    for name, mod in model.named_modules():
        if name or name in tags:
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
