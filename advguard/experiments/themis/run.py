"""Erase-and-Restore (THEMIS)'s protocol as an ``advguard reproduce`` experiment (``experiment = "themis"``).

For every target model in ``[themis] models``:

1. Balanced sets (Section 5): the correctly classified images of the drawn subset are the clean set;
   with ``balanced = true`` each configured attack attacks a disjoint part of them, so the pooled
   adversarial set holds about one image per clean image. 80/20 train/test by clean-image id.
2. The (1 + n) softmax vectors of every image under n erase-and-restore draws are computed once
   with Telea inpainting and once with the 3x3 median baseline (cached); every table slices them:
   the n sweep uses the first n' draws (draws are independent, so this equals running with n').
3. Table 1 (one detector per model and classifier, trained on all attacks pooled or on ``table1_train_on``; FPR and
   per-attack detection rate at the classifier's own decision, as the paper reports; AUCs and the rates at a
   threshold calibrated to ``fpr`` on training clean images too), Table 2 (vs the ``compare``
   detectors of the harness, calibrated to ``fpr``), Table 3 (trained on one model's CW sets, tested
   on another's), CW -> DeepFool transfer, Tables 4/5 (n sweep), Figure 5 (median-filter baseline
   ROC), Table 6 (mean KL / Wasserstein distance, threshold picked on the ROC as in the paper, plus
   an honest one calibrated on training clean images), Figure 8 (KL vs WD scatter).
4. Whose gap (issue #22): ``classifiers`` may be tables ``{label, model, params, grid, align, extra_clean,
   all_tables}`` so one run compares our decision model with the authors' (``SVC(C=5, gamma=0.01)`` on raw
   softmax features, AdaBoost with 200 stumps), a cross-validated grid and ``extra_clean_train`` clean images
   from the train split; every Table 1 row also gets the learning-free label-change vote as a reference, and
   ``[themis.learning_curve]`` draws AUC vs the number of training pairs per attack family.
5. ``[themis.adaptive]``: :class:`~advguard.attacks.adaptive.DetectorAwareCW` against the Table 1
   SVM of the first model at its own decision, on test-fold clean images, cached in chunks
   (resumable); the bypass rate vs number of optimisation paths is Figure 6.

The steps are in :mod:`.protocol` (sets, cached erase-and-restore outputs, fitting), the tables in :mod:`.tables`,
the page in :mod:`.report`; this module runs them in order and writes the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..common import bench_paths, results_header, write_results
from ..config import ExperimentConfig
from . import tables
from .options import ThemisOptions
from .protocol import ModelData, Plan, label_change_rate
from .report import page, summary_table

__all__ = ["run_themis", "summary_table", "label_change_rate"]


def run_themis(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run THEMIS's protocol on ``cfg``; write results.json and the page into ``out``; return the document."""
    out, cache = bench_paths(cfg, out, cache_dir)
    opts = cfg.options if isinstance(cfg.options, ThemisOptions) else ThemisOptions.from_section(cfg.section("themis"))
    plan = Plan.from_config(cfg, opts)
    t_start = time.perf_counter()

    mds = {
        m: ModelData(cfg, opts, m, cache, progress)
        for m in tqdm(plan.models, desc="target models", disable=not progress)
    }
    doc = _header(plan, mds)
    doc["insight"] = tables.insight(plan, mds)
    t1 = tables.table1(plan, mds)
    doc["table1"] = t1.rows
    doc["vote"] = tables.vote(plan, mds)
    doc["learning_curve"] = tables.learning_curve(plan, mds)
    doc["table2"] = tables.table2(plan, mds)
    doc["table3"], doc["transfer"] = tables.table3(plan, mds)
    doc["table4"] = tables.table4(plan, mds)
    doc["table6"], scatter = tables.table6(plan, mds)
    if opts.adaptive:
        doc["adaptive"] = tables.figure6(plan, mds, t1.fitted, cache, progress)
    doc["wall_seconds"] = time.perf_counter() - t_start

    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    page(doc, cfg, opts.balanced, t1.roc, scatter).write(out)
    return doc


def _header(plan: Plan, mds: dict[str, ModelData]) -> dict[str, Any]:
    """The results document's envelope, the run's settings and every model's sets (``sets``)."""
    cfg = plan.cfg
    first = mds[plan.models[0]].first
    return {
        **results_header(cfg),
        "n": plan.n,
        "ns": plan.ns,
        "train_on": plan.cw,
        "data": {
            "dataset": cfg.dataset,
            "split": cfg.split,
            "source": first.config.get("source"),
            "n_images": first.counts["n_images"],
        },
        "classifiers": plan.specs,
        "table1_train_on": plan.pooled,
        "sets": {m: _sets_summary(md) for m, md in mds.items()},
    }


def _sets_summary(md: ModelData) -> dict[str, Any]:
    return {
        "n_correct": md.first.counts["n_correct"],
        "clean": {"train": int((md.fold_c == 0).sum()), "test": int((md.fold_c == 1).sum())},
        "attacks": {
            lab: {**s.summary(), "train": int((md.fold_a[lab] == 0).sum()), "test": int((md.fold_a[lab] == 1).sum())}
            for lab, s in md.sets.items()
        },
        "forward_floor": md.floor,
        "er_cost": md.cost,  # building the cached probabilities (whenever that ran)
        "er_cost_now": md.cost_now,  # measured in this run beside forward_floor, on the same images
        "extra_clean": md.extra.info,
    }
