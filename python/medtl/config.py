"""Strict configuration: documented defaults, checked types and ranges, unknown keys and
duplicate YAML keys rejected by name.

A configuration is a frozen dataclass whose fields are declared with :func:`option`: each has
a default, a one-line doc, for protocol values the provenance of that default
(`medtl.provenance.paper` or `assumed`), and optionally the allowed values (`choices`), a
range (`minimum`, `maximum`) and `non_empty` for lists. A field typed as another such
dataclass is a nested section. :func:`from_mapping` builds one from plain data, naming the
file and the dotted key of every error; :func:`load_yaml` reads YAML refusing a key given
twice (YAML itself keeps the last one silently); :func:`protocol_values` is what manifests
and reports record, marking every value a user changed away from its sourced default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medtl.errors import ConfigError
from medtl.provenance import Sourced

__all__ = ["ConfigError", "describe", "fields_of", "from_mapping", "load",
           "load_yaml", "option", "parse_overrides", "protocol_values", "to_dict"]

T = TypeVar("T")


def option(default: Any, doc: str, prov: Sourced | None = None, *,
           choices: tuple[Any, ...] | None = None, minimum: float | None = None,
           maximum: float | None = None, exclusive_minimum: bool = False,
           non_empty: bool = False) -> Any:
    """A config field: `default`, a doc line, the default's provenance, allowed values, an
    inclusive range (`minimum` exclusive with `exclusive_minimum`; for a list: its items),
    `non_empty` for lists."""
    if prov is not None and _plain(prov.value) != _plain(default):
        raise ValueError(f"provenance value {prov.value!r} differs from default {default!r}")
    meta = {"doc": doc, "prov": prov, "choices": choices, "minimum": minimum,
            "maximum": maximum, "exclusive_minimum": exclusive_minimum,
            "non_empty": non_empty}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return value


def _key(where: str, name: str) -> str:
    """`file: a.b` + `c` -> `file: a.b.c`; `file` + `c` -> `file: c`."""
    return f"{where}.{name}" if ": " in where else f"{where}: {name}"


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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if len(args) == 2:
            return {_coerce(k, args[0], key): _coerce(v, args[1], _key(key, str(k)))
                    for k, v in value.items()}
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_mapping(hint, value if value is not None else {}, where=key)
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


def _check_range(value: Any, meta: dict[str, Any], key: str) -> None:
    if meta.get("non_empty") and isinstance(value, (list, tuple, dict)) and not value:
        raise ConfigError(f"{key}: must not be empty")
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is None and high is None:
        return
    open_low = meta.get("exclusive_minimum", False)
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        below = low is not None and (v < low or (open_low and v == low))
        if below or (high is not None and v > high):
            raise ConfigError(f"{key}: {v!r} {_range_text(low, high, open_low)}")


def _range_text(low: float | None, high: float | None, open_low: bool) -> str:
    if low is not None and high is not None:
        return f"is not in {'(' if open_low else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"must be {'above' if open_low else 'at least'} {low:g}"
    return f"must be at most {high:g}"


def from_mapping(cls: type[T], mapping: Any, *, where: str = "config") -> T:
    """An instance of the config dataclass `cls` from `mapping`; unknown keys, wrong types
    and values out of range are errors naming `where` and the key."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: "
                          f"{', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in mapping.items():
        key = _key(where, name)
        coerced = _coerce(value, hints[name], key)
        meta = fields[name].metadata
        choices = meta.get("choices")
        if choices is not None and coerced not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        _check_range(coerced, meta, key)
        values[name] = coerced
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}:{line}: duplicate key {key!r} (first at line "
                                  f"{seen[key]}; YAML would silently keep the last)")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """A YAML file's data; a file that cannot be read or parsed, or a key given twice, is a
    ConfigError naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8)"
                          ) from None
    loader = None
    try:
        loader = _StrictLoader(text)   # refuses control characters already
        loader.name = str(path)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings; values are YAML (`fov_mm=[30, 45]`, `prior=biased`)."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"override {pair!r}: the value is not valid YAML") from None
    return out


def load(cls: type[T], path: Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Defaults, then the YAML file at `path`, then `overrides`."""
    mapping: dict[str, Any] = {}
    if path is not None:
        loaded = load_yaml(Path(path)) or {}
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
    """Each sourced field's value with its provenance (nested sections' as `section.key`);
    a user's change says so."""
    out = {}
    for f in dataclasses.fields(config):
        prov: Sourced | None = f.metadata.get("prov")
        nested = getattr(config, f.name)
        if dataclasses.is_dataclass(nested) and not isinstance(nested, type):
            out.update({f"{f.name}.{k}": v for k, v in protocol_values(nested).items()})
            continue
        if prov is None:
            continue
        value = _plain(getattr(config, f.name))
        if value == _plain(prov.value):
            out[f.name] = prov.to_dict() | {"value": value}
        else:
            out[f.name] = {"value": value, "set_by_user": True,
                           "default": prov.to_dict() | {"value": _plain(prov.value)}}
    return out


def fields_of(cls: type) -> list[dict[str, Any]]:
    """Each field of a config class as the documentation shows it: name, type, default,
    doc, provenance, choices and range."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        m = f.metadata
        out.append({"name": f.name, "type": _type_name(hints[f.name]),
                    "default": None if default is dataclasses.MISSING else _plain(default),
                    "required": default is dataclasses.MISSING, "doc": m.get("doc", ""),
                    "prov": m.get("prov"), "choices": m.get("choices"),
                    "minimum": m.get("minimum"), "maximum": m.get("maximum"),
                    "exclusive_minimum": m.get("exclusive_minimum", False),
                    "non_empty": m.get("non_empty", False),
                    "section": hints[f.name] if isinstance(hints[f.name], type)
                    and dataclasses.is_dataclass(hints[f.name]) else None})
    return out


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis) or "any"
        return f"list of {inner}"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}" if args else "mapping"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
            dict: "mapping", list: "list"}.get(hint, getattr(hint, "__name__", str(hint)))


def describe(cls: type) -> str:
    """Every key with its default and doc, for --show-config."""
    lines = []
    for f in fields_of(cls):
        prov: Sourced | None = f["prov"]
        note = f" [{prov.describe()}]" if prov else ""
        lines.append(f"  {f['name']} = {f['default']!r}: {f['doc']}{note}")
    return "\n".join(lines)
