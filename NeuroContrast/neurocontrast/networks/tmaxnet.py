"""The AIF-free Tmax network of Hess et al. (re-implemented from the paper's description).

Hess et al., "Synthetic perfusion maps: imaging perfusion deficits in DSC-MRI with deep learning"
(section 2.2, Fig. 1-2, Appendix A). No arterial input function is given: a *bolus characterisation
structure* (BCS) encodes an arterial patch sequence found automatically in the data, every voxel's time
curve is encoded by a 1D-convolutional *sequence encoder* together with the frame times and the BCS code,
2D convolutions add in-slice spatial correlation, and a dense layer regresses Tmax and a per-voxel
uncertainty ``b`` of a Laplace distribution (loss: :func:`neurocontrast.training.losses.laplace_nll`).

Shapes (B slices, T = ``n_frames`` resampled frames, P = ``patch``):

- ``voxels`` (B, T, Y, X): each voxel's normalised signal curve;
- ``arterial`` (B, T, P, P): the arterial patch sequence (same normalisation);
- output (B, 2, Y, X): channel 0 Tmax in resampled frames divided by ``target_scale``, channel 1 the Laplace
  scale ``b`` in the same units (> 0). The variance is 2·b².

Layers: BCS 2 × Conv3d (1, 3, 3) (1→8→16, SELU; P = 5 → 1) giving 16 numbers per frame; sequence encoder
Conv1d (18→32, k 5) + max-pool 2, Conv1d (32→64, k 5) + max-pool 2, Conv1d (64→64, k 5), SELU, then a dense
layer to the ``encoding`` (256) vector; spatial correlation Conv2d 3×3 (256→64) SELU, dropout 0.5, Conv2d 3×3
(64→64) SELU; regression 1×1 (64→2). Xavier-uniform initialisation (Appendix A).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


#: Floor of a curve's peak for ``curve_norm="peak"`` (relative signal drop; below it a curve is noise).
PEAK_FLOOR = 0.02


def align_to_arterial_peak(voxels: torch.Tensor, arterial: torch.Tensor,
                           frame: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shift each series in time so that its arterial peak is at ``frame``.

    voxels (B, T, Y, X), arterial (B, T, P, P). The peak is the argmax of the arterial patch's centre curve;
    series b is moved by ``frame − peak_b`` frames, the frames entering at an end taken by reflection (as the
    training augmentation, :func:`neurocontrast.training.datasets._shift`). Returns both shifted tensors.
    """
    t = voxels.shape[1]
    c = arterial.shape[-1] // 2
    shift = frame - arterial[:, :, c, c].argmax(dim=1)  # (B,)
    idx = (torch.arange(t, device=voxels.device).view(1, t) - shift.view(-1, 1)).abs()
    idx = torch.where(idx > t - 1, 2 * (t - 1) - idx, idx).clamp(0, t - 1)  # reflect at both ends
    return (torch.gather(voxels, 1, idx.view(-1, t, 1, 1).expand_as(voxels)),
            torch.gather(arterial, 1, idx.view(-1, t, 1, 1).expand_as(arterial)))


