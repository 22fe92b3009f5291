"""Issue #20: damaged or tampered cache entries are named, moved aside and recomputed; concurrent builds are safe."""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from advguard.data.cache import (
    CacheCorruptError,
    CacheWarning,
    cached_arrays,
    checksum_path,
    load_entry,
    read_arrays,
    save_entry,
)

ARRAYS = {"a": np.arange(5000, dtype=np.float32).reshape(50, 100), "b": np.asarray("meta text")}


def _bitflip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    i = len(data) // 2  # inside array "a"'s bytes
    data[i] ^= 0x10
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _tamper(p: Path) -> None:
    """A well-formed npz with different numbers under the same name (the sidecar keeps the old checksum)."""
    np.savez(p, a=ARRAYS["a"] + 1, b=ARRAYS["b"])


CORRUPTIONS = {"bitflip": _bitflip, "truncate": _truncate, "empty": _empty, "tamper": _tamper}


def _corrupt_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.corrupt-*"))


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_entry_is_named_moved_aside_and_rebuilt(tmp_path, kind):
    path = tmp_path / "entry.npz"
    calls = []

    def build():
        calls.append(1)
        return dict(ARRAYS)

    cached_arrays(path, build)
    assert checksum_path(path).exists() and len(calls) == 1
    CORRUPTIONS[kind](path)
    with pytest.warns(CacheWarning, match=r"corrupt cache entry .*entry\.npz"):
        got = cached_arrays(path, build)
    assert len(calls) == 2  # recomputed
    assert np.array_equal(got["a"], ARRAYS["a"]) and str(got["b"]) == "meta text"
    assert any(p.name.startswith("entry.npz.corrupt-") for p in _corrupt_files(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry verifies quietly
        again = load_entry(path)
    assert np.array_equal(again["a"], ARRAYS["a"]) and len(calls) == 2


@pytest.mark.parametrize("kind", ["bitflip", "truncate", "empty"])
def test_legacy_entry_without_checksum_damaged_is_rebuilt(tmp_path, kind):
    path = tmp_path / "old.npz"
    np.savez(path, **ARRAYS)  # an older advguard: no sidecar
    CORRUPTIONS[kind](path)
    with pytest.warns(CacheWarning, match="old.npz"):
        assert load_entry(path) is None
    assert not path.exists() and _corrupt_files(tmp_path)


def test_legacy_entry_readable_is_adopted_with_a_message(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, **ARRAYS)
    before = path.read_bytes()
    with pytest.warns(CacheWarning, match=r"old\.npz has no checksum"):
        got = load_entry(path)
    assert np.array_equal(got["a"], ARRAYS["a"])
    assert path.read_bytes() == before and checksum_path(path).exists()  # entry untouched, checksum recorded
    _tamper(path)  # from now on it is verified
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        assert load_entry(path) is None


def test_entries_never_hold_pickles(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, o=np.array([{"x": 1}], dtype=object))
    with pytest.warns(CacheWarning, match="obj.npz"):
        assert load_entry(path) is None  # allow_pickle=False: refused, moved aside


def test_unrebuildable_file_error_names_it(tmp_path):
    path = tmp_path / "gtsrb32.npz"
    save_entry(path, ARRAYS)
    _truncate(path)
    with pytest.raises(CacheCorruptError, match="gtsrb32.npz"):
        read_arrays(path)


# ------------------------------------------------------------------------------------------ bench caches
CFG_KW = dict(
    dataset="cifar10",
    model="cifar10-cnn",
    attack="fgsm",
    params={"eps": 8 / 255},
    limit=20,
    seed=3,
    dataset_kwargs={"source": "jpeg"},
)


@pytest.fixture(scope="module")
def clf():
    from advguard import load_model

    return load_model("cifar10-cnn")


def _same(a, b) -> bool:
    return (
        a.key == b.key
        and np.array_equal(a.x_adv, b.x_adv)
        and np.array_equal(a.adv_ids, b.adv_ids)
        and np.array_equal(a.x_clean, b.x_clean)
        and a.counts == b.counts
    )


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_advset_is_rebuilt(clf, tmp_path, kind):
    from advguard.advsets import AdvSetConfig, build_advset

    cfg = AdvSetConfig(**CFG_KW)
    first = build_advset(cfg, clf, cache_dir=tmp_path, chunk_size=8, progress=False)
    final = tmp_path / f"{first.key}.npz"
    CORRUPTIONS[kind](final)
    with pytest.warns(CacheWarning, match=first.key):
        again = build_advset(cfg, clf, cache_dir=tmp_path, chunk_size=8, progress=False)
    assert _same(first, again) and _corrupt_files(tmp_path)


@pytest.mark.parametrize("kind", ["bitflip", "truncate", "empty", "tamper"])
def test_corrupt_chunk_of_interrupted_build_is_recomputed(clf, tmp_path, interrupted_build, kind):
    from advguard.advsets import AdvSetConfig, build_advset

    cfg = AdvSetConfig(**CFG_KW)
    fresh = build_advset(cfg, clf, cache_dir=tmp_path / "fresh", chunk_size=8, progress=False)
    interrupted_build(cfg, clf, tmp_path / "c", 8)
    (chunk,) = (tmp_path / "c").glob("*.partial/chunk-*.npz")
    if kind == "tamper":
        z = dict(np.load(chunk))
        z["x_adv"] = z["x_adv"] + 0.5
        np.savez(chunk, **z)
    else:
        CORRUPTIONS[kind](chunk)
    with pytest.warns(CacheWarning, match="chunk-00000.npz"):
        resumed = build_advset(cfg, clf, cache_dir=tmp_path / "c", chunk_size=8, progress=False)
    assert _same(fresh, resumed)
    assert not list((tmp_path / "c").glob("*.partial"))


@pytest.mark.parametrize("kind", ["bitflip", "truncate", "tamper"])
def test_corrupt_feature_cache_is_recomputed(tmp_path, kind):
    from advguard.experiments.common import cached_chunks

    class Clf:
        num_passes = 0

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "features" / "f.npz"
    f1, _ = cached_chunks(path, "features", Clf(), x, lambda b: b * 2, np.zeros((0, 4)), chunk=3, progress=False)
    CORRUPTIONS[kind](path) if kind != "tamper" else np.savez(path, features=f1 + 1, cost=np.asarray("{}"))
    with pytest.warns(CacheWarning, match=r"features.f\.npz"):
        f2, cost = cached_chunks(path, "features", Clf(), x, lambda b: b * 2, np.zeros((0, 4)), chunk=3, progress=False)
    assert np.array_equal(f1, f2) and np.array_equal(f2, x * 2) and "seconds" in cost


# ------------------------------------------------------------------------------------------ concurrency
def _build_in_process(cache_dir: str, out: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from advguard.advsets import AdvSetConfig, build_advset

    s = build_advset(AdvSetConfig(**CFG_KW), cache_dir=cache_dir, chunk_size=4, progress=False)
    np.savez(out, x_adv=s.x_adv, adv_ids=s.adv_ids, x_clean=s.x_clean, key=np.asarray(s.key))


def test_two_concurrent_builds_on_one_cache(tmp_path):
    """Two processes build the same set on one fresh cache at the same moment: no crash, identical sets."""
    ctx = mp.get_context("spawn")
    cache = tmp_path / "cache"
    procs = [ctx.Process(target=_build_in_process, args=(str(cache), str(tmp_path / f"out{i}.npz"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = (np.load(tmp_path / f"out{i}.npz") for i in range(2))
    for k in ("x_adv", "adv_ids", "x_clean", "key"):
        assert np.array_equal(a[k], b[k]), k
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.partial"))
