"""Layer capture, written once: activations of named layers through forward hooks.

A layer spec is a module name of the classifier's network (``"block6"``, ``"features.13"``): the module's
output; or ``"name:input"``: the module's first input (e.g. ``"_avg_pooling:input"`` for EfficientNet, whose
last activation is a shared functional module with no output of its own). :class:`LayerCapture` hooks the
modules for the length of a ``with`` block; after a forward pass, ``cap[spec]`` is what each layer saw.

With ``leaf=True`` each captured activation is replaced, in the forward pass itself, by a detached copy that
requires grad: the rest of the network runs from it, so gradients of the output can be taken with respect to
the activation without differentiating the part of the network before it (TaintRadar's batched vector-Jacobian
products). Without it the activation stays in the autograd graph of the input (``create_graph`` losses on a
Grad-CAM of the input, as the region-misleading patch needs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

INPUT_SUFFIX = ":input"


def parse_layer(spec: str) -> tuple[str, bool]:
    """``"name"`` -> ("name", False) (the module's output); ``"name:input"`` -> ("name", True) (its first input)."""
    if not isinstance(spec, str) or not spec:
        from .errors import ParameterTypeError

        raise ParameterTypeError(f"a layer must be a module name (str), optionally with ':input', got {spec!r}")
    return (spec.removesuffix(INPUT_SUFFIX), True) if spec.endswith(INPUT_SUFFIX) else (spec, False)


class HasLayers(Protocol):
    """What layer capture needs of a classifier (:class:`~advguard.classifier.Classifier`)."""

    def layer(self, name: str) -> nn.Module: ...


def layer_module(classifier: HasLayers, spec: str) -> nn.Module:
    """The module a layer spec hooks (``classifier.layer``: an unknown name raises, naming the closest)."""
    if not isinstance(spec, str) or not spec:
        return classifier.layer(spec)  # its own error for a non-str or empty name
    return classifier.layer(parse_layer(spec)[0])


def _first(out: Any) -> torch.Tensor:
    first: torch.Tensor = out[0] if isinstance(out, (tuple, list)) else out
    return first


class LayerCapture:
    """``with LayerCapture(classifier, ["block6", "fc:input"]) as cap: classifier.forward(x)``, then ``cap["block6"]``.

    The hooks are removed when the block ends (also on an error). A module called more than once per forward
    pass keeps its last call's tensor. ``leaf``: see the module docstring. ``detach``: store detached tensors
    (inference captures that should not keep the graph alive).
    """

    def __init__(self, classifier: HasLayers, specs: Iterable[str], *, leaf: bool = False, detach: bool = False):
        if isinstance(specs, str):
            specs = [specs]
        self.specs = list(dict.fromkeys(specs))
        self.modules = {s: layer_module(classifier, s) for s in self.specs}  # unknown names raise here
        self.leaf, self.detach = leaf, detach
        self.tensors: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _keep(self, spec: str, a: torch.Tensor) -> torch.Tensor:
        if self.leaf:
            a = a.detach().requires_grad_(True)
        self.tensors[spec] = a.detach() if self.detach else a
        return a

    def __enter__(self) -> LayerCapture:
        for spec, mod in self.modules.items():
            if parse_layer(spec)[1]:

                def pre_hook(_m: nn.Module, args: tuple[Any, ...], spec: str = spec) -> tuple[Any, ...] | None:
                    a = self._keep(spec, args[0])
                    return (a, *args[1:]) if self.leaf else None

                self._handles.append(mod.register_forward_pre_hook(pre_hook))
            else:

                def hook(_m: nn.Module, _i: tuple[Any, ...], out: Any, spec: str = spec) -> Any:
                    a = self._keep(spec, _first(out))
                    if not self.leaf:
                        return None
                    return (a, *out[1:]) if isinstance(out, (tuple, list)) else a

                self._handles.append(mod.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __getitem__(self, spec: str) -> torch.Tensor:
        if spec not in self.tensors:
            from .errors import InputError

            raise InputError(f"layer {spec!r} was not called in the forward pass")
        return self.tensors[spec]

    def __contains__(self, spec: str) -> bool:
        return spec in self.tensors

    def pop(self, spec: str) -> torch.Tensor:
        """The captured tensor of ``spec``, forgotten (so the next batch's cannot be mistaken for it)."""
        t = self[spec]
        del self.tensors[spec]
        return t
