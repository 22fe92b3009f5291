"""Issue #20, data set-up: concurrent runs, completion markers verified on load, repair, modes, checksums.

Small archives are built in each test (with their own checksum table), so nothing here unpacks the real
60,000-file mirror archive; one test checks the recorded checksums against the real mirror files when present.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advguard import DatasetNotFoundError
from advguard.cli import main
from advguard.data import cifar10 as cifar_mod
from advguard.data import fetch, imagenet_samples
from advguard.data.fetch import (
    MARKER,
    MIRROR_ARCHIVES,
    ChecksumError,
    MirrorArchive,
    extract_tar,
    file_digest,
    unpack_mirror,
    verify_folder,
)
from advguard.data.paths import mirror_dir


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(b, format="JPEG", quality=90)
    return b.getvalue()


def _add(t: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o644, **kw) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    for k, v in kw.items():
        setattr(info, k, v)
    if data is None and info.type == tarfile.REGTYPE:
        info.type = tarfile.DIRTYPE
    if data is not None:
        info.size = len(data)
    t.addfile(info, io.BytesIO(data) if data is not None else None)


@pytest.fixture()
def fake_cifar(tmp_path) -> tuple[Path, dict[str, MirrorArchive]]:
    """A mirror with a small CIFAR-10 JPEG copy: test split, 10 classes x 30 images (300 files)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar10-jpeg.tar.gz", "w:gz") as t:
        for c, name in enumerate(cifar_mod.CLASSES):
            for i in range(30):
                _add(t, f"cifar10-jpeg/test/{name}/{i:04d}.jpg", _jpeg(100 * c + i))
    table = {"cifar10-jpeg.tar.gz": MirrorArchive("cifar10-jpeg", file_digest(mirror / "cifar10-jpeg.tar.gz"))}
    return mirror, table


def test_recorded_checksums_match_the_mirror():
    """The digests in MIRROR_ARCHIVES are those of the mirror's files (when this machine has the mirror)."""
    src = mirror_dir()
    if src is None:
        pytest.skip("no offline mirror on this machine")
    for name, spec in MIRROR_ARCHIVES.items():
        if (src / name).exists():
            assert file_digest(src / name) == spec.sha256, name


def test_wrong_checksum_is_refused_naming_file_and_digests(fake_cifar, tmp_path):
    mirror, table = fake_cifar
    good = table["cifar10-jpeg.tar.gz"].sha256
    bad = {"cifar10-jpeg.tar.gz": MirrorArchive("cifar10-jpeg", "0" * 64)}
    with pytest.raises(ChecksumError) as e:
        unpack_mirror(mirror, tmp_path / "data", archives=bad)
    msg = str(e.value)
    assert "cifar10-jpeg.tar.gz" in msg and "0" * 64 in msg and good in msg
    assert not (tmp_path / "data" / "cifar10-jpeg").exists()
    assert not list((tmp_path / "data").glob(".*partial*"))
    # A copied file (folder None) is checked the same way and never lands under its final name.
    (mirror / "gtsrb32.npz").write_bytes(b"not the real file")
    with pytest.raises(ChecksumError, match="gtsrb32.npz"):
        unpack_mirror(mirror, tmp_path / "data", archives={"gtsrb32.npz": MirrorArchive(None, "1" * 64)})
    assert not (tmp_path / "data" / "gtsrb32.npz").exists()


