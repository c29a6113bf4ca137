"""Test-session settings that every test file shares.

Triton: on a machine without a GPU, every test runs Triton kernels in its
interpreter. Triton reads TRITON_INTERPRET when it first decorates a kernel
and may keep that answer, so the setting must hold for the whole session
before any kernel exists, not only inside the tests that set it (which made
results depend on test order). On a GPU machine nothing is set and kernels
run for real. Tests that check the refusal on CPU set it to "0" themselves,
before any kernel of theirs is decorated.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The longest tests (pytest --durations, 2 workers, 2026-12-04) start first,
# so that none of them starts near the end and runs on alone while the other
# worker has finished (`-n 2` hands out the tests in collection order).
# Only the order changes; a test not listed keeps its place after these.
LONGEST_FIRST = (
    "test/unit/test_readme.py::test_python_blocks_run_as_written[README.md]",
    "test/unit/test_bench_smoke.py::test_pp_bench",
    "test/unit/test_bench_smoke.py::test_zero3_bench",
    "test/unit/test_bench_smoke.py::test_dp_bench",
    "test/unit/test_demo.py::test_train_lm_example_streams_checkpoints_and_validates",
    "test/unit/test_fuzz.py::test_ci_budget_of_mutants_gets_located_errors_only",
    "test/unit/test_demo.py::test_own_model_example_trains_a_transformers_llama",
    "test/unit/test_own_model.py::test_transformers_model_pp2_dp2_zero1_1f1b[llama]",
    "test/unit/test_compile_bench_smoke.py::test_compile_bench",
    "test/unit/test_demo.py::test_readme_demo_trains_with_parity_and_reports_memory",
    "test/unit/test_own_model.py::test_transformers_model_pp2_dp2_zero1_1f1b[qwen3]",
    "test/unit/test_kernels.py::test_gpt_pipeline_with_triton_kernels_trains_like_eager",
    "test/unit/test_readme.py::test_shell_blocks_run_as_written[docs/simulator.md:20]",
    "test/unit/test_bench_smoke.py::test_overhead_bench",
)


def pytest_collection_modifyitems(items):
    rank = {nodeid: i for i, nodeid in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable: the rest keep order
