"""Small CSV files the kit writes and reads back (folds, splits): a fixed header, then rows
of exactly that many cells; every error names the file and line."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from medtl.errors import InputError


def table_rows(path: Path, header: list[str], error: type[InputError] = InputError
               ) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-empty row after the header."""
    try:
        rows = list(csv.reader(Path(path).read_text().splitlines()))
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from exc
    if not rows or [c.strip() for c in rows[0]] != header:
        raise error(f"{path}:1: header must be {','.join(header)}")
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise error(f"{path}:{n}: expected {len(header)} columns, got {len(row)}")
        yield n, [c.strip() for c in row]
