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

Calibrated inputs and the CBV skip: the tissue channel carries the voxel's contrast concentration in
CBV units per frame (``100·kH/ρ · TE·ΔR2*_t(t) / Σ TE·ΔR2*_a``, see :func:`neurocontrast.perfusion.deep.stnet_inputs`),
so that the indicator-dilution CBV of the centre voxel is simply the sum of its curve (Cao et al. eq. 4). With
``cbv_skip`` the network adds that sum to its CBV output and learns only the correction (noise, recirculation,
truncation); the AIF channel is the AIF's shape (unit sum × n_frames/10), so the AIF's amplitude, after the
same VOF rescaling as the classic pipeline, enters only through the tissue normalisation.

No fully convolutional path: the spatial encoder is ~40 % of the multiply-accumulates of one voxel (4.6 M of
11.6 M at T = 50; the temporal network and head are the rest), so computing it once per slice could save at
most ~1.25× and the 9 rim-category maps it needs to equal patch-wise inference cost more memory traffic than
they save (measured 0.6× of patch-wise). Inference is patch-wise; :class:`STNetS` is the fast option.
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


class STNet(nn.Module):
    """The ST-Net (Cao et al. Fig. 1).

    Parameters
    ----------
    n_frames : T, the (resampled) number of frames the head is built for (paper: 50).
    dropout : dropout rate of the head (paper: 0.5).
    target_scale : divisors of the three outputs (see :data:`OUTPUTS`); stored so that
        :func:`neurocontrast.perfusion.deep.stnet_to_physical` can undo them.
    cbv_skip : add the indicator-dilution CBV of the centre voxel (the sum of its calibrated curve, divided by
        ``target_scale[0]``) to the CBV output, so the network learns a correction to the physics estimate.

    Input of :meth:`forward`: ``patches`` (B, 1, 7, 7, T) float32, ``reference`` (B, 2, T) float32
    (channel 0 the AIF signal curve, channel 1 the voxel's baseline S0 repeated). Output (B, 3) float32.
    """

    def __init__(self, n_frames: int = 50, dropout: float = 0.5,
                 target_scale: Tuple[float, float, float] = (4.0, 1.5, 4.0), cbv_skip: bool = True):
        super().__init__()
        self.n_frames = int(n_frames)
        self.target_scale = tuple(float(s) for s in target_scale)
        self.cbv_skip = bool(cbv_skip)
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
        return {"n_frames": self.n_frames, "dropout": float(self.dropout.p), "target_scale": list(self.target_scale),
                "cbv_skip": self.cbv_skip}

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
        out = self.temporal(self.encode_patches(patches), reference)
        return _add_cbv_skip(out, patches[:, 0, PATCH // 2, PATCH // 2], self.target_scale) if self.cbv_skip else out


def _add_cbv_skip(out: torch.Tensor, centre: torch.Tensor, target_scale) -> torch.Tensor:
    """out (B, 3) + [Σ_t centre(t) / target_scale[0], 0, 0]: the indicator-dilution CBV (Cao et al. eq. 4)."""
    skip = centre.sum(dim=-1, keepdim=True) / float(target_scale[0])
    return torch.cat([out[:, :1] + skip, out[:, 1:]], dim=1)


class STNetS(nn.Module):
    """ST-Net-S: a small student of ST-Net with the same inputs and outputs, for fast CPU inference.

    The 7×7×T patch is summarised by three curves: the centre voxel, the 3×3 mean and the 7×7 mean (zero
    padding outside the slice, as the patches); with the two reference channels (AIF shape, S0) they form 5
    channels of length T = ``n_frames``. Temporal network: Conv1d 5→``width`` (k 4, stride 2) ReLU, Conv1d
    ``width``→2·``width`` (k 3, stride 2, padding 1) ReLU, Linear → ``hidden``, ReLU, Linear → 3; CBV skip as
    :class:`STNet`. About 25 k multiply-accumulates per voxel at the defaults (ST-Net: 11.6 M).

    Input of :meth:`forward`: as :class:`STNet`. :meth:`forward_features` takes the (B, 5, T) channels directly
    (whole-volume inference computes the means with a box filter instead of extracting patches).
    """

    def __init__(self, n_frames: int = 50, width: int = 12, hidden: int = 32,
                 target_scale: Tuple[float, float, float] = (4.0, 1.5, 4.0), cbv_skip: bool = True):
        super().__init__()
        self.n_frames, self.width, self.hidden = int(n_frames), int(width), int(hidden)
        self.target_scale = tuple(float(s) for s in target_scale)
        self.cbv_skip = bool(cbv_skip)
        self.conv1 = nn.Conv1d(5, self.width, 4, stride=2)
        self.conv2 = nn.Conv1d(self.width, 2 * self.width, 3, stride=2, padding=1)
        n1 = (self.n_frames - 4) // 2 + 1
        self.n2 = (n1 - 1) // 2 + 1
        self.fc1 = nn.Linear(2 * self.width * self.n2, self.hidden)
        self.fc2 = nn.Linear(self.hidden, 3)

    def config(self) -> Dict[str, object]:
        """Constructor keyword arguments (for the model registry)."""
        return {"n_frames": self.n_frames, "width": self.width, "hidden": self.hidden,
                "target_scale": list(self.target_scale), "cbv_skip": self.cbv_skip}

    @staticmethod
    def patch_channels(patches: torch.Tensor) -> torch.Tensor:
        """(B, 1, 7, 7, T) patches → (B, 3, T): centre, 3×3 mean, 7×7 mean."""
        if patches.dim() != 5 or patches.shape[1:4] != (1, PATCH, PATCH):
            raise ValueError(f"ST-Net-S patches must be (B, 1, 7, 7, T), got {tuple(patches.shape)}")
        p = patches[:, 0]
        c = PATCH // 2
        return torch.stack([p[:, c, c], p[:, c - 1:c + 2, c - 1:c + 2].mean(dim=(1, 2)), p.mean(dim=(1, 2))], dim=1)

    def forward_features(self, channels: torch.Tensor) -> torch.Tensor:
        """(B, 5, T) channels (centre, 3×3 mean, 7×7 mean, AIF, S0) → (B, 3) scaled outputs."""
        if channels.dim() != 3 or channels.shape[1] != 5 or channels.shape[2] != self.n_frames:
            raise ValueError(f"ST-Net-S expects (B, 5, {self.n_frames}) channels, got {tuple(channels.shape)}")
        x = F.relu(self.conv1(channels))
        x = F.relu(self.conv2(x))
        out = self.fc2(F.relu(self.fc1(x.flatten(1))))
        return _add_cbv_skip(out, channels[:, 0], self.target_scale) if self.cbv_skip else out

    def forward(self, patches: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, 7, 7, T), (B, 2, T) → (B, 3), as :meth:`STNet.forward`."""
        if reference.shape[-1] != self.n_frames or patches.shape[-1] != self.n_frames:
            raise ValueError(f"ST-Net-S expects T = {self.n_frames} frames (resample first)")
        return self.forward_features(torch.cat([self.patch_channels(patches), reference], dim=1))


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
