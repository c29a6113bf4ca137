// RUN: not piper-opt %s 2>&1 | filecheck %s
// Element types are the ones torch has a dtype for.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xi2> {
  // CHECK: {{.*}}/element-type.mlir:6:3: error: 'graph.aten' op result 0 has type tensor<3x4xi2>; element type i2 has no torch dtype
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> tensor<3x4xi2>
  func.return %y : tensor<3x4xi2>
}
