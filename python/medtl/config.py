"""Strict dataset-build configuration: documented defaults, unknown keys rejected by name.

A build configuration is a frozen dataclass whose fields are declared with :func:`option`:
each has a default, a one-line doc and, for protocol values, the provenance of that default
(`medtl.provenance.paper` or `assumed`). :func:`load` reads a YAML file and `key=value`
overrides on top of the defaults; :func:`protocol_values` is what the manifest records,
marking every value a user changed away from its sourced default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medtl.provenance import Sourced

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names it."""


def option(default: Any, doc: str, prov: Sourced | None = None, *,
           choices: tuple[Any, ...] | None = None) -> Any:
    """A config field: `default`, a doc line, the default's provenance, allowed values."""
    if prov is not None and _plain(prov.value) != _plain(default):
        raise ValueError(f"provenance value {prov.value!r} differs from default {default!r}")
    meta = {"doc": doc, "prov": prov, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: Exception | None = None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                last = exc
        raise last or ConfigError(f"{key}: cannot use {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        items = [_coerce(v, item, key) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, Path):  # paths are kept as strings (plain JSON in manifests)
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_mapping(cls: type[T], mapping: dict[str, Any], *, where: str = "config") -> T:
    """An instance of the config dataclass `cls` from `mapping`; unknown keys are errors."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: "
                          f"{', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in mapping.items():
        coerced = _coerce(value, hints[name], f"{where}: {name}")
        choices = fields[name].metadata.get("choices")
        if choices is not None and coerced not in choices:
            raise ConfigError(f"{where}: {name}: {value!r} is not one of "
                              f"{', '.join(map(repr, choices))}")
        values[name] = coerced
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings; values are YAML (`fov_mm=[30, 45]`, `prior=biased`)."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load(cls: type[T], path: Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults, then the YAML file at `path`, then `overrides`."""
    mapping: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        from_mapping(cls, loaded, where=str(path))  # name the file on errors
        mapping.update(loaded)
    mapping.update(overrides or {})
    return from_mapping(cls, mapping, where=str(path) if path and not overrides else "config")


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved configuration as plain JSON values."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def protocol_values(config: Any) -> dict[str, dict[str, Any]]:
    """Each sourced field's value with its provenance; a user's change says so."""
    out = {}
    for f in dataclasses.fields(config):
        prov: Sourced | None = f.metadata.get("prov")
        if prov is None:
            continue
        value = _plain(getattr(config, f.name))
        if value == _plain(prov.value):
            out[f.name] = prov.to_dict() | {"value": value}
        else:
            out[f.name] = {"value": value, "set_by_user": True,
                           "default": prov.to_dict() | {"value": _plain(prov.value)}}
    return out


def describe(cls: type) -> str:
    """Every key with its default and doc, for --help and the README."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        prov: Sourced | None = f.metadata.get("prov")
        note = f" [{prov.describe()}]" if prov else ""
        lines.append(f"  {f.name} = {_plain(default)!r}: {f.metadata.get('doc', '')}{note}")
    return "\n".join(lines)
