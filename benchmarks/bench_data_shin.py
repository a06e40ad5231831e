#!/usr/bin/env python3
"""Throughput of the Shin 2016 data preparation (not a test: prints figures).

    .venv/bin/python benchmarks/bench_data_shin.py [--quick]

1. 2.5D view sampling (3 x 64 x 64, cubic B-spline), one core: the interpolation alone, and
   per patient end to end (prefilter of the box the views need + interpolation + window),
   on a TCIA-sized volume (512 x 512 x 300 voxels, 0.78 x 0.78 x 1.25 mm) with 45 candidates
   x 200 views; scipy's map_coordinates on the same views as the reference.
2. Peak memory of whole lymph-node dataset builds as the number of phantom patients grows
   (each build in its own process): volumes are streamed, so it stays flat.
3. LMDB write throughput (Datum records, shuffled keys) against a plain sequential write of
   the same bytes to a file on the same disk, both synced.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtl.datasets.formats import bspline
from medtl.datasets.formats.geometry import Geometry
from medtl.datasets.lmdb_writer import LmdbWriter, record_key, to_datum
from medtl.datasets.views import ViewSampler, draw_params, plane_vectors, window_to_uint8


def _volume(shape, rng) -> tuple[np.ndarray, Geometry]:
    hu = ndimage.gaussian_filter(rng.normal(0, 1, (shape[0] // 4, shape[1] // 4,
                                                   shape[2] // 4)).astype(np.float32), 1)
    hu = ndimage.zoom(hu * 300 - 100, 4, order=1).astype(np.float32)
    hu += rng.normal(0, 20, hu.shape).astype(np.float32)
    g = Geometry(np.array([-200.0, -200.0, -400.0]), np.array([0.78, 0.78, 1.25]), np.eye(3),
                 hu.shape)
    return hu, g


def bench_views(quick: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (120, 256, 256) if quick else (300, 512, 512)
    n_cand, per_cand = (15, 100) if quick else (45, 200)
    hu, g = _volume(shape, rng)
    centre = g.index_to_world((np.array(shape[::-1]) - 1) / 2)
    cands = centre + rng.uniform(-0.3, 0.3, (n_cand, 3)) * g.extent_mm()
    params = [draw_params(rng, per_cand, (35.0, 128.0), 3.0, True) for _ in cands]
    centres = np.concatenate([np.repeat(c[None], per_cand, 0) for c in cands])
    from medtl.datasets.views import ViewParams

    allp = ViewParams.concat(params)
    n = len(allp)
    print(f"[views] volume {shape[2]}x{shape[1]}x{shape[0]} voxels, {n_cand} candidates x "
          f"{per_cand} views = {n} views of 3x64x64, backend {bspline.backend()}")
    sampler = ViewSampler(hu, g, size=64)
    t0 = time.perf_counter()
    sampler.prepare(centres, allp)
    t1 = time.perf_counter()
    for i in range(n_cand):
        sl = slice(i * per_cand, (i + 1) * per_cand)
        sampler.render(centres[sl], params[i], (-100.0, 200.0))
    t2 = time.perf_counter()
    box = sampler._coef.size
    print(f"[views] prefilter of the {box / 1e6:.0f} Mvoxel box the views need: "
          f"{t1 - t0:.2f} s")
    print(f"[views] interpolation + window: {n / (t2 - t1):,.0f} views/s/core")
    print(f"[views] end to end per patient (prefilter + views): "
          f"{n / (t2 - t0):,.0f} views/s/core")
    # reference: scipy on a subset of the same views
    sub = min(n, 100)
    o, du, dv = plane_vectors(centres[:sub], allp.take(np.arange(sub)), 64)
    o, du, dv = (g.world_to_array(o) - sampler._lo, g.world_vectors_to_array(du),
                 g.world_vectors_to_array(dv))
    r, q = np.mgrid[0:64, 0:64].astype(float)
    pts = (o[:, None, None] + r[None, :, :, None] * dv[:, None, None]
           + q[None, :, :, None] * du[:, None, None]).reshape(-1, 3)
    t3 = time.perf_counter()
    ref = ndimage.map_coordinates(sampler._coef, pts.T, order=3, prefilter=False,
                                  output=np.float32)
    t4 = time.perf_counter()
    mine = sampler.render_hu(centres[:sub], allp.take(np.arange(sub))).reshape(-1)
    print(f"[views] scipy map_coordinates(order=3) on the same views: {sub / (t4 - t3):,.0f} "
          f"views/s/core; largest difference {np.abs(ref - mine).max():.2e} HU")
    window_to_uint8(ref, (-100.0, 200.0))


def bench_memory(quick: bool) -> None:
    from medtl.studies.shin2016.ln.phantoms import write_collection

    counts = (3, 6) if quick else (3, 6, 12)
    print("[memory] peak memory of a whole LN build (phantoms 60x96x96 voxels, 20 train / 5 test "
          "views per candidate), one process each:")
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            write_collection(Path(tmp) / "ph", patients=n)
            code = (
                "import resource, threading, time\n"
                "peak = [0]\n"
                "def watch():\n"
                "    while True:\n"
                "        for ln in open('/proc/self/status'):\n"
                "            if ln.startswith('RssAnon:'):\n"
                "                peak[0] = max(peak[0], int(ln.split()[1]))\n"
                "        time.sleep(0.02)\n"
                "threading.Thread(target=watch, daemon=True).start()\n"
                "from medtl.datasets import ln_dataset, config\n"
                "cfg=config.from_mapping(ln_dataset.LnConfig,{'train_views_per_candidate':20,"
                "'test_views_per_candidate':5})\n"
                f"ln_dataset.build('{tmp}/ph','{tmp}/ds',cfg,progress=False)\n"
                "time.sleep(0.05)\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak[0])\n")
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)
            rss, anon = (int(v) / 1024 for v in out.stdout.split()[-2:])
            print(f"[memory]   {n:>2} patients: peak anonymous (heap) {anon:.0f} MB, peak RSS "
                  f"{rss:.0f} MB incl. the LMDB pages mapped while writing "
                  f"({time.perf_counter() - t:.1f} s)")


def bench_lmdb(quick: bool) -> None:
    n = 2000 if quick else 20000
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    values = [to_datum(image, i % 2).SerializeToString() for i in range(min(n, 1000))]
    order = rng.permutation(n)
    total = sum(len(values[i % len(values)]) for i in range(n))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        t = time.perf_counter()
        with LmdbWriter(Path(tmp) / "db") as w:
            for i in range(n):
                w.put_raw(record_key(int(order[i])), values[i % len(values)])
        t_lmdb = time.perf_counter() - t
        t = time.perf_counter()
        with open(Path(tmp) / "plain.bin", "wb") as f:
            for i in range(n):
                f.write(values[i % len(values)])
            f.flush()
            os.fsync(f.fileno())
        t_plain = time.perf_counter() - t
        t = time.perf_counter()
        with LmdbWriter(Path(tmp) / "db2") as w:
            for i in range(n):
                w.put(int(order[i]), image, i % 2)
        t_full = time.perf_counter() - t
    mb = total / 1e6
    print(f"[lmdb] {n} Datum records of 3x64x64 uint8 ({mb:.0f} MB), shuffled keys:")
    print(f"[lmdb]   LMDB write (serialized records): {mb / t_lmdb:,.0f} MB/s")
    print(f"[lmdb]   LMDB write incl. Datum serialisation: {mb / t_full:,.0f} MB/s")
    print(f"[lmdb]   plain sequential file write + fsync: {mb / t_plain:,.0f} MB/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a minute)")
    parser.add_argument("--only", choices=("views", "memory", "lmdb"))
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"max RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for name, fn in (("views", bench_views), ("memory", bench_memory), ("lmdb", bench_lmdb)):
        if args.only in (None, name):
            fn(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
