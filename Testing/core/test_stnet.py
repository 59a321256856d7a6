"""ST-Net (Cao et al.): architecture as specified, fully convolutional == patch-wise inference."""

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


def test_fully_convolutional_encoder_equals_patchwise(net):
    torch.manual_seed(0)
    sig = torch.randn(50, 11, 9)
    with torch.no_grad():
        fc = net.encode_slice(torch.nn.functional.pad(sig, (3, 3, 3, 3)).permute(1, 2, 0))
        yy, xx = torch.meshgrid(torch.arange(11), torch.arange(9), indexing="ij")
        pw = net.encode_patches(extract_patches(sig, torch.stack([yy.ravel(), xx.ravel()], 1)))
        fc = fc.reshape(-1, 64, 50)
        # a naive whole-slice convolution is NOT equal (the per-patch zero padding matters) ...
        x = torch.nn.functional.pad(sig, (3, 3, 3, 3)).permute(1, 2, 0)[None, None]
        for conv in net.spatial:
            x = torch.relu(conv(x))
        naive = x[0].permute(1, 2, 3, 0).reshape(-1, 50, 64).permute(0, 2, 1)
    scale = pw.abs().max()
    assert (naive - pw).abs().max() > 1e-2 * scale
    # ... but the rim-category computation is
    assert (fc - pw).abs().max() <= 1e-5 * scale


def test_stnet_predict_fc_equals_patch_maps(net):
    from neurocontrast.perfusion.deep import stnet_predict

    rng = np.random.default_rng(1)
    drop = rng.normal(0, 0.2, (50, 2, 9, 8)).astype(np.float32)
    s0 = rng.uniform(0.5, 1.5, (2, 9, 8)).astype(np.float32)
    aif = np.abs(rng.normal(0, 0.5, 50)).astype(np.float32)
    mask = rng.random((2, 9, 8)) > 0.3
    a = stnet_predict(net, drop, s0, aif, mask, mode="patch", batch_size=37)
    b = stnet_predict(net, drop, s0, aif, mask, mode="fc", band_rows=4, batch_size=29)
    assert np.all(a[~mask] == 0) and np.all(b[~mask] == 0)
    rel = np.abs(a - b).max() / np.abs(a).max()
    assert rel <= 1e-4
