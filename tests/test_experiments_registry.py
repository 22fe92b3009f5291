"""The experiment registry: every built-in experiment is registered with its tables, and a new experiment is one
folder (a toy one is written into a temporary folder, found, validated, run and rendered)."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

from advguard.cli import main
from advguard.experiments import ConfigError, experiments, get_experiment, load_config, parse_config
from advguard.experiments.registry import Experiment, register_experiment, section_owners, unregister_experiment

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = {"grid", "nguyen", "segfault", "blurnet", "themis", "taintradar"}


def test_built_in_experiments_are_registered_with_their_tables():
    exps = experiments()
    assert BUILT_IN <= set(exps)
    assert get_experiment("imageops") is exps["nguyen"]  # the earlier name still works
    owners = section_owners()
    assert owners["themis"] == "themis" and owners["cnn"] == owners["imageops"] == "nguyen"
    for name, exp in exps.items():
        assert exp.name == name and isinstance(exp, Experiment)
        assert set(exp.schema()) == set(exp.sections), name  # a schema for exactly the tables it owns


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_every_shipped_config_names_a_registered_experiment(config):
    cfg = load_config(ROOT / "configs" / config)
    exp = get_experiment(cfg.experiment)
    assert cfg.experiment == exp.name  # canonical slug, never an alias
    assert set(cfg.sections) <= set(exp.sections)
    assert config.startswith(exp.name) or exp.name == "grid"  # one slug per paper: config files start with it


def test_registering_twice_under_one_name_or_table_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register_experiment
        class Again(Experiment):  # noqa: F811
            name = "themis"

            def run(self, cfg, out, cache, progress):
                return {}

            def summary(self, doc):
                return [], []

    with pytest.raises(ValueError, match="already owned"):

        @register_experiment
        class Steals(Experiment):
            name = "steals"
            sections = ("blurnet",)

            def run(self, cfg, out, cache, progress):
                return {}

            def summary(self, doc):
                return [], []

    assert "steals" not in experiments()


TOY = '''
"""A toy experiment: counts the correctly classified images of the drawn subset."""
from pathlib import Path

from advguard.experiments.page import Page
from advguard.experiments.registry import Experiment, register_experiment
from advguard.experiments.schema import POS_INT, Str, Table


@register_experiment
class Toy(Experiment):
    name = "toy"
    paper = "none: a test of the plug-in seam"
    sections = ("toy",)
    needs_attacks = False

    def schema(self):
        return {"toy": Table({"greeting": Str(nonempty=True), "repeat": POS_INT})}

    def check(self, doc, ctx, problems):
        if doc.get("toy", {}).get("repeat", 1) > 3:
            problems.add("toy.repeat", "at most 3")

    def run(self, cfg, out: Path, cache: Path, progress: bool) -> dict:
        import json

        from advguard.data import load_dataset
        from advguard.models import load_model

        ds = load_dataset(cfg.dataset, cfg.split, limit=cfg.n_images, seed=cfg.seed, **cfg.dataset_kwargs)
        correct = int((load_model(cfg.model).predict(ds.x) == ds.y).sum().item())
        doc = {"n": int(len(ds.y)), "correct": correct, "greeting": cfg.section("toy").get("greeting", "hi")}
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(doc))
        page = Page(cfg.title).text(doc["greeting"] * cfg.section("toy").get("repeat", 1))
        page.table(["images", "correct"], [[doc["n"], doc["correct"]]], caption="`toy` counts")
        page.write(out)
        return doc

    def summary(self, doc):
        return ["images", "correct"], [[doc["n"], doc["correct"]]]
'''


@pytest.fixture
def toy_folder(tmp_path, monkeypatch):
    """A new experiment in one folder outside the package, importable as ``advguard_toy``."""
    pkg = tmp_path / "plugins" / "advguard_toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(TOY), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    importlib.import_module("advguard_toy")
    yield pkg
    unregister_experiment("toy")
    sys.modules.pop("advguard_toy", None)


def test_a_toy_experiment_in_one_folder_validates_runs_and_renders(toy_folder, tmp_path, capsys):
    doc = {
        "name": "toy-run",
        "title": "Toy",
        "experiment": "toy",
        "dataset": "cifar10",
        "model": "cifar10-cnn",
        "n_images": 20,
        "toy": {"greeting": "hello ", "repeat": 2},
    }
    cfg = parse_config(doc)
    assert cfg.experiment == "toy" and cfg.section("toy")["repeat"] == 2
    with pytest.raises(ConfigError, match=r"toy\.repeat: at most 3"):
        parse_config({**doc, "toy": {"repeat": 4}})
    with pytest.raises(ConfigError, match=r"toy\.greting: unknown key 'greting' \(did you mean 'greeting'\?\)"):
        parse_config({**doc, "toy": {"greting": "x"}})
    with pytest.raises(ConfigError, match=r'\[toy\] belongs to experiment = "toy"'):
        parse_config({**doc, "experiment": "grid", "attack": [{"name": "fgsm"}], "detector": [{"name": "confidence"}]})
    p = tmp_path / "toy.toml"
    p.write_text(
        'name = "toy-run"\ntitle = "Toy"\nexperiment = "toy"\ndataset = "cifar10"\nmodel = "cifar10-cnn"\n'
        'n_images = 20\n[toy]\ngreeting = "hello "\nrepeat = 2\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert main(["reproduce", str(p), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n"] == 20 and 10 <= res["correct"] <= 20
    md, html = (out / "results.md").read_text(), (out / "report.html").read_text()
    assert "hello hello" in md and "<code>toy</code> counts" in html and "<td>20</td>" in html
    assert "images" in capsys.readouterr().out
    assert main(["reproduce", "--list"]) == 0
    assert "toy" in capsys.readouterr().out
