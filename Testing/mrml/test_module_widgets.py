"""Smoke test of the Slicer-only module files (NeuroContrast.py, PerfusionNet.py, VirtualGadolinium.py; the
ReaderStudy self-test) without the Slicer application.

``qt``, ``slicer.ScriptedLoadableModule`` and the application parts of ``slicer.util`` are replaced by small
fakes; the .ui file is turned into fake widgets with the object names and kinds it declares (so a widget the
code uses but the .ui lacks fails here too). The MRML scene, the logic and the core are real (slicer-core).
This runs the widgets' setup, the parameter round trip, the live curves, Suggest AIF and Apply, the
VirtualGadolinium Apply → poll → show cycle, and the modules' own self-tests (ScriptedLoadableModuleTest).
"""

from __future__ import annotations

import os
import sys
import types
import unittest

import numpy as np
import pytest
import slicer

from slicer_fakes import FakeSettings, load_module_file, make_widget


# ----------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def phantom():
    from NeuroContrastLib.sampledata import phantom_options_for_tests
    from neurocontrast.perfusion.phantom import generate_phantom

    return generate_phantom(**phantom_options_for_tests())


def test_hub_widget(fake_slicer_app, monkeypatch, mrml_scene):
    loaded = load_module_file("NeuroContrast")
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
    assert FakeSettings.store["NeuroContrast/Threads"] == "2"
    assert ui.deviceStatusLabel.text.endswith("2 thread(s)")
    ui.refreshModelsButton.click()
    assert ui.modelsTableView.table.GetName() == "NeuroContrast models"
    ui.openModelsFolderButton.click()
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
        ui.loadPhantomButton.click()
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
    widget = make_widget(load_module_file("NeuroContrast"), "NeuroContrast")
    view, opened = widget.ui.modelsTableView, fake_slicer_app.opened
    assert [row.name for row in widget.modelRows] == ["alpha", "beta", "gamma"]
    view.viewOrder = [0, 3, 2, 1]  # sorted by name, descending; the model's row 0 holds the column names
    for selected, expected in ((1, "gamma"), (3, "alpha"), (2, "beta")):
        view.selectedRows = [selected]
        widget.ui.openModelCardButton.click()
        assert opened[-1].endswith(f"/docs/models/{expected}-card.md")
    view.viewOrder = None
    view.selectedRows = [1]
    widget.ui.openModelCardButton.click()
    assert opened[-1].endswith("/docs/models/alpha-card.md")
    count = len(opened)
    for selection in ([], [0]):
        view.selectedRows = selection
        widget.ui.openModelCardButton.click()
    assert len(opened) == count and fake_slicer_app.infos == ["Select a model in the table first."] * 2


