"""A Qt / Slicer-application stand-in that behaves like Slicer where the module widgets depend on it.

The MRML scene, the logic and the core stay real (``slicer-core``); what the wheel lacks (``qt``,
``slicer.ScriptedLoadableModule``, ``slicer.app``, the GUI parts of ``slicer.util``) is replaced here, strictly:

- the .ui file becomes fake widgets of the kinds it declares, with the initial property values it sets
  (``value``, ``text``, ``checked``, ``enabled``, ``nodeTypes``...);
- every widget **rejects unknown attributes** (a typo such as ``button.enable = True`` raises, as the
  property does not exist on the Qt class);
- every ``connect("signal(args)")`` is checked against :data:`QT_SIGNALS`, the signals that exist in both
  Qt 5.15 and Qt 6 (Slicer's main branch builds with Qt 6.8); Qt 5-only overloads such as
  ``QButtonGroup.buttonClicked(int)`` or ``QComboBox.currentIndexChanged(QString)`` fail with the reason;
- MRML widgets get the scene only along the .ui's ``mrmlSceneChanged`` → ``setMRMLScene`` connections, as in
  Slicer; a picker without the scene lists and selects nothing;
- node pickers (``qMRMLNodeComboBox``) honour ``nodeTypes`` through the real class hierarchy of the
  ``slicer-core`` classes (plus :data:`LOADABLE_MODULE_CLASSES` for classes of Slicer's loadable modules that
  the wheel lacks): a node of another type cannot be selected, as in Slicer;
- ``qMRMLSegmentSelectorWidget`` lists the segments of its segmentation and re-reads them on the
  segmentation's real ``SegmentAdded`` / ``SegmentRemoved`` / ``SegmentModified`` events;
- ``QTimer`` does not tick by itself: :meth:`FakeApp.run_timers` fires the timers that are due, so a test
  decides when "the event loop" runs and can count debounced updates.

Widget tests import :func:`install` through the ``fake_slicer_app`` fixture of ``Testing/mrml/conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, List, Optional

import slicer

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------ signals

_BUTTON = {"clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()"}
_WIDGET: set = set()
#: signals of each Qt / CTK / Slicer class that exist in Qt 5.15 and Qt 6 (checked against the Qt 6.8 and
#: 5.15 class references and Slicer's qMRML widget headers)
QT_SIGNALS: Dict[str, set] = {
    "QWidget": _WIDGET, "qMRMLWidget": {"mrmlSceneChanged(vtkMRMLScene*)"}, "QLabel": {"linkActivated(QString)"},
    "QPushButton": _BUTTON, "QToolButton": _BUTTON | {"triggered(QAction*)"}, "QRadioButton": _BUTTON,
    "QCheckBox": _BUTTON | {"stateChanged(int)"},
    "ctkCollapsibleButton": _BUTTON | {"contentsCollapsed(bool)"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)",
                  "textActivated(QString)", "editTextChanged(QString)"},
    "QSpinBox": {"valueChanged(int)", "textChanged(QString)", "editingFinished()"},
    "QDoubleSpinBox": {"valueChanged(double)", "textChanged(QString)", "editingFinished()"},
    "ctkSliderWidget": {"valueChanged(double)", "valueIsChanging(double)"},
    "QSlider": {"valueChanged(int)", "sliderMoved(int)", "sliderReleased()"},
    "QLineEdit": {"textChanged(QString)", "textEdited(QString)", "editingFinished()", "returnPressed()"},
    "ctkPathLineEdit": {"currentPathChanged(QString)", "validInputChanged(bool)"},
    "QPlainTextEdit": {"textChanged()"}, "QTextEdit": {"textChanged()"}, "QTextBrowser": {"textChanged()"},
    "QProgressBar": {"valueChanged(int)"},
    "QTableWidget": {"itemSelectionChanged()", "cellClicked(int,int)", "cellDoubleClicked(int,int)",
                     "currentCellChanged(int,int,int,int)", "itemChanged(QTableWidgetItem*)"},
    "qMRMLTableView": {"selectionChanged()"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)", "nodeAdded(vtkMRMLNode*)",
                          "nodeActivated(vtkMRMLNode*)", "nodeAddedByUser(vtkMRMLNode*)"},
    "qMRMLSegmentSelectorWidget": {"currentNodeChanged(vtkMRMLNode*)", "currentSegmentChanged(QString)"},
    "QButtonGroup": {"buttonClicked(QAbstractButton*)", "buttonToggled(QAbstractButton*,bool)",
                     "idClicked(int)", "idToggled(int,bool)", "idPressed(int)", "idReleased(int)"},
    "QTimer": {"timeout()"},
    "qSlicerApplication": {"startupCompleted()", "aboutToQuit()"},
}
#: overloads removed in Qt 6 (the reason shown when a widget connects one)
QT5_ONLY = {
    "QButtonGroup": {"buttonClicked(int)", "buttonPressed(int)", "buttonReleased(int)", "buttonToggled(int,bool)"},
    "QComboBox": {"currentIndexChanged(QString)", "activated(QString)", "highlighted(QString)"},
    "QSpinBox": {"valueChanged(QString)"}, "QDoubleSpinBox": {"valueChanged(QString)"},
}


class SignalError(AssertionError):
    """A connect() to a signal that does not exist (in Qt 5.15 and Qt 6) on the widget's class."""


