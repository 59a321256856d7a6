"""NeuroContrast/Resources/requirements.txt (what Slicer pip-installs) stays consistent with pyproject.toml.

Rule: requirements.txt = pyproject's [project] dependencies minus the packages Slicer provides (torch from the
PyTorch extension, SimpleITK and requests bundled with Slicer), with the same version specifiers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from NeuroContrastLib import dependencies

REPO = Path(__file__).resolve().parents[2]
PROVIDED = {canonicalize_name(n) for n in dependencies.SLICER_PROVIDED}


def _pyproject_requirements():
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(r) for r in data["project"]["dependencies"]]


def _by_name(requirements):
    return {canonicalize_name(r.name): r for r in requirements}


def test_requirements_file_is_where_the_module_reads_it():
    assert dependencies.REQUIREMENTS_PATH == REPO / "NeuroContrast" / "Resources" / "requirements.txt"
    assert dependencies.REQUIREMENTS_PATH.is_file()


def test_requirements_match_pyproject_minus_slicer_provided():
    pyproject = _by_name(_pyproject_requirements())
    shipped = _by_name(dependencies.read_requirements())
    expected = {name: req for name, req in pyproject.items() if name not in PROVIDED}
    assert sorted(shipped) == sorted(expected), "requirements.txt and pyproject.toml list different packages"
    for name, req in expected.items():
        assert shipped[name].specifier == req.specifier, f"{name}: {shipped[name]} vs pyproject {req}"


def test_slicer_provided_packages_are_never_in_requirements():
    shipped = _by_name(dependencies.read_requirements())
    assert not PROVIDED & set(shipped), "torch/SimpleITK/requests must never be pip-installed into Slicer"


def test_torch_requirement_matches_pyproject():
    torch = _by_name(_pyproject_requirements())["torch"]
    assert Requirement(dependencies.TORCH_REQUIREMENT).specifier == torch.specifier


def test_invalid_requirement_line_is_reported_with_line_number(tmp_path):
    bad = tmp_path / "requirements.txt"
    bad.write_text("numpy>=1.24\n# comment\nscipy>>1\n", encoding="utf-8")
    try:
        dependencies.read_requirements(bad)
    except ValueError as exc:
        assert ":3:" in str(exc) and "scipy>>1" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an invalid requirement must raise")
