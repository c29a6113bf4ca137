// RUN: piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=2}' | filecheck %s
// RUN: piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,replicate{n=2},shard{stage=3},expert_parallel{n=2},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=ZERO
// RUN: not piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=3}' 2>&1 | filecheck %s --check-prefix=NODIV

// Input: a captured routed MoE step (one layer, 2 stacked experts, top-1,
// 2 tokens per rank, dropless: 2 slots per expert): `piper-capture moe
// --routing routed --layers 1 --dim 4 --hidden 4 --experts 2 --top-k 1
// --classes 2 --batch 2 --no-locations`. The experts are one "EP" region
// whose tensors hold the experts on dim 0, so expert_parallel splits it by
// rows: rank b owns expert b.

// The optimizer runs on the rows each rank holds.
// CHECK-LABEL: func.func @OPT0_ep(
// CHECK-SAME: %layers_0_experts_w1: tensor<1x4x4xf32> {graph.name = "layers.0.experts.w1", graph.kind = "param"}

// @F0_pre computes router, routing and the slots [experts, slots, dim], and
// returns them first: the dispatch all_to_all sends block b of dim 0 to rank b.
// CHECK-LABEL: func.func @F0_pre(
// CHECK-SAME: -> (tensor<2x2x4xf32> {graph.name = "view", graph.kind = "dispatch"}

// Rank 0 runs its expert once per source rank's block of the received slots
// (row 0 came from rank 0, row 1 from rank 1), re-typed to one expert.
// CHECK-LABEL: func.func @F0_experts0(
// CHECK-SAME: %view_all: tensor<2x2x4xf32> {graph.name = "view", graph.kind = "dispatch"}
// CHECK-SAME: %layers_0_experts_w1: tensor<1x4x4xf32> {graph.name = "layers.0.experts.w1", graph.kind = "param"}
// CHECK: graph.aten "aten.slice.Tensor"(%view_all, 0, 0, 1) : (tensor<2x2x4xf32>) -> tensor<1x2x4xf32>
// CHECK: graph.aten "aten.bmm.default"(%view, %layers_0_experts_w1) tags {PP = 0, EP = 0} : (tensor<1x2x4xf32>, tensor<1x4x4xf32>) -> tensor<1x2x4xf32>
// CHECK: graph.aten "aten.slice.Tensor"(%view_all, 0, 1, 2) : (tensor<2x2x4xf32>) -> tensor<1x2x4xf32>

// @F0_post starts from the combined expert outputs, in expert order: the
// tensor the region produced in the captured step.
// CHECK-LABEL: func.func @F0_post(
// CHECK-SAME: %add: tensor<2x2x4xf32> {graph.name = "add", graph.kind = "combine"}

// Each rank loads its rows of every stacked parameter; the slots go out and
// the outputs come back with one all_to_all each (forward and backward).
// CHECK: dist.load "layers.0.experts.w1" shard 0 of 2 on 0 : tensor<1x4x4xf32>
// CHECK: dist.load "layers.0.experts.w1" shard 1 of 2 on 1 : tensor<1x4x4xf32>
// CHECK: dist.all_to_all %view, %view_1 group [0, 1] bytes 128 : (tensor<2x2x4xf32>, tensor<2x2x4xf32>) -> (tensor<2x2x4xf32>, tensor<2x2x4xf32>)
// CHECK: dist.all_to_all %add_part, %add_part_1 group [0, 1]
// CHECK-COUNT-2: dist.all_to_all

// With ZeRO-3 over dp=2: device 3 is dp rank 1 of ep rank 1, so it holds
// flat shard 1 of 2 of expert 1's rows, which is shard 3 of 4 of the tensor
// (a replicated parameter: shard 1 of 2).
// ZERO-LABEL: sched.program @rank3 device 3
// ZERO: sched.load "layers.0.router.weight" shard 1 of 2 : tensor<4xf32>
// ZERO: sched.load "layers.0.experts.w1" shard 3 of 4 : tensor<8xf32>

// NODIV: error: expert_parallel: stage 0: 2 stacked experts (dim 0 of 'layers.0.experts.w1') do not divide over n=3 ranks
