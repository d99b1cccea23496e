"""Issue #12, the report of one run as users hit it: each fault of ``report.md`` / ``report.html``,
its siblings, the tolerance flag, and the report CLI's errors.

The manifests are real (see ``_report_runs.py``). Documents are built in process without plots
(drawing is covered once, in the HTML case here and in tests/unit/report).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from _report_runs import FIXTURES, FULL, RUNS, manifest
from compresslab.report import build_report, plots
from compresslab.report.__main__ import main
from compresslab.report.render import Bullets, Code, Document, Para, Table, to_html, to_markdown
from compresslab.report.sections import MAX_COLUMNS, build_document

case = pytest.mark.case


def doc_of(m: dict[str, Any]) -> Document:
    return build_document(m, set(), {}, "outputs/run")


def tables(doc: Document) -> list[Table]:
    return [b for b in doc.blocks if isinstance(b, Table)]


def table(doc: Document, caption_start: str) -> Table:
    found = [t for t in tables(doc) if t.caption.startswith(caption_start)]
    assert found, [t.caption[:40] for t in tables(doc)]
    return found[0]


def row(t: Table, first: str) -> dict[str, str]:
    r = next(r for r in t.rows if r[0] == first)
    return dict(zip(t.headers, r))


def cell(m: dict[str, Any], caption_start: str, first: str, column: str) -> str:
    """The report's text in ``column`` of the row starting ``first`` of the table captioned ``caption_start``."""
    return row(table(doc_of(m), caption_start), first)[column]


def texts(doc: Document) -> list[str]:
    """Every table cell, paragraph and bullet (code blocks excluded: the YAML config has lists)."""
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Table):
            out += [c for r in b.rows for c in r] + list(b.headers)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out += list(b.items)
    return out


@case(name="report: real-length table prints 16 raw latencies per cell", kind="first", bad_input=False,
      expected="one row per model: sentences/s, wall time, batches, x ort_fp32, x best_dense; no list of latencies")
def test_real_length_table_is_one_summary_row_per_model(observe) -> None:
    t = table(doc_of(manifest("obert_int8_smoke")), "Real token lengths")
    assert t.headers == ["model", "precision", "sentences/s", "wall (s)", "batches", "× ort_fp32", "× best_dense"]
    assert [r[0] for r in t.rows] == ["ort_fp32", "deployed_ort_int8", "torch_fp32"]
    for r in t.rows:
        assert all(len(re.findall(r"\d+\.\d+", c)) <= 1 for c in r), r  # one number per cell
    assert row(t, "ort_fp32")["batches"] == "4" and row(t, "ort_fp32")["× ort_fp32"] == "1.00x"
    observe(f"real-length rows: {t.rows}")


@case(name="report: load table shows absolute paths and a duplicated model column", kind="first", bad_input=False,
      expected="one model column; the file relative to the run dir; load ms, first run, peak and model RSS")
def test_load_table_has_relative_files_and_unique_columns(observe) -> None:
    doc = doc_of(manifest("obert_int8_smoke"))
    t = table(doc, "Load time and peak memory")
    assert len(set(t.headers)) == len(t.headers) and t.headers.count("model") == 1
    assert row(t, "ort_fp32")["file"] == "export/teacher/model.onnx"
    assert row(t, "deployed_ort_int8")["file"] == "steps/02_int8/model.onnx"
    assert not [c for c in texts(doc) if "/home/ada/work/outputs" in c]  # no run-dir path from another machine
    observe(f"load table: {t.headers} / {t.rows[0]}")


@case(name="report: oBERT step shows sparsity — (the value sits in result.metrics)", kind="first", bad_input=False,
      expected="the steps table shows the sparsity the pass recorded: 80.0 % for obert")
