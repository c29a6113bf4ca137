"""The Python blocks of README.md and docs/*.md run as written.

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


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


def _fragment(code: str) -> bool:
    return code.lstrip().startswith("# fragment")


DOCS = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
# the files with a block that runs (the others hold fragments only)
FILES = [f for f in DOCS if any(not _fragment(c) for _, c in python_blocks(ROOT / f))]


@pytest.mark.parametrize("name", DOCS)
def test_every_python_block_compiles(name):
    for line, code in python_blocks(ROOT / name):
        compile(code, f"{name}:{line}", "exec")


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
        if _fragment(code):
            continue
        exec(compiled, namespace)  # noqa: S102 - the documentation's own code
        ran += 1
    assert ran, f"{name}: every block is a fragment"
