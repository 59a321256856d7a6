"""PerfusionNet logic against a real MRML scene (slicer-core): inputs, curves, AIF suggestion, maps, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from NeuroContrastLib import mrml, sampledata
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import DSCSeries, Geometry
from PerfusionNetLib.logic import (PerfusionNetLogic, PerfusionNetParameters, available_methods, display_range,
                                   segment_names)


@pytest.fixture(scope="module")
def phantom():
    from neurocontrast.perfusion.phantom import generate_phantom

    return generate_phantom(**sampledata.phantom_options_for_tests())


@pytest.fixture
def loaded(mrml_scene, phantom):
    nodes = sampledata.load_dsc_phantom(mrml_scene, phantom=phantom)
    seg = nodes["segmentation"]
    params = PerfusionNetParameters(dsc_node_id=nodes["sequence"].GetID(), aif_node_id=seg.GetID(),
                                    aif_segment="AIF", vof_node_id=seg.GetID(), vof_segment="VOF",
                                    brain_node_id=seg.GetID(), brain_segment="Brain")
    return nodes, params


def _dsc(phantom):
    return DSCSeries(signal=phantom.signal, geometry=phantom.geometry, tr_s=phantom.tr_s, te_s=phantom.te_s, path=None)


# ----------------------------------------------------------------------------------------- parameters

def test_parameters_round_trip_through_the_parameter_node(mrml_scene):
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "PerfusionNet")
    params = PerfusionNetParameters(dsc_node_id="vtkMRMLSequenceNode1", aif_segment="AIF", method="tikhonov",
                                    tikhonov_lambda=0.3, tr_s=1.2, aif_mode="auto", output_prefix="pt 7")
    params.write(node)
    assert PerfusionNetParameters.read(node) == params
    assert params.options().tikhonov.lambda_ == 0.3 and params.options().aif == "auto"
    assert PerfusionNetParameters(method="tikhonov").options().deconvolve_kwargs() == {"lambda_": "gcv"}
    assert PerfusionNetParameters(method="osvd", osvd_oi=0.1).options().svd.osvd_oi == 0.1
    # the panel's one SVD threshold reaches the chosen method's own field (the core reads csvd_threshold)
    csvd = PerfusionNetParameters(method="csvd", svd_threshold=0.3).options()
    assert csvd.svd.csvd_threshold == 0.3 and csvd.deconvolve_kwargs()["csvd_threshold"] == 0.3
    assert PerfusionNetParameters(method="ssvd", svd_threshold=0.3).options().svd.ssvd_threshold == 0.3
    default = PerfusionNetParameters(method="csvd").options().svd                 # 0 = the method's default
    assert (default.csvd_threshold, default.ssvd_threshold) == (0.1, 0.2)


def test_node_fields_are_node_references_that_follow_a_scene_import(mrml_scene):
    """The node fields live in the parameter node as node references (as in VirtualGadolinium and ReaderStudy),
    not as ID strings: a scene imported into one that already uses those IDs gets new IDs, and the parameters
    then name the imported nodes, not the nodes that happened to hold the old IDs."""
    from PerfusionNetLib.logic import NODE_ID_FIELDS

    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF points")
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segments")
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "PerfusionNet")
    params = PerfusionNetParameters(dsc_node_id=segmentation.GetID(), aif_node_id=points.GetID(),
                                    brain_node_id=segmentation.GetID(), brain_segment="Brain")
    params.write(node)
    assert set(NODE_ID_FIELDS) == {"dsc_node_id", "aif_node_id", "vof_node_id", "brain_node_id", "core_node_id",
                                   "adc_node_id", "dwi_node_id", "reference_node_id"}
    assert node.GetNodeReference("aif_node_id") is points and node.GetParameter("aif_node_id") == ""
    assert node.GetNodeReferenceID("vof_node_id") is None  # "" stores no reference
    mrml_scene.SetSaveToXMLString(1)
    mrml_scene.Commit()
    xml = mrml_scene.GetSceneXMLString()
    mrml_scene.SetLoadFromXMLString(1)
    mrml_scene.SetSceneXMLString(xml)
    mrml_scene.Import()  # every imported node's ID is taken: the copies get new IDs
    imported = [n for n in (mrml_scene.GetNthNodeByClass(i, "vtkMRMLScriptedModuleNode") for i in range(
        mrml_scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode"))) if n is not node]
    assert len(imported) == 1
    back = PerfusionNetParameters.read(imported[0])
    copy_points, copy_segmentation = mrml_scene.GetNodeByID(back.aif_node_id), mrml_scene.GetNodeByID(back.dsc_node_id)
    assert copy_points is not points and copy_points.GetName() == "AIF points"
    assert copy_segmentation is not segmentation and copy_segmentation.GetName() == "Segments"
    assert back.brain_node_id == back.dsc_node_id and (back.vof_node_id, back.brain_segment) == ("", "Brain")
    assert PerfusionNetParameters.read(node) == params  # the original node is untouched


def test_parameter_problems(mrml_scene, loaded):
    assert PerfusionNetParameters().problems(mrml_scene)[0] == "select the 4D DSC series"
    nodes, params = loaded
    assert params.problems(mrml_scene) == []
    bad = PerfusionNetParameters(dsc_node_id=params.dsc_node_id, method="magic", svd_threshold=1.5)
    found = bad.problems(mrml_scene)
    assert any("AIF" in p for p in found) and any("magic" in p for p in found)
    assert any("threshold" in p for p in found)
    assert PerfusionNetParameters(dsc_node_id=params.dsc_node_id, aif_mode="auto").problems(mrml_scene) == []
    assert set(available_methods()) >= {"osvd", "csvd", "ssvd", "tikhonov"}


def test_remove_node_takes_display_and_storage_nodes_along(mrml_scene):
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    points.AddDefaultStorageNode()
    extras = [points.GetDisplayNode(), points.GetStorageNode()]
    assert all(node is not None and mrml_scene.IsNodePresent(node) for node in extras)
    volume = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "kept")
    volume.CreateDefaultDisplayNodes()
    mrml.remove_node(points)  # the node's own scene
    assert not mrml_scene.IsNodePresent(points) and not any(mrml_scene.IsNodePresent(node) for node in extras)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsDisplayNode") == 0
    assert mrml_scene.IsNodePresent(volume.GetDisplayNode())  # other nodes' display nodes stay
    mrml.remove_node(points, mrml_scene)  # no longer in the scene, or None: nothing to do
    mrml.remove_node(None)
    # the temporary labelmaps of the segment <-> mask bridge leave no display node behind either
    volume = mrml.volume_node_from_array(np.zeros((4, 5, 6), np.float32), Geometry.from_arrays(
        (4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), "reference", mrml_scene)
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:4, 2:5] = True
    mrml.add_segment_from_mask(segmentation, mask, volume, "box")
    np.testing.assert_array_equal(mrml.mask_from_segment(segmentation, "box", volume), mask)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeDisplayNode") == 0


# ----------------------------------------------------------------------------------------- inputs

def test_oblique_geometry_round_trips_ras_lps(mrml_scene):
    c, s = np.cos(0.3), np.sin(0.3)
    geometry = Geometry.from_arrays((3, 4, 5), (1.5, 2.0, 4.0), (10.0, -20.0, 5.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    signal = np.random.default_rng(0).random((12, 3, 4, 5)).astype(np.float32)
    sequence, _ = mrml.sequence_node_from_array(signal, geometry, 2.0, "oblique", mrml_scene, browser=False)
    back, back_geometry, tr_s, te_s = mrml.series_from_sequence_node(sequence)
    np.testing.assert_array_equal(back, signal)
    assert back_geometry.same_as(geometry) and tr_s == 2.0 and te_s is None
    # a voxel centre maps to the physical point SimpleITK computes (RAS = LPS with x, y negated)
    ras = mrml.zyx_to_ras(mrml.first_frame_node(sequence), [[2, 1, 3]])[0]
    lps = geometry.to_image(signal[0]).TransformIndexToPhysicalPoint((3, 1, 2))
    np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)


def test_tr_from_index_in_ms_and_te_from_attributes(mrml_scene, phantom):
    sequence, _ = mrml.sequence_node_from_array(phantom.signal, phantom.geometry, phantom.tr_s, "ms", mrml_scene)
    for i in reversed(range(sequence.GetNumberOfDataNodes())):  # largest first: a numeric index stays sorted
        sequence.UpdateIndexValue(sequence.GetNthIndexValue(i), f"{i * phantom.tr_s * 1000:g}")
    sequence.SetIndexUnit("ms")
    sequence.RemoveAttribute("NeuroContrast.EchoTime_s")
    sequence.SetAttribute("MultiVolume.DICOM.EchoTime", "30")
    _, _, tr_s, te_s = mrml.series_from_sequence_node(sequence)
    assert tr_s == pytest.approx(phantom.tr_s) and te_s == pytest.approx(0.030)


def test_multivolume_input(mrml_scene, phantom):
    node = mrml_scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "mv")
    slicer.util.updateVolumeFromArray(node, np.moveaxis(phantom.signal, 0, -1).copy())
    mrml.set_volume_node_geometry(node, phantom.geometry)
    node.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{i * 1500}" for i in range(phantom.signal.shape[0])))
    node.SetAttribute("MultiVolume.DICOM.EchoTime", "30")
    dsc, reference = PerfusionNetLogic(mrml_scene).load_dsc(PerfusionNetParameters(dsc_node_id=node.GetID()))
    np.testing.assert_array_equal(dsc.signal, phantom.signal)
    assert dsc.tr_s == pytest.approx(1.5) and dsc.te_s == pytest.approx(0.03) and reference is node


def test_bad_inputs_give_clear_errors(mrml_scene, loaded, phantom):
    logic = PerfusionNetLogic(mrml_scene)
    volume = mrml.volume_node_from_array(phantom.signal[0], phantom.geometry, "3D", mrml_scene)
    with pytest.raises(NeuroContrastError, match="expected a 4D DSC series"):
        logic.load_dsc(PerfusionNetParameters(dsc_node_id=volume.GetID()))
    short, _ = mrml.sequence_node_from_array(phantom.signal[:6], phantom.geometry, 1.5, "short", mrml_scene)
    with pytest.raises(NeuroContrastError, match="at least 10"):
        logic.load_dsc(PerfusionNetParameters(dsc_node_id=short.GetID()))
    in_ms, _ = mrml.sequence_node_from_array(phantom.signal, phantom.geometry, 1500.0, "ms", mrml_scene)
    with pytest.raises(NeuroContrastError, match="implausible"):      # a time index of 0, 1500, 3000 ...
        logic.load_dsc(PerfusionNetParameters(dsc_node_id=in_ms.GetID()))
    nodes, params = loaded
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "far")
    points.AddControlPoint(900.0, 0.0, 0.0)
    with pytest.raises(NeuroContrastError, match="outside the volume"):
        logic.compute_curves(PerfusionNetParameters(dsc_node_id=params.dsc_node_id, aif_node_id=points.GetID()))
    with pytest.raises(NeuroContrastError, match="no segment 'Artery'"):
        logic.compute_curves(PerfusionNetParameters(dsc_node_id=params.dsc_node_id, aif_node_id=params.aif_node_id,
                                                    aif_segment="Artery"))
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    mrml.add_segment_from_mask(empty, np.zeros(phantom.geometry.shape, bool), mrml.first_frame_node(nodes["sequence"]),
                               "nothing")
    with pytest.raises(NeuroContrastError, match="cover no voxel"):
        logic.compute_curves(PerfusionNetParameters(dsc_node_id=params.dsc_node_id, aif_node_id=empty.GetID(),
                                                    aif_segment="nothing"))
    assert segment_names(nodes["segmentation"]) == ["AIF", "VOF", "Brain"] and segment_names(points) == []


# ----------------------------------------------------------------------------------------- curves and AIF

def test_curves_table_plot_and_quality(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion import aif as aif_mod

    from neurocontrast.perfusion.pipeline import run_perfusion

    nodes, params = loaded
    curves, chart = PerfusionNetLogic(mrml_scene).update_curves(params)
    # the curves shown are the curves a run uses: same frames, baseline and values
    run = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask)
    np.testing.assert_allclose(curves.aif, run.aif_raw, rtol=1e-6)
    np.testing.assert_allclose(curves.vof, run.vof, rtol=1e-6)
    np.testing.assert_allclose(curves.times_s, run.times_s)
    assert curves.aif_quality["peak"] == pytest.approx(run.report["aif_quality"]["peak"])
    assert curves.unit == "1/s" and curves.aif_voxels == int(phantom.aif_mask.sum())
    assert curves.aif_quality["peak"] == pytest.approx(aif_mod.aif_quality(curves.aif, phantom.tr_s)["peak"])
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert sorted(s.GetYColumnName() for s in series) == ["AIF", "VOF"]
    table = series[0].GetTableNode()
    assert mrml.table_column(table, "Time (s)")[1] - mrml.table_column(table, "Time (s)")[0] == pytest.approx(phantom.tr_s)
    quality = slicer.mrmlScene.GetFirstNodeByName("PerfusionNet curves quality")
    assert "peak" in mrml.table_column(quality, "Figure")
    # a second update reuses the nodes
    PerfusionNetLogic(mrml_scene).update_curves(params)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1


def test_curves_from_markups_points(mrml_scene, loaded, phantom):
    nodes, params = loaded
    reference = mrml.first_frame_node(nodes["sequence"])
    points = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF points")
    for position in mrml.zyx_to_ras(reference, np.argwhere(phantom.aif_mask)):
        points.AddControlPoint(*position)
    by_points = PerfusionNetLogic(mrml_scene).compute_curves(
        PerfusionNetParameters(dsc_node_id=params.dsc_node_id, aif_node_id=points.GetID()))
    by_segment = PerfusionNetLogic(mrml_scene).compute_curves(params)
    np.testing.assert_allclose(by_points.aif, by_segment.aif, rtol=1e-6)
    assert by_points.vof is None


def test_live_curves_in_the_automatic_modes_are_the_curves_of_the_run(mrml_scene, loaded, phantom, monkeypatch):
    """In the automatic VOF/AIF modes the panel's curves are the automatic VOF/AIF a run with these settings
    uses (not the drawn ones that stay selected), labelled "(automatic)" in the plot, the quality table and the
    status line; the automatic search runs once while nothing it depends on changes."""
    import dataclasses

    from neurocontrast.perfusion import pipeline
    from PerfusionNetLib.delineation import curves_summary

    nodes, params = loaded
    dsc = _dsc(phantom)
    logic = PerfusionNetLogic(mrml_scene)
    auto_vof = dataclasses.replace(params, vof_mode="auto")
    curves, chart = logic.update_curves(auto_vof)
    run = pipeline.run_perfusion(dsc, phantom.aif_mask, None, phantom.brain_mask, vof="auto", vof_rescale=False)
    assert not np.array_equal(run.vof_mask, phantom.vof_mask)  # the drawn VOF would give another curve
    np.testing.assert_allclose(curves.vof, run.vof, rtol=1e-6)
    np.testing.assert_allclose(curves.aif, run.aif_raw, rtol=1e-6)
    np.testing.assert_allclose(curves.times_s, run.times_s)
    assert (curves.vof_voxels, curves.aif_voxels) == (int(run.vof_mask.sum()), int(phantom.aif_mask.sum()))
    assert curves.vof_automatic and not curves.aif_automatic
    series = sorted(chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(chart.GetNumberOfPlotSeriesNodes()))
    assert series == ["AIF", "VOF (automatic)"] and chart.GetTitle() == "AIF and VOF (automatic)"
    quality = mrml_scene.GetFirstNodeByName("PerfusionNet curves quality")
    assert quality.GetTable().GetColumnByName("VOF (automatic)") is not None
    text = curves_summary(curves)
    assert text.startswith("AIF: ") and text.endswith(f"VOF (automatic): {int(run.vof_mask.sum())} voxel(s)")
    # the automatic AIF (and the VOF found with it), also with nothing drawn: what the run uses
    both = dataclasses.replace(params, aif_mode="auto", vof_mode="auto", aif_node_id="", aif_segment="",
                               vof_node_id="", vof_segment="")
    assert both.has_curve_inputs()
    assert not dataclasses.replace(both, aif_mode="mask", vof_mode="mask").has_curve_inputs()
    calls = []
    real = pipeline.automatic_aif
    monkeypatch.setattr(pipeline, "automatic_aif", lambda *a, **k: calls.append(1) or real(*a, **k))
    curves, chart = logic.update_curves(both)
    run = pipeline.run_perfusion(dsc, None, None, phantom.brain_mask, aif="auto", vof="auto", vof_rescale=False)
    np.testing.assert_allclose(curves.aif, run.aif_raw, rtol=1e-6)
    np.testing.assert_allclose(curves.vof, run.vof, rtol=1e-6)
    assert (curves.aif_voxels, curves.vof_voxels) == (int(run.aif_mask.sum()), int(run.vof_mask.sum()))
    assert curves.aif_automatic and curves.vof_automatic
    assert curves_summary(curves).startswith(f"AIF (automatic): {int(run.aif_mask.sum())} voxel(s)")
    logic.update_curves(both)  # nothing changed: the automatic AIF is not searched again
    assert len(calls) == 1
    # an AIF-free method uses no AIF in the automatic mode: no AIF curve
    tmaxnet = logic.compute_curves(dataclasses.replace(params, aif_mode="auto", method="tmaxnet"))
    assert tmaxnet.aif is None and not tmaxnet.aif_automatic and tmaxnet.vof_voxels == int(phantom.vof_mask.sum())
    # back to the drawn curves: the automatic series leave the chart and the scene
    _, chart = logic.update_curves(params)
    assert sorted(chart.GetNthPlotSeriesNode(i).GetYColumnName()
                  for i in range(chart.GetNumberOfPlotSeriesNodes())) == ["AIF", "VOF"]
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 2
    # after a run with the automatic VOF, its chart says so too
    outputs = logic.run(dataclasses.replace(auto_vof, output_prefix="auto"))
    assert sorted(outputs.curves_chart.GetNthPlotSeriesNode(i).GetYColumnName()
                  for i in range(outputs.curves_chart.GetNumberOfPlotSeriesNodes())) \
        == ["AIF", "AIF before VOF rescaling", "VOF (automatic)"]


def _pipeline_peaks(phantom, points, reference, aif_mask, vof_mask):
    """Peak ΔR2* of each point's voxel as the run computes it for its AIF/VOF curves."""
    from neurocontrast.perfusion.pipeline import tissue_delta_r2star, vascular_curves

    baseline = vascular_curves(phantom.signal, phantom.tr_s, phantom.te_s, aif_mask, vof_mask).baseline
    out = []
    for z, y, x in mrml.ras_to_zyx(reference, [points.GetNthControlPointPositionWorld(i)
                                               for i in range(points.GetNumberOfControlPoints())]):
        voxel = np.zeros(phantom.geometry.shape, bool)
        voxel[z, y, x] = True
        out.append(float(tissue_delta_r2star(phantom.signal, phantom.te_s, baseline, voxel,
                                             phantom.geometry.spacing, 0.0).max()))
    return out


