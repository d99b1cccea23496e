"""The single training loop, its loss plug-ins, and KD recovery (``Recovery`` + ``recover``)."""

from compresslab.training.loop import TrainConfig, TrainResult, train
from compresslab.training.losses import (
    MODEL_INPUTS, AttentionKD, EmbeddingKD, HiddenMSE, LogitKD, TaskLoss, build_losses, mean_pool, task_loss)
from compresslab.training.recovery import Recovery, recover

__all__ = ["MODEL_INPUTS", "TrainConfig", "TrainResult", "train", "AttentionKD", "EmbeddingKD", "HiddenMSE",
           "LogitKD", "Recovery", "TaskLoss", "build_losses", "mean_pool", "recover", "task_loss"]
