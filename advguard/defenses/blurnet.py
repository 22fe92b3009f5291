"""BlurNet (Raju & Lipasti, "BlurNet: Defense by Filtering the Feature Maps"; docs/methods/blurnet.md).

Model surgery on a copy of any CNN:

* :func:`feature_blur` inserts a depthwise blur (box or Gaussian, 3x3 / 5x5 / 7x7) on the feature maps
  of the first layer (paper Section 3); ``trainable=True`` makes the depthwise kernels parameters, to be
  trained with the L-inf penalty of eq. 3 (:func:`linf_penalty`, Section 4).
* :func:`input_blur` blurs the input instead (the baseline of Table 1).
* :class:`TVPenalty` is eq. 5: alpha_TV times the mean total variation (eq. 4) of the first layer's
  feature maps, no extra layer; it reads the maps with a forward hook during training.
* :func:`feature_spectra` / :func:`plot_spectra` give the log-shifted, normalised FFT magnitudes of
  first-layer feature maps (clean, stickered, difference, blurred difference: Figure 2).

Deviations, stated: the blur uses reflect padding (the paper does not say; zero padding darkens the
borders of every map, reflect leaves a constant map unchanged and makes an input blur commute with the
classifier's per-channel normalisation); "feature maps of the first layer" are taken after the first
layer's activation when the caller names it (``after="relu1"`` for the zoo's ``gtsrb-cnn``), else right
after the first ``nn.Conv2d``; the non-differentiable |.| of TV is replaced by the Charbonnier
approximation sqrt(d^2 + eps^2) (the paper says only "an approximation").
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..errors import unknown_name

FILTERS = ("box", "gaussian")
DEFENSES = ("feature-blur", "input-blur", "tv")


def blur_kernel(size: int, kind: str = "box") -> torch.Tensor:
    """A (size, size) low-pass kernel summing to 1: uniform (``box``) or Gaussian with OpenCV's default
    sigma for that size (0.3 * ((size - 1) / 2 - 1) + 0.8)."""
    if kind not in FILTERS:
        raise unknown_name("blur filter", kind, list(FILTERS))
    if size < 1 or size % 2 == 0:
        raise ValueError(f"blur size must be a positive odd number, got {size}")
    if kind == "box":
        k = torch.ones(size, size)
    else:
        sigma = 0.3 * ((size - 1) / 2 - 1) + 0.8
        r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        k = g[:, None] * g[None, :]
    return k / k.sum()


class DepthwiseBlur(nn.Module):
    """A depthwise convolution (one kernel per channel, no bias, "same" size with reflect padding),
    initialised to :func:`blur_kernel`; fixed unless ``trainable``."""

    def __init__(self, channels: int, size: int = 3, kind: str = "box", trainable: bool = False):
        super().__init__()
        self.channels, self.size, self.kind = int(channels), int(size), kind
        self.conv = nn.Conv2d(
            channels, channels, size, padding=size // 2, groups=channels, bias=False, padding_mode="reflect"
        )
        with torch.no_grad():
            self.conv.weight.copy_(blur_kernel(size, kind).expand(channels, 1, size, size))
        self.conv.weight.requires_grad_(trainable)

    @property
    def trainable(self) -> bool:
        return self.conv.weight.requires_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) <= self.size // 2:  # reflect padding needs a map wider than the pad
            raise ValueError(
                f"a {self.size}x{self.size} blur needs maps larger than {self.size // 2} pixels, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.conv(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}, kind={self.kind!r}, trainable={self.trainable}"


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """Name and module of the first ``nn.Conv2d`` in ``module``'s registration order."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(module).__name__} has no nn.Conv2d: BlurNet needs a convolutional first layer")


