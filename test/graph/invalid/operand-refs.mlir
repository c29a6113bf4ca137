// RUN: not piper-opt %s 2>&1 | filecheck %s
// The argument list refers to each operand once, in order (only the generic
// form can break this; the custom form numbers operands as it reads them).

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/operand-refs.mlir:7:3: error: 'graph.aten' op argument list refers to operands [1], expected each of the 1 operands once, in order
  %y = "graph.aten"(%x) <{target = "aten.relu.default", args = [#graph.arg<1>], kwargs = {}}> : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}
