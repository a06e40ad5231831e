"""`medtl data ln|ild` and `medtl data phantoms ln|ild`: Shin 2016's datasets.

    medtl data ln --root TCIA_ROOT --out DIR [--config FILE.yaml] [--set key=value ...]
    medtl data ild --root ILD_ROOT --out DIR [--config FILE.yaml] [--set key=value ...]
    medtl data phantoms ln --out DIR [--patients N]
    medtl data phantoms ild --out DIR [--patients N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medtl.commands import build_from_args, config_args, data_commands
from medtl.progress import each


def _cmd_ln(args: argparse.Namespace) -> int:
    from medtl.studies.shin2016.ln.dataset import LnConfig, build

    return build_from_args(args, LnConfig, "root", build)


def _cmd_ild(args: argparse.Namespace) -> int:
    from medtl.studies.shin2016.ild.dataset import IldConfig, build

    return build_from_args(args, IldConfig, "root", build)


def _cmd_phantoms_ln(args: argparse.Namespace) -> int:
    from medtl.studies.shin2016.ln.phantoms import write_collection

    regions = ("med", "abd") if args.region == "both" else (args.region,)
    write_collection(Path(args.out), patients=args.patients, regions=regions, seed=args.seed,
                     shape=tuple(args.shape), n_false=args.false_candidates,
                     progress=lambda jobs: each(jobs, "LN phantoms"))
    print(f"CT Lymph Nodes phantom collection written to {args.out}")
    return 0


def _cmd_phantoms_ild(args: argparse.Namespace) -> int:
    from medtl.studies.shin2016.ild.phantoms import write_collection

    write_collection(Path(args.out), patients=args.patients,
                     slices_per_patient=args.slices, size=args.size, seed=args.seed,
                     progress=lambda n: each(n, "ILD phantoms"))
    print(f"ILD phantom database written to {args.out}")
    return 0


@data_commands("shin2016")
def add_commands(data, phantoms) -> None:
    ln = data.add_parser("ln", help="Shin 2016 lymph-node views from TCIA CT Lymph Nodes")
    ln.add_argument("--root", type=Path, help="the CT Lymph Nodes collection folder")
    config_args(ln, "fov_mm=[30,45]")
    ln.set_defaults(func=_cmd_ln)

    ild = data.add_parser("ild", help="Shin 2016 ILD slices or patches from the ILD database")
    ild.add_argument("--root", type=Path, help="the ILD database folder")
    config_args(ild, "level=patch")
    ild.set_defaults(func=_cmd_ild)

    pln = phantoms.add_parser("ln", help="CT Lymph Nodes layout (DICOM + TCIA text files)")
    pln.add_argument("--out", required=True, type=Path)
    pln.add_argument("--patients", type=int, default=6, help="patients per region")
    pln.add_argument("--region", choices=("med", "abd", "both"), default="both")
    pln.add_argument("--shape", type=int, nargs=3, default=(60, 96, 96),
                     metavar=("SLICES", "ROWS", "COLS"))
    pln.add_argument("--false-candidates", type=int, default=40)
    pln.add_argument("--seed", type=int, default=0)
    pln.set_defaults(func=_cmd_phantoms_ln)
    pild = phantoms.add_parser("ild", help="ILD database layout (DICOM slices + ROI files)")
    pild.add_argument("--out", required=True, type=Path)
    pild.add_argument("--patients", type=int, default=10)
    pild.add_argument("--slices", type=int, default=4, help="slices per patient")
    pild.add_argument("--size", type=int, default=512, help="slice side in pixels")
    pild.add_argument("--seed", type=int, default=0)
    pild.set_defaults(func=_cmd_phantoms_ild)