def submodule(module: nn.Module, name: str) -> nn.Module:
    """``module``'s sub-module called ``name`` (``nn.Module.named_modules``); a clear error naming the choices."""
    found = dict(module.named_modules()).get(name)
    if found is None:
        raise unknown_name("layer", name, [n for n, _ in module.named_modules() if n])
    return found


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent = module
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def feature_blur(
    module: nn.Module, size: int = 3, kind: str = "box", *, trainable: bool = False, after: str | None = None
) -> nn.Module:
    """A copy of ``module`` with a depthwise blur on its first layer's feature maps (paper Section 3).

    ``after`` names the sub-module whose output is blurred (e.g. the first activation, ``"relu1"``);
    default: the first ``nn.Conv2d``. The blurred sub-module becomes ``nn.Sequential(original, blur)``, so
    the original weights keep their names with a ``.0`` suffix and the blur's are ``<after>.1.conv.weight``.
    """
    out = copy.deepcopy(module)
    conv_name, conv = first_conv(out)
    name = after or conv_name
    _replace(out, name, nn.Sequential(submodule(out, name), DepthwiseBlur(conv.out_channels, size, kind, trainable)))
    return out


def input_blur(module: nn.Module, size: int = 3, kind: str = "box", channels: int = 3) -> nn.Module:
    """``nn.Sequential(blur, copy of module)``: the input-filtering baseline of Table 1 (fixed kernel)."""
    return nn.Sequential(DepthwiseBlur(channels, size, kind), copy.deepcopy(module))


def blur_layers(module: nn.Module) -> list[DepthwiseBlur]:
    return [m for m in module.modules() if isinstance(m, DepthwiseBlur)]


def linf_penalty(module: nn.Module) -> torch.Tensor:
    """Eq. 3's regulariser without alpha: sum over channels j of ||W_depthwise[:, :, j]||_inf, summed over
    the trainable depthwise blur layers of ``module``."""
    terms = [m.conv.weight.abs().flatten(1).amax(1).sum() for m in blur_layers(module) if m.trainable]
    if not terms:
        raise ValueError("linf_penalty needs a trainable DepthwiseBlur (feature_blur(..., trainable=True))")
    return torch.stack(terms).sum()


