"""tensor_parallel{n=2 plan="blocks.0.fc:colwise,blocks.1.fc:rowwise" axis="tp"}:
the weights of chosen Linear layers split over n devices (Megatron-style).

Input: a dist.plan (after place / split / replicate / order). `plan` maps
module-path patterns (fnmatch, e.g. `layers.*.mlp.up`) to a style, in the
vocabulary of PyTorch's `parallelize_module`:

- `colwise`: the Linear's weight [out, in] is split on out (dim 0), its
  bias on out: rank b holds rows b*out/n .. (b+1)*out/n - 1 and computes
  that block of the output features;
- `rowwise`: the weight is split on in (dim 1), the bias is replicated:
  rank b multiplies its block of input features by its block of columns,
  giving a partial sum of the output;
- `vocab`: an embedding's weight [V, C] is split on V (dim 0): rank b
  looks up the ids in its rows (offset by b*V/n, a dist.fill given to the
  task) and gives zero for the others, a partial sum; its backward
  accumulates the rank's ids' gradients into its rows;
- `loss`: the LM head split as colwise (over the vocabulary), and the
  cross entropy of its split logits computed on the shards: log_softmax
  from the all-reduced row max and sum of exponentials, nll_loss from the
  all-reduced target log-probabilities; the backward ops likewise.

Output: the plan on a mesh with a new last axis `tp` of size n (device =
old device * n + tp rank). Every tp rank reads the same inputs (tokens are
not split over tp); the loss is computed, identically, on every rank.

How it works: a sharding pass, not a model rewrite. Every value of the plan
gets a layout: replicated, sharded on dim d, or a partial sum. Parameters
named in the plan start sharded (their gradients and optimizer state take
the parameter's layout), everything else replicated; the layouts flow
through each task's function op by op (mm, addmm, t, view, sum, pointwise
ops), every op is re-typed to the local shapes its rank sees, and

- an op that contracts over a sharded dim (mm of [N, in/n] by [in/n, out])
  gives a partial sum. The first op that reads a partial sum (or the task's
  result) reads instead its all_reduce (sum) over the tp group: the task is
  cut there into two tasks, `@F1_tp_p0` and `@F1_tp_p1` (pieces, not ranks:
  every tp rank runs the same functions on its own shards), with one
  `dist.all_reduce` per partial value between them (partial sums added
  together stay partial and are reduced once). A function that needs
  no cut but works on shards becomes `@F0_tp`; the originals stay in the
  module (the graph-level `@train_step` calls them). A rowwise addmm is
  split into the partial mm and an add of the bias after the reduction.
- in the backward this happens where the gradient of a colwise Linear's
  input is formed (grad_out [N, out/n] times weight [out/n, in]), so the
  forward's single all_reduce has its transpose there.

Replicated parameters get identical gradients on every tp rank (every rank
computes the same replicated activations) and need no reduction. Sharded
parameters' optimizer state is sharded like them: the optimizer function
runs on the local shards. Loads and stores of a sharded tensor name their
shard: `shard k of n` for dim 0 (the flat form: for a tensor split on dim 0
the k-th flat slice is the k-th block of rows), `shard k of n dim 1` for a
rowwise weight, so the runtime and checkpoints cut and join the right
blocks.

A fused Linear whose output is split into g equal parts (q, k, v in one)
is colwise in groups: its dim 0 is g groups, each split into n blocks
(layout (0, g); loads `shard b of n dim 0 groups g`), the split gives each
part split on the feature dim, and the backward's cat of the parts'
gradients is split in groups again.

Without a plan (`plan=""`), the plan is found from each stage's forward
(piper/passes/tensor_parallel_auto.py).

After expert_parallel (the only order they compose in: the mesh is
pp x dp x ep x tp), the tasks are its pieces (`@F1_pre`, `@F1_experts0`,
`@F1_post`, ...) and its all_to_alls of replicated values; each piece is
split like any task (with `plan=None`, an expert's MLP is found in its
experts' function), and each all_to_all becomes one per tp rank, among
the devices of that tp rank.

With `sequence=true` (Megatron's sequence parallelism) the activations
between the Linear pairs, [B, T, ...] or [B*T, ...] (B, T: the shape of the
token ids the model embeds), are split along T: an activation's partial
sum is reduce-scattered instead of all-reduced, a layer norm of a
replicated activation takes the rank's shard (dist.shard), layer norms,
softmaxes and pointwise ops run on the shards (reading the shards of
their replicated full-size operands), and an op with no rule for shards
(a colwise Linear, the loss) reads them all-gathered. A replicated
weight's gradient summed over the shards is partial and all-reduced.
Around each collective a reshape and permute make each rank's block
contiguous, so the collectives stay flat.

With ZeRO (shard 1/2/3 before this pass), a split tensor's ZeRO shard k of
dp becomes flat slice k of the rank's block: `shard b*dp+k of n*dp` (blocks
of rows), with `dim d parts dp` (and `groups g`) for other blocks; ZeRO's
dist.shard, pack, reduce_scatter, all_gather and unpack are re-typed to
the blocks and run within each tp rank's dp group. Gradient buckets
(replicate bucket_bytes) likewise.

What is rejected, each with one error: a plan pattern that matches no
module with a weight; a style other than colwise/rowwise/vocab/loss; a vocab
weight read by anything but embedding lookups and a tied head (which gets
the loss layout); a sharded
dimension that does not divide by n (at the op that reads the weight); an
op this pass has no layout rule for reading a sharded value (e.g. a
softmax over a sharded vocabulary), at that op; a fused Linear of unequal
parts; a block that does not divide into the ZeRO shards of its dp group.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    IntAttr,
    ModuleOp,
    NameLoc,
    StringAttr,
    TensorType,
)
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

from piper.diagnostics import PiperError, op_location
from piper.dialects import dist
from piper.dialects.dist import _int_array, type_bytes
from piper.dialects.graph import ArgRefAttr, AtenOp
from piper.dialects.graph_values import from_attr, to_attr
from piper.passes.func_utils import (
    clone_on_axis,
    graph_attrs,
    make_attrs,
    require_dependency_order,
    sanitize,
    set_mesh,
    the_plan,
)
from piper.passes.retype import infer_types
from piper.passes.tensor_parallel_auto import find_plan, fused_parts

_NAME = "tensor_parallel"
STYLES = ("colwise", "rowwise", "vocab", "loss")
PARTIAL = "partial"  # the layout of a partial sum over the tp ranks
# Layouts: None (replicated), PARTIAL, an int d (dim d split into n blocks),
# or (d, o) (dim d is o blocks each split into n: a split dim merged into
# the dim before it by a view, as the heads of attention are when
# [B, H/n, T, D] is viewed as [B*H/n, T, D] for a bmm).


def _dim(layout) -> int:
    return layout if isinstance(layout, int) else layout[0]


def _outer(layout) -> int:
    return 1 if isinstance(layout, int) else layout[1]


def _split(d: int, outer: int = 1):
    return d if outer == 1 else (d, outer)


def _sharded(layout) -> bool:
    return layout is not None and layout != PARTIAL

POINTWISE = {
    "aten.relu.default", "aten.gelu.default", "aten.threshold_backward.default",
    "aten.gelu_backward.default", "aten.tanh.default", "aten.tanh_backward.default",
    "aten.sigmoid.default", "aten.sigmoid_backward.default", "aten.silu.default",
    "aten.silu_backward.default", "aten.neg.default", "aten.exp.default", "aten.log.default",
    "aten.sqrt.default", "aten.rsqrt.default", "aten.abs.default",
    "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor",
    "aten.add.Scalar", "aten.sub.Scalar", "aten.mul.Scalar", "aten.div.Scalar",
    "aten.rsub.Scalar", "aten.pow.Tensor_Scalar", "aten.lerp.Scalar", "aten.lerp.Tensor",
    "aten.addcmul.default", "aten.addcdiv.default", "aten.clone.default",
    "aten.detach.default", "aten._to_copy.default", "aten.where.self",
    "aten.maximum.default", "aten.minimum.default", "aten.masked_fill.Scalar",
}
SOFTMAX = {"aten._softmax.default", "aten._log_softmax.default",
           "aten._softmax_backward_data.default", "aten._log_softmax_backward_data.default"}
# Attention: q, k, v [B, H, T, D] split on the heads (dim 1); every output too.
HEADWISE = {"aten._scaled_dot_product_flash_attention_for_cpu.default",
            "aten._scaled_dot_product_flash_attention_for_cpu_backward.default"}
# the loss layout: cross entropy of logits split over the vocabulary
VOCAB_LOSS = {"aten._log_softmax.default", "aten._log_softmax_backward_data.default",
              "aten.nll_loss_forward.default", "aten.nll_loss_backward.default"}
LAYER_NORM = {"aten.native_layer_norm.default", "aten.native_layer_norm_backward.default"}
VIEWS = {"aten.view.default", "aten.reshape.default", "aten._unsafe_view.default"}
# Ops linear in their one tensor operand: on a partial sum they give a
# partial sum (the all_reduce can wait until the partial sums are added).
LINEAR_OF_ONE = VIEWS | {"aten.t.default", "aten.transpose.int", "aten.permute.default",
                         "aten.clone.default", "aten.detach.default"}


def parse_plan(text: str) -> list[tuple[str, str]]:
    """`pattern:style,pattern:style` -> [(pattern, style)]."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        pattern, sep, style = item.rpartition(":")
        if not sep or not pattern:
            raise PiperError(f"{_NAME}: plan entry '{item}' must be 'module.path.pattern:style'")
        if style not in STYLES:
            raise PiperError(f"{_NAME}: plan entry '{item}': style must be one of "
                             f"{', '.join(STYLES)}, got '{style}'")
        out.append((pattern, style))
    return out