def test_step_sparsity_read_from_the_pass_metrics(observe) -> None:
    m = manifest("obert_int8_smoke")
    assert "sparsity" not in m["steps"][1]["metrics_after"]  # as the run engine writes it today
    sparsity = cell(m, "Scores here are the passes'", "01 obert", "sparsity (%)")
    assert sparsity == "80.0"
    observe(f"01 obert sparsity: {sparsity}")


@case(name="report: threads — although 2 were used", kind="first", bad_input=False,
      expected="the thread count the run used and where it comes from, with or without a bench section")
def test_threads_are_the_ones_used(observe) -> None:
    m = manifest("obert_int8_smoke")
    assert cell(m, "Hardware and run identity", "threads", "value") == "1 (bench.threads)"
    del m["bench"]  # no bench: resolved the way the run engine resolves run.threads=null
    m["config"]["run"]["threads"] = None
    threads = cell(m, "Hardware and run identity", "threads", "value")
    assert threads == "2 (run.threads=null: all physical cores)"
    observe(f"threads without bench: {threads}")


@case(name="report: a table wider than the page", kind="first", bad_input=False,
      expected=f"every table at most {MAX_COLUMNS} columns (headline at the largest shape, every shape long-form in "
               "Speed); HTML tables scroll inside their box")
def test_no_table_is_wider_than_the_limit(observe) -> None:
    widest = {}
    for name in FIXTURES:  # a quiet, a busy (7 runners), a failed run
        doc = doc_of(manifest(name))
        widths = [len(t.headers) for t in tables(doc)]
        assert max(widths) <= MAX_COLUMNS, (name, widths)
        assert all(len(r) == len(t.headers) for t in tables(doc) for r in t.rows)
        html = to_html(doc, {})
        assert html.count('<div class="table"><table>') == html.count("<table>") == len(widths)
        widest[name] = max(widths)
    observe(f"widest table (columns): {widest}")


@case(name="report: dumped dicts", kind="first", bad_input=False,
      expected="no Python repr ({'...'}, ['...'], True/False) in any table, paragraph or bullet")
def test_no_dumped_dicts_or_lists() -> None:
    for m in [*map(manifest, FIXTURES), json.loads(FULL.read_text())]:
        dumped = [c for c in texts(doc_of(m)) if re.search(r"[{\[]['\"]|': ", c) or c in ("True", "False")]
        assert dumped == []


@case(name="report: size table mixes ort_fp32/deployed with fp32/int8/sparse_int8", kind="first", bad_input=False,
      expected="the ONNX files in one table (ratios vs ort_fp32), each pass's checkpoint formats in another (vs fp32)")
def test_onnx_sizes_and_checkpoint_formats_apart(observe) -> None:
    doc = doc_of(manifest("obert_int8_smoke"))
    onnx = table(doc, "Deployed files")
    ckpt = table(doc, "Checkpoint formats of 01 obert")
    assert [r[0] for r in onnx.rows] == ["ort_fp32", "deployed_ort_int8"] and onnx.headers[3] == "ort_fp32/x encoder"
    assert [r[0] for r in ckpt.rows] == ["fp32", "int8", "sparse_int8"] and ckpt.headers[3] == "fp32/x encoder"
    assert row(ckpt, "fp32")["fp32/x total"] == "1.00x"
    observe(f"size tables: {[r[0] for r in onnx.rows]} | {[r[0] for r in ckpt.rows]}")


@case(name="report: the resolved config is a long vertical JSON", kind="first", bad_input=False,
      expected="YAML in config order, lists on one line; parses back to the same config")
def test_config_is_yaml(observe) -> None:
    m = manifest("obert_int8_smoke")
    code = next(b for b in doc_of(m).blocks if isinstance(b, Code) and b.summary.startswith("Resolved config"))
    assert yaml.safe_load(code.text) == m["config"]
    assert "shapes: [[1, 32], [4, 32]]" in code.text
    assert code.text.count("\n") < json.dumps(m["config"], indent=2).count("\n") * 0.75
    assert code.text.splitlines()[0] == "model:"  # Hydra's order, not sorted
    n_json = json.dumps(m["config"], indent=2).count("\n") + 1
    observe(f"config: {code.text.count(chr(10)) + 1} YAML lines vs {n_json} JSON")


