// A graph.from that names no result is one located error of place
// (convert-graph-to-dist), not an internal error; one that is not of the
// form FUNCTION#RESULT is the verifier's error, before any pass.

// RUN: sed 's/graph.from = "F0#0"/graph.from = "F0#9"/' %S/Inputs/two_stage.mlir > %t.range.mlir
// RUN: not piper-opt %t.range.mlir -p place 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: sed 's/graph.from = "F0#0"/graph.from = "F0#x"/' %S/Inputs/two_stage.mlir > %t.form.mlir
// RUN: not piper-opt %t.form.mlir -p place 2>&1 | filecheck %s --check-prefix=FORM

// RANGE: range.mlir:7:1: error: convert-graph-to-dist: argument 'a' (act) of @F1 comes from result 9 of @F0, which has 2 results
// RANGE-NOT: internal error
// FORM: form.mlir:7:1: error: 'func.func' op @F1 argument 1: graph.from "F0#x" is not of the form FUNCTION#RESULT, such as "F0#1"
