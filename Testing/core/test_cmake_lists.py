"""Every module's CMakeLists.txt ships what the module needs: each .py, .ui, .png (and every other file under
Resources/) is listed (or matched by a listed glob) and every listed file exists.

The CMake files are parsed here (``set``, ``file(GLOB|GLOB_RECURSE ... RELATIVE ...)``,
``slicerMacroBuildScriptedModule(NAME SCRIPTS RESOURCES)``, ``${VAR}`` expansion) and the globs are evaluated
with the semantics of CMake: ``GLOB_RECURSE dir/*.py`` matches ``*.py`` in ``dir`` and all its sub-folders.
NeuroContrast/CMakeLists.txt collects the core package ``neurocontrast/**.py`` with ``GLOB_RECURSE`` (so a new
core file can never be forgotten); the test below checks that the glob covers every core file.
"""

from __future__ import annotations

import fnmatch
import re
import struct
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"__pycache__", "Testing", ".pytest_cache"}


# ----------------------------------------------------------------------------------------- a small CMake reader

def _commands(text: str):
    """``(command, [arguments])`` of a CMake file; quoted arguments may hold parentheses and ``#``."""
    i, n = 0, len(text)
    while i < n:
        if text[i] == "#":
            i = text.find("\n", i) if text.find("\n", i) >= 0 else n
            continue
        match = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(").match(text, i)
        if not match or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            i += 1
            continue
        i, args, token, depth = match.end(), [], "", 0
        while i < n:
            char = text[i]
            if char == '"':
                end = text.index('"', i + 1)
                token += text[i:end + 1]
                i = end + 1
                continue
            if char == "#" and not token:
                i = text.find("\n", i) if text.find("\n", i) >= 0 else n
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            if char.isspace():
                if token:
                    args.append(token)
                token = ""
            else:
                token += char
            i += 1
        if token:
            args.append(token)
        yield match.group(1), args
        i += 1


def _expand(token: str, variables: Dict[str, List[str]]) -> List[str]:
    token = token.strip('"')
    whole = re.fullmatch(r"\$\{(\w+)\}", token)
    if whole:
        return list(variables.get(whole.group(1), []))
    return [re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), token)]


def _glob(base: Path, relative_to: Path, pattern: str, recursive: bool) -> List[str]:
    pattern_path = Path(pattern)
    folder = base / pattern_path.parent
    if not folder.is_dir():
        return []
    candidates = folder.rglob(pattern_path.name) if recursive else folder.glob(pattern_path.name)
    return sorted(str(p.relative_to(relative_to)).replace("\\", "/") for p in candidates
                  if p.is_file() and "__pycache__" not in p.parts)


def parse_module_cmake(module_dir: Path) -> Dict[str, object]:
    """``{"name", "scripts", "resources", "globs"}`` of a scripted module's CMakeLists.txt."""
    text = (module_dir / "CMakeLists.txt").read_text(encoding="utf-8")
    variables: Dict[str, List[str]] = {"CMAKE_CURRENT_SOURCE_DIR": [str(module_dir)]}
    result: Dict[str, object] = {"name": None, "scripts": [], "resources": [], "globs": []}
    for command, args in _commands(text):
        lowered = command.lower()
        if lowered == "set" and args:
            variables[args[0]] = [item for token in args[1:] for item in _expand(token, variables)]
        elif lowered == "file" and args and args[0] in ("GLOB", "GLOB_RECURSE"):
            recursive = args[0] == "GLOB_RECURSE"
            name, rest = args[1], args[2:]
            relative = module_dir
            if rest[:1] == ["RELATIVE"]:
                relative = Path(_expand(rest[1], variables)[0])
                rest = rest[2:]
            files: List[str] = []
            for pattern in rest:
                for expanded in _expand(pattern, variables):
                    result["globs"].append(expanded)
                    files += _glob(module_dir, relative, expanded, recursive)
            variables[name] = files
        elif lowered == "slicermacrobuildscriptedmodule":
            section = None
            for token in args:
                if token in ("NAME", "SCRIPTS", "RESOURCES"):
                    section = token
                    continue
                if token in ("WITH_GENERIC_TESTS", "WITH_SUBDIR"):
                    section = None
                    continue
                values = _expand(token, variables)
                if section == "NAME":
                    result["name"] = values[0]
                elif section == "SCRIPTS":
                    result["scripts"] += values
                elif section == "RESOURCES":
                    result["resources"] += values
    return result


