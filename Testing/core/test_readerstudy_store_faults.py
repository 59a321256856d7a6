"""Faults of the reading room: racing lock recovery, torn event log, a kill between saving and logging a
submit, leftover temp files, damaged read files, malformed study files."""

import json
import math
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.design import StudyDesign
from neurocontrast.readerstudy.session import ReaderSession, load_events, load_reads
from neurocontrast.readerstudy.storage import ReaderLock, append_jsonl, read_jsonl

from test_readerstudy_session import Clock, lesion, make

DEAD_PID = 2 ** 22 + 4321


def _contender(path, barrier, results, hold):
    barrier.wait()
    try:
        lock = ReaderLock(path).acquire()
    except NeuroContrastError:
        results.put("refused")
        hold.wait()
        return
    results.put("won")
    hold.wait()                                   # keep it until everyone has tried
    lock.release()


def test_racing_processes_on_a_stale_lock_get_it_exactly_once(tmp_path):
    ctx = mp.get_context("fork")
    path = tmp_path / ".lock"
    n_proc, trials = 5, 20        # the former PID-file protocol let two in on 3 of 20 such trials here
    for _ in range(trials):
        path.write_text(json.dumps({"pid": DEAD_PID, "host": os.uname().nodename, "since": 0}))  # stale
        barrier, hold, results = ctx.Barrier(n_proc), ctx.Barrier(n_proc), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(path, barrier, results, hold)) for _ in range(n_proc)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=30) for _ in range(n_proc)]
        for p in procs:
            p.join(timeout=30)
        assert outcomes.count("won") == 1, outcomes
        assert all(p.exitcode == 0 for p in procs)


