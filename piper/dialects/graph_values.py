"""Conversion between Python/torch argument values and graph attributes.

Capture turns fx node arguments into attributes; executors turn them back
into Python values (with operands substituted by runtime tensors); the
`graph.aten` verifier uses the same path on meta tensors to check shapes.
"""

from __future__ import annotations

import sys

from collections.abc import Callable, Sequence
from typing import Any

from xdsl.dialects.builtin import (
    ArrayAttr,
    FloatAttr,
    IntegerAttr,
    NoneAttr,
    StringAttr,
    TensorType,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute
from xdsl.utils.exceptions import VerifyException

from piper.dialects.graph import (
    ArgRefAttr,
    DeviceAttr,
    EnumAttr,
    builtin_operator,
    element_type,
    is_dtype_attr,
    torch_dtype,
)

_ENUMS = (
    "preserve_format",
    "contiguous_format",
    "channels_last",
    "strided",
    "sparse_coo",
)


def to_attr(value: Any, ref: Callable[[Any], ArgRefAttr | None]) -> Attribute:
    """Encode one fx argument. `ref` maps a graph node to its operand ref."""
    r = ref(value)
    if r is not None:
        return r
    if value is None:
        return NoneAttr()
    if isinstance(value, bool):
        return IntegerAttr(int(value), i1)
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, f64)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, list | tuple):
        return ArrayAttr([to_attr(v, ref) for v in value])
    # a torch value exists only once torch is loaded: IR-building passes
    # that encode plain numbers do not import it
    torch = sys.modules.get("torch")
    if torch is None:
        raise TypeError(f"argument {value!r} of type {type(value).__name__}")
    if isinstance(value, torch.dtype):
        return element_type(value)
    if isinstance(value, torch.device):
        return DeviceAttr(value.type)
    if isinstance(value, torch.memory_format | torch.layout):
        name = str(value).removeprefix("torch.")
        if name in _ENUMS:
            return EnumAttr(name)
    raise TypeError(f"argument {value!r} of type {type(value).__name__}")


def from_attr(attr: Attribute, operands: Sequence[Any], device: Any) -> Any:
    """Decode one argument attribute; operands are substituted by position.
    Only devices, enums and dtypes need torch, so only they import it."""
    if isinstance(attr, ArgRefAttr):
        return operands[attr.index.data]
    if isinstance(attr, ArrayAttr):
        return [from_attr(a, operands, device) for a in attr.data]
    if isinstance(attr, NoneAttr):
        return None
    if isinstance(attr, IntegerAttr):
        v = attr.value.data
        return bool(v) if attr.type == i1 else int(v)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, DeviceAttr):
        import torch  # lazy: printing and verifying IR runs without torch

        return torch.device(device)
    if isinstance(attr, EnumAttr):
        import torch  # lazy: printing and verifying IR runs without torch

        return getattr(torch, attr.value.data)
    if is_dtype_attr(attr):
        return torch_dtype(attr)
    raise TypeError(f"cannot decode argument attribute {attr}")


def resolve_target(name: str):
    """The torch OpOverload for `aten.<op>.<overload>`, or None."""
    import torch

    ns, op, overload = name.split(".")
    try:
        return getattr(getattr(getattr(torch.ops, ns), op), overload)
    except (AttributeError, RuntimeError):
        return None


def call_args(op, operands: Sequence[Any], device: Any):
    """Positional and keyword arguments of a `graph.aten` op for a call."""
    args = [from_attr(a, operands, device) for a in op.args.data]
    kwargs = {k: from_attr(v, operands, device) for k, v in op.kwargs.data.items()}
    return args, kwargs


_META_OK: set = set()  # signatures already checked: the check is pure


def check_against_meta(op) -> None:
    """Verify a graph.aten op's result types by running it on meta tensors.

    The check is a pure function of the signature (operator, arguments,
    operand and result types) and the torch release, so a signature that
    passed is remembered in this process and, for aten/prims operators, on
    disk (`remember`): a tool that only verifies and prints IR
    whose signatures all passed before never imports torch."""
    key = (op.target, op.args, op.kwargs, tuple(v.type for v in op.inputs),
           tuple(r.type for r in op.outputs))
    if key in _META_OK:
        return
    builtin = builtin_operator(op.target.data)
    if not builtin or remembered("verified", key) is None:
        _check_against_meta(op)
        if builtin:
            remember("verified", key, "ok")
    _META_OK.add(key)


