"""CBF, CBV, MTT, Tmax, TTP maps with units and constants; relative maps (issue 2 §2)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import perfusion_synthetic as synth  # noqa: E402

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.perfusion.deconvolution import METHODS
from neurocontrast.perfusion.maps import PerfusionConstants, PerfusionMaps, compute_maps, relative_to_reference

TR = 1.0


def _two_territories(noise=0.0, seed=0):
    """(T, 2, 6, 8) ΔR2*: x < 4 normal (CBF 60, MTT 4 s), x >= 4 hypoperfused (CBF 20, MTT 8 s, delay 4 s)."""
    aif, normal = synth.curves(n_frames=60, tr_s=TR, cbf=60.0, mtt=4.0)
    _, slow = synth.curves(n_frames=60, tr_s=TR, cbf=20.0, mtt=8.0, delays=(4.0,))
    data = np.empty((60, 2, 6, 8), np.float32)
    data[..., :4] = normal[:, 0, None, None, None]
    data[..., 4:] = slow[:, 0, None, None, None]
    if noise:
        data += np.random.default_rng(seed).normal(0, noise * normal.max(), data.shape).astype(np.float32)
    return data, aif


def test_constants():
    c = PerfusionConstants()
    assert c.kh_over_rho == pytest.approx(0.55 / 0.75 / 1.04)
    assert round(c.kh_over_rho, 3) == 0.705
    assert c.as_dict()["hematocrit_large"] == 0.45 and "kh_over_rho" in c.as_dict()
    assert PerfusionConstants(0.0, 0.0, 1.0).kh_over_rho == 1.0
    for bad in (dict(hematocrit_large=1.0), dict(hematocrit_small=-0.1), dict(density=0.0)):
        with pytest.raises(NeuroContrastError):
            PerfusionConstants(**bad)


def test_maps_units_and_territories():
    data, aif = _two_territories()
    maps = compute_maps(data, aif, TR, method="osvd")
    assert isinstance(maps, PerfusionMaps)
    d = maps.as_dict()
    assert list(d) == ["cbf", "cbv", "mtt", "tmax", "ttp"]
    assert all(v.shape == (2, 6, 8) and v.dtype == np.float32 for v in d.values())
    khr = PerfusionConstants().kh_over_rho
    # CBV = CBF·MTT/60 (mL/100 mL) × kH/ρ → mL/100 g; it does not depend on deconvolution
    np.testing.assert_allclose(maps.cbv[..., 0], 60 * 4 / 60 * khr, rtol=0.02)
    np.testing.assert_allclose(maps.cbv[..., 7], 20 * 8 / 60 * khr, rtol=0.03)
    # CBF within 20 % of kH/ρ × truth (oSVD underestimates the sharp exponential peak a little)
    assert maps.cbf[0, 0, 0] == pytest.approx(60 * khr, rel=0.2)
    assert maps.cbf[0, 0, 7] == pytest.approx(20 * khr, rel=0.2)
    np.testing.assert_allclose(maps.mtt, maps.cbv / maps.cbf * 60, rtol=1e-5)
    # delay 4 s: Tmax and TTP later by ~4 s (± 1 frame)
    assert maps.tmax[0, 0, 7] - maps.tmax[0, 0, 0] == pytest.approx(4.0, abs=TR)
    assert maps.ttp[0, 0, 7] - maps.ttp[0, 0, 0] >= 4.0 - TR
    # TTP is the time of the tissue ΔR2* peak relative to the first frame
    assert maps.ttp[0, 0, 0] == pytest.approx(np.argmax(data[:, 0, 0, 0]) * TR)


def test_constants_scale_cbf_and_cbv_but_not_mtt():
    data, aif = _two_territories()
    a = compute_maps(data, aif, TR, method="csvd")
    b = compute_maps(data, aif, TR, method="csvd", constants=PerfusionConstants(0.0, 0.0, 1.0))
    khr = PerfusionConstants().kh_over_rho
    np.testing.assert_allclose(a.cbf, b.cbf * khr, rtol=1e-5)
    np.testing.assert_allclose(a.cbv, b.cbv * khr, rtol=1e-5)
    np.testing.assert_allclose(a.mtt, b.mtt, rtol=1e-5)
    np.testing.assert_array_equal(a.tmax, b.tmax)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_plausible_maps(method):
    data, aif = _two_territories(noise=0.02)
    maps = compute_maps(data, aif, TR, method=method)
    for v in maps.as_dict().values():
        assert np.isfinite(v).all()
    assert np.median(maps.cbf[..., :4]) > 2 * np.median(maps.cbf[..., 4:])
    assert np.median(maps.tmax[..., 4:]) > np.median(maps.tmax[..., :4]) + 2


def test_brain_mask_chunks_and_progress():
    data, aif = _two_territories(noise=0.02)
    mask = np.zeros((2, 6, 8), bool)
    mask[:, 1:5, 1:7] = True
    calls = []
    full = compute_maps(data, aif, TR, brain_mask=mask, progress=lambda f, m: calls.append(f))
    small = compute_maps(data, aif, TR, brain_mask=mask, chunk_size=7)
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        np.testing.assert_allclose(getattr(full, name), getattr(small, name), rtol=1e-5, atol=1e-6)
        assert np.all(getattr(full, name)[~mask] == 0)
    assert calls[0] == 0.0 and calls[-1] == 1.0 and calls == sorted(calls)


def test_negative_delay_gives_negative_tmax():
    aif, tissue = synth.curves(n_frames=60, tr_s=TR, cbf=50.0, mtt=5.0, delays=(-4.0, 0.0))
    data = tissue.T[None, None].transpose(3, 0, 1, 2).astype(np.float32)          # (T, 1, 1, 2)
    maps = compute_maps(data, aif, TR, method="osvd")
    assert maps.tmax[0, 0, 0] < 0
    assert maps.tmax[0, 0, 1] - maps.tmax[0, 0, 0] == pytest.approx(4.0, abs=TR)


def test_relative_to_reference():
    cbf = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 1
    ref = np.zeros(cbf.shape, bool)
    ref[0, 0, :3] = True                                  # values 1, 2, 3 → median 2
    rel = relative_to_reference(cbf, ref)
    np.testing.assert_allclose(rel, cbf / 2)
    with pytest.raises(NeuroContrastError, match="empty"):
        relative_to_reference(cbf, np.zeros(cbf.shape, bool))
    with pytest.raises(GeometryError):
        relative_to_reference(cbf, ref[0])
    with pytest.raises(NeuroContrastError, match="median"):
        relative_to_reference(-cbf, ref)


def test_bad_input():
    data, aif = _two_territories()
    with pytest.raises(NeuroContrastError, match="4D"):
        compute_maps(data[:, 0], aif, TR)                       # a 3D array
    with pytest.raises(NeuroContrastError, match="AIF"):
        compute_maps(data, aif[:-1], TR)
    with pytest.raises(GeometryError, match="brain_mask"):
        compute_maps(data, aif, TR, brain_mask=np.ones((2, 6, 7), bool))
    with pytest.raises(NeuroContrastError, match="empty"):
        compute_maps(data, aif, TR, brain_mask=np.zeros((2, 6, 8), bool))
    with pytest.raises(NeuroContrastError, match="method"):
        compute_maps(data, aif, TR, method="bayes")
    with pytest.raises(NeuroContrastError, match="tr_s"):
        compute_maps(data, aif, 0.0)
    bad = data.copy()
    bad[10, 0, 0, 0] = np.nan
    with pytest.raises(NeuroContrastError, match="NaN"):
        compute_maps(bad, aif, TR)
    with pytest.raises(NeuroContrastError, match="bolus|area"):
        compute_maps(data, np.zeros_like(aif), TR)
