// Stage functions of a 2-stage model (as pipeline-split produces them):
// F0: a = x * w0; F1: loss = sum(a * w1); B1, B0 their gradients; SGD with momentum (state "w0:momentum_buffer",
// "w1:momentum_buffer") updates.
func.func @F0(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}) {
  %a = graph.aten "aten.mul.Tensor"(%x, %w0) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %a, %x : tensor<4xf32>, tensor<4xf32>
}
func.func @F1(%w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#0"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "a", graph.kind = "saved"}) {
  %m = graph.aten "aten.mul.Tensor"(%a, %w1) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %l = graph.aten "aten.sum.default"(%m) tags {PP = 1} : (tensor<4xf32>) -> tensor<f32>
  func.return %l, %a : tensor<f32>, tensor<4xf32>
}
func.func @B1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "saved", graph.from = "F1#1"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "grad_act"}, tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) {
  %ga = graph.aten "aten.mul.Tensor"(%w1, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  %gw = graph.aten "aten.mul.Tensor"(%a, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  func.return %ga, %gw : tensor<4xf32>, tensor<4xf32>
}
func.func @B0(%x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %g: tensor<4xf32> {graph.name = "a", graph.kind = "grad_act", graph.from = "B1#0"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}) {
  %gw = graph.aten "aten.mul.Tensor"(%x, %g) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %gw : tensor<4xf32>
}
func.func @OPT0(%w: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}, %b: tensor<4xf32> {graph.name = "w0:momentum_buffer", graph.kind = "state"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, tensor<4xf32> {graph.name = "w0:momentum_buffer", graph.kind = "state"}) {
  %bm = graph.aten "aten.mul.Tensor"(%b, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
  %nb = graph.aten "aten.add.Tensor"(%bm, %g) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %s = graph.aten "aten.mul.Tensor"(%nb, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n, %nb : tensor<4xf32>, tensor<4xf32>
}
func.func @OPT1(%w: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}, %b: tensor<4xf32> {graph.name = "w1:momentum_buffer", graph.kind = "state"}) -> (tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, tensor<4xf32> {graph.name = "w1:momentum_buffer", graph.kind = "state"}) {
  %bm = graph.aten "aten.mul.Tensor"(%b, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
  %nb = graph.aten "aten.add.Tensor"(%bm, %g) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %s = graph.aten "aten.mul.Tensor"(%nb, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %n, %nb : tensor<4xf32>, tensor<4xf32>
}
