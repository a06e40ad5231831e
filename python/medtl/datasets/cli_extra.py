"""`medtl data ...` commands for Tajbakhsh's four applications, Ravishankar's kidney study
and ChestX-ray14, plus the feature extractors:

    medtl data tajbakhsh {polyp,pe,frames,imt} --manifest CSV --out DIR [--config Y] [--set k=v]
    medtl data kidney --manifest CSV --out DIR [--config Y] [--set k=v]
    medtl data chestxray14 --root DIR --out DIR [--config Y] [--set k=v]
    medtl data features --deploy P --weights W --source DB --out F.h5 [--blob fc7] ...
    medtl data haar --source LMDB --out F.h5 [--features 2000] [--window 24]
    medtl data phantoms {polyp,pe,frames,imt,kidney,chestxray14} --out DIR [...]

Every builder takes `--show-config` (each key, its default and its source). `add_commands`
hangs these on the `medtl data` parser; `main(argv)` runs them alone (data_prep/ scripts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medtl import config as cfgmod
from medtl.datasets.cli import guarded


def _input_errors() -> tuple[type[Exception], ...]:
    from medtl.datasets.atomic import OutputExistsError
    from medtl.datasets.features import FeatureError
    from medtl.datasets.formats.candidates import CandidateError
    from medtl.datasets.formats.dicom import DicomError
    from medtl.datasets.formats.images import ImageError
    from medtl.datasets.manifest import ManifestError
    from medtl.datasets.splits import SplitError
    from medtl.studies.boit2019.reader import ChestXray14Error

    return (cfgmod.ConfigError, CandidateError, ImageError, ChestXray14Error, DicomError,
            FeatureError, ManifestError, SplitError, OutputExistsError, FileNotFoundError,
            FileExistsError)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="dataset directory to create (must not exist)")
    p.add_argument("--config", type=Path, help="YAML file of configuration keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (YAML value), e.g. --set train_patches=2000")
    p.add_argument("--show-config", action="store_true",
                   help="list every key with its default and source, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load(cls, args: argparse.Namespace):
    return cfgmod.load(cls, args.config, cfgmod.parse_overrides(args.set))


def _needs(args: argparse.Namespace, *names: str) -> bool:
    missing = [n for n in names if getattr(args, n) is None]
    if missing:
        print(f"error: --{missing[0]} is required", file=sys.stderr)
    return not missing


def _cmd_tajbakhsh(args: argparse.Namespace) -> int:
    from medtl.studies.tajbakhsh2016.applications import APPLICATIONS, build

    cls = APPLICATIONS[args.application][0]
    if args.show_config:
        print(cfgmod.describe(cls))
        return 0
    if not _needs(args, "manifest", "out"):
        return 2
    dest = build(args.application, args.manifest, args.out, _load(cls, args),
                 progress=not args.no_progress)
    print(f"dataset written to {dest}; check it with: medtl data check {dest}")
    return 0


def _cmd_kidney(args: argparse.Namespace) -> int:
    from medtl.studies.ravishankar2016.dataset import KidneyConfig, build

    if args.show_config:
        print(cfgmod.describe(KidneyConfig))
        return 0
    if not _needs(args, "manifest", "out"):
        return 2
    dest = build(args.manifest, args.out, _load(KidneyConfig, args),
                 progress=not args.no_progress)
    print(f"dataset written to {dest}; check it with: medtl data check {dest}")
    return 0


def _cmd_chestxray14(args: argparse.Namespace) -> int:
    from medtl.datasets.manifest import read_manifest
    from medtl.studies.boit2019.dataset import ChestXray14Config, build, format_balance

    if args.show_config:
        print(cfgmod.describe(ChestXray14Config))
        return 0
    if not _needs(args, "root", "out"):
        return 2
    dest = build(args.root, args.out, _load(ChestXray14Config, args),
                 progress=not args.no_progress)
    print(format_balance(read_manifest(dest)["counts"]))
    print(f"dataset written to {dest}; check it with: medtl data check {dest}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from medtl.datasets.features import extract

    out = extract(args.deploy, args.weights, args.source, args.out, blob=args.blob,
                  mean_file=args.mean_file, mean_value=tuple(args.mean_value or ()),
                  scale=args.scale, batch=args.batch, gpu=args.gpu,
                  progress=not args.no_progress)
    print(f"{args.blob} features written to {out}")
    return 0


def _cmd_haar(args: argparse.Namespace) -> int:
    from medtl.studies.ravishankar2016.haar import HaarBank, lmdb_features

    out = lmdb_features(args.source, args.out, HaarBank(args.window, args.features),
                        progress=not args.no_progress)
    print(f"Haar features written to {out}")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from medtl.studies.boit2019 import phantoms as phantoms_chestxray14
    from medtl.studies.ravishankar2016 import phantoms as phantoms_kidney
    from medtl.studies.tajbakhsh2016 import phantoms as phantoms_tajbakhsh

    kind, out, seed = args.phantom_kind, args.out, args.seed
    if kind == "polyp":
        phantoms_tajbakhsh.write_polyp_collection(out, videos=args.groups,
                                                  frames_per_video=args.per_group, seed=seed)
    elif kind == "frames":
        phantoms_tajbakhsh.write_frame_collection(out, videos=args.groups,
                                                  frames_per_video=args.per_group,
                                                  size=tuple(args.size), seed=seed)
    elif kind == "imt":
        phantoms_tajbakhsh.write_imt_collection(out, subjects=args.groups,
                                                rois_per_subject=args.per_group, seed=seed)
    elif kind == "pe":
        phantoms_tajbakhsh.write_pe_collection(out, patients=args.groups, seed=seed)
    elif kind == "kidney":
        phantoms_kidney.write_kidney_collection(out, subjects=args.groups,
                                                images_per_subject=args.per_group, seed=seed)
    else:
        phantoms_chestxray14.write_chestxray14_collection(
            out, patients=args.groups, size=args.size, revision=args.revision, seed=seed)
    manifest = "" if kind == "chestxray14" else f" (manifest: {out / 'candidates.csv'})"
    print(f"{kind} phantom collection written to {out}{manifest}")
    return 0


PHANTOMS = {
    # kind: (help, default groups, default per group, group word)
    "polyp": ("colonoscopy frames, polyp masks and candidate boxes", 8, 5, "videos"),
    "frames": ("informative / non-informative colonoscopy frames", 6, 8, "videos"),
    "imt": ("carotid ultrasound ROIs with both interfaces traced", 6, 3, "subjects"),
    "pe": ("CTPA-like volumes (NIfTI and DICOM) with PE candidates", 6, 0, "patients"),
    "kidney": ("kidney ultrasound images with kidney boxes", 6, 3, "subjects"),
    "chestxray14": ("ChestX-ray14 layout: PNGs, Data_Entry, BBox list, split lists", 40, 0,
                    "patients"),
}


def add_phantom_commands(phantoms) -> None:
    """The phantom kinds, on the `medtl data phantoms` subparsers."""
    for kind, (text, groups, per_group, word) in PHANTOMS.items():
        p = phantoms.add_parser(kind, help=text)
        p.add_argument("--out", required=True, type=Path)
        p.add_argument("--groups", type=int, default=groups, help=f"number of {word}")
        if per_group:
            p.add_argument("--per-group", type=int, default=per_group,
                           help=f"items per {word[:-1]}")
        if kind == "frames":
            p.add_argument("--size", type=int, nargs=2, default=(500, 350),
                           metavar=("WIDTH", "HEIGHT"))
        if kind == "chestxray14":
            p.add_argument("--size", type=int, default=256, help="PNG side (real: 1024)")
            p.add_argument("--revision", choices=("2017", "2020"), default="2017",
                           help="write Data_Entry_2017.csv or the 2020 revision's file")
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=guarded(_cmd_phantom, _input_errors), phantom_kind=kind)


def add_commands(data_subparsers, phantoms=None) -> None:
    """Add this module's commands to the `medtl data` subparsers; the phantom kinds go on
    `phantoms` (the `medtl data phantoms` subparsers) when given, else on a `synth` group."""
    from medtl.studies.tajbakhsh2016.applications import APPLICATIONS

    tj = data_subparsers.add_parser("tajbakhsh", help="Tajbakhsh 2016 patch datasets from a "
                                    "candidate manifest (data_prep/CANDIDATE_MANIFEST.md)")
    tj_sub = tj.add_subparsers(dest="application", metavar="APPLICATION")
    tj.set_defaults(func=lambda _a: (tj.print_help(), 2)[1])
    for name, (_, _, text) in APPLICATIONS.items():
        p = tj_sub.add_parser(name, help=text)
        p.add_argument("--manifest", type=Path, help="candidate manifest CSV")
        _config_args(p)
        p.set_defaults(func=guarded(_cmd_tajbakhsh, _input_errors), application=name)

    k = data_subparsers.add_parser("kidney", help="Ravishankar 2016 kidney / background patches"
                                   " and Haar features from a candidate manifest")
    k.add_argument("--manifest", type=Path, help="candidate manifest CSV")
    _config_args(k)
    k.set_defaults(func=guarded(_cmd_kidney, _input_errors))

    cx = data_subparsers.add_parser("chestxray14", help="Boit 2019 ChestX-ray14 HDF5 sets "
                                    "(binary or 14-label) for DenseNet-121")
    cx.add_argument("--root", type=Path, help="the ChestX-ray14 folder (Data_Entry, lists, "
                    "images_*)")
    _config_args(cx)
    cx.set_defaults(func=guarded(_cmd_chestxray14, _input_errors))

    f = data_subparsers.add_parser("features", help="deep features (e.g. fc7) of a dataset's "
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
    f.set_defaults(func=guarded(_cmd_features, _input_errors))

    h = data_subparsers.add_parser("haar", help="Haar-like features of an LMDB's records")
    h.add_argument("--source", type=Path, required=True, help="an LMDB directory")
    h.add_argument("--out", type=Path, required=True, help="output .h5")
    h.add_argument("--features", type=int, default=2000, help="features per record")
    h.add_argument("--window", type=int, default=24, help="window side (pixels)")
    h.add_argument("--no-progress", action="store_true")
    h.set_defaults(func=guarded(_cmd_haar, _input_errors))

    if phantoms is None:
        synth = data_subparsers.add_parser("synth", help="synthetic data in these formats")
        phantoms = synth.add_subparsers(dest="phantom_kind", metavar="KIND")
        synth.set_defaults(func=lambda _a: (synth.print_help(), 2)[1])
    add_phantom_commands(phantoms)


def main(argv: list[str] | None = None) -> int:
    """These commands alone, as `medtl data` would run them (phantoms under `phantoms`)."""
    parser = argparse.ArgumentParser(prog="medtl data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    ph = sub.add_parser("phantoms", help="synthetic data in these formats")
    ph_sub = ph.add_subparsers(dest="phantom_kind", metavar="KIND")
    ph.set_defaults(func=lambda _a: (ph.print_help(), 2)[1])
    add_commands(sub, phantoms=ph_sub)
    parser.set_defaults(func=lambda _a: (parser.print_help(), 2)[1])
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
