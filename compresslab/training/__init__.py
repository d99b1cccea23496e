"""The single training loop and its loss plug-ins."""

from compresslab.training.loop import TrainConfig, TrainResult, train
from compresslab.training.losses import (
    AttentionKD, EmbeddingKD, HiddenMSE, LogitKD, TaskLoss, build_losses, mean_pool)

__all__ = ["TrainConfig", "TrainResult", "train", "AttentionKD", "EmbeddingKD", "HiddenMSE", "LogitKD",
           "TaskLoss", "build_losses", "mean_pool"]
