"""Physics baseline, intensities that carry enhancement, inputs that belong together, the SSIM convention."""

import time

import numpy as np
import pytest
import SimpleITK as sitk

from neurocontrast import metrics as M
from neurocontrast.cli import main
from neurocontrast.contrast import inputs
from neurocontrast.contrast.physics import dose_extrapolation
from neurocontrast.contrast.preprocessing import standardise_exam, to_native_units
from neurocontrast.contrast.synthetic import make_synthetic_cases
from neurocontrast.contrast.virtual import run_virtual, signed_enhancement
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import read_volume


def _phantom(shape=(32, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(zz ** 2 + yy ** 2 + xx ** 2)
    brain = r < 0.9
    tissue = np.where(r < 0.6, 700.0, 500.0) * brain
    lesion = (np.sqrt((zz - 0.2) ** 2 + yy ** 2 + (xx + 0.3) ** 2) < 0.25) & brain
    return brain, tissue, lesion, rng


def test_physics_baseline_recovers_the_standard_dose_of_a_known_dose():
    """low = pre' + d·z + noise with a known d: pre' + p⊙(low − pre')/d gives back the standard-dose
    enhancement in the lesion (within the noise) and leaves non-enhancing brain at the pre-contrast level."""
    brain, tissue, lesion, rng = _phantom()
    enhancement = 800.0 * lesion  # 4.9 σ of the subtraction noise at d = 0.1 (below ~3 σ the soft mask mutes it)
    pre = tissue + rng.normal(0, 10, tissue.shape) * brain
    full = 1.3 * tissue + 50 * brain + enhancement + rng.normal(0, 10, tissue.shape) * brain
    for dose in (0.1, 0.25, 0.5):
        low = 1.3 * tissue + 50 * brain + dose * enhancement + rng.normal(0, 10, tissue.shape) * brain
        res = dose_extrapolation(pre, low, dose, brain)
        assert res.match.scale == pytest.approx(1.3, rel=0.02)
        restored = res.signal[lesion].mean() / 800.0
        assert restored == pytest.approx(1.0, abs=0.08 if dose > 0.1 else 0.15)
        normal = brain & ~lesion
        assert abs(np.median(res.signal[normal])) < 1.0  # the noise-aware mask keeps the 1/d gain off the noise
        assert M.psnr(res.full, full, brain) > M.psnr(low, full, brain) + 3
    with pytest.raises(NeuroContrastError, match="dose"):
        dose_extrapolation(pre, low, 0.0, brain)
    with pytest.raises(NeuroContrastError, match="shape"):
        dose_extrapolation(pre[:-1], low, 0.25, brain)


def test_standardisation_keeps_the_enhancement_and_inverts_exactly():
    """T1c = 2·T1 + 100 (+ enhancement): after standardisation non-enhancing brain has the T1's values, the
    enhancement keeps its relative size, nothing is clipped and the inverse is exact."""
    brain, tissue, lesion, rng = _phantom(seed=1)
    t1 = tissue + rng.normal(0, 5, tissue.shape) * brain
    t1c = (2 * t1 + 100 + 1500 * lesion) * brain
    out, params = standardise_exam({"t1": t1, "t1c": t1c}, brain)
    normal = brain & ~lesion
    assert np.median(out["t1"][normal]) == pytest.approx(1.0, rel=0.05)
    assert np.abs(out["t1c"][normal] - out["t1"][normal]).mean() < 0.02
    ratio = (out["t1c"][lesion] - out["t1"][lesion]).mean() / np.median(out["t1"][normal])
    assert ratio == pytest.approx(1500 / 2 / np.median(t1[normal]), rel=0.05)
    assert out["t1c"].max() > 2.5  # far above the brain: no cap
    back = to_native_units(out["t1c"], params["t1c"])
    assert np.allclose(back[brain], t1c[brain], rtol=1e-5, atol=1e-2)


def test_signed_enhancement_keeps_darkening_and_drops_the_noise_floor():
    rng = np.random.default_rng(3)
    brain = np.ones((20, 20, 20), bool)
    t1 = np.ones(brain.shape, np.float32)
    img = t1 + rng.normal(0, 0.01, brain.shape).astype(np.float32)
    img[2:5, 2:5, 2:5] += 0.5
    img[10:13, 10:13, 10:13] -= 0.3
    e, sigma = signed_enhancement(img, t1, brain)
    assert 0.005 < sigma < 0.02
    assert (e[2:5, 2:5, 2:5] > 0.4).all() and (e[10:13, 10:13, 10:13] < -0.2).all()
    assert (e[brain] != 0).mean() < 0.06  # the noise is gone; only the two blocks (3.4 % of voxels) remain


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    case = make_synthetic_cases(root, 1, (24, 28, 28), seed=4, sequences=("t1", "flair", "t1c", "t2"))[0]
    t1, geo = read_volume(str(case / "t1.nii.gz"))
    t1c, _ = read_volume(str(case / "t1c.nii.gz"))
    low = np.where(t1 != 0, t1 + 0.25 * (t1c - t1), 0).astype(np.float32)
    sitk.WriteImage(geo.to_image(low), str(case / "t1c_low.nii.gz"))
    return case


def test_missing_file_is_reported_before_any_work_and_unused_input_is_reported(synthetic, tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(NeuroContrastError, match=r"--flair .*no such file"):
        run_virtual({"t1": synthetic / "t1.nii.gz", "flair": tmp_path / "absent.nii.gz",
                     "t1c_low": synthetic / "t1c_low.nii.gz"}, method="physics", dose=0.25, preprocessed=True)
    assert time.perf_counter() - t0 < 1.0
    res = run_virtual({"t1": synthetic / "t1.nii.gz", "flair": synthetic / "flair.nii.gz", "t2": synthetic / "t2.nii.gz",
                       "t1c_low": synthetic / "t1c_low.nii.gz"}, method="physics", dose=0.25, preprocessed=True)
    assert res.info["unused_inputs"] == ["flair", "t2"]
    assert main(["contrast", "virtual", "--t1", str(synthetic / "t1.nii.gz"), "--t2", str(synthetic / "t2.nii.gz"),
                 "--t1c-low", str(synthetic / "t1c_low.nii.gz"), "--method", "physics", "--dose", "0.25",
                 "--preprocessed", "--out", str(tmp_path / "phys")]) == 0
    assert "not used by this model: --t2" in capsys.readouterr().out
    with pytest.raises(NeuroContrastError, match="--dose"):
        run_virtual({"t1": synthetic / "t1.nii.gz", "t1c_low": synthetic / "t1c_low.nii.gz"}, method="physics",
                    preprocessed=True)
    # the physics output restores the enhancement the low dose lost, in the input's units
    virtual = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "phys" / "virtual.nii.gz")))
    t1 = read_volume(str(synthetic / "t1.nii.gz"))[0]
    t1c = read_volume(str(synthetic / "t1c.nii.gz"))[0]
    lesion = read_volume(str(synthetic / "lesion_mask.nii.gz"))[0] > 0
    restored = (virtual[lesion] - t1[lesion]).mean() / (t1c[lesion] - t1[lesion]).mean()
    assert restored == pytest.approx(1.0, abs=0.1)


