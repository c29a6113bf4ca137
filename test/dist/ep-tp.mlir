// RUN: piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=2},tensor_parallel{n=2}' | filecheck %s
// RUN: piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=2},tensor_parallel{n=2},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: not piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,tensor_parallel{n=2 plan="layers.*.experts.*.fc:colwise,layers.*.experts.*.proj:rowwise"},expert_parallel{n=2}' 2>&1 | filecheck %s --check-prefix=ORDER

// Expert parallelism, then tensor parallelism, on a captured MoE step (one
// layer, 2 experts, top-1, 2 tokens per ep rank; see expert_parallel.mlir).
// The mesh is ep x tp, tp innermost: device = ep rank * 2 + tp rank. Both
// tp ranks of an ep rank read the same tokens.
// CHECK-LABEL: dist.plan @step mesh [pp = 1, ep = 2, tp = 2] microbatches 1 {
// CHECK-DAG: dist.input "input0" replica 0 mb 0 on 1 : tensor<2x4xf32>
// CHECK-DAG: dist.input "input0" replica 1 mb 0 on 2 : tensor<2x4xf32>

// plan=None finds each expert's MLP in its experts' function: expert 0
// lives on ep rank 0 (devices 0, 1), split over their tp group (fc by
// rows, proj by columns); expert 1 likewise on devices 2, 3.
// CHECK-DAG: dist.load "layers.0.experts.0.fc.weight" shard 1 of 2 on 1 : tensor<2x4xf32>
// CHECK-DAG: dist.load "layers.0.experts.0.proj.weight" shard 1 of 2 dim 1 on 1 : tensor<4x2xf32>
// CHECK-DAG: dist.load "layers.0.experts.1.fc.weight" shard 0 of 2 on 2 : tensor<2x4xf32>
// CHECK-DAG: dist.load "layers.0.experts.0.proj.bias" on 0 : tensor<4xf32>
// CHECK-DAG: dist.load "layers.0.router.fc.weight" on 3 : tensor<2x4xf32>

// Dispatch: the all_to_all runs among the devices of one tp rank.
// CHECK: dist.all_to_all %scatter_send, %scatter_send_2 group [0, 2]
// CHECK: dist.all_to_all %scatter_send_1, %scatter_send_3 group [1, 3]
// The experts' function is cut at its rowwise partial sums, all-reduced
// within the tp group of the ep rank that owns the expert.
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_experts0_tp_p0(
// CHECK: dist.all_reduce sum %{{.*}}, %{{.*}} group [0, 1]
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_experts0_tp_p1(
// CHECK: dist.task F stage 0 mb 0 replica 2 on 2 @F0_experts1_tp_p0(
// CHECK: dist.all_reduce sum %{{.*}}, %{{.*}} group [2, 3]
// Combine, then the loss over the ep group (tokens are split over ep only).
// CHECK: dist.all_to_all %add_part, %add_part_2 group [0, 2]
// CHECK: dist.all_reduce sum %loss_part, %loss_part_2 group [0, 2] bytes 8
// Backward: the gradient of h, partial over the tp group, is all-reduced
// there before the combine.
// CHECK: dist.all_to_all %mm_send, %mm_send_2 group [0, 2]
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_experts0_tp_p0(
// CHECK: dist.all_reduce sum %{{.*}}, %{{.*}} group [0, 1]
// The replicated parameters' gradients: one bucket over the ep group of
// each tp rank; none over tp (every tp rank computed the same ones).
// CHECK: dist.all_reduce sum %grads_ep_packed, %grads_ep_packed_2 group [0, 2] bytes 368
// CHECK: dist.all_reduce sum %grads_ep_packed_1, %grads_ep_packed_3 group [1, 3] bytes 368
// CHECK-NOT: dist.all_reduce
// CHECK-DAG: dist.store "layers.0.experts.1.fc.weight" shard 1 of 2 %{{.*}} on 3 : tensor<2x4xf32>
// CHECK-DAG: dist.store "layers.0.router.fc.weight" %{{.*}} on 3 : tensor<2x4xf32>

// The programs lower and verify (collective order within every group).
// SCHED-LABEL: sched.program @rank1 device 1 {
// SCHED: sched.collective all_to_all %{{.*}} group [1, 3]
// SCHED: sched.call @F0_experts0_tp_p0(
// SCHED: sched.collective all_reduce sum %{{.*}} group [0, 1]
// SCHED-LABEL: sched.program @rank3 device 3 {
// SCHED: sched.call @F0_experts1_tp_p0(
// SCHED: sched.collective all_reduce sum %{{.*}} group [2, 3]

// The other order is refused with the one that works.
// ORDER: error: expert_parallel: the plan is already tensor-parallel (@F0_tp_p0); run expert_parallel before tensor_parallel (mesh order pp x dp x ep x tp, tp innermost)
