"""Differential contrast building blocks (Pinetz et al.): radiometric matching, noise σ from the negative
half, local mean/SD harmonisation (eq. 1), sigmoid enhancement mask; and the relaxivity table."""

import numpy as np
import pytest

from neurocontrast.contrast import agents, subtraction as S
from neurocontrast.errors import NeuroContrastError


def _pair(seed=0, sigma=4.0, shape=(24, 48, 48)):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    anatomy = 300 + 120 * np.sin(3 * x) * np.cos(2 * y) + 60 * z
    blob = ((x - 0.3) ** 2 + (y + 0.2) ** 2 + z ** 2) < 0.05
    enh = np.where(blob, 150.0, 0.0)
    pre = anatomy + rng.normal(0, sigma, shape)
    post = 1.3 * anatomy + 25 + enh + rng.normal(0, sigma, shape)
    mask = np.ones(shape, bool)
    return pre, post, mask, blob


def test_radiometric_match_ignores_enhancement():
    pre, post, mask, _ = _pair()
    m = S.radiometric_match(pre, post, mask)
    assert m.scale == pytest.approx(1.3, rel=0.01)
    assert m.offset == pytest.approx(25, abs=4)
    assert m.n_used < mask.sum()  # enhancing voxels were dropped


def test_noise_sigma_from_negative_half():
    pre, post, mask, blob = _pair(sigma=4.0)
    z, match = S.subtraction(pre, post, mask)
    # subtraction noise: sqrt(4² (1.3² + 1)) with the matched pre scaled by 1.3
    expected = 4.0 * np.sqrt(1.3 ** 2 + 1)
    assert S.noise_sigma(z, mask) == pytest.approx(expected, rel=0.05)
    assert z[blob].mean() == pytest.approx(150, rel=0.05)


def test_harmonise_makes_noise_homogeneous_and_keeps_enhancement():
    rng = np.random.default_rng(1)
    shape = (20, 64, 64)
    ramp = np.linspace(1.0, 3.0, shape[2])[None, None, :]
    z = rng.normal(0, 1, shape) * 5.0 * ramp + 3.0  # spatially varying noise and an offset
    blob = np.zeros(shape, bool)
    blob[8:12, 28:36, 28:36] = True
    z[blob] += 80.0
    mask = np.ones(shape, bool)
    before = z[:, :, 12:20].std() / z[:, :, 44:52].std()
    zh, info = S.harmonise(z, mask, window_mm=6.0)
    left, right = zh[:, :, 12:20], zh[:, :, 44:52]
    assert before < 0.6
    assert left.std() / right.std() == pytest.approx(1.0, abs=0.12)
    assert abs(np.median(zh[~blob])) < 0.1 * info["sigma"]
    assert zh[blob].mean() > 5 * info["sigma_out"]


def test_enhancement_mask_sigmoid():
    sigma = 2.0
    z = np.array([-10.0, 0.0, 3 * sigma, 10 * sigma]).reshape(1, 1, 4)
    p = S.enhancement_mask(z, sigma, threshold=3.0, width=0.5)
    assert p[0, 0, 2] == pytest.approx(0.5)
    assert np.all(np.diff(p.ravel()) > 0)
    assert p[0, 0, 0] < 1e-3 and p[0, 0, 3] > 0.999
    y = S.contrast_signal(z, p)
    assert y[0, 0, 3] == pytest.approx(10 * sigma, rel=1e-3)


def test_differential_inputs_end_to_end():
    pre, post, mask, blob = _pair()
    out = S.differential_inputs(pre, post, mask, window_mm=10.0)
    assert set(out) >= {"match", "z_raw", "sigma", "z", "p", "y", "sigma_out"}
    assert out["p"][blob].mean() > 0.9
    assert out["p"][~blob].mean() < 0.05
    assert out["y"][blob].mean() == pytest.approx(150, rel=0.15)


@pytest.mark.parametrize("case", ["shape", "nan", "tiny_mask", "2d"])
def test_bad_input(case):
    pre, post, mask, _ = _pair(shape=(8, 16, 16))
    if case == "shape":
        post = post[:, :, :8]
    elif case == "nan":
        pre[0, 0, 0] = np.nan
    elif case == "tiny_mask":
        mask = np.zeros_like(mask)
        mask[0, 0, :5] = True
    else:
        pre, post, mask = pre[0], post[0], mask[0]
    with pytest.raises(NeuroContrastError):
        S.radiometric_match(pre, post, mask)


def test_relaxivity_table():
    assert agents.relaxivity("gadobutrol", 3.0) == 5.0
    assert agents.relaxivity("Gadovist", 1.5) == 5.2
    assert agents.relaxivity("DOTAREM", 1.5) == 3.6
    assert agents.relaxivity("gadopiclenol", 3) == 11.6
    for a in agents.AGENTS.values():
        assert a.r1_1p5t > 0 and a.r1_3t > 0 and a.source
        assert a.r1_3t <= a.r1_1p5t  # r1 falls with field strength for small Gd chelates
    with pytest.raises(NeuroContrastError, match="unknown contrast agent"):
        agents.relaxivity("water", 3)
    with pytest.raises(NeuroContrastError, match="not tabulated"):
        agents.relaxivity("gadobutrol", 7.0)
