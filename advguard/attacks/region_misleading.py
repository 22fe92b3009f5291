"""Region-misleading adversarial patch: TaintRadar's first adaptive attack (paper ``taintradar``
Section VII-B, "Misleading Critical Region Estimation", Figure 6; docs/methods/taintradar.md).

The patch is trained as :class:`~advguard.attacks.AdversarialPatch` but its loss per image is

    (1 - lam) * CE(f(x_patched), target)  +  lam * share of the softened Grad-CAM heat inside the patch

so a larger ``lam`` pushes TaintRadar's estimated critical region away from the patch (and the attack
cares less about the target). The heat is TaintRadar's own estimate before binarisation (Sec. V-A:
Grad-CAM of log softmax(Z / T) for the predicted label, T = 2, on the same layer, scaled to max 1 per image
and upsampled bilinearly), computed differentiably (double backward through the head).

Deviation, stated: the paper does not give its region term; "share of the heat inside the patch" is ours
(it is 1 when the estimate sits on the patch, 0 when it avoids it, and smooth in between).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..classifier import Classifier, gradcam_from_gradients
from ..detectors.taintradar import upsampled_cam
from ..layers import LayerCapture, layer_module
from ..validation import ParameterError, ParameterTypeError, check_keywords, check_number
from .base import register_attack
from .patch import AdversarialPatch


def forward_with_activation(classifier: Classifier, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the activation of ``layer`` (``"name"`` = the module's output, ``"name:input"`` = its input),
    both inside the autograd graph of ``x``."""
    with LayerCapture(classifier, [layer]) as cap, torch.enable_grad():
        z = classifier._forward(x)
    return z, cap[layer]


def soft_gradcam(
    classifier: Classifier, x: torch.Tensor, layer: str, temperature: float = 2.0, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable softened Grad-CAM heat (N, H, W) in [0, 1] (max 1 per image) and the logits (N, classes).

    ``layer`` as TaintRadar's (``"name"`` = the module's output, ``"name:input"`` = its input); ``labels`` the
    label whose Grad-CAM is taken (default: the prediction, as TaintRadar). The graph is kept
    (``create_graph``), so a loss on the heat back-propagates to ``x``.
    """
    cam, z, _ = softened_cam(classifier, x, layer, temperature, labels)
    return upsampled_cam(cam, tuple(x.shape[-2:])), z


def softened_cam(
    classifier: Classifier, x: torch.Tensor, layer: str, temperature: float = 2.0, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`soft_gradcam` before scaling and upsampling: the layer-resolution map (N, h, w), the logits and the
    layer's activation, all in the graph (for attacks that need further Grad-CAMs of the same activation)."""
    if not x.requires_grad:  # the heat of fixed images: the graph still has to reach the layer
        x = x.detach().clone().requires_grad_(True)
    z, a = forward_with_activation(classifier, x, layer)
    pred = z.detach().argmax(1) if labels is None else labels
    with torch.enable_grad():
        lp = F.log_softmax(z / temperature, dim=1).gather(1, pred[:, None]).sum()
        (g,) = torch.autograd.grad(lp, a, create_graph=True)
    return gradcam_from_gradients(g, a), z, a


@register_attack()
class RegionMisleadingPatch(AdversarialPatch):
    """:class:`AdversarialPatch` whose training also drives TaintRadar's critical region off the patch.

    ``lam`` in [0, 1] weighs region misleading against reaching the target (the paper's lambda);
    ``layer`` and ``temperature`` should match the TaintRadar being attacked (default: the classifier's
    Grad-CAM layer, T = 2). Targeted only.
    """

    name = "region-misleading-patch"

    def __init__(
        self,
        classifier: Classifier,
        *,
        target: int,
        lam: float = 0.5,
        layer: str | None = None,
        temperature: float = 2.0,
        **kwargs: Any,
    ):
        check_keywords(self.name, kwargs, type(self).parameters())
        lam = check_number("lam (it weighs the two goals)", lam, lo=0, hi=1, where=self.name)
        temperature = check_number("temperature", temperature, lo=0, lo_open=True, where=self.name)
        if target is None:
            raise ParameterError("the region-misleading patch is targeted: give target=")
        super().__init__(classifier, target=target, **kwargs)
        layer = layer or classifier.gradcam_layer
        if not isinstance(layer, str):
            raise ParameterTypeError(f"{self.name}: layer must be a layer name (str), got {layer!r}")
        layer_module(classifier, layer)  # an unknown layer fails here, naming the closest
        self.lam, self.temperature = float(lam), float(temperature)
        self.layer = layer
        self.params.update(lam=self.lam, layer=self.layer, temperature=self.temperature)

    def _loss(self, adv: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        heat, z = soft_gradcam(self.classifier, adv, self.layer, self.temperature)
        ce = F.cross_entropy(z, labels, reduction="none")
        inside = (heat * masks[:, 0]).flatten(1).sum(1) / heat.flatten(1).sum(1).clamp_min(1e-12)
        return ((1 - self.lam) * ce + self.lam * inside).sum()
