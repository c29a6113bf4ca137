// RUN: not piper-opt %s 2>&1 | filecheck %s
// A constant lists one value per element of its type.

func.func @f() -> tensor<3xi64> {
  // CHECK: {{.*}}/constant-count.mlir:6:3: error: 'graph.constant' op constant has 2 elements, type tensor<3xi64> needs 3
  %c = graph.constant [1 : i64, 2 : i64] : tensor<3xi64>
  func.return %c : tensor<3xi64>
}