def check_signal(qt_class: str, signal: str) -> None:
    """Raise :class:`SignalError` unless ``signal`` exists on ``qt_class`` in Qt 5.15 and Qt 6."""
    signal = signal.replace(" ", "")
    if signal in QT5_ONLY.get(qt_class, ()):
        raise SignalError(f"{qt_class}.{signal} exists only in Qt 5 (removed in Qt 6, which Slicer's main "
                          "branch uses): connect to an overload that exists in both")
    if signal not in QT_SIGNALS.get(qt_class, ()):
        raise SignalError(f"{qt_class} has no signal {signal} (known: {sorted(QT_SIGNALS.get(qt_class, ()))})")


def _accepted_arguments(slot, count):
    """As PythonQt: a slot taking fewer arguments than the signal carries gets the first ones only."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return count
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return count
    return min(count, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


# ------------------------------------------------------------------------------------------------ MRML classes

#: MRML classes of Slicer's loadable modules that the slicer-core wheel lacks, with their base class
#: (Slicer: Modules/Loadable/MultiVolumeExplorer/MRML/vtkMRMLMultiVolumeNode.h derives from the scalar volume)
LOADABLE_MODULE_CLASSES = {"vtkMRMLMultiVolumeNode": "vtkMRMLScalarVolumeNode"}


def class_hierarchy(class_name: str) -> List[str]:
    """``class_name`` and its MRML/VTK base classes, most derived first (from slicer-core's real classes)."""
    if class_name in LOADABLE_MODULE_CLASSES:
        return [class_name] + class_hierarchy(LOADABLE_MODULE_CLASSES[class_name])
    cls = getattr(slicer, class_name, None)
    if cls is None:
        raise KeyError(f"{class_name} is no MRML class of slicer-core or of LOADABLE_MODULE_CLASSES")
    return [c.__name__ for c in cls.__mro__ if c.__name__.startswith("vtk")]


def accepts(node_types: List[str], class_name: str, show_child_node_types: bool = True) -> bool:
    """Whether a qMRMLNodeComboBox with ``nodeTypes`` lists a node of ``class_name`` (as Slicer decides it)."""
    if not show_child_node_types:
        return class_name in node_types
    return any(t in class_hierarchy(class_name) for t in node_types)


# ------------------------------------------------------------------------------------------------ widgets

class FakeObject:
    """A QObject: its Qt class, checked signals, and only the attributes its class declares."""

    QT_CLASS = "QWidget"
    PROPERTIES = ("objectName", "enabled", "visible", "toolTip")

    def __init__(self, name: str = "", qt_class: Optional[str] = None):
        object.__setattr__(self, "_slots", {})
        object.__setattr__(self, "qtClass", qt_class or self.QT_CLASS)
        self.objectName, self.enabled, self.visible, self.toolTip = name, True, True, ""

    def __setattr__(self, key, value):
        allowed = set()
        for cls in type(self).__mro__:
            allowed |= set(getattr(cls, "PROPERTIES", ()))
        if key not in allowed and not isinstance(getattr(type(self), key, None), property):
            raise AttributeError(f"{self.qtClass} '{self.objectName}' has no property '{key}'")
        object.__setattr__(self, key, value)

    def connect(self, signal, slot):
        check_signal(self.qtClass, signal)
        self._slots.setdefault(signal.replace(" ", ""), []).append(slot)
        return True

    def disconnect(self, signal, slot=None):
        slots = self._slots.get(signal.replace(" ", ""), [])
        self._slots[signal.replace(" ", "")] = [s for s in slots if slot is not None and s != slot]

    def emit(self, signal, *args):
        check_signal(self.qtClass, signal)
        for slot in list(self._slots.get(signal, [])):
            slot(*args[:_accepted_arguments(slot, len(args))])

    def setEnabled(self, value):  # noqa: N802
        self.enabled = bool(value)

    def setVisible(self, value):  # noqa: N802
        self.visible = bool(value)

    def setToolTip(self, text):  # noqa: N802
        self.toolTip = text

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False


class FakeContainer(FakeObject):
    """QWidget / QGroupBox / qMRMLWidget: holds a layout that the code may fill."""

    PROPERTIES = ("children",)

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.children = []

    def layout(self):
        return types.SimpleNamespace(addWidget=self.children.append)

    def setMRMLScene(self, scene):  # noqa: N802
        pass


class FakeLabel(FakeObject):
    QT_CLASS = "QLabel"
    PROPERTIES = ("text", "wordWrap")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.text, self.wordWrap = "", False

    def setText(self, text):  # noqa: N802
        self.text = text


class FakeButton(FakeObject):
    QT_CLASS = "QPushButton"
    PROPERTIES = ("text", "checkable", "checked", "collapsed")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.text, self.checkable, self.collapsed = "", qt_class in ("QCheckBox", "QRadioButton"), False
        object.__setattr__(self, "_checked", False)

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        changed = bool(value) != self._checked
        object.__setattr__(self, "_checked", bool(value))
        if changed:
            self.emit("toggled(bool)", bool(value))

    def setText(self, text):  # noqa: N802
        self.text = text

    def setChecked(self, value):  # noqa: N802
        self.checked = value

    def isChecked(self):  # noqa: N802
        return self.checked

    def click(self):
        """What a user's click does: toggle a checkable button, then emit ``clicked``."""
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.emit("clicked(bool)", self.checked)
        self.emit("clicked()")

    def layout(self):  # ctkCollapsibleButton holds a layout
        return types.SimpleNamespace(addWidget=lambda widget: None)


class FakeComboBox(FakeObject):
    QT_CLASS = "QComboBox"
    PROPERTIES = ("items", "_index")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.items, self._index = [], -1

    def _set_index(self, index):
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentTextChanged(QString)", self.currentText)

    def addItem(self, text, data=None):  # noqa: N802
        self.items.append((text, data))
        if self._index < 0:
            self._set_index(0)

    def addItems(self, texts):  # noqa: N802
        for text in texts:
            self.addItem(text)

    def clear(self):
        self.items = []
        self._set_index(-1)

    def count(self):
        return len(self.items)

    def itemText(self, index):  # noqa: N802
        return self.items[index][0]

    def itemData(self, index):  # noqa: N802
        return self.items[index][1]

    def findData(self, data):  # noqa: N802
        return next((i for i, item in enumerate(self.items) if item[1] == data), -1)

    def findText(self, text):  # noqa: N802
        return next((i for i, item in enumerate(self.items) if item[0] == text), -1)

    def setCurrentText(self, text):  # noqa: N802
        if self.findText(text) >= 0:
            self._set_index(self.findText(text))

    def setCurrentIndex(self, index):  # noqa: N802
        self._set_index(index)

    @property
    def currentIndex(self):  # noqa: N802
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):  # noqa: N802
        self._set_index(index)

    @property
    def currentText(self):  # noqa: N802
        return self.items[self._index][0] if 0 <= self._index < len(self.items) else ""

    @property
    def currentData(self):  # noqa: N802
        return self.items[self._index][1] if 0 <= self._index < len(self.items) else None