def _with_drop(m: dict[str, Any], drop: float) -> dict[str, Any]:
    m = copy.deepcopy(m)
    for models in (m["eval"]["models"], m["bench"]["scores"]):  # bench scores: the OpenVINO cells
        for v in models.values():
            v["score"] = 0.9
    m["eval"]["models"]["deployed"]["score"] = 0.9 - drop
    return m


@case(name="report flags a drop above the user's tolerance (eval.max_drop)", kind="first", bad_input=False,
      expected="a drop over eval.max_drop (default 1 pt) is marked in the headline and named in a warning; "
               "within it, the summary says so")
def test_drop_over_tolerance_is_flagged(observe) -> None:
    md = to_markdown(doc_of(_with_drop(manifest("int8_smoke"), 0.02)))
    assert "| deployed_ort_int8 | 88.00 | -2.00 ⚠ |" in md
    assert "The deployed model is 2.00 pt below the teacher, more than the tolerance of 1.00 pt" in md
    assert "over the tolerance of 1.00 pt (eval.max_drop=0.01)" in md
    relaxed = _with_drop(manifest("int8_smoke"), 0.02)
    relaxed["config"]["eval"]["max_drop"] = 0.03
    md3 = to_markdown(doc_of(relaxed))
    assert "⚠ |" not in md3 and "within the tolerance of 3.00 pt" in md3
    gain = to_markdown(doc_of(_with_drop(manifest("int8_smoke"), -0.05)))
    assert "⚠ |" not in gain  # a gain is never a drop
    observe("flagged at -2.00 pt with max_drop 0.01; not with 0.03; never for a gain")


