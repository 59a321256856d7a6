"""`neurocontrast contrast virtual|amplify|differential|simulate-lowdose` and `train virtual` end to end on
small synthetic exams (already skull-stripped on one grid: --preprocessed) with tiny models."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from neurocontrast import weights
from neurocontrast.cli import main
from neurocontrast.networks.conditional import ConditionalResidualUNet3D
from neurocontrast.networks.unet3d import ResidualUNet3D
from neurocontrast.contrast.synthetic import make_synthetic_cases

VCFG = dict(in_channels=3, out_channels=1, base_channels=2, depth=2, blocks_per_level=1,
            final_activation="none", residual_channel=2)
#: the shipped design: dose and physics channels, output = physics extrapolation + learned correction
PCFG = dict(in_channels=5, out_channels=1, base_channels=2, depth=2, blocks_per_level=1,
            final_activation="none", residual_channel=4)
DCFG = dict(in_channels=2, out_channels=1, base_channels=2, depth=2, blocks_per_level=1, condition_dim=4, hidden=8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    case = make_synthetic_cases(root / "data", 1, (20, 24, 28), seed=3)[0]
    models = root / "models"
    torch.manual_seed(0)
    v = ResidualUNet3D(**VCFG).state_dict()
    weights.save_model(v, models, "tiny-virtual-fold0", "ResidualUNet3D", VCFG,
                       input_channels=["t1", "flair", "t1c_low"])
    torch.manual_seed(1)
    weights.save_model(ResidualUNet3D(**VCFG).state_dict(), models, "tiny-virtual-fold1", "ResidualUNet3D", VCFG,
                       input_channels=["t1", "flair", "t1c_low"])
    d = ConditionalResidualUNet3D(**DCFG)
    torch.nn.init.normal_(d.mlp[-1].weight, std=0.1)
    weights.save_model(d.state_dict(), models, "tiny-diff", "ConditionalResidualUNet3D", DCFG,
                       input_channels=["physics_signal", "t1c_low"])
    p = ResidualUNet3D(**PCFG)
    with torch.no_grad():
        p.head.weight.zero_()
        p.head.bias.zero_()
    weights.save_model(p.state_dict(), models, "tiny-physics-fold0", "ResidualUNet3D", PCFG,
                       input_channels=["t1", "flair", "t1c_low", "dose", "physics"])
    return root, case, models


def _geometry(path):
    img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def test_simulate_virtual_amplify_differential(setup, capsys):
    root, case, models = setup
    low = root / "low.nii.gz"
    assert main(["contrast", "simulate-lowdose", "--pre", str(case / "t1.nii.gz"), "--post", str(case / "t1c.nii.gz"),
                 "--dose", "0.25", "--out", str(low)]) == 0
    assert _geometry(low) == _geometry(case / "t1c.nii.gz")
    common = ["--models-dir", str(models), "--preprocessed", "--progress-lines"]
    out = root / "virtual"
    assert main(["contrast", "virtual", "--t1", str(case / "t1.nii.gz"), "--flair", str(case / "flair.nii.gz"),
                 "--t1c-low", str(low), "--out", str(out), "--model", "tiny-virtual", "--tta", "2", *common]) == 0
    printed = capsys.readouterr().out
    assert "PROGRESS 1.0000" in printed and "virtual:" in printed
    info = json.loads((out / "info.json").read_text(encoding="utf-8"))
    assert info["passes"] == 4 and info["models"] == ["tiny-virtual-fold0", "tiny-virtual-fold1"]
    for name in ("virtual", "enhancement", "brain_mask"):
        assert _geometry(out / f"{name}.nii.gz") == _geometry(low)
    virtual = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "virtual.nii.gz")))
    assert np.isfinite(virtual).all() and virtual.max() > 0
    # amplify, repeated, written to a file name; --ensemble 1
    amp = root / "amp" / "t1c_pro.nii.gz"
    assert main(["contrast", "amplify", "--t1", str(case / "t1.nii.gz"), "--flair", str(case / "flair.nii.gz"),
                 "--t1c", str(case / "t1c.nii.gz"), "--repeat", "2", "--out", str(amp), "--model", "tiny-virtual",
                 "--ensemble", "1", "--tta", "1", *common]) == 0
    assert amp.exists() and (root / "amp" / "t1c_pro_enhancement.nii.gz").exists()
    assert json.loads((root / "amp" / "t1c_pro.json").read_text(encoding="utf-8"))["passes"] == 2
    diff = root / "diff"
    assert main(["contrast", "differential", "--pre", str(case / "t1.nii.gz"), "--post", str(low), "--dose", "0.25",
                 "--field-strength", "3", "--agent", "Dotarem", "--out", str(diff), "--model", "tiny-diff",
                 "--tta", "1", *common]) == 0
    dinfo = json.loads((diff / "info.json").read_text(encoding="utf-8"))
    assert dinfo["relaxivity_l_mmol_s"] > 0 and dinfo["sigma_low"] > 0
    for name in ("synthesised", "signal", "enhancement", "brain_mask"):
        assert _geometry(diff / f"{name}.nii.gz") == _geometry(low)


def test_bad_inputs_exit_2_with_one_line(setup, tmp_path, capsys):
    root, case, models = setup
    common = ["--models-dir", str(models), "--preprocessed", "--model", "tiny-virtual", "--tta", "1"]
    # missing FLAIR that the model needs
    assert main(["contrast", "virtual", "--t1", str(case / "t1.nii.gz"), "--t1c-low", str(case / "t1c.nii.gz"),
                 "--out", str(tmp_path / "o"), *common]) == 2
    assert "flair" in capsys.readouterr().err
    # NaNs
    img = sitk.ReadImage(str(case / "t1.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = np.nan
    nan = sitk.GetImageFromArray(arr)
    nan.CopyInformation(img)
    sitk.WriteImage(nan, str(tmp_path / "nan.mha"))
    assert main(["contrast", "virtual", "--t1", str(tmp_path / "nan.mha"), "--flair", str(case / "flair.nii.gz"),
                 "--t1c-low", str(case / "t1c.nii.gz"), "--out", str(tmp_path / "o"), *common]) == 2
    assert "NaN" in capsys.readouterr().err
    # 2D image
    sitk.WriteImage(img[:, :, 5], str(tmp_path / "flat.nii.gz"))
    assert main(["contrast", "amplify", "--t1", str(case / "t1.nii.gz"), "--flair", str(tmp_path / "flat.nii.gz"),
                 "--t1c", str(case / "t1c.nii.gz"), "--out", str(tmp_path / "o"), *common]) == 2
    assert "2D" in capsys.readouterr().err
    # mismatched grids with --preprocessed
    small = sitk.Resample(img, [s // 2 for s in img.GetSize()], sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                          [2 * s for s in img.GetSpacing()], img.GetDirection())
    sitk.WriteImage(small, str(tmp_path / "small.nii.gz"))
    assert main(["contrast", "virtual", "--t1", str(case / "t1.nii.gz"), "--flair", str(tmp_path / "small.nii.gz"),
                 "--t1c-low", str(case / "t1c.nii.gz"), "--out", str(tmp_path / "o"), *common]) == 2
    assert "geometry" in capsys.readouterr().err
    # wrong dose, unknown agent, repeat on virtual, too many ensemble members
    base = ["contrast", "differential", "--pre", str(case / "t1.nii.gz"), "--post", str(case / "t1c.nii.gz"),
            "--field-strength", "1.5", "--out", str(tmp_path / "d"), "--models-dir", str(models), "--model", "tiny-diff"]
    assert main(base + ["--dose", "1.5", "--agent", "gadoterate"]) == 2
    assert "dose" in capsys.readouterr().err
    assert main(base + ["--dose", "0.25", "--agent", "unobtainium"]) == 2
    assert "unobtainium" in capsys.readouterr().err.lower()
    assert main(["contrast", "amplify", "--t1", str(case / "t1.nii.gz"), "--flair", str(case / "flair.nii.gz"),
                 "--t1c", str(case / "t1c.nii.gz"), "--out", str(tmp_path / "o"), "--ensemble", "5", *common]) == 2
    assert "ensemble" in capsys.readouterr().err
    assert main(["contrast", "simulate-lowdose", "--pre", str(case / "t1.nii.gz"), "--post", str(case / "t1c.nii.gz"),
                 "--dose", "0", "--out", str(tmp_path / "l.nii.gz")]) == 2


def test_train_virtual_command(setup, tmp_path, capsys):
    root, _, _ = setup
    make_synthetic_cases(tmp_path / "data", 2, (16, 16, 16), seed=5)
    assert main(["train", "virtual", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"),
                 "--preprocessed", "--base-channels", "2", "--depth", "2", "--crop", "16", "--iterations", "2",
                 "--validate-every", "1", "--folds", "2", "--fold", "1", "--name", "mine", "--progress-lines"]) == 0
    assert "mine-fold1" in capsys.readouterr().out
    found = {m.name: m for m in weights.list_models(tmp_path / "m")}
    assert "mine-fold1" in found and weights.verify(found["mine-fold1"])


def test_amplification_gain_compounds_predictably_and_dose_is_required(setup, tmp_path, capsys):
    """A dose-conditioned model whose correction is zero is exactly the physics baseline: amplify --gain 2
    doubles the enhancement in the lesion and leaves normal brain within 5 %; --repeat 2 gives 4×."""
    from neurocontrast.io import read_volume

    root, case, models = setup
    common = ["--models-dir", str(models), "--preprocessed", "--model", "tiny-physics", "--tta", "1"]
    t1 = read_volume(str(case / "t1.nii.gz"))[0]
    t1c = read_volume(str(case / "t1c.nii.gz"))[0]
    lesion = read_volume(str(case / "lesion_mask.nii.gz"))[0] > 0
    brain = t1 != 0
    from scipy import ndimage

    normal = brain & ~ndimage.binary_dilation(lesion, iterations=2)
    factors = []
    for repeat in (1, 2):
        out = tmp_path / f"amp{repeat}"
        assert main(["contrast", "amplify", "--t1", str(case / "t1.nii.gz"), "--flair", str(case / "flair.nii.gz"),
                     "--t1c", str(case / "t1c.nii.gz"), "--gain", "2", "--repeat", str(repeat), "--out", str(out),
                     *common]) == 0
        amp = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "amplified.nii.gz")))
        factors.append((amp[lesion] - t1[lesion]).mean() / (t1c[lesion] - t1[lesion]).mean())
        assert abs(np.median(amp[normal]) / np.median(t1c[normal]) - 1) < 0.05
    assert factors[0] == pytest.approx(2.0, rel=0.15) and factors[1] == pytest.approx(4.0, rel=0.15)
    capsys.readouterr()
    assert main(["contrast", "virtual", "--t1", str(case / "t1.nii.gz"), "--flair", str(case / "flair.nii.gz"),
                 "--t1c-low", str(case / "t1c.nii.gz"), "--out", str(tmp_path / "v"), *common]) == 2
    assert "--dose" in capsys.readouterr().err
