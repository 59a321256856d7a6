"""AIF-free Tmax net (Hess et al.): shapes, uncertainty, loss (eq. 1-4), shift augmentation."""

import numpy as np
import pytest
import torch

from neurocontrast.networks.tmaxnet import TmaxNet
from neurocontrast.training.losses import importance_weight, laplace_nll


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


def test_shapes_positive_uncertainty_and_spatial_context():
    torch.manual_seed(0)
    net = TmaxNet(n_frames=16, encoding=32).eval()
    vox = torch.randn(2, 16, 9, 7)
    art = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        out = net(vox, art, chunk=20)  # chunking must not change anything
        ref = net(vox, art)
    assert out.shape == (2, 2, 9, 7)
    assert torch.all(out[:, 1] > 0)
    assert torch.allclose(out, ref, atol=1e-6)
    # in-slice spatial correlation: changing one voxel changes its 5x5 neighbourhood (two 3x3 convs) only
    vox2 = vox.clone()
    vox2[0, :, 4, 3] += 3.0
    with torch.no_grad():
        diff = (net(vox2, art) - out).abs()[0, 0]
    outside = torch.ones_like(diff, dtype=torch.bool)
    outside[2:7, 1:6] = False
    assert diff[4, 3] > 0 and torch.all(diff[outside] == 0)
    # the bolus characterisation changes every voxel of the slice
    with torch.no_grad():
        d2 = (net(vox, art + 1.0) - out).abs()[:, 0]
    assert torch.all(d2 > 0)


def test_bad_shapes_raise():
    net = TmaxNet(n_frames=16, encoding=32)
    with pytest.raises(ValueError, match="voxels"):
        net(torch.randn(1, 12, 9, 7), torch.randn(1, 16, 5, 5))
    with pytest.raises(ValueError, match="arterial"):
        net(torch.randn(1, 16, 9, 7), torch.randn(1, 16, 3, 3))
    with pytest.raises(ValueError, match="divisible"):
        TmaxNet(n_frames=18)


def test_importance_weight_is_eq_3():
    t = torch.tensor([5.0, 50.0, 50.0, -3.0, -3.0])
    p = torch.tensor([60.0, 45.0, 30.0, -1.0, 2.0])
    # [5,60] meets [0,40]; [45,50] does not; [30,50] does; [-3,-1] does not; [-3,2] does
    assert importance_weight(t, p).tolist() == pytest.approx([1.0, 0.1, 1.0, 0.1, 1.0])


def test_laplace_nll_value_and_minimiser():
    target = torch.tensor([1.0, 2.0, 4.0])
    mean = torch.tensor([1.5, 2.0, 3.0])
    b = torch.tensor([0.5, 1.0, 2.0])
    expected = np.mean(np.log([0.5, 1.0, 2.0]) + np.array([0.5, 0.0, 1.0]) / np.array([0.5, 1.0, 2.0]))
    assert float(laplace_nll(mean, b, target)) == pytest.approx(expected, rel=1e-6)
    # for a fixed error e the NLL is minimal at b = e
    e = torch.tensor([0.7])
    grid = torch.linspace(0.1, 3.0, 300)
    vals = torch.stack([laplace_nll(torch.zeros(1), g.view(1), e) for g in grid])
    assert float(grid[torch.argmin(vals)]) == pytest.approx(0.7, abs=0.02)
    mask = torch.tensor([True, False, True])
    w = torch.tensor([1.0, 5.0, 0.1])
    manual = (np.log(0.5) + 1.0 + 0.1 * (np.log(2.0) + 0.5)) / 2
    assert float(laplace_nll(mean, b, target, w, mask)) == pytest.approx(manual, rel=1e-6)


def test_shift_augmentation_keeps_length_and_reflects():
    from neurocontrast.training.datasets import _shift

    x = np.arange(10.0)
    assert _shift(x, 3).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 5, 6]
    assert _shift(x, -3).tolist() == [3, 4, 5, 6, 7, 8, 9, 8, 7, 6]
    assert _shift(x, 0).tolist() == x.tolist()


def test_align_to_arterial_peak_moves_the_peak_and_the_voxels_together():
    from neurocontrast.networks.tmaxnet import align_to_arterial_peak

    t = 16
    art = torch.zeros(2, t, 5, 5)
    art[0, 9, 2, 2] = 1.0  # peak at frame 9 -> moved to 5 (shift -4, reflected at the end)
    art[1, 3, 2, 2] = 1.0  # peak at frame 3 -> moved to 5 (shift +2, reflected at the start)
    vox = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1).repeat(2, 1, 3, 2)
    v, a = align_to_arterial_peak(vox, art, 5)
    assert a[:, :, 2, 2].argmax(dim=1).tolist() == [5, 5]
    assert v[0, :, 0, 0].tolist() == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 14, 13, 12, 11]
    assert v[1, :, 2, 1].tolist() == [2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert v.shape == vox.shape and a.shape == art.shape


def test_peak_normalisation_and_alignment_make_the_output_invariant():
    """curve_norm='peak': scaling a voxel's curve (its CBV) does not change Tmax; align_frame: shifting the whole
    series (voxels and arterial patch together, bolus arrival) does not change it either (away from the ends)."""
    torch.manual_seed(1)
    net = TmaxNet(n_frames=32, encoding=16, curve_norm="peak", align_frame=8).eval()
    assert net.config()["curve_norm"] == "peak" and net.config()["align_frame"] == 8
    tt = torch.arange(32, dtype=torch.float32)
    bolus = lambda t0, w: torch.exp(-0.5 * ((tt - t0) / w) ** 2)  # noqa: E731
    art = bolus(10.0, 2.0).view(1, 32, 1, 1).repeat(1, 1, 5, 5)
    vox = torch.stack([bolus(10.0 + d, 2.0) for d in (0.0, 1.0, 2.0)], -1).view(1, 32, 1, 3).repeat(1, 1, 4, 1) * 0.2
    with torch.no_grad():
        out = net(vox, art)
        scaled = net(vox * torch.tensor([1.0, 3.0, 0.5]), art * 2.0)
        shifted = net(torch.roll(vox, 3, dims=1), torch.roll(art, 3, dims=1))
    assert torch.allclose(out, scaled, atol=1e-5)
    assert torch.allclose(out, shifted, atol=1e-4)
    plain = TmaxNet(n_frames=32, encoding=16)
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(vox, art), out)
    with pytest.raises(ValueError, match="curve_norm"):
        TmaxNet(n_frames=16, curve_norm="zscore")
    with pytest.raises(ValueError, match="align_frame"):
        TmaxNet(n_frames=16, align_frame=16)
