// RUN: not piper-opt %s 2>&1 | filecheck %s
// A constant has a static shape.

func.func @f() -> tensor<?xi64> {
  // CHECK: {{.*}}/constant-shape.mlir:6:3: error: 'graph.constant' op result has type tensor<?xi64>; graph tensors have static shapes
  %c = graph.constant [1 : i64, 2 : i64] : tensor<?xi64>
  func.return %c : tensor<?xi64>
}
