"""Dataset loaders on real files: the data directory (offline mirror), Debian's Fashion-MNIST, Foolbox's images."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from advguard import DatasetNotFoundError, InputError, UnknownNameError, load_dataset
from advguard.data import cifar10 as cifar_mod
from advguard.data import fashion_mnist, gtsrb, imagenet_samples, read_image, subset_indices, unpack_mirror


def test_fashion_mnist_real_files():
    ds = load_dataset("fashion-mnist", "test")
    assert ds.x.shape == (10000, 1, 28, 28) and ds.x.dtype == np.float32
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert np.bincount(ds.y).tolist() == [1000] * 10
    assert ds.classes[9] == "Ankle boot"


def test_cifar10_jpeg_copy_matches_foolbox_images(foolbox_images):
    ds = load_dataset("cifar10", "test", dtype="uint8", source="jpeg")  # the default test set is lossless (#21)
    assert ds.source == "cifar10-jpeg"
    assert ds.x.shape == (10000, 3, 32, 32) and ds.x.dtype == np.uint8
    assert np.bincount(ds.y).tolist() == [1000] * 10
    # Each of Foolbox's official CIFAR-10 test images has a near twin (JPEG q~75) in the copy, with the same label.
    flat = ds.x.reshape(len(ds), -1).astype(np.float32)
    for img, label in foolbox_images["cifar10"][:5]:
        d = np.abs(flat - img.transpose(2, 0, 1).reshape(-1)).mean(1)
        j = int(d.argmin())
        assert d[j] < 12, d[j]  # mean |diff| in 0..255 units; the copy differs by ~7 on average
        assert ds.y[j] == label


def test_gtsrb_track_split_has_no_shared_tracks():
    tr = load_dataset("gtsrb", "train", dtype="uint8")
    va = load_dataset("gtsrb", "val", dtype="uint8")
    te = load_dataset("gtsrb", "test", dtype="uint8")
    assert len(tr) + len(va) == 11763 and len(te) == 12630
    assert not set(tr.groups.tolist()) & set(va.groups.tolist())
    assert set(np.unique(va.y).tolist()) == set(range(43))  # every class validated
    assert tr.classes[gtsrb.STOP] == "stop"
    # Per the mirror's README, x_train[6885] == x_test[2291] (a duplicated Stop frame).
    full = load_dataset("gtsrb", "trainval", dtype="uint8")
    assert np.array_equal(full.x[6885], te.x[2291]) and full.y[6885] == gtsrb.STOP


def test_imagenet_samples_one_per_class():
    ds = load_dataset("imagenet-samples", "test", limit=50, dtype="uint8")
    assert ds.x.shape == (50, 3, 224, 224)
    assert len(ds.classes) == 1000 and ds.classes[0] == "tench"
    assert len(np.unique(ds.y)) == 50


def test_subset_is_deterministic_and_stratified():
    y = np.repeat(np.arange(10), [100, 200, 50, 50, 100, 100, 100, 100, 100, 100])
    a = subset_indices(y, 100, seed=3)
    assert np.array_equal(a, subset_indices(y, 100, seed=3))
    assert not np.array_equal(a, subset_indices(y, 100, seed=4))
    counts = np.bincount(y[a], minlength=10)
    assert counts[1] == 20 and counts[2] == 5 and counts.sum() == 100
    ds = load_dataset("cifar10", "test", limit=200, seed=1)
    assert np.bincount(ds.y).tolist() == [20] * 10
    assert np.array_equal(ds.indices, load_dataset("cifar10", "test", limit=200, seed=1).indices)


def test_image_folder_with_foolbox_images(tmp_path, foolbox_images):
    for i, (img, label) in enumerate(foolbox_images["mnist"][:12]):
        d = tmp_path / f"digit{label}"
        d.mkdir(exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image folder entry")
    ds = load_dataset("image-folder", path=tmp_path, mode="L")
    assert ds.x.shape == (12, 1, 28, 28)
    assert ds.classes == sorted({f"digit{lab}" for _, lab in foolbox_images["mnist"][:12]})
    assert ds.source.startswith("image-folder:")


def test_cifar_pickle_loader_and_download(tmp_path, foolbox_images):
    """The official-format loader on batches built from Foolbox's real CIFAR-10 images, 'downloaded' via file://."""
    imgs = np.stack([a.transpose(2, 0, 1) for a, _ in foolbox_images["cifar10"]])
    labels = [lab for _, lab in foolbox_images["cifar10"]]
    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(src / name, "wb") as f:
            pickle.dump({b"data": imgs.reshape(len(imgs), -1), b"labels": labels}, f)
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="cifar-10-batches-py")
    root = tmp_path / "data"
    from advguard.data.fetch import file_digest

    out = cifar_mod.load(root, "test", source="pickle", url=archive.as_uri(), md5=file_digest(archive, "md5"))
    assert out["source"] == "cifar10-pickle"
    assert np.array_equal(out["x"], imgs) and out["y"].tolist() == labels
    assert len(cifar_mod.load(root, "train", source="pickle", url=None)["y"]) == 5 * len(labels)


def test_cifar_pickle_refuses_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, ("/nonexistent",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetNotFoundError, match="forbidden"):
        cifar_mod.load(tmp_path, "test", source="pickle", url=None)


