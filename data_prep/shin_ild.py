#!/usr/bin/env python3
"""Shin et al. 2016 ILD datasets (slice or patch level) from the ILD database.

    .venv/bin/python data_prep/shin_ild.py --root ILD_ROOT --out DIR [--set level=patch]

Same as `medtl data ild`; see data_prep/README.md.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("ild")
