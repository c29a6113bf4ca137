// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -p recompute | filecheck %s
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'recompute{stages=5}' 2>&1 | filecheck %s --check-prefix=BAD
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,recompute' 2>&1 | filecheck %s --check-prefix=ORDER

// Forward functions stop returning saved values; each backward takes the
// stage inputs it needs instead (here the model input and the incoming
// activation, straight from @F0) and re-runs what it needs.
// CHECK: func.func @F0(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}) {
// CHECK: func.func @F1({{.*}}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}) {
// CHECK: func.func @B1(%w1: {{.*}}, %t: {{.*}}, %a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#0"})
// CHECK: func.func @B0(%g: tensor<4xf32> {graph.name = "a", graph.kind = "grad_act", graph.from = "B1#0"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"})
// CHECK-NOT: graph.kind = "saved"

// BAD: error: recompute: there is no stage 5 (stages [0, 1])

// ORDER: error: recompute: the module is already a plan; recompute rewrites the stage functions and must run before place (convert-graph-to-dist)
