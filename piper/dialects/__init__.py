"""Piper's dialects, one file per level: graph, dist, sched, kernel."""

from collections.abc import Callable

from xdsl.ir import Dialect


def all_dialects() -> dict[str, Callable[[], Dialect]]:
    """Every dialect piper-opt knows, by name (loaded lazily)."""
    from xdsl.dialects.builtin import Builtin
    from xdsl.dialects.func import Func

    def graph():
        from piper.dialects.graph import Graph

        return Graph

    table: dict[str, Callable[[], Dialect]] = {
        "builtin": lambda: Builtin,
        "func": lambda: Func,
        "graph": graph,
    }
    for name, module, attr in _LATER:
        table[name] = _lazy(module, attr)
    return table


# Dialects of the lower levels register here as they land.
_LATER: list[tuple[str, str, str]] = [
    ("dist", "piper.dialects.dist", "Dist"),
    ("sched", "piper.dialects.sched", "Sched"),
    ("kernel", "piper.dialects.kernel", "Kernel"),
]


def _lazy(module: str, attr: str) -> Callable[[], Dialect]:
    def load() -> Dialect:
        import importlib

        return getattr(importlib.import_module(module), attr)

    return load