def test_copied_file_is_verified_once_and_repaired(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    (mirror / "gtsrb32.npz").write_bytes(b"x" * 1000)
    table = {"gtsrb32.npz": MirrorArchive(None, file_digest(mirror / "gtsrb32.npz"))}
    lines: list[str] = []
    assert unpack_mirror(mirror, dest, archives=table, log=lines.append) == ["gtsrb32.npz"]
    assert unpack_mirror(mirror, dest, archives=table, log=lines.append) == ["gtsrb32.npz"]
    assert "copied" in lines[0] and "already complete" in lines[1]
    (dest / "gtsrb32.npz").write_bytes(b"x" * 10)  # truncated after set-up
    unpack_mirror(mirror, dest, archives=table, log=lines.append)
    assert "repaired" in lines[2] and (dest / "gtsrb32.npz").read_bytes() == b"x" * 1000


def test_deleted_files_are_detected_on_load_and_setup_repairs(fake_cifar, tmp_path):
    mirror, table = fake_cifar
    root = tmp_path / "data"
    assert unpack_mirror(mirror, root, archives=table) == ["cifar10-jpeg.tar.gz"]
    out = cifar_mod.load(root, "test", source="jpeg")
    assert out["x"].shape == (300, 3, 32, 32)  # decoded, now cached
    victims = sorted((root / "cifar10-jpeg" / "test" / "cat").iterdir())[:7]
    for p in victims:
        p.unlink()
    # The decoded cache exists, yet the cheap count check on load sees the damage.
    with pytest.raises(DatasetNotFoundError) as e:
        cifar_mod.load(root, "test", source="jpeg")
    msg = str(e.value)
    assert str(root / "cifar10-jpeg") in msg and "expected 300 files, found 293" in msg
    assert "advguard setup" in msg and "test/cat/0000.jpg" in msg
    # `advguard setup` does not call it ready: it re-extracts it.
    lines: list[str] = []
    unpack_mirror(mirror, root, archives=table, log=lines.append)
    assert "repaired" in lines[0]
    assert cifar_mod.load(root, "test", source="jpeg")["x"].shape == (300, 3, 32, 32)


def test_changed_file_size_is_detected_when_the_cache_is_built(fake_cifar, tmp_path):
    mirror, table = fake_cifar
    root = tmp_path / "data"
    unpack_mirror(mirror, root, archives=table)
    victim = root / "cifar10-jpeg" / "test" / "dog" / "0003.jpg"
    victim.write_bytes(victim.read_bytes()[:100])  # same count, truncated file: the full check sees it
    with pytest.raises(DatasetNotFoundError, match="different size.*test/dog/0003.jpg"):
        cifar_mod.load(root, "test", source="jpeg")
    with pytest.raises(DatasetNotFoundError, match="different size"):
        verify_folder(root / "cifar10-jpeg", full=True)


def test_folder_without_marker_is_reported_and_repaired(fake_cifar, tmp_path):
    """A folder unpacked by an older advguard (or a run killed before its marker) is not trusted."""
    mirror, table = fake_cifar
    root = tmp_path / "data"
    with tarfile.open(mirror / "cifar10-jpeg.tar.gz") as t:
        t.extractall(root, filter="data")
    for p in list((root / "cifar10-jpeg" / "test" / "frog").iterdir())[:5]:
        p.unlink()  # the case: an incomplete copy that earlier set-ups called ready
    with pytest.raises(DatasetNotFoundError, match=r"no valid completion marker.*295 files.*advguard setup"):
        cifar_mod.load(root, "test", source="jpeg")
    code = _cli_setup(mirror, root, table)
    assert code == 0
    assert verify_folder(root / "cifar10-jpeg")["count"] == 300
    assert cifar_mod.load(root, "test", source="jpeg")["x"].shape == (300, 3, 32, 32)


def _cli_setup(mirror: Path, root: Path, table) -> int:
    saved = dict(fetch.MIRROR_ARCHIVES)
    fetch.MIRROR_ARCHIVES.clear()
    fetch.MIRROR_ARCHIVES.update(table)
    try:
        return main(["--data-dir", str(root), "setup", "--mirror", str(mirror)])
    finally:
        fetch.MIRROR_ARCHIVES.clear()
        fetch.MIRROR_ARCHIVES.update(saved)
        from advguard.data import set_data_dir

        set_data_dir(None)


def test_cli_setup_reports_repair_and_checksum_errors(fake_cifar, tmp_path, capsys):
    mirror, table = fake_cifar
    root = tmp_path / "data"
    assert _cli_setup(mirror, root, table) == 0
    assert "unpacked" in capsys.readouterr().out
    (root / "cifar10-jpeg" / MARKER).unlink()
    assert _cli_setup(mirror, root, table) == 0
    assert "repaired" in capsys.readouterr().out
    assert _cli_setup(mirror, root, table) == 0
    assert "already complete" in capsys.readouterr().out
    bad = {"cifar10-jpeg.tar.gz": MirrorArchive("cifar10-jpeg", "f" * 64)}
    assert _cli_setup(mirror, root, bad) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "f" * 64 in err and table["cifar10-jpeg.tar.gz"].sha256 in err


def test_modes_are_reset_and_setuid_stripped(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        _add(t, "pkg", None, mode=0o777)
        _add(t, "pkg/run.sh", b"#!/bin/sh\n", mode=0o4755)  # setuid, executable
        _add(t, "pkg/shared.txt", b"x", mode=0o2777)  # setgid, world-writable
        _add(t, "pkg/sub", None, mode=0o1777)  # sticky, world-writable folder
        _add(t, "pkg/sub/f", b"y", mode=0o600)
    out = extract_tar(archive, tmp_path / "data", "pkg", file_digest(archive))
    for name, want in [("run.sh", 0o644), ("shared.txt", 0o644), ("sub/f", 0o644), ("sub", 0o755), ("", 0o755)]:
        assert stat.S_IMODE((out / name).stat().st_mode) == want, name


@pytest.mark.parametrize("member", ["link", "hardlink", "device", "fifo", "absolute", "dotdot"])
def test_unsafe_members_are_refused(tmp_path, member):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        _add(t, "pkg/ok.txt", b"ok")
        if member == "link":
            _add(t, "pkg/l", None, type=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif member == "hardlink":
            _add(t, "pkg/h", None, type=tarfile.LNKTYPE, linkname="pkg/ok.txt")
        elif member == "device":
            _add(t, "pkg/d", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif member == "fifo":
            _add(t, "pkg/p", None, type=tarfile.FIFOTYPE)
        elif member == "absolute":
            _add(t, "/tmp/advguard-evil.txt", b"x")
        else:
            _add(t, "pkg/../../evil.txt", b"x")
    with pytest.raises(DatasetNotFoundError, match="refusing unsafe archive member"):
        extract_tar(archive, tmp_path / "data", "pkg")
    assert not (tmp_path / "data" / "pkg").exists() and not (tmp_path / "evil.txt").exists()
    assert not list((tmp_path / "data").glob(".pkg.partial*"))


def test_leftover_partial_folders_do_not_break_the_next_run(fake_cifar, tmp_path):
    mirror, table = fake_cifar
    root = tmp_path / "data"
    # What killed runs leave: the old fixed name and a unique one, half-extracted, read-only inside.
    for name in [".cifar10-jpeg.partial", ".cifar10-jpeg.partial-k1ll3d"]:
        half = root / name / "cifar10-jpeg" / "test" / "cat"
        half.mkdir(parents=True)
        (half / "0000.jpg").write_bytes(b"half")
    assert unpack_mirror(mirror, root, archives=table) == ["cifar10-jpeg.tar.gz"]
    assert verify_folder(root / "cifar10-jpeg")["count"] == 300
    assert not list(root.glob(".cifar10-jpeg.partial*"))


def _unpack_worker(args):
    mirror, root, table, barrier = args
    barrier.wait()
    try:
        unpack_mirror(mirror, root, archives=table)
        return "ok"
    except Exception as e:  # noqa: BLE001 - report it to the parent
        return f"{type(e).__name__}: {e}"


def _race(n: int, mirror: Path, root: Path, table, how: str) -> list[str]:
    if how == "threads":
        barrier = threading.Barrier(n)
        results = [None] * n

        def run(i):
            results[i] = _unpack_worker((mirror, root, table, barrier))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return results
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(mirror, root, table, barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def _process_worker(mirror, root, table, barrier, queue):
    queue.put(_unpack_worker((mirror, root, table, barrier)))


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_concurrent_setups_both_succeed_with_a_complete_folder(fake_cifar, tmp_path, how):
    """Before the fix both runs used '.cifar10-jpeg.partial': one failed or the folder came out short."""
    mirror, table = fake_cifar
    for trial in range(3):
        root = tmp_path / f"data-{how}-{trial}"
        results = _race(3 if how == "threads" else 2, mirror, root, table, how)
        assert results == ["ok"] * len(results), results
        assert verify_folder(root / "cifar10-jpeg", full=True)["count"] == 300
        assert len(list((root / "cifar10-jpeg" / "test").rglob("*.jpg"))) == 300
        assert not list(root.glob(".cifar10-jpeg.partial*")) and not list(root.glob(".cifar10-jpeg.old-*"))


def test_imagenet_samples_missing_image_detected(tmp_path, foolbox_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    jpg = next(foolbox_dir.glob("imagenet_00_*.jpg")).read_bytes()
    with tarfile.open(mirror / "imagenet-samples.tar.gz", "w:gz") as t:
        _add(t, "imagenet-samples/classes.tsv", b"index\twnid\tname\n0\tn01440764\ttench\n1\tn01443537\tgoldfish\n")
        for w in ["n01440764", "n01443537"]:
            _add(t, f"imagenet-samples/images/{w}.jpg", jpg)
    table = {
        "imagenet-samples.tar.gz": MirrorArchive("imagenet-samples", file_digest(mirror / "imagenet-samples.tar.gz"))
    }
    root = tmp_path / "data"
    unpack_mirror(mirror, root, archives=table)
    assert imagenet_samples.load(root, "test", url=None)["x"].shape == (2, 3, 224, 224)
    (root / "imagenet-samples" / "images" / "n01443537.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="expected 3 files, found 2.*images/n01443537.jpg"):
        imagenet_samples.load(root, "test", url=None)


def test_real_imagenet_samples_archive_unpacks_verified(tmp_path):
    """The real (small) mirror archive through the real table: checksum, 1,001 files, marker."""
    src = mirror_dir()
    if src is None or not (src / "imagenet-samples.tar.gz").exists():
        pytest.skip("no offline mirror on this machine")
    spec = MIRROR_ARCHIVES["imagenet-samples.tar.gz"]
    out = extract_tar(src / "imagenet-samples.tar.gz", tmp_path, spec.folder, spec.sha256)
    m = verify_folder(out)
    assert m["count"] == 1001 and m["sha256"] == spec.sha256
    assert not [n for n in os.listdir(tmp_path) if "partial" in n or ".old-" in n]


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_damaged_gtsrb_file_is_named_not_a_raw_zip_traceback(tmp_path, damage):
    from advguard.data import gtsrb
    from advguard.data.paths import data_dir
    from advguard.errors import DatasetNotFoundError

    src = data_dir() / gtsrb.FILE
    if not src.exists():
        pytest.skip("GTSRB is not set up")
    raw = src.read_bytes()
    bad = {"truncate": raw[: len(raw) // 2], "empty": b"", "garbage": b"PK\x03\x04" + bytes(200)}[damage]
    (tmp_path / gtsrb.FILE).write_bytes(bad)
    with pytest.raises(DatasetNotFoundError, match="corrupt GTSRB file"):
        gtsrb.load(tmp_path, "test", url=None)
