// RUN: piper-opt %s -p pipeline-split | filecheck %s
// RUN: piper-opt %s -p pipeline-split | piper-opt | filecheck %s
// RUN: piper-opt %s -p pipeline-split --print-debuginfo | filecheck %s --check-prefix=LOC
// RUN: sed 's/PP = 1/PP = 2/' %s | not piper-opt -p pipeline-split 2>&1 | filecheck %s --check-prefix=GAP
// RUN: not piper-opt %s -p split_backward 2>&1 | filecheck %s --check-prefix=ORDER

// A captured 2-stage model (fc0 + ReLU | fc1 + squared error) with SGD.

// Stage 0's forward: its parameters and the input; the activation for F1,
// then what B0 needs.
// CHECK-LABEL: func.func @F0(
// CHECK-SAME: %fc0_weight: tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, %fc0_bias: tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, %input0: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"})
// CHECK-SAME: -> (tensor<3x4xf32> {graph.name = "relu", graph.kind = "act"}, tensor<3x4xf32> {graph.name = "relu", graph.kind = "saved"})
// CHECK: %addmm = graph.aten "aten.addmm.default"(%fc0_bias, %input0, %t) tags {PP = 0}
// CHECK: func.return %relu, %relu

// The last stage reads the activation of F0 and the targets, and returns
// the loss first; it saves the activation again for B1.
// CHECK-LABEL: func.func @F1(
// CHECK-SAME: {graph.name = "fc1.weight", graph.kind = "param"}, %input1: tensor<3x2xf32> {graph.name = "input1", graph.kind = "input"}, %relu: tensor<3x4xf32> {graph.name = "relu", graph.kind = "act", graph.from = "F0#0"})
// CHECK-SAME: -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<3x2xf32> {graph.name = "sub", graph.kind = "saved"}, tensor<3x4xf32> {graph.name = "relu", graph.kind = "saved"}, tensor<4x2xf32> {graph.name = "t_1", graph.kind = "saved"})
// CHECK: %mm = graph.aten "aten.mm.default"(%relu, %t) tags {PP = 1}
// CHECK: func.return %sum, %sub, %relu, %t

// B0 reads F0's saved value and B1's gradient; returns its parameters' gradients.
// CHECK-LABEL: func.func @B0(
// CHECK-SAME: %relu: tensor<3x4xf32> {graph.name = "relu", graph.kind = "saved", graph.from = "F0#1"}, %mm: tensor<3x4xf32> {graph.name = "[[G:.*]]", graph.kind = "grad_act", graph.from = "B1#0"}, %input0: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"})
// CHECK-SAME: -> (tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "grad"})
// CHECK: graph.aten "aten.threshold_backward.default"(%mm, %relu, 0) tags {PP = 0}

// B1 starts from the loss tangent; the gradient of the activation goes first.
// CHECK-LABEL: func.func @B1(
// CHECK-SAME: {graph.name = "sub", graph.kind = "saved", graph.from = "F1#1"}, {{.*}} {graph.name = "relu", graph.kind = "saved", graph.from = "F1#2"}, {{.*}} {graph.name = "t_1", graph.kind = "saved", graph.from = "F1#3"}, %tangent: tensor<f32> {graph.name = "loss", graph.kind = "tangent"})
// CHECK-SAME: -> (tensor<3x4xf32> {graph.name = "[[G]]", graph.kind = "grad_act"}, tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "grad"})
// CHECK: graph.aten "aten.expand.default"(%tangent, [3, 2]) tags {PP = 1}

// One optimizer per stage, updating that stage's parameters.
// CHECK-LABEL: func.func @OPT0(
// CHECK-SAME: {graph.name = "fc0.weight", graph.kind = "param"}, {{.*}} {graph.name = "fc0.bias", graph.kind = "param"}, {{.*}} {graph.name = "fc0.weight", graph.kind = "grad", graph.from = "B0#0"}, {{.*}} {graph.name = "fc0.bias", graph.kind = "grad", graph.from = "B0#1"})
// CHECK-SAME: -> (tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"})
// CHECK-LABEL: func.func @OPT1(
// CHECK-SAME: {graph.name = "fc1.weight", graph.kind = "param"}, {{.*}} {graph.name = "fc1.weight", graph.kind = "grad", graph.from = "B1#1"})
// CHECK-NOT: fc0

