"""Reading 4D DSC-MRI series: NIfTI (time units through nibabel), NRRD/MHA, Slicer ``.seq.nrrd``, DICOM
folders and BIDS sidecars, with the checks that keep a wrong frame interval or a truncated file from
turning into plausible maps.

The frame interval (TR) of a DSC series lies in :data:`FRAME_INTERVAL_RANGE_S` (about 0.3–5 s). A value
outside that range is converted when its unit is known (NIfTI ``xyzt_units``, a sequence's ``axis 0 unit``,
DICOM milliseconds; with a log line) and refused with the reason when it is not (a CLI value, a BIDS
sidecar, the 4th spacing of a NRRD/MHA carry no unit of their own).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk

from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry, read_float_nifti_array, read_image

log = logging.getLogger(__name__)

#: Fewest frames a DSC series must have (baseline, bolus and recirculation must be separable).
DSC_MIN_FRAMES = 10
#: Plausible DSC frame interval in s (whole-brain EPI every 0.3–5 s); outside it the unit is wrong.
FRAME_INTERVAL_RANGE_S = (0.3, 5.0)

_SIDECAR_SUFFIXES = (".seq.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
               "millisecond": 1e-3, "milliseconds": 1e-3, "us": 1e-6, "usec": 1e-6}


@dataclasses.dataclass
class DSCSeries:
    """A 4D dynamic susceptibility contrast (DSC) series.

    Attributes
    ----------
    signal : (T, Z, Y, X) float32, raw T2*-weighted signal (arbitrary units).
    geometry : :class:`~neurocontrast.io.Geometry` of one frame (3D grid).
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


def check_frame_interval(tr_s: float, source: str, unit: Optional[str] = "s") -> float:
    """A frame interval in s after the plausibility check.

    tr_s : the value as found. source : where it came from (for messages). unit : its unit when the source
    states one (``"s"``, ``"ms"``, ``"us"``), None when it does not.
    Returns tr_s in s: converted with a log line when the unit is known; a value outside
    :data:`FRAME_INTERVAL_RANGE_S` with an unknown unit (or stated as s) raises NeuroContrastError with the
    reason and the likely fix. Also raises on a value <= 0 or not finite.
    """
    lo, hi = FRAME_INTERVAL_RANGE_S
    if tr_s is None or not np.isfinite(tr_s) or tr_s <= 0:
        raise NeuroContrastError(f"frame interval (TR) from {source} is {tr_s!r}; it must be > 0 s")
    value = float(tr_s)
    scale = _TIME_UNITS.get(unit.lower()) if unit else None
    if scale is not None and scale != 1.0:
        log.info("frame interval from %s: %g %s converted to %g s", source, value, unit, value * scale)
        value *= scale
    if lo <= value <= hi:
        return value
    hint = f"; {value:g} looks like milliseconds: give {value / 1000:g} s" if value > 100 else ""
    stated = f" (stated unit {unit})" if unit else " (no unit stated)"
    raise NeuroContrastError(f"frame interval (TR) {value:g} s from {source}{stated} is implausible for DSC "
                             f"(expected {lo:g}-{hi:g} s){hint} (--tr SECONDS)")


def check_dsc_values(signal: np.ndarray, what: str) -> float:
    """Refuse a series whose values cannot be a DSC acquisition: NaN/±inf; frames that are constant over
    the whole volume (zero-filled or repeated frames: a truncated file or dropped frames).

    signal : (T, Z, Y, X). Returns the smallest value (negative values are the caller's to report).
    Raises NeuroContrastError naming the frames.
    """
    flat = np.asarray(signal).reshape(signal.shape[0], -1)
    low, high = flat.min(axis=1), flat.max(axis=1)       # NaN and ±inf show in the extremes: two passes
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise NeuroContrastError(f"{what} contains NaN or infinite values; fix or mask them before analysis")
    flat_frames = np.flatnonzero(high == low)
    if flat_frames.size:
        n = signal.shape[0]
        first, last = int(flat_frames[0]), int(flat_frames[-1])
        value = float(low[first])
        where = (f"frames {first}-{last}" if flat_frames.size > 1 else f"frame {first}")
        reason = ("the file is truncated (the reader fills missing frames)" if last == n - 1 and
                  flat_frames.size == n - first else "frames were dropped or zero-filled")
        raise NeuroContrastError(f"{what}: {where} of {n} hold one constant value ({value:g}) over the whole "
                                 f"volume: {reason}; it cannot be analysed")
    return float(low.min())


def _sidecar_path(path: str) -> str:
    base = path.rstrip("/\\")
    lower = base.lower()
    for suffix in _SIDECAR_SUFFIXES:
        if lower.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base + ".json"


def _read_sidecar(path: str) -> dict:
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
            if key == "RepetitionTime":  # BIDS says seconds, but a writer that used ms is not BIDS: refuse
                value = check_frame_interval(value, f"RepetitionTime in {side}", None)
            out[key] = value
    log.info("read %s from sidecar %s", ", ".join(out) or "nothing", side)
    return out


