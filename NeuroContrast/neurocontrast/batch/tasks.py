"""The Dask task of a batch: run one case's single-case command into a temporary folder, then move it into place.

Layout of a batch output folder ``DIR``::

    DIR/<case_id>/            exactly what the single-case command writes (moved here only when complete)
    DIR/summary.csv, DIR/summary.html
    DIR/_batch/state/<case_id>.json   inputs' sha256, options, outputs with sizes, key numbers, seconds
    DIR/_batch/logs/<case_id>.log     the command's stdout and stderr
    DIR/_batch/tmp/                   cases in progress (removed when a case ends and when the batch ends)
    DIR/_batch/thumbs/<case_id>.png   summary thumbnails

A case is *complete* when its state file exists, records status ``ok`` and every output it lists exists with
the recorded size. The state file is written after the case folder has been moved into place, so a worker
or batch killed at any moment leaves either a complete case or one that the next ``--resume`` recomputes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
import uuid
from typing import Dict, List, Optional

from neurocontrast import __version__

STATE_DIR = "_batch"


def batch_path(out_dir: str, *parts: str) -> str:
    """``out_dir/_batch/<parts...>``."""
    return os.path.join(out_dir, STATE_DIR, *parts)


def sha256_of(path: str) -> str:
    """sha256 of a file, or of a folder (sorted relative paths and the sha256 of each file, e.g. DICOM)."""
    if os.path.isdir(path):
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode() + b"\0" + sha256_of(full).encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def options_fingerprint(argv: List[str], inputs: Dict[str, str]) -> str:
    """sha256 of the case's argv with input paths replaced by their column names, and the package version:
    the same options on moved input files give the same fingerprint."""
    by_path = {p: f"<{c}>" for c, p in inputs.items()}
    text = json.dumps({"argv": [by_path.get(a, a) for a in argv], "version": __version__})
    return hashlib.sha256(text.encode()).hexdigest()


def read_state(out_dir: str, case_id: str) -> Optional[Dict]:
    path = batch_path(out_dir, "state", f"{case_id}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def is_complete(out_dir: str, case_id: str, state: Optional[Dict]) -> bool:
    """True if ``state`` says ok and every recorded output exists with its recorded size."""
    if not state or state.get("status") != "ok":
        return False
    case_dir = os.path.join(out_dir, case_id)
    for rel, size in state.get("outputs", {}).items():
        path = os.path.join(case_dir, rel)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return False
    return bool(state.get("outputs"))


def _write_json_atomic(path: str, data: Dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def _one_line(text: str) -> str:
    """The reason of a failed command: its ``error:`` line, else the last non-empty stderr line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error:" in ln:
            return ln.split("error:", 1)[1].strip()[:300]
    return (lines[-1] if lines else "the command failed without a message")[:300]


def run_case(job_name: str, case_id: str, argv: List[str], inputs: Dict[str, str], out_dir: str,
             resume: bool) -> Dict:
    """Run one case (executed on a Dask worker). Never raises for a failing case.

    Returns ``{"case_id", "status": "ok" | "failed" | "skipped", "reason", "seconds", "numbers"}``. With
    ``resume``, a complete case whose inputs' sha256 and options fingerprint match its state is skipped.
    The command runs through :func:`neurocontrast.cli.main` with ``--out`` in ``DIR/_batch/tmp``; on exit
    code 0 the folder replaces ``DIR/<case_id>`` (``os.replace``, atomic on one file system) and the state
    file is written.
    """
    from neurocontrast.batch.manifest import JOBS
    from neurocontrast.batch.summary import key_numbers

    job = JOBS[job_name]
    t0 = time.perf_counter()
    try:
        hashes = {col: sha256_of(path) for col, path in inputs.items()}
    except OSError as exc:
        return _failed(case_id, f"cannot read input: {exc}", t0)
    fingerprint = options_fingerprint(argv, inputs)
    old = read_state(out_dir, case_id)
    if resume and is_complete(out_dir, case_id, old) and old.get("inputs_sha256") == hashes \
            and old.get("options_sha256") == fingerprint:
        return {"case_id": case_id, "status": "skipped", "reason": "complete, inputs and options unchanged",
                "seconds": old.get("seconds"), "numbers": old.get("numbers", {})}
    tmp = batch_path(out_dir, "tmp", f"{case_id}.{uuid.uuid4().hex[:8]}")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    log = io.StringIO()
    try:
        code = _run_command(argv + ["--out", tmp], log)
        _write_log(out_dir, case_id, argv, log.getvalue())
        if code != 0:
            return _failed(case_id, _one_line(log.getvalue()), t0)
        if not os.path.isdir(tmp) or not os.listdir(tmp):
            return _failed(case_id, "the command wrote no output", t0)
        outputs = {os.path.relpath(os.path.join(r, f), tmp): os.path.getsize(os.path.join(r, f))
                   for r, _, files in os.walk(tmp) for f in files}
        numbers = key_numbers(job, tmp)
        final = os.path.join(out_dir, case_id)
        _replace_dir(tmp, final, out_dir)
        seconds = round(time.perf_counter() - t0, 2)
        _write_json_atomic(batch_path(out_dir, "state", f"{case_id}.json"),
                           {"case_id": case_id, "status": "ok", "job": job_name, "argv": argv,
                            "inputs": inputs, "inputs_sha256": hashes, "options_sha256": fingerprint,
                            "outputs": outputs, "numbers": numbers, "seconds": seconds,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return {"case_id": case_id, "status": "ok", "reason": "", "seconds": seconds, "numbers": numbers}
    except Exception as exc:  # a crash of the command's code is this case's failure, not the batch's
        _write_log(out_dir, case_id, argv, log.getvalue() + f"\n{type(exc).__name__}: {exc}\n")
        return _failed(case_id, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_command(argv: List[str], log: io.StringIO) -> int:
    """``neurocontrast.cli.main(argv)`` with stdout, stderr and log records going to ``log``."""
    import logging

    from neurocontrast.cli import main

    handler = logging.StreamHandler(log)  # present, so main's basicConfig adds no handler bound to this case
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                return main(argv)
            except SystemExit as exc:  # argparse: bad option value in the manifest or the shared options
                return int(exc.code) if isinstance(exc.code, int) else 2
    finally:
        root.removeHandler(handler)


def _replace_dir(tmp: str, final: str, out_dir: str) -> None:
    """Move ``tmp`` to ``final``; an older ``final`` (recomputed case) is moved aside first, then deleted."""
    if os.path.exists(final):
        old = batch_path(out_dir, "tmp", f"old.{os.path.basename(final)}.{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        state = batch_path(out_dir, "state", f"{os.path.basename(final)}.json")
        if os.path.exists(state):
            os.remove(state)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _write_log(out_dir: str, case_id: str, argv: List[str], text: str) -> None:
    path = batch_path(out_dir, "logs", f"{case_id}.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("neurocontrast " + " ".join(argv) + " --out <case folder>\n" + text)


def _failed(case_id: str, reason: str, t0: float) -> Dict:
    return {"case_id": case_id, "status": "failed", "reason": reason or "failed",
            "seconds": round(time.perf_counter() - t0, 2), "numbers": {}}
