"""Forward throughput and peak memory of every zoo model on this machine.

For each model, batch size (1, 32, 256) and inference variant (float32, channels-last,
bfloat16 autocast, channels-last + bfloat16) it reports images/s and the peak resident
memory added by inference (each measurement in a fresh process, so peaks do not mix), and
the share of predictions on real test images that each variant keeps equal to float32.

    python benchmarks/throughput.py                       # all models -> docs/results/throughput.{md,json}
    python benchmarks/throughput.py --models cifar10-cnn --batches 1 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "float32": dict(channels_last=False, bf16=False),
    "channels-last": dict(channels_last=True, bf16=False),
    "bf16": dict(channels_last=False, bf16=True),
    "channels-last+bf16": dict(channels_last=True, bf16=True),
}
ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(model: str, variant: str, batch: int, min_seconds: float) -> dict:
    """Runs in a fresh process: time one (model, variant, batch) cell, report images/s and peak memory."""
    import torch

    from advguard.models import build_module, get_spec

    spec = get_spec(model)
    v = VARIANTS[variant]
    from advguard.classifier import Normalize, NormalizedModel

    net = NormalizedModel(build_module(model), Normalize(spec.mean, spec.std)).eval()
    x = torch.rand(batch, spec.channels, *spec.size)
    if v["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if v["bf16"] else torch.no_grad
    base = _rss_mb()
    times = []
    with torch.inference_mode():
        with ctx():
            net(x)  # warm-up (allocator, oneDNN kernel selection)
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            with ctx():
                net(x)
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = sorted(times)[len(times) // 2]
    return {
        "model": model,
        "variant": variant,
        "batch": batch,
        "images_per_s": batch / med,
        "ms_per_batch": 1000 * med,
        "repeats": len(times),
        "peak_mb_over_model": max(0.0, peak - base),
    }


def agreement(model: str, n: int) -> dict:
    """Share of real test images whose top-1 prediction in each variant equals float32's."""
    from advguard.data import load_dataset
    from advguard.models import get_spec, load_model

    spec = get_spec(model)
    ds = load_dataset(spec.dataset, "test", limit=n, **spec.dataset_kwargs)
    ref = load_model(model, batch_size=64, inference="float32").predict(ds.x)
    out = {}
    for name in VARIANTS:
        pred = load_model(model, batch_size=64, inference=name).predict(ds.x)
        out[name] = float((pred == ref).float().mean())
    return {"n": len(ds), "agreement": out}


def recommend(rows: list[dict], agreement: dict) -> dict:
    """Per model: the fastest (variant, batch) whose predictions all equal float32's on the real test images."""
    out = {}
    for m in dict.fromkeys(r["model"] for r in rows):
        safe = [r for r in rows if r["model"] == m and agreement[m]["agreement"][r["variant"]] == 1.0]
        best = max(safe, key=lambda r: r["images_per_s"])
        out[m] = {"variant": best["variant"], "batch": best["batch"], "images_per_s": best["images_per_s"]}
    return out


