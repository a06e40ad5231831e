"""CifarNet: Shin's 32x32 baseline, with the parameter count that differs from the paper."""

from __future__ import annotations

from medtl.nets.registry import get_model
from medtl.nets.variants import deploy_net
from medtl.prototxt import write_text

# Shin 2016 Sec. III-A says "about 0.15M parameters"; Caffe's cifar10_full layout has fewer.
CIFARNET_PARAMS = {2: 81_378, 10: 89_578}


def test_cifarnet_parameter_count_is_recorded_against_shins_figure(caffe, tmp_path):
    model = get_model("cifarnet")
    for classes, expected in CIFARNET_PARAMS.items():
        path = write_text(tmp_path / f"cifarnet{classes}.prototxt",
                          deploy_net(model.body, classes, (1, 3, 32, 32), "CifarNet"))
        net = caffe.Net(str(path), caffe.TEST)
        count = sum(b.data.size for blobs in net.params.values() for b in blobs)
        assert count == expected
        assert net.forward()["prob"].shape == (1, classes)
    assert any("0.15M" in note for note in model.notes)
