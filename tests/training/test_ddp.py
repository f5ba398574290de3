"""Pretraining under torchrun with two gloo processes keeps both ranks' weights identical."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from bnncl.models import build_model, preset_config
from fixtures import write_idx_dataset


def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data, n_train=64, n_test=16, seed=3)
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
           str(data), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k

    # Training happened: the weights moved away from the seeded initialisation.
    torch.manual_seed(0)
    init = build_model(preset_config("fmnist", 10)).state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.equal(init[k], r0["state"][k])]
    assert "layers.head.weight" in moved and any(".conv.weight" in k for k in moved)
    # Only rank 0 writes the checkpoint, and it is complete.
    assert (tmp_path / "model.pt").is_file()
