"""Issue #24's API review: each problem a new user hit, with the call that now works or fails clearly.

Real data (the CIFAR-10 test split, the zoo's cifar10-cnn) wherever a model is involved; property-based tests for
bad input where natural."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import advguard
from advguard.errors import InputError


@pytest.fixture(scope="module")
def cifar():
    return advguard.load_dataset("cifar10", "test", limit=40)


@pytest.fixture(scope="module")
def clf():
    return advguard.load_model("cifar10-cnn")


# ---------------------------------------------------------------------------------------------- 1. ImageDataset.take
def test_take_boolean_mask_selects_the_rows(cifar):
    sub = cifar.take(cifar.y == 3)
    assert len(sub) == int((cifar.y == 3).sum()) > 1
    assert (sub.y == 3).all()
    np.testing.assert_array_equal(sub.indices, cifar.indices[cifar.y == 3])
    np.testing.assert_array_equal(sub.x, cifar.x[cifar.y == 3])
    # the same as a tensor mask and as positions
    np.testing.assert_array_equal(cifar.take(torch.from_numpy(cifar.y == 3)).y, sub.y)
    np.testing.assert_array_equal(cifar.take(np.flatnonzero(cifar.y == 3)).x, sub.x)
    assert len(cifar.take(np.zeros(len(cifar), bool))) == 0
    assert len(cifar.take([])) == 0
    np.testing.assert_array_equal(cifar.take([-1]).y, cifar.y[-1:])


def test_take_refuses_floats_short_masks_and_out_of_range(cifar):
    with pytest.raises(InputError, match="dtype float64"):
        cifar.take(np.array([0.7, 1.2]))
    with pytest.raises(InputError, match="one value per image"):
        cifar.take((cifar.y == 3)[:5])
    with pytest.raises(InputError, match="out of range"):
        cifar.take([len(cifar)])
    with pytest.raises(InputError, match="one-dimensional"):
        cifar.take(np.zeros((2, 2), int))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5))
def test_take_never_truncates_floats(values):
    ds = advguard.data.dataset.ImageDataset(
        x=np.zeros((6, 3, 2, 2), np.float32),
        y=np.arange(6),
        classes=[str(i) for i in range(6)],
        name="t",
        split="test",
        source="t",
        indices=np.arange(6),
    )
    with pytest.raises(InputError):
        ds.take(np.array(values, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- 2. metrics.accuracy
def test_accuracy_flattens_a_column_and_refuses_broadcasts(clf, cifar):
    from advguard import metrics

    logits = clf.logits(cifar.x[:16])
    pred = logits.argmax(1)
    want = float((pred.numpy() == cifar.y[:16]).mean())
    assert metrics.accuracy(cifar.y[:16], pred) == want
    assert metrics.accuracy(cifar.y[:16], logits.argmax(1, keepdim=True)) == want  # (N, 1) was 0.25-ish
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert metrics.accuracy(y, y[:, None]) == 1.0
    assert metrics.accuracy(torch.from_numpy(y), torch.from_numpy(y)[:, None]) == 1.0
    assert metrics.accuracy(list(y), tuple(y)) == 1.0
    for short in (y[:1], y[:4]):
        with pytest.raises(InputError, match="same length"):
            metrics.accuracy(y, short)
    with pytest.raises(InputError, match="shape"):
        metrics.accuracy(y, np.zeros((8, 2)))
    with pytest.raises(InputError, match="empty"):
        metrics.accuracy([], [])


@given(st.integers(0, 6), st.integers(0, 6))
def test_accuracy_length_mismatch_always_raises(n, m):
    from advguard import metrics

    if n == m:
        return
    with pytest.raises(InputError):
        metrics.accuracy(np.zeros(n, int), np.zeros(m, int))
