"""A reader's crash-safe reading session.

Files under ``<study>/reads/<reader>/``:

- ``<reader>__<phase>__<case>.json``: the whole state of one read (marks, Likert grade, comment, exclude
  flag, active seconds, open/submit times), replaced atomically on every change
  (:func:`~neurocontrast.readerstudy.storage.write_json_atomic`);
- ``events.jsonl``: append-only log (open, resume, lesion_added/moved/deleted, grade, comment, exclude,
  pause, resume, submit, reopen, close), one fsynced JSON line per event;
- ``.lock``: the PID lock; a second session for the same reader is refused while the first lives.

Active reading time runs while a read is open and not paused. Without activity (any edit or an explicit
:meth:`ReaderSession.activity` call from the GUI) for ``idle_timeout_s`` the clock stops at the moment the
idle period began (auto-pause) and restarts with the next activity. :meth:`ReaderSession.heartbeat`
(a GUI timer) persists the running total, so a crash loses at most one heartbeat interval.
Submitted reads refuse edits until :meth:`ReaderSession.reopen` (logged, with a reason).

Blinding: every message a reader can see (errors raised here, log lines) names a read by its blinded label
(:meth:`StudyDesign.blind_label`), never by case id, condition, read id or path; details go to the audit log
``events.jsonl``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.design import Read, StudyDesign
from neurocontrast.readerstudy.pairing import Lesion
from neurocontrast.readerstudy.storage import (ReaderLock, append_jsonl, clean_temp_files, quarantine_file,
                                               read_jsonl, repair_jsonl_tail, write_json_atomic)

log = logging.getLogger(__name__)

READS_DIR = "reads"
QUARANTINE_DIR = "quarantine"
#: keys every stored read has, with their JSON types (a file lacking one is damaged)
READ_FIELDS = {"read_id": str, "reader": str, "phase": str, "case": str, "condition": str, "status": str,
               "lesions": list, "active_seconds": (int, float), "opened_at": list, "submissions": list}
READ_STATUSES = ("in_progress", "submitted")


def reader_folder(design: StudyDesign, reader: str) -> Path:
    return design.folder / READS_DIR / reader


def _read_problem(path: Path, reader: str) -> Optional[str]:
    """Why ``path`` is not a valid stored read of ``reader`` (None when it is)."""
    import json

    raw = path.read_bytes()
    if not raw.strip():
        return "empty file"
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not text (binary content)"
    except json.JSONDecodeError as exc:
        return f"not valid JSON (truncated?): {exc}"
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__}, not an object"
    for key, kind in READ_FIELDS.items():
        if key not in state:
            return f"no '{key}' field"
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            return f"'{key}' has the wrong type ({type(state[key]).__name__})"
    if state["status"] not in READ_STATUSES:
        return f"unknown status {state['status']!r}"
    if state["read_id"] != path.stem or state["reader"] != reader:
        return "its read_id or reader does not match its file name and folder"
    if state["status"] == "submitted" and not isinstance(state.get("submitted_at"), (int, float)):
        return "submitted without a submit time"
    return None


def load_reads(design: StudyDesign, reader: Optional[str] = None,
               damaged: Optional[List[Dict]] = None) -> Dict[str, Dict]:
    """All stored read states (no lock): ``{read_id: state}`` for one reader or all.

    A damaged read file (empty, truncated, binary, not an object, missing fields) is moved to
    ``reads/<reader>/quarantine/`` with a ``.reason.txt`` beside it, so status, analysis and sessions keep
    working; the read counts as not started. Each such file is appended to ``damaged`` (when given) as
    ``{"path", "quarantined_to", "reason"}`` for study-administrator tools; the log line names only the
    reader folder (the file name carries the case id, which readers must not see)."""
    import json

    readers = [reader] if reader else design.readers
    out = {}
    for r in readers:
        folder = reader_folder(design, r)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*__*__*.json")):
            problem = _read_problem(path, r)
            if problem is None:
                state = json.loads(path.read_text(encoding="utf-8"))
                out[state["read_id"]] = state
                continue
            try:
                target = quarantine_file(path, problem, QUARANTINE_DIR)
            except FileNotFoundError:  # pragma: no cover - quarantined by a concurrent caller
                continue
            log.warning("reader %s: a damaged read file (%s) was moved to %s/%s/; the read starts over",
                        r, problem.split(":")[0], r, QUARANTINE_DIR)
            if damaged is not None:
                damaged.append({"path": str(path), "quarantined_to": str(target), "reason": problem})
    return out


def load_events(design: StudyDesign, reader: str) -> List[Dict]:
    """The reader's event log (a torn last line from a crash is skipped)."""
    return read_jsonl(reader_folder(design, reader) / "events.jsonl")


