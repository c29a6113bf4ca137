// RUN: piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 sequence=true}' | filecheck %s
// RUN: piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 sequence=true},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: not piper-opt %S/Inputs/mlp3_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 sequence=true}' 2>&1 | filecheck %s --check-prefix=NOTOKENS

// Input: a captured GPT step, one block, SGD: `piper-capture gpt --layers 1
// --dim 8 --heads 2 --vocab 16 --seq 4 --batch 2 --untied --optimizer sgd
// --no-locations`. The automatic plan (qkv colwise in groups, attention's
// proj rowwise, the MLP's fc colwise and proj rowwise) with sequence
// parallelism over tp = 2: between those pairs the activations [2, 4, 8]
// are split along the sequence, [2, 2, 8] on each rank.

// The layer norm of the embeddings starts the split: each rank takes its
// shard of the replicated sum (its rows made contiguous: [2, 2, 16] viewed
// as [B, n, T/n * C] and permuted to put the rank first), with no
// communication. The first layer norm runs on the [2, 2, 8] shard.
// CHECK-LABEL: func.func @F0_tp_p0(
// CHECK: %[[R:.*]] = graph.aten "aten.reshape.default"(%add, [2, 2, 16]) tags {PP = 0} : (tensor<2x4x8xf32>) -> tensor<2x2x16xf32>
// CHECK-NEXT: %[[P:.*]] = graph.aten "aten.permute.default"(%[[R]], [1, 0, 2]) tags {PP = 0} : (tensor<2x2x16xf32>) -> tensor<2x2x16xf32>
// CHECK-NEXT: graph.aten "aten.reshape.default"(%[[P]], [64]) tags {PP = 0} : (tensor<2x2x16xf32>) -> tensor<64xf32>
// CHECK-LABEL: func.func @F0_tp_p1(
// CHECK-SAME: %add_shard: tensor<32xf32> {graph.name = "add_shard", graph.kind = "reduced"}
// CHECK: %[[S:.*]] = graph.aten "aten.reshape.default"(%add_shard, [2, 2, 8]) tags {PP = 0} : (tensor<32xf32>) -> tensor<2x2x8xf32>
// CHECK-NEXT: graph.aten "aten.native_layer_norm.default"(%[[S]], [8], %blocks_0_ln1_weight, %blocks_0_ln1_bias, 1.0e-05) tags {PP = 0} : (tensor<2x2x8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<2x2x8xf32>, tensor<2x2x1xf32>, tensor<2x2x1xf32>)

// The colwise qkv reads the layer norm's output gathered from the shards
// ([n, B, T/n * C] permuted back to [B, T, C] order, viewed [B*T, C]).
// CHECK-LABEL: func.func @F0_tp_p2(
// CHECK-SAME: %view_gathered: tensor<2x2x16xf32> {graph.name = "view_gathered", graph.kind = "reduced"}
// CHECK: %[[G:.*]] = graph.aten "aten.permute.default"(%view_gathered, [1, 0, 2]) tags {PP = 0} : (tensor<2x2x16xf32>) -> tensor<2x2x16xf32>
// CHECK-NEXT: graph.aten "aten.reshape.default"(%[[G]], [8, 8]) tags {PP = 0} : (tensor<2x2x16xf32>) -> tensor<8x8xf32>

// The rowwise proj's partial sum is reduce-scattered along the sequence;
// its bias is added to the [4, 8] rows of the rank's shard, and the
// residual add runs on the shards.
// CHECK-LABEL: func.func @F0_tp_p3(
// CHECK-SAME: %addmm_scattered: tensor<32xf32> {graph.name = "addmm_scattered", graph.kind = "reduced"}
// CHECK: %[[A:.*]] = graph.aten "aten.reshape.default"(%addmm_scattered, [4, 8]) tags {PP = 0} : (tensor<32xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: graph.aten "aten.add.Tensor"(%[[A]], %blocks_0_attn_proj_bias) tags {PP = 0} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK: graph.aten "aten.add.Tensor"(%add_shard, %view) tags {PP = 0} : (tensor<2x2x8xf32>, tensor<2x2x8xf32>) -> tensor<2x2x8xf32>

// The plan: a shard of the embeddings, then per block an all_gather before
// each colwise Linear and a reduce_scatter after each rowwise one, forward
// and backward; the layer norms' weight and bias gradients are all-reduced.
// CHECK-LABEL: dist.plan @step mesh [pp = 1, tp = 2] microbatches 1 {
// CHECK: dist.shard %add_flat part 0 of 2 on 0 : tensor<64xf32>
// CHECK: dist.shard %add_flat_1 part 1 of 2 on 1 : tensor<64xf32>
// CHECK: dist.all_gather %view_flat, %view_flat_1 group [0, 1] bytes 256 : (tensor<32xf32>, tensor<32xf32>) -> (tensor<2x2x16xf32>, tensor<2x2x16xf32>)
// CHECK: dist.reduce_scatter sum %addmm_flat, %addmm_flat_1 group [0, 1] bytes 512 : (tensor<64xf32>, tensor<64xf32>) -> (tensor<32xf32>, tensor<32xf32>)
// CHECK: dist.all_gather
// CHECK: dist.reduce_scatter sum
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_tp_p0(
// CHECK: dist.reduce_scatter sum
// CHECK: dist.all_reduce sum {{.*}} : (tensor<8xf32>, tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>)
// CHECK: dist.reduce_scatter sum

// SCHED: sched.collective reduce_scatter sum
// SCHED: sched.collective all_gather

// NOTOKENS: tensor_parallel: sequence=true needs token ids [batch, seq] read by an embedding (found none)
