// RUN: piper-opt %S/Inputs/mlp4.mlir -p 'pipeline-split,convert-graph-to-dist{pp=2},split{n=4},order{schedule="interleaved"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=INTERLEAVED
// RUN: piper-opt %S/Inputs/mlp4.mlir -p 'pipeline-split,split_backward,convert-graph-to-dist{pp=2 placement="v"},split{n=4},order{schedule="dualpipe-v"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=DUALPIPEV
// RUN: piper-opt %S/Inputs/mlp4.mlir -p 'pipeline-split,split_backward,convert-graph-to-dist{pp=4},split{n=4},order{schedule="zb-h1"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=ZBH1
// RUN: not piper-opt %S/Inputs/mlp4.mlir -p 'pipeline-split,convert-graph-to-dist{pp=4},split{n=4},order{schedule="interleaved"}' 2>&1 | filecheck %s --check-prefix=ONECHUNK
// RUN: not piper-opt %S/Inputs/mlp4.mlir -p 'pipeline-split,split_backward,convert-graph-to-dist{pp=2},split{n=4},order{schedule="dualpipe-v"}' 2>&1 | filecheck %s --check-prefix=NOTV

// The named schedules on a 4-stage MLP (one block per PP region), each
// device's program in the schedule's order.

// Interleaved 1F1B, 2 chunks per device (stages 0, 2 on rank 0; 1, 3 on
// rank 1): rank 0 warms up with 4 forwards in groups of pp microbatches,
// rank 1 with 2, then one forward and one backward in turn.
// INTERLEAVED-LABEL: sched.program @rank0
// INTERLEAVED: task "0F0"
// INTERLEAVED: task "0F1"
// INTERLEAVED: task "2F0"
// INTERLEAVED: task "2F1"
// INTERLEAVED: task "0F2"
// INTERLEAVED: task "2B0"
// INTERLEAVED: task "0F3"
// INTERLEAVED: task "2B1"
// INTERLEAVED: task "2F2"
// INTERLEAVED: task "0B0"
// INTERLEAVED: task "2F3"
// INTERLEAVED: task "0B1"
// INTERLEAVED: task "2B2"
// INTERLEAVED: task "2B3"
// INTERLEAVED: task "0B2"
// INTERLEAVED: task "0B3"
// INTERLEAVED-LABEL: sched.program @rank1
// INTERLEAVED: task "1F0"
// INTERLEAVED: task "1F1"
// INTERLEAVED: task "3F0"
// INTERLEAVED: task "3B0"
// INTERLEAVED: task "3F1"
// INTERLEAVED: task "3B1"
// INTERLEAVED: task "1F2"
// INTERLEAVED: task "1B0"

// DualPipeV: rank 0 holds the first and the last stage (0 and 3), rank 1
// the middle two; the last stage's backward is split into I and W.
// DUALPIPEV-LABEL: sched.program @rank0
// DUALPIPEV: task "0F0"
// DUALPIPEV: task "0F1"
// DUALPIPEV: task "0F2"
// DUALPIPEV: task "3F0"
// DUALPIPEV: task "3I0"
// DUALPIPEV: task "3W0"
// DUALPIPEV: task "3F1"
// DUALPIPEV: task "0F3"
// DUALPIPEV: task "3I1"
// DUALPIPEV-LABEL: sched.program @rank1
// DUALPIPEV: task "1F0"
// DUALPIPEV: task "2F0"
// DUALPIPEV: task "1F1"
// DUALPIPEV: task "2F1"
// DUALPIPEV: task "1F2"
// DUALPIPEV: task "2I0"

// ZB-H1 on 4 devices: 1F1B with B split; W fills the cool-down.
// ZBH1-LABEL: sched.program @rank3
// ZBH1: task "3F0"
// ZBH1: task "3I0"
// ZBH1: task "3F1"
// ZBH1: task "3I1"
// ZBH1: task "3W0"

// ONECHUNK: error: schedule: 'interleaved' needs at least 2 stages per device; the plan has 1
// NOTV: error: schedule: 'dualpipe-v' puts stage 2 on rank 1, the plan has it on rank 0 (use place(placement='v'))
