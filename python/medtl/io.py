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
import errno
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

from medtl.errors import DiskFullError, OutputExistsError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"
_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)(\.[A-Za-z0-9]+)?$")
# Below this much free space an unexplained I/O error of a writer is taken for a full disk:
# LMDB reports a short write as EIO ("mdb_txn_commit: Input/output error"), not ENOSPC.
LOW_SPACE_BYTES = 64 << 20


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


def free_bytes(path: Path) -> int:
    """Bytes this user may still write on the file system of `path` (or of its nearest
    existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def no_space(exc: BaseException, path: Path) -> str | None:
    """Why `exc`, raised while writing at `path`, means there is no room ("disk full",
    "disk quota exceeded", "file size limit (ulimit -f) reached"); None for other errors."""
    code, text = getattr(exc, "errno", None), str(exc)
    if code == errno.ENOSPC or "No space left on device" in text:
        return "disk full"
    if code == errno.EDQUOT or "Disk quota exceeded" in text:
        return "disk quota exceeded"
    if code == errno.EFBIG or "File too large" in text:
        return "file size limit (ulimit -f) reached"
    if (code == errno.EIO or "Input/output error" in text) \
            and free_bytes(path) < LOW_SPACE_BYTES:
        return "disk full"
    return None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def check_free(path: Path, need_bytes: int) -> None:
    """Raise DiskFullError naming `path` unless its file system has `need_bytes` free.

    For writers that cannot fail cleanly: Caffe aborts the process (CHECK failure) when it
    cannot write a snapshot, so call this before each snapshot with the size the snapshot
    will take (the previous .caffemodel + .solverstate, or 4 bytes x parameters x (1 + the
    solver's history blobs) before the first)."""
    free = free_bytes(path)
    if free < need_bytes:
        raise DiskFullError(f"disk full at {path}: {_mib(free)} free, {_mib(need_bytes)} "
                            "needed; free space there and run the command again")


def _no_room(exc: BaseException, tmp: Path, dest: Path) -> DiskFullError | None:
    """`exc` as a DiskFullError naming `dest` (not its temporary), or None."""
    if isinstance(exc, DiskFullError):
        return DiskFullError(str(exc).replace(str(tmp), str(dest)))
    reason = no_space(exc, dest) if isinstance(exc, OSError) else None
    if reason is None:
        return None
    return DiskFullError(f"{reason} at {dest}: nothing was written; free space there and run "
                         "the command again")


@contextmanager
def _staged(tmp: Path, dest: Path, sync: Callable[[Path], None]) -> Iterator[Path]:
    """Yield `tmp`; on success sync it and rename it onto `dest`, on failure remove it (and
    report a full disk as DiskFullError naming `dest`)."""
    try:
        yield tmp
        sync(tmp)
        os.replace(tmp, dest)
    except BaseException as exc:
        _remove(tmp)
        full = _no_room(exc, tmp, dest)
        if full is not None:
            raise full from exc
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
