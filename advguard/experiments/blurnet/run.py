"""BlurNet's protocol as an ``advguard reproduce`` experiment (``experiment = "blurnet"``).

Paper: ``blurnet`` Sections 3.2 and 4, Tables 1 and 2, Figures 1, 2 and 4 (docs/methods/blurnet.md).

1. Stop signs: ``n_signs`` images of ``stop_class`` (class 14 in GTSRB and in LISA-CNN's outputs) from the
   config's ``dataset`` and split, a seeded draw (the paper: the 40 stop-sign photos of the RP2 authors,
   LISA: ``dataset = "rp2-lisa-victims"``, ``model = "lisa-cnn"``, which holds exactly those 40).
2. For the undefended model (``model``) and every ``whitebox`` model, one RP2 sticker per target class
   (all the model's outputs but the stop sign, or ``targets``), fitted on all the signs at once, cached per
   model and chunk of targets (resumable). RP2's settings: ``preset`` (``"authors"``: the RP2 authors' LISA
   run, see :mod:`advguard.attacks.rp2`) and, overriding it, ``mask``, ``lam``, ``steps``, ``lr``,
   ``norm_p``, ``init``, ``transforms``, ``nps``, ``clip``, ``n_transforms`` as set in ``[blurnet]``;
   without a preset, [blurnet]'s defaults and RP2's own. The resolved settings and the mask's share of the
   image are written to the results and stated on the page.
3. Table 1 (black box): the undefended model's stickers pasted on the signs and classified by each
   ``blackbox`` model; Table 2 (white box): each model's own stickers. Success = the paper's eq.: the label
   changes (F(x) != F(x_adv)); the target rate is given too. Per model: accuracy on the clean signs and on
   the full test split, average and worst (max over targets) success, eq. 1's L2 dissimilarity, and the
   success under ``eval_views`` random views (brightness, rotation, zoom, perspective) of each stickered sign.
4. Figures: 1 (image spectra), 2 (first-layer feature-map spectra, clean / stickered / difference / blurred
   difference), 4 (L2 dissimilarity vs success per target and model); stickers as PNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...advsets import weights_hash
from ...attacks.rp2 import AUTHORS, LEGACY, OURS, RP2, Sticker, l2_dissimilarity, random_warps, save_sticker_png
from ...data import load_dataset
from ...data.cache import cached_arrays
from ...defenses.blurnet import feature_spectra, first_layer_maps, log_spectrum
from ...models import get_spec, load_model
from ..common import bench_paths, cache_key, results_header, write_results
from ..config import BenchConfig, ConfigError
from ..page import Page, fig_png, pct, pyplot
from . import paper
from .options import BLURNET_DEFAULTS

#: RP2 settings a [blurnet] table may set (a preset's values unless set there)
RP2_KEYS = ("mask", "lam", "steps", "lr", "norm_p", "init", "transforms", "nps", "clip")


def rp2_settings(section: dict, o: dict) -> dict:
    """RP2's resolved settings for a [blurnet] table ``section`` (``o``: it merged with the defaults):
    with ``preset``, the preset's values overridden by those ``section`` sets; without, ``o``'s defaults and
    RP2's own (:data:`advguard.attacks.rp2.OURS`)."""
    preset = section.get("preset")
    if preset == "authors":
        given = {k: section[k] for k in RP2_KEYS if k in section}
        base = AUTHORS
    else:
        given = {k: o[k] for k in RP2_KEYS if k in o}
        base = OURS
    r = {**base, **given, "preset": preset, "n_transforms": int(o["n_transforms"])}
    return r


def _rp2_kwargs(r: dict) -> dict:
    return {k: r[k] for k in RP2_KEYS + ("preset", "n_transforms")}


