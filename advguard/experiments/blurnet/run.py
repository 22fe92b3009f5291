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
   image are written to the results and stated on the page. (:mod:`.protocol`)
3. Table 1 (black box): the undefended model's stickers pasted on the signs and classified by each
   ``blackbox`` model; Table 2 (white box): each model's own stickers. Success = the paper's eq.: the label
   changes (F(x) != F(x_adv)); the target rate is given too. Per model: accuracy on the clean signs and on
   the full test split, average and worst (max over targets) success, eq. 1's L2 dissimilarity, and the
   success under ``eval_views`` random views (brightness, rotation, zoom, perspective) of each stickered sign.
   (:mod:`.tables`)
4. Figures: 1 (image spectra), 2 (first-layer feature-map spectra, clean / stickered / difference / blurred
   difference), 4 (L2 dissimilarity vs success per target and model); stickers as PNG. (:mod:`.report`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import bench_paths, results_header, write_results
from ..config import ExperimentConfig
from . import tables
from .options import BlurNetOptions
from .protocol import RP2_KEYS, _settings_key, check_trained, draw_signs, options_record, paper_key, rp2_settings
from .report import summary_table, write_page

__all__ = ["RP2_KEYS", "_settings_key", "paper_key", "rp2_settings", "run_blurnet", "summary_table"]


def run_blurnet(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    out, cache = bench_paths(cfg, out, cache_dir)
    section: dict[str, Any] = cfg.section("blurnet")  # as written: which RP2 settings override a preset
    opts: BlurNetOptions = cfg.options or BlurNetOptions.from_section(section)
    check_trained(cfg, opts)  # before any work
    signs = draw_signs(cfg, opts)
    record = options_record(section)
    settings = rp2_settings(section, record)
    wb = tables.table2(cfg, opts, settings, signs, cache, progress)
    if opts.l1_mask:  # RP2's two-stage mask on the undefended model
        tables.l1_row(cfg, opts, settings, signs, wb, cache, progress)
    base = wb.rows[cfg.model]
    doc: dict[str, Any] = {
        **results_header(cfg),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "options": record,
        "rp2": settings,
        "mask_share": base["mask_share"],
        "n_test": int(len(signs.ds.y)),
        "signs": signs.idx.tolist(),
        "targets": signs.targets,
        "best_target": base["best_target"],
        "table1": tables.table1(cfg, opts, signs, wb),
        "table2": list(wb.rows.values()),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    write_page(cfg, doc, out, signs, wb)
    return doc