class FakeSpinBox(FakeObject):
    QT_CLASS = "QDoubleSpinBox"
    PROPERTIES = ("_value", "minimum", "maximum", "singleStep", "decimals", "suffix", "specialValueText")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        integer = qt_class in ("QSpinBox", "QSlider")
        self._value = 0 if integer else 0.0
        self.minimum, self.maximum, self.singleStep, self.decimals = 0, 99 if integer else 99.99, 1, 2
        self.suffix = self.specialValueText = ""

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, number):
        number = int(number) if self.qtClass in ("QSpinBox", "QSlider") else float(number)
        number = min(max(number, self.minimum), self.maximum)  # Qt clamps to the range
        if number != self._value:
            self._value = number
            self.emit("valueChanged(int)" if isinstance(number, int) else "valueChanged(double)", number)

    def setValue(self, number):  # noqa: N802
        self.value = number


class FakeLineEdit(FakeObject):
    QT_CLASS = "QLineEdit"
    PROPERTIES = ("_text", "placeholderText", "readOnly")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self._text, self.placeholderText, self.readOnly = "", "", False

    @property
    def text(self):
        return self._text

    @text.setter
    def text(self, value):
        if value != self._text:
            self._text = value
            self.emit("textChanged(QString)", value)

    def setText(self, value):  # noqa: N802
        self.text = value


