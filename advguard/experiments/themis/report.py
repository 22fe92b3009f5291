"""THEMIS's results page (one function per section), its plots and the closing summary table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...detectors.decision import SCALED_MODELS as SCALED
from ...metrics import roc_auc
from ..config import ExperimentConfig
from ..page import Page, fig_png, pct, pyplot
from ..registry import Summary
from . import paper
from .tables import RocData, ScatterData

#: results.json data (rows read back from the document)
Doc = dict[str, Any]
Row = list[Any]


@dataclass(frozen=True)
class View:
    """What every section reads: the results document, the config and the attack groups."""

    doc: Doc
    cfg: ExperimentConfig
    balanced: bool
    roc: RocData
    scatter: ScatterData

    @property
    def labels(self) -> list[str]:
        return [a.label for a in self.cfg.attacks]

    @property
    def cw(self) -> list[str]:
        cw: list[str] = self.doc["train_on"]
        return cw

    @property
    def cifar(self) -> bool:
        return self.cfg.dataset == "cifar10"

    @property
    def ds_name(self) -> str:
        return "CIFAR-10" if self.cifar else "ImageNet"

    @property
    def at(self) -> str:
        """The calibrated operating point's column suffix, e.g. "@5%"."""
        return f"@{100 * self.cfg.fpr:g}%"


def page(doc: Doc, cfg: ExperimentConfig, balanced: bool, roc: RocData, scatter: ScatterData) -> Page:
    """The results page: ``roc`` (Figure 5) and ``scatter`` (Figure 8) are the plots' data from the run."""
    v = View(doc, cfg, balanced, roc, scatter)
    pg = Page(cfg.title or cfg.name)
    sections: list[Callable[[Page, View], None]] = [
        _intro,
        _whose_gap,
        _learning_curve,
        _table1,
        _insight,
        _table2,
        _table3,
        _transfer,
        _table4,
        _figure5,
        _table6,
        _adaptive,
        _cost,
    ]
    for section in sections:
        section(pg, v)
    pg.configuration(doc)
    return pg


def summary_table(doc: Doc) -> Summary:
    labels = list(doc["table1"][0]["dr"]) if doc["table1"] else []
    return (
        ["model", "classifier", "FPR %"] + [f"DR {lab} %" for lab in labels],
        [[r["model"], r["classifier"], pct(r["fpr"])] + [pct(r["dr"][lab]) for lab in labels] for r in doc["table1"]],
    )


# ==================================================================== helpers
def _abbrev(label: str) -> str:
    """Short column name of an attack label: 'CW-L2 κ=0.4' -> 'κ0.4', 'DeepFool' -> 'DF'."""
    if "κ=" in label:
        return "κ" + label.split("κ=")[1]
    return {"deepfool": "DF"}.get(label.lower(), label.split()[0])


def _short(m: str) -> str:
    return m.replace("cifar10-", "")


def _model_name(m: str) -> str:
    """The paper's name of the model our ``m`` stands for."""
    return {
        "cifar10-cnn": "Carlini",
        "cifar10-cnn-ls0": "Carlini",
        "cifar10-resnet20": "ResNet32",
        "cifar10-resnet32-pretrained": "ResNet32",
    }.get(m, "ResNet50")


def _paper_cols(vals: tuple[float, ...], labels: list[str]) -> list[float | str]:
    """Map the paper's (κ=0, 0.4, 1.0, DeepFool) columns onto our attack labels by name."""
    by = {"0.0": vals[0], "0.4": vals[1], "1.0": vals[2]}
    out: list[float | str] = []
    for lab in labels:
        if "deepfool" in lab.lower():
            out.append(vals[3])
        else:
            out.append(next((v for k, v in by.items() if k in lab), "-"))
    return out