def _local(t, layout, n: int):
    if not _sharded(layout) or not isinstance(t, TensorType):
        return t
    shape = list(t.get_shape())
    shape[_dim(layout)] //= n
    return TensorType(t.element_type, shape)


def _rank(v: SSAValue) -> int:
    return len(v.type.get_shape()) if isinstance(v.type, TensorType) else 0


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def _err(msg: str, where: Operation | None = None) -> PiperError:
    return PiperError(f"{_NAME}: {msg}", op_location(where) if where is not None else None)


def _what(layout) -> str:
    if layout is None:
        return "a replicated value"
    if layout == PARTIAL:
        return "a partial sum"
    return f"a value sharded on dim {_dim(layout)}" + (
        f" (in {_outer(layout)} blocks)" if _outer(layout) > 1 else "")


# ---------------------------------------------------------------------------
# One function, given its arguments' layouts: pieces cut at partial sums
# ---------------------------------------------------------------------------


class _Piece:
    """A function under construction; keys: ("arg", i), ("v", old value),
    ("r", old value) (the all-reduced value of a partial sum)."""

    def __init__(self, name: str):
        self.name = name
        self.block = Block()
        self.env: dict = {}
        self.arg_keys: list = []
        self.arg_attrs: list[dict[str, str]] = []
        self.results: list = []
        self.res_attrs: list[dict[str, str]] = []

    def finish(self) -> func.FuncOp:
        returned = [self.env[k] for k in self.results]
        self.block.add_op(func.ReturnOp(*returned))
        return func.FuncOp(
            self.name,
            ([a.type for a in self.block.args], [r.type for r in returned]),
            Region(self.block),
            arg_attrs=ArrayAttr([make_attrs(a) for a in self.arg_attrs]),
            res_attrs=ArrayAttr([make_attrs(a) for a in self.res_attrs]),
        )


