"""Fixtures for the browser apps (extra ``[web]``: trame-slicer, and for the end-to-end tests Playwright
with Debian's ``chromium``).

``NEUROCONTRAST_WEB_TESTS`` chooses what happens here:

- unset (a developer's run): without the extra every test here skips with the reason; under ``CI=true``
  a missing extra FAILS (like the ``shared_data`` fixture);
- ``off``: this folder is not collected (``.ci/run``'s main run, which installs the default extras only;
  ``.ci/run`` then runs this folder again in a venv with ``[web]``);
- ``require``: a missing extra, Playwright or Chromium fails, also outside CI (``.ci/run``'s web run).

Offscreen rendering uses EGL (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, set here if unset).
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

MODE = os.environ.get("NEUROCONTRAST_WEB_TESTS", "").lower()
if MODE == "off":
    collect_ignore_glob = ["test_*.py"]

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(what: str, hint: str) -> None:
    message = f"{what} is not installed ({hint})"
    if MODE == "require" or _in_ci():
        pytest.fail(message + "; this run requires it")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _web_extra():
    if importlib.util.find_spec("trame_slicer") is None:
        _missing("the [web] extra (trame-slicer)", 'pip install -e ".[web]"')


@pytest.fixture
def browser_page():
    """A Playwright page in headless Debian Chromium (no browser download)."""
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright", "pip install playwright")
    executable = shutil.which("chromium")
    if executable is None:
        _missing("chromium", "apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking", "--disable-component-update",
                                          "--disable-sync"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        yield page
        context.close()
        browser.close()


@pytest.fixture
def web_slicer_app():
    """A trame-slicer app (module logics registered, ``slicer.mrmlScene`` set) with three offscreen
    slice views (Red axial, Yellow coronal, Green sagittal), 400 × 300 pixels each. The views render only
    when asked (``NoScheduleRendering``; the click/drag helpers render first): DirectViewFactory would
    render all views on every MRML change."""
    import slicer
    from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition, ViewProps, ViewType
    from trame_slicer.views.render_scheduler import NoScheduleRendering

    from neurocontrast_web.scene import make_slicer_app

    previous = getattr(slicer, "mrmlScene", None)
    app, logics = make_slicer_app()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    for tag, orientation in (("Red", "Axial"), ("Yellow", "Coronal"), ("Green", "Sagittal")):
        view = app.view_manager.create_view(ViewLayoutDefinition(
            singleton_tag=tag, view_type=ViewType.SLICE_VIEW, properties=ViewProps(orientation=orientation)))
        view.interactor().UpdateSize(400, 300)
        view.set_scheduled_render(NoScheduleRendering())
    app._test_logics = logics
    yield app
    for view in app.view_manager.get_slice_views():
        view.finalize()
    if previous is not None:
        slicer.mrmlScene = previous


@pytest.fixture
def view_events():
    """The helpers ``ras_to_display``, ``click`` and ``drag`` as a namespace."""
    class Events:
        pass
    from web_helpers import click, drag, ras_to_display

    events = Events()
    events.ras_to_display, events.click, events.drag = ras_to_display, click, drag
    return events


@pytest.fixture
def synthetic_study(tmp_path):
    """A synthetic two-case study (readers R1, R2; phase 1 open, phase 2 in washout)."""
    from neurocontrast.readerstudy.synthetic import make_synthetic_study

    folder = tmp_path / "study"
    made = make_synthetic_study(folder, n_cases=2, readers=["R1", "R2"], seed=3)
    return folder, made


