"""Smoke test of the Slicer-only module files (NeuroContrast.py, PerfusionNet.py, VirtualGadolinium.py; the
ReaderStudy self-test) without the Slicer application.

``qt``, ``slicer.ScriptedLoadableModule`` and the application parts of ``slicer.util`` are replaced by small
fakes; the .ui file is turned into fake widgets with the object names and kinds it declares (so a widget the
code uses but the .ui lacks fails here too). The MRML scene, the logic and the core are real (slicer-core).
This runs the widgets' setup, the parameter round trip, the live curves, Suggest AIF and Apply, the
VirtualGadolinium Apply → poll → show cycle, and the modules' own self-tests (ScriptedLoadableModuleTest).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import slicer

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------- fake Qt widgets

def _accepted_arguments(slot, count):
    """As PythonQt: a slot taking fewer arguments than the signal carries gets the first ones only (the Slicer
    module template connects ``clicked(bool)`` to ``onApplyButton(self)``)."""
    import inspect

    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return count
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return count
    return min(count, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class FakeSignalOwner:
    def __init__(self, name):
        self.objectName = name
        self.slots = {}

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args[:_accepted_arguments(slot, len(args))])

    def setText(self, text):  # noqa: N802
        self.text = text

    def setPlainText(self, text):  # noqa: N802
        self.plainText = text


class FakeComboBox(FakeSignalOwner):
    def __init__(self, name):
        super().__init__(name)
        self.items = []  # (text, data)
        self._index = -1

    def addItem(self, text, data=None):  # noqa: N802
        self.items.append((text, data))
        if self._index < 0:
            self.currentIndex = 0

    def addItems(self, texts):  # noqa: N802
        for text in texts:
            self.addItem(text)

    def clear(self):
        self.items, self._index = [], -1
        self.emit("currentIndexChanged(int)", -1)

    def findData(self, data):  # noqa: N802
        return next((i for i, item in enumerate(self.items) if item[1] == data), -1)

    def findText(self, text):  # noqa: N802
        return next((i for i, item in enumerate(self.items) if item[0] == text), -1)

    def setCurrentText(self, text):  # noqa: N802
        if self.findText(text) >= 0:
            self.currentIndex = self.findText(text)

    @property
    def currentIndex(self):  # noqa: N802
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):  # noqa: N802
        self._index = index
        self.emit("currentIndexChanged(int)", index)

    @property
    def currentText(self):  # noqa: N802
        return self.items[self._index][0] if 0 <= self._index < len(self.items) else ""

    @property
    def currentData(self):  # noqa: N802
        return self.items[self._index][1] if 0 <= self._index < len(self.items) else None


class FakeNodeComboBox(FakeSignalOwner):
    def __init__(self, name):
        super().__init__(name)
        self.node = None

    def currentNode(self):  # noqa: N802
        return self.node

    def setCurrentNode(self, node):  # noqa: N802
        self.node = node
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)

    def setMRMLScene(self, scene):  # noqa: N802
        self.scene = scene


def _index(row):
    return types.SimpleNamespace(row=lambda: row)


class FakeTableView(FakeSignalOwner):
    """qMRMLTableView: it shows its qMRMLTableModel through a QSortFilterProxyModel. ``selectedRows`` are the
    selected rows of the view; ``viewOrder[i]`` is the model row the view shows in row i (None: not sorted)."""

    def __init__(self, name):
        super().__init__(name)
        self.table = None
        self.selectedRows = [0]
        self.viewOrder = None

    def setMRMLTableNode(self, node):  # noqa: N802
        self.table = node

    def mrmlTableNode(self):  # noqa: N802
        return self.table

    def setMRMLScene(self, scene):  # noqa: N802
        pass

    def selectionModel(self):  # noqa: N802
        return types.SimpleNamespace(selectedIndexes=lambda: [_index(r) for r in self.selectedRows])

    def sortFilterProxyModel(self):  # noqa: N802
        return types.SimpleNamespace(mapToSource=lambda index: _index(
            index.row() if self.viewOrder is None else self.viewOrder[index.row()]))


class FakeValueWidget(FakeSignalOwner):
    def __init__(self, name, value):
        super().__init__(name)
        self.value = value
        self.checked = False
        self.text = ""
        self.currentPath = ""


class FakeTableWidget(FakeValueWidget):
    def __init__(self, name):
        super().__init__(name, 0)
        self.cells = {}
        self.rowCount = 0
        self.current = -1

    def setColumnCount(self, count):  # noqa: N802
        self.columnCount = count

    def setHorizontalHeaderLabels(self, labels):  # noqa: N802
        self.headers = list(labels)

    def setRowCount(self, count):  # noqa: N802
        self.rowCount = count
        self.cells = {k: v for k, v in self.cells.items() if k[0] < count}

    def setItem(self, row, column, item):  # noqa: N802
        self.cells[row, column] = item

    def item(self, row, column):
        return self.cells.get((row, column))

    def currentRow(self):  # noqa: N802
        return self.current


class FakeContainer(FakeValueWidget):
    """A plain QWidget holding a layout that the code fills."""

    def __init__(self, name):
        super().__init__(name, 0)
        self.children = []

    def layout(self):
        return types.SimpleNamespace(addWidget=self.children.append)


def fake_widget(cls: str, name: str):
    if cls == "QTableWidget":
        return FakeTableWidget(name)
    if cls == "QWidget":
        return FakeContainer(name)
    if cls == "QComboBox":
        return FakeComboBox(name)
    if cls == "qMRMLNodeComboBox":
        return FakeNodeComboBox(name)
    if cls == "qMRMLTableView":
        return FakeTableView(name)
    return FakeValueWidget(name, 0.0 if cls == "QDoubleSpinBox" else 0)


def fake_ui(ui_path: Path):
    root = ET.parse(ui_path).getroot()
    widgets = {}
    for element in root.iter("widget"):
        widget = fake_widget(element.get("class"), element.get("name"))
        for prop in element.findall("property"):  # initial values the .ui sets
            if prop.get("name") == "value" and prop.find("double") is not None:
                widget.value = float(prop.findtext("double"))
            if prop.get("name") == "value" and prop.find("number") is not None:
                widget.value = int(prop.findtext("number"))
        if isinstance(widget, FakeComboBox):  # items the .ui declares
            for item in element.findall("item"):
                widget.addItem(item.findtext("property/string"))
        widgets[element.get("name")] = widget
    top = widgets[root.find("widget").get("name")]
    top.setMRMLScene = lambda scene: None
    top.widgets = widgets
    return top


# ----------------------------------------------------------------------------------------- fake application

class FakeSettings:
    store = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):  # noqa: N802
        self.store[key] = str(value)

    def remove(self, key):
        self.store.pop(key, None)


@pytest.fixture
def fake_slicer_app(mrml_scene, monkeypatch, tmp_path):
    qt = types.ModuleType("qt")
    qt.QSettings = FakeSettings
    FakeSettings.store = {"NeuroContrast/ModelsFolder": str(tmp_path / "models")}

    class FakeTimer(FakeSignalOwner):
        def __init__(self):
            super().__init__("timer")
            self.starts = 0

        def setSingleShot(self, value):  # noqa: N802
            pass

        def setInterval(self, value):  # noqa: N802
            pass

        def start(self):
            self.starts += 1
            self.active = True

        def stop(self):
            self.active = False

        def isActive(self):  # noqa: N802
            return getattr(self, "active", False)

    deferred = []  # QTimer.singleShot(0, f) calls: the test runs them when the event loop would
    FakeTimer.singleShot = staticmethod(lambda msec, function: deferred.append(function))

    class FakeUrl(str):
        @staticmethod
        def fromLocalFile(path):  # noqa: N802
            return path

    class FakeTableWidgetItem:
        def __init__(self, text):
            self._text = text

        def text(self):
            return self._text

    class FakePushButton:
        def __init__(self, text=""):
            self.text, self.checkable, self.checked = text, False, False

        def deleteLater(self):  # noqa: N802
            pass

    class FakeButtonGroup(FakeSignalOwner):
        def __init__(self, parent=None):
            super().__init__("buttonGroup")
            self._buttons = []

        def buttons(self):
            return list(self._buttons)

        def addButton(self, button, id_=-1):  # noqa: N802
            self._buttons.append(button)

        def removeButton(self, button):  # noqa: N802
            self._buttons.remove(button)

    qt.QTimer = FakeTimer
    qt.QUrl = FakeUrl
    qt.QTableWidgetItem = FakeTableWidgetItem
    qt.QPushButton = FakePushButton
    qt.QButtonGroup = FakeButtonGroup
    qt.QDesktopServices = types.SimpleNamespace(openUrl=lambda url: opened.append(url))
    opened = []

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

        def setup(self):
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def resourcePath(self, relative):  # noqa: N802
            return str(self.moduleDir / "Resources" / relative)

    class ScriptedLoadableModuleLogic:  # as in Slicer: the singleton tag is the class name without "Logic"
        def __init__(self, parent=None):
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]

        def getParameterNode(self):  # noqa: N802
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
                node.UnRegister(None)
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message):  # noqa: N802
            messages.append(message)

    messages = []
    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)

    startup = []
    charts = []
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        connect=lambda signal, slot: startup.append(slot), processEvents=lambda: None), raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(plots=types.SimpleNamespace(
        logic=lambda: types.SimpleNamespace(ShowChartInLayout=charts.append))), raising=False)

    @contextlib.contextmanager
    def try_with_error_display(message=None, waitCursor=False):  # noqa: N803 - re-raise: the test must see errors
        yield

    monkeypatch.setattr(slicer.util, "loadUI", fake_ui)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda top: types.SimpleNamespace(**top.widgets))
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: pytest.fail("asked to install"))
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: types.SimpleNamespace(
        setValue=lambda v: None, setLabelText=lambda t: None, close=lambda: None))
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: None)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda *a: None)
    infos = []
    monkeypatch.setattr(slicer.util, "infoDisplay", lambda text, *a, **k: infos.append(text))
    monkeypatch.setenv("NEUROCONTRAST_MODELS_DIR", "")
    return types.SimpleNamespace(startup=startup, charts=charts, messages=messages, opened=opened, infos=infos,
                                 deferred=deferred)


def load_module_file(module: str, monkeypatch):
    path = REPO / module / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_{module}_under_test", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def make_widget(loaded, module: str):
    widget = getattr(loaded, f"{module}Widget")(None)
    widget.moduleDir = REPO / module
    widget.setup()
    return widget


# ----------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def phantom():
    from NeuroContrastLib.sampledata import phantom_options_for_tests
    from neurocontrast.perfusion.phantom import generate_phantom

    return generate_phantom(**phantom_options_for_tests())


def test_hub_widget(fake_slicer_app, monkeypatch, mrml_scene):
    loaded = load_module_file("NeuroContrast", monkeypatch)
    parent = types.SimpleNamespace()
    loaded.NeuroContrast(parent)
    assert parent.title == "NeuroContrast" and parent.categories == ["NeuroContrast"]
    fake_slicer_app.startup[0]()  # registers sample data where SampleData exists (here it does not)
    widget = make_widget(loaded, "NeuroContrast")
    ui = widget.ui
    assert "All dependencies are installed." in ui.dependenciesTextEdit.plainText
    assert ui.computeDeviceComboBox.currentText == "auto"  # stored settings shown, not overwritten
    assert FakeSettings.store["NeuroContrast/ModelsFolder"].endswith("models")
    ui.threadsSpinBox.value = 2
    ui.threadsSpinBox.emit("valueChanged(int)", 2)
    assert FakeSettings.store["NeuroContrast/Threads"] == "2"
    assert ui.deviceStatusLabel.text.endswith("2 thread(s)")
    ui.refreshModelsButton.emit("clicked()")
    assert ui.modelsTableView.table.GetName() == "NeuroContrast models"
    ui.openModelsFolderButton.emit("clicked()")
    assert fake_slicer_app.opened[-1] == FakeSettings.store["NeuroContrast/ModelsFolder"]
    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: asked.append(text) or False)
    monkeypatch.setattr(loaded.NeuroContrastLogic().__class__, "load_sample",
                        lambda self, scene=None, **options: pytest.fail("phantom generated without its packages"))
    import NeuroContrastLib.dependencies as dependencies
    dependencies.reset_session_cache()
    real_version = dependencies.importlib.metadata.version

    def version_without_scipy(name):
        if name == "scipy":
            raise dependencies.importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(dependencies.importlib.metadata, "version", version_without_scipy)
    with pytest.raises(ValueError, match="installation declined"):  # the phantom needs scipy: ask first
        ui.loadPhantomButton.emit("clicked()")
    assert "scipy" in asked[0]
    dependencies.reset_session_cache()


def test_hub_model_card_follows_the_sorted_view(fake_slicer_app, monkeypatch, mrml_scene, tmp_path):
    """"Open model card" opens the card of the model the selected row shows, also after the user sorted the table
    (qMRMLTableView shows its model through a sort proxy); no selection, or the column-name row, asks for one."""
    torch = pytest.importorskip("torch")
    from neurocontrast import weights

    monkeypatch.setattr(weights, "PACKAGE_MODELS_DIR", tmp_path / "none")
    for name in ("alpha", "beta", "gamma"):
        weights.save_model({"w": torch.ones(2)}, FakeSettings.store["NeuroContrast/ModelsFolder"], name, "unet3d",
                           {}, model_card=f"docs/models/{name}-card.md")
    widget = make_widget(load_module_file("NeuroContrast", monkeypatch), "NeuroContrast")
    view, opened = widget.ui.modelsTableView, fake_slicer_app.opened
    assert [row.name for row in widget.modelRows] == ["alpha", "beta", "gamma"]
    view.viewOrder = [0, 3, 2, 1]  # sorted by name, descending; the model's row 0 holds the column names
    for selected, expected in ((1, "gamma"), (3, "alpha"), (2, "beta")):
        view.selectedRows = [selected]
        widget.ui.openModelCardButton.emit("clicked()")
        assert opened[-1].endswith(f"/docs/models/{expected}-card.md")
    view.viewOrder = None
    view.selectedRows = [1]
    widget.ui.openModelCardButton.emit("clicked()")
    assert opened[-1].endswith("/docs/models/alpha-card.md")
    count = len(opened)
    for selection in ([], [0]):
        view.selectedRows = selection
        widget.ui.openModelCardButton.emit("clicked()")
    assert len(opened) == count and fake_slicer_app.infos == ["Select a model in the table first."] * 2


def test_perfusionnet_widget_curves_suggest_apply(fake_slicer_app, monkeypatch, mrml_scene, phantom):
    from NeuroContrastLib.sampledata import load_dsc_phantom

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    loaded = load_module_file("PerfusionNet", monkeypatch)
    widget = make_widget(loaded, "PerfusionNet")
    ui = widget.ui
    assert ui.methodComboBox.currentData == "osvd"
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    ui.aifSelector.setCurrentNode(nodes["segmentation"])
    ui.vofSelector.setCurrentNode(nodes["segmentation"])
    ui.vofSegmentComboBox.currentIndex = ui.vofSegmentComboBox.findText("VOF")
    ui.brainSelector.setCurrentNode(nodes["segmentation"])
    ui.brainSegmentComboBox.currentIndex = ui.brainSegmentComboBox.findText("Brain")
    assert [t for t, _ in ui.aifSegmentComboBox.items] == ["AIF", "VOF", "Brain"]
    params = widget.parametersFromUi()
    assert (params.aif_segment, params.vof_segment, params.brain_segment) == ("AIF", "VOF", "Brain")
    widget.onUpdateCurves()
    assert ui.curvesStatusLabel.text.startswith(f"AIF: {int(phantom.aif_mask.sum())} voxel(s)")
    assert fake_slicer_app.charts
    ui.suggestAifButton.emit("clicked()")
    assert ui.aifSelector.currentNode().GetName() == "AIF candidates"
    ui.aifSelector.setCurrentNode(nodes["segmentation"])
    ui.applyButton.emit("clicked()")
    assert ui.statusLabel.text.startswith("Done: cbf")
    assert ui.volumesTableView.table is not None
    assert widget.parameterNode.GetSingletonTag() == "PerfusionNet"  # not the base class's "ScriptedLoadableModule"
    assert widget.parameterNode.GetAttribute("ModuleName") == "PerfusionNet"
    stored = loaded.PerfusionNetParameters.read(widget.parameterNode)
    assert stored.dsc_node_id == nodes["sequence"].GetID() and stored.vof_segment == "VOF"
    # a new widget restores the parameters from the parameter node
    again = make_widget(loaded, "PerfusionNet")
    again.parameterNode = widget.parameterNode
    again.uiFromParameters(stored)
    assert again.parametersFromUi() == stored


@pytest.mark.parametrize("module", ["NeuroContrast", "PerfusionNet", "ReaderStudy"])
def test_module_self_tests_pass(fake_slicer_app, monkeypatch, mrml_scene, module):
    loaded = load_module_file(module, monkeypatch)
    result = unittest.TestResult()
    getattr(loaded, f"{module}Test")("runTest").run(result)
    assert result.errors == [] and result.failures == []
    assert fake_slicer_app.messages[-1].startswith(f"{module} self-test passed")
    assert np.isfinite(len(fake_slicer_app.messages))


def test_readerstudy_widget_observers_and_marks(fake_slicer_app, monkeypatch, mrml_scene, tmp_path):
    """The ReaderStudy widget through two reads: each slice view is observed exactly once however many reads were
    opened (no "already has observer", one handler per view change) and not at all after logout; an unfinished
    "Add lesion" line and the lines of a deleted lesion leave no node and no markups display node behind."""
    import warnings

    from neurocontrast.readerstudy.synthetic import make_synthetic_study

    make_synthetic_study(tmp_path / "study", n_cases=2, seed=1)
    for cls in ("vtkMRMLSelectionNode", "vtkMRMLInteractionNode"):  # the application's singletons
        node = getattr(slicer, cls)()
        node.SetSingletonTag("Singleton")
        mrml_scene.AddNode(node)
    slice_nodes, composites, layouts = {}, {}, []
    for name in ("Red", "Yellow"):
        slice_nodes[name] = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
        composites[name] = mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")

    def slice_widget(name):
        logic = types.SimpleNamespace(GetSliceCompositeNode=lambda: composites[name], FitSliceToAll=lambda: None)
        return types.SimpleNamespace(sliceLogic=lambda: logic, mrmlSliceNode=lambda: slice_nodes[name])

    monkeypatch.setattr(slicer.app, "layoutManager", lambda: types.SimpleNamespace(
        setLayout=layouts.append, sliceWidget=slice_widget), raising=False)
    probe = []
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "findChild", lambda parent, name: types.SimpleNamespace(setVisible=probe.append))

    loaded = load_module_file("ReaderStudy", monkeypatch)
    ticks = iter(range(10, 10**6, 10))
    monkeypatch.setattr(loaded, "time", types.SimpleNamespace(time=lambda: next(ticks)))  # no 1 s throttling
    widget = make_widget(loaded, "ReaderStudy")
    ui = widget.ui
    activity = []
    widget.logic.activity = lambda: activity.append(1)

    def view_handlers():
        activity.clear()
        for node in slice_nodes.values():
            node.Modified()
        return len(activity)

    def count(class_name):
        return mrml_scene.GetNumberOfNodesByClass(class_name)

    ui.studyFolderLineEdit.text, ui.readerLineEdit.text = str(tmp_path / "study"), "R1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # VTKObservationMixin warns "already has observer"
        ui.loginButton.emit("clicked()")
        assert probe == [False] and ui.worklistTable.rowCount == len(widget.logic.worklist()) > 0
        ui.openNextButton.emit("clicked()")
        assert layouts == [slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView]
        assert view_handlers() == 2
        widget.gradeGroup.emit("buttonClicked(int)", 3)
        ui.submitButton.emit("clicked()")  # opens the next read: the same slice views again
        assert len(layouts) == 2 and ui.caseLabel.text.startswith("Case K")
        assert view_handlers() == 2
        assert sorted(obj.GetID() for obj, _, method, *_ in widget.Observations
                      if method == widget.onViewActivity) == sorted(n.GetID() for n in slice_nodes.values())
        # an unfinished "Add lesion" is replaced by the next one; the drawn line becomes the lesion's two lines
        displays = count("vtkMRMLMarkupsDisplayNode")
        ui.addLesionButton.emit("clicked()")
        ui.addLesionButton.emit("clicked()")
        assert count("vtkMRMLMarkupsLineNode") == 1 and count("vtkMRMLMarkupsDisplayNode") == displays + 1
        widget.pendingLine.AddControlPointWorld(-6.0, 10.0, 0.0)
        widget.pendingLine.AddControlPointWorld(6.0, 10.0, 0.0)
        for deferred in fake_slicer_app.deferred:
            deferred()
        assert mrml_scene.GetFirstNodeByName("New long axis") is None and widget.pendingLine is None
        assert ui.lesionTable.rowCount == 1 and ui.lesionTable.item(0, 1).text() == "12.0"
        assert count("vtkMRMLMarkupsLineNode") == 2 and count("vtkMRMLMarkupsDisplayNode") == displays + 2
        ui.lesionTable.current = 0
        ui.deleteLesionButton.emit("clicked()")
        assert ui.lesionTable.rowCount == 0
        assert count("vtkMRMLMarkupsLineNode") == 0 and count("vtkMRMLMarkupsDisplayNode") == displays
        ui.logoutButton.emit("clicked()")
    assert view_handlers() == 0 and probe == [False, True]
    assert count("vtkMRMLScalarVolumeNode") == 0 and count("vtkMRMLMarkupsDisplayNode") == 0
    widget.cleanup()


def test_virtualgadolinium_widget_apply_poll_and_show(fake_slicer_app, monkeypatch, mrml_scene, tmp_path):
    import time

    import SimpleITK as sitk
    import torch
    from neurocontrast import weights
    from neurocontrast.networks.unet3d import ResidualUNet3D
    from neurocontrast.training.contrast_training import make_synthetic_cases
    from VirtualGadoliniumLib.logic import image_to_volume

    cfg = dict(in_channels=3, out_channels=1, base_channels=2, depth=2, blocks_per_level=1,
               final_activation="sigmoid", residual_channel=2)
    torch.manual_seed(0)
    models = tmp_path / "models"
    weights.save_model(ResidualUNet3D(**cfg).state_dict(), models, "tiny-fold0", "ResidualUNet3D", cfg,
                       input_channels=["t1", "flair", "t1c_low"])  # amplify feeds the T1c as t1c_low
    case = make_synthetic_cases(tmp_path / "data", 1, (16, 20, 24), seed=2)[0]
    nodes = {n: image_to_volume(sitk.ReadImage(str(case / f"{n}.nii.gz")), n, scene=mrml_scene)
             for n in ("t1", "flair", "t1c")}
    composites = {name: mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for name in ("Red", "Yellow")}
    layouts = []
    layout_manager = types.SimpleNamespace(
        setLayout=layouts.append,
        sliceWidget=lambda name: types.SimpleNamespace(mrmlSliceCompositeNode=lambda: composites[name]))
    monkeypatch.setattr(slicer.app, "layoutManager", lambda: layout_manager, raising=False)
    monkeypatch.setattr(slicer.util, "resetSliceViews", lambda: None)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda *a, **k: pytest.fail(f"error shown: {a}"))
    monkeypatch.setenv("NEUROCONTRAST_PYTHON", sys.executable)

    loaded = load_module_file("VirtualGadolinium", monkeypatch)
    parent = types.SimpleNamespace()
    loaded.VirtualGadolinium(parent)
    assert parent.dependencies == ["NeuroContrast"]  # NeuroContrastLib and the core live in the hub module
    widget = make_widget(loaded, "VirtualGadolinium")
    ui = widget.ui
    assert not ui.applyButton.enabled and ui.statusLabel.text == "select the pre-contrast T1"
    ui.modeComboBox.setCurrentText("amplify")
    for selector, node in ((ui.t1Selector, nodes["t1"]), (ui.flairSelector, nodes["flair"]),
                           (ui.contrastSelector, nodes["t1c"])):
        selector.setCurrentNode(node)
    ui.modelNameLineEdit.text = "tiny"
    ui.modelsFolderPathLineEdit.currentPath = str(models)
    ui.preprocessedCheckBox.checked = True
    ui.ensembleSpinBox.value = 1
    params = widget.parameters()
    assert (params.mode, params.agent, params.tta, params.field_strength_t) == ("amplify", "gadoterate", 2, 1.5)
    widget.updateApply()
    assert ui.applyButton.enabled
    ui.applyButton.emit("clicked(bool)", False)
    assert widget.timer.isActive() and ui.cancelButton.enabled and not ui.applyButton.enabled
    work_dir = widget.logic.work_dir
    deadline = time.monotonic() + 300
    while widget.timer.isActive() and time.monotonic() < deadline:
        widget.onPoll()
        time.sleep(0.2)
    assert ui.statusLabel.text.startswith("done: t1c amplified"), ui.statusLabel.text
    amplified = mrml_scene.GetFirstNodeByName("t1c amplified")
    assert amplified.GetDisplayNode() is not None  # else the result would not show in the views
    assert composites["Yellow"].GetBackgroundVolumeID() == amplified.GetID()
    assert composites["Red"].GetBackgroundVolumeID() == nodes["t1c"].GetID()
    assert layouts == [slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView]
    assert not os.path.exists(work_dir)
