"""The Segmentation Fault paper's published numbers (``segmentation-fault-ml-loo``, Tables 2, 6, 7), keyed by
our attack-family and occlusion-unit labels (configs/segfault-cifar10.toml), to print beside ours."""

from __future__ import annotations

_FAMS = ("FGSM", "PGD", "DeepFool", "C&W")
_FL = ("1d", "10d", "multilayer")


def _rows(values: list[float]) -> dict[str, dict[str, float]]:
    """12 values in the paper's column order (family-major, then 1-D / 10-D / 4K-D) -> {family: {flavour: v}}."""
    return {f: dict(zip(_FL, values[3 * i : 3 * i + 3], strict=True)) for i, f in enumerate(_FAMS)}


#: Table 2: pixel ML-LOO, test AUC of off-the-shelf classifiers
TABLE2 = {
    "rf": _rows([0.633, 0.765, 0.854, 0.693, 0.782, 0.685, 0.671, 0.792, 0.649, 0.917, 0.929, 0.660]),
    "svc": _rows([0.738, 0.768, 0.802, 0.720, 0.735, 0.744, 0.745, 0.755, 0.746, 0.926, 0.930, 0.819]),
    "xgb": _rows([0.737, 0.810, 0.838, 0.740, 0.785, 0.786, 0.750, 0.811, 0.836, 0.946, 0.956, 0.956]),
}

#: Table 6: XGBoost test AUC per occlusion unit
TABLE6 = {
    "Felzenszwalb scale=1": _rows([0.707, 0.782, 0.851, 0.688, 0.749, 0.804, 0.746, 0.790, 0.822, 0.877, 0.936, 0.930]),
    "Felzenszwalb scale=10": _rows(
        [0.705, 0.797, 0.846, 0.692, 0.753, 0.766, 0.762, 0.816, 0.838, 0.887, 0.927, 0.916]
    ),
    "Felzenszwalb scale=100": _rows(
        [0.695, 0.814, 0.834, 0.688, 0.754, 0.795, 0.762, 0.811, 0.807, 0.887, 0.926, 0.925]
    ),
    "Felzenszwalb scale=1000": _rows(
        [0.632, 0.782, 0.830, 0.593, 0.665, 0.763, 0.672, 0.735, 0.775, 0.797, 0.825, 0.825]
    ),
    "Quickshift sigma=0 max_dist=10": _rows(
        [0.726, 0.817, 0.853, 0.744, 0.781, 0.771, 0.776, 0.839, 0.835, 0.944, 0.946, 0.940]
    ),
    "Quickshift sigma=0 max_dist=20": _rows(
        [0.694, 0.797, 0.842, 0.703, 0.782, 0.782, 0.761, 0.808, 0.827, 0.923, 0.937, 0.932]
    ),
    "Quickshift sigma=1 max_dist=10": _rows(
        [0.738, 0.798, 0.829, 0.711, 0.776, 0.765, 0.770, 0.810, 0.801, 0.897, 0.923, 0.923]
    ),
    "Quickshift sigma=1 max_dist=20": _rows(
        [0.710, 0.816, 0.849, 0.637, 0.759, 0.767, 0.753, 0.805, 0.792, 0.877, 0.941, 0.925]
    ),
    "Quickshift sigma=2 max_dist=10": _rows(
        [0.720, 0.808, 0.849, 0.664, 0.736, 0.757, 0.770, 0.806, 0.834, 0.895, 0.922, 0.925]
    ),
    "Quickshift sigma=2 max_dist=20": _rows(
        [0.692, 0.799, 0.839, 0.615, 0.694, 0.744, 0.706, 0.774, 0.790, 0.833, 0.897, 0.879]
    ),
    "SLIC n_segments=32": _rows([0.727, 0.814, 0.864, 0.682, 0.755, 0.755, 0.774, 0.805, 0.805, 0.895, 0.934, 0.923]),
    "SLIC n_segments=64": _rows([0.730, 0.809, 0.865, 0.723, 0.758, 0.794, 0.782, 0.826, 0.820, 0.929, 0.947, 0.941]),
    "SLIC n_segments=128": _rows([0.761, 0.812, 0.855, 0.733, 0.773, 0.777, 0.773, 0.826, 0.831, 0.945, 0.959, 0.946]),
    "ML-LOO (pixel)": _rows([0.728, 0.829, 0.871, 0.748, 0.793, 0.806, 0.793, 0.829, 0.763, 0.918, 0.967, 0.984]),
}