def test_lock_held_by_a_killed_process_is_free(tmp_path):
    path = tmp_path / ".lock"
    code = ("import sys, time; from neurocontrast.readerstudy.storage import ReaderLock; "
            f"ReaderLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(NeuroContrastError, match=f"process {proc.pid}"):
            ReaderLock(path).acquire()
    finally:
        proc.kill()
        proc.wait()
    lock = ReaderLock(path).acquire()
    assert lock.recovered_from["pid"] == proc.pid
    lock.release()


def test_torn_log_tail_is_quarantined_and_appends_start_on_a_fresh_line(tmp_path):
    design = make(tmp_path)
    with ReaderSession(design, "R1", clock=Clock()) as session:
        session.open()
        session.set_grade(3)
    log_path = tmp_path / "reads" / "R1" / "events.jsonl"
    n_before = len(read_jsonl(log_path))
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write('{"event": "lesion_ad')                 # power loss mid-append
    with ReaderSession(design, "R1", clock=Clock()) as session:   # the next session appends
        session.open()
        session.add_lesion(lesion(0))
    events = read_jsonl(log_path)                         # the whole log stays readable
    assert len(events) > n_before + 2
    assert any(e["event"] == "log_repaired" for e in events)
    torn = list(log_path.parent.glob("events.jsonl.torn-*"))
    assert len(torn) == 1 and torn[0].read_text(encoding="utf-8") == '{"event": "lesion_ad'
    assert all(json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines())
    # append_jsonl on its own also never glues a record to a torn line
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    append_jsonl(other, {"c": 3})
    assert read_jsonl(other) == [{"a": 1}, {"c": 3}]


def test_submit_saved_but_not_logged_is_reconciled_on_open(tmp_path):
    design = make(tmp_path)
    clock = Clock()
    with ReaderSession(design, "R1", clock=clock) as session:
        session.open()
        session.set_grade(4)
        state = session.submit()
        read_id = state["read_id"]
    log_path = tmp_path / "reads" / "R1" / "events.jsonl"
    lines = log_path.read_text(encoding="utf-8").splitlines()
    kept = [l for l in lines if json.loads(l)["event"] not in ("submit", "close_read")]
    log_path.write_text("\n".join(kept) + "\n")           # the kill came after saving, before logging
    assert not any(e["event"] == "submit" for e in read_jsonl(log_path))
    for _ in range(2):                                    # reconciled once, not on every open
        with ReaderSession(design, "R1", clock=clock):
            pass
    submits = [e for e in load_events(design, "R1") if e["event"] == "submit"]
    assert len(submits) == 1 and submits[0]["read_id"] == read_id and submits[0]["reconciled"] is True
    assert submits[0]["t"] == state["submitted_at"]


def test_leftover_temp_files_are_removed(tmp_path):
    design = make(tmp_path)
    folder = tmp_path / "reads" / "R1"
    folder.mkdir(parents=True)
    dead = folder / f".R1__phase1__C00.json.tmp-{DEAD_PID}"
    dead.write_text('{"read_id": "R1__ph')
    live = folder / f".R1__phase1__C01.json.tmp-{os.getppid()}"   # a live process: left alone
    live.write_text("{}")
    with ReaderSession(design, "R1", clock=Clock()):
        pass
    assert not dead.exists() and live.exists()
    assert any(e["event"] == "temp_files_removed" for e in load_events(design, "R1"))


DAMAGE = {"empty": b"", "truncated": b'{"read_id": "R1__phase1__C00", "reader": "R1", "sta',
          "binary": bytes(range(256)), "empty object": b"{}", "a list": b"[1, 2]"}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_read_file_is_quarantined_and_everything_keeps_working(tmp_path, kind, capsys):
    from neurocontrast import cli

    design = make(tmp_path)
    with ReaderSession(design, "R1", clock=Clock()) as session:
        first = session.open()["read_id"]
        session.set_grade(2)
        session.submit()
        second = session.open()["read_id"]
        session.add_lesion(lesion(0))
    path = tmp_path / "reads" / "R1" / f"{second}.json"
    path.write_bytes(DAMAGE[kind])
    assert cli.main(["reader", "status", str(tmp_path)]) == 0             # status names the file
    out = capsys.readouterr().out
    assert f"{second}.json" in out and "quarantine" in out
    assert not path.exists()
    quarantined = list((tmp_path / "reads" / "R1" / "quarantine").glob(f"{second}.json.*"))
    assert {p.suffix for p in quarantined} >= {".txt"} and len(quarantined) == 2
    assert set(load_reads(design, "R1")) == {first}
    with ReaderSession(design, "R1", clock=Clock()) as session:            # the session keeps working
        state = session.open()
        assert state["read_id"] == second and state["lesions"] == []      # the damaged read starts over


def test_damaged_read_in_a_session_is_logged_without_naming_the_case(tmp_path, caplog):
    design = make(tmp_path)
    with ReaderSession(design, "R1", clock=Clock()) as session:
        read_id = session.open()["read_id"]
        session.add_lesion(lesion(0))
    (tmp_path / "reads" / "R1" / f"{read_id}.json").write_bytes(b"")
    with caplog.at_level("WARNING"), ReaderSession(design, "R1", clock=Clock()):
        pass
    case = read_id.split("__")[2]
    assert "quarantine" in caplog.text and case not in caplog.text
    audit = [e for e in load_events(design, "R1") if e["event"] == "read_quarantined"]
    assert audit and audit[0]["file"] == f"{read_id}.json" and audit[0]["reason"] == "empty file"


BAD_DESIGNS = [
    ({"idle_timeout_s": float("nan")}, "idle_timeout_s"),
    ({"idle_timeout_s": True}, "idle_timeout_s"),
    ({"idle_timeout_s": [120]}, "idle_timeout_s"),
    ({"washout_days": float("nan")}, "washout_days"),
    ({"washout_days": False}, "washout_days"),
    ({"analysis": [1, 2]}, "'analysis' must be an object"),
    ({"analysis": "hungarian"}, "'analysis' must be an object"),
    ({"analysis": {"size_strata_mm": [0, float("nan")]}}, "size_strata_mm"),
    ({"analysis": {"size_strata_mm": [True, 5]}}, "size_strata_mm"),
    ({"analysis": {"threshold": float("nan")}}, "threshold"),
    ({"analysis": {"threshold": [3]}}, "threshold"),
    ({"likert": [5]}, "'likert' must be an object"),
    ({"likert": {"points": True}}, "likert.points"),
    ({"exclusion": {"max_lesions": True}}, "max_lesions"),
    ({"exclusion": 20}, "'exclusion' must be an object"),
]


@pytest.mark.parametrize("change, message", BAD_DESIGNS)
def test_malformed_study_file_gives_a_one_line_error(tmp_path, change, message):
    data = json.loads((make(tmp_path).folder / "study.json").read_text(encoding="utf-8"))
    data.update(change)
    (tmp_path / "study.json").write_text(json.dumps(data))          # json writes NaN as NaN, which it reads back
    with pytest.raises(NeuroContrastError, match=message) as info:
        StudyDesign.load(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("companions", [["cases/C00/t1.nii.gz"], "cases/C00/t1.nii.gz", {"pre": 3}])
def test_companions_of_the_wrong_type_are_refused(tmp_path, companions):
    data = json.loads((make(tmp_path).folder / "study.json").read_text(encoding="utf-8"))
    data["cases"][0]["companions"] = companions
    (tmp_path / "study.json").write_text(json.dumps(data))
    with pytest.raises(NeuroContrastError, match="companion"):
        StudyDesign.load(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "neurocontrast", "reader", "status", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "companion" in proc.stderr


def test_nan_idle_timeout_for_a_session_is_refused(tmp_path):
    design = make(tmp_path)
    with pytest.raises(NeuroContrastError, match="idle_timeout_s"):
        ReaderSession(design, "R1", idle_timeout_s=math.nan)
    with ReaderSession(design, "R1", idle_timeout_s=30):   # the refused session did not keep the lock
        pass
