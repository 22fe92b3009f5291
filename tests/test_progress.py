"""Long detector calls show progress (issue #24): a bar once the work takes more than a couple of seconds,
none with ``progress=False``, and the switch never reaches a saved file."""

from __future__ import annotations

import pytest

from advguard import _progress
from advguard.detectors import Detector, make_detector

CHEAP = {
    "feature-squeezing": {"squeezers": ("bits:4",)},
    "image-ops": {"ops": "jpeg", "decision_model": None},
    "erase-restore-distance": {"n": 2},
    "loo": {"unit": "slic", "unit_params": {"n_segments": 8}, "decision_model": None, "workers": 1},
}


@pytest.mark.parametrize("name", list(CHEAP))
def test_a_long_score_shows_a_bar_unless_silenced(name, correct_images, monkeypatch, capsys, tmp_path):
    clf, x, _ = correct_images(12, 3)
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)  # as if the call took longer than the delay
    det = make_detector(name, clf, **CHEAP[name])
    assert det.get_params()["progress"] is True and "progress" not in det.params
    if not det.supervised:
        det.fit(x[:8]) if name != "image-ops" else None
    det.features(clf.validate(x[:4]))
    assert name in capsys.readouterr().err  # the bar, named after the detector
    det.set_params(progress=False).features(clf.validate(x[:4]))
    assert capsys.readouterr().err == ""
    with pytest.raises(Exception, match="progress"):
        det.set_params(progress="yes")
    if det.threshold_ is not None:
        back = Detector.load(det.save(tmp_path / "d.advguard"), clf)
        assert back.get_params()["progress"] is True  # the switch is not saved: the default on load
