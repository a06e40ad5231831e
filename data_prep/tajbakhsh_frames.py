#!/usr/bin/env python3
"""Tajbakhsh et al. 2016, colonoscopy frame quality (Sec. VI-C):
patch LMDBs from a candidate manifest.

    .venv/bin/python data_prep/tajbakhsh_frames.py --manifest CANDIDATES.csv --out DIR \
        [--config FILE.yaml] [--set key=value ...] [--show-config]

Same as `medtl data tajbakhsh frames`; the manifest format is in data_prep/CANDIDATE_MANIFEST.md.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("tajbakhsh", "frames")
