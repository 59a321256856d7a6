"""The reading station's controller on trame-slicer's offscreen slice views with simulated clicks."""

from __future__ import annotations

import numpy as np
import pytest

from web_helpers import assert_blinded


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def _station(folder, app, clock, reader="R1"):
    from neurocontrast_web.reading import ReadingStation

    return ReadingStation(folder, reader, app, clock=clock)


def _axial(app):
    return [v for v in app.view_manager.get_slice_views() if v.get_orientation() == "Axial"][0]


def _place_long_axis(station, app, events, p0, p1):
    view = _axial(app)
    view.set_slice_value(p0[2])
    station.start_long_axis()
    events.click(view, *events.ras_to_display(view, p0))
    events.click(view, *events.ras_to_display(view, p1))
    station.run_deferred()


def test_two_clicks_store_a_lesion_with_a_perpendicular_short_axis(web_slicer_app, synthetic_study, view_events):
    from neurocontrast.readerstudy.session import load_reads

    folder, made = synthetic_study
    clock = Clock()
    station = _station(folder, web_slicer_app, clock)
    station.open_next()
    view = _axial(web_slicer_app)
    # Two points inside the image, on the axial plane shown (z of the current slice).
    z = view.get_slice_value()
    p0, p1 = np.array([-20.0, 10.0, z]), np.array([-8.0, 14.0, z])
    _place_long_axis(station, web_slicer_app, view_events, p0, p1)
    assert not station.page_state()["placing"]
    lesions = station.session.lesions()
    assert list(lesions) == ["L1"]
    lesion = lesions["L1"]
    a, b = np.asarray(lesion.long_axis)
    pixel_mm = 2 * max(view.get_view_node().GetFieldOfView()[:2]) / 300  # two pixels of the view
    assert np.linalg.norm(a - p0) < pixel_mm and np.linalg.norm(b - p1) < pixel_mm
    assert lesion.long_mm == pytest.approx(np.linalg.norm(p1 - p0), abs=2 * pixel_mm)
    assert lesion.angle_deg == pytest.approx(90.0, abs=0.5)
    assert lesion.short_mm == pytest.approx(lesion.long_mm / 2, rel=1e-6)
    short = np.asarray(lesion.short_axis)
    assert np.allclose(short[:, 2], z, atol=1e-6)  # in the axial plane the clicks were made in
    stored = load_reads(made["design"], "R1")[station.session.state["read_id"]]
    assert [item["id"] for item in stored["lesions"]] == ["L1"]
    station.close()


def test_dragging_an_end_point_stores_the_moved_axis_and_resnaps_the_short_axis(web_slicer_app, synthetic_study,
                                                                                 view_events):
    folder, _ = synthetic_study
    station = _station(folder, web_slicer_app, Clock())
    station.open_next()
    view = _axial(web_slicer_app)
    z = view.get_slice_value()
    p0, p1 = np.array([-20.0, 0.0, z]), np.array([0.0, 0.0, z])
    _place_long_axis(station, web_slicer_app, view_events, p0, p1)
    before = station.session.lesions()["L1"]
    # Drag the second end point 10 mm to the right (patient left) in the view.
    view.render()
    new_end = p1 + np.array([10.0, 0.0, 0.0])
    view_events.drag(view, view_events.ras_to_display(view, p1), view_events.ras_to_display(view, new_end))
    station.run_deferred()
    after = station.session.lesions()["L1"]
    assert after.long_mm == pytest.approx(before.long_mm + 10.0, abs=1.5)
    assert after.angle_deg == pytest.approx(90.0, abs=0.5)
    centre = np.asarray(after.long_axis).mean(axis=0)
    assert np.allclose(np.asarray(after.short_axis).mean(axis=0), centre, atol=1e-6)
    station.close()


def test_grade_comment_exclude_pause_clock_and_submit_go_to_the_session(web_slicer_app, synthetic_study):
    from neurocontrast.readerstudy.session import load_events, load_reads

    folder, made = synthetic_study
    clock = Clock()
    station = _station(folder, web_slicer_app, clock)
    station.open_next()
    first = station.page_state()
    assert first["read_open"] and first["read_position"] == 1
    assert [row["anchor"] for row in first["likert"]][:1] == ["poor"] and len(first["likert"]) == 5
    clock.t += 30
    station.activity()
    station.set_grade(4)
    station.set_comment_draft("small enhancing focus")
    station.save_comment()
    station.toggle_pause()
    clock.t += 600  # paused: not counted
    station.toggle_pause()
    clock.t += 10
    station.tick(now=1e9)
    state = station.page_state()
    assert state["active_clock"] == "00:40" and state["grade"] == 4 and state["comment"] == "small enhancing focus"
    with pytest.raises(Exception, match="grade"):
        station.set_grade(7)
    assert station.submit_and_next()
    submitted = [s for s in load_reads(made["design"], "R1").values() if s["status"] == "submitted"]
    assert len(submitted) == 1 and submitted[0]["grade"] == 4 and submitted[0]["comment"] == "small enhancing focus"
    assert submitted[0]["active_seconds"] == pytest.approx(40.0)
    station.set_exclude(True)
    assert station.submit_and_next() is False  # phase 2 is in its washout
    assert station.page_state()["all_done"]
    events = [e["event"] for e in load_events(made["design"], "R1")]
    assert events.count("submit") == 2 and "pause" in events and "comment" in events
    station.close()