class ReaderSession:
    """The single writer of one reader's reads. Use as a context manager or call :meth:`close`.

    Parameters: ``design`` (StudyDesign), ``reader`` (id in the design), ``clock`` (callable returning
    seconds since the epoch; injectable for tests), ``idle_timeout_s`` (default: the design's).
    Raises NeuroContrastError for an unknown reader or when another live process holds the reader's lock.
    """

    def __init__(self, design: StudyDesign, reader: str, clock: Callable[[], float] = time.time,
                 idle_timeout_s: Optional[float] = None):
        if reader not in design.readers:
            raise NeuroContrastError(f"unknown reader {reader!r}; the design lists {design.readers}")
        self.design = design
        self.reader = reader
        self.clock = clock
        idle = idle_timeout_s if idle_timeout_s is not None else design.idle_timeout_s
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 < idle < float("inf"):
            raise NeuroContrastError(f"idle_timeout_s must be a finite number of seconds > 0, got {idle!r}")
        self.idle_timeout_s = float(idle)
        self.folder = reader_folder(design, reader)
        self.lock = ReaderLock(self.folder / ".lock").acquire()
        self._state: Optional[Dict] = None
        self._paused = False
        self._auto_paused = False
        self._last_tick = 0.0
        self._last_activity = 0.0
        try:
            self._recover()
        except Exception:
            self.lock.release()
            raise

    def _recover(self) -> None:
        """After a crash: quarantine a torn log tail, remove leftover temp files, quarantine damaged reads and
        log the submit events a kill between saving a read and logging its submit left out (audit events
        ``lock_recovered``, ``log_repaired``, ``temp_files_removed``, ``read_quarantined``, ``submit`` with
        ``reconciled: true``)."""
        torn = repair_jsonl_tail(self.folder / "events.jsonl")
        if self.lock.recovered_from:
            self._event("lock_recovered", previous_pid=self.lock.recovered_from.get("pid"))
        if torn is not None:
            self._event("log_repaired", quarantined_to=torn.name)
        removed = clean_temp_files(self.folder)
        if removed:
            self._event("temp_files_removed", files=[p.name for p in removed])
        damaged: List[Dict] = []
        states = load_reads(self.design, self.reader, damaged)
        for item in damaged:
            self._event("read_quarantined", file=Path(item["path"]).name, reason=item["reason"],
                        quarantined_to=str(Path(item["quarantined_to"]).relative_to(self.folder)))
        events = load_events(self.design, self.reader)
        logged: Dict[str, int] = {}
        for e in events:
            if e.get("event") == "submit" and "read_id" in e:
                logged[e["read_id"]] = logged.get(e["read_id"], 0) + 1
        for read_id, state in sorted(states.items()):
            missing = state["submissions"][logged.get(read_id, 0):]
            if state["status"] == "submitted" and not missing and not logged.get(read_id):
                missing = [state["submitted_at"]]
            for t in missing:
                record = {"t": t, "event": "submit", "reader": self.reader, "read_id": read_id, "reconciled": True,
                          "active_seconds": round(state["active_seconds"], 3), "n_lesions": len(state["lesions"])}
                append_jsonl(self.folder / "events.jsonl", record)
                log.warning("reader %s: logged a submit that a crash left out of the event log", self.reader)

    # ------------------------------------------------------------------ plumbing
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _path(self, read_id: str) -> Path:
        return self.folder / f"{read_id}.json"

    def _event(self, event: str, **fields) -> None:
        record = {"t": self.clock(), "event": event, "reader": self.reader}
        if self._state is not None and "read_id" not in fields:
            record["read_id"] = self._state["read_id"]
        record.update(fields)
        append_jsonl(self.folder / "events.jsonl", record)

    def audit(self, event: str, **fields) -> None:
        """Append an event with details (paths, reasons) to the reader's audit log ``events.jsonl``; the
        place for what reader-facing messages must not show."""
        self._event(event, **fields)

    def _save(self) -> None:
        self._state["revision"] = self._state.get("revision", 0) + 1
        self._state["updated_at"] = self.clock()
        write_json_atomic(self._path(self._state["read_id"]), self._state)

    def _label(self) -> str:
        """Blinded label of the open read (what reader-facing messages show)."""
        return self.design.blind_label(self._state["case"]) if self._state is not None else "(none)"

    def _require_open(self, editable: bool = True) -> Dict:
        if self._state is None:
            raise NeuroContrastError("no read is open; call open() first")
        if editable and self._state["status"] == "submitted":
            raise NeuroContrastError(f"read {self._label()} is submitted; reopen it (logged) to edit")
        return self._state

    def _account(self, now: float) -> None:
        """Add active time up to ``now``; stop at the start of an idle period (auto-pause)."""
        if self._state is None or self._paused or self._auto_paused or self._state["status"] == "submitted":
            return
        idle_end = self._last_activity + self.idle_timeout_s
        end = min(now, idle_end)
        if end > self._last_tick:
            self._state["active_seconds"] += end - self._last_tick
            self._last_tick = end
        if now > idle_end:
            self._auto_paused = True
            self._event("pause", reason="idle", at=idle_end)

    def _touch(self, now: float) -> None:
        """User activity at ``now``: account, and leave an idle auto-pause."""
        self._account(now)
        if self._auto_paused:
            self._auto_paused = False
            self._event("resume", reason="activity")
        if not self._paused:
            self._last_tick = now
        self._last_activity = now

    def _change(self, event: str, **fields) -> None:
        now = self.clock()
        self._touch(now)
        self._save()
        self._event(event, **fields)

    # ------------------------------------------------------------------ worklist
    def reads(self) -> Dict[str, Dict]:
        return load_reads(self.design, self.reader)

    def submitted_times(self) -> Dict[str, float]:
        return {rid: s["submitted_at"] for rid, s in self.reads().items() if s["status"] == "submitted"}

    def worklist(self) -> List[Dict]:
        """Every read of this reader in order with its status (pending / in_progress / submitted / locked)."""
        states = self.reads()
        submitted = {rid: s["submitted_at"] for rid, s in states.items() if s["status"] == "submitted"}
        now = self.clock()
        out = []
        for phase in self.design.phases(self.reader):
            unlock = self.design.phase_unlock_time(self.reader, phase, submitted)
            for read in self.design.worklist(self.reader, phase):
                state = states.get(read.read_id)
                status = state["status"] if state else ("pending" if unlock is not None and now >= unlock
                                                       else "locked")
                out.append({"read_id": read.read_id, "phase": phase, "case": read.case,
                            "label": self.design.blind_label(read.case), "order": read.order, "status": status,
                            "unlock_time": unlock})
        return out

    def next_read(self) -> Optional[Read]:
        """The read to work on: the one in progress (resume), else the first pending one of an unlocked
        phase; None when everything available is submitted (the next phase may still be locked)."""
        items = self.worklist()
        for item in items:
            if item["status"] == "in_progress":
                return self.design.read(item["read_id"])
        for item in items:
            if item["status"] == "pending":
                return self.design.read(item["read_id"])
        return None

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> Optional[Dict]:
        """The open read's state (a live dict: do not modify)."""
        return self._state

    def open(self, read_id: Optional[str] = None) -> Dict:
        """Open (or resume) a read; by default :meth:`next_read`. Closes the read open before.
        Raises when the read's phase is still locked (washout) or nothing is left to read."""
        if read_id is None:
            read = self.next_read()
            if read is None:
                raise NeuroContrastError(f"reader {self.reader} has no read available (all submitted or the next "
                                         "phase is in its washout period)")
        else:
            try:
                read = self.design.read(read_id)
            except NeuroContrastError:
                raise NeuroContrastError(f"that read is not in the design of reader {self.reader}") from None
            if read.reader != self.reader:
                raise NeuroContrastError(f"read {self.design.blind_label(read.case)} belongs to another reader, "
                                         f"not {self.reader}")
        self.close_read()
        now = self.clock()
        path = self._path(read.read_id)
        if path.exists():
            self._state = self.reads().get(read.read_id)
        if self._state is not None:
            event = "resume_read" if self._state["status"] == "in_progress" else "view_submitted"
        else:
            unlock = self.design.phase_unlock_time(self.reader, read.phase, self.submitted_times())
            if unlock is None or now < unlock:
                when = "after the previous phase is finished" if unlock is None else \
                    time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unlock))
                raise NeuroContrastError(f"phase {read.phase} is locked for reader {self.reader} until {when} "
                                         f"(washout {self.design.washout_days:g} days)")
            self._state = {"read_id": read.read_id, "reader": read.reader, "phase": read.phase, "case": read.case,
                           "label": self.design.blind_label(read.case), "condition": read.condition,
                           "status": "in_progress", "lesions": [], "next_lesion": 1, "grade": None,
                           "comment": "", "exclude": False, "active_seconds": 0.0, "first_opened_at": now,
                           "opened_at": [], "submitted_at": None, "submissions": [], "reopened": []}
            event = "open"
        self._state["opened_at"].append(now)
        self._paused = False
        self._auto_paused = False
        self._last_tick = now
        self._last_activity = now
        if self._state["status"] == "in_progress":
            self._save()
        self._event(event)
        return self._state

    def close_read(self) -> None:
        """Account the time and close the open read (it stays in progress)."""
        if self._state is None:
            return
        self._account(self.clock())
        if self._state["status"] == "in_progress":
            self._save()
        self._event("close_read")
        self._state = None

    def close(self) -> None:
        """Close the open read and release the reader's lock."""
        try:
            self.close_read()
        finally:
            self.lock.release()

    def lesions(self) -> Dict[str, Lesion]:
        """``{lesion id: Lesion}`` of the open read."""
        state = self._require_open(editable=False)
        return {item["id"]: Lesion.from_dict(item) for item in state["lesions"]}

    def add_lesion(self, lesion: Lesion) -> str:
        """Store a new mark; returns its id ("L1", "L2"...). Raises if the read is submitted."""
        state = self._require_open()
        if not isinstance(lesion, Lesion):
            lesion = Lesion.from_dict(lesion)
        lesion_id = f"L{state['next_lesion']}"
        state["next_lesion"] += 1
        state["lesions"].append({"id": lesion_id, **lesion.to_dict()})
        self._change("lesion_added", lesion=lesion_id, long_mm=round(lesion.long_mm, 3))
        return lesion_id

    def move_lesion(self, lesion_id: str, lesion: Lesion) -> None:
        state = self._require_open()
        if not isinstance(lesion, Lesion):
            lesion = Lesion.from_dict(lesion)
        for i, item in enumerate(state["lesions"]):
            if item["id"] == lesion_id:
                state["lesions"][i] = {"id": lesion_id, **lesion.to_dict()}
                self._change("lesion_moved", lesion=lesion_id, long_mm=round(lesion.long_mm, 3))
                return
        raise NeuroContrastError(f"no lesion {lesion_id!r} in read {self._label()}")

    def delete_lesion(self, lesion_id: str) -> None:
        state = self._require_open()
        kept = [item for item in state["lesions"] if item["id"] != lesion_id]
        if len(kept) == len(state["lesions"]):
            raise NeuroContrastError(f"no lesion {lesion_id!r} in read {self._label()}")
        state["lesions"] = kept
        self._change("lesion_deleted", lesion=lesion_id)

    def set_grade(self, grade: int) -> None:
        """Likert grade in 1..points of the design's scale."""
        state = self._require_open()
        points = int(self.design.likert["points"])
        if isinstance(grade, bool) or not isinstance(grade, int) or not 1 <= grade <= points:
            raise NeuroContrastError(f"grade must be an integer in 1..{points}, got {grade!r}")
        state["grade"] = grade
        self._change("grade", grade=grade)

    def set_comment(self, text: str) -> None:
        state = self._require_open()
        state["comment"] = str(text)
        self._change("comment")

    def set_exclude(self, exclude: bool = True) -> None:
        """Flag the case as excluded (e.g. more than ``exclusion.max_lesions`` lesions)."""
        state = self._require_open()
        state["exclude"] = bool(exclude)
        self._change("exclude", exclude=bool(exclude))

    def pause(self) -> None:
        """Stop the active-time clock until :meth:`resume` (logged)."""
        self._require_open()
        if self._paused:
            return
        self._account(self.clock())
        self._paused = True
        self._save()
        self._event("pause", reason="user")

    def resume(self) -> None:
        self._require_open()
        if not self._paused:
            return
        self._paused = False
        now = self.clock()
        self._last_tick = now
        self._last_activity = now
        self._event("resume", reason="user")

    @property
    def paused(self) -> bool:
        return self._paused or self._auto_paused

    def activity(self) -> None:
        """Report user activity (mouse, keyboard) without a change: keeps the clock running."""
        if self._state is not None and self._state["status"] == "in_progress" and not self._paused:
            self._touch(self.clock())

    def heartbeat(self) -> float:
        """Account the running time and persist it (GUI timer). Returns the active seconds."""
        if self._state is None:
            return 0.0
        before = self._state["active_seconds"]
        self._account(self.clock())
        if self._state["status"] == "in_progress" and self._state["active_seconds"] != before:
            self._save()
        return self._state["active_seconds"]

    @property
    def active_seconds(self) -> float:
        if self._state is None:
            return 0.0
        if self._paused or self._auto_paused or self._state["status"] == "submitted":
            return self._state["active_seconds"]
        now = self.clock()
        end = min(now, self._last_activity + self.idle_timeout_s)
        return self._state["active_seconds"] + max(0.0, end - self._last_tick)

    def submit(self) -> Dict:
        """Finish the read: needs a Likert grade unless the case is excluded. Returns the final state."""
        state = self._require_open()
        if state["grade"] is None and not state["exclude"]:
            raise NeuroContrastError(f"read {self._label()}: give a Likert grade (or exclude the case) "
                                     "before submitting")
        now = self.clock()
        self._account(now)
        state["status"] = "submitted"
        state["submitted_at"] = now
        state["submissions"].append(now)
        self._save()
        self._event("submit", active_seconds=round(state["active_seconds"], 3), n_lesions=len(state["lesions"]))
        return state

    def reopen(self, read_id: str, reason: str) -> Dict:
        """Reopen a submitted read for editing; the reason and time are stored in the read and the log."""
        if not str(reason).strip():
            raise NeuroContrastError("reopening a submitted read needs a reason (it is logged)")
        state = self.open(read_id)
        if state["status"] != "submitted":
            raise NeuroContrastError(f"read {self._label()} is not submitted; nothing to reopen")
        now = self.clock()
        state["status"] = "in_progress"
        state["reopened"].append({"t": now, "reason": str(reason)})
        self._last_tick = now
        self._last_activity = now
        self._save()
        self._event("reopen", reason=str(reason))
        return state
