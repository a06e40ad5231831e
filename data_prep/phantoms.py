#!/usr/bin/env python3
"""Synthetic CT Lymph Nodes / ILD databases in the published on-disk formats.

    .venv/bin/python data_prep/phantoms.py ln --out DIR [--patients 6]
    .venv/bin/python data_prep/phantoms.py ild --out DIR [--patients 10]

Same as `medtl data phantoms`; see data_prep/README.md.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("phantoms")
