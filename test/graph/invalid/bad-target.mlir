// RUN: not piper-opt %s 2>&1 | filecheck %s
// An operator is named <namespace>.<op>.<overload>.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/bad-target.mlir:6:3: error: 'graph.aten' op 'relu' is not an operator name of the form <namespace>.<op>.<overload> (aten.mm.default, mylib.my_op.default)
  %y = graph.aten "relu"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}
