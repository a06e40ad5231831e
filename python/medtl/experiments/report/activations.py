"""Activation maps of a few test images per configuration (Shin Fig. 13: AlexNet's pool5
maps of ILD images, ImageNet weights beside the fine-tuned ones).

For the first run of each configuration a few records of its test database are read in the
order Caffe reads them, taking one of each label in turn so every class shows; they go
through the run's deploy net (`net/deploy.prototxt`) with `medtl.infer.ArrayNet`, the kit's
one inference path, preprocessed as the run's TEST net (`net/test.prototxt`) preprocesses
them (mean, centre crop, scale). The blob is the model's last spatial feature map
(`medtl.nets.registry.FEATURE_MAP_BLOBS`: pool5 for the AlexNet family). A run that started
from pretrained weights (`init.caffemodel`) shows their maps too, as Fig. 13 sets
AlexNet-ImNet beside AlexNet-TL.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medtl.datasets.channels import dataset_channels, legend
from medtl.datasets.hdf5_writer import read_hdf5_list
from medtl.datasets.lmdb_writer import read_lmdb
from medtl.experiments.report.context import FinishedRun, ReportContext
from medtl.experiments.report.figures import activation_figure
from medtl.infer import ArrayNet, InferenceError
from medtl.nets.registry import feature_map_blob
from medtl.paths import from_results
from medtl.prototxt import read_net

COUNT = 4                      # test images per configuration
SCAN = 1000                    # records read at most to find each label's first ones
PRETRAINED = "init.caffemodel"


@dataclass(frozen=True)
class TestInputs:
    """Where a run's TEST net reads its records and how it transforms them."""

    source: Path
    hdf5: bool
    mean_file: str | None = None
    mean_value: tuple[float, ...] = ()
    scale: float = 1.0


def test_inputs(net_file: Path) -> TestInputs | None:
    """The data layer of a TEST net prototxt (Data or HDF5Data), None without one."""
    for layer in read_net(net_file).layer:
        if layer.type == "HDF5Data":
            return TestInputs(Path(layer.hdf5_data_param.source), hdf5=True)
        if layer.type == "Data":
            t = layer.transform_param
            return TestInputs(Path(layer.data_param.source), hdf5=False,
                              mean_file=t.mean_file or None,
                              mean_value=tuple(t.mean_value),
                              scale=t.scale if t.HasField("scale") else 1.0)
    return None


def _relocated(inputs: TestInputs, run: FinishedRun) -> TestInputs:
    """The TEST net's paths under the results root as it is now: the net holds absolute
    paths, written before the results may have moved to another disk; run.json records the
    test set relative to the root, which also gives the old root for the mean file."""
    recorded = run.record.get("dataset", {}).get("test")
    if not recorded or Path(recorded).is_absolute():
        return inputs
    old = str(inputs.source)
    old_root = old[: -len(recorded)] if old.endswith(recorded) else None
    mean = inputs.mean_file
    if mean and old_root and mean.startswith(old_root):
        mean = str(from_results(mean[len(old_root):]))
    return replace(inputs, source=from_results(recorded), mean_file=mean)


def sample_records(inputs: TestInputs, count: int) -> tuple[np.ndarray, list[int], list[int]]:
    """(images n x C x H x W, their labels, their record numbers): one of each label in
    turn (label 0's first record, label 1's first, ..., then the seconds), among the first
    SCAN records."""
    if inputs.hdf5:
        data, labels = read_hdf5_list(inputs.source)
        rows = ((i, data[i], int(np.ravel(labels[i])[0])) for i in range(len(data)))
        return _round_robin(rows, count)
    with closing(read_lmdb(inputs.source)) as records:
        return _round_robin(((i, image, int(label))
                             for i, (_, image, label) in enumerate(records)), count)


def _round_robin(rows, count: int) -> tuple[np.ndarray, list[int], list[int]]:
    by_label: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, image, label in rows:
        if i >= SCAN:
            break
        kept = by_label.setdefault(label, [])
        if len(kept) < count:
            kept.append((i, image))
    picked: list[tuple[int, np.ndarray, int]] = []
    for depth in range(count):
        for label in sorted(by_label):
            if depth < len(by_label[label]) and len(picked) < count:
                picked.append((*by_label[label][depth], label))
    if not picked:
        raise InferenceError("the test set has no records")
    picked.sort(key=lambda p: (p[2], p[0]))
    return (np.stack([p[1] for p in picked]), [p[2] for p in picked],
            [p[0] for p in picked])


def feature_maps(run: FinishedRun, model: str, count: int = COUNT
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], list[int], list[int], str]:
    """(images as the net sees them before the mean, weights name -> n x C x h x w maps,
    labels, record numbers, blob) of `count` test records of `run`."""
    blob = feature_map_blob(model)
    test_net = run.run_dir / "net" / "test.prototxt"
    inputs = test_inputs(test_net) if test_net.is_file() else None
    if inputs is None:
        raise InferenceError(f"{test_net}: no TEST net with a data layer to read the test "
                             "records from")
    inputs = _relocated(inputs, run)
    images, labels, numbers = sample_records(inputs, count)
    deploy = run.run_dir / "net" / "deploy.prototxt"
    weights = {"trained": run.run_dir / "selected.caffemodel"}
    if (run.run_dir / PRETRAINED).is_file():
        weights = {"pretrained": run.run_dir / PRETRAINED, **weights}
    maps = {}
    for name, path in weights.items():
        net = ArrayNet(deploy, path, mean_file=inputs.mean_file,
                       mean_value=inputs.mean_value, scale=inputs.scale)
        maps[name] = net(images, blob, preprocessed=inputs.hdf5, flat=False)
    top = (images.shape[2] - net.height) // 2
    left = (images.shape[3] - net.width) // 2
    shown = images[:, :, top:top + net.height, left:left + net.width]
    return shown, maps, labels, numbers, blob


def activation_figures(ctx: ReportContext, class_names: list[str] | None = None,
                       count: int = COUNT) -> tuple[list[Path], list[str]]:
    """(figures, notes): `activations_<configuration>.png` for the first run of each
    configuration; a run whose maps cannot be computed is named in the notes instead."""
    models = {c.id: c.model for c in ctx.experiment.configurations}
    figures, notes = [], []
    for cid, runs in ctx.by_configuration().items():
        run = runs[0]
        try:
            images, maps, labels, numbers, blob = feature_maps(run, models[cid], count)
        except InferenceError as exc:
            notes.append(f"- activation maps of {run.run_id}: not drawn ({exc})")
            continue
        captions = [f"test record {n}: "
                    f"{class_names[y] if class_names and y < len(class_names) else y}"
                    for n, y in zip(numbers, labels, strict=True)]
        label = ctx.labels.get(cid, cid)
        dataset = run.record.get("dataset", {}).get("dir")
        channels = legend(dataset_channels(None if dataset is None else from_results(dataset)),
                          sep="; ")
        figures.append(activation_figure(
            images, maps, ctx.fig_dir / f"activations_{cid}.png", captions=captions,
            blob=blob, title=f"{label}: {blob} activations of test images ({run.run_id})\n"
                             f"{channels}"))
    if figures:
        notes.append("- activation maps (Shin Fig. 13): the first run of each configuration, "
                     f"{count} records of its test set (one of each label in turn, in "
                     "record order) through its deploy net; the blob is the model's last "
                     "spatial feature map (pool5 for AlexNet, OverFeat and VGG-16, pool3 for "
                     "CifarNet, the map GoogLeNet's and DenseNet's global pooling averages); "
                     "'pretrained' maps are those of the weights the run started from")
    return figures, notes
