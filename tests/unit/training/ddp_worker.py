"""Train a tiny model for a few steps: ``train_tiny(tok_dir)`` in one process (imported by the
test), or one rank of it under torchrun (run as a script: rank 0 saves the weights)."""

import sys
from pathlib import Path

import torch

from compresslab.data.loaders import make_loader
from compresslab.models.tiny import tiny_model, tiny_tokenizer
from compresslab.testing import tiny_sentiment
from compresslab.training import TaskLoss, TrainConfig, train


def train_tiny(tok_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict of a tiny BERT after 6 steps at global batch 8 (split across ranks under torchrun)."""
    torch.manual_seed(0)  # the same start whatever the caller's random state
    tok = tiny_tokenizer(tok_dir)
    model = tiny_model("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, seed=0)
    loader = make_loader(tiny_sentiment(64, 0), tok, 8, 32, shuffle=True, seed=0, group_by_length=True)
    train(model, loader, TrainConfig(lr=1e-3, steps=6, batch_size=8), [TaskLoss()])
    return {k: v.contiguous() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    state = train_tiny(out.parent / f"tok{torch.randint(0, 10**9, ()).item()}")  # one tokenizer dir per rank
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        save_file(state, str(out))
