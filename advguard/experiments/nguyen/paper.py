"""Published figures of Nguyen et al. (ICASSP 2020 / arXiv 2019), transcribed for side-by-side tables.

Their setting: ILSVRC 2012 validation images, VGG-16/19 and ResNet-18/50, Foolbox 1.8, top-5
criterion, 1,000 normal images per network, eval set 600 normal + 3,124 adversarial images.
"""

#: Table 1 (successful adversarial images of 1,000 per network), ResNet-18 column and VGG-16 column.
TABLE1 = {
    "L-BFGS": (618, 348),
    "BIM": (693, 531),
    "PGD": (651, 484),
    "L1-iter": (661, 680),
    "L2-iter": (820, 722),
    "Gradient": (654, 590),
    "FGSM": (509, 451),
    "Deep Fool": (707, 658),
    "Newton": (571, 558),
    "ADef": (1, 1),
    "Saliency Map": (102, 114),
    "Carlini-Wagner": (427, 401),
}
TABLE1_COLUMNS = ("VGG-16", "ResNet-18")

#: Table 3 (ResNet-18): misclassified top-5 counts, columns below.
TABLE3_COLUMNS = (
    "Original",
    "jpeg:100",
    "jpeg:80",
    "jpeg:60",
    "jpeg:40",
    "jpeg:20",
    "scale:0.75",
    "scale:0.85",
    "scale:0.95",
    "scale:1.05",
    "scale:1.15",
    "scale:1.25",
    "blur:3",
    "rotate:2",
    "rotate:5",
)
TABLE3 = {
    "Normal images": (0, 6, 29, 50, 59, 108, 93, 44, 34, 26, 52, 35, 329, 54, 75),
    "L-BFGS": (348, 341, 41, 50, 58, 67, 88, 58, 44, 59, 68, 42, 63, 61, 92),
    "BIM": (531, 529, 52, 54, 69, 88, 103, 66, 55, 65, 84, 47, 87, 72, 101),
    "PGD": (484, 479, 45, 50, 61, 82, 102, 60, 53, 61, 77, 42, 77, 65, 95),
    "L1-iter": (680, 676, 60, 62, 61, 81, 100, 71, 65, 80, 92, 60, 93, 91, 115),
    "L2-iter": (722, 720, 66, 59, 72, 88, 107, 72, 69, 88, 99, 60, 100, 99, 123),
    "Gradient": (590, 584, 107, 76, 66, 95, 93, 70, 75, 115, 122, 86, 108, 105, 155),
    "FGSM": (451, 449, 109, 87, 76, 101, 99, 67, 79, 125, 124, 93, 95, 110, 158),
    "Deep Fool": (658, 645, 83, 55, 51, 72, 60, 51, 59, 74, 72, 46, 59, 80, 50),
    "Newton": (558, 552, 118, 61, 60, 74, 62, 61, 64, 90, 82, 48, 82, 105, 68),
    "Carlini-Wagner": (401, 391, 59, 50, 48, 75, 68, 43, 42, 59, 59, 45, 38, 67, 49),
}

#: Table 4: accuracy (%) on the eval set, {classifier: {family: (count, diff)}}.
TABLE4 = {
    "svc": {
        "jpeg": (90.98, 91.92),
        "scale": (92.56, 92.32),
        "blur": (87.35, 87.35),
        "rotate": (89.90, 89.39),
        "jpeg+scale": (92.86, 94.04),
        "all": (93.39, 94.20),
    },
    "rf": {
        "jpeg": (90.57, 89.82),
        "scale": (91.08, 91.27),
        "blur": (86.87, 86.04),
        "rotate": (88.24, 88.59),
        "jpeg+scale": (92.16, 91.94),
        "all": (92.35, 92.35),
    },
    "lda": {
        "jpeg": (89.98, 90.36),
        "scale": (91.97, 91.62),
        "blur": (85.77, 87.35),
        "rotate": (89.15, 89.29),
        "jpeg+scale": (92.86, 92.67),
        "all": (92.21, 92.86),
    },
    "mlp": {
        "jpeg": (91.25, 90.41),
        "scale": (92.32, 92.35),
        "blur": (86.95, 87.38),
        "rotate": (89.66, 89.02),
        "jpeg+scale": (93.56, 92.19),
        "all": (93.37, 92.29),
    },
}

#: Table 5: corrected top-5 (%), {operations: (normal images, adversarial images)}.
TABLE5 = {"jpeg": (96.30, 88.63), "scale": (97.82, 85.69), "jpeg+scale": (98.12, 89.91)}

#: Table 6: (accuracy %, EER %) on the eval set.
TABLE6 = {
    "MLP - counting feature": (93.56, 10.50),
    "SVM - differences feature": (94.20, 9.67),
    "ResNet-50 (training)": (83.89, 48.00),
    "ResNet-50 (fine-tuning)": (93.29, 9.00),
    "XceptionNet (training)": (83.89, 49.33),
    "XceptionNet (fine-tuning)": (92.59, 15.23),
    "ResNet-50 (training - no softmax)": (83.89, 49.09),
    "ResNet-50 (fine-tuning - no softmax)": (99.49, 0.66),
    "XceptionNet (training - no softmax)": (99.95, 0.15),
    "XceptionNet (fine-tuning - no softmax)": (99.60, 0.49),
}
