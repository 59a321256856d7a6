"""ReaderStudyLib.logic against a real MRML scene (slicer-core): images in opaque volume nodes, lesions as
markups lines read back into Lesion objects, the perpendicular short-axis assistance, blinding."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from neurocontrast.errors import NeuroContrastError  # noqa: E402
from neurocontrast.readerstudy import Lesion  # noqa: E402
from neurocontrast.readerstudy.session import load_reads  # noqa: E402
from neurocontrast.readerstudy.synthetic import make_synthetic_study  # noqa: E402
from ReaderStudyLib.logic import (BLINDING_SETTINGS, ReaderStudyLogic, blinding_problems,  # noqa: E402
                                  lesion_from_nodes, perpendicular_short_axis, snap_short_axis)


class Clock:
    t = 1.7e9

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rs")
    made = make_synthetic_study(folder, n_cases=3, seed=2)
    return folder, made


def test_perpendicular_assistance():
    s0, s1 = perpendicular_short_axis((0, 0, 0), (10, 0, 0), 4.0)
    np.testing.assert_allclose(0.5 * (s0 + s1), [5, 0, 0])
    assert np.linalg.norm(s1 - s0) == pytest.approx(4.0)
    assert abs(np.dot(s1 - s0, [1, 0, 0])) < 1e-9 and abs((s1 - s0)[2]) < 1e-9     # in the axial plane
    with pytest.raises(NeuroContrastError):
        perpendicular_short_axis((0, 0, 0), (10, 0, 0), 12.0)
    with pytest.raises(NeuroContrastError, match="perpendicular to the viewing plane"):
        perpendicular_short_axis((0, 0, 0), (0, 0, 10), 3.0)
    # a hand-drawn, oblique, off-centre short axis is snapped: same length, perpendicular, centred
    long_pts = np.array([[0, 0, 0], [10, 10, 0]], float)
    drawn = np.array([[2, 6, 0], [4, 2, 0]], float)
    a, b = snap_short_axis(long_pts, drawn)
    assert np.linalg.norm(b - a) == pytest.approx(np.linalg.norm(drawn[1] - drawn[0]))
    assert abs(np.dot(b - a, long_pts[1] - long_pts[0])) < 1e-9
    np.testing.assert_allclose(0.5 * (a + b), [5, 5, 0])


def test_markups_lines_round_trip(mrml_scene):
    long_node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "Lesion 1 long")
    short_node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "Lesion 1 short")
    long_node.AddControlPointWorld(-5.0, 2.0, 1.0)
    long_node.AddControlPointWorld(5.0, 2.0, 1.0)
    short_node.AddControlPointWorld(0.0, -1.0, 1.0)
    short_node.AddControlPointWorld(0.0, 5.0, 1.0)
    lesion = lesion_from_nodes(long_node, short_node)
    assert lesion.long_mm == pytest.approx(10) and lesion.short_mm == pytest.approx(6)
    assert long_node.GetLineLengthWorld() == pytest.approx(lesion.long_mm)
    np.testing.assert_allclose(lesion.center, [0, 2, 1])
    with pytest.raises(NeuroContrastError, match="two control points"):
        lesion_from_nodes(mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode"), short_node)


def test_reading_session_in_the_scene(mrml_scene, study):
    folder, made = study
    design = made["design"]
    clock = Clock()
    logic = ReaderStudyLogic(mrml_scene, clock=clock)
    worklist = logic.login(str(folder), "R2")
    assert len(worklist) == 2 * 3 and {w["status"] for w in worklist} == {"pending", "locked"}
    assert all(set(w) == {"label", "phase", "position", "status"} for w in worklist)
    assert not any(c in str(worklist) for c in design.case_ids)
    info = logic.open_read()
    assert info["label"].startswith("K") and info["likert"]["points"] == 5
    # images loaded with opaque names on the right grid
    names = sorted(n.GetName() for n in logic.volume_nodes)
    assert names == ["Companion A", "Read image"]
    assert all(n.GetDisplayNode() is not None for n in logic.volume_nodes)  # else nothing shows in the views
    main = next(n for n in logic.volume_nodes if n.GetName() == "Read image")
    read = design.read(logic.session.state["read_id"])
    from neurocontrast.io import read_volume
    array, geometry = read_volume(str(design.images_for(read)["main"]))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(main), array)
    origin = main.GetOrigin()
    assert origin[0] == pytest.approx(-geometry.origin[0]) and origin[2] == pytest.approx(geometry.origin[2])
    # blinding: no case id, condition, image key or file name in any node name or attribute
    assert blinding_problems(mrml_scene, logic.forbidden_words()) == []
    leaky = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{read.case} vir")
    leaky.SetAttribute("DICOM.PatientName", "X")
    assert len(blinding_problems(mrml_scene, logic.forbidden_words())) == 2
    mrml_scene.RemoveNode(leaky)
    assert BLINDING_SETTINGS["DataProbe/sliceViewAnnotations.enabled"] == 0
    # mark a lesion: long axis drawn, short axis placed by the assistance
    clock.t += 12
    lid, warnings = logic.add_lesion_from_long_axis((-6, 10, 0), (6, 10, 0), short_mm=5)
    assert warnings == []
    long_node, short_node = logic.lesion_nodes[lid]
    assert long_node.GetName() == "Lesion 1 long" and short_node.GetName() == "Lesion 1 short"
    # the reader drags the short axis obliquely; commit snaps it back perpendicular through the centre
    short_node.SetNthControlPointPositionWorld(0, 1.0, 7.0, 0.0)
    short_node.SetNthControlPointPositionWorld(1, -1.0, 13.0, 0.0)
    assert logic.commit_lesion_nodes(lid) == []
    stored = logic.session.lesions()[lid]
    assert stored.angle_deg == pytest.approx(90) and stored.short_mm == pytest.approx(np.sqrt(40))
    np.testing.assert_allclose(stored.center, [0, 10, 0], atol=1e-9)
    lid2, _ = logic.add_lesion(Lesion(long_axis=((20, 0, 0), (30, 0, 0)), short_axis=((25, -2, 0), (25, 2, 0))))
    assert [r["id"] for r in logic.lesion_table()] == [lid, lid2]
    logic.delete_lesion(lid2)
    assert mrml_scene.GetFirstNodeByName("Lesion 2 long") is None
    # a mark moved in the view without commit is still stored at logout; the next login resumes the read
    long_node.SetNthControlPointPositionWorld(1, 8.0, 10.0, 0.0)
    logic.set_grade(4)
    read_id = logic.session.state["read_id"]
    logic.logout()
    assert mrml_scene.GetFirstNodeByName("Read image") is None
    state = load_reads(design, "R2")[read_id]
    assert state["status"] == "in_progress" and state["lesions"][0]["long_axis"][1] == [8.0, 10.0, 0.0]
    logic.login(str(folder), "R2")
    info = logic.open_read()
    assert logic.session.state["read_id"] == read_id and info["grade"] == 4 and info["n_lesions"] == 1
    assert set(logic.lesions_from_scene()) == {lid}
    clock.t += 30
    submitted = logic.submit()
    assert submitted["status"] == "submitted" and submitted["active_seconds"] == pytest.approx(42)
    assert logic.progress() == (1, 6)
    # a second session for the same reader is refused (another process: "already open", see test_readerstudy_session)
    with pytest.raises(NeuroContrastError, match="already holds the lock"):
        ReaderStudyLogic(mrml_scene).login(str(folder), "R2")
    logic.logout()


def test_logic_requires_login(mrml_scene):
    with pytest.raises(NeuroContrastError, match="log in"):
        ReaderStudyLogic(mrml_scene).open_read()


def test_removed_marks_leave_no_display_nodes(mrml_scene, study):
    """Deleting a lesion, and logging out (which clears the read), remove the line nodes with the markups
    display nodes that the markups logic gave them, and the volumes with their display nodes."""
    folder, _ = study

    def count(class_name):
        return mrml_scene.GetNumberOfNodesByClass(class_name)

    logic = ReaderStudyLogic(mrml_scene, clock=Clock())
    logic.login(str(folder), "R1")
    logic.open_read()
    assert count("vtkMRMLScalarVolumeDisplayNode") == len(logic.volume_nodes) == 2
    lid, _ = logic.add_lesion_from_long_axis((-6, 10, 0), (6, 10, 0), short_mm=5)
    lid2, _ = logic.add_lesion_from_long_axis((20, 0, 0), (30, 0, 0), short_mm=4)
    assert count("vtkMRMLMarkupsDisplayNode") == 4  # one per line node
    deleted = [node.GetDisplayNode() for node in logic.lesion_nodes[lid2]]
    logic.delete_lesion(lid2)
    assert count("vtkMRMLMarkupsLineNode") == 2 and count("vtkMRMLMarkupsDisplayNode") == 2
    assert not any(mrml_scene.IsNodePresent(node) for node in deleted)
    logic.logout()
    assert count("vtkMRMLMarkupsLineNode") == 0 and count("vtkMRMLMarkupsDisplayNode") == 0
    assert count("vtkMRMLScalarVolumeNode") == 0 and count("vtkMRMLScalarVolumeDisplayNode") == 0


def test_logic_messages_are_blinded(mrml_scene, tmp_path, caplog):
    import json
    import re

    from neurocontrast.readerstudy.session import load_events

    folder = tmp_path / "study"
    design = make_synthetic_study(folder, n_cases=2, seed=5)["design"]
    words = sorted(set(design.case_ids) | set(design.conditions) | {"ref", "pre", str(folder), "cases",
                                                                     "nii", ".gz"})

    def leaks(text):
        return [w for w in words if re.search(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])", text)]

    logic = ReaderStudyLogic(mrml_scene, clock=Clock())
    messages = []
    with caplog.at_level("DEBUG"):
        logic.login(str(folder), "R1")
        read = logic.session.next_read()
        main = logic.design.images_for(read)["main"]
        main.unlink()                                             # the read's image is gone
        with pytest.raises(NeuroContrastError) as info:
            logic.open_read()
        messages.append(str(info.value))
        assert design.blind_label(read.case) in messages[-1]
        with pytest.raises(NeuroContrastError) as info:
            logic.delete_lesion("L9")
        messages.append(str(info.value))
        logic.logout()
        audit = [e for e in load_events(design, "R1") if e["event"] == "image_error"]
        assert audit and audit[0]["path"] == str(main.relative_to(folder))     # the details: audit log only
        data = json.loads((folder / "study.json").read_text(encoding="utf-8"))
        data["cases"][0]["companions"] = ["cases/S001/pre.nii.gz"]
        (folder / "study.json").write_text(json.dumps(data))
        with pytest.raises(NeuroContrastError) as info:
            ReaderStudyLogic(mrml_scene).login(str(folder), "R1")  # invalid design: no case id in the dialog
        messages.append(str(info.value))
        assert "reader status" in messages[-1]
    for message in messages:
        assert not leaks(message), message
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert not leaks(log_text), log_text
