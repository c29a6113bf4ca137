// RUN: not piper-opt %s 2>&1 | filecheck %s
// An operator is named aten.<op>.<overload>.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/bad-target.mlir:6:3: error: 'graph.aten' op 'relu' is not an operator name of the form aten.<op>.<overload>
  %y = graph.aten "relu"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}
