"""ML-LOO / Segmentation Fault's protocol as an ``advguard reproduce`` experiment (``experiment = "segfault"``).

Paper: ``segmentation-fault-ml-loo`` (Sections 3-4; docs/methods/segfault.md).

1. Attack families: attacks sharing a ``group`` are pooled (the paper's FGSM / PGD / DeepFool columns mix
   eps 0.02 / 0.06 / 0.1, a third each: member j attacks part j of the clean images). The correctly
   classified images are the clean set, shared by all families; only successful adversarial images count
   (the authors' code labelled failed attacks adversarial too). 80/20 train/test by clean-image id.
2. Every ``[[segfault.unit]]`` (pixel ML-LOO, Felzenszwalb, Quickshift, SLIC) is run once per image with the
   multi-layer feature: its columns hold the 10-D feature (all outputs) and the 1-D feature (the column of
   the image's predicted class), so one pass gives all three flavours. Features are cached per 128-image
   batch (resumable after Ctrl-C) with each batch's time, peak memory and segment counts (:mod:`.protocol`).
3. Table 2 (pixel ML-LOO, ``pixel_classifiers``), Table 6 (XGBoost AUC for every unit), Table 7 (seconds,
   peak MB and mean segments per 128-image batch for each flavour, timed on the first 128 clean images, and
   the size of the attribution array the paper held), Figure 3 (time vs AUC, C&W, 10-D) (:mod:`.tables`,
   :mod:`.report`).

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

from pathlib import Path
from typing import Any

from ...models import load_model
from ..common import bench_paths, clean_set_key, dataset_kwargs, forward_cost, results_header, write_results
from ..config import ExperimentConfig
from . import tables
from .options import SegfaultOptions, paper_label, unit_label
from .protocol import (
    BATCH,
    FLAVOURS,
    build_families,
    cached_segment_counts,
    flavour,
    grid_features,
    segment_counts,
    unit_features,
)
from .report import FLAVOUR_NAMES, summary_table, write_page

__all__ = [
    "BATCH",
    "FLAVOURS",
    "FLAVOUR_NAMES",
    "flavour",
    "run_segfault",
    "segment_counts",
    "summary_table",
    "unit_features",
]


def run_segfault(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    section: dict[str, Any] = cfg.section("segfault")  # as written: the Table 7 timings' cache key holds it
    opts: SegfaultOptions = cfg.options or SegfaultOptions.from_section(section)
    out, cache = bench_paths(cfg, out, cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_model(cfg.model, device=cfg.device)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    # segment counts of the paper's grid first (cheap, and useful on their own)
    sc = opts.segment_counts
    counts_doc = None if sc is None else cached_segment_counts(cfg, sc, ds_kwargs, cache)
    fams = build_families(cfg, clf, ds_kwargs, cache, progress)
    feats = grid_features(cfg, opts, clf, fams, ds_kwargs, cache, progress)
    labels = [unit_label(u) for u in opts.unit]
    x_c = fams.first.x_clean
    n_time = opts.timing_images or opts.batch_images  # Table 7: every flavour on the first clean images
    clean_key = clean_set_key(cfg, fams.first, ds_kwargs)
    timing = tables.timings(clf, opts, section, x_c[:n_time], clean_key, cache / "segfault", cfg.seed)
    floor = forward_cost(clf, x_c[:256])
    doc: dict[str, Any] = {
        **results_header(cfg),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "units": labels,
        "families": list(fams.pooled),
        "counts": tables.family_counts(fams),
        "auc": tables.aucs(opts, feats, fams, clf.num_classes, cfg.seed, progress),
        "timing": timing,
        "grid_cost": tables.grid_cost(feats, labels),
        "forward_floor": floor,
        "segment_counts": counts_doc,
        "data": {
            "dataset": cfg.dataset,
            "split": cfg.split,
            "dataset_kwargs": ds_kwargs,
            "n_images": cfg.n_images,
            "timing_images": n_time,
        },
        "paper_rows": {unit_label(u): paper_label(u) for u in opts.unit},
    }
    write_results(doc, out)
    write_page(cfg, doc, out, opts.unit)
    return doc
