"""The background-command runner shared by VirtualGadolinium and PerfusionNet's networks (real subprocesses)."""

from __future__ import annotations

import sys
import time

from NeuroContrastLib.runner import CommandRunner, command_environment, neurocontrast_command


def test_cancel_terminates_a_running_command_and_says_so():
    runner = CommandRunner([sys.executable, "-c", "import time; print('PROGRESS 0.1 slab 1/10', flush=True); "
                                                  "time.sleep(120)"])
    deadline = time.monotonic() + 30
    while runner.poll()["fraction"] < 0.1 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = runner.poll()
    assert status["running"] and status["message"] == "slab 1/10"
    started = time.monotonic()
    runner.cancel()
    final = runner.wait(timeout=10)
    assert time.monotonic() - started < 10 and not final["running"]
    assert final["returncode"] != 0 and final["error"] == "cancelled"


def test_the_command_runs_this_package():
    env = command_environment({"PATH": "", "PYTHONPATH": ""})
    runner = CommandRunner(neurocontrast_command("--help"), env=env)
    final = runner.wait(timeout=120)
    assert final["returncode"] == 0 and "perfusion" in final["output"]
