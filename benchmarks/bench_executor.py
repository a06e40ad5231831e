#!/usr/bin/env python3
"""The Dask executor against itself and against the old runner (not a test: prints figures).

    .venv/bin/python benchmarks/bench_executor.py [--epochs 30] [--baseline CHECKOUT]

A 6-run spec (CifarNet-RI on the kit's lymph-node phantoms, 6 seeds) is run by `medtl run`
as a user runs it, each batch in its own results folder sharing one prepared dataset:

1. one local worker, then two (each run with one BLAS thread, so the work per run is the
   same): the speed-up from 1 to 2 workers (target >= 1.7 on 2 cores);
2. with --baseline CHECKOUT (a checkout of the kit before the executor, e.g.
   `git worktree add /tmp/old e3925ba`): that kit's `--parallel 1` runner, whose one run
   at a time uses every core through BLAS, for the wall time of the same spec;
3. two workers again, one of them killed (SIGKILL) once its run has finished an epoch: the
   batch must finish and every run's metrics and selected weights equal those of batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SEEDS = [1, 2, 3, 4, 5, 6]


def _spec(folder: Path, name: str, epochs: int) -> Path:
    spec = {
        "paper": "shin2016", "study": "ln_mediastinum", "title": f"executor benchmark {name}",
        "dataset": {"builder": "shin_ln", "source": "synthetic",
                    "phantom": {"patients": 6, "seed": 3, "n_false": 20},
                    "options": {"region": "med", "seed": 3, "folds": 2,
                                "train_views_per_candidate": 6, "val_views_per_candidate": 2,
                                "test_views_per_candidate": 2, "val_fraction": 0.5}},
        "configurations": ["cifarnet_ri"], "folds": [1], "seeds": SEEDS,
        "training": {"max_epochs": epochs},
        "published": str(REPO / "experiments/shin2016/published.yaml"),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _env(results: Path, python_dir: Path | None = None, blas: int | None = None) -> dict:
    env = {**os.environ, "MEDTL_RESULTS": str(results)}
    if python_dir is not None:
        env["PYTHONPATH"] = str(python_dir)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(key, None)
        if blas is not None:
            env[key] = str(blas)
    return env


def _batch(spec: Path, results: Path, *args: str, env: dict | None = None,
           during=None) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "medtl", "run", str(spec), "--no-progress",
                             *args], env=env or _env(results), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if during is not None:
        during()
    out = proc.communicate()[0]
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{spec.name}: medtl run failed:\n{out}")
    return took


def _runs(results: Path, name: str) -> Path:
    return results / "shin2016" / name / "runs"


def _outputs(results: Path, name: str) -> dict[str, tuple]:
    out = {}
    for run in sorted(_runs(results, name).iterdir()):
        if run.is_dir():
            metrics = json.loads((run / "metrics.json").read_text())
            digest = json.loads((run / "manifest.json").read_text())["selected_weights_digest"]
            out[run.name] = (json.dumps(metrics, sort_keys=True), digest)
    return out


def _killer(results: Path, name: str, spec: Path):
    """Kill the Dask worker of the first run to finish an epoch (returns its pid)."""
    killed: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not killed:
            for trace in _runs(results, name).glob("*/trace.csv"):
                if len(trace.read_text().splitlines()) > 1:
                    run_id = trace.parent.name
                    found = subprocess.run(["pgrep", "-f", f"run-one {spec} {run_id}"],
                                           capture_output=True, text=True).stdout.split()
                    if found:
                        stat = Path(f"/proc/{found[0]}/stat").read_text()
                        worker = int(stat.split(") ")[1].split()[1])
                        os.kill(worker, signal.SIGKILL)
                        killed.append(worker)
                        print(f"  killed the worker (pid {worker}) of {run_id} after epoch 1")
                        return
            time.sleep(0.2)

    return kill, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--baseline", type=Path, help="a checkout of the kit before the "
                        "executor, for the old `--parallel 1` runner")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medtl-bench-exec-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = folder / "results"
        specs = {name: _spec(folder, name, args.epochs)
                 for name in ("one", "two", "old", "killed")}
        from medtl.experiments.plan import load_plan

        os.environ["MEDTL_RESULTS"] = str(results)
        load_plan(specs["one"]).study.prepare(progress=False)    # shared by every batch
        print(f"6 runs of CifarNet-RI, {args.epochs} epochs each; {os.cpu_count()} cores")
        one = _batch(specs["one"], results, "--workers", "1", env=_env(results, blas=1))
        print(f"  1 worker  (1 BLAS thread per run): {one:7.1f} s")
        two = _batch(specs["two"], results, "--workers", "2", env=_env(results, blas=1))
        print(f"  2 workers (1 BLAS thread per run): {two:7.1f} s   speed-up {one / two:.2f}x")
        if args.baseline is not None:
            old = _batch(specs["old"], results, "--parallel", "1",
                         env=_env(results, args.baseline / "python"))
            print(f"  old runner --parallel 1 (BLAS on every core): {old:7.1f} s   "
                  f"(old / 2 workers: {old / two:.2f})")
        kill, killed = _killer(results, "killed", specs["killed"])
        hit = _batch(specs["killed"], results, "--workers", "2", env=_env(results, blas=1),
                     during=kill)
        base, hit_out = _outputs(results, "one"), _outputs(results, "killed")
        differ = sorted(k for k in base if hit_out.get(k) != base[k])
        same = not differ
        if _outputs(results, "two") != base:
            print("  note: the undisturbed 2-worker batch differs from the 1-worker batch")
        resumed = sum("resuming after epoch" in p.read_text()
                      for p in _runs(results, "killed").glob("*/run.log"))
        print(f"  2 workers, one killed: {hit:7.1f} s; {len(_outputs(results, 'killed'))} of "
              f"6 runs finished, {resumed} resumed from a snapshot; metrics and selected "
              f"weights {'identical to' if same else 'DIFFERENT from'} the undisturbed batch"
              + (f" ({', '.join(differ)})" if differ else "")
              + ("" if killed else " (no worker was killed: the runs were too short)"))


if __name__ == "__main__":
    main()
