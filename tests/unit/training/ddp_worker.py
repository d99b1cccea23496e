"""Train a tiny model for a few steps (one process, or one rank under torchrun) and save weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import tiny_sentiment
from compresslab.training import TaskLoss, TrainConfig, train

torch.set_num_threads(1)
out = Path(sys.argv[1])
tok = tiny_tokenizer(out.parent / f"tok{torch.randint(0, 10**9, ()).item()}")
model = tiny_model("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, seed=0)
loader = make_loader(tiny_sentiment(64, 0), tok, 8, 32, shuffle=True, seed=0, group_by_length=True)
train(model, loader, TrainConfig(lr=1e-3, steps=6, batch_size=8), [TaskLoss()])
if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
