"""Reading sessions: atomic storage, event log, lock, resume, active time, submit/reopen, crash safety."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy import Lesion
from neurocontrast.readerstudy.design import StudyDesign, crossover_design
from neurocontrast.readerstudy.session import ReaderSession, load_events, load_reads
from neurocontrast.readerstudy.storage import read_jsonl


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(folder, n_cases=4, **options):
    cases = [f"C{i:02d}" for i in range(n_cases)]
    images = {c: {"low": f"{c}_a.nii.gz", "vir": f"{c}_b.nii.gz", "ref": f"{c}_c.nii.gz"} for c in cases}
    data = crossover_design(cases, ["R1", "R2"], ["low", "vir"], images,
                            reference={"reader": "R1", "condition": "ref"}, seed=3, **options)
    design = StudyDesign.from_dict(data, folder)
    design.save()
    return design


def lesion(x, long=10.0, short=6.0):
    return Lesion(long_axis=((x - long / 2, 0, 0), (x + long / 2, 0, 0)), short_axis=((x, -short / 2, 0), (x, short / 2, 0)))


def test_read_lifecycle_resume_and_log(tmp_path):
    design = make(tmp_path)
    clock = Clock()
    session = ReaderSession(design, "R2", clock=clock)
    state = session.open()
    first = state["read_id"]
    assert first == design.worklist("R2", "phase1")[0].read_id
    lid = session.add_lesion(lesion(0))
    session.add_lesion(lesion(30))
    session.move_lesion(lid, lesion(1))
    session.delete_lesion("L2")
    session.set_grade(4)
    clock.t += 30
    session.set_comment("ok")
    session.close()
    # a fresh session resumes the read in progress
    session = ReaderSession(design, "R2", clock=clock)
    assert session.next_read().read_id == first
    state = session.open()
    assert state["read_id"] == first and state["grade"] == 4
    assert [l["id"] for l in state["lesions"]] == ["L1"]
    assert session.lesions()["L1"].center[0] == pytest.approx(1)
    session.submit()
    with pytest.raises(NeuroContrastError, match="submitted"):
        session.add_lesion(lesion(5))
    with pytest.raises(NeuroContrastError, match="reason"):
        session.reopen(first, " ")
    session.reopen(first, "forgot a lesion")
    session.add_lesion(lesion(50))
    session.submit()
    session.close()
    events = [e["event"] for e in load_events(design, "R2")]
    for name in ("open", "lesion_added", "lesion_moved", "lesion_deleted", "grade", "comment", "resume_read",
                 "submit", "reopen"):
        assert name in events, name
    stored = load_reads(design, "R2")[first]
    assert stored["status"] == "submitted" and len(stored["reopened"]) == 1 and len(stored["submissions"]) == 2
    assert stored["active_seconds"] == pytest.approx(30.0)


def test_submit_needs_grade_or_exclusion_and_valid_grade(tmp_path):
    design = make(tmp_path, likert={"points": 4, "anchors": {"1": "poor", "4": "excellent"}})
    with ReaderSession(design, "R1", clock=Clock()) as session:
        session.open()
        with pytest.raises(NeuroContrastError, match="Likert"):
            session.submit()
        with pytest.raises(NeuroContrastError, match="1..4"):
            session.set_grade(5)
        session.set_exclude(True)
        assert session.submit()["exclude"] is True


def test_active_time_pause_and_idle_auto_pause(tmp_path):
    design = make(tmp_path)
    clock = Clock()
    session = ReaderSession(design, "R1", clock=clock, idle_timeout_s=60)
    session.open()
    clock.t += 20
    session.add_lesion(lesion(0))                 # 20 s active
    session.pause()
    clock.t += 500                                # paused: not counted
    session.resume()
    clock.t += 10
    session.activity()                            # 30 s
    clock.t += 1000                               # idle: only 60 s count, then auto-pause
    assert session.heartbeat() == pytest.approx(90)
    assert session.paused
    clock.t += 5
    session.set_grade(3)                          # activity resumes the clock at this moment
    clock.t += 10
    assert session.active_seconds == pytest.approx(100)
    session.submit()
    assert session.state["active_seconds"] == pytest.approx(100)
    session.close()
    kinds = [(e["event"], e.get("reason")) for e in load_events(design, "R1")]
    assert ("pause", "idle") in kinds and ("resume", "activity") in kinds and ("pause", "user") in kinds


def test_washout_locks_next_phase(tmp_path):
    design = make(tmp_path, n_cases=2, washout_days=14)
    clock = Clock()
    with ReaderSession(design, "R2", clock=clock) as session:
        for _ in range(2):
            session.open()
            session.set_grade(3)
            session.submit()
        assert session.next_read() is None
        assert {w["status"] for w in session.worklist() if w["phase"] == "phase2"} == {"locked"}
        with pytest.raises(NeuroContrastError, match="locked"):
            session.open(design.worklist("R2", "phase2")[0].read_id)
        clock.t += 14 * 86400 + 1
        assert session.next_read().phase == "phase2"


def test_second_writer_refused_and_stale_lock_recovered(tmp_path):
    design = make(tmp_path)
    first = ReaderSession(design, "R2", clock=Clock())
    with pytest.raises(NeuroContrastError, match="already holds the lock"):
        ReaderSession(design, "R2", clock=Clock())      # flock conflicts between open files, also in-process
    first.close()
    # a record left by a process that did not close (killed): the lock is free and taken over, with an event
    (tmp_path / "reads" / "R2" / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename,
                                                                 "since": 0}))
    with ReaderSession(design, "R2", clock=Clock()):
        pass
    assert any(e["event"] == "lock_recovered" for e in load_events(design, "R2"))
    assert (tmp_path / "reads" / "R2" / ".lock").read_text(encoding="utf-8") == ""   # released: emptied, never removed


WRITER = textwrap.dedent("""
    import sys
    from neurocontrast.readerstudy import Lesion
    from neurocontrast.readerstudy.design import StudyDesign
    from neurocontrast.readerstudy.session import ReaderSession
    design = StudyDesign.load(sys.argv[1])
    session = ReaderSession(design, "R1")
    print("locked", flush=True)
    n = 0
    while True:
        state = session.open()
        for i in range(3):
            x = float(n)
            session.add_lesion(Lesion(long_axis=((x, 0, 0), (x + 8, 0, 0)), short_axis=((x + 4, -2, 0), (x + 4, 2, 0))))
            n += 1
            print("done", state["read_id"], n, flush=True)
        session.set_grade(3)
        session.submit()
        print("submitted", state["read_id"], flush=True)
