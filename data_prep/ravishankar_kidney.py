#!/usr/bin/env python3
"""Ravishankar et al. 2016: kidney / background patch LMDBs with Haar features from a
candidate manifest, and fc7 (or any blob's) features of them from a deploy net.

    .venv/bin/python data_prep/ravishankar_kidney.py --manifest CANDIDATES.csv --out DIR \
        [--config FILE.yaml] [--set key=value ...] [--show-config]
    .venv/bin/python data_prep/ravishankar_kidney.py features --deploy DEPLOY.prototxt \
        --weights W.caffemodel --source DIR/test_lmdb --mean-file DIR/train_mean.binaryproto \
        --out fc7_test.h5
    .venv/bin/python data_prep/ravishankar_kidney.py haar --source DIR/test_lmdb --out haar.h5

Same as `medtl data kidney`, `medtl data features` and `medtl data haar`.
"""

from medtl.cli import data_entry

if __name__ == "__main__":
    data_entry("kidney", commands=("features", "haar"))
