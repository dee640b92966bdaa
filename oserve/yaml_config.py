"""Load YAML config files into pydantic models with one-line errors: file, line, field, closest key.

- :func:`load_yaml_model`: read a YAML file and validate it with a pydantic model, raising one
  :class:`~oserve.errors.ConfigError` whose message has the file and line of the first bad field
  (from the YAML node marks), the field path and, for a misspelt key, the closest valid key;
- :func:`yaml_error_line`, :func:`validation_error_line`: the same for callers that load themselves;
- :func:`closest_first`, :func:`did_you_mean`: allowed names ordered by similarity (:mod:`difflib`).

Example messages::

    examples/cpu.yaml:3:9: malformed YAML: mapping values are not allowed here
    examples/cpu.yaml:12: orchestrator.planer: unknown key; did you mean 'planner'? allowed: planner, ...
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oserve.errors import ConfigError

__all__ = ["closest_first", "did_you_mean", "load_yaml_model", "validation_error_line", "with_allowed",
           "yaml_error_line"]


def closest_first(name: str, allowed: Iterable[str]) -> list[str]:
    """``allowed`` with the names most similar to ``name`` first (difflib ratio), then the rest in order."""
    allowed = list(dict.fromkeys(allowed))
    close = difflib.get_close_matches(name, allowed, n=len(allowed), cutoff=0.5)
    return close + [a for a in allowed if a not in close]


def did_you_mean(name: str, allowed: Iterable[str]) -> str | None:
    """The single closest allowed name to ``name`` (difflib, cutoff 0.5), or None."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.5)
    return close[0] if close else None


def with_allowed(msg: str, names: Iterable[str]) -> str:
    """``msg`` followed by ``allowed: a, b, ...``, set off by ``"; "`` (by a space after a question:
    ``...; did you mean 'milp'? allowed: milp, ...``)."""
    sep = " " if msg.endswith("?") else "; "
    return f"{msg}{sep}allowed: {', '.join(names)}"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def yaml_error_line(path: str | Path, exc: Exception) -> str:
    """``FILE:LINE:COL: problem`` for a YAML syntax error (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = f"{context}, {problem}" if context else problem
    return f"{where}: malformed YAML: {_one_line(what)}"


def _node_line(root: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest prefix found) in a composed YAML tree."""
    import yaml

    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional``; a union of several types resolves to its one model, if any."""
    from pydantic import BaseModel

    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                tp = args[0]
            elif len(models) == 1:
                tp = models[0]
            else:
                return None
        else:
            return tp


def _model_fields_at(model: type, loc: Sequence[Any]) -> list[str] | None:
    """Field names of the pydantic model found at ``loc`` below ``model`` (None when not one model)."""
    from pydantic import BaseModel

    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (list, tuple, set, frozenset) and args:
            current = args[0]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def validation_error_line(path: str | Path, text: str, exc: Any, model: type | None = None) -> str:
    """``FILE:LINE: field: problem`` for the first error of a pydantic ``ValidationError``.

    A misspelt key (``extra_forbidden``) names the closest valid key of that model when ``model``
    is given. Further errors are counted, not listed, to keep one line.
    """
    import yaml

    # A misspelt key shows as an unknown key and a missing one: the unknown key is the cause.
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0]
    loc = [p for p in first.get("loc", ())]
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        root = None
    line = _node_line(root, loc) if root is not None else None
    field = ".".join(str(p) for p in loc) or "<root>"
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
        fields = _model_fields_at(model, loc[:-1]) if model is not None else None
        if fields:
            guess = did_you_mean(str(loc[-1]), fields)
            msg += f"; did you mean {guess!r}?" if guess else ""
            msg = with_allowed(msg, closest_first(str(loc[-1]), fields))
    else:
        msg = _one_line(first.get("msg", ""))
        ctx = {k: v for k, v in (first.get("ctx") or {}).items() if k != "error"}
        if ctx and not any(str(v) in msg for v in ctx.values()):
            msg += " (" + ", ".join(f"{k} {v}" for k, v in ctx.items()) + ")"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"{path}:{line}" if line is not None else str(path)
    return f"{where}: {field}: {msg}{more}"


def load_yaml_model(path: str | Path, model: type, overrides: dict[str, Any] | None = None,
                    defaults: dict[str, Any] | None = None) -> Any:
    """Read YAML ``path`` and validate it with the pydantic ``model``.

    Args:
        path: the YAML file.
        model: a pydantic model class.
        overrides: top-level keys replacing the file's.
        defaults: top-level keys used when the file lacks them.

    Raises:
        ConfigError: the file cannot be read, is not YAML, is not a mapping, or a field is invalid;
            the message is one line with the file and line (``field`` is the dotted field path).
    """
    import yaml
    from pydantic import ValidationError

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}", field=None) from exc
    except UnicodeDecodeError as exc:  # a binary file
        raise ConfigError(f"cannot read config {p}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                          field=None) from exc
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(p, exc), field=None) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}:1: the config must be a mapping (key: value) at the top level", field="<root>")
    raw.update(overrides or {})
    for k, v in (defaults or {}).items():
        raw.setdefault(k, v)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")[0]
        field = ".".join(str(x) for x in first.get("loc", ())) or None
        raise ConfigError(validation_error_line(p, text, exc, model), field=field) from exc
