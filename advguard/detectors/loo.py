"""Leave-one-out attribution detectors: ML-LOO and Segmentation Fault (paper: ``segmentation-fault-ml-loo``;
docs/methods/segfault.md).

For an image x and each occlusion unit i (a pixel, a channel-pixel, or a superpixel segment), replace the
unit by a baseline and record the chosen output nodes: phi_i = |f(x_i) - f(x)| (softmax probabilities).
The feature per node is a dispersion statistic of phi over all units: the inter-quartile range (the
papers'), or std / median absolute deviation. Flavours: ``1d`` (the predicted class's probability only),
``10d`` (all output nodes) and ``multilayer`` (all output nodes plus ``units_per_layer`` hidden units, 200 as
in the paper, drawn with the detector's seed from each of the last ``layers`` leaf modules before the
output that run once per forward pass; the selection is made on the first call and saved with the
detector). Adversarial images, sitting near a boundary, have heavier-tailed
attribution distributions than clean ones.

Segmentation (Segmentation Fault): scikit-image Felzenszwalb (``scale``, ``sigma``, ``min_size``), Quickshift
(``sigma``, ``max_dist``, ``kernel_size``, ``ratio``) or SLIC (``n_segments``, ``compactness``), on a thread
pool, given as ``unit_params`` (checked: an unknown key or an out-of-range value is a ParameterError). By
default the image is segmented in [0, 1] pixel space. Felzenszwalb and Quickshift also take ``value_range``
(default 1): the image is multiplied by it before segmenting, so ``value_range=255`` segments the 8-bit
[0, 255] image that code written for uint8 arrays sees (the detector still takes float32 NCHW in [0, 1],
and the occlusion itself is unchanged). It matters because Felzenszwalb's ``scale`` and Quickshift's
``max_dist`` act on colour differences: Felzenszwalb on [0, 255] with ``scale`` equals [0, 1] with
``scale / 255``; Quickshift converts the float image to CIELAB, which on [0, 255] input is outside sRGB's
domain and stretches colour distances ~(255 ** 0.8)x, so nearly every pixel becomes its own segment. SLIC
rescales every image to [0, 1] itself, so it does not take ``value_range``.

Cost: for one-pixel units (``pixel``, ``channel-pixel``) on models whose first layers are convolutions,
pools and per-position modules, ``patch=True`` (default) computes the clean image's early feature maps once
and each occlusion's change only on the small windows it can reach
(:mod:`~advguard.detectors.occlusion_patch`; equal to the plain pass up to float rounding); otherwise the
occluded variants of each image are built and classified in chunks of ``batch_size`` under
inference mode, and each image's attributions are reduced to its statistic as soon as they are complete,
so at most one image's (units x nodes) array is alive (the paper held all per-pixel attributions of a
batch: ~2 GB for 128 images). The number of units per image is recorded in ``units_per_image_``.

Baselines: ``zero`` (black), ``mean`` (the classifier's per-channel normalisation mean, i.e. the dataset
mean for zoo models; ``baseline_value`` overrides it), ``blur`` (the pixel's value in a Gaussian-blurred
copy, sigma ``blur_sigma``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._parallel import thread_map
from .._progress import progress_bar
from ..classifier import Classifier
from ..errors import ParameterError, ParameterTypeError, unknown_name
from ..validation import check_bool
from .base import Detector, check_count, check_rate, register_detector

if TYPE_CHECKING:  # pragma: no cover
    from torch.utils.hooks import RemovableHandle

    from .occlusion_patch import LocalOcclusion

#: node values of the prepared image with one position changed: (values, rows, cols) -> (B, D)
PixelNodes = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

UNITS = ("pixel", "channel-pixel", "felzenszwalb", "quickshift", "slic")
BASELINES = ("zero", "mean", "blur")
FEATURES = ("1d", "10d", "multilayer")
STATISTICS = ("iqr", "std", "mad")
SEGMENT_DEFAULTS = {
    "felzenszwalb": {"scale": 100.0},
    "quickshift": {"sigma": 1.0, "max_dist": 10.0, "kernel_size": 3},
    "slic": {"n_segments": 64, "compactness": 10.0},
}
#: the ``unit_params`` each occlusion unit takes: name -> (low, high, low_open, integer) for check_number;
#: ``value_range``: the image is segmented scaled to [0, value_range] (1: as given; 255: the 8-bit range)
UNIT_PARAMS: dict[str, dict[str, tuple[float | None, float | None, bool, bool]]] = {
    "pixel": {},
    "channel-pixel": {},
    "felzenszwalb": {
        "scale": (0.0, None, True, False),
        "sigma": (0.0, None, False, False),
        "min_size": (0, None, False, True),
        "value_range": (0.0, 65535.0, True, False),
    },
    "quickshift": {
        "sigma": (0.0, None, False, False),
        "max_dist": (0.0, None, False, False),
        "kernel_size": (0.0, None, True, False),
        "ratio": (0.0, 1.0, False, False),
        "value_range": (0.0, 65535.0, True, False),
    },
    "slic": {"n_segments": (1, None, False, True), "compactness": (0.0, None, True, False)},
}


def check_unit_params(unit: str, params: Any) -> dict[str, Any]:
    """``params`` (a dict) checked for occlusion ``unit``: every key one ``unit`` takes and every value a finite
    number in its range, else a :class:`ParameterError` naming it. Returned as given (not converted), so saved
    detectors and cache keys stay the same."""
    from ..validation import check_keywords, check_number

    if unit not in UNIT_PARAMS:
        raise unknown_name("occlusion unit", unit, list(UNITS))
    if not isinstance(params, dict):
        raise ParameterTypeError(f"unit_params must be a dict, got {type(params).__name__}")
    where = f"occlusion unit {unit!r}"
    allowed = UNIT_PARAMS[unit]
    if "value_range" in params and "value_range" not in allowed:
        why = (
            "SLIC rescales every image to [0, 1] itself, so the value range cannot change its segments"
            if unit == "slic"
            else "one-pixel units do not segment the image"
        )
        raise ParameterError(f"{where} takes no value_range ({why}); value_range is for felzenszwalb and quickshift")
    check_keywords(where, params, allowed)
    for k, v in params.items():
        lo, hi, lo_open, integer = allowed[k]
        check_number(k, v, lo=lo, hi=hi, lo_open=lo_open, integer=integer, where=where)
    return dict(params)


def segment(image: np.ndarray, unit: str, **params: Any) -> np.ndarray:
    """(H, W) int label map 0..K-1 of an (H, W, C) image in [0, 1] for occlusion ``unit``; every pixel labelled.
    ``params``: the unit's :data:`UNIT_PARAMS` (checked); ``value_range`` scales the image to [0, value_range]
    before segmenting."""
    from skimage import segmentation as seg

    h, w = image.shape[:2]
    check_unit_params(unit, params)
    if unit in ("pixel", "channel-pixel"):
        return np.arange(h * w).reshape(h, w)
    p = {**SEGMENT_DEFAULTS[unit], **params}
    img = np.ascontiguousarray(image, dtype=np.float64)
    if float(p.get("value_range", 1)) != 1.0:
        img = img * float(p["value_range"])
    multi = img.shape[2] > 1
    if unit == "felzenszwalb":
        lab = seg.felzenszwalb(
            img if multi else img[:, :, 0],
            scale=p["scale"],
            sigma=p.get("sigma", 0.8),
            min_size=int(p.get("min_size", 20)),
        )
    elif unit == "quickshift":
        rgb = img if img.shape[2] == 3 else np.repeat(img[:, :, :1], 3, axis=2)
        lab = seg.quickshift(
            rgb, ratio=p.get("ratio", 1.0), kernel_size=p["kernel_size"], max_dist=p["max_dist"], sigma=p["sigma"]
        )
    else:
        lab = seg.slic(
            img, n_segments=int(p["n_segments"]), compactness=p["compactness"], start_label=0, channel_axis=-1
        )
    _, inv = np.unique(lab, return_inverse=True)  # consecutive 0..K-1
    return inv.reshape(h, w)


def dispersion(phi: np.ndarray, statistic: str = "iqr", axis: int = 0) -> np.ndarray:
    """IQR (Q75 - Q25), standard deviation or median absolute deviation of ``phi`` along ``axis``."""
    if statistic == "iqr":
        if phi.ndim == 2 and axis == 0:  # along contiguous rows: ~2x faster for (1,024 x 4,010) attributions
            phi, axis = np.ascontiguousarray(phi.T), 1
        q75, q25 = np.percentile(phi, [75, 25], axis=axis)
        iqr: np.ndarray = q75 - q25
        return iqr
    if statistic == "std":
        std: np.ndarray = phi.std(axis=axis)
        return std
    if statistic == "mad":
        med = np.median(phi, axis=axis, keepdims=True)
        mad: np.ndarray = np.median(np.abs(phi - med), axis=axis)
        return mad
    raise unknown_name("dispersion statistic", statistic, list(STATISTICS))


def occlusion_attributions(
    nodes: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: np.ndarray,
    baseline: torch.Tensor,
    channel_units: bool = False,
    batch_size: int = 1024,
    pixel_nodes: PixelNodes | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(v0 (D,), phi (K, D)) for one validated image ``x`` (1, C, H, W): the node values ``nodes(x)`` and
    |nodes(x with unit k replaced by ``baseline``) - nodes(x)| for every unit k of ``labels`` (H, W);
    with ``channel_units`` every (channel, pixel) is its own unit (K = C * H * W).

    ``pixel_nodes(values (B, C), rows, cols)``, for one-pixel units (``labels`` numbering the pixels row
    by row, or ``channel_units``): the node values of ``x`` with pixel (rows[b], cols[b]) set to
    ``values[b]``, computed without building the occluded images (:class:`LocalOcclusion`)."""
    c, h, w = x.shape[1:]
    lab = torch.from_numpy(np.asarray(labels)).long()
    n_units = c * h * w if channel_units else int(lab.max()) + 1
    delta = (baseline - x)[0]  # (C, H, W): what occluding a position adds
    p0 = nodes(x)[0].float()
    out = np.empty((n_units, p0.numel()), dtype=np.float32)
    for start in range(0, n_units, batch_size):
        ks = torch.arange(start, min(start + batch_size, n_units))
        if pixel_nodes is not None:
            pix = ks % (h * w) if channel_units else ks
            rows, cols = pix // w, pix % w
            if channel_units:
                values = x[0][:, rows, cols].T.clone()
                ch = ks // (h * w)
                values[torch.arange(len(ks)), ch] = baseline[0][ch, rows, cols]
            else:
                values = baseline[0][:, rows, cols].T
            p = pixel_nodes(values, rows, cols).float()
        else:
            if channel_units:
                m = torch.zeros(len(ks), c * h * w)
                m[torch.arange(len(ks)), ks] = 1.0
                m = m.view(len(ks), c, h, w)
            else:
                m = (lab[None] == ks[:, None, None]).float()[:, None]  # (k, 1, H, W), all channels
            p = nodes(x + delta[None] * m).float()
        out[start : start + len(ks)] = (p - p0[None]).abs().numpy()
    return p0.numpy(), out


