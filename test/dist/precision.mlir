// RUN: piper-opt %s -p precision | filecheck %s
// RUN: piper-opt %s -p precision | piper-opt | filecheck %s
// RUN: piper-opt %s -p precision,precision | filecheck %s
// RUN: piper-opt %s -p 'precision,convert-graph-to-dist,split{n=2}' | filecheck %s --check-prefix=PLAN
// RUN: piper-opt %s -p 'precision{param="fp32"}' | filecheck %s --check-prefix=FP32
// RUN: piper-opt %s -p 'precision{reduce="bf16"},convert-graph-to-dist,split{n=2}' | filecheck %s --check-prefix=REDUCE
// RUN: not piper-opt %s -p 'precision{param="fp32" reduce="bf16"}' 2>&1 | filecheck %s --check-prefix=REDUCE-BAD
// RUN: not piper-opt %s -p 'precision{param="fp8"}' 2>&1 | filecheck %s --check-prefix=FP8
// RUN: not piper-opt %s -p 'convert-graph-to-dist,precision' 2>&1 | filecheck %s --check-prefix=ORDER
// RUN: sed 's/f32/bf16/g' %s | not piper-opt -p precision 2>&1 | filecheck %s --check-prefix=MASTER

// Stage functions of a 2-stage model (as pipeline-split makes them):
// F0: h = x @ w0; F1: loss = sum(log_softmax(h) * w1); their backwards;
// SGD on the fp32 parameters.

// Each forward casts its fp32 parameters and inputs to bf16 first (an
// aten._to_copy each, which fusion can absorb) and computes in bf16; the
// activation it sends and the values it saves are bf16.
// CHECK-LABEL: func.func @F0(
// CHECK-SAME: %w0: tensor<4x4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"})
// CHECK-SAME: -> (tensor<2x4xbf16> {graph.name = "h", graph.kind = "act"}, tensor<2x4xbf16> {graph.name = "x", graph.kind = "saved"})
// CHECK-NEXT: %w0_bf16 = graph.aten "aten._to_copy.default"(%w0, "dtype" = bf16) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xbf16>
// CHECK-NEXT: %x_bf16 = graph.aten "aten._to_copy.default"(%x, "dtype" = bf16) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<2x4xbf16>
// CHECK-NEXT: %h = graph.aten "aten.mm.default"(%x_bf16, %w0_bf16) tags {PP = 0} : (tensor<2x4xbf16>, tensor<4x4xbf16>) -> tensor<2x4xbf16>
// CHECK-NEXT: func.return %h, %x_bf16 : tensor<2x4xbf16>, tensor<2x4xbf16>

// The loss is computed in bf16 and returned as fp32; the activation from
// @F0 arrives as bf16. An explicit dtype (sum's dtype = f32) is the model's
// choice and stays.
// CHECK-LABEL: func.func @F1(
// CHECK-SAME: %h: tensor<2x4xbf16> {graph.name = "h", graph.kind = "act", graph.from = "F0#0"}
// CHECK-SAME: -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<2x4xbf16> {graph.name = "ls", graph.kind = "saved"}
// CHECK: %ls = graph.aten "aten._log_softmax.default"(%h, 1, false) tags {PP = 1} : (tensor<2x4xbf16>) -> tensor<2x4xbf16>
// CHECK: %m = graph.aten "aten.mul.Tensor"(%ls, %w1_bf16) tags {PP = 1} : (tensor<2x4xbf16>, tensor<4xbf16>) -> tensor<2x4xbf16>
// CHECK: %l = graph.aten "aten.sum.default"(%m) tags {PP = 1} : (tensor<2x4xbf16>) -> tensor<bf16>
// CHECK: %e = graph.aten "aten.sum.dim_IntList"(%m, [1], false, "dtype" = f32) tags {PP = 1} : (tensor<2x4xbf16>) -> tensor<2xf32>
// CHECK: %l_fp32 = graph.aten "aten._to_copy.default"(%l, "dtype" = f32) tags {PP = 1} : (tensor<bf16>) -> tensor<f32>
// CHECK: func.return %l_fp32, %ls, %w1_bf16 :

// The backward casts the fp32 tangent and its own parameter reads to bf16;
// the input dtype of _log_softmax_backward_data follows the compute dtype;
// each parameter gradient is cast to fp32 before it leaves the function
// (gradient reduction and the optimizer see fp32); activation gradients
// stay bf16.
// CHECK-LABEL: func.func @B1(
// CHECK-SAME: -> (tensor<2x4xbf16> {graph.name = "h", graph.kind = "grad_act"}, tensor<4xf32> {graph.name = "w1", graph.kind = "grad"})
// CHECK: %t_bf16 = graph.aten "aten._to_copy.default"(%t, "dtype" = bf16) tags {PP = 1} : (tensor<f32>) -> tensor<bf16>
// CHECK: graph.aten "aten._log_softmax_backward_data.default"(%gl, %ls, 1, bf16) tags {PP = 1} : (tensor<2x4xbf16>, tensor<2x4xbf16>) -> tensor<2x4xbf16>
// CHECK: %gw_fp32 = graph.aten "aten._to_copy.default"(%gw, "dtype" = f32) tags {PP = 1} : (tensor<4xbf16>) -> tensor<4xf32>
// CHECK-LABEL: func.func @B0(
// CHECK-SAME: -> (tensor<4x4xf32> {graph.name = "w0", graph.kind = "grad"})
// CHECK: graph.aten "aten.mm.default"(%xt, %g) tags {PP = 0} : (tensor<4x2xbf16>, tensor<2x4xbf16>) -> tensor<4x4xbf16>