def test_perfusionnet_widget_curves_suggest_apply(fake_slicer_app, mrml_scene, phantom):
    from NeuroContrastLib.sampledata import load_dsc_phantom

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    segments = nodes["segments"]
    loaded = load_module_file("PerfusionNet")
    widget = make_widget(loaded, "PerfusionNet")
    ui = widget.ui
    assert ui.methodComboBox.currentData == "osvd"
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    ui.aifSelector.setCurrentNode(nodes["segmentation"])
    ui.aifSegmentSelector.setCurrentSegmentID(segments["AIF"])
    ui.vofSelector.setCurrentNode(nodes["segmentation"])
    ui.vofSegmentSelector.setCurrentSegmentID(segments["VOF"])
    ui.brainSelector.setCurrentNode(nodes["segmentation"])
    ui.brainSegmentSelector.setCurrentSegmentID(segments["Brain"])
    assert ui.aifSegmentSelector.segmentIDs == [segments[n] for n in ("AIF", "VOF", "Brain")]
    params = widget.parametersFromUi()
    assert (params.aif_segment, params.vof_segment, params.brain_segment) == (segments["AIF"], segments["VOF"],
                                                                              segments["Brain"])
    fake_slicer_app.run_timers()
    assert ui.curvesStatusLabel.text.startswith(f"AIF: {int(phantom.aif_mask.sum())} voxel(s)")
    assert fake_slicer_app.charts
    # ticking Automatic AIF shows the automatic AIF's curve (the drawn one stays selected, unused)
    ui.autoAifCheckBox.click()
    fake_slicer_app.run_timers()
    assert ui.curvesStatusLabel.text.startswith("AIF (automatic): ")
    ui.suggestAifButton.click()  # the automatic AIF as points: they are the AIF now, the mode is off
    assert ui.aifSelector.currentNode().GetName() == "AIF candidates" and not ui.autoAifCheckBox.checked
    assert not ui.aifSegmentSelector.visible and widget.parametersFromUi().aif_segment == ""
    ui.aifSelector.setCurrentNode(nodes["segmentation"])
    ui.aifSegmentSelector.setCurrentSegmentID(segments["AIF"])
    ui.applyButton.click()
    assert ui.statusLabel.text.startswith("Done: cbf")
    assert ui.volumesTableView.table is not None
    assert widget.parameterNode.GetSingletonTag() == "PerfusionNet"  # not the base class's "ScriptedLoadableModule"
    assert widget.parameterNode.GetAttribute("ModuleName") == "PerfusionNet"
    stored = loaded.PerfusionNetParameters.read(widget.parameterNode)
    assert stored.dsc_node_id == nodes["sequence"].GetID() and stored.vof_segment == segments["VOF"]
    # a new widget (the scene saved and reopened) shows the parameters of the parameter node
    again = make_widget(loaded, "PerfusionNet")
    assert again.parametersFromUi() == stored
    widget.cleanup()
    again.cleanup()


@pytest.mark.parametrize("module", ["NeuroContrast", "PerfusionNet", "ReaderStudy"])
def test_module_self_tests_pass(fake_slicer_app, monkeypatch, mrml_scene, module):
    loaded = load_module_file(module)
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
        setLayout=layouts.append, sliceWidget=slice_widget, sliceViewNames=lambda: list(slice_nodes)),
        raising=False)
    probe = []
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "findChild", lambda parent, name: types.SimpleNamespace(setVisible=probe.append))

    loaded = load_module_file("ReaderStudy")
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
        ui.loginButton.click()
        assert probe == [False] and ui.worklistTable.rowCount == len(widget.logic.worklist()) > 0
        ui.openNextButton.click()
        assert layouts == [slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView]
        assert view_handlers() == 2
        widget.gradeGroup.click(3)
        ui.submitButton.click()  # opens the next read: the same slice views again
        assert len(layouts) == 2 and ui.caseLabel.text.startswith("Case K")
        assert view_handlers() == 2
        assert sorted(obj.GetID() for obj, _, method, *_ in widget.Observations
                      if method == widget.onViewActivity) == sorted(n.GetID() for n in slice_nodes.values())
        # an unfinished "Add lesion" is replaced by the next one; the drawn line becomes the lesion's two lines
        displays = count("vtkMRMLMarkupsDisplayNode")
        ui.addLesionButton.click()
        ui.addLesionButton.click()
        assert count("vtkMRMLMarkupsLineNode") == 1 and count("vtkMRMLMarkupsDisplayNode") == displays + 1
        widget.pendingLine.AddControlPointWorld(-6.0, 10.0, 0.0)
        widget.pendingLine.AddControlPointWorld(6.0, 10.0, 0.0)
        for deferred in fake_slicer_app.deferred:
            deferred()
        assert mrml_scene.GetFirstNodeByName("New long axis") is None and widget.pendingLine is None
        assert ui.lesionTable.rowCount == 1 and ui.lesionTable.item(0, 1).text() == "12.0"
        assert count("vtkMRMLMarkupsLineNode") == 2 and count("vtkMRMLMarkupsDisplayNode") == displays + 2
        ui.lesionTable.current = 0
        ui.deleteLesionButton.click()
        assert ui.lesionTable.rowCount == 0
        assert count("vtkMRMLMarkupsLineNode") == 0 and count("vtkMRMLMarkupsDisplayNode") == displays
        assert FakeSettings.store["DataProbe/sliceViewAnnotations.enabled"] == "0"  # blinded while reading
        ui.logoutButton.click()
    assert "DataProbe/sliceViewAnnotations.enabled" not in FakeSettings.store  # the reader's own (none) is back
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

    loaded = load_module_file("VirtualGadolinium")
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
    ui.applyButton.click()
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
    widget.cleanup()


