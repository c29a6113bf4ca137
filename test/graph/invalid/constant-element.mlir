// RUN: not piper-opt %s 2>&1 | filecheck %s
// Each value of a constant is a number of the tensor's element type.

func.func @f() -> tensor<2xi64> {
  // CHECK: {{.*}}/constant-element.mlir:6:3: error: 'graph.constant' op constant element 1 is 2.000000e+00 : f32, expected a i64 number
  %c = graph.constant [1 : i64, 2.0 : f32] : tensor<2xi64>
  func.return %c : tensor<2xi64>
}
