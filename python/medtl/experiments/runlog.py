"""A run's complete output in its `run.log`: everything written to stdout and stderr by the
process, Caffe's own log lines (written by C++ straight to file descriptor 2) included, is
appended to the log and still shown where it went before."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _pump(read_fd: int, out_fd: int, log) -> None:
    logging = True
    while chunk := os.read(read_fd, 1 << 16):
        if logging:
            try:
                log.write(chunk)
            except OSError:         # a full disk: the console still gets everything
                logging = False
        with suppress(OSError):     # the console went away; the log keeps everything
            os.write(out_fd, chunk)
    os.close(read_fd)


@contextmanager
def tee_output(log_path: Path, header: str) -> Iterator[None]:
    """Copy file descriptors 1 and 2 into `log_path` (appended) while the block runs; on a
    full disk the log stops and the console still gets everything."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    pipes = {fd: os.pipe() for fd in (1, 2)}
    # unbuffered: a write the disk has no room for fails at once, and nothing is left to
    # fail again on close
    with open(log_path, "ab", buffering=0) as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with suppress(OSError):
            log.write(f"===== {stamp} {header}\n".encode())
        lock = threading.Lock()

        class Locked:
            def write(self, data: bytes) -> None:
                with lock:
                    log.write(data)

        threads = []
        for fd, (r, w) in pipes.items():
            os.dup2(w, fd)
            os.close(w)
            t = threading.Thread(target=_pump, args=(r, saved[fd], Locked()), daemon=True)
            t.start()
            threads.append(t)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                os.dup2(saved[fd], fd)       # closes the pipes' last write ends: EOF
            for t in threads:
                t.join(timeout=10)
            for fd in saved.values():
                os.close(fd)