@pytest.mark.parametrize("brain", ["segment", "automatic"])
def test_suggest_aif_places_the_automatic_aif_of_a_run(mrml_scene, loaded, phantom, brain):
    """Suggest AIF shows exactly the voxels a run with the automatic AIF uses (pipeline.automatic_aif and
    run_perfusion(aif="auto")), with the selected brain mask and with the run's automatic one (where a
    whole-grid suggestion of its own found other voxels), ordered by the run's ΔR2* peak."""
    import dataclasses

    from neurocontrast.perfusion.pipeline import automatic_aif, run_perfusion

    nodes, params = loaded
    brain_mask = phantom.brain_mask
    if brain == "automatic":
        params = dataclasses.replace(params, brain_node_id="", brain_segment="")
        brain_mask = None
    points = PerfusionNetLogic(mrml_scene).suggest_aif(params)
    reference = mrml.first_frame_node(nodes["sequence"])
    expected = automatic_aif(_dsc(phantom), brain_mask)
    run = run_perfusion(_dsc(phantom), None, None, brain_mask, aif="auto")
    np.testing.assert_array_equal(run.aif_mask, expected)
    count = points.GetNumberOfControlPoints()
    assert count == int(expected.sum()) == run.report["parameters"]["aif_voxels"] >= 1
    assert [points.GetNthControlPointLabel(i) for i in range(count)] == [f"AIF-{i}" for i in range(1, count + 1)]
    np.testing.assert_array_equal(mrml.mask_from_markups(points, reference), run.aif_mask)
    zyx = mrml.ras_to_zyx(reference, [points.GetNthControlPointPositionWorld(i) for i in range(count)])
    assert sorted(map(list, zyx)) == sorted(run.report["aif_points_zyx"])  # what the run's report lists
    # without TE there is no ΔR2*: refused, also for an AIF-free method (whose run checks no TE)
    from neurocontrast.perfusion.parameters import PerfusionOptions

    no_te = DSCSeries(signal=phantom.signal, geometry=phantom.geometry, tr_s=phantom.tr_s, te_s=None, path=None)
    with pytest.raises(NeuroContrastError, match="TE is unknown"):
        automatic_aif(no_te, brain_mask, options=PerfusionOptions(method="tmaxnet"))
    with pytest.raises(NeuroContrastError, match="TE must be"):
        automatic_aif(no_te, brain_mask)
    # ordered by peak height of the run's ΔR2*, and a second suggestion replaces the first
    peaks = _pipeline_peaks(phantom, points, reference, run.aif_mask, None)
    assert peaks == sorted(peaks, reverse=True)
    # the suggested points used as a drawn AIF give the automatic run's maps
    drawn = dataclasses.replace(params, aif_node_id=points.GetID(), aif_segment="", vof_node_id="",
                                vof_segment="", output_prefix="drawn")
    tmax = slicer.util.arrayFromVolume(PerfusionNetLogic(mrml_scene).run(drawn).map_nodes["tmax"])
    np.testing.assert_array_equal(tmax, run.maps["tmax"])
    old_display = points.GetDisplayNode()
    assert old_display is not None and old_display.IsA("vtkMRMLMarkupsDisplayNode")  # the markups logic adds it
    displays = mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsDisplayNode")
    PerfusionNetLogic(mrml_scene).suggest_aif(params)
    assert mrml_scene.GetNodesByName("AIF candidates").GetNumberOfItems() == 1
    # the replaced point list took its display node along (no orphan vtkMRMLMarkupsDisplayNode)
    assert not mrml_scene.IsNodePresent(old_display)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsDisplayNode") == displays