# ==================================================================== sections
def _intro(pg: Page, v: View) -> None:
    doc, cfg = v.doc, v.cfg
    p, d = doc["provenance"], doc["data"]
    lines = [
        f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn (seed {cfg.seed})."
    ]
    for m, s in doc["sets"].items():
        att = ", ".join(
            f"{lab} {a['n_adv']} of {a['n_attacked']} attacked (train {a['train']} / test {a['test']}, "
            f"median L2 {a['median_l2']:.3f})"
            for lab, a in s["attacks"].items()
        )
        lines.append(
            f"- `{m}`: {s['n_correct']} correctly classified = clean set (train {s['clean']['train']} / test "
            f"{s['clean']['test']}); adversarial: {att}."
        )
    lines += [
        "- Balanced protocol: "
        + (
            "each attack attacks a disjoint part of the clean images (one adversarial image per source image); "
            if v.balanced
            else ""
        )
        + f"{'/'.join(str(int(round(100 * f))) for f in cfg.fractions)} train/test split by clean-image id. "
        "Adversarial images are float32 (no 8-bit round trip). Paper: 30,000 images per dataset.",
        f"- THEMIS: n = {doc['n']} draws, 10 % of the pixels erased (exact count, fresh masks per image and draw), "
        "OpenCV Telea inpainting radius 3; feature = the n + 1 softmax vectors"
        + ("" if v.cifar else ", each reduced by a PCA to 10 dimensions fitted once on the training features")
        + ".",
        "- Rates are on the test split. **FPR / DR** = at the decision model's own decision (SVM / AdaBoost "
        f"decision_function > 0, as the paper reports); **{v.at}** = at a threshold calibrated on "
        f"training clean images for {100 * cfg.fpr:g} % FPR (the advguard protocol).",
        f"- Machine: {p['machine']}. Commit `{p['commit']}`. Date {p['date']}. Wall time "
        f"{doc['wall_seconds'] / 60:.1f} min (cached stages excluded).",
        f"- Reproduce: `{p['command']}`.",
    ]
    pg.text("\n".join(lines))


def _whose_gap(pg: Page, v: View) -> None:
    """Every decision model variant of Table 1 beside the learning-free vote and the paper."""
    doc, labels = v.doc, v.labels
    if not doc.get("vote"):
        return
    pg.h2("Whose gap? One change at a time (Table 1 setting, all attacks pooled)")
    att = " / ".join(_abbrev(lab) for lab in labels)
    head = [
        "model",
        "decision model",
        "settings",
        "clean train",
        "FPR % (own)",
        f"DR % (own): {att}",
        f"FPR % {v.at}",
        f"DR % {v.at}: {att}",
        "AUC pooled %",
        f"FPR % on train-split images (own / {v.at})",
    ]
    rows = []
    for m in doc["sets"]:
        for r in [r for r in doc["table1"] if r["model"] == m] + [x for x in doc.get("vote", []) if x["model"] == m]:
            rows.append(_whose_gap_row(m, r, labels))
        rows += _whose_gap_paper_rows(m, v)
    pg.table(
        head,
        rows,
        'Each row changes one thing against the first (ours); "own" = the decision model\'s own '
        "cut (decision_function > 0), as the paper reports; the calibrated threshold comes from out-of-fold "
        "scores of the row's own training clean images. Detectors trained on "
        + ", ".join(doc.get("table1_train_on", labels))
        + " pooled; AUC pooled over those. The last column: "
        "the same detectors on held-out clean images of the train split (images the target model was trained "
        "on; not used to fit any row), i.e. the FPR a protocol that evaluates on training images would "
        "report.",
    )


def _whose_gap_row(m: str, r: Doc, labels: list[str]) -> Row:
    dr = " / ".join(pct(r["dr"].get(lab), 0) for lab in labels)
    drc = " / ".join(pct(r["dr_calibrated"].get(lab), 0) for lab in labels)
    sett = ", ".join(f"{k}={x}" for k, x in (r.get("params") or {}).items()) or "defaults"
    if r.get("kind") in SCALED and (r.get("params") or {}).get("scale", True):
        sett = "scaler, " + sett
    if r.get("align"):
        sett += ", aligned"
    if r["classifier"] == "label-change vote":
        sett = "flag if the label changes in > n/2 draws (no training)"
    clean_tr = (
        f"{r['n_clean_train']}" + (" (incl. train split)" if r.get("extra_clean") else "")
        if "n_clean_train" in r
        else "-"
    )
    return [
        f"`{_short(m)}`",
        r["classifier"],
        sett,
        clean_tr,
        pct(r["fpr"]),
        dr,
        pct(r["fpr_calibrated"]),
        drc,
        pct(r.get("auc_pooled"), 2),
        f"{pct(r['fpr_trainsplit'])} / {pct(r['fpr_trainsplit_calibrated'])}" if "fpr_trainsplit" in r else "-",
    ]


