// RUN: piper-opt %s -p 'convert-graph-to-dist,split{n=2}' | filecheck %s --check-prefix=MB
// RUN: piper-opt %s -p 'convert-graph-to-dist,replicate{n=2}' | filecheck %s --check-prefix=DP
// RUN: piper-opt %s -p 'convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1 0B0 0B1; rank1: 1F0 1B0 1F1 1B1"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED

// The step's loss is the store marked `loss` (from the graph output of kind
// "loss"), not a store named "loss": here the loss is named "objective" and
// a parameter is named "loss". The loss is averaged over microbatches and
// replicas and stays marked down to sched; the parameter is stored as it is.

// MB: %[[L:.*]] = dist.sum %objective_F1, %objective_F1_1 scale 0.5 on 1 : tensor<f32>
// MB-NEXT: dist.store loss "objective" %[[L]] on 1 : tensor<f32>
// MB: %[[G:.*]] = dist.sum %loss_B1, %loss_B1_1 scale 1.0 on 1 : tensor<4xf32>
// MB-NEXT: %[[W:.*]] = dist.task OPT stage 1 mb 0 replica 0 on 1 @OPT1(%loss, %[[G]])
// MB-NEXT: dist.store "loss" %[[W]] on 1 : tensor<4xf32>

// DP-DAG: %[[P0:.*]] = dist.sum %objective_F1 scale 0.5 on 2 : tensor<f32>
// DP-DAG: %[[P1:.*]] = dist.sum %objective_F1_1 scale 0.5 on 3 : tensor<f32>
// DP-DAG: %[[R0:.*]], %[[R1:.*]] = dist.all_reduce sum %[[P0]], %[[P1]] group [2, 3] bytes 8
// DP-DAG: dist.store "loss" %loss_OPT1 on 2 : tensor<4xf32>
// DP-DAG: dist.store "loss" %loss_OPT1_1 on 3 : tensor<4xf32>
// DP-DAG: dist.store loss "objective" %[[R0]] on 2 : tensor<f32>
// DP-DAG: dist.store loss "objective" %[[R1]] on 3 : tensor<f32>

// SCHED: sched.program @rank1 device 1
// SCHED-DAG: sched.store loss "objective" %objective_F1_sum : tensor<f32>
// SCHED-DAG: sched.store "loss" %loss_OPT1 : tensor<4xf32>

// Stage functions of a 2-stage model (as pipeline-split produces them):
// F0: a = x * w0; F1: loss = sum(a * w1); B1, B0 their gradients; SGD updates.
func.func @F0(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}) {
  %a = graph.aten "aten.mul.Tensor"(%x, %w0) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %a, %x : tensor<4xf32>, tensor<4xf32>
}
func.func @F1(%w1: tensor<4xf32> {graph.name = "loss", graph.kind = "param"}, %a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#0"}) -> (tensor<f32> {graph.name = "objective", graph.kind = "loss"}, tensor<4xf32> {graph.name = "a", graph.kind = "saved"}) {
  %m = graph.aten "aten.mul.Tensor"(%a, %w1) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %l = graph.aten "aten.sum.default"(%m) tags {PP = 1} : (tensor<4xf32>) -> tensor<f32>
  func.return %l, %a : tensor<f32>, tensor<4xf32>
}
func.func @B1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "saved", graph.from = "F1#1"}, %w1: tensor<4xf32> {graph.name = "loss", graph.kind = "param"}, %t: tensor<f32> {graph.name = "objective", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "grad_act"}, tensor<4xf32> {graph.name = "loss", graph.kind = "grad"}) {
  %ga = graph.aten "aten.mul.Tensor"(%w1, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  %gw = graph.aten "aten.mul.Tensor"(%a, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  func.return %ga, %gw : tensor<4xf32>, tensor<4xf32>
}
func.func @B0(%x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %g: tensor<4xf32> {graph.name = "a", graph.kind = "grad_act", graph.from = "B1#0"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}) {
  %gw = graph.aten "aten.mul.Tensor"(%x, %g) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %gw : tensor<4xf32>
}
func.func @OPT0(%w: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "param"}) {
  %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n : tensor<4xf32>
}
func.func @OPT1(%w: tensor<4xf32> {graph.name = "loss", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "loss", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "loss", graph.kind = "param"}) {
  %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n : tensor<4xf32>
}
