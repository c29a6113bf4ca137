// lower-dist-to-sched{replicas=first}: only data-parallel replica 0's
// programs, priced by the simulator exactly as the whole plan.
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=1},order{schedule="1f1b"},lower-dist-to-sched{replicas=first}' | filecheck %s
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -o /dev/null -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=1},order{schedule="1f1b"},lower-dist-to-sched{replicas=first},simulate{costs="unit"}' | filecheck %s --check-prefix=FIRST
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -o /dev/null -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=1},order{schedule="1f1b"},lower-dist-to-sched,simulate{costs="unit"}' | filecheck %s --check-prefix=ALL
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{schedule="1f1b"},lower-dist-to-sched{replicas=first}' | filecheck %s --check-prefix=NODP
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},lower-dist-to-sched{replicas=first},verify-plan' 2>&1 | filecheck %s --check-prefix=VERIFY
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,lower-dist-to-sched{replicas=some}' 2>&1 | filecheck %s --check-prefix=OPTION

// The mesh is pp = 2 x dp = 2: devices 0 and 2 are replica 0 of each stage.
// CHECK: builtin.module attributes {piper.devices = 4 : i64}
// CHECK-NOT: sched.program @rank1
// CHECK: sched.program @rank0 device 0 {
// CHECK: sched.collective reduce_scatter sum {{.*}} group [0, 1]
// CHECK-NOT: sched.program @rank1
// CHECK: sched.program @rank2 device 2 {
// CHECK: sched.collective all_reduce sum %loss_part group [2, 3]
// CHECK-NOT: sched.program @rank3

// The same step time, and the same bubble and peak on each lowered device.
// FIRST: step time 9   mean bubble 33.3%
// FIRST-NEXT: device
// FIRST-NEXT: 0 9 6 3 33.3% 88 B
// FIRST-NEXT: 2 7 6 3 33.3% 92 B
// FIRST-NEXT: (lowered with replicas=first: the 2 devices of dp replica 0 of 4; the other replicas run the same programs)
// ALL: step time 9   mean bubble 33.3%
// ALL-NEXT: device
// ALL-NEXT: 0 9 6 3 33.3% 88 B
// ALL-NEXT: 1 9 6 3 33.3% 88 B
// ALL-NEXT: 2 7 6 3 33.3% 92 B
// ALL-NEXT: 3 7 6 3 33.3% 92 B

// Without a dp axis every device is lowered, and the module is unmarked.
// NODP: builtin.module {
// NODP: sched.program @rank0
// NODP: sched.program @rank1

// VERIFY: error: verify-plan: the module holds the programs of 2 of its 4 devices (lowered with replicas=first, for the simulator); lower it with every replica to verify or run it
// OPTION: error: lower-dist-to-sched: replicas must be 'all' or 'first', got 'some'
