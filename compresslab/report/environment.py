"""The report's last section, Environment and reproduction: the hardware as one fact per row, the run's identity and
sessions, library versions, the commands that reproduce the run and rebuild the report, and the resolved config."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

import yaml

from compresslab.config import CUSTOM_STEPS
from compresslab.report import facts as F
from compresslab.report.fmt import plain
from compresslab.report.provenance import git_row, sessions_table
from compresslab.report.render import Block, Code, Heading, Para, Table


def _hardware_rows(m: Mapping[str, Any]) -> list[list[str]]:
    """The hardware record as one fact per row: ISA flags as one line, library versions left to the
    versions table, and the thread count the run really used."""
    hw = F.as_dict(m.get("hardware"))
    rows: list[list[str]] = []
    for key, v in F.flatten({k: v for k, v in hw.items() if k not in ("libraries", "threads")}).items():
        if "isa" in key.split("."):  # one summary row below
            continue
        rows.append([key, plain(v)])
    isa = F.isa(m)
    if isa:
        have = [k for k, v in isa.items() if v]
        lack = [k for k, v in isa.items() if not v]
        rows.append(["isa", (", ".join(have) or "none of those probed") + (f" (not: {', '.join(lack)})" if lack
                                                                          else "")])
    n, source = F.threads(m)
    rows.append(["threads", f"{plain(n)} ({source})"])
    return rows


class _ConfigDumper(yaml.SafeDumper):
    """Block YAML, except lists of scalars (shapes, names) on one line: ``shapes: [[1, 128], [32, 128]]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, Mapping) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ConfigDumper.add_representer(list, _represent_list)


def config_yaml(config: Mapping[str, Any]) -> str:
    """The resolved config as YAML, in the order Hydra composed it (as in ``.hydra/config.yaml``)."""
    return yaml.dump(dict(config), Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, width=100).rstrip()


def environment_section(m: Mapping[str, Any], run_dir: str) -> list[Block]:
    """Environment and reproduction: hardware and run identity, sessions, library versions, the rerun commands, the
    invocation count and the resolved config."""
    out: list[Block] = [Heading("Environment and reproduction")]
    info = _hardware_rows(m)
    info += [git_row(m) if k == "git_sha" else [k, plain(m.get(k))] for k in
             ("seed", "config_hash", "git_sha", "compresslab_version", "schema_version")]
    out.append(Table(["fact", "value"], info, "Hardware and run identity"))
    out += sessions_table(m)
    versions = F.as_dict(m.get("versions"))
    out.append(Table(["library", "version"], [[k, plain(v)] for k, v in versions.items()])
               if versions else Para("Not available: the manifest has no `versions` section."))
    out.append(_rerun(m, run_dir))
    runs = m.get("invocations")
    if isinstance(runs, list) and len(runs) > 1:
        out.append(Para(f"This run dir was run {len(runs)} times (resumed, or rerun with settings outside the run "
                        "identity: run.*, paths.*); the command and config here are the latest run's, every "
                        "run's overrides are under invocations in manifest.json."))
    if isinstance(m.get("config"), Mapping) and m["config"]:
        out.append(Code(config_yaml(m["config"]), "Resolved config (YAML)"))
    return out


def _shipped_name(m: Mapping[str, Any]) -> str:
    """The ``+pipeline=`` value of the run, without the mark of overridden steps, which is no pipeline's name."""
    return str(m.get("pipeline", "<pipeline>")).removesuffix(CUSTOM_STEPS)


def _rerun(m: Mapping[str, Any], run_dir: str) -> Block:
    """The commands that reproduce the run (each argument quoted for a POSIX shell), then rebuild
    this report: from the working directory the run started in, since relative paths are read
    from there."""
    report = f"python -m compresslab.report {shlex.quote(str(run_dir))}"
    if m.get("pipeline") == "compress" and not m.get("command"):  # made by compresslab.compress(output_dir=...)
        return Code(report, "Made by compresslab.compress(..., output_dir=this dir): the same call again resumes "
                            "it (or finds it finished); rebuild this report:")
    overrides = m.get("overrides")
    cmd = m.get("command")
    if not cmd and isinstance(overrides, list):
        cmd = shlex.join(["python", "-m", "compresslab", *(str(o) for o in overrides)])
    lines = [f"cd {shlex.quote(str(m['cwd']))}"] if cmd and m.get("cwd") else []
    lines += [cmd or f"python -m compresslab +pipeline={_shipped_name(m)}", report]
    how = ("Run (the same command resumes the same run dir, or finds it finished), then rebuild this report:"
           if cmd else "Run, then rebuild this report (the manifest does not record the command-line overrides: "
                       "add the values of the resolved config below that differ from the defaults):")
    return Code("\n".join(lines), how)
