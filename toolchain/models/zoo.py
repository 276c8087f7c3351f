"""The mobile architectures at full scale: factories over pytorchcv 0.0.74's definitions.

Each factory takes ``num_classes`` and ``in_channels`` (ImageNet's 1000 and 3 by default) and builds a
randomly initialised model: pytorchcv fetches pretrained weights over the network only when asked
(``pretrained=True``), which these factories never pass. torchvision does not import beside torch 2.13,
so its models are not an option here.

pytorchcv ends most of these nets in ``AvgPool2d(7)``, which fits 224-px inputs only; it is replaced by
``AdaptiveAvgPool2d(1)`` (the same function at 224 px) so any input of at least 32 px works, from the
tests' 64 px up. pytorchcv's ``in_size`` is a record it keeps, not an input to the layers, so it is
left at its default.

The --arch names are listed in `toolchain.models.registry.MOBILE`.
"""

from __future__ import annotations

import importlib

from torch import nn

from toolchain.errors import UserError

# --arch name -> (pytorchcv module, factory): width 1.0 variants, the ones papers and phones use
PYTORCHCV = {
    "mobilenetv2": ("mobilenetv2", "mobilenetv2_w1"),
    "mobilenetv3-large": ("mobilenetv3", "mobilenetv3_large_w1"),
    "efficientnet-b0": ("efficientnet", "efficientnet_b0"),
    "shufflenetv2": ("shufflenetv2", "shufflenetv2_w1"),
    "resnet18": ("resnet", "resnet18"),
    "resnet50": ("resnet", "resnet50"),
}


def _pytorchcv(name: str):
    module, attr = PYTORCHCV[name]
    try:
        found = importlib.import_module(f"pytorchcv.models.{module}")
    except ImportError:
        raise UserError(
            f"--arch {name} needs pytorchcv, which is not installed: run "
            "`pip install --no-deps pytorchcv==0.0.74` (--no-deps: its requirements would pull torchvision)"
        ) from None
    return getattr(found, attr)


def build(name: str, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """pytorchcv's ``name`` with random weights, any input size of 32 px or more."""
    model = _pytorchcv(name)(num_classes=num_classes, in_channels=in_channels)
    if isinstance(getattr(model.features, "final_pool", None), nn.AvgPool2d):
        model.features.final_pool = nn.AdaptiveAvgPool2d(1)
    return model


def mobilenetv2(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """MobileNetV2 1.0 (3.5 M parameters at 1000 classes); its classifier is a 1x1 Conv2d."""
    return build("mobilenetv2", num_classes, in_channels)


def mobilenetv3_large(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """MobileNetV3-Large 1.0: squeeze-excitation and hard-swish; a Conv2d head, then a 1x1 Conv2d classifier."""
    return build("mobilenetv3-large", num_classes, in_channels)


def efficientnet_b0(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """EfficientNet-B0: inverted residuals with squeeze-excitation and swish."""
    return build("efficientnet-b0", num_classes, in_channels)


def shufflenetv2(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ShuffleNetV2 1.0: channel split, concatenation and channel shuffle (view/transpose/view). Torch-Pruning
    cannot follow the shuffle: the channels through it stay whole (toolchain.prune.graph)."""
    return build("shufflenetv2", num_classes, in_channels)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-18: basic blocks, projection shortcuts."""
    return build("resnet18", num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-50: bottleneck blocks, projection shortcuts."""
    return build("resnet50", num_classes, in_channels)
