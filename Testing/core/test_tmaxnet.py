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
