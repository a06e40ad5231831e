"""Write-to-temporary-then-rename, so a dataset or result is either complete or absent."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The destination already exists; medtl never overwrites a finished output."""


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `dest`; rename it to `dest` on success.

    On any exception the temporary directory is removed and `dest` is left untouched.
    """
    dest = Path(dest).resolve()
    if dest.exists():
        raise OutputExistsError(f"{dest} already exists; remove it or choose another path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
