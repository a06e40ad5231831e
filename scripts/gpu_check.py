"""The nets and the report of scripts/gpu_check.sh; standard library only, so it runs on a bare
GPU machine where the kit's own dependencies are not installed.

- `nets OUT`: the kit's canonical Shin 2016 ILD-patch train nets (prototxt/shin2016/ild_patch/)
  with their Data layer replaced by DummyData of the same shape (batch x 3 x crop x crop and a
  label), for `caffe time`, and a solver (from solvers/) that trains AlexNet-H on it;
- `report`: `caffe time` and `caffe train` logs beside Shin 2016 Table VII's K40 times.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NET_DIR = REPO / "prototxt" / "shin2016" / "ild_patch"
SOLVER_DIR = REPO / "solvers" / "shin2016" / "ild_patch"
TRAIN_NET = "alexnet-h_ri"


@dataclass(frozen=True)
class Row:
    """One Table VII row (Shin 2016 Table VII: ILD patch, up to 90 epochs on one K40, Caffe;
    batch 128, GoogLeNet 64, VGG-16 32 (Sec. IV-C))."""

    net: str            # the kit's canonical net folder
    label: str
    k40_time: str       # training time, 90 epochs
    k40_seconds: int
    k40_memory_gb: float


TABLE_VII = (
    Row("alexnet-h_ri", "AlexNet", "1h2m", 62 * 60, 3.45),
    Row("googlenet-h_ri", "GoogLeNet", "2h49m", (2 * 60 + 49) * 60, 5.37),
    Row("vgg16_tl", "VGG-16", "20h24m", (20 * 60 + 24) * 60, 9.26),
)


# ------------------------------------------------------------------------------ nets
def layer_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of every top-level `layer { ... }` block in a prototxt."""
    blocks, depth, start = [], 0, -1
    for match in re.finditer(r"layer\s*\{|\{|\}", text):
        token = match.group(0)
        if token.startswith("layer") and depth == 0:
            start = match.start()
            depth = 1
        elif token == "{" or token.startswith("layer"):
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                blocks.append((start, match.end()))
    return blocks


def _field(block: str, name: str) -> int:
    found = re.search(rf"\b{name}:\s*(\d+)", block)
    if not found:
        raise SystemExit(f"gpu_check: no {name} in the data layer:\n{block}")
    return int(found.group(1))


def dummy_data(batch: int, channels: int, size: int) -> str:
    """A DummyData layer standing in for Data: random images, labels all 0."""
    return (
        'layer {\n  name: "data"\n  type: "DummyData"\n  top: "data"\n  top: "label"\n'
        "  dummy_data_param {\n"
        '    data_filler { type: "gaussian" std: 1 }\n'
        '    data_filler { type: "constant" value: 0 }\n'
        f"    shape {{ dim: {batch} dim: {channels} dim: {size} dim: {size} }}\n"
        f"    shape {{ dim: {batch} }}\n  }}\n}}"
    )


def dummy_net(text: str, batch: int | None = None) -> tuple[str, int]:
    """The train net with its (first) Data layer replaced; returns (net, batch size)."""
    for start, end in layer_blocks(text):
        block = text[start:end]
        if re.search(r'type:\s*"Data"', block):
            size = _field(block, "crop_size")
            n = batch or _field(block, "batch_size")
            return text[:start] + dummy_data(n, 3, size) + text[end:], n
    raise SystemExit("gpu_check: the net has no Data layer to replace")


