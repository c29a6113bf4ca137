// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -p split_backward | filecheck %s
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'split_backward,split_backward' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split_backward' 2>&1 | filecheck %s --check-prefix=LATE

// Each @B{s} becomes @I{s} (the gradient of the stage's input, what the
// earlier stage waits for) and @W{s} (the parameter gradients, which only
// the optimizer waits for). I1 needs only the tangent and w1; W1 reads the
// saved activation; W0 reads I1's gradient.
// CHECK-NOT: func.func @B1
// CHECK: func.func @I1(%w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "grad_act"})
// CHECK-NEXT: graph.aten "aten.mul.Tensor"(%w1, %t)
// CHECK: func.func @W1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "saved", graph.from = "F1#1"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "w1", graph.kind = "grad"})
// CHECK-NEXT: graph.aten "aten.mul.Tensor"(%a, %t)
// The first stage has no input gradient to send: its I is empty.
// CHECK: func.func @I0() {
// CHECK-NEXT: func.return
// CHECK: func.func @W0({{.*}}graph.kind = "saved", graph.from = "F0#1"}, %g: tensor<4xf32> {graph.name = "a", graph.kind = "grad_act", graph.from = "I1#0"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "grad"})
// CHECK-NOT: func.func @B0

// TWICE: error: split_backward: no backward stage functions @B0, @B1, ... (the module is already split); run pipeline-split first
// LATE: error: split_backward: the module is already a plan; split_backward rewrites the stage functions and must run before place (convert-graph-to-dist)
