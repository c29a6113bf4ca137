// RUN: not piper-opt %s 2>&1 | filecheck %s
// The target must name an operator torch knows.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/unknown-operator.mlir:6:3: error: 'graph.aten' op unknown operator 'aten.no_such_op.default'
  %y = graph.aten "aten.no_such_op.default"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}
