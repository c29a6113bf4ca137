"""The runtime's decoded program, and when it reduces a tensor in place.

- `RankRuntime._decode` turns each sched op into a named record
  (piper/runtime/instructions.py) whose fields say what each slot is.
- An all_reduce runs in its input's memory only when that memory is the
  input's alone: the plan says which call results own their memory
  (piper/runtime/ownership.py); a result that shares the memory of a
  training-state tensor without being a view of it (`aten.detach`) is
  copied first. No private torch API (`torch._C._storage_Use_Count`, which
  decided this before) is needed for either answer.
"""

import dataclasses
import importlib.util
import sys

import pytest
import torch
import torch.distributed as dist

from piper.ir import parse_module
from piper.runtime import executor
from piper.runtime import instructions as ins
from piper.runtime.ownership import private_results

EVERY_KIND = """
func.func @f(%w: tensor<4xf32>, %x: tensor<2x4xf32>) -> (tensor<4xf32>, tensor<f32>) {
  %y = graph.aten "aten.mul.Tensor"(%w, 2.0) : (tensor<4xf32>) -> tensor<4xf32>
  %l = graph.aten "aten.sum.default"(%x) : (tensor<2x4xf32>) -> tensor<f32>
  func.return %y, %l : tensor<4xf32>, tensor<f32>
}
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  %x = sched.input "input0" replica 0 mb 1 : tensor<2x4xf32>
  %y, %l = sched.call @f(%w, %x) task "0F0" stream "compute" : (tensor<4xf32>, tensor<2x4xf32>) -> (tensor<4xf32>, tensor<f32>)
  %h = sched.collective all_reduce sum %y group [0] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %r = sched.wait %h : tensor<4xf32>
  %t = sched.fill 0.25 : tensor<4xf32>
  %s = sched.sum %r, %t scale 0.5 : tensor<4xf32>
  %p = sched.shard %s part 1 of 2 : tensor<4xf32>
  %sh = sched.send %p to 1 tag 3 stream "comm" : tensor<2xf32>
  sched.wait %sh
  %rh = sched.recv from 1 tag 3 stream "comm" : tensor<2xf32>
  %q = sched.wait %rh : tensor<2xf32>
  sched.free %x : tensor<2x4xf32>
  sched.store "w" %s : tensor<4xf32>
  sched.store loss "loss" %l : tensor<f32>
}
"""


