"""Progress bars on stderr (tqdm), off when stderr is not a terminal or when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def bar(total: int | None = None, desc: str = "", *, enabled: bool = True, unit: str = "it"):
    """A tqdm bar to update by hand (`.update(n)`, `.close()`)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True, leave=False)


def each(items: Iterable[T], desc: str = "", *, enabled: bool = True,
         total: int | None = None) -> Iterable[T]:
    return tqdm(items, desc=desc, total=total, file=sys.stderr, dynamic_ncols=True,
                disable=None if enabled else True, leave=False)
