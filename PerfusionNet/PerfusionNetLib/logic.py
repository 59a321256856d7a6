"""PerfusionNet logic: MRML nodes in → ``neurocontrast.perfusion`` → MRML nodes out (no Qt).

One call per user action of the PerfusionNet panel:

- :meth:`PerfusionNetLogic.update_curves` -- the AIF and VOF ΔR2*(t) curves a run with the current settings uses
  (markups points or segments, or the automatic AIF/VOF in the automatic modes, labelled so) into a table node
  and a plot chart (AIF and VOF together) plus a table of their quality figures;
- :meth:`PerfusionNetLogic.suggest_aif` -- the automatic AIF (``pipeline.automatic_aif``, Mouridsen 2006; the
  voxels a run with the automatic AIF uses) as a markups point list the clinician can edit and then use as the AIF;
- :meth:`PerfusionNetLogic.suggest_vof` -- the automatic VOF (``pipeline.automatic_vof``, superior sagittal
  sinus) as a markups point list, the voxels a run with the automatic VOF uses;
- :meth:`PerfusionNetLogic.run` -- ``pipeline.run_perfusion`` with progress (core from a segment or from an
  ADC map, relative maps to an optional reference region); maps as scalar volumes with colour
  maps and window/level (Tmax 0–10 s), the Tmax > 6 s region as a segmentation, volumes in a table.

Inputs: a 4D DSC series as a volume sequence (Sequences module), its browser, or a multi-volume/vector volume.
TR comes from the sequence's time index (or the TR field), TE from the node attributes (or the TE field).
Heavy imports (scipy, the perfusion core) happen inside the methods, after the dependency check.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import slicer

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report, scaled
from NeuroContrastLib import mrml
from PerfusionNetLib.display import apply_map_display, display_range  # noqa: F401 (re-exported)

METHOD_LABELS = {"osvd": "oSVD (block-circulant, oscillation index)", "csvd": "cSVD (block-circulant)",
                 "ssvd": "sSVD (standard)", "tikhonov": "Tikhonov", "stnet": "ST-Net (deep)",
                 "stnet-s": "ST-Net-S (deep, fast CPU option)", "tmaxnet": "AIF-free Tmax network (deep)"}
AIF_MODES = ("mask", "auto")
VOF_MODES = ("mask", "auto")
MAP_ATTRIBUTE = "NeuroContrast.PerfusionMap"
#: Names defined once in the core, read from there on first use (the core imports scipy: lazily, after the
#: dependency check): the deconvolution methods, the clinical Tmax threshold and the map units.
_CORE_NAMES = {"CLASSIC_METHODS": ("neurocontrast.perfusion.pipeline", "deconvolution_methods"),
               "HYPOPERFUSION_THRESHOLD_S": ("neurocontrast.perfusion.pipeline", "HYPOPERFUSION_THRESHOLD_S"),
               "MAP_UNITS": ("neurocontrast.perfusion.maps", "MAP_UNITS")}


def __getattr__(name):  # PEP 562
    if name in _CORE_NAMES:
        import importlib

        module, attribute = _CORE_NAMES[name]
        value = getattr(importlib.import_module(module), attribute)
        return value() if callable(value) else value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class PerfusionNetParameters:
    """Everything the Apply button needs; kept in the module's parameter node (node fields as node references).

    Node fields (``*_node_id``, :data:`NODE_ID_FIELDS`) hold MRML node IDs ("" for none). ``*_segment`` is a
    segment ID or name (segmentation inputs only; required, no fallback to the first segment). The optional
    core (a segment, or an ADC volume ``adc_node_id`` with an optional DWI ``dwi_node_id``: core = ADC < 620 ×
    10⁻⁶ mm²/s, ``lesion.adc_core``) adds the mismatch volume and ratio. ``aif_mode``/``vof_mode`` "auto"
    ignore the drawn AIF/VOF and let the core find them (``PerfusionOptions.aif``/``vof``; the live curves and
    Suggest AIF/VOF show those); ``vof_rescale`` False uses the AIF as measured. The optional reference
    region (``reference_node_id``/``reference_segment``) normalises rCBF, rCBV, rMTT (default: contralateral
    normal-appearing white matter). ``tr_s``/``te_s`` = 0 take the values from the data. ``tikhonov_lambda``
    = 0 selects one λ for the series by generalised cross-validation. ``osvd_oi`` (oscillation index, default
    0.095 after Wu et al. 2003) and ``svd_threshold`` (fraction of the largest singular value for sSVD/cSVD)
    follow :mod:`neurocontrast.perfusion.deconvolution`. The widget shows each field through one row of
    ``PerfusionNet.UI_FIELDS``.
    """

    dsc_node_id: str = ""
    aif_node_id: str = ""
    aif_segment: str = ""
    vof_node_id: str = ""
    vof_segment: str = ""
    brain_node_id: str = ""
    brain_segment: str = ""
    core_node_id: str = ""
    core_segment: str = ""
    adc_node_id: str = ""
    dwi_node_id: str = ""
    reference_node_id: str = ""
    reference_segment: str = ""
    aif_mode: str = "mask"
    vof_mode: str = "mask"
    vof_rescale: bool = True
    method: str = "osvd"
    osvd_oi: float = 0.095
    svd_threshold: float = 0.0
    tikhonov_lambda: float = 0.0
    tr_s: float = 0.0
    te_s: float = 0.0
    output_prefix: str = ""

    def problems(self, scene=None) -> List[str]:
        """What prevents Apply (empty when valid)."""
        scene = mrml.scene_or_default(scene)
        out = []
        if not self.dsc_node_id or scene.GetNodeByID(self.dsc_node_id) is None:
            out.append("select the 4D DSC series")
        if self.aif_mode not in AIF_MODES:
            out.append(f"AIF mode must be one of {', '.join(AIF_MODES)}")
        elif (self.aif_mode == "mask" and method_needs_aif(self.method)
              and (not self.aif_node_id or scene.GetNodeByID(self.aif_node_id) is None)):
            out.append("select the AIF (points or segment) or choose the automatic AIF")
        if self.vof_mode not in VOF_MODES:
            out.append(f"VOF mode must be one of {', '.join(VOF_MODES)}")
        for node_id, what in ((self.adc_node_id, "ADC map"), (self.dwi_node_id, "DWI"),
                              (self.reference_node_id, "reference region")):
            if node_id and scene.GetNodeByID(node_id) is None:
                out.append(f"the selected {what} is no longer in the scene")
        if self.adc_node_id and self.core_node_id:
            out.append("choose either a core segment or an ADC map for the core, not both")
        if self.dwi_node_id and not self.adc_node_id:
            out.append("the DWI only refines the ADC core: select the ADC map too")
        if self.method not in available_methods():
            out.append(f"method '{self.method}' is not available ({', '.join(available_methods())})")
        if self.tr_s < 0 or self.te_s < 0:
            out.append("TR and TE must be >= 0 s (0 = from the data)")
        if self.osvd_oi <= 0 or not 0 <= self.svd_threshold < 1 or self.tikhonov_lambda < 0:
            out.append("method parameters out of range (OI > 0, 0 <= threshold < 1, λ >= 0)")
        return out

    def is_valid(self, scene=None) -> bool:
        return not self.problems(scene)

    def has_curve_inputs(self) -> bool:
        """True when the panel has curves to show: a DSC series and a drawn AIF or VOF, or an automatic mode."""
        return bool(self.dsc_node_id) and bool(self.aif_node_id or self.vof_node_id or self.aif_mode == "auto"
                                              or self.vof_mode == "auto")

    def options(self):
        """The core's :class:`~neurocontrast.perfusion.parameters.PerfusionOptions` for these fields: the
        panel's one SVD threshold goes to the chosen method's own field (sSVD or cSVD), λ = 0 means one λ by
        generalised cross-validation. Raises NeuroContrastError on values the parameter objects refuse."""
        from neurocontrast.perfusion.parameters import PerfusionOptions, SVDParams, TikhonovParams

        svd = SVDParams(osvd_oi=float(self.osvd_oi))
        if self.svd_threshold > 0:
            svd = svd.with_threshold(self.method, float(self.svd_threshold))
        tikhonov = TikhonovParams(float(self.tikhonov_lambda) if self.tikhonov_lambda > 0 else None)
        return PerfusionOptions(method=self.method, aif=self.aif_mode, vof=self.vof_mode,
                                vof_rescale=bool(self.vof_rescale), svd=svd, tikhonov=tikhonov)

    def write(self, parameter_node) -> None:
        """Store in the module's ``vtkMRMLScriptedModuleNode``: the ``*_node_id`` fields as node references
        (:data:`NODE_ID_FIELDS`: they follow node-ID changes on scene import and are saved with the scene), the
        rest as strings (``NeuroContrastLib.parameternode``, as VirtualGadolinium and ReaderStudy)."""
        from NeuroContrastLib.parameternode import write_parameters

        write_parameters(self, parameter_node, (), NODE_ID_FIELDS)

    @classmethod
    def read(cls, parameter_node) -> "PerfusionNetParameters":
        """Read back what :meth:`write` stored (missing or unreadable entries keep their defaults; a node
        field reads the ID of the node it references, "" for none)."""
        from NeuroContrastLib.parameternode import read_parameters

        return read_parameters(cls, parameter_node, (), NODE_ID_FIELDS)


#: The fields of :class:`PerfusionNetParameters` that hold MRML node IDs (node references in the parameter node).
NODE_ID_FIELDS = tuple(field.name for field in dataclasses.fields(PerfusionNetParameters)
                       if field.name.endswith("_node_id"))


def available_methods() -> Tuple[str, ...]:
    """The methods registered in ``pipeline.MAP_METHODS``: deconvolution first, then the networks."""
    from neurocontrast.perfusion.pipeline import deconvolution_methods, network_methods

    return deconvolution_methods() + network_methods()


def method_needs_aif(method: str) -> bool:
    """False only for AIF-free methods (``MapMethod.needs_aif`` of the pipeline registry, e.g. ``tmaxnet``)."""
    try:
        from neurocontrast.perfusion.pipeline import MAP_METHODS
    except ImportError:
        return True
    entry = MAP_METHODS.get(method)
    return True if entry is None else bool(entry.needs_aif)


@dataclasses.dataclass
class Curves:
    """AIF/VOF curves: ``times_s`` (T′,) s from the first frame of the series (from the first steady-state
    baseline frame on, as the pipeline uses them), ``aif``/``vof`` (T′,) ΔR2* in 1/s (``unit``), their quality
    figures (``aif.aif_quality``), voxel counts, after a run the AIF before VOF rescaling (``aif_raw``; None when
    equal or unknown), and whether the AIF/VOF is the core's automatic one (``aif_automatic``/``vof_automatic``;
    :meth:`label` names the curve so)."""

    times_s: np.ndarray
    aif: Optional[np.ndarray]
    vof: Optional[np.ndarray]
    aif_quality: Dict[str, float]
    vof_quality: Dict[str, float]
    aif_voxels: int
    vof_voxels: int
    unit: str
    aif_raw: Optional[np.ndarray] = None
    aif_automatic: bool = False
    vof_automatic: bool = False

    def label(self, role: str) -> str:
        """``"AIF"``/``"VOF"`` (``role``), with " (automatic)" when that curve is the automatic one."""
        automatic = {"AIF": self.aif_automatic, "VOF": self.vof_automatic}[role]
        return f"{role} (automatic)" if automatic else role


@dataclasses.dataclass
class PerfusionNetOutputs:
    """What :meth:`PerfusionNetLogic.run` added to the scene, and the core result."""

    map_nodes: Dict[str, Any]
    hypoperfusion_segmentation: Any
    volumes_table: Any
    curves_chart: Any
    result: Any


class PerfusionNetLogic:
    """The PerfusionNet operations on a scene (default ``slicer.mrmlScene``)."""

    def __init__(self, scene=None):
        self._scene = scene
        self._dsc_cache = None  # (key, DSCSeries, reference node): live curve updates read the series once
        self._automatic_cache: Dict[Any, Any] = {}  # the automatic AIF/VOF of that series, by brain/AIF/method

    @property
    def scene(self):
        return mrml.scene_or_default(self._scene)

    def _node(self, node_id: str, what: str):
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is None:
            raise NeuroContrastError(f"{what}: no node selected")
        return node

    # ----------------------------------------------------------------------------------------- inputs
    def load_dsc(self, params: PerfusionNetParameters):
        """The DSC input as ``(DSCSeries, reference volume node)``; the reference is a 3D node on its grid.

        The series is cached while the node (time, attributes) and the TR/TE fields are unchanged, so live
        curve updates do not copy the 4D series again.

        Raises NeuroContrastError for a non-4D input, unknown TR or one outside 0.3–5 s (a time index in ms
        without its unit), or fewer than 10 frames.
        """
        from neurocontrast.io import DSCSeries

        node = self._node(params.dsc_node_id, "DSC series")
        source = mrml.resolve_sequence(node)
        key = (source.GetID(), source.GetMTime(), params.tr_s, params.te_s,
               tuple(source.GetAttribute(name) for name, _ in mrml.ECHO_TIME_ATTRIBUTES + mrml.REPETITION_TIME_ATTRIBUTES))
        if self._dsc_cache is not None and self._dsc_cache[0] == key:
            return self._dsc_cache[1], self._dsc_cache[2]
        signal, geometry, tr_s, te_s = mrml.series_from_sequence_node(
            node, tr_s=params.tr_s or None, te_s=params.te_s or None)
        if signal.shape[0] < 10:
            raise NeuroContrastError(f"DSC series '{node.GetName()}' has {signal.shape[0]} frames; at least 10 "
                                     "are needed")
        from neurocontrast.dsc_io import check_frame_interval

        tr_s = check_frame_interval(tr_s, f"DSC series '{node.GetName()}' (time index or the TR field)", "s")
        dsc = DSCSeries(signal=signal, geometry=geometry, tr_s=tr_s, te_s=te_s, path=None)
        self._dsc_cache = (key, dsc, mrml.first_frame_node(node))
        return dsc, self._dsc_cache[2]

    def _mask(self, node_id: str, segment: str, reference, what: str) -> Optional[np.ndarray]:
        if not node_id:
            return None
        mask = mrml.mask_from_node(self._node(node_id, what), reference, segment or None, name=what)
        if not np.any(mask):
            raise NeuroContrastError(f"{what}: the selected points/segment cover no voxel of the DSC series")
        return mask

    def masks(self, params: PerfusionNetParameters, reference) -> Dict[str, Optional[np.ndarray]]:
        """Bool (Z, Y, X) masks ``aif``, ``vof``, ``brain``, ``core``, ``reference`` (None where not selected,
        and for the AIF/VOF in the automatic mode) on the DSC grid."""
        masks = {"aif": (self._mask(params.aif_node_id, params.aif_segment, reference, "AIF")
                         if params.aif_mode == "mask" else None),
                 "vof": (self._mask(params.vof_node_id, params.vof_segment, reference, "VOF")
                         if params.vof_mode == "mask" else None),
                 "brain": self._mask(params.brain_node_id, params.brain_segment, reference, "brain mask"),
                 "core": self._mask(params.core_node_id, params.core_segment, reference, "core"),
                 "reference": self._mask(params.reference_node_id, params.reference_segment, reference,
                                         "reference region")}
        if masks["aif"] is not None and masks["vof"] is not None \
                and np.array_equal(masks["aif"], masks["vof"]):
            raise NeuroContrastError("AIF and VOF cover exactly the same voxels (the same segment or points?): "
                                     "the AIF must lie in an artery, the VOF in a large vein (sinus)")
        return masks

    # ----------------------------------------------------------------------------------------- curves
    def _automatic_aif(self, params: PerfusionNetParameters, dsc, brain: Optional[np.ndarray]) -> np.ndarray:
        """``pipeline.automatic_aif`` for the series ``dsc`` of :meth:`load_dsc` and the selected brain mask
        (None: the run's automatic one), cached for the live curves."""
        from neurocontrast.perfusion.pipeline import automatic_aif

        options = params.options()
        return self._cached(dsc, ("aif", repr(options), _mask_key(brain)),
                            lambda: automatic_aif(dsc, brain, options=options))

    def _automatic_vof(self, params: PerfusionNetParameters, aif: Optional[np.ndarray], dsc,
                       brain: Optional[np.ndarray]) -> np.ndarray:
        """``pipeline.automatic_vof`` with the AIF ``aif`` the run uses (drawn, automatic or None), cached."""
        from neurocontrast.perfusion.pipeline import automatic_vof

        # the run hands its automatic AIF to the VOF search: given here too, so that it is not searched twice
        options = dataclasses.replace(params.options(), aif="mask")
        return self._cached(dsc, ("vof", repr(options), _mask_key(brain), _mask_key(aif)),
                            lambda: automatic_vof(dsc, aif, brain, options=options))

    def _cached(self, dsc, key, compute) -> np.ndarray:
        """``compute()`` once per ``key`` while ``dsc`` is the cached series of :meth:`load_dsc` (a copy)."""
        if self._dsc_cache is None or self._dsc_cache[1] is not dsc:
            return compute()
        if self._automatic_cache.get("series") != self._dsc_cache[0]:
            self._automatic_cache = {"series": self._dsc_cache[0]}
        if key not in self._automatic_cache:
            self._automatic_cache[key] = compute()
        return self._automatic_cache[key].copy()

    def vessel_masks(self, params: PerfusionNetParameters) -> Dict[str, Any]:
        """The AIF and VOF a run with these parameters uses.

        The drawn AIF/VOF in the "mask" modes; in the "auto" modes the core's automatic AIF
        (``pipeline.automatic_aif``; none for an AIF-free method) and the automatic VOF found with that AIF
        (``pipeline.automatic_vof``), as :func:`~neurocontrast.perfusion.pipeline.run_perfusion` finds them.
        The automatic ones are cached while the series, brain mask, AIF and options are unchanged.

        Parameters
        ----------
        params : PerfusionNetParameters
            The panel's parameters.

        Returns
        -------
        dict
            ``"aif"``, ``"vof"``: (Z, Y, X) bool on the DSC grid, or None;
            ``"aif_automatic"``, ``"vof_automatic"``: bool, True where that mask is the automatic one;
            ``"dsc"``: the DSCSeries of :meth:`load_dsc`;
            ``"reference"``: its first-frame volume node;
            ``"brain"``: the selected brain mask (Z, Y, X) bool, or None (the run's automatic one is used).

        Raises
        ------
        NeuroContrastError
            A selection that covers no voxel or lies outside the series; TE unknown in an automatic mode; no
            arterial voxel or no venous bolus found by the automatic search.
        """
        dsc, reference = self.load_dsc(params)
        brain = self._mask(params.brain_node_id, params.brain_segment, reference, "brain mask")
        aif_auto, vof_auto = params.aif_mode == "auto", params.vof_mode == "auto"
        if aif_auto:
            aif = self._automatic_aif(params, dsc, brain) if method_needs_aif(params.method) else None
        else:
            aif = self._mask(params.aif_node_id, params.aif_segment, reference, "AIF")
        vof = (self._automatic_vof(params, aif, dsc, brain) if vof_auto
               else self._mask(params.vof_node_id, params.vof_segment, reference, "VOF"))
        return {"aif": aif, "vof": vof, "aif_automatic": aif_auto and aif is not None, "vof_automatic": vof_auto,
                "dsc": dsc, "reference": reference, "brain": brain}

    def compute_curves(self, params: PerfusionNetParameters) -> Curves:
        """Mean ΔR2*(t) in the AIF and VOF voxels a run with these parameters uses (:meth:`vessel_masks`: the
        drawn ones, or the automatic AIF/VOF in the "auto" modes) and their quality figures, computed by the
        pipeline's own :func:`~neurocontrast.perfusion.pipeline.vascular_curves` (the same baseline, frames and
        units as a run; the AIF shown as measured, before VOF rescaling). ``Curves.aif_automatic`` and
        ``vof_automatic`` say which curve is automatic. Raises NeuroContrastError if neither AIF nor VOF is
        selected (or automatic), or TE is unknown (ΔR2* needs it; the maps do not depend on its value).
        """
        from neurocontrast.perfusion.pipeline import vascular_curves

        if params.aif_mode != "auto" and params.vof_mode != "auto" and not (params.aif_node_id or params.vof_node_id):
            raise NeuroContrastError("select AIF and/or VOF points or segments to show their curves")
        dsc, _ = self.load_dsc(params)
        if not dsc.te_s:
            raise NeuroContrastError("TE is unknown for this series: enter TE (s) to show the ΔR2* curves "
                                     "(the maps do not depend on its value; the curves' scale in 1/s does)")
        vessels = self.vessel_masks(params)
        aif_mask, vof_mask = vessels["aif"], vessels["vof"]
        if aif_mask is None and vof_mask is None:
            raise NeuroContrastError("select AIF and/or VOF points or segments to show their curves")
        found = vascular_curves(dsc.signal, dsc.tr_s, dsc.te_s, aif_mask, vof_mask, vof_rescale=False)

        def q(value):
            return {k: float(v) for k, v in (value or {}).items() if np.isscalar(v) and not isinstance(v, str)}

        return Curves(found.times_s, found.aif_raw, found.vof, q(found.aif_quality), q(found.vof_quality),
                      int(aif_mask.sum()) if aif_mask is not None else 0,
                      int(vof_mask.sum()) if vof_mask is not None else 0, found.unit,
                      aif_automatic=vessels["aif_automatic"], vof_automatic=vessels["vof_automatic"])

    def show_curves(self, curves: Curves, name: str = "PerfusionNet curves"):
        """Write curves into a table node and a plot chart (AIF red, VOF blue) and the quality figures into a
        second table. Nodes are reused by name on later calls. Returns ``(chart, curves_table, quality_table)``."""
        scene = self.scene
        columns = {"Time (s)": curves.times_s.tolist()}
        series_colors = {}
        aif_label, vof_label = curves.label("AIF"), curves.label("VOF")
        if curves.aif is not None:
            columns[aif_label] = curves.aif.tolist()
            series_colors[aif_label] = (0.9, 0.1, 0.1)
        if curves.aif_raw is not None:
            columns[f"{aif_label} before VOF rescaling"] = curves.aif_raw.tolist()
            series_colors[f"{aif_label} before VOF rescaling"] = (0.95, 0.6, 0.6)
        if curves.vof is not None:
            columns[vof_label] = curves.vof.tolist()
            series_colors[vof_label] = (0.1, 0.3, 0.95)
        table = mrml.table_node_from_columns(columns, name, scene, node=_find(scene, "vtkMRMLTableNode", name))
        chart_name = f"{name} chart"
        chart = _find(scene, "vtkMRMLPlotChartNode", chart_name) or scene.AddNewNodeByClass(
            "vtkMRMLPlotChartNode", chart_name)
        previous = {chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())}
        chart.RemoveAllPlotSeriesNodeIDs()
        for column, color in series_colors.items():
            series_name = f"{name} {column}"
            series = _find(scene, "vtkMRMLPlotSeriesNode", series_name) or scene.AddNewNodeByClass(
                "vtkMRMLPlotSeriesNode", series_name)
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("Time (s)")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetMarkerSize(4)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            previous.discard(series.GetID())
        for series_id in previous:  # a curve no longer shown (e.g. "VOF" after switching to the automatic VOF)
            mrml.remove_node(scene.GetNodeByID(series_id), scene)
        chart.SetTitle(f"{aif_label} and {vof_label}")
        chart.SetXAxisTitle("Time (s)")
        chart.SetYAxisTitle(f"ΔR2* ({curves.unit})" if curves.unit == "1/s" else "−ln(S/S0) (TE unknown)")
        figures = sorted(set(curves.aif_quality) | set(curves.vof_quality))
        quality = {"Figure": figures,
                   aif_label: [_fmt(curves.aif_quality.get(f)) for f in figures],
                   vof_label: [_fmt(curves.vof_quality.get(f)) for f in figures]}
        quality_name = f"{name} quality"
        quality_table = mrml.table_node_from_columns(quality, quality_name, scene,
                                                     node=_find(scene, "vtkMRMLTableNode", quality_name))
        return chart, table, quality_table

    def update_curves(self, params: PerfusionNetParameters, name: str = "PerfusionNet curves"):
        """:meth:`compute_curves` then :meth:`show_curves`. Returns ``(curves, chart)``."""
        curves = self.compute_curves(params)
        chart, _, _ = self.show_curves(curves, name)
        return curves, chart

    # ----------------------------------------------------------------------------------------- suggest
    def suggest_aif(self, params: PerfusionNetParameters, name: str = "AIF candidates"):
        """The automatic AIF (``pipeline.automatic_aif``: Mouridsen et al. 2006 clustering on the brain's
        ΔR2*; exactly the voxels a run with the automatic AIF uses for these inputs) as a markups point list
        named ``name`` (replaced if present) the clinician can edit and then use as the AIF, one point per
        voxel, labelled ``AIF-1``… in order of peak height of the run's ΔR2* of each voxel. The brain mask,
        if selected, limits the search (else the run's automatic brain mask). Returns the markups node.
        Raises NeuroContrastError when TE is unknown or no arterial voxel is found."""
        dsc, reference = self.load_dsc(params)
        if not dsc.te_s:
            raise NeuroContrastError("TE is unknown for this series: enter TE (s) to compute ΔR2*")
        brain = self._mask(params.brain_node_id, params.brain_segment, reference, "brain mask")
        mask = self._automatic_aif(params, dsc, brain)
        if not np.any(mask):
            raise NeuroContrastError("no AIF candidate found; place AIF points by hand")
        return self._points(reference, _by_peak(dsc, mask, mask, None), name, "AIF")

    def suggest_vof(self, params: PerfusionNetParameters, name: str = "VOF candidates"):
        """The automatic VOF (``pipeline.automatic_vof``: superior sagittal sinus, late, tall and broad curve
        near the posterior midline; the same voxels a run with the automatic VOF uses for these inputs) as a
        markups point list named ``name`` (replaced if present), labelled ``VOF-1``… in order of peak height of
        the run's ΔR2* of each voxel. The brain mask and the AIF (drawn, or the automatic AIF in that mode) are
        used as at Apply. Returns the markups node. Raises NeuroContrastError when TE is unknown or no venous
        bolus is found."""
        vessels = self.vessel_masks(dataclasses.replace(params, vof_mode="auto"))
        if not np.any(vessels["vof"]):
            raise NeuroContrastError("no VOF found near the posterior midline; place VOF points by hand")
        return self._points(vessels["reference"], _by_peak(vessels["dsc"], vessels["vof"], vessels["aif"],
                                                           vessels["vof"]), name, "VOF")

    def _points(self, reference, indices, name: str, label: str):
        """A markups point list ``name`` (replacing one of that name) at the voxel ``indices`` (N, 3) zyx of
        ``reference``, labelled ``<label>-1``…"""
        positions = mrml.zyx_to_ras(reference, indices)
        scene = self.scene
        mrml.remove_node(_find(scene, "vtkMRMLMarkupsFiducialNode", name), scene)  # with its display node
        points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        for number, position in enumerate(positions, start=1):
            index = points.AddControlPoint(*[float(v) for v in position])
            points.SetNthControlPointLabel(index, f"{label}-{number}")
        return points

    def diffusion(self, params: PerfusionNetParameters):
        """The ADC map (and optional DWI) as ``lesion.DiffusionImages`` on the ADC node's own grid (float32, as
        the command line reads files), or None without an ADC map. Raises NeuroContrastError when the DWI is
        not on the ADC grid, or the ADC or DWI is under a (not hardened) transform."""
        if not params.adc_node_id:
            return None
        from neurocontrast.perfusion.lesion import DiffusionImages

        adc_node = self._node(params.adc_node_id, "ADC map")
        dwi_node = self._node(params.dwi_node_id, "DWI") if params.dwi_node_id else None
        for node in (adc_node, dwi_node):
            transform = node.GetParentTransformNode() if node is not None else None
            if transform is not None:  # its array and grid would not be where Slicer shows it
                raise NeuroContrastError(f"'{node.GetName()}' is under the transform '{transform.GetName()}': harden "
                                         "it (Data module: right-click → Harden transform) before using it for the "
                                         "core, so that the core lies where the volume is shown")
        geometry = mrml.geometry_from_volume_node(adc_node)
        dwi = None
        if dwi_node is not None:
            dwi_geometry = mrml.geometry_from_volume_node(dwi_node)
            if not dwi_geometry.same_as(geometry):
                raise NeuroContrastError(f"the DWI '{dwi_node.GetName()}' is not on the grid of the ADC map "
                                         f"'{adc_node.GetName()}': DWI {dwi_geometry.describe()}, "
                                         f"ADC {geometry.describe()}")
            dwi = slicer.util.arrayFromVolume(dwi_node).astype(np.float32)
        return DiffusionImages(slicer.util.arrayFromVolume(adc_node).astype(np.float32), geometry, dwi,
                               None, adc_node.GetName())

    # ----------------------------------------------------------------------------------------- run
    def run(self, params: PerfusionNetParameters, progress: Optional[ProgressCallback] = None) -> PerfusionNetOutputs:
        """Compute the perfusion maps (``pipeline.run_perfusion``) and add them to the scene.

        Outputs (named ``<prefix> CBF`` etc.; reused on a second run): scalar volumes for every map with
        colour maps and window/level (Tmax 0–10 s), rCBF/rCBV/rMTT when a reference region is given or found,
        a segmentation ``<prefix> Tmax>6s`` with the Tmax > 6 s region (and ``Core (ADC)`` on the ADC grid
        with an ADC map), a table ``<prefix> volumes`` with the hypoperfusion volumes (mL) for all thresholds
        (and the core, mismatch and ratio when available), and the AIF/VOF plot. Raises NeuroContrastError on
        invalid parameters or bad input (message from the core).
        """
        from neurocontrast.perfusion.pipeline import run_perfusion

        problems = params.problems(self.scene)
        if problems:
            raise NeuroContrastError("cannot run PerfusionNet: " + "; ".join(problems))
        report(progress, 0.0, "reading the DSC series")
        dsc, reference = self.load_dsc(params)
        masks = self.masks(params, reference)
        report(progress, 0.05, f"computing maps ({params.method})")
        result = run_perfusion(dsc, aif_mask=masks["aif"], vof_mask=masks["vof"], brain_mask=masks["brain"],
                               core_mask=masks["core"], diffusion=self.diffusion(params),
                               reference_mask=masks["reference"], options=params.options(),
                               progress=scaled(progress, 0.05, 0.9))
        report(progress, 0.9, "adding the maps to the scene")
        prefix = params.output_prefix or self._node(params.dsc_node_id, "DSC series").GetName()
        brain = masks["brain"]
        if brain is None and getattr(result, "brain_mask", None) is not None:
            brain = np.asarray(result.brain_mask, bool)
        map_nodes = {}
        for map_name, values in _result_maps(result).items():
            map_nodes[map_name] = self._map_node(np.asarray(values, np.float32), dsc.geometry, prefix, map_name, brain)
        adc_node = self.scene.GetNodeByID(params.adc_node_id) if params.adc_node_id else None
        segmentation, table = self._hypoperfusion_nodes(result, reference, prefix, adc_node)
        chart = None
        curves = _result_curves(result, dsc)
        if curves is not None:
            chart, _, _ = self.show_curves(curves, f"{prefix} curves")
        report(progress, 1.0, "done")
        return PerfusionNetOutputs(map_nodes, segmentation, table, chart, result)

    def _map_node(self, values, geometry, prefix, map_name, brain):
        scene = self.scene
        name = f"{prefix} {map_name.upper() if map_name != 'tmax_uncertainty' else 'Tmax uncertainty'}"
        node = _find(scene, "vtkMRMLScalarVolumeNode", name)
        node = mrml.volume_node_from_array(values, geometry, name, scene, node=node)
        node.SetAttribute(MAP_ATTRIBUTE, map_name)
        apply_map_display(node, map_name, values, brain)
        return node

    def _hypoperfusion_nodes(self, result, reference, prefix, adc_node=None):
        scene = self.scene
        hyp = getattr(result, "hypoperfusion", None)
        if hyp is None:
            return None, None
        masks = dict(hyp.masks)
        from neurocontrast.perfusion.pipeline import HYPOPERFUSION_THRESHOLD_S

        key = _threshold_key(masks, HYPOPERFUSION_THRESHOLD_S)
        seg_name = f"{prefix} Tmax>6s"
        mrml.remove_node(_find(scene, "vtkMRMLSegmentationNode", seg_name), scene)  # with its display node
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", seg_name)
        segmentation.CreateDefaultDisplayNodes()
        if key is not None:
            mrml.add_segment_from_mask(segmentation, np.asarray(masks[key], bool), reference, "Tmax > 6 s",
                                       (1.0, 0.45, 0.0))
        core = getattr(result, "core", None)
        if core is not None and adc_node is not None and np.any(core.mask):  # on the ADC grid
            mrml.add_segment_from_mask(segmentation, np.asarray(core.mask, bool), adc_node, "Core (ADC)",
                                       (0.6, 0.0, 0.8))
        volumes = {float(k): float(v) for k, v in dict(hyp.volumes_ml).items()}
        rows = {"Measure": [f"Tmax > {k:g} s" for k in sorted(volumes)],
                "Value": [round(volumes[k], 2) for k in sorted(volumes)],
                "Unit": ["mL"] * len(volumes)}
        mismatch = (getattr(result, "report", None) or {}).get("mismatch")
        if isinstance(mismatch, dict):
            for label, field, unit in (("Core", "core_ml", "mL"), ("Mismatch", "mismatch_ml", "mL"),
                                       ("Mismatch ratio", "ratio", "")):
                value = mismatch.get(field)
                if isinstance(value, (int, float)) and np.isfinite(value):
                    rows["Measure"].append(label)
                    rows["Value"].append(round(float(value), 2))
                    rows["Unit"].append(unit)
        table_name = f"{prefix} volumes"
        table = mrml.table_node_from_columns(rows, table_name, scene,
                                             node=_find(scene, "vtkMRMLTableNode", table_name))
        return segmentation, table


