"""What each paper claims about an attacker who knows the detector (beside our adaptive figures on the page)."""

from __future__ import annotations

#: per detector name: the paper, its adaptive-attack claim (or that it reports none), where
PAPER_CLAIMS: dict[str, str] = {
    "feature-squeezing": (
        "Xu et al. (NDSS 2018), Section 5.3: an adaptive CW attack on the joint system (He et al. 2017) succeeds; "
        "the paper answers with randomised squeezers (not evaluated here)."
    ),
    "confidence": "A baseline (the classifier's own confidence): no robustness claimed.",
    "image-ops": (
        "Nguyen et al.: no adaptive attack evaluated; the paper discusses white- and black-box attackers only in "
        "its introduction."
    ),
    "cnn": "Nguyen et al.: no adaptive attack evaluated.",
    "loo": "ML-LOO / Segmentation Fault: no adaptive attack evaluated.",
    "erase-restore": (
        "THEMIS (Zuo & Zeng), Section 6, Figure 6: a detector-aware CW-L2 attack that queries the detector at every "
        "step succeeds on 3.4 % of CIFAR-10 images after 50 paths ('strong resilience to adaptive L2 attacks')."
    ),
    "erase-restore-distance": "THEMIS's distance variant: as erase-restore (Section 6, Figure 6).",
    "taintradar": (
        "TaintRadar (Li et al.), Section VII-B: region-misleading patches stay below 10 % success, BPDA through the "
        "binarisation about 25 %."
    ),
    "sentinet": "SentiNet (Chou et al. 2018): no adaptive attack evaluated by the TaintRadar authors' baseline.",
    "blurnet": (
        "BlurNet (Raju & Lipasti): white-box RP2 on the regularised LISA-CNN falls from 90 % to 17.5 % success "
        "(abstract, Table 2); blurs cut the transfer (black-box) success (Table 1). RP2 is on docs/results/blurnet/; "
        "here L-inf / L2 PGD through the defended model."
    ),
    "guard": (
        "THEMIS Table 7's hybrid is not attacked adaptively in the paper; Carlini & Wagner 2017 (Section 5) show "
        "that combining detectors is no defence on its own."
    ),
}
