#!/usr/bin/env python3
"""Synthetic CT Lymph Nodes / ILD databases in the published on-disk formats.

    .venv/bin/python data_prep/phantoms.py ln --out DIR [--patients 6]
    .venv/bin/python data_prep/phantoms.py ild --out DIR [--patients 10]

Same as `medtl data phantoms`; see data_prep/README.md.
"""

import sys

from medtl.datasets.cli import main

if __name__ == "__main__":
    sys.exit(main(["phantoms", *sys.argv[1:]]))
