"""Cost of ML-LOO / Segmentation Fault features per 128 images: the paper's loop vs ours vs the floor (issue #4).

On the same CIFAR-10 test images (correctly classified by `cifar10-cnn`), for pixel ML-LOO and SLIC-64, each
with the 1-D, 10-D and multi-layer (4,010-D) features:

- (a) reference, structured like the paper's code: for each occlusion position k, occlude k in every image of
  the batch and run the batch (one forward call per position), keep every attribution of the batch in one
  (images x units x nodes) array, reduce to IQRs at the end (SLIC: position k = segment k of each image
  that has one);
- (b) ours: `LeaveOneOut(...).features(x)` (local patching of the first layers for pixel units, one image's
  attributions alive at a time); also ours with `patch=False` (plain batched occlusions);
- floor: occlusions x images / the plain model's measured throughput (best of several batch sizes).

Targets: (b) >= 5x faster than (a) for pixel ML-LOO, within 1.25x of the floor, multi-layer peak memory
<= 200 MB per 128 images. Checks that (a) and (b) give the same features.

    python benchmarks/segfault_speed.py            -> docs/results/segfault/speed.{md,json}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference_features(det, x, labels) -> tuple:
    """(features, bytes held): the paper-structured loop, one forward call per occlusion position for the batch."""
    import numpy as np
    import torch

    nodes, _pixel, cleanup = det._node_fn()
    n = x.shape[0]
    base = det._baseline(x)
    lab = torch.from_numpy(np.stack(labels)).long()  # (N, H, W)
    n_units = int(lab.max()) + 1
    try:
        with torch.inference_mode():
            p0 = nodes(x).float()
            phi = np.full((n, n_units, p0.shape[1]), np.nan, dtype=np.float32)  # everything held, as the paper
            for k in range(n_units):
                m = (lab == k)[:, None].float()  # (N, 1, H, W)
                has = m.flatten(1).any(1)
                xb = x[has] + (base[has] - x[has]) * m[has]
                phi[has.numpy(), k] = (nodes(xb).float() - p0[has]).abs().numpy()
    finally:
        cleanup()
    rows = []
    for i in range(n):
        ph = phi[i][~np.isnan(phi[i, :, 0])]
        if det.params["feature"] == "1d":
            ph = ph[:, [int(p0[i, : det.classifier.num_classes].argmax())]]
        q75, q25 = np.percentile(ph.astype(np.float64), [75, 25], axis=0)
        rows.append(q75 - q25)
    return np.stack(rows), phi.nbytes


def main() -> int:
    import numpy as np

    from advguard import load_dataset, load_model
    from advguard.detectors import LeaveOneOut
    from advguard.metrics import PeakMemory, peak_memory_note
    from advguard.metrics import memory_method as metrics_memory_method
    from advguard.report import markdown_table, provenance, write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "loo"))
    p.add_argument("--skip-reference", action="store_true", help="time ours and the floor only")
    a = p.parse_args()

    clf = load_model("cifar10-cnn")
    ds = load_dataset("cifar10", "test", limit=a.images * 2, seed=0, source="jpeg")
    with clf.exact():
        ok = clf.predict(ds.x).numpy() == ds.y
    x = clf.validate(ds.x[ok][: a.images])
    n = x.shape[0]

    # floor: the plain model's best throughput over a few batch sizes
    big = x.repeat(-(-1024 // n), 1, 1, 1)[:1024]
    clf.logits(big[:256], batch_size=256)  # warm-up
    thr = {}
    for bs in (128, 256, 1024):
        t = time.perf_counter()
        clf.logits(big, batch_size=bs, validate=False)
        thr[bs] = len(big) / (time.perf_counter() - t)
    throughput = max(thr.values())

    rows = []
    for unit, params in (("pixel", {}), ("slic", {"n_segments": 64})):
        for feature in ("1d", "10d", "multilayer"):
            det = LeaveOneOut(clf, unit=unit, unit_params=params, feature=feature)
            det.extract(x[:1])  # warm-up: hidden-unit selection, patcher
            labels = det.labels(x)
            occlusions = sum(int(lb.max()) + 1 for lb in labels)
            row = {
                "unit": unit if unit == "pixel" else "slic-64",
                "feature": feature,
                "images": n,
                "occlusions": occlusions,
                "floor_s": occlusions / throughput,
            }
            for name, kw in (("ours", {}), ("ours_plain", {"patch": False})):
                if unit != "pixel" and name == "ours_plain":
                    continue
                d = LeaveOneOut(clf, unit=unit, unit_params=params, feature=feature, **kw)
                d.hidden_ = det.hidden_
                t = time.perf_counter()
                with PeakMemory() as mem:
                    f = d.features(x)
                row[f"{name}_s"], row[f"{name}_peak_mb"] = time.perf_counter() - t, mem.peak_mb
                row.setdefault("features", f)
            if not a.skip_reference:
                t = time.perf_counter()
                with PeakMemory() as mem:
                    f_ref, held = reference_features(det, x, labels)
                row["reference_s"], row["reference_peak_mb"] = time.perf_counter() - t, mem.peak_mb
                row["reference_array_mb"] = held / 2**20
                row["max_abs_diff"] = float(np.abs(f_ref - row["features"]).max())
                row["speedup"] = row["reference_s"] / row["ours_s"]
            row.pop("features")
            row["ours_over_floor"] = row["ours_s"] / row["floor_s"]
            rows.append(row)
            print(row, file=sys.stderr)

    prov = provenance()
    fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
    table = markdown_table(
        [
            "unit",
            "feature",
            "occlusions",
            "reference s",
            "ours s",
            "ours, no patching s",
            "floor s",
            "speed-up vs reference",
            "ours / floor",
            "peak MB reference",
            "peak MB ours",
            "reference array MB",
            "max |ours - reference|",
        ],
        [
            [
                r["unit"],
                r["feature"],
                r["occlusions"],
                fmt(r.get("reference_s")),
                fmt(r["ours_s"]),
                fmt(r.get("ours_plain_s")),
                fmt(r["floor_s"]),
                fmt(r.get("speedup"), "{:.1f}x"),
                fmt(r["ours_over_floor"], "{:.2f}x"),
                fmt(r.get("reference_peak_mb"), "{:.0f}"),
                fmt(r["ours_peak_mb"], "{:.0f}"),
                fmt(r.get("reference_array_mb"), "{:.0f}"),
                fmt(r.get("max_abs_diff"), "{:.1e}"),
            ]
            for r in rows
        ],
    )
    per_batch = ", ".join(f"{k}: {v:.0f}" for k, v in thr.items())
    memory_method = metrics_memory_method()  # how PeakMemory measures on this machine
    md = f"""# ML-LOO / Segmentation Fault: cost per {n} images vs the paper's loop and the forward-pass floor

