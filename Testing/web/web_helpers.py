"""Helpers of the web tests: simulated view events, the blinding check, a served app in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ras_to_display(view, ras) -> tuple:
    """Pixel (x, y) of a RAS point (mm) in a slice view (the inverse of the slice node's XYToRAS)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(view.get_view_node().GetXYToRAS())
    matrix.Invert()
    xy = matrix.MultiplyPoint(list(ras) + [1.0])
    return int(round(xy[0])), int(round(xy[1]))


def click(view, x: int, y: int) -> None:
    """A left click at pixel (x, y) through the view's interactor (as a browser click arrives)."""
    view.render()
    interactor = view.interactor()
    interactor.SetEventPosition(x, y)
    interactor.InvokeEvent("MouseMoveEvent")
    interactor.InvokeEvent("LeftButtonPressEvent")
    interactor.InvokeEvent("LeftButtonReleaseEvent")


def drag(view, start, end, steps: int = 5) -> None:
    """Press at ``start``, move to ``end`` in ``steps``, release (pixel coordinates)."""
    view.render()
    interactor = view.interactor()
    interactor.SetEventPosition(*start)
    interactor.InvokeEvent("MouseMoveEvent")
    interactor.InvokeEvent("LeftButtonPressEvent")
    for s in range(1, steps + 1):
        x = int(round(start[0] + (end[0] - start[0]) * s / steps))
        y = int(round(start[1] + (end[1] - start[1]) * s / steps))
        interactor.SetEventPosition(x, y)
        interactor.InvokeEvent("MouseMoveEvent")
    interactor.InvokeEvent("LeftButtonReleaseEvent")


def assert_blinded(payload, design) -> None:
    """No case id, condition, image key or file path of ``design`` anywhere in ``payload`` (JSON text)."""
    import json
    import re

    text = json.dumps(payload, default=str)
    words = set(design.case_ids) | set(design.conditions) | {"ref", "pre", ".nii", str(design.folder)}
    for word in words:
        assert not re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text), \
            f"{word!r} reached the page state"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port, log_path, timeout=90.0):
    """Start ``neurocontrast web ...`` in a subprocess; returns (process, printed link)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "NeuroContrast") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "neurocontrast", "web", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=log, env=env, cwd=str(REPO))
    line = proc.stdout.readline().decode()
    match = re.search(r"(http://\S+)", line)
    assert match, f"no link printed: {line!r}; log: {Path(log_path).read_text(encoding='utf-8')[-2000:]}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, Path(log_path).read_text(encoding="utf-8")[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, match.group(1)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("server did not start")


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shot(page, name):
    folder = os.environ.get("NEUROCONTRAST_WEB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def axial_box(page):
    """Bounding box of the first (axial) remote view image on the page."""
    views = page.locator("img, canvas").all()
    boxes = [v.bounding_box() for v in views if v.bounding_box() and v.bounding_box()["width"] > 200]
    boxes.sort(key=lambda b: (b["x"], b["y"]))
    return boxes[0]


def mark_lesion(page, dx=60):
    page.click("#mark-lesion")
    page.wait_for_selector("text=Click the two ends")
    box = axial_box(page)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(cx - dx / 2, cy)
    page.wait_for_timeout(400)
    page.mouse.click(cx + dx / 2, cy + 10)
