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


def add_conv_stages(net: nn.Module, in_channels: int, widths: tuple[tuple[int, ...], ...]) -> tuple[int, int]:
    """Add ``block1..blockN`` (conv-BN-ReLU, one per width) to ``net`` with a 2x2 max-pool ``pool1..`` between
    stages; return (output channels, number of pools)."""
    c, k, pools = in_channels, 0, 0
    for s, stage in enumerate(widths):
        for w in stage:
            k += 1
            net.add_module(f"block{k}", ConvBNReLU(c, w))
            c = w
        if s < len(widths) - 1:
            pools += 1
            net.add_module(f"pool{pools}", nn.MaxPool2d(2))
    return c, pools


class VGGLike(nn.Module):
    """Stages of conv-BN-ReLU blocks separated by 2x2 max-pooling, global average pool, linear head.

    ``widths`` lists each stage's block widths, e.g. ``((32, 32), (64, 64), (128, 128))``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[tuple[int, ...], ...], dropout: float = 0.0):
        super().__init__()
        c, _ = add_conv_stages(self, in_channels, widths)
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


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: take every ``stride``-th pixel and zero-pad the new channels
    (equally on both sides of the channel axis); no parameters."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.before, self.after = stride, (cout - cin) // 2, cout - cin - (cout - cin) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers with an identity shortcut, or where the shape changes a
    1x1 conv-BN projection (``shortcut="projection"``, option B) or zero-padding (``"zero-pad"``, option A)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: str = "projection"):
        super().__init__()
        if shortcut not in ("projection", "zero-pad"):
            raise ValueError(f"shortcut must be 'projection' or 'zero-pad', got {shortcut!r}")
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if (stride != 1 or cin != cout) and shortcut == "projection":
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        elif stride != 1 or cin != cout:
            self.shortcut = ZeroPadShortcut(cin, cout, stride)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (2016, Section 4.2): a 3x3 stem, three stages of ``blocks`` basic blocks
    with widths ``widths`` (stride 2 between stages), global average pooling and a linear head.
    ``shortcut="projection"`` (our trained ``cifar10-resnet20``): 1x1 conv projections on the two
    down-sampling shortcuts (the paper's option B, a deviation); ``"zero-pad"``: the paper's option A,
    parameter-free, as in akamaster's pretrained ResNets (``cifar10-resnet*-pretrained``)."""

    def __init__(
        self,
        num_classes: int = 10,
        blocks: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "projection",
    ):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, c = [], widths[0]
        for s, w in enumerate(widths):
            stage = [
                BasicBlock(c if i == 0 else w, w, stride=2 if (s > 0 and i == 0) else 1, shortcut=shortcut)
                for i in range(blocks)
            ]
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


def cifar10_resnet_a(depth: int, num_classes: int = 10) -> nn.Module:
    """He et al.'s CIFAR ResNet-``depth`` (depth = 6n + 2: 20, 32, 44, 56, 110) with option-A zero-padding
    shortcuts: the layout of akamaster/pytorch_resnet_cifar10's pretrained models (ResNet-20: 269,722
    parameters). Their state dicts load after :func:`akamaster_state_dict` renames the keys."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
    return CifarResNet(num_classes, blocks=(depth - 2) // 6, widths=(16, 32, 64), shortcut="zero-pad")


def akamaster_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """akamaster's key names (``module.conv1``, ``module.bn1``, ``module.layerN``, ``module.linear``; saved
    from ``nn.DataParallel``) -> ours (``conv``, ``bn``, ``stageN``, ``fc``); block-internal names agree."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        head, _, rest = k.partition(".")
        head = {"conv1": "conv", "bn1": "bn", "linear": "fc"}.get(head, head)
        if head.startswith("layer"):
            head = "stage" + head[len("layer") :]
        out[f"{head}.{rest}"] = v
    return out


