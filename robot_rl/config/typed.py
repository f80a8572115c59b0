"""Typed dataclass loading from plain YAML/JSON data, with errors that name file, field and problem.

The one config mechanism of robot_rl: every config is a dataclass; `from_dict` checks types, rejects
unknown keys (suggesting the closest name), fills defaults, then calls each dataclass's optional
`validate()` so cross-field rules live next to the fields they govern.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config value is wrong. The message is one line: `file: field.path: problem`."""

    def __init__(self, problem: str, field: str = "", source: str | Path | None = None):
        self.problem, self.field, self.source = problem, field, str(source) if source else None
        where = ": ".join(p for p in (self.source, field) if p)
        super().__init__(f"{where}: {problem}" if where else problem)

    def located(self, source: str | Path) -> "ConfigError":
        return ConfigError(self.problem, self.field, source)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        present = [o for o in options if o is not type(None)]
        if len(present) == 1:  # Optional[X]: X's own error, with its field path (e.g. sim.physics_dt)
            return _convert(present[0], value, path)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, path)
            except ConfigError as e:
                errors.append(e.problem)
        raise ConfigError("; or ".join(errors), path)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}", path)
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list, got {type(value).__name__} {value!r}", path)
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"must be a mapping, got {type(value).__name__}", path)
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {_convert(key_tp, k, path): _convert(val_tp, v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", path)
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # `1e-6`: YAML 1.1 (PyYAML) reads a float without a dot as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {value!r}", path)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"must be an integer, got {value!r}", path)
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}", path)
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"must be {_type_name(tp)}, got {value!r}", path)


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from `data`; raises ConfigError naming the field path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of fields, got {type(data).__name__} {data!r}", path)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"unknown field{hint}", _join(path, str(key)))
    kwargs = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError("is required but missing", sub)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(e.problem, _join(path, e.field) if e.field else path) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain data (for JSON/YAML) from a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> Any:
    """Read YAML safely; syntax errors become ConfigError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", source=path) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{line}invalid YAML: {getattr(e, 'problem', e)}", source=path) from None


def load_file(cls: type[T], path: str | Path) -> T:
    try:
        return from_dict(cls, load_yaml(path))
    except ConfigError as e:
        raise e.located(path) if e.source is None else e from None


def check(condition: bool, problem: str, field: str = "") -> None:
    """Raise ConfigError(problem, field) unless condition; for use in `validate()` methods."""
    if not condition:
        raise ConfigError(problem, field)