class FakePathLineEdit(FakeObject):
    QT_CLASS = "ctkPathLineEdit"
    PROPERTIES = ("_path", "filters")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self._path, self.filters = "", 0

    @property
    def currentPath(self):  # noqa: N802
        return self._path

    @currentPath.setter
    def currentPath(self, value):  # noqa: N802
        if value != self._path:
            self._path = value
            self.emit("currentPathChanged(QString)", value)


class FakeTextEdit(FakeObject):
    QT_CLASS = "QPlainTextEdit"
    PROPERTIES = ("plainText", "readOnly", "html")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.plainText, self.readOnly, self.html = "", False, ""

    def setPlainText(self, text):  # noqa: N802
        self.plainText = text

    def toPlainText(self):  # noqa: N802
        return self.plainText


class FakeProgressBar(FakeObject):
    QT_CLASS = "QProgressBar"
    PROPERTIES = ("value", "minimum", "maximum", "format")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.value, self.minimum, self.maximum, self.format = 0, 0, 100, "%p%"

    def setValue(self, value):  # noqa: N802
        self.value = value


class FakeNodeComboBox(FakeObject):
    """qMRMLNodeComboBox: lists and selects only nodes of its ``nodeTypes`` (class hierarchy honoured)."""

    QT_CLASS = "qMRMLNodeComboBox"
    PROPERTIES = ("nodeTypes", "noneEnabled", "addEnabled", "removeEnabled", "renameEnabled", "editEnabled",
                  "showChildNodeTypes", "showHidden", "selectNodeUponCreation", "baseName", "scene", "_node")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.nodeTypes, self.noneEnabled, self.addEnabled, self.removeEnabled = [], False, True, True
        self.renameEnabled = self.editEnabled = self.showHidden = False
        self.showChildNodeTypes = self.selectNodeUponCreation = True
        self.baseName, self.scene, self._node = "", None, None

    def accepts(self, class_name: str) -> bool:
        return accepts(self.nodeTypes, class_name, self.showChildNodeTypes)

    def nodes(self) -> list:
        """The scene's nodes this combo box lists."""
        scene = self.scene
        if scene is None:
            return []
        found = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        return [n for n in found if self.accepts(n.GetClassName()) and (self.showHidden or not n.GetHideFromEditors())]

    def currentNode(self):  # noqa: N802
        return self._node

    def currentNodeID(self):  # noqa: N802
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node):  # noqa: N802
        """As Slicer: a node the combo box does not list cannot become current (the selection is cleared); a
        combo box that never got the scene (no ``mrmlSceneChanged`` → ``setMRMLScene`` connection) lists none."""
        if node is not None and (self.scene is None or not self.accepts(node.GetClassName())):
            node = None
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)

    def setCurrentNodeID(self, node_id):  # noqa: N802
        self.setCurrentNode(self.scene.GetNodeByID(node_id) if node_id and self.scene is not None else None)

    def setMRMLScene(self, scene):  # noqa: N802
        self.scene = scene


