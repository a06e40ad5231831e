"""A full disk ends in one line naming where ("disk full at PATH", exit 2), leaves nothing
half-written, and the same command succeeds once there is space (issue 12 item 8).

A real full disk is made with a tiny tmpfs mounted in a private mount namespace
(`unshare -Urm`, or `unshare -m` as root): the writers meet the kernel's own ENOSPC (LMDB
turns it into "mdb_txn_commit: Input/output error", HDF5 into an OSError). Nothing is mounted
outside the test's namespace. RLIMIT_FSIZE (EFBIG) needs no privileges and covers the same
code path where namespaces are not available.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medtl import io
from medtl.errors import DiskFullError

PREAMBLE = textwrap.dedent("""
    import contextlib, io as _io, json, os, subprocess, sys
    from pathlib import Path
    import numpy as np
    MNT = Path(sys.argv[1])
    OUT = {}
    def listing():
        return sorted(str(p.relative_to(MNT)) for p in MNT.rglob("*"))
    def caught(fn):
        try:
            fn()
        except Exception as exc:
            return type(exc).__name__ + ": " + str(exc)
        return "no error"
    def cli(argv):
        from medtl import cli as c
        err, out = _io.StringIO(), _io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = c.main(argv)
        return rc, err.getvalue().strip().splitlines(), out.getvalue()
