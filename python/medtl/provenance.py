"""Where every number comes from.

A protocol value is either the paper's (with the table or section it stands in) or an
assumption the kit had to make (with the reason). `Sourced` carries both the value and that
record, generated files print it beside the value, and `medtl inspect` and reports show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sourced:
    """A value with its provenance: exactly one of `source` or `assumed` is set."""

    value: Any
    source: str | None = None    # e.g. "Tajbakhsh 2016 Table II"
    assumed: str | None = None   # the reason, when the paper leaves the value open

    def __post_init__(self) -> None:
        if (self.source is None) == (self.assumed is None):
            raise ValueError(f"{self.value!r}: give exactly one of source= or assumed=")

    @property
    def is_assumed(self) -> bool:
        return self.assumed is not None

    def describe(self) -> str:
        return f"assumed: {self.assumed}" if self.assumed else str(self.source)

    def to_dict(self) -> dict[str, Any]:
        key = "assumed" if self.assumed else "source"
        return {"value": self.value, key: self.describe().removeprefix("assumed: ")}


def paper(value: Any, source: str) -> Sourced:
    """A value the paper gives, with where it stands (paper, table or section)."""
    return Sourced(value, source=source)


def assumed(value: Any, reason: str) -> Sourced:
    """A value the paper leaves open, with the reason for the kit's choice."""
    return Sourced(value, assumed=reason)


def derived(value: Any, how: str) -> Sourced:
    """A value computed from others (e.g. iterations from epochs and the training-set size)."""
    return Sourced(value, source=f"derived: {how}")
