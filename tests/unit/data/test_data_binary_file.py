"""A binary file given as data (random bytes, an archive) is named as not text; a UTF-16 file without a byte-order
mark still gets the encoding to set. Both had NUL bytes, and both were told "set task.generic.encoding=utf-16-le",
advice that cannot work for the binary one (new-user trial, session 40)."""

from __future__ import annotations

import random

import pytest

from compresslab.data.schema import DataFormatError
from compresslab.data.tasks import load_task


def _load(path):
    return load_task("generic", generic={"train": str(path), "dev": str(path)})


def test_random_bytes_are_not_text(tmp_path) -> None:
    path = tmp_path / "random.csv"
    rng = random.Random(0)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(100_000)))
    with pytest.raises(DataFormatError, match="does not read as text") as err:
        _load(path)
    assert "encoding=" not in str(err.value)  # no encoding to set: it is not text


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_mark_still_gets_its_encoding(tmp_path, codec: str) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(("text,label\n" + "".join(f"a good film {i},positive\n" for i in range(20))).encode(codec))
    with pytest.raises(DataFormatError, match=f"encoding={codec}"):
        _load(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", ["отличный фильм", "很好的电影", "a good film"])
def test_non_latin_utf16_without_a_mark_is_text_not_binary(tmp_path, codec: str, text: str) -> None:
    """Cyrillic or CJK in UTF-16 has few NUL bytes (only the ASCII commas, digits and line breaks): still text,
    and the byte order is found (a review of the first version, which counted NUL positions, session 40)."""
    path = tmp_path / "wide.csv"
    path.write_bytes(("text,label\n" + "".join(f"{text} {i},positive\n" for i in range(20))).encode(codec))
    with pytest.raises(DataFormatError, match=f"encoding={codec}"):
        _load(path)
