"""docs/console.md: the ``python test-mrml`` blocks run against a real MRML scene (slicer-core)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_console_examples import DOC, blocks  # noqa: E402  (the page parser lives beside the core examples)


def test_slicer_console_examples_run(mrml_scene):
    namespace = {"__name__": "console_md"}
    for number, code in enumerate(blocks("test-mrml"), start=1):
        exec(compile(code, f"{DOC.name}[test-mrml block {number}]", "exec"), namespace)
    assert namespace["outputs"].map_nodes["tmax"].GetScene() is mrml_scene
