"""Checks that the inputs of one VirtualGadolinium run belong together, done before and after preprocessing.

- :func:`check_files`: every path exists and is a file or a DICOM folder, before any image is read or
  registered (a missing file is reported at once, naming its command-line flag);
- :func:`unused_inputs`: inputs the model or method does not use, to be reported, not silently dropped;
- :func:`same_patient_check`: sequences of *another patient* on the same template grid (BraTS-style data
  share one grid, so grid and overlap checks pass) are caught by their structure: after co-registration,
  the gradient magnitudes (Gaussian σ 1 mm) of the same brain's sequences correlate (Pearson r 0.42–0.64 on
  the shared BraTS cases: T1 vs T1c, FLAIR, T2), those of two patients do not (r 0.05–0.23 measured, T1 of
  one case vs T1, T1c, FLAIR, T2 of another). The threshold 0.30 sits between; ``force=True``
  (``--force``) overrides with a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, Mapping, Sequence

import numpy as np

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)

#: Pearson r of gradient magnitudes below which two sequences are taken as different patients
SAME_PATIENT_MIN_R = 0.30


def flag_name(name: str) -> str:
    """The command-line flag of an input name (``t1c_low`` → ``--t1c-low``)."""
    return "--" + str(name).replace("_", "-")


def check_files(images: Mapping[str, object], flags: Mapping[str, str] = None) -> None:
    """Raise NeuroContrastError naming the flag and path of the first input path that does not exist.

    images: {name: path or SimpleITK image or None}; images and None are skipped. ``flags`` optionally maps
    names to the flags to quote (default :func:`flag_name`)."""
    for name, value in images.items():
        if value is None or not isinstance(value, (str, os.PathLike)):
            continue
        path = os.fspath(value)
        if not os.path.exists(path):
            flag = (flags or {}).get(name, flag_name(name))
            raise NeuroContrastError(f"input {flag} {path}: no such file or folder")
        if os.path.isdir(path) and not any(os.scandir(path)):
            raise NeuroContrastError(f"input {(flags or {}).get(name, flag_name(name))} {path} is an empty folder")


def unused_inputs(images: Mapping[str, object], used: Iterable[str]) -> list:
    """Names of the given (non-None) inputs that are not in ``used``, sorted."""
    used = set(used)
    return sorted(k for k, v in images.items() if v is not None and k not in used)


def gradient_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma_vox: Sequence[float] = (1.0,) * 3,
                         erode: int = 3) -> float:
    """Pearson r of the Gaussian-smoothed gradient magnitudes of two co-registered (Z, Y, X) images inside
    ``mask`` eroded by ``erode`` voxels (the brain's outer edge is shared by any two brains). Returns NaN
    when fewer than 1000 voxels remain (a toy volume: too small to judge)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool) & (np.asarray(a) != 0) & (np.asarray(b) != 0)
    if erode:
        m = ndimage.binary_erosion(m, iterations=erode)
    if m.sum() < 1000:
        return float("nan")
    grads = []
    for img in (a, b):
        smooth = ndimage.gaussian_filter(np.asarray(img, dtype=np.float32), sigma_vox)
        g = np.sqrt(sum(d.astype(np.float64) ** 2 for d in np.gradient(smooth)))
        grads.append(g[m])
    if grads[0].std() == 0 or grads[1].std() == 0:
        return 0.0
    return float(np.corrcoef(grads[0], grads[1])[0, 1])


def same_patient_check(images: Mapping[str, np.ndarray], mask: np.ndarray, reference: str = "t1", *,
                       force: bool = False, min_r: float = SAME_PATIENT_MIN_R,
                       spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> Dict[str, float]:
    """Check that every sequence shows the same brain as ``reference`` (see the module docstring).

    images: {name: (Z, Y, X) co-registered arrays on one grid}; mask: brain mask. Returns {name: r}. Raises
    NeuroContrastError naming the sequence and r when r < ``min_r``, unless ``force`` (then a warning).
    """
    sigma_vox = tuple(1.0 / float(s) for s in spacing_mm)
    scores = {}
    for name, arr in images.items():
        if name == reference:
            continue
        r = gradient_correlation(images[reference], arr, mask, sigma_vox)
        if not np.isfinite(r):
            log.warning("%s vs %s: fewer than 1000 shared brain voxels, same-patient check skipped", name, reference)
            scores[name] = None
            continue
        scores[name] = round(r, 3)
        if r < min_r:
            message = (f"{name} and {reference} do not look like the same brain (structural similarity r = {r:.2f} < "
                       f"{min_r}; the same patient's sequences give 0.42-0.64 on the shared cases): another "
                       "patient's image on the same grid? Use --force to run anyway")
            if not force:
                raise NeuroContrastError(message)
            log.warning("%s (overridden by --force)", message)
    return scores
