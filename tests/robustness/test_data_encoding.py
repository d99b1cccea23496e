"""Issue #12, kind 2 (data read loosely): the encoding of each data file.

``task.generic.encoding`` used to apply to train and dev alike, so a UTF-16 train file (Excel's
"Unicode text") beside a UTF-8 dev file failed or was misread whatever it was set to. Now each file
is read in the encoding its byte-order mark names (UTF-8, UTF-16, UTF-32) and else in the set
encoding (UTF-8 when unset); a mark that contradicts a set encoding, a UTF-16 setting on a file
without a mark, and NUL bytes (UTF-16 saved without a mark) are errors naming the file; a byte that
does not decode is named by file:line with the encoding to set.
"""

from __future__ import annotations

import codecs
import json

import pytest

from _data_files import POS_NEG, compose_generic, csv_file, load_generic, refused, run_fails_fast, table_text
from compresslab.data.tasks import load_task

NEWS = [("caf\u00e9 \u2019s great", "positive"), ("na\u00efve \u00fcber", "negative")]  # non-ASCII in both splits
BOM = "a byte-order mark that contradicts task.generic.encoding"

# Files read in the wrong encoding: each differs from the others only in its bytes, the setting and the message.
REFUSED = [
    refused("cp1252 CSV (Excel on Windows)", "file:line of the first bad byte and the fix task.generic.encoding=cp1252",
            "train.csv", table_text("text,label", POS_NEG + [("it\u2019s caf\u00e9 time", "positive")]),
            r"train\.csv:6: byte.*task\.generic\.encoding=cp1252", written_in="cp1252"),
    refused("UTF-16 train and UTF-8 dev with task.generic.encoding=utf-16",
            "an error naming the dev file: no UTF-16 byte-order mark; set task.generic.encoding=null (not UTF-8 read "
            "as UTF-16 garbage)",
            "train.csv", table_text("text,label", POS_NEG),
            r"dev\.csv: task\.generic\.encoding=utf-16, but the file has no UTF-16 byte-order mark.*"
            r"task\.generic\.encoding=null",
            written_in="utf-16", dev=("dev.csv", table_text("text,label", POS_NEG)), encoding="utf-16"),
    *[refused(BOM, "an error naming the file, its mark and task.generic.encoding (set null, or re-save)",
              "train.csv", table_text("text,label", POS_NEG),
              rf"train\.csv: the file starts with a {mark}.* byte-order mark, but "
              rf"task\.generic\.encoding={setting}; set task\.generic\.encoding=null",
              written_in=written, encoding=setting)
      for written, setting, mark in [("utf-16", "cp1252", "UTF-16"), ("utf-16", "utf-8", "UTF-16"),
                                     ("utf-8-sig", "latin-1", "UTF-8"), ("utf-32", "utf-16", "UTF-32"),
                                     ("utf-8-sig", "utf-16-le", "UTF-8")]],
    refused("unknown encoding name", "an error naming task.generic.encoding",
            "train.csv", table_text("text,label", POS_NEG), r"unknown encoding.*task\.generic\.encoding",
            encoding="utf8x"),
]


@pytest.mark.parametrize("bad", REFUSED)
def test_refused(tmp_path, expect_clear, bad):
    bad.expect_refused(tmp_path, expect_clear)


@pytest.mark.case(name="cp1252 CSV with task.generic.encoding=cp1252 (no '+')", kind=2, bad_input=False,
                  expected="read correctly through the composed config")
def test_cp1252_with_setting(tmp_path, observe):
    from omegaconf import OmegaConf

    path = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG + [("it\u2019s caf\u00e9", "positive")]),
                    encoding="cp1252")
    cfg = compose_generic(tmp_path, f"task.generic.train={path}", f"task.generic.dev={path}",
                          "task.generic.encoding=cp1252")
    data = load_task("generic", generic=OmegaConf.to_container(cfg.task.generic, resolve=True))
    assert data.dev[-1].text_a == "it\u2019s caf\u00e9"
    observe(f"last dev text {data.dev[-1].text_a!r}")


@pytest.mark.case(name="UTF-16 file (Excel 'Unicode text')", kind=2, bad_input=False,
                  expected="read in UTF-16, the encoding its byte-order mark names, with task.generic.encoding unset")
def test_utf16(tmp_path, observe):
    path = csv_file(tmp_path / "train.tsv", table_text("text\tlabel", POS_NEG + NEWS, sep="\t"), encoding="utf-16")
    data = load_generic(train=path, dev=path)
    assert [e.text_a for e in data.dev] == [t for t, _ in POS_NEG + NEWS]
    assert data.info["files"]["train"]["encoding"] == "utf-16"
    observe(f"read as {data.info['files']['train']['encoding']}; last text {data.dev[-1].text_a!r}")


@pytest.mark.case(name="UTF-16 (BOM) train file and UTF-8 dev file", kind=2, bad_input=False,
                  expected="each file read in its own encoding (the BOM's, else UTF-8) with the default config; the "
                           "encoding of each recorded in the data info")
