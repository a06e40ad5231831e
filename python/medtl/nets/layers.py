"""Small NetSpec helpers in the style of fcn.berkeleyvision.org.

Every helper takes the `param` list explicitly, so a fine-tuning policy decides each layer's
learning-rate and weight-decay multipliers (weights first, bias second), never a default
hidden inside a helper.
"""

from __future__ import annotations

from typing import Any

from medtl.caffe_env import caffe

ParamSpec = list[dict[str, float]]


def learned_param(lr: float = 1.0, decay: float = 1.0) -> ParamSpec:
    """Weights at `lr`/`decay`; bias at twice the rate and no decay (the BVLC convention)."""
    return [dict(lr_mult=lr, decay_mult=decay), dict(lr_mult=2 * lr, decay_mult=0)]


def frozen_param() -> ParamSpec:
    return [dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)]


def gaussian(std: float) -> dict[str, Any]:
    return dict(type="gaussian", std=std)


def constant(value: float = 0.0) -> dict[str, Any]:
    return dict(type="constant", value=value)


def conv(bottom, nout: int, ks: int, stride: int = 1, pad: int = 0, group: int = 1, *,
         param: ParamSpec, weight_filler: dict, bias_filler: dict | None = None):
    return caffe().layers.Convolution(
        bottom, num_output=nout, kernel_size=ks, stride=stride, pad=pad, group=group,
        param=param, weight_filler=weight_filler, bias_filler=bias_filler or constant(0))


def conv_relu(bottom, nout: int, ks: int, stride: int = 1, pad: int = 0, group: int = 1, *,
              param: ParamSpec, weight_filler: dict, bias_filler: dict | None = None):
    c = conv(bottom, nout, ks, stride, pad, group, param=param,
             weight_filler=weight_filler, bias_filler=bias_filler)
    return c, caffe().layers.ReLU(c, in_place=True)


def fc(bottom, nout: int, *, param: ParamSpec, weight_filler: dict,
       bias_filler: dict | None = None):
    return caffe().layers.InnerProduct(
        bottom, num_output=nout, param=param, weight_filler=weight_filler,
        bias_filler=bias_filler or constant(0))


def fc_relu(bottom, nout: int, *, param: ParamSpec, weight_filler: dict,
            bias_filler: dict | None = None):
    f = fc(bottom, nout, param=param, weight_filler=weight_filler, bias_filler=bias_filler)
    return f, caffe().layers.ReLU(f, in_place=True)


def max_pool(bottom, ks: int, stride: int = 1, pad: int = 0):
    P = caffe().params.Pooling
    return caffe().layers.Pooling(bottom, pool=P.MAX, kernel_size=ks, stride=stride, pad=pad)


def ave_pool(bottom, ks: int, stride: int = 1, pad: int = 0):
    P = caffe().params.Pooling
    return caffe().layers.Pooling(bottom, pool=P.AVE, kernel_size=ks, stride=stride, pad=pad)


def lmdb_data(source: str, batch_size: int, *, phase: str, crop_size: int = 0,
              mirror: bool = False, mean_file: str | None = None,
              mean_value: tuple[float, ...] = (), scale: float = 1.0):
    """A `Data` layer reading an LMDB of Datums, with Caffe's own transform_param."""
    c = caffe()
    transform: dict[str, Any] = dict(mirror=mirror)
    if scale != 1.0:
        transform["scale"] = scale
    if crop_size:
        transform["crop_size"] = crop_size
    if mean_file:
        transform["mean_file"] = mean_file
    if mean_value:
        transform["mean_value"] = list(mean_value)
    phase_id = {"train": c.TRAIN, "test": c.TEST}[phase]
    return c.layers.Data(source=source, backend=c.params.Data.LMDB, batch_size=batch_size,
                         transform_param=transform, include=dict(phase=phase_id), ntop=2)
