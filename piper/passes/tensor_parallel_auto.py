"""The automatic plan of `tensor_parallel` (plan=None): which Linear layers
to split colwise and which rowwise, found from the captured forward graph.

A Linear is `mm(x, t(W))` or `addmm(b, x, t(W))` with W a 2-d parameter
named `<module>.weight`. From each Linear's output the finder follows the
values that stay per-feature (or per-head) on their way: pointwise ops,
views, transposes, slices and concatenations, attention (matmuls, softmax,
scaled_dot_product_attention), the head replication of grouped-query
attention, and a reduction over the last dim of a value viewed into heads
(Qwen3's per-head q/k RMSNorm; the sharding pass checks that the reduced
dim is not the split one). It stops at

- the input `x` of another Linear: that Linear is a *consumer*;
- anything else (a norm's mean, the residual stream's next layer, the loss):
  a *barrier*, the value would have to be whole there.

Megatron's pattern is then a group of Linears whose outputs reach only
consumers (q, k, v, or up and gate) and those consumers (the attention's
output projection, the MLP's down projection): the first are colwise, the
second rowwise. A group with a barrier on any of its producers' paths stays
replicated (the embedding, the LM head, a Linear feeding a norm). A fused
Linear whose output is split into equal parts along its features (a fused
`qkv`) is colwise in groups (each rank holds its block of each part); one
split into unequal parts is an error naming it.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import AtenOp
from piper.passes.func_utils import graph_attrs

_NAME = "tensor_parallel"

# Ops through which a per-feature (per-head) split stays a split.
THROUGH = {
    "aten.relu.default", "aten.gelu.default", "aten.tanh.default", "aten.sigmoid.default",
    "aten.silu.default", "aten.neg.default", "aten.exp.default", "aten.clone.default",
    "aten.detach.default", "aten._to_copy.default", "aten.add.Tensor", "aten.sub.Tensor",
    "aten.mul.Tensor", "aten.div.Tensor", "aten.add.Scalar", "aten.sub.Scalar",
    "aten.mul.Scalar", "aten.div.Scalar", "aten.where.self", "aten.masked_fill.Scalar",
    "aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
    "aten.t.default", "aten.transpose.int", "aten.permute.default", "aten.expand.default",
    "aten.unsqueeze.default", "aten.squeeze.dim", "aten.slice.Tensor", "aten.cat.default",
    "aten.bmm.default", "aten._softmax.default",
    "aten._scaled_dot_product_flash_attention_for_cpu.default",
    "aten.pow.Tensor_Scalar", "aten.rsqrt.default",
}
# Reductions that keep heads apart when they reduce the last dim of a value
# already viewed into heads (a per-head RMSNorm of q and k, as in Qwen3).
PER_HEAD_REDUCTIONS = {"aten.mean.dim", "aten.sum.dim_IntList"}


def _per_head(u: AtenOp, features: int) -> bool:
    """`u` reduces only the last dim of a value of rank >= 3 whose last dim
    is narrower than the Linear's features: within each head."""
    if u.target.data not in PER_HEAD_REDUCTIONS:
        return False
    shape = u.inputs[0].type.get_shape()
    dims = u.args.data[1] if len(u.args.data) > 1 else None
    dims = [getattr(d, "value", None) for d in getattr(dims, "data", ())]
    return (len(shape) >= 3 and shape[-1] < features and bool(dims)
            and all(d is not None and d.data in (-1, len(shape) - 1) for d in dims))
# Ops that cut a value into parts: a Linear whose output meets one is fused.
SPLITS = {"aten.split.Tensor", "aten.split_with_sizes.default", "aten.unbind.int",
          "aten.chunk.default"}
VIEWS_KEEPING_LAST = {"aten.view.default", "aten.reshape.default", "aten._unsafe_view.default"}


def _linears(fn: func.FuncOp) -> dict[SSAValue, tuple[str, AtenOp]]:
    """Output value of each Linear in `fn` -> (module path, its mm/addmm)."""
    params = {}
    for i, a in enumerate(fn.body.block.args):
        info = graph_attrs(fn, i)
        name = info.get("name", "")
        if info.get("kind") == "param" and name.endswith(".weight") and \
                len(a.type.get_shape()) == 2:
            params[a] = name.removesuffix(".weight")
    out = {}
    for op in fn.body.block.ops:
        if not isinstance(op, AtenOp):
            continue
        target = op.target.data
        if target not in ("aten.mm.default", "aten.addmm.default"):
            continue
        w = op.inputs[-1]
        t = w.owner
        if isinstance(t, AtenOp) and t.target.data == "aten.t.default" and \
                t.inputs[0] in params:
            out[op.outputs[0]] = (params[t.inputs[0]], op)
    return out


