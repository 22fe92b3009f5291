"""BlurNet's results page (one function per section), Figures 1, 2 and 4, the sticker PNGs and the terminal
summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...attacks.rp2 import Sticker, save_sticker_png
from ...defenses.blurnet import feature_spectra, first_layer_maps, log_spectrum
from ...models import get_spec
from ..config import ExperimentConfig
from ..page import Page, fig_png, pct, pyplot
from . import paper
from .protocol import Signs
from .tables import WhiteBox

Doc = dict[str, Any]


def summary_table(doc: Doc) -> tuple[list[str], list[list[Any]]]:
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


def write_page(cfg: ExperimentConfig, doc: Doc, out: Path, signs: Signs, wb: WhiteBox) -> None:
    """``results.md``, ``report.html``, the figures and ``stickers/*.png`` into ``out``."""
    classes = signs.classes
    rs = doc.get("rp2") or {
        **doc["options"],
        "preset": None,
        "init": "zero",
        "transforms": True,
        "nps": True,
        "norm_p": 2,
        "clip": 1.0,
    }
    page = Page(cfg.title or cfg.name)
    _intro(page, cfg, doc, rs)
    _table1(page, doc, rs, lambda t: f"{t} ({classes[t]})" if classes is not None else str(t))
    _table2(page, cfg, doc)
    _figure4(page, doc)
    xa = _figure1(page, doc, signs, wb.stickers[cfg.model])
    _figure2(page, cfg, doc, signs.x[0], xa, wb)
    _stickers(page, out, signs, wb)
    prov = doc["provenance"]
    page.text(
        f"- Machine: {prov['machine']}. Commit `{prov['commit']}`, {prov['date']}.\n"
        f"- Command: `advguard reproduce configs/{cfg.name}.toml`"
    )
    page.write(out)


def _intro(page: Page, cfg: ExperimentConfig, doc: Doc, rs: dict[str, Any]) -> None:
    o = doc["options"]
    share = 100 * doc["mask_share"]
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


def _ref(p: tuple[float, ...] | None, i: int, fmt: str = "{:g}") -> str:
    """The paper's value ``p[i]`` in parentheses ("" without a paper row)."""
    return f" ({fmt.format(p[i])})" if p else ""


def _table1(page: Page, doc: Doc, rs: dict[str, Any], name: Callable[[int], str]) -> None:
    share = 100 * doc["mask_share"]
    page.h2("Table 1: black box (stickers made on the undefended model), paper's LISA figures in parentheses")
    rows = []
    for r in doc["table1"]:
        p = paper.TABLE1.get(r["paper_row"])
        rows.append(
            [
                r["model"],
                f"{pct(r['acc_signs'])}{_ref(p, 0)}",
                f"{pct(r['success_best_target'])}{_ref(p, 1)}",
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


def _table2(page: Page, cfg: ExperimentConfig, doc: Doc) -> None:
    page.h2("Table 2: white box (RP2 against each model), paper's figures in parentheses")
    rows = []
    base_acc = next(r["acc_test"] for r in doc["table2"] if r["model"] == doc["model"])
    for r in doc["table2"]:
        p = paper.TABLE2.get(r["paper_row"]) if r.get("paper_row") else None
        cost = 100 * (base_acc - r["acc_test"])
        p_cost = f" ({paper.TABLE2['baseline'][1] - p[1]:.1f})" if p else ""
        alpha = (r.get("defense") or {}).get("alpha", 0 if r.get("paper_row") == "baseline" else None)
        rows.append(
            [
                r["model"] + (" (L1-stage mask)" if r.get("mask") == "l1" else ""),
                "-" if alpha is None else f"{alpha:g}",
                f"{100 * r.get('mask_share', float('nan')):.1f}",
                f"{pct(r['acc_test'])}{_ref(p, 1)}",
                "-" if r["model"] == doc["model"] else f"{cost:.1f}{p_cost}",
                f"{pct(r['avg_success'])}{_ref(p, 2)}",
                f"{pct(r['worst_success'])}{_ref(p, 3)}",
                f"{r['l2']:.3f}{_ref(p, 4, '{:.3f}')}",
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


def _figure4(page: Page, doc: Doc) -> None:
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


def _figure1(page: Page, doc: Doc, signs: Signs, src: dict[str, Any]) -> torch.Tensor:
    """Figure 1 for the first sign with the undefended model's best-target sticker; returns the stickered sign."""
    b = int(np.flatnonzero(src["targets"] == doc["best_target"])[0])
    st = Sticker(torch.from_numpy(src["delta"][b]), torch.from_numpy(src["mask"][b]), doc["best_target"])
    x0, xa = signs.x[0], st.apply(signs.x[:1])[0]
    fig, axes = pyplot().subplots(1, 4, figsize=(8, 2.3))
    for ax, v, t in zip(
        axes,
        [x0, xa, log_spectrum(x0.mean(0)), log_spectrum(xa.mean(0))],
        ["clean", "stickered", "spectrum (clean)", "spectrum (stickered)"],
        strict=True,
    ):
        a = np.asarray(v)
        ax.imshow(a.transpose(1, 2, 0) if a.ndim == 3 else a, cmap=None if a.ndim == 3 else "viridis")
        ax.set_title(t, fontsize=8), ax.set_xticks([]), ax.set_yticks([])
    page.figure(
        "figure1_image_spectra.png",
        fig_png(fig),
        "Figure 1: log-shifted, normalised FFT magnitude of a "
        "clean and a stickered stop sign (grey level); as in the paper, the sticker is hard to see in the "
        "image spectrum.",
    )
    return xa


def _figure2(page: Page, cfg: ExperimentConfig, doc: Doc, x0: torch.Tensor, xa: torch.Tensor, wb: WhiteBox) -> None:
    o = doc["options"]
    layer = "model." + (get_spec(cfg.model).defense or {}).get("after", "relu1")
    clf = wb.clfs[cfg.model]
    m0, ma = first_layer_maps(clf.module, x0[None], layer)[0], first_layer_maps(clf.module, xa[None], layer)[0]
    cols = feature_spectra(m0, ma, size=int(o["spectra_blur"]))
    ch = np.argsort(-(ma - m0).abs().flatten(1).sum(1).numpy())[:5].tolist()  # the maps the sticker moves most
    fig, axes = pyplot().subplots(len(ch), 4, figsize=(7, 1.8 * len(ch)), squeeze=False)
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


def _stickers(page: Page, out: Path, signs: Signs, wb: WhiteBox) -> None:
    """One PNG per model (its best target's sticker); PNGs an earlier run left for another best target go."""
    written = set()
    for model, s in wb.stickers.items():
        bt = wb.rows[model]["best_target"]
        k = int(np.flatnonzero(s["targets"] == bt)[0])
        sk = Sticker(torch.from_numpy(s["delta"][k]), torch.from_numpy(s["mask"][k]), bt)
        path = out / "stickers" / f"{model}-target{bt}.png"
        save_sticker_png(sk, path, over=signs.x[0])
        written.add(path.name)
    for old in (out / "stickers").glob("*-target*.png"):
        if old.name not in written:
            old.unlink()
    page.text("Stickers (the attacker's best target per model, on the first sign, 8x enlarged): `stickers/*.png`.")
