"""The perfusion viewer's controller: one DSC series in a trame-slicer scene, driven by ``PerfusionNetLogic``.

The series is read once (``io.read_dsc``) into a sequence node named "DSC series" (the page never sees the
file path). The AIF and the VOF each come from clicked points (markups "AIF" / "VOF") or painted voxels
(segments "AIF" / "VOF" of the segmentation "AIF/VOF paint", trame-slicer's paint effect); the automatic
AIF suggestion (``PerfusionNetLogic.suggest_aif``, Mouridsen 2006) and the automatic VOF
(``PerfusionNetLogic.suggest_vof``, superior sagittal sinus) fill the AIF / VOF points for the user to
edit, and ``aif_mode="auto"`` lets the pipeline choose. Curves are recomputed on every change
(``PerfusionNetLogic.compute_curves``). :meth:`PerfusionViewer.compute` is ``PerfusionNetLogic.run``: the
one place this package calls the perfusion pipeline. Maps show with their colour table, a colour bar
(:func:`colour_bar`) and the Tmax > 6 s outline; the report PNG is ``perfusion.report.overview_figure``.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast_web.scene import DeferredWork

log = logging.getLogger(__name__)

SOURCES = ("points", "paint")
MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
PAINT_NODE = "AIF/VOF paint"
BRUSH_DIAMETER_MM = 4.0


def colour_bar(display_node, n: int = 12) -> Dict:
    """CSS gradient, range and unit of a scalar volume display node's colour table (for the page)."""
    lut = display_node.GetColorNode().GetLookupTable()
    low, high = display_node.GetWindowLevelMin(), display_node.GetWindowLevelMax()
    table_low, table_high = lut.GetRange()
    stops = []
    for i in range(n):
        value = table_low + (table_high - table_low) * i / (n - 1)
        rgb = [0.0, 0.0, 0.0]
        lut.GetColor(value, rgb)
        r, g, b = rgb
        stops.append(f"rgb({int(255 * r)},{int(255 * g)},{int(255 * b)}) {100 * i / (n - 1):.0f}%")
    return {"gradient": f"linear-gradient(to right, {', '.join(stops)})", "min": round(float(low), 2),
            "max": round(float(high), 2)}


