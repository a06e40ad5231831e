"""Input checks shared by the metrics: every error names the argument at fault."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medtl.errors import InputError


class MetricInputError(InputError):
    """Input that a metric cannot be computed from (the message names the argument)."""


def array_1d(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricInputError(f"{name}: empty input")
    return arr


def finite_floats(values: ArrayLike, name: str, ndim: int = 1) -> np.ndarray:
    """A float array of the given rank with no NaN or infinity."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: not numeric ({exc})") from exc
    if arr.ndim != ndim:
        raise MetricInputError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise MetricInputError(f"{name}: empty input")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        index = first[0] if ndim == 1 else first
        raise MetricInputError(f"{name}: NaN or infinite value at index {index}")
    return arr


def scores_1d(values: ArrayLike, name: str = "scores") -> np.ndarray:
    return finite_floats(values, name, ndim=1)


def value_kind(arr: np.ndarray, name: str) -> str | None:
    """"number" (bool, integer, float) or "text" (str, bytes) for the values of `arr`; None
    for an empty object array. Values of mixed kind, or of another type, are an error."""
    if arr.dtype.kind in "biuf":
        return "number"
    if arr.dtype.kind in "US":
        return "text"
    if arr.dtype.kind != "O":
        raise MetricInputError(f"{name}: values must be numbers or text, got dtype {arr.dtype}")
    kinds = {_item_kind(x) for x in arr.ravel().tolist()}
    if len(kinds) > 1 or kinds == {None}:
        types = sorted({type(x).__name__ for x in arr.ravel().tolist()})
        raise MetricInputError(f"{name}: values of mixed or unknown kind ({', '.join(types)}); "
                               "give all numbers or all text")
    return kinds.pop() if kinds else None


def _item_kind(x: Any) -> str | None:
    if isinstance(x, (bool, int, float, np.number, np.bool_)):
        return "number"
    if isinstance(x, (str, bytes)):
        return "text"
    return None


def same_kind(**arrays: ArrayLike) -> None:
    """All arrays hold values of one kind (numbers or text): '1' never equals 1."""
    kinds = {name: value_kind(np.asarray(a), name) for name, a in arrays.items()}
    found = {k for k in kinds.values() if k is not None}
    if len(found) > 1:
        described = ", ".join(f"{name} holds {k}" for name, k in kinds.items() if k)
        raise MetricInputError(f"values of different kinds: {described}; convert one so that "
                               "both hold numbers or both text")


def binary_labels(values: ArrayLike, name: str = "labels") -> np.ndarray:
    """0/1 (or bool) labels as a bool array."""
    arr = array_1d(values, name)
    if arr.dtype == bool:
        return arr
    if value_kind(arr, name) != "number":
        raise MetricInputError(f"{name}: labels must be 0/1 or bool numbers, got values of "
                               f"another kind (text, e.g. {arr[0]!r})")
    try:
        as_float = arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name}: labels must be 0/1 or bool ({exc})") from exc
    bad = (as_float != 0) & (as_float != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricInputError(f"{name}: labels must be 0/1 or bool, got {arr[i]!r} at index {i}")
    return as_float == 1


def both_classes(labels: np.ndarray, name: str = "labels") -> None:
    if labels.all() or not labels.any():
        only = "positive" if labels.all() else "negative"
        raise MetricInputError(f"{name}: only {only} labels; both classes are needed")


def same_length(**arrays: Any) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise MetricInputError(f"mismatched lengths: {described}")


def probability_level(level: float, name: str = "level") -> float:
    if not 0.0 < level < 1.0:
        raise MetricInputError(f"{name}: confidence level must lie in (0, 1), got {level}")
    return float(level)


def positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MetricInputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def group_index(groups: ArrayLike, name: str = "groups") -> tuple[np.ndarray, np.ndarray]:
    """(distinct group ids sorted, index of each item's group in them)."""
    arr = array_1d(groups, name)
    try:
        ids, index = np.unique(arr, return_inverse=True)
    except TypeError as exc:
        raise MetricInputError(f"{name}: group ids must be mutually comparable ({exc})") from exc
    return ids, index.reshape(-1)
