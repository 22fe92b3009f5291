"""ML-LOO / Segmentation Fault's protocol as an ``advguard reproduce`` experiment (``experiment = "segfault"``).

Paper: ``segmentation-fault-ml-loo`` (Sections 3-4; docs/methods/segfault.md).

1. Attack families: attacks sharing a ``group`` are pooled (the paper's FGSM / PGD / DeepFool columns mix
   eps 0.02 / 0.06 / 0.1, a third each: member j attacks part j of the clean images). The correctly
   classified images are the clean set, shared by all families; only successful adversarial images count
   (the authors' code labelled failed attacks adversarial too). 80/20 train/test by clean-image id.
2. Every ``[[segfault.unit]]`` (pixel ML-LOO, Felzenszwalb, Quickshift, SLIC) is run once per image with the
   multi-layer feature: its columns hold the 10-D feature (all outputs) and the 1-D feature (the column of
   the image's predicted class), so one pass gives all three flavours. Features are cached per 128-image
   batch (resumable after Ctrl-C) with each batch's time, peak memory and segment counts.
3. Table 2 (pixel ML-LOO, ``pixel_classifiers``), Table 6 (XGBoost AUC for every unit), Table 7 (seconds,
   peak MB and mean segments per 128-image batch for each flavour, timed on the first 128 clean images, and
   the size of the attribution array the paper held), Figure 3 (time vs AUC, C&W, 10-D).

Options beyond the paper's grid: a unit's ``params`` may set ``value_range`` (Felzenszwalb / Quickshift segment
the image scaled to [0, value_range], e.g. 255 for the 8-bit images the paper's code most probably segmented) and
``paper`` names the paper's row to print beside it; ``[segfault] timing_images`` (default 128) sets how many
clean images the Table 7 timing runs on (reported per 128 images); ``[segfault.segment_counts]`` (``images``,
``value_ranges``) adds a table of mean segments per clean image for the paper's whole Felzenszwalb / Quickshift /
SLIC grid at each value range, beside the counts the paper's Table 7 memory implies.

Deviation: decision models are trained with their defaults (the paper's "off-the-shelf"); our SVC scales
features first (the IQRs are ~1e-3, on which an unscaled RBF SVC is degenerate).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...advsets import fold_of
from ...data.cache import cache_lock, cached_arrays, load_json, save_json
from ...detectors import LeaveOneOut
from ...detectors.decision import decision_scores, make_decision_model
from ...metrics import PeakMemory, roc_auc
from ...models import load_model
from ..common import (
    bench_paths,
    build_sets,
    cache_key,
    clean_set_key,
    dataset_kwargs,
    forward_cost,
    results_header,
    write_results,
)
from ..config import BenchConfig
from ..page import Page, fig_png, pyplot
from . import paper

FLAVOURS = ("1d", "10d", "multilayer")
FLAVOUR_NAMES = {"1d": "1-D", "10d": "10-D", "multilayer": "multi-layer"}
BATCH = 128


def _label(unit: dict) -> str:
    """A ``[[segfault.unit]]``'s label (its ``label``, else its unit name)."""
    return unit.get("label", unit["unit"])


def _paper_label(unit: dict) -> str:
    """The paper's row a ``[[segfault.unit]]`` reproduces (its ``paper``, else its label)."""
    return unit.get("paper", _label(unit))


def segment_counts(x: np.ndarray, value_ranges: list[float], grid: dict | None = None) -> dict[str, dict[str, float]]:
    """Mean segments per image of ``x`` (N, C, H, W in [0, 1]) for every setting of ``grid`` (label -> (unit,
    params); default the paper's Table 7 grid) at each value range (Felzenszwalb / Quickshift; SLIC rescales
    to [0, 1] itself, so it is counted once, under value range 1), with the paper's implied count."""
    from ...detectors.loo import UNIT_PARAMS, segment

    imgs = np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1), dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for lab, (unit, params) in (paper.GRID if grid is None else grid).items():
        row: dict[str, float] = {}
        for vr in value_ranges:
            if float(vr) != 1.0 and "value_range" not in UNIT_PARAMS[unit]:
                continue
            extra = {} if float(vr) == 1.0 else {"value_range": vr}
            row[f"{vr:g}"] = float(np.mean([segment(im, unit, **params, **extra).max() + 1 for im in imgs]))
        row["paper"] = paper.implied_segments(lab)
        out[lab] = row
    return out


def _detector(clf, unit: dict, opts: dict, feature: str, seed: int) -> LeaveOneOut:
    return LeaveOneOut(
        clf,
        unit=unit["unit"],
        unit_params=dict(unit.get("params", {})),
        baseline=opts.get("baseline", "zero"),
        statistic=opts.get("statistic", "iqr"),
        feature=feature,
        seed=seed,
    )


