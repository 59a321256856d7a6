"""docs/console.md: its ``python test`` blocks run (plain Python, in page order, one namespace), its
``python test-mrml`` blocks run against a real MRML scene (slicer-core; Testing/mrml/test_console_examples_mrml.py), and the Slicer-application-only
``python`` blocks at least compile."""

from __future__ import annotations

import re
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "console.md"
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(kind: str):
    return [code for info, code in FENCE.findall(DOC.read_text(encoding="utf-8")) if info.strip() == kind]


def test_page_has_examples_of_each_kind():
    assert len(blocks("test")) >= 4 and len(blocks("test-mrml")) >= 2 and len(blocks("")) >= 2


def test_core_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "console_md"}
    for number, code in enumerate(blocks("test"), start=1):
        exec(compile(code, f"{DOC.name}[test block {number}]", "exec"), namespace)
    assert namespace["metrics"].se == 0.5


def test_application_only_examples_compile():
    for number, code in enumerate(blocks(""), start=1):
        compile(code, f"{DOC.name}[block {number}]", "exec")

