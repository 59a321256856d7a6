"""The digital DSC phantom (issue 2 §2): anatomy, forward model against analytic truth, noise, files."""

import json
import os
import time

import numpy as np
import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.maps import PerfusionConstants
from neurocontrast.perfusion.phantom import (LABELS, PENUMBRA_GRADE_S, TERRITORY_ZONES, arterial_curve, gamma_variate,
                                             generate_phantom, write_phantom)


@pytest.fixture(scope="module")
def clean():
    """Noise-free phantom without the non-steady-state frame: the forward model alone."""
    return generate_phantom(snr=np.inf, nonsteady_frames=0)


@pytest.fixture(scope="module")
def noisy():
    return generate_phantom()


def _delta_r2star(ph):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(ph.signal / ph.signal[0]) / ph.te_s


def test_default_phantom_is_fast_and_well_formed(noisy):
    t0 = time.process_time()  # CPU time: robust to other processes sharing the cores
    ph = generate_phantom(seed=3)
    elapsed = time.process_time() - t0
    assert elapsed < 2.0, f"generating the default phantom took {elapsed:.2f} s of CPU (budget 2 s)"
    assert ph.signal.shape == (60, 8, 64, 64) and ph.signal.dtype == np.float32
    assert ph.tr_s == 1.5 and ph.te_s == 0.03
    assert ph.geometry.shape == (8, 64, 64)
    assert np.isfinite(ph.signal).all() and (ph.signal >= 0).all()
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp", "delay_s", "territory"):
        assert noisy.truth[name].shape == (8, 64, 64)
    assert noisy.truth["aif"].shape == (60,)
    counts = {k: int((noisy.labels == v).sum()) for k, v in LABELS.items()}
    assert counts["grey_matter"] > 3000 and counts["white_matter"] > 5000 and counts["csf"] > 500
    # AIF voxels are arteries inside the brain, VOF voxels the sinus outside it
    assert noisy.aif_mask.sum() >= 8 and (noisy.labels[noisy.aif_mask] == LABELS["artery"]).all()
    assert (noisy.aif_mask & noisy.brain_mask).sum() == noisy.aif_mask.sum()
    assert noisy.vof_mask.sum() >= 8 and not (noisy.vof_mask & noisy.brain_mask).any()
    assert not (noisy.brain_mask & (noisy.labels == LABELS["csf"])).any()
    # partial volume: AIF voxels carry fractions between 0.4 and 1, the VOF core is ~1
    pv = noisy.truth["pv"]
    assert 0.4 <= pv[noisy.aif_mask].min() and pv[noisy.aif_mask].mean() < 0.9
    assert pv[noisy.vof_mask].min() >= 0.9
    # the wedge is in one hemisphere (+x = patient left in LPS) and has all three zones
    zone = noisy.truth["territory"]
    assert set(np.unique(zone)) == {0, 1, 2, 3}
    xs = np.nonzero(zone > 0)[2]
    assert xs.min() > 32
    # the same seed gives the same series, another seed another noise
    again = generate_phantom(seed=3)
    np.testing.assert_array_equal(again.signal, ph.signal)
    assert not np.array_equal(noisy.signal, ph.signal)


def test_truth_maps_follow_the_central_volume_theorem_and_zones(clean):
    t = clean.truth
    b = clean.brain_mask
    np.testing.assert_allclose(t["mtt"][b], 60.0 * t["cbv"][b] / t["cbf"][b], rtol=1e-5)
    normal = b & (t["territory"] == 0) & (clean.labels == LABELS["grey_matter"])
    assert 40 < np.median(t["cbf"][normal]) < 80 and 3 < np.median(t["cbv"][normal]) < 5
    wm = b & (t["territory"] == 0) & (clean.labels == LABELS["white_matter"])
    assert np.median(t["cbf"][wm]) < 0.5 * np.median(t["cbf"][normal])
    for value, (delay, _f, _v) in TERRITORY_ZONES.items():
        sel = t["territory"] == value
        if value == 1:   # the graded rim: true Tmax spread over 2-8 s, crossing the 4 and 6 s thresholds
            lo, hi = PENUMBRA_GRADE_S
            assert lo - 1e-6 <= t["tmax"][sel].min() < lo + 0.5 and hi - 0.5 < t["tmax"][sel].max() <= hi + 1e-6
            counts = np.histogram(t["tmax"][sel], bins=[2, 3, 4, 5, 6, 7, 8.001])[0]
            assert counts.min() >= 0.08 * sel.sum(), counts          # every second of the band is populated
        else:
            np.testing.assert_allclose(t["tmax"][sel], delay, atol=1e-6)
    assert t["tmax"][normal].max() <= 1.5 + 1e-6 and t["tmax"][normal].min() >= 0.5 - 1e-6
    # outside the brain every truth map is 0
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        assert (t[name][~b] == 0).all()


