// RUN: piper-opt %s -p 'recompute{only=params}' | filecheck %s
// RUN: piper-opt %s -p 'recompute{only=params}' | piper-opt -p 'recompute{only=params}' | filecheck %s
// RUN: not piper-opt %s -p 'recompute{only=weights}' 2>&1 | filecheck %s --check-prefix=BAD

// Only the saved values computed from parameters alone move to the
// backward (ZeRO-3's reshard after forward): %t = -w and w itself. The
// forward keeps computing -w for its own use but no longer returns it; the
// input x stays saved (now result 1); the backward takes the parameter and
// re-computes -w first. A second run finds nothing left to move.
// CHECK: func.func @F0(%w: tensor<4xf32> {graph.name = "w", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}) {
// CHECK-NEXT: "aten.neg.default"(%w)
// CHECK: func.return %{{.*}}, %x : tensor<f32>, tensor<4xf32>
// CHECK: func.func @B0(%x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %tl: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}, %w: tensor<4xf32> {graph.name = "w", graph.kind = "param"})
// CHECK-NEXT: %[[T:.*]] = graph.aten "aten.neg.default"(%w)
// CHECK: "aten.mul.Tensor"(%[[T]], %w)

// BAD: error: recompute: only must be 'params' (or left out for every saved value), got 'weights'

func.func @F0(%w: tensor<4xf32> {graph.name = "w", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "t", graph.kind = "saved"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}, tensor<4xf32> {graph.name = "w", graph.kind = "saved"}) {
  %t = graph.aten "aten.neg.default"(%w) tags {PP = 0} : (tensor<4xf32>) -> tensor<4xf32>
  %m = graph.aten "aten.mul.Tensor"(%x, %t) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %l = graph.aten "aten.sum.default"(%m) tags {PP = 0} : (tensor<4xf32>) -> tensor<f32>
  func.return %l, %t, %x, %w : tensor<f32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}
func.func @B0(%t: tensor<4xf32> {graph.name = "t", graph.kind = "saved", graph.from = "F0#1"}, %x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#2"}, %ws: tensor<4xf32> {graph.name = "w", graph.kind = "saved", graph.from = "F0#3"}, %tl: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "w", graph.kind = "grad"}) {
  %gm = graph.aten "aten.mul.Tensor"(%x, %tl) tags {PP = 0} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  %gw = graph.aten "aten.neg.default"(%gm) tags {PP = 0} : (tensor<4xf32>) -> tensor<4xf32>
  %u = graph.aten "aten.mul.Tensor"(%t, %ws) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %r = graph.aten "aten.add.Tensor"(%gw, %u) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}
