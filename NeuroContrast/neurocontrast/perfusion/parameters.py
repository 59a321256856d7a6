"""Typed, self-validating parameters of the perfusion pipeline, one object per method family.

Each family is a frozen dataclass shaped like :class:`~neurocontrast.perfusion.maps.PerfusionConstants`:
it validates itself in ``__post_init__``, writes itself whole into ``report.json`` with ``as_dict()`` and
carries the command-line option of each field in the field's metadata, so that the same object is built
by the CLI (:func:`add_cli_options` / :func:`from_cli`), by the Slicer logic and by Python callers, and
reaches the core unchanged:

- :class:`SVDParams` -- sSVD, cSVD and oSVD (each SVD method has its own threshold);
- :class:`TikhonovParams` -- Tikhonov regularisation;
- :class:`PerfusionOptions` -- everything :func:`~neurocontrast.perfusion.pipeline.run_perfusion` needs
  besides the data: method, AIF mode, smoothing, VOF rescaling, the two families above and the
  physiological constants.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np

from neurocontrast.errors import NeuroContrastError
from neurocontrast.perfusion.deconvolution import CSVD_THRESHOLD, OSVD_OI, OSVD_THRESHOLDS, SSVD_THRESHOLD
from neurocontrast.perfusion.maps import PerfusionConstants

#: Default in-plane Gaussian smoothing (FWHM, mm) of the tissue ΔR2* before deconvolution (0 = none).
#: Measured on the phantom at SNR 40 (6 noise seeds, oSVD): Dice of Tmax > 6 s 0.963-0.967 with 5 mm,
#: 0.895-0.925 without; CBV median ratio unchanged (docs/perfusion.md).
SMOOTHING_FWHM_MM = 5.0
#: AIF modes of the pipeline: a drawn mask or the automatic suggestion (Mouridsen et al. 2006).
AIF_MODES = ("mask", "auto")


def _option(flag: str, help_text: str, metavar: str = "", **extra) -> Dict[str, Any]:
    return {"cli": dict(flag=flag, help=help_text, metavar=metavar, **extra)}


def _fraction(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and 0 < value < 1):
        raise NeuroContrastError(f"{name} must be a fraction of the largest singular value in (0, 1), got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class SVDParams:
    """Truncation parameters of the SVD deconvolutions (Østergaard et al. 1996; Wu et al. 2003).

    ssvd_threshold : sSVD relative singular-value threshold, default 0.2 (Østergaard 1996), in (0, 1).
    csvd_threshold : cSVD relative singular-value threshold, default 0.1 (Wu 2003), in (0, 1).
    osvd_oi : oSVD oscillation-index limit, default 0.095 (Wu 2003), > 0.
    osvd_thresholds : oSVD candidate thresholds, strictly ascending fractions in (0, 1)
        (default :data:`~neurocontrast.perfusion.deconvolution.OSVD_THRESHOLDS`).
    Raises NeuroContrastError on values outside those ranges.
    """

    ssvd_threshold: float = dataclasses.field(default=SSVD_THRESHOLD, metadata=_option(
        "--ssvd-threshold", "sSVD relative singular-value threshold", "F"))
    csvd_threshold: float = dataclasses.field(default=CSVD_THRESHOLD, metadata=_option(
        "--csvd-threshold", "cSVD relative singular-value threshold", "F"))
    osvd_oi: float = dataclasses.field(default=OSVD_OI, metadata=_option(
        "--osvd-oi", "oSVD oscillation-index limit (Wu 2003)", "OI"))
    osvd_thresholds: Tuple[float, ...] = dataclasses.field(default=OSVD_THRESHOLDS, metadata=_option(
        "--osvd-thresholds", "oSVD candidate thresholds, ascending fractions", "F", nargs="+"))

    def __post_init__(self):
        object.__setattr__(self, "ssvd_threshold", _fraction("ssvd_threshold", self.ssvd_threshold))
        object.__setattr__(self, "csvd_threshold", _fraction("csvd_threshold", self.csvd_threshold))
        if not (np.isfinite(self.osvd_oi) and self.osvd_oi > 0):
            raise NeuroContrastError(f"osvd_oi must be > 0, got {self.osvd_oi!r}")
        object.__setattr__(self, "osvd_oi", float(self.osvd_oi))
        thr = tuple(_fraction("osvd_thresholds", v) for v in self.osvd_thresholds)
        if not thr or any(b <= a for a, b in zip(thr, thr[1:])):
            raise NeuroContrastError(f"osvd_thresholds must be strictly ascending, got {thr}")
        object.__setattr__(self, "osvd_thresholds", thr)

    def threshold(self, method: str) -> Optional[float]:
        """The truncation threshold of ``method`` (``"ssvd"`` or ``"csvd"``; None for others)."""
        return {"ssvd": self.ssvd_threshold, "csvd": self.csvd_threshold}.get(method)

    def with_threshold(self, method: str, value: float) -> "SVDParams":
        """A copy whose ``method`` threshold (sSVD or cSVD) is ``value``; other methods: unchanged copy."""
        if method == "ssvd":
            return dataclasses.replace(self, ssvd_threshold=value)
        if method == "csvd":
            return dataclasses.replace(self, csvd_threshold=value)
        return self

    def deconvolve_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`~neurocontrast.perfusion.deconvolution.deconvolve`."""
        return dataclasses.asdict(self)

    def as_dict(self) -> Dict[str, Any]:
        """All fields (for report.json)."""
        d = dataclasses.asdict(self)
        d["osvd_thresholds"] = list(self.osvd_thresholds)
        return d