def test_virtualgadolinium_state_is_saved_with_the_scene_and_the_logic_is_injected(fake_slicer_app, mrml_scene,
                                                                                     tmp_path):
    """The widget keeps its parameters in the parameter node (volumes as node references), a new widget (a
    reopened scene) shows them again, a scene close cancels the run; the logic and its runner are injected."""
    import SimpleITK as sitk
    from VirtualGadoliniumLib.logic import VirtualGadoliniumLogic, image_to_volume

    image = sitk.GetImageFromArray(np.random.default_rng(1).random((6, 8, 10)).astype(np.float32))
    t1, flair, t1c = (image_to_volume(image, name, scene=mrml_scene) for name in ("T1", "FLAIR", "T1c"))
    started = []

    class FakeRunner:
        cancelled = False

        def poll(self):
            return {"running": not self.cancelled, "returncode": None if not self.cancelled else -15,
                    "fraction": 0.5, "message": "half", "error": "cancelled" if self.cancelled else "", "output": ""}

        def wait(self, timeout=None):
            return self.poll()

        def cancel(self):
            self.cancelled = True

    def factory(command, env):
        started.append(command)
        return FakeRunner()

    loaded = load_module_file("VirtualGadolinium")
    logic = VirtualGadoliniumLogic(mrml_scene, runner_factory=factory)
    widget = make_widget(loaded, "VirtualGadolinium", logic=logic)
    assert widget.logic is logic
    ui = widget.ui
    ui.modeComboBox.setCurrentText("amplify")
    ui.t1Selector.setCurrentNode(t1)
    ui.flairSelector.setCurrentNode(flair)
    ui.contrastSelector.setCurrentNode(t1c)
    ui.repeatSpinBox.value = 3
    ui.preprocessedCheckBox.checked = True
    node = widget.parameterNode
    assert node.GetNodeReferenceID("contrast") == t1c.GetID() and node.GetParameter("repeat") == "3"
    again = make_widget(loaded, "VirtualGadolinium", logic=logic)  # the scene reopened: the same node
    assert again.parameters() == widget.parameters()
    node.SetParameter("repeat", "2")  # a script (or an undo) edits the node: the widget follows
    assert again.ui.repeatSpinBox.value == 2
    ui.applyButton.click()
    assert started and started[0][3:5] == ["contrast", "amplify"] and widget.timer.isActive()
    widget.onPoll()
    assert ui.statusLabel.text == "half" and ui.progressBar.value == 50
    mrml_scene.InvokeEvent(mrml_scene.StartCloseEvent)
    assert logic.runner.cancelled and widget.parameterNode is None
    mrml_scene.InvokeEvent(mrml_scene.EndCloseEvent)
    assert widget.parameterNode is not None
    widget.cleanup()
    again.cleanup()


# ----------------------------------------------------------------------------------------- PerfusionNet editing