def _settings_key(r: dict) -> dict:
    """The cache key's part for RP2's settings: exactly the pre-#22 key for the legacy settings (the committed
    GTSRB stickers: our two-bar mask, then called "rectangles"), plus every setting that differs from them."""
    key = {
        "lam": r["lam"],
        "steps": r["steps"],
        "lr": r["lr"],
        "n_transforms": r["n_transforms"],
        "mask": "rectangles" if r["mask"] == "bars" else r["mask"],
    }
    key.update({k: r[k] for k in ("norm_p", "init", "transforms", "nps", "clip") if r[k] != LEGACY[k]})
    return key


def paper_key(model: str) -> str:
    """The paper's row name of a zoo model: "baseline" for an undefended one, else the variant suffix."""
    spec = get_spec(model)
    return model[len(spec.base) + 1 :] if spec.base else "baseline"


def _stickers(
    clf, signs: torch.Tensor, targets: list[int], o: dict, folder: Path, mask, seed: int, progress: bool, settings: dict
) -> dict[str, np.ndarray]:
    """RP2 stickers of every target for ``clf``, fitted in cached chunks of ``o['chunk']`` targets."""
    parts = []
    chunks = [targets[i : i + int(o["chunk"])] for i in range(0, len(targets), int(o["chunk"]))]
    for j, ch in enumerate(tqdm(chunks, desc=f"RP2 on {clf.name}", leave=False, disable=not progress)):

        def fit(ch=ch):
            attack = RP2(clf, **{**_rp2_kwargs(settings), "mask": mask}, seed=seed, progress=False)
            t0 = time.perf_counter()
            sts = attack.fit_many(signs, ch)
            return {
                "delta": torch.stack([s.delta for s in sts]).numpy(),
                "mask": torch.stack([s.mask for s in sts]).numpy(),
                "targets": np.asarray(ch),
                "seconds": np.asarray(time.perf_counter() - t0),
            }

        parts.append(cached_arrays(folder / f"chunk-{j:03d}-{cache_key(ch)}.npz", fit))
    return {
        "delta": np.concatenate([p["delta"] for p in parts]),
        "mask": np.concatenate([p["mask"] for p in parts]),
        "targets": np.concatenate([p["targets"] for p in parts]),
        "seconds": np.asarray(sum(float(p["seconds"]) for p in parts)),
    }


