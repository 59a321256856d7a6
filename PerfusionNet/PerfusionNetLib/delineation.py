"""Manual AIF/VOF delineation as Slicer users do it: markups points or Segment Editor painting (no Qt).

- :data:`CURVE_INPUT_EVENTS` / :func:`curve_input_events`: the MRML events that change an AIF/VOF input while
  the user edits it (a control point added, moved or removed; a segment added, renamed, removed or painted).
  The generic ``ModifiedEvent`` is *not* among them: moving a point or painting a stroke does not fire it.
- :func:`bolus_images`: the frame at the bolus peak and the minimum-intensity projection over the bolus
  passage, where arteries and the large veins are darkest: the source volume to paint the AIF and VOF on.
- :func:`prepare_delineation`: that source volume and a segmentation with ``AIF`` and ``VOF`` segments (the
  selected one, or a new one on the DSC grid) for the Segment Editor.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

import slicer

from neurocontrast.errors import NeuroContrastError
from NeuroContrastLib import mrml

SOURCES = {"peak": "bolus-peak frame", "minip": "minimum-intensity projection over the bolus"}
#: event names per input kind (attributes of vtkMRMLMarkupsNode / vtkSegmentation)
CURVE_INPUT_EVENTS = {
    "vtkMRMLMarkupsNode": ("PointAddedEvent", "PointRemovedEvent", "PointModifiedEvent", "PointPositionDefinedEvent"),
    "vtkMRMLSegmentationNode": ("SegmentAdded", "SegmentRemoved", "SegmentModified", "SourceRepresentationModified"),
}
SEGMENT_COLORS = {"AIF": (0.9, 0.1, 0.1), "VOF": (0.1, 0.3, 0.95)}


def curve_input_events(node) -> List[int]:
    """The event ids to observe on an AIF/VOF input node (empty for None or other node types)."""
    if node is None:
        return []
    if node.IsA("vtkMRMLMarkupsNode"):
        return [getattr(slicer.vtkMRMLMarkupsNode, name) for name in CURVE_INPUT_EVENTS["vtkMRMLMarkupsNode"]]
    if node.IsA("vtkMRMLSegmentationNode"):
        return [getattr(slicer.vtkSegmentation, name) for name in CURVE_INPUT_EVENTS["vtkMRMLSegmentationNode"]]
    return []


def segment_id(node, id_or_name: str) -> str:
    """The ID of the segment given by ID or name in a segmentation node ("" when absent or not a segmentation)."""
    if node is None or not node.IsA("vtkMRMLSegmentationNode") or not id_or_name:
        return ""
    segmentation = node.GetSegmentation()
    if segmentation.GetSegment(id_or_name) is not None:
        return id_or_name
    return segmentation.GetSegmentIdBySegmentName(id_or_name) or ""


def bolus_images(signal: np.ndarray, baseline_fraction: float = 0.1) -> Tuple[int, np.ndarray, np.ndarray]:
    """The bolus-peak frame and the minimum-intensity projection (MinIP) over the bolus of a DSC series.

    ``signal`` (T, Z, Y, X) float. The mean signal curve of the voxels whose first-frame signal exceeds
    ``baseline_fraction`` of the 99th percentile (tissue, not air) has its minimum at the bolus peak; the bolus
    passage is the run of frames around it where the drop below the first-frame mean is at least half the
    maximum drop. Returns ``(peak index, peak frame (Z, Y, X), MinIP (Z, Y, X))``, float32. Raises
    NeuroContrastError when the series shows no signal drop (no bolus).
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 4 or signal.shape[0] < 3:
        raise NeuroContrastError(f"expected a (T, Z, Y, X) DSC series, got shape {signal.shape}")
    first = signal[0]
    tissue = first > baseline_fraction * np.percentile(first, 99)
    if not np.any(tissue):
        raise NeuroContrastError("the DSC series is empty (no voxel above the background)")
    curve = signal[:, tissue].mean(axis=1)
    drop = curve[0] - curve
    peak = int(np.argmin(curve))
    if drop[peak] <= 0:
        raise NeuroContrastError("the DSC series shows no signal drop: no bolus to delineate the AIF on")
    start, end = peak, peak
    while start > 0 and drop[start - 1] >= 0.5 * drop[peak]:
        start -= 1
    while end < len(curve) - 1 and drop[end + 1] >= 0.5 * drop[peak]:
        end += 1
    return peak, signal[peak].copy(), signal[start:end + 1].min(axis=0)


