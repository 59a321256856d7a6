"""Conditional residual 3D UNet for differential contrast (Pinetz et al. 2024, MIDL abstract / arXiv:2403.03539).

The network receives the harmonised low-dose subtraction image ``z_LD`` and the low-dose image ``x_LD``
(2 input channels by default) and predicts the standard-dose contrast signal ``y_SD = p_SD ⊙ z_SD``. Its
layers are conditioned on the physical parameters that change the enhancement: the administered dose
``d_LD`` (fraction of the standard dose), the field strength ``B`` (T), the agent's r1 relaxivity
(L/mmol/s, see :mod:`neurocontrast.contrast.agents`) and the noise level ``σ_LD`` of the subtraction image.

Conditioning: feature-wise linear modulation (FiLM, Perez et al. 2018). A small MLP maps the normalised
condition vector (:func:`condition_vector`) to a scale ``γ`` and shift ``β`` per channel for every level of
the UNet (after each encoder level, the bottom and each decoder level): ``h ← h · (1 + γ) + β``. The last
MLP layer starts at zero, so an untrained conditional network equals the unconditioned one.

The output is linear (no sigmoid): the contrast signal is a signed difference image in the intensity units
of the subtraction image. The synthesised image is ``pre + signal`` (done by the inference engine).
Tensors are ``(N, C, Z, Y, X)`` float32; conditions ``(N, 4)`` or ``(1, 4)`` (broadcast).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from neurocontrast.errors import NeuroContrastError
from neurocontrast.networks.unet3d import ResidualUNet3D, level_widths

#: Order of the condition vector entries.
CONDITION_NAMES = ("dose", "field_strength_t", "relaxivity_l_mmol_s", "sigma")


def condition_vector(dose: float, field_strength_t: float, relaxivity: float, sigma: float) -> torch.Tensor:
    """Normalised condition vector ``(1, 4)`` float32: ``[d, B / 3 T, r1 / 10 L/mmol/s, 10 · σ]``.

    ``dose`` is the fraction of the standard dose in (0, 1]; ``sigma`` the noise SD of the subtraction image
    in the [0, 1] intensity scale of the preprocessed images. Raises NeuroContrastError on values outside
    (0, 1] for the dose, (0, 11] T for the field, (0, 100] for r1, or a negative / non-finite σ.
    """
    import math

    if not (0 < dose <= 1):
        raise NeuroContrastError(f"dose must be a fraction of the standard dose in (0, 1], got {dose}")
    if not (0 < field_strength_t <= 11):
        raise NeuroContrastError(f"field strength must be in (0, 11] T, got {field_strength_t}")
    if not (0 < relaxivity <= 100):
        raise NeuroContrastError(f"relaxivity must be in (0, 100] L/mmol/s, got {relaxivity}")
    if not math.isfinite(sigma) or sigma < 0:
        raise NeuroContrastError(f"noise sigma must be finite and ≥ 0, got {sigma}")
    return torch.tensor([[dose, field_strength_t / 3.0, relaxivity / 10.0, 10.0 * sigma]], dtype=torch.float32)


class ConditionalResidualUNet3D(nn.Module):
    """Residual 3D UNet (see :mod:`neurocontrast.networks.unet3d`) with FiLM conditioning at every level.

    Parameters: as :class:`ResidualUNet3D` (``in_channels`` default 2: ``z_LD``, ``x_LD``), plus
    ``condition_dim`` (4) and ``hidden`` (MLP width). ``forward(x, condition)`` with ``x`` ``(N, C, Z, Y, X)``
    and ``condition`` ``(N or 1, condition_dim)`` returns ``(N, 1, Z, Y, X)`` (the signal, linear output).
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, base_channels: int = 16, depth: int = 4,
                 blocks_per_level: int = 1, condition_dim: int = 4, hidden: int = 64):
        super().__init__()
        self.unet = ResidualUNet3D(in_channels, out_channels, base_channels, depth, blocks_per_level,
                                   final_activation="none")
        self.condition_dim = condition_dim
        self.widths = list(level_widths(base_channels, depth))
        self.mlp = nn.Sequential(nn.Linear(condition_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 2 * sum(self.widths)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @property
    def in_channels(self) -> int:
        return self.unet.in_channels

    @property
    def size_multiple(self) -> int:
        return self.unet.size_multiple

    def film(self, condition: torch.Tensor):
        """Per-level ``(γ, β)`` pairs, each ``(N, C_level, 1, 1, 1)``."""
        params = self.mlp(condition)
        out = []
        start = 0
        for width in self.widths:
            gamma = params[:, start:start + width]
            beta = params[:, start + width:start + 2 * width]
            start += 2 * width
            out.append((gamma[..., None, None, None], beta[..., None, None, None]))
        return out

    def forward(self, x: torch.Tensor, condition: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.unet.check_input(x)
        if condition is None:
            raise NeuroContrastError("the conditional network needs a condition (dose, field strength, "
                                     "relaxivity, sigma)")
        if condition.dim() != 2 or condition.shape[1] != self.condition_dim:
            raise NeuroContrastError(f"condition must be (N, {self.condition_dim}), got {tuple(condition.shape)}")
        if condition.shape[0] not in (1, x.shape[0]):
            raise NeuroContrastError(f"condition batch {condition.shape[0]} must be 1 or {x.shape[0]}")
        condition = condition.to(device=x.device, dtype=x.dtype)
        film = self.film(condition)

        def modulate(index: int, h: torch.Tensor) -> torch.Tensor:
            gamma, beta = film[index]
            return h * (1 + gamma.to(h.dtype)) + beta.to(h.dtype)

        return self.unet.head(self.unet.features(x, modulate))
