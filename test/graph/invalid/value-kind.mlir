// RUN: not piper-opt %s --split-input-file 2>&1 | filecheck %s
// A function argument or result whose graph.kind is not one Piper knows
// (a typo here would otherwise fail much later, in some pass): the error
// names the function, the argument or result, and points at the function.

// CHECK: {{.*}}/value-kind.mlir:[[# @LINE + 2]]:1: error: 'func.func' op @f argument 1: graph.kind "parm" is not one of: act, buffer, combine, dispatch, found_inf, grad, grad_act, input, loss, loss_scale, param, partial, reduced, saved, state, tangent
// CHECK-NOT: Traceback
func.func @f(%x: tensor<3xf32> {graph.name = "x", graph.kind = "input"},
             %w: tensor<3xf32> {graph.name = "w", graph.kind = "parm"}) -> tensor<3xf32> {
  func.return %x : tensor<3xf32>
}

// -----

// CHECK: {{.*}}/value-kind.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @g result 0: graph.kind must be a string, got 3 : i64
func.func @g(%x: tensor<3xf32>) -> (tensor<3xf32> {graph.kind = 3 : i64}) {
  func.return %x : tensor<3xf32>
}

// -----

// Every known kind parses.
// CHECK: func.func @h
func.func @h(%a: tensor<1xf32> {graph.name = "a", graph.kind = "act"}, %b: tensor<1xf32> {graph.name = "b", graph.kind = "buffer"},
             %c: tensor<1xf32> {graph.name = "c", graph.kind = "combine"}, %d: tensor<1xf32> {graph.name = "d", graph.kind = "dispatch"},
             %e: tensor<1xf32> {graph.name = "e", graph.kind = "grad"}, %f: tensor<1xf32> {graph.name = "f", graph.kind = "grad_act"},
             %g: tensor<1xf32> {graph.name = "g", graph.kind = "input"}, %h: tensor<1xf32> {graph.name = "h", graph.kind = "loss"},
             %i: tensor<1xf32> {graph.name = "i", graph.kind = "param"}, %j: tensor<1xf32> {graph.name = "j", graph.kind = "saved"},
             %k: tensor<1xf32> {graph.name = "k", graph.kind = "state"}, %l: tensor<1xf32> {graph.name = "l", graph.kind = "tangent"}) {
  func.return
}