@dataclasses.dataclass
class DelineationNodes:
    """What the Segment Editor gets: the source volume, the segmentation and its AIF and VOF segment IDs."""

    source_volume: object
    segmentation: object
    aif_segment_id: str
    vof_segment_id: str
    peak_index: int


def prepare_delineation(logic, params, source: str = "peak") -> DelineationNodes:
    """Source volume (``<DSC> bolus peak`` or ``<DSC> bolus MinIP``, updated in place on later calls) and the
    AIF/VOF segmentation for painting: the selected AIF segmentation if there is one, else ``<DSC> AIF/VOF`` on
    the DSC grid; ``AIF`` and ``VOF`` segments are added when missing (the selected segments are kept).

    ``logic`` is a :class:`~PerfusionNetLib.logic.PerfusionNetLogic` (its cached DSC series is used). Raises
    NeuroContrastError for an unknown source or a series without a bolus.
    """
    if source not in SOURCES:
        raise NeuroContrastError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    dsc, reference = logic.load_dsc(params)
    peak, peak_frame, minip = bolus_images(dsc.signal)
    scene = logic.scene
    base = logic.scene.GetNodeByID(params.dsc_node_id).GetName()
    name = f"{base} bolus {'peak' if source == 'peak' else 'MinIP'}"
    existing = scene.GetNodesByClassByName("vtkMRMLScalarVolumeNode", name)
    volume = mrml.volume_node_from_array(peak_frame if source == "peak" else minip, dsc.geometry, name, scene,
                                         node=existing.GetItemAsObject(0) if existing.GetNumberOfItems() else None)
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    segmentation = _selected_segmentation(scene, params)
    if segmentation is None:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{base} AIF/VOF")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    ids = {}
    for role, chosen in (("AIF", params.aif_segment), ("VOF", params.vof_segment)):
        found = segment_id(segmentation, chosen) or segment_id(segmentation, role)
        if not found:
            found = segmentation.GetSegmentation().AddEmptySegment(role, role, list(SEGMENT_COLORS[role]))
        ids[role] = found
    return DelineationNodes(volume, segmentation, ids["AIF"], ids["VOF"], peak)


def _selected_segmentation(scene, params) -> Optional[object]:
    for node_id in (params.aif_node_id, params.vof_node_id):
        node = scene.GetNodeByID(node_id) if node_id else None
        if node is not None and node.IsA("vtkMRMLSegmentationNode"):
            return node
    return None


def curves_summary(curves) -> str:
    """The status line under the curves: voxel counts and the AIF quality figures (peak, time to peak, FWHM,
    SNR; ``aif.aif_quality``) of ``Curves``, ``nan`` where a figure is unavailable; "AIF (automatic)" /
    "VOF (automatic)" when the curve is the core's automatic one (``Curves.label``)."""
    nan = float("nan")
    q = curves.aif_quality
    return (f"{curves.label('AIF')}: {curves.aif_voxels} voxel(s), peak {q.get('peak', nan):.3g} {curves.unit}, "
            f"TTP {q.get('time_to_peak_s', nan):.3g} s, FWHM {q.get('fwhm_s', nan):.3g} s, "
            f"SNR {q.get('snr', nan):.3g}; {curves.label('VOF')}: {curves.vof_voxels} voxel(s)")
