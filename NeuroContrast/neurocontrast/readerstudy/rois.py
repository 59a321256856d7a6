"""Lesion ROIs from the reference long and short axes, and the CNR / LBR / CEP of a case (Bône et al. 2022).

Bône et al.: "Lesion ROIs were automatically determined as the parallelograms built from the reference long
and short axes"; with the axes as diagonals this is the rhombus |α| + |β| ≤ 1, α and β being the
coordinates along the half long axis and the (orthogonalised) half short axis from the lesion centre.
Option ``shape="rectangle"``: max(|α|, |β|) ≤ 1. The ROI is one voxel thick: voxels whose centre lies
within half the voxel extent (along the lesion plane's normal) of the plane spanned by the axes.
Lesions are in patient RAS mm (Slicer); images carry LPS geometry (SimpleITK): x and y are negated.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry
from neurocontrast.readerstudy.pairing import Lesion

_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def voxel_to_ras(geometry: Geometry, index_zyx: np.ndarray) -> np.ndarray:
    """(N, 3) (z, y, x) voxel indices → (N, 3) RAS mm points on ``geometry``."""
    ijk = np.asarray(index_zyx, dtype=np.float64)[:, ::-1]
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    lps = np.asarray(geometry.origin) + (ijk * np.asarray(geometry.spacing)) @ direction.T
    return lps * _RAS_TO_LPS


def ras_to_voxel(geometry: Geometry, points_ras: np.ndarray) -> np.ndarray:
    """(N, 3) RAS mm points → (N, 3) continuous (z, y, x) voxel indices on ``geometry``."""
    lps = np.atleast_2d(np.asarray(points_ras, dtype=np.float64)) * _RAS_TO_LPS
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    ijk = (np.linalg.solve(direction, (lps - np.asarray(geometry.origin)).T).T) / np.asarray(geometry.spacing)
    return ijk[:, ::-1]


def lesion_roi(lesion: Lesion, geometry: Geometry, shape: str = "rhombus") -> np.ndarray:
    """Boolean (Z, Y, X) mask of one lesion's ROI on ``geometry`` (see module docstring).

    Only the lesion's bounding box is evaluated (vectorised). Raises NeuroContrastError for an unknown
    ``shape``. An ROI entirely outside the grid is all False.
    """
    if shape not in ("rhombus", "rectangle"):
        raise NeuroContrastError(f"ROI shape must be 'rhombus' or 'rectangle', got {shape!r}")
    center = lesion.center
    a = 0.5 * (np.asarray(lesion.long_axis[1]) - np.asarray(lesion.long_axis[0]))
    s = 0.5 * (np.asarray(lesion.short_axis[1]) - np.asarray(lesion.short_axis[0]))
    a_len = np.linalg.norm(a)
    a_hat = a / a_len
    s_perp = s - np.dot(s, a_hat) * a_hat
    b_len = max(np.linalg.norm(s_perp), 0.5 * lesion.short_mm, 0.5 * min(geometry.spacing))
    if np.linalg.norm(s_perp) > 1e-9:
        b_hat = s_perp / np.linalg.norm(s_perp)
    else:  # degenerate short axis: any direction perpendicular to the long axis in the axial plane
        trial = np.cross(a_hat, [0.0, 0.0, 1.0])
        if np.linalg.norm(trial) < 1e-6:
            trial = np.cross(a_hat, [0.0, 1.0, 0.0])
        b_hat = trial / np.linalg.norm(trial)
    normal = np.cross(a_hat, b_hat)
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3) * _RAS_TO_LPS[:, None]
    half_thickness = 0.5 * float(np.sum(np.abs(normal @ direction) * np.asarray(geometry.spacing)))
    corners = np.array([center + sa * a + sb * b_len * b_hat + sn * half_thickness * normal
                        for sa in (-1, 1) for sb in (-1, 1) for sn in (-1, 1)])
    idx = ras_to_voxel(geometry, corners)
    shape_zyx = np.array(geometry.shape)
    low = np.clip(np.floor(idx.min(axis=0)).astype(int) - 1, 0, shape_zyx)
    high = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 2, 0, shape_zyx)
    mask = np.zeros(geometry.shape, dtype=bool)
    if np.any(high <= low):
        return mask
    grids = np.meshgrid(*[np.arange(l, h) for l, h in zip(low, high)], indexing="ij")
    index = np.stack([g.ravel() for g in grids], axis=1)
    rel = voxel_to_ras(geometry, index) - center
    alpha = np.abs(rel @ a_hat) / a_len
    beta = np.abs(rel @ b_hat) / b_len
    inside_plane = np.abs(rel @ normal) <= half_thickness + 1e-9
    inside = (alpha + beta <= 1.0 + 1e-9) if shape == "rhombus" else (np.maximum(alpha, beta) <= 1.0 + 1e-9)
    keep = inside & inside_plane
    sel = index[keep]
    mask[sel[:, 0], sel[:, 1], sel[:, 2]] = True
    return mask


def lesions_roi(lesions: Sequence[Lesion], geometry: Geometry, shape: str = "rhombus") -> np.ndarray:
    """Union of :func:`lesion_roi` over ``lesions`` (the pooled lesion ROI of a case), bool (Z, Y, X)."""
    mask = np.zeros(geometry.shape, dtype=bool)
    for lesion in lesions:
        mask |= lesion_roi(lesion, geometry, shape)
    return mask


def case_contrast_metrics(image: np.ndarray, geometry: Geometry, reference_lesions: Sequence[Lesion],
                          brain_roi: Optional[np.ndarray] = None, pre: Optional[np.ndarray] = None,
                          shape: str = "rhombus") -> Dict[str, float]:
    """CNR, LBR (needs ``brain_roi``) and CEP in % (needs ``pre`` on the same grid) of one image with the
    pooled ROIs of the case's reference lesions (Bône et al. 2022, Methods; neurocontrast.metrics).
    Missing inputs give NaN for the metrics that need them. Raises when no lesion ROI voxel is on the grid."""
    from neurocontrast import metrics

    roi = lesions_roi(reference_lesions, geometry, shape)
    if not roi.any():
        raise NeuroContrastError("the reference lesions' ROIs contain no voxel of the image")
    out = {"n_roi_voxels": int(roi.sum()), "cnr": float("nan"), "lbr": float("nan"), "cep": float("nan")}
    if brain_roi is not None:
        out["cnr"] = metrics.cnr(image, roi, brain_roi)
        out["lbr"] = metrics.lbr(image, roi, brain_roi)
    if pre is not None:
        out["cep"] = metrics.cep(image, pre, roi)
    return out
