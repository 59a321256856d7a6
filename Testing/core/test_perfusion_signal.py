"""ΔR2* conversion, automatic baseline and bolus-arrival detection (issue 2 §2)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import perfusion_synthetic as synth  # noqa: E402

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.signal import bolus_arrival, delta_r2star, detect_baseline


@pytest.mark.parametrize("n_nss", [0, 1, 3])
@pytest.mark.parametrize("snr", [None, 20.0])
def test_baseline_skips_non_steady_state_and_stops_before_bolus(n_nss, snr):
    d = synth.series(n_nss=n_nss, snr=snr, seed=1)
    start, stop = detect_baseline(d["signal"], d["tr_s"])
    assert start == n_nss
    onset = 20.0 / d["tr_s"]                      # the bolus leaves the AIF at t = 20 s (frame 13.3)
    assert 12 <= stop <= onset + 3
    # the baseline frames carry (almost) no contrast: < 3 % of the tissue peak
    assert d["tissue"][:stop].max() < 0.03 * d["tissue"].max()


def test_baseline_follows_the_bolus_not_a_fixed_window():
    early = detect_baseline(synth.series(bolus_t0=12.0)["signal"], 1.5)
    late = detect_baseline(synth.series(bolus_t0=36.0)["signal"], 1.5)
    assert late[1] - early[1] in (15, 16, 17)     # 24 s later = 16 frames of 1.5 s
    assert early[0] == late[0] == 2


def test_delta_r2star_matches_truth():
    d = synth.series(n_nss=2, snr=None)
    dr2 = delta_r2star(d["signal"], d["te_s"], tr_s=d["tr_s"])
    assert dr2.dtype == np.float32 and dr2.shape == d["signal"].shape
    tissue = dr2[2:, 0, 0, 0]                     # after the non-steady-state frames
    np.testing.assert_allclose(tissue, d["tissue"][2:], atol=2e-3 * d["tissue"].max() + 1e-4)
    np.testing.assert_allclose(dr2[2:, 0, 6, 6], d["aif"][2:], rtol=1e-3, atol=1e-3)
    # explicit baseline gives the same
    dr2b = delta_r2star(d["signal"], d["te_s"], baseline=detect_baseline(d["signal"], d["tr_s"]))
    np.testing.assert_allclose(dr2, dr2b)


def test_delta_r2star_background_and_zero_signal():
    sig = np.full((20, 1, 1, 3), 100.0, np.float32)
    sig[:, 0, 0, 0] = 0.0                          # background: S0 = 0 → ΔR2* = 0
    sig[12, 0, 0, 1] = 0.0                         # one zero sample inside the object
    out = delta_r2star(sig, 0.03, baseline=(0, 10))
    assert np.all(out[:, 0, 0, 0] == 0)
    assert np.isfinite(out).all()
    assert out[12, 0, 0, 1] == pytest.approx(-np.log(1e-3) / 0.03, rel=1e-5)


def test_bolus_arrival_of_aif_tissue_and_signal():
    aif, tissue = synth.curves(n_frames=60, tr_s=1.0, delays=(0.0, 4.0), aif_t0=12.0)
    t_aif = bolus_arrival(aif, 1.0)
    assert 12.0 <= t_aif <= 13.0
    t_tis = bolus_arrival(tissue[:, 1], 1.0)
    assert 15.0 <= t_tis <= 18.5                   # 4 s delay, slower upslope of tissue
    signal = 500.0 * np.exp(-aif * 0.03)           # a falling signal curve is recognised
    assert bolus_arrival(signal, 1.0) == pytest.approx(t_aif, abs=0.5)


def test_errors():
    d = synth.series()
    for te in (0.0, -0.03, None, float("nan")):
        with pytest.raises(NeuroContrastError, match="TE"):
            delta_r2star(d["signal"], te)
    with pytest.raises(NeuroContrastError, match="ms"):
        delta_r2star(d["signal"], 30.0)
    bad = d["signal"].copy()
    bad[5, 0, 0, 0] = np.nan
    with pytest.raises(NeuroContrastError, match="NaN"):
        detect_baseline(bad, 1.5)
    with pytest.raises(NeuroContrastError, match="NaN"):
        delta_r2star(bad, 0.03)
    with pytest.raises(NeuroContrastError, match="frames"):
        detect_baseline(d["signal"][:9], 1.5)
    with pytest.raises(NeuroContrastError, match="baseline"):
        delta_r2star(d["signal"], 0.03, baseline=(5, 5))
    with pytest.raises(NeuroContrastError, match="tr_s"):
        detect_baseline(d["signal"], -1.0)
    # bolus already in the first frames: no baseline
    with pytest.raises(NeuroContrastError, match="baseline|pre-bolus"):
        detect_baseline(synth.series(bolus_t0=-2.0, n_nss=0)["signal"], 1.5)


def test_real_moyamoya_baseline(shared_data):
    from neurocontrast.io import read_dsc

    for name in ("convexity", "cerebellum"):
        dsc = read_dsc(shared_data(f"dsc/moyamoya/{name}_dsc.nii.gz"))
        start, stop = detect_baseline(dsc.signal, dsc.tr_s)
        # README: frame 0 is non-steady-state; the bolus arrives around frames 11-14
        assert 1 <= start <= 3
        assert 8 <= stop <= 12
        dr2 = delta_r2star(dsc.signal, 0.03, (start, stop))
        mean = dr2.reshape(dsc.n_frames, -1)[:, dsc.signal.mean(0).ravel() > 300].mean(1)
        assert mean[start:stop].std() < 0.1 * mean.max()
        assert 11 <= int(np.argmax(mean)) <= 16
