"""neurocontrast.contrast.inference: fold ensembles × flip TTA, padding, sliding window, registry checks."""

import numpy as np
import pytest
import torch

from neurocontrast import weights
from neurocontrast.contrast import inference
from neurocontrast.errors import NeuroContrastError
from neurocontrast.networks.unet3d import ResidualUNet3D

CONFIG = dict(in_channels=2, out_channels=1, base_channels=4, depth=2, blocks_per_level=1,
              final_activation="sigmoid", residual_channel=1)


def _save(tmp_path, name, seed):
    torch.manual_seed(seed)
    net = ResidualUNet3D(**CONFIG)
    return weights.save_model(net.state_dict(), tmp_path, name, "ResidualUNet3D", CONFIG,
                              input_channels=["t1", "t1c_low"]), net


def test_flip_sets():
    assert inference.flip_sets(1) == [()]
    eight = inference.flip_sets(8)
    assert len(eight) == 8 and len(set(eight)) == 8 and () in eight and (4, 3, 2) in eight
    assert len(inference.flip_sets(2)) == 2 and len(inference.flip_sets(4)) == 4
    with pytest.raises(NeuroContrastError, match="tta"):
        inference.flip_sets(3)


def test_ensemble_tta_is_the_mean_of_mirrored_predictions(tmp_path):
    _, net0 = _save(tmp_path, "toy-fold0", 0)
    _, net1 = _save(tmp_path, "toy-fold1", 1)
    models = inference.load_ensemble("toy", models_dir=tmp_path)
    assert [m.info.name for m in models] == ["toy-fold0", "toy-fold1"]
    rng = np.random.default_rng(0)
    x = rng.random((2, 6, 10, 7)).astype(np.float32)  # not multiples of 4: padded and cropped back
    calls = []
    out = inference.predict(models, x, tta=8, progress=lambda f, m: calls.append(f))
    assert out.shape == (6, 10, 7) and out.dtype == np.float32
    assert calls[-1] == 1.0 and len(calls) == 17
    # manual reference: pad, run every mirror with both nets, un-mirror, average
    t = torch.from_numpy(x[None])
    t, crop = inference._pad_to_multiple(t, 4)
    acc = torch.zeros_like(t[:, :1])
    with torch.no_grad():
        for net in (net0, net1):
            net.eval()
            for axes in inference.flip_sets(8):
                y = net(torch.flip(t, axes)) if axes else net(t)
                acc += torch.flip(y, axes) if axes else y
    expected = (acc / 16)[0, 0][crop].numpy()
    assert np.allclose(out, expected, atol=1e-5)
    # a single model without mirrors differs from the ensemble
    single = inference.predict(models[:1], x, tta=1)
    assert not np.allclose(single, out, atol=1e-4)


def test_sliding_window_matches_whole_volume_for_an_identity_model(tmp_path):
    info, net = _save(tmp_path, "ident", 0)
    state = net.state_dict()
    state["head.weight"].zero_()
    state["head.bias"].zero_()
    weights.save_model(state, tmp_path, "ident", "ResidualUNet3D", CONFIG, input_channels=["t1", "t1c_low"])
    models = inference.load_ensemble("ident", models_dir=tmp_path)
    x = np.random.default_rng(1).uniform(0.05, 0.95, (2, 8, 16, 12)).astype(np.float32)
    whole = inference.predict(models, x, tta=2)
    windowed = inference.predict(models, x, tta=1, roi_size=(8, 8, 8))
    assert np.allclose(whole, x[1], atol=1e-4)
    assert np.allclose(windowed, x[1], atol=1e-4)
    forced = inference.predict(models, x, tta=1, max_memory_gb=1e-6)  # budget exceeded → patches
    assert np.allclose(forced, x[1], atol=1e-4)


