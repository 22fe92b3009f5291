"""Attacks: one interface, ``make_attack(name, classifier, **params)(x, y, targets=None)``."""

from __future__ import annotations

from typing import Any

from ..classifier import Classifier
from ..errors import unknown_name
from ..validation import ParameterError, ParameterTypeError, check_keywords
from .base import ATTACKS, Attack, AttackResult, perturbation_norms, register_attack, shifted_targets

# Importing a module registers its attacks (``@register_attack``) in ATTACKS, in this order: the Foolbox ones,
# RP2, the adversarial patches (trained with ``fit`` first: ``needs_fit``), then the adaptive attacks (given the
# fitted detector they evade: ``requires = ("detector",)``).
# isort: off
from .standard import STANDARD_ATTACKS, FoolboxAttack
from .rp2 import RP2, Sticker
from .patch import AdversarialPatch, NotTrainedError, shape_mask
from .region_misleading import RegionMisleadingPatch
from .adaptive import DetectorAwareCW
from .taintradar_bpda import TaintRadarBPDA
from .adaptive_pgd import AdaptivePGD, BypassResult, DetectorTerm
from .adaptive_squeezing import AdaptiveSqueezing
from .adaptive_confidence import AdaptiveConfidence
from .adaptive_cnn import AdaptiveCNN
from .adaptive_imageops import AdaptiveImageOps
from .adaptive_loo import AdaptiveLOO
from .adaptive_erase_restore import AdaptiveEraseRestore
from .adaptive_guard import AdaptiveGuard
from .sentinet_patch import SentiNetPatch
from .square_bypass import SquareBypass
# isort: on


def make_attack(name: str, classifier: Classifier, **params: Any) -> Attack:
    """Build attack ``name`` (see :data:`ATTACKS`) for ``classifier``; epsilons in [0, 1] pixel units.

    Every parameter is checked here, before any image is seen: an unknown keyword (the closest valid one is
    named), a wrong type, or a value out of range (steps < 1, eps <= 0 or larger than any distance between two
    images, batch_size < 1...) raises an :class:`~advguard.AdvguardError` naming the parameter and its range.
    An adaptive attack is also given the fitted detector it evades (``detector=``, see ``Attack.requires``); a
    patch (``Attack.needs_fit``) is trained with ``fit`` before it is applied."""
    if not isinstance(name, str):
        raise ParameterTypeError(f"the attack name must be a str (one of {', '.join(sorted(ATTACKS))}), got {name!r}")
    if name not in ATTACKS:
        raise unknown_name("attack", name, list(ATTACKS))
    cls = ATTACKS[name]
    missing = [r for r in cls.requires if r not in params]
    if missing:
        raise ParameterError(
            f"attack {name!r} needs {', '.join(f'{r}=' for r in missing)} (the fitted detector it evades): "
            f"make_attack({name!r}, classifier, {', '.join(f'{r}=...' for r in missing)})"
        )
    objects = {r: params.pop(r) for r in cls.requires}
    check_keywords(f"attack {name!r}", params, cls.parameters())
    return cls(classifier, **objects, **params)


def bench_attacks() -> list[str]:
    """The attacks that need no detector (to evade) and no training (``fit``, as the patches do): called on images
    right away, ``make_attack(name, clf)(x, y)``. Some of them need ``targets=`` as well (one target class per
    image; :attr:`Attack.targets_required`, e.g. ``rp2``): ``[n for n in bench_attacks() if
    ATTACKS[n].targets_required]`` lists them. An experiment config may also name a patch attack
    (:func:`config_attacks`)."""
    return [n for n, c in ATTACKS.items() if not c.requires and not c.needs_fit]


def config_attacks() -> list[str]:
    """The attacks an experiment config can name in ``[[attack]]``: :func:`bench_attacks` and the patch attacks
    (``needs_fit``), which :func:`advguard.advsets.build_advset` trains on each chunk of clean images it then
    attacks (one universal patch per chunk of ``chunk_size`` images, TaintRadar's protocol); not the adaptive
    attacks, which need the fitted detector they evade."""
    return [n for n, c in ATTACKS.items() if not c.requires]


__all__ = [
    "ATTACKS",
    "AdaptiveCNN",
    "AdaptiveConfidence",
    "AdaptiveEraseRestore",
    "AdaptiveGuard",
    "AdaptiveImageOps",
    "AdaptiveLOO",
    "AdaptivePGD",
    "AdaptiveSqueezing",
    "BypassResult",
    "DetectorTerm",
    "AdversarialPatch",
    "Attack",
    "RP2",
    "RegionMisleadingPatch",
    "SentiNetPatch",
    "SquareBypass",
    "Sticker",
    "TaintRadarBPDA",
    "AttackResult",
    "DetectorAwareCW",
    "FoolboxAttack",
    "NotTrainedError",
    "STANDARD_ATTACKS",
    "bench_attacks",
    "config_attacks",
    "make_attack",
    "perturbation_norms",
    "register_attack",
    "shape_mask",
    "shifted_targets",
]
