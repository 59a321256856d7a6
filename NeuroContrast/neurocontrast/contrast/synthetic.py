"""A small synthetic contrast exam in the training layout (tests, smoke training, demonstrations).

Never real patient data: ellipsoidal brain, enhancing spheres, FLAIR oedema, Gaussian noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

def make_synthetic_cases(out_dir, n_cases: int = 3, shape: Tuple[int, int, int] = (32, 32, 32), seed: int = 0,
                         spacing_mm: float = 1.0, sequences: Sequence[str] = ("t1", "flair", "t1c")) -> List[Path]:
    """Write ``n_cases`` small skull-stripped synthetic exams in the training layout (smoke tests, demos).

    Each case: an ellipsoidal "brain" (white matter 0.7, grey-matter shell 0.5 in arbitrary units × a
    per-case scale), one or two enhancing spheres (+0.6 in ``t1c`` only, FLAIR-hyperintense oedema around
    them), Rician-like Gaussian noise, zero background; all sequences on one grid with ``spacing_mm``.
    Returns the case folders. Never real patient data.
    """
    from neurocontrast.io import Geometry, write_volume

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt((zz / 0.8) ** 2 + (yy / 0.9) ** 2 + (xx / 0.75) ** 2)
    brain = radius < 1.0
    geometry = Geometry.from_arrays(shape, (spacing_mm,) * 3)
    cases = []
    for i in range(n_cases):
        scale = float(rng.uniform(300, 1200))
        tissue = np.where(radius < 0.75, 0.7, 0.5) * brain
        lesion = np.zeros(shape, dtype=bool)
        oedema = np.zeros(shape, dtype=bool)
        for _ in range(int(rng.integers(1, 3))):
            c = rng.uniform(-0.4, 0.4, 3)
            r = float(rng.uniform(0.12, 0.25))
            d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
            lesion |= (d < r) & brain
            oedema |= (d < 1.8 * r) & brain
        images = {"t1": tissue - 0.1 * lesion, "t1c": tissue - 0.1 * lesion + 0.6 * lesion,
                  "flair": np.where(brain, 0.3 + 0.15 * oedema + 0.3 * (radius > 0.75), 0.0),
                  "t2": np.where(brain, 0.3 + 0.2 * oedema + 0.3 * (radius > 0.75), 0.0)}
        folder = out / f"case-{i:03d}"
        for name in sequences:
            noisy = (images[name] + rng.normal(0, 0.02, shape)) * scale
            write_volume(np.where(brain, np.abs(noisy), 0.0).astype(np.float32), geometry,
                         str(folder / f"{name}.nii.gz"))
        write_volume(lesion.astype(np.uint8), geometry, str(folder / "lesion_mask.nii.gz"))
        cases.append(folder)
    return cases
