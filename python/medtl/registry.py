"""Registries the studies fill by themselves, so the core keeps no table of them.

Each study is a package under `medtl.studies` that registers what it brings (its protocol's
configurations, its dataset builders, its `medtl data` commands) when it is imported. The
core never imports a study by name: the first lookup in any registry imports every package
found under `medtl.studies` (:func:`discover`), so a new study is picked up by adding its
folder.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
STUDIES_PACKAGE = "medtl.studies"
_discovered = False


def discover() -> list[str]:
    """Import every study package once (each registers itself); returns their names."""
    global _discovered
    package = importlib.import_module(STUDIES_PACKAGE)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)
    if not _discovered:
        _discovered = True
        for name in names:
            importlib.import_module(f"{STUDIES_PACKAGE}.{name}")
    return names


class Registry(Generic[T]):
    """Name -> object, filled by the studies; lookups discover the studies first."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def decorator(self, name: str) -> Callable[[T], T]:
        return lambda item: self.register(name, item)

    def get(self, name: str) -> T:
        """The entry `name`; KeyError naming the known entries when there is none."""
        discover()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r} (known: {', '.join(self)})") from None

    def __iter__(self) -> Iterator[str]:
        discover()
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        discover()
        return sorted(self._items.items())
