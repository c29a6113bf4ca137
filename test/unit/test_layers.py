"""Piper's packages import downward only (docs/architecture.md).

The layers, lowest first: a module may import its own layer and the ones
below it, never one above. Function-local imports count too (they used to
hide cycles). Function-local imports are for heavy optional dependencies
(torch, triton, ...) or for start-up time; those without such a reason are
counted, and the count may only go down.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2] / "piper"

LAYERS = [
    "diagnostics",  # PiperError and locations
    "libraries",    # user modules that register custom operators
    "dialects",     # graph, dist, sched, kernel: the IR
    "ir",           # the context of every dialect, located parsing and verifying
    "tasks",        # filters, order text, schedule tables
    "backend",      # aten and Triton execution of IR functions
    "analysis",     # reads IR without changing it: costs, simulator, plan checks
    "passes",       # one file per pass; directive passes among them
    "directives",   # the strategy language: builds pass objects
    "frontend",     # capture: torch -> graph IR
    "moe",          # static-shape token routing for MoE models (uses annotate)
    "runtime",      # executes sched programs over torch.distributed
    "api",          # piper.compile / Plan
    "strategy_search",  # ranks strategies: compiles and simulates candidates
    "fused_step",   # one fused step on one device (tests, benchmarks)
    "__init__",     # the package facade
    "tools",        # CLI entry points
    "__main__",
]

HEAVY = ("torch", "triton", "numpy", "matplotlib", "transformers", "safetensors")
# Function-local imports with no heavy dependency and no `# lazy` reason
# on their line: a ratchet, lower it when you hoist some.
UNEXPLAINED_LOCAL_IMPORTS = 72


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        yield path, ".".join(rel.parts).removesuffix(".__init__")


def _layer(module: str) -> str:
    if module.endswith("__main__"):
        return "__main__"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node, a.name


def _local_imports(tree) -> set:
    return {node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)}


def test_every_package_has_a_layer():
    assert {_layer(m) for _, m in _modules()} <= set(LAYERS)


def test_imports_go_down_only():
    upward = []
    for path, module in _modules():
        here = LAYERS.index(_layer(module))
        for node, target in _imports(ast.parse(path.read_text())):
            if target.split(".")[0] == "piper" and LAYERS.index(_layer(target)) > here:
                upward.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: "
                              f"{_layer(module)} imports {target} ({_layer(target)})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    tree = ast.parse("def f():\n    from piper.directives.strategy import expand\n")
    targets = [t for _, t in _imports(tree)]
    assert LAYERS.index(_layer(targets[0])) > LAYERS.index(_layer("piper.passes.order"))
    assert len(_local_imports(tree)) == 1


def _heavy_modules() -> set[str]:
    return {m for path, m in _modules()
            if re.search(r"^(import torch|from torch)", path.read_text(), re.M)}


def test_function_local_imports_have_a_reason():
    heavy = _heavy_modules()
    unexplained = []
    for path, module in _modules():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for node in _local_imports(tree):
            for _, target in _imports(ast.Module(body=[node], type_ignores=[])):
                if target.split(".")[0] in HEAVY or any(
                        target == h or target.startswith(h + ".") for h in heavy):
                    continue
                if "# lazy" in lines[node.lineno - 1]:
                    continue
                unexplained.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {target}")
    assert len(unexplained) <= UNEXPLAINED_LOCAL_IMPORTS, (
        f"{len(unexplained)} function-local imports without a reason (at most "
        f"{UNEXPLAINED_LOCAL_IMPORTS}); import at the top, or say `# lazy: why`:\n"
        + "\n".join(unexplained))