def test_registry_errors(tmp_path):
    info, _ = _save(tmp_path, "toy-fold0", 0)
    with pytest.raises(NeuroContrastError, match="only 1 model"):
        inference.load_ensemble("toy", ensemble=3, models_dir=tmp_path)
    with pytest.raises(NeuroContrastError, match="no model"):
        inference.load_ensemble("absent", models_dir=tmp_path)
    models = inference.load_ensemble("toy", models_dir=tmp_path)
    with pytest.raises(NeuroContrastError, match="2 input channels"):
        inference.predict(models, np.zeros((3, 8, 8, 8), np.float32))
    bad = np.zeros((2, 8, 8, 8), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(NeuroContrastError, match="NaN"):
        inference.predict(models, bad)
    data = bytearray(info.weights_path.read_bytes())
    data[-1] ^= 0xFF
    info.weights_path.write_bytes(bytes(data))
    with pytest.raises(NeuroContrastError, match="sha256"):
        inference.load_ensemble("toy", models_dir=tmp_path)
    with pytest.raises(NeuroContrastError, match="CUDA|cuda") if not torch.cuda.is_available() else _noop():
        inference.resolve_device("cuda")
    with pytest.raises(NeuroContrastError):
        inference.build_network("Transformer", {})


class _noop:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_shipped_models_load_and_run_on_a_small_crop():
    names = [m.name for m in weights.list_models() if m.name.startswith(("virtual-demo", "differential-demo"))]
    assert any(n.startswith("virtual-demo") for n in names), "the demonstration weights must ship"
    total = sum(weights.get_model(n).size_bytes for n in names)
    assert total <= 25 * 2 ** 20
    models = inference.load_ensemble("virtual-demo", ensemble=1)
    assert weights.verify(models[0].info)
    c = len(models[0].input_channels)
    x = np.random.default_rng(0).uniform(0.1, 0.6, (c, 16, 16, 16)).astype(np.float32)
    y = inference.predict(models, x, tta=1)
    assert y.shape == (16, 16, 16) and np.all(np.isfinite(y))
    for name in names:  # every shipped fold carries the held-out figures that outputs and the module report
        assert weights.get_model(name).metrics.get("heldout"), name


def test_to_sequence_grid_composes_the_inverse_affine_and_rigid_transforms():
    """A linear field on the atlas grid, brought back to a translated + rotated sequence grid, must equal the
    field evaluated at the physical points that the recorded transforms map those voxels to."""
    import SimpleITK as sitk

    from neurocontrast.contrast import preprocessing as pp
    from neurocontrast.io import Geometry

    target = Geometry.from_arrays((12, 14, 16), (2.0, 2.0, 2.0), (-16.0, -14.0, -12.0))
    native_ref = Geometry.from_arrays((10, 12, 14), (2.5, 2.5, 2.5), (-15.0, -13.0, -11.0))
    native_seq = Geometry.from_arrays((9, 11, 13), (2.2, 2.2, 3.0), (-12.0, -10.0, -9.0))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.05, 0.02, 0, -0.02, 0.97, 0, 0, 0, 1.01))
    affine.SetTranslation((1.0, -2.0, 0.5))
    rigid = sitk.Euler3DTransform()
    rigid.SetRotation(0.0, 0.0, 0.05)
    rigid.SetTranslation((0.7, 0.3, -0.4))
    record = pp.PreprocessingRecord(
        reference="t1", sequences=["t1", "t1c"], native={"t1": pp._geo_dict(native_ref), "t1c": pp._geo_dict(native_seq)},
        atlas={}, target=pp._geo_dict(target), rigid={"t1": pp._transform_dict(sitk.Euler3DTransform(), "euler3d"),
                                                      "t1c": pp._transform_dict(rigid, "euler3d")},
        affine=pp._transform_dict(affine, "affine"), registration={}, resampling={}, skull_strip={},
        intensity={"t1c": {"offset": 100.0, "scale": 200.0}}, timings_s={})
    img = target.to_image(np.zeros(target.shape, np.float32))
    # field = physical x coordinate / 100 (linear: B-spline reproduces it exactly inside the grid)
    phys_x = np.array([img.TransformIndexToPhysicalPoint((int(i), 0, 0))[0] for i in range(target.size[0])])
    field = np.broadcast_to(phys_x[None, None, :] / 100.0, target.shape).astype(np.float32)
    case = pp.PreprocessedCase({"t1c": field}, np.ones(target.shape, bool), target, record)
    out = case.back(field, "t1c", intensity_of="t1c", interpolation="linear")
    assert Geometry.from_image(out).same_as(native_seq)
    arr = sitk.GetArrayFromImage(out)
    # expected: sequence voxel → rigid⁻¹ → affine⁻¹ → atlas point; value = 100 + 200 · x_atlas / 100
    inv = sitk.CompositeTransform([affine.GetInverse(), rigid.GetInverse()])
    checked = 0
    for idx in [(4, 5, 6), (6, 4, 3), (3, 6, 5)]:
        p = out.TransformIndexToPhysicalPoint(idx)
        q = inv.TransformPoint(p)
        if not all(lo + 2 <= c <= hi - 2 for c, lo, hi in zip(q, (-16, -14, -12), (14, 12, 10))):
            continue
        assert arr[idx[2], idx[1], idx[0]] == pytest.approx(100 + 200 * q[0] / 100.0, abs=1e-2)
        checked += 1
    assert checked >= 2
