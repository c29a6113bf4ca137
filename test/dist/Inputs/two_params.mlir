// One stage with two parameters (w: 4 floats, b: 2x2 floats), for
// gradient buckets: loss = sum(x * w) + sum(b); SGD updates.
func.func @F0(%w: tensor<4xf32> {graph.name = "w", graph.kind = "param"}, %b: tensor<2x2xf32> {graph.name = "b", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}) {
  %a = graph.aten "aten.mul.Tensor"(%x, %w) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %s = graph.aten "aten.sum.default"(%a) tags {PP = 0} : (tensor<4xf32>) -> tensor<f32>
  %t = graph.aten "aten.sum.default"(%b) tags {PP = 0} : (tensor<2x2xf32>) -> tensor<f32>
  %l = graph.aten "aten.add.Tensor"(%s, %t) tags {PP = 0} : (tensor<f32>, tensor<f32>) -> tensor<f32>
  func.return %l, %x : tensor<f32>, tensor<4xf32>
}
func.func @B0(%x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %b: tensor<2x2xf32> {graph.name = "b", graph.kind = "param"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "w", graph.kind = "grad"}, tensor<2x2xf32> {graph.name = "b", graph.kind = "grad"}) {
  %gw = graph.aten "aten.mul.Tensor"(%x, %t) tags {PP = 0} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  %z = graph.aten "aten.mul.Tensor"(%b, 0.0) tags {PP = 0} : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %gb = graph.aten "aten.add.Tensor"(%z, %t) tags {PP = 0} : (tensor<2x2xf32>, tensor<f32>) -> tensor<2x2xf32>
  func.return %gw, %gb : tensor<4xf32>, tensor<2x2xf32>
}
func.func @OPT0(%w: tensor<4xf32> {graph.name = "w", graph.kind = "param"}, %b: tensor<2x2xf32> {graph.name = "b", graph.kind = "param"}, %gw: tensor<4xf32> {graph.name = "w", graph.kind = "grad"}, %gb: tensor<2x2xf32> {graph.name = "b", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "w", graph.kind = "param"}, tensor<2x2xf32> {graph.name = "b", graph.kind = "param"}) {
  %sw = graph.aten "aten.mul.Tensor"(%gw, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
  %nw = graph.aten "aten.sub.Tensor"(%w, %sw) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %sb = graph.aten "aten.mul.Tensor"(%gb, 0.1) : (tensor<2x2xf32>) -> tensor<2x2xf32>
  %nb = graph.aten "aten.sub.Tensor"(%b, %sb) : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
  func.return %nw, %nb : tensor<4xf32>, tensor<2x2xf32>
}
