// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=3}' | filecheck %s --check-prefix=Z3
// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1}' | filecheck %s --check-prefix=Z1
// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=3 pack=false}' | filecheck %s --check-prefix=APART
// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=3},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED

// With pack (the default) a task's parameter shards move in one
// all_gather: packed once per device (shards do not change within a step,
// so every microbatch's gather reads the same pack), gathered, unpacked
// shard-major into the full parameters.
// Z3: %[[P0:.*]] = dist.pack %w_shard, %b_shard on 0 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>)
// Z3: %[[P1:.*]] = dist.pack %w_shard_1, %b_shard_1 on 1
// Z3: %[[G0:.*]], %[[G1:.*]] = dist.all_gather %[[P0]], %[[P1]] group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<8xf32>, tensor<8xf32>)
// Z3: %w_full, %b_full = dist.unpack %[[G0]] on 0 shards 2 : (tensor<8xf32>) -> (tensor<4xf32>, tensor<2x2xf32>)
// Z3: dist.all_gather %[[P0]], %[[P1]] group [0, 1]
// Each microbatch's gradients: one shard-major pack per replica, one
// reduce_scatter, each member unpacking its chunks; the chunks of the
// microbatches are then summed (no full-gradient sum is left behind).
// Z3: %[[Q0:.*]] = dist.pack %w_B0, %b_B0 on 0 shards 2 : (tensor<4xf32>, tensor<2x2xf32>) -> (tensor<8xf32>)
// Z3: %[[Q1:.*]] = dist.pack %w_B0_1, %b_B0_1 on 1 shards 2
// Z3: %[[R0:.*]], %[[R1:.*]] = dist.reduce_scatter sum %[[Q0]], %[[Q1]] group [0, 1] bytes 64 : (tensor<8xf32>, tensor<8xf32>) -> (tensor<4xf32>, tensor<4xf32>)
// Z3-NOT: %w_B0_sum = dist.sum
// Z3: dist.unpack %[[R0]] on 0 : (tensor<4xf32>) -> (tensor<2xf32>, tensor<2xf32>)
// Z3: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_zero2

// ZeRO-1: the summed gradients in one reduce_scatter, the updated
// parameter shards in one all_gather.
// Z1: dist.pack %w_B0, %b_B0 on 0 shards 2
// Z1: dist.reduce_scatter sum
// Z1: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_zero2
// Z1: %[[U0:.*]] = dist.pack %w_OPT0, %b_OPT0 on 0 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>)
// Z1: dist.all_gather %[[U0]], %{{.*}} group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<8xf32>, tensor<8xf32>)
// Z1: dist.unpack %{{.*}} on 0 shards 2 : (tensor<8xf32>) -> (tensor<4xf32>, tensor<2x2xf32>)

// pack=false: one collective per tensor.
// APART-NOT: dist.pack
// APART: dist.all_gather %w_shard, %w_shard_1 group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>, tensor<4xf32>)
// APART: dist.all_gather %b_shard, %b_shard_1 group [0, 1] bytes 16

// The shard-major unpack after the gather: chunk c of each parameter sits at
// c * 4 + its offset; each parameter is the concatenation of its chunks.
// SCHED-LABEL: func.func @unpack0(%0: tensor<8xf32>) -> (tensor<4xf32>, tensor<2x2xf32>)
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 0, 2)
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 4, 6)
// SCHED-NEXT: "aten.cat.default"
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 2, 4)
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 6, 8)
// SCHED-NEXT: "aten.cat.default"
// SCHED-NEXT: "aten.view.default"
// The shard-major pack before the scatter: chunk 0 of w, chunk 0 of b, chunk 1 of w, chunk 1 of b.
// SCHED-LABEL: func.func @pack1(%0: tensor<4xf32>, %1: tensor<2x2xf32>) -> tensor<8xf32>
// SCHED-NEXT: %2 = graph.aten "aten.view.default"(%1, [4])
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 0, 2)
// SCHED-NEXT: "aten.slice.Tensor"(%2, 0, 0, 2)
// SCHED-NEXT: "aten.slice.Tensor"(%0, 0, 2, 4)
// SCHED-NEXT: "aten.slice.Tensor"(%2, 0, 2, 4)
// SCHED-NEXT: "aten.cat.default"
