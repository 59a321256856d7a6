"""Logic of the NeuroContrast hub Slicer module (no Qt; tested with ``slicer-core`` in Testing/mrml).

- :mod:`NeuroContrastLib.logic` -- the object the hub widget calls (dependencies, settings, models, sample).
- :mod:`NeuroContrastLib.dependencies` -- check (importlib.metadata, no import) and lazy installation.
- :mod:`NeuroContrastLib.settings` -- compute device, CPU threads, models folder in an injected QSettings-like store.
- :mod:`NeuroContrastLib.registry` -- the model registry as rows / a table node, sha256 verification.
- :mod:`NeuroContrastLib.sampledata` -- the DSC phantom generated locally for Slicer's SampleData module.
- :mod:`NeuroContrastLib.mrml` -- MRML ⇄ NumPy helpers shared by all NeuroContrast modules (RAS ⇄ LPS geometry,
  sequences, segments, markups, tables).

Submodules that touch MRML import ``slicer``/``vtk``; :mod:`dependencies`, :mod:`settings` and :mod:`registry`
(except ``update_table_node``) do not.
"""
