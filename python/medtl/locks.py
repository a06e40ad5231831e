"""Claims: one process at a time on a run folder, a dataset or a source model.

A claim is an exclusive `flock` on a small file beside the claimed folder,
`<parent>/.<name>.lock`, which also says who holds it (host, pid, since when, the command).
The kernel drops the lock when its holder dies, however it dies, so a claim never outlives
its process and there is nothing stale to clean up. On NFS, Linux carries `flock` to the
server as a whole-file POSIX lock, so a claim holds across hosts that share the results
folder (mounts with locking, the default; not `nolock`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medtl.errors import RunError

POLL_S = 0.5


class ClaimedError(RunError):
    """What was asked for is claimed by another process."""


def lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _identity() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["medtl", *sys.argv[1:]])[:200]}


def describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
            f"({holder.get('command')})")


def is_this_process(holder: dict) -> bool:
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _read_holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def holder(target: Path) -> dict | None:
    """Who claims `target` now (None: nobody). Never disturbs a claim."""
    path = lock_file(target)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(path) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def claim(target: Path, what: str, *, wait_s: float = 0.0,
          on_wait: Callable[[dict | None], None] | None = None) -> Iterator[None]:
    """Hold `target` for the block. When another process holds it, wait up to `wait_s`
    seconds (`math.inf`: until it is free; `on_wait` is told who holds it once), then raise
    ClaimedError naming `what` and the holder."""
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _acquire(fd, path, what, wait_s, on_wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_identity()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)      # closing drops the lock


def _acquire(fd: int, path: Path, what: str, wait_s: float,
             on_wait: Callable[[dict | None], None] | None) -> None:
    deadline = time.monotonic() + wait_s
    told = False
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            raise ClaimedError(f"{what} is claimed by {describe(_read_holder(path))} "
                               f"(lock {path})")
        if on_wait is not None and not told:
            on_wait(_read_holder(path))
            told = True
        time.sleep(POLL_S)