class TmaxNet(nn.Module):
    """Hess et al.'s Tmax network (see module docstring).

    Parameters
    ----------
    n_frames : resampled series length T (divisible by 4).
    patch : arterial patch size P (odd, 5 by default).
    encoding : sequence-encoding size (paper: 256).
    dropout : convolutional dropout (paper: 0.5).
    target_scale : divisor of the Tmax output (frames).
    input_scale : factor applied to the voxel curves and the arterial patch on entry (the relative signal
        drops of tissue are ~0.05-0.3; the paper standardises its inputs to unit variance instead).
    curve_norm : ``"none"`` (inputs as given) or ``"peak"``: each voxel curve is divided by its own maximum
        (floored at :data:`PEAK_FLOOR`) and the arterial patch sequence by its maximum, so every curve has a
        peak of ~1 whatever its CBV: only the timing and shape are left, which is what Tmax depends on (our
        stand-in for the paper's input standardisation; needed for the network to learn at all on the CPU
        budget, see docs/models/tmaxnet.md).
    align_frame : None, or a frame index: the series (voxels and arterial patch together) is shifted in time,
        with reflection at the ends, so that the peak of the arterial patch's centre curve lands on this frame.
        Bolus arrival then no longer varies between series (what the paper's temporal-shift augmentation
        teaches the network to ignore) and Tmax becomes the voxel's bolus position in the window.
    """

    def __init__(self, n_frames: int = 64, patch: int = 5, encoding: int = 256, dropout: float = 0.5,
                 target_scale: float = 4.0, input_scale: float = 1.0, curve_norm: str = "none",
                 align_frame: Optional[int] = None):
        super().__init__()
        if n_frames % 4:
            raise ValueError(f"TmaxNet n_frames must be divisible by 4, got {n_frames}")
        if patch != 5:
            raise ValueError(f"TmaxNet patch must be 5 (two unpadded 3x3 convolutions), got {patch}")
        self.n_frames, self.patch, self.encoding = int(n_frames), int(patch), int(encoding)
        self.target_scale = float(target_scale)
        self.input_scale = float(input_scale)
        if curve_norm not in ("none", "peak"):
            raise ValueError(f"TmaxNet curve_norm must be 'none' or 'peak', got {curve_norm!r}")
        self.curve_norm = str(curve_norm)
        if align_frame is not None and not 0 <= int(align_frame) < n_frames:
            raise ValueError(f"TmaxNet align_frame must be in [0, {n_frames}), got {align_frame}")
        self.align_frame = None if align_frame is None else int(align_frame)
        self.bcs1 = nn.Conv3d(1, 8, (1, 3, 3))
        self.bcs2 = nn.Conv3d(8, 16, (1, 3, 3))
        self.seq1 = nn.Conv1d(18, 32, 5, padding=2)
        self.seq2 = nn.Conv1d(32, 64, 5, padding=2)
        self.seq3 = nn.Conv1d(64, 64, 5, padding=2)
        self.seq_fc = nn.Linear(64 * (self.n_frames // 4), self.encoding)
        self.sp1 = nn.Conv2d(self.encoding, 64, 3, padding=1)
        self.sp2 = nn.Conv2d(64, 64, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Conv2d(64, 2, 1)
        for mod in self.modules():
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)

    def config(self) -> Dict[str, object]:
        """Constructor keyword arguments (for the model registry)."""
        return {"n_frames": self.n_frames, "patch": self.patch, "encoding": self.encoding,
                "dropout": float(self.drop.p), "target_scale": self.target_scale, "input_scale": self.input_scale,
                "curve_norm": self.curve_norm, "align_frame": self.align_frame}

    def bolus_code(self, arterial: torch.Tensor) -> torch.Tensor:
        """BCS: arterial patch sequence (B, T, P, P) → (B, 16, T)."""
        if arterial.dim() != 4 or arterial.shape[1] != self.n_frames or arterial.shape[2:] != (self.patch, self.patch):
            raise ValueError(f"arterial patch sequence must be (B, {self.n_frames}, {self.patch}, {self.patch}), "
                             f"got {tuple(arterial.shape)}")
        x = F.selu(self.bcs1(arterial.unsqueeze(1)))
        x = F.selu(self.bcs2(x))  # (B, 16, T, 1, 1)
        return x[:, :, :, 0, 0]

    def encode_sequences(self, curves: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Sequence encoder: curves (N, T) with their slice's BCS code (N, 16, T) → (N, encoding)."""
        n, t = curves.shape
        times = torch.linspace(0.0, 1.0, t, device=curves.device, dtype=curves.dtype).expand(n, 1, t)
        x = torch.cat([curves.unsqueeze(1), times, code], dim=1)
        x = F.max_pool1d(F.selu(self.seq1(x)), 2)
        x = F.max_pool1d(F.selu(self.seq2(x)), 2)
        x = F.selu(self.seq3(x))
        return F.selu(self.seq_fc(x.flatten(1)))

    def regress(self, encoded: torch.Tensor) -> torch.Tensor:
        """Spatial correlation + regression: (B, encoding, Y, X) → (B, 2, Y, X) (Tmax, b > 0)."""
        x = F.selu(self.sp1(encoded))
        x = self.drop(x)
        x = F.selu(self.sp2(x))
        out = self.out(x)
        return torch.cat([out[:, :1], F.softplus(out[:, 1:]) + 1e-3], dim=1)

    def forward(self, voxels: torch.Tensor, arterial: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """(B, T, Y, X) voxel curves and (B, T, P, P) arterial patch sequence → (B, 2, Y, X).

        The sequence encoder runs over the voxels in chunks of ``chunk`` to bound memory.
        """
        if voxels.dim() != 4 or voxels.shape[1] != self.n_frames:
            raise ValueError(f"voxels must be (B, {self.n_frames}, Y, X), got {tuple(voxels.shape)}")
        b, t, ny, nx = voxels.shape
        if self.input_scale != 1.0:
            voxels, arterial = voxels * self.input_scale, arterial * self.input_scale
        if self.align_frame is not None:
            voxels, arterial = align_to_arterial_peak(voxels, arterial, self.align_frame)
        if self.curve_norm == "peak":
            voxels = voxels / voxels.amax(dim=1, keepdim=True).clamp_min(PEAK_FLOOR)
            arterial = arterial / arterial.flatten(1).amax(dim=1).clamp_min(PEAK_FLOOR).view(-1, 1, 1, 1)
        code = self.bolus_code(arterial)  # (B, 16, T)
        curves = voxels.permute(0, 2, 3, 1).reshape(b * ny * nx, t)
        slice_index = torch.arange(b, device=voxels.device).repeat_interleave(ny * nx)
        parts = []
        for start in range(0, curves.shape[0], chunk):
            sl = slice(start, start + chunk)
            parts.append(self.encode_sequences(curves[sl], code[slice_index[sl]]))
        enc = torch.cat(parts).reshape(b, ny, nx, self.encoding).permute(0, 3, 1, 2)
        return self.regress(enc)