@dataclasses.dataclass(frozen=True)
class TikhonovParams:
    """Tikhonov regularisation: ``min ||A k − c||² + λ²||k||²`` (filter factors s²/(s²+λ²)).

    lambda_ : λ relative to the largest singular value, > 0; None (default) picks one λ for the whole
        series by generalised cross-validation pooled over the brain voxels (Golub, Heath & Wahba 1979;
        :func:`~neurocontrast.perfusion.deconvolution.tikhonov_gcv_lambda`). Raises NeuroContrastError on
        λ <= 0 or non-finite.
    """

    lambda_: Optional[float] = dataclasses.field(default=None, metadata=_option(
        "--tikhonov-lambda", "Tikhonov λ relative to the largest singular value; unset: one λ for the "
        "series by generalised cross-validation", "L"))

    def __post_init__(self):
        if self.lambda_ is not None:
            if isinstance(self.lambda_, str):
                if self.lambda_.lower() != "gcv":
                    raise NeuroContrastError(f"lambda_ must be a number > 0 or 'gcv', got {self.lambda_!r}")
                object.__setattr__(self, "lambda_", None)
                return
            if not (np.isfinite(self.lambda_) and self.lambda_ > 0):
                raise NeuroContrastError(f"lambda_ must be > 0 (or None for GCV), got {self.lambda_!r}")
            object.__setattr__(self, "lambda_", float(self.lambda_))

    def deconvolve_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`~neurocontrast.perfusion.deconvolution.deconvolve`."""
        return {"lambda_": "gcv" if self.lambda_ is None else self.lambda_}

    def as_dict(self) -> Dict[str, Any]:
        """All fields (for report.json); ``lambda_`` None means generalised cross-validation (the chosen λ
        is in the report's ``maps_details``)."""
        return {"lambda_": self.lambda_, "rule": "gcv" if self.lambda_ is None else "fixed"}


def _method_names() -> Tuple[str, ...]:
    from neurocontrast.perfusion.pipeline import MAP_METHODS

    return tuple(MAP_METHODS)


@dataclasses.dataclass(frozen=True)
class PerfusionOptions:
    """Everything :func:`~neurocontrast.perfusion.pipeline.run_perfusion` needs besides the data.

    method : a key of :data:`~neurocontrast.perfusion.pipeline.MAP_METHODS` (default ``"osvd"``).
    aif : ``"mask"`` (drawn) or ``"auto"`` (Mouridsen 2006 suggestion).
    smoothing_fwhm_mm : in-plane Gaussian smoothing of the tissue ΔR2* inside the brain, FWHM in mm, >= 0
        (default :data:`SMOOTHING_FWHM_MM`; 0 = none).
    vof_rescale : rescale the AIF to the VOF area when a VOF is given (Cao et al. eq. 8; default True).
    svd : :class:`SVDParams`. tikhonov : :class:`TikhonovParams`.
    constants : :class:`~neurocontrast.perfusion.maps.PerfusionConstants` (hematocrits, density, kH/ρ).
    Raises NeuroContrastError on an unknown method or AIF mode, a negative or non-finite smoothing.
    """

    method: str = "osvd"
    aif: str = "mask"
    smoothing_fwhm_mm: float = dataclasses.field(default=SMOOTHING_FWHM_MM, metadata=_option(
        "--smoothing-fwhm", "in-plane Gaussian smoothing of the tissue ΔR2* inside the brain before "
        "deconvolution, FWHM in mm (0 = none)", "MM"))
    vof_rescale: bool = True
    svd: SVDParams = dataclasses.field(default_factory=SVDParams)
    tikhonov: TikhonovParams = dataclasses.field(default_factory=TikhonovParams)
    constants: PerfusionConstants = dataclasses.field(default_factory=PerfusionConstants)

    def __post_init__(self):
        method = str(self.method).lower()
        if method not in _method_names():
            raise NeuroContrastError(f"unknown perfusion method {self.method!r}; expected one of "
                                     f"{', '.join(_method_names())}")
        object.__setattr__(self, "method", method)
        if self.aif not in AIF_MODES:
            raise NeuroContrastError(f"aif must be one of {', '.join(AIF_MODES)}, got {self.aif!r}")
        fwhm = self.smoothing_fwhm_mm
        if fwhm is None or not np.isfinite(fwhm) or fwhm < 0:
            raise NeuroContrastError(f"smoothing_fwhm_mm must be >= 0 mm, got {fwhm!r}")
        object.__setattr__(self, "smoothing_fwhm_mm", float(fwhm))
        for name, cls in (("svd", SVDParams), ("tikhonov", TikhonovParams), ("constants", PerfusionConstants)):
            if not isinstance(getattr(self, name), cls):
                raise NeuroContrastError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    def deconvolve_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of ``deconvolve`` for the chosen method (empty for a network)."""
        if self.method == "tikhonov":
            return self.tikhonov.deconvolve_kwargs()
        if self.method in ("ssvd", "csvd", "osvd"):
            return self.svd.deconvolve_kwargs()
        return {}

    def updated(self, **changes) -> "PerfusionOptions":
        """A validated copy with ``changes``; keys may also name a field of ``svd``, ``tikhonov`` or
        ``constants`` (e.g. ``osvd_oi=0.1``, ``lambda_=0.3``). Raises NeuroContrastError on an unknown key."""
        own = {f.name for f in dataclasses.fields(self)}
        top = {k: v for k, v in changes.items() if k in own}
        for name in ("svd", "tikhonov", "constants"):
            sub = top.get(name, getattr(self, name))
            fields = {f.name for f in dataclasses.fields(sub)}
            mine = {k: v for k, v in changes.items() if k in fields}
            if mine:
                top[name] = dataclasses.replace(sub, **mine)
        known = own | {f.name for n in ("svd", "tikhonov", "constants") for f in dataclasses.fields(getattr(self, n))}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise NeuroContrastError(f"unknown perfusion parameter(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **top)

    def as_dict(self) -> Dict[str, Any]:
        """The whole parameter set, nested by family (for report.json)."""
        return {"method": self.method, "aif": self.aif, "smoothing_fwhm_mm": self.smoothing_fwhm_mm,
                "vof_rescale": self.vof_rescale, "svd": self.svd.as_dict(), "tikhonov": self.tikhonov.as_dict(),
                "constants": self.constants.as_dict()}


# ------------------------------------------------------------------------------------------ CLI bridge

def _cli_fields(cls):
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata]


def add_cli_options(parser: argparse.ArgumentParser, cls) -> None:
    """Add one option per field of ``cls`` that carries CLI metadata (flag, help, metavar, nargs).

    The option's default is None (meaning: the dataclass default, shown in the help), so that
    :func:`from_cli` builds the object with exactly the fields the user gave.
    """
    for f in _cli_fields(cls):
        spec = dict(f.metadata["cli"])
        flag = spec.pop("flag")
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "GCV" if default is None else (" ".join(f"{v:g}" for v in default)
                                                   if isinstance(default, tuple) else f"{default:g}")
        spec["help"] = f"{spec['help']} (default {shown})"
        parser.add_argument(flag, dest=f"{cls.__name__}.{f.name}", type=float, default=None, **spec)


def from_cli(cls, args: argparse.Namespace, **extra):
    """An instance of ``cls`` from the options :func:`add_cli_options` added (unset ones keep their
    defaults) plus ``extra`` fields. Validation errors are NeuroContrastError naming the option."""
    values = dict(extra)
    for f in _cli_fields(cls):
        value = getattr(args, f"{cls.__name__}.{f.name}", None)
        if value is not None:
            values[f.name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**values)
    except NeuroContrastError as exc:
        flags = {f.name: f.metadata["cli"]["flag"] for f in _cli_fields(cls)}
        message = str(exc)
        for name, flag in flags.items():
            if message.startswith(name):
                message = flag + message[len(name):]
        raise NeuroContrastError(message) from None
