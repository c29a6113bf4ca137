// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1}' | filecheck %s --check-prefix=Z1
// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=2}' | filecheck %s --check-prefix=Z2
// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=3}' | filecheck %s --check-prefix=Z3
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=3},shard{stage=1}' 2>&1 | filecheck %s --check-prefix=NODIV
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,shard{stage=1}' 2>&1 | filecheck %s --check-prefix=NODP

// The optimizer runs on flat shards of a re-typed copy of its function.
// Z1: func.func @OPT0_zero2(%w: tensor<2xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<2xf32> {graph.name = "w0", graph.kind = "grad"}) -> (tensor<2xf32>
// Z1-DAG: %[[P:.*]] = dist.shard %w0 part 0 of 2 on 0 : tensor<4xf32>
// Z1-DAG: %[[RS:.*]], %[[RS1:.*]] = dist.reduce_scatter sum %w0_B0, %w0_B0_1 group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<2xf32>, tensor<2xf32>)
// Z1: %[[N:.*]] = dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_zero2(%[[P]], %[[RS]])
// Z1: %[[G:.*]], %{{.*}} = dist.all_gather %[[N]], %{{.*}} group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>, tensor<4xf32>)
// Z1: dist.store "w0" %[[G]] on 0 : tensor<4xf32>
// Z1-NOT: dist.all_reduce sum %w0_B0

// Stage 2 scatters every microbatch's gradient and adds the shards.
// Z2: %[[A:.*]], %{{.*}} = dist.reduce_scatter sum %w0_B0{{.*}} group [0, 1] bytes 32
// Z2: %[[B:.*]], %{{.*}} = dist.reduce_scatter sum %w0_B0{{.*}} group [0, 1] bytes 32
// Z2: dist.sum %[[A]], %[[B]] scale 1.0 on 0 : tensor<2xf32>

// Stage 3 keeps parameters sharded: loads and stores of shards, a gather before use.
// Z3: %w0_shard = dist.load "w0" shard 0 of 2 on 0 : tensor<2xf32>
// Z3: %[[F:.*]], %{{.*}} = dist.all_gather %w0_shard, %w0_shard_1 group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>, tensor<4xf32>)
// Z3: dist.task F stage 0 mb 0 replica 0 on 0 @F0(%[[F]],
// Z3: dist.store "w0" shard 0 of 2 %{{.*}} on 0 : tensor<2xf32>

// NODIV: error: shard: 'w0' has 4 elements, which do not divide over 3 replicas
// NODP: error: shard: the mesh has no 'dp' axis; replicate first
