"""What a batch shows while it runs: one bar over the runs (done / running / failed, ETA)
and, under it, a bar per running run with its epochs. Both are read from the results folder
(a run is running while it is claimed; its epochs are the rows of its trace.csv), so they
show the same on a local cluster as on a remote one. Without a terminal (or with
--no-progress) only the start and end of each run are printed, one line each."""

from __future__ import annotations

import sys

from tqdm import tqdm

from medtl.experiments.plan import Plan, RunPlan, with_overrides
from medtl.locks import holder

TRACE = "trace.csv"


def epochs_done(run: RunPlan) -> int:
    """Epochs in the run's trace (its header line not counted)."""
    try:
        with open(run.run_dir / TRACE, "rb") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return 0


class BatchProgress:
    def __init__(self, plan: Plan, runs: list[RunPlan], *, enabled: bool = True) -> None:
        self.runs = {run.run_id: run for run in runs}
        self.epochs = {run.run_id: with_overrides(run.config, plan.experiment)
                       .solver.max_epochs.value for run in runs}
        self.bars = enabled and sys.stderr.isatty()
        self.total = tqdm(total=len(runs), desc="runs", unit="run", file=sys.stderr,
                          dynamic_ncols=True, disable=not self.bars)
        self.running: dict[str, tqdm] = {}
        self.started: set[str] = set()
        self.failed = 0

    def _say(self, line: str) -> None:
        if self.bars:
            tqdm.write(line, file=sys.stderr)
        else:
            print(line, flush=True)

    def tick(self) -> None:
        """Look at every unfinished run: newly claimed ones start a bar, epochs advance."""
        for run_id, run in self.runs.items():
            if run_id in self.started:
                self._advance(run_id)
            elif holder(run.run_dir) is not None:
                self.started.add(run_id)
                self._say(f"  start {run_id}")
                if self.bars:
                    self.running[run_id] = tqdm(
                        total=self.epochs[run_id], desc=f"  {run_id}", unit="epoch",
                        file=sys.stderr, dynamic_ncols=True, leave=False,
                        position=len(self.running) + 1)
                self._advance(run_id)
        self._postfix()

    def _advance(self, run_id: str) -> None:
        bar = self.running.get(run_id)
        if bar is not None:
            bar.update(epochs_done(self.runs[run_id]) - bar.n)

    def _postfix(self) -> None:
        self.total.set_postfix_str(f"running {len(self.running)}, failed {self.failed}")

    def done(self, run_id: str, outcome: str) -> None:
        bar = self.running.pop(run_id, None)
        if bar is not None:
            bar.close()
        self.started.discard(run_id)
        self.runs.pop(run_id, None)
        ok, failed = outcome == "done", outcome.startswith("failed")
        self.failed += failed
        verb = "done " if ok else "FAILED" if failed else "NOT DONE"
        self._say(f"  {verb} {run_id}" + ("" if ok else f": {outcome}"))
        self.total.update(1)
        self._postfix()

    def close(self) -> None:
        for bar in self.running.values():
            bar.close()
        self.total.close()
