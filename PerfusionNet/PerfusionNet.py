"""PerfusionNet: DSC-MRI perfusion maps in 3D Slicer (module, thin widget, self-test).

All computation and every decision lives in PerfusionNetLib.logic (tested with pytest and slicer-core) and
the core package ``neurocontrast.perfusion``; this widget only moves values between the .ui, the parameter
node and one logic call per button.
"""

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from PerfusionNetLib.delineation import (SOURCES, curve_input_events, curves_summary, prepare_delineation,
                                         segment_id)
from PerfusionNetLib.logic import METHOD_LABELS, PerfusionNetLogic, PerfusionNetParameters, available_methods
from PerfusionNetLib.network_job import NetworkJob, runs_in_background


class PerfusionNet(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "PerfusionNet"
        self.parent.categories = ["NeuroContrast"]
        self.parent.dependencies = ["NeuroContrast"]
        self.parent.contributors = ["NeuroContrast developers"]
        self.parent.helpText = ("DSC-MRI perfusion: AIF/VOF delineation, deconvolution (sSVD, cSVD, oSVD, Tikhonov) "
                                "or deep networks, CBF/CBV/MTT/Tmax/TTP maps and the Tmax &gt; 6 s volume. "
                                "Try it on Sample Data → NeuroContrast → DSC phantom.")
        self.parent.acknowledgementText = "Equations after Cao et al. (ST-Net), Østergaard 1996, Wu 2003, Mouridsen 2006."


#: The panel's fields: one row per field of PerfusionNetParameters (what the parameter node stores), naming the
#: widget that shows it and how: "node" (qMRMLNodeComboBox: the node ID), "segment" (qMRMLSegmentSelectorWidget
#: of the row's node picker: the segment ID, "" unless that picker holds a segmentation), "data" (combo box item
#: data), "value" (spin box), "text" (line edit), "checked" (check box) and "auto" (check box: "auto" when
#: ticked, else "mask"). parametersFromUi, uiFromParameters and the change signals are all read from it.
UI_FIELDS = (
    ("dsc_node_id", "dscSelector", "node", None),
    ("aif_node_id", "aifSelector", "node", None),
    ("aif_segment", "aifSegmentSelector", "segment", "aifSelector"),
    ("vof_node_id", "vofSelector", "node", None),
    ("vof_segment", "vofSegmentSelector", "segment", "vofSelector"),
    ("brain_node_id", "brainSelector", "node", None),
    ("brain_segment", "brainSegmentSelector", "segment", "brainSelector"),
    ("core_node_id", "coreSelector", "node", None),
    ("core_segment", "coreSegmentSelector", "segment", "coreSelector"),
    ("adc_node_id", "adcSelector", "node", None),
    ("dwi_node_id", "dwiSelector", "node", None),
    ("reference_node_id", "referenceSelector", "node", None),
    ("reference_segment", "referenceSegmentSelector", "segment", "referenceSelector"),
    ("aif_mode", "autoAifCheckBox", "auto", None),
    ("vof_mode", "autoVofCheckBox", "auto", None),
    ("vof_rescale", "vofRescaleCheckBox", "checked", None),
    ("method", "methodComboBox", "data", None),
    ("osvd_oi", "osvdOiSpinBox", "value", None),
    ("svd_threshold", "svdThresholdSpinBox", "value", None),
    ("tikhonov_lambda", "tikhonovLambdaSpinBox", "value", None),
    ("tr_s", "trSpinBox", "value", None),
    ("te_s", "teSpinBox", "value", None),
    ("output_prefix", "outputPrefixLineEdit", "text", None),
)
#: the change signal of each kind of value widget (node pickers and segment selectors are connected apart)
_CHANGE_SIGNALS = {"auto": "toggled(bool)", "checked": "toggled(bool)", "data": "currentIndexChanged(int)",
                   "value": "valueChanged(double)", "text": "textChanged(QString)"}


def moduleParameterNode():
    """The module's parameter node (singleton tag "PerfusionNet", saved with the scene)."""
    logic = ScriptedLoadableModuleLogic()
    logic.moduleName = "PerfusionNet"  # the base class would name the node "ScriptedLoadableModule"
    return logic.getParameterNode()


class PerfusionNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None, networkJob=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic  # injected (tests, scripts) or made in setup()
        self.networkJob = networkJob
        self.parameterNode = None
        self.updatingGui = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PerfusionNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or PerfusionNetLogic()
        self.networkJob = self.networkJob or NetworkJob(self.logic)
        self.curvesTimer = qt.QTimer()  # debounce: painting fires an event per stroke, dragging one per move
        self.curvesTimer.setSingleShot(True)
        self.curvesTimer.setInterval(500)
        self.curvesTimer.connect("timeout()", self.onUpdateCurves)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(500)
        self.pollTimer.connect("timeout()", self.onPoll)

        for method in available_methods():
            self.ui.methodComboBox.addItem(METHOD_LABELS.get(method, method), method)
        for key, label in SOURCES.items():
            self.ui.delineationSourceComboBox.addItem(label, key)
        self.segmentPickers = tuple((getattr(self.ui, picker), getattr(self.ui, name))
                                    for _, name, kind, picker in UI_FIELDS if kind == "segment")
        for selector, segments in self.segmentPickers:
            selector.connect("currentNodeChanged(vtkMRMLNode*)",
                             lambda node, s=segments: self.onSelectorChanged(node, s))
            segments.connect("currentSegmentChanged(QString)", self.onGuiChanged)
        for selector in (self.ui.aifSegmentSelector, self.ui.vofSegmentSelector, self.ui.brainSegmentSelector):
            selector.connect("currentSegmentChanged(QString)", lambda segmentId: self.curvesTimer.start())
        for checkBox in (self.ui.autoAifCheckBox, self.ui.autoVofCheckBox):  # the curves a run would use
            checkBox.connect("toggled(bool)", lambda checked: self.curvesTimer.start())
        pickers = {picker for _, _, kind, picker in UI_FIELDS if kind == "segment"}
        for _, name, kind, _ in UI_FIELDS:
            if kind == "node" and name not in pickers:  # the pickers of segment rows are connected above
                getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", self.onGuiChanged)
            elif kind in _CHANGE_SIGNALS:
                getattr(self.ui, name).connect(_CHANGE_SIGNALS[kind], self.onGuiChanged)
        self.ui.updateCurvesButton.connect("clicked()", self.onUpdateCurves)
        self.ui.suggestAifButton.connect("clicked()", self.onSuggestAif)
        self.ui.suggestVofButton.connect("clicked()", self.onSuggestVof)
        self.ui.editSegmentsButton.connect("clicked()", self.onEditSegments)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.setParameterNode(moduleParameterNode())

    def enter(self):
        """Back from the Segment Editor (or another module): show the curves of what was painted."""
        self.curvesTimer.start()

    def cleanup(self):
        self.curvesTimer.stop()
        self.pollTimer.stop()
        self.networkJob.cancel()
        self.removeObservers()

    # -- parameter node (saved with the scene) <-> ui
    def setParameterNode(self, node):
        if self.parameterNode is not None:
            self.removeObserver(self.parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.parameterNode = node
        if node is not None:
            self.uiFromParameters(PerfusionNetParameters.read(node))
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onParameterNodeModified(self, caller=None, event=None):
        if not self.updatingGui:
            self.uiFromParameters(PerfusionNetParameters.read(self.parameterNode))

    def onGuiChanged(self, *unused):
        if not self.updatingGui and self.parameterNode is not None:
            self.updatingGui = True
            try:
                self.parametersFromUi().write(self.parameterNode)
            finally:
                self.updatingGui = False

    def onSceneStartClose(self, caller=None, event=None):
        self.networkJob.cancel()
        self.curvesTimer.stop()
        self.setParameterNode(None)
        self.observeCurveInputs()

    def onSceneEndClose(self, caller=None, event=None):
        self.setParameterNode(moduleParameterNode())

    def parametersFromUi(self):
        """PerfusionNetParameters from the widgets, field by field along UI_FIELDS."""
        ui, values = self.ui, {}
        for field, name, kind, picker in UI_FIELDS:
            widget = getattr(ui, name)
            if kind == "node":
                node = widget.currentNode()
                values[field] = node.GetID() if node else ""
            elif kind == "segment":
                node = getattr(ui, picker).currentNode()
                isSegmentation = node is not None and node.IsA("vtkMRMLSegmentationNode")
                values[field] = widget.currentSegmentID() if isSegmentation else ""
            elif kind == "auto":
                values[field] = "auto" if widget.checked else "mask"
            elif kind == "checked":
                values[field] = bool(widget.checked)
            elif kind == "data":
                values[field] = widget.currentData
            elif kind == "value":
                values[field] = widget.value
            else:  # text
                values[field] = widget.text
        return PerfusionNetParameters(**values)

    def uiFromParameters(self, params):
        """Show ``params`` along UI_FIELDS: node pickers first (the segment lists follow them), segments last."""
        scene, ui = slicer.mrmlScene, self.ui
        self.updatingGui = True
        try:
            for kinds in (("node",), ("auto", "checked", "data", "value", "text"), ("segment",)):
                for field, name, kind, picker in UI_FIELDS:
                    if kind not in kinds:
                        continue
                    widget, value = getattr(ui, name), getattr(params, field)
                    if kind == "node":
                        widget.setCurrentNode(scene.GetNodeByID(value) if value else None)
                    elif kind == "segment":
                        widget.setCurrentSegmentID(segment_id(getattr(ui, picker).currentNode(), value))
                    elif kind == "auto":
                        widget.checked = value == "auto"
                    elif kind == "checked":
                        widget.checked = bool(value)
                    elif kind == "data":
                        widget.currentIndex = max(0, widget.findData(value))
                    elif kind == "value":
                        widget.value = value
                    else:
                        widget.text = value
        finally:
            self.updatingGui = False

    # -- live curves
    def onSelectorChanged(self, node, segments):
        isSegmentation = node is not None and node.IsA("vtkMRMLSegmentationNode")
        segments.setCurrentNode(node if isSegmentation else None)  # the selector follows its segments itself
        segments.visible = isSegmentation
        self.observeCurveInputs()
        self.onGuiChanged()
        self.curvesTimer.start()

    def observeCurveInputs(self):
        """Observe the edit events of the AIF and VOF inputs (points added/moved/removed, segments
        added/renamed/removed/painted), each node once."""
        self.removeObservers(self.onCurveInputModified)
        nodes = {n.GetID(): n for n in (self.ui.aifSelector.currentNode(), self.ui.vofSelector.currentNode())
                 if n is not None and self.parameterNode is not None}
        for node in nodes.values():
            for event in curve_input_events(node):
                self.addObserver(node, event, self.onCurveInputModified)

    def onCurveInputModified(self, caller=None, event=None):
        self.curvesTimer.start()  # restarts a running timer: one update after the edits stop

    def onUpdateCurves(self):
        params = self.parametersFromUi()
        if not params.has_curve_inputs():
            return
        try:
            curves, chart = self.logic.update_curves(params)
        except ValueError as exc:  # NeuroContrastError: show, do not interrupt editing
            self.ui.curvesStatusLabel.setText(str(exc))
            return
        except ImportError as exc:  # Python packages not installed yet (installed on first Apply)
            self.ui.curvesStatusLabel.setText(f"Curves need the NeuroContrast Python packages ({exc.name}): "
                                              "press Apply or Install in the NeuroContrast module.")
            return
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        self.ui.curvesStatusLabel.setText(curves_summary(curves))

    def onSuggestAif(self):
        with slicer.util.tryWithErrorDisplay("AIF suggestion failed.", waitCursor=True):
            points = self.logic.suggest_aif(self.parametersFromUi())
            self.ui.autoAifCheckBox.checked = False  # the points are the AIF now; edit them or tick Automatic
            self.ui.aifSelector.setCurrentNode(points)

    def onSuggestVof(self):
        with slicer.util.tryWithErrorDisplay("VOF suggestion failed.", waitCursor=True):
            points = self.logic.suggest_vof(self.parametersFromUi())
            self.ui.autoVofCheckBox.checked = False  # the points are the VOF now; edit them or tick Automatic
            self.ui.vofSelector.setCurrentNode(points)

    def onEditSegments(self):
        """Paint the AIF and VOF in the Segment Editor on the bolus image; the curves follow the strokes."""
        with slicer.util.tryWithErrorDisplay("Cannot open the Segment Editor.", waitCursor=True):
            nodes = prepare_delineation(self.logic, self.parametersFromUi(),
                                        self.ui.delineationSourceComboBox.currentData)
            for selector, segments, segmentId in ((self.ui.aifSelector, self.ui.aifSegmentSelector,
                                                   nodes.aif_segment_id),
                                                  (self.ui.vofSelector, self.ui.vofSegmentSelector,
                                                   nodes.vof_segment_id)):
                selector.setCurrentNode(nodes.segmentation)
                segments.setCurrentSegmentID(segmentId)
            slicer.util.setSliceViewerLayers(background=nodes.source_volume, fit=True)
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(nodes.segmentation)
            setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # Slicer < 5.4
            setSource(nodes.source_volume)

    # -- apply
    def onApply(self):
        from NeuroContrastLib.dependencies import ensure_dependencies
        from NeuroContrastLib.settings import NeuroContrastSettings

        with slicer.util.tryWithErrorDisplay("PerfusionNet failed.", waitCursor=True):
            ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)
            NeuroContrastSettings(qt.QSettings()).apply()  # models folder and threads; never imports torch
            params = self.parametersFromUi()
            params.write(self.parameterNode)
            if runs_in_background(params.method):  # networks: a subprocess, Slicer stays responsive
                self.networkJob.start(params)
                self.ui.applyButton.text = "Cancel"
                self.ui.applyButton.disconnect("clicked()", self.onApply)
                self.ui.applyButton.connect("clicked()", self.networkJob.cancel)
                self.pollTimer.start()
                return
            dialog = slicer.util.createProgressDialog(labelText="PerfusionNet", maximum=100)

            def progress(fraction, message):
                dialog.setValue(int(100 * fraction))
                dialog.setLabelText(message)
                slicer.app.processEvents()

            try:
                outputs = self.logic.run(params, progress=progress)
            finally:
                dialog.close()
            self.showOutputs(outputs)

    def onPoll(self):
        status = self.networkJob.poll()
        self.ui.statusLabel.setText(f"{int(100 * status['fraction'])} % {status['message']}")
        if status["running"]:
            return
        self.pollTimer.stop()
        self.ui.applyButton.disconnect("clicked()", self.networkJob.cancel)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.ui.applyButton.text = "Apply"
        with slicer.util.tryWithErrorDisplay("PerfusionNet failed.", waitCursor=True):
            self.showOutputs(self.networkJob.finish())

    def showOutputs(self, outputs):
        tmax = outputs.map_nodes.get("tmax") or next(iter(outputs.map_nodes.values()))
        slicer.util.setSliceViewerLayers(background=tmax, fit=True)
        if outputs.volumes_table is not None:
            self.ui.volumesTableView.setMRMLTableNode(outputs.volumes_table)
        if outputs.curves_chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(outputs.curves_chart)
        self.ui.statusLabel.setText(f"Done: {', '.join(outputs.map_nodes)}")


class PerfusionNetTest(ScriptedLoadableModuleTest):
    """Runs the locally generated DSC phantom through the module's logic and checks the Tmax > 6 s volume."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_phantom_end_to_end()

    def test_phantom_end_to_end(self):
        import numpy as np
        from NeuroContrastLib.sampledata import load_dsc_phantom, phantom_options_for_tests
        from neurocontrast.io import DSCSeries
        from neurocontrast.perfusion.pipeline import run_perfusion

        nodes = load_dsc_phantom(**phantom_options_for_tests())
        seg = nodes["segmentation"]
        params = PerfusionNetParameters(dsc_node_id=nodes["sequence"].GetID(), aif_node_id=seg.GetID(),
                                        aif_segment="AIF", vof_node_id=seg.GetID(), vof_segment="VOF",
                                        brain_node_id=seg.GetID(), brain_segment="Brain", method="osvd")
        outputs = PerfusionNetLogic().run(params)
        self.assertTrue({"cbf", "cbv", "mtt", "tmax", "ttp"} <= set(outputs.map_nodes))
        phantom = nodes["phantom"]
        direct = run_perfusion(DSCSeries(signal=phantom.signal, geometry=phantom.geometry, tr_s=phantom.tr_s,
                                         te_s=phantom.te_s, path=None),
                               phantom.aif_mask, phantom.vof_mask, phantom.brain_mask, method="osvd")
        tmax = slicer.util.arrayFromVolume(outputs.map_nodes["tmax"])
        self.assertTrue(np.array_equal(tmax, direct.maps["tmax"]))  # the module adds nothing to the science
        truth = phantom.truth["tmax"] > 6
        found = tmax > 6
        dice = 2 * np.sum(truth & found) / max(1, np.sum(truth) + np.sum(found))
        slicer.util.setSliceViewerLayers(background=outputs.map_nodes["tmax"], fit=True)
        self.delayDisplay(f"PerfusionNet self-test passed (Tmax > 6 s Dice against the phantom truth {dice:.2f})")
