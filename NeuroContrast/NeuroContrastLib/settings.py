"""User settings of the extension, persisted in Slicer's settings (``qt.QSettings``).

The store is injected: inside Slicer the hub passes ``qt.QSettings()``; tests (and plain Python) use
:class:`DictSettingsStore`. Any object with ``value(key, default)`` and ``setValue(key, value)`` works.
QSettings may hand back strings for numbers ("4") and booleans ("true"), so every getter converts.

Keys (all under ``NeuroContrast/``): ``ComputeDevice`` (``auto``/``cpu``/``cuda``), ``Threads`` (int, 0 =
all cores), ``ModelsFolder`` (user-trained models; searched before the shipped ones).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, MutableMapping, Optional

from neurocontrast.errors import NeuroContrastError

PREFIX = "NeuroContrast/"
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODELS_FOLDER = str(Path.home() / ".neurocontrast" / "models")


class DictSettingsStore:
    """A QSettings-like store in a dict (tests, plain Python). Values are kept as given."""

    def __init__(self, data: Optional[MutableMapping[str, Any]] = None):
        self.data = data if data is not None else {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802 (QSettings API)
        self.data[key] = value

    def contains(self, key: str) -> bool:
        return key in self.data

    def remove(self, key: str) -> None:
        self.data.pop(key, None)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class NeuroContrastSettings:
    """Typed access to the extension's settings in ``store``.

    Raises NeuroContrastError when a value set is invalid (unknown device, negative threads).
    """

    def __init__(self, store=None, cuda_available: Optional[Callable[[], bool]] = None):
        self.store = store if store is not None else DictSettingsStore()
        self._cuda_available = cuda_available or _cuda_available

    # -- raw access
    def _get(self, key: str, default: Any) -> Any:
        value = self.store.value(PREFIX + key, default)
        return default if value is None else value

    def _set(self, key: str, value: Any) -> None:
        self.store.setValue(PREFIX + key, value)

    # -- compute device
    @property
    def compute_device(self) -> str:
        """``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda``; an unknown stored value reads as ``auto``."""
        value = str(self._get("ComputeDevice", "auto")).strip().lower()
        return value if value in DEVICES else "auto"

    @compute_device.setter
    def compute_device(self, value: str) -> None:
        value = str(value).strip().lower()
        if value not in DEVICES:
            raise NeuroContrastError(f"compute device must be one of {', '.join(DEVICES)}, got '{value}'")
        self._set("ComputeDevice", value)

    def resolved_device(self) -> str:
        """The torch device to use: ``cuda`` if chosen (or ``auto``) and available, else ``cpu``.

        Raises NeuroContrastError if ``cuda`` is chosen explicitly but no CUDA device is available.
        """
        choice = self.compute_device
        available = self._cuda_available()
        if choice == "cuda" and not available:
            raise NeuroContrastError("compute device is set to CUDA but no CUDA GPU is available to torch; "
                                     "choose CPU or Auto in the NeuroContrast module")
        if choice == "cpu":
            return "cpu"
        return "cuda" if available else "cpu"

    # -- threads
    @property
    def threads(self) -> int:
        """CPU threads for torch (0 = all cores). An unreadable stored value reads as 0."""
        try:
            return max(0, int(float(self._get("Threads", 0))))
        except (TypeError, ValueError):
            return 0

    @threads.setter
    def threads(self, value: int) -> None:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise NeuroContrastError(f"threads must be an integer >= 0, got {value!r}") from None
        if number < 0:
            raise NeuroContrastError(f"threads must be >= 0 (0 = all cores), got {number}")
        self._set("Threads", number)

    def effective_threads(self, cpu_count: Optional[int] = None) -> int:
        """The number of threads to use: the setting, or all cores when it is 0."""
        cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        return self.threads if self.threads > 0 else max(1, cores)

    # -- models folder
    @property
    def models_folder(self) -> str:
        """Folder of user-trained models (searched before the models shipped in the package)."""
        value = str(self._get("ModelsFolder", "") or "").strip()
        return value or DEFAULT_MODELS_FOLDER

    @models_folder.setter
    def models_folder(self, value: str) -> None:
        self._set("ModelsFolder", str(value or "").strip())

    # -- apply
    def apply(self, environ: Optional[MutableMapping[str, str]] = None, torch_module=None,
              import_torch: bool = False) -> Dict[str, Any]:
        """Put the settings into effect: ``NEUROCONTRAST_MODELS_DIR`` gets the models folder in front (so
        :mod:`neurocontrast.weights` and CLI subprocesses find user models) and torch gets the thread count.

        torch is never imported for this (an SVD run does not need it and importing it costs seconds and
        hundreds of MB): ``torch_module`` defaults to the torch already imported, if any; ``import_torch=True``
        imports it (the hub's settings panel, which shows the resolved device). Without torch, ``device`` in
        the returned dict is the stored choice (``auto``/``cpu``/``cuda``). ``environ`` defaults to
        ``os.environ``. Returns what was set.
        """
        environ = os.environ if environ is None else environ
        folder = self.models_folder
        entries = [e for e in environ.get("NEUROCONTRAST_MODELS_DIR", "").split(os.pathsep) if e and e != folder]
        environ["NEUROCONTRAST_MODELS_DIR"] = os.pathsep.join([folder] + entries)
        threads = self.effective_threads()
        if torch_module is None:
            torch_module = sys.modules.get("torch")
        if torch_module is None and import_torch:
            try:
                import torch as torch_module
            except ImportError:
                torch_module = None
        if torch_module is not None:
            torch_module.set_num_threads(threads)
            device = self.resolved_device()
        else:
            device = self.compute_device
        return {"models_folder": folder, "threads": threads, "device": device}

    def as_dict(self) -> Dict[str, Any]:
        """The settings as plain values (for reports)."""
        return {"compute_device": self.compute_device, "threads": self.threads, "models_folder": self.models_folder}


def resolve_models_folder(explicit: Optional[str] = None, environ: Optional[MutableMapping[str, str]] = None,
                          store=None) -> Path:
    """The user models folder, decided in one place for every module and the command line's subprocesses:
    ``explicit`` (a folder the user typed in a module), else the ``ModelsFolder`` setting of ``store`` (when a
    settings store is given and holds one), else the first ``NEUROCONTRAST_MODELS_DIR`` entry of ``environ``
    (default ``os.environ``; :meth:`NeuroContrastSettings.apply` puts the setting there), else
    :data:`DEFAULT_MODELS_FOLDER`. The folder is not created."""
    if explicit and str(explicit).strip():
        return Path(str(explicit).strip())
    if store is not None:
        stored = str(store.value(PREFIX + "ModelsFolder", "") or "").strip()
        if stored:
            return Path(stored)
    environ = os.environ if environ is None else environ
    entries = [e for e in environ.get("NEUROCONTRAST_MODELS_DIR", "").split(os.pathsep) if e.strip()]
    return Path(entries[0]) if entries else Path(DEFAULT_MODELS_FOLDER)
