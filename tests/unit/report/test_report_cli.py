"""``python -m compresslab.report RUN_DIR``: success output and clear failures."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from compresslab.report import plots
from compresslab.report.__main__ import main

FIXTURE = Path(__file__).with_name("manifest_full.json")


def test_cli_builds_report_and_lists_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "PLOTS", {})  # drawing is covered elsewhere; keep this fast
    (tmp_path / "manifest.json").write_text(FIXTURE.read_text())
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.split()
    assert str(tmp_path / "report.md") in out and str(tmp_path / "report.html") in out


def test_cli_without_manifest_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Could not find manifest.json in")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written next to a missing manifest


def test_cli_missing_dir_and_bad_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text("{not json")
    assert main([str(tmp_path)]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text(json.dumps([1, 2]))
    assert main([str(tmp_path)]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_module_entry_point_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m compresslab.report`` wires main() to the exit status (run in-process: a
    subprocess would pay the package's torch import for nothing)."""
    monkeypatch.setattr(sys, "argv", ["compresslab.report", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "compresslab.report.__main__", raising=False)
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("compresslab.report", run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Could not find manifest.json" in err and "Traceback" not in err


def test_help_shows_the_compare_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--compare RUN_DIR [RUN_DIR ...]" in out and "python -m compresslab.report --compare outputs/*/*" in out
