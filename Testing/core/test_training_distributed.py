"""Data-parallel training (``neurocontrast train ... --nproc N``): the launcher, sharding, a 2-process gloo run."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from neurocontrast.cli import build_parser, main
from neurocontrast.errors import NeuroContrastError
from neurocontrast.training import distributed

TINY = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--encoding", "16", "--n-frames", "16",
        "--slice-size", "32", "--seed", "3"]


def test_launcher_reruns_the_command_under_torchrun():
    args = build_parser().parse_args(["train", "tmaxnet", "--out", "run", "--nproc", "2", "--lr", "0.001",
                                      "--resume", "--crop", "16"])
    parser = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    tmax = next(a for a in parser._actions if a.dest == "train_command").choices["tmaxnet"]
    argv = distributed.torchrun_argv(args, ("train", "tmaxnet"), tmax)
    assert argv[:6] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
                        "--standalone"]
    rest = argv[argv.index("neurocontrast") + 1:]
    assert rest[:2] == ["train", "tmaxnet"] and "--nproc" not in rest
    assert set(zip(rest, rest[1:])) >= {("--out", "run"), ("--lr", "0.001"), ("--crop", "16")} and "--resume" in rest
    multi = build_parser().parse_args(["train", "stnet", "--out", "r", "--nproc", "4", "--nnodes", "2"])
    with pytest.raises(NeuroContrastError, match="needs --rdzv"):
        distributed.torchrun_argv(multi, ("train", "stnet"), tmax)
    multi.rdzv = "node1:29400"
    assert "--rdzv-endpoint=node1:29400" in distributed.torchrun_argv(multi, ("train", "stnet"), tmax)


def test_without_torchrun_everything_is_the_single_process_path(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    model = torch.nn.Linear(2, 1)
    assert distributed.wrap(model) is model and not distributed.active() and distributed.is_main()
    assert distributed.torch_seed(5, 2) == 7
    assert np.array_equal(distributed.epoch_rng(5, 2).random(4), np.random.default_rng([5, 0, 2]).random(4))
    assert distributed.shard(["a", "b", "c"]) == ["a", "b", "c"] and distributed.any_rank(True)


def test_sharding_gives_each_rank_its_own_data(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rank0 = distributed.shard(list("abcde"))
    stream0 = distributed.epoch_rng(1, 1).random(3)
    monkeypatch.setenv("RANK", "1")
    rank1 = distributed.shard(list("abcde"))
    stream1 = distributed.epoch_rng(1, 1).random(3)
    assert rank0 == ["a", "c", "e"] and rank1 == ["b", "d", "a"]  # DistributedSampler: padded to equal shares
    assert np.array_equal(stream0, np.random.default_rng([1, 0, 1]).random(3)) and not np.array_equal(stream0, stream1)


def test_two_process_gloo_run_against_one_process(tmp_path, capfd, monkeypatch):
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "NeuroContrast"))
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))  # for torchrun's ranks
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "tmaxnet", "--out", str(one), *TINY]) == 0
    assert main(["train", "tmaxnet", "--out", str(two), *TINY, "--nproc", "2"]) == 0
    m1, m2 = json.loads((one / "last.json").read_text(encoding="utf-8")), json.loads((two / "last.json").read_text(encoding="utf-8"))
    assert m2["distributed"] == {"world_size": 2, "backend": "gloo", "max_weight_difference_between_ranks": 0.0}
    # rank 0 starts from the same weights and draws the same first batch as the single process; the step's
    # gradient is averaged with rank 1's different batch, so the weights then differ
    assert m2["history"][0]["train"]["loss"] == pytest.approx(m1["history"][0]["train"]["loss"], rel=1e-4)
    from safetensors.torch import load_file

    w1, w2 = load_file(str(one / "best.safetensors")), load_file(str(two / "best.safetensors"))
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)
    assert (two / "model" / "tmaxnet.safetensors").is_file()
    capfd.readouterr()
    # resumable: a second 2-process run continues from rank 0's checkpoint
    resume = [a if a != "1" or i != 1 else "2" for i, a in enumerate(TINY)]
    assert main(["train", "tmaxnet", "--out", str(two), *resume, "--nproc", "2", "--resume"]) == 0
    out = capfd.readouterr().out
    assert out.count("resumed from epoch 1") == 1 and out.count("epoch 2:") == 1  # rank 0 alone prints
    m3 = json.loads((two / "last.json").read_text(encoding="utf-8"))
    assert [h["epoch"] for h in m3["history"]] == [1, 2]
    assert m3["distributed"]["max_weight_difference_between_ranks"] == 0.0
    assert len((two / "history.jsonl").read_text(encoding="utf-8").splitlines()) == 2
