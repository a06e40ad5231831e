#!/usr/bin/env python3
"""Shin et al. 2016 lymph-node datasets from TCIA's CT Lymph Nodes collection.

    .venv/bin/python data_prep/shin_lymph_nodes.py --root TCIA_ROOT --out DIR [--set region=abd]

Same as `medtl data ln`; see data_prep/README.md.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("ln")
