"""The model registry (:mod:`neurocontrast.weights`) as rows and as a Slicer table node."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

from neurocontrast import weights

#: where model cards are published when the docs folder is not beside the code (an installed extension)
HOMEPAGE = "https://github.com/neurocontrast/SlicerNeuroContrast"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

COLUMNS = ("Name", "Version", "Architecture", "Inputs", "Size (MB)", "SHA-256", "Verified", "Model card")


@dataclasses.dataclass
class ModelRow:
    """One line of the registry table. ``verified`` is True/False after a check, None when not checked."""

    name: str
    version: str
    architecture: str
    inputs: str
    size_mb: float
    sha256: str
    verified: Optional[bool]
    model_card: str
    weights_path: str

    @property
    def verified_mark(self) -> str:
        """``✓``, ``✗`` or ``?`` (not checked)."""
        return {True: "✓", False: "✗", None: "?"}[self.verified]


def model_card_location(info: weights.ModelInfo) -> str:
    """The model card as a local path when the docs are beside the code, else its address on the homepage."""
    if not info.model_card:
        return ""
    local = REPOSITORY_ROOT / info.model_card
    if local.is_file():
        return str(local)
    return f"{HOMEPAGE}/blob/main/{info.model_card}"


def model_rows(models_dir=None, verify: bool = False) -> List[ModelRow]:
    """The registered models (``weights.list_models(models_dir)``), with sha256 verification if ``verify``."""
    rows = []
    for info in weights.list_models(models_dir):
        rows.append(ModelRow(
            name=info.name, version=str(info.version), architecture=info.architecture,
            inputs=", ".join(info.input_channels), size_mb=round(info.size_bytes / 1e6, 3),
            sha256=info.sha256[:12], verified=weights.verify(info) if verify else None,
            model_card=model_card_location(info), weights_path=str(info.weights_path)))
    return rows


def update_table_node(table_node, rows: List[ModelRow]):
    """Fill a ``vtkMRMLTableNode`` with :data:`COLUMNS` (all string columns, one row per model)."""
    from NeuroContrastLib.mrml import table_node_from_columns

    columns = {
        "Name": [r.name for r in rows], "Version": [r.version for r in rows],
        "Architecture": [r.architecture for r in rows], "Inputs": [r.inputs for r in rows],
        "Size (MB)": [f"{r.size_mb:g}" for r in rows], "SHA-256": [r.sha256 for r in rows],
        "Verified": [r.verified_mark for r in rows], "Model card": [r.model_card for r in rows],
    }
    return table_node_from_columns(columns, table_node.GetName(), table_node.GetScene(), node=table_node)


def model_row_at(rows: List[ModelRow], table_node, model_row: int) -> Optional[ModelRow]:
    """The entry of ``rows`` shown in row ``model_row`` of the ``qMRMLTableModel`` of ``table_node`` (a table
    filled by :func:`update_table_node`), or None for the header row or a row naming no entry.

    ``model_row`` is a row of the table *model*, i.e. a selected index of the ``qMRMLTableView`` mapped through
    ``view.sortFilterProxyModel().mapToSource(index)``: the row a view shows changes when the user sorts it. The
    model's first row holds the column names unless the table node uses them as header
    (``GetUseColumnTitleAsColumnHeader``), as ``qMRMLTableModel::mrmlTableRowIndex`` counts. The entry is found
    by the Name and Version cells of that table row, not by position.
    """
    table_row = model_row if table_node.GetUseColumnTitleAsColumnHeader() else model_row - 1
    if not 0 <= table_row < table_node.GetNumberOfRows():
        return None
    name = table_node.GetCellText(table_row, table_node.GetColumnIndex("Name"))
    version = table_node.GetCellText(table_row, table_node.GetColumnIndex("Version"))
    return next((row for row in rows if (row.name, row.version) == (name, version)), None)
