"""Issue #20, image files: every mode read correctly or refused clearly, EXIF orientation, strict decoding,
a bound on decoded memory, and property-based fuzzing of read_image and `advguard predict` on real images.

Fuzzing (hypothesis; tests/conftest.py: 25 examples per test by default, HYPOTHESIS_PROFILE=long for 500):
real PNGs shipped with Foolbox and JPEGs made from them with Pillow, mutated by byte flips, truncations,
insertions and deletions. read_image must return an HxWxC uint8 array (the original's shape when the
mutation left the header alone) or raise advguard's InputError whose message names the file; nothing else,
and never hang.
"""

from __future__ import annotations

import io
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from advguard import InputError
from advguard.cli import main
from advguard.data import imageio
from advguard.data.imageio import read_image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# --------------------------------------------------------------------------------------------------------------
# Real images


@pytest.fixture(scope="session")
def real_images(foolbox_dir) -> dict[str, bytes]:
    """PNG and JPEG bytes of real photos: Foolbox's CIFAR-10 and ImageNet test images (JPEGs made with Pillow)."""
    out = {}
    cifar = sorted(foolbox_dir.glob("cifar10_*.png"))[:2]
    imagenet = next(foolbox_dir.glob("imagenet_00_*"))
    for p in cifar:
        out[f"{p.stem}.png"] = p.read_bytes()
    big = Image.open(imagenet).convert("RGB").resize((128, 128))
    for name, im in [(cifar[0].stem, Image.open(cifar[0]).convert("RGB")), ("imagenet", big)]:
        b = io.BytesIO()
        im.save(b, format="JPEG", quality=90)
        out[f"{name}.jpg"] = b.getvalue()
        b = io.BytesIO()
        im.save(b, format="JPEG", quality=75, progressive=True)
        out[f"{name}-progressive.jpg"] = b.getvalue()
    b = io.BytesIO()
    big.save(b, format="PNG")
    out["imagenet.png"] = b.getvalue()
    return out


def _payload_start(data: bytes) -> int:
    """Offset where the compressed pixel data starts (after the JPEG SOS header / at the first PNG IDAT)."""
    if data[:2] == b"\xff\xd8":
        sos = data.find(b"\xff\xda")
        return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return data.find(b"IDAT") + 4


@contextmanager
def _no_hang(seconds: int = 20):
    def boom(*_):
        raise TimeoutError(f"read_image took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check(path: Path, data: bytes, original: bytes, mode: str, header_intact: bool) -> str:
    path.write_bytes(data)
    ref = read_image_reference(original, mode)
    t = time.time()
    with _no_hang():
        try:
            a = read_image(path, mode)
        except InputError as e:
            assert str(path) in str(e), str(e)
            return "InputError"
    assert time.time() - t < 20
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3
    assert a.shape[2] == (3 if mode == "RGB" else 1) and a.shape[0] > 0 and a.shape[1] > 0
    if header_intact:
        assert a.shape == ref.shape, (a.shape, ref.shape)
    return "array"


_REF: dict[tuple[bytes, str], np.ndarray] = {}


def read_image_reference(data: bytes, mode: str) -> np.ndarray:
    key = (data, mode)
    if key not in _REF:
        a = np.asarray(Image.open(io.BytesIO(data)).convert(mode))
        _REF[key] = a if a.ndim == 3 else a[:, :, None]
    return _REF[key]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
)


def _mutate(data: bytes, muts) -> tuple[bytes, bool]:
    """Apply the mutations; also say whether every one of them left the header (before the pixel data) alone
    without shifting it, so that a successful read must have the original shape."""
    a = bytearray(data)
    start = _payload_start(data)
    header_intact = True
    for kind, where, arg in muts:
        i = min(int(where * len(a)), max(len(a) - 1, 0))
        if kind == "flip" and a:
            a[i] ^= arg
        elif kind == "truncate":
            del a[max(i, 1) :]
        elif kind == "insert":
            a[i:i] = arg
        elif kind == "delete":
            del a[i : i + arg]
        if i < start:
            header_intact = False
    return bytes(a), header_intact


