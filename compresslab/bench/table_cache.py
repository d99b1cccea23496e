"""On-disk cache of measured timing tables, valid only in the environment they were measured in.

A timing table (ZipLM's probe table in :mod:`~compresslab.bench.latency_table`, the per-Linear
n-bit table in :mod:`~compresslab.bench.nbits_latency`) is a fact about one machine and software
stack. Both cache it the same way, here:

* the *environment* is a flat dict: the latency-relevant parts of
  :func:`~compresslab.bench.env.hardware_fingerprint` (CPU model and ISA, onnxruntime version,
  threads: :data:`~compresslab.bench.env.LATENCY_KEYS`) plus whatever the table's settings add
  (shape, provider, method version);
* the file is ``<group>/<hash of the environment>.json``, where ``group`` names what was measured
  (a model and shape), so files beside it are the same measurement on other machines;
* a file is used only when its recorded environment equals this one; otherwise the log says
  which facts differ and the caller measures anew (another machine's table is never reused);
* a table measured on a busy machine (:mod:`~compresslab.bench.machine_load`) is used for the run
  that measured it, with a loud warning, but never written: a later run on a quiet machine
  measures it again; one flagged noisy (a wide median-to-p90 spread, not busy) is cached, and every
  run that reuses it warns so.

Only the standard library is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

# parse(data) -> (table, the environment it records, its info); raises ValueError, KeyError or
# TypeError for a file that is not such a table
Parse = Callable[[dict[str, Any]], tuple[T, Mapping[str, Any], dict[str, Any]]]


def normalize(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists, keys strings), so records compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def environment_facts(fingerprint: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``{dotted key: value}`` of ``fingerprint`` at ``keys`` (e.g. ``"cpu.model"``); None where absent."""
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = fingerprint
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        out[key] = node
    return out


def stable_hash(obj: Any, n: int = 16) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``obj``'s sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two flat environments, sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def read_cached(path: Path, env: Mapping[str, Any], parse: Parse[T], *, log: logging.Logger, what: str,
                scope: str) -> tuple[T, dict[str, Any]] | None:
    """The table cached at ``path`` and its info if it was measured in exactly ``env``, else None.

    Logs (WARNING, on ``log``) why a file is not used: unreadable, measured in another environment
    (naming the facts that differ), or, when ``path`` does not exist, every sibling file (``scope``
    says what they share, e.g. "these shapes") that was measured elsewhere.
    """
    env = normalize(dict(env))
    if path.is_file():
        try:
            table, recorded, info = parse(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s cache %s is unreadable (%s); re-measuring", what, path, e)
            return None
        recorded = normalize(dict(recorded))
        if recorded == env:
            _warn_if_noisy(info, path, log=log, what=what)
            return table, info
        log.warning("%s cache %s was measured in another environment (differs in %s); re-measuring",
                    what, path, differences(recorded, env))
        return None
    for other in sorted(path.parent.glob("*.json")) if path.parent.is_dir() else []:
        try:
            _, recorded, _ = parse(json.loads(other.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        log.warning("a %s for %s exists (%s) but from another environment (differs in %s): not reused, "
                    "measuring anew", what, scope, other.name, differences(normalize(dict(recorded)), env))
    return None


def _warn_if_noisy(info: Any, path: Path, *, log: logging.Logger, what: str) -> None:
    """Warn when a reused table was flagged noisy when it was measured: its run warned then, and every run that
    reuses it must say so too (a noisy table is cached, unlike a busy one, so it would otherwise pass in silence).
    A record of another shape (hand-edited, older) is not judged: it never stops the table from being used."""
    load = info.get("machine_load") if isinstance(info, Mapping) else None
    spread = load.get("spread") if isinstance(load, Mapping) else None
    if not isinstance(spread, Mapping) or spread.get("noisy") is not True:
        return
    worst = spread.get("max")
    how = f": {100 * worst:.0f}% between median and p90" if isinstance(worst, (int, float)) else ""
    log.warning("%s cache %s was flagged noisy when measured (%s at %s%s); reusing it: delete the file to measure "
                "it again on a quiet machine", what, path, spread.get("runner"), spread.get("shape"), how)


def write_cached(path: Path | None, payload: Mapping[str, Any], load: Mapping[str, Any], *,
                 log: logging.Logger, what: str) -> dict[str, Any]:
    """Write ``payload`` to ``path`` (atomically) unless the machine ``load`` record says busy.

    Returns what the caller's info records: ``cached`` (False: just measured), ``cache_file`` (None
    when nothing was written) and, for a busy measurement, ``not_cached`` (why), warned about loudly.
    """
    if load.get("busy"):
        reason = "measured on a busy machine (" + "; ".join(load.get("reasons") or []) + ")"
        log.warning("%s NOT cached: it was %s; this run uses it, the next run measures it again", what, reason)
        return {"cached": False, "cache_file": None, "not_cached": reason}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half
    return {"cached": False, "cache_file": str(path) if path is not None else None}


__all__ = ["differences", "environment_facts", "normalize", "read_cached", "stable_hash", "write_cached"]
