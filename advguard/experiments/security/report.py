"""The security page: the bypass table (plain -> adaptive per budget), the sanity checks, the extra attacks, each
paper's claim beside our figure, and the bypass-vs-budget plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import write_page
from ..page import Page, fig_png, pct, pyplot
from ..registry import Summary


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [*doc["rows"], *([doc["guard"]] if doc.get("guard") else [])]


def bypass_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per detector: held-out FPR and, per budget, 'plain -> adaptive' bypass rates (%)."""
    names = [b["name"] for b in doc["budgets"]]
    header = ["detector", "held-out FPR %", "adaptive attack", *names]
    rows = []
    for r in _rows(doc):
        cells = []
        for n in names:
            c = r["cells"][n]
            ad = c.get("adaptive")
            cells.append(f"{pct(c['plain']['bypass'])} -> {pct(ad['bypass']) if ad else '-'}")
        rows.append([r["label"], pct(r["heldout_fpr"]), f"`{r['adaptive_attack']}`" if r["adaptive_attack"] else
                     "none", *cells])  # fmt: skip
    return header, rows


def patch_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per patch detector: held-out FPR and, per patch size, 'plain -> adaptive' bypass rates (%) (target reached
    and not flagged), with the plain patch's target rate."""
    rows = doc.get("patch_rows") or []
    sizes = list(rows[0]["cells"]) if rows else []
    extras = list(dict.fromkeys(k for r in rows for c in r["cells"].values() for k in c.get("extra", {})))
    header = ["detector", "held-out FPR %", "adaptive attack", *[f"{s}: bypass (target reached)" for s in sizes]]
    header += [f"{e} {s}: bypass (target reached)" for e in extras for s in sizes]
    out = []
    for r in rows:
        cells = []
        for s in sizes:
            c = r["cells"][s]
            cells.append(
                f"{pct(c['plain']['bypass'])} ({pct(c['plain']['misclassified'])}) -> "
                f"{pct(c['adaptive']['bypass'])} ({pct(c['adaptive']['misclassified'])})"
            )
        for e in extras:
            for s in sizes:
                x = r["cells"][s].get("extra", {}).get(e)
                cells.append(f"{pct(x['bypass'])} ({pct(x['misclassified'])}) of {x['n']}" if x else "-")
        out.append([r["label"], pct(r["heldout_fpr"]), f"`{r['adaptive_attack']}`", *cells])
    return header, out


def model_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per defended model: its accuracy on the attack images and, per budget, 'transfer -> white-box'
    misclassification (%) among the images it classifies correctly."""
    names = [b["name"] for b in doc["budgets"]]
    rows = []
    for r in doc.get("model_rows") or []:
        cells = [
            f"{pct(r['cells'][n]['plain']['bypass'])} -> {pct(r['cells'][n]['adaptive']['bypass'])}" for n in names
        ]
        rows.append([f"{r['label']} (`{r['model']}`)", f"{pct(r['clean_accuracy'])} ({r['n']})", *cells])
    return ["defended model", "clean accuracy % (images)", *names], rows


def detail_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per detector and budget: misclassification and flag rates of the plain attack, the adaptive attack's
    misclassification, median distortion of its bypasses, mean gradient steps per image and its wall time."""
    header = ["detector", "budget", "plain: misclassified / flagged %", "adaptive: bypass %", "misclassified %",
              "median L2 / L-inf of bypasses", "mean steps per image", "seconds"]  # fmt: skip
    rows = []
    for r in _rows(doc):
        for n, c in r["cells"].items():
            p, a = c["plain"], c.get("adaptive")
            if a is None:
                rows.append(
                    [r["label"], n, f"{pct(p['misclassified'])} / {pct(p['flagged'])}", "-", "-", "-", "-", "-"]
                )
                continue
            rows.append([
                r["label"], n, f"{pct(p['misclassified'])} / {pct(p['flagged'])}", pct(a["bypass"]),
                pct(a["misclassified"]), f"{a['median_l2']:.3f} / {a['median_linf']:.4f}", f"{a['mean_steps']:.1f}",
                f"{a['seconds']:.0f}",
            ])  # fmt: skip
    return header, rows


