"""Where things are: the repository, the results root, the model folder, and how a path a
user wrote is resolved (against the spec that names it, never the current directory) and
shown (relative where that is shorter and unambiguous).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Files up to this size, and text files of any size, enter a source's content identity by
# their bytes; larger binary files (images, volumes) by their size.
IDENTITY_HASH_BYTES = 1 << 16
TEXT_SUFFIXES = {".csv", ".txt", ".json", ".yaml", ".yml", ".xml", ".tsv"}


def results_root() -> Path:
    """`$MEDTL_RESULTS`, else the repository's results/ (absolute)."""
    return Path(os.environ.get("MEDTL_RESULTS") or REPO / "results").expanduser().resolve()


def models_dir() -> Path:
    """Where model-zoo caffemodels are looked for by default: `$MEDTL_MODELS`, else the
    repository's models/."""
    return Path(os.environ.get("MEDTL_MODELS") or REPO / "models").expanduser().resolve()


def resolve(path: str | Path, base: Path) -> Path:
    """`path` as written in a file under folder `base`: `~` expanded, relative paths taken
    from `base` (the spec's folder), the result absolute."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(base) / p).resolve()


def shown(path: str | Path) -> str:
    """A path for messages and reports: relative to the current folder or the repository
    when it lies below them, else absolute."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    for root in (Path.cwd(), REPO):
        try:
            return str(p.relative_to(root))
        except ValueError:
            continue
    return str(p)


def to_results(path: str | Path) -> str:
    """A path below the results root as recorded in run files (relative, so results can move
    to another disk); other paths stay absolute."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(results_root()))
    except ValueError:
        return str(p)


def from_results(recorded: str) -> Path:
    """The inverse of :func:`to_results`."""
    p = Path(recorded)
    return p if p.is_absolute() else results_root() / p


def content_identity(path: Path) -> str:
    """A digest of what a data source holds: every file's relative path and size, and the
    bytes of its small and text files (annotations, lists, manifests). Moving or copying the
    source keeps it; adding, removing, resizing or editing a listed file changes it."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        size = f.stat().st_size
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{size}\0".encode())
        if size <= IDENTITY_HASH_BYTES or f.suffix.lower() in TEXT_SUFFIXES:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
