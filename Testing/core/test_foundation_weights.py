"""neurocontrast.weights: safetensors records, sha256 verification, clear errors."""

import pytest
import torch

from neurocontrast import weights
from neurocontrast.errors import NeuroContrastError


def test_save_list_load_and_detect_tampering(tmp_path):
    state = {"conv.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "conv.bias": torch.ones(3)}
    info = weights.save_model(state, tmp_path, "tiny", architecture="Linear", config={"in": 4, "out": 3},
                              input_channels=["t1"], version="1")
    assert info.size_bytes > 0 and len(info.sha256) == 64
    assert "tiny" in [m.name for m in weights.list_models(tmp_path)]  # shipped models are listed too
    loaded, record = weights.load_state_dict("tiny", models_dir=tmp_path)
    assert torch.equal(loaded["conv.weight"], state["conv.weight"])
    assert record.input_channels == ["t1"] and weights.verify(record)
    data = bytearray(info.weights_path.read_bytes())
    data[-1] ^= 0xFF
    info.weights_path.write_bytes(bytes(data))
    assert not weights.verify(weights.get_model("tiny", tmp_path))
    with pytest.raises(NeuroContrastError, match="sha256"):
        weights.load_state_dict("tiny", models_dir=tmp_path)


def test_unknown_model_names_the_alternatives(tmp_path):
    weights.save_model({"w": torch.zeros(1)}, tmp_path, "known", architecture="x", config={})
    with pytest.raises(NeuroContrastError, match="known"):
        weights.get_model("absent", tmp_path)