def _nifti_header(path: str):
    import nibabel

    try:
        return nibabel.load(path).header
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, OSError, ValueError
        raise NeuroContrastError(f"cannot read the NIfTI header of {path}: {exc}") from None


def _nifti_frame_interval(path: str) -> Optional[float]:
    """pixdim[4] with its ``xyzt_units`` through nibabel, in s (:func:`check_frame_interval`); None when
    pixdim[4] is 0 (absent; ITK would report 1)."""
    header = _nifti_header(path)
    raw = float(header["pixdim"][4])
    if not np.isfinite(raw) or raw <= 0:
        return None
    unit = header.get_xyzt_units()[1]
    unit = None if unit == "unknown" else unit
    if unit is None:
        log.warning("NIfTI time unit unknown in %s: pixdim[4] = %g taken as s", path, raw)
    return check_frame_interval(raw, f"the NIfTI header of {os.path.basename(path)} (pixdim[4])", unit)


def _check_nifti_size(path: str) -> None:
    """An uncompressed NIfTI shorter than its header says is truncated (ITK would fill zeros)."""
    if not path.lower().endswith(".nii"):
        return
    header = _nifti_header(path)
    expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    actual = os.path.getsize(path)
    if actual < expected:
        raise NeuroContrastError(f"{path} is truncated: {actual} bytes, its header needs {expected}")


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
    unit = img.GetMetaData("axis 0 unit").strip().lower() if img.HasMetaDataKey("axis 0 unit") else ""
    if unit and unit not in _TIME_UNITS:
        log.warning("sequence index unit %r is not a time unit; frame interval not taken from it", unit)
        return None
    return check_frame_interval(float(np.median(steps)), "the sequence index values (axis 0)", unit or None)


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


def _float_tag(value: Optional[str]) -> Optional[float]:
    try:
        out = float(value.split("\\")[0]) if value else None
    except ValueError:
        return None
    return out if out is not None and np.isfinite(out) and out > 0 else None


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
    te_ms = rep_ms = thickness = between = None
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
        thickness = thickness if thickness is not None else _float_tag(_dicom_tag(reader, "0018|0050"))
        between = between if between is not None else _float_tag(_dicom_tag(reader, "0018|0088"))
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
    if n_loc == 1:  # one position: ITK has no second slice to measure the spacing from and reports 1 mm;
        # the slice's own extent is its thickness (a gap to a neighbour does not exist)
        dz = thickness or between
        if dz is None:
            log.warning("single-slice DICOM series without SliceThickness/SpacingBetweenSlices: slice "
                        "thickness %g mm as ITK reports it; volumes in mL depend on it", geometry.spacing[2])
        else:
            log.info("single-slice DICOM series: slice thickness %g mm from %s", dz,
                     "SliceThickness" if thickness else "SpacingBetweenSlices")
            geometry = dataclasses.replace(geometry, spacing=(geometry.spacing[0], geometry.spacing[1], float(dz)))
    tr_s = None
    times = [by_loc[locs[0]][t]["time"] for t in range(n_t)]
    if all(x is not None for x in times):
        steps = np.diff(times)
        if np.all(steps > 0):
            tr_s = _deferred(check_frame_interval, float(np.median(steps)), "the DICOM acquisition times", "s")
    if tr_s is None and rep_ms:
        tr_s = _deferred(check_frame_interval, float(rep_ms), "DICOM RepetitionTime (0018,0080)", "ms")
    te_s = float(te_ms) / 1000.0 if te_ms else None
    return signal, geometry, tr_s, te_s


def _read_file_dsc(path: str):
    """A 4D image file → (signal (T,Z,Y,X) float32, Geometry, header TR in s or None)."""
    lower = path.lower()
    is_nifti = lower.endswith((".nii", ".nii.gz"))
    if is_nifti:
        _check_nifti_size(path)
        found = read_float_nifti_array(path)  # a float 4D NIfTI: one nibabel read, no ITK image copies
        if found is not None and found[0].ndim == 4:
            array, reader = found
            return (array.astype(np.float32, copy=False), Geometry.from_image(reader),
                    _deferred(_nifti_frame_interval, path))
    img = read_image(path)
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp > 1:
        if img.GetDimension() != 3 or ncomp < DSC_MIN_FRAMES:
            raise NeuroContrastError(f"DSC series {path} is a {img.GetDimension()}D vector image with {ncomp} "
                                     f"components; expected a 4D series with >= {DSC_MIN_FRAMES} frames")
        arr = sitk.GetArrayFromImage(img)              # (z, y, x, t)
        return (np.moveaxis(arr, -1, 0).astype(np.float32), Geometry.from_image(img),
                _deferred(_sequence_index_interval, img))
    if img.GetDimension() != 4:
        raise NeuroContrastError(f"DSC series {path} is a {img.GetDimension()}D image of size "
                                 f"{'x'.join(map(str, img.GetSize()))}; expected a 4D time series (x, y, z, t)")
    signal = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if is_nifti:                                       # the header's own time units, through nibabel
        header_tr = _deferred(_nifti_frame_interval, path)
    else:                                              # NRRD / MHA: the 4th spacing (no unit of its own)
        header_tr = _deferred(check_frame_interval, float(img.GetSpacing()[3]),
                              f"the 4th spacing of {os.path.basename(path)}", None)
    return signal, Geometry.from_image(img), header_tr


