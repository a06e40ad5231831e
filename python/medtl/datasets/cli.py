"""`medtl data ...`: build, check and fake the Shin 2016 datasets.

    medtl data check PATH
    medtl data ln --root TCIA_ROOT --out DIR [--config FILE.yaml] [--set key=value ...]
    medtl data ild --root ILD_ROOT --out DIR [--config FILE.yaml] [--set key=value ...]
    medtl data phantoms ln --out DIR [--patients N]
    medtl data phantoms ild --out DIR [--patients N]

`register(subparsers)` adds the group to the `medtl` parser; `main(argv)` runs it alone (the
data_prep/ scripts use it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from medtl import config as cfgmod


# Errors that are the user's input, reported in one line without a traceback.
def _input_errors() -> tuple[type[Exception], ...]:
    from medtl.datasets.atomic import OutputExistsError
    from medtl.datasets.check import CheckError
    from medtl.datasets.folds import FoldError
    from medtl.datasets.formats.dicom import DicomError
    from medtl.datasets.manifest import ManifestError
    from medtl.studies.shin2016.ild.reader import IldDataError
    from medtl.studies.shin2016.ln.tcia import LnDataError

    return (cfgmod.ConfigError, DicomError, FoldError, IldDataError, LnDataError,
            ManifestError, CheckError, OutputExistsError)


def guarded(fn: Callable[[argparse.Namespace], int],
            errors: Callable[[], tuple[type[Exception], ...]] = _input_errors
            ) -> Callable[[argparse.Namespace], int]:
    """`fn` with the input `errors` reported in one line and exit code 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return run


def _cmd_check(args: argparse.Namespace) -> int:
    from medtl.datasets.check import check_dataset, format_report

    report = check_dataset(Path(args.path), batch=args.batch)
    print(format_report(report))
    return 0 if report.ok else 1


def _build(kind: str, args: argparse.Namespace) -> int:
    if kind == "ln":
        from medtl.studies.shin2016.ln.dataset import LnConfig as Config
        from medtl.studies.shin2016.ln.dataset import build
    else:
        from medtl.studies.shin2016.ild.dataset import IldConfig as Config
        from medtl.studies.shin2016.ild.dataset import build
    if args.show_config:
        print(cfgmod.describe(Config))
        return 0
    if args.root is None or args.out is None:
        print("error: --root and --out are required", file=sys.stderr)
        return 2
    cfg = cfgmod.load(Config, args.config, cfgmod.parse_overrides(args.set))
    dest = build(Path(args.root), Path(args.out), cfg, progress=not args.no_progress)
    print(f"dataset written to {dest}; check it with: medtl data check {dest}")
    return 0


def _cmd_phantoms_ln(args: argparse.Namespace) -> int:
    from medtl.progress import each
    from medtl.studies.shin2016.ln.phantoms import write_collection

    regions = ("med", "abd") if args.region == "both" else (args.region,)
    write_collection(Path(args.out), patients=args.patients, regions=regions, seed=args.seed,
                     shape=tuple(args.shape), n_false=args.false_candidates,
                     progress=lambda jobs: each(jobs, "LN phantoms"))
    print(f"CT Lymph Nodes phantom collection written to {args.out}")
    return 0


def _cmd_phantoms_ild(args: argparse.Namespace) -> int:
    from medtl.progress import each
    from medtl.studies.shin2016.ild.phantoms import write_collection

    write_collection(Path(args.out), patients=args.patients,
                     slices_per_patient=args.slices, size=args.size, seed=args.seed,
                     progress=lambda n: each(n, "ILD phantoms"))
    print(f"ILD phantom database written to {args.out}")
    return 0


def _build_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--root", help=f"the {what} folder")
    p.add_argument("--out", help="dataset directory to create (must not exist)")
    p.add_argument("--config", type=Path, help="YAML file of configuration keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (YAML value), e.g. --set fov_mm=[30,45]")
    p.add_argument("--show-config", action="store_true",
                   help="list every key with its default and source, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_commands(data: argparse.ArgumentParser) -> None:
    """The `data` subcommands, on an existing parser."""
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda _a: (data.print_help(), 2)[1])

    check = sub.add_parser("check", help="read a dataset back through Caffe's data layers "
                           "and compare it with its manifest")
    check.add_argument("path", type=Path)
    check.add_argument("--batch", type=int, default=100, help="records per Caffe forward")
    check.set_defaults(func=guarded(_cmd_check))

    ln = sub.add_parser("ln", help="Shin 2016 lymph-node views from TCIA CT Lymph Nodes")
    _build_args(ln, "CT Lymph Nodes collection")
    ln.set_defaults(func=guarded(lambda a: _build("ln", a)))

    ild = sub.add_parser("ild", help="Shin 2016 ILD slices or patches from the ILD database")
    _build_args(ild, "ILD database")
    ild.set_defaults(func=guarded(lambda a: _build("ild", a)))

    ph = sub.add_parser("phantoms", help="synthetic datasets in the published formats")
    ph_sub = ph.add_subparsers(dest="phantom_kind", metavar="KIND")
    ph.set_defaults(func=lambda _a: (ph.print_help(), 2)[1])
    pln = ph_sub.add_parser("ln", help="CT Lymph Nodes layout (DICOM + TCIA text files)")
    pln.add_argument("--out", required=True, type=Path)
    pln.add_argument("--patients", type=int, default=6, help="patients per region")
    pln.add_argument("--region", choices=("med", "abd", "both"), default="both")
    pln.add_argument("--shape", type=int, nargs=3, default=(60, 96, 96),
                     metavar=("SLICES", "ROWS", "COLS"))
    pln.add_argument("--false-candidates", type=int, default=40)
    pln.add_argument("--seed", type=int, default=0)
    pln.set_defaults(func=guarded(_cmd_phantoms_ln))
    pild = ph_sub.add_parser("ild", help="ILD database layout (DICOM slices + ROI files)")
    pild.add_argument("--out", required=True, type=Path)
    pild.add_argument("--patients", type=int, default=10)
    pild.add_argument("--slices", type=int, default=4, help="slices per patient")
    pild.add_argument("--size", type=int, default=512, help="slice side in pixels")
    pild.add_argument("--seed", type=int, default=0)
    pild.set_defaults(func=guarded(_cmd_phantoms_ild))

    from medtl.datasets.cli_extra import add_commands as add_extra_commands

    add_extra_commands(sub, phantoms=ph_sub)


def register(subparsers) -> None:
    """Add `medtl data ...` to the `medtl` parser's subparsers."""
    data = subparsers.add_parser("data", help="build, check and fake the study datasets")
    add_commands(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medtl data", description=__doc__.split("\n")[0])
    add_commands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
