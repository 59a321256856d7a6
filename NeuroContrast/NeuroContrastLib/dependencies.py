"""Python dependencies of the extension inside Slicer: check without importing, install lazily.

- **Check** reads installed versions with :func:`importlib.metadata.version` (no package is imported, so a
  check is fast and cannot crash Slicer) and compares them with ``Resources/requirements.txt`` and
  :data:`TORCH_REQUIREMENT` using ``packaging`` specifiers.
- **Install** (:func:`ensure_dependencies`, called on a module's first Apply and by the hub's Install button)
  asks the user once, installs torch through the PyTorch extension (``PyTorchUtilsLogic().installTorch``) and
  the rest through ``slicer.pydeps.pip_ensure`` / ``slicer.packaging.pip_ensure`` (Slicer ≥ 5.11/5.12) with
  ``skip_packages`` = :data:`SLICER_PROVIDED`, else ``slicer.util.pip_install`` with a constraints file that
  pins the installed SimpleITK, torch and requests so pip can never replace them.
- **Offline**: a failed installation raises NeuroContrastError with :data:`OFFLINE_HELP` (what to do without a
  network connection).

The installation backend is injectable (:class:`SlicerInstallBackend` in Slicer, a fake in tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from neurocontrast.errors import NeuroContrastError
from neurocontrast.progress import ProgressCallback, report

REQUIREMENTS_PATH = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
#: torch comes from the PyTorch extension (CPU or the CUDA build matching the user's GPU)
TORCH_REQUIREMENT = "torch>=2.3"
#: packages that Slicer (or the PyTorch extension) provides; never installed or replaced by us
SLICER_PROVIDED = ("SimpleITK", "torch", "requests")

OFFLINE_HELP = (
    "Installing the NeuroContrast Python packages failed. If this computer has no internet connection: on a "
    "connected computer with the same operating system and Slicer version run "
    "`PythonSlicer -m pip download -r requirements.txt -d wheels` (requirements.txt is in "
    "NeuroContrast/Resources of the extension), copy the `wheels` folder here and run in Slicer's Python console "
    "`slicer.util.pip_install('--no-index --find-links=<wheels folder> -r <requirements.txt>')`; install torch with "
    "the PyTorch extension's module (PyTorch Utils). Then restart Slicer.")

VersionLookup = Callable[[str], Optional[str]]


@dataclasses.dataclass
class DependencyStatus:
    """One requirement and what is installed: ``installed`` is the version string or None when absent."""

    name: str
    requirement: str
    installed: Optional[str]
    satisfied: bool
    provided_by_slicer: bool = False

    def describe(self) -> str:
        """One line for the hub's status box: ``✓ scipy 1.14.1 (scipy>=1.10)`` or ``✗ monai missing (monai>=1.3)``."""
        mark = "✓" if self.satisfied else "✗"
        have = self.installed if self.installed else "missing"
        return f"{mark} {self.name} {have} ({self.requirement})"


def installed_version(distribution: str) -> Optional[str]:
    """Installed version of a distribution via ``importlib.metadata`` (never imports it), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_requirements(path=REQUIREMENTS_PATH) -> List[Requirement]:
    """The requirements of a pip requirements file (comments and blank lines skipped).

    Raises NeuroContrastError if the file is missing or a line is not a valid requirement.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroContrastError(f"requirements file not found: {path}")
    requirements = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as exc:
            raise NeuroContrastError(f"{path}:{number}: invalid requirement '{line}': {exc}") from None
    return requirements


def check_requirement(requirement, version_of: VersionLookup = installed_version) -> DependencyStatus:
    """Status of one requirement (a string or ``packaging`` Requirement); pre-releases count as satisfying."""
    req = requirement if isinstance(requirement, Requirement) else Requirement(str(requirement))
    version = version_of(req.name)
    satisfied = version is not None and req.specifier.contains(version, prereleases=True)
    provided = canonicalize_name(req.name) in {canonicalize_name(n) for n in SLICER_PROVIDED}
    return DependencyStatus(req.name, str(req), version, bool(satisfied), provided)


def check_dependencies(requirements: Optional[Iterable] = None, include_torch: bool = True,
                       version_of: VersionLookup = installed_version) -> List[DependencyStatus]:
    """Statuses of torch (:data:`TORCH_REQUIREMENT`, first) and every line of requirements.txt."""
    requirements = list(read_requirements() if requirements is None else requirements)
    statuses = [check_requirement(TORCH_REQUIREMENT, version_of)] if include_torch else []
    statuses += [check_requirement(r, version_of) for r in requirements]
    return statuses


def missing(statuses: Iterable[DependencyStatus]) -> List[DependencyStatus]:
    """The unsatisfied statuses."""
    return [s for s in statuses if not s.satisfied]


