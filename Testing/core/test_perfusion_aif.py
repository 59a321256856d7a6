"""AIF/VOF curves, quality figures, automatic AIF (Mouridsen 2006) and VOF rescaling (Cao eq. 8)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import perfusion_synthetic as synth  # noqa: E402

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.perfusion.aif import (aif_quality, curve_from_mask, curve_from_points, rescale_aif_to_vof,
                                         suggest_aif)

TR = 1.0
T = 60


def _vessels_and_tissue(seed=0):
    """(T, 4, 24, 24) ΔR2* with 12 arterial voxels (4 of them 50 % partial volume), 12 venous voxels
    (bolus 5 s later and dispersed, same area) and tissue of varying flow, all with noise."""
    rng = np.random.default_rng(seed)
    fine = np.arange(0, T * TR + 40, 0.01)
    t = np.arange(T) * TR
    art = synth.gamma_variate(t, t0=12.0, peak=40.0)
    ven_f = np.convolve(synth.gamma_variate(fine, t0=17.0, peak=40.0), np.exp(-fine / 3.0))[: fine.size] * 0.01
    ven_f *= np.trapezoid(art) / np.trapezoid(np.interp(t, fine, ven_f))
    ven = np.interp(t, fine, ven_f)
    data = np.empty((T, 4, 24, 24))
    flows = rng.uniform(15, 70, size=(4, 24, 24))
    for cbf in np.unique(np.round(flows, -1)):
        _, tis = synth.curves(n_frames=T, tr_s=TR, cbf=cbf, mtt=4.0, delays=(rng.uniform(0, 2),))
        data[:, np.round(flows, -1) == cbf] = tis
    truth_art = np.zeros((4, 24, 24), bool)
    truth_ven = np.zeros((4, 24, 24), bool)
    art_idx = [(z, 6, x) for z in range(4) for x in (5, 6, 7)]
    ven_idx = [(z, 18, x) for z in range(4) for x in (15, 16, 17)]
    for i, (z, y, x) in enumerate(art_idx):
        data[:, z, y, x] = art * (0.5 if i % 3 == 0 else 1.0)
        truth_art[z, y, x] = True
    for z, y, x in ven_idx:
        data[:, z, y, x] = ven
        truth_ven[z, y, x] = True
    data += rng.normal(0, 0.4, data.shape)
    return data.astype(np.float32), art, ven, truth_art, truth_ven


def test_curves_from_mask_and_points():
    data, art, ven, truth_art, truth_ven = _vessels_and_tissue()
    full = truth_art.copy()
    full[:, 6, 5] = False                       # the 50 % partial-volume column
    np.testing.assert_allclose(curve_from_mask(data, full), art, atol=0.5)
    pts = [(0, 18, 15), (1, 18, 16.2), (3, 17.6, 17)]
    np.testing.assert_allclose(curve_from_points(data, pts), ven, atol=0.8)
    assert curve_from_points(data, np.array([2, 18, 16])).shape == (T,)


def test_curve_errors():
    data, _, _, truth_art, _ = _vessels_and_tissue()
    with pytest.raises(NeuroContrastError, match="AIF mask is empty"):
        curve_from_mask(data, np.zeros(truth_art.shape, bool))
    with pytest.raises(GeometryError, match="AIF mask"):
        curve_from_mask(data, truth_art[:, :, :20])
    brain = np.zeros(truth_art.shape, bool)
    brain[:, 12:, :] = True
    with pytest.raises(NeuroContrastError, match="outside the brain"):
        curve_from_mask(data, truth_art, within=brain)
    assert curve_from_mask(data, truth_art, within=np.ones_like(brain)).shape == (T,)
    with pytest.raises(NeuroContrastError, match="outside the volume"):
        curve_from_points(data, [(0, 0, 0), (4, 0, 0)])
    with pytest.raises(NeuroContrastError, match="no points"):
        curve_from_points(data, [])
    with pytest.raises(NeuroContrastError, match="4D"):
        curve_from_mask(data[0], truth_art[0])


def test_aif_quality_figures():
    fine = np.arange(0, 60, 0.001)
    g = synth.gamma_variate(fine, t0=12.0, peak=40.0)
    above = fine[g >= 20.0]
    true_fwhm = above[-1] - above[0]
    art = synth.gamma_variate(np.arange(T) * TR, t0=12.0, peak=40.0)
    q = aif_quality(art, TR)
    assert q["peak"] == pytest.approx(40.0, rel=0.02)
    assert q["time_to_peak_s"] == pytest.approx(16.5, abs=TR)          # t0 + αβ
    assert q["fwhm_s"] == pytest.approx(true_fwhm, abs=0.3)
    assert 12.0 <= q["arrival_s"] <= 13.5
    assert q["area"] == pytest.approx(np.trapezoid(art, dx=TR))
    assert q["first_moment_s"] == pytest.approx(12.0 + 4 * 1.5, abs=0.3)   # t0 + (α+1)β
    assert q["warnings"] == []
    noisy = art + np.random.default_rng(0).normal(0, 2.0, T)
    qn = aif_quality(noisy, TR)
    assert 10 < qn["snr"] < 40                                         # 40 / 2 = 20
    assert qn["noise_sd"] == pytest.approx(2.0, rel=0.35)
    qv = aif_quality(art + np.random.default_rng(0).normal(0, 8.0, T), TR)
    assert any("SNR" in w for w in qv["warnings"])


def test_aif_quality_errors():
    with pytest.raises(NeuroContrastError):
        aif_quality(np.zeros((T, 2)), TR)
    with pytest.raises(NeuroContrastError, match="frames"):
        aif_quality(np.ones(5), TR)
    with pytest.raises(NeuroContrastError, match="tr_s"):
        aif_quality(synth.gamma_variate(np.arange(T)), -1)


def test_suggest_aif_finds_arteries_not_veins():
    data, art, ven, truth_art, truth_ven = _vessels_and_tissue()
    mask = suggest_aif(data, TR, n_voxels=6, seed=0)
    assert mask.shape == truth_art.shape and mask.dtype == bool
    assert mask.sum() == 6
    assert (mask & truth_art).sum() == 6                 # all arterial ...
    assert not (mask & truth_ven).any()                  # ... none venous
    full = truth_art.copy()
    full[:, 6, 5] = False
    assert (mask & full).sum() == 6                      # and the full-volume ones (highest peaks)
    # reproducible, and limited to a brain mask
    np.testing.assert_array_equal(mask, suggest_aif(data, TR, n_voxels=6, seed=0))
    brain = np.ones(truth_art.shape, bool)
    brain[:2] = False
    m2 = suggest_aif(data, TR, brain_mask=brain, n_voxels=4)
    assert m2.sum() == 4 and not m2[:2].any() and (m2 & truth_art).sum() == 4


def test_suggest_aif_errors():
    data, *_ = _vessels_and_tissue()
    with pytest.raises(NeuroContrastError, match="bolus"):
        suggest_aif(-np.abs(data), TR)
    with pytest.raises(GeometryError):
        suggest_aif(data, TR, brain_mask=np.ones((4, 24, 23), bool))
    with pytest.raises(NeuroContrastError, match="n_voxels"):
        suggest_aif(data, TR, n_voxels=0)


def test_rescale_aif_to_vof():
    t = np.arange(T) * TR
    art = synth.gamma_variate(t, t0=12.0, peak=40.0)
    vof = synth.gamma_variate(t, t0=17.0, beta=2.0, peak=30.0)
    pv = 0.55 * art                                          # partial-volumed arterial curve
    scaled, factor = rescale_aif_to_vof(pv, vof, TR)
    assert factor == pytest.approx(np.trapezoid(vof) / np.trapezoid(pv))
    assert np.trapezoid(scaled, dx=TR) == pytest.approx(np.trapezoid(vof, dx=TR))
    np.testing.assert_allclose(scaled, pv * factor)
    with pytest.raises(NeuroContrastError, match="VOF area"):
        rescale_aif_to_vof(art, -vof, TR)
    with pytest.raises(NeuroContrastError, match="AIF area"):
        rescale_aif_to_vof(np.zeros(T), vof, TR)
    with pytest.raises(NeuroContrastError, match="same length"):
        rescale_aif_to_vof(art, vof[:-1], TR)
    with pytest.raises(NeuroContrastError, match="tr_s"):
        rescale_aif_to_vof(art, vof, 0)


def test_suggest_aif_on_real_moyamoya_slice(shared_data):
    """On the real convexity slice the suggested AIF peaks before the tissue and well above it."""
    from neurocontrast.io import read_dsc
    from neurocontrast.perfusion.signal import delta_r2star, detect_baseline

    dsc = read_dsc(shared_data("dsc/moyamoya/convexity_dsc.nii.gz"), te_s=0.03)   # TE not in the source
    start, stop = detect_baseline(dsc.signal, dsc.tr_s)
    dr2 = delta_r2star(dsc.signal, dsc.te_s, (start, stop))[start:]
    s0 = dsc.signal[start:stop].mean(axis=0)
    brain = s0 > 0.3 * np.percentile(s0, 99)
    mask = suggest_aif(dr2, dsc.tr_s, brain_mask=brain, n_voxels=10)
    assert mask.sum() == 10 and not (mask & ~brain).any()
    q_aif = aif_quality(curve_from_mask(dr2, mask), dsc.tr_s)
    q_tis = aif_quality(curve_from_mask(dr2, brain), dsc.tr_s)
    assert q_aif["time_to_peak_s"] < q_tis["time_to_peak_s"]
    assert q_aif["arrival_s"] <= q_tis["arrival_s"]
    assert q_aif["peak"] > 2 * q_tis["peak"]
