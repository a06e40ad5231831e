"""The finished runs a report is made of, read once and verified.

A report is only made of runs it can vouch for: a stale run (made under other settings) or a
tampered one (its selected weights or predictions are not what the run recorded) stops the
report with the reason; failed runs are listed, not scored.
"""

from __future__ import annotations

import json

from medtl import io
from medtl.errors import RunError
from medtl.experiments.plan import FINISHED, Plan, State
from medtl.experiments.report.context import FinishedRun
from medtl.surgery import weights_digest

MANIFEST = "manifest.json"


def verify(run: FinishedRun) -> None:
    """The run's selected weights and predictions are those it recorded when it finished."""
    manifest = json.loads((run.run_dir / MANIFEST).read_text())
    checks = (("selected.caffemodel", "selected_weights_digest", weights_digest),
              ("predictions.csv", "predictions_sha256", io.sha256_file))
    for name, key, digest in checks:
        recorded = manifest.get(key)
        path = run.run_dir / name
        if recorded is None:
            continue
        if not path.is_file() or digest(path) != recorded:
            raise RunError(f"{path}: differs from what the run recorded when it finished "
                           f"({key} in {MANIFEST}); the run's results cannot be trusted: move "
                           "the run away and run it again")


def collect(plan: Plan) -> tuple[list[FinishedRun], list[tuple[str, str]]]:
    """(finished and verified runs, failed runs with their reasons), in the spec's order."""
    finished, failed, stale = [], [], []
    for run in plan.runs:
        state = plan.state(run)
        if state.state is State.STALE:
            stale.append(f"{run.run_id} ({state.detail})")
        elif state.state is State.FAILED:
            failed.append((run.run_id, state.detail))
        elif state.state is State.FINISHED:
            record = json.loads((run.run_dir / "run.json").read_text())
            done = FinishedRun(run.run_id, run.config.id, run.config.label or run.config.id,
                               run.fold, run.fraction, run.seed, run.run_dir, record,
                               json.loads((run.run_dir / FINISHED).read_text()))
            verify(done)
            finished.append(done)
    if stale:
        raise RunError(f"{plan.experiment.path}: {len(stale)} stale run(s) would be mixed into "
                       f"the report: {'; '.join(stale[:3])}"
                       + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
                       + f"; run `medtl run {plan.experiment.path} --rerun-stale` first")
    return finished, failed