class FakeSegmentSelector(FakeObject):
    """qMRMLSegmentSelectorWidget: the segments of its segmentation, re-read on the segmentation's events."""

    QT_CLASS = "qMRMLSegmentSelectorWidget"
    PROPERTIES = ("noneEnabled", "segmentationNodeSelectorVisible", "_node", "_segment", "_tags", "segmentIDs",
                  "scene")
    EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.noneEnabled, self.segmentationNodeSelectorVisible = False, True
        self._node, self._segment, self._tags, self.segmentIDs, self.scene = None, "", [], [], None

    def setMRMLScene(self, scene):  # noqa: N802
        self.scene = scene

    def currentNode(self):  # noqa: N802
        return self._node

    def setCurrentNode(self, node):  # noqa: N802
        if node is not None and (self.scene is None or not node.IsA("vtkMRMLSegmentationNode")):
            node = None  # its segmentation combo box lists nothing without the scene
        if node is self._node:
            return
        for tag in self._tags:
            self._node.RemoveObserver(tag)
        self._node, self._tags = node, []
        if node is not None:
            self._tags = [node.AddObserver(getattr(slicer.vtkSegmentation, e), lambda *a: self._populate())
                          for e in self.EVENTS]
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)
        self._populate()

    def _populate(self):
        segmentation = self._node.GetSegmentation() if self._node is not None else None
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] \
            if segmentation is not None else []
        self.segmentIDs = ids
        current = self._segment if self._segment in ids else ("" if self.noneEnabled or not ids else ids[0])
        if current != self._segment:
            self._segment = current
            self.emit("currentSegmentChanged(QString)", current)

    def currentSegmentID(self):  # noqa: N802
        return self._segment

    def setCurrentSegmentID(self, segment_id):  # noqa: N802
        if segment_id in self.segmentIDs and segment_id != self._segment:
            self._segment = segment_id
            self.emit("currentSegmentChanged(QString)", segment_id)


def _index(row):
    return types.SimpleNamespace(row=lambda: row)


class FakeTableView(FakeObject):
    """qMRMLTableView, shown through a sort proxy: ``selectedRows`` are view rows, ``viewOrder[i]`` the model row
    the view shows in row i (None: not sorted)."""

    QT_CLASS = "qMRMLTableView"
    PROPERTIES = ("table", "selectedRows", "viewOrder")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.table, self.selectedRows, self.viewOrder = None, [0], None

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