def test_forward_model_gives_back_cbv_and_ttp(clean):
    """CBV = 100·kH/ρ·∫C_t/∫C_a (eq. 4) computed directly from the noise-free signal equals the truth."""
    dr2 = _delta_r2star(clean)
    tissue = clean.brain_mask & (clean.truth["pv"] == 0)  # no partial volume with a vessel
    kh = PerfusionConstants().kh_over_rho
    cbv = 100.0 * kh * np.trapezoid(dr2[:, tissue], axis=0) / np.trapezoid(clean.truth["aif"])
    ratio = cbv / clean.truth["cbv"][tissue]
    assert np.percentile(ratio, 1) > 0.97 and np.percentile(ratio, 99) < 1.03
    # TTP truth (fine grid) lies within one frame of the sampled curve's peak
    ttp = np.argmax(dr2[:, tissue], axis=0) * clean.tr_s
    assert np.abs(ttp - clean.truth["ttp"][tissue]).max() <= clean.tr_s + 1e-6
    # delayed zones peak later
    t = clean.truth
    assert np.median(t["ttp"][t["territory"] == 3]) > np.median(t["ttp"][tissue & (t["territory"] == 0)]) + 8
    # arteries with partial volume: measured area = pv-weighted mix; the sinus carries the full area
    aif_area = np.trapezoid(dr2[:, clean.aif_mask].mean(1))
    vof_area = np.trapezoid(dr2[:, clean.vof_mask].mean(1))
    true_area = np.trapezoid(clean.truth["aif"])
    assert 0.4 < aif_area / true_area < 0.85
    assert abs(vof_area / true_area - 1.0) < 0.02


def test_signal_model_and_rician_noise(noisy):
    # non-steady-state first frame is brighter; baseline S0 of grey matter is 1000
    gm = noisy.labels == LABELS["grey_matter"]
    assert noisy.signal[0][gm].mean() > 1.2 * noisy.signal[2][gm].mean()
    assert abs(noisy.signal[1:8][:, gm].mean() - 1000) < 10
    # noise SD at baseline ≈ 1000/SNR in tissue; background is Rician (mean σ·sqrt(π/2))
    sd = noisy.signal[2:8][:, gm].std(axis=0).mean()
    assert 0.85 * 25 < sd < 1.15 * 25 * 1.0 + 2
    background = noisy.labels == LABELS["background"]
    assert abs(noisy.signal[:, background].mean() / (25 * np.sqrt(np.pi / 2)) - 1) < 0.05
    # the bolus darkens the artery much more than grey matter (ΔR2* → S = S0·exp(−TE·ΔR2*))
    art = noisy.signal[:, noisy.aif_mask].mean(1)
    assert art.min() < 0.35 * art[2] and noisy.signal[:, gm].mean(1).min() > 0.7 * 1000


def test_dispersion_shifts_tmax_analytically():
    ph = generate_phantom(snr=np.inf, dispersion_s=2.0, nonsteady_frames=0)
    zone = ph.truth["territory"]
    sel = zone == 2
    mtt = ph.truth["mtt"][sel]
    beta = 2.0
    expected = TERRITORY_ZONES[2][0] + beta * mtt / (mtt - beta) * np.log(mtt / beta)
    np.testing.assert_allclose(ph.truth["tmax"][sel], expected, rtol=1e-5)
    # numerical check of the peak of h ⊛ R for one MTT on a fine grid
    dt = 0.005
    tt = np.arange(0, 40, dt)
    m = float(mtt[0])
    conv = np.convolve(np.exp(-tt / beta) / beta, np.exp(-tt / m))[: tt.size] * dt
    assert abs(tt[np.argmax(conv)] - (expected[0] - TERRITORY_ZONES[2][0])) < 0.02
    # the dispersed curve keeps its area (CBV unchanged)
    assert np.allclose(ph.truth["cbv"], generate_phantom(snr=np.inf, nonsteady_frames=0).truth["cbv"])


def test_curves():
    t = np.linspace(0, 60, 6001)
    g = gamma_variate(t, 10.0, 3.0, 1.5)
    assert g[t < 10].max() == 0 and abs(g.max() - 1) < 1e-6 and abs(t[np.argmax(g)] - 14.5) < 0.01
    a = arterial_curve(t, 10.0, 100.0, recirculation=0.0)
    assert abs(a.max() - 100) < 1e-6


def test_write_phantom_round_trip(tmp_path, noisy):
    from neurocontrast.io import read_dsc, read_mask, read_volume

    paths = write_phantom(noisy, tmp_path / "ph")
    for key in ("dsc", "sidecar", "aif_mask", "vof_mask", "brain_mask", "labels", "truth_cbf", "truth_cbv",
                "truth_mtt", "truth_tmax", "truth_ttp", "truth_delay_s", "truth_curves"):
        assert os.path.isfile(paths[key]), key
    side = json.loads(open(paths["sidecar"]).read())
    assert side["EchoTime"] == 0.03 and side["RepetitionTime"] == 1.5
    dsc = read_dsc(paths["dsc"])
    assert dsc.te_s == pytest.approx(0.03) and dsc.tr_s == pytest.approx(1.5)
    np.testing.assert_allclose(dsc.signal, noisy.signal, rtol=1e-6)
    assert dsc.geometry.same_as(noisy.geometry)
    np.testing.assert_array_equal(read_mask(paths["aif_mask"], dsc.geometry), noisy.aif_mask)
    tmax, geo = read_volume(paths["truth_tmax"])
    np.testing.assert_allclose(tmax, noisy.truth["tmax"])


@pytest.mark.parametrize("kwargs, word", [
    (dict(shape=(8, 16, 16)), "shape"), (dict(n_frames=5), "n_frames"), (dict(te_s=0.0), "te_s"),
    (dict(snr=-1.0), "snr"), (dict(dispersion_s=-1.0), "dispersion"),
])
def test_bad_arguments(kwargs, word):
    with pytest.raises(NeuroContrastError, match=word):
        generate_phantom(**kwargs)
