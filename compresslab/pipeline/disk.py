"""Disk use of runs: one copy of each artifact (``run.keep=minimal``) or every file as written (``all``).

Runs write the same bytes many times: the finetune step's checkpoint is byte for byte the teacher
in the cache; every run from that teacher exports it to the same ONNX files (exports are
deterministic); every step and export dir carries the tokenizer. With ``minimal`` (the default),
when a run finishes, each of its files (and of the cache entries it used) becomes a hard link to one
copy in a content-addressed store, ``<paths.cache_dir>/blobs/<sha256[:2]>/<sha256[2:]>``: same
bytes, same hashes, every path still there, and a file that many runs share is on disk once. A blob
that nothing links any more (its runs deleted) is removed when the next run finishes. Where a hard
link is impossible (store on another file system, or one without links), identical files within the
run are linked to each other instead, else stay copies. ``all`` keeps separate copies.

Nothing is deleted: the unfused ONNX export and the intermediate fp32 exports are other artifacts
(OpenVINO and DeepSparse benchmarks and ``ort_matmul_nbits`` read the unfused graph).

Links are made only once a run has finished: nothing writes into a finished run's artifacts
afterwards (a re-benchmark or a regenerated report writes files of its own), and the teacher cache
is written as a temp dir whose files replace the old ones (``os.replace``), so a linked file is
never changed through another of its paths. Edit a copy of a run's file, never the file itself.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from compresslab.manifest import sha256_file
from compresslab.validate import choice_hint

log = logging.getLogger(__name__)

KEEP = ("minimal", "all")
MIN_LINK_BYTES = 4096  # small files (configs, pass.json) are not worth an inode shared between dirs


@dataclass
class DiskUse:
    """What :func:`link_duplicates` found and did, for the manifest's ``disk`` section."""

    keep: str
    files: int = 0
    linked: int = 0  # files that became hard links to an identical file (in the store or the run)
    saved_bytes: int = 0
    bytes_before: int = 0  # the run dir and the cache entries it used, each inode counted once
    bytes_after: int = 0
    run_dir_bytes: int = 0  # the run dir alone, after
    new_bytes: int = 0  # bytes this run added to the disk: its files no other run or cache entry shares
    store: str | None = None
    pruned: int = 0  # store blobs removed because nothing links them any more

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_keep(value: Any) -> str:
    """``run.keep`` as given, or ValueError naming the setting and its allowed values."""
    if value not in KEEP:
        raise ValueError(f"run.keep={value!r}; allowed: {', '.join(KEEP)} (minimal: byte-identical artifacts "
                         "are hard links to one copy; all: every file keeps its own copy)"
                         f"{choice_hint(value, KEEP)}")
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
    """Replace ``dup`` by a hard link to ``keep`` atomically; False where links are impossible. A link shares
    ``keep``'s mode, so ``keep`` first gains ``dup``'s permission bits (a blob stored 0600 by an older version, or
    under a stricter umask, would make the file just published unreadable again); a blob we may not chmod is left
    as it is and ``dup`` stays a copy unless the modes already agree."""
    want = stat.S_IMODE(dup.stat().st_mode)
    have = stat.S_IMODE(keep.stat().st_mode)
    if have | want != have:
        try:
            os.chmod(keep, have | want)
        except OSError as e:  # another user's blob
            log.debug("keeping %s as a copy (cannot widen the mode of %s: %s)", dup, keep, e)
            return False
    tmp = dup.with_name(f".{dup.name}.link{os.getpid()}")
    try:
        os.link(keep, tmp)
        os.replace(tmp, dup)
    except OSError as e:  # EXDEV (another file system), EPERM/ENOTSUP (no hard links there), a pruned blob
        tmp.unlink(missing_ok=True)
        log.debug("keeping %s as a copy (cannot link to %s: %s)", dup, keep, e)
        return False
    return True


def _blob(store: Path, digest: str) -> Path:
    return store / digest[:2] / digest[2:]


