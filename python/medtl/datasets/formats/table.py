"""Text tables: small CSV files the kit writes and reads back (folds, splits: a fixed header,
then rows of exactly that many cells), and the text files of the datasets' annotations. Every
error names the file (and line): a file that cannot be read is an input error, never an
OSError traceback."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from medtl.errors import InputError


def read_text(path: Path, error: type[InputError] = InputError) -> str:
    """The whole of a UTF-8 text file (a byte-order mark dropped); `error` naming the file
    when it cannot be read (missing, no permission, an I/O error) or is not text."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})"
                    ) from None


def finite(text: str, where: str, what: str, error: type[InputError] = InputError) -> float:
    """`text` as a finite number; `error` "where: what ... " when it is not one."""
    try:
        value = float(text)
    except ValueError:
        raise error(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise error(f"{where}: {what} must be a finite number, got {text.strip()!r}")
    return value


def table_rows(path: Path, header: list[str], error: type[InputError] = InputError
               ) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-empty row after the header."""
    rows = list(csv.reader(read_text(path, error).splitlines()))
    if not rows or [c.strip() for c in rows[0]] != header:
        raise error(f"{path}:1: header must be {','.join(header)}")
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise error(f"{path}:{n}: expected {len(header)} columns, got {len(row)}")
        yield n, [c.strip() for c in row]
