"""The Python blocks of README.md and docs/own_model.md run as written.

Each file's ```python blocks run in order in one namespace, in a fresh
working directory; a block whose first line is `# fragment` is only
compiled (it shows part of a program). A block that raises fails the test
with its file and line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", "docs/own_model.md"]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


@pytest.mark.parametrize("name", FILES)
def test_python_blocks_run_as_written(name, tmp_path, monkeypatch):
    blocks = python_blocks(ROOT / name)
    assert blocks, f"{name} has no python block"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET", "1"))
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for line, code in blocks:
        compiled = compile(code, f"{name}:{line}", "exec")
        if code.lstrip().startswith("# fragment"):
            continue
        exec(compiled, namespace)  # noqa: S102 - the documentation's own code
        ran += 1
    assert ran, f"{name}: every block is a fragment"
