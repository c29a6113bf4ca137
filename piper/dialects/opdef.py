"""Op definitions for plan-sized IR: the dist and sched dialects.

A plan holds 10^5 tasks and its programs 10^6 instructions, most of them a
few kinds of small ops (`sched.free`, `sched.wait`, `dist.send`) that
differ only in their operands. Two things xDSL does generically per op
cost more than everything else Piper does with them, and neither needs to
be redone per op:

- IRDL's generic checks (operand and result counts and constraints,
  properties) depend only on the op's class, the types of its operands
  and results and its property and attribute values; where every
  constraint asks for a class (`BaseAttr`, as all of dist's and sched's
  do), only on the classes of those. `op_definition` is
  `irdl_op_definition` that remembers which such signatures passed, and
  runs the op's own `verify_` every time, as before, and the check of
  its parent (`lives_in`). Only ops without regions, successors and
  traits are memoized (traits may look at more).
- Building an op through `IRDLOperation.__init__` maps every argument
  onto the definition. `build` gives an op of a fixed shape (each operand
  and result definition filled in order, no segment sizes) straight to
  `Operation.__init__`; what it skips the verifier checks.

Other signatures are keyed by the identity of their attributes, which the
memo keeps alive; it is emptied when it grows past `_MEMO_LIMIT`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from xdsl.dialects.builtin import FloatAttr, f64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation, irdl_op_definition
from xdsl.utils.exceptions import VerifyException
from xdsl.irdl.constraints import AnyAttr, BaseAttr, RangeLengthConstraint, RangeOf

_MEMO_LIMIT = 1 << 17
# signature -> the attributes it names (kept alive, so that ids stay theirs)
_PASSED: dict[tuple, tuple] = {}


def _signature(op: Operation) -> tuple[tuple, tuple]:
    """The op's signature by the identity of its attributes (and them)."""
    ins = tuple(v.type for v in op.operands)
    outs = tuple(r.type for r in op.results)
    props = tuple(op.properties.items())
    attrs = tuple(op.attributes.items())
    key = (type(op), len(op.regions), len(op.successors),
           tuple(map(id, ins)), tuple(map(id, outs)),
           tuple((k, id(v)) for k, v in props), tuple((k, id(v)) for k, v in attrs))
    return key, (ins, outs, props, attrs)


def _class_signature(op: Operation) -> tuple[tuple, tuple]:
    """The op's signature by the classes of its attributes: enough where
    every constraint only asks for a class (`_by_class`)."""
    key = (type(op), len(op.regions), len(op.successors),
           tuple(type(v.type) for v in op.operands), tuple(type(r.type) for r in op.results),
           tuple((k, type(v)) for k, v in op.properties.items()))
    return key, ()


def _by_class(constr) -> bool:
    """Whether a constraint's verdict depends on the attribute's class alone."""
    if isinstance(constr, BaseAttr | AnyAttr):
        return True
    if isinstance(constr, RangeOf):
        return _by_class(constr.constr)
    if isinstance(constr, RangeLengthConstraint):
        return _by_class(constr.constraint)
    return False


def op_definition(cls: type[IRDLOperation]) -> type[IRDLOperation]:
    """`irdl_op_definition`, with IRDL's generic checks memoized by signature."""
    own = getattr(cls, "verify_", None)
    if own is Operation.verify_:
        own = None
    cls = irdl_op_definition(cls)
    op_def = cls.get_irdl_definition()
    if op_def.regions or op_def.successors or list(op_def.traits):
        return cls
    defs = [d for _, d in op_def.operands] + [d for _, d in op_def.results] + \
        list(op_def.properties.values())
    signature = _signature
    if not op_def.attributes and all(_by_class(d.constr) for d in defs):
        signature = _class_signature

    def verify_(self: IRDLOperation) -> None:
        key, alive = signature(self)
        if key not in _PASSED:
            op_def.verify(self)
            if len(_PASSED) >= _MEMO_LIMIT:
                _PASSED.clear()
            _PASSED[key] = alive
        if own is not None:
            own(self)
        home = self._lives_in
        if home is not None and (parent := self.parent_op()) is not None and (
                not isinstance(parent, home)):
            raise VerifyException(f"must be directly inside a '{home.name}', not in "
                                  f"'{parent.name}'")

    cls.verify_ = verify_
    cls._lives_in = None
    return cls


def lives_in(parent: type[Operation], *ops: type[IRDLOperation]) -> None:
    """Ops that must sit directly in a `parent` op (a dist op in a
    dist.plan, a sched instruction in a sched.program): checked with the
    op's own verify_, every time (a trait would turn the memo off)."""
    for cls in ops:
        cls._lives_in = parent


def build(op: IRDLOperation, operands: Sequence[SSAValue] = (),
          result_types: Sequence[Attribute] = (),
          properties: Mapping[str, Attribute] = {}) -> None:
    """Initialise `op` (inside its __init__) from flat operands and result
    types, for ops whose definition has no segment sizes."""
    Operation.__init__(op, operands=operands, result_types=result_types, properties=properties)


@functools.lru_cache(maxsize=1024)
def f64_attr(value: float) -> FloatAttr:
    """One FloatAttr per f64 value (attributes are immutable): plans hold
    10^5 sums with the same scale, and building a FloatAttr is slow."""
    return FloatAttr(value, f64)
