"""Smoke test of the Slicer-only module files (NeuroContrast.py, PerfusionNet.py) without the Slicer application.

``qt``, ``slicer.ScriptedLoadableModule`` and the application parts of ``slicer.util`` are replaced by small
fakes; the .ui file is turned into fake widgets with the object names and kinds it declares (so a widget the
code uses but the .ui lacks fails here too). The MRML scene, the logic and the core are real (slicer-core).
This runs the widgets' setup, the parameter round trip, the live curves, Suggest AIF and Apply, and the
modules' own self-tests (ScriptedLoadableModuleTest) on the locally generated phantom.
"""

from __future__ import annotations

import contextlib
import importlib.util
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

class FakeSignalOwner:
    def __init__(self, name):
        self.objectName = name
        self.slots = {}

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args)

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


class FakeTableView(FakeSignalOwner):
    table = None

    def setMRMLTableNode(self, node):  # noqa: N802
        self.table = node

    def setMRMLScene(self, scene):  # noqa: N802
        pass

    def selectionModel(self):  # noqa: N802
        return types.SimpleNamespace(selectedIndexes=lambda: [types.SimpleNamespace(row=lambda: 0)])


class FakeValueWidget(FakeSignalOwner):
    def __init__(self, name, value):
        super().__init__(name)
        self.value = value
        self.checked = False
        self.text = ""
        self.currentPath = ""


def fake_widget(cls: str, name: str):
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

    qt.QTimer = FakeTimer
    qt.QUrl = types.SimpleNamespace(fromLocalFile=lambda path: path)
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

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):  # noqa: N802
            return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

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
    monkeypatch.setattr(slicer.util, "infoDisplay", lambda *a, **k: None)
    monkeypatch.setenv("NEUROCONTRAST_MODELS_DIR", "")
    return types.SimpleNamespace(startup=startup, charts=charts, messages=messages, opened=opened)


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
    stored = loaded.PerfusionNetParameters.read(widget.parameterNode)
    assert stored.dsc_node_id == nodes["sequence"].GetID() and stored.vof_segment == "VOF"
    # a new widget restores the parameters from the parameter node
    again = make_widget(loaded, "PerfusionNet")
    again.parameterNode = widget.parameterNode
    again.uiFromParameters(stored)
    assert again.parametersFromUi() == stored


@pytest.mark.parametrize("module", ["NeuroContrast", "PerfusionNet"])
def test_module_self_tests_pass(fake_slicer_app, monkeypatch, mrml_scene, module):
    loaded = load_module_file(module, monkeypatch)
    result = unittest.TestResult()
    getattr(loaded, f"{module}Test")("runTest").run(result)
    assert result.errors == [] and result.failures == []
    assert fake_slicer_app.messages[-1].startswith(f"{module} self-test passed")
    assert np.isfinite(len(fake_slicer_app.messages))