def test_utf16_train_utf8_dev(tmp_path, observe):
    from omegaconf import OmegaConf

    train = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG + NEWS), encoding="utf-16")
    dev = csv_file(tmp_path / "dev.csv", table_text("text,label", NEWS + POS_NEG), encoding="utf-8")
    cfg = compose_generic(tmp_path, f"task.generic.train={train}", f"task.generic.dev={dev}")
    assert cfg.task.generic.encoding is None  # the default: each file by its mark
    data = load_task("generic", generic=OmegaConf.to_container(cfg.task.generic, resolve=True))
    assert [e.text_a for e in data.dev] == [t for t, _ in NEWS + POS_NEG]
    assert sorted(e.text_a for e in data.train + data.validation) == sorted(t for t, _ in POS_NEG + NEWS)
    encodings = {s: f["encoding"] for s, f in data.info["files"].items()}
    assert encodings == {"train": "utf-16", "dev": "utf-8"}
    observe(f"encodings {encodings}; dev[0] {data.dev[0].text_a!r}")


@pytest.mark.case(name="files with each byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32) and a matching setting",
                  kind=2, bad_input=False,
                  expected="each read right, with the encoding unset and with a setting that agrees with the mark")
@pytest.mark.parametrize("written, agreeing", [("utf-8-sig", "utf-8"), ("utf-16", "utf-16"),
                                               ("utf-16", "utf-16-le"), ("utf-32", "utf-32")])
def test_every_bom_is_read(tmp_path, observe, written, agreeing):
    text = table_text("text,label", POS_NEG + NEWS)
    path = csv_file(tmp_path / "train.csv", text, encoding=written)
    for setting in (None, agreeing):
        data = load_generic(train=path, dev=path, encoding=setting)
        assert [e.text_a for e in data.dev] == [t for t, _ in POS_NEG + NEWS], setting
    be = tmp_path / "be.csv"  # big-endian, as some Mac and Java tools write
    be.write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert load_generic(train=be, dev=be).dev[-1].text_a == NEWS[-1][0]
    observe(f"{written}: read with encoding unset and ={agreeing}; UTF-16-BE with its mark read too")


@pytest.mark.case(name="UTF-16 saved without a byte-order mark", kind=2,
                  expected="an error naming the file: NUL bytes, looks like UTF-16 without a mark; set "
                           "task.generic.encoding=utf-16-le (instead of columns full of NULs)")
def test_utf16_without_bom(tmp_path, expect_clear):
    path = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG), encoding="utf-16-le")
    expect_clear(lambda: load_generic(train=path, dev=path),
                 match=r"train\.csv: the file holds NUL bytes.*UTF-16.*task\.generic\.encoding=utf-16-le")
    data = load_generic(train=path, dev=path, encoding="utf-16-le")  # the fix it names works
    assert data.dev[0].text_a == "a good film"


@pytest.mark.case(name="a BOM at file start with encoding=utf-8", kind=2, bad_input=False,
                  expected="the BOM is dropped: the first column is still 'text'")
def test_bom_with_plain_utf8(tmp_path, observe):
    path = csv_file(tmp_path / "train.csv", "\ufeff" + table_text("text,label", POS_NEG))
    for enc in ("utf-8", "utf-8-sig", None):
        data = load_generic(train=path, dev=path, encoding=enc)
        assert data.dev[0].text_a == "a good film"
    observe("BOM dropped with utf-8, utf-8-sig and unset")


@pytest.mark.case(name="a dev file that does not decode (JSONL, train fine)", kind=2,
                  expected="an error naming the dev file, its line, the bytes and task.generic.encoding")
def test_dev_decode_error_names_file_and_line(tmp_path, expect_clear):
    train = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG))
    dev = tmp_path / "dev.jsonl"
    dev.write_bytes("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in POS_NEG).encode()
                    + b'{"text": "caf\xe9", "label": "positive"}\n')
    expect_clear(lambda: load_generic(train=train, dev=dev),
                 match=r"dev\.jsonl:5: byte\(s\) e9 are not valid utf-8.*task\.generic\.encoding=")


@pytest.mark.case(name="a contradicting byte-order mark through the composed config and pipeline.run", kind=2,
                  expected="refused before any model is loaded, naming the file and task.generic.encoding")
def test_bom_contradiction_fails_before_work(tmp_path, expect_clear):
    train = csv_file(tmp_path / "train.csv", table_text("text,label", POS_NEG * 4), encoding="utf-16")
    cfg = compose_generic(tmp_path, f"task.generic.train={train}", f"task.generic.dev={train}",
                          "task.generic.encoding=cp1252")
    expect_clear(lambda: run_fails_fast(cfg),
                 match=r"train\.csv: the file starts with a UTF-16.*task\.generic\.encoding")


@pytest.mark.case(name="a GLUE file with a byte that is not UTF-8", kind=2,
                  expected="an error at file:line, not a bare codec error")
def test_glue_file_not_utf8(tmp_path, expect_clear):
    d = tmp_path / "glue" / "SST-2"
    d.mkdir(parents=True)
    (d / "train.tsv").write_bytes(b"sentence\tlabel\na good film\t1\nit\x92s bad\t0\n")
    (d / "dev.tsv").write_bytes(b"sentence\tlabel\na good film\t1\n")
    expect_clear(lambda: load_task("sst2", tmp_path), match=r"SST-2/train\.tsv:3: byte\(s\) 92 are not valid utf-8")