# ----------------------------------------------------------------------------------------- run

def test_run_outputs_match_the_core_and_are_displayed(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion.pipeline import run_perfusion

    nodes, params = loaded
    messages = []
    outputs = PerfusionNetLogic(mrml_scene).run(params, progress=lambda f, m: messages.append(f))
    assert messages[0] == 0.0 and messages[-1] == 1.0 and messages == sorted(messages)
    direct = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask, method="osvd",
                           osvd_oi=params.osvd_oi)
    assert set(outputs.map_nodes) == set(direct.maps)
    for name, node in outputs.map_nodes.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), direct.maps[name])
        assert node.GetName() == f"DSCPhantom {name.upper()}"
        assert mrml.geometry_from_volume_node(node).same_as(phantom.geometry)
    tmax_display = outputs.map_nodes["tmax"].GetDisplayNode()
    assert (tmax_display.GetWindow(), tmax_display.GetLevel()) == (10.0, 5.0)
    assert not tmax_display.GetAutoWindowLevel()
    assert_clinical_display(outputs.map_nodes, phantom.brain_mask)
    # Tmax > 6 s segmentation and its volume
    reference = mrml.first_frame_node(nodes["sequence"])
    segmentation = outputs.hypoperfusion_segmentation
    mask = mrml.mask_from_segment(segmentation, "Tmax > 6 s", reference)
    np.testing.assert_array_equal(mask, direct.hypoperfusion.masks[6.0])
    measures = mrml.table_column(outputs.volumes_table, "Measure")
    values = dict(zip(measures, mrml.table_column(outputs.volumes_table, "Value")))
    assert measures[:4] == ["Tmax > 4 s", "Tmax > 6 s", "Tmax > 8 s", "Tmax > 10 s"]
    assert values["Tmax > 6 s"] == pytest.approx(mask.sum() * phantom.geometry.voxel_volume_ml, abs=0.01)
    assert values["Tmax > 6 s"] > 0
    # curves of the run: AIF used (after VOF rescaling), raw AIF, VOF
    assert outputs.curves_chart.GetNumberOfPlotSeriesNodes() >= 2
    # a second run reuses the output nodes instead of piling up copies
    before = mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    segmentation_displays = mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationDisplayNode")
    PerfusionNetLogic(mrml_scene).run(params)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before
    assert mrml_scene.GetNodesByName("DSCPhantom Tmax>6s").GetNumberOfItems() == 1
    # the replaced segmentation took its display node along
    assert not mrml_scene.IsNodePresent(segmentation.GetDisplayNode())
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationDisplayNode") == segmentation_displays