def dummy_solver(text: str, net: Path, iters: int, gpu: bool) -> str:
    """The kit's solver for `net`, training `iters` iterations without test nets or snapshots."""
    drop = ("train_net", "test_net", "test_iter", "test_interval", "max_iter", "snapshot",
            "snapshot_prefix", "solver_mode", "display", "average_loss", "test_initialization")
    kept = [line for line in text.splitlines()
            if line.strip() and not line.startswith("#")
            and line.split(":")[0].strip() not in drop]
    every = max(1, iters // 10)
    kept += [f'net: "{net}"', f"max_iter: {iters}", f"display: {every}", f"average_loss: {every}",
             "snapshot: 0", f"solver_mode: {'GPU' if gpu else 'CPU'}"]
    return "\n".join(kept) + "\n"


def write_nets(out: Path, batch: int | None, train_iters: int, gpu: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for row in TABLE_VII:
        text, n = dummy_net((NET_DIR / row.net / "train.prototxt").read_text(), batch)
        (out / f"{row.net}.prototxt").write_text(text)
        print(f"{row.net} {n}")
    solver = dummy_solver((SOLVER_DIR / f"{TRAIN_NET}.solver.prototxt").read_text(),
                          out / f"{TRAIN_NET}.prototxt", train_iters, gpu)
    (out / "train_solver.prototxt").write_text(solver)


# ------------------------------------------------------------------------------ report
def caffe_time(log: str) -> dict[str, float]:
    """The averages `caffe time` prints (ms): forward, backward, forward-backward."""
    found = {}
    for key, pattern in (("forward", r"Average Forward pass:\s*([\d.]+) ms"),
                         ("backward", r"Average Backward pass:\s*([\d.]+) ms"),
                         ("forward_backward", r"Average Forward-Backward:\s*([\d.]+) ms")):
        match = re.search(pattern, log)
        if match:
            found[key] = float(match.group(1))
    if "forward_backward" not in found:
        raise ValueError("no 'Average Forward-Backward' line in the caffe time log")
    return found


def train_losses(log: str) -> list[tuple[int, float]]:
    """(iteration, loss) of every `Iteration N ..., loss = X` line of `caffe train`."""
    return [(int(i), float(v)) for i, v in
            re.findall(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-\d.eE+na]+)", log)]


def _hms(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def report(times: dict[str, tuple[int, dict[str, float]]], device: str) -> str:
    """The measured forward-backward times beside Table VII. Table VII gives 90-epoch totals
    on a data set whose size the paper does not state, so the comparison is by ratio: each
    net's time per image relative to AlexNet's, measured here and on the K40."""
    lines = [f"caffe time on {device} (forward + backward, no solver update) beside "
             "Shin 2016 Table VII (ILD patch, 90 epochs, one K40):",
             f"{'net':<11} {'batch':>5} {'ms/iter':>9} {'img/s':>8} {'x AlexNet':>9}   "
             f"{'K40 90 ep.':>10} {'K40 GB':>6} {'x AlexNet':>9}"]
    base = times.get(TABLE_VII[0].net)
    base_ms = base[1]["forward_backward"] / base[0] if base else None
    for row in TABLE_VII:
        k40_ratio = row.k40_seconds / TABLE_VII[0].k40_seconds
        if row.net not in times:
            lines.append(f"{row.label:<11} {'-':>5} {'not run':>9} {'':>8} {'':>9}   "
                         f"{row.k40_time:>10} {row.k40_memory_gb:>6.2f} {k40_ratio:>9.1f}")
            continue
        batch, t = times[row.net]
        per_image = t["forward_backward"] / batch
        ratio = f"{per_image / base_ms:.1f}" if base_ms else "-"
        lines.append(f"{row.label:<11} {batch:>5} {t['forward_backward']:>9.1f} "
                     f"{1000 / per_image:>8.0f} {ratio:>9}   {row.k40_time:>10} "
                     f"{row.k40_memory_gb:>6.2f} {k40_ratio:>9.1f}")
    return "\n".join(lines)


def train_report(log: str, seconds: float, batch: int) -> str:
    losses = train_losses(log)
    if not losses:
        return "training: no 'Iteration N, loss = X' line in the caffe train log"
    last = losses[-1][0]
    rate = f", {last * batch / seconds:.0f} img/s" if seconds > 0 and last else ""
    return (f"training ({TRAIN_NET}, DummyData, batch {batch}): {last} iterations in "
            f"{_hms(seconds)}{rate}; loss {losses[0][1]:.3f} at iteration {losses[0][0]} -> "
            f"{losses[-1][1]:.3f} at {last}")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    nets = sub.add_parser("nets")
    nets.add_argument("out", type=Path)
    nets.add_argument("--batch", type=int, help="override the papers' batch sizes")
    nets.add_argument("--train-iters", type=int, default=200)
    nets.add_argument("--cpu", action="store_true", help="solver_mode CPU")
    rep = sub.add_parser("report")
    rep.add_argument("--time", nargs=3, action="append", default=[],
                     metavar=("NET", "BATCH", "LOG"))
    rep.add_argument("--train", nargs=3, metavar=("LOG", "SECONDS", "BATCH"))
    rep.add_argument("--device", default="this device")
    args = parser.parse_args(argv)
    if args.cmd == "nets":
        write_nets(args.out, args.batch, args.train_iters, gpu=not args.cpu)
        return 0
    times = {}
    for net, batch, log in args.time:
        try:
            times[net] = (int(batch), caffe_time(Path(log).read_text(errors="replace")))
        except ValueError as err:
            print(f"{net}: {err} ({log})", file=sys.stderr)
    print(report(times, args.device))
    if args.train:
        log, seconds, batch = args.train
        print(train_report(Path(log).read_text(errors="replace"), float(seconds), int(batch)))
    return 0 if len(times) == len(args.time) else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
