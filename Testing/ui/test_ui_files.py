"""Static checks of every Qt Designer file ``<Module>/Resources/UI/*.ui`` in the repository against its widget code.

For each .ui (found by glob, so new modules are checked automatically):
- it parses, and object names (widgets, layouts, spacers, actions) are unique;
- every ``self.ui.<name>`` used in the module's Python files (``<Module>.py`` and any ``<Module>Lib/*.py`` that
  uses ``self.ui``) names an object of the .ui;
- every custom widget class used (non-``Q`` classes such as ``qMRMLNodeComboBox``, ``ctkCollapsibleButton``) is
  declared in ``<customwidgets>``;
- every MRML class named in a ``nodeTypes`` property is a real ``slicer.vtkMRML*`` class (checked against the
  ``slicer-core`` wheel).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_FILES = sorted(p for p in REPO.glob("*/Resources/UI/*.ui"))
#: MRML classes of Slicer's loadable modules that the slicer-core wheel lacks (MultiVolumeExplorer)
LOADABLE_MODULE_CLASSES = {"vtkMRMLMultiVolumeNode"}
UI_ATTRIBUTE = re.compile(r"\bself\.ui\.([A-Za-z_]\w*)")


def object_names(root: ET.Element) -> List[str]:
    return [el.get("name") for el in root.iter() if el.tag in ("widget", "layout", "spacer", "action") and el.get("name")]


def node_types(root: ET.Element) -> Dict[str, List[str]]:
    out = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "nodeTypes":
                out[widget.get("name")] = [s.text for s in prop.iter("string") if s.text]
    return out


def widget_code(ui_path: Path) -> Dict[Path, Set[str]]:
    """``self.ui.<name>`` names per Python file of the module that owns the .ui."""
    module_dir = ui_path.parents[2]
    files = [module_dir / f"{module_dir.name}.py"] + sorted((module_dir / f"{module_dir.name}Lib").glob("*.py"))
    return {f: set(UI_ATTRIBUTE.findall(f.read_text(encoding="utf-8"))) for f in files if f.is_file()}


def problems(ui_path: Path) -> List[str]:
    """What is wrong with a .ui file and its widget code (empty when consistent)."""
    found = []
    root = ET.parse(ui_path).getroot()
    names = object_names(root)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        found.append(f"{ui_path.name}: duplicate object names {duplicates}")
    for code_file, used in widget_code(ui_path).items():
        for name in sorted(used - set(names)):
            found.append(f"{code_file.name}: self.ui.{name} is not in {ui_path.name}")
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used_classes = {w.get("class") for w in root.iter("widget")}
    for cls in sorted(c for c in used_classes if c and not c.startswith("Q") and c not in declared):
        found.append(f"{ui_path.name}: custom widget class {cls} is not declared in <customwidgets>")
    return found


def test_every_module_with_a_widget_has_a_ui_file():
    assert {p.parents[2].name for p in UI_FILES} >= {"NeuroContrast", "PerfusionNet"}


@pytest.mark.parametrize("ui_path", UI_FILES, ids=[p.name for p in UI_FILES])
def test_ui_matches_widget_code(ui_path):
    assert problems(ui_path) == []
    assert widget_code(ui_path), f"no module Python file found for {ui_path}"


@pytest.mark.parametrize("ui_path", UI_FILES, ids=[p.name for p in UI_FILES])
def test_node_types_are_real_mrml_classes(ui_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed to know the MRML classes")
    for widget, types in node_types(ET.parse(ui_path).getroot()).items():
        assert types, f"{widget}: empty nodeTypes"
        for cls in types:
            assert cls.startswith("vtkMRML") and (hasattr(slicer, cls) or cls in LOADABLE_MODULE_CLASSES), \
                f"{ui_path.name}:{widget}: {cls} is no MRML class"


def test_checker_finds_errors(tmp_path):
    module = tmp_path / "Fake"
    (module / "Resources" / "UI").mkdir(parents=True)
    ui = module / "Resources" / "UI" / "Fake.ui"
    ui.write_text("""<ui version="4.0"><widget class="qMRMLWidget" name="Fake"><layout class="QVBoxLayout" name="l">
<item><widget class="QPushButton" name="applyButton"/></item><item><widget class="QLabel" name="applyButton"/></item>
<item><widget class="qMRMLNodeComboBox" name="inputSelector"><property name="nodeTypes"><stringlist>
<string>vtkMRMLNoSuchNode</string></stringlist></property></widget></item></layout></widget>
<customwidgets><customwidget><class>qMRMLWidget</class><extends>QWidget</extends></customwidget></customwidgets></ui>""")
    (module / "Fake.py").write_text("self.ui.applyButton.clicked\nself.ui.missingButton.enabled = True\n", encoding="utf-8")
    found = problems(ui)
    assert "Fake.ui: duplicate object names ['applyButton']" in found
    assert "Fake.py: self.ui.missingButton is not in Fake.ui" in found
    assert "Fake.ui: custom widget class qMRMLNodeComboBox is not declared in <customwidgets>" in found
    assert node_types(ET.parse(ui).getroot()) == {"inputSelector": ["vtkMRMLNoSuchNode"]}
