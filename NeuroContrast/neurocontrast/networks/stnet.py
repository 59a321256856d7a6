"""ST-Net: the spatiotemporal perfusion network of Cao et al. (re-implemented from the paper's description).

Cao et al., "Quantitative perfusion maps using a novelty spatiotemporal convolutional neural network"
(section 2.2, Fig. 1). Per brain voxel the network sees a 7×7×T patch of the (normalised) DSC signal around
the voxel plus two reference channels of length T, and regresses three numbers (CBV, CBF, Tmax).

Architecture (T = ``n_frames``, 50 in the paper):

- **spatial encoder**: Conv3d 1→8, kernel (3,3,1), padding (1,1,0); then 8→16→32→64 with (3,3,1) kernels
  and no padding (7×7 → 5×5 → 3×3 → 1×1); ReLU after each → 64×T;
- concatenated with the 2 reference channels (AIF signal and the voxel's baseline S0, repeated) → 66×T;
- **temporal network**: Conv1d 66→64 (k 3), then in parallel a *local* path (3 × Conv1d 64→64 k 3, then
  64→32 k 3) and a *global* path of dilated Conv1d k 3 (dilations 1, 3, 8, 25; 64→64, 64→64, 64→64, 64→32),
  concatenated → 64×T (all 'same' padding, ReLU after each);
- **head**: 2 × Conv1d 64→64 (k 3, ReLU), dropout 0.5, Linear(64·T → 256), LeakyReLU, dropout 0.5,
  Linear(256 → 3).

Any series length: the network itself is built for a fixed ``n_frames`` (the head's Linear layer has 64·T
inputs); :mod:`neurocontrast.perfusion.deep` resamples the time axis of every series linearly to
``n_frames`` before inference, and the outputs are expressed in units of the *resampled* frame interval
(see :data:`OUTPUTS`), so they are converted back to seconds with that interval.

Fully convolutional inference (:meth:`STNet.encode_slice`): the spatial encoder collapses a 7×7 patch to one
voxel, so it can be run once on a whole slice instead of once per patch. Because the first convolution pads
*each patch* with zeros, a plain convolution of the whole slice would differ on the patch rim; the exact
equivalent tracks the 3×3 "rim categories" (top/bottom × left/right/none) of every intermediate position:
rim-category maps are the plain convolution plus corrections on the taps that reach the patch rim. The
result equals patch-wise inference to float32 rounding (tested) at about half the spatial-encoder cost and
without materialising the patches.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F

#: The three outputs, in order, with their training units: ``cbv`` mL/100 g divided by
#: ``target_scale[0]``; ``cbf`` as CBF·Δt/60 (mL/100 g per resampled frame) divided by ``target_scale[1]``;
#: ``tmax`` in resampled frames divided by ``target_scale[2]`` (Δt = resampled frame interval, s).
OUTPUTS = ("cbv", "cbf", "tmax")

PATCH = 7
_RIM_CATS = [(sy, sx) for sy in (-1, 0, 1) for sx in (-1, 0, 1)]


class STNet(nn.Module):
    """The ST-Net (Cao et al. Fig. 1).

    Parameters
    ----------
    n_frames : T, the (resampled) number of frames the head is built for (paper: 50).
    dropout : dropout rate of the head (paper: 0.5).
    target_scale : divisors of the three outputs (see :data:`OUTPUTS`); stored so that
        :meth:`to_physical` can undo them.

    Input of :meth:`forward`: ``patches`` (B, 1, 7, 7, T) float32, ``reference`` (B, 2, T) float32
    (channel 0 the AIF signal curve, channel 1 the voxel's baseline S0 repeated). Output (B, 3) float32.
    """

    def __init__(self, n_frames: int = 50, dropout: float = 0.5,
                 target_scale: Tuple[float, float, float] = (4.0, 1.5, 4.0)):
        super().__init__()
        self.n_frames = int(n_frames)
        self.target_scale = tuple(float(s) for s in target_scale)
        self.spatial = nn.ModuleList([
            nn.Conv3d(1, 8, (3, 3, 1), padding=(1, 1, 0)),
            nn.Conv3d(8, 16, (3, 3, 1)),
            nn.Conv3d(16, 32, (3, 3, 1)),
            nn.Conv3d(32, 64, (3, 3, 1)),
        ])
        self.merge = nn.Conv1d(66, 64, 3, padding=1)
        self.local = nn.ModuleList([nn.Conv1d(64, 64, 3, padding=1) for _ in range(3)]
                                   + [nn.Conv1d(64, 32, 3, padding=1)])
        self.global_ = nn.ModuleList([nn.Conv1d(64, 64, 3, padding=d, dilation=d) for d in (1, 3, 8)]
                                     + [nn.Conv1d(64, 32, 3, padding=25, dilation=25)])
        self.head_conv = nn.ModuleList([nn.Conv1d(64, 64, 3, padding=1) for _ in range(2)])
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * self.n_frames, 256)
        self.fc2 = nn.Linear(256, 3)

    # ---------------------------------------------------------------------------------------------
    def config(self) -> Dict[str, object]:
        """Constructor keyword arguments (for the model registry)."""
        return {"n_frames": self.n_frames, "dropout": float(self.dropout.p), "target_scale": list(self.target_scale)}

    def encode_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Spatial encoder, patch-wise: (B, 1, 7, 7, T) → (B, 64, T)."""
        if patches.dim() != 5 or patches.shape[1:4] != (1, PATCH, PATCH):
            raise ValueError(f"ST-Net patches must be (B, 1, 7, 7, T), got {tuple(patches.shape)}")
        x = patches
        for conv in self.spatial:
            x = F.relu(conv(x))
        return x[:, :, 0, 0, :]

    def temporal(self, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Temporal network and head: features (B, 64, T) and reference (B, 2, T) → (B, 3)."""
        if features.shape[-1] != self.n_frames or reference.shape[-1] != self.n_frames:
            raise ValueError(f"ST-Net expects T = {self.n_frames} frames (resample first), got "
                             f"{features.shape[-1]} and {reference.shape[-1]}")
        x = F.relu(self.merge(torch.cat([features, reference], dim=1)))
        loc = x
        for conv in self.local:
            loc = F.relu(conv(loc))
        glo = x
        for conv in self.global_:
            glo = F.relu(conv(glo))
        x = torch.cat([loc, glo], dim=1)
        for conv in self.head_conv:
            x = F.relu(conv(x))
        x = self.dropout(x)
        x = F.leaky_relu(self.fc1(x.flatten(1)))
        x = self.dropout(x)
        return self.fc2(x)

    def forward(self, patches: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Patch-wise forward pass: (B, 1, 7, 7, T), (B, 2, T) → (B, 3) (scaled outputs, see :data:`OUTPUTS`)."""
        return self.temporal(self.encode_patches(patches), reference)

    # ---------------------------------------------------------------------------------------------
    def encode_slice(self, image: torch.Tensor) -> torch.Tensor:
        """Spatial encoder on a whole slice, equal to :meth:`encode_patches` of every 7×7 patch.

        ``image`` (Y, X, T) float32, the slice already zero-padded by 3 voxels on each side (the patch
        extraction's padding), so Y = H + 6, X = W + 6. Returns (H, W, 64, T): the encoder output of the patch
        centred on each original voxel. Every
        rim correction is a convolution restricted to the taps that need it, so the cost is about twice a
        plain convolution of the slice. Layout (1, C, Y, X, T) with the network's own (3,3,1) kernels. Memory ~ 9 × 32 × (H+2)(W+2)·T floats: process large slices in row
        bands (see :func:`neurocontrast.perfusion.deep.stnet_predict`).
        """
        if image.dim() != 3 or image.shape[0] < PATCH or image.shape[1] < PATCH:
            raise ValueError(f"encode_slice needs a padded (Y, X, T) slice with Y, X >= 7, got {tuple(image.shape)}")
        conv1 = self.spatial[0]
        x = image[None, None]  # (1, 1, Y, X, T)
        w1 = conv1.weight  # (8, 1, 3, 3, 1)
        # layer 1: one map per rim category; the taps that leave the patch on the rim side are zeroed
        maps = {}
        for sy, sx in _RIM_CATS:
            w = w1.clone()
            if sy:
                w[:, :, 1 + sy] = 0.0
            if sx:
                w[:, :, :, 1 + sx] = 0.0
            maps[(sy, sx)] = F.relu(F.conv3d(x, w, conv1.bias, padding=(1, 1, 0)))  # (1, 8, Y, X, T)
        for conv in self.spatial[1:3]:
            maps = self._rim_layer(maps, conv)
        # layer 4: the output is the patch centre; tap (ky, kx) reads rim category (ky, kx)
        conv = self.spatial[3]
        w = conv.weight
        ref = maps[(0, 0)]
        h, wd = ref.shape[2] - 2, ref.shape[3] - 2
        out = None
        for ky in (-1, 0, 1):
            for kx in (-1, 0, 1):
                part = _tap_conv(maps[(ky, kx)], w, (ky, ky), (kx, kx), h, wd)
                out = part if out is None else out + part
        out = F.relu(out + conv.bias.view(1, -1, 1, 1, 1))  # (1, 64, H, W, T)
        return out[0].permute(1, 2, 0, 3)

    @staticmethod
    def _rim_layer(maps: Dict[Tuple[int, int], torch.Tensor], conv: nn.Conv3d) -> Dict[Tuple[int, int], torch.Tensor]:
        """One unpadded (3,3,1) layer on rim-category maps (1, Cin, Y, X, T) → maps (1, Cout, Y−2, X−2, T).

        Output category (sy, sx): tap (ky, kx) reads source category (sy if ky == sy ≠ 0 else 0,
        sx if kx == sx ≠ 0 else 0). Computed as the plain convolution of the (0, 0) map plus, for the taps
        that read another category, those taps applied to the difference map (category − (0, 0)).
        """
        w = conv.weight  # (Cout, Cin, 3, 3, 1)
        base_in = maps[(0, 0)]
        h, wd = base_in.shape[2] - 2, base_in.shape[3] - 2
        base = F.conv3d(base_in, w, conv.bias)
        diffs = {cat: maps[cat] - base_in for cat in _RIM_CATS if cat != (0, 0)}
        out = {(0, 0): F.relu(base)}
        for sy, sx in _RIM_CATS:
            if (sy, sx) == (0, 0):
                continue
            pre = base
            if sy and sx:  # corner: the corner tap, the rest of the rim row, the rest of the rim column
                pre = pre + _tap_conv(diffs[(sy, sx)], w, (sy, sy), (sx, sx), h, wd)
                rest_x = (-1, 0) if sx == 1 else (0, 1)
                rest_y = (-1, 0) if sy == 1 else (0, 1)
                pre = pre + _tap_conv(diffs[(sy, 0)], w, (sy, sy), rest_x, h, wd)
                pre = pre + _tap_conv(diffs[(0, sx)], w, rest_y, (sx, sx), h, wd)
            elif sy:  # top/bottom edge: the whole rim row
                pre = pre + _tap_conv(diffs[(sy, 0)], w, (sy, sy), (-1, 1), h, wd)
            else:  # left/right edge: the whole rim column
                pre = pre + _tap_conv(diffs[(0, sx)], w, (-1, 1), (sx, sx), h, wd)
            out[(sy, sx)] = F.relu(pre)
        return out


def _tap_conv(src: torch.Tensor, w: torch.Tensor, ky: Tuple[int, int], kx: Tuple[int, int], h: int,
              wd: int) -> torch.Tensor:
    """The taps ky[0]..ky[1] × kx[0]..kx[1] of an unpadded (3,3,1) convolution (weight (Cout, Cin, 3, 3, 1)):
    src (1, Cin, h+2, wd+2, T) → (1, Cout, h, wd, T)."""
    a, b = ky
    c, d = kx
    return F.conv3d(src[:, :, 1 + a:1 + b + h, 1 + c:1 + d + wd], w[:, :, 1 + a:2 + b, 1 + c:2 + d])


def extract_patches(signal: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """7×7 patches of a slice around given voxels (zero padding outside the slice).

    signal : (T, Y, X) float32 slice. centres : (N, 2) int64 (y, x). Returns (N, 1, 7, 7, T).
    """
    t, ny, nx = signal.shape
    padded = F.pad(signal, (3, 3, 3, 3))  # (T, Y+6, X+6)
    offs = torch.arange(-3, 4, device=signal.device)
    yy = (centres[:, 0:1] + 3 + offs[None, :])[:, :, None]  # (N, 7, 1)
    xx = (centres[:, 1:2] + 3 + offs[None, :])[:, None, :]  # (N, 1, 7)
    patches = padded[:, yy, xx]  # (T, N, 7, 7)
    return patches.permute(1, 2, 3, 0).unsqueeze(1).contiguous()
