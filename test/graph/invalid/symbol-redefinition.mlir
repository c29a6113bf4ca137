// RUN: not piper-opt %s 2>&1 | filecheck %s
// A function defined twice: the error points at the second definition.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  func.return %x : tensor<3x4xf32>
}
// CHECK: {{.*}}/symbol-redefinition.mlir:9:1: error: 'builtin.module' op Redefinition of symbol "f"
// CHECK-NOT: Traceback
func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  func.return %x : tensor<3x4xf32>
}