def test_ssim_convention_is_one_across_metrics_and_evaluate(synthetic, tmp_path):
    """`evaluate contrast` reports exactly neurocontrast.metrics.ssim of the images as given (no per-image
    re-standardisation): a darkened copy of the reference is penalised, which a per-image z-score would hide."""
    ref, geo = read_volume(str(synthetic / "t1c.nii.gz"))
    low, _ = read_volume(str(synthetic / "t1c_low.nii.gz"))
    dark = (0.7 * ref).astype(np.float32)
    sitk.WriteImage(geo.to_image(dark), str(tmp_path / "dark.nii.gz"))
    result = main(["evaluate", "contrast", "--low", str(synthetic / "t1c_low.nii.gz"), "--virtual",
                   str(tmp_path / "dark.nii.gz"), "--reference", str(synthetic / "t1c.nii.gz"), "--pre",
                   str(synthetic / "t1.nii.gz"), "--dose", "0.25", "--out", str(tmp_path / "ev")])
    assert result == 0
    import csv

    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "ev" / "metrics.csv"))}
    brain = ref != 0
    assert float(rows["virtual"]["ssim"]) == pytest.approx(M.ssim(dark, ref, brain), abs=1e-3)
    assert float(rows["low"]["ssim"]) == pytest.approx(M.ssim(low, ref, brain), abs=1e-3)
    assert float(rows["virtual"]["ssim"]) < 0.95  # the darkened copy is not "perfect"
    assert "physics" in rows and float(rows["physics"]["restored"]) > float(rows["low"]["restored"]) + 0.5
    assert float(rows["low"]["restored"]) == pytest.approx(0.25, abs=0.05)


def test_sequences_of_another_patient_on_the_same_grid_are_refused(shared_data):
    """BraTS cases share the SRI24 grid: the T1c of one patient with the T1 of another passes every grid and
    overlap check, and must be refused by the structural similarity of the co-registered brains."""
    gli = shared_data("brain/brats-gli-00001")
    other = shared_data("brain/brats20-186")
    images = {"t1": gli / "t1.nii.gz", "t1c_low": other / "t1c.nii.gz"}
    with pytest.raises(NeuroContrastError, match="same brain.*--force"):
        run_virtual(images, method="physics", dose=0.25, preprocessed=True)
    forced = run_virtual(images, method="physics", dose=0.25, preprocessed=True, force=True)
    assert forced.info["same_patient_r"]["t1c_low"] < inputs.SAME_PATIENT_MIN_R
    same = run_virtual({"t1": gli / "t1.nii.gz", "t1c_low": gli / "t1c.nii.gz"}, method="physics", dose=1.0,
                       preprocessed=True)
    assert same.info["same_patient_r"]["t1c_low"] > inputs.SAME_PATIENT_MIN_R
