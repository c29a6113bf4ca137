// RUN: piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="blocks.1.fc:colwise,blocks.2.fc:rowwise"}' | filecheck %s
// RUN: piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="blocks.1.fc:colwise,blocks.2.fc:rowwise"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: not piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="blocks.9.*:colwise"}' 2>&1 | filecheck %s --check-prefix=NOMATCH
// RUN: not piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=3 plan="blocks.1.fc:colwise,blocks.2.fc:rowwise"}' 2>&1 | filecheck %s --check-prefix=NODIV
// RUN: not piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="head.fc:colwise"}' 2>&1 | filecheck %s --check-prefix=NORULE
// RUN: piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2}' | filecheck %s --check-prefix=AUTO
// RUN: piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,replicate{n=2},shard{stage=1},tensor_parallel{n=2 plan="blocks.1.fc:colwise,blocks.2.fc:rowwise"}' | piper-opt | filecheck %s --check-prefix=ZERO

// Input: a captured MLP step, 3 Linear+ReLU blocks and a head, SGD with
// momentum: `piper-capture mlp --layers 3 --dim 4 --classes 2 --batch 2
// --optimizer sgd --momentum 0.9`. Megatron's MLP pattern over tp = 2:
// blocks.1.fc colwise (weight [4, 4] split on out), relu, blocks.2.fc
// rowwise (weight split on in).

// The forward is cut at the rowwise output. Piece 0 runs the colwise Linear
// on its [2, 4] rows of the weight and [2] of the bias, the relu on the
// local [2, 2] activation, and the rowwise product of that activation with
// its [4, 2] block of columns: a partial sum, returned for the all_reduce.
// CHECK-LABEL: func.func @F0_tp_p0(
// CHECK-SAME: %blocks_1_fc_weight: tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}
// CHECK-SAME: %blocks_1_fc_bias: tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}
// CHECK-SAME: %blocks_2_fc_weight: tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}
// CHECK-SAME: -> (tensor<2x4xf32> {graph.name = "addmm", graph.kind = "partial"}
// CHECK: graph.aten "aten.addmm.default"(%blocks_1_fc_bias, %relu, %t_1) tags {PP = 1} : (tensor<2xf32>, tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<2x2xf32>
// CHECK-NEXT: graph.aten "aten.relu.default"(%addmm_1) tags {PP = 1} : (tensor<2x2xf32>) -> tensor<2x2xf32>
// CHECK: %addmm_2 = graph.aten "aten.mm.default"(%relu_1, %t_2) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>

// Piece 1 adds the (replicated) rowwise bias to the reduced sum, then the
// rest of the step, replicated: relu, head, loss.
// CHECK-LABEL: func.func @F0_tp_p1(
// CHECK-SAME: %addmm_sum: tensor<2x4xf32> {graph.name = "addmm_sum", graph.kind = "reduced"}
// CHECK-SAME: %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}
// CHECK: graph.aten "aten.add.Tensor"(%addmm_sum, %blocks_2_fc_bias) tags {PP = 2} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>

// The backward is the transpose: the gradient reaching the colwise Linear's
// input (grad [2, 2] x weight block [2, 4]) is a partial sum, all-reduced
// before the backward of blocks.0 reads it. The rowwise weight's gradient
// is its [4, 2] block, the colwise weight's its [2, 4] rows.
// CHECK-LABEL: func.func @B0_tp_p0(
// CHECK: %mm_4 = graph.aten "aten.mm.default"(%threshold_backward_1, %t_11) tags {PP = 1} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK: func.return %mm_4, %t_14, %view_2, %t_10, %view_1
// CHECK-SAME: tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>
// CHECK-LABEL: func.func @B0_tp_p1(
// CHECK-SAME: %mm_sum: tensor<2x4xf32> {graph.name = "mm_sum", graph.kind = "reduced"}
// CHECK: graph.aten "aten.threshold_backward.default"(%mm_sum, %relu, 0) tags {PP = 0}

// The optimizer runs on the shards: the momentum of a sharded weight has
// the shard's shape.
// CHECK-LABEL: func.func @OPT0_tp(
// CHECK: graph.aten "aten.add.Tensor"(%{{.*}}, %blocks_2_fc_weight) : (tensor<4x2xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>