@case(name="eval.max_drop out of range", kind="own", expected="refused before any work, naming eval.max_drop")
@pytest.mark.parametrize("value", ["5", "-0.1", "abc"])
def test_bad_tolerance_refused_up_front(value: str, expect_clear, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    import compresslab.pipeline.state as state
    from compresslab.config import compose
    from compresslab.pipeline import run

    def loaded(self: Any) -> None:
        raise RuntimeError("the model was loaded: the bad input was not caught up front")

    monkeypatch.setattr(state.RunState, "load_initial", loaded)
    expect_clear(lambda: run(compose(["+pipeline=int8", "debug=smoke", f"eval.max_drop={value}",
                                      f"paths.output_dir={tmp_path}/o", f"paths.cache_dir={tmp_path}/c"])),
                 match=r"eval.*max_drop")


@case(name="report of a failed run", kind="own", bad_input=False,
      expected="says failed, the error with its step, and that rerunning resumes")
def test_failed_run_report(observe) -> None:
    md = to_markdown(doc_of(manifest("magnitude_int8_failed")))
    assert "> **Run status: failed" in md
    assert "Error in step finetune: ImportError:" in md and "Rerun the same command to resume" in md
    observe(md.split("\n")[2])


@case(name="report of an interrupted run from a manifest without the stage (Ctrl-C after all steps)", kind="own",
      bad_input=False, expected="a sentence saying what stopped it and how to resume; never 'KeyboardInterrupt: .'")
@pytest.mark.parametrize("err, said", [
    ({"type": "KeyboardInterrupt", "message": "", "step": None},
     "Interrupted by Ctrl-C (SIGINT). Rerun the same command to resume after the last finished step."),
    ({"type": "KeyboardInterrupt", "message": "", "step": None, "stage": "bench", "after_steps": True},
     "Interrupted by Ctrl-C (SIGINT) during bench, after all steps had finished. Rerun the same command to resume: "
     "the finished steps are kept."),
    ({"type": "RuntimeError", "message": "", "step": "finetune"},
     "Error in step finetune: RuntimeError (no message). Rerun the same command to resume after the last "
     "finished step.")])
def test_stopped_run_report_says_a_sentence(err: dict[str, Any], said: str, observe) -> None:
    m = manifest("magnitude_int8_failed")
    m["status"] = "interrupted" if err["type"] == "KeyboardInterrupt" else "failed"
    m["error"] = {**err, "at": m["error"]["at"]}  # as written before `summary`: the report says it from the fields
    md = to_markdown(doc_of(m))
    assert f"> **{said}**" in md and not re.search(r"\b\w+: \.", md)
    observe(said)


@case(name="report of a run timed on a busy machine", kind="own", bad_input=False,
      expected="a MACHINE BUSY banner at the top naming the reasons; the load while timing in Speed; said once")
def test_busy_timing_banner(observe) -> None:
    md = to_markdown(doc_of(manifest("magnitude_int8_busy")))
    top = md.split("## Summary")[0]
    assert "MACHINE BUSY while timing: bench stage: other processes used 2.00 CPU s per s before timing" in top
    assert "Machine load while timing: BUSY" in md
    assert md.count("MACHINE BUSY") == 1
    quiet = to_markdown(doc_of(manifest("obert_int8_smoke")))
    assert "MACHINE BUSY" not in quiet
    observe(top.splitlines()[2][:200])


BUSY_TABLE = {"busy": True, "what": "ZipLM latency table", "reasons": ["other processes used 1.50 CPU s per s while "
                                                                      "timing (threshold 0.2)"]}


def _busy_elsewhere(m: dict[str, Any], where: str) -> dict[str, Any]:
    """A quiet bench stage, and one busy ``machine_load`` record at ``where`` (a step's latency table,
    or deploy=auto's choice of runtime), as those sites write it."""
    m["bench"]["machine_load"] = {"busy": False, "what": "bench stage", "reasons": []}
    if where == "latency table":
        m["steps"][1]["result"]["metrics"]["latency_table"] = {"busy": True, "machine_load": BUSY_TABLE}
    else:
        m["deploy"]["auto"] = {"chosen": "ort", "busy": True,
                               "machine_load": {**BUSY_TABLE, "what": "deploy=auto (ORT vs OpenVINO)"}}
    return m


@case(name="report banner of a run whose bench was quiet but a latency table or deploy=auto was timed busy",
      kind="own", bad_input=False,
      expected="the MACHINE BUSY banner from every machine_load record of the manifest (not the bench's alone), "
               "naming what was timed busy and how many of the run's timings were")
@pytest.mark.parametrize("where", ["latency table", "deploy=auto"])
def test_busy_banner_reads_every_timing(observe, where) -> None:
    top = to_markdown(doc_of(_busy_elsewhere(manifest("obert_int8_smoke"), where))).split("## Summary")[0]
    what = "ZipLM latency table" if where == "latency table" else r"deploy=auto \(ORT vs OpenVINO\)"
    assert re.search(rf"MACHINE BUSY while timing \(1 of 2 timings\): {what}: other processes used 1\.50", top), top
    quiet = _busy_elsewhere(manifest("obert_int8_smoke"), where)
    quiet["steps"][1]["result"]["metrics"].pop("latency_table", None)
    quiet["deploy"].pop("auto", None)
    assert "MACHINE BUSY" not in to_markdown(doc_of(quiet))
    observe(next(line for line in top.splitlines() if "MACHINE BUSY" in line)[:240])


@case(name="report: GPU skipped reason printed as 'skipped: skipped: ...'", kind="own", bad_input=False,
      expected="GPU benchmark skipped: <reason>, once")
def test_gpu_skip_reason_once() -> None:
    md = to_markdown(doc_of(manifest("obert_int8_smoke")))
    assert "GPU benchmark skipped: no CUDAExecutionProvider" in md and "skipped: skipped" not in md


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.stack: list[str] = []
        self.tables_in_div = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "table" and self.stack[-1:] == ['div class="table"']:
            self.tables_in_div += 1
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag + "".join(f' {k}="{v}"' for k, v in attrs))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1].split()[0] == tag, (tag, self.stack[-3:])
        self.stack.pop()


