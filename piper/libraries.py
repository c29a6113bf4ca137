"""The Python modules that register a plan's custom operators.

A model may call operators of its own (`torch.library.custom_op`,
`triton_op`, the ones transformers registers). The IR keeps them as
`graph.aten` ops named `<namespace>.<op>.<overload>`, and every process
that verifies or runs them must have them registered: capture records the
module that defines each one, a plan directory lists them in
`libraries.json`, and piper-run, its ranks and `piper-opt --load MODULE`
import them before they parse a plan. Only importable module names are
listed, never code.
"""

from __future__ import annotations

import importlib
import json
import os

from piper.diagnostics import PiperError

LIBRARIES = "libraries.json"


def load(modules) -> None:
    """Import each module (registering its operators); one clear error if
    one cannot be imported."""
    for name in modules:
        if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
            raise PiperError(f"custom operator library {name!r} is not a module name")
        try:
            importlib.import_module(name)
        except Exception as e:  # any failure of the user's module
            raise PiperError(
                f"cannot import '{name}', the module that registers the plan's custom "
                f"operators: {type(e).__name__}: {e}") from None


def write(plan_dir: str, modules) -> None:
    with open(os.path.join(plan_dir, LIBRARIES), "w") as f:
        json.dump(sorted(modules), f)


def read(plan_dir: str) -> list[str]:
    """The modules a plan directory lists ([] when it lists none)."""
    path = os.path.join(plan_dir, LIBRARIES)
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            modules = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PiperError(f"{path}: not a JSON list of module names ({e})") from None
    if not isinstance(modules, list):
        raise PiperError(f"{path}: not a JSON list of module names")
    return modules


def load_plan_libraries(plan_dir: str) -> None:
    load(read(plan_dir))


def defining_module(op) -> str | None:
    """The module that registered custom operator `op` (an OpOverload) with
    torch.library.custom_op / triton_op, or None if torch does not say."""
    from torch._library.custom_ops import OPDEFS

    opdef = OPDEFS.get(f"{op.namespace}::{op._schema.name.split('::')[-1]}")
    fn = getattr(opdef, "_init_fn", None)
    return getattr(fn, "__module__", None)