def _paint(segmentation, segment_id, mask, reference, scene):
    """Write ``mask`` into an existing segment as an editor effect does (fires the segmentation's real events)."""
    import vtk
    from NeuroContrastLib import mrml

    label = mrml.volume_node_from_array(mask.astype(np.uint8), mrml.geometry_from_volume_node(reference), "stroke",
                                        scene, class_name="vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label, segmentation, ids)
    mrml.remove_node(label, scene)


def test_perfusionnet_dsc_picker_takes_a_multivolume(fake_slicer_app):
    """The DICOM module gives many DSC series as a vtkMRMLMultiVolumeNode (a scalar-volume subclass): the picker
    must list it, as the tooltip, the docs and mrml.series_from_sequence_node promise."""
    widget = make_widget(load_module_file("PerfusionNet"), "PerfusionNet")
    picker = widget.ui.dscSelector
    assert picker.accepts("vtkMRMLMultiVolumeNode") and picker.accepts("vtkMRMLSequenceNode")
    assert not picker.accepts("vtkMRMLScalarVolumeNode")  # a 3D volume is no DSC series
    widget.cleanup()


def test_perfusionnet_curves_follow_real_edit_events_debounced(fake_slicer_app, mrml_scene, phantom):
    """Moving a point, adding a segment or painting fires PointModified / SegmentAdded / SegmentModified (not
    Modified): the curves update once after a burst of edits, and the segment lists follow new segments."""
    from NeuroContrastLib import mrml
    from NeuroContrastLib.sampledata import load_dsc_phantom

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    reference = mrml.first_frame_node(nodes["sequence"])
    widget = make_widget(load_module_file("PerfusionNet"), "PerfusionNet")
    ui, app = widget.ui, fake_slicer_app
    updates = []
    real_update = widget.logic.update_curves
    widget.logic.update_curves = lambda params: updates.append(params) or real_update(params)
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF points")
    aif_voxels = np.argwhere(phantom.aif_mask)
    first = mrml.zyx_to_ras(reference, aif_voxels[:1])[0]
    points.AddControlPoint(*first)
    ui.aifSelector.setCurrentNode(points)
    app.run_timers()
    assert len(updates) == 1 and ui.curvesStatusLabel.text.startswith("AIF: 1 voxel(s)")
    for position in mrml.zyx_to_ras(reference, aif_voxels[1:6]):  # the user drags the point over 5 voxels
        points.SetNthControlPointPosition(0, *position)
    assert widget.curvesTimer.isActive() and len(updates) == 1
    app.run_timers()
    assert len(updates) == 2  # one update for the whole drag
    points.AddControlPoint(*mrml.zyx_to_ras(reference, aif_voxels[:1])[0])
    app.run_timers()
    assert len(updates) == 3 and ui.curvesStatusLabel.text.startswith("AIF: 2 voxel(s)")
    # a segmentation whose VOF segment is created after it was selected
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    ui.vofSelector.setCurrentNode(segmentation)
    assert ui.vofSegmentSelector.segmentIDs == []
    vof_id = segmentation.GetSegmentation().AddEmptySegment("VOF", "VOF")
    assert ui.vofSegmentSelector.segmentIDs == [vof_id] and widget.parametersFromUi().vof_segment == vof_id
    app.run_timers()
    _paint(segmentation, vof_id, phantom.vof_mask, reference, mrml_scene)
    assert widget.curvesTimer.isActive()
    app.run_timers()
    assert ui.curvesStatusLabel.text.endswith(f"VOF: {int(phantom.vof_mask.sum())} voxel(s)")
    ui.vofSelector.setCurrentNode(None)  # no longer observed
    app.run_timers()
    _paint(segmentation, vof_id, phantom.aif_mask, reference, mrml_scene)
    assert not widget.curvesTimer.isActive()
    widget.cleanup()


def test_perfusionnet_paint_aif_in_the_segment_editor(fake_slicer_app, mrml_scene, phantom):
    """"Paint AIF / VOF": a new AIF/VOF segmentation on the DSC grid and the bolus-peak frame go to the Segment
    Editor; the strokes painted there update the curves and the AIF quality figures; MinIP is offered too."""
    from NeuroContrastLib import mrml
    from NeuroContrastLib.sampledata import load_dsc_phantom
    from PerfusionNetLib.delineation import bolus_images

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    reference = mrml.first_frame_node(nodes["sequence"])
    widget = make_widget(load_module_file("PerfusionNet"), "PerfusionNet")
    ui, app = widget.ui, fake_slicer_app
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    ui.editSegmentsButton.click()
    assert app.modules_selected == ["SegmentEditor"]
    segmentation, source = app.segment_editor.segmentation, app.segment_editor.source
    assert segmentation.GetName() == "DSCPhantom AIF/VOF" and ui.aifSelector.currentNode() is segmentation
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["AIF", "VOF"]
    peak, peak_frame, minip = bolus_images(phantom.signal)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(source), peak_frame)
    assert 0 < peak < phantom.signal.shape[0] - 1 and np.all(minip <= peak_frame)
    params = widget.parametersFromUi()
    assert params.aif_segment != params.vof_segment
    _paint(segmentation, params.aif_segment, phantom.aif_mask, reference, mrml_scene)
    _paint(segmentation, params.vof_segment, phantom.vof_mask, reference, mrml_scene)
    app.run_timers()
    text = ui.curvesStatusLabel.text
    assert text.startswith(f"AIF: {int(phantom.aif_mask.sum())} voxel(s), peak") and "FWHM" in text, text
    ui.delineationSourceComboBox.setCurrentIndex(ui.delineationSourceComboBox.findData("minip"))
    ui.editSegmentsButton.click()  # the same segmentation again, now on the MinIP
    assert app.segment_editor.segmentation is segmentation
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(app.segment_editor.source), minip)
    widget.cleanup()