def plot(doc: dict, path: Path) -> None:
    """Bar chart: images/s of each inference variant per model at the largest batch (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from advguard._atomic import atomic_path

    rows = doc["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    b = max(r["batch"] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    w = 0.2
    for i, v in enumerate(VARIANTS):
        vals = [
            next(r["images_per_s"] for r in rows if r["model"] == m and r["variant"] == v and r["batch"] == b)
            for m in models
        ]
        ax.bar(np.arange(len(models)) + (i - 1.5) * w, vals, w, label=v)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_yscale("log")
    ax.set_ylabel(f"images/s at batch {b}")
    ax.set_title(f"Forward throughput on {doc['provenance']['machine'].split(',')[0]}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def render(doc: dict) -> str:
    from advguard.report import markdown_table

    rows, agree, prov = doc["rows"], doc["agreement"], doc["provenance"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    for m in models:
        for b in batches:
            cell = [r for r in rows if r["model"] == m and r["batch"] == b]
            base = next(r for r in cell if r["variant"] == "float32")
            for r in cell:
                r["speedup_vs_float32"] = r["images_per_s"] / base["images_per_s"]
    rec = recommend(rows, agree)

    def speedup_at_max_batch(model: str, variant: str) -> float:
        return next(
            r["speedup_vs_float32"]
            for r in rows
            if r["model"] == model and r["batch"] == max(batches) and r["variant"] == variant
        )

    md = [
        "# Forward throughput of the zoo models\n",
        f"Machine: {prov['machine']}. Commit {prov['commit']}, {prov['date']}.",
        f"Command: `{prov['command']}`\n",
        "Images/s is the median over repeated forward passes of random inputs of the model's input size "
        "(normalisation included), under `torch.inference_mode()`, each cell in a fresh process. "
        "Peak MB is the peak resident memory added by inference over the loaded model. "
        "Agreement is the share of real test images (stratified subset) whose top-1 prediction equals float32's.\n",
        "![images/s per inference variant](throughput.png)\n",
        "## Defaults chosen\n",
        "Inference-only paths (`Classifier.logits/probs/predict/top_k/activations`, i.e. detector scoring) "
        "default to the fastest variant that changed **no** prediction on the real test images; gradients "
        "(attacks, Grad-CAM) stay float32. Set in `advguard/models/registry.py` (`ModelSpec.inference`, "
        '`ModelSpec.batch_size`); `load_model(name, inference="float32")` gives the reference path.\n',
        markdown_table(
            ["model", "default variant", "at batch", "images/s", "vs float32 at batch 256"],
            [
                [
                    m,
                    v["variant"],
                    v["batch"],
                    f"{v['images_per_s']:.0f}",
                    f"{speedup_at_max_batch(m, v['variant']):.2f}x",
                ]
                for m, v in rec.items()
            ],
        ),
        "",
    ]
    for m in models:
        md.append(f"## {m}\n")
        table = [
            [
                r["batch"],
                r["variant"],
                f"{r['images_per_s']:.0f}",
                f"{r['ms_per_batch']:.1f}",
                f"{r['speedup_vs_float32']:.2f}x",
                f"{r['peak_mb_over_model']:.0f}",
                f"{100 * agree[m]['agreement'][r['variant']]:.1f}%",
            ]
            for r in rows
            if r["model"] == m
        ]
        md.append(
            markdown_table(
                [
                    "batch",
                    "variant",
                    "images/s",
                    "ms/batch",
                    "vs float32",
                    "peak MB",
                    f"agreement ({agree[m]['n']} imgs)",
                ],
                table,
            )
        )
        md.append("")
    return "\n".join(md)


def main() -> int:
    from tqdm import tqdm

    from advguard.models import ZOO
    from advguard.report import provenance, write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(ZOO))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32, 256])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--agreement-images", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "throughput"))
    p.add_argument("--render-only", action="store_true", help="re-render the Markdown from the existing JSON")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], int(a.worker[2]), a.min_seconds)))
        return 0

    if a.render_only:
        import json as _json

        doc = _json.loads(Path(a.out).with_suffix(".json").read_text())
        plot(doc, Path(a.out).with_suffix(".png"))
        write_result(a.out, doc, render(doc))
        return 0
    cells = [(m, v, b) for m in a.models for b in a.batches for v in a.variants]
    rows = []
    for m, v, b in tqdm(cells, desc="throughput cells"):
        r = subprocess.run(
            [sys.executable, __file__, "--worker", m, v, str(b), "--min-seconds", str(a.min_seconds)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    agree = {m: agreement(m, a.agreement_images) for m in tqdm(a.models, desc="prediction agreement")}

    doc = {"provenance": provenance(), "rows": rows, "agreement": agree}
    md = render(doc)
    plot(doc, Path(a.out).with_suffix(".png"))
    write_result(a.out, doc, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