class FakeTableWidget(FakeObject):
    QT_CLASS = "QTableWidget"
    PROPERTIES = ("cells", "rowCount", "columnCount", "headers", "current", "editTriggers")

    def __init__(self, name="", qt_class=None):
        super().__init__(name, qt_class)
        self.cells, self.rowCount, self.columnCount, self.headers, self.current = {}, 0, 0, [], -1
        self.editTriggers = 0

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


WIDGET_CLASSES = {
    "QWidget": FakeContainer, "QGroupBox": FakeContainer, "qMRMLWidget": FakeContainer, "QFrame": FakeContainer,
    "QLabel": FakeLabel, "QPushButton": FakeButton, "QToolButton": FakeButton, "QCheckBox": FakeButton,
    "QRadioButton": FakeButton, "ctkCollapsibleButton": FakeButton, "QComboBox": FakeComboBox,
    "QSpinBox": FakeSpinBox, "QDoubleSpinBox": FakeSpinBox, "ctkSliderWidget": FakeSpinBox,
    "QLineEdit": FakeLineEdit, "ctkPathLineEdit": FakePathLineEdit, "QPlainTextEdit": FakeTextEdit,
    "QTextEdit": FakeTextEdit, "QTextBrowser": FakeTextEdit, "QProgressBar": FakeProgressBar,
    "qMRMLNodeComboBox": FakeNodeComboBox, "qMRMLSegmentSelectorWidget": FakeSegmentSelector,
    "qMRMLTableView": FakeTableView, "QTableWidget": FakeTableWidget,
}

#: .ui properties the fakes take over, by the XML element holding the value
_UI_PROPERTIES = ("value", "minimum", "maximum", "text", "checked", "checkable", "enabled", "nodeTypes",
                  "noneEnabled", "showChildNodeTypes", "segmentationNodeSelectorVisible", "decimals",
                  "placeholderText", "collapsed")


def _property_value(prop: ET.Element):
    for tag, convert in (("double", float), ("number", int), ("bool", lambda t: t == "true"), ("string", str)):
        element = prop.find(tag)
        if element is not None:
            return convert(element.text or "")
    if prop.find("stringlist") is not None:
        return [s.text for s in prop.iter("string") if s.text]
    return None


def fake_ui(ui_path) -> FakeContainer:
    """Fake widgets for every widget of a .ui file, with the property values it sets; returns the top widget
    (``widgets`` holds them all by object name)."""
    root = ET.parse(ui_path).getroot()
    widgets = {}
    for element in root.iter("widget"):
        qt_class = element.get("class")
        if qt_class not in WIDGET_CLASSES:
            raise AssertionError(f"{Path(ui_path).name}: no fake for widget class {qt_class}; add one to "
                                 "Testing/mrml/slicer_fakes.py")
        widget = WIDGET_CLASSES[qt_class](element.get("name"), qt_class)
        order = {"minimum": 0, "maximum": 1}  # the range before the value, which Qt clamps to it
        for prop in sorted(element.findall("property"), key=lambda p: order.get(p.get("name"), 2)):
            name, value = prop.get("name"), _property_value(prop)
            if name in _UI_PROPERTIES and value is not None:
                if name == "value" and isinstance(widget, FakeProgressBar):
                    widget.value = value
                else:
                    setattr(widget, name, value)
        if isinstance(widget, FakeComboBox):
            for item in element.findall("item"):
                widget.addItem(item.findtext("property/string"))
        widgets[element.get("name")] = widget
    top = widgets[root.find("widget").get("name")]
    object.__setattr__(top, "widgets", widgets)
    # as in Designer files: the top qMRMLWidget passes the scene on only along its <connections>
    receivers = [widgets[c.findtext("receiver")] for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("receiver") in widgets]
    object.__setattr__(top, "setMRMLScene", lambda scene: [r.setMRMLScene(scene) for r in receivers])
    return top


# ------------------------------------------------------------------------------------------------ qt module

