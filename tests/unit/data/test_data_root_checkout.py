"""The default data root: after the working directory's ``data`` and ``../shared/data``, the folder beside this
project's checkout, as the README says ("in this project's checkout the folder beside it, ``../shared/data``, is
used"): a new user running from another directory got "no data root found" (trial, session 40)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compresslab.data import tasks
from compresslab.data.schema import DataNotFoundError

CHECKOUT = Path(tasks.__file__).resolve().parents[2]


def test_the_checkouts_shared_data_is_found_from_anywhere(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tasks.DATA_ENV_VAR, raising=False)
    beside = CHECKOUT.parent / "shared" / "data"
    if (beside / "glue").is_dir():
        assert tasks.resolve_data_root() == beside.resolve()
    else:  # a checkout without the shared folder: the error names where it looked
        with pytest.raises(DataNotFoundError, match="shared"):
            tasks.resolve_data_root()


def test_the_working_directory_comes_first(tmp_path, monkeypatch) -> None:
    (tmp_path / "data" / "glue").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tasks.DATA_ENV_VAR, raising=False)
    assert tasks.resolve_data_root() == (tmp_path / "data").resolve()