def _whose_gap_paper_rows(m: str, v: View) -> list[Row]:
    rows = []
    for kind in ("svc", "adaboost"):
        pap = paper.TABLE1.get((v.ds_name, _model_name(m), kind))
        if pap:
            rows.append(
                [
                    f"paper ({_model_name(m)})",
                    kind,
                    "authors: SVC(C=5, gamma=0.01) on raw softmax"
                    if kind == "svc"
                    else "authors: AdaBoost, 200 stumps",
                    "24,000 (+ 24,000 adv.)",
                    f"{pap[0]}",
                    " / ".join(f"{x:.0f}" for x in _paper_cols(pap[1:], v.labels) if not isinstance(x, str)),
                    "-",
                    "-",
                    "-",
                    "-",
                ]
            )
    return rows


def _learning_curve(pg: Page, v: View) -> None:
    lcr = v.doc.get("learning_curve")
    if not lcr:
        return
    pg.h2("Learning curve: AUC vs training pairs")
    sizes = sorted({r["pairs"] for r in lcr})
    rows = []
    for m, fam, c in dict.fromkeys((r["model"], r["family"], r["classifier"]) for r in lcr):
        by = {r["pairs"]: r for r in lcr if (r["model"], r["family"], r["classifier"]) == (m, fam, c)}
        rows.append(
            [f"`{_short(m)}`", fam, c]
            + [f"{pct(by[k]['auc_mean'], 1)} ({pct(by[k]['auc_min'], 1)})" if k in by else "-" for k in sizes]
        )
    pg.table(
        ["model", "attack family", "decision model"] + [f"{k} pairs" for k in sizes],
        rows,
        f"Mean AUC % over {lcr[0]['repeats']} draws of k clean + k adversarial training images (worst draw in "
        "parentheses), tested on the whole test fold of that family.",
    )
    pg.figure("learning_curve.png", _plot_learning_curve(lcr), "AUC vs training pairs per attack family.")


def _table1(pg: Page, v: View) -> None:
    labels = v.labels
    pg.h2("Table 1: detection rate and FPR (trained on all attacks pooled)")
    head = (
        ["model", "classifier", "FPR %"]
        + [f"DR {lab} %" for lab in labels]
        + [f"FPR {v.at}"]
        + [f"DR {lab} {v.at}" for lab in labels]
        + ["AUC pooled %"]
    )
    rows = []
    for r in v.doc["table1"]:
        rows.append(
            [f"`{r['model']}`", r["classifier"], pct(r["fpr"])]
            + [pct(r["dr"][lab]) for lab in labels]
            + [pct(r["fpr_calibrated"])]
            + [pct(r["dr_calibrated"][lab]) for lab in labels]
            + [pct(r["auc_pooled"], 2)]
        )
        pap = (
            paper.TABLE1.get((v.ds_name, _model_name(r["model"]), r["classifier"]))
            if r["classifier"] == r.get("kind", r["classifier"])
            else None
        )
        if pap:
            rows.append(
                [f"paper ({_model_name(r['model'])})", r["classifier"], f"{pap[0]}"]
                + [f"{x}" for x in _paper_cols(pap[1:], labels)]
                + ["-"] * (len(labels) + 2)
            )
    pg.table(
        head,
        rows,
        "Ours (test split) with the paper's row below (the paper's CIFAR-10 models: Carlini's CIFAR "
        "net and ResNet-32; ours: cifar10-cnn and cifar10-resnet20).",
    )


def _insight(pg: Page, v: View) -> None:
    pg.h2("Why it works: what one erase-and-restore draw does (the paper's Figure 3)")
    rows = [
        [
            f"`{r['model']}`",
            r["restore"],
            r["set"],
            r["n"],
            pct(r["changed_per_draw"]),
            pct(r["changed_any_draw"]),
            pct(r["changed_majority"]),
        ]
        for r in v.doc["insight"]
    ]
    pg.table(
        [
            "model",
            "restore",
            "images",
            "n",
            "top-1 changed, per draw %",
            "changed in >= 1 of n draws %",
            "changed in most draws %",
        ],
        rows,
        "Paper (ResNet-32, 10 % erased, Telea): benign accuracy after one draw 90.5-96.6 % (5-15 % erased), i.e. "
        "3.4-9.5 % changed; CW attack success after one draw 3.1-7.1 %, i.e. ~93-97 % changed.",
    )


