"""Run a ``neurocontrast`` command in a background process and follow it without blocking Slicer (no Qt).

The TotalSegmentator / MONAIAuto3DSeg pattern: the module exports its inputs to files, starts
``PythonSlicer -m neurocontrast ... --progress-lines`` and polls it from a timer, so the GUI stays responsive,
a crash of the network cannot take Slicer down, and Cancel terminates the process. VirtualGadolinium and
PerfusionNet's networks (ST-Net, the Tmax net) both use it.

:class:`Runner` is the seam: a logic takes a ``runner_factory(command, env) -> Runner`` so that tests (or a
remote executor) can replace the subprocess; :class:`CommandRunner` is the real one.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol


class Runner(Protocol):
    """What a logic needs from a running command."""

    def poll(self) -> Dict:
        """Never blocks: ``{"running", "returncode", "fraction", "message", "error", "output"}``."""

    def wait(self, timeout: Optional[float] = None) -> Dict:
        """Block until the command ends (or ``timeout`` s); returns the final :meth:`poll` status."""

    def cancel(self) -> None:
        """Terminate the command (no-op when it has ended)."""


RunnerFactory = Callable[[List[str], Dict[str, str]], Runner]


class CommandRunner:
    """Run a command in a subprocess and collect its ``PROGRESS <fraction> <message>`` lines on a thread.

    ``poll()`` never blocks: it returns ``{"running", "returncode", "fraction", "message", "error", "output"}``.
    The error is the command's last line containing "error" (else its last line, else the exit code).
    """

    def __init__(self, command: List[str], env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None):
        self.command = list(command)
        self._lines: "queue.Queue[str]" = queue.Queue()
        self.output: List[str] = []
        self.fraction, self.message = 0.0, "starting"
        self.cancelled = False
        creation = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        # the child writes UTF-8 (ΔR2*, λ, mL/100 g) and we read UTF-8, whatever the locale of either process: a
        # locale codec (ASCII under LC_ALL=C) would kill the reader thread at the first such character
        env = dict(os.environ if env is None else env, PYTHONIOENCODING="utf-8")
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd,
                                        creationflags=creation)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self.process.stdout.close()

    def poll(self) -> Dict:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line.startswith("PROGRESS "):
                parts = line.split(" ", 2)
                try:
                    self.fraction = float(parts[1])
                except ValueError:
                    pass
                self.message = parts[2] if len(parts) > 2 else ""
            else:
                self.output.append(line)
        code = self.process.poll()
        if code is not None and self._thread.is_alive():
            self._thread.join(timeout=1.0)
            return self.poll() if self._lines.qsize() else self._status(code)
        return self._status(code)

    def _status(self, code) -> Dict:
        error = ""
        if code not in (None, 0):
            lines = [line for line in self.output if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            error = "cancelled" if self.cancelled else (errors or lines or [f"exit code {code}"])[-1].strip()
        return {"running": code is None, "returncode": code, "fraction": self.fraction, "message": self.message,
                "error": error, "output": "\n".join(self.output)}

    def wait(self, timeout: Optional[float] = None) -> Dict:
        self.process.wait(timeout=timeout)
        self._thread.join(timeout=5.0)
        return self.poll()

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.cancelled = True
            self.process.terminate()


def start_command(command: List[str], env: Dict[str, str]) -> CommandRunner:
    """The default :data:`RunnerFactory`."""
    return CommandRunner(command, env=env)


IDLE_STATUS = {"running": False, "returncode": None, "fraction": 0.0, "message": "idle", "error": "", "output": ""}


def python_executable() -> str:
    """The Python that runs the command: ``NEUROCONTRAST_PYTHON``, else Slicer's ``PythonSlicer``, else this one."""
    override = os.environ.get("NEUROCONTRAST_PYTHON")
    if override:
        return override
    slicer_python = shutil.which("PythonSlicer")
    return slicer_python or sys.executable


def neurocontrast_command(*arguments: str) -> List[str]:
    """``[python, "-m", "neurocontrast", *arguments]``."""
    return [python_executable(), "-m", "neurocontrast", *arguments]


def command_environment(environ: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of the command: ``environ`` (default ``os.environ``) with the folder that holds the
    ``neurocontrast`` package first on ``PYTHONPATH``. Inside Slicer the package is importable only because its
    module folder is on Slicer's ``sys.path``; a ``PythonSlicer -m neurocontrast`` subprocess does not inherit that."""
    import neurocontrast

    env = dict(os.environ if environ is None else environ)
    package_parent = str(Path(neurocontrast.__file__).resolve().parents[1])
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e and e != package_parent]
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + entries)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
