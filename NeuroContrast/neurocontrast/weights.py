"""Model registry: name → safetensors file, sha256, architecture config and model card.

Each model is two files side by side in a models folder:

- ``<name>.safetensors`` -- the weights (safetensors: no pickle, no code execution on load);
- ``<name>.json`` -- its record: ``name, version, architecture, config`` (constructor keyword arguments),
  ``input_channels``, ``sha256``, ``size_bytes``, ``model_card`` (path of the card under ``docs/models``),
  ``description``, ``training`` (free-form facts about data and schedule) and ``metrics``.

Folders searched, first match wins: the ``models_dir`` argument, the folders in the environment variable
``NEUROCONTRAST_MODELS_DIR`` (``os.pathsep``-separated; user-trained models), then the weights shipped
inside the package (``neurocontrast/models``). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from neurocontrast.errors import NeuroContrastError

PACKAGE_MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclasses.dataclass
class ModelInfo:
    """The registry record of one model (see the module docstring for the fields)."""

    name: str
    architecture: str
    config: Dict[str, Any]
    sha256: str
    size_bytes: int
    version: str = "0"
    input_channels: List[str] = dataclasses.field(default_factory=list)
    model_card: str = ""
    description: str = ""
    training: Dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    directory: str = ""

    @property
    def weights_path(self) -> Path:
        """Path of the ``.safetensors`` file."""
        return Path(self.directory) / f"{self.name}.safetensors"

    def to_json(self) -> Dict[str, Any]:
        record = dataclasses.asdict(self)
        record.pop("directory")
        return record


def model_dirs(models_dir: Optional[Union[str, Path]] = None) -> List[Path]:
    """The folders searched for models, in priority order (see module docstring)."""
    dirs: List[Path] = []
    if models_dir:
        dirs.append(Path(models_dir))
    for entry in os.environ.get("NEUROCONTRAST_MODELS_DIR", "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()))
    dirs.append(PACKAGE_MODELS_DIR)
    return dirs


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_record(path: Path) -> ModelInfo:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(ModelInfo)}
        info = ModelInfo(**{k: v for k, v in record.items() if k in fields and k != "directory"})
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise NeuroContrastError(f"model record {path} is unreadable: {exc}") from None
    info.directory = str(path.parent)
    return info


def list_models(models_dir: Optional[Union[str, Path]] = None) -> List[ModelInfo]:
    """All models found, one per name (the first folder in :func:`model_dirs` order wins), sorted by name."""
    found: Dict[str, ModelInfo] = {}
    for folder in model_dirs(models_dir):
        if not folder.is_dir():
            continue
        for record in sorted(folder.glob("*.json")):
            info = _read_record(record)
            if info.name not in found and info.weights_path.exists():
                found[info.name] = info
    return [found[k] for k in sorted(found)]


def get_model(name: str, models_dir: Optional[Union[str, Path]] = None) -> ModelInfo:
    """The record of model ``name``. Raises NeuroContrastError listing the available names if absent."""
    for info in list_models(models_dir):
        if info.name == name:
            return info
    available = ", ".join(i.name for i in list_models(models_dir)) or "none"
    raise NeuroContrastError(f"model '{name}' not found in {', '.join(map(str, model_dirs(models_dir)))} "
                             f"(available: {available}); train it with `neurocontrast train` or set "
                             "NEUROCONTRAST_MODELS_DIR")


def verify(info: ModelInfo) -> bool:
    """True if the weights file exists and its sha256 matches the record."""
    return info.weights_path.exists() and sha256_file(info.weights_path) == info.sha256


def load_state_dict(model: Union[str, ModelInfo], models_dir: Optional[Union[str, Path]] = None,
                    check: bool = True, device: str = "cpu") -> Tuple[Dict[str, Any], ModelInfo]:
    """Load a model's tensors with ``safetensors.torch.load_file`` (no pickle).

    Returns ``(state_dict, info)``. Raises NeuroContrastError if the model is unknown or, with
    ``check=True``, if the file's sha256 differs from the record (corrupt or replaced file).
    """
    from safetensors.torch import load_file

    info = model if isinstance(model, ModelInfo) else get_model(model, models_dir)
    if check and not verify(info):
        raise NeuroContrastError(f"model '{info.name}': {info.weights_path} does not match its sha256 "
                                 f"{info.sha256[:12]}… (corrupt or replaced file); reinstall or retrain it")
    try:
        state = load_file(str(info.weights_path), device=device)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise NeuroContrastError(f"model '{info.name}': cannot read {info.weights_path}: {exc}") from None
    return state, info


def save_model(state_dict: Dict[str, Any], out_dir: Union[str, Path], name: str, architecture: str,
               config: Dict[str, Any], input_channels: Sequence[str] = (), version: str = "0",
               model_card: str = "", description: str = "", training: Optional[Dict[str, Any]] = None,
               metrics: Optional[Dict[str, Any]] = None) -> ModelInfo:
    """Write ``<name>.safetensors`` and its ``<name>.json`` record (with sha256 and size) into ``out_dir``.

    Tensors are made contiguous and moved to CPU first. Returns the record.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    weights = out / f"{name}.safetensors"
    save_file(tensors, str(weights), metadata={"name": name, "architecture": architecture, "version": version})
    info = ModelInfo(name=name, architecture=architecture, config=dict(config), sha256=sha256_file(weights),
                     size_bytes=weights.stat().st_size, version=version, input_channels=list(input_channels),
                     model_card=model_card, description=description, training=dict(training or {}),
                     metrics=dict(metrics or {}), directory=str(out))
    (out / f"{name}.json").write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
    return info
