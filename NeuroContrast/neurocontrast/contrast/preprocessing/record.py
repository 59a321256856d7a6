"""The JSON-serialisable record of one preprocessing run and the preprocessed case it describes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import SimpleITK as sitk

from neurocontrast.contrast.preprocessing.atlas import _geo_from
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry

RECORD_VERSION = 2  # 2: linear intensity maps (offset, scale) instead of percentile clipping


@dataclasses.dataclass
class PreprocessingRecord:
    """Everything needed to redo or undo :func:`preprocess` (JSON serialisable: ``to_json``/``from_json``).

    Attributes
    ----------
    reference: name of the reference sequence (its native grid is where outputs return).
    sequences: input names in order.  native: {name: geometry dict (size/spacing/origin/direction, LPS)}.
    atlas: atlas name, file, crop start index (x, y, z) and crop size.  target: atlas-crop geometry dict.
    rigid: {name: transform dict} reference grid → sequence (Euler3D; identity for the reference).
    affine: transform dict atlas → reference (12-dof AffineTransform, after a similarity stage).
    registration: settings used.  resampling: interpolators and clamping.
    skull_strip: method, already-stripped detection measures.  intensity: {name: mean, std, clip limits}.
    timings_s: wall time per step.
    """

    reference: str
    sequences: list
    native: dict
    atlas: dict
    target: dict
    rigid: dict
    affine: dict
    registration: dict
    resampling: dict
    skull_strip: dict
    intensity: dict
    timings_s: dict
    version: int = RECORD_VERSION

    def to_json(self, path: Optional[str] = None) -> str:
        """JSON text of the record; also written to ``path`` when given."""
        text = json.dumps(dataclasses.asdict(self), indent=1)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str) -> "PreprocessingRecord":
        """Rebuild a record from JSON text or a file path. Raises NeuroContrastError on a wrong version/keys."""
        text = text_or_path
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        data = json.loads(text)
        if data.get("version") != RECORD_VERSION:
            raise NeuroContrastError(f"preprocessing record version {data.get('version')} is not supported "
                                     f"(expected {RECORD_VERSION})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise NeuroContrastError(f"malformed preprocessing record: {exc}") from None

    @property
    def target_geometry(self) -> Geometry:
        return _geo_from(self.target)

    @property
    def native_geometry(self) -> Geometry:
        return _geo_from(self.native[self.reference])


@dataclasses.dataclass
class PreprocessedCase:
    """Output of :func:`preprocess`: atlas-space arrays (z, y, x) float32 (standardised, see
    :mod:`neurocontrast.contrast.preprocessing.intensity`), brain mask, record.

    Shares its interface with :class:`SameGridCase`: ``images``, ``brain_mask``, ``geometry``, ``intensity``,
    ``back(array, grid_of, intensity_of=None, interpolation="bspline")`` and ``summary()``.
    """

    images: Dict[str, np.ndarray]
    brain_mask: np.ndarray
    geometry: Geometry
    record: PreprocessingRecord

    def image(self, name: str) -> sitk.Image:
        """Atlas-space SimpleITK image of sequence ``name``."""
        if name not in self.images:
            raise NeuroContrastError(f"no preprocessed sequence {name!r}; have {sorted(self.images)}")
        return self.geometry.to_image(self.images[name])

    def to_native(self, array: np.ndarray, sequence: Optional[str] = None,
                  interpolation: str = "bspline", extend_outside_brain: bool = True) -> sitk.Image:
        """See :func:`to_native`; with ``extend_outside_brain`` (default) the case's brain mask is passed, so
        the zeros outside the brain do not darken its edge on the way back."""
        from neurocontrast.contrast.preprocessing.pipeline import to_native

        mask = self.brain_mask if extend_outside_brain and interpolation != "nearest" else None
        return to_native(array, self.record, sequence=sequence, interpolation=interpolation, brain_mask=mask)

    @property
    def intensity(self) -> Dict[str, dict]:
        """{sequence: intensity map params} (native = offset + scale · v)."""
        return self.record.intensity

    def back(self, array: np.ndarray, grid_of: str, intensity_of: Optional[str] = None,
             interpolation: str = "bspline", difference: bool = False) -> sitk.Image:
        """An array on the preprocessing grid back on the native grid of the preprocessed sequence ``grid_of``.

        For the reference sequence this is :meth:`to_native`; for another one the inverse atlas affine is
        composed with the inverse of that sequence's rigid co-registration (exact matrix inverses of the
        recorded transforms). ``intensity_of``: map standardised values to that sequence's native units
        (``offset + scale · v``; with ``difference=True`` only ``scale · v``, for enhancement and signal
        maps). Values outside the brain are extended from the nearest brain voxel before the interpolation
        (:func:`~neurocontrast.contrast.preprocessing.pipeline.extend_outside_mask`) unless
        ``interpolation="nearest"``. Returns a float32 image with ``grid_of``'s exact geometry. Raises
        NeuroContrastError for an unknown sequence or an array not on the preprocessing grid.
        """
        from neurocontrast.contrast.preprocessing import pipeline as pp
        from neurocontrast.contrast.preprocessing.atlas import _geo_from
        from neurocontrast.contrast.preprocessing.intensity import difference_to_native_units, to_native_units
        from neurocontrast.contrast.preprocessing.registration import _transform_from

        record = self.record
        if grid_of not in record.native:
            raise NeuroContrastError(f"unknown sequence {grid_of!r}; preprocessed: {sorted(record.native)}")
        values = np.asarray(array, dtype=np.float32)
        if values.shape != self.geometry.shape:
            raise NeuroContrastError(f"array shape {values.shape} is not the preprocessing grid {self.geometry.shape}")
        mask = self.brain_mask if interpolation != "nearest" else None
        outside = 0.0
        if intensity_of is not None:
            p = record.intensity[intensity_of]
            values = difference_to_native_units(values, p) if difference else to_native_units(values, p)
            outside = 0.0 if difference else float(p["offset"])
        native = _geo_from(record.native[grid_of])
        transform = _transform_from(record.affine).GetInverse()
        if grid_of != record.reference:  # rigid⁻¹ applied first, then affine⁻¹
            transform = sitk.CompositeTransform([transform, _transform_from(record.rigid[grid_of]).GetInverse()])
        out = pp._resample_masked(values, self.geometry, native, transform, interpolation, mask, outside)
        return native.to_image(out.astype(np.float32))

    def summary(self) -> Dict:
        """What outputs report about the preprocessing (JSON-able)."""
        return {"kind": "atlas", "skull_strip": self.record.skull_strip.get("method"),
                "timings_s": self.record.timings_s, "intensity": self.record.intensity}


@dataclasses.dataclass
class SameGridCase:
    """Inputs that were already co-registered and skull-stripped on one grid (BraTS-style), standardised.

    The same interface as :class:`PreprocessedCase`; ``back`` only maps intensities (the grid is the input's).
    """

    images: Dict[str, np.ndarray]
    brain_mask: np.ndarray
    geometry: Geometry
    intensity: Dict[str, dict]

    def back(self, array: np.ndarray, grid_of: str, intensity_of: Optional[str] = None,
             interpolation: str = "bspline", difference: bool = False) -> sitk.Image:
        """The array as an image on the common input grid, intensities as in :meth:`PreprocessedCase.back`."""
        from neurocontrast.contrast.preprocessing.intensity import difference_to_native_units, to_native_units

        if grid_of not in self.images:
            raise NeuroContrastError(f"unknown sequence {grid_of!r}; have {sorted(self.images)}")
        values = np.asarray(array, dtype=np.float32)
        if intensity_of is not None:
            p = self.intensity[intensity_of]
            values = difference_to_native_units(values, p) if difference else to_native_units(values, p)
            values = np.where(self.brain_mask, values, 0.0 if difference else float(p["offset"]))
        return self.geometry.to_image(values.astype(np.float32))

    def summary(self) -> Dict:
        """What outputs report about the preprocessing (JSON-able)."""
        return {"kind": "same grid (already co-registered and skull-stripped)", "intensity": self.intensity}
