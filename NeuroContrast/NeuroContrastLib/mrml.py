"""MRML ⇄ NumPy bridge shared by the NeuroContrast Slicer modules (no Qt: testable with ``slicer-core``).

Slicer stores volumes in RAS physical space, the core (SimpleITK) in LPS. The conversion is exact:
``origin_lps = (-R, -A, S)`` and ``direction_lps = diag(-1, -1, 1) · direction_ras``. Arrays are
``(z, y, x)`` for volumes and ``(t, z, y, x)`` for time series, as ``slicer.util.arrayFromVolume`` returns.

Every function takes the scene explicitly or uses ``slicer.mrmlScene``; none needs ``slicer.app`` or
``slicer.modules`` (segmentations go through the static ``vtkSlicerSegmentationsModuleLogic`` methods),
so the same code runs inside Slicer and under pytest with the ``slicer-core`` wheel.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

import slicer
import vtk

from neurocontrast.errors import GeometryError, NeuroContrastError
from neurocontrast.io import Geometry

_LPS_RAS = np.diag([-1.0, -1.0, 1.0])

#: attribute names where an echo time may be stored on a sequence / volume node, with their unit factor to s
ECHO_TIME_ATTRIBUTES = (("NeuroContrast.EchoTime_s", 1.0), ("MultiVolume.DICOM.EchoTime", 1e-3),
                        ("DICOM.EchoTime", 1e-3))
REPETITION_TIME_ATTRIBUTES = (("NeuroContrast.RepetitionTime_s", 1.0), ("MultiVolume.DICOM.RepetitionTime", 1e-3),
                              ("DICOM.RepetitionTime", 1e-3))


def scene_or_default(scene=None):
    """``scene`` or ``slicer.mrmlScene``. Raises NeuroContrastError if neither exists."""
    scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise NeuroContrastError("no MRML scene: pass scene= or set slicer.mrmlScene")
    return scene


def remove_node(node, scene=None) -> None:
    """Remove ``node`` and its display and storage nodes from the scene (``scene``, else the node's own scene).

    ``vtkMRMLScene.RemoveNode`` removes only the node itself: the display nodes of a displayable node (for
    example the ``vtkMRMLMarkupsDisplayNode`` that the markups logic adds to every new markups node) and its
    storage nodes would stay in the scene as orphans. Does nothing when ``node`` is None or not in the scene.
    """
    if node is None:
        return
    scene = scene if scene is not None else node.GetScene()
    if scene is None or not scene.IsNodePresent(node):
        return
    extras = []
    if node.IsA("vtkMRMLDisplayableNode"):
        extras += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        extras += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for extra in extras:
        if extra is not None and scene.IsNodePresent(extra):
            scene.RemoveNode(extra)


# --------------------------------------------------------------------------------------------- geometry

def geometry_from_volume_node(node, world: bool = False) -> Geometry:
    """The LPS :class:`Geometry` of a scalar (or labelmap) volume node.

    ``world=False``: the node's own grid (IJK → RAS, ignoring any parent transform), as the arrays of the
    node and of other nodes under the same transform relate. ``world=True``: the grid where Slicer *shows* the
    volume, with its parent transforms hardened (what must leave the scene when the volume is written to a
    file for another program): a linear transform to world is composed with the grid; one that shears or
    scales the axes unequally cannot be a SimpleITK grid and is refused, as is a non-linear (warping) one.

    Raises NeuroContrastError if the node has no image, or (``world=True``) a transform that cannot be hardened
    into a grid: harden it in Slicer (Data module: right-click → Harden transform) and resample.
    """
    if node is None or node.GetImageData() is None:
        raise NeuroContrastError(f"volume node {getattr(node, 'GetName', lambda: None)()} has no image data")
    dims = node.GetImageData().GetDimensions()
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    m = np.array([[ijk_to_ras.GetElement(r, c) for c in range(4)] for r in range(4)])
    transform = node.GetParentTransformNode() if world else None
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise NeuroContrastError(f"volume '{node.GetName()}' is under the non-linear transform "
                                     f"'{transform.GetName()}': harden and resample it (Data module: right-click → "
                                     "Harden transform) before exporting it")
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        m = np.array([[to_world.GetElement(r, c) for c in range(4)] for r in range(4)]) @ m
    columns = m[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    d_ras = columns / spacing
    if not np.allclose(d_ras.T @ d_ras, np.eye(3), atol=1e-5):
        raise NeuroContrastError(f"the transform of volume '{node.GetName()}' shears or scales its axes unequally; "
                                 "harden and resample it (Data module: Harden transform) before exporting it")
    d_lps = _LPS_RAS @ d_ras
    origin = m[:3, 3]
    return Geometry(tuple(int(d) for d in dims), tuple(float(v) for v in spacing),
                    (-float(origin[0]), -float(origin[1]), float(origin[2])),
                    tuple(float(v) for v in d_lps.ravel()))


def set_volume_node_geometry(node, geometry: Geometry) -> None:
    """Give a volume node the spacing, origin and direction of an LPS :class:`Geometry` (image data untouched)."""
    node.SetSpacing(*geometry.spacing)
    ox, oy, oz = geometry.origin
    node.SetOrigin(-ox, -oy, oz)
    d_ras = _LPS_RAS @ np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(d_ras[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)


def volume_node_from_array(array: np.ndarray, geometry: Geometry, name: str, scene=None,
                           class_name: str = "vtkMRMLScalarVolumeNode", node=None):
    """Add (or update ``node``) a volume node holding ``array`` (z, y, x) on ``geometry``.

    Raises GeometryError if the array does not fit the grid.
    """
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise GeometryError(f"array for '{name}' has shape {array.shape}; the grid {geometry.describe()} "
                            f"needs (z, y, x) = {geometry.shape}")
    scene = scene_or_default(scene)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    set_volume_node_geometry(node, geometry)
    return node


def ras_to_zyx(volume_node, points_ras: np.ndarray) -> np.ndarray:
    """Voxel indices ``(N, 3)`` int (z, y, x) of RAS points ``(N, 3)`` mm in ``volume_node`` (rounded).

    Raises NeuroContrastError naming the point if one lies outside the volume.
    """
    points_ras = np.atleast_2d(np.asarray(points_ras, dtype=float))
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    ijk = np.rint(homogeneous @ m.T)[:, :3].astype(int)
    dims = np.array(volume_node.GetImageData().GetDimensions())
    outside = np.any((ijk < 0) | (ijk >= dims), axis=1)
    if np.any(outside):
        first = int(np.flatnonzero(outside)[0])
        raise NeuroContrastError(f"point {first + 1} at RAS {tuple(np.round(points_ras[first], 1))} mm lies outside "
                                 f"the volume '{volume_node.GetName()}' (voxel {tuple(ijk[first])}, size {tuple(dims)})")
    return ijk[:, ::-1]


def zyx_to_ras(volume_node, indices_zyx: np.ndarray) -> np.ndarray:
    """RAS positions ``(N, 3)`` mm of voxel centres given as ``(N, 3)`` (z, y, x) indices of ``volume_node``."""
    indices_zyx = np.atleast_2d(np.asarray(indices_zyx, dtype=float))
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    homogeneous = np.c_[indices_zyx[:, ::-1], np.ones(len(indices_zyx))]
    return (homogeneous @ m.T)[:, :3]


# --------------------------------------------------------------------------------------------- sequences

def _time_factor(unit: str) -> Optional[float]:
    unit = (unit or "").strip().lower()
    if unit in ("s", "sec", "second", "seconds"):
        return 1.0
    if unit in ("ms", "msec", "millisecond", "milliseconds"):
        return 1e-3
    return None


def _float_attribute(nodes, names) -> Optional[float]:
    for node in nodes:
        if node is None:
            continue
        for attribute, factor in names:
            value = node.GetAttribute(attribute)
            if value not in (None, ""):
                try:
                    return float(value) * factor
                except ValueError:
                    continue
    return None


def sequence_node_from_array(signal: np.ndarray, geometry: Geometry, tr_s: float, name: str, scene=None,
                             te_s: Optional[float] = None, browser: bool = True):
    """A ``vtkMRMLSequenceNode`` of scalar volumes from a ``(T, Z, Y, X)`` array.

    The index is time in s (``index name 'time'``, unit ``s``, values ``i·tr_s``); ``te_s`` (s) is kept in the
    attribute ``NeuroContrast.EchoTime_s``. With ``browser=True`` a sequence browser node (and its proxy
    volume) is added, as the Sequences module does when it loads a 4D file. Returns ``(sequence, browser)``.
    Raises NeuroContrastError on a non-4D array or tr_s <= 0.
    """
    signal = np.asarray(signal)
    if signal.ndim != 4:
        raise NeuroContrastError(f"'{name}': expected a (T, Z, Y, X) series, got shape {signal.shape}")
    if not tr_s or tr_s <= 0:
        raise NeuroContrastError(f"'{name}': repetition time must be > 0 s, got {tr_s}")
    scene = scene_or_default(scene)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    sequence.SetIndexType(sequence.NumericIndex)
    sequence.SetAttribute("NeuroContrast.RepetitionTime_s", f"{tr_s:.6g}")
    if te_s is not None:
        sequence.SetAttribute("NeuroContrast.EchoTime_s", f"{te_s:.6g}")
    frame = slicer.vtkMRMLScalarVolumeNode()
    for index in range(signal.shape[0]):
        slicer.util.updateVolumeFromArray(frame, np.ascontiguousarray(signal[index], dtype=np.float32))
        set_volume_node_geometry(frame, geometry)
        sequence.SetDataNodeAtValue(frame, f"{index * tr_s:.6g}")
    browser_node = None
    if browser:
        browser_node = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser")
        browser_node.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    return sequence, browser_node


def series_from_sequence_node(node, tr_s: Optional[float] = None,
                              te_s: Optional[float] = None) -> Tuple[np.ndarray, Geometry, float, Optional[float]]:
    """Read a 4D DSC series from a sequence node, a sequence browser node or a multi-volume (vector) node.

    Returns ``(signal (T, Z, Y, X) float32, Geometry, tr_s, te_s)``. TR (s) comes from ``tr_s`` if given,
    else from the numeric time index (unit s or ms; the median step), else from a repetition-time attribute.
    TE (s) from ``te_s``, else an echo-time attribute (``NeuroContrast.EchoTime_s``, ``MultiVolume.DICOM.EchoTime``
    in ms), else ``None``. Raises NeuroContrastError if the node is not a 4D scalar series, frames differ
    in size or geometry, or no TR can be found.
    """
    if node is None:
        raise NeuroContrastError("no DSC input node selected")
    node = resolve_sequence(node)
    if node.IsA("vtkMRMLSequenceNode"):
        return _series_from_sequence(node, tr_s, te_s)
    if node.IsA("vtkMRMLVectorVolumeNode") or node.IsA("vtkMRMLMultiVolumeNode"):
        return _series_from_multivolume(node, tr_s, te_s)
    raise NeuroContrastError(f"'{node.GetName()}' is a {node.GetClassName()}; expected a 4D DSC series "
                             "(a volume sequence or a multi-volume node)")


def _series_from_sequence(sequence, tr_s, te_s):
    name = sequence.GetName()
    count = sequence.GetNumberOfDataNodes()
    if count == 0:
        raise NeuroContrastError(f"sequence '{name}' is empty")
    first = sequence.GetNthDataNode(0)
    if not first.IsA("vtkMRMLScalarVolumeNode") or first.IsA("vtkMRMLLabelMapVolumeNode"):
        raise NeuroContrastError(f"sequence '{name}' holds {first.GetClassName()} items; expected scalar volumes")
    geometry = geometry_from_volume_node(first)
    frames = []
    for index in range(count):
        item = sequence.GetNthDataNode(index)
        item_geometry = geometry_from_volume_node(item)
        if not geometry.same_as(item_geometry):
            raise GeometryError(f"sequence '{name}': frame {index} has {item_geometry.describe()}, "
                                f"frame 0 has {geometry.describe()}")
        frames.append(slicer.util.arrayFromVolume(item))
    signal = np.stack(frames).astype(np.float32, copy=False)
    if tr_s is None:
        factor = _time_factor(sequence.GetIndexUnit())
        if factor is not None and count > 1:
            try:
                values = np.array([float(sequence.GetNthIndexValue(i)) for i in range(count)]) * factor
                steps = np.diff(values)
                if np.all(steps > 0):
                    tr_s = float(np.median(steps))
            except ValueError:
                pass
    if tr_s is None:
        tr_s = _float_attribute((sequence, first), REPETITION_TIME_ATTRIBUTES)
    if tr_s is None or tr_s <= 0:
        raise NeuroContrastError(f"sequence '{name}': the time between frames is unknown (index "
                                 f"'{sequence.GetIndexName()}' in '{sequence.GetIndexUnit()}'); enter TR in s")
    if te_s is None:
        te_s = _float_attribute((sequence, first), ECHO_TIME_ATTRIBUTES)
    return signal, geometry, float(tr_s), te_s


def _series_from_multivolume(node, tr_s, te_s):
    array = slicer.util.arrayFromVolume(node)  # (z, y, x, frames)
    if array.ndim != 4:
        raise NeuroContrastError(f"'{node.GetName()}' is not a 4D multi-volume (array shape {array.shape})")
    signal = np.moveaxis(array, -1, 0).astype(np.float32)
    geometry = geometry_from_volume_node(node)
    if tr_s is None:
        labels = node.GetAttribute("MultiVolume.FrameLabels")
        unit = node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or "ms"
        factor = _time_factor(unit)
        if labels and factor is not None:
            values = np.array([float(v) for v in labels.split(",")]) * factor
            if len(values) == signal.shape[0] and np.all(np.diff(values) > 0):
                tr_s = float(np.median(np.diff(values)))
    if tr_s is None:
        tr_s = _float_attribute((node,), REPETITION_TIME_ATTRIBUTES)
    if tr_s is None or tr_s <= 0:
        raise NeuroContrastError(f"'{node.GetName()}': the time between frames is unknown; enter TR in s")
    if te_s is None:
        te_s = _float_attribute((node,), ECHO_TIME_ATTRIBUTES)
    return signal, geometry, float(tr_s), te_s


def resolve_sequence(node):
    """The sequence behind a node: a browser's master sequence, the sequence a proxy volume shows (what
    ``slicer.util.getNode(name)`` often returns, as the proxy carries the sequence's name), or ``node`` itself.
    Raises NeuroContrastError for a browser without a master sequence."""
    if node.IsA("vtkMRMLSequenceBrowserNode"):
        master = node.GetMasterSequenceNode()
        if master is None:
            raise NeuroContrastError("the sequence browser has no master sequence")
        return master
    if node.IsA("vtkMRMLSequenceNode") or node.GetScene() is None:
        return node
    browsers = node.GetScene().GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for index in range(browsers.GetNumberOfItems()):
        sequence = browsers.GetItemAsObject(index).GetSequenceNode(node)
        if sequence is not None:
            return sequence
    return node


def first_frame_node(node):
    """A scalar volume node on the grid of a DSC input (its first frame, or the volume itself)."""
    node = resolve_sequence(node)
    if node.IsA("vtkMRMLSequenceNode"):
        return node.GetNthDataNode(0)
    return node


# --------------------------------------------------------------------------------------------- masks

def _segmentation_logic():
    return slicer.vtkSlicerSegmentationsModuleLogic


def mask_from_segment(segmentation_node, segment: str, reference_volume_node) -> np.ndarray:
    """Bool ``(Z, Y, X)`` mask of one segment (by ID or name) resampled on ``reference_volume_node``'s grid.

    Raises NeuroContrastError if the segment does not exist.
    """
    seg = segmentation_node.GetSegmentation()
    segment_id = segment if seg.GetSegment(segment) is not None else seg.GetSegmentIdBySegmentName(segment)
    if not segment_id:
        names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
        raise NeuroContrastError(f"segmentation '{segmentation_node.GetName()}' has no segment '{segment}' "
                                 f"(segments: {', '.join(names) or 'none'})")
    scene = segmentation_node.GetScene()
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__neurocontrast_temp__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not _segmentation_logic().ExportSegmentsToLabelmapNode(segmentation_node, ids, label, reference_volume_node):
            raise NeuroContrastError(f"cannot export segment '{segment}' of '{segmentation_node.GetName()}'")
        if label.GetImageData() is None:
            return np.zeros(geometry_from_volume_node(reference_volume_node).shape, bool)
        mask = slicer.util.arrayFromVolume(label) > 0
    finally:
        remove_node(label, scene)  # with the display node the export may have given it
    return mask.copy()


def add_segment_from_mask(segmentation_node, mask: np.ndarray, reference_volume_node, name: str,
                          color: Sequence[float] = (1.0, 0.0, 0.0)) -> str:
    """Add a segment named ``name`` holding the bool ``mask`` (grid of ``reference_volume_node``). Returns its ID."""
    geometry = geometry_from_volume_node(reference_volume_node)
    scene = segmentation_node.GetScene()
    label = volume_node_from_array(np.asarray(mask, dtype=np.uint8), geometry, "__neurocontrast_temp__", scene,
                                   class_name="vtkMRMLLabelMapVolumeNode")
    try:
        if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        seg = segmentation_node.GetSegmentation()
        before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
        if not np.any(mask):
            segment_id = seg.AddEmptySegment("", name, list(color))
        else:
            if not _segmentation_logic().ImportLabelmapToSegmentationNode(label, segmentation_node):
                raise NeuroContrastError(f"cannot import the mask '{name}' into '{segmentation_node.GetName()}'")
            new = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())
                   if seg.GetNthSegmentID(i) not in before]
            segment_id = new[0]
        segment = seg.GetSegment(segment_id)
        segment.SetName(name)
        segment.SetColor(*[float(c) for c in color])
    finally:
        remove_node(label, scene)  # with the display node the export may have given it
    return segment_id


def mask_from_markups(markups_node, reference_volume_node) -> np.ndarray:
    """Bool ``(Z, Y, X)`` mask with the voxel under each control point of a markups node set.

    Raises NeuroContrastError if the node has no points or a point lies outside the volume.
    """
    count = markups_node.GetNumberOfControlPoints()
    if count == 0:
        raise NeuroContrastError(f"markups '{markups_node.GetName()}' has no points")
    points = np.zeros((count, 3))
    for i in range(count):
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(i, position)
        points[i] = position
    indices = ras_to_zyx(reference_volume_node, points)
    mask = np.zeros(geometry_from_volume_node(reference_volume_node).shape, bool)
    mask[indices[:, 0], indices[:, 1], indices[:, 2]] = True
    return mask


def mask_from_node(node, reference_volume_node, segment: Optional[str] = None, name: str = "mask") -> np.ndarray:
    """Bool ``(Z, Y, X)`` mask from a markups node, one segment (ID or name) of a segmentation, or a
    labelmap/scalar volume on the reference grid (non-zero voxels).

    A segmentation needs ``segment``: there is no fallback to its first segment, which would let two inputs
    (AIF and VOF) silently read the same segment. Raises NeuroContrastError for an unsupported node, no or a
    missing segment, or a volume on another grid.
    """
    if node is None:
        raise NeuroContrastError(f"{name}: no node selected")
    if node.IsA("vtkMRMLMarkupsNode"):
        return mask_from_markups(node, reference_volume_node)
    if node.IsA("vtkMRMLSegmentationNode"):
        if not segment:
            seg = node.GetSegmentation()
            names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
            raise NeuroContrastError(f"{name}: choose a segment of '{node.GetName()}' "
                                     f"(segments: {', '.join(names) or 'none yet'})")
        return mask_from_segment(node, segment, reference_volume_node)
    if node.IsA("vtkMRMLScalarVolumeNode"):
        from neurocontrast.io import check_same_geometry
        check_same_geometry(geometry_from_volume_node(reference_volume_node), geometry_from_volume_node(node),
                            reference_volume_node.GetName(), f"{name} '{node.GetName()}'")
        return slicer.util.arrayFromVolume(node) != 0
    raise NeuroContrastError(f"{name}: '{node.GetName()}' is a {node.GetClassName()}; expected markups points, "
                             "a segmentation or a labelmap")


# --------------------------------------------------------------------------------------------- tables

def table_node_from_columns(columns: Dict[str, Sequence], name: str, scene=None, node=None):
    """A ``vtkMRMLTableNode`` whose columns are ``columns`` (name → values; numbers become double columns,
    anything else string columns). All columns must have the same length. Updates ``node`` if given."""
    scene = scene_or_default(scene)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise NeuroContrastError(f"table '{name}': columns differ in length {sorted(lengths)}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    for column_name, values in columns.items():
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                      for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(column_name)
        for value in values:
            if numeric:
                array.InsertNextValue(float(value))
            else:
                array.InsertNextValue(str(value))
        table.AddColumn(array)
    node.Modified()
    return node


def table_column(node, column: str) -> list:
    """The values of a table node column as a Python list (floats or strings)."""
    array = node.GetTable().GetColumnByName(column)
    if array is None:
        raise NeuroContrastError(f"table '{node.GetName()}' has no column '{column}'")
    return [array.GetValue(i) for i in range(array.GetNumberOfTuples())]
