// RUN: not piper-opt %s 2>&1 | filecheck %s
// The operator itself, run on meta tensors, rejects the operand shapes.

func.func @f(%a: tensor<3x4xf32>, %b: tensor<3x4xf32>) -> tensor<3x3xf32> {
  // CHECK: {{.*}}/rejected-arguments.mlir:6:3: error: 'graph.aten' op 'aten.mm.default' rejects its arguments: a and b must have same reduction dim, but got [3, 4] X [3, 4].
  %y = graph.aten "aten.mm.default"(%a, %b) : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x3xf32>
  func.return %y : tensor<3x3xf32>
}
