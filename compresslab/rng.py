"""The caller's random streams, kept: the public API functions run on forks of them."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def callers_rng_kept(fn: F) -> F:
    """Run ``fn`` with the caller's random streams restored after it: torch's CPU generator (and the CUDA ones when
    CUDA is already initialised: forking them would otherwise start CUDA), Python's ``random`` and numpy's global
    state. The passes seed them for their own reproducibility, and checks, training and DataLoaders (a base seed
    per iteration) draw from them; a notebook's own streams are not ours to move. Limit: a CUDA generator first
    used inside ``fn`` keeps what ``fn`` did to it."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import random

        import numpy as np
        import torch

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        py, npy = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                return fn(*args, **kwargs)
        finally:
            random.setstate(py)
            np.random.set_state(npy)
    return wrapper  # type: ignore[return-value]