def fused_parts(fns, weight: str) -> tuple[int, Operation | None]:
    """How many equal parts the output of the Linear with weight `weight`
    is split into along its features (a fused q/k/v: 3), looking at its
    forward `mm(x, t(W))` in `fns` through views that keep the last dim:
    (1, None) if it is not split; (0, the op) if it is split unevenly."""
    for fn in fns:
        for y, (path, op) in _linears(fn).items():
            if f"{path}.weight" != weight:
                continue
            v, feat = y, y.type.get_shape()[-1]
            while True:
                users = [u.operation for u in v.uses if isinstance(u.operation, AtenOp)]
                views = [u for u in users if u.target.data in VIEWS_KEEPING_LAST and
                         u.outputs[0].type.get_shape()[-1] == feat]
                splits = [u for u in users if u.target.data in SPLITS]
                if splits:
                    u = splits[0]
                    sizes = [r.type.get_shape()[-1] for r in u.outputs]
                    rank = len(u.inputs[0].type.get_shape())
                    dims = {len(r.type.get_shape()) for r in u.outputs}
                    along_last = dims == {rank} and sum(sizes) == feat
                    if along_last and len(set(sizes)) == 1:
                        return len(sizes), u
                    return 0, u
                if len(views) != 1:
                    return 1, None
                v = views[0].outputs[0]
    return 1, None


def find_plan(fn: func.FuncOp) -> list[tuple[str, str]]:
    """[(module path, "colwise" | "rowwise")] for the forward function `fn`."""
    linears = _linears(fn)
    x_of = {}  # the `x` operand of each Linear -> its output
    for y, (_, op) in linears.items():
        x_of.setdefault(op.inputs[0 if op.target.data == "aten.mm.default" else 1], []).append(y)
    reach: dict[SSAValue, set] = {}
    barrier: dict[SSAValue, object] = {}
    fused: dict[SSAValue, object] = {}
    for y in linears:
        seen, todo, hits = {y}, [y], set()
        while todo:
            v = todo.pop()
            if v in x_of and v is not y:
                hits.update(x_of[v])
                continue
            for use in v.uses:
                u = use.operation
                if isinstance(u, func.ReturnOp):
                    continue  # saved for the backward, or sent to the next stage
                target = u.target.data if isinstance(u, AtenOp) else u.name
                if target in SPLITS:
                    fused.setdefault(y, u)  # and on: the parts reach the consumers
                elif target not in THROUGH and not (
                        isinstance(u, AtenOp) and _per_head(u, y.type.get_shape()[-1])):
                    barrier.setdefault(y, u)
                    continue
                for r in u.outputs:
                    if r not in seen:
                        seen.add(r)
                        todo.append(r)
        reach[y] = hits
    # groups: Linears connected by reach
    parent = {y: y for y in linears}

    def root(y):
        while parent[y] is not y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        return y

    for y, hits in reach.items():
        for h in hits:
            parent[root(h)] = root(y)
    groups: dict = {}
    for y in linears:  # in graph order
        groups.setdefault(root(y), []).append(y)
    plan = []
    for members in groups.values():
        producers = [y for y in members if reach[y]]
        if not producers:
            continue
        # Megatron's alternation, in graph order: a producer not already a
        # consumer is colwise, what it reaches rowwise (fc1 -> fc2 -> fc3:
        # fc1 colwise, fc2 rowwise, fc3 replicated)
        style: dict = {}
        for y in producers:
            if y not in style:
                style[y] = "colwise"
                for h in reach[y]:
                    style.setdefault(h, "rowwise")
        ok = all(y not in barrier and all(style.get(h) == "rowwise" for h in reach[y])
                 for y in style if style[y] == "colwise")
        ok = ok and not any(style.get(h) == "rowwise" for y in producers
                            if style[y] == "rowwise" for h in reach[y])
        if not ok:
            continue  # replicated: a colwise output would be needed whole somewhere
        for y in producers:
            if style[y] == "colwise" and y in fused:
                path = linears[y][0]
                w = linears[y][1].inputs[-1].owner.inputs[0]
                parts, at = fused_parts([fn], f"{path}.weight")
                if parts > 1:
                    continue  # equal parts (q, k, v): colwise in groups
                raise PiperError(
                    f"{_NAME}(plan=None): '{path}' is a fused Linear (weight "
                    f"'{path}.weight' {list(w.type.get_shape())}) whose output is split into "
                    f"parts of different sizes or not along its features "
                    f"('{fused[y].target.data}'): a colwise split would not follow its "
                    "parts; give a plan without it, e.g. its MLPs only, or use separate "
                    "Linears", op_location(at or fused[y]))
        plan += [(linears[y][0], style[y]) for y in members if y in style]
    return plan
