"""`medtl data tajbakhsh {polyp,pe,frames,imt}` and their phantoms.

    medtl data tajbakhsh polyp --manifest CSV --out DIR [--config Y] [--set k=v]
    medtl data phantoms {polyp,pe,frames,imt} --out DIR [--groups N] [--per-group M]
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from medtl.commands import build_from_args, config_args, data_commands

PHANTOMS = {
    # kind: (help, default groups, default per group, group word)
    "polyp": ("colonoscopy frames, polyp masks and candidate boxes", 8, 5, "videos"),
    "frames": ("informative / non-informative colonoscopy frames", 6, 8, "videos"),
    "imt": ("carotid ultrasound ROIs with both interfaces traced", 6, 3, "subjects"),
    "pe": ("CTPA-like volumes (NIfTI and DICOM) with PE candidates", 6, 0, "patients"),
}


def _cmd_build(args: argparse.Namespace) -> int:
    from medtl.studies.tajbakhsh2016.applications import APPLICATIONS, build

    return build_from_args(args, APPLICATIONS[args.application][0], "manifest",
                           partial(build, args.application))


def _cmd_phantom(args: argparse.Namespace) -> int:
    from medtl.studies.tajbakhsh2016 import phantoms as ph

    kind, out, seed = args.phantom_kind, args.out, args.seed
    if kind == "polyp":
        ph.write_polyp_collection(out, videos=args.groups, frames_per_video=args.per_group,
                                  seed=seed)
    elif kind == "frames":
        ph.write_frame_collection(out, videos=args.groups, frames_per_video=args.per_group,
                                  size=tuple(args.size), seed=seed)
    elif kind == "imt":
        ph.write_imt_collection(out, subjects=args.groups, rois_per_subject=args.per_group,
                                seed=seed)
    else:
        ph.write_pe_collection(out, patients=args.groups, seed=seed)
    print(f"{kind} phantom collection written to {out} (manifest: {out / 'candidates.csv'})")
    return 0


@data_commands("tajbakhsh2016")
def add_commands(data, phantoms) -> None:
    from medtl.studies.tajbakhsh2016.applications import APPLICATIONS

    tj = data.add_parser("tajbakhsh", help="Tajbakhsh 2016 patch datasets from a candidate "
                         "manifest (data_prep/CANDIDATE_MANIFEST.md)")
    tj_sub = tj.add_subparsers(dest="application", metavar="APPLICATION")
    tj.set_defaults(func=lambda _a: (tj.print_help(), 2)[1])
    for name, (_, _, text) in APPLICATIONS.items():
        p = tj_sub.add_parser(name, help=text)
        p.add_argument("--manifest", type=Path, help="candidate manifest CSV")
        config_args(p, "train_patches=2000")
        p.set_defaults(func=_cmd_build, application=name)
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
        p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=_cmd_phantom, phantom_kind=kind)
