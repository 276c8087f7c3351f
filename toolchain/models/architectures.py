"""Built-in architectures: the demo models and small nets covering the layer patterns pruning must handle.

Every constructor takes ``in_channels``/``in_features`` and ``num_classes`` so a state_dict saved from
one can be rebuilt from its name plus these keyword arguments. Their --arch names are listed in
`toolchain.models.registry.BUILTINS`.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 0, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 digits: two conv blocks, global pooling, linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width, padding=1),
            _conv_bn_relu(width, 2 * width, padding=1),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, 2 * width, padding=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class FashionCNN(nn.Module):
    """The anchor's Fashion-MNIST CNN: Conv 1->32->64->128->128 (3x3, no padding), BN+ReLU after
    each, max-pool after the 2nd and 3rd, global average pool, Linear 128->10 (241,898 parameters)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 32),
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            _conv_bn_relu(64, 128),
            nn.MaxPool2d(2),
            _conv_bn_relu(128, 128),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    """Tabular MLP (the breast-cancer demo model). Flattens any input shape."""

    def __init__(self, in_features: int = 30, num_classes: int = 2, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(cin, cout, stride=stride, padding=1),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    """ResNet-style: residual additions, identity and projection shortcuts."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, padding=1)
        self.layer1 = nn.Sequential(_BasicBlock(width, width), _BasicBlock(width, width))
        self.layer2 = nn.Sequential(_BasicBlock(width, 2 * width, stride=2), _BasicBlock(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn_relu(cin, hidden, k=1),
            _conv_bn_relu(hidden, hidden, k=3, stride=stride, padding=1, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class TinyMobileNetV2(nn.Module):
    """MobileNetV2-style: inverted residuals, depthwise convs, and a 1x1 Conv2d classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, padding=1)
        self.blocks = nn.Sequential(
            _InvertedResidual(width, width, 1, 4),
            _InvertedResidual(width, 2 * width, 2, 4),
            _InvertedResidual(2 * width, 2 * width, 1, 4),
        )
        self.head = _conv_bn_relu(2 * width, 4 * width, k=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(4 * width, num_classes, 1)  # the trap: logits from a Conv2d

    def forward(self, x):
        return torch.flatten(self.classifier(self.pool(self.head(self.blocks(self.stem(x))))), 1)


class TinyConcatNet(nn.Module):
    """Inception-style branches joined by channel concatenation, plus a grouped convolution."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, padding=1)
        self.branch_a = _conv_bn_relu(width, width, k=1)
        self.branch_b = _conv_bn_relu(width, width, k=3, padding=1)
        self.grouped = _conv_bn_relu(2 * width, 2 * width, k=3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        return self.fc(torch.flatten(self.pool(self.grouped(x)), 1))
