"""Datasets: one registry, NCHW images in [0, 1], deterministic subsets, offline mirror support."""

from .dataset import ImageDataset, subset_indices
from .fetch import unpack_mirror
from .imageio import read_image
from .paths import data_dir, mirror_dir, set_data_dir, unpacked
from .registry import DATASETS, load_dataset

__all__ = [
    "DATASETS",
    "ImageDataset",
    "data_dir",
    "load_dataset",
    "mirror_dir",
    "read_image",
    "set_data_dir",
    "subset_indices",
    "unpack_mirror",
    "unpacked",
]
