// RUN: piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=2}' -o %t
// RUN: filecheck %s < %t
// RUN: filecheck %s --check-prefix=PLACE < %t
// RUN: piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,split{n=2},expert_parallel{n=2},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: not piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,expert_parallel{n=3}' 2>&1 | filecheck %s --check-prefix=NODIV
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,expert_parallel{n=2}' 2>&1 | filecheck %s --check-prefix=NOEP
// RUN: not piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,replicate{n=2},shard{stage=1},expert_parallel{n=2}' 2>&1 | filecheck %s --check-prefix=ZERO
// RUN: not piper-opt %S/Inputs/moe_one_layer.mlir -p 'pipeline-split,split_backward,convert-graph-to-dist,expert_parallel{n=2}' 2>&1 | filecheck %s --check-prefix=SPLITB

// Input: a captured MoE step (one layer, 2 experts, top-1, 2 tokens per
// rank): `piper-capture moe --layers 1 --dim 4 --hidden 4 --experts 2
// --top-k 1 --classes 2 --batch 2 --no-locations`.

// The forward is cut around the experts. @F0_pre computes router and gates
// and repeats every value the experts read once per ep rank (the dispatch
// send buffer: dense dispatch sends every token to every owner).
// CHECK-LABEL: func.func @F0_pre(
// CHECK: graph.aten "aten.repeat.default"(%scatter, [2, 1]) : (tensor<2x2xf32>) -> tensor<4x2xf32>
// CHECK: graph.aten "aten.repeat.default"(%0, [2, 1]) : (tensor<2x4xf32>) -> tensor<4x4xf32>

// Rank 0 runs only expert 0, once per source rank's chunk of the dispatched
// tokens (rows 0..1 came from rank 0, rows 2..3 from rank 1), and returns
// the per-chunk outputs concatenated (the combine send buffer) and what its
// backward needs.
// CHECK-LABEL: func.func @F0_experts0(
// CHECK-SAME: %scatter_all: tensor<4x2xf32> {graph.name = "scatter", graph.kind = "dispatch"}
// CHECK-SAME: %layers_0_experts_0_fc_weight: tensor<4x4xf32> {graph.name = "layers.0.experts.0.fc.weight", graph.kind = "param"}
// CHECK-NOT: EP = 1
// CHECK: graph.aten "aten.slice.Tensor"(%scatter_all, 0, 0, 2) : (tensor<4x2xf32>) -> tensor<2x2xf32>
// CHECK: graph.aten "aten.slice.Tensor"(%scatter_all, 0, 2, 4) : (tensor<4x2xf32>) -> tensor<2x2xf32>
// CHECK: graph.aten "aten.addmm.default"(%layers_0_experts_0_fc_bias, {{.*}}) tags {PP = 0, EP = 0}
// CHECK: %add_part = graph.aten "aten.cat.default"([%mul, %mul_1], 0) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
// CHECK-LABEL: func.func @F0_experts1(
// CHECK-SAME: graph.name = "layers.0.experts.1.fc.weight"
// CHECK-NOT: EP = 0
// CHECK: tags {PP = 0, EP = 1}

// @F0_post completes the sum over experts on the token's rank: the two
// owners' partial sums, then the residual, then the rest of the model.
// CHECK-LABEL: func.func @F0_post(
// CHECK-SAME: %add_parts: tensor<4x4xf32> {graph.name = "add", graph.kind = "combine"}
// CHECK: %[[V:.*]] = graph.aten "aten.view.default"(%add_parts, [2, 2, 4]) : (tensor<4x4xf32>) -> tensor<2x2x4xf32>
// CHECK: %[[S:.*]] = graph.aten "aten.sum.dim_IntList"(%[[V]], [0]) : (tensor<2x2x4xf32>) -> tensor<2x4xf32>
// CHECK: %add = graph.aten "aten.add.Tensor"(%addmm, %[[S]])
// CHECK: "aten.nll_loss_forward.default"

// The backward is the transpose: the gradient reaching the experts goes
// out, the experts' input gradients (of h and of the gates) come back; the
// owner sums its experts' parameter gradients over the chunks.
// CHECK-LABEL: func.func @B0_experts0(
// CHECK-SAME: %mm_all: tensor<4x4xf32> {graph.name = "mm", graph.kind = "dispatch"}
// CHECK-SAME: graph.name = "slice_2@0", graph.kind = "saved"
// CHECK: "aten.cat.default"
// CHECK: %layers_0_experts_0_fc_weight_grad = graph.aten "aten.add.Tensor"
// CHECK-LABEL: func.func @OPT0_ep1(
// CHECK-NOT: experts.0
// CHECK: func.return

