#!/usr/bin/env python3
"""Boit & Zeng 2019: ChestX-ray14 sets for DenseNet-121 (binary: 8-bit LMDB; 14-label: HDF5).

    .venv/bin/python data_prep/chestxray14.py --root CHESTXRAY14_DIR --out DIR \
        [--config FILE.yaml] [--set task=multilabel] [--show-config]

Same as `medtl data chestxray14`; see python/medtl/studies/boit2019/dataset.py and
data_prep/README.md (ChestX-ray14).
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("chestxray14")
