// A parameter whose name is no SSA name (graph.name = "F0#0#0") is sharded
// like any other: its shard's value name is sanitized (shard crashed on it).

// RUN: sed 's/{graph.name = "b", graph.kind = "param"}/{graph.name = "b#0", graph.kind = "param"}/' %S/Inputs/two_params.mlir > %t.mlir
// RUN: piper-opt %t.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=3}' | filecheck %s
// CHECK: dist.load "b#0" shard 0 of 2 on 0
