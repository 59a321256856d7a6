"""VirtualGadolinium: virtual contrast, contrast amplification and differential contrast for brain MRI.

Module, thin Widget and self-test. All logic lives in ``VirtualGadoliniumLib/logic.py`` (tested with
slicer-core); the network runs in a subprocess through the ``neurocontrast`` command line.
"""

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


class VirtualGadolinium(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VirtualGadolinium"
        self.parent.categories = ["NeuroContrast"]
        self.parent.dependencies = ["NeuroContrast"]  # the core package and NeuroContrastLib live in that module
        self.parent.contributors = ["NeuroContrast contributors"]
        self.parent.helpText = (
            "Virtual full-dose T1c from T1, T2-FLAIR (ADC) and a low-dose T1c (Ammari et al. 2022); contrast "
            "amplification of a routine T1c (Bône et al. 2022); differential contrast from a pre/post pair with a "
            "network conditioned on dose, field strength and agent (Pinetz et al. 2024). The shipped weights are "
            "demonstration weights trained on a few public cases with simulated low dose: not for clinical use.")
        self.parent.acknowledgementText = "See docs/virtual-gadolinium.md and docs/models/ for sources and limits."


#: parameter field → (widget name, widget property); drives ui → parameters and parameters → ui
FIELDS = {
    "mode": ("modeComboBox", "currentText"), "t1": ("t1Selector", "node"), "flair": ("flairSelector", "node"),
    "t2": ("t2Selector", "node"), "adc": ("adcSelector", "node"), "dwi_b0": ("dwiB0Selector", "node"),
    "dwi_high": ("dwiHighSelector", "node"), "b_value": ("bValueSpinBox", "value"),
    "contrast": ("contrastSelector", "node"), "dose": ("doseSpinBox", "value"),
    "field_strength_t": ("fieldStrengthComboBox", "currentText"), "agent": ("agentComboBox", "currentText"),
    "repeat": ("repeatSpinBox", "value"), "ensemble": ("ensembleSpinBox", "value"),
    "tta": ("ttaComboBox", "currentText"), "device": ("deviceComboBox", "currentText"),
    "model": ("modelNameLineEdit", "text"), "models_dir": ("modelsFolderPathLineEdit", "currentPath"),
    "preprocessed": ("preprocessedCheckBox", "checked"),
}
#: the signal each kind of widget property announces its changes with
CHANGED = {"node": "currentNodeChanged(vtkMRMLNode*)", "currentText": "currentIndexChanged(int)",
           "text": "textChanged(QString)", "currentPath": "currentPathChanged(QString)", "checked": "toggled(bool)"}


def moduleParameterNode():
    """The module's parameter node (singleton tag "VirtualGadolinium", saved with the scene)."""
    logic = ScriptedLoadableModuleLogic()
    logic.moduleName = "VirtualGadolinium"  # the base class would name the node "ScriptedLoadableModule"
    return logic.getParameterNode()


class VirtualGadoliniumWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None, logic=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic  # injected (tests, scripts) or made in setup()
        self.parameterNode = None
        self.updatingGui = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from VirtualGadoliniumLib.logic import VirtualGadoliniumLogic

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VirtualGadolinium.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or VirtualGadoliniumLogic()
        from neurocontrast.contrast.agents import AGENTS

        self.ui.agentComboBox.addItems(sorted(AGENTS))
        self.ui.agentComboBox.setCurrentText("gadoterate")
        self.ui.ttaComboBox.setCurrentText("2")
        self.ui.modelsFolderPathLineEdit.currentPath = str(self.logic.models_folder())
        self.timer = qt.QTimer()
        self.timer.setInterval(300)
        self.timer.connect("timeout()", self.onPoll)
        for name, kind in FIELDS.values():
            widget = getattr(self.ui, name)
            if kind == "value":
                signal = "valueChanged(double)" if isinstance(widget.value, float) else "valueChanged(int)"
            else:
                signal = CHANGED[kind]
            widget.connect(signal, self.onGuiChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.clearModelsFolderButton.connect("clicked(bool)", self.onClearModelsFolder)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.setParameterNode(moduleParameterNode())
        self.updateModelsInfo()
        self.updateApply()

    # -- parameter node (saved with the scene) <-> ui, both directions from FIELDS
    def setParameterNode(self, node):
        if self.parameterNode is not None:
            self.removeObserver(self.parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
        self.parameterNode = node
        if node is not None:
            if node.GetParameterNamesAsCommaSeparatedList():
                self.updateGuiFromParameterNode()  # a saved scene: show its parameters
            else:
                self.parameters().write(node)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def updateGuiFromParameterNode(self, caller=None, event=None):
        from VirtualGadoliniumLib.logic import VirtualGadoliniumParameters

        if self.parameterNode is None or self.updatingGui:
            return
        params = VirtualGadoliniumParameters.read(self.parameterNode)
        self.updatingGui = True
        try:
            for field, (name, kind) in FIELDS.items():
                widget, value = getattr(self.ui, name), getattr(params, field)
                if kind == "node":
                    widget.setCurrentNode(value)
                elif kind == "currentText":
                    widget.setCurrentText(f"{value:g}" if isinstance(value, float) else str(value))
                else:
                    setattr(widget, kind, value)
        finally:
            self.updatingGui = False
        self.updateApply()

    def onGuiChanged(self, *_):
        if self.updatingGui:
            return
        if self.parameterNode is not None:
            self.parameters().write(self.parameterNode)
        self.updateApply()

    def onSceneStartClose(self, caller=None, event=None):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller=None, event=None):
        self.setParameterNode(moduleParameterNode())

    def parameters(self):
        from VirtualGadoliniumLib.logic import VirtualGadoliniumParameters

        values = {}
        for field, (name, kind) in FIELDS.items():
            widget = getattr(self.ui, name)
            values[field] = widget.currentNode() if kind == "node" else getattr(widget, kind)
        values["field_strength_t"] = float(values["field_strength_t"])
        values["tta"] = int(values["tta"])
        values["model"] = values["model"].strip()
        return VirtualGadoliniumParameters(**values)

    def updateApply(self, *_):
        ok, why = self.parameters().isValid()
        self.ui.applyButton.enabled = ok and not self.timer.isActive()
        self.ui.statusLabel.text = "" if ok else why

    def updateModelsInfo(self):
        models = self.logic.available_models(self.logic.models_folder(self.parameters()))
        self.ui.modelsInfoLabel.text = ", ".join(f"{m['name']} ({m['size_mb']} MB)" for m in models) or "no models"

    def onApply(self):
        from NeuroContrastLib.dependencies import ensure_dependencies

        with slicer.util.tryWithErrorDisplay("VirtualGadolinium failed to start.", waitCursor=True):
            ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)  # torch, monai... for the subprocess
            self.logic.start(self.parameters())
            self.ui.applyButton.enabled = False
            self.ui.cancelButton.enabled = True
            self.timer.start()

    def onCancel(self):
        if self.logic.runner is not None:
            self.logic.runner.cancel()

    def onPoll(self):
        status = self.logic.poll()
        self.ui.progressBar.value = int(100 * status["fraction"])
        self.ui.statusLabel.text = status["message"]
        if status["running"]:
            return
        self.timer.stop()
        self.ui.cancelButton.enabled = False
        self.updateApply()
        if status["returncode"] != 0:
            self.logic.cleanup()  # do not leave the exported patient images in the temporary folder
            slicer.util.errorDisplay(f"VirtualGadolinium failed: {status['error']}", detailedText=status["output"])
            return
        with slicer.util.tryWithErrorDisplay("Could not load the results.", waitCursor=True):
            nodes = self.logic.import_outputs()
            self.logic.cleanup()  # the temporary inputs/outputs are now nodes in the scene
            main = nodes.get("virtual") or nodes.get("amplified") or nodes.get("synthesised")
            contrast = self.parameters().contrast
            # side by side, linked: input on the left (Red), result on the right (Yellow)
            slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            for name, volume in (("Red", contrast), ("Yellow", main)):
                composite = slicer.app.layoutManager().sliceWidget(name).mrmlSliceCompositeNode()
                composite.SetBackgroundVolumeID(volume.GetID() if volume else None)
                composite.SetForegroundVolumeID(nodes["enhancement"].GetID() if "enhancement" in nodes
                                                and name == "Yellow" else None)
                composite.SetForegroundOpacity(0.0)
                composite.SetLinkedControl(True)
            slicer.util.resetSliceViews()
            self.ui.statusLabel.text = "done: " + ", ".join(node.GetName() for node in nodes.values())

    def onOpenModelsFolder(self):
        folder = self.logic.models_folder(self.parameters())
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def onClearModelsFolder(self):
        folder = self.logic.models_folder(self.parameters())
        if not slicer.util.confirmOkCancelDisplay(f"Delete every model file in {folder}?"):
            return
        with slicer.util.tryWithErrorDisplay("Could not clear the models folder."):
            removed = self.logic.clear_models_folder(folder)
            self.ui.statusLabel.text = f"removed {removed} file(s) from {folder}"
            self.updateModelsInfo()

    def cleanup(self):
        self.timer.stop()
        self.onCancel()
        self.removeObservers()


class VirtualGadoliniumTest(ScriptedLoadableModuleTest):
    """Runs the shipped demonstration model on a small synthetic exam through the subprocess path."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_amplify_synthetic()

    def test_amplify_synthetic(self):
        import tempfile

        import SimpleITK as sitk
        from neurocontrast.training.contrast_training import make_synthetic_cases
        from VirtualGadoliniumLib.logic import VirtualGadoliniumLogic, VirtualGadoliniumParameters, image_to_volume

        self.delayDisplay("Synthetic exam")
        case = make_synthetic_cases(tempfile.mkdtemp(), 1, (32, 32, 32))[0]
        nodes = {n: image_to_volume(sitk.ReadImage(str(case / f"{n}.nii.gz")), n) for n in ("t1", "flair", "t1c")}
        logic = VirtualGadoliniumLogic()
        p = VirtualGadoliniumParameters(mode="amplify", t1=nodes["t1"], flair=nodes["flair"], contrast=nodes["t1c"],
                                        tta=1, ensemble=1, preprocessed=True)
        self.assertTrue(p.isValid()[0])
        out = logic.run(p, timeout=600)
        self.assertIn("amplified", out)
        self.assertEqual(out["amplified"].GetImageData().GetDimensions(), nodes["t1c"].GetImageData().GetDimensions())
        self.delayDisplay("Test passed")
