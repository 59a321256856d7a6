"""Crash-safe files: atomic JSON replacement, append-only JSON-lines logs, a per-reader PID lock.

- :func:`write_json_atomic`: temp file in the same folder → write → flush → fsync → ``os.replace`` →
  fsync of the folder. A reader of the path sees the old or the new content, never a torn file.
- :func:`append_jsonl` / :func:`read_jsonl`: one event per line, fsynced; a line torn by a crash at the
  very end of the log is skipped with a warning (every earlier line is intact).
- :class:`ReaderLock`: ``O_CREAT | O_EXCL`` lock file holding the owner's PID and host. A live owner on
  this host refuses a second writer; a lock whose PID is gone (crash, SIGKILL) is stale and recovered.
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


def append_jsonl(path, record: Dict) -> None:
    """Append one JSON record as a line and fsync (append-only event log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        if FSYNC:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path) -> List[Dict]:
    """All records of a JSON-lines log. A torn last line (crash mid-append) is skipped with a warning;
    a bad line elsewhere raises NeuroContrastError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number >= len(lines) - 1 and not path.read_text(encoding="utf-8").endswith("\n"):
                log.warning("%s: skipping a torn last line (interrupted write)", path)
                continue
            raise NeuroContrastError(f"{path}: line {number} is not valid JSON") from None
    return records


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


class ReaderLock:
    """Exclusive per-reader write lock (a file holding ``{"pid", "host", "since"}``).

    ``acquire()`` raises NeuroContrastError when a live process on this host holds it; a lock whose
    process is gone is logged and taken over. A lock from another host is honoured unless older than
    ``foreign_stale_s`` (default 12 h). ``release()`` removes the file only if this process owns it.
    """

    def __init__(self, path, foreign_stale_s: float = 12 * 3600):
        self.path = Path(path)
        self.foreign_stale_s = foreign_stale_s
        self.held = False
        self.recovered_from: Optional[Dict] = None

    def _owner(self) -> Optional[Dict]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"pid": -1, "host": socket.gethostname(), "since": 0}  # torn lock file: stale

    def acquire(self) -> "ReaderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(str(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue
                same_host = owner.get("host") == socket.gethostname()
                pid = int(owner.get("pid", -1))
                if same_host and pid == os.getpid():
                    raise NeuroContrastError(f"{self.path.parent.name}: this process already holds the lock")
                alive = _pid_alive(pid) if same_host else (time.time() - float(owner.get("since", 0))
                                                           < self.foreign_stale_s)
                if alive:
                    raise NeuroContrastError(
                        f"reader folder {self.path.parent} is already open for writing by process {pid} on "
                        f"{owner.get('host')}; close the other session first")
                log.warning("recovering a stale lock %s left by process %s", self.path, pid)
                self.recovered_from = owner
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            self.held = True
            return self
        raise NeuroContrastError(f"could not acquire the lock {self.path}")  # pragma: no cover

    def release(self) -> None:
        if not self.held:
            return
        owner = self._owner()
        if owner and int(owner.get("pid", -1)) == os.getpid():
            try:
                os.remove(self.path)
            except FileNotFoundError:  # pragma: no cover
                pass
        self.held = False
