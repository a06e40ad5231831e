"""Content hashes of a dataset's databases: recorded in the manifest when the dataset is
written, verified before Caffe opens a database.

Caffe trusts its databases: a truncated LMDB kills the process with SIGBUS (its memory map
reaches past the end of the file), flipped bytes end in a CHECK abort or, in an HDF5 file,
in silently wrong numbers. So when a dataset is complete, `Manifest.write` records per
database the size and sha256 of its files (`manifest.content_hashes`: `data.mdb`; the HDF5
list and each `.h5` file), and before a database is used:

- every file's size is compared, always (a stat: catches truncation and appended bytes);
- before training or evaluating (the runner, `medtl data features`), every file's sha256 is
  compared once per file state: a stamp under `<results>/datasets/.verified/` records the
  size, mtime and ctime of a file that matched, and a later check of the same state trusts
  it. Hashing reads the whole file (about 1-2 s per GB, minutes for a 68 GB database), so a
  study pays it once per dataset, not per run; parallel runs wait for the first to hash.
- `medtl data check` always hashes (it reads every record through Caffe anyway): a change
  that keeps size and times (bit rot under the file system) is caught there only.

Datasets written before hashes were recorded are accepted with a note.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from medtl import io
from medtl.datasets.manifest import MANIFEST, ManifestError, read_manifest
from medtl.errors import InputError, MedtlError
from medtl.io import sha256_file
from medtl.paths import results_root

STAMPS = Path("datasets") / ".verified"   # under the results root


class DamagedDatabaseError(InputError):
    """A database whose files differ from what the manifest recorded when it was written."""


def _stamp_file(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return results_root() / STAMPS / f"{key}.json"


def _state(path: Path, st: os.stat_result, sha256: str) -> dict[str, Any]:
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "sha256": sha256}


def _stamped(path: Path, st: os.stat_result, sha256: str) -> bool:
    try:
        return json.loads(_stamp_file(path).read_text()) == _state(path, st, sha256)
    except (OSError, ValueError):
        return False


def _stamp(path: Path, st: os.stat_result, sha256: str) -> None:
    with suppress(OSError, MedtlError):   # a cache: a read-only results root only costs time
        io.write_json(_stamp_file(path), _state(path, st, sha256))


@contextmanager
def _alone(path: Path) -> Iterator[None]:
    """Hold a lock per file while hashing it: parallel runs of one study start together and
    would each read the same database; the others wait and then find the stamp."""
    lock = _stamp_file(path).with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _matches(path: Path, st: os.stat_result, sha256: str, cache: bool) -> bool:
    if not cache:
        return sha256_file(path) == sha256
    if _stamped(path, st, sha256):
        return True
    with _alone(path):
        if _stamped(path, st, sha256):
            return True
        if sha256_file(path) != sha256:
            return False
        _stamp(path, st, sha256)
    return True


def verify_database(root: Path, db: Mapping[str, Any], *, cache: bool = False
                    ) -> str | None:
    """Compare a database's files with the sizes and hashes its manifest recorded.

    Returns None when they match, a note when the manifest recorded none (an older dataset);
    raises DamagedDatabaseError naming the database otherwise. With `cache`, a file whose
    state (size, mtime, ctime) was stamped as matching is not hashed again, and a file that
    matches is stamped."""
    root = Path(root)
    where = root / db["path"]
    files = db.get("files")
    if not files:
        return f"{where}: the manifest records no content hashes (written by an earlier " \
               "medtl); its files were not verified"
    for rel, want in files.items():
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            raise _damaged(where, f"{rel} is missing") from None
        if st.st_size != want["bytes"]:
            how = "truncated" if st.st_size < want["bytes"] else "grown"
            raise _damaged(where, f"{rel} holds {st.st_size} bytes, {want['bytes']} when "
                                  f"written ({how})")
        if not _matches(path, st, want["sha256"], cache):
            raise _damaged(where, f"{rel} differs from its sha256 in the manifest (changed "
                                  "bytes)")
    return None


def _damaged(where: Path, what: str) -> DamagedDatabaseError:
    return DamagedDatabaseError(f"damaged database {where}: {what}; remove the dataset and "
                                "build it again")


def _holding_dataset(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(dataset folder, manifest database record) of the database at `path`, if a medtl
    dataset above it lists it."""
    target = path.resolve()
    for parent in target.parents:
        if (parent / MANIFEST).is_file():
            try:
                manifest = read_manifest(parent)
            except ManifestError:    # another kind of manifest.json (a run's): look higher
                continue
            for db in manifest["databases"]:
                if (parent / db["path"]).resolve() == target:
                    return parent, db
            return None
    return None


def verify_sources(*paths: str | Path, outside: bool = True) -> list[str]:
    """Verify the databases at `paths` (LMDB folders, HDF5 lists) against the manifests of
    the datasets holding them, before Caffe opens them (hashing each file state once: see
    the module's docstring); returns notes for those that cannot be verified: a manifest
    without hashes, or (`outside`) no dataset above them."""
    notes = []
    for path in dict.fromkeys(Path(p) for p in paths):
        found = _holding_dataset(path)
        if found is None:
            if outside:
                notes.append(f"{path}: listed in no medtl dataset manifest; its files were "
                             "not verified")
            continue
        note = verify_database(*found, cache=True)
        if note:
            notes.append(note)
    return notes
