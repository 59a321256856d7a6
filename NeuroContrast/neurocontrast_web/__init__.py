"""Browser apps on trame-slicer that drive the Slicer module logics (extra ``[web]``, source checkout).

Beside the pure core, not in it: these modules import ``slicer`` (slicer-core, through trame-slicer) and the
module libraries ``NeuroContrastLib``, ``PerfusionNetLib`` and ``ReaderStudyLib``.

- :mod:`~neurocontrast_web.scene`: a trame-slicer ``SlicerApp`` prepared for the module logics;
- :mod:`~neurocontrast_web.reading` / :mod:`~neurocontrast_web.reading_app`: the reading station (the
  ``ReaderStudyLogic`` of the Slicer module over the same ``ReaderSession`` storage) and its page;
- :mod:`~neurocontrast_web.perfusion` / :mod:`~neurocontrast_web.perfusion_app`: the perfusion viewer
  (``PerfusionNetLogic``) and its page.

The command line (``neurocontrast web reader|perfusion``, :mod:`neurocontrast.web.commands`) and the access
policy (:mod:`neurocontrast.web.access`) stay in the core; they import this package only when an app starts.
"""
