"""The caller's random streams, kept: the public API functions and the training loop run on forks of them."""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def rng_kept(cuda: bool = False) -> Iterator[None]:
    """Restore the process's random streams on leaving the block: torch's CPU generator, Python's ``random``,
    numpy's global state, and the CUDA generators when ``cuda`` is true or CUDA is already initialised
    (forking them otherwise would start CUDA). Code inside may seed and draw freely; the caller sees its
    streams as they were. Limit: a CUDA generator first used inside the block with ``cuda`` false keeps what
    the block did to it."""
    import random

    import numpy as np
    import torch

    use_cuda = torch.cuda.is_available() and (cuda or torch.cuda.is_initialized())
    devices = list(range(torch.cuda.device_count())) if use_cuda else []
    py, npy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def callers_rng_kept(fn: F) -> F:
    """Run ``fn`` under :func:`rng_kept`. The passes seed the streams for their own reproducibility, and checks,
    training and DataLoaders (a base seed per iteration) draw from them; a notebook's own streams are not ours
    to move."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with rng_kept():
            return fn(*args, **kwargs)
    wrapper.__rng_kept__ = True  # type: ignore[attr-defined]  # the public-face test asks for it
    return wrapper  # type: ignore[return-value]