def test_run_refuses_invalid_parameters(mrml_scene, loaded):
    nodes, params = loaded
    with pytest.raises(NeuroContrastError, match="cannot run PerfusionNet: .*method 'nope'"):
        PerfusionNetLogic(mrml_scene).run(PerfusionNetParameters(dsc_node_id=params.dsc_node_id,
                                                                 aif_node_id=params.aif_node_id, method="nope"))
    nodes["sequence"].RemoveAttribute("NeuroContrast.EchoTime_s")
    with pytest.raises(NeuroContrastError, match="TE"):
        PerfusionNetLogic(mrml_scene).run(params)


def assert_clinical_display(map_nodes, brain):
    """Tmax/TTP run blue (low) → red (high) and CBF/CBV through a perceptual map, all from tables the logic made
    (the scene has none of the application's file tables); the zero background falls on a transparent entry
    and no brain voxel of CBF/CBV/TTP does; units are voxel-value units (UCUM), not a custom attribute."""
    for name, node in map_nodes.items():
        display = node.GetDisplayNode()
        table = display.GetColorNode()
        assert table.GetName().startswith("NeuroContrast "), (name, table.GetName())
        lut = table.GetLookupTable()
        low_rgba, high_rgba = lut.GetTableValue(1), lut.GetTableValue(table.GetNumberOfColors() - 1)
        assert lut.GetTableValue(0)[3] == 0.0  # background transparent
        if name in ("tmax", "ttp"):
            assert low_rgba[2] > low_rgba[0] and high_rgba[0] > high_rgba[2], (name, low_rgba, high_rgba)
        units = node.GetVoxelValueUnits()
        assert units is not None and units.GetCodingSchemeDesignator() == "UCUM"
        assert node.GetAttribute("NeuroContrast.Unit") is None
        values = slicer.util.arrayFromVolume(node)
        low = display.GetWindowLevelMin()
        assert np.all(values[~brain] <= low)  # the background falls on the transparent entry
        if name in ("cbf", "cbv", "ttp"):
            assert np.all(values[brain] > low), name  # no brain voxel does
    assert map_nodes["tmax"].GetVoxelValueUnits().GetCodeValue() == "s"
    assert map_nodes["cbf"].GetVoxelValueUnits().GetCodeValue() == "mL/(100.g.min)"


