"""Reading and writing 3D volumes and 4D DSC series with SimpleITK, and voxel-grid (geometry) checks.

Array order follows SimpleITK and ``slicer.util.arrayFromVolume``: ``(z, y, x)`` for volumes and
``(t, z, y, x)`` for time series. Geometry (size, spacing, origin, direction) is kept beside arrays in a
:class:`Geometry` so that outputs are written on exactly the grid of the input.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from neurocontrast.errors import GeometryError, NeuroContrastError

log = logging.getLogger(__name__)

_TOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The voxel grid of a 3D volume in LPS physical space, as SimpleITK defines it.

    Attributes
    ----------
    size : (x, y, z) int voxels.  spacing : (x, y, z) mm.  origin : (x, y, z) mm (LPS).
    direction : 9 floats, row-major 3x3 direction cosines.
    """

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @property
    def shape(self) -> Tuple[int, int, int]:
        """NumPy shape ``(z, y, x)`` of arrays on this grid."""
        return tuple(int(s) for s in self.size[::-1])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (spacing in mm; 1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    def same_as(self, other: "Geometry", tol: float = _TOL) -> bool:
        """True if both grids have the same size and (within ``tol`` mm or cosine) spacing, origin, direction."""
        return (tuple(self.size) == tuple(other.size)
                and np.allclose(self.spacing, other.spacing, atol=tol, rtol=0)
                and np.allclose(self.origin, other.origin, atol=max(tol, 1e-3), rtol=1e-6)
                and np.allclose(self.direction, other.direction, atol=tol, rtol=0))

    def describe(self) -> str:
        """One-line human description, used in error messages."""
        sp = "x".join(f"{s:g}" for s in self.spacing)
        org = ", ".join(f"{o:.1f}" for o in self.origin)
        return f"size {'x'.join(map(str, self.size))}, spacing {sp} mm, origin ({org})"

    def to_image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` (shape ``self.shape``) on this grid. Raises GeometryError on shape mismatch."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise GeometryError(f"array of shape {array.shape} does not fit the grid {self.describe()} "
                                f"(expected (z, y, x) = {self.shape})")
        if array.dtype == bool:
            array = array.astype(np.uint8)
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        """The geometry of a 3D SimpleITK image (a 4D image gives the geometry of its first three axes)."""
        dim = image.GetDimension()
        if dim == 3:
            return cls(tuple(int(s) for s in image.GetSize()), tuple(float(s) for s in image.GetSpacing()),
                       tuple(float(s) for s in image.GetOrigin()), tuple(float(d) for d in image.GetDirection()))
        if dim == 4:
            d4 = np.asarray(image.GetDirection()).reshape(4, 4)
            return cls(tuple(int(s) for s in image.GetSize()[:3]), tuple(float(s) for s in image.GetSpacing()[:3]),
                       tuple(float(s) for s in image.GetOrigin()[:3]), tuple(float(d) for d in d4[:3, :3].ravel()))
        raise NeuroContrastError(f"expected a 3D or 4D image, got {dim}D")

    @classmethod
    def from_arrays(cls, shape_zyx: Sequence[int], spacing_xyz=(1.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0),
                    direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> "Geometry":
        """A geometry for an array of shape ``(z, y, x)`` with the given spacing (mm), origin (mm), direction."""
        return cls(tuple(int(s) for s in tuple(shape_zyx)[::-1]), tuple(float(s) for s in spacing_xyz),
                   tuple(float(o) for o in origin_xyz), tuple(float(d) for d in direction))


def check_same_geometry(reference: Geometry, other: Geometry, reference_name: str, other_name: str) -> None:
    """Raise :class:`GeometryError` naming both inputs and both grids if ``other`` is not on ``reference``'s grid."""
    if not reference.same_as(other):
        raise GeometryError(f"{other_name} does not share the geometry of {reference_name}: "
                            f"{other_name} has {other.describe()}, {reference_name} has {reference.describe()}")


def read_image(path: str) -> sitk.Image:
    """Read an image file (NIfTI, NRRD, MHA, ...) or a DICOM series folder with SimpleITK.

    Raises NeuroContrastError if the path does not exist or cannot be read (corrupt or unknown format).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NeuroContrastError(f"file not found: {path}")
    try:
        if os.path.isdir(path):
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(path)
            if not series:
                raise NeuroContrastError(f"no DICOM series in folder {path}")
            files = reader.GetGDCMSeriesFileNames(path, series[0])
            reader.SetFileNames(files)
            return reader.Execute()
        image = sitk.ReadImage(path)
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown reason"
        raise NeuroContrastError(f"cannot read image {path}: {first}") from None
    if path.lower().endswith((".nii", ".nii.gz")) and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        _check_nifti_finite(path)
    return image


def _check_nifti_finite(path: str) -> None:
    """Raise NeuroContrastError if a float NIfTI file holds NaN or ±inf.

    ITK's NIfTI reader silently replaces NaN with 0, so the values are checked on the file itself with
    nibabel, one volume (last axis) at a time to bound memory.
    """
    import nibabel

    data = nibabel.load(path).dataobj
    shape = data.shape
    frames = [(Ellipsis, i) for i in range(shape[-1])] if len(shape) == 4 else [(Ellipsis,)]
    for index in frames:
        if not np.all(np.isfinite(np.asarray(data[index]))):
            raise NeuroContrastError(f"{path} contains NaN or infinite values (they would be read as 0); "
                                     "fix or mask them before analysis")


def read_volume(path: str, name: str = "volume") -> Tuple[np.ndarray, Geometry]:
    """Read a 3D volume. Returns ``(array (z, y, x) float32, Geometry)``.

    A 4D file with a single time point is accepted. Raises NeuroContrastError for other dimensions,
    vector images, or NaN values.
    """
    img = read_image(path)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise NeuroContrastError(f"{name} ({path}) is a vector image with {img.GetNumberOfComponentsPerPixel()} "
                                 "components; expected a scalar 3D volume")
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() == 2:
        raise NeuroContrastError(f"{name} ({path}) is a 2D image; expected a 3D volume")
    if img.GetDimension() != 3:
        raise NeuroContrastError(f"{name} ({path}) is {img.GetDimension()}D; expected a 3D volume")
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise NeuroContrastError(f"{name} ({path}) contains NaN or infinite values")
    return arr, Geometry.from_image(img)


def read_mask(path: str, geometry: Optional[Geometry] = None, name: str = "mask",
              reference_name: str = "the DSC series") -> np.ndarray:
    """Read a binary mask (any non-zero voxel is inside). Returns ``(z, y, x) bool``.

    If ``geometry`` is given the mask must be on that grid, else GeometryError names both grids.
    """
    arr, geo = read_volume(path, name)
    if geometry is not None:
        check_same_geometry(geometry, geo, reference_name, f"{name} ({os.path.basename(path)})")
    return arr != 0


def write_volume(array: np.ndarray, geometry: Geometry, path: str) -> str:
    """Write a ``(z, y, x)`` array on ``geometry`` to ``path`` (format from the extension; .nii.gz, .nrrd...).

    Booleans are written as uint8. Creates the parent folder. Returns the path.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sitk.WriteImage(geometry.to_image(array), os.fspath(path), useCompression=True)
    return os.fspath(path)


# ----------------------------------------------------------------------------------------------------
# 4D DSC series (added for issue 2)
# ----------------------------------------------------------------------------------------------------

#: Fewest frames a DSC series must have (baseline, bolus and recirculation must be separable).
DSC_MIN_FRAMES = 10

_NIFTI_TIME_UNITS = {8: 1.0, 16: 1e-3, 24: 1e-6}     # xyzt_units & 0x38: sec, msec, usec
_SIDECAR_SUFFIXES = (".seq.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclasses.dataclass
class DSCSeries:
    """A 4D dynamic susceptibility contrast (DSC) series.

    Attributes
    ----------
    signal : (T, Z, Y, X) float32, raw T2*-weighted signal (arbitrary units).
    geometry : :class:`Geometry` of one frame (3D grid).
    tr_s : float, frame interval (time between volumes) in s.
    te_s : float or None, echo time in s (needed for ΔR2* in 1/s).
    path : str or None, where it was read from.
    """

    signal: np.ndarray
    geometry: Geometry
    tr_s: float
    te_s: Optional[float] = None
    path: Optional[str] = None

    @property
    def n_frames(self) -> int:
        """Number of time frames T."""
        return int(self.signal.shape[0])

    @property
    def times_s(self) -> np.ndarray:
        """(T,) float64 frame times in s from the first frame: ``arange(T) * tr_s``."""
        return np.arange(self.n_frames, dtype=np.float64) * float(self.tr_s)


def _sidecar_path(path: str) -> str:
    base = path.rstrip("/\\")
    lower = base.lower()
    for suffix in _SIDECAR_SUFFIXES:
        if lower.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + ".json"


def _read_sidecar(path: str) -> dict:
    import json

    side = _sidecar_path(path)
    if not os.path.isfile(side):
        return {}
    try:
        with open(side, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise NeuroContrastError(f"cannot read the JSON sidecar {side}: {exc}") from None
    if not isinstance(data, dict):
        raise NeuroContrastError(f"the JSON sidecar {side} must hold an object with EchoTime/RepetitionTime")
    out = {}
    for key in ("EchoTime", "RepetitionTime"):
        if key in data:
            try:
                value = float(data[key])
            except (TypeError, ValueError):
                raise NeuroContrastError(f"{key} in {side} must be a number in seconds, got {data[key]!r}") from None
            if key == "EchoTime" and value > 1.0:
                raise NeuroContrastError(f"EchoTime {value:g} in {side} is not in seconds (BIDS): "
                                         f"write {value / 1000:g} for {value:g} ms")
            out[key] = value
    log.info("read %s from sidecar %s", ", ".join(out) or "nothing", side)
    return out


def _nifti_raw_time(path: str) -> Optional[Tuple[float, int]]:
    """(pixdim[4], xyzt_units) read from the NIfTI-1/-2 header bytes (ITK turns a 0 pixdim into 1)."""
    import gzip
    import struct

    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(540)
    except OSError:
        return None
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            return float(struct.unpack(endian + "f", head[92:96])[0]), head[123]
        if size == 540 and len(head) >= 540:
            return (float(struct.unpack(endian + "d", head[104 + 8 * 4:112 + 8 * 4])[0]),
                    int(struct.unpack(endian + "i", head[500:504])[0]))
    return None


def _nifti_frame_interval(path: str) -> Optional[float]:
    """pixdim[4] with its xyzt_units (s, ms, µs) in s; None when absent or zero."""
    raw_time = _nifti_raw_time(path)
    if raw_time is None:
        return None
    raw, units = raw_time
    if not np.isfinite(raw) or raw <= 0:
        return None
    code = units & 0x38
    if code in _NIFTI_TIME_UNITS:
        return raw * _NIFTI_TIME_UNITS[code]
    if raw > 20.0:  # no DSC frame interval is 20 s: an unlabelled value this large is in ms
        log.warning("NIfTI time unit unknown (xyzt_units=%d) and pixdim[4]=%g: taken as ms", units, raw)
        return raw / 1000.0
    log.warning("NIfTI time unit unknown (xyzt_units=%d): pixdim[4]=%g taken as s", units, raw)
    return raw


def _sequence_index_interval(img: sitk.Image) -> Optional[float]:
    """Frame interval from a Slicer sequence NRRD (``axis 0 index values`` / ``axis 0 unit``)."""
    key = "axis 0 index values"
    if not img.HasMetaDataKey(key):
        return None
    try:
        values = np.array([float(v) for v in img.GetMetaData(key).split()])
    except ValueError:
        return None
    if values.size < 2:
        return None
    steps = np.diff(values)
    if np.any(steps <= 0):
        return None
    if np.ptp(steps) > 0.05 * np.median(steps):
        log.warning("sequence index values are not evenly spaced; using the median step")
    unit = img.GetMetaData("axis 0 unit").strip().lower() if img.HasMetaDataKey("axis 0 unit") else "s"
    scale = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3}.get(unit)
    if scale is None:
        log.warning("sequence index unit %r is not a time unit; frame interval not taken from it", unit)
        return None
    return float(np.median(steps)) * scale


def _dicom_tag(reader: sitk.ImageFileReader, tag: str) -> Optional[str]:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else None


def _dicom_seconds(value: Optional[str]) -> Optional[float]:
    """DICOM TM (HHMMSS.frac) to seconds of the day."""
    if not value:
        return None
    try:
        hh, mm, ss = int(value[0:2]), int(value[2:4] or 0), float(value[4:] or 0)
    except ValueError:
        return None
    return hh * 3600.0 + mm * 60.0 + ss


def _read_dicom_dsc(folder: str):
    """A DSC DICOM folder → (signal (T,Z,Y,X) float32, Geometry, tr_s or None, te_s or None)."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not series:
        raise NeuroContrastError(f"no DICOM series in folder {folder}")
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, sid) for sid in series}
    sid = max(files_by_series, key=lambda s: len(files_by_series[s]))
    if len(series) > 1:
        log.warning("folder %s holds %d DICOM series; reading the largest (%s)", folder, len(series), sid)
    records = []
    te_ms = rep_ms = None
    for name in files_by_series[sid]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise NeuroContrastError(f"cannot read DICOM file {name}: {str(exc).splitlines()[0]}") from None
        pos = _dicom_tag(reader, "0020|0032")
        orient = _dicom_tag(reader, "0020|0037")
        try:
            p = np.array([float(v) for v in pos.split("\\")]) if pos else np.zeros(3)
            o = np.array([float(v) for v in orient.split("\\")]) if orient else np.array([1.0, 0, 0, 0, 1, 0])
        except ValueError:
            raise NeuroContrastError(f"DICOM file {name} has an unreadable position/orientation") from None
        normal = np.cross(o[:3], o[3:6])
        temporal = _dicom_tag(reader, "0020|0100")
        acq = _dicom_tag(reader, "0020|0012")
        inst = _dicom_tag(reader, "0020|0013")
        time = _dicom_seconds(_dicom_tag(reader, "0008|0032") or _dicom_tag(reader, "0008|0033"))
        te_ms = te_ms if te_ms is not None else _dicom_tag(reader, "0018|0081")
        rep_ms = rep_ms if rep_ms is not None else _dicom_tag(reader, "0018|0080")
        records.append(dict(file=name, loc=round(float(p @ normal), 3),
                            temporal=float(temporal) if temporal else None,
                            acq=float(acq) if acq else None, inst=float(inst) if inst else 0.0, time=time))
    locs = sorted({r["loc"] for r in records})
    n_loc = len(locs)
    if len(records) % n_loc:
        raise NeuroContrastError(f"DICOM series in {folder}: {len(records)} files do not divide into "
                                 f"{n_loc} slice positions; incomplete dynamic series")
    n_t = len(records) // n_loc
    if n_t == 1:
        raise NeuroContrastError(f"DICOM series in {folder} is a 3D volume (one file per slice position); "
                                 "expected a 4D DSC time series")

    def tkey(r):
        for k in ("temporal", "acq", "time"):
            if r[k] is not None:
                return (r[k], r["inst"])
        return (r["inst"],)

    by_loc = {loc: sorted([r for r in records if r["loc"] == loc], key=tkey) for loc in locs}
    if any(len(v) != n_t for v in by_loc.values()):
        raise NeuroContrastError(f"DICOM series in {folder}: slice positions have different numbers of frames")
    frames, geometry = [], None
    for t in range(n_t):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([by_loc[loc][t]["file"] for loc in locs])
        img = reader.Execute()
        if geometry is None:
            geometry = Geometry.from_image(img)
        frames.append(sitk.GetArrayFromImage(img).astype(np.float32))
    signal = np.stack(frames)
    tr_s = None
    times = [by_loc[locs[0]][t]["time"] for t in range(n_t)]
    if all(x is not None for x in times):
        steps = np.diff(times)
        if np.all(steps > 0):
            tr_s = float(np.median(steps))
    if tr_s is None and rep_ms:
        tr_s = float(rep_ms) / 1000.0
        log.info("DICOM frame interval taken from RepetitionTime (0018,0080) = %s ms", rep_ms)
    te_s = float(te_ms) / 1000.0 if te_ms else None
    return signal, geometry, tr_s, te_s


def read_dsc(path: str, tr_s: Optional[float] = None, te_s: Optional[float] = None) -> DSCSeries:
    """Read a 4D DSC series from NIfTI, NRRD (incl. Slicer ``.seq.nrrd``) or a DICOM series folder.

    Parameters
    ----------
    path : file or DICOM folder. NIfTI/NRRD/MHA 4D scalar images (t is the 4th axis); a 3D vector image
        with >= 10 components (Slicer ``.seq.nrrd`` with a ``list`` axis, a multivolume) is read with the
        components as frames.
    tr_s : frame interval in s; overrides every header value.
    te_s : echo time in s; overrides every header value.

    TR sources, first found wins: ``tr_s``; ``RepetitionTime`` (s) in a BIDS sidecar ``<name>.json``;
    NIfTI ``pixdim[4]`` read from the header bytes with its ``xyzt_units`` (ms and µs converted to s; an
    unlabelled value > 20 is taken as ms with a warning; 0 means absent); a Slicer sequence's ``axis 0 index values`` (unit ``axis 0 unit``); the 4th
    spacing of a 4D NRRD/MHA; DICOM acquisition-time steps, else RepetitionTime (0018,0080) in ms.
    TE sources: ``te_s``; ``EchoTime`` (s) in the sidecar; DICOM EchoTime (0018,0081) in ms.

    Returns
    -------
    :class:`DSCSeries` with signal (T, Z, Y, X) float32; te_s may be None when no source gives it.

    Raises
    ------
    NeuroContrastError : missing/unreadable path; a 3D (or 2D) image; fewer than 10 frames; NaN/inf
        values; no frame interval anywhere or TR <= 0; TE <= 0 (or a sidecar EchoTime in ms).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NeuroContrastError(f"DSC series not found: {path}")
    for name, value in (("tr_s", tr_s), ("te_s", te_s)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise NeuroContrastError(f"{name} must be > 0 seconds, got {value!r}")
    if te_s is not None and te_s > 1.0:
        raise NeuroContrastError(f"te_s = {te_s:g} s is implausible for DSC (expected ~0.02-0.06 s); "
                                 "give the echo time in seconds")
    sidecar = _read_sidecar(path)
    header_tr = header_te = None
    if os.path.isdir(path):
        signal, geometry, header_tr, header_te = _read_dicom_dsc(path)
    else:
        img = read_image(path)
        ncomp = img.GetNumberOfComponentsPerPixel()
        if ncomp > 1:
            if img.GetDimension() != 3 or ncomp < DSC_MIN_FRAMES:
                raise NeuroContrastError(f"DSC series {path} is a {img.GetDimension()}D vector image with {ncomp} "
                                         f"components; expected a 4D series with >= {DSC_MIN_FRAMES} frames")
            arr = sitk.GetArrayFromImage(img)              # (z, y, x, t)
            signal = np.moveaxis(arr, -1, 0).astype(np.float32)
            geometry = Geometry.from_image(img)
            header_tr = _sequence_index_interval(img)
        elif img.GetDimension() == 4:
            signal = sitk.GetArrayFromImage(img).astype(np.float32)
            geometry = Geometry.from_image(img)
            if img.HasMetaDataKey("pixdim[4]"):            # NIfTI: the header's own time units
                header_tr = _nifti_frame_interval(path)
            else:                                          # NRRD / MHA: the 4th spacing, in s
                header_tr = float(img.GetSpacing()[3])
        else:
            raise NeuroContrastError(f"DSC series {path} is a {img.GetDimension()}D image of size "
                                     f"{'x'.join(map(str, img.GetSize()))}; expected a 4D time series (x, y, z, t)")
    n_t = signal.shape[0]
    if n_t < DSC_MIN_FRAMES:
        raise NeuroContrastError(f"DSC series {path} has {n_t} frames; at least {DSC_MIN_FRAMES} are needed")
    if not np.all(np.isfinite(signal)):
        raise NeuroContrastError(f"DSC series {path} contains NaN or infinite values")
    side_tr = sidecar.get("RepetitionTime")
    if tr_s is None:
        tr_s = side_tr if side_tr is not None else header_tr
        if side_tr is not None and header_tr is not None and abs(side_tr - header_tr) > 1e-3 * side_tr:
            log.warning("RepetitionTime %g s in the sidecar differs from the header's %g s; using the sidecar",
                        side_tr, header_tr)
    if tr_s is None:
        raise NeuroContrastError(f"no frame interval (TR) for {path} in its header or a JSON sidecar; "
                                 "give it explicitly (--tr SECONDS)")
    if not (np.isfinite(tr_s) and tr_s > 0):
        raise NeuroContrastError(f"frame interval of {path} is {tr_s!r}; it must be > 0 s")
    if te_s is None:
        te_s = sidecar.get("EchoTime", header_te)
        if te_s is not None and not (np.isfinite(te_s) and te_s > 0):
            raise NeuroContrastError(f"echo time of {path} is {te_s!r} s; it must be > 0")
    return DSCSeries(signal=signal, geometry=geometry, tr_s=float(tr_s),
                     te_s=None if te_s is None else float(te_s), path=path)