@case(name="report HTML renders: tags balanced, every image a real PNG", kind="first", bad_input=False,
      expected="balanced tags, each <img> a data: PNG with a width and height, each table in a scroll box "
               "(the real browser check is make test-e2e)")
def test_html_structure_and_images(tmp_path: Path, observe) -> None:
    run = tmp_path / "outputs" / "obert_int8" / "7aa5f2ac8c4f"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text((RUNS / "obert_int8_smoke.json").read_text())
    written = build_report(run)
    parser = _Images()
    parser.feed(written["report.html"].read_text())
    assert parser.stack == []
    pngs = [k for k in written if k.endswith(".png")]
    assert len(parser.imgs) == len(pngs) == 3
    for img in parser.imgs:
        data = base64.b64decode(str(img["src"]).removeprefix("data:image/png;base64,"))
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
        assert data.startswith(b"\x89PNG") and width > 100 and height > 100
    assert parser.tables_in_div == written["report.html"].read_text().count("<table>")
    observe(f"{len(parser.imgs)} images, {parser.tables_in_div} tables")


@case(name="report CLI: --out without --compare, or no argument", kind="own",
      expected="argparse's usage error (exit 2) saying what to pass")
@pytest.mark.parametrize("argv", [["run", "--out", "x"], []])
def test_cli_argument_errors(argv: list[str], expect_clear, capsys: pytest.CaptureFixture[str]) -> None:
    expect_clear(lambda: main(argv))
    err = capsys.readouterr().err
    assert "--out goes with --compare" in err or "give a RUN_DIR, or --compare" in err


@case(name="report into a directory that cannot be written", kind="own",
      expected="exit code 2 and a message naming what to make writable, no traceback")
def test_unwritable_report_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str], observe) -> None:
    import compresslab.report as report

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text((RUNS / "magnitude_int8_failed.json").read_text())

    def denied(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(report, "write_atomic", denied)
    monkeypatch.setattr(plots, "PLOTS", {})
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write the report:") and "Make the run directory writable" in err
    observe(err.strip())


@case(name="report of a run with bench switched off says 'missing'", kind="own", bad_input=False,
      expected="a stage switched off in the config (bench.enabled=false) is said to be off, not missing")
def test_switched_off_stage_is_not_missing(observe) -> None:
    m = manifest("obert_int8_smoke")
    del m["bench"]
    m["config"]["bench"]["enabled"] = False
    md = to_markdown(doc_of(m))
    assert "Missing from the manifest" not in md
    assert "Switched off in this run's config: bench.enabled=false." in md
    assert "Not run: bench.enabled=false in this run's config." in md
    m["config"]["bench"]["enabled"] = True  # on, yet absent: missing
    assert "Missing from the manifest: bench." in to_markdown(doc_of(m))
    observe("bench.enabled=false: 'Switched off' instead of 'Missing'")


@case(name="report of a killed run (kill -9: manifest left 'running')", kind="own", bad_input=False,
      expected="one status everywhere: the banner, the status line and the running step all say crashed")
def test_killed_run_says_crashed_once(observe) -> None:
    m = manifest("magnitude_int8_failed")
    m["status"] = "running"
    m.pop("error", None)
    m["steps"][-1]["status"] = "running"
    m["process"] = {"pid": 2 ** 22 + 12345, "host": __import__("platform").node(), "pid_started": 1.0}
    md = to_markdown(doc_of(m))
    assert "> **Run status: crashed" in md and "- status: crashed" in md
    assert "status: running" not in md and "| running |" not in md
    observe(" / ".join(line for line in md.splitlines() if "crashed" in line)[:480])