def test_page_state_is_blinded(web_slicer_app, synthetic_study):
    folder, made = synthetic_study
    station = _station(folder, web_slicer_app, Clock())
    station.open_next()
    state = station.page_state()
    assert state["images"] == ["Read image", "Companion A"]
    assert_blinded(state, made["design"])
    station.close()


def test_window_level_zoom_scroll_and_companion(web_slicer_app, synthetic_study):
    folder, _ = synthetic_study
    station = _station(folder, web_slicer_app, Clock())
    station.open_next()
    station.set_window_level(50.0, 120.0)
    assert station.window_level()["window"] == pytest.approx(50.0)
    with pytest.raises(Exception, match="window"):
        station.set_window_level(0.0, 10.0)
    views = station.slice_views()
    fov = views[0].get_view_node().GetFieldOfView()[0]
    station.zoom(1)
    assert views[0].get_view_node().GetFieldOfView()[0] == pytest.approx(fov / 1.25, rel=1e-3)
    offset = views[0].get_slice_value()
    station.scroll(1)
    assert views[0].get_slice_value() == pytest.approx(offset + views[0].get_slice_step())
    station.show_image("Companion A")
    companion_id = [n for n in station.logic.volume_nodes if n.GetName() == "Companion A"][0].GetID()
    assert all(v.get_background_volume_id() == companion_id for v in views)
    station.close()


def test_resume_after_a_crash_keeps_marks_grade_and_clock(web_slicer_app, synthetic_study, view_events):
    from neurocontrast.readerstudy.storage import ReaderLock

    folder, made = synthetic_study
    clock = Clock()
    station = _station(folder, web_slicer_app, clock)
    station.open_next()
    z = _axial(web_slicer_app).get_slice_value()
    _place_long_axis(station, web_slicer_app, view_events, np.array([-20.0, 0.0, z]), np.array([-5.0, 0.0, z]))
    station.set_grade(2)
    clock.t += 12
    station.tick(now=1e9)
    position = station.page_state()["read_position"]
    # A killed server: drop everything without close(). The kernel releases a dead process's OS lock (flock),
    # which closing the lock's descriptor reproduces; the owner record stays in the lock file.
    import os

    lock = station.session.lock
    station.logic.session = None
    os.close(lock._fd)
    lock._fd, lock.held = None, False
    again = _station(folder, web_slicer_app, clock)
    again.open_next()
    state = again.page_state()
    assert state["read_position"] == position and state["grade"] == 2
    assert [row["id"] for row in state["lesions"]] == ["L1"] and state["lesions"][0]["long_mm"] == pytest.approx(15, abs=1)
    assert again.session.active_seconds == pytest.approx(12.0)
    assert isinstance(again.session.lock, ReaderLock) and again.session.lock.recovered_from is not None
    again.close()


def test_a_second_station_for_the_same_reader_is_refused(web_slicer_app, synthetic_study):
    from neurocontrast.errors import NeuroContrastError

    folder, _ = synthetic_study
    station = _station(folder, web_slicer_app, Clock())
    with pytest.raises(NeuroContrastError):
        _station(folder, web_slicer_app, Clock())
    station.close()


def test_error_messages_reach_the_page_blinded(web_slicer_app, synthetic_study):
    folder, made = synthetic_study
    station = _station(folder, web_slicer_app, Clock())
    station.open_next()
    station.set_grade(3)
    read_id = station.session.state["read_id"]
    station.logic.submit()
    with pytest.raises(Exception) as raised:
        station.set_grade(2)  # the session's own message already names the read by its blinded label
    station.message = str(raised.value)
    state = station.page_state()
    assert "submitted" in state["message"] and read_id not in state["message"]
    # a message that does name the read id (any other source) is blinded by the page
    station.message = f"read {read_id} failed"
    assert read_id not in station.page_state()["message"]
    assert_blinded(state, made["design"])
    station.close()
