"""Fisher outer sums of a fixed toy regression: ``fisher_sums()`` in one process (imported by the
test), or one rank's share under torchrun (run as a script: all-reduced, rank 0 saves them)."""

import os
import sys

import torch
from torch import nn

from compresslab.pruning.fisher import collect_outer_sums
from compresslab.training.dist import rank_batches


def mse(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return ((m(b["x"]).squeeze(-1) - b["y"]) ** 2).mean()


def fisher_sums() -> torch.Tensor:
    """The (num_blocks, 4, 4) outer sums of 8 mini-batch gradients of a Linear(8, 1), blocks of 4;
    under torch.distributed, each rank takes every world-th batch and the sums are all-reduced."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64)
    model = nn.Sequential(nn.Linear(8, 1, bias=False))
    loader = [{"x": x[i:i + 8], "y": y[i:i + 8]} for i in range(0, 64, 8)]
    pruned = {"0": torch.zeros(8, dtype=torch.bool)}
    return collect_outer_sums(model, {"0": model[0]}, pruned, rank_batches(loader, torch.device("cpu")), 8, 4,
                              mse)["0"]


if __name__ == "__main__":
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    sums = fisher_sums()
    if torch.distributed.get_rank() == 0:
        save_file({"0": sums}, sys.argv[1])
    torch.distributed.destroy_process_group()
