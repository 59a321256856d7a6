"""Module parameters ⇄ the module's parameter node (``vtkMRMLScriptedModuleNode``), saved with the scene.

``slicer.parameterNodeWrapper`` is not in the slicer-core wheel, so the modules keep a plain dataclass of their
parameters and this one mapping drives both directions: node fields are stored as **node references** (they
follow node-ID changes on scene import and keep the nodes referenced when the scene is saved), every other
field as a string parameter converted back to the field's type on reading. A node field holds either the MRML
node (``node_fields``: VirtualGadolinium, ReaderStudy) or its ID string, "" for none (``node_id_fields``:
PerfusionNet, whose logic and web viewer pass IDs).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Type, TypeVar

T = TypeVar("T")


def write_parameters(params, parameter_node, node_fields: Iterable[str], node_id_fields: Iterable[str] = ()) -> None:
    """Store a dataclass instance: ``node_fields`` (node or None) and ``node_id_fields`` (node ID string, ""
    for none) as node references (None/"" clears), the rest as strings."""
    node_fields, node_id_fields = set(node_fields), set(node_id_fields)
    was_modifying = parameter_node.StartModify()
    try:
        for field in dataclasses.fields(params):
            value = getattr(params, field.name)
            if field.name in node_fields:
                parameter_node.SetNodeReferenceID(field.name, value.GetID() if value is not None else None)
            elif field.name in node_id_fields:
                parameter_node.SetNodeReferenceID(field.name, value or None)
            else:
                parameter_node.SetParameter(field.name, str(value))
    finally:
        parameter_node.EndModify(was_modifying)


def read_parameters(cls: Type[T], parameter_node, node_fields: Iterable[str], node_id_fields: Iterable[str] = ()) -> T:
    """Read back what :func:`write_parameters` stored; missing or unreadable entries keep their defaults (a
    bool field reads only "True" or "False"). ``node_fields`` read as the referenced node (None when absent),
    ``node_id_fields`` as its ID ("" when none is referenced)."""
    node_fields, node_id_fields = set(node_fields), set(node_id_fields)
    params = cls()
    for field in dataclasses.fields(cls):
        if field.name in node_fields:
            setattr(params, field.name, parameter_node.GetNodeReference(field.name))
            continue
        if field.name in node_id_fields:
            setattr(params, field.name, parameter_node.GetNodeReferenceID(field.name) or "")
            continue
        text = parameter_node.GetParameter(field.name)
        if text in (None, ""):
            continue
        default = getattr(params, field.name)
        if isinstance(default, bool):  # written as "True"/"False"; bool("False") would be True
            if text in ("True", "False"):
                setattr(params, field.name, text == "True")
            continue
        try:
            value = type(default)(text)
        except (TypeError, ValueError):
            continue
        setattr(params, field.name, value)
    return params