def sanity_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The sanity checks: more steps, unbounded budget, and the extra attacks run at the sanity budget only (the
    black-box check); the other extras are in :func:`extras_table`."""
    extras = [e for e, b in _extra_runs(doc).items() if _sanity_only(doc, b)]
    unb = "unbounded L-inf: bypass % (step)" if _unbounded_steps_recorded(doc) else "unbounded L-inf: bypass %"
    header = ["detector", "images", "adaptive bypass %", "x steps: bypass % (images lost)", unb,
              *[f"{e}: bypass %" for e in extras]]  # fmt: skip
    rows = []
    for r in _rows(doc):
        s = r.get("sanity")
        if s is None:
            continue
        ms, unb = s.get("more_steps"), s.get("unbounded")
        cells = []
        for e in extras:
            per = r.get("extra", {}).get(e, {}).get("budgets", {})
            cells.append(
                "; ".join(f"{pct(v['bypass'])} ({k}{'' if v['n'] == s['n'] else ', of ' + str(v['n'])})"
                          for k, v in per.items()) or "-"
            )  # fmt: skip
        rows.append([
            r["label"], s["n"], pct(s["bypass"]),
            f"{ms['factor']}x: {pct(ms['bypass'])} ({ms['lost']})" if ms else "-",
            _unbounded_cell(unb), *cells,
        ])  # fmt: skip
    return header, rows


def _budget_order(doc: dict[str, Any]) -> list[str]:
    """The table's budget names, then ``"-"`` (a budget-free attack)."""
    return [*(x["name"] for x in doc["budgets"]), "-"]


def _extra_runs(doc: dict[str, Any]) -> dict[str, list[str]]:
    """Per extra attack (label, sorted): the budgets (names, ``"-"`` for a budget-free attack) it ran at, in the
    table's order."""
    ran: dict[str, set[str]] = {}
    for r in _rows(doc):
        for label, x in r.get("extra", {}).items():
            ran.setdefault(label, set()).update(x.get("budgets", {}))
    return {label: [b for b in _budget_order(doc) if b in ran[label]] for label in sorted(ran)}


def _sanity_only(doc: dict[str, Any], budgets: list[str]) -> bool:
    """An extra attack run at the sanity budget only (the black-box check): a column of the sanity table."""
    return budgets == [doc["sanity_budget"]]


def extras_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The extra attacks not confined to the sanity budget: per detector and attack, the bypass rate (%) per
    budget (``budget-free``: the attack chooses its distortion), with the images attacked."""
    ran = _extra_runs(doc)
    labels = [e for e, b in ran.items() if not _sanity_only(doc, b)]
    cols = [b for b in _budget_order(doc) if any(b in ran[e] for e in labels)]
    header = ["detector", "attack", "images", *[("budget-free" if b == "-" else b) for b in cols]]
    rows = []
    for r in _rows(doc):
        for e in labels:
            x = r.get("extra", {}).get(e)
            if not x:
                continue
            per = x["budgets"]
            n = sorted({v["n"] for v in per.values()})
            rows.append([r["label"], f"{e} (`{x['attack']}`)", " / ".join(map(str, n)),
                         *[pct(per[b]["bypass"]) if b in per else "-" for b in cols]])  # fmt: skip
    return header, rows


def _unbounded_steps_recorded(doc: dict[str, Any]) -> bool:
    """Whether ``doc``'s unbounded checks record their step: results written before they did started at random in
    the eps = 1 ball, in steps of rel_stepsize x 1."""
    checks = [r["sanity"]["unbounded"] for r in _rows(doc) if (r.get("sanity") or {}).get("unbounded")]
    return bool(checks) and all("step" in c for c in checks)


def _unbounded_protocol(doc: dict[str, Any]) -> str:
    """How the unbounded checks of ``doc`` ran (see :func:`_unbounded_steps_recorded`)."""
    if _unbounded_steps_recorded(doc):
        return "from the clean image, in steps of 1 / steps unless the config sets unbounded_step"
    rel = doc.get("config", {}).get("security", {}).get("rel_stepsize", 0.1)
    return f"from a uniform random start in that ball, in steps of {rel:g} (rel_stepsize x 1)"


def _unbounded_cell(unb: dict[str, Any] | None) -> str:
    """The unbounded check's bypass rate, and its step (older results have none: a step of rel_stepsize x 1)."""
    if not unb:
        return "-"
    return f"{pct(unb['bypass'])} (step {unb['step']:.4f})" if "step" in unb else pct(unb["bypass"])


