"""neurocontrast.networks.unet3d / conditional: the papers' residual 3D UNet and its FiLM-conditioned variant."""

import pytest
import torch
from torch import nn

from neurocontrast.errors import NeuroContrastError
from neurocontrast.networks.conditional import ConditionalResidualUNet3D, condition_vector
from neurocontrast.networks.unet3d import ResidualBlock3D, ResidualUNet3D, count_parameters, level_widths


def test_architecture_follows_the_papers():
    net = ResidualUNet3D(in_channels=4, base_channels=4, depth=2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    downs = [m for m in convs if m.stride == (2, 2, 2)]
    ups = [m for m in net.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert len(downs) == 2 and all(m.kernel_size == (2, 2, 2) for m in downs)
    assert len(ups) == 2 and all(m.kernel_size == (2, 2, 2) and m.stride == (2, 2, 2) for m in ups)
    others = [m for m in convs if m.stride == (1, 1, 1) and m is not net.head]
    assert others and all(m.kernel_size == (3, 3, 3) for m in others)
    assert net.head.kernel_size == (1, 1, 1)
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(m.negative_slope == 0.2 for m in acts)
    # channels double going down
    assert [m.out_channels for m in downs] == [8, 16]


def test_residual_block_is_additive():
    block = ResidualBlock3D(3)
    for p in block.conv2.parameters():
        nn.init.zeros_(p)
    x = torch.randn(1, 3, 4, 4, 4)
    assert torch.allclose(block(x), nn.functional.leaky_relu(x, 0.2))


def test_forward_shapes_range_and_padding_checks():
    net = ResidualUNet3D(in_channels=3, base_channels=4, depth=2)
    with torch.no_grad():
        y = net(torch.rand(2, 3, 8, 12, 16))
    assert y.shape == (2, 1, 8, 12, 16)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(NeuroContrastError, match="multiples of 4"):
        net(torch.rand(1, 3, 8, 10, 8))
    with pytest.raises(NeuroContrastError, match="3 input channels"):
        net(torch.rand(1, 2, 8, 8, 8))
    with pytest.raises(NeuroContrastError, match="5D"):
        net(torch.rand(3, 8, 8, 8))


def test_long_skips_concatenate_encoder_features():
    net = ResidualUNet3D(in_channels=1, base_channels=4, depth=2)
    assert [f[0].in_channels for f in net.fuses] == [16, 8]  # 2 × width: up-sampled ⊕ encoder skip


def test_residual_channel_starts_as_identity():
    net = ResidualUNet3D(in_channels=2, base_channels=4, depth=2, residual_channel=1)
    nn.init.zeros_(net.head.weight)
    nn.init.zeros_(net.head.bias)
    x = torch.rand(1, 2, 8, 8, 8) * 0.9 + 0.05
    assert torch.allclose(net(x)[:, 0], x[:, 1], atol=1e-5)


def test_bad_settings_raise():
    with pytest.raises(NeuroContrastError):
        ResidualUNet3D(depth=0)
    with pytest.raises(NeuroContrastError):
        ResidualUNet3D(in_channels=2, residual_channel=2)
    with pytest.raises(NeuroContrastError):
        ResidualUNet3D(final_activation="tanh")


def test_conditional_network_depends_on_the_condition():
    torch.manual_seed(0)
    net = ConditionalResidualUNet3D(in_channels=2, base_channels=4, depth=2, hidden=8)
    x = torch.randn(1, 2, 8, 8, 8)
    c1 = condition_vector(0.25, 1.5, 3.5, 0.02)
    c2 = condition_vector(0.5, 3.0, 3.5, 0.02)
    # the last MLP layer starts at zero: an untrained network ignores the condition
    assert torch.allclose(net(x, c1), net(x, c2))
    nn.init.normal_(net.mlp[-1].weight, std=0.5)
    y1, y2 = net(x, c1), net(x, c2)
    assert y1.shape == (1, 1, 8, 8, 8) and not torch.allclose(y1, y2)
    assert len(net.film(c1)) == len(level_widths(4, 2)) == 5
    assert count_parameters(net) > count_parameters(net.unet)
    with pytest.raises(NeuroContrastError, match="condition"):
        net(x)
    with pytest.raises(NeuroContrastError, match=r"\(N, 4\)"):
        net(x, torch.zeros(1, 3))


@pytest.mark.parametrize("args", [(0.0, 1.5, 3.5, 0.01), (1.2, 1.5, 3.5, 0.01), (0.25, 0, 3.5, 0.01),
                                  (0.25, 1.5, -1, 0.01), (0.25, 1.5, 3.5, float("nan"))])
def test_condition_vector_rejects_bad_physics(args):
    with pytest.raises(NeuroContrastError):
        condition_vector(*args)
