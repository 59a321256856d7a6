"""Issue 4 proof "Round trip" through the whole virtual-contrast pipeline on real data (tcga-fg-6692:
0.9×0.9×5.5 mm, with skull, T1c rotated against the T1).

An identity network (the residual UNet with a zero head returns its contrast input exactly) is run by
``run_virtual`` in amplify mode: rigid T1c → T1, affine T1 → ICBM 2009a, 1 mm B-spline, atlas skull
stripping, crop, standardisation, the network, then the exact inverse onto the T1c's native grid and units.
What comes back must be the T1c itself: same geometry bit for bit and a small intensity error in the brain."""

import numpy as np
import SimpleITK as sitk
import torch

from neurocontrast import weights
from neurocontrast.contrast.virtual import run_virtual
from neurocontrast.metrics import dice
from neurocontrast.networks.unet3d import ResidualUNet3D

CONFIG = dict(in_channels=2, out_channels=1, base_channels=4, depth=2, blocks_per_level=1,
              final_activation="none", residual_channel=1)


def test_identity_network_round_trip_through_the_virtual_pipeline(tmp_path, shared_data):
    case = shared_data("brain/tcga-fg-6692")
    torch.manual_seed(0)
    net = ResidualUNet3D(**CONFIG)
    state = net.state_dict()
    state["head.weight"].zero_()
    state["head.bias"].zero_()
    weights.save_model(state, tmp_path, "ident-fold0", "ResidualUNet3D", CONFIG, input_channels=["t1", "t1c_low"])

    result = run_virtual({"t1": case / "t1.nii.gz", "t1c": case / "t1c.nii.gz"}, mode="amplify",
                         model="ident", models_dir=tmp_path, tta=1, skull_stripper="atlas", registration="fast")
    out = result.images["amplified"]
    native = sitk.ReadImage(str(case / "t1c.nii.gz"))
    assert out.GetSize() == native.GetSize()
    assert out.GetSpacing() == native.GetSpacing()
    assert out.GetOrigin() == native.GetOrigin()
    assert out.GetDirection() == native.GetDirection()

    hdbet = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "t1c_brain_mask_hdbet.nii.gz"))) > 0
    ours = sitk.GetArrayFromImage(result.images["brain_mask"]) > 0
    assert dice(ours, hdbet) > 0.88
    brain = hdbet & ours
    orig = sitk.GetArrayFromImage(native).astype(np.float64)
    back = sitk.GetArrayFromImage(out).astype(np.float64)
    rel = np.abs(back - orig)[brain] / orig[brain].mean()
    # two B-spline resamplings through a 1 mm grid (0.9 mm in plane natively): measured median 0.80 %, mean 1.27 %
    assert np.median(rel) < 0.01
    assert rel.mean() < 0.016
    # the mean brain intensity itself comes back within 0.5 % (measured 0.06 %), the median within 2 %
    assert abs(back[brain].mean() / orig[brain].mean() - 1) < 0.005
    assert abs(np.median(back[brain]) / np.median(orig[brain]) - 1) < 0.02
    # bright voxels are never capped: the in-brain 99.9th percentile comes back (no clipping, no
    # sigmoid; only the B-spline smoothing of two resamplings lowers single-voxel peaks a little)
    assert np.percentile(back[brain], 99.9) > 0.97 * np.percentile(orig[brain], 99.9)
    # The single brightest voxel is no stable statistic: ITK's threaded registration differs a little between
    # runs, and its ratio to the original came back 0.90-0.998 in seven runs (a CI run failed at 0.89993 against 0.9). Stable and
    # as sharp against a cap: the top 35 voxels (99.99th percentile, measured 0.980-0.996) come back, and the
    # maximum stays far above the original 99.9th percentile (measured 1.69-1.74; any cap at or below it gives <= 1)
    assert np.percentile(back[brain], 99.99) > 0.95 * np.percentile(orig[brain], 99.99)
    assert back[brain].max() > 1.3 * np.percentile(orig[brain], 99.9)
    # the two T1-weighted images of one patient pass the same-patient check
    assert result.info["same_patient_r"]["t1c"] > 0.30
    assert result.info["passes"] == 1 and result.info["models"] == ["ident-fold0"]
