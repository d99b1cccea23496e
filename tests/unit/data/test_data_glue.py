"""The real GLUE files: row counts and sha256 match PROVENANCE.md, labels, the validation carve."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from compresslab.data.loaders import calibration_examples
from compresslab.data.schema import SplitUnavailableError
from compresslab.data.tasks import TASKS, TaskData, load_task

GLUE_NAME = {"SST-2": "sst2", "CoLA": "cola", "MRPC": "mrpc", "RTE": "rte", "STS-B": "stsb", "QNLI": "qnli"}
# Dev label balance stated in PROVENANCE.md, by class id (entailment = 0 for RTE / QNLI).
DEV_BALANCE = {"sst2": {1: 444, 0: 428}, "cola": {1: 721, 0: 322}, "mrpc": {1: 279, 0: 129},
               "rte": {0: 146, 1: 131}, "qnli": {0: 2702, 1: 2761}}


def _provenance_table(root: Path) -> dict[tuple[str, str], tuple[int, str]]:
    """(glue dir, split) -> (data rows, sha256), parsed from the table in PROVENANCE.md."""
    table = {}
    row = re.compile(r"^\| glue/([^/]+)/(train|dev)\.tsv \| (\d+) \| [^|]+ \| \d+ \| ([0-9a-f]{64}) \|$")
    for line in (root / "PROVENANCE.md").read_text(encoding="utf-8").splitlines():
        m = row.match(line.strip())
        if m:
            table[(m.group(1), m.group(2))] = (int(m.group(3)), m.group(4))
    return table


@pytest.fixture(scope="module")
def loaded(glue_root: Path) -> dict[str, TaskData]:
    return {name: load_task(name, glue_root) for name in TASKS}


def test_row_counts_and_hashes_match_provenance(glue_root: Path, loaded: dict[str, TaskData]) -> None:
    table = _provenance_table(glue_root)
    if not table:
        pytest.skip("PROVENANCE.md table not found next to the data")
    assert len(table) == 11
    for (glue_dir, split), (rows, sha) in table.items():
        info = loaded[GLUE_NAME[glue_dir]].info
        assert info["files"][split]["rows"] == rows, (glue_dir, split)
        assert info["files"][split]["sha256"] == sha, (glue_dir, split)


def test_splits_add_up_and_labels_parse(loaded: dict[str, TaskData]) -> None:
    for name, data in loaded.items():
        files, sizes = data.info["files"], data.info["sizes"]
        assert sizes["dev"] == files["dev"]["rows"] == len(data.dev)
        if "train" in files:
            assert len(data.train) + len(data.validation) == files["train"]["rows"]
            assert data.info["val_size"] == min(1000, files["train"]["rows"] // 20)
        if name in DEV_BALANCE:
            assert Counter(e.label for e in data.dev) == DEV_BALANCE[name]
            assert all(isinstance(e.label, int) for e in data.train)
    stsb = loaded["stsb"].dev
    assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in stsb)
    assert min(e.label for e in stsb) == 0.0 and max(e.label for e in stsb) == 5.0
    assert loaded["stsb_embedding"].dev == stsb
    assert all(e.text_b is None for e in loaded["cola"].dev)
    assert all(e.text_b for e in loaded["mrpc"].dev)
    assert not loaded["mrpc"].dev[0].text_a.startswith("\ufeff")


def test_quoting_is_off_so_bare_quotes_stay_in_text(loaded: dict[str, TaskData]) -> None:
    # MRPC dev row 1 side B starts with a bare '"' that CSV quoting would swallow.
    assert loaded["mrpc"].dev[0].text_b.startswith('"The foodservice pie business')


def test_validation_carve_is_seeded_disjoint_and_reproducible(glue_root: Path, loaded: dict[str, TaskData]) -> None:
    a = loaded["rte"]
    b = load_task("rte", glue_root)
    c = load_task("rte", glue_root, seed=1)
    assert a.validation == b.validation and a.train == b.train
    assert a.validation != c.validation
    assert len(a.validation) == 124 and a.info["val_seed"] == 0
    # Disjoint: the carve partitions the file's rows (RTE has no duplicate rows).
    assert not set(a.train) & set(a.validation)
    full = load_task("rte", glue_root, val_size=0)
    assert Counter(a.train) + Counter(a.validation) == Counter(full.train)
    assert load_task("rte", glue_root, val_size=50).info["sizes"]["validation"] == 50


def test_max_train_and_max_dev_take_seeded_subsets(glue_root: Path, loaded: dict[str, TaskData]) -> None:
    small = load_task("cola", glue_root, max_train=64, max_dev=32)
    again = load_task("cola", glue_root, max_train=64, max_dev=32)
    assert len(small.train) == 64 and len(small.dev) == 32
    assert small.train == again.train and small.dev == again.dev
    assert small.validation == loaded["cola"].validation  # slicing happens after the carve
    assert set(small.train) <= set(loaded["cola"].train)
    assert small.info["sizes"] == {"train": 64, "validation": 427, "dev": 32}


def test_qnli_has_dev_only_and_fails_clearly_when_train_is_needed(loaded: dict[str, TaskData]) -> None:
    qnli = loaded["qnli"]
    assert len(qnli.dev) == 5463 and len(qnli.train) == 0 and len(qnli.validation) == 0
    assert "train" in qnli.info["missing_splits"]
    with pytest.raises(SplitUnavailableError, match="ships no train split"):
        calibration_examples(qnli.train, 8, seed=0)
    with pytest.raises(SplitUnavailableError, match="ships no train split"):
        qnli.require_train()