class FakeSettings:
    """QSettings over one dict shared by all instances (as QSettings shares the application's file)."""

    store: Dict[str, str] = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):  # noqa: N802
        self.store[key] = str(value)

    def remove(self, key):
        self.store.pop(key, None)

    def contains(self, key):
        return key in self.store


class FakeTimer(FakeObject):
    QT_CLASS = "QTimer"
    PROPERTIES = ("singleShot_", "interval", "active", "starts")
    instances: List["FakeTimer"] = []
    deferred: List[Callable] = []

    def __init__(self, parent=None):
        super().__init__("timer")
        self.singleShot_, self.interval, self.active, self.starts = False, 0, False, 0
        FakeTimer.instances.append(self)

    def setSingleShot(self, value):  # noqa: N802
        self.singleShot_ = bool(value)

    def setInterval(self, value):  # noqa: N802
        self.interval = int(value)

    def start(self, msec=None):
        """(Re)start: a running single-shot timer starts over, which is what makes it a debounce."""
        if msec is not None:
            self.interval = int(msec)
        self.starts += 1
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):  # noqa: N802
        return self.active

    def fire(self):
        if self.singleShot_:
            self.active = False
        self.emit("timeout()")

    @staticmethod
    def singleShot(msec, function):  # noqa: N802
        FakeTimer.deferred.append(function)


class FakeButtonGroup(FakeObject):
    QT_CLASS = "QButtonGroup"
    PROPERTIES = ("_buttons", "exclusive")

    def __init__(self, parent=None):
        super().__init__("buttonGroup")
        self._buttons, self.exclusive = [], True

    def buttons(self):
        return [b for b, _ in self._buttons]

    def addButton(self, button, id_=-1):  # noqa: N802
        self._buttons.append((button, id_))

    def removeButton(self, button):  # noqa: N802
        self._buttons = [(b, i) for b, i in self._buttons if b is not button]

    def id(self, button):
        return next((i for b, i in self._buttons if b is button), -1)

    def click(self, button_id):
        """A user's click on the button with ``button_id``: the signals Qt 5.15 and Qt 6 both emit."""
        button = next(b for b, i in self._buttons if i == button_id)
        button.checked = True
        self.emit("buttonClicked(QAbstractButton*)", button)
        self.emit("idClicked(int)", button_id)


def _make_qt_module(app: "FakeApp"):
    qt = types.ModuleType("qt")

    class FakeUrl(str):
        @staticmethod
        def fromLocalFile(path):  # noqa: N802
            return path

    class FakeTableWidgetItem:
        def __init__(self, text):
            self._text = text

        def text(self):
            return self._text

    class FakePushButton(FakeButton):
        def __init__(self, text="", parent=None):
            super().__init__("button", "QPushButton")
            self.text = text

        def deleteLater(self):  # noqa: N802
            pass

    qt.QSettings = FakeSettings
    qt.QTimer = FakeTimer
    qt.QUrl = FakeUrl
    qt.QTableWidgetItem = FakeTableWidgetItem
    qt.QPushButton = FakePushButton
    qt.QButtonGroup = FakeButtonGroup
    qt.QFileDialog = types.SimpleNamespace(getExistingDirectory=lambda *a: "")
    qt.QDesktopServices = types.SimpleNamespace(openUrl=lambda url: app.opened.append(url))
    return qt


# ------------------------------------------------------------------------------------------------ application

class FakeApp:
    """What a widget test sees of the fake application (charts shown, messages, opened URLs...)."""

    def __init__(self):
        self.startup: List[Callable] = []
        self.charts: list = []
        self.messages: List[str] = []
        self.opened: List[str] = []
        self.infos: List[str] = []
        self.errors: List[str] = []
        self.modules_selected: List[str] = []
        self.segment_editor = types.SimpleNamespace(segmentation=None, source=None)
        self.deferred = FakeTimer.deferred

    @staticmethod
    def run_timers() -> int:
        """Fire every active timer once (an event-loop pass after the timers' intervals). Returns how many fired."""
        due = [t for t in FakeTimer.instances if t.active]
        for timer in due:
            timer.fire()
        return len(due)

    @staticmethod
    def run_deferred() -> None:
        while FakeTimer.deferred:
            FakeTimer.deferred.pop(0)()


