"""neurocontrast.metrics against hand-computed values."""

import numpy as np
import pytest

from neurocontrast import metrics
from neurocontrast.errors import NeuroContrastError


def test_psnr_nrmse_match_hand_computation():
    ref = np.linspace(0, 10, 1000).reshape(10, 10, 10)
    pred = ref + 0.5
    assert metrics.psnr(pred, ref) == pytest.approx(10 * np.log10(100 / 0.25))
    assert metrics.nrmse(pred, ref) == pytest.approx(0.05)
    assert metrics.psnr(ref, ref) == float("inf")


def test_ssim_identity_and_degradation_inside_mask():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(12, 12, 12))
    mask = np.zeros(ref.shape, bool)
    mask[2:10, 2:10, 2:10] = True
    assert metrics.ssim(ref, ref, mask) == pytest.approx(1.0)
    assert metrics.ssim(ref + rng.normal(size=ref.shape), ref, mask) < 0.8


def test_correlations_and_overlap():
    x = np.arange(50, dtype=float)
    assert metrics.pearson(2 * x + 1, x) == pytest.approx(1.0)
    assert metrics.spearman(x ** 3, x) == pytest.approx(1.0)
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:5] = True
    b[:4] = True
    assert metrics.dice(a, b) == pytest.approx(2 * 40 / 90)
    assert metrics.iou(a, b) == pytest.approx(40 / 50)


def test_hd95_of_shifted_cubes_is_the_shift():
    a = np.zeros((20, 20, 20), bool)
    a[5:15, 5:15, 5:15] = True
    b = np.roll(a, 2, axis=2)
    assert metrics.hd95(a, b, spacing=(1, 1, 1)) == pytest.approx(2.0, abs=0.01)


def test_roc_and_youden():
    labels = np.r_[np.zeros(50), np.ones(50)].astype(bool)
    scores = np.r_[np.arange(50), np.arange(40, 90)].astype(float)
    auc = metrics.roc_auc(scores, labels)
    assert 0.9 < auc < 1.0
    op = metrics.youden_operating_point(scores, labels)
    assert 40 <= op["threshold"] <= 50
    assert op["sensitivity"] + op["specificity"] - 1 == pytest.approx(op["youden_j"])


def test_cnr_lbr_cep_bone_formulas():
    image = np.full((10, 10), 100.0)
    image[:5] += np.tile([-1.0, 1.0], (5, 5))
    lesion = np.zeros_like(image, bool)
    lesion[7:, 7:] = True
    image[lesion] = 150.0
    brain = np.zeros_like(image, bool)
    brain[:5] = True
    sd = np.std(image[brain], ddof=1)
    assert metrics.cnr(image, lesion, brain) == pytest.approx(50 / sd)
    assert metrics.lbr(image, lesion, brain) == pytest.approx(1.5)
    pre = np.full_like(image, 120.0)
    assert metrics.cep(image, pre, lesion) == pytest.approx(25.0)
    with pytest.raises(NeuroContrastError, match="empty"):
        metrics.cnr(image, np.zeros_like(lesion), brain)


def test_shape_mismatch_is_an_error():
    with pytest.raises(NeuroContrastError, match="shape"):
        metrics.psnr(np.zeros((3, 3)), np.zeros((3, 4)))
