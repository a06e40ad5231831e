"""`medtl data kidney`, `medtl data haar` and `medtl data phantoms kidney`.

    medtl data kidney --manifest CSV --out DIR [--config Y] [--set k=v]
    medtl data haar --source LMDB --out F.h5 [--features 2000] [--window 24]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medtl.commands import build_from_args, config_args, data_commands
from medtl.errors import ConfigError


def _cmd_kidney(args: argparse.Namespace) -> int:
    from medtl.studies.ravishankar2016.dataset import KidneyConfig, build

    return build_from_args(args, KidneyConfig, "manifest", build)


def _cmd_haar(args: argparse.Namespace) -> int:
    from medtl.studies.ravishankar2016.haar import HaarBank, lmdb_features

    if args.features < 1:
        raise ConfigError(f"--features {args.features}: must be at least 1")
    if args.window < 3:
        raise ConfigError(f"--window {args.window}: must be at least 3")
    out = lmdb_features(args.source, args.out, HaarBank(args.window, args.features),
                        progress=not args.no_progress)
    print(f"Haar features written to {out}")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from medtl.studies.ravishankar2016.phantoms import write_kidney_collection

    write_kidney_collection(args.out, subjects=args.groups, images_per_subject=args.per_group,
                            seed=args.seed)
    print(f"kidney phantom collection written to {args.out} (manifest: "
          f"{args.out / 'candidates.csv'})")
    return 0


@data_commands("ravishankar2016")
def add_commands(data, phantoms) -> None:
    k = data.add_parser("kidney", help="Ravishankar 2016 kidney / background patches and Haar "
                        "features from a candidate manifest")
    k.add_argument("--manifest", type=Path, help="candidate manifest CSV")
    config_args(k, "haar_features=500")
    k.set_defaults(func=_cmd_kidney)

    h = data.add_parser("haar", help="Haar-like features of an LMDB's records")
    h.add_argument("--source", type=Path, required=True, help="an LMDB directory")
    h.add_argument("--out", type=Path, required=True, help="output .h5")
    h.add_argument("--features", type=int, default=2000, help="features per record")
    h.add_argument("--window", type=int, default=24, help="window side (pixels)")
    h.add_argument("--no-progress", action="store_true")
    h.set_defaults(func=_cmd_haar)

    p = phantoms.add_parser("kidney", help="kidney ultrasound images with kidney boxes")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--groups", type=int, default=6, help="number of subjects")
    p.add_argument("--per-group", type=int, default=3, help="images per subject")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_phantom)
