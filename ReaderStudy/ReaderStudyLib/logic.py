"""ReaderStudy logic: the MRML side of a reading session (no Qt; tested with ``slicer-core``).

- :class:`ReaderStudyLogic` wraps a :class:`neurocontrast.readerstudy.session.ReaderSession`: login,
  worklist (opaque labels only), open/resume a read, load its images into volume nodes with opaque names
  ("Read image", "Companion A"...), lesion marking with markups line nodes (long and short axis), reading
  them back into :class:`~neurocontrast.readerstudy.Lesion` objects, Likert grade, pause, submit.
- the short-axis assistance (perpendicular to the long axis through its centre, in the plane of the view the
  long axis was drawn in) is pure geometry in :mod:`neurocontrast.readerstudy.geometry`.
- :data:`BLINDING_SETTINGS` / :func:`blinding_problems`: what the widget switches off (slice-view corner
  annotations and the Data Probe patient information) and a check that no node name or attribute in the
  scene reveals a case id, a condition or a file name.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import slicer

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.geometry import (drawing_plane, perpendicular_short_axis,  # noqa: F401 (re-exported)
                                                slice_plane, snap_short_axis)
from neurocontrast.readerstudy.pairing import Lesion
from NeuroContrastLib.mrml import remove_node
from NeuroContrastLib.settings import DictSettingsStore

log = logging.getLogger(__name__)

ROLE_ATTRIBUTE = "ReaderStudy.Role"
LESION_ATTRIBUTE = "ReaderStudy.Lesion"
AXIS_ATTRIBUTE = "ReaderStudy.Axis"

#: Application settings the widget applies during a read (keys of Slicer's QSettings, DataProbe module):
#: the slice-view corner annotations (patient name, ID, study date) and the Data Probe's information.
BLINDING_SETTINGS = {
    "DataProbe/sliceViewAnnotations.enabled": 0,
    "DataProbe/sliceViewAnnotations.topLeft": 0,
    "DataProbe/sliceViewAnnotations.topRight": 0,
    "DataProbe/sliceViewAnnotations.bottomLeft": 0,
    "DataProbe/sliceViewAnnotations.displayLevel": 0,
}

_COMPANION_NAMES = [f"Companion {c}" for c in "ABCDEFGH"]


# -------------------------------------------------------------------------------------------- geometry helpers

def _line_points(node) -> np.ndarray:
    if node is None or node.GetNumberOfControlPoints() < 2:
        raise NeuroContrastError(f"line {getattr(node, 'GetName', lambda: '?')()} needs two control points")
    points = np.zeros((2, 3))
    for i in range(2):
        node.GetNthControlPointPositionWorld(i, points[i])
    return points


def _set_line(node, p0, p1) -> None:
    node.RemoveAllControlPoints()
    node.AddControlPointWorld(*[float(v) for v in p0])
    node.AddControlPointWorld(*[float(v) for v in p1])


def lesion_from_nodes(long_node, short_node, label: str = "") -> Lesion:
    """A :class:`Lesion` from two markups line nodes (RAS world coordinates, mm). Raises
    NeuroContrastError when a line lacks points or the short axis is longer than the long one."""
    return Lesion(long_axis=tuple(map(tuple, _line_points(long_node))),
                  short_axis=tuple(map(tuple, _line_points(short_node))), label=label)


def blinding_problems(scene, forbidden: Sequence[str]) -> List[str]:
    """Names or attributes of nodes in ``scene`` that contain any ``forbidden`` word (case-insensitive:
    case ids, condition names, file names), plus DICOM patient attributes. Empty list = blinded."""
    words = [w.lower() for w in forbidden if w]
    problems = []
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        name = (node.GetName() or "")
        if any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", name.lower()) for w in words):
            problems.append(f"node name {name!r}")
        for attribute in node.GetAttributeNames() or ():
            value = node.GetAttribute(attribute) or ""
            if attribute.startswith("DICOM") or any(w in value.lower() for w in words if len(w) > 2):
                problems.append(f"{name}: attribute {attribute}")
    return problems


# -------------------------------------------------------------------------------------------- the logic


class ReaderStudyLogic:
    """One reader's session in a scene. ``login`` first; every edit goes to disk at once.

    Parameters: ``scene`` (default ``slicer.mrmlScene``), ``clock`` (seconds since the epoch; injectable),
    ``settings_store`` (QSettings-like: ``value``/``setValue``/``remove``; Slicer's ``qt.QSettings()`` in the
    module, a :class:`~NeuroContrastLib.settings.DictSettingsStore` by default) for the blinding settings.
    """

    # ---------------------------------------------------------------- blinding settings
    def apply_blinding(self) -> Dict[str, object]:
        """Switch the :data:`BLINDING_SETTINGS` on in the settings store, remembering the reader's own values
        (once: a second call keeps the first saved values). Returns what was saved."""
        for key, value in BLINDING_SETTINGS.items():
            if key not in self._saved_settings:
                self._saved_settings[key] = self.settings.value(key)
            self.settings.setValue(key, value)
        return dict(self._saved_settings)

    def restore_blinding(self) -> bool:
        """Put the saved values back (removing keys that had none). Returns False when nothing was applied."""
        if not self._saved_settings:
            return False
        for key, value in self._saved_settings.items():
            if value is None:
                self.settings.remove(key)
            else:
                self.settings.setValue(key, value)
        self._saved_settings = {}
        return True

    def __init__(self, scene=None, clock: Callable[[], float] = time.time, settings_store=None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.clock = clock
        self.design = None
        self.session = None
        self.lesion_nodes: Dict[str, Tuple[object, object]] = {}
        self.lesion_planes: Dict[str, Tuple[float, float, float]] = {}  # normal of the view each was drawn in
        self.volume_nodes: List[object] = []
        self.settings = settings_store if settings_store is not None else DictSettingsStore()
        self._saved_settings: Dict[str, object] = {}

    # ---------------------------------------------------------------- login / worklist
    def login(self, study_folder: str, reader: str) -> List[Dict]:
        """Open the study and lock the reader (refused if another session holds it). Returns the worklist."""
        from neurocontrast.readerstudy.design import StudyDesign
        from neurocontrast.readerstudy.session import ReaderSession

        self.logout()
        try:
            self.design = StudyDesign.load(study_folder)
        except (NeuroContrastError, OSError):
            # the reason names cases, conditions or paths: the administrator's tools show it, not the reader's
            raise NeuroContrastError("the study in this folder cannot be opened; the study administrator can see "
                                     "why with `neurocontrast reader status <study folder>`") from None
        self.session = ReaderSession(self.design, reader, clock=self.clock)
        return self.worklist()

    def logout(self) -> None:
        if self.session is not None:
            self._sync_marks()
            self.session.close()
        self._clear_nodes()
        self.session = None

    def _require(self):
        if self.session is None:
            raise NeuroContrastError("log in first (study folder and reader)")
        return self.session

    def worklist(self) -> List[Dict]:
        """Worklist rows with the opaque label, phase, position and status only (no case id, no condition,
        no read id, which embeds the case id)."""
        items = self._require().worklist()
        return [{"label": i["label"], "phase": i["phase"], "position": i["order"] + 1, "status": i["status"]}
                for i in items]

    def progress(self) -> Tuple[int, int]:
        """(submitted, total) reads of the reader."""
        items = self._require().worklist()
        return sum(1 for i in items if i["status"] == "submitted"), len(items)

    # ---------------------------------------------------------------- reading
    def open_read(self, read_id: Optional[str] = None) -> Dict:
        """Open (or resume) a read, load its images (opaque names) and its existing marks as line nodes.
        Returns display information: label, phase, grade, lesion count, Likert scale. Raises on a locked
        phase or when nothing is left to read."""
        session = self._require()
        self._sync_marks()
        self._clear_nodes()
        state = session.open(read_id)
        read = self.design.read(state["read_id"])
        self.load_images(read)
        for lesion_id, lesion in session.lesions().items():
            self._make_line_nodes(lesion_id, lesion)
        return self.display_state()

    def display_state(self) -> Dict:
        session = self._require()
        state = session.state
        if state is None:
            return {}
        return {"label": state["label"], "phase": state["phase"], "status": state["status"], "grade": state["grade"],
                "n_lesions": len(state["lesions"]), "likert": dict(self.design.likert),
                "active_seconds": session.active_seconds, "paused": session.paused, "exclude": state["exclude"],
                "max_lesions": self.design.max_lesions}

    def load_images(self, read) -> List[object]:
        """Volume nodes for the read's main image ("Read image") and companions ("Companion A"...), named
        without any case, condition or file hint; the companions follow the design's key order."""
        from neurocontrast.io import read_volume
        from NeuroContrastLib.mrml import volume_node_from_array

        paths = self.design.images_for(read)
        names = {"main": "Read image"}
        for key, name in zip([k for k in paths if k != "main"], _COMPANION_NAMES):
            names[key] = name
        nodes = []
        for key, path in paths.items():
            if key not in names:
                log.warning("more than %d companion images; the others are not shown", len(_COMPANION_NAMES))
                continue
            try:
                array, geometry = read_volume(str(path), names[key])
            except (NeuroContrastError, RuntimeError, OSError, ValueError) as exc:
                # the reader sees the blinded label; the path and the reason go to the audit log
                self._require().audit("image_error", image=key, path=str(path.relative_to(self.design.folder)),
                                      error=str(exc))
                raise NeuroContrastError(f"cannot read the {names[key].lower()} of read "
                                         f"{self.design.blind_label(read.case)}; the details are in the study's "
                                         "audit log") from None
            node = volume_node_from_array(array, geometry, names[key], scene=self.scene)
            node.CreateDefaultDisplayNodes()  # a volume without a display node shows nothing in the slice views
            node.SetAttribute(ROLE_ATTRIBUTE, "main" if key == "main" else "companion")
            nodes.append(node)
        self.volume_nodes = nodes
        return nodes

    def _make_line_nodes(self, lesion_id: str, lesion: Optional[Lesion] = None):
        number = lesion_id[1:]
        long_node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"Lesion {number} long")
        short_node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"Lesion {number} short")
        for node, axis in ((long_node, "long"), (short_node, "short")):
            node.SetAttribute(LESION_ATTRIBUTE, lesion_id)
            node.SetAttribute(AXIS_ATTRIBUTE, axis)
        if lesion is not None:
            _set_line(long_node, *lesion.long_axis)
            _set_line(short_node, *lesion.short_axis)
        self.lesion_nodes[lesion_id] = (long_node, short_node)
        return long_node, short_node

    def add_lesion_from_long_axis(self, p0, p1, short_mm: Optional[float] = None,
                                  plane_normal=(0.0, 0.0, 1.0),
                                  view_planes: Optional[Dict[str, Tuple[Sequence[float], Sequence[float]]]] = None
                                  ) -> Tuple[str, List[str]]:
        """Store a lesion from a drawn long axis; the short axis is placed perpendicular through its centre
        in the plane the long axis was drawn in (default length: half the long axis). ``view_planes`` (view
        name → (normal, origin), RAS) are the slice views shown: the one containing the line is used
        (``geometry.drawing_plane``); without them ``plane_normal``. Returns (lesion id, warnings)."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        if view_planes:
            plane_normal = view_planes[drawing_plane([p0, p1], view_planes)][0]
        length = float(np.linalg.norm(p1 - p0)) / 2 if short_mm is None else float(short_mm)
        s0, s1 = perpendicular_short_axis(p0, p1, length, plane_normal)
        lesion = Lesion(long_axis=(tuple(p0), tuple(p1)), short_axis=(tuple(s0), tuple(s1)))
        lesion_id, warnings = self.add_lesion(lesion)
        self.lesion_planes[lesion_id] = tuple(float(v) for v in plane_normal)
        return lesion_id, warnings

    def add_lesion(self, lesion: Lesion) -> Tuple[str, List[str]]:
        """Store a lesion and create its two line nodes. Returns (lesion id, warnings)."""
        lesion_id = self._require().add_lesion(lesion)
        self._make_line_nodes(lesion_id, lesion)
        return lesion_id, lesion.warnings()

    def commit_lesion_nodes(self, lesion_id: str, snap: bool = True) -> List[str]:
        """Read the (moved) line nodes of ``lesion_id`` back, optionally snap the short axis perpendicular
        through the long axis' centre, and store the lesion. Returns the lesion's warnings."""
        long_node, short_node = self._nodes(lesion_id)
        if snap:
            s0, s1 = snap_short_axis(_line_points(long_node), _line_points(short_node),
                                     self.lesion_planes.get(lesion_id, (0.0, 0.0, 1.0)))
            _set_line(short_node, s0, s1)
        lesion = lesion_from_nodes(long_node, short_node)
        self._require().move_lesion(lesion_id, lesion)
        return lesion.warnings()

    def delete_lesion(self, lesion_id: str) -> None:
        long_node, short_node = self._nodes(lesion_id)
        self._require().delete_lesion(lesion_id)
        for node in (long_node, short_node):
            remove_node(node, self.scene)  # with its markups display node
        del self.lesion_nodes[lesion_id]
        self.lesion_planes.pop(lesion_id, None)

    def _nodes(self, lesion_id: str):
        if lesion_id not in self.lesion_nodes:
            raise NeuroContrastError(f"no lesion {lesion_id!r} in this read")
        return self.lesion_nodes[lesion_id]

    def lesion_table(self) -> List[Dict]:
        """Rows for the lesion list: id, long and short axis (mm), warnings."""
        rows = []
        for lesion_id, (long_node, short_node) in self.lesion_nodes.items():
            try:
                lesion = lesion_from_nodes(long_node, short_node)
                rows.append({"id": lesion_id, "long_mm": lesion.long_mm, "short_mm": lesion.short_mm,
                             "warnings": lesion.warnings()})
            except NeuroContrastError as exc:
                rows.append({"id": lesion_id, "long_mm": float("nan"), "short_mm": float("nan"),
                             "warnings": [str(exc)]})
        return rows

    def lesions_from_scene(self) -> Dict[str, Lesion]:
        """``{lesion id: Lesion}`` read from the line nodes now in the scene."""
        return {lid: lesion_from_nodes(*nodes) for lid, nodes in self.lesion_nodes.items()}

    def _sync_marks(self) -> None:
        """Store line nodes that were moved in the views without an explicit commit."""
        session = self.session
        if session is None or session.state is None or session.state["status"] != "in_progress":
            return
        stored = session.lesions()
        for lesion_id, nodes in self.lesion_nodes.items():
            try:
                lesion = lesion_from_nodes(*nodes)
            except NeuroContrastError as exc:
                log.warning("lesion %s not stored: %s", lesion_id, exc)
                continue
            if lesion_id in stored and lesion.to_dict() != stored[lesion_id].to_dict():
                session.move_lesion(lesion_id, lesion)

    def set_grade(self, grade: int) -> None:
        self._require().set_grade(int(grade))

    def set_comment(self, text: str) -> None:
        self._require().set_comment(text)

    def set_exclude(self, exclude: bool) -> None:
        self._require().set_exclude(exclude)

    def pause(self) -> None:
        self._require().pause()

    def resume(self) -> None:
        self._require().resume()

    def activity(self) -> None:
        """Call on user interaction (view changes) to keep the active-time clock running."""
        if self.session is not None:
            self.session.activity()

    def heartbeat(self) -> float:
        """Persist the active time (GUI timer); returns active seconds of the open read."""
        return self.session.heartbeat() if self.session is not None else 0.0

    def submit(self) -> Dict:
        """Store moved marks, submit the read, clear its nodes. Returns the submitted state."""
        session = self._require()
        self._sync_marks()
        state = session.submit()
        self._clear_nodes()
        return state

    def _clear_nodes(self) -> None:
        """Remove the read's line and volume nodes with their display and storage nodes (no orphans left)."""
        for long_node, short_node in self.lesion_nodes.values():
            for node in (long_node, short_node):
                remove_node(node, self.scene)
        self.lesion_nodes = {}
        self.lesion_planes = {}
        for node in self.volume_nodes:
            remove_node(node, self.scene)
        self.volume_nodes = []

    def forbidden_words(self) -> List[str]:
        """Words that must not appear in node names: case ids, conditions, image keys and file stems."""
        design = self._require().design
        words = set(design.case_ids) | set(design.conditions)
        if design.reference:
            words.add(design.reference["condition"])
        for case in design.data["cases"]:
            for key, rel in list(case["images"].items()) + list(case.get("companions", {}).items()):
                words.add(key)
                words.add(rel.split("/")[-1].split(".")[0])
        return sorted(words)


@dataclasses.dataclass
class ReaderStudyParameters:
    """What the module keeps in its parameter node (saved with the scene): the study folder and the reader."""

    study_folder: str = ""
    reader: str = ""

    def write(self, parameter_node) -> None:
        from NeuroContrastLib.parameternode import write_parameters

        write_parameters(self, parameter_node, ())

    @classmethod
    def read(cls, parameter_node) -> "ReaderStudyParameters":
        from NeuroContrastLib.parameternode import read_parameters

        return read_parameters(cls, parameter_node, ())
