#!/usr/bin/env python3
"""Tajbakhsh et al. 2016, polyp detection (Sec. VI-A):
patch LMDBs from a candidate manifest.

    .venv/bin/python data_prep/tajbakhsh_polyp.py --manifest CANDIDATES.csv --out DIR \
        [--config FILE.yaml] [--set key=value ...] [--show-config]

Same as `medtl data tajbakhsh polyp`; the manifest format is in data_prep/CANDIDATE_MANIFEST.md.
"""

import sys

from medtl.datasets.cli_extra import main

if __name__ == "__main__":
    sys.exit(main(["tajbakhsh", "polyp", *sys.argv[1:]]))