# --------------------------------------------------------------------------------------------- helpers

def _result_maps(result) -> Dict[str, np.ndarray]:
    maps = getattr(result, "maps", None)
    if maps is None:
        raise NeuroContrastError("the perfusion pipeline returned no maps")
    if hasattr(maps, "as_dict"):
        maps = maps.as_dict()
    return {k: v for k, v in dict(maps).items() if v is not None}


def _result_curves(result, dsc) -> Optional[Curves]:
    """The AIF actually used (after VOF rescaling), the raw AIF and the VOF of a ``PerfusionResult``."""
    aif, vof = getattr(result, "aif", None), getattr(result, "vof", None)
    if aif is None and vof is None:
        return None
    report_dict = getattr(result, "report", {}) or {}

    def q(value):
        return {k: float(v) for k, v in (value or {}).items()
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}

    raw = getattr(result, "aif_raw", None)
    aif_mask, vof_mask = getattr(result, "aif_mask", None), getattr(result, "vof_mask", None)
    modes = report_dict.get("parameters") or {}
    return Curves(np.asarray(getattr(result, "times_s", np.arange(dsc.signal.shape[0]) * dsc.tr_s), float),
                  None if aif is None else np.asarray(aif, float), None if vof is None else np.asarray(vof, float),
                  q(report_dict.get("aif_quality")), q(report_dict.get("vof_quality")),
                  int(np.sum(aif_mask)) if aif_mask is not None else 0,
                  int(np.sum(vof_mask)) if vof_mask is not None else 0, "1/s",
                  aif_raw=None if raw is None or aif is None or np.allclose(raw, aif) else np.asarray(raw, float),
                  aif_automatic=aif is not None and modes.get("aif") == "auto",
                  vof_automatic=vof is not None and modes.get("vof") == "auto")


