"""A load cache beside plan.mlir: the parsed module, pickled.

Why: every rank of a run parses the same plan.mlir, and xDSL parses a
plan's text at well under 100 KB/s (a ZeRO-3 plan of a small GPT is
0.7 MB: 10-25 s per rank on a busy 2-core machine). `save_plan` already
holds the module it prints, so it also writes that module here; a worker
unpickles it about ten times faster than it would parse the text.

Rules that keep plan.mlir the plan:
- the cache records the SHA-256 of the plan.mlir text it was made with; a
  worker uses it only when plan.mlir still has that hash, and parses the
  text otherwise (an edited plan.mlir always wins);
- unpickling resolves nothing but classes of xdsl, piper.dialects and
  immutabledict (no functions, no other modules), so a plan directory
  stays data, never code;
- any failure to write or read the cache falls back to parsing.

Pickling follows the ops' linked lists recursively, so it runs on a thread
with a large stack and a raised recursion limit.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import threading

from xdsl.dialects.builtin import ModuleOp

CACHE = "plan.cache"
_ALLOWED_MODULES = ("xdsl.", "piper.dialects.", "immutabledict")
_STACK = 1 << 30  # bytes of (virtual) stack for the pickling thread


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _dumps(module: ModuleOp) -> bytes | None:
    result: dict = {}

    def work():
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, 1_000_000))
        try:
            try:
                result["data"] = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
            except RecursionError:
                # Pythons whose C recursion limit is fixed: the Python pickler
                # recurses on the interpreter's own (raised) limit.
                buf = io.BytesIO()
                pickle._Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(module)
                result["data"] = buf.getvalue()
        except Exception:  # not picklable here: no cache, workers parse
            pass
        finally:
            sys.setrecursionlimit(old)

    old_size = threading.stack_size(_STACK)
    try:
        thread = threading.Thread(target=work, name="piper-plan-cache")
        thread.start()
    finally:
        threading.stack_size(old_size)
    thread.join()
    return result.get("data")


def write_cache(plan_dir: str, text: str, module: ModuleOp) -> bool:
    """Store `module` (whose printed form is `text`) beside plan.mlir."""
    data = _dumps(module)
    path = os.path.join(plan_dir, CACHE)
    if data is None:
        if os.path.exists(path):
            os.remove(path)
        return False
    with open(path, "wb") as f:
        pickle.dump({"mlir_sha256": _digest(text), "module": data}, f,
                    protocol=pickle.HIGHEST_PROTOCOL)
    return True


class _IRUnpickler(pickle.Unpickler):
    """Resolves IR classes only."""

    def find_class(self, module: str, name: str):
        if module.startswith(_ALLOWED_MODULES):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
        raise pickle.UnpicklingError(f"plan cache: '{module}.{name}' is not an IR class")


def _read_cache(path: str, text: str) -> ModuleOp | None:
    try:
        with open(path, "rb") as f:
            outer = _IRUnpickler(f).load()
        if not isinstance(outer, dict) or outer.get("mlir_sha256") != _digest(text):
            return None
        module = _IRUnpickler(io.BytesIO(outer["module"])).load()
    except Exception:
        return None
    return module if isinstance(module, ModuleOp) else None


def read_plan(plan_dir: str) -> ModuleOp:
    """The plan of a plan directory: from the cache when it was made from
    this very plan.mlir, else parsed (errors point into plan.mlir)."""
    from piper.ir import parse_module

    with open(os.path.join(plan_dir, "plan.mlir")) as f:
        text = f.read()
    cache = os.path.join(plan_dir, CACHE)
    if os.path.exists(cache):
        module = _read_cache(cache, text)
        if module is not None:
            return module
    return parse_module(text, "plan.mlir")