// The step keeps its signature and runs F0 F1, the tangent, B1 B0, OPT0 OPT1.
// CHECK-LABEL: func.func @train_step(
// CHECK: %[[A:.*]], %[[S0:.*]] = func.call @F0(%fc0_weight, %fc0_bias, %input0)
// CHECK-NEXT: %loss, %[[S1:.*]], %[[S2:.*]], %[[S3:.*]] = func.call @F1(%fc1_weight, %input1, %[[A]])
// CHECK-NEXT: %[[T:.*]] = graph.aten "aten.ones_like.default"(%loss)
// CHECK-NEXT: %[[GA:.*]], %[[GW1:.*]] = func.call @B1(%[[S1]], %[[S2]], %[[S3]], %[[T]])
// CHECK-NEXT: %[[GW0:.*]], %[[GB0:.*]] = func.call @B0(%[[S0]], %[[GA]], %input0)
// CHECK-NEXT: %[[W0:.*]], %[[B0:.*]] = func.call @OPT0(%fc0_weight, %fc0_bias, %[[GW0]], %[[GB0]])
// CHECK-NEXT: %[[W1:.*]] = func.call @OPT1(%fc1_weight, %[[GW1]])
// CHECK-NEXT: func.return %loss, %[[W0]], %[[B0]], %[[W1]]
// CHECK-NOT: @forward
// CHECK-NOT: @backward
// CHECK-NOT: @optimizer

// Ops keep their locations.
// LOC: graph.aten "aten.addmm.default"{{.*}} loc("fc0")

// GAP: error: pipeline-split: PP stages must be numbered 0..2 with no gaps; no op has stage 1
// ORDER: error: split_backward: no backward stage functions @B0, @B1, ...; run pipeline-split first