def _scripted_loadable_module(messages):
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

    slm.ScriptedLoadableModule = ScriptedLoadableModule
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return slm


def install(monkeypatch, tmp_path, fail_on_install_prompt: Callable) -> FakeApp:
    """Put the fakes in place (``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.app``, ``slicer.modules`` and
    the GUI functions of ``slicer.util``); ``monkeypatch`` undoes it after the test."""
    app = FakeApp()
    FakeTimer.instances.clear()
    FakeTimer.deferred.clear()
    FakeSettings.store = {"NeuroContrast/ModelsFolder": str(tmp_path / "models")}
    monkeypatch.setitem(sys.modules, "qt", _make_qt_module(app))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", _scripted_loadable_module(app.messages))

    class FakeApplication(FakeObject):
        QT_CLASS = "qSlicerApplication"
        PROPERTIES = ("layoutManager",)  # tests give the slice views they need

        def connect(self, signal, slot):
            check_signal(self.qtClass, signal)
            app.startup.append(slot)

        @staticmethod
        def processEvents():  # noqa: N802
            pass

    monkeypatch.setattr(slicer, "app", FakeApplication("app"), raising=False)

    def segment_editor_widget():
        editor = types.SimpleNamespace(
            setSegmentationNode=lambda node: setattr(app.segment_editor, "segmentation", node),
            setSourceVolumeNode=lambda node: setattr(app.segment_editor, "source", node))
        return types.SimpleNamespace(self=lambda: types.SimpleNamespace(editor=editor))

    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
        plots=types.SimpleNamespace(logic=lambda: types.SimpleNamespace(ShowChartInLayout=app.charts.append)),
        segmenteditor=types.SimpleNamespace(widgetRepresentation=segment_editor_widget)), raising=False)

    @contextlib.contextmanager
    def try_with_error_display(message=None, waitCursor=False):  # noqa: N803 - re-raise: the test must see errors
        yield

    util = slicer.util
    monkeypatch.setattr(util, "loadUI", fake_ui)
    monkeypatch.setattr(util, "childWidgetVariables", lambda top: types.SimpleNamespace(**top.widgets))
    monkeypatch.setattr(util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(util, "confirmOkCancelDisplay", fail_on_install_prompt)
    monkeypatch.setattr(util, "createProgressDialog", lambda **kw: types.SimpleNamespace(
        setValue=lambda v: None, setLabelText=lambda t: None, close=lambda: None, wasCanceled=False))
    monkeypatch.setattr(util, "setSliceViewerLayers", lambda **kw: None)
    monkeypatch.setattr(util, "showStatusMessage", lambda *a: None)
    monkeypatch.setattr(util, "infoDisplay", lambda text, *a, **k: app.infos.append(text))
    monkeypatch.setattr(util, "errorDisplay", lambda text, *a, **k: app.errors.append(text))
    monkeypatch.setattr(util, "warningDisplay", lambda text, *a, **k: app.infos.append(text))
    monkeypatch.setattr(util, "selectModule", lambda name: app.modules_selected.append(name), raising=False)
    monkeypatch.setenv("NEUROCONTRAST_MODELS_DIR", "")
    return app


def load_module_file(module: str):
    """Import ``<module>/<module>.py`` (the Slicer module file) under a private name."""
    path = REPO / module / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"_{module}_under_test", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def make_widget(loaded, module: str, **injected):
    """``<module>Widget(None, **injected)`` with its resources, after ``setup()``."""
    widget = getattr(loaded, f"{module}Widget")(None, **injected)
    widget.moduleDir = REPO / module
    widget.setup()
    return widget
