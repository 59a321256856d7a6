"""NeuroContrast hub module: dependencies, settings, model registry, sample data, guide.

Runs only inside 3D Slicer. All decisions live in NeuroContrastLib (tested with pytest and slicer-core);
this file moves values between the .ui and the logic. The folder also holds the pure core package
``neurocontrast`` (a Slicer module path), so ``import neurocontrast`` works in Slicer's Python console.
"""

import logging
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

from NeuroContrastLib.logic import GUIDE_HTML, NeuroContrastLogic as _HubLogic
from NeuroContrastLib.registry import model_row_at


class NeuroContrast(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "NeuroContrast"
        self.parent.categories = ["NeuroContrast"]
        self.parent.dependencies = []
        self.parent.contributors = ["NeuroContrast developers"]
        self.parent.helpText = ("Set-up and overview of the NeuroContrast extension: Python dependencies, compute "
                                "settings, the model registry and the DSC phantom sample data.")
        self.parent.acknowledgementText = "Uses the PyTorch extension (PyTorchUtils) for installing torch."
        slicer.app.connect("startupCompleted()", _registerSampleData)


def _registerSampleData():
    from NeuroContrastLib.sampledata import register_sample_data
    try:
        register_sample_data(loader=lambda source: _loadPhantom())
    except Exception as exc:  # SampleData is optional; never break start-up
        logging.warning(f"NeuroContrast: sample data not registered: {exc}")


def _loadPhantom():
    from NeuroContrastLib.dependencies import ensure_dependencies

    with slicer.util.tryWithErrorDisplay("Failed to generate the DSC phantom.", waitCursor=True):
        ensure_dependencies(confirm=slicer.util.confirmOkCancelDisplay)  # the phantom needs scipy
        nodes = NeuroContrastLogic().load_sample()
        proxy = nodes["browser"].GetProxyNode(nodes["sequence"]) if nodes["browser"] else None
        if proxy is not None:
            slicer.util.setSliceViewerLayers(background=proxy, fit=True)
        return [nodes["sequence"], nodes["segmentation"]]


class NeuroContrastWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None, logic=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = logic  # injected (tests, scripts) or made in setup() with Slicer's settings as its store

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NeuroContrast.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or NeuroContrastLogic()

        self.ui.computeDeviceComboBox.addItems(["auto", "cpu", "cuda"])
        self.ui.guideLabel.setText(GUIDE_HTML)
        self.ui.checkDependenciesButton.connect("clicked()", self.updateDependencies)
        self.ui.installDependenciesButton.connect("clicked()", self.onInstall)
        self.ui.openModelsFolderButton.connect("clicked()", self.onOpenModelsFolder)
        self.ui.refreshModelsButton.connect("clicked()", lambda: self.updateModels(verify=False))
        self.ui.verifyModelsButton.connect("clicked()", lambda: self.updateModels(verify=True))
        self.ui.openModelCardButton.connect("clicked()", self.onOpenModelCard)
        self.ui.loadPhantomButton.connect("clicked()", _loadPhantom)
        self.modelRows = []

        # show the stored settings first, then listen for changes (so that filling the widgets never
        # overwrites what is stored)
        settings = self.logic.settings
        self.ui.computeDeviceComboBox.currentIndex = self.ui.computeDeviceComboBox.findText(settings.compute_device)
        self.ui.threadsSpinBox.value = settings.threads
        self.ui.modelsFolderPathLineEdit.currentPath = settings.models_folder
        self.ui.computeDeviceComboBox.connect("currentIndexChanged(int)", self.onSettingsChanged)
        self.ui.threadsSpinBox.connect("valueChanged(int)", self.onSettingsChanged)
        self.ui.modelsFolderPathLineEdit.connect("currentPathChanged(QString)", self.onSettingsChanged)
        self.updateDependencies()
        self.updateModels(verify=False)

    def updateDependencies(self):
        self.ui.dependenciesTextEdit.setPlainText(self.logic.dependency_text())

    def onInstall(self):
        with slicer.util.tryWithErrorDisplay("Installation failed.", waitCursor=True):
            self.logic.install(confirm=slicer.util.confirmOkCancelDisplay,
                               progress=lambda f, m: slicer.util.showStatusMessage(f"NeuroContrast: {m}", 3000))
        self.updateDependencies()

    def onSettingsChanged(self, *unused):
        with slicer.util.tryWithErrorDisplay("Invalid setting.", waitCursor=False):
            settings = self.logic.settings
            settings.compute_device = self.ui.computeDeviceComboBox.currentText
            settings.threads = self.ui.threadsSpinBox.value
            settings.models_folder = self.ui.modelsFolderPathLineEdit.currentPath
            applied = settings.apply(import_torch=True)  # shows the device torch will use
            self.ui.deviceStatusLabel.setText(f"Using {applied['device']}, {applied['threads']} thread(s)")

    def onOpenModelsFolder(self):
        folder = self.logic.settings.models_folder
        os.makedirs(folder, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

    def updateModels(self, verify=False):
        with slicer.util.tryWithErrorDisplay("Cannot read the model registry.", waitCursor=verify):
            table = slicer.mrmlScene.GetFirstNodeByName("NeuroContrast models")
            if table is None:
                table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "NeuroContrast models")
                table.SetSaveWithScene(False)
            rows = self.logic.update_models_table(table, verify=verify)
            self.modelRows = rows
            self.ui.modelsTableView.setMRMLTableNode(table)
            self.ui.modelsStatusLabel.setText(f"{len(rows)} model(s) in {self.logic.settings.models_folder} "
                                              "and the package")

    def onOpenModelCard(self):
        view = self.ui.modelsTableView
        indexes = view.selectionModel().selectedIndexes()
        table = view.mrmlTableNode()
        row = None
        if indexes and table is not None:
            # the view shows the table model through a sort proxy (its rows change order when the user sorts):
            # map the selection back to the model's row, then find the model by the name in that table row
            modelRow = view.sortFilterProxyModel().mapToSource(indexes[0]).row()
            row = model_row_at(self.modelRows, table, modelRow)
        if row is None:
            slicer.util.infoDisplay("Select a model in the table first.")
            return
        card = row.model_card
        url = qt.QUrl(card) if card.startswith("http") else qt.QUrl.fromLocalFile(card)
        qt.QDesktopServices.openUrl(url)


def NeuroContrastLogic():
    """The hub logic with Slicer's persistent settings (qt.QSettings) as its store."""
    return _HubLogic(settings_store=qt.QSettings())


class NeuroContrastTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_dependencies_and_settings()
        self.test_sample_phantom()

    def test_dependencies_and_settings(self):
        logic = NeuroContrastLogic()
        statuses = logic.dependency_statuses()
        self.assertTrue(any(s.name == "torch" for s in statuses))
        previous = logic.settings.threads
        logic.settings.threads = 3
        self.assertEqual(NeuroContrastLogic().settings.threads, 3)  # persisted in QSettings
        logic.settings.threads = previous

    def test_sample_phantom(self):
        from NeuroContrastLib.sampledata import phantom_options_for_tests
        nodes = NeuroContrastLogic().load_sample(**phantom_options_for_tests())
        self.assertEqual(nodes["sequence"].GetNumberOfDataNodes(), phantom_options_for_tests()["n_frames"])
        self.assertEqual(sorted(nodes["segments"]), ["AIF", "Brain", "VOF"])
        self.delayDisplay("NeuroContrast self-test passed")
