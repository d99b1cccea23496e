"""Issue #12: the manifest records the overrides of the latest invocation, and the report's rerun command
reproduces the run (quoted for a shell, from its working directory), for a CLI run, a resumed one, each job of a
multirun, and a run made by ``compresslab.compress(output_dir=...)``.

Tiny random models, a 64-row CSV (``_runs.py``, the ``inputs`` fixture of ``conftest.py``); runs stop before their
first step (``run.stop_after=0``); one subprocess of the real CLI (a working multirun).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _runs import REPO, cli_args, command_overrides
from compresslab.config import compose, config_environment

case = pytest.mark.case


def _manifest(d: Path) -> dict[str, Any]:
    return json.loads((d / "manifest.json").read_text())


@case(name="the manifest records the overrides; the report's rerun command reproduces the run", kind="own",
      bad_input=False, expected="overrides, command (shell-quoted: a path with a space, a list) and cwd recorded; "
                                "the command composes the same run identity and run dir")


def test_overrides_recorded_and_rerun_command_exact(inputs, tmp_path, observe):
    from compresslab.pipeline import config_hash, resolve_run_dir, run
    from compresslab.report.sections import build_document

    args = cli_args(inputs, tmp_path / "o u t", "bench.shapes=[[1,16]]", "run.stop_after=0")
    d = run(compose(args), overrides=args)  # what the CLI's _main passes
    m = _manifest(d)
    assert m["overrides"] == args and m["cwd"] == os.getcwd()
    env, words = command_overrides(m["command"])
    assert words == args  # the shell gives back each override
    assert env == m["environment"] == config_environment()  # and sets what the config read from the environment
    again = compose(words)
    assert config_hash(again) == m["config_hash"] and resolve_run_dir(again) == d
    text = build_document(m, set(), {}, str(d)).blocks
    code = next(b for b in text if getattr(b, "text", "").startswith("cd "))
    assert code.text.splitlines() == [f"cd {shlex.quote(os.getcwd())}", m["command"],
                                      f"python -m compresslab.report {shlex.quote(str(d))}"]
    observe(m["command"])


@case(name="a resumed run with other run.* settings: the report shows the latest invocation", kind="own",
      bad_input=False, expected="config and command of the latest invocation; every invocation under invocations")


def test_resumed_run_records_the_latest_invocation(inputs, tmp_path, observe):
    from compresslab.pipeline import run
    from compresslab.report.sections import build_document
    from compresslab.report.render import Code, Para

    first = cli_args(inputs, tmp_path / "out", "run.stop_after=0", "run.threads=1")
    d = run(compose(first), overrides=first)
    second = [a for a in first if a != "run.threads=1"] + ["run.threads=2"]  # not part of the run identity
    assert run(compose(second), overrides=second) == d
    m = _manifest(d)
    assert m["config"]["run"]["threads"] == 2 and m["overrides"] == second
    assert [i["overrides"] for i in m["invocations"]] == [first, second]
    assert "threads: 2" in (d / ".hydra" / "config.yaml").read_text()
    blocks = build_document(m, set(), {}, str(d)).blocks
    assert any(isinstance(b, Code) and "run.threads=2" in b.text for b in blocks)
    assert any(isinstance(b, Para) and "run 2 times" in b.text for b in blocks)
    observe(f"invocations: {len(m['invocations'])}; config run.threads={m['config']['run']['threads']}")


@case(name="CLI: +pipeline=int8 -m seed=1,2 on a tiny model (a working multirun)", kind="own", bad_input=False,
      expected="both jobs run (-m between overrides accepted); each manifest records its own overrides")


def test_cli_multirun_records_each_jobs_overrides(inputs, tmp_path, observe):
    args = cli_args(inputs, tmp_path / "out", "run.stop_after=0")
    out = subprocess.run([sys.executable, "-m", "compresslab", args[0], "-m", *args[1:], "seed=1,2"],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    manifests = [_manifest(p.parent) for p in (tmp_path / "out" / "int8").glob("*/manifest.json")]
    seeds = sorted(m["config"]["seed"] for m in manifests)
    assert seeds == [1, 2]
    from compresslab.pipeline import config_hash

    for m in manifests:
        # Hydra writes a sweep job's overrides in its own grammar (a space in a path escaped: in\ put),
        # which it reads back as the same value: the command composes this job's run identity
        assert len(m["overrides"]) == len(args) + 1 and m["overrides"][-1] == f"seed={m['config']['seed']}"
        _, words = command_overrides(m["command"])
        assert words == m["overrides"] and config_hash(compose(words)) == m["config_hash"]
    observe(f"jobs: {[m['command'].split()[-1] for m in manifests]}")


@case(name="report of a run dir made by compresslab.compress(output_dir=...)", kind="own", bad_input=False,
      expected="says the same compress() call resumes it, not a made-up python -m compresslab command")


def test_api_run_report_rerun_line(observe):
    from compresslab.report.environment import _rerun

    block = _rerun({"pipeline": "compress"}, "runs/my run")
    assert "compresslab.compress(" in block.summary and block.text == "python -m compresslab.report 'runs/my run'"
    observe(block.summary)
