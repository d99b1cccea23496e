"""Worker scripts run by a peer's own venv (``compresslab.bench.external``). They are plain scripts, not
imported by the suite: each reads a JSON spec and imports only its venv's packages and ``common.py``."""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker_sha256(script: Path) -> str:
    """Hash of a worker and the ``common.py`` it imports (16 hex digits): part of its cells' settings, so
    a changed worker builds its cells again."""
    h = hashlib.sha256()
    for f in (Path(script), HERE / "common.py"):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
