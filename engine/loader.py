"""The one strict config loader: YAML → frozen dataclasses.

`from_dict` builds a dataclass from plain data and rejects unknown keys and wrong types with
the key path (`temporal.lookbak: unknown key; known: ...`); `apply_overrides` applies
`--set a.b=value`; `config_to_dict` turns a config back into plain data.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration mistake; the message names the key path and what is wrong."""


def check_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def check_unit(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


# ---- the strict loader ------------------------------------------------------------------------
T = typing.TypeVar("T")
INT_LIMIT = 2**31 - 1  # every integer setting is a count, size, port or seed
# YAML 1.1 reads 1e1 (no dot) as a string; a number field takes it as the number it means.
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: {key!r} given twice (the first "
                    "would be thrown away); give each key and section once"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str) -> Any:
    """`yaml.safe_load` that refuses duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Builds dataclass `cls` from plain data, strictly: unknown keys and wrong types raise
    `ConfigError` naming the key path."""
    where = path or "<top level>"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in known:
            raise ConfigError(f"{_join(path, str(key))}: unknown key; known: {', '.join(known)}")
    kwargs = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null")
        kinds = _tagged(args)
        if kinds:
            return _convert_tagged(kinds, value, path)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {_kind(value)} not allowed")
    if origin is Literal:
        # exact values: `false` is not 0, nor `90.0` 90
        if not any(a == value and type(a) is type(value) for a in args):
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        item = args[0]
        return tuple(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_kind(value)}")
        if abs(value) > INT_LIMIT:
            raise ConfigError(f"{path}: {value} is out of range (at most {INT_LIMIT})")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_kind(value)}")
        if math.isnan(value):
            raise ConfigError(f"{path}: expected a number, got .nan")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_kind(value)}")
        return value
    raise AssertionError(f"{path}: config type {tp!r} not handled by the loader")


def _tagged(args: tuple) -> dict[str, type]:
    """A union of dataclasses told apart by a `type: Literal[...]` field: {tag: class}
    (first = default); empty otherwise."""
    kinds: dict[str, type] = {}
    for arg in args:
        if arg is type(None):
            continue
        hint = typing.get_type_hints(arg).get("type") if dataclasses.is_dataclass(arg) else None
        if hint is None or typing.get_origin(hint) is not Literal:
            return {}
        kinds[typing.get_args(hint)[0]] = arg
    return kinds


def _convert_tagged(kinds: dict[str, type], value: Any, path: str) -> Any:
    """A mapping with an optional `type` (default: the first kind), or just the tag."""
    tag = value if isinstance(value, str) else None
    if isinstance(value, dict):
        tag = value.get("type", next(iter(kinds)))
    if tag not in kinds:
        where = path if isinstance(value, str) else _join(path, "type")
        raise ConfigError(f"{where}: expected one of {list(kinds)}, got {tag!r}")
    return from_dict(kinds[tag], value if isinstance(value, dict) else {}, path)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Applies `a.b=value` overrides (values parsed as YAML) to plain config data."""
    data = _deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. tracker.onset_threshold=0.6"
            )
        try:
            value = safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ConfigError):
            value = raw
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file's top-level mapping (empty file: {}); `ConfigError` naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text config (not UTF-8); give a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text config (binary data); give a YAML file")
    try:
        data = safe_load(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {_kind(data)}")
    return data


def config_to_dict(config: Any) -> Any:
    """A config as plain data (tuples as lists), loadable again with `from_dict`."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config
