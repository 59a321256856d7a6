"""Low-dose simulation (Pinetz: noise preserved): synthetic truth, the real brats20-186 pair, bad input."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast.contrast import lowdose as L
from neurocontrast.contrast.subtraction import noise_sigma
from neurocontrast.errors import NeuroContrastError


def _phantom(seed=0, sigma=5.0, shape=(24, 64, 64)):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    anatomy = 400 + 150 * np.sin(3 * x) * np.cos(2 * y) + 50 * z
    blob = ((x - 0.3) ** 2 + (y + 0.2) ** 2 + z ** 2) < 0.06
    enh = np.where(blob, 200.0, 0.0)
    pre = anatomy + rng.normal(0, sigma, shape)
    post = 1.2 * anatomy + 30 + enh + rng.normal(0, sigma, shape)
    return pre, post, anatomy, blob


def test_lowdose_enhancement_scales_with_dose_and_noise_is_preserved():
    sigma = 5.0
    pre, post, anatomy, blob = _phantom(sigma=sigma)
    res = L.simulate_lowdose(pre, post, dose=0.25, brain_mask=np.ones(pre.shape, bool), seed=3)
    assert res.scale == pytest.approx(1.2, rel=0.01) and res.offset == pytest.approx(30, abs=5)
    # acquisition noise of one real image, estimated from the subtraction noise
    assert res.sigma_acquisition == pytest.approx(sigma * np.sqrt((1.2 ** 2 + 1) / 2), rel=0.05)
    expected = 1.2 * anatomy + 30 + 0.25 * np.where(blob, 200.0, 0.0)
    residual = res.image - expected
    # total noise of the simulated image = that of one acquisition (σ_a, the model's estimate: pre and post
    # noise pooled, here 5 · sqrt((1.2² + 1) / 2) = 5.5 in post units), not smaller
    assert residual[~blob].std() == pytest.approx(res.sigma_acquisition, rel=0.08)
    # without the added noise the image would be too smooth: (1-d)² 1.2² σ² + d² σ²
    too_smooth = sigma * np.sqrt(0.75 ** 2 * 1.2 ** 2 + 0.25 ** 2)
    assert residual[~blob].std() > 1.15 * too_smooth
    lesion_gain = (res.image - (res.scale * pre + res.offset))[blob].mean()
    assert lesion_gain == pytest.approx(0.25 * 200, rel=0.08)


def test_lowdose_full_dose_is_post_and_seed_reproducible():
    pre, post, _, _ = _phantom()
    full = L.simulate_lowdose(pre, post, dose=1.0)
    np.testing.assert_allclose(full.image, post, rtol=1e-5, atol=1e-2)
    assert full.sigma_added == 0
    a = L.simulate_lowdose(pre, post, 0.1, seed=7).image
    b = L.simulate_lowdose(pre, post, 0.1, seed=7).image
    c = L.simulate_lowdose(pre, post, 0.1, seed=8).image
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0


@pytest.mark.parametrize("dose", [0, -0.25, 1.5, float("nan"), "abc", None])
def test_bad_dose(dose):
    pre, post, _, _ = _phantom(shape=(8, 16, 16))
    with pytest.raises(NeuroContrastError, match="dose"):
        L.simulate_lowdose(pre, post, dose)


def test_bad_arrays():
    pre, post, _, _ = _phantom(shape=(8, 16, 16))
    with pytest.raises(NeuroContrastError, match="differs"):
        L.simulate_lowdose(pre, post[:, :8], 0.25)
    with pytest.raises(NeuroContrastError, match="3D"):
        L.simulate_lowdose(pre[0], post[0], 0.25)
    bad = pre.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(NeuroContrastError, match="NaN"):
        L.simulate_lowdose(bad, post, 0.25)


def test_lowdose_files_real_pair(shared_data, tmp_path):
    case = shared_data("brain/brats20-186")
    out = tmp_path / "low.nii.gz"
    info = L.simulate_lowdose_files(case / "t1.nii.gz", case / "t1c.nii.gz", 0.25, out, seed=1)
    low = sitk.ReadImage(str(out))
    post = sitk.ReadImage(str(case / "t1c.nii.gz"))
    assert low.GetSize() == post.GetSize() and low.GetOrigin() == post.GetOrigin()
    assert low.GetDirection() == post.GetDirection() and low.GetSpacing() == post.GetSpacing()
    side = json.loads((tmp_path / "low.json").read_text(encoding="utf-8"))
    assert side["dose"] == 0.25 and side["pre_registered_to_post"] is False and side["sigma_added"] > 0
    p = sitk.GetArrayFromImage(post).astype(float)
    pre = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t1.nii.gz"))).astype(float)
    lo = sitk.GetArrayFromImage(low).astype(float)
    brain = p != 0
    pre_m = info["scale"] * pre + info["offset"]
    z_full, z_low = p - pre_m, lo - pre_m
    enhancing = brain & (z_full > 6 * info["sigma_subtraction"])
    assert enhancing.sum() > 100
    assert z_low[enhancing].mean() / z_full[enhancing].mean() == pytest.approx(0.25, abs=0.03)
    # the low-dose image is a real-looking acquisition: its noise against the matched pre is not smoothed away
    assert noise_sigma(z_low, brain) > 0.6 * info["sigma_acquisition"]


def test_lowdose_files_bad_input(shared_data, tmp_path):
    case = shared_data("brain/brats20-186")
    with pytest.raises(NeuroContrastError, match="dose"):
        L.simulate_lowdose_files(case / "t1.nii.gz", case / "t1c.nii.gz", 2.0, tmp_path / "x.nii.gz")
    with pytest.raises(NeuroContrastError, match="not found"):
        L.simulate_lowdose_files(tmp_path / "missing.nii.gz", case / "t1c.nii.gz", 0.25, tmp_path / "x.nii.gz")
    img2d = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32))
    sitk.WriteImage(img2d, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(NeuroContrastError, match="2D"):
        L.simulate_lowdose_files(tmp_path / "flat.nii.gz", case / "t1c.nii.gz", 0.25, tmp_path / "x.nii.gz")
    far = sitk.ReadImage(str(case / "t1.nii.gz"))
    far.SetOrigin((5000.0, 0.0, 0.0))
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    with pytest.raises(NeuroContrastError, match="mismatched"):
        L.simulate_lowdose_files(tmp_path / "far.nii.gz", case / "t1c.nii.gz", 0.25, tmp_path / "x.nii.gz")
    nan = sitk.GetArrayFromImage(far).astype(np.float32)
    nan[50, 100, 100] = np.nan
    nan_img = sitk.GetImageFromArray(nan)
    nan_img.CopyInformation(sitk.ReadImage(str(case / "t1c.nii.gz")))
    sitk.WriteImage(nan_img, str(tmp_path / "nan.mha"))
    with pytest.raises(NeuroContrastError, match="NaN"):
        L.simulate_lowdose_files(tmp_path / "nan.mha", case / "t1c.nii.gz", 0.25, tmp_path / "x.nii.gz")
    sitk.WriteImage(nan_img, str(tmp_path / "nan.nii.gz"))  # ITK would read these NaNs back as 0
    with pytest.raises(NeuroContrastError, match="NaN"):
        L.simulate_lowdose_files(tmp_path / "nan.nii.gz", case / "t1c.nii.gz", 0.25, tmp_path / "x.nii.gz")


def test_given_acquisition_noise_overrides_the_estimate():
    pre, post, anatomy, blob = _phantom(sigma=5.0)
    res = L.simulate_lowdose(pre, post, 0.5, np.ones(pre.shape, bool), seed=0, sigma_acquisition=2.0)
    assert res.sigma_acquisition == 2.0 and res.sigma_added == pytest.approx(2.0 * np.sqrt(0.5))
    none = L.simulate_lowdose(pre, post, 0.5, seed=0, sigma_acquisition=0.0)
    assert none.sigma_added == 0.0
    with pytest.raises(NeuroContrastError, match="sigma_acquisition"):
        L.simulate_lowdose(pre, post, 0.5, sigma_acquisition=-1.0)
