"""The main job on its embedded default (``advguard quickstart``, run by ``scripts/install.sh``): a guard in front
of ``cifar10-cnn`` checks sample images, and its report says what it caught.

Steps, all on local data (the lossless CIFAR-10 test set when present):

1. ``advguard guard fit`` on the embedded config :data:`CONFIG` (feature squeezing, the softmax confidence and
   THEMIS's Erase-and-Restore distance, joined by the ``any`` rule at 5 % clean FPR), calibrated on 500
   CIFAR-10 test images;
2. sample images written as PNG files: other clean test images and adversarial versions of them (FGSM and PGD at
   8/255, CW-L2), so that the next step reads files as a user's would;
3. ``advguard detect`` semantics on that folder (one JSON line per image in ``detect.jsonl``);
4. a report (``report.md`` / ``report.html`` with a picture of every image and its verdict): how many clean
   images were flagged (false positives) and how many adversarial ones were caught, per attack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the guard the quickstart fits (the same keys as an ``advguard guard fit`` file)
CONFIG = """\
model = "cifar10-cnn"
fpr = 0.05
combine = "any"
calibration = 0.75          # these detectors need no fitting: most images set the joint threshold

[data]
dataset = "cifar10"
split = "test"
n_images = 500

[[detector]]
name = "feature-squeezing"

[[detector]]
name = "confidence"

[[detector]]
name = "erase-restore-distance"
params = { n = 5 }
"""

#: the sample attacks (zoo attack name, label, parameters)
ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    ("fgsm", "FGSM 8/255", {"eps": 8 / 255}),
    ("pgd", "PGD 8/255", {"eps": 8 / 255, "steps": 10}),
    ("cw-l2", "CW-L2", {"steps": 50, "binary_search_steps": 3}),
]


def run_quickstart(out: str | Path = "runs/quickstart", n_images: int = 12, progress: bool = True) -> dict[str, Any]:
    """Fit the embedded guard, write sample images, check them, write the report into ``out``; return the
    summary (also ``summary.json``)."""
    from PIL import Image

    from .attacks import make_attack
    from .data import load_dataset
    from .guard_config import build_guard, parse_guard_config
    from .images import load_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "guard.toml", CONFIG)
    cfg = parse_guard_config(tomllib.loads(CONFIG), where="advguard.quickstart.CONFIG", source=CONFIG)
    _say(progress, f"quickstart: fitting the guard ({len(cfg.detectors)} detectors, any rule, FPR 5 %)")
    guard = build_guard(cfg, progress=progress)
    guard.save(out / "guard.advguard")
    clf = guard.classifier
    # sample images: test images the guard was not calibrated on, correctly classified
    calibration = load_dataset("cifar10", "test", limit=cfg.data["n_images"], seed=cfg.seed).indices
    ds = load_dataset("cifar10", "test", limit=len(calibration) + 4 * n_images, seed=cfg.seed + 1)
    fresh = ~np.isin(ds.indices, calibration)
    ok = fresh & (clf.predict(ds.x).numpy() == ds.y)
    pick = np.random.default_rng(cfg.seed).permutation(np.flatnonzero(ok))[:n_images]  # all classes, not sorted
    x, y = ds.x[np.sort(pick)], ds.y[np.sort(pick)]
    folder = out / "images"
    folder.mkdir(exist_ok=True)
    for f in folder.glob("*.png"):  # a re-run replaces the samples
        f.unlink()
    kinds: list[tuple[str, np.ndarray]] = [("clean", x)]
    for name, label, params in ATTACKS:
        _say(progress, f"quickstart: {label} on {len(x)} test images")
        r = make_attack(name, clf, progress=False, **params)(x, y)
        kinds.append((label, r.x_adv.numpy()[r.success.numpy()]))
    files: list[tuple[Path, str]] = []
    for label, imgs in kinds:
        slug = label.lower().replace(" ", "-").replace("/", "_")
        for i, img in enumerate(imgs):
            p = folder / f"{slug}-{i:02d}.png"
            Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(p)
            files.append((p, label))
    pixels = load_images([p for p, _ in files], size=clf.size)  # read back as a user's files are
    results = guard(pixels)
    lines = [{"path": str(p), "source": src, **r.to_dict()} for (p, src), r in zip(files, results, strict=True)]
    atomic_write_text(out / "detect.jsonl", "".join(json.dumps(rec, allow_nan=False) + "\n" for rec in lines))
    summary = _summary(lines, guard)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _page(summary, lines, pixels).write(out)
    (out / "results.md").replace(out / "report.md")
    return summary


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _summary(lines: list[dict[str, Any]], guard: Any) -> dict[str, Any]:
    per: dict[str, dict[str, int]] = {}
    for rec in lines:
        s = per.setdefault(rec["source"], {"images": 0, "flagged": 0})
        s["images"] += 1
        s["flagged"] += rec["verdict"] != "clean"
    return {
        "model": guard.classifier.name,
        "detectors": guard.names,
        "combine": guard.combine,
        "fpr": guard.fpr,
        "threshold_rule": guard.threshold_rule,
        "expected_fpr": guard.expected_fpr(),
        "calibration_images": len(guard.clean_scores_[0]) if guard.clean_scores_ else None,
        "per_source": per,
    }


def _page(summary: dict[str, Any], lines: list[dict[str, Any]], pixels: np.ndarray) -> Any:
    from .data.cifar10 import CLASSES
    from .experiments.page import Page, fig_png, pyplot
    from .report import provenance

    p = provenance()
    page = Page("advguard quickstart: a guard in front of cifar10-cnn")
    page.text(
        "\n".join(
            [
                f"- Guard: `{summary['combine']}` rule over {', '.join(summary['detectors'])}, calibrated on "
                f"{summary['calibration_images']} CIFAR-10 test images (not the samples) for "
                f"{100 * summary['fpr']:.0f} % clean false positives ({summary['threshold_rule']} threshold: "
                f"{100 * summary['expected_fpr']:.1f} % expected on new clean images; `guard.toml`, "
                "`guard.advguard`).",
                "- Sample images: other, correctly classified CIFAR-10 test images and the successful adversarial "
                "versions of them, written as PNG files in `images/` and read back; every answer in `detect.jsonl` "
                "(what `advguard detect images/ --guard guard.advguard` prints).",
                f"- Machine: {p['machine']}. Commit `{p['commit']}`, {p['date']}.",
            ]
        )
    )
    rows = [
        [src, s["images"], s["flagged"], f"{100 * s['flagged'] / max(1, s['images']):.0f} %"]
        for src, s in summary["per_source"].items()
    ]
    page.table(["images", "count", "flagged", "share flagged"], rows, caption="clean: false positives")
    plt = pyplot()
    n = len(lines)
    cols = min(12, n)
    rows_n = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(1.1 * cols, 1.35 * rows_n), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, rec, img in zip(axes.ravel(), lines, pixels, strict=False):
        ax.imshow(img.transpose(1, 2, 0))
        flagged = rec["verdict"] != "clean"
        verdict = "FLAGGED" if flagged else "passed"
        ax.set_title(
            f"{rec['source']}\n{CLASSES[rec['label']]}: {verdict}", fontsize=5, color="red" if flagged else "green"
        )
    fig.tight_layout()
    page.figure("images.png", fig_png(fig), "every sample image with the guard's verdict (red: flagged)")
    return page