def module_dirs() -> List[str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return [args[0] for command, args in _commands(text) if command == "add_subdirectory"]


def files_to_ship(module_dir: Path) -> Set[str]:
    """Every .py of the module (any depth, tests and caches excluded) and every file under Resources/."""
    out = set()
    for path in module_dir.rglob("*"):
        rel = path.relative_to(module_dir)
        if not path.is_file() or SKIP_DIRS & set(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
            continue
        if path.suffix == ".py" or rel.parts[0] == "Resources":
            out.add(str(rel).replace("\\", "/"))
    return out


def problems(module_dir: Path) -> List[str]:
    """What is wrong with a module folder's CMakeLists.txt (empty list when all is shipped and exists)."""
    if not (module_dir / "CMakeLists.txt").is_file():
        return [f"{module_dir.name}: no CMakeLists.txt"]
    parsed = parse_module_cmake(module_dir)
    name = module_dir.name
    found = []
    if parsed["name"] != name:
        found.append(f"{name}: slicerMacroBuildScriptedModule NAME is {parsed['name']!r}")
    listed = set(parsed["scripts"]) | set(parsed["resources"])
    for rel in sorted(listed):
        if not (module_dir / rel).is_file():
            found.append(f"{name}: listed file {rel} does not exist")
    for rel in sorted(files_to_ship(module_dir) - listed):
        found.append(f"{name}: {rel} is not listed in CMakeLists.txt")
    for required in (f"{name}.py", f"Resources/Icons/{name}.png"):
        if required not in listed:
            found.append(f"{name}: {required} must be shipped")
    scripts_not_py = [s for s in parsed["scripts"] if not s.endswith(".py")]
    if scripts_not_py:
        found.append(f"{name}: SCRIPTS holds non-Python files {scripts_not_py}")
    return found


# ----------------------------------------------------------------------------------------- tests

def test_root_lists_the_four_modules():
    assert module_dirs() == ["NeuroContrast", "PerfusionNet", "VirtualGadolinium", "ReaderStudy"]


@pytest.mark.parametrize("module", module_dirs())
def test_module_cmake_ships_every_file(module):
    assert problems(REPO / module) == []


@pytest.mark.parametrize("module", module_dirs())
def test_module_icon_is_128_png(module):
    icon = REPO / module / "Resources" / "Icons" / f"{module}.png"
    header = icon.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (128, 128)


def test_core_package_is_covered_by_the_glob():
    parsed = parse_module_cmake(REPO / "NeuroContrast")
    assert "neurocontrast/*.py" in parsed["globs"]
    core = {str(p.relative_to(REPO / "NeuroContrast")).replace("\\", "/")
            for p in (REPO / "NeuroContrast" / "neurocontrast").rglob("*.py") if "__pycache__" not in p.parts}
    assert core, "the core package has no .py files?"
    assert core <= set(parsed["scripts"])
    assert {"neurocontrast/__init__.py", "neurocontrast/io.py", "neurocontrast/cli.py"} <= core


def test_no_stray_top_level_python_in_the_core_module_path():
    # NeuroContrast/ is on Slicer's module path: only the module file may sit there next to the packages
    stray = sorted(p.name for p in (REPO / "NeuroContrast").glob("*.py") if p.name != "NeuroContrast.py")
    assert stray == []


def test_root_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    values = {args[0]: " ".join(a.strip('"') for a in args[1:]) for command, args in _commands(text)
              if command == "set" and args and args[0].startswith("EXTENSION_")}
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL"):
        assert values.get(key), f"{key} is empty"
    assert "PyTorch" in values.get("EXTENSION_DEPENDS", "").split()
    icon = values["EXTENSION_ICONURL"].split("/main/", 1)[1]
    assert (REPO / icon).is_file(), f"EXTENSION_ICONURL points at {icon}, which is not in the repository"


# ----------------------------------------------------------------------------------------- the checker itself

def _fake_module(tmp_path: Path, cmake: str) -> Path:
    module = tmp_path / "Fake"
    (module / "FakeLib").mkdir(parents=True)
    (module / "Resources" / "Icons").mkdir(parents=True)
    (module / "Resources" / "UI").mkdir(parents=True)
    for rel in ("Fake.py", "FakeLib/__init__.py", "FakeLib/logic.py", "Resources/Icons/Fake.png",
                "Resources/UI/Fake.ui"):
        (module / rel).write_text("", encoding="utf-8")
    (module / "CMakeLists.txt").write_text(cmake, encoding="utf-8")
    return module


def test_checker_reports_unlisted_and_missing_files(tmp_path):
    module = _fake_module(tmp_path, """
set(MODULE_NAME Fake)
set(MODULE_PYTHON_SCRIPTS ${MODULE_NAME}.py ${MODULE_NAME}Lib/__init__.py ${MODULE_NAME}Lib/gone.py)
set(MODULE_PYTHON_RESOURCES Resources/Icons/${MODULE_NAME}.png)
slicerMacroBuildScriptedModule(NAME ${MODULE_NAME} SCRIPTS ${MODULE_PYTHON_SCRIPTS}
  RESOURCES ${MODULE_PYTHON_RESOURCES} WITH_GENERIC_TESTS)
""")
    found = problems(module)
    assert "Fake: listed file FakeLib/gone.py does not exist" in found
    assert "Fake: FakeLib/logic.py is not listed in CMakeLists.txt" in found
    assert "Fake: Resources/UI/Fake.ui is not listed in CMakeLists.txt" in found


def test_checker_accepts_a_recursive_glob(tmp_path):
    module = _fake_module(tmp_path, """
set(MODULE_NAME Fake)
file(GLOB_RECURSE LIB RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} FakeLib/*.py)
set(MODULE_PYTHON_SCRIPTS ${MODULE_NAME}.py ${LIB})
set(MODULE_PYTHON_RESOURCES Resources/Icons/${MODULE_NAME}.png Resources/UI/${MODULE_NAME}.ui)
slicerMacroBuildScriptedModule(NAME ${MODULE_NAME} SCRIPTS ${MODULE_PYTHON_SCRIPTS} RESOURCES ${MODULE_PYTHON_RESOURCES})
""")
    (module / "FakeLib" / "deep").mkdir()
    (module / "FakeLib" / "deep" / "new.py").write_text("", encoding="utf-8")
    assert problems(module) == []
    assert "FakeLib/deep/new.py" in parse_module_cmake(module)["scripts"]
    assert fnmatch.fnmatch("FakeLib/deep/new.py", "FakeLib/*.py")
