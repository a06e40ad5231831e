"""`medtl` command line (also `python -m medtl`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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

    if args.check:
        drift = generate.canonical_drift()
        for rel in drift:
            print(f"drift: {rel}")
        print(f"{len(drift)} canonical file(s) differ from the generators"
              + ("; run `medtl generate`" if drift else ""))
        return 1 if drift else 0
    changed = generate.write_canonical(paper=args.paper)
    for path in changed:
        print(f"wrote {path.relative_to(generate.REPO)}")
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


def _epochs_arg(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 0,10,20, got {text!r}") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from medtl import inspect_net

    try:
        found = [inspect_net.inspect(path, weights=args.weights, train_size=args.train_size,
                                     epochs=args.epochs, input_shape=args.input_shape)
                 for path in args.paths]
    except inspect_net.InspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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


def _cmd_weights(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from medtl import surgery, zoo

    try:
        if args.action == "download":
            path = zoo.download_weights(args.model, Path(args.dest))
            print(f"{path} (sha1 verified)")
        elif args.action == "verify":
            print(f"{args.file}: sha1 {zoo.verify_weights(args.model, Path(args.file))}")
        else:
            report = surgery.transplant(
                Path(args.source_def), Path(args.source_weights), Path(args.target_def),
                Path(args.dest), fresh=tuple(args.fresh), drop=tuple(args.drop),
                allow_partial=args.allow_partial, seed=args.seed)
            print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    except (zoo.ZooError, surgery.SurgeryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from medtl.config import ConfigError
    from medtl.experiments import runner, spec

    try:
        if args.list:
            for plan in spec.expand(spec.load_experiment(args.spec)):
                state = "finished" if (plan.run_dir / runner.FINISHED).is_file() else "to run"
                print(f"{plan.run_id}  {state}  {plan.run_dir}")
            return 0
        status = runner.run_experiment(args.spec, parallel=args.parallel,
                                       progress=not args.no_progress)
    except (ConfigError, FileNotFoundError, runner.RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [k for k, v in status.items() if v.startswith("failed")]
    for run_id in failed:
        print(f"failed: {run_id}: {status[run_id]}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run_one(args: argparse.Namespace) -> int:
    from medtl.experiments import runner

    plan = runner.find_plan(args.spec, args.run_id)
    metrics = runner.run_one(plan, progress=not args.no_progress)
    print(f"{plan.run_id}: selected epoch {metrics['selected_epoch']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from medtl.config import ConfigError
    from medtl.experiments.report import build_report

    try:
        path = build_report(args.spec)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtl", description="MedTL-Caffe: Caffe-era medical transfer-learning studies")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="the default experiment on synthetic lymph-node phantoms "
                               "(the make demo job)").set_defaults(func=_cmd_demo)
    sub.add_parser("info", help="show the Caffe build medtl uses").set_defaults(func=_cmd_info)

    gen = sub.add_parser("generate", help="regenerate the canonical prototxt/ and solvers/")
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
    run.add_argument("--parallel", type=int, help="runs at a time (default: the spec's)")
    run.add_argument("--list", action="store_true", help="list the runs and their state")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)
    one = sub.add_parser("run-one", help="carry out one run of a spec (what `run` launches)")
    one.add_argument("spec", type=Path)
    one.add_argument("run_id")
    one.add_argument("--no-progress", action="store_true")
    one.set_defaults(func=_cmd_run_one)
    rep = sub.add_parser("report", help="write results/<paper>/<study>/REPORT.md")
    rep.add_argument("spec", type=Path)
    rep.set_defaults(func=_cmd_report)

    from medtl.datasets.cli import register as register_data

    register_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "paths", None) is not None and len(args.paths) > 2:
        parser.error("inspect takes one prototxt, or two to compare")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
