"""Atomic files and folders: a result is either complete or absent, never half-written.

Everything the kit writes goes through here: the content is written under a temporary name
beside the destination (`.<name>.tmp-<pid>@<host>`), flushed to disk (fsync), then renamed
onto the destination; on any error the temporary is removed. A process killed in between
leaves only its temporary, which :func:`clean_stale_temps` removes once that process is gone.

Files may replace an earlier version (a trace, a report); folders never replace anything
(:func:`atomic_dir` refuses an existing destination).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from medtl.errors import OutputExistsError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)(\.[A-Za-z0-9]+)?$")


def temp_path(dest: Path) -> Path:
    """The temporary beside `dest` for this process (keeps `dest`'s suffix last, which some
    writers need, e.g. NumPy's .npz)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}@{_HOST}{dest.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with suppress(OSError):      # some file systems cannot sync a folder's entries
        _fsync(folder)


def _fsync_tree(folder: Path) -> None:
    """Every file below `folder`, then every folder's entries, on disk."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not path.is_symlink():
            _fsync(path)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


@contextmanager
def _staged(tmp: Path, dest: Path, sync: Callable[[Path], None]) -> Iterator[Path]:
    """Yield `tmp`; on success sync it and rename it onto `dest`, on failure remove it."""
    try:
        yield tmp
        sync(tmp)
        os.replace(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(dest.parent)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary file path beside `dest`; on success it is synced and renamed onto
    `dest` (replacing an earlier file), on failure removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dest)
    _remove(tmp)
    with _staged(tmp, dest, _fsync) as staged:
        yield staged


def write_bytes(dest: Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: Path, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def write_json(dest: Path, data: Any, *, indent: int = 2, sort_keys: bool = True) -> Path:
    """`data` as JSON (keys sorted unless their order means something; non-JSON values such
    as paths as strings)."""
    return write_text(dest, json.dumps(data, indent=indent, sort_keys=sort_keys,
                                       default=str) + "\n")


def write_csv(dest: Path, rows: Iterable[dict[str, Any]],
              fieldnames: list[str] | None = None) -> Path:
    """Rows as CSV; the header is `fieldnames`, else the first row's keys."""
    rows = list(rows)
    if fieldnames is None:
        if not rows:
            raise ValueError(f"{dest}: no rows and no field names")
        fieldnames = list(rows[0])
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return Path(dest)


def copy_file(src: Path, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `dest`; renamed to `dest` on success, removed
    on failure. An existing `dest` is never replaced."""
    dest = Path(dest).resolve()
    if dest.exists():
        raise OutputExistsError(f"{dest} already exists; remove it or choose another path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(dest.parent)
    tmp = temp_path(dest).with_suffix("") if dest.suffix else temp_path(dest)
    _remove(tmp)
    tmp.mkdir()
    with _staged(tmp, dest, _fsync_tree) as staged:
        yield staged


def move_aside(src: Path, dest: Path) -> Path:
    """Move a file or folder to `dest` (same file system), never over anything: results are
    set aside, not deleted."""
    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise OutputExistsError(f"{dest} already exists; {src} was not moved")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dest)
    _fsync_dir(dest.parent)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporaries in `folder` left by dead processes of this host; returns them.
    Temporaries of live processes, or of other hosts sharing the folder, are left alone."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for path in entries:
        m = _TEMP.match(path.name)
        if m and m["host"] == _HOST and not _alive(int(m["pid"])):
            _remove(path)
            removed.append(path)
    return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
