// RUN: piper-opt %s --print-debuginfo | filecheck %s
// RUN: piper-opt %s --print-debuginfo | piper-opt --print-debuginfo | filecheck %s
// RUN: piper-opt %s --print-debuginfo > %t && piper-opt %t --print-debuginfo > %t2 && diff %t %t2
// Round-trip of every graph op and argument kind.

// CHECK-LABEL: func.func @forward
// CHECK-SAME: %w: tensor<8x4xf32> {graph.name = "fc.weight", graph.kind = "param"}
func.func @forward(%w: tensor<8x4xf32> {graph.name = "fc.weight", graph.kind = "param"}, %x: tensor<3x4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<3x8xf32> {graph.name = "y", graph.kind = "saved"}) {
  // CHECK: %t = graph.aten "aten.t.default"(%w) tags {PP = 0} : (tensor<8x4xf32>) -> tensor<4x8xf32> loc("fc")
  %t = graph.aten "aten.t.default"(%w) tags {PP = 0} : (tensor<8x4xf32>) -> tensor<4x8xf32> loc("fc")
  // CHECK: %y = graph.aten "aten.mm.default"(%x, %t) tags {PP = 0, EP = 1} : (tensor<3x4xf32>, tensor<4x8xf32>) -> tensor<3x8xf32>
  %y = graph.aten "aten.mm.default"(%x, %t) tags {PP = 0, EP = 1} : (tensor<3x4xf32>, tensor<4x8xf32>) -> tensor<3x8xf32>
  // CHECK: graph.aten "aten.sum.dim_IntList"(%y, [0], true, "dtype" = f32)
  %s = graph.aten "aten.sum.dim_IntList"(%y, [0], true, "dtype" = f32) : (tensor<3x8xf32>) -> tensor<1x8xf32>
  // CHECK: "pin_memory" = false, "memory_format" = #graph.enum<"preserve_format">, "device" = #graph.device<"cpu">
  %o = graph.aten "aten.ones_like.default"(%y, "pin_memory" = false, "memory_format" = #graph.enum<"preserve_format">, "device" = #graph.device<"cpu">) : (tensor<3x8xf32>) -> tensor<3x8xf32>
  // CHECK: graph.aten "aten.gt.Scalar"(%y, 0) : (tensor<3x8xf32>) -> tensor<3x8xi1>
  %b = graph.aten "aten.gt.Scalar"(%y, 0) : (tensor<3x8xf32>) -> tensor<3x8xi1>
  // CHECK: graph.aten "aten.masked_fill.Scalar"(%y, %b, 0xfff0000000000000 : f64)
  %m = graph.aten "aten.masked_fill.Scalar"(%y, %b, 0xFFF0000000000000 : f64) : (tensor<3x8xf32>, tensor<3x8xi1>) -> tensor<3x8xf32>
  // CHECK: graph.aten "aten.cat.default"([%y, %o], 0)
  %c = graph.aten "aten.cat.default"([%y, %o], 0) : (tensor<3x8xf32>, tensor<3x8xf32>) -> tensor<6x8xf32>
  // Floats keep every digit.
  // CHECK: graph.aten "aten.mul.Tensor"(%y, 0.35355339059327373)
  %z = graph.aten "aten.mul.Tensor"(%y, 0.35355339059327373) : (tensor<3x8xf32>) -> tensor<3x8xf32>
  // CHECK: graph.aten "aten.add.Tensor"(%y, 1.0e-08)
  %e = graph.aten "aten.add.Tensor"(%y, 1.0e-08) : (tensor<3x8xf32>) -> tensor<3x8xf32>
  // CHECK: %k, %k_1 = graph.aten "aten.max.dim"(%y, 1) : (tensor<3x8xf32>) -> (tensor<3xf32>, tensor<3xi64>)
  %k:2 = graph.aten "aten.max.dim"(%y, 1) : (tensor<3x8xf32>) -> (tensor<3xf32>, tensor<3xi64>)
  // CHECK: graph.aten "aten.native_layer_norm.default"(%y, [8], none, none, 1.0e-05)
  %ln:3 = graph.aten "aten.native_layer_norm.default"(%y, [8], none, none, 1.0e-05) : (tensor<3x8xf32>) -> (tensor<3x8xf32>, tensor<3x1xf32>, tensor<3x1xf32>)
  // CHECK: graph.aten "aten.full.default"([2, 2], -1.5, "dtype" = f32, "layout" = #graph.enum<"strided">, "device" = #graph.device<"cpu">, "pin_memory" = false)
  %f = graph.aten "aten.full.default"([2, 2], -1.5, "dtype" = f32, "layout" = #graph.enum<"strided">, "device" = #graph.device<"cpu">, "pin_memory" = false) : () -> tensor<2x2xf32>
  // CHECK: graph.constant [1 : i64, 2 : i64, 3 : i64] : tensor<3xi64>
  %cst = graph.constant [1 : i64, 2 : i64, 3 : i64] : tensor<3xi64>
  func.return %y : tensor<3x8xf32>
}
