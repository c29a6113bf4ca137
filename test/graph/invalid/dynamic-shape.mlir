// RUN: not piper-opt %s 2>&1 | filecheck %s
// Graph tensors have static shapes.

func.func @f(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  // CHECK: {{.*}}/dynamic-shape.mlir:6:3: error: 'graph.aten' op operand 0 has type tensor<?x4xf32>; graph tensors have static shapes
  %y = graph.aten "aten.relu.default"(%x) : (tensor<?x4xf32>) -> tensor<?x4xf32>
  func.return %y : tensor<?x4xf32>
}
