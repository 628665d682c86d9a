"""Typed configs as the single source of job options: their defaults, field docstrings and how each shows.

Recipes declare options once, as dataclass fields with a docstring under each (EvalConfig,
DistillConfig, TrainConfig, SftDataConfig, ExportConfig). Everything else reads them from here: the
CLI's typer options (cli.common.config_options), the app's launch forms, a job's params (`options`,
`params`), a run's identity and the check of a stored or imported config (`from_dict`).

A plain field is an option: `--its-name` on the command line (a bool: `--its-name/--no-its-name`), its
docstring the help, its default the default, in the job's params and, when set, in a run's identity. A
field says otherwise with `opt(default, ...)` below (another flag, a help panel, a form label, not an
option at all, not part of the identity): in its own declaration, so adding an option is a one-file change.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import InputError

UNSET = None
"""Every option's "not set" (the recipe's own choice): None, never 0, "" or an environment variable."""


@dataclass(frozen=True)
class Show:
    """How one config field shows outside its dataclass (the `kd` entry of the field's metadata)."""

    option: bool = True
    """A user option (a flag, a job param, a form field); False: set by code or left at its default."""
    flags: tuple[str, ...] = ()
    """Command-line flags; () for `--name` (a bool: `--name/--no-name`). " /--no-x" declares a bool's off flag alone."""
    help: str | None = None
    """Command-line help where it must differ from the docstring (a negative flag)."""
    panel: str | None = None
    """The --help panel the option is listed in (None: the command's default panel)."""
    label: str | None = None
    """The app's form label (None: the name, with spaces)."""
    form: bool = True
    """In the app's form for the config (False: command line and job params only)."""
    identity: bool = True
    """Part of a run's identity (False: where or how fast it runs, not what it learns)."""


_KEY = "kd"
_PLAIN = Show()


def opt(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **show: Any) -> Any:
    """A dataclass field with how it shows (see Show): `rank: int = opt(16, panel="recipe")`."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_KEY: Show(**show)})


def show(f: dataclasses.Field) -> Show:
    return f.metadata.get(_KEY, _PLAIN)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: its docstring, whitespace folded} from the class source (and its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
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


def defaults(cls: type) -> dict[str, Any]:
    """{field: default} for every field that has one."""
    out = {}
    for f in dataclasses.fields(cls):
        try:
            out[f.name] = default(cls, f.name)
        except KeyError:
            pass
    return out


def shown_default(cls: type, name: str) -> str | None:
    """How a field's default shows where other options decide it (a config's `shown_default(name)` hook, e.g. the
    recipe's choice of TrainConfig); None: the field's own default shows."""
    hook = getattr(cls, "shown_default", None)
    return hook(name) if hook is not None else None


def help_text(cls: type, name: str) -> str:
    return field_docs(cls).get(name, "")


def options(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields of `cls` that are user options, in declaration order."""
    return tuple(f for f in dataclasses.fields(cls) if show(f).option)


def option_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in options(cls))


@cache
def field_types(cls: type) -> dict[str, Any]:
    """{field: its type, resolved} (the annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def base_type(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed): `int | None` -> (int, True)."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def from_dict(cls: type, data: dict[str, Any], what: str, *, only: typing.Iterable[str] | None = None,
              **fixed: Any) -> Any:
    """`cls(**data, **fixed)`, refusing keys that are not fields (or not in `only`) in one line naming them."""
    known = set(only) if only is not None else {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown {what}(s): {', '.join(unknown)}")
    return cls(**{**data, **fixed})


def changed(cfg: Any, *, keep: typing.Iterable[str] = (), was: dict[str, Any] | None = None) -> dict[str, Any]:
    """The identity of a config: its fields, less those that say they are not (Show.identity), and less those
    at their default unless named in `keep` (an option added later leaves the identities of earlier runs as
    they were; `keep` lists the fields identities always held). `was`: the default a field had when identities
    began leaving it out, for a field whose default changed since (the keys of earlier runs stay what they were)."""
    keep, at_default = set(keep), {**defaults(type(cfg)), **(was or {})}
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if show(f).identity and (f.name in keep or f.name not in at_default
                                     or getattr(cfg, f.name) != at_default[f.name])}