def _t7(t1: str, t10: str, t4k: str, m1: str, m10: str, m4k: str) -> dict[str, dict[str, str]]:
    return {"time": {"1d": t1, "10d": t10, "multilayer": t4k}, "memory": {"1d": m1, "10d": m10, "multilayer": m4k}}


#: Table 7: seconds and attribution-array size per 128-image batch on a Tesla P100 (as printed)
TABLE7 = {
    "Felzenszwalb scale=1": _t7("1.79s", "1.17s", "1.77s", "9.8KB", "98KB", "37MB"),
    "Felzenszwalb scale=10": _t7("2.06s", "1.27s", "2.01s", "10.8KB", "108KB", "41MB"),
    "Felzenszwalb scale=100": _t7("2.24s", "1.63s", "2.21s", "12.4KB", "124KB", "47MB"),
    "Felzenszwalb scale=1000": _t7("1.09s", "0.7s", "1.07s", "5.2KB", "52KB", "19.8MB"),
    "Quickshift sigma=0 max_dist=10": _t7("44.8s", "28.4s", "48s", "270KB", "2.7MB", "1GB"),
    "Quickshift sigma=0 max_dist=20": _t7("13.9s", "8.86s", "13.8s", "69KB", "690KB", "263MB"),
    "Quickshift sigma=1 max_dist=10": _t7("30.5s", "18.7s", "30.4s", "173KB", "1.7MB", "659MB"),
    "Quickshift sigma=1 max_dist=20": _t7("7.77s", "5.41s", "7.29s", "32KB", "317KB", "120MB"),
    "Quickshift sigma=2 max_dist=10": _t7("21.3s", "13.2s", "20.9s", "117KB", "1.2MB", "446MB"),
    "Quickshift sigma=2 max_dist=20": _t7("4.3s", "3.46s", "4.3s", "13KB", "128KB", "49MB"),
    "SLIC n_segments=32": _t7("2.17s", "1.42s", "3.24s", "11KB", "113KB", "43MB"),
    "SLIC n_segments=64": _t7("5s", "3.26s", "5.14s", "28KB", "287KB", "109MB"),
    "SLIC n_segments=128": _t7("9.75s", "5.96s", "9.98s", "58KB", "579KB", "220MB"),
    "ML-LOO (pixel)": _t7("~80s", "~45s", "~82s", "~524KB", "~5.24MB", "~2GB"),
}


def seconds(text: str | None) -> float | None:
    """'44.8s' / '~80s' -> 44.8 / 80.0 (None for a missing entry)."""
    return None if not text else float(text.strip("~s"))


#: the nodes of the paper's multi-layer feature (its network: 10 outputs + 200 units from each of 19 layers)
PAPER_NODES = 3810
_UNITS = {"KB": 1e3, "MB": 1e6, "GB": 1e9}


def implied_segments(label: str) -> float | None:
    """Segments per image implied by Table 7's multi-layer attribution array for 128 images (128 x segments x
    3,810 nodes x 4 bytes, decimal units as printed): '1GB' for Quickshift sigma=0 max_dist=10 -> 512.6."""
    text = TABLE7.get(label, {}).get("memory", {}).get("multilayer")
    if not text:
        return None
    t = text.strip("~")
    return float(t[:-2]) * _UNITS[t[-2:]] / (128 * PAPER_NODES * 4)


#: Table 7's segmentation grid as (occlusion unit, unit_params); Quickshift with scikit-image's default
#: kernel_size 5 (the paper used the defaults)
GRID = {
    **{f"Felzenszwalb scale={s}": ("felzenszwalb", {"scale": s}) for s in (1, 10, 100, 1000)},
    **{
        f"Quickshift sigma={s} max_dist={m}": ("quickshift", {"sigma": s, "max_dist": m, "kernel_size": 5})
        for s in (0, 1, 2)
        for m in (10, 20)
    },
    **{f"SLIC n_segments={n}": ("slic", {"n_segments": n}) for n in (32, 64, 128)},
}