def _table2(pg: Page, v: View) -> None:
    doc, labels, cw = v.doc, v.labels, v.cw
    if not doc["table2"]:
        return
    pg.h2("Table 2: THEMIS vs Feature Squeezing")
    k0 = cw[0] if cw else labels[0]
    df = next((lab for lab in labels if "deepfool" in lab.lower()), labels[-1])
    rows = []
    for m in doc["sets"]:
        t = (
            next(r for r in doc["table1"] if r["model"] == m and r["classifier"] == "svc")
            if any(r["classifier"] == "svc" for r in doc["table1"])
            else doc["table1"][0]
        )
        rows.append([f"`{m}`", "THEMIS (SVM, own decision)", pct(t["fpr"]), pct(t["dr"][k0]), pct(t["dr"][df])])
        rows.append(
            [
                f"`{m}`",
                f"THEMIS (SVM, {v.at})",
                pct(t["fpr_calibrated"]),
                pct(t["dr_calibrated"][k0]),
                pct(t["dr_calibrated"][df]),
            ]
        )
        for r in doc["table2"]:
            if r["model"] == m:
                rows.append([f"`{m}`", f"{r['detector']} ({v.at})", pct(r["fpr"]), pct(r["dr"][k0]), pct(r["dr"][df])])
    for name, figs in paper.TABLE2.items():
        f, a, b = figs[v.ds_name]
        rows.append(["paper", name, f"{f}", f"{a}", f"{b}"])
    pg.table(
        ["model", "detector", "FPR %", f"DR {k0} %", f"DR {df} %"],
        rows,
        "Feature Squeezing = the harness's detector (median 2x2, bit depth 5, non-local means; max L1 "
        "distance), threshold calibrated on training clean images. LID and NIC are not implemented in "
        "advguard: their rows are the paper's quotes only.",
    )


def _table3(pg: Page, v: View) -> None:
    doc, cw = v.doc, v.cw
    if len(doc["sets"]) <= 1:
        return
    pg.h2("Table 3: target-model agnostic (train on one model's CW-L2 sets, test on the other's)")
    rows = []
    for r in doc["table3"]:
        if r["train"] == r["test"]:
            continue
        key = f"{_model_name(r['train'])}->{_model_name(r['test'])}"
        pap = paper.TABLE3.get((key, r.get("kind", r["classifier"])))
        rows.append(
            [f"`{_short(r['train'])}` -> `{_short(r['test'])}`", r["classifier"], pct(r["fpr"])]
            + [pct(r["dr"][lab]) for lab in cw]
            + [" / ".join(f"{x}" for x in pap) if pap else "-"]
        )
    pg.table(
        ["train -> test", "classifier", "FPR on test model's clean %"]
        + [f"DR {lab} %" for lab in cw]
        + ["paper DR κ=0 / 0.4 / 1.0"],
        rows,
    )


def _transfer(pg: Page, v: View) -> None:
    doc = v.doc
    if not doc["transfer"]:
        return
    pg.h2("Transferability: trained on CW-L2, tested on DeepFool")
    rows = []
    for r in doc["transfer"]:
        pap = paper.TRANSFER_CW_TO_DEEPFOOL.get(_model_name(r["test"])) if r["train"] == "cifar10-cnn" else None
        rows.append(
            [f"`{_short(r['train'])}` -> `{_short(r['test'])}`", r["classifier"], pct(r["fpr"])]
            + [pct(x) for x in r["dr"].values()]
            + [pct(x, 2) for x in r["auc"].values()]
            + [f"{pap}" if pap else "-"]
        )
    att = list(doc["transfer"][0]["dr"])
    pg.table(
        ["train (CW) -> test", "classifier", "FPR %"]
        + [f"DR {lab} %" for lab in att]
        + [f"AUC {lab} %" for lab in att]
        + ["paper DR % (classifier not stated)"],
        rows,
    )


