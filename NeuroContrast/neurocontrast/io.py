"""Reading and writing 3D volumes with SimpleITK, and voxel-grid (geometry) checks.

4D DSC series are read by :mod:`neurocontrast.dsc_io` (``DSCSeries``, ``read_dsc``; still importable
from here).

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

    ITK's NIfTI reader turns NaN and ±inf of float files into 0, so a float NIfTI is read once with
    nibabel (the voxels, NaN kept) on the grid ITK reads from its header (:func:`_read_float_nifti`);
    callers check the array they take out (:func:`check_finite`).

    Raises NeuroContrastError if the path does not exist or cannot be read (corrupt, truncated, header
    only, or unknown format).
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
        if path.lower().endswith((".nii", ".nii.gz")):
            image = _read_float_nifti(path)
            if image is not None:
                return image
        image = sitk.ReadImage(path)
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown reason"
        raise NeuroContrastError(f"cannot read image {path}: {first}") from None
    return image


def read_float_nifti_array(path: str):
    """The voxels of a float NIfTI as a NumPy array read once by nibabel (NaN/±inf kept, unlike ITK), with
    ITK's header reader for the grid.

    Returns ``(array (z, y, x) or (t, z, y, x) in the file's float dtype, reader)`` where ``reader`` is a
    ``SimpleITK.ImageFileReader`` after ``ReadImageInformation`` (size, spacing, origin, direction as ITK
    reads them; :meth:`Geometry.from_image` accepts it), or None when the file is not a 3D/4D float NIfTI
    or nibabel's shape differs from ITK's. Raises NeuroContrastError when the file is truncated or its
    header is unreadable.
    """
    import nibabel

    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown reason"
        raise NeuroContrastError(f"cannot read image {path}: {first}") from None
    if reader.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return None
    try:
        data = _read_gzip_nifti_fast(path)
        if data is None:
            data = np.asanyarray(nibabel.load(path).dataobj)
    except (EOFError, OSError, ValueError, nibabel.filebasedimages.ImageFileError) as exc:
        raise NeuroContrastError(f"cannot read image {path}: the file is truncated or damaged ({exc})") from None
    size = tuple(int(s) for s in reader.GetSize())
    if data.shape != size or data.ndim not in (3, 4):
        return None
    return np.asarray(data).T, reader


def _read_gzip_nifti_fast(path: str) -> Optional[np.ndarray]:
    """The voxels of a single-file ``.nii.gz`` as nibabel reads them (its header, dtype and scaling), decompressed
    by ISA-L (``isal``, on a reader thread) straight into the array: 1.3 s instead of 2.1 s for a 262 MB series
    (docs/benchmarks.md). None when ``isal`` is not installed or the file is not a gzipped NIfTI-1/2.
    Raises EOFError on a truncated file."""
    if not os.fspath(path).endswith(".nii.gz"):
        return None
    try:
        from isal import igzip_threaded
    except ImportError:
        return None
    from io import BytesIO

    import nibabel
    from nibabel.volumeutils import apply_read_scaling

    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic != b"\x1f\x8b":
        return None
    with igzip_threaded.open(os.fspath(path), "rb", threads=1) as fh:
        head = fh.read(4)
        sizeof_hdr = int.from_bytes(head, "little") if head else 0
        if sizeof_hdr not in (348, 540) and int.from_bytes(head, "big") not in (348, 540):
            return None
        header_class = nibabel.Nifti2Header if 540 in (sizeof_hdr, int.from_bytes(head, "big")) else nibabel.Nifti1Header
        rest = fh.read(header_class.template_dtype.itemsize - 4)
        header = header_class.from_fileobj(BytesIO(head + rest), check=False)
        skip = int(header.get_data_offset()) - len(head) - len(rest)
        if skip < 0 or len(fh.read(skip)) != skip:
            raise EOFError("the header is cut short")
        data = np.empty(header.get_data_shape(), header.get_data_dtype(), order="F")
        view = memoryview(data.reshape(-1, order="A")).cast("B")
        done = 0
        while done < view.nbytes:
            got = fh.readinto(view[done:])
            if not got:
                raise EOFError(f"the voxel data end after {done} of {view.nbytes} bytes")
            done += got
    slope, inter = header.get_slope_inter()
    return apply_read_scaling(data, slope, inter)


def _read_float_nifti(path: str) -> Optional[sitk.Image]:
    """A float NIfTI as a SimpleITK image with its NaN/±inf kept (:func:`read_float_nifti_array`)."""
    found = read_float_nifti_array(path)
    if found is None:
        return None
    array, reader = found
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    for key in reader.GetMetaDataKeys():
        image.SetMetaData(key, reader.GetMetaData(key))
    return image


def check_finite(array: np.ndarray, what: str) -> None:
    """Raise NeuroContrastError if ``array`` (already in memory) holds NaN or ±inf, naming ``what``."""
    arr = np.asarray(array)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise NeuroContrastError(f"{what} contains NaN or infinite values; fix or mask them before analysis")


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
    check_finite(arr, f"{name} ({path})")
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


# 4D DSC series live in :mod:`neurocontrast.dsc_io`; their names stay importable from here.
_DSC_NAMES = ("DSCSeries", "read_dsc", "DSC_MIN_FRAMES")


def __getattr__(name):  # PEP 562: lazy, so that dsc_io (which imports this module) loads on first use
    if name in _DSC_NAMES:
        from neurocontrast import dsc_io

        return getattr(dsc_io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
