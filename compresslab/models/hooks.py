"""Forward hooks that always come off: capture what modules see while a model runs."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterator, Mapping

from torch import nn


@contextlib.contextmanager
def _hooked(register: Callable[[], list[Any]]) -> Iterator[None]:
    """Register hooks on entering (``register()`` returns their handles); remove them on exit."""
    handles = register()
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def capture_inputs(modules: Mapping[Hashable, nn.Module],
                   sink: Callable[[Hashable, Any], Any]) -> contextlib.AbstractContextManager[None]:
    """Call ``sink(key, x)`` with the input of each module on every forward; hooks always removed."""
    return _hooked(lambda: [m.register_forward_pre_hook(lambda _m, args, key=key: sink(key, args[0]))
                            for key, m in modules.items()])


def capture_outputs(modules: Mapping[Hashable, nn.Module],
                    sink: Callable[[Hashable, Any], Any]) -> contextlib.AbstractContextManager[None]:
    """Call ``sink(key, y)`` with the output of each module on every forward (the graph kept, so a
    loss on ``y`` backpropagates); hooks always removed."""
    return _hooked(lambda: [m.register_forward_hook(lambda _m, _args, out, key=key: sink(key, out))
                            for key, m in modules.items()])


__all__ = ["capture_inputs", "capture_outputs"]
