"""A benchmark's driver run in the test's own process.

`bench/NAME.py`'s `main(argv)`, loaded from its file: no second interpreter
importing torch and piper per smoke test, and the ranks of every bench job
fork from this process's fork server (bench/harness.py), started once per
test process.
"""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench_module(script: str):
    """`bench/SCRIPT` loaded as a module (its `main`, its helpers)."""
    name = os.path.splitext(script)[0]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_main(script: str, argv: list[str]) -> int:
    """`python bench/SCRIPT ARGV`'s exit status, run here."""
    return bench_module(script).main(argv)