def _table4(pg: Page, v: View) -> None:
    cw = v.cw
    pg.h2(f"Table {'4' if v.cifar else '5'}: impact of n (trained on CW-L2)")
    rows = []
    for r in v.doc["table4"]:
        pap: tuple[float, ...] | None
        if v.cifar:
            pap = paper.TABLE4.get(r["n"], {}).get((_model_name(r["model"]), r.get("kind", r["classifier"])))
        else:
            pap = paper.TABLE5.get(r["n"], {}).get(r.get("kind", r["classifier"]))
        rows.append(
            [f"`{r['model']}`", r["n"], r["classifier"], pct(r["fpr"])]
            + [pct(r["dr"][lab]) for lab in cw]
            + [pct(min(r["auc"][lab] for lab in cw), 2)]
            + [" / ".join(f"{x}" for x in pap) if pap else "-"]
        )
    pg.table(
        ["model", "n", "classifier", "FPR %"]
        + [f"DR {lab} %" for lab in cw]
        + ["min AUC %", "paper FPR / DR κ=0 / 0.4 / 1.0"],
        rows,
        "The first n' of the n draws of each image (independent draws).",
    )
    pg.figure("n_sweep.png", _plot_n_sweep(v.doc, cw), "FPR and mean CW detection rate vs n.")


def _figure5(pg: Page, v: View) -> None:
    pg.h2("Figure 5: Telea inpainting vs the 3x3 median-filter baseline")
    rows = []
    for r in v.doc["table1"]:
        mb = r.get("median_baseline")
        if mb is None:
            continue
        pap = paper.FIGURE5_AUC.get(r.get("kind", r["classifier"])) if v.cifar else None
        rows.append(
            [
                f"`{r['model']}`",
                r["classifier"],
                pct(r["auc_pooled"], 2),
                pct(mb["auc_pooled"], 2),
                pct(r["fpr"]),
                pct(mb["fpr"]),
                f"{pap['telea']} / {pap['median']}" if pap else "-",
            ]
        )
    pg.table(
        [
            "model",
            "classifier",
            "AUC Telea %",
            "AUC median %",
            "FPR Telea %",
            "FPR median %",
            "paper AUC Telea / median (ResNet-32 set)",
        ],
        rows,
        "Pooled test set (all attacks).",
    )
    pg.figure(
        "roc_median_baseline.png",
        _plot_roc(v.roc),
        "ROC of THEMIS with Telea inpainting vs the median-filter "
        "baseline, per model and classifier (test split, all attacks pooled).",
    )


def _table6(pg: Page, v: View) -> None:
    labels, cw = v.labels, v.cw
    pg.h2("Table 6: one-dimensional scores (mean KL divergence, Wasserstein distance over 10 draws)")
    rows = []
    for r in v.doc["table6"]:
        key = ("CW-L2" if r["attack"].startswith("CW") else "DeepFool", r["metric"])
        pap = paper.TABLE6.get(key) if r["attack"] in (cw[:1] + [lab for lab in labels if lab not in cw]) else None
        rows.append(
            [
                f"`{r['model']}`",
                r["attack"],
                r["metric"].upper(),
                pct(r["fpr_roc"]),
                pct(r["tpr_roc"]),
                pct(r["auc"], 2),
                pct(r["fpr_calibrated"]),
                pct(r["tpr_calibrated"]),
                f"{pap[0]} / {pap[1]}" if pap else "-",
            ]
        )
    pg.table(
        [
            "model",
            "attack",
            "metric",
            "FPR % (ROC cut)",
            "TPR % (ROC cut)",
            "AUC %",
            f"FPR % ({v.at})",
            f"TPR % ({v.at})",
            "paper FPR / TPR (ImageNet)",
        ],
        rows,
        "ROC cut = the point maximising TPR - FPR, chosen on all images as the paper did (illustrative); "
        f"{v.at} = threshold from training clean images, rates on the test split.",
    )
    pg.figure(
        "kl_wd_scatter.png",
        _plot_scatter(v.scatter),
        "Mean KL divergence vs mean Wasserstein distance between f(x) and f(E&R(x)) (the paper's Figure 8).",
    )


def _adaptive(pg: Page, v: View) -> None:
    ads = v.doc.get("adaptive") or []
    if isinstance(ads, dict):
        ads = [ads]
    if not ads:
        return
    pg.h2("Figure 6: adaptive CW-L2 that checks THEMIS along its path")
    for ad in ads:
        pg.text("\n".join(_adaptive_lines(ad, next(iter(v.doc["sets"])))))
    pg.figure(
        "adaptive_bypass.png",
        _plot_adaptive(ads),
        "Left: cumulative bypass rate vs number of "
        "optimisation paths T, with the paper's two reported points. Right: share of images bypassed within "
        "an L2 budget.",
    )


