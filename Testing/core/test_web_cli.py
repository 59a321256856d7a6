"""``neurocontrast web`` without the [web] extra, and the access policy (pure Python, no trame)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.web.access import AccessPolicy, is_loopback, reader_token

REPO = Path(__file__).resolve().parents[2]


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO / "NeuroContrast"))
    return subprocess.run([sys.executable, "-m", "neurocontrast", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_web_help_names_the_extra_and_the_default_address():
    done = _cli("web", "reader", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert 'pip install "neurocontrast[web]"' in text and "127.0.0.1" in text and "--host" in text


def test_default_policy_is_loopback_without_token_and_exposure_needs_one():
    policy = AccessPolicy()
    assert policy.host == "127.0.0.1" and policy.token is None and not policy.exposed
    assert policy.allows(None, None)
    with pytest.raises(NeuroContrastError, match="token"):
        AccessPolicy(host="0.0.0.0", port=8080, token=None)
    with pytest.raises(NeuroContrastError, match="port"):
        AccessPolicy(port=0)
    exposed = AccessPolicy(host="10.0.0.5", port=8080, token="t" * 32)
    assert exposed.exposed and exposed.url().endswith("?token=" + "t" * 32)
    assert not exposed.allows(None, None) and not exposed.allows("wrong", None)
    assert exposed.allows("t" * 32, None) and exposed.allows(None, "t" * 32)
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("0.0.0.0")


def test_reader_tokens_are_per_reader_private_and_stable(tmp_path):
    r1, r2 = reader_token(tmp_path, "R1"), reader_token(tmp_path, "R2")
    assert r1 != r2 and len(r1) >= 30
    assert reader_token(tmp_path, "R1") == r1  # survives a server restart
    assert reader_token(tmp_path, "R1", renew=True) != r1
    mode = stat.S_IMODE((tmp_path / "web" / "R1.token").stat().st_mode)
    assert mode == 0o600
    with pytest.raises(NeuroContrastError):
        reader_token(tmp_path, "../R1")


def test_starting_an_app_without_the_extra_says_how_to_install(tmp_path):
    pytest.importorskip("neurocontrast")
    import importlib.util

    if importlib.util.find_spec("trame_slicer") is not None:
        pytest.skip("the [web] extra is installed here; Testing/web covers the apps")
    done = _cli("web", "perfusion", str(tmp_path / "dsc.nii.gz"))
    assert done.returncode == 2 and "[web] extra" in done.stderr and "pip install" in done.stderr


def test_the_pure_core_never_imports_slicer_qt_or_vtk():
    """The trame apps that drive the module logics live beside the core (``neurocontrast_web``), not in it."""
    import re
    from pathlib import Path

    core = Path(__file__).resolve().parents[2] / "NeuroContrast" / "neurocontrast"
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|ctk|vtk|vtkmodules)\b", re.M)
    offenders = [str(p.relative_to(core)) for p in core.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert (core.parent / "neurocontrast_web" / "scene.py").is_file()
