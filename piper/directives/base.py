"""What every directive is: a frozen dataclass with a JSON name that prints
as its JSON object.

    >>> print(piper.split(4))
    {"directive": "split", "n": 4}

Options left at their default are omitted, filters are written in their
JSON form (an order entry naming one task as its label, `"0F3"`), so a
printed list of directives is a JSON strategy that `load` reads back
(piper/directives/strategy.py).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from typing import ClassVar

from piper.tasks.filters import Filter


def json_value(v):
    """An option's JSON value."""
    if isinstance(v, Filter):
        return v.text() if v.exact() else v.to_json()
    if isinstance(v, tuple | list):
        return [json_value(x) for x in v]
    return v


class Directive:
    """Base of the directive dataclasses; `directive` is the JSON name."""

    directive: ClassVar[str]

    def to_dict(self) -> dict:
        """The JSON object: {"directive": name, options not at their default}."""
        out: dict = {"directive": self.directive}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.default is not MISSING and v == f.default:
                continue
            out[f.name] = self._json_option(f.name, v)
        return out

    def _json_option(self, name: str, v):
        return json_value(v)

    def __repr__(self) -> str:
        return json.dumps(self.to_dict())