def _recheck_draws(params: dict[str, Any]) -> int:
    """How many fresh draws re-checked each bypass: the run's ``recheck``, else DetectorAwareCW's default."""
    import inspect

    from ...attacks.adaptive import DetectorAwareCW

    default = inspect.signature(DetectorAwareCW.__init__).parameters["recheck"].default
    return int(params.get("recheck", default))


def _adaptive_lines(ad: Doc, model: str) -> list[str]:
    """The bullet points of one adaptive run (attacking ``model``)."""
    pr, curve = ad["params"], ad["bypass_curve"]
    lines = [
        f"- **{ad.get('label', 'adaptive CW-L2')}**: `advguard.attacks.adaptive.DetectorAwareCW` on "
        f"{ad['n_images']} clean test images of `{model}` (never used to train the "
        f"detector), targeted at the next class, κ = {pr['confidence']}; {pr['steps']} Adam steps "
        f"(lr {pr['stepsize']}) per optimisation path, up to {pr['restarts']} paths per image, each "
        "from a "
        f"random start (uniform ±{255 * pr['init_noise']:.0f}/255) with c drawn log-uniformly in "
        f"[{pr['const'] / 10:g}, {pr['const'] * 10:g}]; the detector (the Table 1 SVM at its own "
        "decision) is "
        f"queried every {pr['check_every']} steps (the paper: every step) on the images that are "
        "adversarial "
        f"at that point.",
        f"- **Bypass rate: {pct(ad['bypass_rate'])} %** ({ad['n_bypass']} of {ad['n_images']}) after "
        f"{pr['restarts']} paths ({pct(curve[min(49, len(curve) - 1)])} % "
        "after "
        f"{min(50, len(curve))}); paper: 3.4 % after 50 paths and 4.2 % after 150 (500 "
        "images).",
        f"- THEMIS is random: re-checking each bypassing image with {_recheck_draws(pr)} fresh draws (the detector "
        "re-seeded: a seeded detector repeats an image's own draw), it evades "
        f"{pct(ad['mean_recheck_evasion'])} % of them on average; {pct(ad['robust_bypass_rate'])} % "
        "of the "
        "images bypass in at least half of the re-checks.",
        f"- The detector flags {ad['clean_false_alarms']} of these {ad['n_images']} clean images "
        "themselves. "
        f"Cost: {ad['seconds_per_image']:.1f} s per image on this machine "
        f"(paper: ~450 s per image for T = 150).",
    ]
    if "bypass_within_l2" in ad:
        lines.append(
            "- Distortion: the attack stops at the first bypass, so its L2 is whatever the path had "
            "reached. "
            "Bypass rate within an L2 budget: "
            + ", ".join(f"≤ {b}: {pct(x)} %" for b, x in ad["bypass_within_l2"].items())
            + (
                f" (plain {ad['reference_attack']} on this model: median L2 {ad['reference_median_l2']:.3f})."
                if ad.get("reference_median_l2")
                else "."
            )
        )
    return lines


def _cost(pg: Page, v: View) -> None:
    doc = v.doc
    pg.h2("Cost of the feature (this run)")
    rows = []
    for m, s in doc["sets"].items():
        fl = s["forward_floor"]["ms_per_image"]
        for restore, c in s.get("er_cost_now", s["er_cost"]).items():
            rows.append(
                [
                    f"`{m}`",
                    restore,
                    f"{c['ms_per_image']:.2f}",
                    f"{(1 + doc['n']) * fl:.2f}",
                    f"{c['ms_per_image'] / ((1 + doc['n']) * fl):.2f}x",
                ]
            )
    pg.table(
        ["model", "restore", "ms / image", f"floor ({1 + doc['n']} passes) ms", "ratio"],
        rows,
        "Both measured in this run, side by side on the same clean images (256 CIFAR / 16 ImageNet; the floor "
        "the best of 3 forward passes); the dedicated speed benchmark is `benchmarks/themis_speed.py` "
        "(docs/results/themis/speed.md).",
    )


