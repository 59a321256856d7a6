"""The reading station's controller: one reader's session in a trame-slicer scene, without any page code.

It drives ``ReaderStudyLogic`` (the ReaderStudy Slicer module's logic) and through it the same
:class:`~neurocontrast.readerstudy.session.ReaderSession` storage: there is no second storage path. What
reaches the page is :meth:`ReadingStation.page_state`: opaque labels, positions, statuses, the lesion
table, grade, comment, flags and the clock; never a case id, condition, read id (it embeds the case id)
or a file path. The worklist is addressed by position; the position → read mapping stays here.

Marking: :meth:`start_long_axis` arms a markups line; the reader's two clicks in a slice view place the
long axis, and the short axis is added perpendicular through its centre in that view's plane (half the
long axis; ``perpendicular_short_axis``). Dragging an end point stores the moved lesion when the drag
ends, with the short axis snapped perpendicular again (``snap_short_axis``).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast_web.scene import DeferredWork

log = logging.getLogger(__name__)

#: Seconds between two persisted clock values (``ReaderSession.heartbeat``); a crash loses at most this.
HEARTBEAT_S = 5.0
PENDING_LINE_NAME = "New long axis"
ZOOM_STEP = 1.25


def format_clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` from one hour) of a non-negative number of seconds."""
    seconds = int(max(0.0, float(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ReadingStation(DeferredWork):
    """A reader's reading session on a trame-slicer app.

    Parameters
    ----------
    study_folder : the study folder (``study.json``); reader : reader id of the design.
    slicer_app : a ``trame_slicer.core.SlicerApp`` (its scene, markups logic and view manager are used).
    clock : seconds since the epoch (injectable for tests).
    schedule : runs a callable soon, outside the current VTK event (the page passes the event loop's
        ``call_soon``). Work triggered inside a markups event (storing the new lesion, which removes the
        armed line) must not run inside that event. Without it the work waits for :meth:`run_deferred`.

    Raises NeuroContrastError for an unknown reader or when another live process holds the reader's lock.
    """

    def __init__(self, study_folder, reader: str, slicer_app, clock: Callable[[], float] = time.time,
                 schedule: Optional[Callable[[Callable[[], None]], None]] = None):
        from ReaderStudyLib.logic import ReaderStudyLogic

        self.app = slicer_app
        self.scene = slicer_app.scene
        self.logic = ReaderStudyLogic(scene=self.scene, clock=clock)
        self.logic.login(str(study_folder), reader)
        self.reader = reader
        self.message = ""
        self.warnings: List[str] = []
        self.image = "Read image"
        self.comment_draft: Optional[str] = None
        self._pending = None
        self._pending_tags: List[int] = []
        self._observed: Dict[str, List[tuple]] = {}
        self._last_heartbeat = 0.0
        self.on_change: Optional[Callable[[], None]] = None  # set by the page: push the new state
        self._init_deferred(schedule)

    # ------------------------------------------------------------------ state for the page
    @property
    def session(self):
        return self.logic.session

    def page_state(self) -> Dict:
        """Everything the page shows (JSON-able, blinded)."""
        rows = self.logic.worklist()
        done, total = self.logic.progress()
        state = self.session.state
        read = self.logic.display_state() if state is not None else {}
        likert = dict(self.logic.design.likert)
        anchors = {str(k): str(v) for k, v in likert.get("anchors", {}).items()}
        lesions = [{"id": r["id"], "long_mm": round(float(r["long_mm"]), 1), "short_mm": round(float(r["short_mm"]), 1),
                    "warnings": "; ".join(r["warnings"])} for r in self.logic.lesion_table()]
        return {
            "worklist": rows,
            "progress": f"{done} / {total} submitted",
            "all_done": state is None and self.session.next_read() is None,
            "read_open": state is not None,
            "read_label": read.get("label", ""),
            "read_phase": read.get("phase", ""),
            "read_status": read.get("status", ""),
            "read_position": self._open_position(),
            "grade": read.get("grade"),
            "likert": [{"value": v, "anchor": anchors.get(str(v), "")} for v in range(1, int(likert["points"]) + 1)],
            "comment": state["comment"] if state is not None else "",
            "exclude": bool(read.get("exclude", False)),
            "paused": bool(read.get("paused", False)),
            "active_clock": format_clock(self.session.active_seconds),
            "lesions": lesions,
            "placing": self._pending is not None,
            "images": [node.GetName() for node in self.logic.volume_nodes],
            "image": self.image,
            "max_lesions": read.get("max_lesions"),
            "message": self.blind(self.message),
            "warnings": self.blind("; ".join(self.warnings)),
        }

    def blind(self, text: str) -> str:
        """``text`` with every read id, case id, condition and image file stem replaced by "this case" /
        "this image" (error messages of the session can name them)."""
        import re

        text = str(text)
        read_ids = [item["read_id"] for item in self.session.worklist()]
        for word in sorted(read_ids, key=len, reverse=True):
            text = text.replace(word, "this read")
        design = self.logic.design
        for word in sorted(set(self.logic.forbidden_words()), key=len, reverse=True):
            if word:
                replacement = "this case" if word in design.case_ids else "this image"
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", replacement, text)
        return text

    def _open_position(self) -> Optional[int]:
        state = self.session.state
        if state is None:
            return None
        for position, item in enumerate(self.session.worklist(), start=1):
            if item["read_id"] == state["read_id"]:
                return position
        return None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ worklist
    def open_next(self) -> None:
        """Open (or resume) the reader's next read and show it."""
        self._cancel_pending()
        self.logic.open_read(None)
        self._after_open()

    def open_position(self, position: int) -> None:
        """Open the worklist row at ``position`` (1-based). Raises for a locked phase or a bad position."""
        items = self.session.worklist()
        if not 1 <= int(position) <= len(items):
            raise NeuroContrastError(f"no worklist row {position}")
        self._cancel_pending()
        self.save_comment()
        self.logic.open_read(items[int(position) - 1]["read_id"])
        self._after_open()

    def _after_open(self) -> None:
        self.message, self.warnings, self.image = "", [], "Read image"
        self.comment_draft = None
        for lesion_id in self.logic.lesion_nodes:
            self._observe_lesion(lesion_id)
        self.show_image(self.image, reset=True)

    # ------------------------------------------------------------------ views
    def slice_views(self) -> list:
        return list(self.app.view_manager.get_slice_views())

    def show_image(self, name: str, reset: bool = False) -> None:
        """Show the read image or a companion (by its opaque name) in every slice view."""
        nodes = {node.GetName(): node for node in self.logic.volume_nodes}
        if name not in nodes:
            raise NeuroContrastError(f"no image {name!r} in this read")
        self.image = name
        from neurocontrast_web.scene import link_slice_views

        for view in self.slice_views():
            view.set_background_volume_id(nodes[name].GetID())
            view.set_foreground_volume_id(None)
        link_slice_views(self.scene)
        if reset:
            for view in self.slice_views():
                view.fit_view_to_content()

    def window_level(self) -> Dict[str, float]:
        """Window, level and the scalar range of the shown image."""
        node = self._shown_node()
        display = node.GetDisplayNode()
        low, high = node.GetImageData().GetScalarRange()
        return {"window": float(display.GetWindow()), "level": float(display.GetLevel()),
                "min": float(low), "max": float(high)}

    def set_window_level(self, window: float, level: float) -> None:
        if not window > 0:
            raise NeuroContrastError(f"window must be > 0, got {window}")
        display = self._shown_node().GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(float(window), float(level))
        self.activity()

    def auto_window_level(self) -> None:
        self._shown_node().GetDisplayNode().AutoWindowLevelOn()
        self.activity()

    def zoom(self, steps: int) -> None:
        """Zoom every slice view by ``ZOOM_STEP ** steps`` (negative: out)."""
        factor = ZOOM_STEP ** int(steps)
        for view in self.slice_views():
            node = view.get_view_node()
            fov = node.GetFieldOfView()
            node.SetFieldOfView(fov[0] / factor, fov[1] / factor, fov[2])
        self.activity()

    def scroll(self, steps: int, view_index: int = 0) -> None:
        """Move a slice view by ``steps`` slices (the mouse wheel in the view does the same)."""
        view = self.slice_views()[view_index]
        view.set_slice_value(view.get_slice_value() + int(steps) * view.get_slice_step())
        self.activity()

    def reset_views(self) -> None:
        for view in self.slice_views():
            view.fit_view_to_content()
        self.activity()

    def _shown_node(self):
        for node in self.logic.volume_nodes:
            if node.GetName() == self.image:
                return node
        raise NeuroContrastError("open a read first")

    # ------------------------------------------------------------------ marking
    def start_long_axis(self) -> None:
        """Arm a line: the next two clicks in a slice view are the long axis' end points."""
        import slicer

        self._require_editable()
        self._cancel_pending()
        line = self.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", PENDING_LINE_NAME)
        line.CreateDefaultDisplayNodes()
        self._pending = line
        self._pending_tags = [line.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                                               self._on_pending_point)]
        self.app.markups_logic.place_node(line)
        self.activity()

    def _on_pending_point(self, caller, _event) -> None:
        if caller.GetNumberOfDefinedControlPoints() >= 2:
            self._defer(self.finish_long_axis)

    def finish_long_axis(self) -> Optional[str]:
        """Store the armed line as a lesion (long axis) with its perpendicular short axis. Returns the id."""
        line = self._pending
        if line is None and self.session.state is not None:
            return None  # already stored (a repeated event)
        if line is None or line.GetNumberOfDefinedControlPoints() < 2:
            raise NeuroContrastError("click the two end points of the long axis in a slice view")
        points = np.zeros((2, 3))
        for i in range(2):
            line.GetNthControlPointPositionWorld(i, points[i])
        self._cancel_pending()
        normal = self._plane_normal(points)
        lesion_id, warnings = self.logic.add_lesion_from_long_axis(points[0], points[1], plane_normal=normal)
        self._observe_lesion(lesion_id)
        self.warnings = warnings
        self.message = f"{lesion_id} stored"
        return lesion_id

    def _plane_normal(self, points: np.ndarray) -> np.ndarray:
        """Normal of the slice view whose plane holds the two points (the view they were clicked in)."""
        best, best_score = np.array([0.0, 0.0, 1.0]), np.inf
        for view in self.slice_views():
            matrix = view.get_view_node().GetSliceToRAS()
            normal = np.array([matrix.GetElement(r, 2) for r in range(3)])
            origin = np.array([matrix.GetElement(r, 3) for r in range(3)])
            normal /= np.linalg.norm(normal)
            score = float(np.abs((points - origin) @ normal).max())
            if score < best_score:
                best, best_score = normal, score
        return best

    def _cancel_pending(self) -> None:
        if self._pending is None:
            return
        from NeuroContrastLib.mrml import remove_node

        for tag in self._pending_tags:
            self._pending.RemoveObserver(tag)
        self._pending_tags = []
        self.app.markups_logic.disable_place_mode()
        remove_node(self._pending, self.scene)
        self._pending = None

    def cancel_long_axis(self) -> None:
        self._cancel_pending()

    def _observe_lesion(self, lesion_id: str) -> None:
        import slicer

        tags = []
        for node in self.logic.lesion_nodes[lesion_id]:
            node.CreateDefaultDisplayNodes()
            tags.append((node, node.AddObserver(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent,
                                                lambda *_a, lid=lesion_id: self._defer(
                                                    lambda: self._on_lesion_moved(lid)))))
        self._observed[lesion_id] = tags

    def _on_lesion_moved(self, lesion_id: str) -> None:
        if lesion_id in self.logic.lesion_nodes:
            self.warnings = self.logic.commit_lesion_nodes(lesion_id, snap=True)
            self.message = f"{lesion_id} moved"

    def commit_lesion(self, lesion_id: str) -> None:
        """Store the current line nodes of a lesion (what the end of a drag does)."""
        self.warnings = self.logic.commit_lesion_nodes(lesion_id, snap=True)

    def delete_lesion(self, lesion_id: str) -> None:
        for node, tag in self._observed.pop(lesion_id, []):
            node.RemoveObserver(tag)
        self.logic.delete_lesion(lesion_id)
        self.message = f"{lesion_id} deleted"

    def _require_editable(self) -> None:
        state = self.session.state
        if state is None:
            raise NeuroContrastError("open a read first")
        if state["status"] == "submitted":
            raise NeuroContrastError("this read is submitted")

    # ------------------------------------------------------------------ grading and the clock
    def set_grade(self, grade: int) -> None:
        self.logic.set_grade(int(grade))

    def set_comment_draft(self, text: str) -> None:
        """Keep typed text; :meth:`save_comment` (on blur, a timer, submit, leaving the read) stores it."""
        self.comment_draft = str(text)
        self.activity()

    def save_comment(self) -> None:
        state = self.session.state
        if (self.comment_draft is not None and state is not None and state["status"] == "in_progress"
                and self.comment_draft != state["comment"]):
            self.logic.set_comment(self.comment_draft)
        self.comment_draft = None

    def set_exclude(self, exclude: bool) -> None:
        self.logic.set_exclude(bool(exclude))

    def toggle_pause(self) -> None:
        self._require_editable()
        if self.session.paused:
            self.logic.resume()
        else:
            self.save_comment()
            self.logic.pause()

    def activity(self) -> None:
        """User interaction (a click, a key, a view change): keeps the active-time clock running."""
        self.logic.activity()

    def tick(self, now: Optional[float] = None) -> None:
        """Timer callback (every second): persist the clock every :data:`HEARTBEAT_S`."""
        now = time.monotonic() if now is None else now
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self.logic.heartbeat()

    def submit_and_next(self) -> bool:
        """Submit the open read and open the next one. Returns False when nothing is left (or the next
        phase is in its washout period)."""
        self._cancel_pending()
        self.save_comment()
        self._clear_observers()
        self.logic.submit()
        self.message = "read submitted"
        if self.session.next_read() is None:
            self.session.close_read()
            self.message = "all available reads are submitted"
            return False
        self.open_next()
        self.message = "read submitted; next case opened"
        return True

    def _clear_observers(self) -> None:
        for tags in self._observed.values():
            for node, tag in tags:
                node.RemoveObserver(tag)
        self._observed = {}

    def close(self) -> None:
        """Store everything and release the reader's lock."""
        self._cancel_pending()
        try:
            self.save_comment()
        finally:
            self._clear_observers()
            self.logic.logout()
