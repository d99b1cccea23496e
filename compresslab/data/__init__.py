"""Tasks, metrics and loaders.

Importing this package stays light (numpy only); the torch-based loaders are imported on first
use of one of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from compresslab.data.metrics import agreement, compute_metrics, mcnemar_pvalue
from compresslab.data.tasks import (
    DATA_ENV_VAR,
    TASKS,
    DataFormatError,
    DataNotFoundError,
    Example,
    MissingSplit,
    SplitUnavailableError,
    TaskData,
    TaskKind,
    TaskSpec,
    check_data_available,
    get_task,
    load_task,
    resolve_data_root,
)
from compresslab.data.checks import check_labels_match_head, check_tokenizable
from compresslab.data.user import task_from_user_data

_LAZY = {
    "calibration_examples": "compresslab.data.loaders",
    "make_loader": "compresslab.data.loaders",
    "side_inputs": "compresslab.data.loaders",
    "token_lengths": "compresslab.data.loaders",
    "tokenize_examples": "compresslab.data.loaders",
}

__all__ = [
    "DATA_ENV_VAR", "TASKS", "DataFormatError", "DataNotFoundError", "Example", "MissingSplit",
    "SplitUnavailableError", "TaskData", "TaskKind", "TaskSpec", "agreement", "check_data_available",
    "check_labels_match_head", "check_tokenizable", "compute_metrics", "get_task", "load_task", "mcnemar_pvalue",
    "resolve_data_root", "task_from_user_data", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compresslab.data' has no attribute {name!r}")
