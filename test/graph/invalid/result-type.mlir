// RUN: not piper-opt %s 2>&1 | filecheck %s
// Result types are what the operator computes from the operand types.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf16> {
  // CHECK: {{.*}}/result-type.mlir:6:3: error: 'graph.aten' op result 0 of 'aten.relu.default' has type tensor<3x4xf16>, but the operands give tensor<3x4xf32>
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> tensor<3x4xf16>
  func.return %y : tensor<3x4xf16>
}
