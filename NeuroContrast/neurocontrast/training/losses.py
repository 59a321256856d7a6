"""Losses of ST-Net (Cao et al. eq. 9) and the Tmax net (Hess et al. eq. 1-4)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch


def stnet_loss(pred: torch.Tensor, target: torch.Tensor, physics_cbv: Optional[torch.Tensor] = None,
               physics_weight: float = 0.1) -> Tuple[torch.Tensor, Dict[str, float]]:
    """ST-Net loss (Cao et al. eq. 9): MAE over the three scaled targets + w · MAE(∫c_t, f(CBV_pred)).

    pred, target : (B, 3) scaled outputs (CBV, CBF, Tmax; see :data:`neurocontrast.networks.stnet.OUTPUTS`).
    physics_cbv : (B,) the CBV implied by the tissue's ΔR2* integral (eq. 4), in the same scaled unit as
    ``pred[:, 0]``. Eq. 9 compares ∫c_t with f(CBV_pred) = CBV_pred·ρ/(100·kH)·∫c_a; dividing both sides by the
    constant ρ/(100·kH)·∫c_a gives this CBV-unit form (same minimiser, w rescaled).
    Returns (loss, {"mae", "mae_cbv", "mae_cbf", "mae_tmax", "physics"}).
    """
    err = (pred - target).abs()
    loss = err.mean()
    parts = {"mae": float(loss.detach()), "mae_cbv": float(err[:, 0].mean().detach()),
             "mae_cbf": float(err[:, 1].mean().detach()), "mae_tmax": float(err[:, 2].mean().detach())}
    if physics_cbv is not None and physics_weight > 0:
        phys = (pred[:, 0] - physics_cbv).abs().mean()
        loss = loss + physics_weight * phys
        parts["physics"] = float(phys.detach())
    return loss, parts


def importance_weight(target_s: torch.Tensor, pred_s: torch.Tensor, low: float = 0.0, high: float = 40.0,
                      outside: float = 0.1) -> torch.Tensor:
    """Hess et al. eq. 2-3: W = max of I(z) over z between target and prediction, I = 1 on [low, high]
    (s), ``outside`` elsewhere; i.e. 1 where the interval [min, max] meets [low, high], else ``outside``."""
    lo = torch.minimum(target_s, pred_s)
    hi = torch.maximum(target_s, pred_s)
    meets = (hi >= low) & (lo <= high)
    return torch.where(meets, torch.ones_like(lo), torch.full_like(lo, outside))


def laplace_nll(mean: torch.Tensor, scale: torch.Tensor, target: torch.Tensor,
                weight: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                beta: float = 0.0) -> torch.Tensor:
    """Weighted Laplace negative log-likelihood (Hess et al. eq. 1, 4): mean over ``mask`` of
    W · (log b + |p − p̂| / b). All tensors of one shape; ``scale`` (b) > 0.

    beta > 0 multiplies each voxel's term by the *detached* b^beta (β-NLL, Seitzer et al., ICLR 2022): with
    beta = 1 the gradient for the mean is that of the L1 loss, so the network cannot lower its loss by
    declaring hard voxels (long Tmax) uncertain instead of fitting them; the optimum for b is still |p − p̂|.
    beta = 0 is the paper's loss."""
    nll = torch.log(scale) + (target - mean).abs() / scale
    if beta:
        nll = nll * scale.detach() ** beta
    if weight is not None:
        nll = nll * weight
    if mask is not None:
        m = mask.to(nll.dtype)
        return (nll * m).sum() / m.sum().clamp_min(1.0)
    return nll.mean()