def total_variation(maps: np.ndarray | torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Eq. 4 per map: sum_ij |x[i+1,j] - x[i,j]| + |x[i,j+1] - x[i,j]| for maps (N, K, H, W) -> (N, K).

    ``eps`` > 0 uses the differentiable sqrt(d^2 + eps^2) in place of |d| (Charbonnier); None is exact.
    ``maps``: a tensor (differentiable; the result is on its device) or a numpy array (a CPU tensor back).
    """
    maps = torch.as_tensor(maps)
    dh = maps[..., 1:, :] - maps[..., :-1, :]
    dw = maps[..., :, 1:] - maps[..., :, :-1]
    if eps:
        a = lambda d: torch.sqrt(d * d + eps * eps)  # noqa: E731
    else:
        a = torch.abs
    return a(dh).sum((-2, -1)) + a(dw).sum((-2, -1))


class TVPenalty:
    """Eq. 5's regulariser: ``alpha * mean over the batch and the K channels of TV(first-layer map)``.

    Attach to the model being trained (a forward hook on ``layer``, default the first ``nn.Conv2d``);
    call it after each forward pass: ``loss = ce + penalty(model)`` (the signature
    :func:`advguard.training.train`'s ``extra_loss`` expects). ``detach()`` removes the hook.
    """

    def __init__(self, module: nn.Module, alpha: float, layer: str | None = None, eps: float = 1e-3):
        self.alpha, self.eps = float(alpha), float(eps)
        self._maps: torch.Tensor | None = None
        target = submodule(module, layer or first_conv(module)[0])
        self._handle = target.register_forward_hook(self._hook)

    def _hook(self, _m, _i, out: torch.Tensor) -> None:
        self._maps = out

    def __call__(self, _module: nn.Module | None = None) -> torch.Tensor:
        if self._maps is None:
            raise RuntimeError("TVPenalty: no forward pass seen since it was attached")
        maps, self._maps = self._maps.float(), None
        return self.alpha * total_variation(maps, self.eps).mean()

    def detach(self) -> None:
        self._handle.remove()


def build_defense(base: nn.Module, defense: dict) -> nn.Module:
    """The defended copy of ``base`` described by a zoo spec's ``defense`` dict
    (``kind`` in :data:`DEFENSES`, ``size``, ``filter``, ``trainable``, ``after``, ``alpha``)."""
    kind = defense.get("kind")
    if kind == "feature-blur":
        return feature_blur(
            base,
            int(defense.get("size", 3)),
            defense.get("filter", "box"),
            trainable=bool(defense.get("trainable", False)),
            after=defense.get("after"),
        )
    if kind == "input-blur":
        return input_blur(
            base, int(defense.get("size", 3)), defense.get("filter", "box"), channels=first_conv(base)[1].in_channels
        )
    if kind == "tv":
        return copy.deepcopy(base)  # TV changes only the training loss
    raise unknown_name("BlurNet defence", str(kind), list(DEFENSES))


def training_penalty(module: nn.Module, defense: dict) -> Callable[[nn.Module], torch.Tensor] | None:
    """The extra training loss of a defence: alpha * eq. 3 (trainable feature blur) or eq. 5 (tv)."""
    alpha = float(defense.get("alpha", 0.0))
    if defense.get("kind") == "tv":
        return TVPenalty(module, alpha, layer=defense.get("after"))
    if defense.get("kind") == "feature-blur" and defense.get("trainable") and alpha:
        return lambda m: alpha * linf_penalty(m)
    return None


# ---- Figure 2: spectra of first-layer feature maps ----


def log_spectrum(maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """log(1 + |FFT2|), shifted so low frequencies sit in the centre, scaled to [0, 1] per map (..., H, W)."""
    a = torch.as_tensor(maps).float()
    s = torch.log1p(torch.fft.fftshift(torch.fft.fft2(a).abs(), dim=(-2, -1)))
    lo, hi = s.amin((-2, -1), keepdim=True), s.amax((-2, -1), keepdim=True)
    return ((s - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()


@torch.no_grad()
def first_layer_maps(module: nn.Module, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """The feature maps (N, K, h, w) that ``layer`` (default: the first conv) of ``module`` outputs for ``x``
    (``module`` takes what the classifier's ``module`` takes: [0, 1] images for a Classifier's module)."""
    target = submodule(module, layer or first_conv(module)[0])
    got = []
    h = target.register_forward_hook(lambda _m, _i, out: got.append(out.detach().float().cpu()))
    try:
        module.eval()(x)
    finally:
        h.remove()
    return got[0]


def feature_spectra(
    maps_clean: torch.Tensor, maps_adv: torch.Tensor, size: int = 5, kind: str = "box"
) -> dict[str, np.ndarray]:
    """Figure 2's four columns for maps (K, h, w) of one image: spectra of the clean and stickered maps,
    of their difference, and of the difference after a ``size`` blur of the maps."""
    blur = DepthwiseBlur(maps_clean.shape[0], size, kind)
    with torch.no_grad():
        diff_blur = blur(maps_adv[None])[0] - blur(maps_clean[None])[0]
    return {
        "clean": log_spectrum(maps_clean),
        "stickered": log_spectrum(maps_adv),
        "difference": log_spectrum(maps_adv - maps_clean),
        "blurred difference": log_spectrum(diff_blur),
    }


def high_frequency_share(maps: torch.Tensor, radius: float = 0.25) -> torch.Tensor:
    """Share of each map's spectral energy (|FFT|^2) at normalised frequency radius > ``radius``
    (0.5 = Nyquist) -> (..., ) ; a number for the figure's caption, not a paper metric."""
    a = torch.as_tensor(maps).float()
    p = torch.fft.fft2(a).abs() ** 2
    fy = torch.fft.fftfreq(a.shape[-2], device=a.device)[:, None]
    fx = torch.fft.fftfreq(a.shape[-1], device=a.device)[None, :]
    high = (torch.sqrt(fy**2 + fx**2) > radius).to(p.dtype)
    return (p * high).sum((-2, -1)) / p.sum((-2, -1)).clamp_min(1e-20)


def plot_spectra(columns: dict[str, np.ndarray], path, channels: list[int] | None = None, title: str = ""):
    """Render :func:`feature_spectra`'s columns as the paper's Figure 2 (one row per feature map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path

    names = list(columns)
    k = next(iter(columns.values())).shape[0]
    channels = channels if channels is not None else list(range(min(k, 6)))
    fig, axes = plt.subplots(len(channels), len(names), figsize=(2.0 * len(names), 2.0 * len(channels)), squeeze=False)
    for r, c in enumerate(channels):
        for j, n in enumerate(names):
            ax = axes[r][j]
            ax.imshow(columns[n][c], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(n, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"map {c}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
