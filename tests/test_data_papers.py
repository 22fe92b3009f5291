"""Issue #21's datasets on real data: the lossless CIFAR-10 test set, 1,300 ImageNet validation images, RP2's
victim sets and sticker mask, and the unpacked folders the model zoo loads weights from."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from PIL import Image

from advguard import DatasetNotFoundError, load_dataset
from advguard.data import cifar10 as cifar_mod
from advguard.data import imagenet_val, rp2, unpacked
from advguard.data.fetch import MIRROR_ARCHIVES, MirrorArchive, file_digest, unpack_mirror, verify_copy
from advguard.data.imageio import read_image
from advguard.data.paths import data_dir, mirror_dir
from advguard.errors import ParameterError

# --------------------------------------------------------------------------------------------------------------
# CIFAR-10: the lossless official test set


def test_lossless_cifar10_test_set_is_the_default_and_holds_foolbox_images_exactly(foolbox_images):
    ds = load_dataset("cifar10", "test", dtype="uint8")
    assert ds.source == "cifar10-lossless"
    assert ds.x.shape == (10000, 3, 32, 32) and ds.x.dtype == np.uint8
    assert np.bincount(ds.y).tolist() == [1000] * 10
    assert ds.classes == cifar_mod.CLASSES
    # Foolbox's 20 images are official test images 0..19: each is in the set, pixel for pixel, with its label.
    flat = ds.x.reshape(len(ds), -1)
    for img, label in foolbox_images["cifar10"]:
        hits = np.nonzero((flat == img.transpose(2, 0, 1).reshape(-1)).all(1))[0]
        assert len(hits) == 1 and ds.y[hits[0]] == label
    # The order is by class, then by the source file name (the official batch order is lost).
    names = cifar_mod.lossless_filenames(data_dir())
    assert len(names) == 10000 and np.all(np.diff(ds.y) >= 0)
    for c in range(10):
        part = names[1000 * c : 1000 * (c + 1)]
        assert part == sorted(part)


def test_lossless_subsets_are_deterministic_and_stratified():
    a = load_dataset("cifar10", "test", limit=200, seed=1, source="lossless", dtype="uint8")
    b = load_dataset("cifar10", "test", limit=200, seed=1, dtype="uint8")
    assert a.source == b.source == "cifar10-lossless"
    assert np.bincount(a.y).tolist() == [20] * 10
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.x, b.x)


def test_lossless_train_split_and_unknown_source_are_clear_errors():
    with pytest.raises(ParameterError, match="test set only.*source='jpeg'"):
        load_dataset("cifar10", "train", source="lossless")
    with pytest.raises(ParameterError, match="unknown CIFAR-10 source 'png'.*lossless"):
        load_dataset("cifar10", "test", source="png")


def _fake_lossless(mirror, imgs, labels):
    mirror.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    np.savez(
        mirror / "cifar10-test.npz",
        x=np.resize(imgs, (10000, 32, 32, 3)),
        y=np.resize(labels, 10000),
        filenames=np.array([f"{i:05d}.png" for i in range(10000)]),
        classes=np.array(cifar_mod.CLASSES),
    )
    assert n
    return {"cifar10-test.npz": MirrorArchive(None, file_digest(mirror / "cifar10-test.npz"))}


def test_auto_source_prefers_pickles_then_lossless_then_jpeg(tmp_path, foolbox_images):
    imgs = np.stack([a for a, _ in foolbox_images["cifar10"]])
    labels = np.array([lab for _, lab in foolbox_images["cifar10"]], np.int64)
    root = tmp_path / "data"
    # Nothing set up, no internet: auto falls back to the pickles and says they are missing.
    with pytest.raises(DatasetNotFoundError, match="pickles not found"):
        cifar_mod.load(root, "test", url=None)
    # The lossless file set up by `advguard setup` (copied, checksum verified): auto takes it for the test split.
    table = _fake_lossless(tmp_path / "mirror", imgs, labels)
    assert unpack_mirror(tmp_path / "mirror", root, archives=table) == ["cifar10-test.npz"]
    out = cifar_mod.load(root, "test", url=None)
    assert out["source"] == "cifar10-lossless" and out["x"].shape == (10000, 3, 32, 32)
    assert np.array_equal(out["x"][:20], imgs.transpose(0, 3, 1, 2)) and out["y"][:20].tolist() == labels.tolist()
    # ... but not for the train split, which has no lossless copy (no JPEG copy here either -> pickles).
    with pytest.raises(DatasetNotFoundError, match="pickles not found"):
        cifar_mod.load(root, "train", url=None)
    # Official pickles present (with internet they are downloaded): they win for both splits.
    d = root / cifar_mod.PICKLE_DIR
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": imgs.transpose(0, 3, 1, 2).reshape(20, -1), b"labels": labels.tolist()}, f)
    assert cifar_mod.load(root, "test", url=None)["source"] == "cifar10-pickle"
    assert cifar_mod.load(root, "train", url=None)["source"] == "cifar10-pickle"
    # An explicit source still picks the lossless file.
    assert cifar_mod.load(root, "test", source="lossless", url=None)["source"] == "cifar10-lossless"


def test_lossless_file_not_set_up_or_damaged_names_advguard_setup(tmp_path, foolbox_images):
    imgs = np.stack([a for a, _ in foolbox_images["cifar10"]])
    labels = np.array([lab for _, lab in foolbox_images["cifar10"]], np.int64)
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        cifar_mod.load(root, "test", source="lossless")
    table = _fake_lossless(tmp_path / "mirror", imgs, labels)
    # Copied by hand (no marker): not trusted.
    root.mkdir()
    (root / "cifar10-test.npz").write_bytes((tmp_path / "mirror" / "cifar10-test.npz").read_bytes())
    with pytest.raises(DatasetNotFoundError, match="no valid completion marker.*advguard setup"):
        cifar_mod.load(root, "test", source="lossless")
    unpack_mirror(tmp_path / "mirror", root, archives=table)
    raw = (root / "cifar10-test.npz").read_bytes()
    (root / "cifar10-test.npz").write_bytes(raw[: len(raw) // 2])  # truncated after set-up
    with pytest.raises(DatasetNotFoundError, match="damaged.*advguard setup"):
        cifar_mod.load(root, "test")
    (root / "cifar10-test.npz").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(DatasetNotFoundError, match="another digest"):
        verify_copy(root / "cifar10-test.npz", full=True)
    unpack_mirror(tmp_path / "mirror", root, archives=table)  # set-up repairs it
    assert cifar_mod.load(root, "test")["source"] == "cifar10-lossless"


# --------------------------------------------------------------------------------------------------------------
# ImageNet validation images


def test_imagenet_val_1300_labelled_images_centre_crop_224():
    ds = load_dataset("imagenet-val", dtype="uint8")
    assert ds.source == "imagenet-val1300"
    assert ds.x.shape == (1300, 3, 224, 224) and ds.x.dtype == np.uint8
    assert ds.y.min() >= 0 and ds.y.max() <= 999 and len(ds.classes) == 1000
    assert ds.classes[0] == "tench" and ds.classes[999] == "toilet tissue"
    files = ds.meta["files"]
    assert files[0] == "ILSVRC2012_val_00000347.JPEG" and ds.y[0] == 472 and ds.classes[472] == "canoe"
    assert len(set(files)) == 1300
    # The crop: the 227x227 image's centre 224x224 (1 pixel off the top and left), no resize.
    folder = unpacked(imagenet_val.FOLDER)
    raw = read_image(folder / "images" / files[5])
    assert raw.shape == (227, 227, 3)
    assert np.array_equal(ds.x[5], raw[1:225, 1:225].transpose(2, 0, 1))
    sub = load_dataset("imagenet-val", limit=20, seed=3, dtype="uint8")
    assert np.array_equal(sub.x, ds.x[sub.indices]) and np.array_equal(sub.y, ds.y[sub.indices])


# --------------------------------------------------------------------------------------------------------------
# RP2: victim sets, sticker mask, the unpacked folder


def test_rp2_victim_sets():
    lisa = load_dataset("rp2-lisa-victims", dtype="uint8")
    assert lisa.x.shape == (40, 3, 32, 32) and lisa.source == "rp2-lisa-victim-32"
    assert lisa.y.tolist() == [14] * 40 and len(lisa.classes) == 18 and lisa.classes[14] == "stop"
    assert lisa.classes[12] == "speedLimit45"  # RP2's usual target
    g = load_dataset("rp2-gtsrb-victims", dtype="uint8")
    assert g.x.shape == (40, 3, 256, 256) and g.source == "rp2-gtsrb-victim-256"
    assert g.y.tolist() == [14] * 40 and len(g.classes) == 43 and g.classes[14] == "stop"
    assert lisa.meta["files"] == g.meta["files"] == [f"{i}.png" for i in range(1, 42) if i != 14]
    assert lisa.x.std() > 20 and g.x.std() > 20  # real photos, not blank
    small = load_dataset("rp2-gtsrb-victims", size=32)
    assert small.x.shape == (40, 3, 32, 32) and small.x.dtype == np.float32
    with pytest.raises(ParameterError, match="size"):
        load_dataset("rp2-lisa-victims", size=(0, 3))


def test_rp2_rectangles_mask():
    m = rp2.rectangles_mask()
    assert m.shape == (32, 32) and m.dtype == bool and int(m.sum()) == 30  # 2.9 % of the image
    # the stray pixels at 1 or 2 are below the threshold
    raw = np.asarray(Image.open(rp2.rp2_dir() / rp2.MASK_RECT))
    assert ((raw > 0).any(-1) & ~m).sum() > 0
    big = rp2.rectangles_mask((64, 64))
    assert big.shape == (64, 64) and int(big.sum()) == 120
    assert np.array_equal(big[::2, ::2], m)  # nearest neighbour: each pixel becomes a 2x2 block
    assert rp2.rectangles_mask(256).shape == (256, 256)


def test_rp2_dir_holds_weights_classes_and_licence(tmp_path):
    d = rp2.rp2_dir()
    for name in ("LICENSE", "lisa-cnn.npz", "lisa-classes.txt", "mask_rect.png"):
        assert (d / name).is_file(), name
    assert "MIT" in (d / "LICENSE").read_text() or "Permission is hereby granted" in (d / "LICENSE").read_text()
    with np.load(d / "lisa-cnn.npz") as f:
        assert f["c1.weight"].shape == (64, 3, 8, 8) and f["fc.weight"].shape == (18, 512)
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        rp2.rp2_dir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        load_dataset("rp2-lisa-victims", data_dir=tmp_path)


def test_unpacked_cifar10_resnets_folder(tmp_path):
    d = unpacked("cifar10-resnets")
    assert sorted(p.name for p in d.glob("resnet*.th")) == [
        "resnet20-12fca82f.th",
        "resnet32-d509ac18.th",
        "resnet44-014dd654.th",
        "resnet56-4bfd9763.th",
    ]
    assert "Redistribution" in (d / "LICENSE").read_text()
    assert unpacked("cifar10-test.npz", full=True).is_file()
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        unpacked("cifar10-resnets", tmp_path)


def test_new_mirror_archives_unpack_verified_and_skip_when_complete(tmp_path):
    """The real small archives through the real table, into a fresh data dir, then again (skipped)."""
    src = mirror_dir()
    names = ["rp2-lisa.tar.gz", "cifar10-resnets.tar.gz", "cifar10-test.npz"]
    if src is None or not all((src / n).exists() for n in names):
        pytest.skip("no offline mirror on this machine")
    table = {n: MIRROR_ARCHIVES[n] for n in names}
    lines: list[str] = []
    assert unpack_mirror(src, tmp_path, archives=table, log=lines.append) == names
    assert unpack_mirror(src, tmp_path, archives=table, log=lines.append) == names
    assert all("already complete" in line for line in lines[3:]), lines
    assert rp2.rp2_dir(tmp_path, full=True) == tmp_path / "rp2-lisa"
    assert (tmp_path / "rp2-lisa" / "LICENSE").is_file() and (tmp_path / "cifar10-resnets" / "LICENSE").is_file()
    assert load_dataset("rp2-lisa-victims", data_dir=tmp_path).x.shape == (40, 3, 32, 32)
    assert load_dataset("cifar10", "test", data_dir=tmp_path, limit=10).source == "cifar10-lossless"


def test_datasets_command_lists_the_new_datasets(capsys):
    from advguard.cli import main

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("imagenet-val", "rp2-lisa-victims", "rp2-gtsrb-victims", "cifar10"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert " yes " in line, line
    # offline: the JPEG copy for train, the lossless test set for test (the official pickles win where present)
    assert re.search(
        r"cifar10 \(source='auto'\) loads: train -> cifar10-(jpeg|pickle), "
        r"test -> cifar10-(lossless|pickle)\n",
        out,
    ), out