def curves_png(curves) -> str:
    """A data URL (PNG) of the AIF and VOF curves (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=100)
    if curves.aif is not None:
        ax.plot(curves.times_s, curves.aif, "r.-", label=f"AIF ({curves.aif_voxels} voxels)")
    if curves.aif_raw is not None:
        ax.plot(curves.times_s, curves.aif_raw, color="#f29999", label="AIF before VOF rescaling")
    if curves.vof is not None:
        ax.plot(curves.times_s, curves.vof, "b.-", label=f"VOF ({curves.vof_voxels} voxels)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ΔR2* (1/s)" if curves.unit == "1/s" else "−ln(S/S0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class PerfusionViewer(DeferredWork):
    """The viewer's operations. Parameters: ``dsc_path`` (4D DSC), ``slicer_app`` (trame-slicer SlicerApp),
    ``te_s``/``tr_s`` (override the file's), ``brain_mask`` (path on the DSC grid or None: automatic),
    ``schedule`` (runs a callable outside the current VTK event; None: queue for :meth:`run_deferred`).

    Raises NeuroContrastError / FileNotFoundError for an unreadable or non-4D series.
    """

    def __init__(self, dsc_path, slicer_app, te_s: Optional[float] = None, tr_s: Optional[float] = None,
                 brain_mask: Optional[str] = None, schedule: Optional[Callable] = None):
        import slicer
        from NeuroContrastLib import mrml
        from PerfusionNetLib.logic import PerfusionNetLogic, PerfusionNetParameters

        from neurocontrast.io import read_dsc, read_mask

        self.app = slicer_app
        self.scene = slicer_app.scene
        dsc = read_dsc(str(dsc_path), tr_s=tr_s, te_s=te_s)
        self.sequence, self.browser = mrml.sequence_node_from_array(dsc.signal, dsc.geometry, dsc.tr_s, "DSC series",
                                                                    self.scene, te_s=dsc.te_s)
        self.n_frames = int(dsc.signal.shape[0])
        self.logic = PerfusionNetLogic(self.scene)
        self.params = PerfusionNetParameters(dsc_node_id=self.sequence.GetID(), output_prefix="Result")
        self.frame_node = mrml.first_frame_node(self.sequence)
        self.reference = self.logic.load_dsc(self.params)[1]
        if brain_mask:
            mask = read_mask(str(brain_mask), dsc.geometry, name="brain mask")
            brain = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Brain")
            brain.CreateDefaultDisplayNodes()
            brain.GetDisplayNode().SetVisibility(False)
            mrml.add_segment_from_mask(brain, np.asarray(mask, bool), self.reference, "Brain", (0.9, 0.9, 0.2))
            self.params.brain_node_id, self.params.brain_segment = brain.GetID(), "Brain"
        del dsc  # the sequence holds the frames
        self.points = {}
        for role, color in (("aif", (0.95, 0.1, 0.1)), ("vof", (0.1, 0.3, 0.95))):
            node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", role.upper())
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(*color)
            node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, lambda *_: self._defer(self.update_curves))
            node.AddObserver(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, lambda *_: self._defer(self.update_curves))
            self.points[role] = node
        self.paint_node = None
        self.source = {"aif": "points", "vof": "points"}
        self.aif_auto = False
        self.curves = None
        self.curves_image = ""
        self.outputs = None
        self.shown_map = ""
        self.message = ""
        self.progress = 0.0
        self.on_change: Optional[Callable[[], None]] = None
        self._init_deferred(schedule)
        self.show_frame(0, reset=True)

    # ------------------------------------------------------------------ plumbing
    def slice_views(self) -> list:
        return list(self.app.view_manager.get_slice_views())

    # ------------------------------------------------------------------ display
    def show_frame(self, index: int, reset: bool = False) -> None:
        """Show DSC frame ``index`` (0-based) in every slice view, maps hidden."""
        if not 0 <= int(index) < self.n_frames:
            raise NeuroContrastError(f"frame must lie in 0..{self.n_frames - 1}, got {index}")
        self.browser.SetSelectedItemNumber(int(index))
        from neurocontrast_web.scene import link_slice_views

        for view in self.slice_views():
            view.set_background_volume_id(self.frame_node.GetID())
            view.set_foreground_volume_id(None)
            if reset:
                view.fit_view_to_content()
        link_slice_views(self.scene)
        self.shown_map = ""

    def show_map(self, name: str) -> None:
        """Show a computed map (cbf, cbv, mtt, tmax, ttp) with its colour table in every slice view."""
        if self.outputs is None:
            raise NeuroContrastError("compute the maps first")
        node = self.outputs.map_nodes.get(name)
        if node is None:
            raise NeuroContrastError(f"no map {name!r}; computed: {', '.join(self.outputs.map_nodes)}")
        for view in self.slice_views():
            view.set_background_volume_id(node.GetID())
        self.shown_map = name

    def reset_views(self) -> None:
        for view in self.slice_views():
            view.fit_view_to_content()

    # ------------------------------------------------------------------ AIF / VOF
    def place_points(self, role: str) -> None:
        """Clicks in a slice view add points to the AIF or VOF list (until :meth:`stop_placing`)."""
        self._check_role(role)
        self.source[role] = "points"
        self.app.segmentation_editor.deactivate_effect()
        self.app.markups_logic.place_node(self.points[role], persistent=True)

    def stop_placing(self) -> None:
        self.app.markups_logic.disable_place_mode()
        self.app.segmentation_editor.deactivate_effect()

    def paint(self, role: str) -> None:
        """Left-drag in a slice view paints the AIF or VOF segment (brush :data:`BRUSH_DIAMETER_MM`)."""
        from trame_slicer.segmentation import SegmentationEffectPaint

        self._check_role(role)
        self.app.markups_logic.disable_place_mode()
        editor = self.app.segmentation_editor
        if self.paint_node is None:
            self.paint_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", PAINT_NODE)
            self.paint_node.CreateDefaultDisplayNodes()
            editor.set_active_segmentation(self.paint_node, self.frame_node)
            for name, color in (("AIF", [0.95, 0.1, 0.1]), ("VOF", [0.1, 0.3, 0.95])):
                editor.add_empty_segment(segment_id=name, segment_name=name, segment_color=color)
            editor.segmentation_modified.connect(lambda *_: self._defer(self.update_curves))
        editor.set_active_segment_id(role.upper())
        effect = editor.set_active_effect_type(SegmentationEffectPaint)
        from trame_slicer.segmentation.abstract_segmentation_effect_brush import BrushDiameterMode

        effect.set_brush_diameter(BRUSH_DIAMETER_MM, BrushDiameterMode.Absolute)
        self.source[role] = "paint"

    def clear(self, role: str) -> None:
        self._check_role(role)
        if self.source[role] == "points":
            self.points[role].RemoveAllControlPoints()
        elif self.paint_node is not None:
            self.app.segmentation_editor.set_active_segment_id(role.upper())
            segmentation = self.paint_node.GetSegmentation()
            segmentation.RemoveSegment(role.upper())
            self.app.segmentation_editor.add_empty_segment(segment_id=role.upper(), segment_name=role.upper())
        self.update_curves()

    def suggest_aif(self) -> int:
        """Fill the AIF points with the automatic candidates (editable). Returns their number."""
        return self._fill_points("aif", self.logic.suggest_aif(self._params()))

    def suggest_vof(self) -> int:
        """Fill the VOF points with the automatic VOF (``PerfusionNetLogic.suggest_vof``: superior sagittal sinus,
        the voxels a run with the automatic VOF uses), editable. Returns their number."""
        return self._fill_points("vof", self.logic.suggest_vof(self._params()))

    def _fill_points(self, role: str, candidates) -> int:
        """Replace the ``role`` points by the candidates' positions and remove the candidates node."""
        from NeuroContrastLib.mrml import remove_node

        points = self.points[role]
        points.RemoveAllControlPoints()
        for i in range(candidates.GetNumberOfControlPoints()):
            position = [0.0, 0.0, 0.0]
            candidates.GetNthControlPointPositionWorld(i, position)
            points.AddControlPointWorld(*position)
        remove_node(candidates, self.scene)
        self.source[role] = "points"
        self.update_curves()
        return points.GetNumberOfControlPoints()

    def set_aif_auto(self, auto: bool) -> None:
        """Let the pipeline choose the AIF (``aif_mode="auto"``) instead of the placed one."""
        self.aif_auto = bool(auto)

    def _check_role(self, role: str) -> None:
        if role not in ("aif", "vof"):
            raise NeuroContrastError(f"role must be 'aif' or 'vof', got {role!r}")

    def _selection(self, role: str):
        """(node id, segment) of the role's current source, or ("", "") when it has no voxel yet."""
        if self.source[role] == "points":
            node = self.points[role]
            return (node.GetID(), "") if node.GetNumberOfControlPoints() else ("", "")
        if self.paint_node is None:
            return "", ""
        array = self.app.segmentation_editor.get_segment_labelmap(role.upper(), as_numpy_array=True)
        return (self.paint_node.GetID(), role.upper()) if array is not None and np.any(array) else ("", "")

    def _params(self):
        import dataclasses

        params = dataclasses.replace(self.params)
        params.aif_node_id, params.aif_segment = self._selection("aif")
        params.vof_node_id, params.vof_segment = self._selection("vof")
        params.aif_mode = "auto" if self.aif_auto else "mask"
        return params

    def update_curves(self) -> None:
        """Recompute the AIF/VOF curves of the current selection (nothing selected: no curves)."""
        params = self._params()
        if not params.aif_node_id and not params.vof_node_id:
            self.curves, self.curves_image = None, ""
            return
        self.curves = self.logic.compute_curves(params)
        self.curves_image = curves_png(self.curves)

    # ------------------------------------------------------------------ compute
    def set_method(self, method: str) -> None:
        from PerfusionNetLib.logic import available_methods

        if method not in available_methods():
            raise NeuroContrastError(f"method must be one of {', '.join(available_methods())}, got {method!r}")
        self.params.method = method

    def compute(self, progress=None):
        """``PerfusionNetLogic.run`` on the current selection; shows Tmax with the Tmax > 6 s outline."""
        self.stop_placing()
        params = self._params()
        self.outputs = self.logic.run(params, progress=progress)
        segmentation = self.outputs.hypoperfusion_segmentation
        if segmentation is not None:
            display = segmentation.GetDisplayNode()
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
            display.SetSliceIntersectionThickness(2)
        from PerfusionNetLib.logic import _result_curves

        curves = _result_curves(self.outputs.result, self.logic.load_dsc(params)[0])
        if curves is not None:
            self.curves, self.curves_image = curves, curves_png(curves)
        self.show_map("tmax")
        self.message = f"maps computed ({params.method})"
        return self.outputs

    def volumes(self) -> List[Dict]:
        """Rows of the volumes table (measure, value, unit)."""
        if self.outputs is None or self.outputs.volumes_table is None:
            return []
        from NeuroContrastLib.mrml import table_column

        table = self.outputs.volumes_table
        return [{"measure": m, "value": v, "unit": u} for m, v, u in
                zip(table_column(table, "Measure"), table_column(table, "Value"), table_column(table, "Unit"))]

    def report_png(self) -> bytes:
        """The one-page overview (``perfusion.report.overview_figure``) as PNG bytes."""
        if self.outputs is None:
            raise NeuroContrastError("compute the maps first")
        from neurocontrast.perfusion.report import overview_figure

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "report.png"
            overview_figure(self.outputs.result, str(path), title=f"Perfusion maps ({self.params.method})")
            return path.read_bytes()

    # ------------------------------------------------------------------ page
    def page_state(self) -> Dict:
        from PerfusionNetLib.logic import METHOD_LABELS, MAP_UNITS, available_methods

        shown = {}
        if self.shown_map and self.outputs is not None:
            shown = colour_bar(self.outputs.map_nodes[self.shown_map].GetDisplayNode())
            shown["unit"] = MAP_UNITS.get(self.shown_map, "")
            shown["name"] = self.shown_map.upper() if self.shown_map != "tmax" else "Tmax"
        quality = []
        if self.curves is not None:
            for key in sorted(set(self.curves.aif_quality) | set(self.curves.vof_quality)):
                a, v = self.curves.aif_quality.get(key), self.curves.vof_quality.get(key)
                quality.append({"figure": key, "aif": "" if a is None else f"{a:.3g}",
                                "vof": "" if v is None else f"{v:.3g}"})
        return {
            "methods": [{"value": m, "title": METHOD_LABELS.get(m, m)} for m in available_methods()],
            "method": self.params.method,
            "n_frames": self.n_frames,
            "aif_source": self.source["aif"], "vof_source": self.source["vof"],
            "aif_points": self.points["aif"].GetNumberOfControlPoints(),
            "vof_points": self.points["vof"].GetNumberOfControlPoints(),
            "aif_voxels": self.curves.aif_voxels if self.curves is not None else 0,
            "vof_voxels": self.curves.vof_voxels if self.curves is not None else 0,
            "aif_auto": self.aif_auto,
            "curves_image": self.curves_image,
            "quality": quality,
            "computed": self.outputs is not None,
            "maps": [m for m in MAPS if self.outputs is not None and m in self.outputs.map_nodes],
            "shown_map": self.shown_map,
            "colour_bar": shown,
            "volumes": self.volumes(),
            "message": self.message,
        }