""")


def test_sigkill_mid_writing_loses_no_completed_change(tmp_path):
    design = make(tmp_path, n_cases=40)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acknowledged, submitted = {}, set()
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(NeuroContrastError, match="already open"):
            ReaderSession(design, "R1")                   # second writer refused while the first lives
        deadline = time.time() + 20
        while time.time() < deadline:
            words = proc.stdout.readline().split()
            if words and words[0] == "done":
                acknowledged[words[1]] = acknowledged.get(words[1], 0) + 1
            elif words and words[0] == "submitted":
                submitted.add(words[1])
            if sum(acknowledged.values()) >= 25:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)                 # mid-write of the next change
        proc.wait()
    assert sum(acknowledged.values()) >= 25
    reads = load_reads(design, "R1")                      # every file parses
    for read_id, count in acknowledged.items():
        assert len(reads[read_id]["lesions"]) >= count
    for read_id in submitted:
        assert reads[read_id]["status"] == "submitted"
    events = read_jsonl(tmp_path / "reads" / "R1" / "events.jsonl")
    assert sum(e["event"] == "lesion_added" for e in events) >= 25
    # a temp file torn by the kill (if any) is never taken for a read
    assert all(name.endswith(".json") and ".tmp-" not in name
               for name in (f"{rid}.json" for rid in reads)) and set(reads) >= set(acknowledged)
    # the stale lock of the killed writer is recovered and the read in progress resumes
    with ReaderSession(design, "R1") as session:
        state = session.open()
        last = max(acknowledged, key=lambda r: reads[r]["first_opened_at"])
        if last not in submitted:
            assert state["read_id"] == last
            assert len(state["lesions"]) >= acknowledged[last]


def test_torn_last_log_line_is_skipped_but_inner_damage_is_reported(tmp_path):
    from neurocontrast.readerstudy.storage import append_jsonl, write_json_atomic, read_json
    log_path = tmp_path / "events.jsonl"
    append_jsonl(log_path, {"event": "open"})
    append_jsonl(log_path, {"event": "grade"})
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "subm')                     # a crash in the middle of an append
    assert [e["event"] for e in read_jsonl(log_path)] == ["open", "grade"]
    log_path.write_text('{"event": "open"}\n{broken\n{"event": "grade"}\n', encoding="utf-8")
    with pytest.raises(NeuroContrastError, match="line 2"):
        read_jsonl(log_path)
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
