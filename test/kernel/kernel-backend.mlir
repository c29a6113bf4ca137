// RUN: piper-opt %s -p 'fuse-elementwise,kernel-backend{backend="aten" filter="[PASS=B]"}' | filecheck %s
// RUN: piper-opt %s -p 'fuse-elementwise,kernel-backend{backend="triton"},kernel-backend{backend="off" filter="[PP=0]"}' | filecheck %s --check-prefix=OFF
// RUN: piper-opt %s -p 'fuse-elementwise{filter="[PP=1 PASS=F|OPT]"}' | filecheck %s --check-prefix=SEL
// RUN: not piper-opt %s -p 'kernel-backend{backend="cuda"}' 2>&1 | filecheck %s --check-prefix=ERR1
// RUN: not piper-opt %s -p 'fuse-elementwise{filter="[PP=3]"}' 2>&1 | filecheck %s --check-prefix=ERR2
// RUN: not piper-opt %s -p 'kernel-backend{filter="[PASS=F MB=0]"}' 2>&1 | filecheck %s --check-prefix=ERR3

// Three stage functions of a plan with the same pointwise chain.

// kernel-backend marks the groups of the selected functions (here the
// backward, "B" also covering split BI/BW halves); the others keep no mark.
// CHECK-LABEL: func.func @F0
// CHECK:       kernel.fused elementwise domain [16] block [16] warps 1 (%x, %y)
// CHECK-LABEL: func.func @B0
// CHECK:       kernel.fused elementwise domain [16] block [16] warps 1 backend aten (%x, %y)
// CHECK-LABEL: func.func @F1
// CHECK:       kernel.fused elementwise domain [16] block [16] warps 1 (%x, %y)

// backend "off" dissolves the groups again: stage 0 runs its graph ops, the
// groups of stage 1 keep the triton mark.
// OFF-LABEL:   func.func @F0
// OFF-NEXT:    %a = graph.aten "aten.mul.Tensor"(%x, %y)
// OFF-NEXT:    %r = graph.aten "aten.relu.default"(%a)
// OFF-NEXT:    func.return %r
// OFF-LABEL:   func.func @B0
// OFF-NOT:     kernel.fused
// OFF-LABEL:   func.func @F1
// OFF:         kernel.fused elementwise domain [16] block [16] warps 1 backend triton (%x, %y)

// The fusion passes fuse only the functions their filter selects.
// SEL-LABEL:   func.func @F0
// SEL-NOT:     kernel.fused
// SEL-LABEL:   func.func @B0
// SEL-NOT:     kernel.fused
// SEL-LABEL:   func.func @F1
// SEL:         kernel.fused elementwise

// ERR1: error: kernel-backend: backend must be one of triton, aten, off, got 'cuda'
// ERR2: error: fuse-elementwise: filter [PP=3] selects no stage function
// ERR3: error: kernel-backend: filter [PASS=F MB=0] names MB, but a stage function serves every microbatch

func.func @F0(%x: tensor<16xf32>, %y: tensor<16xf32>) -> tensor<16xf32> {
  %a = graph.aten "aten.mul.Tensor"(%x, %y) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %r = graph.aten "aten.relu.default"(%a) : (tensor<16xf32>) -> tensor<16xf32>
  func.return %r : tensor<16xf32>
}
func.func @B0(%x: tensor<16xf32>, %y: tensor<16xf32>) -> tensor<16xf32> {
  %a = graph.aten "aten.mul.Tensor"(%x, %y) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %r = graph.aten "aten.relu.default"(%a) : (tensor<16xf32>) -> tensor<16xf32>
  func.return %r : tensor<16xf32>
}
func.func @F1(%x: tensor<16xf32>, %y: tensor<16xf32>) -> tensor<16xf32> {
  %a = graph.aten "aten.mul.Tensor"(%x, %y) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %r = graph.aten "aten.relu.default"(%a) : (tensor<16xf32>) -> tensor<16xf32>
  func.return %r : tensor<16xf32>
}
