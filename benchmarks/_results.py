"""A benchmark's resumable results file: nested JSON keys, written atomically after every item."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from compresslab.manifest import atomic_write_json, read_json

_MISSING = object()


class ResultsFile:
    """``benchmarks/results/<topic>.json`` as a nested dict: ``put(["a", "b"], v)`` sets ``data["a"]["b"]``
    and rewrites the file atomically, so a stopped benchmark keeps every finished item."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict:
        return read_json(self.path) if self.path.is_file() else {}

    def put(self, keys: Sequence[str], value: Any) -> None:
        data = self.load()
        node = data
        *parents, last = keys
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
        atomic_write_json(self.path, data)

    def get(self, keys: Sequence[str], default: Any = None) -> Any:
        node: Any = self.load()
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def has(self, keys: Sequence[str]) -> bool:
        return self.get(keys, _MISSING) is not _MISSING
