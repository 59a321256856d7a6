"""A trame-slicer ``SlicerApp`` that the Slicer module logics can run in.

trame-slicer's app registers markups, volumes, segmentations and subject hierarchy; the module logics also
need sequences (4D DSC), tables and plots, and ``slicer.mrmlScene`` pointing at the app's scene (as in the
Slicer application). Offscreen rendering: EGL (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``) unless the
caller chose another window class (e.g. ``vtkOSMesaRenderWindow`` where EGL is missing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from neurocontrast.web import require_web

#: Slicer module folders of a source checkout holding the ``<Module>Lib`` packages the apps drive.
MODULE_FOLDERS = ("NeuroContrast", "PerfusionNet", "ReaderStudy")


def add_module_paths() -> None:
    """Put the module folders (``ReaderStudyLib``, ``PerfusionNetLib``, ``NeuroContrastLib``) on sys.path.

    Raises NeuroContrastError when the package is not run from a source checkout holding them.
    """
    from neurocontrast.errors import NeuroContrastError

    repo = Path(__file__).resolve().parents[2]
    missing = [name for name in MODULE_FOLDERS if not (repo / name / f"{name}Lib").is_dir()]
    if missing:
        raise NeuroContrastError(f"the web apps use the Slicer module logics ({', '.join(missing)}Lib), found "
                                 "only in a source checkout: pip install -e \".[web]\" from the repository")
    for name in MODULE_FOLDERS:
        path = str(repo / name)
        if path not in sys.path:
            sys.path.insert(0, path)


def make_slicer_app() -> Tuple[object, list]:
    """A ``trame_slicer.core.SlicerApp`` with the sequences, tables and plots logics registered and
    ``slicer.mrmlScene`` set to its scene. Returns ``(app, extra_logics)`` (keep the logics alive)."""
    require_web()
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    add_module_paths()
    import slicer
    from trame_slicer.core import SlicerApp

    app = SlicerApp()
    logics = []
    for name in ("vtkSlicerSequencesLogic", "vtkSlicerTablesLogic", "vtkSlicerPlotsLogic"):
        cls = getattr(slicer, name, None)
        if cls is not None:
            logics.append(app.register_module_logic(cls()))
    slicer.mrmlScene = app.scene
    return app, logics


def link_slice_views(scene) -> None:
    """Link the slice views (zoom, pan, layers follow each other, as Slicer's link button)."""
    for node in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        node.SetLinkedControl(1)
        node.SetHotLinkedControl(1)


class DeferredWork:
    """Mixin of the web controllers: work triggered inside a VTK event (a click that places a point, a drag that
    paints) runs outside that event, through ``schedule`` when the app gives one, else when :meth:`run_deferred`
    is called (tests). A NeuroContrastError of the work becomes ``self.message``; ``self.on_change`` (when set)
    runs after the work."""

    message: str
    on_change: Optional[Callable[[], None]]

    def _init_deferred(self, schedule: Optional[Callable[[Callable[[], None]], None]]) -> None:
        self._schedule = schedule
        self._deferred: List[Callable[[], None]] = []

    def _defer(self, work: Callable[[], None]) -> None:
        from neurocontrast.errors import NeuroContrastError

        def run():
            try:
                work()
            except NeuroContrastError as exc:
                self.message = str(exc)
            if self.on_change is not None:
                self.on_change()
        if self._schedule is not None:
            self._schedule(run)
        else:
            self._deferred.append(run)

    def run_deferred(self) -> None:
        """Run the work queued by view events (when no ``schedule`` was given)."""
        work, self._deferred = self._deferred, []
        for run in work:
            run()