def _mask_key(mask: Optional[np.ndarray]):
    """A hashable fingerprint of a bool (Z, Y, X) mask (None stays None), for the automatic AIF/VOF cache."""
    if mask is None:
        return None
    import hashlib

    return mask.shape, hashlib.sha1(np.packbits(mask)).hexdigest()


def _by_peak(dsc, voxels: np.ndarray, aif: Optional[np.ndarray], vof: Optional[np.ndarray]) -> np.ndarray:
    """The (N, 3) zyx indices of ``voxels`` in order of decreasing ΔR2* peak, ΔR2* as the run computes it for
    the AIF/VOF curves (``pipeline.vascular_curves``' baseline for ``aif`` and ``vof``, then
    ``pipeline.tissue_delta_r2star`` of each voxel, unsmoothed); ties keep the C order."""
    from neurocontrast.perfusion.pipeline import tissue_delta_r2star, vascular_curves

    baseline = vascular_curves(dsc.signal, dsc.tr_s, dsc.te_s, aif, vof, vof_rescale=False).baseline
    peaks = tissue_delta_r2star(dsc.signal, dsc.te_s, baseline, voxels, dsc.geometry.spacing, 0.0).max(axis=0)
    return np.argwhere(voxels)[np.argsort(-peaks, kind="stable")]


def _threshold_key(masks: Dict, threshold: float):
    for key in masks:
        if abs(float(key) - threshold) < 1e-6:
            return key
    return None


def _find(scene, class_name: str, name: str):
    nodes = scene.GetNodesByClassByName(class_name, name)
    node = nodes.GetItemAsObject(0) if nodes.GetNumberOfItems() else None
    return node


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def segment_names(node) -> List[str]:
    """Names of the segments of a segmentation node (empty for other nodes or None), for the segment pickers."""
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        return []
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
