"""Blinding of every reader-facing message of a reading session: errors raised to the reader and log lines
name reads by their blinded label, never by case id, condition, read id or path (details: the audit log)."""

import json
import re

import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.session import ReaderSession

from test_readerstudy_session import Clock, lesion, make


def forbidden(design):
    """Case ids, conditions, read ids, image file names and the study folder."""
    words = set(design.case_ids) | set(design.conditions) | {design.reference["condition"]}
    for reader in design.readers:
        words |= {r.read_id for r in design.worklist(reader)}
    for case in design.data["cases"]:
        words |= {rel.split("/")[-1] for rel in case["images"].values()}
    return sorted(words) + [str(design.folder)]


def leaks(text, words):
    return [w for w in words if re.search(rf"(?<![A-Za-z0-9]){re.escape(w)}(?![A-Za-z0-9])", text)]


def test_every_session_message_is_blinded(tmp_path, caplog):
    design = make(tmp_path, n_cases=3)
    clock = Clock()
    messages = []

    def expect_error(fn, *args):
        with pytest.raises(NeuroContrastError) as info:
            fn(*args)
        messages.append(str(info.value))
        return str(info.value)

    with caplog.at_level("DEBUG"):
        session = ReaderSession(design, "R1", clock=clock)
        expect_error(ReaderSession, design, "R1")                           # second writer (same process)
        expect_error(session.set_grade, 3)                                  # nothing open
        state = session.open()
        label = state["label"]
        assert expect_error(session.submit).startswith(f"read {label}: give a Likert grade")
        expect_error(session.set_grade, 9)
        expect_error(session.move_lesion, "L7", lesion(0))
        expect_error(session.delete_lesion, "L7")
        expect_error(session.add_lesion, {"long_axis": [[0, 0, 0], [0, 0, 0]], "short_axis": [[0, 0, 0], [0, 0, 1]]})
        expect_error(session.reopen, state["read_id"], "typo")               # not submitted
        session.set_grade(4)
        session.submit()
        assert label in expect_error(session.add_lesion, lesion(0))         # submitted
        expect_error(session.reopen, state["read_id"], " ")                  # no reason
        other = design.worklist("R2", "phase1")[0].read_id
        expect_error(session.open, other)                                   # another reader's read
        expect_error(session.open, "R1__phase1__NOPE")                      # unknown read
        expect_error(session.open, design.worklist("R1", "phase2")[0].read_id)   # washout lock
        for read in design.worklist("R1", "phase1"):
            if read.read_id != state["read_id"]:
                session.open(read.read_id)
                session.set_exclude(True)
                session.submit()
        session.close()
        # crash leftovers: torn log tail, temp file, damaged read file, submit missing from the log
        folder = tmp_path / "reads" / "R1"
        with open(folder / "events.jsonl", "a") as handle:
            handle.write('{"event": "gr')
        (folder / f".{state['read_id']}.json.tmp-{2 ** 22 + 99}").write_text("{")
        damaged = design.worklist("R1", "phase1")[1].read_id
        (folder / f"{damaged}.json").write_bytes(b"\x00\x01")
        session = ReaderSession(design, "R1", clock=clock)
        assert session.open()["read_id"] == damaged                        # the damaged read starts over
        session.set_exclude(True)
        session.submit()
        expect_error(session.open)                                          # nothing available (washout)
        session.close()
    words = forbidden(design)
    for message in messages:
        assert not leaks(message, words), message
        assert "\n" not in message
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    assert "quarantine" in log_text and "torn" in log_text
    assert not leaks(log_text, words), leaks(log_text, words)
    # the details are in the audit log
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(e["event"] == "read_quarantined" and e["file"] == f"{damaged}.json" for e in events)