def test_display_ranges():
    values = np.arange(1, 101, dtype=np.float32).reshape(1, 10, 10)
    assert display_range("tmax", values) == (0.0, 10.0)
    low, high = display_range("cbf", values)
    assert low == 0.0 and high == pytest.approx(np.percentile(values, 99))
    low, high = display_range("ttp", values, brain=values > 50)
    assert low == pytest.approx(np.percentile(values[values > 50], 1))
    assert display_range("cbv", np.zeros((1, 2, 2), np.float32)) == (0.0, 1.0)


def test_proxy_volume_and_browser_resolve_to_the_sequence(mrml_scene, loaded, phantom):
    nodes, _ = loaded
    proxy = nodes["browser"].GetProxyNode(nodes["sequence"])
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")
    for node in (proxy, nodes["browser"]):
        dsc, reference = PerfusionNetLogic(mrml_scene).load_dsc(PerfusionNetParameters(dsc_node_id=node.GetID()))
        np.testing.assert_array_equal(dsc.signal, phantom.signal)
        assert reference is nodes["sequence"].GetNthDataNode(0)


def test_aif_free_method_needs_no_aif(mrml_scene, loaded):
    from PerfusionNetLib.logic import method_needs_aif

    nodes, params = loaded
    assert method_needs_aif("osvd") and not method_needs_aif("tmaxnet")
    assert PerfusionNetParameters(dsc_node_id=params.dsc_node_id, method="tmaxnet").problems(mrml_scene) == []
    assert PerfusionNetParameters(dsc_node_id=params.dsc_node_id, method="stnet").problems(mrml_scene) != []