def unit_features(
    det: LeaveOneOut, x: np.ndarray, folder: Path, desc: str, progress: bool = True, batch: int = BATCH
) -> dict[str, np.ndarray]:
    """Multi-layer features of ``x`` in batches of ``batch`` images, each batch cached in ``folder`` (resumable).

    Returns ``features`` (N, D), ``pred`` (N,) the predicted class (the 1-D column), ``units`` (N,) occlusion
    units per image, and per batch ``seconds`` and ``peak_mb``."""
    folder.mkdir(parents=True, exist_ok=True)
    clf = det.classifier
    parts = []
    for i in tqdm(range(0, len(x), batch), desc=desc, leave=False, disable=not progress):
        path = folder / f"{i // batch:05d}.npz"

        def build(i=i):
            xb = clf.validate(x[i : i + batch])
            det.units_per_image_ = []
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                f = det.features(xb)
            secs = time.perf_counter() - t0
            with torch.inference_mode():
                pred = clf.logits(xb, validate=False).argmax(1).numpy()  # the detector's own forward pass
            return dict(
                features=f,
                pred=pred,
                units=np.asarray(det.units_per_image_),
                seconds=np.asarray(secs),
                peak_mb=np.asarray(mem.peak_mb),
            )

        # verified and locked: a corrupt batch file is named in a warning, moved aside and recomputed
        z = cached_arrays(path, build)
        parts.append(z)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("features", "pred", "units")}
    cat["seconds"] = np.array([float(p["seconds"]) for p in parts])
    cat["peak_mb"] = np.array([float(p["peak_mb"]) for p in parts])
    return cat


def flavour(feats: dict[str, np.ndarray], name: str, num_classes: int) -> np.ndarray:
    """The 1-D / 10-D / multi-layer feature from the multi-layer one (outputs first, then hidden units)."""
    f = feats["features"]
    if name == "1d":
        return f[np.arange(len(f)), feats["pred"]][:, None]
    return f[:, :num_classes] if name == "10d" else f


def _timing(clf, unit: dict, opts: dict, x: np.ndarray, path: Path, seed: int) -> dict:
    """Seconds and peak MB of each flavour on one batch of ``x`` (cached in ``path``)."""
    with cache_lock(path):
        cached = load_json(path)
        if cached is not None:
            return cached
        out = _measure(clf, unit, opts, x, seed)
        save_json(path, json.dumps(out, indent=1))
    return out


def _measure(clf, unit: dict, opts: dict, x: np.ndarray, seed: int) -> dict:
    out = {}
    for fl in FLAVOURS:
        det = _detector(clf, unit, opts, fl, seed)
        xb = clf.validate(x)
        det.extract(xb[:1])  # warm-up: hidden-unit selection, patcher build
        det.units_per_image_ = []
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            f = det.features(xb)
        out[fl] = {
            "seconds": time.perf_counter() - t0,
            "peak_mb": mem.peak_mb,
            "dims": int(f.shape[1]),
            "mean_units": float(np.mean(det.units_per_image_)),
            "images": int(len(x)),
        }
    return out


def _auc(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], clf_name: str, seed: int) -> float:
    (fc, fa), (tc, ta) = train, test
    f = np.concatenate([fc, fa]).astype(np.float64)
    y = np.r_[np.zeros(len(fc)), np.ones(len(fa))]
    est = make_decision_model(clf_name, seed=seed).fit(f, y)
    return roc_auc(decision_scores(est, tc.astype(np.float64)), decision_scores(est, ta.astype(np.float64)))


