"""`medtl` command line (also `python -m medtl`): one parser for every command.

Each command parses its arguments and calls one function of the kit. A `MedtlError` (a bad
spec, file or run) becomes one line on stderr and exit status 2; anything else is a bug in
the kit and keeps its traceback. The studies add their `medtl data ...` commands through
`medtl.commands.DATA_COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from medtl.commands import DATA_COMMANDS
from medtl.errors import InputError, MedtlError, MissingFileError, one_line

# ------------------------------------------------------------------ core commands

def _cmd_demo(_args: argparse.Namespace) -> int:
    from medtl import demo

    return demo.main()


def _cmd_info(_args: argparse.Namespace) -> int:
    from medtl import __version__, caffe_env

    caffe = caffe_env.caffe()
    print(f"medtl {__version__}")
    print(f"pycaffe {caffe.__version__} from {caffe_env.prefix()}")
    print(f"caffe tool {caffe_env.caffe_binary()}")
    for key, value in caffe_env.build_info().items():
        print(f"  {key}: {value}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from medtl import generate
    from medtl.experiments import specdoc
    from medtl.paths import shown

    if args.check:
        drift = generate.canonical_drift()
        if specdoc.reference_drift():
            drift.append(shown(specdoc.REFERENCE))
        for rel in drift:
            print(f"drift: {rel}")
        print(f"{len(drift)} canonical file(s) differ from the generators"
              + ("; run `medtl generate`" if drift else ""))
        return 1 if drift else 0
    changed = generate.write_canonical(paper=args.paper)
    if args.paper is None and specdoc.write_reference():
        changed.append(specdoc.REFERENCE)
    for path in changed:
        print(f"wrote {shown(path)}")
    print(f"{len(changed)} file(s) written or updated")
    return 0


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W integers, got {text!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"expected three positive integers C,H,W, got {text!r}")
    return shape


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _epochs_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 0,10,20, got {text!r}") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from medtl import inspect_net

    found = [inspect_net.inspect(path, weights=args.weights, train_size=args.train_size,
                                 epochs=args.epochs, input_shape=args.input_shape)
             for path in args.paths]
    if len(found) == 2:
        changes = inspect_net.diff(*found)
        if args.json:
            print(json.dumps({"a": args.paths[0], "b": args.paths[1], "differences": changes},
                             indent=2))
        else:
            print(f"A: {args.paths[0]}\nB: {args.paths[1]}")
            print("\n".join(changes) if changes else "no differences")
        return 0
    if args.json:
        print(json.dumps(found[0].to_dict(), indent=2))
    else:
        print(inspect_net.format_inspection(found[0], show_provenance=not args.brief))
    return 0


TRANSPLANT_ADVICE = ("Name the target's renamed layers with --fresh LAYER and the source "
                     "layers left behind with --drop LAYER, or accept the loss with "
                     "--allow-partial.")


def _cmd_weights(args: argparse.Namespace) -> int:
    from medtl import surgery, zoo

    if args.action == "download":
        path = zoo.download_weights(args.model, Path(args.dest))
        print(f"{path} (sha1 verified)")
    elif args.action == "verify":
        print(f"{args.file}: sha1 {zoo.verify_weights(args.model, Path(args.file))}")
    else:
        try:
            report = surgery.transplant(
                Path(args.source_def), Path(args.source_weights), Path(args.target_def),
                Path(args.dest), fresh=tuple(args.fresh), drop=tuple(args.drop),
                allow_partial=args.allow_partial, seed=args.seed)
        except surgery.TransplantError as exc:
            raise exc.advised(TRANSPLANT_ADVICE) from None
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from medtl.experiments import plan as planmod
    from medtl.experiments import runner

    if args.plan:
        from medtl.experiments import costplan, executor

        gpus = executor.gpus_from(args.gpus)
        cost = costplan.cost_plan(planmod.load_plan(args.spec), gpu=gpus[0] if gpus else None)
        print(costplan.format_plan(cost))
        return 0
    if args.list:
        plan = planmod.load_plan(args.spec)
        states = [(run, plan.state(run)) for run in plan.runs]
        counts: dict[str, int] = {}
        for _, state in states:
            counts[state.state.value] = counts.get(state.state.value, 0) + 1
        exp = plan.experiment
        print(f"{exp.spec.paper}/{exp.path.stem}: {len(states)} runs: "
              + ", ".join(f"{n} {s}" for s, n in counts.items()))
        for run, state in states:
            print(f"{run.run_id}  {state}")
        return 0
    resources = runner.Resources(workers=args.workers, gpus=args.gpus,
                                 runs_per_gpu=args.runs_per_gpu, scheduler=args.scheduler)
    status = runner.run_experiment(args.spec, progress=not args.no_progress,
                                   rerun_stale=args.rerun_stale,
                                   retry_failed=args.retry_failed, resources=resources)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    for run_id, outcome in failed.items():
        print(f"{run_id}: {outcome}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run_one(args: argparse.Namespace) -> int:
    from medtl.experiments import runner

    return runner.carry_out(args.spec, args.run_id, progress=not args.no_progress,
                            gpu=args.gpu)


def _cmd_cluster(args: argparse.Namespace) -> int:
    import time

    from medtl.experiments import jobqueue

    config = jobqueue.read_config(args.config)
    if args.print_job_script:
        print(jobqueue.job_script(args.system, config))
        return 0
    cluster = jobqueue.job_cluster(args.system, config)
    cluster.scale(jobs=args.jobs)
    print(f"scheduler {cluster.scheduler_address}; dashboard {cluster.dashboard_link}")
    print(f"{args.jobs} worker job(s) submitted; run a spec on them with\n"
          f"  medtl run SPEC --scheduler {cluster.scheduler_address}\n"
          "Ctrl-C stops the scheduler and cancels the jobs", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.close()
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from medtl.experiments.report.build import build_report
    from medtl.paths import shown

    print(f"wrote {shown(build_report(args.spec))}")
    return 0


# ------------------------------------------------------------------ generic data commands

def _cmd_check(args: argparse.Namespace) -> int:
    from medtl.datasets.check import check_dataset, format_report

    if not args.path.exists():
        raise MissingFileError(f"{args.path}: no such dataset folder")
    if not args.path.is_dir():
        raise InputError(f"{args.path}: not a dataset folder (a medtl dataset is a folder "
                         "with a manifest.json)")
    report = check_dataset(Path(args.path), batch=args.batch)
    print(format_report(report))
    return 0 if report.ok else 1


def _cmd_features(args: argparse.Namespace) -> int:
    from medtl.datasets.features import extract
    from medtl.datasets.integrity import verify_sources

    if args.source.exists():     # a damaged database is named before anything reads it
        for note in verify_sources(args.source, outside=False):
            print(f"note: {note}")
    out = extract(args.deploy, args.weights, args.source, args.out, blob=args.blob,
                  mean_file=args.mean_file, mean_value=tuple(args.mean_value or ()),
                  scale=args.scale, batch=args.batch, gpu=args.gpu,
                  progress=not args.no_progress)
    print(f"{args.blob} features written to {out}")
    return 0


def _help_of(parser: argparse.ArgumentParser):
    return lambda _args: (parser.print_help(), 2)[1]


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="build, check and fake the study datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=_help_of(data))

    check = data_sub.add_parser("check", help="read a dataset back through Caffe's data "
                                "layers and compare it with its manifest")
    check.add_argument("path", type=Path)
    check.add_argument("--batch", type=int, default=100, help="records per Caffe forward")
    check.set_defaults(func=_cmd_check)

    f = data_sub.add_parser("features", help="deep features (e.g. fc7) of a dataset's "
                            "records from a deploy net and caffemodel")
    f.add_argument("--deploy", type=Path, required=True)
    f.add_argument("--weights", type=Path, required=True)
    f.add_argument("--source", type=Path, required=True,
                   help="an LMDB directory or an HDF5 list (.txt)")
    f.add_argument("--out", type=Path, required=True, help="output .h5 or .npz")
    f.add_argument("--blob", default="fc7")
    f.add_argument("--mean-file", type=Path, help="mean .binaryproto (the training set's)")
    f.add_argument("--mean-value", type=float, nargs="+", help="per-channel means (BGR)")
    f.add_argument("--scale", type=float, default=1.0)
    f.add_argument("--batch", type=int, default=50)
    f.add_argument("--gpu", type=int, help="GPU id (CPU when absent)")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_cmd_features)

    phantoms = data_sub.add_parser("phantoms", help="synthetic datasets in the published "
                                   "formats")
    phantom_sub = phantoms.add_subparsers(dest="phantom_kind", metavar="KIND")
    phantoms.set_defaults(func=_help_of(phantoms))
    for _, add in DATA_COMMANDS.items():
        add(data_sub, phantom_sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtl", description="MedTL-Caffe: Caffe-era medical transfer-learning studies")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="the default experiment on synthetic lymph-node phantoms "
                               "(the make demo job)").set_defaults(func=_cmd_demo)
    sub.add_parser("info", help="show the Caffe build medtl uses").set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="regenerate the canonical prototxt/ and solvers/ "
                                          "and the spec reference")
    gen.add_argument("--check", action="store_true",
                     help="only report files that differ from the generators (exit 1 if any)")
    gen.add_argument("--paper", help="only this paper's files (default: all)")
    gen.set_defaults(func=_cmd_generate)

    ins = sub.add_parser("inspect", help="per-layer table of a net or solver; two: differences")
    ins.add_argument("paths", nargs="+", metavar="PROTOTXT",
                     help="a net or solver prototxt; give two to compare them")
    ins.add_argument("--weights", help="a caffemodel: which layers it fills")
    ins.add_argument("--train-size", type=int,
                     help="training-set size, for iterations per epoch (default: the "
                          "solver's recorded nominal size)")
    ins.add_argument("--epochs", type=_epochs_arg, default=(0,),
                     help="epochs at which to show each layer's learning rate, e.g. 0,10,20")
    ins.add_argument("--input-shape", type=_shape_arg,
                     help="C,H,W when the net does not say (no crop, no deploy.prototxt)")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.add_argument("--brief", action="store_true", help="omit the provenance lines")
    ins.set_defaults(func=_cmd_inspect)

    wts = sub.add_parser("weights", help="model-zoo weights: download, verify, transplant")
    wsub = wts.add_subparsers(dest="action", metavar="ACTION", required=True)
    dl = wsub.add_parser("download", help="fetch and sha1-verify a BVLC model-zoo caffemodel")
    dl.add_argument("model", help="bvlc_alexnet, bvlc_reference_caffenet, bvlc_googlenet, "
                                  "VGG_ILSVRC_16_layers")
    dl.add_argument("--dest", default="models", help="folder to save into (default: models/)")
    vf = wsub.add_parser("verify", help="check a caffemodel against the model zoo's sha1")
    vf.add_argument("model")
    vf.add_argument("file")
    tp = wsub.add_parser("transplant", help="copy weights by layer name into another net")
    tp.add_argument("source_def")
    tp.add_argument("source_weights")
    tp.add_argument("target_def")
    tp.add_argument("dest", help="caffemodel to write (never overwritten)")
    tp.add_argument("--fresh", action="append", default=[], metavar="LAYER",
                    help="target layer that keeps its own initialisation (repeatable)")
    tp.add_argument("--drop", action="append", default=[], metavar="LAYER",
                    help="source layer expected not to carry over (repeatable)")
    tp.add_argument("--allow-partial", action="store_true",
                    help="accept mismatched or skipped layers (they are reported)")
    tp.add_argument("--seed", type=int, default=0, help="seed of the fresh layers' fillers")
    tp.add_argument("--json", action="store_true")
    wts.set_defaults(func=_cmd_weights)

    run = sub.add_parser("run", help="run every unfinished run of an experiment spec")
    run.add_argument("spec", type=Path, help="experiments/<paper>/<study>.yaml")
    run.add_argument("--workers", "--parallel", type=_positive, metavar="N",
                     help="runs at a time on the local Dask cluster (default: the spec's "
                          "`parallel`, else one per GPU, else one per core as memory allows)")
    run.add_argument("--gpus", metavar="IDS",
                     help="GPU ids, e.g. 0,1,2,3: one run per GPU at a time, each pinned to "
                          "its device (default: $MEDTL_GPUS, else the spec's training.gpu)")
    run.add_argument("--runs-per-gpu", type=_positive, default=1, metavar="K",
                     help="runs sharing each GPU at a time (small nets on a large GPU)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="join a running Dask cluster (e.g. tcp://host:8786; "
                          "docs/cluster.md) instead of starting a local one")
    run.add_argument("--list", action="store_true",
                     help="validate the spec and list the runs with their state; build nothing")
    run.add_argument("--plan", action="store_true",
                     help="print each run's training images, iterations, time (caffe time, "
                          "cached per device), memory and disk; build nothing")
    run.add_argument("--rerun-stale", action="store_true",
                     help="move runs made under other settings aside (kept under stale/) and "
                          "run them again")
    run.add_argument("--retry-failed", action="store_true",
                     help="run failed runs again (their failure records are kept)")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)
    one = sub.add_parser("run-one", help="carry out one run of a spec (what `run` launches); "
                                         "its output goes to the run's run.log too")
    one.add_argument("spec", type=Path)
    one.add_argument("run_id")
    one.add_argument("--gpu", type=int, metavar="ID",
                     help="the GPU to train on (default: the spec's training.gpu)")
    one.add_argument("--no-progress", action="store_true")
    one.set_defaults(func=_cmd_run_one)
    clu = sub.add_parser("cluster", help="Dask workers from a batch system (dask-jobqueue) "
                                         "for `medtl run --scheduler`")
    clu.add_argument("system", choices=["slurm", "pbs", "sge", "lsf"])
    clu.add_argument("--config", type=Path, required=True,
                     help="dask-jobqueue options, e.g. scripts/cluster/slurm_gpu.yaml")
    clu.add_argument("--jobs", type=_positive, default=1, help="worker jobs to submit")
    clu.add_argument("--print-job-script", action="store_true",
                     help="print the job script of one worker and submit nothing")
    clu.set_defaults(func=_cmd_cluster)
    rep = sub.add_parser("report", help="write results/<paper>/<study>/REPORT.md")
    rep.add_argument("spec", type=Path)
    rep.set_defaults(func=_cmd_report)

    _add_data(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (`medtl inspect ... | head`): not an error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "paths", None) is not None and len(args.paths) > 2:
        parser.error("inspect takes one prototxt, or two to compare")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except MedtlError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def data_entry(*words: str, commands: tuple[str, ...] = ()) -> None:
    """A data_prep/ script: `medtl data WORDS...` with the script's own arguments, or
    `medtl data COMMAND ...` when its first argument is one of `commands`."""
    argv = sys.argv[1:]
    sys.exit(main(["data", *argv] if argv[:1] and argv[0] in commands
                  else ["data", *words, *argv]))


if __name__ == "__main__":
    sys.exit(main())
