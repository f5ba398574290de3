"""Run by tests/training/test_ddp.py under torchrun: a few DDP steps, then every rank dumps its weights."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bnncl.training.pretrain import PretrainOptions, pretrain

data, out = sys.argv[1], Path(sys.argv[2])
opts = PretrainOptions(data=data, epochs=1, batch_size=8, out=str(out / "model.pt"), progress=False,
                       max_steps_per_epoch=3)
model, result = pretrain(opts)
rank = dist.get_rank()
torch.save({"state": model.state_dict(), "world_size": result["world_size"]}, out / f"rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