def test_perfusionnet_network_runs_in_the_background_and_can_be_cancelled(fake_slicer_app, mrml_scene, phantom):
    """ST-Net does not run inside Slicer's process: Apply starts the `neurocontrast perfusion` command through
    the injected runner, the poll shows its progress, Cancel terminates it; the scene close cancels too."""
    from NeuroContrastLib.sampledata import load_dsc_phantom
    from PerfusionNetLib.network_job import NetworkJob

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    commands, runners = [], []

    class FakeRunner:
        def __init__(self):
            self.cancelled = False

        def poll(self):
            return {"running": not self.cancelled, "returncode": -15 if self.cancelled else None, "fraction": 0.25,
                    "message": "ST-Net slab 1/4", "error": "cancelled" if self.cancelled else "", "output": ""}

        def wait(self, timeout=None):
            return self.poll()

        def cancel(self):
            self.cancelled = True

    def factory(command, env):
        commands.append(command)
        runners.append(FakeRunner())
        return runners[-1]

    loaded = load_module_file("PerfusionNet")
    logic = loaded.PerfusionNetLogic(mrml_scene)
    widget = make_widget(loaded, "PerfusionNet", logic=logic, networkJob=NetworkJob(logic, runner_factory=factory))
    ui = widget.ui
    if ui.methodComboBox.findData("stnet") < 0:
        pytest.skip("ST-Net is not registered in this build")  # pragma: no cover
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    for selector, picker, name in ((ui.aifSelector, ui.aifSegmentSelector, "AIF"),
                                   (ui.vofSelector, ui.vofSegmentSelector, "VOF"),
                                   (ui.brainSelector, ui.brainSegmentSelector, "Brain")):
        selector.setCurrentNode(nodes["segmentation"])
        picker.setCurrentSegmentID(nodes["segments"][name])
    ui.methodComboBox.currentIndex = ui.methodComboBox.findData("stnet")
    ui.applyButton.click()
    command = commands[0]
    assert command[3:5] == ["perfusion", command[4]] and command[command.index("--method") + 1] == "stnet"
    assert "--progress-lines" in command and "--aif-mask" in command and "--brain-mask" in command
    assert widget.pollTimer.isActive() and ui.applyButton.text == "Cancel"
    fake_slicer_app.run_timers()
    assert ui.statusLabel.text == "25 % ST-Net slab 1/4"
    ui.applyButton.click()  # Cancel
    assert runners[0].cancelled
    with pytest.raises(Exception, match="cancelled"):
        fake_slicer_app.run_timers()  # the poll sees the end; the error dialog (re-raised here) says cancelled
    assert ui.applyButton.text == "Apply" and widget.networkJob.work_dir is None  # exported images removed
    widget.cleanup()