def _deferred(func, *args):
    """``func(*args)`` evaluated only when needed (:func:`_resolve`): a header TR that fails its check, or
    logs about its unit, only matters when no explicit or sidecar TR overrides it."""
    return lambda: func(*args)


def _resolve(value):
    """The value of a :func:`_deferred` call, or the NeuroContrastError it raised."""
    if not callable(value):
        return value
    try:
        return value()
    except NeuroContrastError as exc:
        return exc


def read_dsc(path: str, tr_s: Optional[float] = None, te_s: Optional[float] = None) -> DSCSeries:
    """Read a 4D DSC series from NIfTI, NRRD/MHA (incl. Slicer ``.seq.nrrd``) or a DICOM series folder.

    Parameters
    ----------
    path : file or DICOM folder. NIfTI/NRRD/MHA 4D scalar images (t is the 4th axis); a 3D vector image
        with >= 10 components (Slicer ``.seq.nrrd`` with a ``list`` axis, a multivolume) is read with the
        components as frames.
    tr_s : frame interval in s; overrides every header value (must lie in 0.3–5 s).
    te_s : echo time in s; overrides every header value.

    TR sources, first found wins: ``tr_s``; ``RepetitionTime`` (s) in a BIDS sidecar ``<name>.json``;
    for a NIfTI (by its extension) ``pixdim[4]`` with its ``xyzt_units`` read by nibabel (ms and µs
    converted; 0 means absent); a Slicer sequence's ``axis 0 index values`` (unit ``axis 0 unit``); the 4th
    spacing of a 4D NRRD/MHA; DICOM acquisition-time steps, else RepetitionTime (0018,0080) in ms.
    Every TR goes through :func:`check_frame_interval`. TE sources: ``te_s``; ``EchoTime`` (s) in the
    sidecar; DICOM EchoTime (0018,0081) in ms. A single-slice DICOM series takes its slice thickness from
    SliceThickness (0018,0050), else SpacingBetweenSlices (0018,0088).

    Returns
    -------
    :class:`DSCSeries` with signal (T, Z, Y, X) float32; te_s may be None when no source gives it.

    Raises
    ------
    NeuroContrastError : missing/unreadable/truncated path; a 3D (or 2D) image; fewer than 10 frames;
        NaN/inf values; constant (zero-filled) frames; no frame interval anywhere, or one outside 0.3–5 s
        whose unit is unknown; TE <= 0 (or a sidecar EchoTime in ms).
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
    if tr_s is not None:
        tr_s = check_frame_interval(tr_s, "the given tr_s", "s")
    sidecar = _read_sidecar(path)
    if os.path.isdir(path):
        signal, geometry, header_tr, header_te = _read_dicom_dsc(path)
    else:
        signal, geometry, header_tr = _read_file_dsc(path)
        header_te = None
    n_t = signal.shape[0]
    if n_t < DSC_MIN_FRAMES:
        raise NeuroContrastError(f"DSC series {path} has {n_t} frames; at least {DSC_MIN_FRAMES} are needed")
    check_dsc_values(signal, f"DSC series {path}")
    side_tr = sidecar.get("RepetitionTime")
    if tr_s is None:
        header_tr = _resolve(header_tr)
        tr_s = side_tr if side_tr is not None else header_tr
        if isinstance(tr_s, NeuroContrastError):
            raise tr_s
        if side_tr is not None and isinstance(header_tr, float) and abs(side_tr - header_tr) > 1e-3 * side_tr:
            log.warning("RepetitionTime %g s in the sidecar differs from the header's %g s; using the sidecar",
                        side_tr, header_tr)
    if tr_s is None:
        raise NeuroContrastError(f"no frame interval (TR) for {path} in its header or a JSON sidecar; "
                                 "give it explicitly (--tr SECONDS)")
    if te_s is None:
        te_s = sidecar.get("EchoTime", header_te)
        if te_s is not None and not (np.isfinite(te_s) and te_s > 0):
            raise NeuroContrastError(f"echo time of {path} is {te_s!r} s; it must be > 0")
    return DSCSeries(signal=signal, geometry=geometry, tr_s=float(tr_s),
                     te_s=None if te_s is None else float(te_s), path=path)
