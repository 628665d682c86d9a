"""Typed configs as the single source of job options: their defaults and field docstrings.

Recipes declare options once, as dataclass fields with a docstring under each (EvalConfig,
DistillConfig, TrainConfig, SftDataConfig, ExportConfig). The CLI's typer options and the app's
launch forms read defaults and help from here instead of repeating them.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from functools import cache
from typing import Any


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: its docstring, whitespace folded} from the class source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def default(cls: type, name: str) -> Any:
    """The field's default (its factory called, for list/dict fields); KeyError for a field without one."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                return f.default_factory()  # type: ignore[misc]
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def help_text(cls: type, name: str) -> str:
    return field_docs(cls).get(name, "")
