"""BlurNet paper's Tables 1 and 2 (LISA top-18 classes, Cleverhans 3 conv + 1 FC CNN, 40 stop signs),
transcribed from the paper (docs/methods/blurnet.md). Shares in percent; L2 distortion is eq. 1's dissimilarity."""

from __future__ import annotations

#: Table 1 (black box: RP2 stickers made on the undefended model, lambda 0.002, 300 epochs):
#: (accuracy on the clean stop signs, attack success rate)
TABLE1 = {
    "baseline": (100.0, 90.0),
    "input-blur3": (100.0, 87.5),
    "input-blur5": (100.0, 67.5),
    "feature-blur3": (100.0, 65.0),
    "feature-blur5": (87.5, 17.5),
}

#: Table 2 (white box, RP2 against each defended model, success averaged over the 17 other classes):
#: (alpha, legitimate accuracy, average success rate, worst success rate, L2 distortion)
TABLE2 = {
    "baseline": (0.0, 91.0, 49.18, 90.0, 0.207),
    "dw3": (1e-5, 86.3, 30.0, 55.0, 0.201),
    "dw5": (0.1, 86.3, 24.11, 47.5, 0.189),
    "dw7": (0.1, 87.0, 11.61, 30.0, 0.203),
    "tv1e-4": (1e-4, 85.6, 7.92, 17.5, 0.224),
    "tv1e-5": (1e-5, 82.3, 8.47, 30.0, 0.199),
}
