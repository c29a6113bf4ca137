// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'precision{param="fp16"},convert-graph-to-dist,replicate{n=2},shard{stage=1},loss-scale{interval=4}' | filecheck %s
// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'precision{param="fp16"},convert-graph-to-dist,replicate{n=2},shard{stage=1},loss-scale,lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'precision{param="fp16"},convert-graph-to-dist,loss-scale{scale=1024.0 dynamic=false}' | filecheck %s --check-prefix=STATIC
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,loss-scale,loss-scale' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'loss-scale' 2>&1 | filecheck %s --check-prefix=NOPLAN
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,loss-scale{backoff=2.0}' 2>&1 | filecheck %s --check-prefix=BAD

// fp16 loss scaling as torch.amp.GradScaler does it, on a 2-stage plan
// with dp=2 and ZeRO-1 (four devices).

// The function taking the tangent gets a copy that multiplies it by the
// scale in fp32, before precision's cast to fp16.
// CHECK-LABEL: func.func @B1_scaled(
// CHECK-SAME: %loss_scale: tensor<f32> {graph.name = "loss_scale", graph.kind = "loss_scale"})
// CHECK-NEXT: %tangent_scaled = graph.aten "aten.mul.Tensor"(%t, %loss_scale) : (tensor<f32>, tensor<f32>) -> tensor<f32>
// CHECK: %t_fp16 = graph.aten "aten._to_copy.default"(%tangent_scaled, "dtype" = f16)

// Unscale: the gradients times the fp32 reciprocal (taken in fp64) of the
// scale; found_inf is 1.0 if any of them holds an inf or nan.
// CHECK-LABEL: func.func @OPT0_zero2_unscale(
// CHECK: graph.aten "aten._to_copy.default"(%loss_scale, "dtype" = f64)
// CHECK: graph.aten "aten.reciprocal.default"
// CHECK: %inv_scale = graph.aten "aten._to_copy.default"({{.*}}, "dtype" = f32)
// CHECK: graph.aten "aten.isfinite.default"(%w0)
// CHECK: %w0_unscaled = graph.aten "aten.mul.Tensor"(%w0, %inv_scale)
// CHECK: %found_inf = graph.aten "aten._to_copy.default"({{.*}}, "dtype" = f32) : (tensor<i1>) -> tensor<f32>

// The optimizer's copy keeps the old parameter where found_inf is set.
// CHECK-LABEL: func.func @OPT0_zero2_skip(
// CHECK: %skip = graph.aten "aten.gt.Scalar"(%found_inf, 0.0)
// CHECK: graph.aten "aten.where.self"(%skip, %w, %n)

// The scale update of torch._amp_update_scale_ (growth interval 4).
// CHECK-LABEL: func.func @loss_scale_update(
// CHECK: %good = graph.aten "aten.add.Tensor"(%loss_scale_growth_tracker, 1)
// CHECK: graph.aten "aten.eq.Scalar"(%good, 4)
// CHECK: %grown = graph.aten "aten.mul.Tensor"(%loss_scale, 2.0)
// CHECK: %backed = graph.aten "aten.mul.Tensor"(%loss_scale, 0.5)

// In the plan: the scale is state on every device; each rank's flag (over
// its gradient shard) is all-reduced (max) over the whole mesh before any
// optimizer task runs; the new scale and tracker are stored.
// CHECK: dist.load "loss_scale" on 0 : tensor<f32>
// CHECK: dist.load "loss_scale" on 3 : tensor<f32>
// CHECK: dist.task B stage 1 mb 0 replica 0 on 2 @B1_scaled(%a_F1, %w1, %tangent, %loss_scale_2)
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_zero2_unscale(%w0_B0_shard, %loss_scale)
// CHECK: dist.all_reduce max %found_inf, %found_inf_1, %found_inf_2, %found_inf_3 group [0, 1, 2, 3]
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0_zero2_skip(%w0_part, %w0_B0_shard_unscaled, %found_inf_all)
// CHECK: dist.task OPT stage 1 mb 0 replica 0 on 2 @loss_scale_update(%loss_scale_2, %growth_tracker_2, %found_inf_all_2)
// CHECK: dist.store "loss_scale" %loss_scale_new_3 on 3 : tensor<f32>
// CHECK: dist.store "loss_scale_growth_tracker" %growth_tracker_new_3 on 3 : tensor<i32>

// SCHED: sched.program @rank3 device 3
// SCHED: sched.load "loss_scale" : tensor<f32>
// SCHED: sched.collective all_reduce max %found_inf{{.*}} group [0, 1, 2, 3]
// SCHED: sched.call @loss_scale_update(

// A fixed scale: no update, no growth tracker; the skip stays.
// STATIC-NOT: loss_scale_update
// STATIC: dist.all_reduce max
// STATIC-NOT: loss_scale_update

// TWICE: error: loss-scale: the plan is already loss-scaled
// NOPLAN: error: loss-scale: expected one dist.plan, found 0
// BAD: error: loss-scale: needs growth >= 1, 0 < backoff <= 1 and interval >= 1 (got 2.0, 2.0, 2000)
