"""Collect Fisher outer sums (one process, or one rank under torchrun) and save them."""

import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn

from compresslab.pruning.fisher import collect_outer_sums
from compresslab.training.dist import rank_batches

torch.set_num_threads(1)
if "RANK" in os.environ:
    torch.distributed.init_process_group("gloo")
torch.manual_seed(0)
x, y = torch.randn(64, 8), torch.randn(64)
model = nn.Sequential(nn.Linear(8, 1, bias=False))
loader = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]


def mse(m, b):
    return ((m(b["x"]).squeeze(-1) - b["y"]) ** 2).mean()


pruned = {"0": torch.zeros(8, dtype=torch.bool)}
sums = collect_outer_sums(model, {"0": model[0]}, pruned, rank_batches(loader, torch.device("cpu")), 8, 4, mse)
if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
    save_file({"0": sums["0"]}, sys.argv[1])
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
