"""The code blocks of README.md and docs/*.md run as written.

Each file's ```python blocks run in order in one namespace, in a fresh
working directory; a block whose first line is `# fragment` is only
compiled (it shows part of a program). A block that raises fails the test
with its file and line. Each ```sh block runs in bash (`set -e`) in a fresh
working directory that sees the repository's test/ inputs; a `# fragment`
one is only parsed (`bash -n`), and the README's set-up commands are what
CI and test_demo run. Every block says what it is: python, sh, or text,
json and mlir (shown, not run).
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


KINDS = ("python", "sh", "text", "json", "mlir")
# The README's two set-up commands: .ci/run runs the second, test_demo the demo.
SETUP = ("pip install -e . && python -m examples.demo",
         "pip install -e '.[test]' && python -m pytest -q -n 2 test/unit && lit -sv test")


def blocks(path: Path) -> list[tuple[int, str, str]]:
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


SH = [(name, line, code) for name in DOCS for line, kind, code in blocks(ROOT / name)
      if kind == "sh"]


@pytest.mark.parametrize("name", DOCS)
def test_every_block_says_what_it_is(name):
    for line, kind, _ in blocks(ROOT / name):
        assert kind in KINDS, f"{name}:{line}: a ``` block marked {kind or 'nothing'}; " \
                              f"mark it {', '.join(KINDS)}"


def test_setup_commands_are_what_ci_and_the_demo_test_run():
    readme = [code.strip() for _, kind, code in blocks(ROOT / "README.md") if kind == "sh"]
    assert list(SETUP) == readme[:2]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[test]'" in ci and "pytest -q -n 2 test/unit" in ci
    assert "lit -sv test" in ci
    assert "examples.demo" in (ROOT / "test" / "unit" / "test_demo.py").read_text()


@pytest.mark.parametrize(("name", "line", "code"),
                         [b for b in SH if b[2].strip() not in SETUP],
                         ids=[f"{n}:{ln}" for n, ln, c in SH if c.strip() not in SETUP])
def test_shell_blocks_run_as_written(name, line, code, tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT))
    (tmp_path / "test").symlink_to(ROOT / "test")
    fragment = code.lstrip().startswith("# fragment")
    proc = subprocess.run(["bash", "-n" if fragment else "-e", "-c", code], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name}:{line}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{name}:{line}: {proc.stderr[-2000:]}"
