#!/usr/bin/env python3
"""Boit & Zeng 2019: ChestX-ray14 HDF5 sets (binary or 14-label) for DenseNet-121.

    .venv/bin/python data_prep/chestxray14.py --root CHESTXRAY14_DIR --out DIR \
        [--config FILE.yaml] [--set task=multilabel] [--show-config]

Same as `medtl data chestxray14`; see python/medtl/data/chestxray14_dataset.py.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("chestxray14")