def test_core_mask_adds_the_mismatch(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion import lesion

    nodes, params = loaded
    core = np.asarray(phantom.truth["territory"]) == 3
    assert core.any()
    mrml.add_segment_from_mask(nodes["segmentation"], core, mrml.first_frame_node(nodes["sequence"]), "Core")
    params.core_node_id, params.core_segment = nodes["segmentation"].GetID(), "Core"
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    values = dict(zip(mrml.table_column(outputs.volumes_table, "Measure"),
                      mrml.table_column(outputs.volumes_table, "Value")))
    expected = lesion.mismatch(outputs.result.hypoperfusion.masks[6.0], core, phantom.geometry)
    assert values["Core"] == pytest.approx(expected["core_ml"], abs=0.01)
    assert values["Mismatch"] == pytest.approx(expected["mismatch_ml"], abs=0.01)


def test_series_is_read_once_while_unchanged(mrml_scene, loaded):
    nodes, params = loaded
    logic = PerfusionNetLogic(mrml_scene)
    first, _ = logic.load_dsc(params)
    assert logic.load_dsc(params)[0] is first
    params.te_s = 0.025
    changed, _ = logic.load_dsc(params)
    assert changed is not first and changed.te_s == 0.025
    nodes["sequence"].SetAttribute("NeuroContrast.EchoTime_s", "0.02")
    params.te_s = 0.0
    assert logic.load_dsc(params)[0].te_s == pytest.approx(0.02)


# ----------------------------------------------------------------------------------------- segment choice

def test_an_empty_segment_name_never_falls_back_to_the_first_segment(mrml_scene, loaded):
    """With the segment left empty the mask used to be the segmentation's first segment (AIF), so AIF and VOF
    could silently be the same segment; now the run and the curves name what is missing."""
    import dataclasses

    nodes, params = loaded
    for field in ("vof_segment", "aif_segment"):
        empty = dataclasses.replace(params, **{field: ""})
        with pytest.raises(NeuroContrastError, match="choose a segment of 'DSCPhantom masks'.*AIF, VOF, Brain"):
            PerfusionNetLogic(mrml_scene).run(empty)
        with pytest.raises(NeuroContrastError, match="choose a segment"):
            PerfusionNetLogic(mrml_scene).compute_curves(empty)


def test_aif_and_vof_on_the_same_voxels_are_refused(mrml_scene, loaded):
    import dataclasses

    _, params = loaded
    with pytest.raises(NeuroContrastError, match="AIF and VOF cover exactly the same voxels"):
        PerfusionNetLogic(mrml_scene).run(dataclasses.replace(params, vof_segment="AIF"))


# ----------------------------------------------------------------------------------------- background process

def test_network_job_runs_the_command_line_in_a_subprocess(mrml_scene, loaded, phantom, monkeypatch):
    """The background path end to end with the real subprocess (oSVD here, so that it takes seconds; ST-Net
    and the Tmax net go the same way): exported series and masks, `neurocontrast perfusion --progress-lines`,
    maps imported on the DSC grid with the module's display, the Tmax > 6 s region, temporary files removed."""
    import sys

    from NeuroContrastLib.runner import CommandRunner
    from PerfusionNetLib.network_job import NetworkJob

    monkeypatch.setenv("NEUROCONTRAST_PYTHON", sys.executable)
    nodes, params = loaded
    logic = PerfusionNetLogic(mrml_scene)
    job = NetworkJob(logic)
    runner = job.start(params)
    assert isinstance(runner, CommandRunner)
    work_dir = job.work_dir
    status = runner.wait(timeout=300)
    assert status["returncode"] == 0, status["output"]
    assert status["fraction"] == 1.0  # the PROGRESS lines reached the runner
    outputs = job.finish()
    import dataclasses

    in_process = PerfusionNetLogic(mrml_scene).run(dataclasses.replace(params, output_prefix="in process"))
    for name in ("cbf", "tmax"):
        node = outputs.map_nodes[name]
        assert mrml.geometry_from_volume_node(node).same_as(phantom.geometry)
        # the subprocess reads the series back from a float32 file: agreement to float32 round-off of the
        # deconvolution (1e-4), not bit for bit
        np.testing.assert_allclose(slicer.util.arrayFromVolume(node),
                                   slicer.util.arrayFromVolume(in_process.map_nodes[name]), rtol=1e-4, atol=1e-4)
    assert_clinical_display(outputs.map_nodes, phantom.brain_mask)
    reference = mrml.first_frame_node(nodes["sequence"])
    np.testing.assert_array_equal(mrml.mask_from_segment(outputs.hypoperfusion_segmentation, "Tmax > 6 s", reference),
                                  in_process.result.hypoperfusion.masks[6.0])
    import os
    assert not os.path.exists(work_dir)


def test_an_svd_apply_never_imports_torch(tmp_path):
    """Apply with oSVD (settings put in effect, methods listed, maps computed and shown) must not import torch:
    seconds and hundreds of MB for nothing. Run in a fresh interpreter, where nothing imported it before."""
    import os
    import subprocess
    import sys

    code = """
import sys, slicer
scene = slicer.vtkMRMLScene(); slicer.mrmlScene = scene
for name in ("vtkSlicerColorLogic", "vtkSlicerMarkupsLogic", "vtkSlicerSequencesLogic", "vtkSlicerSegmentationsModuleLogic", "vtkSlicerTablesLogic", "vtkSlicerPlotsLogic"):
    logic = getattr(slicer, name)(); logic.SetMRMLScene(scene); globals()[name] = logic
from NeuroContrastLib.sampledata import load_dsc_phantom, phantom_options_for_tests
from NeuroContrastLib.settings import NeuroContrastSettings
from PerfusionNetLib.logic import PerfusionNetLogic, PerfusionNetParameters, available_methods
from PerfusionNetLib.network_job import runs_in_background
nodes = load_dsc_phantom(scene, **phantom_options_for_tests())
seg, ids = nodes["segmentation"], nodes["segments"]
NeuroContrastSettings().apply(environ={})
methods = available_methods()
params = PerfusionNetParameters(dsc_node_id=nodes["sequence"].GetID(), aif_node_id=seg.GetID(), aif_segment=ids["AIF"],
                                vof_node_id=seg.GetID(), vof_segment=ids["VOF"], brain_node_id=seg.GetID(),
                                brain_segment=ids["Brain"], method="osvd")
assert not runs_in_background("osvd") and runs_in_background("stnet")
PerfusionNetLogic(scene).run(params)
print("torch imported:", "torch" in sys.modules)
"""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(repo, d) for d in ("NeuroContrast", "PerfusionNet")] + [os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch imported: False" in out.stdout


# ----------------------------------------------------------------------------------------- VOF, ADC, reference

def test_new_panel_fields_round_trip_and_reach_the_core_options(mrml_scene):
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "PerfusionNet")
    params = PerfusionNetParameters(dsc_node_id="vtkMRMLSequenceNode1", vof_mode="auto", vof_rescale=False,
                                    adc_node_id="vtkMRMLScalarVolumeNode3", dwi_node_id="vtkMRMLScalarVolumeNode4",
                                    reference_node_id="vtkMRMLSegmentationNode1", reference_segment="WM")
    params.write(node)
    assert PerfusionNetParameters.read(node) == params  # "False" reads back as False, not bool("False")
    options = params.options()
    assert options.vof == "auto" and options.vof_rescale is False
    assert PerfusionNetParameters().options().vof_rescale is True and PerfusionNetParameters().options().vof == "mask"
    node.SetParameter("vof_rescale", "maybe")  # unreadable: the default
    assert PerfusionNetParameters.read(node).vof_rescale is True