""")


def _namespace_prefix() -> list[str] | None:
    """The unshare command that may mount a tmpfs here, or None where none can."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-Urm"], ["unshare", "-m"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def _on_small_disk(tmp_path: Path, body: str, size: str) -> dict:
    """Run `body` (Python; MNT is a fresh tmpfs of `size`, results go in OUT) in a private
    mount namespace; returns OUT, with the process's exit status as OUT['rc']."""
    prefix = _namespace_prefix()
    if prefix is None:  # a kernel or container restriction, not a missing package
        pytest.skip("no mount namespace can be made here (unshare -Urm and -m both fail)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    script = tmp_path / "script.py"
    script.write_text(PREAMBLE + textwrap.dedent(body)
                      + "\nprint('OUT=' + json.dumps(OUT), flush=True)\n")
    shell = 'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" "$4" "$2"'
    done = subprocess.run([*prefix, "sh", "-c", shell, "sh", size, str(mnt), sys.executable,
                           str(script)], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("OUT=")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return {**json.loads(lines[-1][4:]), "rc": done.returncode, "stdout": done.stdout}


def test_check_free_names_the_path_when_space_is_short(tmp_path):
    with pytest.raises(DiskFullError, match=f"^disk full at {tmp_path}: .* MiB free"):
        io.check_free(tmp_path, 1 << 62)
    io.check_free(tmp_path, 1)
    io.check_free(tmp_path / "not" / "made" / "yet", 1)   # its nearest existing parent


def test_writers_on_a_full_disk_say_so_and_leave_nothing(tmp_path):
    out = _on_small_disk(tmp_path, """
        from medtl import io
        from medtl.datasets.lmdb_writer import write_lmdb
        from medtl.datasets.hdf5_writer import Hdf5Writer
        records = ((i, np.random.default_rng(i).integers(0, 255, (3, 64, 64), np.uint8), 0)
                   for i in range(100))
        OUT["lmdb"] = caught(lambda: write_lmdb(MNT / "db", records))
        OUT["lmdb_left"] = listing()
        OUT["text"] = caught(lambda: io.write_text(MNT / "big.txt", "x" * (1 << 20)))
        OUT["text_left"] = listing()
        def hdf5():
            w = Hdf5Writer(MNT / "h5", "train", 50, (3, 64, 64))
            for r in range(50):
                w.put(r, np.random.default_rng(r).random((3, 64, 64)), 0)
            w.close()
        OUT["hdf5"] = caught(hdf5)
    """, "256k")
    assert out["lmdb"].startswith(f"DiskFullError: disk full at {tmp_path / 'disk' / 'db'}:")
    assert out["lmdb_left"] == []
    assert out["text"].startswith(f"DiskFullError: disk full at {tmp_path / 'disk'}/big.txt:")
    assert out["text_left"] == []
    assert out["hdf5"].startswith(f"DiskFullError: disk full at {tmp_path / 'disk' / 'h5'}/"
                                  "train_000.h5:")
    # HDF5 would retry its unwritten data at exit and crash the interpreter (SIGSEGV)
    assert out["rc"] == 0


def test_a_dataset_build_on_a_full_disk_is_one_line_and_runs_again_after(tmp_path, capsys):
    from medtl import cli

    source = tmp_path / "ild_db"
    assert cli.main(["data", "phantoms", "ild", "--out", str(source), "--patients", "6",
                     "--slices", "2", "--size", "96"]) == 0
    capsys.readouterr()
    build = ["data", "ild", "--root", str(source), "--no-progress", "--set", "level=patch",
             "--set", "patch_size=16", "--set", "patches_per_roi=4",
             "--set", "patch_output_size=16", "--set", "only_folds=[2]"]
    out = _on_small_disk(tmp_path, f"""
        build = {build!r} + ["--out", str(MNT / "ds")]
        OUT["full"] = cli(build)[:2]
        OUT["left"] = listing()
        subprocess.run(["mount", "-o", "remount,size=16m", str(MNT)], check=True)
        OUT["again"] = cli(build)[:2]
        OUT["check"] = cli(["data", "check", str(MNT / "ds")])[0]
    """, "64k")
    rc, err = out["full"]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full at {tmp_path / 'disk' / 'ds'}"), err
    assert out["left"] == []
    assert out["again"][0] == 0, out["again"]
    assert out["check"] == 0


def test_a_run_log_on_a_full_disk_stops_and_the_console_gets_everything(tmp_path):
    out = _on_small_disk(tmp_path, """
        from medtl.experiments.runlog import tee_output
        def fill():
            with open(MNT / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"x" * 4096)
        OUT["fill"] = caught(fill)
        def run():
            with tee_output(MNT / "run" / "run.log", "medtl run-one spec run"):
                print("console line " * 20000, flush=True)
                print("MARKER after the log broke", flush=True)
        OUT["tee"] = caught(run)
    """, "64k")
    assert "No space left on device" in out["fill"]
    assert out["tee"] == "no error"
    assert "MARKER after the log broke" in out["stdout"]   # before: OSError, or a hang


def _limited(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_size_limit_is_reported_like_a_full_disk(tmp_path):
    """RLIMIT_FSIZE needs no privileges: the writers meet EFBIG where a tmpfs cannot be
    mounted."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np
        from medtl import io
        from medtl.datasets.hdf5_writer import Hdf5Writer
        from medtl.errors import DiskFullError
        root = Path(sys.argv[1])
        try:
            io.write_text(root / "big.txt", "x" * (1 << 20))
        except DiskFullError as exc:
            print("TEXT", exc)
        try:
            w = Hdf5Writer(root / "h5", "train", 50, (3, 64, 64))
            for r in range(50):
                w.put(r, np.ones((3, 64, 64)), 0)
            w.close()
        except DiskFullError as exc:
            print("HDF5", exc)
        print("LEFT", sorted(p.name for p in root.iterdir()))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, preexec_fn=lambda: _limited(256 << 10), timeout=300,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(ln.split(" ", 1) for ln in done.stdout.splitlines())
    assert lines["TEXT"].startswith(f"file size limit (ulimit -f) reached at {tmp_path}/big.txt")
    assert lines["HDF5"].startswith("file size limit (ulimit -f) reached at "
                                    f"{tmp_path / 'h5'}/train_000.h5")
    assert lines["LEFT"] == "['h5']"   # the writer's own folder; big.txt left no temporary


@pytest.mark.slow
def test_a_snapshot_that_cannot_fit_stops_with_one_line_not_a_caffe_abort(tmp_path, caffe):
    """Caffe aborts the process when it cannot write a snapshot; the driver checks first."""
    data = tmp_path / "data"
    data.mkdir()
    out = _on_small_disk(tmp_path, f"""
        from medtl.datasets.lmdb_writer import write_lmdb
        from medtl.nets.cifarnet import cifarnet
        from medtl.nets.variants import DataSpec, train_net, val_net
        from medtl.prototxt import write_text
        from medtl.solver import solver_param
        from medtl.synthetic import blob_images
        from medtl.train.driver import TrainSpec, train
        data = Path({str(data)!r})
        images, labels = blob_images(40, 32, seed=1)
        write_lmdb(data / "db", ((i, images[i], int(labels[i])) for i in range(40)))
        spec = DataSpec(str(data / "db"), 10, mean_value=(110.0, 110.0, 110.0))
        tr = write_text(data / "train.prototxt", train_net(cifarnet, 2, spec, "C"))
        va = write_text(data / "val.prototxt", val_net(cifarnet, 2, spec, "C"))
        solver = write_text(data / "solver.prototxt", solver_param(
            train_net=tr, test_net=va, test_iter=4, test_interval=4, base_lr=0.01,
            lr_policy="fixed", max_iter=8, snapshot_prefix=data / "unused", random_seed=1))
        OUT["error"] = caught(lambda: train(TrainSpec(
            solver=solver, run_dir=MNT / "run", iters_per_epoch=4, max_epochs=2,
            val_records=40, selection="min_val_loss", progress=False)))
        OUT["files"] = listing()
    """, size="200k")
    assert out["rc"] == 0, out["stdout"][-2000:]
    assert out["error"].startswith("DiskFullError: disk full at")
    assert not any(name.endswith((".caffemodel", ".solverstate")) for name in out["files"])
