"""Published figures of Erase-and-Restore / THEMIS (Zuo & Zeng), transcribed for side-by-side tables.

Their setting: CIFAR-10 with Carlini's CIFAR net ("Carlini") and ResNet-32, ImageNet with ResNet-50;
30,000 images per dataset, CW-L2 targeted (kappa 0, 0.4, 1.0) and DeepFool, n = 11 draws, 10 % erased.
Columns of the detection tables: kappa = 0.0, 0.4, 1.0, DeepFool (None = not reported).
"""

#: Table 1: (dataset, target model, classifier) -> (FPR, DR kappa 0.0, DR 0.4, DR 1.0, DR DeepFool), in %.
TABLE1 = {
    ("CIFAR-10", "Carlini", "svc"): (0.6, 100.0, 100.0, 100.0, 99.4),
    ("CIFAR-10", "Carlini", "adaboost"): (0.0, 100.0, 100.0, 100.0, 98.3),
    ("CIFAR-10", "ResNet32", "svc"): (2.8, 99.4, 99.6, 99.6, 99.8),
    ("CIFAR-10", "ResNet32", "adaboost"): (0.9, 99.4, 99.2, 99.4, 99.8),
    ("ImageNet", "ResNet50", "svc"): (3.5, 97.9, 98.4, 98.7, 93.7),
    ("ImageNet", "ResNet50", "adaboost"): (2.7, 98.9, 99.2, 99.3, 95.0),
}

#: Table 2: detector -> {dataset: (FPR, DR CW-L2 kappa 0, DR DeepFool)}, in % (NIC, FS, LID as quoted there).
TABLE2 = {
    "THEMIS": {"CIFAR-10": (0.6, 100.0, 99.4), "ImageNet": (2.7, 98.9, 95.0)},
    "NIC": {"CIFAR-10": (4.2, 96.0, 91.0), "ImageNet": (14.6, 96.0, 92.0)},
    "Feature Squeezing": {"CIFAR-10": (5.6, 100.0, 77.0), "ImageNet": (8.3, 92.0, 79.0)},
    "LID": {"CIFAR-10": (4.9, 86.0, 84.0), "ImageNet": (14.5, 78.0, 83.0)},
}

#: Table 3: (train -> test, classifier) -> DR kappa 0.0, 0.4, 1.0 (%).
TABLE3 = {
    ("Carlini->ResNet32", "svc"): (100.0, 100.0, 100.0),
    ("Carlini->ResNet32", "adaboost"): (97.9, 97.9, 98.2),
    ("ResNet32->Carlini", "svc"): (99.9, 99.9, 99.8),
    ("ResNet32->Carlini", "adaboost"): (99.7, 99.8, 99.6),
}

#: Section 5.2 transferability: trained on Carlini CW-L2, tested on DeepFool of (ResNet32, Carlini), %.
TRANSFER_CW_TO_DEEPFOOL = {"ResNet32": 97.1, "Carlini": 96.2}

#: Table 4 (CIFAR-10, trained on CW-L2): n -> (model, classifier) -> (FPR, DR kappa 0.0, 0.4, 1.0), %.
TABLE4 = {
    3: {
        ("Carlini", "svc"): (0.4, 100.0, 100.0, 100.0),
        ("Carlini", "adaboost"): (0.0, 100.0, 100.0, 99.9),
        ("ResNet32", "svc"): (3.6, 99.6, 99.6, 99.6),
        ("ResNet32", "adaboost"): (0.9, 99.2, 99.1, 98.5),
    },
    5: {
        ("Carlini", "svc"): (0.4, 100.0, 100.0, 100.0),
        ("Carlini", "adaboost"): (0.0, 100.0, 99.9, 99.9),
        ("ResNet32", "svc"): (3.3, 99.6, 99.6, 99.6),
        ("ResNet32", "adaboost"): (0.7, 99.2, 99.1, 99.0),
    },
    7: {
        ("Carlini", "svc"): (0.4, 100.0, 100.0, 100.0),
        ("Carlini", "adaboost"): (0.0, 100.0, 100.0, 99.8),
        ("ResNet32", "svc"): (2.9, 99.6, 99.7, 99.7),
        ("ResNet32", "adaboost"): (0.9, 99.3, 99.1, 98.9),
    },
    9: {
        ("Carlini", "svc"): (0.4, 100.0, 100.0, 100.0),
        ("Carlini", "adaboost"): (0.0, 100.0, 100.0, 99.8),
        ("ResNet32", "svc"): (3.0, 99.7, 99.7, 99.7),
        ("ResNet32", "adaboost"): (0.7, 99.3, 99.3, 99.1),
    },
    11: {
        ("Carlini", "svc"): (0.4, 100.0, 100.0, 100.0),
        ("Carlini", "adaboost"): (0.0, 99.8, 99.9, 99.7),
        ("ResNet32", "svc"): (2.8, 99.6, 99.7, 99.7),
        ("ResNet32", "adaboost"): (0.8, 99.0, 99.2, 98.9),
    },
}

#: Table 5 (ImageNet, ResNet-50): n -> classifier -> (FPR, DR kappa 0.0, 0.4, 1.0), %.
TABLE5 = {
    3: {"svc": (9.8, 95.4, 95.1, 95.5), "adaboost": (6.6, 93.1, 91.4, 93.8)},
    5: {"svc": (4.7, 95.5, 95.8, 97.3), "adaboost": (2.8, 96.5, 97.6, 97.2)},
    7: {"svc": (3.6, 97.6, 98.1, 98.2), "adaboost": (2.1, 97.9, 98.6, 98.6)},
    9: {"svc": (3.5, 97.6, 98.0, 98.3), "adaboost": (2.0, 98.0, 98.4, 98.8)},
    11: {"svc": (3.2, 97.6, 98.1, 98.5), "adaboost": (1.4, 98.4, 98.5, 98.9)},
}

#: Figure 5 (CIFAR-10, ResNet-32 set): AUC (%) of Telea inpainting vs the 3x3 median-filter baseline.
FIGURE5_AUC = {"svc": {"telea": 99.54, "median": 91.64}, "adaboost": {"telea": 99.89, "median": 93.72}}

#: Table 6 (ImageNet test set, 1,000 pairs, 10 draws, threshold picked on the ROC): (attack, metric) -> (FPR, TPR) %.
TABLE6 = {
    ("CW-L2", "wd"): (0.5, 78.4),
    ("CW-L2", "kl"): (0.0, 96.1),
    ("DeepFool", "wd"): (1.1, 85.7),
    ("DeepFool", "kl"): (0.5, 89.3),
}

#: Figure 6 / Section 6: adaptive CW-L2 (kappa 0) on 500 CIFAR-10 images, SVM detector: bypass rate (%) after T paths.
ADAPTIVE_BYPASS = {50: 3.4, 150: 4.2}

#: Section 5.4 (ImageNet, ResNet-50, GPU): extra seconds per image (inpainting, PCA, decision).
COST_S = {"inpainting": 0.264, "pca": 0.744, "decision": 0.002, "total_extra": 1.01}