class _FnTP:
    """The tensor-parallel form of one stage function for given argument
    layouts: its pieces, the partial sums reduced between them, and where
    each original result comes from."""

    def __init__(self, fn: func.FuncOp, arg_layouts: list, n: int,
                 tokens: tuple[int, int] | None = None, arg_seq: list | None = None,
                 vocab: frozenset = frozenset(), loss: bool = False):
        self.fn, self.n = fn, n
        self.name = fn.sym_name.data
        self.arg_layouts = list(arg_layouts)
        self.arg_seq = list(arg_seq or [False] * len(arg_layouts))
        self.tokens = tokens  # (batch, seq) of the token ids: sequence parallelism
        self.loss = loss  # cross entropy on logits split over the vocabulary
        block = fn.body.block
        self.layout: dict[SSAValue, object] = {}
        self.level: dict = {}  # key -> piece index where it is available
        self.where: dict = {}  # key -> piece that defines it (None: task operand / collective)
        self.pieces: list[_Piece] = []
        # per piece: the communication after it, (kind, key sent, key received, type)
        self.comms: list[list[tuple]] = []
        self.alias: dict[SSAValue, tuple] = {}  # rowwise addmm -> its biased sum
        # keys made here (collectives, their reshapes, the biased sum):
        # layout, global type, local type (of a collective's result), name
        self.key_layout: dict = {}
        self.key_full: dict = {}
        self.key_type: dict = {}
        self.hints: dict = {}
        self.seq_keys: set = set()  # keys sharded along the sequence (sequence=true)
        self.seq_vals: set[SSAValue] = {a for a, s in zip(block.args, self.arg_seq) if s}
        # partial sums over the sequence shards (the gradients of replicated
        # weights): all-reduced whatever their shape
        self.seq_partial: set[SSAValue] = set()
        # the embeddings' backward ops giving a vocab-split weight's gradient
        self.vocab_grads: set[Operation] = set()
        ret = block.last_op
        for j, v in enumerate(ret.operands if isinstance(ret, func.ReturnOp) else []):
            info = graph_attrs(fn, j, results=True)
            if info.get("kind") == "grad" and info.get("name") in vocab:
                # the embeddings' backward, or (tied) it plus the head's gradient
                todo, found = [v], []
                while todo:
                    o = todo.pop().owner
                    if isinstance(o, AtenOp) and o.target.data == "aten.add.Tensor":
                        todo += list(o.inputs)
                    elif isinstance(o, AtenOp) and \
                            o.target.data == "aten.embedding_dense_backward.default":
                        found.append(o)
                if not found:
                    raise _err(f"@{self.name}: the gradient of the vocab-split "
                               f"'{info.get('name')}' comes from no embedding's backward", ret)
                self.vocab_grads.update(found)
        self._piece(0)
        for i, a in enumerate(block.args):
            self.layout[a] = arg_layouts[i]
            self.level[("arg", i)] = 0
            self.where[("arg", i)] = None
        self.arg_of = {a: i for i, a in enumerate(block.args)}
        # the split parameter a sharded value comes from, for messages
        self.origin: dict[SSAValue, str] = {
            a: graph_attrs(fn, i).get("name", "") for i, a in enumerate(block.args)
            if _sharded(arg_layouts[i])}
        self.changed = any(x is not None for x in arg_layouts)
        for op in block.ops:
            if isinstance(op, func.ReturnOp):
                kinds = [graph_attrs(fn, j, results=True).get("kind")
                         for j in range(len(op.operands))]
                self.result_keys = [self._result(v, kind) for v, kind in zip(
                    op.operands, kinds, strict=True)]
                self.result_layouts = [self._klayout(k) for k in self.result_keys]
                self.result_seq = [self._kseq(k) for k in self.result_keys]
                continue
            if not isinstance(op, AtenOp):
                raise _err(f"cannot split '{op.name}' in @{self.name}", op)
            self._op(op)
        for j, key in enumerate(self.result_keys):
            src = self.where[key]
            if src is None:
                continue
            attrs = {k: x for k, x in graph_attrs(fn, j, results=True).items() if k != "from"}
            sp = self.pieces[src]
            if key in sp.results:
                sp.res_attrs[sp.results.index(key)] = attrs
            else:
                sp.results.append(key)
                sp.res_attrs.append(attrs)
        self.cut = len(self.pieces) > 1

    # -- keys and pieces --------------------------------------------------

    def _key(self, v: SSAValue):
        return ("arg", self.arg_of[v]) if v in self.arg_of else ("v", v)

    def _read(self, v: SSAValue, whole: bool = False):
        """The key an op reads for old value v: the all_reduce of a partial
        sum (with sequence parallelism, the reduce_scatter along the
        sequence of an activation's partial sum, unless `whole`)."""
        if v in self.alias:
            return self.alias[v]
        if self.layout[v] == PARTIAL:
            seq = None if whole or v in self.seq_partial else self._seq_layout(v.type)
            if seq is not None:
                return self._comm("s", ("v", v), seq)
            return self._comm("r", ("v", v))
        return self._key(v)

    def _result(self, v: SSAValue, kind: str | None):
        """The key a result returns: a gradient, parameter or loss whole
        (all-reduced, or gathered from sequence shards)."""
        whole = kind in ("grad", "param", "state", "loss")
        key = self._read(v, whole)
        if whole and self._kseq(key):
            key = self._comm("g", key)
        return key

    # -- keys' layouts and types ---------------------------------------------

    def _old(self, key) -> SSAValue:
        return self.fn.body.block.args[key[1]] if key[0] == "arg" else key[1]

    def _klayout(self, key):
        if key in self.key_layout:
            return self.key_layout[key]
        return None if key[0] == "r" else self.layout[self._old(key)]

    def _kseq(self, key) -> bool:
        return key in self.seq_keys or (key[0] in ("v", "arg") and self._old(key) in self.seq_vals)

    def _full(self, key):
        """The global type of key's value (the type in the unsplit function)."""
        return self.key_full[key] if key in self.key_full else self._old(key).type

    def _seq_layout(self, t):
        """With sequence parallelism, the layout of an activation of type t
        split along the sequence: [B, T, ...] on dim 1, [B*T, ...] on dim 0
        in B blocks; None for other shapes (and without it)."""
        if self.tokens is None or not isinstance(t, TensorType) or len(t.get_shape()) < 2:
            return None
        b, s = self.tokens
        shape = list(t.get_shape())
        if shape[:2] == [b, s]:
            return 1
        if shape[0] == b * s:
            return _split(0, b)
        return None

    def _blocks(self, t, la) -> tuple[int, int]:
        """(A, R): a tensor of type t seen as [A, n, R], where rank b's block
        of layout la is [:, b, :] (so each rank's block is contiguous once
        the n axis is moved first)."""
        shape, d, o = list(t.get_shape()), _dim(la), _outer(la)
        return _prod(shape[:d]) * o, shape[d] // (o * self.n) * _prod(shape[d + 1:])

    def _aten(self, target: str, src, args: list, k: int, old: Operation) -> SSAValue:
        """A one-operand aten op (reshape, permute) of key src in piece k."""
        return self._emit(target, [src], [ArgRefAttr(0), *(to_attr(a, lambda _: None)
                                                           for a in args)], {}, old, None, k)[0]

    def _define(self, key, value: SSAValue, k: int, la, full, seq: bool, hint: str) -> None:
        self._piece(k).env[key] = value
        self.level[key], self.where[key] = k, k
        self.key_layout[key], self.key_full[key], self.hints[key] = la, full, hint
        value.name_hint = sanitize(hint)
        if seq:
            self.seq_keys.add(key)

    def _comm(self, kind: str, src, la=None):
        """The key of src after a transition between pieces: "r" all_reduce
        of a partial sum, "s" reduce_scatter of a partial sum along the
        sequence (to layout la), "g" all_gather of sequence shards, "c" the
        rank's sequence shard of a replicated value (no communication). The
        n blocks are made contiguous around the collective by a reshape and
        a permute in the pieces before and after it."""
        if kind == "c" and src[0] == "g":
            return src[1]  # the shards gathered earlier
        dst = ("r", src[1]) if kind == "r" and src[0] == "v" else (kind, src)
        if dst in self.level:
            return dst
        lvl = self.level[src]
        while len(self.comms) <= lvl:
            self.comms.append([])
        full = self._full(src)
        where = self._owner(src)
        hint = self._hint(src)
        n = self.n
        if kind in "rm":  # all_reduce sum / max: the same shape
            sent, got, got_t = src, dst, full
        else:
            if kind == "g":
                la = self._klayout(src)
            a, r = self._blocks(full, la)
            sent = ("sent", kind, src)
            if kind == "g":
                flat = self._aten("aten.reshape.default", src, [[a * r]], lvl, where)
            else:
                v = self._aten("aten.reshape.default", src, [[a, n, r]], lvl, where)
                self._define(("tmp", kind, src), v, lvl, None, None, False, hint)
                v = self._aten("aten.permute.default", ("tmp", kind, src), [[1, 0, 2]], lvl,
                               where)
                self._define(("tmp2", kind, src), v, lvl, None, None, False, hint)
                flat = self._aten("aten.reshape.default", ("tmp2", kind, src), [[n * a * r]],
                                  lvl, where)
            self._define(sent, flat, lvl, None, None, False, hint + "_flat")
            got = ("got", kind, src)
            got_t = TensorType(full.element_type, [n, a, r] if kind == "g" else [a * r])
        self.level[got], self.where[got] = lvl + 1, None
        self.key_type[got], self.key_full[got] = got_t, full
        self.key_layout.setdefault(got, None)
        self.hints[got] = hint + {"r": "_sum", "m": "_max", "s": "_scattered",
                                  "g": "_gathered", "c": "_shard"}[kind]
        sp = self.pieces[lvl]
        if sent not in sp.results:
            sp.results.append(sent)
            sp.res_attrs.append({"name": self._hint(sent),
                                 "kind": "partial" if kind in "rms" else "act"})
        self.comms[lvl].append((kind, sent, got, got_t))
        if kind in "rm":
            return dst
        if kind == "g":
            v = self._aten("aten.permute.default", got, [[1, 0, 2]], lvl + 1, where)
            self._define(("tmp3", kind, src), v, lvl + 1, None, None, False, self.hints[got])
            v = self._aten("aten.reshape.default", ("tmp3", kind, src),
                           [list(full.get_shape())], lvl + 1, where)
            self._define(dst, v, lvl + 1, None, full, False, self.hints[got])
        else:
            local = list(_local(full, la, n).get_shape())
            v = self._aten("aten.reshape.default", got, [local], lvl + 1, where)
            self._define(dst, v, lvl + 1, la, full, True, self.hints[got])
        return dst

    def _owner(self, key) -> Operation:
        """An op for the location of ops made for key."""
        old = self._old(key) if key[0] in ("v", "arg", "r", "b") else None
        if isinstance(old, SSAValue) and isinstance(old.owner, AtenOp):
            return old.owner
        for u in (old.uses if isinstance(old, SSAValue) else []):
            if isinstance(u.operation, AtenOp):
                return u.operation
        return next(o for o in self.fn.body.block.ops if isinstance(o, AtenOp))

    def _piece(self, k: int) -> _Piece:
        while len(self.pieces) <= k:
            i = len(self.pieces)
            self.pieces.append(_Piece(f"{self.name}_tp"))
            if i:
                self.pieces[0].name = f"{self.name}_tp_p0"
                self.pieces[i].name = f"{self.name}_tp_p{i}"
        return self.pieces[k]

    def value(self, key, k: int) -> SSAValue:
        """Key's value inside piece k (an argument there if made elsewhere)."""
        p = self._piece(k)
        if key in p.env:
            return p.env[key]
        src = self.where[key]
        if src is not None and src != k:
            sp = self.pieces[src]
            if key not in sp.results:
                sp.results.append(key)
                sp.res_attrs.append({"name": self._hint(key), "kind": "act"})
        if src is not None:
            t = self.pieces[src].env[key].type
        elif key in self.key_type:
            t = self.key_type[key]
        else:
            old = self._old(key)
            t = _local(old.type, self.layout[old] if key[0] in ("v", "arg") else None, self.n)
        a = p.block.insert_arg(t, len(p.block.args))
        a.name_hint = sanitize(self._hint(key))
        p.env[key] = a
        p.arg_keys.append(key)
        if key[0] == "arg":
            p.arg_attrs.append({k: x for k, x in graph_attrs(self.fn, key[1]).items()
                                if k != "from"})
        else:
            p.arg_attrs.append({"name": self._hint(key),
                                "kind": "reduced" if key[0] in ("r", "m", "got") else "act"})
        return a

    def _hint(self, key) -> str:
        if key in self.hints:
            return self.hints[key]
        old = self._old(key)
        if key[0] == "arg":
            return graph_attrs(self.fn, key[1]).get("name") or old.name_hint or "arg"
        base = old.name_hint or "v"
        return base + "_sum" if key[0] == "r" else base

    def _emit(self, target: str, keys: list, args: list, kwargs, old: AtenOp,
              results: list[SSAValue] | None, k: int, types=None) -> list[SSAValue]:
        """A new aten op in piece k; `args` use ArgRefAttr(i) for keys[i]."""
        p = self._piece(k)
        operands = [self.value(key, k) for key in keys]
        if types is None:
            probe = AtenOp(target, operands, args, kwargs, [], old.tag_dict())
            probe.location = old.location
            types = infer_types(probe, [o.type for o in operands])
            probe.erase(safe_erase=False)
        new = AtenOp(target, operands, args, kwargs, types, old.tag_dict())
        new.location = old.location
        p.block.add_op(new)
        if results is not None:
            for r, nr in zip(results, new.outputs, strict=True):
                nr.name_hint = r.name_hint
                p.env[("v", r)] = nr
                self.level[("v", r)] = k
                self.where[("v", r)] = k
        return list(new.outputs)

    # -- layout rules -----------------------------------------------------------

    def _op(self, op: AtenOp) -> None:
        if self._sum_of_partials(op):
            return
        keys = [self._read(v) for v in op.inputs]
        if self.tokens is not None:
            keys = self._seq_inputs(op, keys)
        try:
            outs = self._rule(op, keys)
        except PiperError:
            # sequence parallelism: an op with no rule for sequence shards
            # (a colwise Linear, the loss, an embedding's backward) reads
            # them gathered
            if not any(self._kseq(key) for key in keys):
                raise
            keys = [self._gathered(key) if self._kseq(key) else key for key in keys]
            outs = self._rule(op, keys)
        if outs is None:
            return
        ins = [self._klayout(key) for key in keys]
        seq = any(self._kseq(key) for key in keys)
        src = next((self.origin[v] for v, la in zip(op.inputs, ins, strict=True)
                    if la is not None and v in self.origin), None)
        for r, la in zip(op.outputs, outs, strict=True):
            self.layout[r] = la
            if src is not None and _sharded(la):
                self.origin[r] = src
            if seq and _sharded(la):
                self.seq_vals.add(r)
            if seq and la == PARTIAL:
                self.seq_partial.add(r)
            if la is not None:
                self.changed = True

    def _gathered(self, key):
        """Key's value gathered from its sequence shards; a transpose or view
        of a value gathered already is redone on that value instead (the
        backward reads both x and t(x) whole: one all_gather)."""
        o = key[1].owner if key[0] == "v" else None
        if isinstance(o, AtenOp) and o.target.data in LINEAR_OF_ONE and len(o.inputs) == 1 \
                and o.inputs[0] not in self.alias:
            src = self._key(o.inputs[0])
            if self._kseq(src) and ("g", src) in self.level:
                whole = ("g", src)
                redone = ("redone", key)
                if redone not in self.level:
                    r = o.outputs[0]
                    v = self._emit(o.target.data, [whole], list(o.args.data),
                                   dict(o.kwargs.data), o, None, self.level[whole],
                                   types=[r.type])[0]
                    self._define(redone, v, self.level[whole], None, r.type, False,
                                 (r.name_hint or "v") + "_whole")
                return redone
        return self._comm("g", key)

    def _seq_inputs(self, op: AtenOp, keys: list) -> list:
        """Sequence parallelism: a layer norm, softmax or pointwise op next
        to sequence shards runs on them, reading the rank's shard of its
        replicated full-size operands; a layer norm of a replicated
        activation starts the sharding (Megatron's scatter after the
        embedding)."""
        target = op.target.data
        if target not in POINTWISE | SOFTMAX | LAYER_NORM | {"aten.mean.dim"}:
            return keys
        seq = [key for key in keys if self._kseq(key)]
        if not seq:
            if target == "aten.native_layer_norm.default" and self._klayout(keys[0]) is None:
                la = self._seq_layout(self._full(keys[0]))
                if la is not None:
                    return [self._comm("c", keys[0], la), *keys[1:]]
            return keys
        la, full = self._klayout(seq[0]), list(self._full(seq[0]).get_shape())
        out = list(keys)
        for i, key in enumerate(keys):
            t = self._full(key)
            if self._klayout(key) is not None or not isinstance(t, TensorType):
                continue
            d = _dim(la) - (len(full) - len(t.get_shape()))
            if d >= 0 and t.get_shape()[d] == full[_dim(la)]:
                out[i] = self._comm("c", key, _split(d, _outer(la)))
        return out

    def _rule(self, op: AtenOp, keys: list) -> list | None:
        """The layouts of op's results, emitting it (re-typed) in its piece;
        None when the op was rewritten and its results' layouts are set."""
        ins = [self._klayout(key) for key in keys]
        k = max([self.level[key] for key in keys], default=0)
        target = op.target.data
        args, kwargs = list(op.args.data), dict(op.kwargs.data)
        if all(la is None for la in ins) and op not in self.vocab_grads:
            outs = [None] * len(op.outputs)
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k,
                       types=[r.type for r in op.outputs])
        elif target in POINTWISE:
            outs = [self._pointwise(op, ins)] * len(op.outputs)
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in ("aten.t.default", "aten.transpose.int", "aten.permute.default"):
            d = _dim(ins[0])
            rank = _rank(op.inputs[0])
            if target == "aten.t.default":
                out = 1 - d if rank == 2 else d
            elif target == "aten.transpose.int":
                a, b = (x % rank for x in (self._const(op, 1), self._const(op, 2)))
                out = b if d == a else a if d == b else d
            else:
                out = [x % rank for x in self._const(op, 1)].index(d)
            outs = [_split(out, _outer(ins[0]))]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.mm.default":
            outs = [self._mm(op, ins[0], ins[1])]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.addmm.default":
            mm = self._mm(op, ins[1], ins[2])
            if mm == PARTIAL:
                if ins[0] is not None or kwargs:
                    raise _err(f"{target} with a sharded bias or alpha/beta reads "
                               "a rowwise product", op)
                # partial x @ w, then (after the all_reduce) + bias
                part = op.outputs[0]
                self._emit("aten.mm.default", keys[1:], [ArgRefAttr(0), ArgRefAttr(1)], {},
                           op, [part], k)
                self.layout[part] = PARTIAL
                rkey = self._read(part)
                rk = self.level[rkey]
                at = max(rk, self.level[keys[0]])
                summed_la = self._klayout(rkey)
                summed = self._emit("aten.add.Tensor", [rkey, keys[0]],
                                    [ArgRefAttr(0), ArgRefAttr(1)], {}, op, None, at,
                                    types=[_local(op.outputs[0].type, summed_la, self.n)])
                # later readers of the addmm read the biased sum: replicated
                # (sequence shards with sequence parallelism)
                fresh = ("b", part)
                self._define(fresh, summed[0], at, summed_la, op.outputs[0].type,
                             self._kseq(rkey), op.outputs[0].name_hint or "addmm")
                self.alias[part] = fresh
                return None
            self._check_broadcast(op, [op.inputs[0]], [ins[0]], op.outputs[0], mm)
            outs = [mm]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.bmm.default":
            if ins[0] != ins[1] or _dim(ins[0]) != 0:
                raise _err(f"@{self.name}: '{target}' of {_what(ins[0])} by {_what(ins[1])} "
                           "has no tensor-parallel layout (expected both split on the batch "
                           "dim, e.g. attention heads)", op)
            outs = [ins[0]]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.expand.default":
            shift = _rank(op.outputs[0]) - _rank(op.inputs[0])
            e = _dim(ins[0]) + shift
            sizes = list(self._const(op, 1))
            if sizes[e] != -1:
                sizes[e] //= self.n
            outs = [_split(e, _outer(ins[0]))]
            new_args = [args[0], to_attr(sizes, lambda _: None), *args[2:]]
            self._emit(target, keys, new_args, kwargs, op, list(op.outputs), k)
        elif self.loss and target in VOCAB_LOSS and any(_sharded(la) for la in ins):
            outs = self._vocab_loss(op, keys, ins, k)
        elif target in SOFTMAX:
            split = [la for la in ins if la is not None]
            if any(la != split[0] for la in split) or len(split) != len(ins):
                raise _err(f"@{self.name}: '{target}' mixes layouts", op)
            if self._const(op, 2 if "backward" in target else 1) % _rank(op.inputs[0]) == \
                    _dim(split[0]):
                raise _err(f"@{self.name}: '{target}' over the split dim {_dim(split[0])} "
                           "(a softmax over split logits) has no tensor-parallel layout yet",
                           op)
            outs = [split[0]]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.mean.dim" and _dim(ins[0]) not in [
                x % _rank(op.inputs[0]) for x in self._const(op, 1)]:
            # a mean over other dims (an RMS norm's): the split dim stays
            d, dims = _dim(ins[0]), [x % _rank(op.inputs[0]) for x in self._const(op, 1)]
            keep = len(op.args.data) > 2 and bool(self._const(op, 2))
            outs = [_split(d if keep else d - sum(x < d for x in dims), _outer(ins[0]))]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.sum.dim_IntList" or target == "aten.sum.default":
            d, rank = _dim(ins[0]), _rank(op.inputs[0])
            dims = self._const(op, 1) if target == "aten.sum.dim_IntList" else None
            keep = bool(self._const(op, 2)) if target == "aten.sum.dim_IntList" and \
                len(args) > 2 else False
            if dims is None or dims == []:
                outs = [PARTIAL]
            else:
                dims = [x % rank for x in dims]
                outs = [PARTIAL if d in dims else _split(
                    d if keep else d - sum(x < d for x in dims), _outer(ins[0]))]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in HEADWISE:
            # attention over heads: q, k, v (and the backward's grad, out and
            # logsumexp) split on dim 1, every head on its own rank; a mask
            # broadcast over the heads stays whole
            for v, la in zip(op.inputs, ins, strict=True):
                if la is None and _rank(v) >= 2 and v.type.get_shape()[1] != 1:
                    raise _err(f"@{self.name}: '{target}' reads a replicated %"
                               f"{v.name_hint or '?'} {list(v.type.get_shape())} with "
                               "heads on dim 1 next to heads split over the ranks", op)
                if la is not None and la != 1:
                    raise _err(f"@{self.name}: '{target}' reads {_what(la)}; tensor "
                               "parallelism splits attention on its heads (dim 1)", op)
            outs = [1] * len(op.outputs)
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in ("aten.unsqueeze.default", "aten.squeeze.dim"):
            d, rank = _dim(ins[0]), _rank(op.inputs[0])
            if target == "aten.unsqueeze.default":
                at = self._const(op, 1) % (rank + 1)
                out = d + 1 if at <= d else d
            else:
                at = self._const(op, 1) % max(rank, 1)
                if at == d:
                    raise _err(f"@{self.name}: '{target}' of the split dim {d}", op)
                out = d - 1 if at < d and op.outputs[0].type.get_shape() != \
                    op.inputs[0].type.get_shape() else d
            outs = [_split(out, _outer(ins[0]))]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in ("aten.slice.Tensor", "aten.slice_backward.default"):
            back = target == "aten.slice_backward.default"
            rank = _rank(op.outputs[0] if back else op.inputs[0])
            at = self._const(op, 2 if back else 1) % rank
            if at == _dim(ins[0]):
                raise _err(f"@{self.name}: '{target}' along the split dim {at} has no "
                           "tensor-parallel layout", op)
            outs = [ins[0]]
            if back:
                sizes = list(self._const(op, 1))
                sizes[_dim(ins[0])] //= self.n
                args = [args[0], to_attr(sizes, lambda _: None), *args[2:]]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.cat.default":
            at = self._const(op, 1) % _rank(op.outputs[0]) if len(args) > 1 else 0
            same = all(la == ins[0] for la in ins)
            if same and at == _dim(ins[0]) and _outer(ins[0]) == 1 and \
                    len({v.type for v in op.inputs}) == 1:
                # equal parts each split on `at` (the gradients of a fused
                # q, k, v): the result is split in groups
                outs = [_split(at, len(ins))]
            elif not same or at == _dim(ins[0]):
                raise _err(f"@{self.name}: '{target}' of values not all split on the "
                           "same dim, or along the split dim, has no tensor-parallel layout",
                           op)
            else:
                outs = [ins[0]]
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in ("aten.split.Tensor", "aten.split_with_sizes.default"):
            # a value split in g groups on dim d, cut into its g groups along d
            # (a fused q, k, v): each part split on d
            d, g = _dim(ins[0]), _outer(ins[0])
            at = (self._const(op, 2) if len(args) > 2 else 0) % _rank(op.inputs[0])
            size = op.inputs[0].type.get_shape()[d]
            parts = [r.type.get_shape()[d] for r in op.outputs]
            if at != d or parts != [size // g] * g:
                raise _err(f"@{self.name}: '{target}' of {_what(ins[0])} into {parts} along "
                           f"dim {at} has no tensor-parallel layout (a fused Linear's output "
                           "is split colwise in groups only into its equal parts)", op)
            local = size // g // self.n
            sizes = local if target == "aten.split.Tensor" else [local] * g
            args = [args[0], to_attr(sizes, lambda _: None), *args[2:]]
            outs = [d] * g
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target == "aten.embedding.default" and ins == [0, None]:
            outs = [self._vocab_lookup(op, keys, k)]
        elif op in self.vocab_grads and all(la is None for la in ins):
            outs = [self._vocab_grad(op, keys, k)]
        elif target in LAYER_NORM:
            outs = self._layer_norm(op, ins)
            self._emit(target, keys, args, kwargs, op, list(op.outputs), k)
        elif target in VIEWS:
            out, shape = self._view(op, ins[0])
            outs = [out]
            new_args = [args[0], to_attr(shape, lambda _: None), *args[2:]]
            self._emit(target, keys, new_args, kwargs, op, list(op.outputs), k)
        else:
            bad = next(i for i, la in enumerate(ins) if la is not None)
            raise _err(f"@{self.name}: no tensor-parallel layout rule for '{target}' reading "
                       f"{_what(ins[bad])} (%{op.inputs[bad].name_hint or '?'}); supported on "
                       "shards: mm, addmm, bmm, t, transpose, permute, view, expand, sum, "
                       "(un)squeeze, slice and cat along another dim, split of a fused Linear's "
                       "parts, softmax over another "
                       "dim, CPU scaled_dot_product_attention by heads and pointwise ops",
                       op)
        return outs

    # -- the vocab layout: an embedding split over its rows ----------------------

    def _make(self, target: str, keys: list, consts: list, k: int, old: AtenOp, hint: str,
              args: list | None = None):
        """A new op of keys then constants (or of `args`) in piece k; its
        result's key."""
        if args is None:
            args = [ArgRefAttr(i) for i in range(len(keys))] + [to_attr(c, lambda _: None)
                                                                for c in consts]
        v = self._emit(target, keys, args, {}, old, None, k)[0]
        key = ("made", len(self.hints), hint)
        self._define(key, v, k, None, v.type, False, hint)
        return key

    def _outside(self, op: AtenOp, ids, rows: int, k: int):
        """(the rank's row of each id, zero outside its block; whether the
        id is outside): rank b holds rows b*rows .. (b+1)*rows - 1, its
        first row given to the task (a dist.fill per rank)."""
        first = ("first", rows)
        if first not in self.level:
            self.level[first], self.where[first] = 0, None
            self.key_type[first] = TensorType(self._full(ids).element_type, [])
            self.hints[first] = "vocab_start"
        hint = self._hint(ids)
        local = self._make("aten.sub.Tensor", [ids, first], [], k, op, hint + "_local")
        below = self._make("aten.lt.Scalar", [local], [0], k, op, hint + "_below")
        above = self._make("aten.ge.Scalar", [local], [rows], k, op, hint + "_above")
        out = self._make("aten.bitwise_or.Tensor", [below, above], [], k, op, hint + "_outside")
        return self._make("aten.masked_fill.Scalar", [local, out], [0], k, op,
                          hint + "_row"), out

    def _vocab_loss(self, op: AtenOp, keys: list, ins: list, k: int) -> list:
        """The loss layout: log-softmax and negative log-likelihood of logits
        [N, V] split over the vocabulary (dim 1) without gathering them:
        the max, the sum of exponentials and the target's log-probability
        are all-reduced; the gradients stay split."""
        target = op.target.data
        back = target == "aten.nll_loss_backward.default"
        split = [la for la in ins if la is not None]
        if any(la != 1 for la in split) or _rank(op.inputs[1 if back else 0]) != 2:
            raise _err(f"@{self.name}: '{target}' reads {_what(split[0])}; the loss layout "
                       "splits logits [N, V] over the vocabulary (dim 1)", op)
        hint = op.outputs[0].name_hint or "loss"
        if target == "aten._log_softmax.default":
            if self._const(op, 1) % 2 != 1:
                raise _err(f"@{self.name}: '{target}' over dim 0 of vocab-split logits", op)
            most = self._comm("m", self._make("aten.amax.default", [keys[0]], [[1], True],
                                              k, op, hint + "_max"))
            k = self.level[most]
            shifted = self._make("aten.sub.Tensor", [keys[0], most], [], k, op,
                                 hint + "_shifted")
            exp = self._make("aten.exp.default", [shifted], [], k, op, hint + "_exp")
            total = self._comm("r", self._make("aten.sum.dim_IntList", [exp], [[1], True], k,
                                               op, hint + "_sumexp"))
            k = self.level[total]
            log = self._make("aten.log.default", [total], [], k, op, hint + "_logsumexp")
            self._emit("aten.sub.Tensor", [shifted, log], [ArgRefAttr(0), ArgRefAttr(1)], {},
                       op, list(op.outputs), k)
            return [1]
        if target == "aten._log_softmax_backward_data.default":
            # grad - exp(out) * (the sum of grad over the whole vocabulary)
            total = self._comm("r", self._make("aten.sum.dim_IntList", [keys[0]], [[1], True],
                                               k, op, hint + "_sum"))
            k = self.level[total]
            prob = self._make("aten.exp.default", [keys[1]], [], k, op, hint + "_prob")
            part = self._make("aten.mul.Tensor", [prob, total], [], k, op, hint + "_part")
            self._emit("aten.sub.Tensor", [keys[0], part], [ArgRefAttr(0), ArgRefAttr(1)], {},
                       op, list(op.outputs), k)
            return [1]
        args = list(op.args.data)
        if len(op.inputs) != (4 if back else 2):
            raise _err(f"@{self.name}: a vocab-split '{target}' with class weights is not "
                       "supported", op)
        rows = op.inputs[1 if back else 0].type.get_shape()[1] // self.n
        ids = keys[2 if back else 1]
        row, out = self._outside(op, ids, rows, k)
        ignore = from_attr(args[5 if back else 4], list(op.inputs), None)
        if back:
            # the targets outside the rank's rows are ignored: zero gradient
            mine = self._make("aten.masked_fill.Scalar", [row, out], [ignore], k, op,
                              self._hint(ids) + "_mine")
            self._emit(target, [keys[0], keys[1], mine, keys[3]],
                       [ArgRefAttr(0), ArgRefAttr(1), ArgRefAttr(2), *args[3:6], ArgRefAttr(3)],
                       {}, op, list(op.outputs), k)
            return [1]
        # nll_loss_forward: each target's log-probability from the rank
        # holding it (zero from the others), all-reduced; then the loss of
        # those [N, 1] log-probabilities at class 0 (ignored targets kept)
        col = self._make("aten.unsqueeze.default", [row], [1], k, op, hint + "_col")
        picked = self._make("aten.gather.default", [keys[0], col], [], k, op, hint + "_picked",
                            args=[ArgRefAttr(0), to_attr(1, lambda _: None), ArgRefAttr(1)])
        outside = self._make("aten.unsqueeze.default", [out], [1], k, op, hint + "_outside")
        picked = self._comm("r", self._make("aten.masked_fill.Scalar", [picked, outside], [0.0],
                                            k, op, hint + "_target"))
        k = max(self.level[picked], self.level[ids])
        ignored = self._make("aten.eq.Scalar", [ids], [ignore], k, op, hint + "_ignored")
        first = self._make("aten.mul.Tensor", [ids, ignored], [], k, op, hint + "_class0")
        self._emit(target, [picked, first], [ArgRefAttr(0), ArgRefAttr(1), *args[2:]], {}, op,
                   list(op.outputs), k)
        return [None] * len(op.outputs)

    def _vocab_lookup(self, op: AtenOp, keys: list, k: int):
        """embedding(weight rows b*V/n.., ids): each rank looks up the ids in
        its rows and gives zero for the others; the sum over the ranks (a
        partial sum) is the lookup."""
        if len(op.args.data) > 2:
            raise _err(f"@{self.name}: a vocab-split '{op.target.data}' with a padding index "
                       "or sparse gradients is not supported", op)
        rows = op.inputs[0].type.get_shape()[0] // self.n
        row, out = self._outside(op, keys[1], rows, k)
        found = self._make("aten.embedding.default", [keys[0], row], [], k, op,
                           (op.outputs[0].name_hint or "embedding") + "_rows")
        mask = self._make("aten.unsqueeze.default", [out], [-1], k, op,
                          self._hint(keys[1]) + "_outside_3d")
        self._emit("aten.masked_fill.Scalar", [found, mask],
                   [ArgRefAttr(0), ArgRefAttr(1), to_attr(0.0, lambda _: None)], {}, op,
                   list(op.outputs), k)
        return PARTIAL

    def _vocab_grad(self, op: AtenOp, keys: list, k: int):
        """embedding_dense_backward(grad, ids, V) of a vocab-split weight:
        each rank accumulates the gradients of the ids in its rows (of the
        others: zero) into its [V/n, C] block."""
        args = list(op.args.data)
        padding = from_attr(args[3], list(op.inputs), None)
        if padding != -1:
            raise _err(f"@{self.name}: a vocab-split embedding with a padding index has no "
                       "tensor-parallel backward yet", op)
        rows = op.outputs[0].type.get_shape()[0] // self.n
        row, out = self._outside(op, keys[1], rows, k)
        mask = self._make("aten.unsqueeze.default", [out], [-1], k, op,
                          self._hint(keys[1]) + "_outside_3d")
        grad = self._make("aten.masked_fill.Scalar", [keys[0], mask], [0.0], k, op,
                          self._hint(keys[0]) + "_rows")
        self._emit(op.target.data, [grad, row],
                   [ArgRefAttr(0), ArgRefAttr(1), to_attr(rows, lambda _: None), *args[3:]],
                   dict(op.kwargs.data), op, list(op.outputs), k)
        return 0

    def _layer_norm(self, op: AtenOp, ins: list) -> list:
        """A layer norm on values split along a dim it does not normalize
        (the sequence) stays split; its weight and bias stay whole, and their
        gradients, each rank's sum over its shard, are partial sums."""
        backward = op.target.data == "aten.native_layer_norm_backward.default"
        acts = [0, 1, 2, 3] if backward else [0]
        split = {ins[i] for i in acts}
        normalized = len(self._const(op, 2 if backward else 1))
        params = [la for i, la in enumerate(ins) if i not in acts]
        la = split.pop() if len(split) == 1 else "mixed"
        if la == "mixed" or la is None or any(p is not None for p in params) or \
                _dim(la) >= _rank(op.inputs[0]) - normalized:
            raise _err(f"@{self.name}: '{op.target.data}' has a tensor-parallel layout only "
                       "on activations split along a dim it does not normalize, with its "
                       "weight and bias whole", op)
        if backward:
            return [la, PARTIAL, PARTIAL][:len(op.outputs)]
        return [la] * len(op.outputs)

    def _sum_of_partials(self, op: AtenOp) -> bool:
        """`a + b` (or `a - b`) of two partial sums is a partial sum, and so
        is a view of one: reduce once, after them (the backward's gradients
        of q, k and v add up)."""
        linear = op.target.data in LINEAR_OF_ONE and len(op.inputs) == 1
        if not linear and (op.target.data not in ("aten.add.Tensor", "aten.sub.Tensor")
                           or len(op.inputs) != 2):
            return False
        if not all(self.layout[v] == PARTIAL and v not in self.alias for v in op.inputs):
            return False
        if linear:
            keys = [self._key(op.inputs[0])]
            self._emit(op.target.data, keys, list(op.args.data), dict(op.kwargs.data), op,
                       list(op.outputs), self.level[keys[0]], types=[r.type for r in op.outputs])
            self.layout[op.outputs[0]] = PARTIAL
            if op.inputs[0] in self.seq_partial:
                self.seq_partial.add(op.outputs[0])
            return True
        if any(v.type != op.outputs[0].type for v in op.inputs):
            return False
        keys = [self._key(v) for v in op.inputs]
        k = max(self.level[key] for key in keys)
        self._emit(op.target.data, keys, list(op.args.data), dict(op.kwargs.data), op,
                   list(op.outputs), k, types=[op.outputs[0].type])
        self.layout[op.outputs[0]] = PARTIAL
        if any(v in self.seq_partial for v in op.inputs):
            self.seq_partial.add(op.outputs[0])
        self.changed = True
        return True

    def _const(self, op: AtenOp, i: int):
        return from_attr(op.args.data[i], list(op.inputs), None)

    def _mm(self, op: AtenOp, a, b):
        g = max(_outer(a) if _sharded(a) else 1, _outer(b) if _sharded(b) else 1)
        table = {(None, None): None, (None, _split(1, g)): _split(1, g),
                 (_split(0, g), None): _split(0, g), (_split(1, g), _split(0, g)): PARTIAL}
        if (a, b) not in table:
            raise _err(f"@{self.name}: '{op.target.data}' of {_what(a) if a is not None else 'a replicated value'} "
                       f"by {_what(b) if b is not None else 'a replicated value'} has no "
                       "tensor-parallel layout (expected [N, k] x [k, m/n], [N/n, k] x [k, m] "
                       "or [N, k/n] x [k/n, m])", op)
        return table[(a, b)]

    def _pointwise(self, op: AtenOp, ins: list):
        out_rank = _rank(op.outputs[0])
        aligned = {(_dim(la) - _rank(v), _outer(la))
                   for v, la in zip(op.inputs, ins, strict=True) if la is not None}
        if len(aligned) != 1:
            raise _err(f"@{self.name}: '{op.target.data}' combines values sharded on "
                       "different dims", op)
        rd, outer = aligned.pop()
        out = _split(out_rank + rd, outer)
        self._check_broadcast(op, list(op.inputs), ins, op.outputs[0], out)
        return out

    def _check_broadcast(self, op, values, layouts, result, out) -> None:
        if out is None or out == PARTIAL:
            for v, la in zip(values, layouts, strict=True):
                if la is not None:
                    raise _err(f"@{self.name}: '{op.target.data}' adds {_what(la)} to a "
                               "replicated result", op)
            return
        rd = _dim(out) - _rank(result)
        for v, la in zip(values, layouts, strict=True):
            if la is not None:
                continue
            shape = v.type.get_shape() if isinstance(v.type, TensorType) else []
            if -rd <= len(shape) and shape[rd] != 1:
                raise _err(f"@{self.name}: '{op.target.data}' combines a value sharded on "
                           f"dim {_dim(out)} with a replicated %{v.name_hint or '?'} of that dim's "
                           "full size", op)

    def _view(self, op: AtenOp, layout):
        """Where the split lands in the view's result, and the local shape.

        In the flattened tensor, the split starts after `pre` elements'
        worth of leading index (the dims before d times its outer blocks)
        and cuts the rest into n equal runs; in the result it is dim e with
        prod(dst[:e]) * outer' == pre, and the part of dim e inside one
        outer block must divide by n."""
        src = list(op.inputs[0].type.get_shape())
        dst = list(op.outputs[0].type.get_shape())
        d = _dim(layout)
        pre = _prod(src[:d]) * _outer(layout)
        for e in range(len(dst)):
            head = _prod(dst[:e])
            if pre % head:
                break
            outer = pre // head
            if dst[e] % outer == 0 and (dst[e] // outer) % self.n == 0:
                shape = list(dst)
                shape[e] //= self.n
                return _split(e, outer), shape
        e = next((e for e in range(len(dst)) if _prod(dst[:e + 1]) > pre), len(dst) - 1)
        whence = ""
        if op.inputs[0] in self.origin:
            name = self.origin[op.inputs[0]]
            owner = next((a for a in self.fn.body.block.args if self.origin.get(a) == name),
                         None)
            whence = f" (split from '{name}'" + (
                f" {list(owner.type.get_shape())}" if owner is not None else "") + ")"
        raise _err(f"@{self.name}: '{op.target.data}' from {src} to {dst} moves the sharded "
                   f"dim {d}{whence} where it cannot stay split over {self.n} ranks: dim {e} "
                   f"of {dst} has {dst[e]} (attention heads?), not a multiple of n={self.n}",
                   op)


def _matched(fns: dict, entries) -> list[tuple[str, str]]:
    """(module path, style) for each module a plan entry names."""
    names = {graph_attrs(f, i).get("name", "") for f in fns.values()
             for i in range(len(f.body.block.args))}
    paths = sorted({p.rsplit(".", 1)[0] for p in names if p.endswith(".weight")})
    return [(p, style) for pattern, style in entries for p in paths
            if fnmatch.fnmatchcase(p, pattern)]


def _check_vocab(f: func.FuncOp, p: str, w: str, params: dict) -> None:
    """A vocab split covers embedding lookups of the weight and a head tied
    to it (which reads it through a transpose), nothing else."""
    fn, i = params[w]
    arg = fn.body.block.args[i]
    shape = list(arg.type.get_shape())
    for use in arg.uses:
        o = use.operation
        if not (isinstance(o, AtenOp) and use.index == 0 and o.target.data in (
                "aten.embedding.default", "aten.t.default")):
            what = o.target.data if isinstance(o, AtenOp) else o.name
            raise _err(f"vocab '{p}': weight '{w}' {shape} is also read by '{what}'; a vocab "
                       "split covers embedding lookups and a head tied to them only", o)
    if not any(isinstance(u.operation, AtenOp) and
               u.operation.target.data == "aten.embedding.default" for u in arg.uses):
        raise _err(f"vocab '{p}': weight '{w}' {shape} is read by no embedding lookup (a "
                   "Linear is colwise, or loss for a head)", next(iter(arg.uses)).operation
                   if arg.uses else None)


def _tied(fns: dict, w: str) -> bool:
    """Whether weight w is also a head's (read through a transpose): the
    head of a vocab split then has the loss layout."""
    return any(isinstance(u.operation, AtenOp) and u.operation.target.data == "aten.t.default"
               for f in fns.values() for i, a in enumerate(f.body.block.args)
               if graph_attrs(f, i).get("name") == w and graph_attrs(f, i).get("kind") == "param"
               for u in a.uses)


def _tokens(fns: dict, n: int) -> tuple[int, int]:
    """(batch, seq) of the token ids [batch, seq] the model embeds: the
    activations [batch, seq, ...] (or [batch*seq, ...]) that sequence
    parallelism splits along seq."""
    for f in fns.values():
        for o in f.body.block.ops:
            if isinstance(o, AtenOp) and o.target.data == "aten.embedding.default" and \
                    _rank(o.inputs[1]) == 2:
                b, t = o.inputs[1].type.get_shape()
                if t % n:
                    ids = o.inputs[1].name_hint or "?"
                    raise _err(f"sequence=true: the sequence length {t} of the token ids "
                               f"%{ids} [{b}, {t}] does not divide by n={n}", o)
                return b, t
    raise PiperError(f"{_NAME}: sequence=true needs token ids [batch, seq] read by an "
                     "embedding (found none)")


# ---------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorParallel(ModulePass):
    """Split the weights of the `plan`'s Linear layers over a new `tp` mesh axis."""

    name = "tensor_parallel"

    n: int = 1
    plan: str = ""
    axis: str = "tp"
    sequence: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.n < 1:
            raise PiperError(f"{_NAME}: n must be at least 1, got {self.n}")
        entries = parse_plan(self.plan)
        plan = the_plan(op, _NAME)
        fns = {f.sym_name.data: f for f in op.body.block.ops if isinstance(f, func.FuncOp)}
        if not entries:
            entries = self._auto_plan(plan, fns)
        require_dependency_order(plan.body.block, _NAME)
        mesh = plan.mesh
        if self.axis in mesh:
            raise PiperError(f"{_NAME}: the mesh already has an axis '{self.axis}'")
        layouts = self._param_layouts(fns, entries)
        vocab = {f"{p}.weight" for p, style in _matched(fns, entries) if style == "vocab"}
        rw = _Rewrite(plan, fns, layouts, self.n,
                      tokens=_tokens(fns, self.n) if self.sequence else None, vocab=vocab,
                      loss=any(style == "loss" for _, style in entries) or
                      any(_tied(fns, w) for w in vocab))
        rw.run()
        taken = set(fns)
        for f in rw.new_fns:
            if f.sym_name.data in taken:
                raise PiperError(f"{_NAME}: the module already has a function "
                                 f"@{f.sym_name.data} (tensor_parallel runs once)")
            op.body.block.insert_op_before(f, plan)
        mesh[self.axis] = self.n
        set_mesh(plan, mesh)

    def _auto_plan(self, plan: dist.PlanOp, fns: dict) -> list[tuple[str, str]]:
        """plan=None (an empty `plan`): Megatron's pattern found in each
        stage's forward function (piper/passes/tensor_parallel_auto.py); a
        pair cut apart by a pipeline stage boundary stays replicated."""
        forwards = dict.fromkeys(o.callee.root_reference.data for o in plan.body.block.ops
                                 if isinstance(o, dist.TaskOp) and o.kind.data == "F")
        entries: list[tuple[str, str]] = []
        for name in forwards:
            entries += [e for e in find_plan(fns[name]) if e not in entries]
        if not entries:
            raise PiperError(f"{_NAME}(plan=None): found no Linear whose output reaches "
                             "another Linear only through per-feature ops (Megatron's "
                             "colwise -> rowwise pattern); give a plan")
        return entries

    def _param_layouts(self, fns: dict, entries) -> dict[str, object]:
        """Tensor name -> sharded dim, for the plan's parameters and their state."""
        params: dict[str, tuple[func.FuncOp, int]] = {}
        for f in fns.values():
            for i in range(len(f.body.block.args)):
                info = graph_attrs(f, i)
                if info.get("kind") == "param":
                    params.setdefault(info.get("name", ""), (f, i))
        # module paths: the owners of the parameters (a Linear at `p` has `p.weight`),
        # and the op locations' paths
        located = {o.location.desc.data for f in fns.values() for o in f.body.block.ops
                   if isinstance(getattr(o, "location", None), NameLoc)}
        paths = sorted({p.rsplit(".", 1)[0] for p in params if "." in p} | located)
        out: dict[str, object] = {}
        for pattern, style in entries:
            hits = [p for p in paths if fnmatch.fnmatchcase(p, pattern) and f"{p}.weight" in params]
            if not hits:
                known = [p for p in paths if f"{p}.weight" in params]
                raise PiperError(f"{_NAME}: plan pattern '{pattern}' matches no module with a "
                                 f"weight (modules: {', '.join(known) or 'none'})")
            for p in hits:
                w = f"{p}.weight"
                # a fused Linear (q, k, v in one) split into g equal parts:
                # colwise in g groups, each rank holding its block of each
                g, split = fused_parts(fns.values(), w) if style == "colwise" else (1, None)
                if g == 0:
                    raise _err(f"colwise '{p}': its output is split into parts of different "
                               "sizes (or not along its features); a colwise split cannot "
                               "follow them", split)
                col = _split(0, g)
                if style == "vocab":
                    _check_vocab(f, p, w, params)
                want = {w: col if style != "rowwise" else 1}
                if style in ("colwise", "loss") and f"{p}.bias" in params:
                    want[f"{p}.bias"] = col
                for name, la in want.items():
                    d = _dim(la)
                    f, i = params[name]
                    t = f.body.block.args[i].type
                    shape = t.get_shape()
                    where = next((u.operation for u in f.body.block.args[i].uses), None)
                    if name == w and len(shape) != 2:
                        raise _err(f"{style} '{p}': weight '{w}' has shape {list(shape)}; "
                                   "expected a Linear's [out, in]", where)
                    if shape[d] % (self.n * g):
                        raise _err(f"{style} '{p}': dim {d} of '{name}' ({list(shape)}) does "
                                   f"not divide by n={self.n}" + (
                                       f" in each of its {g} parts" if g > 1 else ""), where)
                    if name in out and out[name] != la:
                        raise _err(f"'{name}' is both colwise and rowwise in the plan", where)
                    out[name] = la
        return out


@dataclass
class _Rewrite:
    plan: dist.PlanOp
    fns: dict
    params: dict  # tensor name -> sharded dim
    n: int
    maps: list[dict] = field(default_factory=list)
    layout: dict = field(default_factory=dict)  # old plan value -> layout
    out: list[Operation] = field(default_factory=list)
    done: dict = field(default_factory=dict)  # callee -> _FnTP
    whole: dict = field(default_factory=dict)  # flat slice -> split dim of its tensor
    packed: dict = field(default_factory=dict)  # pack (collective) -> [(whole, old type)]
    new_fns: list[func.FuncOp] = field(default_factory=list)
    tokens: tuple[int, int] | None = None  # (batch, seq): sequence parallelism
    vocab: set = field(default_factory=set)  # weights split by the vocab layout
    loss: bool = False  # the loss layout: cross entropy on vocab shards
    seq: set = field(default_factory=set)  # plan values split along the sequence
    last_comm: list = field(default_factory=list)

    def dev(self, d: int, b: int) -> int:
        return d * self.n + b

    def tensor_layout(self, name: str, t) -> object:
        """The split dim of tensor `name` (of type t; None: a ZeRO shard, a
        flat slice of a param-shaped tensor)."""
        if name in self.params:
            return self.params[name]
        base = name.rsplit(":", 1)[0]
        if ":" in name and base in self.params:  # optimizer state shaped like its param
            if t is None:
                return self.params[base]
            pf = self._param_type(base)
            return self.params[base] if pf is not None and pf == t else None
        return None

    def _param_type(self, name: str):
        for f in self.fns.values():
            for i in range(len(f.body.block.args)):
                if graph_attrs(f, i).get("name") == name and graph_attrs(f, i).get("kind") == "param":
                    return f.body.block.args[i].type
        return None

    def run(self) -> None:
        n = self.n
        self.maps = [{} for _ in range(n)]
        block = self.plan.body.block
        ops = list(block.ops)
        for o in ops:
            if isinstance(o, dist.TaskOp):
                self._task(o)
            elif isinstance(o, dist.LoadOp | dist.StoreOp) and not (
                    isinstance(o, dist.StoreOp) and o.is_loss):
                self._load_store(o)
            else:
                self._other(o)
        for o in ops:
            o.detach()
        for o in ops:
            o.drop_all_references()
        for o in self.out:
            block.add_op(o)

    def _load_store(self, o: dist.LoadOp | dist.StoreOp) -> None:
        """A load or store: the rank's block of a split tensor. A ZeRO shard
        (flat slice k of dp) of a split tensor is slice k of the rank's
        block: `shard b*dp+k of n*dp` for blocks of rows (one flat slice),
        `shard b*dp+k of n*dp dim 1 parts dp` for blocks of columns."""
        n = self.n
        name = o.tensor_name.data
        t = o.result.type if isinstance(o, dist.LoadOp) else o.value.type
        zero = [a.data for a in o.shard.data] if o.shard is not None else None
        if zero is not None and len(zero) != 2:
            raise _err(f"'{name}' is already split along a dim (tensor_parallel runs once)", o)
        whole = self.tensor_layout(name, t if zero is None else None)
        la = whole if zero is None or whole is None else 0
        if isinstance(o, dist.StoreOp) and self.layout.get(o.value) != la:
            raise _err(f"internal error: '{name}' is stored with layout "
                       f"{self.layout.get(o.value)}, expected {la}", o)
        if zero is not None and whole is not None and _prod(t.get_shape()) % (n * _outer(whole)):
            raise _err(f"'{name}': its ZeRO shard of {_prod(t.get_shape())} elements does not "
                       f"divide into the n={n} tensor-parallel blocks", o)
        if isinstance(o, dist.LoadOp):
            self.layout[o.result] = la
            self.whole[o.result] = whole
        for b in range(n):
            c = self._clone(o, b)
            if whole is None:
                continue
            k, dp = zero if zero is not None else (0, 1)
            shard = [b * dp + k, n * dp]
            if _outer(whole) > 1:  # dim d in groups (a fused q/k/v)
                shard += [_dim(whole), dp, _outer(whole)]
            elif whole != 0:
                shard += [whole] + ([dp] if dp > 1 else [])
            c.properties["shard"] = _int_array(shard)

    def _other(self, o: Operation) -> None:
        """Communication and local ops between tasks, on the ranks' blocks.
        ZeRO's ops work on flat slices of the blocks: `dist.shard` of a
        block is its flat slice, a pack of blocks (and its reduce_scatter,
        all_reduce, all_gather) has the blocks' sizes, and an unpack gives
        back blocks or their flat slices."""
        n = self.n
        ins = [self.layout.get(v) for v in o.operands]
        wholes = [self._whole(v) for v in o.operands]
        zero_ops = dist.ShardOp | dist.PackOp | dist.UnpackOp | dist.ReduceScatterOp | \
            dist.AllGatherOp
        if isinstance(o, dist.AllToAllOp) and any(la is not None for la in ins):
            v, la = next((v, la) for v, la in zip(o.operands, ins, strict=True)
                         if la is not None)
            raise _err(f"expert_parallel's all_to_all reads %{v.name_hint}, {_what(la)} over "
                       "tp; what it exchanges must be whole on every tp rank (end an expert's "
                       "split MLP with a rowwise Linear, or leave the experts replicated)", o)
        if any(la is not None for la in ins) and not isinstance(
                o, dist.SendOp | dist.SumOp | dist.AllReduceOp | dist.StoreOp | zero_ops):
            raise _err(f"'{o.name}' on a tensor-parallel shard is not supported yet", o)
        if isinstance(o, dist.PackOp):
            self.packed[o.result] = [(self._whole(v), v.type) for v in o.inputs]
        elif isinstance(o, dist.ReduceScatterOp | dist.AllGatherOp | dist.AllReduceOp):
            for v, r in zip(o.operands, o.results, strict=True):
                if v in self.packed:
                    self.packed[r] = self.packed[v]
        for i, r in enumerate(o.results):
            if isinstance(o, dist.UnpackOp) and o.value in self.packed:
                w, src = self.packed[o.value][i]
                if w is None:
                    la = None
                elif _prod(r.type.get_shape()) < _prod(src.get_shape()):
                    la = 0  # a flat slice of the block (reduce_scatter's)
                elif _prod(r.type.get_shape()) > _prod(src.get_shape()):
                    la = w  # the block, gathered from its flat slices
                else:
                    la = self.layout.get(self._packed_value(o, i))
                self.layout[r], self.whole[r] = la, w
            elif isinstance(o, dist.ShardOp):
                self.layout[r] = None if ins[0] is None else 0
                self.whole[r] = wholes[0]
                dp = o.part.data[1].data
                if ins[0] is not None and (_prod(o.value.type.get_shape()) // n) % dp:
                    src = o.value.owner
                    name = src.tensor_name.data if isinstance(src, dist.LoadOp) else \
                        o.value.name_hint
                    shape = list(o.value.type.get_shape())
                    block = list(_local(o.value.type, ins[0], n).get_shape())
                    raise _err(f"'{name}' {shape}: its block {block} (split over n={n}) does "
                               f"not divide into the {dp} ZeRO shards of its dp group", o)
            else:
                j = 0 if isinstance(o, dist.SumOp) else i
                self.layout[r] = ins[j] if j < len(ins) else None
                self.whole[r] = wholes[j] if j < len(ins) else None
                if j < len(ins) and o.operands[j] in self.seq:
                    self.seq.add(r)
        for b in range(n):
            c = self._clone(o, b)
            if isinstance(c, dist.PackOp):
                total = sum(_prod(v.type.get_shape()) for v in c.inputs)
                c.result._type = TensorType(c.result.type.element_type, [total])
            elif isinstance(c, dist.ReduceScatterOp | dist.AllGatherOp):
                m = len(o.members)
                for v, r in zip(c.operands, c.results, strict=True):
                    size = _prod(v.type.get_shape())
                    r._type = TensorType(r.type.element_type,
                                         [size // m if isinstance(c, dist.ReduceScatterOp)
                                          else size * m])
            elif isinstance(c, dist.AllReduceOp):
                for v, r in zip(c.operands, c.results, strict=True):
                    r._type = v.type

    def _packed_value(self, o: dist.UnpackOp, i: int):
        """The value packed at position i of what `o` unpacks (through its
        collective), for its layout."""
        v = o.value
        while not isinstance(v.owner, dist.PackOp):
            v = v.owner.operands[v.index]
        return v.owner.inputs[i]

    def _whole(self, v: SSAValue):
        """The split dim of the whole tensor `v` is (a flat slice of)."""
        if v in self.whole:
            return self.whole[v]
        la = self.layout.get(v)
        return None if la == PARTIAL else la

    def _clone(self, o: Operation, b: int) -> Operation:
        n = self.n
        c = clone_on_axis(o, self.maps[b], b, n, split_inputs=False)
        # local types of sharded results (loads, sends, sums, collectives)
        for old, r in zip(o.results, c.results, strict=True):
            r._type = _local(old.type, self.layout.get(old), n)
        if "bytes" in c.properties and c.operands:
            c.properties["bytes"] = IntAttr(sum(type_bytes(v.type) for v in c.operands))
        for old, new in zip(o.results, c.results, strict=True):
            self.maps[b][old] = new
            new.name_hint = old.name_hint
        self.out.append(c)
        return c

    def _comm(self, kind: str, parts: list[SSAValue], t, hint: str) -> None:
        """The communication between two pieces of a task over the tp group
        (see _FnTP._comm): all_reduce, reduce_scatter, all_gather, or each
        rank's flat shard (no communication); its results in last_comm."""
        devices = [dist.device_of(p) for p in parts]
        if kind == "c":
            ops = [dist.ShardOp(p, b, self.n, d) for b, (p, d) in enumerate(
                zip(parts, devices, strict=True))]
            results = [op.result for op in ops]
        else:
            cls = {"r": dist.AllReduceOp, "m": dist.AllReduceOp, "s": dist.ReduceScatterOp,
                   "g": dist.AllGatherOp}[kind]
            extra = {"reduce": StringAttr("max" if kind == "m" else "sum")} \
                if kind in "rms" else None
            ops = [cls(parts, devices, [t] * len(parts), extra)]
            results = list(ops[0].results)
        self.out += ops
        for r in results:
            r.name_hint = sanitize(hint)
        self.last_comm = results

    def _task(self, o: dist.TaskOp) -> None:
        n = self.n
        name = o.callee.root_reference.data
        fn = SymbolTable.lookup_symbol(o, o.callee)
        assert isinstance(fn, func.FuncOp)
        ins = [self.layout.get(v) for v in o.args]
        seq = [v in self.seq for v in o.args]
        tp = self.done.get(name)
        if tp is None:
            tp = _FnTP(fn, ins, n, self.tokens, seq, frozenset(self.vocab), self.loss)
            self.done[name] = tp
            if tp.changed or tp.cut:
                self.new_fns += [p.finish() for p in tp.pieces]
        elif tp.arg_layouts != ins or tp.arg_seq != seq:
            raise _err(f"@{name} is called with different argument layouts", o)
        if not (tp.changed or tp.cut):
            for b in range(n):
                self._clone(o, b)
            for r in o.res:
                self.layout[r] = None
            return
        vals: list[dict] = [{} for _ in range(n)]
        for b in range(n):
            for i, v in enumerate(o.args):
                vals[b][("arg", i)] = self.maps[b][v]
        for key in {key for piece in tp.pieces for key in piece.arg_keys if key[0] == "first"}:
            for b in range(n):  # the first vocab row of rank b's block
                fill = dist.FillOp(float(b * key[1]), self.dev(o.device.data, b),
                                   tp.key_type[key])
                fill.result.name_hint = "vocab_start"
                self.out.append(fill)
                vals[b][key] = fill.result
        for k, piece in enumerate(tp.pieces):
            for b in range(n):
                args = [vals[b][key] for key in piece.arg_keys]
                t = dist.TaskOp(o.kind.data, o.stage.data, o.mb.data, o.replica.data * n + b,
                                self.dev(o.device.data, b), piece.name, args,
                                [p.type for p in piece.block.last_op.operands])
                t.inherit_schedule(o)
                self.out.append(t)
                for key, r in zip(piece.results, t.res, strict=True):
                    vals[b][key] = r
                    r.name_hint = piece.env[key].name_hint
            for kind, sent, got, got_t in (tp.comms[k] if k < len(tp.comms) else []):
                self._comm(kind, [vals[b][sent] for b in range(n)], got_t, tp.hints[got])
                for b, r in enumerate(self.last_comm):
                    vals[b][got] = r
        for b in range(n):
            for r, key in zip(o.res, tp.result_keys, strict=True):
                self.maps[b][r] = vals[b][key]
        for j, (r, la) in enumerate(zip(o.res, tp.result_layouts, strict=True)):
            self.layout[r] = la
            if tp.result_seq[j]:
                self.seq.add(r)
            base = graph_attrs(fn, j, results=True).get("name", "").rsplit(":", 1)[0]
            if la == 0 and _rank(r) == 1 and base in self.params:
                self.whole[r] = self.params[base]  # an optimizer's flat ZeRO slice