def test_decoded_program_is_named_records():
    rt = executor.RankRuntime(parse_module(EVERY_KIND), 0, 1)
    code = rt.code
    assert [type(i) for i in code] == [
        ins.Load, ins.Input, ins.Call, ins.Collective, ins.Wait, ins.Fill, ins.Sum, ins.Shard,
        ins.Send, ins.Wait, ins.Recv, ins.Wait, ins.Free, ins.Store, ins.Store]
    assert not any(isinstance(i, tuple) for i in code)  # no positional slots left
    fields = {type(i).__name__: tuple(f.name for f in dataclasses.fields(i)) for i in code}
    assert fields == {
        "Load": ("result", "name"),
        "Input": ("result", "name", "replica", "mb", "type"),
        "Call": ("fn", "args", "results", "dying"),
        "Collective": ("handle", "value", "start"),
        "Wait": ("handle", "result", "shape"),
        "Fill": ("result", "shape", "value", "dtype"),
        "Sum": ("result", "inputs", "scale"),
        "Shard": ("result", "value", "index", "parts"),
        "Send": ("handle", "value", "peer", "tag"),
        "Recv": ("handle", "shape", "dtype", "peer", "tag"),
        "Free": ("slot",),
        "Store": ("value", "name", "is_loss"),
    }
    load, inp, call, coll, wait, fill, sum_, shard, send, send_wait, recv, recv_wait, free, \
        store_w, store_loss = code
    w, x = load.result, inp.result
    assert (inp.name, inp.replica, inp.mb) == ("input0", 0, 1)
    assert call.args == (w, x) and len(call.results) == 2
    assert call.dying == (w, x)  # no later instruction reads them (x is only freed)
    y, l_ = call.results
    assert (coll.value, wait.handle, wait.shape) == (y, coll.handle, (4,))
    assert (fill.shape, fill.value, fill.dtype) == ((4,), 0.25, torch.float32)
    assert (sum_.inputs, sum_.scale) == ((wait.result, fill.result), 0.5)
    assert (shard.value, shard.index, shard.parts) == (sum_.result, 1, 2)
    assert (send.value, send.peer, send.tag) == (shard.result, 1, 3)
    assert send_wait.result == -1 and send_wait.shape is None
    assert (recv.shape, recv.dtype, recv.peer, recv.tag) == ((2,), torch.float32, 1, 3)
    assert recv_wait.handle == recv.handle and free.slot == x
    assert (store_w.value, store_w.name, store_w.is_loss) == (sum_.result, "w", False)
    assert (store_loss.value, store_loss.name, store_loss.is_loss) == (l_, "loss", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        free.slot = 0  # decoded once, never edited by the loop


# --- in-place all_reduce -------------------------------------------------

def _program(body: str) -> str:
    return f"""
func.func @f(%w: tensor<4xf32>) -> tensor<4xf32> {{
  {body}
}}
sched.program @rank0 device 0 {{
  %w = sched.load "w" : tensor<4xf32>
  %y = sched.call @f(%w) task "0F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
  %h = sched.collective all_reduce sum %y group [0] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %r = sched.wait %h : tensor<4xf32>
  sched.free %y : tensor<4xf32>
  sched.free %w : tensor<4xf32>
  sched.store "g" %r : tensor<4xf32>
}}
"""


FRESH = _program("""%y = graph.aten "aten.mul.Tensor"(%w, 2.0) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>""")
# the result shares w's memory but is no view of it (`_base` is None) and a
# new Python object: nothing at run time but the storage's users tells
DETACHED = _program("""%y = graph.aten "aten.detach.default"(%w) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>""")


class _Done:
    def wait(self):
        pass


@pytest.fixture
def doubling_all_reduce(monkeypatch):
    """dist.all_reduce as a sum over two ranks holding the same tensor
    would be, on one process: doubles its buffer in place. Returns the
    list of shapes the runtime cloned (a copy instead of in place)."""
    def all_reduce(buf, op=None, group=None, async_op=False):
        buf.mul_(2)
        return _Done()

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    clones = []
    real_clone = torch.Tensor.clone

    def counting_clone(self, *a, **k):
        clones.append(tuple(self.shape))
        return real_clone(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "clone", counting_clone)
    return clones


def _step(runtime_module, plan: str, **kw) -> dict:
    rt = runtime_module.RankRuntime(parse_module(plan), 0, 1, **kw)
    state = {"w": torch.arange(4.0), "g": torch.zeros(4)}
    rt.step(state, {})
    return state


def test_state_shared_by_a_call_result_is_not_reduced_in_place(doubling_all_reduce):
    """The call's result is the training state's memory under another
    tensor: it is copied before the all_reduce, or the step would change
    the state (the runtime asked torch's storage user count before; the
    plan tells now)."""
    state = _step(executor, DETACHED)
    torch.testing.assert_close(state["w"], torch.arange(4.0))  # the training state is intact
    torch.testing.assert_close(state["g"], torch.arange(4.0) * 2)
    assert doubling_all_reduce == [(4,)]


def test_fresh_result_is_reduced_in_place_without_private_torch_api(doubling_all_reduce,
                                                                    monkeypatch):
    """With torch._C._storage_Use_Count gone, the runtime (loaded afresh)
    still reduces a fresh call result in its own memory (the runtime that
    needed it copied every input then)."""
    monkeypatch.delattr(torch._C, "_storage_Use_Count", raising=False)
    name = "piper_runtime_executor_without_storage_count"
    spec = importlib.util.spec_from_file_location(name, executor.__file__)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, fresh)
    spec.loader.exec_module(fresh)
    state = _step(fresh, FRESH)
    assert doubling_all_reduce == []
    torch.testing.assert_close(state["g"], torch.arange(4.0) * 4)
    torch.testing.assert_close(state["w"], torch.arange(4.0))


def test_results_of_a_custom_compile_fn_are_copied(doubling_all_reduce):
    """What a `compile_fn`'s results share is up to its implementation,
    not the plan: the runtime copies them."""
    from piper.backend.aten import CompiledFunction

    def compile_fn(module, fn, device):
        compiled = CompiledFunction(module, fn, device)
        return lambda *args: compiled(*args)

    state = _step(executor, FRESH, compile_fn=compile_fn)
    assert doubling_all_reduce == [(4,)]
    torch.testing.assert_close(state["g"], torch.arange(4.0) * 4)


MUL = '%y = graph.aten "aten.mul.Tensor"(%w, 2.0) : (tensor<4xf32>) -> tensor<4xf32>'
DETACH = '%y = graph.aten "aten.detach.default"(%w) : (tensor<4xf32>) -> tensor<4xf32>'
VIEW = '%v = graph.aten "aten.view.default"(%y, [2, 2]) : (tensor<4xf32>) -> tensor<2x2xf32>'


@pytest.mark.parametrize("ops, returned, private", [
    ([MUL], ["%y"], (True,)),  # a fresh result of an op that allocates it
    ([], ["%w"], (False,)),  # the argument itself
    ([DETACH], ["%y"], (False,)),  # an alias of the argument
    ([MUL], ["%y", "%y"], (False, False)),  # one fresh value returned twice
    ([MUL, VIEW], ["%y", "%v"], (False, False)),  # a fresh value and a view of it
])
def test_private_results_read_off_the_function(ops, returned, private):
    types = ", ".join("tensor<2x2xf32>" if v == "%v" else "tensor<4xf32>" for v in returned)
    body = "\n  ".join([*ops, f"func.return {', '.join(returned)} : {types}"])
    module = parse_module(f"func.func @f(%w: tensor<4xf32>) -> ({types}) {{\n  {body}\n}}")
    fn = next(iter(module.body.block.ops))
    assert private_results(fn.body.block) == private
