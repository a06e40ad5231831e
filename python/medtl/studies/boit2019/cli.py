"""`medtl data chestxray14` and `medtl data phantoms chestxray14`.

    medtl data chestxray14 --root DIR --out DIR [--config Y] [--set k=v]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medtl.commands import build_from_args, config_args, data_commands


def _build_and_show(root: Path, out: Path, cfg, *, progress: bool) -> Path:
    from medtl.datasets.manifest import read_manifest
    from medtl.studies.boit2019.dataset import build, format_balance

    dest = build(root, out, cfg, progress=progress)
    print(format_balance(read_manifest(dest)["counts"]))
    return dest


def _cmd_chestxray14(args: argparse.Namespace) -> int:
    from medtl.studies.boit2019.dataset import ChestXray14Config

    return build_from_args(args, ChestXray14Config, "root", _build_and_show)


def _cmd_phantom(args: argparse.Namespace) -> int:
    from medtl.studies.boit2019.phantoms import write_chestxray14_collection

    write_chestxray14_collection(args.out, patients=args.groups, size=args.size,
                                 revision=args.revision, seed=args.seed)
    print(f"chestxray14 phantom collection written to {args.out}")
    return 0


@data_commands("boit2019")
def add_commands(data, phantoms) -> None:
    cx = data.add_parser("chestxray14", help="Boit 2019 ChestX-ray14 sets for DenseNet-121 "
                         "(binary: 8-bit LMDB; 14-label: HDF5)")
    cx.add_argument("--root", type=Path, help="the ChestX-ray14 folder (Data_Entry, the lists "
                    "if any, the PNGs in any sub-folder)")
    config_args(cx, "task=multilabel")
    cx.set_defaults(func=_cmd_chestxray14)

    p = phantoms.add_parser("chestxray14", help="ChestX-ray14 layout: PNGs, Data_Entry, BBox "
                            "list, split lists")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--groups", type=int, default=40, help="number of patients")
    p.add_argument("--size", type=int, default=256, help="PNG side (real: 1024)")
    p.add_argument("--revision", choices=("2017", "2020"), default="2017",
                   help="write Data_Entry_2017.csv or the 2020 revision's file")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_phantom)