def test_automatic_vof_run_and_suggestion_equal_the_core(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion.pipeline import automatic_vof, run_perfusion

    nodes, params = loaded
    params.vof_mode = "auto"  # the drawn VOF stays selected and is ignored, as the automatic AIF ignores its mask
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    direct = run_perfusion(_dsc(phantom), phantom.aif_mask, None, phantom.brain_mask, vof="auto")
    assert outputs.result.report["parameters"]["vof"] == "auto"
    np.testing.assert_array_equal(outputs.result.vof_mask, direct.vof_mask)
    assert direct.vof_mask.any() and not np.array_equal(direct.vof_mask, phantom.vof_mask)
    for name, node in outputs.map_nodes.items():
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), direct.maps[name])
    # Suggest VOF: the same voxels as points, labelled in order of peak height, replacing an earlier list
    logic = PerfusionNetLogic(mrml_scene)
    points = logic.suggest_vof(params)
    reference = mrml.first_frame_node(nodes["sequence"])
    np.testing.assert_array_equal(mrml.mask_from_markups(points, reference), direct.vof_mask)
    np.testing.assert_array_equal(automatic_vof(_dsc(phantom), phantom.aif_mask, phantom.brain_mask),
                                  direct.vof_mask)
    count = points.GetNumberOfControlPoints()
    assert [points.GetNthControlPointLabel(i) for i in range(count)] == [f"VOF-{i}" for i in range(1, count + 1)]
    peaks = _pipeline_peaks(phantom, points, reference, phantom.aif_mask, direct.vof_mask)  # the run's ΔR2*
    assert peaks == sorted(peaks, reverse=True)
    points = logic.suggest_vof(params)
    assert mrml_scene.GetNodesByName("VOF candidates").GetNumberOfItems() == 1
    # the suggested points used as a drawn VOF give the automatic run's maps
    drawn = PerfusionNetParameters(**{**params.__dict__, "vof_mode": "mask", "vof_node_id": points.GetID(),
                                      "vof_segment": "", "output_prefix": "drawn"})
    tmax = slicer.util.arrayFromVolume(PerfusionNetLogic(mrml_scene).run(drawn).map_nodes["tmax"])
    np.testing.assert_array_equal(tmax, direct.maps["tmax"])


def test_vof_rescale_off_reaches_the_core(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion.pipeline import run_perfusion

    nodes, params = loaded
    params.vof_rescale = False
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    direct = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask, vof_rescale=False)
    rescaled = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask)
    np.testing.assert_array_equal(outputs.result.aif, outputs.result.aif_raw)  # the AIF as measured
    assert not np.allclose(rescaled.aif, rescaled.aif_raw)                   # which rescaling would change
    for name in ("cbf", "cbv", "tmax"):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(outputs.map_nodes[name]), direct.maps[name])
    assert not np.array_equal(direct.maps["cbf"], rescaled.maps["cbf"])


def _adc_map(phantom):
    adc = np.where(phantom.brain_mask, 0.8, 0.0).astype(np.float32)  # 1e-3 mm²/s
    adc[(phantom.truth["territory"] == 3) & phantom.brain_mask] = 0.45
    return adc


def _values(table):
    return dict(zip(mrml.table_column(table, "Measure"), mrml.table_column(table, "Value")))


def test_core_from_an_adc_volume_equals_the_core(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion import lesion
    from neurocontrast.perfusion.pipeline import core_from_adc, run_perfusion

    nodes, params = loaded
    adc = _adc_map(phantom)
    adc_node = mrml.volume_node_from_array(adc, phantom.geometry, "ADC", mrml_scene)
    params.adc_node_id = adc_node.GetID()
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    diffusion = lesion.DiffusionImages(adc, phantom.geometry)
    expected = core_from_adc(diffusion, phantom.geometry)
    assert expected.volume_ml > 0
    values = _values(outputs.volumes_table)
    assert values["Core"] == pytest.approx(expected.volume_ml, abs=0.01)
    direct = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask, diffusion=diffusion)
    assert values["Mismatch"] == pytest.approx(direct.report["mismatch"]["mismatch_ml"], abs=0.01)
    np.testing.assert_array_equal(outputs.result.core_mask, expected.mask)  # on the DSC grid: voxel-wise
    np.testing.assert_array_equal(mrml.mask_from_segment(outputs.hypoperfusion_segmentation, "Core (ADC)", adc_node),
                                  expected.mask)
    # an ADC map on its own (finer) grid: the core on that grid, the mismatch from the volumes
    fine = np.repeat(np.repeat(adc, 2, axis=1), 2, axis=2)
    g = phantom.geometry
    fine_geometry = Geometry((g.size[0] * 2, g.size[1] * 2, g.size[2]), (g.spacing[0] / 2, g.spacing[1] / 2,
                                                                        g.spacing[2]), g.origin, g.direction)
    fine_node = mrml.volume_node_from_array(fine, fine_geometry, "ADC fine", mrml_scene)
    params.adc_node_id = fine_node.GetID()
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    expected = core_from_adc(lesion.DiffusionImages(fine, fine_geometry), phantom.geometry)
    assert _values(outputs.volumes_table)["Core"] == pytest.approx(expected.volume_ml, abs=0.01)
    assert "grid" in outputs.result.report["mismatch"]
    np.testing.assert_array_equal(mrml.mask_from_segment(outputs.hypoperfusion_segmentation, "Core (ADC)",
                                                         fine_node), expected.mask)


