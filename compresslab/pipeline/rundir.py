"""Taking a run directory: resume the run it holds, start a fresh one, or refuse, saying why and what to do.

A dir holding another config's run is refused with the settings that differ (recorded -> given now);
a compresslab run whose ``manifest.json`` is gone (its ``steps/*/pass.json`` are there) cannot be
checked, so it is refused too. ``run.overwrite=true`` moves either aside (``<dir>.replaced-<time>``)
and starts anew; a dir that holds anything compresslab did not write is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from omegaconf import DictConfig

from compresslab.dirlock import LOCK_NAME
from compresslab.manifest import RunManifest, process_alive
from compresslab.pipeline.plan import RunDirConflictError, _typed, config_hash, config_identity, saved_config

if TYPE_CHECKING:
    from compresslab.pipeline.settings import RunSettings

log = logging.getLogger(__name__)

# The top-level entries a run writes (driver, steps, stages, report); with its lock and .hydra/. A dir holding
# anything else is not compresslab's alone, and run.overwrite=true never moves it.
RUN_ENTRIES = frozenset({"manifest.json", ".hydra", LOCK_NAME, "steps", "export", "eval", "bench", "plots",
                         "report.md", "report.html"})
MAX_CHANGES = 8  # settings named in a refusal; more are counted


def _ours(p: Path) -> bool:
    # atomic writes leave .<name>.<random>.tmp behind when killed mid-write (manifest.atomic_write_bytes)
    return p.name in RUN_ENTRIES or (p.name.startswith(".") and p.name.endswith(".tmp"))


def run_markers(run_dir: Path) -> list[str]:
    """The ``steps/<NN>_<name>/pass.json`` files (relative paths) of a compresslab run in ``run_dir``, when
    everything at its top level is what a run writes (:data:`RUN_ENTRIES`); [] for a dir that is not (only) ours."""
    if not run_dir.is_dir() or not all(_ours(p) for p in run_dir.iterdir()):
        return []
    found = []
    for pj in sorted(run_dir.glob("steps/*/pass.json")):
        try:
            data = json.loads(pj.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "step" in data and "pass" in data:
            found.append(str(pj.relative_to(run_dir)))
    return found


def no_manifest_refusal(run_dir: Path, start_over: str, elsewhere: str) -> RunDirConflictError:
    """The refusal of an existing ``run_dir`` without a manifest: a compresslab run whose manifest is gone (its
    steps found: ``start_over`` says how to move it aside, ``elsewhere`` where else to run) or a dir that is not a
    compresslab run (never written into nor moved: ``elsewhere``)."""
    markers = run_markers(run_dir)
    if markers:
        shown = ", ".join(markers[:3]) + (f" and {len(markers) - 3} more" if len(markers) > 3 else "")
        return RunDirConflictError(
            f"{run_dir} holds a compresslab run's steps ({shown}) but no manifest.json (deleted?), so what they were "
            f"computed from cannot be checked and they are not reused. To start over: {start_over}; or use "
            f"{elsewhere} (keeps both)")
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    return RunDirConflictError(
        f"{run_dir} exists and is not a compresslab run (it holds {', '.join(held[:5])}"
        f"{', ...' if len(held) > 5 else ''}); refusing to write into it, or to move it aside (only compresslab's own "
        f"runs are). Use {elsewhere}: a new or empty dir")


def _show(v: Any) -> str:
    text = "(unset)" if v is _UNSET else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


_UNSET = object()


def changed_settings(old: Any, new: Any, *, lists: bool = False, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, ``old -> new``) for every leaf setting that differs between two config trees; ``(unset)`` for
    a key only one has, named leaf by leaf where it holds a mapping (a block one side lacks, compress()'s frozen
    parameters recorded only when there are some). Lists compare whole (Hydra replaces a list wholesale) unless
    ``lists``: then by index (``passes[0].sparsity``)."""
    one_side = old if new is _UNSET else new if old is _UNSET else None
    if isinstance(one_side, Mapping) and one_side:  # a block one side lacks: each of its settings (unset) there
        old, new = ({} if v is _UNSET else v for v in (old, new))
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_settings(old.get(k, _UNSET), new.get(k, _UNSET), lists=lists,
                                    key=f"{key}.{k}" if key else str(k))
        return out
    if lists and isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            out += changed_settings(old[i] if i < len(old) else _UNSET, new[i] if i < len(new) else _UNSET,
                                    lists=lists, key=f"{key}[{i}]")
        return out
    return [] if old == new else [(key, f"{_show(old)} -> {_show(new)}")]


