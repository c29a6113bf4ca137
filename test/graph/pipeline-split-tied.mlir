// RUN: piper-opt %S/Inputs/tied_two_stage.mlir -p pipeline-split | filecheck %s
// RUN: piper-opt %S/Inputs/tied_two_stage.mlir -p pipeline-split,convert-graph-to-dist | filecheck %s --check-prefix=DIST

// `shared` runs in stages 0 and 1. Stage 0 owns it: F0 reads it as a
// parameter and returns it as an activation for F1; B1 sends its part of
// the gradient back; B0 returns the gradient; only OPT0 updates it.
// CHECK-LABEL: func.func @F0(
// CHECK-SAME: %shared_weight: tensor<4x4xf32> {graph.name = "shared.weight", graph.kind = "param"}
// CHECK-SAME: -> (tensor<4x4xf32> {graph.name = "shared_weight", graph.kind = "act"}, tensor<4xf32> {graph.name = "shared_bias", graph.kind = "act"}
// CHECK: func.return %shared_weight, %shared_bias
// CHECK-LABEL: func.func @F1(
// CHECK-SAME: %shared_weight: tensor<4x4xf32> {graph.name = "shared_weight", graph.kind = "act", graph.from = "F0#0"}
// CHECK-NOT: graph.kind = "param"
// CHECK-LABEL: func.func @B0(
// CHECK-SAME: graph.kind = "grad_act", graph.from = "B1#
// CHECK-SAME: {graph.name = "shared.weight", graph.kind = "grad"}
// CHECK-LABEL: func.func @OPT0(
// CHECK-SAME: graph.name = "shared.weight", graph.kind = "param"
// CHECK-LABEL: func.func @OPT1()

// The weight is loaded on device 0 only, crosses to device 1 each step,
// and device 1's part of its gradient comes back.
// DIST: dist.load "shared.weight" on 0
// DIST-NOT: dist.load "shared.weight" on 1
// DIST: dist.send %shared_weight_F0 from 0 to 1 bytes 64 : tensor<4x4xf32>
// DIST: dist.send {{.*}} from 1 to 0 bytes 64 : tensor<4x4xf32>
