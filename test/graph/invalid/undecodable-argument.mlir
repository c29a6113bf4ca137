// RUN: not piper-opt %s 2>&1 | filecheck %s
// Non-tensor arguments are numbers, strings, lists, none, dtypes, devices and
// enums; a dense tensor literal is none of them.

func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> {
  // CHECK: {{.*}}/undecodable-argument.mlir:7:3: error: 'graph.aten' op 'aten.add.Tensor' rejects its arguments: cannot decode argument attribute dense<1.000000e+00> : tensor<2xf32>
  %y = graph.aten "aten.add.Tensor"(%x, dense<1.0> : tensor<2xf32>) : (tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
