"""The `advguard` command line, run as a user would."""

from __future__ import annotations

import subprocess
import sys

import pytest

from advguard.cli import main
from advguard.data import data_dir


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advguard.cli", *args], capture_output=True, text=True, timeout=300)


def test_models_lists_every_zoo_model_with_accuracy():
    from advguard.models import ZOO

    r = run("models")
    assert r.returncode == 0, r.stderr
    for name in ("fashion-mnist-cnn", "cifar10-cnn", "cifar10-resnet20", "gtsrb-cnn", "efficientnet-lite0"):
        assert name in r.stdout
    untrained = [line.split()[0] for line in r.stdout.splitlines() if "untrained" in line]
    assert untrained == [n for n, s in ZOO.items() if not s.available]  # declared defences not trained yet
    assert r.stdout.count("%") >= sum(s.available for s in ZOO.values())


def test_datasets_lists_local_data():
    r = run("datasets")
    assert r.returncode == 0 and "cifar10" in r.stdout and "gtsrb" in r.stdout


def test_predict_cifar_test_jpegs(capsys):
    root = data_dir() / "cifar10-jpeg" / "test"
    files = [str(sorted((root / c).glob("*.jpg"))[0]) for c in ("airplane", "ship", "truck", "horse")]
    assert main(["predict", *files, "-m", "cifar10-cnn", "-k", "3"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("/test/")[1:]
    assert len(blocks) == 4
    correct = sum(b.split("\n")[1].split()[1] == b.split("/")[0] for b in blocks)  # top-1 name == folder
    assert correct >= 3, out
    assert out.count("%") == 12


def test_predict_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", str(bad), "-m", "cifar10-cnn"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_predict_needs_a_model_and_states_each_resize(capsys):
    """No silent default model, and a photo squashed to a CIFAR-10 input says so (issue #24)."""
    photo = data_dir() / "imagenet-samples" / "images" / "n01440764.jpg"
    with pytest.raises(SystemExit) as e:
        main(["predict", str(photo)])
    assert e.value.code == 2 and "--model" in capsys.readouterr().err
    assert main(["predict", str(photo), "-m", "cifar10-cnn", "-k", "1"]) == 0
    err = capsys.readouterr().err
    assert "n01440764.jpg" in err and "resized to 32x32 (aspect ratio not kept) for cifar10-cnn" in err
    assert main(["predict", str(photo), "-m", "cifar10-cnn", "--device", "cuda:7", "-k", "1"]) == 2
    assert "cuda:7" in capsys.readouterr().err  # a clear DeviceError, not torch's driver error


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["evaluate", "resnet50"]) == 2
    assert "unknown model 'resnet50'" in capsys.readouterr().err


def test_setup_without_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVGUARD_MIRROR", raising=False)
    r = run("setup", "--mirror", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no offline mirror" in r.stderr


def test_predict_names_lisa_cnn_classes(capsys):
    """LISA-CNN's 18 outputs are named from the RP2 authors' class list (not ImageNet's)."""
    victim = sorted((data_dir() / "rp2-lisa" / "lisa-victim-32").glob("*.png"))[0]
    assert main(["predict", str(victim), "-m", "lisa-cnn", "-k", "1"]) == 0
    assert "stop" in capsys.readouterr().out


def test_a_shipped_config_writes_into_runs_unless_published(tmp_path, monkeypatch):
    """The shipped configs name their committed page (docs/results/...) as `out`: a plain run must not overwrite it
    (issue #24); only --publish writes there, and --out / --publish together are refused."""
    from pathlib import Path

    from advguard.experiments import load_config
    from advguard.experiments.common import bench_paths

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "themis-cifar10-gap.toml")
    assert cfg.out == "docs/results/themis/cifar10-gap"
    assert bench_paths(cfg, None, tmp_path)[0] == Path("runs") / cfg.name
    assert bench_paths(cfg, None, tmp_path, publish=True)[0] == Path(cfg.out)
    assert bench_paths(cfg, tmp_path / "x", tmp_path, publish=True)[0] == tmp_path / "x"
    cfg.out = "my-results/gap"  # a user's own out is used as written
    assert bench_paths(cfg, None, tmp_path)[0] == Path("my-results/gap")
    monkeypatch.chdir(tmp_path)
    config = str(root / "configs" / "smoke.toml")
    assert main(["reproduce", config, "--out", "o", "--publish"]) == 2
    assert not (tmp_path / "o").exists()


def test_reproduce_names_an_absent_device_before_any_work(tmp_path, capsys):
    """`device` in a config and `--device` reach the experiments; an absent one is a clear error, nothing written."""
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: cuda:7 may exist")
    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "c.toml"
    cfg.write_text('device = "cuda:7"\n' + (root / "configs" / "smoke.toml").read_text())
    assert main(["reproduce", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "device" in capsys.readouterr().err
    assert (
        main(["reproduce", str(root / "configs" / "smoke.toml"), "--device", "cuda:7", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "cuda:7" in capsys.readouterr().err and not (tmp_path / "o").exists()
