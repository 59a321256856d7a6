"""ST-Net (Cao et al.): architecture as specified, the CBV skip; ST-Net-S: small, box filters == patch means."""

import numpy as np
import pytest
import torch

from neurocontrast.networks.stnet import STNet, extract_patches


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the 2 cores are shared; oversubscription makes small convolutions slow
    yield


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(3)
    model = STNet(n_frames=50).eval()
    # make the weights less benign than the default init so rim effects are large
    with torch.no_grad():
        for p in model.spatial.parameters():
            p.mul_(2.0)
    return model


def test_layers_match_the_paper(net):
    convs = list(net.spatial)
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16), (16, 32), (32, 64)]
    assert all(c.kernel_size == (3, 3, 1) for c in convs)
    assert convs[0].padding == (1, 1, 0) and all(c.padding == (0, 0, 0) for c in convs[1:])
    assert (net.merge.in_channels, net.merge.out_channels) == (66, 64)
    assert [c.dilation[0] for c in net.global_] == [1, 3, 8, 25]
    assert net.local[-1].out_channels == 32 and net.global_[-1].out_channels == 32
    assert net.fc1.in_features == 64 * 50 and net.fc1.out_features == 256 and net.fc2.out_features == 3
    assert net.dropout.p == 0.5


def test_forward_shapes_and_errors(net):
    out = net(torch.randn(5, 1, 7, 7, 50), torch.randn(5, 2, 50))
    assert out.shape == (5, 3)
    with pytest.raises(ValueError, match="7, 7"):
        net(torch.randn(5, 1, 5, 5, 50), torch.randn(5, 2, 50))
    with pytest.raises(ValueError, match="T = 50"):
        net(torch.randn(5, 1, 7, 7, 40), torch.randn(5, 2, 40))


def test_extract_patches_zero_pads_and_centres():
    sig = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    p = extract_patches(sig, torch.tensor([[0, 0], [2, 3]]))
    assert p.shape == (2, 1, 7, 7, 2)
    assert torch.equal(p[1, 0, 3, 3], sig[:, 2, 3])
    assert torch.all(p[0, 0, :3] == 0) and torch.all(p[0, 0, :, :3] == 0)


def test_cbv_skip_adds_the_indicator_dilution_cbv(net):
    """With cbv_skip the CBV output is the network's correction plus Σ_t of the centre curve / target_scale[0]."""
    torch.manual_seed(1)
    patches, ref = torch.rand(6, 1, 7, 7, 50), torch.rand(6, 2, 50)
    plain = STNet(n_frames=50, cbv_skip=False)
    plain.load_state_dict(net.state_dict())
    plain.eval()
    with torch.no_grad():
        with_skip, without = net(patches, ref), plain(patches, ref)
    skip = patches[:, 0, 3, 3].sum(-1) / net.target_scale[0]
    assert torch.allclose(with_skip[:, 0] - without[:, 0], skip, atol=1e-5)
    assert torch.equal(with_skip[:, 1:], without[:, 1:])


def test_student_is_small_and_its_box_filters_equal_the_patch_means():
    from neurocontrast.networks.stnet import STNetS
    from neurocontrast.perfusion.deep import stnet_predict

    torch.manual_seed(2)
    student = STNetS(n_frames=50).eval()
    teacher = STNet(n_frames=50)
    n_student = sum(p.numel() for p in student.parameters())
    assert n_student * 50 < sum(p.numel() for p in teacher.parameters())
    rng = np.random.default_rng(4)
    tissue = rng.normal(0, 0.2, (50, 2, 9, 8)).astype(np.float32)
    s0 = rng.uniform(0.5, 1.5, (2, 9, 8)).astype(np.float32)
    aif = np.abs(rng.normal(0, 0.5, 50)).astype(np.float32)
    mask = rng.random((2, 9, 8)) > 0.3
    fast = stnet_predict(student, tissue, s0, aif, mask, batch_size=13)  # box filters on the slab
    assert np.all(fast[~mask] == 0)
    idx = np.argwhere(mask[1])
    with torch.no_grad():
        patches = extract_patches(torch.from_numpy(tissue[:, 1]), torch.from_numpy(idx))
        ref = torch.stack([torch.from_numpy(aif).expand(len(idx), 50),
                           torch.from_numpy(s0[1][idx[:, 0], idx[:, 1]])[:, None].expand(len(idx), 50)], 1)
        slow = student(patches, ref).numpy()  # patch-wise
    assert np.abs(fast[1][idx[:, 0], idx[:, 1]] - slow).max() <= 1e-4 * np.abs(slow).max()
    with pytest.raises(ValueError, match="5, 50"):
        student.forward_features(torch.zeros(3, 4, 50))
