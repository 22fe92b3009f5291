"""``Classifier``: any ``nn.Module`` plus its input spec, with batched, validated, accounted inference.

Images given to a Classifier are always float32 NCHW in [0, 1] (``bounds``); mean/std
normalisation happens inside (:attr:`Classifier.module` is the normalised model that
attacks and Foolbox use). Every image that goes through the network is counted in
:attr:`Classifier.num_passes`, which detectors' cost figures are built on.

Inference-only calls (``logits``, ``probs``, ``predict``, ``top_k``, ``activations``)
run under ``torch.inference_mode()`` in batches of ``batch_size``, in one of the
:data:`INFERENCE_VARIANTS` (``"float32"``, ``"channels-last"``, ``"bf16"`` autocast on CPU,
``"channels-last+bf16"``); gradient calls (``forward``, ``input_gradient``,
``layer_gradient``) are always float32. ``benchmarks/throughput.py`` measures which variant is
fastest per model and whether it changes predictions.

**Devices**: a Classifier runs on the device its model is on (``device=`` moves it; an absent device raises
:class:`~advguard.errors.DeviceError`). :meth:`Classifier.forward` returns its logits on that device; the
inference and gradient calls return CPU tensors.

**Inputs** of every call: a float NCHW numpy array or torch tensor in [0, 1], or (through
:func:`advguard.images.load_images`) a path to an image file or folder, a PIL image, or a list of them, read at the
model's input size: an image of another size is refused unless the Classifier has a ``resize`` policy.

**Model outputs**: a model whose forward returns something other than the logits tensor (Hugging Face's
``ImageClassifierOutput``, a dict, a tuple) is wrapped with ``output=``: an attribute / key name (``"logits"``),
a tuple index, or a function ``output -> logits``; it applies everywhere the model's output is used (logits,
gradients, attacks, Grad-CAM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .devices import indexed, module_device, resolve_device
from .errors import AdvguardError, unknown_name
from .layers import LayerCapture
from .validation import (
    ParameterError,
    ParameterTypeError,
    as_image_batch,
    as_labels,
    check_batch_size,
    check_image_tensor,
    check_number,
)

INFERENCE_VARIANTS = ("float32", "channels-last", "bf16", "channels-last+bf16")


class Normalize(nn.Module):
    """``(x - mean) / std`` as a module, so the normalised model is one differentiable ``nn.Module``."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


#: How the logits are read from a model's output: None (the output is the logits tensor), an attribute or key name,
#: a tuple / list index, or a function.
OutputAccessor = str | int | Callable[[Any], torch.Tensor] | None
#: What every image-taking call accepts (see :meth:`Classifier.validate`).
ImageInput = np.ndarray | torch.Tensor | str | os.PathLike[str] | Image.Image | Sequence[Any]


def _describe_output(out: Any) -> str:
    """A short description of a model output that is not a tensor, naming what could hold the logits."""
    kind = f"an object of type {type(out).__name__}"
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return f"{kind} with fields {[f.name for f in dataclasses.fields(out)]}"
    if isinstance(out, dict) or hasattr(out, "keys"):
        try:
            return f"{kind} with keys {list(out.keys())}"
        except Exception:  # noqa: BLE001 - only a description
            pass
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items ({', '.join(type(v).__name__ for v in out[:4])})"
    return kind


def read_logits(out: Any, output: OutputAccessor) -> torch.Tensor:
    """The logits tensor from a model's raw output, by ``output`` (see :data:`OutputAccessor`); a clear
    :class:`ParameterError` when the output is not a tensor and ``output`` does not lead to one."""
    if output is None:
        value = out
    elif callable(output):
        value = output(out)
    elif isinstance(output, str):
        if isinstance(out, dict):
            if output not in out:
                raise ParameterError(f"output={output!r}: the model returned {_describe_output(out)}")
            value = out[output]
        elif hasattr(out, output):
            value = getattr(out, output)
        elif hasattr(out, "keys") and hasattr(out, "__getitem__") and output in out.keys():
            value = out[output]
        else:
            raise ParameterError(f"output={output!r}: the model returned {_describe_output(out)}")
    else:  # an index
        try:
            value = out[output]
        except (TypeError, IndexError, KeyError) as e:
            raise ParameterError(f"output={output!r}: the model returned {_describe_output(out)} ({e})") from None
    if not isinstance(value, torch.Tensor):
        if output is None:
            raise ParameterError(
                f"the model returned {_describe_output(out)}, not a logits tensor: pass output= to the Classifier "
                "to say where the logits are (output='logits' for Hugging Face models, output=0 for a tuple, or a "
                "function output -> logits)"
            )
        raise ParameterError(f"output={output!r} gave a {type(value).__name__}, not a logits tensor")
    return value