def paper_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Each paper's adaptive-attack claim beside our adaptive bypass rate at the sanity budget (patch rows: every
    patch size); rows sharing one claim (e.g. BlurNet's models) are listed once."""
    sb = doc["sanity_budget"]
    entries: list[tuple[str, str, str]] = []
    for r in _rows(doc):
        a = r["cells"].get(sb, {}).get("adaptive")
        entries.append((r["label"], r.get("paper") or "-", f"{pct(a['bypass'])} ({sb})" if a else "-"))
    for r in [*(doc.get("patch_rows") or []), *(doc.get("model_rows") or [])]:
        figs = [f"{pct(c['adaptive']['bypass'])} ({s})" for s, c in r["cells"].items() if s in (sb, *_patch(r))]
        figs += [  # the patch rows' per-image extras (TaintRadar's BPDA), which the claim may name
            f"{e}: {pct(x['bypass'])} ({s})" for s in _patch(r) for e, x in r["cells"][s].get("extra", {}).items()
        ]
        entries.append((r["label"], r.get("paper") or "-", "; ".join(figs)))
    groups: list[list[tuple[str, str, str]]] = []
    for e in entries:
        if groups and e[1] != "-" and groups[-1][-1][1] == e[1]:
            groups[-1].append(e)
        else:
            groups.append([e])
    rows = [
        [g[0][0], g[0][1], g[0][2]]
        if len(g) == 1
        else ["; ".join(e[0] for e in g), g[0][1], "; ".join(f"{e[0]}: {e[2]}" for e in g)]
        for g in groups
    ]
    return ["detector", "the paper's claim", "ours: adaptive bypass %"], rows


def _has_lp_rows(doc: dict[str, Any]) -> bool:
    """Rows attacked at L-p budgets (detectors, the Guard, defended models); a patch-only table has none."""
    return bool(_rows(doc) or doc.get("model_rows"))


def _patch(r: dict[str, Any]) -> list[str]:
    return [k for k in r["cells"] if k.startswith("patch ")]


def summary_table(doc: dict[str, Any]) -> Summary:
    """The closing lines of a run: per detector, 'plain -> adaptive' at every budget (a patch-only table: per patch
    size)."""
    return bypass_table(doc) if _has_lp_rows(doc) else patch_table(doc)


def plot_bypass(doc: dict[str, Any]) -> bytes:
    """Bypass rate vs budget, one colour per detector: adaptive solid, plain dashed."""
    plt = pyplot()
    names = [b["name"] for b in doc["budgets"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for i, r in enumerate([*_rows(doc), *(doc.get("model_rows") or [])]):
        col = f"C{i % 10}"
        plain = [100 * r["cells"][n]["plain"]["bypass"] for n in names]
        ax.plot(names, plain, "--", color=col, lw=1, alpha=0.7)
        ad = [100 * r["cells"][n]["adaptive"]["bypass"] if "adaptive" in r["cells"][n] else float("nan") for n in names]
        ax.plot(names, ad, "o-", color=col, label=r["label"], lw=1.6 if r["label"] != "Guard" else 2.6)
    ax.set(ylabel="bypass rate % (misclassified and not flagged)", xlabel="budget", ylim=(-2, 102))
    ax.set_title("adaptive attack (solid) vs plain PGD (dashed)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig_png(fig)


def build_page(doc: dict[str, Any]) -> Page:
    p, d, cfg, fo = doc["provenance"], doc["data"], doc["config"], doc["folds"]
    page = Page(cfg.get("title") or cfg["name"])
    page.text(
        "\n".join(
            [
                f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn, "
                f"{d['n_correct']} correctly classified by `{cfg['model']}`.",
                f"- Folds by clean-image id: {fo['fit']} fit the detectors (supervised ones also on the plain "
                f"adversarial sets of these images: {', '.join(doc['advsets'])}), {fo['calibrate']} calibrate every "
                f"threshold at {100 * cfg['fpr']:.0f} % clean FPR, {fo['attack']} are the attack fold: the first "
                f"{doc['n_attack']} are attacked in every cell, all of them give the held-out FPR.",
                "- Bypass = misclassified *and* not flagged at the calibrated threshold, checked on the returned "
                "images. Plain: PGD at the budget, not knowing the detector. Adaptive: the detector's own white-box "
                "attack (PGD on margin + detector term; BPDA / EOT where the detector is not differentiable).",
                f"- Machine: {p['machine']}. Commit `{p['commit']}`, {p['date']}. Wall time {doc['wall_s'] / 60:.1f} "
                "min (cached parts are read, not recomputed); the attacks' own compute, cached cells included, "
                f"{doc.get('attack_s', float('nan')) / 60:.1f} min.",
                f"- Command: `{p['command']}`",
            ]
        )
    )
    if _has_lp_rows(doc):  # a patch-only table has neither this table nor the plot
        page.h2("Bypass rate %: plain PGD -> adaptive attack")
        h, r = bypass_table(doc)
        page.table(h, r, caption="Share of the attacked images misclassified and not flagged (%)")
        page.figure("bypass-vs-budget.png", plot_bypass(doc), "Bypass rate vs budget per detector")
    if doc.get("model_rows"):
        page.h2("Defended models (no detector): misclassified %, transfer -> white-box")
        h, r = model_table(doc)
        page.table(
            h,
            r,
            caption=f"Transfer: PGD crafted on `{cfg['model']}` (the undefended model), BlurNet's black-box setting; "
            "white-box: the same PGD through the defended model (its blur is a differentiable convolution). Among the "
            "attack images the defended model classifies correctly.",
        )
    if doc.get("patch_rows"):
        page.h2("Patch detectors: bypass rate %, universal patch -> adaptive patch")
        h, r = patch_table(doc)
        page.table(
            h,
            r,
            caption=f"{doc['n_patch_images']} attack-fold images not of the target class, one patch per batch of "
            f"{cfg.get('security', {}).get('patch_batch', 16)} (TaintRadar Table II's universal patches), targeted; "
            "bypass = target reached and not flagged; in parentheses: target reached.",
        )
    h, r = sanity_table(doc)
    if r:
        page.h2(f"Sanity checks at {doc['sanity_budget']}")
        page.table(
            h,
            r,
            caption="More steps must not lose bypasses (images lost in parentheses must be 0); an unbounded budget "
            f"(L-inf eps = 1, {_unbounded_protocol(doc)}) should reach 100 %; a black-box attack far above the "
            "white-box one would point to masked gradients.",
        )
    h, r = extras_table(doc)
    if r:
        page.h2("Further attacks: bypass %")
        page.table(
            h,
            r,
            caption="Other attacks on the same detectors (the config's `[[security.extra]]`): bypass = misclassified "
            "and not flagged, on the first images of the attack fold; each row's own adaptive attack is in the first "
            "table.",
        )
    page.h2("The papers' claims")
    h, r = paper_table(doc)
    page.table(h, r)
    h, r = detail_table(doc)
    if r:
        page.h2("Details")
        page.table(h, r)
    page.configuration(doc)
    return page


def write_artefacts(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md, report.html and the figure, each written atomically."""
    return write_page(doc, out, build_page(doc))