func.func @forward(%fc0_weight: tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, %fc0_bias: tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, %fc1_weight: tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "param"}, %input0: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"}, %input1: tensor<3x2xf32> {graph.name = "input1", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<3x2xf32> {graph.name = "sub", graph.kind = "saved"}, tensor<3x4xf32> {graph.name = "relu", graph.kind = "saved"}, tensor<4x2xf32> {graph.name = "t_1", graph.kind = "saved"}) {
  %t = graph.aten "aten.t.default"(%fc0_weight) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("fc0")
  %addmm = graph.aten "aten.addmm.default"(%fc0_bias, %input0, %t) tags {PP = 0} : (tensor<4xf32>, tensor<3x4xf32>, tensor<4x4xf32>) -> tensor<3x4xf32> loc("fc0")
  %relu = graph.aten "aten.relu.default"(%addmm) tags {PP = 0} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %t_1 = graph.aten "aten.t.default"(%fc1_weight) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4x2xf32> loc("fc1")
  %mm = graph.aten "aten.mm.default"(%relu, %t_1) tags {PP = 1} : (tensor<3x4xf32>, tensor<4x2xf32>) -> tensor<3x2xf32> loc("fc1")
  %sub = graph.aten "aten.sub.Tensor"(%mm, %input1) tags {PP = 1} : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
  %pow = graph.aten "aten.pow.Tensor_Scalar"(%sub, 2) tags {PP = 1} : (tensor<3x2xf32>) -> tensor<3x2xf32>
  %sum = graph.aten "aten.sum.default"(%pow) tags {PP = 1} : (tensor<3x2xf32>) -> tensor<f32>
  func.return %sum, %sub, %relu, %t_1 : tensor<f32>, tensor<3x2xf32>, tensor<3x4xf32>, tensor<4x2xf32>
}
func.func @backward(%sub: tensor<3x2xf32> {graph.name = "sub", graph.kind = "saved"}, %relu: tensor<3x4xf32> {graph.name = "relu", graph.kind = "saved"}, %t: tensor<4x2xf32> {graph.name = "t_1", graph.kind = "saved"}, %input0: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"}, %tangent: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "grad"}, tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "grad"}) {
  %expand = graph.aten "aten.expand.default"(%tangent, [3, 2]) tags {PP = 1} : (tensor<f32>) -> tensor<3x2xf32>
  %pow = graph.aten "aten.pow.Tensor_Scalar"(%sub, 1.0) tags {PP = 1} : (tensor<3x2xf32>) -> tensor<3x2xf32>
  %mul = graph.aten "aten.mul.Scalar"(%pow, 2.0) tags {PP = 1} : (tensor<3x2xf32>) -> tensor<3x2xf32>
  %mul_1 = graph.aten "aten.mul.Tensor"(%expand, %mul) tags {PP = 1} : (tensor<3x2xf32>, tensor<3x2xf32>) -> tensor<3x2xf32>
  %t_1 = graph.aten "aten.t.default"(%mul_1) tags {PP = 1} : (tensor<3x2xf32>) -> tensor<2x3xf32> loc("fc1")
  %mm = graph.aten "aten.mm.default"(%t_1, %relu) tags {PP = 1} : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32> loc("fc1")
  %t_2 = graph.aten "aten.t.default"(%mm) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4x2xf32> loc("fc1")
  %t_3 = graph.aten "aten.t.default"(%t) tags {PP = 1} : (tensor<4x2xf32>) -> tensor<2x4xf32> loc("fc1")
  %mm_1 = graph.aten "aten.mm.default"(%mul_1, %t_3) tags {PP = 1} : (tensor<3x2xf32>, tensor<2x4xf32>) -> tensor<3x4xf32> loc("fc1")
  %t_4 = graph.aten "aten.t.default"(%t_2) tags {PP = 1} : (tensor<4x2xf32>) -> tensor<2x4xf32> loc("fc1")
  %threshold_backward = graph.aten "aten.threshold_backward.default"(%mm_1, %relu, 0) tags {PP = 0} : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  %t_5 = graph.aten "aten.t.default"(%threshold_backward) tags {PP = 0} : (tensor<3x4xf32>) -> tensor<4x3xf32> loc("fc0")
  %mm_2 = graph.aten "aten.mm.default"(%t_5, %input0) tags {PP = 0} : (tensor<4x3xf32>, tensor<3x4xf32>) -> tensor<4x4xf32> loc("fc0")
  %t_6 = graph.aten "aten.t.default"(%mm_2) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("fc0")
  %sum = graph.aten "aten.sum.dim_IntList"(%threshold_backward, [0], true) tags {PP = 0} : (tensor<3x4xf32>) -> tensor<1x4xf32> loc("fc0")
  %view = graph.aten "aten.view.default"(%sum, [4]) tags {PP = 0} : (tensor<1x4xf32>) -> tensor<4xf32> loc("fc0")
  %t_7 = graph.aten "aten.t.default"(%t_6) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32> loc("fc0")
  func.return %t_7, %view, %t_4 : tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>
}
func.func @optimizer(%fc0_weight: tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, %fc0_bias: tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, %fc1_weight: tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "param"}, %fc0_weight_grad: tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "grad"}, %fc0_bias_grad: tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "grad"}, %fc1_weight_grad: tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "grad"}) -> (tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "param"}) {
  %mul = graph.aten "aten.mul.Tensor"(%fc0_weight_grad, 0.1) : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %sub = graph.aten "aten.sub.Tensor"(%fc0_weight, %mul) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %mul_1 = graph.aten "aten.mul.Tensor"(%fc0_bias_grad, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %sub_1 = graph.aten "aten.sub.Tensor"(%fc0_bias, %mul_1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %mul_2 = graph.aten "aten.mul.Tensor"(%fc1_weight_grad, 0.1) : (tensor<2x4xf32>) -> tensor<2x4xf32>
  %sub_2 = graph.aten "aten.sub.Tensor"(%fc1_weight, %mul_2) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %sub, %sub_1, %sub_2 : tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>
}
func.func @train_step(%fc0_weight: tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, %fc0_bias: tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, %fc1_weight: tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "param"}, %input0: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"}, %input1: tensor<3x2xf32> {graph.name = "input1", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4x4xf32> {graph.name = "fc0.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "fc0.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "fc1.weight", graph.kind = "param"}) {
  %loss, %0, %1, %2 = func.call @forward(%fc0_weight, %fc0_bias, %fc1_weight, %input0, %input1) : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<3x4xf32>, tensor<3x2xf32>) -> (tensor<f32>, tensor<3x2xf32>, tensor<3x4xf32>, tensor<4x2xf32>)
  %3 = graph.aten "aten.ones_like.default"(%loss) : (tensor<f32>) -> tensor<f32>
  %4, %5, %6 = func.call @backward(%0, %1, %2, %input0, %3) : (tensor<3x2xf32>, tensor<3x4xf32>, tensor<4x2xf32>, tensor<3x4xf32>, tensor<f32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>)
  %7, %8, %9 = func.call @optimizer(%fc0_weight, %fc0_bias, %fc1_weight, %4, %5, %6) : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>)
  func.return %loss, %7, %8, %9 : tensor<f32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>
}