class NormalizedModel(nn.Module):
    """``read(model(normalize(x)))``: the normalised model whose output is the logits tensor; children are named
    ``normalize`` and ``model``. ``output`` reads the logits from a model that returns something else
    (see :data:`OutputAccessor`)."""

    def __init__(self, model: nn.Module, normalize: nn.Module, output: OutputAccessor = None):
        super().__init__()
        self.normalize = normalize
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(self.normalize(x))
        if self.output is None and isinstance(out, torch.Tensor):
            return out
        return read_logits(out, self.output)


def gradcam_from_gradients(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Grad-CAM map ReLU(sum_k alpha_k A^k) with alpha_k the spatial mean of ``g`` (dscore / dA) per channel:
    (..., C, h, w) gradients and activations (broadcasting) -> (..., h, w), not rescaled. Pass ``-g`` for the
    negative Grad-CAM."""
    return F.relu((g.mean((-2, -1), keepdim=True) * a).sum(-3))


class Classifier:
    """Wrap ``model`` (expects normalised input) with its input specification.

    Parameters
    ----------
    model: the network; any ``nn.Module`` whose forward maps (N, C, H, W) to logits (N, K), or to an output the
        logits are read from with ``output``.
    channels, size: expected input channels and (H, W); inputs are checked against them.
    mean, std: per-channel normalisation applied inside, on [0, 1] images (defaults: none).
    num_classes: inferred with one dummy forward pass when not given.
    bounds: ``(low, high)``, the range of the pixel values the model takes (default ``(0, 1)``); every array or
        tensor given to the Classifier, its detectors and attacks is checked against it, and attacks' epsilons
        are in its units. Image files and PIL images (read in [0, 1]) are mapped linearly onto it
        (``low + (high - low) * x``: pixel value 255 becomes ``high``), so a ``(0, 255)`` model gets 0..255.
    gradcam_layer: name of the layer Grad-CAM uses; default the last ``nn.Conv2d``.
    batch_size: images per forward pass in the batched calls (``logits``, ``predict``, gradients...), default 256;
        each call's ``batch_size=`` overrides it.
    inference: memory layout / precision of inference-only calls, one of :data:`INFERENCE_VARIANTS`.
    name: shown in reprs, reports and detector files (default: the model's class name); detector files record
        it with the classifier's fingerprint.
    device: where the model runs. Default: the device the model is on (its parameters'; CPU for a model without
        any); a device given here moves the model there. A device this machine does not have raises
        :class:`~advguard.errors.DeviceError` naming it and the available ones.
    output: where the logits are in the model's output, for models that do not return a tensor: an attribute or
        key name (``"logits"`` for Hugging Face's ``ImageClassifierOutput`` or a dict), an index (``0`` for a
        tuple), or a function ``output -> logits``. Applied to every use of the model (logits, gradients,
        attacks, Grad-CAM).
    resize: how image files and PIL images (not arrays) of another size than ``size`` are brought to it:
        ``None`` refuses them, ``"resize"`` stretches, ``"center-crop"`` keeps the aspect ratio
        (see :func:`advguard.images.load_images`; each resize is reported with an ``ImageResizedWarning``).

    The Classifier is a wrapper for inference: it puts ``model`` in eval mode (``model.eval()``, on the model
    itself, not a copy; attacks do it again before they run), so call ``model.train()`` before training it again.
    It does not touch the parameters' ``requires_grad``: a model being fine-tuned keeps training. Advguard's own
    gradient computations (attacks, input / layer gradients, Grad-CAM, detectors) run inside :meth:`frozen`,
    so they never compute or accumulate gradients into the parameters (``p.grad`` is left as it was).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        channels: int,
        size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        gradcam_layer: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 256,
        inference: str = "float32",
        name: str | None = None,
        output: OutputAccessor = None,
        resize: str | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise ParameterTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.device = resolve_device(device) if device is not None else module_device(model)
        if (
            output is not None
            and not callable(output)
            and (isinstance(output, bool) or not isinstance(output, (str, int)))
        ):
            raise ParameterTypeError(
                f"Classifier: output must be an attribute / key name, an index or a function output -> logits, "
                f"got {output!r}"
            )
        self.output = output
        from .images import _check_policy

        self.resize = _check_policy(resize)
        self.channels = int(check_number("channels", channels, lo=1, integer=True, where="Classifier"))
        if size is not None:
            if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
                raise ParameterTypeError(f"Classifier: size must be (H, W), two integers >= 1, got {size!r}")
            h, w = (int(check_number("size", v, lo=1, integer=True, where="Classifier")) for v in size)
            size = (h, w)
        self.size = size
        if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2:
            raise ParameterTypeError(f"Classifier: bounds must be (low, high), got {bounds!r}")
        lo_b, hi_b = (float(check_number("bounds", v, where="Classifier")) for v in bounds)
        if not lo_b < hi_b:
            raise ParameterError(f"Classifier: bounds must be (low, high) with low < high, got {bounds!r}")
        self.bounds = (lo_b, hi_b)
        self.batch_size = check_batch_size(batch_size, where="Classifier")
        if not isinstance(inference, str) or inference not in INFERENCE_VARIANTS:
            raise ParameterError(f"inference must be one of {INFERENCE_VARIANTS}, got {inference!r}")
        self.inference = inference
        self.name = name or type(model).__name__
        try:
            mean = tuple(mean) if mean is not None else (0.0,) * self.channels
            std = tuple(std) if std is not None else (1.0,) * self.channels
        except TypeError:
            raise ParameterTypeError(f"mean/std need {self.channels} numbers each, got {mean!r} and {std!r}") from None
        if len(mean) != self.channels or len(std) != self.channels:
            raise ParameterError(f"mean/std need {self.channels} values, got {len(mean)} and {len(std)}")
        mean = tuple(float(check_number("mean", v, where="Classifier")) for v in mean)
        std = tuple(float(check_number("std", v, lo=0, lo_open=True, where="Classifier")) for v in std)
        self.mean, self.std = mean, std
        if gradcam_layer is not None and not isinstance(gradcam_layer, str):
            raise ParameterTypeError(f"Classifier: gradcam_layer must be a layer name (str), got {gradcam_layer!r}")
        self.model: nn.Module = model.eval().to(self.device)
        self.module = NormalizedModel(self.model, Normalize(mean, std), output).eval().to(self.device)
        self.device = indexed(self.device)  # "cuda" -> "cuda:0", as its tensors report it
        self.num_passes = 0
        self._layers: dict[str, nn.Module] = dict(self.model.named_modules())
        self.gradcam_layer = gradcam_layer or self._last_conv()
        if self.gradcam_layer is not None and self.gradcam_layer not in self._layers:
            raise unknown_name("layer", self.gradcam_layer, self.layer_names())
        self.num_classes = (
            int(check_number("num_classes", num_classes, lo=2, integer=True, where="Classifier"))
            if num_classes is not None
            else self._infer_num_classes()
        )

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return (
            f"Classifier({self.name}, input=({self.channels}, {self.size}), classes={self.num_classes}, "
            f"device={self.device}, inference={self.inference!r})"
        )

    def _last_conv(self) -> str | None:
        convs = [n for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]
        return convs[-1] if convs else None

    def _infer_num_classes(self) -> int:
        h, w = self.size or (32, 32)
        probe = (1, self.channels, h, w)
        try:
            with torch.inference_mode():
                out = self.module(torch.zeros(*probe, device=self.device))
        except AdvguardError:  # output= problems name themselves
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as e:  # torch's shape errors, a model's own checks
            size = f"size={self.size}" if self.size is not None else "size=None (probed at 32x32: pass size=(H, W))"
            raise ParameterError(
                f"Classifier: the model fails on an input of shape {probe} (channels={self.channels}, {size}): "
                f"check channels= and size= against what the model takes. The model said: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            ) from e
        if out.ndim != 2 or out.shape[1] < 2:
            raise ParameterError(
                f"model output has shape {tuple(out.shape)}; expected (N, num_classes) logits, num_classes >= 2"
            )
        return int(out.shape[1])

    def layer_names(self) -> list[str]:
        """Names usable with :meth:`activations` and :meth:`layer_gradient` (``nn.Module.named_modules``)."""
        return [n for n in self._layers if n]

    def layer(self, name: str) -> nn.Module:
        if not isinstance(name, str):
            raise ParameterTypeError(f"a layer name must be a str (one of layer_names()), got {name!r}")
        if name not in self._layers or not name:
            raise unknown_name("layer", name, self.layer_names())
        return self._layers[name]

    def _batch_size(self, batch_size: int | None) -> int:
        """``batch_size`` checked (an integer >= 1), or the classifier's default when None."""
        return self.batch_size if batch_size is None else check_batch_size(batch_size)

    def _labels(self, y: np.ndarray | torch.Tensor | Sequence[int], n: int, name: str = "y") -> torch.Tensor:
        return as_labels(y, n, self.num_classes, name=name)

    @staticmethod
    def _temperature(temperature: float) -> float:
        return float(check_number("temperature", temperature, lo=0, lo_open=True))

    def validate(self, x: ImageInput, name: str = "x") -> torch.Tensor:
        """Check shape, dtype, range and finiteness; return a float32 tensor (CPU for a numpy array, the input's
        device for a tensor). Image files, folders and PIL images (or lists of them) are read with
        :func:`advguard.images.load_images` at :attr:`size`, resized only by the :attr:`resize` policy, and mapped
        from [0, 1] onto :attr:`bounds`."""
        from .images import is_image_source, load_images

        if is_image_source(x):
            x = load_images(cast(Any, x), size=self.size, resize=self.resize, channels=self.channels)
            lo, hi = self.bounds
            if (lo, hi) != (0.0, 1.0):  # files and PIL images are read in [0, 1]: onto the model's bounds
                x = (lo + (hi - lo) * x.astype(np.float64)).astype(np.float32)
        return as_image_batch(
            cast("np.ndarray | torch.Tensor", x), channels=self.channels, size=self.size, bounds=self.bounds, name=name
        )

    def _batches(self, x: torch.Tensor, batch_size: int | None) -> Iterator[torch.Tensor]:
        bs = self._batch_size(batch_size)
        for i in range(0, x.shape[0], bs):
            yield x[i : i + bs].to(self.device, non_blocking=True)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        if "bf16" in self.inference:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            with torch.inference_mode():
                yield

    def _prep(self, xb: torch.Tensor) -> torch.Tensor:
        if self.inference.startswith("channels-last"):
            return xb.contiguous(memory_format=torch.channels_last)
        return xb

    @contextlib.contextmanager
    def exact(self) -> Iterator[Classifier]:
        """Run inference-only calls in float32 inside this block (decisions on boundary cases:
        whether an attack succeeded, whether a clean image is correctly classified)."""
        saved, self.inference = self.inference, "float32"
        try:
            yield self
        finally:
            self.inference = saved

    @contextlib.contextmanager
    def frozen(self) -> Iterator[Classifier]:
        """Inside this block the model's parameters do not require grad (the ones that did are switched back on
        exit): gradients with respect to the input then skip the parameters' (faster, and nothing accumulates in
        ``p.grad``, even where a library calls ``backward()``, like Foolbox). Not thread-safe: a training step on
        the same model in another thread would see its parameters frozen."""
        thawed = [p for p in self.module.parameters() if p.requires_grad]
        for p in thawed:
            p.requires_grad_(False)
        try:
            yield self
        finally:
            for p in thawed:
                p.requires_grad_(True)

    def reset_passes(self) -> int:
        """Zero the pass counter and return its previous value."""
        n, self.num_passes = self.num_passes, 0
        return n

    # ---------------------------------------------------------------- inference
    def forward(self, x: ImageInput, *, validate: bool = True) -> torch.Tensor:
        """Differentiable float32 logits (N, K) of one batch on :attr:`device` (no batching); counts passes.

        A tensor is used as it is (not copied or detached: the gradient flows back to it) after cheap checks
        (:func:`~advguard.validation.check_image_tensor`: a floating (N, C, H, W) tensor with the model's channels
        and size, finite values within :attr:`bounds`, by one min/max reduction); a float16 / float64 one is cast
        to float32. ``validate=False`` skips the checks (the caller vouches for the tensor). Anything else (a numpy
        array, image files, PIL images) is validated first (:meth:`validate`)."""
        if not isinstance(x, torch.Tensor):
            x = self.validate(x)
        elif validate:
            check_image_tensor(x, channels=self.channels, size=self.size, bounds=self.bounds)
            if x.dtype != torch.float32:
                x = x.float()
        return self._forward(x)

    __call__ = forward

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without the checks, for advguard's own calls on tensors it built (attacks' iterates,
        detectors' masked images), which are checked once where they enter."""
        self.num_passes += int(x.shape[0])
        out: torch.Tensor = self.module(x.to(self.device))
        return out

    def logits(self, x: ImageInput, batch_size: int | None = None, validate: bool = True) -> torch.Tensor:
        """Logits (N, K) as a float32 CPU tensor, computed in batches under inference mode."""
        bs = self._batch_size(batch_size)
        t = self.validate(x) if validate else cast(torch.Tensor, x)  # validate=False: the caller's own tensor
        outs = []
        with self._inference():
            for xb in self._batches(t, bs):
                self.num_passes += int(xb.shape[0])
                outs.append(self.module(self._prep(xb)).float().cpu())
        return torch.cat(outs)

    def probs(self, x: ImageInput, batch_size: int | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Softmax probabilities (N, K) of ``logits / temperature`` (temperature > 0)."""
        temperature = self._temperature(temperature)
        return F.softmax(self.logits(x, batch_size) / temperature, dim=1)

    def predict(self, x: ImageInput, batch_size: int | None = None) -> torch.Tensor:
        """Top-1 labels (N,) int64."""
        return self.logits(x, batch_size).argmax(1)

    def top_k(self, x: ImageInput, k: int = 5, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, labels)`` of the k most likely classes, each (N, k), most likely first."""
        k = int(check_number("k", k, lo=1, hi=self.num_classes, integer=True, where="top_k"))
        return self.probs(x, batch_size).topk(k, dim=1)

    def accuracy(self, x: ImageInput, y: np.ndarray | torch.Tensor, batch_size: int | None = None) -> float:
        """Top-1 accuracy on labelled images."""
        t = self.validate(x)
        yt = self._labels(y, t.shape[0])
        return float((self.predict(t, batch_size) == yt).float().mean())

    def activations(
        self,
        x: ImageInput,
        layer_names: Sequence[str],
        batch_size: int | None = None,
        reduce: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
        include_logits: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Outputs of the named layers via forward hooks, concatenated over batches (CPU, float32).

        ``reduce(name, activation)`` (optional) is applied per batch before storing, e.g. to keep
        only selected units and bound memory. With ``include_logits`` the key ``"logits"`` is added.
        """
        if isinstance(layer_names, str):
            raise ParameterTypeError(
                f"layer_names must be a list of layer names, got the string {layer_names!r}; use [{layer_names!r}]"
            )
        try:
            layer_names = list(dict.fromkeys(layer_names))  # a name given twice is hooked (and returned) once
        except TypeError:
            raise ParameterTypeError(f"layer_names must be a list of layer names, got {layer_names!r}") from None
        if reduce is not None and not callable(reduce):
            raise ParameterTypeError(f"reduce must be a function (name, activation) -> tensor, got {reduce!r}")
        bs = self._batch_size(batch_size)
        cap = LayerCapture(self, layer_names)  # unknown names raise here, naming the closest
        t = self.validate(x)
        store: dict[str, list[torch.Tensor]] = {n: [] for n in layer_names}
        logits = []
        with cap, self._inference():
            for xb in self._batches(t, bs):
                self.num_passes += int(xb.shape[0])
                out = self.module(self._prep(xb))
                if include_logits:
                    logits.append(out.float().cpu())
                for n in layer_names:
                    a = cap.pop(n).float()
                    store[n].append((reduce(n, a) if reduce else a).contiguous().cpu())
        res = {n: torch.cat(v) for n, v in store.items()}
        if include_logits:
            res["logits"] = torch.cat(logits)
        return res

    # ---------------------------------------------------------------- gradients
    def input_gradient(
        self,
        x: ImageInput,
        y: np.ndarray | torch.Tensor | Sequence[int],
        loss: str = "ce",
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Gradient w.r.t. the [0, 1] input of per-image cross-entropy (``"ce"``) or of the class-``y`` logit."""
        if not isinstance(loss, str) or loss not in ("ce", "logit"):
            raise ParameterError(f"loss must be 'ce' or 'logit', got {loss!r}")
        bs = self._batch_size(batch_size)
        t = self.validate(x)
        yt = self._labels(y, t.shape[0])
        grads = []
        for i, xb in enumerate(self._batches(t, bs)):
            yb = yt[i * bs : i * bs + xb.shape[0]].to(self.device)
            xb = xb.clone().requires_grad_(True)
            with torch.enable_grad(), self.frozen():
                out = self._forward(xb)
                if loss == "ce":
                    obj = F.cross_entropy(out, yb, reduction="sum")
                else:  # "logit" (checked above)
                    obj = out.gather(1, yb[:, None]).sum()
                (g,) = torch.autograd.grad(obj, xb)
            grads.append(g.cpu())
        return torch.cat(grads)

    def layer_gradient(
        self,
        x: ImageInput,
        layer_name: str,
        y: np.ndarray | torch.Tensor | Sequence[int],
        score: str = "logit",
        temperature: float = 1.0,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activation ``A`` of ``layer_name`` and ``d score / d A`` for class ``y`` of each image.

        ``score``: ``"logit"`` (Z_y) or ``"log_softmax"`` (log softmax(Z / temperature)_y, as in
        TaintRadar's softened Grad-CAM loss).
        """
        if not isinstance(score, str) or score not in ("logit", "log_softmax"):
            raise ParameterError(f"score must be 'logit' or 'log_softmax', got {score!r}")
        temperature = self._temperature(temperature)
        bs = self._batch_size(batch_size)
        cap = LayerCapture(self, [layer_name])  # ``"name:input"`` too
        t = self.validate(x)
        yt = self._labels(y, t.shape[0])
        acts, grads = [], []
        with cap:
            for i, xb in enumerate(self._batches(t, bs)):
                yb = yt[i * bs : i * bs + xb.shape[0]].to(self.device)
                with torch.enable_grad(), self.frozen():
                    out = self._forward(xb.detach().requires_grad_(True))
                    a = cap.pop(layer_name)
                    if score == "logit":
                        obj = out.gather(1, yb[:, None]).sum()
                    else:  # "log_softmax" (checked above)
                        obj = F.log_softmax(out / temperature, dim=1).gather(1, yb[:, None]).sum()
                    (g,) = torch.autograd.grad(obj, a)
                acts.append(a.detach().cpu())
                grads.append(g.cpu())
        return torch.cat(acts), torch.cat(grads)

    def gradcam(
        self,
        x: ImageInput,
        y: np.ndarray | torch.Tensor | Sequence[int],
        score: str = "logit",
        temperature: float = 1.0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Grad-CAM heatmaps (N, h, w) on :attr:`gradcam_layer`, ReLU'd and scaled to max 1 (Selvaraju et al.)."""
        if self.gradcam_layer is None:
            raise ParameterError("this model has no Conv2d layer; pass gradcam_layer= to the Classifier")
        a, g = self.layer_gradient(
            x, self.gradcam_layer, y, score=score, temperature=temperature, batch_size=batch_size
        )
        cam = gradcam_from_gradients(g, a)
        peak = cam.flatten(1).max(1).values.clamp_min(1e-12)
        return cam / peak[:, None, None]
