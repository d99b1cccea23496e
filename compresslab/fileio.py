"""Atomic file writes and JSON I/O: readers see a file whole or not at all, published with the mode a plain
``open`` gives under the umask, and safetensors files whose bytes depend on their content only."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def process_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere it is read by setting and restoring it
    (``os.umask`` has no getter), which another thread creating a file at that instant could see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    m = os.umask(0o077)
    os.umask(m)
    return m


def publish_mode(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a directory alone) the mode a plain ``open``/``mkdir`` gives under the umask
    (0644 / 0755 at the usual 022). Temp files and dirs are private (``mkstemp`` 0600, ``mkdtemp`` 0700), and
    safetensors writes its files 0600: moved into place as they are, a checkpoint or export would be unreadable
    to the service account that loads it. A symlink is left alone (chmod would change its target)."""
    p = Path(path)
    if p.is_symlink():  # chmod would change the target's mode, not the link's
        return
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~process_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same directory and ``os.replace``: readers see the old file or
    the new one, never a mix. Keeps an existing file's mode; a new file gets :func:`publish_mode`'s (mkstemp
    would leave it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            publish_mode(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    """What ``json.dumps`` writes for a value it cannot: a numpy/torch scalar's item, a path's text, an enum's value."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "value"):
        return o.value
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors serialization of ``tensors`` with the header's ``__metadata__`` keys sorted.

    safetensors (0.8, upstream issue #584) writes metadata in a Rust HashMap's random order, so two
    saves of the same tensors differed in their header bytes and artifact hashes were not
    reproducible. The header is re-encoded with sorted keys and re-padded to 8 bytes; tensor data
    offsets are relative to the end of the header, so the data part is unchanged.
    """
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def atomic_write_safetensors(path: str | os.PathLike, tensors: dict[str, Any],
                             metadata: dict[str, str] | None = None) -> Path:
    """Write :func:`safetensors_bytes` atomically (identical tensors and metadata -> identical bytes)."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))
    return Path(path)

