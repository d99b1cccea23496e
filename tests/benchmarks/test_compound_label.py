"""benchmarks/compound.py ``pipelines --label``: another setting of one pipeline (a harsher ZipLM target, more KD
steps) is listed under its own name beside the pipeline's run, and ``measure`` takes it as one more model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compound():
    from compresslab.testing import import_benchmark

    return import_benchmark("compound", ROOT)


@pytest.mark.parametrize("argv, why", [
    (["measure", "--label", "x"], "names one run"),                                  # only for pipelines
    (["pipelines", "--label", "x"], "names one run"),                                # needs one --only pipeline
    (["pipelines", "--only", "int8", "ziplm_int8", "--label", "x"], "names one run"),
    (["pipelines", "--only", "ziplm_strong_int8", "--label", "int8"], "own name"),   # a pipeline's own name
    (["pipelines", "--only", "ziplm_strong_int8", "--label", "dense"], "own name"),
    (["pipelines", "--only", "ziplm_strong_int8", "--label", "a b/c"], "no spaces"),
    (["pipelines", "--only", "ziplm_strong_int8", "--label", ""], "one or more"),
])
def test_bad_labels_are_refused_before_any_run(compound, argv, why, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(compound, "pipelines", lambda a: pytest.fail("ran"))
    with pytest.raises(SystemExit) as e:
        compound.main(argv)
    assert e.value.code == 2 and why in capsys.readouterr().err


def test_a_labelled_run_is_listed_beside_the_pipelines_own(compound, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import compresslab.pipeline as pl

    seen: list[Any] = []

    def fake_run(cfg: Any) -> Path:
        seen.append(cfg)
        return tmp_path / "outputs" / "ziplm_strong_int8" / f"h{len(seen)}"

    monkeypatch.setattr(pl, "run", fake_run)
    monkeypatch.setattr(compound, "setup_process", lambda *a: None)
    monkeypatch.setattr(compound, "REPO", tmp_path)
    monkeypatch.chdir(tmp_path)  # main() chdirs to REPO: monkeypatch puts the working directory back
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({"ziplm_strong_int8": {"run_dir": "outputs/ziplm_strong_int8/h0"}}))
    compound.main(["pipelines", "--only", "ziplm_strong_int8", "--override", "pipeline.passes.ziplm.speedup=3.4",
                   "--label", "ziplm_strong_int8@3.4x", "--runs-file", str(runs)])
    listed = json.loads(runs.read_text())
    assert listed["ziplm_strong_int8"] == {"run_dir": "outputs/ziplm_strong_int8/h0"}  # the pipeline's own: kept
    new = listed["ziplm_strong_int8@3.4x"]
    assert new["pipeline"] == "ziplm_strong_int8" and new["run_dir"] == "outputs/ziplm_strong_int8/h1"
    assert "pipeline.passes.ziplm.speedup=3.4" in new["overrides"]
    assert seen[0].pipeline.passes.ziplm.speedup == 3.4 and len(seen) == 1
