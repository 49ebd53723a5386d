"""Plain data (YAML, `--set key.path=value`) into a tree of dataclasses, every value checked against its
annotation and its declared range, every error naming the dotted key path.

Generic on purpose: config.py declares the tree and its cross-key rules; this module only knows how
annotations (int, float, bool, str, Literal, Optional, tuples, lists of sections) and `bounded` ranges read plain values.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from ito_sweeps.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration value that cannot be used; the message names the key path."""


def bounded(default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A dataclass field whose values must lie in [lo, hi]."""
    return dataclasses.field(default=default, metadata={"lo": lo, "hi": hi})


def build(cls: type, data: Any, path: str = "") -> Any:
    """An instance of the dataclass `cls` from a mapping; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = path or "config"
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (valid keys in {where}: {', '.join(names)})")
    kwargs = {}
    for name, value in data.items():
        key = _join(path, name)
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = build(kind, value, key)
        else:
            kwargs[name] = _coerce(value, kind, key)
            _check_range(names[name], kwargs[name], key)
    return cls(**kwargs)


def key_type(root: type, key: str) -> Any:
    """The type of a dotted key under the dataclass `root`, Optional unwrapped; KeyError for a key it lacks."""
    kind: Any = root
    for part in key.split("."):
        hints = typing.get_type_hints(kind) if dataclasses.is_dataclass(kind) else {}
        if part not in hints:
            raise KeyError(key)
        kind = hints[part]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [a for a in typing.get_args(kind) if a is not type(None)]
    return kind


def plain(value: Any) -> Any:
    # YAML and JSON have no tuples; lists round-trip through both and through torch.load(weights_only)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is a value, not a section")
    node[leaf] = value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if dataclasses.is_dataclass(kind):  # an element of a list of sections, e.g. eval.benchmarks[0]
        return build(kind, value, key)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple and args[-1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean the number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .nan and .inf (and "nan" as text) as floats; no key means them
            raise ConfigError(f"{key}: {value!r} is not a finite number; write a number such as 1.0e-3")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: config type {kind!r} is not supported")  # a bug in the tree, not user input


def _check_range(f: dataclasses.Field, value: Any, key: str) -> None:
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if value is None or isinstance(value, (str, bool, tuple)):
        return
    if lo is not None and value < lo:
        raise ConfigError(f"{key}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} is above the maximum {hi}")
