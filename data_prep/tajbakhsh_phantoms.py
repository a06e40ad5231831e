#!/usr/bin/env python3
"""Synthetic data in the candidate-manifest and ChestX-ray14 formats, for tests and demos.

    .venv/bin/python data_prep/tajbakhsh_phantoms.py KIND --out DIR [--groups N] [--seed S]

KIND: polyp, pe, frames, imt (Tajbakhsh 2016), kidney (Ravishankar 2016), chestxray14.
Same as `medtl data phantoms KIND`.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("phantoms")