def test_readerstudy_short_axis_in_the_view_the_long_axis_was_drawn_in(fake_slicer_app, monkeypatch, mrml_scene,
                                                                       tmp_path):
    """A long axis drawn in the sagittal Yellow view gets its short axis in the sagittal plane (it used to take
    the Red view's axial plane always); the study folder and reader come back from the parameter node."""
    from neurocontrast.readerstudy.synthetic import make_synthetic_study

    make_synthetic_study(tmp_path / "study", n_cases=2, seed=3)
    for cls in ("vtkMRMLSelectionNode", "vtkMRMLInteractionNode"):
        node = getattr(slicer, cls)()
        node.SetSingletonTag("Singleton")
        mrml_scene.AddNode(node)
    slice_nodes = {name: mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode") for name in ("Red", "Yellow")}
    slice_nodes["Yellow"].SetSliceToRASByNTP(1, 0, 0, 0, 1, 0, 4.0, 0, 0, 0)  # sagittal through R = 4 mm
    composites = {name: mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for name in slice_nodes}

    def slice_widget(name):
        logic = types.SimpleNamespace(GetSliceCompositeNode=lambda: composites[name], FitSliceToAll=lambda: None)
        return types.SimpleNamespace(sliceLogic=lambda: logic, mrmlSliceNode=lambda: slice_nodes[name])

    monkeypatch.setattr(slicer.app, "layoutManager", lambda: types.SimpleNamespace(
        setLayout=lambda layout: None, sliceWidget=slice_widget, sliceViewNames=lambda: list(slice_nodes)),
        raising=False)
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "findChild", lambda parent, name: types.SimpleNamespace(setVisible=lambda v: 0))
    loaded = load_module_file("ReaderStudy")
    widget = make_widget(loaded, "ReaderStudy")
    ui = widget.ui
    ui.studyFolderLineEdit.text, ui.readerLineEdit.text = str(tmp_path / "study"), "R2"
    ui.loginButton.click()
    ui.openNextButton.click()
    ui.addLesionButton.click()
    widget.pendingLine.AddControlPointWorld(4.0, -6.0, 10.0)  # in the Yellow (sagittal) plane only
    widget.pendingLine.AddControlPointWorld(4.0, 6.0, 10.0)
    fake_slicer_app.run_deferred()
    long_node, short_node = next(iter(widget.logic.lesion_nodes.values()))
    short = np.array([short_node.GetNthControlPointPositionWorld(i) for i in range(2)])
    assert np.allclose(short[:, 0], 4.0)  # stays in the sagittal plane (axial would move along R)
    assert np.allclose(np.abs(short[1] - short[0]), (0.0, 0.0, 6.0))  # perpendicular, half the long axis
    ui.logoutButton.click()
    widget.cleanup()
    again = make_widget(loaded, "ReaderStudy")  # the scene reopened
    assert (again.ui.studyFolderLineEdit.text, again.ui.readerLineEdit.text) == (str(tmp_path / "study"), "R2")
    again.cleanup()


def test_perfusionnet_follows_its_parameter_node_and_the_scene_close(fake_slicer_app, mrml_scene, phantom):
    """A script (or a loaded scene) that edits the parameter node updates the panel; closing the scene drops
    the observers and the next scene gets a fresh parameter node."""
    from NeuroContrastLib.sampledata import load_dsc_phantom

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    loaded = load_module_file("PerfusionNet")
    widget = make_widget(loaded, "PerfusionNet")
    node = widget.parameterNode
    params = loaded.PerfusionNetParameters(dsc_node_id=nodes["sequence"].GetID(), method="tikhonov",
                                           tikhonov_lambda=0.3, aif_node_id=nodes["segmentation"].GetID(),
                                           aif_segment="VOF")
    params.write(node)
    ui = widget.ui
    assert ui.dscSelector.currentNode() is nodes["sequence"] and ui.methodComboBox.currentData == "tikhonov"
    assert ui.tikhonovLambdaSpinBox.value == pytest.approx(0.3)
    assert ui.aifSegmentSelector.currentSegmentID() == nodes["segments"]["VOF"]  # a name resolves to its ID
    mrml_scene.InvokeEvent(mrml_scene.StartCloseEvent)
    assert widget.parameterNode is None
    assert not [o for o in widget.Observations if o[2] == widget.onCurveInputModified]
    mrml_scene.InvokeEvent(mrml_scene.EndCloseEvent)
    assert widget.parameterNode is not None
    widget.cleanup()