def _choice(value: Any, allowed: Sequence[str], kind: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise unknown_name(kind, value, list(allowed))
    return value


def _check_baseline_value(value: Any, p: dict[str, Any], det: Detector) -> list[float] | None:
    if value is None:
        return None
    channels = det.classifier.channels
    if np.ndim(value) != 1 or len(value) != channels:
        raise ParameterError(f"baseline_value needs {channels} values (one per channel), got {value!r}")
    return [float(check_rate("baseline_value", v, closed=True)) for v in value]


@register_detector()
class LeaveOneOut(Detector):
    """``LeaveOneOut(clf, unit="pixel" | "channel-pixel" | "felzenszwalb" | "quickshift" | "slic", feature="1d")``.

    The ``statistic`` parameter (the dispersion statistic) is stored as ``statistic_param``: the base class's
    :meth:`statistic` method has its name."""

    _param_attributes = {"statistic": "statistic_param"}
    name = "loo"
    default_decision_model = "xgb"
    _parameter_constraints = {
        **Detector._parameter_constraints,
        "unit": lambda v, p, det: _choice(v, UNITS, "occlusion unit"),
        "baseline": lambda v, p, det: _choice(v, BASELINES, "occlusion baseline"),
        "feature": lambda v, p, det: _choice(v, FEATURES, "LOO feature"),
        "statistic": lambda v, p, det: _choice(v, STATISTICS, "dispersion statistic"),
        "batch_size": lambda v, p, det: int(check_count("batch_size", v, low=1)),
        "layers": lambda v, p, det: int(check_count("layers", v, low=1)),
        "units_per_layer": lambda v, p, det: int(check_count("units_per_layer", v, low=1)),
        "workers": lambda v, p, det: check_count("workers", v, low=1, optional=True),
        "blur_sigma": lambda v, p, det: float(check_rate("blur_sigma", v, low=0.0, high=float("inf"))),
        "unit_params": lambda v, p, det: check_unit_params(p["unit"], {} if v is None else v),
        "baseline_value": _check_baseline_value,
        "patch": lambda v, p, det: check_bool("patch", v, where=det.name),
        "progress": lambda v, p, det: check_bool("progress", v, where=det.name),
    }
    _unsaved_params = ("progress",)

    def __init__(
        self,
        classifier: Classifier,
        *,
        unit: str = "pixel",
        unit_params: dict[str, Any] | None = None,
        baseline: str = "zero",
        baseline_value: Sequence[float] | None = None,
        blur_sigma: float = 2.0,
        feature: str = "1d",
        statistic: str = "iqr",
        layers: int = 20,
        units_per_layer: int = 200,
        batch_size: int = 1024,
        patch: bool = True,
        workers: int | None = None,
        decision_model: str | None = "xgb",
        progress: bool = True,
        **kw: Any,
    ):
        self.progress = progress
        self.unit, self.unit_params, self.baseline, self.baseline_value = unit, unit_params, baseline, baseline_value
        self.blur_sigma, self.feature, self.statistic_param, self.layers = blur_sigma, feature, statistic, layers
        self.units_per_layer, self.batch_size, self.patch, self.workers = units_per_layer, batch_size, patch, workers
        super().__init__(classifier, decision_model=decision_model, **kw)
        self.units_per_image_: list[int] = []
        #: multilayer: (leaf module name, selected flat output indices) per hidden layer, set on first use
        self.hidden_: list[tuple[str, np.ndarray]] | None = None

    # ------------------------------------------------------------------ nodes
    def _leaf_modules(self) -> dict[str, torch.nn.Module]:
        skip = (torch.nn.Dropout, torch.nn.Identity, torch.nn.Flatten)
        return {
            n: m
            for n, m in self.classifier.model.named_modules()
            if n and not any(m.children()) and not isinstance(m, skip)
        }

    def _select_hidden(self, x1: torch.Tensor) -> None:
        """Pick the hidden units once: the last ``layers`` leaf modules (forward order) before the output."""
        leaves = self._leaf_modules()
        order: list[str] = []
        sizes: dict[str, int] = {}

        def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
            def f(_m: nn.Module, _i: Any, o: Any) -> None:
                if isinstance(o, torch.Tensor):
                    order.append(name)
                    sizes[name] = int(o[0].numel())

            return f

        handles = [m.register_forward_hook(hook(n)) for n, m in leaves.items()]
        try:
            with torch.inference_mode():
                self.classifier.logits(x1, validate=False)
        finally:
            for h in handles:
                h.remove()
        # forward order, without the output layer itself; a module called more than once per forward (a
        # shared activation) has no single output to sample from and is left out
        once = [n for n in dict.fromkeys(order) if order.count(n) == 1]
        seq = once[:-1] if once and once[-1] == order[-1] else once
        rng = np.random.default_rng(self._checked_params()["seed"])
        chosen = seq[-self.params["layers"] :]
        self.hidden_ = [
            (n, np.sort(rng.choice(sizes[n], min(self.params["units_per_layer"], sizes[n]), replace=False)))
            for n in chosen
        ]

    def _patcher(self) -> LocalOcclusion | None:
        """The :class:`LocalOcclusion` of this classifier for one-pixel units (built once), or None."""
        if not self.params["patch"] or self.params["unit"] not in ("pixel", "channel-pixel"):
            return None
        if getattr(self, "_patcher_", False) is False:
            from .occlusion_patch import LocalOcclusion

            self._patcher_ = LocalOcclusion.build(self.classifier)
        return self._patcher_

    def _node_fn(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], PixelNodes | None, Callable[[], None]]:
        """(function images -> node values, the same for one-pixel changes of the prepared image (or None),
        cleanup): softmax outputs, plus the hidden units if multilayer."""
        clf = self.classifier
        patcher = self._patcher()
        multilayer = self.params["feature"] == "multilayer"
        hidden = self.hidden_ if multilayer else []
        assert hidden is not None  # features() selects the hidden units first
        capture = {
            n: torch.from_numpy(idx).long() for n, idx in hidden if patcher is not None and n in patcher.layer_names
        }
        grabbed: dict[str, list[torch.Tensor]] = {}

        def assemble(p: torch.Tensor, got: dict[str, torch.Tensor]) -> torch.Tensor:
            """Softmax outputs, then the hidden units (from the patcher's windows or the forward hooks)."""
            if not multilayer:
                return p
            return torch.cat([p] + [got[n] if n in got else torch.cat(grabbed[n]) for n, _ in hidden], 1)

        def nodes(t: torch.Tensor) -> torch.Tensor:
            grabbed.clear()
            return assemble(clf.logits(t, validate=False).softmax(1).float(), {})

        def pixel_nodes(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            assert patcher is not None  # returned only with a patcher
            grabbed.clear()
            logits, got = patcher.logits(values, rows, cols, capture)
            return assemble(logits.float().softmax(1), got)

        leaves = self._leaf_modules() if multilayer else {}
        handles: list[RemovableHandle] = []
        for name, idx in hidden:

            def hook(_m: nn.Module, _i: Any, o: torch.Tensor, name: str = name, idx: np.ndarray = idx) -> None:
                # index the selected units directly: flatten() would copy a whole non-contiguous activation
                pos = tuple(torch.from_numpy(a).long() for a in np.unravel_index(idx, tuple(o.shape[1:])))
                grabbed.setdefault(name, []).append(o[(slice(None),) + pos].float().cpu())

            handles.append(leaves[name].register_forward_hook(hook))

        def cleanup() -> None:
            for h in handles:
                h.remove()

        return nodes, pixel_nodes if patcher is not None else None, cleanup

    def _baseline(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p["baseline"] == "zero":
            return torch.zeros_like(x)
        if p["baseline"] == "mean":
            v = p["baseline_value"] if p["baseline_value"] is not None else self.classifier.mean
            return torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1).expand_as(x).clone()
        from ..transforms import gaussian_blur

        return gaussian_blur(x, p["blur_sigma"])

    def labels(self, x: torch.Tensor) -> list[np.ndarray]:
        """The occlusion label map of every image (segmentation on a thread pool)."""
        imgs = x.detach().cpu().numpy().transpose(0, 2, 3, 1)
        p = self.params
        return thread_map(lambda im: segment(im, p["unit"], **p["unit_params"]), list(imgs), p["workers"])

    def features(self, x: torch.Tensor) -> np.ndarray:
        p = self.params
        labels = self.labels(x)
        base = self._baseline(x)
        if p["feature"] == "multilayer" and self.hidden_ is None:
            self._select_hidden(x[:1])
        nodes, pixel_nodes, cleanup = self._node_fn()
        rows: list[np.ndarray] = []
        try:
            with torch.inference_mode():
                for i in progress_bar(range(x.shape[0]), desc=self.name, enabled=self._checked_params()["progress"]):
                    if pixel_nodes is not None:
                        assert self._patcher_ is not None  # pixel_nodes comes with the patcher
                        self._patcher_.prepare(x[i : i + 1])
                    v0, phi = occlusion_attributions(
                        nodes,
                        x[i : i + 1],
                        labels[i],
                        base[i : i + 1],
                        p["unit"] == "channel-pixel",
                        p["batch_size"],
                        pixel_nodes,
                    )
                    self.units_per_image_.append(int(phi.shape[0]))
                    if p["feature"] == "1d":
                        phi = phi[:, [int(v0[: self.classifier.num_classes].argmax())]]
                    rows.append(dispersion(phi.astype(np.float64), p["statistic"]))  # reduced at once, dropped
        finally:
            cleanup()
        return np.stack(rows)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if not self.hidden_:
            return {}, {}
        return (
            {"hidden_layers": [n for n, _ in self.hidden_]},
            {f"hidden_idx_{i}": idx for i, (_, idx) in enumerate(self.hidden_)},
        )

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        names = meta.get("hidden_layers")
        if names:
            self.hidden_ = [(n, np.asarray(arrays[f"hidden_idx_{i}"])) for i, n in enumerate(names)]

    def feature_names(self, d: int) -> list[str]:
        if self.params["feature"] == "1d":
            return ["pred_class"]
        c = self.classifier.num_classes
        names = [f"out{k}" for k in range(c)]
        for n, idx in self.hidden_ or []:
            names += [f"{n}[{i}]" for i in idx]
        return names[:d] + [f"f{k}" for k in range(len(names), d)]