// The plan: a new ep axis; tokens split like data parallelism; each
// expert's state only on its owner.
// CHECK-LABEL: dist.plan @step mesh [pp = 1, ep = 2] microbatches 1 {
// CHECK-DAG: dist.load "layers.0.router.fc.weight" on 0 : tensor<2x4xf32>
// CHECK-DAG: dist.load "layers.0.router.fc.weight" on 1 : tensor<2x4xf32>
// CHECK-DAG: dist.load "layers.0.experts.0.fc.weight" on 0 : tensor<4x4xf32>
// CHECK-DAG: dist.load "layers.0.experts.1.fc.weight" on 1 : tensor<4x4xf32>
// CHECK-DAG: dist.input "input0" replica 1 mb 0 on 1 : tensor<2x4xf32>
// Forward: pre, dispatch, experts, combine, post.
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_pre(
// CHECK: dist.task F stage 0 mb 0 replica 1 on 1 @F0_pre(
// CHECK: %scatter_all, %scatter_all_1 = dist.all_to_all %scatter_send, %scatter_send_1 group [0, 1] bytes 64 : (tensor<4x2xf32>, tensor<4x2xf32>) -> (tensor<4x2xf32>, tensor<4x2xf32>)
// CHECK: dist.all_to_all %native_layer_norm_send, %native_layer_norm_send_1 group [0, 1] bytes 128
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_experts0(%scatter_all, %layers_0_experts_0_fc_weight,
// CHECK: dist.task F stage 0 mb 0 replica 1 on 1 @F0_experts1(%scatter_all_1, %layers_0_experts_1_fc_weight,
// CHECK: %add_parts, %add_parts_1 = dist.all_to_all %add_part, %add_part_1 group [0, 1] bytes 128
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_post(%add_parts,
// The loss is the mean over the ranks' tokens; the tangent carries the 1/n.
// CHECK: dist.all_reduce sum %loss_part, %loss_part_1 group [0, 1] bytes 8
// CHECK: dist.fill 0.5 on 0 : tensor<f32>
// Backward: pre, dispatch of the output gradient, experts, two combines, post.
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_pre(
// CHECK: %mm_all, %mm_all_1 = dist.all_to_all %mm_send, %mm_send_1 group [0, 1] bytes 128
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_experts0(%mm_all, %slice, %slice_1,
// CHECK: dist.task B stage 0 mb 0 replica 1 on 1 @B0_experts1(%mm_all_1, %slice_2, %slice_3,
// CHECK: dist.all_to_all %add_2_part, %add_2_part_1 group [0, 1] bytes 64
// CHECK: dist.all_to_all %add_3_part, %add_3_part_1 group [0, 1] bytes 128
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 @B0_post(%add_2_parts,
// Replicated parameters' gradients are all-reduced over ep, in one bucket
// (pack, all_reduce, unpack); experts' are not.
// CHECK: dist.pack
// CHECK: %grads_ep, %grads_ep_1 = dist.all_reduce sum %grads_ep_packed, %grads_ep_packed_1 group [0, 1] bytes 368 : (tensor<46xf32>, tensor<46xf32>)
// CHECK: dist.unpack %grads_ep
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_ep0({{.*}}%layers_0_experts_0_fc_weight_grad
// CHECK: dist.task OPT stage 0 mb 0 replica 1 on 1 @OPT0_ep1({{.*}}%layers_0_experts_1_fc_weight_grad
// CHECK-DAG: dist.store "layers.0.experts.0.fc.weight" %{{.*}} on 0 : tensor<4x4xf32>
// CHECK-DAG: dist.store "layers.0.experts.1.fc.weight" %{{.*}} on 1 : tensor<4x4xf32>
// CHECK-DAG: dist.store "layers.0.router.fc.weight" %{{.*}} on 1 : tensor<2x4xf32>

// PLACE-LABEL: dist.plan @step
// PLACE-NOT: dist.load "layers.0.experts.0.{{.*}} on 1
// PLACE-NOT: dist.load "layers.0.experts.1.{{.*}} on 0
// PLACE-NOT: dist.all_reduce sum %layers_0_experts
// PLACE-NOT: dist.store "layers.0.experts.0.{{.*}} on 1
// PLACE-NOT: dist.store "layers.0.experts.1.{{.*}} on 0

// With microbatches the cut repeats per microbatch; the programs lower and
// verify (every rank runs the all_to_alls in the same order).
// SCHED-LABEL: sched.program @rank0 device 0 {
// SCHED: sched.call @F0_pre({{.*}}) task "0F0"
// SCHED: sched.collective all_to_all %{{.*}} group [0, 1] tag 0
// SCHED: sched.call @F0_experts0({{.*}}) task "0F0"
// SCHED: sched.call @F0_post({{.*}}) task "0F0"
// SCHED: sched.call @F0_pre({{.*}}) task "0F1"
// SCHED: sched.call @B0_experts0({{.*}}) task "0B0"
// SCHED: sched.call @OPT0_ep0(
// SCHED-LABEL: sched.program @rank1 device 1 {
// SCHED: sched.call @F0_experts1({{.*}}) task "0F0"

// NODIV: error: expert_parallel: stage 0: 2 experts (EP 0..1) do not divide over n=3 ranks
// NOEP: error: expert_parallel: no stage has expert regions; mark each expert's computation with `piper.annotate("EP", e)` inside its "PP" region
// ZERO: error: expert_parallel: the plan is sharded (ZeRO) ('dist.{{[a-z_]+}}'); expert parallelism of experts written as separate modules does not compose with shard (stacked experts do)
// SPLITB: error: expert_parallel: stage 0: expected @F0 and @B0; expert parallelism needs whole backward tasks (it does not compose with split_backward)
