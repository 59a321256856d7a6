"""The anatomical DRO (ICBM 2009a GM/WM from the nilearn wheel): anatomy, graded territory, and a truth the
classic pipeline recovers when there is no noise (the forward model is the one the deconvolution inverts)."""

import numpy as np
import pytest

from neurocontrast.training.dro import anatomical_dro, gm_wm_masks


@pytest.fixture(scope="module")
def dro():
    return anatomical_dro(snr=np.inf, seed=0, n_slices=2)


def test_anatomy_and_truth(dro):
    gm, wm = gm_wm_masks(dro)
    assert dro.signal.shape[1] == 2 and dro.brain_mask.sum() > 4000
    assert gm.sum() > 300 and wm.sum() > 300 and not (gm & wm).any()
    ratio = dro.truth["cbf"][gm].mean() / dro.truth["cbf"][wm].mean()
    assert 2.4 < ratio < 3.5, ratio
    terr = dro.truth["territory"] > 0
    tmax = dro.truth["tmax"][terr & dro.brain_mask]
    assert tmax.min() < 3.0 and tmax.max() > 9.0  # a graded penumbra, not three steps
    assert dro.aif_mask.sum() == 8 and dro.vof_mask.sum() == 4 and not (dro.vof_mask & dro.brain_mask).any()
    # the territory is in one hemisphere only (LPS +x: the patient's left)
    xs = np.nonzero(terr.any(axis=(0, 1)))[0]
    assert xs.min() > dro.signal.shape[3] // 2 - 2


def test_osvd_recovers_cbv_without_noise(dro):
    from neurocontrast.perfusion.pipeline import run_perfusion

    res = run_perfusion(dro.to_dsc(), dro.aif_mask, dro.vof_mask, dro.brain_mask, method="osvd",
                        smoothing_fwhm_mm=0)
    brain = dro.brain_mask & ~dro.aif_mask
    ratio = np.median(res.maps["cbv"][brain] / dro.truth["cbv"][brain])
    assert abs(ratio - 1.0) < 0.1, ratio
    assert res.report["parameters"]["vof_rescaling_factor"] > 1.2  # the partial-volume AIF is corrected