def test_download_verifies_checksum_and_leaves_nothing_half_written(tmp_path):
    """Download with a file:// source: the published md5 is checked; a mismatch leaves no file behind."""
    from advguard.data.fetch import download, file_digest

    src = tmp_path / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(fashion_mnist.DEBIAN_DIR / src.name, src)
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match="checksum"):
        download(src.as_uri(), root / src.name, md5="0" * 32)
    assert not list(root.iterdir())
    got = download(src.as_uri(), root / src.name, md5=file_digest(src, "md5"))
    assert fashion_mnist.read_idx(got).shape == (10000,)
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        download((tmp_path / "missing.gz").as_uri(), root / "missing.gz")


def test_idx_parser_rejects_truncated_file(tmp_path):
    good = tmp_path / "ok.gz"
    good.write_bytes(
        gzip.compress(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + bytes(8))
    )
    assert fashion_mnist.read_idx(good).shape == (2, 2, 2)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + bytes(5)))
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        fashion_mnist.read_idx(bad)


def test_gtsrb_official_converter(tmp_path):
    """build_from_official on tiny archives in the official layout (ppm images, semicolon CSV)."""
    rng = np.random.default_rng(0)

    def ppm(color: int) -> bytes:
        b = io.BytesIO()
        Image.fromarray(np.full((40, 45, 3), color, np.uint8)).save(b, format="PPM")
        return b.getvalue()

    train = tmp_path / "train.zip"
    with zipfile.ZipFile(train, "w") as z:
        for cls in (0, 14):
            for track in range(2):
                for frame in range(30):
                    z.writestr(
                        f"GTSRB/Final_Training/Images/{cls:05d}/{track:05d}_{frame:05d}.ppm", ppm(cls * 10 + frame)
                    )
    test = tmp_path / "test.zip"
    gt = tmp_path / "gt.zip"
    with zipfile.ZipFile(test, "w") as z:
        for i in range(3):
            z.writestr(f"GTSRB/Final_Test/Images/{i:05d}.ppm", ppm(int(rng.integers(0, 255))))
    with zipfile.ZipFile(gt, "w") as z:
        z.writestr(
            "GT-final_test.csv",
            "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
            + "".join(f"{i:05d}.ppm;45;40;1;1;40;35;{[14, 0, 14][i]}\n" for i in range(3)),
        )
    out = gtsrb.build_from_official(train, test, gt, tmp_path / "gtsrb32.npz")
    with np.load(out) as f:
        assert f["x_train"].shape == (4 * gtsrb.FRAMES_PER_TRACK, 32, 32, 3)
        assert f["y_train"].tolist() == [0] * 18 + [14] * 18
        assert f["x_train"][0, 0, 0, 0] == 0 and f["x_train"][8, 0, 0, 0] == 29  # first and last frame
        assert f["y_test"].tolist() == [14, 0, 14]


def test_imagenet_samples_builder(tmp_path, foolbox_dir):
    z = tmp_path / "samples.zip"
    with zipfile.ZipFile(z, "w") as zz:
        for wnid, name in [("n01440764", "tench"), ("n01443537", "goldfish")]:
            b = io.BytesIO()
            Image.open(next(foolbox_dir.glob("imagenet_00_*.jpg"))).save(b, format="JPEG")
            zz.writestr(f"imagenet-sample-images-master/{wnid}_{name}.JPEG", b.getvalue())
    imagenet_samples.build_from_github(z, tmp_path)
    out = imagenet_samples.load(tmp_path, "test", url=None)
    assert out["x"].shape == (2, 3, 224, 224) and out["classes"] == ["tench", "goldfish"]


def test_unpack_mirror_is_atomic_and_idempotent(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "cifar10-jpeg" / "test" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(mirror / "cifar10-jpeg" / "test" / "cat" / "0001.jpg")
    with tarfile.open(mirror / "cifar10-jpeg.tar.gz", "w:gz") as t:
        t.add(mirror / "cifar10-jpeg", arcname="cifar10-jpeg")
    shutil.rmtree(mirror / "cifar10-jpeg")
    dest = tmp_path / "data"
    # This small archive is not the real mirror's: the recorded checksum refuses it (issue #20) ...
    from advguard.data.fetch import ChecksumError, MirrorArchive, file_digest

    with pytest.raises(ChecksumError, match="cifar10-jpeg.tar.gz"):
        unpack_mirror(mirror, dest)
    assert not (dest / "cifar10-jpeg").exists()
    # ... and a table with its own checksum unpacks it.
    table = {"cifar10-jpeg.tar.gz": MirrorArchive("cifar10-jpeg", file_digest(mirror / "cifar10-jpeg.tar.gz"))}
    assert unpack_mirror(mirror, dest, archives=table) == ["cifar10-jpeg.tar.gz"]
    assert (dest / "cifar10-jpeg" / "test" / "cat" / "0001.jpg").exists()
    assert unpack_mirror(mirror, dest, archives=table) == ["cifar10-jpeg.tar.gz"]
    assert not list(dest.glob(".*partial*"))


def test_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        gtsrb.load(tmp_path, "test", url=None)
    with pytest.raises(DatasetNotFoundError, match="advguard setup"):
        cifar_mod.load(tmp_path, "test", source="jpeg")


def test_corrupt_gtsrb_file_gives_clear_error(tmp_path):
    (tmp_path / gtsrb.FILE).write_bytes(b"not an npz")
    with pytest.raises(DatasetNotFoundError, match="corrupt GTSRB"):
        gtsrb.load(tmp_path, "test", url=None)


def test_unknown_names_and_splits():
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("cifar-10")
    with pytest.raises(ValueError, match="no split"):
        load_dataset("cifar10", "validation")


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="cannot read image"):
        read_image(bad)
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    with pytest.raises(InputError, match="too large"):
        read_image(big, max_pixels=10_000)
    assert read_image(big).shape == (300, 300, 3)
