"""The widget-test harness behaves like Slicer where it matters: strict attributes, Qt 5.15 ∩ Qt 6 signals,
node pickers that honour ``nodeTypes`` through the real class hierarchy, segment selectors that follow the
segmentation's real events."""

from __future__ import annotations

import pytest

import slicer_fakes
from slicer_fakes import (FakeButton, FakeNodeComboBox, FakeSegmentSelector, SignalError, accepts,
                          check_signal, class_hierarchy)


def test_widgets_reject_unknown_attributes():
    button = FakeButton("applyButton", "QPushButton")
    button.enabled = False
    with pytest.raises(AttributeError, match="no property 'enable'"):
        button.enable = True  # the typo a permissive fake would swallow


@pytest.mark.parametrize("qt_class, signal", [("QButtonGroup", "buttonClicked(int)"),
                                              ("QComboBox", "currentIndexChanged(QString)"),
                                              ("QSpinBox", "valueChanged(QString)")])
def test_qt5_only_signals_are_refused(qt_class, signal):
    with pytest.raises(SignalError, match="only in Qt 5"):
        check_signal(qt_class, signal)


def test_signals_are_checked_on_connect():
    check_signal("QButtonGroup", "idClicked(int)")
    with pytest.raises(SignalError, match="no signal"):
        FakeButton("b", "QPushButton").connect("clicked(int)", lambda: None)


def test_node_types_follow_the_class_hierarchy(mrml_scene):
    assert "vtkMRMLScalarVolumeNode" in class_hierarchy("vtkMRMLMultiVolumeNode")
    assert accepts(["vtkMRMLScalarVolumeNode"], "vtkMRMLLabelMapVolumeNode")
    assert not accepts(["vtkMRMLVectorVolumeNode"], "vtkMRMLMultiVolumeNode")
    combo = FakeNodeComboBox("c")
    combo.nodeTypes = ["vtkMRMLSegmentationNode"]
    combo.setCurrentNode(mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode"))
    assert combo.currentNode() is None  # no scene yet: a combo box without the scene lists nothing
    combo.setMRMLScene(mrml_scene)
    combo.setCurrentNode(mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode"))
    assert combo.currentNode() is None  # Slicer cannot select a node the combo box does not list
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    combo.setCurrentNode(segmentation)
    assert combo.currentNode() is segmentation and segmentation in combo.nodes()


def test_segment_selector_follows_real_segment_events(mrml_scene):
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    selector = FakeSegmentSelector("s")
    selector.setMRMLScene(mrml_scene)
    selector.setCurrentNode(segmentation)
    assert selector.segmentIDs == [] and selector.currentSegmentID() == ""
    added = segmentation.GetSegmentation().AddEmptySegment("AIF", "AIF")
    assert selector.segmentIDs == [added] and selector.currentSegmentID() == added
    segmentation.GetSegmentation().RemoveSegment(added)
    assert selector.segmentIDs == [] and selector.currentSegmentID() == ""


def test_every_ui_widget_class_has_a_fake():
    for ui in sorted(slicer_fakes.REPO.glob("*/Resources/UI/*.ui")):
        assert slicer_fakes.fake_ui(ui).widgets


def test_mrml_widgets_get_the_scene_only_along_the_ui_connections(tmp_path, mrml_scene):
    ui = tmp_path / "T.ui"
    ui.write_text("""<ui version="4.0"><widget class="qMRMLWidget" name="T"><layout class="QVBoxLayout" name="l">
<item><widget class="qMRMLNodeComboBox" name="connected"/></item>
<item><widget class="qMRMLNodeComboBox" name="forgotten"/></item></layout></widget>
<connections><connection><sender>T</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
<receiver>connected</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection></connections></ui>""")
    top = slicer_fakes.fake_ui(ui)
    top.setMRMLScene(mrml_scene)
    assert top.widgets["connected"].scene is mrml_scene and top.widgets["forgotten"].scene is None