# ==================================================================== plots
def _plot_learning_curve(lcr: list[Doc]) -> bytes:
    plt = pyplot()
    keys = list(dict.fromkeys((r["model"], r["family"]) for r in lcr))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, (m, fam) in zip(axes[0], keys, strict=True):
        for c in dict.fromkeys(r["classifier"] for r in lcr):
            rs = sorted(
                (r for r in lcr if (r["model"], r["family"], r["classifier"]) == (m, fam, c)), key=lambda r: r["pairs"]
            )
            if rs:
                ax.errorbar(
                    [r["pairs"] for r in rs],
                    [100 * r["auc_mean"] for r in rs],
                    fmt="-o",
                    ms=3,
                    yerr=[
                        [100 * (r["auc_mean"] - r["auc_min"]) for r in rs],
                        [100 * (r["auc_max"] - r["auc_mean"]) for r in rs],
                    ],
                    label=c,
                )
        ax.set(xscale="log", xlabel="training pairs", title=f"{_short(m)}: {fam}", ylim=(40, 101))
    axes[0][0].set_ylabel("AUC %")
    axes[0][-1].legend(fontsize=6)
    return fig_png(fig)


def _plot_n_sweep(doc: Doc, cw: list[str]) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m, c in sorted({(r["model"], r["classifier"]) for r in doc["table4"]}):
        rs = [r for r in doc["table4"] if r["model"] == m and r["classifier"] == c]
        xs = [r["n"] for r in rs]
        axes[0].plot(xs, [100 * r["fpr"] for r in rs], marker="o", label=f"{_short(m)} {c}")
        axes[1].plot(
            xs, [100 * np.mean([r["dr"][lab] for lab in cw]) for r in rs], marker="o", label=f"{_short(m)} {c}"
        )
    axes[0].set(xlabel="n (draws)", ylabel="FPR %", title="false positives")
    axes[1].set(xlabel="n (draws)", ylabel="mean CW detection rate %", title="detection")
    axes[1].legend(fontsize=7)
    return fig_png(fig)


def _plot_roc(roc: RocData) -> bytes:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    keys = sorted({(m, c) for (m, c, _) in roc})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.3), squeeze=False)
    for ax, (m, c) in zip(axes[0], keys, strict=True):
        for restore, style in (("telea", "-"), ("median", "--")):
            sc, sa = roc[(m, c, restore)]
            f, t, _ = roc_curve(np.r_[np.zeros(len(sc)), np.ones(len(sa))], np.r_[sc, sa])
            ax.plot(f, t, style, label=f"{restore} (AUC {100 * roc_auc(sc, sa):.2f})")
        ax.set(title=f"{_short(m)} {c}", xlabel="FPR", ylabel="TPR")
        ax.legend(fontsize=7, loc="lower right")
    return fig_png(fig)


def _plot_scatter(scatter: ScatterData) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(scatter), figsize=(4.2 * len(scatter), 3.6), squeeze=False)
    for ax, (m, groups) in zip(axes[0], scatter.items(), strict=True):
        for lab, d in groups.items():
            ax.scatter(
                np.maximum(d[:, 0], 1e-6),
                np.maximum(d[:, 1], 1e-6),
                s=3,
                alpha=0.4,
                label=lab,
                color="green" if lab == "clean" else None,
            )
        ax.set(xscale="log", yscale="log", xlabel="mean KL", ylabel="mean Wasserstein", title=_short(m))
        ax.legend(fontsize=7, markerscale=3)
    return fig_png(fig)


def _plot_adaptive(ads: list[Doc]) -> bytes:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for ad in ads:
        lab = f"{ad.get('label', 'ours')} ({ad['n_images']} images)"
        T = np.arange(1, len(ad["bypass_curve"]) + 1)
        (line,) = ax.plot(T, 100 * np.asarray(ad["bypass_curve"]), label=lab)
        l2 = np.sort(np.asarray(ad.get("l2_of_bypass", [])))
        ax2.step(
            np.r_[0, l2, max(2.0, l2.max() if len(l2) else 0)],
            100 * np.r_[np.arange(len(l2) + 1), len(l2)] / ad["n_images"],
            where="post",
            color=line.get_color(),
            label=lab,
        )
    ref = next((a for a in ads if a.get("reference_median_l2")), None)
    if ref:
        ax2.axvline(
            ref["reference_median_l2"], color="grey", ls="--", label=f"plain {ref['reference_attack']} median L2"
        )
    ax.scatter(
        list(paper.ADAPTIVE_BYPASS),
        list(paper.ADAPTIVE_BYPASS.values()),
        color="red",
        zorder=3,
        label="paper (500 images)",
    )
    ax.set(xlabel="optimisation paths T", ylabel="bypass rate %", xlim=(0, 152), title="bypass rate vs paths")
    ax2.set(xlabel="L2 budget", ylabel="bypass rate %", title="bypasses within an L2 budget")
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return fig_png(fig)
