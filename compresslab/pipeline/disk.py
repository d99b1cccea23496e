"""Disk use of a run: one copy of each artifact (``run.keep=minimal``) or every file as written (``all``).

A run writes the same bytes several times: the finetune step's checkpoint is byte for byte the
teacher in the cache, and every step and export dir carries the tokenizer. With ``minimal`` (the
default), when the run finishes, byte-identical files under the run dir and the caches it used are
hard links to one copy (same bytes, same hashes, every path still there). ``all`` keeps separate
copies. Files are compared by size, then sha256; where a hard link is impossible (another file
system, or one without links) the copy stays. Nothing is deleted: the unfused ONNX export and the
intermediate fp32 exports are different artifacts (DeepSparse and ``ort_matmul_nbits`` read them).

Links are made only once the run has finished: nothing writes into a finished run's artifacts
afterwards (a re-benchmark or a regenerated report writes files of its own), and the teacher cache
is written as a temp dir whose files replace the old ones (``os.replace``), so a linked file is
never changed through another of its paths. Edit a copy of a run's file, never the file itself.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from compresslab.manifest import sha256_file

log = logging.getLogger(__name__)

KEEP = ("minimal", "all")
MIN_LINK_BYTES = 4096  # small files (configs, pass.json) are not worth an inode shared between dirs


@dataclass
class DiskUse:
    """What :func:`link_duplicates` found and did, for the manifest's ``disk`` section."""

    keep: str
    files: int = 0
    linked: int = 0  # files that became hard links to an identical file
    saved_bytes: int = 0
    bytes_before: int = 0  # the run dir and the cache entries it used, each inode counted once
    bytes_after: int = 0
    run_dir_bytes: int = 0  # the run dir alone, after

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_keep(value: Any) -> str:
    """``run.keep`` as given, or ValueError naming the setting and its allowed values."""
    if value not in KEEP:
        raise ValueError(f"run.keep={value!r}; allowed: {', '.join(KEEP)} (minimal: byte-identical artifacts "
                         "are hard links to one copy; all: every file keeps its own copy)")
    return str(value)


def _files(roots: Iterable[Path]) -> list[Path]:
    out = []
    for root in roots:
        if root.is_dir():
            out += [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return out


def disk_bytes(*roots: Path) -> int:
    """Bytes of the files under ``roots``, each inode counted once (hard links are one copy)."""
    seen: dict[tuple[int, int], int] = {}
    for p in _files(roots):
        st = p.stat()
        seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def _link(keep: Path, dup: Path) -> bool:
    """Replace ``dup`` by a hard link to ``keep`` atomically; False where links are impossible."""
    tmp = dup.with_name(f".{dup.name}.link{os.getpid()}")
    try:
        os.link(keep, tmp)
        os.replace(tmp, dup)
    except OSError as e:  # EXDEV (another file system), EPERM/ENOTSUP (no hard links there)
        tmp.unlink(missing_ok=True)
        log.debug("keeping %s as a copy (cannot link to %s: %s)", dup, keep, e)
        return False
    return True


def link_duplicates(run_dir: Path, also: Iterable[Path] = (), keep: str = "minimal") -> DiskUse:
    """Hard-link byte-identical files under ``run_dir`` and ``also`` (caches the run used) to one copy.

    The copy kept is the first by path, caches first (a cache entry outlives the runs that link
    it). Files under hidden dirs (``.hydra``) and files under :data:`MIN_LINK_BYTES` are left.
    Returns the :class:`DiskUse` (with ``keep="all"`` nothing is linked, only measured).
    """
    run_dir = Path(run_dir)
    roots = [Path(a) for a in also if Path(a).is_dir()] + [run_dir]
    use = DiskUse(keep=keep, bytes_before=disk_bytes(*roots))
    files = _files(roots)
    use.files = len(files)
    if keep == "minimal":
        by_size: dict[int, list[Path]] = defaultdict(list)
        for p in files:
            size = p.stat().st_size
            if size >= MIN_LINK_BYTES:
                by_size[size].append(p)
        for size, group in by_size.items():
            if len(group) < 2:
                continue
            by_hash: dict[str, list[Path]] = defaultdict(list)
            for p in group:
                by_hash[sha256_file(p)].append(p)
            for same in by_hash.values():
                first = same[0]
                ino = first.stat().st_ino
                for dup in same[1:]:
                    if dup.stat().st_ino != ino and _link(first, dup):
                        use.linked += 1
                        use.saved_bytes += size
    use.bytes_after, use.run_dir_bytes = disk_bytes(*roots), disk_bytes(run_dir)
    if use.linked:
        log.info("run.keep=minimal: %d identical file(s) now share one copy (%.1f MB saved); run dir %.1f MB",
                 use.linked, use.saved_bytes / 1e6, use.run_dir_bytes / 1e6)
    return use


__all__ = ["KEEP", "DiskUse", "check_keep", "disk_bytes", "link_duplicates"]
