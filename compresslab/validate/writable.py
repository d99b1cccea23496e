"""The one check every writer runs before its work: can it write where it is told to."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compresslab.validate.values import SettingsError


def check_writable(path: str | Path, setting: str, value: str | Path | None = None) -> None:
    """Create ``path`` (with its parents) and write a file in it; SettingsError naming ``setting``
    and the path when either fails (read-only, no permission, a file in the way). Directories this
    created are removed again, so a refused run leaves nothing behind. ``value``: the setting's value
    when ``path`` is another directory it needs (the parent an output is first written in).

    Every writer uses this one check before its work: the CLI's preflight (its output and cache
    dirs), ``compress(output_dir=)``, ``CompressResult.export``, ``compresslab.save``. It lives here,
    below every layer, so that ``checkpoint`` may call it too."""
    path = Path(path).expanduser()
    created = []
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        hint = " (or the COMPRESSLAB_CACHE environment variable)" if setting == "paths.cache_dir" else ""
        where = "there" if value is None else f"in {path}"
        raise SettingsError(f"{setting}={path if value is None else value}: cannot write {where} "
                            f"({e.strerror or e}); set {setting}{hint} to a directory you can write to") from None
    finally:
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break  # not empty (written meanwhile) or already gone: leave the rest
