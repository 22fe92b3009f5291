"""Zoo architectures in plain PyTorch (no torchvision).

Layers are named attributes, so hooks, Grad-CAM and model surgery (BlurNet's layer
after the first conv) can address them by name, e.g. ``"block1.conv"``.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """3x3 convolution (no bias) + batch norm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class VGGLike(nn.Module):
    """Stages of conv-BN-ReLU blocks separated by 2x2 max-pooling, global average pool, linear head.

    ``widths`` lists each stage's block widths, e.g. ``((32, 32), (64, 64), (128, 128))``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[tuple[int, ...], ...], dropout: float = 0.0):
        super().__init__()
        c = in_channels
        k = 0
        for s, stage in enumerate(widths):
            for w in stage:
                k += 1
                self.add_module(f"block{k}", ConvBNReLU(c, w))
                c = w
            if s < len(widths) - 1:
                self.add_module(f"pool{s + 1}", nn.MaxPool2d(2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        self._body = [n for n, _ in self.named_children() if n.startswith(("block", "pool"))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in self._body:
            x = getattr(self, n)(x)
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def fashion_mnist_cnn(num_classes: int = 10) -> nn.Module:
    """Small VGG-style CNN for 28x28 grey images (~100k parameters)."""
    return VGGLike(1, num_classes, ((32, 32), (64, 64), (128,)), dropout=0.1)


def cifar10_cnn(num_classes: int = 10) -> nn.Module:
    """CIFAR-10 CNN in the spirit of the Segmentation Fault paper's model (~290k parameters).

    Six 3x3 conv-BN-ReLU blocks (32, 32 | 64, 64 | 128, 128) with max-pooling between
    stages, global average pooling and one linear layer. The paper's model had 26 layers
    and 309,290 parameters (89 % test accuracy); its exact layout was not published.
    """
    return VGGLike(3, num_classes, ((32, 32), (64, 64), (128, 128)))


class LisaCNN(nn.Module):
    """The traffic-sign CNN used by RP2 (Eykholt et al.) and BlurNet: 3 conv layers + 1 fully connected.

    Cleverhans' basic CNN: conv 8x8/2 (64, SAME) - ReLU - conv 6x6/2 (128, VALID) - ReLU -
    conv 5x5/1 (128, VALID) - ReLU - linear. For 32x32 inputs the last map is 2x2.
    Deviation: optional dropout before the linear layer (training only; no parameters),
    which GTSRB's 9-frames-per-track training set needs to generalise.
    """

    def __init__(self, num_classes: int = 43, in_channels: int = 3, size: int = 32, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 8, stride=2, padding=3)  # SAME for even input: 32 -> 16
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 128, 6, stride=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(128, 128, 5)
        self.relu3 = nn.ReLU(inplace=True)
        s = size // 2
        s = (s - 6) // 2 + 1
        s = s - 5 + 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128 * s * s, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def gtsrb_cnn(num_classes: int = 43) -> nn.Module:
    return LisaCNN(num_classes, dropout=0.5)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (2016, Section 4.2): a 3x3 stem, three stages of ``blocks`` basic blocks
    with widths ``widths`` (stride 2 between stages), global average pooling and a linear head.
    Deviation: 1x1 conv projections on the two down-sampling shortcuts (the paper's option B) instead
    of zero-padding (option A)."""

    def __init__(self, num_classes: int = 10, blocks: int = 3, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, c = [], widths[0]
        for s, w in enumerate(widths):
            stage = [BasicBlock(c if i == 0 else w, w, stride=2 if (s > 0 and i == 0) else 1) for i in range(blocks)]
            layers.append(nn.Sequential(*stage))
            c = w
        self.stage1, self.stage2, self.stage3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def cifar10_resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 for CIFAR-10 (~272k parameters): THEMIS's second target model, a different architecture
    from :func:`cifar10_cnn` of similar size."""
    return CifarResNet(num_classes, blocks=3, widths=(16, 32, 64))

