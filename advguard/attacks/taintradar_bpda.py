"""End-to-end BPDA attack on TaintRadar (paper ``taintradar`` Section VII-B, "End-to-end Attack";
docs/methods/taintradar.md).

Per image, a perturbation confined to a square covering ``size`` of the image (7 % in the paper) is optimised
with Adam through the *whole* TaintRadar pipeline, its two binarisations replaced by sigmoids
beta_hat = 1 / (1 + exp(-t (L - T))) (BPDA, Athalye et al. 2018); t starts at 1 and grows by 1 every
``t_every`` steps (100 in the paper). The loss per image is

    CE(f(x'), target)  +  max(z_f[(Delta_R + 1)-th largest other label] - z_f[target], -kappa)

with z_f the logits of x' once TaintRadar's (soft) final region is filled: the second term is <= 0 exactly when
the target keeps a rank of at most Delta_R after filling, i.e. when TaintRadar lets the image pass. The K labels
whose logits rose most are picked in the forward pass (a discrete choice, held constant in the backward pass),
and the random filling pattern is redrawn at every step (an expectation over the detector's randomness). Every
``check_every`` steps the real, fitted TaintRadar is queried: an image counts as a bypass the first time it is
classified as the target and judged clean (that image is kept; its loss is masked out from then on).

Deviations, stated: the paper gives neither its loss nor its parametrisation. Its "step size 1" is read as
Adam's learning rate; we optimise the region's pixels in tanh space, where lr 1 saturates them at 0 / 1 within a
few steps, so the default lr is 0.1 (configurable). The region sits at a random position per image (seeded) or
a fixed corner; the paper ignores location invariance, i.e. one fixed region per image, as here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..classifier import Classifier, gradcam_from_gradients
from ..detectors.taintradar import TaintRadar, upsampled_cam
from ..errors import unknown_name
from ..validation import ParameterError, ParameterTypeError, check_keywords, check_number
from .adaptive import AdaptiveResult, evades, fresh_evasion
from .base import COMMON_PARAMETERS, Attack, AttackResult, register_attack
from .patch import POSITIONS
from .region_misleading import softened_cam


def soft_mask(cam: torch.Tensor, size: tuple[int, ...], t: float, threshold: float) -> torch.Tensor:
    """BPDA stand-in for TaintRadar's binarisation: (N, h, w) maps scaled to max 1, upsampled bilinearly to ``size``,
    then sigmoid(t (L - threshold)) (N, H, W)."""
    return torch.sigmoid(t * (upsampled_cam(cam, size) - threshold))


@register_attack()
class TaintRadarBPDA(Attack):
    """``TaintRadarBPDA(clf, taintradar, size=0.07, steps=2000)(x, y, targets)`` -> :class:`AdaptiveResult`.

    ``taintradar`` must be fitted (K and Delta_R chosen). ``success`` (and its alias ``evaded``) marks the bypasses:
    the images classified as their target *and* judged clean by the real detector; ``misclassified`` the target
    reached alone; ``recheck_evasion`` the share of ``recheck`` fresh detector draws (new noise, the detector
    re-seeded: :func:`~advguard.attacks.adaptive.fresh_evasion`) that bypassing image also evades.
    ``evasion_weight`` 0 drops the detector term: a plain localized targeted attack on the same region that stops
    once the target is reached, never querying the detector (the "without TaintRadar" baseline; the bypass then
    comes from one detector run on the result).
    """

    name = "taintradar-bpda"
    norm = "l0"
    targets_required = True
    requires = ("detector",)

    def __init__(
        self,
        classifier: Classifier,
        detector: TaintRadar,
        *,
        size: float = 0.07,
        position: str = "random",
        steps: int = 2000,
        lr: float = 0.1,
        t_every: int = 100,
        kappa: float = 0.0,
        evasion_weight: float = 1.0,
        check_every: int = 50,
        recheck: int = 5,
        **kw: Any,
    ):
        where = self.name
        check_keywords(where, kw, COMMON_PARAMETERS)
        if not all(hasattr(detector, a) for a in ("k_", "delta_r_", "fill_pattern", "params")):
            raise ParameterTypeError(f"{where}: detector must be a TaintRadar detector, got {type(detector).__name__}")
        if detector.k_ is None or detector.delta_r_ is None:
            raise ParameterError("the TaintRadar has no K / Delta_R: fit it on clean images before attacking it")
        size = check_number(
            "size (a share of the image area)", size, lo=0, hi=1, lo_open=True, hi_open=True, where=where
        )
        if not isinstance(position, str):
            raise ParameterTypeError(f"{where}: position must be one of {list(POSITIONS)}, got {position!r}")
        if position not in POSITIONS:
            raise unknown_name("region position", position, list(POSITIONS))
        count: dict[str, Any] = dict(lo=1, hi=1_000_000, integer=True, where=where)
        kw.setdefault("batch_size", 64)
        super().__init__(
            classifier,
            size=float(size),
            position=position,
            steps=int(check_number("steps", steps, **count)),
            lr=float(check_number("lr", lr, lo=0, lo_open=True, where=where)),
            t_every=int(check_number("t_every", t_every, **count)),
            kappa=float(check_number("kappa", kappa, lo=0, where=where)),
            evasion_weight=float(check_number("evasion_weight", evasion_weight, lo=0, where=where)),
            check_every=int(check_number("check_every", check_every, **count)),
            recheck=int(check_number("recheck", recheck, lo=0, hi=1_000_000, integer=True, where=where)),
            **kw,
        )
        self.detector = detector

    def region_masks(self, n: int, hw: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        """(n, 1, H, W) float masks of the square regions the attack may change."""
        h, w = hw
        s = max(1, min(h, w, int(round(float(np.sqrt(self.params["size"] * h * w))))))
        m = torch.zeros(n, 1, h, w)
        pos = self.params["position"]
        for i in range(n):
            if pos == "random":
                r = int(torch.randint(0, h - s + 1, (1,), generator=g))
                c = int(torch.randint(0, w - s + 1, (1,), generator=g))
            else:
                r = 0 if pos.startswith("top") else h - s
                c = 0 if pos.endswith("left") else w - s
            m[i, :, r : r + s, c : c + s] = 1
        return m

    def soft_pipeline(
        self, x: torch.Tensor, target: torch.Tensor, t: float, pattern: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TaintRadar on ``x`` with sigmoid binarisations of temperature ``t``, for the label ``target``:
        returns the logits of x and of x with the soft final region filled (both differentiable in x)."""
        det = self.detector
        p = det.params
        k_max = det.k_
        assert k_max is not None  # the detector is fitted (checked in __init__)
        size = tuple(x.shape[-2:])
        cam, z, a = softened_cam(self.classifier, x, p["layer"], p["temperature"], labels=target)
        with torch.enable_grad():
            est = soft_mask(cam, size, t, p["mask_threshold"])[:, None]
            z_est = self.classifier._forward(x * (1 - est) + pattern * est)
            rise = (z_est - z).detach().scatter(1, target[:, None], -torch.inf)
            labels = rise.topk(k_max, dim=1).indices
            inter = torch.ones_like(est[:, 0])
            for k in range(k_max):
                (gk,) = torch.autograd.grad(z.gather(1, labels[:, k : k + 1]).sum(), a, create_graph=True)
                inter = inter * soft_mask(gradcam_from_gradients(-gk, a), size, t, p["mask_threshold"])
            fin = inter[:, None]
            z_f = self.classifier._forward(x * (1 - fin) + pattern * fin)
        return z, z_f

    def _loss(self, z: torch.Tensor, z_f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(z, target, reduction="none")
        if not self.params["evasion_weight"]:
            return ce
        others = z_f.scatter(1, target[:, None], -torch.inf)
        delta_r = self.detector.delta_r_
        assert delta_r is not None  # the detector is fitted (checked in __init__)
        kth = others.topk(delta_r + 1, dim=1).values[:, -1]
        evade = (kth - z_f.gather(1, target[:, None])[:, 0]).clamp_min(-self.params["kappa"])
        loss: torch.Tensor = ce + self.params["evasion_weight"] * evade
        return loss

    def _evades(self, x: torch.Tensor) -> np.ndarray:
        return evades(self.detector, x)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        assert targets is not None  # targets_required: the base class refuses a call without them
        p = self.params
        clf = self.classifier
        n = x.shape[0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.batch_index_)
        m = self.region_masks(n, tuple(x.shape[-2:]), g).to(x.device)
        w = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=p["lr"])
        done = torch.zeros(n, dtype=torch.bool, device=x.device)

        def image(sel: slice | torch.Tensor = slice(None)) -> torch.Tensor:  # the images with their regions replaced
            return x[sel] * (1 - m[sel]) + m[sel] * (torch.tanh(w[sel]) + 1) / 2

        best = x.clone()
        step_of = np.full(n, -1)
        bar = tqdm(range(1, p["steps"] + 1), desc=self.name, leave=False, disable=not self.progress)
        for s in bar:
            t = 1 + (s - 1) // p["t_every"]
            act = torch.nonzero(~done).flatten()  # images already bypassing are left out of the passes
            with torch.enable_grad():
                xa = image(act)
                pattern = self.detector.fill_pattern(xa, g)
                z, z_f = self.soft_pipeline(xa, targets[act], float(t), pattern)
                loss = self._loss(z, z_f, targets[act]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if s % p["check_every"] and s != p["steps"]:
                continue
            with torch.no_grad():
                xa = image()
                hit = (clf._forward(xa).argmax(1) == targets) & ~done
            cand = torch.nonzero(hit).flatten()
            if len(cand):
                ev = (
                    torch.from_numpy(self._evades(xa[cand])).to(x.device)
                    if p["evasion_weight"]
                    else torch.ones(len(cand), dtype=torch.bool, device=x.device)
                )  # the baseline stops at the target
                for i in cand[ev].tolist():
                    done[i] = True
                    step_of[i] = s
                    best[i] = xa[i].detach()
            bar.set_postfix(bypassed=int(done.sum()), of=n, t=t)
            if bool(done.all()):
                break
        with torch.no_grad():
            best[~done] = image()[~done]
        recheck = np.full(n, np.nan)
        found = torch.nonzero(done).flatten()
        if p["recheck"] and len(found):  # fresh draws: the detector's seed replaced (an image repeats its own draw)
            recheck[found.cpu().numpy()] = fresh_evasion(self.detector, best[found], p["recheck"])
        return best, {"step": step_of, "recheck": recheck, "done": done.cpu().numpy()}

    def _finish(self, r: AttackResult, extras: dict[str, np.ndarray]) -> AdaptiveResult:
        """The :class:`AdaptiveResult` (targets are required): ``success`` = the bypass (judged clean when found
        *and* classified as the target in the float32 re-check), ``misclassified`` = the target reached alone."""
        step, recheck = extras["step"], extras["recheck"]
        done = torch.from_numpy(extras["done"])
        if not self.params["evasion_weight"]:
            done = done & torch.from_numpy(self._evades(r.x_adv))
        reached = r.success.clone()
        return AdaptiveResult(
            **{**r.__dict__, "success": done & reached},
            restart=torch.where(done, 0, -1),
            step=torch.from_numpy(step),
            recheck_evasion=torch.from_numpy(recheck),
            misclassified=reached,
        )
