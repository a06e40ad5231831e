"""What a finished run keeps of its snapshots: nothing, or the last pair when asked.

The driver (`medtl.train.driver`) writes a snapshot every epoch into the run's `snapshots/`
(`<prefix>_iter_<N>.caffemodel`, `.solverstate` and the `.snapshot.json` record that completes
them) and keeps the latest two epochs and the selected one, so that a killed run resumes.
Once the run is finished (its metrics file written) nothing resumes from them: the selected
weights are `selected.caffemodel` (their digest in manifest.json), and the report, the
activation maps and `medtl report` read only the run folder's own files and `net/`. For a net of
AlexNet's size the snapshots are three times the selected weights (~340 MB per run of the demo).

`keep_last` (the spec's `training.keep_snapshots`) keeps the latest complete pair, caffemodel
and solverstate with its record, from which training can be carried on. Only the driver's
snapshot files are removed, and `snapshots/` itself only once it is empty; a folder that is a
link is left alone. A prune that is interrupted leaves a finished run with some snapshots,
which is harmless; pruning again finishes it.
"""

from __future__ import annotations

import re
from contextlib import suppress
from pathlib import Path

from medtl.errors import RunError

SNAPSHOTS = "snapshots"   # the driver's folder (`medtl.train.driver._snapshot_dir`)
_FILE = re.compile(r"^(?P<prefix>.+)_iter_(?P<iteration>\d+)"
                   r"\.(?P<kind>caffemodel|solverstate|snapshot\.json)$")


def _snapshot_files(folder: Path) -> dict[Path, tuple[str, int, str]]:
    """The driver's snapshot files in `folder`: path -> (prefix, iteration, kind)."""
    found = {}
    for path in folder.iterdir():
        m = _FILE.match(path.name)
        if m and path.is_file():
            found[path] = (m["prefix"], int(m["iteration"]), m["kind"])
    return found


def _last_pair(files: dict[Path, tuple[str, int, str]]) -> set[Path]:
    """The files of the latest iteration that has both a caffemodel and a solverstate."""
    kinds: dict[tuple[str, int], dict[str, Path]] = {}
    for path, (prefix, iteration, kind) in files.items():
        kinds.setdefault((prefix, iteration), {})[kind] = path
    pairs = [key for key, k in kinds.items() if {"caffemodel", "solverstate"} <= k.keys()]
    if not pairs:
        return set()
    return set(kinds[max(pairs, key=lambda key: key[1])].values())


def prune_snapshots(run_dir: Path, finished: Path, *, keep_last: bool) -> list[Path]:
    """Remove the snapshots of the finished run in `run_dir` (all, or all but the last pair
    with `keep_last`); `finished` is its metrics file, whose presence says it is finished.
    Returns the files removed."""
    if not finished.is_file():
        raise RunError(f"{run_dir}: not finished ({finished.name} is missing); its snapshots "
                       "are what it resumes from and stay")
    folder = Path(run_dir) / SNAPSHOTS
    if folder.is_symlink() or not folder.is_dir():
        return []
    files = _snapshot_files(folder)
    keep = _last_pair(files) if keep_last else set()
    removed = []
    for path in sorted(files.keys() - keep):
        path.unlink(missing_ok=True)   # another process may prune the same finished run
        removed.append(path)
    with suppress(OSError):   # not empty: files of the user's own, or the kept pair
        folder.rmdir()
    return removed
