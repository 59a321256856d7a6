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

from PerfusionNetLib.logic import (METHOD_LABELS, PerfusionNetLogic, PerfusionNetParameters, available_methods,
                                   segment_names)


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


class PerfusionNetWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self._observed = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PerfusionNet.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PerfusionNetLogic()
        parameterLogic = ScriptedLoadableModuleLogic()
        parameterLogic.moduleName = "PerfusionNet"  # the base class would name the node "ScriptedLoadableModule"
        self.parameterNode = parameterLogic.getParameterNode()
        self.curvesTimer = qt.QTimer()
        self.curvesTimer.setSingleShot(True)
        self.curvesTimer.setInterval(600)
        self.curvesTimer.connect("timeout()", self.onUpdateCurves)

        for method in available_methods():
            self.ui.methodComboBox.addItem(METHOD_LABELS.get(method, method), method)
        self.segmentPickers = ((self.ui.aifSelector, self.ui.aifSegmentComboBox),
                               (self.ui.vofSelector, self.ui.vofSegmentComboBox),
                               (self.ui.brainSelector, self.ui.brainSegmentComboBox),
                               (self.ui.coreSelector, self.ui.coreSegmentComboBox))
        for selector, combo in self.segmentPickers:
            selector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node, c=combo: self.onSelectorChanged(node, c))
        self.ui.aifSegmentComboBox.connect("currentIndexChanged(int)", lambda i: self.curvesTimer.start())
        self.ui.vofSegmentComboBox.connect("currentIndexChanged(int)", lambda i: self.curvesTimer.start())
        self.ui.updateCurvesButton.connect("clicked()", self.onUpdateCurves)
        self.ui.suggestAifButton.connect("clicked()", self.onSuggestAif)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.uiFromParameters(PerfusionNetParameters.read(self.parameterNode))

    def cleanup(self):
        self.removeObservers()

    # -- parameters <-> ui
    def parametersFromUi(self):
        def nodeId(selector):
            node = selector.currentNode()
            return node.GetID() if node else ""
        return PerfusionNetParameters(
            dsc_node_id=nodeId(self.ui.dscSelector), aif_node_id=nodeId(self.ui.aifSelector),
            aif_segment=self.ui.aifSegmentComboBox.currentText, vof_node_id=nodeId(self.ui.vofSelector),
            vof_segment=self.ui.vofSegmentComboBox.currentText, brain_node_id=nodeId(self.ui.brainSelector),
            brain_segment=self.ui.brainSegmentComboBox.currentText, core_node_id=nodeId(self.ui.coreSelector),
            core_segment=self.ui.coreSegmentComboBox.currentText,
            aif_mode="auto" if self.ui.autoAifCheckBox.checked else "mask",
            method=self.ui.methodComboBox.currentData, osvd_oi=self.ui.osvdOiSpinBox.value,
            svd_threshold=self.ui.svdThresholdSpinBox.value, tikhonov_lambda=self.ui.tikhonovLambdaSpinBox.value,
            tr_s=self.ui.trSpinBox.value, te_s=self.ui.teSpinBox.value,
            output_prefix=self.ui.outputPrefixLineEdit.text)

    def uiFromParameters(self, params):
        scene = slicer.mrmlScene
        for selector, nodeId in ((self.ui.dscSelector, params.dsc_node_id), (self.ui.aifSelector, params.aif_node_id),
                                 (self.ui.vofSelector, params.vof_node_id), (self.ui.brainSelector, params.brain_node_id),
                                 (self.ui.coreSelector, params.core_node_id)):
            if nodeId and scene.GetNodeByID(nodeId):
                selector.setCurrentNode(scene.GetNodeByID(nodeId))
        self.ui.autoAifCheckBox.checked = params.aif_mode == "auto"
        index = self.ui.methodComboBox.findData(params.method)
        self.ui.methodComboBox.currentIndex = max(0, index)
        self.ui.osvdOiSpinBox.value = params.osvd_oi
        self.ui.svdThresholdSpinBox.value = params.svd_threshold
        self.ui.tikhonovLambdaSpinBox.value = params.tikhonov_lambda
        self.ui.trSpinBox.value = params.tr_s
        self.ui.teSpinBox.value = params.te_s
        self.ui.outputPrefixLineEdit.text = params.output_prefix
        for combo, segment in ((self.ui.aifSegmentComboBox, params.aif_segment),
                               (self.ui.vofSegmentComboBox, params.vof_segment),
                               (self.ui.brainSegmentComboBox, params.brain_segment),
                               (self.ui.coreSegmentComboBox, params.core_segment)):
            if segment and combo.findText(segment) >= 0:
                combo.currentIndex = combo.findText(segment)

    # -- live curves
    def onSelectorChanged(self, node, combo):
        combo.clear()
        combo.addItems(segment_names(node))
        for observed in self._observed:
            self.removeObserver(observed, vtk.vtkCommand.ModifiedEvent, self.onCurveNodeModified)
        self._observed = list({n.GetID(): n for n in (self.ui.aifSelector.currentNode(),
                                                      self.ui.vofSelector.currentNode()) if n}.values())
        for observed in self._observed:
            self.addObserver(observed, vtk.vtkCommand.ModifiedEvent, self.onCurveNodeModified)
        self.curvesTimer.start()

    def onCurveNodeModified(self, caller=None, event=None):
        self.curvesTimer.start()

    def onUpdateCurves(self):
        params = self.parametersFromUi()
        if not params.dsc_node_id or not (params.aif_node_id or params.vof_node_id):
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
        quality = curves.aif_quality
        self.ui.curvesStatusLabel.setText(
            f"AIF: {curves.aif_voxels} voxel(s), peak {quality.get('peak', float('nan')):.3g} {curves.unit}, "
            f"TTP {quality.get('time_to_peak_s', float('nan')):.3g} s, FWHM {quality.get('fwhm_s', float('nan')):.3g} s, "
            f"SNR {quality.get('snr', float('nan')):.3g}; VOF: {curves.vof_voxels} voxel(s)")

    def onSuggestAif(self):
        with slicer.util.tryWithErrorDisplay("AIF suggestion failed.", waitCursor=True):
            points = self.logic.suggest_aif(self.parametersFromUi(), n_voxels=self.ui.nCandidatesSpinBox.value)
            self.ui.aifSelector.setCurrentNode(points)

    # -- apply
    def onApply(self):
        from NeuroContrastLib.dependencies import ensure_dependencies
        from NeuroContrastLib.settings import NeuroContrastSettings

        with slicer.util.tryWithErrorDisplay("PerfusionNet failed.", waitCursor=True):
            ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)
            NeuroContrastSettings(qt.QSettings()).apply()
            params = self.parametersFromUi()
            params.write(self.parameterNode)
            dialog = slicer.util.createProgressDialog(labelText="PerfusionNet", maximum=100)

            def progress(fraction, message):
                dialog.setValue(int(100 * fraction))
                dialog.setLabelText(message)
                slicer.app.processEvents()

            try:
                outputs = self.logic.run(params, progress=progress)
            finally:
                dialog.close()
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