class SlicerInstallBackend:
    """Installs packages inside Slicer (imports ``slicer`` and the PyTorch extension only when called)."""

    def __init__(self, requester: str = "NeuroContrast"):
        self.requester = requester

    @staticmethod
    def _pip_ensure():
        for module_name in ("slicer.pydeps", "slicer.packaging"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            function = getattr(module, "pip_ensure", None)
            if callable(function):
                return function
        return None

    def method(self) -> str:
        """Which installer will be used (for the status text)."""
        return "pip_ensure" if self._pip_ensure() is not None else "slicer.util.pip_install"

    def install_torch(self, requirement: str) -> None:
        """Install torch through the PyTorch extension. Raises NeuroContrastError if it is not installed."""
        try:
            import PyTorchUtils  # the PyTorch extension's module (declared in EXTENSION_DEPENDS)
        except ImportError:
            raise NeuroContrastError("torch is missing and the PyTorch extension is not installed: install "
                                     "'PyTorch' from the Extensions Manager, restart Slicer and try again") from None
        version = str(Requirement(requirement).specifier)
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=version)
        if torch is None:
            raise NeuroContrastError("PyTorch installation did not complete; see the PyTorch Utils module")

    def install(self, requirements: List[str]) -> None:
        """Install requirement strings without touching :data:`SLICER_PROVIDED` packages."""
        pip_ensure = self._pip_ensure()
        if pip_ensure is not None:
            pip_ensure([Requirement(r) for r in requirements], skip_packages=list(SLICER_PROVIDED),
                       requester=self.requester, **no_second_prompt(pip_ensure))
            return
        import slicer  # noqa: F401 (only inside Slicer)
        with tempfile.TemporaryDirectory() as folder:
            constraints = write_constraints(Path(folder) / "constraints.txt")
            args = " ".join(f'"{r}"' for r in requirements)
            slicer.util.pip_install(f'{args} -c "{constraints}"')


def no_second_prompt(pip_ensure) -> dict:
    """Keyword that stops ``pip_ensure`` from asking again: the user already confirmed in
    :func:`ensure_dependencies`. Slicer ≥ 5.12 names it ``prompt_install`` (earlier drafts ``prompt``)."""
    import inspect

    try:
        parameters = inspect.signature(pip_ensure).parameters
    except (TypeError, ValueError):
        return {}
    for name in ("prompt_install", "prompt"):
        if name in parameters:
            return {name: False}
    return {}


def write_constraints(path, version_of: VersionLookup = installed_version) -> Path:
    """A pip constraints file pinning the installed versions of :data:`SLICER_PROVIDED` (absent ones omitted)."""
    lines = [f"{name}=={version}" for name in SLICER_PROVIDED if (version := version_of(name))]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)


_SATISFIED_THIS_SESSION = False


def ensure_dependencies(confirm: Callable[[str], bool], backend=None, progress: Optional[ProgressCallback] = None,
                        requirements: Optional[Iterable] = None, version_of: VersionLookup = installed_version,
                        force_check: bool = False) -> List[DependencyStatus]:
    """Make sure every dependency is installed; install what is missing after ``confirm(message)`` says yes.

    ``confirm`` gets a message listing the missing packages and returns True to install. ``backend`` has
    ``install_torch(requirement)`` and ``install(list of requirement strings)`` (default
    :class:`SlicerInstallBackend`). Once everything is satisfied the check is skipped for the rest of the
    session (``force_check`` re-checks). Returns the final statuses.

    Raises NeuroContrastError if the user declines, if installation fails (with :data:`OFFLINE_HELP`), or if a
    package is still missing afterwards (e.g. a version conflict with a package Slicer provides).
    """
    global _SATISFIED_THIS_SESSION
    requirements = list(read_requirements() if requirements is None else requirements)
    if _SATISFIED_THIS_SESSION and not force_check:
        return check_dependencies(requirements, version_of=version_of)
    statuses = check_dependencies(requirements, version_of=version_of)
    todo = missing(statuses)
    if not todo:
        _SATISFIED_THIS_SESSION = True
        return statuses
    message = ("NeuroContrast needs these Python packages, which are not installed yet:\n  "
               + "\n  ".join(s.describe() for s in todo)
               + "\n\nInstall them now? This downloads them from the internet and may take several minutes.")
    if not confirm(message):
        raise NeuroContrastError("the NeuroContrast Python packages are not installed (installation declined): "
                                 + ", ".join(s.name for s in todo)
                                 + "; install them from the NeuroContrast module (Install button)")
    backend = backend if backend is not None else SlicerInstallBackend()
    torch_missing = [s for s in todo if canonicalize_name(s.name) == "torch"]
    others = [s for s in todo if canonicalize_name(s.name) != "torch"]
    blocked = [s for s in others if s.provided_by_slicer]
    if blocked:
        raise NeuroContrastError("these packages must come with Slicer and are never installed by NeuroContrast: "
                                 + ", ".join(s.describe() for s in blocked) + "; update Slicer")
    try:
        if torch_missing:
            report(progress, 0.05, "installing PyTorch (PyTorch extension)")
            backend.install_torch(torch_missing[0].requirement)
        if others:
            report(progress, 0.5, f"installing {', '.join(s.name for s in others)}")
            backend.install([s.requirement for s in others])
    except NeuroContrastError:
        raise
    except Exception as exc:  # pip/network failures come as CalledProcessError, OSError, RuntimeError...
        raise NeuroContrastError(f"{OFFLINE_HELP} (error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    importlib.invalidate_caches()
    statuses = check_dependencies(requirements, version_of=version_of)
    still = missing(statuses)
    report(progress, 1.0, "done" if not still else "incomplete")
    if still:
        raise NeuroContrastError("after installation these packages are still missing or too old: "
                                 + ", ".join(s.describe() for s in still) + ". Restart Slicer and try again; "
                                 + OFFLINE_HELP)
    _SATISFIED_THIS_SESSION = True
    return statuses


def reset_session_cache() -> None:
    """Forget that the dependencies were satisfied (the next :func:`ensure_dependencies` checks again)."""
    global _SATISFIED_THIS_SESSION
    _SATISFIED_THIS_SESSION = False


def dependencies_summary(statuses: Iterable[DependencyStatus]) -> str:
    """Multi-line text for the hub's status box."""
    statuses = list(statuses)
    lines = [s.describe() for s in statuses]
    todo = missing(statuses)
    lines.append("All dependencies are installed." if not todo
                 else f"{len(todo)} missing: press Install (needs an internet connection).")
    return os.linesep.join(lines)