def run_segfault(
    cfg: BenchConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict:
    opts = cfg.section("segfault")
    out, cache = bench_paths(cfg, out, cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_model(cfg.model)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    # ---- segment counts of the paper's grid at each value range, on clean images of the same split (first:
    # cheap, and useful on its own)
    counts_doc = None
    if opts.get("segment_counts"):
        sc = opts["segment_counts"]
        n_sc, vrs = int(sc.get("images", 500)), list(sc.get("value_ranges", [1, 255]))
        key = cache_key("segcounts", cfg.dataset, cfg.split, n_sc, cfg.seed, ds_kwargs, vrs)
        path = cache / "segfault" / f"segcounts-{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with cache_lock(path):
            counts_doc = load_json(path)
            if counts_doc is None:
                from ...data import load_dataset

                xs = load_dataset(cfg.dataset, cfg.split, limit=n_sc, seed=cfg.seed, **ds_kwargs).x
                t0 = time.perf_counter()
                counts_doc = {
                    "images": int(len(xs)),
                    "value_ranges": [f"{v:g}" for v in vrs],
                    "mean_segments": segment_counts(xs, vrs),
                    "seconds": 0.0,
                }
                counts_doc["seconds"] = time.perf_counter() - t0
                save_json(path, json.dumps(counts_doc, indent=1))
    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first = next(iter(sets.values()))
    families: dict[str, list[str]] = {}
    for a in cfg.attacks:
        families.setdefault(a.group or a.label, []).append(a.label)
    x_c, ids_c = first.x_clean, first.clean_ids
    fam = {
        g: (
            np.concatenate([sets[lab].x_adv for lab in labs]),
            np.concatenate([sets[lab].adv_ids for lab in labs]),
            [sets[lab].key for lab in labs],
        )
        for g, labs in families.items()
    }
    fold_c = fold_of(ids_c, cfg.fractions, cfg.seed)
    fold_a = {g: fold_of(ids, cfg.fractions, cfg.seed) for g, (_, ids, _) in fam.items()}
    units = opts["unit"]
    labels = [_label(u) for u in units]
    clean_key = clean_set_key(cfg, first, ds_kwargs)

    # ---- features (multi-layer; 1-D and 10-D are its columns), resumable per 128-image batch
    feats: dict[str, dict[str, dict]] = {}
    root = cache / "segfault"
    batch = int(opts.get("batch_images", BATCH))
    # cheapest units first, so an interrupted run has finished whole rows of Table 6
    order = sorted(
        zip(units, labels, strict=True),
        key=lambda ul: ("slic", "felzenszwalb", "quickshift", "pixel", "channel-pixel").index(ul[0]["unit"]),
    )
    for u, lab in order:
        det = _detector(clf, u, opts, "multilayer", cfg.seed)
        params = {k: v for k, v in det.get_params().items() if k not in ("workers", "batch_size", "patch")}
        feats[lab] = {
            "clean": unit_features(
                det, x_c, root / cache_key("loo", params, clean_key), f"{lab} | clean", progress, batch
            )
        }
        for g, (xa, _, keys) in fam.items():
            feats[lab][g] = unit_features(
                det, xa, root / cache_key("loo", params, keys), f"{lab} | {g}", progress, batch
            )

    # ---- Table 7 timings: every flavour on the first batch (or timing_images) of clean images
    n_time = int(opts.get("timing_images", batch))
    timing = {
        lab: _timing(clf, u, opts, x_c[:n_time], root / f"timing-{cache_key('t', u, opts, clean_key)}.json", cfg.seed)
        for u, lab in zip(units, labels, strict=True)
    }
    floor = forward_cost(clf, x_c[:256])

    # ---- AUCs: train fold 0, test fold 1
    nc = clf.num_classes
    auc: dict[str, dict] = {}
    for u, lab in zip(units, labels, strict=True):
        models = list(
            opts.get("pixel_classifiers", ["xgb", "rf", "svc"])
            if u["unit"] == "pixel"
            else opts.get("classifiers", ["xgb"])
        )
        auc[lab] = {}
        for cname in models:
            for g in fam:
                for fl in FLAVOURS:
                    fc = flavour(feats[lab]["clean"], fl, nc)
                    fa = flavour(feats[lab][g], fl, nc)
                    auc[lab][f"{cname}|{g}|{fl}"] = _auc(
                        (fc[fold_c == 0], fa[fold_a[g] == 0]), (fc[fold_c == 1], fa[fold_a[g] == 1]), cname, cfg.seed
                    )
    counts = {
        g: {
            "clean_train": int((fold_c == 0).sum()),
            "clean_test": int((fold_c == 1).sum()),
            "adv_train": int((fold_a[g] == 0).sum()),
            "adv_test": int((fold_a[g] == 1).sum()),
            "per_attack": {lab: sets[lab].summary() for lab in families[g]},
        }
        for g in fam
    }
    doc = {
        **results_header(cfg),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "units": labels,
        "families": list(fam),
        "counts": counts,
        "auc": auc,
        "timing": timing,
        "grid_cost": {
            lab: {
                k: {
                    "seconds_per_batch": float(np.mean(v["seconds"])),
                    "batches": int(len(v["seconds"])),
                    "peak_mb": float(np.nanmax(v["peak_mb"])),
                    "mean_units": float(np.mean(v["units"])),
                }
                for k, v in feats[lab].items()
            }
            for lab in labels
        },
        "forward_floor": floor,
        "segment_counts": counts_doc,
        "data": {
            "dataset": cfg.dataset,
            "split": cfg.split,
            "dataset_kwargs": ds_kwargs,
            "n_images": cfg.n_images,
            "timing_images": n_time,
        },
        "paper_rows": {_label(u): _paper_label(u) for u in units},
    }
    write_results(doc, out)
    _page(cfg, doc, out, units)
    return doc


def summary_table(doc: dict) -> tuple[list[str], list[list]]:
    """XGBoost test AUC per occlusion unit and attack family, 10-D and multi-layer."""
    fams = doc["families"]
    return (
        ["occlusion unit"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in ("10d", "multilayer")],
        [
            [lab] + [_f3(doc["auc"][lab].get(f"xgb|{g}|{fl}")) for g in fams for fl in ("10d", "multilayer")]
            for lab in doc["units"]
        ],
    )


# ------------------------------------------------------------------------------------------------ page
def _f3(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _per128(t: dict) -> float:
    """A timing entry's seconds per 128 images (it ran on ``images`` of them)."""
    return float(t["seconds"]) * 128 / int(t.get("images", 128))


def _counts_section(page: Page, sc: dict) -> None:
    vrs = sc["value_ranges"]
    page.h2("Segments per clean image: the paper's grid on [0, 1] and on other value ranges")
    page.text(
        f"Mean segments per image over {sc['images']} clean images of the same split (all of them, not only the "
        "correctly classified), with scikit-image's defaults otherwise (Quickshift kernel_size 5), for each value "
        "range the image is scaled to before segmenting ([0, 1] is advguard's default; 255 the 8-bit range); "
        "SLIC rescales every image to [0, 1] itself, so only its [0, 1] count is given. The paper's count is the "
        "one its Table 7 memory implies (128 images x segments x 3,810 nodes x 4 bytes for the multi-layer "
        f"feature). Counting took {sc['seconds']:.0f} s."
    )
    rows = []
    for lab, row in sc["mean_segments"].items():
        rows.append(
            [lab]
            + [f"{row[v]:.1f}" if v in row else "-" for v in vrs]
            + ["-" if row.get("paper") is None else f"{row['paper']:.0f}"]
        )
    page.table(["setting"] + [f"ours on [0, {v}]" for v in vrs] + ["paper (implied by Table 7)"], rows)


def _page(cfg: BenchConfig, doc: dict, out: Path, units: list[dict]) -> None:
    prov = doc["provenance"]
    fams = doc["families"]
    page = Page(cfg.title or cfg.name)
    n_clean = next(iter(doc["counts"].values()))
    source = (doc.get("data") or {}).get("dataset_kwargs", {}).get("source")
    split = "/".join(f"{f * 100:g}" for f in cfg.fractions)
    copy = {"jpeg": ", JPEG copy", "lossless": ", lossless copy"}.get(source, f", source {source}" if source else "")
    page.text(
        f"Data: {cfg.dataset} ({cfg.split} split{copy}), the first {cfg.n_images} images of a seeded draw; the "
        f"correctly classified ones are the clean set ({n_clean['clean_train']} train + {n_clean['clean_test']} test), "
        f"shared by all attacks. Model `{cfg.model}`. Split {split} (train/test) by clean-image id. "
        f"Machine: {prov['machine']}. "
        f"Commit `{prov['commit']}`. Reproduce: `advguard reproduce configs/{cfg.name}.toml` (resumable)."
    )
    page.h2("Data")
    rows = []
    for g in fams:
        c = doc["counts"][g]
        per = "; ".join(f"{lab}: {s['n_adv']}/{s['n_attacked']}" for lab, s in c["per_attack"].items())
        rows.append([g, c["adv_train"], c["adv_test"], per])
    page.table(["attack family", "adversarial train", "adversarial test", "successful / attacked per member"], rows)
    pix = [_label(u) for u in units if u["unit"] == "pixel"]
    if pix:
        page.h2("Table 2: pixel ML-LOO with off-the-shelf classifiers (test AUC; paper in parentheses)")
        lab = pix[0]
        head = ["classifier"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in FLAVOURS]
        rows = []
        for cname in sorted({k.split("|")[0] for k in doc["auc"][lab]}, key=["rf", "svc", "xgb"].index):
            rows.append(
                [cname.upper()]
                + [
                    f"{_f3(doc['auc'][lab].get(f'{cname}|{g}|{fl}'))} "
                    f"({_f3(paper.TABLE2.get(cname, {}).get(g, {}).get(fl))})"
                    for g in fams
                    for fl in FLAVOURS
                ]
            )
        page.table(head, rows)
    page.h2("Table 6: XGBoost test AUC per occlusion unit (paper in parentheses)")
    head = ["occlusion unit"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in FLAVOURS]
    rows = []
    for u in units:
        lab = _label(u)
        p6 = paper.TABLE6.get(_paper_label(u), {})
        rows.append(
            [lab]
            + [
                f"{_f3(doc['auc'][lab].get(f'xgb|{g}|{fl}'))} ({_f3(p6.get(g, {}).get(fl))})"
                for g in fams
                for fl in FLAVOURS
            ]
        )
    page.table(head, rows)
    if any(_paper_label(u) != _label(u) for u in units):
        page.text(
            "Paper rows beside ours: "
            + "; ".join(f"{_label(u)}: the paper's {_paper_label(u)}" for u in units if _paper_label(u) != _label(u))
            + "."
        )
    if doc.get("segment_counts"):
        _counts_section(page, doc["segment_counts"])
    n_time = next(iter(doc["timing"].values()))["1d"]["images"]
    page.h2("Table 7: cost per 128-image batch")
    page.text(
        f"Seconds to compute the features of the first {n_time} clean images"
        + ("" if n_time == 128 else ", scaled to 128 images,")
        + " (ours on this machine's CPU; the paper's "
        "on a Tesla P100 GPU), peak resident-memory rise during it, mean occlusion units per image, and the size of "
        "the attribution array the paper's code held before reducing it (128 x units x nodes x 4 bytes; ours "
        "never holds more than one image's); mean units per image with the paper's implied count in parentheses "
        "(from the size of its multi-layer array: 128 x units x 3,810 nodes x 4 bytes). Forward floor of the plain "
        "model: "
        f"{doc['forward_floor']['images_per_s']:.0f} images/s."
    )
    rows = []
    for u in units:
        lab = _label(u)
        t = doc["timing"][lab]
        p7 = paper.TABLE7.get(_paper_label(u), {})
        implied = paper.implied_segments(_paper_label(u))
        held = {fl: 128 * t[fl]["mean_units"] * t[fl]["dims"] * 4 / 2**20 for fl in FLAVOURS}
        rows.append(
            [lab, f"{t['1d']['mean_units']:.1f}" + (f" ({implied:.0f})" if implied else "")]
            + [f"{_per128(t[fl]):.2f} s ({p7.get('time', {}).get(fl, '-')})" for fl in FLAVOURS]
            + [f"{t[fl]['peak_mb']:.0f}" for fl in FLAVOURS]
            + [f"{held['multilayer']:.1f} MB ({p7.get('memory', {}).get('multilayer', '-')})"]
        )
    page.table(
        ["occlusion unit", "mean units / image"]
        + [f"time {FLAVOUR_NAMES[fl]} (paper)" for fl in FLAVOURS]
        + [f"peak MB {FLAVOUR_NAMES[fl]}" for fl in FLAVOURS]
        + ["paper-style array, multi-layer (paper)"],
        rows,
    )
    page.h2("Figure 3: time vs detection AUC (C&W, 10-D)")
    cw = next((g for g in fams if "C&W" in g or "CW" in g), fams[-1])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, who in zip(axes, ("ours", "paper"), strict=True):
        shown: set[str] = set()
        for u in units:
            lab = _label(u)
            if who == "paper":  # each paper row once, under its own name
                if _paper_label(u) in shown:
                    continue
                shown.add(lab := _paper_label(u))
            if who == "ours":
                x, y = _per128(doc["timing"][lab]["10d"]), doc["auc"][lab].get(f"xgb|{cw}|10d")
            else:
                x, y = (
                    paper.seconds(paper.TABLE7.get(_paper_label(u), {}).get("time", {}).get("10d")),
                    paper.TABLE6.get(_paper_label(u), {}).get("C&W", {}).get("10d"),
                )
            if x is None or y is None:
                continue
            ax.scatter(
                x,
                y,
                marker={"pixel": "*", "felzenszwalb": "s", "quickshift": "^", "slic": "o"}[u["unit"]],
                s=90 if u["unit"] == "pixel" else 40,
                label=lab,
            )
            ax.annotate(
                lab.replace("Quickshift ", "QS ")
                .replace("Felzenszwalb ", "F ")
                .replace("n_segments=", "")
                .replace("max_dist", "m"),
                (x, y),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per 128 images (10-D)" + (" - this machine's CPU" if who == "ours" else " - P100 GPU"))
        ax.set_ylabel(f"AUC ({cw}, 10-D, XGBoost)")
        ax.set_title(who)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    page.figure(
        "figure3_time_vs_auc.png",
        fig_png(fig),
        "Figure 3: each point one occlusion unit; ours (left, "
        "CPU) and the paper's (right, P100 GPU, read from its Tables 6 and 7).",
    )
    page.write(out)
