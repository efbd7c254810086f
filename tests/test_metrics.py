from __future__ import annotations

import numpy as np
import pytest
from darcyvae.metrics import s_d


@pytest.fixture
def theta():
    return np.random.default_rng(1234).standard_normal((20000, 2))


def test_s_d_identity_is_one(theta):
    assert s_d(theta, theta) == pytest.approx(1.0, abs=0.01)


def test_s_d_rotation_45_degrees_is_half(theta):
    c = np.sqrt(0.5)
    rot = np.array([[c, -c], [c, c]])
    assert s_d(theta @ rot.T, theta) == pytest.approx(0.5, abs=0.02)


def test_s_d_invariant_to_scale_and_permutation(theta):
    mixed = theta @ np.array([[1.0, 0.3], [0.2, 1.0]]).T
    ref = s_d(mixed, theta)
    assert s_d(mixed[:, ::-1] * np.array([5.0, -0.1]), theta) == pytest.approx(ref, rel=1e-12)
    assert 0.5 < ref < 1.0


def test_s_d_bad_input():
    with pytest.raises(ValueError, match="same number of samples"):
        s_d(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        s_d(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        s_d(np.zeros((1, 2)), np.zeros((1, 2)))
