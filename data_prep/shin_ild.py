#!/usr/bin/env python3
"""Shin et al. 2016 ILD datasets (slice or patch level) from the ILD database.

    .venv/bin/python data_prep/shin_ild.py --root ILD_ROOT --out DIR [--set level=patch]

Same as `medtl data ild`; see data_prep/README.md.
"""

import sys

from medtl.datasets.cli import main

if __name__ == "__main__":
    sys.exit(main(["ild", *sys.argv[1:]]))