def _fuzz(tmp_path, real_images, suffix: str, name_idx: int, muts, mode: str) -> None:
    names = sorted(n for n in real_images if n.endswith(suffix))
    name = names[name_idx % len(names)]
    original = real_images[name]
    data, intact = _mutate(original, muts)
    outcome = _check(tmp_path / f"fuzz-{name}", data, original, mode, intact)
    event(f"outcome: {outcome}")  # shown by --hypothesis-show-statistics
    event(f"header intact: {intact}, outcome: {outcome}")


@settings(print_blob=True)
@given(name_idx=st.integers(0, 10), muts=st.lists(mutation, min_size=1, max_size=4), mode=st.sampled_from(["RGB", "L"]))
def test_fuzz_mutated_png_bytes(tmp_path, real_images, name_idx, muts, mode):
    _fuzz(tmp_path, real_images, ".png", name_idx, muts, mode)


@settings(print_blob=True)
@given(name_idx=st.integers(0, 10), muts=st.lists(mutation, min_size=1, max_size=4), mode=st.sampled_from(["RGB", "L"]))
def test_fuzz_mutated_jpeg_bytes(tmp_path, real_images, name_idx, muts, mode):
    _fuzz(tmp_path, real_images, ".jpg", name_idx, muts, mode)


@settings(print_blob=True)
@given(
    data=st.binary(min_size=0, max_size=2048),
    prefix=st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"BM", b"GIF89a", b"RIFF", b"P6\n"]
    ),
)
def test_fuzz_random_bytes_behind_image_signatures(tmp_path, data, prefix):
    p = tmp_path / "random.img"
    p.write_bytes(prefix + data)
    with _no_hang():
        try:
            a = read_image(p)
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
            event("outcome: array")
        except InputError as e:
            assert str(p) in str(e)
            event("outcome: InputError")