def test_perfusionnet_automatic_vof_rescaling_adc_core_and_reference_region(fake_slicer_app, mrml_scene, phantom):
    """The panel's VOF mode, Suggest VOF, "Rescale AIF to the VOF", ADC (+ DWI) core and reference region reach
    the core's PerfusionOptions and run_perfusion, and survive the parameter node."""
    from NeuroContrastLib import mrml
    from NeuroContrastLib.sampledata import load_dsc_phantom
    from neurocontrast.io import DSCSeries
    from neurocontrast.perfusion.lesion import DiffusionImages
    from neurocontrast.perfusion.pipeline import run_perfusion

    nodes = load_dsc_phantom(mrml_scene, phantom=phantom)
    segments, segmentation = nodes["segments"], nodes["segmentation"]
    reference = mrml.first_frame_node(nodes["sequence"])
    loaded = load_module_file("PerfusionNet")
    widget = make_widget(loaded, "PerfusionNet")
    ui = widget.ui
    assert ui.vofRescaleCheckBox.checked and not ui.autoVofCheckBox.checked  # defaults as the command line's
    assert not ui.referenceSegmentSelector.visible or ui.referenceSelector.currentNode() is None
    ui.dscSelector.setCurrentNode(nodes["sequence"])
    for selector, segmentSelector, name in ((ui.aifSelector, ui.aifSegmentSelector, "AIF"),
                                            (ui.vofSelector, ui.vofSegmentSelector, "VOF"),
                                            (ui.brainSelector, ui.brainSegmentSelector, "Brain")):
        selector.setCurrentNode(segmentation)
        segmentSelector.setCurrentSegmentID(segments[name])
    # Suggest VOF: editable points become the VOF (the automatic mode is off then)
    ui.autoVofCheckBox.click()
    ui.suggestVofButton.click()
    assert ui.vofSelector.currentNode().GetName() == "VOF candidates" and not ui.autoVofCheckBox.checked
    suggested = mrml.mask_from_markups(ui.vofSelector.currentNode(), reference)
    dsc = DSCSeries(signal=phantom.signal, geometry=phantom.geometry, tr_s=phantom.tr_s, te_s=phantom.te_s, path=None)
    automatic = run_perfusion(dsc, phantom.aif_mask, None, phantom.brain_mask, vof="auto")
    np.testing.assert_array_equal(suggested, automatic.vof_mask)
    # automatic VOF, no rescaling, ADC core with a DWI, a reference region
    ui.autoVofCheckBox.click()
    fake_slicer_app.run_timers()  # the live curves follow the mode: the automatic VOF's
    assert ui.curvesStatusLabel.text.endswith(f"VOF (automatic): {int(automatic.vof_mask.sum())} voxel(s)")
    ui.vofRescaleCheckBox.click()
    adc = np.where(phantom.brain_mask, 0.8, 0.0).astype(np.float32)
    adc[(phantom.truth["territory"] == 3) & phantom.brain_mask] = 0.45
    dwi = np.where(phantom.brain_mask, 100.0, 0.0).astype(np.float32)
    dwi[(phantom.truth["territory"] == 3) & phantom.brain_mask] = 300.0
    adc_node = mrml.volume_node_from_array(adc, phantom.geometry, "ADC", mrml_scene)
    dwi_node = mrml.volume_node_from_array(dwi, phantom.geometry, "DWI", mrml_scene)
    labelmap = mrml.volume_node_from_array(adc > 0, phantom.geometry, "label", mrml_scene,
                                           class_name="vtkMRMLLabelMapVolumeNode")
    ui.adcSelector.setCurrentNode(labelmap)  # a labelmap is no ADC map: the picker does not list it
    assert ui.adcSelector.currentNode() is None
    ui.adcSelector.setCurrentNode(adc_node)
    ui.dwiSelector.setCurrentNode(dwi_node)
    ref_mask = phantom.brain_mask.copy()
    ref_mask[:, :, 20:] = False
    ref_id = mrml.add_segment_from_mask(segmentation, ref_mask, reference, "Reference")
    ui.referenceSelector.setCurrentNode(segmentation)
    assert ui.referenceSegmentSelector.visible
    ui.referenceSegmentSelector.setCurrentSegmentID(ref_id)
    params = widget.parametersFromUi()
    assert (params.vof_mode, params.vof_rescale, params.adc_node_id, params.dwi_node_id, params.reference_segment) \
        == ("auto", False, adc_node.GetID(), dwi_node.GetID(), ref_id)
    runs = []
    real_run = widget.logic.run
    widget.logic.run = lambda p, progress=None: runs.append(real_run(p, progress)) or runs[-1]
    ui.applyButton.click()
    assert ui.statusLabel.text.startswith("Done: cbf") and len(runs) == 1
    direct = run_perfusion(dsc, phantom.aif_mask, None, phantom.brain_mask, vof="auto", vof_rescale=False,
                           diffusion=DiffusionImages(adc, phantom.geometry, dwi), reference_mask=ref_mask)
    result = runs[0].result
    assert result.report["options"]["vof_rescale"] is False and result.report["options"]["vof"] == "auto"
    np.testing.assert_array_equal(result.aif, result.aif_raw)
    np.testing.assert_array_equal(result.core_mask, direct.core_mask)
    assert result.report["relative_maps"]["reference"] == "given mask"
    for name in ("cbf", "tmax", "rcbf", "rcbv"):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(runs[0].map_nodes[name]), direct.maps[name])
    values = dict(zip(mrml.table_column(runs[0].volumes_table, "Measure"),
                      mrml.table_column(runs[0].volumes_table, "Value")))
    assert values["Core"] == pytest.approx(direct.report["core_from_adc"]["core_ml"], abs=0.01) and values["Core"] > 0
    # the parameter node keeps all of it; a new panel (the scene reopened) shows it
    stored = loaded.PerfusionNetParameters.read(widget.parameterNode)
    assert stored == params
    again = make_widget(loaded, "PerfusionNet")
    assert again.parametersFromUi() == stored
    assert not again.ui.vofRescaleCheckBox.checked and again.ui.autoVofCheckBox.checked
    assert again.ui.adcSelector.currentNode() is adc_node
    widget.cleanup()
    again.cleanup()


