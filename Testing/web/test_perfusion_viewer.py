"""The perfusion viewer's controller on trame-slicer's offscreen views: AIF/VOF by simulated clicks and by
the paint brush, live curves, compute, maps, colour bar, Tmax > 6 s outline, volumes, report PNG."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    phantom = generate_phantom(shape=(4, 48, 48), n_frames=40, seed=5)
    paths = write_phantom(phantom, tmp_path_factory.mktemp("phantom"))
    return phantom, paths


def _axial(app):
    return [v for v in app.view_manager.get_slice_views() if v.get_orientation() == "Axial"][0]


def _click_voxels(viewer, app, events, mask, n=3):
    from NeuroContrastLib import mrml

    view = _axial(app)
    indices = np.argwhere(mask)
    z = np.bincount(indices[:, 0]).argmax()
    chosen = indices[indices[:, 0] == z][:n]
    ras = mrml.zyx_to_ras(viewer.reference, chosen)
    view.set_slice_value(ras[0][2])
    for point in ras:
        events.click(view, *events.ras_to_display(view, point))
    viewer.run_deferred()
    return chosen


def test_clicked_aif_vof_give_curves_and_compute_gives_maps(web_slicer_app, phantom_files, view_events, tmp_path):
    from neurocontrast_web.perfusion import PerfusionViewer

    phantom, paths = phantom_files
    viewer = PerfusionViewer(paths["dsc"], web_slicer_app, brain_mask=paths["brain_mask"])
    viewer.place_points("aif")
    chosen = _click_voxels(viewer, web_slicer_app, view_events, phantom.aif_mask)
    state = viewer.page_state()
    assert state["aif_points"] == len(chosen) and state["aif_voxels"] >= 1
    assert state["curves_image"].startswith("data:image/png;base64,")
    peak_index = int(np.argmax(viewer.curves.aif))
    assert abs(peak_index - int(np.argmax(phantom.truth["aif"]))) <= 2  # the clicked voxels are arterial
    viewer.place_points("vof")
    _click_voxels(viewer, web_slicer_app, view_events, phantom.vof_mask)
    assert viewer.page_state()["vof_voxels"] >= 1
    viewer.set_method("osvd")
    with pytest.raises(Exception, match="method"):
        viewer.set_method("magic")
    viewer.compute()
    state = viewer.page_state()
    assert state["computed"] and state["maps"] == ["cbf", "cbv", "mtt", "tmax", "ttp"]
    assert state["shown_map"] == "tmax" and state["colour_bar"]["min"] == 0 and state["colour_bar"]["max"] == 10
    assert state["colour_bar"]["gradient"].startswith("linear-gradient") and state["colour_bar"]["unit"] == "s"
    rows = {r["measure"]: r["value"] for r in state["volumes"]}
    truth_ml = float((phantom.truth["tmax"] > 6)[phantom.brain_mask].sum()) * np.prod(phantom.geometry.spacing) / 1000
    assert rows["Tmax > 6 s"] == pytest.approx(truth_ml, rel=0.35)
    outline = viewer.outputs.hypoperfusion_segmentation.GetDisplayNode()
    assert outline.GetVisibility2DOutline() and not outline.GetVisibility2DFill()
    tmax_node = viewer.outputs.map_nodes["tmax"]
    assert all(v.get_background_volume_id() == tmax_node.GetID() for v in viewer.slice_views())
    png = viewer.report_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert str(paths["dsc"]) not in str(state) and "phantom" not in str(state).lower()


def test_painted_aif_and_the_automatic_suggestion(web_slicer_app, phantom_files, view_events):
    from NeuroContrastLib import mrml

    from neurocontrast_web.perfusion import PerfusionViewer

    phantom, paths = phantom_files
    viewer = PerfusionViewer(paths["dsc"], web_slicer_app)
    viewer.paint("aif")
    view = _axial(web_slicer_app)
    indices = np.argwhere(phantom.aif_mask)
    target = indices[0]
    ras = mrml.zyx_to_ras(viewer.reference, target[None])[0]
    view.set_slice_value(ras[2])
    view.render()
    start = view_events.ras_to_display(view, ras)
    view_events.drag(view, start, (start[0] + 2, start[1]), steps=2)
    viewer.run_deferred()
    viewer.update_curves()
    state = viewer.page_state()
    assert state["aif_source"] == "paint" and state["aif_voxels"] >= 1
    viewer.stop_placing()
    n = viewer.suggest_aif()
    assert n >= 1 and viewer.page_state()["aif_source"] == "points"
    # the suggested voxels behave like arteries: their mean curve peaks with the true arterial curve
    assert viewer.curves.aif_voxels == n
    # (compared in seconds: the curves start at the pipeline's first baseline frame, not at frame 0)
    peak_s = viewer.curves.times_s[int(np.argmax(viewer.curves.aif))]
    assert abs(peak_s - phantom.times_s[int(np.argmax(phantom.truth["aif"]))]) <= 2 * phantom.tr_s


def test_the_automatic_vof_suggestion_lands_in_the_sinus(web_slicer_app, phantom_files):
    """"Suggest VOF" fills the VOF points with the automatic VOF; every suggested voxel lies in the phantom's
    superior sagittal sinus and the curve peaks after the AIF's."""
    from NeuroContrastLib import mrml

    from neurocontrast_web.perfusion import PerfusionViewer

    phantom, paths = phantom_files
    viewer = PerfusionViewer(paths["dsc"], web_slicer_app)
    viewer.suggest_aif()
    n = viewer.suggest_vof()
    assert n >= 1 and viewer.page_state()["vof_source"] == "points" and viewer.curves.vof_voxels == n
    points = viewer.points["vof"]
    ras = np.zeros((n, 3))
    for i in range(n):
        position = [0.0, 0.0, 0.0]
        points.GetNthControlPointPositionWorld(i, position)
        ras[i] = position
    zyx = np.rint(mrml.ras_to_zyx(viewer.reference, ras)).astype(int)
    assert phantom.vof_mask[tuple(zyx.T)].all()
    assert viewer.curves.times_s[int(np.argmax(viewer.curves.vof))] > viewer.curves.times_s[int(np.argmax(viewer.curves.aif))]
