// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload,verify-plan' | filecheck %s
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload' | piper-opt | filecheck %s
// RUN: piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1},lower-dist-to-sched,offload,simulate{costs="analytic" device="h100"}' | filecheck %s --check-prefix=SIM
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload,offload' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not piper-opt %S/Inputs/momentum.mlir -p 'convert-graph-to-dist,offload' 2>&1 | filecheck %s --check-prefix=NOSCHED
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,lower-dist-to-sched,offload' 2>&1 | filecheck %s --check-prefix=NOSTATE

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

// TWICE: error: offload: the programs are already offloaded
// NOSCHED: error: offload: no sched.program in the module; run lower-dist-to-sched first
// NOSTATE: error: offload: no optimizer call reads optimizer state (an optimizer without state, such as plain SGD, has nothing to offload)
