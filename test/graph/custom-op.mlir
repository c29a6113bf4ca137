// RUN: piper-opt --load examples.custom_op %s | filecheck %s
// RUN: piper-opt --load examples.custom_op %s | piper-opt --load examples.custom_op | filecheck %s
// RUN: not piper-opt %s 2>&1 | filecheck %s --check-prefix=UNLOADED
// RUN: not piper-opt --load no_such_module_of_piper %s 2>&1 | filecheck %s --check-prefix=NOMODULE
// RUN: sed -e 's/tensor<3x4xf32> loc/tensor<4x3xf32> loc/' -e 's/return %%y : tensor<3x4xf32>/return %%y : tensor<4x3xf32>/' -e 's/-> tensor<3x4xf32> {/-> tensor<4x3xf32> {/' %s | not piper-opt --load examples.custom_op 2>&1 | filecheck %s --check-prefix=TYPE

// A custom operator (torch.library, examples/custom_op.py) is a graph.aten
// op named <namespace>.<op>.<overload>: it round-trips, and its result type
// is checked against its fake kernel once the module that registers it is
// loaded.
func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: graph.aten "piper_examples.scaled_silu.default"(%x, 0.5) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  %y = graph.aten "piper_examples.scaled_silu.default"(%x, 0.5) : (tensor<3x4xf32>) -> tensor<3x4xf32> loc("blocks.0")
  func.return %y : tensor<3x4xf32>
}

// UNLOADED: error: 'graph.aten' op unknown operator 'piper_examples.scaled_silu.default': a custom operator must be registered (torch.library) in this process; import the module that defines it (piper-opt --load MODULE, piper-run --load MODULE)
// NOMODULE: error: cannot import 'no_such_module_of_piper', the module that registers the plan's custom operators: ModuleNotFoundError
// TYPE: error: 'graph.aten' op result 0 of 'piper_examples.scaled_silu.default' has type tensor<4x3xf32>, but the operands give tensor<3x4xf32>
