// RUN: piper-opt %s --split-input-file --verify-diagnostics | filecheck %s
// The graph.* attributes of a function's arguments and results: in a
// function that says what its values are (every captured and stage function
// does), each argument and result has graph.name and graph.kind; graph.from
// is FUNCTION#RESULT in ASCII digits. The error names the function and the
// argument or result, and points at the function.

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F0 argument 0 has no graph.name (in a function whose arguments and results say what they are, each one says it)
func.func @F0(%w: tensor<4xf32> {graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}) {
  func.return %x : tensor<4xf32>
}

// -----

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F0 argument 1 has no graph.kind
func.func @F0(%w: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}) {
  func.return %x : tensor<4xf32>
}

// -----

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F0 result 0 has no graph.name and no graph.kind
func.func @F0(%x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}

// -----

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F1 argument 0: graph.from "F0#x" is not of the form FUNCTION#RESULT, such as "F0#1"
func.func @F1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#x"}) -> (tensor<4xf32> {graph.name = "b", graph.kind = "act"}) {
  func.return %a : tensor<4xf32>
}

// -----

// Digits of other scripts are not result numbers.
// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F1 argument 0: graph.from "F0#٣" is not of the form FUNCTION#RESULT
func.func @F1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#٣"}) -> (tensor<4xf32> {graph.name = "b", graph.kind = "act"}) {
  func.return %a : tensor<4xf32>
}

// -----

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F0 argument 0: graph.name is empty
func.func @F0(%w: tensor<4xf32> {graph.name = "", graph.kind = "param"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}) {
  func.return %w : tensor<4xf32>
}

// -----

// CHECK: {{.*}}/value-attributes.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @F0 argument 0: graph.name must be a string, got 3 : i64
func.func @F0(%w: tensor<4xf32> {graph.name = 3 : i64, graph.kind = "param"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}) {
  func.return %w : tensor<4xf32>
}

// -----

// A function without graph attributes (a plain callee in a test) is fine.
// CHECK: func.func @plain
func.func @plain(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