def describe_changes(changes: list[tuple[str, str]], name: Callable[[str], str] = str) -> str:
    """``changes`` (at most :data:`MAX_CHANGES`; keys shown by ``name``) for a refusal: one indented line each,
    ``;`` between and ``.`` at the end, so the CLI's one-line form (whitespace collapsed) reads as well."""
    lines = [f"  {name(k)}: {what}" for k, what in changes[:MAX_CHANGES]]
    if len(changes) > MAX_CHANGES:
        lines.append(f"  and {len(changes) - MAX_CHANGES} more")
    return ";\n".join(lines) + "."


def another_run_refusal(held: str, changes: list[tuple[str, str]], ways_out: str, *, unnamed: str = "",
                        name: Callable[[str], str] = str) -> RunDirConflictError:
    """The refusal of a run dir that holds another config's run, for the CLI and ``compress(output_dir=...)`` alike:
    ``held`` (``<dir> belongs to another config``), the settings that differ (:func:`describe_changes`, keys shown
    by ``name``; ``unnamed`` where none can be named, such as the two hashes), the one way to reuse its steps (the
    recorded values) and ``ways_out``."""
    what = (f"; settings that differ (recorded -> given now):\n{describe_changes(changes, name)}\n" if changes
            else f"{unnamed}. ")
    return RunDirConflictError(f"{held}{what}Its steps cannot be reused: give the recorded values to resume it, or "
                               f"{ways_out}")


def identity_changes(recorded: Mapping[str, Any] | None, cfg: DictConfig) -> list[tuple[str, str]]:
    """The settings of the run identity (:func:`~compresslab.pipeline.plan.config_identity`) that differ between a
    manifest's recorded ``config`` and ``cfg``; [] when the manifest records none (or it cannot be read)."""
    if not isinstance(recorded, Mapping):
        return []
    try:
        old = config_identity(saved_config(recorded))
    except Exception:  # noqa: BLE001 - an unreadable old config: the refusal falls back to the hashes
        return []
    return changed_settings(old, config_identity(cfg))


def _identity_hash(recorded: Mapping[str, Any] | None) -> str | None:
    """The hash of a manifest's recorded ``config`` under today's identity rules (None when it records none or
    cannot be read). A run hashed before a rule changed (``data.root`` left out of the identity) is the same run
    when its recorded config reads as this config now: it resumes, though its recorded ``config_hash`` differs."""
    if not isinstance(recorded, Mapping):
        return None
    try:
        return config_hash(saved_config(recorded))
    except Exception:  # noqa: BLE001 - an unreadable old config: compared by its recorded hash alone
        return None


def move_aside(run_dir: Path, what: str) -> Path:
    """Move every entry of ``run_dir`` but its lock file (this process holds the dir through it) into a new
    ``<dir>.replaced-<time>`` beside it; returns that dir."""
    backup = run_dir.with_name(f"{run_dir.name}.replaced-{int(time.time())}")
    n = 1
    while backup.exists():  # two overwrites within a second
        backup, n = run_dir.with_name(f"{run_dir.name}.replaced-{int(time.time())}-{n}"), n + 1
    log.warning("run.overwrite=true: moving the %s to %s", what, backup)
    backup.mkdir()
    for p in list(run_dir.iterdir()):
        if p.name != LOCK_NAME:
            shutil.move(str(p), backup / p.name)
    return backup