// The optimizer updates the fp32 masters from fp32 gradients, unchanged.
// CHECK-LABEL: func.func @OPT0(
// CHECK-SAME: %w: tensor<4x4xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<4x4xf32> {graph.name = "w0", graph.kind = "grad", graph.from = "B0#0"})

// In the plan the activation between the stages is bf16 and the gradients
// summed over microbatches are fp32.
// PLAN-DAG: dist.send {{.*}} : tensor<2x4xbf16>
// PLAN-DAG: dist.sum %w0_B0, %w0_B0_1 scale 1.0 on 0 : tensor<4x4xf32>

// reduce="bf16": the backward returns bf16 gradients, summed over the
// microbatches in bf16; the optimizer casts them to fp32 first.
// REDUCE-LABEL: func.func @B0(
// REDUCE-SAME: -> (tensor<4x4xbf16> {graph.name = "w0", graph.kind = "grad"})
// REDUCE-LABEL: func.func @OPT0(
// REDUCE-SAME: %g: tensor<4x4xbf16> {graph.name = "w0", graph.kind = "grad", graph.from = "B0#0"}
// REDUCE-NEXT: %g_fp32 = graph.aten "aten._to_copy.default"(%g, "dtype" = f32) : (tensor<4x4xbf16>) -> tensor<4x4xf32>
// REDUCE-NEXT: %s = graph.aten "aten.mul.Tensor"(%g_fp32, 0.1) : (tensor<4x4xf32>) -> tensor<4x4xf32>
// REDUCE: dist.sum %w0_B0, %w0_B0_1 scale 1.0 on 0 : tensor<4x4xbf16>

// REDUCE-BAD: error: precision: reduce='bf16' must be the compute dtype ('fp32') or the master dtype ('fp32')

// fp32 compute is no rewrite at all.
// FP32: func.func @F0(%w0: tensor<4x4xf32> {{.*}} -> (tensor<2x4xf32> {{.*}}, tensor<2x4xf32> {{.*}})
// FP32-NOT: _to_copy

// FP8: error: precision: param='fp8' is not supported (supported: bf16, fp16, fp32)

// A model already in bf16 has no fp32 masters to keep.
// MASTER: error: precision: parameter 'w0' is bf16, but master='fp32' keeps the parameters in fp32; give precision the model in fp32 (it casts to bf16 itself)

// ORDER: error: precision: the module is already a plan; precision rewrites the stage functions and must run before place (convert-graph-to-dist)

func.func @F0(%w0: tensor<4x4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<2x4xf32> {graph.name = "h", graph.kind = "act"}, tensor<2x4xf32> {graph.name = "x", graph.kind = "saved"}) {
  %h = graph.aten "aten.mm.default"(%x, %w0) tags {PP = 0} : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
  func.return %h, %x : tensor<2x4xf32>, tensor<2x4xf32>
}
func.func @F1(%w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %h: tensor<2x4xf32> {graph.name = "h", graph.kind = "act", graph.from = "F0#0"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<2x4xf32> {graph.name = "ls", graph.kind = "saved"}, tensor<4xf32> {graph.name = "w1", graph.kind = "saved"}) {
  %ls = graph.aten "aten._log_softmax.default"(%h, 1, false) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %m = graph.aten "aten.mul.Tensor"(%ls, %w1) tags {PP = 1} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %l = graph.aten "aten.sum.default"(%m) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<f32>
  %e = graph.aten "aten.sum.dim_IntList"(%m, [1], false, "dtype" = f32) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<2xf32>
  func.return %l, %ls, %w1 : tensor<f32>, tensor<2x4xf32>, tensor<4xf32>
}
func.func @B1(%ls: tensor<2x4xf32> {graph.name = "ls", graph.kind = "saved", graph.from = "F1#1"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "saved", graph.from = "F1#2"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<2x4xf32> {graph.name = "h", graph.kind = "grad_act"}, tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) {
  %gm = graph.aten "aten.expand.default"(%t, [2, 4]) tags {PP = 1} : (tensor<f32>) -> tensor<2x4xf32>
  %gl = graph.aten "aten.mul.Tensor"(%gm, %w1) tags {PP = 1} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %gh = graph.aten "aten._log_softmax_backward_data.default"(%gl, %ls, 1, f32) tags {PP = 1} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  %p = graph.aten "aten.mul.Tensor"(%gm, %ls) tags {PP = 1} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  %gw = graph.aten "aten.sum.dim_IntList"(%p, [0]) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4xf32>
  func.return %gh, %gw : tensor<2x4xf32>, tensor<4xf32>
}
func.func @B0(%x: tensor<2x4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %g: tensor<2x4xf32> {graph.name = "h", graph.kind = "grad_act", graph.from = "B1#0"}) -> (tensor<4x4xf32> {graph.name = "w0", graph.kind = "grad"}) {
  %xt = graph.aten "aten.t.default"(%x) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<4x2xf32>
  %gw = graph.aten "aten.mm.default"(%xt, %g) tags {PP = 0} : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
  func.return %gw : tensor<4x4xf32>
}
func.func @OPT0(%w: tensor<4x4xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<4x4xf32> {graph.name = "w0", graph.kind = "grad", graph.from = "B0#0"}) -> (tensor<4x4xf32> {graph.name = "w0", graph.kind = "param"}) {
  %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %n : tensor<4x4xf32>
}
func.func @OPT1(%w: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w1", graph.kind = "grad", graph.from = "B1#1"}) -> (tensor<4xf32> {graph.name = "w1", graph.kind = "param"}) {
  %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n : tensor<4xf32>
}