def test_perfusionnet_field_table_covers_every_parameter(fake_slicer_app):
    """One row per PerfusionNetParameters field, each naming a widget of the .ui of the right kind: a field
    added to the parameters without a widget (or a widget without a field) fails here."""
    import dataclasses

    loaded = load_module_file("PerfusionNet")
    widget = make_widget(loaded, "PerfusionNet")
    rows = loaded.UI_FIELDS
    assert [row[0] for row in rows] == [f.name for f in dataclasses.fields(loaded.PerfusionNetParameters)]
    classes = {"node": {"qMRMLNodeComboBox"}, "segment": {"qMRMLSegmentSelectorWidget"}, "auto": {"QCheckBox"},
               "checked": {"QCheckBox"}, "data": {"QComboBox"}, "value": {"QDoubleSpinBox", "QSpinBox"},
               "text": {"QLineEdit"}}
    for field, name, kind, picker in rows:
        assert getattr(widget.ui, name).qtClass in classes[kind], (field, name)
        assert (picker is not None) == (kind == "segment")
    # every field survives the panel: non-default values in, the same values out
    params = loaded.PerfusionNetParameters(method="tikhonov", tikhonov_lambda=0.25, osvd_oi=0.12, tr_s=1.4,
                                           te_s=0.03, aif_mode="auto", vof_mode="auto", vof_rescale=False,
                                           output_prefix="pt 3")
    widget.uiFromParameters(params)
    assert widget.parametersFromUi() == params
    widget.cleanup()
