"""Workers from a batch system for `medtl run --scheduler`, through dask-jobqueue.

`medtl cluster slurm --config scripts/cluster/slurm_gpu.yaml --jobs 4` starts a Dask
scheduler here and submits 4 worker jobs; `medtl run SPEC --scheduler ADDRESS` then runs the
spec on them. PBS, SGE and LSF work the same way (`medtl cluster pbs|sge|lsf`). The config file
holds dask-jobqueue's own options for that system (queue, cores, memory, walltime,
job_extra_directives, job_script_prologue, python, ...); the kit adds what makes each job one
medtl slot: one worker process with one thread (a run is one task at a time), the `slot`
resource the batch asks for, and, with `gpus_per_job`, the `GPU` resource and
MEDTL_WORKER_GPU=0 (the batch system's CUDA_VISIBLE_DEVICES makes the job's GPU device 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medtl.errors import ConfigError, InputError
from medtl.experiments.executor import WORKER_GPU_ENV

SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster",
           "lsf": "LSFCluster"}
KIT_KEYS = ("gpus_per_job",)


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping of dask-jobqueue options (InputError naming the file otherwise)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the cluster config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of dask-jobqueue options")
    return data


def worker_options(config: dict[str, Any]) -> dict[str, Any]:
    """dask-jobqueue options for medtl workers: the user's, plus one worker of one thread
    per job with the `slot` (and `GPU`) resource, and the GPU pinning."""
    options = {k: v for k, v in config.items() if k not in KIT_KEYS}
    gpus = int(config.get("gpus_per_job", 0))
    resources = "slot=1" + (f",GPU={gpus}" if gpus else "")   # dask-worker reads commas
    options["processes"] = 1
    options["worker_extra_args"] = [*options.get("worker_extra_args", []),
                                    "--resources", resources]
    if gpus:
        options["job_script_prologue"] = [*options.get("job_script_prologue", []),
                                          f"export {WORKER_GPU_ENV}=0"]
    return options


def job_cluster(system: str, config: dict[str, Any], *, dashboard: str | None = ":8787"):
    """The dask-jobqueue cluster for `system` (slurm, pbs, sge, lsf); no job is submitted
    until it is scaled."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown batch system {system!r}; one of {', '.join(SYSTEMS)}")
    import dask_jobqueue

    cls = getattr(dask_jobqueue, SYSTEMS[system])
    try:
        return cls(**worker_options(config),
                   scheduler_options={"dashboard_address": dashboard})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{system} cluster config: {exc}") from None


def job_script(system: str, config: dict[str, Any]) -> str:
    """The job script one worker job would be submitted with (nothing is submitted)."""
    cluster = job_cluster(system, config, dashboard=None)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
