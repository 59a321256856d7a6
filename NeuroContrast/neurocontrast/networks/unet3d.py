"""The residual 3D UNet of the virtual-contrast papers (torch ``nn.Module`` only).

Architecture (Bône et al. 2022, Investigative Radiology, Fig. 2; Ammari et al. 2022, Fig. 3; Bône et al.
ISBI 2021): an encoding path that alternates residual blocks and down-sampling, then a decoding path that
alternates up-sampling and residual blocks.

- down-sampling: strided 2×2×2 convolution (stride 2), doubling the channels;
- up-sampling: strided transposed 2×2×2 convolution, halving the channels;
- every other convolution is 3×3×3 (padding 1);
- short skips are additive (residual blocks: ``x + conv(lrelu(conv(x)))``);
- long skips are concatenative (encoder features concatenated to the decoder's up-sampled features);
- every activation is LeakyReLU with slope 0.2, except the final 1×1×1 convolution followed by a sigmoid.

Tensors are ``(N, C, Z, Y, X)`` float32; every spatial size must be a multiple of ``2**depth`` (the
inference engine pads). Input channels are named by the caller (``input_channels``), recorded in the
weights record and the model card, e.g. ``("t1", "flair", "t1c_low")``.

One option that the papers do not have, off by default: ``residual_channel`` — when set to the index of the
contrast input (low-dose or routine T1c), the final sigmoid is applied to ``head(features) + logit(x_c)``,
so the untrained network starts as the identity on that channel and learns only the enhancement change.
It makes training from very few cases feasible (our demonstration weights use it; their model card says so).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from neurocontrast.errors import NeuroContrastError

NEGATIVE_SLOPE = 0.2


def _act() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=False)


class ResidualBlock3D(nn.Module):
    """``y = lrelu(x + conv3(lrelu(conv3(x))))`` with ``channels`` in and out (additive short skip).

    Input and output ``(N, channels, Z, Y, X)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.act1 = _act()
        self.act2 = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(x + self.conv2(self.act1(self.conv1(x))))


class ResidualUNet3D(nn.Module):
    """Residual 3D UNet (Bône et al. 2022 Fig. 2). See the module docstring.

    Parameters
    ----------
    in_channels : number of input sequences (≥ 1).
    out_channels : number of outputs (1: the synthesised T1c).
    base_channels : feature maps at full resolution (doubled at each level).
    depth : number of down-sampling steps (spatial sizes must be multiples of ``2**depth``).
    blocks_per_level : residual blocks per level in each path.
    final_activation : ``"sigmoid"`` (the papers: images in [0, 1]) or ``"none"`` (a signed output).
    residual_channel : optional index of the input channel added (as a logit) before the sigmoid.

    Raises NeuroContrastError on impossible settings.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 1, base_channels: int = 16, depth: int = 4,
                 blocks_per_level: int = 1, final_activation: str = "sigmoid",
                 residual_channel: Optional[int] = None):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or base_channels < 1:
            raise NeuroContrastError("ResidualUNet3D: in_channels, out_channels and base_channels must be ≥ 1")
        if depth < 1 or depth > 6:
            raise NeuroContrastError(f"ResidualUNet3D: depth must be in 1..6, got {depth}")
        if final_activation not in ("sigmoid", "none"):
            raise NeuroContrastError(f"ResidualUNet3D: final_activation must be 'sigmoid' or 'none', "
                                     f"got {final_activation!r}")
        if residual_channel is not None and not 0 <= residual_channel < in_channels:
            raise NeuroContrastError(f"ResidualUNet3D: residual_channel {residual_channel} is not an input "
                                     f"channel index (0..{in_channels - 1})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.final_activation = final_activation
        self.residual_channel = residual_channel
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 3, padding=1), _act())
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level in range(depth):
            self.encoders.append(self._blocks(widths[level], blocks_per_level))
            self.downs.append(nn.Sequential(nn.Conv3d(widths[level], widths[level + 1], 2, stride=2), _act()))
        self.bottom = self._blocks(widths[depth], blocks_per_level)
        self.ups = nn.ModuleList()
        self.fuses = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(nn.Sequential(nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2),
                                          _act()))
            self.fuses.append(nn.Sequential(nn.Conv3d(2 * widths[level], widths[level], 3, padding=1), _act()))
            self.decoders.append(self._blocks(widths[level], blocks_per_level))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def _blocks(self, channels: int, count: int) -> nn.Module:
        return nn.Sequential(*[ResidualBlock3D(channels) for _ in range(count)])

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (``2**depth``)."""
        return 2 ** self.depth

    def check_input(self, x: torch.Tensor) -> None:
        """Raise NeuroContrastError unless ``x`` is ``(N, in_channels, Z, Y, X)`` with sizes % 2**depth == 0."""
        if x.dim() != 5:
            raise NeuroContrastError(f"network input must be 5D (N, C, Z, Y, X), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise NeuroContrastError(f"network expects {self.in_channels} input channels, got {x.shape[1]}")
        bad = [s for s in x.shape[2:] if s % self.size_multiple]
        if bad:
            raise NeuroContrastError(f"network input spatial sizes {tuple(x.shape[2:])} must be multiples of "
                                     f"{self.size_multiple} (pad first)")

    def features(self, x: torch.Tensor, modulate=None) -> torch.Tensor:
        """Decoder output features ``(N, base_channels, Z, Y, X)``; ``modulate(i, h)`` may FiLM each level."""
        h = self.stem(x)
        skips = []
        index = 0
        for encoder, down in zip(self.encoders, self.downs):
            h = encoder(h)
            if modulate is not None:
                h = modulate(index, h)
            index += 1
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        if modulate is not None:
            h = modulate(index, h)
        index += 1
        for up, fuse, decoder in zip(self.ups, self.fuses, self.decoders):
            h = up(h)
            h = fuse(torch.cat([h, skips.pop()], dim=1))
            h = decoder(h)
            if modulate is not None:
                h = modulate(index, h)
            index += 1
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, Z, Y, X)`` → ``(N, out_channels, Z, Y, X)`` (in [0, 1] with the sigmoid)."""
        self.check_input(x)
        out = self.head(self.features(x))
        return self._finish(out, x)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.residual_channel is not None:
            c = x[:, self.residual_channel:self.residual_channel + 1]
            if self.final_activation == "sigmoid":
                c = torch.logit(c.clamp(1e-4, 1 - 1e-4))
            out = out + c
        if self.final_activation == "sigmoid":
            out = torch.sigmoid(out)
        return out


def level_widths(base_channels: int, depth: int) -> Sequence[int]:
    """Channel counts of the modulated feature maps in :meth:`ResidualUNet3D.features` order
    (encoder levels, bottom, decoder levels)."""
    enc = [base_channels * 2 ** level for level in range(depth)]
    return enc + [base_channels * 2 ** depth] + list(reversed(enc))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
