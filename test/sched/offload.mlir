// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload,verify-plan' | filecheck %s
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload' | piper-opt | filecheck %s
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload,simulate{costs="analytic" device="h100"}' | filecheck %s --check-prefix=SIM
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload,offload' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,offload' 2>&1 | filecheck %s --check-prefix=NOSCHED
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload' 2>&1 | filecheck %s --check-prefix=NOSTATE
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload{host_memory=39}' 2>&1 | filecheck %s --check-prefix=BUDGET
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload{host_memory=40},verify-plan' | filecheck %s --check-prefix=FITS

// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload{optimizer=false params=true activations=true},verify-plan' | filecheck %s --check-prefix=PARAMS
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload{params=true activations=true stages=1},verify-plan' | filecheck %s --check-prefix=STAGE1
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload{activations=true stages=3}' 2>&1 | filecheck %s --check-prefix=NOSTAGE
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload{optimizer=false}' 2>&1 | filecheck %s --check-prefix=NOTHING

// Optimizer offload on a 2-stage model with dp=2 and ZeRO-1 (SGD with
// momentum: one state tensor per parameter). On every rank the momentum
// shard is loaded and stored in host memory, the optimizer call runs on
// the host stream, the parameter and gradient shards are copied to the
// host before it (each device buffer freed once copied) and the updated
// shard back to the device for the all_gather.
// CHECK-LABEL: sched.program @rank2 device 2
// CHECK: %w1_momentum_buffer_shard = sched.load host "w1:momentum_buffer" shard 0 of 2 : tensor<2xf32>
// CHECK: %w1_part_host = sched.copy %w1_part to "host" stream "d2h" : tensor<2xf32>
// CHECK-NEXT: sched.free %w1_part : tensor<2xf32>
// CHECK-NEXT: %w1_B1_shard_host = sched.copy %w1_B1_shard to "host" stream "d2h" : tensor<2xf32>
// CHECK-NEXT: sched.free %w1_B1_shard : tensor<2xf32>
// CHECK-NEXT: %w1_OPT1, %w1_momentum_buffer_OPT1 = sched.call @OPT1_zero2(%w1_part_host, %w1_B1_shard_host, %w1_momentum_buffer_shard) task "1OPT0" stream "host"
// CHECK: %w1_OPT1_device = sched.copy %w1_OPT1 to "device" stream "h2d" : tensor<2xf32>
// CHECK: sched.store "w1:momentum_buffer" shard 0 of 2 %w1_momentum_buffer_OPT1 : tensor<2xf32>
// CHECK: sched.collective all_gather %w1_OPT1_device group [2, 3]

// The simulator runs the copies on their streams (d2h, h2d), priced on
// the H100's PCIe link, and counts host bytes apart: a column of its own.
// SIM: simulate: costs analytic on h100
// SIM: device {{.*}} peak mem {{.*}} host mem
// SIM-NEXT: 0 {{.*}} 64 B {{.*}} 40 B

// Parameters and activations (the optimizer stays on the device): w0
// lives in host memory, one device copy for the forward (freed after it)
// and one for the backward part of the step (the optimizer reads w0; the
// copy is issued ahead of B0, not before the task the first copy serves);
// F0's saved x crosses to the host right after F0 and back ahead of B0;
// the updated w0 is copied to the host for its store.
// PARAMS-LABEL: sched.program @rank0 device 0
// PARAMS-NEXT: %w0 = sched.load host "w0" : tensor<4xf32>
// PARAMS-NEXT: %w0_device = sched.copy %w0 to "device" stream "h2d" : tensor<4xf32>
// PARAMS: sched.call @F0(%w0_device, %input0) task "0F0"
// PARAMS-NEXT: sched.free %w0_device : tensor<4xf32>
// PARAMS-NEXT: %x_F0_host = sched.copy %x_F0 to "host" stream "d2h" : tensor<4xf32>
// PARAMS-NEXT: %x_F0_host_device = sched.copy %x_F0_host to "device" stream "h2d" : tensor<4xf32>
// PARAMS-NEXT: sched.free %x_F0 : tensor<4xf32>
// PARAMS: %w0_device_1 = sched.copy %w0 to "device" stream "h2d" : tensor<4xf32>
// PARAMS-NEXT: %w0_B0 = sched.call @B0(%x_F0_host_device, %2) task "0B0"
// PARAMS: sched.call @OPT0(%w0_device_1, %w0_B0, %w0_momentum_buffer) task "0OPT0" stream "compute"
// PARAMS: %w0_OPT0_host = sched.copy %w0_OPT0 to "host" stream "d2h" : tensor<4xf32>
// PARAMS-NEXT: sched.free %w0_OPT0 : tensor<4xf32>
// PARAMS-NEXT: sched.store "w0" %w0_OPT0_host : tensor<4xf32>

// Everything, activations of stage 1 only: stage 0 keeps its saved x on
// the device; its optimizer call on the host reads w0 where it lives.
// STAGE1-LABEL: sched.program @rank0 device 0
// STAGE1-NOT: sched.copy %x_F0
// STAGE1: sched.call @OPT0(%w0, %w0_B0_host, %w0_momentum_buffer) task "0OPT0" stream "host"
// STAGE1-NEXT: sched.free %w0_B0_host
// STAGE1-LABEL: sched.program @rank1 device 1
// STAGE1: %a_F1_host = sched.copy %a_F1 to "host" stream "d2h"

// NOSTAGE: error: offload: activations: there is no stage 3 (stages 0, 1)
// NOTHING: error: offload: nothing to offload (optimizer, params and activations are all false)
// BUDGET: error: offload: rank0 needs at least 40 B of host memory (state kept there 8 B, the step's live host values at their peak 40 B), over host_memory=39 B; offload less
// FITS: sched.call @OPT0{{.*}} stream "host"

// TWICE: error: offload: the programs are already offloaded
// NOSCHED: error: offload: no sched.program in the module; run lower-dist-to-sched first
// NOSTATE: error: offload: no optimizer call reads optimizer state (an optimizer without state, such as plain SGD, has nothing to offload)