def _into_store(p: Path, digest: str, store: Path) -> bool | None:
    """Make ``p`` one path of its store blob: True when ``p`` was replaced by a link to an existing
    blob, False when ``p`` became the blob (or already is), None when the store cannot be used."""
    blob = _blob(store, digest)
    try:
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            try:
                os.link(p, blob)  # this file's inode becomes the blob: nothing copied
                return False
            except FileExistsError:  # another run stored the same bytes just now
                pass
    except OSError as e:
        log.debug("store %s not usable for %s: %s", store, p, e)
        return None
    if blob.stat().st_ino == p.stat().st_ino:
        return False
    return True if _link(blob, p) else None


def prune_store(store: Path) -> int:
    """Remove blobs that only the store still links (every run and cache entry using them is gone)."""
    n = 0
    for blob in store.glob("??/*") if store.is_dir() else []:
        try:
            if blob.is_file() and blob.stat().st_nlink == 1:
                blob.unlink()
                n += 1
        except OSError:  # removed by another run's prune meanwhile
            continue
    return n


def link_duplicates(run_dir: Path, also: Iterable[Path] = (), keep: str = "minimal",
                    store: Path | None = None) -> DiskUse:
    """One copy of each artifact: hard-link the files under ``run_dir`` and ``also`` (the cache
    entries the run used) to their blob in ``store`` (content-addressed; None: no store), and
    byte-identical files that could not go to the store to each other.

    Hidden dirs (``.hydra``) and files under :data:`MIN_LINK_BYTES` are left alone. With
    ``keep="all"`` nothing is linked, only measured. Returns the :class:`DiskUse`.
    """
    run_dir = Path(run_dir)
    roots = [Path(a) for a in also if Path(a).is_dir()] + [run_dir]
    use = DiskUse(keep=keep, bytes_before=disk_bytes(*roots), store=str(store) if store else None)
    files = _files(roots)
    use.files = len(files)
    if keep == "minimal":
        by_size: dict[int, list[Path]] = defaultdict(list)
        for p in files:
            size = p.stat().st_size
            if size >= MIN_LINK_BYTES:
                by_size[size].append(p)
        leftover: dict[str, list[Path]] = defaultdict(list)  # digest -> files the store could not take
        for size, group in by_size.items():
            if store is None and len(group) < 2:
                continue
            for p in group:
                digest = sha256_file(p)
                done = _into_store(p, digest, store) if store is not None else None
                if done:
                    use.linked += 1
                    use.saved_bytes += size
                elif done is None:
                    leftover[digest].append(p)
        for same in leftover.values():  # no store here: identical files of the run share the first
            first = same[0]
            for dup in same[1:]:
                if dup.stat().st_ino != first.stat().st_ino and _link(first, dup):
                    use.linked += 1
                    use.saved_bytes += dup.stat().st_size
        if store is not None:
            use.pruned = prune_store(store)
    use.bytes_after, use.run_dir_bytes = disk_bytes(*roots), disk_bytes(run_dir)
    use.new_bytes = _unshared_bytes(roots, store)
    if use.linked:
        log.info("run.keep=minimal: %d file(s) share a copy with identical ones (%.1f MB saved); this run added "
                 "%.1f MB", use.linked, use.saved_bytes / 1e6, use.new_bytes / 1e6)
    return use


def _unshared_bytes(roots: list[Path], store: Path | None) -> int:
    """Bytes of the inodes under ``roots`` that nothing outside them links (what deleting them frees)."""
    inside: dict[tuple[int, int], list[int]] = {}
    for p in _files(roots):
        st = p.stat()
        entry = inside.setdefault((st.st_dev, st.st_ino), [st.st_size, st.st_nlink, 0])
        entry[2] += 1
    store_links: set[tuple[int, int]] = set()
    if store is not None and store.is_dir():
        for blob in store.glob("??/*"):
            st = blob.stat()
            store_links.add((st.st_dev, st.st_ino))
    # a blob link is the store's bookkeeping, not another user of the bytes
    return sum(size for key, (size, nlink, seen) in inside.items() if nlink - seen - (key in store_links) <= 0)


__all__ = ["KEEP", "DiskUse", "check_keep", "disk_bytes", "link_duplicates", "prune_store"]