class LisaCNNTF(nn.Module):
    """RP2's LISA-CNN (Eykholt et al. 2018) as the authors trained it in TensorFlow (cleverhans' basic CNN):
    conv 8x8/2 (64, padding 3) - ReLU - conv 6x6/2 (128) - ReLU - conv 5x5/1 (128) - ReLU - linear (18).

    Same layers as :class:`LisaCNN`, but the linear layer reads the last 2x2x128 map flattened in
    (H, W, C) order, TensorFlow's, so the authors' weights load unchanged; layer names follow
    :class:`LisaCNN` (``conv1``... ``relu3``, ``fc``), so BlurNet's surgery after ``relu1`` applies."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 8, stride=2, padding=3)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 128, 6, stride=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(128, 128, 5)
        self.relu3 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(128 * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(torch.flatten(x.permute(0, 2, 3, 1), 1))  # (N, C, H, W) -> (N, H, W, C) -> TF's order


# -------------------------------------------------------------------------------------------------------------
# MobileNetV2 (Sandler et al. 2018), torchvision's layout.
#
# Written here rather than imported from torchvision: this project's torch (2.13.0+cpu) is a CPU build
# from a local wheel, and PyPI's torchvision 0.28.0 (the release pinned to torch 2.13.0) fails to import
# beside it ("operator torchvision::nms does not exist"; its compiled ops target PyPI's CUDA torch).
# Module names match torchvision's ``mobilenet_v2`` so its ImageNet state dict
# (``mobilenet_v2-b0353104.pth``) loads key for key.


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) - BN - ReLU6; children ``0``, ``1``, ``2`` as in torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when ``expand == 1``) - 3x3 depthwise - 1x1 linear projection, with a residual
    connection when stride is 1 and the width is kept. Children under ``conv`` as in torchvision."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, 1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): ``features.0`` stem (stride 2), ``features.1..17`` inverted residuals,
    ``features.18`` 1x1 conv to 1280, global average pooling, ``classifier`` (dropout 0.2, linear).
    At 224 px the maps are 112 (features.0-1), 56 (2-3), 28 (4-6), 14 (7-13) and 7 px (14-18)."""

    #: (expansion t, width c, repeats n, first stride s), the paper's Table 2
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, 3, stride=2)]
        c = 32
        for t, w, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c, w, s if i == 0 else 1, t))
                c = w
        layers.append(ConvBNReLU6(c, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# -------------------------------------------------------------------------------------------------------------
# A CIFAR-10 network with a fully connected head on a 16x16 map (issue #21).


class VGGFlatHead(nn.Module):
    """VGG-style CIFAR-10 network whose classifier reads a large last map through fully connected layers,
    like VGG16 (conv stages, then flatten + FC + FC), instead of global pooling.

    ``widths`` gives each stage's conv-BN-ReLU widths; a 2x2 max-pool follows every stage but the last.
    With ``((32, 64), (96, 96, 96, 96))`` on 32x32 inputs the last map is 16x16x96 (receptive field
    21 px: four 3x3 layers at 16 px after two at 32 px); a 1x1 conv-BN-ReLU (``reduce``) narrows it to
    ``reduce`` channels before the flatten so the first FC layer stays small (16*16*32 = 8,192 inputs).
    Grad-CAM layer: ``block6`` (the last 16x16 map)."""

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[tuple[int, ...], ...] = ((32, 64), (96, 96, 96, 96)),
        reduce: int = 32,
        hidden: int = 256,
        dropout: float = 0.5,
        size: int = 32,
    ):
        super().__init__()
        c, pools = add_conv_stages(self, 3, widths)
        s = size // 2**pools
        self.reduce = ConvBNReLU(c, reduce, kernel_size=1)
        self.dropout1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(reduce * s * s, hidden)
        self.relu_fc1 = nn.ReLU(inplace=True)
        self.dropout2 = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)
        self._body = [n for n, _ in self.named_children() if n.startswith(("block", "pool"))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in self._body:
            x = getattr(self, n)(x)
        x = torch.flatten(self.reduce(x), 1)
        return self.fc(self.dropout2(self.relu_fc1(self.fc1(self.dropout1(x)))))


def cifar10_vgg16x16(num_classes: int = 10) -> nn.Module:
    """``cifar10-vgg16x16``: 6 conv-BN-ReLU blocks (32, 64 | pool | 96, 96, 96, 96) keeping a 16x16 last
    map, 1x1 reduction to 32 channels, flatten, FC 8192-256, FC 256-10 (~2.4M parameters, 2.1M of them in
    the first FC layer; ~98M multiply-adds per image, 2.6x ``cifar10-cnn``)."""
    return VGGFlatHead(num_classes)