`cifar10-cnn` (289k parameters, inference `{clf.inference}`), {n} correctly classified CIFAR-10 test images (JPEG
copy), zero baseline, IQR. **Reference**: the paper's structure - one forward call per occlusion position over
the whole batch, all attributions of the batch held in one array, IQR at the end. **Ours**:
`LeaveOneOut.features` (pixel units: local patching of the first layers, `advguard.detectors.occlusion_patch`;
"no patching": the occluded images built and classified in chunks of 1,024). **Floor**: occlusions / the plain
model's best measured throughput ({throughput:.0f} images/s; per batch size {per_batch}).
{peak_memory_note(memory_method)} One run each.
Targets (issue #4): ours >= 5x faster than the reference for pixel ML-LOO, within 1.25x of the floor, multi-layer
peak <= 200 MB per 128 images. The paper (Table 7, P100 GPU): pixel ML-LOO ~80 s (1-D), ~45 s (10-D), ~82 s and
~2 GB (4K-D) per 128 images; SLIC-64 5.0 / 3.3 / 5.1 s.

{table}

- Machine: {prov["machine"]}. Commit `{prov["commit"]}`, {prov["date"]}.
- Command: `{prov["command"]}`
"""
    write_result(a.out, {"provenance": prov, "throughput": thr, "rows": rows}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