@settings(print_blob=True, max_examples=max(5, settings().max_examples // 3))
@given(
    kind=st.sampled_from(["missing", "dir", "empty", "garbage", "truncated-png", "corrupt-jpeg", "mutated"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_predict_cli_bad_files(tmp_path, real_images, capsys, kind, seed):
    """`advguard predict` on bad files: exit code 2 and a message naming the file (never a traceback)."""
    rng = np.random.default_rng(seed)
    p = tmp_path / f"in-{kind}.png"
    png = real_images[sorted(n for n in real_images if n.endswith(".png"))[0]]
    jpg = real_images[sorted(n for n in real_images if n.endswith(".jpg"))[0]]
    if kind == "dir":
        p.mkdir(exist_ok=True)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "garbage":
        p.write_bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
    elif kind == "truncated-png":
        p.write_bytes(png[: int(rng.integers(1, len(png) - 20))])
    elif kind == "corrupt-jpeg":
        p.write_bytes(_corrupt_scan(jpg))
    elif kind == "mutated":
        a = bytearray(jpg)
        for _ in range(int(rng.integers(1, 6))):
            a[int(rng.integers(0, len(a)))] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(a))
    elif p.exists():
        p.unlink()
    capsys.readouterr()
    code = main(["predict", str(p), "-m", "cifar10-cnn"])
    out, err = capsys.readouterr()
    event(f"{kind}: exit {code}")
    if kind == "mutated" and code == 0:  # a flip the decoders cannot see: a normal prediction
        assert str(p) in out and "%" in out
        return
    assert code == 2, (code, out, err)
    assert err.startswith("advguard: error:") and str(p) in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------------------
# Modes, orientation, strictness, size (regression tests of the cases)


def _corrupt_scan(jpg: bytes) -> bytes:
    """A real JPEG with 50 bytes of its own scan data repeated in the middle of the scan (a desynchronised
    entropy-coded segment: libjpeg warns 'Corrupt JPEG data', Pillow decodes it silently)."""
    start = _payload_start(jpg)
    mid = (start + len(jpg) - 2) // 2
    return jpg[:mid] + jpg[start : start + 50] + jpg[mid:]


def _save(tmp_path, name: str, im: Image.Image, **kw) -> Path:
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    p = _save(tmp_path, "g16.png", Image.fromarray(np.full((6, 7), 32768, np.uint16)))
    assert Image.open(p).mode.startswith("I")
    assert read_image(p).tolist() == np.full((6, 7, 3), 128, np.uint8).tolist()  # was 255
    assert (read_image(p, "L") == 128).all()
    ramp = np.array([[0, 257, 65535, 32767]], np.uint16)
    q = _save(tmp_path, "ramp.png", Image.fromarray(ramp))
    assert read_image(q, "L")[0, :, 0].tolist() == [0, 1, 255, 127]


def test_32_bit_integer_and_16_bit_tiff(tmp_path):
    p = _save(tmp_path, "i32.tif", Image.fromarray(np.full((4, 5), 65535 // 4, np.int32)))
    assert Image.open(p).mode == "I" and (read_image(p, "L") == 64).all()
    q = _save(tmp_path, "neg.tif", Image.fromarray(np.full((4, 5), -3, np.int32)))
    with pytest.raises(InputError, match=f"{q}.*outside 0..65535"):
        read_image(q)


def test_float_tiff_in_unit_range_is_read_else_refused(tmp_path):
    p = _save(tmp_path, "half.tif", Image.fromarray(np.full((4, 5), 0.5, np.float32)))
    assert Image.open(p).mode == "F"
    assert (read_image(p) == 128).all()  # was 0
    for name, value in [("big.tif", 3.0), ("neg.tif", -0.25), ("nan.tif", np.nan)]:
        q = _save(tmp_path, name, Image.fromarray(np.full((4, 5), value, np.float32)))
        with pytest.raises(InputError, match=f"{q}.*float image with values outside"):
            read_image(q)


def test_exif_orientation_is_applied(tmp_path):
    x = np.zeros((20, 40, 3), np.uint8)
    x[:, :20] = 255  # left half white
    im = Image.fromarray(x)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    for name in ["rot.jpg", "rot.png"]:
        p = _save(tmp_path, name, im, exif=exif.tobytes(), **({"quality": 95} if name.endswith("jpg") else {}))
        a = read_image(p)
        assert a.shape == (40, 20, 3)
        assert a[:15].mean() > 200 and a[25:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("mode", ["1", "L", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr"])
def test_modes_convert_to_rgb_and_grey(tmp_path, mode):
    rgb = Image.new("RGB", (9, 7), (200, 100, 50))
    im = {
        "1": Image.new("1", (9, 7), 1),
        "P": rgb.convert("P", palette=Image.ADAPTIVE),
        "PA": rgb.convert("P", palette=Image.ADAPTIVE).convert("PA"),
        "LA": Image.new("LA", (9, 7), (90, 0)),
        "RGBA": Image.new("RGBA", (9, 7), (200, 100, 50, 0)),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "L": Image.new("L", (9, 7), 90),
    }[mode]
    fmt = "jpg" if mode in ("CMYK", "YCbCr") else "tif" if mode == "PA" else "png"
    p = _save(tmp_path, f"m.{fmt}", im)
    a, g = read_image(p), read_image(p, "L")
    assert a.shape == (7, 9, 3) and g.shape == (7, 9, 1) and a.dtype == g.dtype == np.uint8
    expected = {"1": (255, 255, 255), "L": (90, 90, 90), "LA": (90, 90, 90)}.get(mode, (200, 100, 50))
    # Alpha is dropped: a fully transparent RGBA pixel gives its stored colour (documented in read_image).
    assert np.abs(a.reshape(-1, 3).mean(0) - expected).max() <= (6 if fmt == "jpg" else 2), a[0, 0]


def test_corrupt_jpeg_scan_data_is_refused(tmp_path, real_images, capsys):
    jpg = real_images["imagenet.jpg"]
    bad = _corrupt_scan(jpg)
    Image.open(io.BytesIO(bad)).load()  # Pillow alone decodes it without a word: what the issue saw
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(bad)
    with pytest.raises(InputError, match=f"{p}.*corrupt JPEG data"):
        read_image(p)
    assert main(["predict", str(p), "-m", "cifar10-cnn"]) == 2
    assert "corrupt JPEG data" in capsys.readouterr().err
    q = tmp_path / "good.jpg"
    q.write_bytes(jpg)
    assert read_image(q).shape == (128, 128, 3)


def test_truncated_images_are_refused_even_if_pillow_is_told_to_accept_them(tmp_path, real_images):
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # another library's global setting must not leak into our reads
    try:
        for name in ["imagenet.png", "imagenet.jpg"]:
            p = tmp_path / f"cut-{name}"
            p.write_bytes(real_images[name][: len(real_images[name]) * 2 // 3])
            with pytest.raises(InputError, match=str(p)):
                read_image(p)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def test_directory_special_file_and_missing_file(tmp_path, capsys):
    with pytest.raises(InputError, match="is a directory, not an image file"):
        read_image(tmp_path)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(fifo)  # would block forever if opened
    with pytest.raises(InputError, match="image file not found"):
        read_image(tmp_path / "nope.png")
    assert main(["predict", str(tmp_path), "-m", "cifar10-cnn"]) == 2
    assert "is a directory, not an image file" in capsys.readouterr().err


def test_decoded_size_is_bounded_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "huge.png"
    Image.new("RGB", (8000, 8000), (10, 20, 30)).save(p)  # ~200 KB on disk, 8000x8000 pixels
    assert p.stat().st_size < 400_000
    t = time.time()
    with pytest.raises(InputError) as e:
        read_image(p)
    assert time.time() - t < 1.0  # refused from the header, nothing decoded
    msg = str(e.value)
    assert str(p) in msg and "8000x8000" in msg and "256 MiB" in msg and "too large" in msg
    monkeypatch.setenv("ADVGUARD_MAX_IMAGE_MB", "0.01")
    small = _save(tmp_path, "small.png", Image.new("RGB", (100, 100)))
    with pytest.raises(InputError, match="limit of 0 MiB"):
        read_image(small)
    assert read_image(small, max_bytes=1 << 20).shape == (100, 100, 3)
    monkeypatch.setenv("ADVGUARD_MAX_IMAGE_MB", "lots")
    with pytest.raises(InputError, match="ADVGUARD_MAX_IMAGE_MB"):
        read_image(small)


def test_formats_outside_the_list_are_refused(tmp_path):
    p = _save(tmp_path, "x.ico", Image.new("RGB", (16, 16)))
    with pytest.raises(InputError, match=f"cannot read image {p}: not a PNG"):
        read_image(p)
    assert set(imageio.FORMATS) >= {"PNG", "JPEG", "BMP", "TIFF", "WEBP"}


def test_predict_reads_a_16_bit_png(tmp_path, foolbox_images, capsys):
    img = foolbox_images["cifar10"][0][0].astype(np.uint16) * 257  # the same picture in 16 bits per channel
    grey = img.mean(2).astype(np.uint16)
    p = _save(tmp_path, "grey16.png", Image.fromarray(grey))
    assert main(["predict", str(p), "-m", "cifar10-cnn", "-k", "1"]) == 0
    assert "%" in capsys.readouterr().out
    assert main(["predict", str(p), "-m", "cifar10-cnn", "-k", "0"]) == 2
    assert "-k" in capsys.readouterr().err