def test_adc_dwi_and_core_choices_are_checked(mrml_scene, loaded, phantom):
    nodes, params = loaded
    adc = _adc_map(phantom)
    adc_node = mrml.volume_node_from_array(adc, phantom.geometry, "ADC", mrml_scene)
    both = PerfusionNetParameters(**{**params.__dict__, "adc_node_id": adc_node.GetID(),
                                     "core_node_id": nodes["segmentation"].GetID(), "core_segment": "AIF"})
    assert any("not both" in p for p in both.problems(mrml_scene))
    dwi_alone = PerfusionNetParameters(**{**params.__dict__, "dwi_node_id": adc_node.GetID()})
    assert any("select the ADC map" in p for p in dwi_alone.problems(mrml_scene))
    with pytest.raises(NeuroContrastError, match="not both"):
        PerfusionNetLogic(mrml_scene).run(both)
    g = phantom.geometry
    other = Geometry(g.size, (g.spacing[0] * 2, g.spacing[1], g.spacing[2]), g.origin, g.direction)
    dwi_node = mrml.volume_node_from_array(adc, other, "DWI", mrml_scene)
    with_dwi = PerfusionNetParameters(**{**params.__dict__, "adc_node_id": adc_node.GetID(),
                                         "dwi_node_id": dwi_node.GetID()})
    with pytest.raises(NeuroContrastError, match="not on the grid of the ADC map"):
        PerfusionNetLogic(mrml_scene).run(with_dwi)
    # an ADC under an unhardened transform would give a core where it is not shown: refused
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    adc_node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(NeuroContrastError, match="Harden transform"):
        PerfusionNetLogic(mrml_scene).run(PerfusionNetParameters(**{**params.__dict__, "adc_node_id": adc_node.GetID()}))
    adc_node.SetAndObserveTransformNodeID(None)
    # a DWI on the ADC grid reaches the core's rule (dark low-ADC voxels are not core)
    from neurocontrast.perfusion import lesion

    dwi = np.where(phantom.brain_mask, 100.0, 0.0).astype(np.float32)
    dwi_node = mrml.volume_node_from_array(dwi, phantom.geometry, "DWI dark", mrml_scene)
    with_dwi.dwi_node_id = dwi_node.GetID()
    outputs = PerfusionNetLogic(mrml_scene).run(with_dwi)
    expected = lesion.adc_core(adc, phantom.geometry, dwi=dwi)
    assert outputs.result.report["core_from_adc"]["core_ml"] == pytest.approx(expected.volume_ml)
    assert expected.volume_ml < lesion.adc_core(adc, phantom.geometry).volume_ml


def test_reference_region_normalises_the_relative_maps(mrml_scene, loaded, phantom):
    from neurocontrast.perfusion.pipeline import run_perfusion

    nodes, params = loaded
    from neurocontrast.perfusion.phantom import LABELS

    reference = np.zeros(phantom.brain_mask.shape, bool)
    reference[:, :, :20] = True  # white matter of the unaffected side
    reference &= phantom.brain_mask & (phantom.labels == LABELS["white_matter"]) & (phantom.truth["territory"] == 0)
    assert reference.any()
    mrml.add_segment_from_mask(nodes["segmentation"], reference, mrml.first_frame_node(nodes["sequence"]), "Ref")
    params.reference_node_id, params.reference_segment = nodes["segmentation"].GetID(), "Ref"
    outputs = PerfusionNetLogic(mrml_scene).run(params)
    direct = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask,
                           reference_mask=reference)
    assert outputs.result.report["relative_maps"]["reference"] == "given mask"
    for name in ("rcbf", "rcbv", "rmtt"):
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(outputs.map_nodes[name]), direct.maps[name])
    default = run_perfusion(_dsc(phantom), phantom.aif_mask, phantom.vof_mask, phantom.brain_mask)
    assert not np.array_equal(direct.maps["rcbf"], default.maps["rcbf"])


def test_network_job_passes_the_vof_adc_and_reference_options(mrml_scene, loaded, phantom, monkeypatch):
    """The background path (the networks' subprocess; oSVD here so that it takes seconds) gets the automatic
    VOF, --no-vof-rescale, the ADC/DWI on their grid and the reference region, and its outputs match an
    in-process run of the same parameters (to float32 round-off)."""
    import dataclasses
    import sys

    from PerfusionNetLib.network_job import NetworkJob

    monkeypatch.setenv("NEUROCONTRAST_PYTHON", sys.executable)
    nodes, params = loaded
    adc = _adc_map(phantom)
    adc_node = mrml.volume_node_from_array(adc, phantom.geometry, "ADC", mrml_scene)
    dwi = np.where(adc > 0, 100.0, 0.0).astype(np.float32)
    dwi[adc == 0.45] = 300.0  # the core is DWI-bright
    dwi_node = mrml.volume_node_from_array(dwi, phantom.geometry, "DWI", mrml_scene)
    reference = mrml.first_frame_node(nodes["sequence"])
    ref_mask = phantom.brain_mask.copy()
    ref_mask[:, :, 20:] = False
    mrml.add_segment_from_mask(nodes["segmentation"], ref_mask, reference, "Ref")
    params = dataclasses.replace(params, vof_mode="auto", vof_rescale=False, adc_node_id=adc_node.GetID(),
                                 dwi_node_id=dwi_node.GetID(), reference_node_id=nodes["segmentation"].GetID(),
                                 reference_segment="Ref")
    logic = PerfusionNetLogic(mrml_scene)
    job = NetworkJob(logic)
    runner = job.start(params)
    command = runner.command
    status = runner.wait(timeout=300)
    assert status["returncode"] == 0, status["output"]
    outputs = job.finish()
    assert {"--no-vof-rescale", "--adc", "--dwi", "--reference-mask"} <= set(command)
    assert command[command.index("--vof") + 1] == "auto" and "--vof-mask" not in command
    options = outputs.result.report["options"]
    assert options["vof"] == "auto" and options["vof_rescale"] is False
    assert outputs.result.report["relative_maps"]["reference"] == "given mask"
    in_process = PerfusionNetLogic(mrml_scene).run(dataclasses.replace(params, output_prefix="in process"))
    for name in ("cbf", "tmax", "rcbf"):
        np.testing.assert_allclose(slicer.util.arrayFromVolume(outputs.map_nodes[name]),
                                   slicer.util.arrayFromVolume(in_process.map_nodes[name]), rtol=1e-4, atol=1e-4)
    values = _values(outputs.volumes_table)
    assert values["Core"] == pytest.approx(_values(in_process.volumes_table)["Core"], abs=0.01) and values["Core"] > 0
    np.testing.assert_array_equal(mrml.mask_from_segment(outputs.hypoperfusion_segmentation, "Core (ADC)", adc_node),
                                  in_process.result.core.mask)