def remembered(kind: str, key) -> str | None:
    """What `remember(kind, key, ...)` stored, in this or an earlier process
    of the same torch release; None if nothing."""
    return _disk_cache().seen.get(_digest(kind, key))


def remember(kind: str, key, value: str) -> None:
    """Store the result of a pure computation on aten operators (a passed
    verification, inferred result types) for later processes."""
    _disk_cache().add(_digest(kind, key), value)


def _digest(kind: str, key) -> str:
    import hashlib

    return hashlib.sha256(f"{kind}:{key!r}".encode()).hexdigest()[:32]


class _SignatureCache:
    """Results of pure checks on aten operators, one `digest value` line
    each, in a file per torch release under $PIPER_CACHE_DIR (default
    ~/.cache/piper). Appends are one short line with O_APPEND, so
    concurrent processes can share it; an unreadable or unwritable file
    only turns the cache off. PIPER_CACHE_DIR=off turns it off."""

    def __init__(self):
        self.seen: dict[str, str] = {}
        self.path = None
        import os

        root = os.environ.get("PIPER_CACHE_DIR") or os.path.join(
            os.path.expanduser("~"), ".cache", "piper")
        if root == "off":
            return
        try:
            from importlib.metadata import version

            self.path = os.path.join(root, f"aten-signatures-torch-{version('torch')}.txt")
            os.makedirs(root, exist_ok=True)
            if os.path.exists(self.path):
                with open(self.path) as f:
                    for ln in f:
                        if not ln.endswith("\n"):  # a line another process is writing
                            continue
                        digest, _, value = ln.rstrip("\n").partition(" ")
                        if len(digest) == 32 and value:
                            self.seen[digest] = value
        except Exception:  # no cache: every check runs
            self.path = None

    def add(self, digest: str, value: str) -> None:
        self.seen[digest] = value
        if self.path is None:
            return
        try:
            import os

            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{digest} {value}\n".encode())
            finally:
                os.close(fd)
        except OSError:
            self.path = None


_CACHE: list = []


def _disk_cache() -> _SignatureCache:
    if not _CACHE:
        _CACHE.append(_SignatureCache())
    return _CACHE[0]


def _check_against_meta(op) -> None:
    import torch

    fn = resolve_target(op.target.data)
    if fn is None:
        if builtin_operator(op.target.data):
            raise VerifyException(f"unknown operator '{op.target.data}'")
        raise VerifyException(
            f"unknown operator '{op.target.data}': a custom operator must be registered "
            f"(torch.library) in this process; import the module that defines it "
            f"(piper-opt --load MODULE, piper-run --load MODULE)")
    metas = []
    for v in op.inputs:
        t = v.type
        assert isinstance(t, TensorType)
        metas.append(
            torch.empty(t.get_shape(), dtype=torch_dtype(t.element_type), device="meta")
        )
    try:
        args, kwargs = call_args(op, metas, "meta")
        out = fn(*args, **kwargs)
    except Exception as e:  # the operator itself rejects the arguments
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VerifyException(f"'{op.target.data}' rejects its arguments: {msg}")
    outs = list(out) if isinstance(out, tuple | list) else [out]
    outs = [o for o in outs if isinstance(o, torch.Tensor)]
    if len(outs) != len(op.outputs):
        raise VerifyException(
            f"'{op.target.data}' produces {len(outs)} tensors, op declares "
            f"{len(op.outputs)} results"
        )
    for i, (o, r) in enumerate(zip(outs, op.outputs, strict=True)):
        expected = TensorType(element_type(o.dtype), list(o.shape))
        if r.type != expected:
            raise VerifyException(
                f"result {i} of '{op.target.data}' has type {r.type}, "
                f"but the operands give {expected}"
            )