// The mesh gets a tp axis (device = old device * 2 + tp rank). Each rank
// loads its shard: colwise rows as the flat `shard k of 2`, rowwise columns
// as `shard k of 2 dim 1`; the optimizer state likewise. Every rank reads
// the same inputs (replica 0). One all_reduce over the tp group in the
// forward, one in the backward.
// CHECK-LABEL: dist.plan @step mesh [pp = 1, tp = 2] microbatches 1 {
// CHECK: dist.load "blocks.0.fc.weight" on 0 : tensor<4x4xf32>
// CHECK: dist.load "blocks.1.fc.weight" shard 0 of 2 on 0 : tensor<2x4xf32>
// CHECK: dist.load "blocks.1.fc.weight" shard 1 of 2 on 1 : tensor<2x4xf32>
// CHECK: dist.load "blocks.2.fc.weight" shard 0 of 2 dim 1 on 0 : tensor<4x2xf32>
// CHECK: dist.load "blocks.2.fc.weight" shard 1 of 2 dim 1 on 1 : tensor<4x2xf32>
// CHECK: dist.load "blocks.2.fc.bias" on 0 : tensor<4xf32>
// CHECK: dist.input "input0" replica 0 mb 0 on 0
// CHECK: dist.input "input0" replica 0 mb 0 on 1
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_tp_p0(
// CHECK: dist.task F stage 0 mb 0 replica 1 on 1 @F0_tp_p0(
// CHECK: %addmm_sum, %addmm_sum_1 = dist.all_reduce sum %addmm, %addmm_1 group [0, 1] bytes 64
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_tp_p1(%addmm_sum,
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_tp_p0(
// CHECK: %mm_sum, %mm_sum_1 = dist.all_reduce sum %mm, %mm_1 group [0, 1] bytes 64
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_tp_p1(%mm_sum,
// CHECK: dist.load "blocks.2.fc.weight:momentum_buffer" shard 0 of 2 dim 1 on 0 : tensor<4x2xf32>
// CHECK: dist.store "blocks.1.fc.weight" shard 1 of 2 %{{.*}} on 1 : tensor<2x4xf32>
// CHECK: dist.store "blocks.2.fc.weight" shard 0 of 2 dim 1 %{{.*}} on 0 : tensor<4x2xf32>

// Lowered, each device's program loads its shard and runs the all_reduce.
// SCHED: sched.program @rank0 device 0 {
// SCHED: sched.load "blocks.2.fc.weight" shard 0 of 2 dim 1 : tensor<4x2xf32>
// SCHED: sched.collective all_reduce sum %addmm group [0, 1]
// SCHED: sched.collective all_reduce sum %mm group [0, 1]
// SCHED: sched.store "blocks.2.fc.weight" shard 0 of 2 dim 1
// SCHED: sched.program @rank1 device 1 {
// SCHED: sched.load "blocks.2.fc.weight" shard 1 of 2 dim 1 : tensor<4x2xf32>

// NOMATCH: error: tensor_parallel: plan pattern 'blocks.9.*' matches no module with a weight (modules: blocks.0.fc, blocks.1.fc, blocks.2.fc, head.fc)

// NODIV: mlp3_sgd.mlir:1:1 (graph.aten at loc("blocks.1.fc")): error: tensor_parallel: colwise 'blocks.1.fc': dim 0 of 'blocks.1.fc.weight' ([4, 4]) does not divide by n=3

// A colwise head would shard the logits over the vocabulary: the loss has
// no tensor-parallel layout yet.
// NORULE: mlp3_sgd.mlir:1:1 (graph.aten at loc("head")): error: tensor_parallel: @F0: 'aten._log_softmax.default' over the split dim 1 (a softmax over split logits) has no tensor-parallel layout yet

// -----
// Without a plan the pass finds Megatron's alternation in the forward: each
// Linear whose output reaches the next Linear only through per-feature ops
// (the relu) is colwise, that next one rowwise: blocks.0 colwise,
// blocks.1 rowwise, blocks.2 colwise, the head rowwise. Two all_reduces in
// the forward (after blocks.1 and the head), one per colwise input's
// gradient in the backward (blocks.0's input needs none: it is the batch).
// AUTO: dist.load "blocks.0.fc.weight" shard 0 of 2 on 0 : tensor<2x4xf32>
// AUTO: dist.load "blocks.1.fc.weight" shard 0 of 2 dim 1 on 0 : tensor<4x2xf32>
// AUTO: dist.load "blocks.1.fc.bias" on 0 : tensor<4xf32>
// AUTO: dist.load "blocks.2.fc.weight" shard 0 of 2 on 0 : tensor<2x4xf32>
// AUTO: dist.load "head.fc.weight" shard 0 of 2 dim 1 on 0 : tensor<2x2xf32>
// AUTO: dist.all_reduce sum %addmm, %addmm_1 group [0, 1] bytes 64
// AUTO: dist.all_reduce sum %addmm_2, %addmm_3 group [0, 1] bytes 32
// AUTO: dist.all_reduce sum %mm, %mm_1 group [0, 1] bytes 64

// -----
// With ZeRO over dp (replicate 2, shard 1; device = dp rank * 2 + tp rank):
// a split weight's block is ZeRO-sharded within its dp group. Device 1 (dp
// 0, tp 1) holds slice 0 of 2 of its block: for blocks of rows one flat
// slice, `shard 2 of 4`; for blocks of columns `shard 2 of 4 dim 1 parts 2`
// (block 1 of 2 along dim 1, flat slice 0 of 2 of it), which prints and
// parses back. Gradients are reduce-scattered and updated blocks gathered
// within the dp groups of one tp rank: [0, 2] and [1, 3].
// ZERO: dist.reduce_scatter sum %grads_packed, %grads_packed_2 group [0, 2] bytes 416 : (tensor<52xf32>, tensor<52xf32>) -> (tensor<26xf32>, tensor<26xf32>)
// ZERO: dist.reduce_scatter sum %grads_packed_1, %grads_packed_3 group [1, 3]
// ZERO: dist.load "blocks.0.fc.weight:momentum_buffer" shard 0 of 2 on 1 : tensor<8xf32>
// ZERO: dist.load "blocks.1.fc.weight:momentum_buffer" shard 2 of 4 on 1 : tensor<4xf32>
// ZERO: dist.load "blocks.2.fc.weight:momentum_buffer" shard 2 of 4 dim 1 parts 2 on 1 : tensor<4xf32>
// ZERO: dist.store "blocks.2.fc.weight:momentum_buffer" shard 2 of 4 dim 1 parts 2 %{{.*}} on 1 : tensor<4xf32>
// ZERO: dist.all_gather %updated_packed_1, %updated_packed_3 group [1, 3] bytes 208 : (tensor<26xf32>, tensor<26xf32>) -> (tensor<52xf32>, tensor<52xf32>)
