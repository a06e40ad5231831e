"""`medtl run SPEC --plan`: training images, iterations, time from `caffe time` (measured once
per net, device and Caffe build), memory and disk per run, before anything is built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spec_helpers import tiny_ln_spec

from medtl import caffe_env, cli
from medtl.errors import RunError
from medtl.experiments import costplan, timing
from medtl.experiments.plan import load_plan, with_overrides
from medtl.generate import DataPaths, build_nets
from medtl.inspect_net import with_dummy_data
from medtl.paths import REPO
from medtl.protocols import configurations
from medtl.solver import plan_solver

LN_MEDIASTINUM = REPO / "experiments/shin2016/ln_mediastinum.yaml"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(timing.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "timings"


@pytest.fixture
def counted_caffe(tmp_path, monkeypatch) -> Path:
    """The real caffe tool behind a wrapper that logs each call (MEDTL_CAFFE_BIN)."""
    log = tmp_path / "caffe_calls.log"
    wrapper = tmp_path / "caffe"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n'
                       f'exec "{caffe_env.caffe_binary()}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("MEDTL_CAFFE_BIN", str(wrapper))
    return log


def _cifarnet_dummy(batch: int):
    cfg = next(c for c in configurations("shin2016") if c.id == "cifarnet_ri")
    nets = build_nets(cfg, DataPaths("train", "val"))
    dims = tuple(nets["deploy"].layer[0].input_param.shape[0].dim[1:])
    return with_dummy_data(nets["train"], Path("train.prototxt"), dims, batch_size=batch)


def test_the_parser_reads_real_caffe_time_output(tmp_path):
    net = tmp_path / "cifarnet.prototxt"
    net.write_text(str(_cifarnet_dummy(4)))
    log = timing.run_caffe_time(net, 2, None)
    figures = timing.parse_caffe_time(log)
    assert set(figures) == {"forward_ms", "backward_ms", "forward_backward_ms"}
    assert all(v > 0 for v in figures.values())
    # the same lines behind another log prefix, and in exponent notation
    assert timing.parse_caffe_time(
        "x] Average Forward pass: 1.5e+03 ms.\nAverage Backward pass: 2 ms.\n"
        "y Average Forward-Backward: 1502.25 ms.") == {
        "forward_ms": 1500.0, "backward_ms": 2.0, "forward_backward_ms": 1502.25}


def test_the_parser_names_the_missing_figure():
    with pytest.raises(RunError, match="caffe time printed no backward average"):
        timing.parse_caffe_time("I1127 caffe.cpp:408] Average Forward pass: 3 ms.\n")


def test_a_timing_is_keyed_by_device_build_net_and_batch():
    text = str(_cifarnet_dummy(4))
    key = timing.cache_key(text, 4, "CPU a x 2 cores")
    assert key == timing.cache_key(text, 4, "CPU a x 2 cores")
    assert len({key, timing.cache_key(text, 8, "CPU a x 2 cores"),
                timing.cache_key(text, 4, "GPU NVIDIA H100"),
                timing.cache_key(text + " ", 4, "CPU a x 2 cores")}) == 4
    assert timing.device_description(None).startswith("CPU ")


def test_a_second_plan_does_not_run_caffe_time_again(results_root, tmp_path, cache,
                                                     counted_caffe):
    plan = load_plan(tiny_ln_spec(tmp_path))
    first = costplan.cost_plan(plan)
    assert counted_caffe.read_text().count("time -model") == 1
    assert not first.configs["cifarnet_ri"].timing.cached
    assert len(list(cache.glob("*.json"))) == 1
    second = costplan.cost_plan(load_plan(tiny_ln_spec(tmp_path)))
    assert counted_caffe.read_text().count("time -model") == 1        # not measured again
    assert second.configs["cifarnet_ri"].timing.cached
    assert second.runs[0].train_s == first.runs[0].train_s


def test_the_plan_builds_nothing_and_counts_iterations_by_the_solver_plan(
        results_root, tmp_path, cache):
    plan = load_plan(tiny_ln_spec(tmp_path, training={"max_epochs": 3}))
    cp = costplan.cost_plan(plan)
    assert not results_root.exists()      # no dataset, phantoms or run folder written
    run = cp.runs[0]
    cfg = with_overrides(plan.runs[0].config, plan.experiment)
    expected = plan.study.expected_sizes(cfg, 1, 1.0)
    assert run.train == expected.train and "phantom settings" in run.train.describe()
    solver = plan_solver(cfg.solver, expected.train.value, expected.val.value)
    assert run.iterations == solver.max_iter.value == 3 * solver.iters_per_epoch.value
    t = cp.configs["cifarnet_ri"].timing
    assert run.train_s == pytest.approx(run.iterations * t.forward_backward_ms / 1000)
    assert run.val_s == pytest.approx(3 * solver.test_iter.value * t.forward_ms / 1000)
    text = costplan.format_plan(cp)
    assert f"{expected.train.value:,} [1]" in text and "[1] assumed: the phantom" in text
    assert "fits" in text and "nothing built or trained" in text


def test_a_built_dataset_gives_the_manifests_counts(results_root, tmp_path, cache):
    plan = load_plan(tiny_ln_spec(tmp_path))
    plan.study.prepare(progress=False)
    cp = costplan.cost_plan(plan)
    cfg = with_overrides(plan.runs[0].config, plan.experiment)
    fold = plan.study.fold_data_for(cfg, 1, 1.0, 1)
    assert cp.runs[0].train.value == fold.train_size
    assert cp.runs[0].val.value == fold.val_size
    assert "the dataset's manifest" in cp.runs[0].train.describe()


def test_shin_ln_expects_the_papers_view_counts(results_root):
    plan = load_plan(LN_MEDIASTINUM)
    cfg = with_overrides(plan.runs[0].config, plan.experiment)
    sizes = plan.study.expected_sizes(cfg, 1, 1.0)
    # 388 LNs in 90 patients; 48 training patients of a 3-fold split less 0.2 validating;
    # 200 views per candidate; as many negative views as positive ones
    assert sizes.train.value == round(388 / 90 * 48 * 200 * 2) == 82773
    assert sizes.val.value == round(388 / 90 * 12 * 10 * 2)
    assert "Shin 2016 Sec. II: 388 LNs in 90 patients" in sizes.train.describe()
    assert sizes.train.is_assumed


def test_a_study_without_counts_is_unknown_until_built(results_root, tmp_path, cache):
    spec = tiny_ln_spec(tmp_path)
    plan = load_plan(spec)
    plan.study.expected_sizes = lambda *a: None      # what the base class says
    cp = costplan.cost_plan(plan)
    assert cp.runs[0].train is None and cp.runs[0].iterations is None
    assert costplan.UNKNOWN in costplan.format_plan(cp)


def test_disk_counts_the_snapshots_kept_while_training_and_after():
    c = costplan.ConfigCost("x", 50, 50, 30, params=1_000_000, history=1, memory=None,
                            timing=None)
    w = 4_000_000
    assert c.disk_peak == 4 * w + 2 * w           # latest two pairs, best, selected
    assert c.disk_kept(False) == w                # the selected weights
    assert c.disk_kept(True) == w + 2 * w         # and the last caffemodel + solverstate


def test_a_gpu_on_a_cpu_only_build_is_said_not_timed(results_root, tmp_path, cache,
                                                     counted_caffe):
    cpu_only = {**caffe_env.build_info(), "cuda": "0"}    # the plan is told the build's kind
    cp = costplan.cost_plan(load_plan(tiny_ln_spec(tmp_path)), gpu=0, build=cpu_only)
    assert cp.configs["cifarnet_ri"].timing is None
    assert "CPU-only" in cp.configs["cifarnet_ri"].notes[0]
    assert not counted_caffe.exists()
    assert "not estimated" in costplan.format_plan(cp)


def test_medtl_run_plan_prints_the_plan(results_root, tmp_path, cache, capsys):
    spec = tiny_ln_spec(tmp_path)
    assert cli.main(["run", str(spec), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "Cost plan of shin2016/tiny: 1 run(s) on CPU" in out
    assert "cifarnet_ri__fold1__frac1__seed1" in out and "total: 1 run(s)" in out
    assert not results_root.exists()
    assert os.listdir(cache)