@torch.inference_mode()
def _evaluate(clf, signs: torch.Tensor, st: dict[str, np.ndarray], views: int, seed: int) -> dict[str, np.ndarray]:
    """Per target: label-changed rate (paper), target rate, L2 dissimilarity, label-changed rate over random views."""
    with clf.exact():
        clean = clf.predict(signs)
    h, w = signs.shape[-2:]
    out = {k: [] for k in ("success", "target_rate", "l2", "success_views")}
    g = torch.Generator().manual_seed(seed)
    for delta, mask, t in zip(st["delta"], st["mask"], st["targets"], strict=True):
        x_adv = Sticker(torch.from_numpy(delta), torch.from_numpy(mask), int(t)).apply(signs)
        with clf.exact():
            pred = clf.predict(x_adv)
            rep = x_adv.repeat(views, 1, 1, 1)
            grid = random_warps(len(rep), h, w, g)
            bright = 1 + (torch.rand(len(rep), 1, 1, 1, generator=g) * 2 - 1) * 0.3
            seen = (F.grid_sample(rep, grid, padding_mode="border", align_corners=False) * bright).clamp(0, 1)
            base = (
                F.grid_sample(signs.repeat(views, 1, 1, 1), grid, padding_mode="border", align_corners=False) * bright
            ).clamp(0, 1)
            pv, pb = clf.predict(seen), clf.predict(base)
        out["success"].append(float((pred != clean).float().mean()))
        out["target_rate"].append(float((pred == int(t)).float().mean()))
        out["l2"].append(float(l2_dissimilarity(signs, x_adv).mean()))
        out["success_views"].append(float((pv != pb).float().mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def _summary(ev: dict[str, np.ndarray], targets: np.ndarray) -> dict:
    best = int(np.lexsort((ev["l2"], -ev["success"]))[0])  # the attacker's best target: max success, then min L2
    return {
        "avg_success": float(ev["success"].mean()),
        "worst_success": float(ev["success"].max()),
        "avg_target_rate": float(ev["target_rate"].mean()),
        "l2": float(ev["l2"].mean()),
        "avg_success_views": float(ev["success_views"].mean()),
        "best_target": int(targets[best]),
        "per_target": {k: [float(v) for v in ev[k]] for k in ev},
    }


def run_blurnet(
    cfg: BenchConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict:
    out, cache = bench_paths(cfg, out, cache_dir)
    o = {**BLURNET_DEFAULTS, **cfg.section("blurnet")}
    untrained = [m for m in dict.fromkeys(list(o["blackbox"]) + list(o["whitebox"])) if not get_spec(m).available]
    if untrained:  # before any work
        raise ConfigError(
            f"{cfg.name} [blurnet]: no weights yet for {', '.join(untrained)}; make them with "
            + "; ".join(f"`advguard train {m} --install`" for m in untrained)
        )
    ds = load_dataset(cfg.dataset, cfg.split)
    idx = np.flatnonzero(ds.y == int(o["stop_class"]))
    if len(idx) < int(o["n_signs"]):
        raise ValueError(f"{cfg.name}: only {len(idx)} images of class {o['stop_class']}; lower n_signs")
    idx = np.sort(np.random.default_rng(cfg.seed).choice(idx, int(o["n_signs"]), replace=False))
    signs = torch.from_numpy(ds.x[idx])
    names = getattr(ds, "classes", None)
    classes = len(names) if names is not None else int(ds.y.max()) + 1  # LISA-CNN: 18 outputs, output 0 unnamed
    settings = rp2_settings(cfg.section("blurnet"), o)
    targets = (
        [t for t in range(classes) if t != int(o["stop_class"])]
        if o["targets"] == "all"
        else [int(t) for t in o["targets"]]
    )
    models = list(dict.fromkeys([cfg.model] + list(o["whitebox"])))
    rows, stickers, clfs, evals = {}, {}, {}, {}
    for name in tqdm(models, desc="white-box models", disable=not progress):
        clf = clfs[name] = load_model(name)
        key = cache_key(weights_hash(clf.model), cfg.dataset, idx.tolist(), _settings_key(settings), cfg.seed)
        folder = cache / "blurnet" / name / key
        st = stickers[name] = _stickers(clf, signs, targets, o, folder, settings["mask"], cfg.seed, progress, settings)
        ev = evals[name] = _evaluate(clf, signs, st, int(o["eval_views"]), cfg.seed)
        with clf.exact():
            acc_signs = float(clf.accuracy(signs, ds.y[idx]))
            acc_test = float(clf.accuracy(ds.x, ds.y))
        rows[name] = {
            "model": name,
            "paper_row": paper_key(name),
            "defense": get_spec(name).defense,
            "acc_signs": acc_signs,
            "acc_test": acc_test,
            "rp2_seconds": float(st["seconds"]),
            "train_seconds": get_spec(name).card().get("wall_time_s"),
            "mask_share": float(st["mask"].mean()),
            **_summary(ev, st["targets"]),
        }
    if o["l1_mask"]:  # RP2's two-stage mask on the undefended model
        clf = clfs[cfg.model]
        sk = {k: v for k, v in _settings_key(settings).items() if k != "mask"}
        key = cache_key(weights_hash(clf.model), cfg.dataset, idx.tolist(), sk, "l1", o["l1_share"], cfg.seed)
        st = stickers["l1"] = _stickers(
            clf, signs, targets, o, cache / "blurnet" / f"{cfg.model}-l1" / key, "l1", cfg.seed, progress, settings
        )
        rows["l1"] = {
            "model": cfg.model,
            "paper_row": None,
            "mask": "l1",
            "acc_signs": rows[cfg.model]["acc_signs"],
            "acc_test": rows[cfg.model]["acc_test"],
            "rp2_seconds": float(st["seconds"]),
            "mask_share": float(st["mask"].mean()),
            **_summary(_evaluate(clf, signs, st, int(o["eval_views"]), cfg.seed), st["targets"]),
        }
    # Table 1: the undefended model's stickers, classified by each black-box model
    src = stickers[cfg.model]
    best = rows[cfg.model]["best_target"]
    table1 = []
    b = int(np.flatnonzero(src["targets"] == best)[0])
    for name in [cfg.model] + list(o["blackbox"]):
        if name == cfg.model:  # its own stickers: the white-box evaluation above
            ev, acc = evals[name], rows[name]["acc_signs"]
        else:
            clf = load_model(name)
            ev = _evaluate(clf, signs, src, int(o["eval_views"]), cfg.seed)
            with clf.exact():
                acc = float(clf.accuracy(signs, ds.y[idx]))
        table1.append(
            {
                "model": name,
                "paper_row": paper_key(name),
                "acc_signs": acc,
                "success_best_target": float(ev["success"][b]),
                "avg_success": float(ev["success"].mean()),
                "worst_success": float(ev["success"].max()),
                "avg_success_views": float(ev["success_views"].mean()),
            }
        )
    doc = {
        **results_header(cfg),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "options": o,
        "rp2": settings,
        "mask_share": rows[cfg.model]["mask_share"],
        "n_test": int(len(ds.y)),
        "signs": idx.tolist(),
        "targets": targets,
        "best_target": best,
        "table1": table1,
        "table2": list(rows.values()),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    _page(
        cfg,
        doc,
        out,
        signs,
        stickers,
        clfs,
        getattr(ds, "classes", None),
        {k: r["best_target"] for k, r in rows.items()},
    )
    return doc


def summary_table(doc: dict) -> tuple[list[str], list[list]]:
    return (
        ["model", "legit acc", "avg success", "worst success", "L2 dissimilarity"],
        [
            [
                r["model"] + (" (L1 mask)" if r.get("mask") == "l1" else ""),
                pct(r["acc_test"]),
                pct(r["avg_success"]),
                pct(r["worst_success"]),
                f"{r['l2']:.3f}",
            ]
            for r in doc["table2"]
        ],
    )


def _page(
    cfg: BenchConfig,
    doc: dict,
    out: Path,
    signs: torch.Tensor,
    stickers: dict,
    clfs: dict,
    classes,
    best: dict[str, int],
) -> None:
    prov, o = doc["provenance"], doc["options"]
    name = lambda t: f"{t} ({classes[t]})" if classes is not None else str(t)  # noqa: E731
    rs = doc.get("rp2") or {
        **o,
        "preset": None,
        "init": "zero",
        "transforms": True,
        "nps": True,
        "norm_p": 2,
        "clip": 1.0,
    }
    share = 100 * doc["mask_share"]
    page = Page(cfg.title or cfg.name)
    mask_text = {
        "rp2-rectangles": "the RP2 authors' rectangles mask (`rp2-rectangles`)",
        "bars": "our two-bar mask (`bars`)",
    }.get(rs["mask"], f"`{rs['mask']}`")
    views = (
        f"{rs['n_transforms']} random view(s) per sign per step (brightness, rotation, zoom, perspective)"
        if rs["transforms"]
        else "no synthetic transforms (the photos as they are)"
    )
    page.text(
        f"Data: `{cfg.dataset}` {cfg.split} split ({doc.get('n_test', '?')} images), {len(doc['signs'])} stop "
        f"signs (class {o['stop_class']}, seeded draw). RP2"
        + (
            f" (preset `{rs['preset']}`, the RP2 authors' LISA run, with this config's overrides)"
            if rs["preset"]
            else ""
        )
        + f": one sticker per target class ({len(doc['targets'])} targets: "
        f"{', '.join(map(str, doc['targets']))}), {mask_text} covering **{share:.1f} % of the image**, "
        f"lambda {rs['lam']:g} on the L{rs['norm_p']} norm of the masked perturbation, {rs['steps']} Adam steps "
        f"over all the signs (lr {rs['lr']:g}), delta started at "
        f"{'uniform(0, 1)' if rs['init'] == 'uniform' else 'zero'} "
        f"and kept in [-{rs['clip']:g}, {rs['clip']:g}], {views}, printability (NPS) term "
        f"{'on' if rs['nps'] else 'off'}. Success = the paper's: the predicted label changes; 'views' = the same "
        f"over {o['eval_views']} random views (brightness, rotation, zoom, perspective) of each stickered sign."
    )
    page.h2("Table 1: black box (stickers made on the undefended model), paper's LISA figures in parentheses")
    rows = []
    for r in doc["table1"]:
        p = paper.TABLE1.get(r["paper_row"])
        ref = lambda i: f" ({p[i]:g})" if p else ""  # noqa: E731, B023 - called within this iteration
        rows.append(
            [
                r["model"],
                f"{pct(r['acc_signs'])}{ref(0)}",
                f"{pct(r['success_best_target'])}{ref(1)}",
                pct(r["avg_success"]),
                pct(r["worst_success"]),
                pct(r["avg_success_views"]),
            ]
        )
    page.table(
        [
            "model",
            "accuracy on the clean signs %",
            f"success, target {name(doc['best_target'])} %",
            "success, mean over targets %",
            "success, worst target %",
            "mean success over views %",
        ],
        rows,
        caption="The paper reports one sticker; we give the attacker's best target on the undefended model "
        f"(max success, then min L2) and the mean over all targets. Sticker mask: {share:.1f} % of "
        f"the image ({rs['mask']}).",
    )
    page.h2("Table 2: white box (RP2 against each model), paper's figures in parentheses")
    rows = []
    base_acc = next(r["acc_test"] for r in doc["table2"] if r["model"] == doc["model"])
    for r in doc["table2"]:
        p = paper.TABLE2.get(r["paper_row"]) if r.get("paper_row") else None
        cost = 100 * (base_acc - r["acc_test"])
        p_cost = f" ({paper.TABLE2['baseline'][1] - p[1]:.1f})" if p else ""
        ref = lambda i, f="{:g}": f" ({f.format(p[i])})" if p else ""  # noqa: E731, B023 - called within this iteration
        alpha = (r.get("defense") or {}).get("alpha", 0 if r.get("paper_row") == "baseline" else None)
        rows.append(
            [
                r["model"] + (" (L1-stage mask)" if r.get("mask") == "l1" else ""),
                "-" if alpha is None else f"{alpha:g}",
                f"{100 * r.get('mask_share', float('nan')):.1f}",
                f"{pct(r['acc_test'])}{ref(1)}",
                "-" if r["model"] == doc["model"] else f"{cost:.1f}{p_cost}",
                f"{pct(r['avg_success'])}{ref(2)}",
                f"{pct(r['worst_success'])}{ref(3)}",
                f"{r['l2']:.3f}{ref(4, '{:.3f}')}",
                pct(r["avg_target_rate"]),
                pct(r["avg_success_views"]),
                f"{r['rp2_seconds'] / len(doc['targets']):.1f}",
                "-" if not r.get("train_seconds") else f"{r['train_seconds'] / 60:.0f}",
            ]
        )
    page.table(
        [
            "model",
            "alpha",
            "mask % of image",
            "legit acc %",
            "accuracy cost, points",
            "avg success %",
            "worst success %",
            "L2 dissimilarity",
            "avg target rate %",
            "avg success over views %",
            "RP2 s / target",
            "training min",
        ],
        rows,
        caption=f"Legit accuracy: the whole `{cfg.dataset}` {cfg.split} split ({doc.get('n_test', '?')} "
        "images; the paper's: its LISA test set). Accuracy cost: points of legit accuracy below the "
        f"undefended `{doc['model']}` (the paper's: below its baseline's "
        f"{paper.TABLE2['baseline'][1]:g} %). "
        "Averages over the "
        "target classes.",
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for r in doc["table2"]:
        pt = r["per_target"]
        ax.scatter(
            pt["l2"],
            100 * np.asarray(pt["success"]),
            s=12,
            alpha=0.7,
            label=r["model"] + (" (L1 mask)" if r.get("mask") == "l1" else ""),
        )
    ax.set_xlabel("L2 dissimilarity (eq. 1)")
    ax.set_ylabel("attack success rate (%)")
    ax.legend(fontsize=6)
    page.figure(
        "figure4_l2_vs_success.png",
        fig_png(fig),
        "Figure 4: L2 dissimilarity vs success, one point per "
        "target class and model (ours). The paper's: lower and to the right is better for the defence; TV "
        "rows cluster lowest.",
    )
    src = stickers[cfg.model]
    b = int(np.flatnonzero(src["targets"] == doc["best_target"])[0])
    st = Sticker(torch.from_numpy(src["delta"][b]), torch.from_numpy(src["mask"][b]), doc["best_target"])
    x0, xa = signs[0], st.apply(signs[:1])[0]
    gray = lambda v: v.mean(0)  # noqa: E731
    fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
    for ax, v, t in zip(
        axes,
        [x0, xa, log_spectrum(gray(x0)), log_spectrum(gray(xa))],
        ["clean", "stickered", "spectrum (clean)", "spectrum (stickered)"],
        strict=True,
    ):
        v = np.asarray(v)
        ax.imshow(v.transpose(1, 2, 0) if v.ndim == 3 else v, cmap=None if v.ndim == 3 else "viridis")
        ax.set_title(t, fontsize=8), ax.set_xticks([]), ax.set_yticks([])
    page.figure(
        "figure1_image_spectra.png",
        fig_png(fig),
        "Figure 1: log-shifted, normalised FFT magnitude of a "
        "clean and a stickered stop sign (grey level); as in the paper, the sticker is hard to see in the "
        "image spectrum.",
    )
    layer = "model." + (get_spec(cfg.model).defense or {}).get("after", "relu1")
    clf = clfs[cfg.model]
    m0, ma = first_layer_maps(clf.module, x0[None], layer)[0], first_layer_maps(clf.module, xa[None], layer)[0]
    cols = feature_spectra(m0, ma, size=int(o["spectra_blur"]))
    ch = np.argsort(-(ma - m0).abs().flatten(1).sum(1).numpy())[:5].tolist()  # the maps the sticker moves most
    fig, axes = plt.subplots(len(ch), 4, figsize=(7, 1.8 * len(ch)), squeeze=False)
    for i, c in enumerate(ch):
        for j, k in enumerate(cols):
            axes[i, j].imshow(cols[k][c], cmap="viridis", vmin=0, vmax=1)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(k, fontsize=8)
        axes[i, 0].set_ylabel(f"map {c}", fontsize=7)
    page.figure(
        "figure2_feature_spectra.png",
        fig_png(fig),
        f"Figure 2: spectra of first-layer feature maps "
        f"(`{layer}` of {cfg.model}) of a clean and a stickered stop sign, their difference, and the "
        f"difference "
        f"after a {o['spectra_blur']}x{o['spectra_blur']} blur of the maps (the five maps the sticker changes "
        f"most). The paper's figure shows the same columns for its LISA model.",
    )
    for model, s in stickers.items():
        bt = best[model]
        k = int(np.flatnonzero(s["targets"] == bt)[0])
        sk = Sticker(torch.from_numpy(s["delta"][k]), torch.from_numpy(s["mask"][k]), bt)
        save_sticker_png(sk, out / "stickers" / f"{model}-target{bt}.png", over=signs[0])
    page.text("Stickers (the attacker's best target per model, on the first sign, 8x enlarged): `stickers/*.png`.")
    page.text(
        f"- Machine: {prov['machine']}. Commit `{prov['commit']}`, {prov['date']}.\n"
        f"- Command: `advguard reproduce configs/{cfg.name}.toml`"
    )
    page.write(out)
