"""Crash-safe files: atomic JSON replacement, append-only JSON-lines logs, a per-reader PID lock.

- :func:`write_json_atomic`: temp file in the same folder → write → flush → fsync → ``os.replace`` →
  fsync of the folder. A reader of the path sees the old or the new content, never a torn file.
- :func:`append_jsonl` / :func:`read_jsonl`: one event per line, fsynced; a line torn by a crash at the
  very end of the log is skipped by readers and quarantined by the next append, which starts on a fresh line.
- :class:`ReaderLock`: an OS lock (``fcntl.flock``) on an open lock file holding the owner's PID and host;
  the kernel drops it when the owner dies, so exactly one of several racing processes gets it.
- :func:`repair_jsonl_tail`, :func:`clean_temp_files`, :func:`quarantine_file`: recovery after a crash
  (torn log tail, leftover temporary files, damaged read files).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Dict, List, Optional

from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)

#: fsync after every write (the durability guarantee). Tests of the analysis, which simulate hundreds of
#: reads, may set it to False; the crash-safety test keeps it True.
FSYNC = True


def _fsync_dir(folder: Path) -> None:
    if not FSYNC:
        return
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_json_atomic(path, data) -> None:
    """Replace ``path`` with ``json.dumps(data)`` atomically and durably (temp + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        if FSYNC:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path) -> Dict:
    """Parse a JSON file; a clear NeuroContrastError names the file when it is not valid JSON."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise NeuroContrastError(f"{path} is not valid JSON: {exc}") from None


def _torn_tail(path: Path) -> Optional[int]:
    """Offset just after the last newline when the file does not end with one (a torn last line), else None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return None
        block = 4096
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                return start + nl + 1
            pos = start
    return 0


def repair_jsonl_tail(path) -> Optional[Path]:
    """Move a torn last line (no final newline: a crash or power loss mid-append) of a JSON-lines log to
    ``<log>.torn-<unix ms>`` next to it and truncate the log after its last complete line.

    Returns the quarantine file, or None when the log was intact. Call it only while holding the writer's
    lock (the reader session does, on open and before each append)."""
    path = Path(path)
    offset = _torn_tail(path)
    if offset is None:
        return None
    with open(path, "rb") as handle:
        handle.seek(offset)
        torn = handle.read()
    quarantine = path.with_name(f"{path.name}.torn-{int(time.time() * 1000)}")
    quarantine.write_bytes(torn)
    with open(path, "r+b") as handle:
        handle.truncate(offset)
        handle.flush()
        if FSYNC:
            os.fsync(handle.fileno())
    log.warning("%s: a torn last line (%d bytes, interrupted write) was moved to %s", path.name, len(torn),
                quarantine.name)
    return quarantine


def append_jsonl(path, record: Dict) -> None:
    """Append one JSON record as a line and fsync (append-only event log). A torn last line left by an
    earlier crash is quarantined first (:func:`repair_jsonl_tail`), so every append starts on a fresh line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl_tail(path)
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        if FSYNC:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path) -> List[Dict]:
    """All records of a JSON-lines log. A torn last line (crash mid-append, no final newline) is skipped
    with a warning; a bad complete line raises NeuroContrastError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    torn_last = not raw.endswith(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if torn_last and number == len(lines):
                log.warning("%s: skipping a torn last line (interrupted write)", path.name)
                continue
            # folder/name only: the study path must not reach a reader's dialog
            raise NeuroContrastError(f"{path.parent.name}/{path.name}: line {number} is not valid JSON (a damaged "
                                     "event log; the study administrator must repair it)") from None
    return records


def clean_temp_files(folder) -> List[Path]:
    """Remove ``.<name>.tmp-<PID>`` files of :func:`write_json_atomic` left by processes that are gone
    (a crash between writing and renaming). Returns the removed paths."""
    removed = []
    for path in Path(folder).glob(".*.tmp-*"):
        pid_text = path.name.rsplit(".tmp-", 1)[-1]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # pragma: no cover - removed by someone else
            continue
        removed.append(path)
    if removed:
        log.info("removed %d leftover temporary file(s) in %s", len(removed), Path(folder).name)
    return removed


def quarantine_file(path, reason: str, folder_name: str = "quarantine") -> Path:
    """Move a damaged file to ``<its folder>/quarantine/<name>.<unix ms>`` with a ``.reason.txt`` beside it.
    Returns the new path."""
    path = Path(path)
    target_dir = path.parent / folder_name
    target_dir.mkdir(exist_ok=True)
    target = target_dir / f"{path.name}.{int(time.time() * 1000)}"
    os.replace(path, target)
    target.with_name(target.name + ".reason.txt").write_text(f"{path.name}: {reason}\n", encoding="utf-8")
    _fsync_dir(path.parent)
    return target


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists but belongs to someone else
        return True
    except OSError:  # pragma: no cover
        return False
    return True


def _lock_fd(fd: int) -> None:
    """Non-blocking exclusive OS lock on an open file: ``fcntl.flock`` (POSIX) or ``msvcrt.locking`` of the
    first byte (Windows). Raises OSError when another open file holds it."""
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_fd(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


class ReaderLock:
    """Exclusive per-reader write lock: an OS lock (``fcntl.flock``; ``msvcrt.locking`` on Windows, not
    tested here) on an open lock file.

    The kernel releases the lock when its holder exits, however it ends (SIGKILL included), so there is no
    stale-lock recovery to race on: of several processes calling ``acquire()`` at once exactly one wins. The
    file also holds the owner's ``{"pid", "host", "since"}`` for the error message; a previous owner's
    record found by a new holder (it did not release: crash, kill) is kept in ``recovered_from``. The file
    is never removed (removing it would let a second process lock a new file while a first still holds the
    old one); ``release()`` empties it and unlocks. Raises NeuroContrastError when another process holds it.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.held = False
        self.recovered_from: Optional[Dict] = None
        self._fd: Optional[int] = None

    def _owner_text(self, fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return os.read(fd, 4096).decode("utf-8", "replace")
        except OSError:  # pragma: no cover - Windows: the holder's locked byte cannot be read
            return ""

    def acquire(self) -> "ReaderLock":
        if self.held:
            raise NeuroContrastError(f"{self.path.parent.name}: this session already holds the lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
        except OSError:
            try:
                owner = json.loads(self._owner_text(fd) or "{}")
            except json.JSONDecodeError:
                owner = {}
            os.close(fd)
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                raise NeuroContrastError(f"{self.path.parent.name}: this process already holds the lock (another "
                                         "session of this reader is open here)") from None
            raise NeuroContrastError(
                f"reader folder {self.path.parent.name} is already open for writing by process "
                f"{owner.get('pid', '?')} on {owner.get('host', '?')}; close the other session first") from None
        previous = self._owner_text(fd).strip()
        if previous:
            try:
                self.recovered_from = json.loads(previous)
            except json.JSONDecodeError:
                self.recovered_from = {"pid": -1}
            log.warning("taking over the lock of %s left by process %s (it did not close its session)",
                        self.path.parent.name, self.recovered_from.get("pid"))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        if FSYNC:
            os.fsync(fd)
        self._fd = fd
        self.held = True
        return self

    def release(self) -> None:
        if not self.held or self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            _unlock_fd(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
            self.held = False