# How to start over, and how to keep an existing run (the CLI's words; the API has its own, naming output_dir)
START_OVER = "run.overwrite=true (moves this run dir aside to <dir>.replaced-<time> and runs anew)"
ELSEWHERE = "run.dir=<another dir>"
KEEP_BOTH = f"{ELSEWHERE} (keeps both)"


def check_run_dir(run_dir: Path, cfg: DictConfig, settings: "RunSettings | None" = None) -> RunManifest | None:
    """The run ``run_dir`` holds (None: none to resume), refused when the dir is not ``cfg``'s to write: files that
    are not a compresslab run, a run whose manifest is gone, or another config's run (naming the settings that
    differ), unless ``run.overwrite`` (``settings.run``; typed from ``cfg`` when not given) will move the run aside.
    Reads, never writes: the preflight's check (before any data is read, and for each job of a multirun before the
    first starts) and :func:`prepare_run_dir`'s. Raises RunDirConflictError."""
    overwrite = _typed(cfg, settings).run.overwrite
    if not (run_dir / "manifest.json").exists():
        # .hydra: written before the manifest; the lock file: left by any run (pipeline/lock.py)
        if not run_dir.exists() or all(p.name in (".hydra", LOCK_NAME) for p in run_dir.iterdir()):
            return None
        if overwrite and run_markers(run_dir):
            return None
        raise no_manifest_refusal(run_dir, START_OVER, ELSEWHERE)
    old = RunManifest.load(run_dir)
    h = config_hash(cfg)
    if not overwrite and old.data.get("config_hash") != h and _identity_hash(old.data.get("config")) != h:
        raise another_run_refusal(f"{run_dir} belongs to another config",
                                  identity_changes(old.data.get("config"), cfg), f"{START_OVER}, or {KEEP_BOTH}",
                                  unnamed=f" (hash {old.data.get('config_hash')} != {h})")
    return old


def prepare_run_dir(run_dir: Path, cfg: DictConfig, settings: "RunSettings | None" = None) -> RunManifest | None:
    """Return the existing manifest to resume, or None for a fresh dir; refuse foreign dirs and runs of another
    config (:func:`check_run_dir`). With ``run.overwrite`` (``settings.run``; typed from ``cfg`` when not given) an
    existing run (of any config, or one whose manifest is gone) is moved aside."""
    old = check_run_dir(run_dir, cfg, settings)
    if old is None:
        if run_dir.is_dir() and not (run_dir / "manifest.json").exists() and run_markers(run_dir):
            move_aside(run_dir, "run without a manifest")  # check_run_dir let it through: run.overwrite=true
        return None
    check_not_running(old, run_dir)
    if _typed(cfg, settings).run.overwrite:  # start over, whatever state or config the old run has (kept aside)
        move_aside(run_dir, f"{old.data.get('status')} run")
        return None
    return old


def check_not_running(old: RunManifest, run_dir: Path) -> None:
    """Refuse a run dir that another live process is running now (two runs would write the same
    files); a ``running`` manifest whose process is gone (killed) is resumed, with a warning."""
    proc = old.data.get("process") or {}
    if old.data.get("status") != "running" or proc.get("pid") == os.getpid():
        return
    alive = process_alive(proc)
    if alive:
        raise RunDirConflictError(f"{run_dir} is being run now by process {proc.get('pid')} on {proc.get('host')}; "
                                  "wait for it to finish (then rerun to find it finished), or use another run.dir")
    log.warning("%s says running, but %s; resuming after its last finished step", run_dir,
                "its process is gone (killed?)" if alive is False else
                f"it ran on {proc.get('host') or 'an unrecorded host'}: if that run still goes, both write this dir")


__all__ = ["another_run_refusal", "changed_settings", "check_not_running", "check_run_dir", "describe_changes",
           "identity_changes", "move_aside", "no_manifest_refusal", "prepare_run_dir", "run_markers"]
